//! The fleet's state directory: private (0700), one control plane at a time (a lock file).

use std::fs::{File, TryLockError};
use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
use std::path::{Path, PathBuf};

/// File name of the state store in the state directory.
pub(crate) const STORE: &str = "state.db";

/// Why the state directory cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum StateDirError {
    /// Creating or opening it failed.
    #[error("cannot use state directory {path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    /// Another control plane holds it.
    #[error(
        "a control plane is already running for this fleet (state directory {path}); see `mcpfleet status`, or stop it with `mcpfleet down`"
    )]
    Locked { path: PathBuf },
    /// Someone else can read it: it may hold logs with sensitive output.
    #[error(
        "state directory {path} is accessible to other users (mode {mode:o}); run `chmod 700 {path}`"
    )]
    TooOpen { path: PathBuf, mode: u32 },
}

/// The default state directory of a fleet: `$XDG_STATE_HOME/mcpfleet/<fleet>`, else
/// `~/.local/state/mcpfleet/<fleet>`.
pub fn default_state_dir(fleet: &str) -> PathBuf {
    let base = std::env::var_os("XDG_STATE_HOME")
        .map(PathBuf::from)
        .filter(|p| p.is_absolute())
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".local/state")))
        .unwrap_or_else(std::env::temp_dir);
    base.join("mcpfleet").join(fleet)
}

/// A locked state directory. The lock is released when this is dropped (or the process
/// dies, however it dies).
#[derive(Debug)]
pub struct StateDir {
    path: PathBuf,
    _lock: File,
}

impl StateDir {
    /// Creates (0700) and locks the directory.
    ///
    /// # Errors
    /// See [`StateDirError`].
    pub fn acquire(path: &Path) -> Result<Self, StateDirError> {
        let io = |source| StateDirError::Io {
            path: path.to_path_buf(),
            source,
        };
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(path)
            .map_err(io)?;
        let mode = std::fs::metadata(path).map_err(io)?.permissions().mode() & 0o777;
        if mode & 0o077 != 0 {
            return Err(StateDirError::TooOpen {
                path: path.to_path_buf(),
                mode,
            });
        }
        let lock = File::options()
            .create(true)
            .truncate(false)
            .write(true)
            .open(path.join("control.lock"))
            .map_err(io)?;
        match lock.try_lock() {
            Ok(()) => {}
            Err(TryLockError::WouldBlock) => {
                return Err(StateDirError::Locked {
                    path: path.to_path_buf(),
                });
            }
            Err(TryLockError::Error(e)) => return Err(io(e)),
        }
        Ok(StateDir {
            path: path.to_path_buf(),
            _lock: lock,
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    pub fn socket_path(&self) -> PathBuf {
        self.path.join(fleet_api::SOCKET)
    }

    /// The state store: revisions, deployments and their journal, events, the tool-call
    /// audit.
    pub fn store_path(&self) -> PathBuf {
        self.path.join(STORE)
    }

    /// Binds the admin socket, replacing a stale one (we hold the lock, so it is stale).
    pub(crate) fn bind_socket(&self) -> std::io::Result<tokio::net::UnixListener> {
        let socket = self.socket_path();
        let _ = std::fs::remove_file(&socket);
        let listener = tokio::net::UnixListener::bind(&socket)?;
        std::fs::set_permissions(&socket, std::fs::Permissions::from_mode(0o600))?;
        Ok(listener)
    }

    pub(crate) fn remove_socket(&self) {
        let _ = std::fs::remove_file(self.socket_path());
    }
}
