//! A validated fleet as Kubernetes manifests.
//!
//! Owns: turning a [`ValidFleet`] (its environment overlay already applied) into the
//! Kubernetes objects that run it, as `serde_json::Value`s in apply order ([`render`]) —
//! the namespace and its default-deny policy, the control plane's RBAC, ConfigMap, volume,
//! Deployment and Service, and per image server a Deployment, Service, PodDisruptionBudget
//! and NetworkPolicy — plus the YAML they are written as ([`yaml`]) and the file each goes
//! to ([`file_names`]). Every pod template meets the "restricted" Pod Security Standard and
//! secrets are referenced, never copied: nothing here reads a secret's value.
//!
//! Does not own: talking to a cluster (applying, waiting for rollouts, preflight checks),
//! nor deciding what the file means (`fleet-spec`). Pure: no I/O, no Kubernetes client
//! types; tests check the objects against the official schemas instead.

mod control_plane;
mod meta;
mod pod;
mod problem;
mod server;
pub mod yaml;

pub use problem::{Problem, RenderError};

use fleet_spec::ValidFleet;
use meta::Names;
use serde_json::{Value, json};

/// What the fleet file does not say about its manifests.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Options {
    /// The fleet file's text, which the control plane reads from its ConfigMap.
    pub fleet_file: String,
    /// The control plane's image.
    pub image: String,
    /// The deployment these manifests carry out, when mcpfleet applies them itself:
    /// written on every object as the `mcpfleet.io/deployment` annotation.
    pub deployment: Option<u64>,
}

impl Options {
    /// Manifests of `fleet_file` that run [`default_image`], outside any deployment.
    pub fn new(fleet_file: impl Into<String>) -> Self {
        Options {
            fleet_file: fleet_file.into(),
            image: default_image(),
            deployment: None,
        }
    }
}

/// The control plane's image when the fleet names none: this version of mcpfleet, as
/// `cargo xtask image` tags it.
pub fn default_image() -> String {
    format!("mcpfleet:{}", env!("CARGO_PKG_VERSION"))
}

/// The objects that run `fleet` on Kubernetes, in the order they are applied: the
/// namespace first, its policies before any pod, servers before the control plane that
/// talks to them. Remote servers render nothing: the control plane reaches them as before.
///
/// # Errors
/// Every server (and the fleet itself) that cannot run on a cluster, with why and where:
/// a local program (`command:`), a name Kubernetes does not accept, a host-path volume, a
/// root user, or a string that needs a value only a local instance has.
pub fn render(fleet: &ValidFleet, options: &Options) -> Result<Vec<Value>, RenderError> {
    let mut problems = Vec::new();
    let names = Names::new(fleet, options, &mut problems);
    let servers: Vec<_> = fleet
        .servers
        .iter()
        .filter_map(|server| server::render(&names, server, &mut problems))
        .collect();
    if !problems.is_empty() {
        return Err(RenderError { problems });
    }
    let mut objects = vec![
        names.object("v1", "Namespace", names.namespace(), json!({})),
        control_plane::service_account(&names),
        control_plane::role(&names),
        control_plane::role_binding(&names),
        default_deny(&names),
    ];
    objects.extend(servers.into_iter().flatten());
    objects.extend(control_plane::objects(&names));
    Ok(objects)
}

/// The namespace's baseline: no pod talks to or is reached by anything until a policy of
/// its own says so.
fn default_deny(names: &Names<'_>) -> Value {
    names.object(
        "networking.k8s.io/v1",
        "NetworkPolicy",
        "mcpfleet-default-deny",
        json!({
            "spec": {
                "podSelector": {},
                "policyTypes": ["Ingress", "Egress"],
            }
        }),
    )
}

/// The file each object goes to in a manifest directory: its place in apply order, its
/// kind and its name (`00-namespace-tools.yaml`), numbered with as many digits as the
/// last needs, so that `kubectl apply -f DIR` (which reads files in name order) applies
/// them in order.
pub fn file_names(objects: &[Value]) -> Vec<String> {
    let width = objects.len().saturating_sub(1).to_string().len().max(2);
    let field = |object: &Value, key: &str| {
        object
            .pointer(key)
            .and_then(Value::as_str)
            .unwrap_or("object")
            .to_ascii_lowercase()
    };
    objects
        .iter()
        .enumerate()
        .map(|(index, object)| {
            format!(
                "{index:0width$}-{}-{}.yaml",
                field(object, "/kind"),
                field(object, "/metadata/name")
            )
        })
        .collect()
}
