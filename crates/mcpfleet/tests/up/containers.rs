//! Fleets whose servers run in containers, live on Podman (its Docker-compatible service,
//! started by `fleet_testkit::podman`; the tests fail, not skip, without Podman).

use super::{
    EventKind, Fleet, RawSession, ServerState, Status, events, http_client, post, server, text,
    wait_until_blocking,
};
use fleet_testkit::podman::{self, LabelledContainers};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

/// A process, a containerized http server and two containerized stdio servers (one
/// container per session, and one shared), in three waves.
fn mixed_fleet(name: &str, image: &str) -> String {
    format!(
        r#"
version: 1
name: {name}
servers:
  local:
    stdio: {{ command: SAMPLE, args: ["--name", "local"] }}
  web:
    http:
      image: {image}
      args: ["--transport", "http", "--host", "0.0.0.0", "--port", "8080", "--name", "web"]
      port: 8080
    depends_on: [local]
  solo:
    stdio:
      image: {image}
      args: ["--name", "solo"]
      warm: 1
      max_sessions: 2
    depends_on: [web]
  common:
    stdio:
      image: {image}
      args: ["--name", "common"]
      isolation: shared
    depends_on: [web]
"#
    )
}

/// `tools/call echo` by the official MCP inspector's CLI (a peer: `cargo xtask peers`) at
/// the gateway URL `url`; the tool's text.
fn inspector_echo(url: &str, message: &str) -> String {
    let peers = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../target/peers/bin");
    assert!(
        peers.join("inspector").exists(),
        "the MCP inspector is not installed: run `cargo xtask peers` (CI does)"
    );
    let out = std::process::Command::new(peers.join("node"))
        .arg(peers.join("inspector"))
        .args([
            "--cli",
            url,
            "--transport",
            "http",
            "--method",
            "tools/call",
        ])
        .args(["--tool-name", "echo", "--tool-arg"])
        .arg(format!("message={message}"))
        .stdin(std::process::Stdio::null())
        .output()
        .unwrap();
    assert!(out.status.success(), "inspector: {}", text(&out));
    let result: serde_json::Value = serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("inspector output is not JSON ({e}): {}", text(&out)));
    assert_ne!(result["isError"], true, "{result}");
    result["content"][0]["text"]
        .as_str()
        .unwrap_or_else(|| panic!("no text in {result}"))
        .to_owned()
}

fn inspect(container: &str, format: &str) -> String {
    let out = podman::podman()
        .args(["inspect", "--format", format, container])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_owned()
}

#[test]
fn a_fleet_of_a_process_and_containers_comes_up_in_waves_and_answers_through_the_gateway() {
    let name = format!("ctr-mixed-{}", std::process::id());
    // The fleet's containers, by the label the runtime puts on them; whatever a failed run
    // leaves goes when this drops.
    let containers = LabelledContainers::new(format!("io.mcpfleet.fleet={name}"));
    let image = podman::sample_image("up-mixed");
    let fleet = Fleet::new("ctr-mixed", &mixed_fleet(&name, &image))
        .with_env("DOCKER_HOST", &podman::docker_host());
    let out = fleet.up();
    assert!(out.status.success(), "{}", text(&out));

    let status = fleet.status();
    for s in &status.servers {
        assert_eq!(s.state, ServerState::Ready, "{s:#?}");
    }
    let events = events(&fleet);
    let at = |kind: EventKind, name: &str| {
        events
            .iter()
            .position(|e| e.kind == kind && e.server.as_deref() == Some(name))
            .unwrap_or_else(|| panic!("no {kind:?} for {name}"))
    };
    assert!(at(EventKind::ServerReady, "local") < at(EventKind::ServerStarting, "web"));
    assert!(at(EventKind::ServerReady, "web") < at(EventKind::ServerStarting, "solo"));
    assert!(at(EventKind::ServerReady, "web") < at(EventKind::ServerStarting, "common"));

    // web, solo's probe and warm one, common: four containers, all running. (The warm one
    // starts once solo is ready: `up` may return before it exists.)
    wait_until_blocking("four containers run", Duration::from_secs(30), || {
        let running = containers.ids();
        if running.len() == 4 {
            Ok(())
        } else {
            Err(running)
        }
    });
    // Published on loopback only; confined. (Containers are named after the instance.)
    let web = format!("mcpfleet-{name}-web-r1-1");
    assert_eq!(inspect(&web, "{{.State.Status}}"), "running");
    let bindings = inspect(
        &web,
        "{{range $p, $b := .HostConfig.PortBindings}}{{$p}}{{range $b}} {{.HostIP}}{{end}}{{end}}",
    );
    assert_eq!(bindings, "8080/tcp 127.0.0.1");
    assert_eq!(inspect(&web, "{{.HostConfig.ReadonlyRootfs}}"), "true");
    // Labelled with what started it: the fleet's first deployment.
    assert_eq!(
        inspect(&web, r#"{{index .Config.Labels "io.mcpfleet.deployment"}}"#),
        "1"
    );
    assert_eq!(inspect(&web, "{{.EffectiveCaps}}"), "[]");
    assert_eq!(
        inspect(&web, "{{.HostConfig.SecurityOpt}}"),
        "[no-new-privileges]"
    );

    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        for name in ["local", "web", "solo", "common"] {
            let url = server(&status, name).endpoint.clone().unwrap();
            let session = RawSession::open(&url).await.unwrap();
            let said = session
                .call(
                    2,
                    "echo",
                    serde_json::json!({ "message": format!("hi {name}") }),
                )
                .await;
            assert_eq!(said, format!("hi {name}"), "{name}");
            session.close().await;
        }
    });
    // The official inspector drives both containerized stdio servers through the gateway.
    for name in ["solo", "common"] {
        let url = server(&status, name).endpoint.clone().unwrap();
        let said = inspector_echo(&url, &format!("inspected {name}"));
        assert_eq!(said, format!("inspected {name}"), "{name}");
    }

    let out = fleet.mcpfleet(&["down"]);
    assert!(out.status.success(), "{}", text(&out));
    let left = containers.ids();
    assert!(left.is_empty(), "containers survived down: {left:?}");
}

/// A container of a fleet as `podman ps --all` shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Container {
    id: String,
    server: String,
    revision: u64,
    /// As `podman ps` shows it: `Up 3 seconds ago`, `Exited (0) …`, `Created`.
    status: String,
}

impl Container {
    fn running(&self) -> bool {
        self.status.starts_with("Up")
    }
}

/// Every container labelled as fleet `fleet`'s, running or not.
fn containers_of(fleet: &str) -> Vec<Container> {
    let out = podman::podman()
        .args(["ps", "--all", "--no-trunc", "--filter"])
        .arg(format!("label=io.mcpfleet.fleet={fleet}"))
        .args([
            "--format",
            r#"{{.ID}} {{index .Labels "io.mcpfleet.server"}} {{index .Labels "io.mcpfleet.revision"}} {{.Status}}"#,
        ])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|line| {
            let fields: Vec<&str> = line.splitn(4, ' ').collect();
            let [id, server, revision, status] = fields[..] else {
                panic!("unexpected podman ps line {line:?}");
            };
            Container {
                id: id.to_owned(),
                server: server.to_owned(),
                revision: revision.parse().unwrap(),
                status: status.to_owned(),
            }
        })
        .collect()
}

/// Waits until the fleet's containers are exactly `expected` running ones as `(server,
/// revision)`, counted (no other container, running or exited, left); returns them.
fn wait_for_containers(fleet: &str, expected: &[(&str, u64)]) -> Vec<Container> {
    let mut expected: Vec<(String, u64)> = expected
        .iter()
        .map(|(s, r)| ((*s).to_owned(), *r))
        .collect();
    expected.sort();
    wait_until_blocking(
        &format!("the containers of {fleet} are {expected:?}, all running"),
        Duration::from_secs(30),
        || {
            let found = containers_of(fleet);
            let mut running: Vec<(String, u64)> = found
                .iter()
                .filter(|c| c.running())
                .map(|c| (c.server.clone(), c.revision))
                .collect();
            running.sort();
            if running == expected && found.len() == expected.len() {
                Ok(found)
            } else {
                Err(found)
            }
        },
    )
}

/// Each instance's container in `status` is one of `containers` (by its short id).
fn assert_status_shows(status: &Status, containers: &[Container]) {
    let shown: Vec<&str> = status
        .servers
        .iter()
        .flat_map(|s| s.instances.iter())
        .filter_map(|i| i.container.as_deref())
        .collect();
    assert!(!shown.is_empty(), "{status:#?}");
    for short in shown {
        assert!(
            containers.iter().any(|c| c.id.starts_with(short)),
            "status shows container {short}, podman has {containers:?}"
        );
    }
}

/// The `serverInfo.name` a new session through the gateway at `url` is initialized by.
async fn served_by(url: &str) -> String {
    let http = http_client();
    let body = r#"{"jsonrpc":"2.0","id":1,"method":"initialize","params":{"protocolVersion":"2025-11-25","capabilities":{},"clientInfo":{"name":"up-test","version":"0"}}}"#;
    let response = post(&http, url, None, body).await;
    assert_eq!(response.status(), 200);
    let text = response.text().await.unwrap();
    let data = text
        .lines()
        .filter_map(|l| l.strip_prefix("data: "))
        .next_back()
        .unwrap_or(&text);
    let message: serde_json::Value = serde_json::from_str(data).unwrap();
    message["result"]["serverInfo"]["name"]
        .as_str()
        .unwrap_or_else(|| panic!("no serverInfo in {message}"))
        .to_owned()
}

/// `api`: an http server in a container of `image`, named `name`, with extra `args` and
/// the `rollout` block (indented six spaces).
fn rollout_fleet(fleet: &str, image: &str, name: &str, args: &str, rollout: &str) -> String {
    format!(
        r#"
version: 1
name: {fleet}
servers:
  api:
    http:
      image: {image}
      args: ["--transport", "http", "--host", "0.0.0.0", "--port", "8080", "--tools", "echo,whoami", "--name", "{name}"{args}]
      port: 8080
    rollout:
{rollout}
gateway:
  listen: 127.0.0.1:0
"#
    )
}

#[test]
fn a_canary_between_two_image_tags_that_fails_analysis_is_aborted_and_its_containers_are_gone() {
    let name = format!("ctr-canary-{}", std::process::id());
    let _containers = LabelledContainers::new(format!("io.mcpfleet.fleet={name}"));
    let (a, b) = (
        podman::sample_image("canary-a"),
        podman::sample_image("canary-b"),
    );
    let rollout = r"      strategy: canary
      steps: [{ weight: 50, pause: 1m }]
      analysis: { interval: 1s, max_error_rate: 0.05, min_requests: 10, failure_limit: 2 }";
    let fleet = Fleet::new(
        "ctr-canary",
        &rollout_fleet(&name, &a, "api-a", "", rollout),
    )
    .with_env("DOCKER_HOST", &podman::docker_host());
    let out = fleet.up();
    assert!(out.status.success(), "{}", text(&out));
    let stable = wait_for_containers(&name, &[("api", 1)]);
    let endpoint = server(&fleet.status(), "api").endpoint.clone().unwrap();
    // Revision 2 is the other image, and fails one call in five.
    fleet.rewrite(&rollout_fleet(
        &name,
        &b,
        "api-b",
        r#", "--error-rate", "0.2""#,
        rollout,
    ));

    let runtime = tokio::runtime::Runtime::new().unwrap();
    let (deployed, saw_canary) = runtime.block_on(async {
        let stop = Arc::new(AtomicBool::new(false));
        let calls = Arc::new(AtomicU64::new(0));
        let load = tokio::spawn(super::canary::new_clients(
            endpoint.clone(),
            stop.clone(),
            calls.clone(),
        ));
        let deploy = fleet.deploy_in_background();
        // The canary runs as a container of its own, beside the stable one.
        let name_ = name.clone();
        let saw_canary = tokio::task::spawn_blocking(move || {
            wait_until_blocking(
                "the canary's container runs",
                Duration::from_secs(60),
                || {
                    let found = containers_of(&name_);
                    if found.iter().any(|c| c.revision == 2 && c.running()) {
                        Ok(found)
                    } else {
                        Err(found)
                    }
                },
            )
        })
        .await
        .unwrap();
        let deployed = tokio::task::spawn_blocking(move || deploy.join().unwrap())
            .await
            .unwrap();
        stop.store(true, Ordering::SeqCst);
        load.await.unwrap();
        (deployed, saw_canary)
    });
    assert!(
        saw_canary
            .iter()
            .any(|c| c.revision == 1 && c.id == stable[0].id),
        "{saw_canary:?}"
    );
    assert_eq!(deployed.status.code(), Some(1), "{}", text(&deployed));
    let stderr = String::from_utf8_lossy(&deployed.stderr);
    assert!(stderr.contains("analysis failed"), "says why: {stderr}");

    // The aborted revision's container is removed; the stable one was never touched.
    let after = wait_for_containers(&name, &[("api", 1)]);
    assert_eq!(
        after[0].id, stable[0].id,
        "the stable container was replaced"
    );
    let status = fleet.status();
    let api = server(&status, "api");
    assert_eq!(api.revision, Some(1), "{status:#?}");
    assert!(api.instances.iter().all(|i| i.revision == 1), "{status:#?}");
    assert_status_shows(&status, &after);
    let events = events(&fleet);
    let abort = events
        .iter()
        .find(|e| e.kind == EventKind::RollbackStarted)
        .expect("the abort is an event");
    assert!(abort.message.contains("error rate"), "{abort:?}");
    // New sessions reach revision 1's container.
    runtime.block_on(async {
        assert_eq!(served_by(&endpoint).await, "api-a");
        let session = RawSession::open(&endpoint).await.unwrap();
        let said = session
            .call(2, "echo", serde_json::json!({ "message": "still here" }))
            .await;
        assert_eq!(said, "still here");
    });
}

#[test]
fn blue_green_between_two_image_tags_leaves_only_the_new_revisions_containers() {
    let name = format!("ctr-bluegreen-{}", std::process::id());
    let _containers = LabelledContainers::new(format!("io.mcpfleet.fleet={name}"));
    let (a, b) = (
        podman::sample_image("bluegreen-a"),
        podman::sample_image("bluegreen-b"),
    );
    let rollout = "      strategy: blue-green\n      rollback_window: 2s";
    let fleet = Fleet::new(
        "ctr-bluegreen",
        &rollout_fleet(&name, &a, "api-a", "", rollout),
    )
    .with_env("DOCKER_HOST", &podman::docker_host());
    let out = fleet.up();
    assert!(out.status.success(), "{}", text(&out));
    let blue = wait_for_containers(&name, &[("api", 1)]);
    let endpoint = server(&fleet.status(), "api").endpoint.clone().unwrap();
    let runtime = tokio::runtime::Runtime::new().unwrap();
    assert_eq!(runtime.block_on(served_by(&endpoint)), "api-a");

    fleet.rewrite(&rollout_fleet(&name, &b, "api-b", "", rollout));
    let deployed = fleet.mcpfleet(&["deploy"]);
    assert!(deployed.status.success(), "{}", text(&deployed));
    // New sessions reach green at once; blue drains for its rollback window, then goes.
    assert_eq!(runtime.block_on(served_by(&endpoint)), "api-b");
    let green = wait_for_containers(&name, &[("api", 2)]);
    assert!(green.iter().all(|c| c.id != blue[0].id));
    let image = inspect(&green[0].id, "{{.ImageName}}");
    assert_eq!(image, b, "green runs the new tag");
    let status = fleet.status();
    let api = server(&status, "api");
    assert_eq!(api.revision, Some(2), "{status:#?}");
    assert!(api.instances.iter().all(|i| i.revision == 2), "{status:#?}");
    assert_status_shows(&status, &green);
    runtime.block_on(async {
        let session = RawSession::open(&endpoint).await.unwrap();
        let said = session
            .call(2, "echo", serde_json::json!({ "message": "green" }))
            .await;
        assert_eq!(said, "green");
    });
}

/// `web` (two http containers) and `tool` (one shared stdio container) after it, with
/// extra `web_args` for web.
fn crash_fleet(fleet: &str, image: &str, web_args: &str) -> String {
    format!(
        r#"
version: 1
name: {fleet}
servers:
  web:
    http:
      image: {image}
      args: ["--transport", "http", "--host", "0.0.0.0", "--port", "8080", "--name", "web"{web_args}]
      port: 8080
    replicas: 2
    health: {{ mcp: {{ handshake_timeout: 60s }} }}
  tool:
    stdio: {{ image: {image}, args: ["--name", "tool"], isolation: shared }}
    depends_on: [web]
gateway:
  listen: 127.0.0.1:0
"#
    )
}

/// When each of `containers` started (`State.StartedAt`): an adopted container keeps it.
fn started_at(containers: &[Container]) -> Vec<(String, String)> {
    containers
        .iter()
        .map(|c| (c.id.clone(), inspect(&c.id, "{{.State.StartedAt}}")))
        .collect()
}

/// After `up` following a kill -9 (`before`: the fleet's containers then, `started`: when
/// they started): exactly the fleet's expected containers. web's running revision-1
/// containers are the very ones (adopted: same id, never restarted, events say so); tool's
/// is new (a stdio container's stdin died with the control plane); nothing else of `before`
/// is left; the gateway answers through the adopted ones.
fn assert_recovered(fleet: &Fleet, name: &str, before: &[Container], started: &[(String, String)]) {
    let status = fleet.status();
    assert!(
        status.servers.iter().all(|s| s.state == ServerState::Ready),
        "{status:#?}"
    );
    let now = wait_for_containers(name, &[("web", 1), ("web", 1), ("tool", 1)]);
    let adoptable = |c: &Container| c.server == "web" && c.revision == 1 && c.running();
    assert_eq!(
        before.iter().filter(|c| adoptable(c)).count(),
        2,
        "{before:?}"
    );
    for old in before {
        let kept = now.iter().any(|c| c.id == old.id);
        if adoptable(old) {
            assert!(kept, "{old:?} was replaced, not adopted: {now:?}");
            let (_, then) = started.iter().find(|(id, _)| *id == old.id).unwrap();
            assert_eq!(
                &inspect(&old.id, "{{.State.StartedAt}}"),
                then,
                "{old:?} was restarted"
            );
        } else {
            assert!(!kept, "{old:?} survived the next up: {now:?}");
        }
    }
    assert_status_shows(&status, &now);
    let adopted = events(fleet)
        .iter()
        .filter(|e| e.kind == EventKind::InstanceAdopted)
        .count();
    assert_eq!(adopted, 2);
    let endpoint = server(&status, "web").endpoint.clone().unwrap();
    let runtime = tokio::runtime::Runtime::new().unwrap();
    runtime.block_on(async {
        let session = RawSession::open(&endpoint).await.unwrap();
        let said = session
            .call(2, "echo", serde_json::json!({ "message": "adopted" }))
            .await;
        assert_eq!(said, "adopted");
    });
}

#[test]
fn after_a_kill_9_at_rest_the_next_up_adopts_the_http_containers_and_replaces_the_rest() {
    let name = format!("ctr-crash-rest-{}", std::process::id());
    let _containers = LabelledContainers::new(format!("io.mcpfleet.fleet={name}"));
    let image = podman::sample_image("up-crash");
    let fleet = Fleet::new("ctr-crash-rest", &crash_fleet(&name, &image, ""))
        .with_env("DOCKER_HOST", &podman::docker_host());
    let out = fleet.up();
    assert!(out.status.success(), "{}", text(&out));
    let before = wait_for_containers(&name, &[("web", 1), ("web", 1), ("tool", 1)]);
    let started = started_at(&before);
    let control_plane = fleet.status().pid;

    super::nix_kill9(control_plane);
    let out = fleet.up();
    assert!(out.status.success(), "{}", text(&out));
    assert_ne!(fleet.status().pid, control_plane);
    assert_recovered(&fleet, &name, &before, &started);
}

#[test]
fn after_a_kill_9_during_a_slow_deployment_the_next_up_adopts_the_stable_revision_and_removes_the_new()
 {
    let name = format!("ctr-crash-deploy-{}", std::process::id());
    let _containers = LabelledContainers::new(format!("io.mcpfleet.fleet={name}"));
    let image = podman::sample_image("up-crash");
    let fleet = Fleet::new("ctr-crash-deploy", &crash_fleet(&name, &image, ""))
        .with_env("DOCKER_HOST", &podman::docker_host());
    let out = fleet.up();
    assert!(out.status.success(), "{}", text(&out));
    wait_for_containers(&name, &[("web", 1), ("web", 1), ("tool", 1)]);
    let control_plane = fleet.status().pid;

    // Revision 2 of web takes 30 s to serve: the control plane dies while it starts.
    fleet.rewrite(&crash_fleet(&name, &image, r#", "--startup-delay", "30s""#));
    let deploy = fleet.deploy_in_background();
    let during = wait_until_blocking(
        "a container of web's revision 2 runs",
        Duration::from_secs(60),
        || {
            let found = containers_of(&name);
            if found.iter().any(|c| c.revision == 2 && c.running()) {
                Ok(found)
            } else {
                Err(found)
            }
        },
    );
    let started = started_at(&during);
    super::nix_kill9(control_plane);
    let _ = deploy.join().unwrap();

    // The file still says revision 2: the interrupted deployment is rolled back to 1.
    let out = fleet.up();
    assert!(out.status.success(), "{}", text(&out));
    assert_eq!(
        server(&fleet.status(), "web").revision,
        Some(1),
        "{:#?}",
        fleet.status()
    );
    assert_recovered(&fleet, &name, &during, &started);
}

/// The kernel kills a container over its memory limit, and `status` and the events say
/// "out of memory". Podman 4.3.1 on this machine's cgroup v1 reports `OOMKilled: false` for
/// it (dmesg shows the memory cgroup's OOM kill), so there the reason is the likely one —
/// a SIGKILL mcpfleet did not send, under a memory limit; where the engine reports the OOM
/// kill, it is "out of memory: killed for exceeding its memory limit".
#[test]
fn a_container_that_outgrows_its_memory_limit_is_killed_and_status_and_events_say_so() {
    let name = format!("ctr-oom-{}", std::process::id());
    let _containers = LabelledContainers::new(format!("io.mcpfleet.fleet={name}"));
    let image = podman::sample_image("up-oom");
    let fleet = Fleet::new(
        "ctr-oom",
        &format!(
            r#"
version: 1
name: {name}
servers:
  hog:
    stdio:
      image: {image}
      args: ["--allocate-mib", "128", "--allocate-after", "2s"]
      isolation: shared
    container: {{ resources: {{ memory: 32Mi }} }}
    restart: {{ policy: never }}
"#
        ),
    )
    .with_env("DOCKER_HOST", &podman::docker_host());
    let out = fleet.up();
    assert!(out.status.success(), "{}", text(&out));
    let ready = fleet.status();
    let container = server(&ready, "hog").instances[0]
        .container
        .clone()
        .unwrap();
    assert_eq!(inspect(&container, "{{.HostConfig.Memory}}"), "33554432");

    // Two seconds in, it takes 128 MiB: the kernel kills it.
    let done = fleet.wait_for("hog is killed", Duration::from_secs(30), |s| {
        server(s, "hog").state == ServerState::Failed
    });
    let hog = server(&done, "hog");
    let says_out_of_memory = |text: &str| {
        text.starts_with("exited (exit code 137, out of memory: killed for exceeding its memory limit)")
            || text.starts_with(
                "exited (exit code 137, probably out of memory: killed by SIGKILL under its 32 MiB memory limit",
            )
    };
    let reason = hog.reason.as_deref().unwrap_or_default();
    assert!(says_out_of_memory(reason), "{hog:#?}");
    let events = events(&fleet);
    assert!(
        events.iter().any(|e| e.kind == EventKind::InstanceExited
            && e.server.as_deref() == Some("hog")
            && says_out_of_memory(&e.message)),
        "{events:#?}"
    );
}
