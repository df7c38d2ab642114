//! Webhooks from a live fleet to a real local HTTP receiver: signed bodies that verify with
//! the secret (checked by OpenSSL, not by mcpfleet's own code), order kept across a whole
//! canary, a 500 retried and delivered once, the Slack body, a receiver taken out of the
//! file sent nothing more, and a receiver that never answers not slowing a deployment.

use super::*;
use std::sync::{Arc, Mutex};

/// One request the receiver got.
#[derive(Debug, Clone)]
struct Received {
    event: String,
    timestamp: String,
    signature: Option<String>,
    body: String,
}

/// How the receiver answers.
#[derive(Clone)]
enum Answer {
    /// These statuses to the first requests, 200 to the rest.
    Statuses(Vec<u16>),
    /// Never: each request hangs until the client gives up.
    Never,
}

/// An HTTP receiver on a port of its own, in a runtime of its own.
struct Receiver {
    url: String,
    seen: Arc<Mutex<Vec<Received>>>,
    _runtime: tokio::runtime::Runtime,
}

impl Receiver {
    fn start(answer: Answer) -> Self {
        use axum::http::{HeaderMap, StatusCode};
        let runtime = tokio::runtime::Runtime::new().unwrap();
        let seen = Arc::new(Mutex::new(Vec::new()));
        let recorded = seen.clone();
        let hook = move |headers: HeaderMap, body: String| {
            let recorded = recorded.clone();
            let answer = answer.clone();
            async move {
                let header = |name: &str| headers.get(name).map(|v| v.to_str().unwrap().to_owned());
                let count = {
                    let mut seen = recorded.lock().unwrap();
                    seen.push(Received {
                        event: header("x-mcpfleet-event").unwrap_or_default(),
                        timestamp: header("x-mcpfleet-timestamp").unwrap_or_default(),
                        signature: header("x-mcpfleet-signature"),
                        body,
                    });
                    seen.len()
                };
                match answer {
                    Answer::Never => std::future::pending().await,
                    Answer::Statuses(statuses) => {
                        let status = statuses.get(count - 1).copied().unwrap_or(200);
                        StatusCode::from_u16(status).unwrap()
                    }
                }
            }
        };
        let router = axum::Router::new().route("/hook", axum::routing::post(hook));
        let listener = runtime
            .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
            .unwrap();
        let url = format!("http://{}/hook", listener.local_addr().unwrap());
        runtime.spawn(async move { axum::serve(listener, router).await });
        Receiver {
            url,
            seen,
            _runtime: runtime,
        }
    }

    fn seen(&self) -> Vec<Received> {
        self.seen.lock().unwrap().clone()
    }

    /// What it was sent once it has `n` requests.
    fn wait_for(&self, n: usize, what: &str) -> Vec<Received> {
        wait_until_blocking(what, Duration::from_secs(30), || {
            let seen = self.seen();
            if seen.len() >= n { Ok(seen) } else { Err(seen) }
        })
    }
}

/// `sha256=<hex>` of HMAC-SHA256(`key`, `timestamp.body`), computed by OpenSSL.
fn openssl_signature(key: &str, timestamp: &str, body: &str) -> String {
    use std::io::Write as _;
    let mut openssl = Command::new("openssl")
        .args(["dgst", "-sha256", "-hmac", key])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("openssl runs");
    openssl
        .stdin
        .take()
        .unwrap()
        .write_all(format!("{timestamp}.{body}").as_bytes())
        .unwrap();
    let out = openssl.wait_with_output().unwrap();
    assert!(out.status.success(), "{}", text(&out));
    let line = String::from_utf8(out.stdout).unwrap();
    format!("sha256={}", line.rsplit("= ").next().unwrap().trim())
}

const KEY: &str = "whsec-7f3a9c-never-logged";

/// `api` (http) rolled out as a canary that waits for `promote`, with `NOTIFICATIONS`.
fn webhook_fleet(args: &str, notifications: &str) -> String {
    format!(
        r#"
version: 1
name: webhooks
secrets:
  hook: {{ env: WEBHOOK_KEY }}
servers:
  api:
    http:
      command: SAMPLE
      args: ["--transport", "http", "--port", "{{{{ port }}}}", "--tools", "echo"{args}]
    rollout:
      strategy: canary
      steps: [{{ weight: 50, pause: {{}} }}]
{notifications}
gateway:
  listen: 127.0.0.1:0
"#
    )
    .replace("SAMPLE", &sample())
}

#[test]
fn rollout_events_reach_a_receiver_signed_in_order_with_a_500_retried_once() {
    // The first request is answered 500: it must come again, and only once more.
    let json = Receiver::start(Answer::Statuses(vec![500]));
    let slack = Receiver::start(Answer::Statuses(vec![]));
    let both = format!(
        r#"notifications:
  webhooks:
    - url: {}
      secret: "{{{{ secret('hook') }}}}"
    - url: {}
      format: slack
      events: [started, succeeded]"#,
        json.url, slack.url
    );
    let fleet = Fleet::new("webhooks", &webhook_fleet("", &both)).with_env("WEBHOOK_KEY", KEY);
    let out = fleet.up();
    assert!(out.status.success(), "{}", text(&out));
    slack.wait_for(2, "the slack receiver gets the first deployment");

    // Deployment 2: a canary paused, then promoted; the Slack receiver is no longer in
    // the file and is sent nothing of it.
    let only_json = format!(
        r#"notifications:
  webhooks:
    - url: {}
      secret: "{{{{ secret('hook') }}}}""#,
        json.url
    );
    fleet.rewrite(&webhook_fleet(r#", "--name", "v2""#, &only_json));
    let deploy = fleet.deploy_in_background();
    super::canary::wait_for_promote(&fleet);
    let paused = fleet.mcpfleet(&["pause", "api"]);
    assert!(paused.status.success(), "{}", text(&paused));
    let promoted = fleet.mcpfleet(&["promote", "api"]);
    assert!(promoted.status.success(), "{}", text(&promoted));
    let deployed = deploy.join().unwrap();
    assert!(deployed.status.success(), "{}", text(&deployed));

    // started (500, then again), succeeded; started, step, paused, promoted, succeeded.
    let seen = json.wait_for(8, "every event of both deployments");
    let events: Vec<&str> = seen.iter().map(|r| r.event.as_str()).collect();
    assert_eq!(
        events,
        [
            "started",
            "started",
            "succeeded",
            "started",
            "step",
            "paused",
            "promoted",
            "succeeded"
        ],
        "{seen:#?}"
    );
    assert_eq!(seen[0].body, seen[1].body, "the retry is the same delivery");
    for received in &seen {
        assert_eq!(
            received.signature.as_deref(),
            Some(openssl_signature(KEY, &received.timestamp, &received.body).as_str()),
            "{received:#?}"
        );
        let body: serde_json::Value = serde_json::from_str(&received.body).unwrap();
        assert_eq!(body["event"], received.event.as_str());
        assert_eq!(body["fleet"], "webhooks");
        assert!(body["time"].as_str().unwrap().ends_with('Z'), "{body}");
        assert!(body["message"].is_string(), "{body}");
    }
    let step: serde_json::Value = serde_json::from_str(&seen[4].body).unwrap();
    assert_eq!(
        (&step["server"], &step["revision"], &step["deployment"]),
        (&"api".into(), &2.into(), &2.into()),
        "{step}"
    );

    // The Slack receiver: one line of text per event, no signature (it has no secret),
    // and nothing from deployment 2.
    let slack_seen = slack.seen();
    assert_eq!(slack_seen.len(), 2, "{slack_seen:#?}");
    let started: serde_json::Value = serde_json::from_str(&slack_seen[0].body).unwrap();
    let line = started["text"].as_str().unwrap();
    assert!(
        line.starts_with("mcpfleet webhooks: started (deployment 1) at "),
        "{started}"
    );
    assert_eq!(started.as_object().unwrap().len(), 1, "{started}");
    assert_eq!(slack_seen[0].signature, None);

    // The key is in no file of the fleet's state (the revisions keep the reference).
    for file in std::fs::read_dir(fleet.state_dir()).unwrap() {
        let path = file.unwrap().path();
        if let Ok(bytes) = std::fs::read(&path) {
            assert!(
                !String::from_utf8_lossy(&bytes).contains(KEY),
                "{} holds the webhook key",
                path.display()
            );
        }
    }
}

#[test]
fn a_receiver_that_never_answers_does_not_slow_a_deployment() {
    let hanging = Receiver::start(Answer::Never);
    let notifications = format!(
        "notifications:\n  webhooks:\n    - url: {}\n      secret: \"{{{{ secret('hook') }}}}\"\n      timeout: 5m",
        hanging.url
    );
    let yaml = webhook_fleet("", &notifications).replace(
        "    rollout:\n      strategy: canary\n      steps: [{ weight: 50, pause: {} }]\n",
        "",
    );
    let fleet = Fleet::new("webhooks-hang", &yaml).with_env("WEBHOOK_KEY", KEY);
    let started = Instant::now();
    let out = fleet.up();
    assert!(out.status.success(), "{}", text(&out));
    // `started` is sent and held unanswered; `succeeded` waits behind it, not the fleet.
    let seen = hanging.wait_for(1, "the receiver is sent `started`");
    assert_eq!(seen[0].event, "started");
    fleet.rewrite(&yaml.replace(r#""echo""#, r#""echo,whoami""#));
    let deployed = fleet.mcpfleet(&["deploy"]);
    assert!(deployed.status.success(), "{}", text(&deployed));
    let took = started.elapsed();
    assert!(
        took < Duration::from_secs(60),
        "two deployments took {took:?} with a receiver that never answers"
    );
    assert_eq!(
        hanging.seen().len(),
        1,
        "the queue went on past a hung request"
    );
}
