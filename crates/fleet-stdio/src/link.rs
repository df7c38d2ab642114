//! A stdio upstream: one process's stdin/stdout carrying JSON-RPC lines, and the
//! client sessions attached to it.
//!
//! An *exclusive* link (`isolation: per-session`) has one attachment and passes every
//! message through byte for byte. A *shared* link (`isolation: shared`) has many:
//! client request ids and progress tokens are rewritten into the link's own number
//! space on the way up and restored on the way down, and `notifications/cancelled`
//! follows the rewritten id, so sessions never see each other's responses.
//!
//! A shared process is initialized once, by the link itself, when the first session
//! asks: with every client capability the gateway can relay (roots, sampling,
//! elicitation) — not the capabilities of whichever client came first. Each session's
//! `initialize` is answered from that result, with the protocol revision the client
//! asked for when the server's answer allows it; clients' `notifications/initialized`
//! are not repeated.
//!
//! Messages from the server are routed to the session that owns them: responses by id,
//! progress by token. A server→client request (sampling, elicitation, roots) on a shared
//! link goes to the session whose request caused it — named by a progress token it
//! carries, else the only session with a request in flight — and only if that session
//! declared the capability; when the owner cannot be told, the link answers the server
//! with an error instead of showing one session another's prompt. A client's answer to
//! a server→client request is taken only from the session it was delivered to. Other
//! notifications go to the one session of an exclusive link (log messages on the stream
//! of its newest request), and to every session of a shared one. Only the top-level
//! `id` and the token (or cancelled id) in `params` are ever re-encoded.

use parking_lot::Mutex;
use std::borrow::Cow;
use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::pin::Pin;
use std::sync::Arc;

use bytes::Bytes;
use serde::Deserialize;
use serde::de::IgnoredAny;
use serde_json::value::RawValue;
use tokio::io::{AsyncBufReadExt as _, AsyncRead, AsyncWrite, AsyncWriteExt as _, BufReader};
use tokio::sync::{mpsc, watch};

use crate::hub::{Hub, Routed};
use crate::jsonrpc;
use crate::jsonrpc::code;
use crate::protocol::{LATEST_LEGACY_REVISION, LEGACY_REVISIONS};

/// The attachment id no session has (ids start at 1).
const NOBODY: u64 = 0;

/// Messages queued for a process's stdin before senders wait.
const OUTBOX: usize = 1024;

/// A stdio process's pipes, shared by the sessions attached to it. Cheap to clone;
/// the link ends when the process closes its stdout.
#[derive(Clone)]
pub struct StdioLink {
    inner: Arc<Inner>,
}

impl fmt::Debug for StdioLink {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("StdioLink")
            .field("name", &self.inner.name)
            .field("shared", &self.inner.shared)
            .field("closed", &self.is_closed())
            .finish()
    }
}

impl PartialEq for StdioLink {
    fn eq(&self, other: &Self) -> bool {
        Arc::ptr_eq(&self.inner, &other.inner)
    }
}

impl Eq for StdioLink {}

struct Inner {
    /// For logs: the instance's name.
    name: String,
    shared: bool,
    outbox: mpsc::Sender<Bytes>,
    /// `true` once the process's stdout ended or the link was closed.
    closed: watch::Sender<bool>,
    state: Mutex<State>,
}

#[derive(Default)]
struct State {
    next_number: u64,
    next_attachment: u64,
    attachments: BTreeMap<u64, Arc<Hub>>,
    /// Shared links: what each session declared in its `initialize`.
    capabilities: HashMap<u64, Capabilities>,
    /// Shared links: upstream request id → whose request it is.
    pending: HashMap<u64, Pending>,
    /// Shared links: upstream progress token → (attachment, the client's token).
    tokens: HashMap<u64, (u64, Box<RawValue>)>,
    /// Server→client requests in flight: id key → the attachment asked.
    server_requests: HashMap<String, u64>,
    init: Init,
}

struct Pending {
    attachment: u64,
    original: Box<RawValue>,
    token: Option<u64>,
    /// The link's own `initialize` (its attachment is [`NOBODY`]).
    initialize: bool,
    /// While it is in flight, the server may ask its session something (any request
    /// but `ping`; `initialize` is the link's own).
    may_ask: bool,
}

/// The client capabilities that let a server ask a session something; one is declared
/// by being there (its value is an object of options).
#[derive(Debug, Default, Clone, Copy, Deserialize)]
struct Capabilities {
    roots: Option<IgnoredAny>,
    sampling: Option<IgnoredAny>,
    elicitation: Option<IgnoredAny>,
}

impl Capabilities {
    /// Whether a session that declared these can be sent `method`; `Err` names the
    /// missing capability.
    fn allow(self, method: &str) -> Result<(), &'static str> {
        match method {
            "roots/list" if self.roots.is_none() => Err("roots"),
            "sampling/createMessage" if self.sampling.is_none() => Err("sampling"),
            "elicitation/create" if self.elicitation.is_none() => Err("elicitation"),
            _ => Ok(()),
        }
    }
}

/// A session waiting for the shared process's `initialize` result.
struct Waiter {
    attachment: u64,
    id: Box<RawValue>,
    /// The `protocolVersion` it asked for.
    version: Option<String>,
}

#[derive(Default)]
enum Init {
    #[default]
    Fresh,
    /// The link's `initialize` is on its way; these wait for its result.
    InFlight { waiters: Vec<Waiter> },
    /// The process is initialized; every session's `initialize` is answered from this.
    Done { result: Box<RawValue> },
}

impl StdioLink {
    /// A link over `stdin`/`stdout` that one session uses (`isolation: per-session`).
    /// Messages pass through unchanged; dropping the attachment closes stdin, which
    /// asks the process to exit.
    pub fn exclusive(
        name: impl Into<String>,
        stdin: impl AsyncWrite + Send + 'static,
        stdout: impl AsyncRead + Send + 'static,
    ) -> Self {
        Self::new(name.into(), false, Box::pin(stdin), Box::pin(stdout))
    }

    /// A link over `stdin`/`stdout` that every session uses (`isolation: shared`).
    pub fn shared(
        name: impl Into<String>,
        stdin: impl AsyncWrite + Send + 'static,
        stdout: impl AsyncRead + Send + 'static,
    ) -> Self {
        Self::new(name.into(), true, Box::pin(stdin), Box::pin(stdout))
    }

    fn new(
        name: String,
        shared: bool,
        stdin: Pin<Box<dyn AsyncWrite + Send>>,
        stdout: Pin<Box<dyn AsyncRead + Send>>,
    ) -> Self {
        let (outbox, queue) = mpsc::channel(OUTBOX);
        let inner = Arc::new(Inner {
            name,
            shared,
            outbox,
            closed: watch::channel(false).0,
            state: Mutex::new(State::default()),
        });
        let writer = Arc::clone(&inner);
        tokio::spawn(async move {
            write_loop(stdin, queue, writer.closed.subscribe()).await;
            // stdin is gone: whatever the process still says, no request can reach it.
            writer.close();
        });
        tokio::spawn(read_loop(Arc::clone(&inner), stdout));
        Self { inner }
    }

    /// Whether the process's stdout has ended (or the link was closed).
    pub fn is_closed(&self) -> bool {
        *self.inner.closed.borrow()
    }

    /// Resolves once the link is closed.
    pub async fn closed(&self) {
        let mut closed = self.inner.closed.subscribe();
        let _ = closed.wait_for(|c| *c).await;
    }

    /// A virtual stdio connection through this link, for a client that speaks
    /// line-delimited JSON-RPC itself (mcpfleet's health checks): write requests to
    /// the writer, read what the server sends this connection from the reader.
    /// `None` when the link is closed or exclusive and already in use.
    pub fn connect(
        &self,
    ) -> Option<(
        impl AsyncWrite + Send + Unpin + 'static,
        impl AsyncRead + Send + Unpin + 'static,
    )> {
        let (sink, mut inbox) = mpsc::unbounded_channel();
        let attachment = self.attach_hub(Arc::new(Hub::raw(sink)))?;
        let (ours, theirs) = tokio::io::duplex(64 * 1024);
        let (their_reader, their_writer) = tokio::io::split(theirs);
        let (our_reader, mut our_writer) = tokio::io::split(ours);
        tokio::spawn(async move {
            let mut lines = BufReader::new(our_reader);
            let mut line = Vec::new();
            loop {
                tokio::select! {
                    read = lines.read_until(b'\n', &mut line) => {
                        if !matches!(read, Ok(n) if n > 0) {
                            break;
                        }
                        let message = Bytes::from(std::mem::take(&mut line));
                        if let Ok(parsed) = ClientMessage::parse(&message)
                            && attachment.send(&parsed, message.clone()).await.is_err()
                        {
                            break;
                        }
                    }
                    delivered = inbox.recv() => {
                        let Some(message) = delivered else { break };
                        if our_writer.write_all(&message).await.is_err()
                            || our_writer.write_all(b"\n").await.is_err()
                        {
                            break;
                        }
                    }
                }
            }
        });
        Some((their_writer, their_reader))
    }

    /// Attaches a new client session; `None` when the link is closed, or exclusive
    /// and already in use.
    pub fn attach(&self) -> Option<Attachment> {
        self.attach_hub(Arc::new(Hub::default()))
    }

    fn attach_hub(&self, hub: Arc<Hub>) -> Option<Attachment> {
        let mut state = self.inner.state();
        if self.is_closed() || (!self.inner.shared && !state.attachments.is_empty()) {
            return None;
        }
        state.next_attachment += 1;
        let id = state.next_attachment;
        state.attachments.insert(id, Arc::clone(&hub));
        Some(Attachment {
            inner: Arc::clone(&self.inner),
            id,
            hub,
        })
    }
}

impl Inner {
    fn state(&self) -> parking_lot::MutexGuard<'_, State> {
        self.state.lock()
    }

    fn close(&self) {
        self.closed.send_replace(true);
    }

    /// Queues a message the link itself answers with (a `ping` nobody else can).
    fn reply(&self, message: Vec<u8>) {
        if self.outbox.try_send(Bytes::from(message)).is_err() {
            tracing::debug!(link = self.name, "stdin queue full; reply dropped");
        }
    }

    /// Routes one message from the server.
    fn receive(&self, message: Bytes) {
        let Ok(fields) = serde_json::from_slice::<Fields<'_>>(&message) else {
            tracing::debug!(link = self.name, "non-JSON-RPC line on stdout ignored");
            return;
        };
        let mut deliveries: Vec<(Arc<Hub>, Routed)> = Vec::new();
        {
            let mut state = self.state();
            match (&fields.method, fields.id) {
                (None, Some(id)) => self.route_response(&mut state, &message, id, &mut deliveries),
                (Some(method), Some(id)) => {
                    match self.owner(&state, method, fields.params) {
                        Ok((attachment, hub)) => {
                            deliveries.push((hub, Routed::Related(message.clone())));
                            state.server_requests.insert(id_key(id), attachment);
                        }
                        // Liveness between the link and its process: a shared process's
                        // pings are no client's business, and with no client there is
                        // still the link to answer.
                        Err(_) if method == "ping" => {
                            self.reply(result_body(id.get(), "{}"));
                        }
                        Err(why) => {
                            tracing::debug!(link = self.name, %method, %why, "server request refused");
                            let code = match why {
                                Unowned::Undeclared(_) => code::METHOD_NOT_FOUND,
                                _ => code::INTERNAL_ERROR,
                            };
                            self.reply(jsonrpc::error_body(
                                serde_json::from_str(id.get()).ok().as_ref(),
                                code,
                                &why.to_string(),
                            ));
                        }
                    }
                }
                (Some(method), None) => {
                    self.route_notification(&mut state, method, &message, &fields, &mut deliveries)
                }
                (None, None) => {}
            }
        }
        for (hub, routed) in deliveries {
            hub.deliver(routed);
        }
    }

    /// The session a server→client request `method` goes to (see the module docs).
    fn owner(
        &self,
        state: &State,
        method: &str,
        params: Option<&RawValue>,
    ) -> Result<(u64, Arc<Hub>), Unowned> {
        let attachment = if !self.shared {
            state.attachments.keys().next().copied()
        } else if method == "ping" {
            None
        } else {
            Some(owner_of_server_request(state, method, params)?)
        };
        attachment
            .and_then(|a| Some((a, Arc::clone(state.attachments.get(&a)?))))
            .ok_or(Unowned::NoSession)
    }

    fn route_response(
        &self,
        state: &mut State,
        message: &Bytes,
        id: &RawValue,
        deliveries: &mut Vec<(Arc<Hub>, Routed)>,
    ) {
        if !self.shared {
            if let Some(hub) = state.attachments.values().next() {
                let routed = Routed::Response {
                    key: id_key(id),
                    message: message.clone(),
                };
                deliveries.push((Arc::clone(hub), routed));
            }
            return;
        }
        let Some(pending) = id
            .get()
            .parse::<u64>()
            .ok()
            .and_then(|n| state.pending.remove(&n))
        else {
            return;
        };
        if let Some(token) = pending.token {
            state.tokens.remove(&token);
        }
        if pending.initialize {
            let waiters = match std::mem::take(&mut state.init) {
                Init::InFlight { waiters } => waiters,
                other => {
                    state.init = other;
                    Vec::new()
                }
            };
            let result = serde_json::from_slice::<ResultField<'_>>(message)
                .ok()
                .and_then(|r| r.result)
                .map(RawValue::to_owned);
            match &result {
                Some(result) => {
                    state.init = Init::Done {
                        result: result.clone(),
                    };
                    // Sent before any session learns the result, so before any of
                    // their requests.
                    self.reply(INITIALIZED.to_vec());
                }
                // The next session's `initialize` tries again.
                None => state.init = Init::Fresh,
            }
            for waiter in waiters {
                if let Some(hub) = state.attachments.get(&waiter.attachment) {
                    let answer = match &result {
                        Some(result) => initialize_answer(&waiter, result),
                        None => with_id(message, &waiter.id).unwrap_or_default(),
                    };
                    let routed = Routed::Response {
                        key: id_key(&waiter.id),
                        message: Bytes::from(answer),
                    };
                    deliveries.push((Arc::clone(hub), routed));
                }
            }
        }
        if let (Some(hub), Ok(restored)) = (
            state.attachments.get(&pending.attachment),
            with_id(message, &pending.original),
        ) {
            let routed = Routed::Response {
                key: id_key(&pending.original),
                message: Bytes::from(restored),
            };
            deliveries.push((Arc::clone(hub), routed));
        }
    }

    fn route_notification(
        &self,
        state: &mut State,
        method: &str,
        message: &Bytes,
        fields: &Fields<'_>,
        deliveries: &mut Vec<(Arc<Hub>, Routed)>,
    ) {
        let params = fields
            .params
            .and_then(|p| serde_json::from_str::<NotificationParams<'_>>(p.get()).ok());
        match method {
            "notifications/progress" => {
                let Some(token) = params.as_ref().and_then(|p| p.progress_token) else {
                    return;
                };
                if !self.shared {
                    if let Some(hub) = state.attachments.values().next() {
                        let routed = Routed::Progress {
                            token: id_key(token),
                            message: message.clone(),
                        };
                        deliveries.push((Arc::clone(hub), routed));
                    }
                    return;
                }
                let Some((attachment, original)) = token
                    .get()
                    .parse::<u64>()
                    .ok()
                    .and_then(|n| state.tokens.get(&n))
                else {
                    return;
                };
                if let (Some(hub), Ok(restored)) = (
                    state.attachments.get(attachment),
                    with_param(message, "progressToken", original),
                ) {
                    let routed = Routed::Progress {
                        token: id_key(original),
                        message: Bytes::from(restored),
                    };
                    deliveries.push((Arc::clone(hub), routed));
                }
            }
            "notifications/cancelled" => {
                // The server gave up on a request it sent a client.
                let owner = params
                    .as_ref()
                    .and_then(|p| p.request_id)
                    .and_then(|id| state.server_requests.remove(&id_key(id)));
                if let Some(hub) = owner.and_then(|a| state.attachments.get(&a)) {
                    deliveries.push((Arc::clone(hub), Routed::Related(message.clone())));
                }
            }
            _ if !self.shared => {
                if let Some(hub) = state.attachments.values().next() {
                    let routed = if method == "notifications/message" {
                        Routed::Related(message.clone())
                    } else {
                        Routed::Unrelated(message.clone())
                    };
                    deliveries.push((Arc::clone(hub), routed));
                }
            }
            _ => {
                for hub in state.attachments.values() {
                    deliveries.push((Arc::clone(hub), Routed::Unrelated(message.clone())));
                }
            }
        }
    }

    /// Every attachment learns the process is gone.
    fn end(&self) {
        self.close();
        let hubs: Vec<Arc<Hub>> = {
            let mut state = self.state();
            state.pending.clear();
            state.tokens.clear();
            state.attachments.values().cloned().collect()
        };
        for hub in hubs {
            hub.close();
        }
    }
}

/// Why a server→client request on a shared link goes to no session.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
enum Unowned {
    /// No session has a request in flight that could have caused it.
    #[error("no client session has a request in flight on this server")]
    NoSession,
    /// Several sessions do, and the request names none of them.
    #[error(
        "several client sessions share this server and have requests in flight; the gateway cannot tell which one this request is for"
    )]
    Ambiguous,
    /// Its session did not declare the capability the request needs.
    #[error("the client did not declare the `{0}` capability")]
    Undeclared(&'static str),
}

/// The session a shared process's request `method` is for: the one whose progress
/// token it carries, else the only session with a request in flight — provided that
/// session declared the capability `method` needs.
fn owner_of_server_request(
    state: &State,
    method: &str,
    params: Option<&RawValue>,
) -> Result<u64, Unowned> {
    let by_token = params
        .and_then(|p| serde_json::from_str::<ClientParams<'_>>(p.get()).ok())
        .and_then(|p| p.meta?.progress_token?.get().parse::<u64>().ok())
        .and_then(|token| state.tokens.get(&token))
        .map(|(attachment, _)| *attachment);
    let owner = match by_token {
        Some(owner) => owner,
        None => {
            let mut askers = state
                .pending
                .values()
                .filter(|p| p.may_ask && p.attachment != NOBODY)
                .map(|p| p.attachment);
            let first = askers.next().ok_or(Unowned::NoSession)?;
            if askers.any(|other| other != first) {
                return Err(Unowned::Ambiguous);
            }
            first
        }
    };
    let declared = state.capabilities.get(&owner).copied().unwrap_or_default();
    declared.allow(method).map_err(Unowned::Undeclared)?;
    Ok(owner)
}

async fn write_loop(
    stdin: Pin<Box<dyn AsyncWrite + Send>>,
    mut queue: mpsc::Receiver<Bytes>,
    mut closed: watch::Receiver<bool>,
) {
    let mut stdin = tokio::io::BufWriter::new(stdin);
    loop {
        let message = tokio::select! {
            message = queue.recv() => message,
            _ = closed.wait_for(|c| *c) => None,
        };
        let Some(mut message) = message else { break };
        loop {
            if write_line(&mut stdin, &message).await.is_err() {
                return;
            }
            match queue.try_recv() {
                Ok(next) => message = next,
                Err(_) => break,
            }
        }
        if stdin.flush().await.is_err() {
            return;
        }
    }
    // Dropping stdin asks the process to exit.
}

/// Writes one message as one line. JSON cannot hold a raw line break inside a string,
/// so any in the client's bytes are whitespace between tokens: they become spaces.
async fn write_line(stdin: &mut (impl AsyncWrite + Unpin), message: &[u8]) -> std::io::Result<()> {
    if message.iter().any(|b| matches!(b, b'\n' | b'\r')) {
        let flat: Vec<u8> = message
            .iter()
            .map(|b| if matches!(b, b'\n' | b'\r') { b' ' } else { *b })
            .collect();
        stdin.write_all(flat.trim_ascii()).await?;
    } else {
        stdin.write_all(message).await?;
    }
    stdin.write_all(b"\n").await
}

/// The longest line a server may write; a longer one is dropped (its request then
/// times out) instead of growing the gateway's memory without bound.
const MAX_LINE: usize = 16 * 1024 * 1024;

async fn read_loop(inner: Arc<Inner>, stdout: Pin<Box<dyn AsyncRead + Send>>) {
    let mut stdout = BufReader::with_capacity(64 * 1024, stdout);
    let mut line = Vec::new();
    loop {
        line.clear();
        match read_line(&mut stdout, &mut line, MAX_LINE).await {
            Ok(Line::End) | Err(_) => break,
            Ok(Line::TooLong(length)) => {
                tracing::warn!(
                    link = inner.name,
                    length,
                    limit = MAX_LINE,
                    "a line longer than the limit on stdout was dropped"
                );
            }
            Ok(Line::Complete) => {
                let message = line.trim_ascii();
                if !message.is_empty() {
                    inner.receive(Bytes::copy_from_slice(message));
                }
            }
        }
    }
    tracing::debug!(link = inner.name, "stdout ended");
    inner.end();
}

/// What [`read_line`] read.
#[derive(Debug, PartialEq, Eq)]
enum Line {
    /// A line, in the buffer (without its `\n`).
    Complete,
    /// A line of this many bytes, over the limit: skipped, the buffer left empty.
    TooLong(usize),
    /// The stream ended (a last line without `\n` is [`Line::Complete`] first).
    End,
}

/// Reads one line into `line`, never holding more than `limit` bytes of it.
async fn read_line(
    reader: &mut (impl tokio::io::AsyncBufRead + Unpin),
    line: &mut Vec<u8>,
    limit: usize,
) -> std::io::Result<Line> {
    let mut length = 0;
    loop {
        let buffer = reader.fill_buf().await?;
        if buffer.is_empty() {
            return Ok(match length {
                0 => Line::End,
                n if n > limit => Line::TooLong(n),
                _ => Line::Complete,
            });
        }
        let (chunk, used, done) = match buffer.iter().position(|b| *b == b'\n') {
            Some(end) => (&buffer[..end], end + 1, true),
            None => (buffer, buffer.len(), false),
        };
        length += chunk.len();
        if length > limit {
            line.clear();
        } else {
            line.extend_from_slice(chunk);
        }
        reader.consume(used);
        if done {
            return Ok(if length > limit {
                Line::TooLong(length)
            } else {
                Line::Complete
            });
        }
    }
}

/// A client session's place on a link. Dropping it detaches the session (and closes
/// an exclusive link).
pub struct Attachment {
    inner: Arc<Inner>,
    id: u64,
    pub hub: Arc<Hub>,
}

impl fmt::Debug for Attachment {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Attachment")
            .field("link", &self.inner.name)
            .field("id", &self.id)
            .finish_non_exhaustive()
    }
}

/// Why a client message was not sent upstream.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum SendError {
    /// The process behind the link is gone.
    #[error("the stdio server's process has ended")]
    Closed,
    /// A response to a server→client request this session was never sent (another
    /// session's, or none at all): dropped, never forwarded.
    #[error("this session was sent no server request with that id")]
    NotAsked,
}

impl Attachment {
    pub fn is_closed(&self) -> bool {
        *self.inner.closed.borrow()
    }

    /// Sends a client message upstream (rewritten on a shared link). A shared link
    /// answers a repeated `initialize` itself, through this session's hub.
    pub async fn send(&self, message: &ClientMessage<'_>, bytes: Bytes) -> Result<(), SendError> {
        if self.is_closed() {
            return Err(SendError::Closed);
        }
        if message.method.as_deref() == Some("notifications/cancelled")
            && let Some(id) = message.cancelled_request
        {
            // Its answer stream ends now; no response will come.
            self.hub.end(id);
        }
        let bytes = if self.inner.shared {
            match self.rewrite(message, bytes)? {
                Some(bytes) => bytes,
                None => return Ok(()),
            }
        } else {
            if message.method.is_none()
                && let Some(id) = message.id
            {
                self.inner.state().server_requests.remove(&id_key(id));
            }
            bytes
        };
        self.inner
            .outbox
            .send(bytes)
            .await
            .map_err(|_| SendError::Closed)
    }

    /// A shared link's view of a client message: `Ok(None)` when nothing goes upstream.
    ///
    /// # Errors
    /// [`SendError::NotAsked`] for an answer to a server→client request this session
    /// was not sent.
    fn rewrite(
        &self,
        message: &ClientMessage<'_>,
        bytes: Bytes,
    ) -> Result<Option<Bytes>, SendError> {
        let mut state = self.inner.state();
        let upstream = match (message.method.as_deref(), message.id) {
            (Some("initialize"), Some(id)) => {
                state
                    .capabilities
                    .insert(self.id, message.capabilities.unwrap_or_default());
                let waiter = Waiter {
                    attachment: self.id,
                    id: id.to_owned(),
                    version: message.protocol_version.as_deref().map(str::to_owned),
                };
                match &mut state.init {
                    Init::Done { result } => {
                        let routed = Routed::Response {
                            key: id_key(id),
                            message: Bytes::from(initialize_answer(&waiter, result)),
                        };
                        drop(state);
                        self.hub.deliver(routed);
                        None
                    }
                    Init::InFlight { waiters } => {
                        waiters.push(waiter);
                        None
                    }
                    Init::Fresh => {
                        state.init = Init::InFlight {
                            waiters: vec![waiter],
                        };
                        state.next_number += 1;
                        let number = state.next_number;
                        // Answered to no session: the waiters get its result.
                        let own = Pending {
                            attachment: NOBODY,
                            original: serde_json::value::to_raw_value(&number).unwrap_or_default(),
                            token: None,
                            initialize: true,
                            may_ask: false,
                        };
                        state.pending.insert(number, own);
                        Some(Bytes::from(shared_initialize(number)))
                    }
                }
            }
            (Some(_), Some(id)) => self.request_upstream(&mut state, message, &bytes, id),
            // The link sent its own once the process answered its `initialize`.
            (Some("notifications/initialized"), None) => None,
            (Some("notifications/cancelled"), None) => {
                self.cancel(&mut state, message.cancelled_request, &bytes)
            }
            (Some(_), None) => Some(bytes),
            (None, Some(id)) => {
                // A client's answer to a server→client request: ids are the server's,
                // and only the session that was asked may answer.
                let key = id_key(id);
                if state.server_requests.get(&key) != Some(&self.id) {
                    return Err(SendError::NotAsked);
                }
                state.server_requests.remove(&key);
                Some(bytes)
            }
            (None, None) => None,
        };
        Ok(upstream)
    }

    /// `notifications/cancelled` for one of this session's requests, in the link's ids.
    fn cancel(&self, state: &mut State, request: Option<&RawValue>, bytes: &[u8]) -> Option<Bytes> {
        let original = id_key(request?);
        let number = state
            .pending
            .iter()
            .find(|(_, p)| p.attachment == self.id && id_key(&p.original) == original)
            .map(|(n, _)| *n)?;
        // The server will not answer a cancelled request: forget it now.
        if let Some(token) = state.pending.remove(&number).and_then(|p| p.token) {
            state.tokens.remove(&token);
        }
        let number = RawValue::from_string(number.to_string()).ok()?;
        with_param(bytes, "requestId", &number)
            .ok()
            .map(Bytes::from)
    }

    fn request_upstream(
        &self,
        state: &mut State,
        message: &ClientMessage<'_>,
        bytes: &[u8],
        id: &RawValue,
    ) -> Option<Bytes> {
        state.next_number += 1;
        let number = state.next_number;
        let token = message.progress_token.map(|original| {
            state.next_number += 1;
            state
                .tokens
                .insert(state.next_number, (self.id, original.to_owned()));
            state.next_number
        });
        state.pending.insert(
            number,
            Pending {
                attachment: self.id,
                original: id.to_owned(),
                token,
                initialize: false,
                may_ask: message.method.as_deref() != Some("ping"),
            },
        );
        match rewrite_request(bytes, number, token) {
            Ok(rewritten) => Some(Bytes::from(rewritten)),
            Err(error) => {
                tracing::debug!(%error, "cannot rewrite a request");
                state.pending.remove(&number);
                if let Some(token) = token {
                    state.tokens.remove(&token);
                }
                None
            }
        }
    }
}

impl Drop for Attachment {
    fn drop(&mut self) {
        let mut state = self.inner.state();
        state.attachments.remove(&self.id);
        let id = self.id;
        state.capabilities.remove(&id);
        state.pending.retain(|_, p| p.attachment != id);
        state.tokens.retain(|_, (a, _)| *a != id);
        state.server_requests.retain(|_, a| *a != id);
        if let Init::InFlight { waiters } = &mut state.init {
            waiters.retain(|w| w.attachment != id);
        }
        drop(state);
        if !self.inner.shared {
            self.inner.close();
        }
    }
}

/// What the gateway reads of a client message bound for a stdio server.
#[derive(Debug, Default)]
pub struct ClientMessage<'a> {
    pub method: Option<Cow<'a, str>>,
    pub id: Option<&'a RawValue>,
    /// `params._meta.progressToken`.
    pub progress_token: Option<&'a RawValue>,
    /// `params.requestId` of `notifications/cancelled`.
    pub cancelled_request: Option<&'a RawValue>,
    /// `params.protocolVersion` of `initialize`.
    protocol_version: Option<Cow<'a, str>>,
    /// `params.capabilities` of `initialize`.
    capabilities: Option<Capabilities>,
}

impl<'a> ClientMessage<'a> {
    /// Reads a single JSON-RPC message (batches are not stdio messages).
    pub fn parse(bytes: &'a [u8]) -> Result<Self, serde_json::Error> {
        let fields: Fields<'a> = serde_json::from_slice(bytes)?;
        let params = fields
            .params
            .map(|p| serde_json::from_str::<ClientParams<'a>>(p.get()))
            .transpose()?;
        let params = params.unwrap_or_default();
        Ok(Self {
            method: fields.method,
            id: fields.id,
            progress_token: params.meta.and_then(|m| m.progress_token),
            cancelled_request: params.request_id,
            protocol_version: params.protocol_version,
            capabilities: params.capabilities,
        })
    }

    /// A request (not a notification or a response).
    pub fn is_request(&self) -> bool {
        self.method.is_some() && self.id.is_some()
    }
}

#[derive(Deserialize)]
struct Fields<'a> {
    #[serde(borrow)]
    method: Option<Cow<'a, str>>,
    #[serde(borrow)]
    id: Option<&'a RawValue>,
    #[serde(borrow)]
    params: Option<&'a RawValue>,
}

#[derive(Default, Deserialize)]
struct ClientParams<'a> {
    #[serde(rename = "_meta", borrow)]
    meta: Option<ClientMeta<'a>>,
    #[serde(rename = "requestId", borrow)]
    request_id: Option<&'a RawValue>,
    #[serde(rename = "protocolVersion", borrow)]
    protocol_version: Option<Cow<'a, str>>,
    capabilities: Option<Capabilities>,
}

#[derive(Deserialize)]
struct ClientMeta<'a> {
    #[serde(rename = "progressToken", borrow)]
    progress_token: Option<&'a RawValue>,
}

#[derive(Deserialize)]
struct NotificationParams<'a> {
    #[serde(rename = "progressToken", borrow)]
    progress_token: Option<&'a RawValue>,
    #[serde(rename = "requestId", borrow)]
    request_id: Option<&'a RawValue>,
}

#[derive(Deserialize)]
struct ResultField<'a> {
    #[serde(borrow)]
    result: Option<&'a RawValue>,
}

/// A JSON-RPC id (or progress token) in one canonical spelling, so `1` and `1.0`
/// or differently escaped strings written by client and server compare equal.
pub fn id_key(id: &RawValue) -> String {
    serde_json::from_str::<serde_json::Value>(id.get())
        .map(|v| v.to_string())
        .unwrap_or_else(|_| id.get().to_owned())
}

fn result_body(id: &str, result: &str) -> Vec<u8> {
    format!(r#"{{"jsonrpc":"2.0","id":{id},"result":{result}}}"#).into_bytes()
}

/// What a shared link tells its process once it is initialized.
const INITIALIZED: &[u8] = br#"{"jsonrpc":"2.0","method":"notifications/initialized"}"#;

/// The `initialize` a shared link sends its process: every client capability the
/// gateway relays to the session that a server→client request is for.
fn shared_initialize(id: u64) -> Vec<u8> {
    let message = serde_json::json!({
        "jsonrpc": "2.0",
        "id": id,
        "method": "initialize",
        "params": {
            "protocolVersion": LATEST_LEGACY_REVISION,
            "capabilities": {
                "roots": { "listChanged": true },
                "sampling": {},
                "elicitation": {},
            },
            "clientInfo": { "name": "mcpfleet-gateway", "version": env!("CARGO_PKG_VERSION") },
        },
    });
    serde_json::to_vec(&message).unwrap_or_default()
}

/// A session's answer to its `initialize` from the shared process's `result`: the
/// revision it asked for when that is a legacy revision no newer than the process's
/// (which then speaks it too), else the process's (the client decides whether it can
/// go on with it, as with any server).
fn initialize_answer(waiter: &Waiter, result: &RawValue) -> Vec<u8> {
    #[derive(Deserialize)]
    struct InitializeResult<'a> {
        #[serde(rename = "protocolVersion", borrow)]
        protocol_version: Option<Cow<'a, str>>,
    }
    let agreed = serde_json::from_str::<InitializeResult<'_>>(result.get())
        .ok()
        .and_then(|r| r.protocol_version);
    // A client asking for a legacy revision older than the one the process agreed to is
    // answered with its own.
    let older = match (waiter.version.as_deref(), agreed.as_deref()) {
        (Some(asked), Some(agreed))
            if asked < agreed
                && LEGACY_REVISIONS.contains(&asked)
                && LEGACY_REVISIONS.contains(&agreed) =>
        {
            Some(asked)
        }
        _ => None,
    };
    let adapted = older.and_then(|asked| with_version(result, asked));
    result_body(waiter.id.get(), adapted.as_deref().unwrap_or(result.get()))
}

/// An `initialize` result with another `protocolVersion`.
fn with_version(result: &RawValue, version: &str) -> Option<String> {
    let mut object: Object = serde_json::from_str(result.get()).ok()?;
    let version = serde_json::value::to_raw_value(version).ok()?;
    object.insert("protocolVersion".to_owned(), version);
    serde_json::to_string(&object).ok()
}

type Object = BTreeMap<String, Box<RawValue>>;

/// `message` with its top-level `id` replaced.
fn with_id(message: &[u8], id: &RawValue) -> Result<Vec<u8>, serde_json::Error> {
    let mut object: Object = serde_json::from_slice(message)?;
    object.insert("id".to_owned(), id.to_owned());
    serde_json::to_vec(&object)
}

/// `message` with `params.<name>` replaced.
fn with_param(message: &[u8], name: &str, value: &RawValue) -> Result<Vec<u8>, serde_json::Error> {
    let mut object: Object = serde_json::from_slice(message)?;
    let mut params: Object = match object.get("params") {
        Some(params) => serde_json::from_str(params.get())?,
        None => Object::new(),
    };
    params.insert(name.to_owned(), value.to_owned());
    object.insert(
        "params".to_owned(),
        serde_json::value::to_raw_value(&params)?,
    );
    serde_json::to_vec(&object)
}

/// A client request with the link's id and, when it asked for progress, the link's
/// progress token.
fn rewrite_request(
    message: &[u8],
    number: u64,
    token: Option<u64>,
) -> Result<Vec<u8>, serde_json::Error> {
    let mut object: Object = serde_json::from_slice(message)?;
    object.insert("id".to_owned(), RawValue::from_string(number.to_string())?);
    if let Some(token) = token
        && let Some(params) = object.get("params")
    {
        let mut params: Object = serde_json::from_str(params.get())?;
        let mut meta: Object = match params.get("_meta") {
            Some(meta) => serde_json::from_str(meta.get())?,
            None => Object::new(),
        };
        meta.insert(
            "progressToken".to_owned(),
            RawValue::from_string(token.to_string())?,
        );
        params.insert("_meta".to_owned(), serde_json::value::to_raw_value(&meta)?);
        object.insert(
            "params".to_owned(),
            serde_json::value::to_raw_value(&params)?,
        );
    }
    serde_json::to_vec(&object)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn raw(text: &str) -> Box<RawValue> {
        RawValue::from_string(text.to_owned()).unwrap()
    }

    #[test]
    fn rewriting_touches_only_the_id_and_token() {
        let message = br#"{"jsonrpc":"2.0","id":"a","method":"tools/call","params":{"name":"x","arguments":{"n":1.50},"_meta":{"progressToken":"t","other":true}}}"#;
        let rewritten: serde_json::Value =
            serde_json::from_slice(&rewrite_request(message, 7, Some(8)).unwrap()).unwrap();
        assert_eq!(rewritten["id"], 7);
        assert_eq!(rewritten["params"]["_meta"]["progressToken"], 8);
        assert_eq!(rewritten["params"]["_meta"]["other"], true);
        assert_eq!(rewritten["params"]["name"], "x");
        // Untouched values keep their exact spelling.
        let text = String::from_utf8(rewrite_request(message, 7, Some(8)).unwrap()).unwrap();
        assert!(text.contains(r#""arguments":{"n":1.50}"#), "{text}");
        let back = with_id(br#"{"jsonrpc":"2.0","id":7,"result":{}}"#, &raw(r#""a""#)).unwrap();
        assert_eq!(
            serde_json::from_slice::<serde_json::Value>(&back).unwrap()["id"],
            "a"
        );
    }

    /// JSON without floats (whose spelling serde may change) or duplicate keys.
    fn json_value() -> impl proptest::strategy::Strategy<Value = serde_json::Value> {
        use proptest::prelude::*;
        let leaf = prop_oneof![
            Just(serde_json::Value::Null),
            any::<bool>().prop_map(serde_json::Value::from),
            any::<i64>().prop_map(serde_json::Value::from),
            any::<String>().prop_map(serde_json::Value::from),
        ];
        leaf.prop_recursive(3, 24, 5, |inner| {
            prop_oneof![
                proptest::collection::vec(inner.clone(), 0..4).prop_map(serde_json::Value::from),
                proptest::collection::btree_map(any::<String>(), inner, 0..4)
                    .prop_map(|m| serde_json::Value::Object(m.into_iter().collect())),
            ]
        })
    }

    fn json_id() -> impl proptest::strategy::Strategy<Value = serde_json::Value> {
        use proptest::prelude::*;
        prop_oneof![
            any::<i64>().prop_map(serde_json::Value::from),
            any::<u64>().prop_map(serde_json::Value::from),
            any::<String>().prop_map(serde_json::Value::from),
        ]
    }

    proptest::proptest! {
        /// A shared link rewrites the id and progress token of a request and nothing
        /// else, and gives the client back its own id on the answer.
        #[test]
        fn rewriting_ids_and_tokens_keeps_everything_else(
            id in json_id(),
            token in proptest::option::of(json_id()),
            arguments in json_value(),
            meta_extra in json_value(),
            number in 1..u64::MAX / 2,
        ) {
            let mut meta = serde_json::json!({ "other": meta_extra });
            if let Some(token) = &token {
                meta["progressToken"] = token.clone();
            }
            let request = serde_json::json!({
                "jsonrpc": "2.0", "id": id, "method": "tools/call",
                "params": { "name": "t", "arguments": arguments, "_meta": meta },
            });
            let bytes = serde_json::to_vec(&request).unwrap();
            let message = ClientMessage::parse(&bytes).unwrap();
            let link_token = message.progress_token.map(|_| number + 1);
            let rewritten: serde_json::Value =
                serde_json::from_slice(&rewrite_request(&bytes, number, link_token).unwrap()).unwrap();
            let mut expected = request.clone();
            expected["id"] = number.into();
            if let Some(link_token) = link_token {
                expected["params"]["_meta"]["progressToken"] = link_token.into();
            }
            proptest::prop_assert_eq!(rewritten, expected);

            let original = RawValue::from_string(serde_json::to_string(&id).unwrap()).unwrap();
            let answer = serde_json::json!({ "jsonrpc": "2.0", "id": number, "result": { "echo": arguments } });
            let restored: serde_json::Value = serde_json::from_slice(
                &with_id(&serde_json::to_vec(&answer).unwrap(), &original).unwrap(),
            ).unwrap();
            proptest::prop_assert_eq!(&restored["id"], &id);
            proptest::prop_assert_eq!(&restored["result"], &answer["result"]);
        }

        /// Bytes that are not a JSON object are refused, never a panic.
        #[test]
        fn rewriting_garbage_is_an_error_not_a_panic(bytes in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..128)) {
            let _ = rewrite_request(&bytes, 1, Some(2));
            let _ = with_id(&bytes, &raw("1"));
            let _ = ClientMessage::parse(&bytes);
        }
    }

    #[tokio::test]
    async fn lines_over_the_limit_are_skipped_whole() {
        let input: &[u8] = b"short\n0123456789abcdef\nnext\nlast";
        let mut reader = BufReader::with_capacity(4, input);
        let mut line = Vec::new();
        let mut seen = Vec::new();
        loop {
            line.clear();
            let read = read_line(&mut reader, &mut line, 8).await.unwrap();
            if read == Line::End {
                break;
            }
            seen.push((read, String::from_utf8(line.clone()).unwrap()));
        }
        assert_eq!(
            seen,
            [
                (Line::Complete, "short".to_owned()),
                (Line::TooLong(16), String::new()),
                (Line::Complete, "next".to_owned()),
                (Line::Complete, "last".to_owned()),
            ]
        );
    }

    #[test]
    fn client_messages_are_read_for_routing() {
        let m = ClientMessage::parse(
            br#"{"jsonrpc":"2.0","method":"notifications/cancelled","params":{"requestId":3}}"#,
        )
        .unwrap();
        assert_eq!(m.cancelled_request.map(RawValue::get), Some("3"));
        assert!(!m.is_request());
        assert_eq!(id_key(&raw("1.0")), id_key(&raw("1.0")));
        assert_eq!(id_key(&raw(r#""\u0061""#)), id_key(&raw(r#""a""#)));
    }
}
