//! Every way the gateway refuses or fails a request, and the one place they become
//! HTTP responses.
//!
//! Bodies are JSON-RPC error objects (`{"jsonrpc":"2.0","id":…,"error":{…}}`) so MCP
//! clients surface them as errors of the request they sent; the id is the request's
//! when the gateway had read it, else `null`. Codes: -32700 unparsable body, -32020
//! header mismatch (MCP 2026-07-28), -32601 a method 2026-07-28 does not have, -32602
//! invalid `_meta`, -32603 upstream failure, -32000 gateway policy.
//! No message ever contains a token.

use std::time::Duration;

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};

use crate::jsonrpc::{self, MAX_NAME_BYTES};

/// Why a request was not (successfully) forwarded.
#[derive(Debug, thiserror::Error)]
pub enum GatewayError {
    /// `Host` is not the gateway's (DNS rebinding protection).
    #[error("Host not allowed")]
    HostNotAllowed,
    /// `Origin` is present and not an allowed origin.
    #[error("Origin not allowed")]
    OriginNotAllowed,
    /// Tokens are configured and the request has none, or an unknown one.
    #[error(
        "this gateway requires a mcpfleet bearer token: create one with `mcpfleet token create NAME`, add the line it prints to the fleet file, and send `Authorization: Bearer <token>`"
    )]
    Unauthorized,
    /// The token is valid but not for this server.
    #[error("this token may not use server `{server}`")]
    TokenNotAllowed {
        /// The server asked for.
        server: String,
    },
    /// The route table has no such server.
    #[error("no server named `{server}`")]
    UnknownServer {
        /// The server asked for.
        server: String,
    },
    /// The server has no instance to take a new session or request.
    #[error("server `{server}` has no instances")]
    NoInstances {
        /// The server.
        server: String,
    },
    /// A per-session stdio server has `max` sessions already.
    #[error("server `{server}` is at its limit of {max} sessions; try again when one ends")]
    SessionLimit {
        /// The server.
        server: String,
        /// Its `max_sessions`.
        max: u32,
        /// The request id.
        id: Option<serde_json::Value>,
    },
    /// The gateway holds `gateway.max_sessions` sessions and none is idle.
    #[error("the gateway is at its limit of {max} sessions, all busy; try again when one ends")]
    GatewayFull {
        /// The limit.
        max: usize,
        /// The request id.
        id: Option<serde_json::Value>,
    },
    /// The token (or client address) holds `gateway.max_sessions_per_token` sessions
    /// and none is idle.
    #[error("this token is at its limit of {max} sessions, all busy; end one (DELETE) first")]
    CallerFull {
        /// The limit.
        max: usize,
        /// The request id.
        id: Option<serde_json::Value>,
    },
    /// The session has `limit` requests in flight already.
    #[error("this session has {limit} requests in flight; wait for one to finish")]
    SessionBusy {
        /// The per-session limit.
        limit: usize,
        /// The request id.
        id: Option<serde_json::Value>,
    },
    /// A GET stream is already open on this session.
    #[error("this session already has an open GET stream")]
    StreamOpen,
    /// The body is larger than the configured limit.
    #[error("request body larger than {limit} bytes")]
    PayloadTooLarge {
        /// The limit.
        limit: usize,
    },
    /// The request body could not be read.
    #[error("cannot read the request body")]
    BodyRead,
    /// Over the token's (or client's) rate limit.
    #[error("rate limit exceeded")]
    RateLimited {
        /// When the next request would be accepted.
        retry_after: Duration,
    },
    /// A non-initialize request without `Mcp-Session-Id` in the legacy era.
    #[error("Mcp-Session-Id header required")]
    MissingSession,
    /// The session id is unknown, expired, or its instance left the route table.
    #[error("session not found; initialize a new session")]
    UnknownSession,
    /// The body is not JSON.
    #[error("the request body is not JSON")]
    Parse,
    /// The body is JSON but not a JSON-RPC message: not an object, or an object with
    /// neither `method` nor `id`.
    #[error(
        "the body is not a JSON-RPC message: send one JSON object with `method` (a request or notification) or `id` (a response)"
    )]
    NotAMessage,
    /// A JSON array: a JSON-RPC batch. MCP removed batches in 2025-06-18.
    #[error(
        "JSON-RPC batches are not part of MCP (removed in 2025-06-18); send one message per request"
    )]
    Batch,
    /// `jsonrpc` is missing or not `"2.0"`.
    #[error("the message must have `\"jsonrpc\": \"2.0\"`")]
    InvalidVersion {
        /// The request id.
        id: Option<serde_json::Value>,
    },
    /// The id is not a string or an integer within 64 bits (or is null in a request).
    #[error(
        "the id must be a string or an integer within 64 bits, without fraction or exponent (and not null in a request)"
    )]
    InvalidId,
    /// `method` is not a string of 1 to 128 printable ASCII characters.
    #[error(
        "`method` must be a string of 1 to {} printable ASCII characters, without spaces",
        MAX_NAME_BYTES
    )]
    InvalidMethod {
        /// The request id.
        id: Option<serde_json::Value>,
    },
    /// A member the gateway reads has the wrong type, or a member appears twice.
    #[error(
        "a member of the message has the wrong type or appears twice (`params` and `params._meta` are objects, `params.requestState` is a string)"
    )]
    MalformedMembers {
        /// The request id.
        id: Option<serde_json::Value>,
    },
    /// A `tools/call` whose `params.name` is missing, not a string, too long or has
    /// characters no tool name has.
    #[error(
        "a tools/call needs `params.name`, a tool name of 1 to {} printable ASCII characters without spaces",
        MAX_NAME_BYTES
    )]
    InvalidToolName {
        /// The request id.
        id: Option<serde_json::Value>,
    },
    /// A response to a server→client request that was not sent to this session (another
    /// session's, or none): dropped, never forwarded.
    #[error("this session was sent no server request with id {id}")]
    NotAsked {
        /// The id the response carried.
        id: serde_json::Value,
    },
    /// `Mcp-Method` differs from the body's method.
    #[error("Mcp-Method header does not match the body's method")]
    HeaderMismatch {
        /// The request id.
        id: Option<serde_json::Value>,
    },
    /// A modern (2026-07-28) request lacks a header that version requires on every
    /// request (`MCP-Protocol-Version`, `Mcp-Method`, or `Mcp-Name` for a call naming a
    /// tool, prompt or resource).
    #[error("the {header} header is required on a 2026-07-28 request")]
    MissingHeader {
        /// The header.
        header: &'static str,
        /// The request id.
        id: Option<serde_json::Value>,
    },
    /// `Mcp-Name` differs from the body's `params.name` (`params.uri` for
    /// `resources/read`).
    #[error(
        "Mcp-Name header does not match the body's params.name (params.uri for resources/read)"
    )]
    NameHeaderMismatch {
        /// The request id.
        id: Option<serde_json::Value>,
    },
    /// `MCP-Protocol-Version` differs from `params._meta`'s protocol version.
    #[error(
        "MCP-Protocol-Version header does not match params._meta[\"io.modelcontextprotocol/protocolVersion\"]"
    )]
    VersionHeaderMismatch {
        /// The request id.
        id: Option<serde_json::Value>,
    },
    /// A modern request's `params._meta` lacks a member 2026-07-28 requires.
    #[error("invalid params: params._meta must have \"{member}\" in a 2026-07-28 request")]
    MissingMeta {
        /// The member.
        member: &'static str,
        /// The request id.
        id: Option<serde_json::Value>,
    },
    /// A method 2026-07-28 does not have (`initialize`, `ping`, `logging/setLevel`,
    /// `resources/subscribe`, `resources/unsubscribe`): refused before a stdio server
    /// sees it, since it would answer it as a session-era server.
    #[error("method not found: `{method}` does not exist in MCP 2026-07-28")]
    RemovedMethod {
        /// The method.
        method: String,
        /// The request id.
        id: Option<serde_json::Value>,
    },
    /// The upstream could not be reached, failed, or did not answer in time.
    #[error("upstream {kind}")]
    Upstream {
        /// What went wrong.
        kind: UpstreamFailure,
        /// The request id.
        id: Option<serde_json::Value>,
    },
}

/// How an upstream failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum UpstreamFailure {
    /// The connection was refused or could not be made.
    #[error("unreachable")]
    Connect,
    /// No response head, or no next part of an answer, within the upstream timeout.
    #[error("timed out")]
    Timeout,
    /// The connection broke before a complete response.
    #[error("connection lost")]
    Broken,
}

/// JSON-RPC error codes of gateway-made answers.
pub(crate) mod code {
    pub(crate) use fleet_stdio::jsonrpc::code::*;
    pub(crate) const HEADER_MISMATCH: i64 = -32020;
    pub(crate) const MISSING_CLIENT_CAPABILITY: i64 = -32021;
    pub(crate) const UNSUPPORTED_PROTOCOL_VERSION: i64 = -32022;
    pub(crate) const GATEWAY_POLICY: i64 = -32000;
}

impl GatewayError {
    /// The HTTP status of this error.
    pub fn status(&self) -> StatusCode {
        match self {
            Self::HostNotAllowed | Self::OriginNotAllowed | Self::TokenNotAllowed { .. } => {
                StatusCode::FORBIDDEN
            }
            Self::Unauthorized => StatusCode::UNAUTHORIZED,
            Self::UnknownServer { .. } | Self::UnknownSession | Self::RemovedMethod { .. } => {
                StatusCode::NOT_FOUND
            }
            Self::NoInstances { .. } | Self::SessionLimit { .. } | Self::GatewayFull { .. } => {
                StatusCode::SERVICE_UNAVAILABLE
            }
            Self::StreamOpen => StatusCode::CONFLICT,
            Self::PayloadTooLarge { .. } => StatusCode::PAYLOAD_TOO_LARGE,
            Self::RateLimited { .. } | Self::SessionBusy { .. } | Self::CallerFull { .. } => {
                StatusCode::TOO_MANY_REQUESTS
            }
            Self::MissingSession
            | Self::Parse
            | Self::NotAMessage
            | Self::Batch
            | Self::InvalidVersion { .. }
            | Self::InvalidId
            | Self::InvalidMethod { .. }
            | Self::MalformedMembers { .. }
            | Self::InvalidToolName { .. }
            | Self::HeaderMismatch { .. }
            | Self::MissingHeader { .. }
            | Self::NameHeaderMismatch { .. }
            | Self::VersionHeaderMismatch { .. }
            | Self::MissingMeta { .. }
            | Self::BodyRead
            | Self::NotAsked { .. } => StatusCode::BAD_REQUEST,
            Self::Upstream { .. } => StatusCode::BAD_GATEWAY,
        }
    }

    fn code(&self) -> i64 {
        match self {
            Self::Parse => code::PARSE_ERROR,
            Self::NotAMessage
            | Self::Batch
            | Self::InvalidVersion { .. }
            | Self::InvalidId
            | Self::InvalidMethod { .. }
            | Self::MalformedMembers { .. }
            | Self::NotAsked { .. } => code::INVALID_REQUEST,
            Self::InvalidToolName { .. } | Self::MissingMeta { .. } => code::INVALID_PARAMS,
            Self::HeaderMismatch { .. }
            | Self::MissingHeader { .. }
            | Self::NameHeaderMismatch { .. }
            | Self::VersionHeaderMismatch { .. } => code::HEADER_MISMATCH,
            Self::RemovedMethod { .. } => code::METHOD_NOT_FOUND,
            Self::Upstream { .. } => code::INTERNAL_ERROR,
            _ => code::GATEWAY_POLICY,
        }
    }

    fn id(&self) -> Option<&serde_json::Value> {
        match self {
            Self::HeaderMismatch { id }
            | Self::NameHeaderMismatch { id }
            | Self::VersionHeaderMismatch { id }
            | Self::MissingHeader { id, .. }
            | Self::MissingMeta { id, .. }
            | Self::RemovedMethod { id, .. }
            | Self::InvalidVersion { id }
            | Self::InvalidMethod { id }
            | Self::MalformedMembers { id }
            | Self::InvalidToolName { id }
            | Self::Upstream { id, .. }
            | Self::SessionLimit { id, .. }
            | Self::GatewayFull { id, .. }
            | Self::CallerFull { id, .. }
            | Self::SessionBusy { id, .. } => id.as_ref(),
            _ => None,
        }
    }

    /// The body of this error as a JSON-RPC error response.
    pub(crate) fn json_rpc_body(&self) -> Vec<u8> {
        jsonrpc::error_body(self.id(), self.code(), &self.to_string())
    }
}

impl IntoResponse for GatewayError {
    fn into_response(self) -> Response {
        let mut response = (
            self.status(),
            [(
                header::CONTENT_TYPE,
                HeaderValue::from_static("application/json"),
            )],
            self.json_rpc_body(),
        )
            .into_response();
        let headers = response.headers_mut();
        match &self {
            Self::Unauthorized => {
                // A bare `Bearer` challenge sends OAuth-capable clients into discovery the
                // gateway does not offer; `invalid_token` with a description tells them, and
                // their user, that a static token is what is missing.
                headers.insert(
                    header::WWW_AUTHENTICATE,
                    HeaderValue::from_static(
                        "Bearer error=\"invalid_token\", error_description=\"a mcpfleet bearer token is required; create one with mcpfleet token create\"",
                    ),
                );
            }
            Self::RateLimited { retry_after } => {
                let seconds = retry_after.as_secs() + u64::from(retry_after.subsec_nanos() > 0);
                headers.insert(header::RETRY_AFTER, HeaderValue::from(seconds.max(1)));
            }
            _ => {}
        }
        response
    }
}
