//! `gateway.session_keys`: the keys that seal session ids so gateway replicas serve one
//! another's sessions — each from a secret, never written in the file.

mod common;
use common::FixedHost;
use fleet_spec::{Checked, LoadOptions, load_str};
use std::path::PathBuf;
use std::sync::Arc;

fn check(text: &str) -> Checked {
    let options = LoadOptions {
        environment: None,
        host: Arc::new(FixedHost(vec![(
            "SESSION_KEY",
            "k3y-value-0123456789abcdef0123456789",
        )])),
    };
    load_str("f.yaml", text, PathBuf::from("/srv/fleet"), &options)
}

const HEAD: &str = "version: 1\nname: tools\nsecrets:\n  session_key: { env: SESSION_KEY }\n  old_key: { env: SESSION_KEY }\nservers:\n  echo:\n    stdio: { command: echo }\n";

#[test]
fn session_keys_come_from_secrets_and_stay_hidden() {
    let text = format!(
        "{HEAD}gateway:\n  session_keys:\n    - \"{{{{ secret('session_key') }}}}\"\n    - \"{{{{ secret('old_key') }}}}\"\n"
    );
    let checked = check(&text);
    assert_eq!(checked.diagnostics, vec![], "{:#?}", checked.diagnostics);
    let fleet = checked.into_valid().unwrap();
    assert_eq!(
        fleet.gateway.session_keys.len(),
        2,
        "in order: the first seals"
    );
    assert_eq!(
        fleet.gateway.session_key_secrets.iter().collect::<Vec<_>>(),
        ["old_key", "session_key"]
    );
    let json = serde_json::to_string(&fleet).unwrap();
    assert!(!json.contains("k3y-value"), "a key leaked: {json}");
    assert!(
        json.contains("\"session_keys\":[\"***\",\"***\"]"),
        "{json}"
    );
}

#[test]
fn a_session_key_written_in_the_file_is_a_located_error() {
    let text = format!("{HEAD}gateway:\n  session_keys: [\"0123456789abcdef0123456789abcdef\"]\n");
    let checked = check(&text);
    let error = checked
        .diagnostics
        .iter()
        .find(|d| d.message.contains("session key is written in the file"))
        .unwrap_or_else(|| panic!("{:#?}", checked.diagnostics));
    let span = error.span.expect("located");
    assert_eq!((span.line, span.column), (10, 18));
    assert!(
        error.help.as_deref().unwrap().contains("secret("),
        "{error:?}"
    );
}
