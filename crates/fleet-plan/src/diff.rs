//! What differs between the deployed fleet and the desired one, server by server.
//!
//! A server is compared through its spec: the JSON the model serializes to, in which secrets
//! already read `***`, so a spec is safe to store, print and hash. The store keeps each
//! deployed server's spec and [`content_hash`]; equal hashes mean unchanged, and the spec says
//! which top-level fields changed. Reading and writing the store is not this module's business.

use crate::graph::DependencyGraph;
use crate::plan::PlannedDependency;
use fleet_spec::ValidFleet;
use fleet_spec::model::{Executable, Server};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::fmt;

/// How one server changes when the plan is applied.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Change {
    /// Not deployed yet.
    Create,
    /// Deployed with a different spec; `fields` are the top-level spec keys that differ.
    Update { fields: Vec<String> },
    /// Deployed with the same spec.
    Unchanged,
    /// Deployed, but no longer in the fleet.
    Delete,
}

impl Change {
    /// The one-character marker plans show: `+`, `~`, `-`, or a space when unchanged.
    pub fn marker(&self) -> char {
        match self {
            Change::Create => '+',
            Change::Update { .. } => '~',
            Change::Delete => '-',
            Change::Unchanged => ' ',
        }
    }
}

/// What is deployed, as the store records it: one [`DeployedServer`] per server, by name.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct DeployedFleet {
    servers: BTreeMap<String, DeployedServer>,
}

impl DeployedFleet {
    /// The record the store keeps once `fleet` is deployed.
    pub fn from_fleet(fleet: &ValidFleet) -> Self {
        fleet
            .servers
            .iter()
            .map(DeployedServer::from_server)
            .collect()
    }

    pub fn get(&self, name: &str) -> Option<&DeployedServer> {
        self.servers.get(name)
    }

    /// The deployed servers, by name.
    pub fn servers(&self) -> impl ExactSizeIterator<Item = &DeployedServer> {
        self.servers.values()
    }
}

impl FromIterator<DeployedServer> for DeployedFleet {
    /// Collects servers; a later server with the same name replaces an earlier one.
    fn from_iter<I: IntoIterator<Item = DeployedServer>>(servers: I) -> Self {
        let servers = servers.into_iter().map(|s| (s.name.clone(), s)).collect();
        DeployedFleet { servers }
    }
}

/// One deployed server: its name, spec and the spec's [`content_hash`].
#[derive(Debug, Clone, PartialEq)]
pub struct DeployedServer {
    pub name: String,
    pub hash: String,
    pub spec: Value,
}

impl DeployedServer {
    /// The record of `server` as it would be stored once deployed.
    pub fn from_server(server: &Server) -> Self {
        let spec = server_spec(server);
        DeployedServer {
            name: server.name.clone(),
            hash: content_hash(&spec),
            spec,
        }
    }

    /// The image this revision was pinned to, if it runs a pinned image.
    pub fn pinned_image(&self) -> Option<PinnedImage> {
        self.summary().pinned_image()
    }

    /// The parts of the spec a plan shows. Specs written by other versions may lack or mistype
    /// some fields; those read as empty rather than failing the plan.
    pub(crate) fn summary(&self) -> SpecSummary {
        serde_json::from_value(self.spec.clone()).unwrap_or_default()
    }
}

/// The fields of a stored spec a plan shows about a server it deletes.
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub(crate) struct SpecSummary {
    /// `{ "<kind>": { … } }`, as the model serializes its transport enum.
    transport: serde_json::Map<String, Value>,
    pub(crate) replicas: u32,
    pub(crate) priority: i32,
    pub(crate) depends_on: Vec<PlannedDependency>,
}

impl SpecSummary {
    /// The transport block's `image` and `digest`, when it has both.
    fn pinned_image(&self) -> Option<PinnedImage> {
        let block = self.transport.values().next()?;
        serde_json::from_value(block.clone()).ok()
    }

    pub(crate) fn transport(&self) -> &str {
        self.transport
            .keys()
            .next()
            .map_or("unknown", String::as_str)
    }
}

/// An image as a revision recorded it: the reference the file gave, and the exact image
/// it named then (see the model's `Executable::Image`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PinnedImage {
    pub image: String,
    pub digest: String,
}

/// Gives each image server of `fleet` that has no digest the one `deployed` recorded for
/// it, when both name the same image: a stored revision validated anew (its file's text
/// knows no digests) gets its pins back, and a plan that cannot ask an engine compares as
/// if no tag had moved.
pub fn keep_pins(fleet: &mut ValidFleet, deployed: &DeployedFleet) {
    for server in &mut fleet.servers {
        let Some(pinned) = deployed
            .get(&server.name)
            .and_then(DeployedServer::pinned_image)
        else {
            continue;
        };
        if let Some(Executable::Image {
            image,
            digest: digest @ None,
            ..
        }) = server.transport.executable_mut()
            && image.shown == pinned.image
        {
            *digest = Some(pinned.digest);
        }
    }
}

/// The tag of an unchanged image reference that now names other bytes than `deployed`
/// recorded: what a plan shows, since the file does not.
pub fn moved_image(
    desired: &DeployedServer,
    deployed: Option<&DeployedServer>,
) -> Option<MovedImage> {
    let now = desired.pinned_image()?;
    let was = deployed?.pinned_image()?;
    (now.image == was.image && now.digest != was.digest).then_some(MovedImage {
        image: now.image,
        digest: now.digest,
        was: was.digest,
    })
}

/// An image reference whose tag moved since it was deployed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct MovedImage {
    /// The reference, as the file writes it.
    pub image: String,
    /// What it names now.
    pub digest: String,
    /// What the deployed revision pinned.
    pub was: String,
}

/// The spec of a server: its model serialized to JSON, secrets shown as `***`.
pub fn server_spec(server: &Server) -> Value {
    // Every map in the model has string keys, which is all that can make this fail.
    serde_json::to_value(server).expect("a server model serializes to JSON")
}

/// A stable content hash of a spec: FNV-1a (64-bit) of its canonical JSON (object keys sorted,
/// no whitespace), as 16 lowercase hex digits. Independent of map ordering and of process, so
/// it can be stored and compared across versions of mcpfleet.
pub fn content_hash(spec: &Value) -> String {
    let mut hasher = Fnv1a64::default();
    // Writing into a hasher cannot fail.
    let _ = write_canonical(spec, &mut hasher);
    format!("{:016x}", hasher.0)
}

/// How `desired` changes against what is deployed under the same name.
pub fn compare(desired: &DeployedServer, deployed: Option<&DeployedServer>) -> Change {
    match deployed {
        None => Change::Create,
        Some(old) if old.hash == desired.hash => Change::Unchanged,
        Some(old) => Change::Update {
            fields: changed_fields(&old.spec, &desired.spec),
        },
    }
}

/// Deployed servers `desired` no longer has, dependents before the servers they depend on.
/// Only dependencies among the deleted servers order them; the rest keeps name order.
pub(crate) fn deleted<'a>(
    desired: &ValidFleet,
    deployed: &'a DeployedFleet,
) -> Vec<(&'a DeployedServer, SpecSummary)> {
    let kept: HashSet<&str> = desired.servers.iter().map(|s| s.name.as_str()).collect();
    let gone: Vec<(&DeployedServer, SpecSummary)> = deployed
        .servers()
        .filter(|s| !kept.contains(s.name.as_str()))
        .map(|s| (s, s.summary()))
        .collect();
    let index: HashMap<&str, usize> = gone
        .iter()
        .enumerate()
        .map(|(i, (s, _))| (s.name.as_str(), i))
        .collect();
    let index = &index;
    let edges = gone.iter().enumerate().flat_map(|(i, (_, summary))| {
        summary
            .depends_on
            .iter()
            .filter_map(move |d| Some((*index.get(d.server.as_str())?, i)))
    });
    let order: Vec<usize> = match DependencyGraph::from_edges(gone.len(), edges).waves() {
        Ok(waves) => waves.into_iter().rev().flatten().collect(),
        // What was deployed passed the cycle check, so this only guards a corrupt record.
        Err(_) => (0..gone.len()).collect(),
    };
    let mut gone: Vec<Option<(&DeployedServer, SpecSummary)>> =
        gone.into_iter().map(Some).collect();
    order.into_iter().filter_map(|i| gone[i].take()).collect()
}

/// The top-level keys whose values differ, sorted; empty when either spec is not an object.
fn changed_fields(old: &Value, new: &Value) -> Vec<String> {
    let (Some(old), Some(new)) = (old.as_object(), new.as_object()) else {
        return Vec::new();
    };
    let keys: BTreeSet<&String> = old.keys().chain(new.keys()).collect();
    keys.into_iter()
        .filter(|k| old.get(*k) != new.get(*k))
        .cloned()
        .collect()
}

/// Writes `value` as JSON with object keys sorted, whatever order the map keeps them in.
fn write_canonical(value: &Value, out: &mut impl fmt::Write) -> fmt::Result {
    match value {
        Value::Object(map) => {
            let mut entries: Vec<_> = map.iter().collect();
            entries.sort_by_key(|(k, _)| *k);
            out.write_char('{')?;
            for (i, (key, value)) in entries.into_iter().enumerate() {
                if i > 0 {
                    out.write_char(',')?;
                }
                write!(out, "{}:", Value::from(key.as_str()))?;
                write_canonical(value, out)?;
            }
            out.write_char('}')
        }
        Value::Array(items) => {
            out.write_char('[')?;
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.write_char(',')?;
                }
                write_canonical(item, out)?;
            }
            out.write_char(']')
        }
        scalar => write!(out, "{scalar}"),
    }
}

/// 64-bit FNV-1a, fed through `fmt::Write` so canonical JSON is hashed without being buffered.
#[derive(Debug)]
struct Fnv1a64(u64);

impl Default for Fnv1a64 {
    fn default() -> Self {
        Fnv1a64(0xcbf2_9ce4_8422_2325)
    }
}

impl fmt::Write for Fnv1a64 {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        for byte in s.bytes() {
            self.0 = (self.0 ^ u64::from(byte)).wrapping_mul(0x0000_0100_0000_01b3);
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::fleet;
    use serde_json::json;
    use std::fmt::Write as _;

    fn fnv(text: &str) -> u64 {
        let mut hasher = Fnv1a64::default();
        hasher.write_str(text).unwrap();
        hasher.0
    }

    #[test]
    fn fnv1a64_matches_the_reference_vectors() {
        assert_eq!(fnv(""), 0xcbf2_9ce4_8422_2325);
        assert_eq!(fnv("a"), 0xaf63_dc4c_8601_ec8c);
        assert_eq!(fnv("foobar"), 0x8594_4171_f739_67e8);
    }

    #[test]
    fn content_hash_ignores_key_order_but_not_values() {
        let a = json!({ "b": [1, { "y": "***", "x": 2.5 }], "a": null });
        let mut canonical = String::new();
        write_canonical(&a, &mut canonical).unwrap();
        assert_eq!(canonical, r#"{"a":null,"b":[1,{"x":2.5,"y":"***"}]}"#);
        assert_eq!(content_hash(&a), format!("{:016x}", fnv(&canonical)));
        assert_ne!(
            content_hash(&a),
            content_hash(&json!({ "b": [1, { "y": "***", "x": 3 }], "a": null }))
        );
    }

    #[test]
    fn specs_show_secrets_masked() {
        let fleet = fleet(
            r#"
secrets: { token: { env: FLEET_PLAN_TEST_UNSET_TOKEN } }
servers:
  github: { stdio: { command: gh, env: { TOKEN: "{{ secret('token') }}" } } }
"#,
        );
        let record = DeployedServer::from_server(&fleet.servers[0]);
        assert_eq!(record.spec["transport"]["stdio"]["env"]["TOKEN"], "***");
        assert_eq!(record.hash, content_hash(&record.spec));
    }

    #[test]
    fn compare_names_the_changed_fields() {
        let old =
            fleet("servers:\n  a: { stdio: { command: a } }\n  b: { stdio: { command: b } }\n");
        let new = fleet(
            "servers:\n  a: { stdio: { command: a } }\n  b: { stdio: { command: b2 }, replicas: 2 }\n",
        );
        let deployed = DeployedFleet::from_fleet(&old);
        let changes: Vec<Change> = new
            .servers
            .iter()
            .map(|s| compare(&DeployedServer::from_server(s), deployed.get(&s.name)))
            .collect();
        assert_eq!(
            changes,
            vec![
                Change::Unchanged,
                Change::Update {
                    fields: vec!["replicas".into(), "transport".into()]
                }
            ]
        );
        assert_eq!(
            compare(&DeployedServer::from_server(&new.servers[0]), None),
            Change::Create
        );
    }

    #[test]
    fn stdio_isolation_is_part_of_the_spec() {
        let old = fleet("servers:\n  a: { stdio: { command: a } }\n");
        let deployed = DeployedFleet::from_fleet(&old);
        for changed in ["isolation: shared", "max_sessions: 4", "idle_timeout: 5m"] {
            let new = fleet(&format!(
                "servers:\n  a: {{ stdio: {{ command: a, {changed} }} }}\n"
            ));
            assert_eq!(
                compare(
                    &DeployedServer::from_server(&new.servers[0]),
                    deployed.get("a")
                ),
                Change::Update {
                    fields: vec!["transport".into()]
                },
                "{changed}"
            );
        }
        let same =
            fleet("servers:\n  a: { stdio: { command: a, isolation: per-session, warm: 1 } }\n");
        assert_eq!(
            compare(
                &DeployedServer::from_server(&same.servers[0]),
                deployed.get("a")
            ),
            Change::Unchanged
        );
    }

    #[test]
    fn deletes_dependents_first() {
        let old = fleet(
            r#"
servers:
  keep: { stdio: { command: k } }
  base: { stdio: { command: b } }
  mid: { stdio: { command: m }, depends_on: [base, keep] }
  top: { stdio: { command: t }, depends_on: [mid] }
  alone: { stdio: { command: a } }
"#,
        );
        let new = fleet("servers:\n  keep: { stdio: { command: k } }\n");
        let deployed = DeployedFleet::from_fleet(&old);
        let names: Vec<&str> = deleted(&new, &deployed)
            .iter()
            .map(|(s, _)| s.name.as_str())
            .collect();
        assert_eq!(names, vec!["top", "mid", "alone", "base"]);
    }

    /// The fleet of one image server, pinned to `digest` when given.
    fn pinned(digest: Option<&str>) -> ValidFleet {
        let mut pinned = fleet("servers:\n  a: { stdio: { image: \"localhost/a:1\" } }\n");
        if let Some(Executable::Image { digest: pin, .. }) =
            pinned.servers[0].transport.executable_mut()
        {
            *pin = digest.map(str::to_owned);
        }
        pinned
    }

    #[test]
    fn a_tag_that_moved_is_a_change_the_plan_names() {
        let deployed =
            DeployedFleet::from_fleet(&pinned(Some("localhost/a@sha256:0123456789abcdef")));
        let now = DeployedServer::from_server(
            &pinned(Some("localhost/a@sha256:fedcba9876543210")).servers[0],
        );
        assert_eq!(
            compare(&now, deployed.get("a")),
            Change::Update {
                fields: vec!["transport".into()]
            }
        );
        let moved = moved_image(&now, deployed.get("a")).unwrap();
        assert_eq!(
            (
                moved.image.as_str(),
                moved.digest.as_str(),
                moved.was.as_str()
            ),
            (
                "localhost/a:1",
                "localhost/a@sha256:fedcba9876543210",
                "localhost/a@sha256:0123456789abcdef"
            )
        );
        let plan = crate::plan(
            &pinned(Some("localhost/a@sha256:fedcba9876543210")),
            Some(&deployed),
        )
        .unwrap();
        assert!(
            crate::render_text(&plan)
                .contains("(image localhost/a:1 now sha256:fedcba987654, was sha256:0123456789ab)"),
            "{}",
            crate::render_text(&plan)
        );
    }

    #[test]
    fn an_unpinned_server_keeps_the_deployed_pin_of_the_same_image_only() {
        let deployed = DeployedFleet::from_fleet(&pinned(Some("sha256:1d")));
        let mut unpinned = pinned(None);
        keep_pins(&mut unpinned, &deployed);
        assert_eq!(
            compare(
                &DeployedServer::from_server(&unpinned.servers[0]),
                deployed.get("a")
            ),
            Change::Unchanged
        );
        let mut other = fleet("servers:\n  a: { stdio: { image: \"localhost/a:2\" } }\n");
        keep_pins(&mut other, &deployed);
        assert_eq!(
            DeployedServer::from_server(&other.servers[0]).pinned_image(),
            None
        );
    }

    #[test]
    fn summaries_of_foreign_specs_do_not_fail() {
        let record = DeployedServer {
            name: "x".into(),
            hash: "0".into(),
            spec: json!({ "replicas": "two" }),
        };
        let summary = record.summary();
        assert_eq!((summary.transport(), summary.replicas), ("unknown", 0));
    }
}
