//! The control plane's durable state: what was deployed, how, and what happened.
//!
//! Owns:
//! - **revisions**: every fleet revision (the fleet file's text and who recorded it why) and
//!   the numbered server revisions it is made of, with their rendered specs and states;
//! - **deployments** and their **step journal**: a step is written before its effect and
//!   confirmed after, so that after a crash the engine can tell what it was doing
//!   ([`StateStore::unfinished_deployments`]);
//! - **events** and the gateway's **tool-call audit**, both paged by id;
//! - the **leadership lease** of the fleet's control plane and its **fencing** token, which
//!   a fenced store handle checks in every write ([`StateStore::fenced`]);
//! - the **gateway view** the leader publishes for gateway replicas, versioned so a replica
//!   reads the body only when it changed ([`StateStore::gateway_view`]);
//! - the **schema** and its migrations, and **export/import** of the whole store as one JSON
//!   document ([`StateExport`]).
//!
//! Does not own:
//! - what a step *means*: steps are opaque JSON the engine defines and reads back;
//! - rendering specs or computing their hashes (`fleet-spec`, `fleet-plan`);
//! - secrets: the store never sees a secret value. Fleet files hold only secret references
//!   and specs arrive already masked.
//!
//! [`StateStore`] is the trait the engine codes against (`Arc<dyn StateStore>`);
//! [`SqliteStore`] is the embedded implementation, one database file in the state directory;
//! [`PostgresStore`] the networked one, a PostgreSQL database several control planes can
//! share. Both keep the same schema and write the same export documents.

mod columns;
mod error;
mod lease;
mod model;
mod postgres;
mod sqlite;

pub use error::StoreError;
pub use model::{
    DeploymentKind, DeploymentRecord, DeploymentStatus, FleetRevision, GatewayView, JournalEntry,
    Lease, LeaseInfo, NewDeployment, NewEvent, NewFleetRevision, NewServerRevision, RevisionState,
    STATE_EXPORT_FORMAT, ServerRevision, StateExport, StepOutcome, StepState, StoredAuditRecord,
    StoredEvent,
};
pub use postgres::{PostgresStore, redacted};
pub use sqlite::{SCHEMA_VERSION, SqliteStore};

use fleet_routes::audit::ToolCallRecord;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

/// What every [`StateStore`] method returns: a boxed future, so the trait stays usable as
/// `dyn StateStore` and a networked implementation can do real async I/O.
pub type StoreFuture<'a, T> = Pin<Box<dyn Future<Output = Result<T, StoreError>> + Send + 'a>>;

/// The control plane's durable state.
///
/// Every method that writes several rows does so in one transaction: after a crash either all
/// of a call's rows are there or none are. Numbers (fleet revisions, server revisions per
/// server, deployment ids, step sequence numbers, event and audit ids) start at 1 and only
/// grow.
///
/// # Errors
///
/// Every method can fail with [`StoreError::Database`] (the database could not be read or
/// written), when reading with [`StoreError::Corrupt`] (a stored row does not parse), and with
/// [`StoreError::Invalid`] when given a number above `i64::MAX` (no store holds one; paging
/// positions are the exception, they just reach the end). Each method lists the errors
/// particular to it.
///
/// A handle made by [`fenced`](StateStore::fenced) can also fail every write with
/// [`StoreError::Fenced`].
pub trait StateStore: Send + Sync + std::fmt::Debug {
    /// Records a new fleet revision, numbered one above the latest, and its server revisions.
    ///
    /// For each server: if one of the server's revisions has the same `hash` (the same
    /// spec, e.g. after a rollback), the fleet revision reuses that revision's number
    /// (whatever its state); otherwise the server gets a new revision, numbered one above
    /// its latest (or 1), in state [`RevisionState::Pending`].
    ///
    /// # Errors
    ///
    /// [`StoreError::Invalid`] if two servers in `new.servers` have the same name.
    fn record_fleet_revision(&self, new: NewFleetRevision) -> StoreFuture<'_, FleetRevision>;

    /// The fleet revision with this number, if there is one.
    fn fleet_revision(&self, number: u64) -> StoreFuture<'_, Option<FleetRevision>>;

    /// The fleet revision with the highest number, if any was recorded.
    fn latest_fleet_revision(&self) -> StoreFuture<'_, Option<FleetRevision>>;

    /// Every fleet revision, in ascending number order, each with its source text.
    fn fleet_revisions(&self) -> StoreFuture<'_, Vec<FleetRevision>>;

    /// Revision `number` of `server`, if there is one.
    fn server_revision(&self, server: &str, number: u64)
    -> StoreFuture<'_, Option<ServerRevision>>;

    /// Every revision of `server`, in ascending number order (empty for an unknown server).
    fn server_revisions(&self, server: &str) -> StoreFuture<'_, Vec<ServerRevision>>;

    /// Sets the state of revision `number` of `server`, with an optional reason (which
    /// replaces the previous one).
    ///
    /// # Errors
    ///
    /// [`StoreError::NotFound`] if there is no such server revision.
    fn set_server_revision_state(
        &self,
        server: &str,
        number: u64,
        state: RevisionState,
        reason: Option<String>,
    ) -> StoreFuture<'_, ()>;

    /// The fleet revision serving as a whole: the one the newest deployment that ended
    /// well left serving — a succeeded deployment's own, or the one a rolled-back deployment
    /// went back to (its `from_revision`). Failed, aborted and unfinished deployments are
    /// passed over: they leave the fleet as it was, or mixed. `None` if nothing ever served.
    ///
    /// Not simply the latest fleet revision: that may be one that failed and was rolled back.
    fn serving_fleet_revision(&self) -> StoreFuture<'_, Option<u64>>;

    /// Records a new fleet revision (as [`record_fleet_revision`](StateStore::record_fleet_revision)
    /// does) and starts its deployment from the serving fleet revision
    /// ([`serving_fleet_revision`](StateStore::serving_fleet_revision)), in one transaction:
    /// after a crash there is either a revision and its deployment, or neither — never a
    /// revision no deployment names.
    ///
    /// # Errors
    ///
    /// As [`record_fleet_revision`](StateStore::record_fleet_revision).
    fn record_and_begin_deployment(
        &self,
        revision: NewFleetRevision,
        kind: DeploymentKind,
        reason: Option<String>,
    ) -> StoreFuture<'_, (FleetRevision, DeploymentRecord)>;

    /// Starts a deployment: [`DeploymentStatus::InProgress`], started now, no steps.
    ///
    /// # Errors
    ///
    /// [`StoreError::NotFound`] if `fleet_revision` or `from_revision` is not a recorded fleet
    /// revision.
    fn begin_deployment(&self, new: NewDeployment) -> StoreFuture<'_, DeploymentRecord>;

    /// Journals a step *before* its effect: appended to the deployment as
    /// [`StepState::Pending`], written now. Returns the step's sequence number within the
    /// deployment (1, 2, …).
    ///
    /// # Errors
    ///
    /// [`StoreError::NotFound`] for an unknown deployment; [`StoreError::Conflict`] if the
    /// deployment is already finished (succeeded, failed, rolled back or aborted).
    fn append_step(&self, deployment: u64, step: serde_json::Value) -> StoreFuture<'_, u64>;

    /// Confirms a step *after* its effect: [`StepState::Done`] or [`StepState::Failed`],
    /// confirmed now, with an optional detail. Allowed whatever state the deployment is in, so
    /// that crash recovery can settle steps it finds pending.
    ///
    /// # Errors
    ///
    /// [`StoreError::NotFound`] for an unknown step; [`StoreError::Conflict`] if the step was
    /// already confirmed.
    fn confirm_step(
        &self,
        deployment: u64,
        seq: u64,
        outcome: StepOutcome,
        detail: Option<String>,
    ) -> StoreFuture<'_, ()>;

    /// Records the deployment's state, with an optional reason (which replaces the previous
    /// one). A final state (succeeded, failed, rolled back, aborted) also stamps
    /// `finished_at`; [`DeploymentStatus::Paused`] and [`DeploymentStatus::InProgress`] record
    /// a pause and its resumption and leave the deployment unfinished.
    ///
    /// # Errors
    ///
    /// [`StoreError::NotFound`] for an unknown deployment; [`StoreError::Conflict`] if it is
    /// already finished.
    fn finish_deployment(
        &self,
        id: u64,
        state: DeploymentStatus,
        reason: Option<String>,
    ) -> StoreFuture<'_, ()>;

    /// The deployment with this id, with its steps in sequence order, if there is one.
    fn deployment(&self, id: u64) -> StoreFuture<'_, Option<DeploymentRecord>>;

    /// Every deployment, in ascending id order, with its steps.
    fn deployments(&self) -> StoreFuture<'_, Vec<DeploymentRecord>>;

    /// The deployments still in progress or paused, in ascending id order, with their steps:
    /// what crash recovery reads on start.
    fn unfinished_deployments(&self) -> StoreFuture<'_, Vec<DeploymentRecord>>;

    /// Appends events in one transaction and returns their ids, ascending, in input order.
    ///
    /// # Errors
    ///
    /// [`StoreError::Invalid`] if a revision or deployment number is beyond what the store
    /// can hold (above `i64::MAX`).
    fn append_events(&self, events: Vec<NewEvent>) -> StoreFuture<'_, Vec<u64>>;

    /// Up to `limit` events with an id above `after`, in ascending id order. Page with the
    /// last id seen; `after = 0` starts at the beginning.
    fn events(&self, after: u64, limit: usize) -> StoreFuture<'_, Vec<StoredEvent>>;

    /// The newest `limit` events, in ascending id order: the tail a dashboard shows, read
    /// without paging through every event before it.
    fn latest_events(&self, limit: usize) -> StoreFuture<'_, Vec<StoredEvent>>;

    /// Appends tool-call audit records in one transaction.
    ///
    /// # Errors
    ///
    /// [`StoreError::Invalid`] if a time is beyond what RFC 3339 text can say or a
    /// revision number is above `i64::MAX`.
    fn append_audit(&self, records: Vec<ToolCallRecord>) -> StoreFuture<'_, ()>;

    /// Up to `limit` audit records with an id above `after`, in ascending id order.
    ///
    /// # Errors
    ///
    /// [`StoreError::Corrupt`] if a row does not read back as a record, e.g. an outcome
    /// written by a newer mcpfleet.
    fn audit(&self, after: u64, limit: usize) -> StoreFuture<'_, Vec<StoredAuditRecord>>;

    /// The newest `limit` audit records, in ascending id order.
    ///
    /// # Errors
    ///
    /// [`StoreError::Corrupt`] as for [`StateStore::audit`].
    fn latest_audit(&self, limit: usize) -> StoreFuture<'_, Vec<StoredAuditRecord>>;

    /// The whole store as one document, read in one transaction.
    fn export(&self) -> StoreFuture<'_, StateExport>;

    /// Loads a document made by [`export`](StateStore::export) into an empty store, in one
    /// transaction, keeping every id and number: exporting again gives the same document.
    ///
    /// # Errors
    ///
    /// [`StoreError::NotEmpty`] if the store holds anything (nothing is changed);
    /// [`StoreError::ExportFormat`] if the document's format is not
    /// [`STATE_EXPORT_FORMAT`]; [`StoreError::Invalid`] if the document contradicts itself
    /// (for example a fleet revision naming a server revision the document does not hold).
    fn import(&self, state: StateExport) -> StoreFuture<'_, ()>;

    /// Takes the lease on the leadership of the fleet's control plane for `holder` (a name
    /// unique to one control plane), for `ttl` by the database's clock, so that control
    /// planes on hosts whose clocks disagree still agree on who leads.
    ///
    /// Taken when no one ever held it, its holder released it or it expired: the new lease's
    /// fencing token is one above the last ever handed out on this database (released and
    /// expired ones included). When `holder`'s own lease is live, renews it (same token,
    /// later expiry). `None` while another holder's lease is live. Never fenced.
    ///
    /// # Errors
    ///
    /// [`StoreError::Invalid`] if `ttl` is under 1 ms or over a day.
    fn acquire_lease(&self, holder: &str, ttl: Duration) -> StoreFuture<'_, Option<Lease>>;

    /// Extends `lease` to `ttl` from now, by the database's clock, and returns it with its
    /// new expiry. Also after it expired, as long as no one took the lease since. Never
    /// fenced.
    ///
    /// # Errors
    ///
    /// [`StoreError::Fenced`] if another holder took the lease since: the caller no longer
    /// leads and must stop acting as the leader. [`StoreError::Invalid`] for a `ttl` as in
    /// [`acquire_lease`](StateStore::acquire_lease).
    fn renew_lease(&self, lease: &Lease, ttl: Duration) -> StoreFuture<'_, Lease>;

    /// Gives `lease` up: it expires now, so another control plane can acquire it at once.
    /// Nothing happens if it was superseded or has lapsed already. Never fenced.
    fn release_lease(&self, lease: &Lease) -> StoreFuture<'_, ()>;

    /// The last lease handed out, whether it is still live (by the database's clock), or
    /// `None` if none ever was.
    fn lease(&self) -> StoreFuture<'_, Option<LeaseInfo>>;

    /// Replaces the gateway view with `body`, numbered one above the previous view's
    /// version (or 1), and returns that version. Fenced, as every write: a deposed leader
    /// cannot publish what it routes by.
    fn publish_gateway_view(&self, body: serde_json::Value) -> StoreFuture<'_, u64>;

    /// The gateway view, unless its version is `known` (the one the caller has): a replica
    /// polls with the version it holds and reads the body only when it changed. `None` when
    /// none was published or it is still `known`. `known = 0` always reads it.
    fn gateway_view(&self, known: u64) -> StoreFuture<'_, Option<GatewayView>>;

    /// A handle on the same store (the same connection) whose every write call first checks,
    /// inside its own transaction, that `token` is still the current lease's fencing token,
    /// and otherwise fails with [`StoreError::Fenced`] having written nothing: a leader that
    /// was deposed while it was stopped or cut off can never write again. Reads and the
    /// lease calls are not fenced. A handle never fenced writes whatever the lease.
    fn fenced(&self, token: u64) -> Arc<dyn StateStore>;
}
