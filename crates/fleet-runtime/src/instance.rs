//! What the engine asks a runtime to run, and what the runtime reports back.

use fleet_spec::model::Restart;
use serde::{Deserialize, Serialize};
use std::fmt;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::pin::Pin;
use std::time::{Duration, SystemTime};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::sync::mpsc;

/// Names one instance: server, revision and replica, e.g. `search-r3-1`.
///
/// The process runtime uses it in file names (logs, pidfiles), so it must be 1–200
/// characters of `A-Z a-z 0-9 . _ -` and must not start with `.` or `-`; `start` checks.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(transparent)]
pub struct InstanceId(pub String);

impl InstanceId {
    /// The id as a string slice.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// Why this id cannot name files, if it cannot.
    pub(crate) fn file_name_problem(&self) -> Option<&'static str> {
        let s = self.0.as_str();
        if s.is_empty() || s.len() > 200 {
            Some("must be 1 to 200 characters long")
        } else if s.starts_with(['.', '-']) {
            Some("must not start with `.` or `-`")
        } else if !s
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
        {
            Some("may contain only ASCII letters, digits, `.`, `_` and `-`")
        } else {
            None
        }
    }
}

impl fmt::Display for InstanceId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl From<&str> for InstanceId {
    fn from(s: &str) -> Self {
        InstanceId(s.to_owned())
    }
}

/// Everything a runtime needs to run one instance. Fully rendered: no templates, no secret
/// references, no relative paths the runtime would have to guess about — so its arguments
/// and environment may hold secret values, and its `Debug` shows neither.
#[derive(Clone)]
pub struct InstanceSpec {
    pub id: InstanceId,
    pub server: String,
    pub revision: u64,
    /// What runs: a local program or an image.
    pub launch: Launch,
    /// The program's arguments (for an image: its command, replacing the image's CMD when
    /// not empty).
    pub args: Vec<String>,
    /// For a process, added to (and overriding) the small inherited environment (see
    /// [`process::INHERITED_ENV`](crate::process::INHERITED_ENV)); for a container, added to
    /// the image's.
    pub env: Vec<(String, String)>,
    pub io: InstanceIo,
    pub restart: Restart,
    /// How long a stopping instance gets after SIGTERM before SIGKILL.
    pub stop_grace: Duration,
    /// The deployment that starts it (the state store's id), for the runtime's records — a
    /// container's `io.mcpfleet.deployment` label; `None` outside a deployment.
    pub deployment: Option<u64>,
}

impl std::fmt::Debug for InstanceSpec {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let env_names: Vec<&str> = self.env.iter().map(|(k, _)| k.as_str()).collect();
        f.debug_struct("InstanceSpec")
            .field("id", &self.id)
            .field("server", &self.server)
            .field("revision", &self.revision)
            .field("launch", &self.launch)
            .field("args", &format_args!("[{} arguments]", self.args.len()))
            .field("env", &env_names)
            .field("io", &self.io)
            .field("stop_grace", &self.stop_grace)
            .finish_non_exhaustive()
    }
}

/// What an instance runs. Each runtime starts one kind and refuses the other
/// ([`StartError::WrongRuntime`](crate::StartError::WrongRuntime)).
#[derive(Debug, Clone, PartialEq)]
pub enum Launch {
    /// A local process.
    Process {
        /// A path (absolute, or relative to `cwd` when it contains a `/`) or a bare name
        /// looked up on the instance's `PATH`.
        program: String,
        /// Working directory; `None` = the control plane's.
        cwd: Option<PathBuf>,
    },
    /// A container, run by a container engine.
    Container(ContainerLaunch),
    /// A pod of a Kubernetes Deployment.
    Pod(PodLaunch),
}

impl Launch {
    /// What runs, for messages: "a process" or "a container".
    pub fn kind(&self) -> &'static str {
        match self {
            Launch::Process { .. } => "a process",
            Launch::Container(_) => "a container",
            Launch::Pod(_) => "a pod",
        }
    }
}

/// A container: its image, how it is confined and the secrets it gets as files (whose
/// values its `Debug` hides).
#[derive(Debug, Clone, PartialEq)]
pub struct ContainerLaunch {
    /// An image reference: `name:tag`, `name@sha256:…` or an image id.
    pub image: String,
    /// Replaces the image's entrypoint; `None` keeps it.
    pub entrypoint: Option<String>,
    /// Working directory inside the container; `None` = the image's.
    pub workdir: Option<String>,
    /// `user[:group]` inside the container; `None` = the image's user unless that is root
    /// or unset, then `65534:65534` (nobody).
    pub user: Option<String>,
    pub network: ContainerNetwork,
    pub resources: ContainerResources,
    pub volumes: Vec<ContainerVolume>,
    /// A read-only root filesystem (a tmpfs `/tmp` stays writable).
    pub read_only_root: bool,
    pub pull: PullPolicy,
    /// Secrets mounted as read-only files: never in the container's environment or
    /// command line, which the engine shows to anyone who may `inspect` it.
    pub secrets: Vec<ContainerSecret>,
}

/// A pod of a Kubernetes Deployment, one per revision of a server.
///
/// Unlike the other launches this carries no resolved value: a pod's command, environment
/// and secret files are its template's, the same for every pod, and secrets in it are
/// references to Kubernetes Secrets that the kubelet resolves (`secretKeyRef`, `secret`
/// volumes). So an instance spec with a pod launch has empty `args` and `env` — the
/// Kubernetes runtime refuses any — and a secret's value never passes through mcpfleet.
#[derive(Debug, Clone, PartialEq)]
pub struct PodLaunch {
    /// The revision's `apps/v1` Deployment as `fleet_manifests::revision_deployment`
    /// renders it: named `<server>-r<revision>`, selecting its pods by
    /// `mcpfleet.io/{fleet,server,revision}`, with the hardened pod template. Its
    /// `spec.replicas` is the runtime's to set.
    pub deployment: serde_json::Value,
}

/// A secret handed to a container as a read-only file at `target`.
#[derive(Clone, PartialEq, Eq)]
pub struct ContainerSecret {
    /// An absolute path inside the container.
    pub target: String,
    /// The file's content.
    pub value: String,
}

impl std::fmt::Debug for ContainerSecret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ContainerSecret")
            .field("target", &self.target)
            .field("value", &"***")
            .finish()
    }
}

/// The network a container joins.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ContainerNetwork {
    /// None at all: only loopback inside the container.
    None,
    /// The engine's default bridge network.
    Bridge,
    /// A network by name, created beforehand.
    Named(String),
}

/// Limits on what a container may use; `None` = no limit.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct ContainerResources {
    /// CPUs, fractions allowed.
    pub cpus: Option<f64>,
    pub memory_bytes: Option<u64>,
    /// Processes and threads.
    pub pids: Option<u32>,
}

/// A host path or a named volume mounted into a container.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ContainerVolume {
    /// An absolute host path, or a volume name.
    pub source: String,
    /// An absolute path inside the container.
    pub target: String,
    pub read_only: bool,
}

/// When an image is pulled from its registry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PullPolicy {
    /// Never: a missing image is an error.
    Never,
    /// When the engine does not have it.
    IfMissing,
    /// Before every start.
    Always,
}

/// How the instance is reached, which decides what its stdin and stdout are for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum InstanceIo {
    /// stdin/stdout carry the MCP protocol; the runtime hands them to the caller as a
    /// [`Reach::Stdio`] attachment. stderr goes to the log.
    Stdio,
    /// The instance serves on `port` (the engine renders it into the command line); the
    /// runtime reports where that port is reachable as a [`Reach::Address`] — for a
    /// process, `127.0.0.1:port`; a runtime that maps ports reports the mapped one. stdin
    /// is empty, stdout and stderr go to the log.
    Listen { port: u16 },
    /// No way in that the runtime knows of (a worker, a test program): [`Reach::Nowhere`].
    /// stdin is empty, stdout and stderr go to the log.
    Logged,
}

/// The protocol channel of a stdio instance: what the runtime hands the caller in
/// [`Reach::Stdio`], and what the gateway and the MCP checks talk over.
///
/// Boxed halves, so that nothing above the runtime depends on how the bytes travel: a
/// child's pipes, a container's attached stream, or an in-memory duplex to an in-process
/// server in a test all fit.
///
/// Closing `stdin` (dropping it) is how a stdio server is asked to exit: the runtime cannot
/// close a handle it has given away, so the caller closes it before
/// [`stop`](crate::Runtime::stop), which then gives the instance half its grace period to
/// exit on its own before forcing it. A restarted instance gets a new attachment; the old
/// one reaches EOF / broken pipe.
pub struct StdioAttachment {
    /// Requests to the server.
    pub stdin: Pin<Box<dyn AsyncWrite + Send>>,
    /// The server's answers and notifications.
    pub stdout: Pin<Box<dyn AsyncRead + Send>>,
}

impl StdioAttachment {
    /// An attachment over any writer (the server's input) and reader (its output).
    pub fn new(
        stdin: impl AsyncWrite + Send + 'static,
        stdout: impl AsyncRead + Send + 'static,
    ) -> Self {
        StdioAttachment {
            stdin: Box::pin(stdin),
            stdout: Box::pin(stdout),
        }
    }
}

impl fmt::Debug for StdioAttachment {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("StdioAttachment")
    }
}

/// Where a running instance is reachable: what the caller talks to it over.
#[derive(Debug)]
pub enum Reach {
    /// Over its stdin/stdout ([`InstanceIo::Stdio`]).
    Stdio(StdioAttachment),
    /// At a network address ([`InstanceIo::Listen`]).
    Address(SocketAddr),
    /// Not at all: the spec asked for no way in ([`InstanceIo::Logged`]).
    Nowhere,
}

/// Which of the runtime's own objects runs an instance at the moment: what status shows
/// and logs name. Never needed to reach the instance (that is [`Reach`]) or to control it
/// (that is the [`InstanceId`]).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum InstanceHandle {
    /// A local process (and the process group it leads).
    Process { pid: u32 },
    /// A container, by its full engine id.
    Container { id: String },
    /// A Kubernetes pod, by name (in the runtime's namespace).
    Pod { name: String },
}

impl InstanceHandle {
    /// The process id, for a runtime that runs processes.
    pub fn pid(&self) -> Option<u32> {
        match self {
            InstanceHandle::Process { pid } => Some(*pid),
            InstanceHandle::Container { .. } | InstanceHandle::Pod { .. } => None,
        }
    }

    /// The container id, short (12 characters) as `docker ps` and `podman ps` show it, for
    /// a runtime that runs containers.
    pub fn container(&self) -> Option<&str> {
        match self {
            InstanceHandle::Process { .. } | InstanceHandle::Pod { .. } => None,
            InstanceHandle::Container { id } => Some(id.get(..12).unwrap_or(id)),
        }
    }
}

impl fmt::Display for InstanceHandle {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            InstanceHandle::Process { pid } => write!(f, "pid {pid}"),
            // The short form `docker ps` and `podman ps` show.
            InstanceHandle::Container { .. } => {
                write!(f, "container {}", self.container().unwrap_or_default())
            }
            InstanceHandle::Pod { name } => write!(f, "pod {name}"),
        }
    }
}

/// An instance that runs but that this runtime did not start: left by an earlier control
/// plane (see [`Runtime::discover`](crate::Runtime::discover)).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Discovered {
    pub id: InstanceId,
    pub server: String,
    pub revision: u64,
    /// What runs it (the recorded process, verified to be that very process).
    pub handle: InstanceHandle,
    /// Whether [`adopt`](crate::Runtime::adopt) can take it over (it still runs, and the
    /// runtime can reach it without the streams the killed control plane held).
    pub adoptable: bool,
}

/// One leftover of an earlier control plane that
/// [`Runtime::reap_leftovers`](crate::Runtime::reap_leftovers) dealt with. Its record is
/// gone afterwards in every case.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reaped {
    /// Where the runtime had recorded it (a pidfile's path for processes).
    pub record: String,
    /// The instance it was, when the record could be read.
    pub id: Option<InstanceId>,
    pub outcome: ReapOutcome,
}

/// What reaping found of a leftover and did with it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ReapOutcome {
    /// It was still running and has been stopped: `leader` is whether the recorded process
    /// (container) itself was among what ran, `members` how many other processes of its
    /// group there were, `forced` whether it had to be killed.
    Stopped {
        leader: bool,
        members: usize,
        forced: bool,
    },
    /// Some processes survived even SIGKILL (stuck in the kernel); their PIDs.
    Survivors { pids: Vec<u32> },
    /// Nothing of it was running any more.
    Gone,
    /// The record names a process that is not ours any more (a reused PID: its start time
    /// differs); it was not touched.
    PidReused,
    /// The record could not be read or parsed.
    Unreadable { error: String },
}

/// What happened to an instance, in order.
///
/// A typical life: `Running` → (`Exited` → `BackingOff` → `Running`)* → `Exited` → `Stopped`.
/// After `Exited` the runtime sends, depending on the restart policy: `BackingOff` (a new
/// start follows), `CrashLooping` (no more starts), or nothing (the policy says not to
/// restart; the instance stays known, idle, until `stop`). A failed re-spawn sends
/// `SpawnFailed` instead of `Running`/`Exited` and counts as a failed start. `Stopped` is
/// always last.
#[derive(Debug)]
pub enum Lifecycle {
    /// The instance runs (again): `reach` says where to talk to it — a stdio attachment is
    /// new after every restart, the old one reaches EOF / broken pipe — and `handle` what
    /// runs it now.
    Running {
        reach: Reach,
        handle: InstanceHandle,
    },
    /// The process ended (by itself, or because it was stopped or restarted).
    Exited {
        code: Option<i32>,
        signal: Option<i32>,
        ran_for: Duration,
        /// Whether the kernel killed it for exceeding its memory limit (containers; a
        /// process runtime cannot tell).
        out_of_memory: OutOfMemory,
        /// Its last lines of output, oldest first, when it failed by itself (the reason is
        /// usually among them); empty otherwise, and from runtimes that do not collect them
        /// (processes: their log has them).
        last_output: Vec<String>,
    },
    /// The next start comes after `delay`; `attempt` counts consecutive failed starts.
    BackingOff { attempt: u32, delay: Duration },
    /// `failures` consecutive failed starts reached `give_up_after`: no more restarts until
    /// an explicit [`restart`](crate::Runtime::restart).
    CrashLooping { failures: u32 },
    /// Stopped by [`stop`](crate::Runtime::stop); final.
    Stopped,
    /// A re-spawn failed (the program or working directory vanished, …). The message names
    /// what is missing and what to do.
    SpawnFailed { error: String },
}

/// A started instance: its id and its lifecycle events.
#[derive(Debug)]
pub struct Instance {
    pub id: InstanceId,
    /// Unbounded so the supervisor never waits for the engine; a dropped receiver is fine.
    pub events: mpsc::UnboundedReceiver<Lifecycle>,
}

/// Where an instance is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum InstanceState {
    /// Being spawned.
    Starting,
    Running,
    /// Waiting to start again.
    BackingOff,
    /// Gave up restarting.
    CrashLooping,
    /// Ended and will not restart (restart policy), until `restart` or `stop`.
    Exited,
    /// `stop` is in progress.
    Stopping,
    Stopped,
}

impl fmt::Display for InstanceState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            InstanceState::Starting => "starting",
            InstanceState::Running => "running",
            InstanceState::BackingOff => "backing-off",
            InstanceState::CrashLooping => "crash-looping",
            InstanceState::Exited => "exited",
            InstanceState::Stopping => "stopping",
            InstanceState::Stopped => "stopped",
        })
    }
}

/// How a process ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct ExitInfo {
    /// Exit code, when it exited by itself.
    pub code: Option<i32>,
    /// The signal that killed it, if one did.
    pub signal: Option<i32>,
    pub ran_for: Duration,
    /// Whether the kernel killed it for exceeding its memory limit (containers; a process
    /// runtime cannot tell).
    #[serde(default)]
    pub out_of_memory: OutOfMemory,
}

/// Whether the kernel's OOM killer ended an instance.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum OutOfMemory {
    /// Not for memory, as far as the runtime can tell (processes: it cannot).
    #[default]
    No,
    /// The container engine reports an OOM kill.
    Reported,
    /// Killed by SIGKILL that mcpfleet did not send, while limited to `limit` bytes: the
    /// kernel's OOM killer is the usual sender. Engines that do not report OOM kills leave
    /// only this (Podman 4 on cgroup v1: its conmon notices the kill but the engine's
    /// `OOMKilled` stays false).
    Likely { limit: u64 },
}

impl OutOfMemory {
    /// Appended to an exit's description (`exit code 137, out of memory: …`); empty for
    /// [`OutOfMemory::No`].
    pub fn describe(self) -> String {
        match self {
            OutOfMemory::No => String::new(),
            OutOfMemory::Reported => {
                ", out of memory: killed for exceeding its memory limit".to_owned()
            }
            OutOfMemory::Likely { limit } => format!(
                ", probably out of memory: killed by SIGKILL under its {} memory limit (the \
                 container engine does not report OOM kills; raise `resources.memory` if the \
                 server needs more)",
                mebibytes(limit)
            ),
        }
    }
}

/// `32 MiB`, `2 GiB` or `1000000 bytes`: a memory limit exactly, as people write it.
fn mebibytes(bytes: u64) -> String {
    const MIB: u64 = 1 << 20;
    const GIB: u64 = 1 << 30;
    if bytes >= GIB && bytes.is_multiple_of(GIB) {
        format!("{} GiB", bytes / GIB)
    } else if bytes >= MIB && bytes.is_multiple_of(MIB) {
        format!("{} MiB", bytes / MIB)
    } else {
        format!("{bytes} bytes")
    }
}

impl ExitInfo {
    /// A non-zero exit or death by signal.
    pub fn is_failure(&self) -> bool {
        self.code != Some(0)
    }
}

/// A snapshot of one instance, for `mcpfleet status` and the engine.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct InstanceStatus {
    pub id: InstanceId,
    pub server: String,
    pub revision: u64,
    /// What runs the instance now (its current process), while something does.
    pub handle: Option<InstanceHandle>,
    pub state: InstanceState,
    /// Starts after the first (automatic and explicit).
    pub restarts: u32,
    pub last_exit: Option<ExitInfo>,
    /// When the current (or last) process started.
    pub started_at: Option<SystemTime>,
}

#[cfg(test)]
mod tests {
    use super::*;
    use fleet_spec::model::RestartPolicyKind;

    #[test]
    fn debug_output_never_shows_arguments_or_environment_values() {
        let spec = InstanceSpec {
            id: InstanceId::from("web-r1-1"),
            server: "web".into(),
            revision: 1,
            launch: Launch::Process {
                program: "server".into(),
                cwd: None,
            },
            args: vec!["--token".into(), "s3cr3t-arg".into()],
            env: vec![("API_KEY".into(), "s3cr3t-env".into())],
            io: InstanceIo::Logged,
            restart: Restart {
                policy: RestartPolicyKind::Never,
                backoff_initial: Duration::from_millis(100),
                backoff_max: Duration::from_secs(1),
                backoff_multiplier: 2.0,
                jitter: 0.0,
                give_up_after: 1,
                stable_after: Duration::from_secs(1),
            },
            stop_grace: Duration::from_secs(1),
            deployment: None,
        };
        let shown = format!("{spec:?}");
        assert!(
            shown.contains("API_KEY") && shown.contains("2 arguments"),
            "{shown}"
        );
        assert!(!shown.contains("s3cr3t"), "{shown}");
    }
}
