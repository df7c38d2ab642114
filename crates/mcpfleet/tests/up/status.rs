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
