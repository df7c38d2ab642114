//! The instances a runtime supervises, whatever runs them: one entry per id with its
//! supervisor's control channel and status, and the operations on them that do not depend
//! on the runtime — reserving an id, stop, restart, statuses. The process and container
//! runtimes each own one and run their own supervisor task per entry, which share what
//! happens between runs ([`after_run`], [`back_off`], [`idle`]).

use crate::error::{RuntimeError, StartError};
use crate::instance::{InstanceId, InstanceSpec, InstanceState, InstanceStatus, Lifecycle};
use crate::process::backoff::{Decision, Ending, FailureCount, random_unit};
use crate::process::logs::LogWriter;
use fleet_spec::model::Restart;
use parking_lot::Mutex;
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Weak};
use std::time::Duration;
use tokio::sync::{mpsc, oneshot, watch};

/// What the runtime asks of a supervisor.
#[derive(Debug)]
pub(crate) enum Control {
    /// Stop for good.
    Stop,
    /// Kill now and start again; answered once the old run is over.
    Restart(oneshot::Sender<()>),
}

/// The supervised instances of one runtime. Supervisors hold it weakly: when the runtime's
/// last handle goes, the entries (and their control senders) go, which stops every
/// instance.
#[derive(Debug, Default)]
pub(crate) struct Supervised {
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

impl Supervised {
    /// Claims `spec.id` for a start in progress; the claim is given up when the returned
    /// reservation is dropped before [`Reservation::supervise`].
    ///
    /// # Errors
    ///
    /// [`StartError::AlreadyRunning`] when the id is taken.
    pub(crate) fn reserve(
        self: &Arc<Self>,
        spec: &InstanceSpec,
    ) -> Result<Reservation<'_>, StartError> {
        let generation = self.generations.fetch_add(1, Ordering::Relaxed);
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
        let mut instances = self.instances.lock();
        if instances.contains_key(&spec.id) {
            return Err(StartError::AlreadyRunning {
                id: spec.id.clone(),
            });
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
        Ok(Reservation {
            supervised: self,
            id: spec.id.clone(),
            generation,
            handover: Some((control_rx, done_tx)),
            status,
        })
    }

    fn forget(&self, id: &InstanceId, generation: u64) {
        let mut instances = self.instances.lock();
        if instances
            .get(id)
            .is_some_and(|e| e.generation == generation)
        {
            instances.remove(id);
        }
    }

    /// [`Runtime::stop`](crate::Runtime::stop): asks the supervisor to stop and waits until
    /// it has finished; an unknown id is stopped already.
    pub(crate) async fn stop(&self, id: &InstanceId) {
        let handle = self
            .instances
            .lock()
            .get(id)
            .map(|e| (e.control.clone(), e.done.clone()));
        let Some((control, mut done)) = handle else {
            return;
        };
        let _ = control.send(Control::Stop);
        // An error means the supervisor is gone, which is as stopped as it gets.
        let _ = done.wait_for(|done| *done).await;
    }

    /// [`Runtime::restart`](crate::Runtime::restart).
    pub(crate) async fn restart(&self, id: &InstanceId) -> Result<(), RuntimeError> {
        let stopping = || RuntimeError::Stopping { id: id.clone() };
        let control = {
            let instances = self.instances.lock();
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

    /// [`Runtime::statuses`](crate::Runtime::statuses), sorted by id.
    pub(crate) fn statuses(&self) -> Vec<InstanceStatus> {
        self.instances
            .lock()
            .values()
            .map(|e| e.status.lock().clone())
            .collect()
    }

    /// Whether `id` is supervised (or being started).
    pub(crate) fn contains(&self, id: &InstanceId) -> bool {
        self.instances.lock().contains_key(id)
    }

    /// The supervised ids, at this moment.
    pub(crate) fn ids(&self) -> std::collections::HashSet<InstanceId> {
        self.instances.lock().keys().cloned().collect()
    }
}

/// An id claimed by a start in progress. Dropped before [`supervise`](Self::supervise) (the
/// start failed or was cancelled), it frees the id.
#[derive(Debug)]
pub(crate) struct Reservation<'a> {
    supervised: &'a Arc<Supervised>,
    id: InstanceId,
    generation: u64,
    /// What the supervisor gets; taken by [`supervise`](Self::supervise).
    handover: Option<(mpsc::UnboundedReceiver<Control>, watch::Sender<bool>)>,
    /// The instance's status, shared with `statuses`.
    pub(crate) status: Arc<Mutex<InstanceStatus>>,
}

impl Reservation<'_> {
    /// The start succeeded: hands the supervisor its control channel and its registration.
    pub(crate) fn supervise(mut self) -> (mpsc::UnboundedReceiver<Control>, Registration) {
        let (control, done) = self
            .handover
            .take()
            .expect("a reservation is handed over once");
        let registration = Registration {
            supervised: Arc::downgrade(self.supervised),
            id: self.id.clone(),
            generation: self.generation,
            done,
        };
        (control, registration)
    }
}

impl Drop for Reservation<'_> {
    fn drop(&mut self) {
        if self.handover.is_some() {
            self.supervised.forget(&self.id, self.generation);
        }
    }
}

/// Held by a supervisor: unregisters the instance when the supervisor ends, however it
/// ends (even by panic), so `stop` never waits forever and the id can be used again.
#[derive(Debug)]
pub(crate) struct Registration {
    supervised: Weak<Supervised>,
    id: InstanceId,
    generation: u64,
    done: watch::Sender<bool>,
}

impl Drop for Registration {
    fn drop(&mut self) {
        if let Some(supervised) = self.supervised.upgrade() {
            supervised.forget(&self.id, self.generation);
        }
        self.done.send_replace(true);
    }
}

/// Where a supervisor goes when a run is over, whatever runs its instances.
#[derive(Debug)]
pub(crate) enum Next {
    /// Start the instance again now.
    Start,
    /// Wait `delay`, then start it again ([`back_off`]).
    BackOff { attempt: u32, delay: Duration },
    /// Run nothing until told to ([`idle`]).
    Idle(InstanceState),
    /// Stop supervising.
    Finish,
}

/// What the restart policy says after a run ended (`ending`), with what the engine and
/// the log are told when it gives up.
pub(crate) async fn after_run(
    failures: &mut FailureCount,
    restart: &Restart,
    ending: Ending,
    log: &LogWriter,
    events: &mpsc::UnboundedSender<Lifecycle>,
) -> Next {
    match failures.record(restart, ending, random_unit()) {
        Decision::Restart { attempt, delay } => Next::BackOff { attempt, delay },
        Decision::GiveUp { failures } => {
            log.line(
                format!("--- crash-looping: {failures} failed starts in a row; not restarting")
                    .into_bytes(),
            )
            .await;
            log.synced().await;
            let _ = events.send(Lifecycle::CrashLooping { failures });
            Next::Idle(InstanceState::CrashLooping)
        }
        Decision::Stay => Next::Idle(InstanceState::Exited),
    }
}

/// Waits out a backoff: [`Next::Start`] when it is over, [`Next::Finish`] on a stop. A
/// restart asked for meanwhile is answered at once (a start is coming anyway).
pub(crate) async fn back_off(
    attempt: u32,
    delay: Duration,
    status: &Mutex<InstanceStatus>,
    events: &mpsc::UnboundedSender<Lifecycle>,
    control: &mut mpsc::UnboundedReceiver<Control>,
) -> Next {
    status.lock().state = InstanceState::BackingOff;
    let _ = events.send(Lifecycle::BackingOff { attempt, delay });
    let deadline = tokio::time::Instant::now() + delay;
    loop {
        match tokio::time::timeout_at(deadline, control.recv()).await {
            Err(_elapsed) => return Next::Start,
            Ok(None | Some(Control::Stop)) => return Next::Finish,
            Ok(Some(Control::Restart(ack))) => {
                let _ = ack.send(());
            }
        }
    }
}

/// Runs nothing, in `state`, until a restart ([`Next::Start`], with the failed starts
/// forgotten: an explicit restart is an operator's decision to try again) or a stop.
pub(crate) async fn idle(
    state: InstanceState,
    status: &Mutex<InstanceStatus>,
    failures: &mut FailureCount,
    control: &mut mpsc::UnboundedReceiver<Control>,
) -> Next {
    status.lock().state = state;
    match control.recv().await {
        None | Some(Control::Stop) => Next::Finish,
        Some(Control::Restart(ack)) => {
            failures.reset();
            let _ = ack.send(());
            Next::Start
        }
    }
}
