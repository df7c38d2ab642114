//! The little the gateway reads of a JSON-RPC message: method, id, the modern
//! request metadata in `_meta`, the name `Mcp-Name` must repeat, and a response's
//! error code; and whether a client's message is one the gateway forwards at all.
//! Messages are forwarded as the client's bytes; nothing here re-encodes them.
//!
//! A client's POST body must be one JSON-RPC 2.0 message, else the gateway answers
//! 400 itself (an upstream would ignore it, or the client would wait for an answer
//! that never comes):
//! - one JSON object: a JSON array (a batch) is refused, batches left MCP in
//!   2025-06-18 and no stdio server reads them;
//! - `"jsonrpc": "2.0"`;
//! - a request (`method` and `id`) has an id that is a string or an integer within
//!   i64 or u64 (MCP: "a string or integer", never null); a response (`id` without
//!   `method`) may also have a null id (JSON-RPC's answer to an unreadable request);
//!   an id with a fraction or an exponent, or too large, is refused;
//! - `method` and a `tools/call`'s `params.name` are 1 to [`MAX_NAME_BYTES`]
//!   printable ASCII characters without spaces: the tool name becomes a metric label
//!   and an audit record, so neither may be of any length.
//!
//! The body is read once, by a checking skim (`skim.rs`): the whole text must be JSON
//! (UTF-8, RFC 8259's grammar), and only the members checked here are looked at, kept
//! as borrowed raw text and read from it; a value peek has no use for (a tool's
//! arguments) is checked and skipped, never built. So a bad member is told apart from
//! bad JSON, and the refusal keeps the id.

use std::borrow::Cow;
use std::cell::Cell;

use serde::Deserialize;
use serde::de::IgnoredAny;

use crate::error::GatewayError;
use crate::skim::{Kind, Skim, string_text};

/// Longest method and tool name forwarded, in bytes: MCP asks tool names to be 1 to
/// 128 characters, and no MCP method comes near it.
pub(crate) const MAX_NAME_BYTES: usize = 128;

/// The routing facts of one client message.
#[derive(Debug, Default)]
pub(crate) struct Peek<'a> {
    /// `None` for responses.
    pub(crate) method: Option<Cow<'a, str>>,
    /// The request id, echoed in gateway-made error responses.
    pub(crate) id: Option<serde_json::Value>,
    /// `params._meta["io.modelcontextprotocol/protocolVersion"]` (modern requests).
    pub(crate) meta_protocol_version: Option<Cow<'a, str>>,
    /// `params._meta["io.modelcontextprotocol/clientCapabilities"]` is there (required
    /// in modern requests).
    pub(crate) meta_client_capabilities: bool,
    /// `params.name`: the tool of a `tools/call` (always set for one).
    pub(crate) name: Option<Cow<'a, str>>,
    /// What a modern request's `Mcp-Name` header must say: `params.name` of a
    /// `tools/call` or `prompts/get`, `params.uri` of a `resources/read`.
    pub(crate) header_name: Option<Cow<'a, str>>,
    /// `params.requestState`: an MRTR retry (modern).
    pub(crate) request_state: Option<Cow<'a, str>>,
}

/// A member as the body has it (`null` is a value here, not an absence): its kind and raw
/// text.
type Member<'a> = Option<(Kind, &'a str)>;

/// The members [`peek`] reads, read in one skim of the body.
#[derive(Default)]
struct Message<'a> {
    jsonrpc: Member<'a>,
    method: Member<'a>,
    id: Member<'a>,
    /// `params` (twice is malformed, like any member read here).
    params: Member<'a>,
    meta: Member<'a>,
    protocol_version: Member<'a>,
    client_capabilities: Member<'a>,
    name: Member<'a>,
    uri: Member<'a>,
    request_state: Member<'a>,
    /// A member above came twice, or `params` or `_meta` is neither an object nor null
    /// (a cell: every member's reader may say so).
    malformed: Cell<bool>,
    /// `id` came twice: no refusal can echo it.
    id_twice: bool,
}

impl<'a> Message<'a> {
    /// Reads the next value into `slot`; a second value for the same slot is malformed.
    fn take(slot: &mut Member<'a>, malformed: &Cell<bool>, skim: &mut Skim<'a>) -> Option<()> {
        let value = skim.raw_value()?;
        if slot.replace(value).is_some() {
            malformed.set(true);
        }
        Some(())
    }

    /// Reads an object member (`params`, `_meta`) by `read`, or notes what else it is.
    fn take_object(
        slot: &mut Member<'a>,
        malformed: &Cell<bool>,
        skim: &mut Skim<'a>,
        read: impl FnMut(&mut Skim<'a>, &str) -> Option<()>,
    ) -> Option<()> {
        if skim.next_is_object() {
            if slot.replace((Kind::Object, "")).is_some() {
                malformed.set(true);
            }
            skim.members(read)
        } else {
            Self::take(slot, malformed, skim)?;
            if slot.is_some_and(|(kind, _)| kind != Kind::Null) {
                malformed.set(true);
            }
            Some(())
        }
    }

    /// The message the object that comes next is; `None` when it is not well formed.
    fn read(skim: &mut Skim<'a>) -> Option<Self> {
        let mut m = Message::default();
        skim.members(|skim, name| match name {
            "jsonrpc" => Self::take(&mut m.jsonrpc, &m.malformed, skim),
            "method" => Self::take(&mut m.method, &m.malformed, skim),
            "id" => {
                m.id_twice |= m.id.is_some();
                Self::take(&mut m.id, &m.malformed, skim)
            }
            "params" => {
                Self::take_object(&mut m.params, &m.malformed, skim, |skim, name| match name {
                    "_meta" => {
                        Self::take_object(
                            &mut m.meta,
                            &m.malformed,
                            skim,
                            |skim, name| match name {
                                "io.modelcontextprotocol/protocolVersion" => {
                                    Self::take(&mut m.protocol_version, &m.malformed, skim)
                                }
                                "io.modelcontextprotocol/clientCapabilities" => {
                                    Self::take(&mut m.client_capabilities, &m.malformed, skim)
                                }
                                _ => skim.value().map(drop),
                            },
                        )
                    }
                    "name" => Self::take(&mut m.name, &m.malformed, skim),
                    "uri" => Self::take(&mut m.uri, &m.malformed, skim),
                    "requestState" => Self::take(&mut m.request_state, &m.malformed, skim),
                    _ => skim.value().map(drop),
                })
            }
            _ => skim.value().map(drop),
        })?;
        Some(m)
    }
}

/// A string member's text; `None` for null; `Err` for any other kind.
fn optional_string<'a>(member: Member<'a>) -> Result<Option<Cow<'a, str>>, ()> {
    match member {
        None | Some((Kind::Null, _)) => Ok(None),
        Some((Kind::String, text)) => string_text(text).map(Some).ok_or(()),
        Some(_) => Err(()),
    }
}

/// Reads the routing facts of `body`, a client's message.
///
/// # Errors
/// [`GatewayError::Parse`] when it is not JSON; when it is not one valid JSON-RPC 2.0
/// message (see the module docs), the `GatewayError` saying what is wrong, with the
/// request's id when it is usable.
pub(crate) fn peek(body: &[u8]) -> Result<Peek<'_>, GatewayError> {
    let mut skim = Skim::new(body).ok_or(GatewayError::Parse)?;
    let first = skim.first();
    let message = if first == Some(b'{') {
        Message::read(&mut skim)
    } else {
        skim.value().map(|_| Message::default())
    };
    let message = message
        .filter(|_| skim.at_end())
        .ok_or(GatewayError::Parse)?;
    if first != Some(b'{') {
        return Err(if first == Some(b'[') {
            GatewayError::Batch
        } else {
            GatewayError::NotAMessage
        });
    }
    let request_state = optional_string(message.request_state);
    let protocol_version = optional_string(message.protocol_version);
    let (Ok(request_state), Ok(meta_protocol_version), false) =
        (request_state, protocol_version, message.malformed.get())
    else {
        return Err(GatewayError::MalformedMembers {
            id: message
                .id
                .filter(|_| !message.id_twice)
                .and_then(|(_, raw)| request_id(raw).ok()),
        });
    };
    let meta_client_capabilities = message
        .client_capabilities
        .is_some_and(|(kind, _)| kind != Kind::Null);
    let id = message.id.map(|(_, raw)| request_id(raw));
    let usable_id = || id.clone().and_then(Result::ok);
    let version = message.jsonrpc.and_then(|(_, raw)| string(raw));
    if version.as_deref() != Some("2.0") {
        return Err(GatewayError::InvalidVersion { id: usable_id() });
    }
    let method = match message.method {
        None => None,
        Some((_, raw)) => {
            Some(bounded_name(raw).ok_or_else(|| GatewayError::InvalidMethod { id: usable_id() })?)
        }
    };
    let id = match (id, &method) {
        (None, None) => return Err(GatewayError::NotAMessage),
        (Some(Err(())), _) | (Some(Ok(serde_json::Value::Null)), Some(_)) => {
            return Err(GatewayError::InvalidId);
        }
        (id, _) => id.and_then(Result::ok),
    };
    let name = message.name.map(|(_, raw)| raw);
    let (name, header_name) = match method.as_deref() {
        Some("tools/call") => match name.and_then(bounded_name) {
            Some(name) => (Some(name.clone()), Some(name)),
            None => return Err(GatewayError::InvalidToolName { id }),
        },
        Some("prompts/get") => (None, name.and_then(string)),
        Some("resources/read") => (None, message.uri.and_then(|(_, raw)| string(raw))),
        _ => (None, None),
    };
    Ok(Peek {
        method,
        id,
        meta_protocol_version,
        meta_client_capabilities,
        name,
        header_name,
        request_state,
    })
}

/// A JSON-RPC id as the gateway forwards it: a string, an integer within i64 or u64,
/// or null (whether null may be depends on the message).
fn request_id(raw: &str) -> Result<serde_json::Value, ()> {
    let text = raw.trim();
    match text.as_bytes().first() {
        Some(b'"') => serde_json::from_str::<String>(text)
            .map(serde_json::Value::String)
            .map_err(drop),
        Some(b'n') => Ok(serde_json::Value::Null),
        // Digits only: a fraction or an exponent is no integer, and a longer one
        // than 64 bits holds is no id an upstream can echo exactly.
        Some(b'-' | b'0'..=b'9') => text
            .parse::<i64>()
            .map(serde_json::Value::from)
            .or_else(|_| text.parse::<u64>().map(serde_json::Value::from))
            .map_err(drop),
        _ => Err(()),
    }
}

/// `raw` when it is a JSON string (checked by a skim).
fn string(raw: &str) -> Option<Cow<'_, str>> {
    raw.starts_with('"').then(|| string_text(raw)).flatten()
}

/// Longest JSON text of a name within [`MAX_NAME_BYTES`]: every character escaped
/// (`\u0041`), and the quotes.
const MAX_NAME_TEXT: usize = MAX_NAME_BYTES * 6 + 2;

/// `raw` when it is a string that may name a method or a tool.
fn bounded_name(raw: &str) -> Option<Cow<'_, str>> {
    // Longer text cannot decode to a name in bounds: it is never copied.
    if raw.len() > MAX_NAME_TEXT {
        return None;
    }
    string(raw).filter(|name| is_bounded_name(name))
}

/// 1 to [`MAX_NAME_BYTES`] printable ASCII characters, no spaces: what MCP asks of a
/// tool name (`A-Z a-z 0-9 _ - .`) and the `/` or `:` some servers use besides.
fn is_bounded_name(name: &str) -> bool {
    !name.is_empty() && name.len() <= MAX_NAME_BYTES && name.bytes().all(|b| b.is_ascii_graphic())
}

#[derive(Deserialize)]
struct ResponseShape {
    error: Option<IgnoredAny>,
}

#[derive(Deserialize)]
struct ErrorResponseShape {
    error: Option<ErrorShape>,
}

#[derive(Deserialize)]
struct ErrorShape {
    code: i64,
}

/// The code of the JSON-RPC error `body` (one response) carries; `None` for a result
/// or what is no response.
pub(crate) fn error_code(body: &[u8]) -> Option<i64> {
    serde_json::from_slice::<ErrorResponseShape>(body)
        .ok()?
        .error
        .map(|error| error.code)
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

pub(crate) use fleet_stdio::jsonrpc::error_body;

#[cfg(test)]
mod tests {
    use super::*;

    use proptest::prelude::*;

    #[test]
    fn peeks_only_what_routing_needs() {
        let body = br#"{"jsonrpc":"2.0","id":7,"method":"tools/call","params":{"name":"x","_meta":{"io.modelcontextprotocol/protocolVersion":"2026-07-28","other":{"deep":[1,2]}}}}"#;
        let peek = peek(body).unwrap();
        assert_eq!(peek.method.as_deref(), Some("tools/call"));
        assert_eq!(peek.id, Some(serde_json::json!(7)));
        assert_eq!(peek.name.as_deref(), Some("x"));
        assert_eq!(peek.meta_protocol_version.as_deref(), Some("2026-07-28"));
        assert!(matches!(super::peek(b"{nope"), Err(GatewayError::Parse)));
        let response = super::peek(br#"{"jsonrpc":"2.0","id":null,"result":{}}"#).unwrap();
        assert!(response.method.is_none());
        assert_eq!(response.id, Some(serde_json::Value::Null));
        let escaped = super::peek(br#"{"jsonrpc":"2\u002e0","method":"tools\/list","id":"a"}"#);
        assert_eq!(escaped.unwrap().method.as_deref(), Some("tools/list"));
    }

    /// The refusal of `body`: (HTTP status, JSON-RPC code, id in the error body).
    fn refusal(body: &[u8]) -> (u16, i64, serde_json::Value) {
        let error = match peek(body) {
            Ok(peek) => panic!("{} was accepted: {peek:?}", String::from_utf8_lossy(body)),
            Err(error) => error,
        };
        let answer: serde_json::Value = serde_json::from_slice(&error.json_rpc_body()).unwrap();
        (
            error.status().as_u16(),
            answer["error"]["code"].as_i64().unwrap(),
            answer["id"].clone(),
        )
    }

    #[test]
    fn refuses_what_is_no_json_rpc_2_message_with_invalid_request() {
        let big = format!(
            r#"{{"jsonrpc":"2.0","method":"ping","id":1{}}}"#,
            "0".repeat(5000)
        );
        for (body, id) in [
            (r#"{"method":"ping","id":1}"#, serde_json::json!(1)),
            (
                r#"{"jsonrpc":true,"method":"ping","id":"a"}"#,
                serde_json::json!("a"),
            ),
            (
                r#"{"jsonrpc":"1.0","method":"ping","id":2}"#,
                serde_json::json!(2),
            ),
            (
                r#"{"jsonrpc":null,"method":"ping","id":2}"#,
                serde_json::json!(2),
            ),
            (
                r#"{"jsonrpc":"2.0","method":"ping","id":1e400}"#,
                serde_json::Value::Null,
            ),
            (
                r#"{"jsonrpc":"2.0","method":"ping","id":1.5}"#,
                serde_json::Value::Null,
            ),
            (
                r#"{"jsonrpc":"2.0","method":"ping","id":18446744073709551616}"#,
                serde_json::Value::Null,
            ),
            (
                r#"{"jsonrpc":"2.0","method":"ping","id":null}"#,
                serde_json::Value::Null,
            ),
            (
                r#"{"jsonrpc":"2.0","method":"ping","id":[1]}"#,
                serde_json::Value::Null,
            ),
            (
                r#"{"jsonrpc":"2.0","method":5,"id":3}"#,
                serde_json::json!(3),
            ),
            (
                r#"{"jsonrpc":"2.0","method":"","id":3}"#,
                serde_json::json!(3),
            ),
            (
                r#"{"jsonrpc":"2.0","method":"a b","id":3}"#,
                serde_json::json!(3),
            ),
            (r#"{"jsonrpc":"2.0","result":{}}"#, serde_json::Value::Null),
            (
                r#"{"jsonrpc":"2.0","method":"x","id":4,"params":{"_meta":7}}"#,
                serde_json::json!(4),
            ),
            (
                r#"{"jsonrpc":"2.0","method":"x","id":4,"id":5}"#,
                serde_json::Value::Null,
            ),
            (
                r#"[{"jsonrpc":"2.0","method":"ping","id":1}]"#,
                serde_json::Value::Null,
            ),
            ("7", serde_json::Value::Null),
            (big.as_str(), serde_json::Value::Null),
        ] {
            assert_eq!(refusal(body.as_bytes()), (400, -32600, id), "{body}");
        }
    }

    #[test]
    fn members_of_the_wrong_type_are_refused_with_the_id_and_text_that_is_no_json_as_such() {
        for (body, id) in [
            (
                r#"{"jsonrpc":"2.0","method":"x","id":4,"params":5}"#,
                serde_json::json!(4),
            ),
            (
                r#"{"jsonrpc":"2.0","method":"x","params":{"requestState":5},"id":"s"}"#,
                serde_json::json!("s"),
            ),
            (
                r#"{"jsonrpc":"2.0","method":"x","id":6,"params":{"_meta":{"io.modelcontextprotocol/protocolVersion":1}}}"#,
                serde_json::json!(6),
            ),
            (
                r#"{"jsonrpc":"2.0","method":"x","id":7,"params":{},"params":{}}"#,
                serde_json::json!(7),
            ),
            (
                r#"{"jsonrpc":"2.0","method":"x","id":8,"params":{"name":"a","name":"b"}}"#,
                serde_json::json!(8),
            ),
        ] {
            assert_eq!(refusal(body.as_bytes()), (400, -32600, id), "{body}");
        }
        // Not JSON at all, wherever it goes wrong, even after a member of the wrong type.
        for body in [
            &br#"{"jsonrpc":"2.0","method":"x","id":4,"params":5,}"#[..],
            br#"{"jsonrpc":"2.0","method":"x","id":4} trailing"#,
            b"{\"jsonrpc\":\"2.0\",\"method\":\"x\",\"id\":4,\"params\":{\"a\":\"\xff\"}}",
            br#"{"jsonrpc":"2.0","method":"x","id":4,"params":{"a":"\q"}}"#,
        ] {
            assert_eq!(refusal(body).1, -32700, "{}", String::from_utf8_lossy(body));
        }
        // Null is no value for the optional members, and escapes are read.
        let peek = peek(br#"{"jsonrpc":"2.0","method":"x","id":1,"params":{"requestState":null,"_meta":{"io.modelcontextprotocol/protocolVersion":"2026\u002d07-28","io.modelcontextprotocol/clientCapabilities":null}}}"#).unwrap();
        assert_eq!(peek.request_state, None);
        assert_eq!(peek.meta_protocol_version.as_deref(), Some("2026-07-28"));
        assert!(!peek.meta_client_capabilities);
        let peek = super::peek(br#"{"jsonrpc":"2.0","method":"x","id":1,"params":null}"#).unwrap();
        assert_eq!(peek.method.as_deref(), Some("x"));
    }

    #[test]
    fn a_tools_call_needs_a_bounded_tool_name() {
        let call = |name: &str| {
            format!(
                r#"{{"jsonrpc":"2.0","id":9,"method":"tools/call","params":{{"name":{name}}}}}"#
            )
        };
        let long = format!("\"{}\"", "x".repeat(MAX_NAME_BYTES + 1));
        for name in [
            long.as_str(),
            "\"\"",
            "\"a b\"",
            "\"a\\nb\"",
            "\"é\"",
            "5",
            "null",
        ] {
            assert_eq!(
                refusal(call(name).as_bytes()),
                (400, -32602, serde_json::json!(9)),
                "{name}"
            );
        }
        let no_name = br#"{"jsonrpc":"2.0","id":9,"method":"tools/call"}"#;
        assert_eq!(refusal(no_name), (400, -32602, serde_json::json!(9)));
        let longest = format!("\"{}\"", "x".repeat(MAX_NAME_BYTES));
        for name in [longest.as_str(), "\"ns/tool.v2:x_y-z\"", "\"\\u0065cho\""] {
            assert!(
                peek(call(name).as_bytes()).unwrap().name.is_some(),
                "{name}"
            );
        }
    }

    /// A JSON-RPC id as MCP allows it.
    fn valid_id() -> impl Strategy<Value = serde_json::Value> {
        prop_oneof![
            any::<i64>().prop_map(serde_json::Value::from),
            any::<u64>().prop_map(serde_json::Value::from),
            any::<String>().prop_map(serde_json::Value::from),
        ]
    }

    /// A method or tool name within the bounds.
    fn valid_name() -> impl Strategy<Value = String> {
        proptest::string::string_regex("[!-~]{1,128}").unwrap()
    }

    proptest! {
        #[test]
        fn any_body_is_peeked_or_refused_with_a_json_rpc_error(body in proptest::collection::vec(any::<u8>(), 0..256)) {
            if let Err(error) = peek(&body) {
                let answer: serde_json::Value = serde_json::from_slice(&error.json_rpc_body()).unwrap();
                prop_assert_eq!(&answer["jsonrpc"], "2.0");
                prop_assert!(answer["error"]["code"].is_i64());
                prop_assert_eq!(error.status().as_u16(), 400);
            }
        }

        #[test]
        fn any_json_value_is_peeked_or_refused(value in json_value()) {
            let body = serde_json::to_vec(&value).unwrap();
            match peek(&body) {
                Ok(peek) => {
                    prop_assert_eq!(&value["jsonrpc"], "2.0");
                    prop_assert_eq!(peek.method.as_deref(), value["method"].as_str());
                }
                Err(error) => prop_assert_eq!(error.status().as_u16(), 400),
            }
        }

        #[test]
        fn valid_requests_are_read_faithfully(id in valid_id(), method in valid_name(), tool in valid_name(), state in any::<Option<String>>()) {
            let message = serde_json::json!({
                "jsonrpc": "2.0", "id": id, "method": method,
                "params": { "name": tool, "requestState": state, "arguments": { "x": [1, {}] } },
            });
            let body = serde_json::to_vec(&message).unwrap();
            let peek = peek(&body).unwrap();
            prop_assert_eq!(peek.id, Some(id));
            prop_assert_eq!(peek.method.as_deref(), Some(method.as_str()));
            prop_assert_eq!(peek.request_state.as_deref(), state.as_deref());
            if method == "tools/call" {
                prop_assert_eq!(peek.name.as_deref(), Some(tool.as_str()));
            }
            let call = serde_json::json!({
                "jsonrpc": "2.0", "id": 1, "method": "tools/call", "params": { "name": tool },
            });
            let body = serde_json::to_vec(&call).unwrap();
            let called = super::peek(&body).unwrap();
            prop_assert_eq!(called.name.as_deref(), Some(tool.as_str()));
        }

        #[test]
        fn invalid_ids_are_refused_with_invalid_request(id in prop_oneof![
            any::<f64>().prop_filter("not an integer", |f| f.fract() != 0.0 && f.is_finite()).prop_map(|f| f.to_string()),
            "[1-9][0-9]{20,400}",
            Just("true".to_owned()),
            Just("{}".to_owned()),
        ]) {
            let body = format!(r#"{{"jsonrpc":"2.0","method":"ping","id":{id}}}"#);
            prop_assert_eq!(refusal(body.as_bytes()), (400, -32600, serde_json::Value::Null));
        }
    }

    /// Any JSON value, shallow: objects sometimes with the members peek reads.
    fn json_value() -> impl Strategy<Value = serde_json::Value> {
        let strings = prop_oneof![
            Just("2.0".to_owned()),
            Just("tools/call".to_owned()),
            any::<String>()
        ];
        let names = prop_oneof![
            Just("jsonrpc".to_owned()),
            Just("id".to_owned()),
            Just("method".to_owned()),
            Just("params".to_owned()),
            Just("name".to_owned()),
            Just("_meta".to_owned()),
            Just("requestState".to_owned()),
            any::<String>(),
        ];
        crate::skim::tests::json_value_of(strings, names, 3, 6)
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
}
