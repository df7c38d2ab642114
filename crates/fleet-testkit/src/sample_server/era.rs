//! The two era rules rmcp cannot express, applied to messages before rmcp
//! sees them.
//!
//! rmcp narrows eras through `supported_protocol_versions`, but then (1) it
//! answers `server/discover` on a legacy-only server with -32022 listing
//! legacy versions, which a modern client reads as "modern server, no common
//! version" instead of falling back to `initialize`; and (2) a refused
//! `initialize` on stdio ends its serve loop, so a modern-only server would be
//! unusable after one legacy attempt. Here, a legacy-only server does not know
//! `server/discover` (-32601) and a modern-only server refuses `initialize`
//! (-32022) without ending anything.

use axum::body::{Body, to_bytes};
use axum::extract::{Request, State};
use axum::http::StatusCode;
use axum::middleware::Next;
use axum::response::{IntoResponse as _, Response};
use rmcp::RoleServer;
use rmcp::model::{
    ClientJsonRpcMessage, ClientRequest, DiscoverRequestMethod, ErrorData, ProtocolVersion,
    ServerJsonRpcMessage,
};
use rmcp::transport::Transport;

use super::{Era, SampleServer};

/// Bodies larger than this are left for rmcp to refuse.
const MAX_GATED_BODY: usize = 4 * 1024 * 1024;

impl SampleServer {
    /// The error answering `message` when this server's era does not accept it.
    fn era_refusal(&self, message: &ClientJsonRpcMessage) -> Option<ServerJsonRpcMessage> {
        let ClientJsonRpcMessage::Request(request) = message else {
            return None;
        };
        let error = match (self.era(), &request.request) {
            (Era::Legacy, ClientRequest::DiscoverRequest(_)) => {
                ErrorData::method_not_found::<DiscoverRequestMethod>()
            }
            (Era::Modern, ClientRequest::InitializeRequest(initialize)) => {
                ErrorData::unsupported_protocol_version(
                    initialize.params.protocol_version.clone(),
                    &[ProtocolVersion::V_2026_07_28],
                )
            }
            _ => return None,
        };
        self.log(format_args!("refused by --era: {}", error.message));
        Some(ServerJsonRpcMessage::error(error, Some(request.id.clone())))
    }
}

/// A stdio transport that answers refused requests itself.
#[derive(Debug)]
pub(super) struct EraGate<T> {
    server: SampleServer,
    inner: T,
}

impl<T> EraGate<T> {
    pub(super) fn new(server: SampleServer, inner: T) -> Self {
        Self { server, inner }
    }
}

impl<T: Transport<RoleServer>> Transport<RoleServer> for EraGate<T> {
    type Error = T::Error;

    fn send(
        &mut self,
        item: ServerJsonRpcMessage,
    ) -> impl Future<Output = Result<(), Self::Error>> + Send + 'static {
        self.inner.send(item)
    }

    async fn receive(&mut self) -> Option<ClientJsonRpcMessage> {
        loop {
            let message = self.inner.receive().await?;
            match self.server.era_refusal(&message) {
                None => return Some(message),
                Some(refusal) => {
                    if let Err(error) = self.inner.send(refusal).await {
                        self.server
                            .log(format_args!("cannot send a refusal: {error}"));
                    }
                }
            }
        }
    }

    fn close(&mut self) -> impl Future<Output = Result<(), Self::Error>> + Send {
        self.inner.close()
    }
}

/// The same gate as axum middleware in front of the Streamable HTTP service.
/// Each era answers by its own rules: a legacy server's JSON-RPC errors come
/// with 200, a modern server's -32022 with 400.
pub(super) async fn http_era_gate(
    State(server): State<SampleServer>,
    request: Request,
    next: Next,
) -> Response {
    let (parts, body) = request.into_parts();
    if parts.method == axum::http::Method::DELETE {
        // What a test of a gateway's session clean-up looks for.
        server.log("DELETE session");
    }
    let Ok(bytes) = to_bytes(body, MAX_GATED_BODY).await else {
        return StatusCode::PAYLOAD_TOO_LARGE.into_response();
    };
    if let Ok(message) = serde_json::from_slice::<ClientJsonRpcMessage>(&bytes)
        && let Some(refusal) = server.era_refusal(&message)
    {
        let status = match server.era() {
            Era::Modern => StatusCode::BAD_REQUEST,
            Era::Legacy | Era::Both => StatusCode::OK,
        };
        return (status, axum::Json(refusal)).into_response();
    }
    next.run(Request::from_parts(parts, Body::from(bytes)))
        .await
}
