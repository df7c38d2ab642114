//! Streamable HTTP in front of stdio upstreams: the gateway is the HTTP server here,
//! and a session's messages travel over its [`Attachment`] to the process.
//!
//! A request's answer is an SSE stream when the client accepts one (carrying the
//! request's progress, log messages and server→client requests, then the response),
//! else one JSON body (those related messages then go to the GET stream). GET opens
//! the session's stream for everything else; DELETE ends the session and gives back
//! its process.

use std::sync::Arc;
use std::time::Instant;

use axum::body::Body;
use axum::http::{HeaderMap, HeaderName, HeaderValue, Method, Response, StatusCode, header};
use bytes::Bytes;

use crate::Shared;
use crate::audit::{ToolCall, ToolOutcome};
use crate::distribution::{Kind, OutstandingGuard, Target};
use crate::error::{GatewayError, UpstreamFailure};
use crate::hub::{Event, EventId, Stream};
use crate::jsonrpc;
use crate::link::{ClientMessage, SendError};
use crate::metrics::{MethodLabel, Outcome};
use crate::pins::Pins;
use crate::pool::AcquireError;
use crate::proxy::MCP_SESSION_ID;
use crate::security::Caller;
use crate::sessions::{Session, SessionId, SessionUpstream};

const LAST_EVENT_ID: HeaderName = HeaderName::from_static("last-event-id");

/// One client request, as the handler read it.
pub(crate) struct Request<'a> {
    pub(crate) headers: &'a HeaderMap,
    /// Who asks (a new session is bound to it).
    pub(crate) caller: &'a Caller,
    pub(crate) body: Bytes,
    pub(crate) label: MethodLabel,
    pub(crate) tool_call: Option<ToolCall>,
    /// A stateless request: remember where an MRTR `requestState` came from.
    pub(crate) learn_pins: bool,
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
        let ended = shared
            .sessions
            .make_room(request.caller)
            .map_err(|full| full.refusal(id()))?;
        crate::proxy::end_sessions(shared, ended);
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
    let session_id = shared
        .sessions
        .insert(Arc::clone(&session), idle_timeout)
        .map_err(|error| {
            tracing::error!(%error, "cannot mint a session id");
            GatewayError::Upstream {
                kind: UpstreamFailure::Broken,
                id: id(),
            }
        })?;
    let mut response = match post(shared, &target, &session, &message, request).await {
        Ok(response) => response,
        Err(error) => {
            // The client never learns this session's id: end it now.
            shared.sessions.remove(&session_id);
            return Err(error);
        }
    };
    response
        .headers_mut()
        .insert(MCP_SESSION_ID, session_id.header_value());
    Ok(response)
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
    let mut response = match *method {
        Method::DELETE => {
            shared.sessions.remove(&session_id);
            target.metrics.record(label, Outcome::Ok, None);
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
            target.metrics.record(label, Outcome::Ok, None);
            sse_response(Body::from_stream(stream_events(stream)))
        }
        _ => {
            let body = request.body.clone();
            let message = ClientMessage::parse(&body).map_err(|_| GatewayError::Parse)?;
            post(shared, target, &session, &message, request).await?
        }
    };
    response
        .headers_mut()
        .insert(MCP_SESSION_ID, session_id.header_value());
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
        learn_pins,
    } = request;
    let id_value = || {
        message
            .id
            .and_then(|id| serde_json::from_str(id.get()).ok())
    };
    let measure = Measure {
        target: target.clone(),
        label,
        started: Instant::now(),
        tool_call,
        pins: learn_pins.then(|| Arc::clone(&shared.pins)),
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
    if accepts_sse(headers) {
        let events = RequestEvents {
            stream,
            primed: false,
            measure: Some(measure),
            silence: shared.config.upstream_timeout,
            hub: Arc::clone(&attachment.hub),
            id: id.to_owned(),
            ended: false,
            _session: Arc::clone(session),
        };
        return Ok(sse_response(Body::from_stream(events.into_stream())));
    }
    // JSON: wait for the response; what else comes meanwhile goes to the GET stream.
    let deadline = tokio::time::Instant::from_std(measure.started) + shared.config.upstream_timeout;
    loop {
        match tokio::time::timeout_at(deadline, stream.events.recv()).await {
            Err(_) => {
                attachment.hub.end(id);
                return Err(measure.fail(UpstreamFailure::Timeout, id_value()));
            }
            Ok(None) => return Err(measure.fail(UpstreamFailure::Broken, id_value())),
            Ok(Some(Event {
                message,
                last: false,
                ..
            })) => attachment.hub.send_standalone(message),
            Ok(Some(Event {
                message,
                last: true,
                ..
            })) => {
                measure.record(Some(&message));
                return Ok(Response::builder()
                    .header(header::CONTENT_TYPE, "application/json")
                    .body(Body::from(message))
                    .unwrap_or_default());
            }
        }
    }
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
        self.target
            .metrics
            .record(self.label, outcome, Some(self.started.elapsed()));
        if let (Some(call), Some(response)) = (self.tool_call, response) {
            call.finish(&self.target, ToolOutcome::of_response(response));
        }
        if let (Some(pins), Some(response)) = (self.pins, response) {
            pins.learn(response, || self.target.pin());
        }
    }

    /// Failed upstream: the error for the client.
    fn fail(self, kind: UpstreamFailure, id: Option<serde_json::Value>) -> GatewayError {
        self.target.metrics.record(
            self.label,
            Outcome::TransportError,
            Some(self.started.elapsed()),
        );
        if let Some(call) = self.tool_call {
            call.finish(&self.target, ToolOutcome::TransportError);
        }
        GatewayError::Upstream { kind, id }
    }
}

/// A request's SSE answer. Holds the session so a stateless request's process lives
/// until its answer is sent.
struct RequestEvents {
    stream: Stream,
    /// The first event, an id without data, lets a client that loses the stream
    /// before any message resume it.
    primed: bool,
    measure: Option<Measure>,
    /// Longest wait for the next event (a response, progress, a log message) before the
    /// request is answered with a timeout error: a stuck server must not hold the client.
    silence: std::time::Duration,
    hub: Arc<crate::hub::Hub>,
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
                return Some((Ok(Bytes::from(format!("id: {id}\ndata: \n\n"))), events));
            }
            if events.ended {
                return None;
            }
            let event =
                match tokio::time::timeout(events.silence, events.stream.events.recv()).await {
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

/// A GET stream: the session's own messages, or a resumed answer stream.
fn stream_events(
    stream: Stream,
) -> impl futures::Stream<Item = Result<Bytes, std::convert::Infallible>> {
    futures::stream::unfold(stream, |mut stream| async move {
        let event = stream.events.recv().await?;
        Some((Ok(event_frame(&event)), stream))
    })
}

/// One SSE event with its id.
fn event_frame(event: &Event) -> Bytes {
    let mut frame = Vec::with_capacity(event.message.len() + 48);
    frame.extend_from_slice(format!("id: {}\nevent: message\ndata: ", event.id).as_bytes());
    frame.extend_from_slice(&event.message);
    frame.extend_from_slice(b"\n\n");
    Bytes::from(frame)
}
