//! Commands that run a fleet or talk to its control plane: `up`, `status`, `metrics`,
//! `logs`, `check`, `down`. Exit codes: 0 success, 1 the fleet (or a check) failed, 2 usage
//! or I/O error, 3 no control plane is running.

use crate::commands::{check as check_file, print_diagnostics};
use crate::traces::Traces;
use anyhow::{Context, Result, bail};
use fleet_api::types::{DeploymentState, Event, EventKind, ServerState, Status};
use fleet_api::{Client, ClientError};
use fleet_control::{ControlPlane, StateDir, Submission, default_state_dir, to_api};
use fleet_spec::model::{LogFormat, ValidFleet, human_duration};
use std::io::IsTerminal;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::{Duration, Instant};

const FAILED: u8 = 1;
const NOT_RUNNING: u8 = 3;
/// The hidden flag a detached control plane is started with.
pub(crate) const DETACHED_CHILD: &str = "--detached-child";

/// Where a fleet's state lives: `--state-dir`, else derived from the fleet's name.
pub(crate) fn state_dir_of(file: &Path, explicit: Option<PathBuf>) -> Result<PathBuf> {
    if let Some(dir) = explicit {
        return Ok(dir);
    }
    Ok(default_state_dir(&fleet_name(file)?))
}

/// The `name:` of the fleet file, read without validating the rest.
fn fleet_name(file: &Path) -> Result<String> {
    let text = std::fs::read_to_string(file).with_context(|| {
        format!(
            "cannot read {} to find the fleet's name; pass the fleet file (-f FILE) or --state-dir",
            file.display()
        )
    })?;
    fleet_spec::yaml::parse(&text)
        .ok()
        .and_then(|root| {
            root.get("name")
                .and_then(|n| n.as_str().map(str::to_string))
        })
        .with_context(|| format!("{} has no `name:`; pass --state-dir", file.display()))
}

/// Whether mcpfleet can run `fleet` where its file puts it; on Kubernetes every server
/// that cannot run in the cluster is shown, located in the file, before anything starts.
fn runs_on_its_runtime(fleet: &ValidFleet, source: &fleet_spec::Source) -> bool {
    if fleet.runtime != fleet_spec::model::RuntimeKind::Kubernetes {
        return true;
    }
    match fleet_manifests::check_runnable(fleet) {
        Ok(()) => true,
        Err(error) => {
            eprint!(
                "{}",
                fleet_spec::diag::render_all(&error.diagnostics(), source)
            );
            false
        }
    }
}

/// Whether the control plane may serve `fleet`'s gateway on every address (`up
/// --pod-network`): as for a `gateway.listen` beyond loopback, with tokens and TLS. What
/// is missing is shown, located in the file, before anything starts.
fn serves_a_pod_network(fleet: &ValidFleet, source: &fleet_spec::Source) -> bool {
    let problems = fleet_manifests::pod_network_problems(fleet);
    if problems.is_empty() {
        return true;
    }
    let diagnostics = fleet_manifests::RenderError { problems }.diagnostics();
    eprint!("{}", fleet_spec::diag::render_all(&diagnostics, source));
    false
}

pub(crate) struct UpArgs {
    pub file: PathBuf,
    pub environment: Option<String>,
    pub detach: bool,
    /// `--pod-network`: the listeners on every address, under the rules of a gateway
    /// beyond loopback.
    pub pod_network: bool,
    pub detached_child: bool,
    pub state_dir: Option<PathBuf>,
    pub json: bool,
    /// `--log-format`; else the fleet file says.
    pub log_format: Option<LogFormat>,
}

pub(crate) async fn up(args: UpArgs) -> Result<ExitCode> {
    let checked = check_file(&args.file, args.environment.clone())?;
    // A detached control plane's `up -d` has just shown the warnings of the same file: its
    // log need not repeat them.
    if !(args.detached_child && checked.is_valid()) {
        print_diagnostics(&checked);
    }
    let located = checked.source.clone();
    let source = checked.source.text.to_string();
    let Ok(fleet) = checked.into_valid() else {
        return Ok(ExitCode::from(FAILED));
    };
    if !runs_on_its_runtime(&fleet, &located)
        || (args.pod_network && !serves_a_pod_network(&fleet, &located))
    {
        return Ok(ExitCode::from(FAILED));
    }
    let log_format = args.log_format.unwrap_or(fleet.logging.format);
    let host = std::sync::Arc::new(fleet_spec::template::SystemHost);
    // Only the process that runs the control plane exports; `up -d` checks the settings
    // before it starts one, so their errors reach the terminal.
    let traces = if args.detach && !args.detached_child {
        Traces::check(&fleet, host.clone())?;
        None
    } else {
        Traces::start(&fleet, host.clone())?
    };
    crate::logging::init(
        args.detached_child,
        log_format,
        &fleet.name,
        traces.as_ref(),
    );
    let result = run_up(args, fleet, source, log_format, host).await;
    if let Some(traces) = traces {
        traces.shutdown().await;
    }
    result
}

/// `up` once the file is valid and the log started.
async fn run_up(
    args: UpArgs,
    fleet: ValidFleet,
    source: String,
    log_format: LogFormat,
    host: std::sync::Arc<fleet_spec::template::SystemHost>,
) -> Result<ExitCode> {
    let plan = fleet_plan::plan(&fleet, None)
        .map_err(|_| anyhow::anyhow!("the dependency graph has a cycle"))?;
    let state_dir = args
        .state_dir
        .clone()
        .unwrap_or_else(|| default_state_dir(&fleet.name));
    if Client::new(&state_dir).is_running().await {
        bail!(
            "a control plane is already running for fleet `{}` ({}); see `mcpfleet status`, or stop it with `mcpfleet down`",
            fleet.name,
            state_dir.display()
        );
    }
    // A cluster that cannot take the fleet says so in one line: before the plan, and
    // before the state directory (or anything in it) exists.
    fleet_control::check_cluster(&fleet, &args.file, args.environment.as_deref()).await?;
    if args.detach && !args.detached_child {
        // Here, not only in the background process: its errors go to its log.
        fleet_control::gateway_tls(&fleet)?;
        fleet_control::session_keys(&fleet, host.clone())?;
        return detach(&args, &state_dir, log_format).await;
    }
    let dir = StateDir::acquire(&state_dir)?;
    let mut output = Progress::new(args.json || args.detached_child);
    // A detached control plane's JSON log already has each event as a line of its own.
    output.quiet = args.detached_child && log_format == LogFormat::Json;
    if !args.detached_child {
        output.plan(&plan);
    }
    let submission = Submission {
        fleet,
        source,
        path: absolute(&args.file).display().to_string(),
        author: author(),
        reason: None,
        kind: fleet_control::DeploymentKind::Deploy,
    };
    let listen = if args.pod_network {
        fleet_control::Listen::PodNetwork
    } else {
        fleet_control::Listen::AsWritten
    };
    let plane = ControlPlane::start(submission, dir, host, listen).await?;
    let (history, mut live) = plane.engine().subscribe();
    for event in history {
        output.event(&to_api::event(event));
    }
    let outcome = loop {
        tokio::select! {
            event = live.recv() => if let Ok(event) = event { output.event(&to_api::event(event)) },
            outcome = plane.deployment() => break outcome,
        }
    };
    while let Ok(event) = live.try_recv() {
        output.event(&to_api::event(event));
    }
    let status = plane.status();
    output.summary(&status);
    let state = to_api::deployment_state(outcome.state);
    match state {
        // Interrupted (Ctrl-C, SIGTERM, `down`) while deploying: everything is stopping.
        DeploymentState::Stopping | DeploymentState::Stopped => {
            plane.run_until_shutdown().await;
            return Ok(ExitCode::from(FAILED));
        }
        // Nothing runs any more. A detached control plane gives its `up -d` time to read
        // the outcome (it then stops it), and stops by itself if nobody does.
        DeploymentState::RolledBack => {
            if args.detached_child {
                plane.request_shutdown_after(Duration::from_secs(30));
            } else {
                plane.request_shutdown();
            }
            plane.run_until_shutdown().await;
            return Ok(ExitCode::from(FAILED));
        }
        _ => {}
    }
    if !args.detached_child && !args.json {
        eprintln!(
            "\nmcpfleet keeps the fleet running; Ctrl-C stops it (or `mcpfleet down` from another terminal)."
        );
    }
    let printer = tokio::spawn(async move {
        while let Ok(event) = live.recv().await {
            output.event(&to_api::event(event));
        }
    });
    plane.run_until_shutdown().await;
    printer.abort();
    Ok(if state == DeploymentState::Succeeded {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(FAILED)
    })
}

/// `up -d`: start the control plane as a background process, follow its deployment, return.
async fn detach(args: &UpArgs, state_dir: &Path, log_format: LogFormat) -> Result<ExitCode> {
    // Creates the directory (0700) and checks nobody holds it, then lets the child take it.
    drop(StateDir::acquire(state_dir)?);
    let log = state_dir.join("control.log");
    let log_file = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&log)
        .with_context(|| format!("cannot open {}", log.display()))?;
    // Where this run's lines start: earlier runs' are in the same log.
    let run_starts = log_file.metadata().map(|m| m.len()).unwrap_or(0);
    let exe = std::env::current_exe().context("cannot find the mcpfleet executable")?;
    let mut command = tokio::process::Command::new(exe);
    command
        .arg("up")
        .arg("--file")
        .arg(&args.file)
        .arg("--state-dir")
        .arg(state_dir)
        .arg("--log-format")
        .arg(match log_format {
            LogFormat::Text => "text",
            LogFormat::Json => "json",
        })
        .arg(DETACHED_CHILD);
    if let Some(env) = &args.environment {
        command.arg("--env").arg(env);
    }
    if args.pod_network {
        command.arg("--pod-network");
    }
    command
        .stdin(std::process::Stdio::null())
        .stdout(log_file.try_clone()?)
        .stderr(log_file)
        // Its own process group: Ctrl-C in this terminal must not reach it.
        .process_group(0);
    let mut child = command.spawn().context("cannot start the control plane")?;
    let client = Client::new(state_dir);
    let started = Instant::now();
    while !client.is_running().await {
        if let Some(status) = child.try_wait()? {
            bail!(
                "the control plane exited ({status}) before it was up: {}\n(its log: {})",
                why_it_stopped(&log, run_starts),
                log.display()
            );
        }
        if let Some(standing_by) = standing_by(&log, run_starts) {
            // It serves nothing until it leads: there is no deployment to follow.
            eprintln!(
                "the control plane is {standing_by}\n(its log: {})",
                log.display()
            );
            return Ok(ExitCode::SUCCESS);
        }
        if started.elapsed() > Duration::from_secs(30) {
            bail!(
                "the control plane did not open its socket within 30s; see {}",
                log.display()
            );
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let output = Progress::new(args.json);
    // This run's events only: the store's history holds earlier runs' deployments too.
    let mut events = client.run_events(true).await?;
    // A broken stream is judged below, by whether the control plane still answers.
    while let Ok(Some(event)) = events.next_event().await {
        output.event(&event);
        if matches!(
            event.kind,
            EventKind::DeploymentCompleted | EventKind::DeploymentFailed
        ) {
            break;
        }
    }
    let Ok(status) = client.status().await else {
        // The control plane ended before its deployment did: that deployment failed.
        eprintln!(
            "the control plane stopped during the deployment: {}\n(its log: {})",
            why_it_stopped(&log, run_starts),
            log.display()
        );
        return Ok(ExitCode::from(FAILED));
    };
    output.summary(&status);
    if status.deployment.state == DeploymentState::RolledBack {
        // Nothing runs any more: stop the control plane too.
        let mut stopping = client.shutdown().await?;
        while stopping.next_line().await?.is_some() {}
        return Ok(ExitCode::from(FAILED));
    }
    if !args.json {
        eprintln!(
            "\nthe control plane runs in the background (pid {}); stop it with `mcpfleet down`",
            status.pid
        );
    }
    Ok(if status.deployment.state == DeploymentState::Succeeded {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(FAILED)
    })
}

/// Why a detached control plane stopped, from what it wrote to `log` after byte `from`:
/// its `error:` lines (the binary prints its reason so, or logs it as a JSON line of level
/// `ERROR`), else its last lines.
fn why_it_stopped(log: &Path, from: u64) -> String {
    /// Enough to hold a reason and its context, not a whole run's progress.
    const LAST_LINES: usize = 5;
    let run = this_run(log, from);
    let lines: Vec<&str> = run.lines().filter(|l| !l.trim().is_empty()).collect();
    let errors: Vec<String> = lines
        .iter()
        .filter_map(|l| match l.strip_prefix("error:") {
            Some(reason) => Some(reason.trim().to_owned()),
            None => logged_error(l),
        })
        .collect();
    if !errors.is_empty() {
        return errors.join("; ");
    }
    match lines.len() {
        0 => "it wrote no reason".into(),
        n => lines[n.saturating_sub(LAST_LINES)..].join("\n"),
    }
}

/// The line in which a control plane started at `from` in `log` says it stands by for
/// another that leads its fleet, from `standing by:` on (text or JSON log).
fn standing_by(log: &Path, from: u64) -> Option<String> {
    let run = this_run(log, from);
    let line = run
        .lines()
        .find(|l| l.contains(fleet_control::STANDING_BY))?;
    let message = match serde_json::from_str::<serde_json::Value>(line) {
        Ok(json) => json.get("message")?.as_str()?.to_owned(),
        Err(_) => line.to_owned(),
    };
    let at = message.find(fleet_control::STANDING_BY)?;
    Some(message[at..].to_owned())
}

/// What the control plane started at byte `from` of `log` wrote there (nothing if the log
/// cannot be read).
fn this_run(log: &Path, from: u64) -> String {
    let text = std::fs::read(log).unwrap_or_default();
    String::from_utf8_lossy(text.get(from as usize..).unwrap_or_default()).into_owned()
}

/// The message of a JSON log line of level `ERROR`.
fn logged_error(line: &str) -> Option<String> {
    let line: serde_json::Value = serde_json::from_str(line).ok()?;
    if line.get("level")?.as_str()? != "ERROR" {
        return None;
    }
    Some(line.get("message")?.as_str()?.to_owned())
}

/// `path` made absolute against the working directory (as it is, if that fails).
fn absolute(path: &Path) -> PathBuf {
    std::path::absolute(path).unwrap_or_else(|_| path.to_path_buf())
}

/// Who runs this command, as revisions record it: `user@host`. The user is `$USER`, else
/// the name of this process's uid (`$USER` is often unset in containers and services),
/// else `uid N`.
pub(crate) fn author() -> String {
    let user = std::env::var("USER")
        .ok()
        .filter(|user| !user.is_empty())
        .or_else(user_of_this_uid)
        .unwrap_or_else(|| "unknown".into());
    format!("{user}@{}", fleet_control::hostname())
}

/// The name `/etc/passwd` gives this process's real uid, else `uid N`.
fn user_of_this_uid() -> Option<String> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let uid: u32 = status
        .lines()
        .find_map(|line| line.strip_prefix("Uid:"))?
        .split_whitespace()
        .next()?
        .parse()
        .ok()?;
    let passwd = std::fs::read_to_string("/etc/passwd").unwrap_or_default();
    Some(user_named_in(&passwd, uid).unwrap_or_else(|| format!("uid {uid}")))
}

/// The user name of `uid` in a `passwd` file's text (`name:password:uid:…` lines).
fn user_named_in(passwd: &str, uid: u32) -> Option<String> {
    passwd.lines().find_map(|line| {
        let mut fields = line.split(':');
        let name = fields.next()?;
        let listed: u32 = fields.nth(1)?.parse().ok()?;
        (listed == uid && !name.is_empty()).then(|| name.to_owned())
    })
}

pub(crate) struct GatewayArgs {
    pub file: PathBuf,
    pub environment: Option<String>,
    /// `--listen`; else `gateway.listen`.
    pub listen: Option<std::net::SocketAddr>,
    /// `--pod-network`.
    pub pod_network: bool,
    /// `--metrics-listen`.
    pub metrics: Option<std::net::SocketAddr>,
    /// `--log-format`; else the fleet file says.
    pub log_format: Option<LogFormat>,
}

/// `mcpfleet gateway`: a gateway replica of the fleet, in the foreground until a signal.
pub(crate) async fn gateway(args: GatewayArgs) -> Result<ExitCode> {
    let checked = check_file(&args.file, args.environment.clone())?;
    print_diagnostics(&checked);
    let located = checked.source.clone();
    let Ok(fleet) = checked.into_valid() else {
        return Ok(ExitCode::from(FAILED));
    };
    if fleet.state.is_local() {
        let mut needs = fleet_spec::diag::Diagnostic::error(
            format!(
                "`mcpfleet gateway` cannot run: {}",
                fleet_control::NEEDS_POSTGRES
            ),
            None,
        );
        needs.help = Some(
            "put the fleet's state in PostgreSQL (`state: { postgres: { url: \"{{ secret('state_db') }}\" } }`, see docs/running.md), or name the environment whose overlay does with --env".into(),
        );
        eprint!("{}", fleet_spec::diag::render_all(&[needs], &located));
        return Ok(ExitCode::from(FAILED));
    }
    if args.pod_network && !serves_a_pod_network(&fleet, &located) {
        return Ok(ExitCode::from(FAILED));
    }
    let log_format = args.log_format.unwrap_or(fleet.logging.format);
    let host = std::sync::Arc::new(fleet_spec::template::SystemHost);
    let traces = Traces::start(&fleet, host.clone())?;
    // A replica is a service: its log says what it follows, as a detached control plane's.
    crate::logging::init(true, log_format, &fleet.name, traces.as_ref());
    let name = fleet.name.clone();
    let listen = match (args.listen, args.pod_network) {
        (_, true) => fleet_control::ReplicaListen::PodNetwork,
        (Some(address), false) => fleet_control::ReplicaListen::At(address),
        (None, false) => fleet_control::ReplicaListen::AsWritten,
    };
    let started = fleet_control::Replica::start(fleet, host, listen, args.metrics).await;
    let result = match started {
        Ok(replica) => {
            tracing::info!(
                "gateway replica of fleet `{name}` serving at {} (following {})",
                replica.url(),
                replica.store()
            );
            if let Some(metrics) = replica.metrics_url() {
                tracing::info!("its metrics at {metrics}");
            }
            replica.run_until_signal().await;
            Ok(ExitCode::SUCCESS)
        }
        Err(e) => Err(e.into()),
    };
    if let Some(traces) = traces {
        traces.shutdown().await;
    }
    result
}

pub(crate) struct DeployArgs {
    pub file: PathBuf,
    pub environment: Option<String>,
    pub state_dir: Option<PathBuf>,
    pub reason: Option<String>,
    pub json: bool,
}

/// `deploy`: validate the file, show what would change against what runs, and deploy it
/// through the running control plane, following its events.
pub(crate) async fn deploy(args: &DeployArgs) -> Result<ExitCode> {
    let checked = check_file(&args.file, args.environment.clone())?;
    print_diagnostics(&checked);
    let located = checked.source.clone();
    let source = checked.source.text.to_string();
    let Ok(fleet) = checked.into_valid() else {
        return Ok(ExitCode::from(FAILED));
    };
    if !runs_on_its_runtime(&fleet, &located) {
        return Ok(ExitCode::from(FAILED));
    }
    let state_dir = args
        .state_dir
        .clone()
        .unwrap_or_else(|| default_state_dir(&fleet.name));
    let client = Client::new(&state_dir);
    let deployed = match client.deployed().await {
        Ok(deployed) => deployed,
        Err(e @ ClientError::NotRunning { .. }) => {
            eprintln!("{e}");
            return Ok(ExitCode::from(NOT_RUNNING));
        }
        Err(e) => return Err(e.into()),
    };
    let deployed: fleet_plan::DeployedFleet = deployed
        .into_iter()
        .map(|s| fleet_plan::DeployedServer {
            name: s.name,
            hash: s.hash,
            spec: s.spec,
        })
        .collect();
    let plan = fleet_plan::plan(&fleet, Some(&deployed))
        .map_err(|_| anyhow::anyhow!("the dependency graph has a cycle"))?;
    let output = Progress::new(args.json);
    // Fleet-wide settings change too: tokens and limits while the control plane runs;
    // a changed listener is refused by it, saying what to do. Never "nothing to deploy"
    // for a file that changes anything.
    let settings = fleet_control::changed_keys(
        &client.settings().await?,
        &fleet_control::fleet_settings(&fleet),
    );
    if !args.json {
        // The servers' plan; "no changes" only when nothing else changes either.
        if !plan.changes.is_empty() || settings.is_empty() {
            eprint!("{}", fleet_plan::render_text(&plan));
        }
        for key in &settings {
            if fleet_control::LIVE_SETTINGS.contains(&key.as_str()) {
                eprintln!("~ {key} (applied without a restart)");
            } else {
                eprintln!("~ {key} (needs a restart)");
            }
        }
    }
    if plan.changes.is_empty() && settings.is_empty() {
        if !args.json {
            eprintln!("nothing to deploy: the running fleet matches this file");
        }
        return Ok(ExitCode::SUCCESS);
    }
    let request = fleet_api::types::DeployRequest {
        source,
        path: absolute(&args.file).display().to_string(),
        environment: args.environment.clone(),
        reason: args.reason.clone(),
        author: author(),
    };
    follow(&client, client.deploy(&request).await, output).await
}

/// `deploy --watch`: deploy, then deploy again whenever the file's content changes, until
/// Ctrl-C or the control plane goes away (exit 3). An invalid or failed revision is
/// reported and the watch goes on.
pub(crate) async fn deploy_watch(args: DeployArgs) -> Result<ExitCode> {
    let read = || std::fs::read(&args.file).ok();
    let mut seen = read();
    loop {
        let code = deploy(&args).await?;
        if code == ExitCode::from(NOT_RUNNING) {
            return Ok(code);
        }
        if !args.json {
            eprintln!(
                "\nwatching {} for changes (Ctrl-C stops)",
                args.file.display()
            );
        }
        // A poll, not inotify: editors replace files in ways a watch can miss, and a
        // fleet file is tiny.
        loop {
            tokio::select! {
                _ = tokio::signal::ctrl_c() => return Ok(ExitCode::SUCCESS),
                () = tokio::time::sleep(Duration::from_millis(300)) => {}
            }
            let now = read();
            if now.is_some() && now != seen {
                seen = now;
                break;
            }
        }
    }
}

/// `rollback`: go back to a stored revision through the running control plane, following
/// the deployment's events.
pub(crate) async fn rollback(
    file: &Path,
    state_dir: Option<PathBuf>,
    request: fleet_api::types::RollbackRequest,
    json: bool,
) -> Result<ExitCode> {
    let client = Client::new(&state_dir_of(file, state_dir)?);
    if !client.is_running().await {
        eprintln!("no control plane is running for this fleet; start one with `mcpfleet up`");
        return Ok(ExitCode::from(NOT_RUNNING));
    }
    follow(
        &client,
        client.rollback(&request).await,
        Progress::new(json),
    )
    .await
}

/// Prints a deployment's events as they come, then the fleet's status; exit 0 only if it
/// succeeded.
async fn follow(
    client: &Client,
    started: Result<fleet_api::Lines, ClientError>,
    output: Progress,
) -> Result<ExitCode> {
    let mut events = match started {
        Ok(events) => events,
        Err(ClientError::Api { message, .. }) => {
            eprintln!("{message}");
            return Ok(ExitCode::from(FAILED));
        }
        Err(e) => return Err(e.into()),
    };
    while let Some(event) = events.next_event().await? {
        output.event(&event);
    }
    let status = client.status().await?;
    output.summary(&status);
    Ok(if status.deployment.state == DeploymentState::Succeeded {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(FAILED)
    })
}

/// Runs a client call; a missing control plane is exit code 3.
pub(crate) async fn with_client<T>(
    file: &Path,
    state_dir: Option<PathBuf>,
    call: impl AsyncFnOnce(Client) -> Result<T, ClientError>,
) -> Result<Result<T, ExitCode>> {
    let client = Client::new(&state_dir_of(file, state_dir)?);
    match call(client).await {
        Ok(v) => Ok(Ok(v)),
        Err(e @ ClientError::NotRunning { .. }) => {
            eprintln!("{e}");
            Ok(Err(ExitCode::from(NOT_RUNNING)))
        }
        Err(e) => Err(e.into()),
    }
}

/// `promote`, `abort`, `pause`, `resume`: steer a server's rollout.
pub(crate) async fn steer(
    file: &Path,
    state_dir: Option<PathBuf>,
    server: &str,
    command: &str,
) -> Result<ExitCode> {
    match with_client(file, state_dir, async |c| c.steer(server, command).await).await {
        Ok(Ok(())) => {
            eprintln!("{command}: sent to the rollout of `{server}`");
            Ok(ExitCode::SUCCESS)
        }
        Ok(Err(code)) => Ok(code),
        Err(e) => {
            eprintln!("error: {e:#}");
            Ok(ExitCode::from(FAILED))
        }
    }
}

/// What `status` shows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum StatusView {
    /// Every server, with its rollout if one runs.
    Servers,
    /// The servers, then one row per instance (`status -w`).
    Wide,
    /// Only the instance rows (`ps`); in JSON, a list of instances with their `server`.
    Instances,
}

/// `status` and `ps`: the running fleet's state, as `view` says.
pub(crate) async fn status(
    file: &Path,
    state_dir: Option<PathBuf>,
    view: StatusView,
    json: bool,
) -> Result<ExitCode> {
    let status = match with_client(file, state_dir, async |c| c.status().await).await? {
        Ok(s) => s,
        Err(code) => return Ok(code),
    };
    match (view, json) {
        (StatusView::Instances, true) => {
            let mut rows = Vec::new();
            for server in &status.servers {
                for instance in &server.instances {
                    let mut row = serde_json::to_value(instance)?;
                    row["server"] = server.name.clone().into();
                    rows.push(row);
                }
            }
            println!("{}", serde_json::to_string_pretty(&rows)?);
        }
        (_, true) => println!("{}", serde_json::to_string_pretty(&status)?),
        (StatusView::Instances, false) => print_instances(&status),
        (StatusView::Servers, false) => Progress::new(false).summary(&status),
        (StatusView::Wide, false) => {
            Progress::new(false).summary(&status);
            println!();
            print_instances(&status);
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// `restart`: replaces a server's instances one at a time through the control plane.
pub(crate) async fn restart(
    file: &Path,
    state_dir: Option<PathBuf>,
    server: &str,
    json: bool,
) -> Result<ExitCode> {
    if !json {
        eprintln!(
            "restarting `{server}`: one instance at a time, each replacement checked before the old one stops"
        );
    }
    match with_client(file, state_dir, async |c| c.restart(server).await).await {
        Ok(Ok(done)) => {
            if json {
                println!("{}", serde_json::to_string_pretty(&done)?);
            } else {
                let n = done.instances;
                eprintln!(
                    "restarted `{server}`: {n} instance{} of revision {} replaced",
                    if n == 1 { "" } else { "s" },
                    done.revision
                );
            }
            Ok(ExitCode::SUCCESS)
        }
        Ok(Err(code)) => Ok(code),
        Err(e) => {
            eprintln!("error: {e:#}");
            Ok(ExitCode::from(FAILED))
        }
    }
}

/// The Prometheus text as the control plane renders it; `--output json` changes nothing (the
/// format is for machines already).
pub(crate) async fn metrics(file: &Path, state_dir: Option<PathBuf>) -> Result<ExitCode> {
    let text = match with_client(file, state_dir, async |c| c.metrics().await).await? {
        Ok(t) => t,
        Err(code) => return Ok(code),
    };
    print!("{text}");
    Ok(ExitCode::SUCCESS)
}

pub(crate) async fn check(file: &Path, state_dir: Option<PathBuf>, json: bool) -> Result<ExitCode> {
    let run = match with_client(file, state_dir, async |c| c.check().await).await? {
        Ok(r) => r,
        Err(code) => return Ok(code),
    };
    if json {
        println!("{}", serde_json::to_string_pretty(&run)?);
    } else {
        for instance in &run.results {
            for c in &instance.checks {
                let mark = if c.passed { "ok  " } else { "FAIL" };
                println!(
                    "{mark} {:<24} {:<8} {:>8}  {}",
                    instance.instance,
                    c.kind,
                    millis_for_people(c.took_ms),
                    c.detail
                );
            }
        }
        if run.results.is_empty() {
            println!("no running instance to check");
        }
    }
    Ok(if run.passed {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(FAILED)
    })
}

pub(crate) async fn logs(
    file: &Path,
    state_dir: Option<PathBuf>,
    server: &str,
    lines: usize,
    follow: bool,
) -> Result<ExitCode> {
    let mut stream = match with_client(file, state_dir, async |c| {
        c.logs(server, lines, follow).await
    })
    .await?
    {
        Ok(s) => s,
        Err(code) => return Ok(code),
    };
    while let Some(line) = stream.next_line().await? {
        println!("{line}");
    }
    Ok(ExitCode::SUCCESS)
}

/// How many stored events one read of a stopped fleet's store takes.
const EVENT_PAGE: usize = 1_000;

/// `events`: every recorded event (earlier runs' too), then with `follow` live ones. A
/// stopped fleet's events are read from its store.
pub(crate) async fn events(
    file: &Path,
    state_dir: Option<PathBuf>,
    environment: Option<String>,
    after: u64,
    follow: bool,
    json: bool,
) -> Result<ExitCode> {
    let output = Progress {
        to_stdout: true,
        ..Progress::new(json)
    };
    let show = |record: &fleet_api::types::EventRecord| -> Result<()> {
        output.recorded(record);
        Ok(())
    };
    match crate::record::read(file, state_dir, environment).await? {
        crate::record::Source::Running(client) => {
            let mut stream = client.events_after(after, follow).await?;
            while let Some(record) = stream.next_record().await? {
                show(&record)?;
            }
        }
        crate::record::Source::Stopped(fleet) => {
            let mut last = after;
            while let Some(fleet) = &fleet {
                let page = fleet_control::record::events(fleet.store(), last, EVENT_PAGE).await?;
                let Some(end) = page.last() else { break };
                last = end.id;
                for record in &page {
                    show(record)?;
                }
            }
            if follow {
                eprintln!("no control plane is running for this fleet: no more events will come");
            }
        }
        crate::record::Source::Failed(code) => return Ok(code),
    }
    Ok(ExitCode::SUCCESS)
}

pub(crate) async fn down(file: &Path, state_dir: Option<PathBuf>, json: bool) -> Result<ExitCode> {
    let dir = state_dir_of(file, state_dir)?;
    let client = Client::new(&dir);
    let mut events = match client.shutdown().await {
        Ok(events) => events,
        Err(ClientError::NotRunning { .. }) => {
            // Say where it looked: a wrong fleet file or --state-dir is the usual cause.
            match fleet_name(file) {
                Ok(name) => eprintln!(
                    "nothing running for fleet `{name}` (state directory {})",
                    dir.display()
                ),
                Err(_) => eprintln!("nothing running in state directory {}", dir.display()),
            }
            return Ok(ExitCode::SUCCESS);
        }
        Err(e) => return Err(e.into()),
    };
    let output = Progress::new(json);
    while let Some(event) = events.next_event().await? {
        output.event(&event);
    }
    // The answer ends when the servers are stopped; the process exits right after, and
    // its lock on the state directory goes with it. Waiting for the lock, not only for the
    // admin socket to close (which happens first), means a command run next (`plan`, `up`)
    // finds the fleet stopped.
    let started = Instant::now();
    while StateDir::acquire(&dir).is_err() && started.elapsed() < Duration::from_secs(10) {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    if !json {
        eprintln!("stopped every server of the fleet and its control plane");
    }
    Ok(ExitCode::SUCCESS)
}

/// Progress output: readable lines on a terminal, timestamped lines otherwise, JSON lines
/// with `--output json`.
#[derive(Clone, Copy)]
struct Progress {
    json: bool,
    /// Prints nothing: what it would print is in the log already.
    quiet: bool,
    tty: bool,
    /// Events are the output itself (`events`), not progress beside it (`up`, `down`).
    to_stdout: bool,
}

impl Progress {
    fn new(json: bool) -> Self {
        Progress {
            json,
            quiet: false,
            tty: std::io::stderr().is_terminal(),
            to_stdout: false,
        }
    }

    fn line(&self, text: String) {
        if self.to_stdout {
            println!("{text}");
        } else {
            eprintln!("{text}");
        }
    }

    fn plan(&self, plan: &fleet_plan::Plan) {
        if self.json || self.quiet {
            return;
        }
        for wave in &plan.waves {
            let names: Vec<&str> = wave.servers.iter().map(|s| s.name.as_str()).collect();
            eprintln!("wave {}: {}", wave.index, names.join(", "));
        }
    }

    fn event(&self, event: &Event) {
        if self.quiet {
            return;
        }
        if self.json {
            println!("{}", serde_json::to_string(event).unwrap_or_default());
        } else {
            self.event_line(event, None);
        }
    }

    /// An event the store recorded, with its id: the number `--after` takes to page or
    /// resume.
    fn recorded(&self, record: &fleet_api::types::EventRecord) {
        if self.json {
            println!("{}", serde_json::to_string(record).unwrap_or_default());
        } else {
            self.event_line(&record.event, Some(record.id));
        }
    }

    fn event_line(&self, event: &Event, id: Option<u64>) {
        let id = id.map(|id| format!("#{id} ")).unwrap_or_default();
        let who = event
            .instance
            .as_deref()
            .or(event.server.as_deref())
            .unwrap_or("fleet");
        let mark = match event.kind {
            EventKind::ServerReady
            | EventKind::DeploymentCompleted
            | EventKind::HealthCheckPassed => "✓",
            EventKind::ServerFailed
            | EventKind::DeploymentFailed
            | EventKind::HealthCheckFailed
            | EventKind::CrashLooping => "✗",
            EventKind::InstanceExited | EventKind::RollbackStarted => "!",
            _ => "·",
        };
        if self.tty {
            let time = event.time.get(11..23).unwrap_or(&event.time);
            self.line(format!("{id}{time} {mark} {who}: {}", event.message));
        } else {
            self.line(format!(
                "{id}{} {who} {}: {}",
                event.time, event.kind, event.message
            ));
        }
    }

    fn summary(&self, status: &Status) {
        if self.quiet {
            return;
        }
        if self.json {
            println!("{}", serde_json::to_string(status).unwrap_or_default());
            return;
        }
        println!();
        println!(
            "fleet {}: deployment {}{}",
            status.fleet,
            status.deployment.state,
            status
                .deployment
                .reason
                .as_deref()
                .map(|r| format!(" ({r})"))
                .unwrap_or_default()
        );
        if let Some(admin) = &status.admin_url {
            println!("admin: {admin} (metrics at {admin}/metrics)");
        }
        println!(
            "{:<20} {:<14} {:<7} {:>4} {:>8}  ENDPOINT / REASON",
            "SERVER", "STATE", "KIND", "REV", "RESTARTS"
        );
        for s in &status.servers {
            let restarts: u32 = s.instances.iter().map(|i| i.restarts).sum();
            let where_ = match (&s.reason, &s.endpoint, s.state) {
                (Some(reason), _, st) if st != ServerState::Ready => reason.clone(),
                (_, Some(endpoint), _) => endpoint.clone(),
                _ if s.transport == "stdio" => "stdio (the gateway will give it a URL)".into(),
                _ => String::new(),
            };
            let revision = s.revision.map_or_else(|| "-".into(), |r| r.to_string());
            println!(
                "{:<20} {:<14} {:<7} {:>4} {:>8}  {}",
                s.name, s.state, s.transport, revision, restarts, where_
            );
            for line in rollout_lines(s) {
                println!("    {line}");
            }
        }
    }
}

/// What a server's rollout is doing: strategy, step and state, how new sessions are
/// shared between its revisions, and the last analysis with its figures. Nothing when
/// one revision takes every session and no rollout runs.
fn rollout_lines(server: &fleet_api::types::ServerStatus) -> Vec<String> {
    let mut lines = Vec::new();
    if let Some(r) = &server.rollout {
        lines.push(format!(
            "rollout {} r{}→r{}: step {}/{}, {}{}",
            r.strategy,
            r.from_revision,
            r.to_revision,
            r.step,
            r.steps,
            r.state,
            match r.failures_in_a_row {
                0 => String::new(),
                n => format!(", {n} failed analyses in a row"),
            }
        ));
    }
    if server.rollout.is_some() || server.traffic.len() > 1 {
        let total: u32 = server.traffic.iter().map(|t| t.weight).sum();
        let shares: Vec<String> = server
            .traffic
            .iter()
            .map(|t| {
                let percent = if total == 0 {
                    0.0
                } else {
                    f64::from(t.weight) * 100.0 / f64::from(total)
                };
                format!("r{} {percent:.0}%", t.revision)
            })
            .collect();
        lines.push(format!("weights: {}", shares.join(", ")));
    }
    if let Some(a) = server
        .rollout
        .as_ref()
        .and_then(|r| r.last_analysis.as_ref())
    {
        let ms = |v: Option<f64>| v.map_or_else(|| "-".into(), millis_for_people);
        let errors = a
            .error_rate
            .map_or_else(|| "-".into(), |e| format!("{:.1}%", e * 100.0));
        lines.push(format!(
            "last analysis: {} ({} requests, errors {errors}, p95 {} vs stable {}) at {}{}",
            a.verdict,
            a.requests,
            ms(a.canary_p95_ms),
            ms(a.stable_p95_ms),
            a.at,
            if a.reason.is_empty() {
                String::new()
            } else {
                format!(": {}", a.reason)
            }
        ));
    }
    lines
}

/// A duration the API gives in milliseconds, as every text output shows durations
/// ([`human_duration`]); `-` for a value no duration has (negative, not a number).
pub(crate) fn millis_for_people(ms: f64) -> String {
    Duration::try_from_secs_f64(ms / 1000.0).map_or_else(|_| "-".into(), human_duration)
}

/// `status --wide`: one row per instance.
fn print_instances(status: &Status) {
    println!(
        "{:<28} {:>4} {:>8} {:<14} {:>8} {:>6}  LAST CHECK",
        "INSTANCE", "REV", "PID", "STATE", "RESTARTS", "PORT"
    );
    for s in &status.servers {
        for i in &s.instances {
            let check = i.last_check.as_ref().map_or_else(
                || "-".to_string(),
                |c| {
                    let result = if c.passed { "ok" } else { "FAIL" };
                    format!(
                        "{} {result} {} at {}: {}",
                        c.kind,
                        millis_for_people(c.took_ms),
                        c.at,
                        c.detail
                    )
                },
            );
            let or_dash = |v: Option<String>| v.unwrap_or_else(|| "-".into());
            println!(
                "{:<28} {:>4} {:>8} {:<14} {:>8} {:>6}  {check}",
                i.id,
                i.revision,
                or_dash(i.pid.map(|p| p.to_string()).or_else(|| i.container.clone())),
                i.state,
                i.restarts,
                or_dash(i.port.map(|p| p.to_string())),
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_author_without_user_is_the_uids_name_from_passwd() {
        let passwd = "root:x:0:0:root:/root:/bin/bash\n# comment\nbroken line\nada:x:1000:1000:Ada:/home/ada:/bin/sh\n";
        assert_eq!(user_named_in(passwd, 1000).as_deref(), Some("ada"));
        assert_eq!(user_named_in(passwd, 0).as_deref(), Some("root"));
        assert_eq!(user_named_in(passwd, 42), None);
        // This process has a uid, named or not: never "unknown".
        assert!(user_of_this_uid().is_some_and(|user| !user.is_empty()));
    }
}
