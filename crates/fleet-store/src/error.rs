//! What can go wrong with the store, in terms a user can act on.

use std::path::PathBuf;

/// An error from a [`StateStore`](crate::StateStore).
///
/// Database-specific errors are carried as text so that every implementation (SQLite,
/// PostgreSQL) shares this type. A PostgreSQL database is named by its URL without the
/// password.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StoreError {
    /// The state database could not be created or opened: a missing or unwritable state
    /// directory, a file that is not an mcpfleet database, a disk error.
    #[error(
        "cannot open the state database {}: {source}; check that the state directory exists \
         and is writable by this user, and that the file is an mcpfleet state database",
        path.display()
    )]
    Open {
        /// The database file.
        path: PathBuf,
        /// Why it could not be opened.
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },

    /// The PostgreSQL state database could not be reached or refused the login.
    #[error(
        "cannot connect to the state database {database}: {reason}; check that PostgreSQL \
         runs there and that the URL's user, password and database are right"
    )]
    Connect {
        /// The database's URL, password removed.
        database: String,
        /// Why, as the client or the server said.
        reason: String,
    },

    /// The database's schema is newer than this build knows: it was written by a newer
    /// mcpfleet. Nothing was changed.
    #[error(
        "the state database {database} was written by a newer mcpfleet (schema version \
         {found}, this mcpfleet knows up to {supported}); upgrade mcpfleet, or export the \
         state with the newer mcpfleet and restore it with import-state"
    )]
    NewerSchema {
        /// The database: the file, or the URL without its password.
        database: String,
        /// The schema version found in the database.
        found: u64,
        /// The newest schema version this build knows.
        supported: u64,
    },

    /// The thing asked for does not exist.
    #[error("{what} not found")]
    NotFound {
        /// What was looked for, e.g. `deployment 7`.
        what: String,
    },

    /// An import was refused because the store already holds data. Nothing was changed.
    #[error(
        "the state store already holds data; import into a fresh state directory (one with no \
         state database yet) or an empty PostgreSQL database"
    )]
    NotEmpty,

    /// The request contradicts what the store holds, e.g. confirming a step twice or changing
    /// a finished deployment.
    #[error("{what}")]
    Conflict {
        /// What contradicts what.
        what: String,
    },

    /// The request itself is malformed, e.g. two servers with one name in a revision, or an
    /// import document that contradicts itself.
    #[error("{what}")]
    Invalid {
        /// What is wrong with it.
        what: String,
    },

    /// An import document has a format version this build does not read.
    #[error(
        "the state export has format {found}, this mcpfleet reads format {supported}; import \
         it with the mcpfleet version that exported it"
    )]
    ExportFormat {
        /// The document's format version.
        found: u32,
        /// The format version this build reads and writes.
        supported: u32,
    },

    /// A stored row does not parse (hand-edited or damaged database).
    #[error("the state database is corrupt: {what}")]
    Corrupt {
        /// Which row and what is wrong with it.
        what: String,
    },

    /// A write or renewal by a control plane whose leadership lease was taken over: another
    /// control plane took the lease since (or the token was never this database's). Nothing
    /// was written. The caller has been deposed and must stop acting as the leader.
    #[error(
        "this control plane's leadership lease (token {mine}) is no longer current: {}; \
         nothing was written. Stop acting as the leader (start no step, write nothing more) \
         and acquire the lease again before leading",
        match (holder, token) {
            (Some(holder), Some(token)) =>
                format!("`{holder}` took the lease since (token {token})"),
            _ => "no lease was ever taken on this database".to_owned(),
        }
    )]
    Fenced {
        /// The token the caller held.
        mine: u64,
        /// Who took the lease last, if anyone ever did.
        holder: Option<String>,
        /// The lease's current token, if any lease was ever taken.
        token: Option<u64>,
    },

    /// Any other database failure (disk full, I/O error, a lock held too long, …).
    #[error("state database error: {0}")]
    Database(String),
}
