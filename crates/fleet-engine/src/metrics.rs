//! What the engine counts about the fleet, and its Prometheus text (the gateway renders its
//! own families; the control plane serves both at `GET /metrics`).

use fleet_routes::traffic::escape_label_value;
use std::fmt::Write as _;
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
    /// The Prometheus text exposition (version 0.0.4) of these metrics: `HELP` and `TYPE`
    /// for every family, label values escaped.
    pub fn prometheus_text(&self) -> String {
        let mut out = String::new();
        let per_instance: [(&str, &str, &str, InstanceValue); 3] = [
            (
                "mcpfleet_instance_up",
                "gauge",
                "Whether the instance is ready (passing its checks and taking traffic).",
                |i| u64::from(i.up),
            ),
            (
                "mcpfleet_instance_restarts_total",
                "counter",
                "Times the instance was restarted after an exit or failed liveness checks.",
                |i| u64::from(i.restarts),
            ),
            (
                "mcpfleet_health_check_failures_total",
                "counter",
                "Failed health checks of the instance: liveness checks, and readiness that failed.",
                |i| i.health_check_failures,
            ),
        ];
        for (name, kind, help, value) in per_instance {
            let _ = writeln!(out, "# HELP {name} {help}");
            let _ = writeln!(out, "# TYPE {name} {kind}");
            for i in &self.instances {
                let _ = writeln!(
                    out,
                    "{name}{{server=\"{}\",instance=\"{}\"}} {}",
                    escape_label_value(&i.server),
                    escape_label_value(&i.instance),
                    value(i)
                );
            }
        }
        out.push_str(
            "# HELP mcpfleet_rollbacks_total Times a server went back to an earlier revision, by reason.\n",
        );
        out.push_str("# TYPE mcpfleet_rollbacks_total counter\n");
        for ((server, reason), count) in &self.rollbacks {
            let _ = writeln!(
                out,
                "mcpfleet_rollbacks_total{{server=\"{}\",reason=\"{reason}\"}} {count}",
                escape_label_value(server)
            );
        }
        out.push_str("# HELP mcpfleet_deployment_duration_seconds How long the last finished deployment took.\n");
        out.push_str("# TYPE mcpfleet_deployment_duration_seconds gauge\n");
        if let Some(took) = self.last_deployment {
            let _ = writeln!(
                out,
                "mcpfleet_deployment_duration_seconds {}",
                took.as_secs_f64()
            );
        }
        out
    }
}

/// Reads one family's value off an instance.
type InstanceValue = fn(&InstanceMetrics) -> u64;

#[cfg(test)]
mod tests {
    use super::*;

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
        };
        assert_eq!(
            metrics.prometheus_text(),
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
# HELP mcpfleet_deployment_duration_seconds How long the last finished deployment took.
# TYPE mcpfleet_deployment_duration_seconds gauge
mcpfleet_deployment_duration_seconds 1.25
"
        );
    }

    #[test]
    fn a_deployment_in_progress_has_no_duration_yet() {
        let text = EngineMetrics::default().prometheus_text();
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
            last_deployment: None,
            rollbacks: Vec::new(),
        };
        assert!(
            metrics
                .prometheus_text()
                .contains(r#"mcpfleet_instance_up{server="odd\"name",instance="x\\y"} 1"#)
        );
    }
}
