//! The data plane's HTTP/1.1 server side: one connection's requests, read, answered by
//! the data plane and written back, in the connection's own task.
//!
//! A request's head is parsed with httparse; a body already in the read buffer (most
//! are: a JSON-RPC message arrives with its head) is handed over whole, any other is
//! read from the connection as the data plane polls it. The answer's head and its first
//! bytes leave in one write. There is no connection task apart from the handler and no
//! channel between them: hyper's server side cost a relayed call ~16,000 instructions
//! of ~59,000 and one more wake-up (its body channel), as its client side did before
//! `upstream.rs` (docs/benchmarks.md).
//!
//! Owns: request framing (`Content-Length`, chunked, `Expect: 100-continue`), keep-alive
//! (HTTP/1.1 by default, HTTP/1.0 when asked, never after a request whose body was not
//! read to its end), pipelined requests, answer framing (a known length, else chunks, else
//! the connection's end for HTTP/1.0), 400 and 431 for heads that cannot be served, and
//! the connection's timeouts: the first head within the header-read timeout of the
//! accept, a kept-alive connection's next head within the idle timeout (and the
//! header-read timeout once its first bytes came), a body within the body-read timeout
//! of its head, an answer's bytes taken by the client within the idle timeout. A client
//! that closes its connection while its answer is on the way ends the answer (the data
//! plane's future and body are dropped); while its request body is read, the read fails.
//!
//! Does not own: accepting, TLS, shutdown's signal (`listener.rs`); what a request
//! means (`data_plane.rs`).

use std::collections::VecDeque;
use std::fmt::Write as _;
use std::future::{Future, poll_fn};
use std::io::{self, IoSlice};
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, ready};
use std::time::Duration;

use axum::body::Body;
use bytes::{Buf as _, BufMut as _, Bytes, BytesMut};
use hyper::body::{Body as _, Frame, SizeHint};
use hyper::header::{self, HeaderMap};
use hyper::{Method, Request, Response, StatusCode, Uri, Version};
use parking_lot::Mutex;
use tokio::io::{AsyncRead, AsyncReadExt as _, AsyncWrite};
use tokio::time::{Instant, Sleep};

use crate::data_plane::DataPlane;
use crate::framing::{self, Decoded, Framing, has_connection_option, header_map};

/// Most bytes of a request's head; a larger one is answered 431.
const MAX_HEAD_BYTES: usize = 64 * 1024;
/// Most headers in a request's head; more are answered 431 (as hyper did).
const MAX_HEADERS: usize = 100;
/// Free room the read buffer keeps before each read.
const READ_RESERVE: usize = 8 * 1024;
/// Answer bytes queued before they are written, whether or not more are ready.
const WRITE_BATCH: usize = 64 * 1024;
/// How long closing a connection may take: the TLS close, the client's last bytes.
const CLOSE_TIMEOUT: Duration = Duration::from_secs(2);
/// Most bytes read and dropped from a client while its connection closes.
const MAX_DRAIN_BYTES: usize = 1024 * 1024;

/// How long a client may take, per connection.
#[derive(Debug, Clone, Copy)]
pub(crate) struct ConnectionTimeouts {
    pub(crate) header_read: Duration,
    pub(crate) body_read: Duration,
    pub(crate) idle: Duration,
}

/// Serves the requests that come on `io` from `peer` until the client closes it, a
/// timeout passes, a request cannot be served, or `stopping` completes while the
/// connection waits for a request.
pub(crate) async fn serve<I>(
    io: I,
    data_plane: &DataPlane,
    peer: SocketAddr,
    timeouts: ConnectionTimeouts,
    stopping: impl Future<Output = ()>,
) where
    I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let mut stopping = std::pin::pin!(stopping);
    let mut connection = Connection {
        wire: Wire {
            io,
            buffer: BytesMut::with_capacity(READ_RESERVE),
        },
        out: BytesMut::new(),
        queue: VecDeque::new(),
        timeouts,
        clock: Box::pin(tokio::time::sleep(timeouts.header_read)),
        unread_body: false,
    };
    let mut wait = HeadWait::First(connection.clock.deadline());
    loop {
        let head = match connection.next_head(wait, stopping.as_mut()).await {
            Ok(Some(head)) => head,
            Ok(None) => {
                connection.close().await;
                return;
            }
            Err(refusal) => {
                connection.refuse(refusal).await;
                return;
            }
        };
        match connection.exchange(head, data_plane, peer).await {
            Ok(Some((next, true))) => {
                connection = next;
                wait = HeadWait::KeptAlive(Instant::now() + timeouts.idle);
            }
            Ok(Some((last, false))) => {
                last.close().await;
                return;
            }
            Ok(None) => return,
            Err(error) => {
                tracing::debug!(%peer, %error, "connection ended");
                return;
            }
        }
    }
}

/// The connection's stream and what was read from it but not yet used.
struct Wire<I> {
    io: I,
    buffer: BytesMut,
}

impl<I: AsyncRead + Unpin> Wire<I> {
    /// Reads what the client sent next into the buffer: the count, 0 at its end.
    fn poll_fill(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<usize>> {
        self.buffer.reserve(READ_RESERVE);
        std::pin::pin!(self.io.read_buf(&mut self.buffer)).poll(cx)
    }

    /// Ready when the client has closed the connection (or it failed). Bytes that come
    /// meanwhile (a pipelined request) are kept, up to a head's worth.
    fn poll_closed(&mut self, cx: &mut Context<'_>) -> Poll<()> {
        while self.buffer.len() <= MAX_HEAD_BYTES {
            match ready!(self.poll_fill(cx)) {
                Ok(0) | Err(_) => return Poll::Ready(()),
                Ok(_) => {}
            }
        }
        Poll::Pending
    }
}

/// What a wait for a request head may last.
#[derive(Debug, Clone, Copy)]
enum HeadWait {
    /// A fresh connection's first head: all of it by then.
    First(Instant),
    /// A kept-alive connection: the head's first bytes by then (then the header-read
    /// timeout from those bytes).
    KeptAlive(Instant),
}

/// Why a request head is refused: the answer's status.
#[derive(Debug, Clone, Copy)]
enum Refusal {
    /// 400: not HTTP/1.1, or framed ambiguously.
    BadRequest,
    /// 431: too many headers, or a head over [`MAX_HEAD_BYTES`].
    TooLarge,
}

/// A request head, parsed.
struct Head {
    request: Request<()>,
    framing: Framing,
    /// The client keeps the connection for another request after this one's answer.
    keep_alive: bool,
    /// The client waits for `100 Continue` before it sends the body.
    expects_continue: bool,
}

struct Connection<I> {
    wire: Wire<I>,
    /// Where answer heads and chunk lines are written before they are queued.
    out: BytesMut,
    /// Bytes of the answer on their way out, in order.
    queue: VecDeque<Bytes>,
    timeouts: ConnectionTimeouts,
    /// The head timer: armed for the earliest a wait could end and moved on when it
    /// fires early, so that a busy connection does not move it for every request. Also
    /// the bound on an answer's write to a client that stopped reading.
    clock: Pin<Box<Sleep>>,
    /// The last request's body was not read to its end: the client may still be
    /// sending it when the connection closes.
    unread_body: bool,
}

impl<I> Connection<I>
where
    I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    /// The next request's head; `None` when the connection should end without an
    /// answer (closed, timed out, or stopping while idle).
    async fn next_head(
        &mut self,
        wait: HeadWait,
        mut stopping: Pin<&mut impl Future<Output = ()>>,
    ) -> Result<Option<Head>, Refusal> {
        // When the head's first bytes were seen, if it was not all there at once.
        let mut started: Option<Instant> = None;
        // How much of the buffer is known to hold no head's end: a head that comes a
        // byte at a time is parsed once it can be whole, not once per byte.
        let mut searched: usize = 0;
        poll_fn(|cx| {
            loop {
                if !self.wire.buffer.is_empty() {
                    let unsearched = &self.wire.buffer[searched.saturating_sub(3)..];
                    if head_may_end(unsearched)
                        && let Some((length, head)) = parse_head(&self.wire.buffer)?
                    {
                        self.wire.buffer.advance(length);
                        return Poll::Ready(Ok(Some(head)));
                    }
                    searched = self.wire.buffer.len();
                    if self.wire.buffer.len() > MAX_HEAD_BYTES {
                        return Poll::Ready(Err(Refusal::TooLarge));
                    }
                    started.get_or_insert_with(Instant::now);
                }
                match self.wire.poll_fill(cx) {
                    Poll::Ready(Ok(0) | Err(_)) => return Poll::Ready(Ok(None)),
                    Poll::Ready(Ok(_)) => continue,
                    Poll::Pending => break,
                }
            }
            if self.wire.buffer.is_empty() && stopping.as_mut().poll(cx).is_ready() {
                return Poll::Ready(Ok(None));
            }
            let deadline = match (wait, started) {
                (HeadWait::First(deadline), _) | (HeadWait::KeptAlive(deadline), None) => deadline,
                (HeadWait::KeptAlive(_), Some(started)) => started + self.timeouts.header_read,
            };
            if poll_until(&mut self.clock, deadline, cx).is_ready() {
                return Poll::Ready(Ok(None));
            }
            Poll::Pending
        })
        .await
    }

    /// Answers the request `head` starts: the connection back, and whether it may serve
    /// another request; `None` when it is gone.
    async fn exchange(
        mut self,
        head: Head,
        data_plane: &DataPlane,
        peer: SocketAddr,
    ) -> io::Result<Option<(Self, bool)>> {
        let Head {
            request,
            framing,
            keep_alive,
            expects_continue,
        } = head;
        let to_head = request.method() == Method::HEAD;
        let version = request.version();
        // A body all in the buffer is handed over whole; any other reads the connection
        // itself, and gives it back when it is dropped.
        let body = match framing {
            Framing::Length(0) => Body::empty(),
            Framing::Length(length) if self.wire.buffer.len() as u64 >= length => {
                Body::from(self.wire.buffer.split_to(length as usize).freeze())
            }
            _ => {
                let Self {
                    wire,
                    out,
                    queue,
                    timeouts,
                    clock,
                    ..
                } = self;
                let home = Arc::new(Mutex::new(None));
                let body = Body::new(RequestBody {
                    wire: Some(wire),
                    framing,
                    deadline: Instant::now() + timeouts.body_read,
                    timer: None,
                    interim: if expects_continue {
                        Interim::Writing(0)
                    } else {
                        Interim::None
                    },
                    home: Arc::clone(&home),
                });
                let response = data_plane.call(request.map(|()| body), peer).await;
                // The body went with the data plane's future, unless something kept it:
                // then the connection cannot go on.
                let Some(Returned {
                    wire,
                    framing: left,
                    interim,
                }) = home.lock().take()
                else {
                    return Ok(None);
                };
                let mut connection = Self {
                    wire,
                    out,
                    queue,
                    timeouts,
                    clock,
                    unread_body: !left.ended(),
                };
                // An interim answer cut short is finished before the final one.
                if let Interim::Writing(written @ 1..) = interim {
                    connection
                        .queue
                        .push_back(Bytes::from_static(CONTINUE).slice(written..));
                }
                let keep_alive = connection
                    .respond(response, to_head, version, keep_alive && left.ended())
                    .await?;
                return Ok(Some((connection, keep_alive)));
            }
        };
        let mut answer = data_plane.call(request.map(|()| body), peer);
        let wire = &mut self.wire;
        let response = poll_fn(|cx| {
            if let Poll::Ready(response) = answer.as_mut().poll(cx) {
                return Poll::Ready(Some(response));
            }
            wire.poll_closed(cx).map(|()| None)
        })
        .await;
        drop(answer);
        let Some(response) = response else {
            return Err(io::ErrorKind::ConnectionAborted.into());
        };
        let keep_alive = self.respond(response, to_head, version, keep_alive).await?;
        Ok(Some((self, keep_alive)))
    }

    /// Writes `response` to a request in `version` (a HEAD request when `to_head`):
    /// whether the connection may serve another request (`keep_alive`, unless the
    /// answer's framing ends it).
    async fn respond(
        &mut self,
        response: Response<Body>,
        to_head: bool,
        version: Version,
        keep_alive: bool,
    ) -> io::Result<bool> {
        let (mut parts, body) = response.into_parts();
        let no_content = parts.status.is_informational() || parts.status == StatusCode::NO_CONTENT;
        if no_content {
            parts.headers.remove(header::CONTENT_LENGTH);
        }
        let bodiless = to_head || no_content || parts.status == StatusCode::NOT_MODIFIED;
        let framing = (!bodiless).then(|| answer_framing(&parts.headers, &body, version));
        let keep_alive = keep_alive
            && framing != Some(Framing::UntilClose)
            && !has_connection_option(&parts.headers, b"close");
        put_head(&mut self.out, &parts, framing, keep_alive, version);
        self.queue.push_back(self.out.split().freeze());
        let mut sending = Sending {
            body,
            framing: framing.unwrap_or(Framing::Length(0)),
            ended: bodiless,
            stalled_since: None,
        };
        poll_fn(|cx| sending.poll_send(self, cx)).await?;
        Ok(keep_alive)
    }

    /// Answers a head that cannot be served, and closes.
    async fn refuse(mut self, refusal: Refusal) {
        let status = match refusal {
            Refusal::BadRequest => "400 Bad Request",
            Refusal::TooLarge => "431 Request Header Fields Too Large",
        };
        let _ = write!(
            self.out,
            "HTTP/1.1 {status}\r\ncontent-length: 0\r\nconnection: close\r\n\r\n"
        );
        self.queue.push_back(self.out.split().freeze());
        // What is left of the head may still be coming: read on while closing.
        self.unread_body = true;
        let Self { wire, queue, .. } = &mut self;
        let writing = poll_fn(|cx| poll_write_queue(&mut wire.io, queue, cx));
        if let Ok(Ok(())) = tokio::time::timeout(CLOSE_TIMEOUT, writing).await {
            self.close().await;
        }
    }

    /// Ends the connection: TLS says so to the client, TCP sends its FIN. When the
    /// client may still be sending (a body not read, a head refused), what it sends is
    /// read and dropped until it closes too: closing a socket with unread bytes resets
    /// the connection, and the reset can destroy the answer before the client reads it.
    async fn close(mut self) {
        let closing = async {
            let _ = tokio::io::AsyncWriteExt::shutdown(&mut self.wire.io).await;
            let mut drained = 0;
            while self.unread_body && drained < MAX_DRAIN_BYTES {
                self.wire.buffer.clear();
                match poll_fn(|cx| self.wire.poll_fill(cx)).await {
                    Ok(0) | Err(_) => break,
                    Ok(read) => drained += read,
                }
            }
        };
        let _ = tokio::time::timeout(CLOSE_TIMEOUT, closing).await;
    }
}

fn put_header(out: &mut BytesMut, name: &[u8], value: &[u8]) {
    out.put_slice(name);
    out.put_slice(b": ");
    out.put_slice(value);
    out.put_slice(b"\r\n");
}

/// How an answer's body goes out: with a length (the body's own exact size, else the
/// handler's `Content-Length`), else in chunks, else (HTTP/1.0) until the close.
fn answer_framing(headers: &HeaderMap, body: &Body, version: Version) -> Framing {
    if let Some(exact) = body.size_hint().exact() {
        return Framing::Length(exact);
    }
    if let Ok(Some(length)) = framing::content_length(headers) {
        return Framing::Length(length);
    }
    if version == Version::HTTP_11 {
        Framing::CHUNKED
    } else {
        Framing::UntilClose
    }
}

/// Writes the answer's status line and headers into `out`, with the framing and
/// connection headers the server decides (the handler's own are not sent) and a `Date`
/// when the handler gave none. A bodiless answer (`framing` `None`: to HEAD, 204, 304)
/// keeps the handler's `Content-Length`, which describes what a GET would get.
fn put_head(
    out: &mut BytesMut,
    parts: &hyper::http::response::Parts,
    framing: Option<Framing>,
    keep_alive: bool,
    version: Version,
) {
    let status = parts.status;
    for part in [
        "HTTP/1.1 ",
        status.as_str(),
        " ",
        status.canonical_reason().unwrap_or("Unknown"),
        "\r\n",
    ] {
        out.put_slice(part.as_bytes());
    }
    for (name, value) in &parts.headers {
        if name != header::TRANSFER_ENCODING
            && name != header::CONNECTION
            && (name != header::CONTENT_LENGTH || framing.is_none())
        {
            put_header(out, name.as_str().as_bytes(), value.as_bytes());
        }
    }
    if !parts.headers.contains_key(header::DATE) {
        put_header(out, b"date", &http_date());
    }
    match framing {
        Some(Framing::Length(length)) => {
            let _ = write!(out, "content-length: {length}\r\n");
        }
        Some(Framing::Chunked(_)) => put_header(out, b"transfer-encoding", b"chunked"),
        Some(Framing::UntilClose) | None => {}
    }
    if !keep_alive {
        put_header(out, b"connection", b"close");
    } else if version == Version::HTTP_10 {
        put_header(out, b"connection", b"keep-alive");
    }
    out.put_slice(b"\r\n");
}

/// An answer's body on its way out.
struct Sending {
    body: Body,
    /// How it is framed; a length counts down as the body goes.
    framing: Framing,
    ended: bool,
    /// Since when the client has taken none of what is queued for it.
    stalled_since: Option<Instant>,
}

/// Why an answer could not be sent whole: the connection ends.
#[derive(Debug, thiserror::Error)]
enum SendError {
    /// The body failed, or its length is not the one its head announced.
    #[error("the answer's body: {0}")]
    Body(String),
    /// The client took nothing of the answer for the idle timeout.
    #[error("the client stopped reading the answer")]
    Stalled,
}

impl Sending {
    /// Takes the body's frames as they come, frames them for the wire and writes them
    /// after what `queue` holds (the head, the first time): those ready together leave
    /// in one write. Ready when the body has gone out whole.
    fn poll_send<I: AsyncRead + AsyncWrite + Unpin>(
        &mut self,
        connection: &mut Connection<I>,
        cx: &mut Context<'_>,
    ) -> Poll<io::Result<()>> {
        let Connection {
            wire,
            out,
            queue,
            clock,
            timeouts,
            ..
        } = connection;
        loop {
            let mut waiting = false;
            let mut queued = queued_bytes(queue);
            while !self.ended && !waiting && queued < WRITE_BATCH {
                match Pin::new(&mut self.body).poll_frame(cx) {
                    Poll::Ready(Some(Ok(frame))) => {
                        // Trailers mean nothing to MCP: not sent.
                        let Ok(data) = frame.into_data() else {
                            continue;
                        };
                        if data.is_empty() {
                            continue;
                        }
                        queued += data.len();
                        self.frame(data, out, queue)?;
                    }
                    Poll::Ready(Some(Err(error))) => {
                        let error = SendError::Body(error.to_string());
                        return Poll::Ready(Err(io::Error::other(error)));
                    }
                    Poll::Ready(None) => {
                        self.end(out)?;
                        self.ended = true;
                    }
                    Poll::Pending => waiting = true,
                }
            }
            if !out.is_empty() {
                queue.push_back(out.split().freeze());
            }
            let before = unsent(queue);
            let written = poll_write_queue(&mut wire.io, queue, cx);
            if written.is_pending() {
                // A client that takes nothing for the idle timeout is gone, or an
                // attacker holding the connection: the answer ends.
                if unsent(queue) != before {
                    self.stalled_since = None;
                }
                let since = *self.stalled_since.get_or_insert_with(Instant::now);
                if poll_until(clock, since + timeouts.idle, cx).is_ready() {
                    return Poll::Ready(Err(io::Error::other(SendError::Stalled)));
                }
                return Poll::Pending;
            }
            self.stalled_since = None;
            ready!(written)?;
            ready!(Pin::new(&mut wire.io).poll_flush(cx))?;
            if self.ended {
                return Poll::Ready(Ok(()));
            }
            if waiting {
                // While the answer waits for more, a client that leaves ends it.
                if wire.poll_closed(cx).is_ready() {
                    return Poll::Ready(Err(io::ErrorKind::ConnectionAborted.into()));
                }
                return Poll::Pending;
            }
        }
    }

    /// Queues `data` as the framing says: in a chunk of its own, or counted off the
    /// announced length (an answer longer than its head said is an error, not sent on).
    fn frame(
        &mut self,
        data: Bytes,
        out: &mut BytesMut,
        queue: &mut VecDeque<Bytes>,
    ) -> io::Result<()> {
        match &mut self.framing {
            Framing::Chunked(_) => {
                let _ = write!(out, "{:x}\r\n", data.len());
                queue.push_back(out.split().freeze());
                queue.push_back(data);
                out.put_slice(b"\r\n");
            }
            Framing::Length(left) => {
                let Some(after) = left.checked_sub(data.len() as u64) else {
                    let error = SendError::Body("longer than its Content-Length".to_owned());
                    return Err(io::Error::other(error));
                };
                *left = after;
                queue.push_back(data);
            }
            Framing::UntilClose => queue.push_back(data),
        }
        Ok(())
    }

    /// The body ended: the last chunk, or the check that the announced length went out.
    fn end(&mut self, out: &mut BytesMut) -> io::Result<()> {
        match self.framing {
            Framing::Chunked(_) => out.put_slice(b"0\r\n\r\n"),
            Framing::Length(left) if left > 0 => {
                let error = SendError::Body("shorter than its Content-Length".to_owned());
                return Err(io::Error::other(error));
            }
            Framing::Length(_) | Framing::UntilClose => {}
        }
        Ok(())
    }
}

fn queued_bytes(queue: &VecDeque<Bytes>) -> usize {
    queue.iter().map(Bytes::len).sum()
}

/// Where the queue's unwritten bytes start: a write that took any moved it.
fn unsent(queue: &VecDeque<Bytes>) -> (usize, usize) {
    (queue.len(), queue.front().map_or(0, Bytes::len))
}

/// Writes `queue` to `io`, as few writes as the slices allow.
fn poll_write_queue<I: AsyncWrite + Unpin>(
    io: &mut I,
    queue: &mut VecDeque<Bytes>,
    cx: &mut Context<'_>,
) -> Poll<io::Result<()>> {
    while !queue.is_empty() {
        let mut slices = [IoSlice::new(&[]); 16];
        let count = queue.len().min(slices.len());
        for (slice, bytes) in slices.iter_mut().zip(queue.iter()) {
            *slice = IoSlice::new(bytes);
        }
        let mut written = ready!(Pin::new(&mut *io).poll_write_vectored(cx, &slices[..count]))?;
        if written == 0 {
            return Poll::Ready(Err(io::ErrorKind::WriteZero.into()));
        }
        while written > 0 {
            let Some(front) = queue.front_mut() else {
                break;
            };
            if written >= front.len() {
                written -= front.len();
                queue.pop_front();
            } else {
                front.advance(written);
                written = 0;
            }
        }
    }
    Poll::Ready(Ok(()))
}

/// Ready once `deadline` has passed, on `clock`. The timer is moved only when it would
/// fire too late, or when it fired before `deadline`: a connection that serves a request
/// every few milliseconds moves it once per timeout, not once per request.
fn poll_until(clock: &mut Pin<Box<Sleep>>, deadline: Instant, cx: &mut Context<'_>) -> Poll<()> {
    if clock.deadline() > deadline {
        clock.as_mut().reset(deadline);
    }
    loop {
        ready!(clock.as_mut().poll(cx));
        // It fired, so its deadline has passed.
        if clock.deadline() >= deadline {
            return Poll::Ready(());
        }
        clock.as_mut().reset(deadline);
    }
}

/// Whether `bytes` hold the blank line that ends a head (CRLF or bare LF line ends).
fn head_may_end(bytes: &[u8]) -> bool {
    memchr::memchr_iter(b'\n', bytes).any(|lf| {
        let after = &bytes[lf + 1..];
        after.starts_with(b"\n") || after.starts_with(b"\r\n")
    })
}

/// A request head parsed from the start of `buffer`, and its length; `None` while it
/// is incomplete.
fn parse_head(buffer: &[u8]) -> Result<Option<(usize, Head)>, Refusal> {
    // Uninitialised: zeroing every slot would cost more than parsing a short head.
    let mut slots = [const { std::mem::MaybeUninit::uninit() }; MAX_HEADERS];
    let mut parsed = httparse::Request::new(&mut []);
    let length = match httparse::ParserConfig::default().parse_request_with_uninit_headers(
        &mut parsed,
        buffer,
        &mut slots,
    ) {
        Ok(httparse::Status::Complete(length)) if length <= MAX_HEAD_BYTES => length,
        Ok(httparse::Status::Complete(_)) | Err(httparse::Error::TooManyHeaders) => {
            return Err(Refusal::TooLarge);
        }
        Ok(httparse::Status::Partial) => return Ok(None),
        Err(_) => return Err(Refusal::BadRequest),
    };
    let (Some(method), Some(target), Some(minor)) = (parsed.method, parsed.path, parsed.version)
    else {
        return Err(Refusal::BadRequest);
    };
    let method = Method::from_bytes(method.as_bytes()).map_err(|_| Refusal::BadRequest)?;
    let copy = Bytes::copy_from_slice(&buffer[..length]);
    let uri = Uri::from_maybe_shared(framing::shared(&copy, buffer, target.as_bytes()))
        .map_err(|_| Refusal::BadRequest)?;
    let headers = header_map(parsed.headers, &copy, buffer).map_err(|_| Refusal::BadRequest)?;
    let version = if minor == 0 {
        Version::HTTP_10
    } else {
        Version::HTTP_11
    };
    // HTTP/1.0 has no transfer codings: a message that says otherwise is framed one way
    // here and perhaps another by a proxy in front (RFC 9112, section 6.1).
    if version == Version::HTTP_10 && headers.contains_key(header::TRANSFER_ENCODING) {
        return Err(Refusal::BadRequest);
    }
    let framing = request_framing(&headers)?;
    let keep_alive = if version == Version::HTTP_11 {
        !has_connection_option(&headers, b"close")
    } else {
        has_connection_option(&headers, b"keep-alive")
    };
    let expects_continue = version == Version::HTTP_11
        && headers
            .get(header::EXPECT)
            .is_some_and(|expect| expect.as_bytes().eq_ignore_ascii_case(b"100-continue"));
    let mut request = Request::new(());
    *request.method_mut() = method;
    *request.uri_mut() = uri;
    *request.version_mut() = version;
    *request.headers_mut() = headers;
    Ok(Some((
        length,
        Head {
            request,
            framing,
            keep_alive,
            expects_continue,
        },
    )))
}

/// How a request's body is framed (RFC 9112, section 6.3): chunked when the last
/// transfer coding says so, else by `Content-Length`, else empty. A request whose
/// framing is ambiguous (another coding, or both headers) is refused, as a request
/// smuggled past a proxy would be.
fn request_framing(headers: &HeaderMap) -> Result<Framing, Refusal> {
    match framing::chunked(headers) {
        Some(true) if !headers.contains_key(header::CONTENT_LENGTH) => Ok(Framing::CHUNKED),
        Some(_) => Err(Refusal::BadRequest),
        None => match framing::content_length(headers) {
            Ok(length) => Ok(Framing::Length(length.unwrap_or(0))),
            Err(_) => Err(Refusal::BadRequest),
        },
    }
}

/// The interim answer to `Expect: 100-continue`.
const CONTINUE: &[u8] = b"HTTP/1.1 100 Continue\r\n\r\n";

/// A request body that was not all there with its head: read from the connection as it
/// is polled, within the body-read timeout of its head.
struct RequestBody<I> {
    /// `None` once it went home.
    wire: Option<Wire<I>>,
    framing: Framing,
    deadline: Instant,
    /// Made when a read or the interim answer's write has to wait.
    timer: Option<Pin<Box<Sleep>>>,
    interim: Interim,
    home: Home<I>,
}

/// Where the `100 Continue` a client waits for is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Interim {
    /// Not asked for, or sent.
    None,
    /// Being written: this many bytes of it are out.
    Writing(usize),
    /// Written, being flushed (TLS holds it until then).
    Flushing,
}

/// A lent connection as it comes back: its body's framing as far as it was read, and
/// where its interim answer was.
struct Returned<I> {
    wire: Wire<I>,
    framing: Framing,
    interim: Interim,
}

/// Where a lent connection comes back to.
type Home<I> = Arc<Mutex<Option<Returned<I>>>>;

/// Why a request body could not be read.
#[derive(Debug, thiserror::Error)]
enum RequestBodyError {
    /// The connection failed.
    #[error("reading the request body: {0}")]
    Read(#[from] io::Error),
    /// The chunked framing is broken.
    #[error("the request body is malformed: {0}")]
    Malformed(&'static str),
    /// The client closed the connection first.
    #[error("the client closed the connection before the request body ended")]
    Closed,
    /// The body-read timeout passed first.
    #[error("the request body did not arrive within the body-read timeout")]
    TimedOut,
}

impl<I: AsyncRead + AsyncWrite + Unpin> RequestBody<I> {
    fn poll_data(&mut self, cx: &mut Context<'_>) -> Poll<Option<Result<Bytes, RequestBodyError>>> {
        let Some(wire) = &mut self.wire else {
            return Poll::Ready(None);
        };
        loop {
            match self.interim {
                Interim::None => break,
                // The client sent its body without waiting.
                Interim::Writing(0) if !wire.buffer.is_empty() => self.interim = Interim::None,
                Interim::Writing(written) if written == CONTINUE.len() => {
                    self.interim = Interim::Flushing;
                }
                Interim::Writing(written) => {
                    match Pin::new(&mut wire.io).poll_write(cx, &CONTINUE[written..]) {
                        Poll::Ready(Ok(0)) => {
                            return Poll::Ready(Some(Err(RequestBodyError::Closed)));
                        }
                        Poll::Ready(Ok(more)) => self.interim = Interim::Writing(written + more),
                        Poll::Ready(Err(error)) => return Poll::Ready(Some(Err(error.into()))),
                        Poll::Pending => return self.poll_deadline(cx),
                    }
                }
                Interim::Flushing => match Pin::new(&mut wire.io).poll_flush(cx) {
                    Poll::Ready(Ok(())) => self.interim = Interim::None,
                    Poll::Ready(Err(error)) => return Poll::Ready(Some(Err(error.into()))),
                    Poll::Pending => return self.poll_deadline(cx),
                },
            }
        }
        loop {
            match framing::decode(&mut self.framing, &mut wire.buffer) {
                Ok(Decoded::Data(data)) => return Poll::Ready(Some(Ok(data))),
                Ok(Decoded::End) => return Poll::Ready(None),
                Ok(Decoded::More) => {}
                Err(malformed) => {
                    return Poll::Ready(Some(Err(RequestBodyError::Malformed(malformed))));
                }
            }
            match wire.poll_fill(cx) {
                Poll::Ready(Ok(0)) => return Poll::Ready(Some(Err(RequestBodyError::Closed))),
                Poll::Ready(Ok(_)) => {}
                Poll::Ready(Err(error)) => return Poll::Ready(Some(Err(error.into()))),
                Poll::Pending => return self.poll_deadline(cx),
            }
        }
    }

    /// Pending until the body-read timeout passes, then its error.
    fn poll_deadline(
        &mut self,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Bytes, RequestBodyError>>> {
        let deadline = self.deadline;
        let timer = self
            .timer
            .get_or_insert_with(|| Box::pin(tokio::time::sleep_until(deadline)));
        ready!(timer.as_mut().poll(cx));
        Poll::Ready(Some(Err(RequestBodyError::TimedOut)))
    }
}

impl<I: AsyncRead + AsyncWrite + Unpin> hyper::body::Body for RequestBody<I> {
    type Data = Bytes;
    type Error = RequestBodyError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, RequestBodyError>>> {
        self.get_mut()
            .poll_data(cx)
            .map(|data| data.map(|data| data.map(Frame::data)))
    }

    fn is_end_stream(&self) -> bool {
        self.framing.ended()
    }

    fn size_hint(&self) -> SizeHint {
        match self.framing {
            Framing::Length(left) => SizeHint::with_exact(left),
            _ => SizeHint::default(),
        }
    }
}

impl<I> Drop for RequestBody<I> {
    fn drop(&mut self) {
        if let Some(wire) = self.wire.take() {
            *self.home.lock() = Some(Returned {
                wire,
                framing: self.framing,
                interim: self.interim,
            });
        }
    }
}

/// Now as an HTTP date, formatted once a second per thread.
fn http_date() -> [u8; 29] {
    thread_local! {
        static CACHED: std::cell::Cell<(u64, [u8; 29])> = const { std::cell::Cell::new((0, [0; 29])) };
    }
    let now = std::time::SystemTime::now();
    let second = now
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |since| since.as_secs());
    CACHED.with(|cached| {
        let (at, date) = cached.get();
        if at == second && second != 0 {
            return date;
        }
        let mut date = [0; 29];
        let formatted = httpdate::fmt_http_date(now);
        let length = formatted.len().min(date.len());
        date[..length].copy_from_slice(&formatted.as_bytes()[..length]);
        cached.set((second, date));
        date
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn head(text: &str) -> Result<Option<(usize, Head)>, Refusal> {
        parse_head(text.as_bytes())
    }

    #[test]
    fn a_head_is_parsed_with_its_framing_and_keep_alive() {
        let text = "POST /mcp/a%2Db HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n\r\nhello";
        let Ok(Some((length, parsed))) = head(text) else {
            panic!("not parsed");
        };
        assert_eq!(length, text.len() - 5);
        assert_eq!(parsed.request.method(), Method::POST);
        assert_eq!(parsed.request.uri().path(), "/mcp/a%2Db");
        assert_eq!(parsed.request.headers()["host"], "x");
        assert_eq!(parsed.framing, Framing::Length(5));
        assert!(parsed.keep_alive);
        assert!(!parsed.expects_continue);
        let Ok(Some((_, old))) = head("GET / HTTP/1.0\r\n\r\n") else {
            panic!("not parsed");
        };
        assert!(!old.keep_alive, "HTTP/1.0 closes unless asked not to");
        assert_eq!(old.framing, Framing::Length(0));
        assert!(matches!(head("GET / HTTP/1.1\r\nHost: x\r\n"), Ok(None)));
    }

    #[test]
    fn ambiguous_or_broken_request_framing_is_refused() {
        for text in [
            "POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\nContent-Length: 3\r\n\r\n",
            "POST / HTTP/1.1\r\nTransfer-Encoding: gzip\r\n\r\n",
            "POST / HTTP/1.1\r\nContent-Length: 3\r\nContent-Length: 4\r\n\r\n",
            "POST / HTTP/1.1\r\nContent-Length: -1\r\n\r\n",
            "GARBAGE\r\n\r\n",
            "POST / HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n",
        ] {
            assert!(
                matches!(head(text), Err(Refusal::BadRequest)),
                "{text:?} is refused"
            );
        }
        let Ok(Some((_, chunked))) = head(
            "POST / HTTP/1.1\r\nTransfer-Encoding: gzip, chunked\r\nExpect: 100-continue\r\n\r\n",
        ) else {
            panic!("not parsed");
        };
        assert_eq!(chunked.framing, Framing::CHUNKED);
        assert!(chunked.expects_continue);
    }

    #[test]
    fn a_head_too_large_or_with_too_many_headers_is_431() {
        let many: String = (0..=MAX_HEADERS).map(|n| format!("x-{n}: y\r\n")).collect();
        let text = format!("GET / HTTP/1.1\r\n{many}\r\n");
        assert!(matches!(head(&text), Err(Refusal::TooLarge)));
        let long = format!(
            "GET / HTTP/1.1\r\nx: {}\r\n\r\n",
            "y".repeat(MAX_HEAD_BYTES)
        );
        assert!(matches!(head(&long), Err(Refusal::TooLarge)));
    }

    #[test]
    fn an_answer_is_sent_only_as_long_as_its_head_announced() {
        let sending = |framing| Sending {
            body: Body::empty(),
            framing,
            ended: false,
            stalled_since: None,
        };
        let (mut out, mut queue) = (BytesMut::new(), VecDeque::new());
        let mut five = sending(Framing::Length(5));
        assert!(
            five.frame(Bytes::from_static(b"abc"), &mut out, &mut queue)
                .is_ok()
        );
        assert!(five.end(&mut out).is_err(), "two bytes short");
        assert!(
            five.frame(Bytes::from_static(b"def"), &mut out, &mut queue)
                .is_err(),
            "one too many"
        );
        let mut chunked = sending(Framing::CHUNKED);
        assert!(
            chunked
                .frame(
                    Bytes::from_static(b"0123456789abcdef!"),
                    &mut out,
                    &mut queue
                )
                .is_ok()
        );
        assert!(chunked.end(&mut out).is_ok());
        queue.push_back(out.split().freeze());
        let wire: Vec<u8> = queue
            .iter()
            .skip(1)
            .flat_map(|bytes| bytes.to_vec())
            .collect();
        assert_eq!(wire, b"11\r\n0123456789abcdef!\r\n0\r\n\r\n");
    }

    #[test]
    fn a_head_is_parsed_once_its_blank_line_can_be_there() {
        assert!(head_may_end(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n"));
        assert!(head_may_end(b"GET / HTTP/1.1\nHost: x\n\n"));
        assert!(head_may_end(b"\n\r\n"));
        assert!(!head_may_end(b"GET / HTTP/1.1\r\nHost: x\r\n"));
        assert!(!head_may_end(b"\r\n\r"));
    }

    #[tokio::test(start_paused = true)]
    async fn the_head_clock_fires_at_the_deadline_and_moves_only_when_it_must() {
        let start = Instant::now();
        let mut clock = Box::pin(tokio::time::sleep_until(start + Duration::from_secs(10)));
        let waker = std::task::Waker::noop();
        let mut cx = Context::from_waker(waker);
        // A later deadline leaves the timer where it is.
        let later = start + Duration::from_secs(60);
        assert!(poll_until(&mut clock, later, &mut cx).is_pending());
        assert_eq!(clock.deadline(), start + Duration::from_secs(10));
        // An earlier one moves it.
        let earlier = start + Duration::from_secs(5);
        assert!(poll_until(&mut clock, earlier, &mut cx).is_pending());
        assert_eq!(clock.deadline(), earlier);
        tokio::time::advance(Duration::from_secs(5)).await;
        assert!(poll_until(&mut clock, earlier, &mut cx).is_ready());
        // Fired before the deadline asked for: moved to it, not ready.
        assert!(poll_until(&mut clock, later, &mut cx).is_pending());
        assert_eq!(clock.deadline(), later);
        tokio::time::advance(Duration::from_secs(55)).await;
        assert!(poll_until(&mut clock, later, &mut cx).is_ready());
    }
}
