//! What a check found: typed outcomes, never bare booleans.
//!
//! Durations serialize as fractional milliseconds under a `_ms` name (`"took_ms": 1.84`)
//! so the status API can show sub-millisecond loopback timings; limits are shown in
//! the fleet file's own notation in the one-line reasons (`within 5s`).

use std::fmt;
use std::path::PathBuf;
use std::time::Duration;

use fleet_spec::model::{format_duration, human_duration};
use serde::ser::SerializeStruct as _;
use serde::{Serialize, Serializer};

/// Which kind of check produced a report.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum CheckKind {
    /// The MCP probe: handshake, tools, smoke call, latency.
    Mcp,
    /// An HTTP GET and its status code.
    Http,
    /// A TCP connect.
    Tcp,
    /// A program run without a shell; exit code 0 passes.
    Command,
    /// A file that must exist.
    File,
}

impl fmt::Display for CheckKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Mcp => "mcp",
            Self::Http => "http",
            Self::Tcp => "tcp",
            Self::Command => "command",
            Self::File => "file",
        })
    }
}

/// The result of running one check once.
///
/// Serializes flat for the status API:
/// `{"kind":"mcp","took_ms":3.1,"passed":true,"detail":"…","mcp":{…}}` or
/// `{"kind":"mcp","took_ms":5001.2,"passed":false,"reason":"MCP handshake did not complete within 5s","failure":{"type":"handshake_timeout","after_ms":5000.0}}`.
#[derive(Debug, Clone, PartialEq)]
pub struct CheckReport {
    pub kind: CheckKind,
    /// Wall-clock time the whole check took, failure or not.
    pub took: Duration,
    pub outcome: Result<CheckPass, CheckFailure>,
}

impl CheckReport {
    /// Whether the check passed.
    pub fn passed(&self) -> bool {
        self.outcome.is_ok()
    }

    /// The failure, if the check failed.
    pub fn failure(&self) -> Option<&CheckFailure> {
        self.outcome.as_ref().err()
    }

    /// The MCP facts, if an MCP check passed.
    pub fn mcp_facts(&self) -> Option<&McpFacts> {
        self.outcome
            .as_ref()
            .ok()
            .and_then(|pass| pass.mcp.as_ref())
    }
}

impl fmt::Display for CheckReport {
    /// `mcp check passed in 3ms: …` / `mcp check failed after 5s: …`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.outcome {
            Ok(pass) => write!(
                f,
                "{} check passed in {}: {}",
                self.kind,
                human_duration(self.took),
                pass.detail
            ),
            Err(failure) => write!(
                f,
                "{} check failed after {}: {failure}",
                self.kind,
                human_duration(self.took)
            ),
        }
    }
}

impl Serialize for CheckReport {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut st = s.serialize_struct("CheckReport", 5)?;
        st.serialize_field("kind", &self.kind)?;
        st.serialize_field("took_ms", &millis(self.took))?;
        match &self.outcome {
            Ok(pass) => {
                st.serialize_field("passed", &true)?;
                st.serialize_field("detail", &pass.detail)?;
                if let Some(mcp) = &pass.mcp {
                    st.serialize_field("mcp", mcp)?;
                } else {
                    st.skip_field("mcp")?;
                }
            }
            Err(failure) => {
                st.serialize_field("passed", &false)?;
                st.serialize_field("reason", &failure.to_string())?;
                st.serialize_field("failure", failure)?;
            }
        }
        st.end()
    }
}

/// A passing check.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct CheckPass {
    /// Short human summary (`modern 2026-07-28, sample 0.1.0, 7 tools, call echo ok`).
    pub detail: String,
    /// Present for MCP checks.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub mcp: Option<McpFacts>,
}

/// The protocol era a probe actually spoke (see MCP-NOTES.md, "Two protocol eras").
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum DetectedEra {
    /// `initialize` handshake, sessions (revisions up to 2025-11-25).
    Legacy,
    /// Stateless `server/discover` (revision 2026-07-28).
    Modern,
}

impl fmt::Display for DetectedEra {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Legacy => "legacy",
            Self::Modern => "modern",
        })
    }
}

/// What a successful MCP probe learned about the server.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct McpFacts {
    pub era: DetectedEra,
    /// The negotiated (legacy) or selected (modern) protocol revision.
    pub protocol_version: String,
    /// `serverInfo.name`; empty when a modern server does not say.
    pub server_name: String,
    /// `serverInfo.version`, when given.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub server_version: Option<String>,
    /// Every tool name the server lists (all pages), in its order.
    pub tools: Vec<String>,
    /// Time to a usable session: `initialize` (legacy) or `server/discover` (modern),
    /// including a failed discover attempt under `era: auto`.
    #[serde(rename = "handshake_ms", serialize_with = "ser_millis")]
    pub handshake: Duration,
    /// Round trip of the smoke call, when one is configured.
    #[serde(rename = "call_ms", serialize_with = "ser_opt_millis")]
    pub call: Option<Duration>,
}

/// Why a check failed. `Display` gives a one-line reason naming the check and the limit.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, thiserror::Error)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum CheckFailure {
    /// No usable session within the handshake timeout (`health.mcp.handshake_timeout`).
    #[error("MCP handshake did not complete within {}", format_duration(*after))]
    HandshakeTimeout {
        #[serde(rename = "after_ms", serialize_with = "ser_millis")]
        after: Duration,
    },
    /// The handshake got an answer, and the answer was a failure (a JSON-RPC error, no
    /// common protocol version, garbage on stdout, the server exiting, …).
    #[error("MCP handshake failed: {message}")]
    Handshake { message: String },
    /// `tools/list` failed after a good handshake.
    #[error("tools/list failed: {message}")]
    ToolsList { message: String },
    /// Tools named in `expect_tools` (or the smoke call's tool) are not listed.
    #[error("tools missing: {} (server lists {found} {})", missing.join(", "), plural(*found, "tool", "tools"))]
    MissingTools { missing: Vec<String>, found: usize },
    /// The smoke call failed: a JSON-RPC error, or `isError` when no error was expected.
    #[error("smoke call {tool} failed: {message}")]
    CallError { tool: String, message: String },
    /// The smoke call answered, but not as configured (`expect_contains`, `expect_error`).
    #[error("smoke call {tool} returned an unexpected result: {reason}")]
    UnexpectedResult { tool: String, reason: String },
    /// Handshake + tools/list + smoke call took longer than `max_latency`. A step still
    /// running at the limit is abandoned, so `took` is then the limit.
    #[error("MCP probe took {}, over the max_latency of {}", human_duration(*took), format_duration(*limit))]
    TooSlow {
        #[serde(rename = "took_ms", serialize_with = "ser_millis")]
        took: Duration,
        #[serde(rename = "limit_ms", serialize_with = "ser_millis")]
        limit: Duration,
    },
    /// Nothing accepted the connection (refused, unreachable, bad URL or address).
    #[error("cannot connect to {target}: {message}")]
    Connect { target: String, message: String },
    /// An established session ended: the stdio server closed stdout (exited), or the
    /// HTTP connection was dropped mid-probe.
    #[error("MCP session ended: {message}")]
    Disconnected { message: String },
    /// The server broke the MCP framing rules after the handshake (for example, wrote
    /// non-JSON-RPC text to stdout, which would corrupt a real client's stream).
    #[error("MCP protocol violation: {message}")]
    Protocol { message: String },
    /// An HTTP check got a status outside its expectation.
    #[error("GET {url} returned HTTP {status}, expected {expected}")]
    HttpStatus {
        url: String,
        status: u16,
        /// `2xx` or the exact configured code.
        expected: String,
    },
    /// A command check exited non-zero or was killed by a signal (`code: None`).
    #[error("command {program} {}{}", exit_text(*code), tail_text(output_tail))]
    CommandFailed {
        program: String,
        code: Option<i32>,
        /// The last few lines of stdout+stderr, bounded.
        output_tail: String,
    },
    /// A command check's program could not be started (not found, not executable).
    #[error("command {program} could not be started: {message}")]
    CommandNotStarted { program: String, message: String },
    /// A file check's path does not exist.
    #[error("file {} does not exist", path.display())]
    FileMissing { path: PathBuf },
    /// A file check could not tell whether the path exists (permission denied, say).
    #[error("cannot check file {}: {message}", path.display())]
    FileUnreadable { path: PathBuf, message: String },
    /// A step other than the MCP handshake did not finish within the check's timeout.
    #[error("{during} did not finish within {}", format_duration(*after))]
    Timeout {
        /// What was running: `tools/list`, `tools/call echo`, `GET http://…`, `command ./x`.
        during: String,
        #[serde(rename = "after_ms", serialize_with = "ser_millis")]
        after: Duration,
    },
}

fn plural(n: usize, one: &'static str, many: &'static str) -> &'static str {
    if n == 1 { one } else { many }
}

fn exit_text(code: Option<i32>) -> String {
    match code {
        Some(code) => format!("exited with code {code}"),
        None => "was killed by a signal".to_owned(),
    }
}

fn tail_text(tail: &str) -> String {
    // The reason is one line: show the last non-empty output line.
    match tail.lines().rev().find(|line| !line.trim().is_empty()) {
        Some(line) => format!(": {}", line.trim()),
        None => String::new(),
    }
}

fn millis(d: Duration) -> f64 {
    // Microsecond resolution is plenty and keeps the JSON short.
    (d.as_secs_f64() * 1_000_000.0).round() / 1000.0
}

fn ser_millis<S: Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_f64(millis(*d))
}

fn ser_opt_millis<S: Serializer>(d: &Option<Duration>, s: S) -> Result<S::Ok, S::Error> {
    match d {
        Some(d) => s.serialize_f64(millis(*d)),
        None => s.serialize_none(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reasons_name_the_check_and_the_limit() {
        let cases = [
            (
                CheckFailure::HandshakeTimeout {
                    after: Duration::from_secs(5),
                },
                "MCP handshake did not complete within 5s",
            ),
            (
                CheckFailure::MissingTools {
                    missing: vec!["read_graph".into()],
                    found: 3,
                },
                "tools missing: read_graph (server lists 3 tools)",
            ),
            (
                CheckFailure::MissingTools {
                    missing: vec!["a".into(), "b".into()],
                    found: 1,
                },
                "tools missing: a, b (server lists 1 tool)",
            ),
            (
                CheckFailure::TooSlow {
                    took: Duration::from_millis(1234),
                    limit: Duration::from_secs(1),
                },
                "MCP probe took 1.2s, over the max_latency of 1s",
            ),
            (
                CheckFailure::HttpStatus {
                    url: "http://127.0.0.1:1/healthz".into(),
                    status: 503,
                    expected: "2xx".into(),
                },
                "GET http://127.0.0.1:1/healthz returned HTTP 503, expected 2xx",
            ),
            (
                CheckFailure::CommandFailed {
                    program: "./check".into(),
                    code: Some(2),
                    output_tail: "starting\nnot ready: db down\n\n".into(),
                },
                "command ./check exited with code 2: not ready: db down",
            ),
            (
                CheckFailure::CommandFailed {
                    program: "./check".into(),
                    code: None,
                    output_tail: String::new(),
                },
                "command ./check was killed by a signal",
            ),
            (
                CheckFailure::Timeout {
                    during: "tools/call echo".into(),
                    after: Duration::from_millis(1500),
                },
                "tools/call echo did not finish within 1s500ms",
            ),
        ];
        for (failure, reason) in cases {
            assert_eq!(failure.to_string(), reason);
        }
    }

    #[test]
    fn reports_serialize_flat_with_the_reason() {
        let report = CheckReport {
            kind: CheckKind::Mcp,
            took: Duration::from_micros(5_000_250),
            outcome: Err(CheckFailure::HandshakeTimeout {
                after: Duration::from_secs(5),
            }),
        };
        let json = serde_json::to_value(&report).unwrap();
        assert_eq!(
            json,
            serde_json::json!({
                "kind": "mcp",
                "took_ms": 5000.25,
                "passed": false,
                "reason": "MCP handshake did not complete within 5s",
                "failure": { "type": "handshake_timeout", "after_ms": 5000.0 },
            })
        );

        let report = CheckReport {
            kind: CheckKind::Mcp,
            took: Duration::from_millis(3),
            outcome: Ok(CheckPass {
                detail: "ok".into(),
                mcp: Some(McpFacts {
                    era: DetectedEra::Modern,
                    protocol_version: "2026-07-28".into(),
                    server_name: "s".into(),
                    server_version: None,
                    tools: vec!["echo".into()],
                    handshake: Duration::from_micros(800),
                    call: None,
                }),
            }),
        };
        let json = serde_json::to_value(&report).unwrap();
        assert_eq!(json["passed"], true);
        assert_eq!(json["mcp"]["era"], "modern");
        assert_eq!(json["mcp"]["handshake_ms"], 0.8);
        assert_eq!(json["mcp"]["call_ms"], serde_json::Value::Null);
    }
}
