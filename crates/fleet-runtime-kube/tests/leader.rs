//! Which control plane pod leads, as the label the rendered control plane Service selects,
//! against fleet-testkit's fake API server (tests named `mock_…`: no real API server runs
//! here). The pods are the rendered control plane Deployment's (with the store in
//! PostgreSQL: two replicas), made by the fake's ReplicaSet controller.

use fleet_runtime_kube::{Cluster, LeaderLabel};
use fleet_testkit::kube::FakeApi;
use serde_json::Value;

const NAMESPACE: &str = "mcp-tools";

const FLEET: &str = r#"
version: 1
name: tools
runtime: kubernetes
kubernetes: { namespace: mcp-tools }
secrets:
  state_db: { env: STATE_DB }
state:
  postgres: { url: "{{ secret('state_db') }}" }
gateway:
  listen: 127.0.0.1:8080
  auth:
    tokens:
      - { name: ci, sha256: "0000000000000000000000000000000000000000000000000000000000000000", servers: ["*"] }
  tls: { terminated_by: proxy }
servers:
  search:
    http: { image: registry.example/search:1.2, port: 8080 }
"#;

/// The fake with the rendered control plane Deployment applied: its pods' names.
async fn control_plane_pods(api: &FakeApi) -> Vec<String> {
    let fleet = fleet_spec::load_str(
        "fleet.yaml",
        FLEET,
        "/fleet".into(),
        &fleet_spec::LoadOptions::default(),
    )
    .into_valid()
    .unwrap_or_else(|errors| panic!("{errors:#?}"));
    let objects = fleet_manifests::render(&fleet, &fleet_manifests::Options::new(FLEET))
        .unwrap_or_else(|e| panic!("{e}"));
    let deployment = objects
        .into_iter()
        .find(|o| o["kind"] == "Deployment" && o["metadata"]["name"] == "mcpfleet")
        .expect("the control plane's Deployment");
    api.apply_as("kubectl", deployment);
    let pods: Vec<String> = (api.pods(NAMESPACE).iter())
        .filter_map(|pod| pod.pointer("/metadata/name")?.as_str().map(str::to_owned))
        .collect();
    assert_eq!(pods.len(), 2, "two control plane replicas: {pods:?}");
    pods
}

fn label_of(pod: &str, api: &FakeApi) -> LeaderLabel {
    let config = kube::Config::new(api.url().parse().unwrap());
    let client = kube::Client::try_from(config).unwrap();
    LeaderLabel::new(
        Cluster::from_client(client, api.url()),
        NAMESPACE,
        pod,
        &fleet_manifests::control_plane_pods("tools"),
        fleet_manifests::LEADER_LABEL,
    )
}

/// The pods labelled the leader's.
fn leaders(api: &FakeApi) -> Vec<String> {
    let (key, value) = fleet_manifests::LEADER_LABEL;
    (api.pods(NAMESPACE).iter())
        .filter(|pod| {
            pod.pointer("/metadata/labels").and_then(|l| l.get(key)) == Some(&Value::from(value))
        })
        .filter_map(|pod| pod.pointer("/metadata/name")?.as_str().map(str::to_owned))
        .collect()
}

#[tokio::test]
async fn mock_the_leader_labels_its_pod_and_takes_the_label_off_the_pod_that_led_before() {
    let api = FakeApi::start().await;
    let pods = control_plane_pods(&api).await;
    let (first, second) = (&pods[0], &pods[1]);

    label_of(first, &api).lead().await.unwrap();
    assert_eq!(leaders(&api), [first.as_str()], "the first leader's pod");

    // The first leader stopped (SIGSTOP, a node gone) with its label; the second takes
    // the lease: the Service must reach it alone.
    label_of(second, &api).lead().await.unwrap();
    assert_eq!(
        leaders(&api),
        [second.as_str()],
        "the label moved to the new leader"
    );
    let other = api.pod(NAMESPACE, first).unwrap();
    let labels = other.pointer("/metadata/labels").unwrap();
    assert_eq!(
        labels["app.kubernetes.io/component"], "control-plane",
        "the old leader's pod keeps its other labels: {labels}"
    );

    // Leading again (a lease taken back) changes nothing.
    label_of(second, &api).lead().await.unwrap();
    assert_eq!(leaders(&api), [second.as_str()]);
}

#[tokio::test]
async fn mock_a_control_plane_restarted_in_its_pod_takes_its_own_leader_label_off_at_start() {
    let api = FakeApi::start().await;
    let pods = control_plane_pods(&api).await;
    let leader = label_of(&pods[0], &api);
    leader.lead().await.unwrap();
    assert_eq!(leaders(&api), [pods[0].as_str()]);

    // Killed with -9, the kubelet restarts the container in the same pod, label and all:
    // the control plane stands by until it takes the lease again.
    leader.stand_by().await.unwrap();
    assert!(leaders(&api).is_empty(), "{:?}", leaders(&api));
    // A pod with no label to take off is no error.
    label_of(&pods[1], &api).stand_by().await.unwrap();
    assert!(leaders(&api).is_empty());
}
