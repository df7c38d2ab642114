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
use axum::http::{HeaderMap, HeaderValue, Method, Response, StatusCode, header};
use bytes::Bytes;
use tokio::sync::mpsc;

use crate::Shared;
use crate::distribution::{Kind, OutstandingGuard, Target};
use crate::error::{GatewayError, UpstreamFailure};
use crate::jsonrpc;
use crate::link::{ClientMessage, Delivery, Hub};
use crate::metrics::{MethodLabel, Outcome};
use crate::pool::AcquireError;
use crate::proxy::{MCP_SESSION_ID, sse_event};
use crate::sessions::{Session, SessionId, SessionUpstream};

/// A new session (`initialize`) or a stateless modern request on a stdio upstream.
pub(crate) async fn open(
    shared: &Shared,
    server: &str,
    target: Target,
    initialize: bool,
    headers: &HeaderMap,
    body: Bytes,
    label: MethodLabel,
) -> Result<Response<Body>, GatewayError> {
    let message = ClientMessage::parse(&body).map_err(|_| GatewayError::Parse)?;
    let id = || {
        message
            .id
            .and_then(|id| serde_json::from_str(id.get()).ok())
    };
    let (attachment, lease, idle_timeout) = match &target.instance.kind {
        Kind::Stdio(link) => (link.attach(), None, None),
        Kind::StdioPerSession(processes) => {
            let lease = processes.acquire().await.map_err(|error| match error {
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
        revision: target.revision,
        instance: Arc::clone(&target.instance),
        upstream: SessionUpstream::Stdio {
            attachment,
            _lease: lease,
        },
    });
    if !initialize {
        // Stateless: the attachment (and process) live as long as the answer.
        return post(
            shared,
            &target,
            &session,
            &message,
            headers,
            body.clone(),
            label,
        )
        .await;
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
    let mut response = post(
        shared,
        &target,
        &session,
        &message,
        headers,
        body.clone(),
        label,
    )
    .await?;
    response
        .headers_mut()
        .insert(MCP_SESSION_ID, session_id.header_value());
    Ok(response)
}

/// A request on an existing session of a stdio upstream.
#[allow(clippy::too_many_arguments)]
pub(crate) async fn in_session(
    shared: &Shared,
    target: &Target,
    session_id: SessionId,
    session: Arc<Session>,
    method: &Method,
    headers: &HeaderMap,
    body: Bytes,
    label: MethodLabel,
) -> Result<Response<Body>, GatewayError> {
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
            let Some(stream) = attachment.hub.standalone() else {
                return Err(GatewayError::StreamOpen);
            };
            target.metrics.record(label, Outcome::Ok, None);
            sse_response(Body::from_stream(standalone_events(stream)))
        }
        _ => {
            let message = ClientMessage::parse(&body).map_err(|_| GatewayError::Parse)?;
            post(
                shared,
                target,
                &session,
                &message,
                headers,
                body.clone(),
                label,
            )
            .await?
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
    headers: &HeaderMap,
    body: Bytes,
    label: MethodLabel,
) -> Result<Response<Body>, GatewayError> {
    let SessionUpstream::Stdio { attachment, .. } = &session.upstream else {
        unreachable!("only stdio sessions come here");
    };
    let started = Instant::now();
    let id_value = || {
        message
            .id
            .and_then(|id| serde_json::from_str(id.get()).ok())
    };
    let broken = |id| {
        target
            .metrics
            .record(label, Outcome::TransportError, Some(started.elapsed()));
        GatewayError::Upstream {
            kind: UpstreamFailure::Broken,
            id,
        }
    };
    let (Some(id), true) = (message.id, message.is_request()) else {
        attachment
            .send(message, body)
            .await
            .map_err(|_| broken(None))?;
        target
            .metrics
            .record(label, Outcome::Ok, Some(started.elapsed()));
        return Ok(Response::builder()
            .status(StatusCode::ACCEPTED)
            .body(Body::empty())
            .unwrap_or_default());
    };
    let guard = target.instance.begin();
    let mut deliveries = attachment.hub.begin(id, message.progress_token);
    if attachment.send(message, body).await.is_err() {
        attachment.hub.end(id);
        return Err(broken(id_value()));
    }
    let measure = Measure {
        target: target.clone(),
        label,
        started,
        _guard: guard,
    };
    if accepts_sse(headers) {
        let events = RequestEvents {
            deliveries,
            measure: Some(measure),
            attachment_hub: Arc::clone(&attachment.hub),
            id: id.to_owned(),
            _session: Arc::clone(session),
        };
        return Ok(sse_response(Body::from_stream(events.into_stream())));
    }
    // JSON: wait for the response; what else comes meanwhile goes to the GET stream.
    let deadline = tokio::time::Instant::from_std(started) + shared.config.upstream_timeout;
    loop {
        match tokio::time::timeout_at(deadline, deliveries.recv()).await {
            Err(_) => {
                attachment.hub.end(id);
                target
                    .metrics
                    .record(label, Outcome::TransportError, Some(started.elapsed()));
                return Err(GatewayError::Upstream {
                    kind: UpstreamFailure::Timeout,
                    id: id_value(),
                });
            }
            Ok(None) => return Err(broken(id_value())),
            Ok(Some(Delivery {
                message,
                last: false,
            })) => attachment.hub.to_standalone(message),
            Ok(Some(Delivery {
                message,
                last: true,
            })) => {
                measure.record(&message);
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

/// Records a request's metrics once its response is known.
struct Measure {
    target: Target,
    label: MethodLabel,
    started: Instant,
    _guard: OutstandingGuard,
}

impl Measure {
    fn record(self, response: &[u8]) {
        let outcome = if jsonrpc::is_error_response(response) {
            Outcome::JsonRpcError
        } else {
            Outcome::Ok
        };
        self.target
            .metrics
            .record(self.label, outcome, Some(self.started.elapsed()));
    }
}

/// A request's SSE answer. Holds the session so a stateless request's process lives
/// until its answer is sent.
struct RequestEvents {
    deliveries: mpsc::UnboundedReceiver<Delivery>,
    measure: Option<Measure>,
    attachment_hub: Arc<Hub>,
    id: Box<serde_json::value::RawValue>,
    _session: Arc<Session>,
}

impl RequestEvents {
    fn into_stream(self) -> impl futures::Stream<Item = Result<Bytes, std::convert::Infallible>> {
        futures::stream::unfold(self, |mut events| async move {
            let delivery = events.deliveries.recv().await?;
            if delivery.last
                && let Some(measure) = events.measure.take()
            {
                measure.record(&delivery.message);
            }
            Some((Ok(sse_event(&delivery.message)), events))
        })
    }
}

impl Drop for RequestEvents {
    fn drop(&mut self) {
        // The client went away before the response (or the stream ended): forget the
        // request, so a late response is dropped rather than misrouted.
        if self.measure.is_some() {
            self.attachment_hub.end(&self.id);
        }
    }
}

fn standalone_events(
    stream: mpsc::UnboundedReceiver<Bytes>,
) -> impl futures::Stream<Item = Result<Bytes, std::convert::Infallible>> {
    futures::stream::unfold(stream, |mut stream| async move {
        let message = stream.recv().await?;
        Some((Ok(sse_event(&message)), stream))
    })
}
