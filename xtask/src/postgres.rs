//! PostgreSQL 15 for the state store's tests, installed with `apt-get` when missing (part of
//! `cargo xtask peers`), then checked to run. The tests start a private cluster of their own
//! (`fleet_testkit::postgres`) from the server's programs; nothing here creates or starts a
//! cluster.

use crate::debian;
use anyhow::{Context, Result, bail};
use std::path::Path;
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
