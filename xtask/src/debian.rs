//! Debian packages the benchmarks run, installed with `apt-get` when missing. Kept apart
//! from `peers` (npm and PyPI, into `target/peers`): these go system-wide, so they need
//! root, as on CI's machines.

use anyhow::{Context, Result, bail};
use std::path::PathBuf;
use std::process::Command;

/// `program` from `PATH`, after `apt-get install package` if it is not there yet.
///
/// # Errors
/// When the program is missing and cannot be installed (not root, no package index):
/// the message says what to install by hand.
pub(crate) fn ensure(program: &str, package: &str) -> Result<PathBuf> {
    if let Some(path) = find(program) {
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
    find(program).with_context(|| format!("`apt-get install {package}` did not provide {program}"))
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
