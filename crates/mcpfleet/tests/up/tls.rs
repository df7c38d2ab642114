//! `mcpfleet up` with `gateway.tls`: the fleet answers over https, and unusable TLS files
//! stop the start with an error naming the file.

use fleet_testkit::{ServerIdentity, trusting_a_test_ca};

use crate::{Fleet, assert_echo_answers, server, text};

const FLEET: &str = r#"
version: 1
name: tls
gateway:
  listen: 127.0.0.1:0
  tls: { cert: ./gateway.crt, key: ./gateway.key }
servers:
  search:
    http: { command: SAMPLE, args: ["--transport", "http", "--port", "{{ port }}"] }
"#;

#[test]
fn a_fleet_with_gateway_tls_answers_over_https() {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let Some(identity) = runtime.block_on(trusting_a_test_ca(
        "tls::a_fleet_with_gateway_tls_answers_over_https",
    )) else {
        return;
    };
    let fleet = Fleet::new("tls", FLEET);
    identity.write_pem(
        &fleet.dir.join("gateway.crt"),
        &fleet.dir.join("gateway.key"),
    );
    let out = fleet.up();
    assert!(out.status.success(), "{}", text(&out));
    let endpoint = server(&fleet.status(), "search").endpoint.clone().unwrap();
    assert!(endpoint.starts_with("https://"), "{endpoint}");
    assert_echo_answers(&endpoint, "over https");
}

#[test]
fn an_unusable_tls_key_stops_up_naming_the_file_not_its_content() {
    let fleet = Fleet::new("tls-bad-key", FLEET);
    ServerIdentity::untrusted().write_pem(
        &fleet.dir.join("gateway.crt"),
        &fleet.dir.join("gateway.key"),
    );
    std::fs::write(
        fleet.dir.join("gateway.key"),
        "-----BEGIN PRIVATE KEY-----\nc2VjcmV0LWtleS1ieXRlcw==\n-----END PRIVATE KEY-----\n",
    )
    .unwrap();
    let out = fleet.up();
    let shown = text(&out);
    // 2: an I/O error (docs/cli.md), reported by `up -d` itself, not left in its log.
    assert_eq!(out.status.code(), Some(2), "{shown}");
    assert!(shown.contains("cannot serve TLS"), "{shown}");
    assert!(shown.contains("gateway.key"), "{shown}");
    assert!(shown.contains("no usable PEM private key"), "{shown}");
    assert!(!shown.contains("c2VjcmV0"), "{shown}");
    assert!(!shown.contains("panicked"), "{shown}");
}
