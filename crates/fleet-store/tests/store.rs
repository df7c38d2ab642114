//! The SQLite store against real database files, one temp directory per test.

use fleet_routes::audit::{ToolCallRecord, ToolOutcome};
use fleet_store::{
    DeploymentKind, DeploymentStatus, NewDeployment, NewEvent, NewFleetRevision, NewServerRevision,
    RevisionState, SCHEMA_VERSION, STATE_EXPORT_FORMAT, SqliteStore, StateStore, StepOutcome,
    StepState, StoreError,
};
use fleet_testkit::TempDir;
use serde_json::json;
use std::io::{BufRead, BufReader};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, UNIX_EPOCH};

/// The store file in a test's directory.
fn db(dir: &TempDir) -> PathBuf {
    dir.path().join("state.db")
}

fn open(path: &Path) -> Arc<dyn StateStore> {
    Arc::new(SqliteStore::open(path).unwrap())
}

fn server(name: &str, hash: &str) -> NewServerRevision {
    NewServerRevision {
        name: name.to_owned(),
        hash: hash.to_owned(),
        spec: json!({ "name": name, "hash": hash, "env": { "TOKEN": "***" } }),
    }
}

fn fleet(servers: Vec<NewServerRevision>) -> NewFleetRevision {
    NewFleetRevision {
        fleet: "devtools".to_owned(),
        source: "version: 1\nname: devtools\n".to_owned(),
        source_path: "mcpfleet.yaml".to_owned(),
        env: Some("production".to_owned()),
        author: "alice".to_owned(),
        reason: None,
        servers,
    }
}

fn deploy(fleet_revision: u64) -> NewDeployment {
    NewDeployment {
        fleet_revision,
        from_revision: None,
        kind: DeploymentKind::Deploy,
        reason: None,
    }
}

fn event(kind: &str) -> NewEvent {
    NewEvent {
        time: "2026-01-02T03:04:05.006Z".to_owned(),
        kind: kind.to_owned(),
        server: Some("memory".to_owned()),
        revision: Some(1),
        deployment: None,
        instance: None,
        message: format!("{kind} happened"),
    }
}

/// A tool call at 2026-01-02T03:04:05.006Z that took 12.5 ms.
fn audit_record(tool: &str) -> ToolCallRecord {
    ToolCallRecord {
        time: UNIX_EPOCH + Duration::from_millis(1_767_323_045_006),
        token: Some("ci".to_owned()),
        server: "memory".to_owned(),
        revision: 1,
        tool: tool.to_owned(),
        outcome: ToolOutcome::Ok,
        duration: Duration::from_micros(12_500),
    }
}

#[tokio::test]
async fn server_revisions_are_reused_while_their_hash_is_unchanged() {
    let dir = TempDir::new("numbering");
    let store = open(&db(&dir));

    let first = store
        .record_fleet_revision(fleet(vec![server("memory", "m1"), server("github", "g1")]))
        .await
        .unwrap();
    assert_eq!(first.number, 1);
    assert_eq!(first.servers["memory"], 1);
    assert_eq!(first.servers["github"], 1);

    // github changes, memory does not; search is new.
    let second = store
        .record_fleet_revision(fleet(vec![
            server("memory", "m1"),
            server("github", "g2"),
            server("search", "s1"),
        ]))
        .await
        .unwrap();
    assert_eq!(second.number, 2);
    assert_eq!(second.servers["memory"], 1);
    assert_eq!(second.servers["github"], 2);
    assert_eq!(second.servers["search"], 1);

    // Going back to an older spec (a rollback) brings back its number; a new one is next.
    let third = store
        .record_fleet_revision(fleet(vec![server("github", "g1")]))
        .await
        .unwrap();
    assert_eq!(third.servers["github"], 1);
    let fourth = store
        .record_fleet_revision(fleet(vec![server("github", "g3")]))
        .await
        .unwrap();
    assert_eq!(fourth.servers["github"], 3);

    let github = store.server_revisions("github").await.unwrap();
    let numbers: Vec<_> = github
        .iter()
        .map(|r| (r.number, r.fleet_revision))
        .collect();
    assert_eq!(numbers, [(1, 1), (2, 2), (3, 4)]);
    assert!(github.iter().all(|r| r.state == RevisionState::Pending));
    assert_eq!(store.server_revisions("memory").await.unwrap().len(), 1);

    assert_eq!(store.fleet_revision(2).await.unwrap(), Some(second));
    assert_eq!(store.fleet_revision(3).await.unwrap(), Some(third));
    assert_eq!(store.latest_fleet_revision().await.unwrap(), Some(fourth));
    assert_eq!(store.fleet_revision(5).await.unwrap(), None);
    let all = store.fleet_revisions().await.unwrap();
    assert_eq!(
        all.iter().map(|r| r.number).collect::<Vec<_>>(),
        [1, 2, 3, 4]
    );
    assert_eq!(all[0], first);
}

#[tokio::test]
async fn revision_states_and_invalid_revisions() {
    let dir = TempDir::new("states");
    let store = open(&db(&dir));
    assert_eq!(store.latest_fleet_revision().await.unwrap(), None);

    let twice = store
        .record_fleet_revision(fleet(vec![server("a", "1"), server("a", "2")]))
        .await;
    assert!(
        matches!(&twice, Err(StoreError::Invalid { what }) if what.contains("`a` appears twice")),
        "{twice:?}"
    );
    assert_eq!(store.fleet_revisions().await.unwrap(), []);

    store
        .record_fleet_revision(fleet(vec![server("a", "1")]))
        .await
        .unwrap();
    let reason = Some("health check failed".to_owned());
    store
        .set_server_revision_state("a", 1, RevisionState::Failed, reason.clone())
        .await
        .unwrap();
    let rev = store.server_revision("a", 1).await.unwrap().unwrap();
    assert_eq!((rev.state, rev.reason), (RevisionState::Failed, reason));
    assert_eq!(rev.spec["env"]["TOKEN"], "***");

    let missing = store
        .set_server_revision_state("a", 2, RevisionState::Active, None)
        .await;
    assert!(
        matches!(&missing, Err(StoreError::NotFound { what }) if what == "revision 2 of server `a`"),
        "{missing:?}"
    );
    assert_eq!(store.server_revision("b", 1).await.unwrap(), None);
    let huge = store.fleet_revision(u64::MAX).await;
    assert!(matches!(huge, Err(StoreError::Invalid { .. })), "{huge:?}");
}

#[tokio::test]
async fn journal_keeps_steps_in_order_and_confirms_each_once() {
    let dir = TempDir::new("journal");
    let store = open(&db(&dir));
    store
        .record_fleet_revision(fleet(vec![server("a", "1")]))
        .await
        .unwrap();
    let unknown = store.begin_deployment(deploy(2)).await;
    assert!(
        matches!(&unknown, Err(StoreError::NotFound { what }) if what == "fleet revision 2"),
        "{unknown:?}"
    );

    let d = store.begin_deployment(deploy(1)).await.unwrap();
    assert_eq!(
        (d.id, d.state, &d.finished_at),
        (1, DeploymentStatus::InProgress, &None)
    );
    assert!(d.steps.is_empty());

    let first = store
        .append_step(d.id, json!({ "start": "a" }))
        .await
        .unwrap();
    let second = store
        .append_step(d.id, json!({ "route": "a" }))
        .await
        .unwrap();
    assert_eq!((first, second), (1, 2));

    store
        .confirm_step(d.id, 1, StepOutcome::Done, None)
        .await
        .unwrap();
    let again = store.confirm_step(d.id, 1, StepOutcome::Failed, None).await;
    assert!(
        matches!(&again, Err(StoreError::Conflict { what }) if what.contains("already confirmed")),
        "{again:?}"
    );
    let unknown = store.confirm_step(d.id, 3, StepOutcome::Done, None).await;
    assert!(
        matches!(unknown, Err(StoreError::NotFound { .. })),
        "{unknown:?}"
    );
    let unknown = store.append_step(9, json!({})).await;
    assert!(
        matches!(unknown, Err(StoreError::NotFound { .. })),
        "{unknown:?}"
    );

    let record = store.deployment(d.id).await.unwrap().unwrap();
    let steps: Vec<_> = record.steps.iter().map(|s| (s.seq, s.state)).collect();
    assert_eq!(steps, [(1, StepState::Done), (2, StepState::Pending)]);
    assert_eq!(record.steps[0].step, json!({ "start": "a" }));
    assert!(record.steps[0].confirmed_at.is_some());
    assert!(record.steps[1].confirmed_at.is_none());

    // A pause leaves the deployment unfinished; a final state finishes it for good.
    store
        .finish_deployment(
            d.id,
            DeploymentStatus::Paused,
            Some("waiting for promote".into()),
        )
        .await
        .unwrap();
    let paused = store.deployment(d.id).await.unwrap().unwrap();
    assert_eq!(
        (paused.state, paused.finished_at),
        (DeploymentStatus::Paused, None)
    );
    store
        .finish_deployment(d.id, DeploymentStatus::Failed, Some("step 2 failed".into()))
        .await
        .unwrap();
    // Recovery may still settle a pending step of a finished deployment...
    store
        .confirm_step(d.id, 2, StepOutcome::Failed, Some("exit 1".into()))
        .await
        .unwrap();
    // ...but a finished deployment takes no new steps and no new state.
    let late = store.append_step(d.id, json!({})).await;
    assert!(matches!(late, Err(StoreError::Conflict { .. })), "{late:?}");
    let late = store
        .finish_deployment(d.id, DeploymentStatus::Succeeded, None)
        .await;
    assert!(matches!(late, Err(StoreError::Conflict { .. })), "{late:?}");

    let done = store.deployment(d.id).await.unwrap().unwrap();
    assert_eq!(done.state, DeploymentStatus::Failed);
    assert_eq!(done.reason.as_deref(), Some("step 2 failed"));
    assert!(done.finished_at.is_some());
    assert_eq!(done.steps[1].state, StepState::Failed);
    assert_eq!(done.steps[1].detail.as_deref(), Some("exit 1"));
    assert_eq!(store.deployments().await.unwrap(), [done]);
    assert_eq!(store.deployment(2).await.unwrap(), None);
}

#[tokio::test]
async fn an_unfinished_deployment_survives_reopening() {
    let dir = TempDir::new("reopen");
    let store = open(&db(&dir));
    store
        .record_fleet_revision(fleet(vec![server("a", "1")]))
        .await
        .unwrap();
    let finished = store.begin_deployment(deploy(1)).await.unwrap();
    store
        .finish_deployment(finished.id, DeploymentStatus::Succeeded, None)
        .await
        .unwrap();
    let crashed = store.begin_deployment(deploy(1)).await.unwrap();
    store
        .append_step(crashed.id, json!({ "start": "a" }))
        .await
        .unwrap();
    // The control plane dies here: nothing is finished or closed.
    drop(store);

    let store = open(&db(&dir));
    let unfinished = store.unfinished_deployments().await.unwrap();
    assert_eq!(unfinished.len(), 1, "{unfinished:?}");
    assert_eq!(unfinished[0].id, crashed.id);
    assert_eq!(unfinished[0].state, DeploymentStatus::InProgress);
    assert_eq!(unfinished[0].steps.len(), 1);
    assert_eq!(unfinished[0].steps[0].state, StepState::Pending);
    assert_eq!(unfinished[0].steps[0].step, json!({ "start": "a" }));
}

/// Set for the child process of [`a_killed_writer_loses_no_acknowledged_step`].
const CHILD_DB: &str = "FLEET_STORE_TEST_CHILD_DB";

/// Not a test on its own: the child process of the kill test, which runs it by name with
/// `--ignored`. It journals steps forever and prints each sequence number once `append_step`
/// has returned.
#[tokio::test]
#[ignore = "the child process of a_killed_writer_loses_no_acknowledged_step, which runs it"]
async fn journal_steps_until_killed() {
    let path = std::env::var_os(CHILD_DB).expect(
        "run by a_killed_writer_loses_no_acknowledged_step, which sets FLEET_STORE_TEST_CHILD_DB",
    );
    let store = open(Path::new(&path));
    store
        .record_fleet_revision(fleet(vec![server("a", "1")]))
        .await
        .unwrap();
    let d = store.begin_deployment(deploy(1)).await.unwrap();
    loop {
        let seq = store.append_step(d.id, json!({ "n": 1 })).await.unwrap();
        println!("step {seq}");
    }
}

#[test]
fn a_killed_writer_loses_no_acknowledged_step() {
    let dir = TempDir::new("kill");
    let mut child = Command::new(std::env::current_exe().unwrap())
        .args([
            "--ignored",
            "--exact",
            "journal_steps_until_killed",
            "--nocapture",
        ])
        .env(CHILD_DB, db(&dir))
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut acknowledged = 0;
    for line in BufReader::new(child.stdout.take().unwrap()).lines() {
        if let Some(seq) = line.unwrap().strip_prefix("step ") {
            acknowledged = seq.parse().unwrap();
            if acknowledged >= 20 {
                break;
            }
        }
    }
    child.kill().unwrap(); // SIGKILL, mid-write or not
    child.wait().unwrap();
    assert_eq!(acknowledged, 20, "the child stopped early");

    let runtime = tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap();
    let unfinished = runtime
        .block_on(open(&db(&dir)).unfinished_deployments())
        .unwrap();
    let steps = &unfinished[0].steps;
    assert!(steps.len() >= acknowledged, "{} steps", steps.len());
    assert!(steps.iter().zip(1..).all(|(s, seq)| s.seq == seq));
}

#[tokio::test]
async fn a_newer_schema_is_refused_and_left_alone() {
    let dir = TempDir::new("newer");
    drop(SqliteStore::open(&db(&dir)).unwrap());
    let conn = rusqlite::Connection::open(db(&dir)).unwrap();
    conn.pragma_update(None, "user_version", 999).unwrap();
    drop(conn);

    let err = SqliteStore::open(&db(&dir)).unwrap_err();
    assert!(
        matches!(err, StoreError::NewerSchema { found: 999, supported, .. } if supported == SCHEMA_VERSION),
        "{err:?}"
    );
    let message = err.to_string();
    assert!(message.contains("newer mcpfleet"), "{message}");
    assert!(message.contains("upgrade mcpfleet"), "{message}");
    assert!(message.contains("import-state"), "{message}");

    let conn = rusqlite::Connection::open(db(&dir)).unwrap();
    let version: i64 = conn
        .pragma_query_value(None, "user_version", |r| r.get(0))
        .unwrap();
    assert_eq!(version, 999);
}

#[tokio::test]
async fn opening_explains_what_failed() {
    let dir = TempDir::new("open");
    let missing = dir.path().join("no-such-dir").join("state.db");
    let err = SqliteStore::open(&missing).unwrap_err();
    assert!(matches!(err, StoreError::Open { .. }), "{err:?}");
    assert!(err.to_string().contains("state directory exists"), "{err}");

    let not_a_database = dir.path().join("notes.txt");
    std::fs::write(&not_a_database, "x".repeat(4096)).unwrap();
    let err = SqliteStore::open(&not_a_database).unwrap_err();
    assert!(matches!(err, StoreError::Open { .. }), "{err:?}");
}

#[tokio::test]
async fn only_the_owner_can_read_the_database() {
    let dir = TempDir::new("mode");
    let store = open(&db(&dir));
    store.append_events(vec![event("x")]).await.unwrap();
    let mode = |p: PathBuf| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode(db(&dir)), 0o600);
    assert_eq!(mode(dir.path().join("state.db-wal")), 0o600);
}

/// A store with something of every kind in it.
async fn populate(store: &dyn StateStore) {
    store
        .record_fleet_revision(fleet(vec![server("memory", "m1"), server("github", "g1")]))
        .await
        .unwrap();
    store
        .record_fleet_revision(fleet(vec![server("memory", "m1"), server("github", "g2")]))
        .await
        .unwrap();
    store
        .set_server_revision_state("github", 1, RevisionState::Superseded, None)
        .await
        .unwrap();
    let d = store.begin_deployment(deploy(1)).await.unwrap();
    store
        .append_step(d.id, json!({ "start": "memory" }))
        .await
        .unwrap();
    store
        .confirm_step(d.id, 1, StepOutcome::Done, Some("ready".into()))
        .await
        .unwrap();
    store
        .finish_deployment(d.id, DeploymentStatus::Succeeded, None)
        .await
        .unwrap();
    let d = store
        .begin_deployment(NewDeployment {
            fleet_revision: 2,
            from_revision: Some(1),
            kind: DeploymentKind::Rollback,
            reason: Some("canary failed".into()),
        })
        .await
        .unwrap();
    store
        .append_step(d.id, json!({ "stop": "github" }))
        .await
        .unwrap();
    store
        .append_events(vec![event("deployment_started"), event("server_ready")])
        .await
        .unwrap();
    store
        .append_audit(vec![audit_record("read_graph"), audit_record("search")])
        .await
        .unwrap();
}

#[tokio::test]
async fn export_then_import_gives_the_same_document() {
    let dir = TempDir::new("export");
    let old = open(&dir.path().join("old.db"));
    populate(&*old).await;
    let exported = old.export().await.unwrap();
    assert_eq!(exported.format, STATE_EXPORT_FORMAT);
    assert_eq!(exported.fleet_revisions.len(), 2);
    assert_eq!(exported.server_revisions.len(), 3);
    assert_eq!(exported.deployments.len(), 2);
    assert_eq!((exported.events.len(), exported.audit.len()), (2, 2));

    // Through JSON, as `export-state` / `import-state` do.
    let document = serde_json::to_string_pretty(&exported).unwrap();
    let new = open(&dir.path().join("new.db"));
    new.import(serde_json::from_str(&document).unwrap())
        .await
        .unwrap();
    let reexported = new.export().await.unwrap();
    assert_eq!(serde_json::to_string_pretty(&reexported).unwrap(), document);

    // The imported store carries on numbering where the old one stopped.
    let next = new
        .record_fleet_revision(fleet(vec![server("memory", "m1")]))
        .await
        .unwrap();
    assert_eq!((next.number, next.servers["memory"]), (3, 1));
    assert_eq!(new.append_events(vec![event("x")]).await.unwrap(), [3]);
    assert_eq!(new.begin_deployment(deploy(3)).await.unwrap().id, 3);
    assert_eq!(new.unfinished_deployments().await.unwrap().len(), 2);
}

#[tokio::test]
async fn import_into_a_store_with_data_is_refused_and_changes_nothing() {
    let dir = TempDir::new("import");
    let source = open(&dir.path().join("source.db"));
    populate(&*source).await;
    let exported = source.export().await.unwrap();

    let target = open(&dir.path().join("target.db"));
    target.append_events(vec![event("mine")]).await.unwrap();
    let before = target.export().await.unwrap();
    let err = target.import(exported.clone()).await.unwrap_err();
    assert!(matches!(err, StoreError::NotEmpty), "{err:?}");
    assert!(err.to_string().contains("fresh state directory"), "{err}");
    assert_eq!(target.export().await.unwrap(), before);

    let future = fleet_store::StateExport {
        format: STATE_EXPORT_FORMAT + 1,
        ..exported.clone()
    };
    let fresh = open(&dir.path().join("fresh.db"));
    let err = fresh.import(future).await.unwrap_err();
    assert!(matches!(err, StoreError::ExportFormat { .. }), "{err:?}");

    // A document naming a server revision it does not hold: nothing is imported.
    let mut broken = exported;
    broken.server_revisions.pop();
    let err = fresh.import(broken).await.unwrap_err();
    assert!(
        matches!(&err, StoreError::Invalid { what } if what.contains("contradicts itself")),
        "{err:?}"
    );
    assert_eq!(fresh.fleet_revisions().await.unwrap(), []);
    assert_eq!(fresh.events(0, 10).await.unwrap(), []);
}

#[tokio::test]
async fn events_and_audit_page_by_id_and_read_their_newest() {
    let dir = TempDir::new("paging");
    let store = open(&db(&dir));
    assert_eq!(
        store.append_events(vec![]).await.unwrap(),
        Vec::<u64>::new()
    );
    let kinds = ["a", "b", "c", "d", "e"];
    let ids = store
        .append_events(kinds.iter().map(|k| event(k)).collect())
        .await
        .unwrap();
    assert_eq!(ids, [1, 2, 3, 4, 5]);

    let page = store.events(0, 2).await.unwrap();
    assert_eq!(page.iter().map(|e| e.id).collect::<Vec<_>>(), [1, 2]);
    assert_eq!(page[0].event, event("a"));
    let page = store.events(2, 10).await.unwrap();
    let kinds: Vec<_> = page.iter().map(|e| e.event.kind.as_str()).collect();
    assert_eq!(kinds, ["c", "d", "e"]);
    assert_eq!(store.events(5, 10).await.unwrap(), []);
    assert_eq!(store.events(u64::MAX, usize::MAX).await.unwrap(), []);
    assert_eq!(store.events(0, 0).await.unwrap(), []);
    // The tail, oldest first, without paging from the start.
    let tail = store.latest_events(2).await.unwrap();
    assert_eq!(tail.iter().map(|e| e.id).collect::<Vec<_>>(), [4, 5]);
    assert_eq!(tail[1].event, event("e"));
    assert_eq!(store.latest_events(usize::MAX).await.unwrap().len(), 5);
    assert_eq!(store.latest_events(0).await.unwrap(), []);

    let tools = ["t1", "t2", "t3"];
    store
        .append_audit(tools.iter().map(|t| audit_record(t)).collect())
        .await
        .unwrap();
    let page = store.audit(1, 1).await.unwrap();
    assert_eq!(page.len(), 1);
    assert_eq!((page[0].id, &page[0].record), (2, &audit_record("t2")));
    assert_eq!(store.audit(0, 10).await.unwrap().len(), 3);
    let tail = store.latest_audit(2).await.unwrap();
    assert_eq!(
        tail.iter()
            .map(|r| (r.id, r.record.tool.as_str()))
            .collect::<Vec<_>>(),
        [(2, "t2"), (3, "t3")]
    );

    // A time RFC 3339 cannot say (a clock gone wild) is refused, with the whole batch.
    let far_future = ToolCallRecord {
        time: UNIX_EPOCH + Duration::from_secs(1 << 40),
        ..audit_record("t4")
    };
    let err = store
        .append_audit(vec![audit_record("t5"), far_future])
        .await;
    assert!(
        matches!(&err, Err(StoreError::Invalid { what }) if what.contains("tool `t4` of `memory`")),
        "{err:?}"
    );
    assert_eq!(
        store.audit(0, 10).await.unwrap().len(),
        3,
        "one transaction"
    );
}

#[tokio::test]
async fn a_damaged_row_is_reported_not_panicked_on() {
    let dir = TempDir::new("corrupt");
    let store = open(&db(&dir));
    store
        .record_fleet_revision(fleet(vec![server("memory", "m1")]))
        .await
        .unwrap();
    let d = store.begin_deployment(deploy(1)).await.unwrap();
    store.append_step(d.id, json!({})).await.unwrap();

    let conn = rusqlite::Connection::open(db(&dir)).unwrap();
    conn.execute_batch(
        "UPDATE server_revisions SET spec = '{not json';
         UPDATE journal SET state = 'half-done';
         INSERT INTO events (time, kind, message, revision) VALUES ('t', 'k', 'm', -1);",
    )
    .unwrap();
    drop(conn);

    let err = store.server_revision("memory", 1).await.unwrap_err();
    let StoreError::Corrupt { what } = &err else {
        panic!("{err:?}");
    };
    assert!(
        what.contains("revision 1 of server `memory`: spec"),
        "{what}"
    );
    assert!(matches!(
        store.export().await,
        Err(StoreError::Corrupt { .. })
    ));

    let err = store.unfinished_deployments().await.unwrap_err();
    assert!(
        matches!(&err, StoreError::Corrupt { what } if what.contains("step 1 of deployment 1")),
        "{err:?}"
    );
    let err = store.events(0, 10).await.unwrap_err();
    assert!(matches!(err, StoreError::Corrupt { .. }), "{err:?}");
}

/// Rev 1 served, rev 2 failed and was rolled back: rev 3 is deployed from rev 1, the one
/// serving, not from rev 2, the latest recorded.
#[tokio::test]
async fn a_deployment_starts_from_the_fleet_revision_serving_not_the_latest() {
    let dir = TempDir::new("serving");
    let store = open(&db(&dir));
    assert_eq!(store.serving_fleet_revision().await.unwrap(), None);
    let begin = |hash: &'static str| {
        let store = store.clone();
        async move {
            store
                .record_and_begin_deployment(
                    fleet(vec![server("a", hash)]),
                    DeploymentKind::Deploy,
                    Some(format!("deploy {hash}")),
                )
                .await
                .unwrap()
        }
    };
    let (first, d1) = begin("1").await;
    assert_eq!(
        (first.number, d1.fleet_revision, d1.from_revision),
        (1, 1, None)
    );
    assert_eq!(d1.reason.as_deref(), Some("deploy 1"));
    assert_eq!(store.deployment(d1.id).await.unwrap(), Some(d1.clone()));
    store
        .finish_deployment(d1.id, DeploymentStatus::Succeeded, None)
        .await
        .unwrap();
    assert_eq!(store.serving_fleet_revision().await.unwrap(), Some(1));

    let (_, d2) = begin("2").await;
    assert_eq!(d2.from_revision, Some(1));
    store
        .finish_deployment(d2.id, DeploymentStatus::RolledBack, None)
        .await
        .unwrap();
    assert_eq!(store.serving_fleet_revision().await.unwrap(), Some(1));

    let (third, d3) = begin("3").await;
    assert_eq!((third.number, d3.from_revision), (3, Some(1)));
    // Failed (nothing rolled back) and unfinished deployments are passed over too.
    store
        .finish_deployment(d3.id, DeploymentStatus::Failed, None)
        .await
        .unwrap();
    let (_, d4) = begin("4").await;
    assert_eq!(d4.from_revision, Some(1));
    assert_eq!(store.serving_fleet_revision().await.unwrap(), Some(1));
    store
        .finish_deployment(d4.id, DeploymentStatus::Succeeded, None)
        .await
        .unwrap();
    assert_eq!(store.serving_fleet_revision().await.unwrap(), Some(4));
}

#[tokio::test]
async fn a_fleet_revision_and_its_deployment_are_recorded_together_or_not_at_all() {
    let dir = TempDir::new("together");
    let store = open(&db(&dir));
    let refused = store
        .record_and_begin_deployment(
            fleet(vec![server("a", "1"), server("a", "2")]),
            DeploymentKind::Deploy,
            None,
        )
        .await;
    assert!(
        matches!(refused, Err(StoreError::Invalid { .. })),
        "{refused:?}"
    );
    assert_eq!(store.latest_fleet_revision().await.unwrap(), None);
    assert!(store.deployments().await.unwrap().is_empty());

    let (revision, deployment) = store
        .record_and_begin_deployment(
            fleet(vec![server("a", "1")]),
            DeploymentKind::Rollback,
            None,
        )
        .await
        .unwrap();
    assert_eq!(revision.servers["a"], 1);
    assert_eq!(
        (deployment.fleet_revision, deployment.kind, deployment.state),
        (
            revision.number,
            DeploymentKind::Rollback,
            DeploymentStatus::InProgress
        )
    );
    assert_eq!(store.fleet_revisions().await.unwrap(), vec![revision]);
}

#[tokio::test]
async fn audit_records_are_exported_in_the_same_json_as_before() {
    let dir = TempDir::new("audit-json");
    let store = open(&db(&dir));
    // A duration as the gateway measures it, to the nanosecond.
    let measured = ToolCallRecord {
        token: None,
        outcome: ToolOutcome::TransportError,
        duration: Duration::from_nanos(1_234_567_891),
        ..audit_record("search")
    };
    store
        .append_audit(vec![audit_record("read_graph"), measured.clone()])
        .await
        .unwrap();

    let exported = store.export().await.unwrap();
    let json: Vec<String> = exported
        .audit
        .iter()
        .map(|a| serde_json::to_string(a).unwrap())
        .collect();
    assert_eq!(
        json,
        [
            r#"{"id":1,"time":"2026-01-02T03:04:05.006Z","token":"ci","server":"memory","revision":1,"tool":"read_graph","outcome":"ok","duration_ms":12.5}"#,
            r#"{"id":2,"time":"2026-01-02T03:04:05.006Z","token":null,"server":"memory","revision":1,"tool":"search","outcome":"transport_error","duration_ms":1234.567891}"#,
        ]
    );
    // The row holds what the gateway's measurement gave, and reads back exactly.
    let conn = rusqlite::Connection::open(db(&dir)).unwrap();
    let (time, outcome, duration_ms): (String, String, f64) = conn
        .query_row(
            "SELECT time, outcome, duration_ms FROM audit WHERE id = 2",
            [],
            |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
        )
        .unwrap();
    assert_eq!(
        (time.as_str(), outcome.as_str(), duration_ms),
        (
            "2026-01-02T03:04:05.006Z",
            "transport_error",
            measured.duration.as_secs_f64() * 1000.0
        )
    );
    assert_eq!(store.audit(1, 1).await.unwrap()[0].record, measured);
}

#[tokio::test]
async fn an_audit_row_a_newer_mcpfleet_wrote_is_a_clear_error_not_a_panic() {
    let dir = TempDir::new("audit-newer");
    let store = open(&db(&dir));
    store
        .append_audit(vec![audit_record("read_graph")])
        .await
        .unwrap();
    let document = serde_json::to_string(&store.export().await.unwrap()).unwrap();

    let conn = rusqlite::Connection::open(db(&dir)).unwrap();
    conn.execute(
        "UPDATE audit SET outcome = 'cancelled_by_user' WHERE id = 1",
        [],
    )
    .unwrap();
    drop(conn);
    for err in [
        store.audit(0, 10).await.unwrap_err(),
        store.export().await.unwrap_err(),
    ] {
        let StoreError::Corrupt { what } = &err else {
            panic!("{err:?}");
        };
        assert!(what.contains("audit record 1"), "{what}");
        assert!(what.contains("`cancelled_by_user`"), "{what}");
        assert!(what.contains("newer mcpfleet"), "{what}");
    }

    // The same in an export document: the import is refused with the reason.
    let newer = document.replace(r#""outcome":"ok""#, r#""outcome":"cancelled_by_user""#);
    let err = serde_json::from_str::<fleet_store::StateExport>(&newer).unwrap_err();
    assert!(err.to_string().contains("`cancelled_by_user`"), "{err}");
    assert!(err.to_string().contains("newer mcpfleet"), "{err}");
    // So is a time that is not RFC 3339 text, or a duration below zero.
    for (from, to, says) in [
        (
            "2026-01-02T03:04:05.006Z",
            "yesterday",
            "`yesterday` is not an RFC 3339 time",
        ),
        (
            r#""duration_ms":12.5"#,
            r#""duration_ms":-1"#,
            "-1 ms is not",
        ),
    ] {
        let err = serde_json::from_str::<fleet_store::StateExport>(&document.replace(from, to))
            .unwrap_err();
        assert!(err.to_string().contains(says), "{err}");
    }
}
