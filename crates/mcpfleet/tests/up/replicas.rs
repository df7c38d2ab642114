//! Gateway replicas (`mcpfleet gateway`): real processes beside a control plane on a real
//! PostgreSQL, routing by the view the control plane publishes to the store they share —
//! its routes, its tokens, a canary's weights.

use super::admin_auth::{block_on, gateway_initialize, sha256_hex};
use super::*;
use std::io::{BufRead as _, BufReader};
use std::process::{Child, Stdio};
use std::sync::{Arc, Mutex, mpsc};

const CI_TOKEN: &str = "mcpf_replica-ci-token";
const OLD_TOKEN: &str = "mcpf_replica-old-token";

/// A fleet on the state database of the secret `STATE_DB`: `api` (http, `ARGS` added, with
/// `ROLLOUT` if any) and `notes` (stdio, shared), the gateway guarded by `TOKENS` (names
/// from `ci`, `old`).
fn replicated_fleet(name: &str, args: &str, rollout: &str, tokens: &[&str]) -> String {
    let tokens: String = tokens
        .iter()
        .map(|token| {
            let secret = match *token {
                "ci" => CI_TOKEN,
                _ => OLD_TOKEN,
            };
            format!(
                "      - {{ name: {token}, sha256: \"{}\", servers: [\"*\"] }}\n",
                sha256_hex(secret)
            )
        })
        .collect();
    format!(
        r#"
version: 1
name: {name}
secrets:
  state_db: {{ env: STATE_DB }}
state:
  postgres:
    url: "{{{{ secret('state_db') }}}}"
servers:
  api:
    http: {{ command: SAMPLE, args: ["--transport", "http", "--port", "{{{{ port }}}}", "--tools", "echo,whoami"{args}] }}
{rollout}
  notes:
    stdio: {{ command: SAMPLE, args: ["--tools", "echo,whoami"], isolation: shared }}
gateway:
  listen: 127.0.0.1:0
  auth:
    tokens:
{tokens}"#
    )
    .replace("SAMPLE", &sample())
}

/// A running `mcpfleet gateway` of a fleet, on a port of its own: what a test of gateway
/// replicas starts beside the control plane. SIGTERM on drop.
pub(super) struct Replica {
    child: Child,
    /// `http://127.0.0.1:PORT`, as the replica says it serves.
    pub(super) url: String,
    /// Its log so far.
    log: Arc<Mutex<String>>,
}

impl Replica {
    /// Starts a replica of `fleet` (its file, its environment) listening on a free port of
    /// 127.0.0.1, and returns once it serves.
    pub(super) fn start(fleet: &Fleet) -> Replica {
        Self::start_with(fleet, &[])
    }

    /// [`Replica::start`] with `args` added to `mcpfleet gateway`'s.
    fn start_with(fleet: &Fleet, args: &[&str]) -> Replica {
        let mut child = fleet
            .command()
            .args(["gateway", "--listen", "127.0.0.1:0"])
            .args(args)
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let log = Arc::new(Mutex::new(String::new()));
        let (serving, url) = mpsc::channel();
        let stderr = child.stderr.take().unwrap();
        let kept = log.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                if let Some((_, rest)) = line.split_once("serving at ") {
                    let _ = serving.send(rest.split_whitespace().next().unwrap_or("").to_owned());
                }
                let mut log = kept.lock().unwrap();
                log.push_str(&line);
                log.push('\n');
            }
        });
        let url = url
            .recv_timeout(Duration::from_secs(30))
            .unwrap_or_else(|_| {
                panic!(
                    "the replica did not say where it serves:\n{}",
                    log.lock().unwrap()
                )
            });
        Replica { child, url, log }
    }

    /// Where the replica said it serves its metrics, if it does.
    fn metrics_url(&self) -> Option<String> {
        let log = self.log();
        let (_, rest) = log.split_once("its metrics at ")?;
        rest.split_whitespace().next().map(str::to_owned)
    }

    /// The replica's endpoint of `server`.
    pub(super) fn endpoint(&self, server: &str) -> String {
        format!("{}/mcp/{server}", self.url)
    }

    fn log(&self) -> String {
        self.log.lock().unwrap().clone()
    }
}

impl Drop for Replica {
    fn drop(&mut self) {
        let _ = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status();
        let _ = self.child.wait();
    }
}

/// `GET url` (no token): the status and the body.
fn get(url: &str) -> (u16, String) {
    block_on(async {
        let response = http_client().get(url).send().await.unwrap();
        let status = response.status().as_u16();
        (status, response.text().await.unwrap())
    })
}

/// `body` POSTed to `endpoint` with `token`, on `session` if any, as `Host: host` if
/// given: the status, the session id answered, and the answer's text.
fn post_as(
    endpoint: &str,
    token: &str,
    session: Option<&str>,
    host: Option<&str>,
    body: &str,
) -> (u16, Option<String>, String) {
    block_on(async {
        let mut request = http_client()
            .post(endpoint)
            .header("accept", "application/json, text/event-stream")
            .header("content-type", "application/json")
            .header("authorization", format!("Bearer {token}"))
            .body(body.to_owned());
        if let Some(session) = session {
            request = request.header("mcp-session-id", session);
        }
        if let Some(host) = host {
            request = request.header("host", host);
        }
        let response = request.send().await.unwrap();
        let status = response.status().as_u16();
        let session = response
            .headers()
            .get("mcp-session-id")
            .map(|id| id.to_str().unwrap().to_owned());
        (status, session, response.text().await.unwrap())
    })
}

/// The last JSON-RPC message of an (SSE or JSON) answer; `Null` if none.
fn last_message(text: &str) -> serde_json::Value {
    let data = text
        .lines()
        .filter_map(|l| l.strip_prefix("data: "))
        .next_back()
        .unwrap_or(text);
    serde_json::from_str(data).unwrap_or_default()
}

const INITIALIZE: &str = r#"{"jsonrpc":"2.0","id":1,"method":"initialize","params":{"protocolVersion":"2025-11-25","capabilities":{},"clientInfo":{"name":"replica-test","version":"0"}}}"#;
const INITIALIZED: &str = r#"{"jsonrpc":"2.0","method":"notifications/initialized"}"#;
const WHOAMI: &str =
    r#"{"jsonrpc":"2.0","id":2,"method":"tools/call","params":{"name":"whoami","arguments":{}}}"#;

/// A new session at `endpoint` with `token`, then `whoami` on it: the answer (`pid N`), or
/// the HTTP status and body of the first refusal.
fn whoami(endpoint: &str, token: &str) -> Result<String, String> {
    let (status, session, text) = post_as(endpoint, token, None, None, INITIALIZE);
    let Some(session) = session.filter(|_| status == 200) else {
        return Err(format!("HTTP {status}: {text}"));
    };
    let (status, _, _) = post_as(endpoint, token, Some(&session), None, INITIALIZED);
    if status != 202 {
        return Err(format!("HTTP {status} to initialized"));
    }
    let (_, _, text) = post_as(endpoint, token, Some(&session), None, WHOAMI);
    let message = last_message(&text);
    message["result"]["content"][0]["text"]
        .as_str()
        .map(str::to_owned)
        .ok_or_else(|| format!("{message} ({text})"))
}

#[test]
fn a_gateway_replica_waits_for_the_view_then_serves_with_the_fleets_tokens_as_deploys_change_them()
{
    let url = fleet_testkit::postgres::fresh_database();
    let name = "replica-tokens";
    let fleet = Fleet::new(name, &replicated_fleet(name, "", "", &["ci", "old"]))
        .with_env("STATE_DB", &url);

    // Before any control plane published a view: not ready, and `/mcp` says why.
    let replica = Replica::start(&fleet);
    let api = replica.endpoint("api");
    let (status, body) = get(&format!("{}/readyz", replica.url));
    assert_eq!(status, 503, "{body}");
    assert!(body.contains("api"), "{body}");
    let waiting = whoami(&api, CI_TOKEN).unwrap_err();
    assert!(
        waiting.starts_with("HTTP 503") && waiting.contains("no instances"),
        "{waiting}"
    );
    assert_eq!(gateway_initialize(&api, "mcpf_not-a-token"), 401);

    let out = fleet.up();
    assert!(out.status.success(), "{}", text(&out));
    let pid = server(&fleet.status(), "api").instances[0].pid.unwrap();
    // The replica follows the view: no sleep, the first answer from the server.
    let answer = first_answer(&api);
    assert_eq!(answer, format!("pid {pid}"));
    assert_eq!(get(&format!("{}/readyz", replica.url)).0, 200);
    assert_eq!(whoami(&api, OLD_TOKEN), Ok(format!("pid {pid}")));
    // A stdio server's pipes are the control plane's: the replica relays to its gateway.
    let notes = server(&fleet.status(), "notes").instances[0].pid.unwrap();
    assert_eq!(
        whoami(&replica.endpoint("notes"), CI_TOKEN),
        Ok(format!("pid {notes}"))
    );
    // The fleet's tokens guard the replica too.
    assert_eq!(gateway_initialize(&api, "mcpf_not-a-token"), 401);
    let anonymous = block_on(async {
        post(
            &http_client(),
            &api,
            None,
            r#"{"jsonrpc":"2.0","id":1,"method":"ping"}"#,
        )
        .await
        .status()
        .as_u16()
    });
    assert_eq!(anonymous, 401);

    // A deployment that removes a token: the replica refuses it from then on.
    fleet.rewrite(&replicated_fleet(name, "", "", &["ci"]));
    let out = fleet.mcpfleet(&["deploy"]);
    assert!(out.status.success(), "{}", text(&out));
    wait_until_blocking(
        "the replica refuses the removed token",
        Duration::from_secs(20),
        || gateway_initialize(&api, OLD_TOKEN) == 401,
    );
    assert_eq!(whoami(&api, CI_TOKEN), Ok(format!("pid {pid}")));
    assert!(
        !replica.log().contains(CI_TOKEN),
        "a token reached the log:\n{}",
        replica.log()
    );
}

#[test]
fn a_canary_step_reaches_the_replica_new_sessions_land_where_the_weights_say() {
    let url = fleet_testkit::postgres::fresh_database();
    let name = "replica-canary";
    let rollout = "    rollout:\n      strategy: canary\n      steps: [{ weight: 100, pause: {} }]";
    let fleet =
        Fleet::new(name, &replicated_fleet(name, "", rollout, &["ci"])).with_env("STATE_DB", &url);
    let out = fleet.up();
    assert!(out.status.success(), "{}", text(&out));
    let stable = server(&fleet.status(), "api").instances[0].pid.unwrap();
    let replica = Replica::start(&fleet);
    let api = replica.endpoint("api");
    let first = first_answer(&api);
    assert_eq!(first, format!("pid {stable}"));

    // The canary's step gives it all new sessions (weight 100, stable 0): on the replica as
    // on the control plane's own gateway.
    fleet.rewrite(&replicated_fleet(
        name,
        r#", "--name", "v2""#,
        rollout,
        &["ci"],
    ));
    let deploy = fleet.deploy_in_background();
    let waiting = super::canary::wait_for_promote(&fleet);
    let canary = super::deploy::instance_pids(&waiting, "api")
        .into_iter()
        .find(|(id, _)| id.contains("-r2-"))
        .map(|(_, pid)| pid)
        .unwrap();
    let landed = wait_until_blocking(
        "a new session on the replica lands on the canary",
        Duration::from_secs(20),
        || {
            whoami(&api, CI_TOKEN)
                .ok()
                .filter(|a| *a != format!("pid {stable}"))
        },
    );
    assert_eq!(landed, format!("pid {canary}"));

    let promoted = fleet.mcpfleet(&["promote", "api"]);
    assert!(promoted.status.success(), "{}", text(&promoted));
    let deployed = deploy.join().unwrap();
    assert!(deployed.status.success(), "{}", text(&deployed));
    assert_eq!(whoami(&api, CI_TOKEN), Ok(format!("pid {canary}")));
}

#[test]
fn a_gateway_replica_needs_a_shared_store_and_says_so_as_up_does() {
    // A fleet whose store is the state directory's SQLite file: refused, located.
    let fleet = Fleet::new(
        "replica-sqlite",
        "version: 1\nname: replica-sqlite\nservers:\n  api:\n    http: { command: SAMPLE, args: [\"--transport\", \"http\", \"--port\", \"{{ port }}\"] }\n",
    );
    let out = fleet.command().arg("gateway").output().unwrap();
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    let said = String::from_utf8_lossy(&out.stderr);
    assert!(said.contains("`mcpfleet gateway` cannot run"), "{said}");
    assert!(said.contains("state.postgres"), "{said}");
    assert!(said.contains("--> mcpfleet.yaml"), "{said}");

    // A database that cannot be reached: the one line `up` says, password hidden.
    let cluster = fleet_testkit::postgres::cluster();
    let unreachable = format!(
        "postgres://postgres:pw-9f3e@127.0.0.1:{}/no_such_database",
        cluster.port()
    );
    let name = "replica-unreachable";
    let fleet = Fleet::new(name, &replicated_fleet(name, "", "", &["ci"]))
        .with_env("STATE_DB", &unreachable);
    let error_line = |out: &Output| {
        String::from_utf8_lossy(&out.stderr)
            .lines()
            .find(|l| l.starts_with("error:"))
            .unwrap_or_else(|| panic!("no error line: {}", text(out)))
            .to_owned()
    };
    let up = fleet.mcpfleet(&["up"]);
    assert!(!up.status.success(), "{}", text(&up));
    let replica = fleet.command().arg("gateway").output().unwrap();
    assert_eq!(replica.status.code(), Some(2), "{}", text(&replica));
    assert_eq!(error_line(&replica), error_line(&up));
    assert!(error_line(&replica).contains("no_such_database"));
    assert!(!text(&replica).contains("pw-9f3e"), "{}", text(&replica));
}

/// `body` POSTed to `endpoint` with the `ci` token, on `session` if any: the status, the
/// session id answered, and the last JSON-RPC message of the answer.
fn exchange(
    endpoint: &str,
    session: Option<&str>,
    body: &str,
) -> (u16, Option<String>, serde_json::Value) {
    let (status, session, text) = post_as(endpoint, CI_TOKEN, session, None, body);
    (status, session, last_message(&text))
}

/// [`replicated_fleet`] with its store at `url` and `key` as its one session key, read
/// from the environment.
fn keyed_fleet(name: &str, url: &str, key: &str) -> Fleet {
    let yaml = replicated_fleet(name, "", "", &["ci"])
        .replace(
            "secrets:\n",
            "secrets:\n  session_key: { env: SESSION_KEY }\n",
        )
        .replace(
            "gateway:\n",
            "gateway:\n  session_keys: [\"{{ secret('session_key') }}\"]\n",
        );
    Fleet::new(name, &yaml)
        .with_env("STATE_DB", url)
        .with_env("SESSION_KEY", key)
}

/// The first answer of `whoami` at `endpoint` (a replica's) once it routes to the fleet's
/// server: it follows the leader's view, so no sleep.
fn first_answer(endpoint: &str) -> String {
    wait_until_blocking(
        "the replica routes to the fleet's server",
        Duration::from_secs(20),
        || whoami(endpoint, CI_TOKEN),
    )
}

/// A new session at `endpoint`: its id.
fn initialize(endpoint: &str) -> String {
    let (status, session, _) = exchange(endpoint, None, INITIALIZE);
    assert_eq!(status, 200);
    session.expect("a session id")
}

#[test]
fn with_shared_session_keys_a_client_alternating_between_the_control_plane_and_a_replica_keeps_its_session()
 {
    let url = fleet_testkit::postgres::fresh_database();
    let fleet = keyed_fleet(
        "replica-sessions",
        &url,
        "replica-sessions-key-0123456789abcdef",
    );
    let out = fleet.up();
    assert!(out.status.success(), "{}", text(&out));
    let status = fleet.status();
    let pid = server(&status, "api").instances[0].pid.unwrap();
    let on_control_plane = server(&status, "api").endpoint.clone().unwrap();
    let replica = Replica::start_with(&fleet, &["--metrics-listen", "127.0.0.1:0"]);
    let on_replica = replica.endpoint("api");
    first_answer(&on_replica);

    let session = initialize(&on_control_plane);
    assert_eq!(exchange(&on_replica, Some(&session), INITIALIZED).0, 202);
    for (n, endpoint) in [
        &on_control_plane,
        &on_replica,
        &on_control_plane,
        &on_replica,
    ]
    .into_iter()
    .enumerate()
    {
        let call = format!(
            r#"{{"jsonrpc":"2.0","id":{},"method":"tools/call","params":{{"name":"whoami","arguments":{{}}}}}}"#,
            n + 2
        );
        let (status, answered, message) = exchange(endpoint, Some(&session), &call);
        assert_eq!(status, 200, "call {n} at {endpoint}: {message}");
        assert_eq!(answered.as_deref(), Some(session.as_str()));
        assert_eq!(
            message["result"]["content"][0]["text"],
            format!("pid {pid}"),
            "{message}"
        );
    }
    // The replica's own metrics count what it served (the calls of `whoami` above, and
    // this session's two calls on it), by server and revision.
    let metrics = replica
        .metrics_url()
        .expect("the replica serves its metrics");
    let (status, text) = get(&metrics);
    assert_eq!(status, 200);
    assert!(
        text.lines()
            .any(|line| line.starts_with("mcpfleet_gateway_requests_total{")
                && line.contains("server=\"api\"")
                && line.contains("method=\"tools/call\"")),
        "{text}"
    );
}

#[test]
fn a_replica_on_a_pods_network_needs_tokens_and_tls_as_the_control_plane_does() {
    let url = fleet_testkit::postgres::fresh_database();
    let name = "replica-pod-network";
    // Tokens, but plain HTTP: on a pod's network every pod would read them.
    let fleet =
        Fleet::new(name, &replicated_fleet(name, "", "", &["ci"])).with_env("STATE_DB", &url);
    let out = fleet
        .command()
        .args(["gateway", "--pod-network"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    let said = String::from_utf8_lossy(&out.stderr);
    assert!(said.contains("TLS"), "{said}");
    assert!(said.contains("--> mcpfleet.yaml"), "{said}");
}

/// A child process sent SIGTERM and reaped when dropped.
struct Terminated(Child);

impl Drop for Terminated {
    fn drop(&mut self) {
        let _ = Command::new("kill")
            .args(["-TERM", &self.0.id().to_string()])
            .status();
        let _ = self.0.wait();
    }
}

#[test]
fn the_rendered_gateway_replica_pod_serves_the_control_planes_sessions_at_its_services_names() {
    let url = fleet_testkit::postgres::fresh_database();
    let key = "rendered-replica-key-0123456789abcdef";
    let name = "replica-rendered";
    let fleet = keyed_fleet(name, &url, key);
    let out = fleet.up();
    assert!(out.status.success(), "{}", text(&out));
    let status = fleet.status();
    let pid = server(&status, "api").instances[0].pid.unwrap();
    let on_control_plane = server(&status, "api").endpoint.clone().unwrap();

    // The same fleet as the cluster would run it: images, gateway replicas, and the
    // gateway a pod's network needs, at a port of its own (the control plane has its own).
    let port = fleet_testkit::free_port();
    let twin = fleet.dir.join("cluster.yaml");
    std::fs::write(
        &twin,
        format!(
            "version: 1\nname: {name}\nkubernetes:\n  gateway_replicas: {{ min: 2, max: 4, cpu: 70 }}\nsecrets:\n  state_db: {{ env: STATE_DB }}\n  session_key: {{ env: SESSION_KEY }}\nstate:\n  postgres:\n    url: \"{{{{ secret('state_db') }}}}\"\nservers:\n  api:\n    http: {{ image: registry.example/api:1, port: 8080 }}\n  notes:\n    stdio: {{ image: registry.example/notes:1, isolation: shared }}\ngateway:\n  listen: 127.0.0.1:{port}\n  auth:\n    tokens: [{{ name: ci, sha256: \"{}\", servers: [\"*\"] }}]\n  tls: {{ terminated_by: proxy }}\n  session_keys: [\"{{{{ secret('session_key') }}}}\"]\nadmin:\n  listen: 127.0.0.1:0\n",
            sha256_hex(CI_TOKEN)
        ),
    )
    .unwrap();
    let out = fleet
        .command()
        .args(["render", "kubernetes", "-f"])
        .arg(&twin)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", text(&out));
    let objects =
        fleet_testkit::kube::parse_yaml_documents(&String::from_utf8(out.stdout).unwrap()).unwrap();
    let deployment = (objects.iter())
        .find(|o| o["kind"] == "Deployment" && o["metadata"]["name"] == "mcpfleet-gateway")
        .expect("the replicas' Deployment");
    let container = &deployment["spec"]["template"]["spec"]["containers"][0];

    // The container's command line and environment, as its pod would run them: nothing
    // else in the environment, the fleet file where the ConfigMap is mounted.
    let args: Vec<String> = (container["args"].as_array().unwrap().iter())
        .map(|arg| {
            (arg.as_str().unwrap()).replace("/etc/mcpfleet/fleet.yaml", twin.to_str().unwrap())
        })
        .collect();
    let mut command = Command::new(env!("CARGO_BIN_EXE_mcpfleet"));
    command
        .env_clear()
        .current_dir(&fleet.dir)
        .args(&args)
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(fleet.dir.join("replica.log")).unwrap());
    for variable in container["env"].as_array().unwrap() {
        let secret = &variable["valueFrom"]["secretKeyRef"];
        assert_eq!(secret["name"], format!("{name}-secrets"), "{variable}");
        let value = match secret["key"].as_str() {
            Some("state_db") => url.as_str(),
            Some("session_key") => key,
            _ => panic!("an environment variable the test cannot give: {variable}"),
        };
        command.env(variable["name"].as_str().unwrap(), value);
    }
    let _replica = Terminated(command.spawn().unwrap());
    let log = || std::fs::read_to_string(fleet.dir.join("replica.log")).unwrap_or_default();

    // Ready where the readiness probe asks, on every address of the pod.
    let probe = format!("http://127.0.0.1:{port}/healthz");
    assert_eq!(
        container["readinessProbe"]["httpGet"]["path"], "/healthz",
        "{container}"
    );
    wait_until_blocking(
        "the replica answers its probe",
        Duration::from_secs(30),
        || match block_on(async { http_client().get(&probe).send().await }) {
            Ok(response) if response.status() == 200 => Ok(()),
            other => Err(format!("{other:?}\n{}", log())),
        },
    );
    let on_replica = format!("http://127.0.0.1:{port}/mcp/api");
    first_answer(&on_replica);

    // A session opened on the control plane continues on the replica, reached by the
    // names its Service gives it; another name is refused.
    let session = initialize(&on_control_plane);
    let at = |host: &str| {
        let (status, _, text) = post_as(&on_replica, CI_TOKEN, Some(&session), Some(host), WHOAMI);
        (status, text)
    };
    for host in [
        format!("mcpfleet-gateway.{name}.svc.cluster.local:{port}"),
        format!("mcpfleet-gateway:{port}"),
    ] {
        let (status, body) = at(&host);
        assert_eq!(status, 200, "{host}: {body}\n{}", log());
        assert!(body.contains(&format!("pid {pid}")), "{host}: {body}");
    }
    assert_eq!(at(&format!("elsewhere.example:{port}")).0, 403);
}
