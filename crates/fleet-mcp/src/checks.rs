//! The other health checks: HTTP status, TCP connect, a command's exit code, a file's
//! existence. Specs arrive resolved (templates rendered, the server's own address
//! filled in) — resolving them is the engine's job.

use parking_lot::Mutex;
use std::path::PathBuf;
use std::process::Stdio;
use std::sync::Arc;
use std::time::Duration;

use nix::sys::signal::{Signal, killpg};
use nix::unistd::Pid;
use tokio::io::{AsyncRead, AsyncReadExt as _};
use tokio::time::Instant;

use crate::report::{CheckFailure, CheckKind, CheckPass, CheckReport};

/// A resolved, non-MCP health check.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CheckSpec {
    /// `GET url`; passes on `expect_status`, or on any 2xx when `None`.
    Http {
        url: String,
        expect_status: Option<u16>,
    },
    /// A TCP connect to `host:port`.
    Tcp { address: String },
    /// `program args…`, run directly (argv, never a shell); exit code 0 passes.
    Command {
        program: String,
        args: Vec<String>,
        cwd: Option<PathBuf>,
    },
    /// The path must exist.
    File { path: PathBuf },
}

impl CheckSpec {
    /// The kind of report this spec produces.
    pub fn kind(&self) -> CheckKind {
        match self {
            Self::Http { .. } => CheckKind::Http,
            Self::Tcp { .. } => CheckKind::Tcp,
            Self::Command { .. } => CheckKind::Command,
            Self::File { .. } => CheckKind::File,
        }
    }
}

/// Runs one check once, bounded by `timeout`.
///
/// Never fails: problems are [`CheckFailure`]s in the report. A command still running
/// at the timeout is killed with its whole process group (it runs in its own), so a
/// check never leaves processes behind.
pub async fn run_check(spec: &CheckSpec, timeout: Duration) -> CheckReport {
    let started = Instant::now();
    let outcome = match spec {
        CheckSpec::Http { url, expect_status } => http(url, *expect_status, timeout).await,
        CheckSpec::Tcp { address } => tcp(address, timeout).await,
        CheckSpec::Command { program, args, cwd } => {
            command(program, args, cwd.as_ref(), timeout).await
        }
        CheckSpec::File { path } => file(path, timeout).await,
    };
    CheckReport {
        kind: spec.kind(),
        took: started.elapsed(),
        outcome,
    }
}

fn pass(detail: String) -> Result<CheckPass, CheckFailure> {
    Ok(CheckPass { detail, mcp: None })
}

async fn http(
    url: &str,
    expect_status: Option<u16>,
    timeout: Duration,
) -> Result<CheckPass, CheckFailure> {
    let connect = |message: String| CheckFailure::Connect {
        target: url.to_owned(),
        message,
    };
    let parsed = crate::probe::http_url(url)?;
    // A client per check: checks run seconds apart, and a shared client's pooled
    // connections would tie it to the runtime that opened them.
    let client = crate::probe::http_client(url, false)?;
    let response = match tokio::time::timeout(timeout, client.get(parsed).send()).await {
        Err(_) => {
            return Err(CheckFailure::Timeout {
                during: format!("GET {url}"),
                after: timeout,
            });
        }
        Ok(Err(e)) if e.is_connect() => return Err(connect(innermost(&e))),
        Ok(Err(e)) => return Err(connect(crate::probe::error_chain(&e))),
        Ok(Ok(response)) => response,
    };
    let status = response.status().as_u16();
    let (ok, expected) = match expect_status {
        Some(code) => (status == code, code.to_string()),
        None => (response.status().is_success(), "2xx".to_owned()),
    };
    if ok {
        pass(format!("GET {url} returned HTTP {status}"))
    } else {
        Err(CheckFailure::HttpStatus {
            url: url.to_owned(),
            status,
            expected,
        })
    }
}

/// The innermost cause: "Connection refused (os error 111)".
fn innermost(error: &(dyn std::error::Error + 'static)) -> String {
    let mut cause = error;
    while let Some(next) = cause.source() {
        cause = next;
    }
    cause.to_string()
}

async fn tcp(address: &str, timeout: Duration) -> Result<CheckPass, CheckFailure> {
    match tokio::time::timeout(timeout, tokio::net::TcpStream::connect(address)).await {
        Err(_) => Err(CheckFailure::Timeout {
            during: format!("TCP connect to {address}"),
            after: timeout,
        }),
        Ok(Err(e)) => Err(CheckFailure::Connect {
            target: address.to_owned(),
            message: e.to_string(),
        }),
        Ok(Ok(stream)) => {
            let peer = stream
                .peer_addr()
                .map(|a| a.to_string())
                .unwrap_or_else(|_| address.to_owned());
            pass(format!("TCP connect to {peer} succeeded"))
        }
    }
}

/// How much combined stdout+stderr a command check keeps (the end of it).
const OUTPUT_TAIL_BYTES: usize = 4096;
/// How many lines of that a failure report carries.
const OUTPUT_TAIL_LINES: usize = 10;
/// After the command exits, how long its output pipes may stay open (held by a
/// process it left behind) before that process group is killed.
const PIPE_GRACE: Duration = Duration::from_millis(500);

async fn command(
    program: &str,
    args: &[String],
    cwd: Option<&PathBuf>,
    timeout: Duration,
) -> Result<CheckPass, CheckFailure> {
    let mut cmd = tokio::process::Command::new(program);
    cmd.args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        // Its own process group, so a timeout can take down everything it started.
        .process_group(0)
        .kill_on_drop(true);
    if let Some(cwd) = cwd {
        cmd.current_dir(cwd);
    }
    let mut child = cmd.spawn().map_err(|e| CheckFailure::CommandNotStarted {
        program: program.to_owned(),
        message: e.to_string(),
    })?;
    // The child leads its group: the group id is its pid.
    let group = child
        .id()
        .and_then(|id| i32::try_from(id).ok())
        .map(Pid::from_raw);
    let tail = Arc::new(Mutex::new(Tail::default()));
    let mut readers = tokio::task::JoinSet::new();
    if let Some(out) = child.stdout.take() {
        readers.spawn(collect(out, tail.clone()));
    }
    if let Some(err) = child.stderr.take() {
        readers.spawn(collect(err, tail.clone()));
    }
    let kill_group = || {
        if let Some(group) = group {
            // ESRCH (nobody left) is fine.
            let _ = killpg(group, Signal::SIGKILL);
        }
    };

    let status = match tokio::time::timeout(timeout, child.wait()).await {
        Ok(status) => status,
        Err(_) => {
            // Not reaped yet, so the group id cannot have been reused.
            kill_group();
            let _ = child.wait().await;
            readers.shutdown().await;
            return Err(CheckFailure::Timeout {
                during: format!("command {program}"),
                after: timeout,
            });
        }
    };
    let drained = tokio::time::timeout(PIPE_GRACE, async {
        while readers.join_next().await.is_some() {}
    })
    .await;
    if drained.is_err() {
        // Something the command started still holds its pipes — so the group still
        // exists and its id is still ours to signal.
        kill_group();
        readers.shutdown().await;
    }
    let output_tail = tail.lock().last_lines(OUTPUT_TAIL_LINES);
    match status {
        Ok(status) if status.success() => pass(format!("command {program} exited with code 0")),
        Ok(status) => Err(CheckFailure::CommandFailed {
            program: program.to_owned(),
            code: status.code(),
            output_tail,
        }),
        Err(e) => Err(CheckFailure::CommandNotStarted {
            program: program.to_owned(),
            message: format!("waiting for it failed: {e}"),
        }),
    }
}

/// The last [`OUTPUT_TAIL_BYTES`] of a command's output.
#[derive(Debug, Default)]
struct Tail {
    bytes: Vec<u8>,
}

impl Tail {
    fn push(&mut self, chunk: &[u8]) {
        self.bytes.extend_from_slice(chunk);
        if self.bytes.len() > OUTPUT_TAIL_BYTES {
            let excess = self.bytes.len() - OUTPUT_TAIL_BYTES;
            self.bytes.drain(..excess);
        }
    }

    fn last_lines(&self, n: usize) -> String {
        let text = String::from_utf8_lossy(&self.bytes);
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(n)..].join("\n")
    }
}

async fn collect(mut pipe: impl AsyncRead + Unpin, tail: Arc<Mutex<Tail>>) {
    let mut buf = [0u8; 4096];
    while let Ok(n) = pipe.read(&mut buf).await {
        if n == 0 {
            break;
        }
        tail.lock().push(&buf[..n]);
    }
}

async fn file(path: &PathBuf, timeout: Duration) -> Result<CheckPass, CheckFailure> {
    match tokio::time::timeout(timeout, tokio::fs::metadata(path)).await {
        Err(_) => Err(CheckFailure::Timeout {
            during: format!("stat {}", path.display()),
            after: timeout,
        }),
        Ok(Ok(_)) => pass(format!("{} exists", path.display())),
        Ok(Err(e)) if e.kind() == std::io::ErrorKind::NotFound => {
            Err(CheckFailure::FileMissing { path: path.clone() })
        }
        Ok(Err(e)) => Err(CheckFailure::FileUnreadable {
            path: path.clone(),
            message: e.to_string(),
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_tail_keeps_the_end() {
        let mut tail = Tail::default();
        tail.push(&vec![b'a'; OUTPUT_TAIL_BYTES]);
        tail.push(b"\nline 1\nline 2\n");
        assert_eq!(tail.bytes.len(), OUTPUT_TAIL_BYTES);
        assert_eq!(tail.last_lines(2), "line 1\nline 2");
    }
}
