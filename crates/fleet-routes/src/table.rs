//! The route table the engine publishes: server → revisions → weight → instances, each
//! instance by id and address.
//!
//! The table is plain data validated at construction (like linkerd's `Distribution`):
//! a [`RouteTable`] that exists is one the gateway can route with. The gateway turns
//! each published table into its own compiled form (parsed URIs, load counters that
//! survive table swaps, metric handles, the stdio links it finds by instance id).

use std::collections::{BTreeMap, HashSet};

use http::Uri;
use serde::{Deserialize, Serialize};

/// Where an instance of a server revision is reached.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
#[non_exhaustive]
pub enum Address {
    /// A Streamable HTTP endpoint, `http://` or `https://host:port/path`.
    Http {
        /// The MCP endpoint.
        url: String,
    },
    /// One long-lived stdio process every session uses (`isolation: shared`), found by
    /// its instance id among the stdio instances the engine registered.
    Stdio,
    /// A process per client session (`isolation: per-session`), started on demand by
    /// the session pool registered under the instance id.
    StdioPerSession,
}

/// One instance of a server revision.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Instance {
    /// Unique within the server across all its revisions; sessions are pinned to it.
    pub id: String,
    /// How it is reached.
    #[serde(flatten)]
    pub address: Address,
}

impl Instance {
    /// An instance reached over Streamable HTTP at `url`.
    pub fn http(id: impl Into<String>, url: impl Into<String>) -> Self {
        Self {
            id: id.into(),
            address: Address::Http { url: url.into() },
        }
    }

    /// A shared stdio instance.
    pub fn stdio(id: impl Into<String>) -> Self {
        Self {
            id: id.into(),
            address: Address::Stdio,
        }
    }

    /// A per-session stdio instance.
    pub fn stdio_per_session(id: impl Into<String>) -> Self {
        Self {
            id: id.into(),
            address: Address::StdioPerSession,
        }
    }
}

/// One revision of a server in the table.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RevisionRoute {
    /// The revision number.
    pub revision: u64,
    /// Relative share of new sessions (and stateless modern requests).
    pub weight: u32,
    /// The revision's healthy instances.
    pub instances: Vec<Instance>,
}

/// Where every server's traffic goes; published on a `watch` channel and swapped
/// atomically as a whole.
///
/// In JSON (what the control plane publishes to gateway replicas through the state store)
/// `{"servers": {NAME: [revision, …]}}`; a table read back is validated as
/// [`RouteTable::new`] validates one, so a damaged or hand-edited document is refused with
/// every problem named, never routed by.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "Unchecked")]
pub struct RouteTable {
    servers: BTreeMap<String, Vec<RevisionRoute>>,
}

/// A [`RouteTable`] as read, before validation.
#[derive(Deserialize)]
struct Unchecked {
    servers: BTreeMap<String, Vec<RevisionRoute>>,
}

impl TryFrom<Unchecked> for RouteTable {
    type Error = String;

    fn try_from(unchecked: Unchecked) -> Result<Self, String> {
        RouteTable::new(unchecked.servers).map_err(|errors| {
            let said: Vec<String> = errors.iter().map(ToString::to_string).collect();
            format!("not a valid route table: {}", said.join("; "))
        })
    }
}

/// Why a [`RouteTable`] could not be built.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RouteTableError {
    /// A server name appears twice.
    #[error("server `{server}` is listed twice")]
    DuplicateServer {
        /// The server.
        server: String,
    },
    /// A server's revisions all have weight 0, so no new session could be placed.
    #[error("server `{server}`: the weights of its revisions add up to 0")]
    ZeroTotalWeight {
        /// The server.
        server: String,
    },
    /// A revision number appears twice for one server.
    #[error("server `{server}`: revision {revision} is listed twice")]
    DuplicateRevision {
        /// The server.
        server: String,
        /// The repeated revision.
        revision: u64,
    },
    /// Two instances of one server share an id (sessions are pinned by id).
    #[error("server `{server}`: instance id `{id}` is used twice")]
    DuplicateInstance {
        /// The server.
        server: String,
        /// The repeated instance id.
        id: String,
    },
    /// An HTTP upstream's URL is not an absolute `http://` or `https://` URL.
    // The URL stays out of the message: a remote server's URL may carry a secret.
    #[error(
        "server `{server}`, instance `{id}`: its URL is not an http:// or https:// URL ({reason})"
    )]
    BadUrl {
        /// The server.
        server: String,
        /// The instance id.
        id: String,
        /// The URL as given.
        url: String,
        /// What is wrong with it.
        reason: String,
    },
}

impl RouteTableError {
    /// The server the problem is in.
    pub fn server(&self) -> &str {
        match self {
            Self::DuplicateServer { server }
            | Self::ZeroTotalWeight { server }
            | Self::DuplicateRevision { server, .. }
            | Self::DuplicateInstance { server, .. }
            | Self::BadUrl { server, .. } => server,
        }
    }
}

impl RouteTable {
    /// A table with no servers.
    pub fn empty() -> Self {
        Self::default()
    }

    /// Validates and builds a table.
    ///
    /// A server may have no revisions (it is then not ready, `/readyz` says so), and
    /// revisions may have no instances; but when a server has revisions, their weights
    /// must not all be 0.
    ///
    /// # Errors
    /// Every problem found, not just the first: duplicate servers, revisions or
    /// instance ids, all-zero weights, URLs that are not absolute `http://` or
    /// `https://` URLs.
    pub fn new(
        servers: impl IntoIterator<Item = (String, Vec<RevisionRoute>)>,
    ) -> Result<Self, Vec<RouteTableError>> {
        let mut errors = Vec::new();
        let mut table = BTreeMap::new();
        for (server, revisions) in servers {
            validate_server(&server, &revisions, &mut errors);
            if table.contains_key(&server) {
                errors.push(RouteTableError::DuplicateServer { server });
                continue;
            }
            table.insert(server, revisions);
        }
        if errors.is_empty() {
            Ok(Self { servers: table })
        } else {
            Err(errors)
        }
    }

    /// The revisions of `server`, if the table has it.
    pub fn get(&self, server: &str) -> Option<&[RevisionRoute]> {
        self.servers.get(server).map(Vec::as_slice)
    }

    /// Every server with its revisions, by name.
    pub fn servers(&self) -> impl Iterator<Item = (&str, &[RevisionRoute])> {
        self.servers
            .iter()
            .map(|(name, revisions)| (name.as_str(), revisions.as_slice()))
    }
}

fn validate_server(server: &str, revisions: &[RevisionRoute], errors: &mut Vec<RouteTableError>) {
    if !revisions.is_empty() && revisions.iter().all(|r| r.weight == 0) {
        errors.push(RouteTableError::ZeroTotalWeight {
            server: server.to_owned(),
        });
    }
    let mut seen_revisions = HashSet::new();
    let mut seen_ids = HashSet::new();
    for revision in revisions {
        if !seen_revisions.insert(revision.revision) {
            errors.push(RouteTableError::DuplicateRevision {
                server: server.to_owned(),
                revision: revision.revision,
            });
        }
        for instance in &revision.instances {
            if !seen_ids.insert(instance.id.as_str()) {
                errors.push(RouteTableError::DuplicateInstance {
                    server: server.to_owned(),
                    id: instance.id.clone(),
                });
            }
            if let Address::Http { url } = &instance.address
                && let Err(reason) = parse_http_url(url)
            {
                errors.push(RouteTableError::BadUrl {
                    server: server.to_owned(),
                    id: instance.id.clone(),
                    url: url.clone(),
                    reason,
                });
            }
        }
    }
}

/// Parses an upstream URL into the URI requests are sent to.
pub fn parse_http_url(url: &str) -> Result<Uri, String> {
    let uri: Uri = url
        .parse()
        .map_err(|e: http::uri::InvalidUri| e.to_string())?;
    match uri.scheme_str() {
        Some("http" | "https") => {}
        Some(other) => return Err(format!("scheme `{other}` is not supported")),
        None => return Err("no scheme".to_owned()),
    }
    if uri.authority().is_none() {
        return Err("no host".to_owned());
    }
    Ok(uri)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn revision(revision: u64, weight: u32, ids: &[&str]) -> RevisionRoute {
        RevisionRoute {
            revision,
            weight,
            instances: ids
                .iter()
                .map(|id| Instance::http(*id, "http://127.0.0.1:1/mcp"))
                .collect(),
        }
    }

    #[test]
    fn every_problem_is_reported() {
        let errors = RouteTable::new([
            (
                "a".to_owned(),
                vec![revision(1, 0, &["x"]), revision(1, 0, &["x"])],
            ),
            (
                "b".to_owned(),
                vec![RevisionRoute {
                    revision: 1,
                    weight: 1,
                    instances: vec![Instance::http("y", "ftp://example.com/mcp")],
                }],
            ),
            ("b".to_owned(), vec![]),
        ])
        .unwrap_err();
        assert_eq!(errors.len(), 5, "{errors:?}");
        assert!(matches!(errors[0], RouteTableError::ZeroTotalWeight { .. }));
        assert!(matches!(
            errors[1],
            RouteTableError::DuplicateRevision { .. }
        ));
        assert!(matches!(
            errors[2],
            RouteTableError::DuplicateInstance { .. }
        ));
        assert!(matches!(errors[3], RouteTableError::BadUrl { .. }));
        assert!(matches!(errors[4], RouteTableError::DuplicateServer { .. }));
    }

    #[test]
    fn http_and_https_urls_are_accepted_and_nothing_else() {
        assert!(parse_http_url("http://127.0.0.1:8080/mcp").is_ok());
        assert!(parse_http_url("https://mcp.example.com/mcp").is_ok());
        assert_eq!(
            parse_http_url("ws://example.com/mcp").unwrap_err(),
            "scheme `ws` is not supported"
        );
        assert_eq!(parse_http_url("/mcp").unwrap_err(), "no scheme");
    }

    #[test]
    fn a_table_goes_through_json_unchanged_and_a_bad_one_is_refused_by_name() {
        let table = RouteTable::new([(
            "a".to_owned(),
            vec![
                revision(1, 0, &["x"]),
                RevisionRoute {
                    revision: 2,
                    weight: 100,
                    instances: vec![Instance::stdio("s"), Instance::stdio_per_session("p")],
                },
            ],
        )])
        .unwrap();
        let json = serde_json::to_value(&table).unwrap();
        assert_eq!(
            json["servers"]["a"][0]["instances"][0],
            serde_json::json!({ "id": "x", "kind": "http", "url": "http://127.0.0.1:1/mcp" })
        );
        assert_eq!(
            json["servers"]["a"][1]["instances"][1],
            serde_json::json!({ "id": "p", "kind": "stdio_per_session" })
        );
        let back: RouteTable = serde_json::from_value(json).unwrap();
        assert_eq!(back, table);

        let zero = serde_json::json!({ "servers": { "a": [
            { "revision": 1, "weight": 0, "instances": [
                { "id": "x", "kind": "http", "url": "ftp://h/mcp" }
            ] }
        ] } });
        let err = serde_json::from_value::<RouteTable>(zero)
            .unwrap_err()
            .to_string();
        assert!(err.contains("add up to 0"), "{err}");
        assert!(err.contains("instance `x`"), "{err}");
    }

    #[test]
    fn a_valid_table_keeps_its_routes() {
        let table = RouteTable::new([(
            "a".to_owned(),
            vec![revision(1, 0, &["x"]), revision(2, 100, &["y", "z"])],
        )])
        .unwrap();
        assert_eq!(table.get("a").unwrap().len(), 2);
        assert!(table.get("b").is_none());
        assert_eq!(table.servers().count(), 1);
    }
}
