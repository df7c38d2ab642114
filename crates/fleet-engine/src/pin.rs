//! Pinning: each image server's tag resolved to the exact image it names now
//! ([`Executable::Image`]'s `digest`), so a revision records, and always runs, those bytes.
//!
//! Deployments pin before they record a revision; `plan` pins the same way to show a tag
//! that moved as a change. A server that carries a digest already (a stored revision
//! brought back by a rollback) keeps it: going back never resolves a tag again.

use fleet_runtime::{ContainerRuntime, LocalRuntime, PullPolicy, StartError};
use fleet_spec::model::{Executable, ValidFleet};
use std::collections::BTreeMap;

/// Resolves image references to the exact images they name now.
pub trait ImageResolver {
    /// The pinned reference of `image` (pulled first as `pull` says): a repo digest
    /// `name@sha256:…` or an image id `sha256:…`.
    ///
    /// # Errors
    /// The engine cannot be reached, the image is missing or cannot be pulled.
    fn resolve_image(
        &self,
        image: &str,
        pull: PullPolicy,
    ) -> impl Future<Output = Result<String, StartError>> + Send;
}

impl ImageResolver for ContainerRuntime {
    fn resolve_image(
        &self,
        image: &str,
        pull: PullPolicy,
    ) -> impl Future<Output = Result<String, StartError>> + Send {
        ContainerRuntime::resolve_image(self, image, pull)
    }
}

/// Connects to the container engine on the first image it resolves.
impl ImageResolver for LocalRuntime {
    async fn resolve_image(&self, image: &str, pull: PullPolicy) -> Result<String, StartError> {
        self.connect_containers()
            .await?
            .resolve_image(image, pull)
            .await
    }
}

/// An image that could not be pinned, and the servers that name it.
#[derive(Debug, thiserror::Error)]
#[error("cannot pin image {image} of {}: {source}", servers.iter().map(|s| format!("`{s}`")).collect::<Vec<_>>().join(", "))]
pub struct UnpinnedImage {
    pub image: String,
    pub servers: Vec<String>,
    #[source]
    pub source: StartError,
}

/// Pins every image server of `fleet` that has no digest yet, resolving each distinct image
/// (and pull policy) once.
///
/// # Errors
/// Every image that could not be pinned; its servers are left without a digest, the others
/// are pinned.
pub async fn pin_images(
    fleet: &mut ValidFleet,
    resolver: &impl ImageResolver,
) -> Result<(), Vec<UnpinnedImage>> {
    // Each distinct image and pull policy, with the servers that name it.
    let mut wanted: Vec<(String, PullPolicy, Vec<String>)> = Vec::new();
    for server in &mut fleet.servers {
        if let Some(Executable::Image {
            image,
            digest: None,
            container,
            ..
        }) = server.transport.executable_mut()
        {
            let pull = crate::launch::pull_policy(container.pull);
            match wanted
                .iter_mut()
                .find(|(i, p, _)| *i == image.shown && *p == pull)
            {
                Some((_, _, servers)) => servers.push(server.name.clone()),
                None => wanted.push((image.shown.clone(), pull, vec![server.name.clone()])),
            }
        }
    }
    let mut pinned = BTreeMap::new();
    let mut failed = Vec::new();
    for (image, pull, servers) in wanted {
        match resolver.resolve_image(&image, pull).await {
            Ok(reference) => pinned.extend(servers.into_iter().map(|s| (s, reference.clone()))),
            Err(source) => failed.push(UnpinnedImage {
                image,
                servers,
                source,
            }),
        }
    }
    for server in &mut fleet.servers {
        if let (Some(reference), Some(Executable::Image { digest, .. })) = (
            pinned.remove(&server.name),
            server.transport.executable_mut(),
        ) {
            *digest = Some(reference);
        }
    }
    if failed.is_empty() {
        Ok(())
    } else {
        Err(failed)
    }
}
