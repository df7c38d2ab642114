//! The spans a deployment is traced with, beneath the `deployment` span the control plane
//! opens: `wave` → `server step` → `health check`. Their names and fields are set here
//! only. They are plain `tracing` spans: unless a subscriber wants them (the OTLP
//! exporter, a debug log) each costs the check of a disabled span.

use crate::EngineError;
use crate::instance_id::InstanceId;
use crate::journal::ServerAction;
use fleet_mcp::{CheckKind, CheckReport};
use parking_lot::Mutex;
use std::sync::Arc;
use tracing::Span;
use tracing::field::Empty;

/// One dependency wave's span. It opens when the first of its servers begins its step and
/// closes when the last is done, so a trace shows the waves as they happened: the servers
/// of a later wave wait for their dependencies outside it.
#[derive(Debug)]
pub(crate) struct WaveSpan {
    /// 1 for the first wave, as the plan numbers them for people.
    number: usize,
    /// The deployment's span.
    parent: Span,
    /// The open span, and how many of the wave's servers are not done yet.
    state: Mutex<(Option<Span>, usize)>,
}

impl WaveSpan {
    /// The span of wave `number` (from 1) of `members` servers, in the current span.
    pub(crate) fn new(number: usize, members: usize) -> Arc<Self> {
        Arc::new(WaveSpan {
            number,
            parent: Span::current(),
            state: Mutex::new((None, members)),
        })
    }

    /// A member's place in the wave: when every member has dropped its own, the wave's
    /// span closes.
    pub(crate) fn member(self: &Arc<Self>) -> WaveMember {
        WaveMember(self.clone())
    }
}

/// A server of a wave, until it is done.
#[derive(Debug)]
pub(crate) struct WaveMember(Arc<WaveSpan>);

impl WaveMember {
    /// The wave's span, opened now if no server of the wave has begun its step yet.
    pub(crate) fn span(&self) -> Span {
        let wave = &self.0;
        wave.state
            .lock()
            .0
            .get_or_insert_with(
                || tracing::info_span!(parent: &wave.parent, "wave", wave = wave.number),
            )
            .clone()
    }
}

impl Drop for WaveMember {
    fn drop(&mut self) {
        let mut state = self.0.state.lock();
        state.1 = state.1.saturating_sub(1);
        if state.1 == 0 {
            state.0 = None;
        }
    }
}

/// The span of one server's step (create, update, delete, undo) in `parent`.
pub(crate) fn server_step(
    parent: &Span,
    action: ServerAction,
    server: &str,
    revision: u64,
) -> Span {
    tracing::info_span!(
        parent: parent,
        "server step",
        server,
        revision,
        action = action.as_str(),
        outcome = Empty,
        otel.status_code = Empty,
        otel.status_message = Empty,
    )
}

/// Records how a server step ended on its span.
pub(crate) fn step_ended(span: &Span, result: &Result<(), EngineError>) {
    match result {
        Ok(()) => {
            span.record("outcome", "succeeded");
        }
        Err(why) => {
            span.record("outcome", "failed");
            span.record("otel.status_code", "ERROR");
            span.record("otel.status_message", why.to_string());
        }
    }
}

/// The span of one run of a readiness check of `instance`, in its server step's span.
pub(crate) fn health_check(parent: &Span, kind: CheckKind, instance: &InstanceId) -> Span {
    tracing::info_span!(
        parent: parent,
        "health check",
        server = instance.server.as_str(),
        revision = instance.revision,
        instance = %instance,
        check = %kind,
        outcome = Empty,
        otel.status_message = Empty,
    )
}

/// Records a check's outcome on its span: `passed` or `failed` (a failed readiness check
/// is retried until the handshake timeout, so it is not an error of the trace).
pub(crate) fn check_ended(span: &Span, report: &CheckReport, detail: impl FnOnce() -> String) {
    match &report.outcome {
        Ok(_) => {
            span.record("outcome", "passed");
        }
        Err(_) => {
            span.record("outcome", "failed");
            span.record("otel.status_message", detail());
        }
    }
}
