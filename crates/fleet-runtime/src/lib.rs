//! Runtimes: where mcpfleet instances actually run.
//!
//! This crate owns the [`Runtime`] trait — start an instance of a server revision, stop it
//! (graceful, then forced), restart it, report its lifecycle and status — and its
//! implementations. Today that is [`process`], the local process supervisor: argv arrays (never
//! a shell), a process group per instance, rotating log files, restart policies with
//! exponential backoff and an explicit crash-looping state, and pidfiles that let a restarted
//! control plane reap what a killed one left behind.
//!
//! It deliberately does not own:
//! - *what* to run: the engine renders a [`fleet_spec::model::Server`] into an [`InstanceSpec`]
//!   (templates, secrets, ports, relative paths are resolved before they get here);
//! - *when* to run it: waves, rollouts and health verdicts belong to the engine;
//! - the MCP protocol: for stdio servers the runtime hands the pipes ([`StdioPipes`]) to the
//!   caller and never reads or writes a protocol byte;
//! - health checks beyond "the process is alive" (fleet-mcp's probes do that).
//!
//! Later: a `container` module (Docker Engine API) and a `fleet-runtime-kube` crate.

mod error;
mod instance;
pub mod process;

pub use error::{RuntimeError, StartError};
pub use instance::{
    ExitInfo, Instance, InstanceId, InstanceIo, InstanceSpec, InstanceState, InstanceStatus,
    Lifecycle, StdioPipes,
};
pub use process::{
    LogRotation, ProcessRuntime, ReapOutcome, Reaped, follow_log, log_path, reap_leftovers,
};

use std::future::Future;

/// Starts, stops and watches instances. The engine is generic over it (no `dyn`).
///
/// Every instance reports what happens to it, in order, on the [`Instance::events`] channel
/// returned by [`start`](Runtime::start): see [`Lifecycle`] for the sequence.
pub trait Runtime: Send + Sync {
    /// Starts a new instance and supervises it until [`stop`](Runtime::stop).
    ///
    /// The first event on the returned channel is [`Lifecycle::Running`] (the first spawn
    /// happens before this returns, so a broken spec fails here, not later).
    ///
    /// # Errors
    ///
    /// [`StartError`] when the id is invalid or already in use, the program or working
    /// directory does not exist, or the runtime's state directory is not writable. Nothing
    /// keeps running after an error.
    fn start(
        &self,
        spec: InstanceSpec,
    ) -> impl Future<Output = Result<Instance, StartError>> + Send;

    /// Stops an instance: gracefully, then by force, including every process it started.
    /// Returns when nothing of it runs any more. The last event is [`Lifecycle::Stopped`],
    /// after which the id is forgotten.
    ///
    /// Idempotent: stopping an instance that is stopping waits for the same stop; stopping an
    /// id the runtime does not know (never started, or already stopped) succeeds at once.
    ///
    /// # Errors
    ///
    /// Reserved for runtimes whose stop can fail (a container API); the process runtime
    /// always succeeds.
    fn stop(&self, id: &InstanceId) -> impl Future<Output = Result<(), RuntimeError>> + Send;

    /// Kills an instance now and starts it again — what a failed liveness check asks for.
    /// Counts as a failed start for backoff and crash-loop detection. Returns once the old
    /// process is gone (the new one starts after the backoff delay).
    ///
    /// On an instance that is backing off this does nothing (a start is already coming); on
    /// one that is crash-looping or has exited for good it starts afresh, with the failure
    /// count reset — an explicit restart is an operator's decision to try again.
    ///
    /// # Errors
    ///
    /// [`RuntimeError::NotFound`] for an unknown id, [`RuntimeError::Stopping`] when the
    /// instance is being stopped.
    fn restart(&self, id: &InstanceId) -> impl Future<Output = Result<(), RuntimeError>> + Send;

    /// A snapshot of every instance the runtime knows, sorted by id.
    fn statuses(&self) -> Vec<InstanceStatus>;

    /// Deletes the logs of a stopped instance nobody will ask about again (a
    /// per-session process whose session ended): a stream of short-lived sessions must
    /// not fill the disk with their files. Missing logs are not an error.
    fn discard_logs(&self, id: &InstanceId) -> impl Future<Output = ()> + Send;
}
