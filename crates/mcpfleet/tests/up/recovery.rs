//! `kill -9` of the control plane in each phase of a deployment (stopped there by
//! `MCPFLEET_FAILPOINT`), then `up` again: the journal says what was going on, the
//! deployment is settled per `on_failure`, nothing is orphaned or duplicated, and the
//! events say what happened.

use super::*;

/// `api` (blue-green) named `api<N>-<marker>` at revision N, and `keep`.
fn crash_fleet(marker: &str, api_revision: u32, on_failure: &str) -> String {
    format!(
        r#"
version: 1
name: crashes
servers:
  api:
    http:
      command: SAMPLE
      args: ["--transport", "http", "--port", "{{{{ port }}}}", "--name", "api{api_revision}-{marker}"]
    rollout: {{ strategy: blue-green, rollback_window: 1m }}
    on_failure: {on_failure}
  keep:
    stdio: {{ command: SAMPLE, args: ["--transport", "stdio", "--name", "keep-{marker}"] }}
gateway:
  listen: 127.0.0.1:0
"#
    )
    .replace("SAMPLE", &sample())
}

/// Deploys revision 2 of `api` with the control plane stopped at `phase` of that
/// deployment, kills it with SIGKILL there, and runs `up` again with the same file.
fn crash_at(test: &str, phase: &str, on_failure: &str) -> (Fleet, String, Status) {
    let marker = format!("{test}-{}", std::process::id());
    let fleet = Fleet::new(test, "version: 1\nname: x\nservers: {}\n");
    std::fs::write(
        fleet.dir.join("mcpfleet.yaml"),
        crash_fleet(&marker, 1, on_failure),
    )
    .unwrap();
    let up = Command::new(env!("CARGO_BIN_EXE_mcpfleet"))
        .args(["up", "-d", "--state-dir"])
        .arg(fleet.state_dir())
        .current_dir(&fleet.dir)
        .env("MCPFLEET_FAILPOINT", format!("{phase}#2"))
        .output()
        .unwrap();
    assert!(up.status.success(), "{}", text(&up));
    let control_plane = fleet.status().pid;

    std::fs::write(
        fleet.dir.join("mcpfleet.yaml"),
        crash_fleet(&marker, 2, on_failure),
    )
    .unwrap();
    let deploy = fleet.deploy_in_background();
    let log = fleet.state_dir().join("control.log");
    let started = Instant::now();
    while !std::fs::read_to_string(&log)
        .unwrap_or_default()
        .contains(&format!("failpoint {phase}#2 reached"))
    {
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "the failpoint {phase} was never reached"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    nix_kill9(control_plane);
    // It ends with the connection (before `before-finish` it has seen the deployment
    // complete; earlier it fails).
    deploy.join().unwrap();

    let again = fleet.up();
    assert!(again.status.success(), "{}", text(&again));
    let status = fleet.status();
    assert_ne!(status.pid, control_plane);
    (fleet, marker, status)
}

/// One live process per server instance that should run, none of the other revision.
fn assert_runs_only(marker: &str, revision: u32) {
    let other = 3 - revision;
    assert_eq!(
        processes_with(&format!("api{revision}-{marker}")).len(),
        1,
        "api revision {revision}"
    );
    assert!(
        processes_with(&format!("api{other}-{marker}")).is_empty(),
        "api revision {other}"
    );
    // keep: its probe instance and one warm session process, not twice that.
    assert_eq!(processes_with(&format!("keep-{marker}")).len(), 2);
}

fn recovered(fleet: &Fleet) -> String {
    events(fleet)
        .into_iter()
        .filter(|e| e.kind == EventKind::Recovered)
        .map(|e| e.message)
        .collect::<Vec<_>>()
        .join("\n")
}

fn assert_rolled_back(test: &str, phase: &str, during: &str) {
    let (fleet, marker, status) = crash_at(test, phase, "rollback");
    assert_eq!(server(&status, "api").revision, Some(1), "{status:#?}");
    assert_eq!(server(&status, "api").state, ServerState::Ready);
    assert_runs_only(&marker, 1);
    let note = recovered(&fleet);
    assert!(note.contains("deployment 2"), "{note}");
    assert!(note.contains(during), "{note}");
    assert!(note.contains("rolled back to fleet revision 1"), "{note}");
    // And the fleet deploys normally afterwards.
    let deployed = fleet.mcpfleet(&["deploy"]);
    assert!(deployed.status.success(), "{}", text(&deployed));
    assert_eq!(server(&fleet.status(), "api").revision, Some(2));
}

#[test]
fn killed_before_the_deployment_changed_anything_it_is_rolled_back() {
    assert_rolled_back(
        "crash-begun",
        "deployment-begun",
        "before it changed anything",
    );
}

#[test]
fn killed_while_a_server_updates_the_deployment_is_rolled_back() {
    assert_rolled_back(
        "crash-step",
        "step-written",
        "during step 2 (update of `api` to revision 2)",
    );
}

#[test]
fn killed_at_the_route_swap_the_deployment_is_rolled_back() {
    assert_rolled_back(
        "crash-swap",
        "swap",
        "during step 2 (update of `api` to revision 2)",
    );
}

#[test]
fn killed_after_every_step_the_deployment_is_recorded_as_done() {
    let (fleet, marker, status) = crash_at("crash-finish", "before-finish", "rollback");
    assert_eq!(server(&status, "api").revision, Some(2), "{status:#?}");
    assert_runs_only(&marker, 2);
    let note = recovered(&fleet);
    assert!(
        note.contains("deployment 2: had finished; recorded as Succeeded"),
        "{note}"
    );
}

#[test]
fn with_on_failure_pause_an_interrupted_deployment_is_resumed() {
    let (fleet, marker, status) = crash_at("crash-pause", "step-written", "pause");
    assert_eq!(server(&status, "api").revision, Some(2), "{status:#?}");
    assert_runs_only(&marker, 2);
    let note = recovered(&fleet);
    assert!(note.contains("deploying again"), "{note}");
}
