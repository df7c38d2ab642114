//! `mcpfleet render kubernetes` as users run it, and the retention its backup CronJob
//! relies on (`export-state --keep`): the real binary, real files.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

const SECRET_VALUE: &str = "ghp_render_secret_value_0123456789";

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// Runs mcpfleet with a fixed environment that holds the example's secrets.
fn mcpfleet(args: &[&str], cwd: &Path) -> Output {
    Command::new(env!("CARGO_BIN_EXE_mcpfleet"))
        .args(args)
        .current_dir(cwd)
        .env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .env("HOME", "/home/tester")
        .env("GITHUB_TOKEN", SECRET_VALUE)
        .env("DOCS_TOKEN", SECRET_VALUE)
        .output()
        .expect("run mcpfleet")
}

fn scratch_dir(test: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("mcpfleet-render-{test}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

#[test]
fn render_kubernetes_prints_the_example_as_one_yaml_stream_without_secret_values() {
    let out = mcpfleet(
        &["render", "kubernetes", "-f", "examples/kubernetes.yaml"],
        &repo(),
    );
    assert!(out.status.success(), "{}", stderr(&out));
    let text = String::from_utf8(out.stdout).unwrap();
    assert!(
        text.starts_with("---\napiVersion: v1\nkind: Namespace\n"),
        "{text}"
    );
    // search, github, scratchpad and the control plane; docs is remote.
    assert_eq!(text.matches("\nkind: Deployment\n").count(), 4, "{text}");
    assert!(
        !text.contains(SECRET_VALUE),
        "a secret's value is in the manifests"
    );
}

#[test]
fn render_kubernetes_out_writes_a_file_per_object_and_replaces_only_its_own() {
    let dir = scratch_dir("out");
    let manifests = dir.join("manifests");
    std::fs::create_dir_all(&manifests).unwrap();
    let first = mcpfleet(
        &[
            "render",
            "kubernetes",
            "-f",
            "examples/kubernetes.yaml",
            "--out",
        ],
        &repo(),
    );
    assert!(!first.status.success(), "--out needs a directory");
    let out_dir = manifests.to_str().unwrap();
    let render = || {
        mcpfleet(
            &[
                "render",
                "kubernetes",
                "-f",
                "examples/kubernetes.yaml",
                "--out",
                out_dir,
            ],
            &repo(),
        )
    };
    assert!(render().status.success());
    // An object the fleet no longer has, from an earlier render; and files of the user's.
    let stale = manifests.join("40-deployment-retired.yaml");
    std::fs::copy(manifests.join("00-namespace-mcp-tools.yaml"), &stale).unwrap();
    std::fs::write(manifests.join("kustomization.yaml"), "resources: []\n").unwrap();
    std::fs::write(manifests.join("README.md"), "ours\n").unwrap();
    let out = render();
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(String::from_utf8_lossy(&out.stdout).contains("manifests to"));
    let mut files: Vec<String> = std::fs::read_dir(&manifests)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    files.sort();
    assert!(
        !files.contains(&"40-deployment-retired.yaml".to_string()),
        "{files:?}"
    );
    assert!(
        files.contains(&"kustomization.yaml".to_string()),
        "{files:?}"
    );
    assert!(files.contains(&"README.md".to_string()), "{files:?}");
    assert_eq!(files[0], "00-namespace-mcp-tools.yaml");
    assert!(
        files.contains(&"03-serviceaccount-mcpfleet.yaml".to_string()),
        "{files:?}"
    );
    let rendered: Vec<&String> = files
        .iter()
        .filter(|f| f.starts_with(|c: char| c.is_ascii_digit()))
        .collect();
    let stream = mcpfleet(
        &["render", "kubernetes", "-f", "examples/kubernetes.yaml"],
        &repo(),
    );
    let documents = String::from_utf8(stream.stdout)
        .unwrap()
        .matches("---\n")
        .count();
    assert_eq!(rendered.len(), documents, "one file per object: {files:?}");
    for file in rendered {
        let text = std::fs::read_to_string(manifests.join(file)).unwrap();
        assert!(
            text.starts_with("# Written by `mcpfleet render kubernetes`"),
            "{file}"
        );
        assert!(!text.contains(SECRET_VALUE), "{file}");
    }
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn render_kubernetes_refuses_a_local_program_and_names_it_where_it_is() {
    let dir = scratch_dir("refuse");
    std::fs::write(
        dir.join("fleet.yaml"),
        "version: 1\nname: tools\nservers:\n  local:\n    stdio: { command: ./server.sh }\n  ok:\n    stdio: { image: registry.example/ok:1 }\n",
    )
    .unwrap();
    let out = mcpfleet(&["render", "kubernetes", "-f", "fleet.yaml"], &dir);
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    assert!(
        out.stdout.is_empty(),
        "nothing is rendered from a fleet that cannot run"
    );
    let stderr = stderr(&out);
    assert!(
        stderr.contains(
            "server `local` runs a local program (`command:`); a cluster runs images: give it `image:`"
        ),
        "{stderr}"
    );
    assert!(
        stderr.contains("fleet.yaml:4:3"),
        "located at the server: {stderr}"
    );
    let _ = std::fs::remove_dir_all(&dir);
}

/// The backup CronJob runs `export-state FILE --keep N` into a directory of exports.
#[test]
fn export_state_keep_leaves_the_newest_exports_and_touches_nothing_else() {
    let dir = scratch_dir("keep");
    let state = dir.join("state");
    let backups = dir.join("backups");
    std::fs::create_dir_all(&backups).unwrap();
    let empty = dir.join("empty.json");
    std::fs::write(
        &empty,
        r#"{"format":1,"fleet_revisions":[],"server_revisions":[],"deployments":[],"events":[],"audit":[]}"#,
    )
    .unwrap();
    let path = |p: &Path| p.to_str().unwrap().to_owned();
    let out = mcpfleet(
        &["import-state", &path(&empty), "--state-dir", &path(&state)],
        &dir,
    );
    assert!(out.status.success(), "{}", stderr(&out));
    // Three earlier exports, the oldest first, and files that are not exports.
    let now = std::time::SystemTime::now();
    for (hours_ago, name) in [(30, "a.json"), (20, "b.json"), (10, "c.json")] {
        let export = backups.join(name);
        std::fs::copy(&empty, &export).unwrap();
        let file = std::fs::File::options().write(true).open(&export).unwrap();
        file.set_modified(now - std::time::Duration::from_secs(hours_ago * 3600))
            .unwrap();
    }
    std::fs::write(backups.join("notes.json"), "{\"not\": \"an export\"}\n").unwrap();
    std::fs::write(backups.join("README.md"), "exports\n").unwrap();
    let export = |name: &str, keep: &str| {
        let file = path(&backups.join(name));
        mcpfleet(
            &[
                "export-state",
                &file,
                "--keep",
                keep,
                "--state-dir",
                &path(&state),
            ],
            &dir,
        )
    };
    assert!(
        !export("x.json", "0").status.success(),
        "--keep 0 keeps nothing"
    );
    let out = export("d.json", "2");
    assert!(out.status.success(), "{}", stderr(&out));
    let mut files: Vec<String> = std::fs::read_dir(&backups)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    files.sort();
    assert_eq!(files, ["README.md", "c.json", "d.json", "notes.json"]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        stdout.contains("removed the older export") && stdout.contains("a.json"),
        "{stdout}"
    );
    let _ = std::fs::remove_dir_all(&dir);
}

/// A mock of the Kubernetes API server (no real one can run here): plain HTTP/1.1 on a
/// loopback port, answering what `preflight` asks about the example's namespace
/// `mcp-tools`, and recording every request.
mod mock_api_server {
    use serde_json::{Value, json};
    use std::io::{BufRead, BufReader, Read, Write};
    use std::net::{TcpListener, TcpStream};
    use std::sync::{Arc, Mutex};

    pub(super) struct Cluster {
        /// (verb, resource) pairs the credentials may not do (`pods/attach` for a
        /// subresource).
        pub denied: Vec<(&'static str, &'static str)>,
        /// Secret name → its keys.
        pub secrets: Vec<(&'static str, Vec<&'static str>)>,
    }

    pub(super) struct Running {
        pub port: u16,
        /// `METHOD path` of each request, access reviews as `review VERB RESOURCE` (or
        /// `RESOURCE/SUBRESOURCE`).
        pub seen: Arc<Mutex<Vec<String>>>,
    }

    pub(super) fn start(cluster: Cluster) -> Running {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let seen = Arc::new(Mutex::new(Vec::new()));
        let cluster = Arc::new(cluster);
        let record = Arc::clone(&seen);
        std::thread::spawn(move || {
            for stream in listener.incoming().flatten() {
                let (cluster, record) = (Arc::clone(&cluster), Arc::clone(&record));
                std::thread::spawn(move || serve(stream, &cluster, &record));
            }
        });
        Running { port, seen }
    }

    /// Answers requests on one keep-alive connection until the client closes it.
    fn serve(stream: TcpStream, cluster: &Cluster, seen: &Mutex<Vec<String>>) {
        let mut writer = stream.try_clone().unwrap();
        let mut reader = BufReader::new(stream);
        loop {
            let mut request_line = String::new();
            if reader.read_line(&mut request_line).unwrap_or(0) == 0 {
                return;
            }
            let mut length = 0;
            loop {
                let mut header = String::new();
                reader.read_line(&mut header).unwrap();
                let header = header.trim_end();
                if header.is_empty() {
                    break;
                }
                if let Some((name, value)) = header.split_once(':')
                    && name.eq_ignore_ascii_case("content-length")
                {
                    length = value.trim().parse().unwrap();
                }
            }
            let mut body = vec![0; length];
            reader.read_exact(&mut body).unwrap();
            let mut words = request_line.split_whitespace();
            let method = words.next().unwrap_or_default().to_owned();
            let target = words.next().unwrap_or_default();
            let path = target.split('?').next().unwrap_or_default().to_owned();
            let (status, reply) = answer(cluster, &method, &path, &body, seen);
            let reply = reply.to_string();
            write!(
                writer,
                "HTTP/1.1 {status} X\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n{reply}",
                reply.len()
            )
            .unwrap();
        }
    }

    fn answer(
        cluster: &Cluster,
        method: &str,
        path: &str,
        body: &[u8],
        seen: &Mutex<Vec<String>>,
    ) -> (u16, Value) {
        let not_found = json!({ "kind": "Status", "apiVersion": "v1", "status": "Failure", "reason": "NotFound", "code": 404 });
        if path == "/apis/authorization.k8s.io/v1/selfsubjectaccessreviews" && method == "POST" {
            let mut review: Value = serde_json::from_slice(body).unwrap();
            let attributes = &review["spec"]["resourceAttributes"];
            let verb = attributes["verb"].as_str().unwrap_or_default().to_owned();
            let mut resource = attributes["resource"]
                .as_str()
                .unwrap_or_default()
                .to_owned();
            if let Some(subresource) = attributes["subresource"].as_str() {
                resource = format!("{resource}/{subresource}");
            }
            let allowed = !cluster
                .denied
                .iter()
                .any(|(v, r)| *v == verb && *r == resource);
            seen.lock()
                .unwrap()
                .push(format!("review {verb} {resource}"));
            review["status"] = json!({ "allowed": allowed });
            return (201, review);
        }
        seen.lock().unwrap().push(format!("{method} {path}"));
        match (method, path) {
            ("GET", "/version") => (
                200,
                json!({ "major": "1", "minor": "35", "gitVersion": "v1.35.2", "gitCommit": "0",
                        "gitTreeState": "clean", "buildDate": "2026-01-01T00:00:00Z",
                        "goVersion": "go1.25", "compiler": "gc", "platform": "linux/amd64" }),
            ),
            ("GET", "/api/v1/namespaces/mcp-tools") => (
                200,
                json!({ "apiVersion": "v1", "kind": "Namespace", "metadata": { "name": "mcp-tools" } }),
            ),
            ("GET", "/api/v1/namespaces/mcp-tools/resourcequotas") => (
                200,
                json!({ "apiVersion": "v1", "kind": "ResourceQuotaList", "metadata": {}, "items": [] }),
            ),
            ("GET", secret) if secret.starts_with("/api/v1/namespaces/mcp-tools/secrets/") => {
                let name = secret.rsplit('/').next().unwrap_or_default();
                match cluster.secrets.iter().find(|(n, _)| *n == name) {
                    Some((_, keys)) => {
                        let data: serde_json::Map<String, Value> = keys
                            .iter()
                            .map(|key| ((*key).to_owned(), json!("c2VjcmV0")))
                            .collect();
                        (
                            200,
                            json!({ "apiVersion": "v1", "kind": "Secret",
                                    "metadata": { "name": name, "namespace": "mcp-tools" }, "data": data }),
                        )
                    }
                    None => (404, not_found),
                }
            }
            _ => (404, not_found),
        }
    }
}

/// A kubeconfig whose context `mock` points at the mock API server.
fn mock_kubeconfig(dir: &Path, port: u16) -> PathBuf {
    let path = dir.join("kubeconfig");
    std::fs::write(
        &path,
        format!(
            "apiVersion: v1\nkind: Config\nclusters:\n- name: mock\n  cluster: {{ server: \"http://127.0.0.1:{port}\" }}\n\
             users:\n- name: tester\n  user: {{ token: not-a-real-token }}\ncontexts:\n- name: mock\n  context: {{ cluster: mock, user: tester }}\ncurrent-context: mock\n"
        ),
    )
    .unwrap();
    path
}

fn example() -> String {
    repo()
        .join("examples/kubernetes.yaml")
        .display()
        .to_string()
}

#[test]
fn mock_preflight_of_the_example_passes_a_cluster_that_has_everything_and_writes_nothing() {
    let dir = scratch_dir("preflight-pass");
    let api = mock_api_server::start(mock_api_server::Cluster {
        denied: Vec::new(),
        secrets: vec![
            ("github", vec!["token"]),
            ("tools-secrets", vec!["docs_token"]),
            ("mcp-tls", vec!["tls.crt", "tls.key"]),
        ],
    });
    let kubeconfig = mock_kubeconfig(&dir, api.port);
    let out = mcpfleet(
        &[
            "preflight",
            "-f",
            &example(),
            "--kubeconfig",
            kubeconfig.to_str().unwrap(),
            "--context",
            "mock",
        ],
        &dir,
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{stdout}{}", stderr(&out));
    assert!(
        stdout.starts_with(&format!(
            "cluster http://127.0.0.1:{}/ (v1.35.2), namespace mcp-tools",
            api.port
        )),
        "{stdout}"
    );
    assert!(stdout.contains("preflight passed"), "{stdout}");
    assert!(
        stdout.contains("github"),
        "the referenced Secrets are checked: {stdout}"
    );
    let seen = api.seen.lock().unwrap().clone();
    assert!(
        seen.iter().any(|s| s == "review patch deployments"),
        "permissions are reviewed: {seen:?}"
    );
    assert!(
        seen.iter()
            .all(|s| s.starts_with("GET ") || s.starts_with("review ")),
        "preflight only reads (and asks for access reviews): {seen:?}"
    );
}

#[test]
fn mock_preflight_reports_each_failure_with_what_to_do_and_exits_1() {
    let dir = scratch_dir("preflight-fail");
    let api = mock_api_server::start(mock_api_server::Cluster {
        denied: vec![("patch", "deployments")],
        secrets: vec![
            ("tools-secrets", vec!["docs_token"]),
            ("mcp-tls", vec!["tls.crt"]),
        ],
    });
    let kubeconfig = mock_kubeconfig(&dir, api.port);
    let out = mcpfleet(
        &[
            "preflight",
            "-f",
            &example(),
            "--kubeconfig",
            kubeconfig.to_str().unwrap(),
            "--context",
            "mock",
            "--output",
            "json",
        ],
        &dir,
    );
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(report["passed"], false);
    assert_eq!(report["namespace"], "mcp-tools");
    let failed: Vec<&str> = report["checks"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|c| c["severity"] == "failed")
        .map(|c| c["message"].as_str().unwrap())
        .collect();
    assert!(
        failed
            .iter()
            .any(|m| m.contains("cannot patch deployments.apps in namespace mcp-tools")),
        "{failed:#?}"
    );
    assert!(
        failed
            .iter()
            .any(|m| m.contains("Secret mcp-tools/github does not exist")
                && m.contains("kubectl -n mcp-tools create secret generic github")),
        "{failed:#?}"
    );
    assert!(!String::from_utf8_lossy(&out.stdout).contains(SECRET_VALUE));
}

#[test]
fn mock_preflight_with_a_kubeconfig_checks_that_you_may_port_forward() {
    // The example does not say `kubernetes.reach`: a control plane run with this
    // kubeconfig reaches its http pods through port-forward, as this user.
    let dir = scratch_dir("preflight-port-forward");
    let api = mock_api_server::start(mock_api_server::Cluster {
        denied: vec![("create", "pods/portforward")],
        secrets: vec![
            ("github", vec!["token"]),
            ("tools-secrets", vec!["docs_token"]),
            ("mcp-tls", vec!["tls.crt", "tls.key"]),
        ],
    });
    let kubeconfig = mock_kubeconfig(&dir, api.port);
    let out = mcpfleet(
        &[
            "preflight",
            "-f",
            &example(),
            "--kubeconfig",
            kubeconfig.to_str().unwrap(),
        ],
        &dir,
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(1), "{stdout}{}", stderr(&out));
    assert!(
        stdout.contains(
            "failed: cannot create pods/portforward in namespace mcp-tools: ask an admin for a \
             Role and RoleBinding in mcp-tools granting it"
        ),
        "{stdout}"
    );
}

#[test]
fn preflight_without_a_kubeconfig_says_where_it_looked() {
    let dir = scratch_dir("preflight-no-kubeconfig");
    let missing = dir.join("no-such-kubeconfig");
    let out = mcpfleet(
        &[
            "preflight",
            "-f",
            &example(),
            "--kubeconfig",
            missing.to_str().unwrap(),
        ],
        &dir,
    );
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert!(
        stderr(&out).contains(&format!("no kubeconfig at {}", missing.display())),
        "{}",
        stderr(&out)
    );
}
