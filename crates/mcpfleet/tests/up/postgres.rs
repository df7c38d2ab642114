//! A fleet whose state store is a PostgreSQL database (`state.postgres`): a real PostgreSQL
//! (the test process's private cluster, a fresh database per test), `mcpfleet up` keeping
//! its record there across `down` and `up`, and `export-state` / `import-state` moving a
//! fleet between SQLite and PostgreSQL both ways.

use super::*;
use fleet_api::types::HistoryEntry;

/// The password the state database's URL carries: it must never be shown or stored.
const PASSWORD: &str = "pg-pass-7c1d";

/// `url` with [`PASSWORD`] as its password (the private cluster trusts every login, so
/// any password connects).
fn with_password(url: &str) -> String {
    url.replacen(
        "postgres://postgres@",
        &format!("postgres://postgres:{PASSWORD}@"),
        1,
    )
}

/// One http server, the store in the database of the secret `STATE_DB` when `postgres`.
fn one_server(name: &str, args: &str, postgres: bool) -> String {
    let state = if postgres {
        "secrets:\n  state_db: { env: STATE_DB }\nstate:\n  postgres:\n    url: \"{{ secret('state_db') }}\"\n"
    } else {
        ""
    };
    format!(
        r#"
version: 1
name: {name}
{state}servers:
  api:
    http: {{ command: SAMPLE, args: ["--transport", "http", "--port", "{{{{ port }}}}"{args}] }}
gateway:
  listen: 127.0.0.1:0
"#
    )
}

fn history(fleet: &Fleet) -> Vec<HistoryEntry> {
    history_in(fleet.mcpfleet(&["history", "--output", "json"]))
}

/// What `history --output json` printed.
fn history_in(out: Output) -> Vec<HistoryEntry> {
    assert!(out.status.success(), "{}", text(&out));
    serde_json::from_slice(&out.stdout).unwrap()
}

/// Every file under `dir`, read as bytes, does not hold `secret`.
fn assert_nowhere_under(dir: &Path, secret: &str) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            assert_nowhere_under(&path, secret);
        } else if let Ok(bytes) = std::fs::read(&path) {
            let found = bytes.windows(secret.len()).any(|w| w == secret.as_bytes());
            assert!(!found, "{} holds the database password", path.display());
        }
    }
}

#[test]
fn a_fleet_on_postgres_keeps_its_record_there_across_down_and_up() {
    let url = fleet_testkit::postgres::fresh_database();
    let fleet = Fleet::new("pg-record", &one_server("pg-record", "", true))
        .with_env("STATE_DB", &with_password(&url));
    let out = fleet.up();
    assert!(out.status.success(), "{}", text(&out));
    assert!(!text(&out).contains(PASSWORD), "{}", text(&out));
    assert!(
        !fleet.state_dir().join("state.db").exists(),
        "the store is the database, not the state directory's file"
    );
    let cluster = fleet_testkit::postgres::cluster();
    let database = url.rsplit('/').next().unwrap();
    let rows = cluster.psql(database, "SELECT count(*) FROM deployments");
    assert_eq!(rows.trim(), "1", "the deployment is a row of the database");

    // Moving the store needs a restart: refused, saying so.
    let moved = fleet.dir.join("mcpfleet.yaml");
    let file = std::fs::read_to_string(&moved).unwrap();
    std::fs::write(
        &moved,
        one_server("pg-record", "", false).replace("SAMPLE", &sample()),
    )
    .unwrap();
    let out = fleet.mcpfleet(&["deploy"]);
    assert!(!out.status.success(), "{}", text(&out));
    assert!(text(&out).contains("state.postgres"), "{}", text(&out));
    std::fs::write(&moved, file).unwrap();

    let out = fleet.mcpfleet(&["down"]);
    assert!(out.status.success(), "{}", text(&out));
    // Stopped: `history` reads the database the file names.
    assert_eq!(history(&fleet).len(), 1);

    let changed = one_server("pg-record", r#", "--name", "second""#, true);
    std::fs::write(&moved, changed.replace("SAMPLE", &sample())).unwrap();
    let out = fleet.up();
    assert!(out.status.success(), "{}", text(&out));
    let history = history(&fleet);
    assert_eq!(
        history
            .iter()
            .map(|h| (h.revision, h.from_revision))
            .collect::<Vec<_>>(),
        [(1, None), (2, Some(1))],
        "the second `up` went on from the database's record: {history:#?}"
    );
    let out = fleet.mcpfleet(&["down"]);
    assert!(out.status.success(), "{}", text(&out));
    assert_nowhere_under(&fleet.dir, PASSWORD);
    let stored = cluster.psql(database, "SELECT source FROM fleet_revisions");
    assert!(!stored.contains(PASSWORD), "{stored}");
}

#[test]
fn export_state_moves_a_fleet_from_sqlite_to_postgres_and_back() {
    let url = fleet_testkit::postgres::fresh_database();
    let fleet = Fleet::new("pg-move", &one_server("pg-move", "", false))
        .with_env("STATE_DB", &with_password(&url));
    let out = fleet.up();
    assert!(out.status.success(), "{}", text(&out));
    let out = fleet.mcpfleet(&["down"]);
    assert!(out.status.success(), "{}", text(&out));
    let from_sqlite = fleet.dir.join("from-sqlite.json");
    let out = fleet.mcpfleet(&["export-state", from_sqlite.to_str().unwrap()]);
    assert!(out.status.success(), "{}", text(&out));

    // The same fleet, its store now the database.
    let file = fleet.dir.join("mcpfleet.yaml");
    std::fs::write(
        &file,
        one_server("pg-move", "", true).replace("SAMPLE", &sample()),
    )
    .unwrap();
    let out = fleet.mcpfleet(&[
        "import-state",
        from_sqlite.to_str().unwrap(),
        "--output",
        "json",
    ]);
    assert!(out.status.success(), "{}", text(&out));
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(report["deployments"], 1, "{report}");
    // The database, named without its password.
    let store = report["store"].as_str().unwrap();
    assert!(
        store.starts_with("postgres://postgres:***@127.0.0.1:"),
        "{report}"
    );
    assert!(!text(&out).contains(PASSWORD), "{}", text(&out));
    // A second import finds the database holding data: refused, nothing changed.
    let out = fleet.mcpfleet(&["import-state", from_sqlite.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(text(&out).contains("already holds data"), "{}", text(&out));
    assert!(!text(&out).contains(PASSWORD), "{}", text(&out));

    let from_postgres = fleet.dir.join("from-postgres.json");
    let out = fleet.mcpfleet(&["export-state", from_postgres.to_str().unwrap()]);
    assert!(out.status.success(), "{}", text(&out));
    assert_eq!(
        std::fs::read_to_string(&from_postgres).unwrap(),
        std::fs::read_to_string(&from_sqlite).unwrap(),
        "every id and number kept"
    );

    // `up` on the database goes on from the imported record.
    let out = fleet.up();
    assert!(out.status.success(), "{}", text(&out));
    assert_eq!(server(&fleet.status(), "api").revision, Some(1));
    let out = fleet.mcpfleet(&["down"]);
    assert!(out.status.success(), "{}", text(&out));

    // And back: into a fresh state directory's SQLite file.
    let after = fleet.dir.join("after.json");
    let out = fleet.mcpfleet(&["export-state", after.to_str().unwrap()]);
    assert!(out.status.success(), "{}", text(&out));
    std::fs::write(
        &file,
        one_server("pg-move", "", false).replace("SAMPLE", &sample()),
    )
    .unwrap();
    let fresh = fleet.dir.join("fresh");
    let on_fresh = |command: &str, path: &Path| {
        fleet
            .command()
            .arg(command)
            .arg(path)
            .arg("--state-dir")
            .arg(&fresh)
            .output()
            .unwrap()
    };
    let out = on_fresh("import-state", &after);
    assert!(out.status.success(), "{}", text(&out));
    let again = fleet.dir.join("again.json");
    let out = on_fresh("export-state", &again);
    assert!(out.status.success(), "{}", text(&out));
    assert_eq!(
        std::fs::read_to_string(&again).unwrap(),
        std::fs::read_to_string(&after).unwrap()
    );
}

#[test]
fn an_unreachable_state_database_stops_up_with_a_clear_error_and_no_password() {
    let cluster = fleet_testkit::postgres::cluster();
    // A database that does not exist on the running server: refused at login.
    let url = format!(
        "postgres://postgres:{PASSWORD}@127.0.0.1:{}/no_such_database",
        cluster.port()
    );
    let fleet = Fleet::new("pg-unreachable", &one_server("pg-unreachable", "", true))
        .with_env("STATE_DB", &url);
    let out = fleet.up();
    assert!(!out.status.success(), "{}", text(&out));
    let said = text(&out);
    assert!(said.contains("state database"), "{said}");
    assert!(said.contains("no_such_database"), "{said}");
    assert!(!said.contains(PASSWORD), "{said}");
    assert_nowhere_under(&fleet.dir, PASSWORD);

    // A secret that is not a PostgreSQL URL: said before anything starts.
    let fleet = Fleet::new("pg-not-a-url", &one_server("pg-not-a-url", "", true))
        .with_env("STATE_DB", &format!("mysql://root:{PASSWORD}@db/x"));
    let out = fleet.up();
    assert!(!out.status.success(), "{}", text(&out));
    assert!(
        text(&out).contains("not a postgres:// URL"),
        "{}",
        text(&out)
    );
    assert!(!text(&out).contains(PASSWORD), "{}", text(&out));
}

/// The backup CronJob `render kubernetes` writes for a fleet whose environment puts its
/// store in PostgreSQL, run here as its pod would run it: its arguments and environment as
/// rendered (a Secret key's value standing in for each `secretKeyRef`, the Job's name for
/// `$(JOB_NAME)`, nothing else), a state directory that does not exist, while the fleet's
/// control plane runs elsewhere. It exports the database, keeps the newest `keep`, and
/// creates no state directory.
#[test]
fn the_rendered_backup_job_exports_the_database_while_the_control_plane_runs() {
    let url = with_password(&fleet_testkit::postgres::fresh_database());
    let fleet_file = |server: &str, gateway: &str| {
        format!(
            "version: 1\nname: pg-backup\nkubernetes: {{ backup: {{ keep: 2 }} }}\nsecrets:\n  state_db: {{ env: STATE_DB }}\nservers:\n  api:\n    http: {server}\n{gateway}environments:\n  cluster:\n    state:\n      postgres: {{ url: \"{{{{ secret('state_db') }}}}\" }}\n"
        )
    };
    let fleet = Fleet::new(
        "pg-backup",
        &fleet_file(
            r#"{ command: SAMPLE, args: ["--transport", "http", "--port", "{{ port }}"] }"#,
            "gateway:\n  listen: 127.0.0.1:0\n",
        ),
    )
    .with_env("STATE_DB", &url);
    let out = fleet.mcpfleet(&["up", "-d", "--env", "cluster"]);
    assert!(out.status.success(), "{}", text(&out));

    // The same fleet as the cluster would run it: an image, a gateway for the pod network.
    let twin = fleet.dir.join("cluster.yaml");
    std::fs::write(
        &twin,
        fleet_file(
            "{ image: registry.example/api:1, port: 8080 }",
            "gateway:\n  auth:\n    tokens: [{ name: ci, sha256: \"9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08\", servers: [\"*\"] }]\n  tls: { terminated_by: proxy }\n",
        ),
    )
    .unwrap();
    let out = fleet
        .command()
        .args(["render", "kubernetes", "--env", "cluster", "-f"])
        .arg(&twin)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", text(&out));
    let objects =
        fleet_testkit::kube::parse_yaml_documents(&String::from_utf8(out.stdout).unwrap()).unwrap();
    let cron = (objects.iter())
        .find(|o| o["kind"] == "CronJob")
        .expect("a backup CronJob");
    let container = &cron["spec"]["jobTemplate"]["spec"]["template"]["spec"]["containers"][0];

    let backups = fleet.dir.join("backups");
    std::fs::create_dir_all(&backups).unwrap();
    let absent = fleet.dir.join("no-state-dir");
    let job = |number: u32| {
        let job_name = format!("mcpfleet-backup-{number}");
        let args: Vec<String> = (container["args"].as_array().unwrap().iter())
            .map(|arg| {
                arg.as_str()
                    .unwrap()
                    .replace("$(JOB_NAME)", &job_name)
                    .replace("/var/lib/mcpfleet/backups", backups.to_str().unwrap())
                    .replace("/var/lib/mcpfleet/state", absent.to_str().unwrap())
                    .replace("/etc/mcpfleet/fleet.yaml", twin.to_str().unwrap())
            })
            .collect();
        let mut command = std::process::Command::new(env!("CARGO_BIN_EXE_mcpfleet"));
        command.env_clear().current_dir(&fleet.dir).args(&args);
        for variable in container["env"].as_array().unwrap() {
            let name = variable["name"].as_str().unwrap();
            let from = &variable["valueFrom"];
            let value = if from["secretKeyRef"]
                == serde_json::json!({ "key": "state_db", "name": "pg-backup-secrets" })
            {
                url.clone()
            } else if from["fieldRef"].is_object() {
                job_name.clone()
            } else {
                panic!("an environment variable the test cannot give: {variable}")
            };
            command.env(name, value);
        }
        let out = command.output().unwrap();
        assert!(out.status.success(), "{args:?}\n{}", text(&out));
        assert!(!text(&out).contains(PASSWORD), "{}", text(&out));
    };
    for number in 1..=3 {
        job(number);
    }
    let mut kept: Vec<String> = std::fs::read_dir(&backups)
        .unwrap()
        .map(|entry| entry.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    kept.sort();
    assert_eq!(
        kept,
        ["mcpfleet-backup-2.json", "mcpfleet-backup-3.json"],
        "keep: 2"
    );
    let export: serde_json::Value =
        serde_json::from_slice(&std::fs::read(backups.join("mcpfleet-backup-3.json")).unwrap())
            .unwrap();
    assert_eq!(
        export["deployments"].as_array().map(Vec::len),
        Some(1),
        "the running control plane's deployment, read from the database: {export}"
    );
    assert!(!absent.exists(), "the backup made no state directory");
    assert_nowhere_under(&backups, PASSWORD);
}

/// Two stdio servers (they end with the control plane whose pipes they read), the store in
/// the database of `STATE_DB`, the leader's lease one second.
fn led_fleet(name: &str) -> String {
    format!(
        r#"
version: 1
name: {name}
secrets:
  state_db: {{ env: STATE_DB }}
state:
  postgres:
    url: "{{{{ secret('state_db') }}}}"
    lease: 1s
servers:
  api:
    stdio: {{ command: SAMPLE }}
  docs:
    stdio: {{ command: SAMPLE }}
gateway:
  listen: 127.0.0.1:0
"#
    )
}

/// A fleet of `yaml` on a fresh database, up: it and its control plane's pid.
fn leading(name: &str, yaml: &str) -> (Fleet, u32) {
    let url = fleet_testkit::postgres::fresh_database();
    let fleet = Fleet::new(name, yaml).with_env("STATE_DB", &url);
    let out = fleet.up();
    assert!(out.status.success(), "{}", text(&out));
    let leader = fleet.status().pid;
    (fleet, leader)
}

/// `kill -SIGNAL pid`.
fn send(signal: &str, pid: u32) {
    let status = Command::new("kill")
        .args([signal, &pid.to_string()])
        .status()
        .unwrap();
    assert!(status.success(), "kill {signal} {pid}");
}

/// A second control plane of `fleet`, in the state directory `state-b` beside the first.
struct Second<'a> {
    fleet: &'a Fleet,
    dir: PathBuf,
}

impl<'a> Second<'a> {
    fn of(fleet: &'a Fleet) -> Self {
        Second {
            fleet,
            dir: fleet.dir.join("state-b"),
        }
    }

    fn mcpfleet(&self, args: &[&str]) -> Output {
        self.fleet
            .command()
            .args(args)
            .arg("--state-dir")
            .arg(&self.dir)
            .output()
            .unwrap()
    }

    fn is_running(&self) -> bool {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap()
            .block_on(Client::new(&self.dir).is_running())
    }

    fn status(&self) -> Status {
        let out = self.mcpfleet(&["status", "--output", "json"]);
        assert!(out.status.success(), "{}", text(&out));
        serde_json::from_slice(&out.stdout).unwrap()
    }
}

/// Starts the second control plane, which stands by while the first leads.
fn stand_by(second: &Second<'_>, fleet: &str) {
    let out = second.mcpfleet(&["up", "-d"]);
    assert!(out.status.success(), "{}", text(&out));
    let said = text(&out);
    assert!(said.contains("standing by:"), "{said}");
    assert!(said.contains(&format!("leads fleet `{fleet}`")), "{said}");
    assert!(!second.is_running(), "a standby serves nothing");
}

fn all_ready(status: &Status) -> bool {
    status.servers.len() == 2 && status.servers.iter().all(|s| s.state == ServerState::Ready)
}

#[test]
fn a_second_control_plane_on_the_database_stands_by_and_takes_over_when_the_leader_is_killed() {
    let (fleet, leader) = leading("pg-standby", &led_fleet("pg-standby"));
    let second = Second::of(&fleet);
    stand_by(&second, "pg-standby");

    let killed = Instant::now();
    nix_kill9(leader);
    // The lease lapses a second after the leader's last renewal; the standby looks every
    // third of a second.
    wait_until_blocking("the standby takes over", Duration::from_secs(20), || {
        second.is_running()
    });
    // What docs/running.md reports (`--nocapture`).
    println!(
        "failover: the standby served {:?} after kill -9",
        killed.elapsed()
    );
    wait_until_blocking("its servers are ready", Duration::from_secs(20), || {
        all_ready(&second.status())
    });
    // One record: the standby went on from the leader's deployment.
    let history = history_in(second.mcpfleet(&["history", "--output", "json"]));
    assert!(history.len() >= 2, "{history:#?}");
    assert_eq!(history[0].revision, 1, "{history:#?}");
    let out = second.mcpfleet(&["down"]);
    assert!(out.status.success(), "{}", text(&out));
}

#[test]
fn a_leader_stopped_past_its_lease_is_fenced_and_stops_when_it_resumes() {
    let (fleet, leader) = leading("pg-fenced", &led_fleet("pg-fenced"));
    send("-STOP", leader);
    let second = Second::of(&fleet);
    let out = second.mcpfleet(&["up", "-d"]);
    assert!(out.status.success(), "{}", text(&out));
    wait_until_blocking(
        "the standby takes over from the stopped leader",
        Duration::from_secs(30),
        || second.is_running(),
    );
    send("-CONT", leader);
    // Its next renewal finds the lease taken: it ends, leaving the servers to the new
    // leader.
    wait_until_blocking("the old leader stops", Duration::from_secs(20), || {
        !alive(leader)
    });
    let log = std::fs::read_to_string(fleet.state_dir().join("control.log")).unwrap();
    assert!(log.contains("lost the leadership"), "{log}");
    wait_until_blocking(
        "the new leader's servers are ready",
        Duration::from_secs(20),
        || all_ready(&second.status()),
    );
    let out = second.mcpfleet(&["down"]);
    assert!(out.status.success(), "{}", text(&out));
}

/// `api`, a stdio server rolled out by a canary that waits for `promote` at half the
/// traffic, its revision named `v{revision}`; the store in the database of `STATE_DB`.
fn canary_fleet(revision: u32) -> String {
    format!(
        r#"
version: 1
name: pg-canary
secrets:
  state_db: {{ env: STATE_DB }}
state:
  postgres:
    url: "{{{{ secret('state_db') }}}}"
    lease: 1s
servers:
  api:
    stdio: {{ command: SAMPLE, args: ["--name", "v{revision}"] }}
    rollout:
      strategy: canary
      steps: [{{ weight: 50, pause: {{}} }}]
    on_failure: rollback
gateway:
  listen: 127.0.0.1:0
"#
    )
}

#[test]
fn the_standby_of_a_leader_killed_during_a_canary_rolls_it_back_as_after_a_crash() {
    let (fleet, leader) = leading("pg-canary", &canary_fleet(1));
    fleet.rewrite(&canary_fleet(2).replace("SAMPLE", &sample()));
    let deploy = fleet.deploy_in_background();
    super::canary::wait_for_promote(&fleet);
    // The standby is given the file of the deployment in progress, as every control plane
    // of a fleet on Kubernetes reads one ConfigMap.
    let second = Second::of(&fleet);
    stand_by(&second, "pg-canary");
    nix_kill9(leader);
    deploy.join().unwrap();
    wait_until_blocking("the standby takes over", Duration::from_secs(20), || {
        second.is_running()
    });
    // The journal shows deployment 2 paused mid-canary: `on_failure: rollback` takes the
    // fleet back to revision 1, once.
    let status = wait_until_blocking("api is back on revision 1", Duration::from_secs(20), || {
        let status = second.status();
        let api = server(&status, "api");
        let seen = (api.revision, api.state, api.rollout.is_some());
        (seen == (Some(1), ServerState::Ready, false))
            .then_some(status.clone())
            .ok_or(seen)
    });
    assert_eq!(server(&status, "api").instances.len(), 1, "{status:#?}");
    let history = history_in(second.mcpfleet(&["history", "--output", "json"]));
    let states: Vec<(u64, &str)> = history
        .iter()
        .map(|h| (h.deployment, h.state.as_str()))
        .collect();
    assert_eq!(
        &states[..2],
        [(1, "succeeded"), (2, "rolled-back")],
        "{history:#?}"
    );
    assert!(
        history[1]
            .outcome
            .as_deref()
            .is_some_and(|o| o.contains("rolled back to fleet revision 1")),
        "{history:#?}"
    );
    assert!(
        history[2..].iter().all(|h| h.servers["api"] == 1),
        "after the takeover only revision 1 was deployed: {history:#?}"
    );
    let out = second.mcpfleet(&["down"]);
    assert!(out.status.success(), "{}", text(&out));
}

#[test]
fn a_standby_stops_at_sigterm_and_never_leads() {
    let (fleet, _) = leading("pg-sigterm", &led_fleet("pg-sigterm"));
    let second = Second::of(&fleet);
    stand_by(&second, "pg-sigterm");
    let standby = processes_with(&second.dir.display().to_string());
    assert_eq!(standby.len(), 1, "one standby process: {standby:?}");
    send("-TERM", standby[0]);
    wait_until_blocking("the standby ends", Duration::from_secs(10), || {
        !alive(standby[0])
    });
    let log = std::fs::read_to_string(second.dir.join("control.log")).unwrap();
    assert!(log.contains("stopped while standing by"), "{log}");
    // The leader's `down` hands the lease to no one: the standby is gone.
    let out = fleet.mcpfleet(&["down"]);
    assert!(out.status.success(), "{}", text(&out));
    assert!(!second.is_running());
}

#[test]
fn down_of_the_leader_hands_the_lease_over_before_it_lapses() {
    // A 12 s lease: the standby looks every 4 s, so it takes a released lease within 4 s;
    // one that lapses instead does so at least 8 s after the leader's last renewal.
    let yaml = led_fleet("pg-handover").replace("lease: 1s", "lease: 12s");
    let (fleet, _) = leading("pg-handover", &yaml);
    let second = Second::of(&fleet);
    stand_by(&second, "pg-handover");
    let out = fleet.mcpfleet(&["down"]);
    assert!(out.status.success(), "{}", text(&out));
    let down = Instant::now();
    wait_until_blocking(
        "the standby takes the released lease",
        Duration::from_secs(7),
        || second.is_running(),
    );
    println!(
        "handover: the standby served {:?} after down",
        down.elapsed()
    );
    let out = second.mcpfleet(&["down"]);
    assert!(out.status.success(), "{}", text(&out));
}

/// [`led_fleet`] as the rendered control plane runs it (`up --pod-network`): a gateway
/// with a token behind a proxy's TLS, the admin port one the OS picks.
fn led_pod_fleet(name: &str) -> String {
    let served = format!(
        "gateway:\n  listen: 127.0.0.1:0\n  auth:\n    tokens:\n      - {{ name: ci, sha256: \"{}\", servers: [\"*\"] }}\n  tls: {{ terminated_by: proxy }}\nadmin:\n  listen: 127.0.0.1:0\n",
        super::admin_auth::sha256_hex("mcpf_pod-network-token")
    );
    led_fleet(name).replace("gateway:\n  listen: 127.0.0.1:0\n", &served)
}

/// `GET url`: the status and the body.
fn get(url: &str) -> (u16, String) {
    super::admin_auth::block_on(async {
        let response = http_client().get(url).send().await.unwrap();
        (response.status().as_u16(), response.text().await.unwrap())
    })
}

#[test]
fn a_standby_in_a_pod_answers_its_probe_names_the_leader_and_leads_on_the_same_admin_port() {
    let url = fleet_testkit::postgres::fresh_database();
    let fleet = Fleet::new("pg-pod", &led_pod_fleet("pg-pod")).with_env("STATE_DB", &url);
    let out = fleet.mcpfleet(&["up", "-d", "--pod-network"]);
    assert!(out.status.success(), "{}", text(&out));
    let leader = fleet.status().pid;
    let second = Second::of(&fleet);
    let out = second.mcpfleet(&["up", "-d", "--pod-network"]);
    assert!(out.status.success(), "{}", text(&out));
    assert!(text(&out).contains("standing by:"), "{}", text(&out));

    // The port the OS gave the standby's admin listener, as its log says.
    let log = std::fs::read_to_string(second.dir.join("control.log")).unwrap();
    let port = (log.lines())
        .find_map(|line| {
            let (_, rest) = line.split_once("the admin port (")?;
            rest.split_once(')')?
                .0
                .rsplit(':')
                .next()?
                .parse::<u16>()
                .ok()
        })
        .unwrap_or_else(|| panic!("the standby's log names its admin port: {log}"));
    let admin = format!("http://127.0.0.1:{port}");
    // The pod's probes: a standby is healthy (and a ready replica of the Deployment).
    assert_eq!(
        get(&format!("{admin}/healthz")),
        (200, "standing by\n".to_owned())
    );
    // Anything else: unavailable here, and who leads instead.
    let (code, body) = get(&format!("{admin}/metrics"));
    assert_eq!(code, 503, "{body}");
    let error: serde_json::Value = serde_json::from_str(&body).unwrap();
    let error = error["error"].as_str().unwrap();
    assert!(
        error.starts_with("this control plane stands by; "),
        "{error}"
    );
    assert!(error.ends_with(&format!(":{leader} leads")), "{error}");
    assert!(!second.is_running(), "a standby serves no admin socket");

    let killed = Instant::now();
    nix_kill9(leader);
    wait_until_blocking("the standby takes over", Duration::from_secs(20), || {
        get(&format!("{admin}/healthz")).1 == "ok\n"
    });
    // What docs/kubernetes.md reports (`--nocapture`).
    println!(
        "failover in a pod: the admin port answered as the leader's {:?} after kill -9",
        killed.elapsed()
    );
    assert!(second.is_running());
    // The admin API on the very port the probes know.
    assert_eq!(get(&format!("{admin}/healthz")), (200, "ok\n".to_owned()));
    let (code, metrics) = get(&format!("{admin}/metrics"));
    assert_eq!(code, 200, "{metrics}");
    let status = second.status();
    assert_eq!(status.admin_url.as_deref(), Some(admin.as_str()));
    let out = second.mcpfleet(&["down"]);
    assert!(out.status.success(), "{}", text(&out));
}

#[test]
fn history_of_a_stopped_fleet_reads_the_store_its_environment_names() {
    let url = fleet_testkit::postgres::fresh_database();
    let yaml = one_server("pg-env", "", false)
        + "environments:\n  prod:\n    secrets:\n      state_db: { env: STATE_DB }\n    state:\n      postgres:\n        url: \"{{ secret('state_db') }}\"\n";
    let fleet = Fleet::new("pg-env", &yaml).with_env("STATE_DB", &url);
    let out = fleet.mcpfleet(&["up", "-d", "--env", "prod"]);
    assert!(out.status.success(), "{}", text(&out));
    let out = fleet.mcpfleet(&["down"]);
    assert!(out.status.success(), "{}", text(&out));
    // Without the environment: the state directory, where nothing was ever recorded.
    assert_eq!(history(&fleet).len(), 0);
    let with_env = history_in(fleet.mcpfleet(&["history", "--env", "prod", "--output", "json"]));
    assert_eq!(with_env.len(), 1, "{with_env:#?}");
    let out = fleet.mcpfleet(&["events", "--env", "prod", "--output", "json"]);
    assert!(out.status.success(), "{}", text(&out));
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("deployment_completed"),
        "{}",
        text(&out)
    );
}
