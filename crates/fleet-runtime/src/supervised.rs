//! The instances a runtime supervises, whatever runs them: one entry per id with its
//! supervisor's control channel and status, and the operations on them that do not depend
//! on the runtime — reserving an id, stop, restart, statuses. The process and container
//! runtimes each own one and run their own supervisor task per entry.

use crate::error::{RuntimeError, StartError};
use crate::instance::{InstanceId, InstanceSpec, InstanceState, InstanceStatus};
use parking_lot::Mutex;
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Weak};
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
