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
    write_fleet(&fleet, &crash_fleet(&marker, 1, on_failure));
    let control_plane = up_stopping_at(&fleet, &format!("{phase}#2"));
    write_fleet(&fleet, &crash_fleet(&marker, 2, on_failure));
    deploy_and_kill_at(&fleet, control_plane, &format!("{phase}#2"));
    let status = up_again(&fleet, control_plane);
    (fleet, marker, status)
}

fn write_fleet(fleet: &Fleet, yaml: &str) {
    std::fs::write(fleet.dir.join("mcpfleet.yaml"), yaml).unwrap();
}

/// `up -d` with `MCPFLEET_FAILPOINT=failpoint`; the control plane's pid.
fn up_stopping_at(fleet: &Fleet, failpoint: &str) -> u32 {
    let up = Command::new(env!("CARGO_BIN_EXE_mcpfleet"))
        .args(["up", "-d", "--state-dir"])
        .arg(fleet.state_dir())
        .current_dir(&fleet.dir)
        .env("MCPFLEET_FAILPOINT", failpoint)
        .output()
        .unwrap();
    assert!(up.status.success(), "{}", text(&up));
    fleet.status().pid
}

/// Deploys the fleet file and kills the control plane with SIGKILL once it has reached
/// `failpoint`.
fn deploy_and_kill_at(fleet: &Fleet, control_plane: u32, failpoint: &str) {
    let deploy = fleet.deploy_in_background();
    let log = fleet.state_dir().join("control.log");
    wait_until_blocking(
        &format!("the failpoint {failpoint} is reached"),
        Duration::from_secs(30),
        || {
            std::fs::read_to_string(&log)
                .unwrap_or_default()
                .contains(&format!("failpoint {failpoint} reached"))
        },
    );
    nix_kill9(control_plane);
    // It ends with the connection (before `before-finish` it has seen the deployment
    // complete; earlier it fails).
    deploy.join().unwrap();
}

/// `up -d` after the control plane `killed` was killed.
fn up_again(fleet: &Fleet, killed: u32) -> Status {
    let again = fleet.up();
    assert!(again.status.success(), "{}", text(&again));
    let status = fleet.status();
    assert_ne!(status.pid, killed);
    status
}

/// Waits until `api`'s revisions (`mcpfleet history api`) are `expected` as `(number,
/// state)`: a deployment's followers see it end just before its record is written.
fn assert_api_revisions(fleet: &Fleet, expected: &[(u64, &str)]) {
    let expected: Vec<(u64, String)> = expected
        .iter()
        .map(|(n, s)| (*n, (*s).to_string()))
        .collect();
    wait_until_blocking(
        &format!("api's revisions are {expected:?}"),
        Duration::from_secs(10),
        || {
            let out = fleet.mcpfleet(&["history", "api", "--output", "json"]);
            assert!(out.status.success(), "{}", text(&out));
            let revisions: Vec<fleet_api::types::ServerRevisionEntry> =
                serde_json::from_slice(&out.stdout).unwrap();
            let found: Vec<(u64, String)> = revisions
                .into_iter()
                .map(|r| (r.number, r.state.to_string()))
                .collect();
            if found == expected {
                Ok(())
            } else {
                Err(found)
            }
        },
    );
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
    // The revision the interrupted deployment brought in did not stay pending.
    assert_api_revisions(&fleet, &[(1, "active"), (2, "failed")]);
    // And the fleet deploys normally afterwards.
    let deployed = fleet.mcpfleet(&["deploy"]);
    assert!(deployed.status.success(), "{}", text(&deployed));
    assert_eq!(server(&fleet.status(), "api").revision, Some(2));
    assert_api_revisions(&fleet, &[(1, "superseded"), (2, "active")]);
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
        note.contains("deployment 2: had finished; recorded as succeeded"),
        "{note}"
    );
    // Written before the apply step was confirmed.
    assert_api_revisions(&fleet, &[(1, "superseded"), (2, "active")]);
}

#[test]
fn with_on_failure_pause_an_interrupted_deployment_is_resumed() {
    let (fleet, marker, status) = crash_at("crash-pause", "step-written", "pause");
    assert_eq!(server(&status, "api").revision, Some(2), "{status:#?}");
    assert_runs_only(&marker, 2);
    let note = recovered(&fleet);
    assert!(note.contains("deploying again"), "{note}");
}

/// Regression: rev 2 failed and was rolled back (rev 1 serves); rev 3 is interrupted.
/// Recovery goes back to rev 1, the one serving, not to rev 2, the latest recorded.
#[test]
fn an_interrupted_deployment_goes_back_to_the_revision_serving_not_to_a_rolled_back_one() {
    let marker = format!("crash-after-failed-{}", std::process::id());
    let fleet = Fleet::new("crash-after-failed", "version: 1\nname: x\nservers: {}\n");
    write_fleet(&fleet, &crash_fleet(&marker, 1, "rollback"));
    let control_plane = up_stopping_at(&fleet, "step-written#3");

    // Revision 2 expects a tool the server does not offer: it never becomes ready.
    let failing = crash_fleet(&marker, 2, "rollback").replace(
        "    rollout:",
        "    health: { mcp: { expect_tools: [nope] } }\n    rollout:",
    );
    write_fleet(&fleet, &failing);
    let deployed = fleet.mcpfleet(&["deploy"]);
    assert_eq!(deployed.status.code(), Some(1), "{}", text(&deployed));
    assert_eq!(server(&fleet.status(), "api").revision, Some(1));

    write_fleet(&fleet, &crash_fleet(&marker, 3, "rollback"));
    deploy_and_kill_at(&fleet, control_plane, "step-written#3");
    let status = up_again(&fleet, control_plane);

    assert_eq!(server(&status, "api").revision, Some(1), "{status:#?}");
    assert_eq!(processes_with(&format!("api1-{marker}")).len(), 1);
    assert!(processes_with(&format!("api2-{marker}")).is_empty());
    assert!(processes_with(&format!("api3-{marker}")).is_empty());
    let note = recovered(&fleet);
    assert!(
        note.contains("deployment 3 (fleet revision 3)")
            && note.contains("rolled back to fleet revision 1"),
        "{note}"
    );

    let out = fleet.mcpfleet(&["history", "--output", "json"]);
    assert!(out.status.success(), "{}", text(&out));
    let history: Vec<fleet_api::types::HistoryEntry> = serde_json::from_slice(&out.stdout).unwrap();
    let of = |d: u64| history.iter().find(|h| h.deployment == d).unwrap();
    assert_eq!(
        (of(2).from_revision, of(2).state.as_str()),
        (Some(1), "rolled-back")
    );
    assert_eq!(
        (of(3).from_revision, of(3).state.as_str()),
        (Some(1), "rolled-back")
    );
    // The recovery's own deployment: back to revision 1, from revision 1.
    assert_eq!(of(4).from_revision, Some(1), "{history:#?}");
    assert_eq!(of(4).servers["api"], 1);
    assert_api_revisions(&fleet, &[(1, "active"), (2, "failed"), (3, "failed")]);
}

/// `up` after the crash is given another file: nothing is rolled back to, and the record
/// does not say so.
#[test]
fn killed_then_started_with_another_file_deploys_that_file_and_claims_no_rollback() {
    let marker = format!("crash-other-{}", std::process::id());
    let fleet = Fleet::new("crash-other", "version: 1\nname: x\nservers: {}\n");
    write_fleet(&fleet, &crash_fleet(&marker, 1, "rollback"));
    let control_plane = up_stopping_at(&fleet, "step-written#2");
    write_fleet(&fleet, &crash_fleet(&marker, 2, "rollback"));
    deploy_and_kill_at(&fleet, control_plane, "step-written#2");
    write_fleet(&fleet, &crash_fleet(&marker, 3, "rollback"));
    let status = up_again(&fleet, control_plane);

    assert_eq!(server(&status, "api").revision, Some(3), "{status:#?}");
    assert_eq!(processes_with(&format!("api3-{marker}")).len(), 1);
    let note = recovered(&fleet);
    assert!(
        note.contains("deployment 2 (fleet revision 2)")
            && note.contains("deploying the fleet file `up` was given instead")
            && !note.contains("rolled back"),
        "{note}"
    );
    let out = fleet.mcpfleet(&["history", "--output", "json"]);
    assert!(out.status.success(), "{}", text(&out));
    let history: Vec<fleet_api::types::HistoryEntry> = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(history[1].state, DeploymentState::Failed, "{history:#?}");
    assert!(
        !history[1]
            .outcome
            .as_deref()
            .unwrap_or_default()
            .contains("rolled back")
    );
    assert_eq!(
        (history[2].revision, history[2].from_revision),
        (3, Some(1))
    );
    assert_api_revisions(&fleet, &[(1, "superseded"), (2, "failed"), (3, "active")]);
}
