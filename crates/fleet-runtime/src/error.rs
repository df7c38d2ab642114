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

    /// The runtime could not write its logs or pidfiles.
    #[error("cannot write `{}` in the state directory: {source}; check its permissions and free space", path.display())]
    StateDir {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
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
}
