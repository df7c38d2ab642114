//! Which state store a fleet uses, and opening it: the SQLite file in its state directory,
//! or the PostgreSQL database its file names under `state.postgres`.

use fleet_spec::model::ValidFleet;
use fleet_spec::template::{Host, InstanceTemplates};
use fleet_store::{PostgresStore, SqliteStore, StateStore, StoreError};
use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// Where a fleet's state store is.
#[derive(Clone)]
pub enum StoreLocation {
    /// The SQLite database file in the state directory.
    StateDir,
    /// A PostgreSQL database.
    Postgres {
        /// The URL, its secrets read: never shown.
        url: String,
        /// The URL with its password as `***`: what messages show.
        shown: String,
        /// How long the leader's lease lasts unless renewed.
        lease: std::time::Duration,
    },
}

impl StoreLocation {
    /// The store of `fleet`; a PostgreSQL URL has its secrets read now.
    ///
    /// # Errors
    /// [`StoreError::Invalid`] when a secret of the URL cannot be read, or the URL with its
    /// secrets is not a `postgres://` URL; the message never holds a secret's value.
    pub fn of(fleet: &ValidFleet, host: Arc<dyn Host>) -> Result<Self, StoreError> {
        let Some(postgres) = &fleet.state.postgres else {
            return Ok(Self::StateDir);
        };
        let shown = postgres.url.shown.clone();
        let url = InstanceTemplates::new(fleet, host, None, 0)
            .and_then(|templates| templates.render_fleet(&postgres.url))
            .map_err(|e| StoreError::Invalid {
                what: format!("state.postgres.url `{shown}`: {}", e.message),
            })?;
        // Validation could only check what it saw; a URL that is a secret as a whole is
        // checked here.
        if !(url.starts_with("postgres://") || url.starts_with("postgresql://")) {
            return Err(StoreError::Invalid {
                what: format!(
                    "state.postgres.url `{shown}` is not a postgres:// URL once its secrets are read"
                ),
            });
        }
        Ok(Self::Postgres {
            shown: fleet_store::redacted(&url),
            url,
            lease: postgres.lease,
        })
    }

    /// The store as messages name it: the state directory `state_dir`, or the database's
    /// URL without its password.
    pub fn named(&self, state_dir: &Path) -> String {
        match self {
            Self::StateDir => state_dir.display().to_string(),
            Self::Postgres { shown, .. } => shown.clone(),
        }
    }

    /// Opens the store (the state directory's file: `state_dir`'s, created if missing),
    /// bringing its schema up to date.
    ///
    /// # Errors
    /// The database cannot be opened or reached, or a newer mcpfleet wrote it.
    pub async fn open(&self, state_dir: &Path) -> Result<Arc<dyn StateStore>, StoreError> {
        Ok(match self {
            Self::StateDir => Arc::new(open_sqlite(state_dir.join(crate::state_dir::STORE)).await?),
            Self::Postgres { url, .. } => Arc::new(PostgresStore::connect(url).await?),
        })
    }
}

impl fmt::Debug for StoreLocation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // The URL with its secrets is never printed, not even by a `{:?}`.
        match self {
            Self::StateDir => f.write_str("StateDir"),
            Self::Postgres { shown, .. } => write!(f, "Postgres({shown})"),
        }
    }
}

/// Opens (creating if missing) the SQLite store at `file` on the blocking pool.
pub(crate) async fn open_sqlite(file: PathBuf) -> Result<SqliteStore, StoreError> {
    tokio::task::spawn_blocking(move || SqliteStore::open(&file))
        .await
        .map_err(|e| StoreError::Database(e.to_string()))?
}
