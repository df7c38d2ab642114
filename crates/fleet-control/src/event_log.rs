//! The fleet's record of what happened: every engine event and every tool call through the
//! gateway is appended to the state store, and events are served back from it — so they
//! outlive the control plane, and `events -f` joins the stored history to live events
//! without a gap or a duplicate.
//!
//! One task per kind writes. Events go in batches of what has queued up (no timer: an event
//! is in the store as soon as the previous write is done). Tool calls arrive at the rate of
//! the gateway's traffic, so their writer gathers them for up to [`AUDIT_LINGER`] and
//! writes them in one transaction: one commit (and fsync) per interval, not one per few
//! calls, which under load cost the gateway's process more CPU than relaying the calls.
//! Readers of live events get them from this log's own channel, each with its store id,
//! *after* it is stored.

use crate::runtime::FleetRuntime;
use crate::to_api;
use fleet_api::types::{Event, EventKind, EventRecord};
use fleet_engine::Engine;
use fleet_routes::audit::ToolCallRecord;
use fleet_store::{NewEvent, StateStore, StoredEvent};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::broadcast::error::{RecvError, TryRecvError};
use tokio::sync::{broadcast, mpsc, oneshot};

/// How many stored events one store read returns while a reader catches up.
const PAGE: usize = 500;

/// The most events written in one transaction.
const BATCH: usize = 256;

/// How long the audit writer gathers tool calls before it writes them: how late a record
/// may reach the store (a flush, as at shutdown, writes at once).
const AUDIT_LINGER: Duration = Duration::from_millis(100);

/// The most audit records written in one transaction; a full batch is written before its
/// linger ends.
const AUDIT_BATCH: usize = 4096;

/// Engine events, recorded in the store and served from it.
#[derive(Clone, Debug)]
pub(crate) struct EventLog {
    store: Arc<dyn StateStore>,
    /// Every event once stored, with its id, in id order.
    stored: broadcast::Sender<EventRecord>,
    /// Asks the writer to store everything published so far, then answers.
    flushes: mpsc::Sender<oneshot::Sender<()>>,
}

impl EventLog {
    /// Starts recording `engine`'s events, from its first (its in-memory history) on.
    pub(crate) fn start(engine: &Engine<FleetRuntime>, store: Arc<dyn StateStore>) -> Self {
        let (history, events) = engine.subscribe();
        let (stored, _) = broadcast::channel(4_096);
        let (flushes, flush_requests) = mpsc::channel(64);
        let writer = Writer {
            store: store.clone(),
            stored: stored.clone(),
        };
        tokio::spawn(writer.run(history, events, flush_requests));
        EventLog {
            store,
            stored,
            flushes,
        }
    }

    /// Returns once every event published before the call is in the store (and on the live
    /// channel), or the writer is gone.
    pub(crate) async fn flush(&self) {
        let (done, flushed) = oneshot::channel();
        if self.flushes.send(done).await.is_ok() {
            let _ = flushed.await;
        }
    }

    /// The recorded events with an id above `after`, then (with `follow`) every event as it
    /// is recorded, each once, in id order. The stream ends when `follow` is false and the
    /// history is read, or when the receiver is dropped.
    pub(crate) fn stream(&self, after: u64, follow: bool) -> mpsc::Receiver<EventRecord> {
        let (tx, rx) = mpsc::channel(256);
        let log = self.clone();
        tokio::spawn(async move {
            // Subscribed before reading the store: an event stored after the read is on the
            // channel, one stored before is in the read, one in between in both (skipped by
            // id).
            let mut live = log.stored.subscribe();
            log.flush().await;
            let Some(mut last) = log.send_stored(after, &tx).await else {
                return;
            };
            if !follow {
                return;
            }
            loop {
                let received = tokio::select! {
                    received = live.recv() => received,
                    () = tx.closed() => return,
                };
                match received {
                    Ok(record) if record.id <= last => {}
                    Ok(record) => {
                        last = record.id;
                        if tx.send(record).await.is_err() {
                            return;
                        }
                    }
                    // Too slow for the channel: what it dropped is in the store.
                    Err(RecvError::Lagged(_)) => match log.send_stored(last, &tx).await {
                        Some(caught_up) => last = caught_up,
                        None => return,
                    },
                    Err(RecvError::Closed) => return,
                }
            }
        });
        rx
    }

    /// Sends every stored event with an id above `after`; returns the last id sent (`after`
    /// if none), or `None` when the receiver is gone or the store failed.
    async fn send_stored(&self, after: u64, tx: &mpsc::Sender<EventRecord>) -> Option<u64> {
        let mut last = after;
        loop {
            let page = match self.store.events(last, PAGE).await {
                Ok(page) => page,
                Err(error) => {
                    tracing::error!("cannot read events from the state store: {error}");
                    return None;
                }
            };
            if page.is_empty() {
                return Some(last);
            }
            for stored in page {
                last = stored.id;
                if let Some(record) = record_of(stored) {
                    tx.send(record).await.ok()?;
                }
            }
        }
    }
}

/// The task that appends events to the store.
struct Writer {
    store: Arc<dyn StateStore>,
    stored: broadcast::Sender<EventRecord>,
}

impl Writer {
    async fn run(
        self,
        history: Vec<fleet_engine::report::Event>,
        mut events: broadcast::Receiver<fleet_engine::report::Event>,
        mut flush_requests: mpsc::Receiver<oneshot::Sender<()>>,
    ) {
        let mut batch: Vec<Event> = history.into_iter().map(to_api::event).collect();
        let mut flushed = Vec::new();
        loop {
            if batch.is_empty() {
                tokio::select! {
                    received = events.recv() => match received {
                        Ok(event) => batch.push(to_api::event(event)),
                        Err(RecvError::Lagged(missed)) => lost(missed),
                        Err(RecvError::Closed) => return,
                    },
                    Some(done) = flush_requests.recv() => flushed.push(done),
                }
            }
            // Everything queued by now, which for a flush is everything published before
            // it was asked for.
            loop {
                match events.try_recv() {
                    Ok(event) => batch.push(to_api::event(event)),
                    Err(TryRecvError::Lagged(missed)) => lost(missed),
                    Err(_) => break,
                }
                if batch.len() >= BATCH {
                    self.write(&mut batch).await;
                }
            }
            self.write(&mut batch).await;
            for done in flushed.drain(..) {
                let _ = done.send(());
            }
        }
    }

    async fn write(&self, batch: &mut Vec<Event>) {
        if batch.is_empty() {
            return;
        }
        let events: Vec<Event> = std::mem::take(batch);
        let new = events.iter().map(new_event).collect();
        match self.store.append_events(new).await {
            Ok(ids) => {
                for (id, event) in ids.into_iter().zip(events) {
                    let _ = self.stored.send(EventRecord { id, event });
                }
            }
            Err(error) => tracing::error!(
                "cannot record {} events in the state store: {error}",
                events.len()
            ),
        }
    }
}

fn lost(missed: u64) {
    tracing::error!("{missed} events were published faster than they could be recorded");
}

/// An engine event as the store records it: its kind by its snake_case name.
fn new_event(event: &Event) -> NewEvent {
    NewEvent {
        time: event.time.clone(),
        kind: event.kind.as_str().to_string(),
        server: event.server.clone(),
        revision: event.revision,
        deployment: event.deployment,
        instance: event.instance.clone(),
        message: event.message.clone(),
    }
}

/// A stored event as the API serves it; `None` (and a warning) for a kind this build does
/// not know (written by a newer mcpfleet, then imported).
pub(crate) fn record_of(stored: StoredEvent) -> Option<EventRecord> {
    let e = stored.event;
    let Some(kind) = EventKind::named(&e.kind) else {
        tracing::warn!("event {}: unknown kind `{}`, not shown", stored.id, e.kind);
        return None;
    };
    Some(EventRecord {
        id: stored.id,
        event: Event {
            time: e.time,
            kind,
            server: e.server,
            revision: e.revision,
            deployment: e.deployment,
            instance: e.instance,
            message: e.message,
        },
    })
}

/// Appends every tool call the gateway reports to the store's audit table, in the
/// background, in batches gathered for up to [`AUDIT_LINGER`]; the returned sink is the
/// gateway's (sending never waits), the writer flushes what it was sent. The store file is
/// owner-only (0600), and a record never holds a call's arguments or result.
pub(crate) fn audit_to_store(
    store: Arc<dyn StateStore>,
) -> (fleet_gateway::AuditSink, AuditWriter) {
    let (sink, mut calls) = mpsc::unbounded_channel::<ToolCallRecord>();
    let (flushes, mut flush_requests) = mpsc::unbounded_channel::<oneshot::Sender<()>>();
    tokio::spawn(async move {
        let mut batch = Vec::new();
        let mut flushed = Vec::new();
        // When the batch's first record came, plus the linger: when it is written.
        let mut due: Option<tokio::time::Instant> = None;
        let mut closed = false;
        while !closed {
            let linger = async move {
                match due {
                    Some(due) => tokio::time::sleep_until(due).await,
                    None => std::future::pending().await,
                }
            };
            let room = AUDIT_BATCH.saturating_sub(batch.len());
            tokio::select! {
                // Only while no batch is pending: a pending batch collects the rest when its
                // linger ends, so the gateway's sends wake this task once per batch, not
                // once per tool call.
                received = calls.recv_many(&mut batch, room), if room > 0 && due.is_none() => {
                    closed = received == 0;
                    due.get_or_insert_with(|| tokio::time::Instant::now() + AUDIT_LINGER);
                }
                () = linger => {
                    due = Some(tokio::time::Instant::now());
                    while batch.len() < AUDIT_BATCH {
                        match calls.try_recv() {
                            Ok(call) => batch.push(call),
                            Err(mpsc::error::TryRecvError::Empty) => break,
                            Err(mpsc::error::TryRecvError::Disconnected) => {
                                closed = true;
                                break;
                            }
                        }
                    }
                }
                Some(done) = flush_requests.recv() => {
                    // Everything sent before the request is in the channel by now.
                    while let Ok(call) = calls.try_recv() {
                        batch.push(call);
                    }
                    flushed.push(done);
                }
            }
            let write_now = closed
                || !flushed.is_empty()
                || batch.len() >= AUDIT_BATCH
                || due.is_some_and(|due| due <= tokio::time::Instant::now());
            if write_now {
                write_audit(store.as_ref(), &mut batch).await;
                due = None;
                for done in flushed.drain(..) {
                    let _ = done.send(());
                }
            }
        }
    });
    (sink, AuditWriter { flushes })
}

async fn write_audit(store: &dyn StateStore, batch: &mut Vec<ToolCallRecord>) {
    if batch.is_empty() {
        return;
    }
    if let Err(error) = store.append_audit(std::mem::take(batch)).await {
        tracing::error!("cannot record tool calls in the state store's audit: {error}");
    }
}

/// Asks the audit writer to write what it was sent.
#[derive(Debug, Clone)]
pub(crate) struct AuditWriter {
    flushes: mpsc::UnboundedSender<oneshot::Sender<()>>,
}

impl AuditWriter {
    /// Returns once every tool call reported before is in the store (or the writer is
    /// gone).
    pub(crate) async fn flush(&self) {
        let (done, written) = oneshot::channel();
        if self.flushes.send(done).is_ok() {
            let _ = written.await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::{Instant, SystemTime};

    fn call(tool: &str) -> ToolCallRecord {
        ToolCallRecord {
            time: SystemTime::now(),
            token: Some("ci".into()),
            server: "api".into(),
            revision: 1,
            tool: tool.into(),
            outcome: fleet_routes::audit::ToolOutcome::Ok,
            duration: Duration::from_micros(250),
        }
    }

    #[tokio::test]
    async fn audited_calls_reach_the_store_within_the_linger_and_at_once_on_a_flush() {
        let dir = std::env::temp_dir().join(format!(
            "mcpfleet-audit-writer-{}-{:?}",
            std::process::id(),
            Instant::now()
        ));
        std::fs::create_dir_all(&dir).unwrap();
        let store: Arc<dyn StateStore> =
            Arc::new(fleet_store::SqliteStore::open(&dir.join("state.db")).unwrap());
        let (sink, writer) = audit_to_store(Arc::clone(&store));

        // More than one batch's worth, sent faster than a write: none is lost, and a
        // flush returns once all of them are stored.
        let sent = AUDIT_BATCH + 100;
        for i in 0..sent {
            sink.send(call(&format!("tool-{i}"))).unwrap();
        }
        writer.flush().await;
        let stored = store.audit(0, 10_000).await.unwrap();
        assert_eq!(stored.len(), sent);
        assert_eq!(stored[sent - 1].record.tool, format!("tool-{}", sent - 1));

        // Without a flush, a lone call is stored once its linger has passed.
        let last = stored[sent - 1].id;
        sink.send(call("late")).unwrap();
        let late =
            fleet_testkit::wait_until("the call is stored", Duration::from_secs(5), async || {
                let late = store.audit(last, 10).await.unwrap();
                (!late.is_empty()).then_some(late)
            })
            .await;
        assert_eq!(late.len(), 1, "{late:?}");
        assert_eq!(late[0].record.tool, "late");
        drop(sink);
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn every_kind_is_stored_by_its_snake_case_name_and_read_back() {
        let kinds = [
            (EventKind::DeploymentStarted, "deployment_started"),
            (EventKind::ServerReady, "server_ready"),
            (EventKind::HealthCheckFailed, "health_check_failed"),
            (EventKind::Recovered, "recovered"),
        ];
        for (kind, name) in kinds {
            let event = Event {
                time: "2026-11-22T03:04:05.000Z".into(),
                kind,
                server: Some("api".into()),
                revision: Some(2),
                deployment: Some(3),
                instance: Some("api-r2-1".into()),
                message: "m".into(),
            };
            let new = new_event(&event);
            assert_eq!(new.kind, name);
            let back = record_of(StoredEvent { id: 7, event: new }).unwrap();
            assert_eq!(back, EventRecord { id: 7, event });
        }
        let unknown = NewEvent {
            kind: "from_the_future".into(),
            ..new_event(&Event {
                time: String::new(),
                kind: EventKind::ServerReady,
                server: None,
                revision: None,
                deployment: None,
                instance: None,
                message: String::new(),
            })
        };
        assert_eq!(
            record_of(StoredEvent {
                id: 1,
                event: unknown
            }),
            None
        );
    }
}
