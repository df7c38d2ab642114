//! Sessions that cannot touch each other: on a shared stdio process, server→client
//! requests reach only the session whose call caused them and only that session may
//! answer; the process is initialized with what the gateway can relay, and each
//! client is answered in the revision it asked for; a session belongs to its token.

use std::process::Stdio;

use fleet_stdio::{StdioEndpoint, StdioLink};
use serde_json::{Value, json};
use sha2::{Digest as _, Sha256};

use crate::stdio::shared_table;
use crate::{DEADLINE, TestGateway, raw_post};

/// Every client capability a server can ask something of.
fn all_capabilities() -> Value {
    json!({ "roots": { "listChanged": true }, "sampling": {}, "elicitation": {} })
}

/// A raw legacy session: `initialize` asking for `version` with `capabilities`, then
/// `notifications/initialized`. Its session id and the `initialize` result.
pub(crate) async fn session_with(
    url: &str,
    version: &str,
    capabilities: Value,
    token: Option<&str>,
) -> (String, Value) {
    let initialize = json!({
        "jsonrpc": "2.0", "id": 0, "method": "initialize",
        "params": {
            "protocolVersion": version,
            "capabilities": capabilities,
            "clientInfo": { "name": "isolation-test", "version": "0" }
        }
    });
    let response = post(url, None, token, &initialize).await;
    assert_eq!(response.status(), 200);
    let session = response.headers()["mcp-session-id"]
        .to_str()
        .unwrap()
        .to_owned();
    let answer = messages(&response.text().await.unwrap())
        .into_iter()
        .find(|m| m["id"] == 0)
        .expect("an initialize answer");
    let initialized = json!({ "jsonrpc": "2.0", "method": "notifications/initialized" });
    let response = post(url, Some(&session), token, &initialized).await;
    assert_eq!(response.status(), 202);
    (session, answer["result"].clone())
}

async fn session(url: &str) -> String {
    session_with(url, "2025-11-25", all_capabilities(), None)
        .await
        .0
}

pub(crate) async fn post(
    url: &str,
    session: Option<&str>,
    token: Option<&str>,
    body: &Value,
) -> reqwest::Response {
    let mut request = raw_post(url).json(body);
    if let Some(session) = session {
        request = request.header("mcp-session-id", session);
    }
    if let Some(token) = token {
        request = request.bearer_auth(token);
    }
    request.send().await.unwrap()
}

pub(crate) fn tools_call(id: u64, tool: &str, arguments: Value) -> Value {
    json!({
        "jsonrpc": "2.0", "id": id, "method": "tools/call",
        "params": { "name": tool, "arguments": arguments }
    })
}

/// The JSON-RPC messages in an SSE body (or a JSON one).
fn messages(body: &str) -> Vec<Value> {
    if let Ok(message) = serde_json::from_str::<Value>(body) {
        return vec![message];
    }
    body.lines()
        .filter_map(|line| line.strip_prefix("data:"))
        .filter_map(|data| serde_json::from_str(data.trim()).ok())
        .collect()
}

/// An SSE answer read as it arrives.
pub(crate) struct Answer {
    response: reqwest::Response,
    seen: String,
}

impl Answer {
    pub(crate) fn new(response: reqwest::Response) -> Self {
        assert_eq!(response.status(), 200);
        Self {
            response,
            seen: String::new(),
        }
    }

    /// The first message matching `wanted` (waiting for it), and every message so far.
    pub(crate) async fn until(&mut self, wanted: impl Fn(&Value) -> bool) -> (Value, Vec<Value>) {
        tokio::time::timeout(DEADLINE, async {
            loop {
                let all = messages(&self.seen);
                if let Some(found) = all.iter().find(|m| wanted(m)) {
                    return (found.clone(), all);
                }
                let chunk = self
                    .response
                    .chunk()
                    .await
                    .unwrap()
                    .unwrap_or_else(|| panic!("the stream ended; it carried: {}", self.seen));
                self.seen.push_str(&String::from_utf8_lossy(&chunk));
            }
        })
        .await
        .unwrap_or_else(|_| panic!("not seen in time; the stream carried: {}", self.seen))
    }
}

fn elicitation_answer(id: &Value, username: &str) -> Value {
    json!({
        "jsonrpc": "2.0", "id": id,
        "result": { "action": "accept", "content": { "username": username, "email": "x@example.com" } }
    })
}

#[tokio::test]
async fn a_session_cannot_answer_another_sessions_elicitation() {
    let (table, _child) = shared_table("shared", &["--conformance"]);
    let gateway = TestGateway::start(table, |_| {}).await;
    let url = gateway.url("shared");
    let alice = session(&url).await;
    let mallory = session(&url).await;

    let call = tools_call(1, "test_elicitation", json!({ "message": "who are you?" }));
    let mut answer = Answer::new(post(&url, Some(&alice), None, &call).await);
    let (prompt, _) = answer.until(|m| m["method"] == "elicitation/create").await;

    // Another session answers alice's prompt: refused, never forwarded.
    let forged = elicitation_answer(&prompt["id"], "mallory");
    let refused = post(&url, Some(&mallory), None, &forged).await;
    assert_eq!(refused.status(), 400);
    let body: Value = refused.json().await.unwrap();
    assert_eq!(body["error"]["code"], -32600, "{body}");

    // Alice's own answer is the one her tool gets.
    let genuine = elicitation_answer(&prompt["id"], "alice");
    assert_eq!(post(&url, Some(&alice), None, &genuine).await.status(), 202);
    let (result, _) = answer.until(|m| m["id"] == 1).await;
    let text = result["result"]["content"][0]["text"].as_str().unwrap();
    assert!(text.contains("alice"), "{text}");
    assert!(!text.contains("mallory"), "{text}");
}

#[tokio::test]
async fn a_prompt_whose_session_cannot_be_told_is_refused_not_shown_to_another() {
    let (table, _child) = shared_table("shared", &["--conformance"]);
    let gateway = TestGateway::start(table, |_| {}).await;
    let url = gateway.url("shared");
    let (alice, bob) = (session(&url).await, session(&url).await);

    // Alice has a call in flight; then bob's tool asks its client something. Stdio
    // carries no hint of which call a server request belongs to.
    let sleep = tools_call(1, "sleep", json!({ "ms": 3_000 }));
    let mut alice_answer = Answer::new(post(&url, Some(&alice), None, &sleep).await);
    let call = tools_call(
        2,
        "test_elicitation",
        json!({ "message": "secret question" }),
    );
    let mut bob_answer = Answer::new(post(&url, Some(&bob), None, &call).await);

    // Nobody is asked: bob's tool hears that its client could not be asked.
    let (result, seen) = bob_answer.until(|m| m["id"] == 2).await;
    assert!(
        seen.iter().all(|m| m["method"] != "elicitation/create"),
        "{seen:?}"
    );
    let text = result["result"]["content"][0]["text"].as_str().unwrap();
    assert!(text.contains("elicitation failed"), "{text}");
    let (_, seen) = alice_answer.until(|m| m["id"] == 1).await;
    assert!(
        seen.iter().all(|m| m["method"] != "elicitation/create"),
        "alice was shown bob's prompt: {seen:?}"
    );

    // Alone in flight, bob's call reaches bob.
    let call = tools_call(3, "test_elicitation", json!({ "message": "again" }));
    let mut bob_answer = Answer::new(post(&url, Some(&bob), None, &call).await);
    let (prompt, _) = bob_answer
        .until(|m| m["method"] == "elicitation/create")
        .await;
    let reply = elicitation_answer(&prompt["id"], "bob");
    assert_eq!(post(&url, Some(&bob), None, &reply).await.status(), 202);
    let (result, _) = bob_answer.until(|m| m["id"] == 3).await;
    assert!(
        result["result"]["content"][0]["text"]
            .as_str()
            .unwrap()
            .contains("bob")
    );
}

#[tokio::test]
async fn a_prompt_needing_a_capability_the_session_did_not_declare_is_refused() {
    let (table, _child) = shared_table("shared", &["--conformance"]);
    let gateway = TestGateway::start(table, |_| {}).await;
    let url = gateway.url("shared");
    let (plain, _) = session_with(&url, "2025-11-25", json!({}), None).await;
    let call = tools_call(1, "test_elicitation", json!({ "message": "hi" }));
    let mut answer = Answer::new(post(&url, Some(&plain), None, &call).await);
    let (result, seen) = answer.until(|m| m["id"] == 1).await;
    assert!(
        seen.iter().all(|m| m["method"] != "elicitation/create"),
        "{seen:?}"
    );
    let text = result["result"]["content"][0]["text"].as_str().unwrap();
    assert!(text.contains("elicitation failed"), "{text}");
}

#[tokio::test]
async fn each_session_gets_the_protocol_revision_it_asked_for() {
    let (table, _child) = shared_table("shared", &[]);
    let gateway = TestGateway::start(table, |_| {}).await;
    let url = gateway.url("shared");
    // The first session (a health check, in a fleet) initializes the process.
    let (_, first) = session_with(&url, "2025-11-25", json!({}), None).await;
    assert_eq!(first["protocolVersion"], "2025-11-25");
    let (older, result) = session_with(&url, "2025-06-18", all_capabilities(), None).await;
    assert_eq!(result["protocolVersion"], "2025-06-18", "{result}");
    assert_eq!(result["serverInfo"], first["serverInfo"]);
    // And the session works in it.
    let echo = tools_call(1, "echo", json!({ "message": "old client" }));
    let body = post(&url, Some(&older), None, &echo)
        .await
        .text()
        .await
        .unwrap();
    assert!(body.contains("old client"), "{body}");
}

/// server-everything offers `get-roots-list` only to a client that declared roots: a
/// shared process initialized by a client without them (a health check) hid it from
/// every later client.
#[tokio::test]
async fn a_shared_process_is_initialized_with_what_the_gateway_can_relay() {
    let mut command = crate::peers::node_script("mcp-server-everything");
    command
        .arg("stdio")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped());
    let mut child = command.spawn().expect("start server-everything");
    let link = StdioLink::shared(
        "everything-0",
        child.stdin.take().unwrap(),
        child.stdout.take().unwrap(),
    );
    let table = crate::Routing::stdio("everything", "everything-0", StdioEndpoint::Shared(link));
    let gateway = TestGateway::start(table, |_| {}).await;
    let url = gateway.url("everything");
    // First in: a client without capabilities.
    session_with(&url, "2025-11-25", json!({}), None).await;
    let (client, _) = session_with(&url, "2025-11-25", all_capabilities(), None).await;
    let list = json!({ "jsonrpc": "2.0", "id": 1, "method": "tools/list" });
    let body = post(&url, Some(&client), None, &list)
        .await
        .text()
        .await
        .unwrap();
    assert!(body.contains("get-roots-list"), "{body}");

    // Its roots/list reaches the client that called it, whose answer comes back.
    let call = tools_call(2, "get-roots-list", json!({}));
    let mut answer = Answer::new(post(&url, Some(&client), None, &call).await);
    let (request, _) = answer.until(|m| m["method"] == "roots/list").await;
    let roots = json!({
        "jsonrpc": "2.0", "id": request["id"],
        "result": { "roots": [{ "uri": "file:///work/isolated-root", "name": "mine" }] }
    });
    assert_eq!(post(&url, Some(&client), None, &roots).await.status(), 202);
    let (result, _) = answer.until(|m| m["id"] == 2).await;
    assert!(result.to_string().contains("isolated-root"), "{result}");
}

#[tokio::test]
async fn a_session_belongs_to_the_token_that_opened_it() {
    let (table, _child) = shared_table("shared", &[]);
    let hash = |token: &str| format!("{:x}", Sha256::digest(token.as_bytes()));
    let gateway = TestGateway::start(table, |config| {
        config.tokens = vec![
            fleet_gateway::TokenConfig::new("alpha", &hash("alpha-secret"), ["*"]).unwrap(),
            fleet_gateway::TokenConfig::new("beta", &hash("beta-secret"), ["*"]).unwrap(),
        ];
    })
    .await;
    let url = gateway.url("shared");
    let (alpha_session, _) =
        session_with(&url, "2025-11-25", json!({}), Some("alpha-secret")).await;
    let echo = tools_call(1, "echo", json!({ "message": "mine" }));
    let other = post(&url, Some(&alpha_session), Some("beta-secret"), &echo).await;
    assert_eq!(other.status(), 404);
    let delete = raw_post(&url)
        .header("mcp-session-id", &alpha_session)
        .bearer_auth("beta-secret")
        .build()
        .unwrap();
    let mut delete = delete;
    *delete.method_mut() = reqwest::Method::DELETE;
    assert_eq!(
        reqwest::Client::new()
            .execute(delete)
            .await
            .unwrap()
            .status(),
        404
    );
    // Its own token still drives it.
    let body = post(&url, Some(&alpha_session), Some("alpha-secret"), &echo)
        .await
        .text()
        .await
        .unwrap();
    assert!(body.contains("mine"), "{body}");
}
