//! Deployments through the control plane: record the fleet file as a new revision, plan it
//! against what runs, carry the plan out with the engine, and record how it ended.
//!
//! One deployment at a time: a second one asked for while one runs is refused, not queued.

use crate::runtime::FleetRuntime;
use fleet_engine::recovery::{self, Given, Redeploy, StoredFleets};
use fleet_engine::report::{DeploymentState, ServingRevision};
use fleet_engine::{DeploymentOutcome, Desired, Engine, JournalStep};
use fleet_plan::{DeployedFleet, Plan};
use fleet_spec::model::{RuntimeKind, ValidFleet};
use fleet_spec::template::Host;
use fleet_store::{
    DeploymentKind, DeploymentStatus, NewFleetRevision, NewServerRevision, RevisionState,
    StateStore, StepOutcome,
};
use parking_lot::Mutex;
use std::collections::BTreeMap;
use std::sync::Arc;
use tracing::Instrument as _;

/// A validated fleet file and where it came from.
#[derive(Debug, Clone)]
pub struct Submission {
    pub fleet: ValidFleet,
    /// The file's text, as read (secret references, never values).
    pub source: String,
    /// Where it was read from.
    pub path: String,
    /// Who asked (user@host).
    pub author: String,
    /// Why (`--reason`).
    pub reason: Option<String>,
    /// A deployment of a new file, or a rollback to a stored revision.
    pub kind: DeploymentKind,
}

/// Why a deployment did not start.
#[derive(Debug, thiserror::Error)]
pub enum DeployError {
    /// Another deployment is running.
    #[error(
        "a deployment is already in progress; wait for it (`mcpfleet status`) and deploy again"
    )]
    Busy,
    /// The file is for another fleet.
    #[error(
        "this control plane runs fleet `{running}`, not `{submitted}`; deploy `{submitted}` with its own `mcpfleet up`"
    )]
    OtherFleet { running: String, submitted: String },
    /// The fleet runs on Kubernetes and a server of it cannot run there (a local program,
    /// a stdio server, …): every reason. `up` and `deploy` show the same, located in the file.
    #[error(transparent)]
    NotForCluster(fleet_manifests::RenderError),
    /// The file changes settings only a restart applies.
    #[error(
        "`{section}` changed, and it is set when the control plane starts (its runtime, listeners, TLS, connection timeouts and trace export): apply it with `mcpfleet down` then `mcpfleet up`"
    )]
    NeedsRestart { section: String },
    /// The dependency graph has a cycle (validation reports it, located).
    #[error("the dependency graph has a cycle")]
    Cycle,
    /// There is nothing to roll back to.
    #[error("{0}")]
    NoRollbackTarget(String),
    /// A stored revision could not be read back.
    #[error("cannot read revision {revision} back from the store: {why}")]
    Unreadable { revision: u64, why: String },
    /// The store could not record the deployment.
    #[error("cannot record the deployment: {0}")]
    Store(#[from] fleet_store::StoreError),
    /// An image could not be resolved to the exact image it names (no engine, missing
    /// with `pull: never`, a failed pull): a revision is recorded only with its images pinned.
    #[error("{}", .0.iter().map(ToString::to_string).collect::<Vec<_>>().join("\n"))]
    Unpinned(Vec<fleet_engine::UnpinnedImage>),
    /// What a control plane that died left unfinished cannot be settled.
    #[error("{0}")]
    Recovery(#[from] recovery::RecoveryError),
}

/// How long a deployment asked for waits for the previous one, already ended, to finish
/// writing its record before it is refused as [`DeployError::Busy`].
const RECORDING_GRACE: std::time::Duration = std::time::Duration::from_secs(2);

/// Runs deployments, one at a time, and records them.
#[derive(Clone)]
pub(crate) struct Deployer {
    engine: Engine<FleetRuntime>,
    /// The engine's runtime, which pins images.
    runtime: FleetRuntime,
    store: Arc<dyn StateStore>,
    host: Arc<dyn Host>,
    /// The fleet the last deployment submitted (its gateway and admin settings are the
    /// running ones).
    current: Arc<Mutex<Option<Arc<ValidFleet>>>>,
    running: Arc<tokio::sync::Mutex<()>>,
}

impl std::fmt::Debug for Deployer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Deployer").finish_non_exhaustive()
    }
}

/// A deployment that has been planned and recorded, ready to run.
pub(crate) struct Prepared {
    deployer: Deployer,
    plan: Plan,
    desired: Desired,
    deployment: u64,
    _running: tokio::sync::OwnedMutexGuard<()>,
}

impl std::fmt::Debug for Prepared {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Prepared")
            .field("deployment", &self.deployment)
            .finish_non_exhaustive()
    }
}

impl Deployer {
    pub(crate) fn new(
        engine: Engine<FleetRuntime>,
        runtime: FleetRuntime,
        store: Arc<dyn StateStore>,
        host: Arc<dyn Host>,
    ) -> Self {
        Deployer {
            engine,
            runtime,
            store,
            host,
            current: Arc::new(Mutex::new(None)),
            running: Arc::new(tokio::sync::Mutex::new(())),
        }
    }

    /// Waits, at most `within`, until no deployment is carried out or being recorded;
    /// false when one still is.
    pub(crate) async fn wait_idle(&self, within: std::time::Duration) -> bool {
        tokio::time::timeout(within, self.running.lock())
            .await
            .is_ok()
    }

    /// The fleet the last deployment submitted.
    pub(crate) fn current_fleet(&self) -> Option<Arc<ValidFleet>> {
        self.current.lock().clone()
    }

    /// Whether the engine is carrying a deployment out (or holds it paused).
    fn engine_deploys(&self) -> bool {
        matches!(
            self.engine.status().deployment.state,
            DeploymentState::InProgress | DeploymentState::Paused
        )
    }

    /// What runs now, server by server.
    pub(crate) fn deployed(&self) -> Vec<ServingRevision> {
        self.engine.deployed()
    }

    /// Plans `submission` against what runs and records it as a new fleet revision and a
    /// deployment; [`Prepared::run`] carries it out.
    ///
    /// # Errors
    /// See [`DeployError`].
    pub(crate) async fn prepare(&self, submission: Submission) -> Result<Prepared, DeployError> {
        let turn = self.take_turn().await?;
        self.prepare_in_turn(turn, submission).await
    }

    /// The right to deploy: one deployment at a time.
    ///
    /// # Errors
    /// [`DeployError::Busy`] while another deployment runs.
    pub(crate) async fn take_turn(&self) -> Result<tokio::sync::OwnedMutexGuard<()>, DeployError> {
        match self.running.clone().try_lock_owned() {
            Ok(running) => Ok(running),
            // The engine announces a deployment's end before the deployment's record is
            // written: one that has ended lets go as soon as that is done.
            Err(_) if !self.engine_deploys() => {
                tokio::time::timeout(RECORDING_GRACE, self.running.clone().lock_owned())
                    .await
                    .map_err(|_| DeployError::Busy)
            }
            Err(_) => Err(DeployError::Busy),
        }
    }

    async fn prepare_in_turn(
        &self,
        running: tokio::sync::OwnedMutexGuard<()>,
        submission: Submission,
    ) -> Result<Prepared, DeployError> {
        let mut fleet = submission.fleet;
        let current = self.current.lock().clone();
        if let Some(current) = &current {
            check_compatible(current, &fleet)?;
        }
        if fleet.runtime == RuntimeKind::Kubernetes {
            fleet_manifests::check_runnable(&fleet).map_err(DeployError::NotForCluster)?;
        }
        // Before the revision is recorded, so that it records the exact images; a server
        // brought back from a stored revision keeps the images it ran. On Kubernetes the
        // cluster resolves images: each node pulls the file's reference as `pull` says.
        if let Some(local) = self.runtime.local() {
            fleet_engine::pin_images(&mut fleet, local)
                .await
                .map_err(DeployError::Unpinned)?;
        }
        let deployed: DeployedFleet = self
            .engine
            .deployed()
            .into_iter()
            .map(|s| fleet_plan::DeployedServer {
                name: s.name,
                hash: s.hash,
                spec: s.spec,
            })
            .collect();
        let plan = fleet_plan::plan(&fleet, current.is_some().then_some(&deployed))
            .map_err(|_| DeployError::Cycle)?;
        // One transaction: a crash cannot leave a revision no deployment names. The
        // deployment starts from the fleet revision serving, which is not the latest
        // recorded when that one failed and was rolled back.
        let (revision, deployment) = self
            .store
            .record_and_begin_deployment(
                NewFleetRevision {
                    fleet: fleet.name.clone(),
                    source: submission.source,
                    source_path: submission.path,
                    env: fleet.environment.clone(),
                    author: submission.author,
                    reason: submission.reason.clone(),
                    servers: fleet
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
                        .collect(),
                },
                submission.kind,
                submission.reason,
            )
            .await?;
        let fleet = Arc::new(fleet);
        *self.current.lock() = Some(fleet.clone());
        Ok(Prepared {
            deployer: self.clone(),
            desired: Desired {
                fleet,
                host: self.host.clone(),
                revisions: revision.servers,
                deployment: Some(deployment.id),
                is_rollback: deployment.kind == DeploymentKind::Rollback,
            },
            plan,
            deployment: deployment.id,
            _running: running,
        })
    }
}

/// What `mcpfleet rollback` asks for.
#[derive(Debug, Clone)]
pub struct RollbackTarget {
    /// One server, or (`None`) the whole fleet.
    pub server: Option<String>,
    /// The revision to go back to (a server revision, or a fleet revision for the whole
    /// fleet); `None`: the one before the current.
    pub to: Option<u64>,
    pub reason: Option<String>,
    pub author: String,
}

impl Deployer {
    /// Rolls forward to a stored revision: the whole fleet to a fleet revision, or one
    /// server to one of its server revisions (the others stay as they are). Planned and
    /// recorded like any deployment (kind `rollback`).
    ///
    /// # Errors
    /// See [`DeployError`]: no such revision, nothing before the current one, a stored
    /// revision that no longer validates.
    pub(crate) async fn rollback(&self, target: RollbackTarget) -> Result<Prepared, DeployError> {
        // Taken first: the deployment before, just ended, must be on record to go back from.
        let turn = self.take_turn().await?;
        let store = &self.store;
        // What serves, not the latest recorded: that may have failed and been rolled back.
        let nothing = || DeployError::NoRollbackTarget("nothing has been deployed yet".into());
        let serving = store.serving_fleet_revision().await?.ok_or_else(nothing)?;
        let current = store.fleet_revision(serving).await?.ok_or_else(nothing)?;
        let (fleet, source, path, default_reason) = match &target.server {
            None => {
                let number = match target.to {
                    Some(n) => n,
                    None => self.previous_fleet_revision(current.number).await?,
                };
                let revision = store.fleet_revision(number).await?.ok_or_else(|| {
                    DeployError::NoRollbackTarget(format!(
                        "there is no fleet revision {number} (see `mcpfleet history`)"
                    ))
                })?;
                let fleet = self.materialize(&revision).await?;
                (
                    fleet,
                    revision.source,
                    revision.source_path,
                    format!("rollback to fleet revision {number}"),
                )
            }
            Some(server) => {
                let serving = self
                    .engine
                    .deployed()
                    .into_iter()
                    .find(|s| &s.name == server)
                    .ok_or_else(|| {
                        DeployError::NoRollbackTarget(format!("`{server}` is not deployed"))
                    })?;
                let revisions = store.server_revisions(server).await?;
                let number = match target.to {
                    Some(n) => n,
                    None => revisions
                        .iter()
                        .rev()
                        .find(|r| r.number != serving.revision && r.state == fleet_store::RevisionState::Superseded)
                        .map(|r| r.number)
                        .ok_or_else(|| {
                            DeployError::NoRollbackTarget(format!(
                                "`{server}` has no earlier revision that served (see `mcpfleet history {server}`)"
                            ))
                        })?,
                };
                if number == serving.revision {
                    return Err(DeployError::NoRollbackTarget(format!(
                        "`{server}` runs revision {number} already"
                    )));
                }
                let old = revisions
                    .iter()
                    .find(|r| r.number == number)
                    .ok_or_else(|| {
                        DeployError::NoRollbackTarget(format!(
                            "`{server}` has no revision {number} (see `mcpfleet history {server}`)"
                        ))
                    })?;
                let recorded_in = store.fleet_revision(old.fleet_revision).await?.ok_or(
                    DeployError::Unreadable {
                        revision: old.fleet_revision,
                        why: "missing".into(),
                    },
                )?;
                let old_fleet = self.materialize(&recorded_in).await?;
                let mut fleet = self.materialize(&current).await?;
                let spec = old_fleet
                    .server(server)
                    .cloned()
                    .ok_or(DeployError::Unreadable {
                        revision: old.fleet_revision,
                        why: format!("it has no server `{server}`"),
                    })?;
                match fleet.servers.iter_mut().find(|s| &s.name == server) {
                    Some(slot) => *slot = spec,
                    None => fleet.servers.push(spec),
                }
                (
                    fleet,
                    current.source,
                    current.source_path,
                    format!("rollback of `{server}` to revision {number}"),
                )
            }
        };
        self.prepare_in_turn(
            turn,
            Submission {
                fleet,
                source,
                path,
                author: target.author,
                reason: Some(target.reason.unwrap_or(default_reason)),
                kind: DeploymentKind::Rollback,
            },
        )
        .await
    }

    /// The fleet revision the last successful deployment before `current` deployed.
    async fn previous_fleet_revision(&self, current: u64) -> Result<u64, DeployError> {
        self.store
            .deployments()
            .await?
            .iter()
            .rev()
            .filter(|d| d.state == DeploymentStatus::Succeeded && d.fleet_revision < current)
            .map(|d| d.fleet_revision)
            .next()
            .ok_or_else(|| {
                DeployError::NoRollbackTarget(
                    "no earlier fleet revision was deployed successfully (see `mcpfleet history`)"
                        .into(),
                )
            })
    }

    /// A stored fleet revision as a fleet again: its file's text validated anew (secrets
    /// and environment variables read now), each server at the revision the fleet revision
    /// names (a server rolled back alone comes from the revision that first recorded it),
    /// running the images that revision pinned.
    async fn materialize(
        &self,
        revision: &fleet_store::FleetRevision,
    ) -> Result<ValidFleet, DeployError> {
        let mut fleet = load_source(revision)?;
        let mut recorded = Vec::with_capacity(revision.servers.len());
        for (name, &number) in &revision.servers {
            let Some(stored) = self.store.server_revision(name, number).await? else {
                continue;
            };
            recorded.push(fleet_plan::DeployedServer {
                name: stored.server,
                hash: stored.hash,
                spec: stored.spec,
            });
            if stored.fleet_revision == revision.number {
                continue;
            }
            let Some(origin) = self.store.fleet_revision(stored.fleet_revision).await? else {
                continue;
            };
            if let (Some(spec), Some(slot)) = (
                load_source(&origin)?.server(name).cloned(),
                fleet.servers.iter_mut().find(|s| &s.name == name),
            ) {
                *slot = spec;
            }
        }
        fleet_plan::keep_pins(&mut fleet, &recorded.into_iter().collect());
        Ok(fleet)
    }
}

/// Validates a stored fleet file again.
fn load_source(revision: &fleet_store::FleetRevision) -> Result<ValidFleet, DeployError> {
    validate(
        &revision.source,
        &revision.source_path,
        revision.env.clone(),
    )
    .map_err(|rendered| DeployError::Unreadable {
        revision: revision.number,
        why: format!("it no longer validates:\n{rendered}"),
    })
}

/// Validates fleet-file text read from `path` (relative paths in it resolve against its
/// folder), dependency cycles included.
///
/// # Errors
/// Every diagnostic, located and rendered for people.
pub(crate) fn validate(
    source: &str,
    path: &str,
    environment: Option<String>,
) -> Result<ValidFleet, String> {
    let base_dir = std::path::Path::new(path)
        .parent()
        .map(std::path::Path::to_path_buf)
        .unwrap_or_default();
    let options = fleet_spec::LoadOptions {
        environment,
        ..fleet_spec::LoadOptions::default()
    };
    let mut checked = fleet_spec::load_str(path, source, base_dir, &options);
    if let Some(fleet) = &checked.fleet {
        checked.diagnostics.extend(fleet_plan::check(fleet));
    }
    let rendered = fleet_spec::diag::render_all(&checked.diagnostics, &checked.source);
    checked.into_valid().map_err(|_| rendered)
}

impl Prepared {
    /// The fleet this deployment deploys.
    pub(crate) fn fleet(&self) -> &ValidFleet {
        &self.desired.fleet
    }

    /// Puts the plan's servers in the status before the admin API answers anyone.
    pub(crate) fn announce(&self) {
        self.deployer.engine.announce(&self.desired, &self.plan);
    }

    /// Carries the deployment out and records how it ended: the deployment's state, and
    /// each changed server's revision as serving, replaced or failed.
    ///
    /// Journal order: the `apply` step is written before anything changes (if it cannot
    /// be, nothing changes and the deployment fails), the revision states are written
    /// before it is confirmed, the deployment's end last. So a crash after the
    /// confirmation leaves only the final record for recovery to write.
    pub(crate) async fn run(self) -> DeploymentOutcome {
        // What is logged while it runs (its steps and the engine's work for it) names it,
        // and it is the root of the deployment's trace: waves, server steps, checks.
        let span = tracing::info_span!(
            parent: None,
            "deployment",
            deployment = self.deployment,
            fleet = self.desired.fleet.name.as_str(),
            rollback = self.desired.is_rollback,
            outcome = tracing::field::Empty,
            otel.status_code = tracing::field::Empty,
            otel.status_message = tracing::field::Empty,
        );
        let outcome = self.carry_out().instrument(span.clone()).await;
        span.record("outcome", outcome.state.as_str());
        if outcome.state != DeploymentState::Succeeded {
            span.record("otel.status_code", "ERROR");
            if let Some(reason) = &outcome.reason {
                span.record("otel.status_message", reason.as_str());
            }
        }
        outcome
    }

    async fn carry_out(self) -> DeploymentOutcome {
        let Prepared {
            deployer,
            plan,
            desired,
            deployment,
            _running,
        } = self;
        let store = &deployer.store;
        let journal = |e: fleet_store::StoreError| {
            tracing::error!("cannot write the deployment journal: {e}");
        };
        let step = JournalStep::Apply(plan.changes);
        let seq = match fleet_engine::append_step(&**store, deployment, &step).await {
            Ok(seq) => seq,
            Err(e) => {
                // A change the journal does not know of is one a restart after a crash
                // could not settle.
                let reason =
                    format!("cannot write the deployment journal, so nothing was changed: {e}");
                tracing::error!("deployment {deployment}: {reason}");
                let outcome = deployer.engine.refuse(&desired, &plan, reason.clone());
                let _ = store
                    .finish_deployment(deployment, DeploymentStatus::Failed, Some(reason))
                    .await
                    .map_err(journal);
                return outcome;
            }
        };
        let active = deployer.active_revisions(&desired).await;
        fleet_engine::failpoint("deployment-begun", None, Some(deployment)).await;
        let outcome = deployer.engine.deploy(&desired, &plan).await;
        deployer
            .record_revision_states(&desired, &active, &outcome)
            .await;
        let result = if outcome.state == DeploymentState::Succeeded {
            StepOutcome::Done
        } else {
            StepOutcome::Failed
        };
        let _ = store
            .confirm_step(deployment, seq, result, outcome.reason.clone())
            .await
            .map_err(journal);
        let status = match outcome.state {
            DeploymentState::Succeeded => DeploymentStatus::Succeeded,
            DeploymentState::RolledBack => DeploymentStatus::RolledBack,
            DeploymentState::Paused => DeploymentStatus::Paused,
            DeploymentState::InProgress => DeploymentStatus::InProgress,
            DeploymentState::Failed | DeploymentState::Stopping | DeploymentState::Stopped => {
                DeploymentStatus::Failed
            }
        };
        fleet_engine::failpoint("before-finish", None, Some(deployment)).await;
        let _ = store
            .finish_deployment(deployment, status, outcome.reason.clone())
            .await
            .map_err(journal);
        outcome
    }
}

impl Deployer {
    /// The revisions of `desired`'s servers recorded as active (serving) before it is
    /// deployed, server by server.
    ///
    /// From the store, not from the engine: a control plane started afresh (after `down`,
    /// or a crash) runs nothing yet, but the revisions it replaces are still the ones
    /// recorded as active. Read before the deployment runs, so that once it has ended only
    /// writes stand between its end and the next deployment.
    async fn active_revisions(&self, desired: &Desired) -> BTreeMap<String, Vec<u64>> {
        let mut active = BTreeMap::new();
        for server in desired.revisions.keys() {
            match self.store.server_revisions(server).await {
                Ok(revisions) => {
                    let numbers = revisions
                        .iter()
                        .filter(|r| r.state == RevisionState::Active)
                        .map(|r| r.number)
                        .collect();
                    active.insert(server.clone(), numbers);
                }
                Err(e) => tracing::error!("cannot read the revisions of `{server}`: {e}"),
            }
        }
        active
    }

    /// Records each server revision of `desired` as the deployment left it: a revision
    /// that serves is active (and the revisions `active` before it superseded), one that
    /// does not serve and was not active before has failed.
    async fn record_revision_states(
        &self,
        desired: &Desired,
        active: &BTreeMap<String, Vec<u64>>,
        outcome: &DeploymentOutcome,
    ) {
        let serving = self.engine.deployed();
        for (server, &revision) in &desired.revisions {
            let Some(active) = active.get(server) else {
                continue;
            };
            let serves = serving
                .iter()
                .any(|s| &s.name == server && s.revision == revision);
            let changes: Vec<(u64, RevisionState, Option<String>)> = if serves {
                if *active == [revision] {
                    continue;
                }
                std::iter::once((revision, RevisionState::Active, None))
                    .chain(
                        active
                            .iter()
                            .filter(|&&old| old != revision)
                            .map(|&old| (old, RevisionState::Superseded, None)),
                    )
                    .collect()
            } else if active.contains(&revision) {
                // It served before this deployment and will when the fleet comes up again.
                continue;
            } else {
                vec![(revision, RevisionState::Failed, outcome.reason.clone())]
            };
            for (number, state, reason) in changes {
                if let Err(e) = self
                    .store
                    .set_server_revision_state(server, number, state, reason)
                    .await
                {
                    tracing::error!("cannot record revision {number} of `{server}`: {e}");
                }
            }
        }
    }

    /// Settles what a control plane that died left unfinished (see [`Engine::recover`]),
    /// before the first deployment of this one: `submission`, or what recovery deploys
    /// instead of it (a rollback to the revision that served before an interrupted one).
    ///
    /// # Errors
    /// The store cannot be read or written, or a journal step cannot be read back.
    pub(crate) async fn recover(&self, submission: Submission) -> Result<Submission, DeployError> {
        let given = Given {
            source: submission.source.clone(),
            environment: submission.fleet.environment.clone(),
            reason: submission.reason.clone(),
        };
        let recovery = self.engine.recover(&*self.store, given, self).await?;
        Ok(match recovery.deploy {
            Redeploy::Given { reason } => Submission {
                reason,
                ..submission
            },
            Redeploy::RollBack(rollback) => Submission {
                fleet: rollback.fleet,
                source: rollback.revision.source,
                path: rollback.revision.source_path,
                author: submission.author,
                reason: rollback.reason,
                kind: DeploymentKind::Rollback,
            },
        })
    }
}

/// Recovery reads stored revisions back as the control plane does for a rollback.
impl StoredFleets for Deployer {
    type Error = DeployError;

    fn fleet(
        &self,
        revision: &fleet_store::FleetRevision,
    ) -> impl Future<Output = Result<ValidFleet, DeployError>> + Send {
        self.materialize(revision)
    }
}

/// The settings a running control plane cannot change: its listeners, the gateway's TLS
/// and connection timeouts. Tokens and limits change while it runs (see
/// [`crate::LIVE_SETTINGS`]).
fn check_compatible(current: &ValidFleet, new: &ValidFleet) -> Result<(), DeployError> {
    if current.name != new.name {
        return Err(DeployError::OtherFleet {
            running: current.name.clone(),
            submitted: new.name.clone(),
        });
    }
    // The control plane's runtime and its cluster connection are made when it starts.
    let moved = if current.runtime != new.runtime {
        Some("runtime")
    } else if current.kubernetes.namespace != new.kubernetes.namespace {
        Some("kubernetes.namespace")
    } else if current.kubernetes.context != new.kubernetes.context {
        Some("kubernetes.context")
    } else {
        None
    };
    if let Some(section) = moved {
        return Err(DeployError::NeedsRestart {
            section: section.to_owned(),
        });
    }
    match crate::changed_settings(current, new)
        .into_iter()
        .find(|key| !crate::LIVE_SETTINGS.contains(&key.as_str()))
    {
        Some(section) => Err(DeployError::NeedsRestart { section }),
        None => Ok(()),
    }
}
