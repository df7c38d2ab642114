//! One image server's objects: its NetworkPolicy, Deployment, HorizontalPodAutoscaler
//! (with `autoscale`), Service (http servers) and PodDisruptionBudget.

use crate::meta::{self, Names};
use crate::pod;
use crate::problem::Problem;
use fleet_spec::model::{
    Autoscale, Container, ContainerNetwork, Executable, Isolation, Server, Spread, Text, Transport,
    VolumeSource,
};
use serde_json::{Map, Value, json};

/// The port an http image server listens on when the file leaves it to mcpfleet: locally
/// mcpfleet allocates one per instance, in a cluster every pod has its own network.
pub const DEFAULT_HTTP_PORT: u16 = 8080;

/// A server's pods as every Deployment of it runs them — the one `render` writes and the
/// one per revision the Kubernetes runtime applies — so that one place knows the pod
/// template.
pub(crate) struct Pods {
    /// `mcpfleet.io/fleet` and `mcpfleet.io/server`: what picks every pod of the server.
    selector: Map<String, Value>,
    /// The pod spec: container, hardening, volumes, placement.
    spec: Value,
    /// The http port, for an http server.
    port: Option<u16>,
    /// The replicas the file asks for (a per-session server's warm pool).
    replicas: u32,
    /// A per-session stdio server's pods carry (and are selected by) `mcpfleet.io/pool: warm`.
    pooled: bool,
}

/// Which Deployment of a server's pods to write.
pub(crate) struct Shape {
    /// `metadata.name`.
    pub(crate) name: String,
    /// The `mcpfleet.io/revision` label of the Deployment and its pods.
    pub(crate) revision: String,
    /// Whether the revision is part of the selector: a Deployment per revision must not
    /// pick another revision's pods.
    pub(crate) per_revision: bool,
    /// `spec.replicas`; `None` leaves it to someone else (an autoscaler, the runtime).
    pub(crate) replicas: Option<u32>,
}

/// The server's objects; `None` for a remote server (nothing runs in the cluster) and for a
/// server with problems, which are added to `problems`.
pub(crate) fn render(
    names: &Names<'_>,
    server: &Server,
    problems: &mut Vec<Problem>,
) -> Option<Vec<Value>> {
    let pods = pods(names, server, problems)?;
    let container = image_container(server)?;
    let revision = fleet_plan::DeployedServer::from_server(server).hash;
    let mut labels = names.labels(&server.name);
    labels.insert(meta::SERVER.into(), server.name.clone().into());
    labels.insert(meta::REVISION.into(), revision.clone().into());
    let selector = &pods.selector;
    let policy = network_policy(
        names,
        server,
        selector,
        labels.clone(),
        pods.port,
        container,
    );
    // With an autoscaler the replica count is its to set: an applied count would undo
    // its decision at every apply.
    let shape = Shape {
        name: server.name.clone(),
        revision,
        per_revision: false,
        replicas: server.autoscale.is_none().then_some(pods.replicas),
    };
    let mut objects = vec![policy, deployment(names, server, &pods, &shape)];
    if let Some(autoscale) = &server.autoscale {
        objects.push(autoscaler(names, &server.name, autoscale, labels.clone()));
    }
    if let Some(port) = pods.port {
        objects.push(names.labelled(
            "v1",
            "Service",
            &server.name,
            labels.clone(),
            json!({
                "spec": {
                    "ports": [{ "name": "http", "port": port, "protocol": "TCP", "targetPort": "http" }],
                    "selector": selector,
                }
            }),
        ));
    }
    objects.push(names.labelled(
        "policy/v1",
        "PodDisruptionBudget",
        &server.name,
        labels,
        json!({
            "spec": {
                "maxUnavailable": 1,
                "selector": { "matchLabels": selector },
            }
        }),
    ));
    Some(objects)
}

/// The `container:` block of an image server.
fn image_container(server: &Server) -> Option<&Container> {
    let command = match &server.transport {
        Transport::Remote { .. } => return None,
        Transport::Stdio { command, .. } | Transport::Http { command, .. } => command,
    };
    match &command.executable {
        Executable::Image { container, .. } => Some(container),
        _ => None,
    }
}

/// A Deployment of the server's pods, shaped by `shape`.
pub(crate) fn deployment(names: &Names<'_>, server: &Server, pods: &Pods, shape: &Shape) -> Value {
    let mut labels = names.labels(&server.name);
    labels.insert(meta::SERVER.into(), server.name.clone().into());
    labels.insert(meta::REVISION.into(), shape.revision.clone().into());
    let mut pod_labels = labels.clone();
    let mut pod_selector = pods.selector.clone();
    if shape.per_revision {
        pod_selector.insert(meta::REVISION.into(), shape.revision.clone().into());
    }
    if pods.pooled {
        pod_selector.insert(meta::POOL.into(), "warm".into());
        pod_labels.insert(meta::POOL.into(), "warm".into());
    }
    let mut deployment_spec = json!({
        "selector": { "matchLabels": pod_selector },
        "strategy": {
            "type": "RollingUpdate",
            "rollingUpdate": {
                // Both 0 cannot roll; the file's `rolling` refuses it already.
                "maxSurge": server.rollout.max_surge.max(u32::from(server.rollout.max_unavailable == 0)),
                "maxUnavailable": server.rollout.max_unavailable,
            },
        },
        "template": {
            "metadata": { "labels": pod_labels },
            "spec": pods.spec,
        },
    });
    if let Some(replicas) = shape.replicas {
        deployment_spec["replicas"] = replicas.into();
    }
    if let Some(deadline) = names.fleet.kubernetes.progress_deadline {
        // Whole seconds, rounded up: a deadline is never shorter than the file's.
        let seconds = deadline.as_secs() + u64::from(deadline.subsec_nanos() > 0);
        deployment_spec["progressDeadlineSeconds"] = seconds.into();
    }
    names.labelled(
        "apps/v1",
        "Deployment",
        &shape.name,
        labels,
        json!({ "spec": deployment_spec }),
    )
}

/// The server's pods; `None` for a remote server and for a server with problems, which
/// are added to `problems`.
pub(crate) fn pods(
    names: &Names<'_>,
    server: &Server,
    problems: &mut Vec<Problem>,
) -> Option<Pods> {
    let (command, stdio) = match &server.transport {
        Transport::Remote { .. } => return None,
        Transport::Stdio { command, isolation } => (command, Some(*isolation)),
        Transport::Http { command, .. } => (command, None),
    };
    // This server's problems: all of them are reported, and any one means no objects.
    let mut found = Vec::new();
    if !meta::is_dns_label(&server.name)
        || server.name == "mcpfleet"
        || server.name.starts_with("mcpfleet-")
    {
        found.push(Problem::ServerName {
            server: server.name.clone(),
            span: server.span,
        });
    }
    let Executable::Image {
        image,
        digest,
        command: entrypoint,
        container,
    } = &command.executable
    else {
        found.push(Problem::LocalProgram {
            server: server.name.clone(),
            span: server.span,
        });
        problems.extend(found);
        return None;
    };
    let port = match &server.transport {
        Transport::Http { port, .. } => Some(port.unwrap_or(DEFAULT_HTTP_PORT)),
        _ => None,
    };
    let mut texts = Texts {
        server,
        port,
        problems: &mut found,
    };
    let mut main = Map::new();
    main.insert("name".into(), server.name.clone().into());
    let image = match pullable(digest.as_deref()) {
        Some(pinned) => pinned.to_owned(),
        None => texts.text("image", image),
    };
    main.insert("image".into(), image.into());
    main.insert(
        "imagePullPolicy".into(),
        pull_policy(container, digest.is_some()).into(),
    );
    if let Some(entrypoint) = entrypoint {
        main.insert("command".into(), json!([texts.text("command", entrypoint)]));
    }
    if !command.args.is_empty() {
        let args: Vec<String> = (command.args.iter().enumerate())
            .map(|(i, arg)| texts.text(&format!("args[{i}]"), arg))
            .collect();
        main.insert("args".into(), args.into());
    }
    if !command.env.is_empty() {
        let env: Vec<Value> = (command.env.iter())
            .map(|(name, value)| {
                json!({ "name": name, "value": texts.text(&format!("env.{name}"), value) })
            })
            .collect();
        main.insert("env".into(), env.into());
    }
    if let Some(cwd) = &command.cwd {
        main.insert("workingDir".into(), texts.text("cwd", cwd).into());
    }
    if let Some(port) = port {
        main.insert(
            "ports".into(),
            json!([{ "containerPort": port, "name": "http", "protocol": "TCP" }]),
        );
        // Only ready pods get Service traffic; the control plane's MCP checks come on top.
        main.insert(
            "readinessProbe".into(),
            json!({ "tcpSocket": { "port": "http" }, "periodSeconds": 5 }),
        );
    }
    if let Some(resources) = pod::resources(&container.resources) {
        main.insert("resources".into(), resources);
    }
    main.insert(
        "securityContext".into(),
        pod::container_security(container.read_only),
    );
    if stdio.is_some() {
        // The control plane attaches to the container's stdin and stdout through the API
        // server: stdin stays open across attaches, and no TTY mangles the protocol's bytes.
        main.insert("stdin".into(), true.into());
        main.insert("stdinOnce".into(), false.into());
        main.insert("tty".into(), false.into());
    }
    if let Some(autoscale) = &server.autoscale {
        for (target, resource, field, requested) in [
            (
                autoscale.cpu,
                "cpu",
                "cpus",
                container.resources.cpus.is_some(),
            ),
            (
                autoscale.memory,
                "memory",
                "memory",
                container.resources.memory.is_some(),
            ),
        ] {
            if target.is_some() && !requested {
                found.push(Problem::AutoscaleWithoutRequest {
                    server: server.name.clone(),
                    span: server.span,
                    resource,
                    field,
                });
            }
        }
    }
    let files = Files::new(names, server, container, &mut found);
    main.insert("volumeMounts".into(), files.mounts.into());
    if !found.is_empty() {
        problems.extend(found);
        return None;
    }

    let mut selector = Map::new();
    selector.insert(meta::FLEET.into(), names.fleet.name.clone().into());
    selector.insert(meta::SERVER.into(), server.name.clone().into());
    let (replicas, pooled) = match stdio {
        Some(Isolation::PerSession { warm, .. }) => (warm, true),
        Some(Isolation::Shared) | None => (server.replicas, false),
    };
    let mut spec = json!({
        // Servers do not talk to the API server, nor see the namespace's Services in
        // their environment.
        "automountServiceAccountToken": false,
        "containers": [main],
        "enableServiceLinks": false,
        "securityContext": pod::pod_security(files.user),
        "volumes": files.volumes,
    });
    placement(&mut spec, server, &selector);
    Some(Pods {
        selector,
        spec,
        port,
        replicas,
        pooled,
    })
}

/// Who may reach the server's pods and whom they may reach: ingress only from the control
/// plane (and the gateway replicas, which relay to the instances themselves) and only to an
/// http server's port (a stdio server is attached to through the API server, not the pod
/// network); egress DNS (not with `container.network: none`) and the destinations of
/// `kubernetes.egress`.
fn network_policy(
    names: &Names<'_>,
    server: &Server,
    selector: &Map<String, Value>,
    labels: Map<String, Value>,
    port: Option<u16>,
    container: &Container,
) -> Value {
    let mut from =
        vec![json!({ "podSelector": { "matchLabels": crate::control_plane::selector(names) } })];
    if names.fleet.kubernetes.gateway_replicas.is_some() {
        from.push(json!({ "podSelector": { "matchLabels": crate::gateway::selector(names) } }));
    }
    let ingress = match port {
        Some(port) => json!([{
            "from": from,
            "ports": [{ "port": port, "protocol": "TCP" }],
        }]),
        None => json!([]),
    };
    let mut egress = match container.network {
        ContainerNetwork::None => Vec::new(),
        ContainerNetwork::Bridge | ContainerNetwork::Named(_) => vec![json!({
            "ports": [{ "port": 53, "protocol": "UDP" }, { "port": 53, "protocol": "TCP" }],
        })],
    };
    for destination in &server.kubernetes.egress {
        let mut rule = json!({ "to": [{ "ipBlock": { "cidr": destination.cidr() } }] });
        if let Some(port) = destination.port {
            rule["ports"] = json!([{ "port": port, "protocol": "TCP" }]);
        }
        egress.push(rule);
    }
    names.labelled(
        "networking.k8s.io/v1",
        "NetworkPolicy",
        &server.name,
        labels,
        json!({
            "spec": {
                "egress": egress,
                "ingress": ingress,
                "podSelector": { "matchLabels": selector },
                "policyTypes": ["Ingress", "Egress"],
            }
        }),
    )
}

/// Where the pods may run: `kubernetes:`'s node selector, tolerations and priority class,
/// and its spreading of replicas across nodes as pod anti-affinity to the server's own pods.
fn placement(pod_spec: &mut Value, server: &Server, selector: &Map<String, Value>) {
    let placement = &server.kubernetes;
    if !placement.node_selector.is_empty() {
        pod_spec["nodeSelector"] = json!(placement.node_selector);
    }
    if !placement.tolerations.is_empty() {
        let tolerations: Vec<Value> = (placement.tolerations.iter())
            .map(|t| {
                let mut toleration = json!({ "operator": t.operator });
                if let Some(key) = &t.key {
                    toleration["key"] = key.as_str().into();
                }
                if let Some(value) = &t.value {
                    toleration["value"] = value.as_str().into();
                }
                if let Some(effect) = &t.effect {
                    toleration["effect"] = json!(effect);
                }
                toleration
            })
            .collect();
        pod_spec["tolerations"] = tolerations.into();
    }
    if let Some(class) = &placement.priority_class {
        pod_spec["priorityClassName"] = class.as_str().into();
    }
    let term = json!({
        "labelSelector": { "matchLabels": selector },
        "topologyKey": "kubernetes.io/hostname",
    });
    let anti_affinity = match placement.spread {
        Spread::None => return,
        Spread::Preferred => json!({
            "preferredDuringSchedulingIgnoredDuringExecution": [
                { "podAffinityTerm": term, "weight": 100 },
            ],
        }),
        Spread::Required => json!({ "requiredDuringSchedulingIgnoredDuringExecution": [term] }),
    };
    pod_spec["affinity"] = json!({ "podAntiAffinity": anti_affinity });
}

/// A HorizontalPodAutoscaler of the Deployment `name` (a server's, or the gateway
/// replicas') between `min` and `max` replicas on the targets the file sets: CPU and
/// memory as a share of the request, and live client sessions per pod from the gateway's
/// `mcpfleet_sessions` metric, which reaches the autoscaler only through a custom-metrics
/// adapter (prometheus-adapter, KEDA) the cluster must run.
pub(crate) fn autoscaler(
    names: &Names<'_>,
    name: &str,
    autoscale: &Autoscale,
    labels: Map<String, Value>,
) -> Value {
    let mut metrics = Vec::new();
    for (resource, target) in [("cpu", autoscale.cpu), ("memory", autoscale.memory)] {
        if let Some(percent) = target {
            metrics.push(json!({
                "resource": {
                    "name": resource,
                    "target": { "averageUtilization": percent, "type": "Utilization" },
                },
                "type": "Resource",
            }));
        }
    }
    if let Some(sessions) = autoscale.sessions_per_pod {
        metrics.push(json!({
            "pods": {
                "metric": { "name": "mcpfleet_sessions" },
                "target": { "averageValue": sessions.to_string(), "type": "AverageValue" },
            },
            "type": "Pods",
        }));
    }
    names.labelled(
        "autoscaling/v2",
        "HorizontalPodAutoscaler",
        name,
        labels,
        json!({
            "spec": {
                "maxReplicas": autoscale.max,
                "metrics": metrics,
                "minReplicas": autoscale.min,
                "scaleTargetRef": { "apiVersion": "apps/v1", "kind": "Deployment", "name": name },
            }
        }),
    )
}

/// The pinned image when it can be pulled by it (`name@sha256:…`); a bare image id
/// (`sha256:…`, an image without a repository digest) names nothing a cluster can pull.
fn pullable(digest: Option<&str>) -> Option<&str> {
    digest.filter(|d| d.contains('@'))
}

/// The file's `pull`; a pinned digest never changes, so `always` would only ask again.
fn pull_policy(container: &Container, pinned: bool) -> &'static str {
    use fleet_spec::model::Pull;
    match (container.pull, pinned) {
        (Pull::Never, _) => "Never",
        (Pull::IfMissing, _) | (Pull::Always, true) => "IfNotPresent",
        (Pull::Always, false) => "Always",
    }
}

/// The server's strings as every pod gets them.
struct Texts<'a> {
    server: &'a Server,
    port: Option<u16>,
    problems: &'a mut Vec<Problem>,
}

impl Texts<'_> {
    /// The shown form (vars and `env()` rendered, secrets masked) with `{{ port }}` the
    /// server's port. A value only a local instance has, or a secret, is a problem.
    fn text(&mut self, field: &str, text: &Text) -> String {
        if !is_template(&text.template) {
            return text.template.clone();
        }
        let shown = match self.port {
            Some(port) => text.shown.replace("<port>", &port.to_string()),
            None => text.shown.clone(),
        };
        let per_instance = ["<port>", "<revision>", "<now>", "<random_string(", "***"];
        if per_instance
            .iter()
            .any(|placeholder| shown.contains(placeholder))
        {
            self.problems.push(Problem::PerInstanceValue {
                server: self.server.name.clone(),
                span: self.server.span,
                field: field.to_owned(),
            });
        }
        shown
    }
}

fn is_template(text: &str) -> bool {
    text.contains("{{") || text.contains("{%") || text.contains("{#")
}

/// What the pod gets from `container:` besides its process: the user, and the volumes
/// with their mounts (`/tmp`, secret files, named volumes).
struct Files {
    user: (u32, u32),
    volumes: Vec<Value>,
    mounts: Vec<Value>,
}

impl Files {
    fn new(
        names: &Names<'_>,
        server: &Server,
        container: &Container,
        problems: &mut Vec<Problem>,
    ) -> Self {
        let mut files = Files {
            user: pod::numeric_user(container.user.as_deref()),
            volumes: vec![pod::tmp_volume()],
            mounts: vec![pod::tmp_mount()],
        };
        if files.user.0 == 0 {
            problems.push(Problem::RootUser {
                server: server.name.clone(),
                span: server.span,
                user: container.user.clone().unwrap_or_default(),
            });
        }
        files.secrets(names, server, container, problems);
        for (i, volume) in container.volumes.iter().enumerate() {
            match &volume.source {
                VolumeSource::Path(path) => problems.push(Problem::HostPath {
                    server: server.name.clone(),
                    span: server.span,
                    path: path.display().to_string(),
                }),
                VolumeSource::Named(claim) => {
                    let name = format!("volume-{i}");
                    files.volumes.push(json!({
                        "name": name,
                        "persistentVolumeClaim": { "claimName": claim, "readOnly": volume.read_only },
                    }));
                    files.mounts.push(json!({
                        "mountPath": volume.target,
                        "name": name,
                        "readOnly": volume.read_only,
                    }));
                }
            }
        }
        files
    }

    /// Secret files, by reference only: one `secret` volume per Kubernetes Secret with the
    /// keys the server uses as `items`, each key mounted read-only at its path. Readable
    /// by the container's group (`fsGroup`), as locally by its user.
    fn secrets(
        &mut self,
        names: &Names<'_>,
        server: &Server,
        container: &Container,
        problems: &mut Vec<Problem>,
    ) {
        let mut by_secret: Vec<(String, Vec<String>)> = Vec::new();
        for file in &container.secrets {
            let (secret, key) = names.secret_key(&file.secret);
            if !fleet_spec::is_dns_subdomain(&secret) {
                problems.push(Problem::SecretName {
                    server: server.name.clone(),
                    span: server.span,
                    secret: file.secret.clone(),
                    name: secret.clone(),
                });
            }
            let index = match by_secret.iter().position(|(s, _)| *s == secret) {
                Some(index) => index,
                None => {
                    by_secret.push((secret, Vec::new()));
                    by_secret.len() - 1
                }
            };
            let keys = &mut by_secret[index].1;
            if !keys.contains(&key) {
                keys.push(key.clone());
            }
            self.mounts.push(json!({
                "mountPath": file.target,
                "name": format!("secrets-{index}"),
                "readOnly": true,
                "subPath": key,
            }));
        }
        for (index, (secret, keys)) in by_secret.into_iter().enumerate() {
            let items: Vec<Value> = keys
                .iter()
                .map(|key| json!({ "key": key, "path": key }))
                .collect();
            self.volumes.push(json!({
                "name": format!("secrets-{index}"),
                "secret": { "defaultMode": 0o440, "items": items, "secretName": secret },
            }));
        }
    }
}
