//! Chromium and its WebDriver server for the dashboard's browser tests, installed with
//! `apt-get` when missing (part of `cargo xtask peers`), then checked to be one release:
//! `chromedriver` refuses to start a session with a browser of another major version,
//! which would otherwise surface as every browser test failing with a WebDriver error.

use crate::debian;
use anyhow::{Context, Result, bail};
use std::path::Path;
use std::process::Command;

/// Installs Debian's `chromium` and `chromium-driver` and checks they match.
///
/// # Errors
/// When a package cannot be installed, a program does not report its version, or the two
/// versions differ (a half-upgraded machine); the message says what to run.
pub(crate) fn install() -> Result<()> {
    let chromium = debian::ensure("chromium", "chromium")?;
    let driver = debian::ensure("chromedriver", "chromium-driver")?;
    let browser_version = version(&chromium)?;
    let driver_version = version(&driver)?;
    if browser_version != driver_version {
        bail!(
            "chromium is {browser_version} but chromedriver is {driver_version}: the browser \
             tests need one release of both; run `apt-get install chromium chromium-driver` \
             (as root) to bring them level"
        );
    }
    eprintln!("chromium and chromedriver work (version {browser_version})");
    Ok(())
}

/// The dotted version a program prints for `--version` (`Chromium 156.0.8078.114 built on
/// Debian…`, `ChromeDriver 156.0.8078.114 (…)`).
fn version(program: &Path) -> Result<String> {
    let output = Command::new(program)
        .arg("--version")
        .output()
        .with_context(|| format!("start {}", program.display()))?;
    let printed = String::from_utf8_lossy(&output.stdout);
    printed
        .split_whitespace()
        .find(|word| word.starts_with(|c: char| c.is_ascii_digit()) && word.contains('.'))
        .map(str::to_owned)
        .with_context(|| {
            format!(
                "`{} --version` printed no version: {}",
                program.display(),
                printed.trim()
            )
        })
}
