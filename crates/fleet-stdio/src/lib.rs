//! MCP over a process's stdin/stdout, shared by everyone who needs to talk to it: the
//! gateway attaches client sessions, the engine's health checks connect beside them.
//!
//! Owns:
//! - the [`StdioLink`]: one process's pipes carrying JSON-RPC lines, with sessions
//!   attached — one (`isolation: per-session`) or many (`isolation: shared`, ids and
//!   progress tokens rewritten, server→client requests delivered only to the session
//!   that owns them);
//! - per-session processes: the [`SessionProcesses`] a gateway asks for one process per
//!   client session, and the [`StdioLease`] that gives it back;
//! - the [`StdioInstances`] registry: a route table names stdio instances by id only
//!   (it is plain data, see `fleet-routes`); the engine registers each instance's link or
//!   session pool here, and the gateway looks them up when a table names them.
//!
//! Does not own: starting processes (the runtime, through the engine), HTTP sessions
//! (the gateway).

pub mod hub;
pub mod jsonrpc;
pub mod link;
mod pool;
pub mod protocol;
mod registry;

pub use link::StdioLink;
pub use pool::{AcquireError, SessionProcesses, StdioLease};
pub use registry::{StdioEndpoint, StdioInstances};
