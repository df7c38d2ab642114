//! Processes for `isolation: per-session` stdio servers: one per client session, lent
//! to the gateway through [`SessionProcesses`].
//!
//! A pool keeps `warm` processes started ahead of demand (a Node server takes a few
//! hundred milliseconds to boot; a session should not wait for that), never runs more
//! than `max_sessions` at once (leased plus warm), and stops a process as soon as its
//! session gives it back. Pool processes run under the runtime like any instance —
//! pidfiles, logs, reaping after a crash of the control plane — but are never
//! restarted: a session's process that dies ends that session, and the client starts
//! a new one. They are never health-checked either; the server's own instances
//! (`replicas`) are, and a probed process is never handed to a client.

use parking_lot::Mutex;
use std::collections::{BTreeSet, VecDeque};
use std::sync::{Arc, Weak};
use std::time::Duration;

use fleet_runtime::{InstanceId, InstanceSpec, Lifecycle, Reach, Runtime, StdioAttachment};
use fleet_spec::model::RestartPolicyKind;
use fleet_stdio::{AcquireError, SessionProcesses, StdioLease};
use futures::future::BoxFuture;

use crate::{EngineError, Shared};

pub(crate) struct SessionPool<R> {
    shared: Weak<Shared<R>>,
    /// Every process starts from this, under an id of its own.
    spec: InstanceSpec,
    warm: u32,
    max: u32,
    idle_timeout: Duration,
    state: Mutex<PoolState>,
    /// Woken whenever a warm start ends (ready or failed) or a given-back process is gone.
    warmed: tokio::sync::Notify,
    me: Weak<Self>,
}

#[derive(Default)]
struct PoolState {
    /// Started, not lent yet.
    ready: VecDeque<Started>,
    /// Being started for the warm pool.
    starting: u32,
    /// Every process of the pool that runs or is being started (leased, ready,
    /// starting, stopping): what `max` bounds.
    live: u32,
    /// Given back by their sessions and not gone yet: their slots free once they are.
    stopping: u32,
    /// Ids of every process that may run, for stopping them all.
    ids: BTreeSet<String>,
    next: u64,
    closed: bool,
}

struct Started {
    id: InstanceId,
    attachment: StdioAttachment,
}

/// What a session's acquire does next.
enum Next {
    Lend(Started),
    Start(u64),
    Wait,
}

impl<R: Runtime + 'static> std::fmt::Debug for SessionPool<R> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SessionPool")
            .field("server", &self.spec.server)
            .field("warm", &self.warm)
            .field("max", &self.max)
            .finish_non_exhaustive()
    }
}

impl<R: Runtime + 'static> SessionPool<R> {
    /// A pool for the server `spec` runs; empty until [`refill`](Self::refill).
    pub(crate) fn new(
        shared: &Arc<Shared<R>>,
        mut spec: InstanceSpec,
        warm: u32,
        max: u32,
        idle_timeout: Duration,
    ) -> Arc<Self> {
        spec.restart.policy = RestartPolicyKind::Never;
        Arc::new_cyclic(|me| SessionPool {
            shared: Arc::downgrade(shared),
            spec,
            warm,
            max,
            idle_timeout,
            state: Mutex::new(PoolState::default()),
            warmed: tokio::sync::Notify::new(),
            me: me.clone(),
        })
    }

    /// Starts processes until `warm` are ready (or being started), within `max`.
    pub(crate) fn refill(&self) {
        let mut state = self.state.lock();
        while !state.closed
            && (state.ready.len() as u32) + state.starting < self.warm
            && state.live < self.max
        {
            state.live += 1;
            state.starting += 1;
            let number = state.next;
            state.next += 1;
            let me = self.me.clone();
            tokio::spawn(async move {
                let Some(pool) = me.upgrade() else { return };
                let started = pool.start_one(number).await;
                let unwanted = {
                    let mut state = pool.state.lock();
                    state.starting -= 1;
                    match started {
                        Ok(started) if !state.closed => {
                            state.ready.push_back(started);
                            None
                        }
                        Ok(started) => {
                            state.live -= 1;
                            Some(started.id)
                        }
                        Err(why) => {
                            state.live -= 1;
                            tracing::warn!(server = pool.spec.server, %why, "cannot warm a process");
                            None
                        }
                    }
                };
                if let Some(id) = unwanted {
                    pool.stop(id);
                }
                pool.warmed.notify_waiters();
            });
        }
    }

    /// Starts process `number` and waits for its stdio attachment.
    async fn start_one(&self, number: u64) -> Result<Started, EngineError> {
        let shared = self.shared.upgrade().ok_or(EngineError::EngineGone)?;
        let mut spec = self.spec.clone();
        spec.id = InstanceId::from(&crate::InstanceId::session(
            &self.spec.server,
            self.spec.revision,
            number,
        ));
        let id = spec.id.clone();
        self.state.lock().ids.insert(id.0.clone());
        let mut instance = match shared.runtime.start(spec).await {
            Ok(instance) => instance,
            Err(error) => {
                self.state.lock().ids.remove(&id.0);
                return Err(EngineError::Spawn(error.to_string()));
            }
        };
        let attachment = match instance.events.recv().await {
            Some(Lifecycle::Running {
                reach: Reach::Stdio(attachment),
                ..
            }) => attachment,
            other => {
                drop(shared);
                self.stop(id);
                return Err(EngineError::DidNotStart(format!("{other:?}")));
            }
        };
        // Closed while it started: `close` took its id before there was a process to stop.
        if self.state.lock().closed {
            drop(shared);
            self.stop(id);
            return Err(EngineError::ServerStopping);
        }
        // Drain its events; a warm process that dies leaves the pool.
        let me = self.me.clone();
        let watched = id.clone();
        tokio::spawn(async move {
            while let Some(event) = instance.events.recv().await {
                if matches!(event, Lifecycle::Exited { .. })
                    && let Some(pool) = me.upgrade()
                {
                    let was_ready = {
                        let mut state = pool.state.lock();
                        let before = state.ready.len();
                        state.ready.retain(|s| s.id != watched);
                        let removed = state.ready.len() < before;
                        if removed {
                            state.live -= 1;
                        }
                        removed
                    };
                    // Not refilled from here: a server that dies right after starting
                    // would be restarted in a tight loop. The next acquire or release
                    // refills the pool.
                    if was_ready {
                        pool.stop(watched.clone());
                    }
                }
            }
        });
        Ok(Started { id, attachment })
    }

    /// Stops a process in the background.
    fn stop(&self, id: InstanceId) {
        self.state.lock().ids.remove(&id.0);
        if let Some(shared) = self.shared.upgrade() {
            tokio::spawn(async move {
                let _ = shared.runtime.stop(&id).await;
            });
        }
    }

    /// Stops the process of a session that ended and deletes its logs (it is never looked
    /// at again, and a stream of short sessions must not fill the disk); then frees its
    /// slot — counted in `stopping` until the process is gone, so the pool never runs more
    /// than `max` — and refills the warm pool.
    fn give_back(&self, id: InstanceId) {
        self.state.lock().ids.remove(&id.0);
        let (Some(shared), Some(pool)) = (self.shared.upgrade(), self.me.upgrade()) else {
            // The engine is gone: nothing will stop the process, and its slot is free.
            let mut state = self.state.lock();
            state.stopping -= 1;
            state.live -= 1;
            return;
        };
        tokio::spawn(async move {
            let _ = shared.runtime.stop(&id).await;
            shared.runtime.discard_logs(&id).await;
            {
                let mut state = pool.state.lock();
                state.stopping -= 1;
                state.live -= 1;
            }
            pool.refill();
            // An acquire at the cap waits for this slot.
            pool.warmed.notify_waiters();
        });
    }

    /// No more sessions: stops every process, lent or not, and returns once they are
    /// gone.
    pub(crate) async fn close(&self) {
        let ids: Vec<String> = {
            let mut state = self.state.lock();
            state.closed = true;
            state.ready.clear();
            std::mem::take(&mut state.ids).into_iter().collect()
        };
        let Some(shared) = self.shared.upgrade() else {
            return;
        };
        let stops = ids
            .iter()
            .map(|id| async { shared.runtime.stop(&InstanceId(id.clone())).await });
        futures::future::join_all(stops).await;
    }

    fn lease(&self, started: Started) -> StdioLease {
        let Started { id, attachment } = started;
        let release = Release {
            pool: self.me.clone(),
            id: Some(id.clone()),
        };
        StdioLease::new(id.0, attachment.stdin, attachment.stdout, release)
    }
}

/// Gives a process back when its session ends: it is stopped, and once it is gone its
/// slot is free and the warm pool refilled (never more than `max` processes at once).
struct Release<R: Runtime + 'static> {
    pool: Weak<SessionPool<R>>,
    id: Option<InstanceId>,
}

impl<R: Runtime + 'static> Drop for Release<R> {
    fn drop(&mut self) {
        if let (Some(pool), Some(id)) = (self.pool.upgrade(), self.id.take()) {
            let closed = {
                let mut state = pool.state.lock();
                if state.closed {
                    state.live -= 1;
                } else {
                    state.stopping += 1;
                }
                state.closed
            };
            // A closed pool stopped all its processes already; its ids may be reused.
            if !closed {
                pool.give_back(id);
            }
        }
    }
}

impl<R: Runtime + 'static> SessionProcesses for SessionPool<R> {
    fn acquire(&self) -> BoxFuture<'_, Result<StdioLease, AcquireError>> {
        Box::pin(async move {
            let number = loop {
                let warmed = self.warmed.notified();
                let next = {
                    let mut state = self.state.lock();
                    if state.closed {
                        return Err(AcquireError::Failed("the server is stopping".into()));
                    }
                    if let Some(started) = state.ready.pop_front() {
                        Next::Lend(started)
                    } else if state.live < self.max {
                        state.live += 1;
                        state.next += 1;
                        Next::Start(state.next - 1)
                    } else if state.starting > 0 || state.stopping > 0 {
                        // At the cap, but a warm process is on its way, or a slot frees
                        // once a given-back process is gone.
                        Next::Wait
                    } else {
                        return Err(AcquireError::AtCapacity { max: self.max });
                    }
                };
                match next {
                    Next::Lend(started) => {
                        self.refill();
                        return Ok(self.lease(started));
                    }
                    Next::Start(number) => break number,
                    Next::Wait => warmed.await,
                }
            };
            // In a task of its own: a client that gives up while the process starts
            // must not strand it (the finished lease is then dropped: stopped, slot freed).
            let pool = self
                .me
                .upgrade()
                .ok_or(AcquireError::Failed("the engine is gone".into()))?;
            let started = tokio::spawn(async move {
                match pool.start_one(number).await {
                    Ok(started) => {
                        pool.refill();
                        Ok(pool.lease(started))
                    }
                    Err(why) => {
                        pool.state.lock().live -= 1;
                        Err(AcquireError::Failed(why.to_string()))
                    }
                }
            });
            started
                .await
                .unwrap_or_else(|error| Err(AcquireError::Failed(error.to_string())))
        })
    }

    fn idle_timeout(&self) -> Duration {
        self.idle_timeout
    }
}
