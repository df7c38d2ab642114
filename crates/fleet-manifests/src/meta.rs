//! Names, labels and annotations: what every rendered object carries so that mcpfleet,
//! kubectl users and policies can tell whose it is.

use crate::Options;
use crate::problem::Problem;
use fleet_spec::ValidFleet;
use fleet_spec::model::Kubernetes;
use serde_json::{Map, Value, json};

pub(crate) const NAME: &str = "app.kubernetes.io/name";
pub(crate) const COMPONENT: &str = "app.kubernetes.io/component";
const MANAGED_BY: &str = "app.kubernetes.io/managed-by";
pub(crate) const FLEET: &str = "mcpfleet.io/fleet";
pub(crate) const SERVER: &str = "mcpfleet.io/server";
pub(crate) const REVISION: &str = "mcpfleet.io/revision";
/// On a per-session server's pods: a session takes a pod by setting it to another value,
/// which moves it out of the Deployment's selector; the ReplicaSet refills the pool.
pub(crate) const POOL: &str = "mcpfleet.io/pool";
const DEPLOYMENT: &str = "mcpfleet.io/deployment";
/// On the control plane's pods with the store in PostgreSQL: `leader` on the one that
/// holds the lease (the control plane sets it), which its Service selects.
pub(crate) const ROLE: &str = "mcpfleet.io/role";

/// The fleet being rendered and what every object's metadata is made from.
#[derive(Debug)]
pub(crate) struct Names<'a> {
    pub(crate) fleet: &'a ValidFleet,
    pub(crate) options: &'a Options,
}

impl<'a> Names<'a> {
    /// Also records a problem when the namespace is not a valid name: the fleet file
    /// checks it only for a fleet it knows is for Kubernetes.
    pub(crate) fn new(
        fleet: &'a ValidFleet,
        options: &'a Options,
        problems: &mut Vec<Problem>,
    ) -> Self {
        if !fleet_spec::is_dns_label(&fleet.kubernetes.namespace) {
            problems.push(Problem::Namespace {
                namespace: fleet.kubernetes.namespace.clone(),
            });
        }
        Names { fleet, options }
    }

    pub(crate) fn namespace(&self) -> &str {
        &self.fleet.kubernetes.namespace
    }

    /// The Kubernetes Secret and key that hold the fleet's secret `name`: as the file maps
    /// it, else key `name` of `<fleet>-secrets`.
    pub(crate) fn secret_key(&self, name: &str) -> (String, String) {
        match self.fleet.kubernetes.secrets.get(name) {
            Some(secret) => (secret.secret.clone(), secret.key.clone()),
            None => (
                Kubernetes::default_secret(&self.fleet.name),
                name.to_owned(),
            ),
        }
    }

    /// The labels of a fleet-wide object (`name` is its `app.kubernetes.io/name`).
    pub(crate) fn labels(&self, name: &str) -> Map<String, Value> {
        let mut labels = Map::new();
        labels.insert(NAME.into(), name.into());
        labels.insert(MANAGED_BY.into(), "mcpfleet".into());
        labels.insert(FLEET.into(), self.fleet.name.clone().into());
        labels
    }

    /// A fleet-wide object: `body`'s keys (`spec`, `data`, …) beside its metadata.
    pub(crate) fn object(&self, api: &str, kind: &str, name: &str, body: Value) -> Value {
        self.labelled(api, kind, name, self.labels("mcpfleet"), body)
    }

    /// An object with these labels; namespaced unless it is the namespace itself.
    pub(crate) fn labelled(
        &self,
        api: &str,
        kind: &str,
        name: &str,
        labels: Map<String, Value>,
        body: Value,
    ) -> Value {
        let mut metadata = json!({ "name": name, "labels": labels });
        if kind != "Namespace" {
            metadata["namespace"] = self.namespace().into();
        }
        if let Some(deployment) = self.options.deployment {
            metadata["annotations"] = json!({ DEPLOYMENT: deployment.to_string() });
        }
        let mut object = json!({ "apiVersion": api, "kind": kind, "metadata": metadata });
        if let (Some(object), Value::Object(body)) = (object.as_object_mut(), body) {
            object.extend(body);
        }
        object
    }
}

/// An RFC 1035 label: what a Service's name must be, and so (for one rule everywhere) every
/// name rendered from a server's: lowercase letters, digits and `-`, starting with a letter
/// and ending with a letter or digit, at most 63 characters.
pub(crate) fn is_dns_label(name: &str) -> bool {
    fleet_spec::is_dns_label(name) && name.starts_with(|c: char| c.is_ascii_lowercase())
}
