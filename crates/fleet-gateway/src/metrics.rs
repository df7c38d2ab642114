//! In-process request metrics per (server, revision): counters by method and outcome,
//! and a fixed-bucket latency histogram. [`GatewayMetrics`] is their prometheus-client
//! collector (names from DESIGN §7; the control plane's registry serves it at `/metrics`);
//! canary analysis reads the same numbers through fleet-routes' [`TrafficSource`], which
//! the [`Gateway`](crate::Gateway) implements.
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
//! Latency observations carry an exemplar in the OpenMetrics exposition: the trace id of
//! the request ([`TraceId`]), when it has one.
//!
//! The hot path touches atomics, and one lock per (server, revision): the per-revision
//! series is looked up when a route table is compiled, not per request; a tool call's
//! counter is found under a read lock (shared, never waited on by other calls) and the
//! write lock is taken only the first time a tool name is seen. The exposed latency
//! histogram is prometheus-client's [`HistogramWithExemplars`]: it is the only way that
//! crate takes an exemplar (its `Exemplar` has no public constructor), it locks for each
//! observation (held for well under a microsecond; 50 to 160 ns more per request in a
//! micro benchmark, more with a trace id) and its buckets cannot be read back, so canary
//! analysis keeps reading its own atomic buckets beside it.

use parking_lot::{Mutex, RwLock};
use prometheus_client::collector::Collector;
use prometheus_client::encoding::{
    DescriptorEncoder, EncodeLabelValue, EncodeMetric as _, LabelValueEncoder, NoLabelSet,
};
use prometheus_client::metrics::MetricType;
use prometheus_client::metrics::exemplar::HistogramWithExemplars;
use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use fleet_routes::audit::ToolOutcome;
pub use fleet_routes::traffic::{Histogram, LATENCY_BUCKETS, OutcomeCounts};
use fleet_routes::traffic::{RevisionTraffic, ServerTraffic, TrafficSource};

use crate::trace_context::TraceId;

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

    /// The label's text: an MCP method, or a catch-all (`notification`, `GET`, ...).
    pub(crate) fn as_str(self) -> &'static str {
        METHODS[self.0]
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

/// The exemplar of a latency observation: `trace_id="<32 hex digits>"`. A copied array,
/// so recording one allocates nothing.
type TraceExemplar = [(&'static str, TraceId); 1];

impl EncodeLabelValue for TraceId {
    fn encode(&self, encoder: &mut LabelValueEncoder) -> std::fmt::Result {
        write!(encoder, "{self}")
    }
}

/// The live counters of one (server, revision).
#[derive(Debug)]
pub(crate) struct SeriesCounters {
    requests: [[AtomicU64; 4]; METHODS.len()],
    buckets: [AtomicU64; LATENCY_BUCKETS.len() + 1],
    sum_micros: AtomicU64,
    /// The same latencies as exposed, with exemplars (see the module docs).
    latency: HistogramWithExemplars<TraceExemplar>,
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
            latency: HistogramWithExemplars::new(LATENCY_BUCKETS.into_iter()),
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

    /// Counts one request; `latency` is `None` for what is not timed (rejections, an
    /// answer relayed without waiting on an upstream). `trace_id`, the trace the request
    /// belongs to, becomes the exemplar of its latency bucket.
    pub(crate) fn observe_request(
        &self,
        method: MethodLabel,
        outcome: Outcome,
        latency: Option<Duration>,
        trace_id: Option<TraceId>,
    ) {
        let outcome_index = Outcome::ALL.iter().position(|o| *o == outcome).unwrap_or(0);
        self.requests[method.0][outcome_index].fetch_add(1, Ordering::Relaxed);
        if let Some(latency) = latency {
            let seconds = latency.as_secs_f64();
            self.buckets[Histogram::bucket_of(seconds)].fetch_add(1, Ordering::Relaxed);
            let micros = u64::try_from(latency.as_micros()).unwrap_or(u64::MAX);
            self.sum_micros.fetch_add(micros, Ordering::Relaxed);
            self.latency
                .observe(seconds, trace_id.map(|id| [("trace_id", id)]), None);
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
        self.traffic_of(|name| name == server)
            .remove(server)
            .unwrap_or_default()
    }

    /// The counters of every server's revisions, by server.
    pub(crate) fn all_traffic(&self) -> BTreeMap<String, ServerTraffic> {
        self.traffic_of(|_| true)
    }

    /// The counters of the revisions of the servers `wanted` picks, by server.
    fn traffic_of(&self, wanted: impl Fn(&str) -> bool) -> BTreeMap<String, ServerTraffic> {
        let series = self.series.lock();
        let mut servers: BTreeMap<String, ServerTraffic> = BTreeMap::new();
        for ((name, revision), counters) in series.iter().filter(|((name, _), _)| wanted(name)) {
            if let Some(revision) = *revision {
                servers.entry(name.clone()).or_default().revisions.insert(
                    revision,
                    RevisionStats::read(name, Some(revision), counters).traffic(),
                );
            }
        }
        servers
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

/// This gateway's counters and, at a home, its replicas' latest reports.
impl TrafficSource for crate::Gateway {
    fn traffic(&self, server: &str) -> ServerTraffic {
        let mut traffic = self.shared.registry.traffic(server);
        self.shared.reports.add_to(server, &mut traffic);
        traffic
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
}

/// The gateway's metric families, read at each scrape of the registry it is registered
/// with: `mcpfleet_gateway_requests_total`, `mcpfleet_gateway_request_duration_seconds`
/// (with exemplars in OpenMetrics), `mcpfleet_gateway_tool_calls_total` and
/// `mcpfleet_gateway_sessions_active`.
#[derive(Debug, Clone)]
pub struct GatewayMetrics {
    pub(crate) gateway: crate::Gateway,
}

impl Collector for GatewayMetrics {
    fn encode(&self, encoder: DescriptorEncoder) -> std::fmt::Result {
        let shared = &self.gateway.shared;
        shared
            .registry
            .encode(&shared.sessions.active_per_server(), encoder)
    }
}

impl Registry {
    /// Writes every family (see [`GatewayMetrics`]).
    fn encode(
        &self,
        sessions_active: &BTreeMap<String, u64>,
        mut encoder: DescriptorEncoder,
    ) -> std::fmt::Result {
        // Copied out so that no scrape holds the lock while it writes.
        let series: Vec<_> = self
            .series
            .lock()
            .iter()
            .map(|((server, revision), counters)| {
                let stats = RevisionStats::read(server, *revision, counters);
                (stats, Arc::clone(counters))
            })
            .collect();
        {
            let mut family = encoder.encode_descriptor(
                "mcpfleet_gateway_requests",
                "Requests through the gateway by server, revision, method and outcome.",
                None,
                MetricType::Counter,
            )?;
            for (stats, _) in &series {
                let revision = revision_label(stats.revision);
                for count in &stats.requests {
                    let labels = [
                        ("server", stats.server.as_str()),
                        ("revision", &revision),
                        ("method", count.method),
                        ("outcome", count.outcome.as_str()),
                    ];
                    family
                        .encode_family(&labels)?
                        .encode_counter::<NoLabelSet, _, u64>(&count.count, None)?;
                }
            }
        }
        {
            let mut family = encoder.encode_descriptor(
                "mcpfleet_gateway_request_duration_seconds",
                "Latency of answered requests (JSON: full body; SSE: response head).",
                None,
                MetricType::Histogram,
            )?;
            for (stats, counters) in series.iter().filter(|(s, _)| s.revision.is_some()) {
                let revision = revision_label(stats.revision);
                let labels = [("server", stats.server.as_str()), ("revision", &revision)];
                counters.latency.encode(family.encode_family(&labels)?)?;
            }
        }
        {
            let mut family = encoder.encode_descriptor(
                "mcpfleet_gateway_tool_calls",
                "Tool calls by server, revision, tool and outcome.",
                None,
                MetricType::Counter,
            )?;
            for (stats, _) in &series {
                let revision = revision_label(stats.revision);
                for count in &stats.tool_calls {
                    let labels = [
                        ("server", stats.server.as_str()),
                        ("revision", &revision),
                        ("tool", &count.tool),
                        ("outcome", count.outcome.as_str()),
                    ];
                    family
                        .encode_family(&labels)?
                        .encode_counter::<NoLabelSet, _, u64>(&count.count, None)?;
                }
            }
        }
        let mut family = encoder.encode_descriptor(
            "mcpfleet_gateway_sessions_active",
            "Live client sessions per server.",
            None,
            MetricType::Gauge,
        )?;
        for (server, count) in sessions_active {
            family
                .encode_family(&[("server", server.as_str())])?
                .encode_gauge(count)?;
        }
        Ok(())
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
    use prometheus_client::encoding::{prometheus_text, text};

    /// A registry's families with fixed live sessions, as a collector.
    #[derive(Debug)]
    struct Families(Arc<Registry>, BTreeMap<String, u64>);

    impl Collector for Families {
        fn encode(&self, encoder: DescriptorEncoder) -> std::fmt::Result {
            self.0.encode(&self.1, encoder)
        }
    }

    /// `registry`'s exposition: OpenMetrics, or else the Prometheus text format.
    fn exposition(
        registry: &Arc<Registry>,
        sessions: BTreeMap<String, u64>,
        openmetrics: bool,
    ) -> String {
        let mut families = prometheus_client::registry::Registry::default();
        families.register_collector(Box::new(Families(Arc::clone(registry), sessions)));
        let mut out = String::new();
        if openmetrics {
            text::encode(&mut out, &families).unwrap();
        } else {
            prometheus_text::encode(&mut out, &families).unwrap();
        }
        out
    }

    #[test]
    fn counts_and_renders() {
        let registry = Arc::new(Registry::default());
        let series = registry.series("a", Some(2));
        series.observe_request(
            MethodLabel::of(Some("tools/call")),
            Outcome::Ok,
            Some(Duration::from_millis(3)),
            None,
        );
        series.observe_request(
            MethodLabel::of(Some("tools/call")),
            Outcome::JsonRpcError,
            Some(Duration::from_millis(30)),
            None,
        );
        series.observe_request(
            MethodLabel::of(Some("notifications/initialized")),
            Outcome::Ok,
            Some(Duration::from_micros(10)),
            None,
        );
        registry.series("a", None).observe_request(
            MethodLabel::UNKNOWN,
            Outcome::Rejected,
            None,
            None,
        );
        let sessions = BTreeMap::from([("a".to_owned(), 3)]);
        let snapshot = registry.snapshot(sessions.clone());
        let stats = snapshot.revision("a", Some(2)).unwrap();
        assert_eq!(stats.totals.ok, 2);
        assert_eq!(stats.totals.jsonrpc_error, 1);
        assert_eq!(stats.totals.error_rate(), Some(1.0 / 3.0));
        assert_eq!(stats.latency.count(), 3);
        assert_eq!(stats.latency.quantile(0.5), Some(0.005));
        assert_eq!(stats.latency.quantile(1.0), Some(0.05));
        assert_eq!(snapshot.revision("a", None).unwrap().totals.rejected, 1);
        let text = exposition(&registry, sessions, false);
        assert!(
            text.contains("# TYPE mcpfleet_gateway_requests_total counter\n"),
            "{text}"
        );
        assert!(text.contains("mcpfleet_gateway_requests_total{server=\"a\",revision=\"2\",method=\"tools/call\",outcome=\"jsonrpc_error\"} 1"), "{text}");
        assert!(text.contains("mcpfleet_gateway_requests_total{server=\"a\",revision=\"none\",method=\"unknown\",outcome=\"rejected\"} 1"), "{text}");
        assert!(text.contains("mcpfleet_gateway_request_duration_seconds_bucket{server=\"a\",revision=\"2\",le=\"+Inf\"} 3"), "{text}");
        assert!(
            text.contains("mcpfleet_gateway_sessions_active{server=\"a\"} 3"),
            "{text}"
        );
    }

    #[test]
    fn a_latency_keeps_the_trace_id_of_its_request_as_exemplar_in_openmetrics_only() {
        let registry = Arc::new(Registry::default());
        let traced = crate::trace_context::TraceParent::parse(
            b"00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
        )
        .map(|parent| parent.trace_id);
        let series = registry.series("a", Some(1));
        series.observe_request(
            MethodLabel::of(Some("tools/call")),
            Outcome::Ok,
            Some(Duration::from_millis(3)),
            traced,
        );
        series.observe_request(
            MethodLabel::of(Some("tools/call")),
            Outcome::Ok,
            Some(Duration::from_millis(40)),
            None,
        );

        let openmetrics = exposition(&registry, BTreeMap::new(), true);
        let plain = exposition(&registry, BTreeMap::new(), false);

        // OpenMetrics puts `le` first.
        let traced = concat!(
            r#"mcpfleet_gateway_request_duration_seconds_bucket{le="0.005",server="a",revision="1"} 1"#,
            r#" # {trace_id="4bf92f3577b34da6a3ce929d0e0e4736"} 0.003"#
        );
        assert!(openmetrics.lines().any(|l| l == traced), "{openmetrics}");
        assert!(
            openmetrics.lines().any(|l| l
                == r#"mcpfleet_gateway_request_duration_seconds_bucket{le="0.05",server="a",revision="1"} 2"#),
            "an untraced request has no exemplar:\n{openmetrics}"
        );
        assert!(openmetrics.ends_with("# EOF\n"), "{openmetrics}");
        let bucket = r#"mcpfleet_gateway_request_duration_seconds_bucket{server="a",revision="1",le="0.005"} 1"#;
        assert!(plain.lines().any(|l| l == bucket), "{plain}");
        assert!(!plain.contains("trace_id"), "{plain}");
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
        canary.observe_request(
            MethodLabel::of(Some("tools/call")),
            Outcome::Ok,
            Some(Duration::from_millis(3)),
            None,
        );
        canary.record_tool("echo", ToolOutcome::ToolError);
        canary.observe_request(
            MethodLabel::of(Some("tools/call")),
            Outcome::TransportError,
            Some(Duration::from_millis(40)),
            None,
        );
        registry.series("a", None).observe_request(
            MethodLabel::UNKNOWN,
            Outcome::Rejected,
            None,
            None,
        );
        registry
            .series("b", Some(2))
            .observe_request(MethodLabel::GET, Outcome::Ok, None, None);

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

    /// What recording a request costs, on one thread and on two sharing its series:
    /// `cargo test -p fleet-gateway --release --lib observe_request_cost -- --ignored
    /// --nocapture`.
    #[test]
    #[ignore = "a micro benchmark: run it by name in a release build"]
    fn observe_request_cost() {
        let registry = Registry::default();
        let series = registry.series("a", Some(1));
        let traced = TraceId::from_bytes([7; 16]);
        let n: u32 = 4_000_000;
        for (trace_id, what) in [(None, "untraced"), (traced, "traced")] {
            for threads in [1u32, 2] {
                let start = std::time::Instant::now();
                std::thread::scope(|s| {
                    for _ in 0..threads {
                        s.spawn(|| {
                            for i in 0..n {
                                series.observe_request(
                                    MethodLabel::of(Some("tools/call")),
                                    Outcome::Ok,
                                    Some(Duration::from_micros(u64::from(i % 5000))),
                                    trace_id,
                                );
                            }
                        });
                    }
                });
                #[allow(clippy::cast_precision_loss)]
                let each = start.elapsed().as_nanos() as f64 / f64::from(n);
                println!("{what}, {threads} thread(s): {each:.1} ns per request");
            }
        }
    }
}
