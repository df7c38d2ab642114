//! A long-lived MCP session over a stdio instance's own pipes.
//!
//! The runtime owns the process; we get its stdin/stdout. The whole session is ours, on
//! raw lines, rather than rmcp's: over one pair of pipes there is no second chance
//! (rmcp's `Auto` waits a fixed 10 s for an unanswered `server/discover`, longer than a
//! typical 5 s handshake timeout, and its legacy fallback reuses request id 0, so a late
//! discover reply would be taken for the `initialize` answer), noise on stdout must fail
//! loudly, and a check is one request at a time — so a session is a line reader and a
//! request counter, not rmcp's service with its channels and tasks (which cost a control
//! plane running a thousand servers some 40 KB per server). rmcp's model types still
//! build and read every message, so the wire format is rmcp's.

mod lines;

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use fleet_spec::model::{Era, McpCheck};
use rmcp::model::{
    CallToolRequest, CallToolRequestParams, CallToolResult, ClientConfig, ClientJsonRpcMessage,
    ClientRequest, DiscoverRequest, DiscoverRequestParams, DiscoverResult, ErrorData, GetMeta as _,
    InitializeRequest, InitializeResult, ListToolsRequest, ListToolsResult, PaginatedRequestParams,
    RequestId, RequestMetaObject, ServerPeerInfo, Tool,
};
use rmcp::service::ServiceError;
use serde_json::{Value, json};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::time::Instant;

use self::lines::{Inbound, LineTransport, Noise};
use crate::era::{self, AfterDiscover};
use crate::probe::{Budget, Handshake, ToolSession, exercise};
use crate::report::{CheckFailure, CheckKind, CheckPass, CheckReport, DetectedEra};

const DISCOVER_ID: &str = "mcpfleet-discover";
const INITIALIZE_ID: &str = "mcpfleet-initialize";

/// An MCP client session on a stdio server's pipes, kept open for repeated checks.
///
/// Dropping it closes the pipes too; [`close`](Self::close) does so in order.
#[derive(Debug)]
pub struct StdioSession {
    /// One request at a time: a check is a sequence of them.
    transport: tokio::sync::Mutex<LineTransport>,
    /// Set by the line reader when the server closes its stdout.
    closed: Arc<std::sync::atomic::AtomicBool>,
    /// What a modern session's every request carries in `_meta`; `None` for legacy.
    modern: Option<ClientConfig>,
    next_id: AtomicU64,
    handshake: Handshake,
    noise: Arc<Noise>,
    /// Noise lines already reported by a check.
    noise_reported: AtomicU64,
}

impl StdioSession {
    /// Does the handshake on the instance's pipes, then the first full check.
    ///
    /// `Ok` means a session exists — the report may still be a failure (a tool not yet
    /// listed, a failing smoke call), and [`check`](Self::check) can be run again.
    ///
    /// # Errors
    ///
    /// `Err(report)` when no session could be established: the handshake timed out
    /// (`check.cadence.timeout`), was refused, the server closed stdout, or wrote
    /// non-JSON-RPC output before answering. The pipes are closed by then, which tells
    /// a well-behaved server to exit; the runtime reaps it.
    ///
    /// `Era::Auto` sends `server/discover` first. Some older stdio servers exit on any
    /// request before `initialize`; the report says so, and `era: legacy` avoids it.
    pub async fn connect(
        stdin: impl AsyncWrite + Send + Unpin + 'static,
        stdout: impl AsyncRead + Send + Unpin + 'static,
        era: Era,
        check: &McpCheck,
    ) -> Result<(StdioSession, CheckReport), CheckReport> {
        let started = Instant::now();
        let mut transport = LineTransport::new(stdin, stdout);
        let noise = transport.noise();
        let closed = transport.closed();
        let limit = check.cadence.timeout;
        let deadline = started + limit;
        let established =
            match tokio::time::timeout_at(deadline, handshake(&mut transport, era, deadline)).await
            {
                Ok(Ok(established)) => established,
                Ok(Err(failure)) => return Err(report(started, Err(failure))),
                Err(_) => {
                    return Err(report(
                        started,
                        Err(CheckFailure::HandshakeTimeout { after: limit }),
                    ));
                }
            };
        let handshake =
            Handshake::from_peer_info(established.era, &established.info, started.elapsed());
        // As rmcp does: a revision without `initialize` carries the lifecycle in every
        // request's `_meta`.
        let version = established.info.protocol_version.clone();
        let modern = (!version.has_initialize()).then(|| era::client_config(version));
        let session = StdioSession {
            transport: tokio::sync::Mutex::new(transport),
            closed,
            modern,
            next_id: AtomicU64::new(1),
            handshake,
            noise,
            noise_reported: AtomicU64::new(0),
        };
        let outcome = session.exercise(check, Budget::new(started, check)).await;
        Ok((session, report(started, outcome)))
    }

    /// Re-lists tools and runs the smoke call on this session (liveness).
    /// `max_latency` applies to tools/list + call; there is no handshake to count.
    pub async fn check(&self, check: &McpCheck) -> CheckReport {
        let started = Instant::now();
        let outcome = self.exercise(check, Budget::new(started, check)).await;
        report(started, outcome)
    }

    /// The era the handshake settled on.
    pub fn era(&self) -> DetectedEra {
        self.handshake.era
    }

    /// The negotiated (legacy) or selected (modern) protocol revision.
    pub fn protocol_version(&self) -> &str {
        &self.handshake.protocol_version
    }

    /// `serverInfo.name`, empty when the server did not say.
    pub fn server_name(&self) -> &str {
        &self.handshake.server_name
    }

    /// Whether the server has closed its stdout (it exited, or is about to).
    pub fn is_closed(&self) -> bool {
        self.closed.load(Ordering::Relaxed)
    }

    /// Ends the session: closes stdin (a stdio server's cue to exit) and stops reading.
    /// Waiting for the process to exit is the runtime's job.
    pub async fn close(self) {
        self.transport.into_inner().close().await;
    }

    /// Sends one request and waits for its answer (skipping noise, notifications and
    /// answers to requests a timeout gave up on; refusing the server's own requests).
    async fn request(&self, mut request: ClientRequest) -> Result<Value, ServiceError> {
        if let Some(client) = &self.modern {
            let meta = request.get_meta_mut();
            meta.set_protocol_version(client.protocol_version.clone());
            meta.set_client_info(client.client_info.clone());
            meta.set_client_capabilities(client.capabilities.clone());
        }
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let message = ClientJsonRpcMessage::request(request, RequestId::Number(id as i64));
        let mut transport = self.transport.lock().await;
        let value = serde_json::to_value(&message)
            .map_err(|e| ServiceError::McpError(ErrorData::internal_error(e.to_string(), None)))?;
        transport
            .send_value(&value)
            .await
            .map_err(|_| ServiceError::TransportClosed)?;
        match await_reply(&mut transport, &json!(id), false).await {
            Ok(Ok(result)) => Ok(result),
            Ok(Err(error)) => Err(ServiceError::McpError(error)),
            Err(_) => Err(ServiceError::TransportClosed),
        }
    }

    async fn exercise(&self, check: &McpCheck, budget: Budget) -> Result<CheckPass, CheckFailure> {
        if self.is_closed() {
            return Err(CheckFailure::Disconnected {
                message: "the server closed stdout (has it exited? its stderr log says why)"
                    .to_owned(),
            });
        }
        let outcome = exercise(self, check, &self.handshake, budget).await;
        match outcome {
            // Reported on a check that would otherwise pass, so it is never lost
            // behind another failure.
            Ok(_) if self.noise.snapshot().lines > self.noise_reported.load(Ordering::Relaxed) => {
                let noise = self.noise.snapshot();
                let reported = self.noise_reported.swap(noise.lines, Ordering::Relaxed);
                Err(CheckFailure::Protocol {
                    message: noise_message(
                        noise.lines.saturating_sub(reported),
                        noise.latest.as_deref(),
                    ),
                })
            }
            Err(CheckFailure::Disconnected { .. }) if self.is_closed() => {
                Err(CheckFailure::Disconnected {
                    message: "the server closed stdout during the check (has it exited?)"
                        .to_owned(),
                })
            }
            other => other,
        }
    }
}

fn report(started: Instant, outcome: Result<CheckPass, CheckFailure>) -> CheckReport {
    CheckReport {
        kind: CheckKind::Mcp,
        took: started.elapsed(),
        outcome,
    }
}

fn noise_message(lines: u64, latest: Option<&str>) -> String {
    let what = if lines == 1 {
        "a line that is not JSON-RPC".to_owned()
    } else {
        format!("{lines} lines that are not JSON-RPC")
    };
    format!(
        "the server wrote {what} to stdout ({:?}); stdout must carry only MCP messages — log to stderr",
        latest.unwrap_or("")
    )
}

/// A session the handshake established, before rmcp takes it over.
struct Established {
    era: DetectedEra,
    info: ServerPeerInfo,
}

async fn handshake(
    transport: &mut LineTransport,
    era: Era,
    deadline: Instant,
) -> Result<Established, CheckFailure> {
    match era {
        Era::Legacy => initialize(transport, None).await,
        Era::Modern => match discover(transport).await? {
            Discovered::Modern(established) => Ok(*established),
            Discovered::NotModern(why) => Err(CheckFailure::Handshake {
                message: format!(
                    "{why}: the server does not speak the modern protocol (era: modern); use era: legacy or auto"
                ),
            }),
        },
        Era::Auto => {
            // Half the budget for discover, so a legacy server that ignores it still
            // gets its initialize in time.
            let discover_deadline = Instant::now() + (deadline - Instant::now()) / 2;
            match tokio::time::timeout_at(discover_deadline, discover(transport)).await {
                Ok(Ok(Discovered::Modern(established))) => Ok(*established),
                Ok(Ok(Discovered::NotModern(why))) => initialize(transport, Some(&why)).await,
                Ok(Err(failure)) => Err(failure),
                Err(_) => initialize(transport, Some("server/discover went unanswered")).await,
            }
        }
    }
}

enum Discovered {
    Modern(Box<Established>),
    NotModern(String),
}

async fn discover(transport: &mut LineTransport) -> Result<Discovered, CheckFailure> {
    let offer = era::modern_offer();
    let client = era::client_config(offer.clone());
    let mut request = DiscoverRequest::new(DiscoverRequestParams {});
    request
        .extensions
        .insert(RequestMetaObject::with_client_context(
            offer,
            client.client_info,
            client.capabilities,
        ));
    let message = ClientJsonRpcMessage::request(
        ClientRequest::DiscoverRequest(request),
        RequestId::String(DISCOVER_ID.into()),
    );
    send(transport, &message, "server/discover").await?;
    let reply = await_reply(transport, &json!(DISCOVER_ID), true).await.map_err(|stop| {
        stop.into_failure(
            "after server/discover — older stdio servers exit on a request before initialize; use era: legacy for this server",
        )
    })?;
    let result = match reply {
        Ok(result) => result,
        Err(error) => {
            return match era::after_discover_error(&error) {
                AfterDiscover::FallBack(why) => Ok(Discovered::NotModern(why)),
                AfterDiscover::Fail(message) => Err(CheckFailure::Handshake { message }),
            };
        }
    };
    let result: DiscoverResult = match serde_json::from_value(result) {
        Ok(result) => result,
        Err(e) => {
            return Ok(Discovered::NotModern(format!(
                "server/discover returned something other than a DiscoverResult ({e})"
            )));
        }
    };
    match era::select_modern(&result.supported_versions) {
        Some(version) => Ok(Discovered::Modern(Box::new(Established {
            era: DetectedEra::Modern,
            info: ServerPeerInfo::from_discover_result(version, result),
        }))),
        None => match era::after_no_common_version(&result.supported_versions) {
            AfterDiscover::FallBack(why) => Ok(Discovered::NotModern(why)),
            AfterDiscover::Fail(message) => Err(CheckFailure::Handshake { message }),
        },
    }
}

/// The legacy handshake. `after_discover` says why we are here under `era: auto`.
async fn initialize(
    transport: &mut LineTransport,
    after_discover: Option<&str>,
) -> Result<Established, CheckFailure> {
    let context = |message: String| match after_discover {
        Some(why) => format!("{message} (after {why})"),
        None => message,
    };
    let request = InitializeRequest::new(era::client_config(era::LEGACY_OFFER));
    let message = ClientJsonRpcMessage::request(
        ClientRequest::InitializeRequest(request),
        RequestId::String(INITIALIZE_ID.into()),
    );
    send(transport, &message, "initialize").await?;
    let reply = await_reply(transport, &json!(INITIALIZE_ID), true)
        .await
        .map_err(|stop| {
            stop.into_failure(
                "before answering initialize (has it exited? its stderr log says why)",
            )
        })?;
    let result = reply.map_err(|error| CheckFailure::Handshake {
        message: context(format!(
            "the server answered initialize with {}{}",
            era::rpc_error_text(&error),
            era::initialize_refusal_hint(&error)
        )),
    })?;
    let result: InitializeResult =
        serde_json::from_value(result).map_err(|e| CheckFailure::Handshake {
            message: context(format!("malformed initialize result: {e}")),
        })?;
    transport
        .send_value(&json!({ "jsonrpc": "2.0", "method": "notifications/initialized" }))
        .await
        .map_err(|e| CheckFailure::Handshake {
            message: format!("could not send notifications/initialized: {e}"),
        })?;
    // A server may answer initialize with a revision that has no initialize; rmcp
    // then carries the lifecycle in per-request _meta, which is the modern era.
    let era = if result.protocol_version.has_initialize() {
        DetectedEra::Legacy
    } else {
        DetectedEra::Modern
    };
    Ok(Established {
        era,
        info: result.into(),
    })
}

async fn send(
    transport: &LineTransport,
    message: &ClientJsonRpcMessage,
    what: &str,
) -> Result<(), CheckFailure> {
    let value = serde_json::to_value(message).map_err(|e| CheckFailure::Handshake {
        message: format!("could not encode {what}: {e}"),
    })?;
    transport
        .send_value(&value)
        .await
        .map_err(|e| CheckFailure::Handshake {
            message: format!("could not write {what} to the server's stdin: {e} (has it exited?)"),
        })
}

/// Why waiting for a reply stopped.
enum Stop {
    /// stdout closed.
    Closed,
    /// A line that is not JSON-RPC.
    Noise(String),
}

impl Stop {
    fn into_failure(self, closed_context: &str) -> CheckFailure {
        CheckFailure::Handshake {
            message: match self {
                Stop::Closed => format!("the server closed stdout {closed_context}"),
                Stop::Noise(sample) => noise_message(1, Some(&sample)),
            },
        }
    }
}

/// Reads until the reply to request `id`, refusing the server's requests (its pings the
/// line reader answers itself) and skipping replies to other ids (a late `server/discover` answer, say). A noise line ends the
/// wait when `noise_stops` (the handshake); in a running session it is only counted, and
/// the check reports it.
async fn await_reply(
    transport: &mut LineTransport,
    id: &Value,
    noise_stops: bool,
) -> Result<Result<Value, ErrorData>, Stop> {
    loop {
        let value = match transport.next().await {
            None => return Err(Stop::Closed),
            Some(Inbound::Noise(sample)) if noise_stops => return Err(Stop::Noise(sample)),
            Some(Inbound::Noise(_)) => continue,
            Some(Inbound::Json(value)) => value,
        };
        let message_id = value.get("id");
        if let Some(method) = value.get("method").and_then(Value::as_str) {
            if let Some(request_id) = message_id {
                refuse_server_request(transport, method, request_id).await;
            }
            continue;
        }
        let ours = match message_id {
            // An error without an id is the server failing to read our request.
            None | Some(Value::Null) => value.get("error").is_some(),
            Some(other) => other == id,
        };
        if !ours {
            continue;
        }
        if let Some(error) = value.get("error") {
            let error = serde_json::from_value::<ErrorData>(error.clone()).unwrap_or_else(|_| {
                ErrorData::internal_error(format!("malformed JSON-RPC error: {error}"), None)
            });
            return Ok(Err(error));
        }
        return Ok(Ok(value.get("result").cloned().unwrap_or(Value::Null)));
    }
}

/// A probe declares no client capabilities: it refuses the server's requests (sampling,
/// elicitation, roots) so the server does not wait on it. Pings never get here: the line
/// reader answers them as they come.
async fn refuse_server_request(transport: &LineTransport, method: &str, id: &Value) {
    let refusal = json!({
        "jsonrpc": "2.0",
        "id": id,
        "error": { "code": -32601, "message": "a health probe answers no requests" },
    });
    if let Err(e) = transport.send_value(&refusal).await {
        tracing::debug!("could not refuse the server's {method}: {e}");
    }
}

impl ToolSession for StdioSession {
    async fn list_all_tools(&self) -> Result<Vec<Tool>, ServiceError> {
        let mut tools = Vec::new();
        let mut cursor = None;
        loop {
            let params = PaginatedRequestParams::default().with_cursor(cursor);
            let request = ClientRequest::ListToolsRequest(ListToolsRequest::with_param(params));
            let page: ListToolsResult = serde_json::from_value(self.request(request).await?)
                .map_err(|_| ServiceError::UnexpectedResponse)?;
            tools.extend(page.tools);
            cursor = page.next_cursor;
            if cursor.is_none() {
                return Ok(tools);
            }
        }
    }

    async fn call_tool(
        &self,
        params: CallToolRequestParams,
    ) -> Result<CallToolResult, ServiceError> {
        let request = ClientRequest::CallToolRequest(CallToolRequest::new(params));
        serde_json::from_value(self.request(request).await?)
            .map_err(|_| ServiceError::UnexpectedResponse)
    }
}
