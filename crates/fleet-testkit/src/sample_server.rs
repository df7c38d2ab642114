//! `mcp-sample-server`: a small MCP server whose faults are chosen on the
//! command line, so tests and benchmarks can produce slow, failing, crashing,
//! mute or noisy upstreams on demand.
//!
//! Exit codes: 0 after stdin EOF (stdio), SIGTERM or SIGINT; 3 for an injected
//! crash (`--crash-after`, `--exit-after`); 1 when it cannot serve (bad bind);
//! 2 for a bad command line.

mod conformance;
mod era;
mod handler;

use std::fmt::Display;
use std::io::Write as _;
use std::net::SocketAddr;
use std::time::Duration;

use anyhow::{Context as _, bail};
use clap::{Parser, ValueEnum};
use rmcp::ServiceExt as _;
use rmcp::service::ServerInitializeError;
use rmcp::transport::async_rw::AsyncRwTransport;
use rmcp::transport::stdio_pipes;
use rmcp::transport::streamable_http_server::{
    StreamableHttpServerConfig, StreamableHttpService, session::local::LocalSessionManager,
};
use sha2::Digest as _;
use tokio::io::{AsyncBufReadExt as _, AsyncWriteExt as _, BufReader};
use tokio::signal::unix::{SignalKind, signal};

use era::{EraGate, http_era_gate};
pub use handler::SampleServer;

/// The exit code of an injected crash.
pub const INJECTED_CRASH_EXIT_CODE: i32 = 3;

/// Lines `--garbage-stdout` writes before anything else.
const GARBAGE: &str = "mcp-sample-server: this banner is not JSON-RPC\n\
                       *** garbage on stdout ***\n\
                       {not json at all\n";

/// The command line of `mcp-sample-server`.
#[derive(Debug, Clone, Parser)]
#[command(
    name = "mcp-sample-server",
    version,
    about = "A configurable, fault-injecting MCP server for mcpfleet's tests and benchmarks"
)]
pub struct SampleServerArgs {
    /// How clients reach the server.
    #[arg(long, value_enum, default_value_t = Transport::Stdio)]
    pub transport: Transport,
    /// Interface to bind (http).
    #[arg(long, default_value = "127.0.0.1")]
    pub host: String,
    /// Port to bind (http); 0 lets the OS choose. The bound address is always
    /// printed to stderr as `listening on http://HOST:PORT/PATH`.
    #[arg(long, default_value_t = 0)]
    pub port: u16,
    /// The MCP endpoint's path (http).
    #[arg(long, default_value = "/mcp")]
    pub path: String,
    /// Tools to offer, comma separated.
    #[arg(
        long,
        value_enum,
        value_delimiter = ',',
        default_value = "echo,add,sleep,fail"
    )]
    pub tools: Vec<ToolName>,
    /// Also serve the conformance suite's fixture tools, resources and prompts.
    #[arg(long)]
    pub conformance: bool,
    /// Wait this long before serving (before reading stdin or binding).
    #[arg(long, value_name = "DURATION", value_parser = parse_duration)]
    pub startup_delay: Option<Duration>,
    /// Allocate this many MiB (every page written) after `--startup-delay` and hold them
    /// until exit: a server that outgrows a container's memory limit.
    #[arg(long, value_name = "MIB")]
    pub allocate_mib: Option<usize>,
    /// Allocate `--allocate-mib` this long after the start instead, while serving: a
    /// server that was healthy, then grew.
    #[arg(long, value_name = "DURATION", value_parser = parse_duration, requires = "allocate_mib")]
    pub allocate_after: Option<Duration>,
    /// Added to every tools/call before it is answered.
    #[arg(long, value_name = "DURATION", value_parser = parse_duration)]
    pub latency: Option<Duration>,
    /// Fraction of tools/call answered with a JSON-RPC error, spread evenly and
    /// deterministically: call k fails when floor(k·F) > floor((k−1)·F), so
    /// 0.5 fails calls 2, 4, 6…; 1 fails all.
    #[arg(long, value_name = "F", default_value_t = 0.0, value_parser = parse_rate)]
    pub error_rate: f64,
    /// Answer N tools/call, then exit with code 3 on the next one, unanswered.
    #[arg(long, value_name = "N")]
    pub crash_after: Option<u64>,
    /// Exit with code 3 once the process has run this long.
    #[arg(long, value_name = "DURATION", value_parser = parse_duration)]
    pub exit_after: Option<Duration>,
    /// Read requests but never answer any (a handshake that never completes).
    #[arg(long)]
    pub never_answer: bool,
    /// stdio: write non-JSON lines to stdout before the protocol starts (with
    /// --never-answer, instead of it).
    #[arg(long)]
    pub garbage_stdout: bool,
    /// Which protocol eras to accept.
    #[arg(long, value_enum, default_value_t = Era::Both)]
    pub era: Era,
    /// `serverInfo.name`.
    #[arg(long, default_value = "mcp-sample-server")]
    pub name: String,
    /// Log every request to stderr.
    #[arg(long)]
    pub log_stderr: bool,
    /// Refuse to start unless this file can be read and is not empty; on success, print
    /// `read PATH: N bytes, sha256 HEX` to stderr (the hash, never the content: tests hand
    /// secrets over this way).
    #[arg(long, value_name = "PATH")]
    pub require_file: Option<std::path::PathBuf>,
}

/// How clients reach the server.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Transport {
    /// JSON-RPC lines on stdin/stdout.
    Stdio,
    /// Streamable HTTP on `--host`, `--port`, `--path`.
    Http,
}

/// The protocol eras the server accepts (see MCP-NOTES.md).
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Era {
    /// Revisions up to 2025-11-25 only: `initialize`; `server/discover` is an
    /// unknown method (-32601).
    Legacy,
    /// 2026-07-28 only: `server/discover` and per-request `_meta`;
    /// `initialize` is refused with -32022 (unsupported protocol version).
    Modern,
    /// Both.
    Both,
}

/// The sample tools.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum ToolName {
    /// `echo {message}` → the message.
    Echo,
    /// `add {a, b}` → the sum.
    Add,
    /// `sleep {ms}` → "slept N ms" after N milliseconds.
    Sleep,
    /// `fail {message?}` → a result with `isError: true`.
    Fail,
    /// `whoami` → `pid N`: tells processes apart (not offered by default).
    Whoami,
    /// `confirm {}` → a multi round-trip request (SEP-2322, 2026-07-28 only;
    /// not offered by default). The first call answers `resultType:
    /// "input_required"` with one elicitation (`inputRequests.confirm`, asking
    /// for `{ok: boolean}`) and a `requestState` that is a handle to state
    /// kept in this process only. The retry (`inputResponses` plus the echoed
    /// `requestState`) answers `confirmed by <--name>` when this process
    /// issued that state, and a JSON-RPC invalid-params error saying `unknown
    /// requestState` when it did not: a retry that reached another process
    /// (another revision behind a gateway) is visible. A legacy session gets
    /// a tool error (`confirm needs the 2026-07-28 protocol`).
    Confirm,
}

fn parse_duration(text: &str) -> Result<Duration, String> {
    fleet_spec::model::parse_duration(text)
}

fn parse_rate(text: &str) -> Result<f64, String> {
    match text.parse::<f64>() {
        Ok(rate) if (0.0..=1.0).contains(&rate) => Ok(rate),
        _ => Err(format!("`{text}` is not a fraction between 0 and 1")),
    }
}

/// Serves until stdin closes (stdio) or SIGTERM/SIGINT arrives.
///
/// Injected crashes do not return: they exit the process with
/// [`INJECTED_CRASH_EXIT_CODE`].
///
/// # Errors
/// When the signal handlers cannot be installed, the address cannot be bound,
/// the flags contradict each other, or stdio fails.
pub async fn run(args: SampleServerArgs) -> anyhow::Result<()> {
    if args.garbage_stdout && args.transport == Transport::Http {
        bail!("--garbage-stdout only applies to --transport stdio");
    }
    if let Some(path) = &args.require_file {
        let content = std::fs::read(path)
            .with_context(|| format!("--require-file: cannot read {}", path.display()))?;
        if content.is_empty() {
            bail!("--require-file: {} is empty", path.display());
        }
        let hash: String = sha2::Sha256::digest(&content)
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect();
        eprintln!(
            "read {}: {} bytes, sha256 {hash}",
            path.display(),
            content.len()
        );
    }
    // Installed first so that a SIGTERM during --startup-delay is a clean stop.
    let mut terminate = signal(SignalKind::terminate()).context("install a SIGTERM handler")?;
    let mut interrupt = signal(SignalKind::interrupt()).context("install a SIGINT handler")?;
    if let Some(limit) = args.exit_after {
        tokio::spawn(async move {
            tokio::time::sleep(limit).await;
            injected_crash(&format!("--exit-after {limit:?} elapsed"));
        });
    }
    if let (Some(mib), Some(after)) = (args.allocate_mib, args.allocate_after) {
        tokio::spawn(async move {
            tokio::time::sleep(after).await;
            let _held = allocate(mib);
            std::future::pending::<()>().await
        });
    }
    let serve = async {
        if let Some(delay) = args.startup_delay {
            tokio::time::sleep(delay).await;
        }
        // Held while serving: the memory stays in use until the process ends.
        let _held = args
            .allocate_mib
            .filter(|_| args.allocate_after.is_none())
            .map(allocate);
        match args.transport {
            Transport::Stdio => serve_stdio(&args).await,
            Transport::Http => serve_http(&args).await,
        }
    };
    tokio::select! {
        result = serve => result,
        _ = terminate.recv() => Ok(()),
        _ = interrupt.recv() => Ok(()),
    }
}

/// `mib` MiB, every byte written so that each page is really in use (counted against a
/// memory limit), not only reserved.
fn allocate(mib: usize) -> Vec<u8> {
    let bytes = vec![1u8; mib << 20];
    stderr_line(format_args!("mcp-sample-server: holding {mib} MiB"));
    std::hint::black_box(bytes)
}

/// Exits the process with [`INJECTED_CRASH_EXIT_CODE`], saying why on stderr.
fn injected_crash(reason: &str) -> ! {
    stderr_line(format_args!("mcp-sample-server: injected crash: {reason}"));
    std::process::exit(INJECTED_CRASH_EXIT_CODE);
}

/// Writes a line to stderr. Not `eprintln!`, which panics when stderr is
/// closed: a supervisor that stops reading must not crash the server.
fn stderr_line(line: impl Display) {
    let _ = writeln!(std::io::stderr(), "{line}");
}

async fn serve_stdio(args: &SampleServerArgs) -> anyhow::Result<()> {
    let server = SampleServer::new(args);
    if args.garbage_stdout {
        let mut stdout = tokio::io::stdout();
        stdout.write_all(GARBAGE.as_bytes()).await?;
        stdout.flush().await?;
    }
    if args.never_answer {
        let mut lines = BufReader::new(tokio::io::stdin()).lines();
        while let Some(line) = lines.next_line().await? {
            server.log(format_args!("ignored: {line}"));
        }
        return Ok(());
    }
    let (stdin, stdout) = stdio_pipes();
    let transport = EraGate::new(server.clone(), AsyncRwTransport::new(stdin, stdout));
    match server.serve(transport).await {
        Ok(running) => {
            running.waiting().await?;
            Ok(())
        }
        Err(ServerInitializeError::ConnectionClosed(_)) => Ok(()),
        Err(error) => Err(error.into()),
    }
}

async fn serve_http(args: &SampleServerArgs) -> anyhow::Result<()> {
    let server = SampleServer::new(args);
    let listener = tokio::net::TcpListener::bind((args.host.as_str(), args.port))
        .await
        .with_context(|| format!("bind {}:{}", args.host, args.port))?;
    let address: SocketAddr = listener.local_addr()?;
    stderr_line(format_args!("listening on http://{address}{}", args.path));
    let app = if args.never_answer {
        let handler = move |body: String| async move {
            server.log(format_args!("ignored: {body}"));
            std::future::pending::<()>().await
        };
        axum::Router::new().route(&args.path, axum::routing::any(handler))
    } else {
        let factory = server.clone();
        let service: StreamableHttpService<SampleServer, LocalSessionManager> =
            StreamableHttpService::new(
                move || Ok(factory.new_session()),
                Default::default(),
                http_config(&args.host),
            );
        axum::Router::new()
            .route_service(&args.path, service)
            .layer(axum::middleware::from_fn_with_state(server, http_era_gate))
    };
    // Small writes (an SSE event after the response head) must not wait for the peer's
    // delayed ACK: Nagle's algorithm would add ~40 ms to every proxied call.
    let listener = axum::serve::ListenerExt::tap_io(listener, |tcp| {
        let _ = tcp.set_nodelay(true);
    });
    axum::serve(listener, app).await?;
    Ok(())
}

/// Host and Origin checks set on purpose (rmcp validates no Origin by
/// default): loopback names plus `--host`, and browser pages served from
/// loopback on any port.
fn http_config(host: &str) -> StreamableHttpServerConfig {
    let mut hosts = vec!["localhost", "127.0.0.1", "::1"];
    if !hosts.contains(&host) {
        hosts.push(host);
    }
    StreamableHttpServerConfig::default()
        .with_allowed_hosts(hosts)
        .with_allowed_origins(["http://localhost:*", "http://127.0.0.1:*", "http://[::1]:*"])
}
