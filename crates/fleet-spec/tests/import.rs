//! `mcpfleet import`: client configurations become fleet files that validate, keep every
//! command, argument, variable and URL, and never contain a secret value.

use fleet_spec::ValidFleet;
use fleet_spec::import::{ClientKind, ImportError, Imported, STARTER, import};
use fleet_spec::model::{Command, Executable, Isolation, SecretRef, Text, Transport};
use fleet_spec::{LoadOptions, load_str};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// Literal credentials in the fixtures; none may survive an import.
const FIXTURE_SECRETS: &[&str] = &[
    "ghp_R8xTq2VmK9wLp4ZsN7cYd1FbJ6hUe3AoG5iM",
    "BSAx7Kd0Qm2Lr9Tz4Wv8Np1Ys6Hc3Fg",
    "lin_api_Wq4Zr8Tx2Mv6Kp0Ls3Nd7Hb1Yc9Fj5Ga",
    "Sup3rS3cretPw",
    "xoxb-2231-9845-Zx7QpLm3Rt",
];

/// The local program a command runs; imports never produce images.
fn program(command: &Command) -> &str {
    match &command.executable {
        Executable::Program { command } => &command.shown,
        Executable::Image { image, .. } => panic!("imported an image `{}`", image.shown),
    }
}

fn fixture(name: &str) -> String {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/import")
        .join(name);
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// Loads an imported fleet file the way `mcpfleet validate` would; only warnings (secrets
/// whose variables are unset here) are tolerated.
fn validate(imported: &Imported) -> ValidFleet {
    let checked = load_str(
        "imported.yaml",
        &imported.yaml,
        PathBuf::from("."),
        &LoadOptions::default(),
    );
    let errors: Vec<String> = checked
        .diagnostics
        .iter()
        .filter(|d| d.is_error())
        .map(|d| d.render(&checked.source))
        .collect();
    assert!(
        checked.is_valid(),
        "{}\n--- imported ---\n{}",
        errors.join("\n"),
        imported.yaml
    );
    checked.into_valid().expect("valid")
}

fn assert_no_secret_leaks(imported: &Imported) {
    for secret in FIXTURE_SECRETS {
        assert!(
            !imported.yaml.contains(secret),
            "secret value in the YAML:\n{}",
            imported.yaml
        );
        for note in &imported.notes {
            assert!(!note.contains(secret), "secret value in a note: {note}");
        }
    }
}

fn shown(texts: &[Text]) -> Vec<&str> {
    texts.iter().map(|t| t.shown.as_str()).collect()
}

fn shown_map(map: &BTreeMap<String, Text>) -> BTreeMap<&str, &str> {
    map.iter()
        .map(|(k, v)| (k.as_str(), v.shown.as_str()))
        .collect()
}

/// Compares every server of a `mcpServers` configuration with its imported form: commands,
/// arguments and non-secret values literally; secret values (by the keys listed) as `***`.
fn assert_round_trip(
    input: &str,
    fleet: &ValidFleet,
    names: &[(&str, &str)],
    secret_keys: &[&str],
) {
    let input: serde_json::Value = serde_json::from_str(input).expect("fixture is JSON");
    assert_eq!(
        fleet
            .servers
            .iter()
            .map(|s| s.name.as_str())
            .collect::<Vec<_>>(),
        names
            .iter()
            .map(|(_, fleet_name)| *fleet_name)
            .collect::<Vec<_>>(),
        "servers in input order"
    );
    let expected_value = |key: &str, value: &serde_json::Value| -> String {
        let value = value.as_str().expect("string value");
        if !secret_keys.contains(&key) {
            value.to_string()
        } else if let Some(rest) = value.strip_prefix("Bearer ") {
            assert!(!rest.is_empty());
            "Bearer ***".to_string()
        } else {
            "***".to_string()
        }
    };
    for (original, fleet_name) in names {
        let entry = &input["mcpServers"][original];
        let server = fleet
            .server(fleet_name)
            .unwrap_or_else(|| panic!("no server `{fleet_name}`"));
        match &server.transport {
            Transport::Stdio { command, isolation } => {
                assert_eq!(*isolation, Isolation::default(), "{fleet_name}");
                assert_eq!(
                    program(command),
                    entry["command"].as_str().unwrap(),
                    "{fleet_name}"
                );
                let args: Vec<&str> = entry["args"]
                    .as_array()
                    .map(|a| a.iter().map(|v| v.as_str().unwrap()).collect())
                    .unwrap_or_default();
                assert_eq!(shown(&command.args), args, "{fleet_name}");
                let env: BTreeMap<String, String> = entry["env"]
                    .as_object()
                    .map(|m| {
                        m.iter()
                            .map(|(k, v)| (k.clone(), expected_value(k, v)))
                            .collect()
                    })
                    .unwrap_or_default();
                let got: BTreeMap<String, String> = command
                    .env
                    .iter()
                    .map(|(k, v)| (k.clone(), v.shown.clone()))
                    .collect();
                assert_eq!(got, env, "{fleet_name}");
            }
            Transport::Remote { url, headers } => {
                assert_eq!(url.shown, entry["url"].as_str().unwrap(), "{fleet_name}");
                let expected: BTreeMap<String, String> = entry["headers"]
                    .as_object()
                    .map(|m| {
                        m.iter()
                            .map(|(k, v)| (k.clone(), expected_value(k, v)))
                            .collect()
                    })
                    .unwrap_or_default();
                let got: BTreeMap<String, String> = headers
                    .iter()
                    .map(|(k, v)| (k.clone(), v.shown.clone()))
                    .collect();
                assert_eq!(got, expected, "{fleet_name}");
            }
            Transport::Http { .. } => panic!("imports never create http servers"),
        }
    }
}

#[test]
fn claude_desktop_config_round_trips() {
    let input = fixture("claude_desktop_config.json");
    let imported = import(ClientKind::ClaudeDesktop, &input, "desktop").expect("imports");
    assert_no_secret_leaks(&imported);
    let fleet = validate(&imported);
    assert_eq!(fleet.name, "desktop");
    assert_round_trip(
        &input,
        &fleet,
        &[
            ("filesystem", "filesystem"),
            ("github", "github"),
            ("memory", "memory"),
            ("Brave Search", "brave-search"),
            ("linear", "linear"),
        ],
        &[
            "GITHUB_PERSONAL_ACCESS_TOKEN",
            "BRAVE_API_KEY",
            "Authorization",
        ],
    );
    assert_eq!(
        fleet.secrets,
        BTreeMap::from([
            (
                "github_personal_access_token".to_string(),
                SecretRef::Env("GITHUB_PERSONAL_ACCESS_TOKEN".into())
            ),
            (
                "brave_api_key".to_string(),
                SecretRef::Env("BRAVE_API_KEY".into())
            ),
            (
                "linear_authorization".to_string(),
                SecretRef::Env("LINEAR_AUTHORIZATION".into())
            ),
        ])
    );
    let notes = imported.notes.join("\n");
    assert!(
        notes.contains("set the environment variable GITHUB_PERSONAL_ACCESS_TOKEN"),
        "{notes}"
    );
    assert!(
        notes.contains("LINEAR_AUTHORIZATION to the part after `Bearer`"),
        "{notes}"
    );
    assert!(
        notes.contains("server `brave-search`: renamed from `Brave Search`"),
        "{notes}"
    );
}

#[test]
fn claude_desktop_yaml_is_stable() {
    let imported = import(
        ClientKind::ClaudeDesktop,
        &fixture("claude_desktop_config.json"),
        "desktop",
    )
    .expect("imports");
    let again = import(
        ClientKind::ClaudeDesktop,
        &fixture("claude_desktop_config.json"),
        "desktop",
    )
    .expect("imports");
    assert_eq!(imported, again, "deterministic");
    insta::with_settings!({ snapshot_path => "import/snapshots", prepend_module_to_snapshot => false }, {
        insta::assert_snapshot!("claude_desktop", imported.yaml);
    });
}

#[test]
fn cursor_config_round_trips() {
    let input = fixture("cursor_mcp.json");
    let imported = import(ClientKind::Cursor, &input, "cursor").expect("imports");
    assert_no_secret_leaks(&imported);
    let fleet = validate(&imported);
    // Compared by hand below: the URL password and the `${env:…}` header.
    let mut plain = serde_json::from_str::<serde_json::Value>(&input).unwrap();
    plain["mcpServers"]["postgres"]["env"]["DATABASE_URL"] =
        "postgresql://app:***@db.internal:5432/app".into();
    plain["mcpServers"]["context7"]["headers"]["CONTEXT7_API_KEY"] = "***".into();
    assert_round_trip(
        &plain.to_string(),
        &fleet,
        &[
            ("Sequential Thinking", "sequential-thinking"),
            ("postgres", "postgres"),
            ("slack", "slack"),
            ("context7", "context7"),
        ],
        &["SLACK_BOT_TOKEN"],
    );
    assert!(
        imported
            .yaml
            .contains("postgresql://app:{{ secret('postgres_database_url_password') }}@")
    );
    assert_eq!(
        fleet.secrets.get("context7_api_key"),
        Some(&SecretRef::Env("CONTEXT7_API_KEY".into())),
        "`${{env:…}}` under a secret key reads the same variable, as a secret"
    );
}

#[test]
fn vscode_mcp_json_with_comments_and_inputs() {
    let imported =
        import(ClientKind::Vscode, &fixture("vscode_mcp.json"), "workspace").expect("imports");
    let fleet = validate(&imported);
    let names: Vec<&str> = fleet.servers.iter().map(|s| s.name.as_str()).collect();
    assert_eq!(
        names,
        ["github", "perplexity", "notes", "docs", "legacy-events"]
    );

    let Transport::Stdio {
        command: github, ..
    } = &fleet.server("github").unwrap().transport
    else {
        panic!("stdio")
    };
    assert_eq!(program(github), "npx");
    assert_eq!(
        shown(&github.args),
        ["-y", "@modelcontextprotocol/server-github"]
    );
    assert_eq!(
        shown_map(&github.env),
        BTreeMap::from([
            ("GITHUB_PERSONAL_ACCESS_TOKEN", "***"),
            ("GITHUB_HOST", "https://github.com")
        ])
    );
    assert_eq!(
        github.env["GITHUB_PERSONAL_ACCESS_TOKEN"].template,
        "{{ secret('github_token') }}"
    );

    let Transport::Stdio {
        command: perplexity,
        ..
    } = &fleet.server("perplexity").unwrap().transport
    else {
        panic!()
    };
    assert_eq!(program(perplexity), "docker");
    assert_eq!(
        shown(&perplexity.args),
        [
            "run",
            "-i",
            "--rm",
            "-e",
            "PERPLEXITY_API_KEY",
            "mcp/perplexity-ask"
        ]
    );
    assert_eq!(
        shown_map(&perplexity.env),
        BTreeMap::from([("PERPLEXITY_API_KEY", "***")])
    );

    let Transport::Stdio { command: notes, .. } = &fleet.server("notes").unwrap().transport else {
        panic!()
    };
    let home = std::env::var("HOME").expect("HOME is set for tests");
    assert_eq!(
        shown(&notes.args),
        ["mcp-notes", "--root", &format!("{home}/notes")]
    );
    assert_eq!(notes.args[2].template, "{{ env('HOME') }}/notes");

    let Transport::Remote { url, headers } = &fleet.server("docs").unwrap().transport else {
        panic!()
    };
    assert_eq!(url.shown, "https://docs.example.com/mcp");
    assert_eq!(
        shown_map(headers),
        BTreeMap::from([("Authorization", "Bearer ***")])
    );
    let Transport::Remote { url, .. } = &fleet.server("legacy-events").unwrap().transport else {
        panic!()
    };
    assert_eq!(url.shown, "http://localhost:3001/sse");

    // One secret per input, shared by the servers that use it.
    assert_eq!(
        fleet.secrets,
        BTreeMap::from([
            (
                "github_token".to_string(),
                SecretRef::Env("GITHUB_TOKEN".into())
            ),
            (
                "perplexity_key".to_string(),
                SecretRef::Env("PERPLEXITY_KEY".into())
            ),
        ])
    );
    let notes = imported.notes.join("\n");
    for expected in [
        "`${input:github_token}` (`GitHub Personal Access Token`) is prompted for by VS Code",
        "set the environment variable PERPLEXITY_KEY",
        "server `perplexity`: `envFile` `${workspaceFolder}/.env` is not read by mcpfleet",
        "server `legacy-events`: is an SSE server (`type: sse`)",
        "`${env:HOME}` became {{ env('HOME') }}",
    ] {
        assert!(
            notes.contains(expected),
            "missing note {expected:?} in:\n{notes}"
        );
    }
    assert!(
        imported.yaml.contains("  # is an SSE server"),
        "notes are comments too:\n{}",
        imported.yaml
    );
}

#[test]
fn secrets_in_arguments_and_urls_are_moved_out() {
    let input = r#"{"mcpServers": {
        "remote-bridge": {
            "command": "npx",
            "args": ["mcp-remote", "https://mcp.example.com/mcp?api_key=k3yV4lue99&region=eu",
                     "--header", "Authorization: Bearer tok_8c1f2d3e4a5b",
                     "--api-key", "sk-live-0a1b2c3d4e5f",
                     "--token=ghp_R8xTq2VmK9wLp4ZsN7cYd1FbJ6hUe3AoG5iM",
                     "--header", "Authorization:${AUTH_TOKEN}"]
        }
    }}"#;
    let imported = import(ClientKind::ClaudeDesktop, input, "bridge").expect("imports");
    let fleet = validate(&imported);
    for literal in [
        "k3yV4lue99",
        "tok_8c1f2d3e4a5b",
        "sk-live-0a1b2c3d4e5f",
        "ghp_R8xTq2",
    ] {
        assert!(
            !imported.yaml.contains(literal),
            "{literal} leaked:\n{}",
            imported.yaml
        );
        assert!(!imported.notes.join("\n").contains(literal));
    }
    let Transport::Stdio { command, .. } = &fleet.servers[0].transport else {
        panic!()
    };
    assert_eq!(
        shown(&command.args),
        [
            "mcp-remote",
            "https://mcp.example.com/mcp?api_key=***&region=eu",
            "--header",
            "Authorization: Bearer ***",
            "--api-key",
            "***",
            "--token=***",
            "--header",
            "Authorization:${AUTH_TOKEN}",
        ]
    );
    assert_eq!(fleet.secrets.len(), 4);
}

#[test]
fn names_are_made_valid_and_unique() {
    let input = r#"{"mcpServers": {
        "Memory": {"command": "npx", "args": ["-y", "@modelcontextprotocol/server-memory"]},
        "memory": {"command": "npx", "args": ["-y", "@modelcontextprotocol/server-memory"]},
        "@acme/tools.v2": {"command": "acme-tools"},
        "---": {"command": "x"}
    }}"#;
    let imported = import(ClientKind::Cursor, input, "My Fleet!").expect("imports");
    let fleet = validate(&imported);
    assert_eq!(fleet.name, "my-fleet");
    let names: Vec<&str> = fleet.servers.iter().map(|s| s.name.as_str()).collect();
    assert_eq!(names, ["memory", "memory-2", "acme-tools-v2", "server"]);
    let notes = imported.notes.join("\n");
    assert!(
        notes.contains("server `memory-2`: renamed from `memory`: `memory` was already taken"),
        "{notes}"
    );
    assert!(
        notes.contains("server `acme-tools-v2`: renamed from `@acme/tools.v2`"),
        "{notes}"
    );
    assert!(
        notes.contains("the fleet is named `my-fleet` instead of `My Fleet!`"),
        "{notes}"
    );
}

#[test]
fn template_syntax_in_imported_strings_stays_literal() {
    let nasty = [
        "{{ env('HOME') }}",
        "{% raw %}",
        "{#",
        "{{{",
        "a}}b",
        "${input:x}",
        "\"quoted\"\n\\",
    ];
    let input =
        serde_json::json!({ "mcpServers": { "echo": { "command": "echo", "args": nasty } } });
    let imported = import(ClientKind::ClaudeDesktop, &input.to_string(), "echo").expect("imports");
    let fleet = validate(&imported);
    let Transport::Stdio { command, .. } = &fleet.servers[0].transport else {
        panic!()
    };
    assert_eq!(shown(&command.args), nasty, "{}", imported.yaml);
}

#[test]
fn unsupported_settings_are_noted_not_dropped() {
    let input = r#"{"mcpServers": {
        "tools": {"command": "tools", "cwd": "./srv", "disabled": true, "autoApprove": ["x"],
                  "timeout": 60, "headers": {"X": "y"}},
        "shell-line": {"command": "python -m my_server"}
    }}"#;
    let imported = import(ClientKind::Cursor, input, "f").expect("imports");
    let fleet = validate(&imported);
    let notes = imported.notes.join("\n");
    assert!(
        notes.contains("server `tools`: is disabled in Cursor"),
        "{notes}"
    );
    assert!(
        notes.contains(
            "not carried over (no fleet-file equivalent here): `autoApprove`, `timeout`, `headers`"
        ),
        "{notes}"
    );
    assert!(notes.contains("`cwd` `./srv` is relative"), "{notes}");
    let Transport::Stdio { command: shell, .. } = &fleet.server("shell-line").unwrap().transport
    else {
        panic!()
    };
    assert_eq!(program(shell), "python");
    assert_eq!(shown(&shell.args), ["-m", "my_server"]);
}

#[test]
fn invalid_json_reports_line_and_column() {
    let err = import(
        ClientKind::ClaudeDesktop,
        "{\n  \"mcpServers\": {\n    \"a\" {}\n  }\n}",
        "f",
    )
    .unwrap_err();
    let ImportError::InvalidJson { line, column, .. } = &err else {
        panic!("{err:?}")
    };
    assert_eq!((*line, *column), (3, 9), "{err}");
    assert!(
        err.to_string()
            .starts_with("invalid JSON at line 3, column 9: expected `:`"),
        "{err}"
    );
}

#[test]
fn comments_keep_error_positions() {
    let err = import(
        ClientKind::Vscode,
        "// héllo wörld\n{ \"servers\": { /* x */ \"a\": } }",
        "f",
    )
    .unwrap_err();
    assert!(
        matches!(
            err,
            ImportError::InvalidJson {
                line: 2,
                column: 29,
                ..
            }
        ),
        "{err:?}"
    );
}

#[test]
fn missing_server_table_names_the_expected_key() {
    let err = import(ClientKind::ClaudeDesktop, &fixture("vscode_mcp.json"), "f").unwrap_err();
    assert_eq!(
        err,
        ImportError::MissingServers {
            client: ClientKind::ClaudeDesktop,
            expected: "mcpServers",
            found: "its top-level keys are `inputs`, `servers`; `servers` is where VS Code keeps them: try `mcpfleet import vscode`".into(),
        }
    );
    let err = import(ClientKind::Vscode, &fixture("cursor_mcp.json"), "f").unwrap_err();
    let message = err.to_string();
    assert!(
        message.starts_with("a VS Code configuration keeps its servers under `servers`"),
        "{message}"
    );
    assert!(
        message.contains("try `mcpfleet import claude-desktop` or `cursor`"),
        "{message}"
    );
    let err = import(ClientKind::Cursor, "[]", "f").unwrap_err();
    assert!(
        err.to_string()
            .ends_with("but the file holds an array, not an object"),
        "{err}"
    );
}

#[test]
fn entry_without_command_or_url_is_named() {
    let input = r#"{"mcpServers": {"ok": {"command": "x"}, "broken": {"args": ["--stdio"]}}}"#;
    let err = import(ClientKind::Cursor, input, "f").unwrap_err();
    assert_eq!(
        err,
        ImportError::NoTransport {
            server: "broken".into()
        }
    );
    assert!(
        err.to_string()
            .contains("server `broken` has neither `command` nor `url`")
    );
}

#[test]
fn values_of_the_wrong_type_are_located() {
    let input = r#"{"mcpServers": {"x": {"command": "a", "args": ["ok", {"no": 1}]}}}"#;
    let err = import(ClientKind::ClaudeDesktop, input, "f").unwrap_err();
    assert_eq!(
        err,
        ImportError::WrongType {
            path: "mcpServers.x.args[1]".into(),
            expected: "a string",
            found: "an object"
        }
    );
    let err = import(ClientKind::Vscode, r#"{"servers": []}"#, "f").unwrap_err();
    assert_eq!(
        err.to_string(),
        "`servers` must be an object of servers by name, but it is an array"
    );
}

#[test]
fn vscode_settings_json_nests_servers_under_mcp() {
    let input = r#"{"editor.fontSize": 14, "mcp": {"servers": {"time": {"command": "uvx", "args": ["mcp-server-time"]}}}}"#;
    let fleet = validate(&import(ClientKind::Vscode, input, "f").expect("imports"));
    assert_eq!(fleet.servers[0].name, "time");
}

#[test]
fn client_kinds_parse_from_their_cli_names() {
    for kind in ClientKind::ALL {
        assert_eq!(kind.name().parse::<ClientKind>(), Ok(kind));
        assert_eq!(kind.to_string(), kind.name());
    }
    let err = "claude".parse::<ClientKind>().unwrap_err();
    assert_eq!(
        err.to_string(),
        "unknown client `claude`; expected one of: claude-desktop, vscode, cursor"
    );
}

#[test]
fn starter_validates() {
    let checked = load_str(
        "mcpfleet.yaml",
        STARTER,
        PathBuf::from("."),
        &LoadOptions::default(),
    );
    let rendered: Vec<String> = checked
        .diagnostics
        .iter()
        .map(|d| d.render(&checked.source))
        .collect();
    assert!(
        checked.diagnostics.iter().all(|d| !d.is_error()),
        "{}",
        rendered.join("\n")
    );
    assert!(checked.diagnostics.len() <= 1, "{}", rendered.join("\n"));
    let fleet = checked.into_valid().expect("valid");
    let memory = fleet.server("memory").expect("memory server");
    assert_eq!(
        memory.health.mcp.expect_tools,
        ["create_entities", "read_graph"]
    );
    assert!(
        matches!(&memory.transport, Transport::Stdio { command: c, .. } if program(c) == "npx")
    );
}

#[test]
fn hostile_strings_cannot_break_out_of_the_yaml() {
    let input = serde_json::json!({ "mcpServers": {
        "evil\n  injected:\n    remote: {url: http://x}": {
            "command": "run\u{7f}\u{202e}",
            "args": ["--x\r\n- y", "# not a comment", "\u{2028}"],
            "env": { "KEY\nB": "v\u{85}", "true": "1", "123": "n" }
        }
    }});
    let imported = import(ClientKind::ClaudeDesktop, &input.to_string(), "f").expect("imports");
    let fleet = validate(&imported);
    assert_eq!(fleet.servers.len(), 1, "{}", imported.yaml);
    let server = &fleet.servers[0];
    assert_eq!(server.name, "evil-injected-remote-url-http-x");
    let Transport::Stdio { command, .. } = &server.transport else {
        panic!("{}", imported.yaml)
    };
    assert_eq!(program(command), "run\u{7f}\u{202e}");
    assert_eq!(
        shown(&command.args),
        ["--x\r\n- y", "# not a comment", "\u{2028}"]
    );
    assert_eq!(command.env["true"].shown, "1");
    assert_eq!(command.env["123"].shown, "n");
    // KEY\nB looks secret (contains KEY): its value is a reference, and the odd name survives.
    assert_eq!(command.env["KEY\nB"].shown, "***");
    assert!(
        imported.notes.iter().all(|n| !n.contains('\n')),
        "{:?}",
        imported.notes
    );
    assert!(
        imported
            .yaml
            .lines()
            .all(|l| l.chars().all(|c| !c.is_control() && c != '\u{202e}'))
    );
}

/// Issue 14, item 8: a secret keeps the variable name the user gave it (Claude Desktop's
/// `API_KEY` stays `API_KEY`, as VS Code's `${input:api-key}` becomes `API_KEY`); only a
/// second, different secret under the same name gets its server's name in front. The
/// import lists every variable to export with the servers that read it.
#[test]
fn secrets_keep_the_users_variable_names_and_are_prefixed_only_on_a_clash() {
    let input = r#"{"mcpServers": {
        "everything": {"command": "npx", "args": ["server-everything"],
                       "env": {"API_KEY": "Zk4Lq9Wm2Xr7Tp1Vn8Hs3Jd6Fb0Gc5Ya"}},
        "search": {"command": "npx", "args": ["server-search"],
                   "env": {"API_KEY": "Qw8Er5Ty2Ui9Op4As7Df1Gh6Jk3Lz0Xc"}},
        "docs": {"url": "https://docs.example/mcp",
                 "headers": {"Authorization": "Bearer Mn3Bv6Cx9Za2Sd5Fg8Hj1Kl4Qw7Er0Ty"}}
    }}"#;
    let imported = import(ClientKind::ClaudeDesktop, input, "team").expect("imports");
    let fleet = validate(&imported);
    assert_eq!(
        fleet.secrets,
        BTreeMap::from([
            ("api_key".to_string(), SecretRef::Env("API_KEY".into())),
            (
                "search_api_key".to_string(),
                SecretRef::Env("SEARCH_API_KEY".into())
            ),
            (
                "docs_authorization".to_string(),
                SecretRef::Env("DOCS_AUTHORIZATION".into())
            ),
        ]),
        "{}",
        imported.yaml
    );
    let listed: Vec<(&str, &str, Vec<&str>)> = imported
        .secrets
        .iter()
        .map(|s| {
            let servers = s.servers.iter().map(String::as_str).collect();
            (s.name.as_str(), s.env.as_str(), servers)
        })
        .collect();
    assert_eq!(
        listed,
        [
            ("api_key", "API_KEY", vec!["everything"]),
            ("search_api_key", "SEARCH_API_KEY", vec!["search"]),
            ("docs_authorization", "DOCS_AUTHORIZATION", vec!["docs"]),
        ]
    );
    for value in [
        "Zk4Lq9Wm2Xr7Tp1Vn8Hs3Jd6Fb0Gc5Ya",
        "Qw8Er5Ty2Ui9Op4As7Df1Gh6Jk3Lz0Xc",
        "Mn3Bv6Cx9Za2Sd5Fg8Hj1Kl4Qw7Er0Ty",
    ] {
        assert!(!imported.yaml.contains(value), "a secret value was copied");
    }
}

/// A VS Code input used by two servers is one secret, one variable to export, listed with
/// both servers.
#[test]
fn an_input_shared_by_two_servers_is_one_variable_to_export() {
    let input = r#"{
        "inputs": [{"type": "promptString", "id": "api-key", "password": true}],
        "servers": {
            "one": {"command": "one", "env": {"KEY": "${input:api-key}"}},
            "two": {"command": "two", "env": {"TOKEN": "${input:api-key}"}}
        }
    }"#;
    let imported = import(ClientKind::Vscode, input, "team").expect("imports");
    validate(&imported);
    assert_eq!(imported.secrets.len(), 1, "{:?}", imported.secrets);
    assert_eq!(imported.secrets[0].env, "API_KEY");
    assert_eq!(imported.secrets[0].servers, ["one", "two"]);
}
