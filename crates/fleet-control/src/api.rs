//! The admin routes (see fleet-api for the contract). Errors become responses in one place:
//! [`ApiFailure`].

use axum::Json;
use axum::body::Body;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use fleet_api::types::{ApiError, CheckRun, Status};
use fleet_engine::Engine;
use fleet_runtime::ProcessRuntime;
use futures::StreamExt;
use serde::Deserialize;
use std::convert::Infallible;
use std::path::PathBuf;
use tokio::sync::watch;

#[derive(Clone)]
pub(crate) struct AppState {
    pub(crate) engine: Engine<ProcessRuntime>,
    pub(crate) state_dir: PathBuf,
    pub(crate) shutdown_requested: watch::Sender<bool>,
    pub(crate) finished: watch::Receiver<bool>,
}

pub(crate) fn router(state: AppState) -> axum::Router {
    axum::Router::new()
        .route("/v1/status", get(status))
        .route("/v1/events", get(events))
        .route("/v1/servers/{name}/logs", get(logs))
        .route("/v1/check", post(check))
        .route("/v1/shutdown", post(shutdown))
        .with_state(state)
}

/// Every error answer of the admin API.
struct ApiFailure(StatusCode, String);

impl IntoResponse for ApiFailure {
    fn into_response(self) -> Response {
        (self.0, Json(ApiError { error: self.1 })).into_response()
    }
}

async fn status(State(state): State<AppState>) -> Json<Status> {
    Json(state.engine.status())
}

async fn check(State(state): State<AppState>) -> Json<CheckRun> {
    Json(state.engine.check_now().await)
}

#[derive(Deserialize)]
struct Follow {
    #[serde(default)]
    follow: bool,
}

/// History, then (with `follow`) live events, one JSON object per line.
async fn events(State(state): State<AppState>, Query(q): Query<Follow>) -> Response {
    let (history, live) = state.engine.subscribe();
    let history = futures::stream::iter(history);
    let live = futures::stream::unfold(live, |mut rx| async move {
        loop {
            match rx.recv().await {
                Ok(event) => return Some((event, rx)),
                // A slow reader missed some; the history endpoint still has them.
                Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => continue,
                Err(tokio::sync::broadcast::error::RecvError::Closed) => return None,
            }
        }
    });
    let lines = |e: fleet_api::types::Event| {
        Ok::<_, Infallible>(serde_json::to_string(&e).unwrap_or_default() + "\n")
    };
    if q.follow {
        ndjson(history.chain(live).map(lines))
    } else {
        ndjson(history.map(lines))
    }
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
        let path =
            fleet_runtime::log_path(&state.state_dir, &fleet_runtime::InstanceId(id.clone()));
        let tag = if prefix {
            format!("[{id}] ")
        } else {
            String::new()
        };
        fleet_runtime::follow_log(path, q.lines, q.follow)
            .map(move |line| Ok::<_, Infallible>(format!("{tag}{line}\n")))
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
    ndjson(
        stream.map(|e| Ok::<_, Infallible>(serde_json::to_string(&e).unwrap_or_default() + "\n")),
    )
}

fn ndjson(
    stream: impl futures::Stream<Item = Result<String, Infallible>> + Send + 'static,
) -> Response {
    Response::builder()
        .header("content-type", "application/x-ndjson")
        .body(Body::from_stream(stream))
        .unwrap_or_else(|_| StatusCode::INTERNAL_SERVER_ERROR.into_response())
}
