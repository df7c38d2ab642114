//! `mcpfleet up` with real processes, real sockets and the real sample server: dependency
//! waves, health gating, restarts, crash loops, rollback, and recovery from a killed control
//! plane. Every test has its own state directory, so they run in parallel.

use fleet_api::Client;
use fleet_api::types::{DeploymentState, EventKind, ServerState, Status};
use fleet_testkit::{wait_until, wait_until_blocking};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::{Duration, Instant};

mod admin_auth;
mod canary;
mod container_digests;
mod container_secrets;
mod containers;
mod dashboard;
mod dashboard_browser;
mod deploy;
mod first_use;
mod history;
mod kubernetes;
mod kubernetes_e2e;
mod logs;
mod messages;
mod observability;
mod pod_network;
mod postgres;
mod recovery;
mod replicas;
mod restart;
mod status;
mod tls;
mod traces;
mod webhooks;

fn bin_dir() -> PathBuf {
    Path::new(env!("CARGO_BIN_EXE_mcpfleet"))
        .parent()
        .unwrap()
        .to_path_buf()
}

fn sample() -> String {
    let path = bin_dir().join("mcp-sample-server");
    assert!(
        path.exists(),
        "{} is missing: build the workspace (cargo test --workspace builds it)",
        path.display()
    );
    path.display().to_string()
}

struct Fleet {
    dir: PathBuf,
    /// Set for every mcpfleet command (`DOCKER_HOST` for container fleets).
    env: Vec<(String, String)>,
}

impl Fleet {
    /// A fleet file (with `SAMPLE` replaced by the sample server's path) in a fresh directory.
    fn new(test: &str, yaml: &str) -> Self {
        let dir = std::env::temp_dir().join(format!("mcpfleet-up-{test}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let mut yaml = yaml.replace("SAMPLE", &sample());
        if !yaml.contains("\ngateway:") {
            // Tests run in parallel: each gateway takes a port of its own.
            yaml.push_str("\ngateway:\n  listen: 127.0.0.1:0\n");
        }
        std::fs::write(dir.join("mcpfleet.yaml"), yaml).unwrap();
        Fleet {
            dir,
            env: Vec::new(),
        }
    }

    /// Every mcpfleet command of this fleet gets `name=value` in its environment.
    fn with_env(mut self, name: &str, value: &str) -> Self {
        self.env.push((name.to_owned(), value.to_owned()));
        self
    }

    /// mcpfleet run in the fleet's directory with its environment.
    fn command(&self) -> Command {
        let mut command = Command::new(env!("CARGO_BIN_EXE_mcpfleet"));
        command
            .current_dir(&self.dir)
            .envs(self.env.iter().map(|(k, v)| (k, v)));
        command
    }

    fn state_dir(&self) -> PathBuf {
        self.dir.join("state")
    }

    fn mcpfleet(&self, args: &[&str]) -> Output {
        self.mcpfleet_with_path(args, None)
    }

    fn mcpfleet_with_path(&self, args: &[&str], extra_path: Option<&Path>) -> Output {
        let mut cmd = self.command();
        cmd.args(args).arg("--state-dir").arg(self.state_dir());
        if let Some(p) = extra_path {
            cmd.env(
                "PATH",
                format!(
                    "{}:{}",
                    p.display(),
                    std::env::var("PATH").unwrap_or_default()
                ),
            );
        }
        cmd.output().unwrap()
    }

    fn up(&self) -> Output {
        self.mcpfleet(&["up", "-d"])
    }

    /// `mcpfleet up` without `-d`: the control plane is this child process.
    fn up_in_foreground(&self) -> std::process::Child {
        self.command()
            .args(["up", "--state-dir"])
            .arg(self.state_dir())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap()
    }

    /// `mcpfleet deploy` of the fleet file as it is now, in a thread: join it for its output.
    /// Replaces the fleet file (before a `deploy`).
    fn rewrite(&self, yaml: &str) {
        std::fs::write(self.dir.join("mcpfleet.yaml"), yaml).unwrap();
    }

    fn deploy_in_background(&self) -> std::thread::JoinHandle<Output> {
        let mut command = self.command();
        command
            .args(["deploy", "--state-dir"])
            .arg(self.state_dir());
        std::thread::spawn(move || command.output().unwrap())
    }

    /// `mcpfleet down` of the control plane whose state is in `state_dir` (another than this
    /// fleet's own, as a standby's); it must succeed.
    fn down_in(&self, state_dir: &Path) {
        let out = self
            .command()
            .args(["down", "--state-dir"])
            .arg(state_dir)
            .output()
            .unwrap();
        assert!(out.status.success(), "{}", text(&out));
    }

    fn client(&self) -> Client {
        Client::new(&self.state_dir())
    }

    fn status(&self) -> Status {
        let out = self.mcpfleet(&["status", "--output", "json"]);
        assert!(out.status.success(), "{}", text(&out));
        serde_json::from_slice(&out.stdout).unwrap()
    }

    /// The first status `f` accepts; the timeout's message shows the last one it refused.
    fn wait_for(
        &self,
        what: &str,
        deadline: Duration,
        mut f: impl FnMut(&Status) -> bool,
    ) -> Status {
        wait_until_blocking(what, deadline, || {
            let status = self.status();
            if f(&status) {
                Ok(status)
            } else {
                Err(Box::new(status))
            }
        })
    }
}

impl Drop for Fleet {
    fn drop(&mut self) {
        let _ = self.mcpfleet(&["down"]);
    }
}

fn text(out: &Output) -> String {
    format!(
        "exit {:?}\nstdout:\n{}\nstderr:\n{}",
        out.status.code(),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

fn alive(pid: u32) -> bool {
    // A zombie has exited; only a process that can still run counts. A zombie leader whose
    // other threads are still exiting (a busy machine, a kill -9) still holds the
    // process's files and sockets: it counts until they are gone.
    let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
        return false;
    };
    let zombie = stat
        .rsplit(')')
        .next()
        .and_then(|r| r.split_whitespace().next())
        == Some("Z");
    !zombie || std::fs::read_dir(format!("/proc/{pid}/task")).is_ok_and(|tasks| tasks.count() > 1)
}

/// Processes whose command line contains `marker`.
fn processes_with(marker: &str) -> Vec<u32> {
    std::fs::read_dir("/proc")
        .unwrap()
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<u32>().ok())
        .filter(|pid| {
            std::fs::read(format!("/proc/{pid}/cmdline"))
                .is_ok_and(|c| String::from_utf8_lossy(&c).contains(marker))
                && alive(*pid)
        })
        .collect()
}

fn server<'a>(status: &'a Status, name: &str) -> &'a fleet_api::types::ServerStatus {
    status.servers.iter().find(|s| s.name == name).unwrap()
}

fn events(fleet: &Fleet) -> Vec<fleet_api::types::Event> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
        .block_on(async {
            let mut lines = fleet.client().events(false).await.unwrap();
            let mut out = Vec::new();
            while let Some(e) = lines.next_event().await.unwrap() {
                out.push(e);
            }
            out
        })
}

#[test]
fn three_waves_come_up_in_dependency_order_and_go_down_in_reverse() {
    let fleet = Fleet::new(
        "waves",
        r#"
version: 1
name: waves
servers:
  base:
    stdio: { command: SAMPLE, args: ["--startup-delay", "300ms", "--name", "waves-base"] }
    health: { mcp: { expect_tools: [echo, add] } }
  middle:
    http: { command: SAMPLE, args: ["--transport", "http", "--port", "{{ port }}", "--name", "waves-middle"] }
    depends_on: [base]
    replicas: 2
  top:
    stdio: { command: SAMPLE, args: ["--name", "waves-top"] }
    depends_on: [middle]
    health: { mcp: { call: { tool: add, arguments: { a: 2, b: 3 }, expect: { contains: "5" } } } }
"#,
    );
    let out = fleet.up();
    assert!(out.status.success(), "{}", text(&out));
    let status = fleet.status();
    for s in &status.servers {
        assert_eq!(s.state, ServerState::Ready, "{s:#?}");
    }
    assert_eq!(server(&status, "middle").instances.len(), 2);
    assert!(
        server(&status, "middle")
            .endpoint
            .as_deref()
            .unwrap()
            .starts_with("http://127.0.0.1:")
    );

    // A dependent never starts before its dependency is ready.
    let events = events(&fleet);
    let at = |kind: EventKind, name: &str| {
        events
            .iter()
            .position(|e| e.kind == kind && e.server.as_deref() == Some(name))
            .unwrap_or_else(|| panic!("no {kind:?} for {name}"))
    };
    assert!(at(EventKind::ServerReady, "base") < at(EventKind::ServerStarting, "middle"));
    assert!(at(EventKind::ServerReady, "middle") < at(EventKind::ServerStarting, "top"));

    let pids: Vec<u32> = status
        .servers
        .iter()
        .flat_map(|s| s.instances.iter().filter_map(|i| i.pid))
        .collect();
    assert_eq!(pids.len(), 4);
    let out = fleet.mcpfleet(&["down", "--output", "json"]);
    assert!(out.status.success(), "{}", text(&out));
    assert!(pids.iter().all(|p| !alive(*p)), "processes survived down");
    // Stopped in reverse order.
    let stopped: Vec<String> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| serde_json::from_str::<fleet_api::types::Event>(l).ok())
        .filter(|e| e.kind == EventKind::ServerStopped)
        .filter_map(|e| e.server)
        .collect();
    assert_eq!(stopped, ["top", "middle", "base"]);
}

#[test]
fn a_server_that_never_answers_fails_by_name_and_leaves_nothing_behind() {
    let fleet = Fleet::new(
        "silent",
        r#"
version: 1
name: silent
servers:
  fine:
    stdio: { command: SAMPLE, args: ["--name", "silent-fine-marker"] }
  mute:
    stdio: { command: SAMPLE, args: ["--never-answer", "--name", "silent-mute-marker"] }
    depends_on: [fine]
    health: { mcp: { handshake_timeout: 1s } }
"#,
    );
    let started = Instant::now();
    let out = fleet.up();
    let shown = text(&out);
    assert_eq!(out.status.code(), Some(1), "{shown}");
    assert!(
        started.elapsed() < Duration::from_secs(20),
        "took {:?}",
        started.elapsed()
    );
    assert!(shown.contains("mute"), "{shown}");
    assert!(
        shown.contains("handshake") && shown.contains("1s"),
        "{shown}"
    );
    // Rolled back: no process of this deployment is left.
    wait_until_blocking(
        "no process survives the rollback",
        Duration::from_secs(15),
        || {
            processes_with("silent-fine-marker").is_empty()
                && processes_with("silent-mute-marker").is_empty()
        },
    );
}

#[test]
fn a_killed_server_is_restarted_and_a_crashing_one_ends_crash_looping() {
    let fleet = Fleet::new(
        "restarts",
        r#"
version: 1
name: restarts
defaults:
  restart: { backoff: { initial: 100ms, max: 400ms } }
servers:
  steady:
    http: { command: SAMPLE, args: ["--transport", "http", "--port", "{{ port }}"] }
  flaky:
    stdio: { command: SAMPLE, args: ["--exit-after", "300ms"] }
    restart: { policy: always, give_up_after: 3, stable_after: 30s }
"#,
    );
    let out = fleet.up();
    assert!(out.status.success(), "{}", text(&out));
    let before = fleet.status();
    let pid = server(&before, "steady").instances[0].pid.unwrap();
    nix_kill9(pid);
    let after = fleet.wait_for(
        "steady is restarted and ready",
        Duration::from_secs(20),
        |s| {
            let i = &server(s, "steady").instances[0];
            i.restarts >= 1 && i.state == ServerState::Ready && i.pid != Some(pid)
        },
    );
    assert_eq!(server(&after, "steady").state, ServerState::Ready);

    let looping = fleet.wait_for("flaky is crash-looping", Duration::from_secs(30), |s| {
        server(s, "flaky").state == ServerState::CrashLooping
    });
    let flaky = server(&looping, "flaky");
    assert!(
        flaky
            .reason
            .as_deref()
            .unwrap_or("")
            .contains("3 failed starts"),
        "{flaky:#?}"
    );
    // No hot loop: it was started exactly give_up_after times.
    assert_eq!(flaky.instances[0].restarts, 2, "{flaky:#?}");
    let out = fleet.mcpfleet(&["metrics"]);
    let metrics = String::from_utf8_lossy(&out.stdout);
    for line in [
        format!(
            "mcpfleet_instance_restarts_total{{server=\"flaky\",instance=\"{}\"}} 2",
            flaky.instances[0].id
        ),
        format!(
            "mcpfleet_instance_up{{server=\"flaky\",instance=\"{}\"}} 0",
            flaky.instances[0].id
        ),
    ] {
        assert!(
            metrics.lines().any(|l| l == line),
            "{line} missing:\n{metrics}"
        );
    }
}

/// `kill -9 PID`, returning once the process is gone (its sockets and files closed): a
/// start right after must not find the killed one still answering.
fn nix_kill9(pid: u32) {
    let status = Command::new("kill")
        .args(["-9", &pid.to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    wait_until_blocking(
        &format!("process {pid} is gone after kill -9"),
        Duration::from_secs(10),
        || !alive(pid),
    );
}

#[test]
fn a_killed_control_plane_leaves_no_duplicates_or_orphans_after_the_next_up() {
    let fleet = Fleet::new(
        "crash",
        r#"
version: 1
name: crash
servers:
  web:
    http: { command: SAMPLE, args: ["--transport", "http", "--port", "{{ port }}", "--name", "crash-web-marker"] }
    replicas: 2
  tool:
    stdio: { command: SAMPLE, args: ["--name", "crash-tool-marker"] }
"#,
    );
    let out = fleet.up();
    assert!(out.status.success(), "{}", text(&out));
    let first = fleet.status();
    // `tool` is per-session: its checked instance, and one warm process for sessions.
    wait_until_blocking("a warm process runs", Duration::from_secs(10), || {
        processes_with("crash-tool-marker").len() >= 2
    });
    let old: Vec<u32> = first
        .servers
        .iter()
        .flat_map(|s| s.instances.iter().filter_map(|i| i.pid))
        .chain(processes_with("crash-tool-marker"))
        .collect();
    nix_kill9(first.pid);
    wait_until_blocking(
        "the killed control plane is gone",
        Duration::from_secs(10),
        || !alive(first.pid),
    );
    let out = fleet.up();
    assert!(out.status.success(), "{}", text(&out));
    let second = fleet.status();
    assert_ne!(second.pid, first.pid);
    assert!(
        second.servers.iter().all(|s| s.state == ServerState::Ready),
        "{second:#?}"
    );
    assert!(
        old.iter().all(|p| !alive(*p)),
        "an instance of the killed control plane survived"
    );
    assert_eq!(
        processes_with("crash-web-marker").len(),
        2,
        "duplicates of web"
    );
    wait_until_blocking("a warm process runs", Duration::from_secs(10), || {
        processes_with("crash-tool-marker").len() >= 2
    });
    assert_eq!(
        processes_with("crash-tool-marker").len(),
        2,
        "duplicates of tool (its instance and one warm process)"
    );
}

#[test]
fn bad_commands_ports_and_output_get_clear_errors() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = taken.local_addr().unwrap().port();
    let cases = [
        (
            "missing-program",
            "stdio: { command: /nonexistent/mcp-server }".to_string(),
            "/nonexistent/mcp-server",
        ),
        (
            "missing-cwd",
            "stdio: { command: SAMPLE, cwd: ./no-such-dir }".to_string(),
            "no-such-dir",
        ),
        (
            "port-in-use",
            format!(
                "http: {{ command: SAMPLE, args: [\"--transport\", \"http\", \"--port\", \"{{{{ port }}}}\"], port: {port} }}"
            ),
            "already in use",
        ),
        (
            "garbage-stdout",
            "stdio: { command: SAMPLE, args: [\"--garbage-stdout\"] }".to_string(),
            "not json-rpc",
        ),
    ];
    for (name, transport, expected) in cases {
        let yaml = format!(
            "version: 1\nname: bad\nservers:\n  broken:\n    {transport}\n    health: {{ mcp: {{ handshake_timeout: 3s }} }}\n"
        );
        let fleet = Fleet::new(&format!("bad-{name}"), &yaml);
        let out = fleet.up();
        let shown = text(&out);
        assert_eq!(out.status.code(), Some(1), "{name}: {shown}");
        assert!(shown.contains("broken"), "{name}: {shown}");
        assert!(
            shown.to_lowercase().contains(expected),
            "{name}: expected {expected:?} in {shown}"
        );
        assert!(!shown.contains("panicked"), "{name}: {shown}");
    }
    drop(taken);
}

#[test]
fn interop_the_reference_servers_come_up_healthy() {
    let peers = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../target/peers/bin");
    assert!(
        peers.join("mcp-server-time").exists() && peers.join("mcp-server-everything").exists(),
        "the reference servers are not installed: run `cargo xtask peers` (CI does)"
    );
    let yaml = std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples/reference-servers.yaml"),
    )
    .unwrap();
    let fleet = Fleet::new("reference", &yaml);
    let out = fleet.mcpfleet_with_path(&["up", "-d"], Some(&peers.canonicalize().unwrap()));
    assert!(out.status.success(), "{}", text(&out));
    let status = fleet.status();
    for name in ["time", "memory", "everything"] {
        let s = server(&status, name);
        assert_eq!(s.state, ServerState::Ready, "{s:#?}");
    }
    let out = fleet.mcpfleet(&["check", "--output", "json"]);
    assert!(out.status.success(), "{}", text(&out));
}

#[test]
fn foreground_up_stops_everything_on_ctrl_c_and_logs_can_be_followed() {
    let fleet = Fleet::new(
        "foreground",
        r#"
version: 1
name: foreground
servers:
  web:
    http: { command: SAMPLE, args: ["--transport", "http", "--port", "{{ port }}", "--name", "foreground-web-marker"] }
  tool:
    stdio: { command: SAMPLE, args: ["--name", "foreground-tool-marker"] }
    depends_on: [web]
"#,
    );
    let child = fleet.up_in_foreground();
    wait_until_blocking(
        "the control plane opens its socket",
        Duration::from_secs(20),
        || fleet.state_dir().join("control.sock").exists(),
    );
    fleet.wait_for(
        "the fleet is deployed and ready",
        Duration::from_secs(20),
        |s| {
            s.deployment.state == DeploymentState::Succeeded
                && !s.servers.is_empty()
                && s.servers.iter().all(|s| s.state == ServerState::Ready)
        },
    );

    // The http server's log holds what it printed on stderr; `-f` streams it.
    let out = fleet.mcpfleet(&["logs", "web", "-n", "20"]);
    assert!(out.status.success(), "{}", text(&out));
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("listening on http://127.0.0.1:"),
        "{}",
        text(&out)
    );
    let mut follow = Command::new(env!("CARGO_BIN_EXE_mcpfleet"))
        .args(["logs", "web", "-f", "--state-dir"])
        .arg(fleet.state_dir())
        .current_dir(&fleet.dir)
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = std::io::BufRead::lines(std::io::BufReader::new(follow.stdout.take().unwrap()));
    assert!(
        lines.any(|l| l.unwrap().contains("listening on")),
        "logs -f ended without the line"
    );
    assert!(
        follow.try_wait().unwrap().is_none(),
        "logs -f must keep following"
    );
    follow.kill().unwrap();
    follow.wait().unwrap();

    assert_eq!(processes_with("foreground-web-marker").len(), 1);
    Command::new("kill")
        .args(["-INT", &child.id().to_string()])
        .status()
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success(), "{}", text(&out));
    assert!(
        processes_with("foreground-web-marker").is_empty()
            && processes_with("foreground-tool-marker").is_empty()
    );
    let out = fleet.mcpfleet(&["status"]);
    assert_eq!(out.status.code(), Some(3), "{}", text(&out));
}

#[test]
fn every_http_server_is_reachable_through_the_gateway() {
    let fleet = Fleet::new(
        "gateway",
        r#"
version: 1
name: gateway
servers:
  search:
    http: { command: SAMPLE, args: ["--transport", "http", "--port", "{{ port }}"] }
    replicas: 2
"#,
    );
    let out = fleet.up();
    assert!(out.status.success(), "{}", text(&out));
    let status = fleet.status();
    let endpoint = server(&status, "search").endpoint.clone().unwrap();
    assert!(endpoint.ends_with("/mcp/search"), "{endpoint}");
    assert_echo_answers(&endpoint, "through the gateway");
}

#[test]
fn metrics_on_the_socket_and_the_read_only_tcp_admin_listener() {
    let fleet = Fleet::new(
        "metrics",
        r#"
version: 1
name: metrics
admin: { listen: 127.0.0.1:0 }
servers:
  search:
    http: { command: SAMPLE, args: ["--transport", "http", "--port", "{{ port }}"] }
"#,
    );
    let out = fleet.up();
    assert!(out.status.success(), "{}", text(&out));
    let status = fleet.status();
    let endpoint = server(&status, "search").endpoint.clone().unwrap();
    let instance = server(&status, "search").instances[0].id.clone();
    let admin = status
        .admin_url
        .clone()
        .expect("status shows the admin URL");
    assert!(
        admin.starts_with("http://127.0.0.1:") && !admin.ends_with(":0"),
        "{admin}"
    );
    let shown = fleet.mcpfleet(&["status"]);
    assert!(
        String::from_utf8_lossy(&shown.stdout).contains(&format!("admin: {admin}")),
        "{}",
        text(&shown)
    );

    assert_echo_answers(&endpoint, "counted");

    let out = fleet.mcpfleet(&["metrics"]);
    assert!(out.status.success(), "{}", text(&out));
    let metrics = String::from_utf8_lossy(&out.stdout).into_owned();
    let up = format!("mcpfleet_instance_up{{server=\"search\",instance=\"{instance}\"}} 1");
    assert!(metrics.lines().any(|l| l == up), "{up} missing:\n{metrics}");
    // Polls while the instance started up are not failed checks.
    let failures = format!(
        "mcpfleet_health_check_failures_total{{server=\"search\",instance=\"{instance}\"}} 0"
    );
    assert!(
        metrics.lines().any(|l| l == failures),
        "{failures} missing:\n{metrics}"
    );
    assert!(
        metrics
            .lines()
            .any(|l| l.starts_with("mcpfleet_gateway_requests_total{")
                && l.contains("server=\"search\"")
                && l.contains("method=\"tools/call\"")),
        "no tools/call request counted:\n{metrics}"
    );
    for family in [
        "mcpfleet_gateway_requests_total",
        "mcpfleet_instance_up",
        "mcpfleet_instance_restarts_total",
        "mcpfleet_health_check_failures_total",
        "mcpfleet_deployment_duration_seconds",
    ] {
        assert!(
            metrics.contains(&format!("# TYPE {family} ")),
            "{family} missing:\n{metrics}"
        );
    }
    assert!(
        metrics
            .lines()
            .any(|l| l.starts_with("mcpfleet_deployment_duration_seconds ")),
        "{metrics}"
    );

    // The TCP listener: the same families, and nothing that changes the fleet.
    let address = admin.trim_start_matches("http://");
    let scraped = admin_request(address, "GET", "/metrics", None);
    assert_eq!(scraped.status, 200);
    assert_eq!(
        scraped.content_type.as_deref(),
        Some("text/plain; version=0.0.4; charset=utf-8")
    );
    let families = |text: &str| -> Vec<String> {
        text.lines()
            .filter(|l| l.starts_with("# TYPE "))
            .map(str::to_owned)
            .collect()
    };
    assert_eq!(families(&scraped.body), families(&metrics));
    assert!(scraped.body.lines().any(|l| l == up), "{}", scraped.body);

    let over_tcp = admin_request(address, "GET", "/v1/status", None);
    assert_eq!(over_tcp.status, 200, "{}", over_tcp.body);
    let over_tcp: Status = serde_json::from_str(&over_tcp.body).unwrap();
    assert_eq!(over_tcp.admin_url.as_deref(), Some(admin.as_str()));
    assert_eq!(admin_request(address, "GET", "/healthz", None).status, 200);
    for (method, path) in [
        ("POST", "/v1/shutdown"),
        ("POST", "/v1/check"),
        ("GET", "/v1/events"),
        ("GET", "/v1/servers/search/logs"),
        // The deployed specs stay on the unix socket.
        ("GET", "/v1/deployed"),
    ] {
        let answer = admin_request(address, method, path, None);
        assert!(
            matches!(answer.status, 404 | 405),
            "{method} {path} answered {}",
            answer.status
        );
    }
    // DNS rebinding: a page whose name resolves to 127.0.0.1 is not a loopback host.
    let rebound = admin_request(address, "GET", "/v1/status", Some("attacker.example"));
    assert_eq!(rebound.status, 403);
    let status = fleet.status();
    assert_eq!(server(&status, "search").state, ServerState::Ready);
    assert!(status.deployment.state.is_final());
    let out = fleet.mcpfleet(&["down"]);
    assert!(out.status.success(), "{}", text(&out));
    let out = fleet.mcpfleet(&["metrics"]);
    assert_eq!(out.status.code(), Some(3), "{}", text(&out));
}

struct Answer {
    status: u16,
    content_type: Option<String>,
    /// Every header line, as `name: value`.
    head: String,
    body: String,
}

impl Answer {
    /// The value of header `name` (any case), if the answer has it.
    fn header(&self, name: &str) -> Option<&str> {
        self.head.lines().find_map(|l| {
            let (key, value) = l.split_once(':')?;
            key.eq_ignore_ascii_case(name).then(|| value.trim())
        })
    }
}

/// One plain HTTP/1.1 request on its own connection (`Connection: close`), read to the end.
fn admin_request(address: &str, method: &str, path: &str, host: Option<&str>) -> Answer {
    use std::io::{Read as _, Write as _};
    let mut stream = std::net::TcpStream::connect(address).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let host = host.unwrap_or(address);
    write!(
        stream,
        "{method} {path} HTTP/1.1\r\nHost: {host}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut raw = String::new();
    stream.read_to_string(&mut raw).unwrap();
    let (head, body) = raw.split_once("\r\n\r\n").unwrap_or((&raw, ""));
    let status = head
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("no status in {head}"));
    let mut answer = Answer {
        status,
        content_type: None,
        head: head.to_owned(),
        body: body.to_owned(),
    };
    answer.content_type = answer.header("content-type").map(str::to_owned);
    answer
}

/// An MCP check of `endpoint` as a legacy client, calling `echo` with `message`, passes.
fn assert_echo_answers(endpoint: &str, message: &str) {
    fleet_tls::install_default_provider();
    let check = echo_check(message);
    let report = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
        .block_on(fleet_mcp::probe_http(
            endpoint,
            &[],
            fleet_spec::model::Era::Legacy,
            &check,
        ));
    assert!(report.passed(), "{report}");
}

/// [`default_check`] with a smoke call of `echo` that must answer `message`.
fn echo_check(message: &str) -> fleet_spec::model::McpCheck {
    fleet_spec::model::McpCheck {
        call: Some(fleet_spec::model::SmokeCall {
            tool: "echo".into(),
            arguments: serde_json::json!({ "message": message }),
            expect_contains: Some(message.into()),
            expect_error: false,
        }),
        ..default_check()
    }
}

fn default_check() -> fleet_spec::model::McpCheck {
    fleet_spec::model::McpCheck {
        cadence: fleet_spec::model::Cadence {
            interval: Duration::from_secs(10),
            timeout: Duration::from_secs(5),
            failure_threshold: 3,
            success_threshold: 1,
        },
        expect_tools: vec!["echo".into()],
        call: None,
        max_latency: None,
    }
}

#[test]
fn tokens_guard_the_gateway_and_client_configs_point_at_it() {
    let fleet = Fleet::new(
        "tokens",
        r#"
version: 1
name: tokens
servers:
  search:
    http: { command: SAMPLE, args: ["--transport", "http", "--port", "{{ port }}"] }
  other:
    http: { command: SAMPLE, args: ["--transport", "http", "--port", "{{ port }}"] }
"#,
    );
    let create = |args: &[&str]| {
        let out = Command::new(env!("CARGO_BIN_EXE_mcpfleet"))
            .args(args)
            .current_dir(&fleet.dir)
            .output()
            .unwrap();
        assert!(out.status.success(), "{}", text(&out));
        serde_json::from_slice::<serde_json::Value>(&out.stdout).unwrap()
    };
    let token = create(&[
        "token",
        "create",
        "ci",
        "--servers",
        "search",
        "--output",
        "json",
    ]);
    let secret = token["token"].as_str().unwrap().to_string();
    assert_eq!(secret.len(), 5 + 43, "mcpf_ + 256 bits in base64url");
    let out = Command::new(env!("CARGO_BIN_EXE_mcpfleet"))
        .args(["token", "create", "x", "--servers", "serch"])
        .current_dir(&fleet.dir)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));

    // Only the hash goes into the file.
    let path = fleet.dir.join("mcpfleet.yaml");
    let yaml = std::fs::read_to_string(&path).unwrap().replace(
        "gateway:\n  listen: 127.0.0.1:0\n",
        &format!("gateway:\n  listen: 127.0.0.1:0\n  auth:\n    tokens:\n      - {{ name: ci, sha256: \"{}\", servers: [search] }}\n", token["sha256"].as_str().unwrap()),
    );
    std::fs::write(&path, yaml).unwrap();
    let out = fleet.up();
    assert!(out.status.success(), "{}", text(&out));
    let status = fleet.status();
    let search = server(&status, "search").endpoint.clone().unwrap();
    let other = server(&status, "other").endpoint.clone().unwrap();

    let probe = |url: &str, token: Option<&str>| {
        let headers: Vec<(String, String)> = token
            .map(|t| vec![("Authorization".to_string(), format!("Bearer {t}"))])
            .unwrap_or_default();
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap()
            .block_on(fleet_mcp::probe_http(
                url,
                &headers,
                fleet_spec::model::Era::Legacy,
                &default_check(),
            ))
    };
    assert!(probe(&search, Some(&secret)).passed());
    let without = probe(&search, None);
    assert!(
        !without.passed() && without.to_string().contains("Auth required"),
        "{without}"
    );
    let scoped = probe(&other, Some(&secret));
    assert!(
        !scoped.passed() && scoped.to_string().contains("403"),
        "{scoped}"
    );
    assert!(!without.to_string().contains(&secret) && !scoped.to_string().contains(&secret));

    // Rotation without a restart: deploy the file with a new token in place of the old.
    let rotated = create(&["token", "create", "ci2", "--output", "json"]);
    let yaml = std::fs::read_to_string(&path).unwrap().replace(
        &format!(
            "{{ name: ci, sha256: \"{}\", servers: [search] }}",
            token["sha256"].as_str().unwrap()
        ),
        &format!(
            "{{ name: ci2, sha256: \"{}\", servers: [\"*\"] }}",
            rotated["sha256"].as_str().unwrap()
        ),
    );
    std::fs::write(&path, yaml).unwrap();
    let deployed = fleet.mcpfleet(&["deploy"]);
    assert!(deployed.status.success(), "{}", text(&deployed));
    assert_eq!(fleet.status().pid, status.pid, "no restart");
    let old = probe(&search, Some(&secret));
    assert!(
        !old.passed() && old.to_string().contains("Auth required"),
        "{old}"
    );
    assert!(probe(&other, Some(rotated["token"].as_str().unwrap())).passed());

    // A client configuration that points at the gateway, imported back, names the same URLs.
    let out = fleet.mcpfleet(&["client-config", "vscode"]);
    assert!(out.status.success(), "{}", text(&out));
    let config: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(config["servers"]["search"]["url"], search.as_str());
    assert_eq!(
        config["servers"]["search"]["headers"]["Authorization"],
        "Bearer ${input:mcpfleet-token}"
    );
    assert!(!String::from_utf8_lossy(&out.stdout).contains(&secret));
}

#[test]
fn sigterm_during_a_deployment_stops_what_it_started() {
    let fleet = Fleet::new(
        "interrupted",
        r#"
version: 1
name: interrupted
servers:
  fast:
    stdio: { command: SAMPLE, args: ["--name", "interrupted-fast-marker"] }
  slow:
    stdio: { command: SAMPLE, args: ["--startup-delay", "20s", "--name", "interrupted-slow-marker"] }
    health: { mcp: { handshake_timeout: 30s, interval: 40s } }
"#,
    );
    let child = fleet.up_in_foreground();
    wait_until_blocking("slow starts", Duration::from_secs(20), || {
        !processes_with("interrupted-slow-marker").is_empty()
    });
    Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(
        processes_with("interrupted-slow-marker").is_empty(),
        "slow survived: {}",
        text(&out)
    );
    assert!(
        processes_with("interrupted-fast-marker").is_empty(),
        "fast survived: {}",
        text(&out)
    );
}

#[test]
fn on_failure_continue_and_condition_started_and_restart_never() {
    let fleet = Fleet::new(
        "policies",
        r#"
version: 1
name: policies
servers:
  bad:
    stdio: { command: SAMPLE, args: ["--never-answer"] }
    on_failure: continue
    health: { mcp: { handshake_timeout: 1s } }
  slow:
    stdio: { command: SAMPLE, args: ["--startup-delay", "1500ms"] }
  early:
    stdio: { command: SAMPLE }
    depends_on: { slow: { condition: started } }
  once:
    stdio: { command: SAMPLE, args: ["--exit-after", "1s"] }
    restart: { policy: never }
"#,
    );
    let out = fleet.up();
    assert_eq!(
        out.status.code(),
        Some(1),
        "a failed server fails the deployment: {}",
        text(&out)
    );
    let status = fleet.status();
    assert_eq!(server(&status, "bad").state, ServerState::Failed);
    for name in ["slow", "early"] {
        assert_eq!(
            server(&status, name).state,
            ServerState::Ready,
            "`continue` lets the others go on: {status:#?}"
        );
    }
    // `condition: started` does not wait for readiness.
    let events = events(&fleet);
    let at = |kind: EventKind, name: &str| {
        events
            .iter()
            .position(|e| e.kind == kind && e.server.as_deref() == Some(name))
            .unwrap()
    };
    assert!(at(EventKind::ServerStarting, "early") < at(EventKind::ServerReady, "slow"));
    // `restart: never`: once it exits it stays down, and says so — not "restarting".
    let done = fleet.wait_for("once exits", Duration::from_secs(20), |s| {
        server(s, "once").state != ServerState::Ready
    });
    let once = server(&done, "once");
    assert_eq!(once.state, ServerState::Failed, "{once:#?}");
    assert!(
        once.reason.as_deref().unwrap_or("").contains("exited"),
        "{once:#?}"
    );
}

#[test]
fn a_secret_in_a_remote_url_never_reaches_output_events_or_the_state_dir() {
    const SECRET: &str = "supersecretvalue-4f1c";
    let yaml = |timeout: &str| {
        r#"
version: 1
name: secret-url
secrets:
  token: { env: MCPFLEET_TEST_REMOTE_TOKEN }
servers:
  docs:
    remote: { url: "http://127.0.0.1:1/mcp?token={{ secret('token') }}" }
    health: { mcp: { handshake_timeout: TIMEOUT } }
    on_failure: continue
"#
        .replace("TIMEOUT", timeout)
    };
    let fleet = Fleet::new("secret-url", &yaml("1s"));
    let run = |args: &[&str]| {
        Command::new(env!("CARGO_BIN_EXE_mcpfleet"))
            .args(args)
            .arg("--state-dir")
            .arg(fleet.state_dir())
            .current_dir(&fleet.dir)
            .env("MCPFLEET_TEST_REMOTE_TOKEN", SECRET)
            .output()
            .unwrap()
    };
    let out = run(&["up", "-d"]);
    let shown = text(&out);
    assert_eq!(out.status.code(), Some(1), "{shown}");
    assert!(
        shown.contains("docs") && shown.contains("token=***"),
        "{shown}"
    );
    assert!(!shown.contains(SECRET), "{shown}");
    // `on_failure: continue` keeps the control plane: a changed spec with the same secret
    // is deployed (and fails the same way), then the state is exported.
    let file = fleet.dir.join("mcpfleet.yaml");
    let changed = std::fs::read_to_string(&file)
        .unwrap()
        .replace("handshake_timeout: 1s", "handshake_timeout: 2s");
    std::fs::write(&file, changed).unwrap();
    let out = run(&["deploy"]);
    let shown = text(&out);
    assert_eq!(out.status.code(), Some(1), "{shown}");
    assert!(!shown.contains(SECRET), "{shown}");
    let out = run(&["history", "--output", "json"]);
    assert!(out.status.success(), "{}", text(&out));
    let history: Vec<serde_json::Value> = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(history.len(), 2, "{history:#?}");
    let export = fleet.dir.join("export.json");
    let out = run(&["export-state", export.to_str().unwrap()]);
    assert!(out.status.success(), "{}", text(&out));
    assert!(!text(&out).contains(SECRET));
    let exported = std::fs::read_to_string(&export).unwrap();
    assert!(exported.contains("token=***"), "{exported}");
    assert!(!exported.contains(SECRET), "the export holds the secret");
    let mut dirs = vec![fleet.state_dir()];
    while let Some(dir) = dirs.pop() {
        for entry in std::fs::read_dir(dir).unwrap().flatten() {
            let path = entry.path();
            if path.is_dir() {
                dirs.push(path);
            } else if path.is_file() {
                let content = String::from_utf8_lossy(&std::fs::read(&path).unwrap()).into_owned();
                assert!(
                    !content.contains(SECRET),
                    "{} holds the secret",
                    path.display()
                );
            }
        }
    }
}

/// A raw legacy MCP client over the gateway: initialize, then tool calls.
struct RawSession {
    http: reqwest::Client,
    url: String,
    id: String,
}

impl RawSession {
    /// A new session; `Err(status)` when the gateway refuses it (or ends it at once).
    async fn open(url: &str) -> Result<Self, u16> {
        let http = http_client();
        let body = r#"{"jsonrpc":"2.0","id":1,"method":"initialize","params":{"protocolVersion":"2025-11-25","capabilities":{},"clientInfo":{"name":"up-test","version":"0"}}}"#;
        let response = post(&http, url, None, body).await;
        if response.status() != 200 {
            return Err(response.status().as_u16());
        }
        let id = response.headers()["mcp-session-id"]
            .to_str()
            .unwrap()
            .to_owned();
        response.text().await.unwrap();
        let session = RawSession {
            http,
            url: url.to_owned(),
            id,
        };
        let initialized = r#"{"jsonrpc":"2.0","method":"notifications/initialized"}"#;
        let response = post(&session.http, url, Some(&session.id), initialized).await;
        // A session can end between the two (a canary aborted under load ends its
        // sessions): the client sees 404, as a real one would.
        if response.status() != 202 {
            return Err(response.status().as_u16());
        }
        Ok(session)
    }

    /// The text of `tool`'s result.
    async fn call(&self, id: u64, tool: &str, arguments: serde_json::Value) -> String {
        let body = serde_json::json!({
            "jsonrpc": "2.0", "id": id, "method": "tools/call",
            "params": { "name": tool, "arguments": arguments }
        })
        .to_string();
        let response = post(&self.http, &self.url, Some(&self.id), &body).await;
        assert_eq!(response.status(), 200);
        let text = response.text().await.unwrap();
        // SSE: the response is the last `data:` line.
        let data = text
            .lines()
            .filter_map(|l| l.strip_prefix("data: "))
            .next_back()
            .unwrap_or(&text);
        let message: serde_json::Value = serde_json::from_str(data).unwrap();
        assert_eq!(message["id"], id, "{message}");
        message["result"]["content"][0]["text"]
            .as_str()
            .unwrap_or_else(|| panic!("{}: no text in {message}", self.url))
            .to_owned()
    }

    /// The HTTP status of calling `tool` without arguments.
    async fn try_call(&self, id: u64, tool: &str) -> u16 {
        let body = serde_json::json!({
            "jsonrpc": "2.0", "id": id, "method": "tools/call",
            "params": { "name": tool, "arguments": {} }
        })
        .to_string();
        let response = post(&self.http, &self.url, Some(&self.id), &body).await;
        response.status().as_u16()
    }

    async fn close(self) {
        let response = self
            .http
            .delete(&self.url)
            .header("mcp-session-id", &self.id)
            .send()
            .await
            .unwrap();
        assert!(response.status().is_success());
    }
}

/// The log file in `logs` of the process with `pid` (its `--- started pid N` line).
fn log_of(logs: &Path, pid: u32) -> Option<PathBuf> {
    let marker = format!("--- started pid {pid} ");
    std::fs::read_dir(logs)
        .unwrap()
        .filter_map(|entry| Some(entry.ok()?.path()))
        .find(|path| std::fs::read_to_string(path).is_ok_and(|text| text.contains(&marker)))
}

/// A reqwest client. This process has no `main` of mcpfleet's to install the rustls
/// provider reqwest needs, so this does.
fn http_client() -> reqwest::Client {
    fleet_tls::install_default_provider();
    reqwest::Client::new()
}

async fn post(
    http: &reqwest::Client,
    url: &str,
    session: Option<&str>,
    body: &str,
) -> reqwest::Response {
    let mut request = http
        .post(url)
        .header("accept", "application/json, text/event-stream")
        .header("content-type", "application/json")
        .body(body.to_owned());
    if let Some(session) = session {
        request = request.header("mcp-session-id", session);
    }
    request.send().await.unwrap()
}

#[test]
fn stdio_servers_are_reachable_through_the_gateway_per_session_and_shared() {
    let marker = format!("stdio-gw-{}", std::process::id());
    let fleet = Fleet::new(
        "stdio-gateway",
        &r#"
version: 1
name: stdio-gateway
servers:
  solo:
    stdio:
      command: SAMPLE
      args: ["--transport", "stdio", "--tools", "echo,whoami", "--name", "solo-MARKER"]
      warm: 1
      max_sessions: 2
  common:
    stdio:
      command: SAMPLE
      args: ["--transport", "stdio", "--tools", "echo,whoami", "--name", "common-MARKER"]
      isolation: shared
"#
        .replace("MARKER", &marker),
    );
    let out = fleet.up();
    assert!(out.status.success(), "{}", text(&out));
    let status = fleet.status();
    let solo_url = server(&status, "solo").endpoint.clone().unwrap();
    let common_url = server(&status, "common").endpoint.clone().unwrap();
    let common_pid = server(&status, "common").instances[0].pid.unwrap();
    let solo_probe = server(&status, "solo").instances[0].pid.unwrap();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        // Per-session: a process of its own for each session, never the probed one.
        let a = RawSession::open(&solo_url).await.unwrap();
        let b = RawSession::open(&solo_url).await.unwrap();
        let pid_a = a.call(2, "whoami", serde_json::json!({})).await;
        let pid_b = b.call(2, "whoami", serde_json::json!({})).await;
        assert_ne!(pid_a, pid_b);
        assert_ne!(pid_a, format!("pid {solo_probe}"));
        assert_eq!(
            a.call(3, "echo", serde_json::json!({"message": "a"})).await,
            "a"
        );
        // max_sessions: 2 → a third session ends the least recently used idle one (b's:
        // a made the last call); its process stops and its log goes with it.
        let b_pid: u32 = pid_b.trim_start_matches("pid ").parse().unwrap();
        let logs = fleet.state_dir().join("logs");
        assert!(log_of(&logs, b_pid).is_some(), "b's process has a log");
        let c = RawSession::open(&solo_url).await.unwrap();
        let pid_c = c.call(2, "whoami", serde_json::json!({})).await;
        assert!(![&pid_a, &pid_b].contains(&&pid_c), "{pid_c}");
        assert_eq!(b.try_call(4, "echo").await, 404, "b's session was ended");
        wait_until_gone(b_pid).await;
        wait_until(
            "b's process's log is removed",
            Duration::from_secs(10),
            async || match log_of(&logs, b_pid) {
                Some(log) => Err(log),
                None => Ok(()),
            },
        )
        .await;
        assert_eq!(
            a.call(5, "echo", serde_json::json!({"message": "a"})).await,
            "a"
        );
        // DELETE gives a process back at once.
        let a_pid: u32 = pid_a.trim_start_matches("pid ").parse().unwrap();
        a.close().await;
        wait_until_gone(a_pid).await;

        // Shared: every session on the one checked instance, ids rewritten.
        let x = RawSession::open(&common_url).await.unwrap();
        let y = RawSession::open(&common_url).await.unwrap();
        let expected = format!("pid {common_pid}");
        assert_eq!(x.call(2, "whoami", serde_json::json!({})).await, expected);
        assert_eq!(y.call(2, "whoami", serde_json::json!({})).await, expected);
        let (p, q) = tokio::join!(
            x.call(7, "echo", serde_json::json!({"message": "from x"})),
            y.call(7, "echo", serde_json::json!({"message": "from y"}))
        );
        assert_eq!((p.as_str(), q.as_str()), ("from x", "from y"));
    });
    // Every tool call is in the store's audit, arguments left out.
    let records = wait_until_blocking(
        "the audit holds every call",
        Duration::from_secs(10),
        || {
            let out = fleet.mcpfleet(&["audit", "--output", "json"]);
            assert!(out.status.success(), "{}", text(&out));
            let records: Vec<serde_json::Value> = serde_json::from_slice(&out.stdout).unwrap();
            if records.len() >= 8 {
                Ok(records)
            } else {
                Err(records)
            }
        },
    );
    assert!(records.iter().any(|r| r["server"] == "common"
        && r["tool"] == "echo"
        && r["outcome"] == "ok"
        && r["revision"] == 1));
    let ids: Vec<u64> = records.iter().map(|r| r["id"].as_u64().unwrap()).collect();
    assert_eq!(ids, (1..=records.len() as u64).collect::<Vec<_>>());
    let shown = fleet.mcpfleet(&["audit"]);
    assert!(
        String::from_utf8_lossy(&shown.stdout).contains(" whoami "),
        "{}",
        text(&shown)
    );
    let db = fleet.state_dir().join("state.db");
    for file in [db.clone(), fleet.state_dir().join("state.db-wal")] {
        let bytes = std::fs::read(&file).unwrap_or_default();
        assert!(
            !String::from_utf8_lossy(&bytes).contains("from x"),
            "{} holds a tool call's arguments",
            file.display()
        );
    }
    use std::os::unix::fs::PermissionsExt as _;
    let mode = std::fs::metadata(&db).unwrap().permissions().mode();
    assert_eq!(mode & 0o077, 0, "the state store is readable by others");
    assert!(!processes_with(&marker).is_empty());
    let out = fleet.mcpfleet(&["down"]);
    assert!(out.status.success(), "{}", text(&out));
    let left = processes_with(&marker);
    assert!(left.is_empty(), "left running: {left:?}");
}

async fn wait_until_gone(pid: u32) {
    wait_until(
        &format!("pid {pid} is gone"),
        Duration::from_secs(10),
        async || !alive(pid),
    )
    .await;
}

#[test]
fn gateway_limits_from_the_fleet_file_apply() {
    let fleet = Fleet::new(
        "limits",
        r#"
version: 1
name: limits
gateway:
  listen: 127.0.0.1:0
  rate_limit: { per_second: 0.5, burst: 1 }
servers:
  search:
    http: { command: SAMPLE, args: ["--transport", "http", "--port", "{{ port }}"] }
"#,
    );
    let out = fleet.up();
    assert!(out.status.success(), "{}", text(&out));
    let endpoint = server(&fleet.status(), "search").endpoint.clone().unwrap();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        let http = http_client();
        let ping = r#"{"jsonrpc":"2.0","id":1,"method":"initialize","params":{"protocolVersion":"2025-11-25","capabilities":{},"clientInfo":{"name":"t","version":"0"}}}"#;
        assert_eq!(post(&http, &endpoint, None, ping).await.status(), 200);
        // The one request of the burst is spent: the next waits two seconds.
        let refused = post(&http, &endpoint, None, ping).await;
        assert_eq!(refused.status(), 429);
        assert_eq!(refused.headers()["retry-after"], "2");
    });
}
