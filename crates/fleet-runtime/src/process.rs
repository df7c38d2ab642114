//! The process runtime: instances as supervised local processes.
//!
//! - **No shell.** The program is resolved to an absolute path (see [`InstanceSpec::program`])
//!   and executed with its argv array.
//! - **A small environment**: [`INHERITED_ENV`] plus the spec's `env`.
//! - **A process group per instance.** Stopping signals the whole group, so helpers an MCP
//!   server spawned (`npx` → `node`) go too. Stop = (stdio instances: the caller has closed
//!   stdin, see [`StdioAttachment`](crate::StdioAttachment); wait half the grace period for an exit on
//!   EOF) → SIGTERM to the group (wait the grace period) → SIGKILL. Whenever
//!   the leader exits, by itself or not, what is left of its group gets the same
//!   SIGTERM → SIGKILL treatment before the next start. Signals go to a group only while
//!   its leader is our child and not yet reaped (exit is detected with `waitid(WNOWAIT)`),
//!   so the group id cannot belong to anyone else.
//! - **Logs**: one size-capped, rotated file per instance; see [`LogRotation`] for the
//!   format and [`follow_log`] for `logs -f`.
//! - **Restart policy**: `always` restarts after any exit, `on-failure` after a non-zero
//!   exit or a death by signal, `never` never; an explicit [`restart`](Runtime::restart)
//!   restarts whatever the policy. Every restart waits: for attempt `n` (consecutive failed
//!   starts, from one) `initial × multiplier^(n-1)` capped at `max`, scaled by a uniform
//!   random factor in `[1 - jitter, 1 + jitter]` (from `getrandom`) and capped at `max`
//!   again, never under 100 ms. A run of at least `stable_after` (and at least 1 s) resets
//!   the count. A start that ends before that counts as failed — even a clean exit under
//!   `always`, so nothing can restart in a tight loop — and `give_up_after` failed starts
//!   in a row make the instance [`CrashLooping`](crate::Lifecycle::CrashLooping).
//! - **Pidfiles** with the process start time: [`discover`](Runtime::discover) reads them
//!   to find what a killed control plane left running, and stop it.
//!
//! Dropping the last [`ProcessRuntime`] handle stops its instances gracefully in the
//! background (if the tokio runtime lives on); stop them explicitly to wait for it.

pub(crate) mod backoff;
pub(crate) mod logs;
mod pidfile;
mod procfs;
mod spawn;
mod supervisor;

pub use logs::{LogRotation, follow_log, log_path, rotated_log_path};
pub use pidfile::{Pidfile, pidfile_path};
pub use spawn::INHERITED_ENV;

use crate::Runtime;
use crate::error::{RuntimeError, StartError};
use crate::instance::{
    Discovered, Instance, InstanceHandle, InstanceId, InstanceSpec, InstanceState, InstanceStatus,
    Reaped,
};
use futures::StreamExt as _;
use futures::stream::BoxStream;
use logs::{RotatingLog, spawn_log_task};
use parking_lot::Mutex;
use spawn::SpawnContext;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use supervisor::{Control, Supervisor};
use tokio::sync::{mpsc, oneshot, watch};

/// Runs instances as local processes. Cheap to clone; clones share the instances.
#[derive(Debug, Clone)]
pub struct ProcessRuntime {
    shared: Arc<Shared>,
}

#[derive(Debug)]
struct Shared {
    state_dir: PathBuf,
    rotation: LogRotation,
    instances: Mutex<BTreeMap<InstanceId, Entry>>,
    generations: AtomicU64,
}

/// The runtime's handle on one supervised instance.
#[derive(Debug)]
struct Entry {
    /// Tells this entry apart from an earlier or later instance with the same id.
    generation: u64,
    control: mpsc::UnboundedSender<Control>,
    /// `true` once the supervisor has finished (the instance is stopped).
    done: watch::Receiver<bool>,
    status: Arc<Mutex<InstanceStatus>>,
}

impl Shared {
    fn forget(&self, id: &InstanceId, generation: u64) {
        let mut instances = self.instances.lock();
        if instances
            .get(id)
            .is_some_and(|e| e.generation == generation)
        {
            instances.remove(id);
        }
    }
}

/// Removes a reserved entry if `start` fails or is cancelled before the supervisor runs.
struct Reservation<'a> {
    shared: &'a Shared,
    id: InstanceId,
    generation: u64,
    armed: bool,
}

impl Drop for Reservation<'_> {
    fn drop(&mut self) {
        if self.armed {
            self.shared.forget(&self.id, self.generation);
        }
    }
}

impl ProcessRuntime {
    /// A runtime keeping logs in `state_dir/logs` and pidfiles in `state_dir/run` (created
    /// when first needed), with the default [`LogRotation`].
    pub fn new(state_dir: impl Into<PathBuf>) -> Self {
        Self::with_log_rotation(state_dir, LogRotation::default())
    }

    /// Like [`new`](Self::new), with another log size cap and retention.
    pub fn with_log_rotation(state_dir: impl Into<PathBuf>, rotation: LogRotation) -> Self {
        ProcessRuntime {
            shared: Arc::new(Shared {
                state_dir: state_dir.into(),
                rotation,
                instances: Mutex::new(BTreeMap::new()),
                generations: AtomicU64::new(0),
            }),
        }
    }

    /// The state directory.
    pub fn state_dir(&self) -> &Path {
        &self.shared.state_dir
    }
}

impl Runtime for ProcessRuntime {
    async fn start(&self, spec: InstanceSpec) -> Result<Instance, StartError> {
        if let Some(problem) = spec.id.file_name_problem() {
            return Err(StartError::InvalidId {
                id: spec.id,
                problem,
            });
        }
        let shared = &self.shared;
        let generation = shared.generations.fetch_add(1, Ordering::Relaxed);
        let (control_tx, control_rx) = mpsc::unbounded_channel();
        let (done_tx, done_rx) = watch::channel(false);
        let status = Arc::new(Mutex::new(InstanceStatus {
            id: spec.id.clone(),
            server: spec.server.clone(),
            revision: spec.revision,
            handle: None,
            state: InstanceState::Starting,
            restarts: 0,
            last_exit: None,
            started_at: None,
        }));
        {
            let mut instances = shared.instances.lock();
            if instances.contains_key(&spec.id) {
                return Err(StartError::AlreadyRunning { id: spec.id });
            }
            instances.insert(
                spec.id.clone(),
                Entry {
                    generation,
                    control: control_tx,
                    done: done_rx,
                    status: status.clone(),
                },
            );
        }
        let mut reservation = Reservation {
            shared,
            id: spec.id.clone(),
            generation,
            armed: true,
        };

        let path = log_path(&shared.state_dir, &spec.id);
        let rotation = shared.rotation;
        let log = {
            let path = path.clone();
            tokio::task::spawn_blocking(move || RotatingLog::open(path, rotation))
                .await
                .unwrap_or_else(|e| Err(std::io::Error::other(e)))
        }
        .map_err(|source| StartError::StateDir { path, source })?;
        let (log, log_task) = spawn_log_task(log);

        let context = SpawnContext {
            state_dir: &shared.state_dir,
            log: &log,
            max_line: rotation.max_line(),
        };
        let mut spawned = match spawn::spawn(&spec, context).await {
            Ok(spawned) => spawned,
            Err(e) => {
                log.line(format!("--- spawn failed: {e}").into_bytes())
                    .await;
                // On disk before the caller hears of it (`mcpfleet logs` shows why).
                log.synced().await;
                return Err(e);
            }
        };

        let (events_tx, events_rx) = mpsc::unbounded_channel();
        {
            let mut status = status.lock();
            status.state = InstanceState::Running;
            status.handle = Some(InstanceHandle::Process { pid: spawned.pid });
            status.started_at = Some(spawned.started_at);
        }
        let _ = events_tx.send(spawned.running());
        let id = spec.id.clone();
        let supervisor = Supervisor::new(
            spec,
            shared.state_dir.clone(),
            rotation.max_line(),
            supervisor::Wiring {
                runtime: Arc::downgrade(shared),
                generation,
                control: control_rx,
                events: events_tx,
                status,
                done: done_tx,
                log,
                log_task,
            },
        );
        tokio::spawn(supervisor.run(spawned));
        reservation.armed = false;
        Ok(Instance {
            id,
            events: events_rx,
        })
    }

    async fn stop(&self, id: &InstanceId) -> Result<(), RuntimeError> {
        let handle = self
            .shared
            .instances
            .lock()
            .get(id)
            .map(|e| (e.control.clone(), e.done.clone()));
        let Some((control, mut done)) = handle else {
            return Ok(());
        };
        let _ = control.send(Control::Stop);
        // An error means the supervisor is gone, which is as stopped as it gets.
        let _ = done.wait_for(|done| *done).await;
        Ok(())
    }

    async fn restart(&self, id: &InstanceId) -> Result<(), RuntimeError> {
        let stopping = || RuntimeError::Stopping { id: id.clone() };
        let control = {
            let instances = self.shared.instances.lock();
            let entry = instances
                .get(id)
                .ok_or_else(|| RuntimeError::NotFound { id: id.clone() })?;
            if matches!(
                entry.status.lock().state,
                InstanceState::Stopping | InstanceState::Stopped
            ) {
                return Err(stopping());
            }
            entry.control.clone()
        };
        let (ack_tx, ack_rx) = oneshot::channel();
        control
            .send(Control::Restart(ack_tx))
            .map_err(|_| stopping())?;
        // Dropped unanswered: a stop got there first.
        ack_rx.await.map_err(|_| stopping())
    }

    fn statuses(&self) -> Vec<InstanceStatus> {
        self.shared
            .instances
            .lock()
            .values()
            .map(|e| e.status.lock().clone())
            .collect()
    }

    async fn discard_logs(&self, id: &InstanceId) {
        let live = log_path(&self.shared.state_dir, id);
        let keep = self.shared.rotation.keep;
        let removed = tokio::task::spawn_blocking(move || {
            let files =
                std::iter::once(live.clone()).chain((1..=keep).map(|n| rotated_log_path(&live, n)));
            for file in files {
                match std::fs::remove_file(&file) {
                    Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                        tracing::warn!(file = %file.display(), error = %e, "cannot remove a log");
                    }
                    _ => {}
                }
            }
        });
        let _ = removed.await;
    }

    async fn reap_leftovers(&self) -> Vec<Reaped> {
        let supervised: std::collections::HashSet<InstanceId> =
            self.shared.instances.lock().keys().cloned().collect();
        pidfile::reap_leftovers(&self.shared.state_dir, |id| supervised.contains(id)).await
    }

    async fn discover(&self) -> Vec<Discovered> {
        let records = pidfile::live_records(&self.shared.state_dir).await;
        let supervised = self.shared.instances.lock();
        let mut found: Vec<Discovered> = records
            .into_iter()
            .filter(|record| !supervised.contains_key(&record.id))
            .map(|record| Discovered {
                id: record.id,
                server: record.server,
                revision: record.revision,
                handle: InstanceHandle::Process { pid: record.pid },
            })
            .collect();
        found.sort_by(|a, b| a.id.cmp(&b.id));
        found
    }

    fn logs(&self, id: &InstanceId, lines: usize, follow: bool) -> BoxStream<'static, String> {
        follow_log(log_path(&self.shared.state_dir, id), lines, follow).boxed()
    }
}
