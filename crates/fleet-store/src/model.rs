//! The records the store keeps, as the engine, the API and export documents see them.
//!
//! Times are RFC 3339 UTC strings with millisecond precision (`2026-11-22T03:04:05.000Z`):
//! they sort as text and read the same in every export.

use fleet_routes::audit::{ToolCallRecord, UnknownOutcome};
use serde::{Deserialize, Serialize};
use std::borrow::Cow;
use std::collections::BTreeMap;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// A fleet revision to record: what the user deployed, by whom and why, and the rendered
/// server revisions it is made of.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct NewFleetRevision {
    /// The fleet's name.
    pub fleet: String,
    /// The fleet file's text. It holds secret references, never secret values.
    pub source: String,
    /// Where the fleet file was read from, as the user gave it.
    pub source_path: String,
    /// The environment overlay chosen with `--env`, if any.
    pub env: Option<String>,
    /// Who recorded it (a user name or a token name).
    pub author: String,
    /// Why, if the user said.
    pub reason: Option<String>,
    /// Every server in the fleet, rendered.
    pub servers: Vec<NewServerRevision>,
}

/// One server of a [`NewFleetRevision`], rendered.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct NewServerRevision {
    /// The server's name (`servers.<name>`).
    pub name: String,
    /// The content hash of the rendered spec: equal hashes mean the same revision.
    pub hash: String,
    /// The rendered spec, secrets masked.
    pub spec: serde_json::Value,
}

/// A recorded fleet revision: the set of server revisions deployed together.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FleetRevision {
    /// 1, 2, … in recording order.
    pub number: u64,
    /// The fleet's name.
    pub fleet: String,
    /// When it was recorded.
    pub created_at: String,
    /// Who recorded it.
    pub author: String,
    /// Why, if the user said.
    pub reason: Option<String>,
    /// The fleet file's text (secret references only).
    pub source: String,
    /// Where the fleet file was read from.
    pub source_path: String,
    /// The environment overlay, if any.
    pub env: Option<String>,
    /// Server name → the number of that server's revision in this fleet revision.
    pub servers: BTreeMap<String, u64>,
}

/// A recorded server revision: an immutable rendered spec, numbered per server.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ServerRevision {
    /// The server's name.
    pub server: String,
    /// 1, 2, … per server.
    pub number: u64,
    /// The content hash of `spec`.
    pub hash: String,
    /// The rendered spec, secrets masked.
    pub spec: serde_json::Value,
    /// When it was first recorded.
    pub created_at: String,
    /// The fleet revision it was first recorded in.
    pub fleet_revision: u64,
    /// Where it stands.
    pub state: RevisionState,
    /// Why it is in that state, if said (e.g. why it failed).
    pub reason: Option<String>,
}

/// Where a server revision stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RevisionState {
    /// Recorded, not (yet) serving.
    Pending,
    /// Serving.
    Active,
    /// Was serving; replaced by a newer revision.
    Superseded,
    /// Failed to deploy or was aborted.
    Failed,
}

/// A deployment to start.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct NewDeployment {
    /// The fleet revision being deployed.
    pub fleet_revision: u64,
    /// The fleet revision deployed before, if any.
    pub from_revision: Option<u64>,
    /// A deployment or a rollback.
    pub kind: DeploymentKind,
    /// Why, if said.
    pub reason: Option<String>,
}

/// What a deployment is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DeploymentKind {
    /// Moving to a new fleet revision.
    Deploy,
    /// Moving back to a stored fleet revision.
    Rollback,
}

/// A recorded deployment and its step journal.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DeploymentRecord {
    /// 1, 2, … in start order.
    pub id: u64,
    /// The fleet revision being deployed.
    pub fleet_revision: u64,
    /// The fleet revision deployed before, if any.
    pub from_revision: Option<u64>,
    /// A deployment or a rollback.
    pub kind: DeploymentKind,
    /// Where it stands.
    pub state: DeploymentStatus,
    /// When it started.
    pub started_at: String,
    /// When it reached a final state; `None` while in progress or paused.
    pub finished_at: Option<String>,
    /// Why it is in its state, if said.
    pub reason: Option<String>,
    /// The journal, in sequence order.
    pub steps: Vec<JournalEntry>,
}

/// Where a deployment stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum DeploymentStatus {
    /// Running.
    InProgress,
    /// Waiting (for `promote`, `resume`, or by `on_failure: pause`).
    Paused,
    /// Finished: every step done.
    Succeeded,
    /// Finished: a step failed and nothing was rolled back.
    Failed,
    /// Finished: a step failed and the previous revision was restored.
    RolledBack,
    /// Finished: stopped by the user.
    Aborted,
}

impl DeploymentStatus {
    /// Whether this is a final state: the deployment will not change any more.
    pub fn is_finished(self) -> bool {
        !matches!(self, Self::InProgress | Self::Paused)
    }
}

/// One step of a deployment's journal.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct JournalEntry {
    /// 1, 2, … within the deployment.
    pub seq: u64,
    /// The step, as the engine described it (opaque to the store).
    pub step: serde_json::Value,
    /// Pending until confirmed.
    pub state: StepState,
    /// When it was journaled, before its effect.
    pub written_at: String,
    /// When it was confirmed, after its effect.
    pub confirmed_at: Option<String>,
    /// What the engine said when confirming (e.g. the failure).
    pub detail: Option<String>,
}

/// Where a journaled step stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum StepState {
    /// Written; its effect may or may not have happened.
    Pending,
    /// Its effect happened.
    Done,
    /// Its effect failed.
    Failed,
}

/// How a step ended, when confirming it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum StepOutcome {
    /// Its effect happened.
    Done,
    /// Its effect failed.
    Failed,
}

impl From<StepOutcome> for StepState {
    fn from(outcome: StepOutcome) -> Self {
        match outcome {
            StepOutcome::Done => Self::Done,
            StepOutcome::Failed => Self::Failed,
        }
    }
}

/// An event to record (`deployment_started`, `server_ready`, …; see DESIGN.md §9).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct NewEvent {
    /// When it happened.
    pub time: String,
    /// What kind of event, e.g. `server_ready`.
    pub kind: String,
    /// The server it is about, if any.
    pub server: Option<String>,
    /// The server revision it is about, if any.
    pub revision: Option<u64>,
    /// The deployment it belongs to, if any.
    pub deployment: Option<u64>,
    /// The instance it is about, if any.
    pub instance: Option<String>,
    /// What happened, for people.
    pub message: String,
}

/// A recorded event: the event and its id.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StoredEvent {
    /// 1, 2, … in recording order.
    pub id: u64,
    /// The event.
    #[serde(flatten)]
    pub event: NewEvent,
}

/// A recorded tool call through the gateway: the gateway's record and its id. Kept and
/// exported as flat fields ([`AuditRow`]): `time` as RFC 3339 text, `outcome` by its name,
/// `duration_ms` as a number.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(try_from = "AuditRow<'static>")]
pub struct StoredAuditRecord {
    /// 1, 2, … in recording order.
    pub id: u64,
    /// The record.
    pub record: ToolCallRecord,
}

impl Serialize for StoredAuditRecord {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        AuditRow::of(self.id, &self.record)
            .map_err(serde::ser::Error::custom)?
            .serialize(serializer)
    }
}

/// A tool call as the store writes it down: the columns of an `audit` row, the fields of
/// an export's `audit` entry. Written from a record it borrows (the gateway's audit
/// writes every tool call: no copies), read back owned.
#[derive(Debug, Serialize, Deserialize)]
pub(crate) struct AuditRow<'a> {
    /// 0 until the database numbers it.
    pub(crate) id: u64,
    pub(crate) time: String,
    pub(crate) token: Option<Cow<'a, str>>,
    pub(crate) server: Cow<'a, str>,
    pub(crate) revision: u64,
    pub(crate) tool: Cow<'a, str>,
    pub(crate) outcome: Cow<'a, str>,
    pub(crate) duration_ms: f64,
}

/// Why a tool call cannot be written down, or a written-down one read back.
#[derive(Debug, thiserror::Error)]
pub(crate) enum BadAuditRecord {
    /// The time is outside the years RFC 3339 text can say (0000 to 9999): a clock this
    /// wrong is a bug.
    #[error("audit record for tool `{tool}` of `{server}`: its time is out of range")]
    TimeOutOfRange {
        /// The tool called.
        tool: String,
        /// The server called.
        server: String,
    },
    /// The stored time is not RFC 3339 text.
    #[error("audit record {id}: time `{time}` is not an RFC 3339 time")]
    Time {
        /// The record's id.
        id: u64,
        /// The text found.
        time: String,
    },
    /// The stored outcome is not one this build knows (a newer mcpfleet wrote it).
    #[error("audit record {id}: {source}")]
    Outcome {
        /// The record's id.
        id: u64,
        /// The unknown name.
        source: UnknownOutcome,
    },
    /// The stored duration is not a non-negative, finite number of milliseconds.
    #[error("audit record {id}: duration {duration_ms} ms is not a non-negative finite number")]
    Duration {
        /// The record's id.
        id: u64,
        /// The number found.
        duration_ms: f64,
    },
}

impl<'a> AuditRow<'a> {
    /// How `record` is written down, with its id (0 if it has none yet).
    pub(crate) fn of(id: u64, record: &'a ToolCallRecord) -> Result<Self, BadAuditRecord> {
        let time = rfc3339(record.time).ok_or_else(|| BadAuditRecord::TimeOutOfRange {
            tool: record.tool.clone(),
            server: record.server.clone(),
        })?;
        Ok(AuditRow {
            id,
            time,
            token: record.token.as_deref().map(Cow::Borrowed),
            server: Cow::Borrowed(&record.server),
            revision: record.revision,
            tool: Cow::Borrowed(&record.tool),
            outcome: Cow::Borrowed(record.outcome.as_str()),
            duration_ms: record.duration_ms(),
        })
    }
}

impl TryFrom<AuditRow<'_>> for StoredAuditRecord {
    type Error = BadAuditRecord;

    fn try_from(row: AuditRow<'_>) -> Result<Self, BadAuditRecord> {
        let id = row.id;
        let time = chrono::DateTime::parse_from_rfc3339(&row.time)
            .map_err(|_| BadAuditRecord::Time {
                id,
                time: row.time.clone(),
            })?
            .into();
        let outcome = row
            .outcome
            .parse()
            .map_err(|source| BadAuditRecord::Outcome { id, source })?;
        // By whole nanoseconds, the gateway's resolution: a duration it measured reads
        // back exactly, and so writes the same number again.
        let nanos = (row.duration_ms * 1e6).round();
        if !(0.0..u64::MAX as f64).contains(&nanos) {
            return Err(BadAuditRecord::Duration {
                id,
                duration_ms: row.duration_ms,
            });
        }
        let duration = Duration::from_nanos(nanos as u64);
        Ok(StoredAuditRecord {
            id,
            record: ToolCallRecord {
                time,
                token: row.token.map(Cow::into_owned),
                server: row.server.into_owned(),
                revision: row.revision,
                tool: row.tool.into_owned(),
                outcome,
                duration,
            },
        })
    }
}

/// `t` as RFC 3339 UTC text with milliseconds, e.g. `2026-11-22T03:04:05.000Z` (as
/// `fleet_spec::template::rfc3339`, through the same library); `None` outside the years
/// 0000 to 9999, which RFC 3339 cannot say (and beyond chrono's range its own conversion
/// would panic).
pub(crate) fn rfc3339(t: SystemTime) -> Option<String> {
    let epoch = chrono::DateTime::<chrono::Utc>::UNIX_EPOCH;
    let time = match t.duration_since(UNIX_EPOCH) {
        Ok(after) => epoch.checked_add_signed(chrono::TimeDelta::from_std(after).ok()?),
        Err(before) => {
            epoch.checked_sub_signed(chrono::TimeDelta::from_std(before.duration()).ok()?)
        }
    }?;
    if !(0..=9999).contains(&chrono::Datelike::year(&time)) {
        return None;
    }
    Some(time.to_rfc3339_opts(chrono::SecondsFormat::Millis, true))
}

/// Now, as the stores write times.
pub(crate) fn now() -> String {
    // Today's clock is well inside chrono's range of years.
    rfc3339(SystemTime::now()).unwrap_or_default()
}

/// The format version of [`StateExport`] documents this build writes and reads.
pub const STATE_EXPORT_FORMAT: u32 = 1;

/// The whole store as one document (`mcpfleet export-state` / `import-state`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StateExport {
    /// The document's format version: [`STATE_EXPORT_FORMAT`] when written by this build.
    pub format: u32,
    /// Every fleet revision, ascending.
    pub fleet_revisions: Vec<FleetRevision>,
    /// Every server revision, by server name then number.
    pub server_revisions: Vec<ServerRevision>,
    /// Every deployment with its journal, ascending.
    pub deployments: Vec<DeploymentRecord>,
    /// Every event, ascending.
    pub events: Vec<StoredEvent>,
    /// Every audit record, ascending.
    pub audit: Vec<StoredAuditRecord>,
}

/// A lease on the leadership of the fleet's control plane, as its holder has it: what
/// [`StateStore::acquire_lease`](crate::StateStore::acquire_lease) and
/// [`renew_lease`](crate::StateStore::renew_lease) return. Times are the database's clock.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Lease {
    /// Who holds it: a name unique to one control plane (e.g. its host and process id).
    pub holder: String,
    /// Its fencing token: one above the token of every lease handed out before, on this
    /// database, so a newer leader's token is always the larger.
    pub token: u64,
    /// When this holder took it (renewals keep it).
    pub acquired_at: String,
    /// When it lapses unless renewed.
    pub expires_at: String,
}

/// The lease as status shows it: the last one handed out, live or not.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LeaseInfo {
    /// Who took it last.
    pub holder: String,
    /// Its fencing token, the highest handed out.
    pub token: u64,
    /// When its holder took it.
    pub acquired_at: String,
    /// When it lapses or lapsed; a released lease lapsed when it was released.
    pub expires_at: String,
    /// Whether it is still held: not expired and not released, by the database's clock.
    pub live: bool,
}

/// What the leading control plane last published for gateway replicas: its gateway's
/// route table, tokens (as hashes) and limits, as JSON the control plane defines (the store
/// keeps it opaque, as it keeps journal steps). Not part of a [`StateExport`]: the leader
/// publishes it again whenever it starts.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct GatewayView {
    /// One above the version published before, on this database: a replica reads the body
    /// again only when the version it knows is no longer the current one.
    pub version: u64,
    /// When it was published, by the publisher's clock.
    pub published_at: String,
    /// The view.
    pub body: serde_json::Value,
}
