//! Canary rollouts on fleet-testkit's fake runtime, judged on its fake traffic: abort on
//! failed analysis, too little traffic never passing a step, steps in order to promotion,
//! pause and resume. The clock is paused: every analysis interval is exactly the rate the
//! test set times the interval, and minutes of rollout take no real time.

use fleet_engine::report::{
    ANALYSES_KEPT, DeploymentState, Event, EventKind, RolloutState, ServerStatus, Verdict,
};
use fleet_engine::{DeploymentOutcome, Engine, RolloutCommand};
use fleet_spec::ValidFleet;
use fleet_testkit::fake_runtime::{FakeRecord, FakeRuntime};
use fleet_testkit::fake_traffic::{FakeTraffic, Rate};
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

mod support;

use support::{desired, engine, fleet};

const FAST: Duration = Duration::from_millis(2);

/// `api` at `version`, rolled out as a canary with `rollout` (steps, analysis, …).
fn canary_fleet(version: &str, rollout: &str) -> ValidFleet {
    let yaml = format!(
        r#"
version: 1
name: canary
servers:
  api:
    stdio: {{ command: fake, args: ["{version}"], isolation: shared }}
    rollout:
      strategy: canary
{rollout}
"#
    );
    fleet(&yaml)
}

/// An engine on `runtime` whose canaries are judged on `traffic`, serving revision 1 of
/// `api`; and how to deploy revision 2 with `rollout`.
async fn serving_revision_1(
    runtime: &FakeRuntime,
    traffic: &FakeTraffic,
    rollout: &str,
) -> (Engine<FakeRuntime>, Deploying) {
    let engine = engine(runtime);
    engine.watch_traffic(Arc::new(traffic.clone()));
    let first = canary_fleet("v1", rollout);
    let outcome = deploy(&engine, first.clone(), 1, None).await;
    assert_eq!(outcome.state, DeploymentState::Succeeded, "{outcome:?}");
    let second = deploy(&engine, canary_fleet("v2", rollout), 2, Some(first));
    (engine, second)
}

/// A deployment, to await or spawn.
type Deploying = Pin<Box<dyn Future<Output = DeploymentOutcome> + Send>>;

/// Deploys `fleet` at `revision` (every server), planned against `deployed`.
fn deploy(
    engine: &Engine<FakeRuntime>,
    fleet: ValidFleet,
    revision: u64,
    deployed: Option<ValidFleet>,
) -> Deploying {
    let engine = engine.clone();
    Box::pin(async move {
        let (desired, plan) = desired(fleet, revision, deployed.as_ref());
        engine.deploy(&desired, &plan).await
    })
}

fn api(engine: &Engine<FakeRuntime>) -> ServerStatus {
    let status = engine.status();
    status
        .servers
        .into_iter()
        .find(|s| s.name == "api")
        .expect("`api` is in the status")
}

/// `api`'s revisions with a share of new sessions, and their weights.
fn weights(engine: &Engine<FakeRuntime>) -> Vec<(u64, u32)> {
    api(engine)
        .traffic
        .iter()
        .filter(|w| w.weight > 0)
        .map(|w| (w.revision, w.weight))
        .collect()
}

fn events(engine: &Engine<FakeRuntime>, kind: EventKind) -> Vec<Event> {
    let (history, _) = engine.subscribe();
    history.into_iter().filter(|e| e.kind == kind).collect()
}

fn stopped(runtime: &FakeRuntime, prefix: &str) -> usize {
    runtime
        .records()
        .iter()
        .filter(|r| matches!(r, FakeRecord::Stopped(id) if id.as_str().starts_with(prefix)))
        .count()
}

#[tokio::test(start_paused = true)]
async fn a_canary_failing_analysis_failure_limit_times_in_a_row_is_aborted_back_to_stable() {
    let (runtime, traffic) = (FakeRuntime::new(), FakeTraffic::new());
    let rollout = r"      steps: [{ weight: 50, pause: 10m }]
      analysis: { interval: 10s, max_error_rate: 0.05, min_requests: 20, failure_limit: 2 }";
    let (engine, second) = serving_revision_1(&runtime, &traffic, rollout).await;
    traffic.serve("api", 1, Rate::answering(10, FAST));
    // One request in five fails: 20% errors.
    traffic.serve("api", 2, Rate::answering(8, FAST).failing(2));

    let started = tokio::time::Instant::now();
    let outcome = second.await;

    assert_eq!(outcome.state, DeploymentState::RolledBack, "{outcome:?}");
    let reason = outcome.reason.unwrap_or_default();
    assert!(
        reason.contains("analysis failed 2 times in a row") && reason.contains("20.0%"),
        "{reason}"
    );
    // Two failed intervals, not the step's ten minutes.
    assert_eq!(started.elapsed(), Duration::from_secs(20));
    assert_eq!(weights(&engine), [(1, 100)]);
    assert_eq!(api(&engine).revision, Some(1));
    assert_eq!(stopped(&runtime, "api-r2-"), 1, "{:#?}", runtime.records());
    assert_eq!(stopped(&runtime, "api-r1-"), 0, "{:#?}", runtime.records());
    let alerts = events(&engine, EventKind::PerformanceAlert);
    assert_eq!(alerts.len(), 2, "{alerts:#?}");
    let back = events(&engine, EventKind::RollbackCompleted);
    assert!(
        back.iter()
            .any(|e| e.message == "revision 1 serves every new session again"),
        "{back:#?}"
    );
}

#[tokio::test(start_paused = true)]
async fn too_little_canary_traffic_is_inconclusive_and_never_ends_a_step() {
    let (runtime, traffic) = (FakeRuntime::new(), FakeTraffic::new());
    let rollout = r"      steps: [{ weight: 10, pause: 30s }, { weight: 50, pause: 30s }]
      analysis: { interval: 10s, min_requests: 20, failure_limit: 1 }";
    let (engine, second) = serving_revision_1(&runtime, &traffic, rollout).await;
    traffic.serve("api", 1, Rate::answering(100, FAST));
    // 10 requests per interval, every one failing: too few to judge.
    traffic.serve("api", 2, Rate::answering(0, FAST).failing(1));
    let deploying = tokio::spawn(second);

    // Ten times the step's pause (the paused clock jumps there once the engine idles).
    tokio::time::sleep(Duration::from_secs(300)).await;

    let rollout = api(&engine)
        .rollout
        .expect("the canary is still in progress");
    assert_eq!((rollout.step, rollout.weight), (1, 10), "{rollout:#?}");
    assert_eq!(rollout.state, RolloutState::WaitingForAPassingAnalysis);
    assert_eq!(rollout.failures_in_a_row, 0);
    let last = rollout.last_analysis().expect("intervals were judged");
    assert_eq!(last.verdict, Verdict::Inconclusive, "{last:#?}");
    assert_eq!(last.requests, 10);
    // Thirty intervals were judged: the newest are kept, each in step 1.
    assert_eq!(rollout.analyses.len(), ANALYSES_KEPT, "{rollout:#?}");
    assert!(
        rollout
            .analyses
            .iter()
            .all(|a| a.step == 1 && a.requests == 10),
        "{rollout:#?}"
    );
    assert_eq!(weights(&engine), [(1, 90), (2, 10)]);
    assert!(!deploying.is_finished());

    // Enough traffic now: the next interval passes and the rollout moves on.
    traffic.serve("api", 2, Rate::answering(2, FAST));
    let outcome = deploying.await.expect("the deployment did not panic");
    assert_eq!(outcome.state, DeploymentState::Succeeded, "{outcome:?}");
}

#[tokio::test(start_paused = true)]
async fn a_healthy_canary_takes_its_steps_in_order_and_is_promoted() {
    let (runtime, traffic) = (FakeRuntime::new(), FakeTraffic::new());
    let rollout = r"      steps: [{ weight: 10, pause: 20s }, { weight: 50, pause: 20s }, { weight: 90, pause: 20s }]
      analysis: { interval: 10s, min_requests: 20 }";
    let (engine, second) = serving_revision_1(&runtime, &traffic, rollout).await;
    traffic.serve("api", 1, Rate::answering(50, FAST));
    traffic.serve("api", 2, Rate::answering(5, FAST));

    let outcome = second.await;

    assert_eq!(outcome.state, DeploymentState::Succeeded, "{outcome:?}");
    let steps: Vec<String> = events(&engine, EventKind::RolloutStep)
        .into_iter()
        .map(|e| e.message)
        .collect();
    let expected = ["step 1/3: 10%", "step 2/3: 50%", "step 3/3: 90%"];
    assert_eq!(steps.len(), expected.len(), "{steps:#?}");
    for (step, prefix) in steps.iter().zip(expected) {
        assert!(step.starts_with(prefix), "{steps:#?}");
    }
    assert_eq!(api(&engine).revision, Some(2));
    assert_eq!(weights(&engine), [(2, 100)]);
    assert!(api(&engine).rollout.is_none());
    assert!(events(&engine, EventKind::PerformanceAlert).is_empty());
}

#[tokio::test(start_paused = true)]
async fn a_paused_step_holds_until_resumed_then_waits_for_promote() {
    let (runtime, traffic) = (FakeRuntime::new(), FakeTraffic::new());
    let rollout = r"      steps: [{ weight: 20, pause: 30s }, { weight: 60, pause: {} }]
      analysis: { interval: 10s, min_requests: 20 }";
    let (engine, second) = serving_revision_1(&runtime, &traffic, rollout).await;
    traffic.serve("api", 1, Rate::answering(50, FAST));
    traffic.serve("api", 2, Rate::answering(5, FAST));
    let started = tokio::time::Instant::now();
    let deploying = tokio::spawn(second);
    let rollout_state =
        |engine: &Engine<FakeRuntime>| api(engine).rollout.map(|r| (r.step, r.weight, r.state));
    fleet_testkit::wait_until(
        "the canary's first interval was judged",
        Duration::from_secs(15),
        async || api(&engine).rollout.is_some_and(|r| !r.analyses.is_empty()),
    )
    .await;
    let paused = tokio::time::Instant::now();

    engine
        .command("api", RolloutCommand::Pause, None)
        .await
        .expect("the canary takes `pause`");
    // Ten times the step's pause, with every interval passing.
    tokio::time::sleep(Duration::from_secs(300)).await;
    assert_eq!(rollout_state(&engine), Some((1, 20, RolloutState::Paused)));
    assert_eq!(weights(&engine), [(1, 80), (2, 20)]);
    // What the "canary paused too long" alert and the weight panel read.
    let metrics = engine.metrics();
    let [canary] = metrics.canaries.as_slice() else {
        panic!("one canary: {metrics:#?}")
    };
    assert_eq!((canary.server.as_str(), canary.revision), ("api", 2));
    assert!(canary.paused_for >= Duration::from_secs(300), "{canary:?}");
    assert_eq!(metrics.stable, [("api".to_owned(), 1)]);
    assert_eq!(
        metrics.traffic,
        [("api".to_owned(), 1, 80), ("api".to_owned(), 2, 20)]
    );

    engine
        .command("api", RolloutCommand::Resume, None)
        .await
        .expect("the canary takes `resume`");
    let resumed = tokio::time::Instant::now();
    fleet_testkit::wait_until(
        "the resumed canary no longer counts as paused",
        Duration::from_secs(15),
        async || engine.metrics().canaries[0].paused_for.is_zero(),
    )
    .await;
    fleet_testkit::wait_until(
        "the canary is at its second step",
        Duration::from_secs(60),
        async || rollout_state(&engine) == Some((2, 60, RolloutState::WaitingForPromote)),
    )
    .await;
    // What was left of the step's 30 s when it was paused, not a new 30 s.
    let left = Duration::from_secs(30) - (paused - started);
    assert!(
        resumed.elapsed() <= left + Duration::from_millis(100),
        "{:?} after resuming, {left:?} were left",
        resumed.elapsed()
    );
    assert_eq!(weights(&engine), [(1, 40), (2, 60)]);
    // The kept intervals span both steps, oldest first, each naming the step it judged.
    fleet_testkit::wait_until(
        "an interval of step 2 was judged",
        Duration::from_secs(60),
        async || {
            api(&engine)
                .rollout
                .is_some_and(|r| r.last_analysis().is_some_and(|a| a.step == 2))
        },
    )
    .await;
    let analyses = api(&engine).rollout.expect("still waiting").analyses;
    assert_eq!(analyses.len(), ANALYSES_KEPT, "{analyses:#?}");
    assert_eq!(analyses[0].step, 1, "{analyses:#?}");
    assert!(
        analyses.windows(2).all(|w| w[0].step <= w[1].step),
        "{analyses:#?}"
    );
    assert!(
        analyses.iter().all(|a| a.verdict == Verdict::Pass),
        "{analyses:#?}"
    );
    engine
        .command("api", RolloutCommand::Promote, None)
        .await
        .expect("the canary takes `promote`");
    let outcome = deploying.await.expect("the deployment did not panic");
    assert_eq!(outcome.state, DeploymentState::Succeeded, "{outcome:?}");
    assert_eq!(weights(&engine), [(2, 100)]);
    let metrics = engine.metrics();
    assert!(metrics.canaries.is_empty(), "{metrics:#?}");
    assert_eq!(metrics.stable, [("api".to_owned(), 2)]);
    // Both deployments (revision 1, then the canary) counted as succeeded.
    let succeeded = metrics
        .deployments
        .iter()
        .find(|(state, _)| *state == "succeeded")
        .map(|(_, histogram)| histogram.counts.iter().sum::<u64>());
    assert_eq!(succeeded, Some(2), "{metrics:#?}");
}
