//! The web dashboard (`GET /` on the admin listener) of a live fleet, over real TCP: what it
//! lists, a canary's two revisions, escaping of what servers say, its assets and security
//! headers, and the `Host` check. The page in a real browser is the WebDriver tests'.

use super::canary::{canary_fleet, wait_for_promote};
use super::*;
use fleet_api::types::{AnalysisSummary, Verdict};

/// A server that reports a name with markup in it: the `server_ready` event and the check's
/// detail carry it onto the page.
const HOSTILE_NAME: &str = "<script>alert(1)</script>";

#[test]
fn the_dashboard_lists_a_live_fleets_servers_and_escapes_what_they_say() {
    let fleet = Fleet::new(
        "dashboard",
        &format!(
            r#"
version: 1
name: dashboard
admin: {{ listen: 127.0.0.1:0 }}
servers:
  search:
    http: {{ command: SAMPLE, args: ["--transport", "http", "--port", "{{{{ port }}}}", "--name", "{HOSTILE_NAME}"] }}
  notes:
    stdio: {{ command: SAMPLE }}
    depends_on: [search]
"#
        ),
    );
    let out = fleet.up();
    assert!(out.status.success(), "{}", text(&out));
    let status = fleet.status();
    let admin = status.admin_url.clone().expect("the admin listener is on");
    let address = admin.trim_start_matches("http://");

    let page = admin_request(address, "GET", "/", None);
    assert_eq!(page.status, 200, "{}", page.body);
    assert_eq!(
        page.content_type.as_deref(),
        Some("text/html; charset=utf-8")
    );
    let csp = page.header("content-security-policy").unwrap_or_default();
    assert!(csp.contains("default-src 'self'"), "{csp}");
    assert!(!csp.contains("unsafe-inline"), "{csp}");
    assert_eq!(page.header("x-content-type-options"), Some("nosniff"));
    assert_eq!(page.header("x-frame-options"), Some("DENY"));
    assert_eq!(page.header("cache-control"), Some("no-store"));
    for s in &status.servers {
        let endpoint = s.endpoint.as_deref().expect("every server has an endpoint");
        for shown in [
            format!(r#"data-server="{}""#, s.name),
            format!(r#"<code class="endpoint">{endpoint}</code>"#),
        ] {
            assert!(
                page.body.contains(&shown),
                "{shown} missing:\n{}",
                page.body
            );
        }
    }
    assert!(
        page.body.contains(r##"<li data-wave="1"><span class="wave">wave 1</span> <a href="#server-notes">notes</a></li>"##),
        "{}",
        page.body
    );
    // The server's name reached the page through its event and its check, as text only.
    assert!(
        events(&fleet)
            .iter()
            .any(|e| e.kind == EventKind::ServerReady && e.message.contains(HOSTILE_NAME)),
        "no event carries the name"
    );
    assert!(
        page.body.contains("&lt;script&gt;alert(1)&lt;/script&gt;"),
        "{}",
        page.body
    );
    assert!(!page.body.contains(HOSTILE_NAME), "{}", page.body);
    assert_eq!(page.body.matches("<script").count(), 1, "{}", page.body);

    // What dashboard.js re-renders: the same servers, without the page around them.
    let fragment = admin_request(address, "GET", "/fragments/fleet", None);
    assert_eq!(fragment.status, 200);
    assert!(fragment.body.contains(r#"data-server="notes""#));
    assert!(!fragment.body.contains("<html"));

    for (path, content_type, contains) in [
        (
            "/assets/dashboard.js",
            "text/javascript; charset=utf-8",
            "EventSource",
        ),
        ("/assets/dashboard.css", "text/css; charset=utf-8", "#live"),
        ("/assets/favicon.svg", "image/svg+xml", "<svg"),
    ] {
        let asset = admin_request(address, "GET", path, None);
        assert_eq!(asset.status, 200, "{path}");
        assert_eq!(asset.content_type.as_deref(), Some(content_type), "{path}");
        assert!(asset.body.contains(contains), "{path}: {}", asset.body);
        assert!(
            asset
                .header("cache-control")
                .is_some_and(|c| c.contains("max-age")),
            "{path}"
        );
        assert_eq!(asset.header("x-content-type-options"), Some("nosniff"));
        assert!(asset.header("content-security-policy").is_some(), "{path}");
    }
    // The page links exactly the assets served.
    for linked in [
        "/assets/dashboard.js?v=",
        "/assets/dashboard.css?v=",
        "/assets/favicon.svg?v=",
    ] {
        assert!(page.body.contains(linked), "{linked}");
    }

    // DNS rebinding: a page on another name resolving to 127.0.0.1 reads nothing.
    for path in ["/", "/fragments/fleet", "/assets/dashboard.js"] {
        let rebound = admin_request(address, "GET", path, Some("attacker.example"));
        assert_eq!(rebound.status, 403, "{path}");
        assert!(!rebound.body.contains("data-server"), "{path}");
    }

    // The unix socket serves the page too.
    let over_socket = socket_request(&fleet.state_dir().join("control.sock"), "/");
    assert!(over_socket.starts_with("HTTP/1.1 200"), "{over_socket}");
    assert!(over_socket.contains(r#"data-server="search""#));
}

#[test]
fn during_a_canary_the_dashboard_shows_both_revisions_and_each_analysis_interval() {
    let rollout = r"      strategy: canary
      steps: [{ weight: 40, pause: {} }]
      analysis: { interval: 300ms, min_requests: 1, failure_limit: 100 }";
    let with_admin = |args: &str| canary_fleet(args, rollout) + "admin: { listen: 127.0.0.1:0 }\n";
    let fleet = Fleet::new("dashboard-canary", &with_admin(""));
    let out = fleet.up();
    assert!(out.status.success(), "{}", text(&out));
    let admin = fleet.status().admin_url.expect("the admin listener is on");
    let address = admin.trim_start_matches("http://").to_owned();

    fleet.rewrite(&with_admin(r#", "--name", "v2""#));
    let deploy = fleet.deploy_in_background();
    wait_for_promote(&fleet);
    let page = admin_request(&address, "GET", "/", None);
    assert_eq!(page.status, 200);
    for shown in [
        r#"<tr data-revision="1" data-weight="60">"#,
        r#"<tr data-revision="2" data-weight="40">"#,
        r#"id="canary-api" data-server="api" data-state="waiting-for-promote" data-step="1" data-steps="1" data-weight="40" data-from="1" data-to="2" data-verdict=""#,
        r#"<button type="button" class="danger" data-action="abort" data-server="api""#,
        r#"data-action="promote" data-server="api""#,
    ] {
        assert!(page.body.contains(shown), "{shown} missing:\n{}", page.body);
    }

    // Two intervals judged (no traffic: inconclusive): `status --output json` lists both,
    // oldest first, and the fragment the page re-renders shows each as a row.
    let status = fleet.wait_for(
        "two analysis intervals were judged",
        Duration::from_secs(30),
        |s| {
            server(s, "api")
                .rollout
                .as_ref()
                .is_some_and(|r| r.analyses.len() >= 2)
        },
    );
    let rollout = server(&status, "api").rollout.clone().unwrap();
    assert_eq!(rollout.last_analysis.as_ref(), rollout.analyses.last());
    assert!(
        rollout.analyses.windows(2).all(|w| w[0].at < w[1].at),
        "{rollout:#?}"
    );
    let fragment = admin_request(&address, "GET", "/fragments/fleet", None);
    assert!(
        fragment
            .body
            .contains(r#"<table class="intervals" id="analyses-api">"#),
        "{}",
        fragment.body
    );
    for interval in &rollout.analyses {
        assert_eq!(
            (interval.step, interval.verdict),
            (1, Verdict::Inconclusive)
        );
        let row = format!(
            r#"<tr data-at="{}" data-step="1" data-verdict="inconclusive">"#,
            interval.at
        );
        assert!(
            fragment.body.contains(&row),
            "{row} missing:\n{}",
            fragment.body
        );
    }
    // Newest first (later intervals may have been judged since the status was read).
    let at =
        |interval: &AnalysisSummary| fragment.body.find(&format!(r#"data-at="{}""#, interval.at));
    assert!(
        at(&rollout.analyses[1]) < at(&rollout.analyses[0]),
        "{}",
        fragment.body
    );

    let aborted = fleet.mcpfleet(&["abort", "api"]);
    assert!(aborted.status.success(), "{}", text(&aborted));
    let deployed = deploy.join().unwrap();
    assert_eq!(deployed.status.code(), Some(1), "{}", text(&deployed));
    let page = admin_request(&address, "GET", "/fragments/fleet", None);
    assert!(!page.body.contains(r#"id="canary-api""#), "{}", page.body);
    assert!(
        page.body
            .contains(r#"<tr data-deployment="2" data-state="rolled-back">"#),
        "{}",
        page.body
    );
    assert!(
        page.body.contains(r#"data-kind="rollback_started""#)
            || page.body.contains(r#"data-kind="rollback_completed""#),
        "{}",
        page.body
    );
}

/// `GET path` on the admin unix socket: the raw answer.
fn socket_request(socket: &Path, path: &str) -> String {
    use std::io::{Read as _, Write as _};
    let mut stream = std::os::unix::net::UnixStream::connect(socket).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut raw = String::new();
    stream.read_to_string(&mut raw).unwrap();
    raw
}
