//! A stdio upstream: one process's stdin/stdout carrying JSON-RPC lines, and the
//! client sessions attached to it.
//!
//! An *exclusive* link (`isolation: per-session`) has one attachment and passes every
//! message through byte for byte. A *shared* link (`isolation: shared`) has many:
//! client request ids and progress tokens are rewritten into the link's own number
//! space on the way up and restored on the way down, and `notifications/cancelled`
//! follows the rewritten id, so sessions never see each other's responses. A shared
//! process is initialized once, by the first session's `initialize` (mcpfleet's own
//! health check, in a running fleet); later `initialize`s are answered from that
//! result and their `notifications/initialized` are not repeated.
//!
//! Messages from the server are routed to the session that owns them: responses by id,
//! progress by token, server→client requests to the client session with the newest
//! request in flight (stdio carries no other hint; never mcpfleet's health check). Other
//! notifications go to the one session of an exclusive link (log messages on the stream
//! of its newest request), and to every session of a shared one. Only the top-level
//! `id` and the token (or cancelled id) in `params` are ever re-encoded.

use std::borrow::Cow;
use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::pin::Pin;
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use serde::Deserialize;
use serde_json::value::RawValue;
use tokio::io::{AsyncBufReadExt as _, AsyncRead, AsyncWrite, AsyncWriteExt as _, BufReader};
use tokio::sync::{mpsc, watch};

use crate::error::code;
use crate::hub::{Hub, Routed};
use crate::jsonrpc;

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
    initialize: bool,
}

#[derive(Default)]
enum Init {
    #[default]
    Fresh,
    /// The first `initialize` is on its way; these wait for its result.
    InFlight { waiters: Vec<(u64, Box<RawValue>)> },
    /// The process is initialized; later sessions get this result.
    Done {
        result: Box<RawValue>,
        initialized_sent: bool,
    },
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
    pub(crate) fn attach(&self) -> Option<Attachment> {
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
    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
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
                    let key = id_key(id);
                    let owner = if self.shared {
                        newest_requester(&state)
                    } else {
                        state.attachments.keys().next().copied()
                    };
                    match owner.and_then(|a| state.attachments.get(&a).map(|h| (a, h))) {
                        Some((attachment, hub)) => {
                            deliveries.push((Arc::clone(hub), Routed::Related(message.clone())));
                            state.server_requests.insert(key, attachment);
                        }
                        None if method == "ping" => {
                            self.reply(result_body(id.get(), "{}"));
                        }
                        None => self.reply(jsonrpc::error_body(
                            serde_json::from_str(id.get()).ok().as_ref(),
                            code::INTERNAL_ERROR,
                            "no client session is waiting on this server",
                        )),
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
                        initialized_sent: false,
                    };
                }
                None => state.init = Init::Fresh,
            }
            for (attachment, original) in waiters {
                if let Some(hub) = state.attachments.get(&attachment) {
                    let answer = match &result {
                        Some(result) => result_body(original.get(), result.get()),
                        None => with_id(message, &original).unwrap_or_default(),
                    };
                    let routed = Routed::Response {
                        key: id_key(&original),
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

/// The attachment with the newest request in flight, else the only one.
/// The client session with the newest request in flight, else the only one. mcpfleet's
/// own health check is never asked: it cannot answer for a client.
fn newest_requester(state: &State) -> Option<u64> {
    let is_client = |attachment: &u64| {
        state
            .attachments
            .get(attachment)
            .is_some_and(|hub| !hub.is_raw())
    };
    state
        .pending
        .iter()
        .filter(|(_, p)| is_client(&p.attachment))
        .max_by_key(|(number, _)| **number)
        .map(|(_, p)| p.attachment)
        .or_else(|| {
            let mut clients = state.attachments.keys().filter(|a| is_client(a));
            match (clients.next(), clients.next()) {
                (Some(only), None) => Some(*only),
                _ => None,
            }
        })
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

async fn read_loop(inner: Arc<Inner>, stdout: Pin<Box<dyn AsyncRead + Send>>) {
    let mut stdout = BufReader::with_capacity(64 * 1024, stdout);
    let mut line = Vec::new();
    loop {
        line.clear();
        match stdout.read_until(b'\n', &mut line).await {
            Ok(0) | Err(_) => break,
            Ok(_) => {
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

/// A client session's place on a link. Dropping it detaches the session (and closes
/// an exclusive link).
pub(crate) struct Attachment {
    inner: Arc<Inner>,
    id: u64,
    pub(crate) hub: Arc<Hub>,
}

impl fmt::Debug for Attachment {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Attachment")
            .field("link", &self.inner.name)
            .field("id", &self.id)
            .finish_non_exhaustive()
    }
}

/// The process behind a link is gone.
#[derive(Debug, Clone, Copy, thiserror::Error)]
#[error("the stdio server's process has ended")]
pub(crate) struct LinkClosed;

impl Attachment {
    pub(crate) fn is_closed(&self) -> bool {
        *self.inner.closed.borrow()
    }

    /// Sends a client message upstream (rewritten on a shared link). A shared link
    /// answers a repeated `initialize` itself, through this session's hub.
    pub(crate) async fn send(
        &self,
        message: &ClientMessage<'_>,
        bytes: Bytes,
    ) -> Result<(), LinkClosed> {
        if self.is_closed() {
            return Err(LinkClosed);
        }
        if message.method.as_deref() == Some("notifications/cancelled")
            && let Some(id) = message.cancelled_request
        {
            // Its answer stream ends now; no response will come.
            self.hub.end(id);
        }
        let bytes = if self.inner.shared {
            match self.rewrite(message, bytes) {
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
        self.inner.outbox.send(bytes).await.map_err(|_| LinkClosed)
    }

    /// A shared link's view of a client message: `None` when nothing goes upstream.
    fn rewrite(&self, message: &ClientMessage<'_>, bytes: Bytes) -> Option<Bytes> {
        let mut state = self.inner.state();
        match (message.method.as_deref(), message.id) {
            (Some("initialize"), Some(id)) => match &mut state.init {
                Init::Done { result, .. } => {
                    let routed = Routed::Response {
                        key: id_key(id),
                        message: Bytes::from(result_body(id.get(), result.get())),
                    };
                    drop(state);
                    self.hub.deliver(routed);
                    None
                }
                Init::InFlight { waiters } => {
                    waiters.push((self.id, id.to_owned()));
                    None
                }
                Init::Fresh => {
                    state.init = Init::InFlight {
                        waiters: Vec::new(),
                    };
                    self.request_upstream(&mut state, message, &bytes, id, true)
                }
            },
            (Some(_), Some(id)) => self.request_upstream(&mut state, message, &bytes, id, false),
            (Some("notifications/initialized"), None) => match &mut state.init {
                Init::Done {
                    initialized_sent, ..
                } if !*initialized_sent => {
                    *initialized_sent = true;
                    Some(bytes)
                }
                _ => None,
            },
            (Some("notifications/cancelled"), None) => {
                let original = id_key(message.cancelled_request?);
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
                with_param(&bytes, "requestId", &number)
                    .ok()
                    .map(Bytes::from)
            }
            (Some(_), None) => Some(bytes),
            (None, Some(id)) => {
                // A client's answer to a server→client request: ids are the server's.
                state.server_requests.remove(&id_key(id));
                Some(bytes)
            }
            (None, None) => None,
        }
    }

    fn request_upstream(
        &self,
        state: &mut State,
        message: &ClientMessage<'_>,
        bytes: &[u8],
        id: &RawValue,
        initialize: bool,
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
                initialize,
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
        // The process's first `initialize` still completes for those waiting on it:
        // its answer goes to no one (attachment 0 is never used).
        for pending in state.pending.values_mut() {
            if pending.attachment == id && pending.initialize {
                pending.attachment = NOBODY;
            }
        }
        state.pending.retain(|_, p| p.attachment != id);
        state.tokens.retain(|_, (a, _)| *a != id);
        state.server_requests.retain(|_, a| *a != id);
        if let Init::InFlight { waiters } = &mut state.init {
            waiters.retain(|(a, _)| *a != id);
        }
        drop(state);
        if !self.inner.shared {
            self.inner.close();
        }
    }
}

/// What the gateway reads of a client message bound for a stdio server.
#[derive(Debug, Default)]
pub(crate) struct ClientMessage<'a> {
    pub(crate) method: Option<Cow<'a, str>>,
    pub(crate) id: Option<&'a RawValue>,
    /// `params._meta.progressToken`.
    pub(crate) progress_token: Option<&'a RawValue>,
    /// `params.requestId` of `notifications/cancelled`.
    pub(crate) cancelled_request: Option<&'a RawValue>,
}

impl<'a> ClientMessage<'a> {
    /// Reads a single JSON-RPC message (batches are not stdio messages).
    pub(crate) fn parse(bytes: &'a [u8]) -> Result<Self, serde_json::Error> {
        let fields: Fields<'a> = serde_json::from_slice(bytes)?;
        let params = fields
            .params
            .map(|p| serde_json::from_str::<ClientParams<'a>>(p.get()))
            .transpose()?;
        let (progress_token, cancelled_request) = match params {
            Some(p) => (p.meta.and_then(|m| m.progress_token), p.request_id),
            None => (None, None),
        };
        Ok(Self {
            method: fields.method,
            id: fields.id,
            progress_token,
            cancelled_request,
        })
    }

    /// A request (not a notification or a response).
    pub(crate) fn is_request(&self) -> bool {
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

#[derive(Deserialize)]
struct ClientParams<'a> {
    #[serde(rename = "_meta", borrow)]
    meta: Option<ClientMeta<'a>>,
    #[serde(rename = "requestId", borrow)]
    request_id: Option<&'a RawValue>,
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
pub(crate) fn id_key(id: &RawValue) -> String {
    serde_json::from_str::<serde_json::Value>(id.get())
        .map(|v| v.to_string())
        .unwrap_or_else(|_| id.get().to_owned())
}

fn result_body(id: &str, result: &str) -> Vec<u8> {
    format!(r#"{{"jsonrpc":"2.0","id":{id},"result":{result}}}"#).into_bytes()
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
