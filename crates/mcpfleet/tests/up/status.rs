//! What `plan` and `status` tell about a real fleet: the diff against what is deployed
//! (running or stopped), a rollout in progress, one row per instance, and why `up -d`
//! failed.

use super::*;

/// Two stdio servers; `b` runs with extra `ARGS`.
fn two_servers(args: &str) -> String {
    format!(
        r#"
version: 1
name: planned
servers:
  a:
    stdio: {{ command: SAMPLE }}
  b:
    stdio: {{ command: SAMPLE, args: [{args}] }}
"#
    )
    .replace("SAMPLE", &sample())
        + "\ngateway:\n  listen: 127.0.0.1:0\n"
}

/// The plan's line for `server`, marker included.
fn plan_line<'a>(plan: &'a str, server: &str) -> &'a str {
    plan.lines()
        .find(|l| {
            l.get(4..)
                .is_some_and(|rest| rest.starts_with(&format!("{server} ")))
        })
        .unwrap_or_else(|| panic!("no line for `{server}` in:\n{plan}"))
}

fn assert_only_b_is_updated(out: &Output, when: &str) {
    assert!(out.status.success(), "{when}: {}", text(out));
    let plan = String::from_utf8_lossy(&out.stdout);
    assert!(
        !plan.contains("everything is new"),
        "{when}: the plan ignores what is deployed:\n{plan}"
    );
    assert!(
        plan_line(&plan, "b").starts_with("  ~ b"),
        "{when}: the edited server is not an update:\n{plan}"
    );
    assert!(
        plan_line(&plan, "a").starts_with("    a"),
        "{when}: the unchanged server is marked:\n{plan}"
    );
    assert!(
        plan.contains("0 to create, 1 to update, 0 to delete, 1 unchanged"),
        "{when}: {plan}"
    );
}

#[test]
fn plan_after_an_edit_marks_only_the_edited_server_whether_the_fleet_runs_or_not() {
    let fleet = Fleet::new("plan-diff", &two_servers(""));
    let out = fleet.up();
    assert!(out.status.success(), "{}", text(&out));
    fleet.rewrite(&two_servers(r#""--name", "edited""#));

    assert_only_b_is_updated(&fleet.mcpfleet(&["plan"]), "running");
    let down = fleet.mcpfleet(&["down"]);
    assert!(down.status.success(), "{}", text(&down));
    assert_only_b_is_updated(&fleet.mcpfleet(&["plan"]), "down (read from the store)");
}

#[test]
fn plan_without_a_deployment_says_everything_is_new() {
    let fleet = Fleet::new("plan-new", &two_servers(""));
    let out = fleet.mcpfleet(&["plan"]);
    assert!(out.status.success(), "{}", text(&out));
    let plan = String::from_utf8_lossy(&out.stdout);
    assert!(plan.contains("everything is new"), "{plan}");
    assert!(plan_line(&plan, "a").starts_with("  + a"), "{plan}");
}

#[test]
fn status_text_during_a_canary_shows_strategy_step_weights_and_the_last_verdict() {
    use super::canary::{canary_fleet, wait_for_promote};
    let rollout = r"      strategy: canary
      steps: [{ weight: 50, pause: {} }]
      analysis: { interval: 200ms, min_requests: 1 }";
    let fleet = Fleet::new("status-canary", &canary_fleet("", rollout));
    let out = fleet.up();
    assert!(out.status.success(), "{}", text(&out));
    fleet.rewrite(&canary_fleet(r#", "--name", "v2""#, rollout));
    let deploy = fleet.deploy_in_background();
    wait_for_promote(&fleet);
    let analysed = fleet.wait_for("an analysis is shown", Duration::from_secs(30), |s| {
        server(s, "api")
            .rollout
            .as_ref()
            .is_some_and(|r| r.last_analysis.is_some())
    });
    let verdict = server(&analysed, "api")
        .rollout
        .as_ref()
        .and_then(|r| r.last_analysis.as_ref())
        .map(|a| a.verdict)
        .unwrap();

    let out = fleet.mcpfleet(&["status"]);
    assert!(out.status.success(), "{}", text(&out));
    let shown = String::from_utf8_lossy(&out.stdout);
    let api = shown
        .lines()
        .find(|l| l.starts_with("api "))
        .unwrap_or_else(|| panic!("no row for api:\n{shown}"));
    assert!(
        api.split_whitespace().nth(3) == Some("1"),
        "the REV column does not show the stable revision:\n{shown}"
    );
    for expected in [
        "rollout canary r1→r2: step 1/1, waiting-for-promote",
        "weights: r1 50%, r2 50%",
        &format!("last analysis: {verdict} ("),
        " requests, errors ",
    ] {
        assert!(shown.contains(expected), "no {expected:?} in:\n{shown}");
    }
    let aborted = fleet.mcpfleet(&["abort", "api"]);
    assert!(aborted.status.success(), "{}", text(&aborted));
    let _ = deploy.join().unwrap();
}

#[test]
fn status_wide_lists_one_row_per_instance() {
    let yaml = format!(
        r#"
version: 1
name: wide
servers:
  web:
    http:
      command: {}
      args: ["--transport", "http", "--port", "{{{{ port }}}}"]
    replicas: 2
"#,
        sample()
    );
    let fleet = Fleet::new("status-wide", &yaml);
    let out = fleet.up();
    assert!(out.status.success(), "{}", text(&out));
    let status = fleet.status();
    let instances = &server(&status, "web").instances;
    assert_eq!(instances.len(), 2, "{status:#?}");

    let out = fleet.mcpfleet(&["status", "-w"]);
    assert!(out.status.success(), "{}", text(&out));
    let shown = String::from_utf8_lossy(&out.stdout);
    assert!(shown.contains("INSTANCE"), "no instance table:\n{shown}");
    for instance in instances {
        let row = shown
            .lines()
            .find(|l| l.starts_with(&format!("{} ", instance.id)))
            .unwrap_or_else(|| panic!("no row for {}:\n{shown}", instance.id));
        let pid = instance.pid.unwrap().to_string();
        let port = instance.port.unwrap().to_string();
        let columns: Vec<&str> = row.split_whitespace().collect();
        assert_eq!(
            &columns[1..6],
            &["1", pid.as_str(), "ready", "0", port.as_str()],
            "{row}"
        );
    }
    let narrow = fleet.mcpfleet(&["status"]);
    assert!(
        !String::from_utf8_lossy(&narrow.stdout).contains("INSTANCE"),
        "{}",
        text(&narrow)
    );
}

#[test]
fn up_detached_that_cannot_start_prints_the_reason_on_the_terminal() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = taken.local_addr().unwrap().port();
    let yaml = format!(
        "version: 1\nname: unstartable\nservers:\n  a:\n    stdio: {{ command: SAMPLE }}\ngateway:\n  listen: 127.0.0.1:{port}\n"
    );
    let fleet = Fleet::new("up-reason", &yaml);
    let out = fleet.up();
    assert!(!out.status.success(), "{}", text(&out));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains(&format!("cannot listen on 127.0.0.1:{port}")) && stderr.contains("in use"),
        "the reason is only in the log:\n{stderr}"
    );
    drop(taken);
}
