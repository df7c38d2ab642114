//! `runtime: kubernetes` on a **real cluster** (kind, k3d): ignored unless asked for, since
//! no Kubernetes API server can run where mcpfleet's CI runs. With
//! `MCPFLEET_E2E_KUBECONFIG` (the cluster's kubeconfig) and `MCPFLEET_E2E_LOAD` (the
//! command that loads an image archive into it) set, run them by name:
//!
//! ```sh
//! cargo test -p mcpfleet --test up -- --ignored e2e_cluster_
//! ```
//!
//! docs/kubernetes.md ("Running the real-cluster tests") says how to make such a cluster.
//! Each test works in a namespace of its own, deleted at its end. The control plane runs
//! outside the cluster (here, reaching http pods by port-forward and stdio pods by attach),
//! except in the last test, where the rendered manifests run it in the cluster. The
//! servers are the sample server's image, built with Podman from this build and loaded
//! into the cluster once per run.

use super::*;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};

const WHERE: &str =
    "see docs/kubernetes.md, \"Running the real-cluster tests\" (kind or k3d, step by step)";

/// The kubeconfig of the cluster the tests run on.
fn kubeconfig() -> PathBuf {
    match std::env::var_os("MCPFLEET_E2E_KUBECONFIG") {
        Some(path) => PathBuf::from(path),
        None => panic!(
            "MCPFLEET_E2E_KUBECONFIG is not set: the e2e_cluster_ tests need a real cluster's kubeconfig; {WHERE}"
        ),
    }
}

/// `kubectl` on the test cluster; its output, having succeeded.
fn kubectl(args: &[&str]) -> String {
    let out = kubectl_output(args, None);
    assert!(out.status.success(), "kubectl {args:?}: {}", text(&out));
    String::from_utf8(out.stdout).unwrap()
}

fn kubectl_output(args: &[&str], stdin: Option<&[u8]>) -> Output {
    use std::io::Write as _;
    let mut command = Command::new("kubectl");
    command.arg("--kubeconfig").arg(kubeconfig()).args(args);
    let mut child = command
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot run kubectl ({e}); {WHERE}"));
    let mut input = child.stdin.take().unwrap();
    input.write_all(stdin.unwrap_or_default()).unwrap();
    drop(input);
    child.wait_with_output().unwrap()
}

/// The sample server's image (from this build's `mcp-sample-server`), in the cluster:
/// built with Podman, saved as an archive and loaded with `MCPFLEET_E2E_LOAD` (`kind load
/// image-archive --name NAME`, `k3d image import -c NAME`: the archive's path is appended),
/// once per run.
fn sample_image_in_cluster() -> &'static str {
    static LOADED: OnceLock<String> = OnceLock::new();
    LOADED.get_or_init(|| {
        let load = std::env::var("MCPFLEET_E2E_LOAD").unwrap_or_else(|_| {
            panic!("MCPFLEET_E2E_LOAD is not set: the command that loads an image archive into the cluster; {WHERE}")
        });
        let reference = fleet_testkit::podman::sample_image("e2e");
        let archive = std::env::temp_dir().join(format!("mcpfleet-e2e-sample-{}.tar", std::process::id()));
        let saved = fleet_testkit::podman::podman()
            .args(["save", "--quiet", "-o"])
            .arg(&archive)
            .arg(&reference)
            .output()
            .unwrap();
        assert!(saved.status.success(), "podman save: {}", text(&saved));
        let mut words = load.split_whitespace();
        let loaded = Command::new(words.next().expect("MCPFLEET_E2E_LOAD is empty"))
            .args(words)
            .arg(&archive)
            .output()
            .unwrap();
        assert!(loaded.status.success(), "{load} {}: {}", archive.display(), text(&loaded));
        let _ = std::fs::remove_file(&archive);
        reference
    })
}

/// A namespace of the test cluster for one test, deleted (with everything in it) when
/// dropped.
struct Namespace(String);

impl Namespace {
    fn create(test: &str) -> Self {
        let name = format!("mcpfleet-e2e-{test}-{}", std::process::id());
        kubectl(&["create", "namespace", &name]);
        Namespace(name)
    }

    /// The names (`deployment.apps/api-r1`) of the objects of `kinds` in it.
    fn objects(&self, kinds: &str) -> Vec<String> {
        kubectl(&["get", kinds, "-n", &self.0, "-o", "name"])
            .lines()
            .map(str::to_owned)
            .collect()
    }

    /// Waits until the namespace's Deployments are exactly `names` (`api-r1`).
    fn wait_for_deployments(&self, names: &[&str]) {
        let expected: Vec<String> = names
            .iter()
            .map(|n| format!("deployment.apps/{n}"))
            .collect();
        wait_until_blocking(
            &format!("the Deployments are {names:?}"),
            Duration::from_secs(120),
            || match self.objects("deployments") {
                found if found == expected => Ok(()),
                found => Err(found),
            },
        );
    }
}

impl Drop for Namespace {
    fn drop(&mut self) {
        let _ = kubectl_output(&["delete", "namespace", &self.0, "--wait=false"], None);
    }
}

/// The quick start (examples/quickstart.yaml) on a cluster: the same three servers and
/// waves, from the sample server's image, in `namespace`.
fn quickstart(namespace: &str) -> String {
    format!(
        r#"
version: 1
name: quickstart
runtime: kubernetes
kubernetes: {{ namespace: {namespace} }}
servers:
  notes:
    stdio: {{ image: "{image}", args: ["--name", "notes"] }}
    container: {{ pull: never }}
    health:
      mcp:
        expect_tools: [echo, add]
        call: {{ tool: echo, arguments: {{ message: ping }}, expect: {{ contains: ping }} }}
  search:
    http: {{ image: "{image}", port: 8080, args: ["--transport", "http", "--port", "8080", "--name", "search"] }}
    container: {{ pull: never }}
    replicas: 2
    depends_on: [notes]
    health:
      mcp: {{ expect_tools: [echo] }}
  assistant:
    stdio: {{ image: "{image}", args: ["--name", "assistant"] }}
    container: {{ pull: never }}
    depends_on: [search]
"#,
        image = sample_image_in_cluster()
    )
}

/// `api` (http, from the sample image with extra `args`) rolled out by `rollout`, in
/// `namespace`.
fn api_fleet(namespace: &str, args: &str, rollout: &str) -> String {
    format!(
        r#"
version: 1
name: e2e-api
runtime: kubernetes
kubernetes: {{ namespace: {namespace} }}
servers:
  api:
    http:
      image: "{image}"
      port: 8080
      args: ["--transport", "http", "--port", "8080", "--tools", "echo,whoami"{args}]
    container: {{ pull: never }}
    rollout:
{rollout}
"#,
        image = sample_image_in_cluster()
    )
}

#[test]
#[ignore = "a real cluster: set MCPFLEET_E2E_KUBECONFIG and MCPFLEET_E2E_LOAD"]
fn e2e_cluster_quickstart_answers_through_the_gateway_and_down_leaves_nothing() {
    let namespace = Namespace::create("quickstart");
    let fleet = Fleet::new("e2e-quickstart", &quickstart(&namespace.0))
        .with_env("KUBECONFIG", kubeconfig().to_str().unwrap());
    let out = fleet.up();
    assert!(out.status.success(), "{}", text(&out));
    let status = fleet.status();
    for name in ["notes", "search", "assistant"] {
        assert_eq!(
            server(&status, name).state,
            ServerState::Ready,
            "{status:#?}"
        );
    }
    assert_eq!(
        namespace.objects("deployments"),
        [
            "deployment.apps/assistant-r1",
            "deployment.apps/notes-r1",
            "deployment.apps/search-r1"
        ]
    );
    // An http pod through its port-forward, a stdio pod through its attach.
    for name in ["search", "notes"] {
        let endpoint = server(&status, name).endpoint.clone().unwrap();
        assert_echo_answers(&endpoint, &format!("{name} on a cluster"));
    }

    let down = fleet.mcpfleet(&["down"]);
    assert!(down.status.success(), "{}", text(&down));
    wait_until_blocking(
        "nothing of the fleet is left in the namespace",
        Duration::from_secs(120),
        || match namespace.objects("deployments,replicasets,pods") {
            left if left.is_empty() => Ok(()),
            left => Err(left),
        },
    );
}

#[test]
#[ignore = "a real cluster: set MCPFLEET_E2E_KUBECONFIG and MCPFLEET_E2E_LOAD"]
fn e2e_cluster_canary_of_a_failing_revision_is_aborted_by_its_analysis() {
    let namespace = Namespace::create("canary");
    let rollout = r"      strategy: canary
      steps: [{ weight: 50, pause: 2m }]
      analysis: { interval: 2s, max_error_rate: 0.05, min_requests: 10, failure_limit: 2 }";
    let fleet = Fleet::new("e2e-canary", &api_fleet(&namespace.0, "", rollout))
        .with_env("KUBECONFIG", kubeconfig().to_str().unwrap());
    let out = fleet.up();
    assert!(out.status.success(), "{}", text(&out));
    let endpoint = server(&fleet.status(), "api").endpoint.clone().unwrap();

    // Revision 2 fails one call in five, under the traffic of new clients.
    fleet.rewrite(&api_fleet(
        &namespace.0,
        r#", "--error-rate", "0.2""#,
        rollout,
    ));
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let deployed = runtime.block_on(async {
        let stop = Arc::new(AtomicBool::new(false));
        let calls = Arc::new(AtomicU64::new(0));
        let load = tokio::spawn(super::canary::new_clients(endpoint, stop.clone(), calls));
        let deploy = fleet.deploy_in_background();
        let deployed = tokio::task::spawn_blocking(move || deploy.join().unwrap())
            .await
            .unwrap();
        stop.store(true, Ordering::SeqCst);
        load.await.unwrap();
        deployed
    });
    assert_eq!(deployed.status.code(), Some(1), "{}", text(&deployed));
    assert!(
        String::from_utf8_lossy(&deployed.stderr).contains("analysis failed"),
        "{}",
        text(&deployed)
    );
    let after = fleet.status();
    assert_eq!(server(&after, "api").revision, Some(1), "{after:#?}");
    namespace.wait_for_deployments(&["api-r1"]);
}

#[test]
#[ignore = "a real cluster: set MCPFLEET_E2E_KUBECONFIG and MCPFLEET_E2E_LOAD"]
fn e2e_cluster_rollback_applies_the_stored_revision_again() {
    let namespace = Namespace::create("rollback");
    let rollout = "      strategy: rolling";
    let fleet = Fleet::new("e2e-rollback", &api_fleet(&namespace.0, "", rollout))
        .with_env("KUBECONFIG", kubeconfig().to_str().unwrap());
    let out = fleet.up();
    assert!(out.status.success(), "{}", text(&out));
    fleet.rewrite(&api_fleet(&namespace.0, r#", "--name", "two""#, rollout));
    let deployed = fleet.mcpfleet(&["deploy"]);
    assert!(deployed.status.success(), "{}", text(&deployed));
    namespace.wait_for_deployments(&["api-r2"]);

    let rolled = fleet.mcpfleet(&["rollback", "api"]);
    assert!(rolled.status.success(), "{}", text(&rolled));
    namespace.wait_for_deployments(&["api-r1"]);
    let status = fleet.status();
    let api = server(&status, "api");
    assert_eq!(
        (api.revision, api.state),
        (Some(1), ServerState::Ready),
        "{status:#?}"
    );
    assert_echo_answers(api.endpoint.as_deref().unwrap(), "revision 1 again");
}

/// `kubectl port-forward` to `target`'s `port` in `namespace`, on a free local port; the
/// local port, and the forward (killed when dropped).
struct PortForward {
    port: u16,
    process: std::process::Child,
}

impl PortForward {
    fn start(namespace: &str, target: &str, port: u16) -> Self {
        use std::io::BufRead as _;
        let mut process = Command::new("kubectl")
            .arg("--kubeconfig")
            .arg(kubeconfig())
            .args(["port-forward", "-n", namespace, target, &format!(":{port}")])
            .stdout(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        // "Forwarding from 127.0.0.1:PORT -> 7470"
        let mut line = String::new();
        std::io::BufReader::new(process.stdout.take().unwrap())
            .read_line(&mut line)
            .unwrap();
        let local = (line.split_whitespace())
            .find_map(|word| word.strip_prefix("127.0.0.1:")?.parse().ok())
            .unwrap_or_else(|| panic!("kubectl port-forward said {line:?}"));
        PortForward {
            port: local,
            process,
        }
    }
}

impl Drop for PortForward {
    fn drop(&mut self) {
        let _ = self.process.kill();
        let _ = self.process.wait();
    }
}

#[test]
#[ignore = "a real cluster with mcpfleet's image loaded: set MCPFLEET_E2E_KUBECONFIG, MCPFLEET_E2E_LOAD and MCPFLEET_E2E_IMAGE"]
fn e2e_cluster_rendered_control_plane_serves_the_gateway_from_its_pod() {
    const TOKEN: &str = "mcpf_e2e-token-of-the-cluster";
    let image = std::env::var("MCPFLEET_E2E_IMAGE").unwrap_or_else(|_| {
        panic!("MCPFLEET_E2E_IMAGE is not set: mcpfleet's image as loaded into the cluster (`cargo xtask image`); {WHERE}")
    });
    let namespace = Namespace::create("in-cluster");
    let yaml = api_fleet(&namespace.0, "", "      strategy: rolling").replace(
        "runtime: kubernetes\nkubernetes: {",
        &format!("runtime: kubernetes\nkubernetes: {{ image: \"{image}\", "),
    ) + &format!(
        "gateway:\n  listen: 127.0.0.1:7470\n  auth:\n    tokens: [{{ name: e2e, sha256: \"{}\", servers: [\"*\"] }}]\n  tls: {{ terminated_by: proxy }}\n",
        super::admin_auth::sha256_hex(TOKEN)
    );
    let fleet = Fleet::new("e2e-in-cluster", &yaml);
    let rendered = fleet
        .command()
        .args(["render", "kubernetes"])
        .output()
        .unwrap();
    assert!(rendered.status.success(), "{}", text(&rendered));
    let applied = kubectl_output(&["apply", "-f", "-"], Some(&rendered.stdout));
    assert!(applied.status.success(), "{}", text(&applied));
    // Ready: its readiness probe reached `/healthz` at the pod's address.
    kubectl(&[
        "rollout",
        "status",
        "deployment/mcpfleet",
        "-n",
        &namespace.0,
        "--timeout=180s",
    ]);

    // The Service's gateway port, through a port-forward: a tools/call with the token once
    // the control plane in the pod has deployed `api`.
    let forward = PortForward::start(&namespace.0, "service/mcpfleet", 7470);
    let endpoint = format!("http://127.0.0.1:{}/mcp/api", forward.port);
    let check = echo_check("from the control plane's pod");
    let headers = [("Authorization".to_owned(), format!("Bearer {TOKEN}"))];
    let runtime = tokio::runtime::Runtime::new().unwrap();
    runtime.block_on(wait_until(
        "a tools/call through the pod's gateway",
        Duration::from_secs(180),
        async || {
            let report =
                fleet_mcp::probe_http(&endpoint, &headers, fleet_spec::model::Era::Legacy, &check)
                    .await;
            if report.passed() {
                Ok(())
            } else {
                Err(report.to_string())
            }
        },
    ));
}
