//! The admin API of the mcpfleet control plane: the types it speaks ([`types`]) and a typed
//! client over its unix socket ([`Client`]).
//!
//! Owns: the wire format of `status --output json`, events and check reports (stable and
//! documented in docs/api.md). Does not own: how the control plane computes them. Depends on
//! no other mcpfleet crate, so the CLI's client commands need no server code.
//!
//! Routes (HTTP/1.1 over `<state dir>/control.sock`):
//! - `GET /v1/status` → [`types::Status`]
//! - `GET /v1/events?after=ID&follow=true` → newline-delimited [`types::EventRecord`]s: the
//!   history the state store recorded, then live; `?run=current` only this run's events
//! - `GET /v1/events/stream` → the same as server-sent events (`id:` + `data:`), resuming
//!   after `Last-Event-ID`
//! - `GET /v1/audit?after=ID&limit=N` → [`types::AuditEntry`]s: tool calls through the gateway
//! - `GET /v1/history` → [`types::HistoryEntry`]s: every deployment and its fleet revision
//! - `GET /v1/servers/{name}/revisions` → [`types::ServerRevisionEntry`]s
//! - `GET /v1/state/export` → the whole state store as one JSON document
//! - `GET /v1/servers/{name}/logs?lines=N&follow=true` → the log text
//! - `POST /v1/check` → [`types::CheckRun`]: every health check, once, now
//! - `POST /v1/shutdown` → stops every server in reverse dependency order, then the process
//! - `GET /metrics` → the Prometheus text format (`text/plain; version=0.0.4`)
//! - `GET /healthz` → `ok` while the control plane runs
//!
//! With `admin.listen` that loopback TCP address serves what reads (`/metrics`,
//! `/v1/status`, `/healthz`, `/v1/events/stream`, `/v1/history`, `/v1/audit`) and, with an
//! admin token (`Authorization: Bearer`), the rollout actions (`promote`, `abort`, `pause`,
//! `resume`, `/v1/rollback`); docs/api.md#the-tcp-listener.

mod client;
pub mod types;

pub use client::{Client, ClientError, Lines};

/// File name of the admin socket inside the state directory.
pub const SOCKET: &str = "control.sock";
