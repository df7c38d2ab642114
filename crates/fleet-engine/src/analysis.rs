//! Canary analysis: is the new revision as good as the stable one, judged on one interval
//! of traffic? Pure: two reads of the server's traffic counters in, a verdict out.
//!
//! Errors are JSON-RPC errors and transport failures per answered request; tool results
//! with `isError` count only with `count_tool_errors`. Latency compares p95 upper bounds
//! of the interval's histograms (coarse buckets: an estimate, good enough to compare). Too
//! little canary traffic is inconclusive, never a pass.

use crate::report::Verdict;
use fleet_routes::traffic::{LATENCY_BUCKETS, RevisionTraffic, ServerTraffic};
use fleet_spec::model::Analysis;

/// What one interval showed.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct IntervalResult {
    pub(crate) verdict: Verdict,
    /// Canary requests answered or failed in the interval.
    pub(crate) requests: u64,
    /// Their error rate, when there were any.
    pub(crate) error_rate: Option<f64>,
    /// p95 latency upper bounds (seconds) of the canary and the stable revision.
    pub(crate) canary_p95: Option<f64>,
    pub(crate) stable_p95: Option<f64>,
    /// Why it failed or was inconclusive; what passed otherwise.
    pub(crate) reason: String,
}

/// Judges `canary` against `stable` on the traffic between `before` and `after`, plus the
/// canary's failed health checks in the interval.
pub(crate) fn judge(
    analysis: &Analysis,
    before: &ServerTraffic,
    after: &ServerTraffic,
    stable: u64,
    canary: u64,
    health_failures: u64,
) -> IntervalResult {
    let window = |revision| interval(before, after, revision);
    let (c, s) = (window(canary), window(stable));
    let mut errors = c.totals.jsonrpc_error + c.totals.transport_error;
    if analysis.count_tool_errors {
        errors += c.tool_errors;
    }
    let requests = c.totals.ok + c.totals.jsonrpc_error + c.totals.transport_error;
    #[allow(clippy::cast_precision_loss)]
    let error_rate = (requests > 0).then(|| errors as f64 / requests as f64);
    let canary_p95 = c.latency.quantile(0.95);
    let stable_p95 = s.latency.quantile(0.95);
    let result = |verdict, reason: String| IntervalResult {
        verdict,
        requests,
        error_rate,
        canary_p95,
        stable_p95,
        reason,
    };
    if health_failures > 0 {
        return result(
            Verdict::Fail,
            format!("{health_failures} failed health check(s) of revision {canary}"),
        );
    }
    // No traffic is never a pass, even with `min_requests: 0`.
    let needed = u64::from(analysis.min_requests).max(1);
    if requests < needed {
        return result(
            Verdict::Inconclusive,
            format!("{requests} of the {needed} requests needed to judge revision {canary}"),
        );
    }
    let rate = error_rate.unwrap_or(0.0);
    if rate > analysis.max_error_rate {
        return result(
            Verdict::Fail,
            format!(
                "error rate {:.1}% over {requests} requests is above {:.1}%",
                rate * 100.0,
                analysis.max_error_rate * 100.0
            ),
        );
    }
    // Latency is compared only when both sides have answers in the interval. A histogram
    // knows a p95 only as a bucket (lower, upper]: the canary fails only when it is slower
    // for certain — its bucket's lower bound above the ratio times the stable's upper one.
    if let (Some(cp), Some(sp)) = (canary_p95, stable_p95)
        && sp > 0.0
        && lower_bound(cp) / sp > analysis.max_latency_p95_ratio
    {
        return result(
            Verdict::Fail,
            format!(
                "p95 latency over {} is more than {:.2}× the stable revision's {} (limit {:.2}×)",
                millis(lower_bound(cp)).trim_start_matches('≤'),
                lower_bound(cp) / sp,
                millis(sp),
                analysis.max_latency_p95_ratio
            ),
        );
    }
    result(
        Verdict::Pass,
        format!(
            "error rate {:.1}% over {requests} requests, p95 {}",
            rate * 100.0,
            canary_p95.map_or_else(|| "-".into(), millis)
        ),
    )
}

/// The lower bound of the latency bucket whose upper bound is `upper`.
fn lower_bound(upper: f64) -> f64 {
    let buckets = &LATENCY_BUCKETS;
    match buckets.iter().position(|b| *b >= upper) {
        Some(0) => 0.0,
        Some(i) => buckets[i - 1],
        None => buckets[buckets.len() - 1],
    }
}

fn millis(seconds: f64) -> String {
    if seconds.is_infinite() {
        "over 30s".into()
    } else {
        format!("≤{}ms", seconds * 1000.0)
    }
}

/// What `revision` saw between the two reads (nothing when it is in neither).
fn interval(before: &ServerTraffic, after: &ServerTraffic, revision: u64) -> RevisionTraffic {
    let nothing = RevisionTraffic::default();
    after
        .revision(revision)
        .unwrap_or(&nothing)
        .since(before.revision(revision).unwrap_or(&nothing))
}

#[cfg(test)]
mod tests {
    use super::*;
    use fleet_routes::traffic::{Histogram, OutcomeCounts};
    use std::time::Duration;

    fn analysis() -> Analysis {
        Analysis {
            interval: Duration::from_secs(1),
            max_error_rate: 0.05,
            max_latency_p95_ratio: 1.25,
            min_requests: 20,
            failure_limit: 2,
            count_tool_errors: false,
        }
    }

    /// Counters of one revision: `ok` answers, `errors` JSON-RPC errors, all in the bucket
    /// of `latency` seconds, and `tool_errors` isError results.
    fn stats(ok: u64, errors: u64, latency: f64, tool_errors: u64) -> RevisionTraffic {
        let mut counts = vec![0; LATENCY_BUCKETS.len() + 1];
        counts[Histogram::bucket_of(latency)] = ok + errors;
        RevisionTraffic {
            totals: OutcomeCounts {
                ok,
                jsonrpc_error: errors,
                ..OutcomeCounts::default()
            },
            tool_errors,
            latency: Histogram {
                counts,
                #[allow(clippy::cast_precision_loss)]
                sum_seconds: latency * (ok + errors) as f64,
            },
        }
    }

    fn snapshot(stable: RevisionTraffic, canary: RevisionTraffic) -> ServerTraffic {
        ServerTraffic {
            revisions: [(1, stable), (2, canary)].into(),
        }
    }

    fn judge_interval(
        analysis: &Analysis,
        stable: RevisionTraffic,
        canary: RevisionTraffic,
    ) -> IntervalResult {
        // Counters only grow: the interval is what was added to a non-empty start.
        let (stable_before, canary_before) = (stats(100, 0, 0.002, 0), stats(5, 0, 0.002, 0));
        let add = |a: &RevisionTraffic, b: RevisionTraffic| {
            let mut sum = b;
            sum.totals.ok += a.totals.ok;
            sum.totals.jsonrpc_error += a.totals.jsonrpc_error;
            for (i, n) in a.latency.counts.iter().enumerate() {
                sum.latency.counts[i] += n;
            }
            sum.tool_errors += a.tool_errors;
            sum
        };
        let after = snapshot(add(&stable_before, stable), add(&canary_before, canary));
        let before = snapshot(stable_before, canary_before);
        judge(analysis, &before, &after, 1, 2, 0)
    }

    #[test]
    fn errors_above_the_limit_fail_and_below_pass() {
        let a = analysis();
        let failing = judge_interval(&a, stats(100, 0, 0.002, 0), stats(80, 20, 0.002, 0));
        assert_eq!(failing.verdict, Verdict::Fail, "{failing:?}");
        assert_eq!(failing.error_rate, Some(0.2));
        assert!(failing.reason.contains("20.0%"), "{}", failing.reason);
        let passing = judge_interval(&a, stats(100, 0, 0.002, 0), stats(99, 1, 0.002, 0));
        assert_eq!(passing.verdict, Verdict::Pass, "{passing:?}");
    }

    #[test]
    fn too_few_requests_are_inconclusive_even_when_all_fail() {
        let result = judge_interval(&analysis(), stats(100, 0, 0.002, 0), stats(0, 19, 0.002, 0));
        assert_eq!(result.verdict, Verdict::Inconclusive, "{result:?}");
        assert_eq!(result.requests, 19);
    }

    #[test]
    fn no_traffic_is_never_a_pass_even_with_min_requests_0() {
        let a = Analysis {
            min_requests: 0,
            ..analysis()
        };
        let result = judge_interval(&a, stats(100, 0, 0.002, 0), stats(0, 0, 0.002, 0));
        assert_eq!(result.verdict, Verdict::Inconclusive, "{result:?}");
    }

    #[test]
    fn a_slower_canary_fails_on_its_p95_ratio() {
        let result = judge_interval(&analysis(), stats(100, 0, 0.002, 0), stats(100, 0, 0.02, 0));
        assert_eq!(result.verdict, Verdict::Fail, "{result:?}");
        assert!(result.reason.contains("p95"), "{}", result.reason);
    }

    #[test]
    fn latency_within_the_histograms_resolution_is_not_a_failure() {
        // 1.5 ms vs 0.8 ms: buckets (1, 2.5] and (0, 1] — perhaps only 1.0× apart.
        let result = judge_interval(
            &analysis(),
            stats(100, 0, 0.0008, 0),
            stats(100, 0, 0.0015, 0),
        );
        assert_eq!(result.verdict, Verdict::Pass, "{result:?}");
    }

    #[test]
    fn tool_errors_count_only_when_configured() {
        let mut a = analysis();
        let canary = || stats(100, 0, 0.002, 30);
        assert_eq!(
            judge_interval(&a, stats(100, 0, 0.002, 0), canary()).verdict,
            Verdict::Pass
        );
        a.count_tool_errors = true;
        assert_eq!(
            judge_interval(&a, stats(100, 0, 0.002, 0), canary()).verdict,
            Verdict::Fail
        );
    }

    #[test]
    fn failed_health_checks_fail_whatever_the_traffic() {
        let empty = ServerTraffic::default();
        let result = judge(&analysis(), &empty, &empty, 1, 2, 1);
        assert_eq!(result.verdict, Verdict::Fail);
        assert!(result.reason.contains("health check"), "{}", result.reason);
    }
}
