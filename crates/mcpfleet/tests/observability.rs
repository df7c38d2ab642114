//! What ships in deploy/observability/ holds up: the Prometheus alert rules pass
//! `promtool check rules`, every alert has promtool unit tests that see it fire and stay
//! quiet, and each carries a severity and a runbook; the Grafana dashboard is importable
//! with `server` and `revision` variables; every metric they read is documented. The
//! queries against a live fleet are in tests/up/observability.rs.
//!
//! promtool comes from Debian's `prometheus` package (`cargo xtask peers` installs it):
//! without it these tests fail, they never skip.

use serde_json::Value;
use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn observability(path: &str) -> PathBuf {
    root().join("deploy/observability").join(path)
}

fn read(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

fn yaml(path: &Path) -> Value {
    let mut documents = fleet_testkit::kube::parse_yaml_documents(&read(path))
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    assert_eq!(documents.len(), 1, "{}", path.display());
    documents.remove(0)
}

fn promtool(args: &[&str], dir: &Path) -> Output {
    Command::new("promtool")
        .args(args)
        .current_dir(dir)
        .output()
        .unwrap_or_else(|e| {
            panic!(
                "cannot run promtool ({e}): install Debian's prometheus package \
                 (cargo xtask peers does)"
            )
        })
}

fn text(out: &Output) -> String {
    format!(
        "exit {:?}\nstdout:\n{}\nstderr:\n{}",
        out.status.code(),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// Every alerting rule of alerts.yaml.
fn alerts() -> Vec<Value> {
    let rules = yaml(&observability("prometheus/alerts.yaml"));
    let alerts: Vec<Value> = rules["groups"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|group| group["rules"].as_array().unwrap().clone())
        .filter(|rule| rule.get("alert").is_some())
        .collect();
    assert!(!alerts.is_empty());
    alerts
}

fn dashboard() -> Value {
    serde_json::from_str(&read(&observability("grafana/mcpfleet.json"))).unwrap()
}

/// Every `mcpfleet_*` name in `expr`, with a histogram's `_bucket`/`_sum`/`_count` cut.
fn metric_names(expr: &str) -> BTreeSet<String> {
    expr.split(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
        .filter(|word| word.starts_with("mcpfleet_"))
        .map(|name| {
            ["_bucket", "_sum", "_count"]
                .iter()
                .find_map(|suffix| name.strip_suffix(suffix))
                .unwrap_or(name)
                .to_owned()
        })
        .collect()
}

#[test]
fn the_alert_rules_pass_promtool_check_rules() {
    let out = promtool(
        &["check", "rules", "alerts.yaml"],
        &observability("prometheus"),
    );
    assert!(out.status.success(), "{}", text(&out));
    let found = format!("{} rules found", alerts().len());
    assert!(
        String::from_utf8_lossy(&out.stdout).contains(&found),
        "{}",
        text(&out)
    );
}

#[test]
fn every_alert_fires_and_stays_quiet_in_promtool_unit_tests() {
    let tests = observability("prometheus/tests");
    let out = promtool(&["test", "rules", "alerts.test.yaml"], &tests);
    assert!(out.status.success(), "{}", text(&out));
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("SUCCESS"),
        "{}",
        text(&out)
    );
    // Each alert has a case where it fires and one where it does not.
    let cases: Vec<Value> = yaml(&tests.join("alerts.test.yaml"))["tests"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|test| test["alert_rule_test"].as_array().unwrap().clone())
        .collect();
    for alert in alerts() {
        let name = alert["alert"].as_str().unwrap();
        let expected = |fires: bool| {
            cases.iter().any(|case| {
                case["alertname"] == name
                    && case["exp_alerts"]
                        .as_array()
                        .is_some_and(|a| a.is_empty() != fires)
            })
        };
        assert!(expected(true), "no unit test sees {name} fire");
        assert!(expected(false), "no unit test sees {name} stay quiet");
    }
}

#[test]
fn every_alert_has_a_severity_a_summary_a_description_and_a_runbook() {
    for alert in alerts() {
        let name = alert["alert"].as_str().unwrap();
        let severity = alert["labels"]["severity"].as_str();
        assert!(
            matches!(severity, Some("critical" | "warning")),
            "{name}: severity {severity:?}"
        );
        for annotation in ["summary", "description", "runbook"] {
            let value = alert["annotations"][annotation]
                .as_str()
                .unwrap_or_default();
            assert!(!value.trim().is_empty(), "{name} has no {annotation}");
        }
        let runbook = alert["annotations"]["runbook"].as_str().unwrap();
        assert!(
            runbook.contains("`mcpfleet ") && !runbook.contains('\n'),
            "{name}: the runbook is one line naming an mcpfleet command: {runbook}"
        );
    }
}

#[test]
fn the_dashboard_is_importable_with_server_and_revision_variables() {
    let dashboard = dashboard();
    assert_eq!(dashboard["__inputs"][0]["name"], "DS_PROMETHEUS");
    assert_eq!(dashboard["__inputs"][0]["pluginId"], "prometheus");
    let variables = dashboard["templating"]["list"].as_array().unwrap();
    for name in ["server", "revision"] {
        let variable = variables
            .iter()
            .find(|v| v["name"] == name)
            .unwrap_or_else(|| panic!("no ${name} variable"));
        let query = variable["query"]["query"].as_str().unwrap();
        assert!(
            query.starts_with("label_values(") && query.ends_with(&format!(", {name})")),
            "{name}: {query}"
        );
        assert_eq!(variable["datasource"]["uid"], "${DS_PROMETHEUS}");
    }
    let panels = dashboard["panels"].as_array().unwrap();
    let ids: BTreeSet<u64> = panels.iter().map(|p| p["id"].as_u64().unwrap()).collect();
    assert_eq!(ids.len(), panels.len(), "panel ids are unique");
    let mut titles = BTreeSet::new();
    for panel in panels.iter().filter(|p| p["type"] != "row") {
        let title = panel["title"].as_str().unwrap();
        assert!(titles.insert(title), "two panels called {title}");
        assert_eq!(panel["datasource"]["uid"], "${DS_PROMETHEUS}", "{title}");
        let targets = panel["targets"].as_array().unwrap();
        assert!(!targets.is_empty(), "{title} has no query");
        for target in targets {
            assert!(
                target["expr"]
                    .as_str()
                    .is_some_and(|e| e.contains("mcpfleet_")),
                "{title}: {target}"
            );
        }
    }
    // What the issue asks the dashboard to show, each in a panel of its own.
    for wanted in [
        "Requests per second by outcome",
        "Error rate",
        "Latency p50 and p95",
        "Tool calls by outcome",
        "Sessions",
        "Instances up",
        "Restarts (1 h)",
        "Failed health checks (1 h)",
        "Traffic weight",
        "Rollbacks (1 h)",
        "Deployment duration",
    ] {
        assert!(titles.contains(wanted), "no panel {wanted}: {titles:?}");
    }
}

/// Every panel query with the variables set to "All" (`.*`), as Grafana sends them.
fn dashboard_queries() -> Vec<String> {
    dashboard()["panels"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|panel| panel["targets"].as_array().cloned().unwrap_or_default())
        .map(|target| {
            target["expr"]
                .as_str()
                .unwrap()
                .replace("$server", ".*")
                .replace("$revision", ".*")
        })
        .collect()
}

#[test]
fn every_dashboard_query_is_promql_that_promtool_accepts() {
    // promtool parses a recording rule's expression as Prometheus would the query.
    let dir = fleet_testkit::TempDir::new("dashboard-queries");
    let rules: Vec<Value> = dashboard_queries()
        .into_iter()
        .enumerate()
        .map(|(n, expr)| serde_json::json!({ "record": format!("dashboard:query_{n}"), "expr": expr }))
        .collect();
    let count = rules.len();
    // JSON is YAML: promtool reads it as a rules file.
    let file = serde_json::json!({ "groups": [{ "name": "dashboard", "rules": rules }] });
    std::fs::write(dir.path().join("queries.yaml"), file.to_string()).unwrap();
    let out = promtool(&["check", "rules", "queries.yaml"], dir.path());
    assert!(out.status.success(), "{}", text(&out));
    assert!(
        String::from_utf8_lossy(&out.stdout).contains(&format!("{count} rules found")),
        "{}",
        text(&out)
    );
}

#[test]
fn every_metric_the_dashboard_and_alerts_read_is_documented() {
    let docs = read(&root().join("docs/observability.md"));
    let mut used = BTreeSet::new();
    for expr in dashboard_queries() {
        used.extend(metric_names(&expr));
    }
    for alert in alerts() {
        used.extend(metric_names(alert["expr"].as_str().unwrap()));
    }
    assert!(used.len() >= 12, "{used:?}");
    for name in used {
        assert!(
            docs.contains(&format!("`{name}`")),
            "{name} is not in docs/observability.md"
        );
    }
    for alert in alerts() {
        let name = alert["alert"].as_str().unwrap();
        assert!(
            docs.contains(name),
            "{name} is not in docs/observability.md"
        );
    }
}
