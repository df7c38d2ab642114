//! The listener's limits on slow and idle clients, seen from a raw socket: each is
//! disconnected within its timeout, before its request reaches admission.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use fleet_gateway::TokenConfig;
use fleet_routes::table::RouteTable;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::TcpStream;

use crate::{DEADLINE, TestGateway};

/// Short enough for a test, long enough for a loaded debug build to send a request.
const SHORT: Duration = Duration::from_millis(400);

/// A gateway that needs a token, with `header`, `body` and `idle` timeouts.
async fn gateway(header: Duration, body: Duration, idle: Duration) -> TestGateway {
    TestGateway::start(RouteTable::empty(), |config| {
        config.tokens = vec![TokenConfig::new("ci", &"ab".repeat(32), ["*"]).unwrap()];
        config.header_read_timeout = header;
        config.body_read_timeout = body;
        config.idle_timeout = idle;
    })
    .await
}

/// Sends `request` and reads until the gateway closes the connection; panics when it
/// is still open after [`DEADLINE`]. What was read, and when it closed after the send.
async fn until_closed(address: SocketAddr, request: &[u8]) -> (String, Duration) {
    let mut tcp = TcpStream::connect(address).await.expect("connect");
    tcp.write_all(request).await.expect("send");
    let sent = Instant::now();
    let mut read = Vec::new();
    tokio::time::timeout(DEADLINE, tcp.read_to_end(&mut read))
        .await
        .expect("the gateway closes the connection in time")
        .expect("read until closed");
    (String::from_utf8_lossy(&read).into_owned(), sent.elapsed())
}

#[tokio::test]
async fn a_client_that_sends_half_a_request_head_is_disconnected() {
    let gateway = gateway(SHORT, DEADLINE * 2, DEADLINE * 2).await;
    let (answer, after) = until_closed(
        gateway.address,
        b"POST /mcp/any HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Le",
    )
    .await;
    assert!(after >= SHORT.mul_f32(0.9), "closed after {after:?}");
    assert!(
        !answer.contains("401"),
        "no request reached admission: {answer}"
    );
}

#[tokio::test]
async fn a_client_that_connects_and_sends_nothing_is_disconnected() {
    let gateway = gateway(SHORT, DEADLINE * 2, DEADLINE * 2).await;
    let (answer, after) = until_closed(gateway.address, b"").await;
    assert!(after >= SHORT.mul_f32(0.9), "closed after {after:?}");
    assert!(!answer.contains("401"), "{answer}");
}

#[tokio::test]
async fn a_client_that_stalls_its_request_body_is_disconnected() {
    // No token: the body is read only after admission, so this gateway admits all.
    // The upstream is never reached: the body never arrives.
    let routes = crate::table("any", &[(1, 1, &[("a", "http://127.0.0.1:1/mcp")])]);
    let gateway = TestGateway::start(routes, |config| {
        config.header_read_timeout = DEADLINE * 2;
        config.body_read_timeout = SHORT;
        config.idle_timeout = DEADLINE * 2;
    })
    .await;
    let (answer, after) = until_closed(
        gateway.address,
        b"POST /mcp/any HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n\
          Accept: application/json, text/event-stream\r\nContent-Length: 100\r\n\r\n{\"jsonrpc\"",
    )
    .await;
    assert!(
        after >= SHORT.mul_f32(0.9),
        "closed after {after:?}: {answer}"
    );
    assert!(answer.starts_with("HTTP/1.1 400"), "{answer}");
}

#[tokio::test]
async fn an_idle_keep_alive_connection_is_disconnected() {
    let gateway = gateway(DEADLINE * 2, DEADLINE * 2, SHORT).await;
    let (answer, after) = until_closed(
        gateway.address,
        b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n",
    )
    .await;
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    assert!(!answer.contains("connection: close"), "{answer}");
    assert!(after >= SHORT.mul_f32(0.9), "closed after {after:?}");
}

#[tokio::test]
async fn readyz_refuses_a_foreign_host() {
    let gateway = TestGateway::start(RouteTable::empty(), |_| {}).await;
    let readyz = format!("http://{}/readyz", gateway.address);
    let client = reqwest::Client::new();
    let rebinding = client
        .get(&readyz)
        .header(
            "host",
            format!("attacker.example:{}", gateway.address.port()),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(rebinding.status(), 403);
    let local = client.get(&readyz).send().await.unwrap();
    assert_eq!(local.status(), 200);
}

#[tokio::test]
async fn a_client_that_stops_reading_its_answers_is_disconnected() {
    let gateway = gateway(DEADLINE * 2, DEADLINE * 2, SHORT).await;
    let socket = tokio::net::TcpSocket::new_v4().expect("socket");
    // A small window: the gateway's answers back up soon.
    socket.set_recv_buffer_size(4096).expect("receive buffer");
    let tcp = socket.connect(gateway.address).await.expect("connect");
    let (_never_read, mut writing) = tcp.into_split();
    let requests = "GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n".repeat(1000);
    // Requests until the gateway, its answers refused, stops taking them and then
    // gives up on the client: the writes fail once it has closed.
    let flooding = async {
        loop {
            if writing.write_all(requests.as_bytes()).await.is_err() {
                return;
            }
        }
    };
    tokio::time::timeout(DEADLINE * 2, flooding)
        .await
        .expect("the gateway closes a connection whose client reads nothing");
}
