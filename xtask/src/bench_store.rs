//! `bench store`: how long `mcpfleet deploy` and `mcpfleet rollback` of a real fleet take
//! with its state in the state directory's SQLite file and in PostgreSQL, side by side: the
//! same fleet from `mcpfleet up`, the same steps, one machine, one run.
//!
//! PostgreSQL is a cluster this run starts on loopback with the server's shipped
//! durability (fsync on, as SQLite's `synchronous=FULL`). Each deploy changes every
//! server's arguments, so every server gets a new revision: the store journals a step
//! before and after each effect, which is what differs between the backends.
//!
//! Failover, too: a leader and a standby on one database, the leader killed with SIGKILL,
//! timed to the standby's socket accepting; its floor is the lease, which must lapse first.
//!
//! The floor, in the same run: one durable write of each store on its own (the store's
//! smallest write, one event appended, committed), the cost every journaled step pays; and
//! beneath the PostgreSQL store's, the bare commit of one row through the same client
//! library (what any program pays for a durable write to that server).

use crate::bench::{binaries, flag, write};
use crate::postgres::Cluster;
use crate::root;
use anyhow::{Context, Result, bail};
use std::fmt::Write as _;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Backend {
    Sqlite,
    Postgres,
}

impl Backend {
    fn name(self) -> &'static str {
        match self {
            Backend::Sqlite => "sqlite",
            Backend::Postgres => "postgres",
        }
    }
}

/// What one backend's run measured.
struct Measured {
    backend: Backend,
    up: Duration,
    deploys: Vec<Duration>,
    rollbacks: Vec<Duration>,
}

/// `bench store [--runs N] [--servers N] [--lease-ms N] [--smoke]`.
pub(crate) fn run(args: &[&str]) -> Result<()> {
    let smoke = args.contains(&"--smoke");
    let runs = flag(args, "--runs")?.unwrap_or(if smoke { 1 } else { 5 });
    let servers = flag(args, "--servers")?.unwrap_or(if smoke { 3 } else { 20 });
    if runs == 0 || servers == 0 {
        bail!("--runs and --servers need a number above 0");
    }
    let profile = binaries(smoke, &["mcpfleet", "fleet-testkit"])?;
    let bin = root().join("target").join(profile);
    let out_dir = root().join("bench-results");
    let cluster = Cluster::start(&out_dir.join("store-cluster"))?;
    let url = cluster.database("bench_store")?;
    let mut results = Vec::new();
    for backend in [Backend::Sqlite, Backend::Postgres] {
        let work = out_dir.join(format!("store-fleet-{}", backend.name()));
        results.push(measure(&bin, &work, backend, &url, servers, runs)?);
    }
    let writes = if smoke { 20 } else { 200 };
    let floor = [
        one_write(Backend::Sqlite, &out_dir, &url, writes)?,
        one_write(
            Backend::Postgres,
            &out_dir,
            &cluster.database("bench_store_floor")?,
            writes,
        )?,
    ];
    let bare = bare_commit(&cluster.database("bench_store_bare")?, writes)?;
    let lease_ms = flag(args, "--lease-ms")?.unwrap_or(1000);
    let failovers = failover(
        &bin,
        &out_dir.join("store-failover"),
        &cluster.database("bench_store_failover")?,
        Duration::from_millis(lease_ms as u64),
        runs,
    )?;
    drop(cluster);

    let ms = |d: Duration| d.as_secs_f64() * 1000.0;
    let median = |v: &[Duration]| {
        let mut v = v.to_vec();
        v.sort();
        v[v.len() / 2]
    };
    let spread = |v: &[Duration]| {
        let (min, max) = (v.iter().min(), v.iter().max());
        format!(
            "{:.0}–{:.0}",
            min.map_or(0.0, |d| ms(*d)),
            max.map_or(0.0, |d| ms(*d))
        )
    };
    let mut table = format!(
        "## bench store ({profile}, {servers} stdio servers, {runs} deploys and rollbacks each)\n\n\
         | store | up to ready (ms) | deploy median (ms) | deploy min–max | rollback median (ms) | rollback min–max |\n\
         |---|---|---|---|---|---|\n"
    );
    for m in &results {
        let _ = writeln!(
            table,
            "| {} | {:.0} | {:.0} | {} | {:.0} | {} |",
            m.backend.name(),
            ms(m.up),
            ms(median(&m.deploys)),
            spread(&m.deploys),
            ms(median(&m.rollbacks)),
            spread(&m.rollbacks)
        );
    }
    let ratio =
        |f: fn(&Measured) -> &[Duration]| ms(median(f(&results[1]))) / ms(median(f(&results[0])));
    let deploy_ratio = ratio(|m| &m.deploys);
    let rollback_ratio = ratio(|m| &m.rollbacks);
    let _ = writeln!(
        table,
        "\nPostgreSQL / SQLite, medians: deploy {deploy_ratio:.2}×, rollback {rollback_ratio:.2}×\n\n\
         Floor, one durable store write (one event appended and committed, median of {writes}): \
         sqlite {:.2} ms, postgres {:.2} ms ({:.2}×); a bare PostgreSQL commit of one row \
         (tokio-postgres, autocommit INSERT): {:.2} ms, so the store's write is {:.2}× the bare commit",
        ms(floor[0]),
        ms(floor[1]),
        ms(floor[1]) / ms(floor[0]),
        ms(bare),
        ms(floor[1]) / ms(bare)
    );
    let _ = writeln!(
        table,
        "\nFailover (SIGKILL of the leader to the standby's socket accepting, lease {lease_ms} ms, \
         {runs} runs): median {:.0} ms, {} ms min–max; {:.2}× the lease (the floor: it must lapse)",
        ms(median(&failovers)),
        spread(&failovers),
        ms(median(&failovers)) / lease_ms as f64
    );
    print!("{table}");
    let json = serde_json::json!({
        "benchmark": "store",
        "profile": profile,
        "servers": servers,
        "runs": runs,
        "results": results.iter().map(|m| serde_json::json!({
            "store": m.backend.name(),
            "up_ms": ms(m.up),
            "deploy_ms": m.deploys.iter().map(|d| ms(*d)).collect::<Vec<_>>(),
            "rollback_ms": m.rollbacks.iter().map(|d| ms(*d)).collect::<Vec<_>>(),
        })).collect::<Vec<_>>(),
        "postgres_over_sqlite": { "deploy": deploy_ratio, "rollback": rollback_ratio },
        "failover_ms": failovers.iter().map(|d| ms(*d)).collect::<Vec<_>>(),
        "lease_ms": lease_ms,
        "floor_one_write_ms": {
            "sqlite": ms(floor[0]),
            "postgres": ms(floor[1]),
            "postgres_bare_commit": ms(bare),
            "writes": writes,
        },
    });
    write(
        &out_dir.join("store.json"),
        &serde_json::to_string_pretty(&json)?,
    )?;
    write(&out_dir.join("store.md"), &table)
}

/// `up`, then `runs` times a deploy of new arguments for every server and a rollback of the
/// whole fleet, then `down`.
fn measure(
    bin: &Path,
    work: &Path,
    backend: Backend,
    url: &str,
    servers: usize,
    runs: usize,
) -> Result<Measured> {
    let _ = std::fs::remove_dir_all(work);
    std::fs::create_dir_all(work)?;
    let file = work.join("mcpfleet.yaml");
    let state = work.join("state");
    let sample = bin.join("mcp-sample-server");
    let write_fleet = |revision: usize| {
        std::fs::write(&file, fleet(&sample, backend, servers, revision))
            .with_context(|| format!("write {}", file.display()))
    };
    let mcpfleet = |args: &[&str]| -> Result<Duration> {
        let started = Instant::now();
        mcpfleet(bin, &file, &state, url, args)?;
        Ok(started.elapsed())
    };
    write_fleet(1)?;
    let up = mcpfleet(&["up", "-d"])?;
    let mut measured = Measured {
        backend,
        up,
        deploys: Vec::new(),
        rollbacks: Vec::new(),
    };
    let result = (|| {
        for run in 0..runs {
            write_fleet(run + 2)?;
            measured.deploys.push(mcpfleet(&["deploy"])?);
            measured.rollbacks.push(mcpfleet(&["rollback"])?);
        }
        Ok(())
    })();
    let down = mcpfleet(&["down"]);
    result.and(down).map(|_| measured)
}

/// `runs` times: a leader (`up -d`) and a standby (`up -d` in a second state directory) of
/// a fleet of two stdio servers on `url` with a lease of `lease`, the leader killed with
/// SIGKILL, and the time from the kill to the standby's admin socket accepting.
fn failover(
    bin: &Path,
    work: &Path,
    url: &str,
    lease: Duration,
    runs: usize,
) -> Result<Vec<Duration>> {
    let _ = std::fs::remove_dir_all(work);
    std::fs::create_dir_all(work)?;
    let file = work.join("mcpfleet.yaml");
    let sample = bin.join("mcp-sample-server");
    std::fs::write(
        &file,
        format!(
            "version: 1\nname: bench-failover\ngateway:\n  listen: 127.0.0.1:0\nsecrets:\n  state_db: {{ env: STATE_DB }}\n\
             state:\n  postgres:\n    url: \"{{{{ secret('state_db') }}}}\"\n    lease: {}ms\nservers:\n  \
             a:\n    stdio: {{ command: {} }}\n  b:\n    stdio: {{ command: {} }}\n",
            lease.as_millis(),
            sample.display(),
            sample.display()
        ),
    )?;
    let mcpfleet = |state: &Path, args: &[&str]| mcpfleet(bin, &file, state, url, args);
    let mut took = Vec::with_capacity(runs);
    for run in 0..runs {
        let (leader, standby) = (
            work.join(format!("leader-{run}")),
            work.join(format!("standby-{run}")),
        );
        mcpfleet(&leader, &["up", "-d"])?;
        let status: serde_json::Value =
            serde_json::from_slice(&mcpfleet(&leader, &["status", "--output", "json"])?.stdout)?;
        let pid = status["pid"].as_u64().context("status has no pid")?;
        let said = mcpfleet(&standby, &["up", "-d"])?;
        if !String::from_utf8_lossy(&said.stderr).contains("standing by") {
            bail!("the second control plane did not stand by");
        }
        let socket = standby.join("control.sock");
        let killed = Instant::now();
        nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(i32::try_from(pid)?),
            nix::sys::signal::Signal::SIGKILL,
        )?;
        while std::os::unix::net::UnixStream::connect(&socket).is_err() {
            if killed.elapsed() > lease * 4 + Duration::from_secs(10) {
                bail!(
                    "the standby did not take over within {:?}",
                    killed.elapsed()
                );
            }
            std::thread::sleep(Duration::from_millis(2));
        }
        took.push(killed.elapsed());
        mcpfleet(&standby, &["down"])?;
    }
    Ok(took)
}

/// `mcpfleet ARGS` of the fleet `file` with its state in `state` and the database URL in
/// `STATE_DB` (the PostgreSQL fleets' secret); its output, or an error with what it said.
fn mcpfleet(
    bin: &Path,
    file: &Path,
    state: &Path,
    url: &str,
    args: &[&str],
) -> Result<std::process::Output> {
    let out = Command::new(bin.join("mcpfleet"))
        .args(args)
        .arg("--file")
        .arg(file)
        .arg("--state-dir")
        .arg(state)
        .env("STATE_DB", url)
        .output()
        .context("run mcpfleet")?;
    if !out.status.success() {
        bail!(
            "mcpfleet {} ({}) failed:\n{}",
            args.join(" "),
            file.display(),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok(out)
}

/// The median of `writes` single-event appends, each committed, on a fresh store of
/// `backend`: what one journaled step costs the store at least.
fn one_write(backend: Backend, out_dir: &Path, url: &str, writes: usize) -> Result<Duration> {
    use fleet_store::{NewEvent, PostgresStore, SqliteStore, StateStore};
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    runtime.block_on(async {
        let store: Box<dyn StateStore> = match backend {
            Backend::Sqlite => {
                let dir = out_dir.join("store-floor-sqlite");
                let _ = std::fs::remove_dir_all(&dir);
                std::fs::create_dir_all(&dir)?;
                Box::new(SqliteStore::open(&dir.join("state.db"))?)
            }
            Backend::Postgres => Box::new(PostgresStore::connect(url).await?),
        };
        let mut took = Vec::with_capacity(writes);
        for i in 0..writes {
            let event = NewEvent {
                time: "2026-01-01T00:00:00.000Z".to_owned(),
                kind: "bench".to_owned(),
                server: None,
                revision: None,
                deployment: None,
                instance: None,
                message: format!("write {i}"),
            };
            let started = Instant::now();
            store.append_events(vec![event]).await?;
            took.push(started.elapsed());
        }
        took.sort();
        Ok(took[took.len() / 2])
    })
}

/// The median of `writes` one-row INSERTs, each its own transaction, straight through
/// tokio-postgres: PostgreSQL's own price of a durable write here.
fn bare_commit(url: &str, writes: usize) -> Result<Duration> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    runtime.block_on(async {
        let (client, connection) = tokio_postgres::connect(url, tokio_postgres::NoTls).await?;
        tokio::spawn(connection);
        client
            .batch_execute("CREATE TABLE floor (id bigserial PRIMARY KEY, message text NOT NULL)")
            .await?;
        let insert = client
            .prepare("INSERT INTO floor (message) VALUES ($1)")
            .await?;
        let mut took = Vec::with_capacity(writes);
        for i in 0..writes {
            let message = format!("write {i}");
            let started = Instant::now();
            client.execute(&insert, &[&message]).await?;
            took.push(started.elapsed());
        }
        took.sort();
        Ok(took[took.len() / 2])
    })
}

/// `servers` stdio sample servers whose arguments name `revision`; the store in the
/// database of the `STATE_DB` secret for PostgreSQL.
fn fleet(sample: &Path, backend: Backend, servers: usize, revision: usize) -> String {
    let mut text = String::from("version: 1\nname: bench-store\ngateway:\n  listen: 127.0.0.1:0\n");
    if backend == Backend::Postgres {
        text.push_str(
            "secrets:\n  state_db: { env: STATE_DB }\nstate:\n  postgres:\n    url: \"{{ secret('state_db') }}\"\n",
        );
    }
    text.push_str("servers:\n");
    for i in 0..servers {
        let _ = writeln!(
            text,
            "  s{i}:\n    stdio: {{ command: {}, args: [\"--tools\", \"echo\", \"--name\", \"r{revision}\"] }}",
            sample.display()
        );
    }
    text
}
