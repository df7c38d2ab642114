//! `cargo xtask image`: mcpfleet's own container image, built from the release binary.
//!
//! No base image can be pulled here (and none is needed): the build context is a root
//! filesystem holding the stripped binary, the C libraries `ldd` lists for it, the CA
//! certificates (outbound TLS verifies against the OS store), a non-root user and a `/tmp`;
//! `deploy/container/Containerfile` copies it onto `scratch`. The image is then run the way
//! a hardened fleet runs containers (read-only root, no capabilities, no new privileges, no
//! network) to show the binary works in it and does not run as root.

use crate::{podman, root, run};
use anyhow::{Context, Result, bail, ensure};
use std::path::{Path, PathBuf};
use std::process::Command;

/// The image's user: not root, and not `nobody` (which by design owns nothing).
const USER: &str = "65532:65532";

pub(crate) fn build(args: &[&str]) -> Result<()> {
    let version = env!("CARGO_PKG_VERSION");
    let tag = match args {
        [] => format!("localhost/mcpfleet:{version}"),
        ["--tag", tag] => (*tag).to_owned(),
        _ => bail!("usage: cargo xtask image [--tag NAME:TAG]"),
    };
    run(
        "cargo",
        &["build", "--quiet", "--release", "-p", "mcpfleet"],
    )?;
    let context = root().join("target/image");
    assemble(&root().join("target/release/mcpfleet"), &context)?;
    let containerfile = root().join("deploy/container/Containerfile");
    podman_output(&[
        "build",
        "--quiet",
        "--tag",
        &tag,
        "--file",
        path(&containerfile)?,
        path(&context)?,
    ])?;
    verify(&tag, version)
}

/// The build context: `rootfs/` (copied to `/`) and `home/` (the user's, owned by it).
fn assemble(binary: &Path, context: &Path) -> Result<()> {
    if context.exists() {
        std::fs::remove_dir_all(context)
            .with_context(|| format!("remove {}", context.display()))?;
    }
    let rootfs = context.join("rootfs");
    minimal_rootfs(binary, "usr/local/bin/mcpfleet", &rootfs)?;
    let certs = Path::new("/etc/ssl/certs/ca-certificates.crt");
    if certs.exists() {
        copy(certs, &rootfs.join("etc/ssl/certs/ca-certificates.crt"))?;
    }
    let (uid, gid) = USER.split_once(':').expect("USER is uid:gid");
    write(
        &rootfs.join("etc/passwd"),
        &format!(
            "root:x:0:0:root:/root:/sbin/nologin\n\
             nonroot:x:{uid}:{gid}:nonroot:/home/nonroot:/sbin/nologin\n"
        ),
    )?;
    write(
        &rootfs.join("etc/group"),
        &format!("root:x:0:\nnonroot:x:{gid}:\n"),
    )?;
    std::fs::create_dir_all(context.join("home/nonroot"))?;
    Ok(())
}

/// The least a dynamically linked binary runs on: `binary` stripped at `inside` (relative to
/// `rootfs`), the libraries `ldd` lists for it and an empty `/tmp` (mode 1777; a read-only
/// root mounts a tmpfs there, which needs the directory). Shared with `bench containers`.
pub(crate) fn minimal_rootfs(binary: &Path, inside: &str, rootfs: &Path) -> Result<()> {
    let bin = rootfs.join(inside);
    copy(binary, &bin)?;
    run("strip", &[path(&bin)?])?;
    for library in linked_libraries(binary)? {
        let inside = library.strip_prefix("/").unwrap_or(&library);
        copy(&library, &rootfs.join(inside))?;
    }
    let tmp = rootfs.join("tmp");
    std::fs::create_dir_all(&tmp)?;
    set_mode(&tmp, 0o1777)
}

/// The shared libraries the dynamic loader maps for `binary`, and the loader itself.
fn linked_libraries(binary: &Path) -> Result<Vec<PathBuf>> {
    let output = Command::new("ldd")
        .arg(binary)
        .output()
        .context("run ldd")?;
    ensure!(output.status.success(), "ldd {} failed", binary.display());
    let listing = String::from_utf8(output.stdout).context("ldd output")?;
    // `libc.so.6 => /lib/x86_64-linux-gnu/libc.so.6 (0x…)` or `/lib64/ld-linux… (0x…)`;
    // the vDSO has no file.
    Ok(listing
        .lines()
        .filter_map(|line| {
            let file = line.split("=>").last()?.split_whitespace().next()?;
            file.starts_with('/').then(|| PathBuf::from(file))
        })
        .collect())
}

/// Runs the image as a hardened fleet would and checks what it says and who it runs as.
fn verify(tag: &str, version: &str) -> Result<()> {
    let said = run_hardened(tag, &[], &["--version"])?;
    let expected = format!("mcpfleet {version}");
    ensure!(
        said.trim() == expected,
        "the image's binary says {said:?}, expected {expected:?}"
    );
    // Reads and checks a fleet file: the binary does real work in the image.
    let examples = format!("{}:/fleet:ro", path(&root().join("examples"))?);
    let validated = run_hardened(
        tag,
        &["--volume", &examples],
        &["validate", "-f", "/fleet/quickstart.yaml"],
    )?;
    ensure!(
        validated.contains("is valid"),
        "the image could not validate the quick start fleet: {validated:?}"
    );
    let user = podman_output(&["image", "inspect", "--format", "{{.Config.User}}", tag])?;
    ensure!(
        user.trim() == USER,
        "the image runs as {user:?}, not {USER}"
    );
    let size = podman_output(&["image", "inspect", "--format", "{{.Size}}", tag])?;
    let megabytes = size.trim().parse::<f64>().unwrap_or(0.0) / 1e6;
    eprintln!("image {tag}: {expected}, user {USER}, {megabytes:.1} MB");
    Ok(())
}

/// `podman run` of the image with a read-only root, no capabilities, no new privileges
/// and no network; `options` go before the image, `args` to mcpfleet.
fn run_hardened(tag: &str, options: &[&str], args: &[&str]) -> Result<String> {
    let mut command = vec![
        "run",
        "--rm",
        "--read-only",
        "--cap-drop",
        "ALL",
        "--security-opt",
        "no-new-privileges",
        "--network",
        "none",
        "--ulimit",
        "nofile=1024:1024",
        "--ulimit",
        "nproc=1000:1000",
    ];
    command.extend(options);
    command.push(tag);
    command.extend(args);
    podman_output(&command)
}

pub(crate) fn podman_output(args: &[&str]) -> Result<String> {
    let output = podman::command()
        .args(args)
        .output()
        .context("run podman")?;
    if !output.status.success() {
        bail!(
            "`podman {}` failed: {}",
            args.join(" "),
            String::from_utf8_lossy(&output.stderr).trim()
        );
    }
    String::from_utf8(output.stdout).context("podman output")
}

fn copy(from: &Path, to: &Path) -> Result<()> {
    std::fs::create_dir_all(to.parent().expect("a file in a directory"))?;
    std::fs::copy(from, to)
        .with_context(|| format!("copy {} to {}", from.display(), to.display()))?;
    Ok(())
}

fn write(file: &Path, text: &str) -> Result<()> {
    std::fs::create_dir_all(file.parent().expect("a file in a directory"))?;
    std::fs::write(file, text).with_context(|| format!("write {}", file.display()))
}

fn set_mode(path: &Path, mode: u32) -> Result<()> {
    use std::os::unix::fs::PermissionsExt as _;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))
        .with_context(|| format!("chmod {}", path.display()))
}

fn path(p: &Path) -> Result<&str> {
    p.to_str()
        .with_context(|| format!("{} is not UTF-8", p.display()))
}
