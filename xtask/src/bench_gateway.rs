//! `bench gateway`: what mcpfleet's gateway adds to an MCP call, next to the floor (the
//! sample server reached directly) and the bridges people use today, all in one run on one
//! machine.
//!
//! Every peer is a separate process on loopback, measured by the same small Streamable HTTP
//! client (hyper, one connection per legacy session, JSON and SSE answers): sequential
//! `tools/call echo` latency (every peer's calls in turns with the others', see
//! [`in_turns`]), total throughput of concurrent sessions, the CPU each peer's process
//! spends per request under that load, and the gateway's memory for idle sessions.
//! The bare data plane runs as `xtask bench-gateway-serve` (see [`serve`]) so its RSS is its
//! own; the path users run is a control plane from `mcpfleet up` fronting the same upstream
//! as a `remote` server (audit and metrics on, once with a bearer token), and the yardsticks
//! for both are a plain L4 relay (socat), the simplest HTTP relay on hyper, and a raw relay
//! that reads HTTP with nothing but `httparse` (see [`crate::raw_http_relay`]), all in front
//! of that upstream.

use crate::bench_rollout::Fleet;
use crate::root;
use anyhow::{Context, Result, anyhow, bail};
use bytes::Bytes;
use fleet_gateway::{Gateway, GatewayConfig};
use fleet_routes::table::{Instance, RevisionRoute, RouteTable};
use fleet_stdio::{AcquireError, SessionProcesses, StdioEndpoint, StdioInstances, StdioLease};
use http_body_util::{BodyExt as _, Full};
use hyper::client::conn::http1::SendRequest;
use hyper::{Method, Request, StatusCode};
use hyper_util::rt::TokioIo;
use nix::sys::signal::{Signal, killpg};
use nix::unistd::Pid;
use parking_lot::Mutex;
use serde_json::{Value, json};
use std::collections::VecDeque;
use std::fmt::Write as _;
use std::io::BufRead as _;
use std::net::{Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

/// Targets from the gateway issues. The added p50 of the path users run is judged against
/// a plain L4 relay measured in the same run, not in absolute microseconds: most of a
/// loopback hop is the kernel's, whatever sits in it. It is judged one call at a time, as
/// issue 13 measured it, and reported beside two floors of a hop that reads HTTP: on the
/// stack mcpfleet is built on (the hyper relay) and on none (the raw relay).
const TARGET_ADDED_P50_VS_RELAY: f64 = 1.25;
const TARGET_CONCURRENT_VS_RELAY: f64 = 1.0;
const TARGET_CPU_US_PER_REQUEST: f64 = 40.0;
const TARGET_ADDED_P99_US: f64 = 300.0;
const TARGET_CONCURRENT_SHARE: f64 = 0.60;
const TARGET_IDLE_RSS_MB: f64 = 16.0;
const TARGET_VS_BRIDGES: f64 = 5.0;

/// The legacy protocol revision the client asks for; every peer here speaks it.
const PROTOCOL_VERSION: &str = "2025-06-18";
/// Bounds every single request, so a peer that stops answering fails the run instead of
/// hanging it.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);
/// How long a peer may take to start answering MCP.
const START_TIMEOUT: Duration = Duration::from_secs(60);
/// Connections the idle sessions are opened over.
const IDLE_CONNECTIONS: usize = 16;

struct Options {
    smoke: bool,
    calls: usize,
    warmup: usize,
    sessions: usize,
    duration: Duration,
    idle_sessions: usize,
}

/// `bench gateway [--smoke] [--calls N]`.
pub(crate) fn run(args: &[&str]) -> Result<()> {
    let smoke = args.contains(&"--smoke");
    let options = Options {
        smoke,
        calls: crate::bench::flag(args, "--calls")?.unwrap_or(if smoke { 20 } else { 2000 }),
        warmup: if smoke { 5 } else { 200 },
        sessions: if smoke { 4 } else { 32 },
        duration: Duration::from_secs(if smoke { 1 } else { 5 }),
        idle_sessions: if smoke { 20 } else { 1000 },
    };
    let profile = crate::bench::binaries(smoke, &["xtask", "fleet-testkit", "mcpfleet"])?;
    // The client and the gateway are both this program: measure them optimized.
    if profile == "release" && cfg!(debug_assertions) {
        return rerun_optimized("gateway", args);
    }
    let profile_dir = root().join("target").join(profile);
    let sample = profile_dir.join("mcp-sample-server");
    if !sample.exists() {
        bail!(
            "{} is missing: run `cargo test --workspace` first",
            sample.display()
        );
    }
    // The relay row is the yardstick of the path users run: never left out, smoke included.
    let socat = crate::debian::ensure("socat", "socat")?;
    let gateway = if smoke {
        std::env::current_exe().context("locate xtask")?
    } else {
        root().join("target/release/xtask")
    };
    let out_dir = root().join("bench-results");
    let logs = out_dir.join("gateway-logs");
    std::fs::create_dir_all(&logs)?;
    let rust_proxy_root = root().join("target/peers/cargo");
    let rust_proxy = rust_proxy_root.join("bin/mcp-proxy");
    if !smoke && !rust_proxy.exists() {
        install_rust_proxy(&rust_proxy_root);
    }
    let bins = Binaries {
        sample,
        gateway,
        profile_dir,
        socat,
        peers: root().join("target/peers/bin"),
        rust_proxy,
        fleets: out_dir.join("gateway-fleet"),
        logs,
    };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    let report = runtime.block_on(measure(&options, &bins))?;
    let (table, json) = report.render(&options, profile);
    print!("{table}");
    std::fs::write(out_dir.join("gateway.md"), &table)?;
    std::fs::write(
        out_dir.join("gateway.json"),
        serde_json::to_string_pretty(&json)?,
    )?;
    Ok(())
}

/// The Rust `mcp-proxy` peer's version, pinned.
const RUST_PROXY_VERSION: &str = "0.6.0";

/// Installs the Rust `mcp-proxy` peer under `root_dir` (a few minutes of compiling, once).
/// A third-party row: when the install fails the row says so and the run goes on.
fn install_rust_proxy(root_dir: &Path) {
    let root_dir = root_dir.display().to_string();
    let args = [
        "install",
        "--locked",
        "--quiet",
        "mcp-proxy",
        "--version",
        RUST_PROXY_VERSION,
        "--root",
        &root_dir,
    ];
    if let Err(error) = crate::run("cargo", &args) {
        eprintln!("bench gateway: the Rust mcp-proxy peer is not installed: {error:#}");
    }
}

/// Runs `bench TASK ARGS` with the release build of this program (just built).
pub(crate) fn rerun_optimized(task: &str, args: &[&str]) -> Result<()> {
    let release = root().join("target/release/xtask");
    eprintln!("+ {} bench {task} {}", release.display(), args.join(" "));
    let status = Command::new(&release)
        .args(["bench", task])
        .args(args)
        .status()
        .with_context(|| format!("start {}", release.display()))?;
    if !status.success() {
        bail!("bench {task} (release) failed ({status})");
    }
    Ok(())
}

struct Binaries {
    sample: PathBuf,
    gateway: PathBuf,
    /// Where `mcpfleet` of the measured profile is.
    profile_dir: PathBuf,
    socat: PathBuf,
    peers: PathBuf,
    rust_proxy: PathBuf,
    /// The fleet files and state directories of the `mcpfleet up` rows.
    fleets: PathBuf,
    logs: PathBuf,
}

/// The contenders, in table order.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Peer {
    Direct,
    /// socat between the client and the sample server: what any hop costs.
    Relay,
    /// The simplest async byte relay (`bench-gateway-serve --relay`): tokio's
    /// `copy_bidirectional` per connection, on the same runtime the gateway runs on. The
    /// physical floor of a hop's CPU, which the gateway's CPU per request is set against.
    TokioRelay,
    /// The simplest HTTP reverse proxy (`bench-gateway-serve --http-relay`): hyper's server
    /// and pooled client, each request sent on unchanged. The floor of a hop built on the
    /// stack mcpfleet's data plane is built on.
    HttpRelay,
    /// The least a hop that reads HTTP can do (`bench-gateway-serve --raw-http-relay`):
    /// heads parsed with `httparse`, bodies framed, bytes passed on unchanged, no framework.
    RawHttpRelay,
    /// The bare data plane (`bench-gateway-serve`): no control plane, audit or tokens.
    Gateway,
    /// The path users run: `mcpfleet up`, the sample server as a `remote` server.
    Fleet,
    /// The same with a bearer token on every request.
    FleetToken,
    GatewayStdio,
    PythonProxy,
    Supergateway,
    RustProxy,
}

impl Peer {
    const ALL: [Peer; 12] = [
        Peer::Direct,
        Peer::Relay,
        Peer::TokioRelay,
        Peer::HttpRelay,
        Peer::RawHttpRelay,
        Peer::Gateway,
        Peer::Fleet,
        Peer::FleetToken,
        Peer::RustProxy,
        Peer::GatewayStdio,
        Peer::PythonProxy,
        Peer::Supergateway,
    ];

    /// The rows the targets of the path users run apply to.
    const PRODUCT: [Peer; 2] = [Peer::Fleet, Peer::FleetToken];

    fn label(self) -> &'static str {
        match self {
            Peer::Direct => "direct (sample server, HTTP)",
            Peer::Relay => "L4 relay (socat, nodelay) → HTTP upstream",
            Peer::TokioRelay => "L4 relay (tokio copy_bidirectional, nodelay) → HTTP upstream",
            Peer::HttpRelay => "HTTP relay (hyper server + pooled client, nodelay) → HTTP upstream",
            Peer::RawHttpRelay => {
                "raw HTTP relay (httparse heads, framed bodies, nodelay) → HTTP upstream"
            }
            Peer::Gateway => "mcpfleet gateway data plane → HTTP upstream",
            Peer::Fleet => "mcpfleet up (control plane, audit, metrics) → remote upstream",
            Peer::FleetToken => "mcpfleet up, bearer token → remote upstream",
            Peer::GatewayStdio => "mcpfleet gateway → stdio upstream",
            Peer::PythonProxy => "mcp-proxy (PyPI) → stdio",
            Peer::Supergateway => "supergateway (npm) → stdio",
            Peer::RustProxy => "mcp-proxy (Rust crate) → HTTP upstream",
        }
    }

    fn key(self) -> &'static str {
        match self {
            Peer::Direct => "direct",
            Peer::Relay => "relay_socat",
            Peer::TokioRelay => "relay_tokio",
            Peer::HttpRelay => "relay_http",
            Peer::RawHttpRelay => "relay_http_raw",
            Peer::Gateway => "gateway_http",
            Peer::Fleet => "fleet_remote",
            Peer::FleetToken => "fleet_remote_token",
            Peer::GatewayStdio => "gateway_stdio",
            Peer::PythonProxy => "mcp_proxy_pypi",
            Peer::Supergateway => "supergateway",
            Peer::RustProxy => "mcp_proxy_rust",
        }
    }
}

#[derive(Default)]
struct Latency {
    p50_us: f64,
    p90_us: f64,
    p99_us: f64,
    mean_us: f64,
    per_second: f64,
}

/// One peer's numbers.
struct Measured {
    /// One call at a time, in turns with the other peers.
    latency: Latency,
    /// Calls per second of the concurrent sessions together.
    concurrent: f64,
    /// The concurrent sessions' calls.
    loaded: Latency,
    /// CPU time of the peer's process per call of the concurrent run (see [`CpuOf`]).
    cpu_us_per_request: f64,
}

/// One peer's results, or why it has none.
struct Row {
    peer: Peer,
    outcome: Result<Measured, String>,
}

struct IdleMemory {
    sessions: usize,
    connections: usize,
    before_mb: f64,
    after_mb: f64,
    upstream_growth_mb: f64,
}

struct Report {
    rows: Vec<Row>,
    idle: IdleMemory,
}

impl Peer {
    /// The shared HTTP upstream, or a hop in front of it: rows whose latency is compared by
    /// difference (what the hop adds). The stdio rows run their own servers.
    fn fronts_upstream(self) -> bool {
        !matches!(
            self,
            Peer::GatewayStdio | Peer::PythonProxy | Peer::Supergateway
        )
    }

    /// Third-party bridges: a row of theirs that fails is reported, not fatal. The floor,
    /// the relay and mcpfleet's rows are what this benchmark is for: no table without them.
    fn optional(self) -> bool {
        matches!(
            self,
            Peer::PythonProxy | Peer::Supergateway | Peer::RustProxy
        )
    }
}

/// A peer serving: what runs for it, where it serves, and whose CPU is its cost.
struct Started {
    peer: Peer,
    /// Held until the measuring is over: the peer ends when it is dropped.
    _running: Running,
    target: Target,
    cpu: CpuOf,
}

/// Every peer is started first, in front of one shared upstream (the sample server, which
/// is also the direct row). Their sequential latencies are then measured side by side, in
/// turns, so the difference between two rows (what a hop adds) is not drift of the machine
/// between two measurements. Throughput and CPU are measured one peer at a time, the others
/// idle.
async fn measure(options: &Options, bins: &Binaries) -> Result<Report> {
    let upstream = Upstream::start(bins)?;
    let mut rows = Vec::new();
    let mut started = Vec::new();
    for peer in Peer::ALL {
        let skipped = match peer {
            _ if peer.optional() && options.smoke => Some("not run in --smoke".to_string()),
            Peer::RustProxy if !bins.rust_proxy.exists() => Some(format!(
                "not installed ({} missing)",
                bins.rust_proxy.display()
            )),
            _ => None,
        };
        if let Some(reason) = skipped {
            rows.push(Row {
                peer,
                outcome: Err(reason),
            });
            continue;
        }
        eprintln!("bench gateway: starting {}", peer.label());
        let mut running = Running::default();
        match start_peer(peer, bins, &upstream, &mut running).await {
            Ok((target, cpu)) => started.push(Started {
                peer,
                _running: running,
                target,
                cpu,
            }),
            Err(error) if !peer.optional() => return Err(error.context(peer.label())),
            Err(error) => rows.push(Row::failed(peer, &error)),
        }
    }
    // Two groups, each in turns of its own: a call to a Python or Node bridge leaves work
    // behind (its runtime's, its stdio server's) that slowed the next call, whichever it
    // was, so it would blur the small differences between the rows before a shared upstream.
    let (http, stdio): (Vec<Started>, Vec<Started>) =
        started.into_iter().partition(|s| s.peer.fronts_upstream());
    let mut latencies = Vec::new();
    for group in [&http, &stdio] {
        let targets: Vec<&Target> = group.iter().map(|s| &s.target).collect();
        latencies.extend(sequential(&targets, options).await);
    }
    let started: Vec<Started> = http.into_iter().chain(stdio).collect();
    for (peer, latency) in started.iter().zip(latencies) {
        let outcome = match latency {
            Ok(latency) => {
                eprintln!(
                    "bench gateway: {} sessions, {}",
                    options.sessions,
                    peer.peer.label()
                );
                under_load(peer, latency, options).await
            }
            Err(error) => Err(error),
        };
        match outcome {
            Ok(measured) => rows.push(Row {
                peer: peer.peer,
                outcome: Ok(measured),
            }),
            Err(error) if !peer.peer.optional() => {
                return Err(error.context(peer.peer.label()));
            }
            Err(error) => rows.push(Row::failed(peer.peer, &error)),
        }
    }
    // The fleets go down (and the peers end) before their upstream does.
    drop(started);
    drop(upstream);
    rows.sort_by_key(|row| Peer::ALL.iter().position(|p| *p == row.peer));
    eprintln!("bench gateway: idle sessions");
    let idle = idle_memory(options, bins).await?;
    Ok(Report { rows, idle })
}

impl Row {
    fn failed(peer: Peer, error: &anyhow::Error) -> Self {
        eprintln!("bench gateway: {} failed: {error:#}", peer.label());
        Self {
            peer,
            outcome: Err(format!("failed: {error:#}")),
        }
    }
}

/// The concurrent sessions' throughput through a started peer and its CPU per call.
async fn under_load(peer: &Started, latency: Latency, options: &Options) -> Result<Measured> {
    let before = peer.cpu.ticks()?;
    let loaded = concurrent(&peer.target, options).await?;
    let spent = peer.cpu.ticks()?.saturating_sub(before);
    Ok(Measured {
        latency,
        concurrent: loaded.per_second,
        loaded: loaded.latency,
        cpu_us_per_request: ticks_to_us(spent) / loaded.calls.max(1) as f64,
    })
}

/// The sample server every HTTP-upstream row fronts.
struct Upstream {
    url: String,
    pid: u32,
    _process: Process,
}

impl Upstream {
    fn start(bins: &Binaries) -> Result<Self> {
        let (process, url) = Process::announcing(
            Command::new(&bins.sample).args(["--transport", "http", "--tools", "echo"]),
            "sample server",
        )?;
        Ok(Self {
            url,
            pid: process.pid(),
            _process: process,
        })
    }
}

/// Where a peer serves MCP, what it calls the sample server's `echo` tool, and the bearer
/// token it wants, if any.
#[derive(Clone)]
pub(crate) struct Target {
    pub(crate) url: String,
    pub(crate) tool: &'static str,
    pub(crate) token: Option<String>,
}

/// What runs for one peer; all of it ends on drop, the fleet (`mcpfleet down`) before the
/// processes (its upstream among them).
#[derive(Default)]
struct Running {
    fleet: Option<Fleet>,
    processes: Vec<Process>,
}

/// Starts `peer`; returns where it serves and whose CPU time is its cost.
async fn start_peer(
    peer: Peer,
    bins: &Binaries,
    upstream: &Upstream,
    running: &mut Running,
) -> Result<(Target, CpuOf)> {
    let sample = bins.sample.to_str().context("sample server path")?;
    let log = |name: &str| bins.logs.join(format!("{name}.log"));
    let upstream_url = &upstream.url;
    let mut token = None;
    let processes = &mut running.processes;
    let url = match peer {
        Peer::Direct => upstream.url.clone(),
        Peer::Relay => {
            let upstream: hyper::Uri = upstream_url.parse().context("sample server URL")?;
            let port = free_port()?;
            // One child per connection (`fork`), TCP_NODELAY on both sides, as a
            // latency-minded L4 proxy would be set up.
            let mut command = Command::new(&bins.socat);
            command.args([
                format!("TCP-LISTEN:{port},bind=127.0.0.1,fork,reuseaddr,nodelay"),
                format!(
                    "TCP:{},nodelay",
                    upstream.authority().context("sample server URL")?
                ),
            ]);
            processes.push(Process::logging(&mut command, "socat", &log("socat"))?);
            format!("http://127.0.0.1:{port}{}", upstream.path())
        }
        Peer::TokioRelay | Peer::HttpRelay | Peer::RawHttpRelay => {
            let upstream: hyper::Uri = upstream_url.parse().context("sample server URL")?;
            let authority = upstream.authority().context("sample server URL")?;
            let flag = match peer {
                Peer::TokioRelay => "--relay",
                Peer::RawHttpRelay => "--raw-http-relay",
                _ => "--http-relay",
            };
            let (relay, url) = Process::announcing(
                Command::new(&bins.gateway).args(["bench-gateway-serve", flag, authority.as_str()]),
                "relay",
            )?;
            processes.push(relay);
            format!("{url}{}", upstream.path())
        }
        Peer::Fleet | Peer::FleetToken => {
            let mut auth = String::new();
            if peer == Peer::FleetToken {
                let created = token_create(&bins.profile_dir.join("mcpfleet"))?;
                let _ = write!(
                    auth,
                    "  auth:\n    tokens:\n      - {{ name: bench, sha256: \"{}\", servers: [\"*\"] }}\n",
                    created.1
                );
                token = Some(created.0);
            }
            let fleet = Fleet::create(&bins.profile_dir, &bins.fleets.join(peer.key()))?;
            // The admin listener serves `/metrics`: the fleet is set up as one would be
            // run and scraped. Every tool call is audited to the state store.
            fleet.write(&format!(
                "version: 1\nname: bench-gateway\nservers:\n  api:\n    remote: {{ url: \"{upstream_url}\" }}\n\
                 gateway:\n  listen: 127.0.0.1:0\n{auth}admin:\n  listen: 127.0.0.1:0\n"
            ))?;
            let fleet = running.fleet.insert(fleet);
            fleet.succeed(&["up", "-d"])?;
            let status = fleet.status()?;
            Fleet::api(&status)?["endpoint"]
                .as_str()
                .context("`api` has no endpoint")?
                .to_string()
        }
        Peer::Gateway => {
            let (gateway, url) = Process::announcing(
                Command::new(&bins.gateway).args(["bench-gateway-serve", upstream_url]),
                "gateway",
            )?;
            processes.push(gateway);
            url
        }
        Peer::GatewayStdio => {
            // The gateway owns the pipes: one sample server per session, from a warm pool.
            let (gateway, url) = Process::announcing(
                Command::new(&bins.gateway).args([
                    "bench-gateway-serve",
                    "--stdio",
                    sample,
                    "--transport",
                    "stdio",
                    "--tools",
                    "echo",
                ]),
                "gateway",
            )?;
            processes.push(gateway);
            url
        }
        Peer::PythonProxy => {
            let port = free_port()?;
            let mut command = Command::new(bins.peers.join("mcp-proxy"));
            command.args(["--host", "127.0.0.1", "--port", &port.to_string()]);
            command.args(["--log-level", "WARNING", "--", sample, "--tools", "echo"]);
            processes.push(Process::logging(
                &mut command,
                "mcp-proxy",
                &log("mcp-proxy"),
            )?);
            format!("http://127.0.0.1:{port}/mcp")
        }
        Peer::Supergateway => {
            let port = free_port()?;
            let path = std::env::var("PATH").unwrap_or_default();
            let mut command = Command::new(bins.peers.join("supergateway"));
            command.env("PATH", format!("{}:{path}", bins.peers.display()));
            command.args(["--stdio", &format!("{sample} --tools echo")]);
            command.args(["--outputTransport", "streamableHttp", "--stateful"]);
            command.args(["--port", &port.to_string(), "--logLevel", "none"]);
            processes.push(Process::logging(
                &mut command,
                "supergateway",
                &log("supergateway"),
            )?);
            format!("http://127.0.0.1:{port}/mcp")
        }
        Peer::RustProxy => {
            let port = free_port()?;
            let config = bins.logs.join("mcp-proxy-rust.toml");
            std::fs::write(&config, rust_proxy_config(port, upstream_url))?;
            let mut command = Command::new(&bins.rust_proxy);
            command.arg("--config").arg(&config);
            processes.push(Process::logging(
                &mut command,
                "mcp-proxy (Rust)",
                &log("mcp-proxy-rust"),
            )?);
            format!("http://127.0.0.1:{port}/")
        }
    };
    // The Rust mcp-proxy serves on `/` and prefixes each tool with its backend's name.
    let tool = match peer {
        Peer::RustProxy => "sample/echo",
        _ => "echo",
    };
    let target = Target { url, tool, token };
    let cpu = match (peer, &running.fleet) {
        (Peer::Fleet | Peer::FleetToken, Some(fleet)) => CpuOf {
            pid: fleet.status()?["pid"]
                .as_u64()
                .and_then(|pid| u32::try_from(pid).ok())
                .context("`mcpfleet status` has no pid")?,
            children: false,
        },
        (Peer::Direct, _) => CpuOf {
            pid: upstream.pid,
            children: false,
        },
        // socat's work is done by the child it forks for each connection.
        (Peer::Relay, _) => CpuOf {
            pid: running.processes.last().context("no relay")?.pid(),
            children: true,
        },
        // The peer in front: the one process started for it.
        _ => CpuOf {
            pid: running.processes.last().context("no process")?.pid(),
            children: false,
        },
    };
    wait_until_serving(&target, &mut running.processes).await?;
    Ok((target, cpu))
}

/// `mcpfleet token create bench`: the token and its SHA-256 (what the fleet file holds).
fn token_create(mcpfleet: &Path) -> Result<(String, String)> {
    let out = Command::new(mcpfleet)
        .args(["token", "create", "bench", "--output", "json"])
        .output()
        .context("run mcpfleet token create")?;
    if !out.status.success() {
        bail!(
            "mcpfleet token create failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let created: Value = serde_json::from_slice(&out.stdout).context("token create output")?;
    match (created["token"].as_str(), created["sha256"].as_str()) {
        (Some(token), Some(sha256)) => Ok((token.to_owned(), sha256.to_owned())),
        _ => bail!("mcpfleet token create printed no token and sha256"),
    }
}

/// The process whose CPU time a peer is charged: its own (user + system), and with
/// `children` that of the processes it forked (live ones and those it reaped).
struct CpuOf {
    pid: u32,
    children: bool,
}

/// Clock ticks per second in `/proc/PID/stat` (`USER_HZ`, fixed at 100 on Linux).
const TICKS_PER_SECOND: f64 = 100.0;

fn ticks_to_us(ticks: u64) -> f64 {
    ticks as f64 * 1e6 / TICKS_PER_SECOND
}

impl CpuOf {
    /// CPU clock ticks spent so far.
    fn ticks(&self) -> Result<u64> {
        let own =
            ProcStat::read(self.pid)?.with_context(|| format!("process {} is gone", self.pid))?;
        if !self.children {
            return Ok(own.utime + own.stime);
        }
        let mut total = own.utime + own.stime + own.cutime + own.cstime;
        for entry in std::fs::read_dir("/proc")? {
            let Some(pid) = entry?.file_name().to_str().and_then(|n| n.parse().ok()) else {
                continue;
            };
            // A process that ended since the listing is in its parent's cutime by now, or
            // will be at the next reading.
            if let Ok(Some(child)) = ProcStat::read(pid)
                && child.ppid == self.pid
            {
                total += child.utime + child.stime;
            }
        }
        Ok(total)
    }
}

/// The fields of `/proc/PID/stat` used here.
struct ProcStat {
    ppid: u32,
    utime: u64,
    stime: u64,
    cutime: u64,
    cstime: u64,
}

impl ProcStat {
    /// `None` when the process no longer exists.
    fn read(pid: u32) -> Result<Option<Self>> {
        let Ok(text) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
            return Ok(None);
        };
        // The command name (field 2) may hold spaces and parentheses: fields are counted
        // from the last `)`, which is followed by field 3.
        let fields: Vec<&str> = text
            .rsplit_once(')')
            .map(|(_, rest)| rest.split_whitespace().collect())
            .unwrap_or_default();
        let field = |n: usize| -> Result<u64> {
            fields
                .get(n - 3)
                .and_then(|v| v.parse().ok())
                .with_context(|| format!("/proc/{pid}/stat has no field {n}"))
        };
        Ok(Some(Self {
            ppid: u32::try_from(field(4)?)?,
            utime: field(14)?,
            stime: field(15)?,
            cutime: field(16)?,
            cstime: field(17)?,
        }))
    }
}

fn rust_proxy_config(port: u16, upstream: &str) -> String {
    format!(
        "[proxy]\nname = \"bench\"\n[proxy.listen]\nhost = \"127.0.0.1\"\nport = {port}\n\
         [observability]\nlog_level = \"warn\"\n\n\
         [[backends]]\nname = \"sample\"\ntransport = \"http\"\nurl = \"{upstream}\"\n"
    )
}

/// Polls with an MCP `initialize` until the peer answers, its process dies, or
/// [`START_TIMEOUT`] passes.
pub(crate) async fn wait_until_serving(target: &Target, processes: &mut [Process]) -> Result<()> {
    let deadline = Instant::now() + START_TIMEOUT;
    loop {
        match Session::open(target).await {
            Ok(_) => return Ok(()),
            Err(error) => {
                for process in processes.iter_mut() {
                    if let Some(status) = process.child.try_wait()? {
                        bail!("{} exited ({status}) before serving", process.name);
                    }
                }
                if Instant::now() > deadline {
                    return Err(error.context(format!("{} did not answer MCP in time", target.url)));
                }
            }
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// A warmed session on each target, then [`in_turns`]: each target's sequential latency
/// (or why it has none).
async fn sequential(targets: &[&Target], options: &Options) -> Vec<Result<Latency>> {
    let mut latencies = Vec::with_capacity(targets.len());
    // The sessions opened, and the index of the target each is on.
    let (mut sessions, mut on) = (Vec::new(), Vec::new());
    for (i, target) in targets.iter().enumerate() {
        match Session::warmed(target, options.warmup).await {
            Ok(session) => {
                sessions.push(session);
                on.push(i);
                latencies.push(Ok(Latency::default()));
            }
            Err(error) => latencies.push(Err(error)),
        }
    }
    if sessions.is_empty() {
        return latencies;
    }
    eprintln!(
        "bench: sequential latency, {} calls to each of {} endpoints in turns",
        options.calls,
        sessions.len()
    );
    let measured = in_turns(&mut sessions, options.calls).await;
    for session in sessions {
        session.close().await;
    }
    for (i, times) in on.into_iter().zip(measured) {
        latencies[i] = times.map(|times| Latency::of(&times));
    }
    latencies
}

/// Sequential calls over several sessions side by side: `calls` timed echoes on each, made
/// in turns (one on every session per turn). Whatever drifts on the machine during the run
/// (CPU placement, frequency, other load) then weighs on every session alike, which a
/// difference between two of them (what a hop adds) needs: measured one after another, the
/// added p50 of one hop moved between 61 and 106 µs from run to run. Each call finds its
/// peer idle since its last one, as an agent's calls, spaced by its thinking, do. Each
/// turn takes the sessions in a new order ([`Shuffle`]). Each session's call times in µs,
/// sorted; a session whose call fails gets that error and sits out the remaining turns.
pub(crate) async fn in_turns(sessions: &mut [Session], calls: usize) -> Vec<Result<Vec<f64>>> {
    let mut times: Vec<Result<Vec<f64>>> = sessions
        .iter()
        .map(|_| Ok(Vec::with_capacity(calls)))
        .collect();
    let mut order: Vec<usize> = (0..sessions.len()).collect();
    let mut shuffle = Shuffle::default();
    for _ in 0..calls {
        shuffle.apply(&mut order);
        for &i in &order {
            let Ok(taken) = &mut times[i] else { continue };
            let began = Instant::now();
            match sessions[i].echo().await {
                Ok(()) => taken.push(began.elapsed().as_secs_f64() * 1e6),
                Err(error) => times[i] = Err(error),
            }
        }
    }
    for taken in times.iter_mut().flatten() {
        taken.sort_by(f64::total_cmp);
    }
    times
}

/// A new order for every turn of [`in_turns`]. A call finds the caches as the previous
/// call's peer left them; in a fixed cyclic order every peer would always follow the same
/// one (a relay after a small process, a gateway after another large one), and that
/// showed: two builds, swapped between two places, differed by 5–12 µs at p50 by their
/// place, whichever build held it.
/// Fisher–Yates over xorshift64, from a fixed seed: the same orders in every run.
struct Shuffle(u64);

impl Default for Shuffle {
    fn default() -> Self {
        Self(0x9E37_79B9_7F4A_7C15)
    }
}

impl Shuffle {
    fn apply(&mut self, order: &mut [usize]) {
        for i in (1..order.len()).rev() {
            self.0 ^= self.0 << 13;
            self.0 ^= self.0 >> 7;
            self.0 ^= self.0 << 17;
            order.swap(i, (self.0 % (i as u64 + 1)) as usize);
        }
    }
}

impl Latency {
    /// From sorted call times in µs. Calls per second is the inverse of the mean call time:
    /// what one client calling back to back would get.
    fn of(times: &[f64]) -> Self {
        let at = |q: f64| times[((times.len() - 1) as f64 * q).round() as usize];
        let mean_us = times.iter().sum::<f64>() / times.len() as f64;
        Self {
            p50_us: at(0.50),
            p90_us: at(0.90),
            p99_us: at(0.99),
            mean_us,
            per_second: 1e6 / mean_us,
        }
    }
}

/// `bench-gateway-load URL[,URL…] SESSIONS SECONDS`: the sequential latency (of several
/// endpoints side by side, in turns) and the concurrent throughput and latency of each
/// (none when SECONDS is 0), for profiling a peer by hand (with the bearer token in
/// `BENCH_GATEWAY_TOKEN`, if set).
pub(crate) fn load(urls: &str, sessions: &str, seconds: &str) -> Result<()> {
    let options = Options {
        smoke: false,
        calls: 2000,
        warmup: 200,
        sessions: sessions.parse().context("SESSIONS")?,
        duration: Duration::from_secs(seconds.parse().context("SECONDS")?),
        idle_sessions: 0,
    };
    let targets: Vec<Target> = urls
        .split(',')
        .map(|url| Target {
            url: url.to_owned(),
            tool: "echo",
            token: std::env::var("BENCH_GATEWAY_TOKEN").ok(),
        })
        .collect();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    runtime.block_on(async {
        let latencies = sequential(&targets.iter().collect::<Vec<_>>(), &options).await;
        for (target, latency) in targets.iter().zip(latencies) {
            let latency = latency?;
            print!(
                "{}: p50 {:.0} µs, p99 {:.0} µs",
                target.url, latency.p50_us, latency.p99_us
            );
            // SECONDS 0: the sequential latency alone.
            if !options.duration.is_zero() {
                let loaded = concurrent(target, &options).await?;
                print!(
                    "; {} sessions: {:.0} req/s, p50 {:.0} µs, p99 {:.0} µs",
                    options.sessions,
                    loaded.per_second,
                    loaded.latency.p50_us,
                    loaded.latency.p99_us,
                );
            }
            println!();
        }
        Ok(())
    })
}

/// What the concurrent sessions got together.
struct Loaded {
    calls: u64,
    per_second: f64,
    /// Of every call made (its `per_second` is one session's).
    latency: Latency,
}

/// `sessions` sessions, opened first, then each calling back to back until the deadline.
async fn concurrent(target: &Target, options: &Options) -> Result<Loaded> {
    let mut sessions = Vec::with_capacity(options.sessions);
    for _ in 0..options.sessions {
        sessions.push(Session::open(target).await?);
    }
    let started = Instant::now();
    let deadline = started + options.duration;
    let tasks: Vec<_> = sessions
        .into_iter()
        .map(|mut session| {
            tokio::spawn(async move {
                let mut times = Vec::new();
                loop {
                    let began = Instant::now();
                    if began >= deadline {
                        break;
                    }
                    session.echo().await?;
                    times.push(began.elapsed().as_secs_f64() * 1e6);
                }
                session.close().await;
                anyhow::Ok(times)
            })
        })
        .collect();
    let mut times = Vec::new();
    for task in tasks {
        times.extend(task.await??);
    }
    let elapsed = started.elapsed().as_secs_f64();
    if times.is_empty() {
        bail!("no call finished in {} s", options.duration.as_secs());
    }
    times.sort_by(f64::total_cmp);
    Ok(Loaded {
        calls: times.len() as u64,
        per_second: times.len() as f64 / elapsed,
        latency: Latency::of(&times),
    })
}

/// A fresh gateway and upstream; the gateway's RSS after a warm-up and with
/// `idle_sessions` more sessions open (a sample of them is called at the end to show they
/// are alive).
async fn idle_memory(options: &Options, bins: &Binaries) -> Result<IdleMemory> {
    let upstream = Upstream::start(bins)?;
    let mut running = Running::default();
    let (target, _) = start_peer(Peer::Gateway, bins, &upstream, &mut running).await?;
    let gateway = running.processes[0].pid();
    let warm = Session::warmed(&target, options.warmup).await?;
    settle().await;
    let before_mb = rss_mb(gateway)?;
    let upstream_before_mb = rss_mb(upstream.pid)?;

    let idle = IdleSessions::open(&target, options.idle_sessions).await?;
    settle().await;
    let after_mb = rss_mb(gateway)?;
    let openers = idle.connections.len();
    let upstream_growth_mb = rss_mb(upstream.pid)? - upstream_before_mb;
    idle.check_alive(&target).await?;
    warm.close().await;
    drop(running);
    Ok(IdleMemory {
        sessions: options.idle_sessions,
        connections: openers,
        before_mb,
        after_mb,
        upstream_growth_mb,
    })
}

/// Sessions opened and left idle: [`IDLE_CONNECTIONS`] keep-alive connections each
/// initialize their share one after another (sessions, not connections, are measured).
pub(crate) struct IdleSessions {
    connections: Vec<Session>,
    /// Each session's id and protocol revision, to use it again from a new connection.
    ids: Vec<(Option<String>, String)>,
}

impl IdleSessions {
    pub(crate) async fn open(target: &Target, sessions: usize) -> Result<Self> {
        let openers = IDLE_CONNECTIONS.min(sessions).max(1);
        let tasks: Vec<_> = (0..openers)
            .map(|i| {
                let target = target.clone();
                let count = sessions / openers + usize::from(i < sessions % openers);
                tokio::spawn(async move {
                    let mut connection = Session::connect(&target).await?;
                    let mut ids = Vec::with_capacity(count);
                    for _ in 0..count {
                        connection.id = None;
                        connection.initialize().await?;
                        ids.push(connection.resumable());
                    }
                    anyhow::Ok((connection, ids))
                })
            })
            .collect();
        let (mut connections, mut ids) = (Vec::new(), Vec::with_capacity(sessions));
        for task in tasks {
            let (connection, opened) = task.await??;
            connections.push(connection);
            ids.extend(opened);
        }
        Ok(Self { connections, ids })
    }

    /// Closes the opening connections (the sessions stay), then calls every tenth
    /// session from a new connection: they are still alive.
    pub(crate) async fn check_alive(self, target: &Target) -> Result<()> {
        drop(self.connections);
        for (id, version) in self.ids.iter().step_by((self.ids.len() / 10).max(1)) {
            let mut session = Session::resume(target, id.clone(), version.clone()).await?;
            session
                .echo()
                .await
                .context("an idle session no longer works")?;
        }
        Ok(())
    }
}

/// Lets the processes finish what the last requests started before memory is read.
pub(crate) async fn settle() {
    tokio::time::sleep(Duration::from_millis(500)).await;
}

pub(crate) fn rss_mb(pid: u32) -> Result<f64> {
    std::fs::read_to_string(format!("/proc/{pid}/status"))?
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<f64>().ok())
        .map(|kb| kb / 1024.0)
        .with_context(|| format!("no VmRSS for process {pid}"))
}

fn free_port() -> Result<u16> {
    let listener = std::net::TcpListener::bind((Ipv4Addr::LOCALHOST, 0))?;
    Ok(listener.local_addr()?.port())
}

/// A child process in its own process group; the whole group is ended on drop, so the
/// stdio servers the bridges spawn go with them, on error paths too.
pub(crate) struct Process {
    child: Child,
    name: String,
}

impl Process {
    /// Starts a program that prints `listening on URL` on stderr (the sample server and
    /// `bench-gateway-serve`) and returns that URL.
    pub(crate) fn announcing(command: &mut Command, name: &str) -> Result<(Self, String)> {
        command
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        let mut process = Self::spawn(command, name)?;
        let stderr = process.child.stderr.take().context("stderr")?;
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let mut tx = Some(tx);
            // Keeps draining after the announcement so the child never blocks on a full pipe.
            for line in std::io::BufReader::new(stderr).lines() {
                let Ok(line) = line else { break };
                if let Some(url) = line.split_whitespace().find(|w| w.starts_with("http://"))
                    && let Some(tx) = tx.take()
                {
                    let _ = tx.send(url.to_string());
                }
            }
        });
        let url = rx
            .recv_timeout(START_TIMEOUT)
            .map_err(|_| anyhow!("{name} did not print `listening on …`"))?;
        Ok((process, url))
    }

    /// Starts a program whose output goes to `log`.
    fn logging(command: &mut Command, name: &str, log: &Path) -> Result<Self> {
        let file = std::fs::File::create(log).with_context(|| format!("{}", log.display()))?;
        command
            .stdin(Stdio::piped())
            .stdout(file.try_clone()?)
            .stderr(file);
        Self::spawn(command, name)
    }

    fn spawn(command: &mut Command, name: &str) -> Result<Self> {
        use std::os::unix::process::CommandExt as _;
        let child = command
            .process_group(0)
            .spawn()
            .with_context(|| format!("start {name}"))?;
        Ok(Self {
            child,
            name: name.to_string(),
        })
    }

    pub(crate) fn pid(&self) -> u32 {
        self.child.id()
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        let group = Pid::from_raw(self.child.id() as i32);
        let _ = killpg(group, Signal::SIGTERM);
        let deadline = Instant::now() + Duration::from_secs(3);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                // Children of the group (a bridge's stdio servers) may outlive the leader.
                let _ = killpg(group, Signal::SIGKILL);
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = killpg(group, Signal::SIGKILL);
        let _ = self.child.wait();
    }
}

/// A legacy MCP session over one HTTP/1.1 keep-alive connection: `initialize`, then
/// requests carrying `Mcp-Session-Id`; answers may be JSON or SSE.
pub(crate) struct Session {
    sender: SendRequest<Full<Bytes>>,
    connection: tokio::task::JoinHandle<()>,
    authority: String,
    path: String,
    /// `Bearer TOKEN`, sent with every request when the peer wants a token.
    authorization: Option<String>,
    id: Option<String>,
    version: String,
    tool: &'static str,
    next_id: u64,
}

impl Session {
    async fn connect(target: &Target) -> Result<Self> {
        let url = &target.url;
        let uri: hyper::Uri = url.parse().with_context(|| format!("bad URL {url}"))?;
        let authority = uri.authority().context("URL without host")?.to_string();
        let address: SocketAddr = authority.parse().context("URL host is not IP:port")?;
        let stream = tokio::net::TcpStream::connect(address).await?;
        stream.set_nodelay(true)?;
        let (sender, connection) =
            hyper::client::conn::http1::handshake(TokioIo::new(stream)).await?;
        let connection = tokio::spawn(async move {
            let _ = connection.await;
        });
        Ok(Self {
            sender,
            connection,
            authority,
            path: uri.path().to_string(),
            authorization: target.token.as_ref().map(|token| format!("Bearer {token}")),
            id: None,
            version: PROTOCOL_VERSION.to_string(),
            tool: target.tool,
            next_id: 0,
        })
    }

    /// Connects and initializes a new session.
    pub(crate) async fn open(target: &Target) -> Result<Self> {
        let mut session = Self::connect(target).await?;
        session.initialize().await?;
        Ok(session)
    }

    /// A new session after `calls` untimed echoes: its connection and both ends' lazy
    /// paths warmed before anything is timed.
    pub(crate) async fn warmed(target: &Target, calls: usize) -> Result<Self> {
        let mut session = Self::open(target).await?;
        for _ in 0..calls {
            session.echo().await?;
        }
        Ok(session)
    }

    /// `initialize` and `notifications/initialized` on this connection: a new session.
    async fn initialize(&mut self) -> Result<()> {
        let session = self;
        let result = session
            .request(
                "initialize",
                json!({
                    "protocolVersion": PROTOCOL_VERSION,
                    "capabilities": {},
                    "clientInfo": { "name": "mcpfleet-bench", "version": "0" },
                }),
            )
            .await?;
        if let Some(version) = result["protocolVersion"].as_str() {
            session.version = version.to_string();
        }
        let (status, _, _) = session
            .post(json!({ "jsonrpc": "2.0", "method": "notifications/initialized" }))
            .await?;
        if !status.is_success() {
            bail!("notifications/initialized: HTTP {status}");
        }
        Ok(())
    }

    /// What [`Session::resume`] needs to use this session from another connection.
    fn resumable(&self) -> (Option<String>, String) {
        (self.id.clone(), self.version.clone())
    }

    async fn resume(target: &Target, id: Option<String>, version: String) -> Result<Self> {
        let mut session = Self::connect(target).await?;
        session.id = id;
        session.version = version;
        Ok(session)
    }

    pub(crate) async fn echo(&mut self) -> Result<()> {
        let result = self
            .request(
                "tools/call",
                json!({ "name": self.tool, "arguments": { "message": "ping" } }),
            )
            .await?;
        if result["isError"] == true || result["content"][0]["text"] != "ping" {
            bail!("unexpected echo result: {result}");
        }
        Ok(())
    }

    /// A request; its result, or the JSON-RPC error as an error.
    async fn request(&mut self, method: &str, params: Value) -> Result<Value> {
        let mut response = self.exchange(method, params).await?;
        if !response["error"].is_null() {
            bail!("{method}: {}", response["error"]);
        }
        Ok(response["result"].take())
    }

    /// `tools/call` of the target's tool without arguments: the whole JSON-RPC response,
    /// result or error.
    pub(crate) async fn call_tool(&mut self) -> Result<Value> {
        let tool = self.tool;
        self.exchange("tools/call", json!({ "name": tool, "arguments": {} }))
            .await
    }

    /// A request and its JSON-RPC response (an HTTP error status is an error).
    async fn exchange(&mut self, method: &str, params: Value) -> Result<Value> {
        self.next_id += 1;
        let id = self.next_id;
        let message = json!({ "jsonrpc": "2.0", "id": id, "method": method, "params": params });
        let (status, content_type, body) = self.post(message).await?;
        if status != StatusCode::OK {
            bail!(
                "{method}: HTTP {status}: {}",
                String::from_utf8_lossy(&body)
            );
        }
        let response: Value = if content_type.starts_with("text/event-stream") {
            sse_response(&body, id)?
        } else {
            serde_json::from_slice(&body).with_context(|| format!("{method}: answer not JSON"))?
        };
        if response["id"] != id {
            bail!("{method}: answer has id {}, expected {id}", response["id"]);
        }
        Ok(response)
    }

    /// POSTs one message and reads the whole answer (a server ends the SSE stream of a POST
    /// once it has sent the response).
    async fn post(&mut self, message: Value) -> Result<(StatusCode, String, Bytes)> {
        let mut request = Request::builder()
            .method(Method::POST)
            .uri(&self.path)
            .header("host", &self.authority)
            .header("content-type", "application/json")
            .header("accept", "application/json, text/event-stream")
            .header("mcp-protocol-version", &self.version);
        if let Some(id) = &self.id {
            request = request.header("mcp-session-id", id);
        }
        if let Some(authorization) = &self.authorization {
            request = request.header("authorization", authorization);
        }
        let request = request.body(Full::new(Bytes::from(message.to_string())))?;
        let exchange = async {
            self.sender.ready().await?;
            let response = self.sender.send_request(request).await?;
            let status = response.status();
            let headers = response.headers();
            if let Some(id) = headers.get("mcp-session-id") {
                self.id = Some(id.to_str()?.to_string());
            }
            let content_type = headers
                .get("content-type")
                .and_then(|v| v.to_str().ok())
                .unwrap_or_default()
                .to_string();
            let body = response.into_body().collect().await?.to_bytes();
            anyhow::Ok((status, content_type, body))
        };
        tokio::time::timeout(REQUEST_TIMEOUT, exchange)
            .await
            .map_err(|_| anyhow!("no answer within {REQUEST_TIMEOUT:?}"))?
    }

    /// Ends the session (DELETE) so the peer can free it; best effort.
    pub(crate) async fn close(mut self) {
        let Some(id) = self.id.take() else { return };
        let mut request = Request::builder()
            .method(Method::DELETE)
            .uri(&self.path)
            .header("host", &self.authority)
            .header("mcp-session-id", id)
            .header("mcp-protocol-version", &self.version);
        if let Some(authorization) = &self.authorization {
            request = request.header("authorization", authorization);
        }
        let Ok(request) = request.body(Full::new(Bytes::new())) else {
            return;
        };
        let _ = tokio::time::timeout(Duration::from_secs(5), async {
            self.sender.ready().await?;
            self.sender.send_request(request).await
        })
        .await;
    }
}

impl Drop for Session {
    fn drop(&mut self) {
        self.connection.abort();
    }
}

/// The JSON-RPC response with `id` among the events of an SSE body (priming events with
/// empty data and notifications are skipped).
fn sse_response(body: &[u8], id: u64) -> Result<Value> {
    let text = std::str::from_utf8(body).context("SSE body not UTF-8")?;
    let mut data = String::new();
    for line in text.lines().chain(std::iter::once("")) {
        if line.is_empty() {
            if !data.trim().is_empty() {
                let message: Value = serde_json::from_str(&data).context("SSE data not JSON")?;
                if message["id"] == id {
                    return Ok(message);
                }
            }
            data.clear();
        } else if let Some(value) = line.strip_prefix("data:") {
            if !data.is_empty() {
                data.push('\n');
            }
            data.push_str(value.strip_prefix(' ').unwrap_or(value));
        }
    }
    bail!("the SSE stream ended without the response to request {id}")
}

impl Report {
    fn row(&self, peer: Peer) -> Option<&Measured> {
        self.rows
            .iter()
            .find(|r| r.peer == peer)
            .and_then(|r| r.outcome.as_ref().ok())
    }

    fn render(&self, options: &Options, profile: &str) -> (String, Value) {
        let mut md = format!(
            "gateway: sequential `tools/call echo` over loopback, one legacy session per peer, {} calls after {} warm-up, \
             in turns (one call to each per turn) with the other peers in front of the same HTTP upstream, or with the other stdio peers; \
             {} concurrent sessions for {} s (CPU: the peer's process during that run, per call); \
             {} idle sessions; {profile} build\n\n\
             | peer | p50 µs | p90 µs | p99 µs | sequential req/s | {n} sessions req/s | {n} sessions p50 µs | {n} sessions p99 µs | CPU µs/req |\n\
             |---|---|---|---|---|---|---|---|---|\n",
            options.calls,
            options.warmup,
            options.sessions,
            options.duration.as_secs(),
            options.idle_sessions,
            n = options.sessions,
        );
        let mut peers = serde_json::Map::new();
        for row in &self.rows {
            match &row.outcome {
                Ok(m) => {
                    let l = &m.latency;
                    let _ = writeln!(
                        md,
                        "| {} | {:.0} | {:.0} | {:.0} | {:.0} | {:.0} | {:.0} | {:.0} | {:.0} |",
                        row.peer.label(),
                        l.p50_us,
                        l.p90_us,
                        l.p99_us,
                        l.per_second,
                        m.concurrent,
                        m.loaded.p50_us,
                        m.loaded.p99_us,
                        m.cpu_us_per_request,
                    );
                    peers.insert(
                        row.peer.key().into(),
                        json!({
                            "label": row.peer.label(), "p50_us": l.p50_us, "p90_us": l.p90_us,
                            "p99_us": l.p99_us, "mean_us": l.mean_us,
                            "sequential_per_second": l.per_second,
                            "concurrent_per_second": m.concurrent,
                            "concurrent_p50_us": m.loaded.p50_us,
                            "concurrent_p99_us": m.loaded.p99_us,
                            "cpu_us_per_request": m.cpu_us_per_request,
                        }),
                    );
                }
                Err(reason) => {
                    let _ = writeln!(md, "| {} | {reason} | | | | | | | |", row.peer.label());
                    peers.insert(
                        row.peer.key().into(),
                        json!({ "label": row.peer.label(), "skipped": reason }),
                    );
                }
            }
        }

        let mut checks: Vec<(String, Option<bool>)> = Vec::new();
        let mut ratios = serde_json::Map::new();
        if let (Some(direct), Some(relay)) = (self.row(Peer::Direct), self.row(Peer::Relay)) {
            let relay_added = relay.latency.p50_us - direct.latency.p50_us;
            let relay_loaded_added = relay.loaded.p50_us - direct.loaded.p50_us;
            checks.push((
                format!(
                    "relay adds {relay_added:.0} µs at p50 one call at a time; {} sessions: \
                     {relay_loaded_added:.0} µs at p50, {:.0} % of direct's req/s",
                    options.sessions,
                    relay.concurrent / direct.concurrent * 100.0
                ),
                None,
            ));
            ratios.insert("relay_added_p50_us".into(), json!(relay_added));
            ratios.insert(
                "relay_concurrent_added_p50_us".into(),
                json!(relay_loaded_added),
            );
            // What a hop that reads HTTP costs at least, one call at a time, on the stack
            // mcpfleet is built on (hyper) and on none (httparse alone): the product path's
            // added p50 set against them shows how much is the gateway's own.
            let http_floors: Vec<(Peer, &str, f64)> = [
                (Peer::HttpRelay, "hyper relay"),
                (Peer::RawHttpRelay, "raw HTTP relay"),
            ]
            .into_iter()
            .filter_map(|(floor, name)| {
                let row = self.row(floor)?;
                Some((floor, name, row.latency.p50_us - direct.latency.p50_us))
            })
            .collect();
            // The data plane alone is reported against the relay too, without a target: it
            // shows what the control plane's side of the path adds.
            for peer in [Peer::Gateway, Peer::Fleet, Peer::FleetToken] {
                let Some(row) = self.row(peer) else { continue };
                let added = row.latency.p50_us - direct.latency.p50_us;
                let p50_vs_relay = added / relay_added.max(1.0);
                let loaded_added = row.loaded.p50_us - direct.loaded.p50_us;
                let loaded_p50_vs_relay = loaded_added / relay_loaded_added.max(1.0);
                let concurrent_vs_relay = row.concurrent / relay.concurrent;
                let judged = Peer::PRODUCT.contains(&peer);
                // A target's text, on the rows it is judged on.
                let target = |text: String| if judged { text } else { String::new() };
                checks.push((
                    format!(
                        "{}: one call at a time: adds {added:.0} µs at p50 = {p50_vs_relay:.2}× the relay's{}{}",
                        peer.label(),
                        target(format!(" (target ≤ {TARGET_ADDED_P50_VS_RELAY:.2}×)")),
                        http_floors
                            .iter()
                            .map(|(_, name, floor_added)| format!(
                                "; {:.2}× the {name}'s ({floor_added:.0} µs)",
                                added / floor_added.max(1.0),
                            ))
                            .collect::<String>(),
                    ),
                    judged.then_some(p50_vs_relay <= TARGET_ADDED_P50_VS_RELAY),
                ));
                // Under load a hop's added latency is mostly its queue: what it adds follows
                // from its throughput, judged below.
                checks.push((
                    format!(
                        "{}: {} sessions: adds {loaded_added:.0} µs at p50 = {loaded_p50_vs_relay:.2}× the relay's",
                        peer.label(),
                        options.sessions,
                    ),
                    None,
                ));
                checks.push((
                    format!(
                        "{}: {} sessions {:.0} req/s = {concurrent_vs_relay:.2}× the relay's{}",
                        peer.label(),
                        options.sessions,
                        row.concurrent,
                        target(format!(" (target ≥ {TARGET_CONCURRENT_VS_RELAY:.2}×)"))
                    ),
                    judged.then_some(concurrent_vs_relay >= TARGET_CONCURRENT_VS_RELAY),
                ));
                checks.push((
                    format!(
                        "{}: {:.0} µs CPU per request in the gateway's process{}",
                        peer.label(),
                        row.cpu_us_per_request,
                        target(format!(" (target ≤ {TARGET_CPU_US_PER_REQUEST:.0} µs)"))
                    ),
                    judged.then_some(row.cpu_us_per_request <= TARGET_CPU_US_PER_REQUEST),
                ));
                let floor_cpu = self
                    .row(Peer::TokioRelay)
                    .map(|floor| floor.cpu_us_per_request);
                if let Some(floor_cpu) = floor_cpu {
                    checks.push((
                        format!(
                            "{}: CPU per request = {:.2}× the floor's (tokio byte relay: {floor_cpu:.0} µs)",
                            peer.label(),
                            row.cpu_us_per_request / floor_cpu.max(1.0),
                        ),
                        None,
                    ));
                }
                ratios.insert(
                    format!("{}_vs_relay", peer.key()),
                    json!({
                        "added_p50_us": added,
                        "added_p50_ratio": p50_vs_relay,
                        "added_p50_vs_http_floors": http_floors
                            .iter()
                            .map(|(floor, _, floor_added)| (floor.key().to_owned(), json!(added / floor_added.max(1.0))))
                            .collect::<serde_json::Map<_, _>>(),
                        "concurrent_added_p50_us": loaded_added,
                        "concurrent_added_p50_ratio": loaded_p50_vs_relay,
                        "concurrent_ratio": concurrent_vs_relay,
                        "cpu_us_per_request": row.cpu_us_per_request,
                        "cpu_vs_floor": floor_cpu.map(|floor| row.cpu_us_per_request / floor.max(1.0)),
                    }),
                );
            }
        }
        if let (Some(direct), Some(gateway)) = (self.row(Peer::Direct), self.row(Peer::Gateway)) {
            let added_p99 = gateway.latency.p99_us - direct.latency.p99_us;
            let share = gateway.concurrent / direct.concurrent;
            checks.push((
                format!(
                    "gateway adds {added_p99:.0} µs at p99 (target ≤ {TARGET_ADDED_P99_US:.0} µs)"
                ),
                Some(added_p99 <= TARGET_ADDED_P99_US),
            ));
            checks.push((
                format!(
                    "{} sessions: gateway {:.0} req/s = {:.0} % of direct {:.0} req/s (target ≥ {:.0} %)",
                    options.sessions,
                    gateway.concurrent,
                    share * 100.0,
                    direct.concurrent,
                    TARGET_CONCURRENT_SHARE * 100.0
                ),
                Some(share >= TARGET_CONCURRENT_SHARE),
            ));
            ratios.insert(
                "added_p50_us".into(),
                json!(gateway.latency.p50_us - direct.latency.p50_us),
            );
            ratios.insert("added_p99_us".into(), json!(added_p99));
            ratios.insert("concurrent_share_of_direct".into(), json!(share));
            for bridge in [Peer::PythonProxy, Peer::Supergateway, Peer::RustProxy] {
                let Some(other) = self.row(bridge) else {
                    continue;
                };
                let sequential = gateway.latency.per_second / other.latency.per_second;
                let concurrent = gateway.concurrent / other.concurrent;
                // The 5× target is set against the Python and Node bridges.
                let target = (bridge != Peer::RustProxy).then_some(TARGET_VS_BRIDGES);
                checks.push((
                    format!(
                        "gateway vs {}: {concurrent:.1}× req/s at {} sessions, {sequential:.1}× sequential{}",
                        bridge.label(),
                        options.sessions,
                        target.map_or(String::new(), |t| format!(" (target ≥ {t:.0}× at {} sessions)", options.sessions)),
                    ),
                    target.map(|t| concurrent >= t),
                ));
                ratios.insert(
                    format!("gateway_vs_{}", bridge.key()),
                    json!({ "concurrent": concurrent, "sequential": sequential }),
                );
            }
        }
        // The stdio row has no targets of its own (they were set for the HTTP path); its
        // like-for-like comparison is with the stdio bridges.
        if let (Some(direct), Some(stdio)) = (self.row(Peer::Direct), self.row(Peer::GatewayStdio))
        {
            let added_p50 = stdio.latency.p50_us - direct.latency.p50_us;
            let added_p99 = stdio.latency.p99_us - direct.latency.p99_us;
            let share = stdio.concurrent / direct.concurrent;
            checks.push((
                format!(
                    "gateway → stdio vs direct HTTP: {added_p50:+.0} µs at p50, {added_p99:+.0} µs at p99; \
                     {} sessions: {:.0} req/s = {:.0} % of direct",
                    options.sessions,
                    stdio.concurrent,
                    share * 100.0,
                ),
                None,
            ));
            let mut stdio_ratios = serde_json::Map::new();
            stdio_ratios.insert("added_p50_us".into(), json!(added_p50));
            stdio_ratios.insert("added_p99_us".into(), json!(added_p99));
            stdio_ratios.insert("concurrent_share_of_direct".into(), json!(share));
            for bridge in [Peer::PythonProxy, Peer::Supergateway] {
                let Some(other) = self.row(bridge) else {
                    continue;
                };
                let sequential = stdio.latency.per_second / other.latency.per_second;
                let concurrent = stdio.concurrent / other.concurrent;
                checks.push((
                    format!(
                        "gateway → stdio vs {}: {concurrent:.1}× req/s at {} sessions, {sequential:.1}× sequential",
                        bridge.label(),
                        options.sessions,
                    ),
                    None,
                ));
                stdio_ratios.insert(
                    format!("vs_{}", bridge.key()),
                    json!({ "concurrent": concurrent, "sequential": sequential }),
                );
            }
            ratios.insert(Peer::GatewayStdio.key().into(), stdio_ratios.into());
        }
        let idle = &self.idle;
        let growth = idle.after_mb - idle.before_mb;
        checks.push((
            format!(
                "{} idle sessions (opened over {} keep-alive connections): gateway RSS +{growth:.1} MB \
                 ({:.1} → {:.1} MB; target ≤ {TARGET_IDLE_RSS_MB:.0} MB); the upstream's +{:.1} MB",
                idle.sessions, idle.connections, idle.before_mb, idle.after_mb, idle.upstream_growth_mb
            ),
            Some(growth <= TARGET_IDLE_RSS_MB),
        ));

        let _ = writeln!(md);
        for (text, pass) in &checks {
            let verdict = match (options.smoke, pass) {
                (true, _) | (false, None) => "info",
                (false, Some(true)) => "PASS",
                (false, Some(false)) => "FAIL",
            };
            let _ = writeln!(md, "- {verdict}: {text}");
        }
        let verdict = if options.smoke {
            "smoke run: no target applies".to_string()
        } else if checks.iter().all(|(_, pass)| *pass != Some(false)) {
            "PASS: every target met".to_string()
        } else {
            "FAIL: a target was missed".to_string()
        };
        let _ = writeln!(md, "\n{verdict}");
        let json = json!({
            "benchmark": "gateway",
            "profile": profile,
            "calls": options.calls,
            "warmup": options.warmup,
            "concurrent_sessions": options.sessions,
            "concurrent_seconds": options.duration.as_secs(),
            "peers": peers,
            "ratios": ratios,
            "idle_sessions": {
                "sessions": idle.sessions,
                "connections": idle.connections,
                "gateway_rss_before_mb": idle.before_mb,
                "gateway_rss_after_mb": idle.after_mb,
                "upstream_rss_growth_mb": idle.upstream_growth_mb,
            },
            "targets": {
                "product_added_p50_vs_relay": TARGET_ADDED_P50_VS_RELAY,
                "product_concurrent_vs_relay": TARGET_CONCURRENT_VS_RELAY,
                "product_cpu_us_per_request": TARGET_CPU_US_PER_REQUEST,
                "added_p99_us": TARGET_ADDED_P99_US,
                "concurrent_share_of_direct": TARGET_CONCURRENT_SHARE,
                "idle_rss_mb": TARGET_IDLE_RSS_MB, "vs_bridges": TARGET_VS_BRIDGES,
            },
            "checks": checks.iter().map(|(text, pass)| json!({ "check": text, "pass": pass })).collect::<Vec<_>>(),
            "verdict": verdict,
        });
        (md, json)
    }
}

/// `xtask bench-gateway-serve UPSTREAM_URL | --stdio PROGRAM ARGS...` (hidden): the
/// gateway with one server, `sample`, whose single instance is either the HTTP server at
/// `UPSTREAM_URL` or a per-session stdio upstream running `PROGRAM ARGS` for each session
/// (see [`StdioSpawner`]); prints `listening on URL` on stderr and serves until SIGTERM or
/// its stdin closes (the benchmark died).
pub(crate) fn serve(args: &[&str]) -> Result<()> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    match args {
        ["--relay", upstream] => return runtime.block_on(relay(upstream)),
        ["--http-relay", upstream] => return runtime.block_on(http_relay(upstream)),
        ["--raw-http-relay", upstream] => {
            return runtime.block_on(crate::raw_http_relay::serve(upstream));
        }
        _ => {}
    }
    runtime.block_on(async {
        let stdio = StdioInstances::new();
        let upstream = match args {
            [url] if !url.starts_with('-') => Instance::http("sample-1", *url),
            ["--stdio", program, args @ ..] => {
                let spawner = StdioSpawner::new(program, args);
                spawner.fill();
                stdio.insert(
                    "sample",
                    "sample-1",
                    StdioEndpoint::PerSession(Arc::new(spawner)),
                );
                Instance::stdio_per_session("sample-1")
            }
            _ => bail!(
                "usage: xtask bench-gateway-serve UPSTREAM_URL | --stdio PROGRAM ARGS... | --relay HOST:PORT | --http-relay HOST:PORT | --raw-http-relay HOST:PORT"
            ),
        };
        let listener = tokio::net::TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).await?;
        let address = listener.local_addr()?;
        let table = RouteTable::new([(
            "sample".to_string(),
            vec![RevisionRoute {
                revision: 1,
                weight: 1,
                instances: vec![upstream],
            }],
        )])
        .map_err(|errors| anyhow!("route table: {errors:?}"))?;
        let (_routes, receiver) = tokio::sync::watch::channel(table);
        let mut config = GatewayConfig::new(address);
        // Every session of the benchmarks comes from one address without a token: the
        // per-address cap would end the soak's idle sessions (`bench soak` opens 11,000).
        config.max_sessions_per_token = config.max_sessions;
        let gateway = Gateway::new(config, receiver, stdio);
        eprintln!("listening on http://{address}/mcp/sample");
        let mut terminate =
            tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
        let stdin_closed = stdin_closed();
        let shutdown = async move {
            tokio::select! {
                _ = terminate.recv() => {}
                _ = stdin_closed => {}
            }
        };
        fleet_gateway::serve(listener, gateway, shutdown).await?;
        Ok(())
    })
}

/// `bench-gateway-serve --relay HOST:PORT`: the simplest async byte relay to `upstream`,
/// TCP_NODELAY on both sides, one task per connection — what a hop costs in CPU with no
/// HTTP, JSON, routing, audit or metrics at all. Serves until its stdin closes.
async fn relay(upstream: &str) -> Result<()> {
    let upstream = upstream.to_owned();
    relay_each(move |mut client| {
        let upstream = upstream.clone();
        async move {
            let Ok(mut server) = tokio::net::TcpStream::connect(&upstream).await else {
                return;
            };
            let _ = server.set_nodelay(true);
            let _ = tokio::io::copy_bidirectional(&mut client, &mut server).await;
        }
    })
    .await
}

/// `bench-gateway-serve --http-relay HOST:PORT`: the simplest HTTP/1.1 reverse proxy to
/// `upstream` — hyper's server, and hyper's pooled client (TCP_NODELAY) sending each
/// request on unchanged, its answer streamed back — with no JSON, sessions, routing, audit
/// or metrics. What a proxy built on hyper costs at least.
/// Serves until its stdin closes.
async fn http_relay(upstream: &str) -> Result<()> {
    use hyper_util::client::legacy::Client;
    use hyper_util::client::legacy::connect::HttpConnector;
    use hyper_util::rt::TokioExecutor;

    let mut connector = HttpConnector::new();
    connector.set_nodelay(true);
    let client: Client<_, hyper::body::Incoming> =
        Client::builder(TokioExecutor::new()).build(connector);
    let upstream: hyper::http::uri::Authority = upstream.parse().context("HOST:PORT")?;
    relay_each(move |stream| {
        let (client, upstream) = (client.clone(), upstream.clone());
        let service =
            hyper::service::service_fn(move |mut request: Request<hyper::body::Incoming>| {
                let client = client.clone();
                // The client's path, on the upstream: no text formatted or parsed.
                let mut uri = std::mem::take(request.uri_mut()).into_parts();
                uri.scheme = Some(hyper::http::uri::Scheme::HTTP);
                uri.authority = Some(upstream.clone());
                async move {
                    *request.uri_mut() = hyper::Uri::from_parts(uri)?;
                    anyhow::Ok(client.request(request).await?)
                }
            });
        async move {
            let _ = hyper::server::conn::http1::Builder::new()
                .serve_connection(TokioIo::new(stream), service)
                .await;
        }
    })
    .await
}

/// A relay of the benchmark's: listens on a loopback port (announced on stderr, as
/// [`Process::announcing`] expects) and serves each accepted connection, TCP_NODELAY set,
/// with `connection` in a task of its own, until this process's stdin closes (the
/// benchmark ending it).
pub(crate) async fn relay_each<C>(connection: impl Fn(tokio::net::TcpStream) -> C) -> Result<()>
where
    C: Future<Output = ()> + Send + 'static,
{
    let listener = tokio::net::TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).await?;
    eprintln!("listening on http://{}", listener.local_addr()?);
    let accept = async {
        loop {
            let (client, _) = listener.accept().await?;
            let _ = client.set_nodelay(true);
            tokio::spawn(connection(client));
        }
    };
    tokio::select! {
        result = accept => result,
        _ = stdin_closed() => Ok(()),
    }
}

/// Completes when this process's stdin closes: the benchmark ending it.
fn stdin_closed() -> tokio::sync::oneshot::Receiver<()> {
    let (closed, stdin_closed) = tokio::sync::oneshot::channel::<()>();
    std::thread::spawn(move || {
        use std::io::Read as _;
        let mut buf = [0u8; 64];
        while matches!(std::io::stdin().read(&mut buf), Ok(n) if n > 0) {}
        drop(closed);
    });
    stdin_closed
}

/// Processes started ahead of demand, so a new session does not wait for a spawn.
const STDIO_WARM: usize = 1;
/// At most this many stdio processes at once, lent and warm together.
const STDIO_MAX: u32 = 256;
/// A session unused this long is ended by the gateway; far beyond any phase of the run.
const STDIO_IDLE_TIMEOUT: Duration = Duration::from_secs(600);

/// The per-session stdio upstream of `bench-gateway-serve --stdio`: each session gets its
/// own `PROGRAM ARGS` process, taken from a warm pool of [`STDIO_WARM`] that is refilled
/// as it is drawn from, at most [`STDIO_MAX`] at once. A process is killed when its
/// session ends. What the engine's pool adds (pidfiles, logs, its runtime) is left out:
/// this measures the gateway's side of the pipes.
#[derive(Debug)]
struct StdioSpawner {
    program: PathBuf,
    args: Vec<String>,
    /// Started, not lent yet.
    warm: Mutex<VecDeque<tokio::process::Child>>,
    /// Every process that runs, lent or warm: what [`STDIO_MAX`] bounds.
    live: Arc<AtomicU32>,
}

/// Given back when a session ends, after the gateway closed the process's stdin: kills
/// the process (`kill_on_drop`) and frees its place under the cap.
struct StdioRelease {
    _child: tokio::process::Child,
    live: Arc<AtomicU32>,
}

impl Drop for StdioRelease {
    fn drop(&mut self) {
        self.live.fetch_sub(1, Ordering::SeqCst);
    }
}

impl StdioSpawner {
    fn new(program: &str, args: &[&str]) -> Self {
        Self {
            program: PathBuf::from(program),
            args: args.iter().map(|a| (*a).to_string()).collect(),
            warm: Mutex::new(VecDeque::new()),
            live: Arc::new(AtomicU32::new(0)),
        }
    }

    fn spawn(&self) -> Result<tokio::process::Child, AcquireError> {
        let child = tokio::process::Command::new(&self.program)
            .args(&self.args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .map_err(|e| AcquireError::Failed(format!("{}: {e}", self.program.display())))?;
        self.live.fetch_add(1, Ordering::SeqCst);
        Ok(child)
    }

    fn warm(&self) -> parking_lot::MutexGuard<'_, VecDeque<tokio::process::Child>> {
        self.warm.lock()
    }

    /// Starts processes until [`STDIO_WARM`] are waiting, within [`STDIO_MAX`]. A failed
    /// start is left to the next `acquire`, which reports it.
    fn fill(&self) {
        let mut warm = self.warm();
        while warm.len() < STDIO_WARM && self.live.load(Ordering::SeqCst) < STDIO_MAX {
            match self.spawn() {
                Ok(child) => warm.push_back(child),
                Err(_) => break,
            }
        }
    }

    /// A warm process that is still running, or a new one if there is room.
    fn take(&self) -> Result<tokio::process::Child, AcquireError> {
        let mut warm = self.warm();
        while let Some(mut child) = warm.pop_front() {
            if matches!(child.try_wait(), Ok(None)) {
                return Ok(child);
            }
            self.live.fetch_sub(1, Ordering::SeqCst);
        }
        if self.live.load(Ordering::SeqCst) >= STDIO_MAX {
            return Err(AcquireError::AtCapacity { max: STDIO_MAX });
        }
        self.spawn()
    }
}

impl SessionProcesses for StdioSpawner {
    fn acquire(
        &self,
    ) -> Pin<Box<dyn Future<Output = Result<StdioLease, AcquireError>> + Send + '_>> {
        Box::pin(async move {
            let mut child = self.take()?;
            self.fill();
            let (Some(stdin), Some(stdout)) = (child.stdin.take(), child.stdout.take()) else {
                return Err(AcquireError::Failed("a process without pipes".into()));
            };
            let release = StdioRelease {
                _child: child,
                live: Arc::clone(&self.live),
            };
            Ok(StdioLease::new("sample-1", stdin, stdout, release))
        })
    }

    fn idle_timeout(&self) -> Duration {
        STDIO_IDLE_TIMEOUT
    }
}
