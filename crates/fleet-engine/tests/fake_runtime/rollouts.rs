//! Updates on the fake runtime: rolling within its surge and unavailability budgets,
//! blue-green and its rollback window, and an update whose new revision never becomes
//! ready under each `on_failure`.

use super::*;

/// `api` at `version`: `replicas` replicas, updated by `rollout` (a YAML flow mapping).
fn api_at(version: &str, replicas: u32, rollout: &str) -> ValidFleet {
    fleet(&format!(
        r#"
version: 1
name: rollouts
servers:
  api:
    stdio: {{ command: fake, args: ["{version}"], isolation: shared }}
    replicas: {replicas}
    rollout: {rollout}
"#
    ))
}

fn rolling(version: &str) -> ValidFleet {
    api_at(
        version,
        3,
        "{ strategy: rolling, max_surge: 1, max_unavailable: 0 }",
    )
}

fn rolling_unavailable(version: &str) -> ValidFleet {
    api_at(
        version,
        3,
        "{ strategy: rolling, max_surge: 0, max_unavailable: 1 }",
    )
}

fn blue_green(version: &str) -> ValidFleet {
    api_at(version, 2, "{ strategy: blue-green }")
}

fn blue_green_with_window(version: &str) -> ValidFleet {
    api_at(version, 2, "{ strategy: blue-green, rollback_window: 60s }")
}

#[tokio::test(start_paused = true)]
async fn a_rolling_update_with_max_surge_1_never_runs_more_than_replicas_plus_one() {
    let runtime = FakeRuntime::new();
    let engine = engine(&runtime);
    let (first, plan) = desired(rolling("v1"), 1, None);
    let outcome = engine.deploy(&first, &plan).await;
    assert_eq!(outcome.state, DeploymentState::Succeeded, "{outcome:?}");

    let old = rolling("v1");
    let (second, plan) = desired(rolling("v2"), 2, Some(&old));
    let outcome = engine.deploy(&second, &plan).await;

    assert_eq!(outcome.state, DeploymentState::Succeeded, "{outcome:?}");
    let records = runtime.records();
    let started = |revision: &str| {
        records
            .iter()
            .filter(|r| matches!(r, FakeRecord::Started(id) if id.as_str().starts_with(revision)))
            .count()
    };
    assert_eq!(
        (started("api-r1-"), started("api-r2-")),
        (3, 3),
        "{records:#?}"
    );
    assert_eq!(
        runtime.most_running_at_once("api-"),
        4,
        "replicas 3 + max_surge 1: {records:#?}"
    );
    let status = engine.status();
    let api = status.servers.iter().find(|s| s.name == "api").unwrap();
    assert_eq!(api.revision, Some(2), "{status:#?}");
}

#[tokio::test(start_paused = true)]
async fn a_blue_green_update_keeps_the_old_revision_until_every_new_replica_is_ready() {
    let runtime = FakeRuntime::new();
    let engine = engine(&runtime);
    let (first, plan) = desired(blue_green("v1"), 1, None);
    let outcome = engine.deploy(&first, &plan).await;
    assert_eq!(outcome.state, DeploymentState::Succeeded, "{outcome:?}");
    runtime.script(
        "api",
        FakeScript::new().answer_after(Duration::from_secs(3)),
    );

    let old = blue_green("v1");
    let (second, plan) = desired(blue_green("v2"), 2, Some(&old));
    let outcome = engine.deploy(&second, &plan).await;

    assert_eq!(outcome.state, DeploymentState::Succeeded, "{outcome:?}");
    let records = runtime.records();
    let first_checked = |replica: &str| {
        position(
            &records,
            |r| matches!(r, FakeRecord::Checked(id) if id.as_str() == replica),
        )
    };
    let new_ready = first_checked("api-r2-1").max(first_checked("api-r2-2"));
    let old_stopped = records
        .iter()
        .position(|r| matches!(r, FakeRecord::Stopped(id) if id.as_str().starts_with("api-r1-")));
    assert!(
        old_stopped.is_none_or(|stopped| stopped > new_ready),
        "an old replica stopped before the new revision was ready: {records:#?}"
    );
    assert_eq!(runtime.most_running_at_once("api-"), 4, "{records:#?}");
    let status = engine.status();
    let api = &status.servers[0];
    assert_eq!(api.revision, Some(2), "{status:#?}");
    let new_share: Vec<(u64, u32)> = api
        .traffic
        .iter()
        .filter(|w| w.weight > 0)
        .map(|w| (w.revision, w.weight))
        .collect();
    assert_eq!(new_share, [(2, 100)], "{status:#?}");
}

/// How many instances whose id starts with `prefix` ready-and-running after each record:
/// an instance counts from its first answered check until it stops.
fn serving_over_time(records: &[FakeRecord], prefix: &str) -> Vec<usize> {
    let mut serving = std::collections::BTreeSet::new();
    records
        .iter()
        .map(|record| {
            match record {
                FakeRecord::Checked(id) if id.as_str().starts_with(prefix) => {
                    serving.insert(id.clone());
                }
                FakeRecord::Stopped(id) => {
                    serving.remove(id);
                }
                _ => {}
            }
            serving.len()
        })
        .collect()
}

#[tokio::test(start_paused = true)]
async fn a_rolling_update_with_max_unavailable_1_keeps_replicas_minus_one_serving_throughout() {
    let runtime = FakeRuntime::new();
    let engine = engine(&runtime);
    let (first, plan) = desired(rolling_unavailable("v1"), 1, None);
    let outcome = engine.deploy(&first, &plan).await;
    assert_eq!(outcome.state, DeploymentState::Succeeded, "{outcome:?}");
    let before = runtime.records().len();
    // A slow new revision: any gap in serving would last seconds, not a poll.
    runtime.script(
        "api",
        FakeScript::new().answer_after(Duration::from_secs(3)),
    );

    let old = rolling_unavailable("v1");
    let (second, plan) = desired(rolling_unavailable("v2"), 2, Some(&old));
    let outcome = engine.deploy(&second, &plan).await;

    assert_eq!(outcome.state, DeploymentState::Succeeded, "{outcome:?}");
    let records = runtime.records();
    let serving = serving_over_time(&records, "api-");
    let during_update = &serving[before..];
    assert_eq!(
        during_update.iter().min(),
        Some(&2),
        "replicas 3 - max_unavailable 1 (and the budget is used): {records:#?}"
    );
    assert_eq!(
        runtime.most_running_at_once("api-"),
        3,
        "max_surge 0: {records:#?}"
    );
    assert_eq!(routes_of(&engine, "api"), [(2, 100, 3)]);
}

/// Deploys `api` at revision 1, then at revision 2 by blue-green.
async fn blue_green_updated(runtime: &FakeRuntime) -> Engine<FakeRuntime> {
    let engine = engine(runtime);
    let (first, plan) = desired(blue_green_with_window("v1"), 1, None);
    let outcome = engine.deploy(&first, &plan).await;
    assert_eq!(outcome.state, DeploymentState::Succeeded, "{outcome:?}");
    let old = blue_green_with_window("v1");
    let (second, plan) = desired(blue_green_with_window("v2"), 2, Some(&old));
    let outcome = engine.deploy(&second, &plan).await;
    assert_eq!(outcome.state, DeploymentState::Succeeded, "{outcome:?}");
    engine
}

#[tokio::test(start_paused = true)]
async fn a_blue_green_update_keeps_the_old_revision_for_its_rollback_window_then_stops_it() {
    let runtime = FakeRuntime::new();
    let engine = blue_green_updated(&runtime).await;
    let promoted = tokio::time::Instant::now();

    // Kept, without new sessions, until the window runs out.
    assert_eq!(routes_of(&engine, "api"), [(1, 0, 2), (2, 100, 2)]);
    tokio::time::sleep_until(promoted + Duration::from_secs(59)).await;
    let records = runtime.records();
    assert_eq!(
        count(&records, |r| stopped_with(r, "api-r1-")),
        0,
        "{records:#?}"
    );

    fleet_testkit::wait_until(
        "revision 1 is stopped",
        Duration::from_secs(10),
        async || count(&runtime.records(), |r| stopped_with(r, "api-r1-")) == 2,
    )
    .await;
    assert!(promoted.elapsed() >= Duration::from_secs(60));
    assert_eq!(routes_of(&engine, "api"), [(2, 100, 2)]);
}

#[tokio::test(start_paused = true)]
async fn a_rollback_within_the_blue_green_window_swaps_traffic_back_without_starting_anything() {
    let runtime = FakeRuntime::new();
    let engine = blue_green_updated(&runtime).await;
    let before = runtime.records().len();

    let current = blue_green_with_window("v2");
    let (mut back, plan) = desired(blue_green_with_window("v1"), 1, Some(&current));
    back.is_rollback = true;
    let outcome = engine.deploy(&back, &plan).await;

    assert_eq!(outcome.state, DeploymentState::Succeeded, "{outcome:?}");
    let records = runtime.records();
    let since = &records[before..];
    assert_eq!(
        count(since, |r| matches!(r, FakeRecord::Started(_))),
        0,
        "{since:#?}"
    );
    // Revision 2 is kept for a window of its own now.
    assert_eq!(routes_of(&engine, "api"), [(1, 100, 2), (2, 0, 2)]);
    let status = engine.status();
    assert_eq!(status.servers[0].revision, Some(1), "{status:#?}");
}

/// `api` (first: highest priority) and `other`, both changing from `v1` to `version`;
/// `api` with `strategy` and `on_failure`.
fn two_servers(version: &str, strategy: &str, on_failure: &str) -> ValidFleet {
    fleet(&format!(
        r#"
version: 1
name: failed-update
servers:
  api:
    stdio: {{ command: fake, args: ["{version}"], isolation: shared }}
    priority: 10
    rollout: {{ strategy: {strategy} }}
    on_failure: {on_failure}
    health:
      mcp: {{ handshake_timeout: 2s }}
  other:
    stdio: {{ command: fake, args: ["{version}"], isolation: shared }}
"#
    ))
}

/// Deploys both servers at revision 1, then updates both to revision 2 — one server at a
/// time, `api` first — with `api`'s revision 2 never ready.
async fn a_failed_update(
    strategy: &str,
    on_failure: &str,
) -> (
    FakeRuntime,
    Engine<FakeRuntime>,
    fleet_engine::DeploymentOutcome,
    usize,
) {
    let runtime = FakeRuntime::new();
    let engine = engine_starting_at_most(&runtime, 1);
    let (first, plan) = desired(two_servers("v1", strategy, on_failure), 1, None);
    let outcome = engine.deploy(&first, &plan).await;
    assert_eq!(outcome.state, DeploymentState::Succeeded, "{outcome:?}");
    let before = runtime.records().len();
    runtime.script_revision("api", 2, FakeScript::new().never_ready());

    let old = two_servers("v1", strategy, on_failure);
    let (second, plan) = desired(two_servers("v2", strategy, on_failure), 2, Some(&old));
    let outcome = engine.deploy(&second, &plan).await;
    (runtime, engine, outcome, before)
}

#[tokio::test(start_paused = true)]
async fn a_failed_recreate_update_under_rollback_starts_the_old_revision_again_with_all_traffic() {
    let (runtime, engine, outcome, before) = a_failed_update("recreate", "rollback").await;

    assert_eq!(outcome.state, DeploymentState::RolledBack, "{outcome:?}");
    let records = runtime.records();
    let since = &records[before..];
    // Recreate stopped revision 1 first: the rollback had to start it again.
    assert_eq!(
        count(since, |r| started_with(r, "api-r1-")),
        1,
        "{since:#?}"
    );
    assert_eq!(
        count(since, |r| started_with(r, "api-r2-")),
        count(since, |r| stopped_with(r, "api-r2-")),
        "{since:#?}"
    );
    assert_eq!(routes_of(&engine, "api"), [(1, 100, 1)]);
    // The deployment stopped at `api`: `other` was never updated.
    assert_eq!(count(since, |r| started_with(r, "other-")), 0, "{since:#?}");
    assert_eq!(routes_of(&engine, "other"), [(1, 100, 1)]);
}

#[tokio::test(start_paused = true)]
async fn a_failed_blue_green_update_under_rollback_never_takes_traffic_from_the_old_revision() {
    let (runtime, engine, outcome, before) = a_failed_update("blue-green", "rollback").await;

    assert_eq!(outcome.state, DeploymentState::RolledBack, "{outcome:?}");
    let records = runtime.records();
    let since = &records[before..];
    assert_eq!(
        count(since, |r| stopped_with(r, "api-r1-")),
        0,
        "{since:#?}"
    );
    assert_eq!(
        count(since, |r| started_with(r, "api-r2-")),
        1,
        "{since:#?}"
    );
    assert_eq!(
        count(since, |r| stopped_with(r, "api-r2-")),
        1,
        "{since:#?}"
    );
    assert_eq!(routes_of(&engine, "api"), [(1, 100, 1)]);
    let status = engine.status();
    let api = status.servers.iter().find(|s| s.name == "api").unwrap();
    assert_eq!(
        (api.revision, api.state),
        (Some(1), ServerState::Ready),
        "{status:#?}"
    );
}

#[tokio::test(start_paused = true)]
async fn a_failed_update_under_pause_stops_the_deployment_before_the_next_server() {
    let (runtime, engine, outcome, before) = a_failed_update("blue-green", "pause").await;

    assert_eq!(outcome.state, DeploymentState::Paused, "{outcome:?}");
    let records = runtime.records();
    let since = &records[before..];
    assert_eq!(count(since, |r| started_with(r, "other-")), 0, "{since:#?}");
    // Blue-green kept the old revision serving; the failed one is gone.
    assert_eq!(routes_of(&engine, "api"), [(1, 100, 1)]);
    assert_eq!(routes_of(&engine, "other"), [(1, 100, 1)]);
    let status = engine.status();
    let api = status.servers.iter().find(|s| s.name == "api").unwrap();
    assert_eq!(api.revision, Some(1), "{status:#?}");
}

#[tokio::test(start_paused = true)]
async fn a_failed_update_under_continue_fails_the_deployment_but_updates_the_other_servers() {
    let (runtime, engine, outcome, before) = a_failed_update("blue-green", "continue").await;

    assert_eq!(outcome.state, DeploymentState::Failed, "{outcome:?}");
    let reason = outcome.reason.unwrap_or_default();
    assert!(reason.starts_with("api:"), "{reason}");
    let records = runtime.records();
    let since = &records[before..];
    assert_eq!(
        count(since, |r| started_with(r, "other-r2-")),
        1,
        "{since:#?}"
    );
    assert_eq!(routes_of(&engine, "api"), [(1, 100, 1)]);
    assert_eq!(routes_of(&engine, "other"), [(2, 100, 1)]);
}
