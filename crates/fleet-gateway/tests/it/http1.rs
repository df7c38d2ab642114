//! The data plane's HTTP/1.1 seen from a raw socket: what a client relies on (RFC 9112),
//! whatever serves the connection. Pipelined requests are answered in order; a request
//! body arrives whole however it is framed or paced; HTTP/1.0 and `Connection: close`
//! end the connection after the answer; a malformed or oversized head is refused with a
//! 4xx and a close; HEAD gets no body; a 404 leaves the connection usable; an answer of
//! unknown length is chunked; a client leaving mid-answer leaves the others be.

use std::io::ErrorKind;
use std::net::SocketAddr;

use fleet_routes::table::RouteTable;
use fleet_testkit::HttpSampleServer;
use reqwest::header::HeaderValue;
use serde_json::json;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::TcpStream;

use crate::{DEADLINE, TestGateway, initialize_body, raw_session, table};

const HEALTHZ: &str = "GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n";

/// A gateway routing `alpha` to an `mcp-sample-server`, which lives as long as the pair.
async fn gateway_to_sample_server() -> (TestGateway, HttpSampleServer) {
    let upstream = HttpSampleServer::start(&[]).await;
    let gateway =
        TestGateway::start(table("alpha", &[(1, 100, &[("a", &upstream.url)])]), |_| {}).await;
    (gateway, upstream)
}

/// The head of a JSON-RPC POST to `alpha`; `more` adds header lines, each ending in CRLF.
fn post_head(more: &str) -> String {
    format!(
        "POST /mcp/alpha HTTP/1.1\r\nHost: 127.0.0.1\r\n\
         Accept: application/json, text/event-stream\r\nContent-Type: application/json\r\n\
         {more}\r\n"
    )
}

/// A `tools/call` of `tool` on the legacy `session`, as request `id`.
fn tools_call(session: &HeaderValue, id: u64, tool: &str, arguments: serde_json::Value) -> String {
    let body = json!({
        "jsonrpc": "2.0", "id": id, "method": "tools/call",
        "params": { "name": tool, "arguments": arguments }
    })
    .to_string();
    let session = session.to_str().expect("a session id is text");
    post_head(&format!(
        "Mcp-Session-Id: {session}\r\nContent-Length: {}\r\n",
        body.len()
    )) + &body
}

/// An `initialize` answered with its result: the gateway read the request body whole.
fn assert_initialized(answer: &Answer) {
    assert_eq!(answer.status, 200, "{answer:?}");
    let message = answer.jsonrpc();
    assert_eq!(message["id"], 1, "{message}");
    assert!(message["result"]["serverInfo"].is_object(), "{message}");
}

/// One answer as read off the wire.
#[derive(Debug)]
struct Answer {
    status_line: String,
    status: u16,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
}

impl Answer {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(candidate, _)| candidate.eq_ignore_ascii_case(name))
            .map(|(_, value)| value.as_str())
    }

    /// The JSON-RPC message in the body: the body itself, or an event stream's first
    /// `data:` that is not empty (an upstream may prime the stream with an empty one).
    fn jsonrpc(&self) -> serde_json::Value {
        let body = String::from_utf8_lossy(&self.body);
        let is_sse = self
            .header("content-type")
            .is_some_and(|value| value.starts_with("text/event-stream"));
        let json = if is_sse {
            body.lines()
                .filter_map(|line| line.strip_prefix("data:"))
                .find(|data| !data.trim().is_empty())
                .unwrap_or_else(|| panic!("no message in the event stream: {body}"))
        } else {
            &body
        };
        serde_json::from_str(json.trim()).unwrap_or_else(|error| panic!("{error}: {body}"))
    }
}

/// A client connection that reads one answer at a time; what it reads past an answer
/// waits for the next.
struct Wire {
    tcp: TcpStream,
    unread: Vec<u8>,
}

impl Wire {
    async fn connect(address: SocketAddr) -> Self {
        let tcp = TcpStream::connect(address).await.expect("connect");
        Self {
            tcp,
            unread: Vec::new(),
        }
    }

    async fn send(&mut self, bytes: impl AsRef<[u8]>) {
        self.tcp.write_all(bytes.as_ref()).await.expect("send");
        self.tcp.flush().await.expect("flush");
    }

    /// The next answer, to any request but HEAD.
    async fn answer(&mut self) -> Answer {
        self.read_answer(false).await
    }

    /// The next answer, to a HEAD request: a head without a body.
    async fn answer_to_head(&mut self) -> Answer {
        self.read_answer(true).await
    }

    async fn read_answer(&mut self, to_head: bool) -> Answer {
        tokio::time::timeout(DEADLINE, self.parse_answer(to_head))
            .await
            .expect("an answer in time")
    }

    async fn parse_answer(&mut self, to_head: bool) -> Answer {
        let status_line = self.line().await;
        let status = status_line
            .split(' ')
            .nth(1)
            .and_then(|code| code.parse().ok())
            .unwrap_or_else(|| panic!("not a status line: {status_line:?}"));
        let mut headers = Vec::new();
        loop {
            let line = self.line().await;
            if line.is_empty() {
                break;
            }
            let (name, value) = line
                .split_once(':')
                .unwrap_or_else(|| panic!("not a header: {line:?}"));
            headers.push((name.to_owned(), value.trim().to_owned()));
        }
        let mut answer = Answer {
            status_line,
            status,
            headers,
            body: Vec::new(),
        };
        // How the body ends, in RFC 9112 §6.3's order.
        let chunked = answer
            .header("transfer-encoding")
            .is_some_and(|codings| codings.to_ascii_lowercase().ends_with("chunked"));
        answer.body = if to_head || status < 200 || status == 204 || status == 304 {
            Vec::new()
        } else if chunked {
            self.chunked_body().await
        } else if let Some(length) = answer.header("content-length") {
            let length = length.parse().expect("a numeric Content-Length");
            self.take(length).await
        } else {
            self.until_closed().await
        };
        answer
    }

    async fn chunked_body(&mut self) -> Vec<u8> {
        let mut body = Vec::new();
        loop {
            let line = self.line().await;
            let size = line.split(';').next().unwrap_or_default().trim();
            let size = usize::from_str_radix(size, 16)
                .unwrap_or_else(|_| panic!("not a chunk size: {line:?}"));
            if size == 0 {
                break;
            }
            body.extend(self.take(size).await);
            assert_eq!(self.line().await, "", "a chunk's data ends with CRLF");
        }
        // Trailer fields, up to the empty line.
        while !self.line().await.is_empty() {}
        body
    }

    async fn line(&mut self) -> String {
        loop {
            if let Some(end) = self.unread.windows(2).position(|pair| pair == b"\r\n") {
                let line = String::from_utf8_lossy(&self.unread[..end]).into_owned();
                self.unread.drain(..end + 2);
                return line;
            }
            self.read_more().await;
        }
    }

    async fn take(&mut self, count: usize) -> Vec<u8> {
        while self.unread.len() < count {
            self.read_more().await;
        }
        self.unread.drain(..count).collect()
    }

    /// Panics when the connection ends first.
    async fn read_more(&mut self) {
        let mut buffer = [0; 8192];
        let read = self.tcp.read(&mut buffer).await.expect("read");
        assert!(
            read > 0,
            "the connection ended in the middle of an answer: {:?}",
            String::from_utf8_lossy(&self.unread)
        );
        self.unread.extend_from_slice(&buffer[..read]);
    }

    /// Everything until the gateway closes the connection, within [`DEADLINE`]. A reset
    /// counts as a close: a server may close before reading all a client sent.
    async fn until_closed(&mut self) -> Vec<u8> {
        let mut rest = std::mem::take(&mut self.unread);
        let read = tokio::time::timeout(DEADLINE, self.tcp.read_to_end(&mut rest))
            .await
            .expect("the gateway closes the connection in time");
        if let Err(error) = read {
            assert_eq!(error.kind(), ErrorKind::ConnectionReset, "{error}");
        }
        rest
    }

    async fn assert_closed(&mut self) {
        let rest = self.until_closed().await;
        assert!(
            rest.is_empty(),
            "nothing follows the answer: {:?}",
            String::from_utf8_lossy(&rest)
        );
    }
}

#[tokio::test]
async fn two_pipelined_requests_are_answered_in_order_on_one_connection() {
    let gateway = TestGateway::start(RouteTable::empty(), |_| {}).await;
    let mut wire = Wire::connect(gateway.address).await;
    wire.send(format!(
        "{HEALTHZ}GET /nope HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n"
    ))
    .await;
    assert_eq!(wire.answer().await.status, 200);
    assert_eq!(wire.answer().await.status, 404);
    wire.send(HEALTHZ).await;
    assert_eq!(wire.answer().await.status, 200);
}

#[tokio::test]
async fn a_request_body_sent_chunked_is_read_whole() {
    let (gateway, _upstream) = gateway_to_sample_server().await;
    let body = initialize_body().to_string();
    let (first, rest) = body.split_at(10);
    let (second, third) = rest.split_at(25);
    let mut wire = Wire::connect(gateway.address).await;
    wire.send(format!(
        "{}{:x}\r\n{first}\r\n{:x};x=y\r\n{second}\r\n{:x}\r\n{third}\r\n0\r\n\r\n",
        post_head("Transfer-Encoding: chunked\r\n"),
        first.len(),
        second.len(),
        third.len(),
    ))
    .await;
    assert_initialized(&wire.answer().await);
}

#[tokio::test]
async fn a_request_body_sent_after_100_continue_is_read() {
    let (gateway, _upstream) = gateway_to_sample_server().await;
    let body = initialize_body().to_string();
    let mut wire = Wire::connect(gateway.address).await;
    wire.send(post_head(&format!(
        "Expect: 100-continue\r\nContent-Length: {}\r\n",
        body.len()
    )))
    .await;
    let interim = wire.answer().await;
    assert_eq!(interim.status, 100, "{interim:?}");
    wire.send(body).await;
    assert_initialized(&wire.answer().await);
}

#[tokio::test]
async fn a_request_body_split_across_writes_is_read_whole() {
    let (gateway, _upstream) = gateway_to_sample_server().await;
    let body = initialize_body().to_string();
    let (first, second) = body.split_at(body.len() / 2);
    let mut wire = Wire::connect(gateway.address).await;
    wire.send(post_head(&format!("Content-Length: {}\r\n", body.len())) + first)
        .await;
    wire.send(second).await;
    assert_initialized(&wire.answer().await);
}

#[tokio::test]
async fn http_1_0_request_gets_an_answer_and_the_connection_closes() {
    let gateway = TestGateway::start(RouteTable::empty(), |_| {}).await;
    let mut wire = Wire::connect(gateway.address).await;
    wire.send("GET /healthz HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n")
        .await;
    let answer = wire.answer().await;
    assert_eq!(answer.status, 200, "{answer:?}");
    // Either is right (RFC 9110 §2.5): the server's highest version compatible with 1.0.
    assert!(answer.status_line.starts_with("HTTP/1."), "{answer:?}");
    wire.assert_closed().await;
}

#[tokio::test]
async fn connection_close_is_honoured() {
    let gateway = TestGateway::start(RouteTable::empty(), |_| {}).await;
    let mut wire = Wire::connect(gateway.address).await;
    wire.send("GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n")
        .await;
    assert_eq!(wire.answer().await.status, 200);
    wire.assert_closed().await;
}

#[tokio::test]
async fn a_malformed_request_line_gets_400_and_a_close() {
    let gateway = TestGateway::start(RouteTable::empty(), |_| {}).await;
    let mut wire = Wire::connect(gateway.address).await;
    wire.send("GARBAGE\r\n\r\n").await;
    let answer = wire.answer().await;
    assert_eq!(answer.status, 400, "{answer:?}");
    wire.assert_closed().await;
}

#[tokio::test]
async fn a_head_too_large_is_refused() {
    let gateway = TestGateway::start(RouteTable::empty(), |_| {}).await;
    let filler = "a".repeat(1024);
    let fields: String = (0..100)
        .map(|n| format!("X-Filler-{n}: {filler}\r\n"))
        .collect();
    let mut wire = Wire::connect(gateway.address).await;
    // The gateway may refuse before reading it all, and close: the send may fail then.
    let _ = wire
        .tcp
        .write_all(format!("GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n{fields}\r\n").as_bytes())
        .await;
    let answer = wire.answer().await;
    assert!((400..500).contains(&answer.status), "{answer:?}");
    wire.assert_closed().await;
}

#[tokio::test]
async fn head_requests_get_no_body() {
    let gateway = TestGateway::start(RouteTable::empty(), |_| {}).await;
    let mut wire = Wire::connect(gateway.address).await;
    wire.send(format!(
        "HEAD /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n{HEALTHZ}"
    ))
    .await;
    assert_eq!(wire.answer_to_head().await.status, 200);
    // Had the HEAD answer carried body bytes, they would stand where this status line is.
    let next = wire.answer().await;
    assert_eq!(next.status, 200, "{next:?}");
}

#[tokio::test]
async fn an_unknown_path_is_404_and_the_connection_stays_usable() {
    let gateway = TestGateway::start(RouteTable::empty(), |_| {}).await;
    let mut wire = Wire::connect(gateway.address).await;
    wire.send("GET /nope HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
        .await;
    assert_eq!(wire.answer().await.status, 404);
    wire.send(HEALTHZ).await;
    assert_eq!(wire.answer().await.status, 200);
}

/// A gateway in front of the sample server, and a connection to it on which a
/// `tools/call` of `sleep` (for `ms`, on a fresh session) was sent as `http_1_0` says and
/// answered: the upstream opens its event stream at once and ends it after the sleep,
/// so the answer's end is not known when its head goes out. The answer is the slept
/// result, checked here.
async fn a_sleep_answered(
    ms: u64,
    http_1_0: bool,
) -> (Answer, Wire, TestGateway, HttpSampleServer) {
    let (gateway, upstream) = gateway_to_sample_server().await;
    let session = raw_session(&gateway.url("alpha")).await;
    let mut wire = Wire::connect(gateway.address).await;
    let mut request = tools_call(&session, 2, "sleep", json!({ "ms": ms }));
    if http_1_0 {
        request = request.replacen(
            " HTTP/1.1\r\n",
            " HTTP/1.0\r\nConnection: keep-alive\r\n",
            1,
        );
    }
    wire.send(request).await;
    let answer = wire.answer().await;
    assert_eq!(answer.status, 200, "{answer:?}");
    let message = answer.jsonrpc();
    assert_eq!(
        message["result"]["content"][0]["text"],
        format!("slept {ms} ms"),
        "{message}"
    );
    (answer, wire, gateway, upstream)
}

/// An answer whose end is not known when its head goes out is chunked on HTTP/1.1, so
/// the connection outlives it (an answer ended by a close would end the connection too).
#[tokio::test]
async fn a_streamed_answer_is_chunked_on_http_1_1() {
    let (answer, mut wire, _gateway, _upstream) = a_sleep_answered(500, false).await;
    assert!(
        answer
            .header("content-type")
            .is_some_and(|value| value.starts_with("text/event-stream")),
        "{answer:?}"
    );
    assert!(
        answer
            .header("transfer-encoding")
            .is_some_and(|codings| codings.eq_ignore_ascii_case("chunked")),
        "{answer:?}"
    );
    assert_eq!(answer.header("content-length"), None, "{answer:?}");
    wire.send(HEALTHZ).await;
    assert_eq!(wire.answer().await.status, 200);
}

/// HTTP/1.0 has no chunks: an answer of unknown length can end only with the
/// connection, even when the client asked to keep it.
#[tokio::test]
async fn a_streamed_answer_to_http_1_0_ends_with_the_connection() {
    let (answer, _wire, _gateway, _upstream) = a_sleep_answered(200, true).await;
    assert_eq!(answer.header("transfer-encoding"), None, "{answer:?}");
    assert_eq!(answer.header("content-length"), None, "{answer:?}");
    assert_eq!(answer.header("connection"), Some("close"), "{answer:?}");
}

#[tokio::test]
async fn a_client_that_disconnects_mid_answer_does_not_hurt_others() {
    let (gateway, _upstream) = gateway_to_sample_server().await;
    let session = raw_session(&gateway.url("alpha")).await;
    let mut leaving = Wire::connect(gateway.address).await;
    leaving
        .send(tools_call(&session, 2, "sleep", json!({ "ms": 60_000 })))
        .await;
    let status_line = tokio::time::timeout(DEADLINE, leaving.line())
        .await
        .expect("the answer starts before the call ends");
    assert!(status_line.starts_with("HTTP/1.1 200"), "{status_line}");
    let mut staying = Wire::connect(gateway.address).await;
    staying
        .send(tools_call(
            &session,
            3,
            "echo",
            json!({ "message": "still here" }),
        ))
        .await;
    drop(leaving);

    let answer = staying.answer().await;
    assert_eq!(answer.status, 200, "{answer:?}");
    let message = answer.jsonrpc();
    assert_eq!(message["id"], 3, "{message}");
    assert_eq!(
        message["result"]["content"][0]["text"], "still here",
        "{message}"
    );
    staying.send(HEALTHZ).await;
    assert_eq!(staying.answer().await.status, 200);
}

#[tokio::test]
async fn a_head_sent_a_byte_at_a_time_is_served() {
    let gateway = TestGateway::start(RouteTable::empty(), |_| {}).await;
    let mut wire = Wire::connect(gateway.address).await;
    wire.tcp.set_nodelay(true).expect("nodelay");
    // Every cut, the blank line's included: the head is whole only with its last byte.
    for byte in HEALTHZ.as_bytes() {
        wire.send([*byte]).await;
    }
    assert_eq!(wire.answer().await.status, 200);
    wire.send(HEALTHZ).await;
    assert_eq!(wire.answer().await.status, 200);
}

#[tokio::test]
async fn an_oversized_body_is_answered_413_and_the_client_reads_the_answer() {
    let upstream = HttpSampleServer::start(&[]).await;
    let gateway = TestGateway::start(
        table("alpha", &[(1, 100, &[("a", &upstream.url)])]),
        |config| {
            config.max_body_bytes = 1024;
        },
    )
    .await;
    let body = format!(
        "{{\"jsonrpc\":\"2.0\",\"id\":1,\"method\":\"ping\",\"pad\":\"{}\"}}",
        "x".repeat(256 * 1024)
    );
    let mut wire = Wire::connect(gateway.address).await;
    let (mut reading, mut writing) = wire.tcp.into_split();
    // The gateway answers before it has read the body, and closes: the client is still
    // sending when it does, and must get the answer, not a reset.
    let sending = tokio::spawn(async move {
        let head = post_head(&format!("Content-Length: {}\r\n", body.len()));
        let _ = writing.write_all(format!("{head}{body}").as_bytes()).await;
        writing
    });
    let mut answer = Vec::new();
    let read = tokio::time::timeout(DEADLINE, reading.read_to_end(&mut answer))
        .await
        .expect("the gateway closes in time");
    let answer = String::from_utf8_lossy(&answer);
    assert!(read.is_ok(), "read {answer:?} then {read:?}");
    assert!(answer.starts_with("HTTP/1.1 413"), "{answer}");
    assert!(answer.contains("connection: close"), "{answer}");
    drop(sending.await);
    wire = Wire {
        tcp: TcpStream::connect(gateway.address).await.expect("connect"),
        unread: Vec::new(),
    };
    wire.send(HEALTHZ).await;
    assert_eq!(wire.answer().await.status, 200);
}
