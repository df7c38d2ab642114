//! A small HTTP/1.1 client over the control plane's unix socket.

use crate::types::{
    ApiError, AuditEntry, CheckRun, DeployRequest, DeployedServer, Event, EventRecord,
    GatewayToken, HistoryEntry, Restarted, RollbackRequest, ServerRevisionEntry, Status,
};
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use std::path::{Path, PathBuf};
use tokio::net::UnixStream;

/// Why a call to the control plane failed.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// Nothing listens on the socket: no control plane runs for this fleet.
    #[error(
        "no control plane is running for this fleet (nothing listens on {socket}); start one with `mcpfleet up`"
    )]
    NotRunning { socket: PathBuf },
    /// The connection failed or broke.
    #[error("talking to the control plane failed: {0}")]
    Transport(String),
    /// The control plane answered with an error.
    #[error("{message}")]
    Api { status: u16, message: String },
    /// The answer was not what this version of mcpfleet expects.
    #[error("unexpected answer from the control plane: {0}")]
    Decode(String),
}

/// A client of one control plane.
#[derive(Debug, Clone)]
pub struct Client {
    socket: PathBuf,
}

/// A streamed answer, read line by line.
#[derive(Debug)]
pub struct Lines {
    body: Incoming,
    buffer: Vec<u8>,
}

impl Lines {
    /// The next complete line (without its newline); `None` at the end of the stream.
    ///
    /// # Errors
    /// The stream broke.
    pub async fn next_line(&mut self) -> Result<Option<String>, ClientError> {
        loop {
            if let Some(i) = self.buffer.iter().position(|b| *b == b'\n') {
                let line: Vec<u8> = self.buffer.drain(..=i).collect();
                return Ok(Some(String::from_utf8_lossy(&line[..i]).into_owned()));
            }
            match self.body.frame().await {
                Some(Ok(frame)) => {
                    if let Ok(data) = frame.into_data() {
                        self.buffer.extend_from_slice(&data);
                    }
                }
                Some(Err(e)) => return Err(ClientError::Transport(e.to_string())),
                None if self.buffer.is_empty() => return Ok(None),
                None => {
                    return Ok(Some(
                        String::from_utf8_lossy(&std::mem::take(&mut self.buffer)).into_owned(),
                    ));
                }
            }
        }
    }

    /// The next event of an event stream.
    ///
    /// # Errors
    /// The stream broke or carried something that is not an event.
    pub async fn next_event(&mut self) -> Result<Option<Event>, ClientError> {
        match self.next_line().await? {
            Some(line) => serde_json::from_str(&line)
                .map(Some)
                .map_err(|e| ClientError::Decode(e.to_string())),
            None => Ok(None),
        }
    }

    /// The next event of a stream of recorded events (`GET /v1/events`), with its id.
    ///
    /// # Errors
    /// The stream broke or carried something that is not a recorded event.
    pub async fn next_record(&mut self) -> Result<Option<EventRecord>, ClientError> {
        match self.next_line().await? {
            Some(line) => serde_json::from_str(&line)
                .map(Some)
                .map_err(|e| ClientError::Decode(e.to_string())),
            None => Ok(None),
        }
    }
}

impl Client {
    /// A client of the control plane whose state directory is `state_dir`.
    pub fn new(state_dir: &Path) -> Self {
        Client {
            socket: state_dir.join(crate::SOCKET),
        }
    }

    /// Whether a control plane answers on the socket.
    pub async fn is_running(&self) -> bool {
        UnixStream::connect(&self.socket).await.is_ok()
    }

    /// # Errors
    /// See [`ClientError`].
    pub async fn status(&self) -> Result<Status, ClientError> {
        self.json(Method::GET, "/v1/status").await
    }

    /// The fleet's metrics in the Prometheus text format: the gateway's and the engine's.
    ///
    /// # Errors
    /// See [`ClientError`].
    pub async fn metrics(&self) -> Result<String, ClientError> {
        let body = self.body(Method::GET, "/metrics").await?;
        String::from_utf8(body.to_vec()).map_err(|e| ClientError::Decode(e.to_string()))
    }

    /// # Errors
    /// See [`ClientError`].
    pub async fn check(&self) -> Result<CheckRun, ClientError> {
        self.json(Method::POST, "/v1/check").await
    }

    /// Asks the control plane to stop every server and exit. The answer streams the events
    /// of the shutdown and ends once everything is stopped.
    ///
    /// # Errors
    /// See [`ClientError`].
    pub async fn shutdown(&self) -> Result<Lines, ClientError> {
        self.stream(Method::POST, "/v1/shutdown").await
    }

    /// What runs now, server by server: the base `deploy` and `plan` diff against.
    ///
    /// # Errors
    /// See [`ClientError`].
    pub async fn deployed(&self) -> Result<Vec<DeployedServer>, ClientError> {
        self.json(Method::GET, "/v1/deployed").await
    }

    /// The bearer tokens the running gateway accepts (hashes), by name.
    ///
    /// # Errors
    /// See [`ClientError`].
    pub async fn gateway_tokens(&self) -> Result<Vec<GatewayToken>, ClientError> {
        self.json(Method::GET, "/v1/gateway/tokens").await
    }

    /// The running fleet's `gateway` and `admin` settings (tokens as hashes), as the
    /// control plane's `fleet_settings` writes them.
    ///
    /// # Errors
    /// See [`ClientError`].
    pub async fn settings(&self) -> Result<serde_json::Value, ClientError> {
        self.json(Method::GET, "/v1/settings").await
    }

    /// Deploys a fleet file through the running control plane. The answer streams the
    /// deployment's events and ends with it.
    ///
    /// # Errors
    /// See [`ClientError`]; a deployment already in progress is an `Api` error (409), an
    /// invalid file one with status 422 and the located errors as its message.
    pub async fn deploy(&self, request: &DeployRequest) -> Result<Lines, ClientError> {
        self.post_stream("/v1/deploy", request).await
    }

    /// Rolls the fleet (or one server) back to a stored revision through the running
    /// control plane; streams the deployment's events like [`Client::deploy`].
    ///
    /// # Errors
    /// See [`ClientError`]; no such revision is an `Api` error (422).
    pub async fn rollback(&self, request: &RollbackRequest) -> Result<Lines, ClientError> {
        self.post_stream("/v1/rollback", request).await
    }

    async fn post_stream(
        &self,
        path: &str,
        request: &impl serde::Serialize,
    ) -> Result<Lines, ClientError> {
        let body = serde_json::to_vec(request).map_err(|e| ClientError::Decode(e.to_string()))?;
        let response = self.send(Method::POST, path, body).await?;
        Ok(Lines {
            body: response.into_body(),
            buffer: Vec::new(),
        })
    }

    /// Steers the rollout of `server`: `command` is `promote`, `abort`, `pause` or
    /// `resume`.
    ///
    /// # Errors
    /// See [`ClientError`]; a server without a rollout in progress is an `Api` error (409).
    pub async fn steer(&self, server: &str, command: &str) -> Result<(), ClientError> {
        self.body(Method::POST, &format!("/v1/servers/{server}/{command}"))
            .await
            .map(drop)
    }

    /// Restarts `server`'s instances one at a time; the answer comes once every instance has
    /// been replaced by a ready one.
    ///
    /// # Errors
    /// See [`ClientError`].
    pub async fn restart(&self, server: &str) -> Result<Restarted, ClientError> {
        self.json(Method::POST, &format!("/v1/servers/{server}/restart"))
            .await
    }

    /// Every recorded event (from the state store, across control-plane restarts), then
    /// (with `follow`) live events until the stream ends. Read them with
    /// [`Lines::next_record`] (or [`Lines::next_event`] without the ids).
    ///
    /// # Errors
    /// See [`ClientError`].
    pub async fn events(&self, follow: bool) -> Result<Lines, ClientError> {
        self.events_after(0, follow).await
    }

    /// Like [`Client::events`], from the first event with an id above `after`.
    ///
    /// # Errors
    /// See [`ClientError`].
    pub async fn events_after(&self, after: u64, follow: bool) -> Result<Lines, ClientError> {
        self.stream(
            Method::GET,
            &format!("/v1/events?after={after}&follow={follow}"),
        )
        .await
    }

    /// The events of this control plane's run only (since it started, from its memory,
    /// without ids), then (with `follow`) live events: what `up -d` shows.
    ///
    /// # Errors
    /// See [`ClientError`].
    pub async fn run_events(&self, follow: bool) -> Result<Lines, ClientError> {
        self.stream(
            Method::GET,
            &format!("/v1/events?run=current&follow={follow}"),
        )
        .await
    }

    /// Up to `limit` tool-call audit records with an id above `after`, oldest first.
    ///
    /// # Errors
    /// See [`ClientError`].
    pub async fn audit(&self, after: u64, limit: usize) -> Result<Vec<AuditEntry>, ClientError> {
        self.json(
            Method::GET,
            &format!("/v1/audit?after={after}&limit={limit}"),
        )
        .await
    }

    /// Every deployment with its fleet revision, oldest first.
    ///
    /// # Errors
    /// See [`ClientError`].
    pub async fn history(&self) -> Result<Vec<HistoryEntry>, ClientError> {
        self.json(Method::GET, "/v1/history").await
    }

    /// Every revision of `server`, oldest first.
    ///
    /// # Errors
    /// See [`ClientError`]; a server without revisions is an `Api` error (404).
    pub async fn server_revisions(
        &self,
        server: &str,
    ) -> Result<Vec<ServerRevisionEntry>, ClientError> {
        self.json(Method::GET, &format!("/v1/servers/{server}/revisions"))
            .await
    }

    /// The whole state store as one JSON document (`mcpfleet export-state`), read in one
    /// transaction while the control plane runs.
    ///
    /// # Errors
    /// See [`ClientError`].
    pub async fn export_state(&self) -> Result<Bytes, ClientError> {
        self.body(Method::GET, "/v1/state/export").await
    }

    /// The last `lines` lines of a server's log, then (with `follow`) new lines as written.
    ///
    /// # Errors
    /// See [`ClientError`].
    pub async fn logs(
        &self,
        server: &str,
        lines: usize,
        follow: bool,
    ) -> Result<Lines, ClientError> {
        self.stream(
            Method::GET,
            &format!("/v1/servers/{server}/logs?lines={lines}&follow={follow}"),
        )
        .await
    }

    async fn json<T: serde::de::DeserializeOwned>(
        &self,
        method: Method,
        path: &str,
    ) -> Result<T, ClientError> {
        let body = self.body(method, path).await?;
        serde_json::from_slice(&body).map_err(|e| ClientError::Decode(e.to_string()))
    }

    /// The whole body of a successful answer.
    async fn body(&self, method: Method, path: &str) -> Result<Bytes, ClientError> {
        let response = self.send(method, path, Vec::new()).await?;
        let body = response
            .into_body()
            .collect()
            .await
            .map_err(|e| ClientError::Transport(e.to_string()))?;
        Ok(body.to_bytes())
    }

    async fn stream(&self, method: Method, path: &str) -> Result<Lines, ClientError> {
        let response = self.send(method, path, Vec::new()).await?;
        Ok(Lines {
            body: response.into_body(),
            buffer: Vec::new(),
        })
    }

    /// Sends a request (`body` as JSON unless empty).
    async fn send(
        &self,
        method: Method,
        path: &str,
        body: Vec<u8>,
    ) -> Result<Response<Incoming>, ClientError> {
        let stream =
            UnixStream::connect(&self.socket)
                .await
                .map_err(|_| ClientError::NotRunning {
                    socket: self.socket.clone(),
                })?;
        let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
            .await
            .map_err(|e| ClientError::Transport(e.to_string()))?;
        tokio::spawn(connection);
        let mut request = Request::builder()
            .method(method)
            .uri(path)
            .header("host", "mcpfleet");
        if !body.is_empty() {
            request = request.header("content-type", "application/json");
        }
        let request = request
            .body(Full::new(Bytes::from(body)))
            .map_err(|e| ClientError::Transport(e.to_string()))?;
        let response = sender
            .send_request(request)
            .await
            .map_err(|e| ClientError::Transport(e.to_string()))?;
        if response.status() == StatusCode::OK {
            return Ok(response);
        }
        let status = response.status().as_u16();
        let body = response
            .into_body()
            .collect()
            .await
            .map_err(|e| ClientError::Transport(e.to_string()))?;
        let message = serde_json::from_slice::<ApiError>(&body.to_bytes())
            .map(|e| e.error)
            .unwrap_or_else(|_| format!("the control plane answered {status}"));
        Err(ClientError::Api { status, message })
    }
}
