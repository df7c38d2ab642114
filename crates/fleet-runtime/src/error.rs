use crate::instance::InstanceId;
use std::io;
use std::path::PathBuf;

/// Why an instance could not be started. The messages are for people: they name the
/// program or directory and say what to do.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// The id cannot name the instance's files.
    #[error("instance id `{id}` {problem}")]
    InvalidId {
        id: InstanceId,
        problem: &'static str,
    },

    /// The spec asks for what another runtime runs (a container given to the process
    /// runtime, or the other way round).
    #[error("instance `{id}` runs {launch}, which the {runtime} runtime cannot start")]
    WrongRuntime {
        id: InstanceId,
        /// [`Launch::kind`](crate::Launch::kind).
        launch: &'static str,
        runtime: &'static str,
    },

    /// A container was to start and no container engine could be used.
    #[error(transparent)]
    Connect(#[from] ConnectError),

    /// [`adopt`](crate::Runtime::adopt) found nothing to take over; start it afresh.
    #[error("instance `{id}` cannot be adopted: {why}")]
    NotAdoptable { id: InstanceId, why: String },

    /// An instance with this id is already supervised.
    #[error("instance `{id}` is already running; stop it first or use another id")]
    AlreadyRunning { id: InstanceId },

    /// A bare program name was not found on the instance's `PATH`.
    #[error(
        "program `{program}` not found on PATH ({path}); install it, give its absolute path, \
         or set PATH in the server's env"
    )]
    ProgramNotFound { program: String, path: String },

    /// A program path (one containing `/`) does not exist.
    #[error("program `{}` does not exist; check the server's `command`", path.display())]
    ProgramMissing { path: PathBuf },

    /// The program exists but is not an executable file.
    #[error(
        "program `{}` is not executable (a directory, or no execute permission); \
         `chmod +x` it or point `command` at the real executable",
        path.display()
    )]
    ProgramNotExecutable { path: PathBuf },

    /// The working directory does not exist or is not a directory.
    #[error("working directory `{}` does not exist or is not a directory; create it or fix `cwd`", dir.display())]
    CwdMissing { dir: PathBuf },

    /// The operating system refused to start the process for another reason.
    #[error("could not start `{program}`: {source}")]
    Spawn {
        program: String,
        #[source]
        source: io::Error,
    },

    /// The container engine refused a request (create, start, attach, inspect, …).
    #[error("container engine could not {action} for instance `{id}`: {message}")]
    Engine {
        id: InstanceId,
        /// What was asked, e.g. "create container mcpfleet-demo-web-r1-1".
        action: String,
        /// The engine's own words.
        message: String,
    },

    /// The engine could not say what an image is.
    #[error("container engine could not inspect image {image}: {message}")]
    InspectImage {
        image: String,
        /// The engine's own words.
        message: String,
    },

    /// A container's secret files could not be written to the host's secrets directory.
    #[error(
        "cannot write the secret files of instance `{id}` under {}: {source}; \
         check that the directory exists and is writable",
        dir.display()
    )]
    SecretFiles {
        id: InstanceId,
        dir: PathBuf,
        #[source]
        source: io::Error,
    },

    /// The image is not on the engine and the pull policy forbids fetching it.
    #[error(
        "image {image} is not present and pull is `never`: build or pull it (`podman pull {image}`)"
    )]
    ImageMissing { image: String },

    /// Pulling the image failed (no registry reachable, no such image, no access).
    #[error(
        "cannot pull image {image}: {message}; check the name and the registry, or build it locally and set `pull: never`"
    )]
    Pull { image: String, message: String },

    /// A container with the instance's name exists and is not one of this fleet's.
    #[error(
        "container name `{name}` is already taken by a container mcpfleet did not start \
         (no `io.mcpfleet.fleet` label of this fleet); remove or rename it (`podman rm {name}`)"
    )]
    NameTaken { name: String },

    /// An http server in a container cannot be published without a network.
    #[error(
        "instance `{id}` listens on a port but its container has no network; \
         set `container.network` to `bridge` (or a named network)"
    )]
    NoNetworkToPublish { id: InstanceId },

    /// The container stopped before it could be reached (its port was never published).
    #[error("container of instance `{id}` exited right after it started{}", last_lines(.output))]
    ExitedAtStart {
        id: InstanceId,
        /// Its last lines of output, oldest first.
        output: Vec<String>,
    },

    /// The cluster refused or failed a request while starting (applying the revision's
    /// Deployment, claiming a pod).
    #[error("Kubernetes could not {action} for instance `{id}`: {message}")]
    Cluster {
        id: InstanceId,
        /// What was asked, e.g. "apply Deployment tools/search-r3".
        action: String,
        /// The API server's (or the client's) own words.
        message: String,
    },

    /// No pod of the instance's Deployment became ready in time.
    #[error(
        "no pod of Deployment {deployment} became ready for instance `{id}` within {waited:?}: {why}; \
         `kubectl -n {namespace} describe deployment {deployment}` and its pods' events say more"
    )]
    PodNotReady {
        id: InstanceId,
        namespace: String,
        deployment: String,
        waited: std::time::Duration,
        /// What the pods were doing (pending, waiting for an image, crashing, …).
        why: String,
    },

    /// The spec cannot run as a pod the way it is given (a stdio server, for now; values
    /// the pod template must carry instead; a Deployment that is not this instance's).
    #[error("instance `{id}` cannot run as a pod: {why}")]
    NotAPod { id: InstanceId, why: String },

    /// The runtime could not write its logs or pidfiles.
    #[error("cannot write `{}` in the state directory: {source}; check its permissions and free space", path.display())]
    StateDir {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
}

/// Formats a container's last output lines for an error message.
pub(crate) fn last_lines(lines: &[String]) -> String {
    if lines.is_empty() {
        "; it printed nothing".to_owned()
    } else {
        format!("; its last output:\n  {}", lines.join("\n  "))
    }
}

/// Why no container engine could be used.
#[derive(Debug, thiserror::Error)]
pub enum ConnectError {
    /// `DOCKER_HOST` (or an address given explicitly) is not one this runtime can use.
    #[error(
        "container engine address `{value}` is not usable: give `unix:///path/to/socket` or \
         `tcp://host:port` in DOCKER_HOST"
    )]
    InvalidHost { value: String },

    /// No engine answered on any of the sockets tried.
    #[error("{}", no_engine(.tried))]
    NoEngine {
        /// Each endpoint tried, with why it did not answer.
        tried: Vec<(String, String)>,
    },

    /// The fleet name cannot be part of a container name.
    #[error(
        "fleet name `{fleet}` cannot name containers: use letters, digits, `_`, `.` and `-`, \
         starting with a letter or digit"
    )]
    InvalidFleet { fleet: String },
}

fn no_engine(tried: &[(String, String)]) -> String {
    let mut message = String::from("no container engine reachable; tried:");
    for (endpoint, problem) in tried {
        message.push_str(&format!("\n  {endpoint}: {problem}"));
    }
    message.push_str(
        "\nstart one (`systemctl start docker`, or `podman system service --time 0 \
         unix:///run/podman/podman.sock &`), or set DOCKER_HOST to the engine's socket",
    );
    message
}

/// Why an operation on an existing instance failed.
#[derive(Debug, thiserror::Error)]
pub enum RuntimeError {
    /// The runtime knows no instance with this id (never started, or already stopped).
    #[error("no instance `{id}`")]
    NotFound { id: InstanceId },

    /// The instance is being stopped; it will not be restarted.
    #[error("instance `{id}` is stopping")]
    Stopping { id: InstanceId },

    /// The cluster refused or failed a request (scaling down, deleting a pod), or the pod
    /// did not go in time; the instance may still run.
    #[error("Kubernetes could not {action} for instance `{id}`: {message}")]
    Cluster {
        id: InstanceId,
        /// What was asked, e.g. "delete pod tools/search-r3-7d9f-x2x4q".
        action: String,
        /// The API server's (or the client's) own words.
        message: String,
    },
}
