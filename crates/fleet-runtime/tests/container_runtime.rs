//! The container runtime against a real engine: Podman's Docker-compatible service.
//!
//! Every test runs its own fleet (so its containers carry their own `io.mcpfleet.fleet`
//! label) and removes what carries that label when it ends, passing or failing. Podman
//! missing is a failure, not a skip. Every wait is on a condition with a deadline.

use fleet_runtime::{
    ContainerLaunch, ContainerNetwork, ContainerResources, ContainerRuntime, ContainerSecret,
    ContainerSettings, EngineEndpoint, InstanceHandle, InstanceId, InstanceIo, InstanceSpec,
    InstanceState, Launch, Lifecycle, PullPolicy, Reach, ReapOutcome, Runtime, StartError,
    StdioAttachment,
};
use fleet_spec::model::{Restart, RestartPolicyKind};
use fleet_testkit::podman::{self, LabelledContainers};
use fleet_testkit::{TempDir, wait_until};
use std::collections::HashSet;
use std::net::SocketAddr;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::mpsc;

/// Generous: the machine running the tests may be small and busy.
const DEADLINE: Duration = Duration::from_secs(60);

/// What the engine reports about a container (`podman inspect`).
fn inspect(container: &str) -> serde_json::Value {
    let out = podman::podman()
        .args(["inspect", container])
        .output()
        .expect("podman inspect");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let mut all: Vec<serde_json::Value> = serde_json::from_slice(&out.stdout).unwrap();
    all.remove(0)
}

/// One test's fleet: its runtime, its state directory, and the cleanup of its containers.
struct Fleet {
    runtime: ContainerRuntime,
    /// The runtime's state directory, removed with the fleet.
    _dir: TempDir,
    containers: LabelledContainers,
}

impl Fleet {
    async fn new(name: &str) -> Self {
        let name = format!("t{}-{name}", std::process::id());
        let dir = TempDir::new(&name);
        let runtime = connect(&name, &dir).await;
        let containers = LabelledContainers::new(format!("io.mcpfleet.fleet={name}"));
        Fleet {
            runtime,
            _dir: dir,
            containers,
        }
    }
}

async fn connect(fleet: &str, dir: &TempDir) -> ContainerRuntime {
    let endpoint = EngineEndpoint::parse(&podman::docker_host()).unwrap();
    ContainerRuntime::connect_with(
        fleet,
        dir.path().to_owned(),
        vec![endpoint],
        ContainerSettings::default(),
    )
    .await
    .unwrap()
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

fn launch(image: String) -> ContainerLaunch {
    ContainerLaunch {
        image,
        entrypoint: None,
        workdir: None,
        user: None,
        network: ContainerNetwork::None,
        resources: ContainerResources {
            cpus: Some(0.5),
            memory_bytes: Some(128 * 1024 * 1024),
            pids: Some(64),
        },
        volumes: Vec::new(),
        read_only_root: true,
        pull: PullPolicy::Never,
        secrets: Vec::new(),
    }
}

fn spec(id: &str, io: InstanceIo, args: &[&str]) -> InstanceSpec {
    let mut launch = launch(podman::sample_image("1"));
    if matches!(io, InstanceIo::Listen { .. }) {
        launch.network = ContainerNetwork::Bridge;
    }
    InstanceSpec {
        id: InstanceId::from(id),
        server: id.split('-').next().unwrap_or(id).to_owned(),
        revision: 1,
        launch: Launch::Container(launch),
        args: args.iter().map(|&a| a.to_owned()).collect(),
        env: Vec::new(),
        io,
        restart: restart(RestartPolicyKind::Never),
        stop_grace: Duration::from_secs(5),
        deployment: None,
    }
}

fn stdio_spec(id: &str) -> InstanceSpec {
    spec(id, InstanceIo::Stdio, &["--transport", "stdio"])
}

fn http_spec(id: &str) -> InstanceSpec {
    spec(
        id,
        InstanceIo::Listen { port: 8080 },
        &["--transport", "http", "--host", "0.0.0.0", "--port", "8080"],
    )
}

async fn next(events: &mut mpsc::UnboundedReceiver<Lifecycle>) -> Lifecycle {
    tokio::time::timeout(DEADLINE, events.recv())
        .await
        .expect("timed out waiting for a lifecycle event")
        .expect("event channel closed")
}

fn running(event: Lifecycle) -> (Reach, String) {
    match event {
        Lifecycle::Running {
            reach,
            handle: InstanceHandle::Container { id },
        } => (reach, id),
        other => panic!("expected Running with a container, got {other:?}"),
    }
}

const INITIALIZE: &str = r#"{"jsonrpc":"2.0","id":1,"method":"initialize","params":{"protocolVersion":"2025-06-18","capabilities":{},"clientInfo":{"name":"test","version":"1"}}}"#;

/// POSTs `initialize` to `http://address/mcp` and returns the whole response.
async fn initialize_http(address: SocketAddr) -> String {
    let mut stream = tokio::net::TcpStream::connect(address).await.unwrap();
    let request = format!(
        "POST /mcp HTTP/1.1\r\nHost: {address}\r\nContent-Type: application/json\r\n\
         Accept: application/json, text/event-stream\r\nConnection: close\r\n\
         Content-Length: {}\r\n\r\n{INITIALIZE}",
        INITIALIZE.len()
    );
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut response = String::new();
    tokio::time::timeout(DEADLINE, stream.read_to_string(&mut response))
        .await
        .expect("an HTTP answer")
        .unwrap();
    response
}

#[tokio::test]
async fn a_stdio_container_answers_initialize_through_its_attachment() {
    let fleet = Fleet::new("stdio").await;
    let mut instance = fleet.runtime.start(stdio_spec("files-r1-1")).await.unwrap();
    let (reach, container) = running(next(&mut instance.events).await);
    let Reach::Stdio(mut attachment) = reach else {
        panic!("a stdio instance is reached over stdio, got {reach:?}");
    };
    let answer = fleet_testkit::initialize_over(&mut attachment, DEADLINE).await;
    assert!(answer.contains(r#""serverInfo""#), "{answer}");
    let status = &fleet.runtime.statuses()[0];
    assert_eq!(status.state, InstanceState::Running);
    assert_eq!(
        status.handle.as_ref().unwrap().to_string(),
        format!("container {}", &container[..12])
    );
    fleet
        .runtime
        .stop(&InstanceId::from("files-r1-1"))
        .await
        .unwrap();
}

#[tokio::test]
async fn closing_stdin_ends_a_stdio_container_and_stop_removes_it() {
    let fleet = Fleet::new("eof").await;
    let id = InstanceId::from("files-r1-1");
    let mut instance = fleet.runtime.start(stdio_spec("files-r1-1")).await.unwrap();
    let (reach, _container) = running(next(&mut instance.events).await);
    let Reach::Stdio(attachment) = reach else {
        panic!("expected a stdio attachment");
    };
    assert_eq!(fleet.containers.ids().len(), 1);
    // Dropping the writer is the caller closing the server's stdin: it exits by itself.
    let StdioAttachment {
        stdin,
        stdout: _stdout,
    } = attachment;
    drop(stdin);
    assert!(matches!(
        next(&mut instance.events).await,
        Lifecycle::Exited { code: Some(0), .. }
    ));
    fleet.runtime.stop(&id).await.unwrap();
    assert!(matches!(
        next(&mut instance.events).await,
        Lifecycle::Stopped
    ));
    assert_eq!(
        fleet.containers.ids(),
        Vec::<String>::new(),
        "stop removes the container"
    );
    assert!(fleet.runtime.statuses().is_empty());
    // Stopping again is a no-op.
    fleet.runtime.stop(&id).await.unwrap();
    let logs: Vec<String> = futures::StreamExt::collect(fleet.runtime.logs(&id, 100, false)).await;
    assert!(
        logs.iter().any(|l| l.starts_with("--- exited code 0")),
        "{logs:?}"
    );
}

#[tokio::test]
async fn stop_closes_a_stdio_containers_stdin_so_it_exits_cleanly() {
    let fleet = Fleet::new("stopeof").await;
    let id = InstanceId::from("files-r1-1");
    let mut spec = stdio_spec("files-r1-1");
    // Long, so a stop that only signalled would show: half of it before SIGTERM.
    spec.stop_grace = Duration::from_secs(30);
    let mut instance = fleet.runtime.start(spec).await.unwrap();
    let (reach, _) = running(next(&mut instance.events).await);
    // The caller still holds the attachment, as the gateway does while it serves.
    let Reach::Stdio(mut attachment) = reach else {
        panic!("expected a stdio attachment");
    };
    assert!(
        fleet_testkit::initialize_over(&mut attachment, DEADLINE)
            .await
            .contains("serverInfo")
    );
    let started = std::time::Instant::now();
    fleet.runtime.stop(&id).await.unwrap();
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "the server exits on EOF, well before the grace period ends: {:?}",
        started.elapsed()
    );
    assert!(matches!(
        next(&mut instance.events).await,
        Lifecycle::Exited { code: Some(0), .. }
    ));
    assert!(matches!(
        next(&mut instance.events).await,
        Lifecycle::Stopped
    ));
    assert_eq!(fleet.containers.ids(), Vec::<String>::new());
}

#[tokio::test]
async fn an_http_container_is_reachable_on_the_reported_loopback_address() {
    let fleet = Fleet::new("http").await;
    let mut instance = fleet.runtime.start(http_spec("web-r1-1")).await.unwrap();
    let (reach, container) = running(next(&mut instance.events).await);
    let Reach::Address(address) = reach else {
        panic!("an http instance is reached at an address, got {reach:?}");
    };
    assert!(address.ip().is_loopback(), "{address}");
    assert_ne!(address.port(), 8080, "the engine picks the host port");
    // The server binds once it has started; poll until it answers.
    let answer = wait_until(
        "the containerized server answers initialize",
        DEADLINE,
        async || {
            let Ok(stream) = tokio::net::TcpStream::connect(address).await else {
                return None;
            };
            drop(stream);
            let response = initialize_http(address).await;
            response.contains("serverInfo").then_some(response)
        },
    )
    .await;
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");

    // The hardening, read back from the engine.
    let inspected = inspect(&container);
    let host = &inspected["HostConfig"];
    assert_eq!(host["ReadonlyRootfs"], true);
    let none = |caps: &serde_json::Value| caps.is_null() || caps == &serde_json::json!([]);
    assert!(
        none(&inspected["EffectiveCaps"]),
        "{}",
        inspected["EffectiveCaps"]
    );
    assert!(
        none(&inspected["BoundingCaps"]),
        "{}",
        inspected["BoundingCaps"]
    );
    assert!(none(&host["CapAdd"]), "{}", host["CapAdd"]);
    assert!(
        host["SecurityOpt"]
            .to_string()
            .contains("no-new-privileges"),
        "{}",
        host["SecurityOpt"]
    );
    let bindings = &inspected["NetworkSettings"]["Ports"]["8080/tcp"];
    let bindings = bindings.as_array().expect("port 8080 is published");
    assert!(!bindings.is_empty());
    for binding in bindings {
        assert_eq!(binding["HostIp"], "127.0.0.1", "loopback only: {binding}");
    }
    assert_eq!(
        inspected["Config"]["User"], "65534:65534",
        "root image → nobody"
    );
    assert!(host["Tmpfs"]["/tmp"].is_string(), "{}", host["Tmpfs"]);
    assert_eq!(host["NanoCpus"], 500_000_000);
    assert_eq!(host["Memory"], 128 * 1024 * 1024);
    assert_eq!(host["PidsLimit"], 64);
    let ulimits = host["Ulimits"].to_string();
    assert!(
        ulimits.contains("RLIMIT_NOFILE") || ulimits.contains("nofile"),
        "the runtime's ulimits: {ulimits}"
    );
    fleet
        .runtime
        .stop(&InstanceId::from("web-r1-1"))
        .await
        .unwrap();
    assert_eq!(fleet.containers.ids(), Vec::<String>::new());
}

#[tokio::test]
async fn on_failure_restarts_a_container_that_exits_with_an_error() {
    let fleet = Fleet::new("restart").await;
    // Serves, then exits with code 3 after 300 ms.
    let mut spec = spec(
        "crashy-r1-1",
        InstanceIo::Logged,
        &[
            "--transport",
            "http",
            "--host",
            "0.0.0.0",
            "--exit-after",
            "300ms",
        ],
    );
    spec.restart = restart(RestartPolicyKind::OnFailure);
    let mut instance = fleet.runtime.start(spec).await.unwrap();
    let (_, first) = running(next(&mut instance.events).await);
    assert!(matches!(
        next(&mut instance.events).await,
        Lifecycle::Exited { code: Some(3), .. }
    ));
    assert!(matches!(
        next(&mut instance.events).await,
        Lifecycle::BackingOff { attempt: 1, .. }
    ));
    let (_, second) = running(next(&mut instance.events).await);
    assert_eq!(first, second, "the same container is started again");
    let status = &fleet.runtime.statuses()[0];
    assert_eq!(status.restarts, 1);
    assert_eq!(status.last_exit.unwrap().code, Some(3));
    assert_eq!(
        status.last_exit.unwrap().out_of_memory,
        fleet_runtime::OutOfMemory::No
    );
    fleet
        .runtime
        .stop(&InstanceId::from("crashy-r1-1"))
        .await
        .unwrap();
    assert_eq!(fleet.containers.ids(), Vec::<String>::new());
}

#[tokio::test]
async fn a_container_that_fails_at_start_says_why_in_its_exit_event() {
    let fleet = Fleet::new("badflag").await;
    let spec = spec("files-r1-1", InstanceIo::Stdio, &["--bogus"]);
    let mut instance = fleet.runtime.start(spec).await.unwrap();
    running(next(&mut instance.events).await);
    let exited = next(&mut instance.events).await;
    let id = InstanceId::from("files-r1-1");
    let log: Vec<String> = futures::StreamExt::collect(fleet.runtime.logs(&id, 100, false)).await;
    match exited {
        Lifecycle::Exited {
            code: Some(2),
            out_of_memory: fleet_runtime::OutOfMemory::No,
            last_output,
            ..
        } => assert!(
            last_output
                .iter()
                .any(|l| l.contains("unexpected argument '--bogus'")),
            "{last_output:?}; the log: {log:#?}"
        ),
        other => panic!("expected an exit with code 2, got {other:?}"),
    }
    fleet.runtime.stop(&id).await.unwrap();
}

#[tokio::test]
async fn an_http_container_that_fails_at_start_says_why() {
    let fleet = Fleet::new("badhttp").await;
    let spec = spec("web-r1-1", InstanceIo::Listen { port: 8080 }, &["--bogus"]);
    // Whether the engine still shows the published port when the runtime looks decides
    // which way it is reported; either way the reason reaches the caller.
    let said = match fleet.runtime.start(spec).await {
        Err(error) => {
            assert!(matches!(error, StartError::ExitedAtStart { .. }), "{error}");
            error.to_string()
        }
        Ok(mut instance) => {
            running(next(&mut instance.events).await);
            let exited = next(&mut instance.events).await;
            fleet
                .runtime
                .stop(&InstanceId::from("web-r1-1"))
                .await
                .unwrap();
            format!("{exited:?}")
        }
    };
    assert!(said.contains("unexpected argument '--bogus'"), "{said}");
}

#[tokio::test]
async fn a_process_spec_is_refused_by_the_container_runtime() {
    let fleet = Fleet::new("wrong").await;
    let mut spec = stdio_spec("files-r1-1");
    spec.launch = Launch::Process {
        program: "/bin/true".into(),
        cwd: None,
    };
    let error = fleet.runtime.start(spec).await.unwrap_err();
    assert!(matches!(error, StartError::WrongRuntime { .. }), "{error}");
    assert!(error.to_string().contains("container"), "{error}");
}

#[tokio::test]
async fn an_unreachable_engine_names_the_socket_it_tried_and_how_to_start_one() {
    let dir = TempDir::new("crt-unreachable");
    let socket = dir.path().join("no-engine.sock");
    let endpoint = EngineEndpoint::parse(&format!("unix://{}", socket.display())).unwrap();
    let error = ContainerRuntime::connect_with(
        "demo",
        dir.path().to_owned(),
        vec![endpoint],
        ContainerSettings::default(),
    )
    .await
    .unwrap_err()
    .to_string();
    assert!(error.contains(&socket.display().to_string()), "{error}");
    assert!(error.contains("podman system service"), "{error}");
    assert!(error.contains("DOCKER_HOST"), "{error}");
}

#[tokio::test]
async fn pull_never_with_a_missing_image_says_to_build_or_pull_it() {
    let fleet = Fleet::new("nopull").await;
    let mut spec = stdio_spec("files-r1-1");
    let Launch::Container(launch) = &mut spec.launch else {
        unreachable!()
    };
    launch.image = "localhost/mcpfleet-no-such-image:1".into();
    let error = fleet.runtime.start(spec).await.unwrap_err();
    assert!(matches!(error, StartError::ImageMissing { .. }), "{error}");
    let message = error.to_string();
    assert!(
        message.contains("localhost/mcpfleet-no-such-image:1")
            && message.contains("`never`")
            && message.contains("podman pull"),
        "{message}"
    );
    assert!(fleet.runtime.statuses().is_empty());
}

/// A start from a pinned image does not inspect it again: when the image has gone since it
/// was pinned, the create's 404 sends the runtime to look for it as `pull` says.
#[tokio::test]
async fn a_pinned_image_removed_before_the_start_is_looked_for_as_pull_says() {
    let fleet = Fleet::new("unpinned").await;
    let image = podman::sample_image("removed-after-pin");
    let pinned = fleet
        .runtime
        .resolve_image(&image, PullPolicy::Never)
        .await
        .unwrap();
    let removed = podman::podman()
        .args(["rmi", "--force", &image])
        .output()
        .unwrap();
    assert!(
        removed.status.success(),
        "{}",
        String::from_utf8_lossy(&removed.stderr)
    );
    let mut spec = stdio_spec("files-r1-1");
    let Launch::Container(launch) = &mut spec.launch else {
        unreachable!()
    };
    launch.image = pinned.clone();
    let error = fleet.runtime.start(spec).await.unwrap_err();
    assert!(matches!(error, StartError::ImageMissing { .. }), "{error}");
    assert!(error.to_string().contains(&pinned), "{error}");
    assert!(fleet.runtime.statuses().is_empty());
}

#[tokio::test]
async fn a_name_taken_by_a_foreign_container_is_refused_and_left_alone() {
    let fleet = Fleet::new("taken").await;
    let id = InstanceId::from("files-r1-1");
    let name = fleet.runtime.container_name(&id);
    let foreign = LabelledContainers::unique("foreign");
    let created = podman::podman()
        .args(["create", "--name", &name, "--label", foreign.label()])
        .arg(podman::sample_image("1"))
        .output()
        .unwrap();
    assert!(
        created.status.success(),
        "{}",
        String::from_utf8_lossy(&created.stderr)
    );
    let error = fleet
        .runtime
        .start(stdio_spec("files-r1-1"))
        .await
        .unwrap_err();
    assert!(matches!(error, StartError::NameTaken { .. }), "{error}");
    assert!(error.to_string().contains(&name), "{error}");
    assert_eq!(foreign.ids().len(), 1, "the foreign container is untouched");
}

#[tokio::test]
async fn an_explicit_restart_starts_the_same_container_again_and_logs_can_be_discarded() {
    let fleet = Fleet::new("restart-now").await;
    let id = InstanceId::from("web-r1-1");
    let mut instance = fleet.runtime.start(http_spec("web-r1-1")).await.unwrap();
    let (_, first) = running(next(&mut instance.events).await);
    fleet.runtime.restart(&id).await.unwrap();
    assert!(matches!(
        next(&mut instance.events).await,
        Lifecycle::Exited { .. }
    ));
    assert!(matches!(
        next(&mut instance.events).await,
        Lifecycle::BackingOff { attempt: 1, .. }
    ));
    let (reach, second) = running(next(&mut instance.events).await);
    assert_eq!(first, second);
    assert!(matches!(reach, Reach::Address(_)), "{reach:?}");
    assert_eq!(fleet.runtime.statuses()[0].restarts, 1);
    fleet.runtime.stop(&id).await.unwrap();
    assert!(matches!(
        fleet.runtime.restart(&id).await,
        Err(fleet_runtime::RuntimeError::NotFound { .. })
    ));

    let log = fleet_runtime::process::log_path(fleet.runtime.state_dir(), &id);
    assert!(log.exists());
    fleet.runtime.discard_logs(&id).await;
    assert!(!log.exists());
}

#[tokio::test]
async fn a_leftover_container_of_the_same_fleet_gives_way_to_a_new_start() {
    let fleet = Fleet::new("leftover").await;
    let id = InstanceId::from("files-r1-1");
    let name = fleet.runtime.container_name(&id);
    // What a killed control plane of this fleet left under the instance's name.
    let fleet_label = fleet.containers.label().to_owned();
    let created = podman::podman()
        .args(["create", "--name", &name, "--label", &fleet_label])
        .arg(podman::sample_image("1"))
        .output()
        .unwrap();
    assert!(
        created.status.success(),
        "{}",
        String::from_utf8_lossy(&created.stderr)
    );
    let leftover = String::from_utf8_lossy(&created.stdout).trim().to_owned();
    let mut instance = fleet.runtime.start(stdio_spec("files-r1-1")).await.unwrap();
    let (_, container) = running(next(&mut instance.events).await);
    assert_ne!(container, leftover);
    assert_eq!(fleet.containers.ids(), [container]);
    fleet.runtime.stop(&id).await.unwrap();
}

#[tokio::test]
async fn dropping_the_runtime_stops_and_removes_its_containers() {
    let Fleet {
        runtime,
        containers,
        _dir,
    } = Fleet::new("dropped").await;
    let mut instance = runtime.start(http_spec("web-r1-1")).await.unwrap();
    running(next(&mut instance.events).await);
    drop(runtime);
    // Stopped in the background, as a control plane shutting down without `stop` leaves it.
    loop {
        match next(&mut instance.events).await {
            Lifecycle::Stopped => break,
            Lifecycle::Exited { .. } => {}
            other => panic!("expected the instance to stop, got {other:?}"),
        }
    }
    assert_eq!(containers.ids(), Vec::<String>::new());
}

#[test]
fn a_container_left_by_a_killed_control_plane_is_discovered_and_reaped() {
    let name = format!("t{}-reap", std::process::id());
    let dir = TempDir::new(&name);
    let containers = LabelledContainers::new(format!("io.mcpfleet.fleet={name}"));
    // A control plane that dies without stopping anything: its tokio runtime goes away
    // with the supervisors' tasks, the container runs on.
    let killed = tokio::runtime::Runtime::new().unwrap();
    let container = killed.block_on(async {
        let runtime = connect(&name, &dir).await;
        let mut instance = runtime.start(http_spec("web-r1-1")).await.unwrap();
        let (_, container) = running(next(&mut instance.events).await);
        // Never dropped: a dropped runtime stops its instances; a killed one cannot.
        std::mem::forget(runtime);
        container
    });
    killed.shutdown_background();
    assert_eq!(containers.ids(), std::slice::from_ref(&container));

    let next_plane = tokio::runtime::Runtime::new().unwrap();
    next_plane.block_on(async {
        let runtime = connect(&name, &dir).await;
        let found = runtime.discover().await;
        assert_eq!(found.len(), 1, "{found:?}");
        assert_eq!(found[0].id, InstanceId::from("web-r1-1"));
        assert_eq!(found[0].server, "web");
        assert_eq!(found[0].revision, 1);
        assert_eq!(
            found[0].handle,
            InstanceHandle::Container {
                id: container.clone()
            }
        );
        let reaped = runtime.reap_leftovers(&HashSet::new()).await;
        assert_eq!(reaped.len(), 1, "{reaped:?}");
        assert!(
            matches!(reaped[0].outcome, ReapOutcome::Stopped { .. }),
            "{reaped:?}"
        );
        assert!(runtime.discover().await.is_empty());
    });
    assert_eq!(containers.ids(), Vec::<String>::new());
}

#[tokio::test]
async fn a_secret_reaches_the_container_as_a_file_its_user_can_read_and_goes_with_it() {
    use std::os::unix::fs::{MetadataExt as _, PermissionsExt as _};
    const VALUE: &str = "container-secret-9d2e";
    let fleet = Fleet::new("secret").await;
    let id = InstanceId::from("files-r1-1");
    let mut spec = spec(
        "files-r1-1",
        InstanceIo::Stdio,
        &[
            "--transport",
            "stdio",
            "--require-file",
            "/run/secrets/token",
        ],
    );
    let Launch::Container(launch) = &mut spec.launch else {
        unreachable!()
    };
    launch.secrets = vec![ContainerSecret {
        target: "/run/secrets/token".into(),
        value: VALUE.into(),
    }];
    let mut instance = fleet.runtime.start(spec).await.unwrap();
    let (reach, container) = running(next(&mut instance.events).await);
    let Reach::Stdio(mut attachment) = reach else {
        panic!("expected a stdio attachment");
    };
    // It answers only if it could read the file as its user (nobody: the image has none).
    let answer = fleet_testkit::initialize_over(&mut attachment, DEADLINE).await;
    assert!(answer.contains(r#""serverInfo""#), "{answer}");
    // The server's line about the file reaches the log through the engine's output stream,
    // which may lag behind its answer.
    let read = format!("read /run/secrets/token: {} bytes, sha256 ", VALUE.len());
    wait_until(
        "the server's line about the secret file in its log",
        DEADLINE,
        async || {
            let logs: Vec<String> =
                futures::StreamExt::collect(fleet.runtime.logs(&id, 100, false)).await;
            if logs.iter().any(|l| l.starts_with(&read)) {
                Ok(())
            } else {
                Err(logs)
            }
        },
    )
    .await;

    // On the host: a tmpfs, mode 0400, owned by the container's user.
    let dir = std::path::Path::new("/dev/shm")
        .join(format!("mcpfleet-t{}-secret", std::process::id()))
        .join("files-r1-1");
    let file = std::fs::metadata(dir.join("0")).unwrap();
    assert_eq!(file.permissions().mode() & 0o777, 0o400);
    assert_eq!((file.uid(), file.gid()), (65534, 65534));
    // The engine shows where the file comes from, never what it holds.
    let inspected = inspect(&container).to_string();
    assert!(inspected.contains("/run/secrets/token"), "{inspected}");
    assert!(!inspected.contains(VALUE), "inspect shows the secret");

    fleet.runtime.stop(&id).await.unwrap();
    while !matches!(next(&mut instance.events).await, Lifecycle::Stopped) {}
    assert!(!dir.exists(), "the secret files outlive the container");
    std::fs::remove_dir(dir.parent().unwrap()).unwrap();
}

#[test]
fn a_restarted_control_plane_adopts_a_running_http_container_without_restarting_it() {
    let name = format!("t{}-adopt", std::process::id());
    let dir = TempDir::new(&name);
    let containers = LabelledContainers::new(format!("io.mcpfleet.fleet={name}"));
    // A control plane killed with an http and a stdio instance running.
    let killed = tokio::runtime::Runtime::new().unwrap();
    let (web, files) = killed.block_on(async {
        let runtime = connect(&name, &dir).await;
        let mut web = runtime.start(http_spec("web-r1-1")).await.unwrap();
        let (_, web) = running(next(&mut web.events).await);
        let mut files = runtime.start(stdio_spec("files-r1-1")).await.unwrap();
        let (_, files) = running(next(&mut files.events).await);
        std::mem::forget(runtime);
        (web, files)
    });
    killed.shutdown_background();

    let next_plane = tokio::runtime::Runtime::new().unwrap();
    next_plane.block_on(async {
        let runtime = connect(&name, &dir).await;
        let found = runtime.discover().await;
        let adoptable: HashSet<InstanceId> = found
            .iter()
            .filter(|f| f.adoptable)
            .map(|f| f.id.clone())
            .collect();
        // The http one can be taken over; the stdio one lost its stdin with the control
        // plane (it may even be gone already).
        assert_eq!(
            adoptable,
            HashSet::from([InstanceId::from("web-r1-1")]),
            "{found:?}"
        );
        let reaped = runtime.reap_leftovers(&adoptable).await;
        assert!(
            reaped
                .iter()
                .all(|r| r.id.as_ref() != Some(&InstanceId::from("web-r1-1")))
        );
        assert!(
            !containers.ids().contains(&files),
            "the stdio leftover is gone"
        );

        let mut adopted = runtime.adopt(http_spec("web-r1-1")).await.unwrap();
        let (reach, container) = running(next(&mut adopted.events).await);
        assert_eq!(container, web, "the same container, not a new one");
        let Reach::Address(address) = reach else {
            panic!("an http instance is reached at an address, got {reach:?}");
        };
        assert!(initialize_http(address).await.contains("mcp-sample-server"));
        let status = &runtime.statuses()[0];
        assert_eq!(status.restarts, 0);
        assert!(
            status.started_at.unwrap() < std::time::SystemTime::now() - Duration::from_millis(1),
            "started when the killed control plane started it"
        );
        // A second adoption of the same instance is refused; a stdio spec is never adopted.
        assert!(matches!(
            runtime.adopt(http_spec("web-r1-1")).await,
            Err(StartError::AlreadyRunning { .. })
        ));
        assert!(matches!(
            runtime.adopt(stdio_spec("files-r1-1")).await,
            Err(StartError::NotAdoptable { .. })
        ));
        // Supervised again: stop stops and removes it.
        runtime.stop(&InstanceId::from("web-r1-1")).await.unwrap();
    });
    assert_eq!(containers.ids(), Vec::<String>::new());
}
