//! The "restricted" Pod Security Standard, checked on a manifest before any cluster sees it
//! (kubernetes.io/docs/concepts/security/pod-security-standards: restricted is baseline
//! plus its own controls; both are here, as of Kubernetes 1.35–1.37), and mcpfleet's own
//! hardening on top of it ([`hardened_violations`]).
//!
//! Admission in a cluster labelled `pod-security.kubernetes.io/enforce: restricted` refuses
//! a pod that breaks any of these; checking the rendered objects here means a fleet never
//! learns that from a ReplicaSet stuck at zero pods.

use serde_json::Value;
use std::fmt;

/// One control of the standard (or mcpfleet's own, [`Rule::ReadOnlyRootFilesystem`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Rule {
    /// Baseline "HostProcess": no Windows host-process containers.
    HostProcess,
    /// Baseline "Host Namespaces": no `hostNetwork`, `hostPID`, `hostIPC`.
    HostNamespaces,
    /// Baseline "Privileged Containers".
    Privileged,
    /// Restricted "Capabilities": drop `ALL`, add nothing but `NET_BIND_SERVICE`.
    Capabilities,
    /// Baseline "HostPath Volumes".
    HostPathVolumes,
    /// Baseline "Host Ports": `hostPort` unset or 0.
    HostPorts,
    /// Baseline "AppArmor": never `Unconfined` (field or annotation).
    AppArmor,
    /// Baseline "SELinux": no custom user or role, only the container types.
    SeLinux,
    /// Baseline "/proc Mount Type": `Default` only.
    ProcMount,
    /// Restricted "Seccomp": `RuntimeDefault` or `Localhost`, on the pod or every container.
    Seccomp,
    /// Baseline "Sysctls": only the safe set.
    Sysctls,
    /// Restricted "Volume Types": only the core volume types listed.
    VolumeTypes,
    /// Restricted "Privilege Escalation": `allowPrivilegeEscalation: false` everywhere.
    PrivilegeEscalation,
    /// Restricted "Running as Non-root": `runAsNonRoot: true` on the pod or every container.
    RunAsNonRoot,
    /// Restricted "Running as Non-root user": `runAsUser` never 0.
    RunAsUser,
    /// mcpfleet's own, not the standard's: `readOnlyRootFilesystem: true` on every container.
    ReadOnlyRootFilesystem,
}

impl Rule {
    /// The control's name as the standard's table titles it.
    pub fn title(self) -> &'static str {
        match self {
            Rule::HostProcess => "HostProcess",
            Rule::HostNamespaces => "Host Namespaces",
            Rule::Privileged => "Privileged Containers",
            Rule::Capabilities => "Capabilities",
            Rule::HostPathVolumes => "HostPath Volumes",
            Rule::HostPorts => "Host Ports",
            Rule::AppArmor => "AppArmor",
            Rule::SeLinux => "SELinux",
            Rule::ProcMount => "/proc Mount Type",
            Rule::Seccomp => "Seccomp",
            Rule::Sysctls => "Sysctls",
            Rule::VolumeTypes => "Volume Types",
            Rule::PrivilegeEscalation => "Privilege Escalation",
            Rule::RunAsNonRoot => "Running as Non-root",
            Rule::RunAsUser => "Running as Non-root user",
            Rule::ReadOnlyRootFilesystem => "read-only root filesystem (mcpfleet hardening)",
        }
    }
}

/// One broken rule: which object, which container (if the field is a container's), which
/// field, and what it must be instead.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Violation {
    /// `Kind/name`, e.g. `Deployment/search`.
    pub object: String,
    /// The container's name, for a field of a container.
    pub container: Option<String>,
    /// The field's path in the object, e.g.
    /// `spec.template.spec.containers[0].securityContext.allowPrivilegeEscalation`.
    pub field: String,
    /// The control broken.
    pub rule: Rule,
    /// What the field must be (and what it is).
    pub problem: String,
}

impl fmt::Display for Violation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.object)?;
        if let Some(container) = &self.container {
            write!(f, ", container `{container}`")?;
        }
        write!(
            f,
            ": {} {} ({})",
            self.field,
            self.problem,
            self.rule.title()
        )
    }
}

/// The volume types the restricted profile allows (besides a volume's `name`).
const ALLOWED_VOLUMES: &[&str] = &[
    "configMap",
    "csi",
    "downwardAPI",
    "emptyDir",
    "ephemeral",
    "persistentVolumeClaim",
    "projected",
    "secret",
];
/// The safe sysctls (baseline "Sysctls", the set Kubernetes 1.32+ allows).
const SAFE_SYSCTLS: &[&str] = &[
    "kernel.shm_rmid_forced",
    "net.ipv4.ip_local_port_range",
    "net.ipv4.ip_unprivileged_port_start",
    "net.ipv4.tcp_syncookies",
    "net.ipv4.ping_group_range",
    "net.ipv4.ip_local_reserved_ports",
    "net.ipv4.tcp_keepalive_time",
    "net.ipv4.tcp_fin_timeout",
    "net.ipv4.tcp_keepalive_intvl",
    "net.ipv4.tcp_keepalive_probes",
    "net.ipv4.tcp_rmem",
    "net.ipv4.tcp_wmem",
];
/// The SELinux types baseline allows (besides none).
const SELINUX_TYPES: &[&str] = &[
    "container_t",
    "container_init_t",
    "container_kvm_t",
    "container_engine_t",
];
const CONTAINER_LISTS: &[&str] = &["containers", "initContainers", "ephemeralContainers"];

/// Every rule of the restricted Pod Security Standard that `object` breaks, if it has a pod
/// template (Pod, Deployment, StatefulSet, DaemonSet, ReplicaSet, ReplicationController,
/// Job, CronJob's job template); nothing for any other object.
///
/// `readOnlyRootFilesystem` is not part of the standard; [`hardened_violations`] adds it.
pub fn restricted_violations(object: &Value) -> Vec<Violation> {
    let Some(pod) = PodTemplate::of(object) else {
        return Vec::new();
    };
    let mut found = Vec::new();
    pod.check_pod(&mut found);
    for container in pod.containers() {
        pod.check_container(&container, &mut found);
    }
    found
}

/// [`restricted_violations`] plus mcpfleet's own hardening: every container's root
/// filesystem is read-only (what it writes goes to an `emptyDir` on `/tmp`).
pub fn hardened_violations(object: &Value) -> Vec<Violation> {
    let mut found = restricted_violations(object);
    if let Some(pod) = PodTemplate::of(object) {
        for container in pod.containers() {
            if container.security("readOnlyRootFilesystem") != Some(&Value::Bool(true)) {
                found.push(pod.violation(
                    Some(&container),
                    "readOnlyRootFilesystem",
                    Rule::ReadOnlyRootFilesystem,
                    format!(
                        "must be true, is {}",
                        shown(container.security("readOnlyRootFilesystem"))
                    ),
                ));
            }
        }
    }
    found
}

/// The pod template of a workload object and where it sits in the object.
struct PodTemplate<'a> {
    object: String,
    /// The path to the template, `spec.template.` for a Deployment, empty for a Pod.
    prefix: &'static str,
    annotations: Option<&'a Value>,
    spec: &'a Value,
}

struct Container<'a> {
    /// `containers[0]`, `initContainers[1]`…
    at: String,
    name: String,
    value: &'a Value,
}

impl Container<'_> {
    fn security(&self, field: &str) -> Option<&Value> {
        self.value.pointer(&format!("/securityContext/{field}"))
    }
}

impl<'a> PodTemplate<'a> {
    fn of(object: &'a Value) -> Option<Self> {
        let kind = object.get("kind")?.as_str()?;
        let (prefix, template) = match kind {
            "Pod" => ("", object),
            "Deployment"
            | "StatefulSet"
            | "DaemonSet"
            | "ReplicaSet"
            | "ReplicationController"
            | "Job" => ("spec.template.", object.pointer("/spec/template")?),
            "CronJob" => (
                "spec.jobTemplate.spec.template.",
                object.pointer("/spec/jobTemplate/spec/template")?,
            ),
            _ => return None,
        };
        let name = object
            .pointer("/metadata/name")
            .and_then(Value::as_str)
            .unwrap_or("(unnamed)");
        Some(PodTemplate {
            object: format!("{kind}/{name}"),
            prefix,
            annotations: template.pointer("/metadata/annotations"),
            spec: template.get("spec")?,
        })
    }

    fn containers(&self) -> Vec<Container<'a>> {
        let mut all = Vec::new();
        for list in CONTAINER_LISTS {
            let Some(items) = self.spec.get(*list).and_then(Value::as_array) else {
                continue;
            };
            for (index, value) in items.iter().enumerate() {
                all.push(Container {
                    at: format!("{list}[{index}]"),
                    name: value
                        .get("name")
                        .and_then(Value::as_str)
                        .unwrap_or("(unnamed)")
                        .to_owned(),
                    value,
                });
            }
        }
        all
    }

    fn pod_security(&self, field: &str) -> Option<&'a Value> {
        self.spec.pointer(&format!("/securityContext/{field}"))
    }

    /// A violation at `field`: of the container's securityContext when `container` is
    /// given, else of the pod spec itself (`field` then includes `securityContext.` when
    /// it is there).
    fn violation(
        &self,
        container: Option<&Container<'_>>,
        field: &str,
        rule: Rule,
        problem: String,
    ) -> Violation {
        let field = match container {
            Some(c) => format!("{}spec.{}.securityContext.{field}", self.prefix, c.at),
            None => format!("{}{field}", self.prefix),
        };
        Violation {
            object: self.object.clone(),
            container: container.map(|c| c.name.clone()),
            field,
            rule,
            problem,
        }
    }

    fn check_pod(&self, found: &mut Vec<Violation>) {
        for namespace in ["hostNetwork", "hostPID", "hostIPC"] {
            if let Some(value) = self.spec.get(namespace).filter(|v| is_true(v)) {
                found.push(self.violation(
                    None,
                    &format!("spec.{namespace}"),
                    Rule::HostNamespaces,
                    format!("must be false or unset, is {value}"),
                ));
            }
        }
        if let Some(value) = self
            .pod_security("windowsOptions/hostProcess")
            .filter(|v| is_true(v))
        {
            found.push(self.violation(
                None,
                "spec.securityContext.windowsOptions.hostProcess",
                Rule::HostProcess,
                format!("must be false or unset, is {value}"),
            ));
        }
        if let Some(selinux) = self.pod_security("seLinuxOptions") {
            for (field, problem) in selinux_problems(selinux) {
                found.push(self.violation(
                    None,
                    &format!("spec.securityContext.seLinuxOptions.{field}"),
                    Rule::SeLinux,
                    problem,
                ));
            }
        }
        if let Some(problem) = apparmor_problem(self.pod_security("appArmorProfile/type")) {
            found.push(self.violation(
                None,
                "spec.securityContext.appArmorProfile.type",
                Rule::AppArmor,
                problem,
            ));
        }
        if let Some(annotations) = self.annotations.and_then(Value::as_object) {
            for (key, value) in annotations {
                if key.starts_with("container.apparmor.security.beta.kubernetes.io/")
                    && !value
                        .as_str()
                        .is_some_and(|v| v == "runtime/default" || v.starts_with("localhost/"))
                {
                    found.push(self.violation(
                        None,
                        &format!("metadata.annotations[{key}]"),
                        Rule::AppArmor,
                        format!("must be runtime/default or localhost/<profile>, is {value}"),
                    ));
                }
            }
        }
        if let Some(sysctls) = self.pod_security("sysctls").and_then(Value::as_array) {
            for (index, sysctl) in sysctls.iter().enumerate() {
                let name = sysctl.get("name").and_then(Value::as_str).unwrap_or("");
                if !SAFE_SYSCTLS.contains(&name) {
                    found.push(self.violation(
                        None,
                        &format!("spec.securityContext.sysctls[{index}].name"),
                        Rule::Sysctls,
                        format!("must be one of the safe sysctls, is {name:?}"),
                    ));
                }
            }
        }
        if let Some(volumes) = self.spec.get("volumes").and_then(Value::as_array) {
            for (index, volume) in volumes.iter().enumerate() {
                let Some(volume) = volume.as_object() else {
                    continue;
                };
                for source in volume.keys().filter(|k| *k != "name") {
                    let (rule, problem) = if source == "hostPath" {
                        (Rule::HostPathVolumes, "is forbidden".to_owned())
                    } else if ALLOWED_VOLUMES.contains(&source.as_str()) {
                        continue;
                    } else {
                        (
                            Rule::VolumeTypes,
                            format!(
                                "is not an allowed volume type ({})",
                                ALLOWED_VOLUMES.join(", ")
                            ),
                        )
                    };
                    found.push(self.violation(
                        None,
                        &format!("spec.volumes[{index}].{source}"),
                        rule,
                        problem,
                    ));
                }
            }
        }
        if self.pod_security("runAsNonRoot") == Some(&Value::Bool(false)) {
            found.push(self.violation(
                None,
                "spec.securityContext.runAsNonRoot",
                Rule::RunAsNonRoot,
                "must be true or unset (then true on every container), is false".to_owned(),
            ));
        }
        if is_zero(self.pod_security("runAsUser")) {
            found.push(self.violation(
                None,
                "spec.securityContext.runAsUser",
                Rule::RunAsUser,
                "must not be 0 (root)".to_owned(),
            ));
        }
        if let Some(kind) = self.pod_security("seccompProfile/type")
            && !is_allowed_seccomp(kind)
        {
            found.push(self.violation(
                None,
                "spec.securityContext.seccompProfile.type",
                Rule::Seccomp,
                format!("must be RuntimeDefault or Localhost, is {kind}"),
            ));
        }
    }

    fn check_container(&self, c: &Container<'_>, found: &mut Vec<Violation>) {
        let mut push = |field: &str, rule, problem: String| {
            found.push(self.violation(Some(c), field, rule, problem));
        };
        if let Some(value) = c.security("privileged").filter(|v| is_true(v)) {
            push(
                "privileged",
                Rule::Privileged,
                format!("must be false or unset, is {value}"),
            );
        }
        if let Some(value) = c
            .security("windowsOptions/hostProcess")
            .filter(|v| is_true(v))
        {
            push(
                "windowsOptions.hostProcess",
                Rule::HostProcess,
                format!("must be false or unset, is {value}"),
            );
        }
        let drops_all = c
            .security("capabilities/drop")
            .and_then(Value::as_array)
            .is_some_and(|drop| drop.iter().any(|cap| cap == "ALL"));
        if !drops_all {
            push(
                "capabilities.drop",
                Rule::Capabilities,
                format!(
                    "must include ALL, is {}",
                    shown(c.security("capabilities/drop"))
                ),
            );
        }
        if let Some(added) = c.security("capabilities/add").and_then(Value::as_array) {
            for cap in added.iter().filter(|cap| *cap != "NET_BIND_SERVICE") {
                push(
                    "capabilities.add",
                    Rule::Capabilities,
                    format!("may add only NET_BIND_SERVICE, adds {cap}"),
                );
            }
        }
        if let Some(selinux) = c.security("seLinuxOptions") {
            for (field, problem) in selinux_problems(selinux) {
                push(&format!("seLinuxOptions.{field}"), Rule::SeLinux, problem);
            }
        }
        if let Some(problem) = apparmor_problem(c.security("appArmorProfile/type")) {
            push("appArmorProfile.type", Rule::AppArmor, problem);
        }
        if let Some(mount) = c.security("procMount").filter(|m| *m != "Default") {
            push(
                "procMount",
                Rule::ProcMount,
                format!("must be Default or unset, is {mount}"),
            );
        }
        if c.security("allowPrivilegeEscalation") != Some(&Value::Bool(false)) {
            push(
                "allowPrivilegeEscalation",
                Rule::PrivilegeEscalation,
                format!(
                    "must be false, is {}",
                    shown(c.security("allowPrivilegeEscalation"))
                ),
            );
        }
        let pod_non_root = self.pod_security("runAsNonRoot") == Some(&Value::Bool(true));
        match c.security("runAsNonRoot") {
            Some(Value::Bool(true)) => {}
            None if pod_non_root => {}
            value => push(
                "runAsNonRoot",
                Rule::RunAsNonRoot,
                format!(
                    "must be true (or unset with the pod's true), is {}",
                    shown(value)
                ),
            ),
        }
        if is_zero(c.security("runAsUser")) {
            push(
                "runAsUser",
                Rule::RunAsUser,
                "must not be 0 (root)".to_owned(),
            );
        }
        let pod_seccomp = self
            .pod_security("seccompProfile/type")
            .is_some_and(is_allowed_seccomp);
        match c.security("seccompProfile/type") {
            Some(kind) if is_allowed_seccomp(kind) => {}
            None if pod_seccomp => {}
            value => push(
                "seccompProfile.type",
                Rule::Seccomp,
                format!(
                    "must be RuntimeDefault or Localhost (or unset with the pod's), is {}",
                    shown(value)
                ),
            ),
        }
        if let Some(ports) = c.value.get("ports").and_then(Value::as_array) {
            for (index, port) in ports.iter().enumerate() {
                if let Some(host_port) = port.get("hostPort").filter(|p| !is_zero(Some(p))) {
                    // Not a securityContext field: spelled out from the pod spec.
                    found.push(Violation {
                        object: self.object.clone(),
                        container: Some(c.name.clone()),
                        field: format!("{}spec.{}.ports[{index}].hostPort", self.prefix, c.at),
                        rule: Rule::HostPorts,
                        problem: format!("must be 0 or unset, is {host_port}"),
                    });
                }
            }
        }
    }
}

fn selinux_problems(options: &Value) -> Vec<(&'static str, String)> {
    let mut problems = Vec::new();
    for field in ["user", "role"] {
        if let Some(value) = options.get(field).filter(|v| *v != "") {
            problems.push((field, format!("must be unset, is {value}")));
        }
    }
    if let Some(kind) = options.get("type").filter(|v| *v != "")
        && !kind.as_str().is_some_and(|k| SELINUX_TYPES.contains(&k))
    {
        problems.push((
            "type",
            format!(
                "must be unset or one of {}, is {kind}",
                SELINUX_TYPES.join(", ")
            ),
        ));
    }
    problems
}

fn apparmor_problem(kind: Option<&Value>) -> Option<String> {
    let kind = kind?;
    (kind != "RuntimeDefault" && kind != "Localhost")
        .then(|| format!("must be RuntimeDefault or Localhost, is {kind}"))
}

fn is_allowed_seccomp(kind: &Value) -> bool {
    kind == "RuntimeDefault" || kind == "Localhost"
}

fn is_true(value: &Value) -> bool {
    *value == Value::Bool(true)
}

fn is_zero(value: Option<&Value>) -> bool {
    value.and_then(Value::as_i64) == Some(0)
}

fn shown(value: Option<&Value>) -> String {
    value.map_or_else(|| "unset".to_owned(), Value::to_string)
}
