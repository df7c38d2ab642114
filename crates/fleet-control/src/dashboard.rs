//! The web dashboard: `GET /` on the admin listeners, one server-rendered page of the fleet
//! (from the same data as `GET /v1/status`, plus the state store's recent events, history
//! and audit), and the embedded assets it loads. Everything it shows comes from this
//! process: no CDN, no web fonts, no build step; it works with no network.
//!
//! Owns: rendering (every value escaped into HTML here, by [`Esc`]), the fragment
//! `dashboard.js` swaps in when something changes, and the security headers of these
//! routes (a strict Content-Security-Policy: no inline script or style). Does not own the
//! actions its buttons post to (the admin API's routes and their authentication) or the
//! `Host` check (the TCP router's layer, which covers these routes too).
//!
//! # What browser tests can rely on
//! Element ids and `data-` attributes are a contract, like the API's JSON:
//! - `#fleet` (`main`): the part re-rendered by `GET /fragments/fleet`;
//!   `data-last-event-id` is the newest recorded event when the page was rendered.
//! - `#live` (`role=status`): `data-state` = `static` (no script), `connecting`, `live`
//!   (the event stream is open), `polling` (no event stream: `/v1/status` every 2 s),
//!   `offline` (the control plane does not answer).
//! - `#token`: the admin token input (password; kept in sessionStorage only).
//! - `#action-result` (`role=status`, `aria-live=polite`): the outcome of the last button;
//!   `data-outcome` = `pending`, `ok` or `error`, `data-status` = the HTTP status.
//! - `#deployment` with `data-state` (`in-progress`, `succeeded`, …); `#waves` with
//!   `li[data-wave=N]`.
//! - `#servers`: one `article[data-server=NAME]` per server (id `server-NAME`), with
//!   `data-state`; in it `tr[data-revision=N][data-weight=W]` per revision that takes
//!   traffic (W its relative weight, in practice a percent), `tr[data-instance=ID]` with
//!   `data-state` and `data-restarts`, and `button[data-action=rollback][data-server=NAME]`.
//! - `#canary-NAME` while a canary runs: `data-state` (`progressing`, `paused`, …),
//!   `data-step`, `data-steps`, `data-weight`, `data-from`, `data-to`, `data-verdict` (the
//!   last analysis: `pass`, `fail`, `inconclusive`, or `none` before the first), and
//!   `button[data-action=promote|pause|resume|abort][data-server=NAME]`; in it
//!   `#analyses-NAME` once an interval was judged: the newest ten intervals, newest first,
//!   each `tr[data-at=RFC3339][data-step=N][data-verdict=V]`.
//! - `#events` (`tr[data-event-id=N][data-kind=KIND]`, newest first), `#history`
//!   (`tr[data-deployment=N][data-state=STATE]`), `#audit` (`tr[data-audit-id=N]`).

use crate::api::AppState;
use axum::extract::State;
use axum::http::{HeaderValue, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use fleet_api::types::{
    AnalysisSummary, AuditEntry, EventRecord, HistoryEntry, InstanceStatus, RolloutStatus,
    ServerStatus, Status,
};
use fleet_store::StoreError;
use std::fmt::{self, Display, Write as _};

const SCRIPT: &str = include_str!("dashboard/dashboard.js");
const STYLE: &str = include_str!("dashboard/dashboard.css");
const ICON: &str = include_str!("dashboard/favicon.svg");

/// Shown on the page: the newest of each.
const EVENTS_SHOWN: usize = 50;
const DEPLOYMENTS_SHOWN: usize = 20;
const TOOL_CALLS_SHOWN: usize = 50;
/// A canary's analysis intervals: ten rows keep its section within a laptop's screen.
const INTERVALS_SHOWN: usize = 10;

/// Only this origin's script, style and connections; no frames, no forms, no `<base>`.
const CONTENT_SECURITY_POLICY: &str = "default-src 'self'; script-src 'self'; \
     style-src 'self'; img-src 'self'; connect-src 'self'; base-uri 'none'; \
     form-action 'none'; frame-ancestors 'none'";

/// The page, its live fragment and its assets, each answer with the security headers.
pub(crate) fn router(state: AppState) -> axum::Router {
    axum::Router::new()
        .route("/", get(page))
        .route("/fragments/fleet", get(fragment))
        .route(
            "/assets/dashboard.js",
            get(|| asset("text/javascript; charset=utf-8", SCRIPT)),
        )
        .route(
            "/assets/dashboard.css",
            get(|| asset("text/css; charset=utf-8", STYLE)),
        )
        .route("/assets/favicon.svg", get(|| asset("image/svg+xml", ICON)))
        .with_state(state)
        .layer(axum::middleware::map_response(security_headers))
}

async fn security_headers(mut response: Response) -> Response {
    let headers = response.headers_mut();
    for (name, value) in [
        (header::CONTENT_SECURITY_POLICY, CONTENT_SECURITY_POLICY),
        (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
        (header::X_FRAME_OPTIONS, "DENY"),
        (header::REFERRER_POLICY, "no-referrer"),
    ] {
        headers.insert(name, HeaderValue::from_static(value));
    }
    // The page and its fragment are the fleet now: never from a cache.
    headers
        .entry(header::CACHE_CONTROL)
        .or_insert(HeaderValue::from_static("no-store"));
    response
}

/// An embedded asset. The page names it with the version (`?v=`), so a browser may keep it
/// for an hour and still load an upgrade's.
async fn asset(content_type: &'static str, body: &'static str) -> Response {
    (
        [
            (header::CONTENT_TYPE, content_type),
            (header::CACHE_CONTROL, "public, max-age=3600"),
        ],
        body,
    )
        .into_response()
}

async fn page(State(state): State<AppState>) -> Response {
    html(render_page(&Snapshot::read(&state).await))
}

async fn fragment(State(state): State<AppState>) -> Response {
    let mut out = String::new();
    let _ = Snapshot::read(&state).await.render_fleet(&mut out);
    html(out)
}

fn html(body: String) -> Response {
    ([(header::CONTENT_TYPE, "text/html; charset=utf-8")], body).into_response()
}

/// What one rendering shows. The record comes from the state store; a part it cannot read
/// is shown as that error, the rest of the page still renders.
struct Snapshot {
    status: Status,
    /// The newest recorded events, oldest first.
    events: Result<Vec<EventRecord>, StoreError>,
    /// Every deployment, oldest first.
    history: Result<Vec<HistoryEntry>, StoreError>,
    /// The newest tool calls, oldest first.
    audit: Result<Vec<AuditEntry>, StoreError>,
}

impl Snapshot {
    async fn read(state: &AppState) -> Self {
        let store = state.store.as_ref();
        let (events, history, audit) = tokio::join!(
            crate::record::latest_events(store, EVENTS_SHOWN),
            crate::record::history(store),
            crate::record::latest_audit(store, TOOL_CALLS_SHOWN),
        );
        Snapshot {
            status: crate::status(&state.engine, state.admin_url.as_deref()),
            events,
            history,
            audit,
        }
    }

    /// What `#fleet` holds: the deployment, the servers, events, history and audit.
    fn render_fleet(&self, out: &mut String) -> fmt::Result {
        out.push_str(r#"<div class="columns"><div class="column">"#);
        deployment(out, &self.status)?;
        servers(out, &self.status.servers)?;
        out.push_str(r#"</div><div class="column">"#);
        events(out, &self.events)?;
        history(out, &self.history)?;
        audit(out, &self.audit)?;
        out.push_str("</div></div>");
        Ok(())
    }
}

fn render_page(snapshot: &Snapshot) -> String {
    let mut out = String::new();
    let _ = write_page(&mut out, snapshot);
    out
}

fn write_page(out: &mut String, snapshot: &Snapshot) -> fmt::Result {
    let fleet = Esc(&snapshot.status.fleet);
    let version = env!("CARGO_PKG_VERSION");
    let last_event = match &snapshot.events {
        Ok(events) => events.last().map_or(0, |e| e.id),
        Err(_) => 0,
    };
    write!(
        out,
        r#"<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>{fleet} · mcpfleet</title>
<link rel="stylesheet" href="/assets/dashboard.css?v={version}">
<link rel="icon" href="/assets/favicon.svg?v={version}" type="image/svg+xml">
<script src="/assets/dashboard.js?v={version}" defer></script>
</head>
<body>
<header class="top">
<h1><span class="product">mcpfleet</span> <span id="fleet-name">{fleet}</span></h1>
<p id="live" role="status" data-state="static">not updating</p>
<form id="token-form" class="token" autocomplete="off">
<label for="token">Admin token</label>
<input id="token" name="token" type="password" autocomplete="off" spellcheck="false" aria-describedby="token-help">
<span id="token-help" class="help">for the buttons; kept in this tab only</span>
</form>
</header>
<noscript><p class="note">JavaScript is off: this page does not update by itself and its buttons do nothing. Reload it to see changes; steer a canary with <code>mcpfleet promote|pause|resume|abort</code> and roll back with <code>mcpfleet rollback</code>.</p></noscript>
<p id="action-result" role="status" aria-live="polite"></p>
<main id="fleet" data-last-event-id="{last_event}">
"#
    )?;
    snapshot.render_fleet(out)?;
    out.push_str("\n</main>\n</body>\n</html>\n");
    Ok(())
}

fn deployment(out: &mut String, status: &Status) -> fmt::Result {
    let d = &status.deployment;
    write!(
        out,
        r#"<section id="deployment" class="panel" data-state="{state}" aria-labelledby="deployment-title"><h2 id="deployment-title">Deployment</h2><p>{badge} started {started}"#,
        state = d.state,
        badge = Badge(d.state.as_str()),
        started = Time(&d.started_at),
    )?;
    if let Some(finished) = &d.finished_at {
        write!(out, ", finished {}", Time(finished))?;
    }
    out.push_str("</p>");
    if let Some(reason) = &d.reason {
        write!(out, r#"<p class="reason">{}</p>"#, Esc(reason))?;
    }
    out.push_str(r#"<ol id="waves" class="waves" aria-label="Waves">"#);
    let waves = status
        .servers
        .iter()
        .map(|s| s.wave)
        .max()
        .map_or(0, |w| w + 1);
    for wave in 0..waves {
        write!(
            out,
            r#"<li data-wave="{wave}"><span class="wave">wave {wave}</span>"#
        )?;
        for server in status.servers.iter().filter(|s| s.wave == wave) {
            write!(
                out,
                r##" <a href="#server-{name}">{name}</a>"##,
                name = Esc(&server.name)
            )?;
        }
        out.push_str("</li>");
    }
    out.push_str("</ol></section>");
    Ok(())
}

fn servers(out: &mut String, servers: &[ServerStatus]) -> fmt::Result {
    out.push_str(r#"<section class="panel" aria-labelledby="servers-title"><h2 id="servers-title">Servers</h2><div id="servers">"#);
    if servers.is_empty() {
        out.push_str(r#"<p class="empty">No servers.</p>"#);
    }
    for server in servers {
        self::server(out, server)?;
    }
    out.push_str("</div></section>");
    Ok(())
}

fn server(out: &mut String, server: &ServerStatus) -> fmt::Result {
    let name = Esc(&server.name);
    write!(
        out,
        r#"<article class="server" id="server-{name}" data-server="{name}" data-state="{state}" aria-labelledby="server-{name}-title"><header><h3 id="server-{name}-title">{name}</h3> {badge}</header><dl class="facts"><dt>transport</dt><dd>{transport}</dd><dt>wave</dt><dd>{wave}</dd>"#,
        state = server.state,
        badge = Badge(server.state.as_str()),
        transport = Esc(&server.transport),
        wave = server.wave,
    )?;
    if let Some(revision) = server.revision {
        write!(out, "<dt>revision</dt><dd>r{revision}</dd>")?;
    }
    if let Some(endpoint) = &server.endpoint {
        write!(
            out,
            r#"<dt>endpoint</dt><dd><code class="endpoint">{}</code></dd>"#,
            Esc(endpoint)
        )?;
    }
    out.push_str("</dl>");
    if let Some(reason) = &server.reason {
        write!(out, r#"<p class="reason">{}</p>"#, Esc(reason))?;
    }
    traffic(out, server)?;
    if let Some(rollout) = &server.rollout {
        canary(out, &server.name, rollout)?;
    }
    instances(out, &server.instances)?;
    write!(
        out,
        r#"<div class="actions"><button type="button" class="danger" data-action="rollback" data-server="{name}" aria-label="Roll back {name} to its previous revision">Roll back</button></div></article>"#
    )
}

/// Each revision's share of new sessions: two rows while a canary runs.
fn traffic(out: &mut String, server: &ServerStatus) -> fmt::Result {
    if server.traffic.is_empty() {
        return Ok(());
    }
    let total: u64 = server.traffic.iter().map(|t| u64::from(t.weight)).sum();
    out.push_str(r#"<table class="traffic"><caption>Traffic (new sessions)</caption><thead><tr><th scope="col">revision</th><th scope="col">share</th></tr></thead><tbody>"#);
    for share in &server.traffic {
        let percent = (u64::from(share.weight) * 100)
            .checked_div(total)
            .unwrap_or(0);
        let role = match &server.rollout {
            Some(r) if r.to_revision == share.revision => r#" <span class="tag">canary</span>"#,
            _ if server.revision == Some(share.revision) => r#" <span class="tag">stable</span>"#,
            _ => "",
        };
        write!(
            out,
            r#"<tr data-revision="{revision}" data-weight="{weight}"><th scope="row">r{revision}{role}</th><td><meter min="0" max="100" value="{percent}" aria-label="r{revision} share">{percent}%</meter> <span class="percent">{percent}%</span></td></tr>"#,
            revision = share.revision,
            weight = share.weight,
        )?;
    }
    out.push_str("</tbody></table>");
    Ok(())
}

fn canary(out: &mut String, server: &str, rollout: &RolloutStatus) -> fmt::Result {
    let name = Esc(server);
    let verdict = rollout
        .last_analysis
        .as_ref()
        .map_or("none", |a| a.verdict.as_str());
    write!(
        out,
        r#"<section class="canary" id="canary-{name}" data-server="{name}" data-state="{state}" data-step="{step}" data-steps="{steps}" data-weight="{weight}" data-from="{from}" data-to="{to}" data-verdict="{verdict}" aria-labelledby="canary-{name}-title"><h4 id="canary-{name}-title">Canary r{from} → r{to}</h4><p>step {step} of {steps} · {weight}% of new sessions to r{to} · {badge} · {failures} failed interval(s) in a row</p>"#,
        state = rollout.state,
        step = rollout.step,
        steps = rollout.steps,
        weight = rollout.weight,
        from = rollout.from_revision,
        to = rollout.to_revision,
        badge = Badge(rollout.state.as_str()),
        failures = rollout.failures_in_a_row,
    )?;
    analyses(out, server, &rollout.analyses)?;
    write!(
        out,
        r#"<div class="actions" role="group" aria-label="Steer the canary of {name}">"#
    )?;
    for (action, label, class) in [
        ("promote", "Promote", ""),
        ("pause", "Pause", ""),
        ("resume", "Resume", ""),
        ("abort", "Abort", "danger"),
    ] {
        write!(
            out,
            r#"<button type="button" class="{class}" data-action="{action}" data-server="{name}" aria-label="{label} the canary of {name}">{label}</button>"#
        )?;
    }
    out.push_str("</div></section>");
    Ok(())
}

/// A canary's analysis intervals, newest first: when each was judged, in which step, its
/// verdict, the canary's requests, error rate and p95 against the stable revision's, and why.
fn analyses(out: &mut String, server: &str, analyses: &[AnalysisSummary]) -> fmt::Result {
    if analyses.is_empty() {
        out.push_str(r#"<p class="empty">No analysis interval has ended yet.</p>"#);
        return Ok(());
    }
    let more = if analyses.len() > INTERVALS_SHOWN {
        format!(" (the last {INTERVALS_SHOWN})")
    } else {
        String::new()
    };
    write!(
        out,
        r#"<table class="intervals" id="analyses-{name}"><caption>Analysis intervals, newest first{more}</caption><thead><tr><th scope="col">time</th><th scope="col">step</th><th scope="col">verdict</th><th scope="col">requests</th><th scope="col">error rate</th><th scope="col">p95 ratio <span class="detail">canary / stable</span></th><th scope="col">why</th></tr></thead><tbody>"#,
        name = Esc(server),
    )?;
    for a in analyses.iter().rev().take(INTERVALS_SHOWN) {
        write!(
            out,
            r#"<tr data-at="{at}" data-step="{step}" data-verdict="{verdict}"><th scope="row">{time}</th><td>{step}</td><td>{badge}</td><td>{requests}</td><td>{error_rate}</td><td>{ratio} <span class="detail">{canary} / {stable}</span></td><td class="message">{reason}</td></tr>"#,
            at = Esc(&a.at),
            time = Time(&a.at),
            step = a.step,
            verdict = a.verdict,
            badge = Badge(a.verdict.as_str()),
            requests = a.requests,
            error_rate = Or(a.error_rate.map(|r| format!("{:.1}%", r * 100.0)), "—"),
            // Of the buckets' upper bounds: near what `max_latency_p95_ratio` limits (the
            // analysis holds the canary's lower bound against it, as `reason` says).
            ratio = Or(
                a.canary_p95_ms
                    .zip(a.stable_p95_ms)
                    .filter(|(_, stable)| *stable > 0.0)
                    .map(|(canary, stable)| format!("{:.2}×", canary / stable)),
                "—"
            ),
            canary = Or(a.canary_p95_ms.map(|ms| format!("{ms:.1}")), "—"),
            stable = Or(a.stable_p95_ms.map(|ms| format!("{ms:.1} ms")), "— ms"),
            reason = Esc(&a.reason),
        )?;
    }
    out.push_str("</tbody></table>");
    Ok(())
}

fn instances(out: &mut String, instances: &[InstanceStatus]) -> fmt::Result {
    if instances.is_empty() {
        return Ok(());
    }
    out.push_str(r#"<table class="instances"><caption>Instances</caption><thead><tr><th scope="col">instance</th><th scope="col">rev</th><th scope="col">state</th><th scope="col">restarts</th><th scope="col">last check</th></tr></thead><tbody>"#);
    for instance in instances {
        write!(
            out,
            r#"<tr data-instance="{id}" data-state="{state}" data-restarts="{restarts}"><td><code>{id}</code></td><td>r{revision}</td><td>{badge}</td><td>{restarts}</td><td>"#,
            id = Esc(&instance.id),
            state = instance.state,
            restarts = instance.restarts,
            revision = instance.revision,
            badge = Badge(instance.state.as_str()),
        )?;
        match &instance.last_check {
            None => out.push('—'),
            Some(check) => write!(
                out,
                r#"{badge} {kind} at {at}, {took:.1} ms<br><span class="detail">{detail}</span>"#,
                badge = Badge(if check.passed { "passed" } else { "failed" }),
                kind = Esc(&check.kind),
                at = Time(&check.at),
                took = check.took_ms,
                detail = Esc(&check.detail),
            )?,
        }
        out.push_str("</td></tr>");
    }
    out.push_str("</tbody></table>");
    Ok(())
}

fn events(out: &mut String, events: &Result<Vec<EventRecord>, StoreError>) -> fmt::Result {
    out.push_str(r#"<section id="events" class="panel" aria-labelledby="events-title"><h2 id="events-title">Recent events</h2>"#);
    match events {
        Err(e) => unreadable(out, "the events", e)?,
        Ok(events) if events.is_empty() => out.push_str(r#"<p class="empty">None yet.</p>"#),
        Ok(events) => {
            out.push_str(r#"<div class="scroll" tabindex="0" role="region" aria-label="Recent events, newest first"><table><thead><tr><th scope="col">time</th><th scope="col">event</th><th scope="col">server</th><th scope="col">message</th></tr></thead><tbody>"#);
            for record in events.iter().rev() {
                let e = &record.event;
                write!(
                    out,
                    r#"<tr data-event-id="{id}" data-kind="{kind}"><td>{time}</td><td>{kind_words}</td><td>{server}{revision}</td><td class="message">{message}</td></tr>"#,
                    id = record.id,
                    kind = e.kind,
                    // `server_ready` as words, which wrap.
                    kind_words = e.kind.as_str().replace('_', " "),
                    time = Time(&e.time),
                    server = Esc(e.server.as_deref().unwrap_or("")),
                    revision = Or(e.revision.map(|r| format!(" r{r}")), ""),
                    message = Esc(&e.message),
                )?;
            }
            out.push_str("</tbody></table></div>");
        }
    }
    out.push_str("</section>");
    Ok(())
}

fn history(out: &mut String, history: &Result<Vec<HistoryEntry>, StoreError>) -> fmt::Result {
    out.push_str(r#"<section id="history" class="panel" aria-labelledby="history-title"><h2 id="history-title">Deployments</h2>"#);
    match history {
        Err(e) => unreadable(out, "the history", e)?,
        Ok(history) if history.is_empty() => {
            out.push_str(r#"<p class="empty">None yet.</p>"#);
        }
        Ok(history) => {
            out.push_str(r#"<div class="scroll" tabindex="0" role="region" aria-label="Deployments, newest first"><table><thead><tr><th scope="col">#</th><th scope="col">what</th><th scope="col">state</th><th scope="col">started</th><th scope="col">by, why</th></tr></thead><tbody>"#);
            for entry in history.iter().rev().take(DEPLOYMENTS_SHOWN) {
                let from = Or(entry.from_revision.map(|r| format!("r{r} → ")), "");
                write!(
                    out,
                    r#"<tr data-deployment="{id}" data-state="{state}"><td>{id}</td><td>{kind} {from}r{revision}</td><td>{badge}"#,
                    id = entry.deployment,
                    state = entry.state,
                    kind = entry.kind,
                    revision = entry.revision,
                    badge = Badge(entry.state.as_str()),
                )?;
                if let Some(outcome) = &entry.outcome {
                    write!(out, r#"<br><span class="detail">{}</span>"#, Esc(outcome))?;
                }
                write!(
                    out,
                    "</td><td>{}</td><td>{}",
                    Time(&entry.started_at),
                    Esc(&entry.author)
                )?;
                if let Some(reason) = &entry.reason {
                    write!(out, r#"<br><span class="detail">{}</span>"#, Esc(reason))?;
                }
                out.push_str("</td></tr>");
            }
            out.push_str("</tbody></table></div>");
        }
    }
    out.push_str("</section>");
    Ok(())
}

fn audit(out: &mut String, audit: &Result<Vec<AuditEntry>, StoreError>) -> fmt::Result {
    out.push_str(r#"<section id="audit" class="panel" aria-labelledby="audit-title"><h2 id="audit-title">Tool calls</h2>"#);
    match audit {
        Err(e) => unreadable(out, "the audit", e)?,
        Ok(audit) if audit.is_empty() => out.push_str(r#"<p class="empty">None yet.</p>"#),
        Ok(audit) => {
            out.push_str(r#"<div class="scroll" tabindex="0" role="region" aria-label="Tool calls, newest first"><table><thead><tr><th scope="col">time</th><th scope="col">server</th><th scope="col">tool</th><th scope="col">outcome</th><th scope="col">took</th><th scope="col">token</th></tr></thead><tbody>"#);
            for call in audit.iter().rev() {
                write!(
                    out,
                    r#"<tr data-audit-id="{id}"><td>{time}</td><td>{server} r{revision}</td><td>{tool}</td><td>{badge}</td><td>{took:.1} ms</td><td>{token}</td></tr>"#,
                    id = call.id,
                    time = Time(&call.time),
                    server = Esc(&call.server),
                    revision = call.revision,
                    tool = Esc(&call.tool),
                    badge = Badge(call.outcome.as_str()),
                    took = call.duration_ms,
                    token = Esc(call.token.as_deref().unwrap_or("—")),
                )?;
            }
            out.push_str("</tbody></table></div>");
        }
    }
    out.push_str("</section>");
    Ok(())
}

fn unreadable(out: &mut String, what: &str, error: &StoreError) -> fmt::Result {
    write!(
        out,
        r#"<p class="error">Cannot read {what} from the state store: {}</p>"#,
        Esc(&error.to_string())
    )
}

/// Text made safe to put into HTML, as element content or a quoted attribute value.
struct Esc<'a>(&'a str);

impl Display for Esc<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut rest = self.0;
        while let Some(at) = rest.find(['&', '<', '>', '"', '\'']) {
            f.write_str(&rest[..at])?;
            f.write_str(match rest.as_bytes()[at] {
                b'&' => "&amp;",
                b'<' => "&lt;",
                b'>' => "&gt;",
                b'"' => "&quot;",
                _ => "&#39;",
            })?;
            rest = &rest[at + 1..];
        }
        f.write_str(rest)
    }
}

/// A state, verdict or outcome as a labelled badge; the stylesheet colours it by
/// `data-state`, and the text says it too (colour is never the only sign).
struct Badge<'a>(&'a str);

impl Display for Badge<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let name = Esc(self.0);
        write!(
            f,
            r#"<span class="badge" data-state="{name}">{name}</span>"#
        )
    }
}

/// An RFC 3339 time shown as its time of day (UTC), the whole of it on hover.
struct Time<'a>(&'a str);

impl Display for Time<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let full = Esc(self.0);
        let short = Esc(self.0.get(11..19).unwrap_or(self.0));
        write!(
            f,
            r#"<time datetime="{full}" title="{full}">{short}</time>"#
        )
    }
}

/// A value that may be missing (no requests, no latency yet), escaped, or the text shown
/// in its place.
struct Or(Option<String>, &'static str);

impl Display for Or {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.0 {
            Some(value) => Esc(value).fmt(f),
            None => f.write_str(self.1),
        }
    }
}

#[cfg(test)]
mod tests;
