//! The fleet's record as clients read it — deployment history, server revisions, tool-call
//! audit, events — from the state store: through the admin API while a control plane runs,
//! and from the store file directly once the fleet is down ([`open_stopped`]).

use crate::backup::BackupError;
use crate::{StateDir, StoreLocation, event_log};
use fleet_api::types::{
    AuditEntry, DeploymentKind, DeploymentState, EventRecord, HistoryEntry, RevisionState,
    ServerRevisionEntry,
};
use fleet_store::{DeploymentStatus, StateStore, StoreError};
use std::path::Path;
use std::sync::Arc;

/// Why a server's revisions cannot be listed.
#[derive(Debug, thiserror::Error)]
pub enum RecordError {
    #[error("no server `{name}` was ever deployed in this fleet (servers: {known})")]
    UnknownServer { name: String, known: String },
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// Every deployment with its fleet revision, oldest first.
///
/// # Errors
/// The store cannot be read.
pub async fn history(store: &dyn StateStore) -> Result<Vec<HistoryEntry>, StoreError> {
    let deployments = store.deployments().await?;
    let revisions: std::collections::BTreeMap<u64, fleet_store::FleetRevision> = store
        .fleet_revisions()
        .await?
        .into_iter()
        .map(|r| (r.number, r))
        .collect();
    Ok(deployments
        .into_iter()
        .map(|d| {
            let revision = revisions.get(&d.fleet_revision);
            let reason = revision.and_then(|r| r.reason.clone());
            HistoryEntry {
                deployment: d.id,
                revision: d.fleet_revision,
                from_revision: d.from_revision,
                kind: match d.kind {
                    fleet_store::DeploymentKind::Deploy => DeploymentKind::Deploy,
                    fleet_store::DeploymentKind::Rollback => DeploymentKind::Rollback,
                },
                state: match d.state {
                    DeploymentStatus::InProgress => DeploymentState::InProgress,
                    DeploymentStatus::Paused => DeploymentState::Paused,
                    DeploymentStatus::Succeeded => DeploymentState::Succeeded,
                    DeploymentStatus::Failed => DeploymentState::Failed,
                    DeploymentStatus::RolledBack => DeploymentState::RolledBack,
                    DeploymentStatus::Aborted => DeploymentState::Aborted,
                },
                // The deployment's reason starts as the revision's and is replaced by what
                // ended it.
                outcome: d.reason.filter(|r| Some(r) != reason.as_ref()),
                reason,
                started_at: d.started_at,
                finished_at: d.finished_at,
                author: revision.map(|r| r.author.clone()).unwrap_or_default(),
                servers: revision.map(|r| r.servers.clone()).unwrap_or_default(),
            }
        })
        .collect())
}

/// Every revision of server `name`, oldest first.
///
/// # Errors
/// The fleet never had that server, or the store cannot be read.
pub async fn server_revisions(
    store: &dyn StateStore,
    name: &str,
) -> Result<Vec<ServerRevisionEntry>, RecordError> {
    let revisions = store.server_revisions(name).await?;
    if revisions.is_empty() {
        let known = store
            .latest_fleet_revision()
            .await?
            .map(|r| r.servers.into_keys().collect::<Vec<_>>().join(", "))
            .unwrap_or_default();
        return Err(RecordError::UnknownServer {
            name: name.to_owned(),
            known,
        });
    }
    Ok(revisions
        .into_iter()
        .map(|r| ServerRevisionEntry {
            server: r.server,
            number: r.number,
            state: match r.state {
                fleet_store::RevisionState::Pending => RevisionState::Pending,
                fleet_store::RevisionState::Active => RevisionState::Active,
                fleet_store::RevisionState::Superseded => RevisionState::Superseded,
                fleet_store::RevisionState::Failed => RevisionState::Failed,
            },
            hash: r.hash,
            created_at: r.created_at,
            fleet_revision: r.fleet_revision,
            reason: r.reason,
        })
        .collect())
}

/// Up to `limit` tool calls through the gateway after record `after`, oldest first.
///
/// # Errors
/// The store cannot be read.
pub async fn audit(
    store: &dyn StateStore,
    after: u64,
    limit: usize,
) -> Result<Vec<AuditEntry>, StoreError> {
    Ok(store
        .audit(after, limit)
        .await?
        .into_iter()
        .map(audit_entry)
        .collect())
}

/// The newest `limit` tool calls through the gateway, oldest first.
///
/// # Errors
/// The store cannot be read.
pub async fn latest_audit(
    store: &dyn StateStore,
    limit: usize,
) -> Result<Vec<AuditEntry>, StoreError> {
    Ok(store
        .latest_audit(limit)
        .await?
        .into_iter()
        .map(audit_entry)
        .collect())
}

fn audit_entry(r: fleet_store::StoredAuditRecord) -> AuditEntry {
    AuditEntry {
        id: r.id,
        time: fleet_spec::template::rfc3339(r.record.time),
        duration_ms: r.record.duration_ms(),
        token: r.record.token,
        server: r.record.server,
        revision: r.record.revision,
        tool: r.record.tool,
        outcome: r.record.outcome,
    }
}

/// Up to `limit` recorded events after event `after`, oldest first (events of a kind this
/// version does not know are left out).
///
/// # Errors
/// The store cannot be read.
pub async fn events(
    store: &dyn StateStore,
    after: u64,
    limit: usize,
) -> Result<Vec<EventRecord>, StoreError> {
    Ok(store
        .events(after, limit)
        .await?
        .into_iter()
        .filter_map(event_log::record_of)
        .collect())
}

/// The newest `limit` recorded events, oldest first (of a kind this version knows).
///
/// # Errors
/// The store cannot be read.
pub async fn latest_events(
    store: &dyn StateStore,
    limit: usize,
) -> Result<Vec<EventRecord>, StoreError> {
    Ok(store
        .latest_events(limit)
        .await?
        .into_iter()
        .filter_map(event_log::record_of)
        .collect())
}

/// The store of a fleet no control plane of this state directory runs, held (the
/// directory locked, when the store is its file) while it is read.
pub struct StoppedFleet {
    _held: Option<StateDir>,
    store: Arc<dyn StateStore>,
}

impl std::fmt::Debug for StoppedFleet {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StoppedFleet").finish_non_exhaustive()
    }
}

impl StoppedFleet {
    pub fn store(&self) -> &dyn StateStore {
        self.store.as_ref()
    }
}

/// Opens the store of the fleet whose state directory is `dir` and whose store is at
/// `location`, for reading its record.
///
/// # Errors
/// See [`BackupError`]: no store (nothing was ever deployed), a control plane holds the
/// directory, the store cannot be opened or reached.
pub async fn open_stopped(
    dir: &Path,
    location: &StoreLocation,
) -> Result<StoppedFleet, BackupError> {
    if let StoreLocation::Postgres { .. } = location {
        // Shared by every control plane of the fleet: read without taking a directory.
        let store = location.open(dir).await?;
        return Ok(StoppedFleet { _held: None, store });
    }
    // Checked before taking the directory, which would create it.
    if !dir.join(crate::state_dir::STORE).exists() {
        return Err(BackupError::NoStore {
            dir: dir.to_path_buf(),
        });
    }
    let held = StateDir::acquire(dir)?;
    let store = location.open(dir).await?;
    Ok(StoppedFleet {
        _held: Some(held),
        store,
    })
}
