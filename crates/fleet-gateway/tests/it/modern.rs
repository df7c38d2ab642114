//! Modern era (2026-07-28, stateless) through the gateway.

use fleet_testkit::{HttpSampleServer, wait_until};

use crate::{DEADLINE, TestGateway, echo, modern_client, raw_post, table, text};

#[tokio::test]
async fn a_stateless_call_through_the_gateway() {
    let upstream = HttpSampleServer::start(&["--era", "modern"]).await;
    let gateway =
        TestGateway::start(table("alpha", &[(1, 100, &[("a", &upstream.url)])]), |_| {}).await;
    let client = modern_client(&gateway.url("alpha")).await;
    let result = client
        .peer()
        .call_tool(echo("stateless"))
        .await
        .expect("tools/call");
    assert_eq!(text(&result), "stateless");
    assert!(upstream.logged("server/discover"));
    // An SSE answer is counted when its stream ends, just after the client has read it.
    wait_until("discover and the call are counted", DEADLINE, || {
        let snapshot = gateway.gateway.metrics();
        snapshot.revision("alpha", Some(1)).is_some_and(|stats| {
            ["server/discover", "tools/call"]
                .iter()
                .all(|method| stats.requests.iter().any(|c| c.method == *method))
        })
    })
    .await;
}

#[tokio::test]
async fn a_legacy_upstream_answers_discover_so_clients_fall_back() {
    let upstream = HttpSampleServer::start(&["--era", "legacy"]).await;
    let gateway =
        TestGateway::start(table("alpha", &[(1, 100, &[("a", &upstream.url)])]), |_| {}).await;
    let response = raw_post(&gateway.url("alpha"))
        .header("mcp-protocol-version", "2026-07-28")
        .header("mcp-method", "server/discover")
        .json(&serde_json::json!({"jsonrpc":"2.0","id":9,"method":"server/discover","params":{}}))
        .send()
        .await
        .unwrap();
    let body = response.text().await.unwrap();
    assert!(body.contains("-32601"), "{body}");
}

#[tokio::test]
async fn a_mismatched_mcp_method_header_is_refused() {
    let upstream = HttpSampleServer::start(&["--era", "modern"]).await;
    let gateway =
        TestGateway::start(table("alpha", &[(1, 100, &[("a", &upstream.url)])]), |_| {}).await;
    let response = raw_post(&gateway.url("alpha"))
        .header("mcp-protocol-version", "2026-07-28")
        .header("mcp-method", "tools/list")
        .json(&serde_json::json!({"jsonrpc":"2.0","id":5,"method":"tools/call","params":{"name":"echo"}}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 400);
    let body: serde_json::Value = response.json().await.unwrap();
    assert_eq!(body["error"]["code"], -32020);
    assert_eq!(body["id"], 5);
    assert!(!upstream.logged("tools/call"));
}
