//! The fleet file's `admin:` block: its tokens, checked like gateway tokens and kept apart
//! from them, every mistake a located error (golden file in `admin/`).

mod common;
use common::FixedHost;
use fleet_spec::diag::render_all;
use fleet_spec::model::AdminTokenRef;
use fleet_spec::{Checked, LoadOptions, load_str};
use std::path::PathBuf;
use std::sync::Arc;

fn check(text: &str) -> Checked {
    let options = LoadOptions {
        environment: None,
        host: Arc::new(FixedHost(vec![])),
    };
    load_str("f.yaml", text, PathBuf::from("/srv/fleet"), &options)
}

const SERVERS: &str = "servers:\n  echo:\n    stdio: { command: echo }\n";
const HASH_A: &str = "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa";
const HASH_B: &str = "bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb";

#[test]
fn admin_tokens_are_read_by_name_and_hash_beside_the_listener() {
    let text = format!(
        "version: 1\nname: tools\nadmin:\n  listen: 127.0.0.1:0\n  tokens:\n    - {{ name: ops, sha256: \"{HASH_A}\" }}\n    - {{ name: oncall, sha256: \"{HASH_B}\" }}\n{SERVERS}"
    );
    let checked = check(&text);
    assert_eq!(checked.diagnostics, vec![], "{:#?}", checked.diagnostics);
    let fleet = checked.into_valid().unwrap();
    assert_eq!(
        fleet.admin.tokens,
        [
            AdminTokenRef {
                name: "ops".into(),
                sha256: HASH_A.into()
            },
            AdminTokenRef {
                name: "oncall".into(),
                sha256: HASH_B.into()
            },
        ]
    );
    assert!(
        fleet.gateway.tokens.is_empty(),
        "an admin token is no gateway token"
    );
}

#[test]
fn a_fleet_without_admin_tokens_serializes_its_settings_as_before() {
    // A running control plane compares these settings with a deployment's: a key that
    // appeared from nowhere would ask for a restart.
    let fleet = check(&format!(
        "version: 1\nname: tools\nadmin: {{ listen: 127.0.0.1:0 }}\n{SERVERS}"
    ))
    .into_valid()
    .unwrap();
    let json = serde_json::to_value(&fleet.admin).unwrap();
    assert_eq!(json, serde_json::json!({ "listen": "127.0.0.1:0" }));
}

#[test]
fn every_admin_token_mistake_is_located() {
    let text = format!(
        "version: 1
name: tools
gateway:
  auth:
    tokens:
      - {{ name: ci, sha256: \"{HASH_A}\", servers: [\"*\"] }}
admin:
  listen: 127.0.0.1:7471
  tokens:
    - {{ name: ops, sha256: \"{HASH_B}\" }}
    - {{ name: ops, sha256: \"{}\" }}
    - {{ name: short, sha256: abc123 }}
    - {{ name: upper, sha256: \"{}\" }}
    - {{ name: reused, sha256: \"{HASH_A}\" }}
    - {{ name: scoped, sha256: \"{HASH_B}\", servers: [echo] }}
{SERVERS}",
        "c".repeat(64),
        "D".repeat(64),
    );
    let checked = check(&text);
    insta::with_settings!({ snapshot_path => "admin", prepend_module_to_snapshot => false }, {
        insta::assert_snapshot!("invalid_admin_tokens", render_all(&checked.diagnostics, &checked.source));
    });
    let located: Vec<(u32, &str)> = checked
        .diagnostics
        .iter()
        .map(|d| (d.span.expect("located").line, d.message.as_str()))
        .collect();
    assert_eq!(
        located,
        [
            (11, "duplicate token name `ops`"),
            (12, "`sha256` must be 64 lowercase hex characters"),
            (13, "`sha256` must be 64 lowercase hex characters"),
            (14, "admin token `reused` is also gateway token `ci`"),
            (15, "unknown key `servers`"),
        ]
    );
    let help = checked.diagnostics[1].help.as_deref().unwrap_or_default();
    assert!(
        help.contains("mcpfleet token create NAME --admin"),
        "{help}"
    );
}

#[test]
fn admin_tokens_without_a_listener_are_a_warning() {
    let checked = check(&format!(
        "version: 1\nname: tools\nadmin:\n  tokens: [{{ name: ops, sha256: \"{HASH_A}\" }}]\n{SERVERS}"
    ));
    let found: Vec<(u32, bool, &str)> = checked
        .diagnostics
        .iter()
        .map(|d| {
            (
                d.span.expect("located").line,
                d.is_error(),
                d.message.as_str(),
            )
        })
        .collect();
    assert_eq!(
        found,
        [(
            4,
            false,
            "admin tokens without `admin.listen` are never asked for"
        )]
    );
}
