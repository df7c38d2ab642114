//! Which of the control plane's pods leads, as a label on the pods: the control plane's
//! Service selects it, so that clients and Prometheus reach the leader and never a standby.
//!
//! The control plane in a pod takes its own pod's label off as it starts (it stands by
//! until it leads: a leader killed with `kill -9` is restarted by the kubelet in the same
//! pod, label and all) and, once it holds the lease, takes the label off every other pod of
//! the control plane that still carries it (a leader stopped or killed keeps it) and puts
//! it on its own pod.

use crate::{ApiError, Cluster};
use k8s_openapi::api::core::v1::Pod;
use kube::api::{Api, ListParams, Patch, PatchParams};
use serde_json::json;

/// The label of the leading control plane's pod, on the pods of one control plane.
#[derive(Debug, Clone)]
pub struct LeaderLabel {
    pods: Api<Pod>,
    cluster: Cluster,
    namespace: String,
    pod: String,
    peers: String,
    key: String,
    value: String,
}

impl LeaderLabel {
    /// The label `key: value` on pod `pod` of `namespace` when it leads; `peers` is the
    /// label selector of every pod of its control plane (`k=v,k2=v2`). Sends nothing yet.
    pub fn new(
        cluster: Cluster,
        namespace: &str,
        pod: &str,
        peers: &str,
        label: (&str, &str),
    ) -> Self {
        LeaderLabel {
            pods: Api::namespaced(cluster.client.clone(), namespace),
            cluster,
            namespace: namespace.to_owned(),
            pod: pod.to_owned(),
            peers: peers.to_owned(),
            key: label.0.to_owned(),
            value: label.1.to_owned(),
        }
    }

    /// Takes the label off this pod: a control plane that starts is a standby until it
    /// leads.
    ///
    /// # Errors
    /// [`ApiError`]: the API server unreachable, the pod gone, the patch refused.
    pub async fn stand_by(&self) -> Result<(), ApiError> {
        self.set(&self.pod, false).await
    }

    /// Takes the label off every other pod of the control plane that carries it, then
    /// puts it on this pod: the Service never has two leaders at once, at worst none for
    /// a moment.
    ///
    /// # Errors
    /// [`ApiError`]: the API server unreachable, the patch or list refused.
    pub async fn lead(&self) -> Result<(), ApiError> {
        let labelled =
            ListParams::default().labels(&format!("{},{}={}", self.peers, self.key, self.value));
        let stale = self
            .pods
            .list(&labelled)
            .await
            .map_err(|e| self.cluster.api_error(e))?;
        for pod in stale.items {
            let Some(name) = pod.metadata.name else {
                continue;
            };
            if name != self.pod {
                tracing::info!(
                    "pod {}/{name} led before: its `{}` label comes off",
                    self.namespace,
                    self.key
                );
                self.set(&name, false).await?;
            }
        }
        self.set(&self.pod, true).await
    }

    /// Puts the label on pod `name` (`on`) or takes it off: a JSON merge patch, which
    /// touches no other label. A pod already gone has no label to take off.
    async fn set(&self, name: &str, on: bool) -> Result<(), ApiError> {
        let value = on.then_some(self.value.as_str());
        let patch = json!({ "metadata": { "labels": { self.key.as_str(): value } } });
        match self
            .pods
            .patch(name, &PatchParams::default(), &Patch::Merge(&patch))
            .await
        {
            Ok(_) => Ok(()),
            Err(kube::Error::Api(status)) if status.code == 404 && !on => Ok(()),
            Err(e) => Err(self.cluster.api_error(e)),
        }
    }
}
