//! The dashboard in a real browser: headless Chromium, driven over WebDriver
//! (`fleet_testkit::webdriver`), opens the admin listener of a live fleet. The page lists
//! the fleet's servers; a canary's weights, verdict and analysis intervals change on the
//! open page as the canary moves (no reload); the abort button without an admin token shows
//! the refusal and the canary keeps running; with the token typed in, it aborts the canary.
//!
//! Screenshots go to `target/screenshots/` (docs/images/dashboard.png is one of them).
//! Needs Debian's `chromium` and `chromium-driver` (`cargo xtask peers`): without them these
//! tests fail, saying so.

use super::canary::new_clients;
use super::*;
use fleet_api::types::RolloutState;
use fleet_testkit::webdriver::Browser;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

/// How long the page may take to show what the control plane already knows: one event
/// through the stream and one fragment fetched, on a busy 2-core machine.
const SHOWN: Duration = Duration::from_secs(10);

/// `api`, an http server rolled out by canary (30 % for 3 s, time for the page to show that
/// step on a busy machine, then 60 % until promoted or aborted), revision `name`; `notes`,
/// a stdio server beside it; the admin listener on a free port with the admin token `ops`
/// (`sha256`).
fn fleet_yaml(name: &str, sha256: &str) -> String {
    format!(
        r#"
version: 1
name: dashboard
servers:
  api:
    http:
      command: SAMPLE
      args: ["--transport", "http", "--port", "{{{{ port }}}}", "--tools", "echo,whoami", "--name", "{name}"]
    rollout:
      strategy: canary
      steps: [{{ weight: 30, pause: 3s }}, {{ weight: 60, pause: {{}} }}]
      analysis: {{ interval: 300ms, min_requests: 3, max_latency_p95_ratio: 1000 }}
  notes:
    stdio: {{ command: SAMPLE, args: ["--name", "dashboard-notes"] }}
gateway:
  listen: 127.0.0.1:0
admin:
  listen: 127.0.0.1:0
  tokens:
    - {{ name: ops, sha256: "{sha256}" }}
"#
    )
    .replace("SAMPLE", &sample())
}

/// `mcpfleet token create ops --admin`: the token and its SHA-256.
fn admin_token(fleet: &Fleet) -> (String, String) {
    let out = fleet
        .command()
        .args(["token", "create", "ops", "--admin", "--output", "json"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", text(&out));
    let created: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    (
        created["token"].as_str().unwrap().to_owned(),
        created["sha256"].as_str().unwrap().to_owned(),
    )
}

/// `target/screenshots/NAME.png`.
fn screenshot_path(name: &str) -> PathBuf {
    bin_dir()
        .parent()
        .expect("target/<profile> sits in target")
        .join("screenshots")
        .join(format!("{name}.png"))
}

/// A screenshot of the page's top (the header with the outcome of the last button), where
/// a click may have scrolled away from.
async fn screenshot_from_the_top(browser: &Browser, name: &str) {
    browser
        .execute("window.scrollTo(0, 0);", &[])
        .await
        .unwrap();
    browser.screenshot(&screenshot_path(name)).await.unwrap();
}

/// Clicks the element `selector` matches. The page re-renders its fleet on every event,
/// so the element found may be replaced before the click lands (`stale element
/// reference`): then it is found and clicked again.
async fn click(browser: &Browser, selector: &str) {
    wait_until(&format!("`{selector}` is clicked"), SHOWN, async || {
        browser.find(selector).await?.click().await
    })
    .await;
}

async fn browser() -> Browser {
    Browser::start()
        .await
        .unwrap_or_else(|error| panic!("cannot start a headless Chromium: {error}"))
}

#[test]
fn dashboard_follows_a_canary_live_and_aborts_it_only_with_the_admin_token() {
    // The token is created before the fleet file that holds its hash.
    let fleet = Fleet::new("dashboard-browser", &fleet_yaml("v1", &"0".repeat(64)));
    let (token, sha256) = admin_token(&fleet);
    fleet.rewrite(&fleet_yaml("v1", &sha256));
    let out = fleet.up();
    assert!(out.status.success(), "{}", text(&out));
    let status = fleet.status();
    let endpoint = server(&status, "api").endpoint.clone().unwrap();
    let admin = status.admin_url.clone().expect("the admin listener is on");

    let runtime = tokio::runtime::Runtime::new().unwrap();
    let browser = runtime.block_on(browser());
    runtime.block_on(async {
        browser.goto(&format!("{admin}/")).await.unwrap();
        // The fleet's servers, each with its endpoint.
        for name in ["api", "notes"] {
            browser
                .wait_for(&format!(r#"#servers [data-server="{name}"]"#), SHOWN)
                .await;
        }
        let api = browser
            .find(r#"#servers [data-server="api"]"#)
            .await
            .unwrap();
        let shown = api.text().await.unwrap();
        assert!(shown.contains(&endpoint), "{endpoint} not in {shown}");
        assert!(browser.find_all("#canary-api").await.unwrap().is_empty());
        // Marks this very document: a reload would lose it.
        browser
            .execute("window.loadedOnce = 'yes';", &[])
            .await
            .unwrap();
    });

    // Revision 2 by canary, with new clients calling all along.
    fleet.rewrite(&fleet_yaml("v2", &sha256));
    let stop = Arc::new(AtomicBool::new(false));
    let load = runtime.spawn(new_clients(
        endpoint,
        stop.clone(),
        Arc::new(AtomicU64::new(0)),
    ));
    let deploy = fleet.deploy_in_background();

    runtime.block_on(async {
        // The canary appears at its first step, then moves to its second with a verdict,
        // on the page as it was loaded.
        browser
            .wait_for(
                r#"#canary-api[data-step="1"][data-weight="30"]"#,
                Duration::from_secs(20),
            )
            .await;
        browser
            .wait_for(
                r#"#canary-api[data-step="2"][data-weight="60"][data-verdict="pass"]"#,
                Duration::from_secs(20),
            )
            .await;
        // Its analysis intervals: the pass that ended step 1, then step 2's.
        for interval in [
            r#"#analyses-api tr[data-step="1"][data-verdict="pass"]"#,
            r#"#analyses-api tr[data-step="2"][data-verdict="pass"]"#,
        ] {
            browser.wait_for(interval, SHOWN).await;
        }
        browser
            .wait_for(
                r#"[data-server="api"] [data-revision="2"][data-weight="60"]"#,
                SHOWN,
            )
            .await;
        browser
            .wait_for(
                r#"[data-server="api"] [data-revision="1"][data-weight="40"]"#,
                SHOWN,
            )
            .await;
        let same_page = browser
            .execute("return window.loadedOnce;", &[])
            .await
            .unwrap();
        assert_eq!(same_page, "yes", "the page was reloaded");
        screenshot_from_the_top(&browser, "dashboard-canary").await;

        // Abort without a token: refused, and said so on the page.
        let abort = r#"button[data-action="abort"][data-server="api"]"#;
        click(&browser, abort).await;
        let refused = browser
            .wait_for(r#"#action-result[data-outcome="error"]"#, SHOWN)
            .await;
        assert_eq!(
            refused.attribute("data-status").await.unwrap().as_deref(),
            Some("401")
        );
        let said = refused.text().await.unwrap();
        assert!(
            said.contains("token"),
            "the refusal says what is missing: {said}"
        );
        screenshot_from_the_top(&browser, "dashboard-refused").await;
    });
    let still = fleet.status();
    assert_eq!(
        server(&still, "api").rollout.as_ref().map(|r| r.state),
        Some(RolloutState::WaitingForPromote),
        "the canary runs on after the refused abort: {still:#?}"
    );

    runtime.block_on(async {
        // With the admin token typed in, the same button aborts the canary.
        browser
            .find("#token")
            .await
            .unwrap()
            .send_keys(&token)
            .await
            .unwrap();
        let abort = r#"button[data-action="abort"][data-server="api"]"#;
        click(&browser, abort).await;
        browser
            .wait_for(r#"#action-result[data-outcome="ok"]"#, SHOWN)
            .await;
        wait_until(
            "the canary leaves the page",
            SHOWN,
            async || matches!(browser.find_all("#canary-api").await, Ok(found) if found.is_empty()),
        )
        .await;
        screenshot_from_the_top(&browser, "dashboard-aborted").await;
    });
    let deployed = deploy.join().unwrap();
    assert_eq!(deployed.status.code(), Some(1), "{}", text(&deployed));
    stop.store(true, Ordering::SeqCst);
    runtime.block_on(load).unwrap();
    let after = fleet.status();
    let api = server(&after, "api");
    assert!(api.rollout.is_none(), "{after:#?}");
    assert_eq!(api.revision, Some(1), "{after:#?}");
}
