//! `probe_http` against the sample server over Streamable HTTP.

use std::time::Duration;

use fleet_mcp::{CheckFailure, CheckKind, DetectedEra, probe_http};
use fleet_spec::model::Era;
use fleet_testkit::free_port;

use fleet_testkit::HttpSampleServer;

use crate::{
    MARGIN, RecordingProxy, echo, failure, mcp_check, passed, smoke, sorted, with_timeout,
};

#[tokio::test]
async fn a_dual_era_server_is_probed_in_the_era_asked_for() {
    let server = HttpSampleServer::start(&["--era", "both"]).await;
    let check = mcp_check(&["echo", "add"], Some(echo("hello", "hello")));
    for (era, detected, version) in [
        (Era::Legacy, DetectedEra::Legacy, "2025-11-25"),
        (Era::Modern, DetectedEra::Modern, "2026-07-28"),
        (Era::Auto, DetectedEra::Modern, "2026-07-28"),
    ] {
        let report = probe_http(&server.url, &[], era, &check).await;
        assert_eq!(report.kind, CheckKind::Mcp);
        let facts = passed(&report);
        assert_eq!(facts.era, detected, "{era:?}");
        assert_eq!(facts.protocol_version, version, "{era:?}");
        assert_eq!(facts.server_name, "mcp-sample-server");
        assert_eq!(sorted(&facts.tools), ["add", "echo", "fail", "sleep"]);
        assert!(facts.call.is_some());
        assert!(facts.handshake <= report.took);
    }
}

#[tokio::test]
async fn auto_falls_back_to_initialize_on_a_legacy_only_server() {
    let server = HttpSampleServer::start(&["--era", "legacy"]).await;
    let check = mcp_check(&["echo"], Some(echo("hi", "hi")));
    let report = probe_http(&server.url, &[], Era::Auto, &check).await;
    let facts = passed(&report);
    assert_eq!(facts.era, DetectedEra::Legacy);
    assert_eq!(facts.protocol_version, "2025-11-25");
    let detail = &report.outcome.as_ref().unwrap().detail;
    assert!(
        detail.starts_with("legacy 2025-11-25, mcp-sample-server"),
        "{detail}"
    );
}

#[tokio::test]
async fn auto_finds_a_modern_only_server() {
    let server = HttpSampleServer::start(&["--era", "modern"]).await;
    let report = probe_http(&server.url, &[], Era::Auto, &mcp_check(&["echo"], None)).await;
    assert_eq!(passed(&report).era, DetectedEra::Modern);
}

#[tokio::test]
async fn a_pinned_era_the_server_lacks_is_a_handshake_failure() {
    let legacy_only = HttpSampleServer::start(&["--era", "legacy"]).await;
    let report = probe_http(&legacy_only.url, &[], Era::Modern, &mcp_check(&[], None)).await;
    let CheckFailure::Handshake { message } = failure(&report) else {
        panic!("expected Handshake, got {:?}", report.outcome);
    };
    assert!(
        message.contains("does not speak the modern protocol"),
        "{message}"
    );
    assert!(message.contains("-32601"), "{message}");

    let modern_only = HttpSampleServer::start(&["--era", "modern"]).await;
    let report = probe_http(&modern_only.url, &[], Era::Legacy, &mcp_check(&[], None)).await;
    let CheckFailure::Handshake { message } = failure(&report) else {
        panic!("expected Handshake, got {:?}", report.outcome);
    };
    assert!(message.starts_with("initialize failed"), "{message}");
}

#[tokio::test]
async fn missing_tools_are_named() {
    let server = HttpSampleServer::start(&["--tools", "echo,add"]).await;
    let check = mcp_check(&["echo", "read_graph"], None);
    let report = probe_http(&server.url, &[], Era::Auto, &check).await;
    assert_eq!(
        failure(&report),
        &CheckFailure::MissingTools {
            missing: vec!["read_graph".into()],
            found: 2,
        }
    );
    assert_eq!(
        failure(&report).to_string(),
        "tools missing: read_graph (server lists 2 tools)"
    );
}

#[tokio::test]
async fn a_tool_error_is_a_call_error_unless_expected() {
    let server = HttpSampleServer::start(&[]).await;
    let mut call = smoke("fail", serde_json::json!({ "message": "disk on fire" }));
    let report = probe_http(
        &server.url,
        &[],
        Era::Auto,
        &mcp_check(&[], Some(call.clone())),
    )
    .await;
    let CheckFailure::CallError { tool, message } = failure(&report) else {
        panic!("expected CallError, got {:?}", report.outcome);
    };
    assert_eq!(tool, "fail");
    assert!(message.contains("disk on fire"), "{message}");

    call.expect_error = true;
    call.expect_contains = Some("on fire".into());
    let report = probe_http(&server.url, &[], Era::Auto, &mcp_check(&[], Some(call))).await;
    passed(&report);
}

#[tokio::test]
async fn a_json_rpc_error_from_the_call_is_a_call_error() {
    let server = HttpSampleServer::start(&["--error-rate", "1"]).await;
    let report = probe_http(
        &server.url,
        &[],
        Era::Legacy,
        &mcp_check(&[], Some(echo("x", "x"))),
    )
    .await;
    assert!(
        matches!(failure(&report), CheckFailure::CallError { tool, message } if tool == "echo" && message.contains("JSON-RPC error")),
        "{:?}",
        report.outcome
    );
}

#[tokio::test]
async fn a_result_without_the_expected_text_is_unexpected() {
    let server = HttpSampleServer::start(&[]).await;
    let report = probe_http(
        &server.url,
        &[],
        Era::Auto,
        &mcp_check(&[], Some(echo("hello", "goodbye"))),
    )
    .await;
    let CheckFailure::UnexpectedResult { tool, reason } = failure(&report) else {
        panic!("expected UnexpectedResult, got {:?}", report.outcome);
    };
    assert_eq!(tool, "echo");
    assert!(
        reason.contains("\"goodbye\"") && reason.contains("\"hello\""),
        "{reason}"
    );
}

#[tokio::test]
async fn a_slow_call_is_too_slow_and_the_probe_stops_waiting_at_the_limit() {
    let server = HttpSampleServer::start(&["--latency", "3s"]).await;
    let limit = Duration::from_millis(500);
    let mut check = mcp_check(&[], Some(echo("hi", "hi")));
    check.max_latency = Some(limit);
    let report = probe_http(&server.url, &[], Era::Auto, &check).await;
    let CheckFailure::TooSlow { took, limit: l } = failure(&report) else {
        panic!("expected TooSlow, got {:?}", report.outcome);
    };
    assert_eq!(*l, limit);
    assert!(*took >= limit);
    assert!(
        report.took < Duration::from_secs(3),
        "waited for the slow call: {:?}",
        report.took
    );
}

#[tokio::test]
async fn a_server_that_never_answers_times_out_the_handshake_promptly() {
    let server = HttpSampleServer::start(&["--never-answer"]).await;
    let timeout = Duration::from_millis(800);
    for era in [Era::Legacy, Era::Modern, Era::Auto] {
        let check = with_timeout(mcp_check(&[], None), timeout);
        let report = probe_http(&server.url, &[], era, &check).await;
        assert_eq!(
            failure(&report),
            &CheckFailure::HandshakeTimeout { after: timeout },
            "{era:?}"
        );
        assert!(report.took >= timeout);
        assert!(
            report.took < timeout + MARGIN,
            "{era:?} took {:?}",
            report.took
        );
    }
}

#[tokio::test]
async fn a_closed_port_is_a_connect_failure() {
    let url = format!("http://127.0.0.1:{}/mcp", free_port());
    for era in [Era::Legacy, Era::Modern, Era::Auto] {
        let report = probe_http(&url, &[], era, &mcp_check(&[], None)).await;
        let CheckFailure::Connect { target, message } = failure(&report) else {
            panic!("expected Connect for {era:?}, got {:?}", report.outcome);
        };
        assert_eq!(target, &url);
        assert!(message.to_lowercase().contains("refused"), "{message}");
    }
}

#[tokio::test]
async fn a_bad_url_or_header_is_reported_not_panicked() {
    let check = mcp_check(&[], None);
    for (url, headers) in [
        ("not a url", vec![]),
        ("https://127.0.0.1:1/mcp", vec![]),
        (
            "http://127.0.0.1:1/mcp",
            vec![("bad header".to_owned(), "x".to_owned())],
        ),
    ] {
        let report = probe_http(url, &headers, Era::Auto, &check).await;
        assert!(
            matches!(failure(&report), CheckFailure::Connect { .. }),
            "{url}: {:?}",
            report.outcome
        );
    }
}

#[tokio::test]
async fn the_wrong_path_fails_the_handshake_with_the_status() {
    let server = HttpSampleServer::start(&[]).await;
    let url = server.url.replace("/mcp", "/nope");
    let report = probe_http(&url, &[], Era::Legacy, &mcp_check(&[], None)).await;
    let CheckFailure::Handshake { message } = failure(&report) else {
        panic!("expected Handshake, got {:?}", report.outcome);
    };
    assert!(message.contains("404"), "{message}");
}

#[tokio::test]
async fn headers_go_on_every_request_and_a_legacy_session_is_deleted() {
    let server = HttpSampleServer::start(&["--era", "both"]).await;
    let proxy = RecordingProxy::start(&server.url).await;
    let headers = [("Authorization".to_owned(), "Bearer sesame".to_owned())];
    let check = mcp_check(&["echo"], Some(echo("hi", "hi")));

    passed(&probe_http(&proxy.url, &headers, Era::Legacy, &check).await);
    let seen = proxy.seen();
    assert!(
        seen.iter()
            .all(|r| r.header("authorization") == Some("Bearer sesame")),
        "{seen:#?}"
    );
    let session = seen[0..2]
        .iter()
        .find_map(|r| r.header("mcp-session-id"))
        .expect("a legacy session id after initialize")
        .to_owned();
    let last = seen.last().expect("requests");
    assert_eq!(last.method, "DELETE", "{seen:#?}");
    assert_eq!(last.header("mcp-session-id"), Some(session.as_str()));

    // Modern is stateless: nothing to delete.
    let before = proxy.seen().len();
    passed(&probe_http(&proxy.url, &headers, Era::Modern, &check).await);
    let modern = &proxy.seen()[before..];
    assert!(modern.iter().all(|r| r.method == "POST"), "{modern:#?}");
    assert!(
        modern.iter().all(|r| r.header("mcp-session-id").is_none()),
        "{modern:#?}"
    );
    assert!(
        modern
            .iter()
            .all(|r| r.header("mcp-protocol-version") == Some("2026-07-28")),
        "{modern:#?}"
    );
}
