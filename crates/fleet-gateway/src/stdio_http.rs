//! Streamable HTTP in front of stdio upstreams: the gateway is the HTTP server here,
//! and a session's messages travel over its [`Attachment`] to the process.
//!
//! A request's answer is an SSE stream when the client accepts one (carrying the
//! request's progress, log messages and server→client requests, then the response),
//! else one JSON body (those related messages then go to the GET stream). GET opens
//! the session's stream for everything else; DELETE ends the session and gives back
//! its process.
//!
//! A stateless (2026-07-28) request is checked here as that revision's Streamable HTTP
//! server must check it (the process behind never sees the headers), and a JSON-RPC
//! error answering it leaves with the HTTP status that revision maps it to, so the
//! answer is held until the first message shows whether it is one.

use std::sync::Arc;
use std::time::Instant;

use axum::body::Body;
use axum::http::{HeaderMap, HeaderName, HeaderValue, Method, Response, StatusCode, header};
use bytes::Bytes;
use fleet_routes::audit::ToolOutcome;
use http_body_util::BodyExt as _;

use crate::Shared;
use crate::audit::{ToolCall, outcome_of_response};
use crate::distribution::{Kind, OutstandingGuard, Target};
use crate::error::{GatewayError, UpstreamFailure, code};
use crate::jsonrpc;
use crate::metrics::{MethodLabel, Outcome};
use crate::pins::Pins;
use crate::proxy::{MCP_METHOD, MCP_NAME, MCP_PROTOCOL_VERSION, MCP_SESSION_ID};
use crate::request_span::RequestSpan;
use crate::security::Caller;
use crate::sessions::{Session, SessionId, SessionUpstream};
use crate::trace_context::TraceId;
use fleet_stdio::AcquireError;
use fleet_stdio::hub::{Event, EventId, Stream};
use fleet_stdio::link::{ClientMessage, SendError};

const LAST_EVENT_ID: HeaderName = HeaderName::from_static("last-event-id");

/// The reconnection delay (SSE `retry:`) the gateway's streams ask of a client that
/// loses one: the hub keeps a stream's events, so a prompt `Last-Event-ID` resumption
/// finds them (2025-11-25, "Resumability and Redelivery").
const RECONNECT_AFTER_MS: u64 = 1000;

/// Session-era methods MCP 2026-07-28 does not have. A stdio server speaking both
/// eras would answer them (and a shared process's link answers `initialize` itself),
/// so the gateway refuses them as unknown methods.
const REMOVED_METHODS: [&str; 5] = [
    "initialize",
    "ping",
    "logging/setLevel",
    "resources/subscribe",
    "resources/unsubscribe",
];

/// The `Mcp-Name` value that carries a name not fit for a header:
/// `=?base64?<standard Base64 of the UTF-8 name>?=` (2026-07-28).
const BASE64_PREFIX: &str = "=?base64?";
const BASE64_SUFFIX: &str = "?=";

/// One client request, as the handler read it.
pub(crate) struct Request<'a> {
    pub(crate) headers: &'a HeaderMap,
    /// Who asks (a new session is bound to it).
    pub(crate) caller: &'a Caller,
    pub(crate) body: Bytes,
    pub(crate) label: MethodLabel,
    pub(crate) tool_call: Option<ToolCall>,
    /// A stateless (modern) request: its error leaves with the status 2026-07-28 maps
    /// it to, and an MRTR `requestState` in its answer is remembered.
    pub(crate) stateless: bool,
    /// The request's admission's (read once per request).
    pub(crate) upstream_timeout: std::time::Duration,
}

/// Checks a stateless request for a stdio upstream as a 2026-07-28 Streamable HTTP
/// server must before handling it: the standard headers (`Mcp-Method`'s value is
/// checked for every upstream, before routing), the required `_meta` members, and a
/// method that revision has.
///
/// # Errors
/// The first rule broken, as [`GatewayError::MissingHeader`],
/// [`GatewayError::NameHeaderMismatch`], [`GatewayError::MissingMeta`],
/// [`GatewayError::VersionHeaderMismatch`] or [`GatewayError::RemovedMethod`].
pub(crate) fn check_stateless(
    headers: &HeaderMap,
    peek: &jsonrpc::Peek<'_>,
) -> Result<(), GatewayError> {
    // Only requests carry `_meta` and name headers; a stray notification or response
    // goes on as before.
    let (Some(method), Some(_)) = (peek.method.as_deref(), &peek.id) else {
        return Ok(());
    };
    let id = || peek.id.clone();
    let missing_header = |header| GatewayError::MissingHeader { header, id: id() };
    let version = headers
        .get(&MCP_PROTOCOL_VERSION)
        .ok_or_else(|| missing_header("MCP-Protocol-Version"))?;
    if !headers.contains_key(&MCP_METHOD) {
        return Err(missing_header("Mcp-Method"));
    }
    if let Some(expected) = peek.header_name.as_deref() {
        let value = headers
            .get(&MCP_NAME)
            .ok_or_else(|| missing_header("Mcp-Name"))?;
        if header_text(value).as_deref() != Some(expected) {
            return Err(GatewayError::NameHeaderMismatch { id: id() });
        }
    }
    let missing_meta = |member| GatewayError::MissingMeta { member, id: id() };
    let meta_version = peek
        .meta_protocol_version
        .as_deref()
        .ok_or_else(|| missing_meta("io.modelcontextprotocol/protocolVersion"))?;
    if !peek.meta_client_capabilities {
        return Err(missing_meta("io.modelcontextprotocol/clientCapabilities"));
    }
    if version.to_str().ok().map(str::trim) != Some(meta_version) {
        return Err(GatewayError::VersionHeaderMismatch { id: id() });
    }
    if REMOVED_METHODS.contains(&method) {
        return Err(GatewayError::RemovedMethod {
            method: method.to_owned(),
            id: id(),
        });
    }
    Ok(())
}

/// A standard header's value as text: surrounding whitespace is no part of it (RFC
/// 9110 §5.5), and the Base64 form is decoded. `None` when it is no text.
fn header_text(value: &HeaderValue) -> Option<String> {
    use base64::Engine as _;
    let text = value.to_str().ok()?.trim();
    match text
        .strip_prefix(BASE64_PREFIX)
        .and_then(|inner| inner.strip_suffix(BASE64_SUFFIX))
    {
        Some(encoded) => {
            let bytes = base64::engine::general_purpose::STANDARD
                .decode(encoded)
                .ok()?;
            String::from_utf8(bytes).ok()
        }
        None => Some(text.to_owned()),
    }
}

/// The HTTP status of a stateless request's answer, as 2026-07-28's Streamable HTTP
/// transport maps JSON-RPC errors: a header mismatch, a missing client capability and
/// an unsupported protocol version are the request's fault (400), an unknown method
/// is 404. Any other error, like a result, leaves with 200: a failing tool or a bad
/// argument is the method's answer, not the transport's.
fn modern_status(response: &[u8]) -> StatusCode {
    match jsonrpc::error_code(response) {
        Some(
            code::HEADER_MISMATCH
            | code::MISSING_CLIENT_CAPABILITY
            | code::UNSUPPORTED_PROTOCOL_VERSION,
        ) => StatusCode::BAD_REQUEST,
        Some(code::METHOD_NOT_FOUND) => StatusCode::NOT_FOUND,
        _ => StatusCode::OK,
    }
}

/// A new session (`initialize`) or a stateless modern request on a stdio upstream.
pub(crate) async fn open(
    shared: &Shared,
    server: &str,
    target: Target,
    initialize: bool,
    request: Request<'_>,
) -> Result<Response<Body>, GatewayError> {
    let body = request.body.clone();
    let message = ClientMessage::parse(&body).map_err(|_| GatewayError::Parse)?;
    let id = || {
        message
            .id
            .and_then(|id| serde_json::from_str(id.get()).ok())
    };
    if initialize {
        crate::proxy::make_room(shared, request.caller, id)?;
    }
    let (attachment, lease, idle_timeout) = match &target.instance.kind {
        Kind::Stdio(link) => (link.attach(), None, None),
        Kind::StdioPerSession(processes) => {
            let mut acquired = processes.acquire().await;
            // A full pool gives up the least recently used idle session (of whoever
            // holds the most there) rather than turn the newcomer away.
            if matches!(acquired, Err(AcquireError::AtCapacity { .. }))
                && let Some(idle) = shared.sessions.end_one_idle_on(&target.instance)
            {
                drop(idle);
                acquired = processes.acquire().await;
            }
            let lease = acquired.map_err(|error| match error {
                AcquireError::AtCapacity { max } => GatewayError::SessionLimit {
                    server: server.to_owned(),
                    max,
                    id: id(),
                },
                AcquireError::Failed(why) => {
                    tracing::warn!(server, why, "no process for a new session");
                    GatewayError::Upstream {
                        kind: UpstreamFailure::Connect,
                        id: id(),
                    }
                }
            })?;
            (
                lease.link.attach(),
                Some(lease),
                Some(processes.idle_timeout()),
            )
        }
        Kind::Http(_) => unreachable!("HTTP upstreams are proxied, not bridged"),
    };
    let attachment = attachment.ok_or_else(|| GatewayError::Upstream {
        kind: UpstreamFailure::Connect,
        id: id(),
    })?;
    let session = Arc::new(Session {
        server: Arc::from(server),
        caller: request.caller.clone(),
        revision: target.revision,
        instance: Arc::clone(&target.instance),
        upstream: SessionUpstream::Stdio {
            attachment,
            _lease: lease,
        },
        in_flight: Arc::default(),
    });
    if !initialize {
        // Stateless: the attachment (and process) live as long as the answer.
        return post(shared, &target, &session, &message, request).await;
    }
    let (session_id, sealed_id) =
        crate::proxy::remember(shared, Arc::clone(&session), idle_timeout, id)?;
    // The client never learns the id of a session whose `initialize` failed or was
    // refused: it ends now (a per-session process is given back at once).
    let response = match post(shared, &target, &session, &message, request).await {
        Ok(response) => response,
        Err(error) => {
            shared.sessions.remove(&session_id);
            return Err(error);
        }
    };
    // An `initialize` answer is one JSON body (see `post`), already complete.
    let (mut parts, body) = response.into_parts();
    let answer = body
        .collect()
        .await
        .map(http_body_util::Collected::to_bytes)
        .unwrap_or_default();
    if jsonrpc::is_error_response(&answer) || answer.is_empty() {
        shared.sessions.remove(&session_id);
    } else {
        parts.headers.insert(MCP_SESSION_ID, sealed_id);
    }
    Ok(Response::from_parts(parts, Body::from(answer)))
}

/// A request on an existing session of a stdio upstream.
pub(crate) async fn in_session(
    shared: &Shared,
    target: &Target,
    session_id: SessionId,
    session: Arc<Session>,
    method: &Method,
    request: Request<'_>,
) -> Result<Response<Body>, GatewayError> {
    let label = request.label;
    let SessionUpstream::Stdio { attachment, .. } = &session.upstream else {
        unreachable!("only stdio sessions come here");
    };
    if attachment.is_closed() {
        // The process ended: the client initializes again, on a live one.
        shared.sessions.remove(&session_id);
        return Err(GatewayError::UnknownSession);
    }
    // A GET stream or DELETE is answered here at once: its span ends as it opens.
    let answered_here = || {
        if let Some(span) = RequestSpan::start(
            request.headers,
            &target.server,
            target.revision,
            label,
            None,
        ) {
            span.status(StatusCode::OK);
            span.end(Outcome::Ok);
        }
    };
    let response = match *method {
        Method::DELETE => {
            shared.sessions.remove(&session_id);
            target
                .metrics
                .observe_request(label, Outcome::Ok, None, None);
            answered_here();
            Response::new(Body::empty())
        }
        Method::GET => {
            let resume = request
                .headers
                .get(LAST_EVENT_ID)
                .and_then(|v| v.to_str().ok())
                .and_then(EventId::parse);
            let stream = match resume {
                Some(after) => attachment.hub.resume(after),
                None => attachment
                    .hub
                    .standalone()
                    .ok_or(GatewayError::StreamOpen)?,
            };
            target
                .metrics
                .observe_request(label, Outcome::Ok, None, None);
            answered_here();
            sse_response(Body::from_stream(stream_events(stream)))
        }
        _ => {
            let body = request.body.clone();
            let message = ClientMessage::parse(&body).map_err(|_| GatewayError::Parse)?;
            post(shared, target, &session, &message, request).await?
        }
    };
    Ok(response)
}

/// Sends one client message; answers a request with its response (SSE or JSON), and
/// anything else with 202.
async fn post(
    shared: &Shared,
    target: &Target,
    session: &Arc<Session>,
    message: &ClientMessage<'_>,
    request: Request<'_>,
) -> Result<Response<Body>, GatewayError> {
    let SessionUpstream::Stdio { attachment, .. } = &session.upstream else {
        unreachable!("only stdio sessions come here");
    };
    let Request {
        headers,
        caller: _,
        body,
        label,
        tool_call,
        stateless,
        upstream_timeout,
    } = request;
    let id_value = || {
        message
            .id
            .and_then(|id| serde_json::from_str(id.get()).ok())
    };
    let span = RequestSpan::start(
        headers,
        &target.server,
        target.revision,
        label,
        tool_call.as_ref().map(|call| call.tool.as_str()),
    );
    let mut measure = Measure {
        target: target.clone(),
        label,
        started: Instant::now(),
        trace_id: RequestSpan::trace_of(span.as_ref(), headers),
        span,
        status: None,
        tool_call,
        pins: stateless.then(|| Arc::clone(&shared.pins)),
        _guard: target.instance.begin(),
    };
    let (Some(id), true) = (message.id, message.is_request()) else {
        match attachment.send(message, body).await {
            Ok(()) => {}
            Err(SendError::Closed) => return Err(measure.fail(UpstreamFailure::Broken, None)),
            Err(SendError::NotAsked) => {
                drop(measure);
                return Err(GatewayError::NotAsked {
                    id: id_value().unwrap_or_default(),
                });
            }
        }
        measure.status = Some(StatusCode::ACCEPTED);
        measure.record(None);
        return Ok(Response::builder()
            .status(StatusCode::ACCEPTED)
            .body(Body::empty())
            .unwrap_or_default());
    };
    let mut stream = attachment.hub.begin(id, message.progress_token);
    if attachment.send(message, body).await.is_err() {
        attachment.hub.end(id);
        return Err(measure.fail(UpstreamFailure::Broken, id_value()));
    }
    let deadline = tokio::time::Instant::from_std(measure.started) + upstream_timeout;
    // A new session's `initialize` is answered with one JSON body, once the server has
    // answered: whether a session exists depends on that answer.
    let initialize = message.method.as_deref() == Some("initialize");
    let sse = accepts_sse(headers) && !initialize;
    // A stateless answer's status depends on its response: wait for the first message
    // (an SSE answer's headers go out with it). A session's SSE answer starts at once.
    let mut first = None;
    if stateless || !sse {
        loop {
            match tokio::time::timeout_at(deadline, stream.events.recv()).await {
                Err(_) => {
                    attachment.hub.end(id);
                    return Err(measure.fail(UpstreamFailure::Timeout, id_value()));
                }
                Ok(None) => return Err(measure.fail(UpstreamFailure::Broken, id_value())),
                // JSON: what comes before the response goes to the GET stream.
                Ok(Some(event)) if !sse && !event.last => {
                    attachment.hub.send_standalone(event.message);
                }
                Ok(Some(event)) => {
                    first = Some(event);
                    break;
                }
            }
        }
    }
    if let Some(event) = first.take_if(|event| event.last) {
        let status = if stateless {
            modern_status(&event.message)
        } else {
            StatusCode::OK
        };
        // An error the status carries leaves as JSON, like the rest of the answer
        // when the client asked for no stream.
        if !sse || status != StatusCode::OK {
            measure.status = Some(status);
            measure.record(Some(&event.message));
            return Ok(Response::builder()
                .status(status)
                .header(header::CONTENT_TYPE, "application/json")
                .body(Body::from(event.message))
                .unwrap_or_default());
        }
        first = Some(event);
    }
    measure.status = Some(StatusCode::OK);
    let events = RequestEvents {
        stream,
        primed: false,
        first,
        measure: Some(measure),
        silence: upstream_timeout,
        hub: Arc::clone(&attachment.hub),
        id: id.to_owned(),
        ended: false,
        _session: Arc::clone(session),
    };
    Ok(sse_response(Body::from_stream(events.into_stream())))
}

fn accepts_sse(headers: &HeaderMap) -> bool {
    headers
        .get_all(header::ACCEPT)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .any(|v| v.contains("text/event-stream"))
}

fn sse_response(body: Body) -> Response<Body> {
    let mut response = Response::new(body);
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/event-stream"),
    );
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    response
}

/// Records a request's metrics (and its tool call) once its end is known.
struct Measure {
    target: Target,
    label: MethodLabel,
    started: Instant,
    /// The trace the request belongs to, for its latency's exemplar.
    trace_id: Option<TraceId>,
    span: Option<RequestSpan>,
    /// The answer's HTTP status once its head is decided (a failure after it is an
    /// error event in a `200` stream).
    status: Option<StatusCode>,
    tool_call: Option<ToolCall>,
    pins: Option<Arc<Pins>>,
    _guard: OutstandingGuard,
}

impl Measure {
    /// Answered: `response` for a request, `None` for what gets no response.
    fn record(self, response: Option<&[u8]>) {
        let outcome = if response.is_some_and(jsonrpc::is_error_response) {
            Outcome::JsonRpcError
        } else {
            Outcome::Ok
        };
        self.target.metrics.observe_request(
            self.label,
            outcome,
            Some(self.started.elapsed()),
            self.trace_id,
        );
        if let Some(span) = self.span {
            span.status(self.status.unwrap_or(StatusCode::OK));
            span.end(outcome);
        }
        if let (Some(call), Some(response)) = (self.tool_call, response) {
            call.finish(&self.target, outcome_of_response(response));
        }
        if let (Some(pins), Some(response)) = (self.pins, response) {
            pins.learn(response, || self.target.pin());
        }
    }

    /// Failed upstream: the error for the client.
    fn fail(self, kind: UpstreamFailure, id: Option<serde_json::Value>) -> GatewayError {
        self.target.metrics.observe_request(
            self.label,
            Outcome::TransportError,
            Some(self.started.elapsed()),
            self.trace_id,
        );
        if let Some(call) = self.tool_call {
            call.finish(&self.target, ToolOutcome::TransportError);
        }
        let error = GatewayError::Upstream { kind, id };
        if let Some(span) = self.span {
            span.status(self.status.unwrap_or_else(|| error.status()));
            span.end(Outcome::TransportError);
        }
        error
    }
}

/// A request's SSE answer. Holds the session so a stateless request's process lives
/// until its answer is sent.
struct RequestEvents {
    stream: Stream,
    /// The first event, an id (and the reconnection delay) without data, lets a client
    /// that loses the stream before any message resume it.
    primed: bool,
    /// A message received before the stream began, sent first.
    first: Option<Event>,
    measure: Option<Measure>,
    /// Longest wait for the next event (a response, progress, a log message) before the
    /// request is answered with a timeout error: a stuck server must not hold the client.
    silence: std::time::Duration,
    hub: Arc<fleet_stdio::hub::Hub>,
    id: Box<serde_json::value::RawValue>,
    /// Answered with a timeout: nothing more to send.
    ended: bool,
    _session: Arc<Session>,
}

impl RequestEvents {
    fn into_stream(self) -> impl futures::Stream<Item = Result<Bytes, std::convert::Infallible>> {
        futures::stream::unfold(self, |mut events| async move {
            if !events.primed {
                events.primed = true;
                let id = EventId {
                    stream: events.stream.number,
                    number: 0,
                };
                let priming = format!("id: {id}\nretry: {RECONNECT_AFTER_MS}\ndata: \n\n");
                return Some((Ok(Bytes::from(priming)), events));
            }
            if events.ended {
                return None;
            }
            let received = match events.first.take() {
                Some(event) => Ok(Some(event)),
                None => tokio::time::timeout(events.silence, events.stream.events.recv()).await,
            };
            let event = match received {
                Ok(event) => event?,
                Err(_) => {
                    events.ended = true;
                    events.hub.end(&events.id);
                    let measure = events.measure.take()?;
                    let id = serde_json::from_str(events.id.get()).ok();
                    let error = measure.fail(UpstreamFailure::Timeout, id);
                    let frame = crate::proxy::sse_event(&error.json_rpc_body());
                    return Some((Ok(frame), events));
                }
            };
            if event.last
                && let Some(measure) = events.measure.take()
            {
                measure.record(Some(&event.message));
            }
            Some((Ok(event_frame(&event)), events))
        })
    }
}

impl Drop for RequestEvents {
    fn drop(&mut self) {
        // The client went away before the response: the request goes on, its events
        // kept for a `Last-Event-ID` resumption (the hub notices the closed stream on
        // its next event; detaching here could cut off a resumption already made).
        // Not the upstream's failure: the request is not counted; a tool call is
        // audited as unanswered.
        if let Some(Measure {
            tool_call: Some(call),
            target,
            ..
        }) = self.measure.take()
        {
            call.finish(&target, ToolOutcome::TransportError);
        }
    }
}

/// A GET stream: the session's own messages, or a resumed answer stream, after the
/// reconnection delay a client that loses it should keep to.
fn stream_events(
    stream: Stream,
) -> impl futures::Stream<Item = Result<Bytes, std::convert::Infallible>> {
    let retry = Bytes::from(format!("retry: {RECONNECT_AFTER_MS}\n\n"));
    let messages = futures::stream::unfold(stream, |mut stream| async move {
        let event = stream.events.recv().await?;
        Some((Ok(event_frame(&event)), stream))
    });
    futures::StreamExt::chain(futures::stream::once(async { Ok(retry) }), messages)
}

/// One SSE event with its id.
fn event_frame(event: &Event) -> Bytes {
    let mut frame = Vec::with_capacity(event.message.len() + 48);
    frame.extend_from_slice(format!("id: {}\nevent: message\ndata: ", event.id).as_bytes());
    frame.extend_from_slice(&event.message);
    frame.extend_from_slice(b"\n\n");
    Bytes::from(frame)
}
