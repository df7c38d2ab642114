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

pub mod backoff;
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
use crate::supervised::Supervised;
use futures::StreamExt as _;
use futures::stream::BoxStream;
use logs::{discard_instance_logs, open_instance_log};
use spawn::SpawnContext;
use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use supervisor::Supervisor;
use tokio::sync::mpsc;

/// Runs instances as local processes. Cheap to clone; clones share the instances.
#[derive(Debug, Clone)]
pub struct ProcessRuntime {
    shared: Arc<Shared>,
}

#[derive(Debug)]
struct Shared {
    state_dir: PathBuf,
    rotation: LogRotation,
    /// The only strong reference: dropping the runtime stops its instances.
    supervised: Arc<Supervised>,
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
                supervised: Arc::default(),
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
        let reservation = shared.supervised.reserve(&spec)?;
        let status = reservation.status.clone();
        let rotation = shared.rotation;
        let (log, log_task) = open_instance_log(&shared.state_dir, &spec.id, rotation).await?;

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
        let (control, registration) = reservation.supervise();
        let supervisor = Supervisor::new(
            spec,
            shared.state_dir.clone(),
            rotation.max_line(),
            supervisor::Wiring {
                registration,
                control,
                events: events_tx,
                status,
                log,
                log_task,
            },
        );
        tokio::spawn(supervisor.run(spawned));
        Ok(Instance {
            id,
            events: events_rx,
        })
    }

    async fn stop(&self, id: &InstanceId) -> Result<(), RuntimeError> {
        self.shared.supervised.stop(id).await;
        Ok(())
    }

    async fn restart(&self, id: &InstanceId) -> Result<(), RuntimeError> {
        self.shared.supervised.restart(id).await
    }

    fn statuses(&self) -> Vec<InstanceStatus> {
        self.shared.supervised.statuses()
    }

    async fn discard_logs(&self, id: &InstanceId) {
        discard_instance_logs(&self.shared.state_dir, id, self.shared.rotation.keep).await;
    }

    async fn reap_leftovers(&self, spare: &HashSet<InstanceId>) -> Vec<Reaped> {
        let supervised = self.shared.supervised.ids();
        pidfile::reap_leftovers(&self.shared.state_dir, |id| {
            supervised.contains(id) || spare.contains(id)
        })
        .await
    }

    /// Never: a process's pipes died with the control plane that spawned it, and a
    /// process that is not our child cannot be waited on.
    async fn adopt(&self, spec: InstanceSpec) -> Result<Instance, StartError> {
        Err(StartError::NotAdoptable {
            id: spec.id,
            why: "a process's pipes died with the control plane that started it".to_owned(),
        })
    }

    async fn discover(&self) -> Vec<Discovered> {
        let records = pidfile::live_records(&self.shared.state_dir).await;
        let supervised = &self.shared.supervised;
        let mut found: Vec<Discovered> = records
            .into_iter()
            .filter(|record| !supervised.contains(&record.id))
            .map(|record| Discovered {
                id: record.id,
                server: record.server,
                revision: record.revision,
                handle: InstanceHandle::Process { pid: record.pid },
                adoptable: false,
            })
            .collect();
        found.sort_by(|a, b| a.id.cmp(&b.id));
        found
    }

    fn logs(&self, id: &InstanceId, lines: usize, follow: bool) -> BoxStream<'static, String> {
        follow_log(log_path(&self.shared.state_dir, id), lines, follow).boxed()
    }
}
