//! What a cluster would say about the rendered manifests, without a cluster: every object of
//! examples/kubernetes.yaml, examples/kubernetes-postgres.yaml,
//! examples/kubernetes-gateway-replicas.yaml and of generated fleets, as the bytes `mcpfleet render
//! kubernetes -o DIR` writes, validates against the official schema of every supported
//! Kubernetes version in strict mode (an unknown field is an error), no pod template breaks
//! the restricted Pod Security Standard or mcpfleet's read-only root filesystem, and no
//! secret's value is anywhere in them. Needs `cargo xtask peers` (`kubernetes-validate`);
//! fails, never skips, without it.

use fleet_manifests::yaml::to_yaml;
use fleet_manifests::{Options, file_names, render};
use fleet_spec::template::Host;
use fleet_spec::{LoadOptions, ValidFleet, load_str};
use fleet_testkit::TempDir;
use fleet_testkit::kube::{
    SUPPORTED_VERSIONS, hardened_violations, parse_yaml_documents, validate_strict,
};
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// The value every secret has on this "machine": a manifest that copied one would show it.
const SECRET_VALUE: &str = "s3cr3t-value-that-must-never-render-7c1d";

/// A machine where every environment variable and file holds [`SECRET_VALUE`].
struct SecretsEverywhere;

impl Host for SecretsEverywhere {
    fn env_var(&self, _: &str) -> Option<String> {
        Some(SECRET_VALUE.into())
    }
    fn file_exists(&self, _: &Path) -> bool {
        true
    }
    fn read_file(&self, _: &Path) -> std::io::Result<String> {
        Ok(SECRET_VALUE.into())
    }
}

fn load(text: &str) -> ValidFleet {
    let options = LoadOptions {
        environment: None,
        host: Arc::new(SecretsEverywhere),
    };
    load_str("fleet.yaml", text, PathBuf::from("/fleet"), &options)
        .into_valid()
        .unwrap_or_else(|errors| panic!("{errors:#?}\n{text}"))
}

/// What a rendered fleet's gateway needs, since the control plane serves it on its pod's
/// network: tokens, and TLS (here ended by the Ingress).
const SERVED_GATEWAY: &str = "gateway:\n  auth:\n    tokens: [{ name: ci, sha256: \"9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08\", servers: [\"*\"] }]\n  tls: { terminated_by: proxy }\n";

/// Renders `text` (with [`SERVED_GATEWAY`] when it has no gateway) into a fresh directory
/// the way `render -o DIR` lays it out, then holds it to every check; `what` names the
/// fleet in failures.
fn check(what: &str, text: &str) {
    let text = &if text.contains("\ngateway:") {
        text.to_owned()
    } else {
        format!("{text}{SERVED_GATEWAY}")
    };
    let objects = render(&load(text), &Options::new(text))
        .unwrap_or_else(|e| panic!("{what}: {e}\n{:#?}", e.problems));
    let dir = TempDir::new(&format!("manifests-{what}"));
    let mut files = Vec::new();
    for (object, name) in objects.iter().zip(file_names(&objects)) {
        let yaml = to_yaml(object);
        assert!(
            !yaml.contains(SECRET_VALUE),
            "{what}: {name} holds a secret's value:\n{yaml}"
        );
        // What was written is what is checked: the YAML read back is the object rendered.
        let read_back = parse_yaml_documents(&yaml)
            .unwrap_or_else(|e| panic!("{what}: {name} is not YAML: {e}\n{yaml}"));
        assert_eq!(
            read_back,
            std::slice::from_ref(object),
            "{what}: {name} reads back differently"
        );
        let violations = hardened_violations(object);
        assert!(
            violations.is_empty(),
            "{what}: {name} breaks the restricted Pod Security Standard:\n{}",
            violations
                .iter()
                .map(ToString::to_string)
                .collect::<Vec<_>>()
                .join("\n")
        );
        let path = dir.path().join(&name);
        std::fs::write(&path, yaml).unwrap();
        if !is_custom_resource(object) {
            files.push(path);
        }
    }
    assert!(
        objects.iter().any(|o| o["kind"] == "Deployment"),
        "{what}: no pod template was checked"
    );
    for version in SUPPORTED_VERSIONS {
        validate_strict(&files, version).unwrap_or_else(|e| panic!("{what}: {e}"));
    }
}

/// Objects of an operator's API (prometheus-operator's ServiceMonitor) have no official
/// schema to validate against; everything else must have one.
fn is_custom_resource(object: &serde_json::Value) -> bool {
    object["apiVersion"]
        .as_str()
        .is_some_and(|api| api.starts_with("monitoring.coreos.com/"))
}

#[test]
fn the_kubernetes_example_is_valid_on_every_supported_version_and_restricted() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples/kubernetes.yaml");
    let text = std::fs::read_to_string(path).expect("examples/kubernetes.yaml");
    check("example", &text);
}

#[test]
fn the_postgres_example_is_valid_on_every_supported_version_and_restricted() {
    let path =
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples/kubernetes-postgres.yaml");
    let text = std::fs::read_to_string(path).expect("examples/kubernetes-postgres.yaml");
    check("postgres-example", &text);
}

#[test]
fn the_gateway_replicas_example_is_valid_on_every_supported_version_and_restricted() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../examples/kubernetes-gateway-replicas.yaml");
    let text = std::fs::read_to_string(path).expect("examples/kubernetes-gateway-replicas.yaml");
    check("gateway-replicas-example", &text);
}

/// A fleet of `count` image servers cycling through every shape the model has: http with
/// replicas, a shared stdio server with a secret file, a per-session stdio server with a
/// warm pool, with and without resources, users, named volumes and networks.
fn many_servers(count: usize) -> String {
    let mut text = String::from(
        "version: 1\nname: big-fleet\nsecrets:\n  api_key: { env: API_KEY }\n  \
         db_password: { file: /run/db-password }\nservers:\n",
    );
    for n in 0..count {
        let server = match n % 4 {
            0 => format!(
                "  web-{n}:\n    http:\n      image: registry.example/web:{n}\n      port: 8080\n      \
                 path: /mcp\n      args: [\"--port\", \"{{{{ port }}}}\"]\n      env: {{ LEVEL: debug }}\n    \
                 replicas: {}\n    container:\n      user: \"{}:{}\"\n      resources: {{ cpus: 0.25, memory: 128Mi }}\n",
                1 + n % 3,
                1000 + n,
                1000 + n
            ),
            1 => format!(
                "  shared-{n}:\n    stdio:\n      image: ghcr.io/example/shared:{n}\n      \
                 args: [\"--key-file\", /run/secrets/api_key]\n      isolation: shared\n    \
                 replicas: 2\n    container:\n      network: bridge\n      \
                 secrets: {{ /run/secrets/api_key: api_key, /run/secrets/db: db_password }}\n"
            ),
            2 => format!(
                "  session-{n}:\n    stdio:\n      image: registry.example/session:{n}\n      \
                 isolation: per-session\n      warm: {}\n      max_sessions: 20\n    \
                 container:\n      resources: {{ memory: 64Mi }}\n      volumes: [\"cache-{n}:/cache\"]\n",
                n % 5
            ),
            _ => format!(
                "  plain-{n}:\n    stdio:\n      image: registry.example/plain@sha256:{:064x}\n",
                n
            ),
        };
        text.push_str(&server);
    }
    text
}

#[test]
fn a_fleet_of_many_servers_of_every_shape_is_valid_and_restricted() {
    check("many", &many_servers(40));
}

#[test]
fn the_smallest_fleet_is_valid_and_restricted() {
    check(
        "smallest",
        "version: 1\nname: one\nservers:\n  only:\n    http: { image: registry.example/only:1, port: 3000 }\n",
    );
}

/// Every Kubernetes key the fleet file has: a namespace of its own, an ingress, a
/// ServiceMonitor, backups, a quota, secrets mapped to Secrets of the cluster, autoscaling,
/// node selection, tolerations, a priority class, spreading and egress, and gateway
/// replicas (with the store in PostgreSQL and shared session keys they need).
const CLUSTER_OPTIONS: &str = r#"
version: 1
name: tools
runtime: kubernetes
kubernetes:
  namespace: mcp-tools
  progress_deadline: 5m
  image: registry.example/mcpfleet:0.1.0
  ingress: { host: mcp.example.com, class: nginx, tls_secret: mcp-tls }
  service_monitor: true
  backup: { schedule: "30 2 * * *", keep: 14, size: 2Gi }
  quota: { cpu: "8", memory: 16Gi, pods: 50 }
  gateway_replicas: { min: 2, max: 6, cpu: 60, memory: 80 }
secrets:
  github_token:
    env: GITHUB_TOKEN
    kubernetes: { secret: github, key: token }
  db-password:
    env: DB_PASSWORD
  state_db: { env: STATE_DB }
  session_key: { env: SESSION_KEY }
state:
  postgres: { url: "{{ secret('state_db') }}" }
gateway:
  auth:
    tokens: [{ name: ci, sha256: "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08", servers: ["*"] }]
  tls: { terminated_by: proxy }
  session_keys: ["{{ secret('session_key') }}"]
servers:
  search:
    http: { image: registry.example/search:1.2, port: 8080 }
    replicas: 2
    autoscale: { min: 2, max: 10, cpu: 70, memory: 80, sessions_per_pod: 50 }
    # An autoscaler measures CPU and memory use as a share of the request.
    container: { resources: { cpus: 0.5, memory: 256Mi } }
    kubernetes:
      node_selector: { pool: mcp, topology.kubernetes.io/zone: eu-1a }
      tolerations:
        - { key: dedicated, operator: Equal, value: mcp, effect: NoSchedule }
        - { operator: Exists, effect: NoExecute }
      priority_class: mcp-high
      spread: required
      egress: ["10.0.0.0/8:5432", "0.0.0.0/0:443", "fd00::/8"]
  github:
    stdio:
      image: ghcr.io/github/github-mcp-server:1.0
      args: ["--token-file", /run/secrets/token]
    container:
      secrets: { /run/secrets/token: github_token, /run/secrets/db: db-password }
    autoscale: { min: 1, max: 3, sessions_per_pod: 20 }
    kubernetes: { spread: preferred }
"#;

#[test]
fn a_fleet_using_every_kubernetes_key_is_valid_and_restricted() {
    check("cluster-options", CLUSTER_OPTIONS);
}
