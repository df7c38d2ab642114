//! In-process request metrics per (server, revision): counters by method and outcome,
//! and a fixed-bucket latency histogram. `/metrics` renders them as Prometheus text
//! (names from DESIGN §7); canary analysis reads the same numbers through fleet-routes'
//! [`TrafficSource`], which the [`Gateway`](crate::Gateway) implements.
//!
//! What "outcome" means:
//! - `ok`: the upstream answered and, for a JSON body, it was not a JSON-RPC error;
//! - `jsonrpc_error`: a JSON response carrying `error`, or an HTTP status ≥ 400 from
//!   the upstream;
//! - `transport_error`: the upstream could not be reached, timed out, or broke the
//!   connection (also mid-way through an SSE response);
//! - `rejected`: the gateway refused the request itself (auth, limits, sessions,
//!   headers). Rejections are counted per server, with no revision.
//!
//! SSE responses are never parsed, so a JSON-RPC error inside an event stream counts
//! as `ok`; only its transport outcome is known. Latency is until the full body for
//! JSON responses and until the response head for SSE.
//!
//! Tool calls are counted by tool name, a label only for names the upstream accepted
//! (answered a call of with a result), at most 256 per server over all its revisions;
//! every other call counts under `(other tools)`.
//!
//! The hot path only touches atomics: the per-revision series is looked up when a
//! route table is compiled, not per request; a tool call's counter is found under a
//! read lock (shared, never waited on by other calls) and the write lock is taken only
//! the first time a tool name is seen.

use parking_lot::{Mutex, RwLock};
use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use fleet_routes::audit::ToolOutcome;
pub use fleet_routes::traffic::{Histogram, LATENCY_BUCKETS, OutcomeCounts};
use fleet_routes::traffic::{
    RevisionTraffic, ServerTraffic, TrafficSource, escape_label_value, write_histogram,
};

/// How a request ended (see the module docs).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Outcome {
    /// Answered, not an error.
    Ok,
    /// Answered with a JSON-RPC error (or an HTTP error status).
    JsonRpcError,
    /// The upstream failed at the transport level.
    TransportError,
    /// Refused by the gateway.
    Rejected,
}

impl Outcome {
    const ALL: [Self; 4] = [
        Self::Ok,
        Self::JsonRpcError,
        Self::TransportError,
        Self::Rejected,
    ];

    /// The Prometheus label value.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Ok => "ok",
            Self::JsonRpcError => "jsonrpc_error",
            Self::TransportError => "transport_error",
            Self::Rejected => "rejected",
        }
    }
}

/// Method labels: the MCP methods worth a series of their own, then catch-alls.
const METHODS: [&str; 21] = [
    "initialize",
    "ping",
    "tools/list",
    "tools/call",
    "resources/list",
    "resources/templates/list",
    "resources/read",
    "resources/subscribe",
    "resources/unsubscribe",
    "prompts/list",
    "prompts/get",
    "completion/complete",
    "logging/setLevel",
    "server/discover",
    "subscriptions/listen",
    // Catch-alls and non-POST requests.
    "notification",
    "response",
    "GET",
    "DELETE",
    "other",
    "unknown",
];

/// The label index of a request's method.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct MethodLabel(usize);

impl MethodLabel {
    pub(crate) const GET: Self = Self(17);
    pub(crate) const DELETE: Self = Self(18);
    /// Not read (the request was refused before its body was).
    pub(crate) const UNKNOWN: Self = Self(20);

    /// The label of a POST whose body had `method` (`None`: a response or batch).
    pub(crate) fn of(method: Option<&str>) -> Self {
        match method {
            None => Self(16),
            Some(m) if m.starts_with("notifications/") => Self(15),
            Some(m) => Self(METHODS[..15].iter().position(|k| *k == m).unwrap_or(19)),
        }
    }
}

/// Distinct tool names a server's series label, over all its revisions; calls of any
/// other tool are counted under [`OTHER_TOOLS`]. Tool names come from clients, and a
/// label set must stay bounded.
const MAX_TOOLS: usize = 256;

/// The `tool` label of calls whose tool has no series of its own: past [`MAX_TOOLS`],
/// or never accepted by the upstream. Its space keeps it apart from every tool name
/// the gateway forwards (see `jsonrpc::is_bounded_name`).
pub(crate) const OTHER_TOOLS: &str = "(other tools)";

/// The tool names a server's series may label, shared by all its revisions. A name
/// gets in only when the upstream accepted a call of it (it answered with a result):
/// unknown tools, however many, mint no label.
#[derive(Debug, Default)]
struct ToolNames {
    names: RwLock<BTreeSet<String>>,
}

impl ToolNames {
    /// Whether calls of `tool` are labelled with its name; `accepted`: this call was
    /// answered with a result, so the tool exists.
    fn labels(&self, tool: &str, accepted: bool) -> bool {
        if self.names.read().contains(tool) {
            return true;
        }
        let mut names = self.names.write();
        names.contains(tool)
            || (accepted && names.len() < MAX_TOOLS && names.insert(tool.to_owned()))
    }
}

/// One tool's calls by [`ToolOutcome`].
type ToolCounts = Arc<[AtomicU64; 4]>;

/// The live counters of one (server, revision).
#[derive(Debug)]
pub(crate) struct SeriesCounters {
    requests: [[AtomicU64; 4]; METHODS.len()],
    buckets: [AtomicU64; LATENCY_BUCKETS.len() + 1],
    sum_micros: AtomicU64,
    /// Tool calls by tool and [`ToolOutcome`].
    tools: RwLock<BTreeMap<String, ToolCounts>>,
    /// The server's labelled tool names (shared with its other revisions).
    tool_names: Arc<ToolNames>,
}

impl SeriesCounters {
    fn new(tool_names: Arc<ToolNames>) -> Self {
        Self {
            requests: std::array::from_fn(|_| std::array::from_fn(|_| AtomicU64::new(0))),
            buckets: std::array::from_fn(|_| AtomicU64::new(0)),
            sum_micros: AtomicU64::new(0),
            tools: RwLock::default(),
            tool_names,
        }
    }

    /// Counts one tool call.
    pub(crate) fn record_tool(&self, tool: &str, outcome: ToolOutcome) {
        let index = ToolOutcome::ALL
            .iter()
            .position(|o| *o == outcome)
            .unwrap_or(0);
        let accepted = matches!(outcome, ToolOutcome::Ok | ToolOutcome::ToolError);
        let key = if self.tool_names.labels(tool, accepted) {
            tool
        } else {
            OTHER_TOOLS
        };
        let known = self.tools.read().get(key).cloned();
        let counts = known.unwrap_or_else(|| {
            let mut tools = self.tools.write();
            Arc::clone(tools.entry(key.to_owned()).or_default())
        });
        counts[index].fetch_add(1, Ordering::Relaxed);
    }

    /// Counts one request; `latency` is `None` for rejections (not timed).
    pub(crate) fn record(&self, method: MethodLabel, outcome: Outcome, latency: Option<Duration>) {
        let outcome_index = Outcome::ALL.iter().position(|o| *o == outcome).unwrap_or(0);
        self.requests[method.0][outcome_index].fetch_add(1, Ordering::Relaxed);
        if let Some(latency) = latency {
            self.buckets[Histogram::bucket_of(latency.as_secs_f64())]
                .fetch_add(1, Ordering::Relaxed);
            let micros = u64::try_from(latency.as_micros()).unwrap_or(u64::MAX);
            self.sum_micros.fetch_add(micros, Ordering::Relaxed);
        }
    }
}

/// (server, revision); `None` = the server's rejections.
type SeriesKey = (String, Option<u64>);

/// All series, created on first use and kept for the gateway's life (counters are
/// cumulative, as Prometheus expects).
#[derive(Debug, Default)]
pub(crate) struct Registry {
    series: Mutex<BTreeMap<SeriesKey, Arc<SeriesCounters>>>,
    /// Per server: the tool names its series label.
    tool_names: Mutex<BTreeMap<String, Arc<ToolNames>>>,
}

impl Registry {
    pub(crate) fn series(&self, server: &str, revision: Option<u64>) -> Arc<SeriesCounters> {
        let mut series = self.series.lock();
        series
            .entry((server.to_owned(), revision))
            .or_insert_with(|| {
                let mut tool_names = self.tool_names.lock();
                let names = tool_names.entry(server.to_owned()).or_default();
                Arc::new(SeriesCounters::new(Arc::clone(names)))
            })
            .clone()
    }

    /// The counters of `server`'s revisions, as canary analysis reads them.
    fn traffic(&self, server: &str) -> ServerTraffic {
        let series = self.series.lock();
        let revisions = series
            .iter()
            .filter(|((name, _), _)| name == server)
            .filter_map(|((name, revision), counters)| {
                let revision = (*revision)?;
                Some((
                    revision,
                    RevisionStats::read(name, Some(revision), counters).traffic(),
                ))
            })
            .collect();
        ServerTraffic { revisions }
    }

    pub(crate) fn snapshot(&self, sessions_active: BTreeMap<String, u64>) -> MetricsSnapshot {
        let series = self.series.lock();
        let revisions = series
            .iter()
            .map(|((server, revision), counters)| RevisionStats::read(server, *revision, counters))
            .collect();
        MetricsSnapshot {
            revisions,
            sessions_active,
        }
    }
}

/// A point-in-time copy of every counter.
#[derive(Debug, Clone, PartialEq)]
pub struct MetricsSnapshot {
    /// One entry per (server, revision) seen, by server then revision; rejections
    /// have `revision: None`.
    pub revisions: Vec<RevisionStats>,
    /// Live legacy sessions per server (servers without sessions may be absent).
    pub sessions_active: BTreeMap<String, u64>,
}

/// The counters of one (server, revision).
#[derive(Debug, Clone, PartialEq)]
pub struct RevisionStats {
    /// The server.
    pub server: String,
    /// The revision; `None` for requests the gateway rejected.
    pub revision: Option<u64>,
    /// Non-zero counts by method label and outcome.
    pub requests: Vec<MethodCount>,
    /// Totals by outcome over all methods.
    pub totals: OutcomeCounts,
    /// Latency of answered requests.
    pub latency: Histogram,
    /// Non-zero tool call counts by tool and outcome.
    pub tool_calls: Vec<ToolCount>,
}

/// One non-zero tool call counter.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ToolCount {
    /// The tool's name, or `(other tools)`: calls of tools the upstream never answered
    /// with a result, and of names past the server's first 256.
    pub tool: String,
    /// How the calls ended.
    pub outcome: ToolOutcome,
    /// How many.
    pub count: u64,
}

/// One non-zero request counter.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MethodCount {
    /// The method label (an MCP method, or `notification`, `response`, `GET`,
    /// `DELETE`, `other`, `unknown`).
    pub method: &'static str,
    /// The outcome.
    pub outcome: Outcome,
    /// How many.
    pub count: u64,
}

impl TrafficSource for crate::Gateway {
    fn traffic(&self, server: &str) -> ServerTraffic {
        self.shared.registry.traffic(server)
    }
}

impl RevisionStats {
    /// What canary analysis reads of these counters.
    pub fn traffic(&self) -> RevisionTraffic {
        RevisionTraffic {
            totals: self.totals,
            tool_errors: self
                .tool_calls
                .iter()
                .filter(|t| t.outcome == ToolOutcome::ToolError)
                .map(|t| t.count)
                .sum(),
            latency: self.latency.clone(),
        }
    }

    fn read(server: &str, revision: Option<u64>, counters: &SeriesCounters) -> Self {
        let mut requests = Vec::new();
        let mut totals = OutcomeCounts::default();
        for (method_index, by_outcome) in counters.requests.iter().enumerate() {
            for (outcome, counter) in Outcome::ALL.iter().zip(by_outcome) {
                let count = counter.load(Ordering::Relaxed);
                if count > 0 {
                    count_outcome(&mut totals, *outcome, count);
                    requests.push(MethodCount {
                        method: METHODS[method_index],
                        outcome: *outcome,
                        count,
                    });
                }
            }
        }
        #[allow(clippy::cast_precision_loss)]
        let sum_seconds = counters.sum_micros.load(Ordering::Relaxed) as f64 / 1e6;
        let tool_calls = counters
            .tools
            .read()
            .iter()
            .flat_map(|(tool, counts)| {
                ToolOutcome::ALL
                    .iter()
                    .zip(counts.iter())
                    .map(|(outcome, count)| (outcome, count.load(Ordering::Relaxed)))
                    .filter(|(_, count)| *count > 0)
                    .map(|(outcome, count)| ToolCount {
                        tool: tool.clone(),
                        outcome: *outcome,
                        count,
                    })
            })
            .collect();
        Self {
            tool_calls,
            server: server.to_owned(),
            revision,
            requests,
            totals,
            latency: Histogram {
                counts: counters
                    .buckets
                    .iter()
                    .map(|b| b.load(Ordering::Relaxed))
                    .collect(),
                sum_seconds,
            },
        }
    }
}

impl MetricsSnapshot {
    /// The counters of `server` at `revision` (`None`: its rejections).
    pub fn revision(&self, server: &str, revision: Option<u64>) -> Option<&RevisionStats> {
        self.revisions
            .iter()
            .find(|r| r.server == server && r.revision == revision)
    }

    /// Prometheus text exposition format (version 0.0.4).
    pub fn prometheus_text(&self) -> String {
        let mut out = String::with_capacity(4096);
        out.push_str("# HELP mcpfleet_gateway_requests_total Requests through the gateway by server, revision, method and outcome.\n");
        out.push_str("# TYPE mcpfleet_gateway_requests_total counter\n");
        for stats in &self.revisions {
            let revision = revision_label(stats.revision);
            for count in &stats.requests {
                let _ = writeln!(
                    out,
                    "mcpfleet_gateway_requests_total{{server=\"{}\",revision=\"{revision}\",method=\"{}\",outcome=\"{}\"}} {}",
                    escape_label_value(&stats.server),
                    count.method,
                    count.outcome.as_str(),
                    count.count
                );
            }
        }
        out.push_str("# HELP mcpfleet_gateway_request_duration_seconds Latency of answered requests (JSON: full body; SSE: response head).\n");
        out.push_str("# TYPE mcpfleet_gateway_request_duration_seconds histogram\n");
        for stats in self.revisions.iter().filter(|s| s.revision.is_some()) {
            let labels = format!(
                "server=\"{}\",revision=\"{}\"",
                escape_label_value(&stats.server),
                revision_label(stats.revision)
            );
            write_histogram(
                &mut out,
                "mcpfleet_gateway_request_duration_seconds",
                &labels,
                &LATENCY_BUCKETS,
                &stats.latency.counts,
                stats.latency.sum_seconds,
            );
        }
        out.push_str("# HELP mcpfleet_gateway_tool_calls_total Tool calls by server, revision, tool and outcome.\n");
        out.push_str("# TYPE mcpfleet_gateway_tool_calls_total counter\n");
        for stats in &self.revisions {
            let revision = revision_label(stats.revision);
            for count in &stats.tool_calls {
                let _ = writeln!(
                    out,
                    "mcpfleet_gateway_tool_calls_total{{server=\"{}\",revision=\"{revision}\",tool=\"{}\",outcome=\"{}\"}} {}",
                    escape_label_value(&stats.server),
                    escape_label_value(&count.tool),
                    count.outcome.as_str(),
                    count.count
                );
            }
        }
        out.push_str("# HELP mcpfleet_gateway_sessions_active Live client sessions per server.\n");
        out.push_str("# TYPE mcpfleet_gateway_sessions_active gauge\n");
        for (server, count) in &self.sessions_active {
            let _ = writeln!(
                out,
                "mcpfleet_gateway_sessions_active{{server=\"{}\"}} {count}",
                escape_label_value(server)
            );
        }
        out
    }
}

fn revision_label(revision: Option<u64>) -> String {
    revision.map_or_else(|| "none".to_owned(), |r| r.to_string())
}

/// Adds `count` requests that ended in `outcome` to `totals`.
fn count_outcome(totals: &mut OutcomeCounts, outcome: Outcome, count: u64) {
    match outcome {
        Outcome::Ok => totals.ok += count,
        Outcome::JsonRpcError => totals.jsonrpc_error += count,
        Outcome::TransportError => totals.transport_error += count,
        Outcome::Rejected => totals.rejected += count,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_and_renders() {
        let registry = Registry::default();
        let series = registry.series("a", Some(2));
        series.record(
            MethodLabel::of(Some("tools/call")),
            Outcome::Ok,
            Some(Duration::from_millis(3)),
        );
        series.record(
            MethodLabel::of(Some("tools/call")),
            Outcome::JsonRpcError,
            Some(Duration::from_millis(30)),
        );
        series.record(
            MethodLabel::of(Some("notifications/initialized")),
            Outcome::Ok,
            Some(Duration::from_micros(10)),
        );
        registry
            .series("a", None)
            .record(MethodLabel::UNKNOWN, Outcome::Rejected, None);
        let snapshot = registry.snapshot(BTreeMap::from([("a".to_owned(), 3)]));
        let stats = snapshot.revision("a", Some(2)).unwrap();
        assert_eq!(stats.totals.ok, 2);
        assert_eq!(stats.totals.jsonrpc_error, 1);
        assert_eq!(stats.totals.error_rate(), Some(1.0 / 3.0));
        assert_eq!(stats.latency.count(), 3);
        assert_eq!(stats.latency.quantile(0.5), Some(0.005));
        assert_eq!(stats.latency.quantile(1.0), Some(0.05));
        assert_eq!(snapshot.revision("a", None).unwrap().totals.rejected, 1);
        let text = snapshot.prometheus_text();
        assert!(text.contains("mcpfleet_gateway_requests_total{server=\"a\",revision=\"2\",method=\"tools/call\",outcome=\"jsonrpc_error\"} 1"), "{text}");
        assert!(text.contains("mcpfleet_gateway_requests_total{server=\"a\",revision=\"none\",method=\"unknown\",outcome=\"rejected\"} 1"), "{text}");
        assert!(text.contains("mcpfleet_gateway_request_duration_seconds_bucket{server=\"a\",revision=\"2\",le=\"+Inf\"} 3"), "{text}");
        assert!(
            text.contains("mcpfleet_gateway_sessions_active{server=\"a\"} 3"),
            "{text}"
        );
    }

    #[test]
    fn a_server_labels_at_most_max_tools_names_over_all_its_revisions() {
        let registry = Registry::default();
        for revision in 1..=3 {
            let series = registry.series("a", Some(revision));
            for n in 0..MAX_TOOLS {
                series.record_tool(&format!("r{revision}-tool-{n}"), ToolOutcome::Ok);
            }
            series.record_tool("unknown", ToolOutcome::JsonRpcError);
        }
        registry
            .series("b", Some(1))
            .record_tool("b-tool", ToolOutcome::ToolError);
        let snapshot = registry.snapshot(BTreeMap::new());
        let labels = |server: &str| {
            snapshot
                .revisions
                .iter()
                .filter(|r| r.server == server)
                .flat_map(|r| r.tool_calls.iter().map(|t| t.tool.clone()))
                .collect::<BTreeSet<_>>()
        };
        assert_eq!(labels("a").len(), MAX_TOOLS + 1);
        assert!(labels("a").contains(OTHER_TOOLS));
        assert!(!labels("a").contains("unknown"));
        assert_eq!(labels("b"), BTreeSet::from(["b-tool".to_owned()]));
        let other = snapshot
            .revision("a", Some(3))
            .unwrap()
            .tool_calls
            .iter()
            .filter(|t| t.tool == OTHER_TOOLS)
            .map(|t| t.count)
            .sum::<u64>();
        assert_eq!(other, MAX_TOOLS as u64 + 1);
    }

    #[test]
    fn the_traffic_of_a_server_is_its_revisions_counters_without_rejections() {
        let registry = Registry::default();
        let canary = registry.series("a", Some(2));
        canary.record(
            MethodLabel::of(Some("tools/call")),
            Outcome::Ok,
            Some(Duration::from_millis(3)),
        );
        canary.record_tool("echo", ToolOutcome::ToolError);
        canary.record(
            MethodLabel::of(Some("tools/call")),
            Outcome::TransportError,
            Some(Duration::from_millis(40)),
        );
        registry
            .series("a", None)
            .record(MethodLabel::UNKNOWN, Outcome::Rejected, None);
        registry
            .series("b", Some(2))
            .record(MethodLabel::GET, Outcome::Ok, None);

        let traffic = registry.traffic("a");

        assert_eq!(traffic.revisions.keys().copied().collect::<Vec<_>>(), [2]);
        let revision = traffic.revision(2).unwrap();
        assert_eq!(
            revision.totals,
            OutcomeCounts {
                ok: 1,
                transport_error: 1,
                ..OutcomeCounts::default()
            }
        );
        assert_eq!(revision.tool_errors, 1);
        assert_eq!(revision.latency.count(), 2);
        assert_eq!(revision.latency.quantile(1.0), Some(0.05));
    }

    #[test]
    fn method_labels() {
        assert_eq!(METHODS[MethodLabel::of(Some("tools/call")).0], "tools/call");
        assert_eq!(
            METHODS[MethodLabel::of(Some("notifications/cancelled")).0],
            "notification"
        );
        assert_eq!(METHODS[MethodLabel::of(None).0], "response");
        assert_eq!(METHODS[MethodLabel::of(Some("x/y")).0], "other");
        assert_eq!(METHODS[MethodLabel::GET.0], "GET");
        assert_eq!(METHODS[MethodLabel::DELETE.0], "DELETE");
        assert_eq!(METHODS[MethodLabel::UNKNOWN.0], "unknown");
    }
}
