//! Session limits: the gateway's, a token's and a per-session pool's. Over a limit
//! the least recently used idle session gives way; busy sessions never do.

use std::time::Duration;

use fleet_gateway::TokenConfig;
use serde_json::{Value, json};
use sha2::{Digest as _, Sha256};

use crate::isolation::{Answer, post, session_with, tools_call};
use crate::stdio::{per_session, shared_table};
use crate::{DEADLINE, TestGateway};

fn tokens(names: &[&str]) -> Vec<TokenConfig> {
    names
        .iter()
        .map(|name| {
            let hash = format!("{:x}", Sha256::digest(secret(name).as_bytes()));
            TokenConfig::new(*name, &hash, ["*"]).unwrap()
        })
        .collect()
}

fn secret(name: &str) -> String {
    format!("{name}-secret-0123456789")
}

async fn open(url: &str, token: Option<&str>) -> String {
    let secret = token.map(secret);
    session_with(url, "2025-11-25", json!({}), secret.as_deref())
        .await
        .0
}

/// The HTTP status of an `echo` on `session`.
async fn echo(url: &str, session: &str, token: Option<&str>) -> u16 {
    let secret = token.map(secret);
    let call = tools_call(9, "echo", json!({ "message": "still here?" }));
    post(url, Some(session), secret.as_deref(), &call)
        .await
        .status()
        .as_u16()
}

#[tokio::test]
async fn at_the_gateways_limit_the_least_recently_used_idle_session_gives_way() {
    let (table, _child) = shared_table("shared", &[]);
    let gateway = TestGateway::start(table, |config| config.max_sessions = 2).await;
    let url = gateway.url("shared");
    let first = open(&url, None).await;
    let second = open(&url, None).await;
    assert_eq!(echo(&url, &first, None).await, 200);
    // `second` is the least recently used now.
    let third = open(&url, None).await;
    assert_eq!(echo(&url, &second, None).await, 404);
    assert_eq!(echo(&url, &first, None).await, 200);
    assert_eq!(echo(&url, &third, None).await, 200);
}

#[tokio::test]
async fn a_token_at_its_limit_gives_up_its_own_oldest_session_never_anothers() {
    let (table, _child) = shared_table("shared", &[]);
    let gateway = TestGateway::start(table, |config| {
        config.tokens = tokens(&["alpha", "beta"]);
        config.max_sessions_per_token = 2;
    })
    .await;
    let url = gateway.url("shared");
    let beta = open(&url, Some("beta")).await;
    let mut alpha = Vec::new();
    for _ in 0..3 {
        alpha.push(open(&url, Some("alpha")).await);
    }
    assert_eq!(echo(&url, &alpha[0], Some("alpha")).await, 404);
    assert_eq!(echo(&url, &alpha[1], Some("alpha")).await, 200);
    assert_eq!(echo(&url, &alpha[2], Some("alpha")).await, 200);
    // Beta's session was the least recently used of all, and is not alpha's to end.
    assert_eq!(echo(&url, &beta, Some("beta")).await, 200);
}

#[tokio::test]
async fn busy_sessions_are_never_ended_to_make_room() {
    let (table, _child) = shared_table("shared", &[]);
    let gateway = TestGateway::start(table, |config| config.max_sessions = 1).await;
    let url = gateway.url("shared");
    let busy = open(&url, None).await;
    let sleep = tools_call(1, "sleep", json!({ "ms": 1_500 }));
    let mut answer = Answer::new(post(&url, Some(&busy), None, &sleep).await);

    let initialize = json!({
        "jsonrpc": "2.0", "id": 7, "method": "initialize",
        "params": { "protocolVersion": "2025-11-25", "capabilities": {},
                    "clientInfo": { "name": "limits-test", "version": "0" } }
    });
    let refused = post(&url, None, None, &initialize).await;
    assert_eq!(refused.status(), 503);
    let body: Value = refused.json().await.unwrap();
    assert_eq!(body["id"], 7, "{body}");
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("limit of 1 sessions"),
        "{body}"
    );

    // Once its call is answered it is idle, and gives way.
    answer.until(|m| m["id"] == 1).await;
    drop(answer);
    let newcomer = fleet_testkit::wait_until(
        "a session once the busy one is idle",
        DEADLINE,
        async || {
            let response = post(&url, None, None, &initialize).await;
            (response.status() == 200).then_some(response)
        },
    )
    .await;
    assert!(newcomer.headers().contains_key("mcp-session-id"));
    assert_eq!(echo(&url, &busy, None).await, 404);
}

#[tokio::test]
async fn one_token_cannot_keep_a_per_session_pool_to_itself() {
    let (spawner, table) = per_session(&[], 2, Duration::from_secs(600));
    let gateway =
        TestGateway::start(table, |config| config.tokens = tokens(&["alpha", "beta"])).await;
    let url = gateway.url("solo");
    let older = open(&url, Some("alpha")).await;
    let newer = open(&url, Some("alpha")).await;
    assert_eq!(echo(&url, &newer, Some("alpha")).await, 200);
    // The pool is full of alpha's idle sessions; beta still gets in, in place of
    // alpha's least recently used one.
    let beta = open(&url, Some("beta")).await;
    assert_eq!(echo(&url, &beta, Some("beta")).await, 200);
    assert_eq!(echo(&url, &older, Some("alpha")).await, 404);
    assert_eq!(echo(&url, &newer, Some("alpha")).await, 200);
    assert!(
        spawner.live() <= 2,
        "never more processes than the pool allows"
    );
}

#[tokio::test]
async fn an_initialize_the_server_refuses_mints_no_session_and_holds_no_process() {
    // A 2026-07-28-only server refuses the legacy handshake.
    let (spawner, table) = per_session(&["--era", "modern"], 2, Duration::from_secs(600));
    let gateway = TestGateway::start(table, |_| {}).await;
    let url = gateway.url("solo");
    for _ in 0..3 {
        let response = crate::raw_initialize(&url).await;
        assert!(
            !response.headers().contains_key("mcp-session-id"),
            "{:?}",
            response.headers()
        );
        let body = response.text().await.unwrap();
        assert!(body.contains("\"error\""), "{body}");
    }
    fleet_testkit::wait_until(
        "every refused session's process is given back",
        DEADLINE,
        async || spawner.live() == 0,
    )
    .await;
}
