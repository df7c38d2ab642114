//! The official MCP conformance suite (`@modelcontextprotocol/conformance`) against
//! the sample server directly and through the gateway: its active legacy suite with
//! the server as an HTTP upstream, a per-session stdio upstream and a shared stdio
//! upstream (one process every scenario's session uses, ids rewritten), and its
//! 2026-07-28 requirements with the stdio upstreams (where the gateway is the HTTP
//! server). The direct run is the baseline: the gateway must pass every check the
//! server passes on its own. Compared per check from each run's `checks.json` files,
//! not by exit code.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::Path;
use std::time::Duration;

use fleet_testkit::{HttpSampleServer, scratch_dir};

use crate::peers::{describe, node_script, run_bounded};
use crate::stdio::{per_session, shared_table};
use crate::{TestGateway, table};

/// One run of the suite takes about two seconds on loopback; this bounds a hung
/// scenario (the suite has no per-scenario limit of its own for servers). Two runs
/// keep the test under a minute.
const SUITE_LIMIT: Duration = Duration::from_secs(25);

/// One check's outcome, keyed by (scenario, check id) in a [`Report`].
#[derive(Debug)]
struct Check {
    status: String,
    /// Why it did not succeed, when it says (the check's `errorMessage` or details).
    why: String,
}

type Report = BTreeMap<(String, String), Check>;

/// One run of the suite.
struct Run {
    checks: Report,
    /// It exited 0 (the suite's own verdict: no scenario failed).
    passed: bool,
    /// Exit status and output, or that it was killed, for failure messages.
    output: String,
}

#[tokio::test]
async fn the_gateway_passes_every_conformance_check_the_server_passes() {
    let upstream = HttpSampleServer::start(&["--conformance"]).await;
    let gateway =
        TestGateway::start(table("conf", &[(1, 100, &[("c", &upstream.url)])]), |_| {}).await;
    let (_processes, stdio_table) = per_session(&["--conformance"], 64, Duration::from_secs(60));
    let stdio_gateway = TestGateway::start(stdio_table, |_| {}).await;
    let (shared_table, _child) = shared_table("shared", &["--conformance"]);
    let shared_gateway = TestGateway::start(shared_table, |_| {}).await;

    let direct_run = conformance(Suite::Legacy, "direct", &upstream.url).await;
    let direct = &direct_run.checks;
    let through_http = conformance(Suite::Legacy, "gateway-http", &gateway.url("conf"))
        .await
        .checks;
    let through_stdio = conformance(Suite::Legacy, "gateway-stdio", &stdio_gateway.url("solo"))
        .await
        .checks;
    let through_shared = conformance(
        Suite::Legacy,
        "gateway-shared",
        &shared_gateway.url("shared"),
    )
    .await
    .checks;
    let passed = |report: &Report| report.values().filter(|c| c.status == "SUCCESS").count();
    eprintln!(
        "conformance: direct {}/{} checks passed; through the gateway, HTTP upstream {}/{}, \
         per-session stdio upstream {}/{}, shared stdio upstream {}/{}",
        passed(direct),
        direct.len(),
        passed(&through_http),
        through_http.len(),
        passed(&through_stdio),
        through_stdio.len(),
        passed(&through_shared),
        through_shared.len()
    );

    let failing: Vec<_> = direct
        .iter()
        // INFO checks record what was exchanged; they neither pass nor fail.
        .filter(|(_, check)| !matches!(check.status.as_str(), "SUCCESS" | "INFO"))
        .collect();
    assert!(
        direct_run.passed && failing.is_empty(),
        "the sample server alone must pass every conformance check; it failed:\n{}\n{}",
        failing
            .iter()
            .map(|((scenario, id), check)| format!(
                "  {scenario} / {id}: {} {}",
                check.status, check.why
            ))
            .collect::<Vec<_>>()
            .join("\n"),
        direct_run.output
    );

    assert_no_lost_checks(
        direct,
        &[
            ("http", &through_http),
            ("stdio", &through_stdio),
            ("shared", &through_shared),
        ],
    );
}

/// The 2026-07-28 suite (stateless requests: `server/discover`, `_meta`, the
/// `MCP-Protocol-Version` / `Mcp-Method` / `Mcp-Name` headers and the HTTP status each
/// error leaves with). Over stdio the gateway is the HTTP server, so every check the
/// sample server passes over HTTP on its own is the gateway's to pass; the direct run
/// is the baseline, whatever it fails itself.
#[tokio::test]
async fn the_gateway_passes_every_2026_07_28_check_the_server_passes_over_stdio() {
    let upstream = HttpSampleServer::start(&["--conformance"]).await;
    let (_processes, stdio_table) = per_session(&["--conformance"], 64, Duration::from_secs(60));
    let stdio_gateway = TestGateway::start(stdio_table, |_| {}).await;
    let (shared_table, _child) = shared_table("shared", &["--conformance"]);
    let shared_gateway = TestGateway::start(shared_table, |_| {}).await;

    let direct = conformance(Suite::Modern, "modern-direct", &upstream.url)
        .await
        .checks;
    let through_stdio = conformance(Suite::Modern, "modern-stdio", &stdio_gateway.url("solo"))
        .await
        .checks;
    let through_shared = conformance(
        Suite::Modern,
        "modern-shared",
        &shared_gateway.url("shared"),
    )
    .await
    .checks;
    let passed = |report: &Report| report.values().filter(|c| c.status == "SUCCESS").count();
    eprintln!(
        "conformance 2026-07-28: direct {}/{} checks passed; through the gateway, \
         per-session stdio upstream {}/{}, shared stdio upstream {}/{}",
        passed(&direct),
        direct.len(),
        passed(&through_stdio),
        through_stdio.len(),
        passed(&through_shared),
        through_shared.len()
    );
    assert!(
        passed(&direct) > 0,
        "the sample server passed no 2026-07-28 check on its own: {direct:#?}"
    );
    assert_no_lost_checks(
        &direct,
        &[("stdio", &through_stdio), ("shared", &through_shared)],
    );
}

/// Fails naming every check that passes in `direct` but not in one of `through`
/// (labelled by upstream kind).
fn assert_no_lost_checks(direct: &Report, through: &[(&str, &Report)]) {
    let mut lost = String::new();
    for (upstream, through) in through {
        for ((scenario, id), check) in direct {
            let (status, why) = match through.get(&(scenario.clone(), id.clone())) {
                Some(other) => (other.status.as_str(), other.why.as_str()),
                None => ("MISSING", ""),
            };
            if check.status == "SUCCESS" && status != "SUCCESS" {
                let _ = writeln!(
                    lost,
                    "| {upstream:<8} | {scenario:<30} | {id:<40} | {:<7} | {status:<7} | {why}",
                    check.status
                );
            }
        }
    }
    assert!(
        lost.is_empty(),
        "checks the server passes directly but not through the gateway:\n\
         | {:<8} | {:<30} | {:<40} | direct  | gateway | why\n{lost}",
        "upstream",
        "scenario",
        "check"
    );
}

/// Which conformance suite a run uses.
#[derive(Debug, Clone, Copy)]
enum Suite {
    /// `conformance` 0.1.x, its active suite: the legacy (session) revisions.
    Legacy,
    /// `conformance-2026` (the 0.2 alpha line), exactly what 2026-07-28 requires.
    Modern,
}

/// Runs `suite` against `url`; every check of every scenario.
async fn conformance(suite: Suite, label: &str, url: &str) -> Run {
    let dir = scratch_dir(&format!("conformance-{label}"));
    let (script, selection) = match suite {
        Suite::Legacy => ("conformance", ["--suite", "active"]),
        Suite::Modern => ("conformance-2026", ["--requirements", "2026-07-28"]),
    };
    let mut command = node_script(script);
    command
        .args(["server", "--url", url])
        .args(selection)
        .arg("-o")
        .arg(&dir)
        .current_dir(&dir);
    let what = format!("conformance ({label})");
    let output = run_bounded(&what, command, SUITE_LIMIT).await;
    // A run killed at the limit still compares: the scenarios it finished wrote their
    // checks; the rest show up as MISSING.
    let (passed, output) = match output {
        Some(output) => (output.status.success(), describe(&output)),
        None => {
            eprintln!("{what} did not finish within {SUITE_LIMIT:?}; comparing what it wrote");
            (false, format!("{what} was killed after {SUITE_LIMIT:?}"))
        }
    };
    let checks = read_checks(&dir);
    assert!(
        !checks.is_empty(),
        "{what} wrote no checks.json under {}\n{output}",
        dir.display(),
    );
    Run {
        checks,
        passed,
        output,
    }
}

/// Every `<dir>/server-<scenario>-<timestamp>/checks.json`.
fn read_checks(dir: &Path) -> Report {
    let mut report = Report::new();
    for entry in std::fs::read_dir(dir).expect("read the conformance output directory") {
        let path = entry.expect("a directory entry").path();
        let file = path.join("checks.json");
        if !file.is_file() {
            continue;
        }
        let name = path.file_name().unwrap().to_string_lossy().into_owned();
        let scenario = scenario_of(&name);
        let text = std::fs::read_to_string(&file).expect("read checks.json");
        let checks: Vec<serde_json::Value> = serde_json::from_str(&text)
            .unwrap_or_else(|error| panic!("{}: {error}", file.display()));
        for check in checks {
            let id = check["id"]
                .as_str()
                .or_else(|| check["name"].as_str())
                .unwrap_or("?");
            // Ids are unique within a scenario today; a repeat still gets a key of its own.
            let mut key = (scenario.clone(), id.to_owned());
            let mut repeat = 1;
            while report.contains_key(&key) {
                repeat += 1;
                key.1 = format!("{id}#{repeat}");
            }
            let why = check["errorMessage"]
                .as_str()
                .map(str::to_owned)
                .unwrap_or_else(|| {
                    let mut details = check["details"].to_string();
                    details.truncate(200);
                    details
                });
            report.insert(
                key,
                Check {
                    status: check["status"].as_str().unwrap_or("?").to_owned(),
                    why,
                },
            );
        }
    }
    report
}

/// `server-tools-list-2026-11-22T05-03-16-734Z` → `tools-list`.
fn scenario_of(directory: &str) -> String {
    let name = directory.strip_prefix("server-").unwrap_or(directory);
    // The suffix is `-YYYY-MM-DDTHH-MM-SS-mmmZ`: 25 characters.
    match name.len().checked_sub(25) {
        Some(cut) if name.ends_with('Z') && name.as_bytes()[cut] == b'-' => name[..cut].to_owned(),
        _ => name.to_owned(),
    }
}
