//! Finding and talking to the container engine: which sockets are tried, in what order,
//! and how the engine's errors read.

use crate::error::ConnectError;
use bollard::Docker;
use std::path::PathBuf;
use std::time::Duration;

/// How long an ordinary engine request (create, start, inspect, …) may take.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(120);

/// Waiting for a container to exit is one request that lasts as long as the container runs:
/// it must not time out.
const WAIT_TIMEOUT: Duration = Duration::from_secs(100 * 365 * 24 * 3600);

/// Where a Docker-compatible engine listens.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EngineEndpoint {
    /// A unix socket (`unix:///var/run/docker.sock`).
    Unix(PathBuf),
    /// A plain TCP address, `host:port` (`tcp://127.0.0.1:2375`).
    Tcp(String),
}

impl std::fmt::Display for EngineEndpoint {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            EngineEndpoint::Unix(path) => write!(f, "unix://{}", path.display()),
            EngineEndpoint::Tcp(address) => write!(f, "tcp://{address}"),
        }
    }
}

impl EngineEndpoint {
    /// Parses a `DOCKER_HOST` value: `unix:///path` or `tcp://host:port`.
    ///
    /// # Errors
    ///
    /// [`ConnectError::InvalidHost`] for any other scheme or an empty address.
    pub fn parse(host: &str) -> Result<Self, ConnectError> {
        let invalid = || ConnectError::InvalidHost {
            value: host.to_owned(),
        };
        if let Some(path) = host.strip_prefix("unix://") {
            if !path.starts_with('/') {
                return Err(invalid());
            }
            Ok(EngineEndpoint::Unix(PathBuf::from(path)))
        } else if let Some(address) = host.strip_prefix("tcp://") {
            let address = address.trim_end_matches('/');
            if address.is_empty() {
                return Err(invalid());
            }
            Ok(EngineEndpoint::Tcp(address.to_owned()))
        } else {
            Err(invalid())
        }
    }

    /// The endpoints to try, in order: `DOCKER_HOST` alone when it is set; otherwise
    /// Docker's socket, then Podman's (root, then the user's under `XDG_RUNTIME_DIR`).
    ///
    /// # Errors
    ///
    /// [`ConnectError::InvalidHost`] when `DOCKER_HOST` is set but not an address.
    pub fn candidates(
        docker_host: Option<&str>,
        xdg_runtime_dir: Option<&str>,
    ) -> Result<Vec<Self>, ConnectError> {
        if let Some(host) = docker_host.filter(|h| !h.is_empty()) {
            return Ok(vec![Self::parse(host)?]);
        }
        let mut candidates = vec![
            EngineEndpoint::Unix(PathBuf::from("/var/run/docker.sock")),
            EngineEndpoint::Unix(PathBuf::from("/run/podman/podman.sock")),
        ];
        if let Some(dir) = xdg_runtime_dir.filter(|d| d.starts_with('/')) {
            candidates.push(EngineEndpoint::Unix(
                PathBuf::from(dir).join("podman/podman.sock"),
            ));
        }
        Ok(candidates)
    }

    /// [`candidates`](Self::candidates) from this process's environment.
    ///
    /// # Errors
    ///
    /// As for [`candidates`](Self::candidates).
    pub fn from_env() -> Result<Vec<Self>, ConnectError> {
        let docker_host = std::env::var("DOCKER_HOST").ok();
        let xdg = std::env::var("XDG_RUNTIME_DIR").ok();
        Self::candidates(docker_host.as_deref(), xdg.as_deref())
    }

    /// A client for this endpoint (no request made yet).
    fn client(&self, timeout: Duration) -> Result<Docker, bollard::errors::Error> {
        let version = bollard::API_DEFAULT_VERSION;
        match self {
            EngineEndpoint::Unix(path) => {
                Docker::connect_with_unix(&path.to_string_lossy(), timeout.as_secs(), version)
            }
            EngineEndpoint::Tcp(address) => {
                Docker::connect_with_http(address, timeout.as_secs(), version)
            }
        }
    }
}

/// The engine this runtime talks to: one client for ordinary requests, one (same endpoint)
/// for the long `wait` requests.
#[derive(Debug, Clone)]
pub(crate) struct Engine {
    pub(crate) endpoint: EngineEndpoint,
    pub(crate) docker: Docker,
    pub(crate) waiter: Docker,
}

/// Tries `candidates` in order and returns the first engine that answers a ping.
pub(crate) async fn connect(candidates: Vec<EngineEndpoint>) -> Result<Engine, ConnectError> {
    let mut tried = Vec::new();
    for endpoint in candidates {
        let answered = match endpoint.client(REQUEST_TIMEOUT) {
            Ok(docker) => {
                match tokio::time::timeout(Duration::from_secs(10), docker.ping()).await {
                    Ok(Ok(_)) => Ok(docker),
                    Ok(Err(e)) => Err(describe(&e)),
                    Err(_) => Err("no answer within 10 s".to_owned()),
                }
            }
            Err(e) => Err(describe(&e)),
        };
        match answered {
            Ok(docker) => {
                let waiter = endpoint
                    .client(WAIT_TIMEOUT)
                    .unwrap_or_else(|_| docker.clone());
                return Ok(Engine {
                    endpoint,
                    docker,
                    waiter,
                });
            }
            Err(problem) => tried.push((endpoint.to_string(), problem)),
        }
    }
    Err(ConnectError::NoEngine { tried })
}

/// An engine error as a person reads it: the engine's own message when it sent one.
pub(crate) fn describe(error: &bollard::errors::Error) -> String {
    use bollard::errors::Error;
    match error {
        Error::DockerResponseServerError {
            status_code,
            message,
        } => format!("{message} (HTTP {status_code})"),
        Error::SocketNotFoundError(path) => format!("{path} does not exist"),
        other => other.to_string(),
    }
}

/// The engine answered 404: no such container or image.
pub(crate) fn is_not_found(error: &bollard::errors::Error) -> bool {
    matches!(
        error,
        bollard::errors::Error::DockerResponseServerError {
            status_code: 404,
            ..
        }
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn docker_host_alone_when_set_else_docker_then_podman_sockets() {
        assert_eq!(
            EngineEndpoint::candidates(Some("unix:///tmp/x.sock"), Some("/run/user/1")).unwrap(),
            [EngineEndpoint::Unix("/tmp/x.sock".into())]
        );
        assert_eq!(
            EngineEndpoint::candidates(Some("tcp://127.0.0.1:2375"), None).unwrap(),
            [EngineEndpoint::Tcp("127.0.0.1:2375".into())]
        );
        let defaults: Vec<String> = EngineEndpoint::candidates(None, Some("/run/user/1000"))
            .unwrap()
            .iter()
            .map(ToString::to_string)
            .collect();
        assert_eq!(
            defaults,
            [
                "unix:///var/run/docker.sock",
                "unix:///run/podman/podman.sock",
                "unix:///run/user/1000/podman/podman.sock"
            ]
        );
        let err = EngineEndpoint::candidates(Some("ssh://host"), None).unwrap_err();
        assert!(err.to_string().contains("ssh://host"), "{err}");
    }
}
