//! The gateway's listener: accepts TCP connections, serves HTTP/1.1 on each with hyper,
//! and bounds how long a client may hold a connection without making progress.
//!
//! Owns:
//! - the accept loop (TCP_NODELAY on every connection, the client's address handed to
//!   the data plane with each request);
//! - the connection timeouts, all enforced before a request reaches admission (so an
//!   unauthenticated client cannot hold connections open): the first request head must
//!   arrive within the header-read timeout of the accept, a kept-alive connection may
//!   wait the idle timeout for its next request (whose head, once its first byte is in,
//!   has the header-read timeout again), and a request body must arrive in full within
//!   the body-read timeout of its head;
//! - the TLS handshake when the gateway serves TLS, bounded by the header-read timeout;
//! - graceful shutdown: no new connections, requests in flight finish.
//!
//! Does not own: what a request means (`data_plane.rs`), TLS settings (`tls.rs`).

use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::task::{Context, Poll, ready};
use std::time::{Duration, Instant};

use axum::body::Body;
use bytes::Bytes;
use futures::FutureExt as _;
use hyper::body::{Frame, Incoming, SizeHint};
use hyper::server::conn::http1;
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpListener;
use tokio::sync::{mpsc, watch};
use tokio_rustls::TlsAcceptor;

use crate::data_plane::{Answer, DataPlane};

/// How long a client may take, per connection.
#[derive(Debug, Clone, Copy)]
pub(crate) struct ConnectionTimeouts {
    pub(crate) header_read: Duration,
    pub(crate) body_read: Duration,
    pub(crate) idle: Duration,
}

/// Accepts connections on `listener` and serves `data_plane` on each until `shutdown`
/// completes; then stops accepting and waits for the connections to finish their
/// requests.
pub(crate) async fn run(
    listener: TcpListener,
    data_plane: DataPlane,
    timeouts: ConnectionTimeouts,
    tls: Option<TlsAcceptor>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) {
    // Every connection task holds a clone of `open`; `closed` ends when the last drops.
    let (open, mut closed) = mpsc::channel::<Infallible>(1);
    // Connections watch this to start their graceful shutdown.
    let (stopping, stop) = watch::channel(false);
    let mut shutdown = std::pin::pin!(shutdown);
    loop {
        let (tcp, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(error) => {
                    accept_failed(&error).await;
                    continue;
                }
            },
            () = &mut shutdown => break,
        };
        // Without TCP_NODELAY a relayed SSE answer (head, then the event as its own
        // write) stalls ~40 ms on Nagle + delayed ACK.
        if let Err(error) = tcp.set_nodelay(true) {
            tracing::debug!(%error, "cannot set TCP_NODELAY");
        }
        let connection = Connection {
            data_plane: data_plane.clone(),
            peer,
            timeouts,
        };
        // The connection moves to a worker thread's own reactor.
        let tcp = match tcp.into_std() {
            Ok(tcp) => tcp,
            Err(error) => {
                tracing::debug!(%peer, %error, "cannot hand the connection to a worker");
                continue;
            }
        };
        let open = open.clone();
        let stop = stop.clone();
        let tls = tls.clone();
        let serve = async move {
            let tcp = match tokio::net::TcpStream::from_std(tcp) {
                Ok(tcp) => tcp,
                Err(error) => {
                    tracing::debug!(%peer, %error, "cannot serve the connection");
                    return;
                }
            };
            match tls {
                None => connection.serve(tcp, stop).await,
                Some(tls) => {
                    // A client that stalls its handshake is a slow client too.
                    match tokio::time::timeout(timeouts.header_read, tls.accept(tcp)).await {
                        Ok(Ok(stream)) => connection.serve(stream, stop).await,
                        Ok(Err(error)) => {
                            tracing::debug!(%peer, %error, "TLS handshake failed");
                        }
                        Err(_) => tracing::debug!(%peer, "TLS handshake timed out"),
                    }
                }
            }
            drop(open);
        };
        match workers().next() {
            Some(worker) => drop(worker.spawn(serve)),
            None => drop(tokio::spawn(serve)),
        }
    }
    drop(listener);
    let _ = stopping.send(true);
    drop(open);
    // `recv` yields `None` once every connection task has dropped its sender.
    let _ = closed.recv().await;
}

/// The threads that serve the gateway's connections, each with a single-threaded runtime
/// of its own. A connection lives on one of them from its accept to its close, so the
/// hand-overs within a request (hyper's connection tasks, the upstream's answer, the
/// timers) stay on one thread. On the multi-threaded runtime of the control plane they
/// did not: its workers woke and stole from each other, and a relayed call cost
/// 36.5–39.1 µs of CPU instead of 29.2 µs on one thread, with a higher p50 and lower
/// throughput (docs/benchmarks.md). The upstream connection pool is shared: with more
/// than one worker, an upstream connection opened on one may serve a request on another.
///
/// One worker per two cores: the gateway shares its machine with the servers it fronts
/// and with its own control plane, whose threads do the rest.
struct Workers {
    handles: Vec<tokio::runtime::Handle>,
    next: AtomicUsize,
}

impl Workers {
    /// The worker for the next connection, in turn; none if no worker could start (the
    /// connection is then served where it was accepted).
    fn next(&self) -> Option<&tokio::runtime::Handle> {
        let turn = self.next.fetch_add(1, Ordering::Relaxed);
        self.handles.get(turn.checked_rem(self.handles.len())?)
    }
}

/// The process's connection workers, started on first use; they live as long as the
/// process (a gateway stopping leaves them idle for the next one).
fn workers() -> &'static Workers {
    static WORKERS: std::sync::OnceLock<Workers> = std::sync::OnceLock::new();
    WORKERS.get_or_init(|| {
        let count =
            std::thread::available_parallelism().map_or(1, |cores| (cores.get() / 2).max(1));
        let handles = (0..count).filter_map(start_worker).collect();
        Workers {
            handles,
            next: AtomicUsize::new(0),
        }
    })
}

/// Starts worker `index`: a thread that runs its runtime until the process ends.
fn start_worker(index: usize) -> Option<tokio::runtime::Handle> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .inspect_err(|error| tracing::warn!(%error, "cannot start a gateway worker's runtime"))
        .ok()?;
    let handle = runtime.handle().clone();
    std::thread::Builder::new()
        .name(format!("gateway-{index}"))
        .spawn(move || runtime.block_on(std::future::pending::<()>()))
        .inspect_err(|error| tracing::warn!(%error, "cannot start a gateway worker thread"))
        .ok()?;
    Some(handle)
}

/// Errors such as EMFILE would repeat at once: pause before the next accept.
async fn accept_failed(error: &std::io::Error) {
    tracing::warn!(%error, "the gateway cannot accept a connection");
    tokio::time::sleep(Duration::from_millis(100)).await;
}

/// One accepted connection, before it is served.
struct Connection {
    data_plane: DataPlane,
    peer: SocketAddr,
    timeouts: ConnectionTimeouts,
}

impl Connection {
    async fn serve<I>(self, io: I, mut stop: watch::Receiver<bool>)
    where
        I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    {
        let activity = Arc::new(ReadActivity::new());
        let io = TokioIo::new(ActivityIo {
            io,
            activity: Arc::clone(&activity),
        });
        let timer = HeadTimer {
            activity,
            header_read: self.timeouts.header_read,
            idle: self.timeouts.idle,
        };
        let service = RequestService {
            data_plane: self.data_plane,
            peer: self.peer,
            body_read: self.timeouts.body_read,
        };
        let mut builder = http1::Builder::new();
        builder
            .timer(timer)
            .header_read_timeout(self.timeouts.header_read);
        let mut connection = std::pin::pin!(builder.serve_connection(io, service));
        let mut stopping = false;
        loop {
            tokio::select! {
                served = connection.as_mut() => {
                    if let Err(error) = served {
                        tracing::debug!(peer = %self.peer, %error, "connection ended");
                    }
                    return;
                }
                _ = stop.wait_for(|stop| *stop), if !stopping => {
                    stopping = true;
                    connection.as_mut().graceful_shutdown();
                }
            }
        }
    }
}

/// Hands each request to the data plane, with the client's address and a body that
/// must arrive in time.
#[derive(Clone)]
struct RequestService {
    data_plane: DataPlane,
    peer: SocketAddr,
    body_read: Duration,
}

impl hyper::service::Service<hyper::Request<Incoming>> for RequestService {
    type Response = axum::response::Response;
    type Error = Infallible;
    type Future =
        futures::future::Map<Answer, fn(Self::Response) -> Result<Self::Response, Infallible>>;

    fn call(&self, request: hyper::Request<Incoming>) -> Self::Future {
        let deadline = tokio::time::Instant::now() + self.body_read;
        let request = request.map(|body| {
            Body::new(TimedBody {
                body,
                deadline,
                timer: None,
            })
        });
        self.data_plane
            .call(request, self.peer)
            .map(Ok as fn(_) -> _)
    }
}

/// A request body that fails once its deadline passes before its end arrives.
struct TimedBody {
    body: Incoming,
    deadline: tokio::time::Instant,
    /// Made only when the body is not all there yet: most bodies arrive with their
    /// head and never need one.
    timer: Option<Pin<Box<tokio::time::Sleep>>>,
}

/// Why a request body could not be read.
#[derive(Debug, thiserror::Error)]
enum RequestBodyError {
    /// The connection failed while the body was read.
    #[error("reading the request body: {0}")]
    Read(#[from] hyper::Error),
    /// The body did not arrive in full within the body-read timeout.
    #[error("the request body did not arrive within the body-read timeout")]
    TimedOut,
}

impl hyper::body::Body for TimedBody {
    type Data = Bytes;
    type Error = RequestBodyError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, RequestBodyError>>> {
        let this = self.get_mut();
        if let Poll::Ready(frame) = Pin::new(&mut this.body).poll_frame(cx) {
            return Poll::Ready(frame.map(|frame| frame.map_err(RequestBodyError::Read)));
        }
        let deadline = this.deadline;
        let timer = this
            .timer
            .get_or_insert_with(|| Box::pin(tokio::time::sleep_until(deadline)));
        ready!(timer.as_mut().poll(cx));
        Poll::Ready(Some(Err(RequestBodyError::TimedOut)))
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.body.size_hint()
    }
}

/// When the connection last started reading bytes of a request head, shared by the
/// connection's reader ([`ActivityIo`]) and its head timer ([`HeadTimer`]).
#[derive(Debug)]
struct ReadActivity {
    origin: Instant,
    /// Nanoseconds after `origin` (plus one; 0 = none yet) of the first bytes read
    /// since the head timer last started waiting.
    first_read: AtomicU64,
    /// The connection has waited for a request head before: later waits are
    /// keep-alive waits.
    waited_before: AtomicBool,
}

impl ReadActivity {
    fn new() -> Self {
        Self {
            origin: Instant::now(),
            first_read: AtomicU64::new(0),
            waited_before: AtomicBool::new(false),
        }
    }

    fn bytes_read(&self) {
        if self.first_read.load(Ordering::Relaxed) == 0 {
            let since = u64::try_from(self.origin.elapsed().as_nanos()).unwrap_or(u64::MAX);
            self.first_read
                .store(since.saturating_add(1), Ordering::Relaxed);
        }
    }

    /// A new wait for a request head begins: bytes read before it belong to earlier
    /// requests.
    fn start_wait(&self) -> bool {
        self.first_read.store(0, Ordering::Relaxed);
        self.waited_before.swap(true, Ordering::Relaxed)
    }

    fn first_read(&self) -> Option<Instant> {
        match self.first_read.load(Ordering::Relaxed) {
            0 => None,
            since => Some(self.origin + Duration::from_nanos(since - 1)),
        }
    }
}

/// The connection's stream, noting when bytes are read.
struct ActivityIo<I> {
    io: I,
    activity: Arc<ReadActivity>,
}

impl<I: AsyncRead + Unpin> AsyncRead for ActivityIo<I> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let before = buf.filled().len();
        ready!(Pin::new(&mut self.io).poll_read(cx, buf))?;
        if buf.filled().len() > before {
            self.activity.bytes_read();
        }
        Poll::Ready(Ok(()))
    }
}

impl<I: AsyncWrite + Unpin> AsyncWrite for ActivityIo<I> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.io).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.io).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.io).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.io).poll_shutdown(cx)
    }
}

/// hyper's timer for its header-read timeout, which hyper starts whenever it waits for
/// a request head: on a fresh connection, and after each response on a kept-alive one.
/// The first wait gets the header-read timeout; later waits get the idle timeout until
/// the next head's first bytes arrive, then the header-read timeout from those bytes.
#[derive(Debug, Clone)]
struct HeadTimer {
    activity: Arc<ReadActivity>,
    header_read: Duration,
    idle: Duration,
}

impl hyper::rt::Timer for HeadTimer {
    fn sleep(&self, duration: Duration) -> Pin<Box<dyn hyper::rt::Sleep>> {
        self.sleep_until(Instant::now() + duration)
    }

    fn sleep_until(&self, deadline: Instant) -> Pin<Box<dyn hyper::rt::Sleep>> {
        let keep_alive = self.activity.start_wait();
        let started = deadline.checked_sub(self.header_read).unwrap_or(deadline);
        // Armed once, for the earliest the wait could end; when that comes, the wait's
        // real deadline is worked out (and the timer moved to it, the rare time it is
        // later). A head arrives in microseconds: moving the timer when its first bytes
        // came cost every request a second trip through the runtime's timer wheel.
        let earliest = if keep_alive {
            started + self.idle.min(self.header_read)
        } else {
            deadline
        };
        Box::pin(HeadWait {
            activity: Arc::clone(&self.activity),
            header_read: self.header_read,
            idle_until: keep_alive.then(|| started + self.idle),
            sleep: Box::pin(tokio::time::sleep_until(earliest.into())),
        })
    }
}

/// One wait for a request head ([`HeadTimer`]).
struct HeadWait {
    activity: Arc<ReadActivity>,
    header_read: Duration,
    /// On a kept-alive connection, when the wait ends if no byte of a head arrives
    /// (once one does: the header-read timeout from it).
    idle_until: Option<Instant>,
    sleep: Pin<Box<tokio::time::Sleep>>,
}

impl Future for HeadWait {
    type Output = ();

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        loop {
            ready!(self.sleep.as_mut().poll(cx));
            let Some(idle_until) = self.idle_until else {
                return Poll::Ready(());
            };
            let deadline: tokio::time::Instant = match self.activity.first_read() {
                Some(first_read) => first_read + self.header_read,
                None => idle_until,
            }
            .into();
            // The timer's own clock (which tests may pause), not the wall's.
            if tokio::time::Instant::now() >= deadline {
                return Poll::Ready(());
            }
            self.sleep.as_mut().reset(deadline);
        }
    }
}

impl hyper::rt::Sleep for HeadWait {}
