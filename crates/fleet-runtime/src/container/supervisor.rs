//! One task per instance: runs its container, watches it exit, restarts it by the spec's
//! policy, stops and removes it.

use super::attach::{Attached, StreamTasks, attach};
use super::engine::{Engine, describe, is_not_found};
use super::secrets::SecretFiles;
use crate::error::StartError;
use crate::instance::{
    ExitInfo, InstanceHandle, InstanceIo, InstanceSpec, InstanceState, InstanceStatus, Launch,
    Lifecycle, OutOfMemory, Reach,
};
use crate::process::backoff::{Ending, FailureCount};
use crate::process::logs::{LogWriter, follow_log};
use crate::supervised::{self, Control, Next, Registration};
use bollard::query_parameters::{
    InspectContainerOptions, KillContainerOptions, RemoveContainerOptions, StartContainerOptions,
    StopContainerOptions,
};
use futures::StreamExt as _;
use parking_lot::Mutex;
use std::net::{Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::pin::{Pin, pin};
use std::sync::Arc;
use std::time::{Duration, SystemTime};
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;
use tokio::time::{Instant, timeout};

/// How long a container gets to be gone after the engine was told to kill it.
const KILL_WAIT: Duration = Duration::from_secs(10);

/// One run of the container: from `start` to its exit.
#[derive(Debug)]
pub(crate) struct Run {
    started: Instant,
    pub(crate) started_at: SystemTime,
    /// Handed over (once) by [`running`](Self::running).
    reach: Option<Reach>,
    tasks: StreamTasks,
}

/// What [`start_run`] needs besides the spec.
#[derive(Debug, Clone, Copy)]
pub(crate) struct RunContext<'a> {
    pub(crate) engine: &'a Engine,
    pub(crate) container: &'a str,
    pub(crate) log: &'a LogWriter,
    pub(crate) log_path: &'a Path,
    pub(crate) max_line: usize,
}

/// How many of its last lines a container that exits at start shows in the error.
const LAST_LINES: usize = 10;

/// Starts the container once more: attach (before start, so nothing is missed), start,
/// then find where it is reachable.
pub(crate) async fn start_run(spec: &InstanceSpec, cx: RunContext<'_>) -> Result<Run, StartError> {
    begin_run(spec, cx, Begin::Start).await
}

/// Takes over the run of a container an earlier control plane started: attach to its
/// output (from now on) and find where it is reachable. `since` is when it started.
pub(crate) async fn adopt_run(
    spec: &InstanceSpec,
    cx: RunContext<'_>,
    since: SystemTime,
) -> Result<Run, StartError> {
    begin_run(spec, cx, Begin::Adopt { since }).await
}

/// How a run begins: the runtime starts the container, or takes over one that runs.
#[derive(Debug, Clone, Copy)]
enum Begin {
    Start,
    Adopt { since: SystemTime },
}

async fn begin_run(
    spec: &InstanceSpec,
    cx: RunContext<'_>,
    begin: Begin,
) -> Result<Run, StartError> {
    let RunContext {
        engine,
        container,
        log,
        log_path,
        max_line,
    } = cx;
    let engine_error = |action: &str, e: &bollard::errors::Error| StartError::Engine {
        id: spec.id.clone(),
        action: format!("{action} container {}", short(container)),
        message: describe(e),
    };
    let stdio = spec.io == InstanceIo::Stdio;
    let Attached { stdio, tasks } = attach(&engine.docker, container, stdio, log, max_line)
        .await
        .map_err(|e| engine_error("attach to", &e))?;
    let (started, started_at) = match begin {
        Begin::Start => (Instant::now(), SystemTime::now()),
        // How long it has run counts toward `stable_after` and `ran_for`.
        Begin::Adopt { since } => {
            let ran = SystemTime::now().duration_since(since).unwrap_or_default();
            let now = Instant::now();
            (now.checked_sub(ran).unwrap_or(now), since)
        }
    };
    // Queued before the start, so it precedes everything this run prints.
    let marker = match begin {
        Begin::Start => STARTING_MARKER,
        Begin::Adopt { .. } => ADOPTED_MARKER,
    };
    log.line(
        format!(
            "{marker}{} at {}",
            short(container),
            fleet_spec::template::rfc3339(started_at)
        )
        .into_bytes(),
    )
    .await;
    if let Begin::Start = begin
        && let Err(e) = engine
            .docker
            .start_container(container, None::<StartContainerOptions>)
            .await
    {
        tasks.abort();
        return Err(engine_error("start", &e));
    }
    let reach = match (spec.io, stdio) {
        (InstanceIo::Stdio, Some(attachment)) => Reach::Stdio(attachment),
        (InstanceIo::Listen { port }, _) => match published_port(engine, container, port).await {
            Some(host_port) => Reach::Address(SocketAddr::from((Ipv4Addr::LOCALHOST, host_port))),
            None => {
                // Without a published port the container has stopped already (the engine
                // unpublishes on exit): nothing to reach, and its output says why.
                tasks.finish().await;
                log.synced().await;
                return Err(StartError::ExitedAtStart {
                    id: spec.id.clone(),
                    output: last_output(log_path).await,
                });
            }
        },
        _ => Reach::Nowhere,
    };
    Ok(Run {
        started,
        started_at,
        reach: Some(reach),
        tasks,
    })
}

/// The marker that opens a run in the log (followed by the container's short id).
const STARTING_MARKER: &str = "--- starting container ";
/// The marker that opens an adopted run: the container was started by an earlier control
/// plane, at the time the marker gives.
const ADOPTED_MARKER: &str = "--- adopted container ";

/// The last [`LAST_LINES`] lines the latest run printed (mcpfleet's own `--- ` lines left
/// out), read back from the log, which holds every line once the log is synced.
async fn last_output(log_path: &Path) -> Vec<String> {
    // Room for the run's marker lines besides its output.
    let tail: Vec<String> = follow_log(log_path, LAST_LINES * 4, false).collect().await;
    let run_start = tail
        .iter()
        .rposition(|line| line.starts_with(STARTING_MARKER) || line.starts_with(ADOPTED_MARKER))
        .map_or(0, |i| i + 1);
    let mut output: Vec<String> = tail
        .into_iter()
        .skip(run_start)
        .filter(|line| !line.starts_with("--- "))
        .collect();
    output.drain(..output.len().saturating_sub(LAST_LINES));
    output
}

/// The host port the engine published container port `port` on (on 127.0.0.1).
async fn published_port(engine: &Engine, container: &str, port: u16) -> Option<u16> {
    let inspected = engine
        .docker
        .inspect_container(container, None::<InspectContainerOptions>)
        .await
        .ok()?;
    let ports = inspected.network_settings?.ports?;
    let bindings = ports.get(&super::create::port_key(port))?.as_ref()?;
    bindings
        .iter()
        .filter_map(|b| b.host_port.as_deref()?.parse::<u16>().ok())
        .find(|&p| p != 0)
}

/// The 12-character id `podman ps` shows.
pub(crate) fn short(container: &str) -> &str {
    container.get(..12).unwrap_or(container)
}

impl Run {
    /// The `Running` event announcing this run.
    pub(crate) fn running(&mut self, container: &str) -> Lifecycle {
        Lifecycle::Running {
            reach: self.reach.take().unwrap_or(Reach::Nowhere),
            handle: InstanceHandle::Container {
                id: container.to_owned(),
            },
        }
    }
}

/// Everything connecting a supervisor to the runtime and the engine.
#[derive(Debug)]
pub(crate) struct Wiring {
    pub(crate) registration: Registration,
    pub(crate) engine: Engine,
    pub(crate) container: String,
    /// Removed with the container.
    pub(crate) secret_files: SecretFiles,
    pub(crate) log_path: PathBuf,
    pub(crate) max_line: usize,
    pub(crate) control: mpsc::UnboundedReceiver<Control>,
    pub(crate) events: mpsc::UnboundedSender<Lifecycle>,
    pub(crate) status: Arc<Mutex<InstanceStatus>>,
    pub(crate) log: LogWriter,
    pub(crate) log_task: JoinHandle<()>,
}

#[derive(Debug)]
pub(crate) struct Supervisor {
    spec: InstanceSpec,
    engine: Engine,
    container: String,
    secret_files: SecretFiles,
    log_path: PathBuf,
    max_line: usize,
    control: mpsc::UnboundedReceiver<Control>,
    events: mpsc::UnboundedSender<Lifecycle>,
    status: Arc<Mutex<InstanceStatus>>,
    log: LogWriter,
    log_task: JoinHandle<()>,
    failures: FailureCount,
    registration: Registration,
}

#[derive(Debug)]
enum Phase {
    Run(Box<Run>),
    Start,
    BackOff { attempt: u32, delay: Duration },
    Idle(InstanceState),
    Finish,
}

impl From<Next> for Phase {
    fn from(next: Next) -> Self {
        match next {
            Next::Start => Phase::Start,
            Next::BackOff { attempt, delay } => Phase::BackOff { attempt, delay },
            Next::Idle(state) => Phase::Idle(state),
            Next::Finish => Phase::Finish,
        }
    }
}

/// Why a run ended.
enum Reason {
    Exited,
    Stop,
    Restart(oneshot::Sender<()>),
}

impl Supervisor {
    pub(crate) fn new(spec: InstanceSpec, wiring: Wiring) -> Self {
        Supervisor {
            registration: wiring.registration,
            spec,
            engine: wiring.engine,
            container: wiring.container,
            secret_files: wiring.secret_files,
            log_path: wiring.log_path,
            max_line: wiring.max_line,
            control: wiring.control,
            events: wiring.events,
            status: wiring.status,
            log: wiring.log,
            log_task: wiring.log_task,
            failures: FailureCount::default(),
        }
    }

    pub(crate) async fn run(mut self, first: Run) {
        let mut phase = Phase::Run(Box::new(first));
        loop {
            phase = match phase {
                Phase::Run(run) => self.supervise(*run).await,
                Phase::Start => self.restart_container().await,
                Phase::BackOff { attempt, delay } => self.back_off(attempt, delay).await,
                Phase::Idle(state) => self.idle(state).await,
                Phase::Finish => break,
            };
        }
        self.finish().await;
    }

    fn emit(&self, event: Lifecycle) {
        // The engine may have dropped its receiver; the instance carries on regardless.
        let _ = self.events.send(event);
    }

    fn update(&self, f: impl FnOnce(&mut InstanceStatus)) {
        f(&mut self.status.lock());
    }

    /// Logs one of mcpfleet's own lines and waits until it is on disk.
    async fn marker(&self, text: String) {
        self.log.line(format!("--- {text}").into_bytes()).await;
        self.log.synced().await;
    }

    /// Resolves when the container is no longer running.
    async fn exited(engine: Engine, container: String) {
        let mut wait = engine.waiter.wait_container(&container, None);
        // Any answer — an exit code, a non-zero "error", a lost connection — means the
        // run is over as far as waiting goes; `inspect` tells how it ended.
        let _ = wait.next().await;
    }

    async fn supervise(&mut self, run: Run) -> Phase {
        let Run {
            started, mut tasks, ..
        } = run;
        let mut exited = pin!(Self::exited(self.engine.clone(), self.container.clone()));
        let command = tokio::select! {
            () = &mut exited => None,
            command = self.control.recv() => Some(command),
        };
        let reason = match command {
            None => Reason::Exited,
            Some(None | Some(Control::Stop)) => {
                self.update(|s| s.state = InstanceState::Stopping);
                self.terminate(&mut tasks, exited.as_mut()).await;
                Reason::Stop
            }
            Some(Some(Control::Restart(ack))) => {
                self.marker(format!(
                    "killing container {} for a restart",
                    short(&self.container)
                ))
                .await;
                let kill = KillContainerOptions {
                    signal: "SIGKILL".to_owned(),
                };
                let _ = self
                    .engine
                    .docker
                    .kill_container(&self.container, Some(kill))
                    .await;
                let _ = timeout(KILL_WAIT, exited.as_mut()).await;
                Reason::Restart(ack)
            }
        };
        let ran_for = started.elapsed();
        tasks.finish().await;
        let exit = self
            .exit_info(ran_for, matches!(reason, Reason::Exited))
            .await;
        self.marker(exit_marker(&exit)).await;
        self.update(|s| {
            s.handle = None;
            s.last_exit = Some(exit);
        });
        // A failure by itself: what it printed last usually says why. Not only right after
        // the start: how long a failing start takes depends on the machine's load.
        let failed = matches!(reason, Reason::Exited) && exit.is_failure();
        let last_output = if failed {
            last_output(&self.log_path).await
        } else {
            Vec::new()
        };
        self.emit(Lifecycle::Exited {
            code: exit.code,
            signal: exit.signal,
            ran_for,
            out_of_memory: exit.out_of_memory,
            last_output,
        });
        match reason {
            Reason::Stop => Phase::Finish,
            Reason::Exited => self.decide(Ending::Exited(exit)).await,
            Reason::Restart(ack) => {
                let _ = ack.send(());
                self.decide(Ending::RestartRequested).await
            }
        }
    }

    /// How the run ended, from the engine's record of the container. `by_itself`: mcpfleet
    /// neither stopped nor killed it.
    async fn exit_info(&self, ran_for: Duration, by_itself: bool) -> ExitInfo {
        let state = self
            .engine
            .docker
            .inspect_container(&self.container, None::<InspectContainerOptions>)
            .await
            .ok()
            .and_then(|c| c.state);
        let code = state
            .as_ref()
            .and_then(|s| s.exit_code)
            .and_then(|c| i32::try_from(c).ok());
        let reported = state.and_then(|s| s.oom_killed).unwrap_or(false);
        let limit = match &self.spec.launch {
            Launch::Container(launch) => launch.resources.memory_bytes,
            Launch::Process { .. } | Launch::Pod(_) => None,
        };
        let out_of_memory = match (reported, limit) {
            (true, _) => OutOfMemory::Reported,
            // The engine reports a death by signal as code 128 + n, like a shell: 137 is
            // SIGKILL, which only the kernel sends a container that mcpfleet did not kill
            // (or someone with access to the engine).
            (false, Some(limit)) if by_itself && code == Some(137) => OutOfMemory::Likely { limit },
            _ => OutOfMemory::No,
        };
        ExitInfo {
            code,
            signal: None,
            ran_for,
            out_of_memory,
        }
    }

    /// (stdio: close its stdin, wait grace/2 for an exit on EOF) → the engine's stop
    /// (SIGTERM, then SIGKILL after the grace period) → wait for the exit.
    async fn terminate<F: Future<Output = ()>>(
        &self,
        tasks: &mut StreamTasks,
        mut exited: Pin<&mut F>,
    ) {
        let grace = self.spec.stop_grace;
        if self.spec.io == InstanceIo::Stdio {
            tasks.close_stdin();
            if timeout(grace / 2, exited.as_mut()).await.is_ok() {
                return;
            }
        }
        let seconds = grace.as_secs_f64().ceil().max(1.0) as i32;
        let stop = StopContainerOptions {
            signal: None,
            t: Some(seconds),
        };
        if let Err(e) = self
            .engine
            .docker
            .stop_container(&self.container, Some(stop))
            .await
        {
            self.marker(format!(
                "stopping container {} failed: {}",
                short(&self.container),
                describe(&e)
            ))
            .await;
        }
        if timeout(grace + KILL_WAIT, exited).await.is_err() {
            tracing::warn!(instance = %self.spec.id, container = %self.container, "container still running after stop");
        }
    }

    async fn decide(&mut self, ending: Ending) -> Phase {
        supervised::after_run(
            &mut self.failures,
            &self.spec.restart,
            ending,
            &self.log,
            &self.events,
        )
        .await
        .into()
    }

    async fn back_off(&mut self, attempt: u32, delay: Duration) -> Phase {
        supervised::back_off(
            attempt,
            delay,
            &self.status,
            &self.events,
            &mut self.control,
        )
        .await
        .into()
    }

    async fn idle(&mut self, state: InstanceState) -> Phase {
        supervised::idle(state, &self.status, &mut self.failures, &mut self.control)
            .await
            .into()
    }

    /// Starts the same container again (a new attachment for stdio).
    async fn restart_container(&mut self) -> Phase {
        self.update(|s| s.state = InstanceState::Starting);
        let cx = RunContext {
            engine: &self.engine,
            container: &self.container,
            log: &self.log,
            log_path: &self.log_path,
            max_line: self.max_line,
        };
        match start_run(&self.spec, cx).await {
            Ok(mut run) => {
                self.update(|s| {
                    s.state = InstanceState::Running;
                    s.handle = Some(InstanceHandle::Container {
                        id: self.container.clone(),
                    });
                    s.started_at = Some(run.started_at);
                    s.restarts = s.restarts.saturating_add(1);
                });
                self.emit(run.running(&self.container));
                Phase::Run(Box::new(run))
            }
            Err(e) => {
                let error = e.to_string();
                self.marker(format!("start failed: {error}")).await;
                self.emit(Lifecycle::SpawnFailed { error });
                self.decide(Ending::SpawnFailed).await
            }
        }
    }

    async fn finish(self) {
        let Supervisor {
            engine,
            container,
            secret_files,
            events,
            status,
            log,
            log_task,
            registration,
            ..
        } = self;
        remove_container(&engine, &container, Some(&log)).await;
        secret_files.remove();
        // Every line, including the exit marker, is on disk before `Stopped` is reported.
        drop(log);
        let _ = timeout(Duration::from_secs(2), log_task).await;
        {
            let mut status = status.lock();
            status.state = InstanceState::Stopped;
            status.handle = None;
        }
        let _ = events.send(Lifecycle::Stopped);
        drop(registration);
    }
}

/// Removes a container, running or not (and its anonymous volumes); one already gone is
/// fine. A failure is logged, in the instance's log too when there is one.
pub(crate) async fn remove_container(engine: &Engine, container: &str, log: Option<&LogWriter>) {
    let options = RemoveContainerOptions {
        force: true,
        v: true,
        link: false,
    };
    match engine
        .docker
        .remove_container(container, Some(options))
        .await
    {
        Ok(()) => {}
        Err(e) if is_not_found(&e) => {}
        Err(e) => {
            if let Some(log) = log {
                let line = format!(
                    "--- cannot remove container {}: {}",
                    short(container),
                    describe(&e)
                );
                log.line(line.into_bytes()).await;
            }
            tracing::warn!(container, error = %describe(&e), "cannot remove a container");
        }
    }
}

fn exit_marker(exit: &ExitInfo) -> String {
    let how = match exit.code {
        Some(code) => format!("code {code}"),
        None => "for an unknown reason".to_owned(),
    };
    format!(
        "exited {how}{} after {:.3}s at {}",
        exit.out_of_memory.describe(),
        exit.ran_for.as_secs_f64(),
        fleet_spec::template::rfc3339(SystemTime::now())
    )
}
