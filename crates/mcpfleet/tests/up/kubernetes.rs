//! `mcpfleet up` and `deploy` on `runtime: kubernetes`, against a **mock** API server:
//! fleet-testkit's `FakeApi` (in this process, real HTTP) stands in for the cluster, since
//! no Kubernetes API server can run here. Its pods are "at" 127.0.0.1, and the fleet file
//! declares as each server's container port the port of a real sample server this test
//! runs on loopback: so the control plane applies real Deployments, claims their pods,
//! and really handshakes, health-checks and serves tools/call through its gateway.

use super::*;
use fleet_testkit::kube::FakeApi;
use serde_json::Value;

const NAMESPACE: &str = "kube-up";

/// The mock cluster, and a kubeconfig whose current context points at it.
struct MockCluster {
    api: FakeApi,
    kubeconfig: PathBuf,
    /// Runs the mock's server; dropped after it.
    runtime: tokio::runtime::Runtime,
}

impl MockCluster {
    fn start(test: &str) -> Self {
        let runtime = tokio::runtime::Runtime::new().unwrap();
        let api = runtime.block_on(FakeApi::start());
        api.pods_at(std::net::Ipv4Addr::LOCALHOST.into());
        let dir = std::env::temp_dir().join(format!("mcpfleet-kube-{test}-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let kubeconfig = dir.join("kubeconfig");
        std::fs::write(
            &kubeconfig,
            format!(
                "apiVersion: v1\nkind: Config\nclusters:\n- name: mock\n  cluster: {{ server: \"{}\" }}\n\
                 users:\n- name: tester\n  user: {{ token: not-a-real-token }}\ncontexts:\n- name: mock\n  context: {{ cluster: mock, user: tester }}\ncurrent-context: mock\n",
                api.url()
            ),
        )
        .unwrap();
        MockCluster {
            api,
            kubeconfig,
            runtime,
        }
    }

    /// The names of the fleet's Deployments.
    fn deployments(&self) -> Vec<String> {
        self.api.deployment_names(NAMESPACE)
    }

    /// The names of the fleet's pods.
    fn pods(&self) -> Vec<String> {
        (self.api.pods(NAMESPACE).iter())
            .filter_map(|pod| pod.pointer("/metadata/name")?.as_str().map(str::to_owned))
            .collect()
    }
}

/// A real MCP server over Streamable HTTP on a free port of loopback: what a pod of the
/// mock cluster runs. Killed when dropped.
struct PodServer {
    port: u16,
    process: std::process::Child,
}

impl PodServer {
    fn start(name: &str) -> Self {
        // The OS's choice; the server binds it again at once.
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let process = Command::new(sample())
            .args(["--transport", "http", "--port", &port.to_string()])
            .args(["--tools", "echo,whoami", "--name", name])
            .spawn()
            .unwrap();
        wait_until_blocking(
            &format!("the sample server listens on {port}"),
            Duration::from_secs(10),
            || std::net::TcpStream::connect(("127.0.0.1", port)).map(|_| ()),
        );
        PodServer { port, process }
    }

    fn pid(&self) -> u32 {
        self.process.id()
    }
}

impl Drop for PodServer {
    fn drop(&mut self) {
        let _ = self.process.kill();
        let _ = self.process.wait();
    }
}

/// `api`, an http image server whose container port is `port`, rolled out by `rollout`.
fn kube_fleet(port: u16, rollout: &str) -> String {
    format!(
        r#"
version: 1
name: kube-up
runtime: kubernetes
kubernetes: {{ namespace: {NAMESPACE} }}
servers:
  api:
    http:
      image: registry.example/sample:1
      port: {port}
    container:
      user: "65532:65532"
    health:
      mcp: {{ expect_tools: [echo, whoami] }}
{rollout}
gateway:
  listen: 127.0.0.1:0
"#
    )
}

fn label<'a>(object: &'a Value, key: &str) -> Option<&'a str> {
    object.pointer("/metadata/labels")?.get(key)?.as_str()
}

/// `whoami` through the gateway, on a new session: the pid of the server that answered.
fn whoami(runtime: &tokio::runtime::Runtime, endpoint: &str) -> String {
    runtime.block_on(super::deploy::new_session_pid(endpoint))
}

#[test]
fn mock_cluster_up_applies_a_deployment_per_revision_and_serves_its_pod_through_the_gateway() {
    let cluster = MockCluster::start("up");
    let pod = PodServer::start("kube-up-r1");
    let fleet = Fleet::new("kube-up", &kube_fleet(pod.port, ""))
        .with_env("KUBECONFIG", cluster.kubeconfig.to_str().unwrap());
    let out = fleet.up();
    assert!(out.status.success(), "{}", text(&out));

    // One server-side apply: revision 1's Deployment, as field manager mcpfleet, not forced.
    let applies = cluster.api.applies();
    assert_eq!(applies.len(), 1, "{applies:#?}");
    let apply = &applies[0];
    assert_eq!(
        (apply.namespace.as_str(), apply.name.as_str()),
        (NAMESPACE, "api-r1")
    );
    assert_eq!(apply.field_manager, "mcpfleet");
    assert!(!apply.force);
    assert_eq!(label(&apply.body, "mcpfleet.io/revision"), Some("1"));
    assert_eq!(label(&apply.body, "mcpfleet.io/server"), Some("api"));
    assert_eq!(
        apply
            .body
            .pointer("/spec/selector/matchLabels/mcpfleet.io~1revision"),
        Some(&Value::from("1"))
    );
    assert_eq!(
        apply
            .body
            .pointer("/metadata/annotations/mcpfleet.io~1deployment"),
        Some(&Value::from("1")),
        "{:#}",
        apply.body
    );
    assert_eq!(apply.body.pointer("/spec/replicas"), Some(&Value::from(1)));

    // Its pod is claimed by the instance, which the MCP check found ready.
    let status = fleet.status();
    let api = server(&status, "api");
    assert_eq!(api.state, ServerState::Ready, "{status:#?}");
    let pods = cluster.api.pods(NAMESPACE);
    assert_eq!(pods.len(), 1);
    assert_eq!(
        label(&pods[0], "mcpfleet.io/instance"),
        Some(api.instances[0].id.as_str())
    );

    // A tools/call through the gateway reaches the server at the pod's address.
    let endpoint = api.endpoint.clone().unwrap();
    assert_eq!(
        whoami(&cluster.runtime, &endpoint),
        format!("pid {}", pod.pid())
    );

    // `down` stops the instance: its Deployment goes, and its pod with it.
    let down = fleet.mcpfleet(&["down"]);
    assert!(down.status.success(), "{}", text(&down));
    assert_eq!(cluster.deployments(), Vec::<String>::new());
    assert_eq!(cluster.pods(), Vec::<String>::new());
}

#[test]
fn mock_cluster_canary_runs_two_deployments_rollback_reapplies_and_a_restart_adopts_the_pods() {
    let cluster = MockCluster::start("canary");
    let (blue, green) = (
        PodServer::start("kube-canary-r1"),
        PodServer::start("kube-canary-r2"),
    );
    let rollout = "    rollout:\n      strategy: canary\n      rollback_window: 2s\n      steps: [{ weight: 50, pause: {} }]";
    let fleet = Fleet::new("kube-canary", &kube_fleet(blue.port, rollout))
        .with_env("KUBECONFIG", cluster.kubeconfig.to_str().unwrap());
    let out = fleet.up();
    assert!(out.status.success(), "{}", text(&out));
    let endpoint = server(&fleet.status(), "api").endpoint.clone().unwrap();

    // Revision 2 (another container port: another real server) as a canary: a Deployment
    // of its own beside revision 1's, and the split is the gateway's weights.
    fleet.rewrite(&kube_fleet(green.port, rollout));
    let deploy = fleet.deploy_in_background();
    let waiting = super::canary::wait_for_promote(&fleet);
    assert_eq!(cluster.deployments(), ["api-r1", "api-r2"]);
    assert_eq!(
        server(&waiting, "api").traffic,
        vec![
            fleet_api::types::RevisionWeight {
                revision: 1,
                weight: 50
            },
            fleet_api::types::RevisionWeight {
                revision: 2,
                weight: 50
            },
        ],
        "{waiting:#?}"
    );
    let promoted = fleet.mcpfleet(&["promote", "api"]);
    assert!(promoted.status.success(), "{}", text(&promoted));
    let deployed = deploy.join().unwrap();
    assert!(deployed.status.success(), "{}", text(&deployed));
    wait_until_blocking(
        "revision 1's Deployment goes once its window runs out",
        Duration::from_secs(15),
        || match cluster.deployments() {
            names if names == ["api-r2"] => Ok(()),
            names => Err(names),
        },
    );
    assert_eq!(
        whoami(&cluster.runtime, &endpoint),
        format!("pid {}", green.pid())
    );

    // Rollback is a deployment forward to the stored revision 1, by its canary: revision
    // 1's Deployment is applied again, beside revision 2's.
    let before = cluster.api.applies().len();
    let mut rollback = fleet.command();
    rollback
        .args(["rollback", "api", "--state-dir"])
        .arg(fleet.state_dir());
    let rollback = std::thread::spawn(move || rollback.output().unwrap());
    super::canary::wait_for_promote(&fleet);
    let reapplied: Vec<String> = cluster.api.applies()[before..]
        .iter()
        .map(|apply| apply.name.clone())
        .collect();
    assert_eq!(reapplied, ["api-r1"]);
    assert_eq!(cluster.deployments(), ["api-r1", "api-r2"]);
    let promoted = fleet.mcpfleet(&["promote", "api"]);
    assert!(promoted.status.success(), "{}", text(&promoted));
    let rolled = rollback.join().unwrap();
    assert!(rolled.status.success(), "{}", text(&rolled));
    wait_until_blocking(
        "revision 2's Deployment goes once its window runs out",
        Duration::from_secs(15),
        || match cluster.deployments() {
            names if names == ["api-r1"] => Ok(()),
            names => Err(names),
        },
    );
    let status = fleet.status();
    assert_eq!(server(&status, "api").revision, Some(1), "{status:#?}");
    assert_eq!(
        whoami(&cluster.runtime, &endpoint),
        format!("pid {}", blue.pid())
    );

    // A control plane killed and started again (on the file of what runs: `up` deploys
    // its file) takes over the pod by its labels: no apply, the same pod, still serving.
    fleet.rewrite(&kube_fleet(blue.port, rollout));
    let pods = cluster.pods();
    let applies = cluster.api.applies().len();
    nix_kill9(status.pid);
    let again = fleet.up();
    assert!(again.status.success(), "{}", text(&again));
    let after = fleet.status();
    assert_eq!(
        server(&after, "api").state,
        ServerState::Ready,
        "{after:#?}"
    );
    assert_eq!(cluster.pods(), pods);
    assert_eq!(
        cluster.api.applies().len(),
        applies,
        "nothing applied again"
    );
    assert_eq!(cluster.deployments(), ["api-r1"]);
    assert!(
        events(&fleet)
            .iter()
            .any(|e| e.kind == EventKind::InstanceAdopted),
        "no adoption event"
    );
    let endpoint = server(&after, "api").endpoint.clone().unwrap();
    assert_eq!(
        whoami(&cluster.runtime, &endpoint),
        format!("pid {}", blue.pid())
    );
}

#[test]
fn up_refuses_a_stdio_server_on_kubernetes_where_the_file_declares_it() {
    let fleet = Fleet::new(
        "kube-stdio",
        r#"
version: 1
name: kube-stdio
runtime: kubernetes
servers:
  notes:
    stdio: { image: registry.example/notes:1 }
"#,
    );
    let out = fleet.up();
    let shown = text(&out);
    assert_eq!(out.status.code(), Some(1), "{shown}");
    assert!(
        shown.contains("server `notes` is a stdio server")
            && shown.contains("mcpfleet.yaml:6:3")
            && shown.contains("serve it over http"),
        "{shown}"
    );
    assert!(!fleet.state_dir().exists(), "{shown}");
}
