//! The state store as the record of what happened: events that outlive the control plane
//! and join live ones without a gap or a duplicate, `history`, and `export-state` /
//! `import-state`.

use super::*;
use fleet_api::types::{EventRecord, HistoryEntry, ServerRevisionEntry};

/// One http server; `args` are extra arguments of the sample server (a change of them is a
/// new revision).
fn one_server(name: &str, args: &str) -> String {
    format!(
        r#"
version: 1
name: {name}
servers:
  api:
    http: {{ command: SAMPLE, args: ["--transport", "http", "--port", "{{{{ port }}}}"{args}] }}
"#
    )
}

/// Rewrites the fleet file (the gateway line `Fleet::new` added stays).
fn rewrite(fleet: &Fleet, yaml: &str) {
    let file = fleet.dir.join("mcpfleet.yaml");
    let old = std::fs::read_to_string(&file).unwrap();
    let gateway = &old[old.find("\ngateway:").unwrap()..];
    std::fs::write(&file, yaml.replace("SAMPLE", &sample()) + gateway).unwrap();
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
}

/// Every recorded event, with its id.
fn records(fleet: &Fleet) -> Vec<EventRecord> {
    runtime().block_on(async {
        let mut lines = fleet.client().events(false).await.unwrap();
        let mut out = Vec::new();
        while let Some(r) = lines.next_record().await.unwrap() {
            out.push(r);
        }
        out
    })
}

fn assert_numbered_from_one(records: &[EventRecord]) {
    let ids: Vec<u64> = records.iter().map(|r| r.id).collect();
    let expected: Vec<u64> = (1..=records.len() as u64).collect();
    assert_eq!(ids, expected, "ids with a gap or a duplicate");
}

fn count(records: &[EventRecord], kind: EventKind) -> usize {
    records.iter().filter(|r| r.event.kind == kind).count()
}

#[test]
fn events_are_recorded_in_the_store_and_survive_down_and_up() {
    let fleet = Fleet::new("hist-events", &one_server("hist-events", ""));
    let out = fleet.up();
    assert!(out.status.success(), "{}", text(&out));
    let first = records(&fleet);
    assert_numbered_from_one(&first);
    assert_eq!(
        count(&first, EventKind::DeploymentCompleted),
        1,
        "{first:#?}"
    );

    let out = fleet.mcpfleet(&["down"]);
    assert!(out.status.success(), "{}", text(&out));
    // A second `up -d` follows its own deployment, not the first run's recorded one.
    let out = fleet.up();
    assert!(out.status.success(), "{}", text(&out));
    assert_eq!(
        String::from_utf8_lossy(&out.stderr)
            .matches("every server is ready")
            .count(),
        1,
        "{}",
        text(&out)
    );
    let second = records(&fleet);
    assert_numbered_from_one(&second);
    assert_eq!(second[..first.len()], first[..], "the first run's events");
    let stopped = second
        .iter()
        .position(|r| r.event.kind == EventKind::ServerStopped)
        .expect("`down` recorded the servers it stopped");
    let started_again = second
        .iter()
        .rposition(|r| r.event.kind == EventKind::DeploymentStarted)
        .unwrap();
    assert!(
        first.len() <= stopped && stopped < started_again,
        "{second:#?}"
    );
    assert_eq!(count(&second, EventKind::DeploymentCompleted), 2);

    // Server-sent events resume after Last-Event-ID.
    let resume_after = first.len();
    let last = second.last().unwrap().id;
    let sse = sse_events(&fleet.state_dir(), resume_after, last);
    assert!(
        sse.starts_with("HTTP/1.1 200") && sse.contains("content-type: text/event-stream"),
        "{sse}"
    );
    let ids: Vec<u64> = sse
        .lines()
        .filter_map(|l| l.strip_prefix("id: ")?.parse().ok())
        .collect();
    let expected: Vec<u64> = (resume_after as u64 + 1..=last).collect();
    assert_eq!(ids, expected, "{sse}");
    let data = sse.lines().find_map(|l| l.strip_prefix("data: ")).unwrap();
    let event: fleet_api::types::Event = serde_json::from_str(data).unwrap();
    assert_eq!(event, second[resume_after].event);
}

/// `GET /v1/events/stream` with `Last-Event-ID: after`, read until event `until` arrived.
fn sse_events(state_dir: &Path, after: usize, until: u64) -> String {
    use std::io::{Read, Write};
    let mut socket =
        std::os::unix::net::UnixStream::connect(state_dir.join(fleet_api::SOCKET)).unwrap();
    socket
        .set_read_timeout(Some(Duration::from_secs(20)))
        .unwrap();
    write!(
        socket,
        "GET /v1/events/stream HTTP/1.1\r\nHost: mcpfleet\r\nLast-Event-ID: {after}\r\n\r\n"
    )
    .unwrap();
    let mut answer = Vec::new();
    let mut buffer = [0; 4096];
    let end = format!("id: {until}\n");
    while !String::from_utf8_lossy(&answer).contains(&end) {
        let n = socket.read(&mut buffer).expect("the stream stalled");
        assert!(n > 0, "{}", String::from_utf8_lossy(&answer));
        answer.extend_from_slice(&buffer[..n]);
    }
    String::from_utf8_lossy(&answer).into_owned()
}

#[test]
fn followers_get_history_then_live_events_without_gap_or_duplicate_and_history_lists_deploys() {
    let fleet = Fleet::new("hist-follow", &one_server("hist-follow", ""));
    let out = fleet.up();
    assert!(out.status.success(), "{}", text(&out));
    rewrite(
        &fleet,
        &one_server("hist-follow", r#", "--name", "second""#),
    );
    let runtime = runtime();
    let client = fleet.client();
    let mut watcher = runtime.block_on(client.events(true)).unwrap();
    let mut deploy = Command::new(env!("CARGO_BIN_EXE_mcpfleet"));
    deploy
        .args(["deploy", "--reason", "rename the server", "--state-dir"])
        .arg(fleet.state_dir())
        .current_dir(&fleet.dir);
    let deploying = std::thread::spawn(move || deploy.output().unwrap());

    // A follower opened at each event of the deployment: each joins the stored history to
    // the live events at another point of the burst.
    let mut followers = Vec::new();
    runtime.block_on(async {
        loop {
            let record = tokio::time::timeout(Duration::from_secs(60), watcher.next_record())
                .await
                .expect("no event of the deployment")
                .unwrap()
                .unwrap();
            if record.event.deployment == Some(2) {
                followers.push(client.events(true).await.unwrap());
            }
            if record.event.kind == EventKind::DeploymentCompleted
                && record.event.deployment == Some(2)
            {
                break;
            }
        }
    });
    let out = deploying.join().unwrap();
    assert!(out.status.success(), "{}", text(&out));
    let all = records(&fleet);
    assert_numbered_from_one(&all);
    assert!(followers.len() >= 3, "{} followers", followers.len());
    let last = all.last().unwrap().id;
    for (i, mut follower) in followers.into_iter().enumerate() {
        let seen = runtime.block_on(async {
            let mut seen: Vec<EventRecord> = Vec::new();
            while seen.last().is_none_or(|r| r.id < last) {
                let next = tokio::time::timeout(Duration::from_secs(30), follower.next_record())
                    .await
                    .unwrap_or_else(|_| panic!("follower {i} stalled after {seen:#?}"));
                seen.push(next.unwrap().expect("the stream ended"));
            }
            seen
        });
        assert_eq!(seen, all, "follower {i}");
    }

    // History: both deployments, their revisions and why.
    let out = fleet.mcpfleet(&["history", "--output", "json"]);
    assert!(out.status.success(), "{}", text(&out));
    let history: Vec<HistoryEntry> = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(history.len(), 2, "{history:#?}");
    let (first, second) = (&history[0], &history[1]);
    assert_eq!(
        (first.deployment, first.revision, first.from_revision),
        (1, 1, None)
    );
    assert_eq!(
        (second.deployment, second.revision, second.from_revision),
        (2, 2, Some(1))
    );
    for d in &history {
        assert_eq!((d.kind.as_str(), d.state.as_str()), ("deploy", "succeeded"));
        assert!(d.finished_at.is_some() && d.author.contains('@'), "{d:#?}");
    }
    assert_eq!(first.reason, None);
    assert_eq!(second.reason.as_deref(), Some("rename the server"));
    assert_eq!(first.servers["api"], 1);
    assert_eq!(second.servers["api"], 2);
    let out = fleet.mcpfleet(&["history"]);
    assert!(out.status.success(), "{}", text(&out));
    let table = String::from_utf8_lossy(&out.stdout);
    let rows: Vec<&str> = table.lines().collect();
    assert!(rows[0].starts_with("DEPLOY"), "{table}");
    assert!(
        rows[2].contains("1→2")
            && rows[2].contains("api@2")
            && rows[2].ends_with("rename the server"),
        "{table}"
    );

    let out = fleet.mcpfleet(&["history", "api", "--output", "json"]);
    assert!(out.status.success(), "{}", text(&out));
    let revisions: Vec<ServerRevisionEntry> = serde_json::from_slice(&out.stdout).unwrap();
    let states: Vec<(u64, &str)> = revisions
        .iter()
        .map(|r| (r.number, r.state.as_str()))
        .collect();
    assert_eq!(states, [(1, "superseded"), (2, "active")]);
    assert_ne!(revisions[0].hash, revisions[1].hash);
    let out = fleet.mcpfleet(&["history", "nope"]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("no server `nope`"),
        "{}",
        text(&out)
    );
}

#[test]
fn export_then_import_into_a_fresh_state_dir_gives_the_same_document() {
    let fleet = Fleet::new("hist-export", &one_server("hist-export", ""));
    let out = fleet.up();
    assert!(out.status.success(), "{}", text(&out));
    // While the control plane runs: through it. An import is refused there.
    let running = fleet.dir.join("running.json");
    let out = fleet.mcpfleet(&["export-state", running.to_str().unwrap()]);
    assert!(out.status.success(), "{}", text(&out));
    let out = fleet.mcpfleet(&["import-state", running.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(3), "{}", text(&out));
    assert!(text(&out).contains("mcpfleet down"), "{}", text(&out));
    let out = fleet.mcpfleet(&["down"]);
    assert!(out.status.success(), "{}", text(&out));

    // Stopped: from the store file.
    let backup = fleet.dir.join("backup.json");
    let out = fleet.mcpfleet(&["export-state", backup.to_str().unwrap(), "--output", "json"]);
    assert!(out.status.success(), "{}", text(&out));
    let counts: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(counts["deployments"], 1, "{counts}");
    use std::os::unix::fs::PermissionsExt as _;
    let mode = std::fs::metadata(&backup).unwrap().permissions().mode();
    assert_eq!(mode & 0o777, 0o600, "the export is owner-only");
    let exported = std::fs::read_to_string(&backup).unwrap();
    let document: serde_json::Value = serde_json::from_str(&exported).unwrap();
    let while_running: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&running).unwrap()).unwrap();
    assert_eq!(
        document["fleet_revisions"],
        while_running["fleet_revisions"]
    );
    assert!(
        document["events"].as_array().unwrap().len()
            > while_running["events"].as_array().unwrap().len(),
        "`down` added events"
    );

    let fresh = fleet.dir.join("fresh-state");
    // `import-state` / `export-state` FILE against the fresh state directory.
    let on_fresh = |command: &str, file: &Path| {
        Command::new(env!("CARGO_BIN_EXE_mcpfleet"))
            .arg(command)
            .arg(file)
            .arg("--state-dir")
            .arg(&fresh)
            .current_dir(&fleet.dir)
            .output()
            .unwrap()
    };
    let import = |file: &Path| on_fresh("import-state", file);
    let export_fresh = |file: &Path| on_fresh("export-state", file);

    // Not a state export: refused, located, nothing created.
    let garbage = fleet.dir.join("garbage.json");
    std::fs::write(
        &garbage,
        "{\n  \"format\": 1,\n  \"fleet_revisions\": 7\n}\n",
    )
    .unwrap();
    let out = import(&garbage);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(
        text(&out).contains("garbage.json:3:") && text(&out).contains("not a state export"),
        "{}",
        text(&out)
    );
    assert!(
        !fresh.exists(),
        "a refused import created the state directory"
    );

    let out = import(&backup);
    assert!(out.status.success(), "{}", text(&out));
    let again = fleet.dir.join("again.json");
    let out = export_fresh(&again);
    assert!(out.status.success(), "{}", text(&out));
    assert_eq!(std::fs::read_to_string(&again).unwrap(), exported);

    // The store holds data now: refused, with the store's reason, and nothing changed.
    let db = fresh.join("state.db");
    let before = std::fs::read(&db).unwrap();
    let out = import(&running);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(text(&out).contains("already holds data"), "{}", text(&out));
    assert_eq!(
        std::fs::read(&db).unwrap(),
        before,
        "a refused import wrote"
    );
    let out = export_fresh(&again);
    assert!(out.status.success(), "{}", text(&out));
    assert_eq!(std::fs::read_to_string(&again).unwrap(), exported);
}

/// Waits until `api`'s revisions are `expected` as `(number, state)`: a deployment's
/// followers see it end just before its record is written.
fn assert_revision_states(fleet: &Fleet, expected: [(u64, &str); 2]) {
    wait_until_blocking(
        &format!("api's revisions are {expected:?}"),
        Duration::from_secs(10),
        || {
            let out = fleet.mcpfleet(&["history", "api", "--output", "json"]);
            assert!(out.status.success(), "{}", text(&out));
            let revisions: Vec<ServerRevisionEntry> = serde_json::from_slice(&out.stdout).unwrap();
            let found: Vec<(u64, String)> = revisions
                .into_iter()
                .map(|r| (r.number, r.state.to_string()))
                .collect();
            if found.iter().map(|(n, s)| (*n, s.as_str())).eq(expected) {
                Ok(())
            } else {
                Err(found)
            }
        },
    );
}

/// Regression: a control plane started afresh runs nothing yet, but the revision it
/// replaces is the one the store has as active: after `down` and `up` with a changed file
/// that one is superseded (not two active), and `rollback api` brings it back.
#[test]
fn after_down_and_up_with_a_changed_file_the_old_revision_is_superseded_and_comes_back() {
    let fleet = Fleet::new("hist-restart", &one_server("hist-restart", ""));
    let out = fleet.up();
    assert!(out.status.success(), "{}", text(&out));
    let out = fleet.mcpfleet(&["down"]);
    assert!(out.status.success(), "{}", text(&out));
    rewrite(
        &fleet,
        &one_server("hist-restart", r#", "--name", "second""#),
    );
    let out = fleet.up();
    assert!(out.status.success(), "{}", text(&out));
    assert_revision_states(&fleet, [(1, "superseded"), (2, "active")]);
    let out = fleet.mcpfleet(&["history", "--output", "json"]);
    assert!(out.status.success(), "{}", text(&out));
    let history: Vec<HistoryEntry> = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(
        (history[1].revision, history[1].from_revision),
        (2, Some(1)),
        "{history:#?}"
    );

    let out = fleet.mcpfleet(&["rollback", "api"]);
    assert!(out.status.success(), "{}", text(&out));
    assert_eq!(server(&fleet.status(), "api").revision, Some(1));
    assert_revision_states(&fleet, [(1, "active"), (2, "superseded")]);
}
