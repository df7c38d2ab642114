//! `restart SERVER` and `ps` on a real fleet: every instance replaced one at a time by a
//! ready one, the revision unchanged; a replacement that cannot start leaves the old
//! instance serving.

use super::*;

fn pids(status: &Status, name: &str) -> Vec<u32> {
    let mut pids: Vec<u32> = server(status, name)
        .instances
        .iter()
        .map(|i| i.pid.expect("a running instance has a pid"))
        .collect();
    pids.sort_unstable();
    pids
}

#[test]
fn restart_replaces_every_instance_by_a_ready_one_and_keeps_the_revision() {
    let yaml = r#"
version: 1
name: restarted
servers:
  web:
    http:
      command: SAMPLE
      args: ["--transport", "http", "--port", "{{ port }}"]
    replicas: 2
"#;
    let fleet = Fleet::new("restart", yaml);
    let out = fleet.up();
    assert!(out.status.success(), "{}", text(&out));
    let before = fleet.status();
    let old = pids(&before, "web");
    assert_eq!(old.len(), 2, "{before:#?}");

    let out = fleet.mcpfleet(&["restart", "web"]);
    assert!(out.status.success(), "{}", text(&out));
    assert!(
        String::from_utf8_lossy(&out.stderr)
            .contains("restarted `web`: 2 instances of revision 1 replaced"),
        "{}",
        text(&out)
    );
    let after = fleet.status();
    let web = server(&after, "web");
    let new = pids(&after, "web");
    assert_eq!(new.len(), 2, "{after:#?}");
    assert!(
        new.iter().all(|pid| !old.contains(pid)),
        "not every instance was replaced: {old:?} → {new:?}"
    );
    for pid in &old {
        assert!(!alive(*pid), "replaced instance {pid} still runs");
    }
    assert_eq!(web.state, ServerState::Ready, "{after:#?}");
    assert_eq!(web.revision, Some(1), "a restart is not a new revision");
    assert!(web.instances.iter().all(|i| i.state == ServerState::Ready));
    assert_echo_answers(web.endpoint.as_deref().unwrap(), "after the restart");
    assert!(
        events(&fleet).iter().any(|e| e
            .message
            .starts_with("restarting revision 1: 2 instances, one at a time")),
        "no restart event"
    );

    // `ps`: one row per instance, in text and JSON.
    let out = fleet.mcpfleet(&["ps"]);
    assert!(out.status.success(), "{}", text(&out));
    let shown = String::from_utf8_lossy(&out.stdout);
    for instance in &web.instances {
        let row = shown
            .lines()
            .find(|l| l.starts_with(&format!("{} ", instance.id)))
            .unwrap_or_else(|| panic!("no row for {}:\n{shown}", instance.id));
        assert!(
            row.split_whitespace().nth(2) == Some(&instance.pid.unwrap().to_string()),
            "{row}"
        );
    }
    let out = fleet.mcpfleet(&["ps", "-o", "json"]);
    let rows: Vec<serde_json::Value> = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(rows.len(), 2, "{rows:?}");
    assert!(
        rows.iter()
            .all(|r| r["server"] == "web" && r["revision"] == 1)
    );
}

#[test]
fn a_restart_whose_replacement_cannot_start_leaves_the_old_instance_serving() {
    let dir = std::env::temp_dir().join(format!("mcpfleet-restart-fail-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let broken = dir.join("broken");
    let wrapper = dir.join("server.sh");
    std::fs::write(
        &wrapper,
        format!(
            "#!/bin/sh\n[ -e '{}' ] && {{ echo 'cannot start: broken' >&2; exit 3; }}\nexec '{}' \"$@\"\n",
            broken.display(),
            sample()
        ),
    )
    .unwrap();
    use std::os::unix::fs::PermissionsExt as _;
    std::fs::set_permissions(&wrapper, std::fs::Permissions::from_mode(0o755)).unwrap();
    let yaml = format!(
        "version: 1\nname: unrestartable\nservers:\n  api:\n    stdio: {{ command: '{}' }}\n",
        wrapper.display()
    );
    let fleet = Fleet::new("restart-fail", &yaml);
    let out = fleet.up();
    assert!(out.status.success(), "{}", text(&out));
    let old = pids(&fleet.status(), "api");

    std::fs::write(&broken, "").unwrap();
    let out = fleet.mcpfleet(&["restart", "api"]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("did not become ready")
            && stderr.contains("the instances not yet replaced keep serving"),
        "{stderr}"
    );
    let status = fleet.status();
    assert_eq!(pids(&status, "api"), old, "{status:#?}");
    assert!(old.iter().all(|pid| alive(*pid)));
    assert_eq!(server(&status, "api").state, ServerState::Ready);
    let endpoint = server(&status, "api").endpoint.clone().unwrap();
    assert_echo_answers(&endpoint, "still serving");
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn restart_of_a_server_that_is_not_deployed_suggests_the_close_name() {
    let fleet = Fleet::new(
        "restart-typo",
        "version: 1\nname: typo\nservers:\n  clock:\n    stdio: { command: SAMPLE }\n",
    );
    let out = fleet.up();
    assert!(out.status.success(), "{}", text(&out));
    let out = fleet.mcpfleet(&["restart", "clok"]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(
        String::from_utf8_lossy(&out.stderr)
            .contains("no server `clok` is deployed; did you mean `clock`?"),
        "{}",
        text(&out)
    );
}
