//! The gateway's requests by path: `POST|GET|DELETE /mcp/{server}`, `/healthz`,
//! `/readyz` and the replicas' traffic reports.
//!
//! Four paths are matched by hand rather than by axum's router: on a relayed call the
//! router cost ~3,600 of ~65,000 instructions (its URL parameters, a boxed clone of the
//! route per request, the extractors; docs/benchmarks.md). They are answered as the
//! router answered them: 404 for any other path, 405 with `Allow` for another method,
//! HEAD served where GET is, and the server's name percent-decoded (400 when the result
//! is not UTF-8).

use std::borrow::Cow;
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;

use axum::extract::Request;
use axum::handler::Handler as _;
use axum::http::{HeaderValue, Method, StatusCode, header};
use axum::response::{IntoResponse as _, Response};

use crate::{Shared, proxy, readyz, reports};

/// A request's answer, on its way.
pub(crate) type Answer = Pin<Box<dyn Future<Output = Response> + Send>>;

/// Answers the requests of one gateway. A clone is a reference count.
#[derive(Clone)]
pub(crate) struct DataPlane {
    shared: Arc<Shared>,
}

impl DataPlane {
    pub(crate) fn new(shared: Arc<Shared>) -> Self {
        Self { shared }
    }

    /// Answers `request`, which came from `peer`.
    pub(crate) fn call(&self, request: Request, peer: SocketAddr) -> Answer {
        let shared = Arc::clone(&self.shared);
        let method = request.method();
        let path = request.uri().path();
        if let Some(server) = path.strip_prefix("/mcp/") {
            if server.is_empty() || server.contains('/') {
                return answer(StatusCode::NOT_FOUND.into_response());
            }
            if !matches!(
                *method,
                Method::POST | Method::GET | Method::HEAD | Method::DELETE
            ) {
                return answer(not_allowed("POST,GET,HEAD,DELETE"));
            }
            // The name borrows a clone of the URI (a reference count), not the request,
            // which moves on.
            let uri = request.uri().clone();
            return Box::pin(async move {
                let Some(server) = percent_decoded(&uri.path()["/mcp/".len()..]) else {
                    return (StatusCode::BAD_REQUEST, "Invalid URL").into_response();
                };
                proxy::mcp(&shared, &server, request, peer).await
            });
        }
        let get = matches!(*method, Method::GET | Method::HEAD);
        match path {
            "/healthz" if get => answer(StatusCode::OK.into_response()),
            "/readyz" if get => answer(readyz(&shared, &request)),
            "/healthz" | "/readyz" => answer(not_allowed("GET,HEAD")),
            reports::PATH if *method == Method::POST => reports::receive.call(request, shared),
            reports::PATH => answer(not_allowed("POST")),
            _ => answer(StatusCode::NOT_FOUND.into_response()),
        }
    }
}

fn answer(response: Response) -> Answer {
    Box::pin(std::future::ready(response))
}

fn not_allowed(allow: &'static str) -> Response {
    (
        StatusCode::METHOD_NOT_ALLOWED,
        [(header::ALLOW, HeaderValue::from_static(allow))],
    )
        .into_response()
}

/// A path segment with its `%XX` escapes decoded; `None` when the result is not UTF-8.
fn percent_decoded(segment: &str) -> Option<Cow<'_, str>> {
    percent_encoding::percent_decode_str(segment)
        .decode_utf8()
        .ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_server_name_is_percent_decoded_and_must_be_utf8() {
        assert_eq!(percent_decoded("pipes").as_deref(), Some("pipes"));
        assert_eq!(percent_decoded("my%2Dserver").as_deref(), Some("my-server"));
        assert_eq!(percent_decoded("%FF"), None);
    }
}
