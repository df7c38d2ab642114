//! Per-session stdio servers on the fake runtime: the session pool the engine registers
//! for the gateway.

use super::*;

/// An engine on `runtime` running `files`, a per-session server (`warm: 1`,
/// `max_sessions: 2`), and the session pool it registered for the gateway.
async fn files_pool(
    runtime: &FakeRuntime,
) -> (
    Engine<FakeRuntime>,
    std::sync::Arc<dyn fleet_stdio::SessionProcesses>,
) {
    let engine = engine(runtime);
    let (desired, plan) = desired(
        fleet(
            r#"
version: 1
name: sessions
servers:
  files:
    stdio: { command: fake, isolation: per-session, warm: 1, max_sessions: 2 }
"#,
        ),
        1,
        None,
    );
    let outcome = engine.deploy(&desired, &plan).await;
    assert_eq!(outcome.state, DeploymentState::Succeeded, "{outcome:?}");
    let table = engine.routes().borrow().clone();
    let instance = table.get("files").unwrap()[0].instances[0].id.clone();
    let Some(fleet_stdio::StdioEndpoint::PerSession(pool)) =
        engine.stdio_instances().get("files", &instance)
    else {
        panic!("`files` has no session pool: {table:#?}");
    };
    (engine, pool)
}

#[tokio::test(start_paused = true)]
async fn a_per_session_server_starts_a_process_per_session_up_to_max_sessions_and_stops_it_after() {
    let runtime = FakeRuntime::new();
    let (_engine, pool) = files_pool(&runtime).await;
    let sessions =
        |runtime: &FakeRuntime| count(&runtime.records(), |r| started_with(r, "files-r1-s"));

    let first = pool.acquire().await.expect("a first session");
    let second = pool.acquire().await.expect("a second session");
    let refused = pool
        .acquire()
        .await
        .expect_err("a third session is one too many");

    assert_eq!(refused, fleet_stdio::AcquireError::AtCapacity { max: 2 });
    assert_eq!(runtime.most_running_at_once("files-r1-s"), 2);
    let records = runtime.records();
    assert_eq!(count(&records, |r| stopped_with(r, "files-r1-s")), 0);
    let started = sessions(&runtime);

    drop(first);
    fleet_testkit::wait_until(
        "the first session's process is stopped",
        Duration::from_secs(10),
        async || count(&runtime.records(), |r| stopped_with(r, "files-r1-s")) == 1,
    )
    .await;
    let third = pool.acquire().await.expect("a session once one ended");
    assert_eq!(sessions(&runtime), started + 1, "a new process for it");
    drop((second, third));
    fleet_testkit::wait_until(
        "every session's process is stopped",
        Duration::from_secs(10),
        async || count(&runtime.records(), |r| stopped_with(r, "files-r1-s")) == 3,
    )
    .await;
}

#[tokio::test(start_paused = true)]
async fn a_session_given_back_at_the_cap_frees_its_slot_only_once_its_process_is_gone() {
    let runtime = FakeRuntime::new();
    // A process takes 5 s to go: long enough for a new session to overlap it if the pool
    // freed the slot at once.
    runtime.script(
        "files",
        FakeScript::new().stop_takes(Duration::from_secs(5)),
    );
    let (_engine, pool) = files_pool(&runtime).await;

    let first = pool.acquire().await.expect("a first session");
    let _second = pool.acquire().await.expect("a second session");
    drop(first);
    let _third = pool
        .acquire()
        .await
        .expect("a session once the given-back process is gone");

    assert_eq!(
        runtime.most_running_at_once("files-r1-s"),
        2,
        "max_sessions 2, even while a given-back process stops: {:#?}",
        runtime.records()
    );
}
