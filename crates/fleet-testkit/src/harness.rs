//! Helpers every integration test needs: the sample server's path, free ports,
//! per-test scratch directories and waiting on a condition with a deadline.

use std::net::{Ipv4Addr, TcpListener};
use std::path::PathBuf;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

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
