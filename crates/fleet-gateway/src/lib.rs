//! The mcpfleet data plane: one Streamable HTTP endpoint per server
//! (`/mcp/{server}`), fronting that server's instances.
//!
//! Owns:
//! - routing: the route table published by the engine on a `watch` channel (server
//!   → revisions → weight → instances); new sessions and stateless modern requests
//!   pick a revision by weight, then the instance with the fewest outstanding
//!   requests;
//! - sessions: the gateway mints its own `Mcp-Session-Id`s, sealed (AEAD) records of
//!   (server, revision, instance, token, upstream session) keyed by 128 random bits; a session stays pinned
//!   to its revision and bound to its token; unknown or expired ids get 404 so clients
//!   re-initialize; the number of sessions is bounded, in all and per token;
//! - stdio upstreams: the gateway owns the pipes, one process per session or one shared
//!   by all (ids and progress tokens rewritten, server→client requests delivered only
//!   to the session that owns them);
//! - raw passthrough of JSON-RPC (never re-encoded), SSE streamed unbuffered,
//!   `Mcp-*` headers forwarded, the client's credentials and hop-by-hop headers not;
//! - the listener: HTTP/1.1 connections with header-read, body-read and idle
//!   timeouts, so slow clients cannot hold connections before admission; TLS from
//!   certificate files read again when they change ([`ServerTls`]);
//! - admission: `Host`/`Origin` (DNS rebinding), scoped bearer tokens, body size,
//!   per-token (or per-IP) rate limits, upstream timeouts;
//! - the upstream connections: pooled HTTP/1.1, `https://` over TLS ([`fleet_tls`]);
//! - request metrics per (server, revision) for rollout analysis and Prometheus, and
//!   the tool-call audit records;
//! - a `gateway request` span per relayed request when traces are exported, continuing
//!   the client's W3C `traceparent` and passing the span's own on to HTTP upstreams.
//!
//! Does not own: which instances exist or how healthy they are (the engine decides
//! and publishes a new route table), processes (the runtime), the admin API and
//! `/metrics` endpoint (the control plane's registry holds [`Gateway::metrics_collector`]).
//!
//! Replicas: a session id is sealed ([`SessionKeys`]) with what serving the session
//! takes, so a replica holding the same keys serves a session another opened (an HTTP
//! upstream's); a replica relays the servers whose stdio pipes it does not hold to
//! their home ([`Gateway::set_home`]), and reports its traffic there for canary analysis.

mod audit;
mod config;
mod data_plane;
mod distribution;
mod error;
mod framing;
mod home;
mod jsonrpc;
mod listener;
mod metrics;
mod pins;
mod proxy;
mod reports;
mod request_span;
mod seal;
mod security;
mod server;
mod sessions;
mod skim;
mod stdio_http;
mod tls;
mod trace_context;
mod upstream;

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::Json;
use axum::extract::Request;
use axum::http::StatusCode;
use axum::response::{IntoResponse as _, Response};
use fleet_routes::table::RouteTable;
use fleet_stdio::StdioInstances;
use tokio::net::TcpListener;
use tokio::sync::watch;

pub use audit::AuditSink;
pub use config::{GatewayConfig, RateLimit, TokenConfig, TokenConfigError, decode_hex32};
pub use error::{GatewayError, UpstreamFailure};
pub use metrics::{
    GatewayMetrics, Histogram, LATENCY_BUCKETS, MethodCount, MetricsSnapshot, Outcome,
    OutcomeCounts, RevisionStats, ToolCount,
};
pub use seal::{SessionKeyError, SessionKeys};
pub use security::presented_token;
pub use tls::{ServerTls, TlsFileError};
pub use trace_context::TraceId;

use distribution::RouteWatch;
use metrics::Registry;
use security::{OriginPolicy, RateLimiter, Tokens};
use sessions::Sessions;

/// State shared by every request.
#[derive(Debug)]
struct Shared {
    /// As the gateway started; what [`Admission`] holds is read from there instead.
    config: GatewayConfig,
    policy: OriginPolicy,
    /// Replaced as a whole by [`Gateway::set_tokens`] and [`Gateway::set_limits`]; a
    /// request reads it once.
    admission: parking_lot::RwLock<Arc<Admission>>,
    routes: RouteWatch,
    sessions: Sessions,
    registry: Arc<Registry>,
    client: upstream::UpstreamClient,
    pins: Arc<pins::Pins>,
    /// Seal the ids clients hold (see [`seal`]).
    keys: SessionKeys,
    /// At a home, what its replicas reported.
    reports: reports::Reports,
}

/// What a request is admitted and bounded by: the settings a running gateway changes.
#[derive(Debug, Clone)]
struct Admission {
    tokens: Arc<Tokens>,
    rate_limit: Option<RateLimit>,
    /// Its buckets survive a token swap; a new rate starts new buckets.
    limiter: Arc<RateLimiter>,
    max_session_concurrency: usize,
    upstream_timeout: Duration,
}

/// The limits a running gateway can change ([`Gateway::set_limits`]); the rest of
/// [`GatewayConfig`] is fixed when it starts. Serialized as gateway replicas receive them.
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct LiveLimits {
    /// [`GatewayConfig::rate_limit`].
    pub rate_limit: Option<RateLimit>,
    /// [`GatewayConfig::max_session_concurrency`].
    pub max_session_concurrency: usize,
    /// [`GatewayConfig::upstream_timeout`].
    pub upstream_timeout: Duration,
    /// [`GatewayConfig::max_sessions`].
    pub max_sessions: usize,
    /// [`GatewayConfig::max_sessions_per_token`].
    pub max_sessions_per_token: usize,
}

/// A gateway: its router, plus read access to its metrics. Cheap to clone.
#[derive(Debug, Clone)]
pub struct Gateway {
    shared: Arc<Shared>,
}

impl Gateway {
    /// A gateway with `config`, following the route tables published on `routes`; the
    /// stdio instances they name are looked up in `stdio`.
    pub fn new(
        config: GatewayConfig,
        routes: watch::Receiver<RouteTable>,
        stdio: StdioInstances,
    ) -> Self {
        let registry = Arc::new(Registry::default());
        // The upstream client names its provider; this is for reqwest clients built
        // elsewhere in the process, which panic without a default one.
        fleet_tls::install_default_provider();
        let client = upstream::UpstreamClient::new(config.upstream_timeout);
        let admission = Admission {
            tokens: Arc::new(Tokens::new(config.tokens.clone())),
            rate_limit: config.rate_limit,
            limiter: Arc::new(RateLimiter::new(config.rate_limit)),
            max_session_concurrency: config.max_session_concurrency,
            upstream_timeout: config.upstream_timeout,
        };
        let shared = Shared {
            policy: OriginPolicy::new(&config),
            admission: parking_lot::RwLock::new(Arc::new(admission)),
            routes: RouteWatch::new(routes, stdio, Arc::clone(&registry)),
            sessions: Sessions::new(
                config.session_idle_timeout,
                sessions::Limits {
                    max_sessions: config.max_sessions.max(1),
                    max_sessions_per_caller: config.max_sessions_per_token.max(1),
                },
            ),
            registry,
            client,
            pins: Arc::default(),
            keys: config.session_keys.clone().unwrap_or_else(|| {
                SessionKeys::ephemeral().unwrap_or_else(|error| {
                    tracing::error!(%error, "no session can be opened");
                    SessionKeys::none()
                })
            }),
            reports: reports::Reports::default(),
            config,
        };
        Self {
            shared: Arc::new(shared),
        }
    }

    /// Every request counter and latency histogram, and live sessions per server.
    pub fn metrics(&self) -> MetricsSnapshot {
        self.shared
            .registry
            .snapshot(self.shared.sessions.active_per_server())
    }

    /// The gateway's metric families, for a prometheus-client registry (read live at
    /// each scrape).
    pub fn metrics_collector(&self) -> GatewayMetrics {
        GatewayMetrics {
            gateway: self.clone(),
        }
    }

    /// The gateway's families alone in the Prometheus text format (version 0.0.4), for
    /// whoever holds a gateway but no registry.
    pub fn prometheus_text(&self) -> String {
        let mut registry = prometheus_client::registry::Registry::default();
        registry.register_collector(Box::new(self.metrics_collector()));
        let mut text = String::new();
        // Writing into a String cannot fail.
        let _ = prometheus_client::encoding::prometheus_text::encode(&mut text, &registry);
        text
    }

    fn requires_auth(&self) -> bool {
        !self.shared.admission().tokens.is_empty()
    }

    /// Replaces the bearer tokens while the gateway runs: the next request is checked
    /// against `tokens` (a removed token is refused from then on, also on the sessions it
    /// opened).
    ///
    /// # Errors
    /// `tokens` is empty while the gateway listens beyond loopback (auth before exposure),
    /// and the old tokens stay.
    pub fn set_tokens(&self, tokens: Vec<TokenConfig>) -> Result<(), ServeError> {
        if tokens.is_empty()
            && self.requires_auth()
            && !self.shared.config.listen.ip().is_loopback()
        {
            return Err(ServeError::NonLoopbackWithoutAuth {
                address: self.shared.config.listen,
            });
        }
        self.shared.change_admission(|admission| {
            admission.tokens = Arc::new(Tokens::new(tokens));
        });
        Ok(())
    }

    /// Makes this gateway a replica of the one at `home` (`scheme://authority`, the
    /// leading control plane's gateway): the servers whose stdio instances it does not
    /// hold are relayed there whole, and, with shared session keys, its traffic counters
    /// are reported there every second for canary analysis. `None` serves only what it
    /// holds.
    pub fn set_home(&self, home: Option<axum::http::Uri>) {
        self.shared.routes.set_home(home);
    }

    /// Changes the limits while the gateway runs: the next request is held to `limits`
    /// (a new rate limit starts with full buckets; sessions past a lowered cap give way
    /// as new ones arrive, as the caps say).
    pub fn set_limits(&self, limits: LiveLimits) {
        self.shared.change_admission(|admission| {
            if admission.rate_limit != limits.rate_limit {
                admission.rate_limit = limits.rate_limit;
                admission.limiter = Arc::new(RateLimiter::new(limits.rate_limit));
            }
            admission.max_session_concurrency = limits.max_session_concurrency;
            admission.upstream_timeout = limits.upstream_timeout;
        });
        self.shared.sessions.set_limits(sessions::Limits {
            max_sessions: limits.max_sessions.max(1),
            max_sessions_per_caller: limits.max_sessions_per_token.max(1),
        });
    }
}

impl Shared {
    /// What requests are admitted and bounded by, now.
    fn admission(&self) -> Arc<Admission> {
        Arc::clone(&self.admission.read())
    }

    fn change_admission(&self, change: impl FnOnce(&mut Admission)) {
        let mut admission = self.admission.write();
        let mut changed = Admission::clone(&admission);
        change(&mut changed);
        *admission = Arc::new(changed);
    }
}

/// Why [`serve`] stopped or did not start.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    /// The listener is not on a loopback address and no token is configured.
    #[error("refusing to serve on non-loopback {address} without bearer tokens")]
    NonLoopbackWithoutAuth {
        /// The listener's address.
        address: SocketAddr,
    },
    /// Accepting or serving connections failed.
    #[error("gateway listener: {0}")]
    Io(#[from] std::io::Error),
}

/// Serves `gateway` on `listener` until `shutdown` completes, then finishes the
/// requests in flight (open SSE streams are ended).
///
/// # Errors
/// [`ServeError::NonLoopbackWithoutAuth`] before serving anything when the listener
/// is reachable from other machines and no token is configured;
/// [`ServeError::Io`] when the listener's address cannot be read (a failed accept is
/// logged and the next one tried).
pub async fn serve(
    listener: TcpListener,
    gateway: Gateway,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), ServeError> {
    let address = listener.local_addr()?;
    if !address.ip().is_loopback() && !gateway.requires_auth() {
        return Err(ServeError::NonLoopbackWithoutAuth { address });
    }
    // Idle sessions end on time even when no new session comes along: a per-session
    // stdio process is stopped when its session ends.
    let reporter = tokio::spawn(reports::send(Arc::clone(&gateway.shared)));
    let sweeper = tokio::spawn({
        let shared = Arc::clone(&gateway.shared);
        async move {
            let mut tick = tokio::time::interval(shared.sessions.sweep_interval());
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tick.tick().await;
                proxy::end_sessions(&shared, shared.sessions.sweep());
            }
        }
    });
    let config = &gateway.shared.config;
    let timeouts = server::ConnectionTimeouts {
        header_read: config.header_read_timeout,
        body_read: config.body_read_timeout,
        idle: config.idle_timeout,
    };
    let tls = config.tls.clone();
    let acceptor = tls.as_ref().map(ServerTls::acceptor);
    let reloader = tls.map(|tls| tokio::spawn(tls.reload_on_change()));
    let data_plane = data_plane::DataPlane::new(Arc::clone(&gateway.shared));
    listener::run(listener, data_plane, timeouts, acceptor, shutdown).await;
    sweeper.abort();
    reporter.abort();
    if let Some(reloader) = reloader {
        reloader.abort();
    }
    Ok(())
}

/// 200 when every server can take a new session; else 503 naming those that cannot.
/// The `Host`/`Origin` policy of `/mcp` applies: a page on a rebound DNS name learns
/// nothing about the fleet.
fn readyz(shared: &Shared, request: &Request) -> Response {
    if let Err(error) = shared.policy.check_request(request) {
        return error.into_response();
    }
    let routes = shared.routes.current();
    let missing = routes.servers_without_instances();
    if missing.is_empty() {
        (StatusCode::OK, Json(serde_json::json!({ "ready": true }))).into_response()
    } else {
        (
            StatusCode::SERVICE_UNAVAILABLE,
            Json(serde_json::json!({ "ready": false, "servers_without_instances": missing })),
        )
            .into_response()
    }
}
