//! The gateway's compiled view of the published [`RouteTable`]: parsed URIs, the stdio
//! links and session pools its instance ids name, load counters that survive table
//! swaps, metric handles; and the choice of an upstream
//! for a new session or a stateless request (revision by weight, then the instance
//! with the fewest outstanding requests, ties broken at random).

use parking_lot::Mutex;
use std::cell::Cell;
use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use hyper::Uri;
use tokio::sync::watch;

use fleet_routes::table::{Address, RouteTable, parse_http_url};
use fleet_stdio::{SessionProcesses, StdioEndpoint, StdioInstances, StdioLink};

use crate::metrics::{Registry, SeriesCounters};
use crate::pins::Pinned;

/// One upstream instance as the gateway uses it.
#[derive(Debug)]
pub(crate) struct Instance {
    pub(crate) id: String,
    pub(crate) kind: Kind,
    /// Requests (and open response streams) in flight to this instance.
    outstanding: AtomicUsize,
}

/// How an instance is reached.
#[derive(Debug)]
pub(crate) enum Kind {
    Http(Uri),
    Stdio(StdioLink),
    StdioPerSession(Arc<dyn SessionProcesses>),
}

impl Kind {
    fn same(&self, other: &Self) -> bool {
        match (self, other) {
            (Self::Http(a), Self::Http(b)) => a == b,
            (Self::Stdio(a), Self::Stdio(b)) => a == b,
            (Self::StdioPerSession(a), Self::StdioPerSession(b)) => Arc::ptr_eq(a, b),
            _ => false,
        }
    }
}

impl Instance {
    /// Counts a request as outstanding until the guard drops.
    pub(crate) fn begin(self: &Arc<Self>) -> OutstandingGuard {
        self.outstanding.fetch_add(1, Ordering::Relaxed);
        OutstandingGuard(Arc::clone(self))
    }
}

/// Decrements an instance's outstanding count on drop.
#[derive(Debug)]
pub(crate) struct OutstandingGuard(Arc<Instance>);

impl Drop for OutstandingGuard {
    fn drop(&mut self) {
        self.0.outstanding.fetch_sub(1, Ordering::Relaxed);
    }
}

#[derive(Debug)]
pub(crate) struct Revision {
    pub(crate) revision: u64,
    weight: u32,
    instances: Vec<Arc<Instance>>,
    pub(crate) metrics: Arc<SeriesCounters>,
}

#[derive(Debug)]
pub(crate) struct Server {
    name: Arc<str>,
    revisions: Vec<Revision>,
    /// `/mcp/{server}` at the stdio home, when this gateway is a replica without the
    /// server's stdio instances: every request of the server is relayed there (the
    /// home holds the pipes, and chooses among the revisions as this table says).
    pub(crate) home: Option<Uri>,
    /// Where requests the gateway refuses are counted.
    pub(crate) rejections: Arc<SeriesCounters>,
}

/// A chosen upstream.
#[derive(Debug, Clone)]
pub(crate) struct Target {
    pub(crate) server: Arc<str>,
    pub(crate) revision: u64,
    pub(crate) instance: Arc<Instance>,
    pub(crate) metrics: Arc<SeriesCounters>,
}

impl Target {
    /// Where an MRTR retry of a request answered here must go.
    pub(crate) fn pin(&self) -> Pinned {
        Pinned {
            server: Arc::clone(&self.server),
            revision: self.revision,
            instance: self.instance.id.clone(),
        }
    }
}

impl Server {
    /// Whether a new session could be placed.
    pub(crate) fn has_instances(&self) -> bool {
        self.home.is_some()
            || self
                .revisions
                .iter()
                .any(|r| r.weight > 0 && !r.instances.is_empty())
    }

    /// Picks a revision by weight among those with instances, then its least-loaded
    /// instance. `None` when no weighted revision has an instance.
    pub(crate) fn pick(&self) -> Option<Target> {
        let total: u64 = self
            .revisions
            .iter()
            .filter(|r| !r.instances.is_empty())
            .map(|r| u64::from(r.weight))
            .sum();
        if total == 0 {
            return None;
        }
        let mut point = random_u64() % total;
        let revision = self
            .revisions
            .iter()
            .filter(|r| !r.instances.is_empty())
            .find(|r| {
                let weight = u64::from(r.weight);
                if point < weight {
                    true
                } else {
                    point -= weight;
                    false
                }
            })?;
        let count = revision.instances.len();
        // usize → u64 never truncates on supported targets; the modulo keeps it small.
        let start = usize::try_from(random_u64() % count as u64).unwrap_or(0);
        let instance = (0..count)
            .map(|offset| &revision.instances[(start + offset) % count])
            .min_by_key(|i| i.outstanding.load(Ordering::Relaxed))?;
        Some(Target {
            server: Arc::clone(&self.name),
            revision: revision.revision,
            instance: Arc::clone(instance),
            metrics: Arc::clone(&revision.metrics),
        })
    }

    /// The least-loaded instance of `revision` (an MRTR retry whose instance left).
    pub(crate) fn pick_in(&self, revision: u64) -> Option<Target> {
        let found = self.revisions.iter().find(|r| r.revision == revision)?;
        let instance = found
            .instances
            .iter()
            .min_by_key(|i| i.outstanding.load(Ordering::Relaxed))?;
        Some(Target {
            server: Arc::clone(&self.name),
            revision,
            instance: Arc::clone(instance),
            metrics: Arc::clone(&found.metrics),
        })
    }

    /// The pinned upstream of a session, if the table still has it.
    pub(crate) fn find(&self, revision: u64, instance_id: &str) -> Option<Target> {
        let found = self.revisions.iter().find(|r| r.revision == revision)?;
        let instance = found.instances.iter().find(|i| i.id == instance_id)?;
        Some(Target {
            server: Arc::clone(&self.name),
            revision,
            instance: Arc::clone(instance),
            metrics: Arc::clone(&found.metrics),
        })
    }
}

/// The compiled table.
#[derive(Debug, Default)]
pub(crate) struct Routes {
    servers: HashMap<String, Server>,
}

impl Routes {
    pub(crate) fn server(&self, name: &str) -> Option<&Server> {
        self.servers.get(name)
    }

    /// Servers without an instance to take new sessions, by name.
    pub(crate) fn servers_without_instances(&self) -> Vec<&str> {
        let mut names: Vec<&str> = self
            .servers
            .iter()
            .filter(|(_, s)| !s.has_instances())
            .map(|(n, _)| n.as_str())
            .collect();
        names.sort_unstable();
        names
    }

    fn compile(
        table: &RouteTable,
        previous: &Self,
        stdio: &StdioInstances,
        home: Option<&Uri>,
        registry: &Registry,
    ) -> Self {
        let servers = table
            .servers()
            .map(|(name, revisions)| {
                let old = previous.servers.get(name);
                // A replica has no stdio instance: the home serves them all.
                let home = home
                    .filter(|_| {
                        revisions.iter().flat_map(|r| &r.instances).any(|i| {
                            !matches!(i.address, Address::Http { .. })
                                && stdio.get(name, &i.id).is_none()
                        })
                    })
                    .and_then(|home| at_home(home, &format!("/mcp/{name}")));
                let revisions = revisions
                    .iter()
                    .map(|route| Revision {
                        revision: route.revision,
                        weight: route.weight,
                        instances: route
                            .instances
                            .iter()
                            .filter_map(|instance| {
                                if home.is_some()
                                    && !matches!(instance.address, Address::Http { .. })
                                {
                                    return None;
                                }
                                compile_instance(name, instance, old, stdio)
                            })
                            .collect(),
                        metrics: registry.series(name, Some(route.revision)),
                    })
                    .collect();
                let server = Server {
                    name: Arc::from(name),
                    revisions,
                    home,
                    rejections: registry.series(name, None),
                };
                (name.to_owned(), server)
            })
            .collect();
        Self { servers }
    }
}

/// `path` at the home `home` (`scheme://authority`).
pub(crate) fn at_home(home: &Uri, path: &str) -> Option<Uri> {
    let scheme = home.scheme_str()?;
    let authority = home.authority()?;
    format!("{scheme}://{authority}{path}").parse().ok()
}

/// Resolves an instance of `server` to what reaches it; reuses the instance (and its load
/// counter) of the previous table when the id and the way to reach it are unchanged. A
/// stdio instance missing from `stdio` (it left between the table's publication and now)
/// is left out.
fn compile_instance(
    server: &str,
    instance: &fleet_routes::table::Instance,
    old: Option<&Server>,
    stdio: &StdioInstances,
) -> Option<Arc<Instance>> {
    let id = instance.id.as_str();
    let kind = match &instance.address {
        // RouteTable::new validated the URL; a failure here is unreachable in practice.
        Address::Http { url } => Kind::Http(parse_http_url(url).ok()?),
        // Only stdio instances are in the registry: an HTTP one costs no lookup.
        address => stdio_kind(server, id, address, stdio)?,
    };
    let reused = old.and_then(|server| {
        server
            .revisions
            .iter()
            .flat_map(|r| &r.instances)
            .find(|i| i.id == id && i.kind.same(&kind))
    });
    Some(reused.map_or_else(
        || {
            Arc::new(Instance {
                id: id.to_owned(),
                kind,
                outstanding: AtomicUsize::new(0),
            })
        },
        Arc::clone,
    ))
}

/// The registered stdio endpoint of `server`'s instance `id`, when it is the kind
/// `address` says; else `None`, with a warning.
fn stdio_kind(server: &str, id: &str, address: &Address, stdio: &StdioInstances) -> Option<Kind> {
    match (address, stdio.get(server, id)) {
        (Address::Stdio, Some(StdioEndpoint::Shared(link))) => Some(Kind::Stdio(link)),
        (Address::StdioPerSession, Some(StdioEndpoint::PerSession(processes))) => {
            Some(Kind::StdioPerSession(processes))
        }
        (address, found) => {
            tracing::warn!(
                "`{server}` instance `{id}`: the route table says {address:?}, the stdio \
                 registry has {}; left out",
                if found.is_some() {
                    "another kind"
                } else {
                    "nothing"
                }
            );
            None
        }
    }
}

/// Follows the route-table channel; compiles a new table lazily, on the first
/// request after it was published.
#[derive(Debug)]
pub(crate) struct RouteWatch {
    state: Mutex<Watched>,
    stdio: StdioInstances,
    registry: Arc<Registry>,
}

#[derive(Debug)]
struct Watched {
    receiver: watch::Receiver<RouteTable>,
    routes: Arc<Routes>,
    /// The gateway holding the stdio pipes, for a replica (see [`Server::home`]).
    home: Option<Uri>,
    /// The home changed: compile again even if the table did not.
    stale: bool,
}

impl RouteWatch {
    pub(crate) fn new(
        mut receiver: watch::Receiver<RouteTable>,
        stdio: StdioInstances,
        registry: Arc<Registry>,
    ) -> Self {
        let routes = Routes::compile(
            &receiver.borrow_and_update(),
            &Routes::default(),
            &stdio,
            None,
            &registry,
        );
        Self {
            state: Mutex::new(Watched {
                receiver,
                routes: Arc::new(routes),
                home: None,
                stale: false,
            }),
            stdio,
            registry,
        }
    }

    /// The home of this replica, if it is one.
    pub(crate) fn home(&self) -> Option<Uri> {
        self.state.lock().home.clone()
    }

    /// Makes this gateway a replica whose stdio servers are served by the gateway at
    /// `home` (`scheme://authority`); `None` serves only what it has itself.
    pub(crate) fn set_home(&self, home: Option<Uri>) {
        let mut state = self.state.lock();
        if state.home != home {
            state.home = home;
            state.stale = true;
        }
    }

    /// The current routes. Holds a lock only while comparing (and, after a change,
    /// compiling) — never across an await.
    pub(crate) fn current(&self) -> Arc<Routes> {
        let mut state = self.state.lock();
        let Watched {
            receiver,
            routes,
            home,
            stale,
        } = &mut *state;
        // A closed channel keeps the last table.
        if receiver.has_changed().unwrap_or(false) || *stale {
            let compiled = Routes::compile(
                &receiver.borrow_and_update(),
                routes,
                &self.stdio,
                home.as_ref(),
                &self.registry,
            );
            *routes = Arc::new(compiled);
            *stale = false;
        }
        Arc::clone(routes)
    }
}

thread_local! {
    static RANDOM_STATE: Cell<u64> = Cell::new(seed());
}

fn seed() -> u64 {
    // Non-zero for xorshift; the clock only when the OS has no randomness to give.
    getrandom::u64().unwrap_or_else(|_| {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0x9E37_79B9_7F4A_7C15, |d| d.as_nanos() as u64)
    }) | 1
}

/// A fast, non-cryptographic random number for load balancing (xorshift64*).
fn random_u64() -> u64 {
    RANDOM_STATE.with(|state| {
        let mut x = state.get();
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        state.set(x);
        x.wrapping_mul(0x2545_F491_4F6C_DD1D)
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use fleet_routes::table::{Instance as RouteInstance, RevisionRoute};

    fn table(weights: &[(u64, u32, &[&str])]) -> RouteTable {
        RouteTable::new([(
            "s".to_owned(),
            weights
                .iter()
                .map(|(revision, weight, ids)| RevisionRoute {
                    revision: *revision,
                    weight: *weight,
                    instances: ids
                        .iter()
                        .map(|id| RouteInstance::http(*id, format!("http://127.0.0.1:1/{id}")))
                        .collect(),
                })
                .collect(),
        )])
        .unwrap()
    }

    fn compile(table: &RouteTable) -> Routes {
        Routes::compile(
            table,
            &Routes::default(),
            &StdioInstances::new(),
            None,
            &Registry::default(),
        )
    }

    #[test]
    fn weights_split_new_sessions() {
        let routes = compile(&table(&[(1, 90, &["a"]), (2, 10, &["b"])]));
        let server = routes.server("s").unwrap();
        let canary = (0..10_000)
            .filter(|_| server.pick().unwrap().revision == 2)
            .count();
        assert!((700..1300).contains(&canary), "{canary}");
        let routes = compile(&table(&[(1, 0, &["a"]), (2, 100, &["b"])]));
        assert!((0..100).all(|_| routes.server("s").unwrap().pick().unwrap().revision == 2));
    }

    #[test]
    fn a_revision_without_instances_is_skipped() {
        let routes = compile(&table(&[(1, 1, &["a"]), (2, 1000, &[])]));
        let server = routes.server("s").unwrap();
        assert!((0..100).all(|_| server.pick().unwrap().revision == 1));
        let routes = compile(&table(&[(1, 0, &["a"]), (2, 1, &[])]));
        assert!(routes.server("s").unwrap().pick().is_none());
        assert_eq!(routes.servers_without_instances(), ["s"]);
    }

    #[test]
    fn the_least_loaded_instance_wins() {
        let routes = compile(&table(&[(1, 1, &["a", "b", "c"])]));
        let server = routes.server("s").unwrap();
        let _a = server.find(1, "a").unwrap().instance.begin();
        let _c = server.find(1, "c").unwrap().instance.begin();
        assert!((0..50).all(|_| server.pick().unwrap().instance.id == "b"));
    }

    #[test]
    fn load_counters_survive_a_table_swap() {
        let registry = Registry::default();
        let stdio = StdioInstances::new();
        let first = Routes::compile(
            &table(&[(1, 1, &["a"])]),
            &Routes::default(),
            &stdio,
            None,
            &registry,
        );
        let _guard = first
            .server("s")
            .unwrap()
            .find(1, "a")
            .unwrap()
            .instance
            .begin();
        let second = Routes::compile(
            &table(&[(1, 1, &["a"]), (2, 1, &["b"])]),
            &first,
            &stdio,
            None,
            &registry,
        );
        let a = second.server("s").unwrap().find(1, "a").unwrap();
        assert_eq!(a.instance.outstanding.load(Ordering::Relaxed), 1);
    }

    #[tokio::test]
    async fn stdio_instances_are_found_by_id_and_left_out_when_not_registered() {
        let table = RouteTable::new([(
            "s".to_owned(),
            vec![RevisionRoute {
                revision: 1,
                weight: 1,
                instances: vec![RouteInstance::stdio("a"), RouteInstance::stdio("b")],
            }],
        )])
        .unwrap();
        let stdio = StdioInstances::new();
        let (_their_stdin, stdin) = tokio::io::duplex(64);
        let (stdout, _their_stdout) = tokio::io::duplex(64);
        let link = StdioLink::shared("a", stdin, stdout);
        stdio.insert("s", "a", StdioEndpoint::Shared(link.clone()));
        let routes = Routes::compile(
            &table,
            &Routes::default(),
            &stdio,
            None,
            &Registry::default(),
        );
        let server = routes.server("s").unwrap();
        let found = server
            .find(1, "a")
            .expect("a registered instance is routed");
        assert!(matches!(&found.instance.kind, Kind::Stdio(l) if *l == link));
        assert!(
            server.find(1, "b").is_none(),
            "an instance the registry does not know routes nowhere"
        );
    }

    #[test]
    fn a_replica_relays_stdio_servers_to_their_home_and_routes_http_itself() {
        let table = RouteTable::new([
            (
                "pipes".to_owned(),
                vec![RevisionRoute {
                    revision: 1,
                    weight: 1,
                    instances: vec![RouteInstance::stdio_per_session("a")],
                }],
            ),
            (
                "web".to_owned(),
                vec![RevisionRoute {
                    revision: 1,
                    weight: 1,
                    instances: vec![RouteInstance::http("w", "http://127.0.0.1:9/mcp")],
                }],
            ),
        ])
        .unwrap();
        let home: Uri = "http://10.1.2.3:7470".parse().unwrap();
        let routes = Routes::compile(
            &table,
            &Routes::default(),
            &StdioInstances::new(),
            Some(&home),
            &Registry::default(),
        );
        let pipes = routes.server("pipes").unwrap();
        assert_eq!(
            pipes.home.as_ref().map(ToString::to_string).as_deref(),
            Some("http://10.1.2.3:7470/mcp/pipes")
        );
        assert!(pipes.has_instances(), "the home has them: ready");
        let web = routes.server("web").unwrap();
        assert!(web.home.is_none());
        assert_eq!(web.pick().unwrap().instance.id, "w");
        // Without a home, a stdio instance this gateway lacks routes nowhere.
        let alone = compile(&table);
        assert!(alone.server("pipes").unwrap().home.is_none());
        assert_eq!(alone.servers_without_instances(), ["pipes"]);
    }
}
