//! `mcpfleet call SERVER TOOL`: one tool call through the running fleet's gateway, made the
//! way an MCP client makes it (a session of its own, the bearer token, the gateway URL the
//! control plane reports) — the quickest check that a server works for its users.

use crate::clients::TOKEN_ENV;
use crate::fleet::with_client;
use crate::{FleetArgs, server_name};
use anyhow::{Context as _, Result, anyhow, bail};
use rmcp::model::{CallToolRequestParams, CallToolResult, ClientCapabilities, ClientConfig};
use rmcp::model::{Implementation, ProtocolVersion};
use rmcp::service::{ClientInitializeError, ServiceError};
use rmcp::transport::StreamableHttpClientTransport;
use rmcp::transport::streamable_http_client::{
    StreamableHttpClientTransportConfig, StreamableHttpError,
};
use rmcp::{ClientLifecycleMode, ClientServiceExt as _};
use std::collections::HashMap;
use std::process::ExitCode;
use std::time::Duration;

/// A tool error (`isError`), a JSON-RPC error, or no such server in the running fleet.
const FAILED: u8 = 1;
/// Long enough for a gateway starting a per-session process; a call itself is not bounded
/// here (the gateway's `upstream_timeout` is).
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(30);
const CLOSE_TIMEOUT: Duration = Duration::from_secs(2);

/// One `--arg KEY=VALUE`: the value as JSON when it parses as JSON, else as a string.
#[derive(Debug, Clone, PartialEq)]
struct ToolArg {
    key: String,
    value: serde_json::Value,
}

/// Parses `KEY=VALUE`. The error never repeats the argument: it may hold a secret.
///
/// # Errors
/// When there is no `=` or nothing before it.
fn parse_tool_arg(text: &str) -> Result<ToolArg> {
    let Some((key, raw)) = text.split_once('=') else {
        bail!("expected KEY=VALUE (no `=` found), e.g. --arg message=hello");
    };
    if key.is_empty() {
        bail!("expected KEY=VALUE (nothing before `=`), e.g. --arg message=hello");
    }
    let value =
        serde_json::from_str(raw).unwrap_or_else(|_| serde_json::Value::String(raw.to_owned()));
    Ok(ToolArg {
        key: key.to_owned(),
        value,
    })
}

/// What `mcpfleet call` is given.
#[derive(Debug, clap::Args)]
pub(crate) struct CallArgs {
    /// The server, as named in the fleet file.
    #[arg(value_parser = server_name)]
    pub server: String,
    /// The tool to call.
    pub tool: String,
    /// An argument of the tool, as KEY=VALUE (repeat for more). VALUE is JSON when it
    /// parses as JSON (`5`, `true`, `["a"]`, `"5"`), else a string.
    // Parsed by `call`, not clap: clap's error would repeat the value, maybe a secret.
    #[arg(long = "arg", value_name = "KEY=VALUE")]
    pub args: Vec<String>,
    /// Read the gateway token from this environment variable (default: MCPFLEET_TOKEN,
    /// when set).
    #[arg(long, value_name = "VAR")]
    pub token_env: Option<String>,
    #[command(flatten)]
    pub fleet: FleetArgs,
}

/// Calls the tool and prints its result: the text contents (other contents as JSON) for
/// people, the whole `CallToolResult` with `--output json`. Exit 1 for a tool error or a
/// JSON-RPC error, 3 without a control plane.
pub(crate) async fn call(args: CallArgs, json: bool) -> Result<ExitCode> {
    let mut arguments = serde_json::Map::new();
    for text in &args.args {
        let ToolArg { key, value } = parse_tool_arg(text).context("--arg")?;
        if arguments.insert(key.clone(), value).is_some() {
            bail!("--arg {key} is given twice");
        }
    }
    let token = token(args.token_env.as_deref())?;
    let status = match with_client(&args.fleet.file, args.fleet.state_dir, async |c| {
        c.status().await
    })
    .await?
    {
        Ok(status) => status,
        Err(code) => return Ok(code),
    };
    let Some(server) = status.servers.iter().find(|s| s.name == args.server) else {
        let names: Vec<&str> = status.servers.iter().map(|s| s.name.as_str()).collect();
        eprintln!(
            "error: the running fleet has no server `{}`; it has: {}",
            args.server,
            names.join(", ")
        );
        return Ok(ExitCode::from(FAILED));
    };
    let Some(url) = server.endpoint.as_deref() else {
        eprintln!(
            "error: server `{}` has no gateway endpoint yet; `mcpfleet status` shows its state",
            args.server
        );
        return Ok(ExitCode::from(FAILED));
    };
    let mut client = connect(url, token.as_deref())
        .await
        .with_context(|| format!("cannot open an MCP session with {url}"))?;
    let request = CallToolRequestParams::new(args.tool.clone()).with_arguments(arguments);
    let outcome = client.peer().call_tool(request).await;
    let _ = client.close_with_timeout(CLOSE_TIMEOUT).await;
    match outcome {
        Ok(result) => print_result(&args.tool, &result, json),
        Err(ServiceError::McpError(e)) => {
            eprintln!("error: `{}` refused the call: {}", args.tool, e.message);
            Ok(ExitCode::from(FAILED))
        }
        Err(e) => Err(anyhow::Error::new(e).context(format!("the call of `{}` failed", args.tool))),
    }
}

/// The bearer token: from `--token-env VAR` (which must be set), else `$MCPFLEET_TOKEN`
/// when set, else none.
fn token(token_env: Option<&str>) -> Result<Option<String>> {
    let read = |var: &str| std::env::var(var).ok().filter(|t| !t.is_empty());
    match token_env {
        Some(var) => match read(var) {
            Some(token) => Ok(Some(token)),
            None => bail!(
                "--token-env {var}: the variable is not set or empty; put a token from `mcpfleet token create NAME` in it"
            ),
        },
        None => Ok(read(TOKEN_ENV)),
    }
}

type Client = rmcp::service::RunningService<rmcp::RoleClient, ClientConfig>;

async fn connect(url: &str, token: Option<&str>) -> Result<Client> {
    let mut headers = HashMap::new();
    if let Some(token) = token {
        let value = format!("Bearer {token}")
            .parse()
            .context("the token has characters no HTTP header may carry")?;
        headers.insert(reqwest::header::AUTHORIZATION, value);
    }
    let config = StreamableHttpClientTransportConfig::with_uri(url)
        .custom_headers(headers)
        .reinit_on_expired_session(false);
    // mcpfleet's TLS settings (the OS trust store), as the health checks use for https.
    let http = reqwest::Client::builder()
        .tls_backend_preconfigured(fleet_tls::client_config())
        .build()?;
    let transport = StreamableHttpClientTransport::with_client(http, config);
    let mut client = ClientConfig::new(
        ClientCapabilities::default(),
        Implementation::new("mcpfleet-call", env!("CARGO_PKG_VERSION")),
    );
    // The gateway serves every revision of the protocol; `initialize` is the one every
    // server behind it speaks.
    client.protocol_version = ProtocolVersion::LATEST_WITH_INITIALIZE;
    let session = client.serve_with_lifecycle(transport, ClientLifecycleMode::Initialize);
    match tokio::time::timeout(HANDSHAKE_TIMEOUT, session).await {
        Ok(Ok(client)) => Ok(client),
        Ok(Err(error)) => Err(handshake_failure(error, token.is_some())),
        Err(_) => bail!("no answer to initialize within {HANDSHAKE_TIMEOUT:?}"),
    }
}

/// Says what to do about a 401, and the transport's own error without rmcp's type names.
fn handshake_failure(error: ClientInitializeError, token_sent: bool) -> anyhow::Error {
    let ClientInitializeError::TransportError { error, .. } = &error else {
        return error.into();
    };
    match error
        .error
        .downcast_ref::<StreamableHttpError<reqwest::Error>>()
    {
        Some(StreamableHttpError::AuthRequired(_)) if token_sent => anyhow!(
            "the gateway refused the token (401): it is not one of the fleet file's `gateway.auth.tokens`"
        ),
        Some(StreamableHttpError::AuthRequired(_)) => anyhow!(
            "the gateway requires a bearer token (401): set ${TOKEN_ENV} to one from `mcpfleet token create NAME`, or pass --token-env VAR"
        ),
        _ => anyhow!("{}", error.error),
    }
}

fn print_result(tool: &str, result: &CallToolResult, json: bool) -> Result<ExitCode> {
    let failed = result.is_error == Some(true);
    if json {
        println!("{}", serde_json::to_string_pretty(result)?);
    } else {
        let mut out = String::new();
        for content in &result.content {
            match content.as_text() {
                Some(text) => out.push_str(&text.text),
                None => out.push_str(&serde_json::to_string(content)?),
            }
            out.push('\n');
        }
        if let (true, Some(structured)) = (result.content.is_empty(), &result.structured_content) {
            out = serde_json::to_string_pretty(structured)? + "\n";
        }
        if failed {
            eprint!("error: `{tool}` returned an error:\n{out}");
        } else {
            print!("{out}");
        }
    }
    Ok(if failed {
        ExitCode::from(FAILED)
    } else {
        ExitCode::SUCCESS
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_arg_value_is_json_when_it_parses_and_a_string_otherwise() {
        let value = |text: &str| parse_tool_arg(text).unwrap().value;
        assert_eq!(value("n=5"), serde_json::json!(5));
        assert_eq!(value("on=true"), serde_json::json!(true));
        assert_eq!(value("list=[1,\"a\"]"), serde_json::json!([1, "a"]));
        assert_eq!(value("s=\"5\""), serde_json::json!("5"));
        assert_eq!(
            value("message=hello world"),
            serde_json::json!("hello world")
        );
        assert_eq!(value("eq=a=b"), serde_json::json!("a=b"));
        assert_eq!(value("empty="), serde_json::json!(""));
    }

    #[test]
    fn a_malformed_arg_is_refused_without_echoing_it() {
        for bad in ["ghp_secret", "=ghp_secret"] {
            let error = parse_tool_arg(bad).unwrap_err().to_string();
            assert!(error.contains("KEY=VALUE"), "{error}");
            assert!(!error.contains("ghp_secret"), "{error}");
        }
    }
}
