//! Gateway replicas (`kubernetes.gateway_replicas`): `mcpfleet gateway` pods beside the
//! control plane, behind a Service of their own that the Ingress routes to — their
//! Deployment, Service, NetworkPolicy and, as the bounds ask, HorizontalPodAutoscaler and
//! PodDisruptionBudget. A replica reads routes, tokens and limits from the PostgreSQL
//! store the leading control plane publishes to, serves any client's session by its sealed
//! id, and relays stdio servers' requests to the leader's gateway (docs/gateway.md,
//! "Replicas").

use crate::control_plane;
use crate::meta::{self, Names};
use crate::pod;
use crate::problem::Problem;
use fleet_spec::ValidFleet;
use fleet_spec::model::{GatewayReplicas, GatewayTls, SecretRef};
use serde_json::{Map, Value, json};

/// The name of the replicas' Deployment, Service and policies.
pub(crate) const NAME: &str = "mcpfleet-gateway";

/// Each replica's CPU, as request and limit. A HorizontalPodAutoscaler measures CPU use as
/// a share of the request, so there must be one; equal to the limit (as for servers), a
/// pod is never scheduled on less than it may use and its percentage means the same on
/// every node. Half a CPU: the gateway relays bytes and checks tokens, it computes
/// nothing, and load is spread by more pods rather than bigger ones.
const CPU_MILLIS: u64 = 500;
/// Each replica's memory, as request and limit: room for its session table (up to
/// `gateway.max_sessions` small entries) and the answers it holds while they pass.
const MEMORY: u64 = 512 << 20;

/// The labels that pick the replicas' pods: what server policies admit besides the
/// control plane's.
pub(crate) fn selector(names: &Names<'_>) -> Map<String, Value> {
    let mut labels = Map::new();
    labels.insert(meta::NAME.into(), NAME.into());
    labels.insert(meta::COMPONENT.into(), "gateway".into());
    labels.insert(meta::FLEET.into(), names.fleet.name.clone().into());
    labels
}

/// Why `fleet`'s gateway replicas could not serve, located at `kubernetes.gateway_replicas`:
/// no shared store to read routes from, no shared session keys (a session opened on one
/// replica would be unknown on the next), or a session key's secret read from a file, which
/// the pods do not get (they get secrets as environment variables only).
pub(crate) fn problems(fleet: &ValidFleet) -> Vec<Problem> {
    let Some(replicas) = &fleet.kubernetes.gateway_replicas else {
        return Vec::new();
    };
    let span = replicas.span;
    let mut problems = Vec::new();
    if fleet.state.postgres.is_none() {
        problems.push(Problem::GatewayReplicasWithoutStore { span });
    }
    if fleet.gateway.session_keys.is_empty() {
        problems.push(Problem::GatewayReplicasWithoutSessionKeys { span });
    }
    problems.extend(
        (fleet.gateway.session_key_secrets.iter())
            .filter(|name| matches!(fleet.secrets.get(*name), Some(SecretRef::File(_))))
            .map(|name| Problem::SessionKeyFromFile {
                secret: name.clone(),
                span,
            }),
    );
    problems
}

/// The replicas' objects, none without `kubernetes.gateway_replicas`.
pub(crate) fn objects(names: &Names<'_>) -> Vec<Value> {
    let Some(replicas) = &names.fleet.kubernetes.gateway_replicas else {
        return Vec::new();
    };
    let scale = &replicas.scale;
    let fleet = names.fleet;
    let port = fleet.gateway.listen.port();
    let metrics_port = fleet.admin.pod_port();
    let mut labels = names.labels(NAME);
    labels.insert(meta::COMPONENT.into(), "gateway".into());
    let pods = selector(names);
    // Clients from anywhere the cluster allows (the Ingress controller, other pods), and
    // Prometheus at the metrics port; out to the servers' pods, remote servers, the
    // database and the control plane's gateway (stdio relays, traffic reports), whose
    // addresses a manifest cannot know.
    let policy = control_plane::open_ports_policy(
        names,
        NAME,
        labels.clone(),
        pods.clone(),
        &[port, metrics_port],
    );
    // Each replica's own `/metrics` (its requests, by server and revision), scraped pod
    // by pod as the annotations say.
    let service = control_plane::scraped_service(
        names,
        NAME,
        labels.clone(),
        port,
        ("metrics", metrics_port),
        pods.clone(),
    );
    let mut objects = vec![policy, deployment(names, replicas, labels.clone()), service];
    if scale.max > scale.min {
        objects.push(crate::server::autoscaler(
            names,
            NAME,
            scale,
            labels.clone(),
        ));
    }
    if scale.min >= 2 {
        // A node drained leaves a replica serving; with one, the eviction is not held up.
        objects.push(names.labelled(
            "policy/v1",
            "PodDisruptionBudget",
            NAME,
            labels,
            json!({ "spec": { "minAvailable": 1, "selector": { "matchLabels": pods } } }),
        ));
    }
    objects
}

fn deployment(names: &Names<'_>, replicas: &GatewayReplicas, labels: Map<String, Value>) -> Value {
    let fleet = names.fleet;
    let pods = selector(names);
    let mut pod_labels = labels.clone();
    pod_labels.extend(pods.clone());
    // `--pod-network`: on every address of the pod at the gateway's port, accepting the
    // Service's and the Ingress's host names.
    let mut args = vec!["gateway", "-f", control_plane::FLEET_FILE, "--pod-network"];
    if let Some(environment) = &fleet.environment {
        args.extend(["--env", environment]);
    }
    let amounts = json!({
        "cpu": pod::millis_quantity(CPU_MILLIS),
        "memory": pod::memory_quantity(MEMORY),
    });
    // Ready once it serves; a gateway that serves TLS itself is probed over it.
    let mut probe = json!({ "path": "/healthz", "port": "gateway" });
    if matches!(fleet.gateway.tls, Some(GatewayTls::Files { .. })) {
        probe["scheme"] = "HTTPS".into();
    }
    let mut container = json!({
        "args": args,
        // The control plane's: the store's URL and the session keys read secrets, and the
        // file's `vars` may read others.
        "env": control_plane::secret_env(names),
        "image": fleet.kubernetes.image,
        "imagePullPolicy": "IfNotPresent",
        "name": "gateway",
        "ports": [
            { "containerPort": fleet.gateway.listen.port(), "name": "gateway", "protocol": "TCP" },
            { "containerPort": fleet.admin.pod_port(), "name": "metrics", "protocol": "TCP" },
        ],
        "readinessProbe": { "httpGet": probe },
        "resources": { "limits": amounts, "requests": amounts },
        "securityContext": pod::container_security(true),
        "volumeMounts": [
            { "mountPath": "/etc/mcpfleet", "name": "config", "readOnly": true },
            pod::tmp_mount(),
        ],
    });
    if container["env"].as_array().is_some_and(Vec::is_empty)
        && let Some(container) = container.as_object_mut()
    {
        container.remove("env");
    }
    let mut spec = json!({
        "selector": { "matchLabels": pods },
        // Sessions are any replica's: a pod replaced loses none, so a rollout replaces
        // one at a time and never serves with fewer.
        "strategy": { "rollingUpdate": { "maxSurge": 1, "maxUnavailable": 0 }, "type": "RollingUpdate" },
        "template": {
            "metadata": {
                // A changed fleet file restarts the replicas with it.
                "annotations": { "mcpfleet.io/config": control_plane::config_hash(names) },
                "labels": pod_labels,
            },
            "spec": {
                // A node lost takes as few replicas with it as the nodes allow.
                "affinity": { "podAntiAffinity": {
                    "preferredDuringSchedulingIgnoredDuringExecution": [{
                        "podAffinityTerm": {
                            "labelSelector": { "matchLabels": pods },
                            "topologyKey": "kubernetes.io/hostname",
                        },
                        "weight": 100,
                    }],
                } },
                // Replicas read the store, not the API server.
                "automountServiceAccountToken": false,
                "containers": [container],
                "enableServiceLinks": false,
                "securityContext": pod::pod_security((pod::NONROOT, pod::NONROOT)),
                "volumes": [
                    { "configMap": { "name": control_plane::CONFIG }, "name": "config" },
                    pod::tmp_volume(),
                ],
            },
        },
    });
    // With an autoscaler the replica count is its to set: an applied count would undo
    // its decision at every apply (a new Deployment starts with one pod, which the
    // autoscaler raises to `min` at once).
    if replicas.scale.max == replicas.scale.min {
        spec["replicas"] = replicas.scale.min.into();
    }
    names.labelled(
        "apps/v1",
        "Deployment",
        NAME,
        labels,
        json!({ "spec": spec }),
    )
}
