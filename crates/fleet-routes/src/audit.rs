//! The gateway's audit of tool calls, as plain data: one [`ToolCallRecord`] per
//! `tools/call` — who (the token's name), what (server, revision, tool), how it ended
//! ([`ToolOutcome`]) and how long it took, never the arguments or the result. The gateway
//! produces it, the state store keeps it, the admin API serves it; how each writes it down
//! (SQLite columns, export JSON, the API's wire type) is theirs, but the outcome's names
//! are here, once.

use std::fmt;
use std::str::FromStr;
use std::time::{Duration, SystemTime};

use serde::{Deserialize, Serialize};

/// How a tool call ended. Its name ([`ToolOutcome::as_str`]) is the Prometheus label
/// value, the stored text and the JSON string.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(into = "&'static str", try_from = "String")]
pub enum ToolOutcome {
    /// A result without `isError`.
    Ok,
    /// A result with `isError: true`: the tool ran and reported a failure.
    ToolError,
    /// A JSON-RPC error response.
    JsonRpcError,
    /// No response: the upstream failed, timed out, or the client went away first.
    TransportError,
}

impl ToolOutcome {
    /// Every outcome, in label order.
    pub const ALL: [Self; 4] = [
        Self::Ok,
        Self::ToolError,
        Self::JsonRpcError,
        Self::TransportError,
    ];

    /// The outcome's name: `ok`, `tool_error`, `jsonrpc_error` or `transport_error`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Ok => "ok",
            Self::ToolError => "tool_error",
            Self::JsonRpcError => "jsonrpc_error",
            Self::TransportError => "transport_error",
        }
    }
}

impl fmt::Display for ToolOutcome {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // `pad`, not `write_str`: tables (`mcpfleet audit`) align it by width.
        f.pad(self.as_str())
    }
}

impl From<ToolOutcome> for &'static str {
    fn from(outcome: ToolOutcome) -> Self {
        outcome.as_str()
    }
}

/// A tool-call outcome by a name this build does not know: written by a newer mcpfleet.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "unknown tool-call outcome `{0}` (this mcpfleet knows ok, tool_error, jsonrpc_error and \
     transport_error); it was written by a newer mcpfleet: upgrade to read it"
)]
pub struct UnknownOutcome(pub String);

impl FromStr for ToolOutcome {
    type Err = UnknownOutcome;

    fn from_str(name: &str) -> Result<Self, UnknownOutcome> {
        Self::ALL
            .into_iter()
            .find(|outcome| outcome.as_str() == name)
            .ok_or_else(|| UnknownOutcome(name.to_owned()))
    }
}

impl TryFrom<String> for ToolOutcome {
    type Error = UnknownOutcome;

    fn try_from(name: String) -> Result<Self, UnknownOutcome> {
        name.parse()
    }
}

/// One audited tool call.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ToolCallRecord {
    /// When the call ended.
    pub time: SystemTime,
    /// The bearer token's name (never the token); `None` when the gateway has no tokens.
    pub token: Option<String>,
    /// The server called.
    pub server: String,
    /// The server revision that answered.
    pub revision: u64,
    /// The tool called.
    pub tool: String,
    /// How it ended.
    pub outcome: ToolOutcome,
    /// How long it took.
    pub duration: Duration,
}

impl ToolCallRecord {
    /// How long the call took in milliseconds, as the store and the API write it down.
    pub fn duration_ms(&self) -> f64 {
        self.duration.as_secs_f64() * 1000.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_outcome_is_read_back_from_its_name_and_an_unknown_name_is_an_error() {
        for outcome in ToolOutcome::ALL {
            assert_eq!(outcome.as_str().parse(), Ok(outcome));
            assert_eq!(
                format!("{outcome:<16}|"),
                format!("{:<16}|", outcome.as_str())
            );
            let json = serde_json::to_string(&outcome).unwrap();
            assert_eq!(json, format!("\"{outcome}\""));
            assert_eq!(serde_json::from_str::<ToolOutcome>(&json).unwrap(), outcome);
        }
        let err = "from_the_future".parse::<ToolOutcome>().unwrap_err();
        assert!(err.to_string().contains("`from_the_future`"), "{err}");
        let err = serde_json::from_str::<ToolOutcome>("\"from_the_future\"").unwrap_err();
        assert!(err.to_string().contains("newer mcpfleet"), "{err}");
    }
}
