//! What the Kubernetes manifest tests share: strict validation against the official
//! OpenAPI schemas of every Kubernetes version mcpfleet supports ([`validate_strict`],
//! through the PyPI peer `kubernetes-validate`, offline), the restricted Pod Security
//! Standard ([`restricted_violations`]) and mcpfleet's hardening on top of it
//! ([`hardened_violations`]), and a reader of multi-document YAML into
//! `serde_json::Value`s for them ([`parse_yaml_documents`]) — and [`FakeApi`], an
//! in-process fake API server the Kubernetes runtime's tests run against.
//!
//! No API server runs here; these are the checks a cluster's admission would make, done
//! on the bytes `mcpfleet render kubernetes` writes. The validator is a peer like the MCP
//! ones: `cargo xtask peers` installs it, and a test that needs it fails (never skips)
//! when it is missing.

mod fake_api;
mod restricted;
mod yaml;

pub use fake_api::{Applied, FakeApi, POD_DELETION_COST};

pub use restricted::{Rule, Violation, hardened_violations, restricted_violations};
pub use yaml::{YamlError, parse_yaml_documents};

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

/// The Kubernetes versions mcpfleet's manifests must validate against: the three newest
/// minors whose schemas `kubernetes-validate` ships. The oldest is the API the cluster
/// client is built for (k8s-openapi's `v1_35`).
pub const SUPPORTED_VERSIONS: [&str; 3] = ["1.35.0", "1.36.0", "1.37.0"];

/// Why [`validate_strict`] did not pass.
#[derive(Debug, thiserror::Error)]
pub enum ValidateError {
    /// The validator is not installed where the xtask links it.
    #[error("{} is missing: run `cargo xtask peers`", .0.display())]
    Missing(PathBuf),
    /// The validator could not be run at all.
    #[error("cannot run {}: {error}", .program.display())]
    Run {
        /// The validator's path.
        program: PathBuf,
        /// What running it said.
        error: std::io::Error,
    },
    /// A file did not validate, or held an object no schema of that version knows (an
    /// unchecked object is not a valid one); `output` is the validator's, naming each
    /// object and field.
    #[error("manifests do not validate against Kubernetes {version} (strict):\n{output}")]
    Invalid {
        /// The Kubernetes version validated against.
        version: String,
        /// The validator's report.
        output: String,
    },
}

/// `<workspace>/target/peers/bin/kubernetes-validate`, where `cargo xtask peers` links it.
pub fn kubernetes_validate() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../target/peers/bin/kubernetes-validate")
}

/// Validates every object of `files` (YAML, one or many documents each) against the
/// official schema of Kubernetes `version` in strict mode: a field the schema does not
/// know is an error, as a server-side apply with field validation `Strict` makes it.
///
/// # Errors
/// [`ValidateError::Missing`] when the validator is not installed, [`ValidateError::Run`]
/// when it cannot run, [`ValidateError::Invalid`] with its report when an object does not
/// validate or has no schema in that version (a custom resource, say: leave those out).
pub fn validate_strict(files: &[PathBuf], version: &str) -> Result<(), ValidateError> {
    let program = kubernetes_validate();
    if !program.exists() {
        return Err(ValidateError::Missing(program));
    }
    let output = Command::new(&program)
        .args(["--strict", "--quiet", "-k", version])
        .args(files)
        // Without files it would read a manifest from stdin.
        .stdin(Stdio::null())
        .output()
        .map_err(|error| ValidateError::Run {
            program: program.clone(),
            error,
        })?;
    let mut report = String::from_utf8_lossy(&output.stdout).into_owned();
    report.push_str(&String::from_utf8_lossy(&output.stderr));
    // With --quiet it prints only what did not pass: errors, and a warning for an object
    // whose kind it has no schema for — which it otherwise lets through with exit 0.
    if output.status.success() && report.trim().is_empty() {
        return Ok(());
    }
    Err(ValidateError::Invalid {
        version: version.to_owned(),
        output: report,
    })
}
