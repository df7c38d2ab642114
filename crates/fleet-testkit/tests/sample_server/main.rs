//! The real `mcp-sample-server` binary, spoken to with rmcp's client over
//! stdio and Streamable HTTP.

mod conformance;
mod mrtr;

use std::process::{ExitStatus, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use fleet_testkit::sample_server::INJECTED_CRASH_EXIT_CODE;
use fleet_testkit::{
    free_port, sample_server_binary, scratch_dir, wait_until, wait_until_blocking,
};
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use rmcp::model::{
    CallToolRequestParams, CallToolResult, ClientConfig, ErrorCode, ErrorData, ProtocolVersion,
};
use rmcp::service::{
    ClientInitializeError, ClientLifecycleMode, ClientServiceExt as _, RunningService, ServiceError,
};
use rmcp::transport::StreamableHttpClientTransport;
use rmcp::{RoleClient, ServiceExt as _};
use serde_json::{Value, json};
use tokio::io::{AsyncBufReadExt as _, AsyncWriteExt as _, BufReader, Lines};
use tokio::process::{Child, ChildStdin, ChildStdout, Command};

/// Long enough for a loaded CI machine; only reached when something is wrong.
const DEADLINE: Duration = Duration::from_secs(10);

type Client = RunningService<RoleClient, ClientConfig>;

/// A running `mcp-sample-server` whose stderr is collected line by line.
struct Server {
    child: Child,
    stderr: Arc<Mutex<Vec<String>>>,
}

impl Server {
    fn spawn(args: &[&str]) -> (Self, ChildStdout, ChildStdin) {
        let mut child = Command::new(sample_server_binary())
            .args(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .expect("spawn mcp-sample-server");
        let stdout = child.stdout.take().expect("piped stdout");
        let stdin = child.stdin.take().expect("piped stdin");
        let mut lines = BufReader::new(child.stderr.take().expect("piped stderr")).lines();
        let stderr = Arc::new(Mutex::new(Vec::new()));
        let sink = stderr.clone();
        tokio::spawn(async move {
            while let Ok(Some(line)) = lines.next_line().await {
                sink.lock().unwrap().push(line);
            }
        });
        (Self { child, stderr }, stdout, stdin)
    }

    /// Spawns an HTTP server on an OS-chosen port and returns its URL.
    async fn spawn_http(args: &[&str]) -> (Self, String) {
        // The HTTP tests' reqwest clients need a process-wide rustls provider: reqwest is
        // built without one of its own in this workspace (fleet-tls brings ring).
        let _ = rustls::crypto::ring::default_provider().install_default();
        let args = [&["--transport", "http", "--port", "0"], args].concat();
        let (server, _stdout, _stdin) = Self::spawn(&args);
        wait_until("the server prints its address", DEADLINE, async || {
            server.stderr_contains("listening on http://")
        })
        .await;
        let url = server
            .stderr
            .lock()
            .unwrap()
            .iter()
            .find_map(|line| line.strip_prefix("listening on ").map(str::to_owned))
            .expect("a listening line");
        (server, url)
    }

    fn stderr_contains(&self, text: &str) -> bool {
        self.stderr
            .lock()
            .unwrap()
            .iter()
            .any(|line| line.contains(text))
    }

    fn terminate(&self) {
        let pid = self.child.id().expect("a running child");
        kill(Pid::from_raw(pid as i32), Signal::SIGTERM).expect("send SIGTERM");
    }

    async fn exit_status(&mut self) -> ExitStatus {
        tokio::time::timeout(DEADLINE, self.child.wait())
            .await
            .expect("the server exits in time")
            .expect("wait for the server")
    }
}

/// A stdio server and an rmcp client that completed the legacy handshake.
async fn stdio_client(args: &[&str]) -> (Server, Client) {
    let (server, stdout, stdin) = Server::spawn(args);
    let client = ClientConfig::default()
        .serve((stdout, stdin))
        .await
        .expect("initialize over stdio");
    (server, client)
}

async fn http_client(url: &str) -> Client {
    ClientConfig::default()
        .serve(StreamableHttpClientTransport::from_uri(url))
        .await
        .expect("initialize over http")
}

async fn call(
    client: &Client,
    tool: &str,
    arguments: Value,
) -> Result<CallToolResult, ServiceError> {
    let Value::Object(arguments) = arguments else {
        panic!("tool arguments must be an object");
    };
    client
        .call_tool(CallToolRequestParams::new(tool.to_owned()).with_arguments(arguments))
        .await
}

fn text(result: &CallToolResult) -> &str {
    result.content[0]
        .as_text()
        .expect("text content")
        .text
        .as_str()
}

fn mcp_error(result: Result<CallToolResult, ServiceError>) -> ErrorData {
    match result {
        Err(ServiceError::McpError(error)) => error,
        other => panic!("expected a JSON-RPC error, got {other:?}"),
    }
}

fn init_error(result: Result<Client, ClientInitializeError>) -> ErrorData {
    match result {
        Err(ClientInitializeError::JsonRpcError(error)) => error,
        Err(other) => panic!("expected a JSON-RPC error, got {other:?}"),
        Ok(_) => panic!("expected the handshake to fail"),
    }
}

/// The four sample tools, however the client reached the server.
async fn assert_sample_tools(client: &Client) {
    let mut names: Vec<_> = client
        .list_all_tools()
        .await
        .expect("tools/list")
        .into_iter()
        .map(|tool| tool.name.to_string())
        .collect();
    names.sort();
    assert_eq!(names, ["add", "echo", "fail", "sleep"]);

    let echoed = call(client, "echo", json!({"message": "hello"}))
        .await
        .unwrap();
    assert_eq!(text(&echoed), "hello");
    assert_ne!(echoed.is_error, Some(true));
    let sum = call(client, "add", json!({"a": 2, "b": 3.5}))
        .await
        .unwrap();
    assert_eq!(text(&sum), "5.5");
    let slept = call(client, "sleep", json!({"ms": 1})).await.unwrap();
    assert_eq!(text(&slept), "slept 1 ms");
    let failed = call(client, "fail", json!({"message": "boom"}))
        .await
        .unwrap();
    assert_eq!(failed.is_error, Some(true));
    assert_eq!(text(&failed), "boom");
}

#[tokio::test]
async fn stdio_serves_the_sample_tools() {
    let (_server, client) = stdio_client(&["--name", "upstream-a"]).await;
    let info = client.peer_info().expect("server info");
    assert_eq!(info.server_info.as_ref().unwrap().name, "upstream-a");
    assert_eq!(info.protocol_version, ProtocolVersion::V_2025_11_25);
    assert_sample_tools(&client).await;
}

#[tokio::test]
async fn http_serves_the_sample_tools() {
    let (_server, url) = Server::spawn_http(&[]).await;
    assert!(
        url.starts_with("http://127.0.0.1:") && url.ends_with("/mcp"),
        "{url}"
    );
    assert_sample_tools(&http_client(&url).await).await;
}

#[tokio::test]
async fn http_honours_port_and_path() {
    let port = free_port();
    let args = [
        "--transport",
        "http",
        "--port",
        &port.to_string(),
        "--path",
        "/x/mcp",
    ];
    let (server, _stdout, _stdin) = Server::spawn(&args);
    let url = format!("http://127.0.0.1:{port}/x/mcp");
    wait_until(
        "the server listens on the given port",
        DEADLINE,
        async || server.stderr_contains(&format!("listening on {url}")),
    )
    .await;
    let client = http_client(&url).await;
    assert_eq!(client.list_all_tools().await.unwrap().len(), 4);
}

#[tokio::test]
async fn startup_delay_defers_serving() {
    let started = Instant::now();
    let (_server, url) = Server::spawn_http(&["--startup-delay", "200ms"]).await;
    assert!(started.elapsed() >= Duration::from_millis(200));
    assert_eq!(
        http_client(&url)
            .await
            .list_all_tools()
            .await
            .unwrap()
            .len(),
        4
    );
}

#[tokio::test]
async fn tools_flag_limits_the_tools() {
    let (_server, client) = stdio_client(&["--tools", "echo,add"]).await;
    let tools = client.list_all_tools().await.unwrap();
    assert_eq!(tools.len(), 2);
    let error = mcp_error(call(&client, "sleep", json!({"ms": 1})).await);
    assert_eq!(error.code, ErrorCode::INVALID_PARAMS);
}

#[tokio::test]
async fn crash_after_answers_n_calls_then_exits_3() {
    let (mut server, client) = stdio_client(&["--crash-after", "2"]).await;
    for _ in 0..2 {
        call(&client, "echo", json!({"message": "x"}))
            .await
            .unwrap();
    }
    assert!(
        call(&client, "echo", json!({"message": "x"}))
            .await
            .is_err()
    );
    assert_eq!(
        server.exit_status().await.code(),
        Some(INJECTED_CRASH_EXIT_CODE)
    );
}

#[tokio::test]
async fn crash_after_counts_calls_across_http_sessions() {
    let (mut server, url) = Server::spawn_http(&["--crash-after", "1"]).await;
    let first = http_client(&url).await;
    call(&first, "echo", json!({"message": "x"})).await.unwrap();
    let second = http_client(&url).await;
    // rmcp's HTTP client keeps trying to resume the stream of a request whose
    // server died, so the call's outcome is not awaited: the exit is the fact.
    let doomed = tokio::spawn(async move { call(&second, "echo", json!({"message": "x"})).await });
    assert_eq!(
        server.exit_status().await.code(),
        Some(INJECTED_CRASH_EXIT_CODE)
    );
    if doomed.is_finished() {
        assert!(doomed.await.unwrap().is_err());
    } else {
        doomed.abort();
    }
}

#[tokio::test]
async fn exit_after_exits_3() {
    let (mut server, _stdout, _stdin) = Server::spawn(&["--exit-after", "50ms"]);
    assert_eq!(
        server.exit_status().await.code(),
        Some(INJECTED_CRASH_EXIT_CODE)
    );
    wait_until("stderr says why", DEADLINE, async || {
        server.stderr_contains("injected crash: --exit-after")
    })
    .await;
}

#[tokio::test]
async fn error_rate_fails_every_kth_call_with_a_jsonrpc_error() {
    let (_server, client) = stdio_client(&["--error-rate", "0.5"]).await;
    let mut outcomes = Vec::new();
    for _ in 0..4 {
        match call(&client, "echo", json!({"message": "x"})).await {
            Ok(_) => outcomes.push("ok"),
            Err(error) => {
                assert_eq!(mcp_error(Err(error)).code, ErrorCode::INTERNAL_ERROR);
                outcomes.push("error");
            }
        }
    }
    assert_eq!(outcomes, ["ok", "error", "ok", "error"]);
}

#[tokio::test]
async fn latency_delays_every_tool_call() {
    let (_server, client) = stdio_client(&["--latency", "100ms"]).await;
    let started = Instant::now();
    call(&client, "echo", json!({"message": "x"}))
        .await
        .unwrap();
    assert!(started.elapsed() >= Duration::from_millis(100));
}

fn modern_only() -> ClientLifecycleMode {
    ClientLifecycleMode::Discover {
        preferred_versions: vec![ProtocolVersion::V_2026_07_28],
    }
}

fn auto() -> ClientLifecycleMode {
    ClientLifecycleMode::Auto {
        preferred_versions: vec![ProtocolVersion::V_2026_07_28],
        legacy_version: None,
    }
}

#[tokio::test]
async fn legacy_only_does_not_know_server_discover() {
    let (_server, stdout, stdin) = Server::spawn(&["--era", "legacy"]);
    let refused = ClientConfig::default()
        .serve_with_lifecycle((stdout, stdin), modern_only())
        .await;
    assert_eq!(init_error(refused).code, ErrorCode::METHOD_NOT_FOUND);

    // So a client that probes falls back to `initialize`, on stdio and http.
    let (_server, stdout, stdin) = Server::spawn(&["--era", "legacy"]);
    let client = ClientConfig::default()
        .serve_with_lifecycle((stdout, stdin), auto())
        .await
        .expect("fall back to initialize");
    assert_eq!(
        client.peer_info().unwrap().protocol_version,
        ProtocolVersion::V_2025_11_25
    );
    call(&client, "echo", json!({"message": "x"}))
        .await
        .unwrap();

    let (_server, url) = Server::spawn_http(&["--era", "legacy"]).await;
    let client = ClientConfig::default()
        .serve_with_lifecycle(StreamableHttpClientTransport::from_uri(url), auto())
        .await
        .expect("fall back to initialize over http");
    assert_eq!(
        client.peer_info().unwrap().protocol_version,
        ProtocolVersion::V_2025_11_25
    );
}

#[tokio::test]
async fn both_eras_also_speak_discover() {
    let (_server, stdout, stdin) = Server::spawn(&[]);
    let client = ClientConfig::default()
        .serve_with_lifecycle((stdout, stdin), modern_only())
        .await
        .expect("discover over stdio");
    assert_eq!(
        text(&call(&client, "add", json!({"a": 1, "b": 2})).await.unwrap()),
        "3"
    );

    let (_server, url) = Server::spawn_http(&[]).await;
    let client = ClientConfig::default()
        .serve_with_lifecycle(StreamableHttpClientTransport::from_uri(url), modern_only())
        .await
        .expect("discover over http");
    assert_eq!(
        text(&call(&client, "add", json!({"a": 1, "b": 2})).await.unwrap()),
        "3"
    );
}

#[tokio::test]
async fn modern_only_refuses_initialize_and_keeps_serving() {
    let (_server, url) = Server::spawn_http(&["--era", "modern"]).await;
    let refused = ClientConfig::default()
        .serve(StreamableHttpClientTransport::from_uri(url.as_str()))
        .await;
    assert_eq!(
        init_error(refused).code,
        ErrorCode::UNSUPPORTED_PROTOCOL_VERSION
    );
    let transport = StreamableHttpClientTransport::from_uri(url.as_str());
    let client = ClientConfig::default()
        .serve_with_lifecycle(transport, modern_only())
        .await
        .expect("discover");
    call(&client, "echo", json!({"message": "x"}))
        .await
        .unwrap();

    // On stdio the refusal must not end the session, nor lose what the client
    // had already sent after it: discover still works.
    let (_server, stdout, mut stdin) = Server::spawn(&["--era", "modern"]);
    let mut lines = BufReader::new(stdout).lines();
    let initialize = json!({"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": {
        "protocolVersion": "2025-11-25", "capabilities": {},
        "clientInfo": {"name": "test", "version": "1"}}});
    let discover = json!({"jsonrpc": "2.0", "id": 2, "method": "server/discover",
        "params": {"_meta": modern_meta()}});
    send_line(&mut stdin, &initialize).await;
    send_line(&mut stdin, &discover).await;
    let refusal = read_json(&mut lines).await;
    assert_eq!(refusal["error"]["code"], -32022);
    assert_eq!(refusal["error"]["data"]["supported"], json!(["2026-07-28"]));
    let discovered = read_json(&mut lines).await;
    assert_eq!(
        discovered["result"]["supportedVersions"],
        json!(["2026-07-28"])
    );
}

/// The `_meta` every 2026-07-28 request carries.
fn modern_meta() -> Value {
    json!({"io.modelcontextprotocol/protocolVersion": "2026-07-28",
           "io.modelcontextprotocol/clientCapabilities": {}})
}

async fn send_line(stdin: &mut ChildStdin, message: &Value) {
    stdin
        .write_all(format!("{message}\n").as_bytes())
        .await
        .unwrap();
}

async fn read_json(lines: &mut Lines<BufReader<ChildStdout>>) -> Value {
    let line = lines.next_line().await.unwrap().expect("a line before EOF");
    serde_json::from_str(&line).unwrap()
}

#[tokio::test]
async fn never_answer_times_the_handshake_out_and_exits_on_eof() {
    let (mut server, stdout, stdin) = Server::spawn(&["--never-answer"]);
    let handshake = ClientConfig::default().serve((stdout, stdin));
    assert!(
        tokio::time::timeout(Duration::from_millis(300), handshake)
            .await
            .is_err(),
        "a server that never answers must not complete the handshake"
    );
    // The timed-out handshake dropped the transport, closing stdin.
    assert_eq!(server.exit_status().await.code(), Some(0));

    let (_server, url) = Server::spawn_http(&["--never-answer"]).await;
    let handshake = ClientConfig::default().serve(StreamableHttpClientTransport::from_uri(url));
    assert!(
        tokio::time::timeout(Duration::from_millis(300), handshake)
            .await
            .is_err()
    );
}

#[tokio::test]
async fn garbage_stdout_precedes_the_protocol() {
    let (_server, stdout, _stdin) = Server::spawn(&["--garbage-stdout", "--never-answer"]);
    let first = BufReader::new(stdout)
        .lines()
        .next_line()
        .await
        .unwrap()
        .unwrap();
    assert!(serde_json::from_str::<Value>(&first).is_err(), "{first}");

    // rmcp's client skips lines that are not JSON, so the handshake succeeds.
    let (_server, client) = stdio_client(&["--garbage-stdout"]).await;
    call(&client, "echo", json!({"message": "x"}))
        .await
        .unwrap();
}

#[tokio::test]
async fn sigterm_exits_0() {
    let (mut server, client) = stdio_client(&[]).await;
    server.terminate();
    assert_eq!(server.exit_status().await.code(), Some(0));
    drop(client);

    let (mut server, url) = Server::spawn_http(&[]).await;
    let _client = http_client(&url).await;
    server.terminate();
    assert_eq!(server.exit_status().await.code(), Some(0));
}

#[tokio::test]
async fn stdin_eof_exits_0() {
    let (mut server, client) = stdio_client(&[]).await;
    client.cancel().await.expect("close the client");
    assert_eq!(server.exit_status().await.code(), Some(0));
}

#[tokio::test]
async fn log_stderr_logs_each_request() {
    let (server, client) = stdio_client(&["--log-stderr", "--name", "logged"]).await;
    call(&client, "echo", json!({"message": "x"}))
        .await
        .unwrap();
    wait_until("the call is logged", DEADLINE, async || {
        server.stderr_contains("[logged] tools/call echo")
    })
    .await;
    assert!(server.stderr_contains("[logged] initialize"));
}

#[tokio::test]
#[should_panic(expected = "waiting until pigs fly")]
async fn wait_until_names_what_timed_out() {
    wait_until("pigs fly", Duration::from_millis(20), async || false).await;
}

#[test]
#[should_panic(expected = "waiting until the count reaches 3; last seen: 2")]
fn wait_until_blocking_names_what_timed_out_and_what_it_saw_last() {
    wait_until_blocking("the count reaches 3", Duration::from_millis(20), || {
        Err::<(), _>(2)
    });
}

#[tokio::test]
async fn wait_until_returns_what_the_condition_found_once_it_holds() {
    let mut looks = 0;
    let found = wait_until("the third look", DEADLINE, async || {
        looks += 1;
        (looks == 3).then_some(looks * 10)
    })
    .await;
    assert_eq!((found, looks), (30, 3));
}

#[test]
fn wait_until_blocking_returns_what_the_condition_found_once_it_holds() {
    let mut looks = 0;
    let found = wait_until_blocking("the second look", DEADLINE, || {
        looks += 1;
        if looks == 2 { Ok("done") } else { Err(looks) }
    });
    assert_eq!((found, looks), ("done", 2));
}

#[test]
fn scratch_dirs_are_fresh_and_distinct() {
    let (a, b) = (scratch_dir("same"), scratch_dir("same"));
    assert_ne!(a, b);
    assert!(a.is_dir() && b.is_dir());
    assert_eq!(std::fs::read_dir(&a).unwrap().count(), 0);
}
