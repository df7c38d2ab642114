//! The SQL behind each [`StateStore`](crate::StateStore) method, run synchronously on the
//! store's connection. Each write is one transaction.

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
use rusqlite::{Connection, OptionalExtension, Params, Row, TransactionBehavior, params};
use std::borrow::Cow;
use std::collections::{BTreeMap, BTreeSet};

pub(super) fn record_fleet_revision(
    conn: &mut Connection,
    fence: Option<u64>,
    new: NewFleetRevision,
    now: &str,
) -> Result<FleetRevision, StoreError> {
    let tx = write(conn, fence)?;
    let revision = insert_fleet_revision(&tx, new, now)?;
    tx.commit().db()?;
    Ok(revision)
}

pub(super) fn record_and_begin_deployment(
    conn: &mut Connection,
    fence: Option<u64>,
    revision: NewFleetRevision,
    kind: DeploymentKind,
    reason: Option<String>,
    now: &str,
) -> Result<(FleetRevision, DeploymentRecord), StoreError> {
    let tx = write(conn, fence)?;
    // Read in the write transaction: nothing can finish a deployment in between.
    let from_revision = select_serving_fleet_revision(&tx)?;
    let revision = insert_fleet_revision(&tx, revision, now)?;
    let deployment = insert_deployment(
        &tx,
        NewDeployment {
            fleet_revision: revision.number,
            from_revision,
            kind,
            reason,
        },
        now,
    )?;
    tx.commit().db()?;
    Ok((revision, deployment))
}

pub(super) fn serving_fleet_revision(conn: &mut Connection) -> Result<Option<u64>, StoreError> {
    let tx = conn.transaction().db()?;
    select_serving_fleet_revision(&tx)
}

fn select_serving_fleet_revision(conn: &Connection) -> Result<Option<u64>, StoreError> {
    let (succeeded, rolled_back) = (
        text(DeploymentStatus::Succeeded)?,
        text(DeploymentStatus::RolledBack)?,
    );
    let newest: Option<(String, u64, Option<u64>)> = conn
        .query_row(
            "SELECT state, fleet_revision, from_revision FROM deployments
             WHERE state IN (?1, ?2) ORDER BY id DESC LIMIT 1",
            [&succeeded, &rolled_back],
            |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
        )
        .optional()
        .db()?;
    Ok(match newest {
        None => None,
        Some((state, fleet_revision, _)) if state == succeeded => Some(fleet_revision),
        Some((_, _, from_revision)) => from_revision,
    })
}

/// Inserts a fleet revision and its new server revisions into `tx`.
fn insert_fleet_revision(
    tx: &Connection,
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
    let number: u64 = tx
        .query_row(
            "SELECT coalesce(max(number), 0) + 1 FROM fleet_revisions",
            [],
            |r| r.get(0),
        )
        .db()?;
    tx.execute(
        "INSERT INTO fleet_revisions
             (number, fleet, created_at, author, reason, source, source_path, env)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
        params![
            number,
            new.fleet,
            now,
            new.author,
            new.reason,
            new.source,
            new.source_path,
            new.env
        ],
    )
    .db()?;
    let mut servers = BTreeMap::new();
    for server in &new.servers {
        // The same spec is the same revision, however long ago it was recorded: rolling
        // back to it brings back its number.
        let same: Option<u64> = tx
            .query_row(
                "SELECT number FROM server_revisions WHERE server = ?1 AND hash = ?2
                 ORDER BY number DESC LIMIT 1",
                [&server.name, &server.hash],
                |r| r.get(0),
            )
            .optional()
            .db()?;
        let latest: Option<u64> = tx
            .query_row(
                "SELECT max(number) FROM server_revisions WHERE server = ?1",
                [&server.name],
                |r| r.get(0),
            )
            .db()?;
        let server_number = match same {
            Some(number) => number,
            None => {
                let next = latest.map_or(1, |n| n + 1);
                tx.execute(
                    "INSERT INTO server_revisions
                         (server, number, hash, spec, created_at, fleet_revision, state, reason)
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, NULL)",
                    params![
                        server.name,
                        next,
                        server.hash,
                        server.spec.to_string(),
                        now,
                        number,
                        text(RevisionState::Pending)?
                    ],
                )
                .db()?;
                next
            }
        };
        tx.execute(
            "INSERT INTO fleet_revision_servers (fleet_revision, server, server_revision)
             VALUES (?1, ?2, ?3)",
            params![number, server.name, server_number],
        )
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

pub(super) fn fleet_revision(
    conn: &mut Connection,
    number: u64,
) -> Result<Option<FleetRevision>, StoreError> {
    Ok(select_fleet_revisions(conn, "WHERE number = ?1", [number])?.pop())
}

pub(super) fn latest_fleet_revision(
    conn: &mut Connection,
) -> Result<Option<FleetRevision>, StoreError> {
    let filter = "WHERE number = (SELECT max(number) FROM fleet_revisions)";
    Ok(select_fleet_revisions(conn, filter, [])?.pop())
}

pub(super) fn fleet_revisions(conn: &mut Connection) -> Result<Vec<FleetRevision>, StoreError> {
    let tx = conn.transaction().db()?;
    select_fleet_revisions(&tx, "", [])
}

pub(super) fn server_revision(
    conn: &mut Connection,
    server: &str,
    number: u64,
) -> Result<Option<ServerRevision>, StoreError> {
    let filter = "WHERE server = ?1 AND number = ?2";
    Ok(select_server_revisions(conn, filter, params![server, number])?.pop())
}

pub(super) fn server_revisions(
    conn: &mut Connection,
    server: &str,
) -> Result<Vec<ServerRevision>, StoreError> {
    select_server_revisions(conn, "WHERE server = ?1", [server])
}

pub(super) fn set_server_revision_state(
    conn: &mut Connection,
    fence: Option<u64>,
    server: &str,
    number: u64,
    state: RevisionState,
    reason: Option<String>,
) -> Result<(), StoreError> {
    let tx = write(conn, fence)?;
    let changed = tx
        .execute(
            "UPDATE server_revisions SET state = ?3, reason = ?4 WHERE server = ?1 AND number = ?2",
            params![server, number, text(state)?, reason],
        )
        .db()?;
    if changed == 0 {
        return Err(StoreError::NotFound {
            what: format!("revision {number} of server `{server}`"),
        });
    }
    tx.commit().db()
}

pub(super) fn begin_deployment(
    conn: &mut Connection,
    fence: Option<u64>,
    new: NewDeployment,
    now: &str,
) -> Result<DeploymentRecord, StoreError> {
    let tx = write(conn, fence)?;
    let deployment = insert_deployment(&tx, new, now)?;
    tx.commit().db()?;
    Ok(deployment)
}

/// Inserts a deployment, in progress, into `tx`.
fn insert_deployment(
    tx: &Connection,
    new: NewDeployment,
    now: &str,
) -> Result<DeploymentRecord, StoreError> {
    for number in std::iter::once(new.fleet_revision).chain(new.from_revision) {
        let known = tx
            .query_row(
                "SELECT 1 FROM fleet_revisions WHERE number = ?1",
                [number],
                |_| Ok(()),
            )
            .optional()
            .db()?;
        if known.is_none() {
            return Err(StoreError::NotFound {
                what: format!("fleet revision {number}"),
            });
        }
    }
    let state = DeploymentStatus::InProgress;
    tx.execute(
        "INSERT INTO deployments (fleet_revision, from_revision, kind, state, started_at, reason)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
        params![
            new.fleet_revision,
            new.from_revision,
            text(new.kind)?,
            text(state)?,
            now,
            new.reason
        ],
    )
    .db()?;
    let id = id_of_last_insert(tx)?;
    Ok(DeploymentRecord {
        id,
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

pub(super) fn append_step(
    conn: &mut Connection,
    fence: Option<u64>,
    deployment: u64,
    step: &serde_json::Value,
    now: &str,
) -> Result<u64, StoreError> {
    let tx = write(conn, fence)?;
    let state = deployment_state(&tx, deployment)?;
    if state.is_finished() {
        return Err(StoreError::Conflict {
            what: format!(
                "deployment {deployment} is already finished ({}); it takes no more steps",
                text(state)?
            ),
        });
    }
    let seq: u64 = tx
        .query_row(
            "SELECT coalesce(max(seq), 0) + 1 FROM journal WHERE deployment = ?1",
            [deployment],
            |r| r.get(0),
        )
        .db()?;
    tx.execute(
        "INSERT INTO journal (deployment, seq, step, state, written_at) VALUES (?1, ?2, ?3, ?4, ?5)",
        params![
            deployment,
            seq,
            step.to_string(),
            text(StepState::Pending)?,
            now
        ],
    )
    .db()?;
    tx.commit().db()?;
    Ok(seq)
}

pub(super) fn confirm_step(
    conn: &mut Connection,
    fence: Option<u64>,
    deployment: u64,
    seq: u64,
    outcome: StepOutcome,
    detail: Option<String>,
    now: &str,
) -> Result<(), StoreError> {
    let tx = write(conn, fence)?;
    let state: Option<String> = tx
        .query_row(
            "SELECT state FROM journal WHERE deployment = ?1 AND seq = ?2",
            [deployment, seq],
            |r| r.get(0),
        )
        .optional()
        .db()?;
    let what = || format!("step {seq} of deployment {deployment}");
    let state: StepState = match state {
        None => return Err(StoreError::NotFound { what: what() }),
        Some(state) => parse(&state, what)?,
    };
    if state != StepState::Pending {
        return Err(StoreError::Conflict {
            what: format!("{} is already confirmed ({})", what(), text(state)?),
        });
    }
    tx.execute(
        "UPDATE journal SET state = ?3, confirmed_at = ?4, detail = ?5
         WHERE deployment = ?1 AND seq = ?2",
        params![
            deployment,
            seq,
            text(StepState::from(outcome))?,
            now,
            detail
        ],
    )
    .db()?;
    tx.commit().db()
}

pub(super) fn finish_deployment(
    conn: &mut Connection,
    fence: Option<u64>,
    id: u64,
    state: DeploymentStatus,
    reason: Option<String>,
    now: &str,
) -> Result<(), StoreError> {
    let tx = write(conn, fence)?;
    let current = deployment_state(&tx, id)?;
    if current.is_finished() {
        return Err(StoreError::Conflict {
            what: format!("deployment {id} is already finished ({})", text(current)?),
        });
    }
    let finished_at = state.is_finished().then_some(now);
    tx.execute(
        "UPDATE deployments SET state = ?2, finished_at = ?3, reason = ?4 WHERE id = ?1",
        params![id, text(state)?, finished_at, reason],
    )
    .db()?;
    tx.commit().db()
}

pub(super) fn deployment(
    conn: &mut Connection,
    id: u64,
) -> Result<Option<DeploymentRecord>, StoreError> {
    let tx = conn.transaction().db()?;
    Ok(select_deployments(&tx, "WHERE id = ?1", [id])?.pop())
}

pub(super) fn deployments(conn: &mut Connection) -> Result<Vec<DeploymentRecord>, StoreError> {
    let tx = conn.transaction().db()?;
    select_deployments(&tx, "", [])
}

pub(super) fn unfinished_deployments(
    conn: &mut Connection,
) -> Result<Vec<DeploymentRecord>, StoreError> {
    let tx = conn.transaction().db()?;
    let (in_progress, paused) = (
        text(DeploymentStatus::InProgress)?,
        text(DeploymentStatus::Paused)?,
    );
    select_deployments(&tx, "WHERE state IN (?1, ?2)", [in_progress, paused])
}

pub(super) fn append_events(
    conn: &mut Connection,
    fence: Option<u64>,
    events: &[NewEvent],
) -> Result<Vec<u64>, StoreError> {
    let tx = write(conn, fence)?;
    let mut ids = Vec::with_capacity(events.len());
    for event in events {
        insert_event(&tx, None, event)?;
        ids.push(id_of_last_insert(&tx)?);
    }
    tx.commit().db()?;
    Ok(ids)
}

pub(super) fn events(
    conn: &Connection,
    after: u64,
    limit: usize,
) -> Result<Vec<StoredEvent>, StoreError> {
    select_events(
        conn,
        &format!("SELECT {EVENT_COLUMNS} FROM events WHERE id > ?1 ORDER BY id LIMIT ?2"),
        params![page_start(after), page_size(limit)],
    )
}

pub(super) fn latest_events(
    conn: &Connection,
    limit: usize,
) -> Result<Vec<StoredEvent>, StoreError> {
    select_events(
        conn,
        &format!(
            "SELECT * FROM (SELECT {EVENT_COLUMNS} FROM events ORDER BY id DESC LIMIT ?1)
             ORDER BY id"
        ),
        params![page_size(limit)],
    )
}

const EVENT_COLUMNS: &str = "id, time, kind, server, revision, deployment, instance, message";

/// The events `sql` selects ([`EVENT_COLUMNS`], in that order).
fn select_events(
    conn: &Connection,
    sql: &str,
    params: impl Params,
) -> Result<Vec<StoredEvent>, StoreError> {
    let mut stmt = conn.prepare(sql).db()?;
    let rows = stmt
        .query_map(params, |r| {
            Ok(StoredEvent {
                id: r.get(0)?,
                event: NewEvent {
                    time: r.get(1)?,
                    kind: r.get(2)?,
                    server: r.get(3)?,
                    revision: r.get(4)?,
                    deployment: r.get(5)?,
                    instance: r.get(6)?,
                    message: r.get(7)?,
                },
            })
        })
        .db()?;
    rows.map(Db::db).collect()
}

pub(super) fn append_audit(
    conn: &mut Connection,
    fence: Option<u64>,
    records: &[ToolCallRecord],
) -> Result<(), StoreError> {
    let tx = write(conn, fence)?;
    // Many rows per statement: SQLite's work per statement (the AUTOINCREMENT counter
    // read and written, cursors opened) is paid per chunk, not per tool call. The
    // statements are prepared once per connection (parsing one costs as much as
    // inserting its rows), so the chunks come in a few sizes.
    let mut rest = records;
    for rows in AUDIT_INSERT_ROWS {
        if rest.len() < rows {
            continue;
        }
        let mut insert = tx.prepare_cached(&insert_audit_rows(rows)).db()?;
        let mut chunks = rest.chunks_exact(rows);
        for chunk in &mut chunks {
            insert_audit_rows_by(&mut insert, chunk)?;
        }
        rest = chunks.remainder();
    }
    tx.commit().db()
}

/// The sizes of the audit INSERT statements, in records (7 parameters each), largest
/// first: any batch is written in as few statements as its binary digits.
const AUDIT_INSERT_ROWS: [usize; 7] = [64, 32, 16, 8, 4, 2, 1];

/// An INSERT of `rows` audit records numbered by the database.
fn insert_audit_rows(rows: usize) -> String {
    let values = vec!["(?, ?, ?, ?, ?, ?, ?)"; rows].join(", ");
    format!(
        "INSERT INTO audit (time, token, server, revision, tool, outcome, duration_ms)
         VALUES {values}"
    )
}

/// Inserts `records` by `insert`, an [`insert_audit_rows`] of as many rows.
fn insert_audit_rows_by(
    insert: &mut rusqlite::Statement<'_>,
    records: &[ToolCallRecord],
) -> Result<(), StoreError> {
    for (n, record) in records.iter().enumerate() {
        let a = AuditRow::of(0, record).map_err(|e| StoreError::Invalid {
            what: e.to_string(),
        })?;
        let first = n * 7 + 1;
        insert.raw_bind_parameter(first, a.time).input()?;
        insert.raw_bind_parameter(first + 1, a.token).input()?;
        insert.raw_bind_parameter(first + 2, a.server).input()?;
        insert.raw_bind_parameter(first + 3, a.revision).input()?;
        insert.raw_bind_parameter(first + 4, a.tool).input()?;
        insert.raw_bind_parameter(first + 5, a.outcome).input()?;
        insert
            .raw_bind_parameter(first + 6, a.duration_ms)
            .input()?;
    }
    insert.raw_execute().input()?;
    Ok(())
}

pub(super) fn audit(
    conn: &Connection,
    after: u64,
    limit: usize,
) -> Result<Vec<StoredAuditRecord>, StoreError> {
    select_audit(
        conn,
        &format!("SELECT {AUDIT_COLUMNS} FROM audit WHERE id > ?1 ORDER BY id LIMIT ?2"),
        params![page_start(after), page_size(limit)],
    )
}

pub(super) fn latest_audit(
    conn: &Connection,
    limit: usize,
) -> Result<Vec<StoredAuditRecord>, StoreError> {
    select_audit(
        conn,
        &format!(
            "SELECT * FROM (SELECT {AUDIT_COLUMNS} FROM audit ORDER BY id DESC LIMIT ?1)
             ORDER BY id"
        ),
        params![page_size(limit)],
    )
}

const AUDIT_COLUMNS: &str = "id, time, token, server, revision, tool, outcome, duration_ms";

/// The audit records `sql` selects ([`AUDIT_COLUMNS`], in that order).
fn select_audit(
    conn: &Connection,
    sql: &str,
    params: impl Params,
) -> Result<Vec<StoredAuditRecord>, StoreError> {
    let mut stmt = conn.prepare(sql).db()?;
    let rows = stmt
        .query_map(params, |r| {
            Ok(AuditRow {
                id: r.get(0)?,
                time: r.get(1)?,
                token: r.get::<_, Option<String>>(2)?.map(Cow::Owned),
                server: Cow::Owned(r.get(3)?),
                revision: r.get(4)?,
                tool: Cow::Owned(r.get(5)?),
                outcome: Cow::Owned(r.get(6)?),
                duration_ms: r.get(7)?,
            })
        })
        .db()?;
    rows.map(|row| {
        StoredAuditRecord::try_from(row.db()?).map_err(|e| StoreError::Corrupt {
            what: e.to_string(),
        })
    })
    .collect()
}

pub(super) fn export(conn: &mut Connection) -> Result<StateExport, StoreError> {
    // One read transaction: a consistent snapshot even while the engine writes.
    let tx = conn.transaction().db()?;
    let state = StateExport {
        format: STATE_EXPORT_FORMAT,
        fleet_revisions: select_fleet_revisions(&tx, "", [])?,
        server_revisions: select_server_revisions(&tx, "", [])?,
        deployments: select_deployments(&tx, "", [])?,
        events: events(&tx, 0, usize::MAX)?,
        audit: audit(&tx, 0, usize::MAX)?,
    };
    Ok(state)
}

pub(super) fn import(
    conn: &mut Connection,
    fence: Option<u64>,
    state: &StateExport,
) -> Result<(), StoreError> {
    if state.format != STATE_EXPORT_FORMAT {
        return Err(StoreError::ExportFormat {
            found: state.format,
            supported: STATE_EXPORT_FORMAT,
        });
    }
    let tx = write(conn, fence)?;
    let tables = [
        "fleet_revisions",
        "server_revisions",
        "deployments",
        "events",
        "audit",
    ];
    for table in tables {
        let any = tx
            .query_row(&format!("SELECT 1 FROM {table} LIMIT 1"), [], |_| Ok(()))
            .optional()
            .db()?;
        if any.is_some() {
            return Err(StoreError::NotEmpty);
        }
    }
    import_rows(&tx, state).map_err(|e| match e {
        StoreError::Invalid { what } => StoreError::Invalid {
            what: format!("the state export contradicts itself: {what}"),
        },
        other => other,
    })?;
    tx.commit().db()
}

fn import_rows(tx: &Connection, state: &StateExport) -> Result<(), StoreError> {
    for rev in &state.fleet_revisions {
        tx.execute(
            "INSERT INTO fleet_revisions
                 (number, fleet, created_at, author, reason, source, source_path, env)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
            params![
                rev.number,
                rev.fleet,
                rev.created_at,
                rev.author,
                rev.reason,
                rev.source,
                rev.source_path,
                rev.env
            ],
        )
        .input()?;
    }
    for rev in &state.server_revisions {
        tx.execute(
            "INSERT INTO server_revisions
                 (server, number, hash, spec, created_at, fleet_revision, state, reason)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
            params![
                rev.server,
                rev.number,
                rev.hash,
                rev.spec.to_string(),
                rev.created_at,
                rev.fleet_revision,
                text(rev.state)?,
                rev.reason
            ],
        )
        .input()?;
    }
    for rev in &state.fleet_revisions {
        for (server, number) in &rev.servers {
            tx.execute(
                "INSERT INTO fleet_revision_servers (fleet_revision, server, server_revision)
                 VALUES (?1, ?2, ?3)",
                params![rev.number, server, number],
            )
            .input()?;
        }
    }
    for d in &state.deployments {
        tx.execute(
            "INSERT INTO deployments
                 (id, fleet_revision, from_revision, kind, state, started_at, finished_at, reason)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
            params![
                d.id,
                d.fleet_revision,
                d.from_revision,
                text(d.kind)?,
                text(d.state)?,
                d.started_at,
                d.finished_at,
                d.reason
            ],
        )
        .input()?;
        for s in &d.steps {
            tx.execute(
                "INSERT INTO journal
                     (deployment, seq, step, state, written_at, confirmed_at, detail)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
                params![
                    d.id,
                    s.seq,
                    s.step.to_string(),
                    text(s.state)?,
                    s.written_at,
                    s.confirmed_at,
                    s.detail
                ],
            )
            .input()?;
        }
    }
    for e in &state.events {
        insert_event(tx, Some(e.id), &e.event)?;
    }
    let mut insert = tx.prepare(INSERT_AUDIT).db()?;
    for a in &state.audit {
        insert_audit(&mut insert, Some(a.id), &a.record)?;
    }
    Ok(())
}

/// Inserts an event with the next id, or with `id` (import).
fn insert_event(conn: &Connection, id: Option<u64>, e: &NewEvent) -> Result<(), StoreError> {
    conn.execute(
        "INSERT INTO events (id, time, kind, server, revision, deployment, instance, message)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
        params![
            id,
            e.time,
            e.kind,
            e.server,
            e.revision,
            e.deployment,
            e.instance,
            e.message
        ],
    )
    .input()?;
    Ok(())
}

const INSERT_AUDIT: &str =
    "INSERT INTO audit (id, time, token, server, revision, tool, outcome, duration_ms)
     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)";

/// Inserts an audit record with the next id, or with `id` (import), by `insert`, a
/// prepared [`INSERT_AUDIT`].
fn insert_audit(
    insert: &mut rusqlite::Statement<'_>,
    id: Option<u64>,
    record: &ToolCallRecord,
) -> Result<(), StoreError> {
    let a = AuditRow::of(id.unwrap_or_default(), record).map_err(|e| StoreError::Invalid {
        what: e.to_string(),
    })?;
    insert
        .execute(params![
            id,
            a.time,
            a.token,
            a.server,
            a.revision,
            a.tool,
            a.outcome,
            a.duration_ms
        ])
        .input()?;
    Ok(())
}

fn select_fleet_revisions(
    conn: &Connection,
    filter: &str,
    params: impl Params,
) -> Result<Vec<FleetRevision>, StoreError> {
    let mut stmt = conn
        .prepare(&format!(
            "SELECT number, fleet, created_at, author, reason, source, source_path, env
             FROM fleet_revisions {filter} ORDER BY number"
        ))
        .db()?;
    let rows = stmt
        .query_map(params, |r| {
            Ok(FleetRevision {
                number: r.get(0)?,
                fleet: r.get(1)?,
                created_at: r.get(2)?,
                author: r.get(3)?,
                reason: r.get(4)?,
                source: r.get(5)?,
                source_path: r.get(6)?,
                env: r.get(7)?,
                servers: BTreeMap::new(),
            })
        })
        .db()?;
    let mut revisions: Vec<FleetRevision> = rows.map(Db::db).collect::<Result<_, _>>()?;
    let mut stmt = conn
        .prepare(
            "SELECT server, server_revision FROM fleet_revision_servers WHERE fleet_revision = ?1",
        )
        .db()?;
    for rev in &mut revisions {
        let rows = stmt
            .query_map([rev.number], |r| Ok((r.get(0)?, r.get(1)?)))
            .db()?;
        rev.servers = rows.map(Db::db).collect::<Result<_, _>>()?;
    }
    Ok(revisions)
}

fn select_server_revisions(
    conn: &Connection,
    filter: &str,
    params: impl Params,
) -> Result<Vec<ServerRevision>, StoreError> {
    let mut stmt = conn
        .prepare(&format!(
            "SELECT server, number, hash, spec, created_at, fleet_revision, state, reason
             FROM server_revisions {filter} ORDER BY server, number"
        ))
        .db()?;
    let rows = stmt
        .query_map(params, |r| {
            let raw = RawServerRevision {
                server: r.get(0)?,
                number: r.get(1)?,
                hash: r.get(2)?,
                spec: r.get(3)?,
                created_at: r.get(4)?,
                fleet_revision: r.get(5)?,
                state: r.get(6)?,
                reason: r.get(7)?,
            };
            Ok(raw)
        })
        .db()?;
    rows.map(|raw| raw.db()?.parse()).collect()
}

/// A `server_revisions` row before its JSON and state are parsed.
struct RawServerRevision {
    server: String,
    number: u64,
    hash: String,
    spec: String,
    created_at: String,
    fleet_revision: u64,
    state: String,
    reason: Option<String>,
}

impl RawServerRevision {
    fn parse(self) -> Result<ServerRevision, StoreError> {
        let what = || format!("revision {} of server `{}`", self.number, self.server);
        Ok(ServerRevision {
            spec: parse_json(&self.spec, || format!("{}: spec", what()))?,
            state: parse(&self.state, || format!("{}: state", what()))?,
            server: self.server,
            number: self.number,
            hash: self.hash,
            created_at: self.created_at,
            fleet_revision: self.fleet_revision,
            reason: self.reason,
        })
    }
}

fn select_deployments(
    conn: &Connection,
    filter: &str,
    params: impl Params,
) -> Result<Vec<DeploymentRecord>, StoreError> {
    let mut stmt = conn
        .prepare(&format!(
            "SELECT id, fleet_revision, from_revision, kind, state, started_at, finished_at, reason
             FROM deployments {filter} ORDER BY id"
        ))
        .db()?;
    let rows = stmt
        .query_map(params, |r| {
            Ok((
                r.get::<_, u64>(0)?,
                r.get::<_, u64>(1)?,
                r.get::<_, Option<u64>>(2)?,
                r.get::<_, String>(3)?,
                r.get::<_, String>(4)?,
                r.get::<_, String>(5)?,
                r.get::<_, Option<String>>(6)?,
                r.get::<_, Option<String>>(7)?,
            ))
        })
        .db()?;
    let mut steps = conn
        .prepare(
            "SELECT seq, step, state, written_at, confirmed_at, detail FROM journal
             WHERE deployment = ?1 ORDER BY seq",
        )
        .db()?;
    let mut deployments = Vec::new();
    for row in rows {
        let (id, fleet_revision, from_revision, kind, state, started_at, finished_at, reason) =
            row.db()?;
        let what = |field: &str| format!("deployment {id}: {field}");
        deployments.push(DeploymentRecord {
            id,
            fleet_revision,
            from_revision,
            kind: parse(&kind, || what("kind"))?,
            state: parse(&state, || what("state"))?,
            started_at,
            finished_at,
            reason,
            steps: steps
                .query_map([id], journal_entry)
                .db()?
                .map(|entry| entry.db()?.parse(id))
                .collect::<Result<_, _>>()?,
        });
    }
    Ok(deployments)
}

/// A `journal` row before its JSON and state are parsed.
struct RawJournalEntry {
    seq: u64,
    step: String,
    state: String,
    written_at: String,
    confirmed_at: Option<String>,
    detail: Option<String>,
}

fn journal_entry(r: &Row<'_>) -> rusqlite::Result<RawJournalEntry> {
    Ok(RawJournalEntry {
        seq: r.get(0)?,
        step: r.get(1)?,
        state: r.get(2)?,
        written_at: r.get(3)?,
        confirmed_at: r.get(4)?,
        detail: r.get(5)?,
    })
}

impl RawJournalEntry {
    fn parse(self, deployment: u64) -> Result<JournalEntry, StoreError> {
        let what = |field: &str| format!("step {} of deployment {deployment}: {field}", self.seq);
        Ok(JournalEntry {
            step: parse_json(&self.step, || what("step"))?,
            state: parse(&self.state, || what("state"))?,
            seq: self.seq,
            written_at: self.written_at,
            confirmed_at: self.confirmed_at,
            detail: self.detail,
        })
    }
}

fn deployment_state(conn: &Connection, id: u64) -> Result<DeploymentStatus, StoreError> {
    let state: Option<String> = conn
        .query_row("SELECT state FROM deployments WHERE id = ?1", [id], |r| {
            r.get(0)
        })
        .optional()
        .db()?;
    match state {
        None => Err(StoreError::NotFound {
            what: format!("deployment {id}"),
        }),
        Some(state) => parse(&state, || format!("deployment {id}: state")),
    }
}

/// A write transaction that takes the write lock at once, so that its reads (the next
/// number) and writes cannot interleave with another process's. With a `fence` (a fenced
/// handle's token) it goes ahead only while that token is the current lease's: checked under
/// the lock, so no acquire can come between the check and the write.
fn write(
    conn: &mut Connection,
    fence: Option<u64>,
) -> Result<rusqlite::Transaction<'_>, StoreError> {
    let tx = conn
        .transaction_with_behavior(TransactionBehavior::Immediate)
        .db()?;
    if let Some(token) = fence {
        lease::check_fence(select_lease(&tx)?, token)?;
    }
    Ok(tx)
}

pub(super) fn acquire_lease(
    conn: &mut Connection,
    holder: &str,
    ttl_ms: u32,
) -> Result<Option<Lease>, StoreError> {
    let tx = write(conn, None)?;
    let clock = clock(&tx, ttl_ms)?;
    let Some(lease) = lease::acquire(select_lease(&tx)?, holder, clock) else {
        return Ok(None);
    };
    write_lease(&tx, &lease)?;
    tx.commit().db()?;
    Ok(Some(lease))
}

pub(super) fn renew_lease(
    conn: &mut Connection,
    lease: &Lease,
    ttl_ms: u32,
) -> Result<Lease, StoreError> {
    let tx = write(conn, None)?;
    let clock = clock(&tx, ttl_ms)?;
    let renewed = lease::renew(select_lease(&tx)?, lease, clock)?;
    write_lease(&tx, &renewed)?;
    tx.commit().db()?;
    Ok(renewed)
}

pub(super) fn release_lease(conn: &mut Connection, lease: &Lease) -> Result<(), StoreError> {
    let tx = write(conn, None)?;
    let now = clock(&tx, 0)?.now;
    if let Some(released) = lease::release(select_lease(&tx)?, lease, now) {
        write_lease(&tx, &released)?;
    }
    tx.commit().db()
}

pub(super) fn lease(conn: &mut Connection) -> Result<Option<LeaseInfo>, StoreError> {
    let tx = conn.transaction().db()?;
    let now = clock(&tx, 0)?.now;
    Ok(select_lease(&tx)?.map(|held| lease::info(held, &now)))
}

/// SQLite's clock (the machine's: every process on the file shares it), now and `ttl_ms`
/// later, in the stores' time format. `'now'` is one instant within a statement.
fn clock(conn: &Connection, ttl_ms: u32) -> Result<lease::Clock, StoreError> {
    let later = format!("+{}.{:03} seconds", ttl_ms / 1000, ttl_ms % 1000);
    conn.query_row(
        "SELECT strftime('%Y-%m-%dT%H:%M:%fZ', 'now'),
                strftime('%Y-%m-%dT%H:%M:%fZ', 'now', ?1)",
        [later],
        |r| {
            Ok(lease::Clock {
                now: r.get(0)?,
                expires: r.get(1)?,
            })
        },
    )
    .db()
}

fn select_lease(conn: &Connection) -> Result<Option<Lease>, StoreError> {
    conn.query_row(
        "SELECT holder, token, acquired_at, expires_at FROM lease WHERE id = 1",
        [],
        |r| {
            Ok(Lease {
                holder: r.get(0)?,
                token: r.get(1)?,
                acquired_at: r.get(2)?,
                expires_at: r.get(3)?,
            })
        },
    )
    .optional()
    .db()
}

fn write_lease(conn: &Connection, lease: &Lease) -> Result<(), StoreError> {
    conn.execute(
        "INSERT INTO lease (id, holder, token, acquired_at, expires_at) VALUES (1, ?1, ?2, ?3, ?4)
         ON CONFLICT (id) DO UPDATE SET holder = excluded.holder, token = excluded.token,
             acquired_at = excluded.acquired_at, expires_at = excluded.expires_at",
        params![
            lease.holder,
            lease.token,
            lease.acquired_at,
            lease.expires_at
        ],
    )
    .db()?;
    Ok(())
}

pub(super) fn publish_gateway_view(
    conn: &mut Connection,
    fence: Option<u64>,
    body: &serde_json::Value,
    now: &str,
) -> Result<u64, StoreError> {
    let tx = write(conn, fence)?;
    let last: Option<u64> = tx
        .query_row("SELECT version FROM gateway_view WHERE id = 1", [], |r| {
            r.get(0)
        })
        .optional()
        .db()?;
    let version = last.unwrap_or(0) + 1;
    tx.execute(
        "INSERT INTO gateway_view (id, version, published_at, body) VALUES (1, ?1, ?2, ?3)
         ON CONFLICT (id) DO UPDATE SET version = excluded.version,
             published_at = excluded.published_at, body = excluded.body",
        params![version, now, body.to_string()],
    )
    .db()?;
    tx.commit().db()?;
    Ok(version)
}

pub(super) fn gateway_view(
    conn: &mut Connection,
    known: u64,
) -> Result<Option<GatewayView>, StoreError> {
    // The body is read only when the version changed: a replica's poll of an unchanged
    // view reads one number.
    let row = conn
        .query_row(
            "SELECT version, published_at, CASE WHEN version <> ?1 THEN body END
             FROM gateway_view WHERE id = 1",
            [page_start(known)],
            |r| {
                Ok((
                    r.get::<_, u64>(0)?,
                    r.get::<_, String>(1)?,
                    r.get::<_, Option<String>>(2)?,
                ))
            },
        )
        .optional()
        .db()?;
    let Some((version, published_at, Some(body))) = row else {
        return Ok(None);
    };
    Ok(Some(GatewayView {
        version,
        published_at,
        body: parse_json(&body, || format!("gateway view {version}"))?,
    }))
}

fn id_of_last_insert(conn: &Connection) -> Result<u64, StoreError> {
    u64::try_from(conn.last_insert_rowid()).map_err(|_| StoreError::Corrupt {
        what: format!("negative row id {}", conn.last_insert_rowid()),
    })
}

/// SQLite errors as store errors.
trait Db<T> {
    /// A value of the wrong type or range in a row is corruption, a number too large to store
    /// is invalid input, the rest is the database's.
    fn db(self) -> Result<T, StoreError>;

    /// As [`db`](Db::db), but a broken constraint (a duplicate id, a reference to a missing
    /// row) is also the input's fault.
    fn input(self) -> Result<T, StoreError>;
}

impl<T> Db<T> for rusqlite::Result<T> {
    fn db(self) -> Result<T, StoreError> {
        self.map_err(store_error)
    }

    fn input(self) -> Result<T, StoreError> {
        self.map_err(|e| {
            if e.sqlite_error_code() == Some(rusqlite::ErrorCode::ConstraintViolation) {
                StoreError::Invalid {
                    what: e.to_string(),
                }
            } else {
                store_error(e)
            }
        })
    }
}

fn store_error(e: rusqlite::Error) -> StoreError {
    match e {
        rusqlite::Error::InvalidColumnType(..)
        | rusqlite::Error::FromSqlConversionFailure(..)
        | rusqlite::Error::IntegralValueOutOfRange(..) => StoreError::Corrupt {
            what: e.to_string(),
        },
        rusqlite::Error::ToSqlConversionFailure(e) => StoreError::Invalid {
            what: format!("a number is too large to store: {e}"),
        },
        e => StoreError::Database(e.to_string()),
    }
}
