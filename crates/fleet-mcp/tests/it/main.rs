//! fleet-mcp against real servers: `mcp-sample-server` from fleet-testkit, real
//! sockets, real processes. One test binary; each test starts its own server.
//! `cargo test --workspace` builds the sample server; run alone, this needs
//! `cargo build -p fleet-testkit --bin mcp-sample-server` first.

mod checks;
mod http;
mod stdio;

use std::time::Duration;

use fleet_mcp::{CheckFailure, CheckReport};
use fleet_spec::model::{Cadence, McpCheck, SmokeCall};
use tokio::io::{AsyncBufReadExt as _, BufReader};

/// Generous: a debug-build server on a loaded CI machine.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// What "returns promptly after its timeout" means in assertions.
const MARGIN: Duration = Duration::from_secs(2);

fn mcp_check(expect_tools: &[&str], call: Option<SmokeCall>) -> McpCheck {
    McpCheck {
        cadence: Cadence {
            interval: Duration::from_secs(10),
            timeout: HANDSHAKE_TIMEOUT,
            failure_threshold: 3,
            success_threshold: 1,
        },
        expect_tools: expect_tools.iter().map(|s| s.to_string()).collect(),
        call,
        max_latency: None,
    }
}

fn with_timeout(mut check: McpCheck, timeout: Duration) -> McpCheck {
    check.cadence.timeout = timeout;
    check
}

fn smoke(tool: &str, arguments: serde_json::Value) -> SmokeCall {
    SmokeCall {
        tool: tool.into(),
        arguments,
        expect_contains: None,
        expect_error: false,
    }
}

fn echo(message: &str, expect_contains: &str) -> SmokeCall {
    SmokeCall {
        expect_contains: Some(expect_contains.into()),
        ..smoke("echo", serde_json::json!({ "message": message }))
    }
}

/// Tool lists in a stable order (the sample server lists alphabetically today).
fn sorted(tools: &[String]) -> Vec<&str> {
    let mut tools: Vec<&str> = tools.iter().map(String::as_str).collect();
    tools.sort_unstable();
    tools
}

#[track_caller]
fn failure(report: &CheckReport) -> &CheckFailure {
    match &report.outcome {
        Ok(pass) => panic!("expected a failure, got a pass: {}", pass.detail),
        Err(failure) => failure,
    }
}

#[track_caller]
fn passed(report: &CheckReport) -> &fleet_mcp::McpFacts {
    match &report.outcome {
        Ok(pass) => pass
            .mcp
            .as_ref()
            .unwrap_or_else(|| panic!("an MCP pass without facts: {}", pass.detail)),
        Err(failure) => panic!("expected a pass, got: {failure}"),
    }
}

/// One request seen by a [`RecordingProxy`]: method and lower-cased header names
/// and values.
#[derive(Debug, Clone)]
struct SeenRequest {
    method: String,
    headers: Vec<(String, String)>,
}

impl SeenRequest {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }
}

/// A loopback HTTP/1.1 proxy in front of `upstream` that records every request's
/// method and headers — so tests can see what the probe sent (DELETE, headers).
struct RecordingProxy {
    url: String,
    seen: std::sync::Arc<std::sync::Mutex<Vec<SeenRequest>>>,
}

impl RecordingProxy {
    async fn start(upstream_url: &str) -> Self {
        let (upstream, path) = upstream_url
            .strip_prefix("http://")
            .and_then(|rest| rest.split_once('/'))
            .expect("an http://host:port/path URL");
        let upstream = upstream.to_owned();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let url = format!("http://{}/{path}", listener.local_addr().expect("address"));
        let seen = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let record = seen.clone();
        tokio::spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                let server = tokio::net::TcpStream::connect(&upstream)
                    .await
                    .expect("connect upstream");
                tokio::spawn(relay(client, server, record.clone()));
            }
        });
        Self { url, seen }
    }

    fn seen(&self) -> Vec<SeenRequest> {
        self.seen.lock().expect("lock").clone()
    }
}

/// Requests client → server, parsed (head + Content-Length body; reqwest sends no
/// chunked requests); responses server → client, copied as they come.
async fn relay(
    client: tokio::net::TcpStream,
    server: tokio::net::TcpStream,
    seen: std::sync::Arc<std::sync::Mutex<Vec<SeenRequest>>>,
) {
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
    let (client_read, mut client_write) = client.into_split();
    let (mut server_read, mut server_write) = server.into_split();
    tokio::spawn(async move {
        let _ = tokio::io::copy(&mut server_read, &mut client_write).await;
    });
    let mut reader = BufReader::new(client_read);
    loop {
        let mut head = Vec::new();
        loop {
            let mut line = String::new();
            match reader.read_line(&mut line).await {
                Ok(0) | Err(_) => return,
                Ok(_) => {}
            }
            let end = line == "\r\n";
            head.push(line);
            if end {
                break;
            }
        }
        let method = head[0].split(' ').next().unwrap_or_default().to_owned();
        let headers: Vec<(String, String)> = head[1..]
            .iter()
            .filter_map(|line| line.split_once(':'))
            .map(|(n, v)| (n.trim().to_ascii_lowercase(), v.trim().to_owned()))
            .collect();
        let length: usize = headers
            .iter()
            .find(|(n, _)| n == "content-length")
            .and_then(|(_, v)| v.parse().ok())
            .unwrap_or(0);
        let mut body = vec![0u8; length];
        if reader.read_exact(&mut body).await.is_err() {
            return;
        }
        seen.lock()
            .expect("lock")
            .push(SeenRequest { method, headers });
        if server_write
            .write_all(head.concat().as_bytes())
            .await
            .is_err()
            || server_write.write_all(&body).await.is_err()
        {
            return;
        }
    }
}
