//! Crash recovery against a real SQLite store: a control plane that served fleet revision 1
//! died while deploying revision 2 (which changes `api`, not `keep`), its journal cut after
//! each kind of step it writes; [`Engine::recover`] settles deployment 2 as the rules say —
//! how it is recorded, which revisions are marked failed, and what is deployed next.

use fleet_engine::recovery::{Given, Redeploy, StoredFleets};
use fleet_engine::report::EventKind;
use fleet_engine::{Engine, JournalStep, ServerAction, ServerStep, append_step};
use fleet_plan::ChangeCounts;
use fleet_spec::ValidFleet;
use fleet_store::{
    DeploymentKind, DeploymentStatus, FleetRevision, NewFleetRevision, NewServerRevision,
    RevisionState, SqliteStore, StateStore, StepOutcome,
};
use fleet_testkit::TempDir;
use fleet_testkit::fake_runtime::FakeRuntime;
mod support;

use support::validate;

/// The fleet file of revision `api_revision`: only `api` changes between revisions.
fn fleet_file(api_revision: u32, on_failure: &str) -> String {
    format!(
        r#"
version: 1
name: crashes
servers:
  api:
    stdio: {{ command: fake, args: ["api{api_revision}"], isolation: shared }}
    on_failure: {on_failure}
  keep:
    stdio: {{ command: fake, args: ["keep"], isolation: shared }}
"#
    )
}

/// Reads stored revisions back by validating their text again; `unreadable` is a revision
/// that no longer validates (a secret gone, say).
struct Reader {
    unreadable: Option<u64>,
}

impl StoredFleets for Reader {
    type Error = String;

    async fn fleet(&self, revision: &FleetRevision) -> Result<ValidFleet, String> {
        if self.unreadable == Some(revision.number) {
            return Err("it no longer validates".into());
        }
        validate(&revision.source)
    }
}

/// Records `source` as a fleet revision and begins its deployment, as `up` does.
async fn begin(store: &SqliteStore, source: &str) -> (FleetRevision, u64) {
    let fleet = validate(source).unwrap();
    let servers = fleet
        .servers
        .iter()
        .map(|server| {
            let record = fleet_plan::DeployedServer::from_server(server);
            NewServerRevision {
                name: record.name,
                hash: record.hash,
                spec: record.spec,
            }
        })
        .collect();
    let (revision, deployment) = store
        .record_and_begin_deployment(
            NewFleetRevision {
                fleet: fleet.name.clone(),
                source: source.into(),
                source_path: "fleet.yaml".into(),
                env: None,
                author: "test@host".into(),
                reason: None,
                servers,
            },
            DeploymentKind::Deploy,
            None,
        )
        .await
        .unwrap();
    (revision, deployment.id)
}

fn apply() -> JournalStep {
    JournalStep::Apply(ChangeCounts {
        update: 1,
        unchanged: 1,
        ..ChangeCounts::default()
    })
}

fn api(action: ServerAction, revision: u64) -> JournalStep {
    JournalStep::Server(ServerStep {
        action,
        server: "api".into(),
        revision,
    })
}

/// A journaled step, and how it was confirmed (`None`: still pending).
type Journaled = (fn() -> JournalStep, Option<StepOutcome>);

/// How far the crashed control plane got with deployment 2.
#[derive(Clone, Copy, Debug)]
enum Cut {
    /// These steps journaled.
    Steps(&'static [Journaled]),
    /// As `Steps`, then paused (`on_failure: pause`, or a canary waiting for `promote`).
    Paused(&'static [Journaled]),
}

fn update_api() -> JournalStep {
    api(ServerAction::Update, 2)
}

fn undo_api() -> JournalStep {
    api(ServerAction::Undo, 1)
}

/// A store where revision 1 served and deployment 2 (of revision 2, `on_failure`) stopped at
/// `cut`; `api`'s revision 2 left in `api2` (a finished deployment had recorded it).
async fn crashed(dir: &TempDir, on_failure: &str, cut: Cut, api2: RevisionState) -> SqliteStore {
    let store = SqliteStore::open(&dir.path().join("state.db")).unwrap();
    let (first, deployment) = begin(&store, &fleet_file(1, on_failure)).await;
    let seq = append_step(&store, deployment, &apply()).await.unwrap();
    store
        .confirm_step(deployment, seq, StepOutcome::Done, None)
        .await
        .unwrap();
    for (server, &number) in &first.servers {
        store
            .set_server_revision_state(server, number, RevisionState::Active, None)
            .await
            .unwrap();
    }
    store
        .finish_deployment(deployment, DeploymentStatus::Succeeded, None)
        .await
        .unwrap();

    let (second, deployment) = begin(&store, &fleet_file(2, on_failure)).await;
    assert_eq!((second.number, deployment), (2, 2));
    assert_eq!(second.servers["api"], 2);
    let (Cut::Steps(steps) | Cut::Paused(steps)) = cut;
    for (step, outcome) in steps {
        let step = step();
        let seq = append_step(&store, deployment, &step).await.unwrap();
        if let Some(outcome) = outcome {
            let detail = (*outcome == StepOutcome::Failed).then(|| "api: not ready".to_string());
            store
                .confirm_step(deployment, seq, *outcome, detail)
                .await
                .unwrap();
        }
    }
    store
        .set_server_revision_state("api", 2, api2, None)
        .await
        .unwrap();
    if matches!(cut, Cut::Paused(_)) {
        store
            .finish_deployment(deployment, DeploymentStatus::Paused, None)
            .await
            .unwrap();
    }
    store
}

fn engine() -> Engine<FakeRuntime> {
    support::engine(&FakeRuntime::new())
}

fn given(source: String) -> Given {
    Given {
        source,
        environment: None,
        reason: Some("given".into()),
    }
}

/// What recovery is expected to make of deployment 2.
struct Expected {
    state: DeploymentStatus,
    /// The start of its recorded reason.
    reason: Option<&'static str>,
    /// `api`'s revision 2 afterwards.
    api2: RevisionState,
    /// Rolled back to revision 1, rather than deploying the file `up` was given.
    rolls_back: bool,
    /// The start of the reason the next deployment is recorded with.
    next_reason: &'static str,
}

const PENDING: Option<StepOutcome> = None;
const DONE: Option<StepOutcome> = Some(StepOutcome::Done);
const FAILED: Option<StepOutcome> = Some(StepOutcome::Failed);

/// Deployment 2 of a fleet with `on_failure`, crashed at `cut` with `api`'s revision 2 left
/// in `left`, recovered by an `up` given revision `resubmit`'s file: as `expected`.
async fn check(
    name: &str,
    on_failure: &str,
    cut: Cut,
    left: RevisionState,
    resubmit: u32,
    expected: Expected,
) {
    let dir = TempDir::new("engine-recovery");
    let store = crashed(&dir, on_failure, cut, left).await;
    let engine = engine();
    let recovery = engine
        .recover(
            &store,
            given(fleet_file(resubmit, on_failure)),
            &Reader { unreadable: None },
        )
        .await
        .unwrap_or_else(|e| panic!("{name}: {e}"));

    let record = store.deployment(2).await.unwrap().unwrap();
    assert_eq!(record.state, expected.state, "{name}: {record:?}");
    assert!(record.finished_at.is_some(), "{name}: still unfinished");
    match expected.reason {
        None => assert_eq!(record.reason, None, "{name}"),
        Some(start) => assert!(
            record
                .reason
                .as_deref()
                .is_some_and(|r| r.starts_with(start)),
            "{name}: reason {:?}, expected it to start with {start:?}",
            record.reason
        ),
    }
    assert_eq!(recovery.notes.len(), 1, "{name}: {:?}", recovery.notes);
    // Followers of the event stream (`mcpfleet events`) are told what was settled.
    let (history, _) = engine.subscribe();
    let told: Vec<&str> = history
        .iter()
        .filter(|e| e.kind == EventKind::Recovered)
        .map(|e| e.message.as_str())
        .collect();
    assert_eq!(told, recovery.notes, "{name}");
    let api2 = store.server_revision("api", 2).await.unwrap().unwrap();
    assert_eq!(api2.state, expected.api2, "{name}: {api2:?}");
    let keep = store.server_revision("keep", 1).await.unwrap().unwrap();
    assert_eq!(
        keep.state,
        RevisionState::Active,
        "{name}: `keep` served throughout"
    );
    match &recovery.deploy {
        Redeploy::RollBack(rollback) => {
            assert!(expected.rolls_back, "{name}: rolled back");
            assert_eq!(rollback.revision.number, 1, "{name}");
            assert_eq!(rollback.fleet.servers.len(), 2, "{name}");
        }
        Redeploy::Given { .. } => assert!(!expected.rolls_back, "{name}: did not roll back"),
    }
    let next = recovery.deploy.reason();
    assert!(
        next.is_some_and(|r| r.starts_with(expected.next_reason)),
        "{name}: next reason {next:?}, expected it to start with {:?}",
        expected.next_reason
    );
    assert!(
        store.unfinished_deployments().await.unwrap().is_empty(),
        "{name}: left unfinished"
    );
}

#[tokio::test]
async fn a_crash_after_each_journal_step_is_settled_as_on_failure_rollback_says() {
    use RevisionState::{Active, Failed, Pending};
    const BACK: &str = "recovery: deployment 2 was interrupted (the control plane stopped ";
    let stopped_before = "the control plane stopped before it changed anything; rolled back";
    let interrupted = |reason: &'static str| Expected {
        state: DeploymentStatus::RolledBack,
        reason: Some(reason),
        api2: Failed,
        rolls_back: true,
        next_reason: BACK,
    };
    let rows: [(&str, Cut, RevisionState, Expected); 9] = [
        (
            "begun, nothing journaled",
            Cut::Steps(&[]),
            Pending,
            interrupted(stopped_before),
        ),
        (
            "apply written",
            Cut::Steps(&[(apply, PENDING)]),
            Pending,
            interrupted(stopped_before),
        ),
        (
            "server step written",
            Cut::Steps(&[(apply, PENDING), (update_api, PENDING)]),
            Pending,
            interrupted(
                "the control plane stopped during step 2 (update of `api` to revision 2); \
                 rolled back to fleet revision 1",
            ),
        ),
        (
            "server step confirmed",
            Cut::Steps(&[(apply, PENDING), (update_api, DONE)]),
            Pending,
            interrupted(stopped_before),
        ),
        (
            "undo written after a failed step",
            Cut::Steps(&[(apply, PENDING), (update_api, FAILED), (undo_api, PENDING)]),
            Pending,
            interrupted("the control plane stopped during step 3 (undo of `api` to revision 1)"),
        ),
        (
            "undo confirmed",
            Cut::Steps(&[(apply, PENDING), (update_api, FAILED), (undo_api, DONE)]),
            Pending,
            interrupted(stopped_before),
        ),
        (
            "apply confirmed done: only the final record was missing",
            Cut::Steps(&[(apply, DONE), (update_api, DONE)]),
            Active,
            Expected {
                state: DeploymentStatus::Succeeded,
                reason: None,
                api2: Active,
                rolls_back: false,
                next_reason: "given",
            },
        ),
        (
            "apply confirmed failed after every undo",
            Cut::Steps(&[(apply, FAILED), (update_api, FAILED), (undo_api, DONE)]),
            Failed,
            Expected {
                state: DeploymentStatus::RolledBack,
                reason: Some("api: not ready"),
                api2: Failed,
                rolls_back: false,
                next_reason: "given",
            },
        ),
        (
            "paused",
            Cut::Paused(&[(apply, PENDING), (update_api, DONE)]),
            Pending,
            Expected {
                state: DeploymentStatus::Failed,
                reason: Some("the control plane stopped while the deployment was paused"),
                api2: Pending,
                rolls_back: false,
                next_reason: "given",
            },
        ),
    ];
    for (name, cut, left, expected) in rows {
        check(name, "rollback", cut, left, 2, expected).await;
    }
}

#[tokio::test]
async fn with_on_failure_pause_or_continue_the_same_file_is_deployed_again() {
    for on_failure in ["pause", "continue"] {
        let cut = Cut::Steps(&[(apply, PENDING), (update_api, PENDING)]);
        let expected = Expected {
            state: DeploymentStatus::Failed,
            reason: Some(
                "the control plane stopped during step 2 (update of `api` to revision 2); \
                 deployed again at restart",
            ),
            api2: RevisionState::Failed,
            rolls_back: false,
            next_reason: "given",
        };
        check(
            on_failure,
            on_failure,
            cut,
            RevisionState::Pending,
            2,
            expected,
        )
        .await;
    }
}

#[tokio::test]
async fn another_file_given_replaces_the_interrupted_deployment_without_a_rollback() {
    let cut = Cut::Steps(&[(apply, PENDING), (update_api, PENDING)]);
    let expected = Expected {
        state: DeploymentStatus::Failed,
        reason: Some(
            "the control plane stopped during step 2 (update of `api` to revision 2); \
             replaced at restart by the fleet file `up` was given",
        ),
        api2: RevisionState::Failed,
        rolls_back: false,
        next_reason: "given",
    };
    check(
        "another file",
        "rollback",
        cut,
        RevisionState::Pending,
        3,
        expected,
    )
    .await;
}

#[tokio::test]
async fn a_previous_revision_that_no_longer_reads_back_is_said_and_the_same_file_deployed_again() {
    let dir = TempDir::new("engine-recovery");
    let cut = Cut::Steps(&[(apply, PENDING), (update_api, PENDING)]);
    let store = crashed(&dir, "rollback", cut, RevisionState::Pending).await;
    let recovery = engine()
        .recover(
            &store,
            given(fleet_file(2, "rollback")),
            &Reader {
                unreadable: Some(1),
            },
        )
        .await
        .unwrap();

    let record = store.deployment(2).await.unwrap().unwrap();
    assert_eq!(record.state, DeploymentStatus::Failed);
    assert_eq!(
        record.reason.as_deref(),
        Some(
            "the control plane stopped during step 2 (update of `api` to revision 2); fleet \
             revision 1 cannot be deployed again (it no longer validates); deployed again at \
             restart"
        )
    );
    assert!(matches!(recovery.deploy, Redeploy::Given { .. }));
    assert_eq!(recovery.deploy.reason(), Some("given"));
}

#[tokio::test]
async fn a_finished_deployment_is_left_alone() {
    let dir = TempDir::new("engine-recovery");
    let store = crashed(&dir, "rollback", Cut::Steps(&[]), RevisionState::Pending).await;
    store
        .finish_deployment(2, DeploymentStatus::Aborted, Some("aborted".into()))
        .await
        .unwrap();
    let recovery = engine()
        .recover(
            &store,
            given(fleet_file(2, "rollback")),
            &Reader { unreadable: None },
        )
        .await
        .unwrap();
    assert!(recovery.notes.is_empty(), "{:?}", recovery.notes);
    assert_eq!(recovery.deploy.reason(), Some("given"));
    let record = store.deployment(2).await.unwrap().unwrap();
    assert_eq!(
        (record.state, record.reason.as_deref()),
        (DeploymentStatus::Aborted, Some("aborted"))
    );
    let api2 = store.server_revision("api", 2).await.unwrap().unwrap();
    assert_eq!(api2.state, RevisionState::Pending);
}

#[tokio::test]
async fn a_journal_step_that_cannot_be_read_stops_recovery_and_changes_nothing() {
    let dir = TempDir::new("engine-recovery");
    let store = crashed(&dir, "rollback", Cut::Steps(&[]), RevisionState::Pending).await;
    store
        .append_step(2, serde_json::json!({ "format": 2, "apply": {} }))
        .await
        .unwrap();
    let error = engine()
        .recover(
            &store,
            given(fleet_file(2, "rollback")),
            &Reader { unreadable: None },
        )
        .await
        .unwrap_err();
    let message = error.to_string();
    assert!(
        message.starts_with("cannot settle deployment 2: step 1 of its journal:"),
        "{message}"
    );
    assert!(message.contains("journal format 2"), "{message}");
    let record = store.deployment(2).await.unwrap().unwrap();
    assert_eq!(record.state, DeploymentStatus::InProgress);
    let api2 = store.server_revision("api", 2).await.unwrap().unwrap();
    assert_eq!(api2.state, RevisionState::Pending);
}
