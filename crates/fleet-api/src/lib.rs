//! The admin API of the mcpfleet control plane: the types it speaks ([`types`]) and a typed
//! client over its unix socket ([`Client`]).
//!
//! Owns: the wire format of `status --output json`, events and check reports (stable and
//! documented in docs/api.md). Does not own: how the control plane computes them. Depends on
//! no other mcpfleet crate, so the CLI's client commands need no server code.
//!
//! Routes (HTTP/1.1 over `<state dir>/control.sock`):
//! - `GET /v1/status` → [`types::Status`]
//! - `GET /v1/events?follow=true` → newline-delimited [`types::Event`]s (history, then live)
//! - `GET /v1/servers/{name}/logs?lines=N&follow=true` → the log text
//! - `POST /v1/check` → [`types::CheckRun`]: every health check, once, now
//! - `POST /v1/shutdown` → stops every server in reverse dependency order, then the process
//! - `GET /metrics` → the Prometheus text format (`text/plain; version=0.0.4`)
//! - `GET /healthz` → `ok` while the control plane runs
//!
//! With `admin.listen` the read-only routes (`/metrics`, `/v1/status`, `/healthz`) are served
//! on that loopback TCP address too.

mod client;
pub mod types;

pub use client::{Client, ClientError, Lines};

/// File name of the admin socket inside the state directory.
pub const SOCKET: &str = "control.sock";
