//! The mcpfleet fleet file: everything about it that needs no running server.
//!
//! Owns: reading the YAML with locations ([`yaml`]), decoding it into the raw format types
//! ([`raw`], also the source of the JSON Schema), checking and rendering it into the trusted
//! [`model`] ([`validate`]), diagnostics ([`diag`]), templates ([`template`]), importing MCP
//! client configurations ([`import`]) and the starter file.
//!
//! Does not own: dependency ordering and diffs (`fleet-plan`), anything that runs. No tokio,
//! no network; the only I/O is reading the fleet file and asking the [`template::Host`]
//! about environment variables and files.

pub mod de;
pub mod diag;
pub mod import;
pub mod model;
pub mod raw;
pub mod template;
pub mod validate;
pub mod yaml;

pub use diag::{Diagnostic, Severity, Source, Span};
pub use model::ValidFleet;
pub use validate::{
    Checked, DNS_LABEL_RULE, DNS_SUBDOMAIN_RULE, LoadOptions, NAME_RULE, ReadError, is_dns_label,
    is_dns_subdomain, is_valid_name, load_bytes, load_file, load_str,
};

/// The JSON Schema of the fleet file, generated from [`raw::RawFleet`].
pub fn json_schema() -> serde_json::Value {
    serde_json::to_value(schemars::schema_for!(raw::RawFleet)).unwrap_or_default()
}
