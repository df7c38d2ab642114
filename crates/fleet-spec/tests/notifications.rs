//! The fleet file's `notifications:` block: webhook receivers normalized with their
//! defaults and secrets hidden, and every mistake a located error (golden file in
//! `notifications/`).

mod common;
use common::FixedHost;
use fleet_spec::diag::render_all;
use fleet_spec::model::{WebhookEvent, WebhookFormat};
use fleet_spec::{Checked, LoadOptions, load_str};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

fn check(text: &str) -> Checked {
    let options = LoadOptions {
        environment: None,
        host: Arc::new(FixedHost(vec![("HOOK_KEY", "s3cr3t-value")])),
    };
    load_str("f.yaml", text, PathBuf::from("/srv/fleet"), &options)
}

const SERVERS: &str = "servers:\n  echo:\n    stdio: { command: echo }\n";

#[test]
fn a_webhook_gets_every_event_json_and_ten_seconds_unless_it_says_otherwise() {
    let text = format!(
        "version: 1\nname: tools\nsecrets:\n  hook: {{ env: HOOK_KEY }}\nnotifications:\n  webhooks:\n    - url: https://hooks.example.com/a\n      secret: \"{{{{ secret('hook') }}}}\"\n    - url: \"https://hooks.slack.com/services/{{{{ secret('hook') }}}}\"\n      events: [failed, started, failed]\n      format: slack\n      timeout: 3s\n{SERVERS}"
    );
    let checked = check(&text);
    assert_eq!(checked.diagnostics, vec![], "{:#?}", checked.diagnostics);
    let fleet = checked.into_valid().unwrap();
    let [first, slack] = &fleet.notifications.webhooks[..] else {
        panic!("{:#?}", fleet.notifications);
    };
    assert_eq!(first.url.shown, "https://hooks.example.com/a");
    assert_eq!(first.events, WebhookEvent::ALL);
    assert_eq!(
        (first.format, first.timeout),
        (WebhookFormat::Json, Duration::from_secs(10))
    );
    assert_eq!(first.secret.as_ref().unwrap().shown, "***");
    // Listed events once each, in their own order; a URL holding a secret shows it hidden.
    assert_eq!(slack.events, [WebhookEvent::Started, WebhookEvent::Failed]);
    assert_eq!(slack.url.shown, "https://hooks.slack.com/services/***");
    assert_eq!(
        (slack.format, slack.timeout),
        (WebhookFormat::Slack, Duration::from_secs(3))
    );
    let json = serde_json::to_string(&fleet).unwrap();
    assert!(!json.contains("s3cr3t-value"), "a secret leaked: {json}");
}

#[test]
fn a_fleet_without_notifications_serializes_as_before() {
    let fleet = check(&format!("version: 1\nname: tools\n{SERVERS}"))
        .into_valid()
        .unwrap();
    assert!(fleet.notifications.is_empty());
    let json = serde_json::to_value(&fleet).unwrap();
    assert!(json.get("notifications").is_none(), "{json}");
}

#[test]
fn every_webhook_mistake_is_located() {
    let text = "version: 1
name: tools
secrets:
  hook: { env: HOOK_KEY }
notifications:
  webhooks:
    - url: ftp://hooks.example.com/a
      secret: \"{{ secret('hook') }}\"
    - url: http://hooks.example.com/plain
      secret: written-in-the-file
    - secret: \"{{ secret('hook') }}\"
    - url: https://hooks.example.com/b
      events: []
    - url: https://hooks.example.com/c
      events: [started, rolledback]
    - url: https://hooks.example.com/d
      format: teams
    - url: https://hooks.example.com/e
      timeout: soon
servers:
  echo:
    stdio: { command: echo }
";
    let checked = check(text);
    insta::with_settings!({ snapshot_path => "notifications", prepend_module_to_snapshot => false }, {
        insta::assert_snapshot!("invalid_webhooks", render_all(&checked.diagnostics, &checked.source));
    });
    let located: Vec<(u32, bool)> = checked
        .diagnostics
        .iter()
        .map(|d| (d.span.expect("located").line, d.is_error()))
        .collect();
    for (line, error) in [
        (7, true),  // ftp
        (9, false), // plain http to another host: a warning
        (10, true), // a key in the file
        (11, true), // no url
        (12, true), // no events
        (15, true), // unknown event
        (17, true), // unknown format
        (19, true), // bad duration
    ] {
        assert!(
            located.contains(&(line, error)),
            "line {line} (error: {error}) not reported: {located:?}"
        );
    }
}
