//! Runtimes: where mcpfleet instances actually run.
//!
//! This crate owns the [`Runtime`] trait — start an instance of a server revision, stop it
//! (graceful, then forced), restart it, report its lifecycle, where it is reachable and its
//! status, read its logs — and its implementations:
//! - [`process`], the local process supervisor: argv arrays (never a shell), a process group
//!   per instance, rotating log files, restart policies with exponential backoff and an
//!   explicit crash-looping state, and pidfiles that let a restarted control plane reap what
//!   a killed one left behind;
//! - [`container`], containers of a Docker-compatible engine (Docker, Podman) through its
//!   API: the same supervision, backoff and log files, hardened containers, labels instead
//!   of pidfiles.
//!
//! It deliberately does not own:
//! - *what* to run: the engine renders a [`fleet_spec::model::Server`] into an [`InstanceSpec`]
//!   (templates, secrets, ports, relative paths are resolved before they get here);
//! - *when* to run it: waves, rollouts and health verdicts belong to the engine;
//! - the MCP protocol: for stdio servers the runtime hands the caller a
//!   [`StdioAttachment`] and never reads or writes a protocol byte;
//! - health checks beyond "the process is alive" (fleet-mcp's probes do that).
//!
//! The Kubernetes runtime lives in `fleet-runtime-kube` (pods of a Deployment per revision,
//! [`Launch::Pod`]).

pub mod container;
mod error;
mod instance;
mod local;
pub mod process;
mod supervised;

pub use container::{ContainerRuntime, ContainerSettings, EngineEndpoint, Ulimit};
pub use error::{ConnectError, RuntimeError, StartError};
pub use instance::{
    ContainerLaunch, ContainerNetwork, ContainerResources, ContainerSecret, ContainerVolume,
    Discovered, ExitInfo, Instance, InstanceHandle, InstanceId, InstanceIo, InstanceSpec,
    InstanceState, InstanceStatus, Launch, Lifecycle, OutOfMemory, PodLaunch, PullPolicy, Reach,
    ReapOutcome, Reaped, StdioAttachment,
};
pub use local::LocalRuntime;
pub use process::{LogRotation, ProcessRuntime};

use futures::stream::BoxStream;
use std::collections::HashSet;
use std::future::Future;

/// Starts, stops and watches instances. The engine is generic over it (no `dyn`).
///
/// The contract every runtime meets — a process supervisor today; containers and
/// Kubernetes workloads are meant to fit the same shape — so that nothing above it knows
/// which runtime runs:
///
/// - **Events in order.** Every instance reports what happens to it on the
///   [`Instance::events`] channel returned by [`start`](Runtime::start): see [`Lifecycle`]
///   for the sequence. [`Lifecycle::Stopped`] is last.
/// - **Reach, not handles.** [`Lifecycle::Running`] says where the instance is reachable
///   ([`Reach`]): a [`StdioAttachment`] for [`InstanceIo::Stdio`] (boxed byte streams,
///   never the runtime's own pipe types), an address for [`InstanceIo::Listen`] (the one
///   that reaches the instance's port from the control plane, which need not be the port
///   itself). The [`InstanceHandle`] (a pid, a container id) is for status and logs only.
/// - **Closing stdin asks a stdio server to exit**; [`stop`](Runtime::stop) gives it time
///   to do so before forcing it.
/// - **Everything goes.** Stopping an instance stops everything it started (a process
///   group, a container, a pod) before `stop` returns.
/// - **Logs by id.** [`logs`](Runtime::logs) reads an instance's output by its
///   [`InstanceId`], while it runs and after it stopped, until
///   [`discard_logs`](Runtime::discard_logs).
/// - **Ids name the instance for its whole life**, across restarts; they are the engine's
///   (server, revision, replica), so a runtime can tag what it runs with them.
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

    /// The instances of this runtime's fleet that run although this runtime did not start
    /// them: what an earlier control plane left when it was killed, found by the runtime's
    /// own records (pidfiles for processes; labels, for a container runtime). Never one this
    /// runtime supervises, so it does not overlap [`statuses`](Runtime::statuses). Reads
    /// only: nothing is stopped, signalled or forgotten. Each says whether
    /// [`adopt`](Runtime::adopt) could take it over.
    fn discover(&self) -> impl Future<Output = Vec<Discovered>> + Send;

    /// Takes over the instance `spec` names that an earlier control plane started and left
    /// running ([`discover`](Runtime::discover) found it, adoptable) — without restarting
    /// it — and supervises it from now on as if [`start`](Runtime::start) had started it:
    /// the first event is [`Lifecycle::Running`] with where it is reachable, its output goes
    /// to its log again, its exits follow `spec`'s restart policy.
    ///
    /// The caller vouches that `spec` is what the instance was started from (the same
    /// server revision); the runtime checks what it can (the id, the revision, that it
    /// runs).
    ///
    /// # Errors
    ///
    /// [`StartError::NotAdoptable`] when there is nothing to take over: no such instance,
    /// not running, or nothing this runtime can reach any more — a process's pipes (a stdio
    /// server's protocol, every server's output) and a stdio container's attached stdin died
    /// with the control plane that held them. Nothing is stopped or changed then: the caller
    /// starts the instance afresh.
    fn adopt(
        &self,
        spec: InstanceSpec,
    ) -> impl Future<Output = Result<Instance, StartError>> + Send;

    /// Stops what an earlier control plane of this fleet left running — everything
    /// [`discover`](Runtime::discover) finds but the ids in `spare`, and the records of
    /// instances already gone — and forgets their records. Never touches an instance this
    /// runtime supervises. The control plane calls it at start, sparing what it means to
    /// adopt, and once more after its first deployment, sparing nothing: what was not
    /// adopted by then goes.
    fn reap_leftovers(
        &self,
        spare: &HashSet<InstanceId>,
    ) -> impl Future<Output = Vec<Reaped>> + Send;

    /// The output of instance `id` (stderr, and stdout unless it carries the protocol),
    /// line by line, like `tail -n lines` — then, with `follow`, every new line as it is
    /// written, until the stream is dropped (like `tail -F`: a log that does not exist yet
    /// is waited for, a restart or a rotation does not end it). Lines come without their
    /// newline. An instance with no logs yields nothing (or, with `follow`, waits).
    ///
    /// A log that cannot be read yields one line saying so and ends the stream; there is
    /// no error to handle, because whoever reads logs shows them to a person.
    fn logs(&self, id: &InstanceId, lines: usize, follow: bool) -> BoxStream<'static, String>;
}
