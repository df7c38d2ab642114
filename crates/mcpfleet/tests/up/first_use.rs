//! What a first-time user meets against a running fleet: the gateway's answer to a client
//! without a token, and `mcpfleet call` to check a server from the shell.

use std::process::{Command, Output};

use crate::{Fleet, http_client, post, server, text};

/// The gateway token of [`FLEET`], whose file holds its SHA-256.
const TOKEN: &str = "mcpf_first-use-test-token";

const FLEET: &str = r#"
version: 1
name: first-use
gateway:
  listen: 127.0.0.1:0
  auth:
    tokens:
      - { name: ci, sha256: "f3ca85e0c0d9b8f14890d3002e424b6761a44915a8c944ecfb745e582da8dc99", servers: ["*"] }
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

/// `mcpfleet call ARGS` in the fleet's directory, with `env` set and no `MCPFLEET_TOKEN`
/// from the caller.
fn call(fleet: &Fleet, args: &[&str], env: &[(&str, &str)]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_mcpfleet"))
        .arg("call")
        .args(args)
        .arg("--state-dir")
        .arg(fleet.state_dir())
        .current_dir(&fleet.dir)
        .env_remove("MCPFLEET_TOKEN")
        .envs(env.iter().copied())
        .output()
        .unwrap()
}

fn stdout(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Issue 14: checking a server took an MCP client; `mcpfleet call` is the first thing
/// users run.
#[test]
fn call_prints_a_tools_result_through_the_gateway_and_exits_1_on_a_tool_error() {
    let fleet = Fleet::new("first-use-call", FLEET);
    let out = fleet.up();
    assert!(out.status.success(), "{}", text(&out));
    let token = [("MCPFLEET_TOKEN", TOKEN)];

    let out = call(
        &fleet,
        &["search", "echo", "--arg", "message=hello fleet"],
        &token,
    );
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    assert_eq!(stdout(&out), "hello fleet\n");

    // Values are JSON when they parse: `add` takes numbers.
    let out = call(
        &fleet,
        &["search", "add", "--arg", "a=2", "--arg", "b=3"],
        &token,
    );
    assert_eq!(stdout(&out), "5\n", "{}", text(&out));

    let out = call(
        &fleet,
        &["search", "echo", "--arg", "message=hi", "-o", "json"],
        &token,
    );
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let result: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(result["content"][0]["text"], "hi", "{result}");

    // A tool error (isError) is exit 1, its text on stderr.
    let out = call(
        &fleet,
        &["search", "fail", "--arg", "message=it broke"],
        &token,
    );
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("it broke"),
        "{}",
        text(&out)
    );

    // The token from another variable.
    let out = call(
        &fleet,
        &[
            "search",
            "echo",
            "--arg",
            "message=x",
            "--token-env",
            "MY_TOKEN",
        ],
        &[("MY_TOKEN", TOKEN)],
    );
    assert_eq!(stdout(&out), "x\n", "{}", text(&out));

    // Without a token: the gateway's reason, and where the token goes.
    let out = call(&fleet, &["search", "echo", "--arg", "message=x"], &[]);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("requires a bearer token (401)") && stderr.contains("MCPFLEET_TOKEN"),
        "{}",
        text(&out)
    );

    // A server the fleet does not have is named, with those it has.
    let out = call(&fleet, &["serch", "echo"], &token);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("it has: search"),
        "{}",
        text(&out)
    );

    // A malformed --arg is a usage error that does not repeat what was typed.
    let out = call(
        &fleet,
        &["search", "echo", "--arg", "ghp_typed_secret"],
        &token,
    );
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    assert!(!text(&out).contains("ghp_typed_secret"), "{}", text(&out));
}
