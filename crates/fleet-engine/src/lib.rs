//! The deployment engine: executes a plan against a [`Runtime`], gating every server on its
//! health checks, and keeps the fleet healthy afterwards.
//!
//! Owns: the order of things (dependency waves, a server starts once its dependencies meet
//! their condition), readiness and liveness scheduling, what a failed server does to the
//! deployment (`on_failure`), shutdown in reverse dependency order, the event history, the
//! fleet's status and its metrics. Does not own: starting processes (fleet-runtime), speaking
//! MCP or running a check (fleet-mcp), the admin API (fleet-control).

mod analysis;
mod canary;
mod error;
mod events;
mod instance_id;
mod journal;
mod launch;
mod metrics;
mod monitor;
pub mod pin;
mod pool;
pub mod recovery;
pub mod report;
mod rollout;
mod routing;
mod spans;
mod state;

pub use canary::RolloutCommand;
pub use error::EngineError;
pub use journal::{
    JOURNAL_FORMAT, JournalStep, ServerAction, ServerStep, StepError, append_step, failpoint,
};
pub use metrics::{
    CanaryMetrics, DEPLOYMENT_BUCKETS, DurationHistogram, EngineMetrics, InstanceMetrics,
};
pub use pin::{ImageResolver, UnpinnedImage, pin_images};

use crate::report::{
    CheckRun, DeploymentState, Event, EventKind, FleetStatus, InstanceChecks, ServerState,
    ServingRevision, TrafficShare,
};
use events::EventBus;
use fleet_plan::{Change, Plan};
use fleet_routes::table::RouteTable;
use fleet_runtime::Runtime;
use fleet_spec::model::{Condition, Executable, OnFailure, Server, Transport, ValidFleet};
use fleet_spec::template::Host;
use fleet_stdio::StdioInstances;
use instance_id::InstanceId;
use monitor::InstanceMonitor;
use parking_lot::Mutex;
use pool::SessionPool;
use routing::RouteBook;
use state::FleetState;
use std::collections::{BTreeMap, BTreeSet, HashSet};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{Semaphore, broadcast, watch};
use tracing::Instrument as _;

/// Settings of an engine.
#[derive(Clone)]
pub struct EngineConfig {
    /// Where instance logs and pidfiles live (the runtime's state directory).
    pub state_dir: PathBuf,
    /// Servers started at the same time, at most.
    pub concurrency: usize,
    /// The gateway's base URL (`http://127.0.0.1:7470`), shown as servers' endpoints.
    pub gateway_url: Option<String>,
}

impl std::fmt::Debug for EngineConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EngineConfig")
            .field("state_dir", &self.state_dir)
            .field("concurrency", &self.concurrency)
            .finish_non_exhaustive()
    }
}

/// The engine. Cheap to clone; every clone drives the same fleet.
pub struct Engine<R: Runtime + 'static> {
    shared: Arc<Shared<R>>,
}

impl<R: Runtime + 'static> Clone for Engine<R> {
    fn clone(&self) -> Self {
        Engine {
            shared: self.shared.clone(),
        }
    }
}

impl<R: Runtime + 'static> std::fmt::Debug for Engine<R> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Engine")
            .field("config", &self.shared.config)
            .finish_non_exhaustive()
    }
}

pub(crate) struct Shared<R> {
    pub(crate) runtime: R,
    pub(crate) config: EngineConfig,
    pub(crate) state: Mutex<FleetState>,
    /// Bumped on every state change; dependency waits watch it.
    pub(crate) changed: watch::Sender<u64>,
    pub(crate) events: EventBus,
    pub(crate) monitors: Mutex<Vec<Arc<InstanceMonitor<R>>>>,
    /// Ready instances and traffic shares, published as the gateway's route table.
    pub(crate) routes: RouteBook,
    /// The release serving each server.
    releases: Mutex<BTreeMap<String, Release>>,
    /// Canaries in progress, by server.
    pub(crate) rollouts: Mutex<BTreeMap<String, canary::ActiveRollout>>,
    /// Where deployment steps are journaled.
    pub(crate) journal: std::sync::OnceLock<Arc<dyn fleet_store::StateStore>>,
    /// Where canary analysis reads traffic counters (the gateway, in production).
    pub(crate) traffic: std::sync::OnceLock<Arc<dyn fleet_routes::traffic::TrafficSource>>,
    /// Processes for the sessions of each per-session stdio server, by (server, revision).
    pools: Mutex<BTreeMap<RevisionKey, Arc<SessionPool<R>>>>,
    /// One lock per server, for the moves that act on running revisions: taking one back
    /// by a route swap, an undo, a rollback window running out.
    transitions: Mutex<BTreeMap<String, Arc<tokio::sync::Mutex<()>>>>,
    /// Revisions that failed (an aborted canary), until they serve: never taken back by a
    /// route swap.
    failed: Mutex<BTreeSet<RevisionKey>>,
    /// Instances an earlier control plane left running that the runtime can take over:
    /// each is adopted instead of started, once (see [`Engine::offer_leftovers`]).
    leftovers: Mutex<HashSet<fleet_runtime::InstanceId>>,
}

impl<R: Runtime + 'static> Shared<R> {
    /// Runs the instance `spec` describes: adopts it when an earlier control plane left it
    /// running (see [`Engine::offer_leftovers`]), else starts it.
    pub(crate) async fn launch(
        &self,
        spec: fleet_runtime::InstanceSpec,
        id: &InstanceId,
    ) -> Result<fleet_runtime::Instance, fleet_runtime::StartError> {
        if self.leftovers.lock().remove(&spec.id) {
            match self.runtime.adopt(spec.clone()).await {
                Ok(instance) => {
                    self.events.emit(
                        EventKind::InstanceAdopted,
                        Some(&spec.server),
                        Some(id),
                        "left running by the previous control plane: taken over, not restarted"
                            .to_owned(),
                    );
                    return Ok(instance);
                }
                Err(e) => tracing::info!("{e}; starting it afresh"),
            }
        }
        self.runtime.start(spec).await
    }

    /// Waits for `server`'s turn to move between revisions (see `transitions`).
    pub(crate) async fn transition(&self, server: &str) -> tokio::sync::OwnedMutexGuard<()> {
        let lock = Arc::clone(
            self.transitions
                .lock()
                .entry(server.to_owned())
                .or_default(),
        );
        lock.lock_owned().await
    }

    /// Records whether `server`'s `revision` failed (see `failed`).
    pub(crate) fn set_failed(&self, server: &str, revision: u64, failed: bool) {
        let mut set = self.failed.lock();
        let key = (server.to_owned(), revision);
        if failed {
            set.insert(key);
        } else {
            set.remove(&key);
        }
    }

    pub(crate) fn has_failed(&self, server: &str, revision: u64) -> bool {
        self.failed.lock().contains(&(server.to_owned(), revision))
    }

    /// The session pool of `server`'s `revision`, made by `make` if it has none.
    pub(crate) fn session_pool(
        &self,
        server: &str,
        revision: u64,
        make: impl FnOnce() -> Arc<SessionPool<R>>,
    ) -> Arc<SessionPool<R>> {
        let mut pools = self.pools.lock();
        Arc::clone(
            pools
                .entry((server.to_owned(), revision))
                .or_insert_with(make),
        )
    }
}

/// A server's revision: (server, revision number).
type RevisionKey = (String, u64);

impl<R> Shared<R> {
    /// Applies a change to the fleet state and wakes whoever waits on it.
    pub(crate) fn update<T>(&self, f: impl FnOnce(&mut FleetState) -> T) -> T {
        let out = f(&mut self.state.lock());
        self.changed.send_modify(|v| *v += 1);
        out
    }
}

/// What a deployment deploys: the fleet, how to render it, and each server's revision.
#[derive(Clone)]
pub struct Desired {
    pub fleet: Arc<ValidFleet>,
    /// Where its templates read environment variables and secret files.
    pub host: Arc<dyn Host>,
    /// Server → the revision number its spec has in the store (1 when absent).
    pub revisions: BTreeMap<String, u64>,
    /// The store's id of this deployment, recorded in its events.
    pub deployment: Option<u64>,
    /// A rollback (`mcpfleet rollback`, crash recovery): counted in
    /// `mcpfleet_rollbacks_total` for every server it updates.
    pub is_rollback: bool,
}

impl std::fmt::Debug for Desired {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Desired")
            .field("fleet", &self.fleet.name)
            .field("revisions", &self.revisions)
            .finish_non_exhaustive()
    }
}

impl Desired {
    fn release(&self, server: &Server) -> Release {
        Release {
            fleet: self.fleet.clone(),
            host: self.host.clone(),
            server: server.clone(),
            revision: self.revisions.get(&server.name).copied().unwrap_or(1),
        }
    }
}

/// One server at one revision, with what rendering its templates needs.
#[derive(Clone)]
pub(crate) struct Release {
    pub(crate) fleet: Arc<ValidFleet>,
    pub(crate) host: Arc<dyn Host>,
    pub(crate) server: Server,
    pub(crate) revision: u64,
}

/// How many instances a server runs: a remote server is one endpoint, however many
/// replicas it asks for.
pub(crate) fn replica_count(server: &Server) -> u32 {
    if matches!(server.transport, Transport::Remote { .. }) {
        1
    } else {
        server.replicas
    }
}

/// How a deployment ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeploymentOutcome {
    pub state: DeploymentState,
    pub reason: Option<String>,
}

impl<R: Runtime + 'static> Engine<R> {
    pub fn new(runtime: R, config: EngineConfig, fleet_name: &str) -> Self {
        let (changed, _) = watch::channel(0);
        Engine {
            shared: Arc::new(Shared {
                runtime,
                config,
                state: Mutex::new(FleetState::new(fleet_name)),
                changed,
                events: EventBus::default(),
                monitors: Mutex::new(Vec::new()),
                releases: Mutex::new(BTreeMap::new()),
                rollouts: Mutex::new(BTreeMap::new()),
                traffic: std::sync::OnceLock::new(),
                journal: std::sync::OnceLock::new(),
                routes: RouteBook::default(),
                pools: Mutex::new(BTreeMap::new()),
                transitions: Mutex::new(BTreeMap::new()),
                failed: Mutex::new(BTreeSet::new()),
                leftovers: Mutex::new(HashSet::new()),
            }),
        }
    }

    /// The fleet's status now.
    pub fn status(&self) -> FleetStatus {
        let mut status = self
            .shared
            .state
            .lock()
            .to_status(&self.shared.config.state_dir);
        let rollouts = self.shared.rollouts.lock();
        for server in &mut status.servers {
            server.rollout = rollouts.get(&server.name).map(|r| r.status.clone());
            server.traffic = self
                .shared
                .routes
                .weights(&server.name)
                .into_iter()
                .map(|(revision, weight)| TrafficShare { revision, weight })
                .collect();
        }
        status
    }

    /// Instances an earlier control plane left running (what the runtime's `discover` found
    /// adoptable): an instance of a revision this engine deploys with one of these ids is
    /// taken over ([`Runtime::adopt`]) instead of started, then checked like any other; one
    /// the runtime cannot adopt after all is started afresh. Each is offered once.
    pub fn offer_leftovers(&self, ids: impl IntoIterator<Item = fleet_runtime::InstanceId>) {
        self.shared.leftovers.lock().extend(ids);
    }

    /// Reads canary analysis traffic from `source` (the gateway fronting this engine's
    /// routes). Without one, every analysis interval is inconclusive.
    pub fn watch_traffic(&self, source: Arc<dyn fleet_routes::traffic::TrafficSource>) {
        let _ = self.shared.traffic.set(source);
    }

    /// What runs now: each server's serving revision and its spec.
    pub fn deployed(&self) -> Vec<ServingRevision> {
        self.shared
            .releases
            .lock()
            .values()
            .map(|release| {
                let record = fleet_plan::DeployedServer::from_server(&release.server);
                ServingRevision {
                    name: record.name,
                    revision: release.revision,
                    hash: record.hash,
                    spec: record.spec,
                }
            })
            .collect()
    }

    /// Every instance's readiness, restarts and failed checks, how long deployments took,
    /// each server's traffic weights and stable revision, and the canaries in progress.
    pub fn metrics(&self) -> EngineMetrics {
        let mut metrics = self.shared.state.lock().metrics();
        metrics.stable = self
            .shared
            .releases
            .lock()
            .iter()
            .map(|(server, release)| (server.clone(), release.revision))
            .collect();
        metrics.traffic = metrics
            .stable
            .iter()
            .flat_map(|(server, _)| {
                self.shared
                    .routes
                    .weights(server)
                    .into_iter()
                    .map(move |(revision, weight)| (server.clone(), revision, weight))
            })
            .collect();
        metrics.canaries = self
            .shared
            .rollouts
            .lock()
            .iter()
            .map(|(server, rollout)| CanaryMetrics {
                server: server.clone(),
                revision: rollout.status.to_revision,
                paused_for: rollout
                    .paused_since
                    .map_or(Duration::ZERO, |since| since.elapsed()),
            })
            .collect();
        metrics
    }

    /// The event history and a receiver of everything that follows it.
    pub fn subscribe(&self) -> (Vec<Event>, broadcast::Receiver<Event>) {
        self.shared.events.subscribe()
    }

    /// The stdio instances the published route tables name (for the gateway).
    pub fn stdio_instances(&self) -> StdioInstances {
        self.shared.routes.stdio()
    }

    /// The gateway's route table, updated as instances become ready or stop being ready.
    pub fn routes(&self) -> watch::Receiver<RouteTable> {
        self.shared.routes.subscribe()
    }

    /// A receiver that changes whenever the fleet's state does.
    pub fn watch(&self) -> watch::Receiver<u64> {
        self.shared.changed.subscribe()
    }

    /// Shows `plan`'s servers in the status (pending) before the deployment runs, so that
    /// nobody asking right after start-up sees an empty fleet.
    pub fn announce(&self, desired: &Desired, plan: &Plan) {
        self.shared.update(|s| {
            if !s.shutting_down() {
                s.begin(&desired.fleet, plan);
            }
        });
    }

    /// Deploys `desired` as `plan` orders it and returns when every server it creates or
    /// updates is ready, and every server it deletes is stopped — or the deployment has
    /// failed. Unchanged servers are not touched. The fleet stays supervised afterwards.
    pub async fn deploy(&self, desired: &Desired, plan: &Plan) -> DeploymentOutcome {
        let shared = &self.shared;
        // Checked under the state lock the shutdown takes too: once it has begun, no
        // deployment starts anything it would not stop.
        let refused = shared.update(|s| {
            let refused = s.shutting_down();
            if !refused {
                s.begin(&desired.fleet, plan);
            }
            refused
        });
        if refused {
            return DeploymentOutcome {
                state: DeploymentState::Failed,
                reason: Some(EngineError::ShuttingDown.to_string()),
            };
        }
        shared.events.set_deployment(desired.deployment);
        shared.events.emit(
            EventKind::DeploymentStarted,
            None,
            None,
            describe_plan(plan),
        );
        let before = shared.releases.lock().clone();
        let order: Vec<(&str, &Change)> = plan
            .waves
            .iter()
            .flat_map(|w| w.servers.iter().map(|s| (s.name.as_str(), &s.change)))
            .collect();
        let results = self.apply_all(desired, plan, &order).await;
        let failures: Vec<(&str, &EngineError)> = order
            .iter()
            .zip(&results)
            .filter_map(|(name, r)| r.as_ref().err().map(|e| (name.0, e)))
            .collect();
        let outcome = if failures.is_empty() {
            self.delete_removed(plan).await
        } else {
            self.after_failure(&desired.fleet, &order, &failures, &before)
                .await
        };
        shared.update(|s| s.finish(outcome.state, outcome.reason.clone()));
        match &outcome.reason {
            None => shared.events.emit(
                EventKind::DeploymentCompleted,
                None,
                None,
                "every server is ready",
            ),
            Some(reason) => {
                shared
                    .events
                    .emit(EventKind::DeploymentFailed, None, None, reason.clone())
            }
        }
        shared.events.set_deployment(None);
        outcome
    }

    /// Creates or updates every server of `order` (`plan`'s, wave by wave) at once, each
    /// waiting for its dependencies, at most `concurrency` starting at a time; one result
    /// per server.
    async fn apply_all(
        &self,
        desired: &Desired,
        plan: &Plan,
        order: &[(&str, &Change)],
    ) -> Vec<Result<(), EngineError>> {
        if desired.is_rollback {
            for (name, change) in order {
                if matches!(change, Change::Update { .. }) {
                    self.shared.update(|s| s.count_rollback(name, "command"));
                }
            }
        }
        let limit = Arc::new(Semaphore::new(self.shared.config.concurrency.max(1)));
        let waves: BTreeMap<&str, spans::WaveMember> = plan
            .waves
            .iter()
            .flat_map(|wave| {
                let span = spans::WaveSpan::new(wave.index + 1, wave.servers.len());
                wave.servers
                    .iter()
                    .map(move |s| (s.name.as_str(), span.member()))
            })
            .collect();
        let mut waves = waves;
        let tasks = order.iter().filter_map(|(name, change)| {
            let wave = waves.remove(name)?;
            let release = desired.release(desired.fleet.server(name)?);
            let engine = self.clone();
            let limit = limit.clone();
            let change = (*change).clone();
            Some(async move { engine.apply(release, &change, &limit, wave).await })
        });
        futures::future::join_all(tasks).await
    }

    /// Deletes the servers the plan removes (once every other server is in place).
    async fn delete_removed(&self, plan: &Plan) -> DeploymentOutcome {
        let mut kept = Vec::new();
        for deleted in &plan.deletes {
            let revision = self.serving(&deleted.name).map_or(0, |r| r.revision);
            let span = spans::server_step(
                &tracing::Span::current(),
                ServerAction::Delete,
                &deleted.name,
                revision,
            );
            let result = async {
                let step = self
                    .step_begins(ServerAction::Delete, &deleted.name, revision)
                    .await?;
                self.delete_server(&deleted.name).await;
                self.step_ends(step, &deleted.name, &Ok(())).await;
                Ok(())
            }
            .instrument(span.clone())
            .await;
            spans::step_ended(&span, &result);
            if let Err(why) = result {
                kept.push(format!("{}: {why}", deleted.name));
            }
        }
        if kept.is_empty() {
            DeploymentOutcome {
                state: DeploymentState::Succeeded,
                reason: None,
            }
        } else {
            DeploymentOutcome {
                state: DeploymentState::Failed,
                reason: Some(kept.join("; ")),
            }
        }
    }

    /// What a deployment with failed servers ends as: the strictest `on_failure` among the
    /// servers that failed on their own decides (a shutdown in progress stops everything
    /// anyway).
    async fn after_failure(
        &self,
        fleet: &ValidFleet,
        order: &[(&str, &Change)],
        failures: &[(&str, &EngineError)],
        before: &BTreeMap<String, Release>,
    ) -> DeploymentOutcome {
        let (name, why) = failures[0];
        let policy = recovery::strictest(
            failures
                .iter()
                .filter(|(_, why)| !matches!(why, EngineError::Aborted))
                .filter_map(|(name, _)| fleet.server(name).map(|s| s.on_failure)),
        );
        let reason = format!("{name}: {why}");
        let shutting_down = matches!(
            self.shared.state.lock().deployment_state(),
            DeploymentState::Stopping | DeploymentState::Stopped
        );
        let (state, reason) = match policy {
            _ if shutting_down => (DeploymentState::Stopping, reason),
            OnFailure::Rollback => return self.roll_back(order, before, reason).await,
            OnFailure::Pause => (DeploymentState::Paused, reason),
            OnFailure::Continue => (DeploymentState::Failed, reason),
        };
        DeploymentOutcome {
            state,
            reason: Some(reason),
        }
    }

    /// Undoes what this deployment created or updated, last first: each server back to the
    /// release that served `before` (or gone, if it had none).
    async fn roll_back(
        &self,
        order: &[(&str, &Change)],
        before: &BTreeMap<String, Release>,
        reason: String,
    ) -> DeploymentOutcome {
        let shared = &self.shared;
        shared.events.emit(
            EventKind::RollbackStarted,
            None,
            None,
            format!("rolling back: {reason}"),
        );
        let undone = order
            .iter()
            .rev()
            .filter(|(_, c)| matches!(c, Change::Create | Change::Update { .. }));
        let mut not_undone = Vec::new();
        for (name, _) in undone {
            let previous = before.get(*name).cloned();
            let revision = previous.as_ref().map_or(0, |r| r.revision);
            let updated = previous.is_some();
            let span = spans::server_step(
                &tracing::Span::current(),
                ServerAction::Undo,
                name,
                revision,
            );
            let result = async {
                // Never refused: an undo goes ahead unjournaled if need be.
                let step = self
                    .step_begins(ServerAction::Undo, name, revision)
                    .await
                    .ok()
                    .flatten();
                let result = self.undo(name, previous).await;
                if updated && matches!(result, Ok(true)) {
                    shared.update(|s| s.count_rollback(name, "failed_update"));
                }
                let result = result.map(|_| ());
                self.step_ends(step, name, &result).await;
                result
            }
            .instrument(span.clone())
            .await;
            spans::step_ended(&span, &result);
            if let Err(why) = result {
                not_undone.push(format!("{name}: {why}"));
            }
        }
        if not_undone.is_empty() {
            shared.events.emit(
                EventKind::RollbackCompleted,
                None,
                None,
                "what this deployment changed is back as it was",
            );
            DeploymentOutcome {
                state: DeploymentState::RolledBack,
                reason: Some(reason),
            }
        } else {
            DeploymentOutcome {
                state: DeploymentState::Failed,
                reason: Some(format!(
                    "{reason}; the rollback failed too: {}",
                    not_undone.join("; ")
                )),
            }
        }
    }

    /// Creates or updates one server once its dependencies allow, and waits until its new
    /// revision serves.
    async fn apply(
        &self,
        release: Release,
        change: &Change,
        limit: &Semaphore,
        wave: spans::WaveMember,
    ) -> Result<(), EngineError> {
        let shared = &self.shared;
        let server = &release.server;
        if *change == Change::Unchanged || *change == Change::Delete {
            return Ok(());
        }
        self.wait_for_dependencies(server)
            .await
            .inspect_err(|why| {
                let why = why.to_string();
                shared
                    .update(|s| s.set_server(&server.name, ServerState::Failed, Some(why.clone())));
                shared
                    .events
                    .emit(EventKind::ServerFailed, Some(&server.name), None, why);
            })?;
        // Nobody closes the semaphore: failing to acquire it means the engine is gone.
        let _permit = limit
            .acquire()
            .await
            .map_err(|_| EngineError::EngineStopped)?;
        if self.aborted() {
            return Err(EngineError::Aborted);
        }
        let serving = self
            .serving(&server.name)
            .filter(|_| matches!(change, Change::Update { .. }));
        let name = server.name.clone();
        let revision = release.revision;
        let action = match serving {
            Some(_) => ServerAction::Update,
            None => ServerAction::Create,
        };
        let on_failure = server.on_failure;
        let span = spans::server_step(&wave.span(), action, &name, revision);
        let result = async {
            let step = self.step_begins(action, &name, revision).await?;
            let result = match serving {
                Some(old) => self.update(old, release).await.inspect_err(|_| {
                    shared.update(|s| s.abort_if(on_failure != OnFailure::Continue));
                }),
                None => self.create(release).await,
            };
            self.step_ends(step, &name, &result).await;
            result
        }
        .instrument(span.clone())
        .await;
        spans::step_ended(&span, &result);
        result
    }

    /// Starts a server that has no revision running, and waits until it is ready.
    async fn create(&self, release: Release) -> Result<(), EngineError> {
        let shared = &self.shared;
        let server = &release.server;
        shared.update(|s| s.set_server(&server.name, ServerState::Starting, None));
        shared.events.emit_revision(
            EventKind::ServerStarting,
            &server.name,
            release.revision,
            describe_start(server, release.revision),
        );
        shared
            .routes
            .set_weights(&server.name, &[(release.revision, 100)]);
        let mut started = Vec::new();
        for replica in 1..=replica_count(server) {
            started.push(
                self.start_replica(&release, replica)
                    .await
                    .map_err(|why| self.fail_server(server, why))?,
            );
        }
        // Every process runs: dependents waiting for `condition: started` may go.
        shared.update(|s| s.set_server(&server.name, ServerState::Checking, None));
        for monitor in &started {
            if let Err(why) = monitor.wait_ready().await {
                return Err(self.fail_server(server, why));
            }
        }
        self.serve(&release, &started);
        Ok(())
    }

    /// Records that `release` serves its server (started and ready), and says so.
    fn serve(&self, release: &Release, started: &[Arc<InstanceMonitor<R>>]) {
        let shared = &self.shared;
        let name = &release.server.name;
        let detail = started
            .first()
            .and_then(|m| m.last_mcp_detail())
            .unwrap_or_default();
        shared.releases.lock().insert(name.clone(), release.clone());
        shared.set_failed(name, release.revision, false);
        shared.update(|s| {
            s.set_revision(name, release.revision);
            s.set_server(name, ServerState::Ready, None);
        });
        shared.events.emit_revision(
            EventKind::ServerReady,
            name,
            release.revision,
            format!("revision {}: {detail}", release.revision),
        );
    }

    /// Starts one replica of `release` and registers its monitor.
    ///
    /// # Errors
    /// The instance cannot start, or the deployment was aborted meanwhile.
    async fn start_replica(
        &self,
        release: &Release,
        replica: u32,
    ) -> Result<Arc<InstanceMonitor<R>>, EngineError> {
        self.start_instance(release, replica, FleetState::aborted, EngineError::Aborted)
            .await
    }

    /// Starts one replica of `release` and registers its monitor, unless `refused` says
    /// (then) that nothing may start any more.
    ///
    /// # Errors
    /// The instance cannot start, or `refused` (`why`).
    async fn start_instance(
        &self,
        release: &Release,
        replica: u32,
        refused: fn(&FleetState) -> bool,
        why: EngineError,
    ) -> Result<Arc<InstanceMonitor<R>>, EngineError> {
        let shared = &self.shared;
        let monitor = InstanceMonitor::start(shared.clone(), release, replica).await?;
        // A shutdown or rollback may have taken its snapshot of the monitors while this
        // one was starting: joining the list and checking for that happen under one lock.
        let refused = {
            let mut monitors = shared.monitors.lock();
            let refused = refused(&shared.state.lock());
            if !refused {
                monitors.push(monitor.clone());
            }
            refused
        };
        if refused {
            monitor.stop().await;
            return Err(why);
        }
        Ok(monitor)
    }

    /// Whether a failure (or a shutdown) means no further server may start.
    fn aborted(&self) -> bool {
        self.shared.state.lock().aborted()
    }

    /// The release serving `server`, if any.
    fn serving(&self, server: &str) -> Option<Release> {
        self.shared.releases.lock().get(server).cloned()
    }

    /// Marks a server failed. Unless its policy is `continue`, no further server starts.
    fn fail_server(&self, server: &Server, why: EngineError) -> EngineError {
        let text = why.to_string();
        self.shared.update(|s| {
            s.set_server(&server.name, ServerState::Failed, Some(text.clone()));
            s.abort_if(server.on_failure != OnFailure::Continue);
        });
        self.shared
            .events
            .emit(EventKind::ServerFailed, Some(&server.name), None, text);
        why
    }

    /// Waits until every dependency meets its condition.
    ///
    /// # Errors
    /// A dependency failed, so this server can never start.
    async fn wait_for_dependencies(&self, server: &Server) -> Result<(), EngineError> {
        let mut changes = self.shared.changed.subscribe();
        let mut shown: Option<String> = None;
        loop {
            let waiting = {
                let state = self.shared.state.lock();
                let mut waiting = None;
                for dep in &server.depends_on {
                    let dep_state = state.server_state(&dep.server);
                    let met = match dep.condition {
                        Condition::Healthy => dep_state == ServerState::Ready,
                        Condition::Started => matches!(
                            dep_state,
                            ServerState::Checking | ServerState::Ready | ServerState::Unhealthy
                        ),
                    };
                    if matches!(
                        dep_state,
                        ServerState::Failed
                            | ServerState::CrashLooping
                            | ServerState::Stopped
                            | ServerState::Stopping
                    ) {
                        return Err(EngineError::DependencyDown {
                            server: dep.server.clone(),
                            state: dep_state,
                        });
                    }
                    if !met && waiting.is_none() {
                        waiting = Some(dep.server.clone());
                    }
                }
                if state.aborted() {
                    return Err(EngineError::Aborted);
                }
                waiting
            };
            let Some(dep) = waiting else { return Ok(()) };
            // Only a new reason is a change: every waiter wakes on every change, so
            // re-announcing the same one would wake them all again, forever.
            if shown.as_ref() != Some(&dep) {
                let reason = format!("waiting for `{dep}`");
                self.shared
                    .update(|s| s.set_server(&server.name, ServerState::Pending, Some(reason)));
                shown = Some(dep);
            }
            if changes.changed().await.is_err() {
                return Err(EngineError::EngineStopped);
            }
        }
    }

    /// Runs every check of every running instance once, now.
    pub async fn check_now(&self) -> CheckRun {
        let monitors: Vec<_> = self.shared.monitors.lock().clone();
        let runs = monitors
            .iter()
            .filter(|m| !m.is_stopped())
            .map(|m| async move {
                InstanceChecks {
                    server: m.server().to_string(),
                    instance: m.id().to_string(),
                    checks: m.check_now().await,
                }
            });
        let results: Vec<InstanceChecks> = futures::future::join_all(runs).await;
        let passed = results.iter().all(|r| r.checks.iter().all(|c| c.passed));
        CheckRun { passed, results }
    }

    /// Stops every server, dependents before their dependencies (reverse waves); servers of
    /// one wave stop together.
    pub async fn stop_all(&self) {
        let shared = &self.shared;
        let waves = shared.state.lock().waves_in_reverse();
        shared.update(|s| s.abort_if(true));
        for wave in waves {
            let stops = wave.iter().map(|server| self.stop_server(server));
            futures::future::join_all(stops).await;
        }
    }

    async fn stop_server(&self, server: &str) {
        let monitors: Vec<_> = self
            .shared
            .monitors
            .lock()
            .iter()
            .filter(|m| m.server() == server && !m.is_stopped())
            .cloned()
            .collect();
        if monitors.is_empty() {
            return;
        }
        self.shared
            .update(|s| s.set_server(server, ServerState::Stopping, None));
        futures::future::join_all(monitors.iter().map(|m| m.stop())).await;
        let pools: Vec<_> = {
            let mut pools = self.shared.pools.lock();
            let keys: Vec<_> = pools.keys().filter(|(s, _)| s == server).cloned().collect();
            keys.iter().filter_map(|k| pools.remove(k)).collect()
        };
        for pool in pools {
            // Out of the route table by now: no new session gets a process.
            pool.close().await;
        }
        self.shared.releases.lock().remove(server);
        self.shared
            .update(|s| s.set_server(server, ServerState::Stopped, None));
        self.shared
            .events
            .emit(EventKind::ServerStopped, Some(server), None, "stopped");
    }

    /// Stops a server the fleet no longer has and forgets it.
    async fn delete_server(&self, server: &str) {
        self.shared.routes.set_weights(server, &[]);
        self.stop_server(server).await;
        self.shared.monitors.lock().retain(|m| m.server() != server);
        self.shared.update(|s| s.remove_server(server));
    }

    /// Stops everything and marks the fleet stopped.
    pub async fn shutdown(&self) {
        self.shared.update(FleetState::shut_down);
        self.stop_all().await;
        self.shared
            .update(|s| s.set_deployment(DeploymentState::Stopped));
    }
}

fn describe_start(server: &Server, revision: u64) -> String {
    match &server.transport {
        Transport::Stdio { command, .. } => {
            format!(
                "starting {} (stdio), revision {revision}",
                describe_executable(&command.executable)
            )
        }
        Transport::Http { command, .. } => {
            format!(
                "starting {} (http), revision {revision}",
                describe_executable(&command.executable)
            )
        }
        Transport::Remote { url, .. } => format!("checking {}, revision {revision}", url.shown),
    }
}

/// What runs, for people: `` `npx` `` or `` image `ghcr.io/org/files:1.2` ``.
fn describe_executable(executable: &Executable) -> String {
    match executable {
        Executable::Program { command } => format!("`{}`", command.shown),
        Executable::Image {
            image,
            digest: Some(digest),
            ..
        } => format!(
            "image `{}` ({})",
            image.shown,
            fleet_spec::model::short_digest(digest)
        ),
        Executable::Image { image, .. } => format!("image `{}`", image.shown),
    }
}

/// What a deployment is about to do, in one line.
fn describe_plan(plan: &Plan) -> String {
    let c = &plan.changes;
    if plan.nothing_deployed {
        let servers = c.create;
        let waves = plan.waves.len();
        return format!(
            "deploying {servers} server{} in {waves} wave{}",
            plural(servers),
            plural(waves)
        );
    }
    format!(
        "deploying: {} to create, {} to update, {} to delete, {} unchanged",
        c.create, c.update, c.delete, c.unchanged
    )
}

/// `s` for a count other than one.
fn plural(count: usize) -> &'static str {
    if count == 1 { "" } else { "s" }
}

/// How long an engine waits for anything that has no deadline of its own.
pub const STOP_GRACE: Duration = Duration::from_secs(5);
