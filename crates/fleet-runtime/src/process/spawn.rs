//! Turning an [`InstanceSpec`] into a running child process: environment, program lookup,
//! working directory, pipes, pidfile.

use super::logs::{LogWriter, spawn_line_copier};
use super::pidfile::Pidfile;
use super::procfs;
use crate::error::StartError;
use crate::instance::{
    InstanceHandle, InstanceIo, InstanceSpec, Launch, Lifecycle, Reach, StdioAttachment,
};
use nix::sys::signal::Signal;
use std::ffi::OsStr;
use std::io;
use std::net::{Ipv4Addr, SocketAddr};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::SystemTime;
use tokio::process::{Child, Command};
use tokio::task::JoinHandle;
use tokio::time::Instant;

/// The variables an instance inherits from the control plane; everything else it gets comes
/// from its spec's `env`.
///
/// Deliberately small: the control plane's environment often holds credentials (cloud keys,
/// tokens) that no MCP server should see unless the fleet file passes them on explicitly.
/// These five are what ordinary programs need to run at all: `PATH` to find helpers (`npx`
/// spawning `node`), `HOME` for caches and config (npm, uv, pip), `LANG` for text encoding,
/// `TMPDIR` for temporary files, `USER` for tools that ask who they run as. `PATH` defaults
/// to `/usr/local/bin:/usr/bin:/bin` when the control plane has none; a bare program name
/// is looked up on the instance's `PATH` (absolute entries only).
pub const INHERITED_ENV: &[&str] = &["PATH", "HOME", "LANG", "TMPDIR", "USER"];

/// `PATH` when the control plane has none.
const DEFAULT_PATH: &str = "/usr/local/bin:/usr/bin:/bin";

/// The instance's whole environment: the inherited variables (with a default `PATH` if the
/// control plane has none), then the spec's (later wins).
pub(crate) fn environment(spec_env: &[(String, String)]) -> Vec<(String, String)> {
    let mut env: Vec<(String, String)> = INHERITED_ENV
        .iter()
        .filter_map(|&name| {
            let value = std::env::var(name).ok();
            let value = match name {
                "PATH" => Some(value.unwrap_or_else(|| DEFAULT_PATH.to_owned())),
                _ => value,
            };
            Some((name.to_owned(), value?))
        })
        .collect();
    for (name, value) in spec_env {
        env.retain(|(n, _)| n != name);
        env.push((name.clone(), value.clone()));
    }
    env
}

fn is_executable_file(path: &Path) -> bool {
    std::fs::metadata(path).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
}

/// Finds the program to execute, as an absolute path, so that neither the kernel nor the
/// standard library has to guess what a relative path or a bare name means.
///
/// A program containing `/` is a path, relative to the instance's working directory; a bare
/// name is looked up on the instance's own `PATH` (not the control plane's).
pub(crate) fn resolve_program(
    program: &str,
    cwd: Option<&Path>,
    path_var: Option<&str>,
) -> Result<PathBuf, StartError> {
    if program.contains('/') {
        let path = match cwd {
            Some(cwd) => cwd.join(program),
            None => PathBuf::from(program),
        };
        let path = std::path::absolute(&path).unwrap_or(path);
        return match std::fs::metadata(&path) {
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                Err(StartError::ProgramMissing { path })
            }
            Err(source) => Err(StartError::Spawn {
                program: program.to_owned(),
                source,
            }),
            Ok(_) if !is_executable_file(&path) => Err(StartError::ProgramNotExecutable { path }),
            Ok(_) => Ok(path),
        };
    }
    let path_var = path_var.unwrap_or(DEFAULT_PATH);
    std::env::split_paths(OsStr::new(path_var))
        .filter(|dir| dir.is_absolute())
        .map(|dir| dir.join(program))
        .find(|candidate| is_executable_file(candidate))
        .ok_or_else(|| StartError::ProgramNotFound {
            program: program.to_owned(),
            path: path_var.to_owned(),
        })
}

fn check_cwd(cwd: Option<&Path>) -> Result<Option<PathBuf>, StartError> {
    let Some(cwd) = cwd else { return Ok(None) };
    let dir = std::path::absolute(cwd).unwrap_or_else(|_| cwd.to_owned());
    if dir.is_dir() {
        Ok(Some(dir))
    } else {
        Err(StartError::CwdMissing { dir })
    }
}

/// A process just started, with everything attached to it.
#[derive(Debug)]
pub(crate) struct Spawned {
    pub(crate) child: Child,
    pub(crate) pid: u32,
    pub(crate) started: Instant,
    pub(crate) started_at: SystemTime,
    /// Where the process is reached; handed over (once) by [`running`](Self::running).
    reach: Option<Reach>,
    /// Tasks copying stdout/stderr to the log; they end at EOF.
    pub(crate) copiers: Vec<JoinHandle<()>>,
    pub(crate) pidfile: PathBuf,
}

impl Spawned {
    /// The `Running` event announcing this process, carrying its stdio attachment, which
    /// only the first call has.
    pub(crate) fn running(&mut self) -> Lifecycle {
        Lifecycle::Running {
            reach: self.reach.take().unwrap_or(Reach::Nowhere),
            handle: InstanceHandle::Process { pid: self.pid },
        }
    }
}

/// What [`spawn`] needs besides the spec.
#[derive(Debug)]
pub(crate) struct SpawnContext<'a> {
    pub(crate) state_dir: &'a Path,
    pub(crate) log: &'a LogWriter,
    pub(crate) max_line: usize,
}

/// Starts one process of the instance in its own process group and writes its pidfile.
pub(crate) async fn spawn(
    spec: &InstanceSpec,
    cx: SpawnContext<'_>,
) -> Result<Spawned, StartError> {
    let env = environment(&spec.env);
    let path_var = env
        .iter()
        .find(|(n, _)| n == "PATH")
        .map(|(_, v)| v.as_str());
    let Launch::Process { program, cwd } = &spec.launch else {
        return Err(StartError::WrongRuntime {
            id: spec.id.clone(),
            launch: spec.launch.kind(),
            runtime: "process",
        });
    };
    let cwd = check_cwd(cwd.as_deref())?;
    let program = resolve_program(program, cwd.as_deref(), path_var)?;

    let mut command = Command::new(&program);
    command
        .args(&spec.args)
        .env_clear()
        .envs(env)
        .process_group(0)
        // A safety net only: the supervisor always reaps. If its task is dropped (the tokio
        // runtime shutting down) the leader is killed, and the pidfile left behind lets
        // `reap_leftovers` finish the rest of the group.
        .kill_on_drop(true)
        .stderr(Stdio::piped());
    if let Some(cwd) = &cwd {
        command.current_dir(cwd);
    }
    match spec.io {
        InstanceIo::Stdio => command.stdin(Stdio::piped()).stdout(Stdio::piped()),
        InstanceIo::Listen { .. } | InstanceIo::Logged => {
            command.stdin(Stdio::null()).stdout(Stdio::piped())
        }
    };
    let mut child = command
        .spawn()
        .map_err(|source| spawn_error(&program, cwd.as_deref(), source))?;
    let started = Instant::now();
    let started_at = SystemTime::now();
    let Some(pid) = child.id() else {
        // Only after the child has been reaped, which nothing did yet.
        return Err(StartError::Spawn {
            program: program.display().to_string(),
            source: io::Error::other("the process vanished right after spawn"),
        });
    };

    let mut copiers = Vec::new();
    if let Some(stderr) = child.stderr.take() {
        copiers.push(spawn_line_copier(stderr, cx.log.clone(), cx.max_line));
    }
    let reach = match (spec.io, child.stdin.take(), child.stdout.take()) {
        (InstanceIo::Stdio, Some(stdin), Some(stdout)) => {
            Reach::Stdio(StdioAttachment::new(stdin, stdout))
        }
        (io, _, stdout) => {
            copiers.extend(stdout.map(|out| spawn_line_copier(out, cx.log.clone(), cx.max_line)));
            match io {
                // A local process shares the host's network: its port is the host's.
                InstanceIo::Listen { port } => {
                    Reach::Address(SocketAddr::from((Ipv4Addr::LOCALHOST, port)))
                }
                InstanceIo::Stdio | InstanceIo::Logged => Reach::Nowhere,
            }
        }
    };
    cx.log
        .line(
            format!(
                "--- started pid {pid} at {}",
                fleet_spec::template::rfc3339(started_at)
            )
            .into_bytes(),
        )
        .await;

    // The child is unreaped, so its /proc entry exists.
    let start_time_ticks = procfs::read_stat(pid).map_or(0, |s| s.start_time_ticks);
    let record = Pidfile {
        id: spec.id.clone(),
        server: spec.server.clone(),
        revision: spec.revision,
        pid,
        pgid: pid,
        start_time_ticks,
        program: program.display().to_string(),
        started_at: fleet_spec::template::rfc3339(started_at),
        stop_grace_ms: u64::try_from(spec.stop_grace.as_millis()).unwrap_or(u64::MAX),
    };
    let pidfile = match record.write(cx.state_dir).await {
        Ok(path) => path,
        Err(source) => {
            // Without a pidfile a crash of ours would leave an orphan nobody can find.
            procfs::signal_group(pid, Signal::SIGKILL);
            let _ = child.wait().await;
            return Err(StartError::StateDir {
                path: super::pidfile::pidfile_path(cx.state_dir, &spec.id),
                source,
            });
        }
    };

    Ok(Spawned {
        child,
        pid,
        started,
        started_at,
        reach: Some(reach),
        copiers,
        pidfile,
    })
}

fn spawn_error(program: &Path, cwd: Option<&Path>, source: io::Error) -> StartError {
    match source.kind() {
        // Checked just before; something changed in between.
        io::ErrorKind::NotFound => match cwd {
            Some(dir) if !dir.is_dir() => StartError::CwdMissing {
                dir: dir.to_owned(),
            },
            _ => StartError::ProgramMissing {
                path: program.to_owned(),
            },
        },
        io::ErrorKind::PermissionDenied => StartError::ProgramNotExecutable {
            path: program.to_owned(),
        },
        _ => StartError::Spawn {
            program: program.display().to_string(),
            source,
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spec_env_overrides_inherited() {
        let env = environment(&[
            ("PATH".into(), "/opt/bin".into()),
            ("EXTRA".into(), "1".into()),
        ]);
        assert_eq!(
            env.iter().filter(|(n, _)| n == "PATH").collect::<Vec<_>>(),
            [&("PATH".to_owned(), "/opt/bin".to_owned())]
        );
        assert!(env.contains(&("EXTRA".into(), "1".into())));
        assert!(
            env.iter()
                .all(|(n, _)| INHERITED_ENV.contains(&n.as_str()) || n == "EXTRA")
        );
    }

    #[test]
    fn resolves_bare_names_on_the_instance_path() {
        let found = resolve_program("sh", None, Some("/nonexistent:/bin:/usr/bin")).unwrap();
        assert!(found.is_absolute() && found.ends_with("sh"));
        let err = resolve_program("no-such-program-xyz", None, Some("/bin")).unwrap_err();
        assert!(matches!(err, StartError::ProgramNotFound { .. }));
        assert!(err.to_string().contains("no-such-program-xyz"), "{err}");
    }

    #[test]
    fn resolves_relative_paths_against_cwd() {
        let found = resolve_program("./sh", Some(Path::new("/bin")), None).unwrap();
        assert_eq!(found, Path::new("/bin/./sh"));
        let err = resolve_program("./sh", Some(Path::new("/nonexistent")), None).unwrap_err();
        assert!(matches!(err, StartError::ProgramMissing { .. }));
        let err = resolve_program("/tmp", None, None).unwrap_err();
        assert!(matches!(err, StartError::ProgramNotExecutable { .. }));
    }
}
