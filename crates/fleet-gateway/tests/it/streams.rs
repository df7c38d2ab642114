//! Answers reach the client as the upstream writes them, whatever their content type,
//! and a stuck upstream ends an answer by its silence, never by the answer's length.

use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Notify;

use crate::stdio::per_session;
use crate::{DEADLINE, TestGateway, raw_post, raw_session, table};

/// One part of a scripted upstream answer.
#[derive(Debug, Clone)]
enum Step {
    /// Writes these bytes as one HTTP chunk.
    Chunk(&'static str),
    /// Waits until the test says go on.
    Wait,
    /// Waits this long (pacing, not synchronisation: the upstream is slow on purpose).
    Pause(Duration),
}

/// An HTTP upstream that answers every POST with `application/json`, chunked, written
/// as `steps` say, and ends the answer after the last step. `go` releases a
/// [`Step::Wait`].
struct ScriptedUpstream {
    url: String,
    go: Arc<Notify>,
}

impl ScriptedUpstream {
    async fn start(steps: Vec<Step>) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}/mcp", listener.local_addr().unwrap());
        let go = Arc::new(Notify::new());
        let released = Arc::clone(&go);
        tokio::spawn(async move {
            while let Ok((connection, _)) = listener.accept().await {
                tokio::spawn(answer(connection, steps.clone(), Arc::clone(&released)));
            }
        });
        Self { url, go }
    }
}

async fn answer(mut connection: TcpStream, steps: Vec<Step>, go: Arc<Notify>) {
    // The request: its head, then as many body bytes as it declares.
    let mut request = Vec::new();
    let mut buffer = [0_u8; 4096];
    loop {
        let read = connection.read(&mut buffer).await.unwrap_or(0);
        if read == 0 {
            return;
        }
        request.extend_from_slice(&buffer[..read]);
        let text = String::from_utf8_lossy(&request).to_ascii_lowercase();
        if let Some(end) = text.find("\r\n\r\n") {
            let length = text[..end]
                .lines()
                .find_map(|line| line.strip_prefix("content-length:"))
                .and_then(|value| value.trim().parse::<usize>().ok())
                .unwrap_or(0);
            if request.len() >= end + 4 + length {
                break;
            }
        }
    }
    let head = "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\n\
                transfer-encoding: chunked\r\nconnection: close\r\n\r\n";
    if connection.write_all(head.as_bytes()).await.is_err() {
        return;
    }
    for step in steps {
        match step {
            Step::Chunk(data) => {
                let chunk = format!("{:x}\r\n{data}\r\n", data.len());
                if connection.write_all(chunk.as_bytes()).await.is_err() {
                    return;
                }
            }
            Step::Wait => go.notified().await,
            Step::Pause(duration) => tokio::time::sleep(duration).await,
        }
    }
    let _ = connection.write_all(b"0\r\n\r\n").await;
}

const FIRST_LINE: &str = "{\"jsonrpc\":\"2.0\",\"method\":\"notifications/message\",\"params\":{\"level\":\"info\",\"data\":\"first\"}}\n";
const RESPONSE: &str = "{\"jsonrpc\":\"2.0\",\"id\":1,\"result\":{\"resultType\":\"complete\"}}\n";

/// A modern `subscriptions/listen` to `url`.
fn listen(url: &str) -> reqwest::RequestBuilder {
    raw_post(url)
        .header("mcp-protocol-version", "2026-07-28")
        .header("mcp-method", "subscriptions/listen")
        .json(&serde_json::json!({
            "jsonrpc": "2.0", "id": 1, "method": "subscriptions/listen",
            "params": { "_meta": {
                "io.modelcontextprotocol/protocolVersion": "2026-07-28",
                "io.modelcontextprotocol/clientCapabilities": {},
            }},
        }))
}

#[tokio::test]
async fn a_json_answer_that_trickles_reaches_the_client_before_it_ends() {
    let upstream = ScriptedUpstream::start(vec![
        Step::Chunk(FIRST_LINE),
        Step::Wait,
        Step::Chunk(RESPONSE),
    ])
    .await;
    let gateway =
        TestGateway::start(table("alpha", &[(1, 100, &[("a", &upstream.url)])]), |_| {}).await;

    let mut response = tokio::time::timeout(DEADLINE, listen(&gateway.url("alpha")).send())
        .await
        .expect("the answer starts while the upstream is still writing it")
        .unwrap();
    assert_eq!(response.status(), 200);
    let first = tokio::time::timeout(DEADLINE, response.chunk())
        .await
        .expect("the first line arrives before the answer ends")
        .unwrap()
        .expect("a first chunk");
    assert_eq!(String::from_utf8_lossy(&first), FIRST_LINE);

    upstream.go.notify_one();
    let rest = tokio::time::timeout(DEADLINE, response.text())
        .await
        .expect("the answer ends when the upstream ends it")
        .unwrap();
    assert_eq!(rest, RESPONSE);
}

#[tokio::test]
async fn a_json_answer_is_bounded_by_the_upstreams_silence_not_by_its_length() {
    const STEP: Duration = Duration::from_millis(150);
    let timeout = Duration::from_millis(600);
    // Longer in all than the upstream timeout, never silent for as long.
    let steady = ScriptedUpstream::start(
        std::iter::repeat_n([Step::Pause(STEP), Step::Chunk(" ")], 8)
            .flatten()
            .chain([Step::Chunk(RESPONSE)])
            .collect(),
    )
    .await;
    // Silent after its first line, then before any of its answer.
    let stalled = ScriptedUpstream::start(vec![Step::Chunk(FIRST_LINE), Step::Wait]).await;
    let mute = ScriptedUpstream::start(vec![Step::Wait]).await;
    let through = |upstream: &ScriptedUpstream| {
        let table = table("alpha", &[(1, 100, &[("a", &upstream.url)])]);
        TestGateway::start(table, move |config| config.upstream_timeout = timeout)
    };
    let (steady, stalled, mute) = (
        through(&steady).await,
        through(&stalled).await,
        through(&mute).await,
    );

    let started = std::time::Instant::now();
    let answer = listen(&steady.url("alpha")).send().await.unwrap();
    assert_eq!(answer.status(), 200);
    let body = tokio::time::timeout(DEADLINE, answer.text())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(body.trim(), RESPONSE.trim());
    assert!(
        started.elapsed() > timeout,
        "the answer took longer than the timeout"
    );

    // Part of the answer was sent: the client's body breaks rather than end looking whole.
    let mut answer = listen(&stalled.url("alpha")).send().await.unwrap();
    let first = answer.chunk().await.unwrap().unwrap();
    assert_eq!(String::from_utf8_lossy(&first), FIRST_LINE);
    let rest = tokio::time::timeout(DEADLINE, answer.chunk())
        .await
        .expect("a silent upstream ends the answer");
    assert!(rest.is_err(), "the body must break, got {rest:?}");

    // None of it was sent: the answer is the gateway's error for the request.
    let answer = listen(&mute.url("alpha")).send().await.unwrap();
    let body: serde_json::Value = tokio::time::timeout(DEADLINE, answer.json())
        .await
        .expect("a silent upstream ends the answer")
        .unwrap();
    assert_eq!(body["id"], 1, "{body}");
    assert_eq!(body["error"]["code"], -32603, "{body}");
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("timed out"),
        "{body}"
    );
}

#[tokio::test]
async fn stdio_answer_streams_tell_the_client_when_to_reconnect() {
    let (_processes, table) = per_session(&[], 4, Duration::from_secs(60));
    let gateway = TestGateway::start(table, |_| {}).await;
    let url = gateway.url("solo");
    let session = raw_session(&url).await;
    let list = serde_json::json!({"jsonrpc": "2.0", "id": 2, "method": "tools/list"});
    let response = raw_post(&url)
        .header("mcp-session-id", session)
        .json(&list)
        .send()
        .await
        .unwrap();
    let body = tokio::time::timeout(DEADLINE, response.text())
        .await
        .unwrap()
        .unwrap();
    // The priming event: an id, the reconnection delay, no data.
    let priming = body.split("\n\n").next().unwrap();
    assert!(
        priming.starts_with("id: ") && priming.contains("\nretry: ") && priming.ends_with("data: "),
        "{body}"
    );
}

#[tokio::test]
async fn a_quick_answer_that_arrives_in_pieces_reaches_the_client_in_one_write() {
    // The head and the first line, a pause, the rest and the end: the way most answers
    // come, in pieces well within the gateway's hold.
    let upstream = ScriptedUpstream::start(vec![
        Step::Chunk(FIRST_LINE),
        Step::Pause(Duration::from_millis(1)),
        Step::Chunk(RESPONSE),
    ])
    .await;
    let gateway =
        TestGateway::start(table("alpha", &[(1, 100, &[("a", &upstream.url)])]), |_| {}).await;
    let body = serde_json::json!({
        "jsonrpc": "2.0", "id": 1, "method": "subscriptions/listen",
        "params": { "_meta": {
            "io.modelcontextprotocol/protocolVersion": "2026-07-28",
            "io.modelcontextprotocol/clientCapabilities": {},
        }},
    })
    .to_string();
    let request = format!(
        "POST /mcp/alpha HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\n\
         Accept: application/json, text/event-stream\r\nMCP-Protocol-Version: 2026-07-28\r\n\
         Mcp-Method: subscriptions/listen\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    );
    let mut client = TcpStream::connect(gateway.address).await.unwrap();
    client.write_all(request.as_bytes()).await.unwrap();

    // Every separate write would be a separate read here: the client is already waiting.
    let mut buffer = vec![0_u8; 64 * 1024];
    let read = tokio::time::timeout(DEADLINE, client.read(&mut buffer))
        .await
        .expect("the answer arrives")
        .unwrap();
    let answer = String::from_utf8_lossy(&buffer[..read]);
    let (head, body) = answer.split_once("\r\n\r\n").expect("a whole head");
    assert!(head.starts_with("HTTP/1.1 200"), "{answer}");
    assert!(
        head.to_ascii_lowercase().contains(&format!(
            "content-length: {}",
            FIRST_LINE.len() + RESPONSE.len()
        )),
        "a whole answer goes out with its length: {answer}"
    );
    assert_eq!(body, format!("{FIRST_LINE}{RESPONSE}"));
}
