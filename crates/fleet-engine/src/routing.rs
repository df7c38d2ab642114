//! The route book: which instances of each server revision are ready, and how new
//! sessions are shared between the revisions (weights). Every change that alters the route
//! table publishes it to the gateway (plain data, `fleet_routes::table`), and registers or
//! forgets the stdio instances it names (`fleet_stdio::StdioInstances`).

use std::collections::{BTreeMap, BTreeSet};

use fleet_routes::table::{Instance, RevisionRoute, RouteTable, RouteTableError};
use fleet_stdio::{StdioEndpoint, StdioInstances};
use parking_lot::Mutex;
use tokio::sync::watch;

/// Where every server's traffic goes, and who hears about it.
#[derive(Debug)]
pub(crate) struct RouteBook {
    /// Ready instances and traffic shares: the source of the gateway's route table.
    routing: Mutex<Routing>,
    routes: watch::Sender<RouteTable>,
    /// The links and session pools of the stdio instances the route table names.
    stdio: StdioInstances,
}

impl Default for RouteBook {
    fn default() -> Self {
        Self {
            routing: Mutex::default(),
            routes: watch::channel(RouteTable::empty()).0,
            stdio: StdioInstances::new(),
        }
    }
}

impl RouteBook {
    /// The route tables as they are published.
    pub(crate) fn subscribe(&self) -> watch::Receiver<RouteTable> {
        self.routes.subscribe()
    }

    /// The stdio instances the published tables name.
    pub(crate) fn stdio(&self) -> StdioInstances {
        self.stdio.clone()
    }

    /// Adds (`Some`) or removes a ready instance of `server`'s `revision` and publishes
    /// the new table if that changes it. A stdio instance's link or pool is registered
    /// before a table names it, and forgotten after the table without it is out.
    pub(crate) fn set_upstream(
        &self,
        server: &str,
        revision: u64,
        instance: &str,
        upstream: Option<Upstream>,
    ) {
        let Some(upstream) = upstream else {
            self.route(|routing| {
                routing
                    .ready
                    .get_mut(server)
                    .and_then(|revisions| revisions.get_mut(&revision))
                    .is_some_and(|instances| instances.remove(instance).is_some())
            });
            self.stdio.remove(server, instance);
            return;
        };
        let (route, stdio_changed) = match upstream {
            Upstream::Http(url) => (Instance::http(instance, url), false),
            Upstream::Stdio(endpoint) => {
                let route = match endpoint {
                    StdioEndpoint::Shared(_) => Instance::stdio(instance),
                    StdioEndpoint::PerSession(_) => Instance::stdio_per_session(instance),
                };
                // A new process behind the same id (a restart) changes no route, but the
                // gateway must compile the table again to find the new link.
                let previous = self.stdio.insert(server, instance, endpoint.clone());
                (route, previous.as_ref() != Some(&endpoint))
            }
        };
        self.route(|routing| {
            let previous = routing
                .ready
                .entry(server.to_string())
                .or_default()
                .entry(revision)
                .or_default()
                .insert(instance.to_string(), route.clone());
            stdio_changed || previous.as_ref() != Some(&route)
        });
    }

    /// Sets how `server`'s new sessions are shared between its revisions, all at once (an
    /// empty list takes the server out of the table). Revisions left out lose their
    /// sessions; weight 0 keeps them.
    pub(crate) fn set_weights(&self, server: &str, weights: &[(u64, u32)]) {
        self.route(|routing| {
            let new: BTreeMap<u64, u32> = weights.iter().copied().collect();
            if new.is_empty() {
                return routing.weights.remove(server).is_some();
            }
            routing.weights.insert(server.to_string(), new.clone()) != Some(new)
        });
    }

    /// Takes `server`'s `revision` out of its weights (its sessions end), leaving the other
    /// revisions' shares as they are.
    pub(crate) fn remove_weight(&self, server: &str, revision: u64) {
        self.route(|routing| {
            let Some(weights) = routing.weights.get_mut(server) else {
                return false;
            };
            let removed = weights.remove(&revision).is_some();
            if weights.is_empty() {
                routing.weights.remove(server);
            }
            removed
        });
    }

    /// How many instances of `server`'s `revision` are ready (take traffic when routed).
    pub(crate) fn ready_instances(&self, server: &str, revision: u64) -> usize {
        let routing = self.routing.lock();
        routing
            .ready
            .get(server)
            .and_then(|r| r.get(&revision))
            .map_or(0, BTreeMap::len)
    }

    /// The weights `server`'s revisions have now.
    pub(crate) fn weights(&self, server: &str) -> Vec<(u64, u32)> {
        let routing = self.routing.lock();
        routing
            .weights
            .get(server)
            .map(|w| w.iter().map(|(&r, &w)| (r, w)).collect())
            .unwrap_or_default()
    }

    /// Changes the routing; publishes the table when `change` says it changed.
    fn route(&self, change: impl FnOnce(&mut Routing) -> bool) {
        let mut routing = self.routing.lock();
        if !change(&mut routing) {
            return;
        }
        // Published under the lock: tables go out in the order their changes happened.
        // A server whose entry the gateway refuses is left out (it takes no traffic), so
        // one bad entry never freezes every other server's routes.
        let table = routing.table(&BTreeSet::new()).or_else(|errors| {
            for error in &errors {
                tracing::error!("`{}` left out of the route table: {error}", error.server());
            }
            let left_out = errors.iter().map(|e| e.server().to_owned()).collect();
            routing.table(&left_out)
        });
        match table {
            Ok(table) => {
                self.routes.send_replace(table);
            }
            Err(errors) => tracing::error!("route table rejected: {} problems", errors.len()),
        }
    }
}

/// What the route table is made of.
#[derive(Debug, Default)]
struct Routing {
    /// Ready instances: server → revision → instance id → how to reach it.
    ready: BTreeMap<String, BTreeMap<u64, BTreeMap<String, Instance>>>,
    /// Traffic shares: server → revision → weight. A revision missing here takes no
    /// traffic and the gateway ends its sessions; weight 0 keeps its sessions (drain).
    weights: BTreeMap<String, BTreeMap<u64, u32>>,
}

impl Routing {
    /// The gateway's table: every server with weights, each revision with its ready
    /// instances.
    fn table(&self, left_out: &BTreeSet<String>) -> Result<RouteTable, Vec<RouteTableError>> {
        let servers = self
            .weights
            .iter()
            .filter(|(server, _)| !left_out.contains(*server));
        RouteTable::new(servers.map(|(server, weights)| {
            let ready = self.ready.get(server);
            let revisions = weights
                .iter()
                .map(|(&revision, &weight)| RevisionRoute {
                    revision,
                    weight,
                    instances: ready
                        .and_then(|r| r.get(&revision))
                        .map(|i| i.values().cloned().collect())
                        .unwrap_or_default(),
                })
                .collect();
            (server.clone(), revisions)
        }))
    }
}

/// How the gateway reaches a ready instance.
#[derive(Debug, Clone)]
pub(crate) enum Upstream {
    /// Its Streamable HTTP endpoint.
    Http(String),
    /// Its stdio process (shared), or the pool that starts one per session.
    Stdio(StdioEndpoint),
}
