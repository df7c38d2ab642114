//! A fleet file rendered as Kubernetes manifests: the golden manifests of
//! examples/kubernetes.yaml, examples/kubernetes-postgres.yaml and
//! examples/kubernetes-gateway-replicas.yaml, the hardening every pod gets, secrets that
//! stay references, the control plane and backup of a fleet whose state is in PostgreSQL,
//! gateway replicas and what they need, and the servers a cluster cannot run, all named at
//! once.

use fleet_manifests::yaml::to_yaml_stream;
use fleet_manifests::{Options, Problem, check_runnable, file_names, render, revision_deployment};
use fleet_spec::model::Executable;
use fleet_spec::template::Host;
use fleet_spec::{LoadOptions, ValidFleet, load_str};
use fleet_testkit::kube;
use serde_json::Value;
use std::path::{Path, PathBuf};
use std::sync::Arc;

const GITHUB_TOKEN: &str = "ghp_thevalueofthesecret";
const DOCS_TOKEN: &str = "docs-token-value-9f8e7d";

/// A machine whose environment holds the example's secrets, so that a manifest that
/// copied one would show it.
struct SecretsInEnvironment;

impl Host for SecretsInEnvironment {
    fn env_var(&self, name: &str) -> Option<String> {
        match name {
            "GITHUB_TOKEN" => Some(GITHUB_TOKEN.into()),
            "DOCS_TOKEN" => Some(DOCS_TOKEN.into()),
            _ => None,
        }
    }
    fn file_exists(&self, _: &Path) -> bool {
        true
    }
    fn read_file(&self, _: &Path) -> std::io::Result<String> {
        Ok(GITHUB_TOKEN.into())
    }
}

fn load(text: &str) -> ValidFleet {
    load_in(text, None)
}

/// `text` with the overlay of `environment`.
fn load_in(text: &str, environment: Option<&str>) -> ValidFleet {
    let options = LoadOptions {
        environment: environment.map(str::to_owned),
        host: Arc::new(SecretsInEnvironment),
    };
    load_str("fleet.yaml", text, PathBuf::from("/fleet"), &options)
        .into_valid()
        .unwrap_or_else(|errors| panic!("{errors:#?}"))
}

fn example() -> String {
    example_named("kubernetes.yaml")
}

fn example_named(name: &str) -> String {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../examples")
        .join(name);
    std::fs::read_to_string(path).unwrap_or_else(|_| panic!("examples/{name}"))
}

/// What a rendered fleet's gateway needs, since the control plane serves it on its pod's
/// network: tokens, and TLS (here ended by the Ingress).
const SERVED_GATEWAY: &str = "gateway:\n  auth:\n    tokens: [{ name: ci, sha256: \"9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08\", servers: [\"*\"] }]\n  tls: { terminated_by: proxy }\n";

fn render_example() -> Vec<Value> {
    let text = example();
    render(&load(&text), &Options::new(text)).expect("the example renders")
}

/// The pod specs of an object: a Deployment's template, a CronJob's job template.
fn pod_spec(object: &Value) -> Option<&Value> {
    object
        .pointer("/spec/template/spec")
        .or_else(|| object.pointer("/spec/jobTemplate/spec/template/spec"))
}

#[test]
fn the_kubernetes_example_renders_as_its_golden_manifests() {
    insta::assert_snapshot!("kubernetes_example", to_yaml_stream(&render_example()));
}

#[test]
fn the_example_renders_each_server_as_the_design_says() {
    let objects = render_example();
    let find = |kind: &str, name: &str| {
        objects
            .iter()
            .find(|o| o["kind"] == kind && o["metadata"]["name"] == name)
            .unwrap_or_else(|| panic!("no {kind} {name}"))
    };
    assert_eq!(objects[0]["kind"], "Namespace", "the namespace comes first");
    assert_eq!(objects[0]["metadata"]["name"], "mcp-tools");
    // http: a Service on the port; autoscaled, so the autoscaler sets the replicas.
    assert!(
        find("Deployment", "search")["spec"]
            .get("replicas")
            .is_none()
    );
    let hpa = &find("HorizontalPodAutoscaler", "search")["spec"];
    assert_eq!(
        (&hpa["minReplicas"], &hpa["maxReplicas"]),
        (&2.into(), &10.into())
    );
    assert_eq!(
        hpa["metrics"][0]["resource"]["target"]["averageUtilization"],
        70
    );
    assert_eq!(
        hpa["metrics"][1]["pods"]["metric"]["name"],
        "mcpfleet_sessions"
    );
    assert_eq!(find("Service", "search")["spec"]["ports"][0]["port"], 8080);
    // Placement, and replicas spread over nodes when the scheduler can.
    let pod = &find("Deployment", "search")["spec"]["template"]["spec"];
    assert_eq!(pod["nodeSelector"]["pool"], "mcp");
    assert_eq!(pod["tolerations"][0]["effect"], "NoSchedule");
    assert_eq!(pod["priorityClassName"], "mcp-high");
    let spread =
        &pod["affinity"]["podAntiAffinity"]["preferredDuringSchedulingIgnoredDuringExecution"][0];
    assert_eq!(
        spread["podAffinityTerm"]["labelSelector"]["matchLabels"]["mcpfleet.io/server"],
        "search"
    );
    // Declared egress beside DNS.
    let egress = &find("NetworkPolicy", "github")["spec"]["egress"];
    assert_eq!(egress[1]["to"][0]["ipBlock"]["cidr"], "0.0.0.0/0");
    assert_eq!(egress[1]["ports"][0]["port"], 443);
    // The namespace's quota, and defaults for containers that request nothing.
    assert_eq!(
        find("ResourceQuota", "mcpfleet-quota")["spec"]["hard"]["requests.cpu"],
        "8"
    );
    assert_eq!(
        find("LimitRange", "mcpfleet-limits")["spec"]["limits"][0]["type"],
        "Container"
    );
    // The gateway from outside, over TLS.
    let ingress = &find("Ingress", "mcpfleet")["spec"];
    assert_eq!(ingress["ingressClassName"], "nginx");
    assert_eq!(ingress["tls"][0]["secretName"], "mcp-tls");
    assert_eq!(ingress["rules"][0]["host"], "mcp.example.com");
    assert!(
        !objects.iter().any(|o| o["kind"] == "ServiceMonitor"),
        "not asked for"
    );
    let github = find("Deployment", "github");
    assert_eq!(github["spec"]["replicas"], 2);
    // Attached to through the API server: stdin open across attaches, no TTY.
    let container = &github["spec"]["template"]["spec"]["containers"][0];
    assert_eq!(
        (
            &container["stdin"],
            &container["stdinOnce"],
            &container["tty"]
        ),
        (&true.into(), &false.into(), &false.into())
    );
    assert!(
        !objects
            .iter()
            .any(|o| o["kind"] == "Service" && o["metadata"]["name"] == "github")
    );
    // Per-session: the warm pool, picked by a label a session's pod leaves.
    let scratchpad = find("Deployment", "scratchpad");
    assert_eq!(scratchpad["spec"]["replicas"], 3);
    assert_eq!(
        scratchpad["spec"]["selector"]["matchLabels"]["mcpfleet.io/pool"],
        "warm"
    );
    // Remote: nothing in the cluster.
    assert!(!objects.iter().any(|o| o["metadata"]["name"] == "docs"));
    // Requests are limits, in Kubernetes quantities.
    let resources =
        &find("Deployment", "search")["spec"]["template"]["spec"]["containers"][0]["resources"];
    assert_eq!(resources["limits"], resources["requests"]);
    assert_eq!(resources["limits"]["cpu"], "500m");
    assert_eq!(resources["limits"]["memory"], "256Mi");
    // The user of the file, numeric; `{{ port }}` is the server's port.
    let search = &find("Deployment", "search")["spec"]["template"]["spec"];
    assert_eq!(search["securityContext"]["runAsUser"], 1000);
    assert_eq!(search["containers"][0]["args"][1], "8080");
    // The control plane reads the fleet file from its ConfigMap.
    assert_eq!(
        find("ConfigMap", "mcpfleet-config")["data"]["fleet.yaml"],
        example()
    );
    let service = find("Service", "mcpfleet");
    assert_eq!(
        service["metadata"]["annotations"]["prometheus.io/scrape"],
        "true"
    );
    assert_eq!(
        service["metadata"]["annotations"]["prometheus.io/port"],
        "7471"
    );
    let backup = find("CronJob", "mcpfleet-backup");
    let args = &backup["spec"]["jobTemplate"]["spec"]["template"]["spec"]["containers"][0]["args"];
    assert_eq!(args[0], "export-state");
    assert_eq!(backup["spec"]["schedule"], "30 2 * * *");
    let state = find("PersistentVolumeClaim", "mcpfleet-state");
    assert_eq!(state["spec"]["resources"]["requests"]["storage"], "2Gi");
    let control_plane =
        &find("Deployment", "mcpfleet")["spec"]["template"]["spec"]["containers"][0];
    assert_eq!(control_plane["image"], "registry.example/mcpfleet:0.1.0");
}

#[test]
fn every_pod_template_meets_the_restricted_pod_security_standard() {
    // search, github, scratchpad, the control plane, the backup; notes, the control
    // plane on its scratch volume, the backup of the database; with gateway replicas
    // theirs and clock's besides.
    for (objects, count) in [
        (render_example(), 5),
        (render_postgres_example(), 3),
        (render_gateway_replicas_example(), 5),
    ] {
        let pods: Vec<&Value> = objects.iter().filter(|o| pod_spec(o).is_some()).collect();
        assert_eq!(pods.len(), count);
        every_pod_is_hardened(pods);
    }
}

fn every_pod_is_hardened(pods: Vec<&Value>) {
    for object in pods {
        let violations = kube::hardened_violations(object);
        assert!(violations.is_empty(), "{violations:#?}");
        // And the writable /tmp a read-only root needs.
        let spec = pod_spec(object).unwrap();
        let name = &object["metadata"]["name"];
        let volumes = spec["volumes"].as_array().unwrap();
        assert!(
            volumes
                .iter()
                .any(|v| v["name"] == "tmp" && v["emptyDir"].is_object()),
            "{name}"
        );
        for container in spec["containers"].as_array().unwrap() {
            let mounts = container["volumeMounts"].as_array().unwrap();
            assert!(
                mounts
                    .iter()
                    .any(|m| m["mountPath"] == "/tmp" && m["name"] == "tmp"),
                "{name}"
            );
        }
    }
}

#[test]
fn the_written_manifests_validate_against_every_supported_kubernetes_and_read_back_unchanged() {
    let objects = render_example();
    let text = to_yaml_stream(&objects);
    let read = kube::parse_yaml_documents(&text).expect("the stream parses");
    assert_eq!(read, objects, "the YAML writer changed a value");
    let dir = fleet_testkit::TempDir::new("manifests");
    let file = dir.path().join("tools.yaml");
    std::fs::write(&file, &text).unwrap();
    for version in kube::SUPPORTED_VERSIONS {
        if let Err(error) = kube::validate_strict(std::slice::from_ref(&file), version) {
            panic!("{error}");
        }
    }
}

#[test]
fn secrets_are_referenced_and_their_values_never_written() {
    let objects = render_example();
    let text = to_yaml_stream(&objects);
    for value in [GITHUB_TOKEN, DOCS_TOKEN] {
        assert!(
            !text.contains(value),
            "a secret's value is in the manifests"
        );
    }
    // The secret file is a key of the fleet's Secret, mounted where the file says.
    let github = objects
        .iter()
        .find(|o| o["kind"] == "Deployment" && o["metadata"]["name"] == "github")
        .unwrap();
    let spec = &github["spec"]["template"]["spec"];
    let volume = spec["volumes"]
        .as_array()
        .unwrap()
        .iter()
        .find(|v| v.get("secret").is_some())
        .expect("a secret volume");
    // As the file maps it: key `token` of the Secret `github`.
    assert_eq!(volume["secret"]["secretName"], "github");
    assert_eq!(
        volume["secret"]["items"],
        serde_json::json!([{ "key": "token", "path": "token" }])
    );
    let mount = spec["containers"][0]["volumeMounts"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["name"] == volume["name"])
        .unwrap();
    assert_eq!(mount["mountPath"], "/run/secrets/github_token");
    assert_eq!(mount["subPath"], "token");
    assert_eq!(mount["readOnly"], true);
    assert!(
        !objects.iter().any(|o| o["kind"] == "Secret"),
        "secrets are the user's to create"
    );
}

#[test]
fn check_runnable_refuses_what_render_refuses_and_runs_stdio_servers() {
    let text = "\
version: 1
name: tools
runtime: kubernetes
servers:
  web:
    http: { image: registry.example/web:1, port: 8080 }
  local:
    http: { command: ./server.sh }
  notes:
    stdio: { image: registry.example/notes:1 }
  docs:
    remote: { url: https://docs.example/mcp }
";
    let error = check_runnable(&load(text)).expect_err("cannot run");
    let found = located(&error.problems);
    assert_eq!(
        found,
        [
            (
                "server `local` runs a local program (`command:`); a cluster runs images: give it `image:`".to_owned(),
                Some(7)
            ),
        ]
    );
    // A stdio image server runs: the runtime attaches to its pods.
    let runnable = "version: 1\nname: tools\nruntime: kubernetes\nservers:\n  web:\n    http: { image: registry.example/web:1 }\n  notes:\n    stdio: { image: registry.example/notes:1 }\n  docs:\n    remote: { url: https://docs.example/mcp }\n";
    assert_eq!(check_runnable(&load(runnable)), Ok(()));
}

#[test]
fn servers_a_cluster_cannot_run_are_all_named_with_where_they_are() {
    let text = "\
version: 1
name: tools
servers:
  local:
    stdio: { command: ./server.sh }
  ok:
    stdio: { image: registry.example/ok:1 }
  mounts:
    stdio: { image: registry.example/m:1 }
    container: { volumes: [\"/srv/data:/data\"] }
  bad_name:
    stdio: { image: registry.example/b:1 }
  stamped:
    http:
      image: registry.example/s:1
      args: [\"--started\", \"{{ now() }}\"]
  root:
    stdio: { image: registry.example/r:1 }
    container: { user: \"0:0\" }
";
    let text = &format!("{text}{SERVED_GATEWAY}");
    let fleet = load(text);
    let error = render(&fleet, &Options::new(text)).expect_err("cannot render");
    let names: Vec<(&str, u32)> = error
        .problems
        .iter()
        .map(|p| match p {
            Problem::LocalProgram { server, span }
            | Problem::ServerName { server, span }
            | Problem::HostPath { server, span, .. }
            | Problem::RootUser { server, span, .. }
            | Problem::PerInstanceValue { server, span, .. }
            | Problem::SecretName { server, span, .. }
            | Problem::AutoscaleWithoutRequest { server, span, .. } => (server.as_str(), span.line),
            Problem::StateSecretFromFile { secret, span }
            | Problem::SessionKeyFromFile { secret, span } => (secret.as_str(), span.line),
            Problem::GatewayReplicasWithoutStore { span }
            | Problem::GatewayReplicasWithoutSessionKeys { span } => {
                ("gateway_replicas", span.line)
            }
            Problem::Namespace { namespace } => (namespace.as_str(), 0),
            Problem::NotInCluster { server } => (server.as_str(), 0),
            Problem::GatewayWithoutTokens { .. } | Problem::GatewayWithoutTls { .. } => {
                ("gateway", 0)
            }
        })
        .collect();
    assert_eq!(
        names,
        [
            ("local", 4),
            ("mounts", 8),
            ("bad_name", 11),
            ("stamped", 13),
            ("root", 17)
        ]
    );
    let message = error.to_string();
    assert!(
        message.contains(
            "server `local` runs a local program (`command:`); a cluster runs images: give it `image:`"
        ),
        "{message}"
    );
    assert!(message.contains("`args[1]`"), "{message}");
    assert!(message.contains("/srv/data"), "{message}");
    let diagnostics = error.diagnostics();
    assert_eq!(diagnostics.len(), 5);
    assert!(
        diagnostics
            .iter()
            .all(|d| d.is_error() && d.span.is_some() && d.help.is_some())
    );
}

#[test]
fn pods_run_the_pinned_digest_when_a_cluster_can_pull_it() {
    let text = example();
    let mut fleet = load(&text);
    let pin = |fleet: &mut ValidFleet, server: &str, pinned: &str| {
        let server = fleet.servers.iter_mut().find(|s| s.name == server).unwrap();
        if let Some(Executable::Image { digest, .. }) = server.transport.executable_mut() {
            *digest = Some(pinned.into());
        }
    };
    let by_digest = "registry.example/search@sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";
    pin(&mut fleet, "search", by_digest);
    // A bare image id: only the machine that built it knows it.
    pin(
        &mut fleet,
        "scratchpad",
        "sha256:fedcba9876543210fedcba9876543210fedcba9876543210fedcba9876543210",
    );
    let objects = render(&fleet, &Options::new(text)).unwrap();
    let image = |name: &str| {
        let deployment = objects
            .iter()
            .find(|o| o["kind"] == "Deployment" && o["metadata"]["name"] == name)
            .unwrap();
        deployment["spec"]["template"]["spec"]["containers"][0]["image"].clone()
    };
    assert_eq!(image("search"), by_digest);
    assert_eq!(image("scratchpad"), "registry.example/scratchpad:3.1");
}

#[test]
fn a_deployment_marks_every_object_it_applies() {
    let text = example();
    let options = Options {
        deployment: Some(42),
        ..Options::new(text.clone())
    };
    let objects = render(&load(&text), &options).unwrap();
    for object in &objects {
        assert_eq!(
            object["metadata"]["annotations"]["mcpfleet.io/deployment"], "42",
            "{}",
            object["metadata"]["name"]
        );
    }
    // Without one, no object claims a deployment.
    assert!(render_example().iter().all(|o| {
        o["metadata"]["annotations"]
            .get("mcpfleet.io/deployment")
            .is_none()
    }));
}

#[test]
fn manifest_files_are_named_in_apply_order_by_kind_and_name() {
    let names = file_names(&render_example());
    assert_eq!(names[0], "00-namespace-mcp-tools.yaml");
    assert!(
        names.contains(&"01-resourcequota-mcpfleet-quota.yaml".to_string()),
        "{names:?}"
    );
    let mut sorted = names.clone();
    sorted.sort();
    assert_eq!(sorted, names, "file order is apply order");
}

#[test]
fn a_local_fleet_whose_names_kubernetes_refuses_is_told_what_to_set() {
    // A fleet not marked for Kubernetes: the file's checks leave its derived names alone.
    let text = "\
version: 1
name: my_tools
secrets:
  key: { env: GITHUB_TOKEN }
servers:
  scaled:
    stdio: { image: registry.example/s:1 }
    autoscale: { min: 1, max: 4, cpu: 80 }
    container: { secrets: { /run/key: key } }
";
    let text = &format!("{text}{SERVED_GATEWAY}");
    let error = render(&load(text), &Options::new(text)).expect_err("cannot render");
    assert_eq!(
        error.problems,
        [
            Problem::Namespace {
                namespace: "my_tools".into()
            },
            Problem::AutoscaleWithoutRequest {
                server: "scaled".into(),
                span: error.problems[1].span().unwrap(),
                resource: "cpu",
                field: "cpus",
            },
            Problem::SecretName {
                server: "scaled".into(),
                span: error.problems[2].span().unwrap(),
                secret: "key".into(),
                name: "my_tools-secrets".into(),
            },
        ]
    );
    assert!(
        error.diagnostics()[0]
            .help
            .as_deref()
            .unwrap()
            .contains("kubernetes.namespace")
    );
}

#[test]
fn a_service_monitor_is_rendered_when_the_fleet_asks_for_one() {
    let text = example().replace(
        "kubernetes:\n  namespace: mcp-tools\n",
        "kubernetes:\n  namespace: mcp-tools\n  service_monitor: true\n",
    );
    let objects = render(&load(&text), &Options::new(text.clone())).unwrap();
    let monitor = objects
        .iter()
        .find(|o| o["kind"] == "ServiceMonitor")
        .expect("a ServiceMonitor");
    assert_eq!(monitor["apiVersion"], "monitoring.coreos.com/v1");
    assert_eq!(monitor["spec"]["endpoints"][0]["port"], "admin");
    // It selects the control plane's Service, by that Service's labels.
    let service = objects
        .iter()
        .find(|o| o["kind"] == "Service" && o["metadata"]["name"] == "mcpfleet")
        .unwrap();
    let selector = monitor["spec"]["selector"]["matchLabels"]
        .as_object()
        .unwrap();
    for (key, value) in selector {
        assert_eq!(&service["metadata"]["labels"][key], value, "{key}");
    }
}

#[test]
fn the_control_plane_may_port_forward_only_when_the_fleet_reaches_pods_so() {
    let port_forwards = |text: String| {
        let objects = render(&load(&text), &Options::new(text.clone())).unwrap();
        let role = objects
            .iter()
            .find(|o| o["kind"] == "Role" && o["metadata"]["name"] == "mcpfleet")
            .expect("the control plane's Role");
        role["rules"]
            .as_array()
            .unwrap()
            .iter()
            .any(|rule| rule["resources"] == serde_json::json!(["pods/portforward"]))
    };
    assert!(
        !port_forwards(example()),
        "in the cluster it reaches pod IPs"
    );
    let forwarding = example().replace(
        "kubernetes:\n  namespace: mcp-tools\n",
        "kubernetes:\n  namespace: mcp-tools\n  reach: port-forward\n",
    );
    assert!(port_forwards(forwarding));
}

#[test]
fn a_progress_deadline_is_every_server_deployments_and_none_is_the_clusters_default() {
    let deadlines = |text: String| -> Vec<Option<u64>> {
        let objects = render(&load(&text), &Options::new(text.clone())).unwrap();
        (objects.iter())
            .filter(|o| o["kind"] == "Deployment" && o["metadata"]["name"] != "mcpfleet")
            .map(|o| {
                o.pointer("/spec/progressDeadlineSeconds")
                    .and_then(Value::as_u64)
            })
            .collect()
    };
    let unset = deadlines(example());
    assert!(
        !unset.is_empty() && unset.iter().all(Option::is_none),
        "{unset:?}"
    );
    // Whole seconds, rounded up.
    let set = deadlines(example().replace(
        "kubernetes:\n  namespace: mcp-tools\n",
        "kubernetes:\n  namespace: mcp-tools\n  progress_deadline: 2m500ms\n",
    ));
    assert!(set.iter().all(|s| *s == Some(121)), "{set:?}");
}

#[test]
fn a_revisions_deployment_runs_the_pod_template_render_writes() {
    let fleet = load(&example());
    let options = Options {
        fleet_file: example(),
        deployment: Some(12),
    };
    let rendered = render(&fleet, &options).unwrap();
    let rendered = (rendered.iter())
        .find(|o| o["kind"] == "Deployment" && o["metadata"]["name"] == "search")
        .unwrap();
    let revision = revision_deployment(&fleet, "search", 3, &options).unwrap();
    assert_eq!(revision["metadata"]["name"], "search-r3");
    let pick = |object: &Value, key: &str| object.pointer(key).cloned();
    assert_eq!(
        pick(&revision, "/spec/template/spec"),
        pick(rendered, "/spec/template/spec"),
        "one pod template for both"
    );
    assert_eq!(
        pick(&revision, "/spec/selector/matchLabels"),
        Some(serde_json::json!({
            "mcpfleet.io/fleet": "tools", "mcpfleet.io/server": "search", "mcpfleet.io/revision": "3",
        }))
    );
    assert_eq!(
        pick(
            &revision,
            "/spec/template/metadata/labels/mcpfleet.io~1revision"
        ),
        Some("3".into())
    );
    assert_eq!(
        pick(&revision, "/metadata/annotations/mcpfleet.io~1deployment"),
        Some("12".into())
    );
    assert_eq!(
        pick(&revision, "/spec/replicas"),
        None,
        "the runtime sets the replicas"
    );
    assert!(kube::hardened_violations(&revision).is_empty());

    let remote = revision_deployment(&fleet, "docs", 3, &options).unwrap_err();
    assert_eq!(
        remote.problems,
        [Problem::NotInCluster {
            server: "docs".into()
        }]
    );
    assert!(revision_deployment(&fleet, "nope", 3, &options).is_err());
}

#[test]
fn a_gateway_the_pod_network_would_reach_without_tokens_or_tls_is_refused_at_its_listen() {
    let text = "\
version: 1
name: tools
gateway:
  listen: 127.0.0.1:7470
servers:
  web:
    http: { image: registry.example/web:1, port: 8080 }
";
    let fleet = load(text);
    let error = render(&fleet, &Options::new(text)).expect_err("an open gateway");
    let found = located(&error.problems);
    assert_eq!(
        found,
        [
            (
                "the gateway would serve the pod's network without authentication".to_owned(),
                Some(4)
            ),
            (
                "the gateway would serve the pod's network without TLS".to_owned(),
                Some(4)
            ),
        ]
    );
    assert!(
        error.diagnostics()[1]
            .help
            .as_deref()
            .is_some_and(|help| help.contains("terminated_by: proxy"))
    );
    // A control plane outside the cluster serves the gateway where the file says: its
    // servers still run there.
    assert_eq!(check_runnable(&fleet), Ok(()));
    // Tokens and TLS ended in front: rendered.
    let served = text.replace("gateway:\n  listen: 127.0.0.1:7470\n", "") + SERVED_GATEWAY;
    assert!(render(&load(&served), &Options::new(served.clone())).is_ok());
}

#[test]
fn the_control_plane_serves_its_pod_network_where_the_service_scrape_and_probe_point() {
    let objects = render_example();
    let find = |kind: &str| {
        objects
            .iter()
            .find(|o| o["kind"] == kind && o["metadata"]["name"] == "mcpfleet")
            .unwrap_or_else(|| panic!("no {kind} mcpfleet"))
    };
    let container = &find("Deployment")["spec"]["template"]["spec"]["containers"][0];
    let args: Vec<&str> = (container["args"].as_array().unwrap().iter())
        .filter_map(Value::as_str)
        .collect();
    assert!(args.contains(&"--pod-network"), "{args:?}");
    let probe = &container["readinessProbe"]["httpGet"];
    assert_eq!(
        (&probe["path"], &probe["port"]),
        (&"/healthz".into(), &"admin".into())
    );
    let port = |name: &str| {
        (container["ports"].as_array().unwrap().iter())
            .find(|p| p["name"] == name)
            .map(|p| p["containerPort"].clone())
            .unwrap()
    };
    // The file's ports, which `up --pod-network` opens on the pod's address.
    assert_eq!((port("gateway"), port("admin")), (7470.into(), 7471.into()));
    let service = find("Service");
    assert_eq!(
        service["metadata"]["annotations"]["prometheus.io/port"],
        "7471"
    );
    assert_eq!(
        service["metadata"]["annotations"]["prometheus.io/path"],
        "/metrics"
    );
}

fn render_postgres_example() -> Vec<Value> {
    let text = example_named("kubernetes-postgres.yaml");
    render(&load(&text), &Options::new(text)).expect("the example renders")
}

/// Each problem as it reads, and the line it points at.
fn located(problems: &[Problem]) -> Vec<(String, Option<u32>)> {
    problems
        .iter()
        .map(|p| (p.to_string(), p.span().map(|s| s.line)))
        .collect()
}

fn find<'a>(objects: &'a [Value], kind: &str, name: &str) -> &'a Value {
    (objects.iter())
        .find(|o| o["kind"] == kind && o["metadata"]["name"] == name)
        .unwrap_or_else(|| panic!("no {kind} {name}"))
}

#[test]
fn the_postgres_example_renders_as_its_golden_manifests() {
    insta::assert_snapshot!(
        "kubernetes_postgres_example",
        to_yaml_stream(&render_postgres_example())
    );
}

#[test]
fn with_the_state_in_postgres_the_control_plane_keeps_no_volume_and_connects_with_the_secret() {
    let objects = render_postgres_example();
    assert!(
        !(objects.iter()).any(|o| o["metadata"]["name"] == "mcpfleet-state"),
        "the store is the database: no state volume"
    );
    let deployment = find(&objects, "Deployment", "mcpfleet");
    let spec = &deployment["spec"];
    let pod = &spec["template"]["spec"];
    let state = (pod["volumes"].as_array().unwrap().iter())
        .find(|v| v["name"] == "state")
        .unwrap();
    assert_eq!(state["emptyDir"]["sizeLimit"], "256Mi");
    assert!(state.get("persistentVolumeClaim").is_none());
    let container = &pod["containers"][0];
    // The whole scratch volume, so that `up` creates the state directory owner-only in it
    // (an emptyDir's root is open to all, which it refuses).
    let mount = (container["volumeMounts"].as_array().unwrap().iter())
        .find(|m| m["name"] == "state")
        .unwrap();
    assert_eq!(mount["mountPath"], "/var/lib/mcpfleet");
    assert!(mount.get("subPath").is_none());
    let args: Vec<&str> = (container["args"].as_array().unwrap().iter())
        .filter_map(Value::as_str)
        .collect();
    assert!(
        args.windows(2)
            .any(|w| w == ["--state-dir", "/var/lib/mcpfleet/state"]),
        "{args:?}"
    );
    // The URL's secret, as the variable the file reads it from, from the Secret's key;
    // the pod's name and namespace, for the leader to label its pod.
    assert_eq!(
        container["env"],
        serde_json::json!([
            {
                "name": "MCPFLEET_STATE_DB",
                "valueFrom": { "secretKeyRef": { "key": "url", "name": "notes-db" } },
            },
            { "name": "POD_NAME", "valueFrom": { "fieldRef": { "fieldPath": "metadata.name" } } },
            { "name": "POD_NAMESPACE", "valueFrom": { "fieldRef": { "fieldPath": "metadata.namespace" } } },
        ])
    );
    assert!(!objects.iter().any(|o| o["kind"] == "Secret"));
}

#[test]
fn with_the_state_in_postgres_a_standby_control_plane_runs_beside_the_leader_the_service_reaches() {
    let objects = render_postgres_example();
    let deployment = find(&objects, "Deployment", "mcpfleet");
    let spec = &deployment["spec"];
    let pods = &spec["selector"]["matchLabels"];
    // A leader and a standby; a rollout starts a new pod (a standby, Ready at its probe)
    // before it stops an old one, so a control plane always runs.
    assert_eq!(spec["replicas"], 2);
    assert_eq!(
        spec["strategy"],
        serde_json::json!({ "type": "RollingUpdate", "rollingUpdate": { "maxSurge": 1, "maxUnavailable": 0 } })
    );
    assert!(
        pods.get("mcpfleet.io/role").is_none(),
        "the Deployment keeps the pods whoever leads: {pods}"
    );
    let spread = &spec["template"]["spec"]["affinity"]["podAntiAffinity"]["preferredDuringSchedulingIgnoredDuringExecution"]
        [0]["podAffinityTerm"];
    assert_eq!(spread["topologyKey"], "kubernetes.io/hostname");
    assert_eq!(&spread["labelSelector"]["matchLabels"], pods);
    let budget = find(&objects, "PodDisruptionBudget", "mcpfleet");
    assert_eq!(budget["spec"]["minAvailable"], 1);
    assert_eq!(&budget["spec"]["selector"]["matchLabels"], pods);

    // Clients and Prometheus reach the leader alone: the pod the control plane labels so.
    let service = find(&objects, "Service", "mcpfleet");
    let mut leader = pods.clone();
    let (key, value) = fleet_manifests::LEADER_LABEL;
    leader[key] = value.into();
    assert_eq!(service["spec"]["selector"], leader);
    assert_eq!(
        fleet_manifests::control_plane_pods("notes"),
        (pods.as_object().unwrap().iter())
            .map(|(k, v)| format!("{k}={}", v.as_str().unwrap()))
            .collect::<Vec<_>>()
            .join(","),
        "the control plane finds its peers by the Deployment's selector"
    );
    // It may label its own pods.
    let role = find(&objects, "Role", "mcpfleet");
    let rules = role["rules"].as_array().unwrap();
    let pod_verbs = &(rules.iter())
        .find(|r| r["resources"] == serde_json::json!(["pods"]))
        .unwrap()["verbs"];
    for verb in ["list", "patch"] {
        assert!(
            pod_verbs.as_array().unwrap().contains(&verb.into()),
            "{pod_verbs}"
        );
    }

    // With the store on a volume: one control plane, replaced only once gone.
    let objects = render_example();
    let spec = &find(&objects, "Deployment", "mcpfleet")["spec"];
    assert_eq!(spec["replicas"], 1);
    assert_eq!(spec["strategy"], serde_json::json!({ "type": "Recreate" }));
    let service = find(&objects, "Service", "mcpfleet");
    assert_eq!(service["spec"]["selector"], spec["selector"]["matchLabels"]);
    assert!(
        !objects
            .iter()
            .any(|o| o["kind"] == "PodDisruptionBudget" && o["metadata"]["name"] == "mcpfleet")
    );
}

#[test]
fn with_the_state_in_postgres_the_backup_exports_the_database_into_its_own_volume() {
    let objects = render_postgres_example();
    let backups = find(&objects, "PersistentVolumeClaim", "mcpfleet-backups");
    assert_eq!(backups["spec"]["resources"]["requests"]["storage"], "5Gi");
    let cron = find(&objects, "CronJob", "mcpfleet-backup");
    assert_eq!(cron["spec"]["schedule"], "15 1 * * *");
    assert_eq!(cron["spec"]["concurrencyPolicy"], "Forbid");
    let template = &cron["spec"]["jobTemplate"]["spec"]["template"];
    let pod = &template["spec"];
    assert!(
        pod.get("affinity").is_none(),
        "no volume shared with the control plane: any node"
    );
    let container = &pod["containers"][0];
    let args: Vec<&str> = (container["args"].as_array().unwrap().iter())
        .filter_map(Value::as_str)
        .collect();
    // No control plane answers on that (absent) state directory: export-state reads the
    // database the fleet file names.
    assert_eq!(
        args,
        [
            "export-state",
            "/var/lib/mcpfleet/backups/$(JOB_NAME).json",
            "--keep",
            "10",
            "-f",
            "/etc/mcpfleet/fleet.yaml",
            "--state-dir",
            "/var/lib/mcpfleet/state",
        ]
    );
    let env = container["env"].as_array().unwrap();
    assert!(env.contains(&serde_json::json!({
        "name": "MCPFLEET_STATE_DB",
        "valueFrom": { "secretKeyRef": { "key": "url", "name": "notes-db" } },
    })));
    let volumes = pod["volumes"].as_array().unwrap();
    assert!(volumes.contains(&serde_json::json!({
        "name": "backups", "persistentVolumeClaim": { "claimName": "mcpfleet-backups" },
    })));
    assert!(
        !volumes
            .iter()
            .any(|v| v["persistentVolumeClaim"]["claimName"] == "mcpfleet-state")
    );
    let mounts = container["volumeMounts"].as_array().unwrap();
    assert!(mounts.contains(&serde_json::json!({
        "mountPath": "/var/lib/mcpfleet/backups", "name": "backups",
    })));
    // The default deny would keep it from the database: its own policy lets it out, and
    // its labels are not the control plane's, which servers admit.
    let labels = &template["metadata"]["labels"];
    let policy = find(&objects, "NetworkPolicy", "mcpfleet-backup");
    assert_eq!(&policy["spec"]["podSelector"]["matchLabels"], labels);
    assert_eq!(policy["spec"]["egress"], serde_json::json!([{}]));
    assert!(policy["spec"].get("ingress").is_none());
    let control_plane =
        &find(&objects, "Deployment", "mcpfleet")["spec"]["selector"]["matchLabels"];
    let selected = |labels: &Value| {
        (control_plane.as_object().unwrap().iter()).all(|(key, value)| &labels[key] == value)
    };
    assert!(!selected(labels), "{labels}");
    // With the store on the state volume the backup needs no network.
    assert!(
        !render_example()
            .iter()
            .any(|o| o["metadata"]["name"] == "mcpfleet-backup" && o["kind"] == "NetworkPolicy")
    );
}

#[test]
fn an_environment_that_moves_the_store_to_postgres_renders_its_backup_in_that_environment() {
    let text = format!(
        "version: 1\nname: tools\nsecrets:\n  state_db: {{ env: STATE_DB }}\nservers:\n  web:\n    http: {{ image: registry.example/web:1, port: 8080 }}\n{SERVED_GATEWAY}environments:\n  production:\n    state:\n      postgres: {{ url: \"{{{{ secret('state_db') }}}}\" }}\n"
    );
    let args = |objects: &[Value], kind: &str, name: &str| -> Vec<String> {
        let object = find(objects, kind, name);
        let container = object
            .pointer("/spec/template/spec/containers/0")
            .or_else(|| object.pointer("/spec/jobTemplate/spec/template/spec/containers/0"))
            .unwrap();
        (container["args"].as_array().unwrap().iter())
            .map(|a| a.as_str().unwrap().to_owned())
            .collect()
    };
    let production = render(
        &load_in(&text, Some("production")),
        &Options::new(text.clone()),
    )
    .unwrap();
    for (kind, name) in [("Deployment", "mcpfleet"), ("CronJob", "mcpfleet-backup")] {
        let args = args(&production, kind, name);
        assert!(
            args.ends_with(&["--env".to_owned(), "production".to_owned()]),
            "{kind}: {args:?}"
        );
    }
    assert!(
        (production.iter()).any(|o| o["metadata"]["name"] == "mcpfleet-backups"),
        "the overlay's store"
    );
    // Without the overlay the store is the state volume, as before.
    let development = render(&load(&text), &Options::new(text.clone())).unwrap();
    assert!((development.iter()).any(|o| o["metadata"]["name"] == "mcpfleet-state"));
    assert!(!args(&development, "CronJob", "mcpfleet-backup").contains(&"--env".to_owned()));
}

#[test]
fn a_state_url_reading_a_secret_from_a_file_is_refused_at_the_url() {
    let text = format!(
        "version: 1\nname: tools\nsecrets:\n  db_password: {{ file: /run/db-password }}\n  db_user: {{ env: DB_USER }}\nstate:\n  postgres:\n    url: \"postgres://{{{{ secret('db_user') }}}}:{{{{ secret('db_password') }}}}@db/state\"\nservers:\n  web:\n    http: {{ image: registry.example/web:1, port: 8080 }}\n{SERVED_GATEWAY}"
    );
    let fleet = load(&text);
    let error = render(&fleet, &Options::new(text.clone())).expect_err("a file secret");
    let found = located(&error.problems);
    assert_eq!(
        found,
        [(
            "the state database's URL reads secret `db_password` from a file, which does not reach the control plane's pod".to_owned(),
            Some(8)
        )]
    );
    assert!(
        error.diagnostics()[0]
            .help
            .as_deref()
            .is_some_and(|help| help.contains("env:"))
    );
    // Servers that mcpfleet runs on the cluster from a control plane elsewhere are not
    // concerned: that control plane reads the file where it runs.
    assert_eq!(check_runnable(&fleet), Ok(()));
    // Read from the environment, it renders.
    let from_env = text.replace(
        "db_password: { file: /run/db-password }",
        "db_password: { env: DB_PASSWORD }",
    );
    assert!(render(&load(&from_env), &Options::new(from_env.clone())).is_ok());
}

fn render_gateway_replicas_example() -> Vec<Value> {
    let text = example_named("kubernetes-gateway-replicas.yaml");
    render(&load(&text), &Options::new(text)).expect("the example renders")
}

#[test]
fn the_gateway_replicas_example_renders_as_its_golden_manifests() {
    insta::assert_snapshot!(
        "kubernetes_gateway_replicas_example",
        to_yaml_stream(&render_gateway_replicas_example())
    );
}

#[test]
fn gateway_replicas_serve_behind_their_own_service_that_the_ingress_routes_to() {
    let objects = render_gateway_replicas_example();
    let deployment = find(&objects, "Deployment", "mcpfleet-gateway");
    let spec = &deployment["spec"];
    let pods = &spec["selector"]["matchLabels"];
    // Between 2 and 8 pods: the autoscaler sets the count (an applied one would undo it).
    assert!(spec.get("replicas").is_none(), "{spec}");
    let autoscaler = find(&objects, "HorizontalPodAutoscaler", "mcpfleet-gateway");
    assert_eq!(
        autoscaler["spec"],
        serde_json::json!({
            "maxReplicas": 8,
            "metrics": [{
                "resource": { "name": "cpu", "target": { "averageUtilization": 70, "type": "Utilization" } },
                "type": "Resource",
            }],
            "minReplicas": 2,
            "scaleTargetRef": { "apiVersion": "apps/v1", "kind": "Deployment", "name": "mcpfleet-gateway" },
        })
    );
    let pod = &spec["template"]["spec"];
    let container = &pod["containers"][0];
    assert_eq!(
        container["args"],
        serde_json::json!(["gateway", "-f", "/etc/mcpfleet/fleet.yaml", "--pod-network"])
    );
    // The control plane's image, fleet file and secrets: the store's URL and the session
    // key, by reference.
    let control_plane = find(&objects, "Deployment", "mcpfleet");
    let control_pod = &control_plane["spec"]["template"];
    assert_eq!(
        container["image"],
        control_pod["spec"]["containers"][0]["image"]
    );
    assert_eq!(
        container["env"],
        serde_json::json!([
            {
                "name": "MCPFLEET_SESSION_KEY",
                "valueFrom": { "secretKeyRef": { "key": "session-key", "name": "notes-gateway" } },
            },
            {
                "name": "MCPFLEET_STATE_DB",
                "valueFrom": { "secretKeyRef": { "key": "url", "name": "notes-db" } },
            },
        ])
    );
    assert!(
        (pod["volumes"].as_array().unwrap().iter())
            .any(|v| v["name"] == "config" && v["configMap"]["name"] == "mcpfleet-config")
    );
    // A changed fleet file restarts the replicas as it does the control plane.
    assert_eq!(
        spec["template"]["metadata"]["annotations"]["mcpfleet.io/config"],
        control_pod["metadata"]["annotations"]["mcpfleet.io/config"]
    );
    // No API access.
    assert_eq!(pod["automountServiceAccountToken"], false);
    assert!(pod.get("serviceAccountName").is_none());
    // The autoscaler measures CPU as a share of the request.
    assert_eq!(
        container["resources"],
        serde_json::json!({
            "limits": { "cpu": "500m", "memory": "512Mi" },
            "requests": { "cpu": "500m", "memory": "512Mi" },
        })
    );
    assert_eq!(
        container["readinessProbe"],
        serde_json::json!({ "httpGet": { "path": "/healthz", "port": "gateway" } })
    );
    // Its own metrics at the admin port, for Prometheus to scrape pod by pod.
    assert_eq!(
        container["ports"],
        serde_json::json!([
            { "containerPort": 7470, "name": "gateway", "protocol": "TCP" },
            { "containerPort": 7471, "name": "metrics", "protocol": "TCP" },
        ])
    );
    let spread = &pod["affinity"]["podAntiAffinity"]["preferredDuringSchedulingIgnoredDuringExecution"]
        [0]["podAffinityTerm"];
    assert_eq!(spread["topologyKey"], "kubernetes.io/hostname");
    assert_eq!(&spread["labelSelector"]["matchLabels"], pods);
    // Not the control plane's pods, which its Service and the leader label pick.
    let control_pods = &control_plane["spec"]["selector"]["matchLabels"];
    let picks = |selector: &Value, labels: &Value| {
        (selector.as_object().unwrap().iter()).all(|(key, value)| &labels[key] == value)
    };
    let labels = &spec["template"]["metadata"]["labels"];
    assert!(picks(pods, labels));
    assert!(!picks(control_pods, labels), "{labels}");

    let service = find(&objects, "Service", "mcpfleet-gateway");
    assert_eq!(&service["spec"]["selector"], pods);
    assert_eq!(
        service["spec"]["ports"],
        serde_json::json!([
            { "name": "gateway", "port": 7470, "protocol": "TCP", "targetPort": "gateway" },
            { "name": "metrics", "port": 7471, "protocol": "TCP", "targetPort": "metrics" },
        ])
    );
    assert_eq!(
        service["metadata"]["annotations"]["prometheus.io/port"], "7471",
        "each replica is scraped for its own requests"
    );
    let budget = find(&objects, "PodDisruptionBudget", "mcpfleet-gateway");
    assert_eq!(budget["spec"]["minAvailable"], 1);
    assert_eq!(&budget["spec"]["selector"]["matchLabels"], pods);
    let policy = find(&objects, "NetworkPolicy", "mcpfleet-gateway");
    assert_eq!(
        policy["spec"],
        serde_json::json!({
            "egress": [{}],
            "ingress": [{ "ports": [
                { "port": 7470, "protocol": "TCP" },
                { "port": 7471, "protocol": "TCP" },
            ] }],
            "podSelector": { "matchLabels": pods },
            "policyTypes": ["Ingress", "Egress"],
        })
    );
    // Clients from outside reach the replicas; the control plane's Service stays for the
    // replicas (stdio relays, traffic reports) and Prometheus.
    let ingress = find(&objects, "Ingress", "mcpfleet");
    assert_eq!(
        ingress["spec"]["rules"][0]["http"]["paths"][0]["backend"]["service"],
        serde_json::json!({ "name": "mcpfleet-gateway", "port": { "name": "gateway" } })
    );
    find(&objects, "Service", "mcpfleet");
    let text = example_named("kubernetes-gateway-replicas.yaml");
    let hosts = fleet_manifests::gateway_hosts(&load(&text));
    for host in [
        "mcpfleet",
        "mcpfleet.mcp-notes.svc.cluster.local",
        "mcpfleet-gateway",
        "mcpfleet-gateway.mcp-notes",
        "mcpfleet-gateway.mcp-notes.svc",
        "mcpfleet-gateway.mcp-notes.svc.cluster.local",
        "mcp.example.com",
    ] {
        assert!(hosts.contains(&host.to_owned()), "{host}: {hosts:?}");
    }
    // The leader's replicas relay stdio servers to the first `.svc` name: its own Service,
    // not the replicas'.
    assert_eq!(
        hosts
            .iter()
            .find(|host| host.ends_with(".svc"))
            .map(String::as_str),
        Some("mcpfleet.mcp-notes.svc")
    );
    // Without the key: the control plane's Service alone, behind the Ingress too.
    let plain = render_example();
    assert!(
        !(plain.iter()).any(|o| o["metadata"]["name"] == "mcpfleet-gateway"),
        "no replicas asked for"
    );
    assert_eq!(
        find(&plain, "Ingress", "mcpfleet")["spec"]["rules"][0]["http"]["paths"][0]["backend"]["service"]
            ["name"],
        "mcpfleet"
    );
    assert!(
        !fleet_manifests::gateway_hosts(&load(&example()))
            .iter()
            .any(|h| h.starts_with("mcpfleet-gateway"))
    );
}

#[test]
fn every_server_admits_the_gateway_replicas_beside_the_control_plane() {
    let objects = render_gateway_replicas_example();
    let gateway_pods =
        &find(&objects, "Deployment", "mcpfleet-gateway")["spec"]["template"]["metadata"]["labels"];
    let control_pods =
        &find(&objects, "Deployment", "mcpfleet")["spec"]["template"]["metadata"]["labels"];
    let admits = |policy: &Value, labels: &Value| {
        (policy["spec"]["ingress"].as_array().unwrap().iter()).any(|rule| {
            (rule["from"].as_array().unwrap().iter()).any(|from| {
                (from["podSelector"]["matchLabels"]
                    .as_object()
                    .unwrap()
                    .iter())
                .all(|(key, value)| &labels[key] == value)
            })
        })
    };
    let notes = find(&objects, "NetworkPolicy", "notes");
    assert!(admits(notes, gateway_pods), "{notes}");
    assert!(admits(notes, control_pods), "{notes}");
    // A stdio server is attached to through the API server: no pod reaches it.
    let clock = find(&objects, "NetworkPolicy", "clock");
    assert_eq!(clock["spec"]["ingress"], serde_json::json!([]));
    // Without replicas the control plane alone.
    let plain = render_postgres_example();
    let notes = find(&plain, "NetworkPolicy", "notes");
    assert_eq!(
        notes["spec"]["ingress"][0]["from"]
            .as_array()
            .unwrap()
            .len(),
        1
    );
}

#[test]
fn a_fixed_count_of_gateway_replicas_renders_no_autoscaler_and_one_no_budget() {
    let text = example_named("kubernetes-gateway-replicas.yaml");
    for (bounds, replicas, budget) in [
        ("{ min: 3, max: 3 }", 3, true),
        ("{ min: 1, max: 1 }", 1, false),
    ] {
        let text = text.replace("{ min: 2, max: 8, cpu: 70 }", bounds);
        let objects = render(&load(&text), &Options::new(text.clone())).unwrap();
        assert_eq!(
            find(&objects, "Deployment", "mcpfleet-gateway")["spec"]["replicas"],
            replicas
        );
        assert!(!(objects.iter()).any(|o| o["kind"] == "HorizontalPodAutoscaler"));
        assert_eq!(
            (objects.iter()).any(|o| o["kind"] == "PodDisruptionBudget"
                && o["metadata"]["name"] == "mcpfleet-gateway"),
            budget,
            "{bounds}: a budget only leaves a pod serving when there are two"
        );
    }
}

#[test]
fn gateway_replicas_serving_tls_themselves_are_probed_over_it() {
    let text = example_named("kubernetes-gateway-replicas.yaml").replace(
        "tls: { terminated_by: proxy }",
        "tls: { cert: tls/gateway.crt, key: tls/gateway.key }",
    );
    let objects = render(&load(&text), &Options::new(text.clone())).unwrap();
    let deployment = find(&objects, "Deployment", "mcpfleet-gateway");
    assert_eq!(
        deployment["spec"]["template"]["spec"]["containers"][0]["readinessProbe"],
        serde_json::json!({ "httpGet": { "path": "/healthz", "port": "gateway", "scheme": "HTTPS" } })
    );
}

#[test]
fn gateway_replicas_without_the_shared_store_or_session_keys_are_refused_at_the_key() {
    let text = format!(
        "version: 1\nname: tools\nruntime: kubernetes\nkubernetes:\n  gateway_replicas: {{ min: 2, max: 4, cpu: 70 }}\nservers:\n  web:\n    http: {{ image: registry.example/web:1, port: 8080 }}\n{SERVED_GATEWAY}"
    );
    let fleet = load(&text);
    let error = render(&fleet, &Options::new(text.clone())).expect_err("no store, no keys");
    let found = located(&error.problems);
    assert_eq!(
        found,
        [
            (
                "gateway replicas need the state in PostgreSQL: they read routes from the shared store".to_owned(),
                Some(5)
            ),
            (
                "gateway replicas need `gateway.session_keys`: replicas serve one another's sessions by sealed ids".to_owned(),
                Some(5)
            ),
        ]
    );
    let help: Vec<String> = (error.diagnostics().into_iter())
        .map(|d| d.help.unwrap_or_default())
        .collect();
    assert!(help[0].contains("state: { postgres"), "{help:?}");
    assert!(help[1].contains("session_keys"), "{help:?}");
    // What mcpfleet runs on the cluster from a control plane elsewhere is not concerned.
    assert_eq!(check_runnable(&fleet), Ok(()));
}

#[test]
fn a_session_key_read_from_a_file_is_refused_at_gateway_replicas() {
    let text = example_named("kubernetes-gateway-replicas.yaml").replace(
        "    env: MCPFLEET_SESSION_KEY\n",
        "    file: /run/secrets/session-key\n",
    );
    let fleet = load(&text);
    let error = render(&fleet, &Options::new(text.clone())).expect_err("a file secret");
    let found = located(&error.problems);
    assert_eq!(
        found,
        [(
            "session key secret `session_key` is read from a file, which does not reach the gateway pods".to_owned(),
            Some(14)
        )]
    );
    assert!(
        error.diagnostics()[0]
            .help
            .as_deref()
            .is_some_and(|help| help.contains("env:"))
    );
}
