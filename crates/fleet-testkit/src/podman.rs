//! Podman for the container tests: the `podman` command with the flags every call needs,
//! one Docker-compatible API service per test process ([`docker_host`]), images of the
//! sample server built from this build's binary ([`sample_image`]), and removing what a
//! test created ([`LabelledContainers`]).
//!
//! Podman itself comes from `cargo xtask peers` (as root, Debian packages). When it is
//! missing these helpers panic saying so: container tests fail, never skip. Nothing here
//! writes system-wide configuration; the flags are passed on every command instead.

use parking_lot::Mutex;
use sha2::{Digest as _, Sha256};
use std::collections::BTreeMap;
use std::io::{Read as _, Write as _};
use std::os::unix::fs::PermissionsExt as _;
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::OnceLock;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use crate::{TempDir, sample_server_binary, scratch_dir, wait_until_blocking};

/// The global flags on every podman command: runc rather than the default OCI runtime,
/// and cgroupfs because the test machines run no systemd to manage cgroups through.
pub const GLOBAL_FLAGS: &[&str] = &["--runtime", "runc", "--cgroup-manager", "cgroupfs"];

/// The repository [`sample_image`] tags its images in.
pub const SAMPLE_IMAGE: &str = "localhost/mcpfleet-sample";

/// The label on a sample image saying which binary it holds (see [`sample_image`]).
const FINGERPRINT_LABEL: &str = "mcpfleet.sample-binary";

/// Bump when the image's recipe changes, so images built by the old one are rebuilt.
const RECIPE: &str = "v1";

/// How long the API service stays up with no request; it exits then, so a test process
/// that ends (or dies) never leaves one running for long.
const SERVICE_IDLE: Duration = Duration::from_secs(30);

/// How long the service may take to answer its first ping.
const SERVICE_START: Duration = Duration::from_secs(30);

/// `podman` with [`GLOBAL_FLAGS`], ready for a subcommand.
pub fn podman() -> Command {
    let mut command = Command::new("podman");
    command.args(GLOBAL_FLAGS);
    command
}

/// The Docker-compatible API service of this test process: `podman system service` on a
/// socket in a scratch directory of its own.
#[derive(Debug)]
pub struct Service {
    socket: PathBuf,
    /// The running service; replaced when it has exited after [`SERVICE_IDLE`].
    process: Mutex<Child>,
}

impl Service {
    /// The `DOCKER_HOST` value for the service, `unix:///…/podman.sock`.
    ///
    /// The service exits after 30 s without a request; this pings it (which keeps it up
    /// for 30 s more) and starts it again if it had gone. So ask for it when a client is
    /// about to connect, not once at the start of a long test.
    ///
    /// # Panics
    /// When the service cannot be started again (see [`service`]).
    pub fn docker_host(&self) -> String {
        let mut process = self.process.lock();
        if ping(&self.socket).is_err() {
            // It exited when idle (or died): reap it and start another on the same socket.
            let _ = process.kill();
            let _ = process.wait();
            *process = start_service(&self.socket);
        }
        format!("unix://{}", self.socket.display())
    }

    /// The socket the service listens on.
    pub fn socket(&self) -> &Path {
        &self.socket
    }
}

/// The API service of this test process, started on first use and once it answers
/// `GET /_ping`. Its directory is a [`scratch_dir`] named `podman-service`; the service
/// writes its log there (`service.log`).
///
/// # Panics
/// When podman is not installed (run `cargo xtask peers`), or the service does not answer
/// within 30 s (the message shows its log).
pub fn service() -> &'static Service {
    static SERVICE: OnceLock<Service> = OnceLock::new();
    SERVICE.get_or_init(|| {
        let socket = scratch_dir("podman-service").join("podman.sock");
        let process = Mutex::new(start_service(&socket));
        Service { socket, process }
    })
}

/// [`service`]'s `DOCKER_HOST` value (see [`Service::docker_host`]).
///
/// # Panics
/// As [`service`].
pub fn docker_host() -> String {
    service().docker_host()
}

fn start_service(socket: &Path) -> Child {
    let dir = socket.parent().expect("the socket sits in a directory");
    let log_path = dir.join("service.log");
    let log = std::fs::File::create(&log_path).expect("create the service log");
    let _ = std::fs::remove_file(socket);
    let process = spawn(
        podman()
            .args(["system", "service", "--time"])
            .arg(SERVICE_IDLE.as_secs().to_string())
            .arg(format!("unix://{}", socket.display()))
            // conmon writes an `oom` marker into its working directory when a container
            // is OOM-killed: into the scratch directory, not the crate under test.
            .current_dir(dir)
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("share the service log"))
            .stderr(log),
    );
    let log_path = log_path.display().to_string();
    wait_until_blocking(
        &format!("the podman API service answers on its socket (log: {log_path})"),
        SERVICE_START,
        || ping(socket),
    );
    process
}

/// `GET /_ping` on the API socket; `Ok` when it answers `OK`.
fn ping(socket: &Path) -> Result<(), String> {
    let mut stream = UnixStream::connect(socket).map_err(|error| format!("connect: {error}"))?;
    stream
        .set_read_timeout(Some(Duration::from_secs(5)))
        .map_err(|error| error.to_string())?;
    stream
        .write_all(b"GET /_ping HTTP/1.0\r\nHost: podman\r\n\r\n")
        .map_err(|error| format!("send: {error}"))?;
    let mut response = String::new();
    stream
        .read_to_string(&mut response)
        .map_err(|error| format!("read: {error}"))?;
    if response.starts_with("HTTP/1.0 200") && response.ends_with("\r\n\r\nOK") {
        Ok(())
    } else {
        Err(format!("unexpected answer: {response:?}"))
    }
}

/// `localhost/mcpfleet-sample:<tag>`: an image holding this build's `mcp-sample-server`
/// (stripped) as its entrypoint `/bin/mcp-sample-server`, the libraries it links, an empty
/// `/tmp` and `/etc/mcpfleet-sample-tag` holding `tag` — so two tags are two different
/// images (ids), and a canary between them really runs other bytes. Returns the reference.
///
/// Built once per process and tag, and not at all when the image already exists with the
/// label `mcpfleet.sample-binary` saying it holds this very binary. Test processes
/// building the same tag at once are safe: each imports under a name of its own, then
/// moves the tag onto its image.
///
/// # Panics
/// When `tag` is not a valid image tag, podman is missing (run `cargo xtask peers`), or a
/// step of the build fails (the message says which).
pub fn sample_image(tag: &str) -> String {
    static BUILT: Mutex<BTreeMap<String, String>> = Mutex::new(BTreeMap::new());
    assert!(
        is_valid_tag(tag),
        "{tag:?} is not an image tag: 1 to 128 of A-Z a-z 0-9 _ . -, not starting with . or -"
    );
    // Held while building, so two threads of one process never build the same tag twice.
    let mut built = BUILT.lock();
    if let Some(reference) = built.get(tag) {
        return reference.clone();
    }
    let reference = format!("{SAMPLE_IMAGE}:{tag}");
    let binary = sample_server_binary();
    let fingerprint = fingerprint(&binary);
    if image_label(&reference, FINGERPRINT_LABEL).as_deref() != Some(fingerprint.as_str()) {
        build_sample_image(&binary, tag, &fingerprint, &reference);
    }
    built.insert(tag.to_owned(), reference.clone());
    reference
}

fn is_valid_tag(tag: &str) -> bool {
    (1..=128).contains(&tag.len())
        && !tag.starts_with(['.', '-'])
        && tag
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-'))
}

/// What the image built from `binary` is: the recipe and the binary's SHA-256.
fn fingerprint(binary: &Path) -> String {
    static FINGERPRINTS: Mutex<BTreeMap<PathBuf, String>> = Mutex::new(BTreeMap::new());
    FINGERPRINTS
        .lock()
        .entry(binary.to_owned())
        .or_insert_with(|| {
            let bytes = std::fs::read(binary)
                .unwrap_or_else(|error| panic!("read {}: {error}", binary.display()));
            let digest = Sha256::digest(&bytes);
            let hex: String = digest.iter().map(|byte| format!("{byte:02x}")).collect();
            format!("{RECIPE}-{hex}")
        })
        .clone()
}

/// The value of `label` on the local image `reference`; `None` when there is no such
/// image or label.
fn image_label(reference: &str, label: &str) -> Option<String> {
    let output = output(podman().args([
        "image",
        "inspect",
        "--format",
        &format!("{{{{ index .Labels \"{label}\" }}}}"),
        reference,
    ]));
    output
        .status
        .success()
        .then(|| String::from_utf8_lossy(&output.stdout).trim().to_owned())
}

fn build_sample_image(binary: &Path, tag: &str, fingerprint: &str, reference: &str) {
    let rootfs = TempDir::new("sample-image");
    let root = rootfs.path();
    let in_image = root.join("bin/mcp-sample-server");
    create_parent(&in_image);
    succeed(
        "strip the sample server",
        Command::new("strip").arg("-o").arg(&in_image).arg(binary),
    );
    for library in linked_libraries(binary) {
        let copy = root.join(library.strip_prefix("/").expect("ldd lists absolute paths"));
        create_parent(&copy);
        std::fs::copy(&library, &copy)
            .unwrap_or_else(|error| panic!("copy {}: {error}", library.display()));
    }
    let tag_file = root.join("etc/mcpfleet-sample-tag");
    create_parent(&tag_file);
    std::fs::write(&tag_file, format!("{tag}\n")).expect("write /etc/mcpfleet-sample-tag");
    // `--read-only` mounts a tmpfs on /tmp, which needs the directory; without it, /tmp is
    // writable by any user (mode 1777) as on any system.
    let tmp = root.join("tmp");
    std::fs::create_dir(&tmp).expect("create /tmp");
    std::fs::set_permissions(&tmp, std::fs::Permissions::from_mode(0o1777))
        .expect("make /tmp world-writable");

    // Import under a name no other process uses, then move the tag: concurrent builds of
    // the same tag each finish with a whole image under it.
    let unique = format!("{SAMPLE_IMAGE}:building-{}", unique_in_process());
    let mut tar = spawn(
        Command::new("tar")
            .args(["--numeric-owner", "-C"])
            .arg(root)
            .args(["-c", "."])
            .stdout(Stdio::piped()),
    );
    let archive = tar.stdout.take().expect("piped tar output");
    succeed(
        "import the sample image",
        podman()
            .args([
                "import",
                "--quiet",
                "--change",
                r#"ENTRYPOINT ["/bin/mcp-sample-server"]"#,
                "--change",
                &format!("LABEL {FINGERPRINT_LABEL}={fingerprint}"),
                "-",
                &unique,
            ])
            .stdin(archive),
    );
    let tar_status = tar.wait().expect("wait for tar");
    assert!(
        tar_status.success(),
        "tar of the sample rootfs failed ({tar_status})"
    );
    succeed(
        "tag the sample image",
        podman().args(["tag", &unique, reference]),
    );
    // Only the name goes while the image keeps another (the tag); an image another process
    // has since re-tagged away from is deleted, unless a container uses it — then it stays,
    // nameless, which is harmless.
    let _ = output(podman().args(["rmi", &unique]));
}

/// `<pid>-<sequence>`: unique among the live test processes, and within this one.
fn unique_in_process() -> String {
    static SEQUENCE: AtomicU32 = AtomicU32::new(0);
    let sequence = SEQUENCE.fetch_add(1, Ordering::Relaxed);
    format!("{}-{sequence}", std::process::id())
}

/// The shared libraries `binary` loads, from `ldd`: `name => /path (addr)` and the dynamic
/// loader's `/path (addr)`; the kernel's vDSO has no file.
fn linked_libraries(binary: &Path) -> Vec<PathBuf> {
    let listed = succeed(
        "list the sample server's libraries",
        Command::new("ldd").arg(binary),
    );
    String::from_utf8_lossy(&listed.stdout)
        .lines()
        .filter_map(|line| {
            let path = line.split("=>").last()?.split_whitespace().next()?;
            path.starts_with('/').then(|| PathBuf::from(path))
        })
        .collect()
}

fn create_parent(path: &Path) {
    let parent = path.parent().expect("a path inside the rootfs");
    std::fs::create_dir_all(parent)
        .unwrap_or_else(|error| panic!("create {}: {error}", parent.display()));
}

/// Removes every container (running or not) labelled `label` (`key` or `key=value`).
///
/// # Panics
/// When podman is missing or fails — unless the thread is already panicking (a guard's
/// drop during a failed test), then it only says so on stderr.
pub fn remove_by_label(label: &str) {
    let removed = output(podman().args([
        "rm",
        "--force",
        "--time",
        "0",
        "--filter",
        &format!("label={label}"),
    ]));
    if !removed.status.success() {
        let message = format!(
            "podman could not remove the containers labelled {label} ({}): {}",
            removed.status,
            String::from_utf8_lossy(&removed.stderr).trim()
        );
        if std::thread::panicking() {
            eprintln!("{message}");
        } else {
            panic!("{message}");
        }
    }
}

/// The containers labelled with one label, removed when this is dropped — also when the
/// test fails, so no test leaves a container behind.
#[derive(Debug)]
pub struct LabelledContainers {
    label: String,
}

impl LabelledContainers {
    /// Guards the containers labelled `label` (`key` or `key=value`): the ones a test (or
    /// the code it tests) creates with that label.
    pub fn new(label: impl Into<String>) -> Self {
        Self {
            label: label.into(),
        }
    }

    /// A label no other guard uses, `mcpfleet.test=<name>-<pid>-<sequence>`, for a test
    /// that labels its containers itself (`podman run --label …`).
    pub fn unique(name: &str) -> Self {
        Self::new(format!("mcpfleet.test={name}-{}", unique_in_process()))
    }

    /// The guarded label, as `podman --label` and `--filter label=` take it.
    pub fn label(&self) -> &str {
        &self.label
    }

    /// The ids of the containers that carry the label now, running or not.
    ///
    /// # Panics
    /// When podman is missing or fails.
    pub fn ids(&self) -> Vec<String> {
        let listed = succeed(
            "list the labelled containers",
            podman().args([
                "ps",
                "--all",
                "--quiet",
                "--no-trunc",
                "--filter",
                &format!("label={}", self.label),
            ]),
        );
        String::from_utf8_lossy(&listed.stdout)
            .split_whitespace()
            .map(str::to_owned)
            .collect()
    }
}

impl Drop for LabelledContainers {
    fn drop(&mut self) {
        remove_by_label(&self.label);
    }
}

/// Starts `command`, panicking with what to do when podman is not installed.
fn spawn(command: &mut Command) -> Child {
    command
        .spawn()
        .unwrap_or_else(|error| not_started(command, &error))
}

/// Runs `command` to its end, capturing its output.
fn output(command: &mut Command) -> Output {
    command
        .stdin(Stdio::null())
        .output()
        .unwrap_or_else(|error| not_started(command, &error))
}

/// Like [`output`], panicking with `what` and the command's stderr unless it succeeds.
fn succeed(what: &str, command: &mut Command) -> Output {
    let result = command
        .output()
        .unwrap_or_else(|error| not_started(command, &error));
    assert!(
        result.status.success(),
        "{what}: {command:?} failed ({}): {}",
        result.status,
        String::from_utf8_lossy(&result.stderr).trim()
    );
    result
}

fn not_started(command: &Command, error: &std::io::Error) -> ! {
    let program = command.get_program().to_string_lossy();
    if error.kind() == std::io::ErrorKind::NotFound {
        panic!(
            "{program} is not installed: the container tests need it (Podman, binutils); run \
             `cargo xtask peers` (as root) to install them"
        );
    }
    panic!("cannot start {program}: {error}");
}
