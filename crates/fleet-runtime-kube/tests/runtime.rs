//! The Kubernetes runtime against fleet-testkit's fake API server (an in-process HTTP
//! server with a ReplicaSet controller; the test plays the kubelet). Tests are named
//! `mock_…`: no real API server runs here.

use std::collections::HashSet;
use std::net::SocketAddr;
use std::time::Duration;

use fleet_runtime::{
    InstanceHandle, InstanceId, InstanceIo, InstanceSpec, InstanceState, Launch, Lifecycle,
    OutOfMemory, PodLaunch, Reach, ReapOutcome, Runtime, RuntimeError, StartError,
};
use fleet_runtime_kube::runtime::{LABEL_INSTANCE, POD_DELETION_COST};
use fleet_runtime_kube::{Cluster, KubeRuntime, KubeSettings};
use fleet_spec::model::PodReach;
use fleet_testkit::kube::{FakeApi, hardened_violations};
use futures::StreamExt as _;
use serde_json::Value;
use tokio::io::{AsyncBufReadExt as _, AsyncWriteExt as _, BufReader};
use tokio::sync::mpsc::UnboundedReceiver;

const NAMESPACE: &str = "mcp-tools";
const SECRET_VALUE: &str = "s3cr3t-api-key-value";

/// An http image server with a secret file: the pod template must reference the secret's
/// Kubernetes Secret and never hold its value.
const FLEET: &str = r#"
version: 1
name: tools
runtime: kubernetes
kubernetes: { namespace: mcp-tools }
secrets:
  api_key:
    env: MCPFLEET_KUBE_RUNTIME_TEST_KEY
    kubernetes: { secret: search-keys, key: api }
servers:
  search:
    http:
      image: registry.example/search:1.2
      port: 8080
      path: /mcp
      args: ["--port", "{{ port }}"]
    container:
      user: "1000:1000"
      resources: { cpus: 0.5, memory: 256Mi }
      secrets: { /run/secrets/api_key: api_key }
"#;

fn fleet() -> fleet_spec::ValidFleet {
    fleet_spec::load_str(
        "fleet.yaml",
        FLEET,
        "/fleet".into(),
        &fleet_spec::LoadOptions::default(),
    )
    .into_valid()
    .unwrap_or_else(|errors| panic!("{errors:#?}"))
}

/// Instance `id` of revision `revision` of `search`, started by deployment 7: what the
/// engine will hand the runtime (the Deployment rendered by fleet-manifests, no values).
fn spec(id: &str, revision: u64) -> InstanceSpec {
    let fleet = fleet();
    let options = fleet_manifests::Options {
        fleet_file: FLEET.to_owned(),
        deployment: Some(7),
    };
    let deployment = fleet_manifests::revision_deployment(&fleet, "search", revision, &options)
        .unwrap_or_else(|e| panic!("{e}"));
    InstanceSpec {
        id: InstanceId::from(id),
        server: "search".into(),
        revision,
        launch: Launch::Pod(PodLaunch { deployment }),
        args: Vec::new(),
        env: Vec::new(),
        io: InstanceIo::Listen { port: 8080 },
        restart: fleet.server("search").unwrap().restart.clone(),
        stop_grace: Duration::from_secs(5),
        deployment: Some(7),
    }
}

fn settings() -> KubeSettings {
    KubeSettings {
        ready_timeout: Duration::from_secs(5),
        poll_interval: Duration::from_millis(20),
        reach: PodReach::PodIp,
    }
}

async fn runtime(api: &FakeApi) -> KubeRuntime {
    let config = kube::Config::new(api.url().parse().unwrap());
    let client = kube::Client::try_from(config).unwrap();
    KubeRuntime::new(
        Cluster::from_client(client, api.url()),
        "tools",
        NAMESPACE,
        settings(),
    )
}

/// The next event, within a deadline.
async fn next(events: &mut UnboundedReceiver<Lifecycle>) -> Lifecycle {
    tokio::time::timeout(Duration::from_secs(10), events.recv())
        .await
        .expect("an event within 10 s")
        .expect("the events channel is open")
}

/// The pod and address of a `Running` event.
fn running(event: Lifecycle) -> (String, Option<SocketAddr>) {
    match event {
        Lifecycle::Running {
            reach,
            handle: InstanceHandle::Pod { name },
        } => (
            name,
            match reach {
                Reach::Address(address) => Some(address),
                _ => None,
            },
        ),
        other => panic!("expected Running in a pod, got {other:?}"),
    }
}

fn label<'a>(object: &'a Value, key: &str) -> Option<&'a str> {
    object.pointer("/metadata/labels")?.get(key)?.as_str()
}

fn replicas(api: &FakeApi, deployment: &str) -> Option<u64> {
    api.deployment(NAMESPACE, deployment)?
        .pointer("/spec/replicas")?
        .as_u64()
}

fn pod_names(api: &FakeApi) -> Vec<String> {
    (api.pods(NAMESPACE).iter())
        .filter_map(|pod| pod.pointer("/metadata/name")?.as_str().map(str::to_owned))
        .collect()
}

#[tokio::test]
async fn mock_start_applies_the_revisions_deployment_and_reports_the_claimed_pods_address() {
    let api = FakeApi::start().await;
    let runtime = runtime(&api).await;
    let mut instance = runtime.start(spec("search-r3-1", 3)).await.unwrap();
    let (pod_name, address) = running(next(&mut instance.events).await);

    let applies = api.applies();
    assert_eq!(applies.len(), 1, "{applies:#?}");
    let applied = &applies[0];
    assert_eq!(
        (applied.name.as_str(), applied.namespace.as_str()),
        ("search-r3", NAMESPACE)
    );
    assert_eq!(applied.field_manager, "mcpfleet");
    assert!(!applied.force, "mcpfleet never forces an apply");
    let body = &applied.body;
    assert_eq!(body.pointer("/spec/replicas"), Some(&1.into()));
    let selector = body.pointer("/spec/selector/matchLabels").unwrap();
    assert_eq!(
        selector,
        &serde_json::json!({
            "mcpfleet.io/fleet": "tools", "mcpfleet.io/server": "search", "mcpfleet.io/revision": "3",
        })
    );
    assert_eq!(
        body.pointer("/metadata/annotations/mcpfleet.io~1deployment"),
        Some(&"7".into())
    );
    assert_eq!(
        label(body, "mcpfleet.io/revision"),
        Some("3"),
        "the Deployment's labels name the revision"
    );
    let violations = hardened_violations(body);
    assert!(violations.is_empty(), "{violations:#?}");
    let volumes = body.pointer("/spec/template/spec/volumes").unwrap();
    assert!(
        volumes
            .to_string()
            .contains(r#""secretName":"search-keys""#),
        "the secret file is a secret volume: {volumes}"
    );
    assert!(!body.to_string().contains(SECRET_VALUE));

    let pod = api
        .pod(NAMESPACE, &pod_name)
        .expect("the claimed pod exists");
    assert_eq!(label(&pod, LABEL_INSTANCE), Some("search-r3-1"));
    let ip = pod.pointer("/status/podIP").unwrap().as_str().unwrap();
    assert_eq!(address, Some(format!("{ip}:8080").parse().unwrap()));
    let statuses = runtime.statuses();
    assert_eq!(statuses.len(), 1);
    assert_eq!(statuses[0].state, InstanceState::Running);
    assert_eq!(
        statuses[0].handle,
        Some(InstanceHandle::Pod { name: pod_name })
    );
}

#[tokio::test]
async fn mock_two_starts_claim_two_distinct_pods() {
    let api = FakeApi::start().await;
    let runtime = runtime(&api).await;
    let (one, two) = tokio::join!(
        runtime.start(spec("search-r3-1", 3)),
        runtime.start(spec("search-r3-2", 3))
    );
    let (mut one, mut two) = (one.unwrap(), two.unwrap());
    let (pod_one, _) = running(next(&mut one.events).await);
    let (pod_two, _) = running(next(&mut two.events).await);
    assert_ne!(pod_one, pod_two);
    assert_eq!(replicas(&api, "search-r3"), Some(2));
    let claimed =
        |pod: &str| label(&api.pod(NAMESPACE, pod).unwrap(), LABEL_INSTANCE).map(str::to_owned);
    assert_eq!(claimed(&pod_one).as_deref(), Some("search-r3-1"));
    assert_eq!(claimed(&pod_two).as_deref(), Some("search-r3-2"));
}

#[tokio::test]
async fn mock_two_claims_of_one_pod_leave_it_to_one_instance() {
    let api = FakeApi::start().await;
    api.hold_new_pods(true);
    // Both starts read the one ready pod and patch it before either patch lands.
    api.delay_pod_patches(Duration::from_millis(300));
    let runtime = runtime(&api).await;
    let kubelet = async {
        let pods = wait_for(|| (pod_names(&api).len() == 2).then(|| pod_names(&api))).await;
        api.set_ready(NAMESPACE, &pods[0]);
        wait_for(|| label(&api.pod(NAMESPACE, &pods[0])?, LABEL_INSTANCE).map(drop)).await;
        api.set_ready(NAMESPACE, &pods[1]);
    };
    let (one, two, ()) = tokio::join!(
        runtime.start(spec("search-r3-1", 3)),
        runtime.start(spec("search-r3-2", 3)),
        kubelet
    );
    let (mut one, mut two) = (one.unwrap(), two.unwrap());
    let (pod_one, _) = running(next(&mut one.events).await);
    let (pod_two, _) = running(next(&mut two.events).await);
    assert_ne!(pod_one, pod_two, "one pod claimed by two instances");
    let claimed =
        |pod: &str| label(&api.pod(NAMESPACE, pod).unwrap(), LABEL_INSTANCE).map(str::to_owned);
    assert_eq!(claimed(&pod_one).as_deref(), Some("search-r3-1"));
    assert_eq!(claimed(&pod_two).as_deref(), Some("search-r3-2"));
}

/// `found()`'s value once it has one, within 10 s.
async fn wait_for<T>(mut found: impl FnMut() -> Option<T>) -> T {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        if let Some(value) = found() {
            return value;
        }
        assert!(tokio::time::Instant::now() < deadline, "not within 10 s");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

#[tokio::test]
async fn mock_stop_removes_exactly_that_pod_and_scales_down() {
    let api = FakeApi::start().await;
    let runtime = runtime(&api).await;
    let mut first = runtime.start(spec("search-r3-1", 3)).await.unwrap();
    let (first_pod, _) = running(next(&mut first.events).await);
    let mut second = runtime.start(spec("search-r3-2", 3)).await.unwrap();
    let (second_pod, _) = running(next(&mut second.events).await);

    // The first pod is the older: a ReplicaSet left to itself would remove the newer one.
    runtime.stop(&"search-r3-1".into()).await.unwrap();
    assert_eq!(pod_names(&api), vec![second_pod.clone()]);
    assert_eq!(replicas(&api, "search-r3"), Some(1));
    let second = api.pod(NAMESPACE, &second_pod).unwrap();
    assert_eq!(label(&second, LABEL_INSTANCE), Some("search-r3-2"));
    assert!(
        second
            .pointer("/metadata/annotations")
            .and_then(|a| a.get(POD_DELETION_COST))
            .is_none(),
        "only the stopped pod is marked for deletion"
    );
    assert!(matches!(
        next(&mut first.events).await,
        Lifecycle::Exited { .. }
    ));
    assert!(matches!(next(&mut first.events).await, Lifecycle::Stopped));
    assert!(!pod_names(&api).contains(&first_pod));
    let ids: Vec<String> = (runtime.statuses().iter())
        .map(|s| s.id.to_string())
        .collect();
    assert_eq!(ids, ["search-r3-2"]);
    // Stopping again, or an id never started, is done at once.
    runtime.stop(&"search-r3-1".into()).await.unwrap();
}

#[tokio::test]
async fn mock_the_last_stop_deletes_the_deployment() {
    let api = FakeApi::start().await;
    let runtime = runtime(&api).await;
    let mut old = runtime.start(spec("search-r3-1", 3)).await.unwrap();
    running(next(&mut old.events).await);
    let mut new = runtime.start(spec("search-r4-1", 4)).await.unwrap();
    running(next(&mut new.events).await);
    assert_eq!(api.deployment_names(NAMESPACE), ["search-r3", "search-r4"]);

    runtime.stop(&"search-r3-1".into()).await.unwrap();
    assert_eq!(api.deployment_names(NAMESPACE), ["search-r4"]);
    assert_eq!(pod_names(&api).len(), 1);
    runtime.stop(&"search-r4-1".into()).await.unwrap();
    assert!(api.deployment_names(NAMESPACE).is_empty());
    assert!(pod_names(&api).is_empty());
}

#[tokio::test]
async fn mock_an_oom_killed_container_is_an_exit_out_of_memory() {
    let api = FakeApi::start().await;
    let runtime = runtime(&api).await;
    let mut instance = runtime.start(spec("search-r3-1", 3)).await.unwrap();
    let (pod, address) = running(next(&mut instance.events).await);

    api.kill_container(NAMESPACE, &pod, 137, "OOMKilled");
    match next(&mut instance.events).await {
        Lifecycle::Exited {
            code,
            out_of_memory,
            ..
        } => {
            assert_eq!(code, Some(137));
            assert_eq!(out_of_memory, OutOfMemory::Reported);
        }
        other => panic!("expected Exited, got {other:?}"),
    }
    assert!(matches!(
        next(&mut instance.events).await,
        Lifecycle::BackingOff { attempt: 1, .. }
    ));
    // The kubelet started the container again in the same pod.
    assert_eq!(running(next(&mut instance.events).await), (pod, address));
    let status = &runtime.statuses()[0];
    assert_eq!(status.restarts, 1);
    let exit = status.last_exit.unwrap();
    assert_eq!(
        (exit.code, exit.out_of_memory),
        (Some(137), OutOfMemory::Reported)
    );
}

#[tokio::test]
async fn mock_crash_loop_back_off_is_crash_looping_until_the_container_recovers() {
    let api = FakeApi::start().await;
    let runtime = runtime(&api).await;
    let mut instance = runtime.start(spec("search-r3-1", 3)).await.unwrap();
    let (pod, _) = running(next(&mut instance.events).await);

    api.crash_loop(NAMESPACE, &pod, 1, "Error");
    assert!(matches!(
        next(&mut instance.events).await,
        Lifecycle::Exited {
            code: Some(1),
            out_of_memory: OutOfMemory::No,
            ..
        }
    ));
    assert!(matches!(
        next(&mut instance.events).await,
        Lifecycle::BackingOff { .. }
    ));
    assert!(matches!(
        next(&mut instance.events).await,
        Lifecycle::CrashLooping { failures: 1 }
    ));
    assert_eq!(runtime.statuses()[0].state, InstanceState::CrashLooping);
    // The kubelet keeps trying; when a start sticks, the instance runs again.
    api.set_ready(NAMESPACE, &pod);
    assert_eq!(running(next(&mut instance.events).await).0, pod);
    assert_eq!(runtime.statuses()[0].state, InstanceState::Running);
}

#[tokio::test]
async fn mock_restart_claims_a_fresh_pod_for_the_same_id() {
    let api = FakeApi::start().await;
    let runtime = runtime(&api).await;
    let mut instance = runtime.start(spec("search-r3-1", 3)).await.unwrap();
    let (old_pod, _) = running(next(&mut instance.events).await);

    runtime.restart(&"search-r3-1".into()).await.unwrap();
    assert!(
        api.pod(NAMESPACE, &old_pod).is_none(),
        "restart returns once the old pod is gone"
    );
    assert!(matches!(
        next(&mut instance.events).await,
        Lifecycle::Exited { .. }
    ));
    let (new_pod, _) = running(next(&mut instance.events).await);
    assert_ne!(new_pod, old_pod);
    let claimed = api.pod(NAMESPACE, &new_pod).unwrap();
    assert_eq!(label(&claimed, LABEL_INSTANCE), Some("search-r3-1"));
    assert_eq!(replicas(&api, "search-r3"), Some(1));
    let status = &runtime.statuses()[0];
    assert_eq!(status.restarts, 1);
    assert_eq!(status.handle, Some(InstanceHandle::Pod { name: new_pod }));
    assert!(matches!(
        runtime.restart(&"search-r9-1".into()).await,
        Err(RuntimeError::NotFound { .. })
    ));
}

#[tokio::test]
async fn mock_a_new_control_plane_discovers_and_adopts_its_pods_from_labels() {
    let api = FakeApi::start().await;
    let before = runtime(&api).await;
    let mut instance = before.start(spec("search-r3-1", 3)).await.unwrap();
    let (pod, address) = running(next(&mut instance.events).await);
    let mut unready = before.start(spec("search-r3-2", 3)).await.unwrap();
    let (unready_pod, _) = running(next(&mut unready.events).await);
    // The control plane is killed: its runtime goes, the pods stay.
    drop(before);
    api.crash_loop(NAMESPACE, &unready_pod, 1, "Error");

    let after = runtime(&api).await;
    let found = after.discover().await;
    let summary: Vec<(String, u64, bool)> = (found.iter())
        .map(|d| (d.id.to_string(), d.revision, d.adoptable))
        .collect();
    assert_eq!(
        summary,
        [
            ("search-r3-1".to_owned(), 3, true),
            ("search-r3-2".to_owned(), 3, false)
        ]
    );
    assert_eq!(found[0].handle, InstanceHandle::Pod { name: pod.clone() });

    let mut adopted = after.adopt(spec("search-r3-1", 3)).await.unwrap();
    assert_eq!(
        running(next(&mut adopted.events).await),
        (pod.clone(), address)
    );
    assert!(matches!(
        after.adopt(spec("search-r3-2", 3)).await,
        Err(StartError::NotAdoptable { .. })
    ));
    assert!(matches!(
        after.adopt(spec("search-r4-1", 4)).await,
        Err(StartError::NotAdoptable { .. })
    ));
    // Adopted means supervised: discover no longer lists it, its exits are reported.
    let left: Vec<String> = (after.discover().await.iter())
        .map(|d| d.id.to_string())
        .collect();
    assert_eq!(left, ["search-r3-2"]);
    api.kill_container(NAMESPACE, &pod, 2, "Error");
    assert!(matches!(
        next(&mut adopted.events).await,
        Lifecycle::Exited { code: Some(2), .. }
    ));
}

#[tokio::test]
async fn mock_reap_removes_the_pods_and_deployments_not_spared() {
    let api = FakeApi::start().await;
    let before = runtime(&api).await;
    for (id, revision) in [("search-r3-1", 3), ("search-r3-2", 3), ("search-r4-1", 4)] {
        let mut instance = before.start(spec(id, revision)).await.unwrap();
        running(next(&mut instance.events).await);
    }
    let pod_of = |id: &str| {
        (api.pods(NAMESPACE).into_iter())
            .find(|pod| label(pod, LABEL_INSTANCE) == Some(id))
            .and_then(|pod| pod.pointer("/metadata/name")?.as_str().map(str::to_owned))
    };
    let kept_pod = pod_of("search-r3-1").unwrap();
    drop(before);
    // The control plane's own Deployment (in the cluster, the rendered one) has the
    // fleet's label too.
    let control_plane: serde_json::Map<String, Value> =
        (fleet_manifests::control_plane_pods("tools").split(','))
            .filter_map(|pair| pair.split_once('='))
            .map(|(k, v)| (k.to_owned(), v.into()))
            .collect();
    api.apply_as(
        "kubectl",
        serde_json::json!({
            "apiVersion": "apps/v1",
            "kind": "Deployment",
            "metadata": { "name": "mcpfleet", "namespace": NAMESPACE, "labels": control_plane },
            "spec": {
                "replicas": 1,
                "selector": { "matchLabels": control_plane },
                "template": {
                    "metadata": { "labels": control_plane },
                    "spec": { "containers": [{ "name": "mcpfleet", "image": "registry.example/mcpfleet:1" }] },
                },
            },
        }),
    );

    let after = runtime(&api).await;
    let spare: HashSet<InstanceId> = [InstanceId::from("search-r3-1")].into();
    let mut reaped: Vec<(String, Option<String>, bool)> = (after.reap_leftovers(&spare).await)
        .into_iter()
        .map(|r| {
            let stopped = matches!(r.outcome, ReapOutcome::Stopped { .. });
            (r.record, r.id.map(|id| id.to_string()), stopped)
        })
        .collect();
    reaped.sort();
    let records: Vec<&str> = reaped
        .iter()
        .map(|(record, _, _)| record.as_str())
        .collect();
    assert!(
        records.contains(&"Deployment mcp-tools/search-r4"),
        "{reaped:#?}"
    );
    assert!(reaped.iter().all(|(_, _, stopped)| *stopped), "{reaped:#?}");
    let ids: HashSet<Option<String>> = reaped.iter().map(|(_, id, _)| id.clone()).collect();
    assert!(ids.contains(&Some("search-r3-2".to_owned())));
    assert!(ids.contains(&Some("search-r4-1".to_owned())));
    assert_eq!(
        api.deployment_names(NAMESPACE),
        ["mcpfleet", "search-r3"],
        "the control plane's own Deployment is no leftover"
    );
    assert_eq!(pod_of("search-r3-1"), Some(kept_pod));
    assert_eq!(pod_of("search-r3-2"), None);
    assert_eq!(pod_of("search-r4-1"), None);
    // Nothing is left to reap when nothing is spared but the spared one was adopted.
    let mut adopted = after.adopt(spec("search-r3-1", 3)).await.unwrap();
    running(next(&mut adopted.events).await);
    let again = after.reap_leftovers(&HashSet::new()).await;
    assert!(again.is_empty(), "{again:#?}");
}

#[tokio::test]
async fn mock_logs_are_the_pods_log_tailed_and_followed() {
    let api = FakeApi::start().await;
    let runtime = runtime(&api).await;
    let mut instance = runtime.start(spec("search-r3-1", 3)).await.unwrap();
    let (pod, _) = running(next(&mut instance.events).await);
    for line in ["one", "two", "three"] {
        api.log(NAMESPACE, &pod, line);
    }
    let id = InstanceId::from("search-r3-1");
    let tail: Vec<String> = runtime.logs(&id, 2, false).collect().await;
    assert_eq!(tail, ["two", "three"]);

    let mut follow = runtime.logs(&id, 1, true);
    let mut next_line = async || {
        tokio::time::timeout(Duration::from_secs(10), follow.next())
            .await
            .expect("a line within 10 s")
    };
    assert_eq!(next_line().await.as_deref(), Some("three"));
    api.log(NAMESPACE, &pod, "four");
    assert_eq!(next_line().await.as_deref(), Some("four"));
    // A restart does not end a followed log: the new pod's lines follow.
    runtime.restart(&id).await.unwrap();
    let (new_pod, _) = loop {
        if let Lifecycle::Running { .. } = &next(&mut instance.events).await {
            break (runtime.statuses()[0].handle.clone(), ());
        }
    };
    let Some(InstanceHandle::Pod { name: new_pod }) = new_pod else {
        panic!("no pod after the restart");
    };
    api.log(NAMESPACE, &new_pod, "five");
    assert_eq!(next_line().await.as_deref(), Some("five"));
}

#[tokio::test]
async fn mock_what_cannot_run_as_a_pod_is_refused_before_anything_is_applied() {
    let api = FakeApi::start().await;
    let runtime = runtime(&api).await;
    let mut stdio = spec("search-r3-1", 3);
    stdio.io = InstanceIo::Stdio;
    // An http server's pods keep no stdin open to attach to.
    let refused = runtime.start(stdio).await.unwrap_err();
    assert!(matches!(refused, StartError::NotAPod { .. }));
    assert!(refused.to_string().contains("`stdin: true`"), "{refused}");

    let mut with_values = spec("search-r3-1", 3);
    with_values.env = vec![("API_KEY".into(), SECRET_VALUE.into())];
    let refused = runtime.start(with_values).await.unwrap_err();
    assert!(matches!(refused, StartError::NotAPod { .. }), "{refused}");
    assert!(!refused.to_string().contains(SECRET_VALUE));

    let mut other_revision = spec("search-r3-1", 3);
    other_revision.revision = 4;
    assert!(matches!(
        runtime.start(other_revision).await,
        Err(StartError::NotAPod { .. })
    ));
    let mut process = spec("search-r3-1", 3);
    process.launch = Launch::Process {
        program: "search".into(),
        cwd: None,
    };
    assert!(matches!(
        runtime.start(process).await,
        Err(StartError::WrongRuntime { .. })
    ));
    assert!(api.applies().is_empty());
    assert!(runtime.statuses().is_empty());
}

#[tokio::test]
async fn mock_no_ready_pod_in_time_fails_the_start_and_takes_the_replica_back() {
    let api = FakeApi::start().await;
    api.hold_new_pods(true);
    let config = kube::Config::new(api.url().parse().unwrap());
    let runtime = KubeRuntime::new(
        Cluster::from_client(kube::Client::try_from(config).unwrap(), api.url()),
        "tools",
        NAMESPACE,
        KubeSettings {
            ready_timeout: Duration::from_millis(300),
            ..settings()
        },
    );
    let failed = runtime.start(spec("search-r3-1", 3)).await.unwrap_err();
    let StartError::PodNotReady {
        deployment, why, ..
    } = &failed
    else {
        panic!("expected PodNotReady, got {failed}");
    };
    assert_eq!(deployment, "search-r3");
    assert!(why.contains("Pending"), "{why}");
    assert!(
        failed
            .to_string()
            .contains("kubectl -n mcp-tools describe deployment search-r3")
    );
    // Nothing keeps running: the Deployment of the only instance went with it.
    assert!(api.deployment_names(NAMESPACE).is_empty());
    assert!(pod_names(&api).is_empty());
    assert!(runtime.statuses().is_empty());
}

/// A stdio image server, restarted after a failure at once (the policy's smallest backoff).
const STDIO_FLEET: &str = r#"
version: 1
name: tools
runtime: kubernetes
kubernetes: { namespace: mcp-tools }
servers:
  notes:
    stdio: { image: registry.example/notes:1 }
    container: { user: "1000:1000" }
    restart: { backoff: { initial: 100ms, jitter: 0 } }
"#;

/// Instance `id` of revision 1 of the stdio server `notes`, as the engine hands it over.
fn stdio_spec(id: &str) -> InstanceSpec {
    let fleet = fleet_spec::load_str(
        "fleet.yaml",
        STDIO_FLEET,
        "/fleet".into(),
        &fleet_spec::LoadOptions::default(),
    )
    .into_valid()
    .unwrap_or_else(|errors| panic!("{errors:#?}"));
    let options = fleet_manifests::Options {
        fleet_file: STDIO_FLEET.to_owned(),
        deployment: Some(1),
    };
    let deployment = fleet_manifests::revision_deployment(&fleet, "notes", 1, &options)
        .unwrap_or_else(|e| panic!("{e}"));
    InstanceSpec {
        id: InstanceId::from(id),
        server: "notes".into(),
        revision: 1,
        launch: Launch::Pod(PodLaunch { deployment }),
        args: Vec::new(),
        env: Vec::new(),
        io: InstanceIo::Stdio,
        restart: fleet.server("notes").unwrap().restart.clone(),
        stop_grace: Duration::from_secs(5),
        deployment: Some(1),
    }
}

/// The pod and attachment of a `Running` event of a stdio instance.
fn attached(event: Lifecycle) -> (String, fleet_runtime::StdioAttachment) {
    match event {
        Lifecycle::Running {
            reach: Reach::Stdio(attachment),
            handle: InstanceHandle::Pod { name },
        } => (name, attachment),
        other => panic!("expected Running over an attach, got {other:?}"),
    }
}

/// `initialize` over the attachment: the `serverInfo.name` of the server that answered.
async fn initialize(attachment: &mut fleet_runtime::StdioAttachment) -> String {
    let line = fleet_testkit::initialize_over(attachment, Duration::from_secs(10)).await;
    let answer: Value = serde_json::from_str(&line).unwrap_or_else(|e| panic!("{e}: {line}"));
    answer["result"]["serverInfo"]["name"]
        .as_str()
        .unwrap_or_else(|| panic!("{answer}"))
        .to_owned()
}

#[tokio::test]
async fn mock_a_stdio_instance_talks_mcp_over_its_pods_attach_and_a_dead_process_is_an_exit_and_a_fresh_pod()
 {
    let api = FakeApi::start().await;
    api.attach_runs(
        fleet_testkit::sample_server_binary(),
        &["--transport", "stdio", "--name", "notes-in-a-pod"],
    );
    let runtime = runtime(&api).await;
    let mut instance = runtime.start(stdio_spec("notes-r1-1")).await.unwrap();
    let (pod, mut attachment) = attached(next(&mut instance.events).await);
    assert_eq!(api.attaches(), 1);
    // Real MCP, through kube's attach and the fake's WebSocket, to the pod's process.
    assert_eq!(initialize(&mut attachment).await, "notes-in-a-pod");
    let pid = api
        .process_id(NAMESPACE, &pod)
        .expect("the pod's process runs");

    // The process dies: the attach ends, the instance exited (the kubelet's exit code),
    // and by its policy a fresh pod is attached to after the backoff.
    kill9(pid);
    match next(&mut instance.events).await {
        Lifecycle::Exited { code, .. } => assert_eq!(code, Some(137)),
        other => panic!("expected Exited, got {other:?}"),
    }
    assert!(matches!(
        next(&mut instance.events).await,
        Lifecycle::BackingOff { attempt: 1, .. }
    ));
    let (second, mut attachment) = attached(next(&mut instance.events).await);
    assert_ne!(
        second, pod,
        "the server's state went with the attach: a new pod"
    );
    assert!(
        api.pod(NAMESPACE, &pod).is_none(),
        "the old pod was deleted"
    );
    assert_eq!(initialize(&mut attachment).await, "notes-in-a-pod");
    assert_ne!(api.process_id(NAMESPACE, &second), Some(pid));
    let status = &runtime.statuses()[0];
    assert_eq!((status.state, status.restarts), (InstanceState::Running, 1));
    assert_eq!(status.last_exit.unwrap().code, Some(137));

    // A new control plane cannot take the attach over: the pod is found, not adoptable.
    let successor = self::runtime(&api).await;
    let found = successor.discover().await;
    assert_eq!(found.len(), 1);
    assert!(!found[0].adoptable, "{found:?}");
    let refused = successor.adopt(stdio_spec("notes-r1-1")).await.unwrap_err();
    assert!(
        matches!(refused, StartError::NotAdoptable { .. }),
        "{refused}"
    );
    drop(successor);

    // Stopping deletes the pod, and its process with it.
    runtime.stop(&InstanceId::from("notes-r1-1")).await.unwrap();
    assert!(pod_names(&api).is_empty());
    wait_for(|| api.process_id(NAMESPACE, &second).is_none().then_some(())).await;
}

#[tokio::test]
async fn mock_a_reap_while_a_stdio_instance_waits_for_its_fresh_pod_keeps_its_deployment() {
    // What the control plane does after its first deployment (reap, sparing nothing) can
    // come while an instance is between pods: its attach ended, its pod deleted, its
    // backoff not over. The instance's Deployment must stay, or it has nothing to claim.
    let api = FakeApi::start().await;
    api.attach_runs(
        fleet_testkit::sample_server_binary(),
        &["--transport", "stdio", "--name", "notes-in-a-pod"],
    );
    let runtime = runtime(&api).await;
    let mut spec = stdio_spec("notes-r1-1");
    // Long enough that the instance is surely still between pods when the reap runs.
    spec.restart.backoff_initial = Duration::from_secs(60);
    spec.restart.backoff_max = Duration::from_secs(60);
    let mut instance = runtime.start(spec).await.unwrap();
    let (pod, _attachment) = attached(next(&mut instance.events).await);
    let pid = api
        .process_id(NAMESPACE, &pod)
        .expect("the pod's process runs");
    kill9(pid);
    assert!(matches!(
        next(&mut instance.events).await,
        Lifecycle::Exited { .. }
    ));
    assert!(matches!(
        next(&mut instance.events).await,
        Lifecycle::BackingOff { attempt: 1, .. }
    ));
    wait_for(|| api.pod(NAMESPACE, &pod).is_none().then_some(())).await;

    let reaped = runtime.reap_leftovers(&HashSet::new()).await;
    assert!(reaped.is_empty(), "{reaped:?}");
    assert_eq!(replicas(&api, "notes-r1"), Some(1), "the Deployment stays");
    runtime.stop(&InstanceId::from("notes-r1-1")).await.unwrap();
}

/// A server on a free port of loopback, playing what an http pod's container serves: it
/// answers each line with `pod: LINE`. The fake API server forwards a pod's port to
/// loopback's.
async fn line_server() -> (u16, tokio::task::JoinHandle<()>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let task = tokio::spawn(async move {
        loop {
            let (socket, _) = listener.accept().await.unwrap();
            tokio::spawn(async move {
                let (read, mut write) = socket.into_split();
                let mut lines = BufReader::new(read).lines();
                while let Ok(Some(line)) = lines.next_line().await {
                    if write
                        .write_all(format!("pod: {line}\n").as_bytes())
                        .await
                        .is_err()
                    {
                        return;
                    }
                }
            });
        }
    });
    (port, task)
}

/// `line` sent to `address`; the answer, or `None` when the connection closed first.
async fn ask(address: SocketAddr, line: &str) -> Option<String> {
    let socket = tokio::net::TcpStream::connect(address).await.unwrap();
    let (read, mut write) = socket.into_split();
    write.write_all(format!("{line}\n").as_bytes()).await.ok()?;
    let answer = tokio::time::timeout(
        Duration::from_secs(10),
        BufReader::new(read).lines().next_line(),
    )
    .await
    .expect("an answer or a close within 10 s");
    answer.ok().flatten()
}

/// Until nothing listens on `address` any more.
async fn closed(address: SocketAddr) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while tokio::net::TcpStream::connect(address).await.is_ok() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "{address} still listens 10 s on"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

#[tokio::test]
async fn mock_from_outside_the_cluster_an_http_pod_is_reached_through_a_port_forward_that_goes_with_the_pod()
 {
    let api = FakeApi::start().await;
    // Addresses nothing routes to (TEST-NET-1): only the forward reaches the server.
    api.pods_at("192.0.2.7".parse().unwrap());
    let (port, server) = line_server().await;
    let config = kube::Config::new(api.url().parse().unwrap());
    let runtime = KubeRuntime::new(
        Cluster::from_client(kube::Client::try_from(config).unwrap(), api.url()),
        "tools",
        NAMESPACE,
        KubeSettings {
            reach: PodReach::PortForward,
            ..settings()
        },
    );
    let mut spec = spec("search-r3-1", 3);
    let Launch::Pod(launch) = &mut spec.launch else {
        unreachable!()
    };
    launch.deployment["spec"]["template"]["spec"]["containers"][0]["ports"][0]["containerPort"] =
        port.into();
    spec.io = InstanceIo::Listen { port };
    let mut instance = runtime.start(spec).await.unwrap();

    // The instance is at a local port; each connection to it is a forward to the pod.
    let (pod, address) = running(next(&mut instance.events).await);
    let address = address.expect("an address");
    assert!(address.ip().is_loopback(), "{address}");
    assert_eq!(ask(address, "hello").await.as_deref(), Some("pod: hello"));
    assert_eq!(ask(address, "again").await.as_deref(), Some("pod: again"));
    assert_eq!(api.forwards(), [(pod.clone(), port), (pod.clone(), port)]);

    // A restart replaces the pod: its forward closes, the new pod's is elsewhere.
    runtime.restart(&"search-r3-1".into()).await.unwrap();
    assert!(matches!(
        next(&mut instance.events).await,
        Lifecycle::Exited { .. }
    ));
    let (fresh, moved) = running(next(&mut instance.events).await);
    let moved = moved.expect("an address");
    assert_ne!(fresh, pod);
    assert_ne!(moved, address);
    closed(address).await;
    assert_eq!(ask(moved, "fresh").await.as_deref(), Some("pod: fresh"));
    assert_eq!(api.forwards().last(), Some(&(fresh.clone(), port)));

    // Nothing listens on the pod's port: the forward fails and the client's connection is
    // closed, as connecting to the pod itself would fail.
    server.abort();
    let _ = server.await;
    assert_eq!(ask(moved, "anyone?").await, None);

    // Stopping the instance closes its forward.
    runtime.stop(&"search-r3-1".into()).await.unwrap();
    closed(moved).await;
}

/// A server on a free port of loopback that takes each message in two parts: it reads one
/// byte, says so on `parts`, reads the next byte, and answers with one byte.
async fn two_part_server() -> (
    u16,
    tokio::sync::mpsc::UnboundedReceiver<()>,
    tokio::task::JoinHandle<()>,
) {
    use tokio::io::AsyncReadExt as _;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let (parts, first_parts) = tokio::sync::mpsc::unbounded_channel();
    let task = tokio::spawn(async move {
        let (mut socket, _) = listener.accept().await.unwrap();
        socket.set_nodelay(true).unwrap();
        let mut byte = [0u8; 1];
        while socket.read_exact(&mut byte).await.is_ok() {
            let _ = parts.send(());
            if socket.read_exact(&mut byte).await.is_err() || socket.write_all(b"!").await.is_err()
            {
                return;
            }
        }
    });
    (port, first_parts, task)
}

#[tokio::test]
async fn mock_a_small_write_right_after_another_crosses_the_port_forward_without_waiting() {
    use tokio::io::AsyncReadExt as _;
    let api = FakeApi::start().await;
    api.pods_at("192.0.2.8".parse().unwrap());
    let (port, mut first_parts, _server) = two_part_server().await;
    // Connected as the control plane connects: from a kubeconfig.
    let dir = fleet_testkit::TempDir::new("kube-nodelay");
    let kubeconfig = dir.path().join("kubeconfig");
    std::fs::write(
        &kubeconfig,
        format!(
            "apiVersion: v1\nkind: Config\ncurrent-context: mock\nclusters:\n- name: mock\n  cluster: {{ server: \"{}\" }}\n\
             contexts:\n- name: mock\n  context: {{ cluster: mock, user: mock }}\nusers:\n- name: mock\n  user: {{ token: not-a-real-token }}\n",
            api.url()
        ),
    )
    .unwrap();
    let access = fleet_runtime_kube::ClusterAccess::Kubeconfig {
        path: Some(kubeconfig),
        context: None,
    };
    let runtime = KubeRuntime::new(
        Cluster::connect(&access).await.unwrap(),
        "tools",
        NAMESPACE,
        KubeSettings {
            reach: PodReach::PortForward,
            ..settings()
        },
    );
    let mut spec = spec("search-r3-1", 3);
    let Launch::Pod(launch) = &mut spec.launch else {
        unreachable!()
    };
    launch.deployment["spec"]["template"]["spec"]["containers"][0]["ports"][0]["containerPort"] =
        port.into();
    spec.io = InstanceIo::Listen { port };
    let mut instance = runtime.start(spec).await.unwrap();
    let (_, address) = running(next(&mut instance.events).await);
    let mut socket = tokio::net::TcpStream::connect(address.expect("an address"))
        .await
        .unwrap();
    socket.set_nodelay(true).unwrap();

    // Each message's second byte is written once the first has reached the server, while
    // the API server (the fake's socket, in Linux's delayed-ACK mode after an exchange)
    // has not acknowledged it yet. A client connection without TCP_NODELAY holds the
    // second byte until that ACK comes (~40 ms); with it the byte goes at once.
    let mut waits = Vec::new();
    for _ in 0..20 {
        socket.write_all(b"a").await.unwrap();
        tokio::time::timeout(Duration::from_secs(10), first_parts.recv())
            .await
            .expect("the first byte arrives")
            .unwrap();
        let sent = std::time::Instant::now();
        socket.write_all(b"b").await.unwrap();
        let mut answer = [0u8; 1];
        tokio::time::timeout(Duration::from_secs(10), socket.read_exact(&mut answer))
            .await
            .expect("an answer")
            .unwrap();
        waits.push(sent.elapsed());
    }
    waits.sort();
    // The median: one slow round on a busy machine does not decide.
    assert!(
        waits[waits.len() / 2] < Duration::from_millis(20),
        "a small write waited for an ACK: {waits:?}"
    );
    runtime.stop(&"search-r3-1".into()).await.unwrap();
}

/// What `kill -9` does to a pod's process.
fn kill9(pid: u32) {
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(i32::try_from(pid).unwrap()),
        nix::sys::signal::Signal::SIGKILL,
    )
    .unwrap();
}
