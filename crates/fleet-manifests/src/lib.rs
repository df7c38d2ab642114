//! A validated fleet as Kubernetes manifests.
//!
//! Owns: turning a [`ValidFleet`] (its environment overlay already applied) into the
//! Kubernetes objects that run it, as `serde_json::Value`s in apply order ([`render`]) —
//! the namespace and its default-deny policy, the control plane's RBAC, ConfigMap, volume
//! (of its state, or of its backups when the state is in PostgreSQL), Deployment, Service
//! (and PodDisruptionBudget with the state in PostgreSQL),
//! backup CronJob and optional Ingress and ServiceMonitor, a quota, gateway replicas
//! (`kubernetes.gateway_replicas`: Deployment, Service, NetworkPolicy, autoscaler, budget),
//! and per image server a Deployment, Service, PodDisruptionBudget, NetworkPolicy and
//! HorizontalPodAutoscaler — plus the YAML they are written as ([`yaml`]) and the file each goes
//! to ([`file_names`]). Every pod template meets the "restricted" Pod Security Standard and
//! secrets are referenced, never copied: nothing here reads a secret's value.
//!
//! Does not own: talking to a cluster (applying, waiting for rollouts, preflight checks),
//! nor deciding what the file means (`fleet-spec`). Pure: no I/O, no Kubernetes client
//! types; tests check the objects against the official schemas instead.

mod control_plane;
mod gateway;
mod meta;
mod pod;
mod problem;
mod server;
pub mod yaml;

pub use problem::{Problem, RenderError};
pub use server::DEFAULT_HTTP_PORT;

use fleet_spec::ValidFleet;
use fleet_spec::model::Quota;
use meta::Names;
use serde_json::{Value, json};

/// What the fleet file does not say about its manifests.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Options {
    /// The fleet file's text, which the control plane reads from its ConfigMap.
    pub fleet_file: String,
    /// The deployment these manifests carry out, when mcpfleet applies them itself:
    /// written on every object as the `mcpfleet.io/deployment` annotation.
    pub deployment: Option<u64>,
}

impl Options {
    /// Manifests of `fleet_file`, outside any deployment.
    pub fn new(fleet_file: impl Into<String>) -> Self {
        Options {
            fleet_file: fleet_file.into(),
            deployment: None,
        }
    }
}

/// The objects that run `fleet` on Kubernetes, in the order they are applied: the
/// namespace first, its policies before any pod, servers before the control plane that
/// talks to them. Remote servers render nothing: the control plane reaches them as before.
///
/// # Errors
/// Every server (and the fleet itself) that cannot run on a cluster, with why and where:
/// a local program (`command:`), a name Kubernetes does not accept, a host-path volume, a
/// root user, or a string that needs a value only a local instance has; a gateway that
/// the rendered control plane could not serve on its pod's network
/// ([`pod_network_problems`]); a PostgreSQL state store whose URL reads a secret from
/// a file, which the control plane's pod does not get; and gateway replicas without the
/// shared store or session keys they need, or with a session key read from a file.
pub fn render(fleet: &ValidFleet, options: &Options) -> Result<Vec<Value>, RenderError> {
    let mut problems = pod_network_problems(fleet);
    problems.extend(control_plane::state_problems(fleet));
    problems.extend(gateway::problems(fleet));
    render_checked(fleet, options, problems)
}

/// Why the control plane could not serve `fleet`'s gateway on a pod's network (`mcpfleet
/// up --pod-network`, what the rendered control plane runs): there its clients are every
/// pod and, through the Service or Ingress, whoever reaches those — so, as for a
/// `gateway.listen` beyond loopback, the gateway needs bearer tokens and TLS (served by it,
/// or ended by a proxy in front, `terminated_by: proxy`).
pub fn pod_network_problems(fleet: &ValidFleet) -> Vec<Problem> {
    let span = fleet.gateway.listen_span;
    let mut problems = Vec::new();
    if fleet.gateway.tokens.is_empty() {
        problems.push(Problem::GatewayWithoutTokens { span });
    }
    if fleet.gateway.tls.is_none() {
        problems.push(Problem::GatewayWithoutTls { span });
    }
    problems
}

/// The names the rendered control plane's gateway (and its gateway replicas') is reached
/// by, which it accepts as the `Host` of a request on its pod's network besides
/// loopback's: its Service's DNS names (`mcpfleet`, `mcpfleet.<namespace>`, `….svc`,
/// `….svc.cluster.local`), with gateway replicas theirs (`mcpfleet-gateway`, …), and the
/// Ingress's host — the control plane's first: the leader tells replicas to relay stdio
/// servers to the first `.svc` name (its own Service).
pub fn gateway_hosts(fleet: &ValidFleet) -> Vec<String> {
    let namespace = &fleet.kubernetes.namespace;
    let mut services = vec![control_plane::NAME];
    if fleet.kubernetes.gateway_replicas.is_some() {
        services.push(gateway::NAME);
    }
    let mut hosts: Vec<String> = (services.into_iter())
        .flat_map(|service| {
            [
                service.to_owned(),
                format!("{service}.{namespace}"),
                format!("{service}.{namespace}.svc"),
                format!("{service}.{namespace}.svc.cluster.local"),
            ]
        })
        .collect();
    hosts.extend(fleet.kubernetes.ingress.iter().map(|i| i.host.clone()));
    hosts
}

/// The label the leading control plane's pod carries when the store is in PostgreSQL
/// (the control plane puts it on its own pod when it takes the lease): what the rendered
/// control plane Service selects besides the pods' labels.
pub const LEADER_LABEL: (&str, &str) = (meta::ROLE, control_plane::LEADER);

/// The label selector (`k=v,…`) of the pods of fleet `fleet`'s control plane.
pub fn control_plane_pods(fleet: &str) -> String {
    (control_plane::pods_of(fleet).iter())
        .map(|(key, value)| format!("{key}={}", value.as_str().unwrap_or_default()))
        .collect::<Vec<_>>()
        .join(",")
}

/// [`render`] after `problems` of the fleet as a whole.
fn render_checked(
    fleet: &ValidFleet,
    options: &Options,
    mut problems: Vec<Problem>,
) -> Result<Vec<Value>, RenderError> {
    let names = Names::new(fleet, options, &mut problems);
    let servers: Vec<_> = fleet
        .servers
        .iter()
        .filter_map(|server| server::render(&names, server, &mut problems))
        .collect();
    if !problems.is_empty() {
        return Err(RenderError { problems });
    }
    let mut objects = vec![names.object("v1", "Namespace", names.namespace(), json!({}))];
    if let Some(quota) = &fleet.kubernetes.quota {
        objects.extend(quota_objects(&names, quota));
    }
    objects.extend([
        control_plane::service_account(&names),
        control_plane::role(&names),
        control_plane::role_binding(&names),
        default_deny(&names),
    ]);
    objects.extend(servers.into_iter().flatten());
    objects.extend(control_plane::objects(&names));
    // After the control plane they relay stdio servers to and report their traffic to.
    objects.extend(gateway::objects(&names));
    Ok(objects)
}

/// The Deployment that runs revision `revision` of image server `server` under the
/// Kubernetes runtime: named `<server>-r<revision>`, with `mcpfleet.io/revision:
/// "<revision>"` in its labels and its selector (so that two revisions of a server, a
/// canary and its baseline, never pick each other's pods), `options.deployment` as its
/// `mcpfleet.io/deployment` annotation, and the very pod template [`render`] writes —
/// hardened, secrets by reference only. `spec.replicas` is left out: the runtime sets it to
/// the instances it runs of that revision.
///
/// `revision` is the state store's revision number the runtime is given, where `render`
/// (which has no store) labels with the server's content hash.
///
/// # Errors
/// What [`render`] says about this server (or the fleet's namespace); an unknown or remote
/// server is [`Problem::NotInCluster`].
pub fn revision_deployment(
    fleet: &ValidFleet,
    server: &str,
    revision: u64,
    options: &Options,
) -> Result<Value, RenderError> {
    let mut problems = Vec::new();
    let names = Names::new(fleet, options, &mut problems);
    let Some(found) = fleet.server(server) else {
        return Err(RenderError {
            problems: vec![Problem::NotInCluster {
                server: server.to_owned(),
            }],
        });
    };
    let pods = server::pods(&names, found, &mut problems);
    match pods {
        Some(pods) if problems.is_empty() => {
            let shape = server::Shape {
                name: format!("{server}-r{revision}"),
                revision: revision.to_string(),
                per_revision: true,
                replicas: None,
            };
            Ok(server::deployment(&names, found, &pods, &shape))
        }
        // A remote server has no pods and no problem of its own.
        None if problems.is_empty() => Err(RenderError {
            problems: vec![Problem::NotInCluster {
                server: server.to_owned(),
            }],
        }),
        _ => Err(RenderError { problems }),
    }
}

/// Whether mcpfleet can run `fleet`'s servers on its cluster itself (`up`, `deploy` with
/// the Kubernetes runtime): everything [`render`] needs of them. stdio servers run too:
/// the runtime attaches to their pods' stdin and stdout. The gateway is not asked about:
/// a control plane outside the cluster serves it where the file says, and one in a pod
/// checks [`pod_network_problems`] itself.
///
/// # Errors
/// Every reason at once, located at its server, as [`render`] reports them.
pub fn check_runnable(fleet: &ValidFleet) -> Result<(), RenderError> {
    render_checked(fleet, &Options::new(String::new()), Vec::new()).map(drop)
}

/// The namespace's budget, and the defaults that let a container that requests nothing
/// in under it (a quota on CPU or memory refuses pods that do not say what they use).
fn quota_objects(names: &Names<'_>, quota: &Quota) -> [Value; 2] {
    let mut hard = serde_json::Map::new();
    if let Some(millis) = quota.cpu_millis {
        let cpu = pod::millis_quantity(millis);
        hard.insert("limits.cpu".into(), cpu.clone().into());
        hard.insert("requests.cpu".into(), cpu.into());
    }
    if let Some(bytes) = quota.memory {
        let memory = pod::memory_quantity(bytes);
        hard.insert("limits.memory".into(), memory.clone().into());
        hard.insert("requests.memory".into(), memory.into());
    }
    if let Some(pods) = quota.pods {
        hard.insert("pods".into(), pods.to_string().into());
    }
    let defaults = json!({
        "cpu": pod::millis_quantity(pod::DEFAULT_CPU_MILLIS),
        "memory": pod::memory_quantity(pod::DEFAULT_MEMORY),
    });
    [
        names.object(
            "v1",
            "ResourceQuota",
            "mcpfleet-quota",
            json!({ "spec": { "hard": hard } }),
        ),
        names.object(
            "v1",
            "LimitRange",
            "mcpfleet-limits",
            json!({ "spec": { "limits": [{
                "default": defaults,
                "defaultRequest": defaults,
                "type": "Container",
            }] } }),
        ),
    ]
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
