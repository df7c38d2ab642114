//! Legacy era (initialize + sessions) through the gateway.

use std::time::Duration;

use fleet_testkit::{HttpSampleServer, wait_until};
use rmcp::model::CallToolRequestParams;

use crate::{
    DEADLINE, TestGateway, echo, legacy_client, raw_initialize, raw_post, server_name, table, text,
};

#[tokio::test]
async fn initialize_list_and_call_through_the_gateway() {
    let upstream = HttpSampleServer::start(&[]).await;
    let gateway =
        TestGateway::start(table("alpha", &[(1, 100, &[("a", &upstream.url)])]), |_| {}).await;

    let client = legacy_client(&gateway.url("alpha"), None).await;
    assert_eq!(server_name(&client), "mcp-sample-server");
    let tools = client.peer().list_all_tools().await.expect("tools/list");
    let mut names: Vec<_> = tools.iter().map(|t| t.name.to_string()).collect();
    names.sort();
    assert_eq!(names, ["add", "echo", "fail", "sleep"]);
    let result = client
        .peer()
        .call_tool(echo("hello"))
        .await
        .expect("tools/call");
    assert_eq!(text(&result), "hello");

    // An SSE answer is counted when its stream ends, just after the client has read it.
    let call_line = "mcpfleet_gateway_requests_total{server=\"alpha\",revision=\"1\",method=\"tools/call\",outcome=\"ok\"} 1";
    wait_until("the call is counted", DEADLINE, async || {
        gateway.gateway.prometheus_text().contains(call_line)
    })
    .await;
    let snapshot = gateway.gateway.metrics();
    let stats = snapshot
        .revision("alpha", Some(1))
        .expect("revision 1 counted");
    assert!(stats.totals.ok >= 4, "{stats:?}");
    assert_eq!(stats.totals.jsonrpc_error + stats.totals.transport_error, 0);
    assert_eq!(snapshot.sessions_active.get("alpha"), Some(&1));

    client.cancel().await.expect("close the session");
    wait_until(
        "the DELETE ended the gateway session",
        DEADLINE,
        async || {
            gateway
                .gateway
                .metrics()
                .sessions_active
                .get("alpha")
                .copied()
                .unwrap_or(0)
                == 0
        },
    )
    .await;
}

#[tokio::test]
async fn the_client_sees_only_gateway_session_ids() {
    let upstream = HttpSampleServer::start(&[]).await;
    let gateway =
        TestGateway::start(table("alpha", &[(1, 100, &[("a", &upstream.url)])]), |_| {}).await;

    let mut ids = Vec::new();
    for _ in 0..2 {
        let response = raw_initialize(&gateway.url("alpha")).await;
        assert_eq!(response.status(), 200);
        let id = response.headers()["mcp-session-id"]
            .to_str()
            .unwrap()
            .to_owned();
        // Sealed (base64url): the upstream's own id is not in it to read.
        assert!(
            id.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_'),
            "{id}"
        );
        ids.push(id);
    }
    assert_ne!(ids[0], ids[1], "two clients share a session");

    // The upstream has never heard of the gateway's ids.
    let direct = raw_post(&upstream.url)
        .header("mcp-session-id", &ids[0])
        .header("mcp-protocol-version", "2025-11-25")
        .json(&serde_json::json!({"jsonrpc":"2.0","id":2,"method":"tools/list"}))
        .send()
        .await
        .unwrap();
    assert_eq!(direct.status(), 404);

    // Through the gateway, the id works.
    let through = raw_post(&gateway.url("alpha"))
        .header("mcp-session-id", &ids[0])
        .header("mcp-protocol-version", "2025-11-25")
        .json(&serde_json::json!({"jsonrpc":"2.0","method":"notifications/initialized"}))
        .send()
        .await
        .unwrap();
    assert_eq!(through.status(), 202);
    assert_eq!(through.headers()["mcp-session-id"], ids[0].as_str());
}

#[tokio::test]
async fn unknown_and_missing_sessions() {
    let upstream = HttpSampleServer::start(&[]).await;
    let gateway =
        TestGateway::start(table("alpha", &[(1, 100, &[("a", &upstream.url)])]), |_| {}).await;
    let list = serde_json::json!({"jsonrpc":"2.0","id":2,"method":"tools/list"});
    for id in ["ab".repeat(32), "not-hex".to_owned()] {
        let response = raw_post(&gateway.url("alpha"))
            .header("mcp-session-id", id)
            .json(&list)
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 404);
    }
    let response = raw_post(&gateway.url("alpha"))
        .json(&list)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 400);
    let get = reqwest::Client::new()
        .get(gateway.url("alpha"))
        .header("accept", "text/event-stream")
        .send()
        .await
        .unwrap();
    assert_eq!(get.status(), 400);
    let unknown = raw_initialize(&gateway.url("nope")).await;
    assert_eq!(unknown.status(), 404);
    let body: serde_json::Value = unknown.json().await.unwrap();
    assert!(
        body["error"]["message"].as_str().unwrap().contains("nope"),
        "{body}"
    );
}

#[tokio::test]
async fn weights_place_new_sessions_and_sessions_stay_pinned() {
    let v1 = HttpSampleServer::start(&["--name", "v1"]).await;
    let v2 = HttpSampleServer::start(&["--name", "v2"]).await;
    let split = |w1, w2| {
        table(
            "alpha",
            &[(1, w1, &[("a1", &v1.url)]), (2, w2, &[("a2", &v2.url)])],
        )
    };
    let gateway = TestGateway::start(split(100, 0), |_| {}).await;
    let url = gateway.url("alpha");

    let mut old = Vec::new();
    for _ in 0..3 {
        let client = legacy_client(&url, None).await;
        assert_eq!(server_name(&client), "v1");
        old.push(client);
    }

    gateway.publish(split(0, 100));
    for _ in 0..3 {
        let client = legacy_client(&url, None).await;
        assert_eq!(server_name(&client), "v2");
    }
    // Sessions opened before the switch still reach revision 1.
    for client in &old {
        client
            .peer()
            .call_tool(echo("pinned"))
            .await
            .expect("pinned call");
    }
    let calls = |revision| {
        gateway
            .gateway
            .metrics()
            .revision("alpha", Some(revision))
            .map_or(0, |s| {
                s.requests
                    .iter()
                    .filter(|c| c.method == "tools/call")
                    .map(|c| c.count)
                    .sum::<u64>()
            })
    };
    wait_until(
        "the pinned calls are counted on revision 1",
        DEADLINE,
        async || calls(1) == 3,
    )
    .await;
    assert_eq!(calls(2), 0);
    assert!(v1.logged("tools/call echo"));
    assert!(!v2.logged("tools/call"));
}

#[tokio::test]
async fn a_killed_upstream_is_an_error_not_a_hang_and_new_sessions_recover() {
    let mut doomed = HttpSampleServer::start(&[]).await;
    let gateway = TestGateway::start(
        table("alpha", &[(1, 100, &[("a", &doomed.url)])]),
        |config| {
            config.upstream_timeout = Duration::from_secs(5);
        },
    )
    .await;
    let url = gateway.url("alpha");
    let client = legacy_client(&url, None).await;
    let peer = client.peer().clone();
    let call = tokio::spawn(async move {
        let sleep = CallToolRequestParams::new("sleep").with_arguments(
            serde_json::json!({ "ms": 60_000 })
                .as_object()
                .unwrap()
                .clone(),
        );
        peer.call_tool(sleep).await
    });
    wait_until("the upstream is in the sleep call", DEADLINE, async || {
        doomed.logged("tools/call sleep")
    })
    .await;
    doomed.child.start_kill().expect("kill the upstream");

    let outcome = tokio::time::timeout(DEADLINE, call)
        .await
        .expect("the call ends instead of hanging")
        .expect("the call task");
    let error = outcome.expect_err("a killed upstream cannot answer");
    assert!(format!("{error:?}").contains("upstream"), "{error:?}");
    let stats = gateway.gateway.metrics();
    assert!(
        stats
            .revision("alpha", Some(1))
            .unwrap()
            .totals
            .transport_error
            >= 1
    );

    // The old session's instance is gone: its requests fail fast with a JSON-RPC error.
    let replacement = HttpSampleServer::start(&["--name", "replacement"]).await;
    gateway.publish(table("alpha", &[(2, 100, &[("b", &replacement.url)])]));
    let fresh = legacy_client(&url, None).await;
    assert_eq!(server_name(&fresh), "replacement");
    let result = fresh
        .peer()
        .call_tool(echo("again"))
        .await
        .expect("a call on the new upstream");
    assert_eq!(text(&result), "again");
}

#[tokio::test]
async fn an_unreachable_upstream_is_a_502_with_the_request_id() {
    // A port nothing listens on (bound, then released).
    let port = fleet_testkit::free_port();
    let dead = format!("http://127.0.0.1:{port}/mcp");
    let gateway = TestGateway::start(table("alpha", &[(1, 100, &[("a", &dead)])]), |_| {}).await;
    let response = raw_initialize(&gateway.url("alpha")).await;
    assert_eq!(response.status(), 502);
    let body: serde_json::Value = response.json().await.unwrap();
    assert_eq!(body["id"], 1);
    assert_eq!(body["error"]["code"], -32603);
}

#[tokio::test]
async fn readiness_names_servers_without_instances() {
    let upstream = HttpSampleServer::start(&[]).await;
    let gateway = TestGateway::start(table("alpha", &[(1, 100, &[])]), |_| {}).await;
    let base = format!("http://{}", gateway.address);
    let healthz = reqwest::get(format!("{base}/healthz")).await.unwrap();
    assert_eq!(healthz.status(), 200);
    let readyz = reqwest::get(format!("{base}/readyz")).await.unwrap();
    assert_eq!(readyz.status(), 503);
    let body: serde_json::Value = readyz.json().await.unwrap();
    assert_eq!(
        body["servers_without_instances"],
        serde_json::json!(["alpha"])
    );
    gateway.publish(table("alpha", &[(1, 100, &[("a", &upstream.url)])]));
    let readyz = reqwest::get(format!("{base}/readyz")).await.unwrap();
    assert_eq!(readyz.status(), 200);
}

#[tokio::test]
async fn an_idle_session_ends_upstream_too() {
    let upstream = HttpSampleServer::start(&[]).await;
    let gateway = TestGateway::start(table("alpha", &[(1, 100, &[("a", &upstream.url)])]), |c| {
        c.session_idle_timeout = Duration::from_millis(300);
    })
    .await;
    let response = raw_initialize(&gateway.url("alpha")).await;
    assert_eq!(response.status(), 200);
    let session = response.headers()["mcp-session-id"].clone();
    response.text().await.unwrap();
    assert!(!upstream.logged("DELETE session"));
    wait_until(
        "the gateway ends the idle session upstream",
        DEADLINE,
        async || upstream.logged("DELETE session"),
    )
    .await;
    let ping = raw_post(&gateway.url("alpha"))
        .header("mcp-session-id", session)
        .json(&serde_json::json!({"jsonrpc": "2.0", "id": 2, "method": "ping"}))
        .send()
        .await
        .unwrap();
    assert_eq!(ping.status(), 404);
}

#[tokio::test]
async fn an_answer_stream_that_goes_silent_ends_with_a_timeout_error() {
    let upstream = HttpSampleServer::start(&[]).await;
    let gateway = TestGateway::start(table("alpha", &[(1, 100, &[("a", &upstream.url)])]), |c| {
        c.upstream_timeout = Duration::from_millis(300);
    })
    .await;
    let url = gateway.url("alpha");
    let session = crate::raw_session(&url).await;
    crate::a_stuck_call_times_out(&url, &session, 5).await;
    let stats = gateway.gateway.metrics();
    let alpha = stats.revision("alpha", Some(1)).unwrap();
    assert_eq!(alpha.totals.transport_error, 1, "{alpha:?}");
}
