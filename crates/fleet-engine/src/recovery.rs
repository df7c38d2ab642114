//! Crash recovery: what a deployment left unfinished by a control plane that died (`kill -9`,
//! a crash, a power cut) amounts to, read from its journal — whether it had in fact finished,
//! what it was doing when it stopped, which servers it touched, how it is settled per
//! `on_failure` — and [`Engine::recover`], which settles it in the store and says what to
//! deploy next.
//!
//! The engine owns the decisions and the store reads and writes; turning a stored fleet
//! revision back into a fleet needs the control plane's templating context, so the control
//! plane passes that in ([`StoredFleets`]).

use crate::Engine;
use crate::journal::{JournalStep, ServerAction, ServerStep, StepError};
use crate::report::EventKind;
use fleet_runtime::Runtime;
use fleet_spec::model::{OnFailure, ValidFleet};
use fleet_store::{
    DeploymentRecord, DeploymentStatus, FleetRevision, RevisionState, StateStore, StepState,
    StoreError,
};

/// A stored deployment still in progress or paused, its journal read back.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UnfinishedDeployment {
    pub id: u64,
    /// The fleet revision it deploys.
    pub fleet_revision: u64,
    /// Whether it was paused (waiting for `promote`, `resume`, or by `on_failure: pause`).
    pub paused: bool,
    /// The journal, in sequence order.
    pub steps: Vec<Entry>,
}

/// One journaled step and where it stands.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    /// 1, 2, … within the deployment.
    pub seq: u64,
    pub step: JournalStep,
    /// Pending: written, its effect may or may not have happened.
    pub state: StepState,
    /// What was said when confirming it (the failure).
    pub detail: Option<String>,
}

/// A journal step of a stored deployment that cannot be read back.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("cannot settle deployment {deployment}: step {seq} of its journal: {error}")]
pub struct JournalError {
    pub deployment: u64,
    pub seq: u64,
    #[source]
    pub error: StepError,
}

impl UnfinishedDeployment {
    /// Reads a stored deployment's journal back.
    ///
    /// # Errors
    /// A step that cannot be read (a newer format, or not a step): settling the deployment
    /// without knowing what it was doing could undo the wrong thing.
    pub fn read(record: &DeploymentRecord) -> Result<Self, JournalError> {
        let steps = record
            .steps
            .iter()
            .map(|entry| {
                let step = JournalStep::from_stored(&entry.step).map_err(|error| JournalError {
                    deployment: record.id,
                    seq: entry.seq,
                    error,
                })?;
                Ok(Entry {
                    seq: entry.seq,
                    step,
                    state: entry.state,
                    detail: entry.detail.clone(),
                })
            })
            .collect::<Result<_, _>>()?;
        Ok(UnfinishedDeployment {
            id: record.id,
            fleet_revision: record.fleet_revision,
            paused: record.state == DeploymentStatus::Paused,
            steps,
        })
    }

    /// The server steps, in journal order.
    fn server_steps(&self) -> impl DoubleEndedIterator<Item = (&Entry, &ServerStep)> {
        self.steps.iter().filter_map(|entry| match &entry.step {
            JournalStep::Server(step) => Some((entry, step)),
            JournalStep::Apply(_) => None,
        })
    }
}

/// What an unfinished deployment amounts to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Assessment {
    /// It was paused: no one is left to resume it, and nothing of it runs any more.
    Paused(Settlement),
    /// Its `apply` step was confirmed: everything was done, revision states included, and
    /// only its final record is missing.
    Finished(Settlement),
    /// It stopped partway: what to do depends on its servers' `on_failure` and on the file
    /// `up` was given (see [`Interruption`]).
    Interrupted(Interruption),
}

/// How a deployment is recorded as ended, and what recovery says about it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Settlement {
    pub state: DeploymentStatus,
    /// The deployment's recorded reason.
    pub reason: Option<String>,
    /// One line for the operator: `deployment 2: had finished; recorded as succeeded`.
    pub note: String,
}

/// Reads what an unfinished deployment amounts to from its journal.
pub fn assess(deployment: &UnfinishedDeployment) -> Assessment {
    let id = deployment.id;
    if deployment.paused {
        let why = "the control plane stopped while the deployment was paused".to_string();
        return Assessment::Paused(Settlement {
            state: DeploymentStatus::Failed,
            note: format!("deployment {id}: {why}"),
            reason: Some(why),
        });
    }
    let apply = deployment
        .steps
        .iter()
        .find(|entry| matches!(entry.step, JournalStep::Apply(_)));
    if let Some(apply) = apply.filter(|a| a.state != StepState::Pending) {
        let (state, reason) = if apply.state == StepState::Done {
            (DeploymentStatus::Succeeded, None)
        } else {
            (unsuccessful_end(deployment), apply.detail.clone())
        };
        return Assessment::Finished(Settlement {
            state,
            reason,
            note: format!(
                "deployment {id}: had finished; recorded as {}",
                ended_as(state)
            ),
        });
    }
    let during = deployment
        .server_steps()
        .rev()
        .find(|(entry, _)| entry.state == StepState::Pending)
        .map_or_else(
            || "before it changed anything".to_string(),
            |(entry, step)| format!("during step {} ({step})", entry.seq),
        );
    let mut touched: Vec<String> = Vec::new();
    for (_, step) in deployment.server_steps() {
        if !touched.contains(&step.server) {
            touched.push(step.server.clone());
        }
    }
    Assessment::Interrupted(Interruption {
        id,
        fleet_revision: deployment.fleet_revision,
        why: format!("the control plane stopped {during}"),
        touched,
    })
}

/// How a deployment whose `apply` step was confirmed as failed ended: the engine journals an
/// `undo` step for each server it puts back, so undo steps all done mean it rolled back.
fn unsuccessful_end(deployment: &UnfinishedDeployment) -> DeploymentStatus {
    let mut undos = deployment
        .server_steps()
        .filter(|(_, step)| step.action == ServerAction::Undo)
        .peekable();
    if undos.peek().is_some() && undos.all(|(entry, _)| entry.state == StepState::Done) {
        DeploymentStatus::RolledBack
    } else {
        DeploymentStatus::Failed
    }
}

/// The words for the states a finished deployment is recorded in, as `history` shows them.
fn ended_as(state: DeploymentStatus) -> &'static str {
    match state {
        DeploymentStatus::Succeeded => "succeeded",
        DeploymentStatus::RolledBack => "rolled-back",
        DeploymentStatus::Aborted => "aborted",
        DeploymentStatus::InProgress => "in-progress",
        DeploymentStatus::Paused => "paused",
        DeploymentStatus::Failed => "failed",
    }
}

/// A deployment that stopped partway: nothing of it runs any more (the control plane's
/// processes die with it, and are reaped at start).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Interruption {
    id: u64,
    fleet_revision: u64,
    /// `the control plane stopped during step 3 (update of `api` to revision 2)`.
    pub why: String,
    /// The servers its steps name, in journal order; none when it stopped before changing
    /// any.
    pub touched: Vec<String>,
}

/// What recovery does about an [`Interruption`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Resolution {
    /// Bring back fleet revision `to`, the one that served before: `up` was given the
    /// interrupted revision's file again and `on_failure` is `rollback`.
    RollBack { to: u64 },
    /// Deploy the interrupted revision again (`up` was given its file): `on_failure` is
    /// `pause` or `continue`, or there is nothing to roll back to, or (`unable`) the revision
    /// that served before cannot be deployed again.
    DeployAgain { unable: Option<String> },
    /// `up` was given another file: deploy that one instead.
    Replace,
}

impl Resolution {
    /// Deploying again, because fleet revision `to` cannot be deployed again (`why`).
    pub fn cannot_roll_back(to: u64, why: &dyn std::fmt::Display) -> Self {
        Resolution::DeployAgain {
            unable: Some(format!(
                "fleet revision {to} cannot be deployed again ({why})"
            )),
        }
    }
}

impl Interruption {
    /// The `on_failure` that decides, given the interrupted revision's servers: the strictest
    /// among those it touched (all of them when it touched none); `rollback` when there are
    /// none (its fleet file can no longer be read).
    pub fn policy<'a>(&self, servers: impl IntoIterator<Item = (&'a str, OnFailure)>) -> OnFailure {
        strictest(
            servers
                .into_iter()
                .filter(|(name, _)| {
                    self.touched.is_empty() || self.touched.iter().any(|t| t == name)
                })
                .map(|(_, policy)| policy),
        )
    }

    /// What to do: `resubmitted` when `up` was given the interrupted revision's file (and
    /// environment) again; `previous` is the fleet revision that served before it, if any.
    pub fn resolve(
        &self,
        policy: OnFailure,
        resubmitted: bool,
        previous: Option<u64>,
    ) -> Resolution {
        match previous {
            Some(to) if resubmitted && policy == OnFailure::Rollback => Resolution::RollBack { to },
            _ if resubmitted => Resolution::DeployAgain { unable: None },
            _ => Resolution::Replace,
        }
    }

    /// The reason of the deployment recovery starts, given the one `up` was given.
    pub fn reason_to_deploy(
        &self,
        resolution: &Resolution,
        given: Option<String>,
    ) -> Option<String> {
        let id = self.id;
        match resolution {
            Resolution::RollBack { .. } => Some(format!(
                "recovery: deployment {id} was interrupted ({})",
                self.why
            )),
            Resolution::DeployAgain { .. } => {
                given.or_else(|| Some(format!("recovery: resumes interrupted deployment {id}")))
            }
            Resolution::Replace => given,
        }
    }

    /// How the interrupted deployment is recorded, once `resolution` is decided.
    pub fn settle(&self, resolution: &Resolution) -> Settlement {
        let (state, ending, doing) = match resolution {
            Resolution::RollBack { to } => {
                let back = format!("rolled back to fleet revision {to}");
                (DeploymentStatus::RolledBack, back.clone(), back)
            }
            Resolution::DeployAgain { unable } => {
                let unable = unable
                    .as_ref()
                    .map_or_else(String::new, |u| format!("{u}; "));
                (
                    DeploymentStatus::Failed,
                    format!("{unable}deployed again at restart"),
                    format!("{unable}deploying again"),
                )
            }
            Resolution::Replace => (
                DeploymentStatus::Failed,
                "replaced at restart by the fleet file `up` was given".to_string(),
                "nothing of it runs; deploying the fleet file `up` was given instead".to_string(),
            ),
        };
        let why = &self.why;
        Settlement {
            state,
            reason: Some(format!("{why}; {ending}")),
            note: format!(
                "deployment {} (fleet revision {}): {why}; {doing}",
                self.id, self.fleet_revision
            ),
        }
    }
}

/// Reads stored fleet revisions back as fleets: the control plane's to do, since a stored
/// fleet file is validated anew with its context (secrets, environment, the folder it was
/// read from).
pub trait StoredFleets: Sync {
    /// Why a stored revision cannot be read back (it no longer validates, say).
    type Error: std::fmt::Display;

    /// `revision` as a fleet again, each server at the revision it names.
    fn fleet(
        &self,
        revision: &FleetRevision,
    ) -> impl Future<Output = Result<ValidFleet, Self::Error>> + Send;
}

/// The fleet file `up` was given, as recovery compares it with an interrupted revision's.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Given {
    /// The file's text, as read.
    pub source: String,
    /// Its environment overlay, if any.
    pub environment: Option<String>,
    /// Why (`--reason`).
    pub reason: Option<String>,
}

/// What to deploy once recovery has settled what was unfinished.
#[derive(Debug, Clone)]
pub enum Redeploy {
    /// The file `up` was given, with this reason (recovery's own when it deploys an
    /// interrupted revision again).
    Given { reason: Option<String> },
    /// A rollback to the fleet revision that served before an interrupted one.
    RollBack(Box<RollBack>),
}

/// The fleet revision that served before an interrupted deployment, to deploy again.
#[derive(Debug, Clone)]
pub struct RollBack {
    pub revision: FleetRevision,
    /// `revision`, read back.
    pub fleet: ValidFleet,
    /// The reason the rollback is recorded with.
    pub reason: Option<String>,
}

impl Redeploy {
    /// The reason the deployment recovery asks for is recorded with.
    pub fn reason(&self) -> Option<&str> {
        match self {
            Redeploy::Given { reason } => reason.as_deref(),
            Redeploy::RollBack(rollback) => rollback.reason.as_deref(),
        }
    }
}

/// What [`Engine::recover`] did and what it asks to deploy.
#[derive(Debug, Clone)]
pub struct Recovery {
    pub deploy: Redeploy,
    /// One line for the operator per deployment settled (see [`Settlement::note`]).
    pub notes: Vec<String>,
}

/// Why recovery could not settle what was left unfinished.
#[derive(Debug, thiserror::Error)]
pub enum RecoveryError {
    /// The store cannot be read or written.
    #[error("cannot settle the deployments left unfinished: {0}")]
    Store(#[from] StoreError),
    /// A journal step cannot be read back, so its deployment cannot be settled safely.
    #[error(transparent)]
    Journal(#[from] JournalError),
}

impl<R: Runtime + 'static> Engine<R> {
    /// Settles what a control plane that died left unfinished in `store`, before the first
    /// deployment of this one, and tells event followers what was done. Its processes are
    /// gone by now (reaped at start), so nothing of an interrupted deployment runs: its new
    /// server revisions are recorded as failed, and it is recorded as rolled back when `up`
    /// was given the interrupted revision's file again (a restart with the same file) and
    /// `on_failure: rollback` (the default) brings up the revision that served before it
    /// instead; otherwise as failed, and the file `up` was given is deployed (`pause`,
    /// `continue`: the interrupted one again).
    ///
    /// # Errors
    /// The store cannot be read or written, or a journal step cannot be read back.
    pub async fn recover(
        &self,
        store: &dyn StateStore,
        given: Given,
        fleets: &impl StoredFleets,
    ) -> Result<Recovery, RecoveryError> {
        let recovery = recover(store, given, fleets).await?;
        // Each line goes to the event stream (which logs it too).
        for note in &recovery.notes {
            self.shared
                .events
                .emit(EventKind::Recovered, None, None, note.clone());
        }
        Ok(recovery)
    }
}

/// [`Engine::recover`] without the telling: settles each unfinished deployment in the store.
async fn recover(
    store: &dyn StateStore,
    given: Given,
    fleets: &impl StoredFleets,
) -> Result<Recovery, RecoveryError> {
    // What would be deployed so far: a rollback replaces the file `up` was given, and the
    // next interrupted deployment (if any) is compared with what replaced it.
    let (mut source, mut environment) = (given.source, given.environment);
    let mut deploy = Redeploy::Given {
        reason: given.reason,
    };
    let mut notes = Vec::new();
    for record in store.unfinished_deployments().await? {
        let id = record.id;
        let interruption = match assess(&UnfinishedDeployment::read(&record)?) {
            Assessment::Paused(settled) | Assessment::Finished(settled) => {
                store
                    .finish_deployment(id, settled.state, settled.reason)
                    .await?;
                notes.push(settled.note);
                continue;
            }
            Assessment::Interrupted(interruption) => interruption,
        };
        let target = store.fleet_revision(record.fleet_revision).await?;
        let servers = match &target {
            Some(t) => fleets
                .fleet(t)
                .await
                .map(|fleet| fleet.servers)
                .unwrap_or_default(),
            None => Vec::new(),
        };
        let policy = interruption.policy(servers.iter().map(|s| (s.name.as_str(), s.on_failure)));
        let resubmitted = target
            .as_ref()
            .is_some_and(|t| t.source == source && t.env == environment);
        let previous = match record.from_revision {
            Some(n) => store.fleet_revision(n).await?,
            None => None,
        };
        if let Some(target) = &target {
            fail_pending_revisions(store, target, previous.as_ref(), id, &interruption.why).await?;
        }
        let mut resolution =
            interruption.resolve(policy, resubmitted, previous.as_ref().map(|p| p.number));
        // Read back before anything is recorded: the record says what happens.
        if let (&Resolution::RollBack { to }, Some(previous)) = (&resolution, previous) {
            match fleets.fleet(&previous).await {
                Ok(fleet) => {
                    source.clone_from(&previous.source);
                    environment.clone_from(&fleet.environment);
                    deploy = Redeploy::RollBack(Box::new(RollBack {
                        reason: interruption.reason_to_deploy(&resolution, None),
                        revision: previous,
                        fleet,
                    }));
                }
                Err(e) => resolution = Resolution::cannot_roll_back(to, &e),
            }
        }
        if !matches!(resolution, Resolution::RollBack { .. }) {
            let reason = match &mut deploy {
                Redeploy::Given { reason } => reason,
                Redeploy::RollBack(rollback) => &mut rollback.reason,
            };
            *reason = interruption.reason_to_deploy(&resolution, reason.take());
        }
        let settled = interruption.settle(&resolution);
        store
            .finish_deployment(id, settled.state, settled.reason)
            .await?;
        notes.push(settled.note);
    }
    Ok(Recovery { deploy, notes })
}

/// Records as failed the server revisions an interrupted deployment was bringing in and
/// never saw serving (still pending): those of `target` that `previous` (what served before
/// it) does not have.
async fn fail_pending_revisions(
    store: &dyn StateStore,
    target: &FleetRevision,
    previous: Option<&FleetRevision>,
    deployment: u64,
    why: &str,
) -> Result<(), StoreError> {
    for (server, &number) in &target.servers {
        if previous.and_then(|p| p.servers.get(server)) == Some(&number) {
            continue;
        }
        let pending = store
            .server_revision(server, number)
            .await?
            .is_some_and(|r| r.state == RevisionState::Pending);
        if pending {
            store
                .set_server_revision_state(
                    server,
                    number,
                    RevisionState::Failed,
                    Some(format!("deployment {deployment} was interrupted: {why}")),
                )
                .await?;
        }
    }
    Ok(())
}

/// The strictest of some servers' `on_failure` policies (`rollback`, then `pause`, then
/// `continue`), which decides for them all: when a deployment fails, and when recovery
/// settles an interrupted one. `rollback`, the default, when there are none.
pub(crate) fn strictest(policies: impl IntoIterator<Item = OnFailure>) -> OnFailure {
    policies
        .into_iter()
        .max_by_key(|policy| match policy {
            OnFailure::Rollback => 2,
            OnFailure::Pause => 1,
            OnFailure::Continue => 0,
        })
        .unwrap_or(OnFailure::Rollback)
}

#[cfg(test)]
mod tests {
    use super::*;
    use fleet_store::{DeploymentKind, JournalEntry};
    use serde_json::Value;

    const APPLY: &str = r#"{"apply":{"create":0,"update":1,"delete":0,"unchanged":1}}"#;
    const UPDATE_API: &str = r#"{"action":"update","server":"api","revision":2}"#;

    /// Deployment 2 of fleet revision 2, in `state`, with `steps` as stored (JSON text,
    /// state, detail) by the mcpfleet that crashed.
    fn stored(
        state: DeploymentStatus,
        steps: &[(&str, StepState, Option<&str>)],
    ) -> DeploymentRecord {
        DeploymentRecord {
            id: 2,
            fleet_revision: 2,
            from_revision: Some(1),
            kind: DeploymentKind::Deploy,
            state,
            started_at: "2026-12-05T06:00:00Z".into(),
            finished_at: None,
            reason: None,
            steps: steps
                .iter()
                .zip(1..)
                .map(|((step, state, detail), seq)| JournalEntry {
                    seq,
                    step: serde_json::from_str::<Value>(step).unwrap(),
                    state: *state,
                    written_at: "2026-12-05T06:00:01Z".into(),
                    confirmed_at: None,
                    detail: detail.map(str::to_string),
                })
                .collect(),
        }
    }

    fn assess_stored(steps: &[(&str, StepState, Option<&str>)]) -> Assessment {
        let record = stored(DeploymentStatus::InProgress, steps);
        assess(&UnfinishedDeployment::read(&record).unwrap())
    }

    fn interrupted(steps: &[(&str, StepState, Option<&str>)]) -> Interruption {
        match assess_stored(steps) {
            Assessment::Interrupted(interruption) => interruption,
            other => panic!("not interrupted: {other:?}"),
        }
    }

    fn finished(steps: &[(&str, StepState, Option<&str>)]) -> Settlement {
        match assess_stored(steps) {
            Assessment::Finished(settlement) => settlement,
            other => panic!("not finished: {other:?}"),
        }
    }

    #[test]
    fn a_crash_before_the_apply_step_changed_nothing_and_every_server_decides() {
        let interruption = interrupted(&[]);
        assert_eq!(
            interruption.why,
            "the control plane stopped before it changed anything"
        );
        assert!(interruption.touched.is_empty());
        let policy =
            interruption.policy([("api", OnFailure::Continue), ("keep", OnFailure::Pause)]);
        assert_eq!(policy, OnFailure::Pause);
    }

    #[test]
    fn the_strictest_on_failure_decides_and_none_means_rollback() {
        use OnFailure::{Continue, Pause, Rollback};
        assert_eq!(strictest([]), Rollback);
        assert_eq!(strictest([Continue, Pause, Continue]), Pause);
        assert_eq!(strictest([Pause, Rollback, Continue]), Rollback);
        assert_eq!(strictest([Continue]), Continue);
    }

    #[test]
    fn a_crash_with_the_apply_step_pending_and_no_server_step_changed_nothing() {
        let interruption = interrupted(&[(APPLY, StepState::Pending, None)]);
        assert_eq!(
            interruption.why,
            "the control plane stopped before it changed anything"
        );
        assert!(interruption.touched.is_empty());
    }

    #[test]
    fn a_crash_after_a_step_was_written_names_that_step_and_its_server_decides() {
        let interruption = interrupted(&[
            (APPLY, StepState::Pending, None),
            (UPDATE_API, StepState::Pending, None),
        ]);
        assert_eq!(
            interruption.why,
            "the control plane stopped during step 2 (update of `api` to revision 2)"
        );
        assert_eq!(interruption.touched, ["api"]);
        // `keep` was not touched: its laxer policy does not count, nor does a stricter one.
        let policy =
            interruption.policy([("api", OnFailure::Pause), ("keep", OnFailure::Rollback)]);
        assert_eq!(policy, OnFailure::Pause);
    }

    #[test]
    fn a_crash_after_a_step_was_confirmed_is_still_an_interruption_touching_its_server() {
        let interruption = interrupted(&[
            (APPLY, StepState::Pending, None),
            (UPDATE_API, StepState::Done, None),
            (
                r#"{"action":"create","server":"new","revision":1}"#,
                StepState::Done,
                None,
            ),
        ]);
        assert_eq!(
            interruption.why,
            "the control plane stopped before it changed anything"
        );
        assert_eq!(interruption.touched, ["api", "new"]);
    }

    #[test]
    fn the_last_pending_server_step_is_the_one_named() {
        let interruption = interrupted(&[
            (APPLY, StepState::Pending, None),
            (UPDATE_API, StepState::Failed, Some("not ready")),
            (
                r#"{"action":"undo","server":"api","revision":1}"#,
                StepState::Pending,
                None,
            ),
        ]);
        assert_eq!(
            interruption.why,
            "the control plane stopped during step 3 (undo of `api` to revision 1)"
        );
        assert_eq!(interruption.touched, ["api"]);
    }

    #[test]
    fn a_confirmed_apply_step_means_only_the_final_record_was_missing() {
        let done = finished(&[
            (APPLY, StepState::Done, None),
            (UPDATE_API, StepState::Done, None),
        ]);
        assert_eq!(
            done,
            Settlement {
                state: DeploymentStatus::Succeeded,
                reason: None,
                note: "deployment 2: had finished; recorded as succeeded".into(),
            }
        );
    }

    #[test]
    fn a_failed_apply_step_with_every_undo_done_was_rolled_back() {
        let ended = finished(&[
            (APPLY, StepState::Failed, Some("api: not ready")),
            (UPDATE_API, StepState::Failed, Some("not ready")),
            (
                r#"{"action":"undo","server":"api","revision":1}"#,
                StepState::Done,
                None,
            ),
        ]);
        assert_eq!(ended.state, DeploymentStatus::RolledBack);
        assert_eq!(ended.reason.as_deref(), Some("api: not ready"));
        assert_eq!(
            ended.note,
            "deployment 2: had finished; recorded as rolled-back"
        );
    }

    #[test]
    fn a_failed_apply_step_without_undos_or_with_one_undone_failed() {
        let no_undo = finished(&[
            (APPLY, StepState::Failed, Some("api: not ready")),
            (UPDATE_API, StepState::Failed, Some("not ready")),
        ]);
        assert_eq!(no_undo.state, DeploymentStatus::Failed);
        assert_eq!(
            no_undo.note,
            "deployment 2: had finished; recorded as failed"
        );
        let undo_failed = finished(&[
            (APPLY, StepState::Failed, None),
            (UPDATE_API, StepState::Failed, None),
            (
                r#"{"action":"undo","server":"api","revision":1}"#,
                StepState::Failed,
                None,
            ),
        ]);
        assert_eq!(undo_failed.state, DeploymentStatus::Failed);
    }

    #[test]
    fn a_paused_deployment_is_recorded_as_failed_whatever_its_journal() {
        let record = stored(
            DeploymentStatus::Paused,
            &[
                (APPLY, StepState::Pending, None),
                (UPDATE_API, StepState::Done, None),
            ],
        );
        let why = "the control plane stopped while the deployment was paused";
        assert_eq!(
            assess(&UnfinishedDeployment::read(&record).unwrap()),
            Assessment::Paused(Settlement {
                state: DeploymentStatus::Failed,
                reason: Some(why.into()),
                note: format!("deployment 2: {why}"),
            })
        );
    }

    #[test]
    fn the_same_file_with_on_failure_rollback_goes_back_to_the_revision_that_served() {
        let interruption = interrupted(&[
            (APPLY, StepState::Pending, None),
            (UPDATE_API, StepState::Pending, None),
        ]);
        let resolution = interruption.resolve(OnFailure::Rollback, true, Some(1));
        assert_eq!(resolution, Resolution::RollBack { to: 1 });
        let why = "the control plane stopped during step 2 (update of `api` to revision 2)";
        assert_eq!(
            interruption.settle(&resolution),
            Settlement {
                state: DeploymentStatus::RolledBack,
                reason: Some(format!("{why}; rolled back to fleet revision 1")),
                note: format!(
                    "deployment 2 (fleet revision 2): {why}; rolled back to fleet revision 1"
                ),
            }
        );
        assert_eq!(
            interruption.reason_to_deploy(&resolution, Some("given".into())),
            Some(format!("recovery: deployment 2 was interrupted ({why})"))
        );
    }

    #[test]
    fn the_same_file_with_on_failure_pause_or_nothing_before_is_deployed_again() {
        let interruption = interrupted(&[]);
        for resolution in [
            interruption.resolve(OnFailure::Pause, true, Some(1)),
            interruption.resolve(OnFailure::Continue, true, Some(1)),
            interruption.resolve(OnFailure::Rollback, true, None),
        ] {
            assert_eq!(resolution, Resolution::DeployAgain { unable: None });
            let settled = interruption.settle(&resolution);
            assert_eq!(settled.state, DeploymentStatus::Failed);
            assert_eq!(
                settled.reason.as_deref(),
                Some(
                    "the control plane stopped before it changed anything; deployed again at restart"
                )
            );
            assert!(
                settled.note.ends_with("; deploying again"),
                "{}",
                settled.note
            );
            assert_eq!(
                interruption.reason_to_deploy(&resolution, None).as_deref(),
                Some("recovery: resumes interrupted deployment 2")
            );
            assert_eq!(
                interruption
                    .reason_to_deploy(&resolution, Some("given".into()))
                    .as_deref(),
                Some("given")
            );
        }
    }

    #[test]
    fn a_revision_that_cannot_be_deployed_again_is_said_and_the_interrupted_one_deployed() {
        let interruption = interrupted(&[]);
        let resolution = Resolution::cannot_roll_back(1, &"it no longer validates");
        let settled = interruption.settle(&resolution);
        assert_eq!(settled.state, DeploymentStatus::Failed);
        assert_eq!(
            settled.note,
            "deployment 2 (fleet revision 2): the control plane stopped before it changed \
             anything; fleet revision 1 cannot be deployed again (it no longer validates); \
             deploying again"
        );
    }

    #[test]
    fn another_file_replaces_the_interrupted_deployment_and_claims_no_rollback() {
        let interruption = interrupted(&[(APPLY, StepState::Pending, None)]);
        let resolution = interruption.resolve(OnFailure::Rollback, false, Some(1));
        assert_eq!(resolution, Resolution::Replace);
        let settled = interruption.settle(&resolution);
        assert_eq!(settled.state, DeploymentStatus::Failed);
        assert!(
            settled
                .note
                .ends_with("deploying the fleet file `up` was given instead"),
            "{}",
            settled.note
        );
        assert!(!settled.note.contains("rolled back"));
        assert_eq!(interruption.reason_to_deploy(&resolution, None), None);
    }

    #[test]
    fn a_step_this_mcpfleet_does_not_write_stops_recovery_with_where_and_what_to_do() {
        let record = stored(
            DeploymentStatus::InProgress,
            &[
                (APPLY, StepState::Pending, None),
                (
                    r#"{"action":"restart","server":"api","revision":2}"#,
                    StepState::Pending,
                    None,
                ),
            ],
        );
        let error = UnfinishedDeployment::read(&record).unwrap_err();
        assert_eq!(error.seq, 2);
        let message = error.to_string();
        assert!(
            message.starts_with("cannot settle deployment 2: step 2 of its journal:"),
            "{message}"
        );
        assert!(message.contains("unknown variant `restart`"), "{message}");
        assert!(message.contains("export-state"), "{message}");

        let newer = stored(
            DeploymentStatus::InProgress,
            &[(r#"{"format":2,"apply":{}}"#, StepState::Pending, None)],
        );
        let message = UnfinishedDeployment::read(&newer).unwrap_err().to_string();
        assert!(
            message.contains("journal format 2, newer than this mcpfleet reads (1)"),
            "{message}"
        );
    }
}
