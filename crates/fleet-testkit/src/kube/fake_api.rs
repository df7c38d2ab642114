//! A fake Kubernetes API server, in process, over real HTTP: enough of the API for the
//! Kubernetes runtime's client, and the controllers and kubelet behaviour it relies on.
//!
//! It serves namespaces (`GET` of one: every namespace exists unless the test names the
//! ones that do, [`FakeApi::namespaces`]) and, in any namespace:
//! - Deployments (`apps/v1`): server-side apply (`PATCH` with
//!   `application/apply-patch+yaml`, which needs `fieldManager`), `GET`, `LIST` with a label
//!   selector, and `DELETE`, which also deletes the Deployment's pods (the garbage
//!   collector's background cascade);
//! - pods (`v1`): `GET`, `LIST` with a label selector (`k=v`, `k!=v`, `k`, `!k`), JSON merge
//!   patch (RFC 7386) with `metadata.resourceVersion` as a precondition (a stale one is
//!   `409 Conflict`, as the API conventions' optimistic concurrency says), `DELETE`, and
//!   `pods/log` (`tailLines`, `follow`: lines as they come until the pod is gone);
//! - a ReplicaSet controller, run after every write: each Deployment gets exactly
//!   `spec.replicas` pods matching its selector, new ones from its pod template (Running
//!   and Ready with an IP — its own, or the one [`FakeApi::pods_at`] gives — unless
//!   [`FakeApi::hold_new_pods`]); surplus pods go in the order
//!   the ReplicaSet documentation gives — not ready before ready, then lower
//!   `controller.kubernetes.io/pod-deletion-cost` first, then the newest first
//!   (<https://kubernetes.io/docs/concepts/workloads/controllers/replicaset/#scaling-a-replicaset>).
//!
//! - `pods/attach` over a WebSocket (the remote-command protocol, v5 or v4) to a real
//!   process that plays the pod's container ([`FakeApi::attach_runs`], see `attach`);
//! - `pods/portforward` over a WebSocket (v4) to `127.0.0.1:PORT`, whatever IP the pod
//!   reports ([`FakeApi::forwards`], see `portforward`).
//!
//! The test plays the kubelet: [`FakeApi::set_ready`], [`FakeApi::kill_container`] (the
//! kubelet restarts it: `restartCount`, `lastState.terminated` with the exit code and
//! reason), [`FakeApi::crash_loop`], [`FakeApi::log`].
//!
//! Server-side apply records which field manager owns each field it sets, and refuses
//! (`409 Conflict`, a `FieldManagerConflict` cause per field naming the other manager) an
//! apply that is not forced and would change a field another manager owns;
//! [`FakeApi::apply_as`] applies as another tool.
//!
//! Deliberately simpler than a cluster: deletion is immediate (no grace period spent
//! `Terminating`), there are no ReplicaSet objects, owner references or watches, a
//! server-side apply replaces the applied object's labels, annotations and spec (it does
//! not merge what other managers set), and a list is one field (the API server merges
//! some lists by key). It is the contract a real API server meets, not a substitute for
//! the real-cluster tests.

use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use parking_lot::Mutex;
use serde_json::{Map, Value, json};
use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::sync::Arc;
use tokio::sync::watch;

mod attach;
mod portforward;
mod websocket;

/// The annotation a ReplicaSet reads to choose which pod to remove on a scale-down.
pub const POD_DELETION_COST: &str = "controller.kubernetes.io/pod-deletion-cost";

/// One server-side apply the fake received.
#[derive(Debug, Clone)]
pub struct Applied {
    /// `Deployment`.
    pub kind: String,
    /// The namespace in the path.
    pub namespace: String,
    /// The name in the path.
    pub name: String,
    /// The `fieldManager` query parameter.
    pub field_manager: String,
    /// Whether `force=true` was sent (mcpfleet never forces).
    pub force: bool,
    /// The applied object.
    pub body: Value,
}

/// The fake API server; it stops when dropped.
pub struct FakeApi {
    state: Arc<Shared>,
    address: SocketAddr,
    server: tokio::task::JoinHandle<()>,
}

impl std::fmt::Debug for FakeApi {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FakeApi")
            .field("address", &self.address)
            .finish_non_exhaustive()
    }
}

impl Drop for FakeApi {
    fn drop(&mut self) {
        self.server.abort();
        // Their children are killed on drop.
        for process in self.state.objects.lock().processes.values() {
            process.task.abort();
        }
    }
}

struct Shared {
    objects: Mutex<Objects>,
    /// Bumped on every change, for `follow`ed logs.
    changed: watch::Sender<u64>,
}

#[derive(Default)]
struct Objects {
    resource_version: u64,
    created: u64,
    deployments: BTreeMap<(String, String), Value>,
    pods: BTreeMap<(String, String), Pod>,
    applies: Vec<Applied>,
    hold_new_pods: bool,
    /// The address every pod gets, instead of one of its own (see [`FakeApi::pods_at`]).
    pod_ip: Option<std::net::IpAddr>,
    /// How long a pod patch waits before it is applied.
    patch_delay: std::time::Duration,
    /// What a pod's container runs when attached to ([`FakeApi::attach_runs`]).
    attach_command: Option<attach::AttachCommand>,
    /// The process of each pod attached to, while it runs.
    processes: HashMap<Key, attach::PodProcess>,
    /// Attaches so far.
    attaches: u64,
    /// The pod and port of each port-forward accepted, in order.
    forwards: Vec<(String, u16)>,
    /// Each Deployment's fields (`.spec.replicas`) and the field manager that owns each.
    owners: HashMap<Key, BTreeMap<String, String>>,
    /// The namespaces that exist; `None`: every one.
    namespaces: Option<std::collections::BTreeSet<String>>,
}

struct Pod {
    object: Value,
    /// Creation order, for "newest first".
    created: u64,
    log: Vec<String>,
}

type Key = (String, String);

impl FakeApi {
    /// Starts the fake on a free port of 127.0.0.1.
    ///
    /// # Panics
    /// When no port can be bound.
    pub async fn start() -> FakeApi {
        let (changed, _) = watch::channel(0);
        let state = Arc::new(Shared {
            objects: Mutex::new(Objects::default()),
            changed,
        });
        let app = Router::new()
            .route("/api/v1/namespaces/{name}", get(get_namespace))
            .route(
                "/apis/apps/v1/namespaces/{ns}/deployments",
                get(list_deployments),
            )
            .route(
                "/apis/apps/v1/namespaces/{ns}/deployments/{name}",
                get(get_deployment)
                    .patch(apply_deployment)
                    .delete(delete_deployment),
            )
            .route("/api/v1/namespaces/{ns}/pods", get(list_pods))
            .route(
                "/api/v1/namespaces/{ns}/pods/{name}",
                get(get_pod).patch(patch_pod).delete(delete_pod),
            )
            .route("/api/v1/namespaces/{ns}/pods/{name}/log", get(pod_log))
            .route(
                "/api/v1/namespaces/{ns}/pods/{name}/attach",
                get(attach::attach_pod),
            )
            .route(
                "/api/v1/namespaces/{ns}/pods/{name}/portforward",
                get(portforward::forward_pod),
            )
            .fallback(|request: axum::extract::Request| async move {
                status(
                    StatusCode::NOT_FOUND,
                    "NotFound",
                    &format!(
                        "the fake API server does not serve {} {}",
                        request.method(),
                        request.uri()
                    ),
                )
            })
            .with_state(state.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind the fake API server");
        let address = listener.local_addr().expect("its address");
        // As a real API server (Go sets TCP_NODELAY): an attach's small frames go out at
        // once, not after the peer's delayed ACK.
        let listener = axum::serve::ListenerExt::tap_io(listener, |tcp| {
            let _ = tcp.set_nodelay(true);
        });
        let server = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        FakeApi {
            state,
            address,
            server,
        }
    }

    /// `http://127.0.0.1:PORT`, the API server's URL for a client.
    pub fn url(&self) -> String {
        format!("http://{}", self.address)
    }

    /// Every server-side apply so far, in order.
    pub fn applies(&self) -> Vec<Applied> {
        self.state.objects.lock().applies.clone()
    }

    /// The Deployment, as stored.
    pub fn deployment(&self, namespace: &str, name: &str) -> Option<Value> {
        let key = (namespace.to_owned(), name.to_owned());
        self.state.objects.lock().deployments.get(&key).cloned()
    }

    /// The names of the namespace's Deployments, sorted.
    pub fn deployment_names(&self, namespace: &str) -> Vec<String> {
        let objects = self.state.objects.lock();
        (objects.deployments.keys())
            .filter(|(ns, _)| ns == namespace)
            .map(|(_, name)| name.clone())
            .collect()
    }

    /// The pod, as stored.
    pub fn pod(&self, namespace: &str, name: &str) -> Option<Value> {
        let key = (namespace.to_owned(), name.to_owned());
        let objects = self.state.objects.lock();
        objects.pods.get(&key).map(|pod| pod.object.clone())
    }

    /// The namespace's pods, by name.
    pub fn pods(&self, namespace: &str) -> Vec<Value> {
        let objects = self.state.objects.lock();
        (objects.pods.iter())
            .filter(|((ns, _), _)| ns == namespace)
            .map(|(_, pod)| pod.object.clone())
            .collect()
    }

    /// New pods stay Pending, without an IP, until [`set_ready`](Self::set_ready) (`true`),
    /// or start Running and Ready (`false`, the default).
    pub fn hold_new_pods(&self, hold: bool) {
        self.state.objects.lock().hold_new_pods = hold;
    }

    /// Every pod started from now on gets the address `ip` — `127.0.0.1`, so that a
    /// control plane outside any cluster reaches, at "the pod's" IP and container port, a
    /// real server the test runs on that port of loopback — instead of an address of its own
    /// in 10.0.0.0/24.
    pub fn pods_at(&self, ip: std::net::IpAddr) {
        self.state.objects.lock().pod_ip = Some(ip);
    }

    /// A pod's container is `program` with `args`: the first attach to the pod starts it
    /// with its stdio piped to the attach (stdin from channel 0, stdout to 1, stderr to 2
    /// and the pod's log), and it runs until it exits — which the kubelet reports as a
    /// container termination and restart, ending the attach — or the pod is deleted.
    pub fn attach_runs(&self, program: impl Into<std::path::PathBuf>, args: &[&str]) {
        self.state.objects.lock().attach_command = Some(attach::AttachCommand {
            program: program.into(),
            args: args.iter().map(|a| (*a).to_owned()).collect(),
        });
    }

    /// The pid of the process pod `name`'s container runs, once attached to and until it
    /// exits.
    pub fn process_id(&self, namespace: &str, name: &str) -> Option<u32> {
        let key = (namespace.to_owned(), name.to_owned());
        self.state.objects.lock().processes.get(&key).map(|p| p.pid)
    }

    /// How many attaches the fake has accepted.
    pub fn attaches(&self) -> u64 {
        self.state.objects.lock().attaches
    }

    /// The pod and port of each port-forward the fake has accepted (one per forwarded
    /// connection), in order.
    pub fn forwards(&self) -> Vec<(String, u16)> {
        self.state.objects.lock().forwards.clone()
    }

    /// A server-side apply of `deployment` (its `metadata.namespace` and `metadata.name`)
    /// by field manager `manager`, not forced, as another tool (`helm`, `kubectl apply
    /// --server-side`) would send it: the fields it sets are that manager's, and an apply
    /// by another manager that would change one of them is refused with `409 Conflict`.
    ///
    /// # Panics
    /// When the Deployment has no namespace or name, or the apply conflicts.
    pub fn apply_as(&self, manager: &str, deployment: Value) {
        let text = |pointer| {
            (deployment.pointer(pointer).and_then(Value::as_str))
                .unwrap_or_else(|| panic!("the Deployment has no {pointer}"))
                .to_owned()
        };
        let (ns, name) = (text("/metadata/namespace"), text("/metadata/name"));
        let applied =
            (self.state.objects.lock()).apply_deployment(&ns, &name, manager, false, deployment);
        if let Err(conflict) = applied {
            panic!("{manager}'s apply of {ns}/{name} conflicts: {conflict}");
        }
        self.state.changed.send_modify(|n| *n += 1);
    }

    /// From now on exactly the namespaces `names` exist: a `GET` of another is
    /// `404 NotFound`, as the API server answers for a namespace nobody created. (Objects
    /// are still served in any namespace.)
    pub fn namespaces(&self, names: &[&str]) {
        self.state.objects.lock().namespaces =
            Some(names.iter().map(|n| (*n).to_owned()).collect());
    }

    /// Every pod patch waits `delay` before it is applied, so that two clients that read
    /// the same pod both patch it before either patch lands: a race made certain.
    pub fn delay_pod_patches(&self, delay: std::time::Duration) {
        self.state.objects.lock().patch_delay = delay;
    }

    /// The kubelet reports the pod's container running and ready (a held pod started, or
    /// a crash-looping container's start stuck); its restarts are kept.
    pub fn set_ready(&self, namespace: &str, name: &str) {
        self.kubelet(namespace, name, |pod, ip| {
            let last = pod
                .pointer("/status/containerStatuses/0/lastState")
                .cloned();
            pod["status"] = running_status(ip, container_status(pod, restart_count(pod), last));
        });
    }

    /// The pod's container exited with `exit_code` (`reason`: `Error`, `OOMKilled`, …) and
    /// the kubelet started it again: `restartCount` up by one, `lastState.terminated` says
    /// how it ended, and it runs and is ready again.
    pub fn kill_container(&self, namespace: &str, name: &str, exit_code: i32, reason: &str) {
        self.kubelet(namespace, name, |pod, ip| {
            let restarts = restart_count(pod) + 1;
            let last = terminated(exit_code, reason, restarts);
            pod["status"] = running_status(ip, container_status(pod, restarts, Some(last)));
        });
    }

    /// The pod's container exited with `exit_code` again and the kubelet waits before the
    /// next start: state `waiting` with reason `CrashLoopBackOff`, not ready.
    pub fn crash_loop(&self, namespace: &str, name: &str, exit_code: i32, reason: &str) {
        self.kubelet(namespace, name, |pod, ip| {
            let restarts = restart_count(pod) + 1;
            let mut container = container_status(pod, restarts, Some(terminated(exit_code, reason, restarts)));
            container["ready"] = false.into();
            container["started"] = false.into();
            container["state"] = json!({ "waiting": {
                "reason": "CrashLoopBackOff",
                "message": format!("back-off 10s restarting failed container={}", container["name"].as_str().unwrap_or_default()),
            }});
            let mut status = running_status(ip, container);
            status["conditions"] = conditions(false);
            pod["status"] = status;
        });
    }

    /// The pod's container writes `line` to its output.
    pub fn log(&self, namespace: &str, name: &str, line: &str) {
        let key = (namespace.to_owned(), name.to_owned());
        if let Some(pod) = self.state.objects.lock().pods.get_mut(&key) {
            pod.log.push(line.to_owned());
        }
        self.state.changed.send_modify(|n| *n += 1);
    }

    fn kubelet(&self, namespace: &str, name: &str, change: impl FnOnce(&mut Value, String)) {
        let key = (namespace.to_owned(), name.to_owned());
        let mut objects = self.state.objects.lock();
        let version = objects.next_version();
        let ip = objects.pod_ip(objects.created);
        let pod = objects
            .pods
            .get_mut(&key)
            .unwrap_or_else(|| panic!("no pod {namespace}/{name} in the fake"));
        let ip =
            (pod.object.pointer("/status/podIP").and_then(Value::as_str)).map_or(ip, str::to_owned);
        change(&mut pod.object, ip);
        pod.object["metadata"]["resourceVersion"] = version.into();
        drop(objects);
        self.state.changed.send_modify(|n| *n += 1);
    }
}

impl Objects {
    /// The address of the `created`-th pod.
    fn pod_ip(&self, created: u64) -> String {
        match self.pod_ip {
            Some(ip) => ip.to_string(),
            None => format!("10.0.0.{}", created % 250 + 1),
        }
    }

    fn next_version(&mut self) -> String {
        self.resource_version += 1;
        self.resource_version.to_string()
    }

    /// The ReplicaSet controller: every Deployment's pod count made `spec.replicas`.
    fn reconcile(&mut self) {
        let deployments: Vec<(Key, Value)> = (self.deployments.iter())
            .map(|(key, d)| (key.clone(), d.clone()))
            .collect();
        for ((namespace, name), deployment) in deployments {
            let selector = (deployment.pointer("/spec/selector/matchLabels"))
                .and_then(Value::as_object)
                .cloned()
                .unwrap_or_default();
            let wanted = (deployment.pointer("/spec/replicas"))
                .and_then(Value::as_u64)
                .unwrap_or(1) as usize;
            let mut owned: Vec<Key> = (self.pods.iter())
                .filter(|((ns, _), pod)| *ns == namespace && matches_labels(&pod.object, &selector))
                .map(|(key, _)| key.clone())
                .collect();
            while owned.len() < wanted {
                let pod = self.new_pod(&namespace, &name, &deployment);
                owned.push(pod);
            }
            if owned.len() > wanted {
                owned.sort_by_key(|key| {
                    let pod = &self.pods[key];
                    (
                        is_ready(&pod.object),
                        deletion_cost(&pod.object),
                        std::cmp::Reverse(pod.created),
                    )
                });
                for key in owned.drain(..owned.len() - wanted) {
                    self.pods.remove(&key);
                }
            }
        }
    }

    fn new_pod(&mut self, namespace: &str, deployment: &str, object: &Value) -> Key {
        self.created += 1;
        let name = format!("{deployment}-{:05x}", self.created);
        let template = object
            .pointer("/spec/template")
            .cloned()
            .unwrap_or_default();
        let mut pod = json!({
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": {
                "name": name,
                "namespace": namespace,
                "uid": format!("pod-uid-{}", self.created),
                "resourceVersion": self.next_version(),
                "creationTimestamp": "2026-01-01T00:00:00Z",
                "labels": template.pointer("/metadata/labels").cloned().unwrap_or(json!({})),
            },
            "spec": template.get("spec").cloned().unwrap_or(json!({})),
            "status": { "phase": "Pending", "conditions": conditions(false) },
        });
        if !self.hold_new_pods {
            let ip = self.pod_ip(self.created);
            pod["status"] = running_status(ip, container_status(&pod, 0, None));
        }
        let key = (namespace.to_owned(), name);
        self.pods.insert(
            key.clone(),
            Pod {
                object: pod,
                created: self.created,
                log: Vec::new(),
            },
        );
        key
    }
}

fn restart_count(pod: &Value) -> u64 {
    (pod.pointer("/status/containerStatuses/0/restartCount"))
        .and_then(Value::as_u64)
        .unwrap_or(0)
}

fn terminated(exit_code: i32, reason: &str, restarts: u64) -> Value {
    json!({ "terminated": {
        "exitCode": exit_code,
        "reason": reason,
        "startedAt": "2026-01-01T00:00:00Z",
        "finishedAt": "2026-01-01T00:00:01Z",
        "containerID": format!("containerd://run-{restarts}"),
    }})
}

/// The main container's status: running and ready, `restarts` restarts, `last` its last
/// termination.
fn container_status(pod: &Value, restarts: u64, last: Option<Value>) -> Value {
    let name = (pod.pointer("/spec/containers/0/name"))
        .and_then(Value::as_str)
        .unwrap_or("main");
    let image = (pod.pointer("/spec/containers/0/image"))
        .and_then(Value::as_str)
        .unwrap_or_default();
    json!({
        "name": name,
        "image": image,
        "imageID": "",
        "containerID": format!("containerd://run-{}", restarts + 1),
        "ready": true,
        "started": true,
        "restartCount": restarts,
        "state": { "running": { "startedAt": "2026-01-01T00:00:02Z" } },
        "lastState": last.unwrap_or(json!({})),
    })
}

fn running_status(ip: String, container: Value) -> Value {
    json!({
        "phase": "Running",
        "podIP": ip,
        "conditions": conditions(true),
        "containerStatuses": [container],
    })
}

fn conditions(ready: bool) -> Value {
    let ready = if ready { "True" } else { "False" };
    json!([
        { "type": "PodScheduled", "status": "True" },
        { "type": "ContainersReady", "status": ready },
        { "type": "Ready", "status": ready },
    ])
}

fn is_ready(pod: &Value) -> bool {
    (pod.pointer("/status/conditions").and_then(Value::as_array))
        .into_iter()
        .flatten()
        .any(|c| c["type"] == "Ready" && c["status"] == "True")
}

fn deletion_cost(pod: &Value) -> i64 {
    (pod.pointer("/metadata/annotations")
        .and_then(|a| a.get(POD_DELETION_COST)))
    .and_then(Value::as_str)
    .and_then(|cost| cost.parse().ok())
    .unwrap_or(0)
}

fn labels_of(object: &Value) -> Map<String, Value> {
    (object
        .pointer("/metadata/labels")
        .and_then(Value::as_object))
    .cloned()
    .unwrap_or_default()
}

fn matches_labels(object: &Value, wanted: &Map<String, Value>) -> bool {
    let labels = labels_of(object);
    wanted.iter().all(|(k, v)| labels.get(k) == Some(v))
}

/// A label selector as the API takes it: `k=v`, `k==v`, `k!=v`, `k` (exists), `!k`.
fn matches_selector(object: &Value, selector: &str) -> bool {
    let labels = labels_of(object);
    let label = |key: &str| labels.get(key.trim()).and_then(Value::as_str);
    selector
        .split(',')
        .filter(|term| !term.trim().is_empty())
        .all(|term| {
            if let Some((key, value)) = term.split_once("!=") {
                label(key) != Some(value.trim())
            } else if let Some((key, value)) = term.split_once('=') {
                label(key) == Some(value.trim_start_matches('=').trim())
            } else if let Some(key) = term.trim().strip_prefix('!') {
                label(key).is_none()
            } else {
                label(term).is_some()
            }
        })
}

/// A `Status` answer, as the API server sends for every error.
fn status(code: StatusCode, reason: &str, message: &str) -> Response {
    let body = json!({
        "kind": "Status", "apiVersion": "v1", "metadata": {},
        "status": "Failure", "message": message, "reason": reason, "code": code.as_u16(),
    });
    (code, axum::Json(body)).into_response()
}

fn not_found(kind: &str, name: &str) -> Response {
    status(
        StatusCode::NOT_FOUND,
        "NotFound",
        &format!("{kind} \"{name}\" not found"),
    )
}

fn list(kind: &str, api_version: &str, items: Vec<Value>, version: u64) -> Response {
    axum::Json(json!({
        "kind": format!("{kind}List"),
        "apiVersion": api_version,
        "metadata": { "resourceVersion": version.to_string() },
        "items": items,
    }))
    .into_response()
}

type Params = Query<HashMap<String, String>>;
type AppState = State<Arc<Shared>>;

async fn get_namespace(state: AppState, Path(name): Path<String>) -> Response {
    let objects = state.objects.lock();
    if (objects.namespaces.as_ref()).is_some_and(|names| !names.contains(&name)) {
        return not_found("namespaces", &name);
    }
    axum::Json(json!({
        "apiVersion": "v1", "kind": "Namespace",
        "metadata": { "name": name, "uid": format!("namespace-uid-{name}") },
        "status": { "phase": "Active" },
    }))
    .into_response()
}

async fn list_deployments(state: AppState, Path(ns): Path<String>, query: Params) -> Response {
    let selector = query.get("labelSelector").cloned().unwrap_or_default();
    let objects = state.objects.lock();
    let items = (objects.deployments.iter())
        .filter(|((n, _), d)| *n == ns && matches_selector(d, &selector))
        .map(|(_, d)| d.clone())
        .collect();
    list("Deployment", "apps/v1", items, objects.resource_version)
}

async fn get_deployment(state: AppState, Path((ns, name)): Path<(String, String)>) -> Response {
    let objects = state.objects.lock();
    match objects.deployments.get(&(ns, name.clone())) {
        Some(d) => axum::Json(d.clone()).into_response(),
        None => not_found("deployments.apps", &name),
    }
}

async fn apply_deployment(
    state: AppState,
    Path((ns, name)): Path<(String, String)>,
    query: Params,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let content_type = (headers.get(header::CONTENT_TYPE))
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default();
    if content_type != "application/apply-patch+yaml" {
        return status(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "UnsupportedMediaType",
            &format!("the fake takes only server-side apply for Deployments, not {content_type}"),
        );
    }
    let Some(manager) = query.get("fieldManager").cloned() else {
        return status(
            StatusCode::BAD_REQUEST,
            "BadRequest",
            "PatchOptions.meta.k8s.io \"\" is invalid: fieldManager: Required value: is required for apply patch",
        );
    };
    // kube sends the applied configuration as JSON, which is YAML.
    let Ok(applied) = serde_json::from_slice::<Value>(&body) else {
        return status(
            StatusCode::BAD_REQUEST,
            "BadRequest",
            "the body is not JSON",
        );
    };
    if applied.pointer("/metadata/name").and_then(Value::as_str) != Some(name.as_str()) {
        return status(
            StatusCode::BAD_REQUEST,
            "BadRequest",
            "the name of the object does not match the name on the URL",
        );
    }
    let force = query.get("force").is_some_and(|f| f == "true");
    let mut objects = state.objects.lock();
    let applied = objects.apply_deployment(&ns, &name, &manager, force, applied);
    drop(objects);
    match applied {
        Ok((created, object)) => {
            state.changed.send_modify(|n| *n += 1);
            let code = if created {
                StatusCode::CREATED
            } else {
                StatusCode::OK
            };
            (code, axum::Json(object)).into_response()
        }
        Err(conflict) => (StatusCode::CONFLICT, axum::Json(conflict)).into_response(),
    }
}

/// Every field `value` sets, as the API server names fields in a conflict
/// (`.spec.replicas`), with its value: the leaves of its objects. A list is one field —
/// the API server merges some lists by key (`containers[name="main"]`); the fake does not.
fn fields(value: &Value, path: &str, found: &mut Vec<(String, Value)>) {
    match value {
        Value::Object(map) if !map.is_empty() => {
            for (key, inner) in map {
                fields(inner, &format!("{path}.{key}"), found);
            }
        }
        leaf => found.push((path.to_owned(), leaf.clone())),
    }
}

impl Objects {
    /// A server-side apply of Deployment `ns/name` by field manager `manager`: created, or
    /// its labels, annotations and spec replaced by the applied ones (one object, not a
    /// merge of every manager's fields), and the fields it sets owned by `manager`.
    /// Refused — unless `force` takes them over — when it would change a field another
    /// manager owns: the `409 Conflict` status to answer, a cause per field naming it and
    /// that manager, as the API server's field manager does.
    fn apply_deployment(
        &mut self,
        ns: &str,
        name: &str,
        manager: &str,
        force: bool,
        applied: Value,
    ) -> Result<(bool, Value), Value> {
        self.applies.push(Applied {
            kind: "Deployment".into(),
            namespace: ns.to_owned(),
            name: name.to_owned(),
            field_manager: manager.to_owned(),
            force,
            body: applied.clone(),
        });
        let key = (ns.to_owned(), name.to_owned());
        let before = self.deployments.get(&key).cloned();
        let set_by = |object: &Value| {
            let mut set = Vec::new();
            for part in ["metadata", "spec"] {
                fields(&object[part], &format!(".{part}"), &mut set);
            }
            // The object's identity is the URL's, not a field anyone owns.
            set.retain(|(field, _)| field != ".metadata.name" && field != ".metadata.namespace");
            set
        };
        let set = set_by(&applied);
        let current: HashMap<String, Value> = before
            .as_ref()
            .map(set_by)
            .unwrap_or_default()
            .into_iter()
            .collect();
        let owners = self.owners.entry(key.clone()).or_default();
        let conflicts: Vec<(&String, &String)> = (set.iter())
            .filter_map(|(field, value)| {
                let owner = owners.get(field).filter(|owner| *owner != manager)?;
                (current.get(field) != Some(value)).then_some((field, owner))
            })
            .collect();
        if !conflicts.is_empty() && !force {
            let causes: Vec<Value> = (conflicts.iter())
                .map(|(field, owner)| {
                    json!({
                        "reason": "FieldManagerConflict",
                        "message": format!("conflict with \"{owner}\" using apps/v1"),
                        "field": field,
                    })
                })
                .collect();
            let listed: Vec<String> = (conflicts.iter())
                .map(|(field, owner)| format!("conflict with \"{owner}\" using apps/v1: {field}"))
                .collect();
            let message = format!(
                "Apply failed with {} conflict{}: {}",
                conflicts.len(),
                if conflicts.len() == 1 { "" } else { "s" },
                listed.join("; ")
            );
            let body = json!({
                "kind": "Status", "apiVersion": "v1", "metadata": {},
                "status": "Failure", "message": message, "reason": "Conflict",
                "details": { "name": name, "group": "apps", "kind": "deployments", "causes": causes },
                "code": 409,
            });
            return Err(body);
        }
        owners.retain(|_, owner| owner != manager);
        for (field, _) in &set {
            owners.insert(field.clone(), manager.to_owned());
        }
        let mut object = before.clone().unwrap_or_else(|| {
            json!({
                "apiVersion": "apps/v1", "kind": "Deployment",
                "metadata": {
                    "name": name, "namespace": ns, "uid": format!("deployment-uid-{name}"),
                    "creationTimestamp": "2026-01-01T00:00:00Z", "generation": 0,
                },
            })
        });
        for field in ["labels", "annotations"] {
            match applied["metadata"].get(field) {
                Some(value) => object["metadata"][field] = value.clone(),
                None => {
                    if let Some(metadata) = object["metadata"].as_object_mut() {
                        metadata.remove(field);
                    }
                }
            }
        }
        let mut spec = applied.get("spec").cloned().unwrap_or(json!({}));
        if spec.get("replicas").is_none() {
            // Defaulted on create; kept afterwards when the apply does not set it.
            spec["replicas"] = before
                .as_ref()
                .and_then(|b| b.pointer("/spec/replicas").cloned())
                .unwrap_or(1.into());
        }
        let changed = before.as_ref() != Some(&object) || object.get("spec") != Some(&spec);
        if object.get("spec") != Some(&spec) {
            let generation = object["metadata"]["generation"].as_u64().unwrap_or(0) + 1;
            object["metadata"]["generation"] = generation.into();
        }
        object["spec"] = spec;
        if changed {
            object["metadata"]["resourceVersion"] = self.next_version().into();
        }
        let created = before.is_none();
        self.deployments.insert(key, object.clone());
        self.reconcile();
        Ok((created, object))
    }
}

async fn delete_deployment(state: AppState, Path((ns, name)): Path<(String, String)>) -> Response {
    let mut objects = state.objects.lock();
    let Some(deployment) = objects.deployments.remove(&(ns.clone(), name.clone())) else {
        return not_found("deployments.apps", &name);
    };
    objects.owners.remove(&(ns.clone(), name.clone()));
    let selector = (deployment.pointer("/spec/selector/matchLabels"))
        .and_then(Value::as_object)
        .cloned()
        .unwrap_or_default();
    objects
        .pods
        .retain(|(n, _), pod| *n != ns || !matches_labels(&pod.object, &selector));
    drop(objects);
    state.changed.send_modify(|n| *n += 1);
    axum::Json(json!({
        "kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Success",
        "details": { "name": name, "group": "apps", "kind": "deployments" },
    }))
    .into_response()
}

async fn list_pods(state: AppState, Path(ns): Path<String>, query: Params) -> Response {
    let selector = query.get("labelSelector").cloned().unwrap_or_default();
    let objects = state.objects.lock();
    let items = (objects.pods.iter())
        .filter(|((n, _), pod)| *n == ns && matches_selector(&pod.object, &selector))
        .map(|(_, pod)| pod.object.clone())
        .collect();
    list("Pod", "v1", items, objects.resource_version)
}

async fn get_pod(state: AppState, Path((ns, name)): Path<(String, String)>) -> Response {
    let objects = state.objects.lock();
    match objects.pods.get(&(ns, name.clone())) {
        Some(pod) => axum::Json(pod.object.clone()).into_response(),
        None => not_found("pods", &name),
    }
}

async fn patch_pod(
    state: AppState,
    Path((ns, name)): Path<(String, String)>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let content_type = (headers.get(header::CONTENT_TYPE))
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default();
    if content_type != "application/merge-patch+json" {
        return status(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "UnsupportedMediaType",
            &format!("the fake takes only JSON merge patches for pods, not {content_type}"),
        );
    }
    let Ok(patch) = serde_json::from_slice::<Value>(&body) else {
        return status(
            StatusCode::BAD_REQUEST,
            "BadRequest",
            "the body is not JSON",
        );
    };
    let delay = state.objects.lock().patch_delay;
    tokio::time::sleep(delay).await;
    let mut objects = state.objects.lock();
    let version = objects.resource_version + 1;
    let Some(pod) = objects.pods.get_mut(&(ns, name.clone())) else {
        return not_found("pods", &name);
    };
    if let Some(wanted) = patch.pointer("/metadata/resourceVersion")
        && Some(wanted) != pod.object.pointer("/metadata/resourceVersion")
    {
        return status(
            StatusCode::CONFLICT,
            "Conflict",
            &format!(
                "Operation cannot be fulfilled on pods \"{name}\": the object has been modified; please apply your changes to the latest version and try again"
            ),
        );
    }
    merge(&mut pod.object, &patch);
    pod.object["metadata"]["resourceVersion"] = version.to_string().into();
    let object = pod.object.clone();
    objects.resource_version = version;
    objects.reconcile();
    drop(objects);
    state.changed.send_modify(|n| *n += 1);
    axum::Json(object).into_response()
}

/// RFC 7386: objects merge key by key, `null` removes, anything else replaces.
fn merge(target: &mut Value, patch: &Value) {
    let Value::Object(patch) = patch else {
        *target = patch.clone();
        return;
    };
    if !target.is_object() {
        *target = json!({});
    }
    let Value::Object(target) = target else {
        return;
    };
    for (key, value) in patch {
        if value.is_null() {
            target.remove(key);
        } else {
            merge(target.entry(key.clone()).or_insert(Value::Null), value);
        }
    }
}

async fn delete_pod(state: AppState, Path((ns, name)): Path<(String, String)>) -> Response {
    let mut objects = state.objects.lock();
    let Some(pod) = objects.pods.remove(&(ns, name.clone())) else {
        return not_found("pods", &name);
    };
    objects.reconcile();
    drop(objects);
    state.changed.send_modify(|n| *n += 1);
    axum::Json(pod.object).into_response()
}

async fn pod_log(
    state: AppState,
    Path((ns, name)): Path<(String, String)>,
    query: Params,
) -> Response {
    let key = (ns, name.clone());
    let tail = query.get("tailLines").and_then(|n| n.parse::<usize>().ok());
    let follow = query.get("follow").is_some_and(|f| f == "true");
    let start = {
        let objects = state.objects.lock();
        let Some(pod) = objects.pods.get(&key) else {
            return not_found("pods", &name);
        };
        tail.map_or(0, |tail| pod.log.len().saturating_sub(tail))
    };
    if !follow {
        let objects = state.objects.lock();
        let text: String = objects.pods[&key].log[start..]
            .iter()
            .map(|line| format!("{line}\n"))
            .collect();
        return ([(header::CONTENT_TYPE, "text/plain")], text).into_response();
    }
    let changes = state.changed.subscribe();
    let stream = futures::stream::unfold(
        (state.0.clone(), key, start, changes),
        |(state, key, mut sent, mut changes)| async move {
            loop {
                let chunk = {
                    let objects = state.objects.lock();
                    let pod = objects.pods.get(&key)?;
                    let lines: String = pod.log[sent..]
                        .iter()
                        .map(|line| format!("{line}\n"))
                        .collect();
                    sent = pod.log.len();
                    lines
                };
                if !chunk.is_empty() {
                    let item = Ok::<_, std::convert::Infallible>(Bytes::from(chunk));
                    return Some((item, (state, key, sent, changes)));
                }
                changes.changed().await.ok()?;
            }
        },
    );
    (
        [(header::CONTENT_TYPE, "text/plain")],
        Body::from_stream(stream),
    )
        .into_response()
}
