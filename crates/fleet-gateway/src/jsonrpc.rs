//! The little the gateway reads of a JSON-RPC message: method, id, the modern
//! protocol version in `_meta`, and whether a response is an error. Messages are
//! forwarded as the client's bytes; nothing here re-encodes them.

use std::borrow::Cow;

use serde::Deserialize;
use serde::de::IgnoredAny;

/// The routing facts of one client message.
#[derive(Debug, Default)]
pub(crate) struct Peek<'a> {
    /// `None` for responses, batches and bodies that are not JSON-RPC.
    pub(crate) method: Option<Cow<'a, str>>,
    /// The request id, echoed in gateway-made error responses.
    pub(crate) id: Option<serde_json::Value>,
    /// `params._meta["io.modelcontextprotocol/protocolVersion"]` (modern requests).
    pub(crate) meta_protocol_version: Option<Cow<'a, str>>,
    /// `params.name`: the tool of a `tools/call`.
    pub(crate) name: Option<Cow<'a, str>>,
    /// `params.requestState`: an MRTR retry (modern).
    pub(crate) request_state: Option<Cow<'a, str>>,
}

#[derive(Deserialize)]
struct Message<'a> {
    #[serde(borrow)]
    method: Option<Cow<'a, str>>,
    id: Option<serde_json::Value>,
    #[serde(borrow)]
    params: Option<Params<'a>>,
}

#[derive(Deserialize)]
struct Params<'a> {
    #[serde(rename = "_meta", borrow)]
    meta: Option<Meta<'a>>,
    #[serde(borrow)]
    name: Option<Cow<'a, str>>,
    #[serde(rename = "requestState", borrow)]
    request_state: Option<Cow<'a, str>>,
}

#[derive(Deserialize)]
struct Meta<'a> {
    #[serde(rename = "io.modelcontextprotocol/protocolVersion", borrow)]
    protocol_version: Option<Cow<'a, str>>,
}

/// Reads the routing facts of `body`. `Err` when it is not JSON at all; a batch (a
/// JSON array) or a non-object reads as an empty peek.
pub(crate) fn peek(body: &[u8]) -> Result<Peek<'_>, serde_json::Error> {
    match body.iter().find(|b| !b.is_ascii_whitespace()) {
        Some(b'{') => {
            let message: Message<'_> = serde_json::from_slice(body)?;
            let (meta, name, request_state) = match message.params {
                Some(params) => (params.meta, params.name, params.request_state),
                None => (None, None, None),
            };
            Ok(Peek {
                method: message.method,
                id: message.id,
                meta_protocol_version: meta.and_then(|m| m.protocol_version),
                name,
                request_state,
            })
        }
        _ => {
            serde_json::from_slice::<IgnoredAny>(body)?;
            Ok(Peek::default())
        }
    }
}

#[derive(Deserialize)]
struct ResponseShape {
    error: Option<IgnoredAny>,
}

/// Whether a JSON response body carries a JSON-RPC error (for a batch: any element).
pub(crate) fn is_error_response(body: &[u8]) -> bool {
    match body.iter().find(|b| !b.is_ascii_whitespace()) {
        Some(b'{') => serde_json::from_slice::<ResponseShape>(body)
            .map(|r| r.error.is_some())
            .unwrap_or(false),
        Some(b'[') => serde_json::from_slice::<Vec<ResponseShape>>(body)
            .map(|all| all.iter().any(|r| r.error.is_some()))
            .unwrap_or(false),
        _ => false,
    }
}

/// A JSON-RPC error response, as bytes.
pub(crate) fn error_body(id: Option<&serde_json::Value>, code: i64, message: &str) -> Vec<u8> {
    let body = serde_json::json!({
        "jsonrpc": "2.0",
        "id": id.unwrap_or(&serde_json::Value::Null),
        "error": { "code": code, "message": message },
    });
    serde_json::to_vec(&body).unwrap_or_default()
}

/// Protocol revisions up to this one use `initialize` and sessions.
const LAST_LEGACY_REVISION: &str = "2025-11-25";

/// Whether `version` (a `YYYY-MM-DD` revision) is a modern, stateless revision.
pub(crate) fn is_modern_revision(version: &str) -> bool {
    version.len() == LAST_LEGACY_REVISION.len() && version > LAST_LEGACY_REVISION
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn peeks_only_what_routing_needs() {
        let body = br#"{"jsonrpc":"2.0","id":7,"method":"tools/call","params":{"name":"x","_meta":{"io.modelcontextprotocol/protocolVersion":"2026-07-28","other":{"deep":[1,2]}}}}"#;
        let peek = peek(body).unwrap();
        assert_eq!(peek.method.as_deref(), Some("tools/call"));
        assert_eq!(peek.id, Some(serde_json::json!(7)));
        assert_eq!(peek.meta_protocol_version.as_deref(), Some("2026-07-28"));
        assert!(super::peek(b"[]").unwrap().method.is_none());
        assert!(super::peek(b"{nope").is_err());
    }

    #[test]
    fn finds_errors_in_responses() {
        assert!(is_error_response(
            br#"{"jsonrpc":"2.0","id":1,"error":{"code":1,"message":"x"}}"#
        ));
        assert!(!is_error_response(
            br#"{"jsonrpc":"2.0","id":1,"result":{}}"#
        ));
        assert!(is_error_response(
            br#"[{"id":1,"result":{}},{"id":2,"error":{}}]"#
        ));
    }

    #[test]
    fn tells_eras_apart() {
        assert!(is_modern_revision("2026-07-28"));
        assert!(!is_modern_revision("2025-11-25"));
        assert!(!is_modern_revision("2025-03-26"));
        assert!(!is_modern_revision("garbage"));
    }
}
