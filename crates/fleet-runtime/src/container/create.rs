//! An [`InstanceSpec`] as the engine's create request: the container's name, its labels and
//! its hardened host configuration.

use super::Ulimit;
use crate::instance::{ContainerLaunch, ContainerNetwork, InstanceId, InstanceIo, InstanceSpec};
use bollard::models::{ContainerCreateBody, HostConfig, PortBinding, ResourcesUlimits};
use std::collections::HashMap;

/// The fleet a container belongs to: what `discover` and `reap_leftovers` select by.
pub(crate) const LABEL_FLEET: &str = "io.mcpfleet.fleet";
pub(crate) const LABEL_SERVER: &str = "io.mcpfleet.server";
pub(crate) const LABEL_REVISION: &str = "io.mcpfleet.revision";
pub(crate) const LABEL_INSTANCE: &str = "io.mcpfleet.instance";
/// The deployment that started the container (the state store's id), when one did.
pub(crate) const LABEL_DEPLOYMENT: &str = "io.mcpfleet.deployment";
/// How the instance is reached: `stdio`, `listen` or `logged`. A restarted control plane
/// adopts only what it can reach without the streams its predecessor held (not `stdio`).
pub(crate) const LABEL_IO: &str = "io.mcpfleet.io";

/// The user a container runs as when neither the spec nor the image names a non-root one.
const NOBODY: &str = "65534:65534";

/// `mcpfleet-<fleet>-<instance id>`: unique per fleet and instance, readable in `podman ps`.
pub(crate) fn container_name(fleet: &str, id: &InstanceId) -> String {
    format!("mcpfleet-{fleet}-{id}")
}

/// The [`LABEL_IO`] value of `io`.
pub(crate) fn io_label(io: InstanceIo) -> &'static str {
    match io {
        InstanceIo::Stdio => "stdio",
        InstanceIo::Listen { .. } => "listen",
        InstanceIo::Logged => "logged",
    }
}

/// The port key the engine uses for a TCP port: `8080/tcp`.
pub(crate) fn port_key(port: u16) -> String {
    format!("{port}/tcp")
}

/// The user to run as: the spec's; else the image's configured one unless that is root
/// (or unset, which means root), then nobody.
pub(crate) fn effective_user(launch: &ContainerLaunch, image_user: Option<&str>) -> String {
    if let Some(user) = &launch.user {
        return user.clone();
    }
    match image_user.map(str::trim) {
        Some(user) if !is_root(user) => user.to_owned(),
        _ => NOBODY.to_owned(),
    }
}

fn is_root(user: &str) -> bool {
    let name = user.split(':').next().unwrap_or_default();
    name.is_empty() || name == "root" || name == "0"
}

/// Everything [`create_body`] needs besides the spec.
#[derive(Debug)]
pub(crate) struct CreateContext<'a> {
    pub(crate) fleet: &'a str,
    /// From [`effective_user`].
    pub(crate) user: String,
    pub(crate) ulimits: &'a [Ulimit],
    /// Read-only binds of the secret files, `HOST:TARGET:ro`.
    pub(crate) secret_binds: Vec<String>,
}

/// The create request for `spec`, whose launch is `launch`.
///
/// Hardened whatever the spec says: no new privileges, every capability dropped, the
/// engine's default seccomp profile (never disabled), a tmpfs `/tmp`, the runtime's
/// ulimits, loopback-only published ports, no automatic removal (the supervisor removes
/// the container when the instance stops, and restarts start the same container again).
pub(crate) fn create_body(
    spec: &InstanceSpec,
    launch: &ContainerLaunch,
    cx: CreateContext<'_>,
) -> ContainerCreateBody {
    let stdio = spec.io == InstanceIo::Stdio;
    let mut labels = HashMap::from([
        (LABEL_FLEET.to_owned(), cx.fleet.to_owned()),
        (LABEL_SERVER.to_owned(), spec.server.clone()),
        (LABEL_REVISION.to_owned(), spec.revision.to_string()),
        (LABEL_INSTANCE.to_owned(), spec.id.to_string()),
        (LABEL_IO.to_owned(), io_label(spec.io).to_owned()),
    ]);
    if let Some(deployment) = spec.deployment {
        labels.insert(LABEL_DEPLOYMENT.to_owned(), deployment.to_string());
    }
    let (exposed_ports, port_bindings) = match spec.io {
        InstanceIo::Listen { port } => (
            Some(vec![port_key(port)]),
            Some(HashMap::from([(
                port_key(port),
                Some(vec![PortBinding {
                    host_ip: Some("127.0.0.1".to_owned()),
                    // Empty: the engine picks a free host port; `inspect` tells which.
                    host_port: Some(String::new()),
                }]),
            )])),
        ),
        InstanceIo::Stdio | InstanceIo::Logged => (None, None),
    };
    let network_mode = match &launch.network {
        ContainerNetwork::None => "none".to_owned(),
        ContainerNetwork::Bridge => "bridge".to_owned(),
        ContainerNetwork::Named(name) => name.clone(),
    };
    // A bind takes a host path or a volume name alike (the engine creates a missing volume).
    let binds: Vec<String> = launch
        .volumes
        .iter()
        .map(|v| {
            let mode = if v.read_only { "ro" } else { "rw" };
            format!("{}:{}:{mode}", v.source, v.target)
        })
        .chain(cx.secret_binds)
        .collect();
    let resources = launch.resources;
    let host_config = HostConfig {
        readonly_rootfs: Some(launch.read_only_root),
        tmpfs: Some(HashMap::from([(
            "/tmp".to_owned(),
            "rw,nosuid,nodev,mode=1777".to_owned(),
        )])),
        security_opt: Some(vec!["no-new-privileges".to_owned()]),
        cap_drop: Some(vec!["ALL".to_owned()]),
        ulimits: Some(
            cx.ulimits
                .iter()
                .map(|u| ResourcesUlimits {
                    name: Some(u.name.clone()),
                    soft: Some(u.soft),
                    hard: Some(u.hard),
                })
                .collect(),
        ),
        nano_cpus: resources
            .cpus
            .map(|cpus| (cpus * 1_000_000_000.0).round() as i64),
        memory: resources
            .memory_bytes
            .map(|bytes| i64::try_from(bytes).unwrap_or(i64::MAX)),
        pids_limit: resources.pids.map(i64::from),
        binds: (!binds.is_empty()).then_some(binds),
        network_mode: Some(network_mode),
        port_bindings,
        auto_remove: Some(false),
        ..Default::default()
    };
    ContainerCreateBody {
        image: Some(launch.image.clone()),
        entrypoint: launch.entrypoint.clone().map(|e| vec![e]),
        cmd: (!spec.args.is_empty()).then(|| spec.args.clone()),
        env: Some(spec.env.iter().map(|(k, v)| format!("{k}={v}")).collect()),
        working_dir: launch.workdir.clone(),
        user: Some(cx.user),
        labels: Some(labels),
        exposed_ports,
        open_stdin: Some(stdio),
        stdin_once: Some(false),
        attach_stdin: Some(stdio),
        attach_stdout: Some(true),
        attach_stderr: Some(true),
        tty: Some(false),
        stop_timeout: Some(i64::try_from(spec.stop_grace.as_secs().max(1)).unwrap_or(i64::MAX)),
        host_config: Some(host_config),
        ..Default::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::instance::{
        ContainerResources, ContainerSecret, ContainerVolume, Launch, PullPolicy,
    };
    use fleet_spec::model::{Restart, RestartPolicyKind};
    use std::time::Duration;

    fn launch() -> ContainerLaunch {
        ContainerLaunch {
            image: "localhost/files:1.2".into(),
            entrypoint: None,
            workdir: None,
            user: None,
            network: ContainerNetwork::Bridge,
            resources: ContainerResources {
                cpus: Some(0.5),
                memory_bytes: Some(256 * 1024 * 1024),
                pids: Some(128),
            },
            volumes: vec![ContainerVolume {
                source: "/srv/data".into(),
                target: "/data".into(),
                read_only: true,
            }],
            read_only_root: true,
            pull: PullPolicy::IfMissing,
            secrets: vec![ContainerSecret {
                target: "/run/secrets/token".into(),
                value: "s3cret-value".into(),
            }],
        }
    }

    fn spec(io: InstanceIo) -> InstanceSpec {
        InstanceSpec {
            id: InstanceId::from("files-r2-1"),
            server: "files".into(),
            revision: 2,
            launch: Launch::Container(launch()),
            args: vec!["--root".into(), "/data".into()],
            env: vec![("TOKEN".into(), "t".into())],
            io,
            restart: Restart {
                policy: RestartPolicyKind::Never,
                backoff_initial: Duration::from_millis(100),
                backoff_max: Duration::from_secs(1),
                backoff_multiplier: 2.0,
                jitter: 0.0,
                give_up_after: 1,
                stable_after: Duration::from_secs(1),
            },
            stop_grace: Duration::from_secs(5),
            deployment: Some(7),
        }
    }

    fn body(io: InstanceIo) -> ContainerCreateBody {
        let ulimits = [Ulimit {
            name: "nofile".into(),
            soft: 1024,
            hard: 1024,
        }];
        create_body(
            &spec(io),
            &launch(),
            CreateContext {
                fleet: "demo",
                user: "65534:65534".into(),
                ulimits: &ulimits,
                secret_binds: vec![
                    "/dev/shm/mcpfleet-demo/files-r2-1/0:/run/secrets/token:ro".into(),
                ],
            },
        )
    }

    #[test]
    fn every_container_is_hardened_and_labelled() {
        let body = body(InstanceIo::Logged);
        let host = body.host_config.unwrap();
        assert_eq!(host.readonly_rootfs, Some(true));
        assert_eq!(host.cap_drop.unwrap(), ["ALL"]);
        assert_eq!(host.security_opt.unwrap(), ["no-new-privileges"]);
        assert!(host.tmpfs.unwrap().contains_key("/tmp"));
        assert_eq!(host.auto_remove, Some(false));
        assert_eq!(host.nano_cpus, Some(500_000_000));
        assert_eq!(host.memory, Some(256 * 1024 * 1024));
        assert_eq!(host.pids_limit, Some(128));
        assert_eq!(
            host.binds.unwrap(),
            [
                "/srv/data:/data:ro",
                "/dev/shm/mcpfleet-demo/files-r2-1/0:/run/secrets/token:ro"
            ]
        );
        assert_eq!(host.ulimits.unwrap()[0].name.as_deref(), Some("nofile"));
        let labels = body.labels.unwrap();
        assert_eq!(labels[LABEL_FLEET], "demo");
        assert_eq!(labels[LABEL_SERVER], "files");
        assert_eq!(labels[LABEL_REVISION], "2");
        assert_eq!(labels[LABEL_INSTANCE], "files-r2-1");
        assert_eq!(labels[LABEL_IO], "logged");
        assert_eq!(labels[LABEL_DEPLOYMENT], "7");
        assert_eq!(body.cmd.unwrap(), ["--root", "/data"]);
        assert_eq!(body.entrypoint, None);
        assert_eq!(body.open_stdin, Some(false));
    }

    #[test]
    fn a_secret_value_is_nowhere_in_the_create_request() {
        let request = format!("{:?}", body(InstanceIo::Stdio));
        assert!(request.contains("/run/secrets/token"), "{request}");
        assert!(!request.contains("s3cret-value"), "{request}");
        let launch = format!("{:?}", launch());
        assert!(
            !launch.contains("s3cret-value"),
            "Debug shows the value: {launch}"
        );
    }

    #[test]
    fn a_listening_port_is_published_on_loopback_only_at_a_port_the_engine_picks() {
        let body = body(InstanceIo::Listen { port: 8080 });
        assert_eq!(body.exposed_ports.unwrap(), ["8080/tcp"]);
        let bindings = body.host_config.unwrap().port_bindings.unwrap();
        let binding = &bindings["8080/tcp"].as_ref().unwrap()[0];
        assert_eq!(binding.host_ip.as_deref(), Some("127.0.0.1"));
        assert_eq!(binding.host_port.as_deref(), Some(""));
    }

    #[test]
    fn stdio_keeps_stdin_open_without_a_tty() {
        let body = body(InstanceIo::Stdio);
        assert_eq!(body.open_stdin, Some(true));
        assert_eq!(body.stdin_once, Some(false));
        assert_eq!(body.attach_stdin, Some(true));
        assert_eq!(body.tty, Some(false));
        assert_eq!(body.exposed_ports, None);
    }

    #[test]
    fn root_or_unset_image_users_become_nobody() {
        let mut l = launch();
        assert_eq!(effective_user(&l, None), "65534:65534");
        assert_eq!(effective_user(&l, Some("")), "65534:65534");
        assert_eq!(effective_user(&l, Some("root")), "65534:65534");
        assert_eq!(effective_user(&l, Some("0:0")), "65534:65534");
        assert_eq!(effective_user(&l, Some("app")), "app");
        l.user = Some("0".into());
        assert_eq!(
            effective_user(&l, Some("app")),
            "0",
            "an explicit user is kept"
        );
    }
}
