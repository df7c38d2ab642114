//! Interop with MCP clients beyond import: gateway tokens (`token create`) and client
//! configurations pointing at the gateway (`client-config`).

use crate::commands::{ImportKind, check as check_file, print_diagnostics};
use anyhow::{Result, bail};
use fleet_spec::model::{Transport, ValidFleet};
use sha2::{Digest as _, Sha256};
use std::path::Path;
use std::process::ExitCode;

/// `mcpfleet token create NAME [--servers a,b]`: a random 256-bit token, shown once; the
/// fleet file stores only its SHA-256.
pub(crate) fn token_create(
    name: &str,
    servers: &[String],
    file: &Path,
    json: bool,
) -> Result<ExitCode> {
    if name.is_empty()
        || !name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
    {
        bail!("invalid token name `{name}`: use letters, digits, `-` and `_`");
    }
    let servers: Vec<String> = if servers.is_empty() {
        vec!["*".into()]
    } else {
        servers.to_vec()
    };
    if file.exists() {
        // Name the servers the fleet has, so a typo is caught now rather than as a 403 later.
        let checked = check_file(file, None)?;
        if let Some(fleet) = &checked.fleet {
            for s in servers.iter().filter(|s| *s != "*") {
                if fleet.server(s).is_none() {
                    bail!("{} has no server `{s}`", file.display());
                }
            }
        }
    }
    let mut secret = [0u8; 32];
    getrandom::fill(&mut secret).map_err(|e| anyhow::anyhow!("no random source: {e}"))?;
    let token = format!("mcpf_{}", base64url(&secret));
    let sha256: String = Sha256::digest(token.as_bytes())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    let list = servers
        .iter()
        .map(|s| format!("\"{s}\""))
        .collect::<Vec<_>>()
        .join(", ");
    if json {
        let out = serde_json::json!({ "name": name, "token": token, "sha256": sha256, "servers": servers });
        println!("{}", serde_json::to_string_pretty(&out)?);
    } else {
        println!("{token}");
        eprintln!(
            "\nThis is token `{name}`; it is shown once and mcpfleet keeps only its SHA-256."
        );
        eprintln!(
            "Store it in your client's secret store, and add this under `gateway.auth.tokens` in {}:\n",
            file.display()
        );
        eprintln!("      - {{ name: {name}, sha256: \"{sha256}\", servers: [{list}] }}");
    }
    Ok(ExitCode::SUCCESS)
}

/// Unpadded base64url: tokens travel in headers and shells.
fn base64url(bytes: &[u8]) -> String {
    fleet_spec::template::base64(bytes)
        .trim_end_matches('=')
        .replace('+', "-")
        .replace('/', "_")
}

/// `mcpfleet client-config KIND [FILE]`: the client's configuration for every server the
/// gateway serves.
pub(crate) async fn client_config(
    kind: ImportKind,
    file: &Path,
    state_dir: Option<std::path::PathBuf>,
) -> Result<ExitCode> {
    let checked = check_file(file, None)?;
    print_diagnostics(&checked);
    let Ok(fleet) = checked.into_valid() else {
        return Ok(ExitCode::from(1));
    };
    let base = gateway_base(&fleet, state_dir).await;
    let auth = !fleet.gateway.tokens.is_empty();
    let mut servers = serde_json::Map::new();
    let mut skipped = Vec::new();
    for server in &fleet.servers {
        if matches!(server.transport, Transport::Stdio { .. }) {
            skipped.push(server.name.as_str());
            continue;
        }
        let url = format!("{base}/mcp/{}", server.name);
        let mut entry = serde_json::json!({ "url": url });
        if kind == ImportKind::Vscode {
            entry["type"] = "http".into();
        }
        if auth {
            let token = if kind == ImportKind::Vscode {
                "${input:mcpfleet-token}"
            } else {
                "<your mcpfleet token>"
            };
            entry["headers"] = serde_json::json!({ "Authorization": format!("Bearer {token}") });
        }
        servers.insert(server.name.clone(), entry);
    }
    let config = match kind {
        ImportKind::Vscode if auth => serde_json::json!({
            "inputs": [{ "type": "promptString", "id": "mcpfleet-token", "description": "mcpfleet gateway token", "password": true }],
            "servers": servers,
        }),
        ImportKind::Vscode => serde_json::json!({ "servers": servers }),
        ImportKind::ClaudeDesktop | ImportKind::Cursor => {
            serde_json::json!({ "mcpServers": servers })
        }
    };
    println!("{}", serde_json::to_string_pretty(&config)?);
    if !skipped.is_empty() {
        eprintln!(
            "note: stdio servers are not behind the gateway yet, so they are left out: {}",
            skipped.join(", ")
        );
    }
    Ok(ExitCode::SUCCESS)
}

/// The gateway's base URL: the running control plane's (its port may have been chosen by the
/// OS), else the file's `gateway.listen`.
async fn gateway_base(fleet: &ValidFleet, state_dir: Option<std::path::PathBuf>) -> String {
    let dir = state_dir.unwrap_or_else(|| fleet_control::default_state_dir(&fleet.name));
    if let Ok(status) = fleet_api::Client::new(&dir).status().await
        && let Some(endpoint) = status.servers.iter().find_map(|s| s.endpoint.as_deref())
        && let Some(base) = endpoint.split("/mcp/").next()
    {
        return base.to_string();
    }
    let listen = fleet.gateway.listen;
    let host = if listen.ip().is_unspecified() {
        "127.0.0.1".to_string()
    } else {
        listen.ip().to_string()
    };
    let host = if listen.is_ipv6() && !listen.ip().is_unspecified() {
        format!("[{host}]")
    } else {
        host
    };
    let scheme = fleet_control::gateway_scheme(&fleet.gateway);
    format!("{scheme}://{host}:{}", listen.port())
}
