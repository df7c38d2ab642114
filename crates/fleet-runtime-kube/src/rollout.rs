//! When a Deployment's rollout is done: the pure reading of its status
//! ([`rollout_state`]), and following it on the cluster until then
//! ([`Cluster::wait_rollout`]).

use std::fmt;
use std::time::Instant;

use futures::TryStreamExt as _;
use k8s_openapi::api::apps::v1::Deployment;
use kube::api::{Api, WatchEvent, WatchParams};

use crate::cluster::{ApiError, Cluster};

/// Where a Deployment's rollout stands.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RolloutState {
    /// Every desired replica runs the current template and is available, and no replica of
    /// an older template is left.
    Ready,
    /// Still going; the counts are for progress output.
    Progressing {
        /// Whether the Deployment controller has seen the current spec
        /// (`status.observedGeneration ≥ metadata.generation`). Until it has, the counts
        /// describe the previous spec.
        observed: bool,
        /// `spec.replicas` (1 when unset, as the API defaults it).
        desired: i32,
        /// Replicas running the current template.
        updated: i32,
        /// Available replicas (ready for `minReadySeconds`), of any template.
        available: i32,
        /// All replicas, of any template: more than `updated` while old ones terminate.
        total: i32,
    },
    /// The Deployment controller gave up: the `Progressing` condition has reason
    /// `ProgressDeadlineExceeded` (no progress for `spec.progressDeadlineSeconds`).
    Failed {
        /// The condition's message (names the ReplicaSet that did not progress).
        message: String,
    },
}

impl fmt::Display for RolloutState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RolloutState::Ready => f.write_str("ready"),
            RolloutState::Progressing {
                observed: false, ..
            } => f.write_str("waiting for the Deployment controller to see the new spec"),
            RolloutState::Progressing {
                desired,
                updated,
                available,
                total,
                ..
            } => write!(
                f,
                "{updated} of {desired} replicas updated, {available} available, {} old left",
                total - updated
            ),
            RolloutState::Failed { message } => write!(f, "progress deadline exceeded: {message}"),
        }
    }
}

/// Reads a Deployment's rollout state from its spec and status (what
/// `kubectl rollout status` checks, in the same order).
pub fn rollout_state(deployment: &Deployment) -> RolloutState {
    let status = deployment.status.clone().unwrap_or_default();
    let generation = deployment.metadata.generation.unwrap_or(0);
    let observed = status.observed_generation.unwrap_or(0) >= generation;
    // A stale failure condition belongs to the previous spec: only read it once observed.
    if observed {
        let deadline_exceeded = status.conditions.iter().flatten().find(|condition| {
            condition.type_ == "Progressing"
                && condition.reason.as_deref() == Some("ProgressDeadlineExceeded")
        });
        if let Some(condition) = deadline_exceeded {
            return RolloutState::Failed {
                message: condition.message.clone().unwrap_or_default(),
            };
        }
    }
    let desired = deployment
        .spec
        .as_ref()
        .and_then(|spec| spec.replicas)
        .unwrap_or(1);
    let updated = status.updated_replicas.unwrap_or(0);
    let available = status.available_replicas.unwrap_or(0);
    let total = status.replicas.unwrap_or(0);
    if observed && updated == desired && available == desired && total == updated {
        RolloutState::Ready
    } else {
        RolloutState::Progressing {
            observed,
            desired,
            updated,
            available,
            total,
        }
    }
}

/// Why [`Cluster::wait_rollout`] returned without a ready Deployment.
#[derive(Debug, thiserror::Error)]
pub enum RolloutError {
    /// The Deployment controller reported `ProgressDeadlineExceeded`.
    #[error(
        "Deployment {namespace}/{name} failed to roll out: {message}; \
         see `kubectl -n {namespace} describe deployment {name}` and its pods' events"
    )]
    Failed {
        /// The Deployment's namespace.
        namespace: String,
        /// The Deployment's name.
        name: String,
        /// The condition's message.
        message: String,
    },
    /// The deadline passed before the rollout was ready.
    #[error(
        "Deployment {namespace}/{name} was not ready in time ({last}); \
         see `kubectl -n {namespace} get pods` for pods that do not start or become ready"
    )]
    TimedOut {
        /// The Deployment's namespace.
        namespace: String,
        /// The Deployment's name.
        name: String,
        /// The last state seen.
        last: RolloutState,
    },
    /// There is no such Deployment (or it was deleted while waiting).
    #[error(
        "Deployment {namespace}/{name} does not exist (or was deleted while waiting for its rollout)"
    )]
    NotFound {
        /// The namespace looked in.
        namespace: String,
        /// The name looked for.
        name: String,
    },
    /// A request failed.
    #[error("waiting for Deployment {namespace}/{name}: {source}")]
    Api {
        /// The Deployment's namespace.
        namespace: String,
        /// The Deployment's name.
        name: String,
        /// What went wrong (boxed: it carries kube's error, and keeps every result small).
        #[source]
        source: Box<ApiError>,
    },
}

/// The longest watch request: the API server ends a watch after `timeoutSeconds`
/// (kube validates it below 295 s); the loop then reads the Deployment again.
const MAX_WATCH_SECONDS: u64 = 290;

impl Cluster {
    /// Waits until the Deployment's rollout is [`RolloutState::Ready`], following it with
    /// a GET and then a watch from that `resourceVersion` (GET again when the watch ends or
    /// its version is too old).
    ///
    /// # Errors
    /// [`RolloutError`]: the rollout failed, the deadline passed (with the last state), the
    /// Deployment does not exist, or a request failed.
    pub async fn wait_rollout(
        &self,
        name: &str,
        namespace: &str,
        deadline: Instant,
    ) -> Result<(), RolloutError> {
        let api: Api<Deployment> = Api::namespaced(self.client.clone(), namespace);
        let mut last = RolloutState::Progressing {
            observed: false,
            desired: 0,
            updated: 0,
            available: 0,
            total: 0,
        };
        let error = |source| RolloutError::Api {
            namespace: namespace.to_owned(),
            name: name.to_owned(),
            source: Box::new(source),
        };
        let not_found = || RolloutError::NotFound {
            namespace: namespace.to_owned(),
            name: name.to_owned(),
        };
        // Ok(true) when ready; a failure ends the wait.
        let settle =
            |deployment: &Deployment, last: &mut RolloutState| match rollout_state(deployment) {
                RolloutState::Ready => Ok(true),
                RolloutState::Failed { message } => Err(RolloutError::Failed {
                    namespace: namespace.to_owned(),
                    name: name.to_owned(),
                    message,
                }),
                progressing => {
                    tracing::debug!(namespace, name, state = %progressing, "rollout");
                    *last = progressing;
                    Ok(false)
                }
            };
        let follow = async {
            loop {
                let deployment = api
                    .get_opt(name)
                    .await
                    .map_err(|e| error(self.api_error(e)))?
                    .ok_or_else(not_found)?;
                if settle(&deployment, &mut last)? {
                    return Ok(());
                }
                let version = deployment
                    .metadata
                    .resource_version
                    .clone()
                    .unwrap_or_default();
                let remaining = deadline.saturating_duration_since(Instant::now()).as_secs();
                let params = WatchParams::default()
                    .fields(&format!("metadata.name={name}"))
                    .timeout(remaining.clamp(1, MAX_WATCH_SECONDS) as u32);
                let events = api
                    .watch(&params, &version)
                    .await
                    .map_err(|e| error(self.api_error(e)))?;
                let mut events = std::pin::pin!(events);
                while let Some(event) = events
                    .try_next()
                    .await
                    .map_err(|e| error(self.api_error(e)))?
                {
                    match event {
                        WatchEvent::Added(deployment) | WatchEvent::Modified(deployment) => {
                            if settle(&deployment, &mut last)? {
                                return Ok(());
                            }
                        }
                        WatchEvent::Deleted(_) => return Err(not_found()),
                        WatchEvent::Bookmark(_) => {}
                        // 410 Gone: the version is too old to watch from; read it again.
                        WatchEvent::Error(status) if status.code == 410 => break,
                        WatchEvent::Error(status) => {
                            return Err(error(ApiError::Status {
                                code: status.code,
                                reason: status.reason,
                                message: status.message,
                            }));
                        }
                    }
                }
            }
        };
        match tokio::time::timeout_at(deadline.into(), follow).await {
            Ok(result) => result,
            Err(_elapsed) => Err(RolloutError::TimedOut {
                namespace: namespace.to_owned(),
                name: name.to_owned(),
                last,
            }),
        }
    }
}

#[cfg(test)]
mod tests;
