//! Revisions pin their images: a tag resolves to the exact image when a revision is
//! deployed, and a rollback runs those bytes again though the tag has moved since. Live on
//! Podman, like the other container tests.

use super::{Fleet, text};
use fleet_testkit::podman::{self, LabelledContainers};
use fleet_testkit::wait_until_blocking;
use std::time::Duration;

/// A tag of this test's own, moved between the sample images; removed on drop (only the
/// tag: the images keep their other names).
struct MovingTag(String);

impl MovingTag {
    fn point_at(&self, image: &str) {
        run(&["tag", image, &self.0]);
    }
}

impl Drop for MovingTag {
    fn drop(&mut self) {
        let _ = podman::podman().args(["untag", &self.0, &self.0]).output();
    }
}

fn run(args: &[&str]) -> String {
    let out = podman::podman().args(args).output().unwrap();
    assert!(
        out.status.success(),
        "podman {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_owned()
}

fn image_id(reference: &str) -> String {
    run(&["image", "inspect", "--format", "{{.Id}}", reference])
}

/// The image ids of the fleet's running containers.
fn running_images(containers: &LabelledContainers) -> Vec<String> {
    let ids = run(&[
        "ps",
        "--filter",
        &format!("label={}", containers.label()),
        "--filter",
        "status=running",
        "--format",
        "{{.ID}}",
    ]);
    ids.lines()
        .map(|id| run(&["inspect", "--format", "{{.Image}}", id]))
        .collect()
}

fn fleet_file(name: &str, image: &str) -> String {
    format!(
        r#"
version: 1
name: {name}
servers:
  web:
    http:
      image: {image}
      args: ["--transport", "http", "--host", "0.0.0.0", "--port", "8080", "--name", "web"]
      port: 8080
    rollout: {{ strategy: rolling }}
"#
    )
}

/// Waits until the fleet runs containers, all of them of image `id`.
fn wait_for_image(containers: &LabelledContainers, id: &str, what: &str) {
    wait_until_blocking(what, Duration::from_secs(60), || {
        let running = running_images(containers);
        if !running.is_empty() && running.iter().all(|r| r == id) {
            Ok(())
        } else {
            Err(Box::new(running))
        }
    });
}

#[test]
fn a_rollback_runs_the_image_its_revision_pinned_though_the_tag_moved() {
    let name = format!("ctr-digest-{}", std::process::id());
    let containers = LabelledContainers::new(format!("io.mcpfleet.fleet={name}"));
    let (a, b) = (
        podman::sample_image("digest-a"),
        podman::sample_image("digest-b"),
    );
    let (a_id, b_id) = (image_id(&a), image_id(&b));
    assert_ne!(a_id, b_id);
    let tag = MovingTag(format!(
        "localhost/mcpfleet-digest-{}:v1",
        std::process::id()
    ));
    tag.point_at(&a);
    let fleet = Fleet::new("ctr-digest", &fleet_file(&name, &tag.0))
        .with_env("DOCKER_HOST", &podman::docker_host());

    let out = fleet.up();
    assert!(out.status.success(), "{}", text(&out));
    wait_for_image(&containers, &a_id, "revision 1 runs image A");
    let plan = fleet.mcpfleet(&["plan"]);
    assert!(plan.status.success(), "{}", text(&plan));
    let shown = String::from_utf8_lossy(&plan.stdout);
    assert!(
        shown.contains("0 to update, 0 to delete, 1 unchanged"),
        "{shown}"
    );

    // The file stays as it is; only the tag moves. Plan shows it, deploy runs it.
    tag.point_at(&b);
    let plan = fleet.mcpfleet(&["plan"]);
    assert!(plan.status.success(), "{}", text(&plan));
    let shown = String::from_utf8_lossy(&plan.stdout);
    assert!(shown.contains("1 to update"), "{shown}");
    assert!(
        shown.contains(&format!("(image {} now ", tag.0)),
        "the plan does not name the moved tag:\n{shown}"
    );

    let _ = podman::docker_host(); // the API service idles out; wake it for the deployment
    let deployed = fleet.mcpfleet(&["deploy"]);
    assert!(deployed.status.success(), "{}", text(&deployed));
    wait_for_image(&containers, &b_id, "revision 2 runs image B");

    let _ = podman::docker_host();
    let rolled = fleet.mcpfleet(&["rollback", "web", "--reason", "B misbehaves"]);
    assert!(rolled.status.success(), "{}", text(&rolled));
    wait_for_image(
        &containers,
        &a_id,
        "the rollback runs image A though the tag names B",
    );
    assert_eq!(image_id(&tag.0), b_id, "the tag still points at B");

    // What runs is the pinned A, and the file's tag names B: plan says so.
    let plan = fleet.mcpfleet(&["plan"]);
    let shown = String::from_utf8_lossy(&plan.stdout);
    assert!(
        shown.contains("1 to update") && shown.contains("now "),
        "{shown}"
    );

    let out = fleet.mcpfleet(&["down"]);
    assert!(out.status.success(), "{}", text(&out));
}
