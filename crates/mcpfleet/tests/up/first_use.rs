//! What a first-time user meets against a running fleet: the gateway's answer to a client
//! without a token.

use crate::{Fleet, http_client, post, server, text};

/// Tokens guard the gateway; the hash is of no token a test sends.
const FLEET: &str = r#"
version: 1
name: first-use
gateway:
  listen: 127.0.0.1:0
  auth:
    tokens:
      - { name: ci, sha256: "5d4a8f2ef3f5b3c0c2b1d0e2a5b52d7c4a9f5c1e8d6b7a3f2e1d0c9b8a7f6e5d", servers: ["*"] }
servers:
  search:
    http: { command: SAMPLE, args: ["--transport", "http", "--port", "{{ port }}"] }
"#;

const INITIALIZE: &str = r#"{"jsonrpc":"2.0","id":1,"method":"initialize","params":{"protocolVersion":"2025-06-18","capabilities":{},"clientInfo":{"name":"t","version":"0"}}}"#;

/// Issue 14: a bare `WWW-Authenticate: Bearer` sent OAuth-capable clients (the MCP
/// inspector) into a discovery the gateway does not offer. The 401 says a mcpfleet token
/// is missing and how to make one, in the challenge and in the body.
#[test]
fn a_client_without_a_token_is_told_a_mcpfleet_token_is_required_and_how_to_get_one() {
    let fleet = Fleet::new("first-use-401", FLEET);
    let out = fleet.up();
    assert!(out.status.success(), "{}", text(&out));
    let url = server(&fleet.status(), "search").endpoint.clone().unwrap();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let (challenge, body) = runtime.block_on(async {
        let response = post(&http_client(), &url, None, INITIALIZE).await;
        assert_eq!(response.status(), 401);
        let challenge = response.headers()["www-authenticate"]
            .to_str()
            .unwrap()
            .to_owned();
        let body: serde_json::Value = response.json().await.unwrap();
        (challenge, body)
    });
    assert!(
        challenge.starts_with("Bearer error=\"invalid_token\", error_description=\""),
        "{challenge}"
    );
    assert!(
        challenge.contains("mcpfleet bearer token is required")
            && challenge.contains("mcpfleet token create"),
        "{challenge}"
    );
    // No `resource_metadata`: there is no OAuth authorization server to discover.
    assert!(!challenge.contains("resource_metadata"), "{challenge}");
    let message = body["error"]["message"].as_str().unwrap();
    assert!(
        message.contains("mcpfleet bearer token")
            && message.contains("mcpfleet token create")
            && message.contains("Authorization: Bearer"),
        "{body}"
    );
}
