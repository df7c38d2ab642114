//! Before the first apply: can this fleet be deployed to this cluster with these
//! credentials? Each check becomes a line that says what is wrong and what to do.

use std::collections::BTreeMap;
use std::fmt;

use fleet_spec::model::PodReach;
use futures::StreamExt as _;
use k8s_openapi::api::authorization::v1::{
    ResourceAttributes, SelfSubjectAccessReview, SelfSubjectAccessReviewSpec,
};
use k8s_openapi::api::core::v1::{Namespace, ResourceQuota, Secret};
use kube::api::{Api, ListParams, PostParams};
use serde_json::Value;

#[cfg(doc)]
use crate::cluster::ClusterAccess;
use crate::cluster::{ApiError, Cluster};
use crate::kinds::{self, Scope};
use crate::quantity::Quantity;

/// The oldest Kubernetes minor mcpfleet supports (1.33); newer ones are supported too.
pub const OLDEST_SUPPORTED_MINOR: u32 = 33;

/// How many access reviews are in flight at once: enough to hide the round trips, few
/// enough not to look like a burst to the API server's priority and fairness.
const CONCURRENT_REVIEWS: usize = 8;

/// A key of a Secret the fleet references (`secrets.NAME.kubernetes` in the fleet file).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SecretKeyRef {
    /// The Secret's name, in the fleet's namespace.
    pub secret: String,
    /// The key in its `data`.
    pub key: String,
}

/// How much a check matters.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Severity {
    /// Fine.
    Ok,
    /// May go wrong; the deploy can still be tried.
    Warning,
    /// The deploy would fail; fix this first.
    Failure,
}

/// What a check is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CheckArea {
    /// The API server and its version.
    Api,
    /// The fleet's namespace.
    Namespace,
    /// RBAC: may the credentials do what apply and the runtime do.
    Access,
    /// A referenced Secret key.
    Secret,
    /// ResourceQuota room for the fleet's requests.
    Quota,
}

/// One check's result.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Check {
    /// What it is about.
    pub area: CheckArea,
    /// How much it matters.
    pub severity: Severity,
    /// What was found and, when not ok, what to do.
    pub message: String,
}

impl Severity {
    /// `ok`, `warning` or `failed`: how a report line starts, and its name in JSON.
    pub fn as_str(self) -> &'static str {
        match self {
            Severity::Ok => "ok",
            Severity::Warning => "warning",
            Severity::Failure => "failed",
        }
    }
}

impl CheckArea {
    /// `api`, `namespace`, `access`, `secret` or `quota`: its name in JSON.
    pub fn as_str(self) -> &'static str {
        match self {
            CheckArea::Api => "api",
            CheckArea::Namespace => "namespace",
            CheckArea::Access => "access",
            CheckArea::Secret => "secret",
            CheckArea::Quota => "quota",
        }
    }
}

impl fmt::Display for Check {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.severity.as_str(), self.message)
    }
}

/// Every check [`Cluster::preflight`] made, in order.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PreflightReport {
    /// The API server's version (`v1.35.2`), when it answered.
    pub server_version: Option<String>,
    /// The checks.
    pub checks: Vec<Check>,
}

impl PreflightReport {
    /// Whether nothing failed (warnings allowed).
    pub fn passed(&self) -> bool {
        self.failures().next().is_none()
    }

    /// The failed checks.
    pub fn failures(&self) -> impl Iterator<Item = &Check> {
        self.checks
            .iter()
            .filter(|check| check.severity == Severity::Failure)
    }

    fn push(&mut self, area: CheckArea, severity: Severity, message: impl Into<String>) {
        self.checks.push(Check {
            area,
            severity,
            message: message.into(),
        });
    }
}

/// One RBAC permission the deploy needs.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
struct Permission {
    verb: String,
    group: String,
    resource: String,
    subresource: Option<String>,
    /// `None` for cluster-scoped resources.
    namespace: Option<String>,
}

impl fmt::Display for Permission {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {}", self.verb, self.resource)?;
        if let Some(subresource) = &self.subresource {
            write!(f, "/{subresource}")?;
        }
        if !self.group.is_empty() {
            write!(f, ".{}", self.group)?;
        }
        match &self.namespace {
            Some(namespace) => write!(f, " in namespace {namespace}"),
            None => f.write_str(" (cluster-wide)"),
        }
    }
}

/// Apply reads each object first (`get`), and a server-side apply is authorized as
/// `patch`, plus `create` when it creates the object.
const APPLY_VERBS: [&str; 3] = ["get", "create", "patch"];

/// Following a rollout lists and watches Deployments.
const ROLLOUT_VERBS: [&str; 2] = ["list", "watch"];

impl Cluster {
    /// Checks, before anything is applied, that `objects` (as rendered, in apply order)
    /// can be deployed: the API server answers and runs a supported version (1.33 or
    /// newer); the namespace exists or may be created; the credentials hold every
    /// permission apply and the runtime need (one SelfSubjectAccessReview each); every
    /// referenced Secret key exists (values are never read into the report); any
    /// ResourceQuota in the namespace leaves room for the fleet's Deployments. `reach` is
    /// how a control plane run with these credentials reaches http pods (the fleet's
    /// `kubernetes.reach`, else [`ClusterAccess::default_reach`]): with
    /// [`PodReach::PortForward`] they also need `create` on `pods/portforward`.
    ///
    /// When `/version` fails (the API server unreachable, the credentials refused) that
    /// one failure is the report; other failed requests become lines and the checks go on.
    /// A quota that may be too small is a warning: a running fleet's own pods are still
    /// counted in its `used`.
    pub async fn preflight(
        &self,
        objects: &[Value],
        secrets: &[SecretKeyRef],
        reach: PodReach,
    ) -> PreflightReport {
        let mut report = PreflightReport::default();
        match self.client.apiserver_version().await {
            Ok(info) => {
                report.server_version = Some(info.git_version.clone());
                check_version(&mut report, &info.major, &info.minor, &info.git_version);
            }
            Err(error) => {
                report.push(
                    CheckArea::Api,
                    Severity::Failure,
                    self.api_error(error).to_string(),
                );
                return report;
            }
        }
        let Some(namespace) = fleet_namespace(objects) else {
            return report;
        };
        let namespace_exists = self.check_namespace(&mut report, &namespace).await;
        self.check_access(&mut report, objects, &namespace, reach)
            .await;
        self.check_secrets(&mut report, &namespace, namespace_exists, secrets)
            .await;
        if namespace_exists {
            self.check_quotas(&mut report, objects, &namespace).await;
        }
        report
    }

    /// Whether the namespace exists (as far as can be told).
    async fn check_namespace(&self, report: &mut PreflightReport, namespace: &str) -> bool {
        let api: Api<Namespace> = Api::all(self.client.clone());
        match api.get_opt(namespace).await {
            Ok(Some(_)) => {
                report.push(
                    CheckArea::Namespace,
                    Severity::Ok,
                    format!("namespace {namespace} exists"),
                );
                true
            }
            Ok(None) => {
                let create = Permission {
                    verb: "create".to_owned(),
                    group: String::new(),
                    resource: "namespaces".to_owned(),
                    subresource: None,
                    namespace: None,
                };
                match self.review(&create).await {
                    Ok(Review { allowed: true, .. }) => report.push(
                        CheckArea::Namespace,
                        Severity::Ok,
                        format!("namespace {namespace} does not exist yet; apply will create it"),
                    ),
                    Ok(Review { allowed: false, .. }) => report.push(
                        CheckArea::Namespace,
                        Severity::Failure,
                        format!(
                            "namespace {namespace} does not exist and you cannot create namespaces: \
                             ask a cluster admin to create it (`kubectl create namespace {namespace}`)"
                        ),
                    ),
                    Err(error) => report.push(
                        CheckArea::Namespace,
                        Severity::Failure,
                        format!("namespace {namespace} does not exist, and whether you may create it is unknown: {error}"),
                    ),
                }
                false
            }
            // Namespace-scoped credentials often may not read Namespace objects; the
            // access checks below say what they may do inside it.
            Err(kube::Error::Api(status)) if status.code == 403 => {
                report.push(
                    CheckArea::Namespace,
                    Severity::Warning,
                    format!("cannot read namespace {namespace} (forbidden); assuming it exists"),
                );
                true
            }
            Err(error) => {
                report.push(
                    CheckArea::Namespace,
                    Severity::Failure,
                    format!(
                        "cannot read namespace {namespace}: {}",
                        self.api_error(error)
                    ),
                );
                false
            }
        }
    }

    async fn check_access(
        &self,
        report: &mut PreflightReport,
        objects: &[Value],
        namespace: &str,
        reach: PodReach,
    ) {
        let needed = needed_permissions(objects, namespace, reach);
        let reviews: Vec<(Permission, Result<Review, ApiError>)> = futures::stream::iter(needed)
            .map(|permission| async move {
                let review = self.review(&permission).await;
                (permission, review)
            })
            .buffered(CONCURRENT_REVIEWS)
            .collect()
            .await;
        let mut denied = 0;
        for (permission, review) in &reviews {
            match review {
                Ok(Review { allowed: true, .. }) => {}
                Ok(Review {
                    allowed: false,
                    reason,
                }) => {
                    denied += 1;
                    let whom = match &permission.namespace {
                        Some(namespace) => format!("a Role and RoleBinding in {namespace}"),
                        None => "a ClusterRole and ClusterRoleBinding".to_owned(),
                    };
                    let why = reason
                        .as_deref()
                        .map(|r| format!(" ({r})"))
                        .unwrap_or_default();
                    report.push(
                        CheckArea::Access,
                        Severity::Failure,
                        format!("cannot {permission}{why}: ask an admin for {whom} granting it"),
                    );
                }
                Err(error) => {
                    denied += 1;
                    report.push(
                        CheckArea::Access,
                        Severity::Failure,
                        format!("cannot check whether you may {permission}: {error}"),
                    );
                }
            }
        }
        if denied == 0 {
            report.push(
                CheckArea::Access,
                Severity::Ok,
                format!(
                    "you hold all {} permissions apply and the runtime need",
                    reviews.len()
                ),
            );
        }
    }

    async fn review(&self, permission: &Permission) -> Result<Review, ApiError> {
        let review = SelfSubjectAccessReview {
            spec: SelfSubjectAccessReviewSpec {
                resource_attributes: Some(ResourceAttributes {
                    verb: Some(permission.verb.clone()),
                    group: Some(permission.group.clone()),
                    resource: Some(permission.resource.clone()),
                    subresource: permission.subresource.clone(),
                    namespace: permission.namespace.clone(),
                    ..ResourceAttributes::default()
                }),
                ..SelfSubjectAccessReviewSpec::default()
            },
            ..SelfSubjectAccessReview::default()
        };
        let api: Api<SelfSubjectAccessReview> = Api::all(self.client.clone());
        let answer = api
            .create(&PostParams::default(), &review)
            .await
            .map_err(|e| self.api_error(e))?;
        let status = answer.status.unwrap_or_default();
        Ok(Review {
            allowed: status.allowed,
            reason: status.reason.filter(|r| !r.is_empty()),
        })
    }

    async fn check_secrets(
        &self,
        report: &mut PreflightReport,
        namespace: &str,
        namespace_exists: bool,
        secrets: &[SecretKeyRef],
    ) {
        let api: Api<Secret> = Api::namespaced(self.client.clone(), namespace);
        let mut fetched: BTreeMap<&str, Result<Option<Secret>, ApiError>> = BTreeMap::new();
        for reference in secrets {
            let create = format!(
                "`kubectl -n {namespace} create secret generic {} --from-literal={}=…`",
                reference.secret, reference.key
            );
            if !namespace_exists {
                report.push(
                    CheckArea::Secret,
                    Severity::Failure,
                    format!(
                        "Secret {namespace}/{} (key `{}`) cannot exist before its namespace: create the \
                         namespace, then the Secret ({create})",
                        reference.secret, reference.key
                    ),
                );
                continue;
            }
            if !fetched.contains_key(reference.secret.as_str()) {
                let secret = api
                    .get_opt(&reference.secret)
                    .await
                    .map_err(|e| self.api_error(e));
                fetched.insert(&reference.secret, secret);
            }
            let name = format!("Secret {namespace}/{}", reference.secret);
            let (severity, message) = match &fetched[reference.secret.as_str()] {
                Ok(None) => (
                    Severity::Failure,
                    format!("{name} does not exist: create it ({create})"),
                ),
                // Only the keys are looked at: no value reaches the report.
                Ok(Some(secret)) => {
                    let keys: Vec<&str> = secret
                        .data
                        .iter()
                        .flatten()
                        .map(|(key, _)| key.as_str())
                        .collect();
                    if keys.contains(&reference.key.as_str()) {
                        (Severity::Ok, format!("{name} has key `{}`", reference.key))
                    } else {
                        (
                            Severity::Failure,
                            format!(
                                "{name} has no key `{}` (it has: {}): add it",
                                reference.key,
                                if keys.is_empty() {
                                    "none".to_owned()
                                } else {
                                    keys.join(", ")
                                }
                            ),
                        )
                    }
                }
                Err(error) => (Severity::Failure, format!("cannot read {name}: {error}")),
            };
            report.push(CheckArea::Secret, severity, message);
        }
    }

    async fn check_quotas(&self, report: &mut PreflightReport, objects: &[Value], namespace: &str) {
        let api: Api<ResourceQuota> = Api::namespaced(self.client.clone(), namespace);
        let quotas = match api.list(&ListParams::default()).await {
            Ok(quotas) => quotas.items,
            Err(error) => {
                report.push(
                    CheckArea::Quota,
                    Severity::Warning,
                    format!(
                        "cannot list ResourceQuotas in {namespace}: {}",
                        self.api_error(error)
                    ),
                );
                return;
            }
        };
        let requested = requested_resources(objects);
        for quota in &quotas {
            let name = quota.metadata.name.as_deref().unwrap_or_default();
            let status = quota.status.clone().unwrap_or_default();
            let hard = status.hard.unwrap_or_default();
            let used = status.used.unwrap_or_default();
            // A quota mcpfleet renders is sized for the fleet alone, and what it has used is
            // the fleet's current pods, which this deploy replaces: compare with the limit.
            let ours = quota.metadata.name.as_ref().is_some_and(|name| {
                objects.iter().any(|object| {
                    object["kind"] == "ResourceQuota"
                        && object.pointer("/metadata/name").and_then(Value::as_str) == Some(name)
                })
            });
            let mut short = Vec::new();
            for (resource, want) in &requested {
                let Some(limit) = hard.get(*resource).and_then(|q| Quantity::parse(&q.0)) else {
                    continue;
                };
                let taken = if ours {
                    0.0
                } else {
                    used.get(*resource)
                        .and_then(|q| Quantity::parse(&q.0))
                        .map_or(0.0, |q| q.0)
                };
                let room = limit.0 - taken;
                if want.0 > room {
                    short.push(format!(
                        "{resource} {} requested, {} left of {}",
                        want,
                        Quantity(room.max(0.0)),
                        limit
                    ));
                }
            }
            if short.is_empty() {
                report.push(
                    CheckArea::Quota,
                    Severity::Ok,
                    format!("ResourceQuota {name} leaves room for the fleet"),
                );
            } else {
                report.push(
                    CheckArea::Quota,
                    Severity::Warning,
                    format!(
                        "ResourceQuota {name} in {namespace} may not fit the fleet ({}): pods beyond it will not \
                         start; ask an admin to raise it or lower replicas/requests (a running fleet's own pods \
                         count in `used` until they are replaced)",
                        short.join("; ")
                    ),
                );
            }
        }
    }
}

/// An access review's answer.
#[derive(Debug)]
struct Review {
    allowed: bool,
    reason: Option<String>,
}

fn check_version(report: &mut PreflightReport, major: &str, minor: &str, git_version: &str) {
    // Managed clusters add a suffix to the minor (`33+` on GKE/EKS).
    let minor_number = minor
        .trim_end_matches(|c: char| !c.is_ascii_digit())
        .parse::<u32>();
    match (major, minor_number) {
        ("1", Ok(minor)) if minor >= OLDEST_SUPPORTED_MINOR => report.push(
            CheckArea::Api,
            Severity::Ok,
            format!("Kubernetes {git_version} (supported: 1.{OLDEST_SUPPORTED_MINOR} or newer)"),
        ),
        ("1", Ok(_)) => report.push(
            CheckArea::Api,
            Severity::Failure,
            format!(
                "Kubernetes {git_version} is older than mcpfleet supports (1.{OLDEST_SUPPORTED_MINOR} or newer): \
                 upgrade the cluster or use another context"
            ),
        ),
        _ => report.push(
            CheckArea::Api,
            Severity::Warning,
            format!(
                "the API server reports version {major}.{minor} ({git_version}), which mcpfleet cannot read; \
                 it supports 1.{OLDEST_SUPPORTED_MINOR} or newer"
            ),
        ),
    }
}

/// The namespace the fleet deploys to: the Namespace object's, else the first namespaced
/// object's.
/// Every Secret key the objects' pods read — the `items` of `secret` volumes (the way
/// `render kubernetes` mounts them) and `env` `secretKeyRef`s — and each TLS Secret of an
/// Ingress (`tls.crt`), sorted and without repeats: what [`Cluster::preflight`] checks is
/// there.
pub fn referenced_secrets(objects: &[Value]) -> Vec<SecretKeyRef> {
    let mut found = std::collections::BTreeSet::new();
    let mut add = |secret: &Value, key: &str| {
        if let Some(secret) = secret.as_str() {
            found.insert((secret.to_owned(), key.to_owned()));
        }
    };
    for object in objects {
        let pod = object
            .pointer("/spec/template/spec")
            .or_else(|| object.pointer("/spec/jobTemplate/spec/template/spec"));
        if let Some(pod) = pod {
            for volume in pod["volumes"].as_array().into_iter().flatten() {
                let secret = &volume["secret"];
                for item in secret["items"].as_array().into_iter().flatten() {
                    add(
                        &secret["secretName"],
                        item["key"].as_str().unwrap_or_default(),
                    );
                }
            }
            let containers = ["containers", "initContainers"]
                .iter()
                .flat_map(|list| pod[*list].as_array().into_iter().flatten());
            for container in containers {
                for env in container["env"].as_array().into_iter().flatten() {
                    let reference = &env["valueFrom"]["secretKeyRef"];
                    add(
                        &reference["name"],
                        reference["key"].as_str().unwrap_or_default(),
                    );
                }
            }
        }
        if object["kind"] == "Ingress" {
            for tls in object["spec"]["tls"].as_array().into_iter().flatten() {
                add(&tls["secretName"], "tls.crt");
            }
        }
    }
    found
        .into_iter()
        .map(|(secret, key)| SecretKeyRef { secret, key })
        .collect()
}

fn fleet_namespace(objects: &[Value]) -> Option<String> {
    let named = |pointer| {
        objects
            .iter()
            .find_map(|object| object.pointer(pointer).and_then(Value::as_str))
    };
    objects
        .iter()
        .find(|object| object["kind"] == "Namespace")
        .and_then(|namespace| namespace.pointer("/metadata/name").and_then(Value::as_str))
        .or_else(|| named("/metadata/namespace"))
        .map(str::to_owned)
}

/// Every permission the deploy needs, sorted and without repeats: [`APPLY_VERBS`] on
/// each kind applied, [`ROLLOUT_VERBS`] on Deployments, every rule of each Role the fleet
/// applies — the control plane's permissions at run time, which RBAC lets a user grant
/// only if the user holds them — and, when a control plane with these credentials
/// reaches http pods through port-forward (`reach`), `create` on `pods/portforward`.
fn needed_permissions(objects: &[Value], namespace: &str, reach: PodReach) -> Vec<Permission> {
    let in_namespace = |verb: &str, group: &str, resource: &str| {
        let (resource, subresource) = match resource.split_once('/') {
            Some((resource, subresource)) => (resource, Some(subresource.to_owned())),
            None => (resource, None),
        };
        Permission {
            verb: verb.to_owned(),
            group: group.to_owned(),
            resource: resource.to_owned(),
            subresource,
            namespace: Some(namespace.to_owned()),
        }
    };
    let mut needed = Vec::new();
    for object in objects {
        let api_version = object["apiVersion"].as_str().unwrap_or_default();
        let Some(kind) = kinds::lookup(api_version, object["kind"].as_str().unwrap_or_default())
        else {
            continue;
        };
        for verb in APPLY_VERBS {
            let mut permission = in_namespace(verb, kind.group(), kind.plural);
            if kind.scope == Scope::Cluster {
                // Creating the namespace is the namespace check's business: it is asked
                // only when the namespace is missing.
                if verb == "create" {
                    continue;
                }
                permission.namespace = None;
            }
            needed.push(permission);
        }
        if kind.kind == "Role" {
            needed.extend(role_permissions(object, &in_namespace));
        }
    }
    for verb in ROLLOUT_VERBS {
        needed.push(in_namespace(verb, "apps", "deployments"));
    }
    // A control plane run with these credentials — outside the cluster, where `reach`
    // defaults to port-forward — forwards to its http pods as this user. The rendered
    // Role need not say so: it is the in-cluster control plane's, whose default is pod-ip,
    // and it grants port-forward exactly when the file says `reach: port-forward` (its
    // rules above then ask for it too).
    if reach == PodReach::PortForward {
        needed.push(in_namespace("create", "", "pods/portforward"));
    }
    needed.sort();
    needed.dedup();
    needed
}

/// Each verb × group × resource of a Role's rules.
fn role_permissions(
    role: &Value,
    in_namespace: &impl Fn(&str, &str, &str) -> Permission,
) -> Vec<Permission> {
    let strings = |value: &Value| -> Vec<String> {
        value
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(Value::as_str)
            .map(str::to_owned)
            .collect()
    };
    let mut permissions = Vec::new();
    for rule in role["rules"].as_array().into_iter().flatten() {
        for group in strings(&rule["apiGroups"]) {
            for resource in strings(&rule["resources"]) {
                for verb in strings(&rule["verbs"]) {
                    permissions.push(in_namespace(&verb, &group, &resource));
                }
            }
        }
    }
    permissions
}

/// What the fleet's Deployments request at their declared replicas, by quota resource
/// name (`requests.cpu`, `limits.memory`, `pods`, …). A container without a request
/// gets its limit as the request, as the API server defaults it.
fn requested_resources(objects: &[Value]) -> Vec<(&'static str, Quantity)> {
    let mut totals: BTreeMap<&'static str, f64> = BTreeMap::new();
    for deployment in objects
        .iter()
        .filter(|object| object["kind"] == "Deployment")
    {
        let replicas = deployment
            .pointer("/spec/replicas")
            .and_then(Value::as_f64)
            .unwrap_or(1.0);
        *totals.entry("pods").or_default() += replicas;
        let containers = deployment
            .pointer("/spec/template/spec/containers")
            .and_then(Value::as_array);
        for container in containers.into_iter().flatten() {
            for resource in ["cpu", "memory"] {
                let limit = container
                    .pointer(&format!("/resources/limits/{resource}"))
                    .and_then(quantity);
                let request = container
                    .pointer(&format!("/resources/requests/{resource}"))
                    .and_then(quantity)
                    .or(limit);
                let (request_key, plain_key, limit_key) = match resource {
                    "cpu" => ("requests.cpu", "cpu", "limits.cpu"),
                    _ => ("requests.memory", "memory", "limits.memory"),
                };
                if let Some(request) = request {
                    *totals.entry(request_key).or_default() += replicas * request.0;
                    *totals.entry(plain_key).or_default() += replicas * request.0;
                }
                if let Some(limit) = limit {
                    *totals.entry(limit_key).or_default() += replicas * limit.0;
                }
            }
        }
    }
    totals
        .into_iter()
        .map(|(key, total)| (key, Quantity(total)))
        .collect()
}

fn quantity(value: &Value) -> Option<Quantity> {
    match value {
        Value::String(text) => Quantity::parse(text),
        Value::Number(number) => number.as_f64().map(Quantity),
        _ => None,
    }
}

#[cfg(test)]
mod tests;
