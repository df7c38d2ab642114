//! The test PostgreSQL cluster against the real server: a fresh database per call, and no
//! server left running once its test process is gone, however it went.

use fleet_testkit::postgres as pg;
use fleet_testkit::wait_until_blocking;
use std::io::{BufRead as _, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

/// How long a stopped server may take to go (an immediate stop is a signal and an exit).
const GONE: Duration = Duration::from_secs(30);

/// Not a test on its own: the child process of the tests below, which run it by name with
/// `--ignored`. It starts its cluster, prints `cluster DIR POSTMASTER_PID`, and waits to be
/// killed.
#[test]
#[ignore = "the child process of the cluster cleanup tests, which run it"]
fn hold_a_cluster_until_killed() {
    pg::fresh_database();
    let dir = pg::cluster().dir();
    println!("cluster {} {}", dir.display(), postmaster_pid(dir));
    loop {
        std::thread::park();
    }
}

#[test]
fn every_database_is_new_and_empty() {
    let (first, second) = (pg::fresh_database(), pg::fresh_database());
    assert_ne!(first, second);
    let name = first.rsplit_once('/').unwrap().1;
    pg::cluster().psql(name, "CREATE TABLE t (x int); INSERT INTO t VALUES (1)");
    let name = second.rsplit_once('/').unwrap().1;
    let tables = pg::cluster().psql(
        name,
        "SELECT count(*) FROM pg_tables WHERE schemaname = 'public'",
    );
    assert_eq!(tables.trim(), "0");
}

#[test]
fn a_killed_test_process_leaves_no_server_behind() {
    let (mut child, dir, postmaster) = start_holder();
    assert!(running(postmaster), "the child's server runs");
    child.kill().unwrap(); // SIGKILL: no exit hook runs
    child.wait().unwrap();
    wait_until_blocking("the killed process's server is gone", GONE, || {
        !running(postmaster) && !dir.exists()
    });
}

/// A test process killed together with its watchdog (say, by a `kill -9` of the process
/// group): the next test process to start a cluster stops and removes it.
#[test]
fn a_cluster_left_by_a_killed_run_is_removed_by_the_next() {
    let (mut child, dir, postmaster) = start_holder();
    let watchdog = Command::new("pgrep")
        .args(["-P", &child.id().to_string(), "-x", "sh"])
        .output()
        .unwrap();
    let watchdog = String::from_utf8(watchdog.stdout).unwrap();
    let watchdog = watchdog.trim();
    assert!(!watchdog.is_empty(), "the child runs a watchdog");
    let killed = Command::new("kill").args(["-KILL", watchdog]).status();
    assert!(killed.unwrap().success());
    child.kill().unwrap();
    child.wait().unwrap();
    assert!(running(postmaster), "nothing stopped the server yet");

    // The next test process clears what the dead one left before starting its own.
    let (mut next, next_dir, _) = start_holder();
    assert!(!running(postmaster), "the abandoned server was stopped");
    assert!(!dir.exists(), "{} was removed", dir.display());
    next.kill().unwrap();
    next.wait().unwrap();
    wait_until_blocking("the next process's server is gone", GONE, || {
        !next_dir.exists()
    });
}

/// Runs [`hold_a_cluster_until_killed`] in a child process; returns it, its cluster's
/// directory and the server's pid.
fn start_holder() -> (Child, PathBuf, u32) {
    let mut child = Command::new(std::env::current_exe().unwrap())
        .args(["--ignored", "--exact", "hold_a_cluster_until_killed"])
        .args(["--nocapture", "--test-threads", "1"])
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let stdout = BufReader::new(child.stdout.take().unwrap());
    for line in stdout.lines() {
        let line = line.unwrap();
        // After libtest's `test NAME ... `, on the same line.
        if let Some((_, rest)) = line.split_once("cluster ") {
            let (dir, pid) = rest.rsplit_once(' ').unwrap();
            return (child, PathBuf::from(dir), pid.parse().unwrap());
        }
    }
    let status = child.wait().unwrap();
    panic!("the child ended ({status}) without starting a cluster");
}

/// The server's pid: the first line of `postmaster.pid`.
fn postmaster_pid(dir: &Path) -> u32 {
    let pid_file = std::fs::read_to_string(dir.join("data/postmaster.pid")).unwrap();
    pid_file.lines().next().unwrap().trim().parse().unwrap()
}

/// Whether `pid` runs: it exists and is not a zombie (no init reaps in a container).
fn running(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|stat| {
        stat.rsplit_once(") ")
            .is_some_and(|(_, rest)| !rest.starts_with('Z'))
    })
}
