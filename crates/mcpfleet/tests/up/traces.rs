//! Traces over OTLP/HTTP from a live fleet to an in-test collector (fleet-testkit's
//! `OtlpReceiver`, which decodes the export requests with the protocol's own types): a
//! deployment's span tree, its names, parent links and attributes; the environment's
//! `OTEL_EXPORTER_OTLP_ENDPOINT` honoured; nothing exported when tracing is not configured.
//! The gateway's `gateway request` spans, the W3C `traceparent` an HTTP upstream (an MCP
//! server in the test that records its headers) gets with tracing on and off, and the
//! latency exemplar of a request the client sent without one.

use super::*;
use fleet_testkit::otlp::{OtlpReceiver, ReceivedSpan};
use std::sync::{Arc, Mutex};

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

/// The client's W3C Trace Context in the gateway tests.
const CLIENT_TRACE: &str = "4bf92f3577b34da6a3ce929d0e0e4736";
const CLIENT_SPAN: &str = "00f067aa0ba902b7";
const CLIENT_STATE: &str = "rojo=00f067aa0ba902b7";

fn client_traceparent() -> String {
    format!("00-{CLIENT_TRACE}-{CLIENT_SPAN}-01")
}

/// What [`RecordingUpstream`] got with one request.
#[derive(Debug, Clone)]
struct Seen {
    method: String,
    traceparent: Vec<String>,
    tracestate: Vec<String>,
}

/// A Streamable HTTP MCP server in the test, a fleet's `remote` server: JSON answers, one
/// tool (`echo`), and the W3C Trace Context headers of every request it gets kept, with the
/// request's JSON-RPC method.
struct RecordingUpstream {
    url: String,
    seen: Arc<Mutex<Vec<Seen>>>,
    _runtime: tokio::runtime::Runtime,
}

impl RecordingUpstream {
    fn start() -> Self {
        let runtime = tokio::runtime::Runtime::new().unwrap();
        let seen = Arc::new(Mutex::new(Vec::new()));
        let router = axum::Router::new()
            .route("/mcp", axum::routing::post(Self::answer))
            .with_state(seen.clone());
        let listener = runtime
            .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
            .unwrap();
        let url = format!("http://{}/mcp", listener.local_addr().unwrap());
        runtime.spawn(async move { axum::serve(listener, router).await });
        RecordingUpstream {
            url,
            seen,
            _runtime: runtime,
        }
    }

    async fn answer(
        axum::extract::State(seen): axum::extract::State<Arc<Mutex<Vec<Seen>>>>,
        headers: axum::http::HeaderMap,
        body: axum::body::Bytes,
    ) -> axum::response::Response {
        use axum::response::IntoResponse as _;
        let request: serde_json::Value = serde_json::from_slice(&body).unwrap_or_default();
        let method = request["method"].as_str().unwrap_or_default().to_owned();
        let values = |name: &str| {
            headers
                .get_all(name)
                .iter()
                .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned())
                .collect()
        };
        seen.lock().unwrap().push(Seen {
            method: method.clone(),
            traceparent: values("traceparent"),
            tracestate: values("tracestate"),
        });
        let Some(id) = request.get("id").cloned() else {
            return axum::http::StatusCode::ACCEPTED.into_response();
        };
        let params = &request["params"];
        let result = match method.as_str() {
            "initialize" => serde_json::json!({
                "protocolVersion": params["protocolVersion"],
                "capabilities": { "tools": {} },
                "serverInfo": { "name": "recording-upstream", "version": "0" }
            }),
            "ping" => serde_json::json!({}),
            "tools/list" => serde_json::json!({
                "tools": [{ "name": "echo", "inputSchema": { "type": "object" } }]
            }),
            "tools/call" => serde_json::json!({
                "content": [{ "type": "text", "text": params["arguments"]["message"] }]
            }),
            // `server/discover` among them: a legacy server, as era detection expects.
            _ => {
                return axum::Json(serde_json::json!({
                    "jsonrpc": "2.0", "id": id,
                    "error": { "code": -32601, "message": "method not found" }
                }))
                .into_response();
            }
        };
        (
            [("mcp-session-id", "recorded")],
            axum::Json(serde_json::json!({ "jsonrpc": "2.0", "id": id, "result": result })),
        )
            .into_response()
    }

    /// The requests of `method` it got, in order.
    fn seen(&self, method: &str) -> Vec<Seen> {
        self.seen
            .lock()
            .unwrap()
            .iter()
            .filter(|s| s.method == method)
            .cloned()
            .collect()
    }
}

/// A `tools/call` of `echo` on `session` of `url`, with `trace` headers; its answer's text.
async fn echo_with(
    session: &RawSession,
    message: &str,
    trace: &[(&str, &str)],
) -> (reqwest::StatusCode, String) {
    let mut request = session
        .http
        .post(&session.url)
        .header("accept", "application/json, text/event-stream")
        .header("mcp-session-id", &session.id)
        .json(&serde_json::json!({
            "jsonrpc": "2.0", "id": 7, "method": "tools/call",
            "params": { "name": "echo", "arguments": { "message": message } }
        }));
    for (name, value) in trace {
        request = request.header(*name, *value);
    }
    let response = request.send().await.unwrap();
    (response.status(), response.text().await.unwrap())
}

/// The `gateway request` span of `method` on `server`.
fn request_span<'a>(
    spans: &'a [ReceivedSpan],
    server: &str,
    method: &str,
) -> Option<&'a ReceivedSpan> {
    named(spans, "gateway request")
        .into_iter()
        .find(|s| s.attribute("server") == Some(server) && s.attribute("method") == Some(method))
}

#[test]
fn a_relayed_request_is_a_gateway_request_span_in_the_clients_trace() {
    let receiver = OtlpReceiver::start();
    let upstream = RecordingUpstream::start();
    let yaml = format!(
        r#"
version: 1
name: traces-gateway
admin: {{ listen: 127.0.0.1:0 }}
servers:
  web:
    remote: {{ url: "{url}" }}
  local:
    stdio: {{ command: SAMPLE }}
tracing:
  otlp: {{ endpoint: "{endpoint}" }}
"#,
        url = upstream.url,
        endpoint = receiver.endpoint
    );
    let fleet = Fleet::new("traces-gateway", &yaml).with_env(QUICK_BATCHES.0, QUICK_BATCHES.1);
    let out = fleet.up();
    assert!(out.status.success(), "{}", text(&out));
    let status = fleet.status();
    let web_url = server(&status, "web").endpoint.clone().unwrap();
    let local_url = server(&status, "local").endpoint.clone().unwrap();
    let admin = status.admin_url.clone().expect("the admin listener is on");

    let runtime = tokio::runtime::Runtime::new().unwrap();
    runtime.block_on(async {
        let web = RawSession::open(&web_url).await.unwrap();
        let traceparent = client_traceparent();
        let (status, answer) = echo_with(
            &web,
            "traced",
            &[
                ("traceparent", traceparent.as_str()),
                ("tracestate", CLIENT_STATE),
            ],
        )
        .await;
        assert_eq!(status, 200, "{answer}");
        assert!(answer.contains("traced"), "{answer}");
        // A stdio server's request, without a client trace.
        let local = RawSession::open(&local_url).await.unwrap();
        let (status, answer) = echo_with(&local, "untraced", &[]).await;
        assert_eq!(status, 200, "{answer}");
        assert!(answer.contains("untraced"), "{answer}");
    });
    let spans = receiver.wait_for(
        "the spans of both tool calls",
        Duration::from_secs(30),
        |spans| {
            request_span(spans, "web", "tools/call").is_some()
                && request_span(spans, "local", "tools/call").is_some()
        },
    );

    // The HTTP upstream's call: a child of the client's span, in its trace.
    let call = request_span(&spans, "web", "tools/call").unwrap();
    assert_eq!(call.trace_id, CLIENT_TRACE, "{call:#?}");
    assert_eq!(call.parent_span_id, CLIENT_SPAN, "{call:#?}");
    assert_eq!(call.attribute("revision"), Some("1"));
    assert_eq!(call.attribute("tool"), Some("echo"));
    assert_eq!(call.attribute("outcome"), Some("ok"));
    assert_eq!(call.attribute("http.response.status_code"), Some("200"));
    // The upstream was called by the gateway's span, in the client's trace and state.
    let [seen] = &upstream.seen("tools/call")[..] else {
        panic!("one call: {:#?}", upstream.seen("tools/call"));
    };
    assert_eq!(
        seen.traceparent,
        [format!("00-{CLIENT_TRACE}-{}-01", call.span_id)]
    );
    assert_eq!(seen.tracestate, [CLIENT_STATE]);

    // The session's `initialize` came without a trace: its span starts one, and the
    // upstream learns it (the health check's own `initialize` has no trace context).
    let initialize = request_span(&spans, "web", "initialize").unwrap();
    assert_eq!(initialize.parent_span_id, "", "{initialize:#?}");
    assert_ne!(initialize.trace_id, CLIENT_TRACE);
    let expected = format!("00-{}-{}-01", initialize.trace_id, initialize.span_id);
    assert!(
        upstream
            .seen("initialize")
            .iter()
            .any(|s| s.traceparent == [expected.clone()] && s.tracestate.is_empty()),
        "{expected}: {:#?}",
        upstream.seen("initialize")
    );

    // The stdio server's call: a root span of a trace of its own.
    let local = request_span(&spans, "local", "tools/call").unwrap();
    assert_eq!(local.parent_span_id, "", "{local:#?}");
    assert_eq!(local.attribute("revision"), Some("1"));
    assert_eq!(local.attribute("tool"), Some("echo"));
    assert_eq!(local.attribute("outcome"), Some("ok"));
    assert_eq!(local.attribute("http.response.status_code"), Some("200"));

    // Its latency's exemplar is that trace, though the client sent none.
    let exemplar = format!(r#" # {{trace_id="{}"}} "#, local.trace_id);
    let http = http_client();
    runtime.block_on(wait_until(
        "the stdio call's exemplar",
        Duration::from_secs(10),
        async || {
            let metrics = http
                .get(format!("{admin}/metrics"))
                .header("accept", "application/openmetrics-text;version=1.0.0")
                .send()
                .await
                .unwrap()
                .text()
                .await
                .unwrap();
            let found = metrics.lines().any(|line| {
                line.starts_with("mcpfleet_gateway_request_duration_seconds_bucket{")
                    && line.contains(r#"server="local""#)
                    && line.contains(&exemplar)
            });
            if found { Ok(()) } else { Err(metrics) }
        },
    ));
}

#[test]
fn without_traces_the_upstream_gets_the_clients_trace_context_as_sent() {
    let upstream = RecordingUpstream::start();
    let yaml = format!(
        r#"
version: 1
name: traces-gateway-off
servers:
  web:
    remote: {{ url: "{}" }}
"#,
        upstream.url
    );
    let fleet = Fleet::new("traces-gateway-off", &yaml);
    let out = fleet.up();
    assert!(out.status.success(), "{}", text(&out));
    let web_url = server(&fleet.status(), "web").endpoint.clone().unwrap();
    let runtime = tokio::runtime::Runtime::new().unwrap();
    runtime.block_on(async {
        let web = RawSession::open(&web_url).await.unwrap();
        let traceparent = client_traceparent();
        let trace = [
            ("traceparent", traceparent.as_str()),
            ("tracestate", CLIENT_STATE),
        ];
        assert_eq!(echo_with(&web, "traced", &trace).await.0, 200);
        assert_eq!(echo_with(&web, "untraced", &[]).await.0, 200);
    });
    let calls = upstream.seen("tools/call");
    assert_eq!(calls.len(), 2, "{calls:#?}");
    assert_eq!(calls[0].traceparent, [client_traceparent()]);
    assert_eq!(calls[0].tracestate, [CLIENT_STATE]);
    assert!(
        calls[1].traceparent.is_empty() && calls[1].tracestate.is_empty(),
        "{calls:#?}"
    );
}
