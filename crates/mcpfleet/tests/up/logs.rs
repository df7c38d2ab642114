//! The control plane's log for collectors: with `--log-format json` or the fleet file's
//! `logging: { format: json }`, every line of a detached control plane's log is one JSON
//! object with time, level and message, and says which fleet, server, revision and
//! deployment it concerns; secrets stay out of it. Text stays the default.

use super::*;
use serde_json::Value;
use std::collections::BTreeSet;

const SECRET: &str = "log-secret-value-9d2e";

/// A stdio server given a secret, an http server beside it.
fn yaml(name: &str, logging: &str) -> String {
    format!(
        r#"
version: 1
name: {name}
{logging}
secrets:
  token: {{ env: MCPFLEET_TEST_LOG_TOKEN }}
servers:
  api:
    stdio:
      command: SAMPLE
      args: ["--name", "api"]
      env: {{ TOKEN: "{{{{ secret('token') }}}}" }}
  web:
    http: {{ command: SAMPLE, args: ["--transport", "http", "--port", "{{{{ port }}}}"] }}
"#
    )
}

/// `up -d` (with `args` after it), `meanwhile`, then `down`: the whole life of a control
/// plane, logged.
fn log_of_a_run(fleet: &Fleet, args: &[&str], meanwhile: impl FnOnce()) -> String {
    let up = fleet.mcpfleet(&[&["up", "-d"], args].concat());
    assert!(up.status.success(), "{}", text(&up));
    meanwhile();
    let down = fleet.mcpfleet(&["down"]);
    assert!(down.status.success(), "{}", text(&down));
    std::fs::read_to_string(fleet.state_dir().join("control.log")).unwrap()
}

/// Each line as a JSON object with a UTC RFC 3339 time, a level and a message, of `fleet`.
fn json_lines(log: &str, fleet: &str) -> Vec<Value> {
    let lines: Vec<Value> = log
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}\nlog:\n{log}")))
        .collect();
    assert!(lines.len() > 5, "{log}");
    for line in &lines {
        let time = line["time"].as_str().unwrap_or_else(|| panic!("{line}"));
        assert!(
            time.len() >= 20 && time.as_bytes()[10] == b'T' && time.ends_with('Z'),
            "{line}"
        );
        assert!(
            ["TRACE", "DEBUG", "INFO", "WARN", "ERROR"].contains(&line["level"].as_str().unwrap()),
            "{line}"
        );
        assert!(line["message"].is_string(), "{line}");
        assert_eq!(line["fleet"], fleet, "{line}");
    }
    lines
}

#[test]
fn a_json_log_names_the_server_revision_and_deployment_of_each_line_and_no_secret() {
    let fleet =
        Fleet::new("logs-json", &yaml("logs-json", "")).with_env("MCPFLEET_TEST_LOG_TOKEN", SECRET);
    // An instance of `api` dies and is restarted: lines about that instance.
    let log = log_of_a_run(&fleet, &["--log-format", "json"], || {
        let pid = server(&fleet.status(), "api").instances[0].pid.unwrap();
        nix_kill9(pid);
        fleet.wait_for("api restarted", Duration::from_secs(30), |s| {
            server(s, "api").instances[0].restarts >= 1
                && server(s, "api").state == ServerState::Ready
        });
    });
    assert!(!log.contains(SECRET), "{log}");
    let lines = json_lines(&log, "logs-json");

    // An instance's lines: its server and revision as fields of their own, not in a message.
    let exited = lines
        .iter()
        .find(|l| l["kind"] == "InstanceExited")
        .unwrap_or_else(|| panic!("no instance exited:\n{log}"));
    assert_eq!(exited["server"], "api", "{exited}");
    assert_eq!(exited["revision"], 1, "{exited}");
    assert!(
        exited["instance"].as_str().unwrap().starts_with("api-r1-"),
        "{exited}"
    );
    // The deployment's lines carry its id; the same id on all of them (one deployment ran).
    let deployments: BTreeSet<u64> = lines
        .iter()
        .filter_map(|l| l["deployment"].as_u64())
        .collect();
    assert_eq!(deployments.len(), 1, "{log}");
    assert!(
        lines
            .iter()
            .any(|l| l["kind"] == "DeploymentCompleted" && l["deployment"].is_u64()),
        "{log}"
    );
}

#[test]
fn the_fleet_file_sets_the_log_format_and_the_flag_wins() {
    let fleet = Fleet::new("logs-file", &yaml("logs-file", "logging: { format: json }"))
        .with_env("MCPFLEET_TEST_LOG_TOKEN", SECRET);
    let log = log_of_a_run(&fleet, &[], || {});
    let lines = json_lines(&log, "logs-file");
    assert!(
        lines
            .iter()
            .any(|l| l["server"] == "web" && l["revision"] == 1),
        "{log}"
    );

    // Text as before: the log's lines are text (besides the event records a detached
    // control plane has always written as JSON).
    let fleet = Fleet::new("logs-flag", &yaml("logs-flag", "logging: { format: json }"))
        .with_env("MCPFLEET_TEST_LOG_TOKEN", SECRET);
    let log = log_of_a_run(&fleet, &["--log-format", "text"], || {});
    assert!(log.contains(" INFO "), "{log}");
    assert!(
        log.lines()
            .all(|l| !serde_json::from_str::<Value>(l).is_ok_and(|v| v.get("level").is_some())),
        "{log}"
    );
}

#[test]
fn up_d_shows_why_a_json_logging_control_plane_stopped() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let address = taken.local_addr().unwrap().to_string();
    let yaml = format!(
        "version: 1\nname: logs-stop\nlogging: {{ format: json }}\ngateway:\n  listen: {address}\nservers:\n  api: {{ stdio: {{ command: SAMPLE }} }}\n"
    );
    let fleet = Fleet::new("logs-stop", &yaml);
    let out = fleet.up();
    let shown = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{}", text(&out));
    // The reason the control plane logged, as a sentence, not as the JSON line holding it.
    let log = std::fs::read_to_string(fleet.state_dir().join("control.log")).unwrap();
    let lines: Vec<Value> = log
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}\nlog:\n{log}")))
        .collect();
    let reason = lines
        .iter()
        .find(|l| l["level"] == "ERROR")
        .and_then(|l| l["message"].as_str())
        .unwrap_or_else(|| panic!("no ERROR line:\n{log}"));
    assert!(reason.contains(&address), "{log}");
    assert!(
        shown.contains(&format!("before it was up: {reason}")),
        "{}",
        text(&out)
    );
    drop(taken);
}
