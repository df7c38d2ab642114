//! The deployment journal: every effect a deployment has on the fleet is written to the
//! store before it happens and confirmed after, so that a control plane restarted after a
//! crash knows what it was doing ([`fleet_store::StateStore::unfinished_deployments`]).
//!
//! A step is a [`JournalStep`]; the store keeps it as JSON it does not read, and only this
//! module turns one into the other ([`JournalStep::to_stored`], [`JournalStep::from_stored`]),
//! so the stored shape has one owner. Stored steps carry their format
//! ([`JOURNAL_FORMAT`]); steps stored without one are format 1, which is unchanged since.
//!
//! Also the failpoints crash tests use to stop the control plane at a chosen phase:
//! `MCPFLEET_FAILPOINT=<phase>[@<server>][#<deployment>]` makes the process log
//! `failpoint <phase> reached` and hang there, for the test to `kill -9` it. Phases:
//! `deployment-begun`, `step-written`, `swap`, `step-confirmed`, `before-finish`.

use crate::report::{DeploymentState, EventKind, ServerState};
use crate::{DeploymentOutcome, Desired, Engine, EngineError, Shared};
use fleet_plan::{ChangeCounts, Plan};
use fleet_runtime::Runtime;
use fleet_store::{StateStore, StepOutcome, StoreError};
use serde::{Deserialize, Serialize};
use serde_json::json;

/// The format of the journal steps this engine writes and the newest it reads.
pub const JOURNAL_FORMAT: u64 = 1;

/// One step of a deployment's journal: what is about to change, written before the change
/// and confirmed after it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum JournalStep {
    /// The whole deployment, with how many servers each kind of change touches: written by
    /// the control plane before the engine changes anything, confirmed once the deployment
    /// has ended and its revisions' states are recorded.
    Apply(ChangeCounts),
    /// One server changing.
    Server(ServerStep),
}

/// One server's change in the journal: `update` of `api` to revision 2.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ServerStep {
    pub action: ServerAction,
    pub server: String,
    /// The revision the server is brought to (for `delete`, the one removed; for `undo`,
    /// the one put back, 0 when none served before).
    pub revision: u64,
}

/// What a [`ServerStep`] does to its server.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ServerAction {
    /// Starts a server that has no revision running.
    Create,
    /// Replaces the revision running with another.
    Update,
    /// Stops a server the fleet file no longer has.
    Delete,
    /// Puts back what served before the deployment (a rollback).
    Undo,
}

impl ServerAction {
    /// The action's name, as stored.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Create => "create",
            Self::Update => "update",
            Self::Delete => "delete",
            Self::Undo => "undo",
        }
    }
}

impl std::fmt::Display for ServerStep {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} of `{}` to revision {}",
            self.action.as_str(),
            self.server,
            self.revision
        )
    }
}

/// Why a stored journal step cannot be read back.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum StepError {
    /// A newer mcpfleet wrote it, in a format this one does not know.
    #[error(
        "it is in journal format {format}, newer than this mcpfleet reads ({JOURNAL_FORMAT}): \
         start the control plane with the mcpfleet that wrote it to settle the deployment"
    )]
    NewerFormat { format: u64 },
    /// It is not a step mcpfleet writes: the store was edited or damaged.
    #[error(
        "it is not a journal step mcpfleet writes ({why}); the state store was edited or \
         damaged: restore it from an `mcpfleet export-state` file"
    )]
    Malformed { why: String },
}

impl JournalStep {
    /// The step as the store keeps it: `{"format":1,"apply":{…}}` or
    /// `{"format":1,"action":"update","server":"api","revision":2}`.
    pub fn to_stored(&self) -> serde_json::Value {
        match self {
            Self::Apply(changes) => json!({ "format": JOURNAL_FORMAT, "apply": changes }),
            Self::Server(ServerStep {
                action,
                server,
                revision,
            }) => json!({
                "format": JOURNAL_FORMAT,
                "action": action,
                "server": server,
                "revision": revision,
            }),
        }
    }

    /// A step the store kept, back as a step; also reads format 1 steps written before steps
    /// said their format.
    ///
    /// # Errors
    /// A newer format, or JSON that is no step (see [`StepError`]).
    pub fn from_stored(stored: &serde_json::Value) -> Result<Self, StepError> {
        let malformed = |why: String| StepError::Malformed { why };
        let format = match stored.get("format") {
            None => 1,
            Some(format) => format
                .as_u64()
                .ok_or_else(|| malformed(format!("its format is {format}, not a number")))?,
        };
        if format > JOURNAL_FORMAT {
            return Err(StepError::NewerFormat { format });
        }
        if let Some(apply) = stored.get("apply") {
            return ChangeCounts::deserialize(apply)
                .map(Self::Apply)
                .map_err(|e| malformed(format!("`apply`: {e}")));
        }
        if stored.get("action").is_some() {
            return ServerStep::deserialize(stored)
                .map(Self::Server)
                .map_err(|e| malformed(e.to_string()));
        }
        Err(malformed(format!(
            "`{stored}` has neither an `apply` nor an `action`"
        )))
    }
}

/// Journals `step` of `deployment` before its effect; its sequence number.
///
/// # Errors
/// The store cannot take it (see [`StateStore::append_step`]).
pub async fn append_step(
    store: &dyn StateStore,
    deployment: u64,
    step: &JournalStep,
) -> Result<u64, StoreError> {
    store.append_step(deployment, step.to_stored()).await
}

impl<R: Runtime + 'static> Engine<R> {
    /// Journals the deployment's steps in `store` from now on.
    pub fn journal_to(&self, store: std::sync::Arc<dyn fleet_store::StateStore>) {
        let _ = self.shared.journal.set(store);
    }

    /// Writes a step (`action` on `server` at `revision`) before its effect; its number
    /// (`None` without a journal).
    ///
    /// # Errors
    /// The journal cannot take it: the server is marked failed with that reason and the
    /// deployment aborted, and the caller must not have the effect — one the journal does
    /// not know of is one a restart after a crash could not settle. An `undo` goes ahead
    /// all the same (never an error): it puts back what served, which a restart would do
    /// too.
    pub(crate) async fn step_begins(
        &self,
        action: ServerAction,
        server: &str,
        revision: u64,
    ) -> Result<Option<u64>, EngineError> {
        let Some((store, deployment)) = self.journal() else {
            return Ok(None);
        };
        let step = ServerStep {
            action,
            server: server.to_string(),
            revision,
        };
        let seq = match append_step(&*store, deployment, &JournalStep::Server(step)).await {
            Ok(seq) => Ok(Some(seq)),
            Err(e) => {
                let why = format!(
                    "cannot write the deployment journal before the {} of `{server}` \
                     to revision {revision}: {e}",
                    action.as_str()
                );
                tracing::error!("{why}");
                if action == ServerAction::Undo {
                    Ok(None)
                } else {
                    self.shared.update(|s| {
                        s.set_server(server, ServerState::Failed, Some(why.clone()));
                        s.abort_if(true);
                    });
                    self.shared.events.emit(
                        EventKind::ServerFailed,
                        Some(server),
                        None,
                        why.clone(),
                    );
                    Err(EngineError::Journal(why))
                }
            }
        };
        self.shared.failpoint("step-written", Some(server)).await;
        seq
    }

    /// Ends a deployment the journal could not take before it changed anything: failed,
    /// with `reason`, nothing started or stopped. Followers of the deployment's events see
    /// it start and fail.
    pub fn refuse(&self, desired: &Desired, plan: &Plan, reason: String) -> DeploymentOutcome {
        let shared = &self.shared;
        shared.update(|s| {
            s.begin(&desired.fleet, plan);
            s.finish(DeploymentState::Failed, Some(reason.clone()));
        });
        shared
            .events
            .emit(EventKind::DeploymentFailed, None, None, reason.clone());
        DeploymentOutcome {
            state: DeploymentState::Failed,
            reason: Some(reason),
        }
    }

    /// Confirms a step written by [`Engine::step_begins`].
    pub(crate) async fn step_ends(
        &self,
        seq: Option<u64>,
        server: &str,
        result: &Result<(), EngineError>,
    ) {
        let (Some(seq), Some((store, deployment))) = (seq, self.journal()) else {
            return;
        };
        let (outcome, detail) = match result {
            Ok(()) => (StepOutcome::Done, None),
            Err(why) => (StepOutcome::Failed, Some(why.to_string())),
        };
        if let Err(e) = store.confirm_step(deployment, seq, outcome, detail).await {
            tracing::error!("cannot write the deployment journal: {e}");
        }
        self.shared.failpoint("step-confirmed", Some(server)).await;
    }

    fn journal(&self) -> Option<(std::sync::Arc<dyn fleet_store::StateStore>, u64)> {
        let store = self.shared.journal.get()?.clone();
        let deployment = self.shared.events.deployment()?;
        Some((store, deployment))
    }
}

impl<R> Shared<R> {
    /// Hangs forever if `MCPFLEET_FAILPOINT` names this phase (and server, and the running
    /// deployment, when it names them). For crash tests only.
    pub(crate) async fn failpoint(&self, phase: &str, server: Option<&str>) {
        let deployment = self.events.deployment();
        failpoint(phase, server, deployment).await;
    }
}

/// Hangs forever if `MCPFLEET_FAILPOINT` is `phase[@server][#deployment]` and the parts it
/// names match.
pub async fn failpoint(phase: &str, server: Option<&str>, deployment: Option<u64>) {
    let Ok(wanted) = std::env::var("MCPFLEET_FAILPOINT") else {
        return;
    };
    let (rest, wanted_deployment) = match wanted.split_once('#') {
        Some((rest, d)) => (rest, d.parse::<u64>().ok()),
        None => (wanted.as_str(), None),
    };
    let (wanted_phase, wanted_server) = match rest.split_once('@') {
        Some((p, s)) => (p, Some(s)),
        None => (rest, None),
    };
    let matches = wanted_phase == phase
        && wanted_server.is_none_or(|s| Some(s) == server)
        && wanted_deployment.is_none_or(|d| Some(d) == deployment);
    if matches {
        tracing::warn!("failpoint {wanted} reached; waiting to be killed");
        eprintln!("failpoint {wanted} reached");
        std::future::pending::<()>().await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn step(text: &str) -> Result<JournalStep, StepError> {
        JournalStep::from_stored(&serde_json::from_str(text).unwrap())
    }

    #[test]
    fn steps_stored_before_steps_said_their_format_still_load() {
        // The exact shapes mcpfleet wrote before `format`: the engine's, then the control
        // plane's `apply`.
        for (text, action) in [
            (
                r#"{"action":"create","server":"api","revision":1}"#,
                ServerAction::Create,
            ),
            (
                r#"{"action":"update","server":"api","revision":1}"#,
                ServerAction::Update,
            ),
            (
                r#"{"action":"delete","server":"api","revision":1}"#,
                ServerAction::Delete,
            ),
            (
                r#"{"action":"undo","server":"api","revision":1}"#,
                ServerAction::Undo,
            ),
        ] {
            let expected = JournalStep::Server(ServerStep {
                action,
                server: "api".into(),
                revision: 1,
            });
            assert_eq!(step(text), Ok(expected), "{text}");
        }
        assert_eq!(
            step(r#"{"apply":{"create":1,"update":2,"delete":3,"unchanged":4}}"#),
            Ok(JournalStep::Apply(ChangeCounts {
                create: 1,
                update: 2,
                delete: 3,
                unchanged: 4,
            }))
        );
    }

    #[test]
    fn steps_are_stored_with_their_format_and_read_back_as_written() {
        let update = JournalStep::Server(ServerStep {
            action: ServerAction::Update,
            server: "api".into(),
            revision: 2,
        });
        assert_eq!(
            update.to_stored(),
            json!({ "format": 1, "action": "update", "server": "api", "revision": 2 })
        );
        let apply = JournalStep::Apply(ChangeCounts {
            create: 1,
            ..ChangeCounts::default()
        });
        assert_eq!(
            apply.to_stored(),
            json!({ "format": 1, "apply": { "create": 1, "update": 0, "delete": 0, "unchanged": 0 } })
        );
        for written in [update, apply] {
            assert_eq!(JournalStep::from_stored(&written.to_stored()), Ok(written));
        }
    }

    #[test]
    fn a_step_that_is_not_one_mcpfleet_writes_is_a_clear_error() {
        let unknown = step(r#"{"action":"restart","server":"api","revision":2}"#).unwrap_err();
        assert!(
            unknown.to_string().contains(
                "unknown variant `restart`, expected one of `create`, `update`, `delete`, `undo`"
            ),
            "{unknown}"
        );
        let missing = step(r#"{"action":"update","server":"api"}"#).unwrap_err();
        assert!(
            missing.to_string().contains("missing field `revision`"),
            "{missing}"
        );
        let neither = step(r#"{"start":"a"}"#).unwrap_err();
        assert!(
            neither
                .to_string()
                .contains("neither an `apply` nor an `action`"),
            "{neither}"
        );
        let bad_apply = step(r#"{"apply":{"create":"one"}}"#).unwrap_err();
        assert!(bad_apply.to_string().contains("`apply`"), "{bad_apply}");
        let bad_format = step(r#"{"format":"two","apply":{}}"#).unwrap_err();
        assert!(
            bad_format.to_string().contains("not a number"),
            "{bad_format}"
        );
        assert_eq!(
            step(r#"{"format":2,"anything":"new"}"#),
            Err(StepError::NewerFormat { format: 2 })
        );
    }
}
