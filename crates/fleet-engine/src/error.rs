//! Why the engine could not do what it was asked: one typed error for every fallible
//! operation of the engine.
//!
//! Its texts are what users read — a server's status reason, an event's message, the
//! CLI's answer to `restart` or `promote` — so each variant's `Display` is the exact
//! sentence shown, and code that needs to know *which* failure it has (an abort caused by
//! another server, a shutdown) matches the variant, never the text.

use crate::report::ServerState;
use fleet_spec::template::RenderError;

/// Why the engine could not start, update, restart or steer a server.
#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    /// Another server failed (or a shutdown began) while this one waited its turn: it must
    /// not start. Not a failure of this server's own, so its `on_failure` does not count.
    #[error("the deployment was aborted")]
    Aborted,
    /// The control plane is stopping: no deployment or rollout may start anything more.
    #[error("the control plane is stopping")]
    ShuttingDown,
    /// The engine's state went away while a server waited on it (the engine was dropped).
    #[error("the engine stopped")]
    EngineStopped,
    /// A dependency failed or stopped, so the server that waits for it can never start.
    #[error("dependency `{server}` is {}", state.as_str())]
    DependencyDown {
        /// The dependency.
        server: String,
        /// The state it is in.
        state: ServerState,
    },
    /// The deployment journal refused a step, so its effect must not happen (the text is
    /// the journal's own message).
    #[error("{0}")]
    Journal(String),
    /// The OS has no free port to give an http server.
    #[error("cannot allocate a port: {0}")]
    NoFreePort(#[source] std::io::Error),
    /// The fixed `port:` of an http server is taken by another program.
    #[error(
        "port {0} is already in use by another program; stop it, choose another `port:`, or \
         remove `port:` to let mcpfleet allocate one"
    )]
    PortInUse(u16),
    /// The fixed `port:` of an http server cannot be bound for another reason.
    #[error("cannot use port {port}: {source}")]
    PortUnusable {
        /// The port asked for.
        port: u16,
        /// Why binding it failed.
        source: std::io::Error,
    },
    /// The server's templates cannot be set up for this instance.
    #[error("cannot render its templates: {0}")]
    Templates(#[source] RenderError),
    /// A template of the server fails with real values (a missing variable or secret).
    #[error(transparent)]
    Render(#[from] RenderError),
    /// The server cannot run on the fleet's cluster (its revision's Deployment cannot be
    /// rendered).
    #[error(transparent)]
    NotForCluster(#[from] fleet_manifests::RenderError),
    /// An `http` check with a path only (`/health`) on a stdio server, which has no port.
    #[error("an http check of a stdio server needs a full `url`")]
    HttpCheckNeedsUrl,
    /// A `tcp` check without `address` on a server that has no port.
    #[error("a tcp check of a server without a port needs `address`")]
    TcpCheckNeedsAddress,
    /// The runtime could not start the process (its message, secrets redacted).
    #[error("{0}")]
    Spawn(String),
    /// The runtime started a per-session process but it never ran with its pipes (what
    /// the runtime reported instead).
    #[error("did not start: {0}")]
    DidNotStart(String),
    /// A per-session server is being stopped: its pool starts no more processes.
    #[error("the server is stopping")]
    ServerStopping,
    /// The engine that owned a session pool is gone.
    #[error("the engine is gone")]
    EngineGone,
    /// A stdio server closed its stdout before the first message.
    #[error("the process closed its stdout at once")]
    StdoutClosed,
    /// The task watching an instance ended before the instance was ready.
    #[error("its monitor stopped")]
    MonitorStopped,
    /// An instance did not become ready: the failed check, or what its process did (exited,
    /// crash-looped), in words.
    #[error("{0}")]
    NotReady(String),
    /// A revision a rollback brings back could not be started again.
    #[error("cannot start revision {revision} again: {source}")]
    CannotStartAgain {
        /// The revision brought back.
        revision: u64,
        /// Why it did not start.
        source: Box<EngineError>,
    },
    /// A revision a rollback brings back started but did not become ready.
    #[error("revision {revision} did not come back: {source}")]
    DidNotComeBack {
        /// The revision brought back.
        revision: u64,
        /// Why it is not ready.
        source: Box<EngineError>,
    },
    /// `restart` of a server that has no revision serving.
    #[error("`{0}` has no revision serving (see `mcpfleet status`)")]
    NotServing(String),
    /// `restart` of a remote server: no process of it runs here.
    #[error("`{0}` is a remote server: nothing of it runs here to restart")]
    RemoteRestart(String),
    /// `restart` while a canary of the server is in progress.
    #[error("a rollout of `{0}` is in progress: promote or abort it first")]
    RolloutInProgress(String),
    /// A replacement started by `restart` did not become ready; the restart stopped there.
    #[error(
        "the restart of `{server}` stopped: the replacement for {instance} did not become \
         ready: {source}; {}",
        restart_left(*.in_place, .instance)
    )]
    RestartStopped {
        /// The server restarted.
        server: String,
        /// The instance the replacement was for.
        instance: String,
        /// Whether that instance had been stopped first (a fixed port): it is not running.
        in_place: bool,
        /// Why the replacement is not ready.
        source: Box<EngineError>,
    },
    /// `mcpfleet abort` (or an admin token's holder) ended a canary.
    #[error("aborted by {}", by.as_deref().unwrap_or("`mcpfleet abort`"))]
    CanaryAbortedByCommand {
        /// Who asked (`admin:ops`), when not the admin socket.
        by: Option<String>,
    },
    /// Canary analysis failed `failure_limit` intervals in a row.
    #[error("analysis failed {failures} times in a row: {reason}")]
    AnalysisFailed {
        /// Failed intervals in a row.
        failures: u32,
        /// Why the last one failed.
        reason: String,
    },
    /// `promote`, `abort`, `pause` or `resume` of a server with no rollout in progress.
    #[error("`{0}` has no rollout in progress (see `mcpfleet status`)")]
    NoRollout(String),
    /// The rollout ended before it took a command sent to it.
    #[error("the rollout of `{0}` ended before it took the command")]
    RolloutEnded(String),
}

/// What a stopped restart left running.
fn restart_left(in_place: bool, instance: &str) -> String {
    if in_place {
        format!("{instance} stopped and is not running")
    } else {
        "the instances not yet replaced keep serving".to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Status reasons, events and CLI answers show these sentences; scripts and the
    /// end-to-end tests read them.
    #[test]
    fn the_sentences_users_read_are_unchanged() {
        let cases = [
            (EngineError::Aborted, "the deployment was aborted"),
            (EngineError::ShuttingDown, "the control plane is stopping"),
            (
                EngineError::DependencyDown {
                    server: "db".into(),
                    state: ServerState::CrashLooping,
                },
                "dependency `db` is crash-looping",
            ),
            (
                EngineError::PortInUse(8080),
                "port 8080 is already in use by another program; stop it, choose another \
                 `port:`, or remove `port:` to let mcpfleet allocate one",
            ),
            (
                EngineError::NotServing("search".into()),
                "`search` has no revision serving (see `mcpfleet status`)",
            ),
            (
                EngineError::NoRollout("search".into()),
                "`search` has no rollout in progress (see `mcpfleet status`)",
            ),
            (
                EngineError::AnalysisFailed {
                    failures: 3,
                    reason: "error rate 0.5 above 0.1".into(),
                },
                "analysis failed 3 times in a row: error rate 0.5 above 0.1",
            ),
            (
                EngineError::CanaryAbortedByCommand { by: None },
                "aborted by `mcpfleet abort`",
            ),
            (
                EngineError::CanaryAbortedByCommand {
                    by: Some("admin:ops".into()),
                },
                "aborted by admin:ops",
            ),
        ];
        for (error, text) in cases {
            assert_eq!(error.to_string(), text);
        }
    }

    #[test]
    fn a_rollback_that_cannot_bring_a_revision_back_says_which_and_why() {
        let why = EngineError::CannotStartAgain {
            revision: 4,
            source: Box::new(EngineError::ShuttingDown),
        };
        assert_eq!(
            why.to_string(),
            "cannot start revision 4 again: the control plane is stopping"
        );
        let why = EngineError::DidNotComeBack {
            revision: 4,
            source: Box::new(EngineError::NotReady("mcp check failed: timed out".into())),
        };
        assert_eq!(
            why.to_string(),
            "revision 4 did not come back: mcp check failed: timed out"
        );
    }

    #[test]
    fn a_stopped_restart_says_what_still_serves() {
        let stopped = |in_place| EngineError::RestartStopped {
            server: "search".into(),
            instance: "search-r2-1".into(),
            in_place,
            source: Box::new(EngineError::NotReady(
                "exited (exit code 1) before it was ready".into(),
            )),
        };
        assert_eq!(
            stopped(false).to_string(),
            "the restart of `search` stopped: the replacement for search-r2-1 did not become \
             ready: exited (exit code 1) before it was ready; the instances not yet replaced \
             keep serving"
        );
        assert_eq!(
            stopped(true).to_string(),
            "the restart of `search` stopped: the replacement for search-r2-1 did not become \
             ready: exited (exit code 1) before it was ready; search-r2-1 stopped and is not \
             running"
        );
    }
}
