use super::*;
use fleet_api::types::{
    AnalysisSummary, CheckSummary, Deployment, DeploymentKind, DeploymentState, Event, EventKind,
    RevisionWeight, RolloutState, RolloutStrategy, ServerState, ToolOutcome, Verdict,
};

fn server(name: &str) -> ServerStatus {
    ServerStatus {
        name: name.into(),
        transport: "http".into(),
        wave: 0,
        state: ServerState::Ready,
        reason: None,
        endpoint: Some(format!("http://127.0.0.1:7470/mcp/{name}")),
        revision: Some(1),
        traffic: vec![RevisionWeight {
            revision: 1,
            weight: 100,
        }],
        rollout: None,
        instances: vec![InstanceStatus {
            id: format!("{name}-r1-1"),
            revision: 1,
            pid: Some(4242),
            container: None,
            state: ServerState::Ready,
            restarts: 2,
            port: Some(41000),
            last_check: Some(CheckSummary {
                at: "2026-12-05T06:00:01.250Z".into(),
                kind: "mcp".into(),
                passed: true,
                took_ms: 6.4,
                detail: "modern 2026-07-28, sample 0.1.0, 4 tools".into(),
            }),
        }],
    }
}

fn snapshot(servers: Vec<ServerStatus>) -> Snapshot {
    Snapshot {
        status: Status {
            fleet: "tools".into(),
            pid: 1,
            state_dir: "/state".into(),
            deployment: Deployment {
                state: DeploymentState::Succeeded,
                started_at: "2026-12-05T06:00:00.000Z".into(),
                finished_at: Some("2026-12-05T06:00:02.000Z".into()),
                reason: None,
            },
            servers,
            admin_url: Some("http://127.0.0.1:7471".into()),
        },
        events: Ok(Vec::new()),
        history: Ok(Vec::new()),
        audit: Ok(Vec::new()),
    }
}

fn event(id: u64, message: &str) -> EventRecord {
    EventRecord {
        id,
        event: Event {
            time: "2026-12-05T06:00:01.000Z".into(),
            kind: EventKind::ServerReady,
            server: Some("api".into()),
            revision: Some(1),
            deployment: Some(1),
            instance: None,
            message: message.into(),
        },
    }
}

const HOSTILE: &str = r#"<script>alert("x")</script>"#;
const HOSTILE_ESCAPED: &str = "&lt;script&gt;alert(&quot;x&quot;)&lt;/script&gt;";

#[test]
fn every_value_from_the_fleet_or_its_record_is_escaped() {
    let mut api = server("api");
    api.reason = Some(HOSTILE.into());
    api.instances[0].last_check.as_mut().unwrap().detail = HOSTILE.into();
    let mut canary = rollout(Some(Verdict::Fail));
    canary.analyses[0].reason = HOSTILE.into();
    api.rollout = Some(canary);
    let mut page = snapshot(vec![api]);
    page.status.deployment.reason = Some(HOSTILE.into());
    page.events = Ok(vec![event(1, HOSTILE)]);
    page.history = Ok(vec![HistoryEntry {
        deployment: 1,
        revision: 1,
        from_revision: None,
        kind: DeploymentKind::Deploy,
        state: DeploymentState::Succeeded,
        reason: Some(HOSTILE.into()),
        outcome: Some(HOSTILE.into()),
        started_at: "2026-12-05T06:00:00.000Z".into(),
        finished_at: None,
        author: HOSTILE.into(),
        servers: Default::default(),
    }]);
    page.audit = Ok(vec![AuditEntry {
        id: 1,
        time: "2026-12-05T06:00:03.000Z".into(),
        token: Some(HOSTILE.into()),
        server: "api".into(),
        revision: 1,
        tool: HOSTILE.into(),
        outcome: ToolOutcome::Ok,
        duration_ms: 1.0,
    }]);
    let html = render_page(&page);
    // One script element: the page's own, loaded from this origin.
    assert_eq!(html.matches("<script").count(), 1, "{html}");
    assert!(!html.contains("alert(\""), "{html}");
    // The deployment, server, check, analysis interval, event, history (reason, outcome,
    // author), audit (tool, token): each shown, as text.
    assert_eq!(html.matches(HOSTILE_ESCAPED).count(), 10, "{html}");
}

#[test]
fn a_name_cannot_break_out_of_an_attribute() {
    let html = render_page(&snapshot(vec![server(r#"a"b'c<d>&e"#)]));
    assert!(
        html.contains(r#"data-server="a&quot;b&#39;c&lt;d&gt;&amp;e""#),
        "{html}"
    );
    assert!(!html.contains(r#"a"b"#), "{html}");
}

/// The Content-Security-Policy allows no inline script or style: the page must need none.
#[test]
fn the_page_has_no_inline_script_style_or_handlers() {
    let mut api = server("api");
    api.rollout = Some(rollout(Some(Verdict::Pass)));
    let html = render_page(&snapshot(vec![api]));
    assert!(html.contains(r#"<script src="/assets/dashboard.js?v="#));
    assert!(
        html.contains("</script>\n</head>"),
        "the script tag is empty"
    );
    for inline in [
        " style=",
        "<style",
        " onclick=",
        " onerror=",
        " onload=",
        "javascript:",
    ] {
        assert!(!html.contains(inline), "{inline} in {html}");
    }
}

fn rollout(verdict: Option<Verdict>) -> RolloutStatus {
    let analyses: Vec<AnalysisSummary> = verdict
        .map(|verdict| AnalysisSummary {
            at: "2026-12-05T06:00:02.000Z".into(),
            step: 1,
            verdict,
            requests: 40,
            error_rate: Some(0.25),
            canary_p95_ms: Some(120.0),
            stable_p95_ms: Some(80.0),
            reason: "error rate 25.0% above 5.0%".into(),
        })
        .into_iter()
        .collect();
    RolloutStatus {
        strategy: RolloutStrategy::Canary,
        from_revision: 1,
        to_revision: 2,
        step: 1,
        steps: 3,
        weight: 30,
        state: RolloutState::WaitingForAPassingAnalysis,
        failures_in_a_row: 1,
        last_analysis: analyses.last().cloned(),
        analyses,
    }
}

/// The `n`th interval of a canary judged every second (`n` from 1), in `step`.
fn interval(n: usize, step: usize, verdict: Verdict) -> AnalysisSummary {
    AnalysisSummary {
        at: format!("2026-12-05T06:{:02}:{:02}.000Z", n / 60, n % 60),
        step,
        verdict,
        requests: 10 * n as u64,
        error_rate: Some(0.0),
        canary_p95_ms: None,
        stable_p95_ms: Some(80.0),
        reason: format!("interval {n}"),
    }
}

#[test]
fn a_canary_shows_both_revisions_its_analysis_and_the_buttons_that_steer_it() {
    let mut api = server("api");
    api.traffic = vec![
        RevisionWeight {
            revision: 1,
            weight: 70,
        },
        RevisionWeight {
            revision: 2,
            weight: 30,
        },
    ];
    api.rollout = Some(rollout(Some(Verdict::Fail)));
    let html = render_page(&snapshot(vec![api, server("notes")]));
    for expected in [
        r#"<tr data-revision="1" data-weight="70">"#,
        r#"<tr data-revision="2" data-weight="30">"#,
        r#"<section class="canary" id="canary-api" data-server="api" data-state="waiting-for-a-passing-analysis" data-step="1" data-steps="3" data-weight="30" data-from="1" data-to="2" data-verdict="fail""#,
        r#"<table class="intervals" id="analyses-api"><caption>Analysis intervals, newest first</caption>"#,
        r#"<th scope="col">p95 ratio <span class="detail">canary / stable</span></th>"#,
        r#"<tr data-at="2026-12-05T06:00:02.000Z" data-step="1" data-verdict="fail"><th scope="row"><time datetime="2026-12-05T06:00:02.000Z" title="2026-12-05T06:00:02.000Z">06:00:02</time></th><td>1</td><td><span class="badge" data-state="fail">fail</span></td><td>40</td><td>25.0%</td><td>1.50× <span class="detail">120.0 / 80.0 ms</span></td><td class="message">error rate 25.0% above 5.0%</td></tr>"#,
        r#"data-action="abort" data-server="api""#,
        r#"data-action="promote" data-server="api""#,
        r#"data-action="pause" data-server="api""#,
        r#"data-action="resume" data-server="api""#,
        r#"data-action="rollback" data-server="api""#,
        r#"data-action="rollback" data-server="notes""#,
    ] {
        assert!(html.contains(expected), "{expected} missing:\n{html}");
    }
    // Only the server with a canary has canary buttons.
    assert!(!html.contains(r#"id="canary-notes""#));
    assert!(!html.contains(r#"data-action="abort" data-server="notes""#));

    let mut waiting = server("api");
    waiting.rollout = Some(rollout(None));
    let html = render_page(&snapshot(vec![waiting]));
    assert!(html.contains(r#"data-verdict="none""#), "{html}");
    assert!(
        html.contains("No analysis interval has ended yet."),
        "{html}"
    );
    assert!(!html.contains(r#"id="analyses-api""#), "{html}");
}

/// Every interval of the rollout, newest first, at most ten: which step each judged and
/// its verdict; the section's `data-verdict` stays the newest one's.
#[test]
fn a_canary_lists_its_latest_analysis_intervals_newest_first() {
    // Twelve intervals: inconclusive, then the pass that ended step 1, then step 2's.
    let judged = |n: usize| match n {
        ..=3 => (1, Verdict::Inconclusive),
        4 => (1, Verdict::Pass),
        12 => (2, Verdict::Fail),
        _ => (2, Verdict::Pass),
    };
    let mut api = server("api");
    let mut rollout = rollout(None);
    rollout.step = 2;
    rollout.analyses = (1..=12)
        .map(|n| {
            let (step, verdict) = judged(n);
            interval(n, step, verdict)
        })
        .collect();
    rollout.last_analysis = rollout.analyses.last().cloned();
    api.rollout = Some(rollout);
    let html = render_page(&snapshot(vec![api]));

    assert!(
        html.contains(r#"data-to="2" data-verdict="fail""#),
        "{html}"
    );
    assert!(
        html.contains("<caption>Analysis intervals, newest first (the last 10)</caption>"),
        "{html}"
    );
    let table = &html[html.find(r#"id="analyses-api""#).unwrap()..];
    let table = &table[..table.find("</table>").unwrap()];
    let rows: Vec<&str> = table.split("<tr ").skip(1).collect();
    // Newest first: 12 down to 3; 1 and 2 are not shown.
    let heads: Vec<&str> = rows.iter().map(|r| &r[..r.find('>').unwrap()]).collect();
    let expected: Vec<String> = (3..=12)
        .rev()
        .map(|n| {
            let (step, verdict) = judged(n);
            format!(r#"data-at="2026-12-05T06:00:{n:02}.000Z" data-step="{step}" data-verdict="{verdict}""#)
        })
        .collect();
    assert_eq!(heads, expected, "{table}");
    // No canary p95 in the interval: no ratio, the stable p95 still shown.
    assert!(
        rows[0].contains(
            "<td>120</td><td>0.0%</td><td>— <span class=\"detail\">— / 80.0 ms</span></td>"
        ),
        "{}",
        rows[0]
    );
}

#[test]
fn servers_instances_and_waves_are_listed() {
    let mut notes = server("notes");
    notes.wave = 1;
    let html = render_page(&snapshot(vec![server("api"), notes]));
    for expected in [
        r#"<title>tools · mcpfleet</title>"#,
        r#"<article class="server" id="server-api" data-server="api" data-state="ready""#,
        r#"<code class="endpoint">http://127.0.0.1:7470/mcp/notes</code>"#,
        r#"<tr data-instance="api-r1-1" data-state="ready" data-restarts="2">"#,
        r##"<li data-wave="0"><span class="wave">wave 0</span> <a href="#server-api">api</a></li>"##,
        r##"<li data-wave="1"><span class="wave">wave 1</span> <a href="#server-notes">notes</a></li>"##,
        r#"<section id="deployment" class="panel" data-state="succeeded""#,
        r#"<input id="token" name="token" type="password""#,
        r#"<label for="token">"#,
        r#"<p id="action-result" role="status" aria-live="polite">"#,
        "<noscript>",
    ] {
        assert!(html.contains(expected), "{expected} missing:\n{html}");
    }
}

#[test]
fn events_newest_first_and_the_newest_id_for_the_stream_to_resume_after() {
    let mut page = snapshot(vec![server("api")]);
    page.events = Ok(vec![event(7, "first"), event(9, "second")]);
    let html = render_page(&page);
    assert!(html.contains(r#"<main id="fleet" data-last-event-id="9">"#));
    let second = html.find(r#"data-event-id="9""#).unwrap();
    let first = html.find(r#"data-event-id="7""#).unwrap();
    assert!(second < first, "newest first");
}

#[test]
fn a_part_the_store_cannot_read_is_said_and_the_rest_still_renders() {
    let mut page = snapshot(vec![server("api")]);
    page.audit = Err(StoreError::Database("disk I/O error".into()));
    let html = render_page(&page);
    assert!(html.contains("Cannot read the audit from the state store"));
    assert!(html.contains("disk I/O error"));
    assert!(html.contains(r#"data-server="api""#));
    assert!(html.contains(r#"<main id="fleet" data-last-event-id="0">"#));
}
