//! [`FakeTraffic`]: a fake of fleet-routes' [`TrafficSource`] for the engine's canary
//! tests. A test sets the rate at which each revision answers and fails; the counters grow
//! with tokio's clock, so on a paused clock every analysis interval sees exactly rate ×
//! interval requests — no gateway, client or real wait involved.
//!
//! It knows nothing of weights: a test sets each revision's rate as the traffic it wants
//! the canary judged on.

use fleet_routes::traffic::{
    Histogram, LATENCY_BUCKETS, RevisionTraffic, ServerTraffic, TrafficSource,
};
use parking_lot::Mutex;
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;
use tokio::time::Instant;

/// How one revision is being asked, per second of tokio's clock.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rate {
    /// Requests answered, not an error.
    pub answered: u64,
    /// Requests answered with a JSON-RPC error.
    pub failed: u64,
    /// How long each request took.
    pub latency: Duration,
}

impl Rate {
    /// `answered` requests a second, each taking `latency`, none failing.
    pub fn answering(answered: u64, latency: Duration) -> Self {
        Self {
            answered,
            failed: 0,
            latency,
        }
    }

    /// The same, with `failed` of each second's requests failing as well.
    #[must_use]
    pub fn failing(self, failed: u64) -> Self {
        Self { failed, ..self }
    }
}

/// Per-revision counters that grow at the rate a test sets. Cheap to clone; every clone
/// counts the same traffic.
#[derive(Debug, Clone, Default)]
pub struct FakeTraffic {
    flows: Arc<Mutex<BTreeMap<(String, u64), Flow>>>,
}

/// One revision's traffic: what was counted until `since`, and the rate after it.
#[derive(Debug)]
struct Flow {
    counted: RevisionTraffic,
    since: Instant,
    rate: Rate,
}

impl Flow {
    /// The counters now.
    fn now(&self) -> RevisionTraffic {
        let elapsed = self.since.elapsed().as_millis();
        let over = |per_second: u64| {
            u64::try_from(u128::from(per_second) * elapsed / 1000).unwrap_or(u64::MAX)
        };
        let (answered, failed) = (over(self.rate.answered), over(self.rate.failed));
        let mut traffic = self.counted.clone();
        traffic.totals.ok += answered;
        traffic.totals.jsonrpc_error += failed;
        let latency = &mut traffic.latency;
        latency.counts.resize(LATENCY_BUCKETS.len() + 1, 0);
        latency.counts[Histogram::bucket_of(self.rate.latency.as_secs_f64())] += answered + failed;
        #[allow(clippy::cast_precision_loss)]
        let requests = (answered + failed) as f64;
        latency.sum_seconds += self.rate.latency.as_secs_f64() * requests;
        traffic
    }
}

impl FakeTraffic {
    /// A source where no revision has seen traffic.
    pub fn new() -> Self {
        Self::default()
    }

    /// From now on `revision` of `server` is asked at `rate` (what it saw until now stays
    /// counted).
    pub fn serve(&self, server: &str, revision: u64, rate: Rate) {
        let mut flows = self.flows.lock();
        let key = (server.to_owned(), revision);
        let counted = flows.get(&key).map(Flow::now).unwrap_or_default();
        flows.insert(
            key,
            Flow {
                counted,
                since: Instant::now(),
                rate,
            },
        );
    }
}

impl TrafficSource for FakeTraffic {
    fn traffic(&self, server: &str) -> ServerTraffic {
        let revisions = self
            .flows
            .lock()
            .iter()
            .filter(|((name, _), _)| name == server)
            .map(|((_, revision), flow)| (*revision, flow.now()))
            .collect();
        ServerTraffic { revisions }
    }
}
