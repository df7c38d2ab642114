//! Third-party MCP software installed by `cargo xtask peers` into
//! `<workspace>/target/peers/bin`. A missing peer fails the test (never skips it):
//! interop is part of the gate.

use std::path::{Path, PathBuf};
use std::process::{Output, Stdio};
use std::time::Duration;

use tokio::process::Command;

/// `<workspace>/target/peers/bin`, where the xtask links every peer.
fn bin_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../target/peers/bin")
}

/// The peer executable `name`.
///
/// # Panics
/// When it is not installed, saying how to install it.
pub(crate) fn peer(name: &str) -> PathBuf {
    let path = bin_dir().join(name);
    assert!(
        path.exists(),
        "peer `{name}` is missing at {}: run `cargo xtask peers`",
        path.display()
    );
    path
}

/// The Node.js script `name` (an npm package's bin) run by the peers' Node 22
/// explicitly — the machine's own Node may be older — with the peers first on PATH
/// for anything it spawns.
pub(crate) fn node_script(name: &str) -> Command {
    let mut command = Command::new(peer("node"));
    command.arg(peer(name));
    let path = std::env::var_os("PATH").unwrap_or_default();
    let path = std::env::join_paths(std::iter::once(bin_dir()).chain(std::env::split_paths(&path)))
        .expect("a PATH with the peers first");
    command
        .env("PATH", path)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    command
}

/// Runs `command` to completion, killing it after `limit`.
///
/// # Panics
/// When it cannot start or outlives `limit`.
pub(crate) async fn run(what: &str, command: Command, limit: Duration) -> Output {
    run_bounded(what, command, limit)
        .await
        .unwrap_or_else(|| panic!("{what} did not finish within {limit:?}"))
}

/// Runs `command` to completion; `None` when it outlived `limit` and was killed.
///
/// # Panics
/// When it cannot start or its output cannot be read.
pub(crate) async fn run_bounded(
    what: &str,
    mut command: Command,
    limit: Duration,
) -> Option<Output> {
    let child = command
        .spawn()
        .unwrap_or_else(|error| panic!("cannot start {what}: {error}"));
    // Dropping the unfinished wait drops the child, which kills it (`kill_on_drop`).
    tokio::time::timeout(limit, child.wait_with_output())
        .await
        .ok()
        .map(|output| output.unwrap_or_else(|error| panic!("{what}: {error}")))
}

/// Exit code, stdout and stderr, for failure messages.
pub(crate) fn describe(output: &Output) -> String {
    format!(
        "exit status: {}\n--- stdout ---\n{}\n--- stderr ---\n{}",
        output.status,
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    )
}
