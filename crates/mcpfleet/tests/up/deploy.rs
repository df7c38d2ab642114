//! `mcpfleet deploy` against a running fleet: revisions, strategies, failed updates.

use super::*;

/// The fleet file of the deploy tests: `api` (http, blue-green) with `API_ARGS` extra
/// arguments, `keep` (stdio, never changed) and `EXTRA` servers.
fn deploy_fleet(api_args: &str, extra: &str) -> String {
    format!(
        r#"
version: 1
name: deploys
servers:
  api:
    http:
      command: SAMPLE
      args: ["--transport", "http", "--port", "{{{{ port }}}}", "--tools", "echo,whoami"{api_args}]
    health:
      mcp: {{ expect_tools: [echo, whoami] }}
    rollout: {{ strategy: blue-green, rollback_window: 3s }}
  keep:
    stdio: {{ command: SAMPLE, args: ["--transport", "stdio"] }}
{extra}"#
    )
}

pub(super) fn instance_pids(status: &Status, server_name: &str) -> Vec<(String, u32)> {
    server(status, server_name)
        .instances
        .iter()
        .filter_map(|i| Some((i.id.clone(), i.pid?)))
        .collect()
}

#[test]
fn deploy_updates_blue_green_keeps_unchanged_servers_and_deletes_removed_ones() {
    let extra = r#"  gone:
    stdio: { command: SAMPLE, args: ["--transport", "stdio", "--name", "gone-MARKER"] }
"#;
    let marker = format!("deploy-bg-{}", std::process::id());
    let fleet = Fleet::new(
        "deploy-bg",
        &deploy_fleet("", &extra.replace("MARKER", &marker)),
    );
    let out = fleet.up();
    assert!(out.status.success(), "{}", text(&out));
    let before = fleet.status();
    assert_eq!(server(&before, "api").revision, Some(1));
    let keep_before = instance_pids(&before, "keep");
    let (_, blue) = instance_pids(&before, "api")[0].clone();
    // Its probe instance and a warm session process.
    assert!(!processes_with(&format!("gone-{marker}")).is_empty());
    let endpoint = server(&before, "api").endpoint.clone().unwrap();

    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let old_session = runtime.block_on(RawSession::open(&endpoint)).unwrap();
    assert_eq!(
        runtime.block_on(old_session.call(2, "whoami", serde_json::json!({}))),
        format!("pid {blue}")
    );

    // A changed `api`, the same `keep`, no `gone`.
    std::fs::write(
        fleet.dir.join("mcpfleet.yaml"),
        deploy_fleet(r#", "--name", "green""#, "").replace("SAMPLE", &sample())
            + "\ngateway:\n  listen: 127.0.0.1:0\n",
    )
    .unwrap();
    let plan = fleet.mcpfleet(&["plan"]);
    let deployed = fleet.mcpfleet(&["deploy", "--reason", "rename api"]);
    assert!(deployed.status.success(), "{}", text(&deployed));
    let after = fleet.status();
    let api = server(&after, "api");
    assert_eq!(api.revision, Some(2), "{after:#?}");
    assert_eq!(api.state, ServerState::Ready);
    assert!(after.servers.iter().all(|s| s.name != "gone"), "{after:#?}");
    assert!(processes_with(&format!("gone-{marker}")).is_empty());
    assert_eq!(
        instance_pids(&after, "keep"),
        keep_before,
        "keep was not touched"
    );
    let green = instance_pids(&after, "api")
        .into_iter()
        .find(|(id, _)| id.contains("-r2-"))
        .map(|(_, pid)| pid)
        .expect("a revision 2 instance");
    let stderr = String::from_utf8_lossy(&deployed.stderr);
    assert!(
        stderr.contains("~ api"),
        "the plan shows the update: {stderr}"
    );
    assert!(
        stderr.contains("- gone"),
        "the plan shows the delete: {stderr}"
    );
    drop(plan);

    runtime.block_on(async {
        // New sessions reach green; the old one drains on blue through the window.
        let new_session = RawSession::open(&endpoint).await.unwrap();
        assert_eq!(
            new_session.call(2, "whoami", serde_json::json!({})).await,
            format!("pid {green}")
        );
        assert_eq!(
            old_session.call(3, "whoami", serde_json::json!({})).await,
            format!("pid {blue}")
        );
        // After the rollback window blue is stopped and its session ends.
        wait_until_gone(blue).await;
        let response = post(
            &old_session.http,
            &endpoint,
            Some(&old_session.id),
            r#"{"jsonrpc":"2.0","id":4,"method":"tools/list"}"#,
        )
        .await;
        assert_eq!(response.status(), 404);
    });
    let kinds: Vec<EventKind> = events(&fleet).iter().map(|e| e.kind).collect();
    assert_eq!(
        kinds
            .iter()
            .filter(|k| **k == EventKind::DeploymentCompleted)
            .count(),
        2,
        "{kinds:?}"
    );
}

#[test]
fn a_revision_that_fails_its_checks_leaves_the_old_one_serving() {
    let fleet = Fleet::new("deploy-fail", &deploy_fleet("", ""));
    let out = fleet.up();
    assert!(out.status.success(), "{}", text(&out));
    let before = instance_pids(&fleet.status(), "api");

    // `whoami` is expected but no longer offered: revision 2 never becomes ready.
    std::fs::write(
        fleet.dir.join("mcpfleet.yaml"),
        deploy_fleet("", "")
            .replace(r#""echo,whoami""#, r#""echo""#)
            .replace("SAMPLE", &sample())
            + "\ngateway:\n  listen: 127.0.0.1:0\n",
    )
    .unwrap();
    let deployed = fleet.mcpfleet(&["deploy"]);
    assert_eq!(deployed.status.code(), Some(1), "{}", text(&deployed));
    let stderr = String::from_utf8_lossy(&deployed.stderr);
    assert!(stderr.contains("whoami"), "says why: {stderr}");
    let after = fleet.status();
    let api = server(&after, "api");
    assert_eq!(
        (api.revision, api.state),
        (Some(1), ServerState::Ready),
        "{after:#?}"
    );
    assert_eq!(
        instance_pids(&after, "api"),
        before,
        "revision 1 kept running"
    );
    assert!(after.deployment.state != fleet_api::types::DeploymentState::Succeeded);

    // Deploying the same failing file again is a new attempt of the same revision 2.
    let unchanged = fleet.mcpfleet(&["deploy"]);
    assert_eq!(unchanged.status.code(), Some(1), "{}", text(&unchanged));
}
