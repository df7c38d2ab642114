//! PostgreSQL 15 for the state store's tests, installed with `apt-get` when missing (part of
//! `cargo xtask peers`), then checked to run. The tests start a private cluster of their own
//! (`fleet_testkit::postgres`) from the server's programs; `bench store` starts one here
//! ([`Cluster`]), with the server's default durability (fsync on).

use crate::debian;
use anyhow::{Context, Result, bail};
use std::path::{Path, PathBuf};
use std::process::Command;

/// Where Debian's `postgresql-15` puts the server's programs (not on `PATH`), as
/// `fleet_testkit::postgres::BIN_DIR`.
const BIN_DIR: &str = "/usr/lib/postgresql/15/bin";

/// Installs Debian's `postgresql-15` and checks that its `postgres` reports version 15.
///
/// # Errors
/// When the package cannot be installed, or the server program does not run.
pub(crate) fn install() -> Result<()> {
    let bin = Path::new(BIN_DIR);
    debian::ensure_file(&bin.join("initdb"), "postgresql-15")?;
    let postgres = bin.join("postgres");
    let output = Command::new(&postgres)
        .arg("--version")
        .output()
        .with_context(|| format!("start {}", postgres.display()))?;
    let version = String::from_utf8_lossy(&output.stdout);
    if !output.status.success() || !version.contains(" 15.") {
        bail!(
            "`{} --version` printed {:?} ({}): the state store's tests need PostgreSQL 15; \
             run `apt-get install postgresql-15` (as root)",
            postgres.display(),
            version.trim(),
            output.status
        );
    }
    eprintln!("PostgreSQL works ({})", version.trim());
    Ok(())
}

/// A PostgreSQL cluster of a benchmark run, on a free loopback port, stopped when dropped.
pub(crate) struct Cluster {
    dir: PathBuf,
    port: u16,
    as_postgres: bool,
}

impl Cluster {
    /// `initdb` into `dir` (emptied first) and start the server. PostgreSQL refuses to run
    /// as root: as root the directory goes to the `postgres` user and the server's commands
    /// run through `runuser`.
    ///
    /// # Errors
    /// PostgreSQL is missing (run `cargo xtask peers`), or `initdb` or the server fails.
    pub(crate) fn start(dir: &Path) -> Result<Self> {
        let bin = Path::new(BIN_DIR);
        if !bin.join("initdb").is_file() {
            bail!("PostgreSQL 15 is not installed: run `cargo xtask peers`");
        }
        let _ = std::fs::remove_dir_all(dir);
        std::fs::create_dir_all(dir)?;
        // The process's own uid, as /proc shows it.
        let as_postgres = std::fs::metadata("/proc/self")
            .is_ok_and(|m| std::os::unix::fs::MetadataExt::uid(&m) == 0);
        if as_postgres {
            crate::run("chown", &["postgres:postgres", &dir.display().to_string()])?;
        }
        let port = std::net::TcpListener::bind("127.0.0.1:0")?
            .local_addr()?
            .port();
        let data = dir.join("data");
        let ok = server_command(as_postgres, "initdb")
            .arg("-D")
            .arg(&data)
            .args([
                "-A", "trust", "-U", "postgres", "-E", "UTF8", "--locale", "C",
            ])
            .output()?;
        if !ok.status.success() {
            bail!("initdb failed: {}", String::from_utf8_lossy(&ok.stderr));
        }
        let options = format!(
            "-p {port} -k {} -c listen_addresses=127.0.0.1",
            dir.display()
        );
        let log = dir.join("server.log");
        let ok = server_command(as_postgres, "pg_ctl")
            .arg("-D")
            .arg(&data)
            .args(["-o", &options, "-l"])
            .arg(&log)
            .args(["-w", "-t", "60", "start"])
            .output()?;
        if !ok.status.success() {
            bail!(
                "the benchmark's PostgreSQL did not start: {}\n{}",
                String::from_utf8_lossy(&ok.stderr),
                std::fs::read_to_string(&log).unwrap_or_default()
            );
        }
        Ok(Self {
            dir: dir.to_path_buf(),
            port,
            as_postgres,
        })
    }

    /// A new database `name` and its URL.
    pub(crate) fn database(&self, name: &str) -> Result<String> {
        let ok = Command::new(Path::new(BIN_DIR).join("psql"))
            .args([
                "-X",
                "-q",
                "-h",
                "127.0.0.1",
                "-U",
                "postgres",
                "-d",
                "postgres",
            ])
            .args(["-p", &self.port.to_string(), "-c"])
            .arg(format!("CREATE DATABASE {name}"))
            .output()?;
        if !ok.status.success() {
            bail!(
                "CREATE DATABASE {name}: {}",
                String::from_utf8_lossy(&ok.stderr)
            );
        }
        Ok(format!(
            "postgres://postgres@127.0.0.1:{}/{name}",
            self.port
        ))
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        let _ = server_command(self.as_postgres, "pg_ctl")
            .arg("-D")
            .arg(self.dir.join("data"))
            .args(["-m", "fast", "-w", "stop"])
            .output();
    }
}

/// `program` from [`BIN_DIR`], through `runuser -u postgres` when `as_postgres`.
fn server_command(as_postgres: bool, program: &str) -> Command {
    let program = Path::new(BIN_DIR).join(program);
    if as_postgres {
        let mut command = Command::new("runuser");
        command.args(["-u", "postgres", "--"]).arg(program);
        command
    } else {
        Command::new(program)
    }
}
