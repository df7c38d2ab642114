//! From a stream of check results to a verdict — a pure state machine, no clock.
//!
//! The engine runs the checks on their cadence and enforces the overall readiness
//! deadline; this only counts results in a row.

use fleet_spec::model::Cadence;
use serde::Serialize;

use crate::report::CheckReport;

/// What the checks say about an instance.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Verdict {
    /// Not ready yet: fewer than `success_threshold` passes in a row so far. Failures
    /// do not end this state — the caller's readiness deadline does.
    Pending,
    /// `success_threshold` passes in a row, and since then fewer than
    /// `failure_threshold` failures in a row.
    Ready,
    /// Was ready, then failed `failure_threshold` times in a row. Recovers to `Ready`
    /// after `success_threshold` passes in a row.
    Unhealthy,
}

/// Counts consecutive passes and failures against a [`Cadence`]'s thresholds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HealthTracker {
    success_threshold: u32,
    failure_threshold: u32,
    verdict: Verdict,
    passes_in_row: u32,
    failures_in_row: u32,
}

impl HealthTracker {
    /// A tracker in `Pending`. Thresholds of 0 count as 1.
    pub fn new(cadence: &Cadence) -> Self {
        Self {
            success_threshold: cadence.success_threshold.max(1),
            failure_threshold: cadence.failure_threshold.max(1),
            verdict: Verdict::Pending,
            passes_in_row: 0,
            failures_in_row: 0,
        }
    }

    /// Feeds one report; returns the verdict after it.
    pub fn observe(&mut self, report: &CheckReport) -> Verdict {
        self.record(report.passed())
    }

    /// Feeds one pass or failure; returns the verdict after it.
    pub fn record(&mut self, passed: bool) -> Verdict {
        if passed {
            self.passes_in_row = self.passes_in_row.saturating_add(1);
            self.failures_in_row = 0;
            if self.verdict != Verdict::Ready && self.passes_in_row >= self.success_threshold {
                self.verdict = Verdict::Ready;
            }
        } else {
            self.failures_in_row = self.failures_in_row.saturating_add(1);
            self.passes_in_row = 0;
            if self.verdict == Verdict::Ready && self.failures_in_row >= self.failure_threshold {
                self.verdict = Verdict::Unhealthy;
            }
        }
        self.verdict
    }

    /// The current verdict.
    pub fn verdict(&self) -> Verdict {
        self.verdict
    }

    /// Passes in a row, up to now.
    pub fn passes_in_row(&self) -> u32 {
        self.passes_in_row
    }

    /// Failures in a row, up to now.
    pub fn failures_in_row(&self) -> u32 {
        self.failures_in_row
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use Verdict::{Pending, Ready, Unhealthy};

    fn tracker(success: u32, failure: u32) -> HealthTracker {
        HealthTracker::new(&Cadence {
            interval: Duration::from_secs(10),
            timeout: Duration::from_secs(5),
            failure_threshold: failure,
            success_threshold: success,
        })
    }

    /// Feeds `results` ('+' pass, '-' fail) and collects the verdicts.
    fn run(t: &mut HealthTracker, results: &str) -> Vec<Verdict> {
        results.chars().map(|c| t.record(c == '+')).collect()
    }

    #[test]
    fn ready_after_success_threshold_passes_in_a_row() {
        let mut t = tracker(2, 3);
        assert_eq!(t.verdict(), Pending);
        assert_eq!(run(&mut t, "+-++"), [Pending, Pending, Pending, Ready]);
    }

    #[test]
    fn failures_before_ready_stay_pending() {
        let mut t = tracker(1, 1);
        assert_eq!(run(&mut t, "-----"), [Pending; 5]);
        assert_eq!(t.failures_in_row(), 5);
        assert_eq!(run(&mut t, "+"), [Ready]);
    }

    #[test]
    fn unhealthy_after_failure_threshold_failures_in_a_row_once_ready() {
        let mut t = tracker(1, 3);
        assert_eq!(
            run(&mut t, "+--+---"),
            [Ready, Ready, Ready, Ready, Ready, Ready, Unhealthy]
        );
    }

    #[test]
    fn unhealthy_recovers_after_success_threshold_passes() {
        let mut t = tracker(2, 1);
        assert_eq!(run(&mut t, "++-"), [Pending, Ready, Unhealthy]);
        assert_eq!(
            run(&mut t, "+-++"),
            [Unhealthy, Unhealthy, Unhealthy, Ready]
        );
    }

    #[test]
    fn zero_thresholds_count_as_one() {
        let mut t = tracker(0, 0);
        assert_eq!(run(&mut t, "+-"), [Ready, Unhealthy]);
    }

    #[test]
    fn reports_feed_the_same_machine() {
        use crate::report::{CheckFailure, CheckKind, CheckPass};
        let mut t = tracker(1, 1);
        let pass = CheckReport {
            kind: CheckKind::Tcp,
            took: Duration::ZERO,
            outcome: Ok(CheckPass {
                detail: String::new(),
                mcp: None,
            }),
        };
        let fail = CheckReport {
            outcome: Err(CheckFailure::Timeout {
                during: "x".into(),
                after: Duration::from_secs(1),
            }),
            ..pass.clone()
        };
        assert_eq!(t.observe(&pass), Ready);
        assert_eq!(t.observe(&fail), Unhealthy);
    }
}
