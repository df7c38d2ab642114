//! The fleet file's `tracing:` block: the OTLP exporter normalized with its defaults and
//! secrets hidden, and every mistake a located error (golden file in `tracing/`).

mod common;
use common::FixedHost;
use fleet_spec::diag::render_all;
use fleet_spec::{Checked, LoadOptions, load_str};
use std::path::PathBuf;
use std::sync::Arc;

fn check(text: &str) -> Checked {
    let options = LoadOptions {
        environment: None,
        host: Arc::new(FixedHost(vec![("OTLP_TOKEN", "s3cr3t-value")])),
    };
    load_str("f.yaml", text, PathBuf::from("/srv/fleet"), &options)
}

const SERVERS: &str = "servers:\n  echo:\n    stdio: { command: echo }\n";

#[test]
fn an_otlp_exporter_keeps_every_trace_as_mcpfleet_unless_it_says_otherwise() {
    let text = format!(
        "version: 1\nname: tools\nsecrets:\n  otlp: {{ env: OTLP_TOKEN }}\ntracing:\n  otlp:\n    endpoint: http://localhost:4318\n    headers:\n      Authorization: \"Bearer {{{{ secret('otlp') }}}}\"\n      x-scope-orgid: tools\n{SERVERS}"
    );
    let checked = check(&text);
    assert_eq!(checked.diagnostics, vec![], "{:#?}", checked.diagnostics);
    let fleet = checked.into_valid().unwrap();
    let otlp = fleet.tracing.otlp.as_ref().expect("configured");
    assert_eq!(
        otlp.endpoint.as_ref().map(|e| e.shown.as_str()),
        Some("http://localhost:4318")
    );
    assert_eq!(
        (otlp.sample_ratio, otlp.service_name.as_str()),
        (1.0, "mcpfleet")
    );
    // Header names are case-insensitive: kept lowercase, as HTTP/2 sends them.
    assert_eq!(otlp.headers["authorization"].shown, "Bearer ***");
    assert_eq!(otlp.headers["x-scope-orgid"].shown, "tools");
    let json = serde_json::to_string(&fleet).unwrap();
    assert!(!json.contains("s3cr3t-value"), "a secret leaked: {json}");

    let sampled = check(&format!(
        "version: 1\nname: tools\ntracing:\n  otlp: {{ sample_ratio: 0.25, service_name: tools-prod }}\n{SERVERS}"
    ))
    .into_valid()
    .unwrap();
    let otlp = sampled.tracing.otlp.unwrap();
    assert_eq!(
        otlp.endpoint, None,
        "the environment's endpoint, read at start"
    );
    assert_eq!(
        (otlp.sample_ratio, otlp.service_name.as_str()),
        (0.25, "tools-prod")
    );
}

#[test]
fn a_fleet_without_tracing_serializes_as_before() {
    let fleet = check(&format!("version: 1\nname: tools\n{SERVERS}"))
        .into_valid()
        .unwrap();
    assert!(fleet.tracing.is_off());
    let json = serde_json::to_value(&fleet).unwrap();
    assert!(json.get("tracing").is_none(), "{json}");
}

#[test]
fn every_tracing_mistake_is_located() {
    let text = "version: 1
name: tools
tracing:
  otlp:
    endpoint: grpc://collector:4317
    headers:
      \"bad header\": x
    sample_ratio: 1.5
    service_name: \"\"
servers:
  echo:
    stdio: { command: echo }
";
    let checked = check(text);
    insta::with_settings!({ snapshot_path => "tracing", prepend_module_to_snapshot => false }, {
        insta::assert_snapshot!("invalid_tracing", render_all(&checked.diagnostics, &checked.source));
    });
    let located: Vec<(u32, bool)> = checked
        .diagnostics
        .iter()
        .map(|d| (d.span.expect("located").line, d.is_error()))
        .collect();
    assert_eq!(located, [(5, true), (7, true), (8, true), (9, true)]);

    let plain = check(&format!(
        "version: 1\nname: tools\ntracing:\n  otlp:\n    endpoint: http://collector.example.com:4318\n    protocol: grpc\n{SERVERS}"
    ));
    let located: Vec<(u32, bool)> = plain
        .diagnostics
        .iter()
        .map(|d| (d.span.expect("located").line, d.is_error()))
        .collect();
    // An unknown key is an error; plain http:// to another host only a warning (a
    // collector on a trusted network is common).
    assert!(located.contains(&(6, true)), "{located:?}");
}
