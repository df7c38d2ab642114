//! Which control plane leads a fleet whose store several share (PostgreSQL): the one that
//! holds the store's lease.
//!
//! A control plane takes the lease before it touches the runtime (another's servers are not
//! its to reap), writes only through a store handle fenced with the lease's token (a deposed
//! leader's writes are refused by the database), renews the lease every third of its length,
//! and ends its process the moment the lease is lost or cannot be renewed in time — as a
//! killed control plane ends, which the next leader recovers from exactly as after a crash.
//! Until it leads, a control plane stands by: it polls the lease and serves nothing — in
//! a pod, only its probe ([`crate::standby`]).

use fleet_store::{Lease, StateStore, StoreError};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// How a standing-by control plane's log line begins: `up -d` recognises it.
pub const STANDING_BY: &str = "standing by:";

/// The exit code of a control plane that lost the leadership.
pub const LOST: i32 = 4;

/// The lease this control plane leads by.
#[derive(Debug, Clone)]
pub(crate) struct Leadership {
    store: Arc<dyn StateStore>,
    lease: Arc<parking_lot::Mutex<Lease>>,
    /// The task renewing the lease: stopped before the lease is released, or it could
    /// renew the released lease and keep a standby waiting for a whole lease.
    renewing: Arc<parking_lot::Mutex<Option<tokio::task::AbortHandle>>>,
}

impl Leadership {
    /// Waits until this control plane holds the lease of `store` (polling every third of
    /// `ttl` while another leads, saying so once, and telling `standby` who leads at each
    /// look), then keeps it renewed. Returns the store handle fenced with the lease's
    /// token, for every write from then on.
    ///
    /// # Errors
    /// The store cannot be read or written.
    pub(crate) async fn take(
        store: Arc<dyn StateStore>,
        fleet: &str,
        ttl: Duration,
        standby: Option<&crate::standby::StandbyServer>,
    ) -> Result<(Self, Arc<dyn StateStore>), StoreError> {
        let holder = holder();
        let mut stood_by = false;
        // A standby holds nothing (no lease, no socket but, in a pod, its probe's): a
        // signal ends it at once. Its own handlers, because a process that is a
        // container's PID 1 ignores a signal it does not handle.
        let mut signals = Signals::new();
        let lease = loop {
            if let Some(lease) = store.acquire_lease(&holder, ttl).await? {
                break lease;
            }
            // Said once in the log; a standby's probe server names the leader of each look.
            if !stood_by || standby.is_some() {
                let leader = store.lease().await?;
                let (who, until) = leader.map(|l| (l.holder, l.expires_at)).unwrap_or_default();
                if let Some(standby) = standby {
                    standby.leader_is(&who);
                }
                if !stood_by {
                    tracing::info!(
                        "{STANDING_BY} {who} leads fleet `{fleet}` (its lease runs until {until}); this control plane ({holder}) takes over when it stops renewing"
                    );
                    stood_by = true;
                }
            }
            tokio::select! {
                () = tokio::time::sleep(ttl / 3) => {}
                () = signals.received() => {
                    tracing::info!("stopped while standing by for fleet `{fleet}`");
                    std::process::exit(0);
                }
            }
        };
        tracing::info!(
            token = lease.token,
            "this control plane ({holder}) leads fleet `{fleet}`"
        );
        let fenced = store.fenced(lease.token);
        let leadership = Leadership {
            store,
            lease: Arc::new(parking_lot::Mutex::new(lease)),
            renewing: Arc::default(),
        };
        let renewing = leadership.keep(fleet.to_owned(), ttl);
        *leadership.renewing.lock() = Some(renewing);
        Ok((leadership, fenced))
    }

    /// Renews the lease every third of `ttl`; ends the process when another took it, or when
    /// renewals failed for half of `ttl` (before the lease can lapse, by this machine's
    /// clock: the servers it runs must not see two control planes act).
    fn keep(&self, fleet: String, ttl: Duration) -> tokio::task::AbortHandle {
        let store = self.store.clone();
        let current = self.lease.clone();
        tokio::spawn(async move {
            let mut renewed = Instant::now();
            loop {
                tokio::time::sleep(ttl / 3).await;
                let lease = current.lock().clone();
                match store.renew_lease(&lease, ttl).await {
                    Ok(lease) => {
                        *current.lock() = lease;
                        renewed = Instant::now();
                    }
                    Err(e @ StoreError::Fenced { .. }) => lost(&fleet, &e.to_string()),
                    Err(e) if renewed.elapsed() >= ttl / 2 => lost(
                        &fleet,
                        &format!(
                            "its lease could not be renewed for {:.1}s (half of it): {e}",
                            renewed.elapsed().as_secs_f64()
                        ),
                    ),
                    Err(e) => tracing::warn!("the lease on fleet `{fleet}` was not renewed: {e}"),
                }
            }
        })
        .abort_handle()
    }

    /// Gives the lease up, so that a standby takes over at once.
    pub(crate) async fn release(&self) {
        if let Some(renewing) = self.renewing.lock().take() {
            renewing.abort();
        }
        let lease = self.lease.lock().clone();
        if let Err(e) = self.store.release_lease(&lease).await {
            tracing::warn!("the lease was not released (a standby takes over when it lapses): {e}");
        }
    }
}

/// The label of this control plane's pod when it runs in one of the rendered Deployment
/// (`POD_NAME` and `POD_NAMESPACE`, from the downward API): through the fleet's cluster,
/// or the pod's own when the fleet runs elsewhere. `None` outside a pod, or when no client
/// can be made (said in the log: the Service will not reach this control plane).
pub(crate) async fn pod_label(
    fleet: &fleet_spec::model::ValidFleet,
    runtime: &crate::FleetRuntime,
) -> Option<fleet_runtime_kube::LeaderLabel> {
    let pod = std::env::var("POD_NAME").ok()?;
    let namespace = std::env::var("POD_NAMESPACE").ok()?;
    let cluster = match runtime {
        crate::FleetRuntime::Kubernetes(kube) => kube.cluster().clone(),
        crate::FleetRuntime::Local(_) => {
            match fleet_runtime_kube::Cluster::connect(
                &fleet_runtime_kube::ClusterAccess::InCluster,
            )
            .await
            {
                Ok(cluster) => cluster,
                Err(e) => {
                    tracing::warn!(
                        "pod {namespace}/{pod} cannot be labelled when it leads, and the Service will not reach it: {e}"
                    );
                    return None;
                }
            }
        }
    };
    Some(fleet_runtime_kube::LeaderLabel::new(
        cluster,
        &namespace,
        &pod,
        &fleet_manifests::control_plane_pods(&fleet.name),
        fleet_manifests::LEADER_LABEL,
    ))
}

/// Labels this control plane's pod the leader's (and no other), retrying until the API
/// server accepts: until then the Service reaches no control plane.
pub(crate) fn label_leader(label: fleet_runtime_kube::LeaderLabel) {
    tokio::spawn(async move {
        let mut failed = false;
        loop {
            match label.lead().await {
                Ok(()) if failed => {
                    tracing::info!("this control plane's pod is labelled the leader's at last");
                    return;
                }
                Ok(()) => return,
                Err(e) if !failed => {
                    tracing::warn!(
                        "this control plane's pod could not be labelled the leader's (the Service reaches it once it is; retrying every {}s): {e}",
                        RELABEL.as_secs()
                    );
                    failed = true;
                }
                Err(_) => {}
            }
            tokio::time::sleep(RELABEL).await;
        }
    });
}

/// How often a leader whose pod could not be labelled tries again.
const RELABEL: Duration = Duration::from_secs(5);

/// SIGTERM and SIGINT, handled from the moment this is made (a signal before a task first
/// polls them must not kill the process): what a standby ends at and what asks a leader for
/// a graceful shutdown.
pub(crate) struct Signals {
    terminate: Option<tokio::signal::unix::Signal>,
    interrupt: Option<tokio::signal::unix::Signal>,
}

impl Signals {
    pub(crate) fn new() -> Self {
        use tokio::signal::unix::{SignalKind, signal};
        Signals {
            terminate: signal(SignalKind::terminate()).ok(),
            interrupt: signal(SignalKind::interrupt()).ok(),
        }
    }

    /// Waits for either signal.
    pub(crate) async fn received(&mut self) {
        self.which().await;
    }

    /// Waits for either signal; true for SIGTERM (what a container runtime sends), false
    /// for SIGINT (a terminal's Ctrl-C).
    pub(crate) async fn which(&mut self) -> bool {
        async fn one(signal: Option<&mut tokio::signal::unix::Signal>) {
            match signal {
                Some(signal) => {
                    signal.recv().await;
                }
                None => std::future::pending::<()>().await,
            }
        }
        tokio::select! {
            () = one(self.terminate.as_mut()) => true,
            () = one(self.interrupt.as_mut()) => false,
        }
    }
}

/// Ends the process: it no longer leads, so it must not act on the servers (another
/// control plane does) nor stop them.
fn lost(fleet: &str, why: &str) -> ! {
    tracing::error!(
        "this control plane lost the leadership of fleet `{fleet}` and stops, leaving its servers to the new leader: {why}"
    );
    std::process::exit(LOST)
}

/// A name unique to this control plane: the host and the process id.
fn holder() -> String {
    format!("{}:{}", hostname(), std::process::id())
}

/// This machine's name (`localhost` if it cannot be read): what names a control plane in a
/// lease and an author in a revision.
pub fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_owned())
        .unwrap_or_else(|_| "localhost".to_owned())
}
