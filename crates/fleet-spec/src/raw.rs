//! The fleet file as written (v1): the serde + JSON Schema description of the format.
//!
//! These types are deliberately loose: durations, URLs and templates are kept as located
//! text and checked by [`crate::validate`], which turns them into the trusted
//! [`crate::model`] types while collecting every error.

use crate::de::{Recover, Spanned};
use schemars::JsonSchema;
use serde::Deserialize;
use serde::de::{self, Deserializer, MapAccess, SeqAccess, Visitor};
use std::fmt;

/// A fleet of MCP servers, deployed and kept healthy by mcpfleet.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(title = "mcpfleet fleet file (version 1)")]
pub struct RawFleet {
    /// Format version of this file. Always `1`.
    pub version: Option<Spanned<u32>>,
    /// Name of the fleet: lowercase letters, digits and `-`; names the state directory.
    pub name: Option<Spanned<String>>,
    /// Where the fleet runs: `local` (processes and containers on this machine, the
    /// default) or `kubernetes` (`mcpfleet render kubernetes` writes its manifests).
    #[serde(default)]
    pub runtime: Recover<Spanned<RuntimeKind>>,
    /// How the fleet runs on Kubernetes; every key has a default. Local `up` ignores it.
    #[serde(default)]
    pub kubernetes: Recover<RawKubernetes>,
    /// Values for `{{ var('name') }}`. Values may use `env()`.
    #[serde(default)]
    pub vars: Recover<Named<Spanned<String>>>,
    /// Overlays applied with `--env NAME`: mappings merge key by key, other values replace.
    #[serde(default)]
    pub environments: Recover<Named<Recover<RawOverlay>>>,
    /// Secret references, used as `{{ secret('name') }}`. Values are read only when a
    /// server starts and are never stored or printed.
    #[serde(default)]
    pub secrets: Recover<Named<Recover<RawSecret>>>,
    /// The client-facing gateway.
    #[serde(default)]
    pub gateway: Recover<RawGateway>,
    /// The admin side: the control plane's API beyond its unix socket.
    #[serde(default)]
    pub admin: Recover<RawAdmin>,
    /// Settings every server inherits unless it sets its own.
    #[serde(default)]
    pub defaults: Recover<RawDefaults>,
    /// Who is told when a deployment or rollout changes course.
    #[serde(default)]
    pub notifications: Recover<RawNotifications>,
    /// The MCP servers of the fleet, by name.
    #[serde(default)]
    pub servers: Named<Recover<RawServer>>,
    /// How the control plane and its gateway write their log.
    #[serde(default)]
    pub logging: Recover<RawLogging>,
    /// Traces of deployments and gateway requests, sent to an OpenTelemetry collector.
    #[serde(default)]
    pub tracing: Recover<RawTracing>,
    /// Where the control plane keeps its state (revisions, deployments, events, audit).
    /// Absent: a SQLite database in the state directory.
    #[serde(default)]
    pub state: Recover<RawState>,
}

/// What an environment may override.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(rename = "Overlay")]
pub struct RawOverlay {
    #[serde(default)]
    pub runtime: Recover<Spanned<RuntimeKind>>,
    /// Keys set here replace the base file's, key by key.
    #[serde(default)]
    pub kubernetes: Option<RawKubernetes>,
    #[serde(default)]
    pub vars: Option<Named<Spanned<String>>>,
    #[serde(default)]
    pub secrets: Option<Named<Recover<RawSecret>>>,
    #[serde(default)]
    pub gateway: Option<RawGateway>,
    #[serde(default)]
    pub admin: Option<RawAdmin>,
    #[serde(default)]
    pub defaults: Option<RawDefaults>,
    #[serde(default)]
    pub notifications: Option<RawNotifications>,
    /// Per-server overrides; every key of a server may appear.
    #[serde(default)]
    pub servers: Option<Named<Recover<RawServer>>>,
    #[serde(default)]
    pub logging: Option<RawLogging>,
    #[serde(default)]
    pub tracing: Option<RawTracing>,
    #[serde(default)]
    pub state: Option<RawState>,
}

/// Where a secret's value comes from. Exactly one of `env` or `file`.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(rename = "Secret")]
pub struct RawSecret {
    /// Name of an environment variable of the control plane.
    pub env: Option<Spanned<String>>,
    /// Path of a file (relative to the fleet file) holding the value; one trailing newline
    /// is ignored.
    pub file: Option<Spanned<String>>,
    /// Where the value is on Kubernetes: a key of a Secret in the fleet's namespace.
    /// Default: Secret `<fleet>-secrets`, key = this secret's name. Local `up` ignores it.
    pub kubernetes: Option<Spanned<RawSecretKubernetes>>,
}

/// A key of a Kubernetes Secret in the fleet's namespace.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(rename = "SecretKubernetes")]
pub struct RawSecretKubernetes {
    /// The Secret's name (a DNS-1123 subdomain). Default `<fleet>-secrets`.
    pub secret: Option<Spanned<String>>,
    /// The key within the Secret (letters, digits, `-`, `_`, `.`). Default: the secret's
    /// name in this file.
    pub key: Option<Spanned<String>>,
}

/// Where a fleet runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, serde::Serialize, JsonSchema, Default)]
#[serde(rename_all = "kebab-case")]
pub enum RuntimeKind {
    /// Processes and containers on this machine, run by `mcpfleet up` (default).
    #[default]
    Local,
    /// A Kubernetes cluster: `mcpfleet up` runs its http servers as pods (the control plane
    /// in the cluster); `mcpfleet render kubernetes` writes the manifests.
    Kubernetes,
}

/// The log of the control plane and its gateway.
#[derive(Debug, Default, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(rename = "Logging")]
pub struct RawLogging {
    /// `text` (default) or `json`, one object per line. `mcpfleet --log-format` wins.
    pub format: Option<Spanned<LogFormat>>,
}

/// Traces: spans of deployments (waves, server steps, health checks) and gateway requests.
#[derive(Debug, Default, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(rename = "Tracing")]
pub struct RawTracing {
    /// Send spans to an OpenTelemetry collector over OTLP/HTTP. Absent: none are sent,
    /// unless the control plane's environment sets `OTEL_EXPORTER_OTLP_ENDPOINT`.
    #[serde(default)]
    pub otlp: Recover<Spanned<RawOtlp>>,
}

/// Where and how spans are exported over OTLP/HTTP (protobuf).
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(rename = "Otlp")]
pub struct RawOtlp {
    /// The collector's OTLP/HTTP base URL, e.g. `http://collector:4318`; spans are POSTed
    /// to `<endpoint>/v1/traces`. Default: `OTEL_EXPORTER_OTLP_ENDPOINT` of the control
    /// plane's environment.
    pub endpoint: Option<Spanned<String>>,
    /// Headers sent with every export, e.g. `authorization: "Bearer {{ secret('otlp') }}"`.
    #[serde(default)]
    pub headers: Named<Spanned<String>>,
    /// The share of traces kept, from 0 to 1. Default 1 (all). A request whose client sent
    /// a sampled `traceparent` is kept whatever the ratio.
    #[schemars(range(min = 0.0, max = 1.0))]
    pub sample_ratio: Option<Spanned<f64>>,
    /// `service.name` of the spans. Default `mcpfleet`.
    pub service_name: Option<Spanned<String>>,
}

/// Where the control plane keeps its state store.
#[derive(Debug, Default, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(rename = "State")]
pub struct RawState {
    /// A PostgreSQL database instead of the state directory's SQLite file: what several
    /// control planes share.
    #[serde(default)]
    pub postgres: Recover<Spanned<RawPostgres>>,
}

/// A PostgreSQL database holding the state store.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(rename = "Postgres")]
pub struct RawPostgres {
    /// The connection URL, `postgres://USER@HOST:PORT/DATABASE` (libpq's URL form, its
    /// query parameters included). A password must come from a secret:
    /// `"{{ secret('state_db') }}"` for the whole URL, or in place of the password.
    pub url: Option<Spanned<String>>,
    /// How long the leading control plane's lease on the database lasts unless renewed (it
    /// renews every third of it): how soon a standby control plane on the same database
    /// takes over from one that died. Default `15s`.
    pub lease: Option<Spanned<DurationText>>,
}

/// How log lines are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, serde::Serialize, JsonSchema, Default)]
#[serde(rename_all = "kebab-case")]
pub enum LogFormat {
    /// Lines for people: time, level, spans, message, fields (default).
    #[default]
    Text,
    /// One JSON object per line for log collectors: `time`, `level`, `message`, `target`,
    /// `fleet`, and `server`, `revision`, `deployment` when the line concerns one.
    Json,
}

/// The fleet on Kubernetes. Every key is optional.
#[derive(Debug, Default, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(rename = "Kubernetes")]
pub struct RawKubernetes {
    /// The namespace everything goes in (a DNS-1123 label). Default: the fleet's name.
    pub namespace: Option<Spanned<String>>,
    /// The kubeconfig context to use. Default: the current one.
    pub context: Option<Spanned<String>>,
    /// How the control plane reaches an http server's pods: at the pod's IP (it runs in
    /// the cluster), or through the API server's `pods/portforward` (it runs outside).
    /// Default: `pod-ip` with the in-cluster service account, `port-forward` with a
    /// kubeconfig.
    pub reach: Option<Spanned<PodReach>>,
    /// How long a server's Deployment may take to make progress — a new pod scheduled,
    /// its image pulled, started and Ready — before it has failed: its
    /// `progressDeadlineSeconds`, and how long the control plane waits for a Ready pod to
    /// start an instance on. Default 10m, Kubernetes' own.
    pub progress_deadline: Option<Spanned<DurationText>>,
    /// The control plane's container image. Default `mcpfleet:<version of mcpfleet>`.
    pub image: Option<Spanned<String>>,
    /// An Ingress in front of the gateway. Absent: none.
    #[serde(default)]
    pub ingress: Recover<RawIngress>,
    /// Also render a prometheus-operator ServiceMonitor for the admin port. Default false.
    pub service_monitor: Option<Spanned<bool>>,
    /// The CronJob that exports the control plane's state to a volume.
    #[serde(default)]
    pub backup: Recover<RawBackup>,
    /// A ResourceQuota (and LimitRange) for the namespace. Absent: none.
    #[serde(default)]
    pub quota: Recover<Spanned<RawQuota>>,
    /// Gateway replicas beside the control plane (`mcpfleet gateway` pods behind a Service
    /// of their own, which the Ingress then routes to): `min` and `max` pods, scaled on
    /// `cpu` and `memory` (percent of each pod's request) when `max` is above `min`;
    /// `sessions_per_pod` does not apply. Needs the state in PostgreSQL and
    /// `gateway.session_keys`. Absent: the control plane's gateway alone.
    #[serde(default)]
    pub gateway_replicas: Recover<Spanned<RawAutoscale>>,
}

/// How the control plane reaches an http server's pods.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, serde::Serialize, JsonSchema)]
#[serde(rename_all = "kebab-case")]
pub enum PodReach {
    /// At the pod's IP and container port: the control plane runs in the cluster.
    PodIp,
    /// Through a local port the control plane forwards over the API server's
    /// `pods/portforward`: the control plane runs outside the cluster.
    PortForward,
}

/// An Ingress routing a host to the gateway.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(rename = "Ingress")]
pub struct RawIngress {
    /// The host clients use (`mcp.example.com`, or `*.example.com`).
    pub host: Spanned<String>,
    /// The IngressClass. Default: the cluster's default class.
    pub class: Option<Spanned<String>>,
    /// A Secret of type `kubernetes.io/tls` holding the host's certificate. Absent: plain
    /// HTTP at the Ingress.
    pub tls_secret: Option<Spanned<String>>,
}

/// The state export CronJob.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(rename = "Backup")]
pub struct RawBackup {
    /// When it runs: a cron schedule of 5 fields. Default `0 3 * * *` (03:00 daily).
    pub schedule: Option<Spanned<String>>,
    /// Exports kept, at least 1. Default 7.
    #[schemars(range(min = 1))]
    pub keep: Option<Spanned<u32>>,
    /// Size of the volume the exports are kept on. Default `1Gi`.
    pub size: Option<Spanned<MemoryText>>,
}

/// Limits on everything in the fleet's namespace together. At least one key.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(rename = "Quota")]
pub struct RawQuota {
    /// CPUs: `8`, `0.5` or millicores (`500m`).
    pub cpu: Option<Spanned<CpuText>>,
    /// Memory: bytes, or a number with `Ki`, `Mi`, `Gi`, `Ti` or `K`, `M`, `G`, `T`.
    pub memory: Option<Spanned<MemoryText>>,
    /// Pods, at least 1.
    #[schemars(range(min = 1))]
    pub pods: Option<Spanned<u32>>,
}

/// An amount of CPU as written: a number of CPUs (`8`, `0.5`) or millicores (`500m`).
/// Parsed during validation.
#[derive(Debug, Clone, Deserialize)]
#[serde(transparent)]
pub struct CpuText(pub String);

impl JsonSchema for CpuText {
    fn schema_name() -> std::borrow::Cow<'static, str> {
        "Cpu".into()
    }
    fn json_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
        schemars::json_schema!({
            "description": "CPUs (`8`, `0.5`) or millicores (`500m`).",
            "anyOf": [
                { "type": "number", "exclusiveMinimum": 0 },
                { "type": "string", "pattern": "^([0-9]+(\\.[0-9]+)?|[0-9]+m)$", "examples": ["500m"] }
            ]
        })
    }
}

/// Horizontal autoscaling of an `image:` server on Kubernetes (a HorizontalPodAutoscaler).
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(rename = "Autoscale")]
pub struct RawAutoscale {
    /// Fewest replicas, at least 1.
    #[schemars(range(min = 1))]
    pub min: Spanned<u32>,
    /// Most replicas, at least `min`.
    pub max: Spanned<u32>,
    /// Target average CPU use, percent of the request (1 to 1000).
    #[schemars(range(min = 1, max = 1000))]
    pub cpu: Option<Spanned<u32>>,
    /// Target average memory use, percent of the request (1 to 1000).
    #[schemars(range(min = 1, max = 1000))]
    pub memory: Option<Spanned<u32>>,
    /// Target live client sessions per pod (a metric from the control plane).
    #[schemars(range(min = 1))]
    pub sessions_per_pod: Option<Spanned<u32>>,
}

/// How a server's pods are placed on Kubernetes. Every key is optional.
#[derive(Debug, Default, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(rename = "ServerKubernetes")]
pub struct RawServerKubernetes {
    /// Node labels a pod's node must have.
    pub node_selector: Option<Named<Spanned<String>>>,
    /// Taints the pods tolerate.
    pub tolerations: Option<Vec<Recover<Spanned<RawToleration>>>>,
    /// The pods' PriorityClass.
    pub priority_class: Option<Spanned<String>>,
    /// Spreading replicas across nodes: `none` (default), `preferred` or `required`.
    #[serde(default)]
    pub spread: Recover<Spread>,
    /// Where the pods may connect besides DNS: `CIDR` or `CIDR:PORT` (`10.0.0.0/8:5432`,
    /// `0.0.0.0/0:443`). Default: nowhere.
    pub egress: Option<Vec<Spanned<String>>>,
}

/// A taint a pod tolerates.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(rename = "Toleration")]
pub struct RawToleration {
    /// The taint's key. Absent (with `Exists`): every taint.
    pub key: Option<Spanned<String>>,
    /// `Equal`: the taint's value is `value`. `Exists`: any value.
    pub operator: Spanned<TolerationOperator>,
    /// With `Equal`: the taint's value.
    pub value: Option<Spanned<String>>,
    /// The taint effect tolerated. Absent: every effect.
    pub effect: Option<Spanned<TaintEffect>>,
}

/// How a toleration matches a taint's value.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, serde::Serialize, JsonSchema)]
pub enum TolerationOperator {
    /// The values are equal.
    Equal,
    /// Any value.
    Exists,
}

/// What a taint does to pods that do not tolerate it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, serde::Serialize, JsonSchema)]
pub enum TaintEffect {
    /// New pods that do not tolerate it are not scheduled on the node.
    NoSchedule,
    /// The scheduler avoids the node for pods that do not tolerate it.
    PreferNoSchedule,
    /// Pods that do not tolerate it are also evicted from the node.
    NoExecute,
}

/// Spreading a server's replicas across nodes (pod anti-affinity).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, serde::Serialize, JsonSchema, Default)]
#[serde(rename_all = "kebab-case")]
pub enum Spread {
    /// No preference (default).
    #[default]
    None,
    /// On different nodes when the scheduler can.
    Preferred,
    /// Always on different nodes; a replica without a free node stays pending.
    Required,
}

/// The gateway: one Streamable HTTP endpoint per server at `/mcp/<server>`.
#[derive(Debug, Default, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(rename = "Gateway")]
pub struct RawGateway {
    /// Address to listen on, `IP:PORT`. Default `127.0.0.1:7470`. A non-loopback address
    /// requires `auth` and `tls`.
    pub listen: Option<Spanned<String>>,
    pub auth: Option<RawAuth>,
    /// TLS for the gateway's clients: `{ cert: FILE, key: FILE }` served by the gateway, or
    /// `{ terminated_by: proxy }` when an Ingress or proxy in front of it ends TLS.
    /// Absent: plain HTTP, allowed on a loopback `listen` only.
    pub tls: Option<Spanned<RawGatewayTls>>,
    /// How long a client may take to send a request head (for a new connection, from
    /// its accept). Default `10s`.
    pub header_read_timeout: Option<Spanned<DurationText>>,
    /// How long a request body may take to arrive in full after its head. Default `30s`.
    pub body_read_timeout: Option<Spanned<DurationText>>,
    /// A kept-alive client connection without a request this long is closed. Default
    /// `60s`.
    pub idle_timeout: Option<Spanned<DurationText>>,
    /// Requests per second per bearer token (per client address without auth).
    /// Absent: no rate limit.
    pub rate_limit: Option<RawRateLimit>,
    /// Requests of one client session in flight at once, at most; more get 429.
    /// Default 64.
    pub max_requests_in_flight: Option<Spanned<u32>>,
    /// Live client sessions, at most. A new session past it ends the least recently used
    /// idle one (of whoever holds the most); when all are busy it gets 503. Default 20000.
    pub max_sessions: Option<Spanned<u32>>,
    /// Live client sessions per bearer token (per client address without auth), at most.
    /// A new one past it ends that token's least recently used idle session; when all are
    /// busy it gets 429. Default 5000.
    pub max_sessions_per_token: Option<Spanned<u32>>,
    /// A client session unused this long ends (its upstream session too). Default `30m`.
    pub session_idle_timeout: Option<Spanned<DurationText>>,
    /// How long the gateway waits for an upstream's answer to begin. Default `60s`.
    pub upstream_timeout: Option<Spanned<DurationText>>,
    /// Keys that seal the session ids clients hold, so that gateway replicas serve one
    /// another's sessions: each `{{ secret('…') }}` of at least 32 characters (e.g.
    /// `openssl rand -hex 32`). The first seals new ids, every one opens: rotate by
    /// putting a new key first, and drop the old one once its sessions have ended.
    /// Absent: each gateway draws a key of its own at start.
    pub session_keys: Option<Spanned<Vec<Spanned<String>>>>,
}

/// Who ends the TLS of the gateway's clients: the gateway (`cert` and `key`), or a proxy
/// in front of it (`terminated_by`).
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(rename = "GatewayTls")]
pub struct RawGatewayTls {
    /// The certificate chain, PEM, leaf first; relative to the fleet file. A renewed file
    /// is picked up without a restart.
    pub cert: Option<Spanned<String>>,
    /// The certificate's private key, PEM (PKCS #8, PKCS #1 or SEC1); relative to the
    /// fleet file.
    pub key: Option<Spanned<String>>,
    /// `proxy`: TLS ends before the gateway (an Ingress, load balancer or reverse proxy)
    /// and the gateway serves plain HTTP behind it.
    pub terminated_by: Option<Spanned<TlsTerminator>>,
}

/// What ends TLS in front of the gateway.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, JsonSchema)]
#[serde(rename_all = "kebab-case")]
pub enum TlsTerminator {
    /// An Ingress, load balancer or reverse proxy.
    Proxy,
}

/// A token bucket: `per_second` sustained, `burst` at once after a quiet spell.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(rename = "RateLimit")]
pub struct RawRateLimit {
    /// Sustained requests per second (may be fractional: `0.5` = one every 2 s).
    pub per_second: Spanned<f64>,
    /// Requests allowed at once. Default: `per_second` rounded up (at least 1).
    pub burst: Option<Spanned<u32>>,
}

/// The admin side. The admin API always listens on the unix socket `control.sock` in the
/// state directory; `listen` adds a TCP listener for Prometheus and dashboards.
#[derive(Debug, Default, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(rename = "Admin")]
pub struct RawAdmin {
    /// Address of the admin TCP listener, `IP:PORT`: what reads (metrics, status, events,
    /// history, audit) for anyone on the machine, the rollout actions (promote, abort,
    /// pause, resume, rollback) only with an admin token. Loopback only. Absent: no TCP
    /// listener.
    pub listen: Option<Spanned<String>>,
    /// Bearer tokens for the actions on the TCP listener, stored by their SHA-256 (create
    /// them with `mcpfleet token create NAME --admin`). Never gateway tokens: neither kind
    /// opens the other's door.
    #[serde(default)]
    pub tokens: Vec<Spanned<RawAdminToken>>,
}

/// An admin token: a name (who acted, in events and history) and its hash.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(rename = "AdminToken")]
pub struct RawAdminToken {
    pub name: Spanned<String>,
    /// Lowercase hex SHA-256 of the token (64 characters).
    pub sha256: Spanned<String>,
}

#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(rename = "Auth")]
pub struct RawAuth {
    /// Bearer tokens, stored by their SHA-256 (create them with `mcpfleet token create`).
    #[serde(default)]
    pub tokens: Vec<Spanned<RawToken>>,
}

#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(rename = "Token")]
pub struct RawToken {
    pub name: Spanned<String>,
    /// Lowercase hex SHA-256 of the token (64 characters).
    pub sha256: Spanned<String>,
    /// Servers this token may reach; `"*"` for all.
    #[serde(default)]
    pub servers: Vec<Spanned<String>>,
}

/// Defaults for every server.
#[derive(Debug, Default, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(rename = "Defaults")]
pub struct RawDefaults {
    #[serde(default)]
    pub restart: Recover<RawRestart>,
    #[serde(default)]
    pub health: Recover<RawHealth>,
    #[serde(default)]
    pub rollout: Recover<RawRollout>,
    pub era: Option<Spanned<Era>>,
    pub on_failure: Option<Spanned<OnFailure>>,
}

/// One MCP server. Exactly one of `stdio`, `http` or `remote`; `stdio` and `http` run either
/// a local program (`command`) or a container (`image`).
#[derive(Debug, Default, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(rename = "Server")]
pub struct RawServer {
    /// A command speaking MCP on stdin/stdout; reached through the gateway.
    pub stdio: Option<Spanned<RawStdio>>,
    /// A command serving Streamable HTTP on the port the runtime allocates (`{{ port }}`).
    pub http: Option<Spanned<RawHttp>>,
    /// A server someone else runs: proxied and health-checked, never started.
    pub remote: Option<Spanned<RawRemote>>,
    /// How the container of an `image:` server runs; only for a `stdio` or `http` server
    /// with `image`.
    pub container: Option<Spanned<RawContainer>>,
    /// Servers that must be ready (or started) before this one starts.
    pub depends_on: Option<Spanned<RawDependsOn>>,
    /// Order within a dependency wave: higher starts first. Default 0.
    pub priority: Option<Spanned<i32>>,
    /// Number of instances. Default 1.
    pub replicas: Option<Spanned<u32>>,
    #[serde(default)]
    pub restart: Recover<RawRestart>,
    #[serde(default)]
    pub health: Recover<RawHealth>,
    #[serde(default)]
    pub rollout: Recover<RawRollout>,
    /// MCP protocol era: `auto` (detect), `legacy` (≤ 2025-11-25) or `modern` (2026-07-28).
    pub era: Option<Spanned<Era>>,
    /// What a deployment does when this server fails its checks.
    pub on_failure: Option<Spanned<OnFailure>>,
    /// Free text shown in `status`.
    pub description: Option<String>,
    /// Kubernetes only: a HorizontalPodAutoscaler between `min` and `max` replicas. Only
    /// `image:` servers are rendered; local `up` ignores it.
    #[serde(default)]
    pub autoscale: Recover<Spanned<RawAutoscale>>,
    /// Kubernetes only: how the server's pods are placed and where they may connect.
    /// Local `up` ignores it.
    #[serde(default)]
    pub kubernetes: Recover<RawServerKubernetes>,
}

/// A program speaking MCP on stdin/stdout: an argv array, never a shell line, and how client
/// sessions share its processes.
// The command keys are written out rather than flattened from a shared struct: a flattened
// struct is decoded as a free-form map, which would lose the unknown-key check.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(rename = "Stdio")]
pub struct RawStdio {
    /// The program to run: a path (relative to the fleet file) or a name on `PATH`. With
    /// `image`, the program inside the container that replaces the image's entrypoint.
    pub command: Option<Spanned<String>>,
    /// A container image to run instead of a local program (`name:tag`, `name@sha256:…`);
    /// its settings are in the server's `container:` block.
    pub image: Option<Spanned<String>>,
    /// Arguments; with `image`, they replace the image's `CMD`.
    #[serde(default)]
    pub args: Vec<Spanned<String>>,
    #[serde(default)]
    pub env: Named<Spanned<String>>,
    /// Working directory, relative to the fleet file; with `image`, an absolute path inside
    /// the container.
    pub cwd: Option<Spanned<String>>,
    /// `per-session` (default): every client session gets its own process. `shared`:
    /// `replicas` long-lived processes that every session uses.
    pub isolation: Option<Spanned<IsolationMode>>,
    /// `per-session` only: processes started ahead of new client sessions. Default 1; may
    /// be 0.
    pub warm: Option<Spanned<u32>>,
    /// `per-session` only: most client sessions (= processes) at once; more are refused
    /// until one ends. Default 32.
    #[schemars(range(min = 1))]
    pub max_sessions: Option<Spanned<u32>>,
    /// `per-session` only: a client session unused this long ends and its process is
    /// stopped. Default `10m`.
    pub idle_timeout: Option<Spanned<DurationText>>,
}

/// How the client sessions of a stdio server map to its processes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, JsonSchema, Default)]
#[serde(rename_all = "kebab-case")]
pub enum IsolationMode {
    /// A process per client session, from a warm pool (default).
    #[default]
    PerSession,
    /// `replicas` long-lived processes that every session uses.
    Shared,
}

#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(rename = "Http")]
pub struct RawHttp {
    /// The program to run: a path (relative to the fleet file) or a name on `PATH`. With
    /// `image`, the program inside the container that replaces the image's entrypoint.
    pub command: Option<Spanned<String>>,
    /// A container image to run instead of a local program (`name:tag`, `name@sha256:…`);
    /// its settings are in the server's `container:` block.
    pub image: Option<Spanned<String>>,
    /// Arguments; with `image`, they replace the image's `CMD`.
    #[serde(default)]
    pub args: Vec<Spanned<String>>,
    #[serde(default)]
    pub env: Named<Spanned<String>>,
    /// Working directory, relative to the fleet file; with `image`, an absolute path inside
    /// the container.
    pub cwd: Option<Spanned<String>>,
    /// Path of the MCP endpoint on the server. Default `/mcp`.
    pub path: Option<Spanned<String>>,
    /// A fixed port instead of an allocated one (then only one replica of a local program
    /// can run). With `image`: the port the server listens on inside the container, which
    /// is published on a loopback port mcpfleet picks.
    pub port: Option<Spanned<u16>>,
}

/// How an `image:` server's container runs. Every key is optional.
#[derive(Debug, Default, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(rename = "Container")]
pub struct RawContainer {
    /// `USER`, `UID` or `UID:GID` to run as. Default: the image's user, or `65534:65534`
    /// (nobody) when that is root or unset.
    pub user: Option<Spanned<String>>,
    /// `none` (no network), `bridge` (the engine's default bridge) or the name of a network
    /// the container engine knows. Default `none` for stdio, `bridge` for http (its port
    /// is published on 127.0.0.1).
    pub network: Option<Spanned<String>>,
    /// Limits on the container's CPU, memory and processes. Default: none.
    pub resources: Option<Spanned<RawResources>>,
    /// Mounts, `SOURCE:TARGET` or `SOURCE:TARGET:ro|rw` (default `rw`). SOURCE is a host
    /// path (starting with `/`, `./`, `../` or `~/`; relative to the fleet file) or a
    /// named volume; TARGET is an absolute path in the container.
    pub volumes: Option<Vec<Spanned<String>>>,
    /// Whether the root filesystem is read-only (`/tmp` is a writable tmpfs either way).
    /// Default true.
    pub read_only: Option<Spanned<bool>>,
    /// When the image is pulled: `never`, `if-missing` (default) or `always`.
    pub pull: Option<Spanned<Pull>>,
    /// Secrets handed to the container as read-only files: an absolute path inside the
    /// container → the name of a secret under the fleet's `secrets:`. The server reads the
    /// file (e.g. `--token-file /run/secrets/token`); unlike `env` and `args`, a file's
    /// content is not shown by the engine's `inspect`.
    pub secrets: Option<Named<Spanned<String>>>,
}

/// Limits on a container.
#[derive(Debug, Default, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(rename = "Resources")]
pub struct RawResources {
    /// CPUs the container may use, above 0; fractions allowed (`0.5`).
    pub cpus: Option<Spanned<f64>>,
    /// Memory limit: bytes, or a number with `Ki`, `Mi`, `Gi`, `Ti` (powers of 1024) or
    /// `K`, `M`, `G`, `T` (powers of 1000): `256Mi`, `1G`.
    pub memory: Option<Spanned<MemoryText>>,
    /// Most processes (and threads) at once, at least 1.
    #[schemars(range(min = 1))]
    pub pids: Option<Spanned<u32>>,
}

/// When the container engine pulls an image.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, serde::Serialize, JsonSchema, Default)]
#[serde(rename_all = "kebab-case")]
pub enum Pull {
    /// Never: the image must already be there.
    Never,
    /// Only when the image is not there yet (default).
    #[default]
    IfMissing,
    /// Before every start.
    Always,
}

/// A memory size as written: bytes, or a number and a unit (`256Mi`, `1G`). Parsed during
/// validation.
#[derive(Debug, Clone, Deserialize)]
#[serde(transparent)]
pub struct MemoryText(pub String);

impl JsonSchema for MemoryText {
    fn schema_name() -> std::borrow::Cow<'static, str> {
        "Memory".into()
    }
    fn json_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
        schemars::json_schema!({
            "description": "Bytes, or a number with Ki, Mi, Gi, Ti (powers of 1024) or K, M, G, T (powers of 1000).",
            "anyOf": [
                { "type": "integer", "minimum": 1 },
                { "type": "string", "pattern": "^[0-9]+(\\.[0-9]+)?([KMGT]i?)?$", "examples": ["256Mi"] }
            ]
        })
    }
}

#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(rename = "Remote")]
pub struct RawRemote {
    /// The server's Streamable HTTP endpoint.
    pub url: Spanned<String>,
    /// Extra headers sent upstream (e.g. its own credentials, via `secret()`).
    #[serde(default)]
    pub headers: Named<Spanned<String>>,
}

/// A list of server names, or a mapping of names to `{ condition: started|healthy }`.
#[derive(Debug, Default)]
pub struct RawDependsOn(pub Vec<RawDependency>);

#[derive(Debug)]
pub struct RawDependency {
    pub server: Spanned<String>,
    pub condition: Option<Spanned<Condition>>,
}

#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(rename = "DependencyOptions")]
struct RawDependencyOptions {
    condition: Option<Spanned<Condition>>,
}

/// When a dependency counts as satisfied.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, serde::Serialize, JsonSchema)]
#[serde(rename_all = "kebab-case")]
pub enum Condition {
    /// Its process is running.
    Started,
    /// Its health checks pass (default).
    Healthy,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, serde::Serialize, JsonSchema, Default)]
#[serde(rename_all = "kebab-case")]
pub enum Era {
    /// Try `server/discover`, fall back to `initialize`.
    #[default]
    Auto,
    /// Protocol revisions up to 2025-11-25 (`initialize`, sessions).
    Legacy,
    /// Protocol revision 2026-07-28 (stateless).
    Modern,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, serde::Serialize, JsonSchema, Default)]
#[serde(rename_all = "kebab-case")]
pub enum OnFailure {
    /// Stop what this deployment started, in reverse order (default).
    #[default]
    Rollback,
    /// Leave everything as it is and wait for an operator.
    Pause,
    /// Mark the server failed and go on with the others.
    Continue,
}

#[derive(Debug, Default, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(rename = "Restart")]
pub struct RawRestart {
    pub policy: Option<Spanned<RestartPolicyKind>>,
    pub backoff: Option<RawBackoff>,
    /// Consecutive failed starts before the server is marked crash-looping.
    pub give_up_after: Option<Spanned<u32>>,
    /// Running this long resets the backoff.
    pub stable_after: Option<Spanned<DurationText>>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, serde::Serialize, JsonSchema, Default)]
#[serde(rename_all = "kebab-case")]
pub enum RestartPolicyKind {
    Always,
    #[default]
    OnFailure,
    Never,
}

#[derive(Debug, Default, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(rename = "Backoff")]
pub struct RawBackoff {
    pub initial: Option<Spanned<DurationText>>,
    pub max: Option<Spanned<DurationText>>,
    pub multiplier: Option<Spanned<f64>>,
    /// Random spread as a fraction of the delay (0 to 1).
    pub jitter: Option<Spanned<f64>>,
}

/// Health checks. Readiness: every configured check passes `success_threshold` times in a
/// row. Liveness: `failure_threshold` failures in a row make the instance unhealthy.
#[derive(Debug, Default, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(rename = "Health")]
pub struct RawHealth {
    /// The MCP check (always on): handshake, tool list, optional smoke call, latency.
    #[serde(default)]
    pub mcp: Recover<RawMcpCheck>,
    #[serde(default)]
    pub http: Recover<RawHttpCheck>,
    #[serde(default)]
    pub tcp: Recover<RawTcpCheck>,
    #[serde(default)]
    pub command: Recover<RawCommandCheck>,
    #[serde(default)]
    pub file: Recover<RawFileCheck>,
}

#[derive(Debug, Default, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(rename = "McpCheck")]
pub struct RawMcpCheck {
    pub handshake_timeout: Option<Spanned<DurationText>>,
    /// Tools the server must list.
    pub expect_tools: Option<Vec<Spanned<String>>>,
    /// A smoke call made on every check.
    pub call: Option<Spanned<RawCall>>,
    /// The check fails when handshake + list + call take longer.
    pub max_latency: Option<Spanned<DurationText>>,
    pub interval: Option<Spanned<DurationText>>,
    pub failure_threshold: Option<Spanned<u32>>,
    pub success_threshold: Option<Spanned<u32>>,
}

#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(rename = "Call")]
pub struct RawCall {
    pub tool: Spanned<String>,
    /// Arguments of the call, as JSON.
    #[serde(default)]
    #[schemars(with = "serde_json::Map<String, serde_json::Value>")]
    pub arguments: Option<serde_json::Value>,
    pub expect: Option<RawExpect>,
}

#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(rename = "Expect")]
pub struct RawExpect {
    /// Text some content item of the result must contain.
    pub contains: Option<String>,
    /// Whether the result must (or must not) be a tool error. Default false.
    pub is_error: Option<bool>,
}

#[derive(Debug, Default, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(rename = "HttpCheck")]
pub struct RawHttpCheck {
    /// Path on the server's own address (`http` servers), or a full URL.
    pub path: Option<Spanned<String>>,
    pub url: Option<Spanned<String>>,
    /// Expected status; default: any 2xx.
    pub expect_status: Option<Spanned<u16>>,
    pub timeout: Option<Spanned<DurationText>>,
    pub interval: Option<Spanned<DurationText>>,
    pub failure_threshold: Option<Spanned<u32>>,
    pub success_threshold: Option<Spanned<u32>>,
}

#[derive(Debug, Default, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(rename = "TcpCheck")]
pub struct RawTcpCheck {
    /// `HOST:PORT`; default: the server's own port.
    pub address: Option<Spanned<String>>,
    pub timeout: Option<Spanned<DurationText>>,
    pub interval: Option<Spanned<DurationText>>,
    pub failure_threshold: Option<Spanned<u32>>,
    pub success_threshold: Option<Spanned<u32>>,
}

#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(rename = "CommandCheck")]
pub struct RawCommandCheck {
    /// Exit status 0 = healthy.
    pub command: Spanned<String>,
    #[serde(default)]
    pub args: Vec<Spanned<String>>,
    pub timeout: Option<Spanned<DurationText>>,
    pub interval: Option<Spanned<DurationText>>,
    pub failure_threshold: Option<Spanned<u32>>,
    pub success_threshold: Option<Spanned<u32>>,
}

#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(rename = "FileCheck")]
pub struct RawFileCheck {
    /// Healthy while this file exists.
    pub path: Spanned<String>,
    pub interval: Option<Spanned<DurationText>>,
    pub failure_threshold: Option<Spanned<u32>>,
    pub success_threshold: Option<Spanned<u32>>,
}

/// How new revisions replace old ones.
#[derive(Debug, Default, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(rename = "Rollout")]
pub struct RawRollout {
    pub strategy: Option<Spanned<Strategy>>,
    /// `rolling`: extra instances allowed during the update.
    pub max_surge: Option<Spanned<u32>>,
    /// `rolling`: instances allowed to be missing during the update.
    pub max_unavailable: Option<Spanned<u32>>,
    /// `blue-green`: how long the old revision is kept for an instant rollback.
    pub rollback_window: Option<Spanned<DurationText>>,
    /// `canary`: traffic steps.
    pub steps: Option<Vec<Spanned<RawStep>>>,
    #[serde(default)]
    pub analysis: Recover<RawAnalysis>,
    /// What happens to sessions on an aborted revision.
    pub on_abort: Option<Spanned<OnAbort>>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, serde::Serialize, JsonSchema, Default)]
#[serde(rename_all = "kebab-case")]
pub enum Strategy {
    Recreate,
    #[default]
    Rolling,
    BlueGreen,
    Canary,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, serde::Serialize, JsonSchema, Default)]
#[serde(rename_all = "kebab-case")]
pub enum OnAbort {
    /// End the sessions (clients re-initialize onto the stable revision).
    #[default]
    EndSessions,
    /// Let them finish; new sessions go to stable.
    Drain,
}

#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(rename = "Step")]
pub struct RawStep {
    /// Percentage of new sessions sent to the new revision (1–100).
    pub weight: Spanned<u32>,
    /// How long to hold this step: a duration, or `{}` to wait for `mcpfleet promote`.
    pub pause: Option<Spanned<RawPause>>,
}

#[derive(Debug)]
pub enum RawPause {
    For(DurationText),
    UntilPromoted,
}

#[derive(Debug, Default, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(rename = "Analysis")]
pub struct RawAnalysis {
    pub interval: Option<Spanned<DurationText>>,
    /// Highest tolerated share of JSON-RPC and transport errors (0–1). Default 0.05.
    pub max_error_rate: Option<Spanned<f64>>,
    /// Highest tolerated new-p95 / stable-p95 latency. Default 1.25.
    pub max_latency_p95_ratio: Option<Spanned<f64>>,
    /// Fewer requests in an interval make it inconclusive (never a pass). Default 20.
    pub min_requests: Option<Spanned<u32>>,
    /// Consecutive failed intervals before the rollout aborts. Default 2.
    pub failure_limit: Option<Spanned<u32>>,
    /// Count tool results with `isError: true` as errors. Default false.
    pub count_tool_errors: Option<bool>,
}

/// A duration as written: a number and a unit (`ms`, `s`, `m`, `h`), possibly repeated
/// (`1m30s`). Parsed during validation.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(transparent)]
pub struct DurationText(
    #[schemars(regex(pattern = r"^([0-9]+(\.[0-9]+)?(ms|s|m|h))+$"), example = "5s")] pub String,
);

/// A mapping from names to values that keeps the file's order and each name's location.
#[derive(Debug)]
pub struct Named<V>(pub Vec<(Spanned<String>, V)>);

impl<V> Default for Named<V> {
    fn default() -> Self {
        Named(Vec::new())
    }
}

impl<V: JsonSchema> JsonSchema for Named<V> {
    fn schema_name() -> std::borrow::Cow<'static, str> {
        format!("Named_{}", V::schema_name()).into()
    }
    fn inline_schema() -> bool {
        true
    }
    fn json_schema(generator: &mut schemars::SchemaGenerator) -> schemars::Schema {
        let value = generator.subschema_for::<V>();
        schemars::json_schema!({ "type": "object", "additionalProperties": value })
    }
}

impl<'de, V: Deserialize<'de>> Deserialize<'de> for Named<V> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct NamedVisitor<V>(std::marker::PhantomData<V>);
        impl<'de, V: Deserialize<'de>> Visitor<'de> for NamedVisitor<V> {
            type Value = Named<V>;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a mapping of names")
            }
            fn visit_unit<E: de::Error>(self) -> Result<Self::Value, E> {
                Ok(Named::default())
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
                let mut entries = Vec::with_capacity(map.size_hint().unwrap_or(0));
                while let Some(key) = map.next_key()? {
                    entries.push((key, map.next_value()?));
                }
                Ok(Named(entries))
            }
        }
        d.deserialize_any(NamedVisitor(std::marker::PhantomData))
    }
}

impl<'de> Deserialize<'de> for RawDependsOn {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct DependsVisitor;
        impl<'de> Visitor<'de> for DependsVisitor {
            type Value = RawDependsOn;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a list of server names, or a mapping of names to `{ condition: healthy|started }`")
            }
            fn visit_unit<E: de::Error>(self) -> Result<Self::Value, E> {
                Ok(RawDependsOn::default())
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
                let mut out = Vec::new();
                while let Some(server) = seq.next_element()? {
                    out.push(RawDependency {
                        server,
                        condition: None,
                    });
                }
                Ok(RawDependsOn(out))
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
                let mut out = Vec::new();
                while let Some(server) = map.next_key()? {
                    let options: Option<RawDependencyOptions> = map.next_value()?;
                    out.push(RawDependency {
                        server,
                        condition: options.and_then(|o| o.condition),
                    });
                }
                Ok(RawDependsOn(out))
            }
        }
        d.deserialize_any(DependsVisitor)
    }
}

impl JsonSchema for RawDependsOn {
    fn schema_name() -> std::borrow::Cow<'static, str> {
        "DependsOn".into()
    }
    fn json_schema(generator: &mut schemars::SchemaGenerator) -> schemars::Schema {
        let options = generator.subschema_for::<RawDependencyOptions>();
        schemars::json_schema!({
            "description": "Servers started before this one: a list of names, or names mapped to options.",
            "anyOf": [
                { "type": "array", "items": { "type": "string" } },
                { "type": "object", "additionalProperties": options }
            ]
        })
    }
}

impl<'de> Deserialize<'de> for RawPause {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct PauseVisitor;
        impl<'de> Visitor<'de> for PauseVisitor {
            type Value = RawPause;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a duration such as `5m`, or `{}` to wait for `mcpfleet promote`")
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Self::Value, E> {
                Ok(RawPause::For(DurationText(v.to_owned())))
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<Self::Value, E> {
                Ok(RawPause::For(DurationText(v.to_string())))
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
                if map.next_key::<de::IgnoredAny>()?.is_some() {
                    return Err(de::Error::custom(
                        "`pause: {}` takes no keys; write a duration or `{}`",
                    ));
                }
                Ok(RawPause::UntilPromoted)
            }
        }
        d.deserialize_any(PauseVisitor)
    }
}

impl JsonSchema for RawPause {
    fn schema_name() -> std::borrow::Cow<'static, str> {
        "Pause".into()
    }
    fn json_schema(generator: &mut schemars::SchemaGenerator) -> schemars::Schema {
        let duration = generator.subschema_for::<DurationText>();
        schemars::json_schema!({
            "description": "A duration, or {} to wait for `mcpfleet promote`.",
            "anyOf": [ duration, { "type": "object", "additionalProperties": false } ]
        })
    }
}

// --- notifications: ---------------------------------------------------------------------

/// Who is told when a deployment or rollout changes course.
#[derive(Debug, Default, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(rename = "Notifications")]
pub struct RawNotifications {
    /// HTTP endpoints that are POSTed each event they subscribe to, in order, signed.
    #[serde(default)]
    pub webhooks: Vec<Recover<Spanned<RawWebhook>>>,
}

/// One receiver of webhooks.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(rename = "Webhook")]
pub struct RawWebhook {
    /// `https://…` (or `http://` to this machine). May use `secret()`: a Slack webhook's
    /// URL is itself a credential.
    pub url: Option<Spanned<String>>,
    /// The HMAC-SHA256 key of the `X-Mcpfleet-Signature` header, as
    /// `{{ secret('name') }}`. Absent: deliveries are not signed.
    pub secret: Option<Spanned<String>>,
    /// The events sent. Default: all of them.
    pub events: Option<Vec<Spanned<WebhookEvent>>>,
    /// `json` (default): mcpfleet's own body; `slack`: `{"text": …}` for a Slack (or
    /// compatible) incoming webhook.
    pub format: Option<Spanned<WebhookFormat>>,
    /// How long one delivery attempt may take. Default `10s`.
    pub timeout: Option<Spanned<DurationText>>,
}

/// What a webhook is sent for.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Deserialize, serde::Serialize, JsonSchema,
)]
#[serde(rename_all = "kebab-case")]
pub enum WebhookEvent {
    /// A deployment began.
    Started,
    /// A canary moved to its next traffic step.
    Step,
    /// A canary was paused (`mcpfleet pause`). A deployment that stops where it failed
    /// (`on_failure: pause`) is `failed`.
    Paused,
    /// A canary was aborted (by `mcpfleet abort` or its analysis).
    Aborted,
    /// What a failed deployment or aborted canary changed is undone.
    RolledBack,
    /// A canary's revision took all traffic.
    Promoted,
    /// A deployment ended with a server not ready (rolled back, paused or left as it is).
    Failed,
    /// A deployment ended with every server ready.
    Succeeded,
}

impl WebhookEvent {
    /// Every event, in declaration order.
    pub const ALL: [WebhookEvent; 8] = [
        WebhookEvent::Started,
        WebhookEvent::Step,
        WebhookEvent::Paused,
        WebhookEvent::Aborted,
        WebhookEvent::RolledBack,
        WebhookEvent::Promoted,
        WebhookEvent::Failed,
        WebhookEvent::Succeeded,
    ];

    /// The event's one name: in the fleet file and in the body sent.
    pub fn as_str(self) -> &'static str {
        match self {
            WebhookEvent::Started => "started",
            WebhookEvent::Step => "step",
            WebhookEvent::Paused => "paused",
            WebhookEvent::Aborted => "aborted",
            WebhookEvent::RolledBack => "rolled-back",
            WebhookEvent::Promoted => "promoted",
            WebhookEvent::Failed => "failed",
            WebhookEvent::Succeeded => "succeeded",
        }
    }
}

/// The body a webhook receiver is sent.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize, serde::Serialize, JsonSchema)]
#[serde(rename_all = "kebab-case")]
pub enum WebhookFormat {
    /// `{event, fleet, server?, revision?, deployment?, message, time}`.
    #[default]
    Json,
    /// `{"text": "…"}`: the same facts in one line.
    Slack,
}
