//! The MCP probe over Streamable HTTP: one fresh session per probe, closed after.
//!
//! The handshake uses rmcp's lifecycle modes one at a time — `Initialize` for legacy,
//! `Discover` for modern — and does `era: auto` itself: discover on one transport,
//! and, for anything but a modern answer, `initialize` on a fresh one. rmcp's own
//! `ClientLifecycleMode::Auto` waits a fixed 10 s for an unanswered discover and,
//! short of that, falls back only on a JSON-RPC error (a 5xx or a dropped connection
//! fails the handshake); over HTTP a new connection costs nothing, so we bound the
//! discover wait by half the handshake budget and fall back on anything not modern.

use std::collections::HashMap;
use std::time::Duration;

use fleet_spec::model::{Era, McpCheck};
use reqwest::header::{HeaderName, HeaderValue};
use rmcp::model::ClientConfig;
use rmcp::service::{ClientInitializeError, RoleClient, RunningService};
use rmcp::transport::StreamableHttpClientTransport;
use rmcp::transport::streamable_http_client::{
    StreamableHttpClientTransportConfig, StreamableHttpError,
};
use rmcp::{ClientCacheConfig, ClientLifecycleMode, ClientServiceExt as _};
use tokio::time::Instant;

use crate::era::{self, AfterDiscover};
use crate::probe::{Budget, Handshake, error_chain, exercise};
use crate::report::{CheckFailure, CheckKind, CheckPass, CheckReport, DetectedEra};

type Client = RunningService<RoleClient, ClientConfig>;

/// The longest a probe waits for its session to be torn down (legacy `DELETE`).
const CLOSE_TIMEOUT: Duration = Duration::from_secs(2);

/// Probes an MCP server over Streamable HTTP: connect, handshake per `era`, list every
/// tool, check `expect_tools`, run the smoke call, enforce `max_latency`, close the
/// session (`DELETE` for a legacy session).
///
/// Never fails: every problem is a [`CheckFailure`] in the report. Bounds: the
/// handshake by `check.cadence.timeout` ([`CheckFailure::HandshakeTimeout`]);
/// tools/list and the call by the same timeout each ([`CheckFailure::Timeout`]) and,
/// with `max_latency`, by the latency limit ([`CheckFailure::TooSlow`]); the session
/// teardown by 2 s. Worst case: a little over three timeouts.
///
/// `headers` go on every request (`Authorization`, for instance). `https://` servers
/// must present a certificate the OS trust store vouches for ([`fleet_tls`]); one it
/// does not is a [`CheckFailure::Connect`] naming the reason.
pub async fn probe_http(
    url: &str,
    headers: &[(String, String)],
    era: Era,
    check: &McpCheck,
) -> CheckReport {
    let started = Instant::now();
    let outcome = probe(url, headers, era, check, started).await;
    CheckReport {
        kind: CheckKind::Mcp,
        took: started.elapsed(),
        outcome,
    }
}

async fn probe(
    url: &str,
    headers: &[(String, String)],
    era: Era,
    check: &McpCheck,
    started: Instant,
) -> Result<CheckPass, CheckFailure> {
    let config = transport_config(url, headers)?;
    let limit = check.cadence.timeout;
    let deadline = started + limit;
    let (mut client, handshake) =
        match tokio::time::timeout_at(deadline, handshake(url, &config, era, deadline, started))
            .await
        {
            Ok(result) => result?,
            Err(_) => return Err(CheckFailure::HandshakeTimeout { after: limit }),
        };
    client
        .peer()
        .set_response_cache_config(ClientCacheConfig::disabled())
        .await;
    let outcome = exercise(
        client.peer(),
        check,
        &handshake,
        Budget::new(started, check),
    )
    .await;
    if let Ok(None) = client.close_with_timeout(CLOSE_TIMEOUT).await {
        tracing::debug!(
            url,
            "MCP session teardown did not finish within {CLOSE_TIMEOUT:?}"
        );
    }
    outcome
}

fn transport_config(
    url: &str,
    headers: &[(String, String)],
) -> Result<StreamableHttpClientTransportConfig, CheckFailure> {
    let connect = |message: String| CheckFailure::Connect {
        target: url.to_owned(),
        message,
    };
    crate::probe::http_url(url)?;
    let mut custom = HashMap::new();
    for (name, value) in headers {
        let name = HeaderName::from_bytes(name.as_bytes())
            .map_err(|e| connect(format!("invalid header name {name:?}: {e}")))?;
        let value = HeaderValue::from_str(value)
            .map_err(|e| connect(format!("invalid value for header {name}: {e}")))?;
        custom.insert(name, value);
    }
    Ok(StreamableHttpClientTransportConfig::with_uri(url)
        .custom_headers(custom)
        // A probe reports an expired session; it does not paper over it.
        .reinit_on_expired_session(false))
}

async fn handshake(
    url: &str,
    config: &StreamableHttpClientTransportConfig,
    era: Era,
    deadline: Instant,
    started: Instant,
) -> Result<(Client, Handshake), CheckFailure> {
    let (client, detected) = match era {
        Era::Legacy => (initialize(url, config, None).await?, None),
        Era::Modern => match discover(url, config).await? {
            Discovered::Modern(client) => (client, Some(DetectedEra::Modern)),
            Discovered::NotModern(why) => {
                return Err(CheckFailure::Handshake {
                    message: format!(
                        "{why}: the server does not speak the modern protocol (era: modern); use era: legacy or auto"
                    ),
                });
            }
        },
        Era::Auto => {
            let discover_deadline = Instant::now() + (deadline - Instant::now()) / 2;
            match tokio::time::timeout_at(discover_deadline, discover(url, config)).await {
                Ok(Ok(Discovered::Modern(client))) => (client, Some(DetectedEra::Modern)),
                Ok(Ok(Discovered::NotModern(why))) => {
                    (initialize(url, config, Some(&why)).await?, None)
                }
                Ok(Err(failure)) => return Err(failure),
                Err(_) => (
                    initialize(url, config, Some("server/discover went unanswered")).await?,
                    None,
                ),
            }
        }
    };
    let Some(info) = client.peer().peer_info() else {
        return Err(CheckFailure::Handshake {
            message: "rmcp finished the handshake without the server's info".to_owned(),
        });
    };
    let era = detected.unwrap_or(if info.protocol_version.has_initialize() {
        DetectedEra::Legacy
    } else {
        DetectedEra::Modern
    });
    let handshake = Handshake::from_peer_info(era, &info, started.elapsed());
    Ok((client, handshake))
}

enum Discovered {
    Modern(Client),
    NotModern(String),
}

/// A transport with a client of its own (its connections live as long as the session).
fn transport(
    url: &str,
    config: &StreamableHttpClientTransportConfig,
) -> Result<StreamableHttpClientTransport<reqwest::Client>, CheckFailure> {
    let client = crate::probe::http_client(url, true)?;
    Ok(StreamableHttpClientTransport::with_client(
        client,
        config.clone(),
    ))
}

async fn discover(
    url: &str,
    config: &StreamableHttpClientTransportConfig,
) -> Result<Discovered, CheckFailure> {
    let client = era::client_config(era::modern_offer());
    let mode = ClientLifecycleMode::Discover {
        preferred_versions: era::modern_versions(),
    };
    match client
        .serve_with_lifecycle(transport(url, config)?, mode)
        .await
    {
        Ok(client) => Ok(Discovered::Modern(client)),
        Err(error) => {
            if let Some(failure) = connect_failure(url, &error) {
                return Err(failure);
            }
            let after = match &error {
                ClientInitializeError::JsonRpcError(e) => era::after_discover_error(e),
                ClientInitializeError::NoCompatibleProtocolVersion {
                    server_supported, ..
                } => era::after_no_common_version(server_supported),
                e if e.is_authorization_required() => AfterDiscover::Fail(format!(
                    "the server requires authorization: {}",
                    describe(e)
                )),
                ClientInitializeError::Cancelled
                | ClientInitializeError::NoPreferredProtocolVersion => {
                    AfterDiscover::Fail(describe(&error))
                }
                other => {
                    AfterDiscover::FallBack(format!("server/discover failed: {}", describe(other)))
                }
            };
            match after {
                AfterDiscover::FallBack(why) => Ok(Discovered::NotModern(why)),
                AfterDiscover::Fail(message) => Err(CheckFailure::Handshake { message }),
            }
        }
    }
}

async fn initialize(
    url: &str,
    config: &StreamableHttpClientTransportConfig,
    after_discover: Option<&str>,
) -> Result<Client, CheckFailure> {
    let client = era::client_config(era::LEGACY_OFFER);
    client
        .serve_with_lifecycle(transport(url, config)?, ClientLifecycleMode::Initialize)
        .await
        .map_err(|error| {
            connect_failure(url, &error).unwrap_or_else(|| CheckFailure::Handshake {
                message: match after_discover {
                    Some(why) => format!("initialize failed: {} (after {why})", describe(&error)),
                    None => format!("initialize failed: {}", describe(&error)),
                },
            })
        })
}

/// `Connect` when nothing accepted the connection (refused, unreachable, DNS).
fn connect_failure(url: &str, error: &ClientInitializeError) -> Option<CheckFailure> {
    let ClientInitializeError::TransportError { error, .. } = error else {
        return None;
    };
    let Some(StreamableHttpError::Client(e)) = error
        .error
        .downcast_ref::<StreamableHttpError<reqwest::Error>>()
    else {
        return None;
    };
    if !e.is_connect() {
        return None;
    }
    // The innermost cause says it best: "Connection refused (os error 111)".
    let mut cause: &(dyn std::error::Error + 'static) = e;
    while let Some(next) = cause.source() {
        cause = next;
    }
    Some(CheckFailure::Connect {
        target: url.to_owned(),
        message: cause.to_string(),
    })
}

/// One line for a handshake error, without rmcp's type names.
fn describe(error: &ClientInitializeError) -> String {
    match error {
        ClientInitializeError::TransportError { error, context } => {
            let inner = match error
                .error
                .downcast_ref::<StreamableHttpError<reqwest::Error>>()
            {
                Some(StreamableHttpError::Client(e)) => error_chain(e),
                _ => error_chain(error.error.as_ref()),
            };
            format!("{context}: {inner}")
        }
        ClientInitializeError::JsonRpcError(e) => format!(
            "the server answered with {}{}",
            era::rpc_error_text(e),
            era::initialize_refusal_hint(e)
        ),
        ClientInitializeError::ConnectionClosed(what) => {
            format!("the connection closed while waiting for the {what}")
        }
        other => other.to_string(),
    }
}
