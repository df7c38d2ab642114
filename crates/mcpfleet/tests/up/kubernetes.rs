//! `mcpfleet up` and `deploy` on `runtime: kubernetes`, against a **mock** API server:
//! fleet-testkit's `FakeApi` (in this process, real HTTP) stands in for the cluster, since
//! no Kubernetes API server can run here. Its pods are "at" 127.0.0.1, and the fleet file
//! declares as each server's container port the port of a real sample server this test
//! runs on loopback: so the control plane applies real Deployments, claims their pods,
//! and really handshakes, health-checks and serves tools/call through its gateway. A stdio
//! server's pods run a real sample server over stdio behind the fake's `pods/attach`.

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
        let kubeconfig = kubeconfig_for(&dir, &api.url());
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

    /// Waits until `name` is the fleet's only Deployment.
    fn wait_for_only_deployment(&self, name: &str) {
        wait_until_blocking(
            &format!("{name} is the only Deployment"),
            Duration::from_secs(15),
            || match self.deployments() {
                names if names == [name] => Ok(()),
                names => Err(names),
            },
        );
    }

    /// The names of the fleet's pods.
    fn pods(&self) -> Vec<String> {
        (self.api.pods(NAMESPACE).iter())
            .filter_map(|pod| pod.pointer("/metadata/name")?.as_str().map(str::to_owned))
            .collect()
    }
}

/// `dir/kubeconfig`, whose current context `mock` is the API server at `url`.
fn kubeconfig_for(dir: &Path, url: &str) -> PathBuf {
    let kubeconfig = dir.join("kubeconfig");
    std::fs::write(
        &kubeconfig,
        format!(
            "apiVersion: v1\nkind: Config\nclusters:\n- name: mock\n  cluster: {{ server: \"{url}\" }}\n\
             users:\n- name: tester\n  user: {{ token: not-a-real-token }}\ncontexts:\n- name: mock\n  context: {{ cluster: mock, user: tester }}\ncurrent-context: mock\n"
        ),
    )
    .unwrap();
    kubeconfig
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

/// `api`, an http image server whose container port is `port`, rolled out by `rollout`,
/// reached at its pods' IP (the mock's are loopback's).
fn kube_fleet(port: u16, rollout: &str) -> String {
    kube_fleet_reaching(port, rollout, "pod-ip")
}

/// [`kube_fleet`], its pods reached as `reach` says (`pod-ip`, `port-forward`).
fn kube_fleet_reaching(port: u16, rollout: &str, reach: &str) -> String {
    format!(
        r#"
version: 1
name: kube-up
runtime: kubernetes
kubernetes: {{ namespace: {NAMESPACE}, reach: {reach} }}
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

/// `up` that stops at once, with exactly one line: `error: …` naming what is wrong — and
/// having printed no plan, created no state directory and applied nothing.
fn up_fails_in_one_line(fleet: &Fleet, args: &[&str]) -> String {
    let out = fleet.mcpfleet(args);
    assert!(!out.status.success(), "{}", text(&out));
    let all = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let lines: Vec<&str> = all.lines().filter(|l| !l.trim().is_empty()).collect();
    assert_eq!(lines.len(), 1, "one line: {all}");
    assert!(lines[0].starts_with("error: "), "{all}");
    assert!(
        !fleet.state_dir().exists(),
        "no state directory before the cluster can take the fleet"
    );
    lines[0].to_owned()
}

#[test]
fn mock_cluster_up_fails_early_and_in_one_line_when_the_cluster_cannot_take_the_fleet() {
    // The namespace does not exist: say so, and how the rendered manifests create it.
    let cluster = MockCluster::start("no-namespace");
    cluster.api.namespaces(&["default"]);
    let fleet = Fleet::new("kube-no-namespace", &kube_fleet(1, ""))
        .with_env("KUBECONFIG", cluster.kubeconfig.to_str().unwrap());
    // In the foreground, where `up` prints the plan before it starts.
    let line = up_fails_in_one_line(&fleet, &["up"]);
    assert_eq!(
        line,
        format!(
            "error: cannot run fleet `kube-up` in namespace `{NAMESPACE}` of context `mock`: the \
             namespace does not exist: create it and the control plane's RBAC with `mcpfleet \
             render kubernetes -f mcpfleet.yaml | kubectl apply -f -` (or only the namespace: \
             `kubectl create namespace {NAMESPACE}`)"
        )
    );
    assert!(cluster.api.applies().is_empty());
    up_fails_in_one_line(&fleet, &["up", "-d"]);

    // Once it exists, the same `up` goes ahead.
    cluster.api.namespaces(&["default", NAMESPACE]);
    let pod = PodServer::start("kube-namespace-r1");
    fleet.rewrite(&kube_fleet(pod.port, ""));
    let out = fleet.up();
    assert!(out.status.success(), "{}", text(&out));
    let down = fleet.mcpfleet(&["down"]);
    assert!(down.status.success(), "{}", text(&down));

    // An API server nothing answers for: its URL and the context.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let unreachable = Fleet::new("kube-unreachable", &kube_fleet(1, ""));
    let kubeconfig = kubeconfig_for(&unreachable.dir, &format!("http://127.0.0.1:{port}"));
    let unreachable = unreachable.with_env("KUBECONFIG", kubeconfig.to_str().unwrap());
    let line = up_fails_in_one_line(&unreachable, &["up", "-d"]);
    assert!(
        line.starts_with(&format!(
            "error: cannot run fleet `kube-up` in namespace `{NAMESPACE}` of context `mock`: \
             cannot reach the Kubernetes API at http://127.0.0.1:{port}/"
        )),
        "{line}"
    );
    assert!(line.contains("kubectl cluster-info"), "{line}");

    // No kubeconfig where KUBECONFIG points.
    let missing = Fleet::new("kube-no-kubeconfig", &kube_fleet(1, ""));
    let nowhere = missing.dir.join("no-such-kubeconfig");
    let missing = missing.with_env("KUBECONFIG", nowhere.to_str().unwrap());
    let line = up_fails_in_one_line(&missing, &["up", "-d"]);
    assert!(
        line.starts_with(&format!(
            "error: cannot run fleet `kube-up` in namespace `{NAMESPACE}` of the kubeconfig's \
             current context: no kubeconfig at {}: point KUBECONFIG at one",
            nowhere.display()
        )),
        "{line}"
    );
}

#[test]
fn mock_cluster_apply_conflict_with_another_field_manager_fails_the_deploy_and_says_what_to_do() {
    let cluster = MockCluster::start("conflict");
    let pod = PodServer::start("kube-conflict-r1");
    // Another tool already manages a Deployment by the name revision 1's gets, with 3
    // replicas: its fields are that tool's.
    cluster.api.apply_as(
        "helm",
        serde_json::json!({
            "apiVersion": "apps/v1", "kind": "Deployment",
            "metadata": { "name": "api-r1", "namespace": NAMESPACE, "labels": { "app": "api" } },
            "spec": {
                "replicas": 3,
                "selector": { "matchLabels": { "app": "api" } },
                "template": { "metadata": { "labels": { "app": "api" } } },
            },
        }),
    );
    let fleet = Fleet::new("kube-conflict", &kube_fleet(pod.port, ""))
        .with_env("KUBECONFIG", cluster.kubeconfig.to_str().unwrap());
    let out = fleet.up();
    assert!(!out.status.success(), "{}", text(&out));

    // The deploy failed, saying which object, which field, whose, and what to do.
    let shown = text(&out);
    for said in [
        format!("apply Deployment {NAMESPACE}/api-r1"),
        "field `.spec.replicas` is owned by field manager `helm`".to_owned(),
        "mcpfleet never takes over another manager's fields".to_owned(),
        format!(
            "stop `helm` managing api-r1, or delete it (`kubectl -n {NAMESPACE} delete \
             deployment api-r1`) for mcpfleet to create it again"
        ),
    ] {
        assert!(shown.contains(&said), "{said:?} in {shown}");
    }
    // mcpfleet never forced its apply: the other tool keeps its replicas.
    let ours: Vec<_> = (cluster.api.applies().into_iter())
        .filter(|apply| apply.field_manager == "mcpfleet")
        .collect();
    assert!(!ours.is_empty());
    assert!(ours.iter().all(|apply| !apply.force), "{ours:#?}");
    let theirs = cluster.api.deployment(NAMESPACE, "api-r1").unwrap();
    assert_eq!(theirs.pointer("/spec/replicas"), Some(&Value::from(3)));
}

#[test]
fn mock_cluster_progress_deadline_bounds_the_wait_for_a_ready_pod() {
    let cluster = MockCluster::start("deadline");
    // Its pods stay Pending, as pods whose image cannot be pulled do.
    cluster.api.hold_new_pods(true);
    let fleet = Fleet::new(
        "kube-deadline",
        &kube_fleet(1, "").replace("reach: pod-ip }", "reach: pod-ip, progress_deadline: 2s }"),
    )
    .with_env("KUBECONFIG", cluster.kubeconfig.to_str().unwrap());
    let started = std::time::Instant::now();
    let out = fleet.up();
    assert!(!out.status.success(), "{}", text(&out));
    // The file's 2 s, not the 10 minutes Kubernetes gives by default.
    assert!(
        started.elapsed() < Duration::from_secs(60),
        "{:?}",
        started.elapsed()
    );
    let shown = text(&out);
    assert!(
        shown
            .contains("no pod of Deployment api-r1 became ready for instance `api-r1-1` within 2s"),
        "{shown}"
    );
    // The rendered Deployment says the same deadline to the cluster.
    let applied = &cluster.api.applies()[0].body;
    assert_eq!(
        applied.pointer("/spec/progressDeadlineSeconds"),
        Some(&Value::from(2))
    );
}

/// The TCP ports process `pid` listens on, from /proc: its sockets' inodes, and which of
/// them are listening (`st` 0A) in /proc/net/tcp.
fn listening_ports(pid: u32) -> std::collections::BTreeSet<u16> {
    let inodes: std::collections::HashSet<String> = (std::fs::read_dir(format!("/proc/{pid}/fd"))
        .unwrap()
        .flatten())
    .filter_map(|fd| std::fs::read_link(fd.path()).ok())
    .filter_map(|target| {
        let target = target.to_string_lossy().into_owned();
        Some(
            target
                .strip_prefix("socket:[")?
                .strip_suffix(']')?
                .to_owned(),
        )
    })
    .collect();
    let table = std::fs::read_to_string("/proc/net/tcp").unwrap();
    (table.lines().skip(1))
        .filter_map(|line| {
            let fields: Vec<&str> = line.split_whitespace().collect();
            let (local, state, inode) = (fields.get(1)?, fields.get(3)?, fields.get(9)?);
            let port = u16::from_str_radix(local.rsplit(':').next()?, 16).ok()?;
            (*state == "0A" && inodes.contains(*inode)).then_some(port)
        })
        .collect()
}

#[test]
fn mock_cluster_control_plane_outside_the_cluster_reaches_an_http_pod_through_port_forward() {
    let cluster = MockCluster::start("forward");
    // Pod IPs nothing routes to (TEST-NET-1): only the API server's port-forward, which
    // the mock connects to loopback's port, reaches the server.
    cluster.api.pods_at("192.0.2.10".parse().unwrap());
    let pod = PodServer::start("kube-forward");
    let fleet = Fleet::new(
        "kube-forward",
        &kube_fleet_reaching(pod.port, "", "port-forward"),
    )
    .with_env("KUBECONFIG", cluster.kubeconfig.to_str().unwrap());
    let out = fleet.up();
    assert!(out.status.success(), "{}", text(&out));

    // Ready: the MCP check went through the forward, and so does a tools/call through
    // the gateway.
    let status = fleet.status();
    let api = server(&status, "api");
    assert_eq!(api.state, ServerState::Ready, "{status:#?}");
    let first = api.instances[0].id.clone();
    let endpoint = api.endpoint.clone().unwrap();
    assert_eq!(
        whoami(&cluster.runtime, &endpoint),
        format!("pid {}", pod.pid())
    );
    let first_pod = cluster.pods()[0].clone();
    let forwards = cluster.api.forwards();
    assert!(!forwards.is_empty());
    assert!(
        forwards.iter().all(|f| *f == (first_pod.clone(), pod.port)),
        "{forwards:?}"
    );
    let listening = listening_ports(status.pid);

    // A restart replaces the instance with one in a new pod, with a forward of its own;
    // the replaced instance's forward closes with it: the control plane listens on as
    // many ports as before, one of them new.
    let restarted = fleet.mcpfleet(&["restart", "api"]);
    assert!(restarted.status.success(), "{}", text(&restarted));
    let status = fleet.status();
    let api = server(&status, "api");
    assert_ne!(api.instances[0].id, first, "{status:#?}");
    let second_pod = cluster.pods();
    assert_eq!(second_pod.len(), 1);
    assert_ne!(second_pod[0], first_pod);
    assert_eq!(
        whoami(&cluster.runtime, &endpoint),
        format!("pid {}", pod.pid())
    );
    assert_eq!(
        cluster.api.forwards().last(),
        Some(&(second_pod[0].clone(), pod.port))
    );
    wait_until_blocking(
        "the replaced instance's forward closes",
        Duration::from_secs(10),
        || {
            let now = listening_ports(status.pid);
            let new = now.difference(&listening).count();
            if now.len() == listening.len() && new == 1 {
                Ok(())
            } else {
                Err((listening.clone(), now))
            }
        },
    );

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
    // Revision 1's Deployment goes once its window runs out.
    cluster.wait_for_only_deployment("api-r2");
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
    // Revision 2's Deployment goes once its window runs out.
    cluster.wait_for_only_deployment("api-r1");
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

/// `notes`, a stdio image server with isolation `isolation`, restarted at once after a
/// failure. The mock's pods run the sample server over stdio when attached to.
fn stdio_fleet(isolation: &str) -> String {
    format!(
        r#"
version: 1
name: kube-up
runtime: kubernetes
kubernetes: {{ namespace: {NAMESPACE} }}
servers:
  notes:
    stdio:
      image: registry.example/notes:1
      {isolation}
    container:
      user: "65532:65532"
    restart: {{ backoff: {{ initial: 100ms, jitter: 0 }} }}
    health:
      mcp: {{ expect_tools: [echo, whoami] }}
gateway:
  listen: 127.0.0.1:0
"#
    )
}

impl MockCluster {
    /// Pods run a real sample server over stdio, started when the control plane attaches.
    fn attach_runs_the_sample_server(&self) {
        self.api.attach_runs(
            sample(),
            &["--transport", "stdio", "--tools", "echo,whoami"],
        );
    }

    /// `pid N` of the process pod `name` runs.
    fn process_of(&self, name: &str) -> String {
        let pid = self.api.process_id(NAMESPACE, name);
        format!(
            "pid {}",
            pid.unwrap_or_else(|| panic!("pod {name} runs no process"))
        )
    }

    /// The pod whose process is `pid N`.
    fn pod_running(&self, pid: &str) -> String {
        (self.pods().into_iter())
            .find(|name| {
                self.api
                    .process_id(NAMESPACE, name)
                    .map(|p| format!("pid {p}"))
                    .as_deref()
                    == Some(pid)
            })
            .unwrap_or_else(|| panic!("no pod runs {pid}: {:?}", self.pods()))
    }

    /// The pod claimed by instance `id`.
    fn pod_of(&self, id: &str) -> String {
        (self.api.pods(NAMESPACE).iter())
            .find(|pod| label(pod, "mcpfleet.io/instance") == Some(id))
            .and_then(|pod| pod.pointer("/metadata/name")?.as_str().map(str::to_owned))
            .unwrap_or_else(|| panic!("no pod of instance {id}: {:?}", self.pods()))
    }
}

#[test]
fn mock_cluster_stdio_server_is_attached_to_through_the_api_and_a_dead_process_is_a_restart() {
    let cluster = MockCluster::start("stdio");
    cluster.attach_runs_the_sample_server();
    let fleet = Fleet::new("kube-stdio", &stdio_fleet("isolation: shared"))
        .with_env("KUBECONFIG", cluster.kubeconfig.to_str().unwrap());
    let out = fleet.up();
    assert!(out.status.success(), "{}", text(&out));

    // The Deployment keeps the container's stdin open for the attach, without a TTY.
    let applied = &cluster.api.applies()[0].body;
    let container = applied.pointer("/spec/template/spec/containers/0").unwrap();
    assert_eq!(
        (
            &container["stdin"],
            &container["stdinOnce"],
            &container["tty"]
        ),
        (&true.into(), &false.into(), &false.into())
    );
    // Ready: the MCP check passed over the attach, and the gateway reaches the pod's
    // process through it — the pod runs no mcpfleet binary.
    let status = fleet.status();
    let notes = server(&status, "notes");
    assert_eq!(notes.state, ServerState::Ready, "{status:#?}");
    let pod = cluster.pod_of(&notes.instances[0].id);
    let endpoint = notes.endpoint.clone().unwrap();
    assert_eq!(
        whoami(&cluster.runtime, &endpoint),
        cluster.process_of(&pod)
    );

    // The pod's process dies: the attach ends, the instance exited and is restarted in a
    // fresh pod, which serves the next session.
    let dead = cluster.process_of(&pod);
    nix_kill9(cluster.api.process_id(NAMESPACE, &pod).unwrap());
    let restarted = fleet.wait_for(
        "the instance runs again after its process died",
        Duration::from_secs(20),
        |s| {
            let notes = server(s, "notes");
            notes.state == ServerState::Ready && notes.instances[0].restarts == 1
        },
    );
    let instance = &server(&restarted, "notes").instances[0];
    let fresh = cluster.pod_of(&instance.id);
    assert_ne!(fresh, pod);
    assert_eq!(
        cluster.pods(),
        std::slice::from_ref(&fresh),
        "the old pod was deleted"
    );
    let answered = whoami(&cluster.runtime, &endpoint);
    assert_eq!(answered, cluster.process_of(&fresh));
    assert_ne!(answered, dead);

    let down = fleet.mcpfleet(&["down"]);
    assert!(down.status.success(), "{}", text(&down));
    assert_eq!(cluster.deployments(), Vec::<String>::new());
    assert_eq!(cluster.pods(), Vec::<String>::new());
}

#[test]
fn mock_cluster_per_session_stdio_server_gives_each_session_a_pod_of_its_own() {
    let cluster = MockCluster::start("per-session");
    cluster.attach_runs_the_sample_server();
    let fleet = Fleet::new(
        "kube-per-session",
        &stdio_fleet("isolation: per-session\n      warm: 1"),
    )
    .with_env("KUBECONFIG", cluster.kubeconfig.to_str().unwrap());
    let out = fleet.up();
    assert!(out.status.success(), "{}", text(&out));
    let endpoint = server(&fleet.status(), "notes").endpoint.clone().unwrap();

    // Two sessions at once: each is answered by the process of a pod of its own.
    let runtime = &cluster.runtime;
    let (first, second) = runtime.block_on(async {
        let first = RawSession::open(&endpoint).await.unwrap();
        (first, RawSession::open(&endpoint).await.unwrap())
    });
    let answered = runtime.block_on(async {
        [
            first.call(2, "whoami", serde_json::json!({})).await,
            second.call(2, "whoami", serde_json::json!({})).await,
        ]
    });
    assert_ne!(answered[0], answered[1], "two sessions share no process");
    let session_pods: Vec<String> = answered
        .iter()
        .map(|pid| cluster.pod_running(pid))
        .collect();

    // A session that ends gives its pod back: it is deleted.
    runtime.block_on(async {
        first.close().await;
        second.close().await;
    });
    wait_until_blocking(
        "the sessions' pods are gone once the sessions ended",
        Duration::from_secs(20),
        || {
            let pods = cluster.pods();
            if session_pods.iter().any(|pod| pods.contains(pod)) {
                Err(pods)
            } else {
                Ok(())
            }
        },
    );
}

/// tools/call latency through the gateway to a shared stdio server: its pod's process over
/// the attach (the mock: kube's client, a WebSocket on loopback, the fake's pipes to the
/// process) against the same server as a local process. A measurement, not a check:
/// `cargo test -p mcpfleet --test up -- --ignored --nocapture mock_cluster_attach_latency`
/// prints both and what the attach adds; docs/kubernetes.md has the numbers.
#[test]
#[ignore = "a measurement: run it by name"]
fn mock_cluster_attach_latency_against_a_local_stdio_server() {
    const CALLS: u64 = 1000;
    let cluster = MockCluster::start("attach-latency");
    cluster.attach_runs_the_sample_server();
    let in_pod = Fleet::new("kube-attach-latency", &stdio_fleet("isolation: shared"))
        .with_env("KUBECONFIG", cluster.kubeconfig.to_str().unwrap());
    let local_file = format!(
        "version: 1\nname: local-latency\nservers:\n  notes:\n    stdio:\n      command: {}\n      \
         args: [--transport, stdio, --tools, \"echo,whoami\"]\n      isolation: shared\n\
         gateway:\n  listen: 127.0.0.1:0\n",
        sample()
    );
    let local = Fleet::new("local-attach-latency", &local_file);
    let mut report = Vec::new();
    for (label, fleet) in [
        ("pod over attach (mock API server)", &in_pod),
        ("local process", &local),
    ] {
        let [p50, p90, p99] = echo_latency(&cluster, fleet, "notes", CALLS);
        report.push((label, p50, p90, p99));
    }
    println!("tools/call `echo` through the gateway, {CALLS} calls on one session (µs):");
    for (label, p50, p90, p99) in &report {
        println!("  {label:<36} p50 {p50:>7.0}  p90 {p90:>7.0}  p99 {p99:>7.0}");
    }
    println!(
        "  the attach adds                      p50 {:>7.0}  p90 {:>7.0}",
        report[0].1 - report[1].1,
        report[0].2 - report[1].2
    );
}

/// tools/call latency through the gateway to an http server's pod: reached through the
/// API server's port-forward (a control plane outside the cluster; the mock: a local
/// listener, kube's client, a WebSocket per connection, the fake's socket to the server)
/// against reached at the pod's IP (here loopback, as in the cluster). A measurement, not
/// a check: `cargo test -p mcpfleet --test up -- --ignored --nocapture
/// mock_cluster_port_forward_latency` prints both; docs/kubernetes.md has the numbers.
#[test]
#[ignore = "a measurement: run it by name"]
fn mock_cluster_port_forward_latency_against_the_pod_ip() {
    const CALLS: u64 = 1000;
    let cluster = MockCluster::start("forward-latency");
    let pod = PodServer::start("kube-forward-latency");
    let mut report = Vec::new();
    for reach in ["port-forward", "pod-ip"] {
        let fleet = Fleet::new(
            &format!("kube-latency-{reach}"),
            &kube_fleet_reaching(pod.port, "", reach),
        )
        .with_env("KUBECONFIG", cluster.kubeconfig.to_str().unwrap());
        let [p50, p90, p99] = echo_latency(&cluster, &fleet, "api", CALLS);
        report.push((reach, p50, p90, p99));
    }
    println!("tools/call `echo` through the gateway, {CALLS} calls on one session (µs):");
    for (reach, p50, p90, p99) in &report {
        println!("  {reach:<14} p50 {p50:>7.0}  p90 {p90:>7.0}  p99 {p99:>7.0}");
    }
    println!(
        "  the forward adds p50 {:>7.0}  p90 {:>7.0}",
        report[0].1 - report[1].1,
        report[0].2 - report[1].2
    );
}

/// Brings `fleet` up, times `calls` tools/call `echo` on one session to `server` through
/// the gateway (after 50 to warm up), and takes it down: p50, p90, p99 in µs.
fn echo_latency(cluster: &MockCluster, fleet: &Fleet, server_name: &str, calls: u64) -> [f64; 3] {
    let out = fleet.up();
    assert!(out.status.success(), "{}", text(&out));
    let endpoint = server(&fleet.status(), server_name)
        .endpoint
        .clone()
        .unwrap();
    let mut micros: Vec<f64> = cluster.runtime.block_on(async {
        let session = RawSession::open(&endpoint).await.unwrap();
        for id in 0..50 {
            session
                .call(id, "echo", serde_json::json!({ "text": "warm" }))
                .await;
        }
        let mut micros = Vec::new();
        for id in 100..100 + calls {
            let started = std::time::Instant::now();
            session
                .call(id, "echo", serde_json::json!({ "text": "ping" }))
                .await;
            micros.push(started.elapsed().as_secs_f64() * 1e6);
        }
        session.close().await;
        micros
    });
    micros.sort_by(f64::total_cmp);
    let at = |q: f64| micros[((micros.len() - 1) as f64 * q).round() as usize];
    let down = fleet.mcpfleet(&["down"]);
    assert!(down.status.success(), "{}", text(&down));
    [at(0.5), at(0.9), at(0.99)]
}

/// The pods of the mock labelled the leading control plane's.
fn leader_pods(cluster: &MockCluster) -> Vec<String> {
    let (key, value) = fleet_manifests::LEADER_LABEL;
    (cluster.api.pods(NAMESPACE).iter())
        .filter(|pod| label(pod, key) == Some(value))
        .filter_map(|pod| pod.pointer("/metadata/name")?.as_str().map(str::to_owned))
        .collect()
}

/// Labels pod `name` the leader's, as a control plane that led in it left it.
fn label_leader(cluster: &MockCluster, name: &str) {
    let (key, value) = fleet_manifests::LEADER_LABEL;
    let url = format!(
        "{}/api/v1/namespaces/{NAMESPACE}/pods/{name}",
        cluster.api.url()
    );
    let status = cluster.runtime.block_on(async {
        http_client()
            .patch(url)
            .header("content-type", "application/merge-patch+json")
            .body(serde_json::json!({ "metadata": { "labels": { key: value } } }).to_string())
            .send()
            .await
            .unwrap()
            .status()
    });
    assert!(status.is_success(), "{status}");
}

#[test]
fn mock_cluster_control_planes_on_postgres_label_the_leaders_pod_and_move_the_label_on_failover() {
    let cluster = MockCluster::start("leader-label");
    let pod = PodServer::start("kube-up-r1");
    // The control plane's own pods, as the rendered Deployment (two replicas) makes them.
    let selector: serde_json::Map<String, Value> = (fleet_manifests::control_plane_pods("kube-up")
        .split(','))
    .filter_map(|pair| pair.split_once('='))
    .map(|(k, v)| (k.to_owned(), v.into()))
    .collect();
    cluster.api.apply_as(
        "kubectl",
        serde_json::json!({
            "apiVersion": "apps/v1",
            "kind": "Deployment",
            "metadata": { "name": "mcpfleet", "namespace": NAMESPACE, "labels": selector },
            "spec": {
                "replicas": 2,
                "selector": { "matchLabels": selector },
                "template": {
                    "metadata": { "labels": selector },
                    "spec": { "containers": [{ "name": "mcpfleet", "image": "registry.example/mcpfleet:1" }] },
                },
            },
        }),
    );
    let pods = cluster.pods();
    assert_eq!(pods.len(), 2, "{pods:?}");
    let (first, second) = (pods[0].clone(), pods[1].clone());
    // A leader before them left its label behind (stopped, or its node lost).
    label_leader(&cluster, &second);

    let yaml = kube_fleet(pod.port, "").replace(
        "servers:",
        "secrets:\n  state_db: { env: STATE_DB }\nstate:\n  postgres:\n    url: \"{{ secret('state_db') }}\"\n    lease: 1s\nservers:",
    );
    let fleet = Fleet::new("kube-leader-label", &yaml)
        .with_env("KUBECONFIG", cluster.kubeconfig.to_str().unwrap())
        .with_env("STATE_DB", &fleet_testkit::postgres::fresh_database())
        .with_env("POD_NAMESPACE", NAMESPACE);
    let in_pod = |name: &str, state_dir: &Path| {
        let out = fleet
            .command()
            .env("POD_NAME", name)
            .args(["up", "-d", "--state-dir"])
            .arg(state_dir)
            .output()
            .unwrap();
        assert!(out.status.success(), "{}", text(&out));
        out
    };
    in_pod(&first, &fleet.state_dir());
    wait_until_blocking(
        "the leader's pod alone is labelled",
        Duration::from_secs(10),
        || match leader_pods(&cluster) {
            leaders if leaders == [first.as_str()] => Ok(()),
            leaders => Err(leaders),
        },
    );

    // The second control plane, in a pod where one led before it was restarted in place:
    // it stands by, and its pod is no leader's.
    label_leader(&cluster, &second);
    let standby_dir = fleet.dir.join("state-b");
    let out = in_pod(&second, &standby_dir);
    assert!(text(&out).contains("standing by:"), "{}", text(&out));
    assert_eq!(leader_pods(&cluster), [first.as_str()]);

    // The leader dies (its label stays): the standby takes over and the label with it.
    nix_kill9(fleet.status().pid);
    wait_until_blocking(
        "the new leader's pod alone is labelled",
        Duration::from_secs(20),
        || match leader_pods(&cluster) {
            leaders if leaders == [second.as_str()] => Ok(()),
            leaders => Err(leaders),
        },
    );
    // The control plane's own Deployment is not a leftover of its servers.
    assert!(
        cluster.deployments().contains(&"mcpfleet".to_owned()),
        "{:?}",
        cluster.deployments()
    );
    fleet.down_in(&standby_dir);
}

#[test]
fn mock_cluster_a_leader_told_to_terminate_hands_its_servers_to_the_standby_untouched() {
    let cluster = MockCluster::start("hand-over");
    let pod = PodServer::start("kube-up-r1");
    let yaml = kube_fleet(pod.port, "").replace(
        "servers:",
        "secrets:\n  state_db: { env: STATE_DB }\nstate:\n  postgres:\n    url: \"{{ secret('state_db') }}\"\n    lease: 1s\nservers:",
    );
    let fleet = Fleet::new("kube-hand-over", &yaml)
        .with_env("KUBECONFIG", cluster.kubeconfig.to_str().unwrap())
        .with_env("STATE_DB", &fleet_testkit::postgres::fresh_database());
    let out = fleet.up();
    assert!(out.status.success(), "{}", text(&out));
    let leader = fleet.status();
    assert_eq!(server(&leader, "api").state, ServerState::Ready);
    let standby_dir = fleet.dir.join("state-b");
    let mut standby = fleet.command();
    standby.args(["up", "-d", "--state-dir"]).arg(&standby_dir);
    let out = standby.output().unwrap();
    assert!(text(&out).contains("standing by:"), "{}", text(&out));
    let (pods, applies) = (cluster.pods(), cluster.api.applies().len());

    // What a rolling update of the control plane's Deployment does to the old pod.
    let sent = Command::new("kill")
        .args(["-TERM", &leader.pid.to_string()])
        .status()
        .unwrap();
    assert!(sent.success());
    let status_of = |dir: &Path| {
        let out = fleet
            .command()
            .args(["status", "--output", "json", "--state-dir"])
            .arg(dir)
            .output()
            .unwrap();
        serde_json::from_slice::<Status>(&out.stdout).map_err(|_| text(&out))
    };
    let taken_over = wait_until_blocking(
        "the standby leads with the server ready",
        Duration::from_secs(20),
        || match status_of(&standby_dir) {
            Ok(status) if server(&status, "api").state == ServerState::Ready => Ok(status),
            other => Err(other.map(|s| format!("{:?}", server(&s, "api").state))),
        },
    );
    wait_until_blocking("the old leader exits", Duration::from_secs(10), || {
        !alive(leader.pid)
    });
    assert_ne!(taken_over.pid, leader.pid);
    // Adopted where it ran: no pod deleted or created, nothing applied again.
    assert_eq!(cluster.pods(), pods);
    assert_eq!(
        cluster.api.applies().len(),
        applies,
        "nothing applied again"
    );
    let endpoint = server(&taken_over, "api").endpoint.clone().unwrap();
    assert_eq!(
        whoami(&cluster.runtime, &endpoint),
        format!("pid {}", pod.pid())
    );
    fleet.down_in(&standby_dir);
}
