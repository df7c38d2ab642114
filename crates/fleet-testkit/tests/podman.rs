//! The container tests' shared helpers work against the real Podman: the API service
//! answers on its socket, a sample image serves MCP over stdio in a locked-down container,
//! two tags are two images, and a label guard removes what a test left.

use fleet_testkit::podman::{self, LabelledContainers};
use serde_json::{Value, json};
use std::io::{BufRead as _, BufReader, Read as _, Write as _};
use std::os::unix::net::UnixStream;
use std::process::Stdio;
use std::sync::mpsc;
use std::time::Duration;

/// A container's first answer may wait on image setup on a busy 2-core machine.
const ANSWER: Duration = Duration::from_secs(60);

#[test]
fn the_api_service_answers_ping_on_the_socket_its_docker_host_names() {
    let docker_host = podman::docker_host();
    let socket = docker_host
        .strip_prefix("unix://")
        .expect("DOCKER_HOST is a unix socket URL");
    assert_eq!(std::path::Path::new(socket), podman::service().socket());

    let mut stream = UnixStream::connect(socket).expect("connect to the service");
    stream
        .write_all(b"GET /_ping HTTP/1.1\r\nHost: podman\r\nConnection: close\r\n\r\n")
        .unwrap();
    let mut answer = String::new();
    stream.read_to_string(&mut answer).unwrap();
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    assert!(answer.ends_with("\r\n\r\nOK"), "{answer}");
}

#[test]
fn a_sample_image_answers_initialize_over_stdio_in_a_locked_down_container() {
    let image = podman::sample_image("testkit-stdio");
    let containers = LabelledContainers::unique("stdio");
    let mut container = podman::podman()
        .args(["run", "--rm", "-i", "--label", containers.label()])
        .args(["--network", "none", "--read-only", "--cap-drop", "ALL"])
        .args([
            "--security-opt",
            "no-new-privileges",
            "--user",
            "65534:65534",
        ])
        .args([
            "--ulimit",
            "nofile=1024:1024",
            "--ulimit",
            "nproc=1000:1000",
        ])
        .args([&image, "--transport", "stdio"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("start podman run");

    let mut stdin = container.stdin.take().unwrap();
    let initialize = json!({"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": {
        "protocolVersion": "2025-11-25", "capabilities": {},
        "clientInfo": {"name": "podman-test", "version": "1"}}});
    writeln!(stdin, "{initialize}").unwrap();
    stdin.flush().unwrap();

    // Read on a thread, so a container that never answers fails the test at the deadline.
    let stdout = container.stdout.take().unwrap();
    let (sender, answers) = mpsc::channel();
    std::thread::spawn(move || {
        let mut line = String::new();
        let _ = BufReader::new(stdout).read_line(&mut line);
        let _ = sender.send(line);
    });
    let line = answers
        .recv_timeout(ANSWER)
        .expect("the container answers initialize");
    let answer: Value = serde_json::from_str(&line).expect("a JSON-RPC line");
    assert_eq!(answer["id"], 1, "{answer}");
    assert_eq!(
        answer["result"]["serverInfo"]["name"], "mcp-sample-server",
        "{answer}"
    );

    // End of input ends the server, and `--rm` its container.
    drop(stdin);
    let status = container.wait().unwrap();
    assert!(status.success(), "podman run ended with {status}");
    assert_eq!(containers.ids(), Vec::<String>::new());
}

#[test]
fn two_tags_of_the_sample_image_are_two_images() {
    let first = podman::sample_image("testkit-one");
    let second = podman::sample_image("testkit-two");
    assert_eq!(first, "localhost/mcpfleet-sample:testkit-one");
    assert_eq!(second, "localhost/mcpfleet-sample:testkit-two");
    assert_ne!(image_id(&first), image_id(&second));
    // Asked again, the process builds nothing: same reference, same image.
    let before = image_id(&first);
    assert_eq!(podman::sample_image("testkit-one"), first);
    assert_eq!(image_id(&first), before);
}

#[test]
fn a_label_guard_removes_its_containers_when_dropped_even_in_a_failed_test() {
    let image = podman::sample_image("testkit-guard");
    let containers = LabelledContainers::unique("guard");
    let label = containers.label().to_owned();
    let created = podman::podman()
        .args(["create", "--label", &label, &image])
        .output()
        .unwrap();
    assert!(created.status.success(), "{created:?}");
    assert_eq!(containers.ids().len(), 1);

    let failed = std::thread::spawn(move || {
        let _containers = containers;
        panic!("a test fails with its container still there");
    })
    .join();
    assert!(failed.is_err());
    assert_eq!(LabelledContainers::new(&label).ids(), Vec::<String>::new());
}

#[test]
#[should_panic(expected = "is not an image tag")]
fn a_sample_image_tag_podman_would_refuse_is_refused_up_front() {
    podman::sample_image("Not/A:tag");
}

fn image_id(reference: &str) -> String {
    let inspected = podman::podman()
        .args(["image", "inspect", "--format", "{{.Id}}", reference])
        .output()
        .unwrap();
    assert!(inspected.status.success(), "{inspected:?}");
    String::from_utf8(inspected.stdout)
        .unwrap()
        .trim()
        .to_owned()
}
