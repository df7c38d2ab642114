//! Loading fleet files end to end: overlays, error collection, secrets staying secret.

mod common;
use common::FixedHost;
use fleet_spec::model::{Isolation, LogFormat, Transport};
use fleet_spec::template::InstanceTemplates;
use fleet_spec::{LoadOptions, load_str};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

fn options(environment: Option<&str>) -> LoadOptions {
    LoadOptions {
        environment: environment.map(str::to_string),
        host: Arc::new(FixedHost(vec![
            ("GITHUB_TOKEN", "ghp_supersecretvalue"),
            ("HOME", "/home/tester"),
        ])),
    }
}

fn devtools() -> String {
    std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../examples/devtools.yaml"
    ))
    .unwrap()
}

#[test]
fn the_devtools_example_is_valid() {
    let checked = load_str("devtools.yaml", &devtools(), PathBuf::new(), &options(None));
    assert_eq!(checked.diagnostics, vec![], "{:#?}", checked.diagnostics);
    let fleet = checked.into_valid().unwrap();
    assert_eq!(fleet.servers.len(), 6);
    let search = fleet.server("search").unwrap();
    assert_eq!(search.replicas, 2);
    assert_eq!(search.rollout.steps.len(), 3);
    assert_eq!(
        search.rollout.steps[2].pause, None,
        "`pause: {{}}` waits for promote"
    );
    let Transport::Http { command, path, .. } = &search.transport else {
        panic!("search is http")
    };
    assert_eq!(path, "/mcp");
    let args: Vec<&str> = command.args.iter().map(|a| a.shown.as_str()).collect();
    assert_eq!(args, ["--port", "<port>", "--name", "search"]);
    assert_eq!(fleet.gateway.listen.to_string(), "127.0.0.1:7470");
}

#[test]
fn an_environment_overlays_the_base() {
    let fleet = load_str(
        "devtools.yaml",
        &devtools(),
        PathBuf::new(),
        &options(Some("production")),
    )
    .into_valid()
    .unwrap();
    assert_eq!(fleet.gateway.listen.to_string(), "0.0.0.0:7470");
    assert_eq!(fleet.gateway.tokens.len(), 1);
    let Transport::Stdio {
        command: github, ..
    } = &fleet.server("github").unwrap().transport
    else {
        panic!()
    };
    assert_eq!(github.env["LOG_LEVEL"].shown, "info");
}

#[test]
fn secret_values_never_reach_the_model_output() {
    let fleet = load_str("devtools.yaml", &devtools(), PathBuf::new(), &options(None))
        .into_valid()
        .unwrap();
    let json = serde_json::to_string(&fleet).unwrap();
    assert!(!json.contains("ghp_supersecretvalue"));
    assert!(json.contains("\"GITHUB_PERSONAL_ACCESS_TOKEN\":\"***\""));
}

#[test]
fn one_broken_server_does_not_hide_the_others() {
    let text = "version: 1\nname: demo\nservers:\n  a:\n    stdio: [oops]\n  b:\n    stdio: { command: b, argz: [] }\n  c:\n    stdio: { command: c }\n    replicas: 0\n";
    let checked = load_str("f.yaml", text, PathBuf::new(), &options(None));
    let lines: Vec<(u32, &str)> = checked
        .diagnostics
        .iter()
        .map(|d| (d.span.unwrap().line, d.message.as_str()))
        .collect();
    assert_eq!(
        lines,
        [
            (5, "expected a mapping, found a list"),
            (7, "unknown key `argz`"),
            (10, "`replicas` must be at least 1")
        ]
    );
    assert_eq!(
        checked.diagnostics[1].label.as_deref(),
        Some("did you mean `args`?")
    );
}

#[test]
fn stdio_isolation_defaults_to_a_capped_process_per_session() {
    let text = "version: 1\nname: demo\nservers:
  plain:
    stdio: { command: a }
  tuned:
    stdio: { command: b, warm: 0, max_sessions: 4, idle_timeout: 90s }
  pooled:
    stdio: { command: c, isolation: shared }
    replicas: 2
";
    let fleet = load_str("f.yaml", text, PathBuf::new(), &options(None))
        .into_valid()
        .unwrap();
    let isolation = |name: &str| match &fleet.server(name).unwrap().transport {
        Transport::Stdio { isolation, .. } => *isolation,
        other => panic!("{name} is {}", other.kind()),
    };
    assert_eq!(
        isolation("plain"),
        Isolation::PerSession {
            warm: 1,
            max_sessions: 32,
            idle_timeout: Duration::from_secs(600)
        }
    );
    assert_eq!(
        isolation("tuned"),
        Isolation::PerSession {
            warm: 0,
            max_sessions: 4,
            idle_timeout: Duration::from_secs(90)
        }
    );
    assert_eq!(isolation("pooled"), Isolation::Shared);
    // The spec plans store and hash: the settings sit beside the command, durations as written.
    let spec = serde_json::to_value(fleet.server("tuned").unwrap()).unwrap();
    assert_eq!(
        spec["transport"]["stdio"]["isolation"],
        serde_json::json!({ "mode": "per-session", "warm": 0, "max_sessions": 4, "idle_timeout": "1m30s" })
    );
    assert_eq!(spec["transport"]["stdio"]["command"], "b");
    let spec = serde_json::to_value(fleet.server("pooled").unwrap()).unwrap();
    assert_eq!(
        spec["transport"]["stdio"]["isolation"],
        serde_json::json!({ "mode": "shared" })
    );
}

#[test]
fn stdio_isolation_errors_are_located() {
    let text = "version: 1\nname: demo\nservers:
  a:
    stdio: { command: a, isolation: per-sesion }
  b:
    stdio: { command: b, isolation: shared, warm: 2, idle_timeout: 1m }
  c:
    stdio: { command: c, warm: 5, max_sessions: 2 }
  d:
    stdio: { command: d, max_sessions: 0, idle_timeout: 0s }
  e:
    http: { command: e, args: ['{{ port }}'], isolation: shared, warm: 1 }
";
    let checked = load_str("f.yaml", text, PathBuf::new(), &options(None));
    let found: Vec<(u32, &str, Option<&str>)> = checked
        .diagnostics
        .iter()
        .map(|d| (d.span.unwrap().line, d.message.as_str(), d.label.as_deref()))
        .collect();
    assert_eq!(
        found,
        [
            (
                5,
                "unknown value `per-sesion`",
                Some("did you mean `per-session`?")
            ),
            (7, "`warm` only applies to `isolation: per-session`", None),
            (
                7,
                "`idle_timeout` only applies to `isolation: per-session`",
                None
            ),
            (9, "`warm` (5) is more than `max_sessions` (2)", None),
            (11, "`max_sessions` must be at least 1", None),
            (11, "`idle_timeout` must be longer than zero", None),
            (13, "unknown key `isolation`", None),
            (13, "unknown key `warm`", None),
        ]
    );
    assert!(checked.diagnostics.iter().all(|d| d.help.is_some()));
}

#[test]
fn adversarial_inputs_get_errors_not_panics() {
    let deep = "a: ".to_string() + &"[".repeat(10_000);
    let mut keys = String::from("version: 1\nname: x\nservers:\n");
    for i in 0..20_000 {
        keys.push_str(&format!("  s{i}:\n    stdio: {{ command: c }}\n"));
    }
    for text in [
        deep.as_str(),
        "{{{{",
        ": : :",
        "\u{feff}",
        "- - - -",
        "a: !!binary aGk=",
        "a: !custom x",
        keys.as_str(),
    ] {
        let checked = load_str("f.yaml", text, PathBuf::new(), &options(None));
        if text.len() < 1000 {
            assert!(!checked.is_valid(), "{text:?} should be invalid");
        }
    }
}

#[test]
fn instances_render_real_values_that_plans_never_show() {
    let fleet = load_str("devtools.yaml", &devtools(), PathBuf::new(), &options(None))
        .into_valid()
        .unwrap();
    let host: Arc<dyn fleet_spec::template::Host> =
        Arc::new(FixedHost(vec![("GITHUB_TOKEN", "ghp_supersecretvalue")]));
    let github = fleet.server("github").unwrap();
    let Transport::Stdio { command, .. } = &github.transport else {
        panic!()
    };
    let t = InstanceTemplates::new(&fleet, host.clone(), None, 3).unwrap();
    let token = t
        .render(&command.env["GITHUB_PERSONAL_ACCESS_TOKEN"], "github")
        .unwrap();
    assert_eq!(token, "ghp_supersecretvalue");
    assert_eq!(command.env["GITHUB_PERSONAL_ACCESS_TOKEN"].shown, "***");

    let search = fleet.server("search").unwrap();
    let Transport::Http { command, .. } = &search.transport else {
        panic!()
    };
    let t = InstanceTemplates::new(&fleet, host, Some(40123), 3).unwrap();
    let args: Vec<String> = command
        .args
        .iter()
        .map(|a| t.render(a, "search").unwrap())
        .collect();
    assert_eq!(args, ["--port", "40123", "--name", "search"]);
}

#[test]
fn the_admin_listener_is_optional_loopback_only_and_overlaid() {
    let base = "version: 1\nname: demo\nservers:\n  a: { stdio: { command: a } }\n";
    let fleet = load_str("f.yaml", base, PathBuf::new(), &options(None))
        .into_valid()
        .unwrap();
    assert_eq!(fleet.admin.listen, None, "no TCP admin listener by default");

    let text = format!(
        "{base}admin: {{ listen: 127.0.0.1:0 }}\nenvironments:\n  ops: {{ admin: {{ listen: '[::1]:7471' }} }}\n  open: {{ admin: {{ listen: 0.0.0.0:7471 }} }}\n"
    );
    let fleet = load_str("f.yaml", &text, PathBuf::new(), &options(None))
        .into_valid()
        .unwrap();
    assert_eq!(fleet.admin.listen.unwrap().to_string(), "127.0.0.1:0");
    let fleet = load_str("f.yaml", &text, PathBuf::new(), &options(Some("ops")))
        .into_valid()
        .unwrap();
    assert_eq!(fleet.admin.listen.unwrap().to_string(), "[::1]:7471");

    let open = load_str("f.yaml", &text, PathBuf::new(), &options(Some("open")));
    let found: Vec<(u32, &str)> = open
        .diagnostics
        .iter()
        .map(|d| (d.span.unwrap().line, d.message.as_str()))
        .collect();
    assert_eq!(
        found,
        [(
            8,
            "the admin API would listen on 0.0.0.0:7471, which is not a loopback address"
        )]
    );
    assert!(
        open.diagnostics[0]
            .help
            .as_deref()
            .is_some_and(|h| h.contains("authenticating proxy"))
    );

    let text = format!("{base}admin: {{ listen: localhost:7471, port: 1 }}\n");
    let broken = load_str("f.yaml", &text, PathBuf::new(), &options(None));
    let found: Vec<(u32, &str)> = broken
        .diagnostics
        .iter()
        .map(|d| (d.span.unwrap().line, d.message.as_str()))
        .collect();
    assert_eq!(
        found,
        [
            (5, "`localhost:7471` is not an IP:PORT address"),
            (5, "unknown key `port`")
        ]
    );
}

#[test]
fn gateway_tls_is_required_beyond_loopback_and_its_errors_are_located() {
    let base = "version: 1\nname: demo\nservers:\n  a: { stdio: { command: a } }\n";
    let token = "auth: { tokens: [ { name: ci, sha256: 9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08, servers: ['*'] } ] }";
    let text = format!(
        "{base}gateway:\n  listen: 127.0.0.1:7470\n  {token}\nenvironments:
  open: {{ gateway: {{ listen: 0.0.0.0:7470 }} }}
  proxied: {{ gateway: {{ listen: 0.0.0.0:7470, tls: {{ terminated_by: proxy }} }} }}
  served: {{ gateway: {{ listen: 0.0.0.0:7470, tls: {{ cert: tls/gw.crt, key: tls/gw.key }} }} }}
  keyless: {{ gateway: {{ tls: {{ cert: tls/gw.crt }} }} }}
  both: {{ gateway: {{ tls: {{ cert: a, key: b, terminated_by: proxy }} }} }}
  empty: {{ gateway: {{ tls: {{}} }} }}
"
    );
    let load = |environment: &str| {
        load_str(
            "f.yaml",
            &text,
            PathBuf::from("/srv/fleet"),
            &options(Some(environment)),
        )
    };
    let errors = |environment: &str| -> Vec<(u32, String)> {
        load(environment)
            .diagnostics
            .iter()
            .map(|d| (d.span.unwrap().line, d.message.clone()))
            .collect()
    };

    assert_eq!(
        errors("open"),
        [(
            9,
            "the gateway would listen on 0.0.0.0:7470 without TLS".to_owned()
        )]
    );
    let open = load("open");
    let help = open.diagnostics[0].help.as_deref().unwrap();
    assert!(
        help.contains("cert:") && help.contains("terminated_by: proxy"),
        "{help}"
    );

    let proxied = load("proxied").into_valid().unwrap();
    assert_eq!(
        proxied.gateway.tls,
        Some(fleet_spec::model::GatewayTls::TerminatedByProxy)
    );
    let served = load("served").into_valid().unwrap();
    assert_eq!(
        served.gateway.tls,
        Some(fleet_spec::model::GatewayTls::Files {
            cert: PathBuf::from("/srv/fleet/tls/gw.crt"),
            key: PathBuf::from("/srv/fleet/tls/gw.key"),
        }),
        "paths are relative to the fleet file"
    );

    assert_eq!(
        errors("keyless"),
        [(12, "`gateway.tls` has a `cert` but no `key`".to_owned())]
    );
    assert_eq!(
        errors("both"),
        [(
            13,
            "`terminated_by` and `cert`/`key` exclude each other".to_owned()
        )]
    );
    assert_eq!(errors("empty"), [(14, "`gateway.tls` is empty".to_owned())]);
}

#[test]
fn gateway_connection_timeouts_default_and_are_read() {
    let base = "version: 1\nname: demo\nservers:\n  a: { stdio: { command: a } }\n";
    let fleet = load_str("f.yaml", base, PathBuf::new(), &options(None))
        .into_valid()
        .unwrap();
    assert_eq!(fleet.gateway.header_read_timeout, Duration::from_secs(10));
    assert_eq!(fleet.gateway.body_read_timeout, Duration::from_secs(30));
    assert_eq!(fleet.gateway.idle_timeout, Duration::from_secs(60));
    let text = format!(
        "{base}gateway: {{ header_read_timeout: 2s, body_read_timeout: 5s, idle_timeout: 0s }}\n"
    );
    let checked = load_str("f.yaml", &text, PathBuf::new(), &options(None));
    let found: Vec<&str> = checked
        .diagnostics
        .iter()
        .map(|d| d.message.as_str())
        .collect();
    assert_eq!(found, ["the duration must be longer than zero"]);
    let text = format!("{base}gateway: {{ header_read_timeout: 2s, body_read_timeout: 5s }}\n");
    let fleet = load_str("f.yaml", &text, PathBuf::new(), &options(None))
        .into_valid()
        .unwrap();
    assert_eq!(fleet.gateway.header_read_timeout, Duration::from_secs(2));
    assert_eq!(fleet.gateway.body_read_timeout, Duration::from_secs(5));
}

#[test]
fn the_log_format_is_text_unless_the_file_or_its_environment_says_json() {
    let base = "version: 1\nname: demo\nservers:\n  a: { stdio: { command: a } }\n";
    let fleet = load_str("f.yaml", base, PathBuf::new(), &options(None))
        .into_valid()
        .unwrap();
    assert_eq!(fleet.logging.format, LogFormat::Text);

    let text = format!(
        "{base}logging: {{ format: json }}\nenvironments:\n  dev: {{ logging: {{ format: text }} }}\n"
    );
    let fleet = load_str("f.yaml", &text, PathBuf::new(), &options(None))
        .into_valid()
        .unwrap();
    assert_eq!(fleet.logging.format, LogFormat::Json);
    let fleet = load_str("f.yaml", &text, PathBuf::new(), &options(Some("dev")))
        .into_valid()
        .unwrap();
    assert_eq!(fleet.logging.format, LogFormat::Text);

    let text = format!("{base}logging: {{ format: logfmt }}\n");
    let broken = load_str("f.yaml", &text, PathBuf::new(), &options(None));
    let found: Vec<(u32, &str)> = broken
        .diagnostics
        .iter()
        .map(|d| (d.span.unwrap().line, d.message.as_str()))
        .collect();
    assert_eq!(found, [(5, "unknown value `logfmt`")]);
    let help = broken.diagnostics[0].help.as_deref().unwrap_or_default();
    assert!(help.contains("text") && help.contains("json"), "{help}");
}
