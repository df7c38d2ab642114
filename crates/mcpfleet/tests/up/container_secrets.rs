//! Secrets of containerized servers: handed over as files on a tmpfs, never in what the
//! container engine shows (`inspect`), the state directory, events, logs or exports.
//! Live on Podman, like containers.rs.

use super::{Fleet, ServerState, text};
use fleet_testkit::podman::{self, LabelledContainers};
use sha2::{Digest as _, Sha256};

const SECRET: &str = "container-token-7a3f9c";

/// An http and a shared stdio server, each given the secret as a file they must read to
/// start.
fn secret_fleet(name: &str, image: &str) -> String {
    format!(
        r#"
version: 1
name: {name}
secrets:
  token: {{ env: MCPFLEET_TEST_CONTAINER_TOKEN }}
servers:
  web:
    http:
      image: {image}
      args: ["--transport", "http", "--host", "0.0.0.0", "--port", "8080", "--require-file", "/run/secrets/token"]
      port: 8080
    container:
      secrets: {{ /run/secrets/token: token }}
  tools:
    stdio:
      image: {image}
      args: ["--require-file", "/etc/tools/token"]
      isolation: shared
    container:
      secrets: {{ /etc/tools/token: token }}
"#
    )
}

/// Every file under `dir` that holds `needle`.
fn files_holding(dir: &std::path::Path, needle: &str) -> Vec<std::path::PathBuf> {
    let mut found = Vec::new();
    let mut dirs = vec![dir.to_owned()];
    while let Some(dir) = dirs.pop() {
        for entry in std::fs::read_dir(dir).unwrap().flatten() {
            let path = entry.path();
            if path.is_dir() {
                dirs.push(path);
            } else if path.is_file()
                && String::from_utf8_lossy(&std::fs::read(&path).unwrap()).contains(needle)
            {
                found.push(path);
            }
        }
    }
    found
}

#[test]
fn a_containers_secret_arrives_as_a_file_and_appears_in_no_inspect_state_event_log_or_export() {
    let name = format!("ctr-secret-{}", std::process::id());
    let containers = LabelledContainers::new(format!("io.mcpfleet.fleet={name}"));
    let image = podman::sample_image("up-secret");
    let fleet = Fleet::new("ctr-secret", &secret_fleet(&name, &image))
        .with_env("DOCKER_HOST", &podman::docker_host())
        .with_env("MCPFLEET_TEST_CONTAINER_TOKEN", SECRET);
    let out = fleet.up();
    let shown = text(&out);
    assert!(out.status.success(), "{shown}");
    assert!(!shown.contains(SECRET), "{shown}");
    for s in &fleet.status().servers {
        assert_eq!(s.state, ServerState::Ready, "{s:#?}");
    }

    // Each server read the file (it would not have started otherwise) and found the value.
    let hash: String = Sha256::digest(SECRET.as_bytes())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    for (server, path) in [("web", "/run/secrets/token"), ("tools", "/etc/tools/token")] {
        let out = fleet.mcpfleet(&["logs", server, "-n", "50"]);
        let logs = text(&out);
        assert!(out.status.success(), "{logs}");
        let read = format!("read {path}: {} bytes, sha256 {hash}", SECRET.len());
        assert!(logs.contains(&read), "{server}: {logs}");
        assert!(!logs.contains(SECRET), "{server}'s log holds the secret");
    }

    // The engine shows the mounts, not what they hold.
    let ids = containers.ids();
    assert_eq!(ids.len(), 2, "{ids:?}");
    for id in &ids {
        let out = podman::podman().args(["inspect", id]).output().unwrap();
        let inspected = String::from_utf8_lossy(&out.stdout);
        assert!(out.status.success(), "{}", text(&out));
        assert!(inspected.contains("token"), "{inspected}");
        assert!(
            !inspected.contains(SECRET),
            "inspect of {id} shows the secret"
        );
    }

    for args in [
        &["events"][..],
        &["events", "--output", "json"],
        &["status"],
    ] {
        let out = fleet.mcpfleet(args);
        assert!(out.status.success(), "{args:?}: {}", text(&out));
        assert!(!text(&out).contains(SECRET), "{args:?} shows the secret");
    }
    let export = fleet.dir.join("export.json");
    let out = fleet.mcpfleet(&["export-state", export.to_str().unwrap()]);
    assert!(out.status.success(), "{}", text(&out));
    let exported = std::fs::read_to_string(&export).unwrap();
    assert!(!exported.contains(SECRET), "the export holds the secret");

    let out = fleet.mcpfleet(&["down"]);
    assert!(out.status.success(), "{}", text(&out));
    assert!(containers.ids().is_empty());
    // The state directory (state.db, the control plane's log, instance logs, pidfiles),
    // and what is left of the secret files once the containers are gone.
    assert_eq!(
        files_holding(&fleet.state_dir(), SECRET),
        Vec::<std::path::PathBuf>::new()
    );
    let secret_files = std::path::Path::new("/dev/shm").join(format!("mcpfleet-{name}"));
    assert_eq!(
        files_holding(&secret_files, SECRET),
        Vec::<std::path::PathBuf>::new(),
        "secret files outlive their containers"
    );
    let _ = std::fs::remove_dir_all(&secret_files);
}

#[test]
fn a_secret_in_an_image_servers_args_or_env_is_refused_with_the_way_to_pass_it() {
    let fleet = Fleet::new(
        "ctr-secret-args",
        r#"
version: 1
name: ctr-secret-args
secrets:
  token: { env: MCPFLEET_TEST_CONTAINER_TOKEN }
servers:
  tools:
    stdio:
      image: localhost/tools:1
      args: ["--token", "{{ secret('token') }}"]
      env: { TOKEN: "{{ secret('token') }}" }
"#,
    )
    .with_env("MCPFLEET_TEST_CONTAINER_TOKEN", SECRET);
    let out = fleet.command().arg("validate").output().unwrap();
    let shown = text(&out);
    assert!(!out.status.success(), "{shown}");
    assert!(
        shown.contains(
            "a secret in a container's command line is shown by the container engine's `inspect`"
        ),
        "{shown}"
    );
    assert!(
        shown.contains("a secret in a container's environment"),
        "{shown}"
    );
    assert!(shown.contains("container: { secrets:"), "{shown}");
    assert!(!shown.contains(SECRET), "{shown}");
}
