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
    fleet.rewrite(
        &(deploy_fleet(r#", "--name", "green""#, "").replace("SAMPLE", &sample())
            + "\ngateway:\n  listen: 127.0.0.1:0\n"),
    );
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
    fleet.rewrite(
        &(deploy_fleet("", "")
            .replace(r#""echo,whoami""#, r#""echo""#)
            .replace("SAMPLE", &sample())
            + "\ngateway:\n  listen: 127.0.0.1:0\n"),
    );
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

/// Reads `whoami` through a fresh session: the pid of the instance new sessions reach.
pub(super) async fn new_session_pid(endpoint: &str) -> String {
    let session = RawSession::open(endpoint).await.unwrap();
    let pid = session.call(2, "whoami", serde_json::json!({})).await;
    session.close().await;
    pid
}

#[test]
fn blue_green_serves_green_only_once_ready_and_rolls_back_by_a_route_swap() {
    let fleet = Fleet::new("deploy-rollback", &deploy_fleet("", ""));
    let out = fleet.up();
    assert!(out.status.success(), "{}", text(&out));
    let before = fleet.status();
    let endpoint = server(&before, "api").endpoint.clone().unwrap();
    let (_, blue) = instance_pids(&before, "api")[0].clone();

    // Green takes a while to start: until it passes its checks, new sessions reach blue.
    fleet.rewrite(
        &(deploy_fleet(r#", "--startup-delay", "1500ms""#, "").replace("SAMPLE", &sample())
            + "\ngateway:\n  listen: 127.0.0.1:0\n"),
    );
    let deploy = fleet.deploy_in_background();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    fleet.wait_for("green is starting", Duration::from_secs(20), |s| {
        server(s, "api").instances.iter().any(|i| i.revision == 2)
    });
    let mut during = 0;
    while !deploy.is_finished() {
        let reached = runtime.block_on(new_session_pid(&endpoint));
        if reached != format!("pid {blue}") {
            // Only once the route table has swapped (green passed its checks).
            let swapped = server(&fleet.status(), "api").traffic.contains(
                &fleet_api::types::RevisionWeight {
                    revision: 2,
                    weight: 100,
                },
            );
            assert!(
                swapped,
                "a new session reached green ({reached}) before it was ready"
            );
            break;
        }
        during += 1;
    }
    assert!(during > 0, "no session was opened while green started");
    let deployed = deploy.join().unwrap();
    assert!(deployed.status.success(), "{}", text(&deployed));
    let green = instance_pids(&fleet.status(), "api")
        .into_iter()
        .find(|(id, _)| id.contains("-r2-"))
        .map(|(_, pid)| pid)
        .unwrap();
    assert_eq!(
        runtime.block_on(new_session_pid(&endpoint)),
        format!("pid {green}")
    );

    // Within the rollback window blue still runs: going back starts nothing.
    let rolled = fleet.mcpfleet(&["rollback", "api", "--reason", "green misbehaves"]);
    assert!(rolled.status.success(), "{}", text(&rolled));
    let after = fleet.status();
    let api = server(&after, "api");
    assert_eq!(api.revision, Some(1), "{after:#?}");
    let pids: Vec<u32> = instance_pids(&after, "api")
        .into_iter()
        .map(|(_, p)| p)
        .collect();
    assert!(
        pids.contains(&blue) && pids.contains(&green),
        "{pids:?}: nothing restarted"
    );
    assert_eq!(
        runtime.block_on(new_session_pid(&endpoint)),
        format!("pid {blue}")
    );
    let events = events(&fleet);
    assert!(
        !events.iter().any(|e| e.kind == EventKind::ServerStarting
            && e.message.starts_with("starting")
            && e.revision == Some(1)
            && e.deployment.unwrap_or(0) > 2),
        "{events:#?}"
    );
    // And it says so: a swap, not the server's strategy.
    let rollback_event = events
        .iter()
        .rfind(|e| e.message.starts_with("updating from revision 2 to 1"))
        .unwrap_or_else(|| panic!("{events:#?}"));
    assert!(
        rollback_event
            .message
            .ends_with("(route swap: it still runs)"),
        "{rollback_event:?}"
    );

    let metrics = String::from_utf8(fleet.mcpfleet(&["metrics"]).stdout).unwrap();
    assert!(
        metrics.contains(r#"mcpfleet_rollbacks_total{server="api",reason="command"} 1"#),
        "{metrics}"
    );

    // A second rollback undoes the first (like `kubectl rollout undo`): green again, still
    // running, so again a swap.
    let again = fleet.mcpfleet(&["rollback", "api"]);
    assert!(again.status.success(), "{}", text(&again));
    assert_eq!(server(&fleet.status(), "api").revision, Some(2));
    assert_eq!(
        runtime.block_on(new_session_pid(&endpoint)),
        format!("pid {green}")
    );

    // `keep` never had another revision.
    let none = fleet.mcpfleet(&["rollback", "keep"]);
    assert_eq!(none.status.code(), Some(1), "{}", text(&none));
    assert!(
        String::from_utf8_lossy(&none.stderr).contains("no earlier revision"),
        "{}",
        text(&none)
    );
}

#[test]
fn rolling_back_the_fleet_restarts_the_previous_revision_after_a_recreate() {
    let recreate = |extra: &str| {
        deploy_fleet(extra, "")
            .replace(
                "strategy: blue-green, rollback_window: 3s",
                "strategy: recreate",
            )
            .replace("SAMPLE", &sample())
            + "\ngateway:\n  listen: 127.0.0.1:0\n"
    };
    let fleet = Fleet::new(
        "deploy-fleet-rollback",
        "version: 1\nname: x\nservers: {}\n",
    );
    fleet.rewrite(&recreate(""));
    let out = fleet.up();
    assert!(out.status.success(), "{}", text(&out));
    let (_, first) = instance_pids(&fleet.status(), "api")[0].clone();
    fleet.rewrite(&recreate(r#", "--name", "two""#));
    let deployed = fleet.mcpfleet(&["deploy"]);
    assert!(deployed.status.success(), "{}", text(&deployed));
    assert!(!alive(first), "recreate stopped revision 1");

    let rolled = fleet.mcpfleet(&["rollback"]);
    assert!(rolled.status.success(), "{}", text(&rolled));
    let after = fleet.status();
    assert_eq!(server(&after, "api").revision, Some(1), "{after:#?}");
    let endpoint = server(&after, "api").endpoint.clone().unwrap();
    let (id, pid) = instance_pids(&after, "api")[0].clone();
    assert!(id.contains("-r1-"), "{id}");
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    assert_eq!(
        runtime.block_on(new_session_pid(&endpoint)),
        format!("pid {pid}")
    );

    let bad = fleet.mcpfleet(&["rollback", "--to", "99"]);
    assert_eq!(bad.status.code(), Some(1), "{}", text(&bad));
    assert!(
        String::from_utf8_lossy(&bad.stderr).contains("no fleet revision 99"),
        "{}",
        text(&bad)
    );
}

#[test]
fn a_rolling_update_keeps_enough_replicas_ready_and_never_too_many_running() {
    let rolling = |extra: &str| {
        format!(
            r#"
version: 1
name: rolling
servers:
  api:
    http:
      command: SAMPLE
      args: ["--transport", "http", "--port", "{{{{ port }}}}"{extra}]
    replicas: 4
    rollout: {{ strategy: rolling, max_surge: 1, max_unavailable: 1 }}
gateway:
  listen: 127.0.0.1:0
"#
        )
        .replace("SAMPLE", &sample())
    };
    let fleet = Fleet::new("deploy-rolling", "version: 1\nname: x\nservers: {}\n");
    fleet.rewrite(&rolling(""));
    let out = fleet.up();
    assert!(out.status.success(), "{}", text(&out));
    fleet.rewrite(&rolling(r#", "--name", "two", "--startup-delay", "200ms""#));
    let deploy = fleet.deploy_in_background();
    let (mut fewest_ready, mut most_running, mut polls) = (usize::MAX, 0, 0);
    while !deploy.is_finished() {
        let status = fleet.status();
        let instances = &server(&status, "api").instances;
        let ready = instances
            .iter()
            .filter(|i| i.state == ServerState::Ready)
            .count();
        let running = instances
            .iter()
            .filter(|i| i.pid.is_some_and(alive))
            .count();
        fewest_ready = fewest_ready.min(ready);
        most_running = most_running.max(running);
        polls += 1;
    }
    let deployed = deploy.join().unwrap();
    assert!(deployed.status.success(), "{}", text(&deployed));
    assert!(polls > 5, "only {polls} looks during the update");
    assert!(
        fewest_ready >= 3,
        "{fewest_ready} ready: below replicas - max_unavailable"
    );
    assert!(
        most_running <= 5,
        "{most_running} running: above replicas + max_surge"
    );
    let after = fleet.status();
    let api = server(&after, "api");
    assert_eq!(api.revision, Some(2));
    assert_eq!(api.instances.len(), 4, "{after:#?}");
    assert!(
        api.instances
            .iter()
            .all(|i| i.revision == 2 && i.state == ServerState::Ready)
    );
}

#[test]
fn deploy_watch_deploys_every_saved_change() {
    let fleet = Fleet::new("deploy-watch", &deploy_fleet("", ""));
    let out = fleet.up();
    assert!(out.status.success(), "{}", text(&out));
    let write = |args: &str| {
        fleet.rewrite(
            &(deploy_fleet(args, "").replace("SAMPLE", &sample())
                + "\ngateway:\n  listen: 127.0.0.1:0\n"),
        );
    };
    let mut watch = Command::new(env!("CARGO_BIN_EXE_mcpfleet"))
        .args(["deploy", "--watch", "--state-dir"])
        .arg(fleet.state_dir())
        .current_dir(&fleet.dir)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    write(r#", "--name", "two""#);
    fleet.wait_for("revision 2 serves", Duration::from_secs(30), |s| {
        server(s, "api").revision == Some(2)
    });
    // An invalid save in between does not end the watch; the next good one deploys.
    fleet.rewrite("version: 1\nname: deploys\nservers: [oops\n");
    write(r#", "--name", "three""#);
    fleet.wait_for("revision 3 serves", Duration::from_secs(30), |s| {
        server(s, "api").revision == Some(3)
    });
    assert!(watch.try_wait().unwrap().is_none(), "still watching");
    watch.kill().unwrap();
    watch.wait().unwrap();
}

#[test]
fn history_events_and_audit_are_read_from_the_store_once_the_fleet_is_down() {
    let fleet = Fleet::new("record-after-down", &deploy_fleet("", ""));
    let out = fleet.up();
    assert!(out.status.success(), "{}", text(&out));
    let endpoint = server(&fleet.status(), "api").endpoint.clone().unwrap();
    // The last thing before `down`: a tool call the audit must not lose.
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let pid = runtime.block_on(new_session_pid(&endpoint));
    assert!(pid.starts_with("pid "), "{pid}");
    let down = fleet.mcpfleet(&["down"]);
    assert!(down.status.success(), "{}", text(&down));

    let history = fleet.mcpfleet(&["history", "--output", "json"]);
    assert!(history.status.success(), "{}", text(&history));
    let history: Vec<fleet_api::types::HistoryEntry> =
        serde_json::from_slice(&history.stdout).unwrap();
    assert_eq!(history.len(), 1, "{history:?}");
    assert_eq!(history[0].state, DeploymentState::Succeeded);

    let revisions = fleet.mcpfleet(&["history", "api", "--output", "json"]);
    assert!(revisions.status.success(), "{}", text(&revisions));
    let unknown = fleet.mcpfleet(&["history", "nope"]);
    assert_eq!(unknown.status.code(), Some(1), "{}", text(&unknown));
    assert!(
        text(&unknown).contains("no server `nope`"),
        "{}",
        text(&unknown)
    );

    let events = fleet.mcpfleet(&["events", "--output", "json"]);
    assert!(events.status.success(), "{}", text(&events));
    let kinds: Vec<String> = String::from_utf8_lossy(&events.stdout)
        .lines()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap()["kind"].to_string())
        .collect();
    assert!(
        kinds.contains(&"\"deployment_completed\"".to_string()),
        "{kinds:?}"
    );
    assert!(
        kinds.contains(&"\"server_stopped\"".to_string()),
        "{kinds:?}"
    );

    let audit = fleet.mcpfleet(&["audit", "--output", "json"]);
    assert!(audit.status.success(), "{}", text(&audit));
    let audit: Vec<fleet_api::types::AuditEntry> = serde_json::from_slice(&audit.stdout).unwrap();
    assert!(
        audit
            .iter()
            .any(|a| a.server == "api" && a.tool == "whoami"),
        "{audit:?}"
    );
}

#[test]
fn a_deploy_that_changes_only_gateway_settings_applies_limits_live_and_refuses_a_new_listener() {
    let servers = r#"
version: 1
name: gateway-only
servers:
  api:
    stdio: { command: SAMPLE, args: ["--transport", "stdio", "--tools", "echo"] }
"#
    .replace("SAMPLE", &sample());
    let file = |gateway: &str| format!("{servers}gateway:\n  listen: 127.0.0.1:0\n{gateway}");
    let fleet = Fleet::new("deploy-gateway-only", &file(""));
    let out = fleet.up();
    assert!(out.status.success(), "{}", text(&out));
    assert!(
        events(&fleet)
            .iter()
            .any(|e| e.message == "deploying 1 server in 1 wave"),
        "{:#?}",
        events(&fleet)
    );
    let endpoint = server(&fleet.status(), "api").endpoint.clone().unwrap();

    // Only a limit changes: it is deployed, not "nothing to deploy", and holds at once.
    fleet.rewrite(&file("  rate_limit: { per_second: 0.01, burst: 2 }\n"));
    let deployed = fleet.mcpfleet(&["deploy"]);
    assert!(deployed.status.success(), "{}", text(&deployed));
    let stderr = String::from_utf8_lossy(&deployed.stderr);
    assert!(
        stderr.contains("gateway.rate_limit (applied without a restart)"),
        "{stderr}"
    );
    assert!(!stderr.contains("nothing to deploy"), "{stderr}");
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let statuses: Vec<u16> = runtime.block_on(async {
        let http = http_client();
        let mut statuses = Vec::new();
        for _ in 0..3 {
            let body = r#"{"jsonrpc":"2.0","id":1,"method":"initialize","params":{"protocolVersion":"2025-11-25","capabilities":{},"clientInfo":{"name":"up-test","version":"0"}}}"#;
            statuses.push(post(&http, &endpoint, None, body).await.status().as_u16());
        }
        statuses
    });
    assert_eq!(statuses, [200, 200, 429]);

    // The same file again: nothing changes.
    let again = fleet.mcpfleet(&["deploy"]);
    assert!(again.status.success(), "{}", text(&again));
    assert!(
        String::from_utf8_lossy(&again.stderr).contains("nothing to deploy"),
        "{}",
        text(&again)
    );

    // A new listen address needs a restart: refused, saying which key and what to do.
    let moved = format!("{servers}gateway:\n  listen: 127.0.0.1:1\n");
    fleet.rewrite(&moved);
    let refused = fleet.mcpfleet(&["deploy"]);
    assert_eq!(refused.status.code(), Some(1), "{}", text(&refused));
    let stderr = String::from_utf8_lossy(&refused.stderr);
    assert!(stderr.contains("gateway.listen"), "{stderr}");
    assert!(stderr.contains("mcpfleet down"), "{stderr}");

    // A file that moves the fleet to a cluster needs a control plane on that runtime:
    // refused, saying what to do, and nothing is run here.
    let on_cluster = "version: 1\nname: gateway-only\nruntime: kubernetes\nservers:\n  api:\n    http: { image: registry.example/api:1, port: 8080 }\ngateway:\n  listen: 127.0.0.1:0\n";
    fleet.rewrite(on_cluster);
    let refused = fleet.mcpfleet(&["deploy"]);
    assert_eq!(refused.status.code(), Some(1), "{}", text(&refused));
    let stderr = String::from_utf8_lossy(&refused.stderr);
    assert!(stderr.contains("`runtime` changed"), "{stderr}");
    assert!(stderr.contains("mcpfleet down"), "{stderr}");
    // And one whose servers cannot run in a cluster says why, located in the file.
    fleet.rewrite(&format!("{}runtime: kubernetes\n", file("")));
    let refused = fleet.mcpfleet(&["deploy"]);
    assert_eq!(refused.status.code(), Some(1), "{}", text(&refused));
    let stderr = String::from_utf8_lossy(&refused.stderr);
    assert!(
        stderr.contains("server `api` runs a local program")
            && stderr.contains("mcpfleet.yaml:5:3"),
        "{stderr}"
    );
    assert_eq!(server(&fleet.status(), "api").revision, Some(1));
}
