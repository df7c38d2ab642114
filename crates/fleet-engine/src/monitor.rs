//! One instance, from start to stop: start it, gate it on its readiness checks, watch its
//! liveness, follow its restarts.

use crate::instance_id::InstanceId;
use crate::launch::{launch, pod_launch, resolve_program};
use crate::pool::SessionPool;
use crate::report::{CheckResult, EventKind, ServerState};
use crate::routing::Upstream;
use crate::spans;
use crate::{EngineError, Release, STOP_GRACE, Shared};
use fleet_mcp::{
    CheckFailure, CheckKind, CheckReport, CheckSpec, HealthTracker, StdioSession, Verdict,
};
use fleet_runtime::{
    InstanceIo, InstanceSpec, Lifecycle, OutOfMemory, Reach, Runtime, StdioAttachment,
};
use fleet_spec::model::{Cadence, CheckProbe, Era, Isolation, RuntimeKind, Server, Transport};
use fleet_spec::template::InstanceTemplates;
use fleet_stdio::{SessionProcesses, StdioEndpoint, StdioLink};
use futures::future::Either;
use parking_lot::Mutex;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;
use tokio::sync::watch;
use tracing::Instrument as _;
// tokio's clock, not std's: deadlines and timers agree, also on a paused test clock.
use tokio::time::Instant;

#[derive(Debug, Clone, PartialEq)]
enum Readiness {
    Pending,
    Ready,
    Failed(String),
}

/// Where the MCP check reaches the instance.
enum Target {
    /// Its stdin/stdout, handed over by the runtime at every (re)start. A shared
    /// server's attachment goes to a gateway link, and the checks run through it like any
    /// session; a per-session server's instance is a probe only, checked on its own
    /// attachment, while clients get instances of its [`SessionPool`].
    Stdio(Isolation),
    /// The Streamable HTTP endpoint of a server we run: `path` at the address the
    /// runtime reports at every (re)start (`None` until the first).
    Served {
        path: String,
        address: Mutex<Option<SocketAddr>>,
    },
    /// A remote Streamable HTTP endpoint.
    Url {
        url: String,
        headers: Vec<(String, String)>,
    },
}

impl Target {
    /// The URL and headers of an HTTP endpoint; `None` for stdio, and for a served one
    /// whose address is not known yet.
    fn http_endpoint(&self) -> Option<(String, &[(String, String)])> {
        match self {
            Target::Stdio(_) => None,
            Target::Served { path, address } => {
                let address = (*address.lock())?;
                Some((format!("http://{address}{path}"), &[]))
            }
            Target::Url { url, headers } => Some((url.clone(), headers)),
        }
    }
}

/// A check other than the MCP one, resolved for this instance.
struct OtherCheck {
    spec: Result<OtherSpec, EngineError>,
    cadence: Cadence,
    kind: CheckKind,
}

/// What a check other than the MCP one probes.
#[derive(Debug, PartialEq)]
enum OtherSpec {
    /// The same thing at every run.
    Fixed(CheckSpec),
    /// An http path, or a tcp connection, at the address the runtime reports for a served
    /// instance at every (re)start — not the configured port: a container's published port,
    /// say, is another one.
    AtInstance(Relative),
}

/// A check relative to a served instance's address.
#[derive(Debug, PartialEq)]
enum Relative {
    Http {
        path: String,
        expect_status: Option<u16>,
    },
    Tcp,
}

impl OtherSpec {
    /// The check to run now, with the instance's current address for a relative one;
    /// `None` for a relative one while the instance has no address (it is not running).
    fn at(&self, address: Option<SocketAddr>) -> Option<CheckSpec> {
        let relative = match self {
            Self::Fixed(spec) => return Some(spec.clone()),
            Self::AtInstance(relative) => relative,
        };
        let address = address?;
        Some(match relative {
            Relative::Http {
                path,
                expect_status,
            } => CheckSpec::Http {
                url: format!("http://{address}{path}"),
                expect_status: *expect_status,
            },
            Relative::Tcp => CheckSpec::Tcp {
                address: address.to_string(),
            },
        })
    }
}

pub(crate) struct InstanceMonitor<R> {
    shared: Arc<Shared<R>>,
    server: Server,
    id: InstanceId,
    /// `id` as the runtime knows it (the names of its pidfile and log).
    runtime_id: fleet_runtime::InstanceId,
    target: Target,
    others: Vec<OtherCheck>,
    readiness: watch::Sender<Readiness>,
    /// Set once the instance has been ready: from then on failures restart it instead of
    /// failing the deployment.
    was_ready: AtomicBool,
    stopped: AtomicBool,
    stop_requested: watch::Sender<bool>,
    session: tokio::sync::Mutex<Option<StdioSession>>,
    /// A shared stdio server's current process, as the gateway reaches it.
    link: Mutex<Option<StdioLink>>,
    /// A per-session stdio server's processes for clients (replica 0 starts them).
    pool: Mutex<Option<Arc<SessionPool<R>>>>,
    /// What the last passing MCP check found (era, protocol, server, tools): what the
    /// ready event says. Only the MCP check's: another check (an http server's tcp check,
    /// run after it) passing says nothing about the server's MCP.
    last_mcp_detail: Mutex<Option<String>>,
    /// (rendered, shown) pairs of texts holding secrets, replaced in everything reported.
    redactions: Vec<(String, String)>,
    /// The server step that started the instance, until its first readiness is decided:
    /// the parent of the spans of its readiness checks. Let go of then, so that the step's
    /// span can close.
    step_span: Mutex<Option<tracing::Span>>,
}

impl<R: Runtime + 'static> InstanceMonitor<R> {
    /// Starts replica `replica` of the release's server and the task that watches it.
    ///
    /// # Errors
    /// The instance cannot be started: a template fails with real values, the port is taken,
    /// the program or working directory does not exist.
    pub(crate) async fn start(
        shared: Arc<Shared<R>>,
        release: &Release,
        replica: u32,
    ) -> Result<Arc<Self>, EngineError> {
        let Release {
            fleet,
            host,
            server,
            revision,
        } = release;
        let (server, revision) = (server.clone(), *revision);
        let id = InstanceId::replica(&server.name, revision, replica);
        let runtime_id = fleet_runtime::InstanceId::from(&id);
        // What is logged while the instance is watched names it. Its own root: an instance
        // outlives the deployment that started it.
        let span = tracing::info_span!(
            parent: None,
            "instance",
            server = %server.name,
            revision,
            instance = %id
        );
        let on_cluster = fleet.runtime == RuntimeKind::Kubernetes;
        let port = match (&server.transport, server.transport.fixed_host_port()) {
            (_, Some(fixed)) => Some(claim_port(fixed)?),
            // An image's port, inside its container: nothing to claim here.
            (
                Transport::Http {
                    port: Some(inside), ..
                },
                None,
            ) => Some(*inside),
            // Every pod has its own network: the port its Deployment declares.
            (Transport::Http { port: None, .. }, None) if on_cluster => {
                Some(fleet_manifests::DEFAULT_HTTP_PORT)
            }
            (Transport::Http { port: None, .. }, None) => Some(free_port()?),
            _ => None,
        };
        let templates = InstanceTemplates::new(fleet, host.clone(), port, revision)
            .map_err(EngineError::Templates)?;
        // Rendered texts that carry a secret, with their shown form: what check reports say
        // about a target (a URL with a token in it) is redacted with these.
        let redactions = Mutex::new(Vec::new());
        let render = |t: &fleet_spec::model::Text| {
            let out = templates.render(t, &server.name)?;
            if t.shown.contains("***") && out != t.shown {
                redactions.lock().push((out.clone(), t.shown.clone()));
            }
            Ok::<_, EngineError>(out)
        };
        let (target, command) = match &server.transport {
            Transport::Stdio { command, isolation } => (Target::Stdio(*isolation), Some(command)),
            Transport::Http { command, path, .. } => (
                Target::Served {
                    path: path.clone(),
                    address: Mutex::new(None),
                },
                Some(command),
            ),
            Transport::Remote { url, headers } => {
                let headers = headers
                    .iter()
                    .map(|(k, v)| Ok((k.clone(), render(v)?)))
                    .collect::<Result<_, EngineError>>()?;
                (
                    Target::Url {
                        url: render(url)?,
                        headers,
                    },
                    None,
                )
            }
        };
        let others = server
            .health
            .others
            .iter()
            .map(|c| OtherCheck {
                spec: resolve_check(&c.probe, &fleet.base_dir, port, &target, &render),
                cadence: c.cadence,
                kind: match c.probe {
                    CheckProbe::Http { .. } => CheckKind::Http,
                    CheckProbe::Tcp { .. } => CheckKind::Tcp,
                    CheckProbe::Command { .. } => CheckKind::Command,
                    CheckProbe::File { .. } => CheckKind::File,
                },
            })
            .collect();

        let monitor = Arc::new(InstanceMonitor {
            shared: shared.clone(),
            server: server.clone(),
            id,
            runtime_id: runtime_id.clone(),
            target,
            others,
            readiness: watch::channel(Readiness::Pending).0,
            was_ready: AtomicBool::new(false),
            stopped: AtomicBool::new(false),
            stop_requested: watch::channel(false).0,
            session: tokio::sync::Mutex::new(None),
            link: Mutex::new(None),
            pool: Mutex::new(None),
            last_mcp_detail: Mutex::new(None),
            redactions: redactions.lock().clone(),
            step_span: Mutex::new(
                Some(tracing::Span::current())
                    .filter(|span| span.metadata().is_some_and(|m| m.name() == "server step")),
            ),
        });
        shared.update(|s| {
            s.add_instance(&server.name, runtime_id.as_str(), revision, port);
            if let Some(base) = &shared.config.gateway_url {
                s.set_endpoint(&server.name, format!("{base}/mcp/{}", server.name));
            }
        });

        let Some(command) = command else {
            // A remote server: nothing to start, only to check.
            tokio::spawn(monitor.clone().watch_remote().instrument(span));
            return Ok(monitor);
        };
        let (launch, args, env) = if on_cluster {
            let deployment = shared.events.deployment();
            let pod = pod_launch(fleet, &server.name, revision, deployment)?;
            (pod, Vec::new(), Vec::new())
        } else {
            (
                launch(command, &fleet.base_dir, &render)?,
                command.args.iter().map(&render).collect::<Result<_, _>>()?,
                (command.env.iter())
                    .map(|(k, v)| Ok((k.clone(), render(v)?)))
                    .collect::<Result<_, EngineError>>()?,
            )
        };
        let spec = InstanceSpec {
            id: runtime_id,
            server: server.name.clone(),
            revision,
            launch,
            args,
            env,
            // Only an http server has a port (a remote one has returned above).
            io: match port {
                Some(port) => InstanceIo::Listen { port },
                None => InstanceIo::Stdio,
            },
            restart: server.restart.clone(),
            stop_grace: STOP_GRACE,
            deployment: shared.events.deployment(),
        };
        if let Target::Stdio(Isolation::PerSession {
            warm,
            max_sessions,
            idle_timeout,
        }) = monitor.target
        {
            let pool = shared.session_pool(&server.name, revision, || {
                SessionPool::new(&shared, spec.clone(), warm, max_sessions, idle_timeout)
            });
            *monitor.pool.lock() = Some(pool);
        }
        let instance = shared
            .launch(spec, &monitor.id)
            .instrument(span.clone())
            .await
            .map_err(|e| EngineError::Spawn(monitor.redact(e.to_string())))?;
        tokio::spawn(
            monitor
                .clone()
                .watch_process(instance.events)
                .instrument(span),
        );
        Ok(monitor)
    }

    pub(crate) fn server(&self) -> &str {
        &self.server.name
    }

    pub(crate) fn revision(&self) -> u64 {
        self.id.revision
    }

    pub(crate) fn id(&self) -> &InstanceId {
        &self.id
    }

    pub(crate) fn runtime_id(&self) -> &fleet_runtime::InstanceId {
        &self.runtime_id
    }

    pub(crate) fn is_stopped(&self) -> bool {
        self.stopped.load(Ordering::SeqCst)
    }

    pub(crate) fn last_mcp_detail(&self) -> Option<String> {
        self.last_mcp_detail.lock().clone()
    }

    /// Waits until the instance is ready for the first time.
    ///
    /// # Errors
    /// Why it will not become ready.
    pub(crate) async fn wait_ready(&self) -> Result<(), EngineError> {
        let mut rx = self.readiness.subscribe();
        let state = rx
            .wait_for(|r| *r != Readiness::Pending)
            .await
            .map_err(|_| EngineError::MonitorStopped)?;
        match &*state {
            Readiness::Failed(why) => Err(EngineError::NotReady(why.clone())),
            _ => Ok(()),
        }
    }

    pub(crate) async fn stop(&self) {
        self.stop_requested.send_replace(true);
        self.fail_readiness("stopped before it was ready".into());
        // Out of the route table before the process gets its stop signal: no new session
        // or stateless request may reach an instance that is shutting down.
        self.shared.routes.set_upstream(
            &self.server.name,
            self.id.revision,
            self.runtime_id.as_str(),
            None,
        );
        if let Some(session) = self.session.lock().await.take() {
            session.close().await;
        }
        if self.is_process() {
            let _ = self.shared.runtime.stop(&self.runtime_id).await;
        }
        self.stopped.store(true, Ordering::SeqCst);
        self.set_state(ServerState::Stopped, None);
    }

    fn is_process(&self) -> bool {
        !matches!(self.server.transport, Transport::Remote { .. })
    }

    /// Runs every check once, now (for `mcpfleet check`).
    pub(crate) async fn check_now(&self) -> Vec<CheckResult> {
        let mut out = vec![self.summary(&self.mcp_check(None).await)];
        for other in &self.others {
            out.push(self.summary(&self.run_other(other).await));
        }
        out
    }

    /// Records the instance's state; a ready instance takes gateway traffic, any other
    /// state takes it out of the route table.
    fn set_state(&self, state: ServerState, reason: Option<String>) {
        self.shared
            .update(|s| s.set_instance(&self.server.name, self.runtime_id.as_str(), state, reason));
        let upstream = if state == ServerState::Ready {
            self.upstream()
        } else {
            None
        };
        self.shared.routes.set_upstream(
            &self.server.name,
            self.id.revision,
            self.runtime_id.as_str(),
            upstream,
        );
    }

    /// How the gateway reaches this instance (for a per-session server: its pool,
    /// warmed now that the server is known to work).
    fn upstream(&self) -> Option<Upstream> {
        match &self.target {
            Target::Served { .. } | Target::Url { .. } => {
                let (url, _) = self.target.http_endpoint()?;
                Some(Upstream::Http(url))
            }
            Target::Stdio(Isolation::Shared) => self
                .link
                .lock()
                .clone()
                .map(|link| Upstream::Stdio(StdioEndpoint::Shared(link))),
            Target::Stdio(Isolation::PerSession { .. }) => {
                let pool = self.pool.lock().clone()?;
                pool.refill();
                let processes: Arc<dyn SessionProcesses> = pool;
                Some(Upstream::Stdio(StdioEndpoint::PerSession(processes)))
            }
        }
    }

    fn record(&self, report: &CheckReport) {
        let summary = self.summary(report);
        if summary.passed && report.kind == CheckKind::Mcp {
            *self.last_mcp_detail.lock() = Some(summary.detail.clone());
        }
        self.shared
            .update(|s| s.record_check(&self.server.name, self.runtime_id.as_str(), summary));
    }

    /// Counts a failed check for `mcpfleet_health_check_failures_total`: every liveness
    /// check that fails, and a readiness that fails — once, not each poll of an instance
    /// still starting up, so a restart alone does not look like failing checks.
    fn count_check_failure(&self) {
        self.shared.update(|s| s.count_check_failure(&self.id));
    }

    fn redact(&self, text: String) -> String {
        self.redactions
            .iter()
            .fold(text, |t, (real, shown)| t.replace(real.as_str(), shown))
    }

    fn summary(&self, report: &CheckReport) -> CheckResult {
        CheckResult {
            at: crate::state::now(),
            kind: report.kind.to_string(),
            passed: report.outcome.is_ok(),
            took_ms: report.took.as_secs_f64() * 1000.0,
            detail: self.redact(match &report.outcome {
                Ok(pass) => pass.detail.clone(),
                Err(failure) => failure.to_string(),
            }),
        }
    }

    fn describe_failure(&self, report: &CheckReport) -> String {
        self.redact(match &report.outcome {
            Ok(pass) => pass.detail.clone(),
            Err(failure) => format!("{} check failed: {failure}", report.kind),
        })
    }

    /// The instance passed its readiness checks: it takes traffic — unless it is being
    /// stopped, which the checks could not know. Returns whether it is ready.
    fn mark_ready(&self) -> bool {
        self.step_span.lock().take();
        if *self.stop_requested.borrow() {
            return false;
        }
        self.was_ready.store(true, Ordering::SeqCst);
        // In the routes before anyone waiting for readiness hears of it: a swap to this
        // revision must find its instances there.
        self.set_state(ServerState::Ready, None);
        self.readiness.send_if_modified(|r| {
            let first = *r == Readiness::Pending;
            if first {
                *r = Readiness::Ready;
            }
            first
        });
        true
    }

    fn fail_readiness(&self, why: String) {
        self.step_span.lock().take();
        self.readiness.send_if_modified(|r| {
            if *r == Readiness::Pending {
                *r = Readiness::Failed(why);
                true
            } else {
                false
            }
        });
    }

    /// Follows the runtime's account of the process.
    async fn watch_process(
        self: Arc<Self>,
        mut events: tokio::sync::mpsc::UnboundedReceiver<Lifecycle>,
    ) {
        let mut pending: Option<Lifecycle> = None;
        loop {
            let event = match pending.take() {
                Some(e) => e,
                None => match events.recv().await {
                    Some(e) => e,
                    None => break,
                },
            };
            match event {
                Lifecycle::Running { reach, handle } => {
                    let restarted = self.was_ready.load(Ordering::SeqCst);
                    self.shared.update(|s| {
                        if let Some(i) = s.instance(&self.server.name, self.runtime_id.as_str()) {
                            i.pid = handle.pid();
                            i.container = handle.container().map(str::to_owned);
                            if restarted {
                                i.restarts += 1;
                            }
                        }
                    });
                    if restarted {
                        self.shared.events.emit(
                            EventKind::InstanceRestarted,
                            Some(&self.server.name),
                            Some(&self.id),
                            format!("running again as {handle}"),
                        );
                    }
                    let attachment = match reach {
                        Reach::Stdio(attachment) => Some(attachment),
                        Reach::Address(reached) => {
                            if let Target::Served { address, .. } = &self.target {
                                *address.lock() = Some(reached);
                            }
                            None
                        }
                        Reach::Nowhere => None,
                    };
                    self.set_state(ServerState::Checking, None);
                    tokio::select! {
                        // Boxed for the same reason as the checks in `stay_live`.
                        ready = Box::pin(self.become_ready(attachment)) => match ready {
                            Ok(()) if self.mark_ready() => {
                                pending = self.stay_live(&mut events).await;
                            }
                            Ok(()) => {}
                            Err(why) => {
                                self.count_check_failure();
                                self.not_ready(why.to_string()).await;
                            }
                        },
                        event = events.recv() => {
                            // The process ended before it was ready.
                            if let Some(Lifecycle::Exited { code, signal, out_of_memory, last_output, .. }) = &event
                                && !self.was_ready.load(Ordering::SeqCst)
                                && !*self.stop_requested.borrow()
                            {
                                self.not_ready(format!("exited ({}) before it was ready{}", exit_text(*code, *signal, *out_of_memory), output_text(last_output))).await;
                            }
                            pending = event;
                        }
                    }
                }
                Lifecycle::Exited {
                    code,
                    signal,
                    ran_for,
                    out_of_memory,
                    last_output,
                } => {
                    *self.session.lock().await = None;
                    if !*self.stop_requested.borrow() {
                        let why = format!(
                            "exited ({}) after {}{}",
                            exit_text(code, signal, out_of_memory),
                            fleet_spec::model::human_duration(ran_for),
                            output_text(&last_output)
                        );
                        // `Restarting` only once the runtime says a start is coming
                        // (`BackingOff`): its restart policy may say none is.
                        let state = if code == Some(0) {
                            ServerState::Stopped
                        } else {
                            ServerState::Failed
                        };
                        self.set_state(state, Some(why.clone()));
                        self.shared.events.emit(
                            EventKind::InstanceExited,
                            Some(&self.server.name),
                            Some(&self.id),
                            why,
                        );
                    }
                }
                Lifecycle::BackingOff { attempt, delay } => {
                    let why = format!(
                        "restart {attempt} in {}",
                        fleet_spec::model::human_duration(delay)
                    );
                    self.set_state(ServerState::Restarting, Some(why));
                }
                Lifecycle::CrashLooping { failures } => {
                    let why = format!(
                        "crash-looping: {failures} failed starts in a row; not restarting it again"
                    );
                    self.fail_readiness(why.clone());
                    self.set_state(ServerState::CrashLooping, Some(why.clone()));
                    self.shared.events.emit(
                        EventKind::CrashLooping,
                        Some(&self.server.name),
                        Some(&self.id),
                        why,
                    );
                }
                Lifecycle::SpawnFailed { error } => {
                    self.fail_readiness(error.clone());
                    self.set_state(ServerState::Failed, Some(error));
                }
                Lifecycle::Stopped => {
                    self.fail_readiness("stopped before it was ready".into());
                    self.shared.update(|s| {
                        if let Some(i) = s.instance(&self.server.name, self.runtime_id.as_str()) {
                            i.pid = None;
                            i.container = None;
                            if i.state != ServerState::Failed {
                                i.state = ServerState::Stopped;
                            }
                        }
                    });
                    break;
                }
            }
        }
        self.stopped.store(true, Ordering::SeqCst);
    }

    /// A readiness failure: during its first start it fails the deployment (and the instance
    /// is stopped); later it counts as a crash and the runtime restarts it with backoff.
    async fn not_ready(&self, why: String) {
        let message = format!("not ready: {why}");
        self.shared.events.emit(
            EventKind::HealthCheckFailed,
            Some(&self.server.name),
            Some(&self.id),
            message.clone(),
        );
        if self.was_ready.load(Ordering::SeqCst) {
            self.set_state(ServerState::Unhealthy, Some(message));
            let _ = self.shared.runtime.restart(&self.runtime_id).await;
        } else {
            self.fail_readiness(why.clone());
            self.set_state(ServerState::Failed, Some(why));
            // Our own stop: its exit is not a crash to report.
            self.stop_requested.send_replace(true);
            let _ = self.shared.runtime.stop(&self.runtime_id).await;
        }
    }

    /// Runs the checks until each has passed its `success_threshold` times in a row, within
    /// the handshake timeout.
    async fn become_ready(&self, attachment: Option<StdioAttachment>) -> Result<(), EngineError> {
        let mcp = &self.server.health.mcp;
        let started = Instant::now();
        let deadline = started + mcp.cadence.timeout;
        // Only a deployment's readiness is traced: a restarted instance's is not a step.
        let step = self.step_span.lock().take();
        let step = step.as_ref();
        if let (Target::Stdio(isolation), Some(attachment)) = (&self.target, attachment) {
            let StdioAttachment { stdin, stdout } = attachment;
            let era = self.server.era;
            let handshake = match isolation {
                Isolation::Shared => {
                    // Our handshake is the process's one and only: over stdio a server
                    // keeps the era of its first exchange, and sessions need it legacy
                    // (`initialize`) unless the server is declared modern.
                    let era = match era {
                        Era::Auto => Era::Legacy,
                        declared => declared,
                    };
                    let link = StdioLink::shared(self.runtime_id.to_string(), stdin, stdout);
                    *self.link.lock() = Some(link.clone());
                    let (stdin, stdout) = link.connect().ok_or(EngineError::StdoutClosed)?;
                    Either::Left(StdioSession::connect(stdin, stdout, era, mcp))
                }
                Isolation::PerSession { .. } => {
                    Either::Right(StdioSession::connect(stdin, stdout, era, mcp))
                }
            };
            let connected = match step {
                None => handshake.await,
                Some(step) => {
                    let span = spans::health_check(step, CheckKind::Mcp, &self.id);
                    let connected = handshake.instrument(span.clone()).await;
                    let report = match &connected {
                        Ok((_, report)) | Err(report) => report,
                    };
                    spans::check_ended(&span, report, || self.describe_failure(report));
                    connected
                }
            };
            let (session, report) = connected
                .map_err(|report| EngineError::NotReady(self.describe_failure(&report)))?;
            self.record(&report);
            *self.session.lock().await = Some(session);
        }
        let mut trackers: Vec<HealthTracker> = std::iter::once(&mcp.cadence)
            .chain(self.others.iter().map(|o| &o.cadence))
            .map(HealthTracker::new)
            .collect();
        let mut delay = Duration::from_millis(5);
        // The last attempt may be cut short by the deadline; the one before says why the
        // instance was not ready (a missing tool, a failed call) better than "timed out".
        let mut earlier_failure: Option<CheckReport> = None;
        loop {
            let mut reports = vec![
                self.traced(step, CheckKind::Mcp, self.mcp_check(Some(deadline)))
                    .await,
            ];
            for other in &self.others {
                reports.push(self.traced(step, other.kind, self.run_other(other)).await);
            }
            let mut all_ready = true;
            for (tracker, report) in trackers.iter_mut().zip(&reports) {
                self.record(report);
                all_ready &= tracker.observe(report) == Verdict::Ready;
            }
            if all_ready {
                return Ok(());
            }
            let failed = reports
                .iter()
                .find(|r| r.outcome.is_err())
                .unwrap_or(&reports[0]);
            if Instant::now() >= deadline {
                let cut_short =
                    matches!(failed.outcome, Err(CheckFailure::HandshakeTimeout { .. }));
                let why = match &earlier_failure {
                    Some(earlier) if cut_short => earlier,
                    _ => failed,
                };
                return Err(EngineError::NotReady(self.describe_failure(why)));
            }
            if failed.outcome.is_err() {
                earlier_failure = Some(failed.clone());
            }
            tokio::time::sleep(delay.min(deadline.saturating_duration_since(Instant::now()))).await;
            delay = (delay * 2).min(Duration::from_millis(250));
        }
    }

    /// Runs `check`, in a span of its own in the server step's (`step`) when there is one.
    async fn traced(
        &self,
        step: Option<&tracing::Span>,
        kind: CheckKind,
        check: impl Future<Output = CheckReport>,
    ) -> CheckReport {
        let Some(step) = step else {
            return check.await;
        };
        let span = spans::health_check(step, kind, &self.id);
        let report = check.instrument(span.clone()).await;
        spans::check_ended(&span, &report, || self.describe_failure(&report));
        report
    }

    /// Liveness: each check at its own interval until the process leaves the running state;
    /// returns the lifecycle event that ended it.
    async fn stay_live(
        &self,
        events: &mut tokio::sync::mpsc::UnboundedReceiver<Lifecycle>,
    ) -> Option<Lifecycle> {
        let checks = 1 + self.others.len();
        let cadence = |i: usize| {
            if i == 0 {
                self.server.health.mcp.cadence
            } else {
                self.others[i - 1].cadence
            }
        };
        let mut trackers: Vec<HealthTracker> =
            (0..checks).map(|i| ready_tracker(&cadence(i))).collect();
        let mut due: Vec<Instant> = (0..checks)
            .map(|i| Instant::now() + cadence(i).interval)
            .collect();
        loop {
            let (next, at) = due
                .iter()
                .enumerate()
                .min_by_key(|(_, t)| **t)
                .map(|(i, t)| (i, *t))
                .unwrap_or((0, Instant::now()));
            tokio::select! {
                event = events.recv() => return event,
                () = tokio::time::sleep_until(at) => {
                    // Boxed: a check's future is large and alive only while it runs, and
                    // this loop lives as long as the instance (a thousand of them per fleet).
                    let report = if next == 0 { Box::pin(self.mcp_check(None)).await } else { Box::pin(self.run_other(&self.others[next - 1])).await };
                    self.record(&report);
                    if report.outcome.is_err() {
                        self.count_check_failure();
                    }
                    due[next] = Instant::now() + cadence(next).interval;
                    if trackers[next].observe(&report) == Verdict::Unhealthy {
                        self.not_ready(format!("{} after {} failed checks in a row", self.describe_failure(&report), cadence(next).failure_threshold)).await;
                        trackers[next] = ready_tracker(&cadence(next));
                    }
                }
            }
        }
    }

    async fn mcp_check(&self, deadline: Option<Instant>) -> CheckReport {
        let mcp = &self.server.health.mcp;
        match &self.target {
            Target::Served { .. } | Target::Url { .. } => {
                let Some((url, headers)) = self.target.http_endpoint() else {
                    return failed(
                        CheckKind::Mcp,
                        CheckFailure::Disconnected {
                            message: "no address to reach it at: the process is not running".into(),
                        },
                    );
                };
                let probe = fleet_mcp::probe_http(&url, headers, self.server.era, mcp);
                match deadline {
                    None => probe.await,
                    Some(d) => match tokio::time::timeout_at(d, probe).await {
                        Ok(report) => report,
                        Err(_) => failed(
                            CheckKind::Mcp,
                            CheckFailure::HandshakeTimeout {
                                after: mcp.cadence.timeout,
                            },
                        ),
                    },
                }
            }
            Target::Stdio(_) => match self.session.lock().await.as_ref() {
                Some(session) => session.check(mcp).await,
                None => failed(
                    CheckKind::Mcp,
                    CheckFailure::Disconnected {
                        message: "no MCP session: the process is not running".into(),
                    },
                ),
            },
        }
    }

    async fn run_other(&self, other: &OtherCheck) -> CheckReport {
        let address = match &self.target {
            Target::Served { address, .. } => *address.lock(),
            Target::Stdio(_) | Target::Url { .. } => None,
        };
        let spec = match &other.spec {
            Ok(spec) => spec
                .at(address)
                .ok_or_else(|| "no address to reach it at: the process is not running".to_owned()),
            Err(why) => Err(why.to_string()),
        };
        match spec {
            Ok(spec) => fleet_mcp::run_check(&spec, other.cadence.timeout).await,
            Err(message) => failed(
                other.kind,
                CheckFailure::Connect {
                    target: "check".into(),
                    message,
                },
            ),
        }
    }

    /// A remote server: checked like any other, never started or restarted.
    async fn watch_remote(self: Arc<Self>) {
        self.set_state(ServerState::Checking, None);
        match self.become_ready(None).await {
            Ok(()) if self.mark_ready() => {}
            Ok(()) => return,
            Err(why) => {
                let why = why.to_string();
                self.count_check_failure();
                self.fail_readiness(why.clone());
                self.set_state(ServerState::Failed, Some(why));
                return;
            }
        }
        let mcp = self.server.health.mcp.cadence;
        let mut tracker = ready_tracker(&mcp);
        let mut stop = self.stop_requested.subscribe();
        loop {
            tokio::select! {
                _ = async { stop.wait_for(|s| *s).await.is_ok() } => break,
                () = tokio::time::sleep(mcp.interval) => {
                    let report = self.mcp_check(None).await;
                    self.record(&report);
                    if report.outcome.is_err() {
                        self.count_check_failure();
                    }
                    match tracker.observe(&report) {
                        Verdict::Unhealthy => self.set_state(ServerState::Unhealthy, Some(self.describe_failure(&report))),
                        Verdict::Ready => self.set_state(ServerState::Ready, None),
                        Verdict::Pending => {}
                    }
                }
            }
        }
    }
}

fn failed(kind: CheckKind, failure: CheckFailure) -> CheckReport {
    CheckReport {
        kind,
        took: Duration::ZERO,
        outcome: Err(failure),
    }
}

/// A tracker for liveness: it starts where readiness left off, ready.
fn ready_tracker(cadence: &Cadence) -> HealthTracker {
    let mut tracker = HealthTracker::new(cadence);
    while tracker.record(true) != Verdict::Ready {}
    tracker
}

fn exit_text(code: Option<i32>, signal: Option<i32>, out_of_memory: OutOfMemory) -> String {
    let status = match (code, signal) {
        (Some(c), _) => format!("exit code {c}"),
        (None, Some(s)) => format!("signal {s}"),
        (None, None) => "unknown status".into(),
    };
    format!("{status}{}", out_of_memory.describe())
}

/// The last lines an instance printed, for a message on one line.
fn output_text(lines: &[String]) -> String {
    if lines.is_empty() {
        String::new()
    } else {
        format!("; last output: {}", lines.join(" | "))
    }
}

/// A port the OS says is free now. Another program could take it before the server binds
/// it; the server then fails its readiness check with a clear message and is restarted.
fn free_port() -> Result<u16, EngineError> {
    std::net::TcpListener::bind(("127.0.0.1", 0))
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .map_err(EngineError::NoFreePort)
}

fn claim_port(port: u16) -> Result<u16, EngineError> {
    std::net::TcpListener::bind(("127.0.0.1", port))
        .map(|_| port)
        .map_err(|source| {
            if source.kind() == std::io::ErrorKind::AddrInUse {
                EngineError::PortInUse(port)
            } else {
                EngineError::PortUnusable { port, source }
            }
        })
}

fn resolve_check(
    probe: &CheckProbe,
    base_dir: &Path,
    port: Option<u16>,
    target: &Target,
    render: &dyn Fn(&fleet_spec::model::Text) -> Result<String, EngineError>,
) -> Result<OtherSpec, EngineError> {
    let absolute = |p: String| -> PathBuf { base_dir.join(p) };
    let served = matches!(target, Target::Served { .. });
    Ok(OtherSpec::Fixed(match probe {
        CheckProbe::Http {
            target: t,
            expect_status,
        } => {
            let url = if t.starts_with('/') {
                match (port, target) {
                    (_, Target::Served { .. }) => {
                        return Ok(OtherSpec::AtInstance(Relative::Http {
                            path: t.clone(),
                            expect_status: *expect_status,
                        }));
                    }
                    (Some(port), _) => format!("http://127.0.0.1:{port}{t}"),
                    (None, Target::Url { url, .. }) => {
                        let origin = url.splitn(4, '/').take(3).collect::<Vec<_>>().join("/");
                        format!("{origin}{t}")
                    }
                    (None, Target::Stdio(_)) => {
                        return Err(EngineError::HttpCheckNeedsUrl);
                    }
                }
            } else {
                t.clone()
            };
            CheckSpec::Http {
                url,
                expect_status: *expect_status,
            }
        }
        CheckProbe::Tcp { address } => match (address, port) {
            (Some(a), _) => CheckSpec::Tcp { address: a.clone() },
            (None, _) if served => return Ok(OtherSpec::AtInstance(Relative::Tcp)),
            (None, Some(port)) => CheckSpec::Tcp {
                address: format!("127.0.0.1:{port}"),
            },
            (None, None) => {
                return Err(EngineError::TcpCheckNeedsAddress);
            }
        },
        CheckProbe::Command { command, args } => CheckSpec::Command {
            program: resolve_program(&render(command)?, base_dir),
            args: args.iter().map(render).collect::<Result<_, _>>()?,
            cwd: Some(base_dir.to_path_buf()),
        },
        CheckProbe::File { path } => CheckSpec::File {
            path: absolute(render(path)?),
        },
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_exit_message_says_out_of_memory_and_shows_the_last_output() {
        assert_eq!(exit_text(Some(1), None, OutOfMemory::No), "exit code 1");
        assert_eq!(
            exit_text(Some(137), None, OutOfMemory::Reported),
            "exit code 137, out of memory: killed for exceeding its memory limit"
        );
        assert!(
            exit_text(Some(137), None, OutOfMemory::Likely { limit: 32 << 20 })
                .starts_with("exit code 137, probably out of memory: killed by SIGKILL under its 32 MiB memory limit")
        );
        assert_eq!(output_text(&[]), "");
        assert_eq!(
            output_text(&["error: bad flag".into(), "usage: x".into()]),
            "; last output: error: bad flag | usage: x"
        );
    }

    fn served() -> Target {
        Target::Served {
            path: "/mcp".into(),
            address: Mutex::new(None),
        }
    }

    fn resolve(probe: &CheckProbe, port: Option<u16>, target: &Target) -> OtherSpec {
        let render = |_: &fleet_spec::model::Text| -> Result<String, EngineError> {
            unreachable!("http and tcp checks render nothing")
        };
        resolve_check(probe, Path::new("/"), port, target, &render).expect("resolves")
    }

    #[test]
    fn a_served_instances_relative_checks_follow_the_address_the_runtime_reports() {
        let http = CheckProbe::Http {
            target: "/healthz".into(),
            expect_status: Some(204),
        };
        let tcp = CheckProbe::Tcp { address: None };
        // The configured port is not where a runtime may publish it (a container's host
        // port): the checks use the reported address, whatever the port says.
        let reported: SocketAddr = "10.0.0.7:31000".parse().unwrap();
        let http = resolve(&http, Some(8080), &served());
        assert_eq!(
            http.at(Some(reported)),
            Some(CheckSpec::Http {
                url: "http://10.0.0.7:31000/healthz".into(),
                expect_status: Some(204),
            })
        );
        assert_eq!(http.at(None), None, "not running: no address yet");
        let tcp = resolve(&tcp, Some(8080), &served());
        assert_eq!(
            tcp.at(Some(reported)),
            Some(CheckSpec::Tcp {
                address: "10.0.0.7:31000".into()
            })
        );
    }

    #[test]
    fn checks_with_their_own_address_or_of_a_stdio_server_stay_as_written() {
        let tcp = CheckProbe::Tcp {
            address: Some("127.0.0.1:5432".into()),
        };
        let fixed = resolve(&tcp, Some(8080), &served());
        assert_eq!(
            fixed.at(None),
            Some(CheckSpec::Tcp {
                address: "127.0.0.1:5432".into()
            })
        );
        let own_port = CheckProbe::Tcp { address: None };
        let stdio = Target::Stdio(Isolation::Shared);
        assert_eq!(
            resolve(&own_port, Some(9000), &stdio).at(None),
            Some(CheckSpec::Tcp {
                address: "127.0.0.1:9000".into()
            })
        );
    }
}
