//! Why a valid fleet cannot run on a cluster: each reason once, with the server and the
//! place in the fleet file, so the command line can show them like validation errors.

use fleet_spec::{Diagnostic, Span};

/// A fleet that cannot be rendered, with every reason (not just the first).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("the fleet cannot run on Kubernetes:{}", list(problems))]
pub struct RenderError {
    pub problems: Vec<Problem>,
}

fn list(problems: &[Problem]) -> String {
    problems.iter().map(|p| format!("\n  {p}")).collect()
}

impl RenderError {
    /// The problems as fleet-file diagnostics, located at the server they are about.
    pub fn diagnostics(&self) -> Vec<Diagnostic> {
        self.problems
            .iter()
            .map(|problem| {
                Diagnostic::error(problem.to_string(), problem.span()).with_help(problem.help())
            })
            .collect()
    }
}

/// One reason a fleet cannot be rendered (or, [`StdioInCluster`](Problem::StdioInCluster),
/// run by mcpfleet on a cluster).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Problem {
    /// The server runs a program on this machine; a cluster only runs images.
    #[error(
        "server `{server}` runs a local program (`command:`); a cluster runs images: give it `image:`"
    )]
    LocalProgram { server: String, span: Span },
    /// The server's name cannot name a Kubernetes object (a Service's name is an RFC 1035
    /// label, so `_` and a leading digit are out), or it is one the control plane's
    /// objects use.
    #[error("server `{server}`: its name cannot name Kubernetes objects")]
    ServerName { server: String, span: Span },
    /// The namespace (by default the fleet's name) is not an RFC 1123 label.
    #[error("namespace `{namespace}` is not a valid Kubernetes name")]
    Namespace { namespace: String },
    /// A secret the server mounts is read from a Secret whose name Kubernetes refuses (by
    /// default `<fleet>-secrets`, from a fleet name with `_`).
    #[error(
        "server `{server}`: secret `{secret}` is read from the Secret `{name}`, which is not a valid Kubernetes name"
    )]
    SecretName {
        server: String,
        span: Span,
        secret: String,
        name: String,
    },
    /// The server scales on a resource it requests none of: a HorizontalPodAutoscaler
    /// measures use as a share of the request.
    #[error(
        "server `{server}` scales on `{resource}` use but requests no {resource} (`container.resources.{field}`)"
    )]
    AutoscaleWithoutRequest {
        server: String,
        span: Span,
        resource: &'static str,
        field: &'static str,
    },
    /// The server mounts a directory of this machine, which no pod may (and which the
    /// cluster's nodes do not have).
    #[error("server `{server}` mounts a host path ({path}); a cluster has no host paths")]
    HostPath {
        server: String,
        span: Span,
        path: String,
    },
    /// The server's container runs as root, which the restricted Pod Security Standard
    /// refuses.
    #[error("server `{server}` runs as root (`container.user: {user}`)")]
    RootUser {
        server: String,
        span: Span,
        user: String,
    },
    /// The fleet has no server of that name that runs in the cluster (none at all, or a
    /// remote one): there is no Deployment to render for it.
    #[error("server `{server}` runs no pods: the fleet has no image server of that name")]
    NotInCluster { server: String },
    /// The control plane serves the pod's network (`mcpfleet up --pod-network`, as the
    /// rendered Deployment runs it) and the gateway has no bearer tokens: every pod, and
    /// through the Service or Ingress every client, could use every server.
    #[error("the gateway would serve the pod's network without authentication")]
    GatewayWithoutTokens { span: Option<Span> },
    /// The control plane serves the pod's network and the gateway's clients would send
    /// their bearer tokens in plain HTTP: the file neither gives the gateway a certificate
    /// nor says that a proxy in front of it ends TLS.
    #[error("the gateway would serve the pod's network without TLS")]
    GatewayWithoutTls { span: Option<Span> },
    /// A string of the server uses a value that exists only when mcpfleet starts a local
    /// instance (`revision`, `now()`, `random_string()`), or a secret; a manifest is
    /// written once, for every pod.
    #[error("server `{server}`: `{field}` uses a value known only when an instance starts")]
    PerInstanceValue {
        server: String,
        span: Span,
        field: String,
    },
    /// The state store's PostgreSQL URL reads a secret from a file, and the control
    /// plane's pod gets the fleet's secrets only as environment variables: it could not
    /// connect.
    #[error(
        "the state database's URL reads secret `{secret}` from a file, which does not reach the control plane's pod"
    )]
    StateSecretFromFile { secret: String, span: Span },
    /// Gateway replicas read the routes, tokens and limits the leading control plane
    /// publishes to the shared store; with the state in SQLite there is none.
    #[error(
        "gateway replicas need the state in PostgreSQL: they read routes from the shared store"
    )]
    GatewayReplicasWithoutStore { span: Span },
    /// Without shared session keys each gateway seals ids with a key of its own, and a
    /// client's next request, on another replica, would find its session unknown.
    #[error(
        "gateway replicas need `gateway.session_keys`: replicas serve one another's sessions by sealed ids"
    )]
    GatewayReplicasWithoutSessionKeys { span: Span },
    /// A session key reads a secret from a file, and the gateway pods get the fleet's
    /// secrets only as environment variables.
    #[error(
        "session key secret `{secret}` is read from a file, which does not reach the gateway pods"
    )]
    SessionKeyFromFile { secret: String, span: Span },
}

impl Problem {
    /// Where in the fleet file: the server's name (`gateway.listen` for the gateway,
    /// `state.postgres.url` for the state store, `kubernetes.gateway_replicas` for what
    /// replicas need).
    pub fn span(&self) -> Option<Span> {
        match self {
            Problem::LocalProgram { span, .. }
            | Problem::ServerName { span, .. }
            | Problem::HostPath { span, .. }
            | Problem::RootUser { span, .. }
            | Problem::PerInstanceValue { span, .. }
            | Problem::SecretName { span, .. }
            | Problem::AutoscaleWithoutRequest { span, .. }
            | Problem::StateSecretFromFile { span, .. }
            | Problem::GatewayReplicasWithoutStore { span }
            | Problem::GatewayReplicasWithoutSessionKeys { span }
            | Problem::SessionKeyFromFile { span, .. } => Some(*span),
            Problem::GatewayWithoutTokens { span } | Problem::GatewayWithoutTls { span } => *span,
            Problem::Namespace { .. } | Problem::NotInCluster { .. } => None,
        }
    }

    /// What to do about it.
    pub fn help(&self) -> &'static str {
        match self {
            Problem::LocalProgram { .. } => {
                "build the program into an image, or keep this server in a fleet that runs locally"
            }
            Problem::ServerName { .. } => {
                "use lowercase letters, digits and `-`, starting with a letter and ending with a letter or digit, not `mcpfleet` nor `mcpfleet-…`"
            }
            Problem::Namespace { .. } => {
                "set `kubernetes.namespace` to lowercase letters, digits and `-`, starting and ending with a letter or digit"
            }
            Problem::SecretName { .. } => {
                "name the Secret in the secret's `kubernetes: { secret: … }`"
            }
            Problem::AutoscaleWithoutRequest { .. } => {
                "set `container.resources` for it (requests equal limits), or scale on another target"
            }
            Problem::HostPath { .. } => {
                "use a named volume (rendered as a PersistentVolumeClaim of that name) or bake the files into the image"
            }
            Problem::NotInCluster { .. } => {
                "start only the fleet's image servers on Kubernetes; remote servers are reached where they are"
            }
            Problem::RootUser { .. } => {
                "run the container as a numeric non-root user, e.g. `user: \"65532:65532\"`"
            }
            Problem::GatewayWithoutTokens { .. } => {
                "add tokens under `gateway.auth.tokens` (`mcpfleet token create NAME`): in the cluster the gateway listens on the pod's address, not on loopback"
            }
            Problem::GatewayWithoutTls { .. } => {
                "bearer tokens in plain HTTP are readable on the network: add `gateway.tls: { terminated_by: proxy }` when the Ingress (`kubernetes.ingress.tls_secret`) or another proxy in front ends TLS, or `{ cert: …, key: … }` for TLS served by the gateway"
            }
            Problem::PerInstanceValue { .. } => {
                "write the value out, or take it from the pod's environment; secrets go through `container.secrets`"
            }
            Problem::StateSecretFromFile { .. } => {
                "read the secret from an environment variable (`env: STATE_DB`): the pod gets it from its Kubernetes Secret key (the secret's `kubernetes: { secret, key }`)"
            }
            Problem::GatewayReplicasWithoutStore { .. } => {
                "set `state: { postgres: { url: \"{{ secret('state_db') }}\" } }`, or remove `kubernetes.gateway_replicas` to serve from the control plane alone"
            }
            Problem::GatewayReplicasWithoutSessionKeys { .. } => {
                "declare a secret of at least 32 characters (`openssl rand -hex 32`) and set `gateway.session_keys: [\"{{ secret('gateway_session_key') }}\"]`"
            }
            Problem::SessionKeyFromFile { .. } => {
                "read the secret from an environment variable (`env: GATEWAY_SESSION_KEY`): the pods get it from its Kubernetes Secret key (the secret's `kubernetes: { secret, key }`)"
            }
        }
    }
}
