//! The gateway with TLS on both sides, on loopback with certificates from a CA made at
//! test time and rmcp as the client: in front of `https://` upstreams (a [`TlsFront`]
//! before `mcp-sample-server`), and serving `https://` to its own clients. Each test runs again in a child process started with `SSL_CERT_FILE` naming
//! that CA (see `fleet_testkit::trusting_a_test_ca`), which is why this is a test binary
//! of its own.

use std::net::{Ipv4Addr, SocketAddr};
use std::time::Duration;

use fleet_gateway::{Gateway, GatewayConfig, ServerTls, serve};
use fleet_routes::table::{Instance, RevisionRoute, RouteTable};
use fleet_testkit::{
    HttpSampleServer, ServerIdentity, TempDir, TlsFront, trusting_a_test_ca, wait_until,
};
use rmcp::model::{CallToolRequestParams, ClientCapabilities, ClientConfig, Implementation};
use rmcp::transport::StreamableHttpClientTransport;
use rmcp::{ClientLifecycleMode, ClientServiceExt as _};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

const DEADLINE: Duration = Duration::from_secs(15);

/// A gateway on a loopback port routing `remote` to `upstream_url`; its `/mcp/remote` URL.
async fn gateway_for(upstream_url: &str) -> String {
    format!(
        "http://{}/mcp/remote",
        start_gateway(upstream_url, None).await
    )
}

/// A gateway on a loopback port routing `remote` to `upstream_url`, serving TLS with
/// `tls` when given; its address.
async fn start_gateway(upstream_url: &str, tls: Option<ServerTls>) -> SocketAddr {
    let listener = tokio::net::TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
        .await
        .expect("bind the gateway");
    let address: SocketAddr = listener.local_addr().unwrap();
    let table = RouteTable::new([(
        "remote".to_owned(),
        vec![RevisionRoute {
            revision: 1,
            weight: 100,
            instances: vec![Instance::http("r", upstream_url)],
        }],
    )])
    .expect("an https upstream is a valid route");
    let (routes, receiver) = tokio::sync::watch::channel(table);
    let mut config = GatewayConfig::new(address);
    config.tls = tls;
    let gateway = Gateway::new(config, receiver, fleet_stdio::StdioInstances::new());
    tokio::spawn(async move {
        // The gateway follows the table only while its sender lives.
        let _routes = routes;
        serve(listener, gateway, std::future::pending()).await
    });
    address
}

/// `identity` as PEM files in `dir`, and the gateway's TLS from them.
fn gateway_tls(dir: &TempDir, identity: &ServerIdentity) -> ServerTls {
    let (cert, key) = (
        dir.path().join("gateway.crt"),
        dir.path().join("gateway.key"),
    );
    identity.write_pem(&cert, &key);
    ServerTls::load(&cert, &key).expect("a usable certificate and key")
}

/// `GET /healthz` on a new connection (so a new handshake), with the process's trust.
async fn healthz_over_https(address: SocketAddr) -> Result<u16, reqwest::Error> {
    let response = reqwest::Client::new()
        .get(format!("https://{address}/healthz"))
        .timeout(DEADLINE)
        .send()
        .await?;
    Ok(response.status().as_u16())
}

#[tokio::test]
async fn mcp_tools_call_works_over_https_to_the_gateway() {
    let Some(identity) = trusting_a_test_ca("mcp_tools_call_works_over_https_to_the_gateway").await
    else {
        return;
    };
    let dir = TempDir::new("gateway-https");
    let upstream = HttpSampleServer::start(&[]).await;
    let address = start_gateway(&upstream.url, Some(gateway_tls(&dir, &identity))).await;

    let client = tokio::time::timeout(
        DEADLINE,
        ClientConfig::new(
            ClientCapabilities::default(),
            Implementation::new("tls-test", "0"),
        )
        .serve_with_lifecycle(
            StreamableHttpClientTransport::from_uri(format!("https://{address}/mcp/remote")),
            ClientLifecycleMode::Initialize,
        ),
    )
    .await
    .expect("initialize in time")
    .expect("initialize over https");
    let call = CallToolRequestParams::new("echo").with_arguments(
        serde_json::json!({ "message": "over https" })
            .as_object()
            .unwrap()
            .clone(),
    );
    let result = client.peer().call_tool(call).await.expect("tools/call");
    let text = serde_json::to_value(&result).unwrap()["content"][0]["text"].clone();
    assert_eq!(text, "over https");
    client.cancel().await.expect("close the session");
}

#[tokio::test]
async fn a_plain_http_client_on_the_tls_port_gets_no_mcp_answer() {
    let dir = TempDir::new("gateway-https-plain");
    let upstream = HttpSampleServer::start(&[]).await;
    let address = start_gateway(
        &upstream.url,
        Some(gateway_tls(&dir, &ServerIdentity::untrusted())),
    )
    .await;
    let body = r#"{"jsonrpc":"2.0","id":1,"method":"tools/list"}"#;
    let request = format!(
        "POST /mcp/remote HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n\
         Accept: application/json, text/event-stream\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    );
    let mut tcp = tokio::net::TcpStream::connect(address).await.unwrap();
    tcp.write_all(request.as_bytes()).await.unwrap();
    let mut answer = Vec::new();
    // The handshake fails and the gateway hangs up; a reset is as good as a close.
    let _ = tokio::time::timeout(DEADLINE, tcp.read_to_end(&mut answer))
        .await
        .expect("the gateway hangs up");
    let answer = String::from_utf8_lossy(&answer);
    assert!(!answer.contains("HTTP/1.1"), "{answer}");
    assert!(!answer.contains("jsonrpc"), "{answer}");
    assert!(
        !upstream.logged("tools/list"),
        "nothing reached the upstream"
    );
}

#[tokio::test]
async fn a_renewed_certificate_is_served_without_a_restart() {
    let Some(trusted) =
        trusting_a_test_ca("a_renewed_certificate_is_served_without_a_restart").await
    else {
        return;
    };
    let dir = TempDir::new("gateway-https-renewal");
    let upstream = HttpSampleServer::start(&[]).await;
    let address = start_gateway(
        &upstream.url,
        Some(gateway_tls(&dir, &ServerIdentity::untrusted())),
    )
    .await;
    assert!(
        healthz_over_https(address).await.is_err(),
        "a certificate from an unknown CA is refused"
    );

    trusted.write_pem(
        &dir.path().join("gateway.crt"),
        &dir.path().join("gateway.key"),
    );
    wait_until(
        "a new handshake shows the renewed certificate",
        DEADLINE,
        async || healthz_over_https(address).await.ok() == Some(200),
    )
    .await;
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
