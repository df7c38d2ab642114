//! `bench containers`: what running a server in a container costs through mcpfleet, next to
//! the floor (Podman alone) and to the same server as a process, all in one run.
//!
//! - Start-to-ready: `mcpfleet up -d` of a one-server fleet whose server runs the sample
//!   image (stdio, then http), timed from the command's start to its exit (`up -d` returns
//!   once the fleet is ready); the floor is `podman run` of the same image with the same
//!   hardening plus the MCP `initialize` answered; the same server as a local process through
//!   `mcpfleet up -d` gives context. Runs are interleaved, after one untimed warm-up of each.
//! - Gateway latency: one fleet with the http sample server twice, as a process and as an
//!   image; sequential `tools/call echo` through the gateway to each and direct to each (the
//!   process's port, the container's published port), interleaved call by call.
//!
//! The run has its own Podman API service (`podman system service` on a socket under the
//! output directory), stopped at the end; the image is built from the measured profile's
//! sample server the way `cargo xtask image` assembles a root filesystem.

use crate::bench::{binaries, flag, write};
use crate::bench_gateway::{Session, Target, in_turns};
use crate::bench_rollout::Fleet;
use crate::image::{self, podman_output};
use crate::{podman, root};
use anyhow::{Context, Result, bail, ensure};
use serde_json::{Value, json};
use std::fmt::Write as _;
use std::io::{BufRead as _, BufReader, Read as _, Write as _};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// Target from the containers issue: `mcpfleet up -d` of a containerized server within this
/// factor of `podman run` of the same image plus the MCP handshake.
const TARGET_START_RATIO: f64 = 1.2;
/// How long one start may take to answer `initialize`, and the API service to answer a ping.
const START_TIMEOUT: Duration = Duration::from_secs(60);
/// How often the http floor retries its `initialize` while the container starts.
const POLL: Duration = Duration::from_millis(5);
/// The port the http sample server listens on inside its container.
const CONTAINER_PORT: u16 = 8080;
/// What the container runtime applies to every container (fleet_runtime's hardened create,
/// with the image's user unset): the floor runs with exactly these.
const HARDENING: &[&str] = &[
    "--read-only",
    "--cap-drop",
    "ALL",
    "--security-opt",
    "no-new-privileges",
    "--user",
    "65534:65534",
    "--ulimit",
    "nofile=1024:1024",
    "--ulimit",
    "nproc=1000:1000",
];

/// The ways a server is started, in table order.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Start {
    UpImageStdio,
    PodmanRunStdio,
    UpImageHttp,
    PodmanRunHttp,
    UpProcessStdio,
    UpProcessHttp,
}

impl Start {
    const ALL: [Start; 6] = [
        Start::UpImageStdio,
        Start::PodmanRunStdio,
        Start::UpImageHttp,
        Start::PodmanRunHttp,
        Start::UpProcessStdio,
        Start::UpProcessHttp,
    ];

    fn label(self) -> &'static str {
        match self {
            Start::UpImageStdio => "`mcpfleet up -d`, stdio image (shared: one container)",
            Start::PodmanRunStdio => "`podman run -i --rm` + `initialize` answered (floor, stdio)",
            Start::UpImageHttp => "`mcpfleet up -d`, http image",
            Start::PodmanRunHttp => {
                "`podman run -d --rm -p` + `initialize` POST answered (floor, http)"
            }
            Start::UpProcessStdio => "`mcpfleet up -d`, stdio process (shared; context)",
            Start::UpProcessHttp => "`mcpfleet up -d`, http process (context)",
        }
    }

    fn key(self) -> &'static str {
        match self {
            Start::UpImageStdio => "up_image_stdio",
            Start::PodmanRunStdio => "podman_run_stdio",
            Start::UpImageHttp => "up_image_http",
            Start::PodmanRunHttp => "podman_run_http",
            Start::UpProcessStdio => "up_process_stdio",
            Start::UpProcessHttp => "up_process_http",
        }
    }

    /// The one-server fleet `mcpfleet up -d` starts; `None` for the floors.
    fn fleet(self, name: &str, image: &str, sample: &str) -> Option<String> {
        let server = match self {
            Start::UpImageStdio => format!("stdio: {{ image: {image}, isolation: shared }}"),
            Start::UpImageHttp => http_image_server(image),
            Start::UpProcessStdio => format!("stdio: {{ command: {sample}, isolation: shared }}"),
            Start::UpProcessHttp => http_process_server(sample),
            Start::PodmanRunStdio | Start::PodmanRunHttp => return None,
        };
        Some(format!(
            "version: 1\nname: {name}\nservers:\n  sample:\n    {server}\n"
        ))
    }
}

fn http_image_server(image: &str) -> String {
    format!(
        "http: {{ image: {image}, args: [--transport, http, --host, 0.0.0.0, --port, \"{CONTAINER_PORT}\"], port: {CONTAINER_PORT} }}"
    )
}

fn http_process_server(sample: &str) -> String {
    format!("http: {{ command: {sample}, args: [--transport, http, --port, \"{{{{ port }}}}\"] }}")
}

/// Sorted durations of one way of starting.
struct Starts {
    start: Start,
    ms: Vec<f64>,
}

impl Starts {
    fn median(&self) -> f64 {
        quantile(&self.ms, 0.5)
    }
    fn p90(&self) -> f64 {
        quantile(&self.ms, 0.9)
    }
}

/// The value at `q` of sorted `values` (nearest rank).
fn quantile(values: &[f64], q: f64) -> f64 {
    values[((values.len() - 1) as f64 * q).round() as usize]
}

/// Sequential call latencies of one upstream, direct and through the gateway (µs, sorted).
struct Upstream {
    label: &'static str,
    key: &'static str,
    direct: Vec<f64>,
    gateway: Vec<f64>,
}

impl Upstream {
    fn added(&self, q: f64) -> f64 {
        quantile(&self.gateway, q) - quantile(&self.direct, q)
    }
}

/// `bench containers [--runs N] [--calls N] [--smoke]`.
pub(crate) fn run(args: &[&str]) -> Result<()> {
    let smoke = args.contains(&"--smoke");
    let runs = flag(args, "--runs")?.unwrap_or(if smoke { 2 } else { 10 });
    let calls = flag(args, "--calls")?.unwrap_or(if smoke { 20 } else { 2000 });
    if runs == 0 || calls == 0 {
        bail!("--runs and --calls need a number above 0");
    }
    let profile = binaries(smoke, &["xtask", "mcpfleet", "fleet-testkit"])?;
    // The latency client is this program: measure it optimized.
    if profile == "release" && cfg!(debug_assertions) {
        return crate::bench_gateway::rerun_optimized("containers", args);
    }
    let bin = root().join("target").join(profile);
    let out_dir = root().join("bench-results");
    let work = out_dir.join("containers");
    let _ = std::fs::remove_dir_all(&work);
    std::fs::create_dir_all(&work)?;

    let version = podman_output(&["version", "--format", "{{.Client.Version}}"])?;
    let service = Service::start(&work)?;
    let image = build_image(&bin.join("mcp-sample-server"), profile, &work)?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    let starts = start_to_ready(&bin, &work, &image, &service, runs, &runtime)?;
    let upstreams = runtime.block_on(gateway_latency(&bin, &work, &image, &service, calls))?;
    drop(service);

    let (table, json) = render(
        &starts,
        &upstreams,
        runs,
        calls,
        profile,
        version.trim(),
        smoke,
    );
    print!("{table}");
    write(
        &out_dir.join("containers.json"),
        &serde_json::to_string_pretty(&json)?,
    )?;
    write(&out_dir.join("containers.md"), &table)?;
    Ok(())
}

/// Every way of starting, `runs` times each, interleaved (one of each per round) so a slow
/// stretch of the machine weighs on all of them; one untimed round first warms the caches.
fn start_to_ready(
    bin: &Path,
    work: &Path,
    image: &str,
    service: &Service,
    runs: usize,
    runtime: &tokio::runtime::Runtime,
) -> Result<Vec<Starts>> {
    let sample = bin.join("mcp-sample-server");
    let sample = sample.to_str().context("sample server path is not UTF-8")?;
    let mut fleets = Vec::new();
    for start in Start::ALL {
        let name = format!("cbench-{}", start.key().replace('_', "-"));
        let fleet = match start.fleet(&name, image, sample) {
            Some(text) => {
                let fleet = Fleet::create(bin, &work.join(start.key()))?
                    .with_env("DOCKER_HOST", &service.docker_host());
                fleet.write(&text)?;
                Some(fleet)
            }
            None => None,
        };
        fleets.push((start, fleet));
    }
    let mut results: Vec<Starts> = Start::ALL
        .iter()
        .map(|&start| Starts {
            start,
            ms: Vec::with_capacity(runs),
        })
        .collect();
    for round in 0..=runs {
        eprintln!("bench containers: start-to-ready, round {round} of {runs} (0: warm-up)");
        for ((start, fleet), result) in fleets.iter().zip(&mut results) {
            let took = match fleet {
                Some(fleet) => {
                    let began = Instant::now();
                    fleet.succeed(&["up", "-d"])?;
                    let took = began.elapsed();
                    fleet.succeed(&["down"])?;
                    took
                }
                None if *start == Start::PodmanRunStdio => podman_run_stdio(image)?,
                None => runtime.block_on(podman_run_http(image))?,
            };
            if round > 0 {
                result.ms.push(took.as_secs_f64() * 1000.0);
            }
        }
    }
    for result in &mut results {
        result.ms.sort_by(f64::total_cmp);
    }
    Ok(results)
}

/// The stdio floor: `podman run -i` with the runtime's hardening and no network, until the
/// server's answer to `initialize` is read.
fn podman_run_stdio(image: &str) -> Result<Duration> {
    let began = Instant::now();
    let mut child = podman::command()
        .args(["run", "-i", "--rm", "--network", "none"])
        .args(HARDENING)
        .arg(image)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .context("start podman run")?;
    let mut stdin = child.stdin.take().context("podman's stdin")?;
    let initialize =
        json!({ "jsonrpc": "2.0", "id": 1, "method": "initialize", "params": initialize_params() });
    writeln!(stdin, "{initialize}").context("write initialize")?;
    stdin.flush()?;
    let mut answer = String::new();
    BufReader::new(child.stdout.take().context("podman's stdout")?)
        .read_line(&mut answer)
        .context("read the answer to initialize")?;
    let took = began.elapsed();
    // End of input ends the server, and with it the container (`--rm` removes it).
    drop(stdin);
    let status = child.wait()?;
    let answer: Value = serde_json::from_str(&answer).with_context(|| {
        format!("the stdio container's answer is not JSON ({status}): {answer:?}")
    })?;
    ensure!(
        answer["result"]["protocolVersion"].is_string(),
        "initialize failed in the stdio container: {answer}"
    );
    Ok(took)
}

/// The http floor: `podman run -d` publishing the server's port on loopback, then an
/// `initialize` POST retried every [`POLL`] until it is answered. The host port is chosen
/// here (`-p 127.0.0.1:PORT:8080`), so no second podman command is timed to learn it.
async fn podman_run_http(image: &str) -> Result<Duration> {
    let port = free_port()?;
    let began = Instant::now();
    let publish = format!("127.0.0.1:{port}:{CONTAINER_PORT}");
    let port_arg = CONTAINER_PORT.to_string();
    let out = podman::command()
        .args(["run", "-d", "--rm", "-p", &publish])
        .args(HARDENING)
        .arg(image)
        .args([
            "--transport",
            "http",
            "--host",
            "0.0.0.0",
            "--port",
            &port_arg,
        ])
        .output()
        .context("run podman run -d")?;
    ensure!(
        out.status.success(),
        "podman run -d failed: {}",
        String::from_utf8_lossy(&out.stderr).trim()
    );
    let container = String::from_utf8_lossy(&out.stdout).trim().to_owned();
    let target = Target {
        url: format!("http://127.0.0.1:{port}/mcp"),
        tool: "echo",
        token: None,
    };
    let answered = loop {
        match Session::open(&target).await {
            Ok(session) => {
                let took = began.elapsed();
                session.close().await;
                break Ok(took);
            }
            Err(error) if began.elapsed() > START_TIMEOUT => {
                break Err(error.context("the http container did not answer initialize"));
            }
            Err(_) => tokio::time::sleep(POLL).await,
        }
    };
    podman_output(&["rm", "--force", "--time", "0", &container])?;
    answered
}

fn initialize_params() -> Value {
    json!({
        "protocolVersion": "2025-06-18",
        "capabilities": {},
        "clientInfo": { "name": "mcpfleet-bench", "version": "0" },
    })
}

/// One fleet serving the http sample server as a process (`proc`) and as an image (`ctr`);
/// `calls` sequential echoes to each of the four targets, in turns ([`in_turns`]).
async fn gateway_latency(
    bin: &Path,
    work: &Path,
    image: &str,
    service: &Service,
    calls: usize,
) -> Result<Vec<Upstream>> {
    eprintln!("bench containers: gateway latency, {calls} calls per target");
    let sample = bin.join("mcp-sample-server");
    let sample = sample.to_str().context("sample server path is not UTF-8")?;
    let fleet =
        Fleet::create(bin, &work.join("latency"))?.with_env("DOCKER_HOST", &service.docker_host());
    fleet.write(&format!(
        "version: 1\nname: cbench-latency\nservers:\n  proc:\n    {}\n  ctr:\n    {}\n",
        http_process_server(sample),
        http_image_server(image)
    ))?;
    fleet.succeed(&["up", "-d"])?;
    let status = fleet.status()?;
    let mut names = Vec::new();
    let mut sessions = Vec::new();
    for (name, label, key) in [
        ("proc", "http sample server as a process", "process"),
        ("ctr", "http sample server as a container", "container"),
    ] {
        let server = status["servers"]
            .as_array()
            .and_then(|s| s.iter().find(|s| s["name"] == name))
            .with_context(|| format!("status has no server `{name}`"))?;
        let gateway = server["endpoint"]
            .as_str()
            .with_context(|| format!("`{name}` has no endpoint"))?;
        let instance = &server["instances"][0];
        let port = match instance["container"].as_str() {
            // Status shows the port inside the container; the host port is the engine's pick.
            Some(container) => published_port(container)?,
            None => instance["port"]
                .as_u64()
                .with_context(|| format!("`{name}`'s instance has no port: {server}"))?
                .to_string(),
        };
        for url in [format!("http://127.0.0.1:{port}/mcp"), gateway.to_owned()] {
            let target = Target {
                url,
                tool: "echo",
                token: None,
            };
            sessions.push(Session::warmed(&target, calls.div_ceil(10).min(200)).await?);
        }
        names.push((label, key));
    }
    // Per upstream: the direct session's times, then the gateway's.
    let mut times = in_turns(&mut sessions, calls).await.into_iter();
    for session in sessions {
        session.close().await;
    }
    let mut upstreams = Vec::new();
    for (label, key) in names {
        let (Some(direct), Some(gateway)) = (times.next(), times.next()) else {
            bail!("no call times for {label}");
        };
        upstreams.push(Upstream {
            label,
            key,
            direct: direct?,
            gateway: gateway?,
        });
    }
    fleet.succeed(&["down"])?;
    Ok(upstreams)
}

fn render(
    starts: &[Starts],
    upstreams: &[Upstream],
    runs: usize,
    calls: usize,
    profile: &str,
    podman_version: &str,
    smoke: bool,
) -> (String, Value) {
    let of = |start: Start| {
        starts
            .iter()
            .find(|s| s.start == start)
            .expect("every way of starting is measured")
    };
    let mut table = format!(
        "containers: the sample server, Podman {podman_version}, {runs} runs of each start \
         (after one warm-up), {calls} sequential calls per target, {profile} build\n\n\
         Start-to-ready, ms (from the command's start to the fleet ready / `initialize` answered):\n\n\
         | start | median | p90 | min | max |\n|---|---|---|---|---|\n"
    );
    for s in starts {
        let _ = writeln!(
            table,
            "| {} | {:.0} | {:.0} | {:.0} | {:.0} |",
            s.start.label(),
            s.median(),
            s.p90(),
            s.ms[0],
            s.ms[s.ms.len() - 1]
        );
    }
    let ratios = [
        (
            "stdio",
            of(Start::UpImageStdio).median() / of(Start::PodmanRunStdio).median(),
        ),
        (
            "http",
            of(Start::UpImageHttp).median() / of(Start::PodmanRunHttp).median(),
        ),
    ];
    let _ = writeln!(
        table,
        "\n| `mcpfleet up -d` of an image ÷ `podman run` + handshake (medians) | ratio |\n|---|---|"
    );
    for (transport, ratio) in ratios {
        let _ = writeln!(
            table,
            "| {transport} | {ratio:.2}× (target ≤ {TARGET_START_RATIO}×) |"
        );
    }
    let _ = writeln!(
        table,
        "\nGateway latency, µs (sequential `tools/call echo`; added = gateway − direct at the same quantile):\n\n\
         | upstream | direct p50 | gateway p50 | added p50 | direct p99 | gateway p99 | added p99 |\n|---|---|---|---|---|---|---|"
    );
    for u in upstreams {
        let _ = writeln!(
            table,
            "| {} | {:.0} | {:.0} | {:.0} | {:.0} | {:.0} | {:.0} |",
            u.label,
            quantile(&u.direct, 0.5),
            quantile(&u.gateway, 0.5),
            u.added(0.5),
            quantile(&u.direct, 0.99),
            quantile(&u.gateway, 0.99),
            u.added(0.99)
        );
    }
    let (process, container) = (&upstreams[0], &upstreams[1]);
    let added_ratio_p50 = container.added(0.5) / process.added(0.5);
    let added_ratio_p99 = container.added(0.99) / process.added(0.99);
    let _ = writeln!(
        table,
        "\nAdded latency, container ÷ process: p50 {added_ratio_p50:.2}×, p99 {added_ratio_p99:.2}×"
    );
    let verdict = if smoke {
        "smoke run: no target applies".to_owned()
    } else {
        let worst = ratios.iter().map(|r| r.1).fold(0.0, f64::max);
        format!(
            "{}: start-to-ready of an image through mcpfleet, worst {worst:.2}× `podman run` + handshake (target ≤ {TARGET_START_RATIO}×)",
            if worst <= TARGET_START_RATIO {
                "PASS"
            } else {
                "FAIL"
            }
        )
    };
    let _ = writeln!(table, "\n{verdict}");

    let json = json!({
        "benchmark": "containers", "runs": runs, "calls": calls, "profile": profile,
        "podman": podman_version, "target_start_ratio": TARGET_START_RATIO,
        "start_to_ready_ms": starts.iter().map(|s| (s.start.key().to_owned(), json!({
            "median": s.median(), "p90": s.p90(), "min": s.ms[0], "max": s.ms[s.ms.len() - 1], "runs": s.ms,
        }))).collect::<serde_json::Map<_, _>>(),
        "start_ratio": { "stdio": ratios[0].1, "http": ratios[1].1 },
        "gateway_latency_us": upstreams.iter().map(|u| (u.key.to_owned(), json!({
            "direct_p50": quantile(&u.direct, 0.5), "gateway_p50": quantile(&u.gateway, 0.5),
            "added_p50": u.added(0.5), "direct_p99": quantile(&u.direct, 0.99),
            "gateway_p99": quantile(&u.gateway, 0.99), "added_p99": u.added(0.99),
        }))).collect::<serde_json::Map<_, _>>(),
        "added_container_vs_process": { "p50": added_ratio_p50, "p99": added_ratio_p99 },
        "verdict": verdict,
    });
    (table, json)
}

/// This run's Docker-compatible API: `podman system service --time 0` on a socket of its own;
/// killed and reaped on drop, so the run leaves no service behind, on errors too.
struct Service {
    process: Child,
    socket: PathBuf,
}

impl Service {
    fn start(dir: &Path) -> Result<Self> {
        let socket = dir.join("podman.sock");
        let log_path = dir.join("podman-service.log");
        let log = std::fs::File::create(&log_path)?;
        let process = podman::command()
            .args(["system", "service", "--time", "0"])
            .arg(format!("unix://{}", socket.display()))
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()
            .context("start podman system service")?;
        let mut service = Self { process, socket };
        let deadline = Instant::now() + START_TIMEOUT;
        while let Err(error) = ping(&service.socket) {
            if let Some(status) = service.process.try_wait()? {
                bail!(
                    "the podman API service exited ({status}); its log: {}",
                    log_path.display()
                );
            }
            if Instant::now() > deadline {
                bail!(
                    "the podman API service did not answer on {} within {START_TIMEOUT:?} \
                     ({error}); its log: {}",
                    service.socket.display(),
                    log_path.display()
                );
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        Ok(service)
    }

    fn docker_host(&self) -> String {
        format!("unix://{}", self.socket.display())
    }
}

impl Drop for Service {
    fn drop(&mut self) {
        let _ = self.process.kill();
        let _ = self.process.wait();
    }
}

/// `GET /_ping` on the API socket; `Ok` once it answers `OK`.
fn ping(socket: &Path) -> Result<()> {
    let mut stream = UnixStream::connect(socket)?;
    stream.set_read_timeout(Some(Duration::from_secs(5)))?;
    stream.write_all(b"GET /_ping HTTP/1.0\r\nHost: podman\r\n\r\n")?;
    let mut response = String::new();
    stream.read_to_string(&mut response)?;
    ensure!(
        response.starts_with("HTTP/1.0 200") && response.ends_with("OK"),
        "unexpected answer: {response:?}"
    );
    Ok(())
}

/// `localhost/mcpfleet-bench-sample:PROFILE`: `sample` (this profile's sample server) as the
/// entrypoint of a minimal root filesystem, imported into Podman.
fn build_image(sample: &Path, profile: &str, work: &Path) -> Result<String> {
    let reference = format!("localhost/mcpfleet-bench-sample:{profile}");
    let rootfs = work.join("rootfs");
    image::minimal_rootfs(sample, "bin/mcp-sample-server", &rootfs)?;
    // The previous run's image goes (a tag moved by `import` would leave it dangling).
    let _ = podman::command()
        .args(["rmi", &reference])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status();
    let mut tar = Command::new("tar")
        .args(["--numeric-owner", "-C"])
        .arg(&rootfs)
        .args(["-c", "."])
        .stdout(Stdio::piped())
        .spawn()
        .context("start tar")?;
    let archive = tar.stdout.take().context("tar's output")?;
    let imported = podman::command()
        .args([
            "import",
            "--quiet",
            "--change",
            r#"ENTRYPOINT ["/bin/mcp-sample-server"]"#,
            "-",
            &reference,
        ])
        .stdin(archive)
        .output()
        .context("run podman import")?;
    let tarred = tar.wait()?;
    ensure!(
        tarred.success(),
        "tar of the sample rootfs failed ({tarred})"
    );
    ensure!(
        imported.status.success(),
        "podman import failed: {}",
        String::from_utf8_lossy(&imported.stderr).trim()
    );
    std::fs::remove_dir_all(&rootfs)?;
    Ok(reference)
}

/// The loopback host port `container` publishes [`CONTAINER_PORT`] on (`podman port`).
fn published_port(container: &str) -> Result<String> {
    let mapping = podman_output(&["port", container, &format!("{CONTAINER_PORT}/tcp")])?;
    let port = mapping
        .lines()
        .next()
        .and_then(|line| line.trim().rsplit_once(':'))
        .map(|(_, port)| port.to_owned())
        .with_context(|| format!("container {container} publishes no port: {mapping:?}"))?;
    Ok(port)
}

fn free_port() -> Result<u16> {
    let listener = std::net::TcpListener::bind((std::net::Ipv4Addr::LOCALHOST, 0))?;
    Ok(listener.local_addr()?.port())
}
