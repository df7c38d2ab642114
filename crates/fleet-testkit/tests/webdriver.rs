//! The WebDriver client drives a real headless Chromium against a small page served by an
//! in-test HTTP server: navigation, elements by CSS, text and attributes, clicks, typing,
//! scripts, a page that changes later (waited on, not slept on), screenshots; a missing
//! element and a missing driver are clear errors; no Chromium outlives its `Browser`.
//!
//! Needs Debian's `chromium` and `chromium-driver` (`cargo xtask peers`): without them
//! these tests fail, saying so.

use fleet_testkit::webdriver::{Browser, WINDOW, WebDriverError};
use fleet_testkit::{TempDir, wait_until};
use serde_json::json;
use std::time::Duration;

/// Chromium's first page on a busy 2-core machine.
const PAGE: Duration = Duration::from_secs(15);

/// A label and input echoed into a paragraph as typed, a link with attributes, and a
/// button whose effect shows only after a delay (as a dashboard's live update would).
const TEST_PAGE: &str = r#"<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>webdriver test page</title></head>
<body>
<h1 id="title">Fleet <span>canaries</span></h1>
<a id="docs" href="/docs" data-kind="guide">Docs</a>
<label for="name">Name</label> <input id="name">
<p id="echo"></p>
<button id="later" type="button">Later</button>
<p id="status">idle</p>
<ul><li class="server">api</li><li class="server">search</li></ul>
<script>
document.getElementById('name').addEventListener('input', (e) => {
  document.getElementById('echo').textContent = 'hello ' + e.target.value;
});
document.getElementById('later').addEventListener('click', () => {
  setTimeout(() => { document.getElementById('status').textContent = 'clicked'; }, 300);
  setTimeout(() => { document.getElementById('status').dataset.state = 'done'; }, 600);
});
</script>
</body></html>"#;

/// Serves [`TEST_PAGE`] at `/` on a loopback port; returns its URL.
async fn serve_test_page() -> String {
    let app = axum::Router::new().route(
        "/",
        axum::routing::get(|| async { axum::response::Html(TEST_PAGE) }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    url
}

async fn browser() -> Browser {
    Browser::start()
        .await
        .unwrap_or_else(|error| panic!("cannot start a headless Chromium: {error}"))
}

#[tokio::test]
async fn reads_clicks_and_types_into_a_live_page() {
    let url = serve_test_page().await;
    let browser = browser().await;
    tokio::time::timeout(PAGE, browser.goto(&url))
        .await
        .expect("the page loads in time")
        .unwrap();

    assert_eq!(
        browser.find("#title").await.unwrap().text().await.unwrap(),
        "Fleet canaries"
    );
    let link = browser.find("a#docs").await.unwrap();
    assert_eq!(
        link.attribute("data-kind").await.unwrap().as_deref(),
        Some("guide")
    );
    assert_eq!(
        link.attribute("href").await.unwrap().as_deref(),
        Some("/docs")
    );
    assert_eq!(link.attribute("title").await.unwrap(), None);

    let servers = browser.find_all("li.server").await.unwrap();
    let mut names = Vec::new();
    for server in &servers {
        names.push(server.text().await.unwrap());
    }
    assert_eq!(names, ["api", "search"]);
    assert!(browser.find_all("li.missing").await.unwrap().is_empty());

    // Typing fires input events as a user's keys do.
    browser
        .find("#name")
        .await
        .unwrap()
        .send_keys("fleet")
        .await
        .unwrap();
    assert_eq!(
        browser.find("#echo").await.unwrap().text().await.unwrap(),
        "hello fleet"
    );

    // The click's effect comes later: waited on with a deadline.
    browser.find("#later").await.unwrap().click().await.unwrap();
    let status = browser
        .wait_for_text("#status", Duration::from_secs(5), |text| text == "clicked")
        .await;
    assert_eq!(status, "clicked");
    let done = browser
        .wait_for(r#"#status[data-state="done"]"#, Duration::from_secs(5))
        .await;
    assert_eq!(done.text().await.unwrap(), "clicked");

    let answer = browser
        .execute(
            "return arguments[0] + ' ' + document.title;",
            &[json!("seen:")],
        )
        .await
        .unwrap();
    assert_eq!(answer, json!("seen: webdriver test page"));
}

#[tokio::test]
async fn a_screenshot_is_a_png_of_the_window() {
    let url = serve_test_page().await;
    let browser = browser().await;
    browser.goto(&url).await.unwrap();
    let dir = TempDir::new("webdriver-screenshot");
    let path = dir.path().join("shots/page.png");

    browser.screenshot(&path).await.unwrap();

    let png = std::fs::read(&path).unwrap();
    assert!(png.starts_with(b"\x89PNG\r\n\x1a\n"), "not a PNG");
    // IHDR, the first chunk: width and height, big-endian, after its length and type.
    let width = u32::from_be_bytes(png[16..20].try_into().unwrap());
    let height = u32::from_be_bytes(png[20..24].try_into().unwrap());
    assert_eq!(width, WINDOW.0);
    assert!(
        height > WINDOW.1 / 2 && height <= WINDOW.1,
        "height {height}"
    );
}

#[tokio::test]
async fn a_missing_element_and_a_throwing_script_are_errors_naming_them() {
    let url = serve_test_page().await;
    let browser = browser().await;
    browser.goto(&url).await.unwrap();

    let missing = browser.find("#no-such-thing").await.unwrap_err();
    assert!(
        matches!(&missing, WebDriverError::Command { error, .. } if error == "no such element"),
        "{missing:?}"
    );
    assert!(missing.to_string().contains("#no-such-thing"), "{missing}");

    let thrown = browser
        .execute("throw new Error('boom');", &[])
        .await
        .unwrap_err();
    assert!(
        matches!(&thrown, WebDriverError::Command { error, .. } if error == "javascript error"),
        "{thrown:?}"
    );
    assert!(thrown.to_string().contains("boom"), "{thrown}");
}

#[tokio::test]
async fn a_missing_driver_says_how_to_install_it() {
    let error = Browser::start_with("mcpfleet-test-no-such-chromedriver", "chromium")
        .await
        .unwrap_err();
    assert!(
        matches!(&error, WebDriverError::NotInstalled { program } if program == "mcpfleet-test-no-such-chromedriver"),
        "{error:?}"
    );
    let message = error.to_string();
    assert!(message.contains("cargo xtask peers"), "{message}");
    assert!(
        message.contains("apt-get install chromium chromium-driver"),
        "{message}"
    );
}

#[tokio::test]
async fn no_chromium_outlives_its_browser() {
    let url = serve_test_page().await;
    let browser = browser().await;
    browser.goto(&url).await.unwrap();
    let group = browser.process_group().expect("chromedriver runs");
    let running = running_in_group(group);
    assert!(
        running.iter().any(|name| name.starts_with("chrom")),
        "Chromium runs in chromedriver's process group: {running:?}"
    );

    drop(browser);

    wait_until(
        "no process of chromedriver's group runs",
        Duration::from_secs(10),
        async || {
            let left = running_in_group(group);
            if left.is_empty() { Ok(()) } else { Err(left) }
        },
    )
    .await;
}

/// The names of the processes in process group `group` that are still running (zombies,
/// already dead, left out).
fn running_in_group(group: u32) -> Vec<String> {
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    entries
        .filter_map(|entry| std::fs::read_to_string(entry.ok()?.path().join("stat")).ok())
        .filter_map(|stat| {
            // pid (comm) state ppid pgrp …; comm may hold spaces, so split after its ')'.
            let (name, rest) = stat.split_once(" (")?.1.rsplit_once(") ")?;
            let mut fields = rest.split(' ');
            let state = fields.next()?;
            let pgrp: u32 = fields.nth(1)?.parse().ok()?;
            (pgrp == group && state != "Z").then(|| name.to_owned())
        })
        .collect()
}
