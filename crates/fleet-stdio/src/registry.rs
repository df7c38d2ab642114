//! The stdio instances route tables name: by (server, instance id), how to reach each —
//! a shared process's link, or the pool that starts a process per session.
//!
//! The engine inserts an instance before it publishes a table naming it and removes it
//! when the instance leaves the table; the gateway looks instances up when it compiles a
//! table. A table naming an instance missing here routes nowhere for that instance.

use std::collections::HashMap;
use std::fmt;
use std::sync::Arc;

use crate::link::StdioLink;
use crate::pool::SessionProcesses;

/// How a stdio instance is reached.
#[derive(Debug, Clone)]
pub enum StdioEndpoint {
    /// One long-lived process every session uses (`isolation: shared`).
    Shared(StdioLink),
    /// A process per client session (`isolation: per-session`).
    PerSession(Arc<dyn SessionProcesses>),
}

impl PartialEq for StdioEndpoint {
    fn eq(&self, other: &Self) -> bool {
        match (self, other) {
            (Self::Shared(a), Self::Shared(b)) => a == b,
            (Self::PerSession(a), Self::PerSession(b)) => Arc::ptr_eq(a, b),
            _ => false,
        }
    }
}

impl Eq for StdioEndpoint {}

/// The registry of stdio instances, by server and instance id. Cheap to clone: clones
/// share one registry.
#[derive(Clone, Default)]
pub struct StdioInstances {
    by_id: Arc<parking_lot::RwLock<HashMap<(String, String), StdioEndpoint>>>,
}

impl fmt::Debug for StdioInstances {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("StdioInstances")
            .field("instances", &self.by_id.read().len())
            .finish()
    }
}

impl StdioInstances {
    /// An empty registry.
    pub fn new() -> Self {
        Self::default()
    }

    /// Registers (or replaces) how `server`'s `instance` is reached; what it replaced.
    pub fn insert(
        &self,
        server: &str,
        instance: &str,
        endpoint: StdioEndpoint,
    ) -> Option<StdioEndpoint> {
        self.by_id
            .write()
            .insert((server.to_owned(), instance.to_owned()), endpoint)
    }

    /// Forgets `server`'s `instance`.
    pub fn remove(&self, server: &str, instance: &str) {
        self.by_id
            .write()
            .remove(&(server.to_owned(), instance.to_owned()));
    }

    /// How `server`'s `instance` is reached, if it is registered.
    pub fn get(&self, server: &str, instance: &str) -> Option<StdioEndpoint> {
        // A lookup by borrowed parts would need a custom key type; tables are compiled
        // once per change, not per request, so two small allocations are fine here.
        self.by_id
            .read()
            .get(&(server.to_owned(), instance.to_owned()))
            .cloned()
    }
}
