//! Tool calls are counted per tool and audited (who, what, how it ended, how long),
//! through HTTP and stdio upstreams; a session's requests in flight are bounded, and so
//! are the tool names and labels clients can make the gateway keep.

use std::time::Duration;

use fleet_gateway::TokenConfig;
use fleet_routes::audit::{ToolCallRecord, ToolOutcome};
use rmcp::model::CallToolRequestParams;
use sha2::{Digest as _, Sha256};
use tokio::sync::mpsc;

use fleet_testkit::HttpSampleServer;

use crate::stdio::per_session;
use crate::{DEADLINE, TestGateway, echo, legacy_client, raw_post, raw_session, table};

const TOKEN: &str = "audit-token-0c6f3e9a8d2b4f71";

fn sha256_hex(text: &str) -> String {
    Sha256::digest(text.as_bytes())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

async fn records(
    receiver: &mut mpsc::UnboundedReceiver<ToolCallRecord>,
    n: usize,
) -> Vec<ToolCallRecord> {
    let mut out = Vec::new();
    while out.len() < n {
        let record = tokio::time::timeout(DEADLINE, receiver.recv())
            .await
            .expect("an audit record in time")
            .expect("the audit channel is open");
        out.push(record);
    }
    out
}

fn fail(message: &str) -> CallToolRequestParams {
    CallToolRequestParams::new("fail").with_arguments(
        serde_json::json!({ "message": message })
            .as_object()
            .unwrap()
            .clone(),
    )
}

#[tokio::test]
async fn every_tool_call_is_counted_and_audited_without_its_arguments() {
    let upstream = HttpSampleServer::start(&[]).await;
    let (sink, mut audit) = mpsc::unbounded_channel();
    let (_processes, stdio) = per_session(&[], 4, Duration::from_secs(60));
    let routing = stdio.and(table("alpha", &[(1, 100, &[("a", &upstream.url)])]));
    let gateway = TestGateway::start(routing, |c| {
        c.tokens = vec![TokenConfig::new("ci", &sha256_hex(TOKEN), ["*"]).unwrap()];
        c.audit = Some(sink);
    })
    .await;

    for server in ["alpha", "solo"] {
        let client = legacy_client(&gateway.url(server), Some(TOKEN)).await;
        client
            .peer()
            .call_tool(echo("secret-argument-1"))
            .await
            .unwrap();
        let failed = client
            .peer()
            .call_tool(fail("secret-argument-2"))
            .await
            .unwrap();
        assert_eq!(failed.is_error, Some(true));
        let unknown = client
            .peer()
            .call_tool(CallToolRequestParams::new("no-such-tool"))
            .await;
        assert!(unknown.is_err(), "{unknown:?}");

        let got = records(&mut audit, 3).await;
        let summary: Vec<_> = got
            .iter()
            .map(|r| (r.server.as_str(), r.revision, r.tool.as_str(), r.outcome))
            .collect();
        assert_eq!(
            summary,
            [
                (server, 1, "echo", ToolOutcome::Ok),
                (server, 1, "fail", ToolOutcome::ToolError),
                (server, 1, "no-such-tool", ToolOutcome::JsonRpcError),
            ]
        );
        for record in &got {
            assert_eq!(record.token.as_deref(), Some("ci"));
            assert!(record.duration > Duration::ZERO);
            let shown = format!("{record:?}");
            assert!(!shown.contains("secret-argument"), "{shown}");
            assert!(!shown.contains(TOKEN), "{shown}");
        }
    }
    let text = gateway.gateway.prometheus_text();
    for line in [
        r#"mcpfleet_gateway_tool_calls_total{server="alpha",revision="1",tool="fail",outcome="tool_error"} 1"#,
        r#"mcpfleet_gateway_tool_calls_total{server="solo",revision="1",tool="echo",outcome="ok"} 1"#,
        // A tool the upstream does not know gets no series of its own.
        r#"mcpfleet_gateway_tool_calls_total{server="solo",revision="1",tool="(other tools)",outcome="jsonrpc_error"} 1"#,
        // The error inside the answer's event stream counts as the request's outcome too:
        // canary analysis reads these counters.
        r#"mcpfleet_gateway_requests_total{server="alpha",revision="1",method="tools/call",outcome="jsonrpc_error"} 1"#,
        r#"mcpfleet_gateway_requests_total{server="solo",revision="1",method="tools/call",outcome="jsonrpc_error"} 1"#,
    ] {
        assert!(text.contains(line), "{line} missing from\n{text}");
    }
}

#[tokio::test]
async fn a_session_may_have_only_so_many_requests_in_flight() {
    let upstream = HttpSampleServer::start(&[]).await;
    let gateway = TestGateway::start(table("alpha", &[(1, 100, &[("a", &upstream.url)])]), |c| {
        c.max_session_concurrency = 2;
    })
    .await;
    let url = gateway.url("alpha");
    let session = raw_session(&url).await;
    let sleep = |id: u64| {
        raw_post(&url)
            .header("mcp-session-id", session.clone())
            .json(&serde_json::json!({
                "jsonrpc": "2.0", "id": id, "method": "tools/call",
                "params": { "name": "sleep", "arguments": { "ms": 30_000 } }
            }))
            .send()
    };
    // Two answers open (their streams wait for the sleeps): the limit is reached.
    let first = sleep(1).await.unwrap();
    let second = sleep(2).await.unwrap();
    assert_eq!(
        (first.status().as_u16(), second.status().as_u16()),
        (200, 200)
    );
    let third = sleep(3).await.unwrap();
    assert_eq!(third.status(), 429);
    let body: serde_json::Value = third.json().await.unwrap();
    assert_eq!(body["id"], 3);
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("2 requests in flight"),
        "{body}"
    );
    // A client that gives up on an answer frees its place (once the gateway sees the
    // connection close).
    drop(first);
    let ping = fleet_testkit::wait_until("the place frees up", DEADLINE, async || {
        let ping = raw_post(&url)
            .header("mcp-session-id", session.clone())
            .json(&serde_json::json!({"jsonrpc": "2.0", "id": 4, "method": "ping"}))
            .send()
            .await
            .unwrap();
        (ping.status() != 429).then_some(ping)
    })
    .await;
    assert_eq!(ping.status(), 200);
    drop(second);
}

#[tokio::test]
async fn tool_calls_on_a_shared_stdio_process_are_audited() {
    let (sink, mut audit) = mpsc::unbounded_channel();
    let (table, _child) = crate::stdio::shared_table("memory", &["--tools", "echo"]);
    let gateway = TestGateway::start(table, |c| c.audit = Some(sink)).await;
    let a = legacy_client(&gateway.url("memory"), None).await;
    let b = legacy_client(&gateway.url("memory"), None).await;
    for client in [&a, &b, &a, &b] {
        client.peer().call_tool(echo("x")).await.unwrap();
    }
    let got = records(&mut audit, 4).await;
    assert!(got.iter().all(|r| r.outcome == ToolOutcome::Ok), "{got:?}");
}

#[tokio::test]
async fn raw_sessions_with_equal_ids_on_a_shared_process_are_audited() {
    let (sink, mut audit) = mpsc::unbounded_channel();
    let (table, _child) = crate::stdio::shared_table("memory", &["--tools", "echo"]);
    let gateway = TestGateway::start(table, |c| c.audit = Some(sink)).await;
    let url = gateway.url("memory");
    let mut sessions = Vec::new();
    for _ in 0..2 {
        let session = raw_session(&url).await;
        sessions.push(session);
    }
    for session in sessions.iter().chain(&sessions) {
        let text = raw_post(&url)
            .header("mcp-session-id", session.clone())
            .json(&serde_json::json!({"jsonrpc": "2.0", "id": 2, "method": "tools/call", "params": {"name": "echo", "arguments": {"message": "m"}}}))
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        assert!(text.contains("\"m\""), "{text}");
    }
    let got = records(&mut audit, 4).await;
    assert!(got.iter().all(|r| r.outcome == ToolOutcome::Ok), "{got:?}");
}

/// Regression (issue 13): three calls with a 3 MiB tool name grew the state store by
/// 9.5 MB and `/metrics` by 9.4 MB. Such a call is refused before it is counted or
/// audited.
#[tokio::test]
async fn a_huge_tool_name_is_refused_and_leaves_metrics_and_audit_bounded() {
    let upstream = HttpSampleServer::start(&[]).await;
    let (sink, mut audit) = mpsc::unbounded_channel();
    let gateway = TestGateway::start(table("alpha", &[(1, 100, &[("a", &upstream.url)])]), |c| {
        c.audit = Some(sink);
    })
    .await;
    let url = gateway.url("alpha");
    let session = raw_session(&url).await;
    let call = |id: u64, name: &str| {
        raw_post(&url)
            .header("mcp-session-id", session.clone())
            .json(&serde_json::json!({
                "jsonrpc": "2.0", "id": id, "method": "tools/call",
                "params": { "name": name, "arguments": { "message": "m" } }
            }))
            .send()
    };
    let huge = "x".repeat(3 * 1024 * 1024);
    for id in 1..=3 {
        let response = call(id, &huge).await.unwrap();
        assert_eq!(response.status(), 400);
        let body = response.text().await.unwrap();
        assert!(body.len() < 1024, "the refusal echoes the name");
        let answer: serde_json::Value = serde_json::from_str(&body).unwrap();
        assert_eq!(answer["error"]["code"], -32602, "{answer}");
        assert_eq!(answer["id"], id, "{answer}");
    }
    let response = call(4, "echo").await.unwrap();
    assert_eq!(response.status(), 200);
    assert!(response.text().await.unwrap().contains("\"m\""));
    // The echo call is the first record: the refused ones made none.
    let got = records(&mut audit, 1).await;
    assert_eq!(got[0].tool, "echo");
    let text = gateway.gateway.prometheus_text();
    assert!(text.len() < 16 * 1024, "{} bytes of metrics", text.len());
    assert!(!text.contains("xxxxxxxx"), "{text}");
}

/// Regression (issue 13): every distinct name a client called minted a `tool` label,
/// answered or not. Names the upstream refuses count under one label.
#[tokio::test]
async fn many_unknown_tool_names_do_not_grow_the_label_set() {
    let upstream = HttpSampleServer::start(&[]).await;
    let gateway =
        TestGateway::start(table("alpha", &[(1, 100, &[("a", &upstream.url)])]), |_| {}).await;
    let client = legacy_client(&gateway.url("alpha"), None).await;
    const UNKNOWN: usize = 300;
    for n in 0..UNKNOWN {
        let unknown = client
            .peer()
            .call_tool(CallToolRequestParams::new(format!("no-such-tool-{n}")))
            .await;
        assert!(unknown.is_err(), "{unknown:?}");
    }
    client.peer().call_tool(echo("x")).await.unwrap();
    let tool_lines = || -> Vec<String> {
        gateway
            .gateway
            .prometheus_text()
            .lines()
            .filter(|l| l.starts_with("mcpfleet_gateway_tool_calls_total{"))
            .map(str::to_owned)
            .collect()
    };
    // An answer's stream may end (and its call be counted) just after the client read it.
    fleet_testkit::wait_until("every call is counted", DEADLINE, async || {
        let counted: u64 = tool_lines()
            .iter()
            .filter_map(|l| l.rsplit(' ').next()?.parse::<u64>().ok())
            .sum();
        counted == UNKNOWN as u64 + 1
    })
    .await;
    assert_eq!(
        tool_lines(),
        [
            r#"mcpfleet_gateway_tool_calls_total{server="alpha",revision="1",tool="(other tools)",outcome="jsonrpc_error"} 300"#,
            r#"mcpfleet_gateway_tool_calls_total{server="alpha",revision="1",tool="echo",outcome="ok"} 1"#,
        ]
    );
}
