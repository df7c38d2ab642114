//! Helpers every integration test needs: the sample server's path, starting it
//! (HTTP or stdio), free ports, per-test scratch directories and waiting on a
//! condition with a deadline.

use std::net::{Ipv4Addr, TcpListener};
use std::path::PathBuf;
use std::process::Stdio;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::io::{AsyncBufReadExt as _, BufReader};

const SAMPLE_SERVER: &str = "mcp-sample-server";

/// The built `mcp-sample-server` executable.
///
/// `CARGO_BIN_EXE_mcp-sample-server` wins when set (Cargo sets it while
/// compiling this crate's own integration tests; a runner may export it).
/// Otherwise the binary is looked up in the target directory of the running
/// test executable (`target/<profile>/deps/test-…` → `target/<profile>/`).
///
/// # Panics
/// When the binary is not there. Cargo builds it for this crate's tests and
/// for `cargo test --workspace`; a test of another crate run alone needs
/// `cargo build -p fleet-testkit` first.
pub fn sample_server_binary() -> PathBuf {
    let env_name = format!("CARGO_BIN_EXE_{SAMPLE_SERVER}");
    if let Some(path) = std::env::var_os(&env_name) {
        return PathBuf::from(path);
    }
    let exe = std::env::current_exe().expect("the path of the running test executable");
    let profile_dir = exe
        .parent()
        .and_then(|deps| deps.parent())
        .expect("the test executable lives in target/<profile>/deps");
    let path = profile_dir.join(format!("{SAMPLE_SERVER}{}", std::env::consts::EXE_SUFFIX));
    assert!(
        path.is_file(),
        "{} does not exist: run `cargo build -p fleet-testkit` (or `cargo test --workspace`) first",
        path.display()
    );
    path
}

/// Polls `condition` every few milliseconds until it holds.
///
/// Tests wait on facts, never on sleeps: this is the one place that sleeps.
///
/// # Panics
/// When `deadline` passes first; the message names `what`.
pub async fn wait_until<F: FnMut() -> bool>(what: &str, deadline: Duration, mut condition: F) {
    let started = Instant::now();
    loop {
        if condition() {
            return;
        }
        assert!(
            started.elapsed() < deadline,
            "timed out after {deadline:?} waiting until {what}"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// A loopback TCP port that was free a moment ago.
///
/// Prefer binding to port 0 and reading the address back wherever the code
/// under test allows it; this is for configuration that must name a port.
///
/// # Panics
/// When the OS has no ephemeral port to hand out.
pub fn free_port() -> u16 {
    TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
        .and_then(|listener| listener.local_addr())
        .expect("an ephemeral loopback port")
        .port()
}

/// A new, empty directory unique to this call: the system temp directory,
/// then `mcpfleet-test-<name>-<pid>-<sequence>`.
///
/// It is not removed afterwards, so a failed test leaves its files to inspect.
///
/// # Panics
/// When the directory cannot be created.
pub fn scratch_dir(name: &str) -> PathBuf {
    static SEQUENCE: AtomicU32 = AtomicU32::new(0);
    let sequence = SEQUENCE.fetch_add(1, Ordering::Relaxed);
    let dir = std::env::temp_dir().join(format!(
        "mcpfleet-test-{name}-{}-{sequence}",
        std::process::id()
    ));
    // A previous run with a recycled pid may have left this exact path.
    if dir.exists() {
        std::fs::remove_dir_all(&dir).expect("remove a stale scratch directory");
    }
    std::fs::create_dir_all(&dir).expect("create a scratch directory");
    dir
}

/// A [`scratch_dir`] removed when it is dropped — unless the test is panicking, so that a
/// failed test leaves its files to inspect.
#[derive(Debug)]
pub struct TempDir(PathBuf);

impl TempDir {
    /// A new, empty directory (see [`scratch_dir`]).
    ///
    /// # Panics
    /// When the directory cannot be created.
    pub fn new(name: &str) -> Self {
        TempDir(scratch_dir(name))
    }

    pub fn path(&self) -> &std::path::Path {
        &self.0
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        if !std::thread::panicking() {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }
}

/// `mcp-sample-server --transport http` on a free loopback port, killed on drop. Its
/// stderr (`--log-stderr`: one line per request it handles) is kept for
/// [`logged`](Self::logged).
#[derive(Debug)]
pub struct HttpSampleServer {
    /// The MCP endpoint it announced.
    pub url: String,
    /// The process, for tests that kill it.
    pub child: tokio::process::Child,
    log: Arc<Mutex<Vec<String>>>,
}

impl HttpSampleServer {
    /// Starts it with `args` added and waits until it listens.
    ///
    /// # Panics
    /// When it cannot start or does not listen within 30 s.
    pub async fn start(args: &[&str]) -> Self {
        let mut child = tokio::process::Command::new(sample_server_binary())
            .args(["--transport", "http", "--port", "0", "--log-stderr"])
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .expect("start mcp-sample-server");
        let stderr = child.stderr.take().expect("piped stderr");
        let mut lines = BufReader::new(stderr).lines();
        let url = tokio::time::timeout(Duration::from_secs(30), async {
            while let Some(line) = lines.next_line().await.expect("read stderr") {
                if let Some(url) = line.strip_prefix("listening on ") {
                    return url.to_owned();
                }
            }
            panic!("mcp-sample-server exited before listening");
        })
        .await
        .expect("mcp-sample-server did not start listening");
        // Keep draining stderr so the server never blocks on a full pipe.
        let log = Arc::new(Mutex::new(Vec::new()));
        let sink = Arc::clone(&log);
        tokio::spawn(async move {
            while let Ok(Some(line)) = lines.next_line().await {
                sink.lock().unwrap_or_else(|e| e.into_inner()).push(line);
            }
        });
        Self { url, child, log }
    }

    /// Whether it has logged a line containing `needle`.
    pub fn logged(&self, needle: &str) -> bool {
        self.log
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
            .any(|line| line.contains(needle))
    }
}

/// `mcp-sample-server --transport stdio ARGS…` with piped stdin/stdout, stderr
/// discarded, killed on drop.
///
/// # Panics
/// When it cannot start.
pub fn stdio_sample_server(args: &[&str]) -> tokio::process::Child {
    let args: Vec<String> = ["--transport", "stdio"]
        .iter()
        .chain(args)
        .map(|a| (*a).to_owned())
        .collect();
    stdio_process(&sample_server_binary(), &args)
}

/// Any stdio MCP server, `PROGRAM ARGS…`, with piped stdin/stdout, stderr discarded,
/// killed on drop.
///
/// # Panics
/// When it cannot start.
pub fn stdio_process(program: &std::path::Path, args: &[String]) -> tokio::process::Child {
    tokio::process::Command::new(program)
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .unwrap_or_else(|error| panic!("start {}: {error}", program.display()))
}
