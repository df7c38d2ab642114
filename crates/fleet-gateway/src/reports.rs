//! Replicas' traffic, reported to their home: canary analysis runs in the leading control
//! plane and reads its own gateway's counters ([`TrafficSource`]), while clients may reach
//! any replica. So every replica that has a home and shares its session keys sends the
//! home, every [`INTERVAL`], its cumulative counters per server revision, sealed with
//! those keys (which authenticate it: the endpoint takes no token); the home adds the
//! latest report of each replica to its own counters.
//!
//! A report is a whole snapshot, numbered: a late or replayed one (a lower number) is
//! ignored. A replica that stops reporting keeps its last counters in the sum for
//! [`KEPT`] (they stop growing; dropped at once, the sum would shrink and an interval
//! would read as nothing) — a restarted replica reports under a new id.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{Method, StatusCode, header};
use fleet_routes::traffic::ServerTraffic;
use parking_lot::Mutex;
use serde::{Deserialize, Serialize};

use crate::Shared;

/// How often a replica reports.
pub(crate) const INTERVAL: Duration = Duration::from_secs(1);
/// How long the home keeps the last report of a replica that stopped reporting.
const KEPT: Duration = Duration::from_secs(60 * 60);
/// Where a home takes reports.
pub(crate) const PATH: &str = "/replica/traffic";
/// The largest report accepted (a fleet's worth of revisions is a few kilobytes).
const MAX_REPORT: usize = 1024 * 1024;

/// What a replica reports.
#[derive(Debug, Serialize, Deserialize)]
struct Report {
    /// Drawn when the replica started.
    replica: String,
    /// One more than the replica's last report.
    sequence: u64,
    /// By server.
    servers: BTreeMap<String, ServerTraffic>,
}

/// The latest report of each replica, at the home.
#[derive(Debug, Default)]
pub(crate) struct Reports {
    latest: Mutex<HashMap<String, Latest>>,
}

#[derive(Debug)]
struct Latest {
    received: Instant,
    sequence: u64,
    servers: BTreeMap<String, ServerTraffic>,
}

impl Reports {
    /// Keeps `report` unless an as recent one of its replica is kept.
    fn accept(&self, report: Report) {
        let now = Instant::now();
        let mut latest = self.latest.lock();
        latest.retain(|_, kept| now.duration_since(kept.received) < KEPT);
        if latest
            .get(&report.replica)
            .is_some_and(|kept| kept.sequence >= report.sequence)
        {
            return;
        }
        latest.insert(
            report.replica,
            Latest {
                received: now,
                sequence: report.sequence,
                servers: report.servers,
            },
        );
    }

    /// Adds what replicas reported of `server` to `traffic`.
    pub(crate) fn add_to(&self, server: &str, traffic: &mut ServerTraffic) {
        for kept in self.latest.lock().values() {
            if let Some(reported) = kept.servers.get(server) {
                traffic.add(reported);
            }
        }
    }
}

/// `POST /replica/traffic` at a home: 204 for a report sealed with its keys, 404 for
/// anything else (as if there were nothing here).
pub(crate) async fn receive(State(shared): State<Arc<Shared>>, body: Bytes) -> StatusCode {
    // Keys of its own: no replica can have sealed anything for this gateway.
    let report = (shared.keys.shared() && body.len() <= MAX_REPORT)
        .then(|| shared.keys.open_report(&body))
        .flatten()
        .and_then(|plain| serde_json::from_slice::<Report>(&plain).ok());
    match report {
        Some(report) => {
            shared.reports.accept(report);
            StatusCode::NO_CONTENT
        }
        None => StatusCode::NOT_FOUND,
    }
}

/// A replica's reports to its home, every [`INTERVAL`], for as long as the gateway
/// serves; nothing while it has no home or its keys are its own.
pub(crate) async fn send(shared: Arc<Shared>) {
    let Ok(replica) = getrandom::u64().map(|id| format!("{id:016x}")) else {
        tracing::error!("no randomness for a replica id: traffic is not reported");
        return;
    };
    let mut tick = tokio::time::interval(INTERVAL);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    for sequence in 1.. {
        tick.tick().await;
        let Some(home) = shared.routes.home().filter(|_| shared.keys.shared()) else {
            continue;
        };
        let report = Report {
            replica: replica.clone(),
            sequence,
            servers: shared.registry.all_traffic(),
        };
        let Some(sealed) = serde_json::to_vec(&report)
            .ok()
            .and_then(|plain| shared.keys.seal_report(&plain))
        else {
            continue;
        };
        let Some(uri) = crate::distribution::at_home(&home, PATH) else {
            continue;
        };
        let mut request = hyper::Request::new(Bytes::from(sealed));
        *request.method_mut() = Method::POST;
        *request.uri_mut() = uri;
        request.headers_mut().insert(
            header::CONTENT_TYPE,
            header::HeaderValue::from_static("text/plain"),
        );
        let sent = tokio::time::timeout(INTERVAL, shared.client.request(request)).await;
        match sent {
            Ok(Ok(response)) if response.status().is_success() => {}
            Ok(Ok(response)) => {
                tracing::debug!(status = %response.status(), "the home refused a traffic report");
            }
            Ok(Err(error)) => tracing::debug!(%error, "a traffic report did not reach the home"),
            Err(_) => tracing::debug!("a traffic report timed out"),
        }
    }
}
