//! One function per subcommand. Each returns the process exit code; `Err` is reserved for
//! usage and I/O problems (exit 2).

use crate::PlanFormat;
use anyhow::{Context, Result, bail};
use fleet_control::StoreLocation;
use fleet_spec::diag::render_all;
use fleet_spec::import::ClientKind;
use fleet_spec::{Checked, LoadOptions};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;

const INVALID: u8 = 1;

/// Loads a fleet file and runs every offline check on it: the file's own rules, then the
/// dependency graph's.
pub(crate) fn check(file: &Path, environment: Option<String>) -> Result<Checked> {
    if !file.exists() {
        if file == Path::new("mcpfleet.yaml") {
            bail!(
                "no mcpfleet.yaml in this directory; name the fleet file with -f FILE, or run `mcpfleet init` to write one"
            );
        }
        bail!("{} does not exist", file.display());
    }
    let options = LoadOptions {
        environment,
        ..LoadOptions::default()
    };
    let mut checked = fleet_spec::load_file(file, &options)?;
    if let Some(fleet) = &checked.fleet {
        checked.diagnostics.extend(fleet_plan::check(fleet));
    }
    Ok(checked)
}

pub(crate) fn print_diagnostics(checked: &Checked) {
    if !checked.diagnostics.is_empty() {
        eprint!("{}", render_all(&checked.diagnostics, &checked.source));
    }
}

pub(crate) fn validate(file: &Path, environment: Option<String>, json: bool) -> Result<ExitCode> {
    let checked = check(file, environment)?;
    let valid = checked.is_valid();
    let plan = checked
        .fleet
        .as_ref()
        .filter(|_| valid)
        .and_then(|f| fleet_plan::plan(f, None).ok());
    if json {
        let errors = checked.diagnostics.iter().filter(|d| d.is_error()).count();
        let report = serde_json::json!({
            "file": checked.source.name,
            "valid": valid,
            "errors": errors,
            "warnings": checked.diagnostics.len() - errors,
            "servers": plan.as_ref().map(|p| p.waves.iter().map(|w| w.servers.len()).sum::<usize>()),
            "waves": plan.as_ref().map(|p| p.waves.len()),
            "diagnostics": checked.diagnostics,
        });
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        print_diagnostics(&checked);
        if let Some(plan) = &plan {
            let servers: usize = plan.waves.iter().map(|w| w.servers.len()).sum();
            println!(
                "{} is valid: {servers} server{} in {} wave{}",
                checked.source.name,
                s(servers),
                plan.waves.len(),
                s(plan.waves.len())
            );
        }
    }
    Ok(if valid {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(INVALID)
    })
}

fn s(n: usize) -> &'static str {
    if n == 1 { "" } else { "s" }
}

/// `plan`: the waves, and each server's change against what is deployed (see
/// [`crate::record::deployed`]: the running control plane, else the stopped fleet's store).
pub(crate) async fn plan(
    file: &Path,
    environment: Option<String>,
    state_dir: Option<PathBuf>,
    format: PlanFormat,
) -> Result<ExitCode> {
    let checked = check(file, environment)?;
    print_diagnostics(&checked);
    let mut fleet = match checked.into_valid() {
        Ok(fleet) => fleet,
        Err(_) => return Ok(ExitCode::from(INVALID)),
    };
    let dir = state_dir.unwrap_or_else(|| fleet_control::default_state_dir(&fleet.name));
    let location = StoreLocation::of(&fleet, Arc::new(fleet_spec::template::SystemHost))?;
    let deployed = match crate::record::deployed(&dir, &location).await? {
        Ok(deployed) => deployed,
        Err(code) => return Ok(code),
    };
    // Image tags are resolved as a deployment would, so a tag that moved shows as a change.
    if let Err(unpinned) = fleet_control::pin_images(&mut fleet, &dir).await {
        for image in &unpinned {
            eprintln!("note: {image}");
        }
        eprintln!("note: compared as if those image tags still named what is deployed");
    }
    if let Some(deployed) = &deployed {
        fleet_plan::keep_pins(&mut fleet, deployed);
    }
    let Ok(plan) = fleet_plan::plan(&fleet, deployed.as_ref()) else {
        bail!("the dependency graph has a cycle that validation did not report");
    };
    let out = match format {
        PlanFormat::Text => fleet_plan::render_text(&plan),
        PlanFormat::Json => serde_json::to_string_pretty(&plan)? + "\n",
        PlanFormat::Dot => fleet_plan::render_dot(&plan),
        PlanFormat::Mermaid => fleet_plan::render_mermaid(&plan),
    };
    print!("{out}");
    Ok(ExitCode::SUCCESS)
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub(crate) enum ImportKind {
    ClaudeDesktop,
    Vscode,
    Cursor,
}

pub(crate) fn import(
    kind: ImportKind,
    file: &Path,
    out: &Path,
    name: Option<String>,
    force: bool,
    json: bool,
) -> Result<ExitCode> {
    let text =
        std::fs::read_to_string(file).with_context(|| format!("cannot read {}", file.display()))?;
    let kind = match kind {
        ImportKind::ClaudeDesktop => ClientKind::ClaudeDesktop,
        ImportKind::Vscode => ClientKind::Vscode,
        ImportKind::Cursor => ClientKind::Cursor,
    };
    let name = name.unwrap_or_else(|| default_fleet_name(out));
    let imported = match fleet_spec::import::import(kind, &text, &name) {
        Ok(imported) => imported,
        Err(e) => {
            eprintln!("error: {}: {e}", file.display());
            return Ok(ExitCode::from(INVALID));
        }
    };
    // The result must itself be a valid fleet file; anything else is a bug worth reporting.
    let checked = fleet_spec::load_str(
        &out.display().to_string(),
        &imported.yaml,
        Default::default(),
        &LoadOptions::default(),
    );
    if !checked.is_valid() {
        print_diagnostics(&checked);
        bail!("the imported fleet file does not validate; this is a bug in mcpfleet's importer");
    }
    if out == Path::new("-") {
        print!("{}", imported.yaml);
    } else {
        write_new_file(out, &imported.yaml, force)?;
    }
    if json {
        let report = serde_json::json!({
            "file": out.display().to_string(),
            "notes": imported.notes,
            "secrets": imported.secrets,
        });
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        for note in &imported.notes {
            eprintln!("note: {note}");
        }
        if !imported.secrets.is_empty() {
            eprintln!("secret values were not copied; export these before deploying:");
            let width = imported
                .secrets
                .iter()
                .map(|s| s.env.len())
                .max()
                .unwrap_or(0);
            for secret in &imported.secrets {
                eprintln!("  {:width$}  ({})", secret.env, secret.servers.join(", "));
            }
        }
        if out != Path::new("-") {
            eprintln!(
                "wrote {}; check it with `mcpfleet validate -f {}`",
                out.display(),
                out.display()
            );
        }
    }
    Ok(ExitCode::SUCCESS)
}

fn default_fleet_name(out: &Path) -> String {
    let dir = std::fs::canonicalize(
        out.parent()
            .filter(|p| !p.as_os_str().is_empty())
            .unwrap_or(Path::new(".")),
    );
    let raw = dir
        .ok()
        .and_then(|d| d.file_name().map(|n| n.to_string_lossy().into_owned()))
        .unwrap_or_default();
    let name: String = raw
        .to_lowercase()
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' || c == '_' {
                c
            } else {
                '-'
            }
        })
        .skip_while(|c| !c.is_ascii_alphanumeric())
        .take(63)
        .collect();
    if name.is_empty() {
        "fleet".into()
    } else {
        name
    }
}

/// `mcpfleet version`: the version, and with `--output json` `{name, version}`.
pub(crate) fn version(json: bool) -> Result<ExitCode> {
    let (name, version) = (env!("CARGO_PKG_NAME"), env!("CARGO_PKG_VERSION"));
    if json {
        let out = serde_json::json!({ "name": name, "version": version });
        println!("{}", serde_json::to_string_pretty(&out)?);
    } else {
        println!("{name} {version}");
    }
    Ok(ExitCode::SUCCESS)
}

pub(crate) fn init(file: &Path, force: bool) -> Result<ExitCode> {
    write_new_file(file, fleet_spec::import::STARTER, force)?;
    eprintln!(
        "wrote {}; next: `mcpfleet validate -f {}` and `mcpfleet plan -f {}`",
        file.display(),
        file.display(),
        file.display()
    );
    Ok(ExitCode::SUCCESS)
}

/// Writes a new file (or, with `force`, replaces one) whole or not at all.
fn write_new_file(path: &Path, content: &str, force: bool) -> Result<()> {
    if path.exists() && !force {
        bail!(
            "{} already exists; pass --force to overwrite it",
            path.display()
        );
    }
    write_atomically(path, content, 0o666)
}

/// Writes a whole file or nothing: a temporary file in the same directory (created with
/// `mode`, less the umask), then a rename over `path`.
pub(crate) fn write_atomically(path: &Path, content: &str, mode: u32) -> Result<()> {
    use std::os::unix::fs::OpenOptionsExt as _;
    let dir = path
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let tmp = dir.join(format!(
        ".{}.tmp-{}",
        path.file_name()
            .map(|n| n.to_string_lossy())
            .unwrap_or_default(),
        std::process::id()
    ));
    let result = (|| -> std::io::Result<()> {
        // Left by a killed run with the same pid; created anew so that `mode` applies.
        let _ = std::fs::remove_file(&tmp);
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(mode)
            .open(&tmp)?;
        f.write_all(content.as_bytes())?;
        f.sync_all()?;
        std::fs::rename(&tmp, path)
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result.with_context(|| format!("cannot write {}", path.display()))
}
