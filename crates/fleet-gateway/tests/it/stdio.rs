//! stdio upstreams: the gateway owns real `mcp-sample-server --transport stdio`
//! processes' pipes — shared by every session, or one process per session from a
//! [`SessionProcesses`] that spawns them.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use fleet_stdio::{AcquireError, SessionProcesses, StdioEndpoint, StdioLease, StdioLink};
use fleet_testkit::{sample_server_binary, stdio_process, wait_until};
use futures::future::{BoxFuture, join_all};
use rmcp::model::CallToolRequestParams;
use tokio::process::Child;

use crate::{
    DEADLINE, Routing, TestGateway, echo, legacy_client, raw_initialize, raw_post, raw_session,
    text,
};

/// One shared process behind `server`.
pub(crate) fn shared_table(server: &str, args: &[&str]) -> (Routing, Child) {
    let mut child = stdio_process(&sample_server_binary(), &sample_args(args));
    let link = StdioLink::shared(
        "shared-0",
        child.stdin.take().unwrap(),
        child.stdout.take().unwrap(),
    );
    let routing = Routing::stdio(server, "shared-0", StdioEndpoint::Shared(link));
    (routing, child)
}

/// Spawns a sample server per session; counts the live ones.
#[derive(Debug)]
pub(crate) struct Spawner {
    program: PathBuf,
    args: Vec<String>,
    max: u32,
    idle_timeout: Duration,
    live: Arc<AtomicUsize>,
    pub(crate) pids: std::sync::Mutex<Vec<u32>>,
}

/// Given back when a session ends: kills its process.
struct Release {
    _child: Child,
    live: Arc<AtomicUsize>,
}

impl Drop for Release {
    fn drop(&mut self) {
        self.live.fetch_sub(1, Ordering::SeqCst);
    }
}

impl Spawner {
    /// Processes running now.
    pub(crate) fn live(&self) -> usize {
        self.live.load(Ordering::SeqCst)
    }
}

impl SessionProcesses for Spawner {
    fn acquire(&self) -> BoxFuture<'_, Result<StdioLease, AcquireError>> {
        Box::pin(async move {
            if self.live.load(Ordering::SeqCst) >= self.max as usize {
                return Err(AcquireError::AtCapacity { max: self.max });
            }
            let mut child = stdio_process(&self.program, &self.args);
            self.pids.lock().unwrap().extend(child.id());
            self.live.fetch_add(1, Ordering::SeqCst);
            let stdin = child.stdin.take().unwrap();
            let stdout = child.stdout.take().unwrap();
            let release = Release {
                _child: child,
                live: Arc::clone(&self.live),
            };
            Ok(StdioLease::new("session", stdin, stdout, release))
        })
    }

    fn idle_timeout(&self) -> Duration {
        self.idle_timeout
    }
}

fn sample_args(args: &[&str]) -> Vec<String> {
    ["--transport", "stdio"]
        .iter()
        .chain(args)
        .map(|a| (*a).to_owned())
        .collect()
}

/// `solo`: a per-session stdio server spawning `mcp-sample-server --transport stdio
/// ARGS` for each session.
pub(crate) fn per_session(
    args: &[&str],
    max: u32,
    idle_timeout: Duration,
) -> (Arc<Spawner>, Routing) {
    per_session_of(
        &sample_server_binary(),
        &sample_args(args),
        max,
        idle_timeout,
    )
}

/// `solo`: a per-session stdio server spawning `PROGRAM ARGS` for each session.
pub(crate) fn per_session_of(
    program: &Path,
    args: &[String],
    max: u32,
    idle_timeout: Duration,
) -> (Arc<Spawner>, Routing) {
    let spawner = Arc::new(Spawner {
        program: program.to_owned(),
        args: args.to_vec(),
        max,
        idle_timeout,
        live: Arc::default(),
        pids: std::sync::Mutex::default(),
    });
    let processes: Arc<dyn SessionProcesses> = spawner.clone();
    let routing = Routing::stdio("solo", "pool", StdioEndpoint::PerSession(processes));
    (spawner, routing)
}

fn whoami() -> CallToolRequestParams {
    CallToolRequestParams::new("whoami")
}

#[tokio::test]
async fn a_shared_process_serves_many_sessions_and_ids_never_collide() {
    let (table, _child) = shared_table("memory", &["--tools", "echo,whoami"]);
    let gateway = TestGateway::start(table, |_| {}).await;
    let url = gateway.url("memory");
    let clients = join_all((0..4).map(|_| legacy_client(&url, None))).await;

    // 4 sessions × 50 calls in flight at once; every client numbers its requests
    // from the same start, so without rewriting the ids would collide upstream.
    let calls = clients.iter().enumerate().flat_map(|(c, client)| {
        (0..50).map(move |n| async move {
            let message = format!("client {c} call {n}");
            let result = client.peer().call_tool(echo(&message)).await;
            (message, result.map(|r| text(&r)))
        })
    });
    let answers = tokio::time::timeout(DEADLINE, join_all(calls))
        .await
        .expect("200 calls answered in time");
    assert_eq!(answers.len(), 200);
    for (sent, answer) in answers {
        assert_eq!(answer.expect("tools/call"), sent);
    }

    // One process behind all of them.
    let mut pids = Vec::new();
    for client in &clients {
        pids.push(text(&client.peer().call_tool(whoami()).await.unwrap()));
    }
    pids.dedup();
    assert_eq!(pids.len(), 1, "{pids:?}");
}

#[tokio::test]
async fn every_session_gets_its_own_process_and_gives_it_back() {
    let (spawner, table) = per_session(&["--tools", "echo,whoami"], 4, Duration::from_secs(60));
    let gateway = TestGateway::start(table, |_| {}).await;
    let a = legacy_client(&gateway.url("solo"), None).await;
    let b = legacy_client(&gateway.url("solo"), None).await;
    let pid_a = text(&a.peer().call_tool(whoami()).await.unwrap());
    let pid_b = text(&b.peer().call_tool(whoami()).await.unwrap());
    assert!(pid_a.starts_with("pid "), "{pid_a}");
    assert_ne!(pid_a, pid_b);
    assert_eq!(spawner.live.load(Ordering::SeqCst), 2);

    let (x, y) = tokio::join!(
        a.peer().call_tool(echo("from a")),
        b.peer().call_tool(echo("from b"))
    );
    assert_eq!(text(&x.unwrap()), "from a");
    assert_eq!(text(&y.unwrap()), "from b");

    a.cancel().await.expect("DELETE the session");
    wait_until("a's process is given back", DEADLINE, async || {
        spawner.live.load(Ordering::SeqCst) == 1
    })
    .await;
    assert_eq!(text(&b.peer().call_tool(whoami()).await.unwrap()), pid_b);
}

#[tokio::test]
async fn per_session_servers_refuse_new_sessions_at_their_cap_when_all_are_busy() {
    let (_spawner, table) = per_session(&[], 1, Duration::from_secs(60));
    let gateway = TestGateway::start(table, |_| {}).await;
    let url = gateway.url("solo");
    let busy = raw_session(&url).await;
    let sleep = serde_json::json!({
        "jsonrpc": "2.0", "id": 2, "method": "tools/call",
        "params": { "name": "sleep", "arguments": { "ms": 5_000 } }
    });
    let call = raw_post(&url)
        .header("mcp-session-id", busy)
        .json(&sleep)
        .send()
        .await
        .unwrap();
    assert_eq!(call.status(), 200, "the call is in flight");
    let response = raw_initialize(&url).await;
    assert_eq!(response.status(), 503);
    let body: serde_json::Value = response.json().await.unwrap();
    assert_eq!(body["id"], 1);
    let message = body["error"]["message"].as_str().unwrap();
    assert!(message.contains("limit of 1 sessions"), "{message}");
}

#[tokio::test]
async fn an_idle_session_ends_and_its_process_is_stopped() {
    let (spawner, table) = per_session(&[], 4, Duration::from_millis(300));
    let gateway = TestGateway::start(table, |_| {}).await;
    let client = legacy_client(&gateway.url("solo"), None).await;
    client.peer().list_all_tools().await.unwrap();
    assert_eq!(spawner.live.load(Ordering::SeqCst), 1);
    wait_until(
        "the idle session's process is stopped",
        DEADLINE,
        async || spawner.live.load(Ordering::SeqCst) == 0,
    )
    .await;
    assert!(client.peer().list_all_tools().await.is_err());
}

#[tokio::test]
async fn a_process_killed_mid_call_fails_the_call_and_the_next_session_works() {
    let (spawner, table) = per_session(&["--tools", "echo,sleep"], 4, Duration::from_secs(60));
    let gateway = TestGateway::start(table, |_| {}).await;
    let url = gateway.url("solo");
    let session = raw_session(&url).await;

    let sleep = serde_json::json!({
        "jsonrpc": "2.0", "id": 9, "method": "tools/call",
        "params": { "name": "sleep", "arguments": { "ms": 60_000 } }
    });
    let response = raw_post(&url)
        .header("mcp-session-id", session.clone())
        .json(&sleep)
        .send()
        .await
        .unwrap();
    // The answer's head is out: the call is in flight. Kill the session's process.
    assert_eq!(response.status(), 200);
    let pid = spawner.pids.lock().unwrap()[0];
    let killed = std::process::Command::new("kill")
        .args(["-9", &pid.to_string()])
        .status()
        .unwrap();
    assert!(killed.success());
    let body = tokio::time::timeout(DEADLINE, response.text())
        .await
        .expect("the call ends instead of hanging")
        .unwrap();
    assert!(body.contains("upstream connection lost"), "{body}");
    assert!(body.contains(r#""id":9"#), "{body}");

    // The dead session is over; a new one gets a new process.
    let response = raw_post(&url)
        .header("mcp-session-id", session)
        .json(&sleep)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 404);
    let next = legacy_client(&url, None).await;
    assert_eq!(
        text(&next.peer().call_tool(echo("again")).await.unwrap()),
        "again"
    );
}

#[tokio::test]
async fn a_broken_answer_stream_is_resumed_with_last_event_id() {
    let (_spawner, table) = per_session(&["--tools", "sleep"], 4, Duration::from_secs(60));
    let gateway = TestGateway::start(table, |_| {}).await;
    let url = gateway.url("solo");
    let session = raw_session(&url).await;

    let sleep = serde_json::json!({
        "jsonrpc": "2.0", "id": 5, "method": "tools/call",
        "params": { "name": "sleep", "arguments": { "ms": 300 } }
    });
    let mut answer = raw_post(&url)
        .header("mcp-session-id", session.clone())
        .json(&sleep)
        .send()
        .await
        .unwrap();
    // The priming event names the stream; then the connection breaks.
    let first = answer.chunk().await.unwrap().unwrap();
    let first = String::from_utf8_lossy(&first).into_owned();
    let last_id = first
        .lines()
        .find_map(|l| l.strip_prefix("id: "))
        .unwrap_or_else(|| panic!("no event id in {first:?}"))
        .to_owned();
    drop(answer);

    let resumed = reqwest::Client::new()
        .get(&url)
        .header("accept", "text/event-stream")
        .header("mcp-session-id", session)
        .header("last-event-id", &last_id)
        .send()
        .await
        .unwrap();
    assert_eq!(resumed.status(), 200);
    let body = tokio::time::timeout(DEADLINE, resumed.text())
        .await
        .expect("the resumed stream ends with the response")
        .unwrap();
    assert!(body.contains("slept 300 ms"), "{body}");
    assert!(body.contains(r#""id":5"#), "{body}");
    let stream = last_id.split('-').next().unwrap();
    assert!(body.contains(&format!("id: {stream}-")), "{body}");
}

#[tokio::test]
async fn a_stuck_stdio_server_gets_a_timeout_error_not_a_hang() {
    let (_spawner, table) = per_session(&["--tools", "echo,sleep"], 4, Duration::from_secs(60));
    let gateway = TestGateway::start(table, |c| {
        c.upstream_timeout = Duration::from_millis(300);
    })
    .await;
    let url = gateway.url("solo");
    let session = raw_session(&url).await;
    crate::a_stuck_call_times_out(&url, &session, 7).await;
    // The session goes on.
    let echo = serde_json::json!({
        "jsonrpc": "2.0", "id": 8, "method": "tools/call",
        "params": { "name": "echo", "arguments": { "message": "still here" } }
    });
    let response = raw_post(&url)
        .header("mcp-session-id", session)
        .json(&echo)
        .send()
        .await
        .unwrap();
    assert!(response.text().await.unwrap().contains("still here"));
}
