use serde_json::json;

use super::*;

#[test]
fn versions_older_than_1_33_fail_and_managed_suffixes_are_read() {
    let cases = [
        ("1", "35", "v1.35.2", Severity::Ok),
        ("1", "33+", "v1.33.5-gke.100", Severity::Ok),
        ("1", "40", "v1.40.0", Severity::Ok),
        ("1", "32", "v1.32.9", Severity::Failure),
        ("", "", "v1.34.0-custom", Severity::Warning),
    ];
    for (major, minor, git_version, want) in cases {
        let mut report = PreflightReport::default();
        check_version(&mut report, major, minor, git_version);
        assert_eq!(
            report.checks[0].severity, want,
            "{git_version}: {}",
            report.checks[0]
        );
        assert!(
            report.checks[0].message.contains("1.33 or newer"),
            "says the range: {}",
            report.checks[0]
        );
    }
}

#[test]
fn permissions_cover_applying_each_kind_following_rollouts_and_the_roles_rules() {
    let objects = [
        json!({ "apiVersion": "v1", "kind": "Namespace", "metadata": { "name": "tools" } }),
        json!({ "apiVersion": "rbac.authorization.k8s.io/v1", "kind": "Role",
                "metadata": { "name": "mcpfleet", "namespace": "tools" },
                "rules": [
                    { "apiGroups": [""], "resources": ["pods"], "verbs": ["get", "delete"] },
                    { "apiGroups": [""], "resources": ["pods/attach"], "verbs": ["create"] },
                    { "apiGroups": ["apps"], "resources": ["deployments"], "verbs": ["patch"] },
                ] }),
        json!({ "apiVersion": "apps/v1", "kind": "Deployment", "metadata": { "name": "a", "namespace": "tools" } }),
        json!({ "apiVersion": "apps/v1", "kind": "Deployment", "metadata": { "name": "b", "namespace": "tools" } }),
    ];
    let needed: Vec<String> = needed_permissions(&objects, "tools", PodReach::PodIp)
        .iter()
        .map(ToString::to_string)
        .collect();
    assert_eq!(
        needed,
        [
            "create pods/attach in namespace tools",
            "create deployments.apps in namespace tools",
            "create roles.rbac.authorization.k8s.io in namespace tools",
            "delete pods in namespace tools",
            "get namespaces (cluster-wide)",
            "get pods in namespace tools",
            "get deployments.apps in namespace tools",
            "get roles.rbac.authorization.k8s.io in namespace tools",
            "list deployments.apps in namespace tools",
            "patch namespaces (cluster-wide)",
            "patch deployments.apps in namespace tools",
            "patch roles.rbac.authorization.k8s.io in namespace tools",
            "watch deployments.apps in namespace tools",
        ],
        "one review per permission, not per object"
    );
}

#[test]
fn a_control_plane_that_port_forwards_needs_to_create_pods_portforward() {
    let objects = [
        json!({ "apiVersion": "apps/v1", "kind": "Deployment", "metadata": { "name": "a", "namespace": "tools" } }),
    ];
    let forward = "create pods/portforward in namespace tools";
    let needs = |reach| {
        needed_permissions(&objects, "tools", reach)
            .iter()
            .any(|permission| permission.to_string() == forward)
    };
    assert!(needs(PodReach::PortForward));
    assert!(!needs(PodReach::PodIp));
}

#[test]
fn requested_resources_multiply_by_replicas_and_default_requests_to_limits() {
    let objects = [json!({
        "apiVersion": "apps/v1", "kind": "Deployment", "metadata": { "name": "search", "namespace": "tools" },
        "spec": { "replicas": 3, "template": { "spec": { "containers": [
            { "name": "a", "resources": { "requests": { "cpu": "250m", "memory": "128Mi" },
                                          "limits": { "cpu": "1", "memory": "256Mi" } } },
            { "name": "b", "resources": { "limits": { "cpu": "100m" } } },
        ] } } },
    })];
    let requested: BTreeMap<&str, String> = requested_resources(&objects)
        .into_iter()
        .map(|(key, quantity)| (key, quantity.to_string()))
        .collect();
    assert_eq!(requested["pods"], "3");
    assert_eq!(requested["requests.cpu"], "1050m");
    assert_eq!(requested["cpu"], "1050m");
    assert_eq!(requested["limits.cpu"], "3300m");
    assert_eq!(requested["requests.memory"], "384Mi");
    assert_eq!(requested["limits.memory"], "768Mi");
}

#[test]
fn the_fleet_namespace_is_the_namespace_objects_or_the_first_namespaced_ones() {
    let namespaced = json!({ "apiVersion": "v1", "kind": "Service", "metadata": { "name": "a", "namespace": "tools" } });
    let namespace =
        json!({ "apiVersion": "v1", "kind": "Namespace", "metadata": { "name": "mcp" } });
    assert_eq!(
        fleet_namespace(std::slice::from_ref(&namespaced)).as_deref(),
        Some("tools")
    );
    assert_eq!(
        fleet_namespace(&[namespaced, namespace]).as_deref(),
        Some("mcp")
    );
    assert_eq!(fleet_namespace(&[]), None);
}
