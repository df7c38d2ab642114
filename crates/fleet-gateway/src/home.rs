//! A replica's relay to the stdio home: the gateway that holds a stdio server's pipes
//! (the leading control plane's own). A replica admits a request as it admits any
//! (Host/Origin, token, rate limit, body size), then passes it on whole — the client's
//! bearer token and session id included, since the home checks the one and minted the
//! other — and streams the home's answer back as it comes.

use std::time::Duration;

use axum::body::Body;
use axum::http::request::Parts;
use axum::http::{HeaderMap, Response, Uri, header};
use bytes::Bytes;

use crate::Shared;
use crate::error::{GatewayError, UpstreamFailure};

/// Headers not relayed besides the hop-by-hop ones: those the relay sets itself, and the
/// proxy's credentials (the client's own token goes on: the home checks it).
const NOT_RELAYED: [header::HeaderName; 3] = [
    header::HOST,
    header::CONTENT_LENGTH,
    header::PROXY_AUTHORIZATION,
];

/// Sends the request (`parts`, `body`) to `endpoint` (`/mcp/{server}` at the home) and
/// returns its answer.
///
/// # Errors
/// [`GatewayError::Upstream`] when the home cannot be reached or sends no answer head
/// within `timeout`.
pub(crate) async fn relay(
    shared: &Shared,
    endpoint: &Uri,
    parts: Parts,
    body: Bytes,
    timeout: Duration,
    id: Option<serde_json::Value>,
) -> Result<Response<Body>, GatewayError> {
    let mut request = hyper::Request::new(body);
    *request.method_mut() = parts.method;
    *request.uri_mut() = endpoint.clone();
    *request.headers_mut() = relayed(parts.headers);
    let failed = |kind| GatewayError::Upstream {
        kind,
        id: id.clone(),
    };
    let response = tokio::time::timeout(timeout, shared.client.request(request))
        .await
        .map_err(|_| failed(UpstreamFailure::Timeout))?
        .map_err(|error| {
            tracing::warn!(%endpoint, %error, "the stdio home cannot be reached");
            failed(UpstreamFailure::Connect)
        })?;
    let (mut head, incoming) = response.into_parts();
    head.headers = relayed(head.headers);
    Ok(Response::from_parts(head, Body::new(incoming)))
}

fn relayed(mut headers: HeaderMap) -> HeaderMap {
    crate::proxy::strip(&mut headers, |name| NOT_RELAYED.contains(name));
    headers
}
