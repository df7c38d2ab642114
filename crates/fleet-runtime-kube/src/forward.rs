//! A local port for an http instance's pod when the control plane runs outside the
//! cluster: every connection accepted on it is carried to the pod's container port over
//! the API server's `pods/portforward` (a WebSocket per connection, as `kubectl
//! port-forward` opens a stream per connection).

use std::net::{Ipv4Addr, SocketAddr};
use std::time::Duration;

use k8s_openapi::api::core::v1::Pod;
use kube::api::Api;
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinSet;

/// How long the listener waits after a failed accept.
const ACCEPT_PAUSE: Duration = Duration::from_millis(100);

/// The listener of one pod's forward; dropping it closes the listener and ends every
/// connection carried through it.
pub(crate) struct Forwarder {
    /// Where the instance is reached: a port of 127.0.0.1.
    pub(crate) address: SocketAddr,
    task: tokio::task::AbortHandle,
}

impl Drop for Forwarder {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Listens on a free port of 127.0.0.1 and forwards what connects to `port` of pod `pod`.
pub(crate) async fn open(pods: Api<Pod>, pod: String, port: u16) -> std::io::Result<Forwarder> {
    let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).await?;
    let address = listener.local_addr()?;
    let task = tokio::spawn(async move {
        // Owned by this task: aborting it (the forwarder dropped) aborts every connection.
        let mut connections = JoinSet::new();
        loop {
            tokio::select! {
                accepted = listener.accept() => match accepted {
                    Ok((client, _)) => {
                        // MCP messages are small writes answered at once: no Nagle delay.
                        if let Err(e) = client.set_nodelay(true) {
                            tracing::debug!(error = %e, "cannot set TCP_NODELAY on a forwarded connection");
                        }
                        connections.spawn(carry(pods.clone(), pod.clone(), port, client));
                    }
                    // A connection that failed before it was accepted, or no descriptors
                    // left: the listener itself stays usable. A pause, as hyper's servers
                    // take, so that running out of descriptors is not a busy loop.
                    Err(e) => {
                        tracing::warn!(%pod, port, error = %e, "cannot accept a connection to forward");
                        tokio::time::sleep(ACCEPT_PAUSE).await;
                    }
                },
                Some(_) = connections.join_next() => {}
            }
        }
    });
    Ok(Forwarder {
        address,
        task: task.abort_handle(),
    })
}

/// Carries one client connection to the pod until either side ends it. A forward the API
/// server refuses or reports failed (nothing listens on the pod's port, the pod is gone)
/// is logged and the client's connection closed: the client sees a broken connection, as
/// it would connecting to the pod itself.
async fn carry(pods: Api<Pod>, pod: String, port: u16, mut client: TcpStream) {
    let mut forward = match pods.portforward(&pod, &[port]).await {
        Ok(forward) => forward,
        Err(e) => {
            tracing::warn!(%pod, port, error = %e, "cannot open a port-forward to the pod; closing the client's connection");
            return;
        }
    };
    let (Some(mut upstream), Some(failed)) = (forward.take_stream(port), forward.take_error(port))
    else {
        return;
    };
    tokio::select! {
        copied = tokio::io::copy_bidirectional(&mut client, &mut upstream) => {
            if let Err(e) = copied {
                tracing::debug!(%pod, port, error = %e, "a forwarded connection broke");
            }
        }
        Some(message) = failed => {
            tracing::warn!(%pod, port, error = %message, "the API server could not forward to the pod; closing the client's connection");
        }
    }
    forward.abort();
}
