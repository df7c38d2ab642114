//! The kinds mcpfleet renders, with what the API needs to address them (plural, scope),
//! so applying a fleet needs no discovery requests. A kind outside this table is an error
//! naming it: mcpfleet applies only what it renders.

use kube::core::{ApiResource, GroupVersionKind};

/// Whether objects of a kind live in a namespace.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scope {
    /// Addressed under `/namespaces/NS/`.
    Namespaced,
    /// Addressed without a namespace (Namespace itself).
    Cluster,
}

/// One kind mcpfleet renders.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Kind {
    /// `apiVersion` as objects carry it (`apps/v1`, `v1`).
    pub api_version: &'static str,
    /// `kind` as objects carry it.
    pub kind: &'static str,
    /// The resource name in URLs and RBAC rules (`deployments`).
    pub plural: &'static str,
    /// Namespaced or cluster-scoped.
    pub scope: Scope,
}

impl Kind {
    /// The API group (`apps`; empty for the core group), as RBAC rules name it.
    pub fn group(&self) -> &'static str {
        self.api_version
            .rsplit_once('/')
            .map_or("", |(group, _)| group)
    }

    /// The kube resource descriptor for dynamic requests.
    pub fn api_resource(&self) -> ApiResource {
        let (group, version) = self
            .api_version
            .rsplit_once('/')
            .unwrap_or(("", self.api_version));
        ApiResource::from_gvk_with_plural(
            &GroupVersionKind::gvk(group, version, self.kind),
            self.plural,
        )
    }
}

const fn namespaced(api_version: &'static str, kind: &'static str, plural: &'static str) -> Kind {
    Kind {
        api_version,
        kind,
        plural,
        scope: Scope::Namespaced,
    }
}

/// Every kind mcpfleet renders, in no particular order.
pub const RENDERED: &[Kind] = &[
    Kind {
        api_version: "v1",
        kind: "Namespace",
        plural: "namespaces",
        scope: Scope::Cluster,
    },
    namespaced("v1", "ServiceAccount", "serviceaccounts"),
    namespaced("v1", "ConfigMap", "configmaps"),
    namespaced("v1", "Service", "services"),
    namespaced("v1", "PersistentVolumeClaim", "persistentvolumeclaims"),
    namespaced("v1", "ResourceQuota", "resourcequotas"),
    namespaced("v1", "LimitRange", "limitranges"),
    namespaced("rbac.authorization.k8s.io/v1", "Role", "roles"),
    namespaced(
        "rbac.authorization.k8s.io/v1",
        "RoleBinding",
        "rolebindings",
    ),
    namespaced("apps/v1", "Deployment", "deployments"),
    namespaced("policy/v1", "PodDisruptionBudget", "poddisruptionbudgets"),
    namespaced(
        "autoscaling/v2",
        "HorizontalPodAutoscaler",
        "horizontalpodautoscalers",
    ),
    namespaced("networking.k8s.io/v1", "NetworkPolicy", "networkpolicies"),
    namespaced("networking.k8s.io/v1", "Ingress", "ingresses"),
    namespaced("batch/v1", "CronJob", "cronjobs"),
    namespaced(
        "monitoring.coreos.com/v1",
        "ServiceMonitor",
        "servicemonitors",
    ),
];

/// The table entry for an object's `apiVersion` and `kind`, if mcpfleet renders it.
pub fn lookup(api_version: &str, kind: &str) -> Option<&'static Kind> {
    RENDERED
        .iter()
        .find(|k| k.api_version == api_version && k.kind == kind)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn core_and_grouped_kinds_resolve_to_their_urls_parts() {
        let deployment = lookup("apps/v1", "Deployment").unwrap().api_resource();
        assert_eq!(
            (deployment.group.as_str(), deployment.version.as_str()),
            ("apps", "v1")
        );
        assert_eq!(deployment.plural, "deployments");
        let service = lookup("v1", "Service").unwrap();
        assert_eq!(service.group(), "");
        assert_eq!(service.api_resource().api_version, "v1");
        assert!(
            lookup("apps/v1beta1", "Deployment").is_none(),
            "only the rendered version"
        );
    }
}
