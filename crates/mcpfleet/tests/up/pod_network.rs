//! `mcpfleet up --pod-network`, what the rendered control plane Deployment runs: the
//! gateway and the admin port on every address of the machine (in a pod, the pod's), only
//! for a gateway with tokens and TLS, and beyond loopback the admin port answers
//! `/metrics` and `/healthz` alone. Real control plane, real HTTP at this machine's
//! non-loopback address.

use super::admin_auth::{block_on, sha256_hex};
use super::*;

const GATEWAY_TOKEN: &str = "mcpf_gateway-token-for-the-cluster";

/// An address of this machine that is not loopback: the one its route to a TEST-NET
/// address leaves from (a UDP `connect` sends nothing).
fn non_loopback_address() -> std::net::IpAddr {
    let socket = std::net::UdpSocket::bind("0.0.0.0:0").unwrap();
    socket
        .connect("192.0.2.1:9")
        .expect("this machine has no route beyond loopback: the test needs an address there");
    let ip = socket.local_addr().unwrap().ip();
    assert!(!ip.is_loopback(), "{ip}");
    ip
}

/// `url` with its host replaced by `ip`.
fn at(url: &str, ip: std::net::IpAddr) -> String {
    let (scheme, rest) = url.split_once("://").unwrap();
    let (authority, path) = rest.split_once('/').unwrap_or((rest, ""));
    let port = authority.rsplit(':').next().unwrap();
    format!("{scheme}://{ip}:{port}/{path}")
}

/// An `initialize` at `endpoint` for `host` (the `Host` header) with `token`: the HTTP
/// status.
fn initialize(endpoint: &str, host: &str, token: &str) -> u16 {
    let body = r#"{"jsonrpc":"2.0","id":1,"method":"initialize","params":{"protocolVersion":"2025-11-25","capabilities":{},"clientInfo":{"name":"up-test","version":"0"}}}"#;
    block_on(async {
        http_client()
            .post(endpoint)
            .header("host", host)
            .header("accept", "application/json, text/event-stream")
            .header("content-type", "application/json")
            .header("authorization", format!("Bearer {token}"))
            .body(body)
            .send()
            .await
            .unwrap()
            .status()
            .as_u16()
    })
}

/// `GET url`: the status.
fn get_status(url: &str) -> u16 {
    block_on(async {
        http_client()
            .get(url)
            .send()
            .await
            .unwrap()
            .status()
            .as_u16()
    })
}

#[test]
fn up_on_the_pod_network_refuses_a_gateway_without_tokens_or_tls_where_its_listen_is() {
    let fleet = Fleet::new(
        "pod-network-open",
        "version: 1\nname: pod-network-open\ngateway:\n  listen: 127.0.0.1:0\nservers:\n  search:\n    http: { command: SAMPLE, args: [\"--transport\", \"http\", \"--port\", \"{{ port }}\"] }\n",
    );
    let out = fleet.mcpfleet(&["up", "-d", "--pod-network"]);
    let shown = text(&out);
    assert_eq!(out.status.code(), Some(1), "{shown}");
    assert!(
        shown.contains("the gateway would serve the pod's network without authentication"),
        "{shown}"
    );
    assert!(
        shown.contains("the gateway would serve the pod's network without TLS"),
        "{shown}"
    );
    assert!(
        shown.contains("mcpfleet.yaml:4:11"),
        "located at `gateway.listen`: {shown}"
    );
    // Nothing started.
    assert_eq!(fleet.mcpfleet(&["status"]).status.code(), Some(3));
}

#[test]
fn up_on_the_pod_network_serves_the_gateway_with_tokens_and_only_metrics_and_health_beyond_loopback()
 {
    let yaml = format!(
        "version: 1\nname: pod-network\nkubernetes:\n  ingress: {{ host: mcp.example.com, tls_secret: mcp-tls }}\ngateway:\n  listen: 127.0.0.1:0\n  auth:\n    tokens:\n      - {{ name: ci, sha256: \"{}\", servers: [\"*\"] }}\n  tls: {{ terminated_by: proxy }}\nadmin:\n  listen: 127.0.0.1:0\nservers:\n  search:\n    http: {{ command: SAMPLE, args: [\"--transport\", \"http\", \"--port\", \"{{{{ port }}}}\"] }}\n",
        sha256_hex(GATEWAY_TOKEN)
    );
    let fleet = Fleet::new("pod-network", &yaml);
    let out = fleet.mcpfleet(&["up", "-d", "--pod-network"]);
    assert!(out.status.success(), "{}", text(&out));
    let status = fleet.status();
    let ip = non_loopback_address();
    // The status shows the written (loopback) addresses with the ports bound.
    let endpoint = server(&status, "search").endpoint.clone().unwrap();
    let admin = status.admin_url.clone().unwrap();
    assert!(endpoint.starts_with("http://127.0.0.1:"), "{endpoint}");

    // The gateway beyond loopback, as the Service and the Ingress reach it (by their
    // names): a token opens it.
    let outside = at(&endpoint, ip);
    let service = "mcpfleet.pod-network.svc";
    assert_eq!(
        initialize(&outside, service, "not-a-token"),
        401,
        "{outside}"
    );
    assert_eq!(initialize(&outside, "mcp.example.com", GATEWAY_TOKEN), 200);
    // A name that is not the fleet's: refused, as locally (DNS rebinding).
    assert_eq!(initialize(&outside, "attacker.example", GATEWAY_TOKEN), 403);
    let check = echo_check("through the pod's address");
    let headers = [
        ("Host".to_owned(), service.to_owned()),
        (
            "Authorization".to_owned(),
            format!("Bearer {GATEWAY_TOKEN}"),
        ),
    ];
    let report = block_on(fleet_mcp::probe_http(
        &outside,
        &headers,
        fleet_spec::model::Era::Legacy,
        &check,
    ));
    assert!(report.passed(), "{report}");
    // ... and on loopback still (a port-forward lands there).
    assert_eq!(initialize(&endpoint, "127.0.0.1", GATEWAY_TOKEN), 200);

    // The admin port beyond loopback: Prometheus's scrape and the probes, nothing else.
    let admin_outside = at(&admin, ip);
    let metrics = block_on(async {
        let response = http_client()
            .get(format!("{admin_outside}metrics"))
            .send()
            .await
            .unwrap();
        (response.status().as_u16(), response.text().await.unwrap())
    });
    assert_eq!(metrics.0, 200, "{}", metrics.1);
    assert!(metrics.1.contains("mcpfleet_"), "{}", metrics.1);
    assert_eq!(get_status(&format!("{admin_outside}healthz")), 200);
    for read in [
        "v1/status",
        "v1/events/stream",
        "v1/history",
        "v1/audit",
        "",
    ] {
        assert_eq!(
            get_status(&format!("{admin_outside}{read}")),
            404,
            "GET /{read} beyond loopback"
        );
    }
    let rollback = block_on(async {
        http_client()
            .post(format!("{admin_outside}v1/rollback"))
            .header("content-type", "application/json")
            .body("{}")
            .send()
            .await
            .unwrap()
            .status()
            .as_u16()
    });
    assert_eq!(rollback, 404);
    // On loopback the admin listener serves what `admin.listen` does.
    assert_eq!(get_status(&format!("{admin}/v1/status")), 200);
    assert_eq!(get_status(&format!("{admin}/v1/history")), 200);
}
