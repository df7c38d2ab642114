//! `pods/portforward`: the WebSocket a client outside the cluster reaches a pod's port
//! over, connected to a real server the test runs.
//!
//! The stream is the API server's port-forward protocol (`v4.channel.k8s.io`, or
//! `portforward.k8s.io`; there is no v5 for port-forward): per requested port a data
//! channel (`2i`) and an error channel (`2i + 1`), binary messages whose first byte is the
//! channel. The server opens each channel with a frame of the port, 2 bytes little-endian;
//! then data frames carry the connection's bytes both ways, and a text on the error
//! channel says the forward failed (the kubelet could not connect to the port).
//!
//! The fake's pod network is loopback: a pod's port `P` is `127.0.0.1:P`, whatever IP the
//! pod reports — so a test can report addresses nothing routes to (192.0.2.0/24) and still
//! reach its server through the forward. Simpler than a kubelet: one port per connection,
//! and the connection to the port is made when the WebSocket opens.

use super::websocket::{Socket, Upgrade};
use super::{AppState, Key, Params, Shared, status};
use axum::extract::{Path, Request};
use axum::http::StatusCode;
use axum::response::Response;
use futures::{SinkExt as _, StreamExt as _};
use std::net::{Ipv4Addr, SocketAddr};
use std::sync::Arc;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::Message;

/// The protocols the fake speaks, preferred first (kube-client offers v5 and v4).
const PROTOCOLS: [&str; 2] = ["v4.channel.k8s.io", "portforward.k8s.io"];

/// The channels of the one port forwarded.
const DATA: u8 = 0;
const ERROR: u8 = 1;

/// `GET /api/v1/namespaces/{ns}/pods/{name}/portforward?ports=P`, upgraded to a WebSocket.
pub(super) async fn forward_pod(
    state: AppState,
    Path((ns, name)): Path<(String, String)>,
    query: Params,
    mut request: Request,
) -> Response {
    let bad = |message: &str| status(StatusCode::BAD_REQUEST, "BadRequest", message);
    let upgrade = match Upgrade::from_request(&mut request, &PROTOCOLS, "pods/portforward") {
        Ok(upgrade) => upgrade,
        Err(refused) => return *refused,
    };
    let asked = query.get("ports").map(String::as_str).unwrap_or_default();
    let ports: Vec<u16> = asked
        .split(',')
        .filter_map(|p| p.trim().parse().ok())
        .collect();
    let port = match ports[..] {
        [port] if port > 0 => port,
        [] => {
            return bad(&format!(
                "invalid port list `{asked}`: name a port with `ports=`"
            ));
        }
        _ => return bad("the fake forwards one port per connection"),
    };
    let key: Key = (ns, name.clone());
    {
        let mut objects = state.objects.lock();
        let Some(pod) = objects.pods.get(&key) else {
            return super::not_found("pods", &name);
        };
        if pod.object.pointer("/status/phase").and_then(|p| p.as_str()) != Some("Running") {
            return bad(&format!("pod {name} is not running"));
        }
        objects.forwards.push((name, port));
    }
    let shared = state.0.clone();
    upgrade.accept(move |socket| session(shared, key, port, socket))
}

/// One forwarded connection: the pod's port (loopback's) and the client's data channel
/// carried both ways until either side ends or the pod is deleted.
async fn session(shared: Arc<Shared>, key: Key, port: u16, mut socket: Socket) {
    let [low, high] = port.to_le_bytes();
    for channel in [DATA, ERROR] {
        if socket
            .send(Message::binary(vec![channel, low, high]))
            .await
            .is_err()
        {
            return;
        }
    }
    let target = SocketAddr::from((Ipv4Addr::LOCALHOST, port));
    let pod_port = match TcpStream::connect(target).await {
        Ok(stream) => stream,
        Err(e) => {
            // What a kubelet reports when nothing listens on the pod's port.
            let mut message = vec![ERROR];
            message.extend_from_slice(
                format!(
                    "error forwarding port {port} to pod {}, uid : failed to connect to {target}: {e}",
                    key.1
                )
                .as_bytes(),
            );
            let _ = socket.send(Message::binary(message)).await;
            let _ = socket.close(None).await;
            return;
        }
    };
    let _ = pod_port.set_nodelay(true);
    let (mut from_pod, mut to_pod) = pod_port.into_split();
    let mut changes = shared.changed.subscribe();
    let mut buffer = vec![0u8; 16 * 1024];
    loop {
        tokio::select! {
            message = socket.next() => match message {
                Some(Ok(Message::Binary(data))) if data.first() == Some(&DATA) => {
                    if to_pod.write_all(&data[1..]).await.is_err() {
                        break;
                    }
                }
                Some(Ok(Message::Close(_)) | Err(_)) | None => break,
                Some(Ok(_)) => {}
            },
            read = from_pod.read(&mut buffer) => match read {
                Ok(0) | Err(_) => break,
                Ok(n) => {
                    let mut frame = Vec::with_capacity(n + 1);
                    frame.push(DATA);
                    frame.extend_from_slice(&buffer[..n]);
                    if socket.send(Message::binary(frame)).await.is_err() {
                        return;
                    }
                }
            },
            // A deleted pod's forwards end with it.
            changed = changes.changed() => {
                if changed.is_err() || !shared.objects.lock().pods.contains_key(&key) {
                    break;
                }
            }
        }
    }
    let _ = socket.close(None).await;
}
