//! Probes of `https://` servers: real TLS on loopback (a [`TlsFront`] before
//! `mcp-sample-server`), certificates from a CA made at test time. Each test runs again in
//! a child process started with `SSL_CERT_FILE` naming that CA (see
//! `fleet_testkit::trusting_a_test_ca`), which is why this is a test binary of its own.

use std::time::Duration;

use fleet_mcp::{CheckFailure, CheckSpec, probe_http, run_check};
use fleet_spec::model::{Cadence, Era, McpCheck, SmokeCall};
use fleet_testkit::{HttpSampleServer, ServerIdentity, TlsFront, trusting_a_test_ca};

const TIMEOUT: Duration = Duration::from_secs(10);

fn echo_check() -> McpCheck {
    McpCheck {
        cadence: Cadence {
            interval: Duration::from_secs(10),
            timeout: TIMEOUT,
            failure_threshold: 3,
            success_threshold: 1,
        },
        expect_tools: vec!["echo".to_owned()],
        call: Some(SmokeCall {
            tool: "echo".to_owned(),
            arguments: serde_json::json!({ "message": "over tls" }),
            expect_contains: Some("over tls".to_owned()),
            expect_error: false,
        }),
        max_latency: None,
    }
}

#[tokio::test]
async fn an_https_server_passes_its_mcp_and_http_checks() {
    let Some(identity) = trusting_a_test_ca("an_https_server_passes_its_mcp_and_http_checks").await
    else {
        return;
    };
    let server = HttpSampleServer::start(&["--era", "both"]).await;
    let front = TlsFront::start(&server.url, identity).await;
    for era in [Era::Legacy, Era::Modern, Era::Auto] {
        let report = probe_http(&front.url, &[], era, &echo_check()).await;
        assert!(report.passed(), "{era:?}: {report:?}");
    }
    let http = CheckSpec::Http {
        url: front.url.clone(),
        // GET on the MCP endpoint without an SSE Accept header is refused: any answer
        // proves the TLS connection.
        expect_status: Some(406),
    };
    let report = run_check(&http, TIMEOUT).await;
    assert!(report.passed(), "{report:?}");
}

#[tokio::test]
async fn a_certificate_from_an_unknown_ca_fails_the_probe_with_the_reason() {
    let Some(_) =
        trusting_a_test_ca("a_certificate_from_an_unknown_ca_fails_the_probe_with_the_reason")
            .await
    else {
        return;
    };
    let server = HttpSampleServer::start(&[]).await;
    let front = TlsFront::start(&server.url, ServerIdentity::untrusted()).await;
    let report = probe_http(&front.url, &[], Era::Auto, &echo_check()).await;
    match report.failure() {
        Some(CheckFailure::Connect { target, message }) => {
            assert_eq!(target, &front.url);
            assert!(message.contains("UnknownIssuer"), "{message}");
        }
        other => panic!("expected a connect failure, got {other:?}"),
    }
    assert!(report.took < TIMEOUT, "refused at once, not timed out");
    assert!(!server.logged("initialize"), "nothing reached the server");
}
