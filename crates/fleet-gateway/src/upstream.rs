//! The gateway's HTTP/1.1 client for `http` and `remote` upstreams (and a stdio server's
//! home): pooled keep-alive connections, `http://` in the clear, `https://` over TLS
//! checked against the OS trust store ([`fleet_tls`]).
//!
//! A request runs in its caller's task, start to end: it writes the request, reads the
//! answer's head, and its body reads the connection as the caller polls it. There is no
//! connection task and no channel between the upstream's socket and the client's
//! answer. hyper's pooled client hands every answer from its connection task to the
//! caller's, which cost a relayed call about 50 µs at p50 here, as much as the whole
//! hop of a plain TCP relay (docs/benchmarks.md).
//!
//! A connection goes back to the pool only when its answer ended as its framing says
//! and the upstream did not ask to close it; an answer dropped half-read closes it.
//! A pooled connection the upstream closed meanwhile is noticed when it is taken out
//! and replaced by a new one.

use std::collections::HashMap;
use std::future::Future as _;
use std::io::{self, Write as _};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, ready};
use std::time::{Duration, Instant};

use bytes::{Buf as _, Bytes, BytesMut};
use hyper::body::{Frame, SizeHint};
use hyper::header::{self, HeaderMap};
use hyper::http::uri::{Authority, Scheme};
use hyper::{Method, Request, Response, StatusCode, Uri, Version};
use parking_lot::Mutex;
use rustls::pki_types::ServerName;
use tokio::io::{AsyncRead, AsyncReadExt as _, AsyncWrite, AsyncWriteExt as _, ReadBuf};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;
use tokio_rustls::client::TlsStream;

use crate::framing::{self, Decoded, Framing, decode, has_connection_option, header_map};

/// Most bytes of an answer's head (status line and headers); a larger one is refused.
const MAX_HEAD_BYTES: usize = 64 * 1024;
/// Most headers in an answer's head.
const MAX_HEADERS: usize = 128;
/// How long a connection may wait in the pool before it is closed instead of reused.
const IDLE_TIMEOUT: Duration = Duration::from_secs(90);
/// Most idle connections kept per upstream; more are closed as they come back.
const MAX_IDLE_PER_UPSTREAM: usize = 256;
/// Upstreams (per thread) the pool keeps a list for before it drops the empty lists.
const MAX_UPSTREAMS: usize = 64;
/// Free room the read buffer keeps before each read.
const READ_RESERVE: usize = 8 * 1024;

/// Why a request to an upstream failed.
#[derive(Debug, thiserror::Error)]
pub(crate) enum UpstreamError {
    /// No connection could be opened (resolution, TCP or the TLS handshake).
    #[error("cannot connect to the upstream: {0}")]
    Connect(io::Error),
    /// The URI cannot be requested (no host, a scheme other than http or https).
    #[error("the upstream URI {0} has no http(s) host")]
    Uri(Uri),
    /// Reading or writing the connection failed.
    #[error("the upstream connection failed: {0}")]
    Io(#[from] io::Error),
    /// The upstream closed the connection before its answer ended.
    #[error("the upstream closed the connection before its answer ended")]
    Closed,
    /// The upstream's answer is not valid HTTP/1.1.
    #[error("the upstream's answer is not valid HTTP/1.1: {0}")]
    Malformed(&'static str),
}

impl UpstreamError {
    /// No connection was made: the request never reached the upstream.
    pub(crate) fn is_connect(&self) -> bool {
        matches!(self, Self::Connect(_) | Self::Uri(_))
    }
}

/// The pooled client; its clones share the pool.
#[derive(Debug, Clone)]
pub(crate) struct UpstreamClient {
    pool: Arc<Pool>,
    tls: Arc<rustls::ClientConfig>,
    connect_timeout: Duration,
}

impl UpstreamClient {
    /// A client whose connection attempts (TCP and TLS) give up after `connect_timeout`.
    pub(crate) fn new(connect_timeout: Duration) -> Self {
        let mut tls = fleet_tls::client_config();
        tls.alpn_protocols = vec![b"http/1.1".to_vec()];
        Self {
            pool: Arc::default(),
            tls: Arc::new(tls),
            connect_timeout,
        }
    }

    /// Sends `request` to its URI and returns the answer once its head has come; the
    /// body is read from the connection as it is polled.
    ///
    /// # Errors
    /// [`UpstreamError`]: no connection, a broken one, or an answer that is not HTTP.
    pub(crate) async fn request(
        &self,
        request: Request<Bytes>,
    ) -> Result<Response<UpstreamBody>, UpstreamError> {
        let (parts, body) = request.into_parts();
        let key = Key::of(&parts.uri)?;
        let mut connection = match self.pool.take(&key) {
            Some(connection) => connection,
            // Boxed: connecting (TLS above all) needs a large future, which would
            // otherwise make every request's future as large, and every call moves it.
            None => Box::pin(self.connect(&key)).await?,
        };
        let head = request_head(&parts.method, &parts.uri, &key, &parts.headers, body.len());
        connection
            .stream
            .write_all_buf(&mut bytes::Buf::chain(head.as_slice(), body))
            .await?;
        // TLS may hold the end of the request until flushed.
        connection.stream.flush().await?;
        let Head {
            response,
            framing,
            reusable,
        } = read_head(&mut connection, &parts.method).await?;
        let mut body = UpstreamBody {
            open: Some(Open {
                connection,
                framing,
                reusable,
                pool: Arc::clone(&self.pool),
                key,
            }),
        };
        if framing.ended() {
            body.end();
        }
        Ok(response.map(|()| body))
    }

    async fn connect(&self, key: &Key) -> Result<Connection, UpstreamError> {
        let host = key.host();
        let connecting = async {
            let tcp = TcpStream::connect((host, key.port())).await?;
            // Without TCP_NODELAY a relayed SSE event waits on Nagle + delayed ACK (~40 ms).
            tcp.set_nodelay(true)?;
            if !key.tls {
                return Ok(Stream::Plain(tcp));
            }
            let name = ServerName::try_from(host.to_owned())
                .map_err(|error| io::Error::new(io::ErrorKind::InvalidInput, error))?;
            let tls = TlsConnector::from(Arc::clone(&self.tls))
                .connect(name, tcp)
                .await?;
            Ok(Stream::Tls(Box::new(tls)))
        };
        let stream = tokio::time::timeout(self.connect_timeout, connecting)
            .await
            .unwrap_or_else(|_| Err(io::ErrorKind::TimedOut.into()))
            .map_err(UpstreamError::Connect)?;
        Ok(Connection {
            stream,
            buffer: BytesMut::with_capacity(READ_RESERVE),
            idle_since: Instant::now(),
        })
    }
}

/// Where a connection goes: scheme and authority (without user info), from which thread.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct Key {
    tls: bool,
    authority: Authority,
    /// A socket is served by the reactor of the runtime it was opened on: used from
    /// another thread's runtime (the gateway serves connections on single-threaded
    /// workers), each of its wake-ups would cross threads.
    thread: std::thread::ThreadId,
}

impl Key {
    fn of(uri: &Uri) -> Result<Self, UpstreamError> {
        let tls = match uri.scheme() {
            Some(scheme) if *scheme == Scheme::HTTPS => true,
            Some(scheme) if *scheme == Scheme::HTTP => false,
            _ => return Err(UpstreamError::Uri(uri.clone())),
        };
        let authority = match uri.authority() {
            Some(authority) if !authority.host().is_empty() => authority,
            _ => return Err(UpstreamError::Uri(uri.clone())),
        };
        // User info never goes on the wire: the Host header names host and port only.
        let authority = match authority.as_str().rsplit_once('@') {
            Some((_, bare)) => bare.parse().map_err(|_| UpstreamError::Uri(uri.clone()))?,
            None => authority.clone(),
        };
        Ok(Self {
            tls,
            authority,
            thread: std::thread::current().id(),
        })
    }

    /// The host to resolve and to name in TLS: an IPv6 address without its brackets.
    fn host(&self) -> &str {
        self.authority
            .host()
            .trim_start_matches('[')
            .trim_end_matches(']')
    }

    fn port(&self) -> u16 {
        self.authority
            .port_u16()
            .unwrap_or(if self.tls { 443 } else { 80 })
    }
}

/// The request line and headers: `Host` from the URI, the body's `Content-Length`, and
/// the caller's headers besides those two and `Transfer-Encoding` (the body is whole).
fn request_head(
    method: &Method,
    uri: &Uri,
    key: &Key,
    headers: &HeaderMap,
    body_length: usize,
) -> Vec<u8> {
    let target = uri.path_and_query().map_or("/", |target| target.as_str());
    let mut head = Vec::with_capacity(256 + headers.len() * 48);
    for part in [method.as_str(), " ", target, " HTTP/1.1\r\nhost: "] {
        head.extend_from_slice(part.as_bytes());
    }
    head.extend_from_slice(key.authority.as_str().as_bytes());
    head.extend_from_slice(b"\r\n");
    for (name, value) in headers {
        if name == header::HOST
            || name == header::CONTENT_LENGTH
            || name == header::TRANSFER_ENCODING
        {
            continue;
        }
        head.extend_from_slice(name.as_str().as_bytes());
        head.extend_from_slice(b": ");
        head.extend_from_slice(value.as_bytes());
        head.extend_from_slice(b"\r\n");
    }
    // As hyper: a GET or HEAD without a body says nothing about one.
    if body_length > 0 || (method != Method::GET && method != Method::HEAD) {
        // Into the head itself: `format!` would allocate a string per request.
        let _ = write!(head, "content-length: {body_length}\r\n");
    }
    head.extend_from_slice(b"\r\n");
    head
}

/// An answer's head: the response, how its body is framed, and whether the connection
/// may serve another request after it.
struct Head {
    response: Response<()>,
    framing: Framing,
    reusable: bool,
}

/// Reads the answer's head, skipping interim (`1xx`) answers.
async fn read_head(connection: &mut Connection, method: &Method) -> Result<Head, UpstreamError> {
    loop {
        // Nothing to parse before the first read (a pooled connection's buffer is empty).
        if !connection.buffer.is_empty()
            && let Some((length, head)) = parse_head(&connection.buffer, method)?
        {
            connection.buffer.advance(length);
            if let Some(head) = head {
                return Ok(head);
            }
            continue;
        }
        if connection.buffer.len() > MAX_HEAD_BYTES {
            return Err(UpstreamError::Malformed("the answer's head is too large"));
        }
        connection.buffer.reserve(READ_RESERVE);
        if connection.stream.read_buf(&mut connection.buffer).await? == 0 {
            return Err(UpstreamError::Closed);
        }
    }
}

/// One answer head parsed from the start of `buffer`, and its length; `None` for the
/// head when it is an interim (`1xx`) answer, `None` for both while it is incomplete.
fn parse_head(
    buffer: &[u8],
    method: &Method,
) -> Result<Option<(usize, Option<Head>)>, UpstreamError> {
    // Uninitialised: zeroing every slot would cost more than parsing a short head.
    let mut slots = [const { std::mem::MaybeUninit::uninit() }; MAX_HEADERS];
    let mut parsed = httparse::Response::new(&mut []);
    let parsing = httparse::ParserConfig::default();
    let length = match parsing.parse_response_with_uninit_headers(&mut parsed, buffer, &mut slots) {
        Ok(httparse::Status::Complete(length)) => length,
        Ok(httparse::Status::Partial) => return Ok(None),
        Err(httparse::Error::TooManyHeaders) => {
            return Err(UpstreamError::Malformed("the answer has too many headers"));
        }
        Err(_) => {
            return Err(UpstreamError::Malformed(
                "the answer's head cannot be parsed",
            ));
        }
    };
    let status = parsed
        .code
        .and_then(|code| StatusCode::from_u16(code).ok())
        .ok_or(UpstreamError::Malformed("the answer's status is not valid"))?;
    if status.is_informational() {
        if status == StatusCode::SWITCHING_PROTOCOLS {
            return Err(UpstreamError::Malformed("the upstream switched protocols"));
        }
        return Ok(Some((length, None)));
    }
    let copy = Bytes::copy_from_slice(&buffer[..length]);
    let headers = header_map(parsed.headers, &copy, buffer)
        .map_err(|_| UpstreamError::Malformed("the answer has an invalid header"))?;
    let version = if parsed.version == Some(0) {
        Version::HTTP_10
    } else {
        Version::HTTP_11
    };
    let (framing, delimited) = framing_of(method, status, &headers)?;
    let close = has_connection_option(&headers, b"close");
    let reusable = delimited && !close && version == Version::HTTP_11;
    let mut response = Response::new(());
    *response.status_mut() = status;
    *response.version_mut() = version;
    *response.headers_mut() = headers;
    Ok(Some((
        length,
        Some(Head {
            response,
            framing,
            reusable,
        }),
    )))
}

/// How the body of an answer to `method` with `status` and `headers` is framed
/// (RFC 9112, section 6.3), and whether its end leaves the connection usable.
fn framing_of(
    method: &Method,
    status: StatusCode,
    headers: &HeaderMap,
) -> Result<(Framing, bool), UpstreamError> {
    if *method == Method::HEAD
        || status == StatusCode::NO_CONTENT
        || status == StatusCode::NOT_MODIFIED
    {
        return Ok((Framing::Length(0), true));
    }
    if let Some(chunked) = framing::chunked(headers) {
        // With a Content-Length beside it the message is suspect: not reused after.
        let alone = !headers.contains_key(header::CONTENT_LENGTH);
        return Ok(if chunked {
            (Framing::CHUNKED, alone)
        } else {
            (Framing::UntilClose, false)
        });
    }
    let length = framing::content_length(headers)
        .map_err(|_| UpstreamError::Malformed("the answer's Content-Length is not valid"))?;
    Ok(match length {
        Some(length) => (Framing::Length(length), true),
        None => (Framing::UntilClose, false),
    })
}

/// An answer's body, read from its connection as it is polled.
#[derive(Debug)]
pub(crate) struct UpstreamBody {
    /// `None` once the body ended (its connection back in the pool, or closed).
    open: Option<Open>,
}

#[derive(Debug)]
struct Open {
    connection: Connection,
    framing: Framing,
    reusable: bool,
    pool: Arc<Pool>,
    key: Key,
}

impl UpstreamBody {
    /// The body ended as framed: its connection goes back to the pool when reusable.
    fn end(&mut self) {
        if let Some(open) = self.open.take()
            && open.reusable
            && open.connection.buffer.is_empty()
        {
            open.pool.give_back(open.key, open.connection);
        }
    }
}

impl hyper::body::Body for UpstreamBody {
    type Data = Bytes;
    type Error = UpstreamError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, UpstreamError>>> {
        loop {
            let Some(open) = &mut self.open else {
                return Poll::Ready(None);
            };
            match decode(&mut open.framing, &mut open.connection.buffer) {
                Ok(Decoded::Data(data)) => {
                    if open.framing.ended() {
                        self.end();
                    }
                    return Poll::Ready(Some(Ok(Frame::data(data))));
                }
                Ok(Decoded::End) => {
                    self.end();
                    return Poll::Ready(None);
                }
                Ok(Decoded::More) => {}
                Err(malformed) => {
                    self.open = None;
                    return Poll::Ready(Some(Err(UpstreamError::Malformed(malformed))));
                }
            }
            let Connection { stream, buffer, .. } = &mut open.connection;
            buffer.reserve(READ_RESERVE);
            let read = ready!(std::pin::pin!(stream.read_buf(buffer)).poll(cx));
            match read {
                Ok(0) if open.framing == Framing::UntilClose => {
                    self.open = None;
                    return Poll::Ready(None);
                }
                Ok(0) => {
                    self.open = None;
                    return Poll::Ready(Some(Err(UpstreamError::Closed)));
                }
                Ok(_) => {}
                Err(error) => {
                    self.open = None;
                    return Poll::Ready(Some(Err(error.into())));
                }
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.open.is_none()
    }

    fn size_hint(&self) -> SizeHint {
        match &self.open {
            None => SizeHint::with_exact(0),
            Some(Open {
                framing: Framing::Length(left),
                ..
            }) => SizeHint::with_exact(*left),
            Some(_) => SizeHint::default(),
        }
    }
}

/// An open connection to an upstream and what was read from it but not yet used.
#[derive(Debug)]
struct Connection {
    stream: Stream,
    buffer: BytesMut,
    /// When it last went into the pool.
    idle_since: Instant,
}

impl Connection {
    /// Whether the upstream may still take a request on it: not too long idle, and
    /// nothing (no close, no stray bytes) came while it waited.
    fn usable(&self, now: Instant) -> bool {
        if now.duration_since(self.idle_since) >= IDLE_TIMEOUT {
            return false;
        }
        let tcp = match &self.stream {
            Stream::Plain(tcp) => tcp,
            Stream::Tls(tls) => tls.get_ref().0,
        };
        let mut probe = [0u8; 1];
        let mut probe = ReadBuf::new(&mut probe);
        let mut cx = Context::from_waker(std::task::Waker::noop());
        tcp.poll_peek(&mut cx, &mut probe).is_pending()
    }
}

/// Idle connections by upstream.
#[derive(Debug, Default)]
struct Pool {
    idle: Mutex<HashMap<Key, Vec<Connection>, foldhash::fast::RandomState>>,
}

impl Pool {
    /// The most recently used idle connection to `key` that is still usable; those
    /// found unusable on the way are closed.
    fn take(&self, key: &Key) -> Option<Connection> {
        let now = Instant::now();
        loop {
            // An upstream's list stays in the map when emptied: a connection taken is
            // usually given back within the call, and removing the list only to make a
            // new one then cost every call a hash, an allocation and a free.
            let connection = self.idle.lock().get_mut(key)?.pop()?;
            if connection.usable(now) {
                return Some(connection);
            }
        }
    }

    /// Keeps `connection` for the next request to `key`, closing those that waited too
    /// long (or the oldest, when `key` has as many as it may keep).
    fn give_back(&self, key: Key, mut connection: Connection) {
        let now = Instant::now();
        connection.idle_since = now;
        let closed = {
            let mut idle = self.idle.lock();
            if idle.len() >= MAX_UPSTREAMS && !idle.contains_key(&key) {
                // Lists left empty by upstreams gone (an instance per revision, each on
                // its own port) are dropped before they pile up.
                idle.retain(|_, connections| !connections.is_empty());
            }
            let connections = idle.entry(key).or_default();
            let stale = connections
                .iter()
                .take_while(|waiting| now.duration_since(waiting.idle_since) >= IDLE_TIMEOUT)
                .count()
                .max((connections.len() + 1).saturating_sub(MAX_IDLE_PER_UPSTREAM));
            let closed: Vec<Connection> = connections.drain(..stale).collect();
            connections.push(connection);
            closed
        };
        // Closed outside the lock.
        drop(closed);
    }
}

/// A connection's byte stream: plain TCP or TLS over it.
#[derive(Debug)]
enum Stream {
    Plain(TcpStream),
    Tls(Box<TlsStream<TcpStream>>),
}

impl AsyncRead for Stream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Self::Plain(tcp) => Pin::new(tcp).poll_read(cx, buf),
            Self::Tls(tls) => Pin::new(tls.as_mut()).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for Stream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Self::Plain(tcp) => Pin::new(tcp).poll_write(cx, buf),
            Self::Tls(tls) => Pin::new(tls.as_mut()).poll_write(cx, buf),
        }
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Self::Plain(tcp) => Pin::new(tcp).poll_write_vectored(cx, bufs),
            Self::Tls(tls) => Pin::new(tls.as_mut()).poll_write_vectored(cx, bufs),
        }
    }

    fn is_write_vectored(&self) -> bool {
        match self {
            Self::Plain(tcp) => tcp.is_write_vectored(),
            Self::Tls(tls) => tls.is_write_vectored(),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Self::Plain(tcp) => Pin::new(tcp).poll_flush(cx),
            Self::Tls(tls) => Pin::new(tls.as_mut()).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Self::Plain(tcp) => Pin::new(tcp).poll_shutdown(cx),
            Self::Tls(tls) => Pin::new(tls.as_mut()).poll_shutdown(cx),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};

    use http_body_util::BodyExt as _;
    use hyper::body::Body as _;
    use hyper::header::HeaderValue;
    use tokio::net::TcpListener;

    use super::*;

    /// The bytes to answer the request with this index, and whether to close after them.
    type Answer = fn(usize) -> (Vec<u8>, bool);

    /// An upstream on a loopback port that answers each request with what `answer`
    /// gives for its index (and closes the connection after it when told to).
    struct Scripted {
        uri: Uri,
        connections: Arc<AtomicUsize>,
        requests: Arc<Mutex<Vec<Vec<u8>>>>,
    }

    impl Scripted {
        async fn start(answer: Answer) -> Self {
            let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
            let uri = format!("http://{}/mcp?x=1", listener.local_addr().unwrap())
                .parse()
                .unwrap();
            let connections = Arc::new(AtomicUsize::new(0));
            let requests = Arc::new(Mutex::new(Vec::new()));
            let (counted, logged) = (Arc::clone(&connections), Arc::clone(&requests));
            tokio::spawn(async move {
                loop {
                    let (mut tcp, _) = listener.accept().await.unwrap();
                    counted.fetch_add(1, Ordering::SeqCst);
                    let logged = Arc::clone(&logged);
                    tokio::spawn(async move {
                        while let Some(request) = read_request(&mut tcp).await {
                            let index = {
                                let mut logged = logged.lock();
                                logged.push(request);
                                logged.len() - 1
                            };
                            let (bytes, close) = answer(index);
                            tcp.write_all(&bytes).await.unwrap();
                            if close {
                                return;
                            }
                        }
                    });
                }
            });
            Self {
                uri,
                connections,
                requests,
            }
        }

        fn connections(&self) -> usize {
            self.connections.load(Ordering::SeqCst)
        }
    }

    /// One request's bytes (head and Content-Length body); `None` at the connection's end.
    async fn read_request(tcp: &mut TcpStream) -> Option<Vec<u8>> {
        let mut bytes = Vec::new();
        loop {
            if let Some(end) = bytes.windows(4).position(|w| w == b"\r\n\r\n") {
                let head = String::from_utf8_lossy(&bytes[..end]).to_lowercase();
                let length: usize = head
                    .lines()
                    .find_map(|line| line.strip_prefix("content-length: "))
                    .map_or(0, |length| length.parse().unwrap());
                if bytes.len() >= end + 4 + length {
                    return Some(bytes);
                }
            }
            let mut chunk = [0u8; 4096];
            match tcp.read(&mut chunk).await {
                Ok(0) | Err(_) => return None,
                Ok(n) => bytes.extend_from_slice(&chunk[..n]),
            }
        }
    }

    fn post(uri: &Uri, body: &'static str) -> Request<Bytes> {
        let mut request = Request::new(Bytes::from_static(body.as_bytes()));
        *request.method_mut() = Method::POST;
        *request.uri_mut() = uri.clone();
        request.headers_mut().insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        );
        request
    }

    async fn body_of(
        client: &UpstreamClient,
        request: Request<Bytes>,
    ) -> Result<Bytes, UpstreamError> {
        let response = client.request(request).await?;
        Ok(response.into_body().collect().await?.to_bytes())
    }

    fn client() -> UpstreamClient {
        UpstreamClient::new(Duration::from_secs(5))
    }

    #[tokio::test]
    async fn answers_framed_by_length_come_whole_and_reuse_one_connection() {
        let upstream = Scripted::start(|_| {
            (
                b"HTTP/1.1 200 OK\r\ncontent-length: 5\r\n\r\nhello".into(),
                false,
            )
        })
        .await;
        let client = client();
        for _ in 0..3 {
            assert_eq!(
                body_of(&client, post(&upstream.uri, "{}")).await.unwrap(),
                "hello"
            );
        }
        assert_eq!(upstream.connections(), 1);
        let first = String::from_utf8(upstream.requests.lock()[0].clone()).unwrap();
        let authority = upstream.uri.authority().unwrap();
        assert_eq!(
            first,
            format!(
                "POST /mcp?x=1 HTTP/1.1\r\nhost: {authority}\r\ncontent-type: application/json\r\n\
                 content-length: 2\r\n\r\n{{}}"
            )
        );
    }

    #[tokio::test]
    async fn a_get_without_a_body_says_nothing_of_one_and_user_info_stays_home() {
        let upstream =
            Scripted::start(|_| (b"HTTP/1.1 204 No Content\r\n\r\n".into(), false)).await;
        let uri: Uri = format!(
            "http://user:secret@{}/sse",
            upstream.uri.authority().unwrap()
        )
        .parse()
        .unwrap();
        let mut request = Request::new(Bytes::new());
        *request.uri_mut() = uri;
        let response = client().request(request).await.unwrap();
        assert_eq!(response.status(), StatusCode::NO_CONTENT);
        assert!(response.body().is_end_stream());
        let sent = String::from_utf8(upstream.requests.lock()[0].clone()).unwrap();
        assert_eq!(
            sent,
            format!(
                "GET /sse HTTP/1.1\r\nhost: {}\r\n\r\n",
                upstream.uri.authority().unwrap()
            )
        );
    }

    #[tokio::test]
    async fn a_connection_the_upstream_closes_is_not_reused() {
        // `Connection: close`, a body that ends with the connection, and a connection the
        // upstream closes after a well-framed answer: each next request gets a new one.
        for answer in [
            b"HTTP/1.1 200 OK\r\nconnection: close\r\ncontent-length: 2\r\n\r\nok".as_slice(),
            b"HTTP/1.1 200 OK\r\n\r\nok",
            b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok",
        ] {
            static ANSWER: std::sync::Mutex<Vec<u8>> = std::sync::Mutex::new(Vec::new());
            *ANSWER.lock().unwrap() = answer.to_vec();
            let upstream = Scripted::start(|_| (ANSWER.lock().unwrap().clone(), true)).await;
            let client = client();
            for round in 1..=2 {
                assert_eq!(
                    body_of(&client, post(&upstream.uri, "{}")).await.unwrap(),
                    "ok"
                );
                assert_eq!(upstream.connections(), round);
                // As an idle pooled connection would be when the next request comes.
                fleet_testkit::wait_until(
                    "the upstream's close to arrive",
                    Duration::from_secs(5),
                    async || {
                        client
                            .pool
                            .idle
                            .lock()
                            .values()
                            .flatten()
                            .all(|idle| !idle.usable(Instant::now()))
                    },
                )
                .await;
            }
            assert_eq!(
                upstream.connections(),
                2,
                "{}",
                String::from_utf8_lossy(answer)
            );
        }
    }

    #[tokio::test]
    async fn interim_answers_are_skipped() {
        let upstream = Scripted::start(|_| {
            (
                b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok"
                    .into(),
                false,
            )
        })
        .await;
        assert_eq!(
            body_of(&client(), post(&upstream.uri, "{}")).await.unwrap(),
            "ok"
        );
    }

    #[tokio::test]
    async fn bad_answers_are_errors_not_bodies() {
        let cases: [Answer; 4] = [
            // A head that never ends, past the limit.
            |_| {
                let mut head = b"HTTP/1.1 200 OK\r\nx-big: ".to_vec();
                head.resize(MAX_HEAD_BYTES + 1024, b'a');
                (head, false)
            },
            |_| {
                (
                    b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\ncontent-length: 3\r\n\r\nok".into(),
                    false,
                )
            },
            |_| {
                (
                    b"HTTP/1.1 200 OK\r\ncontent-length: -2\r\n\r\nok".into(),
                    false,
                )
            },
            |_| (b"SSH-2.0-OpenSSH\r\n\r\n".into(), false),
        ];
        for answer in cases {
            let upstream = Scripted::start(answer).await;
            let error = client()
                .request(post(&upstream.uri, "{}"))
                .await
                .unwrap_err();
            assert!(matches!(error, UpstreamError::Malformed(_)), "{error}");
            assert!(!error.is_connect());
        }
    }

    #[tokio::test]
    async fn a_body_cut_short_ends_in_an_error() {
        let upstream = Scripted::start(|_| {
            (
                b"HTTP/1.1 200 OK\r\ncontent-length: 9\r\n\r\nok".into(),
                true,
            )
        })
        .await;
        let error = body_of(&client(), post(&upstream.uri, "{}"))
            .await
            .unwrap_err();
        assert!(matches!(error, UpstreamError::Closed), "{error}");
    }

    #[tokio::test]
    async fn no_listener_is_a_connect_error() {
        let closed = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let uri: Uri = format!("http://{}/mcp", closed.local_addr().unwrap())
            .parse()
            .unwrap();
        drop(closed);
        let error = client().request(post(&uri, "{}")).await.unwrap_err();
        assert!(error.is_connect(), "{error}");
    }
}
