//! `export-state` and `import-state` on a state directory no control plane holds: the state
//! store read or loaded directly, under the directory's lock. (While a control plane runs,
//! `GET /v1/state/export` exports through it; an import never happens under a running one.)

use crate::store::open_sqlite;
use crate::{StateDir, StateDirError, StoreLocation};
use fleet_store::{StateExport, StateStore, StoreError};
use std::collections::BTreeSet;
use std::fmt;
use std::path::{Path, PathBuf};

/// Why an export or import did not happen. Nothing was changed.
#[derive(Debug, thiserror::Error)]
pub enum BackupError {
    /// The state directory has no state store to export.
    #[error("there is no state store in {dir} (nothing was ever deployed with it)")]
    NoStore { dir: PathBuf },
    /// The state directory is unusable, or a control plane holds it.
    #[error(transparent)]
    StateDir(#[from] StateDirError),
    /// The store refused or failed (an import into a store that holds data, a document of
    /// another format or that contradicts itself, a damaged database).
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The document names a fleet, server or environment with a name no fleet file can
    /// have. Such names become paths (the default state directory, instance logs), so
    /// `../x` would write outside the state root: refused before anything is written.
    #[error(
        "the export holds names no fleet file can have ({}): {}; nothing was imported",
        fleet_spec::NAME_RULE,
        found.iter().map(ToString::to_string).collect::<Vec<_>>().join(", ")
    )]
    InvalidNames {
        /// Every refused name, each once.
        found: Vec<InvalidName>,
    },
    /// Putting the imported store in place failed.
    #[error("cannot write {path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
}

/// A name in a state export that the fleet file's name rule refuses.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct InvalidName {
    /// What it names.
    pub kind: NameKind,
    /// The name as the document has it.
    pub name: String,
}

/// What a name in a state export names.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum NameKind {
    /// A fleet (`fleet_revisions[].fleet`): it names the default state directory.
    Fleet,
    /// A server (`fleet_revisions[].servers`, `server_revisions[].server`): it names
    /// its instances' logs and process records.
    Server,
    /// An environment overlay (`fleet_revisions[].env`).
    Environment,
}

impl fmt::Display for NameKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Fleet => "fleet",
            Self::Server => "server",
            Self::Environment => "environment",
        })
    }
}

/// Longest part of a refused name an error quotes: the name came from a file, and
/// the message must stay readable.
const QUOTED_NAME_CHARS: usize = 80;

impl fmt::Display for InvalidName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let shown: String = self.name.chars().take(QUOTED_NAME_CHARS).collect();
        let more = if shown.len() < self.name.len() {
            "…"
        } else {
            ""
        };
        write!(f, "{} {:?}{more}", self.kind, shown)
    }
}

/// Checks every name of `export` that can become a path (fleet, server and environment
/// names) with the fleet file's rule ([`fleet_spec::is_valid_name`]).
///
/// # Errors
/// [`BackupError::InvalidNames`] with every name refused.
pub fn check_import_names(export: &StateExport) -> Result<(), BackupError> {
    let fleets = export.fleet_revisions.iter().flat_map(|revision| {
        let servers = revision.servers.keys().map(|name| (NameKind::Server, name));
        std::iter::once((NameKind::Fleet, &revision.fleet))
            .chain(revision.env.iter().map(|env| (NameKind::Environment, env)))
            .chain(servers)
    });
    let servers = export
        .server_revisions
        .iter()
        .map(|revision| (NameKind::Server, &revision.server));
    let found: BTreeSet<InvalidName> = fleets
        .chain(servers)
        .filter(|(_, name)| !fleet_spec::is_valid_name(name))
        .map(|(kind, name)| InvalidName {
            kind,
            name: name.clone(),
        })
        .collect();
    if found.is_empty() {
        Ok(())
    } else {
        Err(BackupError::InvalidNames {
            found: found.into_iter().collect(),
        })
    }
}

/// The whole store of the fleet whose state directory is `dir` and whose store is at
/// `location`, read in one transaction.
///
/// # Errors
/// See [`BackupError`]: no store, a control plane holds the directory
/// ([`StateDirError::Locked`]), the store cannot be read.
pub async fn export_state(
    dir: &Path,
    location: &StoreLocation,
) -> Result<StateExport, BackupError> {
    let stopped = crate::record::open_stopped(dir, location).await?;
    Ok(stopped.store().export().await?)
}

/// Loads `state` into the store of the fleet whose state directory is `dir` and whose store
/// is at `location`; the store must be empty or absent. On any failure nothing is left
/// behind: a PostgreSQL store imports in one transaction; an absent state directory store
/// is built in a temporary file and renamed into place only once the import succeeded, and
/// a directory this call created is removed again.
///
/// # Errors
/// See [`BackupError`]: a name no fleet file can have ([`BackupError::InvalidNames`]), a
/// control plane holds the directory ([`StateDirError::Locked`]), the store already holds
/// data ([`StoreError::NotEmpty`]), the document has another format or contradicts itself,
/// the database cannot be reached.
pub async fn import_state(
    dir: &Path,
    location: &StoreLocation,
    state: StateExport,
) -> Result<(), BackupError> {
    check_import_names(&state)?;
    if let StoreLocation::Postgres { .. } = location {
        return Ok(location.open(dir).await?.import(state).await?);
    }
    let created = !dir.exists();
    let result = async {
        let held = StateDir::acquire(dir)?;
        let db = held.store_path();
        if db.exists() {
            return Ok(open_sqlite(db).await?.import(state).await?);
        }
        let building = dir.join(format!("{}.importing", crate::state_dir::STORE));
        remove_database(&building);
        let loaded = async {
            let store = open_sqlite(building.clone()).await?;
            store.import(state).await?;
            // Closed before the rename: SQLite folds its write-ahead log into the file.
            drop(store);
            std::fs::rename(&building, &db).map_err(|source| BackupError::Io {
                path: db.clone(),
                source,
            })
        }
        .await;
        if loaded.is_err() {
            remove_database(&building);
        }
        loaded
    }
    .await;
    if result.is_err() && created {
        let _ = std::fs::remove_dir_all(dir);
    }
    result
}

/// Removes a database file and SQLite's files beside it.
fn remove_database(path: &Path) {
    for suffix in ["", "-wal", "-shm", "-journal"] {
        let mut file = path.as_os_str().to_owned();
        file.push(suffix);
        let _ = std::fs::remove_file(PathBuf::from(file));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use fleet_store::{FleetRevision, RevisionState, STATE_EXPORT_FORMAT, ServerRevision};

    fn export(fleet: &str, env: Option<&str>, servers: &[&str]) -> StateExport {
        StateExport {
            format: STATE_EXPORT_FORMAT,
            fleet_revisions: vec![FleetRevision {
                number: 1,
                fleet: fleet.to_owned(),
                created_at: String::new(),
                author: String::new(),
                reason: None,
                source: String::new(),
                source_path: String::new(),
                env: env.map(str::to_owned),
                servers: servers.iter().map(|s| ((*s).to_owned(), 1)).collect(),
            }],
            server_revisions: servers
                .iter()
                .map(|s| ServerRevision {
                    server: (*s).to_owned(),
                    number: 1,
                    hash: String::new(),
                    spec: serde_json::Value::Null,
                    created_at: String::new(),
                    fleet_revision: 1,
                    state: RevisionState::Active,
                    reason: None,
                })
                .collect(),
            deployments: Vec::new(),
            events: Vec::new(),
            audit: Vec::new(),
        }
    }

    #[test]
    fn every_name_that_becomes_a_path_is_checked_and_each_refused_once() {
        assert!(check_import_names(&export("notes", Some("prod"), &["api", "db-1"])).is_ok());
        let long = "x/".repeat(1000);
        let Err(error) =
            check_import_names(&export("../../x", Some("a b"), &["ok", "../up", &long]))
        else {
            panic!("names with slashes were accepted");
        };
        let BackupError::InvalidNames { found } = &error else {
            panic!("{error:?}");
        };
        let kinds: Vec<_> = found.iter().map(|n| (n.kind, n.name.len())).collect();
        assert_eq!(
            kinds,
            [
                (NameKind::Fleet, 7),
                (NameKind::Server, 5),
                (NameKind::Server, 2000),
                (NameKind::Environment, 3),
            ]
        );
        let message = error.to_string();
        assert!(message.contains(r#"fleet "../../x""#), "{message}");
        assert!(message.contains("lowercase letters"), "{message}");
        assert!(
            message.len() < 600,
            "the whole long name is quoted: {message}"
        );
    }
}
