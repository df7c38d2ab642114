//! Connecting to a cluster, and what a failed API request means for the user.

use std::path::PathBuf;

use fleet_spec::model::PodReach;
use k8s_openapi::api::core::v1::Namespace;
use kube::config::{KubeConfigOptions, Kubeconfig, KubeconfigError};

/// The field manager every mcpfleet write uses: server-side apply records the fields
/// mcpfleet owns under this name, so a later apply can drop what the fleet no longer sets
/// and a conflict with another tool names both sides.
pub const FIELD_MANAGER: &str = "mcpfleet";

/// Where the cluster's address and credentials come from.
#[derive(Debug, Clone)]
pub enum ClusterAccess {
    /// A kubeconfig file, as `kubectl` reads it.
    Kubeconfig {
        /// The file; `None` is `$KUBECONFIG` (a list of files, merged) or else
        /// `~/.kube/config`.
        path: Option<PathBuf>,
        /// The context to use; `None` is the kubeconfig's `current-context`.
        context: Option<String>,
    },
    /// The service account of the pod this process runs in
    /// (`KUBERNETES_SERVICE_HOST` and the mounted token).
    InCluster,
}

impl ClusterAccess {
    /// How http pods are reached when the fleet file does not say (`kubernetes.reach`): a
    /// control plane with the pod's service account runs in the cluster and reaches pod
    /// IPs; one with a kubeconfig is taken to run outside, where pod IPs are not routed,
    /// and forwards through the API server.
    pub fn default_reach(&self) -> PodReach {
        match self {
            ClusterAccess::InCluster => PodReach::PodIp,
            ClusterAccess::Kubeconfig { .. } => PodReach::PortForward,
        }
    }
}

/// Why [`Cluster::connect`] could not build a client. Nothing is sent to the cluster
/// while connecting: an unreachable API server shows up as [`ApiError::Unreachable`] on
/// the first request.
#[derive(Debug, thiserror::Error)]
pub enum ConnectError {
    /// There is no kubeconfig where one was looked for.
    #[error(
        "no kubeconfig at {}: point KUBECONFIG at one, or create it with your cluster's \
         tooling (e.g. `gcloud container clusters get-credentials`, `aws eks update-kubeconfig`, `kind export kubeconfig`)",
        path.display()
    )]
    NoKubeconfig {
        /// The file looked for.
        path: PathBuf,
    },
    /// Neither `$KUBECONFIG` nor a home directory says where a kubeconfig would be.
    #[error(
        "no kubeconfig: KUBECONFIG is not set and there is no home directory to find ~/.kube/config in; set KUBECONFIG"
    )]
    NoKubeconfigPath,
    /// The requested context is not in the kubeconfig.
    #[error(
        "kubeconfig has no context `{context}`; it has: {}",
        list_or_none(known)
    )]
    UnknownContext {
        /// The context asked for.
        context: String,
        /// The contexts the kubeconfig defines.
        known: Vec<String>,
    },
    /// No context was requested and the kubeconfig sets no `current-context`.
    #[error(
        "kubeconfig sets no current-context; name one (`kubernetes.context` in the fleet file, \
         or `kubectl config use-context NAME`); it has: {}",
        list_or_none(known)
    )]
    NoCurrentContext {
        /// The contexts the kubeconfig defines.
        known: Vec<String>,
    },
    /// The kubeconfig exists but cannot be used (bad YAML, a context naming a missing
    /// cluster, an unreadable certificate, …); the source says which.
    #[error("kubeconfig is not usable: {source}")]
    Kubeconfig {
        /// kube's reason.
        #[source]
        source: KubeconfigError,
    },
    /// In-cluster access was asked for outside a pod, or the pod has no service account
    /// token mounted.
    #[error(
        "not running in a cluster (or no service account token is mounted): {source}; \
         outside a cluster, use a kubeconfig"
    )]
    NotInCluster {
        /// kube's reason.
        #[source]
        source: kube::config::InClusterError,
    },
    /// The configuration is complete but no client could be built from it (usually TLS
    /// material the TLS stack rejects).
    #[error("cannot build a client for {url}: {source}")]
    Client {
        /// The API server's URL.
        url: String,
        /// kube's reason.
        #[source]
        source: kube::Error,
    },
}

fn list_or_none(names: &[String]) -> String {
    if names.is_empty() {
        "none".to_owned()
    } else {
        names.join(", ")
    }
}

/// `error` and its causes, joined by `: `, each said once: kube wraps hyper's error
/// (`client error (Connect)`), whose last cause (`Connection refused`) is what tells the
/// user what happened.
fn with_causes(error: &kube::Error) -> String {
    let mut text = error.to_string();
    let mut cause = std::error::Error::source(error);
    while let Some(inner) = cause {
        let said = inner.to_string();
        if !text.contains(&said) {
            text.push_str(": ");
            text.push_str(&said);
        }
        cause = inner.source();
    }
    text
}

/// A request to the API server that did not succeed, classified by what the user does
/// about it.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// No answer from the API server: connection refused, DNS, TLS handshake, timeout.
    #[error(
        "cannot reach the Kubernetes API at {url}: {}; check the cluster is up and \
         the kubeconfig context points at it (`kubectl cluster-info`)",
        with_causes(source)
    )]
    Unreachable {
        /// The API server's URL, as the kubeconfig gives it.
        url: String,
        /// The transport's reason.
        #[source]
        source: kube::Error,
    },
    /// The credentials could not be obtained (an exec plugin failed, a token file is
    /// missing).
    #[error("cannot authenticate to {url}: {source}")]
    Credentials {
        /// The API server's URL.
        url: String,
        /// kube's reason.
        #[source]
        source: kube::Error,
    },
    /// The API server answered with an error status.
    #[error("the API server answered {code} {reason}: {message}")]
    Status {
        /// The HTTP status code.
        code: u16,
        /// The machine-readable reason (`Forbidden`, `Invalid`, `NotFound`, …).
        reason: String,
        /// The API server's message.
        message: String,
    },
    /// The answer could not be read, or the request could not be built (a bug on our
    /// side or an API server that is not Kubernetes).
    #[error("unexpected answer from the API server at {url}: {source}")]
    Protocol {
        /// The API server's URL.
        url: String,
        /// kube's reason.
        #[source]
        source: kube::Error,
    },
}

/// A connection to one cluster's API server.
#[derive(Clone)]
pub struct Cluster {
    pub(crate) client: kube::Client,
    /// Kept for error messages: the URL a failed request was sent to.
    pub(crate) url: String,
    /// Kept for error messages: the kubeconfig context connected with.
    context: Option<String>,
}

impl std::fmt::Debug for Cluster {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Cluster")
            .field("url", &self.url)
            .field("context", &self.context)
            .finish_non_exhaustive()
    }
}

impl Cluster {
    /// A client for the cluster `access` names. Reads the kubeconfig (and runs no
    /// request: the first API call shows whether the server is reachable).
    ///
    /// # Errors
    /// [`ConnectError`]: no kubeconfig, an unknown or unset context (listing the ones
    /// there), an unusable kubeconfig, not in a cluster.
    pub async fn connect(access: &ClusterAccess) -> Result<Self, ConnectError> {
        let mut used_context = None;
        let config = match access {
            ClusterAccess::Kubeconfig { path, context } => {
                let kubeconfig = read_kubeconfig(path.as_deref())?;
                used_context = Some(check_context(&kubeconfig, context.as_deref())?);
                let options = KubeConfigOptions {
                    context: context.clone(),
                    ..Default::default()
                };
                kube::Config::from_custom_kubeconfig(kubeconfig, &options)
                    .await
                    .map_err(|source| ConnectError::Kubeconfig { source })?
            }
            ClusterAccess::InCluster => {
                kube::Config::incluster().map_err(|source| ConnectError::NotInCluster { source })?
            }
        };
        let url = config.cluster_url.to_string();
        let client = client(config).map_err(|source| ConnectError::Client {
            url: url.clone(),
            source,
        })?;
        Ok(Self {
            client,
            url,
            context: used_context,
        })
    }

    /// A cluster reached through a client built elsewhere (a test's mock service, a
    /// caller's own middleware); `url` is only used in error messages.
    pub fn from_client(client: kube::Client, url: impl Into<String>) -> Self {
        Self {
            client,
            url: url.into(),
            context: None,
        }
    }

    /// The API server's URL.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// The kubeconfig context connected with (the one asked for, else the kubeconfig's
    /// current one); `None` with a pod's service account or a client built elsewhere.
    pub fn context(&self) -> Option<&str> {
        self.context.as_deref()
    }

    /// Whether the API server says that `namespace` does not exist. Credentials that may
    /// not read Namespace objects — a Role in the namespace, as the rendered control
    /// plane's — cannot tell, and that is not "missing": their first request in the
    /// namespace will say more.
    ///
    /// # Errors
    /// [`ApiError`]: the API server unreachable, the credentials refused, …
    pub async fn namespace_missing(&self, namespace: &str) -> Result<bool, ApiError> {
        let namespaces: kube::Api<Namespace> = kube::Api::all(self.client.clone());
        match namespaces.get_opt(namespace).await {
            Ok(found) => Ok(found.is_none()),
            Err(kube::Error::Api(status)) if status.code == 403 => Ok(false),
            Err(error) => Err(self.api_error(error)),
        }
    }

    /// Classifies a failed request for the user.
    pub(crate) fn api_error(&self, error: kube::Error) -> ApiError {
        let url = self.url.clone();
        match error {
            kube::Error::Api(status) => ApiError::Status {
                code: status.code,
                reason: status.reason.clone(),
                message: status.message.clone(),
            },
            kube::Error::HyperError(_) | kube::Error::Service(_) | kube::Error::RustlsTls(_) => {
                ApiError::Unreachable { url, source: error }
            }
            kube::Error::Auth(_) => ApiError::Credentials { url, source: error },
            source => ApiError::Protocol { url, source },
        }
    }
}

/// A client for `config`: kube's own stack (`Client::try_from`) — the cluster URL, the
/// credentials, extra headers, its retry of overloaded answers, TLS from the kubeconfig,
/// its timeouts — over connections with `TCP_NODELAY`, which kube's connector leaves off
/// (hyper's default). Without it an attach or a port-forward, small WebSocket frames
/// written one after another, waits for the API server's delayed ACK (~40 ms on Linux)
/// whenever a frame follows one not yet acknowledged: the p99 of every call through it.
/// kube's per-request debug spans are left out.
fn client(config: kube::Config) -> Result<kube::Client, kube::Error> {
    use hyper_util::client::legacy::connect::HttpConnector;
    use kube::client::ConfigExt as _;
    // A proxy needs kube's connector for it (this build of kube has none: it refuses the
    // kubeconfig's `proxy-url` with the feature it would need).
    if config.proxy_url.is_some() {
        return kube::Client::try_from(config);
    }
    let mut http = HttpConnector::new();
    // The scheme is the TLS connector's to check: https, or http for a local API server.
    http.enforce_http(false);
    http.set_nodelay(true);
    let https = config.rustls_https_connector_with_connector(http)?;
    let mut connector = hyper_timeout::TimeoutConnector::new(https);
    connector.set_connect_timeout(config.connect_timeout);
    connector.set_read_timeout(config.read_timeout);
    connector.set_write_timeout(config.write_timeout);
    connector.set_reset_reader_on_write(config.reset_reader_on_write);
    let http: hyper_util::client::legacy::Client<_, kube::client::Body> =
        hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
            .build(connector);
    let retry = config
        .default_retry
        .then(|| tower::retry::RetryLayer::new(kube::client::retry::RetryPolicy::server_retry()));
    let service = tower::ServiceBuilder::new()
        .layer(config.base_uri_layer())
        .option_layer(retry)
        .option_layer(config.auth_layer()?)
        .layer(config.extra_headers_layer()?)
        .map_err(tower::BoxError::from)
        .service(http);
    Ok(kube::Client::new(service, config.default_namespace))
}

fn read_kubeconfig(path: Option<&std::path::Path>) -> Result<Kubeconfig, ConnectError> {
    let read = match path {
        Some(path) => Kubeconfig::read_from(path),
        None => Kubeconfig::read(),
    };
    read.map_err(|source| match source {
        KubeconfigError::ReadConfig(io, path) if io.kind() == std::io::ErrorKind::NotFound => {
            ConnectError::NoKubeconfig { path }
        }
        KubeconfigError::FindPath => ConnectError::NoKubeconfigPath,
        source => ConnectError::Kubeconfig { source },
    })
}

/// Checks the context up front: kube's own error names the missing context but not the
/// ones there, which is what the user needs to pick the right one. The context to use.
fn check_context(kubeconfig: &Kubeconfig, context: Option<&str>) -> Result<String, ConnectError> {
    let known: Vec<String> = kubeconfig.contexts.iter().map(|c| c.name.clone()).collect();
    match context.or(kubeconfig.current_context.as_deref()) {
        None => Err(ConnectError::NoCurrentContext { known }),
        Some(wanted) if !known.iter().any(|name| name == wanted) => {
            Err(ConnectError::UnknownContext {
                context: wanted.to_owned(),
                known,
            })
        }
        Some(wanted) => Ok(wanted.to_owned()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pods_are_reached_at_their_ip_from_inside_the_cluster_and_forwarded_to_from_outside() {
        assert_eq!(ClusterAccess::InCluster.default_reach(), PodReach::PodIp);
        let kubeconfig = ClusterAccess::Kubeconfig {
            path: None,
            context: None,
        };
        assert_eq!(kubeconfig.default_reach(), PodReach::PortForward);
    }
}
