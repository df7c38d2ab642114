//! The admin TCP listener's actions behind admin tokens (issue 18): who may abort, promote,
//! pause, resume and roll back over HTTP, what everyone else gets, and that admin and gateway
//! tokens never open each other's doors. Real control plane, real HTTP over TCP.

use super::canary::{canary_fleet, wait_for_promote};
use super::*;
use fleet_api::types::{HistoryEntry, RolloutState};
use sha2::{Digest as _, Sha256};

const ADMIN_TOKEN: &str = "mcpf_admin-token-for-the-ops-team";
const GATEWAY_TOKEN: &str = "mcpf_gateway-token-for-ci";

pub(super) fn sha256_hex(token: &str) -> String {
    Sha256::digest(token.as_bytes())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// The canary fleet with a gateway token `ci`, the admin listener and admin token `ops`.
fn guarded_fleet(args: &str, rollout: &str) -> String {
    format!(
        "{}  auth:\n    tokens:\n      - {{ name: ci, sha256: \"{}\", servers: [\"*\"] }}\nadmin:\n  listen: 127.0.0.1:0\n  tokens:\n    - {{ name: ops, sha256: \"{}\" }}\n",
        canary_fleet(args, rollout),
        sha256_hex(GATEWAY_TOKEN),
        sha256_hex(ADMIN_TOKEN),
    )
}

/// An answer of the admin listener.
struct Reply {
    status: u16,
    headers: reqwest::header::HeaderMap,
    body: String,
}

/// `POST {admin}{path}` with `headers`, as a browser's `fetch` or a script would send it.
fn admin_post(admin: &str, path: &str, headers: &[(&str, &str)], body: &str) -> Reply {
    block_on(async {
        let mut request = http_client()
            .post(format!("{admin}{path}"))
            .header("content-type", "application/json")
            .body(body.to_owned());
        for (name, value) in headers {
            request = request.header(*name, *value);
        }
        let response = request.send().await.unwrap();
        let status = response.status().as_u16();
        let headers = response.headers().clone();
        // A deployment's stream lasts as long as it does; it goes on without a reader.
        let streamed = headers
            .get("content-type")
            .is_some_and(|t| t.as_bytes() == b"application/x-ndjson");
        let body = if streamed {
            String::new()
        } else {
            response.text().await.unwrap()
        };
        Reply {
            status,
            headers,
            body,
        }
    })
}

/// `GET {admin}{path}`: the status and the body as JSON.
fn admin_get<T: serde::de::DeserializeOwned>(admin: &str, path: &str) -> (u16, T) {
    block_on(async {
        let response = http_client()
            .get(format!("{admin}{path}"))
            .send()
            .await
            .unwrap();
        let status = response.status().as_u16();
        let body = response.text().await.unwrap();
        let parsed = serde_json::from_str(&body).unwrap_or_else(|e| panic!("{path}: {e}: {body}"));
        (status, parsed)
    })
}

pub(super) fn block_on<T>(work: impl std::future::Future<Output = T>) -> T {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
        .block_on(work)
}

fn still_waiting_for_promote(fleet: &Fleet) -> bool {
    server(&fleet.status(), "api")
        .rollout
        .as_ref()
        .is_some_and(|r| r.state == RolloutState::WaitingForPromote)
}

/// An `initialize` at the gateway with `token`: the HTTP status.
pub(super) fn gateway_initialize(endpoint: &str, token: &str) -> u16 {
    let body = r#"{"jsonrpc":"2.0","id":1,"method":"initialize","params":{"protocolVersion":"2025-11-25","capabilities":{},"clientInfo":{"name":"up-test","version":"0"}}}"#;
    block_on(async {
        http_client()
            .post(endpoint)
            .header("accept", "application/json, text/event-stream")
            .header("content-type", "application/json")
            .header("authorization", format!("Bearer {token}"))
            .body(body)
            .send()
            .await
            .unwrap()
            .status()
            .as_u16()
    })
}

#[test]
fn only_an_admin_token_aborts_a_canary_over_tcp_and_the_abort_names_it() {
    let rollout = "      strategy: canary\n      steps: [{ weight: 50, pause: {} }]";
    let fleet = Fleet::new("admin-abort", &guarded_fleet("", rollout));
    let out = fleet.up();
    assert!(out.status.success(), "{}", text(&out));
    let status = fleet.status();
    let admin = status.admin_url.clone().expect("the admin listener is on");
    let endpoint = server(&status, "api").endpoint.clone().unwrap();

    // Separate kinds: the admin token opens no gateway session, the gateway token does.
    assert_eq!(gateway_initialize(&endpoint, ADMIN_TOKEN), 401);
    assert_eq!(gateway_initialize(&endpoint, GATEWAY_TOKEN), 200);

    fleet.rewrite(&guarded_fleet(r#", "--name", "v2""#, rollout));
    let deploy = fleet.deploy_in_background();
    wait_for_promote(&fleet);
    let abort = "/v1/servers/api/abort";

    // No token: 401, a Bearer challenge and how to get one; the canary runs on.
    let refused = admin_post(&admin, abort, &[], "");
    assert_eq!(refused.status, 401, "{}", refused.body);
    assert_eq!(
        refused
            .headers
            .get("www-authenticate")
            .map(|v| v.to_str().unwrap()),
        Some("Bearer realm=\"mcpfleet admin\""),
    );
    let error: serde_json::Value = serde_json::from_str(&refused.body).unwrap();
    let message = error["error"].as_str().unwrap();
    assert!(
        message.contains("mcpfleet token create NAME --admin"),
        "{message}"
    );
    assert!(still_waiting_for_promote(&fleet), "aborted without a token");

    // A gateway token, or any other, is no admin token.
    for token in [GATEWAY_TOKEN, "mcpf_guessed"] {
        let bearer = format!("Bearer {token}");
        let refused = admin_post(&admin, abort, &[("authorization", &bearer)], "");
        assert_eq!(refused.status, 401, "{token}: {}", refused.body);
        assert!(still_waiting_for_promote(&fleet), "aborted with {token}");
    }

    // A page of another origin cannot drive the action, even with the token in hand.
    let bearer = format!("Bearer {ADMIN_TOKEN}");
    let cross = admin_post(
        &admin,
        abort,
        &[
            ("authorization", &bearer),
            ("origin", "http://localhost:3000"),
        ],
        "",
    );
    assert_eq!(cross.status, 403, "{}", cross.body);
    assert!(
        still_waiting_for_promote(&fleet),
        "aborted from another origin"
    );

    // The admin token, from the listener's own page: the canary is aborted.
    let accepted = admin_post(
        &admin,
        abort,
        &[("authorization", &bearer), ("origin", &admin)],
        "",
    );
    assert_eq!(accepted.status, 200, "{}", accepted.body);
    let deployed = deploy.join().unwrap();
    assert_eq!(deployed.status.code(), Some(1), "{}", text(&deployed));
    let after = fleet.status();
    let api = server(&after, "api");
    assert_eq!(
        (api.revision, api.rollout.is_none()),
        (Some(1), true),
        "{after:#?}"
    );

    // Who acted is on record — the token's name, never the token.
    let rollback = events(&fleet)
        .into_iter()
        .find(|e| e.kind == EventKind::RollbackStarted)
        .expect("the abort is an event");
    assert!(
        rollback.message.contains("aborted by admin:ops"),
        "{rollback:?}"
    );
    let (_, history): (u16, Vec<HistoryEntry>) = admin_get(&admin, "/v1/history");
    let last = history.last().expect("the canary's deployment");
    assert!(
        last.outcome
            .as_deref()
            .is_some_and(|o| o.contains("admin:ops")),
        "{last:?}"
    );
    let log = std::fs::read_to_string(fleet.state_dir().join("control.log")).unwrap();
    assert!(
        log.contains("admin:ops"),
        "no log line names who acted:\n{log}"
    );
    assert!(!log.contains(ADMIN_TOKEN), "the token was logged:\n{log}");

    // A rollback over TCP has the token's name as its author, whatever the body says; here
    // it brings the canary back, and a promote over TCP ends it.
    let rolled = admin_post(
        &admin,
        "/v1/rollback",
        &[("authorization", &bearer)],
        r#"{"to":2,"author":"someone@elsewhere"}"#,
    );
    assert_eq!(rolled.status, 200, "{}", rolled.body);
    wait_for_promote(&fleet);
    let promoted = admin_post(
        &admin,
        "/v1/servers/api/promote",
        &[("authorization", &bearer)],
        "",
    );
    assert_eq!(promoted.status, 200, "{}", promoted.body);
    let done = fleet.wait_for("the rollback is over", Duration::from_secs(30), |s| {
        s.deployment.state.is_final()
    });
    assert_eq!(server(&done, "api").rollout, None, "{done:#?}");
    let (_, history): (u16, Vec<HistoryEntry>) = admin_get(&admin, "/v1/history");
    let last = history.last().expect("the rollback's deployment");
    assert_eq!(
        (last.kind, last.author.as_str()),
        (fleet_api::types::DeploymentKind::Rollback, "admin:ops"),
        "{history:#?}"
    );
    let promotion = events(&fleet)
        .into_iter()
        .rfind(|e| e.kind == EventKind::RolloutPromoted)
        .expect("the promotion is an event");
    assert!(
        promotion.message.contains("promoted by admin:ops"),
        "{promotion:?}"
    );
}

#[test]
fn actions_over_tcp_are_forbidden_without_admin_tokens_and_reads_stay_open() {
    let fleet = Fleet::new(
        "admin-no-tokens",
        r#"
version: 1
name: admin-no-tokens
admin: { listen: 127.0.0.1:0 }
servers:
  echo:
    stdio: { command: SAMPLE, args: ["--transport", "stdio"] }
"#,
    );
    let out = fleet.up();
    assert!(out.status.success(), "{}", text(&out));
    let admin = fleet.status().admin_url.expect("the admin listener is on");
    for path in ["/v1/servers/echo/abort", "/v1/rollback"] {
        let refused = admin_post(
            &admin,
            path,
            &[("authorization", &format!("Bearer {ADMIN_TOKEN}"))],
            "{}",
        );
        assert_eq!(refused.status, 403, "{path}: {}", refused.body);
        assert!(
            refused
                .body
                .contains("actions over TCP need admin.tokens in the fleet file"),
            "{path}: {}",
            refused.body
        );
    }
    // `restart` stays on the unix socket.
    let restart = admin_post(&admin, "/v1/servers/echo/restart", &[], "");
    assert!(matches!(restart.status, 403 | 404), "{}", restart.body);

    // What reads is open on loopback: history, audit, and the live event stream.
    for path in ["/v1/history", "/v1/audit"] {
        let (status, list): (u16, Vec<serde_json::Value>) = admin_get(&admin, path);
        assert_eq!(status, 200, "{path}");
        assert!(path == "/v1/audit" || !list.is_empty(), "{path}: {list:?}");
    }
    let first = block_on(async {
        let mut stream = http_client()
            .get(format!("{admin}/v1/events/stream"))
            .send()
            .await
            .unwrap();
        assert_eq!(
            stream.headers()["content-type"].to_str().unwrap(),
            "text/event-stream"
        );
        let mut seen = String::new();
        tokio::time::timeout(Duration::from_secs(10), async {
            while !seen.contains("\n\n") {
                let chunk = stream.chunk().await.unwrap().expect("the stream ended");
                seen.push_str(&String::from_utf8_lossy(&chunk));
            }
        })
        .await
        .unwrap_or_else(|_| panic!("no event over TCP in 10 s"));
        seen
    });
    let data = first
        .lines()
        .find_map(|l| l.strip_prefix("data: "))
        .unwrap_or_else(|| panic!("no data line: {first:?}"));
    let event: fleet_api::types::Event = serde_json::from_str(data).unwrap();
    assert!(!event.message.is_empty(), "{event:?}");
}
