//! Server-side apply of rendered objects, in order, as field manager `mcpfleet`.

use std::fmt;

use kube::api::{Api, DynamicObject, Patch, PatchParams};
use serde_json::Value;

use crate::cluster::{ApiError, Cluster, FIELD_MANAGER};
use crate::kinds::{self, Scope};

/// Which object: enough to find it with `kubectl get`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ObjectRef {
    /// `kind` (`Deployment`).
    pub kind: String,
    /// `metadata.namespace`, absent for cluster-scoped objects.
    pub namespace: Option<String>,
    /// `metadata.name`.
    pub name: String,
}

impl fmt::Display for ObjectRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.namespace {
            Some(namespace) => write!(f, "{} {namespace}/{}", self.kind, self.name),
            None => write!(f, "{} {}", self.kind, self.name),
        }
    }
}

/// What an apply did to one object, as `kubectl apply` words it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ApplyOutcome {
    /// The object did not exist before.
    Created,
    /// The object existed and the apply changed it (its `resourceVersion` moved).
    Configured,
    /// The object existed and already matched: the API server skips a no-op apply
    /// without writing, so `resourceVersion` stays the same.
    Unchanged,
}

impl ApplyOutcome {
    /// The word for progress output.
    pub fn as_str(self) -> &'static str {
        match self {
            ApplyOutcome::Created => "created",
            ApplyOutcome::Configured => "configured",
            ApplyOutcome::Unchanged => "unchanged",
        }
    }
}

/// One applied object.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AppliedObject {
    /// The object.
    pub object: ObjectRef,
    /// What the apply did to it.
    pub outcome: ApplyOutcome,
}

/// Every object applied, in the order given.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ApplyReport {
    /// One entry per object.
    pub objects: Vec<AppliedObject>,
}

/// A field another field manager owns, which mcpfleet's apply would change.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FieldConflict {
    /// The other manager (`kubectl-edit`, `helm`, `kubectl-client-side-apply`).
    pub manager: String,
    /// The field, as the API server names it (`.spec.replicas`).
    pub field: String,
}

/// Why [`Cluster::apply`] stopped. Objects before the failing one were applied; applying
/// again after fixing the cause is safe (server-side apply is idempotent).
#[derive(Debug, thiserror::Error)]
pub enum ApplyError {
    /// An object lacks what every Kubernetes object has.
    #[error(
        "object #{index} has no {missing}; every object needs apiVersion, kind and metadata.name"
    )]
    Malformed {
        /// Its position in the list (from 1).
        index: usize,
        /// The missing field.
        missing: &'static str,
    },
    /// The object's kind is not one mcpfleet renders, so where to send it is unknown.
    #[error(
        "{object}: mcpfleet does not apply {api_version} {kind} (it applies only the kinds it renders: {})",
        kinds::RENDERED.iter().map(|k| k.kind).collect::<Vec<_>>().join(", ")
    )]
    UnknownKind {
        /// The object.
        object: ObjectRef,
        /// Its `apiVersion`.
        api_version: String,
        /// Its `kind`.
        kind: String,
    },
    /// A namespaced object without `metadata.namespace`: applying it would land in
    /// whatever namespace the kubeconfig defaults to.
    #[error("{object} has no metadata.namespace; rendered objects name their namespace")]
    MissingNamespace {
        /// The object.
        object: ObjectRef,
    },
    /// Fields the apply would set are owned by another field manager, and mcpfleet never
    /// takes them over silently.
    #[error(
        "{object}: {} owned by another tool: {}; stop that tool managing them (or remove them \
         from what it applies), or take them over with --force-conflicts",
        if conflicts.len() == 1 { "a field is" } else { "fields are" },
        conflicts.iter().map(|c| format!("{} (manager `{}`)", c.field, c.manager)).collect::<Vec<_>>().join(", ")
    )]
    Conflict {
        /// The object.
        object: ObjectRef,
        /// Each contested field with its manager.
        conflicts: Vec<FieldConflict>,
    },
    /// The credentials may not write this object.
    #[error(
        "{object}: forbidden: {message}; ask a cluster admin to grant `patch` (and `get`) on it, \
         or use a context with those rights"
    )]
    Forbidden {
        /// The object.
        object: ObjectRef,
        /// The API server's message (names the user and the verb).
        message: String,
    },
    /// Any other failed request (the API server unreachable, the object invalid, …).
    #[error("{object}: {source}")]
    Api {
        /// The object.
        object: ObjectRef,
        /// What went wrong (boxed: it carries kube's error, and keeps every result small).
        #[source]
        source: Box<ApiError>,
    },
}

impl Cluster {
    /// Server-side applies each object in order (field manager `mcpfleet`, never forced)
    /// and says for each whether it was created, configured or unchanged. The outcome comes
    /// from a GET before the apply: absent → created; otherwise the `resourceVersion`
    /// before and after (a no-op apply does not write, so it does not move).
    ///
    /// # Errors
    /// [`ApplyError`] for the first object that cannot be applied; the ones before it were.
    pub async fn apply(&self, objects: &[Value]) -> Result<ApplyReport, ApplyError> {
        let params = PatchParams::apply(FIELD_MANAGER);
        let mut report = ApplyReport::default();
        for (index, value) in objects.iter().enumerate() {
            let (object, api) = self.addressed(index + 1, value)?;
            let api_error = |source| ApplyError::Api {
                object: object.clone(),
                source: Box::new(source),
            };
            let before = api
                .get_opt(&object.name)
                .await
                .map_err(|e| api_error(self.api_error(e)))?;
            let after = api
                .patch(&object.name, &params, &Patch::Apply(value))
                .await
                .map_err(|e| self.apply_error(&object, e))?;
            let outcome = match before {
                None => ApplyOutcome::Created,
                Some(before)
                    if before.metadata.resource_version == after.metadata.resource_version =>
                {
                    ApplyOutcome::Unchanged
                }
                Some(_) => ApplyOutcome::Configured,
            };
            tracing::debug!(%object, outcome = outcome.as_str(), "applied");
            report.objects.push(AppliedObject { object, outcome });
        }
        Ok(report)
    }

    /// The object's identity and the API it is sent to, from the kinds table.
    fn addressed(
        &self,
        index: usize,
        value: &Value,
    ) -> Result<(ObjectRef, Api<DynamicObject>), ApplyError> {
        let field = |pointer: &str, missing| {
            value
                .pointer(pointer)
                .and_then(Value::as_str)
                .ok_or(ApplyError::Malformed { index, missing })
        };
        let api_version = field("/apiVersion", "apiVersion")?;
        let kind = field("/kind", "kind")?;
        let object = ObjectRef {
            kind: kind.to_owned(),
            namespace: value
                .pointer("/metadata/namespace")
                .and_then(Value::as_str)
                .map(str::to_owned),
            name: field("/metadata/name", "metadata.name")?.to_owned(),
        };
        let Some(known) = kinds::lookup(api_version, kind) else {
            return Err(ApplyError::UnknownKind {
                object,
                api_version: api_version.to_owned(),
                kind: kind.to_owned(),
            });
        };
        let resource = known.api_resource();
        let api = match (known.scope, &object.namespace) {
            (Scope::Cluster, _) => Api::all_with(self.client.clone(), &resource),
            (Scope::Namespaced, Some(namespace)) => {
                Api::namespaced_with(self.client.clone(), namespace, &resource)
            }
            (Scope::Namespaced, None) => return Err(ApplyError::MissingNamespace { object }),
        };
        Ok((object, api))
    }

    fn apply_error(&self, object: &ObjectRef, error: kube::Error) -> ApplyError {
        let object = object.clone();
        match error {
            kube::Error::Api(status) if status.code == 409 => ApplyError::Conflict {
                conflicts: field_conflicts(&status),
                object,
            },
            kube::Error::Api(status) if status.code == 403 => ApplyError::Forbidden {
                object,
                message: status.message.clone(),
            },
            error => ApplyError::Api {
                object,
                source: Box::new(self.api_error(error)),
            },
        }
    }
}

/// The contested fields of a 409 from server-side apply. The API server lists them as
/// `FieldManagerConflict` causes (`conflict with "helm" using apps/v1`, field
/// `.spec.replicas`); without causes, the message is all there is.
pub(crate) fn field_conflicts(status: &kube::core::Status) -> Vec<FieldConflict> {
    let causes = status.details.iter().flat_map(|details| &details.causes);
    let conflicts: Vec<FieldConflict> = causes
        .filter(|cause| cause.reason == "FieldManagerConflict")
        .map(|cause| FieldConflict {
            manager: quoted_manager(&cause.message).unwrap_or_else(|| cause.message.clone()),
            field: cause.field.clone(),
        })
        .collect();
    if conflicts.is_empty() {
        vec![FieldConflict {
            manager: "unknown".to_owned(),
            field: status.message.clone(),
        }]
    } else {
        conflicts
    }
}

/// The manager's name in `conflict with "NAME" using …`.
fn quoted_manager(message: &str) -> Option<String> {
    let start = message.find('"')? + 1;
    let len = message[start..].find('"')?;
    Some(message[start..start + len].to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_conflict_without_causes_keeps_the_servers_message() {
        let status: kube::core::Status = serde_json::from_value(serde_json::json!({
            "code": 409, "reason": "Conflict",
            "message": "Apply failed with 1 conflict: conflict with \"helm\": .spec.replicas"
        }))
        .unwrap();
        let conflicts = field_conflicts(&status);
        assert_eq!(conflicts.len(), 1);
        assert!(
            conflicts[0]
                .field
                .contains("conflict with \"helm\": .spec.replicas")
        );
    }
}
