//! `mcpfleet render kubernetes` as users run it, and the retention its backup CronJob
//! relies on (`export-state --keep`): the real binary, real files.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

const SECRET_VALUE: &str = "ghp_render_secret_value_0123456789";

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// Runs mcpfleet with a fixed environment that holds the example's secrets.
fn mcpfleet(args: &[&str], cwd: &Path) -> Output {
    Command::new(env!("CARGO_BIN_EXE_mcpfleet"))
        .args(args)
        .current_dir(cwd)
        .env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .env("HOME", "/home/tester")
        .env("GITHUB_TOKEN", SECRET_VALUE)
        .env("DOCS_TOKEN", SECRET_VALUE)
        .output()
        .expect("run mcpfleet")
}

fn scratch_dir(test: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("mcpfleet-render-{test}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

#[test]
fn render_kubernetes_prints_the_example_as_one_yaml_stream_without_secret_values() {
    let out = mcpfleet(
        &["render", "kubernetes", "-f", "examples/kubernetes.yaml"],
        &repo(),
    );
    assert!(out.status.success(), "{}", stderr(&out));
    let text = String::from_utf8(out.stdout).unwrap();
    assert!(
        text.starts_with("---\napiVersion: v1\nkind: Namespace\n"),
        "{text}"
    );
    // search, github, scratchpad and the control plane; docs is remote.
    assert_eq!(text.matches("\nkind: Deployment\n").count(), 4, "{text}");
    assert!(
        !text.contains(SECRET_VALUE),
        "a secret's value is in the manifests"
    );
}

#[test]
fn render_kubernetes_out_writes_a_file_per_object_and_replaces_only_its_own() {
    let dir = scratch_dir("out");
    let manifests = dir.join("manifests");
    std::fs::create_dir_all(&manifests).unwrap();
    let first = mcpfleet(
        &[
            "render",
            "kubernetes",
            "-f",
            "examples/kubernetes.yaml",
            "--out",
        ],
        &repo(),
    );
    assert!(!first.status.success(), "--out needs a directory");
    let out_dir = manifests.to_str().unwrap();
    let render = || {
        mcpfleet(
            &[
                "render",
                "kubernetes",
                "-f",
                "examples/kubernetes.yaml",
                "--out",
                out_dir,
            ],
            &repo(),
        )
    };
    assert!(render().status.success());
    // An object the fleet no longer has, from an earlier render; and files of the user's.
    let stale = manifests.join("40-deployment-retired.yaml");
    std::fs::copy(manifests.join("00-namespace-mcp-tools.yaml"), &stale).unwrap();
    std::fs::write(manifests.join("kustomization.yaml"), "resources: []\n").unwrap();
    std::fs::write(manifests.join("README.md"), "ours\n").unwrap();
    let out = render();
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(String::from_utf8_lossy(&out.stdout).contains("manifests to"));
    let mut files: Vec<String> = std::fs::read_dir(&manifests)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    files.sort();
    assert!(
        !files.contains(&"40-deployment-retired.yaml".to_string()),
        "{files:?}"
    );
    assert!(
        files.contains(&"kustomization.yaml".to_string()),
        "{files:?}"
    );
    assert!(files.contains(&"README.md".to_string()), "{files:?}");
    assert_eq!(files[0], "00-namespace-mcp-tools.yaml");
    assert!(
        files.contains(&"03-serviceaccount-mcpfleet.yaml".to_string()),
        "{files:?}"
    );
    let rendered: Vec<&String> = files
        .iter()
        .filter(|f| f.starts_with(|c: char| c.is_ascii_digit()))
        .collect();
    let stream = mcpfleet(
        &["render", "kubernetes", "-f", "examples/kubernetes.yaml"],
        &repo(),
    );
    let documents = String::from_utf8(stream.stdout)
        .unwrap()
        .matches("---\n")
        .count();
    assert_eq!(rendered.len(), documents, "one file per object: {files:?}");
    for file in rendered {
        let text = std::fs::read_to_string(manifests.join(file)).unwrap();
        assert!(
            text.starts_with("# Written by `mcpfleet render kubernetes`"),
            "{file}"
        );
        assert!(!text.contains(SECRET_VALUE), "{file}");
    }
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn render_kubernetes_refuses_a_local_program_and_names_it_where_it_is() {
    let dir = scratch_dir("refuse");
    std::fs::write(
        dir.join("fleet.yaml"),
        "version: 1\nname: tools\nservers:\n  local:\n    stdio: { command: ./server.sh }\n  ok:\n    stdio: { image: registry.example/ok:1 }\n",
    )
    .unwrap();
    let out = mcpfleet(&["render", "kubernetes", "-f", "fleet.yaml"], &dir);
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    assert!(
        out.stdout.is_empty(),
        "nothing is rendered from a fleet that cannot run"
    );
    let stderr = stderr(&out);
    assert!(
        stderr.contains(
            "server `local` runs a local program (`command:`); a cluster runs images: give it `image:`"
        ),
        "{stderr}"
    );
    assert!(
        stderr.contains("fleet.yaml:4:3"),
        "located at the server: {stderr}"
    );
    let _ = std::fs::remove_dir_all(&dir);
}

/// The backup CronJob runs `export-state FILE --keep N` into a directory of exports.
#[test]
fn export_state_keep_leaves_the_newest_exports_and_touches_nothing_else() {
    let dir = scratch_dir("keep");
    let state = dir.join("state");
    let backups = dir.join("backups");
    std::fs::create_dir_all(&backups).unwrap();
    let empty = dir.join("empty.json");
    std::fs::write(
        &empty,
        r#"{"format":1,"fleet_revisions":[],"server_revisions":[],"deployments":[],"events":[],"audit":[]}"#,
    )
    .unwrap();
    let path = |p: &Path| p.to_str().unwrap().to_owned();
    let out = mcpfleet(
        &["import-state", &path(&empty), "--state-dir", &path(&state)],
        &dir,
    );
    assert!(out.status.success(), "{}", stderr(&out));
    // Three earlier exports, the oldest first, and files that are not exports.
    let now = std::time::SystemTime::now();
    for (hours_ago, name) in [(30, "a.json"), (20, "b.json"), (10, "c.json")] {
        let export = backups.join(name);
        std::fs::copy(&empty, &export).unwrap();
        let file = std::fs::File::options().write(true).open(&export).unwrap();
        file.set_modified(now - std::time::Duration::from_secs(hours_ago * 3600))
            .unwrap();
    }
    std::fs::write(backups.join("notes.json"), "{\"not\": \"an export\"}\n").unwrap();
    std::fs::write(backups.join("README.md"), "exports\n").unwrap();
    let export = |name: &str, keep: &str| {
        let file = path(&backups.join(name));
        mcpfleet(
            &[
                "export-state",
                &file,
                "--keep",
                keep,
                "--state-dir",
                &path(&state),
            ],
            &dir,
        )
    };
    assert!(
        !export("x.json", "0").status.success(),
        "--keep 0 keeps nothing"
    );
    let out = export("d.json", "2");
    assert!(out.status.success(), "{}", stderr(&out));
    let mut files: Vec<String> = std::fs::read_dir(&backups)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    files.sort();
    assert_eq!(files, ["README.md", "c.json", "d.json", "notes.json"]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        stdout.contains("removed the older export") && stdout.contains("a.json"),
        "{stdout}"
    );
    let _ = std::fs::remove_dir_all(&dir);
}
