//! The control plane: one long-running process per fleet that owns the fleet's state
//! directory, runs the engine over the fleet's runtime (this machine's processes and
//! containers, or a Kubernetes cluster's pods: [`FleetRuntime`]) and the gateway, and
//! serves the admin API on a unix socket in that directory (and its reads and, for admin
//! tokens, its rollout actions on `admin.listen`).
//!
//! Owns: the state directory (created 0700, locked so only one control plane runs per
//! fleet), reaping what a killed predecessor left, the admin routes (`GET /metrics` puts the
//! gateway's and the engine's metrics together), recording the engine's events and the
//! gateway's tool calls in the state store (and serving them from it), `export-state` /
//! `import-state` on a stopped fleet's store, webhooks on rollout events (`webhooks`), the
//! web dashboard on the admin listeners (`dashboard`), shutdown on signal or request. Does not
//! own: deployment logic (fleet-engine), supervision (fleet-runtime, fleet-runtime-kube),
//! the data plane (fleet-gateway), the command line (mcpfleet).

mod admin_auth;
mod api;
mod backup;
mod dashboard;
mod deploy;
mod event_log;
mod leadership;
pub mod record;
mod replica;
mod runtime;
mod standby;
mod state_dir;
mod store;
pub mod to_api;
mod webhooks;

pub use backup::{
    BackupError, InvalidName, NameKind, check_import_names, export_state, import_state,
};
pub use deploy::{DeployError, RollbackTarget, Submission};
pub use fleet_store::{DeploymentKind, StateExport};
pub use leadership::{LOST as LOST_LEADERSHIP, STANDING_BY, hostname};
pub use replica::{NEEDS_POSTGRES, Replica, ReplicaListen};
pub use runtime::{ClusterUnusable, FleetRuntime, check_cluster};
pub use state_dir::{StateDir, StateDirError, default_state_dir};
pub use store::StoreLocation;

use deploy::Deployer;
use event_log::EventLog;
use fleet_engine::report::DeploymentState;
use fleet_engine::{DeploymentOutcome, Engine, EngineConfig};
use fleet_runtime::{LocalRuntime, ProcessRuntime, Runtime as _};
use fleet_spec::model::RuntimeKind;
use fleet_spec::model::{Executable, GatewayTls, ValidFleet};
use fleet_spec::template::Host;
use std::collections::HashSet;
use std::sync::Arc;
use tokio::sync::watch;

/// Why the control plane could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// The state directory is unusable or locked by another control plane.
    #[error(transparent)]
    StateDir(#[from] StateDirError),
    /// The fleet has image servers and no container engine can be used.
    #[error(transparent)]
    Containers(#[from] fleet_runtime::ConnectError),
    /// The fleet runs on Kubernetes and its cluster cannot be connected to (no kubeconfig,
    /// an unknown context).
    // Not a `source`: the message already says all of it, and a chain would repeat it.
    #[error("cannot connect to the fleet's cluster: {0}")]
    Cluster(fleet_runtime_kube::ConnectError),
    /// The admin socket could not be opened.
    #[error("cannot listen on {path}: {source}")]
    Socket {
        path: String,
        source: std::io::Error,
    },
    /// The gateway's address is taken or not allowed.
    #[error("the gateway cannot listen on {address}: {message}")]
    Gateway { address: String, message: String },
    /// The gateway's certificate or key file (`gateway.tls`) cannot be used; the error
    /// names the file, never the key.
    // Not a `source`: the message already says all of it, and a chain would repeat it.
    #[error("the gateway cannot serve TLS: {0}")]
    GatewayTls(fleet_gateway::TlsFileError),
    /// A `gateway.session_keys` secret cannot be read or is no usable key; the message
    /// never holds a secret.
    #[error("gateway.session_keys: {0}")]
    SessionKeys(String),
    /// The TCP admin listener's address (`admin.listen`) is taken or not allowed.
    #[error("the admin API cannot listen on {address}: {message}")]
    Admin { address: String, message: String },
    /// The state store cannot be opened.
    #[error(transparent)]
    Store(#[from] fleet_store::StoreError),
    /// The first deployment could not be recorded.
    #[error(transparent)]
    Deploy(#[from] DeployError),
}

/// Where the control plane's TCP listeners are.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Listen {
    /// At `gateway.listen` and `admin.listen`, as the fleet file says.
    #[default]
    AsWritten,
    /// On every address of the machine — in a pod, of the pod (`mcpfleet up
    /// --pod-network`, what the rendered control plane runs): the gateway at
    /// `gateway.listen`'s port, the admin port ([`fleet_spec::model::Admin::pod_port`]) for
    /// Prometheus and the probes, each on the unspecified address of its listen address's
    /// family. Connections to a loopback address get what the file's listeners serve;
    /// others to the admin port only `/metrics` and `/healthz`. The gateway accepts the
    /// names of the rendered Service and Ingress as `Host`s
    /// ([`fleet_manifests::gateway_hosts`]), and counts as
    /// beyond loopback (it refuses to run without tokens); the caller checks the rest of
    /// [`fleet_manifests::pod_network_problems`] first.
    PodNetwork,
}

impl Listen {
    /// Where a listener written at `written` binds, and for the admin port at which port.
    pub(crate) fn address(self, written: std::net::SocketAddr) -> std::net::SocketAddr {
        match self {
            Listen::AsWritten => written,
            Listen::PodNetwork => {
                let every: std::net::IpAddr = if written.is_ipv4() {
                    std::net::Ipv4Addr::UNSPECIFIED.into()
                } else {
                    std::net::Ipv6Addr::UNSPECIFIED.into()
                };
                std::net::SocketAddr::new(every, written.port())
            }
        }
    }
}

/// A running control plane.
#[derive(Debug)]
pub struct ControlPlane {
    engine: Engine<FleetRuntime>,
    /// The engine's events, recorded in the state store.
    events: EventLog,
    state_dir: StateDir,
    /// `http://<admin.listen>` as bound, when the TCP admin listener runs.
    admin_url: Option<String>,
    shutdown_requested: watch::Sender<bool>,
    finished: watch::Receiver<bool>,
    /// The admin API server; it finishes the answers in flight (the shutdown's above all)
    /// before the process exits.
    server: tokio::task::JoinHandle<()>,
    /// The lease this control plane leads by, when its store is shared.
    leadership: Option<leadership::Leadership>,
}

impl ControlPlane {
    /// Takes the state directory, reaps leftovers of a killed predecessor, opens the admin
    /// socket and starts deploying `fleet` in the background.
    ///
    /// # Errors
    /// See [`StartError`].
    pub async fn start(
        submission: Submission,
        state_dir: StateDir,
        host: Arc<dyn Host>,
        listen: Listen,
    ) -> Result<Self, StartError> {
        let fleet = &submission.fleet;
        let runtime = FleetRuntime::for_fleet(fleet, state_dir.path())
            .await
            .map_err(StartError::Cluster)?;
        // What a killed predecessor left: what the runtime can take over waits for the
        // first deployment to adopt it (if its revision is still the one deployed); the rest
        // goes now, before anything starts. The engine's answers are awaited while the
        // store opens, which needs none of them.
        let leftovers = async {
            let adoptable: HashSet<fleet_runtime::InstanceId> = runtime
                .discover()
                .await
                .into_iter()
                .filter(|found| found.adoptable)
                .map(|found| found.id)
                .collect();
            reap_leftovers(&runtime, &adoptable).await;
            if let Some(local) = runtime.local()
                && runs_images(fleet)
            {
                // Before anything starts: a fleet that cannot run its containers says so
                // now, not as a failed server in the middle of its first wave.
                local.connect_containers().await?;
            }
            Ok::<_, StartError>(adoptable)
        };
        let location = StoreLocation::of(fleet, host.clone())?;
        let (adoptable, store, leadership, standby_admin) = match &location {
            StoreLocation::StateDir => {
                let (adoptable, store) = tokio::join!(leftovers, location.open(state_dir.path()));
                (adoptable?, store?, None, None)
            }
            // A store control planes share: another may lead, and until this one does,
            // nothing of the runtime is its to touch.
            StoreLocation::Postgres { lease, .. } => {
                let store = location.open(state_dir.path()).await?;
                // A pod restarted in place may still carry the label of the leader it was.
                let label = leadership::pod_label(fleet, &runtime).await;
                if let Some(label) = &label
                    && let Err(e) = label.stand_by().await
                {
                    tracing::warn!("this standby's pod may still be labelled the leader's: {e}");
                }
                // In a pod the probes ask the admin port from the start: a standby answers
                // them (and says who leads to anything else) on the admin listener's
                // socket, which the admin API takes over once this one leads.
                let mut standby = None;
                let mut admin = None;
                if listen == Listen::PodNetwork
                    && let Some((listener, bound)) = bind_admin(fleet, listen).await?
                {
                    let (server, kept) =
                        standby::StandbyServer::start(listener).map_err(|e| StartError::Admin {
                            address: bound.to_string(),
                            message: e.to_string(),
                        })?;
                    tracing::info!(
                        "until it leads, the admin port ({bound}) answers only GET /healthz"
                    );
                    standby = Some(server);
                    admin = Some((kept, bound));
                }
                let (leadership, fenced) =
                    leadership::Leadership::take(store, &fleet.name, *lease, standby.as_ref())
                        .await?;
                if let Some(label) = label {
                    leadership::label_leader(label);
                }
                if let Some(standby) = standby {
                    standby.stop().await;
                }
                (leftovers.await?, fenced, Some(leadership), admin)
            }
        };
        let gateway_listener = bind_gateway(fleet, listen).await?;
        let gateway_address = gateway_listener
            .local_addr()
            .map_err(|e| StartError::Gateway {
                address: fleet.gateway.listen.to_string(),
                message: e.to_string(),
            })?;
        let admin_listener = match standby_admin {
            Some(taken_over) => Some(taken_over),
            None => bind_admin(fleet, listen).await?,
        };
        let admin_listen_written = fleet.admin.listen.is_some();
        // The addresses shown (status, endpoints) are the written ones with the bound
        // ports: on a pod's network they are what a port-forward or a process in the pod
        // reaches.
        let admin_url =
            admin_listener
                .as_ref()
                .zip(fleet.admin.listen)
                .map(|((_, bound), written)| {
                    format!(
                        "http://{}",
                        std::net::SocketAddr::new(written.ip(), bound.port())
                    )
                });
        let gateway_shown =
            std::net::SocketAddr::new(fleet.gateway.listen.ip(), gateway_address.port());
        let stdio_home = replica::stdio_home(fleet, listen, gateway_shown);
        let config = EngineConfig {
            state_dir: state_dir.path().to_path_buf(),
            concurrency: 32,
            gateway_url: Some(format!(
                "{}://{gateway_shown}",
                gateway_scheme(&fleet.gateway)
            )),
        };
        let engine = Engine::new(runtime.clone(), config, &fleet.name);
        engine.offer_leftovers(adoptable);
        // Before anything can emit an event (recovery, the first deployment).
        let events = EventLog::start(&engine, store.clone());
        let webhooks = webhooks::Webhooks::start(&engine, &fleet.name, host.clone());
        let mut gateway_config = gateway_config(fleet, gateway_address, host.clone())?;
        if listen == Listen::PodNetwork {
            // Beyond loopback clients come through the Service or the Ingress, by their
            // names (a `Host` that is none of them is refused, as locally).
            gateway_config.allowed_hosts = fleet_manifests::gateway_hosts(fleet);
        }
        let (audit, audit_writer) = event_log::audit_to_store(store.clone());
        gateway_config.audit = Some(audit);
        let gateway =
            fleet_gateway::Gateway::new(gateway_config, engine.routes(), engine.stdio_instances());
        engine.watch_traffic(Arc::new(gateway.clone()));
        engine.journal_to(store.clone());
        let (shutdown_requested, _) = watch::channel(false);
        let (finished_tx, finished) = watch::channel(false);
        let socket = state_dir.socket_path();
        let listener = state_dir
            .bind_socket()
            .map_err(|source| StartError::Socket {
                path: socket.display().to_string(),
                source,
            })?;
        let deployer = Deployer::new(engine.clone(), runtime.clone(), store.clone(), host);
        let submission = deployer.recover(submission).await?;
        let first = deployer.prepare(submission).await?;
        first.announce();
        webhooks.configure(first.fleet());
        // Gateway replicas route by what the leader publishes to the store they share.
        let view = matches!(location, StoreLocation::Postgres { .. }).then(|| {
            replica::ViewPublisher::start(store.clone(), engine.routes(), first.fleet(), stdio_home)
        });
        let api_state = api::AppState {
            engine: engine.clone(),
            deployer: deployer.clone(),
            events: events.clone(),
            store,
            runtime: runtime.clone(),
            shutdown_requested: shutdown_requested.clone(),
            finished: finished.clone(),
            metrics: std::sync::Arc::new(api::metrics_registry(&gateway, &engine)),
            gateway: gateway.clone(),
            view,
            admin_url: admin_url.clone(),
            webhooks,
        };
        if let Some((tcp, _)) = admin_listener {
            let router = match listen {
                Listen::AsWritten => api::tcp_router(api_state.clone()),
                Listen::PodNetwork => {
                    api::pod_network_router(api_state.clone(), admin_listen_written)
                }
            };
            let mut done = finished.clone();
            tokio::spawn(async move {
                let stop = async move {
                    let _ = done.wait_for(|f| *f).await;
                };
                let router = router.into_make_service_with_connect_info::<api::LocalAddress>();
                if let Err(e) = axum::serve(tcp, router).with_graceful_shutdown(stop).await {
                    tracing::error!("admin listener stopped: {e}");
                }
            });
        }
        let router = api::router(api_state);
        let mut done = finished.clone();
        let server = tokio::spawn(async move {
            let stop = async move {
                let _ = done.wait_for(|f| *f).await;
            };
            if let Err(e) = axum::serve(listener, router)
                .with_graceful_shutdown(stop)
                .await
            {
                tracing::error!("admin API stopped: {e}");
            }
        });
        let mut gateway_done = finished.clone();
        tokio::spawn(async move {
            let stop = async move {
                let _ = gateway_done.wait_for(|f| *f).await;
            };
            if let Err(e) = fleet_gateway::serve(gateway_listener, gateway, stop).await {
                tracing::error!("gateway stopped: {e}");
            }
        });
        // Before the first deployment starts a process: a signal from then on must stop
        // what it started, not kill the control plane and leave the process running —
        // unless its servers are a cluster's and another control plane takes them over.
        match &leadership {
            Some(leadership) if runtime.local().is_none() => hand_over_on_sigterm(
                shutdown_requested.clone(),
                leadership.clone(),
                events.clone(),
                audit_writer.clone(),
            ),
            _ => shutdown_on_signals(shutdown_requested.clone()),
        }
        let after_first = runtime.clone();
        tokio::spawn(async move {
            first.run().await;
            // Leftovers the first deployment did not adopt (their revision is no longer
            // the one deployed) go now.
            reap_leftovers(&after_first, &HashSet::new()).await;
        });
        let plane = ControlPlane {
            engine,
            events,
            state_dir,
            admin_url,
            shutdown_requested,
            finished,
            server,
            leadership,
        };
        plane.watch_finish(finished_tx, deployer, audit_writer);
        Ok(plane)
    }

    fn watch_finish(
        &self,
        finished: watch::Sender<bool>,
        deployer: Deployer,
        audit: event_log::AuditWriter,
    ) {
        let mut rx = self.shutdown_requested.subscribe();
        let engine = self.engine.clone();
        let events = self.events.clone();
        tokio::spawn(async move {
            if async { rx.wait_for(|r| *r).await.is_ok() }.await {
                engine.shutdown().await;
                // A deployment overtaken by the shutdown records how it ended before the
                // process exits: otherwise the next start would take it for one a crash
                // interrupted.
                if !deployer.wait_idle(fleet_engine::STOP_GRACE).await {
                    tracing::warn!("the deployment in progress did not record its end in time");
                }
                // The shutdown's own events (servers stopped) and the last tool calls are
                // part of the record, in the store before `down` is told the fleet is down.
                write_the_rest(&events, &audit).await;
                finished.send_replace(true);
            }
        });
    }

    pub fn engine(&self) -> &Engine<FleetRuntime> {
        &self.engine
    }

    pub fn state_dir(&self) -> &StateDir {
        &self.state_dir
    }

    /// The fleet's status as `GET /v1/status` answers it.
    pub fn status(&self) -> fleet_api::types::Status {
        status(&self.engine, self.admin_url.as_deref())
    }

    /// Waits for the first deployment to end.
    pub async fn deployment(&self) -> DeploymentOutcome {
        let mut changes = self.engine.watch();
        loop {
            let status = self.engine.status();
            if status.deployment.state.is_final()
                || status.deployment.state == DeploymentState::Stopping
            {
                return DeploymentOutcome {
                    state: status.deployment.state,
                    reason: status.deployment.reason,
                };
            }
            if changes.changed().await.is_err() {
                return DeploymentOutcome {
                    state: DeploymentState::Failed,
                    reason: Some("the engine stopped".into()),
                };
            }
        }
    }

    /// Asks for a graceful shutdown after `delay`, unless one comes sooner.
    pub fn request_shutdown_after(&self, delay: std::time::Duration) {
        let shutdown = self.shutdown_requested.clone();
        tokio::spawn(async move {
            tokio::time::sleep(delay).await;
            shutdown.send_replace(true);
        });
    }

    /// Asks for a graceful shutdown (as `POST /v1/shutdown` does).
    pub fn request_shutdown(&self) {
        self.shutdown_requested.send_replace(true);
    }

    /// Waits for SIGINT, SIGTERM or a shutdown request, and for every server to be stopped
    /// (in reverse dependency order).
    pub async fn run_until_shutdown(mut self) {
        let _ = self.shutdown_requested.subscribe().wait_for(|r| *r).await;
        let _ = self.finished.wait_for(|f| *f).await;
        // Streams that never end by themselves (`logs -f`, `events -f`) must not hold the
        // process: give answers in flight a moment, then go.
        let _ = tokio::time::timeout(std::time::Duration::from_secs(2), &mut self.server).await;
        self.state_dir.remove_socket();
        // Everything is recorded: a standby may take over now rather than when the lease
        // lapses.
        if let Some(leadership) = &self.leadership {
            leadership.release().await;
        }
    }
}

/// The engine's status, with what only the control plane knows.
pub(crate) fn status(
    engine: &Engine<FleetRuntime>,
    admin_url: Option<&str>,
) -> fleet_api::types::Status {
    to_api::status(engine.status(), admin_url)
}

/// SIGINT and SIGTERM ask for a graceful shutdown from the moment the control plane starts
/// — during a deployment too, when they would otherwise kill it and leave servers running.
///
/// The handlers are installed before this returns (a spawned task could install them only
/// once it first runs, and a signal before that would kill the process).
fn shutdown_on_signals(shutdown: watch::Sender<bool>) {
    let mut signals = leadership::Signals::new();
    tokio::spawn(async move {
        signals.received().await;
        shutdown.send_replace(true);
    });
}

/// Writes the events and tool calls not in the store yet, waiting for them at most 5 s:
/// the last thing a control plane does before it stops or hands over.
async fn write_the_rest(events: &EventLog, audit: &event_log::AuditWriter) {
    let flushed = futures::future::join(events.flush(), audit.flush());
    let _ = tokio::time::timeout(std::time::Duration::from_secs(5), flushed).await;
}

/// SIGTERM hands the fleet over, for a leader whose servers run in a cluster and whose
/// store standbys share: a rolling update of the rendered control plane (a changed fleet
/// file, a drained node) must not stop every server for the next leader to start again.
/// The control plane records what it has (events, tool calls), releases the lease and
/// exits; its servers keep running, and the next leader adopts them as after a crash,
/// finishing or rolling back a deployment in progress from the journal (this one's later
/// writes are fenced). SIGINT (Ctrl-C in a terminal) and `mcpfleet down` still stop
/// everything.
fn hand_over_on_sigterm(
    shutdown: watch::Sender<bool>,
    leadership: leadership::Leadership,
    events: EventLog,
    audit: event_log::AuditWriter,
) {
    let mut signals = leadership::Signals::new();
    tokio::spawn(async move {
        if !signals.which().await {
            shutdown.send_replace(true);
            return;
        }
        tracing::info!(
            "handing the fleet over: its servers keep running for the next leader to adopt"
        );
        write_the_rest(&events, &audit).await;
        leadership.release().await;
        std::process::exit(0);
    });
}

/// Binds the gateway's listener first, so a taken address fails `up` before anything starts.
async fn bind_gateway(
    fleet: &ValidFleet,
    listen: Listen,
) -> Result<tokio::net::TcpListener, StartError> {
    let address = listen.address(fleet.gateway.listen);
    tokio::net::TcpListener::bind(address).await.map_err(|e| StartError::Gateway {
        address: address.to_string(),
        message: if e.kind() == std::io::ErrorKind::AddrInUse {
            "the address is in use (another fleet's gateway?); set `gateway.listen` to another port".into()
        } else {
            e.to_string()
        },
    })
}

/// Binds the TCP admin listener (`admin.listen`), if the fleet has one or it runs on a
/// pod's network, before anything starts, and says where it listens (port 0 picks one).
/// Validation keeps `admin.listen` on loopback.
async fn bind_admin(
    fleet: &ValidFleet,
    listen: Listen,
) -> Result<Option<(tokio::net::TcpListener, std::net::SocketAddr)>, StartError> {
    let written = match (listen, fleet.admin.listen) {
        (_, Some(written)) => written,
        (Listen::PodNetwork, None) => {
            std::net::SocketAddr::from((std::net::Ipv4Addr::LOCALHOST, fleet.admin.pod_port()))
        }
        (Listen::AsWritten, None) => return Ok(None),
    };
    let address = listen.address(written);
    let failed = |e: std::io::Error| StartError::Admin {
        address: address.to_string(),
        message: if e.kind() == std::io::ErrorKind::AddrInUse {
            "the address is in use (another fleet's admin listener?); set `admin.listen` to another port".into()
        } else {
            e.to_string()
        },
    };
    let listener = tokio::net::TcpListener::bind(address)
        .await
        .map_err(failed)?;
    let bound = listener.local_addr().map_err(failed)?;
    Ok(Some((listener, bound)))
}

fn gateway_config(
    fleet: &ValidFleet,
    listen: std::net::SocketAddr,
    host: Arc<dyn Host>,
) -> Result<fleet_gateway::GatewayConfig, StartError> {
    let mut config = fleet_gateway::GatewayConfig::new(listen);
    let gateway = &fleet.gateway;
    config.rate_limit = gateway.rate_limit.map(|r| fleet_gateway::RateLimit {
        per_second: r.per_second,
        burst: r.burst,
    });
    config.max_session_concurrency = gateway.max_requests_in_flight as usize;
    config.max_sessions = gateway.max_sessions as usize;
    config.max_sessions_per_token = gateway.max_sessions_per_token as usize;
    config.session_idle_timeout = gateway.session_idle_timeout;
    config.upstream_timeout = gateway.upstream_timeout;
    config.header_read_timeout = gateway.header_read_timeout;
    config.body_read_timeout = gateway.body_read_timeout;
    config.idle_timeout = gateway.idle_timeout;
    config.tokens = gateway_tokens(fleet).map_err(|message| StartError::Gateway {
        address: listen.to_string(),
        message,
    })?;
    config.tls = gateway_tls(fleet)?;
    config.session_keys = session_keys(fleet, host)?;
    Ok(config)
}

/// The fleet file's `gateway.session_keys`, their secrets read; `None` when it has none.
/// `up -d` calls this before it detaches, so an unusable key is reported in the terminal.
///
/// # Errors
/// [`StartError::SessionKeys`] when a secret cannot be read or is no usable key.
pub fn session_keys(
    fleet: &ValidFleet,
    host: Arc<dyn Host>,
) -> Result<Option<fleet_gateway::SessionKeys>, StartError> {
    if fleet.gateway.session_keys.is_empty() {
        return Ok(None);
    }
    let failed = |message: String| StartError::SessionKeys(message);
    let templates = fleet_spec::template::InstanceTemplates::new(fleet, host, None, 0)
        .map_err(|e| failed(e.message))?;
    let secrets = fleet
        .gateway
        .session_keys
        .iter()
        .map(|key| templates.render_fleet(key))
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| failed(e.message))?;
    fleet_gateway::SessionKeys::from_secrets(&secrets)
        .map(Some)
        .map_err(|e| failed(e.to_string()))
}

/// Pins `fleet`'s images as a deployment would (see [`fleet_engine::pin`]), through the
/// container engine found from the environment: what `plan` compares with the deployed
/// revisions. A fleet without image servers needs no engine, and one on Kubernetes is not
/// pinned (its cluster resolves images).
///
/// # Errors
/// Every image that could not be pinned (its servers keep no digest).
pub async fn pin_images(
    fleet: &mut ValidFleet,
    state_dir: &std::path::Path,
) -> Result<(), Vec<fleet_engine::UnpinnedImage>> {
    if fleet.runtime == RuntimeKind::Kubernetes {
        return Ok(());
    }
    let runtime = LocalRuntime::new(&fleet.name, ProcessRuntime::new(state_dir));
    fleet_engine::pin_images(fleet, &runtime).await
}

/// The certificate and key the gateway serves, read from the files `gateway.tls`
/// names; `None` when the gateway serves plain HTTP. `up -d` calls this before it
/// detaches, so an unusable file is reported in the terminal.
///
/// # Errors
/// [`StartError::GatewayTls`] naming the file that cannot be read or used.
pub fn gateway_tls(fleet: &ValidFleet) -> Result<Option<fleet_gateway::ServerTls>, StartError> {
    match &fleet.gateway.tls {
        Some(GatewayTls::Files { cert, key }) => fleet_gateway::ServerTls::load(cert, key)
            .map(Some)
            .map_err(StartError::GatewayTls),
        Some(GatewayTls::TerminatedByProxy) | None => Ok(None),
    }
}

/// How the gateway's clients reach it: `https` when it serves TLS itself.
pub fn gateway_scheme(gateway: &fleet_spec::model::Gateway) -> &'static str {
    match gateway.tls {
        Some(GatewayTls::Files { .. }) => "https",
        Some(GatewayTls::TerminatedByProxy) | None => "http",
    }
}

/// The fleet file's `gateway.auth.tokens` as the gateway checks them.
fn gateway_tokens(fleet: &ValidFleet) -> Result<Vec<fleet_gateway::TokenConfig>, String> {
    fleet
        .gateway
        .tokens
        .iter()
        .map(|token| {
            fleet_gateway::TokenConfig::new(&token.name, &token.sha256, &token.servers)
                .map_err(|e| e.to_string())
        })
        .collect()
}

/// The fleet file's tokens as `GET /v1/gateway/tokens` lists them, sorted by name.
pub fn token_summaries(fleet: &ValidFleet) -> Vec<fleet_api::types::GatewayToken> {
    let mut tokens: Vec<_> = fleet
        .gateway
        .tokens
        .iter()
        .map(|t| fleet_api::types::GatewayToken {
            name: t.name.clone(),
            sha256: t.sha256.to_ascii_lowercase(),
            servers: t.servers.clone(),
        })
        .collect();
    tokens.sort();
    tokens
}

/// Gives the running gateway the tokens and limits of `fleet` (a deployment's, as it
/// starts), and its replicas through `view`.
fn apply_gateway_settings(
    gateway: &fleet_gateway::Gateway,
    view: Option<&replica::ViewPublisher>,
    fleet: &ValidFleet,
) {
    if let Some(view) = view {
        view.follow(fleet);
    }
    let swapped = gateway_tokens(fleet)
        .and_then(|tokens| gateway.set_tokens(tokens).map_err(|e| e.to_string()));
    if let Err(why) = swapped {
        tracing::error!("the gateway keeps its tokens: {why}");
    }
    gateway.set_limits(live_limits(&fleet.gateway));
}

/// The `gateway` and `admin` keys a deployment applies while the control plane runs; any
/// other change of them needs a restart.
pub const LIVE_SETTINGS: [&str; 7] = [
    "admin.tokens",
    "gateway.tokens",
    "gateway.rate_limit",
    "gateway.max_requests_in_flight",
    "gateway.max_sessions",
    "gateway.max_sessions_per_token",
    "gateway.upstream_timeout",
];

fn live_limits(gateway: &fleet_spec::model::Gateway) -> fleet_gateway::LiveLimits {
    fleet_gateway::LiveLimits {
        rate_limit: gateway.rate_limit.map(|r| fleet_gateway::RateLimit {
            per_second: r.per_second,
            burst: r.burst,
        }),
        max_session_concurrency: gateway.max_requests_in_flight as usize,
        upstream_timeout: gateway.upstream_timeout,
        max_sessions: gateway.max_sessions as usize,
        max_sessions_per_token: gateway.max_sessions_per_token as usize,
    }
}

/// The fleet-wide settings of `fleet` — its `gateway`, `admin`, `tracing` and `state`
/// sections, tokens as hashes, secrets as `***` — as `GET /v1/settings` serves the running
/// ones: what a deployment compares.
pub fn fleet_settings(fleet: &ValidFleet) -> serde_json::Value {
    serde_json::json!({
        "gateway": fleet.gateway,
        "admin": fleet.admin,
        "tracing": fleet.tracing,
        "state": fleet.state,
    })
}

/// The keys (`gateway.rate_limit`, `admin.listen`, …) whose values differ between the
/// settings of `current` and `new`, sorted.
pub fn changed_settings(current: &ValidFleet, new: &ValidFleet) -> Vec<String> {
    changed_keys(&fleet_settings(current), &fleet_settings(new))
}

/// The `section.key`s whose values differ between two [`fleet_settings`].
pub fn changed_keys(current: &serde_json::Value, new: &serde_json::Value) -> Vec<String> {
    let mut changed = std::collections::BTreeSet::new();
    for section in ["gateway", "admin", "tracing", "state"] {
        let keys = |v: &serde_json::Value| {
            v[section]
                .as_object()
                .map(|o| o.keys().cloned().collect::<Vec<_>>())
                .unwrap_or_default()
        };
        for key in keys(current).into_iter().chain(keys(new)) {
            if current[section][&key] != new[section][&key] {
                changed.insert(format!("{section}.{key}"));
            }
        }
    }
    changed.into_iter().collect()
}

/// Whether any server of `fleet` runs from an image.
fn runs_images(fleet: &ValidFleet) -> bool {
    fleet.servers.iter().any(|server| {
        server
            .transport
            .executable()
            .is_some_and(Executable::is_image)
    })
}

/// Reaps what a killed predecessor left, but `spare`.
async fn reap_leftovers(runtime: &FleetRuntime, spare: &HashSet<fleet_runtime::InstanceId>) {
    for r in runtime.reap_leftovers(spare).await {
        tracing::warn!("reaped a leftover of a previous control plane: {r:?}");
    }
}
