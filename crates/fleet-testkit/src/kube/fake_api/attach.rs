//! `pods/attach`: the WebSocket a client attaches to a container's stdio over, and the
//! real process behind it that plays the container.
//!
//! The stream is the API server's remote-command protocol (`v5.channel.k8s.io`, else
//! `v4.channel.k8s.io`): binary messages whose first byte is the channel — 0 stdin, 1
//! stdout, 2 stderr, 3 the closing `Status` — and, in v5 only, `[255, 0]` for "stdin is
//! at its end". A pod's process ([`FakeApi::attach_runs`](super::FakeApi::attach_runs))
//! starts at the first attach and lives as long as its container: an attach that ends
//! leaves it running (`stdinOnce: false`), the next one talks to the same process. When it
//! exits, the fake kubelet records the termination and restarts the container
//! (`restartCount`, `lastState.terminated`) and every attach to it ends; the next attach
//! starts a new process. A deleted pod's process is killed.
//!
//! Simpler than a kubelet: one attach at a time per pod (a new one takes over the
//! output), and a restarted container's process starts at the next attach rather than at
//! once.

use super::websocket::Upgrade;
use super::{AppState, Key, Params, Shared, status};
use axum::body::Bytes;
use axum::extract::{Path, Request};
use axum::http::StatusCode;
use axum::response::Response;
use futures::{SinkExt as _, StreamExt as _};
use serde_json::{Value, json};
use std::path::PathBuf;
use std::process::Stdio;
use std::sync::Arc;
use tokio::io::{AsyncRead, AsyncReadExt as _, AsyncWriteExt as _};
use tokio::sync::mpsc;
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::Message;

const STDIN: u8 = 0;
const STDOUT: u8 = 1;
const STDERR: u8 = 2;
const STATUS: u8 = 3;
/// v5: the stream named by the next byte has reached its end.
const CLOSE: u8 = 255;

/// The protocols the fake speaks, preferred first.
const PROTOCOLS: [&str; 2] = ["v5.channel.k8s.io", "v4.channel.k8s.io"];

/// What every pod's container runs when attached to.
#[derive(Debug, Clone)]
pub(super) struct AttachCommand {
    pub(super) program: PathBuf,
    pub(super) args: Vec<String>,
}

/// A pod's running process.
pub(super) struct PodProcess {
    pub(super) pid: u32,
    /// Bytes for its stdin.
    input: mpsc::UnboundedSender<Bytes>,
    /// The attach its output goes to, with the channels it asked for; replaced by a newer
    /// attach, dropped (ending that attach) when the process exits.
    attacher: Option<Attacher>,
    /// Kills the process (its child is `kill_on_drop`) when the fake is dropped.
    pub(super) task: tokio::task::AbortHandle,
}

struct Attacher {
    /// Which attach this is, so that an ending attach unregisters only itself.
    number: u64,
    stdout: bool,
    stderr: bool,
    frames: mpsc::UnboundedSender<(u8, Bytes)>,
}

/// `GET /api/v1/namespaces/{ns}/pods/{name}/attach`, upgraded to a WebSocket.
pub(super) async fn attach_pod(
    state: AppState,
    Path((ns, name)): Path<(String, String)>,
    query: Params,
    mut request: Request,
) -> Response {
    let flag = |key: &str| query.get(key).is_some_and(|v| v == "true" || v == "1");
    let (stdin, stdout, stderr) = (flag("stdin"), flag("stdout"), flag("stderr"));
    let upgrade = match Upgrade::from_request(&mut request, &PROTOCOLS, "pods/attach") {
        Ok(upgrade) => upgrade,
        Err(refused) => return *refused,
    };
    let k: Key = (ns, name.clone());
    let number = {
        let mut objects = state.objects.lock();
        let Some(pod) = objects.pods.get(&k) else {
            return super::not_found("pods", &name);
        };
        let container = pod.object.pointer("/spec/containers/0").cloned();
        let container_name = (container.as_ref())
            .and_then(|c| c["name"].as_str())
            .unwrap_or("main")
            .to_owned();
        // The kubelet refuses stdin to a container that does not keep it open.
        if stdin && container.as_ref().and_then(|c| c["stdin"].as_bool()) != Some(true) {
            return status(
                StatusCode::BAD_REQUEST,
                "BadRequest",
                &format!(
                    "container {container_name} of pod {name} does not have stdin enabled (`stdin: true`)"
                ),
            );
        }
        let running = pod
            .object
            .pointer("/status/containerStatuses/0/state/running")
            .is_some();
        if !running {
            return status(
                StatusCode::BAD_REQUEST,
                "BadRequest",
                &format!("container {container_name} is not running"),
            );
        }
        if !objects.processes.contains_key(&k) {
            let Some(command) = objects.attach_command.clone() else {
                return status(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "InternalError",
                    "the fake runs no process in its pods: call FakeApi::attach_runs first",
                );
            };
            match spawn(&state.0, k.clone(), &command) {
                Ok(process) => {
                    objects.processes.insert(k.clone(), process);
                }
                Err(e) => {
                    return status(
                        StatusCode::INTERNAL_SERVER_ERROR,
                        "InternalError",
                        &format!("cannot start {}: {e}", command.program.display()),
                    );
                }
            }
        }
        objects.attaches += 1;
        objects.attaches
    };
    let (frames_tx, frames) = mpsc::unbounded_channel();
    let input = {
        let mut objects = state.objects.lock();
        let Some(process) = objects.processes.get_mut(&k) else {
            return status(
                StatusCode::BAD_REQUEST,
                "BadRequest",
                "the container exited while attaching",
            );
        };
        process.attacher = Some(Attacher {
            number,
            stdout,
            stderr,
            frames: frames_tx,
        });
        process.input.clone()
    };
    let shared = state.0.clone();
    upgrade.accept(move |socket| async move {
        session(socket, stdin.then_some(input), frames).await;
        let mut objects = shared.objects.lock();
        if let Some(process) = objects.processes.get_mut(&k)
            && process
                .attacher
                .as_ref()
                .is_some_and(|a| a.number == number)
        {
            process.attacher = None;
        }
    })
}

/// One attach: stdin frames to the process, its output to the client, until either side
/// ends. When the process exits (`frames` ends), the client gets a `Success` status, as
/// the kubelet sends when an attached container's streams end, and the close.
async fn session<S>(
    mut socket: WebSocketStream<S>,
    input: Option<mpsc::UnboundedSender<Bytes>>,
    mut frames: mpsc::UnboundedReceiver<(u8, Bytes)>,
) where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    let mut input = input;
    loop {
        tokio::select! {
            message = socket.next() => match message {
                Some(Ok(Message::Binary(data))) => match data.first() {
                    Some(&STDIN) => {
                        if let Some(input) = &input {
                            let _ = input.send(data.slice(1..));
                        }
                    }
                    // Detached stdin: with `stdinOnce: false` the container's stays open.
                    Some(&CLOSE) if data.get(1) == Some(&STDIN) => input = None,
                    _ => {}
                },
                Some(Ok(Message::Close(_)) | Err(_)) | None => return,
                Some(Ok(_)) => {}
            },
            frame = frames.recv() => match frame {
                Some((channel, data)) => {
                    let mut message = Vec::with_capacity(data.len() + 1);
                    message.push(channel);
                    message.extend_from_slice(&data);
                    if socket.send(Message::binary(message)).await.is_err() {
                        return;
                    }
                }
                None => {
                    let done = json!({ "metadata": {}, "status": "Success" }).to_string();
                    let mut message = vec![STATUS];
                    message.extend_from_slice(done.as_bytes());
                    let _ = socket.send(Message::binary(message)).await;
                    let _ = socket.close(None).await;
                    return;
                }
            },
        }
    }
}

/// Starts pod `key`'s process and the task that moves its bytes and watches it.
fn spawn(shared: &Arc<Shared>, key: Key, command: &AttachCommand) -> std::io::Result<PodProcess> {
    let mut child = tokio::process::Command::new(&command.program)
        .args(&command.args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()?;
    let pid = child.id().unwrap_or_default();
    let (input, mut input_rx) = mpsc::unbounded_channel::<Bytes>();
    let mut stdin = child.stdin.take();
    let mut stdout = child.stdout.take();
    let mut stderr = child.stderr.take();
    let shared = shared.clone();
    let task = tokio::spawn(async move {
        let mut changes = shared.changed.subscribe();
        let (mut out, mut err) = ([0u8; 16 * 1024], [0u8; 16 * 1024]);
        let exit = loop {
            tokio::select! {
                read = read_some(&mut stdout, &mut out) => match read {
                    Some(n) => forward(&shared, &key, STDOUT, &out[..n]),
                    None => stdout = None,
                },
                read = read_some(&mut stderr, &mut err) => match read {
                    Some(n) => {
                        forward(&shared, &key, STDERR, &err[..n]);
                        // The container's log has what it writes to stderr.
                        let text = String::from_utf8_lossy(&err[..n]).into_owned();
                        if let Some(pod) = shared.objects.lock().pods.get_mut(&key) {
                            pod.log.extend(text.lines().map(str::to_owned));
                        }
                        shared.changed.send_modify(|n| *n += 1);
                    }
                    None => stderr = None,
                },
                bytes = input_rx.recv() => match (bytes, stdin.as_mut()) {
                    (Some(bytes), Some(pipe)) => {
                        if pipe.write_all(&bytes).await.is_err() || pipe.flush().await.is_err() {
                            stdin = None;
                        }
                    }
                    (None, _) => stdin = None,
                    (Some(_), None) => {}
                },
                exited = child.wait() => {
                    // What it wrote last still reaches the attach.
                    if let Some(mut rest) = stdout.take() {
                        let mut tail = Vec::new();
                        let read = rest.read_to_end(&mut tail);
                        let _ = tokio::time::timeout(std::time::Duration::from_secs(1), read).await;
                        forward(&shared, &key, STDOUT, &tail);
                    }
                    break exited.ok();
                }
                changed = changes.changed() => {
                    let gone = changed.is_err() || !shared.objects.lock().pods.contains_key(&key);
                    if gone {
                        let _ = child.start_kill();
                    }
                }
            }
        };
        let code = exit.map_or(137, |status| {
            use std::os::unix::process::ExitStatusExt as _;
            status
                .code()
                .unwrap_or_else(|| 128 + status.signal().unwrap_or(9))
        });
        let mut objects = shared.objects.lock();
        // Dropping the entry drops the attacher's sender: its attach ends.
        objects.processes.remove(&key);
        let version = objects.resource_version + 1;
        if let Some(pod) = objects.pods.get_mut(&key) {
            let reason = if code == 0 { "Completed" } else { "Error" };
            let object = &mut pod.object;
            let restarts = super::restart_count(object) + 1;
            let last = super::terminated(code, reason, restarts);
            let ip = (object.pointer("/status/podIP"))
                .and_then(Value::as_str)
                .unwrap_or_default()
                .to_owned();
            object["status"] =
                super::running_status(ip, super::container_status(object, restarts, Some(last)));
            object["metadata"]["resourceVersion"] = version.to_string().into();
            objects.resource_version = version;
        }
        drop(objects);
        shared.changed.send_modify(|n| *n += 1);
    });
    Ok(PodProcess {
        pid,
        input,
        attacher: None,
        task: task.abort_handle(),
    })
}

/// Reads what `pipe` has, `None` at its end; never ready once it ended.
async fn read_some<R: AsyncRead + Unpin>(pipe: &mut Option<R>, buffer: &mut [u8]) -> Option<usize> {
    match pipe {
        Some(reader) => match reader.read(buffer).await {
            Ok(0) | Err(_) => None,
            Ok(n) => Some(n),
        },
        None => std::future::pending().await,
    }
}

/// Sends a chunk of output to the pod's attach, if one asked for that channel; output
/// nobody is attached to is lost, as a container's is.
fn forward(shared: &Shared, key: &Key, channel: u8, data: &[u8]) {
    let objects = shared.objects.lock();
    let Some(attacher) = objects.processes.get(key).and_then(|p| p.attacher.as_ref()) else {
        return;
    };
    let wanted = match channel {
        STDOUT => attacher.stdout,
        _ => attacher.stderr,
    };
    if wanted && !data.is_empty() {
        let _ = attacher
            .frames
            .send((channel, Bytes::copy_from_slice(data)));
    }
}
