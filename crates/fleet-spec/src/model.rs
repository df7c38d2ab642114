//! The validated fleet: trusted types the planner and the runtime work from.
//!
//! Strings that reach a process or a URL are [`Text`]: the template as written plus the form
//! shown to people (secrets as `***`, per-instance values such as `{{ port }}` as
//! placeholders). Serializing a model gives the shown form only, so plan output, hashes and
//! logs never contain a secret value.

use crate::diag::Span;
pub use crate::raw::{
    Condition, Era, LogFormat, OnAbort, OnFailure, PodReach, Pull, RestartPolicyKind, RuntimeKind,
    Spread, Strategy, TaintEffect, TolerationOperator, WebhookEvent, WebhookFormat,
};
use serde::{Serialize, Serializer};
use std::collections::{BTreeMap, BTreeSet};
use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::time::Duration;

#[derive(Debug, Clone, Serialize)]
pub struct ValidFleet {
    pub name: String,
    /// The environment overlay applied, if any.
    pub environment: Option<String>,
    /// Directory of the fleet file; relative paths resolve against it.
    #[serde(skip)]
    pub base_dir: PathBuf,
    /// `vars`, as written and as shown; instances render them again with real values.
    pub vars: BTreeMap<String, Text>,
    pub secrets: BTreeMap<String, SecretRef>,
    /// Where the fleet runs. Whether its servers can run there (a local program cannot run
    /// on Kubernetes) is for whoever runs or renders it to say, not this model.
    pub runtime: RuntimeKind,
    /// How the fleet runs on Kubernetes, every default filled; local `up` ignores it.
    pub kubernetes: Kubernetes,
    pub gateway: Gateway,
    pub admin: Admin,
    /// Left out when empty, as the fleet read before the key existed.
    #[serde(skip_serializing_if = "Notifications::is_empty")]
    pub notifications: Notifications,
    /// In file order.
    pub servers: Vec<Server>,
    pub logging: Logging,
    /// Left out when off, as the fleet read before the key existed.
    #[serde(skip_serializing_if = "Tracing::is_off")]
    pub tracing: Tracing,
    /// Left out when it is the state directory's SQLite file, as the fleet read before
    /// the key existed.
    #[serde(skip_serializing_if = "State::is_local")]
    pub state: State,
}

impl ValidFleet {
    pub fn server(&self, name: &str) -> Option<&Server> {
        self.servers.iter().find(|s| s.name == name)
    }
}

/// Where a secret's value is read from when it is needed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum SecretRef {
    Env(String),
    File(PathBuf),
}

#[derive(Debug, Clone, Serialize)]
pub struct Gateway {
    pub listen: SocketAddr,
    /// Where `gateway.listen` is written, if it is: what diagnostics about the gateway's
    /// exposure point at.
    #[serde(skip)]
    pub listen_span: Option<Span>,
    pub tokens: Vec<TokenRef>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rate_limit: Option<RateLimit>,
    pub max_requests_in_flight: u32,
    pub max_sessions: u32,
    pub max_sessions_per_token: u32,
    #[serde(serialize_with = "duration_text")]
    pub session_idle_timeout: Duration,
    #[serde(serialize_with = "duration_text")]
    pub upstream_timeout: Duration,
    /// `None`: plain HTTP (the listen address is then loopback).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tls: Option<GatewayTls>,
    #[serde(serialize_with = "duration_text")]
    pub header_read_timeout: Duration,
    #[serde(serialize_with = "duration_text")]
    pub body_read_timeout: Duration,
    #[serde(serialize_with = "duration_text")]
    pub idle_timeout: Duration,
    /// The keys that seal session ids, each from a secret (shown as `***`); empty: each
    /// gateway draws its own.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub session_keys: Vec<Text>,
    /// The secrets the keys read: what a gateway needs, e.g. in the pods a Kubernetes
    /// manifest gives them to.
    #[serde(skip)]
    pub session_key_secrets: BTreeSet<String>,
}

impl Gateway {
    pub const DEFAULT_MAX_REQUESTS_IN_FLIGHT: u32 = 64;
    pub const DEFAULT_MAX_SESSIONS: u32 = 20_000;
    pub const DEFAULT_MAX_SESSIONS_PER_TOKEN: u32 = 5_000;
    pub const DEFAULT_SESSION_IDLE_TIMEOUT: Duration = Duration::from_secs(30 * 60);
    pub const DEFAULT_UPSTREAM_TIMEOUT: Duration = Duration::from_secs(60);
    pub const DEFAULT_HEADER_READ_TIMEOUT: Duration = Duration::from_secs(10);
    pub const DEFAULT_BODY_READ_TIMEOUT: Duration = Duration::from_secs(30);
    pub const DEFAULT_IDLE_TIMEOUT: Duration = Duration::from_secs(60);
}

/// Who ends the TLS of the gateway's clients.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum GatewayTls {
    /// The gateway, showing this certificate chain and key (PEM files, resolved against
    /// the fleet file's directory).
    Files { cert: PathBuf, key: PathBuf },
    /// A proxy in front of the gateway; the gateway serves plain HTTP.
    TerminatedByProxy,
}

/// Requests per token (or client): `per_second` sustained, `burst` at once.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct RateLimit {
    pub per_second: f64,
    pub burst: u32,
}

/// The admin side beyond the unix socket.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Admin {
    /// The TCP admin listener, always on a loopback address: reads for anyone, rollout
    /// actions with an admin token.
    pub listen: Option<SocketAddr>,
    /// Who may act over the TCP listener. Left out when empty, as the fleet read before the key existed (a
    /// running control plane compares these settings).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub tokens: Vec<AdminTokenRef>,
}

impl Admin {
    /// The admin port on a pod's network (`mcpfleet up --pod-network`, which the rendered
    /// control plane runs): `listen`'s port, else this one.
    pub const DEFAULT_POD_PORT: u16 = 7471;

    /// The port of the admin listener on a pod's network: Prometheus's scrape and the
    /// probes.
    pub fn pod_port(&self) -> u16 {
        self.listen
            .map_or(Self::DEFAULT_POD_PORT, |listen| listen.port())
    }
}

/// An admin token, known only by its hash.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct AdminTokenRef {
    pub name: String,
    /// Lowercase hex.
    pub sha256: String,
}

/// The log of the control plane and its gateway.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct Logging {
    /// The format when the command line names none.
    pub format: LogFormat,
}

/// Traces of the control plane and its gateway.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct Tracing {
    /// `None`: the file exports no spans (`OTEL_EXPORTER_OTLP_ENDPOINT` may still turn
    /// them on when the control plane starts).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub otlp: Option<Otlp>,
}

impl Tracing {
    pub fn is_off(&self) -> bool {
        self.otlp.is_none()
    }
}

/// Where the control plane keeps its state store.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct State {
    /// `None`: the SQLite database in the state directory.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub postgres: Option<Postgres>,
}

impl State {
    /// Whether the store is the state directory's own SQLite file.
    pub fn is_local(&self) -> bool {
        self.postgres.is_none()
    }
}

/// A PostgreSQL database holding the state store.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Postgres {
    /// The connection URL; a password in it comes from a secret, shown as `***`.
    pub url: Text,
    /// The secrets the URL reads (`secret('…')` in it): what a control plane needs to
    /// connect, e.g. in the pod a Kubernetes manifest gives them to.
    #[serde(skip)]
    pub secrets: BTreeSet<String>,
    /// Where the URL is written.
    #[serde(skip)]
    pub span: Span,
    /// How long the leader's lease lasts unless renewed.
    #[serde(serialize_with = "duration_text")]
    pub lease: Duration,
}

impl Postgres {
    pub const DEFAULT_LEASE: Duration = Duration::from_secs(15);
}

/// Spans exported over OTLP/HTTP.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Otlp {
    /// The collector's base URL (spans go to `<endpoint>/v1/traces`); `None`: the
    /// environment's `OTEL_EXPORTER_OTLP_ENDPOINT`. May hold a secret, shown as `***`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub endpoint: Option<Text>,
    /// Sent with every export; values may hold secrets.
    pub headers: BTreeMap<String, Text>,
    /// The share of new traces kept, in `0..=1`.
    pub sample_ratio: f64,
    pub service_name: String,
}

impl Otlp {
    pub const DEFAULT_SERVICE_NAME: &str = "mcpfleet";
}

/// A gateway token, known only by its hash.
#[derive(Debug, Clone, Serialize)]
pub struct TokenRef {
    pub name: String,
    pub sha256: String,
    /// Server names, or `["*"]`.
    pub servers: Vec<String>,
}

#[derive(Debug, Clone, Serialize)]
pub struct Server {
    pub name: String,
    /// Where the server's name is written, for diagnostics about the server as a whole.
    #[serde(skip)]
    pub span: Span,
    pub transport: Transport,
    pub depends_on: Vec<Dependency>,
    pub priority: i32,
    pub replicas: u32,
    pub era: Era,
    pub on_failure: OnFailure,
    pub restart: Restart,
    pub health: Health,
    pub rollout: Rollout,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    /// Kubernetes only. Any server may set it, but only `image:` servers are rendered to
    /// Kubernetes objects (a HorizontalPodAutoscaler); local `up` ignores it.
    // Left out of the spec when unset (here and below) so that a server's content hash,
    // which decides whether a deployment touches it, is what it was before these keys.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub autoscale: Option<Autoscale>,
    /// Kubernetes only: placement and egress of the server's pods; local `up` ignores it.
    #[serde(skip_serializing_if = "ServerKubernetes::is_empty")]
    pub kubernetes: ServerKubernetes,
}

/// The fleet on Kubernetes, with every default filled.
///
/// Names the file sets are checked against Kubernetes' rules. Names derived from the
/// fleet's (the namespace, the default Secret) are checked only when the fleet says it
/// is for Kubernetes (`runtime: kubernetes` or a `kubernetes:` block), so a local fleet
/// named `my_tools` stays valid; a renderer of any other fleet checks them itself
/// ([`crate::is_dns_label`]).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Kubernetes {
    /// A DNS-1123 label; default the fleet's name.
    pub namespace: String,
    /// The kubeconfig context; `None`: the current one.
    pub context: Option<String>,
    /// How the control plane reaches http pods; `None`: by where it runs (the control
    /// plane decides: `pod-ip` in the cluster, `port-forward` with a kubeconfig).
    pub reach: Option<PodReach>,
    /// How long a server's Deployment may take to get a new pod Ready: rendered as its
    /// `progressDeadlineSeconds`, and the runtime's wait for a Ready pod to claim.
    /// `None`: [`Kubernetes::DEFAULT_PROGRESS_DEADLINE`], rendered as nothing (the
    /// cluster's default is the same).
    #[serde(serialize_with = "opt_duration_text")]
    pub progress_deadline: Option<Duration>,
    /// The control plane's image; default `mcpfleet:<version>`.
    pub image: String,
    pub ingress: Option<Ingress>,
    /// Whether to render a prometheus-operator ServiceMonitor.
    pub service_monitor: bool,
    pub backup: Backup,
    pub quota: Option<Quota>,
    /// Where each declared secret's value is on Kubernetes, by the secret's name.
    pub secrets: BTreeMap<String, KubernetesSecret>,
    /// Gateway replicas beside the control plane; `None`: its gateway alone. Left out
    /// when absent, as the fleet read before the key existed.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub gateway_replicas: Option<GatewayReplicas>,
}

impl Kubernetes {
    /// Kubernetes' default `progressDeadlineSeconds`: 10 minutes.
    pub const DEFAULT_PROGRESS_DEADLINE: Duration = Duration::from_secs(600);

    /// How long a server's Deployment may take to get a new pod Ready.
    pub fn progress_deadline(&self) -> Duration {
        self.progress_deadline
            .unwrap_or(Self::DEFAULT_PROGRESS_DEADLINE)
    }

    /// The Secret a secret is read from when the file names none: `<fleet>-secrets`.
    pub fn default_secret(fleet: &str) -> String {
        format!("{fleet}-secrets")
    }
}

/// An Ingress routing `host` to the gateway.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Ingress {
    pub host: String,
    /// `None`: the cluster's default IngressClass.
    pub class: Option<String>,
    /// A `kubernetes.io/tls` Secret; `None`: no TLS at the Ingress.
    pub tls_secret: Option<String>,
}

/// The CronJob exporting the control plane's state, and the volume it keeps exports on.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Backup {
    /// A cron schedule of 5 fields.
    pub schedule: String,
    /// Exports kept, at least 1.
    pub keep: u32,
    /// Size of the volume, bytes.
    pub size: u64,
}

impl Backup {
    pub const DEFAULT_SCHEDULE: &str = "0 3 * * *";
    pub const DEFAULT_KEEP: u32 = 7;
    pub const DEFAULT_SIZE: u64 = 1 << 30;
}

/// Limits on the namespace as a whole; at least one is set.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Quota {
    /// CPU, in millicores (1000 = one CPU).
    pub cpu_millis: Option<u64>,
    /// Memory, bytes.
    pub memory: Option<u64>,
    pub pods: Option<u32>,
}

/// A key of a Secret in the fleet's namespace.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct KubernetesSecret {
    /// The Secret's name, a DNS-1123 subdomain.
    pub secret: String,
    /// The key within it (`[-._a-zA-Z0-9]+`).
    pub key: String,
}

/// A HorizontalPodAutoscaler's bounds and targets: at least one target is set.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Autoscale {
    /// At least 1.
    pub min: u32,
    /// At least `min`.
    pub max: u32,
    /// Average CPU use, percent of the request (1 to 1000).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cpu: Option<u32>,
    /// Average memory use, percent of the request (1 to 1000).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub memory: Option<u32>,
    /// Live client sessions per pod.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sessions_per_pod: Option<u32>,
}

/// How many gateway replicas run, and what scales them between `min` and `max`: CPU
/// and memory only (`sessions_per_pod` is always `None`; a target may be absent only
/// when `min` is `max`, a fixed count).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct GatewayReplicas {
    #[serde(flatten)]
    pub scale: Autoscale,
    /// Where `kubernetes.gateway_replicas` is written: what the render's refusals of it
    /// point at.
    #[serde(skip)]
    pub span: Span,
}

/// Where a server's pods run and may connect on Kubernetes. Default: anywhere, no
/// spreading, no egress but DNS.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct ServerKubernetes {
    pub node_selector: BTreeMap<String, String>,
    pub tolerations: Vec<Toleration>,
    pub priority_class: Option<String>,
    pub spread: Spread,
    pub egress: Vec<Egress>,
}

impl ServerKubernetes {
    /// Whether nothing is set (every key at its default).
    pub fn is_empty(&self) -> bool {
        *self == ServerKubernetes::default()
    }
}

/// A taint a server's pods tolerate. `Exists` never has a value; `Equal` always has a key.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Toleration {
    /// `None`: every key (only with `Exists`).
    pub key: Option<String>,
    pub operator: TolerationOperator,
    pub value: Option<String>,
    /// `None`: every effect.
    pub effect: Option<TaintEffect>,
}

/// A destination a server's pods may connect to: a network, and one port or all.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Egress {
    /// The network's address, host bits zero.
    pub network: IpAddr,
    /// Prefix length: at most 32 (IPv4) or 128 (IPv6).
    pub prefix: u8,
    /// `None`: every port.
    pub port: Option<u16>,
}

impl Egress {
    /// The network in CIDR notation: `10.0.0.0/8`.
    pub fn cidr(&self) -> String {
        format!("{}/{}", self.network, self.prefix)
    }
}

#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Transport {
    Stdio {
        #[serde(flatten)]
        command: Command,
        isolation: Isolation,
    },
    Http {
        #[serde(flatten)]
        command: Command,
        path: String,
        #[serde(skip_serializing_if = "Option::is_none")]
        port: Option<u16>,
    },
    Remote {
        url: Text,
        #[serde(skip_serializing_if = "BTreeMap::is_empty")]
        headers: BTreeMap<String, Text>,
    },
}

impl Transport {
    /// What a local server runs; `None` for a remote one.
    pub fn executable(&self) -> Option<&Executable> {
        match self {
            Transport::Stdio { command, .. } | Transport::Http { command, .. } => {
                Some(&command.executable)
            }
            Transport::Remote { .. } => None,
        }
    }

    /// The port the server holds on this machine while it runs: an http program's fixed
    /// `port`, which two instances cannot hold at once. An image's `port` is inside its
    /// container (every replica has it to itself), and an allocated one is not fixed.
    pub fn fixed_host_port(&self) -> Option<u16> {
        match self {
            Transport::Http {
                port: Some(port),
                command,
                ..
            } if !command.executable.is_image() => Some(*port),
            _ => None,
        }
    }

    /// What a local server runs; `None` for a remote one.
    pub fn executable_mut(&mut self) -> Option<&mut Executable> {
        match self {
            Transport::Stdio { command, .. } | Transport::Http { command, .. } => {
                Some(&mut command.executable)
            }
            Transport::Remote { .. } => None,
        }
    }

    pub fn kind(&self) -> &'static str {
        match self {
            Transport::Stdio { .. } => "stdio",
            Transport::Http { .. } => "http",
            Transport::Remote { .. } => "remote",
        }
    }
}

/// How the client sessions of a stdio server map to its processes.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
#[serde(rename_all = "kebab-case", tag = "mode")]
pub enum Isolation {
    /// Every client session gets its own process, taken from a pool of `warm` started ones.
    /// At `max_sessions` sessions a new one is refused until one ends; a session unused for
    /// `idle_timeout` ends and its process is stopped. Health checks use probe instances of
    /// their own (`replicas`), never a process a client uses.
    PerSession {
        warm: u32,
        max_sessions: u32,
        #[serde(serialize_with = "duration_text")]
        idle_timeout: Duration,
    },
    /// `replicas` long-lived processes that every client session uses; the gateway keeps the
    /// sessions apart by rewriting JSON-RPC ids, progress tokens and cancellation ids.
    Shared,
}

impl Isolation {
    pub const DEFAULT_WARM: u32 = 1;
    pub const DEFAULT_MAX_SESSIONS: u32 = 32;
    pub const DEFAULT_IDLE_TIMEOUT: Duration = Duration::from_secs(600);
}

impl Default for Isolation {
    /// `per-session` with the default pool, cap and idle timeout.
    fn default() -> Self {
        Isolation::PerSession {
            warm: Self::DEFAULT_WARM,
            max_sessions: Self::DEFAULT_MAX_SESSIONS,
            idle_timeout: Self::DEFAULT_IDLE_TIMEOUT,
        }
    }
}

/// An argv array with its environment. Never run through a shell.
#[derive(Debug, Clone, Serialize)]
pub struct Command {
    /// Flattened so that a local program serializes exactly as it did before images
    /// existed (`"command": …, "args": …`): plan hashes of stored revisions are computed
    /// from this form, and a changed form would make every server look changed.
    #[serde(flatten)]
    pub executable: Executable,
    pub args: Vec<Text>,
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub env: BTreeMap<String, Text>,
    /// For a program, relative to the fleet file; for an image, an absolute path inside
    /// the container.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cwd: Option<Text>,
}

/// What runs: a local program or a container image.
#[derive(Debug, Clone, Serialize)]
#[serde(untagged)]
#[expect(
    clippy::large_enum_variant,
    reason = "one per server of a fleet file: boxing would only add indirection"
)]
pub enum Executable {
    /// A local program: a path or a name on PATH.
    Program { command: Text },
    /// An image the container engine runs; `command` replaces its entrypoint.
    Image {
        image: Text,
        /// The exact image `image` named when the revision was deployed: its repo digest
        /// (`name@sha256:…`), or its id (`sha256:…`) when it has none. Never in the file:
        /// pinning sets it, the stored revision keeps it, and instances run it, so a tag
        /// that moves later changes the spec (and its hash) but not what a revision runs.
        #[serde(skip_serializing_if = "Option::is_none")]
        digest: Option<String>,
        #[serde(skip_serializing_if = "Option::is_none")]
        command: Option<Text>,
        container: Container,
    },
}

impl Executable {
    /// A container image rather than a local program: its port and paths are inside the
    /// container, not on this machine.
    pub fn is_image(&self) -> bool {
        matches!(self, Executable::Image { .. })
    }
}

/// A pinned image for people: `sha256:` and the first 12 hex digits of its digest or id,
/// without the repository (`localhost/x@sha256:0123456789abcdef…` → `sha256:0123456789ab`).
pub fn short_digest(pinned: &str) -> &str {
    let digest = pinned.rsplit_once('@').map_or(pinned, |(_, digest)| digest);
    let end = digest
        .find(':')
        .map_or(0, |colon| colon + 1)
        .saturating_add(12)
        .min(digest.len());
    digest.get(..end).unwrap_or(digest)
}

/// How an image server's container runs.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Container {
    /// `None`: the image's user, or nobody when that is root or unset.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub user: Option<String>,
    pub network: ContainerNetwork,
    pub resources: Resources,
    pub volumes: Vec<Volume>,
    /// The root filesystem is read-only (`/tmp` stays writable).
    pub read_only: bool,
    pub pull: Pull,
    /// Secrets the container gets as files, in file order.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub secrets: Vec<SecretFile>,
}

/// A secret handed to a container as a read-only file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct SecretFile {
    /// An absolute path inside the container.
    pub target: String,
    /// The secret's name under the fleet's `secrets:`.
    pub secret: String,
    /// `{{ secret('name') }}`: rendered for an instance, it reads the value.
    #[serde(skip)]
    pub value: Text,
}

/// The network a container joins.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ContainerNetwork {
    /// No network at all (loopback only).
    None,
    /// The container engine's default bridge.
    Bridge,
    /// A network the container engine knows by this name.
    Named(String),
}

impl Serialize for ContainerNetwork {
    /// As the file writes it: `none`, `bridge` or the name.
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(match self {
            ContainerNetwork::None => "none",
            ContainerNetwork::Bridge => "bridge",
            ContainerNetwork::Named(name) => name,
        })
    }
}

/// Limits on a container; `None` is no limit.
#[derive(Debug, Clone, Copy, PartialEq, Default, Serialize)]
pub struct Resources {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cpus: Option<f64>,
    /// Bytes.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub memory: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub pids: Option<u32>,
}

/// A mount into a container.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Volume {
    pub source: VolumeSource,
    /// An absolute path inside the container.
    pub target: String,
    pub read_only: bool,
}

/// What a volume mounts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum VolumeSource {
    /// A host path, absolute (resolved against the fleet file's directory).
    Path(PathBuf),
    /// A volume the container engine manages, by name.
    Named(String),
}

impl Serialize for VolumeSource {
    /// The path or the name, as one string (a path always starts with `/`).
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self {
            VolumeSource::Path(path) => path.serialize(s),
            VolumeSource::Named(name) => s.serialize_str(name),
        }
    }
}

/// A templated string: what was written, and what may be shown.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Text {
    pub template: String,
    pub shown: String,
}

impl Serialize for Text {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.shown)
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct Dependency {
    pub server: String,
    pub condition: Condition,
    #[serde(skip)]
    pub span: Span,
}

#[derive(Debug, Clone, Serialize)]
pub struct Restart {
    pub policy: RestartPolicyKind,
    #[serde(serialize_with = "duration_text")]
    pub backoff_initial: Duration,
    #[serde(serialize_with = "duration_text")]
    pub backoff_max: Duration,
    pub backoff_multiplier: f64,
    pub jitter: f64,
    pub give_up_after: u32,
    #[serde(serialize_with = "duration_text")]
    pub stable_after: Duration,
}

/// How often a check runs and how many results in a row change its verdict.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Cadence {
    #[serde(serialize_with = "duration_text")]
    pub interval: Duration,
    #[serde(serialize_with = "duration_text")]
    pub timeout: Duration,
    pub failure_threshold: u32,
    pub success_threshold: u32,
}

#[derive(Debug, Clone, Serialize)]
pub struct Health {
    pub mcp: McpCheck,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub others: Vec<Check>,
}

#[derive(Debug, Clone, Serialize)]
pub struct McpCheck {
    /// `timeout` is the handshake timeout.
    pub cadence: Cadence,
    pub expect_tools: Vec<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub call: Option<SmokeCall>,
    #[serde(
        skip_serializing_if = "Option::is_none",
        serialize_with = "opt_duration_text"
    )]
    pub max_latency: Option<Duration>,
}

#[derive(Debug, Clone, Serialize)]
pub struct SmokeCall {
    pub tool: String,
    pub arguments: serde_json::Value,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub expect_contains: Option<String>,
    pub expect_error: bool,
}

#[derive(Debug, Clone, Serialize)]
pub struct Check {
    pub cadence: Cadence,
    pub probe: CheckProbe,
}

#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum CheckProbe {
    /// GET this path on the server's own address, or this absolute URL.
    Http {
        target: String,
        expect_status: Option<u16>,
    },
    /// Connect to this address; `None` = the server's own port.
    Tcp {
        address: Option<String>,
    },
    Command {
        command: Text,
        args: Vec<Text>,
    },
    File {
        path: Text,
    },
}

#[derive(Debug, Clone, Serialize)]
pub struct Rollout {
    pub strategy: Strategy,
    pub max_surge: u32,
    pub max_unavailable: u32,
    #[serde(serialize_with = "duration_text")]
    pub rollback_window: Duration,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub steps: Vec<CanaryStep>,
    pub analysis: Analysis,
    pub on_abort: OnAbort,
}

#[derive(Debug, Clone, Serialize)]
pub struct CanaryStep {
    pub weight: u32,
    /// `None` waits for `mcpfleet promote`.
    #[serde(serialize_with = "opt_duration_text")]
    pub pause: Option<Duration>,
}

#[derive(Debug, Clone, Serialize)]
pub struct Analysis {
    #[serde(serialize_with = "duration_text")]
    pub interval: Duration,
    pub max_error_rate: f64,
    pub max_latency_p95_ratio: f64,
    pub min_requests: u32,
    pub failure_limit: u32,
    pub count_tool_errors: bool,
}

/// Formats a duration the way the file writes it (`1m30s`, `250ms`).
pub fn format_duration(d: Duration) -> String {
    let ms = d.as_millis();
    if ms == 0 {
        return "0s".into();
    }
    let mut out = String::new();
    let (h, rest) = (ms / 3_600_000, ms % 3_600_000);
    let (m, rest) = (rest / 60_000, rest % 60_000);
    let (s, ms) = (rest / 1000, rest % 1000);
    for (n, unit) in [(h, "h"), (m, "m"), (s, "s"), (ms, "ms")] {
        if n > 0 {
            out.push_str(&format!("{n}{unit}"));
        }
    }
    out
}

/// Formats a measured duration for people to read, in every message and text output (a
/// setting from the fleet file is echoed exactly, as [`format_duration`] writes it, so it
/// can be found in the file): at most two units, rounded — `0.4ms` and `3.2ms`
/// (tenths below 10 ms keep fast measurements visible), `850ms`, `2.3s`, `1m28s`, `2h5m`.
pub fn human_duration(d: Duration) -> String {
    // Each branch rounds at its own unit first, so 999.6 ms reads `1s`, not `1000ms`.
    let tenths_of_ms = (d.as_secs_f64() * 10_000.0).round() as u64;
    if tenths_of_ms < 100 {
        return with_tenths(tenths_of_ms, "ms");
    }
    let ms = (d.as_secs_f64() * 1000.0).round() as u64;
    if ms < 1000 {
        return format!("{ms}ms");
    }
    let tenths_of_s = (d.as_secs_f64() * 10.0).round() as u64;
    if tenths_of_s < 600 {
        return with_tenths(tenths_of_s, "s");
    }
    let s = d.as_secs_f64().round() as u64;
    if s < 3600 {
        return two_units(s / 60, "m", s % 60, "s");
    }
    let m = (d.as_secs_f64() / 60.0).round() as u64;
    two_units(m / 60, "h", m % 60, "m")
}

/// `tenths` of `unit` with one decimal, dropped when it is zero (`2.3s`, `5s`).
fn with_tenths(tenths: u64, unit: &str) -> String {
    match tenths % 10 {
        0 => format!("{}{unit}", tenths / 10),
        decimal => format!("{}.{decimal}{unit}", tenths / 10),
    }
}

/// `1m28s`, or `2m` when the smaller unit is zero.
fn two_units(big: u64, big_unit: &str, small: u64, small_unit: &str) -> String {
    match small {
        0 => format!("{big}{big_unit}"),
        small => format!("{big}{big_unit}{small}{small_unit}"),
    }
}

fn duration_text<S: Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(&format_duration(*d))
}

fn opt_duration_text<S: Serializer>(d: &Option<Duration>, s: S) -> Result<S::Ok, S::Error> {
    match d {
        Some(d) => duration_text(d, s),
        None => s.serialize_none(),
    }
}

/// Parses `500ms`, `5s`, `1.5m`, `2h`, `1m30s`.
///
/// # Errors
/// A message saying what is wrong with the text.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let t = text.trim();
    if t.is_empty() {
        return Err("empty duration".into());
    }
    let mut total = 0f64;
    let mut rest = t;
    while !rest.is_empty() {
        let digits = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .unwrap_or(rest.len());
        if digits == 0 {
            return Err(format!("`{text}` is not a duration"));
        }
        let number: f64 = rest[..digits]
            .parse()
            .map_err(|_| format!("`{text}` is not a duration"))?;
        rest = &rest[digits..];
        let unit_len = rest
            .find(|c: char| c.is_ascii_digit())
            .unwrap_or(rest.len());
        let factor = match &rest[..unit_len] {
            "ms" => 0.001,
            "s" => 1.0,
            "m" => 60.0,
            "h" => 3600.0,
            "" => return Err(format!("`{text}` has no unit")),
            other => return Err(format!("`{other}` is not a unit of time")),
        };
        rest = &rest[unit_len..];
        total += number * factor;
    }
    if total > 365.0 * 24.0 * 3600.0 {
        return Err(format!("`{text}` is longer than a year"));
    }
    Ok(Duration::from_secs_f64(total))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_for_people_have_at_most_two_units_rounded() {
        for (d, text) in [
            (Duration::ZERO, "0ms"),
            (Duration::from_micros(420), "0.4ms"),
            (Duration::from_micros(3_250), "3.3ms"),
            (Duration::from_micros(9_990), "10ms"),
            (Duration::from_millis(850), "850ms"),
            (Duration::from_micros(999_600), "1s"),
            (Duration::from_millis(2_340), "2.3s"),
            (Duration::from_secs(5), "5s"),
            (Duration::from_millis(59_960), "1m"),
            (Duration::from_millis(88_082), "1m28s"),
            (Duration::from_secs(3_599), "59m59s"),
            (Duration::from_millis(3_599_600), "1h"),
            (Duration::from_secs(7_500), "2h5m"),
            (Duration::from_secs(30 * 3600), "30h"),
        ] {
            assert_eq!(human_duration(d), text, "{d:?}");
        }
    }

    #[test]
    fn durations_round_trip() {
        for (text, ms) in [
            ("500ms", 500),
            ("5s", 5000),
            ("1m30s", 90_000),
            ("1.5m", 90_000),
            ("2h", 7_200_000),
        ] {
            let d = parse_duration(text).unwrap();
            assert_eq!(d.as_millis(), ms, "{text}");
        }
        assert_eq!(format_duration(Duration::from_millis(90_500)), "1m30s500ms");
        assert!(parse_duration("5").unwrap_err().contains("no unit"));
        assert!(parse_duration("5 sec").is_err());
        assert!(parse_duration("5d").unwrap_err().contains("not a unit"));
    }
}

/// Who is told when a deployment or rollout changes course (`notifications:`).
#[derive(Debug, Clone, Default, Serialize)]
pub struct Notifications {
    /// In file order.
    pub webhooks: Vec<Webhook>,
}

impl Notifications {
    pub fn is_empty(&self) -> bool {
        self.webhooks.is_empty()
    }
}

/// A receiver of signed webhooks.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Webhook {
    /// http(s); may hold a secret (shown as `***`), so it is logged as shown only.
    pub url: Text,
    /// The HMAC-SHA256 key (a `secret()` reference); `None`: deliveries are unsigned.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub secret: Option<Text>,
    /// The events sent, each once, in [`WebhookEvent::ALL`] order.
    pub events: Vec<WebhookEvent>,
    pub format: WebhookFormat,
    /// How long one delivery attempt may take.
    #[serde(serialize_with = "duration_text")]
    pub timeout: Duration,
}

impl Webhook {
    pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(10);
}
