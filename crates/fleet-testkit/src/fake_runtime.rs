//! [`FakeRuntime`]: a fake [`Runtime`] for the engine's unit tests. Its instances are
//! in-process tasks, each serving a tiny MCP server over an in-memory duplex attachment, so
//! an engine test runs no process, opens no socket and — on a paused tokio clock — waits
//! for no real time.
//!
//! What each server does is scripted by its name, or by its name and revision
//! ([`FakeScript`]): fail to start, never
//! answer, answer only after a delay, exit after a while, crash on its Nth check. Every
//! start, stop and answered check is recorded in order ([`FakeRecord`]) so a test can
//! assert on waves and rollouts.
//!
//! An instance that exits is restarted as its restart policy says (backoff without jitter,
//! crash-looping after `give_up_after` failures), like the process runtime. It keeps no
//! logs and discovers nothing.

use fleet_runtime::{
    Discovered, Instance, InstanceHandle, InstanceId, InstanceSpec, InstanceState, InstanceStatus,
    Lifecycle, Reach, ReapOutcome, Reaped, Runtime, RuntimeError, StartError, StdioAttachment,
};
use fleet_spec::model::RestartPolicyKind;
use futures::StreamExt as _;
use futures::stream::BoxStream;
use parking_lot::Mutex;
use serde_json::{Value, json};
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;
use tokio::io::{AsyncBufReadExt as _, AsyncWriteExt as _, BufReader, DuplexStream};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

/// The protocol revision the fake server answers `initialize` with: a legacy one.
const PROTOCOL_VERSION: &str = "2025-06-18";

/// The exit code of a scripted crash or exit.
pub const FAKE_CRASH_EXIT_CODE: i32 = 3;

/// How the instances of one server behave. The default serves at once and forever.
#[derive(Debug, Clone, Default)]
pub struct FakeScript {
    fail_to_start: bool,
    never_ready: bool,
    answer_after: Option<Duration>,
    exit_after: Option<Duration>,
    crash_on_check: Option<u32>,
    stop_takes: Option<Duration>,
}

impl FakeScript {
    /// Serves at once and forever.
    pub fn new() -> Self {
        FakeScript::default()
    }

    /// [`start`](Runtime::start) fails, as for a program that does not exist.
    pub fn fail_to_start(mut self) -> Self {
        self.fail_to_start = true;
        self
    }

    /// Reads every request and answers none: the handshake times out.
    pub fn never_ready(mut self) -> Self {
        self.never_ready = true;
        self
    }

    /// Reads nothing until `delay` has passed (a slow start-up), then serves.
    pub fn answer_after(mut self, delay: Duration) -> Self {
        self.answer_after = Some(delay);
        self
    }

    /// Exits (code [`FAKE_CRASH_EXIT_CODE`]) `after` it started.
    pub fn exit_after(mut self, after: Duration) -> Self {
        self.exit_after = Some(after);
        self
    }

    /// Exits (code [`FAKE_CRASH_EXIT_CODE`]) on its `nth` check (`tools/list`), counted
    /// from 1 for each start, instead of answering it.
    pub fn crash_on_check(mut self, nth: u32) -> Self {
        self.crash_on_check = Some(nth);
        self
    }

    /// A [`stop`](Runtime::stop) takes `delay` before the instance is gone (a server that
    /// finishes its work, or ignores its closed stdin until killed).
    pub fn stop_takes(mut self, delay: Duration) -> Self {
        self.stop_takes = Some(delay);
        self
    }
}

/// What the fake runtime saw happen, in order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FakeRecord {
    /// An instance was started (not a restart).
    Started(InstanceId),
    /// A leftover was taken over instead of started ([`FakeRuntime::leave_running`]).
    Adopted(InstanceId),
    /// An instance was stopped: it runs no more.
    Stopped(InstanceId),
    /// An instance answered a check (`tools/list`).
    Checked(InstanceId),
}

/// An in-memory [`Runtime`]; cheap to clone, every clone is the same runtime (give one to
/// the engine, keep one to script and inspect).
#[derive(Clone, Default)]
pub struct FakeRuntime {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for FakeRuntime {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FakeRuntime")
            .field("instances", &self.inner.instances.lock().len())
            .finish_non_exhaustive()
    }
}

#[derive(Default)]
struct Inner {
    /// By server, and revision (`None`: every revision not scripted on its own).
    scripts: Mutex<HashMap<(String, Option<u64>), FakeScript>>,
    instances: Mutex<BTreeMap<InstanceId, Running>>,
    records: Mutex<Vec<FakeRecord>>,
    /// Instances "a killed control plane left running" that `adopt` can take over.
    leftovers: Mutex<BTreeSet<InstanceId>>,
}

/// One instance the fake supervises.
struct Running {
    spec: InstanceSpec,
    events: mpsc::UnboundedSender<Lifecycle>,
    /// The task serving the current process; finished once it exited.
    task: JoinHandle<()>,
    /// Set while the task waits out a backoff: a start is already coming, so a
    /// [`restart`](Runtime::restart) then does nothing.
    backing_off: Arc<AtomicBool>,
    restarts: u32,
}

impl FakeRuntime {
    /// A runtime whose servers all serve at once and forever until scripted otherwise.
    pub fn new() -> Self {
        FakeRuntime::default()
    }

    /// Scripts every instance of `server` started from now on.
    pub fn script(&self, server: &str, script: FakeScript) {
        self.inner
            .scripts
            .lock()
            .insert((server.to_owned(), None), script);
    }

    /// Scripts every instance of `server`'s `revision` started from now on, whatever
    /// [`script`](Self::script) says for the server: a broken new revision beside an old
    /// one that still serves, and starts again on a rollback.
    pub fn script_revision(&self, server: &str, revision: u64, script: FakeScript) {
        self.inner
            .scripts
            .lock()
            .insert((server.to_owned(), Some(revision)), script);
    }

    /// Everything recorded so far, in order.
    pub fn records(&self) -> Vec<FakeRecord> {
        self.inner.records.lock().clone()
    }

    /// The most instances whose id starts with `prefix` (`api-` for server `api`) that ran
    /// at the same time, by the recorded starts and stops.
    pub fn most_running_at_once(&self, prefix: &str) -> usize {
        let (mut running, mut most) = (0usize, 0usize);
        for record in self.inner.records.lock().iter() {
            match record {
                FakeRecord::Started(id) if id.as_str().starts_with(prefix) => {
                    running += 1;
                    most = most.max(running);
                }
                FakeRecord::Stopped(id) if id.as_str().starts_with(prefix) => {
                    running = running.saturating_sub(1);
                }
                _ => {}
            }
        }
        most
    }

    /// Pretends that an earlier control plane left instance `id` running: `discover` finds
    /// it (adoptable) and `adopt` takes it over, once.
    pub fn leave_running(&self, id: &str) {
        self.inner.leftovers.lock().insert(InstanceId::from(id));
    }

    fn record(&self, record: FakeRecord) {
        self.inner.records.lock().push(record);
    }

    fn script_of(&self, spec: &InstanceSpec) -> FakeScript {
        let scripts = self.inner.scripts.lock();
        let server = spec.server.clone();
        scripts
            .get(&(server.clone(), Some(spec.revision)))
            .or_else(|| scripts.get(&(server, None)))
            .cloned()
            .unwrap_or_default()
    }

    /// Starts `spec`'s instance: its first process, and the task that serves it and —
    /// as its restart policy says — the processes after it.
    fn spawn(
        &self,
        spec: &InstanceSpec,
        events: mpsc::UnboundedSender<Lifecycle>,
        backing_off: Arc<AtomicBool>,
    ) -> JoinHandle<()> {
        let first = attach(&events);
        let runtime = self.clone();
        let spec = spec.clone();
        tokio::spawn(async move {
            runtime.supervise(spec, events, backing_off, first).await;
        })
    }

    /// Serves one process after another: after an exit, the restart policy decides
    /// whether another follows (after its backoff — without jitter, so tests are
    /// deterministic) or the instance is crash-looping.
    async fn supervise(
        &self,
        spec: InstanceSpec,
        events: mpsc::UnboundedSender<Lifecycle>,
        backing_off: Arc<AtomicBool>,
        mut io: DuplexStream,
    ) {
        let script = self.script_of(&spec);
        let restart = &spec.restart;
        let mut failures = 0u32;
        loop {
            let started = tokio::time::Instant::now();
            let code = self.serve(&spec.id, &script, io).await;
            let ran_for = started.elapsed();
            let _ = events.send(Lifecycle::Exited {
                code: Some(code),
                signal: None,
                ran_for,
                out_of_memory: fleet_runtime::OutOfMemory::No,
                last_output: Vec::new(),
            });
            let again = match restart.policy {
                RestartPolicyKind::Always => true,
                RestartPolicyKind::OnFailure => code != 0,
                RestartPolicyKind::Never => false,
            };
            if !again {
                return;
            }
            if ran_for >= restart.stable_after {
                failures = 0;
            }
            failures += 1;
            if failures >= restart.give_up_after {
                let _ = events.send(Lifecycle::CrashLooping { failures });
                return;
            }
            let grown = restart
                .backoff_initial
                .mul_f64(restart.backoff_multiplier.powi(failures as i32 - 1));
            let delay = grown.min(restart.backoff_max);
            let _ = events.send(Lifecycle::BackingOff {
                attempt: failures,
                delay,
            });
            backing_off.store(true, Ordering::SeqCst);
            tokio::time::sleep(delay).await;
            backing_off.store(false, Ordering::SeqCst);
            io = attach(&events);
        }
    }

    /// Serves MCP on `io` as `script` says; returns the exit code.
    async fn serve(&self, id: &InstanceId, script: &FakeScript, io: DuplexStream) -> i32 {
        let exit = async {
            match script.exit_after {
                Some(after) => tokio::time::sleep(after).await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            () = exit => FAKE_CRASH_EXIT_CODE,
            code = self.answer(id, script, io) => code,
        }
    }

    /// Answers requests line by line until stdin closes (exit 0) or a scripted crash.
    async fn answer(&self, id: &InstanceId, script: &FakeScript, io: DuplexStream) -> i32 {
        if let Some(delay) = script.answer_after {
            tokio::time::sleep(delay).await;
        }
        let (reader, mut writer) = tokio::io::split(io);
        let mut lines = BufReader::new(reader).lines();
        let mut checks = 0u32;
        while let Ok(Some(line)) = lines.next_line().await {
            if script.never_ready {
                continue;
            }
            let Ok(message) = serde_json::from_str::<Value>(&line) else {
                continue;
            };
            // Notifications and the answers to our own requests need no reply.
            let (Some(method), Some(request)) = (
                message.get("method").and_then(Value::as_str),
                message.get("id"),
            ) else {
                continue;
            };
            if method == "tools/list" {
                checks += 1;
                if script.crash_on_check == Some(checks) {
                    return FAKE_CRASH_EXIT_CODE;
                }
            }
            let reply = match reply_to(method, message.get("params")) {
                Ok(result) => json!({ "jsonrpc": "2.0", "id": request, "result": result }),
                Err((code, text)) => json!({
                    "jsonrpc": "2.0",
                    "id": request,
                    "error": { "code": code, "message": text },
                }),
            };
            let mut out = reply.to_string();
            out.push('\n');
            if writer.write_all(out.as_bytes()).await.is_err() {
                break;
            }
            if method == "tools/list" {
                self.record(FakeRecord::Checked(id.clone()));
            }
        }
        0
    }

    /// Ends the serving task of `running`, saying so if it still ran.
    async fn kill(running: Running) -> (InstanceSpec, mpsc::UnboundedSender<Lifecycle>, u32) {
        running.task.abort();
        if let Err(e) = running.task.await
            && e.is_cancelled()
        {
            let _ = running.events.send(Lifecycle::Exited {
                code: None,
                signal: Some(9),
                ran_for: Duration::ZERO,
                out_of_memory: fleet_runtime::OutOfMemory::No,
                last_output: Vec::new(),
            });
        }
        (running.spec, running.events, running.restarts)
    }
}

/// A new process's attachment: says it runs, with the attachment the engine talks to it
/// over, and returns the server's end. Sent before the process serves, so that its
/// `Exited` always follows its `Running`.
fn attach(events: &mpsc::UnboundedSender<Lifecycle>) -> DuplexStream {
    let (engine_end, server_end) = tokio::io::duplex(64 * 1024);
    let (stdout, stdin) = tokio::io::split(engine_end);
    let _ = events.send(Lifecycle::Running {
        reach: Reach::Stdio(StdioAttachment::new(stdin, stdout)),
        // No process runs it, and a handle is a process's: pid 0 names none.
        handle: InstanceHandle::Process { pid: 0 },
    });
    server_end
}

/// The tiny MCP server's answer to `method`: a result, or a JSON-RPC error.
fn reply_to(method: &str, params: Option<&Value>) -> Result<Value, (i64, String)> {
    match method {
        "initialize" => Ok(json!({
            "protocolVersion": PROTOCOL_VERSION,
            "capabilities": { "tools": {} },
            "serverInfo": { "name": "fake-mcp-server", "version": "1.0.0" },
        })),
        "ping" => Ok(json!({})),
        "tools/list" => Ok(json!({
            "tools": [{
                "name": "echo",
                "description": "Returns its text.",
                "inputSchema": {
                    "type": "object",
                    "properties": { "text": { "type": "string" } },
                },
            }],
        })),
        "tools/call" => {
            let params = params.cloned().unwrap_or_default();
            match params.get("name").and_then(Value::as_str) {
                Some("echo") => {
                    let text = params
                        .pointer("/arguments/text")
                        .and_then(Value::as_str)
                        .unwrap_or_default();
                    Ok(json!({ "content": [{ "type": "text", "text": text }] }))
                }
                other => Err((-32602, format!("unknown tool {other:?}"))),
            }
        }
        // `server/discover` among them: `era: auto` falls back to `initialize`.
        _ => Err((-32601, format!("method not found: {method}"))),
    }
}

impl FakeRuntime {
    /// Supervises `spec` from now on; `record` says how it came to run.
    fn take_on(&self, spec: InstanceSpec, record: FakeRecord) -> Result<Instance, StartError> {
        let mut instances = self.inner.instances.lock();
        if instances.contains_key(&spec.id) {
            return Err(StartError::AlreadyRunning { id: spec.id });
        }
        let (events, receiver) = mpsc::unbounded_channel();
        let backing_off = Arc::new(AtomicBool::new(false));
        let task = self.spawn(&spec, events.clone(), backing_off.clone());
        let id = spec.id.clone();
        self.record(record);
        instances.insert(
            id.clone(),
            Running {
                spec,
                events,
                task,
                backing_off,
                restarts: 0,
            },
        );
        Ok(Instance {
            id,
            events: receiver,
        })
    }
}

impl Runtime for FakeRuntime {
    async fn start(&self, spec: InstanceSpec) -> Result<Instance, StartError> {
        if self.script_of(&spec).fail_to_start {
            return Err(StartError::Spawn {
                program: format!("{:?}", spec.launch),
                source: std::io::Error::other("the fake runtime was scripted to fail this start"),
            });
        }
        let id = spec.id.clone();
        self.take_on(spec, FakeRecord::Started(id))
    }

    async fn stop(&self, id: &InstanceId) -> Result<(), RuntimeError> {
        let Some(running) = self.inner.instances.lock().remove(id) else {
            return Ok(());
        };
        if let Some(delay) = self.script_of(&running.spec).stop_takes {
            tokio::time::sleep(delay).await;
        }
        let (_, events, _) = FakeRuntime::kill(running).await;
        self.record(FakeRecord::Stopped(id.clone()));
        let _ = events.send(Lifecycle::Stopped);
        Ok(())
    }

    async fn restart(&self, id: &InstanceId) -> Result<(), RuntimeError> {
        let running = {
            let mut instances = self.inner.instances.lock();
            let Some(running) = instances.remove(id) else {
                return Err(RuntimeError::NotFound { id: id.clone() });
            };
            // The contract: a start is already coming; killing the task now would start
            // one at once and cut short the backoff a crash loop relies on.
            if running.backing_off.load(Ordering::SeqCst) && !running.task.is_finished() {
                instances.insert(id.clone(), running);
                return Ok(());
            }
            running
        };
        let (spec, events, restarts) = FakeRuntime::kill(running).await;
        let backing_off = Arc::new(AtomicBool::new(false));
        let task = self.spawn(&spec, events.clone(), backing_off.clone());
        self.inner.instances.lock().insert(
            id.clone(),
            Running {
                spec,
                events,
                task,
                backing_off,
                restarts: restarts + 1,
            },
        );
        Ok(())
    }

    fn statuses(&self) -> Vec<InstanceStatus> {
        self.inner
            .instances
            .lock()
            .values()
            .map(|running| InstanceStatus {
                id: running.spec.id.clone(),
                server: running.spec.server.clone(),
                revision: running.spec.revision,
                handle: None,
                state: if running.task.is_finished() {
                    InstanceState::Exited
                } else {
                    InstanceState::Running
                },
                restarts: running.restarts,
                last_exit: None,
                started_at: None,
            })
            .collect()
    }

    async fn discard_logs(&self, _id: &InstanceId) {}

    async fn discover(&self) -> Vec<Discovered> {
        self.inner
            .leftovers
            .lock()
            .iter()
            .map(|id| Discovered {
                id: id.clone(),
                server: id.as_str().split('-').next().unwrap_or_default().to_owned(),
                revision: 1,
                handle: InstanceHandle::Process { pid: 0 },
                adoptable: true,
            })
            .collect()
    }

    async fn adopt(&self, spec: InstanceSpec) -> Result<Instance, StartError> {
        if !self.inner.leftovers.lock().remove(&spec.id) {
            return Err(StartError::NotAdoptable {
                id: spec.id,
                why: "the fake runtime has no such leftover".to_owned(),
            });
        }
        let id = spec.id.clone();
        self.take_on(spec, FakeRecord::Adopted(id))
    }

    /// Forgets the leftovers not spared: they "stop".
    async fn reap_leftovers(&self, spare: &std::collections::HashSet<InstanceId>) -> Vec<Reaped> {
        let mut leftovers = self.inner.leftovers.lock();
        let reaped = leftovers
            .iter()
            .filter(|id| !spare.contains(*id))
            .map(|id| Reaped {
                record: format!("fake leftover {id}"),
                id: Some(id.clone()),
                outcome: ReapOutcome::Gone,
            })
            .collect();
        leftovers.retain(|id| spare.contains(id));
        reaped
    }

    fn logs(&self, _id: &InstanceId, _lines: usize, _follow: bool) -> BoxStream<'static, String> {
        futures::stream::empty().boxed()
    }
}
