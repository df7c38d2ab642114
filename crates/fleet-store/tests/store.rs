//! The state store against real databases: every behavioural test runs on both backends
//! (`sqlite::…` on a database file in a temp directory, `postgres::…` on a fresh database in
//! the test process's private PostgreSQL cluster), then what only one backend has (a
//! file's mode, a second control plane on one database) and moving state between the two.

use fleet_routes::audit::{ToolCallRecord, ToolOutcome};
use fleet_store::{
    DeploymentKind, DeploymentStatus, NewDeployment, NewEvent, NewFleetRevision, NewServerRevision,
    PostgresStore, RevisionState, SCHEMA_VERSION, STATE_EXPORT_FORMAT, SqliteStore, StateStore,
    StepOutcome, StepState, StoreError,
};
use fleet_testkit::TempDir;
use fleet_testkit::postgres as pg;
use serde_json::json;
use std::collections::BTreeSet;
use std::io::{BufRead, BufReader, Write as _};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, UNIX_EPOCH};

/// Each test below, once per backend: `sqlite::NAME` and `postgres::NAME`.
macro_rules! on_both_backends {
    ($($test:ident),* $(,)?) => {
        mod sqlite {
            $(
                #[tokio::test]
                async fn $test() {
                    super::$test(super::Backend::new(super::Kind::Sqlite, stringify!($test)))
                        .await;
                }
            )*
        }
        mod postgres {
            $(
                #[tokio::test]
                async fn $test() {
                    super::$test(super::Backend::new(super::Kind::Postgres, stringify!($test)))
                        .await;
                }
            )*
        }
    };
}

on_both_backends!(
    server_revisions_are_reused_while_their_hash_is_unchanged,
    revision_states_and_invalid_revisions,
    journal_keeps_steps_in_order_and_confirms_each_once,
    an_unfinished_deployment_survives_reopening,
    export_then_import_gives_the_same_document,
    import_into_a_store_with_data_is_refused_and_changes_nothing,
    events_and_audit_page_by_id_and_read_their_newest,
    a_damaged_row_is_reported_not_panicked_on,
    a_deployment_starts_from_the_fleet_revision_serving_not_the_latest,
    a_fleet_revision_and_its_deployment_are_recorded_together_or_not_at_all,
    audit_records_are_exported_in_the_same_json_as_before,
    an_audit_row_a_newer_mcpfleet_wrote_is_a_clear_error_not_a_panic,
    a_killed_writer_loses_no_acknowledged_step,
    a_lease_is_held_until_it_lapses_then_taken_over_with_the_next_token,
    a_deposed_leaders_fenced_writes_fail_and_write_nothing,
    a_released_lease_is_taken_at_once_and_its_token_never_reused,
    a_version_1_database_gains_the_lease_and_keeps_its_data,
    a_leader_stopped_past_its_lease_never_writes_after_resuming,
    the_gateway_view_is_versioned_and_its_body_read_only_when_it_changed,
    a_version_2_database_gains_the_gateway_view_and_keeps_its_lease,
);

#[derive(Debug, Clone, Copy)]
enum Kind {
    Sqlite,
    Postgres,
}

/// A backend for one test: where its databases go.
#[derive(Debug)]
struct Backend {
    kind: Kind,
    /// SQLite's files.
    dir: TempDir,
    made: AtomicU32,
}

impl Backend {
    fn new(kind: Kind, test: &str) -> Self {
        Backend {
            kind,
            dir: TempDir::new(test),
            made: AtomicU32::new(0),
        }
    }

    /// A new, empty database (no store opened it yet).
    fn database(&self) -> Db {
        match self.kind {
            Kind::Sqlite => {
                let n = self.made.fetch_add(1, Ordering::Relaxed);
                Db::File(self.dir.path().join(format!("state-{n}.db")))
            }
            Kind::Postgres => Db::Url(pg::fresh_database()),
        }
    }
}

/// One database of a [`Backend`].
#[derive(Debug)]
enum Db {
    File(PathBuf),
    Url(String),
}

impl Db {
    /// The database [`locator`](Db::locator) gave.
    fn at(locator: String) -> Db {
        if locator.starts_with("postgres://") {
            Db::Url(locator)
        } else {
            Db::File(PathBuf::from(locator))
        }
    }

    /// Where it is, as text another process can take: the file's path or the URL.
    fn locator(&self) -> String {
        match self {
            Db::File(path) => path.display().to_string(),
            Db::Url(url) => url.clone(),
        }
    }

    /// A store on it, as the control plane opens one.
    async fn open(&self) -> Arc<dyn StateStore> {
        match self {
            Db::File(path) => Arc::new(SqliteStore::open(path).unwrap()),
            Db::Url(url) => Arc::new(PostgresStore::connect(url).await.unwrap()),
        }
    }

    /// Runs `sql` on it beside the store, as someone editing it by hand would.
    fn execute(&self, sql: &str) {
        match self {
            Db::File(path) => rusqlite::Connection::open(path)
                .unwrap()
                .execute_batch(sql)
                .unwrap(),
            Db::Url(url) => {
                pg::cluster().psql(database_name(url), sql);
            }
        }
    }

    /// The one row `sql` selects, each column as text.
    fn row(&self, sql: &str) -> Vec<String> {
        match self {
            Db::File(path) => {
                let conn = rusqlite::Connection::open(path).unwrap();
                conn.query_row(sql, [], |r| {
                    (0..r.as_ref().column_count())
                        .map(|i| {
                            Ok(match r.get::<_, rusqlite::types::Value>(i)? {
                                rusqlite::types::Value::Real(x) => x.to_string(),
                                rusqlite::types::Value::Integer(n) => n.to_string(),
                                rusqlite::types::Value::Text(t) => t,
                                other => format!("{other:?}"),
                            })
                        })
                        .collect()
                })
                .unwrap()
            }
            Db::Url(url) => {
                let printed = pg::cluster().psql(database_name(url), sql);
                printed.trim_end().split('|').map(str::to_owned).collect()
            }
        }
    }
}

/// The database a `postgres://…/NAME` URL names.
fn database_name(url: &str) -> &str {
    url.rsplit_once('/').map_or(url, |(_, name)| name)
}

/// The store file in a SQLite-only test's directory.
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

async fn server_revisions_are_reused_while_their_hash_is_unchanged(b: Backend) {
    let db = b.database();
    let store = db.open().await;

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

async fn revision_states_and_invalid_revisions(b: Backend) {
    let db = b.database();
    let store = db.open().await;
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

async fn journal_keeps_steps_in_order_and_confirms_each_once(b: Backend) {
    let db = b.database();
    let store = db.open().await;
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

async fn an_unfinished_deployment_survives_reopening(b: Backend) {
    let db = b.database();
    let store = db.open().await;
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

    let store = db.open().await;
    let unfinished = store.unfinished_deployments().await.unwrap();
    assert_eq!(unfinished.len(), 1, "{unfinished:?}");
    assert_eq!(unfinished[0].id, crashed.id);
    assert_eq!(unfinished[0].state, DeploymentStatus::InProgress);
    assert_eq!(unfinished[0].steps.len(), 1);
    assert_eq!(unfinished[0].steps[0].state, StepState::Pending);
    assert_eq!(unfinished[0].steps[0].step, json!({ "start": "a" }));
}

/// Set for the child process of [`a_killed_writer_loses_no_acknowledged_step`]: its
/// database ([`Db::locator`]).
const CHILD_DB: &str = "FLEET_STORE_TEST_CHILD_DB";

/// Not a test on its own: the child process of the kill test, which runs it by name with
/// `--ignored`. It journals steps forever and prints each sequence number once `append_step`
/// has returned.
#[tokio::test]
#[ignore = "the child process of a_killed_writer_loses_no_acknowledged_step, which runs it"]
async fn journal_steps_until_killed() {
    let db = std::env::var(CHILD_DB).expect(
        "run by a_killed_writer_loses_no_acknowledged_step, which sets FLEET_STORE_TEST_CHILD_DB",
    );
    let store = Db::at(db).open().await;
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

async fn a_killed_writer_loses_no_acknowledged_step(b: Backend) {
    let db = b.database();
    let mut child = Command::new(std::env::current_exe().unwrap())
        .args([
            "--ignored",
            "--exact",
            "journal_steps_until_killed",
            "--nocapture",
        ])
        .env(CHILD_DB, db.locator())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    // Blocking reads: nothing else runs on this test's runtime meanwhile.
    let mut acknowledged = 0;
    for line in BufReader::new(child.stdout.take().unwrap()).lines() {
        // The first after libtest's `test NAME ... `, on the same line.
        if let Some((_, seq)) = line.unwrap().split_once("step ") {
            acknowledged = seq.parse().unwrap();
            if acknowledged >= 20 {
                break;
            }
        }
    }
    child.kill().unwrap(); // SIGKILL, mid-write or not
    child.wait().unwrap();
    assert_eq!(acknowledged, 20, "the child stopped early");

    let unfinished = db.open().await.unfinished_deployments().await.unwrap();
    let steps = &unfinished[0].steps;
    assert!(steps.len() >= acknowledged, "{} steps", steps.len());
    assert!(steps.iter().zip(1..).all(|(s, seq)| s.seq == seq));
}

// The leadership lease and fencing.

/// Long enough that a lease taken with it cannot lapse during a test.
const HELD: Duration = Duration::from_secs(60);

/// How long a test lets a short lease run before another may take it over. Each wait
/// polls the store, so a slow machine waits longer, never wrongly.
const TAKEOVER: Duration = Duration::from_secs(10);

/// The lease a standby (`c`) takes once the lease it contends for lapses by the database's
/// clock. Polling the store is the waiting: a lease's lapse is the very thing under test.
async fn take_over(standby: &dyn StateStore, holder: &str) -> fleet_store::Lease {
    fleet_testkit::wait_until("the lapsed lease is taken over", TAKEOVER, async || {
        standby.acquire_lease(holder, HELD).await.unwrap()
    })
    .await
}

async fn a_lease_is_held_until_it_lapses_then_taken_over_with_the_next_token(b: Backend) {
    let db = b.database();
    // Two control planes on one database: two stores, two connections.
    let (leader, standby) = (db.open().await, db.open().await);
    assert_eq!(leader.lease().await.unwrap(), None);

    let held = leader.acquire_lease("cp-a", HELD).await.unwrap().unwrap();
    assert_eq!((held.holder.as_str(), held.token), ("cp-a", 1));
    assert!(held.expires_at > held.acquired_at, "{held:?}");
    assert_eq!(standby.acquire_lease("cp-b", HELD).await.unwrap(), None);
    // Acquiring again while holding it renews it: the same token, the same start.
    let again = leader.acquire_lease("cp-a", HELD).await.unwrap().unwrap();
    assert_eq!((again.token, &again.acquired_at), (1, &held.acquired_at));
    let status = standby.lease().await.unwrap().unwrap();
    assert_eq!(
        (status.holder.as_str(), status.token, status.live),
        ("cp-a", 1, true)
    );

    // The leader's last renewal is short; then it stops renewing (killed, stopped, cut off).
    let last = leader
        .renew_lease(&held, Duration::from_millis(200))
        .await
        .unwrap();
    assert_eq!(last.token, 1);
    assert!(last.expires_at < again.expires_at, "{last:?} {again:?}");
    let taken = take_over(&*standby, "cp-b").await;
    assert_eq!((taken.holder.as_str(), taken.token), ("cp-b", 2));
    // Both times are the database's: the standby got it only once the lease had lapsed.
    assert!(taken.acquired_at >= last.expires_at, "{taken:?} {last:?}");
    let status = leader.lease().await.unwrap().unwrap();
    assert_eq!(
        (status.holder.as_str(), status.token, status.live),
        ("cp-b", 2, true)
    );

    // The old leader, waking up, can neither renew nor take it back.
    let err = leader.renew_lease(&held, HELD).await.unwrap_err();
    assert!(
        matches!(&err, StoreError::Fenced { mine: 1, holder: Some(h), token: Some(2) } if h == "cp-b"),
        "{err:?}"
    );
    let message = err.to_string();
    assert!(
        message.contains("`cp-b` took the lease since (token 2)"),
        "{message}"
    );
    assert!(message.contains("Stop acting as the leader"), "{message}");
    assert_eq!(leader.acquire_lease("cp-a", HELD).await.unwrap(), None);
    // The new leader renews its own.
    let renewed = standby.renew_lease(&taken, HELD).await.unwrap();
    assert_eq!(
        (renewed.token, &renewed.acquired_at),
        (2, &taken.acquired_at)
    );

    let err = leader
        .acquire_lease("cp-a", Duration::ZERO)
        .await
        .unwrap_err();
    assert!(matches!(err, StoreError::Invalid { .. }), "{err:?}");
    assert!(err.to_string().contains("ttl"), "{err}");
}

async fn a_deposed_leaders_fenced_writes_fail_and_write_nothing(b: Backend) {
    let db = b.database();
    let (old, new) = (db.open().await, db.open().await);
    old.record_fleet_revision(fleet(vec![server("a", "1")]))
        .await
        .unwrap();
    let d = old.begin_deployment(deploy(1)).await.unwrap();

    let lease = old
        .acquire_lease("cp-a", Duration::from_millis(200))
        .await
        .unwrap()
        .unwrap();
    let journal = old.fenced(lease.token);
    // While its token is current the fenced handle writes, even past the lease's expiry:
    // no one else can have led in between.
    assert_eq!(
        journal.append_step(d.id, json!({ "i": 1 })).await.unwrap(),
        1
    );

    let taken = take_over(&*new, "cp-b").await;
    assert_eq!(taken.token, 2);
    let before = new.export().await.unwrap();
    let is_fenced = |what: &str, result: Result<(), StoreError>| match result {
        Err(StoreError::Fenced {
            mine: 1,
            holder: Some(holder),
            token: Some(2),
        }) if holder == "cp-b" => {}
        other => panic!("{what} of the deposed leader: {other:?}"),
    };
    is_fenced(
        "append_step",
        journal.append_step(d.id, json!({ "i": 2 })).await.map(drop),
    );
    is_fenced(
        "confirm_step",
        journal.confirm_step(d.id, 1, StepOutcome::Done, None).await,
    );
    is_fenced(
        "finish_deployment",
        journal
            .finish_deployment(d.id, DeploymentStatus::Succeeded, None)
            .await,
    );
    is_fenced(
        "append_events",
        journal.append_events(vec![event("x")]).await.map(drop),
    );
    is_fenced(
        "append_audit",
        journal.append_audit(vec![audit_record("search")]).await,
    );
    is_fenced(
        "set_server_revision_state",
        journal
            .set_server_revision_state("a", 1, RevisionState::Superseded, None)
            .await,
    );
    is_fenced(
        "publish_gateway_view",
        journal
            .publish_gateway_view(json!({ "routes": "stale" }))
            .await
            .map(drop),
    );
    is_fenced(
        "record_and_begin_deployment",
        journal
            .record_and_begin_deployment(
                fleet(vec![server("a", "2")]),
                DeploymentKind::Deploy,
                None,
            )
            .await
            .map(drop),
    );
    // Nothing was written, and the deposed handle still reads.
    assert_eq!(new.export().await.unwrap(), before);
    assert_eq!(new.gateway_view(0).await.unwrap(), None);
    assert_eq!(
        journal.deployment(d.id).await.unwrap().unwrap().steps.len(),
        1
    );

    // The new leader's fenced handle carries on the journal.
    let leading = new.fenced(taken.token);
    assert_eq!(
        leading.append_step(d.id, json!({ "i": 2 })).await.unwrap(),
        2
    );
    leading
        .finish_deployment(d.id, DeploymentStatus::Succeeded, None)
        .await
        .unwrap();
    // A handle never fenced writes whatever the lease: one control plane, no lease.
    old.append_events(vec![event("unfenced")]).await.unwrap();
    // A token no lease ever had is fenced too.
    let err = new
        .fenced(7)
        .append_events(vec![event("x")])
        .await
        .unwrap_err();
    assert!(
        matches!(
            err,
            StoreError::Fenced {
                mine: 7,
                token: Some(2),
                ..
            }
        ),
        "{err:?}"
    );
}

/// Not a test on its own: the child process of
/// [`a_leader_stopped_past_its_lease_never_writes_after_resuming`], which runs it by name with
/// `--ignored`. It takes the lease, then for each line on stdin journals a step through its
/// fenced handle, renews the lease and prints `step N`; once fenced it prints the error and
/// ends.
#[tokio::test]
#[ignore = "the child process of a_leader_stopped_past_its_lease_never_writes_after_resuming"]
async fn lead_until_fenced() {
    let db = std::env::var(CHILD_DB).expect(
        "run by a_leader_stopped_past_its_lease_never_writes_after_resuming, which sets \
         FLEET_STORE_TEST_CHILD_DB",
    );
    let store = Db::at(db).open().await;
    let ttl = Duration::from_millis(300);
    let mut lease = store
        .acquire_lease("cp-stopped", ttl)
        .await
        .unwrap()
        .expect("no one leads before the child");
    let journal = store.fenced(lease.token);
    for go in std::io::stdin().lines() {
        go.unwrap();
        match journal.append_step(1, json!({ "by": "cp-stopped" })).await {
            Ok(seq) => {
                lease = store.renew_lease(&lease, ttl).await.unwrap();
                // Printed last: the parent stops this process once it reads the line.
                println!("step {seq}");
            }
            Err(e @ StoreError::Fenced { .. }) => {
                println!("fenced: {e}");
                return;
            }
            Err(e) => panic!("{e}"),
        }
    }
}

async fn a_leader_stopped_past_its_lease_never_writes_after_resuming(b: Backend) {
    let db = b.database();
    let standby = db.open().await;
    standby
        .record_fleet_revision(fleet(vec![server("a", "1")]))
        .await
        .unwrap();
    let d = standby.begin_deployment(deploy(1)).await.unwrap();
    let mut leader = Command::new(std::env::current_exe().unwrap())
        .args(["--ignored", "--exact", "lead_until_fenced", "--nocapture"])
        .env(CHILD_DB, db.locator())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut go = leader.stdin.take().unwrap();
    let mut said = BufReader::new(leader.stdout.take().unwrap()).lines();
    // Blocking reads: nothing else runs on this test's runtime meanwhile. The first line
    // follows libtest's `test NAME ... ` on the same line.
    let mut next = move || loop {
        let line = said.next().expect("the leader ended early").unwrap();
        if let Some(at) = line.find("step ").or_else(|| line.find("fenced: ")) {
            return line[at..].to_owned();
        }
    };
    let signal = |name: &str| {
        let sent = Command::new("kill")
            .args([format!("-{name}"), leader.id().to_string()])
            .status()
            .unwrap();
        assert!(sent.success(), "kill -{name}");
    };
    for seq in 1..=3 {
        writeln!(go, "go").unwrap();
        assert_eq!(next(), format!("step {seq}"));
    }

    // Stopped between two steps (outside any transaction), the leader stops renewing; its
    // lease lapses and the standby takes over. Then it resumes and journals its next step.
    signal("STOP");
    let taken = take_over(&*standby, "cp-standby").await;
    assert_eq!(taken.token, 2);
    writeln!(go, "go").unwrap();
    signal("CONT");
    let last = next();
    assert!(
        last.starts_with("fenced: ")
            && last.contains("`cp-standby` took the lease since (token 2)"),
        "{last}"
    );
    assert!(leader.wait().unwrap().success());
    let steps = standby.deployment(d.id).await.unwrap().unwrap().steps;
    assert_eq!(steps.len(), 3, "{steps:?}");
}

async fn a_released_lease_is_taken_at_once_and_its_token_never_reused(b: Backend) {
    let db = b.database();
    let (a, c) = (db.open().await, db.open().await);
    let err = a
        .fenced(1)
        .append_events(vec![event("x")])
        .await
        .unwrap_err();
    assert!(
        matches!(
            err,
            StoreError::Fenced {
                mine: 1,
                holder: None,
                token: None
            }
        ),
        "{err:?}"
    );
    assert!(err.to_string().contains("no lease was ever taken"), "{err}");

    let first = a.acquire_lease("cp-a", HELD).await.unwrap().unwrap();
    a.release_lease(&first).await.unwrap();
    let status = c.lease().await.unwrap().unwrap();
    assert_eq!(
        (status.holder.as_str(), status.token, status.live),
        ("cp-a", 1, false)
    );
    // Released with a minute left: the other control plane takes it without waiting.
    let second = c.acquire_lease("cp-b", HELD).await.unwrap().unwrap();
    assert_eq!((second.holder.as_str(), second.token), ("cp-b", 2));
    // Releasing a superseded lease changes nothing.
    a.release_lease(&first).await.unwrap();
    assert!(c.lease().await.unwrap().unwrap().live);
    assert_eq!(a.acquire_lease("cp-a", HELD).await.unwrap(), None);

    c.release_lease(&second).await.unwrap();
    // The same holder as before gets a new token, never an old one.
    let third = a.acquire_lease("cp-a", HELD).await.unwrap().unwrap();
    assert_eq!(third.token, 3);

    // The lease is not part of the state: exports leave it out, and it does not make a
    // store too full to import into.
    let exported = serde_json::to_value(a.export().await.unwrap()).unwrap();
    assert_eq!(exported["format"], json!(STATE_EXPORT_FORMAT));
    assert!(exported.get("lease").is_none(), "{exported}");
    let source = b.database().open().await;
    populate(&*source).await;
    a.import(source.export().await.unwrap()).await.unwrap();
    assert_eq!(a.export().await.unwrap(), source.export().await.unwrap());
    assert_eq!(c.lease().await.unwrap().unwrap().token, 3);
}

async fn a_version_1_database_gains_the_lease_and_keeps_its_data(b: Backend) {
    let db = b.database();
    let store = db.open().await;
    populate(&*store).await;
    let before = store.export().await.unwrap();
    drop(store);
    // What the previous mcpfleet left: schema version 1, no lease table.
    db.execute(match &db {
        Db::File(_) => "DROP TABLE lease; DROP TABLE gateway_view; PRAGMA user_version = 1;",
        Db::Url(_) => {
            "DROP TABLE lease; DROP TABLE gateway_view; UPDATE mcpfleet_schema SET version = 1;"
        }
    });

    let store = db.open().await;
    assert_eq!(SCHEMA_VERSION, 3);
    assert_eq!(schema_version(&db), ["3"]);
    assert_eq!(store.export().await.unwrap(), before);
    let lease = store.acquire_lease("cp-a", HELD).await.unwrap().unwrap();
    assert_eq!(lease.token, 1);
}

/// The schema version the database records.
fn schema_version(db: &Db) -> Vec<String> {
    match db {
        Db::File(_) => db.row("PRAGMA user_version"),
        Db::Url(_) => db.row("SELECT version FROM mcpfleet_schema"),
    }
}

async fn a_version_2_database_gains_the_gateway_view_and_keeps_its_lease(b: Backend) {
    let db = b.database();
    let store = db.open().await;
    populate(&*store).await;
    let lease = store.acquire_lease("cp-a", HELD).await.unwrap().unwrap();
    let before = store.export().await.unwrap();
    drop(store);
    // What the previous mcpfleet left: schema version 2, no gateway view.
    db.execute(match &db {
        Db::File(_) => "DROP TABLE gateway_view; PRAGMA user_version = 2;",
        Db::Url(_) => "DROP TABLE gateway_view; UPDATE mcpfleet_schema SET version = 2;",
    });

    let store = db.open().await;
    assert_eq!(schema_version(&db), ["3"]);
    assert_eq!(store.export().await.unwrap(), before);
    assert_eq!(store.lease().await.unwrap().unwrap().token, lease.token);
    // The leader still leads, and publishes through its fenced handle.
    let leading = store.fenced(lease.token);
    assert_eq!(
        leading
            .publish_gateway_view(json!({ "v": 1 }))
            .await
            .unwrap(),
        1
    );
}

async fn the_gateway_view_is_versioned_and_its_body_read_only_when_it_changed(b: Backend) {
    let db = b.database();
    let (leader, replica) = (db.open().await, db.open().await);
    assert_eq!(replica.gateway_view(0).await.unwrap(), None, "none yet");

    let lease = leader.acquire_lease("cp-a", HELD).await.unwrap().unwrap();
    let leading = leader.fenced(lease.token);
    let first = json!({ "routes": { "servers": {} }, "tokens": [] });
    assert_eq!(
        leading.publish_gateway_view(first.clone()).await.unwrap(),
        1
    );
    let seen = replica.gateway_view(0).await.unwrap().unwrap();
    assert_eq!((seen.version, &seen.body), (1, &first));
    assert!(seen.published_at.ends_with('Z'), "{seen:?}");
    // Unchanged: nothing to read again.
    assert_eq!(replica.gateway_view(1).await.unwrap(), None);

    let second = json!({ "routes": { "servers": {} }, "tokens": [{ "name": "ci" }] });
    assert_eq!(
        leading.publish_gateway_view(second.clone()).await.unwrap(),
        2
    );
    let seen = replica.gateway_view(1).await.unwrap().unwrap();
    assert_eq!((seen.version, seen.body), (2, second));
    // A version the caller has from elsewhere (a database restored from an older backup,
    // say) is not the current one either: the body comes.
    assert_eq!(replica.gateway_view(7).await.unwrap().unwrap().version, 2);

    // Not state a backup moves: the next leader publishes its own.
    let exported = serde_json::to_value(leader.export().await.unwrap()).unwrap();
    assert!(!exported.to_string().contains("\"ci\""), "{exported}");

    db.execute("UPDATE gateway_view SET body = '{not json'");
    let err = replica.gateway_view(0).await.unwrap_err();
    assert!(
        matches!(&err, StoreError::Corrupt { what } if what.contains("gateway view 2")),
        "{err:?}"
    );
}

// SQLite only: the file itself.

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

async fn export_then_import_gives_the_same_document(b: Backend) {
    let old = b.database().open().await;
    populate(&*old).await;
    let exported = old.export().await.unwrap();
    assert_eq!(exported.format, STATE_EXPORT_FORMAT);
    assert_eq!(exported.fleet_revisions.len(), 2);
    assert_eq!(exported.server_revisions.len(), 3);
    assert_eq!(exported.deployments.len(), 2);
    assert_eq!((exported.events.len(), exported.audit.len()), (2, 2));

    // Through JSON, as `export-state` / `import-state` do.
    let document = serde_json::to_string_pretty(&exported).unwrap();
    let new = b.database().open().await;
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

async fn import_into_a_store_with_data_is_refused_and_changes_nothing(b: Backend) {
    let source = b.database().open().await;
    populate(&*source).await;
    let exported = source.export().await.unwrap();

    let target = b.database().open().await;
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
    let fresh = b.database().open().await;
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

async fn events_and_audit_page_by_id_and_read_their_newest(b: Backend) {
    let db = b.database();
    let store = db.open().await;
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

    // A batch as large as the gateway writes: every record, in order, numbered on (a
    // PostgreSQL sequence may have skipped the ids of the refused batch).
    let many: Vec<String> = (0..101).map(|n| format!("b{n}")).collect();
    store
        .append_audit(many.iter().map(|t| audit_record(t)).collect())
        .await
        .unwrap();
    let written = store.audit(3, 200).await.unwrap();
    assert_eq!(
        written
            .iter()
            .map(|r| r.record.tool.as_str())
            .collect::<Vec<_>>(),
        many
    );
    assert!(written.windows(2).all(|pair| pair[0].id < pair[1].id));
    assert_eq!(written[100].record, audit_record("b100"));
}

async fn a_damaged_row_is_reported_not_panicked_on(b: Backend) {
    let db = b.database();
    let store = db.open().await;
    store
        .record_fleet_revision(fleet(vec![server("memory", "m1")]))
        .await
        .unwrap();
    let d = store.begin_deployment(deploy(1)).await.unwrap();
    store.append_step(d.id, json!({})).await.unwrap();

    db.execute(
        "UPDATE server_revisions SET spec = '{not json';
         UPDATE journal SET state = 'half-done';
         INSERT INTO events (time, kind, message, revision) VALUES ('t', 'k', 'm', -1);",
    );

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
async fn a_deployment_starts_from_the_fleet_revision_serving_not_the_latest(b: Backend) {
    let db = b.database();
    let store = db.open().await;
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

async fn a_fleet_revision_and_its_deployment_are_recorded_together_or_not_at_all(b: Backend) {
    let db = b.database();
    let store = db.open().await;
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

async fn audit_records_are_exported_in_the_same_json_as_before(b: Backend) {
    let db = b.database();
    let store = db.open().await;
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
    let row = db.row("SELECT time, outcome, duration_ms FROM audit WHERE id = 2");
    assert_eq!(
        (
            row[0].as_str(),
            row[1].as_str(),
            row[2].parse::<f64>().unwrap()
        ),
        (
            "2026-01-02T03:04:05.006Z",
            "transport_error",
            measured.duration.as_secs_f64() * 1000.0
        )
    );
    assert_eq!(store.audit(1, 1).await.unwrap()[0].record, measured);
}

async fn an_audit_row_a_newer_mcpfleet_wrote_is_a_clear_error_not_a_panic(b: Backend) {
    let db = b.database();
    let store = db.open().await;
    store
        .append_audit(vec![audit_record("read_graph")])
        .await
        .unwrap();
    let document = serde_json::to_string(&store.export().await.unwrap()).unwrap();

    db.execute("UPDATE audit SET outcome = 'cancelled_by_user' WHERE id = 1");
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

// PostgreSQL only: several control planes on one database, a server that goes away.

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_two_control_planes_on_one_database_never_number_alike() {
    let url = pg::fresh_database();
    // Both start at once on a new database: one migrates, the other waits and finds the
    // schema current.
    let (first, second) = tokio::join!(PostgresStore::connect(&url), PostgresStore::connect(&url));
    let stores = [first.unwrap(), second.unwrap()];
    stores[0]
        .record_fleet_revision(fleet(vec![server("a", "setup")]))
        .await
        .unwrap();
    let d = stores[0].begin_deployment(deploy(1)).await.unwrap();

    const EACH: u64 = 25;
    let mut tasks = tokio::task::JoinSet::new();
    for store in &stores {
        for i in 0..EACH {
            let store = store.clone();
            tasks.spawn(async move {
                let revision = store
                    .record_fleet_revision(fleet(vec![server("a", &format!("h{i}"))]))
                    .await
                    .unwrap();
                let seq = store.append_step(d.id, json!({ "i": i })).await.unwrap();
                let ids = store
                    .append_events(vec![event("x"), event("y")])
                    .await
                    .unwrap();
                (revision.number, seq, ids)
            });
        }
    }
    let (mut revisions, mut seqs, mut ids) = (BTreeSet::new(), BTreeSet::new(), BTreeSet::new());
    while let Some(done) = tasks.join_next().await {
        let (revision, seq, batch) = done.unwrap();
        assert!(
            revisions.insert(revision),
            "fleet revision {revision} twice"
        );
        assert!(seqs.insert(seq), "step {seq} twice");
        // A batch's ids are consecutive: no other writer's rows in between.
        assert_eq!(batch[1], batch[0] + 1, "{batch:?}");
        assert!(
            ids.insert(batch[0]) && ids.insert(batch[1]),
            "{batch:?} twice"
        );
    }
    assert_eq!(revisions, (2..=2 * EACH + 1).collect());
    assert_eq!(seqs, (1..=2 * EACH).collect());
    assert_eq!(ids, (1..=4 * EACH).collect());
    // Two stores recording one spec share its server revision: h0 … h24 and the setup's.
    let numbers: Vec<u64> = stores[1]
        .server_revisions("a")
        .await
        .unwrap()
        .iter()
        .map(|r| r.number)
        .collect();
    assert_eq!(numbers, (1..=EACH + 1).collect::<Vec<_>>());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_control_planes_racing_for_the_lease_get_one_leader_and_unique_tokens() {
    let url = pg::fresh_database();
    let mut stores = Vec::new();
    for _ in 0..4 {
        stores.push(PostgresStore::connect(&url).await.unwrap());
    }
    let mut tokens = BTreeSet::new();
    for round in 1..=5u64 {
        let mut racing = tokio::task::JoinSet::new();
        for (i, store) in stores.iter().enumerate() {
            let store = store.clone();
            racing.spawn(async move { store.acquire_lease(&format!("cp-{i}"), HELD).await });
        }
        let won: Vec<_> = racing
            .join_all()
            .await
            .into_iter()
            .filter_map(|acquired| acquired.unwrap())
            .collect();
        assert_eq!(won.len(), 1, "round {round}: {won:?}");
        let leader = &won[0];
        assert_eq!(leader.token, round, "{leader:?}");
        assert!(tokens.insert(leader.token), "token {} twice", leader.token);
        // The winner steps down, and the next round races again.
        stores[0].release_lease(leader).await.unwrap();
    }
}

#[tokio::test]
async fn postgres_a_terminated_connection_is_replaced_by_the_next_call() {
    let url = pg::fresh_database();
    let store = PostgresStore::connect(&url).await.unwrap();
    assert_eq!(store.append_events(vec![event("a")]).await.unwrap(), [1]);
    let terminate = || {
        // Materialized first, so that only the store's backend is terminated (not psql's);
        // each waits (up to 5 s) until the backend has gone.
        let sql = format!(
            "WITH store AS MATERIALIZED (SELECT pid FROM pg_stat_activity WHERE datname = '{}')
             SELECT count(*) FILTER (WHERE pg_terminate_backend(pid, 5000)) FROM store",
            database_name(&url)
        );
        assert_eq!(pg::cluster().psql("postgres", &sql).trim(), "1");
    };

    terminate();
    assert_eq!(store.append_events(vec![event("b")]).await.unwrap(), [2]);
    terminate();
    let kinds: Vec<_> = store
        .events(0, 10)
        .await
        .unwrap()
        .into_iter()
        .map(|e| e.event.kind)
        .collect();
    assert_eq!(kinds, ["a", "b"]);
}

#[tokio::test]
async fn postgres_a_newer_schema_is_refused_and_left_alone() {
    let url = pg::fresh_database();
    drop(PostgresStore::connect(&url).await.unwrap());
    let cluster = pg::cluster();
    cluster.psql(
        database_name(&url),
        "UPDATE mcpfleet_schema SET version = 999",
    );

    let err = PostgresStore::connect(&url).await.unwrap_err();
    assert!(
        matches!(&err, StoreError::NewerSchema { found: 999, supported, database }
            if *supported == SCHEMA_VERSION && *database == url),
        "{err:?}"
    );
    let message = err.to_string();
    assert!(message.contains(&url), "{message}");
    assert!(message.contains("upgrade mcpfleet"), "{message}");
    let version = cluster.psql(database_name(&url), "SELECT version FROM mcpfleet_schema");
    assert_eq!(version.trim(), "999");
}

#[tokio::test]
async fn postgres_errors_never_show_the_password() {
    let secret = "s3cret-Pa55";
    let port = pg::cluster().port();
    let absent = format!("postgres://postgres:{secret}@127.0.0.1:{port}/no_such_database");
    let err = PostgresStore::connect(&absent).await.unwrap_err();
    assert!(matches!(err, StoreError::Connect { .. }), "{err:?}");
    let message = err.to_string();
    assert!(message.contains("postgres:***@127.0.0.1"), "{message}");
    assert!(
        message.contains("\"no_such_database\" does not exist"),
        "{message}"
    );

    let nobody = fleet_testkit::free_port();
    let unreachable = format!("postgresql://fleet:{secret}@127.0.0.1:{nobody}/state");
    let not_a_url = format!("postgres://fleet:{secret}@127.0.0.1:no-port/state");
    let keywords = format!("host=127.0.0.1 port={nobody} user=fleet password='{secret} x'");
    let query = format!("postgres://fleet@127.0.0.1:{nobody}/state?password={secret}");
    for url in [unreachable, not_a_url, keywords, query] {
        let err = PostgresStore::connect(&url).await.unwrap_err();
        for shown in [err.to_string(), format!("{err:?}")] {
            assert!(!shown.contains(secret), "{shown}");
            assert!(shown.contains("***"), "{shown}");
        }
    }
}

// Between the backends.

#[tokio::test]
async fn state_moves_from_sqlite_to_postgres_and_back_unchanged() {
    let dir = TempDir::new("move");
    let sqlite = open(&dir.path().join("from.db"));
    populate(&*sqlite).await;
    let document = serde_json::to_string_pretty(&sqlite.export().await.unwrap()).unwrap();

    let postgres = PostgresStore::connect(&pg::fresh_database()).await.unwrap();
    postgres
        .import(serde_json::from_str(&document).unwrap())
        .await
        .unwrap();
    let from_postgres = postgres.export().await.unwrap();
    assert_eq!(
        serde_json::to_string_pretty(&from_postgres).unwrap(),
        document
    );

    let back = open(&dir.path().join("back.db"));
    back.import(from_postgres).await.unwrap();
    let again = back.export().await.unwrap();
    assert_eq!(serde_json::to_string_pretty(&again).unwrap(), document);
}

#[tokio::test]
async fn postgres_a_connection_lost_mid_call_fails_that_call_alone() {
    let url = pg::fresh_database();
    let store = PostgresStore::connect(&url).await.unwrap();
    store
        .record_fleet_revision(fleet(vec![server("a", "1")]))
        .await
        .unwrap();
    let d = store.begin_deployment(deploy(1)).await.unwrap();

    // Another session locks the deployment's row, so the store's next write to it waits in
    // the middle of its call, its transaction begun.
    let (mut other, connection) = tokio_postgres::connect(&url, tokio_postgres::NoTls)
        .await
        .unwrap();
    tokio::spawn(connection);
    let locking = other.transaction().await.unwrap();
    locking
        .execute("SELECT 1 FROM deployments WHERE id = 1 FOR UPDATE", &[])
        .await
        .unwrap();
    let finishing = {
        let store = store.clone();
        tokio::spawn(async move {
            store
                .finish_deployment(d.id, DeploymentStatus::Succeeded, None)
                .await
        })
    };
    let waiting = format!(
        "SELECT count(*) FROM pg_stat_activity
         WHERE datname = '{}' AND wait_event_type = 'Lock'",
        database_name(&url)
    );
    fleet_testkit::wait_until(
        "the store's write waits for the row",
        Duration::from_secs(10),
        async || pg::cluster().psql("postgres", &waiting).trim() == "1",
    )
    .await;
    locking
        .execute(
            "SELECT pg_terminate_backend(pid, 5000) FROM pg_stat_activity
             WHERE datname = current_database() AND pid <> pg_backend_pid()",
            &[],
        )
        .await
        .unwrap();

    // That call fails, naming the database, and left nothing behind.
    let err = finishing.await.unwrap().unwrap_err();
    assert!(
        matches!(&err, StoreError::Database(what) if what.starts_with(&url)),
        "{err:?}"
    );
    locking.rollback().await.unwrap();
    let unfinished = store.deployment(d.id).await.unwrap().unwrap();
    assert_eq!(unfinished.state, DeploymentStatus::InProgress);
    // The next call connects again.
    store
        .finish_deployment(d.id, DeploymentStatus::Succeeded, None)
        .await
        .unwrap();
    assert_eq!(store.serving_fleet_revision().await.unwrap(), Some(1));
}
