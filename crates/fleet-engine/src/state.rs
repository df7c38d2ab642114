//! The fleet as the engine sees it, and its snapshot as a [`FleetStatus`].

use crate::instance_id::InstanceId;
use crate::metrics::{DurationHistogram, EngineMetrics, InstanceMetrics};
use crate::report::{
    CheckResult, DeploymentState, DeploymentStatus, FleetStatus, InstanceStatus, ServerState,
    ServerStatus,
};
use fleet_plan::Plan;
use fleet_spec::model::ValidFleet;
use std::collections::BTreeMap;
use std::path::Path;
use std::time::{Duration, Instant};

pub(crate) fn now() -> String {
    fleet_spec::template::rfc3339(std::time::SystemTime::now())
}

#[derive(Debug)]
pub(crate) struct FleetState {
    fleet: String,
    deployment: DeploymentStatus,
    servers: Vec<ServerRecord>,
    /// Set when a failure means no further server should start.
    aborted: bool,
    /// Set (for good) when the engine is shutting down: no deployment may begin, no
    /// instance may start.
    shutting_down: bool,
    /// When the current (or last) deployment began, for its duration.
    deployment_began: Instant,
    /// How long the last finished deployment took.
    last_deployment: Option<Duration>,
    /// Failed checks by (server, instance) — liveness checks, failed readiness — for the
    /// life of the control plane: a counter must not go back when a redeployment replaces
    /// the server records.
    check_failures: BTreeMap<InstanceId, u64>,
    /// Rollbacks by (server, reason), for the life of the control plane.
    rollbacks: BTreeMap<(String, &'static str), u64>,
    /// Finished deployments' durations by how they ended, for the life of the control plane.
    deployments: BTreeMap<&'static str, DurationHistogram>,
}

impl ServerRecord {
    /// The server is as good as its worst instance (once it has been ready).
    fn derive_state(&mut self) {
        if let Some(worst) = self
            .instances
            .iter()
            .map(|i| i.state)
            .max_by_key(|st| severity(*st))
        {
            self.state = worst;
        }
    }
}

#[derive(Debug)]
struct ServerRecord {
    name: String,
    transport: String,
    wave: usize,
    state: ServerState,
    reason: Option<String>,
    endpoint: Option<String>,
    /// The revision serving it; `None` until one is deployed.
    revision: Option<u64>,
    instances: Vec<InstanceStatus>,
    /// Has been ready: from then on its state follows its instances.
    deployed: bool,
}

impl FleetState {
    pub(crate) fn new(fleet: &str) -> Self {
        FleetState {
            fleet: fleet.to_string(),
            deployment: DeploymentStatus {
                state: DeploymentState::InProgress,
                started_at: now(),
                finished_at: None,
                reason: None,
            },
            servers: Vec::new(),
            aborted: false,
            shutting_down: false,
            deployment_began: Instant::now(),
            last_deployment: None,
            check_failures: BTreeMap::new(),
            rollbacks: BTreeMap::new(),
            deployments: BTreeMap::new(),
        }
    }

    /// Starts a deployment of `plan`: servers it creates get a record, servers it keeps
    /// keep theirs (instances included), in the plan's order; servers it deletes keep
    /// theirs until they are stopped.
    pub(crate) fn begin(&mut self, fleet: &ValidFleet, plan: &Plan) {
        self.fleet = fleet.name.clone();
        self.deployment = DeploymentStatus {
            state: DeploymentState::InProgress,
            started_at: now(),
            finished_at: None,
            reason: None,
        };
        self.aborted = false;
        self.deployment_began = Instant::now();
        let mut old: Vec<ServerRecord> = std::mem::take(&mut self.servers);
        let mut take = |name: &str| {
            old.iter()
                .position(|s| s.name == name)
                .map(|i| old.swap_remove(i))
        };
        let mut servers: Vec<ServerRecord> = plan
            .waves
            .iter()
            .flat_map(|w| w.servers.iter().map(move |s| (w.index, s)))
            .map(|(wave, s)| match take(&s.name) {
                Some(mut kept) => {
                    kept.wave = wave;
                    kept.transport = s.transport.clone();
                    kept
                }
                None => ServerRecord {
                    name: s.name.clone(),
                    transport: s.transport.clone(),
                    wave,
                    state: ServerState::Pending,
                    reason: None,
                    endpoint: None,
                    revision: None,
                    instances: Vec::new(),
                    deployed: false,
                },
            })
            .collect();
        // Deleted servers stop after the rest; they sort last.
        let last = plan.waves.len();
        servers.extend(
            plan.deletes
                .iter()
                .filter_map(|d| take(&d.name))
                .map(|mut s| {
                    s.wave = last;
                    s
                }),
        );
        self.servers = servers;
    }

    /// Records how the deployment ended — unless a shutdown has overtaken it.
    pub(crate) fn finish(&mut self, state: DeploymentState, reason: Option<String>) {
        if !matches!(
            self.deployment.state,
            DeploymentState::Stopping | DeploymentState::Stopped
        ) {
            self.deployment.state = state;
        }
        self.deployment.reason = reason;
        self.deployment.finished_at = Some(now());
        let took = self.deployment_began.elapsed();
        self.last_deployment = Some(took);
        // A deployment a shutdown cut short did not end on its own: no duration to count.
        let ended = match self.deployment.state {
            DeploymentState::Succeeded => Some("succeeded"),
            DeploymentState::Failed => Some("failed"),
            DeploymentState::RolledBack => Some("rolled_back"),
            DeploymentState::Paused => Some("paused"),
            DeploymentState::InProgress | DeploymentState::Stopping | DeploymentState::Stopped => {
                None
            }
        };
        if let Some(ended) = ended {
            self.deployments.entry(ended).or_default().observe(took);
        }
    }

    pub(crate) fn deployment_state(&self) -> DeploymentState {
        self.deployment.state
    }

    pub(crate) fn set_deployment(&mut self, state: DeploymentState) {
        self.deployment.state = state;
    }

    fn server_mut(&mut self, name: &str) -> Option<&mut ServerRecord> {
        self.servers.iter_mut().find(|s| s.name == name)
    }

    pub(crate) fn set_server(&mut self, name: &str, state: ServerState, reason: Option<String>) {
        if let Some(s) = self.server_mut(name) {
            s.state = state;
            s.reason = reason;
            s.deployed = match state {
                ServerState::Ready => true,
                ServerState::Stopping | ServerState::Stopped | ServerState::Failed => false,
                _ => s.deployed,
            };
        }
    }

    pub(crate) fn set_endpoint(&mut self, name: &str, endpoint: String) {
        if let Some(s) = self.server_mut(name)
            && s.endpoint.is_none()
        {
            s.endpoint = Some(endpoint);
        }
    }

    /// The record of one instance.
    pub(crate) fn instance(&mut self, server: &str, id: &str) -> Option<&mut InstanceStatus> {
        self.server_mut(server)?
            .instances
            .iter_mut()
            .find(|i| i.id == id)
    }

    /// Records a new instance, replacing an old record of the same id.
    pub(crate) fn add_instance(
        &mut self,
        server: &str,
        id: &str,
        revision: u64,
        port: Option<u16>,
    ) {
        let Some(s) = self.server_mut(server) else {
            return;
        };
        s.instances.retain(|i| i.id != id);
        s.instances.push(InstanceStatus {
            id: id.to_string(),
            revision,
            pid: None,
            container: None,
            state: ServerState::Starting,
            restarts: 0,
            port,
            last_check: None,
        });
    }

    /// Forgets the instances of `server`'s `revision` (stopped for good).
    pub(crate) fn remove_revision(&mut self, server: &str, revision: u64) {
        self.forget_instances(server, |i| i.revision == revision);
    }

    /// Forgets one instance of `server` (replaced by a restart).
    pub(crate) fn remove_instance(&mut self, server: &str, id: &str) {
        self.forget_instances(server, |i| i.id == id);
    }

    fn forget_instances(&mut self, server: &str, gone: impl Fn(&InstanceStatus) -> bool) {
        if let Some(s) = self.server_mut(server) {
            s.instances.retain(|i| !gone(i));
            // The state came from the worst instance, maybe one just removed.
            if s.deployed && !s.instances.is_empty() {
                s.derive_state();
                if s.state == ServerState::Ready {
                    s.reason = None;
                }
            }
        }
    }

    /// Records the revision serving `server`.
    pub(crate) fn set_revision(&mut self, server: &str, revision: u64) {
        if let Some(s) = self.server_mut(server) {
            s.revision = Some(revision);
        }
    }

    /// Forgets a deleted server.
    pub(crate) fn remove_server(&mut self, server: &str) {
        self.servers.retain(|s| s.name != server);
    }

    /// Sets an instance's state and derives its server's: the server is as good as its
    /// worst instance once it has been ready (a deployment in progress sets it directly).
    pub(crate) fn set_instance(
        &mut self,
        server: &str,
        id: &str,
        state: ServerState,
        reason: Option<String>,
    ) {
        if let Some(i) = self.instance(server, id) {
            i.state = state;
        }
        let Some(s) = self.server_mut(server) else {
            return;
        };
        if s.deployed {
            if s.instances.is_empty() {
                s.state = state;
            }
            s.derive_state();
            s.reason = if s.state == ServerState::Ready {
                None
            } else {
                reason
            };
        }
    }

    pub(crate) fn record_check(&mut self, server: &str, id: &str, summary: CheckResult) {
        if let Some(i) = self.instance(server, id) {
            i.last_check = Some(summary);
        }
    }

    pub(crate) fn count_check_failure(&mut self, id: &InstanceId) {
        *self.check_failures.entry(id.clone()).or_default() += 1;
    }

    pub(crate) fn count_rollback(&mut self, server: &str, reason: &'static str) {
        *self
            .rollbacks
            .entry((server.to_string(), reason))
            .or_default() += 1;
    }

    /// Failed checks so far of the instances of `server`'s `revision`.
    pub(crate) fn check_failures_of(&self, server: &str, revision: u64) -> u64 {
        self.check_failures
            .iter()
            .filter(|(id, _)| id.server == server && id.revision == revision)
            .map(|(_, n)| n)
            .sum()
    }

    pub(crate) fn server_state(&self, name: &str) -> ServerState {
        self.servers
            .iter()
            .find(|s| s.name == name)
            .map_or(ServerState::Stopped, |s| s.state)
    }

    pub(crate) fn aborted(&self) -> bool {
        self.aborted
    }

    pub(crate) fn shutting_down(&self) -> bool {
        self.shutting_down
    }

    /// The engine is shutting down: the deployment in progress is overtaken, nothing may
    /// start any more.
    pub(crate) fn shut_down(&mut self) {
        self.shutting_down = true;
        self.aborted = true;
        self.deployment.state = DeploymentState::Stopping;
    }

    pub(crate) fn abort_if(&mut self, abort: bool) {
        self.aborted |= abort;
    }

    /// Server names by wave, last wave first.
    pub(crate) fn waves_in_reverse(&self) -> Vec<Vec<String>> {
        let last = self.servers.iter().map(|s| s.wave).max().unwrap_or(0);
        (0..=last)
            .rev()
            .map(|w| {
                self.servers
                    .iter()
                    .filter(|s| s.wave == w)
                    .map(|s| s.name.clone())
                    .collect()
            })
            .collect()
    }

    /// Every instance's counters and the last deployment's duration.
    pub(crate) fn metrics(&self) -> EngineMetrics {
        // By the text the status shows each instance under.
        let check_failures: BTreeMap<String, u64> = self
            .check_failures
            .iter()
            .map(|(id, n)| (id.to_string(), *n))
            .collect();
        let instances = self
            .servers
            .iter()
            .flat_map(|s| s.instances.iter().map(move |i| (s, i)))
            .map(|(s, i)| InstanceMetrics {
                server: s.name.clone(),
                instance: i.id.clone(),
                up: i.state == ServerState::Ready,
                restarts: i.restarts,
                health_check_failures: check_failures.get(&i.id).copied().unwrap_or(0),
            })
            .collect();
        EngineMetrics {
            instances,
            last_deployment: self.last_deployment,
            rollbacks: self
                .rollbacks
                .iter()
                .map(|(k, v)| (k.clone(), *v))
                .collect(),
            deployments: self
                .deployments
                .iter()
                .map(|(state, histogram)| (*state, histogram.clone()))
                .collect(),
            ..EngineMetrics::default()
        }
    }

    pub(crate) fn to_status(&self, state_dir: &Path) -> FleetStatus {
        FleetStatus {
            fleet: self.fleet.clone(),
            state_dir: state_dir.to_path_buf(),
            deployment: self.deployment.clone(),
            servers: self
                .servers
                .iter()
                .map(|s| ServerStatus {
                    name: s.name.clone(),
                    transport: s.transport.clone(),
                    wave: s.wave,
                    state: s.state,
                    reason: s.reason.clone(),
                    endpoint: s.endpoint.clone(),
                    revision: s.revision,
                    traffic: Vec::new(),
                    rollout: None,
                    instances: s.instances.clone(),
                })
                .collect(),
        }
    }
}

/// Higher is worse: a server shows its worst instance.
fn severity(state: ServerState) -> u8 {
    match state {
        ServerState::Ready => 0,
        ServerState::Pending | ServerState::Starting | ServerState::Checking => 1,
        ServerState::Restarting => 2,
        ServerState::Unhealthy => 3,
        ServerState::Stopping | ServerState::Stopped => 4,
        ServerState::Failed => 5,
        ServerState::CrashLooping => 6,
    }
}
