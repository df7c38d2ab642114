//! The `/mcp/{server}` handler: admission, session mapping, era-aware routing and the
//! raw passthrough to HTTP upstreams.
//!
//! Bodies go upstream as the client's bytes, and answers of any content type come back
//! as they arrive, never held whole (a request's answer waits at most [`HOLD`] at its
//! start, so that a quick one leaves in one write): a request's answer is kept
//! (bounded) only as it passes, to count a JSON-RPC error and audit a tool call when it
//! ends. An upstream silent for longer than the upstream timeout, or broken mid-answer,
//! ends the answer: an SSE answer with one JSON-RPC error event for the request's id, a
//! JSON answer with the gateway's JSON-RPC error when none of it was sent yet, else cut
//! off (an error the client sees, never a truncated body that looks whole).

use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use axum::body::Body;
use axum::extract::Request;
use axum::http::{HeaderMap, HeaderName, HeaderValue, Method, Response, StatusCode, header};
use axum::response::IntoResponse as _;
use bytes::Bytes;
use fleet_routes::audit::ToolOutcome;
use http_body_util::{BodyExt as _, Limited};
use hyper::body::{Body as _, Frame};
use serde::de::IgnoredAny;

use crate::SessionKeys;
use crate::Shared;
use crate::audit::{SseScan, ToolCall, outcome_of_response};
use crate::distribution::{self, Kind, OutstandingGuard, Target};
use crate::error::{GatewayError, UpstreamFailure};
use crate::framing::connection_options;
use crate::home;
use crate::jsonrpc;
use crate::metrics::{MethodLabel, Outcome, SeriesCounters};
use crate::pins::{self, Pinned, Pins};
use crate::request_span::RequestSpan;
use crate::seal::{SealedSession, SealedState, SealedUpstream};
use crate::security::Caller;
use crate::sessions::{Session, SessionId, SessionUpstream};
use crate::stdio_http;
use crate::trace_context::TraceId;
use crate::upstream::UpstreamBody;

pub(crate) const MCP_SESSION_ID: HeaderName = HeaderName::from_static("mcp-session-id");
pub(crate) const MCP_PROTOCOL_VERSION: HeaderName = HeaderName::from_static("mcp-protocol-version");
pub(crate) const MCP_METHOD: HeaderName = HeaderName::from_static("mcp-method");
pub(crate) const MCP_NAME: HeaderName = HeaderName::from_static("mcp-name");

/// Hop-by-hop headers: never passed on by any hop (besides those a `Connection` header
/// names, see [`strip`]).
const HOP_BY_HOP: [HeaderName; 7] = [
    header::CONNECTION,
    HeaderName::from_static("keep-alive"),
    HeaderName::from_static("proxy-connection"),
    header::TE,
    header::TRAILER,
    header::TRANSFER_ENCODING,
    header::UPGRADE,
];

/// Request headers never forwarded besides the hop-by-hop ones: credentials (token
/// passthrough is forbidden) and those the gateway sets itself.
const DROPPED_REQUEST_HEADERS: [HeaderName; 6] = [
    header::HOST,
    header::AUTHORIZATION,
    header::PROXY_AUTHORIZATION,
    header::COOKIE,
    header::CONTENT_LENGTH,
    // The gateway validated it; the upstream sees the gateway as its client.
    header::ORIGIN,
];

/// `POST|GET|DELETE /mcp/{server}`, from `peer`.
pub(crate) async fn mcp(
    shared: &Shared,
    server: &str,
    request: Request,
    peer: SocketAddr,
) -> Response<Body> {
    match handle(shared, server, request, peer).await {
        Ok(response) => response,
        Err(error) => {
            if !matches!(
                error,
                GatewayError::Upstream { .. } | GatewayError::UnknownServer { .. }
            ) && let Some(routes) = shared.routes.current().server(server)
            {
                routes.rejections.observe_request(
                    MethodLabel::UNKNOWN,
                    Outcome::Rejected,
                    None,
                    None,
                );
            }
            tracing::debug!(server, %error, "request refused");
            error.into_response()
        }
    }
}

async fn handle(
    shared: &Shared,
    server: &str,
    request: Request,
    peer: SocketAddr,
) -> Result<Response<Body>, GatewayError> {
    shared.policy.check_request(&request)?;
    let (mut parts, body) = request.into_parts();
    let admission = shared.admission();
    let caller = admission.tokens.authorize(&parts.headers, peer, server)?;
    admission.limiter.admit(&caller)?;
    let token = caller.token_name();
    let routes = shared.routes.current();
    let routes = routes
        .server(server)
        .ok_or_else(|| GatewayError::UnknownServer {
            server: server.to_owned(),
        })?;

    let method = parts.method.clone();
    let body = if method == Method::POST {
        read_body(&parts.headers, body, shared.config.max_body_bytes).await?
    } else {
        Bytes::new()
    };
    let peek = if method == Method::POST {
        jsonrpc::peek(&body)?
    } else {
        jsonrpc::Peek::default()
    };
    if let Some(header_method) = parts.headers.get(&MCP_METHOD)
        && peek.method.as_deref().map(str::as_bytes) != Some(header_method.as_bytes())
    {
        return Err(GatewayError::HeaderMismatch { id: peek.id });
    }
    let label = match method {
        Method::GET => MethodLabel::GET,
        Method::DELETE => MethodLabel::DELETE,
        _ => MethodLabel::of(peek.method.as_deref()),
    };
    // Every branch that waits on an upstream is boxed: axum moves the handler's future
    // several times per call, and a future is as large as its largest branch (with
    // `forward` inline it was 4.6 KB; boxed, 1.9 KB).
    if let Some(home) = &routes.home {
        return Box::pin(home::relay(
            shared,
            home,
            parts,
            // A reference count, not a copy: `peek` still borrows `body`.
            body.clone(),
            admission.upstream_timeout,
            peek.id,
        ))
        .await;
    }
    // A session id is the client's to keep as it got it: every answer carries it back.
    let session_header = parts.headers.get(&MCP_SESSION_ID).cloned();
    strip_request_headers(&mut parts.headers);
    let tool_call = (peek.method.as_deref() == Some("tools/call")).then(|| ToolCall {
        server: server.to_owned(),
        tool: peek.name.as_deref().unwrap_or("").to_owned(),
        token: token.map(str::to_owned),
        started: Instant::now(),
        sink: shared.config.audit.clone(),
    });

    let Some(sealed_id) = session_header else {
        // No session: a new legacy session, or a stateless modern request.
        if method != Method::POST {
            return Err(GatewayError::MissingSession);
        }
        // `initialize` under a modern revision's header is a method that revision does
        // not have, not a new session.
        let initialize =
            peek.method.as_deref() == Some("initialize") && !modern_header(&parts.headers);
        if !initialize && !is_modern(&parts.headers, &peek) {
            return Err(GatewayError::MissingSession);
        }
        // An MRTR retry goes where its requestState came from: a sealed one says where
        // (any replica may have relayed it), and the upstream gets its own state back.
        let state = peek.request_state.as_deref().filter(|_| !initialize);
        let unsealed = state.and_then(|state| unseal_state(shared, server, &body, state));
        let pin = match &unsealed {
            Some((pin, _)) => Some(pin.clone()),
            None => state.and_then(|state| shared.pins.get(server, state)),
        };
        let pinned = pin.and_then(|pin| {
            routes
                .find(pin.revision, &pin.instance)
                .or_else(|| routes.pick_in(pin.revision))
        });
        let body = unsealed.map_or_else(|| body.clone(), |(_, restored)| restored);
        let target = pinned
            .or_else(|| routes.pick())
            .ok_or_else(|| GatewayError::NoInstances {
                server: server.to_owned(),
            })?;
        if !matches!(target.instance.kind, Kind::Http(_)) {
            if !initialize {
                stdio_http::check_stateless(&parts.headers, &peek)?;
            }
            let body = body.clone();
            let request = stdio_http::Request {
                headers: &parts.headers,
                caller: &caller,
                body,
                label,
                tool_call,
                stateless: !initialize,
                upstream_timeout: admission.upstream_timeout,
            };
            return Box::pin(stdio_http::open(
                shared, server, target, initialize, request,
            ))
            .await;
        }
        if initialize {
            make_room(shared, &caller, || peek.id.clone())?;
        }
        let exchange = Exchange {
            method,
            headers: parts.headers,
            // A reference count, not a copy: `peek` still borrows `body`.
            body: body.clone(),
            label,
            id: peek.id,
            tool_call,
            learn_pins: !initialize,
            upstream_timeout: admission.upstream_timeout,
        };
        let mut response = Box::pin(forward(shared, &target, exchange)).await?;
        // An upstream that refused the `initialize` (an error status) has no session for
        // the gateway to map, whatever headers it sent.
        if initialize
            && response.response.status().is_success()
            && let Some(upstream_session) = response.upstream_session.take()
        {
            // A copy of its own: the answer's header values share its whole head.
            let upstream_session =
                HeaderValue::from_bytes(upstream_session.as_bytes()).unwrap_or(upstream_session);
            let session = Session {
                server: Arc::from(server),
                caller: caller.clone(),
                revision: target.revision,
                instance: target.instance,
                upstream: SessionUpstream::Http(upstream_session),
                in_flight: Arc::default(),
            };
            let (_, sealed_id) = remember(shared, Arc::new(session), None, || None)?;
            response
                .response
                .headers_mut()
                .insert(MCP_SESSION_ID, sealed_id);
        }
        return Ok(response.response);
    };

    let (session_id, session) = match shared.sessions.touch(&sealed_id, server, &caller) {
        Some(known) => known,
        // Not known here by this id: another replica's session, or no session at all.
        None => {
            let sealed = shared
                .keys
                .open(&sealed_id)
                .filter(|sealed| sealed.server == server)
                .ok_or(GatewayError::UnknownSession)?;
            adopt(shared, routes, sealed, &sealed_id, &caller, || {
                peek.id.clone()
            })?
        }
    };
    // A session whose instance left the table is over (an aborted canary, say): 404
    // makes the client initialize again, on what the table says now.
    let Some(target) = routes.find(session.revision, &session.instance.id) else {
        shared.sessions.remove(&session_id);
        return Err(GatewayError::UnknownSession);
    };
    // Only POSTs count: an open GET stream or a DELETE is not work in flight (and a
    // session at its limit can still be ended).
    let limit = admission.max_session_concurrency;
    let in_flight = if method == Method::POST {
        Some(session.begin(limit).ok_or(GatewayError::SessionBusy {
            limit,
            id: peek.id.clone(),
        })?)
    } else {
        None
    };
    let upstream_session = match &session.upstream {
        SessionUpstream::Http(upstream_session) => upstream_session.clone(),
        SessionUpstream::Stdio { .. } => {
            let request = stdio_http::Request {
                headers: &parts.headers,
                caller: &caller,
                body: body.clone(),
                label,
                tool_call,
                stateless: false,
                upstream_timeout: admission.upstream_timeout,
            };
            let mut response = Box::pin(stdio_http::in_session(
                shared, &target, session_id, session, &method, request,
            ))
            .await?;
            response.headers_mut().insert(MCP_SESSION_ID, sealed_id);
            return Ok(holding(response, in_flight));
        }
    };
    parts.headers.insert(MCP_SESSION_ID, upstream_session);
    let is_delete = method == Method::DELETE;
    let exchange = Exchange {
        method,
        headers: parts.headers,
        body: body.clone(),
        label,
        id: peek.id,
        tool_call,
        learn_pins: false,
        upstream_timeout: admission.upstream_timeout,
    };
    let result = Box::pin(forward(shared, &target, exchange)).await;
    if is_delete {
        shared.sessions.remove(&session_id);
    }
    let mut response = result?.response;
    if response.status() == StatusCode::NOT_FOUND {
        // The upstream forgot the session (restarted, expired): so do we.
        shared.sessions.remove(&session_id);
    }
    response.headers_mut().insert(MCP_SESSION_ID, sealed_id);
    Ok(holding(response, in_flight))
}

/// A retry's sealed `requestState` (one of `server`'s, see [`SealedState`]): where it
/// goes, and `body` with the upstream's own state in its place. `None` for a state that
/// is not sealed (or not by these keys): the gateway's own pins may know it.
fn unseal_state(
    shared: &Shared,
    server: &str,
    body: &Bytes,
    state: &str,
) -> Option<(Pinned, Bytes)> {
    let opened = shared
        .keys
        .open_state(state)
        .filter(|opened| opened.server == server)?;
    // Sealed states are base64url: written in JSON as they are, between quotes.
    let sealed = format!("\"{state}\"");
    let original = serde_json::to_string(&opened.state).ok()?;
    let restored = replace_first(body, sealed.as_bytes(), original.as_bytes())?;
    let pin = Pinned {
        server: Arc::from(server),
        revision: opened.revision,
        instance: opened.instance,
    };
    Some((pin, restored.freeze()))
}

/// `bytes` with the first `from` in it replaced by `to`; `None` when there is none.
fn replace_first(bytes: &[u8], from: &[u8], to: &[u8]) -> Option<bytes::BytesMut> {
    let at = bytes.windows(from.len()).position(|w| w == from)?;
    let mut replaced = bytes::BytesMut::with_capacity(bytes.len() - from.len() + to.len());
    replaced.extend_from_slice(&bytes[..at]);
    replaced.extend_from_slice(to);
    replaced.extend_from_slice(&bytes[at + from.len()..]);
    Some(replaced)
}

/// Remembers a new session and mints the sealed id its client gets.
///
/// # Errors
/// [`GatewayError::Upstream`] (broken) for request `id` when the OS has no randomness.
pub(crate) fn remember(
    shared: &Shared,
    session: Arc<Session>,
    idle_timeout: Option<Duration>,
    id: impl FnOnce() -> Option<serde_json::Value>,
) -> Result<(SessionId, HeaderValue), GatewayError> {
    let minted = SessionId::mint().ok().and_then(|session_id| {
        let sealed = shared.keys.seal(&session.sealed(session_id))?;
        Some((session_id, sealed))
    });
    let Some((session_id, sealed)) = minted else {
        tracing::error!("cannot mint a session id: the OS gives no randomness");
        return Err(GatewayError::Upstream {
            kind: UpstreamFailure::Broken,
            id: id(),
        });
    };
    shared
        .sessions
        .insert_as(session_id, sealed.clone(), session, idle_timeout);
    Ok((session_id, sealed))
}

/// Takes on a session another replica opened (its sealed id is all there is to know):
/// an HTTP upstream's session is served by relaying to the upstream with its own id.
/// It counts against the session limits as a new session would.
///
/// # Errors
/// [`GatewayError::UnknownSession`] — the client initializes again — when this
/// gateway's keys are its own (an id it does not know has ended here), the id was
/// another token's, the session's instance is not in the table, or it is a stdio
/// session (its pipes are in the gateway that opened it); the refusal of request `id`
/// when the limits leave no room.
fn adopt(
    shared: &Shared,
    routes: &distribution::Server,
    sealed: SealedSession,
    header: &HeaderValue,
    caller: &Caller,
    id: impl FnOnce() -> Option<serde_json::Value>,
) -> Result<(SessionId, Arc<Session>), GatewayError> {
    let upstream = match sealed.upstream {
        SealedUpstream::Http(upstream)
            if shared.keys.shared() && sealed.token.as_deref() == caller.token_name() =>
        {
            HeaderValue::from_bytes(&upstream).map_err(|_| GatewayError::UnknownSession)?
        }
        _ => return Err(GatewayError::UnknownSession),
    };
    let target = routes
        .find(sealed.revision, &sealed.instance)
        .filter(|target| matches!(target.instance.kind, Kind::Http(_)))
        .ok_or(GatewayError::UnknownSession)?;
    make_room(shared, caller, id)?;
    let session = Arc::new(Session {
        server: target.server,
        caller: caller.clone(),
        revision: target.revision,
        instance: target.instance,
        upstream: SessionUpstream::Http(upstream),
        in_flight: Arc::default(),
    });
    // Copied, not cloned: a parsed header value is a slice of the connection's read
    // buffer, which a session kept for its life would pin.
    let header =
        HeaderValue::from_bytes(header.as_bytes()).map_err(|_| GatewayError::UnknownSession)?;
    shared
        .sessions
        .insert_as(sealed.id, header, Arc::clone(&session), None);
    Ok((sealed.id, session))
}

/// Makes room for a new session of `caller` within the session limits, ending the idle
/// sessions that give way.
///
/// # Errors
/// The refusal of request `id` when every candidate session is busy.
pub(crate) fn make_room(
    shared: &Shared,
    caller: &Caller,
    id: impl FnOnce() -> Option<serde_json::Value>,
) -> Result<(), GatewayError> {
    let ended = shared
        .sessions
        .make_room(caller)
        .map_err(|full| full.refusal(id()))?;
    end_sessions(shared, ended);
    Ok(())
}

/// Ends sessions the gateway let go (idle, or to make room): HTTP upstreams are told,
/// stdio sessions give back their place and process as they drop.
pub(crate) fn end_sessions(shared: &Shared, sessions: Vec<Arc<Session>>) {
    for session in sessions {
        end_upstream_session(shared, &session);
    }
}

/// Tells an HTTP upstream that a session the gateway ended (idle) is over, in the
/// background: it can free what it holds. Stdio sessions end with their attachment.
/// With keys shared by replicas the session may be busy on another one: this gateway
/// only forgets it, and the upstream's own expiry ends it.
pub(crate) fn end_upstream_session(shared: &Shared, session: &Session) {
    if shared.keys.shared() {
        return;
    }
    let (SessionUpstream::Http(upstream_session), Kind::Http(uri)) =
        (&session.upstream, &session.instance.kind)
    else {
        return;
    };
    let mut request = hyper::Request::new(Bytes::new());
    *request.method_mut() = Method::DELETE;
    *request.uri_mut() = uri.clone();
    request
        .headers_mut()
        .insert(MCP_SESSION_ID, upstream_session.clone());
    let client = shared.client.clone();
    let timeout = shared.admission().upstream_timeout;
    tokio::spawn(async move {
        if let Ok(Err(error)) = tokio::time::timeout(timeout, client.request(request)).await {
            tracing::debug!(%error, "upstream DELETE of an idle session failed");
        }
    });
}

/// `response`, keeping `guard` alive until its body has been sent (or dropped).
fn holding<G: Send + Unpin + 'static>(response: Response<Body>, guard: G) -> Response<Body> {
    response.map(|body| {
        Body::new(Holding {
            body,
            _guard: guard,
        })
    })
}

struct Holding<G> {
    body: Body,
    _guard: G,
}

impl<G: Unpin> hyper::body::Body for Holding<G> {
    type Data = Bytes;
    type Error = axum::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, axum::Error>>> {
        Pin::new(&mut self.body).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> hyper::body::SizeHint {
        self.body.size_hint()
    }
}

/// Stateless routing applies to `server/discover` and to requests that say they
/// speak a modern revision (header or `_meta`).
fn is_modern(headers: &HeaderMap, peek: &jsonrpc::Peek<'_>) -> bool {
    peek.method.as_deref() == Some("server/discover")
        || modern_header(headers)
        || peek
            .meta_protocol_version
            .as_deref()
            .is_some_and(fleet_stdio::protocol::is_modern_revision)
}

/// `MCP-Protocol-Version` names a modern revision.
fn modern_header(headers: &HeaderMap) -> bool {
    headers
        .get(&MCP_PROTOCOL_VERSION)
        .and_then(|v| v.to_str().ok())
        .is_some_and(fleet_stdio::protocol::is_modern_revision)
}

async fn read_body(headers: &HeaderMap, body: Body, limit: usize) -> Result<Bytes, GatewayError> {
    let declared = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|length| length > limit as u64) {
        return Err(GatewayError::PayloadTooLarge { limit });
    }
    match Limited::new(body, limit).collect().await {
        Ok(collected) => Ok(collected.to_bytes()),
        Err(error) if error.is::<http_body_util::LengthLimitError>() => {
            Err(GatewayError::PayloadTooLarge { limit })
        }
        Err(_) => Err(GatewayError::BodyRead),
    }
}

fn strip_request_headers(headers: &mut HeaderMap) {
    strip(headers, |name| DROPPED_REQUEST_HEADERS.contains(name));
}

/// Removes the hop-by-hop headers ([`HOP_BY_HOP`] and those a `Connection` header names)
/// and those `also` picks. The names present are compared with the lists, and only those
/// found are removed: a message has a few headers, and removing every listed name would
/// hash each one whether it is there or not.
pub(crate) fn strip(headers: &mut HeaderMap, also: impl Fn(&HeaderName) -> bool) {
    // The headers a `Connection` header names are hop-by-hop too.
    let listed: Vec<HeaderName> = connection_options(headers)
        .filter_map(|name| HeaderName::from_bytes(name).ok())
        .collect();
    let doomed =
        |name: &&HeaderName| HOP_BY_HOP.contains(name) || listed.contains(name) || also(name);
    // One at a time, without a list (measured: a list's allocation cost more than
    // looking again): most messages carry one or two of them.
    while let Some(name) = headers.keys().find(&doomed).cloned() {
        headers.remove(name);
    }
}

/// One request on its way upstream.
struct Exchange {
    method: Method,
    headers: HeaderMap,
    body: Bytes,
    label: MethodLabel,
    id: Option<serde_json::Value>,
    tool_call: Option<ToolCall>,
    /// A stateless request: remember where an MRTR `requestState` in its answer
    /// came from.
    learn_pins: bool,
    /// The request's admission's (read once per request).
    upstream_timeout: Duration,
}

struct Forwarded {
    response: Response<Body>,
    upstream_session: Option<HeaderValue>,
}

async fn forward(
    shared: &Shared,
    target: &Target,
    exchange: Exchange,
) -> Result<Forwarded, GatewayError> {
    let Exchange {
        method,
        mut headers,
        body,
        label,
        id,
        mut tool_call,
        learn_pins,
        upstream_timeout,
    } = exchange;
    let mut request = hyper::Request::new(body);
    *request.method_mut() = method.clone();
    let Kind::Http(uri) = &target.instance.kind else {
        unreachable!("stdio upstreams are bridged, not proxied");
    };
    *request.uri_mut() = uri.clone();
    let mut span = RequestSpan::start(
        &headers,
        &target.server,
        target.revision,
        label,
        tool_call.as_ref().map(|call| call.tool.as_str()),
    );
    if let Some(span) = &span {
        span.propagate(&mut headers);
    }
    let trace_id = RequestSpan::trace_of(span.as_ref(), &headers);
    *request.headers_mut() = headers;

    let started = Instant::now();
    let deadline = tokio::time::Instant::from_std(started) + upstream_timeout;
    let guard = target.instance.begin();
    let mut failure = |kind: UpstreamFailure, id: Option<serde_json::Value>| {
        target.metrics.observe_request(
            label,
            Outcome::TransportError,
            Some(started.elapsed()),
            trace_id,
        );
        if let Some(call) = tool_call.take() {
            call.finish(target, ToolOutcome::TransportError);
        }
        tracing::debug!(instance = target.instance.id, %kind, "upstream failure");
        let error = GatewayError::Upstream { kind, id };
        if let Some(span) = span.take() {
            span.status(error.status());
            span.end(Outcome::TransportError);
        }
        error
    };
    let response = match tokio::time::timeout_at(deadline, shared.client.request(request)).await {
        Err(_) => return Err(failure(UpstreamFailure::Timeout, id)),
        Ok(Err(error)) if error.is_connect() => return Err(failure(UpstreamFailure::Connect, id)),
        Ok(Err(_)) => return Err(failure(UpstreamFailure::Broken, id)),
        Ok(Ok(response)) => response,
    };
    let (mut parts, incoming) = response.into_parts();
    // The upstream's session id stays with the gateway.
    let upstream_session = parts.headers.remove(&MCP_SESSION_ID);
    strip(&mut parts.headers, |_| false);
    let is_sse = parts
        .headers
        .get(header::CONTENT_TYPE)
        .is_some_and(|v| v.as_bytes().starts_with(b"text/event-stream"));
    let status_outcome = if parts.status.is_client_error() || parts.status.is_server_error() {
        Outcome::JsonRpcError
    } else {
        Outcome::Ok
    };

    if let Some(span) = &span {
        span.status(parts.status);
    }
    let is_request = method == Method::POST;
    let latency = started.elapsed();
    // A GET stream (or a DELETE's answer) is counted when it opens; a request's answer
    // when it ends.
    let pending = if is_request {
        Some(Pending {
            metrics: Arc::clone(&target.metrics),
            label,
            latency,
            outcome: status_outcome,
            trace_id,
            span,
        })
    } else {
        target
            .metrics
            .observe_request(label, status_outcome, Some(latency), trace_id);
        if let Some(span) = span {
            span.end(status_outcome);
        }
        None
    };
    // The relay's length may differ from the upstream's (an error replacing an answer
    // that never came, a sealed `requestState`): the server frames what the relay sends.
    parts.headers.remove(header::CONTENT_LENGTH);
    let framing = if is_sse { Framing::Sse } else { Framing::Json };
    // Every answer's response is looked at: a JSON-RPC error counts as one (canary
    // analysis judges revisions by it), wherever it is.
    let scan = is_request.then(|| match framing {
        Framing::Sse => Scan::Sse(SseScan::default()),
        Framing::Json => Scan::Json(JsonScan::new(shared.config.max_response_bytes)),
    });
    let now = tokio::time::Instant::now();
    let mut relay = Relay {
        inner: incoming,
        framing,
        // A request's answer must not hang on a stuck upstream; a GET stream may be
        // quiet for as long as the client keeps it.
        silence: is_request.then_some(upstream_timeout),
        heard: now,
        heard_since: false,
        failure_id: is_request.then_some(id).flatten(),
        pending,
        scan,
        tool_call: tool_call.map(|call| (call, target.clone())),
        pins: learn_pins.then(|| (Arc::clone(&shared.pins), target.pin())),
        seal_states: (learn_pins && shared.keys.shared()).then(|| shared.keys.clone()),
        mrtr_seen: false,
        _guard: Some(guard),
        held: Gathered::default(),
        hold_until: is_request.then(|| now + HOLD),
        timer: None,
        relayed: false,
        finished: false,
        cut: false,
    };
    if is_request {
        // The head waits with the answer's start (see [`HOLD`]): a quick answer leaves
        // as one write, head to end.
        std::future::poll_fn(|cx| match relay.poll_gather(cx) {
            Poll::Pending if relay.hold_until.is_some() => Poll::Pending,
            _ => Poll::Ready(()),
        })
        .await;
    }
    let body = Body::new(relay);
    Ok(Forwarded {
        response: Response::from_parts(parts, body),
        upstream_session,
    })
}

/// A request's metrics, recorded when its SSE stream ends.
struct Pending {
    metrics: Arc<SeriesCounters>,
    label: MethodLabel,
    latency: Duration,
    outcome: Outcome,
    /// The trace the request belongs to, for its latency's exemplar.
    trace_id: Option<TraceId>,
    /// Ends with the answer.
    span: Option<RequestSpan>,
}

impl Pending {
    fn record(self, outcome: Option<Outcome>) {
        let outcome = outcome.unwrap_or(self.outcome);
        self.metrics
            .observe_request(self.label, outcome, Some(self.latency), self.trace_id);
        if let Some(span) = self.span {
            span.end(outcome);
        }
    }
}

/// Most bytes relayed in one frame.
const GATHER_LIMIT: usize = 64 * 1024;

/// How long the start of a request's answer (its head too) may wait for the rest of it.
/// Most answers are whole within microseconds of their head, but arrive in pieces: the
/// head with a priming event, the response, the stream's end. Relayed as they came,
/// each piece is a write for the gateway and a wake-up for the client; held this long,
/// a quick answer is one write. A slow answer's start is late by at most this, its
/// later events not at all.
const HOLD: Duration = Duration::from_millis(5);

/// Data frames that were ready at once, joined.
#[derive(Default)]
struct Gathered {
    first: Option<Bytes>,
    more: Option<bytes::BytesMut>,
}

impl Gathered {
    fn is_empty(&self) -> bool {
        self.first.is_none()
    }

    fn len(&self) -> usize {
        self.more.as_ref().map_or_else(
            || self.first.as_ref().map_or(0, Bytes::len),
            bytes::BytesMut::len,
        )
    }

    /// Adds a frame; returns the bytes gathered so far.
    fn push(&mut self, data: Bytes) -> usize {
        match (&self.first, &mut self.more) {
            (None, _) => self.first = Some(data),
            (Some(first), None) => {
                let mut more = bytes::BytesMut::with_capacity(first.len() + data.len());
                more.extend_from_slice(first);
                more.extend_from_slice(&data);
                self.more = Some(more);
            }
            (Some(_), Some(more)) => more.extend_from_slice(&data),
        }
        self.len()
    }

    /// Replaces the first `from` in what is held with `to`; false when it is not held
    /// whole.
    fn replace(&mut self, from: &[u8], to: &[u8]) -> bool {
        let held: &[u8] = match (&self.first, &self.more) {
            (_, Some(more)) => more,
            (Some(first), None) => first,
            (None, None) => return false,
        };
        let Some(replaced) = replace_first(held, from, to) else {
            return false;
        };
        self.more = Some(replaced);
        true
    }

    fn into_bytes(self) -> Option<Bytes> {
        match self.more {
            Some(more) => Some(more.freeze()),
            None => self.first,
        }
    }
}

/// How an answer's body is framed, which decides how a failure ends it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Framing {
    /// `text/event-stream`: a failure adds an error event.
    Sse,
    /// Anything else (a JSON answer): a failure is the whole answer when none of it was
    /// sent, else cuts it off.
    Json,
}

/// What a request's answer is kept as while it passes, to read its response at the end.
enum Scan {
    Sse(SseScan),
    Json(JsonScan),
}

impl Scan {
    fn push(&mut self, data: &[u8]) {
        match self {
            Self::Sse(scan) => scan.push(data),
            Self::Json(scan) => scan.push(data),
        }
    }

    /// The answer's response, once it is all there.
    fn response(&self) -> Option<String> {
        match self {
            Self::Sse(scan) => scan.response(),
            Self::Json(scan) => scan.response(),
        }
    }

    fn outcome(&self) -> ToolOutcome {
        match self {
            Self::Sse(scan) => scan.outcome(),
            Self::Json(scan) => scan.outcome(),
        }
    }
}

/// The bytes of a JSON answer, up to a limit: past it the answer is relayed on but no
/// longer kept, and judged as answered.
struct JsonScan {
    bytes: Vec<u8>,
    limit: usize,
    overflowed: bool,
}

impl JsonScan {
    fn new(limit: usize) -> Self {
        Self {
            bytes: Vec::new(),
            limit,
            overflowed: false,
        }
    }

    fn push(&mut self, data: &[u8]) {
        if self.overflowed || self.bytes.len() + data.len() > self.limit {
            self.overflowed = true;
            self.bytes = Vec::new();
        } else {
            self.bytes.extend_from_slice(data);
        }
    }

    /// The response, when the bytes so far are one whole JSON value.
    fn response(&self) -> Option<String> {
        if self.overflowed {
            return None;
        }
        serde_json::from_slice::<IgnoredAny>(&self.bytes).ok()?;
        String::from_utf8(self.bytes.clone()).ok()
    }

    fn outcome(&self) -> ToolOutcome {
        if self.overflowed {
            // Too large to judge; it did end normally.
            ToolOutcome::Ok
        } else {
            outcome_of_response(&self.bytes)
        }
    }
}

/// The client's side of an answer the upstream broke after part of it was sent.
fn cut_off() -> std::io::Error {
    std::io::Error::other("the upstream broke the answer")
}

/// Relays an upstream body as it arrives. A broken or silent upstream ends it as its
/// [`Framing`] says.
struct Relay {
    inner: UpstreamBody,
    framing: Framing,
    /// How long the upstream may stay silent before the answer ends with a timeout error.
    silence: Option<Duration>,
    /// When the upstream last sent a frame (or the answer began), as of the last wait.
    heard: tokio::time::Instant,
    /// Frames came since [`Self::heard`] was set: the clock is read when a wait needs it,
    /// not per frame (most answers end without one).
    heard_since: bool,
    /// The request's id, for the error that ends an answer the upstream failed.
    failure_id: Option<serde_json::Value>,
    pending: Option<Pending>,
    /// The answer, kept to read its response at the end.
    scan: Option<Scan>,
    tool_call: Option<(ToolCall, Target)>,
    pins: Option<(Arc<Pins>, Pinned)>,
    /// Keys shared with other replicas: a pinned `requestState` is handed to the client
    /// sealed ([`SealedState`]), so that its retry finds the way from any replica.
    seal_states: Option<SessionKeys>,
    /// The answer mentioned `input_required`: look for its response on every frame.
    mrtr_seen: bool,
    /// Keeps the instance's outstanding count up while the answer is open.
    _guard: Option<OutstandingGuard>,
    /// What the upstream sent that has not gone to the client yet.
    held: Gathered,
    /// A request's answer is held until it ends or this instant passes ([`HOLD`]).
    hold_until: Option<tokio::time::Instant>,
    /// The answer's one timer, for the earliest of the hold's end and the silence limit.
    /// Made only when a wait needs the clock, and moved rather than re-made: arming a
    /// timer takes the runtime's timer lock and, for a deadline earlier than any other,
    /// wakes a parked worker; frames only note when they came ([`Self::heard`]).
    timer: Option<Pin<Box<tokio::time::Sleep>>>,
    /// Some of the answer went to the client.
    relayed: bool,
    finished: bool,
    /// A JSON answer broke after some of it was sent: the client's body ends in an error.
    cut: bool,
}

impl hyper::body::Body for Relay {
    type Data = Bytes;
    type Error = std::io::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, std::io::Error>>> {
        std::task::ready!(self.poll_gather(cx));
        match std::mem::take(&mut self.held).into_bytes() {
            Some(bytes) => {
                self.relayed = true;
                Poll::Ready(Some(Ok(Frame::data(bytes))))
            }
            None => Poll::Ready(std::mem::take(&mut self.cut).then(|| Err(cut_off()))),
        }
    }

    fn is_end_stream(&self) -> bool {
        self.finished && !self.cut && self.held.is_empty()
    }

    fn size_hint(&self) -> hyper::body::SizeHint {
        // An answer that was whole before its head left goes out with its length.
        if self.finished && !self.cut {
            hyper::body::SizeHint::with_exact(self.held.len() as u64)
        } else {
            hyper::body::SizeHint::default()
        }
    }
}

impl Relay {
    /// Takes in everything the upstream has already sent; ready when what is held
    /// should go to the client, or the answer has ended.
    fn poll_gather(&mut self, cx: &mut Context<'_>) -> Poll<()> {
        if self.finished {
            return Poll::Ready(());
        }
        // Everything the upstream has already sent goes out in one write: an answer's
        // events and the stream's end often arrive together, and every separate frame
        // costs the client (and the gateway) a wake-up and a system call.
        loop {
            match Pin::new(&mut self.inner).poll_frame(cx) {
                Poll::Pending => break,
                Poll::Ready(Some(Ok(frame))) => {
                    self.heard_since = true;
                    // Trailers mean nothing to MCP; only data is relayed.
                    if let Ok(data) = frame.into_data() {
                        if let Some(scan) = &mut self.scan {
                            scan.push(&data);
                        }
                        self.mrtr_seen |=
                            self.pins.is_some() && pins::mentions_input_required(&data);
                        if self.held.push(data) >= GATHER_LIMIT {
                            break;
                        }
                    }
                }
                Poll::Ready(None) => {
                    self.finish(None);
                    break;
                }
                Poll::Ready(Some(Err(error))) => {
                    tracing::debug!(%error, "upstream broke an answer");
                    self.fail(UpstreamFailure::Broken);
                    break;
                }
            }
        }
        // An MRTR state is pinned before the client can read it and retry.
        if self.mrtr_seen
            && self.pins.is_some()
            && let Some(response) = self.scan.as_ref().and_then(Scan::response)
        {
            self.learn_pins(response.as_bytes());
        }
        loop {
            if self.finished || self.held.len() >= GATHER_LIMIT || self.hold_until.is_none() {
                self.hold_until = None;
                if self.finished || !self.held.is_empty() {
                    return Poll::Ready(());
                }
            }
            // Waiting: the upstream's socket wakes this body, the timer the clock.
            if std::mem::take(&mut self.heard_since) && self.silence.is_some() {
                self.heard = tokio::time::Instant::now();
            }
            let Some(deadline) = self.next_deadline() else {
                return Poll::Pending;
            };
            let timer = self
                .timer
                .get_or_insert_with(|| Box::pin(tokio::time::sleep_until(deadline)));
            if timer.deadline() != deadline {
                timer.as_mut().reset(deadline);
            }
            if timer.as_mut().poll(cx).is_pending() {
                return Poll::Pending;
            }
            // The clock reached `deadline`: whatever was due by then is over. Anything
            // else moved later meanwhile (a frame came) and gets the timer next.
            if self.hold_until.is_some_and(|until| until <= deadline) {
                self.hold_until = None;
            }
            if self.held.is_empty()
                && self
                    .silence_deadline()
                    .is_some_and(|limit| limit <= deadline)
            {
                self.fail(UpstreamFailure::Timeout);
            }
        }
    }

    /// When the upstream has been silent too long, for a request's answer.
    fn silence_deadline(&self) -> Option<tokio::time::Instant> {
        self.silence.map(|limit| self.heard + limit)
    }

    /// The next moment the clock matters while waiting: the hold's end, and the silence
    /// limit while nothing is held (what is held goes out before the limit counts).
    fn next_deadline(&self) -> Option<tokio::time::Instant> {
        let silence = if self.held.is_empty() {
            self.silence_deadline()
        } else {
            None
        };
        match (self.hold_until, silence) {
            (Some(hold), Some(silence)) => Some(hold.min(silence)),
            (hold, silence) => hold.or(silence),
        }
    }

    /// The upstream failed: ends the answer, with the request's error where the framing
    /// has room for it.
    fn fail(&mut self, kind: UpstreamFailure) {
        self.finish(Some(Outcome::TransportError));
        let id = self.failure_id.take();
        let for_a_request = id.is_some();
        let error = GatewayError::Upstream { kind, id };
        match self.framing {
            Framing::Sse if for_a_request => {
                self.held.push(sse_event(&error.json_rpc_body()));
            }
            Framing::Sse => {}
            Framing::Json if !self.relayed && self.held.is_empty() => {
                self.held.push(Bytes::from(error.json_rpc_body()));
            }
            Framing::Json => self.cut = true,
        }
    }

    fn finish(&mut self, outcome: Option<Outcome>) {
        self.finished = true;
        self._guard = None;
        let scan = self.scan.take();
        self.count(scan.as_ref(), outcome);
        // The response is read for pins only: most answers have none to learn.
        if self.pins.is_some()
            && let Some(response) = scan.as_ref().and_then(Scan::response)
        {
            self.learn_pins(response.as_bytes());
        }
    }

    /// Pins the `requestState` of `response`, if it asks for input; with keys shared
    /// by replicas, the client is handed it sealed — when the state is still held here
    /// as the upstream wrote it (else the retry is pinned only if it comes back here).
    fn learn_pins(&mut self, response: &[u8]) {
        let Some((pins, pin)) = self.pins.take() else {
            return;
        };
        let Some((state, pin)) = pins.learn(response, || pin) else {
            return;
        };
        let Some(keys) = &self.seal_states else {
            return;
        };
        let sealed = keys.seal_state(&SealedState {
            server: pin.server.to_string(),
            revision: pin.revision,
            instance: pin.instance,
            state: state.clone(),
        });
        if let (Some(sealed), Ok(written)) = (sealed, serde_json::to_string(&state))
            && !self
                .held
                .replace(written.as_bytes(), format!("\"{sealed}\"").as_bytes())
        {
            tracing::debug!("an MRTR requestState left before it could be sealed");
        }
    }

    /// Counts the request and audits its tool call, the answer's response read once.
    /// `failure`: the upstream failed (else the response, if any, decides).
    fn count(&mut self, scan: Option<&Scan>, failure: Option<Outcome>) {
        if self.pending.is_none() && self.tool_call.is_none() {
            return;
        }
        let answer = scan.map_or(ToolOutcome::TransportError, Scan::outcome);
        if let Some(pending) = self.pending.take() {
            let answered_with_error =
                (answer == ToolOutcome::JsonRpcError).then_some(Outcome::JsonRpcError);
            pending.record(failure.or(answered_with_error));
        }
        if let Some((call, target)) = self.tool_call.take() {
            let outcome = match failure {
                Some(Outcome::TransportError) => ToolOutcome::TransportError,
                _ => answer,
            };
            call.finish(&target, outcome);
        }
    }
}

impl Drop for Relay {
    fn drop(&mut self) {
        // The client went away first (often right after reading the response, before the
        // stream's end): the request counts as its response says, else as it began.
        let scan = self.scan.take();
        self.count(scan.as_ref(), None);
    }
}

pub(crate) fn sse_event(data: &[u8]) -> Bytes {
    let mut event = Vec::with_capacity(data.len() + 24);
    event.extend_from_slice(b"event: message\ndata: ");
    event.extend_from_slice(data);
    event.extend_from_slice(b"\n\n");
    Bytes::from(event)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&'static str, &'static str)]) -> HeaderMap {
        let mut headers = HeaderMap::new();
        for (name, value) in pairs {
            headers.append(*name, HeaderValue::from_static(value));
        }
        headers
    }

    fn names(headers: &HeaderMap) -> Vec<&str> {
        let mut names: Vec<&str> = headers.keys().map(HeaderName::as_str).collect();
        names.sort_unstable();
        names
    }

    #[test]
    fn a_request_loses_its_hop_by_hop_headers_credentials_and_those_connection_names() {
        let mut request = headers(&[
            ("host", "gateway.example"),
            ("authorization", "Bearer secret"),
            ("proxy-authorization", "Basic c2VjcmV0"),
            ("cookie", "a=b"),
            ("content-length", "42"),
            ("origin", "http://localhost"),
            ("connection", "keep-alive, X-Private"),
            ("connection", "x-other"),
            ("keep-alive", "timeout=5"),
            ("proxy-connection", "keep-alive"),
            ("te", "trailers"),
            ("trailer", "x-sum"),
            ("transfer-encoding", "chunked"),
            ("upgrade", "websocket"),
            ("x-private", "1"),
            ("x-other", "2"),
            ("content-type", "application/json"),
            ("accept", "application/json, text/event-stream"),
            ("mcp-session-id", "abc"),
            ("mcp-protocol-version", "2025-11-25"),
        ]);
        strip_request_headers(&mut request);
        assert_eq!(
            names(&request),
            [
                "accept",
                "content-type",
                "mcp-protocol-version",
                "mcp-session-id"
            ]
        );
    }

    #[test]
    fn an_answer_loses_only_its_hop_by_hop_headers() {
        let mut answer = headers(&[
            ("connection", "close, x-hop"),
            ("x-hop", "1"),
            ("transfer-encoding", "chunked"),
            ("content-type", "text/event-stream"),
            ("content-length", "10"),
            ("mcp-session-id", "abc"),
        ]);
        strip(&mut answer, |_| false);
        assert_eq!(
            names(&answer),
            ["content-length", "content-type", "mcp-session-id"]
        );
        // Without a `Connection` header nothing is named by one.
        let mut plain = headers(&[("content-type", "application/json")]);
        strip(&mut plain, |_| false);
        assert_eq!(names(&plain), ["content-type"]);
    }
}
