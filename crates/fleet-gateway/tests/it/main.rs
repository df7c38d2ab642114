//! fleet-gateway against real sockets and real `mcp-sample-server` (HTTP and stdio)
//! upstreams, with rmcp as the MCP client. One test binary; each test starts its own
//! gateway and upstreams. Run alone, this needs `cargo build -p fleet-testkit --bin
//! mcp-sample-server` first (`cargo test --workspace` builds it). The interop tests
//! (`conformance`, `inspector`) also need the third-party peers from `cargo xtask
//! peers`; without them they fail, saying so.

mod audit;
mod conformance;
mod connections;
mod http1;
mod inspector;
mod isolation;
mod legacy;
mod limits;
mod modern;
mod peers;
mod replicas;
mod security;
mod stdio;
mod streams;

use std::collections::HashMap;
use std::net::{Ipv4Addr, SocketAddr};
use std::time::Duration;

use fleet_gateway::{Gateway, GatewayConfig, serve};
use fleet_routes::table::{Instance, RevisionRoute, RouteTable};
use fleet_stdio::{StdioEndpoint, StdioInstances};
use rmcp::model::{
    CallToolRequestParams, ClientCapabilities, ClientConfig, Implementation, ProtocolVersion,
};
use rmcp::service::{RoleClient, RunningService};
use rmcp::transport::StreamableHttpClientTransport;
use rmcp::transport::streamable_http_client::StreamableHttpClientTransportConfig;
use rmcp::{ClientLifecycleMode, ClientServiceExt as _};
use tokio::sync::watch;

/// Generous: debug builds on a loaded machine.
const DEADLINE: Duration = Duration::from_secs(15);

type Client = RunningService<RoleClient, ClientConfig>;

/// A gateway on a loopback port, serving until the test ends.
struct TestGateway {
    gateway: Gateway,
    address: SocketAddr,
    routes: watch::Sender<RouteTable>,
}

/// What a test gateway routes: a table, and the stdio instances it names.
pub(crate) struct Routing {
    table: RouteTable,
    stdio: Vec<(String, String, StdioEndpoint)>,
}

impl From<RouteTable> for Routing {
    fn from(table: RouteTable) -> Self {
        Self {
            table,
            stdio: Vec::new(),
        }
    }
}

impl Routing {
    /// `server` with one revision and one stdio instance reached through `endpoint`.
    pub(crate) fn stdio(server: &str, id: &str, endpoint: StdioEndpoint) -> Self {
        let instance = match endpoint {
            StdioEndpoint::Shared(_) => Instance::stdio(id),
            StdioEndpoint::PerSession(_) => Instance::stdio_per_session(id),
        };
        let table = RouteTable::new([(
            server.to_owned(),
            vec![RevisionRoute {
                revision: 1,
                weight: 100,
                instances: vec![instance],
            }],
        )])
        .expect("a valid route table");
        Self {
            table,
            stdio: vec![(server.to_owned(), id.to_owned(), endpoint)],
        }
    }

    /// The servers of both.
    pub(crate) fn and(mut self, other: impl Into<Routing>) -> Self {
        let other = other.into();
        self.table = RouteTable::new(
            self.table
                .servers()
                .chain(other.table.servers())
                .map(|(server, revisions)| (server.to_owned(), revisions.to_vec())),
        )
        .expect("servers of both tables differ");
        self.stdio.extend(other.stdio);
        self
    }
}

impl TestGateway {
    async fn start(
        routing: impl Into<Routing>,
        configure: impl FnOnce(&mut GatewayConfig),
    ) -> Self {
        let Routing { table, stdio } = routing.into();
        let instances = StdioInstances::new();
        for (server, id, endpoint) in stdio {
            instances.insert(&server, &id, endpoint);
        }
        let listener = tokio::net::TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
            .await
            .expect("bind the gateway");
        let address = listener.local_addr().unwrap();
        let mut config = GatewayConfig::new(address);
        configure(&mut config);
        let (routes, receiver) = watch::channel(table);
        let gateway = Gateway::new(config, receiver, instances);
        tokio::spawn(serve(listener, gateway.clone(), std::future::pending()));
        Self {
            gateway,
            address,
            routes,
        }
    }

    fn url(&self, server: &str) -> String {
        format!("http://{}/mcp/{server}", self.address)
    }

    fn publish(&self, table: RouteTable) {
        self.routes.send_replace(table);
    }
}

/// (revision, weight, instances as (id, url)).
type Revision<'a> = (u64, u32, &'a [(&'a str, &'a str)]);

/// One server with the given revisions.
fn table(server: &str, revisions: &[Revision<'_>]) -> RouteTable {
    RouteTable::new([(
        server.to_owned(),
        revisions
            .iter()
            .map(|(revision, weight, instances)| RevisionRoute {
                revision: *revision,
                weight: *weight,
                instances: instances
                    .iter()
                    .map(|(id, url)| Instance::http(*id, *url))
                    .collect(),
            })
            .collect(),
    )])
    .expect("a valid route table")
}

fn transport(url: &str, token: Option<&str>) -> StreamableHttpClientTransport<reqwest::Client> {
    let mut headers = HashMap::new();
    if let Some(token) = token {
        headers.insert(
            reqwest::header::AUTHORIZATION,
            format!("Bearer {token}").parse().unwrap(),
        );
    }
    StreamableHttpClientTransport::from_config(
        StreamableHttpClientTransportConfig::with_uri(url)
            .custom_headers(headers)
            .reinit_on_expired_session(false),
    )
}

fn client_config(version: ProtocolVersion) -> ClientConfig {
    let mut config = ClientConfig::new(
        ClientCapabilities::default(),
        Implementation::new("fleet-gateway-test", "0"),
    );
    config.protocol_version = version;
    config
}

/// A legacy (initialize) client session through `url`.
async fn legacy_client(url: &str, token: Option<&str>) -> Client {
    tokio::time::timeout(
        DEADLINE,
        client_config(ProtocolVersion::LATEST_WITH_INITIALIZE)
            .serve_with_lifecycle(transport(url, token), ClientLifecycleMode::Initialize),
    )
    .await
    .expect("initialize in time")
    .expect("initialize through the gateway")
}

/// A modern (server/discover, stateless) client through `url`.
async fn modern_client(url: &str) -> Client {
    tokio::time::timeout(
        DEADLINE,
        client_config(ProtocolVersion::V_2026_07_28).serve_with_lifecycle(
            transport(url, None),
            ClientLifecycleMode::Discover {
                preferred_versions: vec![ProtocolVersion::V_2026_07_28],
            },
        ),
    )
    .await
    .expect("discover in time")
    .expect("discover through the gateway")
}

fn echo(message: &str) -> CallToolRequestParams {
    CallToolRequestParams::new("echo").with_arguments(
        serde_json::json!({ "message": message })
            .as_object()
            .unwrap()
            .clone(),
    )
}

/// The text of a tool result's first content item.
fn text(result: &rmcp::model::CallToolResult) -> String {
    let value = serde_json::to_value(result).unwrap();
    value["content"][0]["text"]
        .as_str()
        .unwrap_or_default()
        .to_owned()
}

/// A raw `initialize` body, as a legacy client sends it.
fn initialize_body() -> serde_json::Value {
    serde_json::json!({
        "jsonrpc": "2.0", "id": 1, "method": "initialize",
        "params": {
            "protocolVersion": "2025-11-25",
            "capabilities": {},
            "clientInfo": { "name": "raw", "version": "0" }
        }
    })
}

/// A raw legacy session through `url` (`initialize`, then `notifications/initialized`,
/// answered 202): its `Mcp-Session-Id`.
async fn raw_session(url: &str) -> reqwest::header::HeaderValue {
    let response = raw_initialize(url).await;
    assert_eq!(response.status(), 200);
    let session = response.headers()["mcp-session-id"].clone();
    response.text().await.unwrap();
    let initialized = serde_json::json!({"jsonrpc": "2.0", "method": "notifications/initialized"});
    let response = raw_post(url)
        .header("mcp-session-id", session.clone())
        .json(&initialized)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 202);
    session
}

/// A raw `initialize` POST to `url`, its response unread.
async fn raw_initialize(url: &str) -> reqwest::Response {
    raw_post(url).json(&initialize_body()).send().await.unwrap()
}

fn raw_post(url: &str) -> reqwest::RequestBuilder {
    reqwest::Client::new()
        .post(url)
        .header("accept", "application/json, text/event-stream")
        .header("content-type", "application/json")
}

/// `serverInfo.name` of the client's server.
fn server_name(client: &Client) -> String {
    client
        .peer()
        .peer_info()
        .and_then(|info| info.server_info.clone())
        .map(|info| info.name)
        .unwrap_or_default()
}

/// Calls `sleep` for a minute on `session` through a gateway whose `upstream_timeout` is
/// short: the answer must end with a JSON-RPC error for request `id`, not hang.
pub(crate) async fn a_stuck_call_times_out(
    url: &str,
    session: &reqwest::header::HeaderValue,
    id: u64,
) {
    let sleep = serde_json::json!({
        "jsonrpc": "2.0", "id": id, "method": "tools/call",
        "params": { "name": "sleep", "arguments": { "ms": 60_000 } }
    });
    let started = std::time::Instant::now();
    let response = raw_post(url)
        .header("mcp-session-id", session.clone())
        .json(&sleep)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let body = tokio::time::timeout(DEADLINE, response.text())
        .await
        .expect("the answer ends instead of hanging")
        .unwrap();
    assert!(
        body.contains(&format!(r#""id":{id}"#)) && body.contains("error"),
        "{body}"
    );
    assert!(started.elapsed() < Duration::from_secs(10));
}
