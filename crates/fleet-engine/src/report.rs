//! What the engine reports about the fleet: server and deployment states, the events it
//! emits, its status snapshot, rollout progress and analysis results, check runs and the
//! revisions serving.
//!
//! Plain data in the engine's own words. The admin API has its own types (fleet-api) with
//! their JSON contract; fleet-control converts these into them at the API edge, in one
//! place, so the engine never depends on the API and the API's JSON never depends on the
//! engine's internals.

use std::path::PathBuf;

/// Where a server (or one instance of it) stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ServerState {
    /// Waiting for its dependencies.
    Pending,
    /// Its process is being started.
    Starting,
    /// Started; readiness checks are running.
    Checking,
    /// Ready and taking traffic.
    Ready,
    /// Was ready; liveness checks now fail.
    Unhealthy,
    /// Exited and waiting to be started again.
    Restarting,
    /// Failed to start too many times in a row; no more restarts.
    CrashLooping,
    /// Did not become ready (or cannot start at all).
    Failed,
    /// Being stopped.
    Stopping,
    /// Stopped.
    Stopped,
}

impl ServerState {
    /// Every state, in declaration order.
    pub const ALL: [ServerState; 10] = [
        ServerState::Pending,
        ServerState::Starting,
        ServerState::Checking,
        ServerState::Ready,
        ServerState::Unhealthy,
        ServerState::Restarting,
        ServerState::CrashLooping,
        ServerState::Failed,
        ServerState::Stopping,
        ServerState::Stopped,
    ];

    /// The state's name in the sentences the engine writes (`dependency `db` is
    /// crash-looping`); the admin API spells it the same way.
    pub fn as_str(self) -> &'static str {
        match self {
            ServerState::Pending => "pending",
            ServerState::Starting => "starting",
            ServerState::Checking => "checking",
            ServerState::Ready => "ready",
            ServerState::Unhealthy => "unhealthy",
            ServerState::Restarting => "restarting",
            ServerState::CrashLooping => "crash-looping",
            ServerState::Failed => "failed",
            ServerState::Stopping => "stopping",
            ServerState::Stopped => "stopped",
        }
    }
}

/// Where the engine's current (or last) deployment stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DeploymentState {
    /// Servers are being created, updated or deleted.
    InProgress,
    /// Every server it created or updated is ready, every one it deleted stopped.
    Succeeded,
    /// A server failed and `on_failure: continue` let the others go on, or nothing could
    /// be undone.
    Failed,
    /// A server failed and what the deployment started was stopped (`on_failure: rollback`).
    RolledBack,
    /// A server failed and everything was left as it was (`on_failure: pause`).
    Paused,
    /// The engine is shutting down.
    Stopping,
    /// The engine has shut down.
    Stopped,
}

impl DeploymentState {
    /// The state's name in snake case (`rolled_back`), as metrics and traces say it.
    pub fn as_str(self) -> &'static str {
        match self {
            DeploymentState::InProgress => "in_progress",
            DeploymentState::Succeeded => "succeeded",
            DeploymentState::Failed => "failed",
            DeploymentState::RolledBack => "rolled_back",
            DeploymentState::Paused => "paused",
            DeploymentState::Stopping => "stopping",
            DeploymentState::Stopped => "stopped",
        }
    }

    /// Whether the deployment has come to an end (successful or not).
    pub fn is_final(self) -> bool {
        !matches!(
            self,
            DeploymentState::InProgress | DeploymentState::Stopping
        )
    }
}

/// What an [`Event`] tells.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EventKind {
    /// A deployment began.
    DeploymentStarted,
    /// A deployment ended with every server ready.
    DeploymentCompleted,
    /// A deployment ended otherwise.
    DeploymentFailed,
    /// A server's revision is starting.
    ServerStarting,
    /// A server's revision is ready.
    ServerReady,
    /// A server failed to start, update or stay up.
    ServerFailed,
    /// A server was stopped.
    ServerStopped,
    /// An instance's check passed (after failing).
    HealthCheckPassed,
    /// An instance's check failed.
    HealthCheckFailed,
    /// An instance's process exited.
    InstanceExited,
    /// An instance was started again.
    InstanceRestarted,
    /// An instance an earlier control plane started and left running was taken over, not
    /// restarted.
    InstanceAdopted,
    /// An instance failed to start too many times in a row.
    CrashLooping,
    /// What a failed deployment or canary changed is being undone.
    RollbackStarted,
    /// What a failed deployment or canary changed is undone.
    RollbackCompleted,
    /// A canary moved to its next traffic step.
    RolloutStep,
    /// A canary was paused (`mcpfleet pause`): it stays at its step until resumed.
    RolloutPaused,
    /// A canary's revision took every new session: the rollout is over.
    RolloutPromoted,
    /// An analysis interval failed.
    PerformanceAlert,
    /// At start, what a control plane that died left unfinished was settled.
    Recovered,
}

/// Something that happened to the fleet.
#[derive(Debug, Clone, PartialEq)]
pub struct Event {
    /// When (RFC 3339).
    pub time: String,
    pub kind: EventKind,
    pub server: Option<String>,
    /// The server revision it concerns, when there is one.
    pub revision: Option<u64>,
    /// The store's id of the deployment it happened in, when there is one.
    pub deployment: Option<u64>,
    /// The instance it concerns (`api@2#1`), when there is one.
    pub instance: Option<String>,
    pub message: String,
}

/// The fleet as the engine runs it, at one moment.
#[derive(Debug, Clone, PartialEq)]
pub struct FleetStatus {
    pub fleet: String,
    /// Where instance logs and pidfiles live (the engine's [`crate::EngineConfig`]).
    pub state_dir: PathBuf,
    pub deployment: DeploymentStatus,
    /// In plan order: wave by wave.
    pub servers: Vec<ServerStatus>,
}

/// The current (or last) deployment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeploymentStatus {
    pub state: DeploymentState,
    /// When it began (RFC 3339).
    pub started_at: String,
    pub finished_at: Option<String>,
    /// Why it failed, paused or was rolled back.
    pub reason: Option<String>,
}

/// One server.
#[derive(Debug, Clone, PartialEq)]
pub struct ServerStatus {
    pub name: String,
    /// `stdio`, `http` or `remote`.
    pub transport: String,
    /// Dependency wave (0 = no dependencies).
    pub wave: usize,
    pub state: ServerState,
    /// Why it is not ready (the failed check, the exit, the dependency it waits for).
    pub reason: Option<String>,
    /// Where clients reach it, when it has an address of its own.
    pub endpoint: Option<String>,
    /// The revision serving it (the stable one while a rollout runs); `None` until one is
    /// deployed.
    pub revision: Option<u64>,
    /// How new sessions are shared between its revisions; empty when no revision takes
    /// traffic.
    pub traffic: Vec<TrafficShare>,
    /// The canary in progress, if any.
    pub rollout: Option<RolloutProgress>,
    pub instances: Vec<InstanceStatus>,
}

/// One revision's share of a server's new sessions.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TrafficShare {
    pub revision: u64,
    /// Relative weight; 0 = no new sessions, its sessions drain.
    pub weight: u32,
}

/// One instance of a server.
#[derive(Debug, Clone, PartialEq)]
pub struct InstanceStatus {
    /// `api@2#1`.
    pub id: String,
    /// The server revision it runs.
    pub revision: u64,
    pub pid: Option<u32>,
    /// The container's short id, for an instance that runs in one.
    pub container: Option<String>,
    pub state: ServerState,
    pub restarts: u32,
    pub port: Option<u16>,
    pub last_check: Option<CheckResult>,
}

/// One check of one instance, once.
#[derive(Debug, Clone, PartialEq)]
pub struct CheckResult {
    /// When (RFC 3339).
    pub at: String,
    /// `mcp`, `http`, `tcp`, `command` or `file`.
    pub kind: String,
    pub passed: bool,
    pub took_ms: f64,
    /// What passed ("modern 2026-07-28, mcp-sample-server 0.1.0, 4 tools") or why it failed.
    pub detail: String,
}

/// Every check of every running instance, run once ([`crate::Engine::check_now`]).
#[derive(Debug, Clone, PartialEq)]
pub struct CheckRun {
    /// Whether every check passed.
    pub passed: bool,
    pub results: Vec<InstanceChecks>,
}

/// The checks of one instance in a [`CheckRun`].
#[derive(Debug, Clone, PartialEq)]
pub struct InstanceChecks {
    pub server: String,
    pub instance: String,
    pub checks: Vec<CheckResult>,
}

/// A canary in progress.
#[derive(Debug, Clone, PartialEq)]
pub struct RolloutProgress {
    pub strategy: RolloutStrategy,
    /// The stable revision.
    pub from_revision: u64,
    /// The revision being rolled out.
    pub to_revision: u64,
    /// The current step (1-based; 0 before the first) and how many there are.
    pub step: usize,
    pub steps: usize,
    /// The new revision's share of new sessions, in percent.
    pub weight: u32,
    pub state: RolloutState,
    /// Failed analysis intervals in a row (`failure_limit` aborts).
    pub failures_in_a_row: u32,
    /// The rollout's latest analysis intervals, oldest first: at most [`ANALYSES_KEPT`],
    /// every step's (a rollout can run for hours; status stays small).
    pub analyses: Vec<IntervalSummary>,
}

/// How many of a rollout's analysis intervals [`RolloutProgress::analyses`] keeps.
pub const ANALYSES_KEPT: usize = 20;

impl RolloutProgress {
    /// The interval judged last, if one has been.
    pub fn last_analysis(&self) -> Option<&IntervalSummary> {
        self.analyses.last()
    }
}

/// How a rollout replaces the serving revision.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RolloutStrategy {
    /// New sessions move to the new revision step by step, each step judged by analysis.
    Canary,
}

/// Where a canary stands within its current step.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RolloutState {
    /// The step's time is running.
    Progressing,
    /// Held by `mcpfleet pause` until `mcpfleet resume`.
    Paused,
    /// A `pause: {}` step: only `mcpfleet promote` moves it on.
    WaitingForPromote,
    /// The step's time is up, but it needs a passing analysis interval first.
    WaitingForAPassingAnalysis,
}

/// One analysis interval's result, as a rollout shows it.
#[derive(Debug, Clone, PartialEq)]
pub struct IntervalSummary {
    /// When it was judged (RFC 3339).
    pub at: String,
    /// The step it was judged in (1-based).
    pub step: usize,
    pub verdict: Verdict,
    /// Requests to the new revision in the interval.
    pub requests: u64,
    /// Their error rate (a fraction), if there were any.
    pub error_rate: Option<f64>,
    /// p95 latency upper bounds, in milliseconds.
    pub canary_p95_ms: Option<f64>,
    pub stable_p95_ms: Option<f64>,
    pub reason: String,
}

/// What one analysis interval concluded about the new revision.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// As good as the stable revision.
    Pass,
    /// Worse than allowed (errors, latency or failed health checks).
    Fail,
    /// Too little traffic to judge: never a pass.
    Inconclusive,
}

/// One server as it runs: its serving revision and spec ([`crate::Engine::deployed`]).
#[derive(Debug, Clone, PartialEq)]
pub struct ServingRevision {
    pub name: String,
    /// The revision serving it.
    pub revision: u64,
    /// The spec's content hash (equal hashes: unchanged).
    pub hash: String,
    /// The rendered spec, secrets shown as `***`.
    pub spec: serde_json::Value,
}
