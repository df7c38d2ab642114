//! The admin API's data. Field names are part of the documented `--output json` contract:
//! add fields, never rename or remove them.

use serde::{Deserialize, Serialize};

/// How a tool call ended (`GET /v1/audit`): one type with the gateway and the store.
pub use fleet_routes::audit::ToolOutcome;

/// `GET /v1/status`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Status {
    pub fleet: String,
    /// Process id of the control plane.
    pub pid: u32,
    pub state_dir: String,
    pub deployment: Deployment,
    /// In plan order: wave by wave.
    pub servers: Vec<ServerStatus>,
    /// The TCP admin listener (`admin.listen`), e.g. `http://127.0.0.1:7471`;
    /// absent when there is none.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub admin_url: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Deployment {
    pub state: DeploymentState,
    pub started_at: String,
    pub finished_at: Option<String>,
    /// Why it failed, paused or was rolled back.
    pub reason: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum DeploymentState {
    InProgress,
    Succeeded,
    /// A server failed and `on_failure: continue` let the others go on, or nothing could
    /// be undone.
    Failed,
    /// A server failed and what the deployment started was stopped (`on_failure: rollback`).
    RolledBack,
    /// A server failed and everything was left as it was (`on_failure: pause`).
    Paused,
    Stopping,
    Stopped,
    /// Ended by the user (`mcpfleet abort`); seen in the recorded history.
    Aborted,
}

impl DeploymentState {
    /// Every state, in declaration order.
    pub const ALL: [DeploymentState; 8] = [
        DeploymentState::InProgress,
        DeploymentState::Succeeded,
        DeploymentState::Failed,
        DeploymentState::RolledBack,
        DeploymentState::Paused,
        DeploymentState::Stopping,
        DeploymentState::Stopped,
        DeploymentState::Aborted,
    ];

    /// The state's name in JSON, docs and text output (`rolled-back`).
    pub fn as_str(self) -> &'static str {
        match self {
            DeploymentState::InProgress => "in-progress",
            DeploymentState::Succeeded => "succeeded",
            DeploymentState::Failed => "failed",
            DeploymentState::RolledBack => "rolled-back",
            DeploymentState::Paused => "paused",
            DeploymentState::Stopping => "stopping",
            DeploymentState::Stopped => "stopped",
            DeploymentState::Aborted => "aborted",
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

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
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
    /// The revision serving it (the stable one while a rollout runs); absent until one is
    /// deployed.
    #[serde(default)]
    pub revision: Option<u64>,
    /// How new sessions are shared between its revisions, by revision; empty when no
    /// revision takes traffic.
    #[serde(default)]
    pub traffic: Vec<RevisionWeight>,
    /// The rollout in progress (a canary), if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rollout: Option<RolloutStatus>,
    pub instances: Vec<InstanceStatus>,
}

/// A canary in progress.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RolloutStatus {
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
    /// The interval judged last (the newest of `analyses`).
    pub last_analysis: Option<AnalysisSummary>,
    /// The rollout's latest analysis intervals, every step's, oldest first: at most 20
    /// (empty from an older control plane, which kept only the last).
    #[serde(default)]
    pub analyses: Vec<AnalysisSummary>,
}

/// One analysis interval's result.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AnalysisSummary {
    pub at: String,
    /// The rollout step it was judged in (1-based; 0 from an older control plane).
    #[serde(default)]
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

/// How a rollout in progress replaces the serving revision.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum RolloutStrategy {
    /// New sessions move to the new revision step by step, each step judged by analysis.
    Canary,
}

impl RolloutStrategy {
    /// Every strategy, in declaration order.
    pub const ALL: [RolloutStrategy; 1] = [RolloutStrategy::Canary];

    /// The strategy's name in JSON, docs and text output (`canary`).
    pub fn as_str(self) -> &'static str {
        match self {
            RolloutStrategy::Canary => "canary",
        }
    }
}

/// Where a canary stands within its current step.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
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

impl RolloutState {
    /// Every state, in declaration order.
    pub const ALL: [RolloutState; 4] = [
        RolloutState::Progressing,
        RolloutState::Paused,
        RolloutState::WaitingForPromote,
        RolloutState::WaitingForAPassingAnalysis,
    ];

    /// The state's name in JSON, docs and text output (`waiting-for-promote`).
    pub fn as_str(self) -> &'static str {
        match self {
            RolloutState::Progressing => "progressing",
            RolloutState::Paused => "paused",
            RolloutState::WaitingForPromote => "waiting-for-promote",
            RolloutState::WaitingForAPassingAnalysis => "waiting-for-a-passing-analysis",
        }
    }
}

/// What one analysis interval concluded about the new revision.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Verdict {
    /// As good as the stable revision.
    Pass,
    /// Worse than allowed (errors, latency or failed health checks).
    Fail,
    /// Too little traffic to judge: never a pass.
    Inconclusive,
}

impl Verdict {
    /// Every verdict, in declaration order.
    pub const ALL: [Verdict; 3] = [Verdict::Pass, Verdict::Fail, Verdict::Inconclusive];

    /// The verdict's name in JSON, docs and text output (`inconclusive`).
    pub fn as_str(self) -> &'static str {
        match self {
            Verdict::Pass => "pass",
            Verdict::Fail => "fail",
            Verdict::Inconclusive => "inconclusive",
        }
    }
}

/// One revision's share of a server's new sessions.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct RevisionWeight {
    pub revision: u64,
    /// Relative weight; 0 = no new sessions, its sessions drain.
    pub weight: u32,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum ServerState {
    /// Waiting for its dependencies.
    Pending,
    /// Its process is being started.
    Starting,
    /// Started; readiness checks are running.
    Checking,
    Ready,
    /// Was ready; liveness checks now fail.
    Unhealthy,
    /// Exited and waiting to be started again.
    Restarting,
    /// Failed to start too many times in a row; no more restarts.
    CrashLooping,
    /// Did not become ready (or cannot start at all).
    Failed,
    Stopping,
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

    /// The state's name in JSON, docs and text output (`crash-looping`).
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

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct InstanceStatus {
    pub id: String,
    /// The server revision it runs.
    #[serde(default)]
    pub revision: u64,
    pub pid: Option<u32>,
    /// The container's short id, for an instance that runs in one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub container: Option<String>,
    pub state: ServerState,
    pub restarts: u32,
    pub port: Option<u16>,
    pub last_check: Option<CheckSummary>,
}

/// The latest result of an instance's checks.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CheckSummary {
    pub at: String,
    /// `mcp`, `http`, `tcp`, `command` or `file`.
    pub kind: String,
    pub passed: bool,
    pub took_ms: f64,
    /// What passed ("modern 2026-07-28, mcp-sample-server 0.1.0, 4 tools") or why it failed.
    pub detail: String,
}

/// `POST /v1/check`: every check of every running instance, once.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CheckRun {
    pub passed: bool,
    pub results: Vec<InstanceChecks>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct InstanceChecks {
    pub server: String,
    pub instance: String,
    pub checks: Vec<CheckSummary>,
}

/// Something that happened, for `up`'s progress, `events` and later the audit trail.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Event {
    pub time: String,
    pub kind: EventKind,
    pub server: Option<String>,
    /// The server revision it concerns, when there is one.
    #[serde(default)]
    pub revision: Option<u64>,
    /// The deployment it happened in, when there is one.
    #[serde(default)]
    pub deployment: Option<u64>,
    pub instance: Option<String>,
    pub message: String,
}

/// `GET /v1/events`: an [`Event`] as the state store recorded it, with its id (1, 2, … in
/// recording order; page with `?after=ID`). Serialized as the event's fields plus `id`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EventRecord {
    pub id: u64,
    #[serde(flatten)]
    pub event: Event,
}

/// `GET /v1/audit`: one tool call through the gateway (never its arguments or result).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AuditEntry {
    /// 1, 2, … in recording order; page with `?after=ID`.
    pub id: u64,
    /// When the call ended.
    pub time: String,
    /// The name of the gateway token used (never the token); absent without tokens.
    pub token: Option<String>,
    pub server: String,
    /// The server revision that answered.
    pub revision: u64,
    pub tool: String,
    /// `ok`, `tool_error`, `jsonrpc_error` or `transport_error`.
    pub outcome: ToolOutcome,
    pub duration_ms: f64,
}

/// `GET /v1/history`: one deployment, with the fleet revision it deployed.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct HistoryEntry {
    /// The deployment's id (1, 2, … in start order).
    pub deployment: u64,
    /// The fleet revision it deployed.
    pub revision: u64,
    /// The fleet revision that ran before, if any.
    pub from_revision: Option<u64>,
    pub kind: DeploymentKind,
    /// `in-progress`, `paused`, `succeeded`, `failed`, `rolled-back` or `aborted`.
    pub state: DeploymentState,
    /// Why it was deployed (`--reason`), as recorded with the fleet revision.
    pub reason: Option<String>,
    /// Why the deployment is in its state (e.g. what failed), if said.
    pub outcome: Option<String>,
    pub started_at: String,
    pub finished_at: Option<String>,
    /// Who deployed it (user@host).
    pub author: String,
    /// Server name → the server revision the fleet revision runs.
    pub servers: std::collections::BTreeMap<String, u64>,
}

/// What a recorded deployment did.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum DeploymentKind {
    /// Moved to a new fleet revision.
    Deploy,
    /// Moved back to a stored fleet revision.
    Rollback,
}

impl DeploymentKind {
    /// Every kind, in declaration order.
    pub const ALL: [DeploymentKind; 2] = [DeploymentKind::Deploy, DeploymentKind::Rollback];

    /// The kind's name in JSON, docs and text output (`rollback`).
    pub fn as_str(self) -> &'static str {
        match self {
            DeploymentKind::Deploy => "deploy",
            DeploymentKind::Rollback => "rollback",
        }
    }
}

/// Where a server revision stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum RevisionState {
    /// Recorded, not (yet) serving.
    Pending,
    /// Serving.
    Active,
    /// Was serving; replaced by a newer revision.
    Superseded,
    /// Failed to deploy or was aborted.
    Failed,
}

impl RevisionState {
    /// Every state, in declaration order.
    pub const ALL: [RevisionState; 4] = [
        RevisionState::Pending,
        RevisionState::Active,
        RevisionState::Superseded,
        RevisionState::Failed,
    ];

    /// The state's name in JSON, docs and text output (`superseded`).
    pub fn as_str(self) -> &'static str {
        match self {
            RevisionState::Pending => "pending",
            RevisionState::Active => "active",
            RevisionState::Superseded => "superseded",
            RevisionState::Failed => "failed",
        }
    }
}

/// `GET /v1/servers/{name}/revisions`: one revision of a server.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ServerRevisionEntry {
    pub server: String,
    /// 1, 2, … per server.
    pub number: u64,
    pub state: RevisionState,
    /// The rendered spec's content hash.
    pub hash: String,
    pub created_at: String,
    /// The fleet revision it was first recorded in.
    pub fleet_revision: u64,
    /// Why it is in its state, if said.
    pub reason: Option<String>,
}

/// DESIGN.md §9 event types, plus the instance lifecycle.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum EventKind {
    DeploymentStarted,
    DeploymentCompleted,
    DeploymentFailed,
    ServerStarting,
    ServerReady,
    ServerFailed,
    ServerStopped,
    HealthCheckPassed,
    HealthCheckFailed,
    InstanceExited,
    InstanceRestarted,
    /// An instance an earlier control plane left running was taken over, not restarted.
    InstanceAdopted,
    CrashLooping,
    RollbackStarted,
    RollbackCompleted,
    /// A canary moved to its next traffic step.
    RolloutStep,
    /// A canary was paused (`mcpfleet pause`).
    RolloutPaused,
    /// A canary's revision took every new session.
    RolloutPromoted,
    /// An analysis interval failed.
    PerformanceAlert,
    /// At start, what a control plane that died left unfinished was settled.
    Recovered,
}

impl EventKind {
    /// Every kind, in declaration order.
    pub const ALL: [EventKind; 20] = [
        EventKind::DeploymentStarted,
        EventKind::DeploymentCompleted,
        EventKind::DeploymentFailed,
        EventKind::ServerStarting,
        EventKind::ServerReady,
        EventKind::ServerFailed,
        EventKind::ServerStopped,
        EventKind::HealthCheckPassed,
        EventKind::HealthCheckFailed,
        EventKind::InstanceExited,
        EventKind::InstanceRestarted,
        EventKind::InstanceAdopted,
        EventKind::CrashLooping,
        EventKind::RollbackStarted,
        EventKind::RollbackCompleted,
        EventKind::RolloutStep,
        EventKind::RolloutPaused,
        EventKind::RolloutPromoted,
        EventKind::PerformanceAlert,
        EventKind::Recovered,
    ];

    /// The kind's one name: in JSON, in the state store, in docs and in text output
    /// (`server_ready`).
    pub fn as_str(self) -> &'static str {
        match self {
            EventKind::DeploymentStarted => "deployment_started",
            EventKind::DeploymentCompleted => "deployment_completed",
            EventKind::DeploymentFailed => "deployment_failed",
            EventKind::ServerStarting => "server_starting",
            EventKind::ServerReady => "server_ready",
            EventKind::ServerFailed => "server_failed",
            EventKind::ServerStopped => "server_stopped",
            EventKind::HealthCheckPassed => "health_check_passed",
            EventKind::HealthCheckFailed => "health_check_failed",
            EventKind::InstanceExited => "instance_exited",
            EventKind::InstanceRestarted => "instance_restarted",
            EventKind::InstanceAdopted => "instance_adopted",
            EventKind::CrashLooping => "crash_looping",
            EventKind::RollbackStarted => "rollback_started",
            EventKind::RollbackCompleted => "rollback_completed",
            EventKind::RolloutStep => "rollout_step",
            EventKind::RolloutPaused => "rollout_paused",
            EventKind::RolloutPromoted => "rollout_promoted",
            EventKind::PerformanceAlert => "performance_alert",
            EventKind::Recovered => "recovered",
        }
    }

    /// The kind named `name` (see [`EventKind::as_str`]); `None` for a name this build
    /// does not know (an event a newer version recorded).
    pub fn named(name: &str) -> Option<EventKind> {
        EventKind::ALL
            .into_iter()
            .find(|kind| kind.as_str() == name)
    }
}

/// Each enum is shown by the name its JSON uses, so text and JSON never spell it twice.
macro_rules! display_as_str {
    ($($name:ty),*) => {$(
        impl std::fmt::Display for $name {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.pad(self.as_str())
            }
        }
    )*};
}
display_as_str!(
    EventKind,
    DeploymentState,
    ServerState,
    RolloutStrategy,
    RolloutState,
    Verdict,
    DeploymentKind,
    RevisionState
);

/// `POST /v1/deploy`: a fleet file, as the command line read and validated it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DeployRequest {
    /// The file's text. It holds secret references, never secret values.
    pub source: String,
    /// Where it was read from (absolute): relative paths in it are relative to its folder.
    pub path: String,
    /// The `environments.<name>` overlay.
    pub environment: Option<String>,
    /// Why (`--reason`), kept with the revision.
    pub reason: Option<String>,
    /// Who (user@host), kept with the revision.
    pub author: String,
}

/// `POST /v1/rollback`: go back to a stored revision.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RollbackRequest {
    /// One server, or (absent) the whole fleet.
    pub server: Option<String>,
    /// A server revision (with `server`) or a fleet revision; absent: the one before.
    pub to: Option<u64>,
    pub reason: Option<String>,
    /// Who (user@host). Over the TCP listener the admin token says who instead
    /// (`admin:<token name>`), so it may be left out there.
    #[serde(default)]
    pub author: String,
}

/// `GET /v1/deployed`: one server as it runs.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DeployedServer {
    pub name: String,
    /// The revision serving it.
    pub revision: u64,
    /// The spec's content hash (equal hashes: unchanged).
    pub hash: String,
    /// The rendered spec, secrets shown as `***`.
    pub spec: serde_json::Value,
}

/// `GET /v1/gateway/tokens`: one bearer token the running gateway accepts (its hash only).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub struct GatewayToken {
    pub name: String,
    /// The token's SHA-256, hex.
    pub sha256: String,
    /// The servers it may reach, or `["*"]`.
    pub servers: Vec<String>,
}

/// The answer to `POST /v1/servers/{name}/restart`: the instances replaced, one at a time.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Restarted {
    pub server: String,
    /// The revision that was restarted (still the one serving).
    pub revision: u64,
    /// How many instances were replaced.
    pub instances: usize,
}

/// An error body: every non-2xx answer carries one.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ApiError {
    pub error: String,
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The text name and the JSON name are one: a kind added to the enum but not to
    /// `as_str` (or renamed in one place only) fails here.
    #[test]
    fn every_enum_prints_the_name_its_json_uses() {
        fn json_name(value: impl Serialize) -> String {
            serde_json::to_value(value)
                .unwrap()
                .as_str()
                .unwrap()
                .to_string()
        }
        for kind in EventKind::ALL {
            assert_eq!(json_name(kind), kind.to_string());
            assert_eq!(EventKind::named(kind.as_str()), Some(kind));
        }
        for state in DeploymentState::ALL {
            assert_eq!(json_name(state), state.to_string());
        }
        for state in ServerState::ALL {
            assert_eq!(json_name(state), state.to_string());
        }
        for strategy in RolloutStrategy::ALL {
            assert_eq!(json_name(strategy), strategy.to_string());
        }
        for state in RolloutState::ALL {
            assert_eq!(json_name(state), state.to_string());
        }
        for verdict in Verdict::ALL {
            assert_eq!(json_name(verdict), verdict.to_string());
        }
        for kind in DeploymentKind::ALL {
            assert_eq!(json_name(kind), kind.to_string());
        }
        for state in RevisionState::ALL {
            assert_eq!(json_name(state), state.to_string());
        }
        assert_eq!(EventKind::named("from_the_future"), None);
        assert_eq!(format!("{:<14}|", ServerState::Ready), "ready         |");
    }

    /// The typed fields are the strings `--output json` has always had, byte for byte, and
    /// read back as they were written.
    #[test]
    fn typed_fields_keep_their_json_strings() {
        let interval = AnalysisSummary {
            at: "2026-12-05T06:00:00Z".into(),
            step: 1,
            verdict: Verdict::Inconclusive,
            requests: 0,
            error_rate: None,
            canary_p95_ms: None,
            stable_p95_ms: None,
            reason: "too little traffic".into(),
        };
        let rollout = RolloutStatus {
            strategy: RolloutStrategy::Canary,
            from_revision: 1,
            to_revision: 2,
            step: 1,
            steps: 3,
            weight: 10,
            state: RolloutState::WaitingForAPassingAnalysis,
            failures_in_a_row: 0,
            last_analysis: Some(interval.clone()),
            analyses: vec![interval],
        };
        let interval_json = r#"{"at":"2026-12-05T06:00:00Z","step":1,"verdict":"inconclusive","requests":0,"error_rate":null,"canary_p95_ms":null,"stable_p95_ms":null,"reason":"too little traffic"}"#;
        let json = format!(
            r#"{{"strategy":"canary","from_revision":1,"to_revision":2,"step":1,"steps":3,"weight":10,"state":"waiting-for-a-passing-analysis","failures_in_a_row":0,"last_analysis":{interval_json},"analyses":[{interval_json}]}}"#
        );
        assert_eq!(serde_json::to_string(&rollout).unwrap(), json);
        assert_eq!(
            serde_json::from_str::<RolloutStatus>(&json).unwrap(),
            rollout
        );
        // What an older control plane answers (no `analyses`, no `step`) still reads.
        let older = r#"{"strategy":"canary","from_revision":1,"to_revision":2,"step":1,"steps":3,"weight":10,"state":"waiting-for-a-passing-analysis","failures_in_a_row":0,"last_analysis":{"at":"2026-12-05T06:00:00Z","verdict":"inconclusive","requests":0,"error_rate":null,"canary_p95_ms":null,"stable_p95_ms":null,"reason":"too little traffic"}}"#;
        let read = serde_json::from_str::<RolloutStatus>(older).unwrap();
        assert!(read.analyses.is_empty());
        assert_eq!(
            read.last_analysis.map(|a| (a.step, a.verdict)),
            Some((0, Verdict::Inconclusive))
        );

        let revision = ServerRevisionEntry {
            server: "api".into(),
            number: 2,
            state: RevisionState::Superseded,
            hash: "ab12".into(),
            created_at: "2026-12-05T06:00:00Z".into(),
            fleet_revision: 3,
            reason: None,
        };
        let json = r#"{"server":"api","number":2,"state":"superseded","hash":"ab12","created_at":"2026-12-05T06:00:00Z","fleet_revision":3,"reason":null}"#;
        assert_eq!(serde_json::to_string(&revision).unwrap(), json);
        assert_eq!(
            serde_json::from_str::<ServerRevisionEntry>(json).unwrap(),
            revision
        );

        let names = |value: serde_json::Value| value.as_str().unwrap().to_owned();
        assert_eq!(
            Verdict::ALL.map(|v| names(serde_json::to_value(v).unwrap())),
            ["pass", "fail", "inconclusive"]
        );
        assert_eq!(
            RolloutState::ALL.map(|s| names(serde_json::to_value(s).unwrap())),
            [
                "progressing",
                "paused",
                "waiting-for-promote",
                "waiting-for-a-passing-analysis"
            ]
        );
        assert_eq!(
            DeploymentState::ALL.map(|s| names(serde_json::to_value(s).unwrap())),
            [
                "in-progress",
                "succeeded",
                "failed",
                "rolled-back",
                "paused",
                "stopping",
                "stopped",
                "aborted"
            ]
        );
        assert_eq!(
            DeploymentKind::ALL.map(|k| names(serde_json::to_value(k).unwrap())),
            ["deploy", "rollback"]
        );
        assert_eq!(
            RevisionState::ALL.map(|s| names(serde_json::to_value(s).unwrap())),
            ["pending", "active", "superseded", "failed"]
        );
    }
}
