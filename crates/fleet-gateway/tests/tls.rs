//! The gateway in front of `https://` upstreams: real TLS on loopback (a [`TlsFront`]
//! before `mcp-sample-server`), certificates from a CA made at test time, rmcp as the
//! client. Each test runs again in a child process started with `SSL_CERT_FILE` naming
//! that CA (see `fleet_testkit::trusting_a_test_ca`), which is why this is a test binary
//! of its own.

use std::net::{Ipv4Addr, SocketAddr};
use std::time::Duration;

use fleet_gateway::{Gateway, GatewayConfig, RevisionRoute, RouteTable, Upstream, serve};
use fleet_testkit::{HttpSampleServer, ServerIdentity, TlsFront, trusting_a_test_ca};
use rmcp::model::{CallToolRequestParams, ClientCapabilities, ClientConfig, Implementation};
use rmcp::transport::StreamableHttpClientTransport;
use rmcp::{ClientLifecycleMode, ClientServiceExt as _};

const DEADLINE: Duration = Duration::from_secs(15);

/// A gateway on a loopback port routing `server` to `upstream_url`; its `/mcp/server` URL.
async fn gateway_for(upstream_url: &str) -> String {
    let listener = tokio::net::TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
        .await
        .expect("bind the gateway");
    let address: SocketAddr = listener.local_addr().unwrap();
    let table = RouteTable::new([(
        "remote".to_owned(),
        vec![RevisionRoute {
            revision: 1,
            weight: 100,
            instances: vec![Upstream::http("r", upstream_url)],
        }],
    )])
    .expect("an https upstream is a valid route");
    let (routes, receiver) = tokio::sync::watch::channel(table);
    let gateway = Gateway::new(GatewayConfig::new(address), receiver);
    tokio::spawn(async move {
        // The gateway follows the table only while its sender lives.
        let _routes = routes;
        serve(listener, gateway, std::future::pending()).await
    });
    format!("http://{address}/mcp/remote")
}

#[tokio::test]
async fn a_legacy_session_reaches_an_https_upstream() {
    let Some(identity) = trusting_a_test_ca("a_legacy_session_reaches_an_https_upstream").await
    else {
        return;
    };
    let upstream = HttpSampleServer::start(&[]).await;
    let front = TlsFront::start(&upstream.url, identity).await;
    let url = gateway_for(&front.url).await;

    let client = tokio::time::timeout(
        DEADLINE,
        ClientConfig::new(
            ClientCapabilities::default(),
            Implementation::new("tls-test", "0"),
        )
        .serve_with_lifecycle(
            StreamableHttpClientTransport::from_uri(url),
            ClientLifecycleMode::Initialize,
        ),
    )
    .await
    .expect("initialize in time")
    .expect("initialize through the gateway");
    let tools = client.peer().list_all_tools().await.expect("tools/list");
    assert!(tools.iter().any(|t| t.name == "echo"), "{tools:?}");
    let call = CallToolRequestParams::new("echo").with_arguments(
        serde_json::json!({ "message": "over tls" })
            .as_object()
            .unwrap()
            .clone(),
    );
    let result = client.peer().call_tool(call).await.expect("tools/call");
    let text = serde_json::to_value(&result).unwrap()["content"][0]["text"].clone();
    assert_eq!(text, "over tls");
    assert!(
        upstream.logged("tools/call"),
        "the call went to the upstream"
    );
    client.cancel().await.expect("close the session");
}

#[tokio::test]
async fn an_upstream_certificate_from_an_unknown_ca_is_refused() {
    let Some(_) = trusting_a_test_ca("an_upstream_certificate_from_an_unknown_ca_is_refused").await
    else {
        return;
    };
    let upstream = HttpSampleServer::start(&[]).await;
    let front = TlsFront::start(&upstream.url, ServerIdentity::untrusted()).await;
    let url = gateway_for(&front.url).await;

    let body = serde_json::json!({
        "jsonrpc": "2.0", "id": 7, "method": "initialize",
        "params": {
            "protocolVersion": "2025-11-25",
            "capabilities": {},
            "clientInfo": { "name": "raw", "version": "0" }
        }
    });
    let response = tokio::time::timeout(
        DEADLINE,
        reqwest::Client::new()
            .post(url)
            .header("accept", "application/json, text/event-stream")
            .header("content-type", "application/json")
            .body(body.to_string())
            .send(),
    )
    .await
    .expect("an answer, not a hang")
    .expect("the gateway answers");
    assert_eq!(response.status(), 502);
    let answer: serde_json::Value =
        serde_json::from_slice(&response.bytes().await.expect("the body")).expect("JSON");
    assert_eq!(answer["id"], 7);
    assert_eq!(answer["error"]["code"], -32603);
    assert_eq!(answer["error"]["message"], "upstream unreachable");
    assert!(
        !upstream.logged("initialize"),
        "nothing reached the upstream"
    );
}
