//! Helpers every integration test needs: the sample server's path, starting it
//! (HTTP or stdio), free ports, per-test scratch directories and waiting on a
//! condition with a deadline.

use parking_lot::Mutex;
use std::net::{Ipv4Addr, TcpListener};
use std::path::PathBuf;
use std::process::Stdio;
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
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

/// What one look at a condition returns: whether it holds, the value a test wants once it
/// does and, while it does not, what was seen instead (for the timeout's message).
///
/// `bool` says only whether; `Option<T>` gives `T` once `Some`; `Result<T, E>` gives `T`
/// once `Ok` and shows the last `Err` if the deadline passes.
pub trait Satisfied {
    /// What [`wait_until`] and [`wait_until_blocking`] return once the condition holds.
    type Value;

    /// `Ok(value)` when the condition holds; otherwise what was seen, if it says anything.
    ///
    /// # Errors
    /// While the condition does not hold.
    fn satisfied(self) -> Result<Self::Value, Option<String>>;
}

impl Satisfied for bool {
    type Value = ();

    fn satisfied(self) -> Result<(), Option<String>> {
        if self { Ok(()) } else { Err(None) }
    }
}

impl<T> Satisfied for Option<T> {
    type Value = T;

    fn satisfied(self) -> Result<T, Option<String>> {
        self.ok_or(None)
    }
}

impl<T, E: std::fmt::Debug> Satisfied for Result<T, E> {
    type Value = T;

    fn satisfied(self) -> Result<T, Option<String>> {
        self.map_err(|seen| Some(format!("{seen:#?}")))
    }
}

/// The first pause between looks; it doubles up to [`LONGEST_PAUSE`]. Short first, so a
/// condition that holds almost at once costs the test little; capped, so a condition that
/// is expensive to look at (one that runs a command) does not load a busy machine.
const FIRST_PAUSE: Duration = Duration::from_millis(5);
const LONGEST_PAUSE: Duration = Duration::from_millis(50);

/// Looks at `condition` again and again, pausing a few milliseconds between looks, until
/// it holds; returns what it gave then (see [`Satisfied`]).
///
/// Tests wait on facts, never on sleeps: this and [`wait_until_blocking`] are the only
/// places that sleep.
///
/// # Panics
/// When `deadline` passes first; the message names `what` and the last thing seen.
pub async fn wait_until<S: Satisfied>(
    what: &str,
    deadline: Duration,
    mut condition: impl AsyncFnMut() -> S,
) -> S::Value {
    let started = Instant::now();
    let mut pause = FIRST_PAUSE;
    loop {
        match condition().await.satisfied() {
            Ok(value) => return value,
            Err(seen) => timed_out_unless_within(started, deadline, what, seen),
        }
        tokio::time::sleep(pause).await;
        pause = (pause * 2).min(LONGEST_PAUSE);
    }
}

/// [`wait_until`] for a test without an async runtime: the thread sleeps between looks.
///
/// # Panics
/// When `deadline` passes first; the message names `what` and the last thing seen.
#[track_caller]
pub fn wait_until_blocking<S: Satisfied>(
    what: &str,
    deadline: Duration,
    mut condition: impl FnMut() -> S,
) -> S::Value {
    let started = Instant::now();
    let mut pause = FIRST_PAUSE;
    loop {
        match condition().satisfied() {
            Ok(value) => return value,
            Err(seen) => timed_out_unless_within(started, deadline, what, seen),
        }
        std::thread::sleep(pause);
        pause = (pause * 2).min(LONGEST_PAUSE);
    }
}

#[track_caller]
fn timed_out_unless_within(started: Instant, deadline: Duration, what: &str, seen: Option<String>) {
    if started.elapsed() < deadline {
        return;
    }
    match seen {
        Some(seen) => {
            panic!("timed out after {deadline:?} waiting until {what}; last seen: {seen}")
        }
        None => panic!("timed out after {deadline:?} waiting until {what}"),
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
                sink.lock().push(line);
            }
        });
        Self { url, child, log }
    }

    /// Whether it has logged a line containing `needle`.
    pub fn logged(&self, needle: &str) -> bool {
        self.log.lock().iter().any(|line| line.contains(needle))
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

/// Sends `initialize` (protocol 2025-06-18) over a stdio instance's attachment and returns
/// the answer's line, read within `deadline`.
///
/// # Panics
/// When writing fails or no line comes in time.
pub async fn initialize_over(
    attachment: &mut fleet_runtime::StdioAttachment,
    deadline: Duration,
) -> String {
    use tokio::io::AsyncWriteExt as _;
    const INITIALIZE: &str = r#"{"jsonrpc":"2.0","id":1,"method":"initialize","params":{"protocolVersion":"2025-06-18","capabilities":{},"clientInfo":{"name":"test","version":"1"}}}"#;
    attachment
        .stdin
        .write_all(format!("{INITIALIZE}\n").as_bytes())
        .await
        .unwrap();
    attachment.stdin.flush().await.unwrap();
    let mut line = String::new();
    let mut reader = BufReader::new(&mut attachment.stdout);
    tokio::time::timeout(deadline, reader.read_line(&mut line))
        .await
        .unwrap_or_else(|_| panic!("no answer to initialize within {deadline:?}"))
        .unwrap();
    line
}
