//! mcpfleet's Kubernetes cluster client: it connects to a cluster named by a kubeconfig
//! context (or the one it runs in), server-side applies the objects `fleet-manifests`
//! renders, and follows a Deployment's rollout to ready.
//!
//! What it owns:
//! - [`Cluster::connect`]: a client from a kubeconfig and an optional context, or the
//!   in-cluster service account, with errors that say what to fix ([`ConnectError`]).
//! - [`Cluster::apply`]: server-side apply of each object in order, as field manager
//!   `mcpfleet` and never forced: a field another manager owns is a
//!   [`ApplyError::Conflict`] naming that manager, not an overwrite. Kinds are resolved
//!   from a fixed table of what mcpfleet renders ([`kinds`]), so applying needs no
//!   discovery round trips.
//! - [`rollout_state`] (pure) and [`Cluster::wait_rollout`]: when a Deployment's rollout
//!   is done, failed, or how far it got.
//! - [`Cluster::preflight`]: before the first apply, whether the deploy can work — the API
//!   server's version, the namespace, every RBAC permission apply and the runtime need,
//!   the referenced Secret keys, ResourceQuota room — as lines that say what to do.
//!
//! - [`KubeRuntime`]: fleet-runtime's `Runtime` on a cluster — an instance is a pod of a
//!   Deployment per server revision, claimed by a label ([`runtime`]); from outside the
//!   cluster an http pod is reached through a local port forwarded over the API server's
//!   `pods/portforward`.
//! - [`LeaderLabel`]: which of the control plane's own pods leads, as a label its Service
//!   selects.
//!
//! What it deliberately does not: render objects (that is `fleet-manifests`, which has no
//! I/O; the runtime gets its Deployments rendered), or decide what to apply (the CLI). It
//! talks only to the API server; tests replace the server with `tower_test::mock` or
//! fleet-testkit's fake API server.

mod apply;
mod cluster;
mod forward;
pub mod kinds;
mod leader;
mod preflight;
mod quantity;
mod rollout;
pub mod runtime;

pub use apply::{AppliedObject, ApplyError, ApplyOutcome, ApplyReport, FieldConflict, ObjectRef};
pub use cluster::{ApiError, Cluster, ClusterAccess, ConnectError, FIELD_MANAGER};
pub use leader::LeaderLabel;
pub use preflight::{
    Check, CheckArea, OLDEST_SUPPORTED_MINOR, PreflightReport, SecretKeyRef, Severity,
    referenced_secrets,
};
pub use rollout::{RolloutError, RolloutState, rollout_state};
pub use runtime::{KubeRuntime, KubeSettings};
