//! The control plane's objects: its least-privilege RBAC, the fleet file as a ConfigMap,
//! the volume of its state (or, with the store in PostgreSQL, of its backups), its
//! Deployment, Service and NetworkPolicy, the CronJob that exports its state on a schedule,
//! and the optional Ingress and ServiceMonitor. With the store in PostgreSQL the Deployment
//! runs a leader and a standby (the lease in the database says which), under a
//! PodDisruptionBudget, and the Service reaches the leader's pod alone, by the label the
//! leader puts on it.

use crate::meta::{self, Names};
use crate::pod;
use crate::problem::Problem;
use fleet_spec::ValidFleet;
use fleet_spec::model::{Ingress, PodReach, SecretRef};
use serde_json::{Map, Value, json};

/// The name of the control plane's ServiceAccount, Role, RoleBinding, Deployment and
/// Service.
pub(crate) const NAME: &str = "mcpfleet";
pub(crate) const CONFIG: &str = "mcpfleet-config";
const STATE: &str = "mcpfleet-state";
/// The backups' own volume when the store is a PostgreSQL database.
const BACKUPS: &str = "mcpfleet-backups";
const BACKUP: &str = "mcpfleet-backup";
/// Where the fleet file is mounted, and the state directory on the state volume.
pub(crate) const FLEET_FILE: &str = "/etc/mcpfleet/fleet.yaml";
const STATE_DIR: &str = "/var/lib/mcpfleet/state";
const BACKUP_DIR: &str = "/var/lib/mcpfleet/backups";
/// With the store in PostgreSQL, the scratch volume that holds the state directory.
const SCRATCH_DIR: &str = "/var/lib/mcpfleet";
/// The scratch volume's bound: the state directory then holds the admin socket and the
/// lock (and the log files of local processes, which a pod does not run), so a fill-up
/// means something is wrong; the kubelet evicts the pod past it.
const SCRATCH_SIZE: &str = "256Mi";

/// The labels that pick the control plane's pods: the only pods servers accept traffic
/// from.
pub(crate) fn selector(names: &Names<'_>) -> Map<String, Value> {
    pods_of(&names.fleet.name)
}

/// The labels of fleet `fleet`'s control plane pods.
pub(crate) fn pods_of(fleet: &str) -> Map<String, Value> {
    let mut labels = Map::new();
    labels.insert(meta::NAME.into(), NAME.into());
    labels.insert(meta::COMPONENT.into(), "control-plane".into());
    labels.insert(meta::FLEET.into(), fleet.into());
    labels
}

/// The value of [`meta::ROLE`] on the leading control plane's pod.
pub(crate) const LEADER: &str = "leader";

/// With the store in PostgreSQL: control planes, one leading (the lease's holder), the
/// others standing by to take over — a pod or node lost costs a lease's time, not a
/// reschedule and a start.
const REPLICAS_SHARING_THE_STORE: u32 = 2;

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

/// The ConfigMap, state volume, NetworkPolicy, Deployment, Service (and with the store in
/// PostgreSQL PodDisruptionBudget) and backup CronJob.
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
    let in_database = fleet.state.postgres.is_some();
    // The volume that outlives the pod: the state directory with its store and the
    // backups beside it; with the store in PostgreSQL the backups alone.
    let claim = if in_database { BACKUPS } else { STATE };
    let volume = names.labelled(
        "v1",
        "PersistentVolumeClaim",
        claim,
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
    let policy = open_ports_policy(
        names,
        NAME,
        labels.clone(),
        selector(names),
        &[gateway_port, admin_port],
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
    let mut env = secret_env(names);
    if in_database {
        // The pod the control plane runs in, which it labels when it leads.
        env.extend([
            json!({ "name": "POD_NAME", "valueFrom": { "fieldRef": { "fieldPath": "metadata.name" } } }),
            json!({ "name": "POD_NAMESPACE", "valueFrom": { "fieldRef": { "fieldPath": "metadata.namespace" } } }),
        ]);
    }
    let mut pod_labels = labels.clone();
    pod_labels.extend(selector(names));
    // The state directory: on the claim, where the store is; with the store in
    // PostgreSQL only the socket and the lock are there, on a scratch volume of the pod
    // (the whole volume, so that the control plane creates the directory owner-only, as
    // it requires, where an emptyDir's own root is open to all).
    let (state_mount, state_volume) = if in_database {
        (
            json!({ "mountPath": SCRATCH_DIR, "name": "state" }),
            json!({ "emptyDir": { "sizeLimit": SCRATCH_SIZE }, "name": "state" }),
        )
    } else {
        (
            json!({ "mountPath": STATE_DIR, "name": "state", "subPath": "state" }),
            json!({ "name": "state", "persistentVolumeClaim": { "claimName": STATE } }),
        )
    };
    let mut deployment = names.labelled(
        "apps/v1",
        "Deployment",
        NAME,
        labels.clone(),
        json!({
            "spec": {
                "replicas": 1,
                "selector": { "matchLabels": selector(names) },
                // The store on the volume: one control plane, and a new pod only once the
                // old one is gone (one node mounts the volume at a time, and SQLite has one
                // writer). In PostgreSQL, see below.
                "strategy": { "type": "Recreate" },
                "template": {
                    "metadata": {
                        // A changed fleet file restarts the control plane with it.
                        "annotations": { "mcpfleet.io/config": config_hash(names) },
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
                            // to only after its checks); a standby answers it too (its
                            // process is healthy), and the Service picks the leader by
                            // its label. No liveness probe: the start may wait on the
                            // API server for long, and a control plane that fails exits.
                            "readinessProbe": { "httpGet": { "path": "/healthz", "port": "admin" } },
                            "securityContext": pod::container_security(true),
                            "volumeMounts": [
                                { "mountPath": "/etc/mcpfleet", "name": "config", "readOnly": true },
                                state_mount,
                                pod::tmp_mount(),
                            ],
                        }],
                        "enableServiceLinks": false,
                        "securityContext": pod::pod_security((pod::NONROOT, pod::NONROOT)),
                        "serviceAccountName": NAME,
                        "volumes": [
                            { "configMap": { "name": CONFIG }, "name": "config" },
                            state_volume,
                            pod::tmp_volume(),
                        ],
                    },
                },
            }
        }),
    );
    if in_database && let Some(spec) = deployment["spec"].as_object_mut() {
        // Standbys wait for the lease; only its holder writes (a deposed one is fenced by
        // the database), so a new pod may start before an old one stops: a standby is
        // Ready (it answers the probe) and the rollout replaces one pod at a time, never
        // with fewer than all of them up.
        spec.insert("replicas".into(), REPLICAS_SHARING_THE_STORE.into());
        spec.insert(
            "strategy".into(),
            json!({ "rollingUpdate": { "maxSurge": 1, "maxUnavailable": 0 }, "type": "RollingUpdate" }),
        );
        // A node lost must not take the standby with the leader, where the nodes allow.
        spec["template"]["spec"]["affinity"] = json!({ "podAntiAffinity": {
            "preferredDuringSchedulingIgnoredDuringExecution": [{
                "podAffinityTerm": {
                    "labelSelector": { "matchLabels": selector(names) },
                    "topologyKey": "kubernetes.io/hostname",
                },
                "weight": 100,
            }],
        } });
    }
    if env.is_empty()
        && let Some(container) = deployment
            .pointer_mut("/spec/template/spec/containers/0")
            .and_then(Value::as_object_mut)
    {
        container.remove("env");
    }
    let service = scraped_service(
        names,
        NAME,
        labels.clone(),
        gateway_port,
        ("admin", admin_port),
        service_selector(names),
    );
    let mut objects = vec![config, volume, policy, deployment, service];
    if in_database {
        // A voluntary eviction (a node drained) leaves a control plane running.
        objects.push(names.labelled(
            "policy/v1",
            "PodDisruptionBudget",
            NAME,
            labels.clone(),
            json!({ "spec": { "minAvailable": 1, "selector": { "matchLabels": selector(names) } } }),
        ));
    }
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
    if in_database {
        objects.push(backup_policy(names, labels.clone()));
    }
    objects.push(backup(names, labels));
    objects
}

/// The fleet file's hash, on the pod templates of whatever reads it: a changed file
/// changes the template, and so restarts the pods with it.
pub(crate) fn config_hash(names: &Names<'_>) -> String {
    fleet_plan::content_hash(&Value::from(names.options.fleet_file.as_str()))
}

/// What the control plane's Service sends traffic to: its pods — with the store in
/// PostgreSQL, the leading one alone (the one labelled so, [`meta::ROLE`]): a standby
/// serves neither the gateway nor the metrics.
fn service_selector(names: &Names<'_>) -> Map<String, Value> {
    let mut labels = selector(names);
    if names.fleet.state.postgres.is_some() {
        labels.insert(meta::ROLE.into(), LEADER.into());
    }
    labels
}

/// The fleet's secrets as the environment variables the file reads them from, each a
/// reference to its Secret key: never a value in a manifest. A secret read from a file
/// has none: it does not reach the control plane's pod ([`state_problems`]).
pub(crate) fn secret_env(names: &Names<'_>) -> Vec<Value> {
    (names.fleet.secrets.iter())
        .filter_map(|(name, source)| match source {
            SecretRef::Env(variable) => {
                let (secret, key) = names.secret_key(name);
                Some(json!({
                    "name": variable,
                    "valueFrom": { "secretKeyRef": { "key": key, "name": secret } },
                }))
            }
            SecretRef::File(_) => None,
        })
        .collect()
}

/// Why the rendered control plane could not open `fleet`'s state store: a secret of the
/// PostgreSQL URL read from a file. The control plane's pod gets the fleet's secrets only
/// as environment variables (a file path of the machine the file was written on means
/// nothing in a pod, and mounting this one file would make the store the one exception);
/// the pod would start and fail to connect, so the render refuses it, at the URL.
pub(crate) fn state_problems(fleet: &ValidFleet) -> Vec<Problem> {
    let Some(postgres) = &fleet.state.postgres else {
        return Vec::new();
    };
    (postgres.secrets.iter())
        .filter(|name| matches!(fleet.secrets.get(*name), Some(SecretRef::File(_))))
        .map(|name| Problem::StateSecretFromFile {
            secret: name.clone(),
            span: postgres.span,
        })
        .collect()
}

/// The labels of a backup Job's pod: not the control plane's, so that no server admits it.
fn backup_selector(names: &Names<'_>) -> Map<String, Value> {
    let mut labels = Map::new();
    labels.insert(meta::NAME.into(), BACKUP.into());
    labels.insert(meta::COMPONENT.into(), "backup".into());
    labels.insert(meta::FLEET.into(), names.fleet.name.clone().into());
    labels
}

/// With the store in PostgreSQL the backup reads the database, which the namespace's
/// default deny would keep it from: it may reach anything (the database's address is in
/// a Secret, which a manifest cannot know), and nothing reaches it.
fn backup_policy(names: &Names<'_>, labels: Map<String, Value>) -> Value {
    names.labelled(
        "networking.k8s.io/v1",
        "NetworkPolicy",
        BACKUP,
        labels,
        json!({
            "spec": {
                "egress": [{}],
                "podSelector": { "matchLabels": backup_selector(names) },
                "policyTypes": ["Ingress", "Egress"],
            }
        }),
    )
}

/// Clients from outside the cluster reach the gateway at `host`, over TLS with that Secret
/// when it names one: the gateway replicas' Service when there are replicas, else the
/// control plane's.
fn ingress_object(names: &Names<'_>, ingress: &Ingress, labels: Map<String, Value>) -> Value {
    let service = if names.fleet.kubernetes.gateway_replicas.is_some() {
        crate::gateway::NAME
    } else {
        NAME
    };
    let mut spec = json!({
        "rules": [{
            "host": ingress.host,
            "http": { "paths": [{
                "backend": { "service": { "name": service, "port": { "name": "gateway" } } },
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

/// `mcpfleet export-state` on the backup schedule into `backups/`, one file per run named
/// after its Job, keeping the newest `keep`.
///
/// With the store on the state volume it goes through the running control plane's socket
/// there, into the same volume, so its pod must run on the control plane's node (the volume
/// is ReadWriteOnce). With the store in PostgreSQL it reads the database itself (no control
/// plane answers on its empty state directory) with the secrets the control plane has,
/// into a volume of its own, wherever it is scheduled.
fn backup(names: &Names<'_>, labels: Map<String, Value>) -> Value {
    let fleet = names.fleet;
    let export = format!("{BACKUP_DIR}/$(JOB_NAME).json");
    let keep = fleet.kubernetes.backup.keep.to_string();
    let mut args = vec![
        "export-state",
        export.as_str(),
        "--keep",
        keep.as_str(),
        "-f",
        FLEET_FILE,
        "--state-dir",
        STATE_DIR,
    ];
    // The environment's overlay may be what puts the store in PostgreSQL.
    if let Some(environment) = &fleet.environment {
        args.extend(["--env", environment]);
    }
    let mut env = vec![json!({
        "name": "JOB_NAME",
        "valueFrom": { "fieldRef": {
            "fieldPath": "metadata.labels['batch.kubernetes.io/job-name']",
        } },
    })];
    let mut spec = if fleet.state.postgres.is_some() {
        // Every secret the control plane has, not only the URL's: export-state reads the
        // fleet file as the control plane does, its `vars` (which may read secrets)
        // before the URL.
        env.extend(secret_env(names));
        json!({
            "volumes": [
                { "configMap": { "name": CONFIG }, "name": "config" },
                { "name": "backups", "persistentVolumeClaim": { "claimName": BACKUPS } },
                pod::tmp_volume(),
            ],
            "volumeMounts": [
                { "mountPath": "/etc/mcpfleet", "name": "config", "readOnly": true },
                { "mountPath": BACKUP_DIR, "name": "backups" },
                pod::tmp_mount(),
            ],
        })
    } else {
        json!({
            "affinity": { "podAffinity": {
                "requiredDuringSchedulingIgnoredDuringExecution": [{
                    "labelSelector": { "matchLabels": selector(names) },
                    "topologyKey": "kubernetes.io/hostname",
                }],
            } },
            "volumes": [
                { "configMap": { "name": CONFIG }, "name": "config" },
                { "name": "state", "persistentVolumeClaim": { "claimName": STATE } },
                pod::tmp_volume(),
            ],
            "volumeMounts": [
                { "mountPath": "/etc/mcpfleet", "name": "config", "readOnly": true },
                { "mountPath": STATE_DIR, "name": "state", "subPath": "state" },
                { "mountPath": BACKUP_DIR, "name": "state", "subPath": "backups" },
                pod::tmp_mount(),
            ],
        })
    };
    let mounts = spec
        .as_object_mut()
        .and_then(|spec| spec.remove("volumeMounts"))
        .unwrap_or_default();
    let container = json!({
        "args": args,
        "env": env,
        "image": fleet.kubernetes.image,
        "imagePullPolicy": "IfNotPresent",
        "name": "export-state",
        "securityContext": pod::container_security(true),
        "volumeMounts": mounts,
    });
    if let Some(spec) = spec.as_object_mut() {
        spec.extend([
            ("automountServiceAccountToken".into(), false.into()),
            ("containers".into(), json!([container])),
            ("enableServiceLinks".into(), false.into()),
            ("restartPolicy".into(), "OnFailure".into()),
            (
                "securityContext".into(),
                pod::pod_security((pod::NONROOT, pod::NONROOT)),
            ),
        ]);
    }
    names.labelled(
        "batch/v1",
        "CronJob",
        BACKUP,
        labels,
        json!({
            "spec": {
                "concurrencyPolicy": "Forbid",
                "failedJobsHistoryLimit": 3,
                "jobTemplate": { "spec": {
                    "backoffLimit": 2,
                    "template": {
                        "metadata": { "labels": backup_selector(names) },
                        "spec": spec,
                    },
                } },
                "schedule": fleet.kubernetes.backup.schedule,
                "successfulJobsHistoryLimit": 3,
            }
        }),
    )
}

/// A NetworkPolicy of the pods `pods` picks: reached on `ports` from anywhere the cluster
/// allows, out to anything.
pub(crate) fn open_ports_policy(
    names: &Names<'_>,
    name: &str,
    labels: Map<String, Value>,
    pods: Map<String, Value>,
    ports: &[u16],
) -> Value {
    let ports: Vec<Value> = (ports.iter())
        .map(|port| json!({ "port": port, "protocol": "TCP" }))
        .collect();
    names.labelled(
        "networking.k8s.io/v1",
        "NetworkPolicy",
        name,
        labels,
        json!({
            "spec": {
                "egress": [{}],
                "ingress": [{ "ports": ports }],
                "podSelector": { "matchLabels": pods },
                "policyTypes": ["Ingress", "Egress"],
            }
        }),
    )
}

/// A Service of the `gateway` port and a second named port whose `/metrics` Prometheus
/// scrapes pod by pod, as the Service's annotations say.
pub(crate) fn scraped_service(
    names: &Names<'_>,
    name: &str,
    labels: Map<String, Value>,
    gateway_port: u16,
    (metrics_name, metrics_port): (&str, u16),
    selector: Map<String, Value>,
) -> Value {
    let service = names.labelled(
        "v1",
        "Service",
        name,
        labels,
        json!({
            "spec": {
                "ports": [
                    { "name": "gateway", "port": gateway_port, "protocol": "TCP", "targetPort": "gateway" },
                    { "name": metrics_name, "port": metrics_port, "protocol": "TCP", "targetPort": metrics_name },
                ],
                "selector": selector,
            }
        }),
    );
    with_annotations(
        service,
        json!({
            "prometheus.io/path": "/metrics",
            "prometheus.io/port": metrics_port.to_string(),
            "prometheus.io/scrape": "true",
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
