//! The runtime of one machine: processes, and containers of the machine's container engine,
//! side by side in one fleet.
//!
//! Each instance goes where its [`Launch`] says. The container engine is connected when
//! first needed — the first container start, or [`connect_containers`](LocalRuntime::connect_containers)
//! for a fleet that has image servers — so a fleet of processes never needs an engine.
//! Both runtimes write their instances' logs to the same files under the state directory,
//! so logs are read by id without asking which runtime ran the instance.

use crate::Runtime;
use crate::container::ContainerRuntime;
use crate::error::{ConnectError, RuntimeError, StartError};
use crate::instance::{
    Discovered, Instance, InstanceId, InstanceSpec, InstanceStatus, Launch, Reaped,
};
use crate::process::ProcessRuntime;
use futures::stream::BoxStream;
use std::collections::HashSet;
use std::sync::Arc;
use tokio::sync::OnceCell;

/// Processes and containers on this machine. Cheap to clone; clones share the instances.
#[derive(Debug, Clone)]
pub struct LocalRuntime {
    fleet: String,
    processes: ProcessRuntime,
    containers: Arc<OnceCell<ContainerRuntime>>,
}

impl LocalRuntime {
    /// Runs the instances of fleet `fleet`, keeping logs and records under the process
    /// runtime's state directory.
    pub fn new(fleet: &str, processes: ProcessRuntime) -> Self {
        LocalRuntime {
            fleet: fleet.to_owned(),
            processes,
            containers: Arc::new(OnceCell::new()),
        }
    }

    /// The container runtime, connected to the engine found from the environment on the
    /// first call (a failed attempt is tried again on the next call).
    ///
    /// # Errors
    /// No engine answers, or the fleet's name cannot name containers.
    pub async fn connect_containers(&self) -> Result<&ContainerRuntime, ConnectError> {
        self.containers
            .get_or_try_init(|| {
                ContainerRuntime::connect(&self.fleet, self.processes.state_dir().to_path_buf())
            })
            .await
    }

    /// The container runtime, if it is connected.
    fn containers(&self) -> Option<&ContainerRuntime> {
        self.containers.get()
    }

    /// The container runtime, connected if an engine answers: to look for leftovers, which a
    /// fleet may have although its file has no image server any more. No engine is no
    /// leftover.
    async fn reachable_containers(&self) -> Option<&ContainerRuntime> {
        match self.connect_containers().await {
            Ok(containers) => Some(containers),
            Err(e) => {
                tracing::debug!("no container leftovers to look for: {e}");
                None
            }
        }
    }
}

impl Runtime for LocalRuntime {
    async fn start(&self, spec: InstanceSpec) -> Result<Instance, StartError> {
        match spec.launch {
            Launch::Process { .. } => self.processes.start(spec).await,
            Launch::Container(_) => self.connect_containers().await?.start(spec).await,
            Launch::Pod(_) => Err(wrong_runtime(&spec)),
        }
    }

    async fn stop(&self, id: &InstanceId) -> Result<(), RuntimeError> {
        // Each runtime stops an id it does not know at once.
        self.processes.stop(id).await?;
        match self.containers() {
            Some(containers) => containers.stop(id).await,
            None => Ok(()),
        }
    }

    async fn restart(&self, id: &InstanceId) -> Result<(), RuntimeError> {
        match (self.processes.restart(id).await, self.containers()) {
            (Err(RuntimeError::NotFound { .. }), Some(containers)) => containers.restart(id).await,
            (result, _) => result,
        }
    }

    fn statuses(&self) -> Vec<InstanceStatus> {
        let mut all = self.processes.statuses();
        if let Some(containers) = self.containers() {
            all.extend(containers.statuses());
            all.sort_by(|a, b| a.id.cmp(&b.id));
        }
        all
    }

    async fn discard_logs(&self, id: &InstanceId) {
        // The same files for both runtimes.
        self.processes.discard_logs(id).await;
    }

    /// Processes from pidfiles, and the fleet's labelled containers when an engine answers.
    async fn discover(&self) -> Vec<Discovered> {
        let mut found = self.processes.discover().await;
        if let Some(containers) = self.reachable_containers().await {
            found.extend(containers.discover().await);
            found.sort_by(|a, b| a.id.cmp(&b.id));
        }
        found
    }

    async fn adopt(&self, spec: InstanceSpec) -> Result<Instance, StartError> {
        match spec.launch {
            Launch::Process { .. } => self.processes.adopt(spec).await,
            Launch::Container(_) => self.connect_containers().await?.adopt(spec).await,
            Launch::Pod(_) => Err(wrong_runtime(&spec)),
        }
    }

    /// Processes from pidfiles, and the fleet's labelled containers when an engine answers.
    async fn reap_leftovers(&self, spare: &HashSet<InstanceId>) -> Vec<Reaped> {
        let mut reaped = self.processes.reap_leftovers(spare).await;
        if let Some(containers) = self.reachable_containers().await {
            reaped.extend(containers.reap_leftovers(spare).await);
        }
        reaped
    }

    fn logs(&self, id: &InstanceId, lines: usize, follow: bool) -> BoxStream<'static, String> {
        // The same files for both runtimes.
        self.processes.logs(id, lines, follow)
    }
}

/// A pod is the Kubernetes runtime's to start.
fn wrong_runtime(spec: &InstanceSpec) -> StartError {
    StartError::WrongRuntime {
        id: spec.id.clone(),
        launch: spec.launch.kind(),
        runtime: "local",
    }
}
