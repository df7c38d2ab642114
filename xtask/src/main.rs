//! `cargo xtask <task>`: the chores of this repository, as one Rust program so they run the
//! same everywhere.
//!
//! - `schema [--check]`  write (or verify) schema/mcpfleet.schema.json from the Rust types
//! - `peers`             install the third-party MCP servers the interop tests use
//!   (Node 22, npm and PyPI packages) into target/peers, and the Debian packages: Podman
//!   for the container tests, Prometheus for the observability tests, Chromium and its
//!   WebDriver server for the dashboard's browser tests, PostgreSQL 15 for the state store's
//!   tests
//! - `ci`                the whole CI gate: peers, fmt, clippy, schema, tests, benchmark smoke
//! - `bench validate [--servers N] [--runs N] [--smoke]`  time validate + plan of a
//!   generated fleet with the release binary; writes bench-results/validate.json
//! - `bench up [--waves N] [--per-wave N] [--delay-ms N] [--smoke]`  deploy a generated
//!   fleet of sample servers; overhead vs the critical path and control plane memory
//! - `bench gateway [--calls N] [--smoke]`  MCP call latency and throughput through the
//!   gateway vs direct and the peer bridges, and the gateway's memory per idle session;
//!   writes bench-results/gateway.json
//! - `bench rollout [--runs N] [--interval-ms N] [--smoke]`  how fast a failing canary stops
//!   getting traffic and a blue-green rollback serves the old revision; writes
//!   bench-results/rollout.json
//! - `bench containers [--runs N] [--calls N] [--smoke]`  start-to-ready of the sample server
//!   as a container through `mcpfleet up -d` vs `podman run` plus the MCP handshake, and the
//!   gateway's added latency to it vs to the same server as a process; writes
//!   bench-results/containers.json (needs Podman: `cargo xtask peers`)
//! - `bench store [--runs N] [--servers N] [--lease-ms N] [--smoke]`  deploy and rollback of a fleet from
//!   `mcpfleet up` with its state in SQLite and in PostgreSQL (a cluster the run starts),
//!   side by side; writes bench-results/store.json (needs PostgreSQL: `cargo xtask peers`)
//! - `bench soak [--active N] [--seconds N] [--idle N]`  10,000 idle sessions held and 1,000
//!   calling for 60 s against the gateway: failed calls, RSS over time, memory per idle
//!   session; writes bench-results/soak.json (by hand, not in CI)

mod bench;
mod bench_containers;
mod bench_gateway;
mod bench_rollout;
mod bench_soak;
mod bench_store;
mod chromium;
mod debian;
mod image;
mod peers;
mod podman;
mod postgres;
mod raw_http_relay;

use anyhow::{Context, Result, bail};
use std::path::{Path, PathBuf};
use std::process::Command;

fn main() -> Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    match args.as_slice() {
        ["schema"] => schema(false),
        ["schema", "--check"] => schema(true),
        ["ci"] => ci(),
        ["peers"] => install_test_peers(),
        ["image", rest @ ..] => image::build(rest),
        ["bench", "validate", rest @ ..] => bench::validate(rest),
        ["bench", "up", rest @ ..] => bench::up(rest),
        ["bench", "gateway", rest @ ..] => bench_gateway::run(rest),
        ["bench", "rollout", rest @ ..] => bench_rollout::run(rest),
        ["bench", "soak", rest @ ..] => bench_soak::run(rest),
        ["bench", "store", rest @ ..] => bench_store::run(rest),
        ["bench", "containers", rest @ ..] => bench_containers::run(rest),
        // Hidden: the gateway process `bench gateway` measures.
        ["bench-gateway-serve", rest @ ..] => bench_gateway::serve(rest),
        // Hidden: load endpoints by hand (e.g. under `perf`): URL[,URL…] SESSIONS SECONDS.
        ["bench-gateway-load", urls, sessions, seconds] => {
            bench_gateway::load(urls, sessions, seconds)
        }
        _ => {
            eprintln!(
                "usage: cargo xtask schema [--check] | peers | ci | bench validate [--servers N] [--runs N] [--smoke] | bench up [--waves N] [--per-wave N] [--delay-ms N] [--smoke] | bench gateway [--calls N] [--smoke] | bench rollout [--runs N] [--interval-ms N] [--smoke] | bench soak [--active N] [--seconds N] [--idle N] | bench containers [--runs N] [--calls N] [--smoke] | bench store [--runs N] [--servers N] [--lease-ms N] [--smoke]"
            );
            std::process::exit(2);
        }
    }
}

pub(crate) fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("xtask sits in the workspace")
        .to_path_buf()
}

const SCHEMA_PATH: &str = "schema/mcpfleet.schema.json";

fn schema(check: bool) -> Result<()> {
    let path = root().join(SCHEMA_PATH);
    let fresh = serde_json::to_string_pretty(&fleet_spec::json_schema())? + "\n";
    if check {
        let current = std::fs::read_to_string(&path).unwrap_or_default();
        if current != fresh {
            bail!("{SCHEMA_PATH} is stale: run `cargo xtask schema` and commit the result");
        }
        println!("{SCHEMA_PATH} is up to date");
    } else {
        std::fs::write(&path, fresh).with_context(|| format!("write {}", path.display()))?;
        println!("wrote {SCHEMA_PATH}");
    }
    Ok(())
}

pub(crate) fn run(program: &str, args: &[&str]) -> Result<()> {
    eprintln!("+ {program} {}", args.join(" "));
    let mut command = Command::new(program);
    command.args(args).current_dir(root());
    succeed(command, program, args)
}

/// Runs `command` (`program args`) to its end; an error unless it succeeded.
fn succeed(mut command: Command, program: &str, args: &[&str]) -> Result<()> {
    let status = command
        .status()
        .with_context(|| format!("start {program}"))?;
    if !status.success() {
        bail!("`{program} {}` failed ({status})", args.join(" "));
    }
    Ok(())
}

/// The Debian packages [`install_test_peers`] installs, whose versions it records in
/// `target/peers/debian-packages`.
const DEBIAN_PACKAGES: &[&str] = &[
    "podman",
    "runc",
    "iptables",
    "binutils",
    "prometheus",
    "chromium",
    "chromium-driver",
    "postgresql-15",
];

/// Everything the tests run besides our own binaries: the MCP peers, Podman, Debian's
/// `prometheus` (promtool checks and unit-tests the shipped alert rules; a real Prometheus
/// scrapes a live fleet for every dashboard query) and Debian's `chromium` with
/// `chromium-driver` (the dashboard, driven in a headless browser over WebDriver), and
/// PostgreSQL 15 (the state store's second backend; each test process starts its own).
fn install_test_peers() -> Result<()> {
    peers::install()?;
    podman::install()?;
    debian::ensure("promtool", "prometheus")?;
    debian::ensure("prometheus", "prometheus")?;
    chromium::install()?;
    postgres::install()?;
    debian::record_versions(
        DEBIAN_PACKAGES,
        &root().join("target/peers/debian-packages"),
    )
}

/// The CI gate. Everything is built once in the dev profile and reused by every step.
fn ci() -> Result<()> {
    install_test_peers()?;
    run("cargo", &["fmt", "--all", "--check"])?;
    let clippy = [
        "clippy",
        "--workspace",
        "--all-targets",
        "--locked",
        "--",
        "-D",
        "warnings",
    ];
    succeed(cargo_once(&clippy), "cargo", &clippy)?;
    schema(true)?;
    let (passed, failed) = test_workspace()?;
    bench::validate(&["--smoke"])?;
    bench::up(&["--smoke"])?;
    bench_gateway::run(&["--smoke"])?;
    bench_rollout::run(&["--smoke"])?;
    bench_containers::run(&["--smoke"])?;
    bench_store::run(&["--smoke"])?;
    // Last: the only step that needs a release build.
    image::build(&[])?;
    eprintln!("CI gate passed");
    // The closing line CI reads: every test of the workspace, summed.
    println!("tests: {passed} passed, {failed} failed");
    Ok(())
}

/// `cargo` for the gate's dev-profile steps, without incremental state. A clean clone
/// compiles every crate once, so the state would never be reused; it took 2.7 GB of a
/// clean run's disk, and one CI machine ran out of space.
fn cargo_once(args: &[&str]) -> Command {
    eprintln!("+ cargo {}", args.join(" "));
    let mut command = Command::new("cargo");
    command
        .args(args)
        .current_dir(root())
        .env("CARGO_INCREMENTAL", "0");
    command
}

/// `cargo test --workspace --all-targets`, echoing its output and summing its results.
fn test_workspace() -> Result<(u64, u64)> {
    use std::io::BufRead;
    let mut child = cargo_once(&["test", "--workspace", "--all-targets"])
        .stdout(std::process::Stdio::piped())
        .spawn()
        .context("start cargo test")?;
    let (mut passed, mut failed) = (0, 0);
    let stdout = child.stdout.take().context("cargo test stdout")?;
    for line in std::io::BufReader::new(stdout).lines() {
        let line = line?;
        println!("{line}");
        if let Some(rest) = line.strip_prefix("test result: ") {
            let count = |word: &str| {
                rest.split(';').find_map(|part| {
                    part.trim()
                        .strip_suffix(word)?
                        .trim()
                        .rsplit(' ')
                        .next()?
                        .parse::<u64>()
                        .ok()
                })
            };
            passed += count(" passed").unwrap_or(0);
            failed += count(" failed").unwrap_or(0);
        }
    }
    let status = child.wait()?;
    if !status.success() || failed > 0 {
        bail!("tests failed: {passed} passed, {failed} failed");
    }
    Ok((passed, failed))
}
