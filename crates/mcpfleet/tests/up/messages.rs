//! What people read agrees with itself: `events` text names each event's id (what
//! `--after` takes) and its kind as JSON spells it, and an http server's ready event says
//! what its MCP check found, not another check's result.

use super::*;

/// An http server with a tcp check besides its MCP check.
const HTTP_WITH_TCP_CHECK: &str = r#"
version: 1
name: messages
servers:
  web:
    http: { command: SAMPLE, args: ["--transport", "http", "--port", "{{ port }}"] }
    health:
      tcp: { interval: 1s }
"#;

#[test]
fn text_events_show_the_ids_after_takes_and_kinds_spelled_as_in_json() {
    let fleet = Fleet::new("messages-events", HTTP_WITH_TCP_CHECK);
    let out = fleet.up();
    assert!(out.status.success(), "{}", text(&out));

    let json = fleet.mcpfleet(&["events", "--output", "json"]);
    assert!(json.status.success(), "{}", text(&json));
    let records: Vec<fleet_api::types::EventRecord> = String::from_utf8_lossy(&json.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let out = fleet.mcpfleet(&["events"]);
    assert!(out.status.success(), "{}", text(&out));
    let lines: Vec<String> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(str::to_string)
        .collect();
    // Each text line is the JSON record of the same position: its id first, then its kind
    // by the one name JSON and docs/api.md use.
    assert!(records.len() >= 3, "{}", text(&out));
    assert_eq!(lines.len(), records.len(), "{}", text(&out));
    for (line, record) in lines.iter().zip(&records) {
        let id = format!("#{} ", record.id);
        assert!(line.starts_with(&id), "no `{id}` leading: {line}");
        let kind = format!(" {}: ", record.event.kind.as_str());
        assert!(line.contains(&kind), "no `{kind}` in: {line}");
    }
    assert!(
        lines.iter().any(|l| l.contains(" server_ready: ")),
        "{}",
        text(&out)
    );

    // `--after` takes the id the text showed.
    let second = records[1].id.to_string();
    let after = fleet.mcpfleet(&["events", "--after", &second]);
    let first_after = String::from_utf8_lossy(&after.stdout)
        .lines()
        .next()
        .map(str::to_string);
    assert_eq!(
        first_after.as_deref(),
        Some(lines[2].as_str()),
        "{}",
        text(&after)
    );

    let status = fleet.mcpfleet(&["status"]);
    let status = String::from_utf8_lossy(&status.stdout).into_owned();
    assert!(
        status.contains("deployment succeeded"),
        "the deployment state is not named as in JSON:\n{status}"
    );
}

#[test]
fn an_http_servers_ready_event_says_what_its_mcp_check_found() {
    let fleet = Fleet::new("messages-http-ready", HTTP_WITH_TCP_CHECK);
    let out = fleet.up();
    assert!(out.status.success(), "{}", text(&out));
    let ready: Vec<String> = events(&fleet)
        .into_iter()
        .filter(|e| e.kind == EventKind::ServerReady)
        .map(|e| e.message)
        .collect();
    let [message] = ready.as_slice() else {
        panic!("one ready event expected: {ready:?}");
    };
    // The MCP check's findings, as a stdio server's ready event has them: era and protocol
    // version, the server, its tools.
    let found = message.strip_prefix("revision 1: ").unwrap_or_default();
    assert!(
        (found.starts_with("legacy 20") || found.starts_with("modern 20"))
            && found.contains(" tool"),
        "the ready event does not say what the MCP check found: {message}"
    );
    assert!(
        !message.contains("TCP connect"),
        "the tcp check's result: {message}"
    );
}
