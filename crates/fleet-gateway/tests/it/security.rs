//! Admission through a real socket: tokens, Host, Origin, body size, rate limits, and
//! the JSON-RPC envelope of what clients send.

use fleet_gateway::{RateLimit, TokenConfig};
use fleet_routes::table::{Instance, RevisionRoute, RouteTable};
use sha2::{Digest as _, Sha256};

use fleet_testkit::HttpSampleServer;

use crate::{
    TestGateway, echo, initialize_body, legacy_client, raw_initialize, raw_post, raw_session, text,
};

const ALPHA_TOKEN: &str = "alpha-token-0123456789abcdef";
const BETA_TOKEN: &str = "beta-token-fedcba9876543210";

fn hash(token: &str) -> String {
    Sha256::digest(token.as_bytes())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

fn two_servers(url: &str) -> RouteTable {
    let route = |id: &str| RevisionRoute {
        revision: 1,
        weight: 1,
        instances: vec![Instance::http(id, url)],
    };
    RouteTable::new([
        ("alpha".to_owned(), vec![route("a")]),
        ("beta".to_owned(), vec![route("b")]),
    ])
    .unwrap()
}

/// Headers and body of a response, as text, to look for leaked tokens.
async fn everything(response: reqwest::Response) -> (u16, String) {
    let status = response.status().as_u16();
    let headers = format!("{:?}", response.headers());
    let body = response.text().await.unwrap();
    (status, format!("{headers}\n{body}"))
}

#[tokio::test]
async fn tokens_are_required_scoped_and_never_echoed() {
    let upstream = HttpSampleServer::start(&[]).await;
    let gateway = TestGateway::start(two_servers(&upstream.url), |config| {
        config.tokens = vec![
            TokenConfig::new("alpha-ci", &hash(ALPHA_TOKEN), ["alpha"]).unwrap(),
            TokenConfig::new("beta-ci", &hash(BETA_TOKEN), ["beta"]).unwrap(),
        ];
    })
    .await;
    let alpha = gateway.url("alpha");

    let missing = raw_initialize(&alpha).await;
    assert_eq!(missing.status(), 401);
    assert!(
        missing.headers()["www-authenticate"]
            .to_str()
            .unwrap()
            .starts_with("Bearer error=\"invalid_token\""),
        "{:?}",
        missing.headers()
    );

    let mut seen = Vec::new();
    let wrong = raw_post(&alpha)
        .bearer_auth(format!("{ALPHA_TOKEN}x"))
        .json(&initialize_body())
        .send()
        .await
        .unwrap();
    let (status, all) = everything(wrong).await;
    assert_eq!(status, 401);
    seen.push(all);

    let other = raw_post(&alpha)
        .bearer_auth(BETA_TOKEN)
        .json(&initialize_body())
        .send()
        .await
        .unwrap();
    let (status, all) = everything(other).await;
    assert_eq!(status, 403);
    seen.push(all);

    let ok = raw_post(&alpha)
        .bearer_auth(ALPHA_TOKEN)
        .json(&initialize_body())
        .send()
        .await
        .unwrap();
    let (status, all) = everything(ok).await;
    assert_eq!(status, 200);
    seen.push(all);
    for all in &seen {
        assert!(
            !all.contains(ALPHA_TOKEN) && !all.contains(BETA_TOKEN),
            "{all}"
        );
        assert!(!all.contains(&hash(ALPHA_TOKEN)), "{all}");
    }

    // A real client with the right token works end to end.
    let client = legacy_client(&alpha, Some(ALPHA_TOKEN)).await;
    let result = client.peer().call_tool(echo("authorized")).await.unwrap();
    assert_eq!(text(&result), "authorized");
    let rejected = gateway.gateway.metrics();
    assert!(rejected.revision("alpha", None).unwrap().totals.rejected >= 3);
}

#[tokio::test]
async fn forged_origins_and_hosts_are_forbidden() {
    let upstream = HttpSampleServer::start(&[]).await;
    let gateway = TestGateway::start(two_servers(&upstream.url), |_| {}).await;
    let alpha = gateway.url("alpha");
    for origin in [
        "http://evil.example",
        "http://localhost.evil.example:80",
        "null",
    ] {
        let response = raw_post(&alpha)
            .header("origin", origin)
            .json(&initialize_body())
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 403, "{origin}");
    }
    let local_page = raw_post(&alpha)
        .header("origin", "http://localhost:5173")
        .json(&initialize_body())
        .send()
        .await
        .unwrap();
    assert_eq!(local_page.status(), 200);

    let rebinding = raw_post(&alpha)
        .header(
            "host",
            format!("attacker.example:{}", gateway.address.port()),
        )
        .json(&initialize_body())
        .send()
        .await
        .unwrap();
    assert_eq!(rebinding.status(), 403);
    let by_name = raw_post(&alpha)
        .header("host", format!("localhost:{}", gateway.address.port()))
        .json(&initialize_body())
        .send()
        .await
        .unwrap();
    assert_eq!(by_name.status(), 200);
}

#[tokio::test]
async fn oversize_bodies_are_refused() {
    let upstream = HttpSampleServer::start(&[]).await;
    let gateway = TestGateway::start(two_servers(&upstream.url), |config| {
        config.max_body_bytes = 1024;
    })
    .await;
    let mut body = initialize_body();
    body["params"]["padding"] = "x".repeat(2048).into();
    let response = raw_post(&gateway.url("alpha"))
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 413);
    assert!(!upstream.logged("initialize"));
}

#[tokio::test]
async fn the_rate_limit_answers_429_with_retry_after() {
    let upstream = HttpSampleServer::start(&[]).await;
    let gateway = TestGateway::start(two_servers(&upstream.url), |config| {
        config.rate_limit = Some(RateLimit {
            per_second: 0.5,
            burst: 2,
        });
    })
    .await;
    let alpha = gateway.url("alpha");
    for _ in 0..2 {
        let response = raw_initialize(&alpha).await;
        assert_eq!(response.status(), 200);
    }
    let limited = raw_initialize(&alpha).await;
    assert_eq!(limited.status(), 429);
    let retry_after: u64 = limited.headers()["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!((1..=2).contains(&retry_after), "{retry_after}");
}

/// Regression (issue 13): a message without a valid JSON-RPC 2.0 envelope, or with an id
/// no upstream can echo, was forwarded; a stdio server ignores it and the client waited
/// for the upstream timeout. The gateway answers 400 with Invalid Request at once, with
/// the request's id when it has a usable one, and the session goes on.
#[tokio::test]
async fn bad_envelopes_get_invalid_request_at_once_from_http_and_stdio_upstreams() {
    let upstream = HttpSampleServer::start(&[]).await;
    let (stdio, _child) = crate::stdio::shared_table("memory", &["--tools", "echo"]);
    let tables = stdio.and(crate::table("alpha", &[(1, 100, &[("a", &upstream.url)])]));
    // Far longer than the test waits: a forwarded message would hang, not time out.
    let gateway = TestGateway::start(tables, |c| {
        c.upstream_timeout = crate::DEADLINE * 10;
    })
    .await;
    let many_digits = format!(
        r#"{{"jsonrpc":"2.0","id":1{},"method":"ping"}}"#,
        "0".repeat(5000)
    );
    let cases = [
        (r#"{"id":1,"method":"ping"}"#, serde_json::json!(1)),
        (
            r#"{"jsonrpc":true,"id":2,"method":"ping"}"#,
            serde_json::json!(2),
        ),
        (
            r#"{"jsonrpc":"1.0","id":"three","method":"ping"}"#,
            serde_json::json!("three"),
        ),
        (
            r#"{"jsonrpc":"2.0","id":1e400,"method":"ping"}"#,
            serde_json::Value::Null,
        ),
        (many_digits.as_str(), serde_json::Value::Null),
        (
            r#"[{"jsonrpc":"2.0","id":4,"method":"ping"}]"#,
            serde_json::Value::Null,
        ),
    ];
    for server in ["alpha", "memory"] {
        let url = gateway.url(server);
        let session = raw_session(&url).await;
        for (body, id) in &cases {
            let sent = raw_post(&url)
                .header("mcp-session-id", session.clone())
                .header("content-type", "application/json")
                .body(body.to_string())
                .send();
            let response = tokio::time::timeout(crate::DEADLINE, sent)
                .await
                .unwrap_or_else(|_| panic!("{server}: no answer in time to {body:.80}"))
                .unwrap();
            assert_eq!(response.status(), 400, "{server}: {body:.80}");
            let answer: serde_json::Value = response.json().await.unwrap();
            assert_eq!(answer["error"]["code"], -32600, "{server}: {answer}");
            assert_eq!(&answer["id"], id, "{server}: {answer}");
            assert!(
                answer.to_string().len() < 1024,
                "the refusal echoes the body: {answer}"
            );
        }
        let ping = raw_post(&url)
            .header("mcp-session-id", session.clone())
            .json(&serde_json::json!({"jsonrpc": "2.0", "id": 5, "method": "ping"}))
            .send()
            .await
            .unwrap();
        assert_eq!(ping.status(), 200, "{server}: the session goes on");
        assert!(ping.text().await.unwrap().contains("\"id\":5"));
    }
}
