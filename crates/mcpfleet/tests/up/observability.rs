//! The Grafana dashboard of deploy/observability/ against a live fleet: a real Prometheus
//! scrapes the control plane's admin listener while a canary of an http server takes
//! traffic through the gateway, is paused and is aborted; then every query of the
//! dashboard returns series, its template variables list the fleet's servers and
//! revisions, and `promtool check metrics` finds nothing to say about the scraped text.
//! Also: an OpenMetrics scrape carries a traced request's trace id as an exemplar.

use super::canary::{canary_fleet, wait_for_promote};
use super::*;
use std::process::{Child, Stdio};

const DASHBOARD: &str = include_str!("../../../../deploy/observability/grafana/mcpfleet.json");

/// How long Prometheus may take to see what the fleet did (it scrapes every second).
const SCRAPED: Duration = Duration::from_secs(60);

/// A Prometheus server of this test's own, stopped when dropped.
struct Prometheus {
    child: Child,
    url: String,
    log: PathBuf,
}

impl Prometheus {
    /// Starts Debian's `prometheus` scraping `target` (host:port) every second, with its
    /// config and storage in `dir`, listening on a free loopback port.
    fn start(dir: &Path, target: &str) -> Self {
        std::fs::create_dir_all(dir).unwrap();
        let config = dir.join("prometheus.yml");
        std::fs::write(
            &config,
            format!(
                "global:\n  scrape_interval: 1s\n  scrape_timeout: 1s\nscrape_configs:\n  \
                 - job_name: mcpfleet\n    static_configs:\n      - targets: ['{target}']\n"
            ),
        )
        .unwrap();
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let log = dir.join("prometheus.log");
        let child = Command::new("prometheus")
            .arg(format!("--config.file={}", config.display()))
            .arg(format!(
                "--storage.tsdb.path={}",
                dir.join("data").display()
            ))
            .arg(format!("--web.listen-address=127.0.0.1:{port}"))
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .unwrap_or_else(|e| {
                panic!(
                    "cannot run `prometheus` ({e}): install Debian's prometheus package \
                     (cargo xtask peers does)"
                )
            });
        Prometheus {
            child,
            url: format!("http://127.0.0.1:{port}"),
            log,
        }
    }

    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// The `data` of a successful answer of the HTTP API at `path`.
    async fn api(&self, path: &str, query: &[(&str, String)]) -> Result<serde_json::Value, String> {
        let url = reqwest::Url::parse_with_params(&format!("{}{path}", self.url), query)
            .map_err(|e| e.to_string())?;
        let response = http_client()
            .get(url)
            .send()
            .await
            .map_err(|e| e.to_string())?;
        let body: serde_json::Value = response.json().await.map_err(|e| e.to_string())?;
        if body["status"] == "success" {
            Ok(body["data"].clone())
        } else {
            Err(body.to_string())
        }
    }

    /// How many series `expr` returns at some point between `since` and now.
    async fn series_since(&self, expr: &str, since: f64) -> Result<usize, String> {
        let data = self
            .api(
                "/api/v1/query_range",
                &[
                    ("query", expr.to_owned()),
                    ("start", since.to_string()),
                    ("end", unix_now().to_string()),
                    ("step", "1".to_owned()),
                ],
            )
            .await?;
        Ok(data["result"].as_array().map_or(0, Vec::len))
    }
}

impl Drop for Prometheus {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn unix_now() -> f64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs_f64()
}

/// Every panel query of the dashboard, with the template variables set to "All".
fn dashboard_queries() -> Vec<(String, String)> {
    let dashboard: serde_json::Value = serde_json::from_str(DASHBOARD).unwrap();
    let queries: Vec<(String, String)> = dashboard["panels"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|panel| {
            let title = panel["title"].as_str().unwrap_or_default().to_owned();
            panel["targets"]
                .as_array()
                .into_iter()
                .flatten()
                .map(move |target| {
                    let expr = target["expr"].as_str().unwrap();
                    (
                        title.clone(),
                        expr.replace("$server", ".*").replace("$revision", ".*"),
                    )
                })
        })
        .collect();
    assert!(queries.len() >= 15, "{queries:#?}");
    queries
}

/// Calls `tool` and ignores how it ended: the counters are what this test is after.
async fn call(session: &RawSession, id: u64, tool: &str) {
    let body = serde_json::json!({
        "jsonrpc": "2.0", "id": id, "method": "tools/call",
        "params": { "name": tool, "arguments": { "message": "hi" } }
    })
    .to_string();
    let response = post(&session.http, &session.url, Some(&session.id), &body).await;
    let _ = response.text().await;
}

#[test]
fn a_real_prometheus_scraping_a_live_fleet_answers_every_dashboard_query() {
    let began = unix_now() - 5.0;
    // Failed intervals never abort this canary: `mcpfleet abort` does.
    let rollout = r"      strategy: canary
      steps: [{ weight: 50, pause: {} }]
      analysis: { interval: 1s, min_requests: 1, failure_limit: 100 }";
    let with_admin = |args: &str| canary_fleet(args, rollout) + "admin: { listen: 127.0.0.1:0 }\n";
    let fleet = Fleet::new("observability", &with_admin(""));
    let out = fleet.up();
    assert!(out.status.success(), "{}", text(&out));
    let status = fleet.status();
    let endpoint = server(&status, "api").endpoint.clone().unwrap();
    let admin = status.admin_url.clone().expect("the admin listener is on");
    let prometheus = Prometheus::start(
        &fleet.dir.join("prometheus"),
        admin.trim_start_matches("http://"),
    );

    // Revision 2 fails three calls in ten; the canary waits for promote at 50 %.
    fleet.rewrite(&with_admin(r#", "--error-rate", "0.3""#));
    let deploy = fleet.deploy_in_background();
    wait_for_promote(&fleet);

    let runtime = tokio::runtime::Runtime::new().unwrap();
    let _sessions = runtime.block_on(async {
        wait_until("prometheus is ready", SCRAPED, async || {
            prometheus
                .api("/api/v1/query", &[("query", "up".to_owned())])
                .await
                .map(drop)
        })
        .await;
        // New sessions land on both revisions; they stay open (the sessions gauge).
        let mut sessions = Vec::new();
        for n in 0..12 {
            let session = RawSession::open(&endpoint).await.unwrap();
            for call_id in 0..5 {
                call(&session, 100 * n + call_id, "echo").await;
            }
            call(&session, 100 * n + 99, "no-such-tool").await;
            sessions.push(session);
        }
        sessions
    });

    let paused = fleet.mcpfleet(&["pause", "api"]);
    assert!(paused.status.success(), "{}", text(&paused));
    runtime.block_on(wait_until(
        "prometheus scraped the paused canary",
        SCRAPED,
        async || match prometheus
            .series_since("mcpfleet_canary_paused_seconds > 0", began)
            .await
        {
            Ok(0) => Err("no paused canary yet".to_owned()),
            Ok(_) => Ok(()),
            Err(e) => Err(e),
        },
    ));
    let aborted = fleet.mcpfleet(&["abort", "api"]);
    assert!(aborted.status.success(), "{}", text(&aborted));
    let deployed = deploy.join().unwrap();
    assert_eq!(deployed.status.code(), Some(1), "{}", text(&deployed));

    // Every panel shows something; the message of a timeout names the empty ones.
    let queries = dashboard_queries();
    runtime.block_on(wait_until(
        "every dashboard query returns a series",
        SCRAPED,
        async || {
            let mut empty = Vec::new();
            for (panel, expr) in &queries {
                match prometheus.series_since(expr, began).await {
                    Ok(0) => empty.push(format!("{panel}: {expr}")),
                    Ok(_) => {}
                    Err(e) => empty.push(format!("{panel}: {expr}: {e}")),
                }
            }
            if empty.is_empty() {
                Ok(())
            } else {
                Err(format!("{empty:#?}\nprometheus log:\n{}", prometheus.log()))
            }
        },
    ));

    // The template variables offer the fleet's server and both revisions.
    runtime.block_on(async {
        let servers = prometheus
            .api(
                "/api/v1/label/server/values",
                &[("match[]", "mcpfleet_instance_up".to_owned())],
            )
            .await
            .unwrap();
        assert_eq!(servers, serde_json::json!(["api"]));
        let revisions = prometheus
            .api(
                "/api/v1/label/revision/values",
                &[("match[]", "mcpfleet_traffic_weight".to_owned())],
            )
            .await
            .unwrap();
        assert_eq!(revisions, serde_json::json!(["1", "2"]));
    });

    // The exposition Prometheus scraped is clean by its own linter.
    let exposition = runtime.block_on(async {
        http_client()
            .get(format!("{admin}/metrics"))
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap()
    });
    assert_promtool_checks_metrics(&exposition);
}

/// `promtool check metrics` finds nothing to say about `exposition` (Prometheus text 0.0.4,
/// the only format it reads).
fn assert_promtool_checks_metrics(exposition: &str) {
    let mut promtool = Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("promtool runs (Debian's prometheus package; cargo xtask peers installs it)");
    std::io::Write::write_all(&mut promtool.stdin.take().unwrap(), exposition.as_bytes()).unwrap();
    let checked = promtool.wait_with_output().unwrap();
    assert!(
        checked.status.success() && checked.stdout.is_empty() && checked.stderr.is_empty(),
        "{}\n{exposition}",
        text(&checked)
    );
}

/// The accept header of a Prometheus scrape (its default scrape protocols, in order).
const PROMETHEUS_ACCEPT: &str = "application/openmetrics-text;version=1.0.0;q=0.5,\
    application/openmetrics-text;version=0.0.1;q=0.4,text/plain;version=0.0.4;q=0.3,*/*;q=0.1";

/// Scrapers that accept OpenMetrics (Prometheus does by default) get it, ending in `# EOF`,
/// with the trace id of a request sent with a W3C `traceparent` through the gateway as the
/// exemplar of its latency bucket; others get the Prometheus text format, without exemplars
/// (it has no syntax for them), which promtool finds clean. (promtool reads only that format;
/// the real Prometheus of the dashboard test parses the OpenMetrics: it asks for it.)
#[test]
fn an_openmetrics_scrape_carries_the_trace_id_of_a_traced_request_as_exemplar() {
    const TRACE_ID: &str = "4bf92f3577b34da6a3ce929d0e0e4736";
    let fleet = Fleet::new(
        "openmetrics",
        r#"
version: 1
name: openmetrics
admin: { listen: 127.0.0.1:0 }
servers:
  search:
    http: { command: SAMPLE, args: ["--transport", "http", "--port", "{{ port }}"] }
"#,
    );
    let out = fleet.up();
    assert!(out.status.success(), "{}", text(&out));
    let status = fleet.status();
    let endpoint = server(&status, "search").endpoint.clone().unwrap();
    let admin = status.admin_url.clone().expect("the admin listener is on");
    let http = http_client();
    let scrape = async |accept: Option<&str>| {
        let mut request = http.get(format!("{admin}/metrics"));
        if let Some(accept) = accept {
            request = request.header("accept", accept);
        }
        let response = request.send().await.unwrap();
        assert_eq!(response.status(), 200);
        let content_type = response.headers()["content-type"]
            .to_str()
            .unwrap()
            .to_owned();
        (content_type, response.text().await.unwrap())
    };
    let traced_bucket = |line: &str| {
        line.starts_with("mcpfleet_gateway_request_duration_seconds_bucket{")
            && line.contains(r#"server="search",revision="1""#)
            && line.contains(&format!(r#" # {{trace_id="{TRACE_ID}"}} "#))
    };

    let runtime = tokio::runtime::Runtime::new().unwrap();
    let ((openmetrics_type, openmetrics), (plain_type, plain)) = runtime.block_on(async {
        let session = RawSession::open(&endpoint).await.unwrap();
        let body = serde_json::json!({
            "jsonrpc": "2.0", "id": 7, "method": "tools/call",
            "params": { "name": "echo", "arguments": { "message": "traced" } }
        });
        let response = http
            .post(&endpoint)
            .header("accept", "application/json, text/event-stream")
            .header("mcp-session-id", &session.id)
            .header("traceparent", format!("00-{TRACE_ID}-00f067aa0ba902b7-01"))
            .json(&body)
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 200);
        assert!(response.text().await.unwrap().contains("traced"));
        // An answer is counted when its relay ends, which may be just after the client
        // has read it.
        let openmetrics = wait_until(
            "the traced request is counted",
            Duration::from_secs(10),
            async || {
                let (content_type, body) = scrape(Some(PROMETHEUS_ACCEPT)).await;
                if body.lines().any(traced_bucket) {
                    Ok((content_type, body))
                } else {
                    Err(body)
                }
            },
        )
        .await;
        (openmetrics, scrape(None).await)
    });

    assert_eq!(
        openmetrics_type,
        "application/openmetrics-text; version=1.0.0; charset=utf-8"
    );
    assert!(openmetrics.ends_with("\n# EOF\n"), "{openmetrics}");
    assert!(
        openmetrics.contains("# TYPE mcpfleet_gateway_requests counter\n"),
        "{openmetrics}"
    );
    assert_eq!(plain_type, "text/plain; version=0.0.4; charset=utf-8");
    assert!(
        !plain.contains("# EOF") && !plain.contains("trace_id"),
        "{plain}"
    );
    assert!(
        plain.contains("# TYPE mcpfleet_gateway_requests_total counter\n"),
        "{plain}"
    );
    assert_promtool_checks_metrics(&plain);
}
