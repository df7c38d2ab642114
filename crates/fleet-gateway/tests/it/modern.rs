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

/// A 2026-07-28 client that answers every elicitation `{ok: true}`.
#[derive(Debug, Clone)]
struct Confirming;

impl rmcp::ClientHandler for Confirming {
    fn get_info(&self) -> rmcp::model::ClientConfig {
        let mut config = rmcp::model::ClientConfig::new(
            rmcp::model::ClientCapabilities::builder()
                .enable_elicitation()
                .build(),
            rmcp::model::Implementation::new("confirming", "0"),
        );
        config.protocol_version = rmcp::model::ProtocolVersion::V_2026_07_28;
        config
    }

    async fn create_elicitation(
        &self,
        _request: rmcp::model::ElicitRequestParams,
        _context: rmcp::service::RequestContext<rmcp::RoleClient>,
    ) -> Result<rmcp::model::ElicitResult, rmcp::ErrorData> {
        Ok(
            rmcp::model::ElicitResult::new(rmcp::model::ElicitationAction::Accept)
                .with_content(serde_json::json!({"ok": true})),
        )
    }
}

#[tokio::test]
async fn mrtr_retries_return_to_the_revision_that_asked() {
    use rmcp::ClientServiceExt as _;
    // Each revision's process accepts only the requestStates it issued.
    let stable = HttpSampleServer::start(&["--tools", "confirm", "--name", "stable"]).await;
    let canary = HttpSampleServer::start(&["--tools", "confirm", "--name", "canary"]).await;
    let gateway = TestGateway::start(
        table(
            "alpha",
            &[
                (1, 50, &[("s", &stable.url)]),
                (2, 50, &[("c", &canary.url)]),
            ],
        ),
        |_| {},
    )
    .await;
    let client = Confirming
        .serve_with_lifecycle(
            crate::transport(&gateway.url("alpha"), None),
            rmcp::ClientLifecycleMode::Discover {
                preferred_versions: vec![rmcp::model::ProtocolVersion::V_2026_07_28],
            },
        )
        .await
        .expect("discover through the gateway");
    // Each call is two stateless requests, each placed by weight on its own; without
    // pinning about half of the retries would reach the other revision and fail.
    let mut by = std::collections::BTreeMap::new();
    for _ in 0..20 {
        let result = client
            .call_tool(rmcp::model::CallToolRequestParams::new("confirm"))
            .await
            .expect("the retry reaches the process that issued its requestState");
        *by.entry(text(&result)).or_insert(0) += 1;
    }
    // Both revisions answered first rounds: the split is real.
    assert_eq!(
        by.keys().collect::<Vec<_>>(),
        ["confirmed by canary", "confirmed by stable"],
        "{by:?}"
    );
}
