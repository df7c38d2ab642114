//! The SQL behind each [`StateStore`](crate::StateStore) method, run on the connection in
//! the transaction the store began for the call (a write transaction holds the store's
//! write lock); the store commits it. The same
//! statements as SQLite's (`sqlite/queries.rs`) wherever the two dialects agree.

use super::{db_error, schema::IDENTITIES};
use crate::columns::{page_size, page_start, parse, parse_json, text};
use crate::lease;
use crate::model::AuditRow;
use crate::{
    DeploymentKind, DeploymentRecord, DeploymentStatus, FleetRevision, GatewayView, JournalEntry,
    Lease, LeaseInfo, NewDeployment, NewEvent, NewFleetRevision, RevisionState,
    STATE_EXPORT_FORMAT, ServerRevision, StateExport, StepOutcome, StepState, StoreError,
    StoredAuditRecord, StoredEvent,
};
use fleet_routes::audit::ToolCallRecord;
use std::borrow::Cow;
use std::collections::{BTreeMap, BTreeSet};
use tokio_postgres::types::ToSql;
use tokio_postgres::{Client, Row};

type Params<'a> = &'a [&'a (dyn ToSql + Sync)];

pub(super) async fn record_and_begin_deployment(
    tx: &Client,
    revision: NewFleetRevision,
    kind: DeploymentKind,
    reason: Option<String>,
    now: &str,
) -> Result<(FleetRevision, DeploymentRecord), StoreError> {
    // Read under the write lock: nothing can finish a deployment in between.
    let from_revision = serving_fleet_revision(tx).await?;
    let revision = insert_fleet_revision(tx, revision, now).await?;
    let deployment = insert_deployment(
        tx,
        NewDeployment {
            fleet_revision: revision.number,
            from_revision,
            kind,
            reason,
        },
        now,
    )
    .await?;
    Ok((revision, deployment))
}

pub(super) async fn serving_fleet_revision(tx: &Client) -> Result<Option<u64>, StoreError> {
    let (succeeded, rolled_back) = (
        text(DeploymentStatus::Succeeded)?,
        text(DeploymentStatus::RolledBack)?,
    );
    let newest = tx
        .query_opt(
            "SELECT state, fleet_revision, from_revision FROM deployments
             WHERE state IN ($1, $2) ORDER BY id DESC LIMIT 1",
            &[&succeeded, &rolled_back],
        )
        .await
        .db()?;
    let Some(row) = newest else {
        return Ok(None);
    };
    let state: String = get(&row, 0)?;
    if state == succeeded {
        Ok(Some(uint(&row, 1)?))
    } else {
        opt_uint(&row, 2)
    }
}

/// Inserts a fleet revision and its new server revisions.
pub(super) async fn insert_fleet_revision(
    tx: &Client,
    new: NewFleetRevision,
    now: &str,
) -> Result<FleetRevision, StoreError> {
    let mut names = BTreeSet::new();
    if let Some(twice) = new.servers.iter().find(|s| !names.insert(s.name.as_str())) {
        return Err(StoreError::Invalid {
            what: format!(
                "server `{}` appears twice in the fleet revision",
                twice.name
            ),
        });
    }
    let row = tx
        .query_one(
            "SELECT coalesce(max(number), 0) + 1 FROM fleet_revisions",
            &[],
        )
        .await
        .db()?;
    let number = uint(&row, 0)?;
    let number_sql = int(number)?;
    tx.execute(
        "INSERT INTO fleet_revisions
             (number, fleet, created_at, author, reason, source, source_path, env)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
        &[
            &number_sql,
            &new.fleet,
            &now,
            &new.author,
            &new.reason,
            &new.source,
            &new.source_path,
            &new.env,
        ],
    )
    .await
    .db()?;
    let pending = text(RevisionState::Pending)?;
    let mut servers = BTreeMap::new();
    for server in &new.servers {
        // The same spec is the same revision, however long ago it was recorded: rolling
        // back to it brings back its number.
        let same = tx
            .query_opt(
                "SELECT number FROM server_revisions WHERE server = $1 AND hash = $2
                 ORDER BY number DESC LIMIT 1",
                &[&server.name, &server.hash],
            )
            .await
            .db()?;
        let server_number = match same {
            Some(row) => uint(&row, 0)?,
            None => {
                let latest = tx
                    .query_one(
                        "SELECT max(number) FROM server_revisions WHERE server = $1",
                        &[&server.name],
                    )
                    .await
                    .db()?;
                let next = opt_uint(&latest, 0)?.map_or(1, |n| n + 1);
                tx.execute(
                    "INSERT INTO server_revisions
                         (server, number, hash, spec, created_at, fleet_revision, state, reason)
                     VALUES ($1, $2, $3, $4, $5, $6, $7, NULL)",
                    &[
                        &server.name,
                        &int(next)?,
                        &server.hash,
                        &server.spec.to_string(),
                        &now,
                        &number_sql,
                        &pending,
                    ],
                )
                .await
                .db()?;
                next
            }
        };
        tx.execute(
            "INSERT INTO fleet_revision_servers (fleet_revision, server, server_revision)
             VALUES ($1, $2, $3)",
            &[&number_sql, &server.name, &int(server_number)?],
        )
        .await
        .db()?;
        servers.insert(server.name.clone(), server_number);
    }
    Ok(FleetRevision {
        number,
        fleet: new.fleet,
        created_at: now.to_owned(),
        author: new.author,
        reason: new.reason,
        source: new.source,
        source_path: new.source_path,
        env: new.env,
        servers,
    })
}

pub(super) async fn fleet_revision(
    tx: &Client,
    number: u64,
) -> Result<Option<FleetRevision>, StoreError> {
    Ok(
        select_fleet_revisions(tx, "WHERE number = $1", &[&int(number)?])
            .await?
            .pop(),
    )
}

pub(super) async fn latest_fleet_revision(
    tx: &Client,
) -> Result<Option<FleetRevision>, StoreError> {
    let filter = "WHERE number = (SELECT max(number) FROM fleet_revisions)";
    Ok(select_fleet_revisions(tx, filter, &[]).await?.pop())
}

pub(super) async fn fleet_revisions(tx: &Client) -> Result<Vec<FleetRevision>, StoreError> {
    select_fleet_revisions(tx, "", &[]).await
}

pub(super) async fn server_revision(
    tx: &Client,
    server: &str,
    number: u64,
) -> Result<Option<ServerRevision>, StoreError> {
    let filter = "WHERE server = $1 AND number = $2";
    Ok(
        select_server_revisions(tx, filter, &[&server, &int(number)?])
            .await?
            .pop(),
    )
}

pub(super) async fn server_revisions(
    tx: &Client,
    server: &str,
) -> Result<Vec<ServerRevision>, StoreError> {
    select_server_revisions(tx, "WHERE server = $1", &[&server]).await
}

pub(super) async fn set_server_revision_state(
    tx: &Client,
    server: &str,
    number: u64,
    state: RevisionState,
    reason: Option<String>,
) -> Result<(), StoreError> {
    let changed = tx
        .execute(
            "UPDATE server_revisions SET state = $3, reason = $4 WHERE server = $1 AND number = $2",
            &[&server, &int(number)?, &text(state)?, &reason],
        )
        .await
        .db()?;
    if changed == 0 {
        return Err(StoreError::NotFound {
            what: format!("revision {number} of server `{server}`"),
        });
    }
    Ok(())
}

/// Inserts a deployment, in progress.
pub(super) async fn insert_deployment(
    tx: &Client,
    new: NewDeployment,
    now: &str,
) -> Result<DeploymentRecord, StoreError> {
    for number in std::iter::once(new.fleet_revision).chain(new.from_revision) {
        let known = tx
            .query_opt(
                "SELECT 1 FROM fleet_revisions WHERE number = $1",
                &[&int(number)?],
            )
            .await
            .db()?;
        if known.is_none() {
            return Err(StoreError::NotFound {
                what: format!("fleet revision {number}"),
            });
        }
    }
    let state = DeploymentStatus::InProgress;
    let from_revision = new.from_revision.map(int).transpose()?;
    let row = tx
        .query_one(
            "INSERT INTO deployments (fleet_revision, from_revision, kind, state, started_at, reason)
             VALUES ($1, $2, $3, $4, $5, $6) RETURNING id",
            &[
                &int(new.fleet_revision)?,
                &from_revision,
                &text(new.kind)?,
                &text(state)?,
                &now,
                &new.reason,
            ],
        )
        .await
        .db()?;
    Ok(DeploymentRecord {
        id: uint(&row, 0)?,
        fleet_revision: new.fleet_revision,
        from_revision: new.from_revision,
        kind: new.kind,
        state,
        started_at: now.to_owned(),
        finished_at: None,
        reason: new.reason,
        steps: Vec::new(),
    })
}

pub(super) async fn append_step(
    tx: &Client,
    deployment: u64,
    step: &serde_json::Value,
    now: &str,
) -> Result<u64, StoreError> {
    let state = deployment_state(tx, deployment).await?;
    if state.is_finished() {
        return Err(StoreError::Conflict {
            what: format!(
                "deployment {deployment} is already finished ({}); it takes no more steps",
                text(state)?
            ),
        });
    }
    let id = int(deployment)?;
    let row = tx
        .query_one(
            "SELECT coalesce(max(seq), 0) + 1 FROM journal WHERE deployment = $1",
            &[&id],
        )
        .await
        .db()?;
    let seq = uint(&row, 0)?;
    tx.execute(
        "INSERT INTO journal (deployment, seq, step, state, written_at) VALUES ($1, $2, $3, $4, $5)",
        &[
            &id,
            &int(seq)?,
            &step.to_string(),
            &text(StepState::Pending)?,
            &now,
        ],
    )
    .await
    .db()?;
    Ok(seq)
}

pub(super) async fn confirm_step(
    tx: &Client,
    deployment: u64,
    seq: u64,
    outcome: StepOutcome,
    detail: Option<String>,
    now: &str,
) -> Result<(), StoreError> {
    let (id, seq_sql) = (int(deployment)?, int(seq)?);
    let row = tx
        .query_opt(
            "SELECT state FROM journal WHERE deployment = $1 AND seq = $2",
            &[&id, &seq_sql],
        )
        .await
        .db()?;
    let what = || format!("step {seq} of deployment {deployment}");
    let state: StepState = match row {
        None => return Err(StoreError::NotFound { what: what() }),
        Some(row) => parse(&get::<String>(&row, 0)?, what)?,
    };
    if state != StepState::Pending {
        return Err(StoreError::Conflict {
            what: format!("{} is already confirmed ({})", what(), text(state)?),
        });
    }
    tx.execute(
        "UPDATE journal SET state = $3, confirmed_at = $4, detail = $5
         WHERE deployment = $1 AND seq = $2",
        &[
            &id,
            &seq_sql,
            &text(StepState::from(outcome))?,
            &now,
            &detail,
        ],
    )
    .await
    .db()?;
    Ok(())
}

pub(super) async fn finish_deployment(
    tx: &Client,
    id: u64,
    state: DeploymentStatus,
    reason: Option<String>,
    now: &str,
) -> Result<(), StoreError> {
    let current = deployment_state(tx, id).await?;
    if current.is_finished() {
        return Err(StoreError::Conflict {
            what: format!("deployment {id} is already finished ({})", text(current)?),
        });
    }
    let finished_at = state.is_finished().then_some(now);
    tx.execute(
        "UPDATE deployments SET state = $2, finished_at = $3, reason = $4 WHERE id = $1",
        &[&int(id)?, &text(state)?, &finished_at, &reason],
    )
    .await
    .db()?;
    Ok(())
}

pub(super) async fn deployment(
    tx: &Client,
    id: u64,
) -> Result<Option<DeploymentRecord>, StoreError> {
    Ok(select_deployments(tx, "WHERE id = $1", &[&int(id)?])
        .await?
        .pop())
}

pub(super) async fn deployments(tx: &Client) -> Result<Vec<DeploymentRecord>, StoreError> {
    select_deployments(tx, "", &[]).await
}

pub(super) async fn unfinished_deployments(
    tx: &Client,
) -> Result<Vec<DeploymentRecord>, StoreError> {
    let (in_progress, paused) = (
        text(DeploymentStatus::InProgress)?,
        text(DeploymentStatus::Paused)?,
    );
    select_deployments(tx, "WHERE state IN ($1, $2)", &[&in_progress, &paused]).await
}

pub(super) async fn append_events(
    tx: &Client,
    events: &[NewEvent],
) -> Result<Vec<u64>, StoreError> {
    let insert = tx.prepare(INSERT_EVENT).await.db()?;
    let mut ids = Vec::with_capacity(events.len());
    for event in events {
        ids.push(insert_event(tx, &insert, None, event).await?);
    }
    Ok(ids)
}

pub(super) async fn events(
    tx: &Client,
    after: u64,
    limit: usize,
) -> Result<Vec<StoredEvent>, StoreError> {
    select_events(
        tx,
        &format!("SELECT {EVENT_COLUMNS} FROM events WHERE id > $1 ORDER BY id LIMIT $2"),
        &[&page_start(after), &page_size(limit)],
    )
    .await
}

pub(super) async fn latest_events(
    tx: &Client,
    limit: usize,
) -> Result<Vec<StoredEvent>, StoreError> {
    select_events(
        tx,
        &format!(
            "SELECT * FROM (SELECT {EVENT_COLUMNS} FROM events ORDER BY id DESC LIMIT $1) AS tail
             ORDER BY id"
        ),
        &[&page_size(limit)],
    )
    .await
}

const EVENT_COLUMNS: &str = "id, time, kind, server, revision, deployment, instance, message";

/// The events `sql` selects ([`EVENT_COLUMNS`], in that order).
async fn select_events(
    tx: &Client,
    sql: &str,
    params: Params<'_>,
) -> Result<Vec<StoredEvent>, StoreError> {
    let rows = tx.query(sql, params).await.db()?;
    rows.iter()
        .map(|r| {
            Ok(StoredEvent {
                id: uint(r, 0)?,
                event: NewEvent {
                    time: get(r, 1)?,
                    kind: get(r, 2)?,
                    server: get(r, 3)?,
                    revision: opt_uint(r, 4)?,
                    deployment: opt_uint(r, 5)?,
                    instance: get(r, 6)?,
                    message: get(r, 7)?,
                },
            })
        })
        .collect()
}

pub(super) async fn append_audit(
    tx: &Client,
    records: &[ToolCallRecord],
) -> Result<(), StoreError> {
    // Prepared once: the gateway's audit writes thousands of records per transaction.
    let insert = tx.prepare(INSERT_AUDIT).await.db()?;
    for record in records {
        insert_audit(tx, &insert, None, record).await?;
    }
    Ok(())
}

pub(super) async fn audit(
    tx: &Client,
    after: u64,
    limit: usize,
) -> Result<Vec<StoredAuditRecord>, StoreError> {
    select_audit(
        tx,
        &format!("SELECT {AUDIT_COLUMNS} FROM audit WHERE id > $1 ORDER BY id LIMIT $2"),
        &[&page_start(after), &page_size(limit)],
    )
    .await
}

pub(super) async fn latest_audit(
    tx: &Client,
    limit: usize,
) -> Result<Vec<StoredAuditRecord>, StoreError> {
    select_audit(
        tx,
        &format!(
            "SELECT * FROM (SELECT {AUDIT_COLUMNS} FROM audit ORDER BY id DESC LIMIT $1) AS tail
             ORDER BY id"
        ),
        &[&page_size(limit)],
    )
    .await
}

const AUDIT_COLUMNS: &str = "id, time, token, server, revision, tool, outcome, duration_ms";

/// The audit records `sql` selects ([`AUDIT_COLUMNS`], in that order).
async fn select_audit(
    tx: &Client,
    sql: &str,
    params: Params<'_>,
) -> Result<Vec<StoredAuditRecord>, StoreError> {
    let rows = tx.query(sql, params).await.db()?;
    rows.iter()
        .map(|r| {
            let row = AuditRow {
                id: uint(r, 0)?,
                time: get(r, 1)?,
                token: get::<Option<String>>(r, 2)?.map(Cow::Owned),
                server: Cow::Owned(get(r, 3)?),
                revision: uint(r, 4)?,
                tool: Cow::Owned(get(r, 5)?),
                outcome: Cow::Owned(get(r, 6)?),
                duration_ms: get(r, 7)?,
            };
            StoredAuditRecord::try_from(row).map_err(|e| StoreError::Corrupt {
                what: e.to_string(),
            })
        })
        .collect()
}

pub(super) async fn export(tx: &Client) -> Result<StateExport, StoreError> {
    Ok(StateExport {
        format: STATE_EXPORT_FORMAT,
        fleet_revisions: select_fleet_revisions(tx, "", &[]).await?,
        server_revisions: select_server_revisions(tx, "", &[]).await?,
        deployments: select_deployments(tx, "", &[]).await?,
        events: events(tx, 0, usize::MAX).await?,
        audit: audit(tx, 0, usize::MAX).await?,
    })
}

pub(super) async fn import(tx: &Client, state: &StateExport) -> Result<(), StoreError> {
    if state.format != STATE_EXPORT_FORMAT {
        return Err(StoreError::ExportFormat {
            found: state.format,
            supported: STATE_EXPORT_FORMAT,
        });
    }
    let tables = [
        "fleet_revisions",
        "server_revisions",
        "deployments",
        "events",
        "audit",
    ];
    for table in tables {
        let any = tx
            .query_opt(&format!("SELECT 1 FROM {table} LIMIT 1"), &[])
            .await
            .db()?;
        if any.is_some() {
            return Err(StoreError::NotEmpty);
        }
    }
    import_rows(tx, state).await.map_err(|e| match e {
        StoreError::Invalid { what } => StoreError::Invalid {
            what: format!("the state export contradicts itself: {what}"),
        },
        other => other,
    })?;
    // Rows were inserted with their ids: numbering carries on after the highest.
    for (table, column) in IDENTITIES {
        tx.execute(
            &format!(
                "SELECT setval(pg_get_serial_sequence('{table}', '{column}'),
                               coalesce(max({column}), 0) + 1, false) FROM {table}"
            ),
            &[],
        )
        .await
        .db()?;
    }
    Ok(())
}

async fn import_rows(tx: &Client, state: &StateExport) -> Result<(), StoreError> {
    for rev in &state.fleet_revisions {
        tx.execute(
            "INSERT INTO fleet_revisions
                 (number, fleet, created_at, author, reason, source, source_path, env)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
            &[
                &int(rev.number)?,
                &rev.fleet,
                &rev.created_at,
                &rev.author,
                &rev.reason,
                &rev.source,
                &rev.source_path,
                &rev.env,
            ],
        )
        .await
        .input()?;
    }
    for rev in &state.server_revisions {
        tx.execute(
            "INSERT INTO server_revisions
                 (server, number, hash, spec, created_at, fleet_revision, state, reason)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
            &[
                &rev.server,
                &int(rev.number)?,
                &rev.hash,
                &rev.spec.to_string(),
                &rev.created_at,
                &int(rev.fleet_revision)?,
                &text(rev.state)?,
                &rev.reason,
            ],
        )
        .await
        .input()?;
    }
    for rev in &state.fleet_revisions {
        for (server, number) in &rev.servers {
            tx.execute(
                "INSERT INTO fleet_revision_servers (fleet_revision, server, server_revision)
                 VALUES ($1, $2, $3)",
                &[&int(rev.number)?, server, &int(*number)?],
            )
            .await
            .input()?;
        }
    }
    for d in &state.deployments {
        let id = int(d.id)?;
        tx.execute(
            "INSERT INTO deployments
                 (id, fleet_revision, from_revision, kind, state, started_at, finished_at, reason)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
            &[
                &id,
                &int(d.fleet_revision)?,
                &d.from_revision.map(int).transpose()?,
                &text(d.kind)?,
                &text(d.state)?,
                &d.started_at,
                &d.finished_at,
                &d.reason,
            ],
        )
        .await
        .input()?;
        for s in &d.steps {
            tx.execute(
                "INSERT INTO journal
                     (deployment, seq, step, state, written_at, confirmed_at, detail)
                 VALUES ($1, $2, $3, $4, $5, $6, $7)",
                &[
                    &id,
                    &int(s.seq)?,
                    &s.step.to_string(),
                    &text(s.state)?,
                    &s.written_at,
                    &s.confirmed_at,
                    &s.detail,
                ],
            )
            .await
            .input()?;
        }
    }
    let insert = tx.prepare(INSERT_EVENT).await.db()?;
    for e in &state.events {
        insert_event(tx, &insert, Some(e.id), &e.event).await?;
    }
    let insert = tx.prepare(INSERT_AUDIT).await.db()?;
    for a in &state.audit {
        insert_audit(tx, &insert, Some(a.id), &a.record).await?;
    }
    Ok(())
}

/// One statement for both: with `$1` an id (import) the row gets it, with `$1` NULL the
/// next number of the identity's sequence.
const INSERT_EVENT: &str =
    "INSERT INTO events (id, time, kind, server, revision, deployment, instance, message)
     VALUES (coalesce($1, nextval(pg_get_serial_sequence('events', 'id'))),
             $2, $3, $4, $5, $6, $7, $8)
     RETURNING id";

/// Inserts an event with the next id, or with `id` (import), by `insert`, a prepared
/// [`INSERT_EVENT`]; returns its id.
async fn insert_event(
    tx: &Client,
    insert: &tokio_postgres::Statement,
    id: Option<u64>,
    e: &NewEvent,
) -> Result<u64, StoreError> {
    let row = tx
        .query_one(
            insert,
            &[
                &id.map(int).transpose()?,
                &e.time,
                &e.kind,
                &e.server,
                &e.revision.map(int).transpose()?,
                &e.deployment.map(int).transpose()?,
                &e.instance,
                &e.message,
            ],
        )
        .await
        .input()?;
    uint(&row, 0)
}

/// As [`INSERT_EVENT`], for the audit.
const INSERT_AUDIT: &str =
    "INSERT INTO audit (id, time, token, server, revision, tool, outcome, duration_ms)
     VALUES (coalesce($1, nextval(pg_get_serial_sequence('audit', 'id'))),
             $2, $3, $4, $5, $6, $7, $8)";

/// Inserts an audit record with the next id, or with `id` (import), by `insert`, a
/// prepared [`INSERT_AUDIT`].
async fn insert_audit(
    tx: &Client,
    insert: &tokio_postgres::Statement,
    id: Option<u64>,
    record: &ToolCallRecord,
) -> Result<(), StoreError> {
    let a = AuditRow::of(id.unwrap_or_default(), record).map_err(|e| StoreError::Invalid {
        what: e.to_string(),
    })?;
    tx.execute(
        insert,
        &[
            &id.map(int).transpose()?,
            &a.time,
            &a.token,
            &a.server,
            &int(a.revision)?,
            &a.tool,
            &a.outcome,
            &a.duration_ms,
        ],
    )
    .await
    .input()?;
    Ok(())
}

async fn select_fleet_revisions(
    tx: &Client,
    filter: &str,
    params: Params<'_>,
) -> Result<Vec<FleetRevision>, StoreError> {
    let rows = tx
        .query(
            &format!(
                "SELECT number, fleet, created_at, author, reason, source, source_path, env
                 FROM fleet_revisions {filter} ORDER BY number"
            ),
            params,
        )
        .await
        .db()?;
    let servers = tx
        .prepare(
            "SELECT server, server_revision FROM fleet_revision_servers WHERE fleet_revision = $1",
        )
        .await
        .db()?;
    let mut revisions = Vec::with_capacity(rows.len());
    for r in &rows {
        let number = uint(r, 0)?;
        let mut rev = FleetRevision {
            number,
            fleet: get(r, 1)?,
            created_at: get(r, 2)?,
            author: get(r, 3)?,
            reason: get(r, 4)?,
            source: get(r, 5)?,
            source_path: get(r, 6)?,
            env: get(r, 7)?,
            servers: BTreeMap::new(),
        };
        for s in tx.query(&servers, &[&int(number)?]).await.db()? {
            rev.servers.insert(get(&s, 0)?, uint(&s, 1)?);
        }
        revisions.push(rev);
    }
    Ok(revisions)
}

async fn select_server_revisions(
    tx: &Client,
    filter: &str,
    params: Params<'_>,
) -> Result<Vec<ServerRevision>, StoreError> {
    // Server names in byte order, as SQLite sorts them, whatever the database's collation:
    // exports of the two backends list them alike.
    let rows = tx
        .query(
            &format!(
                "SELECT server, number, hash, spec, created_at, fleet_revision, state, reason
                 FROM server_revisions {filter} ORDER BY server COLLATE \"C\", number"
            ),
            params,
        )
        .await
        .db()?;
    rows.iter()
        .map(|r| {
            let server: String = get(r, 0)?;
            let number = uint(r, 1)?;
            let what = || format!("revision {number} of server `{server}`");
            Ok(ServerRevision {
                spec: parse_json(&get::<String>(r, 3)?, || format!("{}: spec", what()))?,
                state: parse(&get::<String>(r, 6)?, || format!("{}: state", what()))?,
                hash: get(r, 2)?,
                created_at: get(r, 4)?,
                fleet_revision: uint(r, 5)?,
                reason: get(r, 7)?,
                number,
                server,
            })
        })
        .collect()
}

async fn select_deployments(
    tx: &Client,
    filter: &str,
    params: Params<'_>,
) -> Result<Vec<DeploymentRecord>, StoreError> {
    let rows = tx
        .query(
            &format!(
                "SELECT id, fleet_revision, from_revision, kind, state, started_at, finished_at,
                        reason
                 FROM deployments {filter} ORDER BY id"
            ),
            params,
        )
        .await
        .db()?;
    let steps = tx
        .prepare(
            "SELECT seq, step, state, written_at, confirmed_at, detail FROM journal
             WHERE deployment = $1 ORDER BY seq",
        )
        .await
        .db()?;
    let mut deployments = Vec::with_capacity(rows.len());
    for r in &rows {
        let id = uint(r, 0)?;
        let what = |field: &str| format!("deployment {id}: {field}");
        let journal = tx.query(&steps, &[&int(id)?]).await.db()?;
        deployments.push(DeploymentRecord {
            id,
            fleet_revision: uint(r, 1)?,
            from_revision: opt_uint(r, 2)?,
            kind: parse(&get::<String>(r, 3)?, || what("kind"))?,
            state: parse(&get::<String>(r, 4)?, || what("state"))?,
            started_at: get(r, 5)?,
            finished_at: get(r, 6)?,
            reason: get(r, 7)?,
            steps: journal
                .iter()
                .map(|s| journal_entry(s, id))
                .collect::<Result<_, _>>()?,
        });
    }
    Ok(deployments)
}

fn journal_entry(r: &Row, deployment: u64) -> Result<JournalEntry, StoreError> {
    let seq = uint(r, 0)?;
    let what = |field: &str| format!("step {seq} of deployment {deployment}: {field}");
    Ok(JournalEntry {
        step: parse_json(&get::<String>(r, 1)?, || what("step"))?,
        state: parse(&get::<String>(r, 2)?, || what("state"))?,
        seq,
        written_at: get(r, 3)?,
        confirmed_at: get(r, 4)?,
        detail: get(r, 5)?,
    })
}

async fn deployment_state(tx: &Client, id: u64) -> Result<DeploymentStatus, StoreError> {
    let row = tx
        .query_opt("SELECT state FROM deployments WHERE id = $1", &[&int(id)?])
        .await
        .db()?;
    match row {
        None => Err(StoreError::NotFound {
            what: format!("deployment {id}"),
        }),
        Some(row) => parse(&get::<String>(&row, 0)?, || {
            format!("deployment {id}: state")
        }),
    }
}

/// A fenced handle's write goes ahead only while `token` is the current lease's: checked
/// after the write lock, which every acquire takes too.
pub(super) async fn check_fence(tx: &Client, token: u64) -> Result<(), StoreError> {
    lease::check_fence(select_lease(tx).await?, token)
}

pub(super) async fn acquire_lease(
    tx: &Client,
    holder: &str,
    ttl_ms: u32,
) -> Result<Option<Lease>, StoreError> {
    let clock = clock(tx, ttl_ms).await?;
    let Some(lease) = lease::acquire(select_lease(tx).await?, holder, clock) else {
        return Ok(None);
    };
    write_lease(tx, &lease).await?;
    Ok(Some(lease))
}

pub(super) async fn renew_lease(
    tx: &Client,
    lease: &Lease,
    ttl_ms: u32,
) -> Result<Lease, StoreError> {
    let clock = clock(tx, ttl_ms).await?;
    let renewed = lease::renew(select_lease(tx).await?, lease, clock)?;
    write_lease(tx, &renewed).await?;
    Ok(renewed)
}

pub(super) async fn release_lease(tx: &Client, lease: &Lease) -> Result<(), StoreError> {
    let now = clock(tx, 0).await?.now;
    if let Some(released) = lease::release(select_lease(tx).await?, lease, now) {
        write_lease(tx, &released).await?;
    }
    Ok(())
}

pub(super) async fn lease(tx: &Client) -> Result<Option<LeaseInfo>, StoreError> {
    let now = clock(tx, 0).await?.now;
    Ok(select_lease(tx).await?.map(|held| lease::info(held, &now)))
}

/// The server's clock, now and `ttl_ms` later, in the stores' time format (UTC, so that
/// they compare as text). `clock_timestamp()`, not `now()`: the transaction may have begun
/// long before, waiting for the write lock.
async fn clock(tx: &Client, ttl_ms: u32) -> Result<lease::Clock, StoreError> {
    let row = tx
        .query_one(
            r#"SELECT to_char(t, 'YYYY-MM-DD"T"HH24:MI:SS.MS"Z"'),
                      to_char(t + make_interval(secs => $1), 'YYYY-MM-DD"T"HH24:MI:SS.MS"Z"')
               FROM (SELECT clock_timestamp() AT TIME ZONE 'UTC' AS t) AS clock"#,
            &[&(f64::from(ttl_ms) / 1000.0)],
        )
        .await
        .db()?;
    Ok(lease::Clock {
        now: get(&row, 0)?,
        expires: get(&row, 1)?,
    })
}

async fn select_lease(tx: &Client) -> Result<Option<Lease>, StoreError> {
    let row = tx
        .query_opt(
            "SELECT holder, token, acquired_at, expires_at FROM lease WHERE id = 1",
            &[],
        )
        .await
        .db()?;
    row.map(|r| {
        Ok(Lease {
            holder: get(&r, 0)?,
            token: uint(&r, 1)?,
            acquired_at: get(&r, 2)?,
            expires_at: get(&r, 3)?,
        })
    })
    .transpose()
}

async fn write_lease(tx: &Client, lease: &Lease) -> Result<(), StoreError> {
    tx.execute(
        "INSERT INTO lease (id, holder, token, acquired_at, expires_at) VALUES (1, $1, $2, $3, $4)
         ON CONFLICT (id) DO UPDATE SET holder = excluded.holder, token = excluded.token,
             acquired_at = excluded.acquired_at, expires_at = excluded.expires_at",
        &[
            &lease.holder,
            &int(lease.token)?,
            &lease.acquired_at,
            &lease.expires_at,
        ],
    )
    .await
    .db()?;
    Ok(())
}

pub(super) async fn publish_gateway_view(
    tx: &Client,
    body: &serde_json::Value,
    now: &str,
) -> Result<u64, StoreError> {
    // Under the write lock: two publishers never number alike.
    let row = tx
        .query_one(
            "INSERT INTO gateway_view (id, version, published_at, body) VALUES (1, 1, $1, $2)
             ON CONFLICT (id) DO UPDATE SET version = gateway_view.version + 1,
                 published_at = excluded.published_at, body = excluded.body
             RETURNING version",
            &[&now, &body.to_string()],
        )
        .await
        .db()?;
    uint(&row, 0)
}

pub(super) async fn gateway_view(
    tx: &Client,
    known: u64,
) -> Result<Option<GatewayView>, StoreError> {
    // The body is read only when the version changed: a replica's poll of an unchanged
    // view reads one number.
    let row = tx
        .query_opt(
            "SELECT version, published_at, CASE WHEN version <> $1 THEN body END
             FROM gateway_view WHERE id = 1",
            &[&page_start(known)],
        )
        .await
        .db()?;
    let Some(row) = row else {
        return Ok(None);
    };
    let version = uint(&row, 0)?;
    let Some(body) = get::<Option<String>>(&row, 2)? else {
        return Ok(None);
    };
    Ok(Some(GatewayView {
        version,
        published_at: get(&row, 1)?,
        body: parse_json(&body, || format!("gateway view {version}"))?,
    }))
}

/// A number as PostgreSQL's `BIGINT`: none above `i64::MAX` can be stored.
fn int(n: u64) -> Result<i64, StoreError> {
    i64::try_from(n).map_err(|_| StoreError::Invalid {
        what: format!("a number is too large to store: {n}"),
    })
}

/// Column `idx` of `row`, a number no store writes below zero.
fn uint(row: &Row, idx: usize) -> Result<u64, StoreError> {
    let n: i64 = get(row, idx)?;
    u64::try_from(n).map_err(|_| StoreError::Corrupt {
        what: format!(
            "column `{}` holds {n}, below zero",
            row.columns()[idx].name()
        ),
    })
}

/// As [`uint`], for a column that may be NULL.
fn opt_uint(row: &Row, idx: usize) -> Result<Option<u64>, StoreError> {
    let n: Option<i64> = get(row, idx)?;
    n.map(|n| {
        u64::try_from(n).map_err(|_| StoreError::Corrupt {
            what: format!(
                "column `{}` holds {n}, below zero",
                row.columns()[idx].name()
            ),
        })
    })
    .transpose()
}

/// Column `idx` of `row`: a value of another type, or a NULL where the model has none, is
/// corruption (a hand-edited database).
fn get<'a, T: tokio_postgres::types::FromSql<'a>>(
    row: &'a Row,
    idx: usize,
) -> Result<T, StoreError> {
    row.try_get(idx).map_err(|e| StoreError::Corrupt {
        what: format!("column `{}`: {}", row.columns()[idx].name(), db_error(&e)),
    })
}

/// PostgreSQL errors as store errors.
trait Db<T> {
    /// The database's failure.
    fn db(self) -> Result<T, StoreError>;

    /// As [`db`](Db::db), but a broken constraint (a duplicate id, a reference to a missing
    /// row) is the input's fault.
    fn input(self) -> Result<T, StoreError>;
}

impl<T> Db<T> for Result<T, tokio_postgres::Error> {
    fn db(self) -> Result<T, StoreError> {
        self.map_err(|e| StoreError::Database(db_error(&e)))
    }

    fn input(self) -> Result<T, StoreError> {
        self.map_err(|e| {
            // Class 23: integrity constraint violation.
            if e.code().is_some_and(|code| code.code().starts_with("23")) {
                StoreError::Invalid { what: db_error(&e) }
            } else {
                StoreError::Database(db_error(&e))
            }
        })
    }
}
