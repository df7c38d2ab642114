//! Podman for the container tests, installed with `apt-get` when missing (part of
//! `cargo xtask peers`, so of `cargo xtask ci`), then checked to work the way the tests run
//! it. Nothing system-wide is configured: every podman command the project runs passes
//! [`GLOBAL_FLAGS`] instead of relying on `/etc/containers`.

use crate::debian;
use anyhow::{Context, Result, bail};
use std::process::Command;

/// The flags `fleet_testkit::podman` passes too: runc rather than the default OCI
/// runtime, and cgroupfs because the test machines run no systemd to manage cgroups through.
const GLOBAL_FLAGS: &[&str] = &["--runtime", "runc", "--cgroup-manager", "cgroupfs"];

/// `podman` with [`GLOBAL_FLAGS`].
pub(crate) fn command() -> Command {
    let mut podman = Command::new("podman");
    podman.args(GLOBAL_FLAGS);
    podman
}

/// Installs podman and what its tests need, then runs `podman info` with the tests' flags.
///
/// # Errors
/// When a package cannot be installed, or podman is installed but does not work here; the
/// message says what podman printed and what to check.
pub(crate) fn install() -> Result<()> {
    debian::ensure("podman", "podman")?;
    debian::ensure("runc", "runc")?;
    // Bridge networking (an http server's published port): netavark, or the CNI plugins
    // on a machine without recommends, program the host's firewall with iptables, which
    // neither package depends on for certain.
    debian::ensure("iptables", "iptables")?;
    // The sample image holds a stripped copy of the sample server.
    debian::ensure("strip", "binutils")?;
    let output = command()
        .args([
            "info",
            "--format",
            "{{.Host.OCIRuntime.Name}} {{.Version.Version}}",
        ])
        .output()
        .context("start podman")?;
    if !output.status.success() {
        bail!(
            "`podman {} info` failed ({}): {}\nThe container tests need a working podman as \
             root (runc, cgroupfs); check the message above",
            GLOBAL_FLAGS.join(" "),
            output.status,
            String::from_utf8_lossy(&output.stderr).trim()
        );
    }
    eprintln!(
        "podman works (runtime, version: {})",
        String::from_utf8_lossy(&output.stdout).trim()
    );
    Ok(())
}
