//! The schema, as an ordered list of migrations tracked by `PRAGMA user_version`.
//!
//! Migration `i` (0-based) takes a database from version `i` to `i + 1`. Never edit a
//! migration that has shipped: append a new one.

use crate::StoreError;
use rusqlite::{Connection, TransactionBehavior};
use std::path::Path;

/// Numbers are `INTEGER` (SQLite's i64); JSON and enum values are `TEXT`, enums spelled as in
/// their serde form. `AUTOINCREMENT` where ids are paged by clients, so that an id is never
/// handed out twice even if rows are pruned later.
const MIGRATIONS: &[&str] = &[
    // 1: revisions, deployments and their journal, events, audit.
    "
    CREATE TABLE fleet_revisions (
        number      INTEGER PRIMARY KEY,
        fleet       TEXT NOT NULL,
        created_at  TEXT NOT NULL,
        author      TEXT NOT NULL,
        reason      TEXT,
        source      TEXT NOT NULL,
        source_path TEXT NOT NULL,
        env         TEXT
    );
    CREATE TABLE server_revisions (
        server         TEXT NOT NULL,
        number         INTEGER NOT NULL,
        hash           TEXT NOT NULL,
        spec           TEXT NOT NULL,
        created_at     TEXT NOT NULL,
        fleet_revision INTEGER NOT NULL REFERENCES fleet_revisions (number),
        state          TEXT NOT NULL,
        reason         TEXT,
        PRIMARY KEY (server, number)
    );
    CREATE TABLE fleet_revision_servers (
        fleet_revision  INTEGER NOT NULL REFERENCES fleet_revisions (number),
        server          TEXT NOT NULL,
        server_revision INTEGER NOT NULL,
        PRIMARY KEY (fleet_revision, server),
        FOREIGN KEY (server, server_revision) REFERENCES server_revisions (server, number)
    );
    CREATE TABLE deployments (
        id             INTEGER PRIMARY KEY AUTOINCREMENT,
        fleet_revision INTEGER NOT NULL REFERENCES fleet_revisions (number),
        from_revision  INTEGER REFERENCES fleet_revisions (number),
        kind           TEXT NOT NULL,
        state          TEXT NOT NULL,
        started_at     TEXT NOT NULL,
        finished_at    TEXT,
        reason         TEXT
    );
    CREATE TABLE journal (
        deployment   INTEGER NOT NULL REFERENCES deployments (id),
        seq          INTEGER NOT NULL,
        step         TEXT NOT NULL,
        state        TEXT NOT NULL,
        written_at   TEXT NOT NULL,
        confirmed_at TEXT,
        detail       TEXT,
        PRIMARY KEY (deployment, seq)
    );
    CREATE TABLE events (
        id         INTEGER PRIMARY KEY AUTOINCREMENT,
        time       TEXT NOT NULL,
        kind       TEXT NOT NULL,
        server     TEXT,
        revision   INTEGER,
        deployment INTEGER,
        instance   TEXT,
        message    TEXT NOT NULL
    );
    CREATE TABLE audit (
        id          INTEGER PRIMARY KEY AUTOINCREMENT,
        time        TEXT NOT NULL,
        token       TEXT,
        server      TEXT NOT NULL,
        revision    INTEGER NOT NULL,
        tool        TEXT NOT NULL,
        outcome     TEXT NOT NULL,
        duration_ms REAL NOT NULL
    );
    ",
    // 2: the leadership lease, one row: the last lease handed out. Never deleted (a
    // release only moves its expiry), so its token only grows.
    "
    CREATE TABLE lease (
        id          INTEGER PRIMARY KEY CHECK (id = 1),
        holder      TEXT NOT NULL,
        token       INTEGER NOT NULL,
        acquired_at TEXT NOT NULL,
        expires_at  TEXT NOT NULL
    );
    ",
    // 3: the gateway view the leader publishes for gateway replicas, one row: the last one
    // published. Its version only grows.
    "
    CREATE TABLE gateway_view (
        id           INTEGER PRIMARY KEY CHECK (id = 1),
        version      INTEGER NOT NULL,
        published_at TEXT NOT NULL,
        body         TEXT NOT NULL
    );
    ",
];

/// The schema version this build creates and understands.
pub const SCHEMA_VERSION: u64 = MIGRATIONS.len() as u64;

/// Brings the database up to [`SCHEMA_VERSION`], one transaction per migration.
///
/// The version is read again inside a write transaction, so two processes opening the same
/// new database do not both apply a migration.
pub(super) fn migrate(conn: &mut Connection, path: &Path) -> Result<(), StoreError> {
    loop {
        let tx = conn
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .map_err(|e| open_error(path, e))?;
        let found: i64 = tx
            .pragma_query_value(None, "user_version", |row| row.get(0))
            .map_err(|e| open_error(path, e))?;
        let found = u64::try_from(found).map_err(|_| StoreError::Corrupt {
            what: format!("{}: negative schema version {found}", path.display()),
        })?;
        if found > SCHEMA_VERSION {
            return Err(StoreError::NewerSchema {
                database: path.display().to_string(),
                found,
                supported: SCHEMA_VERSION,
            });
        }
        let Some(migration) = usize::try_from(found).ok().and_then(|i| MIGRATIONS.get(i)) else {
            return Ok(());
        };
        tx.execute_batch(migration)
            .and_then(|()| tx.pragma_update(None, "user_version", found + 1))
            .and_then(|()| tx.commit())
            .map_err(|e| {
                StoreError::Database(format!(
                    "migrating {} to schema version {}: {e}",
                    path.display(),
                    found + 1
                ))
            })?;
    }
}

pub(super) fn open_error(
    path: &Path,
    e: impl std::error::Error + Send + Sync + 'static,
) -> StoreError {
    StoreError::Open {
        path: path.to_path_buf(),
        source: Box::new(e),
    }
}
