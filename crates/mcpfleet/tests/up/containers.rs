//! Fleets whose servers run in containers, live on Podman (its Docker-compatible service,
//! started by `fleet_testkit::podman`; the tests fail, not skip, without Podman).

use super::{EventKind, Fleet, RawSession, ServerState, events, server, text};
use fleet_testkit::podman::{self, LabelledContainers};

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

    // web, solo's probe and warm one, common: four containers, all running.
    let running = containers.ids();
    assert_eq!(running.len(), 4, "{running:?}");
    // Published on loopback only; confined. (Containers are named after the instance.)
    let web = format!("mcpfleet-{name}-web-r1-1");
    assert_eq!(inspect(&web, "{{.State.Status}}"), "running");
    let bindings = inspect(
        &web,
        "{{range $p, $b := .HostConfig.PortBindings}}{{$p}}{{range $b}} {{.HostIP}}{{end}}{{end}}",
    );
    assert_eq!(bindings, "8080/tcp 127.0.0.1");
    assert_eq!(inspect(&web, "{{.HostConfig.ReadonlyRootfs}}"), "true");
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

    let out = fleet.mcpfleet(&["down"]);
    assert!(out.status.success(), "{}", text(&out));
    let left = containers.ids();
    assert!(left.is_empty(), "containers survived down: {left:?}");
}
