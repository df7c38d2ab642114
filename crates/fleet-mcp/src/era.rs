//! The two protocol eras: which revisions a probe offers, and how to read a server's
//! answer to `server/discover` (MCP-NOTES.md, "Era detection").
//!
//! The rule: a `DiscoverResult` (or a recognised modern rejection) means modern; any
//! other answer — another JSON-RPC error, silence, a transport error — means "not
//! modern", and `era: auto` falls back to `initialize`. We never key on one error code:
//! legacy servers answer `server/discover` with -32601, -32600, -32602, an HTTP 400/404
//! or nothing at all.

use rmcp::model::{
    ClientCapabilities, ClientConfig, ErrorCode, ErrorData, Implementation, ProtocolVersion,
};

/// The revision offered in a legacy `initialize`. Not `ProtocolVersion::default()`:
/// rmcp's default is the *modern* revision, which has no `initialize` at all.
pub(crate) const LEGACY_OFFER: ProtocolVersion = ProtocolVersion::LATEST_WITH_INITIALIZE;

/// Modern revisions this build speaks, newest first (rmcp 3.9: only 2026-07-28).
pub(crate) fn modern_versions() -> Vec<ProtocolVersion> {
    let mut versions: Vec<_> = ProtocolVersion::KNOWN_VERSIONS
        .iter()
        .filter(|v| !v.has_initialize())
        .cloned()
        .collect();
    versions.reverse();
    versions
}

/// The revision offered in `server/discover`: our newest modern one.
pub(crate) fn modern_offer() -> ProtocolVersion {
    modern_versions()
        .into_iter()
        .next()
        .unwrap_or(ProtocolVersion::LATEST)
}

/// How the probe introduces itself (`clientInfo`).
pub(crate) fn client_info() -> Implementation {
    Implementation::new("mcpfleet-probe", env!("CARGO_PKG_VERSION"))
}

/// The client identity and capabilities sent in `initialize` or in modern `_meta`.
/// A probe declares no capabilities: it never samples, elicits or lists roots.
pub(crate) fn client_config(protocol_version: ProtocolVersion) -> ClientConfig {
    let mut config = ClientConfig::new(ClientCapabilities::default(), client_info());
    config.protocol_version = protocol_version;
    config
}

/// What to do after `server/discover` did not yield a usable modern session.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum AfterDiscover {
    /// The server is not (only) modern: try `initialize`. Carries why, for the report
    /// when the fallback fails too.
    FallBack(String),
    /// The server is modern and said no: falling back would hide the real problem.
    Fail(String),
}

/// JSON-RPC errors only a modern server sends in answer to `server/discover`.
pub(crate) fn is_modern_rejection(code: ErrorCode) -> bool {
    matches!(
        code,
        ErrorCode::HEADER_MISMATCH
            | ErrorCode::MISSING_REQUIRED_CLIENT_CAPABILITY
            | ErrorCode::UNSUPPORTED_PROTOCOL_VERSION
    )
}

/// Classifies a JSON-RPC error answer to `server/discover`.
pub(crate) fn after_discover_error(error: &ErrorData) -> AfterDiscover {
    let text = rpc_error_text(error);
    if error.code == ErrorCode::UNSUPPORTED_PROTOCOL_VERSION {
        let supported = supported_from_error(error);
        return after_no_common_version(&supported);
    }
    if is_modern_rejection(error.code) {
        AfterDiscover::Fail(format!("server/discover was rejected: {text}"))
    } else {
        AfterDiscover::FallBack(format!("server/discover answered {text}"))
    }
}

/// A modern server that shares no modern revision with us. If it lists a legacy
/// revision (a dual-era server), `initialize` can still work.
pub(crate) fn after_no_common_version(server_supported: &[ProtocolVersion]) -> AfterDiscover {
    if server_supported.iter().any(ProtocolVersion::has_initialize) {
        return AfterDiscover::FallBack(format!(
            "server/discover lists only {} of the modern revisions",
            versions_text(server_supported)
        ));
    }
    AfterDiscover::Fail(format!(
        "no common protocol version: the server supports {}, this probe speaks {}",
        versions_text(server_supported),
        versions_text(&modern_versions())
    ))
}

/// The first of our modern revisions that the server supports.
pub(crate) fn select_modern(server_supported: &[ProtocolVersion]) -> Option<ProtocolVersion> {
    modern_versions()
        .into_iter()
        .find(|v| server_supported.contains(v))
}

fn supported_from_error(error: &ErrorData) -> Vec<ProtocolVersion> {
    error
        .data
        .as_ref()
        .and_then(|data| data.get("supported"))
        .cloned()
        .and_then(|value| serde_json::from_value(value).ok())
        .unwrap_or_default()
}

pub(crate) fn versions_text(versions: &[ProtocolVersion]) -> String {
    if versions.is_empty() {
        return "no versions".to_owned();
    }
    versions
        .iter()
        .map(ProtocolVersion::as_str)
        .collect::<Vec<_>>()
        .join(", ")
}

/// How much of an error's `data` a one-line reason shows.
const ERROR_DATA_CHARS: usize = 200;

/// `JSON-RPC error -32601 (Method not found)`, plus `data` when there is some
/// (-32022 says which versions the server supports there).
pub(crate) fn rpc_error_text(error: &ErrorData) -> String {
    let mut text = format!("JSON-RPC error {} ({})", error.code.0, error.message);
    if let Some(data) = &error.data {
        let data = data.to_string();
        let mut short: String = data.chars().take(ERROR_DATA_CHARS).collect();
        if short.len() < data.len() {
            short.push('…');
        }
        text.push_str(&format!(" data: {short}"));
    }
    text
}

/// A hint for an `initialize` the server refused: -32022 there means a server that
/// speaks only the modern protocol.
pub(crate) fn initialize_refusal_hint(error: &ErrorData) -> &'static str {
    if error.code == ErrorCode::UNSUPPORTED_PROTOCOL_VERSION {
        " — the server may speak only the modern protocol: use era: auto or modern"
    } else {
        ""
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn error(code: ErrorCode, data: Option<serde_json::Value>) -> ErrorData {
        ErrorData::new(code, "nope", data)
    }

    #[test]
    fn we_offer_a_legacy_revision_that_has_initialize() {
        assert!(LEGACY_OFFER.has_initialize());
        let modern = modern_versions();
        assert!(!modern.is_empty());
        assert!(modern.iter().all(|v| !v.has_initialize()));
    }

    #[test]
    fn any_ordinary_error_means_fall_back() {
        for code in [
            ErrorCode::METHOD_NOT_FOUND,
            ErrorCode::INVALID_REQUEST,
            ErrorCode::INVALID_PARAMS,
            ErrorCode::INTERNAL_ERROR,
            ErrorCode(-32000),
        ] {
            assert!(
                matches!(
                    after_discover_error(&error(code, None)),
                    AfterDiscover::FallBack(_)
                ),
                "{code:?}"
            );
        }
    }

    #[test]
    fn modern_rejections_fail_without_fallback() {
        for code in [
            ErrorCode::HEADER_MISMATCH,
            ErrorCode::MISSING_REQUIRED_CLIENT_CAPABILITY,
        ] {
            assert!(matches!(
                after_discover_error(&error(code, None)),
                AfterDiscover::Fail(_)
            ));
        }
        let AfterDiscover::Fail(message) = after_discover_error(&error(
            ErrorCode::UNSUPPORTED_PROTOCOL_VERSION,
            Some(serde_json::json!({ "supported": ["2027-01-01"], "requested": "2026-07-28" })),
        )) else {
            panic!("expected Fail");
        };
        assert!(message.contains("supports 2027-01-01"), "{message}");
    }

    #[test]
    fn a_dual_era_server_without_our_modern_revision_gets_initialize() {
        assert!(matches!(
            after_no_common_version(&[ProtocolVersion::V_2025_06_18]),
            AfterDiscover::FallBack(_)
        ));
        assert_eq!(
            select_modern(&[ProtocolVersion::V_2025_11_25, ProtocolVersion::V_2026_07_28]),
            Some(ProtocolVersion::V_2026_07_28)
        );
        assert_eq!(select_modern(&[ProtocolVersion::V_2025_11_25]), None);
    }
}
