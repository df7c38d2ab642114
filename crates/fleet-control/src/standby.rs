//! What a control plane in a pod (`up --pod-network`) serves on its admin port while it
//! stands by for the lease: `GET /healthz` says the process is healthy (the pod's probes:
//! a standby is a ready replica of the Deployment, so a rolling update completes), and
//! everything else is a 503 naming the leader. Locally a standby serves nothing.
//!
//! The standby serves on a duplicate of the admin listener's socket: when it leads, the
//! standby server stops and the real admin server takes the socket itself over — the same
//! port (also one the OS picked), no window in which another process could bind it, and a
//! connection that arrives in between waits in the socket's backlog.

use crate::api::ApiFailure;
use axum::http::StatusCode;
use axum::response::IntoResponse as _;
use axum::routing::get;
use tokio::net::TcpListener;
use tokio::sync::watch;

/// The standby's admin server, until it is [`stopped`](Self::stop).
#[derive(Debug)]
pub(crate) struct StandbyServer {
    leader: watch::Sender<String>,
    stop: watch::Sender<bool>,
    server: tokio::task::JoinHandle<()>,
}

impl StandbyServer {
    /// Serves on a duplicate of `listener`'s socket, which stays the caller's.
    ///
    /// # Errors
    /// The socket cannot be duplicated (out of file descriptors).
    pub(crate) fn start(listener: TcpListener) -> std::io::Result<(Self, TcpListener)> {
        let kept = listener.into_std()?;
        let served = TcpListener::from_std(kept.try_clone()?)?;
        let kept = TcpListener::from_std(kept)?;
        let (leader, leads) = watch::channel(String::new());
        let (stop, mut stopped) = watch::channel(false);
        let router = axum::Router::new()
            .route("/healthz", get(|| async { "standing by\n" }))
            .fallback(move || {
                // Empty between a lease's release and the next look.
                let error = match leads.borrow().as_str() {
                    "" => "this control plane stands by for the lease".to_owned(),
                    leader => format!("this control plane stands by; {leader} leads"),
                };
                async move { ApiFailure(StatusCode::SERVICE_UNAVAILABLE, error).into_response() }
            });
        let server = tokio::spawn(async move {
            let stop = async move {
                let _ = stopped.wait_for(|s| *s).await;
            };
            if let Err(e) = axum::serve(served, router)
                .with_graceful_shutdown(stop)
                .await
            {
                tracing::error!("the standby's admin listener stopped: {e}");
            }
        });
        Ok((
            StandbyServer {
                leader,
                stop,
                server,
            },
            kept,
        ))
    }

    /// Who leads now (the lease's holder), as the 503s say.
    pub(crate) fn leader_is(&self, holder: &str) {
        self.leader.send_if_modified(|leader| {
            let changed = leader != holder;
            if changed {
                holder.clone_into(leader);
            }
            changed
        });
    }

    /// Stops serving and waits until the server has let go of its copy of the socket
    /// (answers in flight finished), so that from then on only the caller's accepts.
    pub(crate) async fn stop(self) {
        self.stop.send_replace(true);
        let _ = self.server.await;
    }
}
