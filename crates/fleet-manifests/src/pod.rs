//! What every pod template shares: the hardening of the "restricted" Pod Security Standard
//! at pod and container level, the writable `/tmp`, the user a container runs as, and
//! resource quantities.

use fleet_spec::model::Resources;
use serde_json::{Map, Value, json};

/// The user and group of a container that names none, or names one by name: the
/// conventional "nonroot" of minimal images (mcpfleet's own image runs as it). A name
/// cannot be used because Kubernetes only takes numbers and cannot look into the image.
pub(crate) const NONROOT: u32 = 65532;

/// The numeric user and group `user` (`UID` or `UID:GID`) names; `UID` alone runs with
/// the group of the same number. `None` for a name or an unset user: [`NONROOT`].
pub(crate) fn numeric_user(user: Option<&str>) -> (u32, u32) {
    let parse = |user: &str| -> Option<(u32, u32)> {
        match user.split_once(':') {
            Some((uid, gid)) => Some((uid.parse().ok()?, gid.parse().ok()?)),
            None => {
                let uid = user.parse().ok()?;
                Some((uid, uid))
            }
        }
    };
    user.and_then(parse).unwrap_or((NONROOT, NONROOT))
}

/// The pod-level half of the restricted standard. `fsGroup` makes mounted secrets and
/// volumes readable by the container's group.
pub(crate) fn pod_security((uid, gid): (u32, u32)) -> Value {
    json!({
        "fsGroup": gid,
        "runAsGroup": gid,
        "runAsNonRoot": true,
        "runAsUser": uid,
        "seccompProfile": { "type": "RuntimeDefault" },
    })
}

/// The container-level half: no privileges to gain, no capabilities, and a read-only
/// root filesystem unless the fleet file turned it off (`container.read_only: false`).
pub(crate) fn container_security(read_only_root: bool) -> Value {
    json!({
        "allowPrivilegeEscalation": false,
        "capabilities": { "drop": ["ALL"] },
        "privileged": false,
        "readOnlyRootFilesystem": read_only_root,
        "runAsNonRoot": true,
        "seccompProfile": { "type": "RuntimeDefault" },
    })
}

/// `/tmp` stays writable on a read-only root, as it does for local containers.
pub(crate) fn tmp_volume() -> Value {
    json!({ "name": "tmp", "emptyDir": {} })
}

pub(crate) fn tmp_mount() -> Value {
    json!({ "name": "tmp", "mountPath": "/tmp" })
}

/// Requests equal to limits (the Guaranteed class when both are set): a container gets
/// what its local twin would, and is never scheduled on less. `pids` has no per-container
/// equivalent in Kubernetes (the kubelet sets one per pod) and is left out.
pub(crate) fn resources(resources: &Resources) -> Option<Value> {
    let mut amounts = Map::new();
    if let Some(cpus) = resources.cpus {
        amounts.insert("cpu".into(), cpu_quantity(cpus).into());
    }
    if let Some(bytes) = resources.memory {
        amounts.insert("memory".into(), memory_quantity(bytes).into());
    }
    (!amounts.is_empty()).then(|| json!({ "limits": amounts, "requests": amounts }))
}

/// What a container that says nothing gets under a quota (the LimitRange's default).
pub(crate) const DEFAULT_CPU_MILLIS: u64 = 250;
pub(crate) const DEFAULT_MEMORY: u64 = 256 << 20;

/// CPUs as a quantity: whole CPUs (`2`) or millicores (`500m`), at least `1m`.
pub(crate) fn cpu_quantity(cpus: f64) -> String {
    millis_quantity(((cpus * 1000.0).round() as u64).max(1))
}

/// Millicores as a quantity: whole CPUs when they are (`2`), else `500m`.
pub(crate) fn millis_quantity(millis: u64) -> String {
    if millis.is_multiple_of(1000) {
        (millis / 1000).to_string()
    } else {
        format!("{millis}m")
    }
}

/// Bytes as a quantity, in the largest binary unit that divides them (`256Mi`, `1Gi`).
pub(crate) fn memory_quantity(bytes: u64) -> String {
    for (unit, size) in [
        ("Ti", 1u64 << 40),
        ("Gi", 1 << 30),
        ("Mi", 1 << 20),
        ("Ki", 1 << 10),
    ] {
        if bytes > 0 && bytes.is_multiple_of(size) {
            return format!("{}{unit}", bytes / size);
        }
    }
    bytes.to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numeric_users_are_kept_and_names_run_as_nonroot() {
        assert_eq!(numeric_user(Some("1000:2000")), (1000, 2000));
        assert_eq!(numeric_user(Some("1000")), (1000, 1000));
        assert_eq!(numeric_user(Some("app")), (NONROOT, NONROOT));
        assert_eq!(numeric_user(Some("app:app")), (NONROOT, NONROOT));
        assert_eq!(numeric_user(None), (NONROOT, NONROOT));
    }

    #[test]
    fn quantities_are_written_as_kubernetes_writes_them() {
        assert_eq!(cpu_quantity(0.5), "500m");
        assert_eq!(cpu_quantity(2.0), "2");
        assert_eq!(cpu_quantity(1.25), "1250m");
        assert_eq!(cpu_quantity(0.0001), "1m");
        assert_eq!(memory_quantity(256 << 20), "256Mi");
        assert_eq!(memory_quantity(1 << 30), "1Gi");
        assert_eq!(memory_quantity(512_000_000), "500000Ki");
        assert_eq!(memory_quantity(1000), "1000");
    }
}
