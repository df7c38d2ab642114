//! The admin routes (see fleet-api for the contract). Errors become responses in one place:
//! [`ApiFailure`]. The unix socket serves them all; the optional TCP listener (`admin.listen`)
//! those that read and, for the holders of an admin token, the rollout actions
//! ([`tcp_router`]).

use crate::admin_auth::Actor;
use crate::runtime::FleetRuntime;
use axum::body::Body;
use axum::extract::connect_info::Connected;
use axum::extract::{ConnectInfo, Path, Query, Request, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::serve::IncomingStream;
use axum::{Extension, Json};
use fleet_api::types::{
    ApiError, AuditEntry, CheckRun, DeployRequest, DeployedServer, EventRecord, GatewayToken,
    HistoryEntry, RollbackRequest, ServerRevisionEntry, Status,
};
use fleet_engine::Engine;
use fleet_engine::report::EventKind;
use fleet_runtime::Runtime as _;
use futures::StreamExt;
use serde::Deserialize;
use std::convert::Infallible;
use tokio::sync::watch;

#[derive(Clone)]
pub(crate) struct AppState {
    pub(crate) engine: Engine<FleetRuntime>,
    pub(crate) deployer: crate::deploy::Deployer,
    /// The record of events: what `GET /v1/events` serves.
    pub(crate) events: crate::event_log::EventLog,
    /// Audit, history and export read it.
    pub(crate) store: std::sync::Arc<dyn fleet_store::StateStore>,
    /// The engine's runtime, for reading instances' logs.
    pub(crate) runtime: FleetRuntime,
    pub(crate) shutdown_requested: watch::Sender<bool>,
    pub(crate) finished: watch::Receiver<bool>,
    /// A deployment applies its fleet's gateway settings to it.
    pub(crate) gateway: fleet_gateway::Gateway,
    /// And publishes them to gateway replicas, when the store is shared.
    pub(crate) view: Option<crate::replica::ViewPublisher>,
    /// What `GET /metrics` serves: the gateway's and the engine's families.
    pub(crate) metrics: std::sync::Arc<prometheus_client::registry::Registry>,
    /// `http://<admin.listen>`, when the TCP listener runs.
    pub(crate) admin_url: Option<String>,
    /// Each deployment gives them its fleet's receivers.
    pub(crate) webhooks: crate::webhooks::Webhooks,
}

/// Every admin route: the unix socket's.
pub(crate) fn router(state: AppState) -> axum::Router {
    axum::Router::new()
        .route("/v1/events", get(events))
        .route("/v1/events/stream", get(event_stream))
        .route("/v1/audit", get(audit))
        .route("/v1/history", get(history))
        .route("/v1/state/export", get(export_state))
        .route("/v1/servers/{name}/revisions", get(server_revisions))
        .route("/v1/servers/{name}/logs", get(logs))
        .route("/v1/gateway/tokens", get(gateway_tokens))
        .route("/v1/settings", get(settings))
        .route("/v1/deployed", get(deployed))
        .route("/v1/check", post(check))
        .route("/v1/deploy", post(deploy))
        .route("/v1/rollback", post(rollback))
        .route("/v1/servers/{name}/{command}", post(steer))
        .route("/v1/shutdown", post(shutdown))
        .with_state(state.clone())
        .merge(read_only_router(state))
}

/// The routes that change nothing, stream nothing and show no specs: what Prometheus,
/// probes and the dashboard (`GET /` and its assets) read. `/v1/deployed` is not one of
/// them: it shows every server's spec.
pub(crate) fn read_only_router(state: AppState) -> axum::Router {
    axum::Router::new()
        .route("/metrics", get(metrics))
        .route("/v1/status", get(status))
        .route("/healthz", get(healthz))
        .with_state(state.clone())
        .merge(crate::dashboard::router(state))
}

/// The TCP listener's routes, behind a `Host` check (a web page whose domain is rebound to
/// 127.0.0.1 — DNS rebinding — must not reach them): [`read_only_router`], the event
/// stream, history and audit for anyone on the machine (validation keeps the listener on
/// loopback); the rollout actions only for an admin token ([`crate::admin_auth`]). Not
/// `check`, `shutdown`, `restart`, logs, specs or the export: they stay on the unix socket.
pub(crate) fn tcp_router(state: AppState) -> axum::Router {
    // Around the POSTs only: another method is a 405, not a question of tokens.
    let admin_only =
        || axum::middleware::from_fn_with_state(state.clone(), crate::admin_auth::admin_only);
    axum::Router::new()
        .route("/v1/events/stream", get(event_stream))
        .route("/v1/history", get(history))
        .route("/v1/audit", get(audit))
        .route(
            "/v1/servers/{name}/{command}",
            post(steer_rollout).route_layer(admin_only()),
        )
        .route("/v1/rollback", post(rollback).route_layer(admin_only()))
        .with_state(state.clone())
        .merge(read_only_router(state))
        .layer(axum::middleware::from_fn(loopback_host_only))
}

/// The address a TCP connection came in on (its local end), which tells the admin listener
/// on a pod's network the pod itself (loopback: a port-forward, a process in the pod) from
/// everyone else.
#[derive(Debug, Clone, Copy)]
pub(crate) struct LocalAddress(std::net::SocketAddr);

impl Connected<IncomingStream<'_, tokio::net::TcpListener>> for LocalAddress {
    fn connect_info(stream: IncomingStream<'_, tokio::net::TcpListener>) -> Self {
        // An accepted socket has a local address; the unspecified one, should the OS not
        // say, counts as the pod's network (the narrower answer).
        let unspecified = std::net::SocketAddr::from(([0, 0, 0, 0], 0));
        LocalAddress(stream.io().local_addr().unwrap_or(unspecified))
    }
}

/// The admin port on a pod's network (`up --pod-network`), bound on every address of the
/// pod: connections to a loopback address (a `kubectl port-forward`, a process in the pod)
/// get what the file's `admin.listen` serves ([`tcp_router`]), or, without one, what
/// everyone gets; every other connection only `GET /metrics` (Prometheus) and `GET
/// /healthz` (the probes), the reads the Service is for — no status, events, history, audit
/// or dashboard for whoever else can reach the pod, and no actions. Served with
/// [`LocalAddress`] as the connect info.
pub(crate) fn pod_network_router(state: AppState, admin_listen: bool) -> axum::Router {
    let everyone = axum::Router::new()
        .route("/metrics", get(metrics))
        .route("/healthz", get(healthz))
        .with_state(state.clone());
    let on_loopback = if admin_listen {
        tcp_router(state)
    } else {
        everyone.clone()
    };
    axum::Router::new()
        .fallback(by_local_address)
        .with_state(PodNetworkRoutes {
            on_loopback,
            everyone,
        })
}

#[derive(Clone)]
struct PodNetworkRoutes {
    on_loopback: axum::Router,
    everyone: axum::Router,
}

async fn by_local_address(
    State(routes): State<PodNetworkRoutes>,
    ConnectInfo(LocalAddress(local)): ConnectInfo<LocalAddress>,
    request: Request,
) -> Response {
    let mut router = if local.ip().is_loopback() {
        routes.on_loopback
    } else {
        routes.everyone
    };
    // A Router is always ready, and its error is Infallible.
    match tower_service::Service::call(&mut router, request).await {
        Ok(response) => response,
        Err(never) => match never {},
    }
}

/// The content type of OpenMetrics 1.0, which `GET /metrics` answers when it is accepted.
const OPENMETRICS_TEXT: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// The control plane's one registry: the gateway's families, then the engine's.
pub(crate) fn metrics_registry(
    gateway: &fleet_gateway::Gateway,
    engine: &Engine<FleetRuntime>,
) -> prometheus_client::registry::Registry {
    let mut registry = prometheus_client::registry::Registry::default();
    registry.register_collector(Box::new(gateway.metrics_collector()));
    registry.register_collector(Box::new(EngineFamilies(engine.clone())));
    registry
}

/// The engine's families, from a fresh snapshot at each scrape.
struct EngineFamilies(Engine<FleetRuntime>);

impl std::fmt::Debug for EngineFamilies {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("EngineFamilies")
    }
}

impl prometheus_client::collector::Collector for EngineFamilies {
    fn encode(&self, encoder: prometheus_client::encoding::DescriptorEncoder) -> std::fmt::Result {
        self.0.metrics().encode(encoder)
    }
}

/// Every error answer of the admin API.
pub(crate) struct ApiFailure(pub(crate) StatusCode, pub(crate) String);

impl IntoResponse for ApiFailure {
    fn into_response(self) -> Response {
        (self.0, Json(ApiError { error: self.1 })).into_response()
    }
}

async fn status(State(state): State<AppState>) -> Json<Status> {
    Json(crate::status(&state.engine, state.admin_url.as_deref()))
}

/// The gateway's families (requests, durations, tool calls, sessions), then the engine's
/// (instances, restarts, failed checks, deployments, rollouts): OpenMetrics 1.0, with the
/// latency exemplars, when the scraper accepts `application/openmetrics-text`; otherwise
/// the Prometheus text format 0.0.4, which has no syntax for exemplars.
async fn metrics(State(state): State<AppState>, headers: HeaderMap) -> Response {
    metrics_text(&state.metrics, &headers)
}

/// `registry` in the format the scraper asks for: OpenMetrics when it accepts it, else
/// Prometheus' text format.
pub(crate) fn metrics_text(
    registry: &prometheus_client::registry::Registry,
    headers: &HeaderMap,
) -> Response {
    let openmetrics = headers
        .get_all(header::ACCEPT)
        .iter()
        .filter_map(|value| value.to_str().ok())
        .flat_map(|value| value.split(','))
        .any(|range| {
            let media_type = range.split(';').next().unwrap_or_default().trim();
            media_type.eq_ignore_ascii_case("application/openmetrics-text")
        });
    let mut text = String::new();
    // Writing into a String cannot fail.
    let content_type = if openmetrics {
        let _ = prometheus_client::encoding::text::encode(&mut text, registry);
        OPENMETRICS_TEXT
    } else {
        let _ = prometheus_client::encoding::prometheus_text::encode(&mut text, registry);
        prometheus_client::encoding::prometheus_text::CONTENT_TYPE
    };
    ([(header::CONTENT_TYPE, content_type)], text).into_response()
}

async fn healthz() -> &'static str {
    "ok\n"
}

async fn loopback_host_only(request: Request, next: Next) -> Response {
    let host = request
        .headers()
        .get(header::HOST)
        .and_then(|h| h.to_str().ok())
        .unwrap_or_default();
    if is_loopback_host(host) {
        next.run(request).await
    } else {
        ApiFailure(
            StatusCode::FORBIDDEN,
            format!("the admin API answers only requests for a loopback host, not `{host}`"),
        )
        .into_response()
    }
}

/// `localhost`, `127.0.0.1`, `[::1]`…, with or without a port.
fn is_loopback_host(host: &str) -> bool {
    let name = match host.strip_prefix('[') {
        Some(bracketed) => bracketed.split_once(']').map_or("", |(ip, _)| ip),
        None => host.split_once(':').map_or(host, |(name, _)| name),
    };
    name.eq_ignore_ascii_case("localhost")
        || name
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback())
}

async fn deployed(State(state): State<AppState>) -> Json<Vec<DeployedServer>> {
    Json(
        state
            .deployer
            .deployed()
            .into_iter()
            .map(crate::to_api::deployed)
            .collect(),
    )
}

/// Validates the fleet file, records it and deploys it, streaming the deployment's events;
/// the answer ends with the deployment.
async fn deploy(State(state): State<AppState>, Json(request): Json<DeployRequest>) -> Response {
    let fleet = match crate::deploy::validate(
        &request.source,
        &request.path,
        request.environment.clone(),
    ) {
        Ok(fleet) => fleet,
        Err(rendered) => {
            return ApiFailure(StatusCode::UNPROCESSABLE_ENTITY, rendered).into_response();
        }
    };
    let submission = crate::deploy::Submission {
        fleet,
        source: request.source,
        path: request.path,
        author: request.author,
        reason: request.reason,
        kind: crate::DeploymentKind::Deploy,
    };
    match state.deployer.prepare(submission).await {
        Ok(prepared) => follow_deployment(&state, prepared),
        Err(e) => deploy_failure(&e),
    }
}

/// `GET /v1/gateway/tokens`: the tokens of the fleet revision deployed last, which the
/// gateway checks (hashes only; the admin socket is owner-only).
async fn gateway_tokens(State(state): State<AppState>) -> Json<Vec<GatewayToken>> {
    Json(
        state
            .deployer
            .current_fleet()
            .map(|fleet| crate::token_summaries(&fleet))
            .unwrap_or_default(),
    )
}

/// `GET /v1/settings`: the running fleet's `gateway` and `admin` settings (tokens as
/// hashes), as [`crate::fleet_settings`] writes them.
async fn settings(State(state): State<AppState>) -> Json<serde_json::Value> {
    Json(
        state
            .deployer
            .current_fleet()
            .map(|fleet| crate::fleet_settings(&fleet))
            .unwrap_or_default(),
    )
}

/// `POST /v1/rollback`: rolls the fleet, or one server, forward to a stored revision;
/// streams the deployment's events like `POST /v1/deploy`. Over TCP its author is the
/// admin token's [`Actor`], whatever the request says.
async fn rollback(
    State(state): State<AppState>,
    actor: Option<Extension<Actor>>,
    Json(request): Json<RollbackRequest>,
) -> Response {
    let target = crate::RollbackTarget {
        server: request.server,
        to: request.to,
        reason: request.reason,
        author: actor.map_or(request.author, |Extension(actor)| actor.0),
    };
    match state.deployer.rollback(target).await {
        Ok(prepared) => follow_deployment(&state, prepared),
        Err(e) => deploy_failure(&e),
    }
}

fn deploy_failure(e: &crate::DeployError) -> Response {
    let status = match e {
        crate::DeployError::Busy => StatusCode::CONFLICT,
        crate::DeployError::Store(_) => StatusCode::INTERNAL_SERVER_ERROR,
        _ => StatusCode::UNPROCESSABLE_ENTITY,
    };
    ApiFailure(status, e.to_string()).into_response()
}

/// Runs a prepared deployment and streams its events; the answer ends with it.
fn follow_deployment(state: &AppState, prepared: crate::deploy::Prepared) -> Response {
    // Subscribed before the deployment starts: its first event is not missed.
    let (_, live) = state.engine.subscribe();
    crate::apply_gateway_settings(&state.gateway, state.view.as_ref(), prepared.fleet());
    state.webhooks.configure(prepared.fleet());
    let run = tokio::spawn(prepared.run());
    let stream = futures::stream::unfold(Some((live, run)), |following| async move {
        let (mut live, run) = following?;
        loop {
            match live.recv().await {
                Ok(event) => {
                    let last = matches!(
                        event.kind,
                        EventKind::DeploymentCompleted | EventKind::DeploymentFailed
                    );
                    if last {
                        // The engine says it is over before the store has it: the answer
                        // ends once it is on record (a `history` or `rollback` right after
                        // sees it).
                        let _ = tokio::time::timeout(fleet_engine::STOP_GRACE, run).await;
                        return Some((event, None));
                    }
                    return Some((event, Some((live, run))));
                }
                Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => continue,
                Err(tokio::sync::broadcast::error::RecvError::Closed) => return None,
            }
        }
    });
    ndjson(stream.map(event_line))
}

/// `restart` a server, or steer its rollout ([`steer_rollout`]).
async fn steer(
    State(state): State<AppState>,
    Path((name, command)): Path<(String, String)>,
) -> Response {
    if command == "restart" {
        return restart(&state, &name).await;
    }
    steer_rollout(State(state), Path((name, command)), None).await
}

/// `promote`, `abort`, `pause` or `resume` the rollout of a server; over TCP the events it
/// brings name the admin token's [`Actor`].
async fn steer_rollout(
    State(state): State<AppState>,
    Path((name, command)): Path<(String, String)>,
    actor: Option<Extension<Actor>>,
) -> Response {
    let command = match command.as_str() {
        "promote" => fleet_engine::RolloutCommand::Promote,
        "abort" => fleet_engine::RolloutCommand::Abort,
        "pause" => fleet_engine::RolloutCommand::Pause,
        "resume" => fleet_engine::RolloutCommand::Resume,
        other => {
            return ApiFailure(
                StatusCode::NOT_FOUND,
                format!("no rollout command `{other}` (promote, abort, pause, resume)"),
            )
            .into_response();
        }
    };
    let by = actor.map(|Extension(actor)| actor.0);
    match state.engine.command(&name, command, by.as_deref()).await {
        Ok(()) => Json(serde_json::json!({ "server": name, "accepted": true })).into_response(),
        Err(why) => ApiFailure(StatusCode::CONFLICT, why.to_string()).into_response(),
    }
}

/// Restarts a server's instances one at a time, in the deployments' turn (never beside a
/// deployment); answers once every instance has been replaced by a ready one.
async fn restart(state: &AppState, name: &str) -> Response {
    let deployed = state.engine.deployed();
    if !deployed.iter().any(|s| s.name == name) {
        let hint = fleet_spec::diag::did_you_mean(name, deployed.iter().map(|s| s.name.as_str()))
            .map(|close| format!("; did you mean `{close}`?"))
            .unwrap_or_default();
        return ApiFailure(
            StatusCode::NOT_FOUND,
            format!("no server `{name}` is deployed{hint}"),
        )
        .into_response();
    }
    let Ok(_turn) = state.deployer.take_turn().await else {
        return ApiFailure(
            StatusCode::CONFLICT,
            format!("a deployment is in progress; restart `{name}` once it has ended (`mcpfleet status`)"),
        )
        .into_response();
    };
    match state.engine.restart(name).await {
        Ok((revision, instances)) => Json(fleet_api::types::Restarted {
            server: name.to_string(),
            revision,
            instances,
        })
        .into_response(),
        Err(why) => ApiFailure(StatusCode::CONFLICT, why.to_string()).into_response(),
    }
}

async fn check(State(state): State<AppState>) -> Json<CheckRun> {
    Json(crate::to_api::check_run(state.engine.check_now().await))
}

#[derive(Deserialize)]
struct EventQuery {
    #[serde(default)]
    follow: bool,
    /// Only events with a higher id.
    #[serde(default)]
    after: u64,
    /// `current`: only this run's events, from the engine's memory (without ids).
    run: Option<String>,
}

/// The recorded events (the state store's, across restarts), then (with `follow`) live
/// ones, one JSON object per line, each once and in id order.
async fn events(State(state): State<AppState>, Query(q): Query<EventQuery>) -> Response {
    match q.run.as_deref() {
        None => {}
        Some("current") => return run_events(&state, q.follow),
        Some(other) => {
            return ApiFailure(
                StatusCode::BAD_REQUEST,
                format!("`run={other}`: the only run that can be asked for is `current`"),
            )
            .into_response();
        }
    }
    let records = state.events.stream(q.after, q.follow);
    let lines = futures::stream::unfold(records, |mut rx| async move {
        rx.recv().await.map(|record| (record, rx))
    });
    ndjson(lines.map(|record: EventRecord| {
        Ok::<_, Infallible>(serde_json::to_string(&record).unwrap_or_default() + "\n")
    }))
}

/// This control plane's events since it started, then (with `follow`) live ones: what
/// `up -d` follows, so that an earlier run's deployment is not taken for this one's.
fn run_events(state: &AppState, follow: bool) -> Response {
    let (history, live) = state.engine.subscribe();
    let history = futures::stream::iter(history);
    let live = futures::stream::unfold(live, |mut rx| async move {
        loop {
            match rx.recv().await {
                Ok(event) => return Some((event, rx)),
                // A slow reader missed some; the store has them all.
                Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => continue,
                Err(tokio::sync::broadcast::error::RecvError::Closed) => return None,
            }
        }
    });
    if follow {
        ndjson(history.chain(live).map(event_line))
    } else {
        ndjson(history.map(event_line))
    }
}

/// How long the event stream stays silent before it sends a keep-alive comment.
const KEEP_ALIVE: std::time::Duration = std::time::Duration::from_secs(15);

#[derive(Deserialize)]
struct StreamQuery {
    after: Option<u64>,
}

/// The recorded events, then live ones, as server-sent events: `id:` the store id, `data:`
/// the event. A client that reconnects with `Last-Event-ID` (or `?after=`) resumes after it.
async fn event_stream(
    State(state): State<AppState>,
    headers: HeaderMap,
    Query(q): Query<StreamQuery>,
) -> Response {
    let last_event_id = match headers.get("last-event-id").map(|v| v.to_str()) {
        None => None,
        Some(Ok(id)) if id.trim().is_empty() => None,
        Some(Ok(id)) => match id.trim().parse::<u64>() {
            Ok(id) => Some(id),
            Err(_) => {
                return ApiFailure(
                    StatusCode::BAD_REQUEST,
                    format!("Last-Event-ID `{id}` is not an event id (a whole number)"),
                )
                .into_response();
            }
        },
        Some(Err(_)) => {
            return ApiFailure(StatusCode::BAD_REQUEST, "Last-Event-ID is not text".into())
                .into_response();
        }
    };
    let after = last_event_id.or(q.after).unwrap_or(0);
    let records = state.events.stream(after, true);
    // A comment line every KEEP_ALIVE while nothing happens: proxies and clients that drop
    // silent connections keep this one.
    let pings = tokio::time::interval_at(tokio::time::Instant::now() + KEEP_ALIVE, KEEP_ALIVE);
    let frames = futures::stream::unfold((records, pings), |(mut rx, mut pings)| async move {
        let frame = tokio::select! {
            record = rx.recv() => {
                let record: EventRecord = record?;
                let data = serde_json::to_string(&record.event).unwrap_or_default();
                format!("id: {}\ndata: {data}\n\n", record.id)
            }
            _ = pings.tick() => ": keep-alive\n\n".to_string(),
        };
        Some((Ok::<_, Infallible>(frame), (rx, pings)))
    });
    Response::builder()
        .header(header::CONTENT_TYPE, "text/event-stream")
        .header(header::CACHE_CONTROL, "no-cache")
        .body(Body::from_stream(frames))
        .unwrap_or_else(|_| StatusCode::INTERNAL_SERVER_ERROR.into_response())
}

#[derive(Deserialize)]
struct Page {
    #[serde(default)]
    after: u64,
    #[serde(default = "default_page")]
    limit: usize,
}

fn default_page() -> usize {
    1_000
}

/// The most records one page returns, whatever `limit` asks.
const MAX_PAGE: usize = 10_000;

fn store_failure(error: &fleet_store::StoreError) -> ApiFailure {
    ApiFailure(StatusCode::INTERNAL_SERVER_ERROR, error.to_string())
}

/// `GET /v1/audit?after=ID&limit=N`: tool calls through the gateway, oldest first.
async fn audit(
    State(state): State<AppState>,
    Query(page): Query<Page>,
) -> Result<Json<Vec<AuditEntry>>, ApiFailure> {
    crate::record::audit(state.store.as_ref(), page.after, page.limit.min(MAX_PAGE))
        .await
        .map(Json)
        .map_err(|e| store_failure(&e))
}

/// `GET /v1/history`: every deployment with its fleet revision, oldest first.
async fn history(State(state): State<AppState>) -> Result<Json<Vec<HistoryEntry>>, ApiFailure> {
    crate::record::history(state.store.as_ref())
        .await
        .map(Json)
        .map_err(|e| store_failure(&e))
}

/// `GET /v1/servers/{name}/revisions`: every revision of a server, oldest first.
async fn server_revisions(
    State(state): State<AppState>,
    Path(name): Path<String>,
) -> Result<Json<Vec<ServerRevisionEntry>>, ApiFailure> {
    match crate::record::server_revisions(state.store.as_ref(), &name).await {
        Ok(revisions) => Ok(Json(revisions)),
        Err(e @ crate::record::RecordError::UnknownServer { .. }) => {
            Err(ApiFailure(StatusCode::NOT_FOUND, e.to_string()))
        }
        Err(crate::record::RecordError::Store(e)) => Err(store_failure(&e)),
    }
}

/// `GET /v1/state/export`: the whole store as one document, read in one transaction.
async fn export_state(State(state): State<AppState>) -> Result<Response, ApiFailure> {
    let export = state.store.export().await.map_err(|e| store_failure(&e))?;
    Ok(Json(export).into_response())
}

#[derive(Deserialize)]
struct LogQuery {
    #[serde(default = "default_lines")]
    lines: usize,
    #[serde(default)]
    follow: bool,
}

fn default_lines() -> usize {
    100
}

/// The logs of every instance of a server (prefixed with the instance when there are several).
async fn logs(
    State(state): State<AppState>,
    Path(name): Path<String>,
    Query(q): Query<LogQuery>,
) -> Response {
    let status = state.engine.status();
    let Some(server) = status.servers.iter().find(|s| s.name == name) else {
        let known: Vec<&str> = status.servers.iter().map(|s| s.name.as_str()).collect();
        return ApiFailure(
            StatusCode::NOT_FOUND,
            format!(
                "no server `{name}` in this fleet (servers: {})",
                known.join(", ")
            ),
        )
        .into_response();
    };
    let instances: Vec<String> = server.instances.iter().map(|i| i.id.clone()).collect();
    let prefix = instances.len() > 1;
    let streams = instances.into_iter().map(|id| {
        let lines = state
            .runtime
            .logs(&fleet_runtime::InstanceId(id.clone()), q.lines, q.follow);
        let tag = if prefix {
            format!("[{id}] ")
        } else {
            String::new()
        };
        lines.map(move |line| Ok::<_, Infallible>(format!("{tag}{line}\n")))
    });
    ndjson(futures::stream::select_all(streams))
}

/// Stops everything, streaming the events of the shutdown; the answer ends when the fleet
/// is down.
async fn shutdown(State(state): State<AppState>) -> Response {
    let (_, live) = state.engine.subscribe();
    state.shutdown_requested.send_replace(true);
    let finished = state.finished.clone();
    let stream = futures::stream::unfold((live, finished), |(mut live, mut finished)| async move {
        tokio::select! {
            biased;
            event = async {
                loop {
                    match live.recv().await {
                        // A slow reader missed some events; the fleet is not down yet.
                        Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => continue,
                        other => return other.ok(),
                    }
                }
            } => event.map(|event| (event, (live, finished))),
            _ = async { finished.wait_for(|f| *f).await.is_ok() } => None,
        }
    });
    ndjson(stream.map(event_line))
}

/// An engine event as one line of an event stream: the API's JSON.
fn event_line(event: fleet_engine::report::Event) -> Result<String, Infallible> {
    let event = crate::to_api::event(event);
    Ok(serde_json::to_string(&event).unwrap_or_default() + "\n")
}

fn ndjson(
    stream: impl futures::Stream<Item = Result<String, Infallible>> + Send + 'static,
) -> Response {
    Response::builder()
        .header("content-type", "application/x-ndjson")
        .body(Body::from_stream(stream))
        .unwrap_or_else(|_| StatusCode::INTERNAL_SERVER_ERROR.into_response())
}

#[cfg(test)]
mod tests {
    use super::is_loopback_host;

    #[test]
    fn only_loopback_hosts_reach_the_tcp_listener() {
        for host in [
            "127.0.0.1:7471",
            "127.0.0.1",
            "127.1.2.3:80",
            "localhost:7471",
            "LOCALHOST",
            "[::1]:7471",
            "[::1]",
        ] {
            assert!(is_loopback_host(host), "{host}");
        }
        for host in [
            "",
            "evil.example:7471",
            "localhost.evil.example",
            "10.0.0.1:7471",
            "[2001:db8::1]:7471",
            "[::1",
        ] {
            assert!(!is_loopback_host(host), "{host}");
        }
    }
}
