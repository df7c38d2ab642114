//! Gateway replicas: two gateways with the same session keys and route table, and a
//! client that alternates between them request by request. A session opened on one is
//! served by the other (its sealed id says where it goes), server→client requests still
//! reach the stream of the session that caused them, an MRTR retry (2026-07-28) reaches
//! the revision that asked wherever it lands, and a replica without a server's stdio
//! pipes relays that server to the gateway that holds them.

use fleet_gateway::{GatewayConfig, SessionKeys, TokenConfig};
use fleet_testkit::HttpSampleServer;
use serde_json::{Value, json};
use sha2::{Digest as _, Sha256};

use crate::isolation::{Answer, post, session_with, tools_call};
use crate::modern::modern_request;
use crate::stdio::shared_table;
use crate::{DEADLINE, TestGateway, table};
use fleet_testkit::wait_until;

const KEY: &str = "replica-test-key-0123456789abcdef";
const NEXT_KEY: &str = "replica-test-key-fedcba9876543210";

fn keys(secrets: &[&str]) -> impl FnOnce(&mut GatewayConfig) {
    let keys = SessionKeys::from_secrets(secrets).unwrap();
    move |config| config.session_keys = Some(keys)
}

fn everything() -> Value {
    json!({ "roots": { "listChanged": true }, "sampling": {}, "elicitation": {} })
}

fn elicitation_answer(id: &Value) -> Value {
    json!({
        "jsonrpc": "2.0", "id": id,
        "result": { "action": "accept", "content": { "username": "alice", "email": "a@example.com" } }
    })
}

/// The text of a `tools/call` result message.
fn text(message: &Value) -> String {
    message["result"]["content"][0]["text"]
        .as_str()
        .unwrap_or_else(|| panic!("no text in {message}"))
        .to_owned()
}

#[tokio::test]
async fn a_session_opened_on_one_replica_is_served_by_the_other() {
    let upstream = HttpSampleServer::start(&["--conformance"]).await;
    let routes = || table("alpha", &[(1, 100, &[("a", &upstream.url)])]);
    let one = TestGateway::start(routes(), keys(&[KEY])).await;
    let two = TestGateway::start(routes(), keys(&[KEY])).await;
    let (one, two) = (one.url("alpha"), two.url("alpha"));

    // Opened on one, `notifications/initialized` went to one too (session_with); from
    // here every request alternates.
    let (session, _) = session_with(&one, "2025-11-25", everything(), None).await;
    for (n, url) in [&two, &one, &two].into_iter().enumerate() {
        let call = tools_call(n as u64 + 1, "test_simple_text", json!({}));
        let response = post(url, Some(&session), None, &call).await;
        assert_eq!(response.status(), 200, "request {n} on {url}");
        assert_eq!(response.headers()["mcp-session-id"], session.as_str());
        let (answer, _) = Answer::new(response)
            .until(|m| m["id"] == n as u64 + 1)
            .await;
        assert!(answer.get("result").is_some(), "{answer}");
    }

    // A server→client request comes on the stream of the call that caused it, on one;
    // its answer is POSTed to two, and the call's result arrives on one's stream.
    let call = tools_call(10, "test_elicitation", json!({ "message": "who are you?" }));
    let mut answer = Answer::new(post(&one, Some(&session), None, &call).await);
    let (prompt, _) = answer.until(|m| m["method"] == "elicitation/create").await;
    let reply = post(
        &two,
        Some(&session),
        None,
        &elicitation_answer(&prompt["id"]),
    )
    .await;
    assert_eq!(reply.status(), 202);
    let (result, _) = answer.until(|m| m["id"] == 10).await;
    assert!(text(&result).contains("alice"), "{result}");

    // Ended on two, it is over on one as well: the upstream forgot it.
    let ended = reqwest::Client::new()
        .delete(&two)
        .header("mcp-session-id", &session)
        .send()
        .await
        .unwrap();
    assert!(ended.status().is_success(), "{}", ended.status());
    let after = post(
        &one,
        Some(&session),
        None,
        &tools_call(11, "test_simple_text", json!({})),
    )
    .await;
    assert_eq!(after.status(), 404);
}

#[tokio::test]
async fn gateways_with_keys_of_their_own_do_not_serve_each_others_sessions() {
    let upstream = HttpSampleServer::start(&[]).await;
    let routes = || table("alpha", &[(1, 100, &[("a", &upstream.url)])]);
    // No configured keys: each draws its own.
    let one = TestGateway::start(routes(), |_| {}).await;
    let two = TestGateway::start(routes(), |_| {}).await;
    let (session, _) = session_with(&one.url("alpha"), "2025-11-25", json!({}), None).await;
    let call = tools_call(1, "echo", json!({ "message": "hi" }));
    let there = post(&two.url("alpha"), Some(&session), None, &call).await;
    assert_eq!(there.status(), 404);
    let here = post(&one.url("alpha"), Some(&session), None, &call).await;
    assert_eq!(here.status(), 200);
}

#[tokio::test]
async fn a_rotated_key_opens_old_sessions_and_seals_new_ones() {
    let upstream = HttpSampleServer::start(&[]).await;
    let routes = || table("alpha", &[(1, 100, &[("a", &upstream.url)])]);
    let old = TestGateway::start(routes(), keys(&[KEY])).await;
    let rotated = TestGateway::start(routes(), keys(&[NEXT_KEY, KEY])).await;
    let call = tools_call(1, "echo", json!({ "message": "hi" }));

    let (before, _) = session_with(&old.url("alpha"), "2025-11-25", json!({}), None).await;
    let served = post(&rotated.url("alpha"), Some(&before), None, &call).await;
    assert_eq!(served.status(), 200, "the old key still opens");

    let (after, _) = session_with(&rotated.url("alpha"), "2025-11-25", json!({}), None).await;
    let refused = post(&old.url("alpha"), Some(&after), None, &call).await;
    assert_eq!(
        refused.status(),
        404,
        "sealed with the new key, unknown to the old one"
    );
}

#[tokio::test]
async fn a_session_stays_its_tokens_on_every_replica() {
    let upstream = HttpSampleServer::start(&[]).await;
    let routes = || table("alpha", &[(1, 100, &[("a", &upstream.url)])]);
    let hash = |token: &str| hex(&Sha256::digest(token.as_bytes()));
    let tokens = vec![
        TokenConfig::new("alice", &hash("alice-token"), ["*"]).unwrap(),
        TokenConfig::new("bob", &hash("bob-token"), ["*"]).unwrap(),
    ];
    let configure = |config: &mut GatewayConfig| {
        keys(&[KEY])(config);
        config.tokens = tokens.clone();
    };
    let one = TestGateway::start(routes(), configure).await;
    let two = TestGateway::start(routes(), configure).await;
    let (session, _) = session_with(
        &one.url("alpha"),
        "2025-11-25",
        json!({}),
        Some("alice-token"),
    )
    .await;
    let call = tools_call(1, "echo", json!({ "message": "hi" }));
    let bob = post(&two.url("alpha"), Some(&session), Some("bob-token"), &call).await;
    assert_eq!(bob.status(), 404, "another valid token cannot use it");
    let alice = post(
        &two.url("alpha"),
        Some(&session),
        Some("alice-token"),
        &call,
    )
    .await;
    assert_eq!(alice.status(), 200);
}

#[tokio::test]
async fn a_replica_relays_a_stdio_server_to_its_home() {
    let (routing, _child) = shared_table("pipes", &["--conformance"]);
    let table = routing.table.clone();
    let home = TestGateway::start(routing, keys(&[KEY])).await;
    // The replica has the table but not the pipes.
    let replica = TestGateway::start(table, keys(&[KEY])).await;
    let ready = reqwest::get(format!("http://{}/readyz", replica.address))
        .await
        .unwrap();
    assert_eq!(
        ready.status(),
        503,
        "without a home the stdio server is nowhere"
    );
    replica
        .gateway
        .set_home(Some(format!("http://{}", home.address).parse().unwrap()));
    let ready = reqwest::get(format!("http://{}/readyz", replica.address))
        .await
        .unwrap();
    assert_eq!(ready.status(), 200);
    let (home, replica) = (home.url("pipes"), replica.url("pipes"));

    let (session, _) = session_with(&replica, "2025-11-25", everything(), None).await;
    let call = tools_call(1, "test_elicitation", json!({ "message": "who are you?" }));
    let mut answer = Answer::new(post(&replica, Some(&session), None, &call).await);
    let (prompt, _) = answer.until(|m| m["method"] == "elicitation/create").await;
    let reply = post(
        &home,
        Some(&session),
        None,
        &elicitation_answer(&prompt["id"]),
    )
    .await;
    assert_eq!(reply.status(), 202);
    let (result, _) = answer.until(|m| m["id"] == 1).await;
    assert!(text(&result).contains("alice"), "{result}");
}

/// The JSON-RPC response in a (JSON or SSE) answer.
async fn response_of(answer: reqwest::Response) -> Value {
    let body = answer.text().await.unwrap();
    serde_json::from_str(&body)
        .ok()
        .or_else(|| {
            body.lines()
                .filter_map(|line| line.strip_prefix("data:"))
                .filter_map(|data| serde_json::from_str::<Value>(data.trim()).ok())
                .find(|message| message.get("id").is_some())
        })
        .unwrap_or_else(|| panic!("no response in {body}"))
}

#[tokio::test]
async fn an_mrtr_retry_on_the_other_replica_reaches_the_revision_that_asked() {
    // Each revision's process accepts only the requestStates it issued.
    let stable = HttpSampleServer::start(&["--tools", "confirm", "--name", "stable"]).await;
    let canary = HttpSampleServer::start(&["--tools", "confirm", "--name", "canary"]).await;
    let routes = || {
        table(
            "alpha",
            &[
                (1, 50, &[("s", &stable.url)]),
                (2, 50, &[("c", &canary.url)]),
            ],
        )
    };
    let one = TestGateway::start(routes(), keys(&[KEY])).await;
    let two = TestGateway::start(routes(), keys(&[KEY])).await;
    let mut by = std::collections::BTreeMap::new();
    for n in 0..16 {
        // Asked on one replica, retried on the other: placed by weight, about half of
        // the retries would reach the revision that did not issue the state.
        let (first, retry) = if n % 2 == 0 {
            (&one, &two)
        } else {
            (&two, &one)
        };
        let asked = response_of(
            modern_request(
                &first.url("alpha"),
                1,
                "tools/call",
                json!({ "name": "confirm" }),
            )
            .send()
            .await
            .unwrap(),
        )
        .await;
        assert_eq!(asked["result"]["resultType"], "input_required", "{asked}");
        let state = asked["result"]["requestState"].as_str().unwrap().to_owned();
        assert!(
            !state.contains("stable") && !state.contains("canary"),
            "the client holds the sealed state, not the upstream's: {state}"
        );
        let answered = response_of(
            modern_request(
                &retry.url("alpha"),
                2,
                "tools/call",
                json!({
                    "name": "confirm",
                    "requestState": state,
                    "inputResponses": { "confirm": { "action": "accept", "content": { "ok": true } } }
                }),
            )
            .send()
            .await
            .unwrap(),
        )
        .await;
        *by.entry(text(&answered)).or_insert(0) += 1;
    }
    // Both revisions asked: the split is real, and every retry found its way.
    assert_eq!(
        by.keys().collect::<Vec<_>>(),
        ["confirmed by canary", "confirmed by stable"],
        "{by:?}"
    );
}

#[tokio::test]
async fn a_home_counts_its_replicas_traffic_for_canary_analysis() {
    use fleet_routes::traffic::TrafficSource as _;
    let upstream = HttpSampleServer::start(&[]).await;
    let routes = || table("alpha", &[(1, 100, &[("a", &upstream.url)])]);
    let home = TestGateway::start(routes(), keys(&[KEY])).await;
    let replica = TestGateway::start(routes(), keys(&[KEY])).await;
    replica
        .gateway
        .set_home(Some(format!("http://{}", home.address).parse().unwrap()));
    let (session, _) = session_with(&replica.url("alpha"), "2025-11-25", json!({}), None).await;
    let call = tools_call(1, "echo", json!({ "message": "hi" }));
    for _ in 0..3 {
        let answer = post(&replica.url("alpha"), Some(&session), None, &call).await;
        assert_eq!(answer.status(), 200);
    }
    let answer = post(&home.url("alpha"), None, None, &crate::initialize_body()).await;
    assert_eq!(answer.status(), 200);
    // The replica's initialize, initialized and 3 calls, and the home's own initialize.
    let counted = || {
        home.gateway
            .traffic("alpha")
            .revision(1)
            .map_or(0, |r| r.totals.ok)
    };
    wait_until(
        "the replica's calls are counted at the home",
        DEADLINE,
        async || counted() == 6,
    )
    .await;

    // Reports are authenticated by the keys: anything else is refused, and counts nothing.
    let forged = json!({
        "replica": "forged", "sequence": 1,
        "servers": { "alpha": { "revisions": { "1": {
            "totals": { "ok": 1000, "jsonrpc_error": 0, "transport_error": 0, "rejected": 0 },
            "tool_errors": 0, "latency": { "counts": [], "sum_seconds": 0.0 } } } } }
    });
    let http = reqwest::Client::new();
    let report_url = format!("http://{}/replica/traffic", home.address);
    for body in [forged.to_string(), "AAAA".to_owned()] {
        let refused = http.post(&report_url).body(body).send().await.unwrap();
        assert_eq!(refused.status(), 404);
    }
    assert_eq!(counted(), 6);
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}
