//! Debian packages the tests and benchmarks run, installed with `apt-get` when missing. Kept apart
//! from `peers` (npm and PyPI, into `target/peers`): these go system-wide, so they need
//! root, as on CI's machines.

use anyhow::{Context, Result, bail};
use std::path::{Path, PathBuf};
use std::process::Command;

/// `program` from `PATH`, after `apt-get install package` if it is not there yet.
///
/// # Errors
/// When the program is missing and cannot be installed (not root, no package index):
/// the message says what to install by hand.
pub(crate) fn ensure(program: &str, package: &str) -> Result<PathBuf> {
    ensure_found(program, package, || find(program))
}

/// `file` (a program outside `PATH`, e.g. PostgreSQL's `initdb`), after `apt-get install
/// package` if it is not there yet.
///
/// # Errors
/// As [`ensure`].
pub(crate) fn ensure_file(file: &Path, package: &str) -> Result<PathBuf> {
    let found = || file.is_file().then(|| file.to_path_buf());
    ensure_found(&file.display().to_string(), package, found)
}

/// What `found` finds, after `apt-get install package` if it finds nothing yet.
fn ensure_found(
    program: &str,
    package: &str,
    found: impl Fn() -> Option<PathBuf>,
) -> Result<PathBuf> {
    if let Some(path) = found() {
        return Ok(path);
    }
    eprintln!("{program} is not installed: installing the Debian package `{package}`");
    // A fresh machine has no package index yet: update once, only if the first try fails.
    let installed = apt_get(&["install", "-y", "-q", package]).or_else(|_| {
        apt_get(&["update", "-q"]).and_then(|()| apt_get(&["install", "-y", "-q", package]))
    });
    if let Err(error) = installed {
        bail!(
            "{program} is needed and could not be installed ({error:#}); install it by hand: \
             `apt-get install {package}` (as root)"
        );
    }
    found().with_context(|| format!("`apt-get install {package}` did not provide {program}"))
}

/// Writes the installed version of each of `packages` to `record` (`package version`, one
/// a line), as `target/peers/stamp` records the npm and PyPI peers: what a test run used,
/// to compare when a result changes after an upgrade.
///
/// # Errors
/// When a package is not installed or the file cannot be written.
pub(crate) fn record_versions(packages: &[&str], record: &Path) -> Result<()> {
    let output = Command::new("dpkg-query")
        .args(["--show", "--showformat", "${Package} ${Version}\n"])
        .args(packages)
        .output()
        .context("start dpkg-query")?;
    if !output.status.success() {
        bail!(
            "`dpkg-query --show {}` failed: {}",
            packages.join(" "),
            String::from_utf8_lossy(&output.stderr).trim()
        );
    }
    if let Some(dir) = record.parent() {
        std::fs::create_dir_all(dir)?;
    }
    std::fs::write(record, &output.stdout)
        .with_context(|| format!("write {}", record.display()))?;
    eprintln!(
        "Debian packages (recorded in {}):\n{}",
        record.display(),
        String::from_utf8_lossy(&output.stdout).trim_end()
    );
    Ok(())
}

fn find(program: &str) -> Option<PathBuf> {
    std::env::var_os("PATH")
        .into_iter()
        .flat_map(|path| std::env::split_paths(&path).collect::<Vec<_>>())
        .map(|dir| dir.join(program))
        .find(|candidate| candidate.is_file())
}

fn apt_get(args: &[&str]) -> Result<()> {
    eprintln!("+ apt-get {}", args.join(" "));
    let status = Command::new("apt-get")
        .args(args)
        .env("DEBIAN_FRONTEND", "noninteractive")
        .status()
        .context("start apt-get")?;
    if !status.success() {
        bail!("`apt-get {}` failed ({status})", args.join(" "));
    }
    Ok(())
}
