//! The deployment engine: executes a plan against a [`Runtime`], gating every server on its
//! health checks, and keeps the fleet healthy afterwards.
//!
//! Owns: the order of things (dependency waves, a server starts once its dependencies meet
//! their condition), readiness and liveness scheduling, what a failed server does to the
//! deployment (`on_failure`), shutdown in reverse dependency order, the event history, the
//! fleet's status and its metrics. Does not own: starting processes (fleet-runtime), speaking
//! MCP or running a check (fleet-mcp), the admin API (fleet-control).

mod metrics;
mod monitor;
mod pool;
mod state;

pub use metrics::{EngineMetrics, InstanceMetrics};

use fleet_api::types::{
    CheckRun, DeploymentState, Event, EventKind, InstanceChecks, ServerState, Status,
};
use fleet_gateway::{RevisionRoute, RouteTable, Upstream};
use fleet_plan::Plan;
use fleet_runtime::Runtime;
use fleet_spec::model::{Condition, OnFailure, Server, Transport, ValidFleet};
use fleet_spec::template::Host;
use monitor::InstanceMonitor;
use pool::SessionPool;
use state::FleetState;
use std::collections::{BTreeMap, VecDeque};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::{Semaphore, broadcast, watch};

/// Why a server did not start: another one failed, or the fleet is shutting down.
const ABORTED: &str = "the deployment was aborted";

/// Events kept for `GET /v1/events` and late subscribers.
const HISTORY: usize = 2_000;

/// Settings of an engine.
#[derive(Clone)]
pub struct EngineConfig {
    /// Where instance logs and pidfiles live (the runtime's state directory).
    pub state_dir: PathBuf,
    /// Where templates read environment variables and secret files.
    pub host: Arc<dyn Host>,
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
    pub(crate) events: broadcast::Sender<Event>,
    history: Mutex<VecDeque<Event>>,
    pub(crate) monitors: Mutex<Vec<Arc<InstanceMonitor<R>>>>,
    /// Ready instances by server: the source of the gateway's route table.
    upstreams: Mutex<BTreeMap<String, BTreeMap<String, Upstream>>>,
    routes: watch::Sender<RouteTable>,
    /// Processes for the sessions of each per-session stdio server.
    pools: Mutex<BTreeMap<String, Arc<SessionPool<R>>>>,
}

impl<R: Runtime + 'static> Shared<R> {
    /// The session pool of `server`, made by `make` if it has none.
    pub(crate) fn session_pool(
        &self,
        server: &str,
        make: impl FnOnce() -> Arc<SessionPool<R>>,
    ) -> Arc<SessionPool<R>> {
        let mut pools = self.pools.lock().unwrap_or_else(|p| p.into_inner());
        Arc::clone(pools.entry(server.to_owned()).or_insert_with(make))
    }
}

impl<R> Shared<R> {
    /// Adds (`Some`) or removes an instance from the gateway's routes and publishes the
    /// new table. Every server has one revision for now, with all the weight.
    pub(crate) fn set_upstream(&self, server: &str, instance: &str, upstream: Option<Upstream>) {
        let mut upstreams = self.upstreams.lock().unwrap_or_else(|p| p.into_inner());
        let instances = upstreams.entry(server.to_string()).or_default();
        let changed = match upstream {
            Some(upstream) => {
                instances
                    .insert(instance.to_string(), upstream.clone())
                    .as_ref()
                    != Some(&upstream)
            }
            None => instances.remove(instance).is_some(),
        };
        if !changed {
            return;
        }
        let table = upstreams.iter().map(|(server, instances)| {
            let upstreams = instances.values().cloned().collect();
            (
                server.clone(),
                vec![RevisionRoute {
                    revision: 1,
                    weight: 100,
                    instances: upstreams,
                }],
            )
        });
        match RouteTable::new(table) {
            Ok(table) => {
                self.routes.send_replace(table);
            }
            Err(errors) => tracing::error!("route table rejected: {errors:?}"),
        }
    }

    /// Applies a change to the fleet state and wakes whoever waits on it.
    pub(crate) fn update<T>(&self, f: impl FnOnce(&mut FleetState) -> T) -> T {
        let out = f(&mut self.state.lock().unwrap_or_else(|p| p.into_inner()));
        self.changed.send_modify(|v| *v += 1);
        out
    }

    pub(crate) fn emit(
        &self,
        kind: EventKind,
        server: Option<&str>,
        instance: Option<&str>,
        message: impl Into<String>,
    ) {
        let event = Event {
            time: state::now(),
            kind,
            server: server.map(str::to_string),
            instance: instance.map(str::to_string),
            message: message.into(),
        };
        tracing::info!(kind = ?event.kind, server = ?event.server, instance = ?event.instance, "{}", event.message);
        let mut history = self.history.lock().unwrap_or_else(|p| p.into_inner());
        if history.len() == HISTORY {
            history.pop_front();
        }
        history.push_back(event.clone());
        // Sent while holding the history lock so a subscriber sees history + live without gaps.
        let _ = self.events.send(event);
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
        let (events, _) = broadcast::channel(4_096);
        Engine {
            shared: Arc::new(Shared {
                runtime,
                config,
                state: Mutex::new(FleetState::new(fleet_name)),
                changed,
                events,
                history: Mutex::new(VecDeque::new()),
                monitors: Mutex::new(Vec::new()),
                upstreams: Mutex::new(BTreeMap::new()),
                routes: watch::channel(RouteTable::empty()).0,
                pools: Mutex::new(BTreeMap::new()),
            }),
        }
    }

    /// The fleet's status, as the admin API shows it.
    pub fn status(&self) -> Status {
        self.shared
            .state
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .to_status(&self.shared.config.state_dir)
    }

    /// Every instance's readiness, restarts and failed checks, and how long the last
    /// deployment took.
    pub fn metrics(&self) -> EngineMetrics {
        self.shared
            .state
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .metrics()
    }

    /// The event history and a receiver of everything that follows it.
    pub fn subscribe(&self) -> (Vec<Event>, broadcast::Receiver<Event>) {
        let history = self
            .shared
            .history
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        (
            history.iter().cloned().collect(),
            self.shared.events.subscribe(),
        )
    }

    /// The gateway's route table, updated as instances become ready or stop being ready.
    pub fn routes(&self) -> watch::Receiver<RouteTable> {
        self.shared.routes.subscribe()
    }

    /// A receiver that changes whenever the fleet's state does.
    pub fn watch(&self) -> watch::Receiver<u64> {
        self.shared.changed.subscribe()
    }

    /// Deploys `fleet` as `plan` orders it and returns when every server is ready or the
    /// deployment has failed. The fleet stays supervised afterwards.
    pub async fn deploy(&self, fleet: Arc<ValidFleet>, plan: &Plan) -> DeploymentOutcome {
        let shared = &self.shared;
        shared.update(|s| s.begin(&fleet, plan));
        shared.emit(
            EventKind::DeploymentStarted,
            None,
            None,
            format!(
                "deploying {} servers in {} waves",
                fleet.servers.len(),
                plan.waves.len()
            ),
        );
        let limit = Arc::new(Semaphore::new(shared.config.concurrency.max(1)));
        let order: Vec<&str> = plan
            .waves
            .iter()
            .flat_map(|w| w.servers.iter().map(|s| s.name.as_str()))
            .collect();
        let tasks = order
            .iter()
            .filter_map(|name| fleet.server(name))
            .map(|server| {
                let engine = self.clone();
                let fleet = fleet.clone();
                let limit = limit.clone();
                let server = server.clone();
                async move { engine.bring_up(&fleet, &server, &limit).await }
            });
        let results: Vec<Result<(), String>> = futures::future::join_all(tasks).await;
        let failures: Vec<(&str, &String)> = order
            .iter()
            .zip(&results)
            .filter_map(|(name, r)| r.as_ref().err().map(|e| (*name, e)))
            .collect();

        let outcome = match failures.first() {
            None => DeploymentOutcome {
                state: DeploymentState::Succeeded,
                reason: None,
            },
            Some((name, why)) => {
                // The strictest policy among the servers that failed on their own decides.
                let policy = failures
                    .iter()
                    .filter(|(_, why)| why.as_str() != ABORTED)
                    .filter_map(|(name, _)| fleet.server(name).map(|s| s.on_failure))
                    .max_by_key(|p| match p {
                        OnFailure::Rollback => 2,
                        OnFailure::Pause => 1,
                        OnFailure::Continue => 0,
                    })
                    .unwrap_or(OnFailure::Rollback);
                let reason = format!("{name}: {why}");
                let shutting_down = matches!(
                    shared
                        .state
                        .lock()
                        .unwrap_or_else(|p| p.into_inner())
                        .deployment_state(),
                    DeploymentState::Stopping | DeploymentState::Stopped
                );
                match policy {
                    // A shutdown in progress stops everything anyway.
                    _ if shutting_down => DeploymentOutcome {
                        state: DeploymentState::Stopping,
                        reason: Some(reason),
                    },
                    OnFailure::Rollback => {
                        shared.emit(
                            EventKind::RollbackStarted,
                            None,
                            None,
                            format!("rolling back: {reason}"),
                        );
                        self.stop_all().await;
                        shared.emit(
                            EventKind::RollbackCompleted,
                            None,
                            None,
                            "every server this deployment started is stopped",
                        );
                        DeploymentOutcome {
                            state: DeploymentState::RolledBack,
                            reason: Some(reason),
                        }
                    }
                    OnFailure::Pause => DeploymentOutcome {
                        state: DeploymentState::Paused,
                        reason: Some(reason),
                    },
                    OnFailure::Continue => DeploymentOutcome {
                        state: DeploymentState::Failed,
                        reason: Some(reason),
                    },
                }
            }
        };
        shared.update(|s| s.finish(outcome.state, outcome.reason.clone()));
        match &outcome.reason {
            None => shared.emit(
                EventKind::DeploymentCompleted,
                None,
                None,
                "every server is ready",
            ),
            Some(reason) => shared.emit(EventKind::DeploymentFailed, None, None, reason.clone()),
        }
        outcome
    }

    /// Starts one server once its dependencies allow, and waits until it is ready.
    async fn bring_up(
        &self,
        fleet: &Arc<ValidFleet>,
        server: &Server,
        limit: &Semaphore,
    ) -> Result<(), String> {
        let shared = &self.shared;
        self.wait_for_dependencies(server)
            .await
            .inspect_err(|why| {
                shared
                    .update(|s| s.set_server(&server.name, ServerState::Failed, Some(why.clone())));
                shared.emit(
                    EventKind::ServerFailed,
                    Some(&server.name),
                    None,
                    why.clone(),
                );
            })?;
        let _permit = limit
            .acquire()
            .await
            .map_err(|_| "the engine is shutting down".to_string())?;
        if shared
            .state
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .aborted()
        {
            return Err(ABORTED.into());
        }
        shared.update(|s| s.set_server(&server.name, ServerState::Starting, None));
        shared.emit(
            EventKind::ServerStarting,
            Some(&server.name),
            None,
            describe_start(server),
        );
        let replicas = if matches!(server.transport, Transport::Remote { .. }) {
            1
        } else {
            server.replicas
        };
        let mut ready = Vec::new();
        for replica in 1..=replicas {
            let monitor =
                InstanceMonitor::start(shared.clone(), fleet.clone(), server.clone(), replica)
                    .await
                    .map_err(|why| self.fail_server(server, why))?;
            // A shutdown or rollback may have taken its snapshot of the monitors while this
            // one was starting: joining the list and checking for that happen under one lock.
            let aborted = {
                let mut monitors = shared.monitors.lock().unwrap_or_else(|p| p.into_inner());
                let aborted = shared
                    .state
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .aborted();
                if !aborted {
                    monitors.push(monitor.clone());
                }
                aborted
            };
            if aborted {
                monitor.stop().await;
                return Err(ABORTED.into());
            }
            ready.push(monitor);
        }
        // Every process runs: dependents waiting for `condition: started` may go.
        shared.update(|s| s.set_server(&server.name, ServerState::Checking, None));
        for monitor in &ready {
            if let Err(why) = monitor.wait_ready().await {
                return Err(self.fail_server(server, why));
            }
        }
        let detail = ready
            .first()
            .and_then(|m| m.last_detail())
            .unwrap_or_default();
        shared.update(|s| s.set_server(&server.name, ServerState::Ready, None));
        shared.emit(EventKind::ServerReady, Some(&server.name), None, detail);
        Ok(())
    }

    /// Marks a server failed. Unless its policy is `continue`, no further server starts.
    fn fail_server(&self, server: &Server, why: String) -> String {
        self.shared.update(|s| {
            s.set_server(&server.name, ServerState::Failed, Some(why.clone()));
            s.abort_if(server.on_failure != OnFailure::Continue);
        });
        self.shared.emit(
            EventKind::ServerFailed,
            Some(&server.name),
            None,
            why.clone(),
        );
        why
    }

    /// Waits until every dependency meets its condition.
    ///
    /// # Errors
    /// A dependency failed, so this server can never start.
    async fn wait_for_dependencies(&self, server: &Server) -> Result<(), String> {
        let mut changes = self.shared.changed.subscribe();
        let mut shown: Option<String> = None;
        loop {
            let waiting = {
                let state = self.shared.state.lock().unwrap_or_else(|p| p.into_inner());
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
                        return Err(format!(
                            "dependency `{}` is {}",
                            dep.server,
                            state::state_name(dep_state)
                        ));
                    }
                    if !met && waiting.is_none() {
                        waiting = Some(dep.server.clone());
                    }
                }
                if state.aborted() {
                    return Err(ABORTED.into());
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
                return Err("the engine stopped".into());
            }
        }
    }

    /// Runs every check of every running instance once, now.
    pub async fn check_now(&self) -> CheckRun {
        let monitors: Vec<_> = self
            .shared
            .monitors
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone();
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
        let waves = shared
            .state
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .waves_in_reverse();
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
            .unwrap_or_else(|p| p.into_inner())
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
        let pool = self
            .shared
            .pools
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(server);
        if let Some(pool) = pool {
            // Out of the route table by now: no new session gets a process.
            pool.close().await;
        }
        self.shared
            .update(|s| s.set_server(server, ServerState::Stopped, None));
        self.shared
            .emit(EventKind::ServerStopped, Some(server), None, "stopped");
    }

    /// Stops everything and marks the fleet stopped.
    pub async fn shutdown(&self) {
        self.shared
            .update(|s| s.set_deployment(DeploymentState::Stopping));
        self.stop_all().await;
        self.shared
            .update(|s| s.set_deployment(DeploymentState::Stopped));
    }
}

fn describe_start(server: &Server) -> String {
    match &server.transport {
        Transport::Stdio { command, .. } => {
            format!("starting `{}` (stdio)", command.command.shown)
        }
        Transport::Http { command, .. } => format!("starting `{}` (http)", command.command.shown),
        Transport::Remote { url, .. } => format!("checking {}", url.shown),
    }
}

/// How long an engine waits for anything that has no deadline of its own.
pub const STOP_GRACE: Duration = Duration::from_secs(5);
