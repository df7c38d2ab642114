//! The process runtime against real processes.
//!
//! Shell one-liners appear here as *programs under test* (to build process trees and
//! output); the runtime itself never runs a shell. Every wait is on a condition with a
//! generous deadline, never a bare sleep.

use fleet_runtime::process::{Pidfile, follow_log, log_path, pidfile_path, rotated_log_path};
use fleet_runtime::{
    ContainerLaunch, ContainerNetwork, ContainerResources, Launch, LogRotation, ProcessRuntime,
    PullPolicy, ReapOutcome,
};
use fleet_runtime::{
    Discovered, InstanceHandle, InstanceId, InstanceIo, InstanceSpec, InstanceState, Lifecycle,
    Reach, Runtime, StartError,
};
use fleet_spec::model::{Restart, RestartPolicyKind};
use fleet_testkit::{TempDir, wait_until};
use futures::{Stream, StreamExt};
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use std::collections::HashSet;
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::time::{Duration, Instant};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::sync::mpsc;

/// Generous: the machine running the tests may be small and busy.
const DEADLINE: Duration = Duration::from_secs(30);

async fn next(events: &mut mpsc::UnboundedReceiver<Lifecycle>) -> Lifecycle {
    tokio::time::timeout(DEADLINE, events.recv())
        .await
        .expect("timed out waiting for a lifecycle event")
        .expect("event channel closed")
}

fn restart(policy: RestartPolicyKind) -> Restart {
    Restart {
        policy,
        backoff_initial: Duration::from_millis(200),
        backoff_max: Duration::from_secs(2),
        backoff_multiplier: 2.0,
        jitter: 0.0,
        give_up_after: 10,
        stable_after: Duration::from_secs(60),
    }
}

fn spec(id: &str, program: &str, args: &[&str]) -> InstanceSpec {
    InstanceSpec {
        id: InstanceId(id.to_owned()),
        server: id.split('-').next().unwrap_or(id).to_owned(),
        revision: 1,
        launch: Launch::Process {
            program: program.to_owned(),
            cwd: None,
        },
        args: args.iter().map(|&a| a.to_owned()).collect(),
        env: Vec::new(),
        io: InstanceIo::Logged,
        restart: restart(RestartPolicyKind::Never),
        stop_grace: Duration::from_secs(5),
        deployment: None,
    }
}

/// `spec` run in `cwd`.
fn in_dir(mut spec: InstanceSpec, cwd: std::path::PathBuf) -> InstanceSpec {
    if let Launch::Process { cwd: dir, .. } = &mut spec.launch {
        *dir = Some(cwd);
    }
    spec
}

fn expect_running(event: Lifecycle) -> u32 {
    match event {
        Lifecycle::Running {
            handle: InstanceHandle::Process { pid },
            ..
        } => pid,
        other => panic!("expected Running, got {other:?}"),
    }
}

/// `/proc/PID/stat` fields: (state, pgrp, start time).
fn stat(pid: u32) -> Option<(char, u32, u64)> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let fields: Vec<&str> = text[text.rfind(')')? + 1..].split_whitespace().collect();
    Some((
        fields[0].chars().next()?,
        fields[2].parse().ok()?,
        fields[19].parse().ok()?,
    ))
}

fn is_live(pid: u32) -> bool {
    stat(pid).is_some_and(|(state, _, _)| !matches!(state, 'Z' | 'X'))
}

/// Live (non-zombie) processes in process group `pgid`.
fn group(pgid: u32) -> Vec<u32> {
    std::fs::read_dir("/proc")
        .unwrap()
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<u32>().ok())
        .filter(|&pid| {
            stat(pid).is_some_and(|(state, pgrp, _)| pgrp == pgid && !matches!(state, 'Z' | 'X'))
        })
        .collect()
}

fn read_log(dir: &Path, id: &str) -> String {
    std::fs::read_to_string(log_path(dir, &InstanceId(id.to_owned()))).unwrap_or_default()
}

#[tokio::test]
async fn stop_kills_the_whole_group_including_grandchildren() {
    let dir = TempDir::new("group");
    let runtime = ProcessRuntime::new(dir.path());
    let id = InstanceId("tree-r1-1".into());
    let mut instance = runtime
        .start(spec(
            "tree-r1-1",
            "sh",
            &["-c", "sleep 1000 & sleep 1000 & echo forked; wait"],
        ))
        .await
        .unwrap();
    let pid = expect_running(next(&mut instance.events).await);
    wait_until("the shell and both sleeps run", DEADLINE, async || {
        group(pid).len() >= 3
    })
    .await;
    let pidfile = pidfile_path(dir.path(), &id);
    assert!(pidfile.exists());

    let statuses = runtime.statuses();
    assert_eq!(statuses.len(), 1);
    assert_eq!(statuses[0].handle, Some(InstanceHandle::Process { pid }));
    assert_eq!(statuses[0].state, InstanceState::Running);
    assert_eq!(statuses[0].server, "tree");

    runtime.stop(&id).await.unwrap();
    assert_eq!(
        group(pid),
        Vec::<u32>::new(),
        "no process of the group survives"
    );
    assert!(!pidfile.exists(), "pidfile removed after reaping");
    assert!(matches!(
        next(&mut instance.events).await,
        Lifecycle::Exited {
            signal: Some(15),
            ..
        }
    ));
    assert!(matches!(
        next(&mut instance.events).await,
        Lifecycle::Stopped
    ));
    assert!(runtime.statuses().is_empty());
    runtime.stop(&id).await.expect("stop is idempotent");

    let log = read_log(dir.path(), "tree-r1-1");
    assert!(
        log.starts_with(&format!("--- started pid {pid} at ")),
        "{log}"
    );
    assert!(log.contains("\nforked\n"), "{log}");
    assert!(
        log.contains("--- exited signal 15 (SIGTERM) after "),
        "{log}"
    );
}

#[tokio::test]
async fn stop_escalates_to_sigkill_after_the_grace_period() {
    let dir = TempDir::new("sigkill");
    let runtime = ProcessRuntime::new(dir.path());
    let mut s = spec(
        "stubborn-r1-1",
        "sh",
        &["-c", "trap '' TERM; sleep 1000 & echo ready; wait"],
    );
    s.stop_grace = Duration::from_millis(300);
    let mut instance = runtime.start(s).await.unwrap();
    let pid = expect_running(next(&mut instance.events).await);
    wait_until("the trap is set", DEADLINE, async || {
        read_log(dir.path(), "stubborn-r1-1").contains("ready")
    })
    .await;

    let begun = Instant::now();
    runtime.stop(&instance.id).await.unwrap();
    assert!(begun.elapsed() >= Duration::from_millis(300));
    assert_eq!(group(pid), Vec::<u32>::new());
    assert!(matches!(
        next(&mut instance.events).await,
        Lifecycle::Exited {
            signal: Some(9),
            ..
        }
    ));
    let log = read_log(dir.path(), "stubborn-r1-1");
    assert!(log.contains("after SIGTERM; sending SIGKILL"), "{log}");
}

#[tokio::test]
async fn processes_left_by_an_exited_leader_are_stopped() {
    let dir = TempDir::new("orphans");
    let runtime = ProcessRuntime::new(dir.path());
    let mut instance = runtime
        .start(spec("leaky-r1-1", "sh", &["-c", "sleep 1000 & exit 0"]))
        .await
        .unwrap();
    let pid = expect_running(next(&mut instance.events).await);
    assert!(matches!(
        next(&mut instance.events).await,
        Lifecycle::Exited { code: Some(0), .. }
    ));
    assert_eq!(
        group(pid),
        Vec::<u32>::new(),
        "the background sleep is gone"
    );
    assert!(read_log(dir.path(), "leaky-r1-1").contains("outlived pid"));
    runtime.stop(&instance.id).await.unwrap();
}

#[tokio::test]
async fn restarts_with_backoff_after_kill_9() {
    let dir = TempDir::new("kill9");
    let runtime = ProcessRuntime::new(dir.path());
    let mut s = spec("sleeper-r1-1", "sleep", &["1000"]);
    s.restart = restart(RestartPolicyKind::OnFailure);
    let mut instance = runtime.start(s).await.unwrap();
    let first = expect_running(next(&mut instance.events).await);

    kill(Pid::from_raw(first as i32), Signal::SIGKILL).unwrap();
    assert!(matches!(
        next(&mut instance.events).await,
        Lifecycle::Exited {
            code: None,
            signal: Some(9),
            ..
        }
    ));
    match next(&mut instance.events).await {
        Lifecycle::BackingOff { attempt, delay } => {
            assert_eq!(attempt, 1);
            assert_eq!(delay, Duration::from_millis(200));
        }
        other => panic!("expected BackingOff, got {other:?}"),
    }
    let second = expect_running(next(&mut instance.events).await);
    assert_ne!(first, second);
    let status = &runtime.statuses()[0];
    assert_eq!(
        (
            status.handle.as_ref().and_then(InstanceHandle::pid),
            status.restarts
        ),
        (Some(second), 1)
    );
    assert_eq!(status.last_exit.unwrap().signal, Some(9));

    // A second failure backs off twice as long.
    kill(Pid::from_raw(second as i32), Signal::SIGKILL).unwrap();
    assert!(matches!(
        next(&mut instance.events).await,
        Lifecycle::Exited { .. }
    ));
    assert!(matches!(
        next(&mut instance.events).await,
        Lifecycle::BackingOff { attempt: 2, delay } if delay == Duration::from_millis(400)
    ));
    expect_running(next(&mut instance.events).await);
    runtime.stop(&instance.id).await.unwrap();
}

#[tokio::test]
async fn explicit_restart_kills_now_and_counts_as_a_failure() {
    let dir = TempDir::new("restart");
    let runtime = ProcessRuntime::new(dir.path());
    let mut s = spec("hung-r1-1", "sleep", &["1000"]);
    s.restart = restart(RestartPolicyKind::Never);
    let mut instance = runtime.start(s).await.unwrap();
    let first = expect_running(next(&mut instance.events).await);

    runtime.restart(&instance.id).await.unwrap();
    assert!(
        !is_live(first),
        "the old process is gone when restart returns"
    );
    assert!(matches!(
        next(&mut instance.events).await,
        Lifecycle::Exited {
            signal: Some(9),
            ..
        }
    ));
    assert!(matches!(
        next(&mut instance.events).await,
        Lifecycle::BackingOff { attempt: 1, .. }
    ));
    let second = expect_running(next(&mut instance.events).await);
    assert_ne!(first, second);
    runtime.stop(&instance.id).await.unwrap();

    let unknown = runtime.restart(&InstanceId("nope".into())).await;
    assert!(
        unknown
            .unwrap_err()
            .to_string()
            .contains("no instance `nope`")
    );
}

#[tokio::test]
async fn crash_loops_after_give_up_after_without_hot_looping() {
    let dir = TempDir::new("crashloop");
    let runtime = ProcessRuntime::new(dir.path());
    let mut s = spec("broken-r1-1", "false", &[]);
    s.restart = Restart {
        backoff_initial: Duration::from_millis(100),
        backoff_max: Duration::from_secs(1),
        give_up_after: 4,
        ..restart(RestartPolicyKind::OnFailure)
    };
    let begun = Instant::now();
    let mut instance = runtime.start(s).await.unwrap();
    let mut starts = 0;
    let mut delays = Duration::ZERO;
    let failures = loop {
        match next(&mut instance.events).await {
            Lifecycle::Running { .. } => starts += 1,
            Lifecycle::Exited { code, .. } => assert_eq!(code, Some(1)),
            Lifecycle::BackingOff { delay, .. } => delays += delay,
            Lifecycle::CrashLooping { failures } => break failures,
            other => panic!("unexpected {other:?}"),
        }
    };
    let elapsed = begun.elapsed();
    assert_eq!(failures, 4);
    assert_eq!(starts, 4, "the first start and three restarts");
    assert_eq!(delays, Duration::from_millis(100 + 200 + 400));
    assert!(
        elapsed >= delays,
        "{starts} starts in {elapsed:?}: a hot loop"
    );

    let status = &runtime.statuses()[0];
    assert_eq!(status.state, InstanceState::CrashLooping);
    assert_eq!((status.handle.clone(), status.restarts), (None, 3));
    assert!(
        tokio::time::timeout(Duration::from_millis(500), instance.events.recv())
            .await
            .is_err(),
        "no more starts after crash-looping"
    );
    assert!(read_log(dir.path(), "broken-r1-1").contains("--- crash-looping: 4 failed starts"));

    // An explicit restart tries again, from a clean slate.
    runtime.restart(&instance.id).await.unwrap();
    expect_running(next(&mut instance.events).await);
    runtime.stop(&instance.id).await.unwrap();
}

#[tokio::test]
async fn on_failure_does_not_restart_a_clean_exit_but_always_does() {
    let dir = TempDir::new("policy");
    let runtime = ProcessRuntime::new(dir.path());
    let mut s = spec("oneshot-r1-1", "true", &[]);
    s.restart = restart(RestartPolicyKind::OnFailure);
    let mut instance = runtime.start(s).await.unwrap();
    expect_running(next(&mut instance.events).await);
    assert!(matches!(
        next(&mut instance.events).await,
        Lifecycle::Exited {
            code: Some(0),
            signal: None,
            ..
        }
    ));
    wait_until("the instance is idle", DEADLINE, async || {
        runtime.statuses()[0].state == InstanceState::Exited
    })
    .await;
    assert!(
        instance.events.try_recv().is_err(),
        "no restart after exit 0"
    );
    runtime.stop(&instance.id).await.unwrap();
    assert!(matches!(
        next(&mut instance.events).await,
        Lifecycle::Stopped
    ));

    let mut s = spec("daemon-r1-1", "true", &[]);
    s.restart = restart(RestartPolicyKind::Always);
    let mut instance = runtime.start(s).await.unwrap();
    expect_running(next(&mut instance.events).await);
    assert!(matches!(
        next(&mut instance.events).await,
        Lifecycle::Exited { code: Some(0), .. }
    ));
    assert!(matches!(
        next(&mut instance.events).await,
        Lifecycle::BackingOff { attempt: 1, .. }
    ));
    runtime.stop(&instance.id).await.unwrap();
}

#[tokio::test]
async fn a_container_spec_is_refused_and_nothing_runs() {
    let dir = TempDir::new("wrongrt");
    let runtime = ProcessRuntime::new(dir.path());
    let mut s = spec("box-r1-1", "sleep", &["1000"]);
    s.launch = Launch::Container(ContainerLaunch {
        image: "localhost/box:1".into(),
        entrypoint: None,
        workdir: None,
        user: None,
        network: ContainerNetwork::None,
        resources: ContainerResources::default(),
        volumes: Vec::new(),
        read_only_root: true,
        pull: PullPolicy::Never,
        secrets: Vec::new(),
    });
    let err = runtime.start(s).await.unwrap_err();
    assert!(matches!(err, StartError::WrongRuntime { .. }), "{err}");
    assert_eq!(
        err.to_string(),
        "instance `box-r1-1` runs a container, which the process runtime cannot start"
    );
    assert!(runtime.statuses().is_empty());
}

#[tokio::test]
async fn spawn_errors_name_the_program_or_directory() {
    let dir = TempDir::new("spawnfail");
    let runtime = ProcessRuntime::new(dir.path());

    let err = runtime
        .start(spec("a-r1-1", "no-such-mcp-server-xyz", &[]))
        .await
        .unwrap_err();
    assert!(matches!(err, StartError::ProgramNotFound { .. }));
    let message = err.to_string();
    assert!(
        message.contains("`no-such-mcp-server-xyz` not found on PATH"),
        "{message}"
    );
    assert!(message.contains("install it"), "{message}");

    let err = runtime
        .start(spec("a-r1-1", "/nonexistent/bin/server", &[]))
        .await
        .unwrap_err();
    assert!(
        err.to_string()
            .contains("`/nonexistent/bin/server` does not exist"),
        "{err}"
    );

    let s = in_dir(
        spec("a-r1-1", "sleep", &["1000"]),
        dir.path().join("missing"),
    );
    let err = runtime.start(s).await.unwrap_err();
    assert!(matches!(err, StartError::CwdMissing { .. }));
    let message = err.to_string();
    assert!(
        message.contains(&format!("`{}`", dir.path().join("missing").display())),
        "{message}"
    );
    assert!(message.contains("create it or fix `cwd`"), "{message}");

    let err = runtime
        .start(spec("../escape", "true", &[]))
        .await
        .unwrap_err();
    assert!(matches!(err, StartError::InvalidId { .. }), "{err}");

    // Failed starts leave nothing behind; the id is free.
    assert!(runtime.statuses().is_empty());
    assert!(read_log(dir.path(), "a-r1-1").contains("--- spawn failed: "));
    let mut instance = runtime
        .start(spec("a-r1-1", "sleep", &["1000"]))
        .await
        .unwrap();
    let again = runtime.start(spec("a-r1-1", "sleep", &["1000"])).await;
    assert!(matches!(again, Err(StartError::AlreadyRunning { .. })));
    expect_running(next(&mut instance.events).await);
    runtime.stop(&instance.id).await.unwrap();
}

#[tokio::test]
async fn a_program_that_vanishes_reports_spawn_failed_on_restart() {
    let dir = TempDir::new("vanish");
    let program = dir.path().join("server");
    std::fs::copy("/bin/false", &program).unwrap();
    let runtime = ProcessRuntime::new(dir.path().join("state"));
    let mut s = spec("gone-r1-1", program.to_str().unwrap(), &[]);
    s.restart = Restart {
        // Long enough to delete the program before the restart.
        backoff_initial: Duration::from_secs(3),
        give_up_after: 2,
        ..restart(RestartPolicyKind::OnFailure)
    };
    let mut instance = runtime.start(s).await.unwrap();
    expect_running(next(&mut instance.events).await);
    assert!(matches!(
        next(&mut instance.events).await,
        Lifecycle::Exited { code: Some(1), .. }
    ));
    std::fs::remove_file(&program).unwrap();
    assert!(matches!(
        next(&mut instance.events).await,
        Lifecycle::BackingOff { .. }
    ));
    match next(&mut instance.events).await {
        Lifecycle::SpawnFailed { error } => {
            assert!(
                error.contains(&format!("`{}` does not exist", program.display())),
                "{error}"
            );
        }
        other => panic!("expected SpawnFailed, got {other:?}"),
    }
    assert!(matches!(
        next(&mut instance.events).await,
        Lifecycle::CrashLooping { failures: 2 }
    ));
    runtime.stop(&instance.id).await.unwrap();
}

#[tokio::test]
async fn logs_rotate_within_the_size_cap() {
    let dir = TempDir::new("rotation");
    let rotation = LogRotation {
        max_bytes: 16 * 1024,
        keep: 2,
    };
    let runtime = ProcessRuntime::with_log_rotation(dir.path(), rotation);
    let mut instance = runtime
        .start(spec("chatty-r1-1", "seq", &["1", "50000"]))
        .await
        .unwrap();
    expect_running(next(&mut instance.events).await);
    assert!(matches!(
        next(&mut instance.events).await,
        Lifecycle::Exited { code: Some(0), .. }
    ));
    runtime.stop(&instance.id).await.unwrap();

    let live = log_path(dir.path(), &instance.id);
    for path in [
        live.clone(),
        rotated_log_path(&live, 1),
        rotated_log_path(&live, 2),
    ] {
        let len = std::fs::metadata(&path).unwrap().len();
        assert!(len <= 16 * 1024, "{} is {len} bytes", path.display());
    }
    assert!(
        !rotated_log_path(&live, 3).exists(),
        "only `keep` rotated files"
    );
    let text = std::fs::read_to_string(&live).unwrap();
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines[lines.len() - 2], "50000");
    assert!(lines[lines.len() - 1].starts_with("--- exited code 0 after "));
    // Consecutive and complete across the rotation boundary.
    let older = std::fs::read_to_string(rotated_log_path(&live, 1)).unwrap();
    let last_older: u32 = older.lines().last().unwrap().parse().unwrap();
    assert_eq!(lines[0].parse::<u32>().unwrap(), last_older + 1);
}

#[tokio::test]
async fn stdio_pipes_round_trip_and_stderr_goes_to_the_log() {
    let dir = TempDir::new("stdio");
    let runtime = ProcessRuntime::new(dir.path());
    let mut s = spec("echo-r1-1", "sh", &["-c", "echo diagnostics >&2; exec cat"]);
    s.io = InstanceIo::Stdio;
    let mut instance = runtime.start(s).await.unwrap();
    let Lifecycle::Running {
        reach: Reach::Stdio(attachment),
        ..
    } = next(&mut instance.events).await
    else {
        panic!("stdio instances are reached over a stdio attachment");
    };
    let (mut stdin, stdout) = (attachment.stdin, attachment.stdout);
    let mut stdout = BufReader::new(stdout).lines();
    let request = r#"{"jsonrpc":"2.0","id":1,"method":"ping"}"#;
    stdin
        .write_all(format!("{request}\n").as_bytes())
        .await
        .unwrap();
    stdin.flush().await.unwrap();
    let echoed = tokio::time::timeout(DEADLINE, stdout.next_line())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(echoed.as_deref(), Some(request));

    // The caller closes stdin, then stops: `cat` exits on EOF, no signal needed.
    drop(stdin);
    runtime.stop(&instance.id).await.unwrap();
    assert!(matches!(
        next(&mut instance.events).await,
        Lifecycle::Exited {
            code: Some(0),
            signal: None,
            ..
        }
    ));
    let log = read_log(dir.path(), "echo-r1-1");
    assert!(log.contains("\ndiagnostics\n"), "{log}");
    assert!(
        !log.contains("jsonrpc"),
        "stdout is the protocol, not the log: {log}"
    );
}

#[tokio::test]
async fn a_listening_instance_is_reached_at_the_address_the_runtime_reports() {
    let dir = TempDir::new("listen");
    let runtime = ProcessRuntime::new(dir.path());
    let port = fleet_testkit::free_port();
    let program = fleet_testkit::sample_server_binary();
    let port_arg = port.to_string();
    let mut s = spec(
        "web-r1-1",
        program.to_str().unwrap(),
        &["--transport", "http", "--port", &port_arg],
    );
    s.io = InstanceIo::Listen { port };
    let mut instance = runtime.start(s).await.unwrap();
    let Lifecycle::Running {
        reach: Reach::Address(address),
        handle: InstanceHandle::Process { .. },
    } = next(&mut instance.events).await
    else {
        panic!("a listening instance is reached at an address");
    };
    assert_eq!(address, std::net::SocketAddr::from(([127, 0, 0, 1], port)));
    // The address is where the server answers, not only a number passed through.
    wait_until(
        "the server listens at the reported address",
        DEADLINE,
        async || tokio::net::TcpStream::connect(address).await.is_ok(),
    )
    .await;
    runtime.stop(&instance.id).await.unwrap();
}

/// Reads `lines` until one contains `needle`.
async fn read_until(lines: &mut (impl Stream<Item = String> + Unpin), needle: &str) {
    let found = tokio::time::timeout(DEADLINE, async {
        while let Some(line) = lines.next().await {
            if line.contains(needle) {
                return true;
            }
        }
        false
    })
    .await;
    assert_eq!(found, Ok(true), "no log line with `{needle}`");
}

#[tokio::test]
async fn logs_read_through_the_runtime_tail_then_follow_an_instance_by_its_id() {
    let dir = TempDir::new("logs-trait");
    let runtime = ProcessRuntime::new(dir.path());
    let mut s = spec(
        "talk-r1-1",
        "sh",
        &[
            "-c",
            "echo first >&2; read line; echo \"got $line\" >&2; exec cat",
        ],
    );
    s.io = InstanceIo::Stdio;
    let mut instance = runtime.start(s).await.unwrap();
    let Lifecycle::Running {
        reach: Reach::Stdio(mut attachment),
        ..
    } = next(&mut instance.events).await
    else {
        panic!("stdio instances are reached over a stdio attachment");
    };
    let mut lines = runtime.logs(&instance.id, 10, true);
    // The tail shows what the instance wrote; following shows what it writes later.
    read_until(&mut lines, "first").await;
    attachment.stdin.write_all(b"hello\n").await.unwrap();
    attachment.stdin.flush().await.unwrap();
    read_until(&mut lines, "got hello").await;
    drop(attachment);
    runtime.stop(&instance.id).await.unwrap();

    // After the stop the log is still there by id, without following.
    let tail: Vec<String> = runtime.logs(&instance.id, 100, false).collect().await;
    assert!(tail.iter().any(|l| l == "got hello"), "{tail:?}");
}

#[tokio::test]
async fn stopping_a_stdio_instance_whose_stdin_is_open_signals_after_half_the_grace() {
    let dir = TempDir::new("stdio-open");
    let runtime = ProcessRuntime::new(dir.path());
    let mut s = spec("held-r1-1", "cat", &[]);
    s.io = InstanceIo::Stdio;
    s.stop_grace = Duration::from_millis(600);
    let mut instance = runtime.start(s).await.unwrap();
    let Lifecycle::Running {
        reach: Reach::Stdio(_attachment),
        ..
    } = next(&mut instance.events).await
    else {
        panic!("stdio instances are reached over a stdio attachment");
    };
    let begun = Instant::now();
    runtime.stop(&instance.id).await.unwrap();
    assert!(begun.elapsed() >= Duration::from_millis(300));
    assert!(matches!(
        next(&mut instance.events).await,
        Lifecycle::Exited {
            signal: Some(15),
            ..
        }
    ));
}

#[tokio::test]
async fn environment_is_minimal_plus_the_spec() {
    let dir = TempDir::new("env");
    let runtime = ProcessRuntime::new(dir.path());
    let mut s = in_dir(spec("env-r1-1", "env", &[]), dir.path().to_owned());
    s.env = vec![("MCP_TOKEN".into(), "t0k3n".into())];
    let mut instance = runtime.start(s).await.unwrap();
    expect_running(next(&mut instance.events).await);
    assert!(matches!(
        next(&mut instance.events).await,
        Lifecycle::Exited { code: Some(0), .. }
    ));
    runtime.stop(&instance.id).await.unwrap();
    let log = read_log(dir.path(), "env-r1-1");
    let names: Vec<&str> = log
        .lines()
        .filter(|l| !l.starts_with("--- "))
        .filter_map(|l| l.split('=').next())
        .collect();
    assert!(
        names.contains(&"MCP_TOKEN") && log.contains("MCP_TOKEN=t0k3n"),
        "{log}"
    );
    for name in names {
        assert!(
            ["PATH", "HOME", "LANG", "TMPDIR", "USER", "MCP_TOKEN"].contains(&name),
            "unexpected variable {name}"
        );
    }
}

fn spawn_group(script: &str) -> std::process::Child {
    std::process::Command::new("sh")
        .args(["-c", script])
        .process_group(0)
        .spawn()
        .unwrap()
}

fn write_pidfile(state_dir: &Path, name: &str, pid: u32, start_time_ticks: u64) {
    let record = Pidfile {
        id: InstanceId(name.to_owned()),
        server: name.to_owned(),
        revision: 1,
        pid,
        pgid: pid,
        start_time_ticks,
        program: "/bin/sh".into(),
        started_at: "2026-01-01T00:00:00.000Z".into(),
        stop_grace_ms: 5000,
    };
    let path = pidfile_path(state_dir, &record.id);
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::write(path, serde_json::to_vec(&record).unwrap()).unwrap();
}

/// A `sleep 1000` leading a process group of its own.
fn sleeper() -> std::process::Child {
    std::process::Command::new("sleep")
        .arg("1000")
        .process_group(0)
        .spawn()
        .unwrap()
}

/// A live process unrelated to any instance, and a pidfile `name` naming its PID with
/// another start time (as when the PID was reused); the process, its PID and start time.
fn under_a_stale_pidfile(state_dir: &Path, name: &str) -> (std::process::Child, u32, u64) {
    let process = sleeper();
    let pid = process.id();
    let start = stat(pid).unwrap().2;
    write_pidfile(state_dir, name, pid, start + 12_345);
    (process, pid, start)
}

#[tokio::test]
async fn discover_finds_what_another_control_plane_left_running_and_touches_nothing() {
    let dir = TempDir::new("discover");
    // The control plane that "crashed": its runtime still runs one instance.
    let earlier = ProcessRuntime::new(dir.path());
    let mut left = earlier
        .start(spec("left-r2-1", "sleep", &["1000"]))
        .await
        .unwrap();
    let left_pid = expect_running(next(&mut left.events).await);

    // A pidfile whose process has exited since.
    let mut exited = sleeper();
    let exited_pid = exited.id();
    write_pidfile(
        dir.path(),
        "exited-r1-1",
        exited_pid,
        stat(exited_pid).unwrap().2,
    );
    exited.kill().unwrap();
    exited.wait().unwrap();
    // A pidfile whose PID now belongs to an unrelated process (another start time).
    let (mut unrelated, unrelated_pid, _) = under_a_stale_pidfile(dir.path(), "reused-r1-1");
    std::fs::write(dir.path().join("run/garbage.json"), b"{ not json").unwrap();

    assert_eq!(
        earlier.discover().await,
        Vec::new(),
        "a runtime supervises what it started; it does not discover it"
    );
    let later = ProcessRuntime::new(dir.path());
    assert_eq!(
        later.discover().await,
        vec![Discovered {
            id: InstanceId("left-r2-1".into()),
            server: "left".into(),
            revision: 1,
            handle: InstanceHandle::Process { pid: left_pid },
            // Its pipes died with the control plane that spawned it.
            adoptable: false,
        }]
    );
    // Discovery only reads: everything still runs, every pidfile is still there.
    assert!(is_live(left_pid) && is_live(unrelated_pid));
    for name in ["left-r2-1", "exited-r1-1", "reused-r1-1"] {
        assert!(
            pidfile_path(dir.path(), &InstanceId(name.into())).exists(),
            "{name}"
        );
    }

    earlier.stop(&left.id).await.unwrap();
    assert_eq!(
        later.discover().await,
        Vec::new(),
        "a stopped instance is gone"
    );
    unrelated.kill().unwrap();
    unrelated.wait().unwrap();
}

#[tokio::test]
async fn reap_leftovers_kills_our_groups_and_spares_reused_pids() {
    let dir = TempDir::new("reap");

    // Left running by a "previous control plane": a leader with two children.
    let mut leftover = spawn_group("sleep 1000 & sleep 1000 & wait");
    let leader = leftover.id();
    wait_until("the leftover group is up", DEADLINE, async || {
        group(leader).len() >= 3
    })
    .await;
    write_pidfile(dir.path(), "leftover-r1-1", leader, stat(leader).unwrap().2);

    // A leader that died, leaving its children in the group.
    let mut orphaning = spawn_group("sleep 1000 & sleep 1000 & exit 0");
    let orphaning_pid = orphaning.id();
    let orphaning_start = stat(orphaning_pid).unwrap().2;
    orphaning.wait().unwrap();
    wait_until("the orphans are up", DEADLINE, async || {
        group(orphaning_pid).len() >= 2
    })
    .await;
    write_pidfile(dir.path(), "orphans-r1-1", orphaning_pid, orphaning_start);

    // A live, unrelated process whose PID a stale pidfile names, with another start time.
    let (mut unrelated, unrelated_pid, unrelated_start) =
        under_a_stale_pidfile(dir.path(), "stale-r1-1");

    std::fs::write(dir.path().join("run/garbage.json"), b"{ not json").unwrap();

    let runtime = ProcessRuntime::new(dir.path().to_path_buf());
    let reaped = runtime.reap_leftovers(&HashSet::new()).await;
    let outcome = |name: &str| {
        reaped
            .iter()
            .find(|r| r.record.ends_with(&format!("{name}.json")))
            .map(|r| r.outcome.clone())
            .unwrap()
    };
    assert_eq!(reaped.len(), 4);
    assert_eq!(
        outcome("leftover-r1-1"),
        ReapOutcome::Stopped {
            leader: true,
            members: 2,
            forced: false
        }
    );
    assert_eq!(
        outcome("orphans-r1-1"),
        ReapOutcome::Stopped {
            leader: false,
            members: 2,
            forced: false
        }
    );
    assert_eq!(outcome("stale-r1-1"), ReapOutcome::PidReused);
    assert!(matches!(outcome("garbage"), ReapOutcome::Unreadable { .. }));

    assert_eq!(group(leader), Vec::<u32>::new());
    assert_eq!(group(orphaning_pid), Vec::<u32>::new());
    assert!(is_live(unrelated_pid), "a reused PID is never signalled");
    assert_eq!(stat(unrelated_pid).unwrap().2, unrelated_start);
    assert_eq!(
        std::fs::read_dir(dir.path().join("run")).unwrap().count(),
        0
    );

    leftover.wait().unwrap();
    unrelated.kill().unwrap();
    unrelated.wait().unwrap();
    assert!(runtime.reap_leftovers(&HashSet::new()).await.is_empty());
}

#[tokio::test]
async fn reaping_leftovers_never_touches_what_the_runtime_itself_supervises() {
    let dir = TempDir::new("reap-own");
    let runtime = ProcessRuntime::new(dir.path());
    let id = InstanceId("own-r1-1".into());
    let mut instance = runtime
        .start(spec("own-r1-1", "sleep", &["1000"]))
        .await
        .unwrap();
    let pid = expect_running(next(&mut instance.events).await);
    assert!(
        runtime.reap_leftovers(&HashSet::new()).await.is_empty(),
        "a supervised instance is not a leftover"
    );
    assert!(is_live(pid), "the supervised instance still runs");
    assert!(
        pidfile_path(dir.path(), &id).exists(),
        "its pidfile is kept"
    );
    runtime.stop(&id).await.unwrap();
}

async fn expect_line(lines: &mut (impl Stream<Item = String> + Unpin), want: &str) {
    let got = tokio::time::timeout(DEADLINE, lines.next())
        .await
        .expect("timed out waiting for a log line");
    assert_eq!(got.as_deref(), Some(want));
}

#[tokio::test]
async fn follow_log_tails_then_follows_across_rotation() {
    let dir = TempDir::new("follow");
    let path = dir.path().join("x.log");
    std::fs::write(rotated_log_path(&path, 1), "old 1\nold 2\n").unwrap();
    std::fs::write(&path, "a\nb\n").unwrap();

    let mut lines = follow_log(&path, 3, true);
    expect_line(&mut lines, "old 2").await;
    expect_line(&mut lines, "a").await;
    expect_line(&mut lines, "b").await;

    append(&path, "c\npartial");
    expect_line(&mut lines, "c").await;
    append(&path, " line\n");
    expect_line(&mut lines, "partial line").await;

    // Rotate the way the writer does: rename, (a late line lands in the old file), then a
    // new file.
    std::fs::rename(&path, rotated_log_path(&path, 1)).unwrap();
    append(&rotated_log_path(&path, 1), "last of old\n");
    std::fs::write(&path, "first of new\n").unwrap();
    expect_line(&mut lines, "last of old").await;
    expect_line(&mut lines, "first of new").await;
    append(&path, "second of new\n");
    expect_line(&mut lines, "second of new").await;
}

#[tokio::test]
async fn log_tail_without_follow_ends() {
    let dir = TempDir::new("tail");
    let path = dir.path().join("x.log");
    std::fs::write(&path, "1\n2\n3\n").unwrap();
    let lines: Vec<String> = follow_log(&path, 2, false).collect().await;
    assert_eq!(lines, ["2", "3"]);
    let none: Vec<String> = follow_log(dir.path().join("missing.log"), 2, false)
        .collect()
        .await;
    assert!(none.is_empty());
}

#[tokio::test]
async fn follow_log_waits_for_a_file_that_does_not_exist_yet() {
    let dir = TempDir::new("follow-late");
    let runtime = ProcessRuntime::new(dir.path());
    let id = InstanceId("late-r1-1".into());
    let mut lines = follow_log(log_path(dir.path(), &id), 10, true);
    let mut instance = runtime
        .start(spec("late-r1-1", "echo", &["hello"]))
        .await
        .unwrap();
    let pid = expect_running(next(&mut instance.events).await);
    let first = tokio::time::timeout(DEADLINE, lines.next())
        .await
        .unwrap()
        .unwrap();
    assert!(
        first.starts_with(&format!("--- started pid {pid} at ")),
        "{first}"
    );
    expect_line(&mut lines, "hello").await;
    runtime.stop(&id).await.unwrap();
}

fn append(path: &Path, text: &str) {
    use std::io::Write;
    let mut file = std::fs::OpenOptions::new().append(true).open(path).unwrap();
    file.write_all(text.as_bytes()).unwrap();
}

#[tokio::test]
async fn dropping_the_runtime_stops_its_instances() {
    let dir = TempDir::new("drop");
    let runtime = ProcessRuntime::new(dir.path());
    let mut instance = runtime
        .start(spec("orphan-r1-1", "sleep", &["1000"]))
        .await
        .unwrap();
    let pid = expect_running(next(&mut instance.events).await);
    drop(runtime);
    assert!(matches!(
        next(&mut instance.events).await,
        Lifecycle::Exited {
            signal: Some(15),
            ..
        }
    ));
    assert!(matches!(
        next(&mut instance.events).await,
        Lifecycle::Stopped
    ));
    assert!(!is_live(pid));
    assert!(!pidfile_path(dir.path(), &instance.id).exists());
}
