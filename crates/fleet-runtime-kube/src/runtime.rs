//! The Kubernetes runtime: engine instances as pods of a Deployment per server revision.
//!
//! An instance is one pod. [`start`](Runtime::start) server-side applies the revision's
//! Deployment (`<server>-r<revision>`, from [`PodLaunch`]) with `replicas` = the instances of
//! that revision this runtime runs, waits for a Ready pod of it that no instance has
//! claimed, and claims it by setting its `mcpfleet.io/instance` label — with the pod's
//! `resourceVersion` as a precondition, so that of two concurrent claims one gets a
//! `409 Conflict` and tries another pod. An http instance is reached at the pod's IP and
//! port when the control plane runs in the cluster ([`PodReach::PodIp`]); from outside it
//! ([`PodReach::PortForward`]), at a port of 127.0.0.1 whose every connection the runtime
//! carries to the pod over the API server's `pods/portforward` (see `forward`). That
//! forwarder is the claimed pod's: it closes when the instance stops or its pod is
//! replaced, and the replacement gets its own.
//!
//! [`stop`](Runtime::stop) makes the pod the one its ReplicaSet removes
//! (`controller.kubernetes.io/pod-deletion-cost: -1000`), applies the Deployment one
//! replica smaller (the last instance of a revision deletes it), deletes the pod and waits
//! until it is gone. [`restart`](Runtime::restart) deletes the pod; the ReplicaSet makes a
//! new one, which the instance claims. Each claimed pod is polled: a terminated container
//! is an exit (reason `OOMKilled` → [`OutOfMemory::Reported`]), `CrashLoopBackOff` is
//! crash looping, `restartCount` counts restarts — the kubelet restarts containers
//! (`restartPolicy: Always`), not this runtime.
//!
//! A stdio instance's pod keeps its container's stdin open (`stdin: true`, no TTY); the
//! runtime attaches to it through the API server (`pods/attach`, a WebSocket to the
//! kubelet) for stdin and stdout, and that stream is the instance's [`StdioAttachment`]:
//! the server's image needs no mcpfleet binary. stderr stays in the container's log
//! (`pods/log`, the instance's log here). The attach is the instance's life, as a pipe is a
//! local process's: when it ends (the container exited, the pod went, the connection
//! broke) the instance has exited, and its restart policy decides — a restart deletes the
//! pod, whose server state went with the attach, and attaches to a fresh one after the
//! backoff.
//!
//! The cluster's labels are the record: [`discover`](Runtime::discover),
//! [`adopt`](Runtime::adopt) and [`reap_leftovers`](Runtime::reap_leftovers) find what an
//! earlier control plane left by `mcpfleet.io/fleet` and `mcpfleet.io/instance`. A stdio
//! instance is not adoptable: its attach ended with the control plane that opened it (as a
//! local stdio process's pipes do), so its pod is reaped and replaced.

use std::collections::{BTreeMap, HashSet};
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Weak};
use std::time::{Duration, Instant, SystemTime};

use fleet_runtime::process::backoff::{Decision, Ending, FailureCount, random_unit};
use fleet_runtime::{
    Discovered, ExitInfo, Instance, InstanceHandle, InstanceId, InstanceIo, InstanceSpec,
    InstanceState, InstanceStatus, Launch, Lifecycle, OutOfMemory, Reach, ReapOutcome, Reaped,
    Runtime, RuntimeError, StartError, StdioAttachment,
};
use fleet_spec::model::{PodReach, Restart};
use futures::stream::BoxStream;
use futures::{AsyncBufReadExt as _, StreamExt as _};
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{ContainerStateTerminated, ContainerStatus, Pod};
use kube::api::{Api, AttachParams, DeleteParams, ListParams, LogParams, Patch, PatchParams};
use parking_lot::Mutex;
use serde_json::{Value, json};
use tokio::sync::{mpsc, oneshot, watch};

use crate::cluster::{Cluster, FIELD_MANAGER};
use crate::forward::{self, Forwarder};

/// The fleet a Deployment or pod belongs to.
pub const LABEL_FLEET: &str = "mcpfleet.io/fleet";
/// The server it runs.
pub const LABEL_SERVER: &str = "mcpfleet.io/server";
/// The revision it runs (the state store's number).
pub const LABEL_REVISION: &str = "mcpfleet.io/revision";
/// On a claimed pod: the engine instance it is.
pub const LABEL_INSTANCE: &str = "mcpfleet.io/instance";
/// What a ReplicaSet reads to choose the pod to remove when it scales down: lower first
/// (<https://kubernetes.io/docs/concepts/workloads/controllers/replicaset/#pod-deletion-cost>).
pub const POD_DELETION_COST: &str = "controller.kubernetes.io/pod-deletion-cost";

/// What reaping a pod or Deployment did: the API server deleted it (the kubelet stops its
/// containers within their grace period).
const STOPPED: ReapOutcome = ReapOutcome::Stopped {
    leader: true,
    members: 0,
    forced: false,
};

/// The buffer of each direction of a stdio instance's attach (kube's default is 1 KiB, less
/// than one MCP message with a tool list).
const ATTACH_BUFFER: usize = 64 * 1024;

/// How long the runtime waits, and how often it looks.
#[derive(Debug, Clone)]
pub struct KubeSettings {
    /// How long [`start`](Runtime::start) waits for a Ready pod to claim: pulling an image
    /// and scheduling take a while on a cluster. The fleet's `kubernetes.progress_deadline`,
    /// by default Kubernetes' own 10 minutes.
    pub ready_timeout: Duration,
    /// How often a claimed pod's status is read, and a claim retried.
    pub poll_interval: Duration,
    /// How an http instance's pod is reached: the control plane's choice, by where it
    /// runs (`kubernetes.reach` in the fleet file).
    pub reach: PodReach,
}

impl Default for KubeSettings {
    fn default() -> Self {
        KubeSettings {
            ready_timeout: fleet_spec::model::Kubernetes::DEFAULT_PROGRESS_DEADLINE,
            poll_interval: Duration::from_secs(2),
            reach: PodReach::PodIp,
        }
    }
}

/// Runs a fleet's instances as pods in one namespace of one cluster.
pub struct KubeRuntime {
    shared: Arc<Shared>,
}

impl std::fmt::Debug for KubeRuntime {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KubeRuntime")
            .field("fleet", &self.shared.fleet)
            .field("namespace", &self.shared.namespace)
            .finish_non_exhaustive()
    }
}

struct Shared {
    cluster: Cluster,
    fleet: String,
    namespace: String,
    settings: KubeSettings,
    instances: Mutex<BTreeMap<InstanceId, Entry>>,
    /// Held while a revision's replica count is applied, so that each apply carries the
    /// count of the instances it is for and two never cross.
    scaling: tokio::sync::Mutex<()>,
}

/// The runtime's handle on one instance.
struct Entry {
    revision: Arc<Revision>,
    status: Arc<Mutex<InstanceStatus>>,
    control: mpsc::UnboundedSender<Control>,
    /// `true` once the instance's supervisor has finished.
    done: watch::Receiver<bool>,
}

/// The Deployment of one server revision.
struct Revision {
    name: String,
    /// As given, without `spec.replicas`.
    deployment: Value,
    /// `mcpfleet.io/{fleet,server,revision}` as a label selector.
    selector: String,
}

enum Control {
    Stop(oneshot::Sender<Result<(), RuntimeError>>),
    Restart(oneshot::Sender<Result<(), RuntimeError>>),
}

/// A failed request: what was asked, and the API server's or client's words.
struct Failed {
    action: String,
    message: String,
    /// The API server answered and refused: the request changed nothing.
    refused: bool,
}

impl Failed {
    fn new(action: impl Into<String>, error: &kube::Error) -> Self {
        let message = match error {
            kube::Error::Api(status) => format!("{} ({})", status.message, status.reason),
            other => other.to_string(),
        };
        Failed {
            action: action.into(),
            message,
            refused: matches!(error, kube::Error::Api(_)),
        }
    }

    fn runtime(self, id: &InstanceId) -> RuntimeError {
        RuntimeError::Cluster {
            id: id.clone(),
            action: self.action,
            message: self.message,
        }
    }

    fn start(self, id: &InstanceId) -> StartError {
        StartError::Cluster {
            id: id.clone(),
            action: self.action,
            message: self.message,
        }
    }
}

/// What a server-side apply of Deployment `namespace/name` refused with `409 Conflict`
/// means: fields that another field manager owns, which mcpfleet never takes over. The
/// name is mcpfleet's (`<server>-r<revision>`), so the way out is the other tool's
/// letting go of the Deployment, or deleting it for mcpfleet to create it again.
fn conflict_message(namespace: &str, name: &str, status: &kube::core::Status) -> String {
    let conflicts = crate::apply::field_conflicts(status);
    let owned = match &conflicts[..] {
        [one] => format!(
            "field `{}` is owned by field manager `{}`",
            one.field, one.manager
        ),
        many => {
            let fields: Vec<String> = (many.iter())
                .map(|c| format!("`{}` (field manager `{}`)", c.field, c.manager))
                .collect();
            format!(
                "fields {} are owned by other field managers",
                fields.join(", ")
            )
        }
    };
    let mut managers: Vec<String> = (conflicts.iter())
        .map(|c| format!("`{}`", c.manager))
        .collect();
    managers.sort();
    managers.dedup();
    format!(
        "{owned}, and mcpfleet never takes over another manager's fields (it does not force \
         its applies); Deployment names `<server>-r<revision>` are mcpfleet's: stop {} \
         managing {name}, or delete it (`kubectl -n {namespace} delete deployment {name}`) for \
         mcpfleet to create it again, then deploy again",
        managers.join(" and ")
    )
}

/// Why a stdio instance's pod cannot be taken over.
const STDIO_NOT_ADOPTABLE: &str = "a stdio server is reached through the attach to its pod, \
    which ended with the control plane that opened it (as a local stdio process's pipes do): \
    its pod is replaced";

/// A stdio instance's attach to its pod: while it lasts, the instance runs.
struct Attached {
    /// Fires when the attach ended.
    ended: oneshot::Receiver<()>,
    /// Ends the attach (a stop, a replacement, the supervisor's end).
    task: tokio::task::AbortHandle,
}

impl Drop for Attached {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// What keeps an instance's way to its claimed pod open; dropping it closes that way.
enum Link {
    /// A stdio instance's attach to its pod.
    Attach(Attached),
    /// An http instance's port-forward, when the control plane runs outside the cluster.
    Forward(Forwarder),
}

/// How an instance reaches its claimed pod, and what keeps that way open (nothing when it
/// is reached at the pod's IP).
struct Reached {
    reach: Reach,
    link: Option<Link>,
}

/// Until `link`'s attach ends; never without one.
async fn attach_ended(link: &mut Option<Link>) {
    match link {
        Some(Link::Attach(attached)) => {
            let _ = (&mut attached.ended).await;
        }
        _ => std::future::pending().await,
    }
}

fn is_status(error: &kube::Error, code: u16) -> bool {
    matches!(error, kube::Error::Api(status) if status.code == code)
}

impl KubeRuntime {
    /// A runtime for `fleet`'s instances in `namespace` (which must exist) of the cluster.
    /// Sends nothing yet.
    pub fn new(cluster: Cluster, fleet: &str, namespace: &str, settings: KubeSettings) -> Self {
        KubeRuntime {
            shared: Arc::new(Shared {
                cluster,
                fleet: fleet.to_owned(),
                namespace: namespace.to_owned(),
                settings,
                instances: Mutex::new(BTreeMap::new()),
                scaling: tokio::sync::Mutex::new(()),
            }),
        }
    }

    /// The cluster the instances run in.
    pub fn cluster(&self) -> &Cluster {
        &self.shared.cluster
    }

    /// What `spec` runs: its revision's Deployment, checked against the spec and this
    /// runtime's fleet and namespace.
    fn revision(&self, spec: &InstanceSpec) -> Result<Arc<Revision>, StartError> {
        let not_a_pod = |why: String| StartError::NotAPod {
            id: spec.id.clone(),
            why,
        };
        let Launch::Pod(launch) = &spec.launch else {
            return Err(StartError::WrongRuntime {
                id: spec.id.clone(),
                launch: spec.launch.kind(),
                runtime: "kubernetes",
            });
        };
        if let Some(problem) = label_value_problem(spec.id.as_str()) {
            return Err(StartError::InvalidId {
                id: spec.id.clone(),
                problem,
            });
        }
        if !spec.args.is_empty() || !spec.env.is_empty() {
            return Err(not_a_pod(
                "its arguments and environment belong in the pod template (the Deployment), \
                 not the instance spec: resolved values must not reach the cluster"
                    .into(),
            ));
        }
        let deployment = &launch.deployment;
        let text = |pointer: &str| deployment.pointer(pointer).and_then(Value::as_str);
        if text("/apiVersion") != Some("apps/v1") || text("/kind") != Some("Deployment") {
            return Err(not_a_pod("its launch is not an apps/v1 Deployment".into()));
        }
        let Some(name) = text("/metadata/name") else {
            return Err(not_a_pod("its Deployment has no metadata.name".into()));
        };
        if text("/metadata/namespace").is_some_and(|ns| ns != self.shared.namespace) {
            return Err(not_a_pod(format!(
                "its Deployment is for namespace `{}`, this runtime runs in `{}`",
                text("/metadata/namespace").unwrap_or_default(),
                self.shared.namespace
            )));
        }
        let revision = spec.revision.to_string();
        let selector = deployment.pointer("/spec/selector/matchLabels");
        let selects = |key: &str, value: &str| {
            selector.and_then(|s| s.get(key)).and_then(Value::as_str) == Some(value)
        };
        if !(selects(LABEL_FLEET, &self.shared.fleet)
            && selects(LABEL_SERVER, &spec.server)
            && selects(LABEL_REVISION, &revision))
        {
            return Err(not_a_pod(format!(
                "its Deployment `{name}` does not select the pods of fleet `{}`, server `{}`, \
                 revision {revision} by their labels",
                self.shared.fleet, spec.server
            )));
        }
        if let InstanceIo::Listen { port } = spec.io {
            let ports = deployment.pointer("/spec/template/spec/containers/0/ports");
            let declared = (ports.and_then(Value::as_array).into_iter().flatten())
                .filter_map(|p| p.get("containerPort").and_then(Value::as_u64))
                .any(|p| p == u64::from(port));
            if !declared {
                return Err(not_a_pod(format!(
                    "its pod template does not declare port {port}, which the instance listens on"
                )));
            }
        }
        if spec.io == InstanceIo::Stdio {
            let container = deployment.pointer("/spec/template/spec/containers/0");
            let flag = |key: &str| container.and_then(|c| c.get(key)).and_then(Value::as_bool);
            if flag("stdin") != Some(true) || flag("tty") == Some(true) {
                return Err(not_a_pod(
                    "its pod template's container does not keep stdin open without a TTY \
                     (`stdin: true`, `tty: false`), which attaching to a stdio server needs"
                        .into(),
                ));
            }
        }
        let mut deployment = deployment.clone();
        deployment["metadata"]["namespace"] = self.shared.namespace.clone().into();
        Ok(Arc::new(Revision {
            name: name.to_owned(),
            deployment,
            selector: format!(
                "{LABEL_FLEET}={},{LABEL_SERVER}={},{LABEL_REVISION}={revision}",
                self.shared.fleet, spec.server
            ),
        }))
    }

    /// Claims `spec.id` for an instance in progress.
    fn reserve(
        &self,
        spec: &InstanceSpec,
        revision: &Arc<Revision>,
    ) -> Result<Reserved, StartError> {
        let mut instances = self.shared.instances.lock();
        if instances.contains_key(&spec.id) {
            return Err(StartError::AlreadyRunning {
                id: spec.id.clone(),
            });
        }
        let (control_tx, control_rx) = mpsc::unbounded_channel();
        let (done_tx, done_rx) = watch::channel(false);
        let status = Arc::new(Mutex::new(InstanceStatus {
            id: spec.id.clone(),
            server: spec.server.clone(),
            revision: spec.revision,
            handle: None,
            state: InstanceState::Starting,
            restarts: 0,
            last_exit: None,
            started_at: None,
        }));
        instances.insert(
            spec.id.clone(),
            Entry {
                revision: revision.clone(),
                status: status.clone(),
                control: control_tx,
                done: done_rx,
            },
        );
        Ok(Reserved {
            control: control_rx,
            done: done_tx,
            status,
        })
    }

    /// Hands a claimed pod, reached by `reach`, to a supervisor of its own; the first event
    /// is `Running`.
    fn supervise(
        &self,
        spec: &InstanceSpec,
        revision: Arc<Revision>,
        reserved: Reserved,
        pod: &Pod,
        reached: Reached,
    ) -> Instance {
        let (events, events_rx) = mpsc::unbounded_channel();
        let mut supervisor = Supervisor {
            shared: Arc::downgrade(&self.shared),
            pods: self.shared.pods(),
            settings: self.shared.settings.clone(),
            id: spec.id.clone(),
            io: spec.io,
            stop_grace: spec.stop_grace,
            revision,
            pod: None,
            events,
            status: reserved.status,
            explicit_restarts: 0,
            seen: Seen::default(),
            restart: spec.restart.clone(),
            failures: FailureCount::default(),
            link: reached.link,
            not_before: None,
        };
        supervisor.running(pod, reached.reach);
        tokio::spawn(supervisor.run(reserved.control, reserved.done));
        Instance {
            id: spec.id.clone(),
            events: events_rx,
        }
    }
}

/// What [`KubeRuntime::reserve`] hands over to the supervisor.
struct Reserved {
    control: mpsc::UnboundedReceiver<Control>,
    done: watch::Sender<bool>,
    status: Arc<Mutex<InstanceStatus>>,
}

impl Shared {
    /// How the instance reaches `pod`: its address (or from outside the cluster, a local
    /// port forwarded to it), or for a stdio instance an attach to its container's stdin
    /// and stdout.
    async fn reach(&self, io: InstanceIo, pod: &Pod) -> Result<Reached, Failed> {
        let reached = |reach| Reached { reach, link: None };
        match (io, self.settings.reach) {
            (InstanceIo::Listen { port }, PodReach::PodIp) => {
                Ok(reached(pod_ip(pod).map_or(Reach::Nowhere, |ip| {
                    Reach::Address(SocketAddr::new(ip, port))
                })))
            }
            (InstanceIo::Listen { port }, PodReach::PortForward) => {
                let name = pod.metadata.name.clone().unwrap_or_default();
                let forwarder =
                    (forward::open(self.pods(), name.clone(), port).await).map_err(|e| Failed {
                        action: format!(
                            "listen on 127.0.0.1 to forward to port {port} of pod {}/{name}",
                            self.namespace
                        ),
                        message: e.to_string(),
                        refused: false,
                    })?;
                Ok(Reached {
                    reach: Reach::Address(forwarder.address),
                    link: Some(Link::Forward(forwarder)),
                })
            }
            (InstanceIo::Stdio, _) => {
                let (attachment, attached) = self.attach(pod).await?;
                Ok(Reached {
                    reach: Reach::Stdio(attachment),
                    link: Some(Link::Attach(attached)),
                })
            }
            (InstanceIo::Logged, _) => Ok(reached(Reach::Nowhere)),
        }
    }

    /// Attaches to the stdin and stdout of `pod`'s container.
    async fn attach(&self, pod: &Pod) -> Result<(StdioAttachment, Attached), Failed> {
        let name = pod.metadata.name.clone().unwrap_or_default();
        let action = || format!("attach to pod {}/{name}", self.namespace);
        let mut params = AttachParams::default()
            .stdin(true)
            .stdout(true)
            // The container's stderr is in its log (`pods/log`), the instance's log here;
            // on the attach it would have to be drained or it would stall stdout.
            .stderr(false)
            .max_stdin_buf_size(ATTACH_BUFFER)
            .max_stdout_buf_size(ATTACH_BUFFER);
        if let Some(container) = (pod.spec.as_ref()).and_then(|spec| spec.containers.first()) {
            params = params.container(container.name.clone());
        }
        let mut process = (self.pods().attach(&name, &params))
            .await
            .map_err(|e| Failed::new(action(), &e))?;
        let (Some(stdin), Some(stdout)) = (process.stdin(), process.stdout()) else {
            return Err(Failed {
                action: action(),
                message: "the attach has no stdin or stdout".into(),
                refused: false,
            });
        };
        let (ended_tx, ended) = oneshot::channel();
        let task = tokio::spawn(async move {
            // Ends when the API server closes the stream: the container exited, the pod
            // was deleted, or the connection broke.
            if let Err(e) = process.join().await {
                tracing::debug!(error = %e, "a pod attach ended with an error");
            }
            let _ = ended_tx.send(());
        });
        Ok((
            StdioAttachment::new(stdin, stdout),
            Attached {
                ended,
                task: task.abort_handle(),
            },
        ))
    }

    fn pods(&self) -> Api<Pod> {
        Api::namespaced(self.cluster.client.clone(), &self.namespace)
    }

    fn deployments(&self) -> Api<Deployment> {
        Api::namespaced(self.cluster.client.clone(), &self.namespace)
    }

    /// Applies `revision`'s Deployment with as many replicas as this runtime has instances
    /// of it (those stopping no longer count), or deletes it when there are none.
    async fn scale(&self, revision: &Revision) -> Result<(), Failed> {
        let _scaling = self.scaling.lock().await;
        let replicas = (self.instances.lock().values())
            .filter(|entry| entry.revision.name == revision.name)
            .filter(|entry| {
                let state = entry.status.lock().state;
                !matches!(state, InstanceState::Stopping | InstanceState::Stopped)
            })
            .count();
        let deployments = self.deployments();
        let name = &revision.name;
        if replicas == 0 {
            return match deployments.delete(name, &DeleteParams::background()).await {
                Ok(_) => Ok(()),
                Err(e) if is_status(&e, 404) => Ok(()),
                Err(e) => Err(Failed::new(
                    format!("delete Deployment {}/{name}", self.namespace),
                    &e,
                )),
            };
        }
        let mut deployment = revision.deployment.clone();
        deployment["spec"]["replicas"] = replicas.into();
        // Never forced: a field another manager owns is an error to show, not to take.
        let params = PatchParams::apply(FIELD_MANAGER);
        deployments
            .patch(name, &params, &Patch::Apply(&deployment))
            .await
            .map(drop)
            .map_err(|e| {
                let action = format!(
                    "apply Deployment {}/{name} with {replicas} replicas",
                    self.namespace
                );
                match &e {
                    kube::Error::Api(status) if status.code == 409 => Failed {
                        action,
                        message: conflict_message(&self.namespace, name, status),
                        refused: true,
                    },
                    _ => Failed::new(action, &e),
                }
            })
    }

    /// Claims a Ready pod of `revision` that no instance has, for `id`; `None` when there
    /// is none right now. `seen` gets what the pods were doing, for an error.
    async fn claim_once(
        &self,
        id: &InstanceId,
        revision: &Revision,
        seen: &mut String,
    ) -> Result<Option<Pod>, Failed> {
        let pods = self.pods();
        let unclaimed =
            ListParams::default().labels(&format!("{},!{LABEL_INSTANCE}", revision.selector));
        let list = pods.list(&unclaimed).await.map_err(|e| {
            Failed::new(
                format!(
                    "list the pods of Deployment {}/{}",
                    self.namespace, revision.name
                ),
                &e,
            )
        })?;
        *seen = describe_pods(&list.items);
        for pod in list.items.iter().filter(|pod| claimable(pod)) {
            let name = pod.metadata.name.clone().unwrap_or_default();
            // The resourceVersion makes the patch a compare-and-swap: if another claim
            // (or anything else) changed the pod since it was listed, the API server
            // answers 409 Conflict and this pod is left to the other claimant.
            let claim = json!({ "metadata": {
                "labels": { LABEL_INSTANCE: id.as_str() },
                "resourceVersion": pod.metadata.resource_version,
            }});
            match pods
                .patch(&name, &PatchParams::default(), &Patch::Merge(&claim))
                .await
            {
                Ok(claimed) => return Ok(Some(claimed)),
                Err(e) if is_status(&e, 409) || is_status(&e, 404) => continue,
                Err(e) => {
                    return Err(Failed::new(
                        format!("label pod {}/{name} as instance {id}", self.namespace),
                        &e,
                    ));
                }
            }
        }
        Ok(None)
    }

    /// [`claim_once`](Self::claim_once) until a pod is claimed or `ready_timeout` passed.
    async fn claim(&self, id: &InstanceId, revision: &Revision) -> Result<Pod, StartError> {
        let deadline = Instant::now() + self.settings.ready_timeout;
        let mut seen = String::new();
        loop {
            if let Some(pod) = (self.claim_once(id, revision, &mut seen).await)
                .map_err(|failed| failed.start(id))?
            {
                return Ok(pod);
            }
            if Instant::now() >= deadline {
                return Err(StartError::PodNotReady {
                    id: id.clone(),
                    namespace: self.namespace.clone(),
                    deployment: revision.name.clone(),
                    waited: self.settings.ready_timeout,
                    why: seen,
                });
            }
            tokio::time::sleep(self.settings.poll_interval).await;
        }
    }

    /// Deletes pod `name` and waits until the API server no longer has it.
    async fn delete_pod(&self, name: &str, grace: Duration) -> Result<(), Failed> {
        let pods = self.pods();
        let action = || format!("delete pod {}/{name}", self.namespace);
        let params = DeleteParams {
            grace_period_seconds: Some(u32::try_from(grace.as_secs()).unwrap_or(u32::MAX)),
            ..DeleteParams::default()
        };
        match pods.delete(name, &params).await {
            Ok(_) => {}
            Err(e) if is_status(&e, 404) => return Ok(()),
            Err(e) => return Err(Failed::new(action(), &e)),
        }
        // The kubelet has the grace period to stop the containers, then the pod goes.
        let deadline = Instant::now() + grace + Duration::from_secs(30);
        loop {
            match pods.get_opt(name).await {
                Ok(None) => return Ok(()),
                Ok(Some(_)) if Instant::now() >= deadline => {
                    return Err(Failed {
                        action: action(),
                        message: format!(
                            "it is still there {:?} after it was deleted",
                            grace + Duration::from_secs(30)
                        ),
                        refused: false,
                    });
                }
                Ok(Some(_)) => tokio::time::sleep(self.settings.poll_interval).await,
                Err(e) => return Err(Failed::new(action(), &e)),
            }
        }
    }

    fn forget(&self, id: &InstanceId) {
        self.instances.lock().remove(id);
    }

    /// The fleet's pods that carry an instance label.
    async fn claimed_pods(&self) -> Result<Vec<Pod>, kube::Error> {
        let labels = format!("{LABEL_FLEET}={},{LABEL_INSTANCE}", self.fleet);
        Ok(self
            .pods()
            .list(&ListParams::default().labels(&labels))
            .await?
            .items)
    }
}

/// Why `value` cannot be a label value (what the instance label needs), if it cannot.
fn label_value_problem(value: &str) -> Option<&'static str> {
    if value.is_empty() || value.len() > 63 {
        Some("must be 1 to 63 characters long to label a pod")
    } else if !value.starts_with(|c: char| c.is_ascii_alphanumeric())
        || !value.ends_with(|c: char| c.is_ascii_alphanumeric())
    {
        Some("must start and end with a letter or digit to label a pod")
    } else if !value
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
    {
        Some("may contain only ASCII letters, digits, `.`, `_` and `-` to label a pod")
    } else {
        None
    }
}

fn label<'a>(pod: &'a Pod, key: &str) -> Option<&'a str> {
    pod.metadata.labels.as_ref()?.get(key).map(String::as_str)
}

fn is_ready(pod: &Pod) -> bool {
    (pod.status.as_ref().and_then(|s| s.conditions.as_ref()))
        .into_iter()
        .flatten()
        .any(|c| c.type_ == "Ready" && c.status == "True")
}

/// Ready, not being deleted, with an address.
fn claimable(pod: &Pod) -> bool {
    is_ready(pod) && pod.metadata.deletion_timestamp.is_none() && pod_ip(pod).is_some()
}

fn pod_ip(pod: &Pod) -> Option<IpAddr> {
    pod.status.as_ref()?.pod_ip.as_deref()?.parse().ok()
}

/// A stdio server's pod: its container keeps stdin open for an attach.
fn keeps_stdin_open(pod: &Pod) -> bool {
    (pod.spec.as_ref())
        .and_then(|spec| spec.containers.first())
        .and_then(|container| container.stdin)
        == Some(true)
}

fn main_container(pod: &Pod) -> Option<&ContainerStatus> {
    pod.status.as_ref()?.container_statuses.as_ref()?.first()
}

/// What the pods are doing, for an error: `web-r1-x: Pending, waiting (ImagePullBackOff)`.
fn describe_pods(pods: &[Pod]) -> String {
    if pods.is_empty() {
        return "there were no unclaimed pods (a quota, or the ReplicaSet failing to create \
                them, can cause that)"
            .to_owned();
    }
    let described: Vec<String> = pods
        .iter()
        .map(|pod| {
            let name = pod.metadata.name.as_deref().unwrap_or("?");
            let phase = (pod.status.as_ref().and_then(|s| s.phase.as_deref())).unwrap_or("Unknown");
            let waiting = main_container(pod)
                .and_then(|c| c.state.as_ref()?.waiting.as_ref()?.reason.clone())
                .map(|reason| format!(", waiting ({reason})"))
                .unwrap_or_default();
            let ready = if is_ready(pod) { "" } else { ", not ready" };
            format!("{name}: {phase}{waiting}{ready}")
        })
        .collect();
    format!("its pods: {}", described.join("; "))
}

/// What the supervisor has reported of its pod's container.
#[derive(Default)]
struct Seen {
    /// `restartCount` when last read.
    restarts: i32,
    /// The container id of the last termination reported, so a termination seen as
    /// `state.terminated` is not reported again as `lastState.terminated`.
    reported: Option<String>,
    /// Running and ready, as last reported.
    up: bool,
    crash_looping: bool,
    /// When the container was last seen starting.
    since: Option<Instant>,
}

/// Follows one instance: polls its pod, and stops or restarts it when asked.
struct Supervisor {
    /// Weak: when the runtime goes (a control plane that exits or is killed), its
    /// supervisors end and the pods keep running, for the next control plane to adopt.
    shared: Weak<Shared>,
    pods: Api<Pod>,
    settings: KubeSettings,
    id: InstanceId,
    io: InstanceIo,
    stop_grace: Duration,
    revision: Arc<Revision>,
    /// The claimed pod; `None` while the instance waits for a new one.
    pod: Option<String>,
    events: mpsc::UnboundedSender<Lifecycle>,
    status: Arc<Mutex<InstanceStatus>>,
    /// Restarts that replaced the pod (asked for, or a stdio instance's ended attach): the
    /// pod's own `restartCount` does not count them.
    explicit_restarts: u32,
    seen: Seen,
    /// The policy a stdio instance's ended attach is judged by; an http pod's container
    /// restarts are the kubelet's (`restartPolicy: Always`).
    restart: Restart,
    failures: FailureCount,
    /// A stdio instance's attach to its pod, or an http instance's port-forward to it (from
    /// outside the cluster): it goes with the pod.
    link: Option<Link>,
    /// A stdio instance backing off takes its next pod no sooner.
    not_before: Option<Instant>,
}

impl Supervisor {
    async fn run(
        mut self,
        mut control: mpsc::UnboundedReceiver<Control>,
        done: watch::Sender<bool>,
    ) {
        loop {
            tokio::select! {
                asked = control.recv() => match asked {
                    // The runtime is gone: the pod stays, as after a killed control plane.
                    None => break,
                    Some(Control::Stop(reply)) => {
                        let stopped = self.stop().await;
                        let _ = reply.send(stopped);
                        break;
                    }
                    Some(Control::Restart(reply)) => {
                        let replaced = self.replace().await;
                        let _ = reply.send(replaced);
                    }
                },
                () = tokio::time::sleep(self.settings.poll_interval) => self.poll().await,
                () = attach_ended(&mut self.link) => self.attach_ended().await,
            }
        }
        let _ = done.send(true);
    }

    /// The instance runs in `pod` (newly claimed, or adopted), reached by `reach`.
    fn running(&mut self, pod: &Pod, reach: Reach) {
        let name = pod.metadata.name.clone().unwrap_or_default();
        let container = main_container(pod);
        self.seen = Seen {
            restarts: container.map_or(0, |c| c.restart_count),
            reported: None,
            up: true,
            crash_looping: false,
            since: Some(Instant::now()),
        };
        self.pod = Some(name.clone());
        {
            let mut status = self.status.lock();
            status.state = InstanceState::Running;
            status.handle = Some(InstanceHandle::Pod { name: name.clone() });
            status.started_at = Some(SystemTime::now());
        }
        let _ = self.events.send(Lifecycle::Running {
            reach,
            handle: InstanceHandle::Pod { name },
        });
    }

    /// Where an http instance's pod is reached (its forwarder's port, from outside the
    /// cluster); nothing else is reached by address.
    fn address(&self, pod: &Pod) -> Reach {
        match (self.io, &self.link, pod_ip(pod)) {
            (InstanceIo::Listen { .. }, Some(Link::Forward(forwarder)), _) => {
                Reach::Address(forwarder.address)
            }
            (InstanceIo::Listen { port }, None, Some(ip)) => {
                Reach::Address(SocketAddr::new(ip, port))
            }
            _ => Reach::Nowhere,
        }
    }

    /// Reads the pod and reports what changed.
    async fn poll(&mut self) {
        let Some(name) = self.pod.clone() else {
            if self.not_before.is_none_or(|t| Instant::now() >= t) {
                self.reclaim().await;
            }
            return;
        };
        if self.io == InstanceIo::Stdio {
            // Its attach says when it ends: the container's exit, the pod's deletion.
            return;
        }
        match self.pods.get_opt(&name).await {
            Ok(Some(pod)) => self.observe(&pod),
            Ok(None) => {
                // Deleted by someone else (an eviction, a drain, kubectl): the ReplicaSet
                // replaces it, and the instance takes the replacement.
                tracing::warn!(instance = %self.id, pod = %name, "the instance's pod went away; claiming its replacement");
                self.exited(None, OutOfMemory::No);
                self.pod = None;
                self.link = None;
                self.reclaim().await;
            }
            Err(e) => {
                tracing::warn!(instance = %self.id, pod = %name, error = %e, "cannot read the instance's pod");
            }
        }
    }

    fn observe(&mut self, pod: &Pod) {
        let Some(container) = main_container(pod) else {
            return;
        };
        let state = container.state.as_ref();
        if let Some(ended) = state.and_then(|s| s.terminated.as_ref()) {
            self.terminated(ended);
        }
        if container.restart_count > self.seen.restarts {
            if let Some(ended) = (container.last_state.as_ref()).and_then(|s| s.terminated.as_ref())
            {
                self.terminated(ended);
            }
            self.seen.restarts = container.restart_count;
            self.status.lock().restarts = self.restarts();
        }
        let backing_off = (state.and_then(|s| s.waiting.as_ref()))
            .and_then(|w| w.reason.as_deref())
            == Some("CrashLoopBackOff");
        if backing_off && !self.seen.crash_looping {
            self.seen.crash_looping = true;
            self.status.lock().state = InstanceState::CrashLooping;
            let _ = self.events.send(Lifecycle::CrashLooping {
                failures: u32::try_from(container.restart_count).unwrap_or(0),
            });
        } else if !self.seen.up && is_ready(pod) && state.is_some_and(|s| s.running.is_some()) {
            self.seen.up = true;
            self.seen.crash_looping = false;
            self.seen.since = Some(Instant::now());
            {
                let mut status = self.status.lock();
                status.state = InstanceState::Running;
                status.started_at = Some(SystemTime::now());
            }
            let _ = self.events.send(Lifecycle::Running {
                reach: self.address(pod),
                handle: InstanceHandle::Pod {
                    name: pod.metadata.name.clone().unwrap_or_default(),
                },
            });
        }
    }

    /// Reports a termination of the container once; the kubelet starts it again.
    fn terminated(&mut self, ended: &ContainerStateTerminated) {
        if ended.container_id.is_some() && self.seen.reported == ended.container_id {
            return;
        }
        self.seen.reported = ended.container_id.clone();
        let out_of_memory = if ended.reason.as_deref() == Some("OOMKilled") {
            OutOfMemory::Reported
        } else {
            OutOfMemory::No
        };
        self.exited(Some(ended.exit_code), out_of_memory);
        let attempt = u32::try_from(self.seen.restarts + 1).unwrap_or(u32::MAX);
        self.status.lock().state = InstanceState::BackingOff;
        // The kubelet's back-off (10 s doubling to 5 min) is its own; it does not say when.
        let _ = self.events.send(Lifecycle::BackingOff {
            attempt,
            delay: Duration::ZERO,
        });
    }

    fn exited(&mut self, code: Option<i32>, out_of_memory: OutOfMemory) -> ExitInfo {
        let ran_for = self.seen.since.map_or(Duration::ZERO, |t| t.elapsed());
        self.seen.up = false;
        let exit = ExitInfo {
            code,
            signal: None,
            ran_for,
            out_of_memory,
        };
        {
            let mut status = self.status.lock();
            status.state = InstanceState::Exited;
            status.last_exit = Some(exit);
        }
        let _ = self.events.send(Lifecycle::Exited {
            code,
            signal: None,
            ran_for,
            out_of_memory,
            last_output: Vec::new(),
        });
        exit
    }

    /// A stdio instance's attach ended: the instance exited (with the container's exit
    /// code when its pod says it terminated), and its restart policy says what follows.
    async fn attach_ended(&mut self) {
        self.link = None;
        let Some(name) = self.pod.clone() else {
            return;
        };
        let pod = self.pods.get_opt(&name).await.ok().flatten();
        let ended = pod.as_ref().and_then(main_container).and_then(|container| {
            let state = container.state.as_ref();
            let last = container.last_state.as_ref();
            (state.and_then(|s| s.terminated.clone())).or_else(|| {
                (container.restart_count > self.seen.restarts)
                    .then(|| last.and_then(|s| s.terminated.clone()))
                    .flatten()
            })
        });
        let out_of_memory = match &ended {
            Some(ended) if ended.reason.as_deref() == Some("OOMKilled") => OutOfMemory::Reported,
            _ => OutOfMemory::No,
        };
        let exit = self.exited(ended.map(|e| e.exit_code), out_of_memory);
        tracing::info!(instance = %self.id, pod = %name, code = ?exit.code, "the attach to the instance's pod ended");
        match self
            .failures
            .record(&self.restart, Ending::Exited(exit), random_unit())
        {
            Decision::Restart { attempt, delay } => {
                self.status.lock().state = InstanceState::BackingOff;
                let _ = self.events.send(Lifecycle::BackingOff { attempt, delay });
                // The server's session state went with the attach: the next run is a new
                // pod, as a restarted local process is a new process.
                self.pod = None;
                self.explicit_restarts += 1;
                {
                    let mut status = self.status.lock();
                    status.restarts = self.restarts();
                    status.handle = None;
                }
                self.not_before = Some(Instant::now() + delay);
                if let Some(shared) = self.shared.upgrade()
                    && let Err(failed) = shared.delete_pod(&name, self.stop_grace).await
                {
                    tracing::warn!(instance = %self.id, action = %failed.action, error = %failed.message, "cannot delete the pod of an ended attach");
                }
            }
            Decision::GiveUp { failures } => {
                self.status.lock().state = InstanceState::CrashLooping;
                let _ = self.events.send(Lifecycle::CrashLooping { failures });
            }
            // Exited, as the policy says; `stop` deletes the pod.
            Decision::Stay => {}
        }
    }

    fn restarts(&self) -> u32 {
        u32::try_from(self.seen.restarts).unwrap_or(0) + self.explicit_restarts
    }

    /// Claims a pod for an instance whose pod went (restarted, or deleted by someone):
    /// once per poll, quietly until one is there.
    async fn reclaim(&mut self) {
        let Some(shared) = self.shared.upgrade() else {
            return;
        };
        let mut seen = String::new();
        match shared.claim_once(&self.id, &self.revision, &mut seen).await {
            Ok(Some(pod)) => {
                let reach = match shared.reach(self.io, &pod).await {
                    Ok(reach) => reach,
                    Err(failed) => {
                        // Claimed but unusable: it goes, the next poll claims another.
                        tracing::warn!(instance = %self.id, action = %failed.action, error = %failed.message, "cannot reach a claimed pod");
                        let name = pod.metadata.name.clone().unwrap_or_default();
                        let _ = shared.delete_pod(&name, self.stop_grace).await;
                        self.status.lock().state = InstanceState::Starting;
                        return;
                    }
                };
                let restarts = self.restarts();
                self.link = reach.link;
                self.not_before = None;
                self.running(&pod, reach.reach);
                // The new pod's own count starts again; the instance's does not.
                self.explicit_restarts =
                    restarts.saturating_sub(u32::try_from(self.seen.restarts).unwrap_or(0));
                self.status.lock().restarts = restarts;
            }
            Ok(None) => self.status.lock().state = InstanceState::Starting,
            Err(failed) => {
                tracing::warn!(instance = %self.id, action = %failed.action, error = %failed.message, "cannot claim a pod");
            }
        }
    }

    /// [`Runtime::restart`]: the pod goes, its replacement is claimed at the next polls.
    async fn replace(&mut self) -> Result<(), RuntimeError> {
        let Some(shared) = self.shared.upgrade() else {
            return Ok(());
        };
        // An operator's decision to try again: no backoff, no failures remembered.
        // The attach or forward is to the pod that goes; the next one's is opened when it
        // is claimed.
        self.link = None;
        self.failures.reset();
        self.not_before = None;
        if let Some(name) = self.pod.take() {
            shared
                .delete_pod(&name, self.stop_grace)
                .await
                .map_err(|failed| failed.runtime(&self.id))?;
            self.exited(None, OutOfMemory::No);
        }
        self.explicit_restarts += 1;
        {
            let mut status = self.status.lock();
            status.restarts = self.restarts();
            status.state = InstanceState::Starting;
            status.handle = None;
        }
        self.reclaim().await;
        Ok(())
    }

    /// [`Runtime::stop`]: the pod leaves the Deployment, which shrinks by one (or goes with
    /// the revision's last instance), and is gone before this returns.
    async fn stop(&mut self) -> Result<(), RuntimeError> {
        self.status.lock().state = InstanceState::Stopping;
        // The container's stdin stays open without an attach (`stdinOnce: false`): the
        // pod's deletion, with its grace period, is what stops the server.
        self.link = None;
        let Some(shared) = self.shared.upgrade() else {
            return Ok(());
        };
        let mut first_error = None;
        if let Some(name) = &self.pod {
            // So that the scale-down takes exactly this pod.
            let cost = json!({ "metadata": { "annotations": { POD_DELETION_COST: "-1000" } } });
            match (self.pods)
                .patch(name, &PatchParams::default(), &Patch::Merge(&cost))
                .await
            {
                Ok(_) => {}
                Err(e) if is_status(&e, 404) => {}
                Err(e) => {
                    first_error.get_or_insert(Failed::new(
                        format!("set the deletion cost of pod {}/{name}", shared.namespace),
                        &e,
                    ));
                }
            }
        }
        if let Err(failed) = shared.scale(&self.revision).await {
            first_error.get_or_insert(failed);
        }
        if let Some(name) = self.pod.take() {
            match shared.delete_pod(&name, self.stop_grace).await {
                Ok(()) => {
                    self.exited(None, OutOfMemory::No);
                }
                Err(failed) => {
                    first_error.get_or_insert(failed);
                }
            }
        }
        {
            let mut status = self.status.lock();
            status.state = InstanceState::Stopped;
            status.handle = None;
        }
        // Forgotten last, so that a second stop meanwhile waits for this one.
        shared.forget(&self.id);
        let _ = self.events.send(Lifecycle::Stopped);
        match first_error {
            Some(failed) => Err(failed.runtime(&self.id)),
            None => Ok(()),
        }
    }
}

impl Runtime for KubeRuntime {
    async fn start(&self, spec: InstanceSpec) -> Result<Instance, StartError> {
        let revision = self.revision(&spec)?;
        let reserved = self.reserve(&spec, &revision)?;
        let shared = &self.shared;
        // Whether the API server refused the apply of the replica asked for.
        let mut refused = false;
        let claimed = async {
            shared.scale(&revision).await.map_err(|failed| {
                refused = failed.refused;
                failed.start(&spec.id)
            })?;
            shared.claim(&spec.id, &revision).await
        };
        let reached = async {
            let pod = claimed.await?;
            match shared.reach(spec.io, &pod).await {
                Ok(reach) => Ok((pod, reach)),
                Err(failed) => {
                    // Claimed but unusable: it goes, and the ReplicaSet makes another.
                    let name = pod.metadata.name.clone().unwrap_or_default();
                    if let Err(deleted) = shared.delete_pod(&name, spec.stop_grace).await {
                        tracing::warn!(instance = %spec.id, action = %deleted.action, error = %deleted.message, "cannot delete a pod that could not be attached to");
                    }
                    Err(failed.start(&spec.id))
                }
            }
        };
        match reached.await {
            Ok((pod, reach)) => Ok(self.supervise(&spec, revision, reserved, &pod, reach)),
            Err(e) => {
                // Nothing keeps running: the replica asked for goes again — unless the API
                // server refused to add it. Then nothing changed, and a Deployment of that
                // name that another field manager owns is not mcpfleet's to scale or delete.
                shared.forget(&spec.id);
                if refused {
                    return Err(e);
                }
                if let Err(failed) = shared.scale(&revision).await {
                    tracing::warn!(instance = %spec.id, action = %failed.action, error = %failed.message, "cannot scale back down after a failed start");
                }
                Err(e)
            }
        }
    }

    async fn stop(&self, id: &InstanceId) -> Result<(), RuntimeError> {
        let handle = (self.shared.instances.lock().get(id))
            .map(|entry| (entry.control.clone(), entry.done.clone()));
        let Some((control, mut done)) = handle else {
            return Ok(());
        };
        let (reply, stopped) = oneshot::channel();
        if control.send(Control::Stop(reply)).is_ok()
            && let Ok(result) = stopped.await
        {
            return result;
        }
        // Already stopping: the first stop's supervisor answers that one; this waits.
        let _ = done.wait_for(|done| *done).await;
        Ok(())
    }

    async fn restart(&self, id: &InstanceId) -> Result<(), RuntimeError> {
        let control = (self.shared.instances.lock().get(id)).map(|entry| entry.control.clone());
        let Some(control) = control else {
            return Err(RuntimeError::NotFound { id: id.clone() });
        };
        let (reply, restarted) = oneshot::channel();
        if control.send(Control::Restart(reply)).is_err() {
            return Err(RuntimeError::Stopping { id: id.clone() });
        }
        restarted
            .await
            .unwrap_or_else(|_| Err(RuntimeError::Stopping { id: id.clone() }))
    }

    fn statuses(&self) -> Vec<InstanceStatus> {
        (self.shared.instances.lock().values())
            .map(|entry| entry.status.lock().clone())
            .collect()
    }

    /// A pod's log goes with the pod; there is nothing of it to delete.
    async fn discard_logs(&self, _id: &InstanceId) {}

    async fn discover(&self) -> Vec<Discovered> {
        let pods = match self.shared.claimed_pods().await {
            Ok(pods) => pods,
            Err(e) => {
                tracing::warn!(error = %e, "cannot list the fleet's pods to find leftovers");
                return Vec::new();
            }
        };
        let supervised: HashSet<InstanceId> =
            self.shared.instances.lock().keys().cloned().collect();
        let mut found: Vec<Discovered> = pods
            .iter()
            .filter_map(|pod| {
                let id = InstanceId::from(label(pod, LABEL_INSTANCE)?);
                if supervised.contains(&id) {
                    return None;
                }
                Some(Discovered {
                    id,
                    server: label(pod, LABEL_SERVER).unwrap_or_default().to_owned(),
                    revision: (label(pod, LABEL_REVISION))
                        .and_then(|r| r.parse().ok())
                        .unwrap_or_default(),
                    handle: InstanceHandle::Pod {
                        name: pod.metadata.name.clone().unwrap_or_default(),
                    },
                    adoptable: claimable(pod) && !keeps_stdin_open(pod),
                })
            })
            .collect();
        found.sort_by(|a, b| a.id.cmp(&b.id));
        found
    }

    async fn adopt(&self, spec: InstanceSpec) -> Result<Instance, StartError> {
        let revision = self.revision(&spec)?;
        let not_adoptable = |why: String| StartError::NotAdoptable {
            id: spec.id.clone(),
            why,
        };
        if spec.io == InstanceIo::Stdio {
            return Err(not_adoptable(STDIO_NOT_ADOPTABLE.into()));
        }
        let labels = format!("{},{LABEL_INSTANCE}={}", revision.selector, spec.id);
        let pods = (self.shared.pods())
            .list(&ListParams::default().labels(&labels))
            .await
            .map_err(|e| Failed::new("list the instance's pod", &e).start(&spec.id))?
            .items;
        let Some(pod) = pods.iter().find(|pod| claimable(pod)) else {
            return Err(not_adoptable(if pods.is_empty() {
                format!(
                    "no pod of Deployment {} carries its instance label",
                    revision.name
                )
            } else {
                format!(
                    "its pod is not running and ready ({})",
                    describe_pods(&pods)
                )
            }));
        };
        let reach =
            (self.shared.reach(spec.io, pod).await).map_err(|failed| failed.start(&spec.id))?;
        let reserved = self.reserve(&spec, &revision)?;
        Ok(self.supervise(&spec, revision, reserved, pod, reach))
    }

    /// Deletes the fleet's claimed pods no instance here runs and `spare` does not name,
    /// and the fleet's Deployments none of the remaining claimed pods belongs to (their
    /// unclaimed pods go with them). A deleted pod of a Deployment that stays is replaced
    /// by its ReplicaSet with an unclaimed one, which the next start of that revision
    /// takes; the next apply of the revision sets its replica count right.
    async fn reap_leftovers(&self, spare: &HashSet<InstanceId>) -> Vec<Reaped> {
        let shared = &self.shared;
        // The Deployments of supervised instances stay even while an instance has no pod
        // claimed (between an ended attach and its fresh pod): deleting one would leave the
        // instance nothing to claim.
        let (supervised, in_use): (HashSet<InstanceId>, HashSet<String>) = {
            let instances = shared.instances.lock();
            (
                instances.keys().cloned().collect(),
                instances
                    .values()
                    .map(|e| e.revision.name.clone())
                    .collect(),
            )
        };
        let pods = match shared.claimed_pods().await {
            Ok(pods) => pods,
            Err(e) => {
                tracing::warn!(error = %e, "cannot list the fleet's pods to reap leftovers");
                return Vec::new();
            }
        };
        let mut reaped = Vec::new();
        let mut kept = Vec::new();
        for pod in pods {
            let id = label(&pod, LABEL_INSTANCE).map(InstanceId::from);
            if id
                .as_ref()
                .is_some_and(|id| supervised.contains(id) || spare.contains(id))
            {
                kept.push(pod);
                continue;
            }
            let name = pod.metadata.name.clone().unwrap_or_default();
            match shared.delete_pod(&name, Duration::from_secs(30)).await {
                Ok(()) => reaped.push(Reaped {
                    record: format!("pod {}/{name}", shared.namespace),
                    id,
                    outcome: STOPPED,
                }),
                // Still there, so not reaped: the next reap tries again.
                Err(failed) => {
                    tracing::warn!(action = %failed.action, error = %failed.message, "cannot reap a leftover pod");
                }
            }
        }
        // The servers' Deployments only: the control plane's own (in a cluster, the
        // rendered `mcpfleet`) carries the fleet's label too, and is no leftover.
        let fleet_deployments = format!("{LABEL_FLEET}={},{LABEL_SERVER}", shared.fleet);
        let deployments = match (shared.deployments())
            .list(&ListParams::default().labels(&fleet_deployments))
            .await
        {
            Ok(list) => list.items,
            Err(e) => {
                tracing::warn!(error = %e, "cannot list the fleet's Deployments to reap leftovers");
                return reaped;
            }
        };
        for deployment in deployments {
            let selector = (deployment.spec.as_ref())
                .and_then(|spec| spec.selector.match_labels.clone())
                .unwrap_or_default();
            let selects = |pod: &Pod| {
                let labels = pod.metadata.labels.clone().unwrap_or_default();
                selector.iter().all(|(k, v)| labels.get(k) == Some(v))
            };
            let name = deployment.metadata.name.clone().unwrap_or_default();
            if selector.is_empty() || in_use.contains(&name) || kept.iter().any(selects) {
                continue;
            }
            let outcome = match (shared.deployments())
                .delete(&name, &DeleteParams::background())
                .await
            {
                Ok(_) => STOPPED,
                Err(e) if is_status(&e, 404) => ReapOutcome::Gone,
                Err(e) => {
                    tracing::warn!(deployment = %name, error = %e, "cannot reap a leftover Deployment");
                    continue;
                }
            };
            reaped.push(Reaped {
                record: format!("Deployment {}/{name}", shared.namespace),
                id: None,
                outcome,
            });
        }
        reaped
    }

    /// The log of the instance's pod (`pods/log`), and with `follow`, of each pod it runs
    /// in after a restart. A pod's log goes with the pod: a stopped instance has none.
    fn logs(&self, id: &InstanceId, lines: usize, follow: bool) -> BoxStream<'static, String> {
        let (tx, rx) = mpsc::unbounded_channel();
        let shared = Arc::downgrade(&self.shared);
        let id = id.clone();
        tokio::spawn(async move {
            let mut tail = Some(i64::try_from(lines).unwrap_or(i64::MAX));
            let mut previous: Option<String> = None;
            loop {
                let Some(shared) = shared.upgrade() else {
                    return;
                };
                let pod = match current_pod(&shared, &id).await {
                    Some(Some(pod)) => pod,
                    // Between pods (a restart): the next one's log follows.
                    Some(None) if follow => {
                        tokio::time::sleep(shared.settings.poll_interval).await;
                        continue;
                    }
                    _ => {
                        if previous.is_none() {
                            let _ = tx.send(format!(
                                "(no pod runs instance {id}: a pod's log goes with the pod)"
                            ));
                        }
                        return;
                    }
                };
                if previous.as_ref() == Some(&pod) {
                    // Still the same pod whose log ended: wait for its replacement.
                    tokio::time::sleep(shared.settings.poll_interval).await;
                    continue;
                }
                let params = LogParams {
                    follow,
                    tail_lines: tail.take(),
                    ..LogParams::default()
                };
                let pods = shared.pods();
                drop(shared);
                match pods.log_stream(&pod, &params).await {
                    Ok(stream) => {
                        let mut lines = Box::pin(stream.lines());
                        while let Some(line) = lines.next().await {
                            let Ok(line) = line else { break };
                            if tx.send(line).is_err() {
                                return;
                            }
                        }
                    }
                    Err(e) => {
                        let _ = tx.send(format!("(cannot read the log of pod {pod}: {e})"));
                        return;
                    }
                }
                if !follow {
                    return;
                }
                previous = Some(pod);
            }
        });
        futures::stream::unfold(rx, |mut rx| async move {
            let line = rx.recv().await?;
            Some((line, rx))
        })
        .boxed()
    }
}

/// The pod instance `id` runs in: the one its supervisor claimed (`Some(None)` between
/// two), or, for an instance an earlier control plane left, the pod labelled with it;
/// `None` when no pod runs it.
async fn current_pod(shared: &Shared, id: &InstanceId) -> Option<Option<String>> {
    let supervised =
        (shared.instances.lock().get(id)).map(|entry| entry.status.lock().handle.clone());
    match supervised {
        Some(Some(InstanceHandle::Pod { name })) => Some(Some(name)),
        Some(_) => Some(None),
        None => {
            let labels = format!("{LABEL_FLEET}={},{LABEL_INSTANCE}={id}", shared.fleet);
            let pods = (shared.pods())
                .list(&ListParams::default().labels(&labels))
                .await
                .ok()?;
            Some(Some(pods.items.first()?.metadata.name.clone()?))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn instance_ids_must_be_label_values() {
        assert_eq!(label_value_problem("web-r3-1"), None);
        assert!(label_value_problem(&"a".repeat(64)).is_some());
        assert!(label_value_problem("web-").is_some());
        assert!(label_value_problem("web r3").is_some());
    }
}
