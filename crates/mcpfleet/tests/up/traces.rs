//! Traces over OTLP/HTTP from a live fleet to an in-test collector (fleet-testkit's
//! `OtlpReceiver`, which decodes the export requests with the protocol's own types): a
//! deployment's span tree, its names, parent links and attributes; the environment's
//! `OTEL_EXPORTER_OTLP_ENDPOINT` honoured; nothing exported when tracing is not configured.

use super::*;
use fleet_testkit::otlp::{OtlpReceiver, ReceivedSpan};

/// `db` (http) in the first wave, `api` (stdio) depending on it in the second.
fn two_waves(name: &str, tracing: &str) -> String {
    format!(
        r#"
version: 1
name: {name}
servers:
  db:
    http: {{ command: SAMPLE, args: ["--transport", "http", "--port", "{{{{ port }}}}"] }}
  api:
    stdio: {{ command: SAMPLE }}
    depends_on: [db]
{tracing}
"#
    )
}

/// Spans leave in batches every 100 ms instead of every 5 s.
const QUICK_BATCHES: (&str, &str) = ("OTEL_BSP_SCHEDULE_DELAY", "100");

fn named<'a>(spans: &'a [ReceivedSpan], name: &str) -> Vec<&'a ReceivedSpan> {
    spans.iter().filter(|s| s.name == name).collect()
}

/// The spans of deployment 1, once its root and both servers' steps have arrived.
fn first_deployment(receiver: &OtlpReceiver) -> Vec<ReceivedSpan> {
    receiver.wait_for(
        "the first deployment's spans",
        Duration::from_secs(30),
        |spans| {
            let steps = named(spans, "server step");
            !named(spans, "deployment").is_empty()
                && ["db", "api"]
                    .iter()
                    .all(|server| steps.iter().any(|s| s.attribute("server") == Some(server)))
        },
    )
}

#[test]
fn a_deployment_is_traced_as_waves_server_steps_and_health_checks() {
    let receiver = OtlpReceiver::start();
    let tracing = format!(
        "tracing:\n  otlp:\n    endpoint: {}\n    service_name: traced-fleet\n",
        receiver.endpoint
    );
    let fleet = Fleet::new("traces-tree", &two_waves("traces-tree", &tracing))
        .with_env(QUICK_BATCHES.0, QUICK_BATCHES.1);
    let out = fleet.up();
    assert!(out.status.success(), "{}", text(&out));
    let spans = first_deployment(&receiver);

    let [deployment] = named(&spans, "deployment")[..] else {
        panic!("one deployment span: {spans:#?}");
    };
    assert_eq!(
        deployment.parent_span_id, "",
        "a deployment is a trace's root"
    );
    assert_eq!(deployment.service, "traced-fleet");
    assert_eq!(deployment.attribute("fleet"), Some("traces-tree"));
    assert_eq!(deployment.attribute("deployment"), Some("1"));
    assert_eq!(deployment.attribute("outcome"), Some("succeeded"));
    for span in &spans {
        assert_eq!(span.trace_id, deployment.trace_id, "one trace: {span:#?}");
    }

    // Two waves, children of the deployment, numbered as the plan numbers them.
    let waves = named(&spans, "wave");
    let wave = |number: &str| {
        *waves
            .iter()
            .find(|w| w.attribute("wave") == Some(number))
            .unwrap_or_else(|| panic!("wave {number}: {waves:#?}"))
    };
    assert_eq!(waves.len(), 2, "{waves:#?}");
    for number in ["1", "2"] {
        assert_eq!(wave(number).parent_span_id, deployment.span_id);
    }

    // Each server's step is in its own wave, with what it did and how it ended.
    let steps = named(&spans, "server step");
    assert_eq!(steps.len(), 2, "{steps:#?}");
    for (server, number) in [("db", "1"), ("api", "2")] {
        let step = steps
            .iter()
            .find(|s| s.attribute("server") == Some(server))
            .unwrap();
        assert_eq!(step.parent_span_id, wave(number).span_id, "{step:#?}");
        assert_eq!(step.attribute("revision"), Some("1"));
        assert_eq!(step.attribute("action"), Some("create"));
        assert_eq!(step.attribute("outcome"), Some("succeeded"));

        // Its readiness: MCP checks of its instance, the last one passed.
        let checks: Vec<_> = named(&spans, "health check")
            .into_iter()
            .filter(|c| c.parent_span_id == step.span_id)
            .collect();
        assert!(
            !checks.is_empty(),
            "{server} has no health check span: {spans:#?}"
        );
        for check in &checks {
            assert_eq!(check.attribute("server"), Some(server));
            assert_eq!(check.attribute("revision"), Some("1"));
            assert_eq!(
                check.attribute("instance"),
                Some(format!("{server}-r1-1").as_str())
            );
            assert_eq!(check.attribute("check"), Some("mcp"));
        }
        assert!(
            checks
                .iter()
                .any(|c| c.attribute("outcome") == Some("passed")),
            "{checks:#?}"
        );
    }
}

#[test]
fn the_environments_otlp_endpoint_turns_traces_on() {
    let receiver = OtlpReceiver::start();
    let fleet = Fleet::new("traces-env", &two_waves("traces-env", ""))
        .with_env(QUICK_BATCHES.0, QUICK_BATCHES.1)
        .with_env("OTEL_EXPORTER_OTLP_ENDPOINT", &receiver.endpoint);
    let out = fleet.up();
    assert!(out.status.success(), "{}", text(&out));
    let spans = first_deployment(&receiver);
    let deployment = named(&spans, "deployment")[0];
    assert_eq!(deployment.service, "mcpfleet");
    assert_eq!(deployment.attribute("fleet"), Some("traces-env"));
}

#[test]
fn nothing_is_exported_when_tracing_is_not_configured() {
    // Where an OpenTelemetry SDK exports by default: an exporter started without being
    // asked to would send here.
    let Some(receiver) = OtlpReceiver::start_at("127.0.0.1:4318") else {
        panic!("127.0.0.1:4318 (OTLP/HTTP's default port) is taken: this test needs it free");
    };
    let fleet = Fleet::new("traces-off", &two_waves("traces-off", ""))
        .with_env(QUICK_BATCHES.0, QUICK_BATCHES.1);
    let out = fleet.up();
    assert!(out.status.success(), "{}", text(&out));
    let endpoint = server(&fleet.status(), "db").endpoint.clone().unwrap();
    assert_echo_answers(&endpoint, "untraced");
    // `down` flushes whatever an exporter would hold.
    let down = fleet.mcpfleet(&["down"]);
    assert!(down.status.success(), "{}", text(&down));
    assert_eq!(receiver.requests(), 0, "{:#?}", receiver.spans());
}
