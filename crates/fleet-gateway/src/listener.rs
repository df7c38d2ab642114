//! The gateway's listener: accepts TCP connections and hands each to a worker thread,
//! whose HTTP/1.1 server side (`server.rs`) serves it.
//!
//! Owns:
//! - the accept loop (TCP_NODELAY on every connection);
//! - the TLS handshake when the gateway serves TLS, bounded by the header-read timeout;
//! - graceful shutdown: no new connections, requests in flight finish.
//!
//! Does not own: HTTP and the connection timeouts, enforced before a request reaches
//! admission (`server.rs`); what a request means (`data_plane.rs`); TLS settings
//! (`tls.rs`).

use std::convert::Infallible;
use std::future::Future;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use tokio::net::TcpListener;
use tokio::sync::{mpsc, watch};
use tokio_rustls::TlsAcceptor;

use crate::data_plane::DataPlane;
use crate::server::{self, ConnectionTimeouts};

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
        let data_plane = data_plane.clone();
        // The connection moves to a worker thread's own reactor.
        let tcp = match tcp.into_std() {
            Ok(tcp) => tcp,
            Err(error) => {
                tracing::debug!(%peer, %error, "cannot hand the connection to a worker");
                continue;
            }
        };
        let open = open.clone();
        let mut stop = stop.clone();
        let stopping = async move {
            let _ = stop.wait_for(|stop| *stop).await;
        };
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
                None => server::serve(tcp, &data_plane, peer, timeouts, stopping).await,
                Some(tls) => {
                    // A client that stalls its handshake is a slow client too.
                    match tokio::time::timeout(timeouts.header_read, tls.accept(tcp)).await {
                        Ok(Ok(stream)) => {
                            server::serve(stream, &data_plane, peer, timeouts, stopping).await;
                        }
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
/// hand-overs within a request (the upstream's answer, the timers) stay on one thread.
/// On the multi-threaded runtime of the control plane they did not: its workers woke
/// and stole from each other, and a relayed call cost
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
