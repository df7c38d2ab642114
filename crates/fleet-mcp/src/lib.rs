//! MCP protocol knowledge for mcpfleet: the MCP probe and the health-check runners.
//!
//! Owns:
//! - the two protocol eras (`initialize` vs `server/discover`) and era detection
//!   (MCP-NOTES.md, "Era detection");
//! - the probe: [`probe_http`] for Streamable HTTP servers (a fresh session per probe)
//!   and [`StdioSession`] for stdio servers (a long-lived session on the instance's own
//!   pipes) — handshake, every tool listed, expected tools, smoke call, latency;
//! - the other checks ([`run_check`]: http, tcp, command, file);
//! - [`HealthTracker`], which turns a run of [`CheckReport`]s into a [`Verdict`].
//!
//! Does not own: *when* checks run, readiness deadlines, restarts or events — that is
//! the engine; processes and their pipes — that is the runtime (a [`StdioSession`]
//! borrows an instance's stdin/stdout, it never spawns or kills a server).
//!
//! Every check returns a typed [`CheckReport`]; nothing here panics or returns a bare
//! boolean, and every wait is bounded by the check's own timeout.

mod checks;
mod era;
mod health;
mod probe;
mod report;

pub use checks::{CheckSpec, run_check};
pub use health::{HealthTracker, Verdict};
pub use probe::http::probe_http;
pub use probe::stdio::StdioSession;
pub use report::{CheckFailure, CheckKind, CheckPass, CheckReport, DetectedEra, McpFacts};
