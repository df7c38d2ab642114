//! The command line as users run it: the real binary, real files, exact output.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

const SECRET_VALUE: &str = "ghp_test_secret_value_0123456789";

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures")
}

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// Runs mcpfleet with a fixed, minimal environment so output does not depend on the caller.
fn mcpfleet(args: &[&str], cwd: &Path) -> Output {
    Command::new(env!("CARGO_BIN_EXE_mcpfleet"))
        .args(args)
        .current_dir(cwd)
        .env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .env("HOME", "/home/tester")
        .env("GITHUB_TOKEN", SECRET_VALUE)
        .output()
        .expect("run mcpfleet")
}

fn transcript(out: &Output) -> String {
    format!(
        "exit: {}\n--- stdout\n{}--- stderr\n{}",
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

fn scratch_dir(test: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("mcpfleet-cli-{test}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

#[test]
fn every_broken_fleet_file_gets_a_located_error() {
    let mut files: Vec<PathBuf> = std::fs::read_dir(fixtures().join("invalid"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "yaml"))
        .collect();
    files.sort();
    assert!(files.len() >= 30, "only {} broken fixtures", files.len());
    for file in files {
        let name = file.file_stem().unwrap().to_string_lossy().into_owned();
        let text = String::from_utf8_lossy(&std::fs::read(&file).unwrap()).into_owned();
        let relative = format!("invalid/{name}.yaml");
        let mut args = vec!["validate", "-f", relative.as_str()];
        let extra: Vec<&str> = text
            .lines()
            .next()
            .and_then(|l| l.strip_prefix("# args: "))
            .map(|a| a.split(' ').collect())
            .unwrap_or_default();
        args.extend(extra);
        let out = mcpfleet(&args, &fixtures());
        let shown = transcript(&out);
        assert_eq!(out.status.code(), Some(1), "{name}: {shown}");
        assert!(shown.contains("error: "), "{name}: {shown}");
        assert!(!shown.contains("panicked"), "{name}: {shown}");
        assert!(
            !shown.contains(SECRET_VALUE),
            "{name} leaked a secret: {shown}"
        );
        insta::with_settings!({ snapshot_path => "snapshots/invalid", prepend_module_to_snapshot => false }, {
            insta::assert_snapshot!(name, shown);
        });
    }
}

#[test]
fn validate_reports_json_for_machines() {
    let out = mcpfleet(
        &[
            "validate",
            "-f",
            "invalid/unknown-dependency.yaml",
            "--output",
            "json",
        ],
        &fixtures(),
    );
    assert_eq!(out.status.code(), Some(1));
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(report["valid"], false);
    assert_eq!(report["errors"], 1);
    let d = &report["diagnostics"][0];
    assert_eq!(d["severity"], "error");
    assert_eq!(d["span"]["line"], 8);
    assert_eq!(d["label"], "did you mean `database`?");

    let out = mcpfleet(
        &[
            "validate",
            "-f",
            "examples/devtools.yaml",
            "--output",
            "json",
        ],
        &repo(),
    );
    assert_eq!(out.status.code(), Some(0), "{}", transcript(&out));
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(
        (
            report["valid"].as_bool(),
            report["servers"].as_u64(),
            report["waves"].as_u64()
        ),
        (Some(true), Some(6), Some(3))
    );
}

#[test]
fn plans_of_the_example_fleet() {
    for format in ["text", "json", "dot", "mermaid"] {
        let out = mcpfleet(
            &["plan", "-f", "examples/devtools.yaml", "--format", format],
            &repo(),
        );
        assert_eq!(out.status.code(), Some(0), "{}", transcript(&out));
        let shown = transcript(&out);
        assert!(!shown.contains(SECRET_VALUE));
        insta::with_settings!({ snapshot_path => "snapshots/plan", prepend_module_to_snapshot => false }, {
            insta::assert_snapshot!(format!("devtools-{format}"), shown);
        });
    }
    let out = mcpfleet(
        &[
            "plan",
            "-f",
            "examples/devtools.yaml",
            "--env",
            "production",
            "--output",
            "json",
        ],
        &repo(),
    );
    let plan: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(plan["environment"], "production");
}

#[test]
fn plan_refuses_an_invalid_file() {
    let out = mcpfleet(
        &["plan", "-f", "invalid/dependency-cycle.yaml"],
        &fixtures(),
    );
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("dependency cycle"));
    assert!(out.stdout.is_empty());
}

#[test]
fn usage_and_io_errors_exit_2() {
    let dir = scratch_dir("usage");
    let out = mcpfleet(&["validate"], &dir);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("mcpfleet init"));
    assert_eq!(
        mcpfleet(&["validate", "-f", "missing.yaml"], &dir)
            .status
            .code(),
        Some(2)
    );
    assert_eq!(
        mcpfleet(&["plan", "--format", "svg"], &dir).status.code(),
        Some(2)
    );
    assert_eq!(mcpfleet(&["frobnicate"], &dir).status.code(), Some(2));
}

#[test]
fn a_ten_megabyte_file_is_refused_quickly() {
    let dir = scratch_dir("big");
    let big = dir.join("big.yaml");
    let line = "# ".to_string() + &"x".repeat(1000) + "\n";
    std::fs::write(&big, line.repeat(10 * 1024)).unwrap();
    let out = mcpfleet(&["validate", "-f", "big.yaml"], &dir);
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("fleet files are limited to 8 MiB"));
}

#[test]
fn init_writes_a_valid_starter_and_never_overwrites() {
    let dir = scratch_dir("init");
    let out = mcpfleet(&["init"], &dir);
    assert_eq!(out.status.code(), Some(0), "{}", transcript(&out));
    let out = mcpfleet(&["validate"], &dir);
    assert_eq!(out.status.code(), Some(0), "{}", transcript(&out));
    std::fs::write(dir.join("mcpfleet.yaml"), "mine").unwrap();
    let out = mcpfleet(&["init"], &dir);
    assert_eq!(out.status.code(), Some(2));
    assert_eq!(
        std::fs::read_to_string(dir.join("mcpfleet.yaml")).unwrap(),
        "mine"
    );
}

#[test]
fn import_writes_a_fleet_file_that_validates() {
    let dir = scratch_dir("import");
    let source = repo().join("crates/fleet-spec/tests/import/claude_desktop_config.json");
    let out = mcpfleet(
        &[
            "import",
            "claude-desktop",
            source.to_str().unwrap(),
            "--name",
            "desk",
        ],
        &dir,
    );
    assert_eq!(out.status.code(), Some(0), "{}", transcript(&out));
    let written = std::fs::read_to_string(dir.join("mcpfleet.yaml")).unwrap();
    assert!(written.contains("name: \"desk\""), "{written}");
    // The variables to export, each with the servers that read it (issue 14, item 8).
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("export these before deploying:")
            && stderr.contains("GITHUB_PERSONAL_ACCESS_TOKEN  (github)")
            && stderr.contains("BRAVE_API_KEY                 (brave-search)"),
        "{stderr}"
    );
    let out = mcpfleet(&["validate"], &dir);
    assert!(out.status.success(), "{}", transcript(&out));
    let out = mcpfleet(&["import", "vscode", "nope.json"], &dir);
    assert_eq!(out.status.code(), Some(2));
}

/// Regression (issue 13): the exported fleet's name chooses the default state directory,
/// so `../../escape` wrote outside the state root.
#[test]
fn import_state_refuses_a_fleet_name_that_leaves_the_state_root_and_writes_nothing() {
    let dir = scratch_dir("import-state-escape");
    let export = serde_json::json!({
        "format": 1,
        "fleet_revisions": [{
            "number": 1, "fleet": "../../escape", "created_at": "2026-12-01T00:00:00Z",
            "author": "x", "reason": null, "source": "", "source_path": "",
            "env": null, "servers": { "ok": 1, "../up": 1 }
        }],
        "server_revisions": [],
        "deployments": [],
        "events": [],
        "audit": []
    });
    let file = dir.join("export.json");
    std::fs::write(&file, export.to_string()).unwrap();
    let state_home = dir.join("state");
    let out = Command::new(env!("CARGO_BIN_EXE_mcpfleet"))
        .args(["import-state", file.to_str().unwrap()])
        .current_dir(&dir)
        .env("XDG_STATE_HOME", &state_home)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1), "{}", transcript(&out));
    let stderr = String::from_utf8_lossy(&out.stderr);
    for expected in [
        "fleet \"../../escape\"",
        "server \"../up\"",
        "lowercase letters",
        "nothing was imported",
    ] {
        assert!(
            stderr.contains(expected),
            "{expected}: {}",
            transcript(&out)
        );
    }
    let mut entries: Vec<_> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    entries.sort();
    assert_eq!(entries, ["export.json"], "a refused import wrote");

    // With the state directory given the names are refused all the same.
    let out = mcpfleet(
        &[
            "import-state",
            file.to_str().unwrap(),
            "--state-dir",
            state_home.to_str().unwrap(),
        ],
        &dir,
    );
    assert_eq!(out.status.code(), Some(1), "{}", transcript(&out));
    assert!(
        !state_home.exists(),
        "a refused import created its directory"
    );
}

/// A fleet of stdio servers (and one http server) behind a token-guarded gateway; an
/// unused secret gives `validate` a warning that `client-config` must not repeat.
const CLIENT_FLEET: &str = r#"version: 1
name: desk
secrets:
  unused: { env: MCPFLEET_TEST_UNSET_VARIABLE }
gateway:
  listen: 127.0.0.1:7999
  auth:
    tokens:
      - { name: ci, sha256: "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08", servers: ["*"] }
servers:
  memory:
    stdio: { command: npx, args: ["-y", "@modelcontextprotocol/server-memory"] }
  time:
    stdio: { command: uvx, args: ["mcp-server-time"] }
  search:
    http: { command: search-server, args: ["--port", "{{ port }}"] }
"#;

const CLIENT_SERVERS: [&str; 3] = ["memory", "search", "time"];

/// `client-config KIND` for `yaml`, its stdout parsed, and its stderr.
fn client_config(test: &str, kind: &str, yaml: &str) -> (serde_json::Value, String) {
    let dir = scratch_dir(test);
    std::fs::write(dir.join("mcpfleet.yaml"), yaml).unwrap();
    // An empty state directory: no control plane, so the URLs come from `gateway.listen`.
    let out = mcpfleet(&["client-config", kind, "--state-dir", "state"], &dir);
    assert_eq!(out.status.code(), Some(0), "{}", transcript(&out));
    let config =
        serde_json::from_slice(&out.stdout).unwrap_or_else(|e| panic!("{e}: {}", transcript(&out)));
    (config, String::from_utf8_lossy(&out.stderr).into_owned())
}

fn names(servers: &serde_json::Value) -> Vec<&str> {
    let mut names: Vec<&str> = servers
        .as_object()
        .expect("a map of servers")
        .keys()
        .map(String::as_str)
        .collect();
    names.sort_unstable();
    names
}

fn gateway_url(server: &str) -> String {
    format!("http://127.0.0.1:7999/mcp/{server}")
}

/// Issue 14: stdio servers were left out ("not behind the gateway yet"), and Claude
/// Desktop was given `{url, headers}`, which its config file does not load.
#[test]
fn client_config_for_claude_desktop_bridges_every_server_through_mcp_remote() {
    let (config, stderr) = client_config("cc-claude", "claude-desktop", CLIENT_FLEET);
    let servers = &config["mcpServers"];
    assert_eq!(names(servers), CLIENT_SERVERS, "{config:#}");
    for name in CLIENT_SERVERS {
        // claude_desktop_config.json: mcpServers.NAME.{command, args, env}.
        let entry = servers[name].as_object().unwrap();
        let mut keys: Vec<&str> = entry.keys().map(String::as_str).collect();
        keys.sort_unstable();
        assert_eq!(keys, ["args", "command", "env"], "{name}: {config:#}");
        assert_eq!(entry["command"], "npx");
        let args: Vec<&str> = entry["args"]
            .as_array()
            .unwrap()
            .iter()
            .map(|a| a.as_str().unwrap())
            .collect();
        let url = gateway_url(name);
        assert_eq!(args[..3], ["-y", "mcp-remote", url.as_str()], "{name}");
        // mcp-remote's idiom: the header from an environment variable, no space after `:`.
        let header = args.iter().position(|a| *a == "--header").unwrap();
        assert_eq!(args[header + 1], "Authorization:${AUTH_HEADER}");
        assert_eq!(entry["env"]["AUTH_HEADER"], "Bearer <your mcpfleet token>");
    }
    assert!(stderr.contains("mcp-remote"), "{stderr}");
    assert!(!stderr.contains("stdio"), "{stderr}");
    assert!(
        !stderr.contains("warning"),
        "setup warnings repeated: {stderr}"
    );
}

#[test]
fn client_config_for_vscode_lists_every_server_with_a_password_input() {
    let (config, stderr) = client_config("cc-vscode", "vscode", CLIENT_FLEET);
    // .vscode/mcp.json: servers.NAME.{type: "http", url, headers}, inputs for secrets.
    let servers = &config["servers"];
    assert_eq!(names(servers), CLIENT_SERVERS, "{config:#}");
    for name in CLIENT_SERVERS {
        assert_eq!(
            servers[name],
            serde_json::json!({
                "type": "http",
                "url": gateway_url(name),
                "headers": { "Authorization": "Bearer ${input:mcpfleet-token}" }
            })
        );
    }
    assert_eq!(
        config["inputs"],
        serde_json::json!([{ "type": "promptString", "id": "mcpfleet-token", "description": "mcpfleet gateway token", "password": true }])
    );
    assert!(
        !stderr.contains("warning"),
        "setup warnings repeated: {stderr}"
    );
}

#[test]
fn client_config_for_cursor_lists_every_server_with_the_token_from_the_environment() {
    let (config, stderr) = client_config("cc-cursor", "cursor", CLIENT_FLEET);
    // ~/.cursor/mcp.json: mcpServers.NAME.{url, headers}; Cursor expands `${env:NAME}`.
    let servers = &config["mcpServers"];
    assert_eq!(names(servers), CLIENT_SERVERS, "{config:#}");
    for name in CLIENT_SERVERS {
        assert_eq!(
            servers[name],
            serde_json::json!({
                "url": gateway_url(name),
                "headers": { "Authorization": "Bearer ${env:MCPFLEET_TOKEN}" }
            })
        );
    }
    assert!(stderr.contains("MCPFLEET_TOKEN"), "{stderr}");
    assert!(
        !stderr.contains("warning"),
        "setup warnings repeated: {stderr}"
    );
}

#[test]
fn client_config_without_tokens_has_no_authorization_anywhere() {
    let open = CLIENT_FLEET
        .lines()
        .filter(|l| !l.contains("auth:") && !l.contains("tokens:") && !l.contains("sha256"))
        .collect::<Vec<_>>()
        .join("\n");
    for kind in ["claude-desktop", "vscode", "cursor"] {
        let (config, _) = client_config(&format!("cc-open-{kind}"), kind, &open);
        let text = config.to_string();
        assert!(
            !text.contains("Authorization") && !text.contains("inputs") && !text.contains("env"),
            "{kind}: {config:#}"
        );
    }
    let (config, _) = client_config("cc-open-claude-args", "claude-desktop", &open);
    assert_eq!(
        config["mcpServers"]["memory"]["args"],
        serde_json::json!(["-y", "mcp-remote", gateway_url("memory"), "--allow-http"])
    );
}

/// Issue 14: no `version` command, and `-o json` was not accepted.
#[test]
fn version_prints_the_version_and_json_with_the_short_output_flag() {
    let dir = scratch_dir("version");
    let out = mcpfleet(&["version"], &dir);
    assert_eq!(out.status.code(), Some(0), "{}", transcript(&out));
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        format!("mcpfleet {}\n", env!("CARGO_PKG_VERSION"))
    );
    let out = mcpfleet(&["version", "-o", "json"], &dir);
    assert_eq!(out.status.code(), Some(0), "{}", transcript(&out));
    let version: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(
        version,
        serde_json::json!({ "name": "mcpfleet", "version": env!("CARGO_PKG_VERSION") })
    );
}

/// `-o` is `--output` everywhere; `import` writes its file with `--out`.
#[test]
fn short_output_flag_means_json_output_and_import_writes_with_out() {
    let out = mcpfleet(
        &[
            "validate",
            "-f",
            "invalid/unknown-dependency.yaml",
            "-o",
            "json",
        ],
        &fixtures(),
    );
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(report["valid"], false);

    let dir = scratch_dir("import-out");
    let source = repo().join("crates/fleet-spec/tests/import/claude_desktop_config.json");
    let source = source.to_str().unwrap();
    let out = mcpfleet(
        &["import", "claude-desktop", source, "--out", "desk.yaml"],
        &dir,
    );
    assert_eq!(out.status.code(), Some(0), "{}", transcript(&out));
    assert!(dir.join("desk.yaml").exists());
    let out = mcpfleet(
        &["import", "claude-desktop", source, "-o", "other.yaml"],
        &dir,
    );
    assert_eq!(out.status.code(), Some(2), "{}", transcript(&out));
    assert!(!dir.join("other.yaml").exists());
}

#[test]
fn completions_for_each_shell_name_every_subcommand() {
    let dir = scratch_dir("completions");
    for shell in ["bash", "zsh", "fish"] {
        let out = mcpfleet(&["completions", shell], &dir);
        assert_eq!(out.status.code(), Some(0), "{}", transcript(&out));
        let script = String::from_utf8_lossy(&out.stdout);
        for word in ["client-config", "call", "deploy", "state-dir", "mcpfleet"] {
            assert!(script.contains(word), "{shell} lacks {word}");
        }
    }
    let bash = mcpfleet(&["completions", "bash"], &dir);
    assert!(String::from_utf8_lossy(&bash.stdout).contains("complete -F"));
    assert_eq!(
        mcpfleet(&["completions", "tcsh"], &dir).status.code(),
        Some(2)
    );
}

/// Issue 14: every command names its fleet file the same way, `-f FILE` (`--file` in
/// `logs` and `events`, where `-f` is `--follow`), and reads that file.
#[test]
fn every_command_reads_the_fleet_file_given_with_f() {
    let dir = scratch_dir("dash-f");
    let commands: [&[&str]; 20] = [
        &["validate", "-f"],
        &["plan", "-f"],
        &["up", "-d", "-f"],
        &["deploy", "-f"],
        &["rollback", "-f"],
        &["promote", "api", "-f"],
        &["abort", "api", "-f"],
        &["pause", "api", "-f"],
        &["resume", "api", "-f"],
        &["status", "-f"],
        &["metrics", "-f"],
        &["logs", "api", "--file"],
        &["events", "--file"],
        &["history", "-f"],
        &["audit", "-f"],
        &["export-state", "out.json", "-f"],
        &["check", "-f"],
        &["down", "-f"],
        &["client-config", "vscode", "-f"],
        &["call", "api", "echo", "-f"],
    ];
    for command in commands {
        let args = [command, &["elsewhere/missing.yaml"]].concat();
        let out = mcpfleet(&args, &dir);
        let shown = transcript(&out);
        assert_ne!(out.status.code(), Some(0), "{args:?}: {shown}");
        assert!(
            shown.contains("elsewhere/missing.yaml") && !shown.contains("unexpected argument"),
            "{args:?} did not read the file: {shown}"
        );
    }
    // `token create` names the file it is for (where to add the token).
    let out = mcpfleet(
        &["token", "create", "ci", "-f", "elsewhere/missing.yaml"],
        &dir,
    );
    assert!(
        transcript(&out).contains("elsewhere/missing.yaml"),
        "{}",
        transcript(&out)
    );
    let out = mcpfleet(&["init", "-f", "starter.yaml"], &dir);
    assert_eq!(out.status.code(), Some(0), "{}", transcript(&out));
    // The next steps it suggests work as written.
    assert!(
        transcript(&out).contains("`mcpfleet validate -f starter.yaml`"),
        "{}",
        transcript(&out)
    );
    let out = mcpfleet(&["validate", "--file", "starter.yaml"], &dir);
    assert_eq!(out.status.code(), Some(0), "{}", transcript(&out));
}

/// Issue 14: `history fleet.yaml` said "no server `fleet.yaml` was ever deployed" and
/// `logs fleet.yaml api` failed without saying why.
#[test]
fn a_fleet_file_given_where_it_went_before_f_gets_the_f_hint() {
    let dir = scratch_dir("file-hint");
    std::fs::write(
        dir.join("fleet.yaml"),
        "version: 1\nname: demo\nservers: {}\n",
    )
    .unwrap();
    for (args, hint) in [
        (
            &["history", "fleet.yaml"][..],
            "`fleet.yaml` is a file: name the fleet with -f fleet.yaml",
        ),
        (
            &["rollback", "fleet.yaml"],
            "`fleet.yaml` is a file: name the fleet with -f fleet.yaml",
        ),
        (
            &["promote", "fleet.yaml"],
            "`fleet.yaml` is a file: name the fleet with -f fleet.yaml",
        ),
        (
            &["call", "fleet.yaml", "echo"],
            "`fleet.yaml` is a file: name the fleet with -f fleet.yaml",
        ),
        (
            &["logs", "fleet.yaml"],
            "`fleet.yaml` is a file: name the fleet with --file fleet.yaml",
        ),
        (
            &["logs", "fleet.yaml", "api"],
            "name the fleet file with --file fleet.yaml",
        ),
        (
            &["status", "fleet.yaml"],
            "name the fleet file with -f fleet.yaml",
        ),
        (
            &["validate", "other.yml"],
            "name the fleet file with -f other.yml",
        ),
    ] {
        let out = mcpfleet(args, &dir);
        let shown = transcript(&out);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {shown}");
        assert!(shown.contains(hint), "{args:?}: {shown}");
    }
}

/// Issue 14: `down` with nothing running said only "no control plane is running for this
/// fleet", not which fleet or state directory it looked at.
#[test]
fn down_with_nothing_running_names_the_fleet_and_its_state_directory() {
    let dir = scratch_dir("down-idle");
    std::fs::write(
        dir.join("mcpfleet.yaml"),
        "version: 1\nname: demo\nservers: {}\n",
    )
    .unwrap();
    let out = mcpfleet(&["down"], &dir);
    assert_eq!(out.status.code(), Some(0), "{}", transcript(&out));
    assert_eq!(
        String::from_utf8_lossy(&out.stderr),
        "nothing running for fleet `demo` (state directory /home/tester/.local/state/mcpfleet/demo)\n"
    );
    let out = mcpfleet(&["down", "--state-dir", "idle"], &dir);
    assert_eq!(out.status.code(), Some(0), "{}", transcript(&out));
    assert_eq!(
        String::from_utf8_lossy(&out.stderr),
        "nothing running for fleet `demo` (state directory idle)\n"
    );
}

/// A typo in `token create --servers` is a refusal (exit 1, as docs/cli.md says), names
/// the server it meant, and creates no token.
#[test]
fn token_create_for_a_misspelt_server_is_refused_with_did_you_mean() {
    let dir = scratch_dir("token-typo");
    std::fs::write(
        dir.join("mcpfleet.yaml"),
        "version: 1\nname: typo\nservers:\n  clock:\n    stdio: { command: clock-server }\n  calendar:\n    stdio: { command: calendar-server }\n",
    )
    .unwrap();
    let out = mcpfleet(&["token", "create", "ci", "--servers", "clok"], &dir);
    assert_eq!(out.status.code(), Some(1), "{}", transcript(&out));
    assert!(
        out.stdout.is_empty(),
        "a token was printed: {}",
        transcript(&out)
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("error: no server `clok` in the fleet; did you mean `clock`?"),
        "{}",
        transcript(&out)
    );

    // Nothing close: the fleet's servers are listed instead.
    let out = mcpfleet(&["token", "create", "ci", "--servers", "weather"], &dir);
    assert_eq!(out.status.code(), Some(1), "{}", transcript(&out));
    assert!(
        String::from_utf8_lossy(&out.stderr)
            .contains("no server `weather` in the fleet (its servers: clock, calendar)"),
        "{}",
        transcript(&out)
    );
}

/// `token create --admin` prints a token once and the `admin.tokens` line that makes the
/// fleet file accept it (no `servers`: an admin token reaches none); `--servers` with
/// `--admin` is an error that creates nothing.
#[test]
fn token_create_admin_prints_the_line_for_admin_tokens_and_refuses_servers() {
    let dir = scratch_dir("admin-token");
    let out = mcpfleet(&["token", "create", "ops", "--admin"], &dir);
    assert_eq!(out.status.code(), Some(0), "{}", transcript(&out));
    let token = String::from_utf8_lossy(&out.stdout).trim().to_owned();
    assert!(token.starts_with("mcpf_"), "{}", transcript(&out));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("under `admin.tokens` in mcpfleet.yaml"),
        "{stderr}"
    );
    let line = stderr
        .lines()
        .find(|l| l.trim_start().starts_with("- { name: ops"))
        .unwrap_or_else(|| panic!("no line to add: {stderr}"));
    assert!(!line.contains("servers"), "{line}");
    assert!(
        !stderr.contains(&token),
        "the token was shown twice: {stderr}"
    );

    // The line, pasted under `admin.tokens`, is a valid fleet file.
    std::fs::write(
        dir.join("mcpfleet.yaml"),
        format!(
            "version: 1\nname: ops\nadmin:\n  listen: 127.0.0.1:0\n  tokens:\n{line}\nservers: {{}}\n"
        ),
    )
    .unwrap();
    let out = mcpfleet(&["validate"], &dir);
    assert_eq!(out.status.code(), Some(0), "{}", transcript(&out));

    let out = mcpfleet(
        &["token", "create", "ops", "--admin", "--servers", "api"],
        &dir,
    );
    assert_ne!(out.status.code(), Some(0), "{}", transcript(&out));
    assert!(
        out.stdout.is_empty(),
        "a token was printed: {}",
        transcript(&out)
    );
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("`--servers` does not go with `--admin`"),
        "{}",
        transcript(&out)
    );
}

/// `mcpfleet … | head` must end quietly when the reader has gone, not panic with "failed
/// printing to stdout: Broken pipe".
#[test]
fn output_into_a_closed_pipe_ends_quietly_without_a_panic() {
    let dir = scratch_dir("closed-pipe");
    let fleet = repo().join("examples/quickstart.yaml");
    for args in [
        &["completions", "bash"][..],
        &["validate", "-o", "json", "-f", fleet.to_str().unwrap()],
    ] {
        let (reader, writer) = std::io::pipe().unwrap();
        drop(reader); // every write now fails with EPIPE
        let out = Command::new(env!("CARGO_BIN_EXE_mcpfleet"))
            .args(args)
            .current_dir(&dir)
            .stdout(writer)
            .stderr(std::process::Stdio::piped())
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!stderr.contains("panicked"), "{args:?}: {stderr}");
        assert_eq!(out.status.code(), Some(141), "{args:?}: {stderr}");
    }
}

/// Issue 17: a fleet for Kubernetes runs on its cluster, never on this machine by
/// mistake: without a kubeconfig `up` (attached or detached) fails, saying once where it
/// looked and what to do, before it creates its state directory.
#[test]
fn up_of_a_kubernetes_fleet_without_a_kubeconfig_says_where_it_looked() {
    let dir = scratch_dir("up-kubernetes");
    std::fs::write(
        dir.join("mcpfleet.yaml"),
        "version: 1\nname: demo\nruntime: kubernetes\nservers:\n  search:\n    http: { image: registry.example/search:1.2, port: 8080 }\n",
    )
    .unwrap();
    for detach in [false, true] {
        let mut args = vec!["up", "--state-dir", "state"];
        if detach {
            args.push("-d");
        }
        let out = mcpfleet(&args, &dir);
        let shown = transcript(&out);
        assert_eq!(out.status.code(), Some(2), "{shown}");
        let said = "error: cannot run fleet `demo` in namespace `demo` of the kubeconfig's current \
                    context: no kubeconfig at /home/tester/.kube/config: point KUBECONFIG at one";
        assert_eq!(shown.matches(said).count(), 1, "{shown}");
        assert!(!dir.join("state").exists(), "{shown}");
    }
}
