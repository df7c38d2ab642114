//! Gateway replicas: extra processes (`mcpfleet gateway`) serving the same `/mcp/{server}`
//! data plane as the control plane's own gateway, routing by what the leading control plane
//! publishes to the store they share.
//!
//! The leader publishes a [`View`] — its route table, gateway tokens (hashes), live limits
//! and where its own gateway is (`stdio_home`) — whenever one of them changes
//! ([`ViewPublisher`]), through its fenced store handle: a deposed leader cannot publish. A
//! replica ([`Replica`]) runs no server and holds no lease: it polls the view's version and
//! applies a new view to its gateway as the control plane applies a deployment's, and
//! relays the stdio servers' traffic to the leader's gateway (`stdio_home`).
//!
//! Polling, not PostgreSQL's LISTEN/NOTIFY: the store is one connection used by one call at
//! a time, and a notification arrives only on a connection that listens and is read
//! between calls; a poll is one read of one number every [`POLL`], and survives a
//! reconnect without missing a change.
//!
//! No secret reaches the store: an instance of a remote server whose URL carries a secret
//! is published without its URL ([`Withheld`]) and each replica renders that URL from its
//! own fleet file, with the secrets its host gives it.

use crate::event_log::{self, AuditWriter};
use crate::leadership::Signals;
use crate::{StartError, StoreLocation, gateway_config, gateway_scheme};
use fleet_api::types::GatewayToken;
use fleet_routes::table::{Instance, RevisionRoute, RouteTable};
use fleet_spec::model::{Transport, ValidFleet};
use fleet_spec::template::{Host, InstanceTemplates};
use fleet_store::{StateStore, StoreError};
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::watch;

/// How often a replica reads the view's version.
const POLL: Duration = Duration::from_millis(500);

/// How long a publisher waits before publishing again after the store refused a view.
const REPUBLISH_AFTER: Duration = Duration::from_secs(1);

/// What the leader publishes for gateway replicas: everything its gateway routes and
/// admits by.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub(crate) struct View {
    /// The deployed fleet's servers: a replica's `/readyz` names those without instances.
    servers: BTreeSet<String>,
    /// The route table, less the instances in `withheld`.
    routes: RouteTable,
    /// Instances whose URL carries a secret: left out of `routes`.
    withheld: Vec<Withheld>,
    /// The gateway's tokens, by their hashes.
    tokens: Vec<GatewayToken>,
    limits: fleet_gateway::LiveLimits,
    /// The leader's own gateway (`scheme://host:port`): stdio servers' pipes are there,
    /// and a replica relays their traffic to it.
    stdio_home: Option<String>,
}

/// An instance of a remote server whose URL carries a secret, published without it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
struct Withheld {
    server: String,
    revision: u64,
    weight: u32,
    id: String,
}

/// What of a deployed fleet the view carries besides the routes.
#[derive(Debug, Clone, PartialEq)]
struct Settings {
    servers: BTreeSet<String>,
    /// Remote servers whose URL carries a secret.
    secret_urls: BTreeSet<String>,
    tokens: Vec<GatewayToken>,
    limits: fleet_gateway::LiveLimits,
}

impl Settings {
    fn of(fleet: &ValidFleet) -> Self {
        Settings {
            servers: fleet.servers.iter().map(|s| s.name.clone()).collect(),
            secret_urls: fleet
                .servers
                .iter()
                .filter(|s| {
                    matches!(&s.transport, Transport::Remote { url, .. } if url.shown.contains("***"))
                })
                .map(|s| s.name.clone())
                .collect(),
            tokens: crate::token_summaries(fleet),
            limits: crate::live_limits(&fleet.gateway),
        }
    }
}

impl View {
    fn new(routes: &RouteTable, settings: &Settings, stdio_home: Option<&str>) -> Self {
        let mut withheld = Vec::new();
        let mut published = Vec::new();
        for (server, revisions) in routes.servers() {
            if !settings.secret_urls.contains(server) {
                published.push((server.to_owned(), revisions.to_vec()));
                continue;
            }
            let mut kept = Vec::new();
            for revision in revisions {
                for instance in &revision.instances {
                    withheld.push(Withheld {
                        server: server.to_owned(),
                        revision: revision.revision,
                        weight: revision.weight,
                        id: instance.id.clone(),
                    });
                }
                kept.push(RevisionRoute {
                    instances: Vec::new(),
                    ..revision.clone()
                });
            }
            published.push((server.to_owned(), kept));
        }
        View {
            servers: settings.servers.clone(),
            // The table it came from was valid, and taking instances out keeps it so.
            routes: RouteTable::new(published).unwrap_or_default(),
            withheld,
            tokens: settings.tokens.clone(),
            limits: settings.limits,
            stdio_home: stdio_home.map(str::to_owned),
        }
    }

    /// The route table a replica routes by: the published one, the withheld instances with
    /// the URLs `replica_fleet` renders for them, and every server of the deployed fleet
    /// (one without instances is not ready). A withheld instance whose URL cannot be
    /// rendered (the replica's file lacks the server or its secret) is left out, said.
    fn routes(
        &self,
        replica_fleet: &ValidFleet,
        host: &Arc<dyn Host>,
    ) -> Result<RouteTable, String> {
        let mut servers: BTreeMap<String, Vec<RevisionRoute>> = self
            .routes
            .servers()
            .map(|(name, revisions)| (name.to_owned(), revisions.to_vec()))
            .collect();
        for name in &self.servers {
            servers.entry(name.clone()).or_default();
        }
        for withheld in &self.withheld {
            let url = match remote_url(replica_fleet, host, &withheld.server, withheld.revision) {
                Ok(url) => url,
                Err(why) => {
                    tracing::warn!(
                        "`{}` instance `{}` is left out: its URL carries a secret, and this replica cannot render it from its fleet file: {why}",
                        withheld.server,
                        withheld.id
                    );
                    continue;
                }
            };
            let revisions = servers.entry(withheld.server.clone()).or_default();
            let at = match revisions
                .iter()
                .position(|r| r.revision == withheld.revision)
            {
                Some(at) => at,
                None => {
                    revisions.push(RevisionRoute {
                        revision: withheld.revision,
                        weight: withheld.weight,
                        instances: Vec::new(),
                    });
                    revisions.len() - 1
                }
            };
            revisions[at]
                .instances
                .push(Instance::http(withheld.id.clone(), url));
        }
        RouteTable::new(servers).map_err(|errors| {
            let said: Vec<String> = errors.iter().map(ToString::to_string).collect();
            said.join("; ")
        })
    }
}

/// The URL of remote server `server` as `fleet` writes it, its secrets read.
fn remote_url(
    fleet: &ValidFleet,
    host: &Arc<dyn Host>,
    server: &str,
    revision: u64,
) -> Result<String, String> {
    let Some(Transport::Remote { url, .. }) = fleet.server(server).map(|s| &s.transport) else {
        return Err(format!("the fleet file has no remote server `{server}`"));
    };
    InstanceTemplates::new(fleet, host.clone(), None, revision)
        .and_then(|templates| templates.render(url, server))
        .map_err(|e| e.message)
}

/// The leader's side: publishes the view whenever the routes or a deployment's gateway
/// settings change. Cheap to clone.
#[derive(Debug, Clone)]
pub(crate) struct ViewPublisher {
    settings: watch::Sender<Settings>,
}

impl ViewPublisher {
    /// Publishes the view of `fleet`'s gateway following `routes` to `store` (the leader's
    /// fenced handle), from now until the routes stop or the store fences it (the leader
    /// then stops too, see `leadership`). `stdio_home` is where replicas reach the leader's
    /// own gateway.
    pub(crate) fn start(
        store: Arc<dyn StateStore>,
        mut routes: watch::Receiver<RouteTable>,
        fleet: &ValidFleet,
        stdio_home: Option<String>,
    ) -> Self {
        let (settings, mut changes) = watch::channel(Settings::of(fleet));
        tokio::spawn(async move {
            let mut published: Option<View> = None;
            loop {
                let view = View::new(
                    &routes.borrow_and_update(),
                    &changes.borrow_and_update(),
                    stdio_home.as_deref(),
                );
                if published.as_ref() != Some(&view) {
                    match publish(&*store, &view).await {
                        Ok(()) => published = Some(view),
                        Err(e @ StoreError::Fenced { .. }) => {
                            tracing::warn!("the gateway view is no longer published: {e}");
                            return;
                        }
                        Err(e) => {
                            tracing::warn!(
                                "the gateway view was not published (again in {}s): {e}",
                                REPUBLISH_AFTER.as_secs()
                            );
                            tokio::time::sleep(REPUBLISH_AFTER).await;
                            continue;
                        }
                    }
                }
                tokio::select! {
                    changed = routes.changed() => if changed.is_err() { return },
                    changed = changes.changed() => if changed.is_err() { return },
                }
            }
        });
        ViewPublisher { settings }
    }

    /// A deployment of `fleet` starts: its tokens and limits are published.
    pub(crate) fn follow(&self, fleet: &ValidFleet) {
        self.settings.send_if_modified(|settings| {
            let new = Settings::of(fleet);
            let changed = *settings != new;
            *settings = new;
            changed
        });
    }
}

async fn publish(store: &dyn StateStore, view: &View) -> Result<(), StoreError> {
    let body = serde_json::to_value(view)
        .map_err(|e| StoreError::Database(format!("the gateway view cannot be written: {e}")))?;
    let version = store.publish_gateway_view(body).await?;
    tracing::debug!(version, "published the gateway view");
    Ok(())
}

/// Where the leader's replicas reach its own gateway: the bound address locally, the
/// control plane's Service on a pod's network.
pub(crate) fn stdio_home(
    fleet: &ValidFleet,
    listen: crate::Listen,
    shown: SocketAddr,
) -> Option<String> {
    let scheme = gateway_scheme(&fleet.gateway);
    match listen {
        crate::Listen::AsWritten => Some(format!("{scheme}://{shown}")),
        crate::Listen::PodNetwork => fleet_manifests::gateway_hosts(fleet)
            .into_iter()
            .find(|host| host.ends_with(".svc"))
            .map(|service| format!("{scheme}://{service}:{}", shown.port())),
    }
}

/// Where a gateway replica listens.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReplicaListen {
    /// At `gateway.listen`.
    AsWritten,
    /// At this address (`--listen`).
    At(SocketAddr),
    /// On every address of the machine at `gateway.listen`'s port, accepting the rendered
    /// Services' and Ingress's names as `Host` (`--pod-network`, as
    /// [`crate::Listen::PodNetwork`]); `/metrics` and `/healthz` at the admin port
    /// ([`fleet_spec::model::Admin::pod_port`]), for Prometheus.
    PodNetwork,
}

/// A running gateway replica (`mcpfleet gateway`).
pub struct Replica {
    url: String,
    metrics_url: Option<String>,
    store: String,
    shutdown: watch::Sender<bool>,
    serving: tokio::task::JoinHandle<()>,
    following: tokio::task::AbortHandle,
    audit: AuditWriter,
    signals: Signals,
}

impl Replica {
    /// Connects to `fleet`'s store (it must be PostgreSQL: `state.postgres`), binds where
    /// `listen` says and serves the gateway, following the view the leading
    /// control plane publishes. Until the first view arrives `/readyz` and every `/mcp`
    /// request answer 503: the fleet's servers have no instances yet.
    ///
    /// # Errors
    /// [`StartError::Store`] when the fleet's store is not PostgreSQL or cannot be reached;
    /// [`StartError::Gateway`] when the address is taken or not allowed;
    /// [`StartError::GatewayTls`] when `gateway.tls`'s files cannot be used;
    /// [`StartError::SessionKeys`] when a `gateway.session_keys` secret cannot be read.
    pub async fn start(
        fleet: ValidFleet,
        host: Arc<dyn Host>,
        listen: ReplicaListen,
        metrics: Option<SocketAddr>,
    ) -> Result<Self, StartError> {
        // Handled from the start: a signal while connecting ends the replica cleanly.
        let signals = Signals::new();
        let location = StoreLocation::of(&fleet, host.clone())?;
        let StoreLocation::Postgres { shown, .. } = &location else {
            return Err(StartError::Store(StoreError::Invalid {
                what: NEEDS_POSTGRES.to_owned(),
            }));
        };
        let store_name = shown.clone();
        // A replica has no state directory: PostgreSQL needs none.
        let store = location.open(std::path::Path::new("")).await?;
        let address = match listen {
            ReplicaListen::AsWritten => fleet.gateway.listen,
            ReplicaListen::At(address) => address,
            ReplicaListen::PodNetwork => crate::Listen::PodNetwork.address(fleet.gateway.listen),
        };
        let listener =
            tokio::net::TcpListener::bind(address)
                .await
                .map_err(|e| StartError::Gateway {
                    address: address.to_string(),
                    message: if e.kind() == std::io::ErrorKind::AddrInUse {
                        "the address is in use (the control plane's gateway, on this machine?); give the replica its own with --listen ADDR".into()
                    } else {
                        e.to_string()
                    },
                })?;
        let bound = listener.local_addr().map_err(|e| StartError::Gateway {
            address: address.to_string(),
            message: e.to_string(),
        })?;
        let mut config = gateway_config(&fleet, bound, host.clone())?;
        if listen == ReplicaListen::PodNetwork {
            config.allowed_hosts = fleet_manifests::gateway_hosts(&fleet);
        }
        let (audit_sink, audit) = event_log::audit_to_store(store.clone());
        config.audit = Some(audit_sink);
        // Until the first view: every server of the file, none with an instance.
        let waiting = RouteTable::new(fleet.servers.iter().map(|s| (s.name.clone(), Vec::new())))
            .unwrap_or_default();
        let (routes, followed) = watch::channel(waiting);
        // No stdio server runs here: their pipes are the leader's.
        let gateway =
            fleet_gateway::Gateway::new(config, followed, fleet_stdio::StdioInstances::new());
        let url = format!("{}://{bound}", gateway_scheme(&fleet.gateway));
        let metrics = match (metrics, listen) {
            (Some(address), _) => Some(address),
            (None, ReplicaListen::PodNetwork) => Some(SocketAddr::new(
                crate::Listen::PodNetwork.address(fleet.gateway.listen).ip(),
                fleet.admin.pod_port(),
            )),
            (None, _) => None,
        };
        let metrics_url = match metrics {
            Some(address) => Some(serve_metrics(address, &gateway).await?),
            None => None,
        };
        let following =
            tokio::spawn(follow(store, fleet, host, gateway.clone(), routes)).abort_handle();
        let (shutdown, mut stop) = watch::channel(false);
        let serving = tokio::spawn(async move {
            let stop = async move {
                let _ = stop.wait_for(|s| *s).await;
            };
            if let Err(e) = fleet_gateway::serve(listener, gateway, stop).await {
                tracing::error!("the gateway replica stopped: {e}");
            }
        });
        Ok(Replica {
            url,
            metrics_url,
            store: store_name,
            shutdown,
            serving,
            following,
            audit,
            signals,
        })
    }

    /// `scheme://host:port` as bound: where clients reach this replica.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// `http://host:port/metrics` as bound, when it serves its metrics.
    pub fn metrics_url(&self) -> Option<&str> {
        self.metrics_url.as_deref()
    }

    /// The store it follows, named without its password.
    pub fn store(&self) -> &str {
        &self.store
    }

    /// Serves until SIGTERM or SIGINT, then finishes the requests in flight (open streams
    /// are ended) and writes the last tool calls' audit records.
    pub async fn run_until_signal(mut self) {
        self.signals.received().await;
        tracing::info!("stopping the gateway replica");
        self.following.abort();
        self.shutdown.send_replace(true);
        let _ = (&mut self.serving).await;
        let _ = tokio::time::timeout(Duration::from_secs(5), self.audit.flush()).await;
    }
}

impl std::fmt::Debug for Replica {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Replica")
            .field("url", &self.url)
            .field("store", &self.store)
            .finish_non_exhaustive()
    }
}

/// Serves `gateway`'s metric families at `GET /metrics` (and `GET /healthz`) on `address`,
/// for as long as the process runs; returns the metrics' URL as bound.
///
/// # Errors
/// [`StartError::Admin`] when the address is taken or not allowed.
async fn serve_metrics(
    address: SocketAddr,
    gateway: &fleet_gateway::Gateway,
) -> Result<String, StartError> {
    let failed = |e: std::io::Error| StartError::Admin {
        address: address.to_string(),
        message: e.to_string(),
    };
    let listener = tokio::net::TcpListener::bind(address)
        .await
        .map_err(failed)?;
    let bound = listener.local_addr().map_err(failed)?;
    let mut registry = prometheus_client::registry::Registry::default();
    registry.register_collector(Box::new(gateway.metrics_collector()));
    let registry = Arc::new(registry);
    let router = axum::Router::new()
        .route(
            "/metrics",
            axum::routing::get(move |headers: axum::http::HeaderMap| async move {
                crate::api::metrics_text(&registry, &headers)
            }),
        )
        .route("/healthz", axum::routing::get(|| async { "ok\n" }));
    tokio::spawn(async move {
        if let Err(e) = axum::serve(listener, router).await {
            tracing::error!("the replica's metrics listener stopped: {e}");
        }
    });
    Ok(format!("http://{bound}/metrics"))
}

/// Polls the store for a new view every [`POLL`] and applies each to `gateway`: its routes
/// through `routes`, its tokens and limits as a deployment's are applied. A view that
/// cannot be used, or a store that cannot be read, leaves the gateway routing by the last
/// good view (said once per failure streak).
async fn follow(
    store: Arc<dyn StateStore>,
    fleet: ValidFleet,
    host: Arc<dyn Host>,
    gateway: fleet_gateway::Gateway,
    routes: watch::Sender<RouteTable>,
) {
    let mut known = 0;
    let mut failing = false;
    loop {
        match store.gateway_view(known).await {
            Ok(Some(published)) => {
                known = published.version;
                failing = false;
                match serde_json::from_value::<View>(published.body) {
                    Ok(view) => apply(&view, &fleet, &host, &gateway, &routes, known),
                    Err(e) => tracing::error!(
                        "gateway view {known} cannot be used (a newer mcpfleet's?); keeping the last one: {e}"
                    ),
                }
            }
            Ok(None) => failing = false,
            Err(e) => {
                if !failing {
                    tracing::warn!(
                        "the gateway view cannot be read; routing by the last one until it can: {e}"
                    );
                }
                failing = true;
            }
        }
        tokio::time::sleep(POLL).await;
    }
}

fn apply(
    view: &View,
    fleet: &ValidFleet,
    host: &Arc<dyn Host>,
    gateway: &fleet_gateway::Gateway,
    routes: &watch::Sender<RouteTable>,
    version: u64,
) {
    match view.routes(fleet, host) {
        Ok(table) => {
            routes.send_if_modified(|current| {
                let changed = *current != table;
                *current = table;
                changed
            });
        }
        Err(why) => tracing::error!(
            "the routes of gateway view {version} are not valid; keeping the last ones: {why}"
        ),
    }
    let tokens = view
        .tokens
        .iter()
        .map(|t| fleet_gateway::TokenConfig::new(&t.name, &t.sha256, &t.servers))
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| e.to_string())
        .and_then(|tokens| gateway.set_tokens(tokens).map_err(|e| e.to_string()));
    if let Err(why) = tokens {
        tracing::error!("the gateway keeps its tokens (gateway view {version}): {why}");
    }
    gateway.set_limits(view.limits);
    let home = view.stdio_home.as_deref().and_then(|home| {
        home.parse()
            .inspect_err(|e| {
                tracing::error!(
                    "gateway view {version}: the stdio home `{home}` is not a URL ({e}); stdio servers are not served here"
                );
            })
            .ok()
    });
    gateway.set_home(home);
    tracing::info!("following gateway view {version}");
}

/// Why `mcpfleet gateway` needs `state.postgres`.
pub const NEEDS_POSTGRES: &str = "a gateway replica reads its routes and tokens from the store it shares with the control plane, so the fleet's state must be in PostgreSQL (`state.postgres`); a SQLite store is one process's";

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;

    /// A host whose only environment variable is the remote server's key, when it has it.
    struct KeyHost(bool);

    impl Host for KeyHost {
        fn env_var(&self, name: &str) -> Option<String> {
            (self.0 && name == "REMOTE_KEY").then(|| "s3cret-key".to_owned())
        }
        fn file_exists(&self, _: &Path) -> bool {
            false
        }
        fn read_file(&self, path: &Path) -> std::io::Result<String> {
            Err(std::io::Error::new(
                std::io::ErrorKind::NotFound,
                path.display().to_string(),
            ))
        }
    }

    fn fleet() -> ValidFleet {
        crate::deploy::validate(
            r#"
version: 1
name: views
secrets:
  key: { env: REMOTE_KEY }
servers:
  api:
    http: { command: /bin/true, port: 9000 }
  search:
    remote: { url: "https://mcp.example.com/mcp?key={{ secret('key') }}" }
  idle:
    http: { command: /bin/true, port: 9001 }
gateway:
  listen: 127.0.0.1:0
"#,
            "mcpfleet.yaml",
            None,
        )
        .unwrap()
    }

    /// `search` at its secret URL and `api`, as the leader's engine routes them.
    fn leader_routes() -> RouteTable {
        RouteTable::new([
            (
                "api".to_owned(),
                vec![RevisionRoute {
                    revision: 1,
                    weight: 100,
                    instances: vec![Instance::http("api-1", "http://127.0.0.1:9000/mcp")],
                }],
            ),
            (
                "search".to_owned(),
                vec![RevisionRoute {
                    revision: 1,
                    weight: 100,
                    instances: vec![Instance::http(
                        "search-1",
                        "https://mcp.example.com/mcp?key=s3cret-key",
                    )],
                }],
            ),
        ])
        .unwrap()
    }

    #[test]
    fn a_secret_in_a_url_never_reaches_the_view_and_a_replica_renders_it_from_its_file() {
        let fleet = fleet();
        let view = View::new(
            &leader_routes(),
            &Settings::of(&fleet),
            Some("http://127.0.0.1:7400"),
        );
        let published = serde_json::to_string(&view).unwrap();
        assert!(!published.contains("s3cret"), "{published}");
        assert!(published.contains("search-1"), "{published}");
        let read: View = serde_json::from_str(&published).unwrap();
        assert_eq!(read, view);

        let host: Arc<dyn Host> = Arc::new(KeyHost(true));
        let routes = read.routes(&fleet, &host).unwrap();
        assert_eq!(routes.get("search"), leader_routes().get("search"));
        assert_eq!(routes.get("api"), leader_routes().get("api"));
        // A server of the deployed fleet without routes yet is one the replica is not ready
        // for.
        assert_eq!(routes.get("idle"), Some(&[][..]));
    }

    #[test]
    fn a_replica_whose_file_cannot_render_a_withheld_url_leaves_that_instance_out() {
        let fleet = fleet();
        let view = View::new(&leader_routes(), &Settings::of(&fleet), None);
        let no_secrets: Arc<dyn Host> = Arc::new(KeyHost(false));
        let routes = view.routes(&fleet, &no_secrets).unwrap();
        let search = routes.get("search").unwrap();
        assert_eq!((search.len(), search[0].instances.len()), (1, 0));
        assert_eq!(routes.get("api"), leader_routes().get("api"));
    }

    #[test]
    fn the_stdio_home_is_the_bound_gateway_locally_and_the_service_on_a_pods_network() {
        let fleet = fleet();
        let bound: SocketAddr = "127.0.0.1:7470".parse().unwrap();
        assert_eq!(
            stdio_home(&fleet, crate::Listen::AsWritten, bound).as_deref(),
            Some("http://127.0.0.1:7470")
        );
        assert_eq!(
            stdio_home(&fleet, crate::Listen::PodNetwork, bound),
            Some(format!(
                "http://mcpfleet.{}.svc:7470",
                fleet.kubernetes.namespace
            ))
        );
    }

    #[test]
    fn limits_go_through_the_view_unchanged() {
        let limits = fleet_gateway::LiveLimits {
            rate_limit: Some(fleet_gateway::RateLimit {
                per_second: 2.5,
                burst: 7,
            }),
            max_session_concurrency: 3,
            upstream_timeout: Duration::from_millis(1500),
            max_sessions: 10,
            max_sessions_per_token: 4,
        };
        let json = serde_json::to_value(limits).unwrap();
        let back: fleet_gateway::LiveLimits = serde_json::from_value(json).unwrap();
        assert_eq!(back, limits);
    }
}
