//! `bench rollout`: how fast a bad canary stops getting traffic after it starts failing, and
//! how fast `mcpfleet rollback` serves the old revision of a blue-green server again — a real
//! control plane, gateway and sample servers, measured by a client that keeps opening
//! sessions through the gateway the whole time.
//!
//! Every call the client makes is stamped with the wall-clock time it was sent and who
//! answered it; the control plane's events carry wall-clock times too, so both sides are on
//! one clock.

use crate::bench::{binaries, flag, millis_of_day, write};
use crate::bench_gateway::{Session, Target};
use crate::root;
use anyhow::{Context, Result, bail};
use parking_lot::Mutex;
use serde_json::{Value, json};
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// Target from the revisions issue: the breach to no new canary traffic within one analysis
/// interval plus this much.
const CANARY_SLACK_MS: f64 = 100.0;
/// Target from the revisions issue: `rollback` to the old revision serving, blue-green.
const ROLLBACK_TARGET_MS: f64 = 100.0;
/// Clients opening sessions through the gateway at once.
const CLIENTS: usize = 4;
/// Calls each client makes on a session before it opens the next one (sessions are pinned
/// to the revision that took them, so a canary's sessions keep using it until they end).
const CALLS_PER_SESSION: usize = 5;

/// `bench rollout [--runs N] [--interval-ms N] [--smoke]`.
pub(crate) fn run(args: &[&str]) -> Result<()> {
    let smoke = args.contains(&"--smoke");
    let runs = flag(args, "--runs")?.unwrap_or(if smoke { 1 } else { 5 });
    let interval_ms = flag(args, "--interval-ms")?.unwrap_or(if smoke { 500 } else { 1000 });
    if runs == 0 || interval_ms == 0 {
        bail!("--runs and --interval-ms need a number above 0");
    }
    let profile = binaries(smoke, &["mcpfleet", "fleet-testkit"])?;
    let bin = root().join("target").join(profile);
    let out_dir = root().join("bench-results");
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;

    let canary = canary_runs(
        &bin,
        &out_dir.join("rollout-canary"),
        runs,
        interval_ms,
        &runtime,
    )?;
    let rollback = rollback_runs(&bin, &out_dir.join("rollout-blue-green"), runs, &runtime)?;

    // Rounded to whole milliseconds (the events' resolution), without a "-0".
    let ms = |v: f64| format!("{:.0}", if v.abs() < 0.5 { 0.0 } else { v });
    let mut table = format!(
        "rollout: {runs} runs each, analysis interval {interval_ms} ms, {CLIENTS} clients × \
         {CALLS_PER_SESSION} calls per session, {profile} build\n\n\
         Canary failing every call (failure_limit 1): from its first answered call to the last \
         call it answered; the abort decision (rollback_started event) in between.\n\n\
         | run | breach → abort decision ms | abort → last canary call ms | breach → no new canary traffic ms | canary calls |\n|---|---|---|---|---|\n"
    );
    for (i, r) in canary.iter().enumerate() {
        let _ = writeln!(
            table,
            "| {} | {} | {} | {} | {} |",
            i + 1,
            ms(r.decided - r.first),
            ms(r.last - r.decided),
            ms(r.last - r.first),
            r.calls
        );
    }
    let _ = writeln!(
        table,
        "\nBlue-green `mcpfleet rollback SERVER --to 1` within the rollback window: from the \
         command's start to the first new session the old revision answers.\n\n\
         | run | → rollback begun ms | → route swapped ms | → old revision serving ms | command wall time ms | old revision's processes restarted |\n|---|---|---|---|---|---|"
    );
    for (i, r) in rollback.iter().enumerate() {
        let _ = writeln!(
            table,
            "| {} | {} | {} | {} | {} | {} |",
            i + 1,
            ms(r.begun),
            ms(r.swapped),
            ms(r.serving),
            ms(r.command),
            if r.restarted { "yes" } else { "no" }
        );
    }
    let worst_canary = canary.iter().map(|r| r.last - r.first).fold(0.0, f64::max);
    let worst_rollback = rollback.iter().map(|r| r.serving).fold(0.0, f64::max);
    let canary_target = interval_ms as f64 + CANARY_SLACK_MS;
    let verdict = if smoke {
        "smoke run: no target applies".to_string()
    } else {
        let ok = worst_canary <= canary_target
            && worst_rollback <= ROLLBACK_TARGET_MS
            && rollback.iter().all(|r| !r.restarted);
        format!(
            "{}: breach → no new canary traffic, worst {worst_canary:.0} ms (target ≤ {canary_target:.0} ms); \
             rollback → old revision serving, worst {worst_rollback:.0} ms (target ≤ {ROLLBACK_TARGET_MS:.0} ms, no process start)",
            if ok { "PASS" } else { "FAIL" }
        )
    };
    let _ = writeln!(table, "\n{verdict}");
    print!("{table}");
    let json = json!({
        "benchmark": "rollout", "runs": runs, "interval_ms": interval_ms, "profile": profile,
        "clients": CLIENTS, "calls_per_session": CALLS_PER_SESSION,
        "canary": canary.iter().map(|r| json!({
            "breach_to_abort_ms": r.decided - r.first,
            "abort_to_last_canary_call_ms": r.last - r.decided,
            "breach_to_no_canary_traffic_ms": r.last - r.first,
            "canary_calls": r.calls,
        })).collect::<Vec<_>>(),
        "blue_green_rollback": rollback.iter().map(|r| json!({
            "rollback_begun_ms": r.begun, "route_swapped_ms": r.swapped,
            "rollback_to_old_serving_ms": r.serving, "command_ms": r.command, "restarted": r.restarted,
        })).collect::<Vec<_>>(),
        "verdict": verdict,
    });
    write(
        &out_dir.join("rollout.json"),
        &serde_json::to_string_pretty(&json)?,
    )?;
    write(&out_dir.join("rollout.md"), &table)?;
    Ok(())
}

/// One canary abort, in milliseconds of the day: the send time of the first and of the last
/// call the canary answered, and the time the engine decided to abort.
struct CanaryRun {
    first: f64,
    decided: f64,
    last: f64,
    calls: usize,
}

/// Deploys a canary whose every call fails, `runs` times, under load; each is aborted by
/// analysis after one failed interval.
fn canary_runs(
    bin: &Path,
    work: &Path,
    runs: usize,
    interval_ms: usize,
    runtime: &tokio::runtime::Runtime,
) -> Result<Vec<CanaryRun>> {
    let fleet = Fleet::create(bin, work)?;
    let sample = bin.join("mcp-sample-server");
    let text = |args: &str| {
        format!(
            "version: 1\nname: bench-canary\nservers:\n  api:\n    http:\n      command: {}\n      \
             args: [\"--transport\", \"http\", \"--port\", \"{{{{ port }}}}\", \"--tools\", \"whoami\"{args}]\n    \
             rollout:\n      strategy: canary\n      steps: [{{ weight: 50, pause: 10m }}]\n      \
             analysis: {{ interval: {interval_ms}ms, max_error_rate: 0.05, min_requests: 20, failure_limit: 1 }}\n\
             gateway:\n  listen: 127.0.0.1:0\n",
            sample.display()
        )
    };
    fleet.write(&text(""))?;
    fleet.succeed(&["up", "-d"])?;
    let target = fleet.target()?;
    let mut results = Vec::new();
    for run in 1..=runs {
        let load = Load::start(runtime, &target);
        // A new revision each run (another name), failing every call.
        fleet.write(&text(&format!(
            ", \"--error-rate\", \"1\", \"--name\", \"bad-{run}\""
        )))?;
        let deploy = fleet.mcpfleet(&["deploy", "--reason", "bench: bad canary"])?;
        if deploy.status.success() {
            bail!("the failing canary was not aborted:\n{}", text_of(&deploy));
        }
        // The canary's last pinned sessions end with its instances, before deploy returns.
        let samples = load.stop(runtime);
        let canary: Vec<f64> = samples
            .iter()
            .filter(|s| s.served == Served::InjectedError)
            .map(|s| s.sent)
            .collect();
        let (Some(&first), Some(&last)) = (
            canary.iter().min_by(|a, b| a.total_cmp(b)),
            canary.iter().max_by(|a, b| a.total_cmp(b)),
        ) else {
            bail!("run {run}: the canary answered no call");
        };
        let decided = fleet
            .events()?
            .iter()
            .filter(|e| e["kind"] == "rollback_started" && e["server"] == "api")
            .filter_map(|e| e["time"].as_str().map(millis_of_day))
            .filter(|t| *t >= first)
            .reduce(f64::min)
            .with_context(|| format!("run {run}: no rollback_started event after the breach"))?;
        results.push(CanaryRun {
            first,
            decided,
            last,
            calls: canary.len(),
        });
    }
    fleet.down()?;
    Ok(results)
}

/// One blue-green rollback: from the command's start to the first session the old revision
/// took (send time), the command's own wall time, and whether the old revision's processes
/// were started again (a rollback in the window must be a route swap).
struct RollbackRun {
    /// The control plane began the rollback (its `deployment_started` event).
    begun: f64,
    /// The route table sends new sessions to the old revision (its `server_ready` event).
    swapped: f64,
    serving: f64,
    command: f64,
    restarted: bool,
}

/// Deploys a new blue-green revision, then rolls back to revision 1 while clients keep
/// opening sessions, `runs` times.
fn rollback_runs(
    bin: &Path,
    work: &Path,
    runs: usize,
    runtime: &tokio::runtime::Runtime,
) -> Result<Vec<RollbackRun>> {
    let fleet = Fleet::create(bin, work)?;
    let sample = bin.join("mcp-sample-server");
    let text = |name: &str| {
        format!(
            "version: 1\nname: bench-blue-green\nservers:\n  api:\n    http:\n      command: {}\n      \
             args: [\"--transport\", \"http\", \"--port\", \"{{{{ port }}}}\", \"--tools\", \"whoami\", \"--name\", \"{name}\"]\n    \
             rollout:\n      strategy: blue-green\n      rollback_window: 30m\n\
             gateway:\n  listen: 127.0.0.1:0\n",
            sample.display()
        )
    };
    fleet.write(&text("blue"))?;
    fleet.succeed(&["up", "-d"])?;
    let target = fleet.target()?;
    let blue = fleet.pids(1)?;
    let mut results = Vec::new();
    for run in 1..=runs {
        fleet.write(&text(&format!("green-{run}")))?;
        fleet.succeed(&["deploy", "--reason", "bench: green"])?;
        let green = fleet.serving_revision()?;
        if green == 1 {
            bail!("run {run}: the new revision does not serve after deploy");
        }
        let load = Load::start(runtime, &target);
        load.wait_for_calls(runtime, 20)?;
        let started = now_ms();
        let at = std::time::Instant::now();
        fleet.succeed(&["rollback", "api", "--to", "1"])?;
        let command = at.elapsed().as_secs_f64() * 1000.0;
        load.wait_for_calls(runtime, 20)?;
        let samples = load.stop(runtime);
        let serving = samples
            .iter()
            .filter(|s| s.sent >= started)
            .filter(|s| matches!(s.served, Served::Pid(pid) if blue.contains(&pid)))
            .map(|s| s.sent - started)
            .reduce(f64::min)
            .with_context(|| format!("run {run}: no new session reached revision 1"))?;
        let events = fleet.events()?;
        let first_after = |kind: &str| {
            events
                .iter()
                .filter(|e| e["kind"] == kind)
                .filter_map(|e| e["time"].as_str().map(millis_of_day))
                .filter(|t| *t >= started.floor())
                .reduce(f64::min)
                .map(|t| t - started)
                .with_context(|| format!("run {run}: no {kind} event after the rollback"))
        };
        results.push(RollbackRun {
            begun: first_after("deployment_started")?,
            swapped: first_after("server_ready")?,
            serving,
            command,
            restarted: fleet.pids(1)? != blue,
        });
    }
    fleet.down()?;
    Ok(results)
}

/// A fleet file and its state directory, driven by the `mcpfleet` binary; `down` on drop so
/// an error leaves nothing running.
pub(crate) struct Fleet {
    mcpfleet: PathBuf,
    file: PathBuf,
    state: PathBuf,
    /// Set on every `mcpfleet` command (the control plane `up -d` starts inherits it).
    env: Vec<(String, String)>,
}

impl Fleet {
    pub(crate) fn create(bin: &Path, work: &Path) -> Result<Self> {
        let _ = std::fs::remove_dir_all(work);
        std::fs::create_dir_all(work)?;
        Ok(Self {
            mcpfleet: bin.join("mcpfleet"),
            file: work.join("mcpfleet.yaml"),
            state: work.join("state"),
            env: Vec::new(),
        })
    }

    /// Runs every command with `key=value` in its environment (e.g. `DOCKER_HOST`).
    pub(crate) fn with_env(mut self, key: &str, value: &str) -> Self {
        self.env.push((key.to_owned(), value.to_owned()));
        self
    }

    pub(crate) fn write(&self, text: &str) -> Result<()> {
        write(&self.file, text)
    }

    /// Runs `mcpfleet ARGS --file FILE --state-dir STATE` (`--file`, not `-f`: in `events`
    /// `-f` is `--follow`).
    fn mcpfleet(&self, args: &[&str]) -> Result<Output> {
        Command::new(&self.mcpfleet)
            .args(args)
            .arg("--file")
            .arg(&self.file)
            .arg("--state-dir")
            .arg(&self.state)
            .envs(self.env.iter().map(|(k, v)| (k, v)))
            .output()
            .context("run mcpfleet")
    }

    pub(crate) fn succeed(&self, args: &[&str]) -> Result<Output> {
        let out = self.mcpfleet(args)?;
        if !out.status.success() {
            bail!("mcpfleet {} failed:\n{}", args.join(" "), text_of(&out));
        }
        Ok(out)
    }

    pub(crate) fn status(&self) -> Result<Value> {
        let out = self.succeed(&["status", "--output", "json"])?;
        serde_json::from_slice(&out.stdout).context("status is not JSON")
    }

    pub(crate) fn api(status: &Value) -> Result<&Value> {
        status["servers"]
            .as_array()
            .and_then(|s| s.iter().find(|s| s["name"] == "api"))
            .context("status has no server `api`")
    }

    /// The gateway endpoint of `api`, called with `whoami`.
    fn target(&self) -> Result<Target> {
        let status = self.status()?;
        let url = Self::api(&status)?["endpoint"]
            .as_str()
            .context("`api` has no endpoint")?
            .to_string();
        Ok(Target {
            url,
            tool: "whoami",
            token: None,
        })
    }

    fn serving_revision(&self) -> Result<u64> {
        Self::api(&self.status()?)?["revision"]
            .as_u64()
            .context("`api` has no revision")
    }

    /// The pids of `api`'s instances of `revision`.
    fn pids(&self, revision: u64) -> Result<Vec<u32>> {
        let status = self.status()?;
        let mut pids: Vec<u32> = Self::api(&status)?["instances"]
            .as_array()
            .context("no instances")?
            .iter()
            .filter(|i| i["revision"] == revision)
            .filter_map(|i| i["pid"].as_u64().map(|p| p as u32))
            .collect();
        pids.sort_unstable();
        if pids.is_empty() {
            bail!("revision {revision} of `api` has no running instance");
        }
        Ok(pids)
    }

    fn events(&self) -> Result<Vec<Value>> {
        let out = self.succeed(&["events", "--output", "json"])?;
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .map(|l| serde_json::from_str(l).context("event is not JSON"))
            .collect()
    }

    fn down(self) -> Result<()> {
        self.succeed(&["down"])?;
        Ok(())
    }
}

impl Drop for Fleet {
    fn drop(&mut self) {
        let _ = self.mcpfleet(&["down"]);
    }
}

/// Who answered a call.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Served {
    /// `whoami`'s answer: the process.
    Pid(u32),
    /// The sample server's injected error (`--error-rate`): only the bad canary gives it.
    InjectedError,
    /// Anything else: a session ended under the client, a refused or failed call.
    Other,
}

/// One call: when it was sent (ms of the day) and who answered it.
struct Sample {
    sent: f64,
    served: Served,
}

/// Clients that keep opening sessions and calling `whoami` on them until stopped.
struct Load {
    stop: Arc<AtomicBool>,
    samples: Arc<Mutex<Vec<Sample>>>,
    clients: Vec<tokio::task::JoinHandle<()>>,
}

impl Load {
    fn start(runtime: &tokio::runtime::Runtime, target: &Target) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let samples = Arc::new(Mutex::new(Vec::new()));
        let clients = (0..CLIENTS)
            .map(|_| {
                let (stop, samples, target) = (stop.clone(), samples.clone(), target.clone());
                runtime.spawn(async move {
                    while !stop.load(Ordering::Relaxed) {
                        client_session(&target, &samples).await;
                    }
                })
            })
            .collect();
        Self {
            stop,
            samples,
            clients,
        }
    }

    /// Waits until `count` more calls were answered (bounded: a stuck gateway fails the run).
    fn wait_for_calls(&self, runtime: &tokio::runtime::Runtime, count: usize) -> Result<()> {
        let goal = self.samples.lock().len() + count;
        runtime.block_on(async {
            tokio::time::timeout(Duration::from_secs(30), async {
                while self.samples.lock().len() < goal {
                    tokio::time::sleep(Duration::from_millis(5)).await;
                }
            })
            .await
            .context("the clients made no progress for 30 s")
        })
    }

    fn stop(self, runtime: &tokio::runtime::Runtime) -> Vec<Sample> {
        self.stop.store(true, Ordering::Relaxed);
        runtime.block_on(async {
            for client in self.clients {
                let _ = client.await;
            }
        });
        std::mem::take(&mut *self.samples.lock())
    }
}

/// One client session: opened (the gateway picks its revision then), `CALLS_PER_SESSION`
/// calls, closed. A session the gateway ended is left at once, as a client would.
async fn client_session(target: &Target, samples: &Mutex<Vec<Sample>>) {
    let record = |sent, served| {
        samples.lock().push(Sample { sent, served });
    };
    let sent = now_ms();
    let Ok(mut session) = Session::open(target).await else {
        record(sent, Served::Other);
        return;
    };
    for _ in 0..CALLS_PER_SESSION {
        let sent = now_ms();
        let served = match session.call_tool().await {
            Ok(answer) => served_by(&answer),
            Err(_) => Served::Other,
        };
        record(sent, served);
        if served == Served::Other {
            return;
        }
    }
    session.close().await;
}

fn served_by(answer: &Value) -> Served {
    if let Some(pid) = answer["result"]["content"][0]["text"]
        .as_str()
        .and_then(|t| t.strip_prefix("pid "))
        .and_then(|p| p.parse().ok())
    {
        return Served::Pid(pid);
    }
    match answer["error"]["message"].as_str() {
        Some(message) if message.contains("--error-rate") => Served::InjectedError,
        _ => Served::Other,
    }
}

/// Now, in milliseconds of the day (UTC), the clock of the control plane's event times.
fn now_ms() -> f64 {
    let since = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default();
    (since.as_secs_f64() * 1000.0) % 86_400_000.0
}

fn text_of(out: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}
