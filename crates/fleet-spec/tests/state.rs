//! The fleet file's `state:` block: where the control plane keeps its state store, its
//! URL's password only ever from a secret, every mistake a located error (golden file in
//! `state/`).

mod common;
use common::FixedHost;
use fleet_spec::diag::render_all;
use fleet_spec::{Checked, LoadOptions, load_str};
use std::path::PathBuf;
use std::sync::Arc;

fn check(text: &str, environment: Option<&str>) -> Checked {
    let options = LoadOptions {
        environment: environment.map(str::to_owned),
        host: Arc::new(FixedHost(vec![("DB_PASSWORD", "s3cr3t-value")])),
    };
    load_str("f.yaml", text, PathBuf::from("/srv/fleet"), &options)
}

const SERVERS: &str = "servers:\n  echo:\n    stdio: { command: echo }\n";

#[test]
fn a_postgres_store_keeps_its_password_hidden() {
    let text = format!(
        "version: 1\nname: tools\nsecrets:\n  db_password: {{ env: DB_PASSWORD }}\nstate:\n  postgres:\n    url: \"postgres://mcpfleet:{{{{ secret('db_password') }}}}@db.internal:5432/mcpfleet?sslmode=require\"\n{SERVERS}"
    );
    let checked = check(&text, None);
    assert_eq!(checked.diagnostics, vec![], "{:#?}", checked.diagnostics);
    let fleet = checked.into_valid().unwrap();
    let postgres = fleet.state.postgres.as_ref().expect("a postgres store");
    assert_eq!(
        postgres.url.shown,
        "postgres://mcpfleet:***@db.internal:5432/mcpfleet?sslmode=require"
    );
    // What a control plane elsewhere (a rendered pod) must be given to connect, and where
    // to point when it cannot be.
    assert_eq!(postgres.secrets.iter().collect::<Vec<_>>(), ["db_password"]);
    assert_eq!((postgres.span.line, postgres.span.column), (7, 10));
    let json = serde_json::to_string(&fleet).unwrap();
    assert!(!json.contains("s3cr3t-value"), "a secret leaked: {json}");
    assert!(json.contains("\"state\""), "{json}");
    assert_eq!(
        postgres.lease,
        std::time::Duration::from_secs(15),
        "the default"
    );
}

#[test]
fn without_a_state_block_the_store_is_the_state_directory_and_serializes_as_before() {
    let fleet = check(&format!("version: 1\nname: tools\n{SERVERS}"), None)
        .into_valid()
        .unwrap();
    assert!(fleet.state.is_local());
    let json = serde_json::to_value(&fleet).unwrap();
    assert!(json.get("state").is_none(), "{json}");
}

#[test]
fn an_environment_moves_the_store_to_postgres() {
    let text = format!(
        "version: 1\nname: tools\nenvironments:\n  production:\n    state:\n      postgres: {{ url: \"postgres://mcpfleet@db/mcpfleet\" }}\n{SERVERS}"
    );
    let dev = check(&text, None).into_valid().unwrap();
    assert!(dev.state.is_local());
    let production = check(&text, Some("production")).into_valid().unwrap();
    assert_eq!(
        production.state.postgres.map(|p| p.url.shown),
        Some("postgres://mcpfleet@db/mcpfleet".to_owned())
    );
}

#[test]
fn every_state_mistake_is_located() {
    let text = "version: 1
name: tools
state:
  postgres:
    url: postgres://mcpfleet:hunter2@db/mcpfleet
environments:
  a:
    state:
      postgres: { url: \"mysql://db/x\" }
  b:
    state:
      sqlite: state.db
servers:
  echo:
    stdio: { command: echo }
";
    let base = check(text, None);
    // The password is shown only as the file's own line, never repeated by a message.
    for d in &base.diagnostics {
        let said = format!("{} {:?} {:?}", d.message, d.label, d.help);
        assert!(!said.contains("hunter2"), "{said}");
    }
    let with_a = check(text, Some("a"));
    let without_url = check(
        &format!("version: 1\nname: tools\nstate:\n  postgres: {{}}\n{SERVERS}"),
        None,
    );
    let short_lease = check(
        &format!(
            "version: 1\nname: tools\nstate:\n  postgres:\n    url: postgres://u@db/x\n    lease: 300ms\n{SERVERS}"
        ),
        None,
    );
    let rendered = [&base, &with_a, &without_url, &short_lease]
        .map(|c| render_all(&c.diagnostics, &c.source))
        .join("---\n");
    insta::with_settings!({ snapshot_path => "state", prepend_module_to_snapshot => false }, {
        insta::assert_snapshot!("invalid_state", rendered);
    });
    let errors = |checked: &Checked| -> Vec<u32> {
        checked
            .diagnostics
            .iter()
            .filter(|d| d.is_error())
            .map(|d| d.span.expect("located").line)
            .collect()
    };
    // The unknown key of environment `b` is an error whichever environment is chosen.
    assert_eq!(errors(&base), [5, 12]);
    assert_eq!(errors(&with_a), [9, 12]);
    assert_eq!(errors(&without_url), [4]);
    assert_eq!(errors(&short_lease), [6]);
}
