//! The official MCP inspector CLI (`@modelcontextprotocol/inspector`, `--cli`) as
//! the client, through a gateway that requires a bearer token, in front of an HTTP
//! upstream; and in front of the official `server-everything` on stdio.

use std::time::Duration;

use fleet_gateway::TokenConfig;
use fleet_testkit::{HttpSampleServer, scratch_dir};
use sha2::{Digest as _, Sha256};

use crate::peers::{describe, node_script, peer, run};
use crate::stdio::per_session_of;
use crate::{TestGateway, table};

/// One CLI call takes about a second (Node start-up included).
const CALL_LIMIT: Duration = Duration::from_secs(30);
const TOKEN: &str = "inspector-token-5f1d8a0c2b7e4963";

#[tokio::test]
async fn the_inspector_cli_lists_and_calls_tools_through_the_gateway() {
    let upstream = HttpSampleServer::start(&[]).await;
    let gateway = TestGateway::start(table("sample", &[(1, 100, &[("s", &upstream.url)])]), |c| {
        let sha256: String = Sha256::digest(TOKEN.as_bytes())
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect();
        c.tokens = vec![TokenConfig::new("inspector", &sha256, ["sample"]).unwrap()];
    })
    .await;
    let url = gateway.url("sample");
    let dir = scratch_dir("inspector");
    let bearer = format!("Authorization: Bearer {TOKEN}");
    let inspector_with = |headers: &[&str], args: &[&str]| {
        let mut command = node_script("inspector");
        command
            .args(["--cli", &url, "--transport", "http"])
            .args(headers)
            .args(args)
            .current_dir(&dir);
        command
    };
    let inspector = |args: &[&str]| inspector_with(&["--header", &bearer], args);

    // Without the token the gateway answers 401 and the CLI, having no TTY for an
    // OAuth flow, gives up at once: the header below is what lets it in.
    let refused = run(
        "inspector without a token",
        inspector_with(&[], &["--method", "tools/list"]),
        CALL_LIMIT,
    )
    .await;
    assert_ne!(refused.status.code(), Some(0), "{}", describe(&refused));
    assert!(
        String::from_utf8_lossy(&refused.stderr).contains("auth_required"),
        "{}",
        describe(&refused)
    );

    let listed = inspect(
        "inspector tools/list",
        inspector(&["--method", "tools/list"]),
    )
    .await;
    assert_eq!(
        tool_names(&listed),
        ["add", "echo", "fail", "sleep"],
        "{listed}"
    );

    let result = inspect(
        "inspector tools/call",
        inspector(&[
            "--method",
            "tools/call",
            "--tool-name",
            "echo",
            "--tool-arg",
            "message=hi",
        ]),
    )
    .await;
    assert_eq!(result["content"][0]["text"], "hi", "{result}");
    assert_ne!(result["isError"], true, "{result}");
    assert!(upstream.logged("tools/call echo"));
}

#[tokio::test]
async fn the_inspector_cli_uses_server_everything_on_stdio_through_the_gateway() {
    let (processes, table) = per_session_of(
        &peer("mcp-server-everything"),
        &["stdio".to_owned()],
        4,
        Duration::from_secs(60),
    );
    let gateway = TestGateway::start(table, |_| {}).await;
    let url = gateway.url("solo");
    let dir = scratch_dir("inspector-everything");
    let inspector = |args: &[&str]| {
        let mut command = node_script("inspector");
        command
            .args(["--cli", &url, "--transport", "http"])
            .args(args)
            .current_dir(&dir);
        command
    };

    let listed = inspect(
        "inspector tools/list (server-everything)",
        inspector(&["--method", "tools/list"]),
    )
    .await;
    let names = tool_names(&listed);
    assert!(names.iter().any(|n| n == "echo"), "{names:?}");

    let result = inspect(
        "inspector tools/call (server-everything)",
        inspector(&[
            "--method",
            "tools/call",
            "--tool-name",
            "echo",
            "--tool-arg",
            "message=through stdio",
        ]),
    )
    .await;
    let text = result["content"][0]["text"].as_str().unwrap_or_default();
    assert!(text.contains("through stdio"), "{result}");
    // Each CLI run was its own session, on its own process.
    assert!(processes.pids.lock().unwrap().len() >= 2);
}

/// Runs an inspector CLI call that must succeed; its JSON output.
async fn inspect(what: &str, command: tokio::process::Command) -> serde_json::Value {
    let output = run(what, command, CALL_LIMIT).await;
    assert_eq!(output.status.code(), Some(0), "{}", describe(&output));
    serde_json::from_slice(&output.stdout).unwrap_or_else(|error| {
        panic!(
            "{what}: output is not JSON ({error})\n{}",
            describe(&output)
        )
    })
}

/// The tool names of a `tools/list` result, sorted.
fn tool_names(listed: &serde_json::Value) -> Vec<String> {
    let mut names: Vec<String> = listed["tools"]
        .as_array()
        .unwrap_or_else(|| panic!("no tools array in {listed}"))
        .iter()
        .filter_map(|tool| tool["name"].as_str().map(str::to_owned))
        .collect();
    names.sort_unstable();
    names
}
