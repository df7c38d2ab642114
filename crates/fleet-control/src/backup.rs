//! `export-state` and `import-state` on a state directory no control plane holds: the state
//! store read or loaded directly, under the directory's lock. (While a control plane runs,
//! `GET /v1/state/export` exports through it; an import never happens under a running one.)

use crate::{StateDir, StateDirError};
use fleet_store::{SqliteStore, StateExport, StateStore, StoreError};
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
    /// Putting the imported store in place failed.
    #[error("cannot write {path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
}

/// The whole store of the state directory at `dir`, read in one transaction.
///
/// # Errors
/// See [`BackupError`]: no store, a control plane holds the directory
/// ([`StateDirError::Locked`]), the store cannot be read.
pub async fn export_state(dir: &Path) -> Result<StateExport, BackupError> {
    let stopped = crate::record::open_stopped(dir).await?;
    Ok(stopped.store().export().await?)
}

/// Loads `state` into the state directory at `dir` (created if missing), whose store must be
/// empty or absent. On any failure nothing is left behind: an absent store is built in a
/// temporary file and renamed into place only once the import succeeded, and a directory
/// this call created is removed again.
///
/// # Errors
/// See [`BackupError`]: a control plane holds the directory ([`StateDirError::Locked`]), the
/// store already holds data ([`StoreError::NotEmpty`]), the document has another format or
/// contradicts itself.
pub async fn import_state(dir: &Path, state: StateExport) -> Result<(), BackupError> {
    let created = !dir.exists();
    let result = async {
        let held = StateDir::acquire(dir)?;
        let db = held.store_path();
        if db.exists() {
            return Ok(open_store(db).await?.import(state).await?);
        }
        let building = dir.join(format!("{}.importing", crate::state_dir::STORE));
        remove_database(&building);
        let loaded = async {
            let store = open_store(building.clone()).await?;
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

pub(crate) async fn open_store(path: PathBuf) -> Result<SqliteStore, StoreError> {
    tokio::task::spawn_blocking(move || SqliteStore::open(&path))
        .await
        .map_err(|e| StoreError::Database(e.to_string()))?
}

/// Removes a database file and SQLite's files beside it.
fn remove_database(path: &Path) {
    for suffix in ["", "-wal", "-shm", "-journal"] {
        let mut file = path.as_os_str().to_owned();
        file.push(suffix);
        let _ = std::fs::remove_file(PathBuf::from(file));
    }
}
