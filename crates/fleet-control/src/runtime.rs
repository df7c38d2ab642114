//! The runtime a control plane runs its fleet's engine on, as the fleet file's `runtime:`
//! says: this machine's processes and containers, or pods of a Kubernetes cluster. One
//! type for both, so that the engine, the deployer and the admin API have one code path
//! whichever runs the servers.

use fleet_runtime::{
    Discovered, Instance, InstanceId, InstanceSpec, InstanceStatus, LocalRuntime, ProcessRuntime,
    Reaped, Runtime, RuntimeError, StartError,
};
use fleet_runtime_kube::{Cluster, ClusterAccess, ConnectError, KubeRuntime, KubeSettings};
use fleet_spec::model::{RuntimeKind, ValidFleet};
use futures::stream::BoxStream;
use std::collections::HashSet;
use std::path::Path;
use std::sync::Arc;

/// The fleet's runtime. Cheap to clone; clones share the instances.
#[derive(Debug, Clone)]
pub enum FleetRuntime {
    /// Processes and containers on this machine.
    Local(LocalRuntime),
    /// Pods of a Deployment per server revision, in the fleet's namespace.
    Kubernetes(Arc<KubeRuntime>),
}

impl FleetRuntime {
    /// The runtime `fleet` asks for. On Kubernetes: the cluster of the kubeconfig (its
    /// `kubernetes.context`, else the current one) — or, in a pod without a kubeconfig,
    /// the pod's own cluster through its service account — and the fleet's namespace,
    /// which must exist. Nothing is sent to the cluster yet.
    ///
    /// # Errors
    /// No kubeconfig, an unknown context, an unusable kubeconfig (see [`ConnectError`]).
    pub async fn for_fleet(fleet: &ValidFleet, state_dir: &Path) -> Result<Self, ConnectError> {
        match fleet.runtime {
            RuntimeKind::Local => Ok(FleetRuntime::Local(LocalRuntime::new(
                &fleet.name,
                ProcessRuntime::new(state_dir.to_path_buf()),
            ))),
            RuntimeKind::Kubernetes => {
                let access = cluster_access(fleet);
                let settings = KubeSettings {
                    reach: fleet.kubernetes.reach.unwrap_or(access.default_reach()),
                    // The same deadline the Deployment's rollout has.
                    ready_timeout: fleet.kubernetes.progress_deadline(),
                    ..KubeSettings::default()
                };
                let cluster = Cluster::connect(&access).await?;
                Ok(FleetRuntime::Kubernetes(Arc::new(KubeRuntime::new(
                    cluster,
                    &fleet.name,
                    &fleet.kubernetes.namespace,
                    settings,
                ))))
            }
        }
    }

    /// The local runtime, when the fleet runs on this machine.
    pub fn local(&self) -> Option<&LocalRuntime> {
        match self {
            FleetRuntime::Local(local) => Some(local),
            FleetRuntime::Kubernetes(_) => None,
        }
    }
}

/// Why a `runtime: kubernetes` fleet cannot start on its cluster, as one line: which
/// fleet, namespace and cluster, what is wrong and what to do.
#[derive(Debug, thiserror::Error)]
#[error("cannot run fleet `{fleet}` in namespace `{namespace}` of {cluster}: {problem}")]
pub struct ClusterUnusable {
    /// The fleet's name.
    pub fleet: String,
    /// The fleet's namespace.
    pub namespace: String,
    /// Which cluster: `context `NAME``, or this pod's.
    pub cluster: String,
    /// What is wrong, and what to do.
    pub problem: String,
}

/// Whether `fleet`'s cluster can take it, asked before anything is created: on
/// Kubernetes the kubeconfig is usable, the API server answers the credentials, and the
/// fleet's namespace exists (`render` writes it; `file` and `environment` are how the
/// fleet was read, for the command that renders it). A local fleet always can.
///
/// # Errors
/// [`ClusterUnusable`]: a kubeconfig missing or broken, an unknown context, an API server
/// unreachable or refusing the credentials, a namespace that does not exist.
pub async fn check_cluster(
    fleet: &ValidFleet,
    file: &Path,
    environment: Option<&str>,
) -> Result<(), ClusterUnusable> {
    if fleet.runtime != RuntimeKind::Kubernetes {
        return Ok(());
    }
    let access = cluster_access(fleet);
    let namespace = &fleet.kubernetes.namespace;
    let unusable = |cluster: String, problem: String| ClusterUnusable {
        fleet: fleet.name.clone(),
        namespace: namespace.clone(),
        cluster,
        problem,
    };
    let named = |context: Option<&str>| match (&access, context) {
        (ClusterAccess::InCluster, _) => "this pod's cluster (its service account)".to_owned(),
        (ClusterAccess::Kubeconfig { .. }, Some(context)) => format!("context `{context}`"),
        (ClusterAccess::Kubeconfig { .. }, None) => "the kubeconfig's current context".to_owned(),
    };
    let cluster = match Cluster::connect(&access).await {
        Ok(cluster) => cluster,
        Err(error) => {
            let asked = match &access {
                ClusterAccess::Kubeconfig { context, .. } => context.as_deref(),
                ClusterAccess::InCluster => None,
            };
            return Err(unusable(named(asked), error.to_string()));
        }
    };
    match cluster.namespace_missing(namespace).await {
        Ok(false) => Ok(()),
        Ok(true) => {
            let env = environment
                .map(|e| format!(" --env {e}"))
                .unwrap_or_default();
            Err(unusable(
                named(cluster.context()),
                format!(
                    "the namespace does not exist: create it and the control plane's RBAC with \
                     `mcpfleet render kubernetes -f {}{env} | kubectl apply -f -` (or only the \
                     namespace: `kubectl create namespace {namespace}`)",
                    file.display()
                ),
            ))
        }
        Err(error) => Err(unusable(named(cluster.context()), error.to_string())),
    }
}

/// How the control plane reaches its cluster: the kubeconfig `kubectl` would use — unless
/// there is none to name and the process runs in a pod (`KUBERNETES_SERVICE_HOST`, as
/// the rendered control plane Deployment does), then the pod's service account.
fn cluster_access(fleet: &ValidFleet) -> ClusterAccess {
    let in_pod = std::env::var_os("KUBERNETES_SERVICE_HOST").is_some();
    if in_pod && std::env::var_os("KUBECONFIG").is_none() && fleet.kubernetes.context.is_none() {
        ClusterAccess::InCluster
    } else {
        ClusterAccess::Kubeconfig {
            path: None,
            context: fleet.kubernetes.context.clone(),
        }
    }
}

impl Runtime for FleetRuntime {
    async fn start(&self, spec: InstanceSpec) -> Result<Instance, StartError> {
        match self {
            FleetRuntime::Local(local) => local.start(spec).await,
            FleetRuntime::Kubernetes(kube) => kube.start(spec).await,
        }
    }

    async fn stop(&self, id: &InstanceId) -> Result<(), RuntimeError> {
        match self {
            FleetRuntime::Local(local) => local.stop(id).await,
            FleetRuntime::Kubernetes(kube) => kube.stop(id).await,
        }
    }

    async fn restart(&self, id: &InstanceId) -> Result<(), RuntimeError> {
        match self {
            FleetRuntime::Local(local) => local.restart(id).await,
            FleetRuntime::Kubernetes(kube) => kube.restart(id).await,
        }
    }

    fn statuses(&self) -> Vec<InstanceStatus> {
        match self {
            FleetRuntime::Local(local) => local.statuses(),
            FleetRuntime::Kubernetes(kube) => kube.statuses(),
        }
    }

    async fn discard_logs(&self, id: &InstanceId) {
        match self {
            FleetRuntime::Local(local) => local.discard_logs(id).await,
            FleetRuntime::Kubernetes(kube) => kube.discard_logs(id).await,
        }
    }

    async fn discover(&self) -> Vec<Discovered> {
        match self {
            FleetRuntime::Local(local) => local.discover().await,
            FleetRuntime::Kubernetes(kube) => kube.discover().await,
        }
    }

    async fn adopt(&self, spec: InstanceSpec) -> Result<Instance, StartError> {
        match self {
            FleetRuntime::Local(local) => local.adopt(spec).await,
            FleetRuntime::Kubernetes(kube) => kube.adopt(spec).await,
        }
    }

    async fn reap_leftovers(&self, spare: &HashSet<InstanceId>) -> Vec<Reaped> {
        match self {
            FleetRuntime::Local(local) => local.reap_leftovers(spare).await,
            FleetRuntime::Kubernetes(kube) => kube.reap_leftovers(spare).await,
        }
    }

    fn logs(&self, id: &InstanceId, lines: usize, follow: bool) -> BoxStream<'static, String> {
        match self {
            FleetRuntime::Local(local) => local.logs(id, lines, follow),
            FleetRuntime::Kubernetes(kube) => kube.logs(id, lines, follow),
        }
    }
}
