//! What a server's instance launches: its file's `command:` or `image:` (the image pinned
//! to a digest when the revision was deployed, see [`crate::pin`]), rendered with the
//! instance's values and turned into the runtime's [`Launch`] — or, on a fleet that runs on
//! Kubernetes, its revision's Deployment ([`pod_launch`]).

use crate::error::EngineError;
use fleet_runtime::{
    ContainerLaunch, ContainerNetwork, ContainerResources, ContainerSecret, ContainerVolume,
    Launch, PodLaunch, PullPolicy,
};
use fleet_spec::ValidFleet;
use fleet_spec::model::{self, Command, Executable, Text, VolumeSource};
use std::path::Path;

/// The launch of `command`, its texts rendered by `render`. A program's path and working
/// directory resolve against `base_dir` (the fleet file's); an image's working directory is
/// a path inside the container, taken as written.
///
/// # Errors
/// A template fails with the instance's values.
pub(crate) fn launch(
    command: &Command,
    base_dir: &Path,
    render: &dyn Fn(&Text) -> Result<String, EngineError>,
) -> Result<Launch, EngineError> {
    let cwd = command.cwd.as_ref().map(render).transpose()?;
    Ok(match &command.executable {
        Executable::Program { command } => Launch::Process {
            program: resolve_program(&render(command)?, base_dir),
            cwd: cwd.map(|c| base_dir.join(c)),
        },
        Executable::Image {
            image,
            digest,
            command,
            container,
        } => Launch::Container(ContainerLaunch {
            // The pinned image when there is one: what the revision recorded, wherever the
            // tag points now.
            image: match digest {
                Some(digest) => digest.clone(),
                None => render(image)?,
            },
            entrypoint: command.as_ref().map(render).transpose()?,
            workdir: cwd,
            user: container.user.clone(),
            network: match &container.network {
                model::ContainerNetwork::None => ContainerNetwork::None,
                model::ContainerNetwork::Bridge => ContainerNetwork::Bridge,
                model::ContainerNetwork::Named(name) => ContainerNetwork::Named(name.clone()),
            },
            resources: ContainerResources {
                cpus: container.resources.cpus,
                memory_bytes: container.resources.memory,
                pids: container.resources.pids,
            },
            volumes: container
                .volumes
                .iter()
                .map(|v| ContainerVolume {
                    source: match &v.source {
                        VolumeSource::Path(path) => path.display().to_string(),
                        VolumeSource::Named(name) => name.clone(),
                    },
                    target: v.target.clone(),
                    read_only: v.read_only,
                })
                .collect(),
            read_only_root: container.read_only,
            // Pinning pulled as the file says; a pinned image is fetched again only if it is
            // gone (`always` would fetch the tag, not the pinned bytes).
            pull: match (digest, pull_policy(container.pull)) {
                (Some(_), PullPolicy::Always) => PullPolicy::IfMissing,
                (_, pull) => pull,
            },
            // The values go to the runtime's files and nowhere else.
            secrets: container
                .secrets
                .iter()
                .map(|s| {
                    Ok(ContainerSecret {
                        target: s.target.clone(),
                        value: render(&s.value)?,
                    })
                })
                .collect::<Result<_, EngineError>>()?,
        }),
    })
}

/// The launch of `server`'s `revision` on Kubernetes: the revision's Deployment as
/// `render kubernetes` writes its pods, annotated with `deployment`. It carries no rendered
/// value — a pod's command, environment and secret files are its template's, resolved by
/// the kubelet — so the instance's spec has no arguments or environment of its own.
///
/// # Errors
/// The server cannot run in a cluster (a local program, a stdio server, …).
pub(crate) fn pod_launch(
    fleet: &ValidFleet,
    server: &str,
    revision: u64,
    deployment: Option<u64>,
) -> Result<Launch, EngineError> {
    let options = fleet_manifests::Options {
        // Only the control plane's ConfigMap holds the file; a server's Deployment does not.
        fleet_file: String::new(),
        deployment,
    };
    let deployment = fleet_manifests::revision_deployment(fleet, server, revision, &options)?;
    Ok(Launch::Pod(PodLaunch { deployment }))
}

/// The runtime's pull policy for the file's `pull`.
pub(crate) fn pull_policy(pull: model::Pull) -> PullPolicy {
    match pull {
        model::Pull::Never => PullPolicy::Never,
        model::Pull::IfMissing => PullPolicy::IfMissing,
        model::Pull::Always => PullPolicy::Always,
    }
}

/// A program path as the runtime needs it: `./x` and `dir/x` relative to the fleet file's
/// directory, bare names (looked up on `PATH`) and absolute paths unchanged.
pub(crate) fn resolve_program(program: &str, base_dir: &Path) -> String {
    if program.contains('/') && !Path::new(program).is_absolute() {
        base_dir.join(program).display().to_string()
    } else {
        program.to_string()
    }
}
