//! Modern era (2026-07-28, stateless) through the gateway.

use std::time::Duration;

use fleet_testkit::{HttpSampleServer, wait_until};

use crate::stdio::per_session;
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
    wait_until("discover and the call are counted", DEADLINE, async || {
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

/// A 2026-07-28 request as a conforming client sends it: `_meta` in `params` and the
/// standard headers (`Mcp-Name` when the body names a tool).
pub(crate) fn modern_request(
    url: &str,
    id: u64,
    method: &str,
    params: serde_json::Value,
) -> reqwest::RequestBuilder {
    let mut params = params;
    params["_meta"] = serde_json::json!({
        "io.modelcontextprotocol/protocolVersion": "2026-07-28",
        "io.modelcontextprotocol/clientCapabilities": {},
        "io.modelcontextprotocol/clientInfo": { "name": "raw", "version": "0" },
    });
    let mut request = raw_post(url)
        .header("mcp-protocol-version", "2026-07-28")
        .header("mcp-method", method);
    if let Some(name) = params["name"].as_str() {
        request = request.header("mcp-name", name);
    }
    request
        .json(&serde_json::json!({"jsonrpc": "2.0", "id": id, "method": method, "params": params}))
}

/// One header, to replace the value [`modern_request`] set (`header` would add another).
fn replacing(name: &'static str, value: &str) -> reqwest::header::HeaderMap {
    let mut headers = reqwest::header::HeaderMap::new();
    headers.insert(name, value.parse().unwrap());
    headers
}

/// A `tools/call` of `echo` with `_meta` as given, under `MCP-Protocol-Version: version`
/// (unlike [`modern_request`], which writes a conforming `_meta`).
async fn echo_with_meta(
    url: &str,
    id: u64,
    version: &str,
    meta: serde_json::Value,
) -> reqwest::Response {
    let params = serde_json::json!({"name": "echo", "arguments": {"message": "hi"}, "_meta": meta});
    raw_post(url)
        .header("mcp-protocol-version", version)
        .header("mcp-method", "tools/call")
        .header("mcp-name", "echo")
        .json(&serde_json::json!({"jsonrpc": "2.0", "id": id, "method": "tools/call", "params": params}))
        .send()
        .await
        .unwrap()
}

/// (HTTP status, JSON-RPC error code, id) of a JSON error answer.
async fn refusal(response: reqwest::Response) -> (u16, Option<i64>, serde_json::Value) {
    let status = response.status().as_u16();
    let text = response.text().await.unwrap();
    let body: serde_json::Value = serde_json::from_str(&text)
        .unwrap_or_else(|_| panic!("a JSON answer, got {status}: {text}"));
    (status, body["error"]["code"].as_i64(), body["id"].clone())
}

#[tokio::test]
async fn an_unknown_method_on_a_stdio_server_is_404_method_not_found() {
    let (_processes, table) = per_session(&[], 8, Duration::from_secs(60));
    let gateway = TestGateway::start(table, |_| {}).await;
    let url = gateway.url("solo");
    // The server's own -32601 leaves with 404, whether the client takes JSON or SSE.
    for accept in ["application/json", "application/json, text/event-stream"] {
        let response = modern_request(&url, 3, "no/such-method", serde_json::json!({}))
            .header("accept", accept)
            .send()
            .await
            .unwrap();
        assert_eq!(
            refusal(response).await,
            (404, Some(-32601), serde_json::json!(3)),
            "{accept}"
        );
    }
    // Session-era methods 2026-07-28 does not have, though the server would answer them.
    for (id, method) in [(4, "ping"), (5, "initialize"), (6, "logging/setLevel")] {
        let response = modern_request(&url, id, method, serde_json::json!({"level": "info"}))
            .send()
            .await
            .unwrap();
        assert_eq!(
            refusal(response).await,
            (404, Some(-32601), serde_json::json!(id)),
            "{method}"
        );
    }
    // A result still leaves with 200.
    let response = modern_request(&url, 7, "tools/list", serde_json::json!({}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    assert!(response.text().await.unwrap().contains("echo"));
}

#[tokio::test]
async fn a_modern_request_whose_headers_disagree_with_its_body_is_400_on_a_stdio_server() {
    let (_processes, table) = per_session(&["--tools", "echo"], 8, Duration::from_secs(60));
    let gateway = TestGateway::start(table, |_| {}).await;
    let url = gateway.url("solo");
    let call = || serde_json::json!({"name": "echo", "arguments": {"message": "hi"}});

    let version_mismatch = modern_request(&url, 1, "tools/call", call())
        .headers(replacing("mcp-protocol-version", "2099-01-01"))
        .send()
        .await
        .unwrap();
    assert_eq!(
        refusal(version_mismatch).await,
        (400, Some(-32020), serde_json::json!(1))
    );

    let name_mismatch = modern_request(&url, 2, "tools/call", call())
        .headers(replacing("mcp-name", "add"))
        .send()
        .await
        .unwrap();
    assert_eq!(
        refusal(name_mismatch).await,
        (400, Some(-32020), serde_json::json!(2))
    );

    let no_capabilities =
        serde_json::json!({"io.modelcontextprotocol/protocolVersion": "2026-07-28"});
    let missing_meta = echo_with_meta(&url, 3, "2026-07-28", no_capabilities).await;
    assert_eq!(
        refusal(missing_meta).await,
        (400, Some(-32602), serde_json::json!(3))
    );

    // Whitespace around a header value is no part of it, and the Base64 form names
    // the same tool.
    for name in ["  echo  ", "=?base64?ZWNobw==?="] {
        let response = modern_request(&url, 4, "tools/call", call())
            .headers(replacing("mcp-name", name))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 200, "{name}");
        assert!(response.text().await.unwrap().contains("hi"), "{name}");
    }

    // A version the server does not speak: the server's own -32022 leaves with 400.
    let unsupported = serde_json::json!({
        "io.modelcontextprotocol/protocolVersion": "2099-01-01",
        "io.modelcontextprotocol/clientCapabilities": {},
    });
    let response = echo_with_meta(&url, 5, "2099-01-01", unsupported).await;
    assert_eq!(
        refusal(response).await,
        (400, Some(-32022), serde_json::json!(5))
    );
}
