//! `run_check`: http, tcp, command and file checks, passing and failing.

use std::path::{Path, PathBuf};
use std::time::Duration;

use fleet_mcp::{CheckFailure, CheckKind, CheckReport, CheckSpec, run_check};
use fleet_testkit::{free_port, scratch_dir, wait_until};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::TcpListener;

use crate::MARGIN;

const TIMEOUT: Duration = Duration::from_secs(5);

#[track_caller]
fn assert_pass(report: &CheckReport) {
    assert!(report.passed(), "expected a pass, got: {report}");
}

/// A loopback HTTP server answering every request with `status`.
async fn http_answering(status: u16) -> String {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let address = listener.local_addr().expect("local address");
    tokio::spawn(async move {
        while let Ok((mut stream, _)) = listener.accept().await {
            tokio::spawn(async move {
                let mut request = [0u8; 4096];
                let _ = stream.read(&mut request).await;
                let response = format!(
                    "HTTP/1.1 {status} Whatever\r\ncontent-length: 0\r\nconnection: close\r\n\r\n"
                );
                let _ = stream.write_all(response.as_bytes()).await;
            });
        }
    });
    format!("http://{address}/healthz")
}

#[tokio::test]
async fn http_passes_on_2xx_or_the_expected_status() {
    let ok = http_answering(204).await;
    let report = run_check(
        &CheckSpec::Http {
            url: ok.clone(),
            expect_status: None,
        },
        TIMEOUT,
    )
    .await;
    assert_eq!(report.kind, CheckKind::Http);
    assert_pass(&report);

    let unavailable = http_answering(503).await;
    let report = run_check(
        &CheckSpec::Http {
            url: unavailable.clone(),
            expect_status: None,
        },
        TIMEOUT,
    )
    .await;
    assert_eq!(
        report.failure(),
        Some(&CheckFailure::HttpStatus {
            url: unavailable.clone(),
            status: 503,
            expected: "2xx".into(),
        })
    );

    let report = run_check(
        &CheckSpec::Http {
            url: unavailable,
            expect_status: Some(503),
        },
        TIMEOUT,
    )
    .await;
    assert_pass(&report);

    let report = run_check(
        &CheckSpec::Http {
            url: ok,
            expect_status: Some(200),
        },
        TIMEOUT,
    )
    .await;
    assert!(
        matches!(report.failure(), Some(CheckFailure::HttpStatus { status: 204, expected, .. }) if expected == "200"),
        "{report}"
    );
}

#[tokio::test]
async fn http_to_a_closed_port_is_a_connect_failure() {
    let url = format!("http://127.0.0.1:{}/healthz", free_port());
    let report = run_check(
        &CheckSpec::Http {
            url: url.clone(),
            expect_status: None,
        },
        TIMEOUT,
    )
    .await;
    assert!(
        matches!(report.failure(), Some(CheckFailure::Connect { target, .. }) if *target == url),
        "{report}"
    );
}

#[tokio::test]
async fn tcp_passes_when_something_listens() {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let address = listener.local_addr().expect("local address").to_string();
    let report = run_check(&CheckSpec::Tcp { address }, TIMEOUT).await;
    assert_eq!(report.kind, CheckKind::Tcp);
    assert_pass(&report);

    let address = format!("127.0.0.1:{}", free_port());
    let report = run_check(
        &CheckSpec::Tcp {
            address: address.clone(),
        },
        TIMEOUT,
    )
    .await;
    assert!(
        matches!(report.failure(), Some(CheckFailure::Connect { target, .. }) if *target == address),
        "{report}"
    );
}

fn command(program: &str, args: &[&str], cwd: Option<PathBuf>) -> CheckSpec {
    CheckSpec::Command {
        program: program.into(),
        args: args.iter().map(|s| s.to_string()).collect(),
        cwd,
    }
}

#[tokio::test]
async fn a_command_passes_on_exit_code_zero_in_its_cwd() {
    let dir = scratch_dir("command-cwd");
    std::fs::write(dir.join("ready"), "").expect("write marker");
    let report = run_check(&command("test", &["-f", "ready"], Some(dir)), TIMEOUT).await;
    assert_eq!(report.kind, CheckKind::Command);
    assert_pass(&report);
}

#[tokio::test]
async fn a_failing_command_reports_its_code_and_output_tail() {
    let script = "echo starting; echo 'not ready: db down' >&2; exit 3";
    let report = run_check(&command("sh", &["-c", script], None), TIMEOUT).await;
    let Some(CheckFailure::CommandFailed {
        program,
        code,
        output_tail,
    }) = report.failure()
    else {
        panic!("expected CommandFailed, got {report}");
    };
    assert_eq!(program, "sh");
    assert_eq!(*code, Some(3));
    assert!(output_tail.contains("starting"), "{output_tail}");
    assert_eq!(
        report.failure().unwrap().to_string(),
        "command sh exited with code 3: not ready: db down"
    );
}

#[tokio::test]
async fn arguments_are_argv_not_shell() {
    // With a shell, `$(exit 1)` would run; as an argument it is just text.
    let report = run_check(&command("test", &["-n", "$(exit 1)"], None), TIMEOUT).await;
    assert_pass(&report);
}

#[tokio::test]
async fn a_missing_program_is_not_started() {
    let report = run_check(&command("/nonexistent/check-program", &[], None), TIMEOUT).await;
    assert!(
        matches!(
            report.failure(),
            Some(CheckFailure::CommandNotStarted { .. })
        ),
        "{report}"
    );
}

fn alive(pid: &str) -> bool {
    // A zombie waiting for its reaper counts as gone.
    match std::fs::read_to_string(Path::new("/proc").join(pid).join("stat")) {
        Ok(stat) => !stat
            .rsplit_once(')')
            .is_some_and(|(_, rest)| rest.trim_start().starts_with('Z')),
        Err(_) => false,
    }
}

#[tokio::test]
async fn a_command_past_its_timeout_is_killed_with_everything_it_started() {
    let dir = scratch_dir("command-timeout");
    let pidfile = dir.join("background.pid");
    let script = format!("sleep 60 & echo $! > {}; wait", pidfile.display());
    let timeout = Duration::from_millis(700);
    let spec = command("sh", &["-c", &script], None);
    let report = run_check(&spec, timeout).await;
    assert!(
        matches!(report.failure(), Some(CheckFailure::Timeout { during, after }) if during == "command sh" && *after == timeout),
        "{report}"
    );
    assert!(report.took < timeout + MARGIN, "{:?}", report.took);

    let pid = std::fs::read_to_string(&pidfile).expect("the script wrote its child's pid");
    let pid = pid.trim().to_owned();
    wait_until(
        "the background sleep is gone",
        Duration::from_secs(5),
        async || !alive(&pid),
    )
    .await;
}

#[tokio::test]
async fn a_file_check_passes_only_when_the_path_exists() {
    let dir = scratch_dir("file-check");
    let path = dir.join("ready");
    let spec = CheckSpec::File { path: path.clone() };
    let report = run_check(&spec, TIMEOUT).await;
    assert_eq!(report.kind, CheckKind::File);
    assert_eq!(
        report.failure(),
        Some(&CheckFailure::FileMissing { path: path.clone() })
    );

    std::fs::write(&path, "").expect("write marker");
    assert_pass(&run_check(&spec, TIMEOUT).await);
}
