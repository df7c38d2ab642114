//! The Kubernetes manifest checks the render tests rely on: strict schema validation on
//! every supported version (needs `cargo xtask peers`; fails without it) and the restricted
//! Pod Security Standard, each rule shown to catch what it is for.

use fleet_testkit::TempDir;
use fleet_testkit::kube::{
    Rule, SUPPORTED_VERSIONS, ValidateError, Violation, hardened_violations, parse_yaml_documents,
    restricted_violations, validate_strict,
};
use serde_json::{Value, json};
use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

const HARDENED: &str = include_str!("kube/hardened-deployment.yaml");

fn hardened_deployment() -> Value {
    let mut docs = parse_yaml_documents(HARDENED).expect("the fixture is YAML");
    assert_eq!(docs.len(), 1);
    docs.remove(0)
}

/// Writes `objects` as one JSON document each (JSON is YAML) into `dir`.
fn write_objects(dir: &Path, objects: &[Value]) -> Vec<PathBuf> {
    objects
        .iter()
        .enumerate()
        .map(|(index, object)| {
            let path = dir.join(format!("{index:02}.yaml"));
            std::fs::write(&path, serde_json::to_vec_pretty(object).unwrap()).unwrap();
            path
        })
        .collect()
}

/// Sets the value at a JSON pointer, making the objects on the way.
fn set(object: &mut Value, pointer: &str, value: Value) {
    let mut at = object;
    for part in pointer.split('/').skip(1) {
        at = match at {
            Value::Array(items) => &mut items[part.parse::<usize>().unwrap()],
            _ => at
                .as_object_mut()
                .expect("a mapping on the way")
                .entry(part)
                .or_insert_with(|| json!({})),
        };
    }
    *at = value;
}

fn remove(object: &mut Value, pointer: &str) {
    let (parent, key) = pointer.rsplit_once('/').unwrap();
    object
        .pointer_mut(parent)
        .and_then(Value::as_object_mut)
        .and_then(|map| map.remove(key))
        .unwrap_or_else(|| panic!("{pointer} is in the fixture"));
}

#[test]
fn a_hardened_deployment_validates_strictly_on_every_supported_version() {
    let dir = TempDir::new("kube-valid");
    let file = dir.path().join("deployment.yaml");
    std::fs::write(&file, HARDENED).unwrap();
    for version in SUPPORTED_VERSIONS {
        validate_strict(std::slice::from_ref(&file), version).unwrap_or_else(|e| panic!("{e}"));
    }
}

#[test]
fn a_hardened_deployment_meets_restricted_and_mcpfleet_hardening() {
    let deployment = hardened_deployment();
    assert_eq!(hardened_violations(&deployment), Vec::<Violation>::new());
}

#[test]
fn an_unknown_field_fails_strict_validation_naming_the_field() {
    let dir = TempDir::new("kube-unknown-field");
    let mut deployment = hardened_deployment();
    set(
        &mut deployment,
        "/spec/template/spec/containers/0/securityContext/runAsNonRootUser",
        json!(true),
    );
    let files = write_objects(dir.path(), &[deployment]);
    for version in SUPPORTED_VERSIONS {
        match validate_strict(&files, version) {
            Err(ValidateError::Invalid { output, .. }) => assert!(
                output.contains("runAsNonRootUser") && output.contains("deployment/search"),
                "{version}: {output}"
            ),
            other => panic!("{version}: expected the unknown field refused, got {other:?}"),
        }
    }
}

#[test]
fn an_object_no_schema_knows_is_not_passed_unchecked() {
    let dir = TempDir::new("kube-no-schema");
    let monitor = json!({
        "apiVersion": "monitoring.coreos.com/v1",
        "kind": "ServiceMonitor",
        "metadata": {"name": "mcpfleet"},
        "spec": {"selector": {}, "endpoints": []},
    });
    let files = write_objects(dir.path(), &[monitor]);
    let error = validate_strict(&files, SUPPORTED_VERSIONS[0]).unwrap_err();
    assert!(error.to_string().contains("ServiceMonitor"), "{error}");
}

/// One way to break the standard: what to change in the hardened Deployment, the rule that
/// must catch it, the field it must name and the container (for a container's field).
struct Breach {
    what: &'static str,
    change: fn(&mut Value),
    rule: Rule,
    field: &'static str,
    container: Option<&'static str>,
}

const POD: &str = "/spec/template/spec";
const SERVER: &str = "/spec/template/spec/containers/0";
const SERVER_CONTEXT: &str = "spec.template.spec.containers[0].securityContext";

fn breaches() -> Vec<Breach> {
    vec![
        Breach {
            what: "host network",
            change: |d| set(d, &format!("{POD}/hostNetwork"), json!(true)),
            rule: Rule::HostNamespaces,
            field: "spec.template.spec.hostNetwork",
            container: None,
        },
        Breach {
            what: "host PID namespace",
            change: |d| set(d, &format!("{POD}/hostPID"), json!(true)),
            rule: Rule::HostNamespaces,
            field: "spec.template.spec.hostPID",
            container: None,
        },
        Breach {
            what: "host IPC namespace",
            change: |d| set(d, &format!("{POD}/hostIPC"), json!(true)),
            rule: Rule::HostNamespaces,
            field: "spec.template.spec.hostIPC",
            container: None,
        },
        Breach {
            what: "Windows host process",
            change: |d| {
                set(
                    d,
                    &format!("{POD}/securityContext/windowsOptions/hostProcess"),
                    json!(true),
                );
            },
            rule: Rule::HostProcess,
            field: "spec.template.spec.securityContext.windowsOptions.hostProcess",
            container: None,
        },
        Breach {
            what: "privileged container",
            change: |d| {
                set(
                    d,
                    &format!("{SERVER}/securityContext/privileged"),
                    json!(true),
                )
            },
            rule: Rule::Privileged,
            field: "spec.template.spec.containers[0].securityContext.privileged",
            container: Some("server"),
        },
        Breach {
            what: "privileged init container",
            change: |d| {
                set(
                    d,
                    &format!("{POD}/initContainers/0/securityContext/privileged"),
                    json!(true),
                );
            },
            rule: Rule::Privileged,
            field: "spec.template.spec.initContainers[0].securityContext.privileged",
            container: Some("prepare"),
        },
        Breach {
            what: "a capability added beyond NET_BIND_SERVICE",
            change: |d| {
                set(
                    d,
                    &format!("{SERVER}/securityContext/capabilities/add"),
                    json!(["NET_BIND_SERVICE", "SYS_ADMIN"]),
                );
            },
            rule: Rule::Capabilities,
            field: "spec.template.spec.containers[0].securityContext.capabilities.add",
            container: Some("server"),
        },
        Breach {
            what: "capabilities not dropped",
            change: |d| remove(d, &format!("{SERVER}/securityContext/capabilities/drop")),
            rule: Rule::Capabilities,
            field: "spec.template.spec.containers[0].securityContext.capabilities.drop",
            container: Some("server"),
        },
        Breach {
            what: "a hostPath volume",
            change: |d| {
                set(
                    d,
                    &format!("{POD}/volumes/1"),
                    json!({"name": "github", "hostPath": {"path": "/etc"}}),
                );
            },
            rule: Rule::HostPathVolumes,
            field: "spec.template.spec.volumes[1].hostPath",
            container: None,
        },
        Breach {
            what: "an NFS volume",
            change: |d| {
                set(
                    d,
                    &format!("{POD}/volumes/1"),
                    json!({"name": "github", "nfs": {"server": "nfs", "path": "/"}}),
                );
            },
            rule: Rule::VolumeTypes,
            field: "spec.template.spec.volumes[1].nfs",
            container: None,
        },
        Breach {
            what: "a host port",
            change: |d| set(d, &format!("{SERVER}/ports/0/hostPort"), json!(8080)),
            rule: Rule::HostPorts,
            field: "spec.template.spec.containers[0].ports[0].hostPort",
            container: Some("server"),
        },
        Breach {
            what: "AppArmor unconfined (field)",
            change: |d| {
                set(
                    d,
                    &format!("{SERVER}/securityContext/appArmorProfile"),
                    json!({"type": "Unconfined"}),
                );
            },
            rule: Rule::AppArmor,
            field: "spec.template.spec.containers[0].securityContext.appArmorProfile.type",
            container: Some("server"),
        },
        Breach {
            what: "AppArmor unconfined (annotation)",
            change: |d| {
                set(
                    d,
                    "/spec/template/metadata/annotations",
                    json!({"container.apparmor.security.beta.kubernetes.io/server": "unconfined"}),
                );
            },
            rule: Rule::AppArmor,
            field: "spec.template.metadata.annotations[container.apparmor.security.beta.kubernetes.io/server]",
            container: None,
        },
        Breach {
            what: "a custom SELinux user",
            change: |d| {
                set(
                    d,
                    &format!("{SERVER}/securityContext/seLinuxOptions"),
                    json!({"user": "system_u"}),
                );
            },
            rule: Rule::SeLinux,
            field: "spec.template.spec.containers[0].securityContext.seLinuxOptions.user",
            container: Some("server"),
        },
        Breach {
            what: "a custom SELinux role on the pod",
            change: |d| {
                set(
                    d,
                    &format!("{POD}/securityContext/seLinuxOptions"),
                    json!({"role": "sysadm_r"}),
                );
            },
            rule: Rule::SeLinux,
            field: "spec.template.spec.securityContext.seLinuxOptions.role",
            container: None,
        },
        Breach {
            what: "an unmasked /proc",
            change: |d| {
                set(
                    d,
                    &format!("{SERVER}/securityContext/procMount"),
                    json!("Unmasked"),
                );
            },
            rule: Rule::ProcMount,
            field: "spec.template.spec.containers[0].securityContext.procMount",
            container: Some("server"),
        },
        Breach {
            what: "seccomp unconfined on the pod",
            change: |d| {
                set(
                    d,
                    &format!("{POD}/securityContext/seccompProfile/type"),
                    json!("Unconfined"),
                );
            },
            rule: Rule::Seccomp,
            field: "spec.template.spec.securityContext.seccompProfile.type",
            container: None,
        },
        Breach {
            what: "no seccomp profile anywhere",
            change: |d| remove(d, &format!("{POD}/securityContext/seccompProfile")),
            rule: Rule::Seccomp,
            field: "spec.template.spec.containers[0].securityContext.seccompProfile.type",
            container: Some("server"),
        },
        Breach {
            what: "an unsafe sysctl",
            change: |d| {
                set(
                    d,
                    &format!("{POD}/securityContext/sysctls"),
                    json!([{"name": "net.ipv4.tcp_syncookies", "value": "1"},
                           {"name": "kernel.msgmax", "value": "65536"}]),
                );
            },
            rule: Rule::Sysctls,
            field: "spec.template.spec.securityContext.sysctls[1].name",
            container: None,
        },
        Breach {
            what: "privilege escalation left to the default",
            change: |d| {
                remove(
                    d,
                    &format!("{SERVER}/securityContext/allowPrivilegeEscalation"),
                )
            },
            rule: Rule::PrivilegeEscalation,
            field: "spec.template.spec.containers[0].securityContext.allowPrivilegeEscalation",
            container: Some("server"),
        },
        Breach {
            what: "privilege escalation allowed",
            change: |d| {
                set(
                    d,
                    &format!("{SERVER}/securityContext/allowPrivilegeEscalation"),
                    json!(true),
                );
            },
            rule: Rule::PrivilegeEscalation,
            field: "spec.template.spec.containers[0].securityContext.allowPrivilegeEscalation",
            container: Some("server"),
        },
        Breach {
            what: "runAsNonRoot nowhere",
            change: |d| remove(d, &format!("{POD}/securityContext/runAsNonRoot")),
            rule: Rule::RunAsNonRoot,
            field: "spec.template.spec.containers[0].securityContext.runAsNonRoot",
            container: Some("server"),
        },
        Breach {
            what: "a container opting out of runAsNonRoot",
            change: |d| {
                set(
                    d,
                    &format!("{SERVER}/securityContext/runAsNonRoot"),
                    json!(false),
                );
            },
            rule: Rule::RunAsNonRoot,
            field: "spec.template.spec.containers[0].securityContext.runAsNonRoot",
            container: Some("server"),
        },
        Breach {
            what: "the pod running as root",
            change: |d| set(d, &format!("{POD}/securityContext/runAsUser"), json!(0)),
            rule: Rule::RunAsUser,
            field: "spec.template.spec.securityContext.runAsUser",
            container: None,
        },
        Breach {
            what: "a container running as root",
            change: |d| set(d, &format!("{SERVER}/securityContext/runAsUser"), json!(0)),
            rule: Rule::RunAsUser,
            field: "spec.template.spec.containers[0].securityContext.runAsUser",
            container: Some("server"),
        },
    ]
}

#[test]
fn each_way_of_breaking_restricted_is_reported_with_its_object_container_and_field() {
    for breach in breaches() {
        let mut deployment = hardened_deployment();
        (breach.change)(&mut deployment);
        let found = restricted_violations(&deployment);
        let rules: BTreeSet<Rule> = found.iter().map(|v| v.rule).collect();
        assert_eq!(
            rules,
            BTreeSet::from([breach.rule]),
            "{}: only {:?} should be reported, got {found:#?}",
            breach.what,
            breach.rule
        );
        let violation = found
            .iter()
            .find(|v| v.field == breach.field)
            .unwrap_or_else(|| {
                panic!(
                    "{}: no violation at {}: {found:#?}",
                    breach.what, breach.field
                )
            });
        assert_eq!(violation.object, "Deployment/search", "{}", breach.what);
        assert_eq!(
            violation.container.as_deref(),
            breach.container,
            "{}",
            breach.what
        );
        let shown = violation.to_string();
        assert!(
            shown.contains("Deployment/search") && shown.contains(breach.field),
            "{}: {shown}",
            breach.what
        );
    }
}

#[test]
fn a_writable_root_filesystem_breaks_mcpfleet_hardening_not_the_standard() {
    let mut deployment = hardened_deployment();
    remove(
        &mut deployment,
        &format!("{SERVER}/securityContext/readOnlyRootFilesystem"),
    );
    assert_eq!(restricted_violations(&deployment), Vec::<Violation>::new());
    let found = hardened_violations(&deployment);
    assert_eq!(found.len(), 1, "{found:#?}");
    assert_eq!(found[0].rule, Rule::ReadOnlyRootFilesystem);
    assert_eq!(
        found[0].field,
        format!("{SERVER_CONTEXT}.readOnlyRootFilesystem")
    );
    assert_eq!(found[0].container.as_deref(), Some("server"));
}

#[test]
fn the_pod_templates_of_cronjobs_and_pods_are_checked_where_they_sit() {
    let deployment = hardened_deployment();
    let mut template = deployment["spec"]["template"].clone();
    set(
        &mut template,
        "/spec/containers/0/securityContext/privileged",
        json!(true),
    );
    let cronjob = json!({
        "apiVersion": "batch/v1",
        "kind": "CronJob",
        "metadata": {"name": "export-state"},
        "spec": {"schedule": "0 3 * * *", "jobTemplate": {"spec": {"template": template.clone()}}},
    });
    let pod = json!({
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": "search-0"},
        "spec": template["spec"].clone(),
    });
    let fields = |object: &Value| -> Vec<String> {
        restricted_violations(object)
            .into_iter()
            .map(|v| format!("{} {}", v.object, v.field))
            .collect()
    };
    assert_eq!(
        fields(&cronjob),
        [
            "CronJob/export-state spec.jobTemplate.spec.template.spec.containers[0].securityContext.privileged"
        ]
    );
    assert_eq!(
        fields(&pod),
        ["Pod/search-0 spec.containers[0].securityContext.privileged"]
    );
    let config = json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "x"}});
    assert_eq!(restricted_violations(&config), Vec::<Violation>::new());
}

#[test]
fn every_breach_is_still_a_schema_valid_object() {
    // The breaches are policy: a cluster's schema accepts each, only Pod Security admission
    // (or this checker) refuses it. So strict validation alone would let every one through.
    let dir = TempDir::new("kube-breaches");
    let objects: Vec<Value> = breaches()
        .iter()
        .map(|breach| {
            let mut deployment = hardened_deployment();
            (breach.change)(&mut deployment);
            deployment
        })
        .collect();
    let files = write_objects(dir.path(), &objects);
    validate_strict(&files, SUPPORTED_VERSIONS[2]).unwrap_or_else(|e| panic!("{e}"));
}
