//! The engine on fleet-testkit's fake runtime: deployments whose servers are in-process
//! fakes scripted to be slow, mute or broken, on a paused clock — deterministic, and no
//! process, socket or real wait involved.

use fleet_engine::Engine;
use fleet_engine::report::{DeploymentState, ServerState};
use fleet_runtime::InstanceId;
use fleet_spec::ValidFleet;
use fleet_testkit::fake_runtime::{FakeRecord, FakeRuntime, FakeScript};
use std::time::Duration;
use support::{desired, engine, engine_starting_at_most, fleet};

mod support;

// A test crate's root finds its modules beside it, not in a directory of its name.
#[path = "fake_runtime/rollouts.rs"]
mod rollouts;
#[path = "fake_runtime/sessions.rs"]
mod sessions;

fn position(records: &[FakeRecord], wanted: impl Fn(&FakeRecord) -> bool) -> usize {
    records
        .iter()
        .position(wanted)
        .unwrap_or_else(|| panic!("not recorded: {records:#?}"))
}

fn of(id: &InstanceId, server: &str) -> bool {
    id.as_str().starts_with(&format!("{server}-"))
}

#[tokio::test(start_paused = true)]
async fn a_dependent_starts_only_after_its_dependency_answers_its_checks() {
    let runtime = FakeRuntime::new();
    runtime.script(
        "base",
        FakeScript::new().answer_after(Duration::from_secs(2)),
    );
    let engine = engine(&runtime);
    let (desired, plan) = desired(
        fleet(
            r#"
version: 1
name: waves
servers:
  base:
    stdio: { command: fake, isolation: shared }
  app:
    stdio: { command: fake, isolation: shared }
    depends_on: [base]
"#,
        ),
        1,
        None,
    );

    let outcome = engine.deploy(&desired, &plan).await;

    assert_eq!(outcome.state, DeploymentState::Succeeded, "{outcome:?}");
    let records = runtime.records();
    let base_checked = position(
        &records,
        |r| matches!(r, FakeRecord::Checked(id) if of(id, "base")),
    );
    let app_started = position(
        &records,
        |r| matches!(r, FakeRecord::Started(id) if of(id, "app")),
    );
    assert!(
        base_checked < app_started,
        "`app` started before `base` was ready: {records:#?}"
    );
}

/// A fleet whose `mute` server (after `base`) never answers, with `mute`'s `on_failure`.
fn with_a_mute_server(on_failure: &str) -> ValidFleet {
    fleet(&format!(
        r#"
version: 1
name: mute
servers:
  base:
    stdio: {{ command: fake, isolation: shared }}
  mute:
    stdio: {{ command: fake, isolation: shared }}
    depends_on: [base]
    on_failure: {on_failure}
    health:
      mcp: {{ handshake_timeout: 2s }}
"#
    ))
}

#[tokio::test(start_paused = true)]
async fn a_server_that_never_becomes_ready_rolls_the_deployment_back_under_on_failure_rollback() {
    let runtime = FakeRuntime::new();
    runtime.script("mute", FakeScript::new().never_ready());
    let engine = engine(&runtime);
    let (desired, plan) = desired(with_a_mute_server("rollback"), 1, None);

    let outcome = engine.deploy(&desired, &plan).await;

    assert_eq!(outcome.state, DeploymentState::RolledBack, "{outcome:?}");
    let reason = outcome.reason.unwrap_or_default();
    assert!(reason.starts_with("mute:"), "{reason}");
    // What the deployment created is gone again: every start has its stop.
    let records = runtime.records();
    assert_eq!(runtime.most_running_at_once("base-"), 1, "{records:#?}");
    for server in ["base", "mute"] {
        let started = records
            .iter()
            .filter(|r| matches!(r, FakeRecord::Started(id) if of(id, server)))
            .count();
        let stopped = records
            .iter()
            .filter(|r| matches!(r, FakeRecord::Stopped(id) if of(id, server)))
            .count();
        assert_eq!((started, stopped), (1, 1), "{server}: {records:#?}");
    }
}

#[tokio::test(start_paused = true)]
async fn a_server_that_never_becomes_ready_pauses_the_deployment_under_on_failure_pause() {
    let runtime = FakeRuntime::new();
    runtime.script("mute", FakeScript::new().never_ready());
    let engine = engine(&runtime);
    let (desired, plan) = desired(with_a_mute_server("pause"), 1, None);

    let outcome = engine.deploy(&desired, &plan).await;

    assert_eq!(outcome.state, DeploymentState::Paused, "{outcome:?}");
    let status = engine.status();
    let state = |name: &str| {
        status
            .servers
            .iter()
            .find(|s| s.name == name)
            .map(|s| s.state)
    };
    assert_eq!(state("base"), Some(ServerState::Ready), "{status:#?}");
    assert_eq!(state("mute"), Some(ServerState::Failed), "{status:#?}");
    // Paused leaves what is ready running.
    let records = runtime.records();
    assert!(
        !records
            .iter()
            .any(|r| matches!(r, FakeRecord::Stopped(id) if of(id, "base"))),
        "{records:#?}"
    );
}

#[tokio::test(start_paused = true)]
async fn a_server_whose_start_fails_fails_the_deployment_with_the_runtimes_reason() {
    let runtime = FakeRuntime::new();
    runtime.script("mute", FakeScript::new().fail_to_start());
    let engine = engine(&runtime);
    let (desired, plan) = desired(with_a_mute_server("continue"), 1, None);

    let outcome = engine.deploy(&desired, &plan).await;

    assert_eq!(outcome.state, DeploymentState::Failed, "{outcome:?}");
    let reason = outcome.reason.unwrap_or_default();
    assert!(
        reason.starts_with("mute:") && reason.contains("scripted to fail this start"),
        "{reason}"
    );
}

#[tokio::test(start_paused = true)]
async fn a_ready_instance_that_exits_is_restarted_and_serves_again() {
    let runtime = FakeRuntime::new();
    runtime.script(
        "flaky",
        FakeScript::new().exit_after(Duration::from_secs(30)),
    );
    let engine = engine(&runtime);
    let (desired, plan) = desired(
        fleet(
            r#"
version: 1
name: flaky
servers:
  flaky:
    stdio: { command: fake, isolation: shared }
    restart: { policy: on-failure }
"#,
        ),
        1,
        None,
    );
    let outcome = engine.deploy(&desired, &plan).await;
    assert_eq!(outcome.state, DeploymentState::Succeeded, "{outcome:?}");

    fleet_testkit::wait_until(
        "`flaky` has been restarted and is ready again",
        Duration::from_secs(10),
        async || {
            let status = engine.status();
            status.servers[0]
                .instances
                .iter()
                .any(|i| i.restarts >= 1 && i.state == ServerState::Ready)
        },
    )
    .await;
    // A restart is the same instance, not a new one.
    let started = runtime
        .records()
        .iter()
        .filter(|r| matches!(r, FakeRecord::Started(_)))
        .count();
    assert_eq!(started, 1);
}

#[tokio::test(start_paused = true)]
async fn an_instance_that_crashes_on_every_liveness_check_ends_crash_looping() {
    let runtime = FakeRuntime::new();
    // Ready after two checks (the handshake's and readiness'), every start crashes on its
    // first liveness check.
    runtime.script("crashy", FakeScript::new().crash_on_check(3));
    let engine = engine(&runtime);
    let (desired, plan) = desired(
        fleet(
            r#"
version: 1
name: crashy
servers:
  crashy:
    stdio: { command: fake, isolation: shared }
    restart: { policy: always, give_up_after: 3 }
"#,
        ),
        1,
        None,
    );
    let outcome = engine.deploy(&desired, &plan).await;
    assert_eq!(outcome.state, DeploymentState::Succeeded, "{outcome:?}");

    let restarts = fleet_testkit::wait_until(
        "`crashy` is crash-looping",
        Duration::from_secs(10),
        async || {
            let status = engine.status();
            let instance = &status.servers[0].instances[0];
            (instance.state == ServerState::CrashLooping).then_some(instance.restarts)
        },
    )
    .await;
    // Three failed starts: the first and two restarts, then no more.
    assert_eq!(restarts, 2);
    let (history, _) = engine.subscribe();
    let crash_looping: Vec<_> = history
        .iter()
        .filter(|e| e.kind == fleet_engine::report::EventKind::CrashLooping)
        .collect();
    assert_eq!(crash_looping.len(), 1, "{history:#?}");
    assert!(
        crash_looping[0]
            .message
            .contains("3 failed starts in a row"),
        "{crash_looping:?}"
    );
}

/// `server`'s revisions in the published route table: (revision, weight, instances).
fn routes_of(engine: &Engine<FakeRuntime>, server: &str) -> Vec<(u64, u32, usize)> {
    let table = engine.routes().borrow().clone();
    table
        .get(server)
        .unwrap_or_default()
        .iter()
        .map(|r| (r.revision, r.weight, r.instances.len()))
        .collect()
}

fn count(records: &[FakeRecord], wanted: impl Fn(&FakeRecord) -> bool) -> usize {
    records.iter().filter(|r| wanted(r)).count()
}

fn started_with(record: &FakeRecord, prefix: &str) -> bool {
    matches!(record, FakeRecord::Started(id) if id.as_str().starts_with(prefix))
}

fn stopped_with(record: &FakeRecord, prefix: &str) -> bool {
    matches!(record, FakeRecord::Stopped(id) if id.as_str().starts_with(prefix))
}

#[tokio::test(start_paused = true)]
async fn a_wave_starts_at_most_concurrency_servers_at_once_highest_priority_first() {
    let runtime = FakeRuntime::new();
    for server in ["high", "mid", "low", "lowest"] {
        runtime.script(
            server,
            FakeScript::new().answer_after(Duration::from_secs(2)),
        );
    }
    let engine = engine_starting_at_most(&runtime, 2);
    // Listed out of order and named against the alphabet: only priority orders them.
    let (desired, plan) = desired(
        fleet(
            r#"
version: 1
name: priorities
servers:
  lowest: { stdio: { command: fake, isolation: shared }, priority: -5 }
  low: { stdio: { command: fake, isolation: shared } }
  high: { stdio: { command: fake, isolation: shared }, priority: 10 }
  mid: { stdio: { command: fake, isolation: shared }, priority: 5 }
"#,
        ),
        1,
        None,
    );

    let outcome = engine.deploy(&desired, &plan).await;

    assert_eq!(outcome.state, DeploymentState::Succeeded, "{outcome:?}");
    let records = runtime.records();
    let starts: Vec<&str> = records
        .iter()
        .filter_map(|r| match r {
            FakeRecord::Started(id) => Some(id.as_str()),
            _ => None,
        })
        .collect();
    assert_eq!(starts, ["high-r1-1", "mid-r1-1", "low-r1-1", "lowest-r1-1"]);
    // Starting: started and not yet answered a check.
    let (mut starting, mut most) = (std::collections::BTreeSet::new(), 0);
    for record in &records {
        match record {
            FakeRecord::Started(id) | FakeRecord::Adopted(id) => {
                starting.insert(id.clone());
            }
            FakeRecord::Checked(id) => {
                starting.remove(id);
            }
            FakeRecord::Stopped(_) => {}
        }
        most = most.max(starting.len());
    }
    assert_eq!(most, 2, "{records:#?}");
}

#[tokio::test(start_paused = true)]
async fn the_fakes_restart_of_an_instance_backing_off_does_nothing() {
    use fleet_runtime::{InstanceIo, InstanceSpec, Launch, Lifecycle, Runtime as _};
    use fleet_spec::model::{Restart, RestartPolicyKind};

    let runtime = FakeRuntime::new();
    runtime.script(
        "flaky",
        FakeScript::new().exit_after(Duration::from_secs(1)),
    );
    let id = InstanceId("flaky-r1-1".to_owned());
    let spec = InstanceSpec {
        id: id.clone(),
        server: "flaky".to_owned(),
        revision: 1,
        launch: Launch::Process {
            program: "fake".to_owned(),
            cwd: None,
        },
        args: Vec::new(),
        env: Vec::new(),
        io: InstanceIo::Stdio,
        restart: Restart {
            policy: RestartPolicyKind::Always,
            backoff_initial: Duration::from_secs(10),
            backoff_max: Duration::from_secs(60),
            backoff_multiplier: 2.0,
            jitter: 0.0,
            give_up_after: 5,
            stable_after: Duration::from_secs(60),
        },
        stop_grace: Duration::from_secs(1),
        deployment: None,
    };
    let mut instance = runtime.start(spec).await.expect("the fake starts it");
    let delay = loop {
        match instance.events.recv().await {
            Some(Lifecycle::BackingOff { delay, .. }) => break delay,
            Some(_) => {}
            None => panic!("no backoff"),
        }
    };
    let backing_off_since = tokio::time::Instant::now();

    runtime.restart(&id).await.expect("a known instance");

    // The next thing that happens is the start the backoff promised, when it promised it.
    let next = instance.events.recv().await;
    assert!(
        matches!(next, Some(Lifecycle::Running { .. })),
        "restarted during its backoff: {:?}",
        next.map(|e| std::mem::discriminant(&e))
    );
    assert!(backing_off_since.elapsed() >= delay);
    assert_eq!(runtime.statuses()[0].restarts, 0);
}

#[tokio::test(start_paused = true)]
async fn an_instance_left_running_is_adopted_checked_and_the_rest_started() {
    let runtime = FakeRuntime::new();
    // An earlier control plane left `web`'s instance running, and one of a revision that is
    // not deployed now.
    runtime.leave_running("web-r1-1");
    runtime.leave_running("old-r7-1");
    let engine = engine(&runtime);
    engine.offer_leftovers([InstanceId::from("web-r1-1"), InstanceId::from("old-r7-1")]);
    let (desired, plan) = desired(
        fleet(
            r#"
version: 1
name: adopt
servers:
  web:
    stdio: { command: fake, isolation: shared }
  api:
    stdio: { command: fake, isolation: shared }
"#,
        ),
        1,
        None,
    );

    let outcome = engine.deploy(&desired, &plan).await;

    assert_eq!(outcome.state, DeploymentState::Succeeded, "{outcome:?}");
    let records = runtime.records();
    let web = InstanceId::from("web-r1-1");
    assert!(
        records.contains(&FakeRecord::Adopted(web.clone())),
        "{records:#?}"
    );
    assert!(
        !records.contains(&FakeRecord::Started(web.clone())),
        "{records:#?}"
    );
    // Adopted, then checked like any instance before it serves.
    assert!(
        records.contains(&FakeRecord::Checked(web.clone())),
        "{records:#?}"
    );
    assert!(records.contains(&FakeRecord::Started(InstanceId::from("api-r1-1"))));
    let (history, _) = engine.subscribe();
    let adopted: Vec<_> = history
        .iter()
        .filter(|e| e.kind == fleet_engine::report::EventKind::InstanceAdopted)
        .filter_map(|e| e.server.as_deref())
        .collect();
    assert_eq!(adopted, ["web"]);
}
