//! The control plane's objects: its least-privilege RBAC, the fleet file as a ConfigMap,
//! the volume of its state, its Deployment, Service and NetworkPolicy, the CronJob that
//! exports its state on a schedule, and the optional Ingress and ServiceMonitor.

use crate::meta::{self, Names};
use crate::pod;
use fleet_spec::model::{Ingress, PodReach};
use serde_json::{Map, Value, json};

/// The name of the control plane's ServiceAccount, Role, RoleBinding, Deployment and
/// Service.
pub(crate) const NAME: &str = "mcpfleet";
const CONFIG: &str = "mcpfleet-config";
const STATE: &str = "mcpfleet-state";
/// Where the fleet file is mounted, and the state directory on the state volume.
const FLEET_FILE: &str = "/etc/mcpfleet/fleet.yaml";
const STATE_DIR: &str = "/var/lib/mcpfleet/state";
const BACKUP_DIR: &str = "/var/lib/mcpfleet/backups";

/// The labels that pick the control plane's pods: the only pods servers accept traffic
/// from.
pub(crate) fn selector(names: &Names<'_>) -> Map<String, Value> {
    let mut labels = Map::new();
    labels.insert(meta::NAME.into(), NAME.into());
    labels.insert(meta::COMPONENT.into(), "control-plane".into());
    labels.insert(meta::FLEET.into(), names.fleet.name.clone().into());
    labels
}

fn labels(names: &Names<'_>) -> Map<String, Value> {
    let mut labels = names.labels(NAME);
    labels.insert(meta::COMPONENT.into(), "control-plane".into());
    labels
}

pub(crate) fn service_account(names: &Names<'_>) -> Value {
    names.object("v1", "ServiceAccount", NAME, json!({}))
}

/// What the control plane may do, in its namespace only: apply the objects it renders,
/// manage and attach to the servers' pods (a per-session pool is managed pod by pod), read
/// events, and read Secrets to check before a deployment that the ones it references exist.
/// Port-forwarding to pods only when the fleet says its control plane reaches them so
/// (`kubernetes.reach: port-forward`): in the cluster it reaches pod IPs.
pub(crate) fn role(names: &Names<'_>) -> Value {
    let apply = ["get", "list", "watch", "create", "patch", "delete"];
    let mut role = names.object(
        "rbac.authorization.k8s.io/v1",
        "Role",
        NAME,
        json!({
            "rules": [
                { "apiGroups": ["apps"], "resources": ["deployments"], "verbs": apply },
                { "apiGroups": [""], "resources": ["services", "configmaps"], "verbs": apply },
                { "apiGroups": ["policy"], "resources": ["poddisruptionbudgets"], "verbs": apply },
                { "apiGroups": ["autoscaling"], "resources": ["horizontalpodautoscalers"], "verbs": apply },
                { "apiGroups": ["networking.k8s.io"], "resources": ["networkpolicies"], "verbs": apply },
                { "apiGroups": [""], "resources": ["pods"], "verbs": ["get", "list", "watch", "delete", "patch"] },
                { "apiGroups": [""], "resources": ["pods/attach"], "verbs": ["create"] },
                { "apiGroups": [""], "resources": ["events"], "verbs": ["list"] },
                { "apiGroups": [""], "resources": ["secrets"], "verbs": ["get"] },
            ]
        }),
    );
    if names.fleet.kubernetes.reach == Some(PodReach::PortForward)
        && let Some(rules) = role["rules"].as_array_mut()
    {
        rules.push(
            json!({ "apiGroups": [""], "resources": ["pods/portforward"], "verbs": ["create"] }),
        );
    }
    role
}

pub(crate) fn role_binding(names: &Names<'_>) -> Value {
    names.object(
        "rbac.authorization.k8s.io/v1",
        "RoleBinding",
        NAME,
        json!({
            "roleRef": { "apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": NAME },
            "subjects": [{ "kind": "ServiceAccount", "name": NAME, "namespace": names.namespace() }],
        }),
    )
}

/// The ConfigMap, state volume, NetworkPolicy, Deployment, Service and backup CronJob.
pub(crate) fn objects(names: &Names<'_>) -> Vec<Value> {
    let fleet = names.fleet;
    let gateway_port = fleet.gateway.listen.port();
    let admin_port = fleet.admin.pod_port();
    let labels = labels(names);
    let config = names.labelled(
        "v1",
        "ConfigMap",
        CONFIG,
        labels.clone(),
        json!({ "data": { "fleet.yaml": names.options.fleet_file } }),
    );
    let state = names.labelled(
        "v1",
        "PersistentVolumeClaim",
        STATE,
        labels.clone(),
        json!({
            "spec": {
                "accessModes": ["ReadWriteOnce"],
                "resources": { "requests": { "storage": pod::memory_quantity(fleet.kubernetes.backup.size) } },
            }
        }),
    );
    // Clients and Prometheus come from anywhere the cluster allows; the control plane
    // reaches the API server, its servers and remote servers, whose addresses a manifest
    // cannot know.
    let policy = names.labelled(
        "networking.k8s.io/v1",
        "NetworkPolicy",
        NAME,
        labels.clone(),
        json!({
            "spec": {
                "egress": [{}],
                "ingress": [{ "ports": [
                    { "port": gateway_port, "protocol": "TCP" },
                    { "port": admin_port, "protocol": "TCP" },
                ] }],
                "podSelector": { "matchLabels": selector(names) },
                "policyTypes": ["Ingress", "Egress"],
            }
        }),
    );
    // `--pod-network`: the gateway and the admin port on the pod's address as well as
    // loopback — what the Service, the Ingress, Prometheus and the probes reach. On it the
    // admin port answers only `/metrics` and `/healthz`.
    let mut args = vec![
        "up",
        "-f",
        FLEET_FILE,
        "--state-dir",
        STATE_DIR,
        "--pod-network",
    ];
    if let Some(environment) = &fleet.environment {
        args.extend(["--env", environment]);
    }
    // The fleet's secrets reach the control plane as the environment variables the file
    // reads them from, each a reference to its Secret key: never a value in a manifest.
    let env: Vec<Value> = fleet
        .secrets
        .iter()
        .filter_map(|(name, source)| match source {
            fleet_spec::model::SecretRef::Env(variable) => {
                let (secret, key) = names.secret_key(name);
                Some(json!({
                    "name": variable,
                    "valueFrom": { "secretKeyRef": { "key": key, "name": secret } },
                }))
            }
            fleet_spec::model::SecretRef::File(_) => None,
        })
        .collect();
    let mut pod_labels = labels.clone();
    pod_labels.extend(selector(names));
    let mut deployment = names.labelled(
        "apps/v1",
        "Deployment",
        NAME,
        labels.clone(),
        json!({
            "spec": {
                "replicas": 1,
                "selector": { "matchLabels": selector(names) },
                // One writer of the state store, on a volume one node mounts at a time.
                "strategy": { "type": "Recreate" },
                "template": {
                    "metadata": {
                        // A changed fleet file restarts the control plane with it.
                        "annotations": { "mcpfleet.io/config": fleet_plan::content_hash(&Value::from(names.options.fleet_file.as_str())) },
                        "labels": pod_labels,
                    },
                    "spec": {
                        "containers": [{
                            "args": args,
                            "env": env,
                            "image": fleet.kubernetes.image,
                            "imagePullPolicy": "IfNotPresent",
                            "name": NAME,
                            "ports": [
                                { "containerPort": gateway_port, "name": "gateway", "protocol": "TCP" },
                                { "containerPort": admin_port, "name": "admin", "protocol": "TCP" },
                            ],
                            // Service traffic once the listeners are open (they open
                            // together, before the first deployment; a server is routed
                            // to only after its checks). No liveness probe: the start
                            // may wait on the API server for long, and a control plane
                            // that fails exits.
                            "readinessProbe": { "httpGet": { "path": "/healthz", "port": "admin" } },
                            "securityContext": pod::container_security(true),
                            "volumeMounts": [
                                { "mountPath": "/etc/mcpfleet", "name": "config", "readOnly": true },
                                { "mountPath": STATE_DIR, "name": "state", "subPath": "state" },
                                pod::tmp_mount(),
                            ],
                        }],
                        "enableServiceLinks": false,
                        "securityContext": pod::pod_security((pod::NONROOT, pod::NONROOT)),
                        "serviceAccountName": NAME,
                        "volumes": [
                            { "configMap": { "name": CONFIG }, "name": "config" },
                            { "name": "state", "persistentVolumeClaim": { "claimName": STATE } },
                            pod::tmp_volume(),
                        ],
                    },
                },
            }
        }),
    );
    if env.is_empty()
        && let Some(container) = deployment
            .pointer_mut("/spec/template/spec/containers/0")
            .and_then(Value::as_object_mut)
    {
        container.remove("env");
    }
    let service = names.labelled(
        "v1",
        "Service",
        NAME,
        labels.clone(),
        json!({
            "spec": {
                "ports": [
                    { "name": "gateway", "port": gateway_port, "protocol": "TCP", "targetPort": "gateway" },
                    { "name": "admin", "port": admin_port, "protocol": "TCP", "targetPort": "admin" },
                ],
                "selector": selector(names),
            }
        }),
    );
    let service = with_annotations(
        service,
        json!({
            "prometheus.io/path": "/metrics",
            "prometheus.io/port": admin_port.to_string(),
            "prometheus.io/scrape": "true",
        }),
    );
    let mut objects = vec![config, state, policy, deployment, service];
    if let Some(ingress) = &fleet.kubernetes.ingress {
        objects.push(ingress_object(names, ingress, labels.clone()));
    }
    if fleet.kubernetes.service_monitor {
        objects.push(names.labelled(
            "monitoring.coreos.com/v1",
            "ServiceMonitor",
            NAME,
            labels.clone(),
            json!({
                "spec": {
                    "endpoints": [{ "path": "/metrics", "port": "admin" }],
                    // The control plane's Service, by its labels.
                    "selector": { "matchLabels": labels },
                }
            }),
        ));
    }
    objects.push(backup(names, labels));
    objects
}

/// Clients from outside the cluster reach the gateway at `host`, over TLS with that Secret
/// when it names one.
fn ingress_object(names: &Names<'_>, ingress: &Ingress, labels: Map<String, Value>) -> Value {
    let mut spec = json!({
        "rules": [{
            "host": ingress.host,
            "http": { "paths": [{
                "backend": { "service": { "name": NAME, "port": { "name": "gateway" } } },
                "path": "/",
                "pathType": "Prefix",
            }] },
        }],
    });
    if let Some(class) = &ingress.class {
        spec["ingressClassName"] = class.as_str().into();
    }
    if let Some(secret) = &ingress.tls_secret {
        spec["tls"] = json!([{ "hosts": [ingress.host], "secretName": secret }]);
    }
    names.labelled(
        "networking.k8s.io/v1",
        "Ingress",
        NAME,
        labels,
        json!({ "spec": spec }),
    )
}

/// `mcpfleet export-state` on the backup schedule into the state volume's `backups/`, one
/// file per run named after its Job, keeping the newest `keep`. It goes through the running control plane's socket on the same
/// volume, so its pod must run on the control plane's node (the volume is ReadWriteOnce).
fn backup(names: &Names<'_>, labels: Map<String, Value>) -> Value {
    let export = format!("{BACKUP_DIR}/$(JOB_NAME).json");
    names.labelled(
        "batch/v1",
        "CronJob",
        "mcpfleet-backup",
        labels,
        json!({
            "spec": {
                "concurrencyPolicy": "Forbid",
                "failedJobsHistoryLimit": 3,
                "jobTemplate": { "spec": {
                    "backoffLimit": 2,
                    "template": { "spec": {
                        "affinity": { "podAffinity": {
                            "requiredDuringSchedulingIgnoredDuringExecution": [{
                                "labelSelector": { "matchLabels": selector(names) },
                                "topologyKey": "kubernetes.io/hostname",
                            }],
                        } },
                        "automountServiceAccountToken": false,
                        "containers": [{
                            "args": [
                                "export-state", export,
                                "--keep", names.fleet.kubernetes.backup.keep.to_string(),
                                "-f", FLEET_FILE, "--state-dir", STATE_DIR,
                            ],
                            "env": [{
                                "name": "JOB_NAME",
                                "valueFrom": { "fieldRef": {
                                    "fieldPath": "metadata.labels['batch.kubernetes.io/job-name']",
                                } },
                            }],
                            "image": names.fleet.kubernetes.image,
                            "imagePullPolicy": "IfNotPresent",
                            "name": "export-state",
                            "securityContext": pod::container_security(true),
                            "volumeMounts": [
                                { "mountPath": "/etc/mcpfleet", "name": "config", "readOnly": true },
                                { "mountPath": STATE_DIR, "name": "state", "subPath": "state" },
                                { "mountPath": BACKUP_DIR, "name": "state", "subPath": "backups" },
                                pod::tmp_mount(),
                            ],
                        }],
                        "enableServiceLinks": false,
                        "restartPolicy": "OnFailure",
                        "securityContext": pod::pod_security((pod::NONROOT, pod::NONROOT)),
                        "volumes": [
                            { "configMap": { "name": CONFIG }, "name": "config" },
                            { "name": "state", "persistentVolumeClaim": { "claimName": STATE } },
                            pod::tmp_volume(),
                        ],
                    } },
                } },
                "schedule": names.fleet.kubernetes.backup.schedule,
                "successfulJobsHistoryLimit": 3,
            }
        }),
    )
}

fn with_annotations(mut object: Value, annotations: Value) -> Value {
    let metadata = &mut object["metadata"];
    if metadata.get("annotations").is_none() {
        metadata["annotations"] = json!({});
    }
    if let (Some(existing), Value::Object(more)) =
        (metadata["annotations"].as_object_mut(), annotations)
    {
        existing.extend(more);
    }
    object
}
