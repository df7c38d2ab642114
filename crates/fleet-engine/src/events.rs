//! The event bus: every event the engine emits goes to the log (`tracing`), a bounded
//! history for late subscribers and `GET /v1/events`, and live subscribers — in that order,
//! without gaps between history and live.

use std::collections::VecDeque;

use parking_lot::Mutex;
use tokio::sync::broadcast;

use crate::instance_id::InstanceId;
use crate::report::{Event, EventKind};

/// Events kept for `GET /v1/events` and late subscribers.
const HISTORY: usize = 2_000;

/// Where events go.
#[derive(Debug)]
pub(crate) struct EventBus {
    live: broadcast::Sender<Event>,
    history: Mutex<VecDeque<Event>>,
    /// The store's id of the deployment running, recorded in its events.
    deployment: Mutex<Option<u64>>,
}

impl Default for EventBus {
    fn default() -> Self {
        Self {
            live: broadcast::channel(4_096).0,
            history: Mutex::default(),
            deployment: Mutex::default(),
        }
    }
}

impl EventBus {
    /// The history and a receiver of everything that follows it.
    pub(crate) fn subscribe(&self) -> (Vec<Event>, broadcast::Receiver<Event>) {
        let history = self.history.lock();
        (history.iter().cloned().collect(), self.live.subscribe())
    }

    /// The deployment running (`None` between deployments).
    pub(crate) fn deployment(&self) -> Option<u64> {
        *self.deployment.lock()
    }

    /// Sets the deployment the following events belong to.
    pub(crate) fn set_deployment(&self, deployment: Option<u64>) {
        *self.deployment.lock() = deployment;
    }

    pub(crate) fn emit(
        &self,
        kind: EventKind,
        server: Option<&str>,
        instance: Option<&InstanceId>,
        message: impl Into<String>,
    ) {
        let revision = instance.map(|id| id.revision);
        let instance = instance.map(InstanceId::to_string);
        self.publish(kind, server, revision, instance, message.into());
    }

    /// An event about one revision of a server.
    pub(crate) fn emit_revision(
        &self,
        kind: EventKind,
        server: &str,
        revision: u64,
        message: impl Into<String>,
    ) {
        self.publish(kind, Some(server), Some(revision), None, message.into());
    }

    fn publish(
        &self,
        kind: EventKind,
        server: Option<&str>,
        revision: Option<u64>,
        instance: Option<String>,
        message: String,
    ) {
        let event = Event {
            time: crate::state::now(),
            kind,
            server: server.map(str::to_string),
            revision,
            deployment: *self.deployment.lock(),
            instance,
            message,
        };
        // Absent fields are left out: a log collector sees `server` only on a server's lines.
        tracing::info!(
            kind = ?event.kind,
            server = event.server.as_deref(),
            revision = event.revision,
            deployment = event.deployment,
            instance = event.instance.as_deref(),
            "{}",
            event.message
        );
        let mut history = self.history.lock();
        if history.len() == HISTORY {
            history.pop_front();
        }
        history.push_back(event.clone());
        // Sent while holding the history lock so a subscriber sees history + live without gaps.
        let _ = self.live.send(event);
    }
}
