//! PostgreSQL for the state store's tests: one private cluster per test process
//! ([`cluster`]), started on first use, and a new empty database for every test
//! ([`fresh_database`]).
//!
//! The cluster lives in a [`scratch_dir`] named `postgres`, listens on a free loopback port
//! and keeps its socket in that directory, so it never meets the machine's own PostgreSQL
//! or another test process's. PostgreSQL refuses to run as root: as root the directory is
//! handed to the `postgres` user and every server command runs through `runuser -u
//! postgres`; as anyone else, as that user.
//!
//! No cluster outlives its test process: a watchdog process waits for the test process's
//! end (the closing of a pipe only the test process holds, which the kernel closes however
//! it ends, `SIGKILL` included), then stops the server and removes the directory. A
//! cluster whose test process and watchdog were both killed is stopped and removed by the
//! next test process that starts one.
//!
//! PostgreSQL comes from `cargo xtask peers` (Debian's `postgresql-15`). When it is
//! missing these helpers panic saying so: the tests fail, never skip.

use std::os::unix::fs::MetadataExt as _;
use std::os::unix::fs::PermissionsExt as _;
use std::os::unix::process::CommandExt as _;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::OnceLock;
use std::sync::atomic::{AtomicU32, Ordering};

use crate::{free_port, scratch_dir};

/// Where Debian's `postgresql-15` puts the server's programs.
pub const BIN_DIR: &str = "/usr/lib/postgresql/15/bin";

/// The superuser `initdb` creates; every URL connects as it (trust authentication on
/// loopback: the cluster is private to the test process).
pub const SUPERUSER: &str = "postgres";

/// The prefix of a cluster's directory name, before the test process's pid.
const DIR_PREFIX: &str = "mcpfleet-test-postgres-";

/// The test process's cluster.
#[derive(Debug)]
pub struct Cluster {
    dir: PathBuf,
    port: u16,
    /// The watchdog, its stdin (the pipe's write end) held, never written, until the
    /// process ends.
    _watchdog: Child,
}

impl Cluster {
    /// The loopback port the server listens on.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The cluster's directory: `data/` (the cluster), `server.log`, the socket.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The CA certificate (PEM) that issued the server's: what `sslrootcert` names for a
    /// verified TLS connection. Nothing else trusts it.
    pub fn ca_file(&self) -> PathBuf {
        self.dir.join("ca.pem")
    }

    /// `postgres://postgres@127.0.0.1:PORT/DATABASE`.
    pub fn url(&self, database: &str) -> String {
        format!("postgres://{SUPERUSER}@127.0.0.1:{}/{database}", self.port)
    }

    /// Runs `sql` in `database` with `psql` as the superuser and returns what it printed
    /// (unaligned, tuples only: one row a line, columns split by `|`).
    ///
    /// # Panics
    /// When `psql` fails; the message shows what it printed.
    pub fn psql(&self, database: &str, sql: &str) -> String {
        let output = Command::new(Path::new(BIN_DIR).join("psql"))
            .args([
                "-X",
                "-q",
                "-A",
                "-t",
                "-v",
                "ON_ERROR_STOP=1",
                "-h",
                "127.0.0.1",
            ])
            .args([
                "-p",
                &self.port.to_string(),
                "-U",
                SUPERUSER,
                "-d",
                database,
            ])
            .args(["-c", sql])
            .stdin(Stdio::null())
            .output()
            .expect("start psql");
        assert!(
            output.status.success(),
            "psql -d {database} -c {sql:?} failed ({}): {}",
            output.status,
            String::from_utf8_lossy(&output.stderr).trim()
        );
        String::from_utf8_lossy(&output.stdout).into_owned()
    }
}

/// The cluster of this test process, initialised and started on first use (about a
/// second), stopped and removed when the process ends.
///
/// # Panics
/// When PostgreSQL 15 is not installed (run `cargo xtask peers`), or `initdb` or the server
/// fails (the message shows its output or log).
pub fn cluster() -> &'static Cluster {
    static CLUSTER: OnceLock<Cluster> = OnceLock::new();
    CLUSTER.get_or_init(start)
}

/// A new, empty database in [`cluster`], `test_N`, and its URL. Every test takes its own.
///
/// # Panics
/// As [`cluster`], or when `CREATE DATABASE` fails.
pub fn fresh_database() -> String {
    static SEQUENCE: AtomicU32 = AtomicU32::new(0);
    let cluster = cluster();
    let name = format!("test_{}", SEQUENCE.fetch_add(1, Ordering::Relaxed));
    cluster.psql("postgres", &format!("CREATE DATABASE {name}"));
    cluster.url(&name)
}

fn start() -> Cluster {
    let bin = Path::new(BIN_DIR);
    assert!(
        bin.join("initdb").is_file(),
        "PostgreSQL 15 is not installed ({} is missing): run `cargo xtask peers`",
        bin.join("initdb").display()
    );
    // The process's own uid, as /proc shows it: root cannot run the server itself.
    let as_postgres = std::fs::metadata("/proc/self").is_ok_and(|m| m.uid() == 0);
    remove_abandoned_clusters(as_postgres);

    let dir = scratch_dir("postgres");
    if as_postgres {
        succeed(
            Command::new("chown")
                .arg(format!("{SUPERUSER}:{SUPERUSER}"))
                .arg(&dir),
            "hand the cluster directory to the postgres user",
        );
    }
    let data = dir.join("data");
    // No fsync anywhere: a test cluster holds nothing worth a disk flush, and it makes the
    // store's tests several times faster on a virtual disk.
    succeed(
        server_command(as_postgres, "initdb")
            .arg("-D")
            .arg(&data)
            .args(["-A", "trust", "-U", SUPERUSER, "--no-sync", "-E", "UTF8"])
            .args(["--locale", "C"]),
        "initdb",
    );
    // TLS on, with a certificate for 127.0.0.1 and localhost from a CA only `ca.pem`
    // trusts: plain and TLS connections both work, as with most servers.
    let (cert, key) = (dir.join("server.crt"), dir.join("server.key"));
    crate::tls::ServerIdentity::issued_by_a_new_ca(&dir.join("ca.pem")).write_pem(&cert, &key);
    // The server refuses a key others can read.
    std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o600))
        .expect("make the server key private");
    if as_postgres {
        succeed(
            Command::new("chown")
                .arg(format!("{SUPERUSER}:{SUPERUSER}"))
                .arg(&cert)
                .arg(&key),
            "hand the server's certificate and key to the postgres user",
        );
    }
    let port = free_port();
    let options = format!(
        "-p {port} -k {dir} -c listen_addresses=127.0.0.1 -c fsync=off -c synchronous_commit=off \
         -c full_page_writes=off -c ssl=on -c ssl_cert_file={cert} -c ssl_key_file={key}",
        dir = dir.display(),
        cert = cert.display(),
        key = key.display(),
    );
    let log = dir.join("server.log");
    let started = server_command(as_postgres, "pg_ctl")
        .arg("-D")
        .arg(&data)
        .args(["-o", &options, "-l"])
        .arg(&log)
        .args(["-w", "-t", "60", "start"])
        .output()
        .expect("start pg_ctl");
    if !started.status.success() {
        panic!(
            "the test PostgreSQL did not start ({}): {}\nserver log ({}):\n{}",
            started.status,
            String::from_utf8_lossy(&started.stderr).trim(),
            log.display(),
            std::fs::read_to_string(&log).unwrap_or_default()
        );
    }
    let watchdog = watchdog(&dir, as_postgres);
    Cluster {
        dir,
        port,
        _watchdog: watchdog,
    }
}

/// Starts the process that stops the cluster in `dir` and removes the directory once this
/// process's end closes the pipe to its stdin.
fn watchdog(dir: &Path, as_postgres: bool) -> Child {
    let stop = stop_command(dir, as_postgres);
    Command::new("sh")
        .args([
            "-c",
            // $0 is the directory, the rest the stop command.
            r#"cat >/dev/null; dir="$0"; "$@" >/dev/null 2>&1; rm -rf "$dir""#,
        ])
        .arg(dir)
        .arg(stop.get_program())
        .args(stop.get_args())
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        // Its own process group: a Ctrl-C to the test run must not stop the watchdog before
        // it stops the server (which pg_ctl started in a session of its own).
        .process_group(0)
        .spawn()
        .expect("start the PostgreSQL watchdog (sh)")
}

/// `pg_ctl stop -m immediate` for the cluster in `dir`: no checkpoint, nothing to keep.
fn stop_command(dir: &Path, as_postgres: bool) -> Command {
    let mut stop = server_command(as_postgres, "pg_ctl");
    stop.arg("-D")
        .arg(dir.join("data"))
        .args(["-m", "immediate", "-w", "stop"]);
    stop
}

/// Stops and removes the clusters of test processes that are gone (killed together with
/// their watchdog).
fn remove_abandoned_clusters(as_postgres: bool) {
    let Ok(entries) = std::fs::read_dir(std::env::temp_dir()) else {
        return;
    };
    for entry in entries.flatten() {
        let name = entry.file_name();
        let Some(pid) = name
            .to_str()
            .and_then(|n| n.strip_prefix(DIR_PREFIX))
            .and_then(|rest| rest.split('-').next())
            .and_then(|pid| pid.parse::<u32>().ok())
        else {
            continue;
        };
        if Path::new("/proc").join(pid.to_string()).exists() {
            continue;
        }
        let dir = entry.path();
        if dir.join("data/postmaster.pid").exists() {
            let _ = stop_command(&dir, as_postgres)
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status();
        }
        let _ = std::fs::remove_dir_all(&dir);
    }
}

/// `program` from [`BIN_DIR`], through `runuser -u postgres` when `as_postgres`.
fn server_command(as_postgres: bool, program: &str) -> Command {
    let program = Path::new(BIN_DIR).join(program);
    if as_postgres {
        let mut command = Command::new("runuser");
        command.args(["-u", SUPERUSER, "--"]).arg(program);
        command
    } else {
        Command::new(program)
    }
}

fn succeed(command: &mut Command, what: &str) {
    let output = command
        .stdin(Stdio::null())
        .output()
        .unwrap_or_else(|e| panic!("{what}: cannot start {:?}: {e}", command.get_program()));
    assert!(
        output.status.success(),
        "{what} failed ({}): {}{}",
        output.status,
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
}
