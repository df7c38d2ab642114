//! One task per instance: watches the process, stops and restarts it, reports events.

use super::backoff::{Ending, FailureCount};
use super::logs::LogWriter;
use super::spawn::{SpawnContext, Spawned, spawn};
use super::{pidfile, procfs};
use crate::instance::{
    ExitInfo, InstanceHandle, InstanceIo, InstanceSpec, InstanceState, InstanceStatus, Lifecycle,
};
use crate::supervised::{self, Control, Next, Registration};
use nix::sys::signal::Signal;
use parking_lot::Mutex;
use std::future::Future;
use std::os::unix::process::ExitStatusExt;
use std::pin::{Pin, pin};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;
use tokio::time::{Instant, timeout, timeout_at};

/// How long processes get to die after SIGKILL before we stop waiting for them.
const KILL_WAIT: Duration = Duration::from_secs(5);

/// How long output copiers get to reach EOF after the group is gone (a process that left
/// the group may still hold a pipe).
const COPIER_WAIT: Duration = Duration::from_secs(1);

/// Everything connecting a supervisor to the runtime and the engine.
#[derive(Debug)]
pub(crate) struct Wiring {
    pub(crate) registration: Registration,
    pub(crate) control: mpsc::UnboundedReceiver<Control>,
    pub(crate) events: mpsc::UnboundedSender<Lifecycle>,
    pub(crate) status: Arc<Mutex<InstanceStatus>>,
    pub(crate) log: LogWriter,
    pub(crate) log_task: JoinHandle<()>,
}

#[derive(Debug)]
pub(crate) struct Supervisor {
    spec: InstanceSpec,
    state_dir: std::path::PathBuf,
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
    Run(Box<Spawned>),
    Spawn,
    BackOff { attempt: u32, delay: Duration },
    Idle(InstanceState),
    Finish,
}

impl From<Next> for Phase {
    fn from(next: Next) -> Self {
        match next {
            Next::Start => Phase::Spawn,
            Next::BackOff { attempt, delay } => Phase::BackOff { attempt, delay },
            Next::Idle(state) => Phase::Idle(state),
            Next::Finish => Phase::Finish,
        }
    }
}

/// Why a supervised process ended.
enum Reason {
    Exited,
    Stop,
    Restart(oneshot::Sender<()>),
}

impl Supervisor {
    pub(crate) fn new(
        spec: InstanceSpec,
        state_dir: std::path::PathBuf,
        max_line: usize,
        wiring: Wiring,
    ) -> Self {
        Supervisor {
            registration: wiring.registration,
            spec,
            state_dir,
            max_line,
            control: wiring.control,
            events: wiring.events,
            status: wiring.status,
            log: wiring.log,
            log_task: wiring.log_task,
            failures: FailureCount::default(),
        }
    }

    pub(crate) async fn run(mut self, first: Spawned) {
        let mut phase = Phase::Run(Box::new(first));
        loop {
            phase = match phase {
                Phase::Run(spawned) => self.supervise(*spawned).await,
                Phase::Spawn => self.respawn().await,
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

    /// Logs one of mcpfleet's own lines and waits until it is on disk: whoever hears of the
    /// event next (a test, `mcpfleet logs`) finds its marker there.
    async fn marker(&self, text: String) {
        self.log.line(format!("--- {text}").into_bytes()).await;
        self.log.synced().await;
    }

    async fn supervise(&mut self, spawned: Spawned) -> Phase {
        let Spawned {
            mut child,
            pid,
            started,
            copiers,
            pidfile,
            ..
        } = spawned;
        let mut exited = pin!(procfs::wait_exited_unreaped(pid));
        let command = tokio::select! {
            () = &mut exited => None,
            command = self.control.recv() => Some(command),
        };
        let reason = match command {
            None => Reason::Exited,
            Some(None | Some(Control::Stop)) => {
                self.update(|s| s.state = InstanceState::Stopping);
                self.terminate(pid, exited.as_mut()).await;
                Reason::Stop
            }
            Some(Some(Control::Restart(ack))) => {
                self.marker(format!("killing pid {pid} for a restart"))
                    .await;
                procfs::signal_group(pid, Signal::SIGKILL);
                exited.as_mut().await;
                Reason::Restart(ack)
            }
        };
        let ran_for = started.elapsed();

        // The leader is an unreaped zombie: its group id is still ours to signal.
        self.clear_group(pid).await;
        let status = child.wait().await.ok();
        pidfile::remove(&pidfile).await;
        finish_copiers(copiers).await;

        let exit = ExitInfo {
            code: status.and_then(|s| s.code()),
            signal: status.and_then(|s| s.signal()),
            ran_for,
            out_of_memory: crate::instance::OutOfMemory::No,
        };
        self.marker(exit_marker(&exit)).await;
        self.update(|s| {
            s.handle = None;
            s.last_exit = Some(exit);
        });
        self.emit(Lifecycle::Exited {
            code: exit.code,
            signal: exit.signal,
            ran_for,
            out_of_memory: crate::instance::OutOfMemory::No,
            last_output: Vec::new(),
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

    /// (stdio: wait grace/2 for an exit on EOF, the caller having closed stdin) → SIGTERM to
    /// the group → wait grace → SIGKILL.
    async fn terminate<F: Future<Output = ()>>(&self, pid: u32, mut exited: Pin<&mut F>) {
        let grace = self.spec.stop_grace;
        if self.spec.io == InstanceIo::Stdio && timeout(grace / 2, exited.as_mut()).await.is_ok() {
            return;
        }
        procfs::signal_group(pid, Signal::SIGTERM);
        if timeout(grace, exited.as_mut()).await.is_ok() {
            return;
        }
        self.marker(format!(
            "pid {pid} still running {:.1}s after SIGTERM; sending SIGKILL",
            grace.as_secs_f64()
        ))
        .await;
        procfs::signal_group(pid, Signal::SIGKILL);
        exited.await;
    }

    /// Stops what is left of the group after its leader exited: helpers that outlived it
    /// would otherwise be orphans nobody supervises.
    async fn clear_group(&self, pgid: u32) {
        let left = procfs::group_members_async(pgid).await;
        if left.is_empty() {
            return;
        }
        self.marker(format!(
            "{} process(es) of the group outlived pid {pgid}; stopping them",
            left.len()
        ))
        .await;
        procfs::signal_group(pgid, Signal::SIGTERM);
        if procfs::wait_group_gone(pgid, None, Instant::now() + self.spec.stop_grace).await {
            return;
        }
        procfs::signal_group(pgid, Signal::SIGKILL);
        if !procfs::wait_group_gone(pgid, None, Instant::now() + KILL_WAIT).await {
            tracing::warn!(instance = %self.spec.id, pgid, "processes survive SIGKILL");
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

    async fn respawn(&mut self) -> Phase {
        self.update(|s| s.state = InstanceState::Starting);
        let context = SpawnContext {
            state_dir: &self.state_dir,
            log: &self.log,
            max_line: self.max_line,
        };
        match spawn(&self.spec, context).await {
            Ok(mut spawned) => {
                self.update(|s| {
                    s.state = InstanceState::Running;
                    s.handle = Some(InstanceHandle::Process { pid: spawned.pid });
                    s.started_at = Some(spawned.started_at);
                    s.restarts = s.restarts.saturating_add(1);
                });
                self.emit(spawned.running());
                Phase::Run(Box::new(spawned))
            }
            Err(e) => {
                let error = e.to_string();
                self.marker(format!("spawn failed: {error}")).await;
                self.emit(Lifecycle::SpawnFailed { error });
                self.decide(Ending::SpawnFailed).await
            }
        }
    }

    async fn finish(self) {
        let Supervisor {
            events,
            status,
            log,
            log_task,
            registration,
            ..
        } = self;
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

/// Waits for the output copiers to reach EOF, briefly; a pipe still held by a process that
/// escaped the group is abandoned.
async fn finish_copiers(copiers: Vec<JoinHandle<()>>) {
    let deadline = Instant::now() + COPIER_WAIT;
    for mut copier in copiers {
        if timeout_at(deadline, &mut copier).await.is_err() {
            copier.abort();
        }
    }
}

fn exit_marker(exit: &ExitInfo) -> String {
    let how = match (exit.code, exit.signal) {
        (Some(code), _) => format!("code {code}"),
        (None, Some(signal)) => match Signal::try_from(signal) {
            Ok(name) => format!("signal {signal} ({name})"),
            Err(_) => format!("signal {signal}"),
        },
        (None, None) => "for an unknown reason".to_owned(),
    };
    format!(
        "exited {how} after {:.3}s at {}",
        exit.ran_for.as_secs_f64(),
        fleet_spec::template::rfc3339(std::time::SystemTime::now())
    )
}
