//! The deployment journal: every effect a deployment has on the fleet is written to the
//! store before it happens and confirmed after, so that a control plane restarted after a
//! crash knows what it was doing ([`fleet_store::StateStore::unfinished_deployments`]).
//!
//! Also the failpoints crash tests use to stop the control plane at a chosen phase:
//! `MCPFLEET_FAILPOINT=<phase>[@<server>][#<deployment>]` makes the process log
//! `failpoint <phase> reached` and hang there, for the test to `kill -9` it. Phases:
//! `deployment-begun`, `step-written`, `swap`, `step-confirmed`, `before-finish`.

use crate::{DeploymentOutcome, Desired, Engine, Shared};
use fleet_api::types::{DeploymentState, EventKind, ServerState};
use fleet_plan::Plan;
use fleet_runtime::Runtime;
use fleet_store::StepOutcome;
use serde_json::json;

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
        action: &str,
        server: &str,
        revision: u64,
    ) -> Result<Option<u64>, String> {
        let Some((store, deployment)) = self.journal() else {
            return Ok(None);
        };
        let step = json!({ "action": action, "server": server, "revision": revision });
        let seq = match store.append_step(deployment, step).await {
            Ok(seq) => Ok(Some(seq)),
            Err(e) => {
                let why = format!(
                    "cannot write the deployment journal before the {action} of `{server}` \
                     to revision {revision}: {e}"
                );
                tracing::error!("{why}");
                if action == "undo" {
                    Ok(None)
                } else {
                    self.shared.update(|s| {
                        s.set_server(server, ServerState::Failed, Some(why.clone()));
                        s.abort_if(true);
                    });
                    self.shared
                        .emit(EventKind::ServerFailed, Some(server), None, why.clone());
                    Err(why)
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
        shared.emit(EventKind::DeploymentFailed, None, None, reason.clone());
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
        result: &Result<(), String>,
    ) {
        let (Some(seq), Some((store, deployment))) = (seq, self.journal()) else {
            return;
        };
        let (outcome, detail) = match result {
            Ok(()) => (StepOutcome::Done, None),
            Err(why) => (StepOutcome::Failed, Some(why.clone())),
        };
        if let Err(e) = store.confirm_step(deployment, seq, outcome, detail).await {
            tracing::error!("cannot write the deployment journal: {e}");
        }
        self.shared.failpoint("step-confirmed", Some(server)).await;
    }

    fn journal(&self) -> Option<(std::sync::Arc<dyn fleet_store::StateStore>, u64)> {
        let store = self.shared.journal.get()?.clone();
        let deployment = (*self.shared.deployment.lock())?;
        Some((store, deployment))
    }
}

impl<R> Shared<R> {
    /// Hangs forever if `MCPFLEET_FAILPOINT` names this phase (and server, and the running
    /// deployment, when it names them). For crash tests only.
    pub(crate) async fn failpoint(&self, phase: &str, server: Option<&str>) {
        let deployment = *self.deployment.lock();
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
