//! Canary rollouts under live traffic through the gateway: automatic abort on a bad
//! revision, steps and `promote` on a good one.

use super::*;
use fleet_api::types::{RolloutState, Verdict};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

/// `api` (http, canary with `ROLLOUT`) with extra `ARGS`.
pub(super) fn canary_fleet(args: &str, rollout: &str) -> String {
    format!(
        r#"
version: 1
name: canaries
servers:
  api:
    http:
      command: SAMPLE
      args: ["--transport", "http", "--port", "{{{{ port }}}}", "--tools", "echo,whoami"{args}]
    rollout:
{rollout}
"#
    )
    .replace("SAMPLE", &sample())
        + "\ngateway:\n  listen: 127.0.0.1:0\n"
}

/// Waits until `api`'s canary waits for `mcpfleet promote`.
pub(super) fn wait_for_promote(fleet: &Fleet) -> Status {
    fleet.wait_for(
        "the canary waits for promote",
        Duration::from_secs(30),
        |s| {
            server(s, "api")
                .rollout
                .as_ref()
                .is_some_and(|r| r.state == RolloutState::WaitingForPromote)
        },
    )
}

/// A tool call's text, or why it failed (a JSON-RPC error, a refused session).
async fn try_call(session: &RawSession, id: u64, tool: &str) -> Result<String, String> {
    let body = serde_json::json!({
        "jsonrpc": "2.0", "id": id, "method": "tools/call",
        "params": { "name": tool, "arguments": { "message": "hi" } }
    })
    .to_string();
    let response = post(&session.http, &session.url, Some(&session.id), &body).await;
    let status = response.status();
    let text = response.text().await.map_err(|e| e.to_string())?;
    if status != 200 {
        return Err(format!("HTTP {status}: {text}"));
    }
    let data = text
        .lines()
        .filter_map(|l| l.strip_prefix("data: "))
        .next_back()
        .unwrap_or(&text);
    let message: serde_json::Value = serde_json::from_str(data).map_err(|e| e.to_string())?;
    match message["result"]["content"][0]["text"].as_str() {
        Some(text) => Ok(text.to_owned()),
        None => Err(message.to_string()),
    }
}

/// Keeps opening sessions and calling `echo` on them until `stop`, as new clients would:
/// some land on the canary. Counts the calls made.
pub(super) async fn new_clients(endpoint: String, stop: Arc<AtomicBool>, calls: Arc<AtomicU64>) {
    let mut id = 10;
    while !stop.load(Ordering::SeqCst) {
        let Ok(session) = RawSession::open(&endpoint).await else {
            continue;
        };
        for _ in 0..5 {
            id += 1;
            let _ = try_call(&session, id, "echo").await;
            calls.fetch_add(1, Ordering::SeqCst);
        }
        let _ = session
            .http
            .delete(&endpoint)
            .header("mcp-session-id", &session.id)
            .send()
            .await;
    }
}

#[test]
fn a_canary_that_fails_calls_is_aborted_and_stable_sessions_never_notice() {
    let rollout = r"      strategy: canary
      steps: [{ weight: 50, pause: 1m }]
      analysis: { interval: 1s, max_error_rate: 0.05, min_requests: 10, failure_limit: 2 }";
    let fleet = Fleet::new("canary-bad", &canary_fleet("", rollout));
    let out = fleet.up();
    assert!(out.status.success(), "{}", text(&out));
    let status = fleet.status();
    let endpoint = server(&status, "api").endpoint.clone().unwrap();
    let (_, stable_pid) = super::deploy::instance_pids(&status, "api")[0].clone();
    // Revision 2 fails one call in five.
    fleet.rewrite(&canary_fleet(r#", "--error-rate", "0.2""#, rollout));

    let runtime = tokio::runtime::Runtime::new().unwrap();
    let (deployed, stable_calls) = runtime.block_on(async {
        let stable = RawSession::open(&endpoint).await.unwrap();
        assert_eq!(
            try_call(&stable, 2, "whoami").await.unwrap(),
            format!("pid {stable_pid}")
        );
        let stop = Arc::new(AtomicBool::new(false));
        let calls = Arc::new(AtomicU64::new(0));
        let load = tokio::spawn(new_clients(endpoint.clone(), stop.clone(), calls.clone()));
        // A client that stays on the stable revision the whole time.
        let stable_stop = stop.clone();
        let stable_load = tokio::spawn(async move {
            let mut made = 0u64;
            while !stable_stop.load(Ordering::SeqCst) {
                made += 1;
                let answer = try_call(&stable, 100 + made, "whoami").await;
                assert_eq!(
                    answer,
                    Ok(format!("pid {stable_pid}")),
                    "call {made} on the stable session"
                );
            }
            made
        });
        let deploy = fleet.deploy_in_background();
        let deployed = tokio::task::spawn_blocking(move || deploy.join().unwrap())
            .await
            .unwrap();
        stop.store(true, Ordering::SeqCst);
        load.await.unwrap();
        (deployed, stable_load.await.unwrap())
    });
    assert_eq!(deployed.status.code(), Some(1), "{}", text(&deployed));
    assert!(stable_calls > 0);
    let stderr = String::from_utf8_lossy(&deployed.stderr);
    assert!(stderr.contains("analysis failed"), "says why: {stderr}");

    let after = fleet.status();
    let api = server(&after, "api");
    assert_eq!(api.revision, Some(1), "{after:#?}");
    assert_eq!(
        api.traffic,
        vec![fleet_api::types::RevisionWeight {
            revision: 1,
            weight: 100
        }]
    );
    assert!(api.instances.iter().all(|i| i.revision == 1), "{after:#?}");
    assert!(api.rollout.is_none());
    let events = events(&fleet);
    let alerts: Vec<_> = events
        .iter()
        .filter(|e| e.kind == EventKind::PerformanceAlert)
        .collect();
    assert!(alerts.len() >= 2, "{events:#?}");
    assert!(
        alerts
            .iter()
            .all(|e| e.revision == Some(2) && e.message.contains("error rate"))
    );
    let abort = events
        .iter()
        .find(|e| e.kind == EventKind::RollbackStarted)
        .expect("the abort is an event");
    assert!(abort.message.contains("error rate"), "{abort:?}");
    assert!(abort.deployment.is_some(), "{abort:?}");
    let metrics = String::from_utf8(fleet.mcpfleet(&["metrics"]).stdout).unwrap();
    assert!(
        metrics.contains(r#"mcpfleet_rollbacks_total{server="api",reason="analysis"} 1"#),
        "{metrics}"
    );
}

#[test]
fn a_healthy_canary_goes_through_its_steps_and_waits_for_promote() {
    // This test is about steps and promote. Millisecond latencies of two revisions
    // on a loaded 2-core machine differ by more than 1.25× by chance: latency is not
    // judged here (a p95 regression has its own tests in the engine).
    let rollout = r"      strategy: canary
      steps: [{ weight: 30, pause: 1s }, { weight: 60, pause: {} }]
      analysis: { interval: 300ms, min_requests: 3, max_latency_p95_ratio: 1000 }";
    let fleet = Fleet::new("canary-good", &canary_fleet("", rollout));
    let out = fleet.up();
    assert!(out.status.success(), "{}", text(&out));
    let endpoint = server(&fleet.status(), "api").endpoint.clone().unwrap();
    fleet.rewrite(&canary_fleet(r#", "--name", "v2""#, rollout));

    let runtime = tokio::runtime::Runtime::new().unwrap();
    let stop = Arc::new(AtomicBool::new(false));
    let calls = Arc::new(AtomicU64::new(0));
    let load = runtime.spawn(new_clients(endpoint, stop.clone(), calls.clone()));
    let deploy = fleet.deploy_in_background();

    let waiting = fleet.wait_for(
        "the second step waits for promote",
        Duration::from_secs(30),
        |s| {
            server(s, "api")
                .rollout
                .as_ref()
                .is_some_and(|r| r.step == 2 && r.state == RolloutState::WaitingForPromote)
        },
    );
    let rollout_now = server(&waiting, "api").rollout.clone().unwrap();
    assert_eq!(
        (
            rollout_now.from_revision,
            rollout_now.to_revision,
            rollout_now.weight
        ),
        (1, 2, 60)
    );
    // Passing intervals do not end a `pause: {}` step: only promote does.
    let first = rollout_now.last_analysis.as_ref().map(|a| a.at.clone());
    let later = fleet.wait_for(
        "two more analysis intervals pass",
        Duration::from_secs(30),
        |s| {
            let rollout = server(s, "api").rollout.as_ref();
            let at = rollout
                .and_then(|r| r.last_analysis.as_ref())
                .map(|a| a.at.clone());
            at.is_some()
                && at != first
                && rollout.is_some_and(|r| {
                    r.last_analysis
                        .as_ref()
                        .is_some_and(|a| a.verdict == Verdict::Pass)
                })
        },
    );
    assert_eq!(
        server(&later, "api").rollout.as_ref().unwrap().state,
        RolloutState::WaitingForPromote
    );
    assert!(!deploy.is_finished());

    let promoted = fleet.mcpfleet(&["promote", "api"]);
    assert!(promoted.status.success(), "{}", text(&promoted));
    let deployed = deploy.join().unwrap();
    stop.store(true, Ordering::SeqCst);
    runtime.block_on(load).unwrap();
    assert!(deployed.status.success(), "{}", text(&deployed));
    let after = fleet.status();
    let api = server(&after, "api");
    assert_eq!(api.revision, Some(2), "{after:#?}");
    assert!(api.traffic.contains(&fleet_api::types::RevisionWeight {
        revision: 2,
        weight: 100
    }));
    let steps: Vec<String> = events(&fleet)
        .into_iter()
        .filter(|e| e.kind == EventKind::RolloutStep)
        .map(|e| e.message)
        .collect();
    assert_eq!(steps.len(), 2, "{steps:?}");
    assert!(
        steps[0].starts_with("step 1/2: 30%") && steps[1].starts_with("step 2/2: 60%"),
        "{steps:?}"
    );

    // Nothing to steer any more.
    let late = fleet.mcpfleet(&["promote", "api"]);
    assert_eq!(late.status.code(), Some(1), "{}", text(&late));
    assert!(String::from_utf8_lossy(&late.stderr).contains("no rollout in progress"));
}

#[test]
fn an_aborted_canary_drains_under_the_default_on_failure_and_counts_one_rollback() {
    let rollout = r"      strategy: canary
      steps: [{ weight: 100, pause: {} }]
      on_abort: drain
      rollback_window: 10m";
    let fleet = Fleet::new("canary-drain", &canary_fleet("", rollout));
    let out = fleet.up();
    assert!(out.status.success(), "{}", text(&out));
    let endpoint = server(&fleet.status(), "api").endpoint.clone().unwrap();
    fleet.rewrite(&canary_fleet(r#", "--name", "v2""#, rollout));
    let deploy = fleet.deploy_in_background();
    let waiting = wait_for_promote(&fleet);
    let canary_pid = super::deploy::instance_pids(&waiting, "api")
        .into_iter()
        .find(|(id, _)| id.contains("-r2-"))
        .map(|(_, pid)| pid)
        .unwrap();

    let runtime = tokio::runtime::Runtime::new().unwrap();
    let session = runtime.block_on(RawSession::open(&endpoint)).unwrap();
    let on_canary = runtime.block_on(try_call(&session, 2, "whoami"));
    assert_eq!(on_canary, Ok(format!("pid {canary_pid}")));

    let aborted = fleet.mcpfleet(&["abort", "api"]);
    assert!(aborted.status.success(), "{}", text(&aborted));
    let deployed = deploy.join().unwrap();
    assert_eq!(deployed.status.code(), Some(1), "{}", text(&deployed));

    // `on_abort: drain`: the session on the canary keeps working, new ones reach stable.
    assert_eq!(
        runtime.block_on(try_call(&session, 3, "whoami")),
        Ok(format!("pid {canary_pid}")),
        "the canary's session was ended instead of drained"
    );
    let after = fleet.status();
    let api = server(&after, "api");
    assert_eq!(api.revision, Some(1), "{after:#?}");
    assert!(
        api.instances.iter().any(|i| i.pid == Some(canary_pid)),
        "the draining canary was stopped: {after:#?}"
    );
    let fresh = runtime.block_on(RawSession::open(&endpoint)).unwrap();
    assert_ne!(
        runtime.block_on(try_call(&fresh, 2, "whoami")),
        Ok(format!("pid {canary_pid}"))
    );
    let metrics = String::from_utf8(fleet.mcpfleet(&["metrics"]).stdout).unwrap();
    assert!(
        metrics.contains(r#"mcpfleet_rollbacks_total{server="api",reason="abort"} 1"#),
        "{metrics}"
    );
    assert!(
        !metrics.contains(r#"reason="failed_update""#),
        "the abort was counted twice: {metrics}"
    );
}

#[test]
fn down_during_a_canary_records_the_deployment_as_ended() {
    let rollout = r"      strategy: canary
      steps: [{ weight: 50, pause: {} }]";
    let fleet = Fleet::new("canary-down", &canary_fleet("", rollout));
    let out = fleet.up();
    assert!(out.status.success(), "{}", text(&out));
    fleet.rewrite(&canary_fleet(r#", "--name", "v2""#, rollout));
    let deploy = fleet.deploy_in_background();
    wait_for_promote(&fleet);
    let down = fleet.mcpfleet(&["down"]);
    assert!(down.status.success(), "{}", text(&down));
    let _ = deploy.join().unwrap();

    // The next start finds nothing to recover: the deployment's end is on record.
    let again = fleet.up();
    assert!(again.status.success(), "{}", text(&again));
    let events = events(&fleet);
    assert!(
        !events.iter().any(|e| e.kind == EventKind::Recovered),
        "{events:#?}"
    );
    let history = fleet.mcpfleet(&["history"]);
    let history = text(&history);
    assert!(
        history.contains("the control plane is stopping"),
        "{history}"
    );
}

#[test]
fn a_rollback_window_running_out_leaves_a_later_canary_alone() {
    let fleet_with = |args: &str, strategy: &str| canary_fleet(args, strategy);
    let blue_green = "      strategy: blue-green\n      rollback_window: 2s";
    let canary = "      strategy: canary\n      steps: [{ weight: 50, pause: {} }]";
    let fleet = Fleet::new("canary-after-window", &fleet_with("", blue_green));
    let out = fleet.up();
    assert!(out.status.success(), "{}", text(&out));
    // Revision 2 by blue-green: revision 1 drains for 2 s.
    fleet.rewrite(&fleet_with(r#", "--name", "v2""#, blue_green));
    let deployed = fleet.mcpfleet(&["deploy"]);
    assert!(deployed.status.success(), "{}", text(&deployed));
    // Revision 3 by canary, within revision 1's window.
    fleet.rewrite(&fleet_with(r#", "--name", "v3""#, canary));
    let deploy = fleet.deploy_in_background();
    let gone = fleet.wait_for(
        "revision 1 stops when its window runs out",
        Duration::from_secs(30),
        |s| {
            let api = server(s, "api");
            api.rollout.is_some() && api.instances.iter().all(|i| i.revision != 1)
        },
    );
    let api = server(&gone, "api");
    assert_eq!(
        api.traffic,
        vec![
            fleet_api::types::RevisionWeight {
                revision: 2,
                weight: 50
            },
            fleet_api::types::RevisionWeight {
                revision: 3,
                weight: 50
            },
        ],
        "{gone:#?}"
    );
    assert_eq!(
        api.rollout.as_ref().unwrap().state,
        RolloutState::WaitingForPromote
    );
    let promoted = fleet.mcpfleet(&["promote", "api"]);
    assert!(promoted.status.success(), "{}", text(&promoted));
    let deployed = deploy.join().unwrap();
    assert!(deployed.status.success(), "{}", text(&deployed));
    assert_eq!(server(&fleet.status(), "api").revision, Some(3));
}
