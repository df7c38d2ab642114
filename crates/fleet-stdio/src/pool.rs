//! Per-session stdio processes (`isolation: per-session`): the gateway asks a
//! [`SessionProcesses`] for a started process whenever a client opens a session, and
//! gives it back (drops the [`StdioLease`]) when the session ends — `DELETE`, idle
//! timeout, or the route table dropping the revision. Who starts the processes, keeps
//! a warm pool and enforces the cap is the implementor's business (the engine's).

use std::fmt;
use std::time::Duration;

use futures::future::BoxFuture;
use tokio::io::{AsyncRead, AsyncWrite};

use crate::link::StdioLink;

/// Hands out one started stdio process per client session.
pub trait SessionProcesses: Send + Sync + fmt::Debug {
    /// A started process for a new session.
    fn acquire(&self) -> BoxFuture<'_, Result<StdioLease, AcquireError>>;

    /// A session unused this long ends and its process is given back.
    fn idle_timeout(&self) -> Duration;
}

/// Why no process could be had.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AcquireError {
    /// Every allowed process is in use.
    #[error("all {max} sessions are in use; try again when one ends")]
    AtCapacity {
        /// The server's `max_sessions`.
        max: u32,
    },
    /// The process could not be started.
    #[error("cannot start a process: {0}")]
    Failed(String),
}

/// One process lent to one session: its pipes, and whatever gives it back when
/// dropped.
pub struct StdioLease {
    pub link: StdioLink,
    _release: Box<dyn Send + Sync>,
}

impl fmt::Debug for StdioLease {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("StdioLease")
            .field("link", &self.link)
            .finish_non_exhaustive()
    }
}

impl StdioLease {
    /// A lease of the process behind `stdin`/`stdout`. `release` is dropped when the
    /// session ends — after its stdin was closed — and should stop the process.
    pub fn new(
        name: impl Into<String>,
        stdin: impl AsyncWrite + Send + 'static,
        stdout: impl AsyncRead + Send + 'static,
        release: impl Send + Sync + 'static,
    ) -> Self {
        Self {
            link: StdioLink::exclusive(name, stdin, stdout),
            _release: Box::new(release),
        }
    }
}
