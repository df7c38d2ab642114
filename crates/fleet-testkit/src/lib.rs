//! Test support for mcpfleet: the `mcp-sample-server` binary (a configurable,
//! fault-injecting MCP server) and the small helpers every integration test
//! needs (locating that binary, free ports, scratch directories, waiting on a
//! condition with a deadline, TLS fixtures) — and [`fake_runtime`], the fake of
//! fleet-runtime's `Runtime` the engine's unit tests run on, and [`fake_traffic`], the
//! traffic counters their canaries are judged on, and [`podman`], what the container tests
//! share (the API service, sample-server images, cleanup by label), and [`kube`], what the
//! Kubernetes manifest tests share (strict schema validation, the restricted Pod Security
//! Standard), [`postgres`], a private PostgreSQL cluster with a fresh database per test for
//! the state store, [`webdriver`], a headless Chromium the browser tests drive, and [`otlp`], an
//! OpenTelemetry collector the trace tests export to.
//!
//! It deliberately holds no production logic; nothing outside tests and
//! benchmarks may depend on it.

pub mod fake_runtime;
pub mod fake_traffic;
mod harness;
pub mod kube;
pub mod otlp;
pub mod podman;
pub mod postgres;
pub mod sample_server;
mod tls;
pub mod webdriver;

pub use harness::{
    HttpSampleServer, Satisfied, TempDir, free_port, initialize_over, sample_server_binary,
    scratch_dir, stdio_process, stdio_sample_server, wait_until, wait_until_blocking,
};
pub use tls::{ServerIdentity, TlsFront, trusting_a_test_ca};
