//! What the engine counts about the fleet, and how its families are written to a
//! prometheus-client registry (the gateway writes its own; the control plane's one registry
//! holds both and serves them at `GET /metrics`). The dashboard and alert
//! rules in `deploy/observability/` query these names: rename none without them.

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, NoLabelSet};
use prometheus_client::metrics::MetricType;
use std::time::Duration;

/// A snapshot of the engine's metrics.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct EngineMetrics {
    /// Every instance the current deployment has started, in plan order.
    pub instances: Vec<InstanceMetrics>,
    /// How long the last finished deployment took; `None` while the first one runs.
    pub last_deployment: Option<Duration>,
    /// Rollbacks by (server, reason): `analysis` (a canary's analysis aborted it),
    /// `abort` (`mcpfleet abort`), `failed_update` (a failed deployment put the previous
    /// revision back), `command` (`mcpfleet rollback`, or crash recovery).
    pub rollbacks: Vec<((String, &'static str), u64)>,
    /// Each server's share of new sessions by revision: `(server, revision, percent)`.
    pub traffic: Vec<(String, u64, u32)>,
    /// The revision serving each server (during a canary, the stable one).
    pub stable: Vec<(String, u64)>,
    /// Canaries in progress.
    pub canaries: Vec<CanaryMetrics>,
    /// Finished deployments' durations, by how they ended (`succeeded`, `failed`,
    /// `rolled_back`, `paused`).
    pub deployments: Vec<(&'static str, DurationHistogram)>,
}

/// A canary in progress.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CanaryMetrics {
    pub server: String,
    /// The revision being rolled out.
    pub revision: u64,
    /// How long `mcpfleet pause` has held it; zero while it is not paused.
    pub paused_for: Duration,
}

/// Upper bounds of the deployment duration buckets, in seconds: a fleet of processes is up
/// in seconds, a canary's steps take minutes to hours.
pub const DEPLOYMENT_BUCKETS: [f64; 10] = [
    1.0, 5.0, 15.0, 30.0, 60.0, 120.0, 300.0, 600.0, 1800.0, 3600.0,
];

/// Durations counted into [`DEPLOYMENT_BUCKETS`] (the last count: above the last bound).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct DurationHistogram {
    pub counts: [u64; DEPLOYMENT_BUCKETS.len() + 1],
    pub sum_seconds: f64,
}

impl DurationHistogram {
    /// Counts one duration.
    pub fn observe(&mut self, took: Duration) {
        let seconds = took.as_secs_f64();
        let bucket = DEPLOYMENT_BUCKETS
            .iter()
            .position(|bound| seconds <= *bound)
            .unwrap_or(DEPLOYMENT_BUCKETS.len());
        self.counts[bucket] += 1;
        self.sum_seconds += seconds;
    }
}

/// One instance's gauges and counters.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InstanceMetrics {
    pub server: String,
    pub instance: String,
    /// Ready: passing its checks and taking traffic.
    pub up: bool,
    pub restarts: u32,
    /// Liveness checks that failed, plus one per failed readiness (not each poll while the
    /// instance starts up).
    pub health_check_failures: u64,
}

impl EngineMetrics {
    /// Writes every family, each with its help and type, to a prometheus-client registry's
    /// encoder (the control plane's registry reads a fresh snapshot at each scrape).
    ///
    /// # Errors
    ///
    /// Only what the encoder's writer returns.
    pub fn encode(&self, mut encoder: DescriptorEncoder) -> std::fmt::Result {
        let per_instance: [(&str, MetricType, &str, InstanceValue); 3] = [
            (
                "mcpfleet_instance_up",
                MetricType::Gauge,
                "Whether the instance is ready (passing its checks and taking traffic).",
                |i| u64::from(i.up),
            ),
            (
                "mcpfleet_instance_restarts",
                MetricType::Counter,
                "Times the instance was restarted after an exit or failed liveness checks.",
                |i| u64::from(i.restarts),
            ),
            (
                "mcpfleet_health_check_failures",
                MetricType::Counter,
                "Failed health checks of the instance: liveness checks, and readiness that failed.",
                |i| i.health_check_failures,
            ),
        ];
        for (name, kind, help, value) in per_instance {
            let mut family = encoder.encode_descriptor(name, help, None, kind)?;
            for i in &self.instances {
                let labels = [
                    ("server", i.server.as_str()),
                    ("instance", i.instance.as_str()),
                ];
                let mut metric = family.encode_family(&labels)?;
                if kind == MetricType::Counter {
                    metric.encode_counter::<NoLabelSet, _, u64>(&value(i), None)?;
                } else {
                    metric.encode_gauge(&value(i))?;
                }
            }
        }
        let mut family = encoder.encode_descriptor(
            "mcpfleet_rollbacks",
            "Times a server went back to an earlier revision, by reason.",
            None,
            MetricType::Counter,
        )?;
        for ((server, reason), count) in &self.rollbacks {
            family
                .encode_family(&[("server", server.as_str()), ("reason", reason)])?
                .encode_counter::<NoLabelSet, _, u64>(count, None)?;
        }
        self.encode_rollouts(&mut encoder)?;
        let mut family = encoder.encode_descriptor(
            "mcpfleet_deployment_duration_seconds",
            "How long the last finished deployment took.",
            None,
            MetricType::Gauge,
        )?;
        if let Some(took) = self.last_deployment {
            family.encode_gauge(&took.as_secs_f64())?;
        }
        let mut family = encoder.encode_descriptor(
            "mcpfleet_deployment_seconds",
            "How long finished deployments took, by how they ended.",
            None,
            MetricType::Histogram,
        )?;
        for (state, histogram) in &self.deployments {
            let buckets: Vec<(f64, u64)> = DEPLOYMENT_BUCKETS
                .iter()
                .copied()
                .chain([f64::INFINITY])
                .zip(histogram.counts)
                .collect();
            family
                .encode_family(&[("state", *state)])?
                .encode_histogram::<NoLabelSet>(
                    histogram.sum_seconds,
                    histogram.counts.iter().sum(),
                    &buckets,
                    None,
                )?;
        }
        Ok(())
    }

    /// Traffic weights, stable revisions and canaries.
    fn encode_rollouts(&self, encoder: &mut DescriptorEncoder) -> std::fmt::Result {
        let mut family = encoder.encode_descriptor(
            "mcpfleet_traffic_weight",
            "Percent of a server's new sessions that go to the revision.",
            None,
            MetricType::Gauge,
        )?;
        for (server, revision, weight) in &self.traffic {
            family
                .encode_family(&revision_labels(server, *revision))?
                .encode_gauge(weight)?;
        }
        let mut family = encoder.encode_descriptor(
            "mcpfleet_stable_revision",
            "The revision serving the server (a canary's stable one); always 1.",
            None,
            MetricType::Gauge,
        )?;
        for (server, revision) in &self.stable {
            family
                .encode_family(&revision_labels(server, *revision))?
                .encode_gauge(&1u32)?;
        }
        let mut family = encoder.encode_descriptor(
            "mcpfleet_canary_paused_seconds",
            "How long mcpfleet pause has held the canary of the revision (0: not paused).",
            None,
            MetricType::Gauge,
        )?;
        for canary in &self.canaries {
            family
                .encode_family(&revision_labels(&canary.server, canary.revision))?
                .encode_gauge(&canary.paused_for.as_secs_f64())?;
        }
        Ok(())
    }
}

/// A snapshot is a collector of itself: what a test or a one-off exposition registers.
impl Collector for EngineMetrics {
    fn encode(&self, encoder: DescriptorEncoder) -> std::fmt::Result {
        EngineMetrics::encode(self, encoder)
    }
}

/// `server` and `revision` labels.
fn revision_labels(server: &str, revision: u64) -> [(&'static str, String); 2] {
    [
        ("server", server.to_owned()),
        ("revision", revision.to_string()),
    ]
}

/// Reads one family's value off an instance.
type InstanceValue = fn(&InstanceMetrics) -> u64;

#[cfg(test)]
mod tests {
    use super::*;

    /// `metrics` in the Prometheus text format (version 0.0.4), as `/metrics` serves it
    /// without OpenMetrics.
    fn prometheus_text(metrics: &EngineMetrics) -> String {
        let mut registry = prometheus_client::registry::Registry::default();
        registry.register_collector(Box::new(metrics.clone()));
        let mut text = String::new();
        prometheus_client::encoding::prometheus_text::encode(&mut text, &registry).unwrap();
        text
    }

    #[test]
    fn every_family_has_help_and_type_and_one_line_per_instance() {
        let metrics = EngineMetrics {
            instances: vec![
                InstanceMetrics {
                    server: "search".into(),
                    instance: "search-r1-1".into(),
                    up: true,
                    restarts: 2,
                    health_check_failures: 5,
                },
                InstanceMetrics {
                    server: "notes".into(),
                    instance: "notes-r1-1".into(),
                    up: false,
                    restarts: 0,
                    health_check_failures: 0,
                },
            ],
            last_deployment: Some(Duration::from_millis(1_250)),
            rollbacks: vec![(("search".into(), "analysis"), 1)],
            ..EngineMetrics::default()
        };
        assert_eq!(
            prometheus_text(&metrics),
            "\
# HELP mcpfleet_instance_up Whether the instance is ready (passing its checks and taking traffic).
# TYPE mcpfleet_instance_up gauge
mcpfleet_instance_up{server=\"search\",instance=\"search-r1-1\"} 1
mcpfleet_instance_up{server=\"notes\",instance=\"notes-r1-1\"} 0
# HELP mcpfleet_instance_restarts_total Times the instance was restarted after an exit or failed liveness checks.
# TYPE mcpfleet_instance_restarts_total counter
mcpfleet_instance_restarts_total{server=\"search\",instance=\"search-r1-1\"} 2
mcpfleet_instance_restarts_total{server=\"notes\",instance=\"notes-r1-1\"} 0
# HELP mcpfleet_health_check_failures_total Failed health checks of the instance: liveness checks, and readiness that failed.
# TYPE mcpfleet_health_check_failures_total counter
mcpfleet_health_check_failures_total{server=\"search\",instance=\"search-r1-1\"} 5
mcpfleet_health_check_failures_total{server=\"notes\",instance=\"notes-r1-1\"} 0
# HELP mcpfleet_rollbacks_total Times a server went back to an earlier revision, by reason.
# TYPE mcpfleet_rollbacks_total counter
mcpfleet_rollbacks_total{server=\"search\",reason=\"analysis\"} 1
# HELP mcpfleet_traffic_weight Percent of a server's new sessions that go to the revision.
# TYPE mcpfleet_traffic_weight gauge
# HELP mcpfleet_stable_revision The revision serving the server (a canary's stable one); always 1.
# TYPE mcpfleet_stable_revision gauge
# HELP mcpfleet_canary_paused_seconds How long mcpfleet pause has held the canary of the revision (0: not paused).
# TYPE mcpfleet_canary_paused_seconds gauge
# HELP mcpfleet_deployment_duration_seconds How long the last finished deployment took.
# TYPE mcpfleet_deployment_duration_seconds gauge
mcpfleet_deployment_duration_seconds 1.25
# HELP mcpfleet_deployment_seconds How long finished deployments took, by how they ended.
# TYPE mcpfleet_deployment_seconds histogram
"
        );
    }

    #[test]
    fn a_canary_shows_its_weights_its_stable_revision_and_how_long_it_is_paused() {
        let metrics = EngineMetrics {
            traffic: vec![("api".into(), 1, 75), ("api".into(), 2, 25)],
            stable: vec![("api".into(), 1)],
            canaries: vec![CanaryMetrics {
                server: "api".into(),
                revision: 2,
                paused_for: Duration::from_millis(90_500),
            }],
            ..EngineMetrics::default()
        };
        let text = prometheus_text(&metrics);
        for line in [
            r#"mcpfleet_traffic_weight{server="api",revision="1"} 75"#,
            r#"mcpfleet_traffic_weight{server="api",revision="2"} 25"#,
            r#"mcpfleet_stable_revision{server="api",revision="1"} 1"#,
            r#"mcpfleet_canary_paused_seconds{server="api",revision="2"} 90.5"#,
        ] {
            assert!(text.lines().any(|l| l == line), "{line} missing:\n{text}");
        }
    }

    #[test]
    fn deployment_durations_are_a_cumulative_histogram_by_how_they_ended() {
        let mut succeeded = DurationHistogram::default();
        succeeded.observe(Duration::from_millis(800));
        succeeded.observe(Duration::from_secs(4));
        succeeded.observe(Duration::from_secs(7_200));
        let mut failed = DurationHistogram::default();
        failed.observe(Duration::from_secs(30));
        let metrics = EngineMetrics {
            deployments: vec![("failed", failed), ("succeeded", succeeded)],
            ..EngineMetrics::default()
        };
        let text = prometheus_text(&metrics);
        for line in [
            r#"mcpfleet_deployment_seconds_bucket{state="succeeded",le="1"} 1"#,
            r#"mcpfleet_deployment_seconds_bucket{state="succeeded",le="5"} 2"#,
            r#"mcpfleet_deployment_seconds_bucket{state="succeeded",le="3600"} 2"#,
            r#"mcpfleet_deployment_seconds_bucket{state="succeeded",le="+Inf"} 3"#,
            r#"mcpfleet_deployment_seconds_sum{state="succeeded"} 7204.8"#,
            r#"mcpfleet_deployment_seconds_count{state="succeeded"} 3"#,
            r#"mcpfleet_deployment_seconds_bucket{state="failed",le="15"} 0"#,
            r#"mcpfleet_deployment_seconds_bucket{state="failed",le="30"} 1"#,
            r#"mcpfleet_deployment_seconds_count{state="failed"} 1"#,
        ] {
            assert!(text.lines().any(|l| l == line), "{line} missing:\n{text}");
        }
    }

    #[test]
    fn a_deployment_in_progress_has_no_duration_yet() {
        let text = prometheus_text(&EngineMetrics::default());
        assert!(text.contains("# TYPE mcpfleet_deployment_duration_seconds gauge\n"));
        assert!(
            !text
                .lines()
                .any(|l| l.starts_with("mcpfleet_deployment_duration_seconds"))
        );
    }

    #[test]
    fn label_values_are_escaped() {
        let metrics = EngineMetrics {
            instances: vec![InstanceMetrics {
                server: "odd\"name".into(),
                instance: "x\\y".into(),
                up: true,
                restarts: 0,
                health_check_failures: 0,
            }],
            ..EngineMetrics::default()
        };
        assert!(
            prometheus_text(&metrics)
                .contains(r#"mcpfleet_instance_up{server="odd\"name",instance="x\\y"} 1"#)
        );
    }
}
