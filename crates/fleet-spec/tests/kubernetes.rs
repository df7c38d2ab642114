//! The fleet file's Kubernetes keys: `runtime:`, the `kubernetes:` block, each secret's and
//! each server's Kubernetes settings — their defaults, their located errors (golden files
//! beside their fleet files in `kubernetes/`), and environments switching a fleet to a
//! cluster.

mod common;
use common::FixedHost;
use fleet_spec::diag::render_all;
use fleet_spec::model::{
    Backup, KubernetesSecret, PodReach, RuntimeKind, ServerKubernetes, Spread,
};
use fleet_spec::{Checked, LoadOptions, load_str};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

fn check(name: &str, text: &str, environment: Option<&str>) -> Checked {
    let options = LoadOptions {
        environment: environment.map(str::to_string),
        host: Arc::new(FixedHost(vec![
            ("GITHUB_TOKEN", "s3cr3t-value"),
            ("DB_PASSWORD", "s3cr3t-value"),
        ])),
    };
    load_str(name, text, PathBuf::from("/srv/fleet"), &options)
}

fn fixture(name: &str) -> String {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/kubernetes")
        .join(name);
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

fn golden(name: &str, shown: String) {
    insta::with_settings!({ snapshot_path => "kubernetes", prepend_module_to_snapshot => false }, {
        insta::assert_snapshot!(name, shown);
    });
}

#[test]
fn a_kubernetes_fleet_normalizes_to_its_model() {
    let checked = check("valid_fleet.yaml", &fixture("valid_fleet.yaml"), None);
    assert_eq!(checked.diagnostics, vec![], "{:#?}", checked.diagnostics);
    let fleet = checked.into_valid().unwrap();
    assert_eq!(fleet.runtime, RuntimeKind::Kubernetes);
    let json = serde_json::to_string_pretty(&fleet).unwrap();
    assert!(
        !json.contains("s3cr3t-value"),
        "a secret value leaked: {json}"
    );
    golden("valid_fleet_normalized", json);
}

#[test]
fn every_kubernetes_error_is_located_and_none_hides_another() {
    let text = fixture("invalid_fleet.yaml");
    let checked = check("invalid_fleet.yaml", &text, None);
    golden(
        "invalid_fleet_errors",
        render_all(&checked.diagnostics, &checked.source),
    );
    // One error per mistake in the file, across the fleet's block, a secret, both servers.
    let lines: Vec<u32> = checked
        .diagnostics
        .iter()
        .filter(|d| d.is_error())
        .map(|d| d.span.expect("located").line)
        .collect();
    for line in [
        5, 6, 7, 8, 9, 10, 11, 15, 20, 22, 24, 25, 26, 27, 28, 29, 32,
    ] {
        assert!(lines.contains(&line), "no error on line {line}: {lines:?}");
    }
}

#[test]
fn every_kubernetes_key_has_a_default() {
    let text = "version: 1\nname: tools\nsecrets:\n  token: { env: GITHUB_TOKEN }\nservers:\n  echo:\n    stdio: { command: echo }\n";
    let fleet = check("f.yaml", text, None).into_valid().unwrap();
    assert_eq!(fleet.runtime, RuntimeKind::Local);
    let k = &fleet.kubernetes;
    assert_eq!(k.namespace, "tools", "the namespace is the fleet's name");
    assert_eq!(k.context, None);
    assert_eq!(k.reach, None, "the control plane decides, by where it runs");
    assert_eq!(
        k.progress_deadline, None,
        "rendered as nothing: the cluster's default"
    );
    assert_eq!(
        k.progress_deadline(),
        Duration::from_secs(600),
        "Kubernetes' own default"
    );
    assert_eq!(k.image, format!("mcpfleet:{}", env!("CARGO_PKG_VERSION")));
    assert_eq!(
        (k.ingress.clone(), k.quota, k.service_monitor),
        (None, None, false)
    );
    assert_eq!(
        k.gateway_replicas, None,
        "the control plane's gateway alone"
    );
    let shown = serde_json::to_value(k).unwrap();
    assert!(
        shown.get("gateway_replicas").is_none(),
        "unset, the key stays out of the model as read before it existed"
    );
    assert_eq!(
        k.backup,
        Backup {
            schedule: "0 3 * * *".into(),
            keep: 7,
            size: 1 << 30
        }
    );
    assert_eq!(
        k.secrets["token"],
        KubernetesSecret {
            secret: "tools-secrets".into(),
            key: "token".into()
        }
    );
    let echo = fleet.server("echo").unwrap();
    assert_eq!(echo.autoscale, None);
    assert_eq!(echo.kubernetes, ServerKubernetes::default());
    assert_eq!(echo.kubernetes.spread, Spread::None);
    // Unset, the keys stay out of the server's spec: upgrading does not change its hash.
    let spec = serde_json::to_value(echo).unwrap();
    assert!(spec.get("autoscale").is_none() && spec.get("kubernetes").is_none());
}

#[test]
fn how_pods_are_reached_is_pod_ip_or_port_forward_and_anything_else_is_located() {
    let file = |reach: &str| {
        format!(
            "version: 1\nname: tools\nruntime: kubernetes\nkubernetes:\n  reach: {reach}\nservers:\n  a:\n    http: {{ image: registry.example/a:1, port: 8080 }}\n"
        )
    };
    for (written, reach) in [
        ("pod-ip", PodReach::PodIp),
        ("port-forward", PodReach::PortForward),
    ] {
        let fleet = check("f.yaml", &file(written), None).into_valid().unwrap();
        assert_eq!(fleet.kubernetes.reach, Some(reach));
    }
    let checked = check("f.yaml", &file("tunnel"), None);
    let errors: Vec<u32> = (checked.diagnostics.iter())
        .filter(|d| d.is_error())
        .map(|d| d.span.unwrap().line)
        .collect();
    assert_eq!(errors, [5]);
    let shown = render_all(&checked.diagnostics, &checked.source);
    assert!(
        shown.contains("`tunnel`") && shown.contains("pod-ip") && shown.contains("port-forward"),
        "{shown}"
    );
}

#[test]
fn gateway_replicas_scale_on_cpu_or_memory_and_anything_else_is_located() {
    let file = |replicas: &str| {
        format!(
            "version: 1\nname: tools\nruntime: kubernetes\nkubernetes:\n  gateway_replicas: {replicas}\nservers:\n  a:\n    http: {{ image: registry.example/a:1, port: 8080 }}\n"
        )
    };
    let fleet = check("f.yaml", &file("{ min: 2, max: 8, cpu: 70 }"), None)
        .into_valid()
        .unwrap();
    let replicas = fleet.kubernetes.gateway_replicas.unwrap();
    assert_eq!(
        (replicas.scale.min, replicas.scale.max, replicas.scale.cpu),
        (2, 8, Some(70))
    );
    assert_eq!(replicas.span.line, 5);
    // A fixed count needs no target.
    let fixed = check("f.yaml", &file("{ min: 3, max: 3 }"), None)
        .into_valid()
        .unwrap();
    assert_eq!(fixed.kubernetes.gateway_replicas.unwrap().scale.cpu, None);
    for (wrong, message) in [
        (
            "{ min: 2, max: 8, cpu: 70, sessions_per_pod: 50 }",
            "`sessions_per_pod` does not apply to gateway replicas",
        ),
        (
            "{ min: 2, max: 8 }",
            "`gateway_replicas` has no target to scale on",
        ),
        ("{ min: 0, max: 2, cpu: 70 }", "`min` must be at least 1"),
        (
            "{ min: 3, max: 2, cpu: 70 }",
            "`max` (2) is below `min` (3)",
        ),
        (
            "{ min: 1, max: 2, memory: 0 }",
            "`memory` must be a percentage from 1 to 1000",
        ),
    ] {
        let checked = check("f.yaml", &file(wrong), None);
        let errors: Vec<(u32, &str)> = (checked.diagnostics.iter())
            .filter(|d| d.is_error())
            .map(|d| (d.span.unwrap().line, d.message.as_str()))
            .collect();
        assert_eq!(errors, [(5, message)], "{wrong}");
    }
}

#[test]
fn a_progress_deadline_is_a_duration_and_a_wrong_one_is_located() {
    let file = |deadline: &str| {
        format!(
            "version: 1\nname: tools\nruntime: kubernetes\nkubernetes:\n  progress_deadline: {deadline}\nservers:\n  a:\n    http: {{ image: registry.example/a:1, port: 8080 }}\n"
        )
    };
    let fleet = check("f.yaml", &file("90s"), None).into_valid().unwrap();
    assert_eq!(
        fleet.kubernetes.progress_deadline,
        Some(Duration::from_secs(90))
    );
    for wrong in ["soon", "0s"] {
        let checked = check("f.yaml", &file(wrong), None);
        let errors: Vec<u32> = (checked.diagnostics.iter())
            .filter(|d| d.is_error())
            .map(|d| d.span.unwrap().line)
            .collect();
        assert_eq!(errors, [5], "{wrong}");
    }
}

#[test]
fn names_derived_from_the_fleet_are_checked_only_for_a_kubernetes_fleet() {
    let local = "version: 1\nname: my_tools\nsecrets:\n  api key: { env: GITHUB_TOKEN }\nservers:\n  a:\n    remote: { url: \"https://a.example/mcp\", headers: { x: \"{{ secret('api key') }}\" } }\n";
    let checked = check("f.yaml", local, None);
    assert!(checked.is_valid(), "{:#?}", checked.diagnostics);

    let cluster = local.replace("name: my_tools\n", "name: my_tools\nruntime: kubernetes\n");
    let errors: Vec<(u32, String)> = check("f.yaml", &cluster, None)
        .diagnostics
        .iter()
        .filter(|d| d.is_error())
        .map(|d| (d.span.unwrap().line, d.message.clone()))
        .collect();
    assert_eq!(
        errors,
        [
            (2, "the Kubernetes namespace defaults to the fleet's name `my_tools`, which is not a DNS-1123 label".to_string()),
            (5, "secret `api key` is read from the Secret `my_tools-secrets`, which is not a valid Kubernetes name".to_string()),
            (5, "secret `api key` is its own Secret key by default, which is not a valid key".to_string()),
        ]
    );
}

#[test]
fn a_production_environment_moves_the_fleet_to_a_cluster() {
    let text = "\
version: 1
name: tools
kubernetes:
  namespace: tools-dev
  service_monitor: true
environments:
  prod:
    runtime: kubernetes
    kubernetes:
      namespace: tools-prod
      context: prod-eu
    servers:
      search:
        autoscale: { min: 2, max: 6, cpu: 75 }
servers:
  search:
    http: { image: registry.example/search:1.2, port: 8080 }
";
    let dev = check("f.yaml", text, None).into_valid().unwrap();
    assert_eq!(dev.runtime, RuntimeKind::Local);
    assert_eq!(dev.kubernetes.namespace, "tools-dev");
    assert_eq!(dev.server("search").unwrap().autoscale, None);

    let prod = check("f.yaml", text, Some("prod")).into_valid().unwrap();
    assert_eq!(prod.runtime, RuntimeKind::Kubernetes);
    assert_eq!(prod.kubernetes.namespace, "tools-prod");
    assert_eq!(prod.kubernetes.context.as_deref(), Some("prod-eu"));
    assert!(
        prod.kubernetes.service_monitor,
        "keys the overlay does not set stay as the base file has them"
    );
    let autoscale = prod.server("search").unwrap().autoscale.unwrap();
    assert_eq!(
        (autoscale.min, autoscale.max, autoscale.cpu),
        (2, 6, Some(75))
    );
}

#[test]
fn an_environments_kubernetes_keys_are_checked_like_the_base_files() {
    let text = "version: 1\nname: tools\nenvironments:\n  prod:\n    runtime: cluster\n    kubernetes: { namespaces: x }\nservers: {}\n";
    let errors: Vec<(u32, String)> = check("f.yaml", text, None)
        .diagnostics
        .iter()
        .filter(|d| d.is_error())
        .map(|d| (d.span.unwrap().line, d.message.clone()))
        .collect();
    assert_eq!(
        errors,
        [
            (5, "unknown value `cluster`".to_string()),
            (6, "unknown key `namespaces`".to_string())
        ]
    );
}
