//! Traffic counters per server revision, as the gateway reports them and canary
//! analysis reads them: outcome totals, tool errors and a fixed-bucket latency
//! histogram ([`RevisionTraffic`]), read through [`TrafficSource`] so the engine needs
//! no gateway. Counters are cumulative; an interval is the difference of two reads
//! ([`RevisionTraffic::since`]).

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// Upper bounds (seconds) of the latency histogram's buckets; `+Inf` is implied.
pub const LATENCY_BUCKETS: [f64; 14] = [
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
];

/// Where canary analysis reads what traffic each revision of a server saw.
pub trait TrafficSource: Send + Sync {
    /// The cumulative counters of every revision of `server` that has seen traffic
    /// (requests the gateway rejected belong to no revision and are not here).
    fn traffic(&self, server: &str) -> ServerTraffic;
}

/// The counters of one server's revisions at one moment.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ServerTraffic {
    /// By revision.
    pub revisions: BTreeMap<u64, RevisionTraffic>,
}

impl ServerTraffic {
    /// The counters of `revision`; `None` when it has seen no traffic.
    pub fn revision(&self, revision: u64) -> Option<&RevisionTraffic> {
        self.revisions.get(&revision)
    }

    /// Adds the counters of `other` (another gateway's, of the same server).
    pub fn add(&mut self, other: &Self) {
        for (revision, traffic) in &other.revisions {
            self.revisions.entry(*revision).or_default().add(traffic);
        }
    }
}

/// What one revision was asked and how it answered.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct RevisionTraffic {
    /// Requests by outcome.
    pub totals: OutcomeCounts,
    /// Tool calls answered with a result carrying `isError` (also counted `ok` above).
    pub tool_errors: u64,
    /// Latency of answered requests.
    pub latency: Histogram,
}

impl RevisionTraffic {
    /// Adds the counters of `other` (another gateway's, of the same revision).
    pub fn add(&mut self, other: &Self) {
        let (mine, theirs) = (&mut self.totals, &other.totals);
        mine.ok += theirs.ok;
        mine.jsonrpc_error += theirs.jsonrpc_error;
        mine.transport_error += theirs.transport_error;
        mine.rejected += theirs.rejected;
        self.tool_errors += other.tool_errors;
        let counts = &mut self.latency.counts;
        if counts.len() < other.latency.counts.len() {
            counts.resize(other.latency.counts.len(), 0);
        }
        for (mine, theirs) in counts.iter_mut().zip(&other.latency.counts) {
            *mine += theirs;
        }
        self.latency.sum_seconds += other.latency.sum_seconds;
    }

    /// What was added since `earlier`, a read of the same counters before this one.
    /// Counters only grow; a smaller one (they were reset) counts as nothing added.
    #[must_use]
    pub fn since(&self, earlier: &Self) -> Self {
        Self {
            totals: self.totals.since(&earlier.totals),
            tool_errors: self.tool_errors.saturating_sub(earlier.tool_errors),
            latency: self.latency.since(&earlier.latency),
        }
    }
}

/// Request totals by outcome.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct OutcomeCounts {
    /// Answered, not an error.
    pub ok: u64,
    /// JSON-RPC (or HTTP status) errors from the upstream.
    pub jsonrpc_error: u64,
    /// Transport failures.
    pub transport_error: u64,
    /// Refused by the gateway.
    pub rejected: u64,
}

impl OutcomeCounts {
    /// All requests.
    pub fn total(&self) -> u64 {
        self.ok + self.jsonrpc_error + self.transport_error + self.rejected
    }

    /// (JSON-RPC + transport errors) / answered-or-failed requests; `None` without
    /// any. Rejections are the client's problem, not the revision's.
    pub fn error_rate(&self) -> Option<f64> {
        let errors = self.jsonrpc_error + self.transport_error;
        let counted = self.ok + errors;
        #[allow(clippy::cast_precision_loss)]
        (counted > 0).then(|| errors as f64 / counted as f64)
    }

    /// What was added since `earlier` (see [`RevisionTraffic::since`]).
    #[must_use]
    pub fn since(&self, earlier: &Self) -> Self {
        Self {
            ok: self.ok.saturating_sub(earlier.ok),
            jsonrpc_error: self.jsonrpc_error.saturating_sub(earlier.jsonrpc_error),
            transport_error: self.transport_error.saturating_sub(earlier.transport_error),
            rejected: self.rejected.saturating_sub(earlier.rejected),
        }
    }
}

/// A latency histogram with [`LATENCY_BUCKETS`].
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Histogram {
    /// Per-bucket (not cumulative) counts; the last one is `+Inf`. Empty without
    /// observations.
    pub counts: Vec<u64>,
    /// Sum of all observations, in seconds.
    pub sum_seconds: f64,
}

impl Histogram {
    /// Number of observations.
    pub fn count(&self) -> u64 {
        self.counts.iter().sum()
    }

    /// The index in [`Histogram::counts`] of the bucket holding `seconds`.
    pub fn bucket_of(seconds: f64) -> usize {
        LATENCY_BUCKETS
            .iter()
            .position(|bound| seconds <= *bound)
            .unwrap_or(LATENCY_BUCKETS.len())
    }

    /// The upper bound of the bucket holding quantile `q` (0..=1): an upper estimate
    /// good enough to compare revisions. `None` without observations;
    /// `f64::INFINITY` when it falls past the last bound.
    pub fn quantile(&self, q: f64) -> Option<f64> {
        let total = self.count();
        if total == 0 {
            return None;
        }
        #[allow(
            clippy::cast_precision_loss,
            clippy::cast_possible_truncation,
            clippy::cast_sign_loss
        )]
        let rank = ((q.clamp(0.0, 1.0) * total as f64).ceil() as u64).max(1);
        let mut seen = 0;
        for (index, count) in self.counts.iter().enumerate() {
            seen += count;
            if seen >= rank {
                return Some(LATENCY_BUCKETS.get(index).copied().unwrap_or(f64::INFINITY));
            }
        }
        Some(f64::INFINITY)
    }

    /// What was observed since `earlier` (see [`RevisionTraffic::since`]).
    #[must_use]
    pub fn since(&self, earlier: &Self) -> Self {
        Self {
            counts: self
                .counts
                .iter()
                .enumerate()
                .map(|(i, &n)| n.saturating_sub(earlier.counts.get(i).copied().unwrap_or(0)))
                .collect(),
            sum_seconds: (self.sum_seconds - earlier.sum_seconds).max(0.0),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn histogram(latencies: &[f64]) -> Histogram {
        let mut counts = vec![0; LATENCY_BUCKETS.len() + 1];
        for latency in latencies {
            counts[Histogram::bucket_of(*latency)] += 1;
        }
        Histogram {
            counts,
            sum_seconds: latencies.iter().sum(),
        }
    }

    #[test]
    fn an_interval_is_what_the_counters_gained_since_the_earlier_read() {
        let earlier = RevisionTraffic {
            totals: OutcomeCounts {
                ok: 10,
                jsonrpc_error: 1,
                ..OutcomeCounts::default()
            },
            tool_errors: 2,
            latency: histogram(&[0.002; 11]),
        };
        let later = RevisionTraffic {
            totals: OutcomeCounts {
                ok: 15,
                jsonrpc_error: 1,
                transport_error: 3,
                ..OutcomeCounts::default()
            },
            tool_errors: 2,
            latency: histogram(&[[0.002; 11].as_slice(), &[0.2; 8]].concat()),
        };
        let interval = later.since(&earlier);
        assert_eq!(
            interval.totals,
            OutcomeCounts {
                ok: 5,
                transport_error: 3,
                ..OutcomeCounts::default()
            }
        );
        assert_eq!(interval.tool_errors, 0);
        assert_eq!(interval.latency.count(), 8);
        assert_eq!(interval.latency.quantile(0.95), Some(0.25));
        // Counters that went backwards (a restarted gateway) add nothing.
        assert_eq!(earlier.since(&later).totals.total(), 0);
        // From nothing (a revision first seen) an interval is everything.
        assert_eq!(later.since(&RevisionTraffic::default()), later);
    }

    #[test]
    fn two_gateways_counters_add_up_per_revision() {
        let one = RevisionTraffic {
            totals: OutcomeCounts {
                ok: 3,
                jsonrpc_error: 1,
                ..OutcomeCounts::default()
            },
            tool_errors: 1,
            latency: histogram(&[0.002, 0.002, 0.2, 0.3]),
        };
        let two = RevisionTraffic {
            totals: OutcomeCounts {
                ok: 5,
                ..OutcomeCounts::default()
            },
            tool_errors: 0,
            latency: histogram(&[0.004; 5]),
        };
        let mut sum = ServerTraffic {
            revisions: BTreeMap::from([(1, one.clone())]),
        };
        sum.add(&ServerTraffic {
            revisions: BTreeMap::from([(1, two), (2, one.clone())]),
        });
        let first = sum.revision(1).unwrap();
        assert_eq!(first.totals.ok, 8);
        assert_eq!(first.totals.error_rate(), Some(1.0 / 9.0));
        assert_eq!(first.tool_errors, 1);
        assert_eq!(first.latency.count(), 9);
        assert_eq!(sum.revision(2), Some(&one));
        // Nothing added to nothing is nothing: an empty histogram stays empty.
        let mut empty = RevisionTraffic::default();
        empty.add(&RevisionTraffic::default());
        assert_eq!(empty, RevisionTraffic::default());
    }

    #[test]
    fn quantiles_are_bucket_upper_bounds() {
        assert_eq!(Histogram::default().quantile(0.95), None);
        let h = histogram(&[0.0005, 0.003, 0.003, 0.04]);
        assert_eq!(h.quantile(0.5), Some(0.005));
        assert_eq!(h.quantile(1.0), Some(0.05));
        assert_eq!(histogram(&[60.0]).quantile(0.5), Some(f64::INFINITY));
    }
}
