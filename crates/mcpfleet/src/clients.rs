//! Interop with MCP clients beyond import: gateway and admin tokens (`token create`) and client
//! configurations pointing at the gateway (`client-config`).

use crate::commands::{ImportKind, check as check_file};
use anyhow::{Result, bail};
use fleet_spec::diag::{did_you_mean, render_all};
use fleet_spec::model::ValidFleet;
use sha2::{Digest as _, Sha256};
use std::path::Path;
use std::process::ExitCode;

/// `mcpfleet token create NAME [--servers a,b | --admin]`: a random 256-bit token, shown
/// once; the fleet file stores only its SHA-256, under `gateway.auth.tokens` (reaching
/// `servers`) or, with `admin`, under `admin.tokens` (steering the fleet over the admin TCP
/// listener).
pub(crate) fn token_create(
    name: &str,
    servers: &[String],
    admin: bool,
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
    if admin && !servers.is_empty() {
        bail!(
            "`--servers` does not go with `--admin`: an admin token reaches no server, it steers the fleet (promote, abort, pause, resume, rollback) over the admin listener; create a gateway token without `--admin` for servers"
        );
    }
    let servers: Vec<String> = if servers.is_empty() {
        vec!["*".into()]
    } else {
        servers.to_vec()
    };
    if !admin && file.exists() {
        // Name the servers the fleet has, so a typo is caught now rather than as a 403 later.
        let checked = check_file(file, None)?;
        if let Some(fleet) = &checked.fleet {
            let unknown = unknown_servers(fleet, &servers);
            if !unknown.is_empty() {
                for why in &unknown {
                    eprintln!("error: {why}");
                }
                eprintln!("no token was created; fix `--servers` and run it again");
                return Ok(ExitCode::from(REFUSED));
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
    let (key, line) = if admin {
        (
            "admin.tokens",
            format!("{{ name: {name}, sha256: \"{sha256}\" }}"),
        )
    } else {
        (
            "gateway.auth.tokens",
            format!("{{ name: {name}, sha256: \"{sha256}\", servers: [{list}] }}"),
        )
    };
    if json {
        let out = if admin {
            serde_json::json!({ "name": name, "token": token, "sha256": sha256, "admin": true })
        } else {
            serde_json::json!({ "name": name, "token": token, "sha256": sha256, "servers": servers })
        };
        println!("{}", serde_json::to_string_pretty(&out)?);
    } else {
        println!("{token}");
        eprintln!(
            "\nThis is token `{name}`; it is shown once and mcpfleet keeps only its SHA-256."
        );
        eprintln!(
            "Store it in your client's secret store, and add this under `{key}` in {}:\n",
            file.display()
        );
        eprintln!("      - {line}");
    }
    Ok(ExitCode::SUCCESS)
}

/// The exit code of a refused command (docs/cli.md).
const REFUSED: u8 = 1;

/// Why each of `servers` the fleet lacks is refused, with the likely typo's fix; empty when
/// the fleet has them all (`*` is every server).
fn unknown_servers(fleet: &ValidFleet, servers: &[String]) -> Vec<String> {
    let names = || fleet.servers.iter().map(|s| s.name.as_str());
    servers
        .iter()
        .filter(|s| *s != "*" && fleet.server(s).is_none())
        .map(|s| match did_you_mean(s, names()) {
            Some(close) => format!("no server `{s}` in the fleet; did you mean `{close}`?"),
            None => format!(
                "no server `{s}` in the fleet (its servers: {})",
                names().collect::<Vec<_>>().join(", ")
            ),
        })
        .collect()
}

/// Unpadded base64url: tokens travel in headers and shells.
fn base64url(bytes: &[u8]) -> String {
    fleet_spec::template::base64(bytes)
        .trim_end_matches('=')
        .replace('+', "-")
        .replace('/', "_")
}

/// The environment variable a Cursor configuration reads the token from (Cursor expands
/// `${env:NAME}` in headers); `mcpfleet call` reads the same one.
pub(crate) const TOKEN_ENV: &str = "MCPFLEET_TOKEN";

/// The variable that carries the `Authorization` value into `mcp-remote` for Claude
/// Desktop. Claude Desktop expands nothing, so the value is a placeholder in the entry's
/// `env`; `mcp-remote` puts it into its `--header` argument. No space after the colon:
/// Claude Desktop on Windows does not quote arguments with spaces.
const BRIDGE_HEADER_ENV: &str = "AUTH_HEADER";

/// `mcpfleet client-config KIND [FILE]`: the client's configuration for every server the
/// gateway serves (all of them: stdio servers too), in the shape of the client's own file.
/// A token is never printed: the configuration names where the client takes it from.
pub(crate) async fn client_config(
    kind: ImportKind,
    file: &Path,
    state_dir: Option<std::path::PathBuf>,
) -> Result<ExitCode> {
    let checked = check_file(file, None)?;
    if !checked.is_valid() {
        // Warnings were shown by `validate` and `up`; a configuration for the clipboard
        // repeats only what stops it.
        let errors: Vec<_> = checked
            .diagnostics
            .iter()
            .filter(|d| d.is_error())
            .cloned()
            .collect();
        eprint!("{}", render_all(&errors, &checked.source));
        return Ok(ExitCode::from(1));
    }
    let Ok(fleet) = checked.into_valid() else {
        return Ok(ExitCode::from(1));
    };
    let base = gateway_base(&fleet, state_dir).await;
    let auth = !fleet.gateway.tokens.is_empty();
    let servers: serde_json::Map<String, serde_json::Value> = fleet
        .servers
        .iter()
        .map(|server| {
            let url = format!("{base}/mcp/{}", server.name);
            (server.name.clone(), client_entry(kind, &url, auth))
        })
        .collect();
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
    match kind {
        ImportKind::ClaudeDesktop => {
            eprintln!(
                "note: Claude Desktop starts its servers as commands, so each entry bridges to the gateway through the npm package `mcp-remote` (run by `npx`; needs Node.js)"
            );
            if auth {
                eprintln!(
                    "note: replace `<your mcpfleet token>` in each entry's {BRIDGE_HEADER_ENV} with a token from `mcpfleet token create NAME`"
                );
            }
        }
        ImportKind::Cursor if auth => eprintln!(
            "note: Cursor reads the token from the environment variable {TOKEN_ENV} (make one with `mcpfleet token create NAME`)"
        ),
        ImportKind::Vscode if auth => eprintln!(
            "note: VS Code asks for the token (from `mcpfleet token create NAME`) when it first starts a server"
        ),
        ImportKind::Cursor | ImportKind::Vscode => {}
    }
    Ok(ExitCode::SUCCESS)
}

/// One server's entry in the client's file.
fn client_entry(kind: ImportKind, url: &str, auth: bool) -> serde_json::Value {
    match kind {
        ImportKind::ClaudeDesktop => {
            let mut args = vec!["-y", "mcp-remote", url];
            // mcp-remote refuses plain http except to localhost; the gateway speaks http
            // unless `gateway.tls` is set.
            if url.starts_with("http://") {
                args.push("--allow-http");
            }
            let header = format!("Authorization:${{{BRIDGE_HEADER_ENV}}}");
            if auth {
                args.extend(["--header", header.as_str()]);
            }
            let mut entry = serde_json::json!({ "command": "npx", "args": args });
            if auth {
                entry["env"] =
                    serde_json::json!({ BRIDGE_HEADER_ENV: "Bearer <your mcpfleet token>" });
            }
            entry
        }
        ImportKind::Vscode => {
            let mut entry = serde_json::json!({ "type": "http", "url": url });
            if auth {
                entry["headers"] =
                    serde_json::json!({ "Authorization": "Bearer ${input:mcpfleet-token}" });
            }
            entry
        }
        ImportKind::Cursor => {
            let mut entry = serde_json::json!({ "url": url });
            if auth {
                entry["headers"] =
                    serde_json::json!({ "Authorization": format!("Bearer ${{env:{TOKEN_ENV}}}") });
            }
            entry
        }
    }
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
