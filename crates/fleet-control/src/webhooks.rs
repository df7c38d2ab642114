//! Webhooks: the fleet file's `notifications.webhooks` receivers are POSTed the rollout and
//! deployment events they subscribe to, signed, in order, retried.
//!
//! Owns: mapping engine events to webhook events, the bodies (mcpfleet's JSON or a Slack
//! line), the signature, one bounded ordered queue and one sender task per receiver, and
//! retries. The engine is never waited on: this module reads the engine's event channel
//! (the one the event log and the SSE stream read) in a task of its own, and a push onto a
//! receiver's queue only takes a lock; a slow or failing receiver delays its own queue and
//! nothing else. Does not own: which events the engine emits (fleet-engine), the
//! receivers' configuration (fleet-spec checks it).
//!
//! Delivery is at least once: an attempt that timed out may have reached the receiver and
//! is tried again.
//!
//! The signature is HMAC-SHA256 written out from RFC 2104 over the workspace's `sha2`
//! ([`hmac_sha256`], checked against RFC 4231's vectors) rather than one more crate for
//! twenty lines.

use crate::runtime::FleetRuntime;
use fleet_engine::Engine;
use fleet_engine::report::{Event, EventKind};
use fleet_spec::model::{ValidFleet, Webhook, WebhookEvent, WebhookFormat};
use fleet_spec::template::{Host, InstanceTemplates};
use parking_lot::Mutex;
use sha2::{Digest, Sha256};
use std::collections::VecDeque;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};
use tokio::sync::Notify;
use tokio::sync::broadcast::error::RecvError;

/// The most deliveries waiting for one receiver; past it the oldest is dropped.
const QUEUE_CAPACITY: usize = 1_000;

/// Attempts of one delivery before it is given up.
const ATTEMPTS: u32 = 6;

/// The wait before the second attempt; each further one waits twice as long.
const FIRST_BACKOFF: Duration = Duration::from_millis(500);

/// The longest wait between attempts, a receiver's `Retry-After` included.
const MAX_BACKOFF: Duration = Duration::from_secs(60);

/// The webhooks of the running fleet.
#[derive(Clone)]
pub(crate) struct Webhooks {
    inner: Arc<Inner>,
}

struct Inner {
    fleet: String,
    host: Arc<dyn Host>,
    /// `Err`: why no webhook can be sent (reqwest refused the TLS settings).
    client: Result<reqwest::Client, String>,
    receivers: Mutex<Vec<Receiver>>,
}

impl std::fmt::Debug for Webhooks {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Webhooks")
            .field("receivers", &self.inner.receivers.lock().len())
            .finish_non_exhaustive()
    }
}

impl Webhooks {
    /// Starts reading `engine`'s events, from its first on; nothing is sent until
    /// [`Webhooks::configure`] names receivers.
    pub(crate) fn start(engine: &Engine<FleetRuntime>, fleet: &str, host: Arc<dyn Host>) -> Self {
        let client = reqwest::Client::builder()
            .tls_backend_preconfigured(fleet_tls::client_config())
            .user_agent(concat!("mcpfleet/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| format!("cannot build the HTTP client: {e}"));
        let webhooks = Webhooks {
            inner: Arc::new(Inner {
                fleet: fleet.to_owned(),
                host,
                client,
                receivers: Mutex::new(Vec::new()),
            }),
        };
        let (history, mut events) = engine.subscribe();
        let dispatcher = webhooks.clone();
        tokio::spawn(async move {
            for event in history {
                dispatcher.dispatch(&event);
            }
            loop {
                match events.recv().await {
                    Ok(event) => dispatcher.dispatch(&event),
                    Err(RecvError::Lagged(missed)) => {
                        tracing::warn!(
                            "webhooks: {missed} events went by unsent (too many at once)"
                        );
                    }
                    Err(RecvError::Closed) => return,
                }
            }
        });
        webhooks
    }

    /// Takes `fleet`'s receivers (a deployment's, as it starts). A receiver configured as
    /// before keeps its queue and its task; the others' undelivered events are dropped.
    /// A receiver whose URL or secret cannot be rendered (an unset environment variable) is
    /// left out, with an error in the log.
    pub(crate) fn configure(&self, fleet: &ValidFleet) {
        let client = match &self.inner.client {
            Ok(client) => client,
            Err(why) if !fleet.notifications.is_empty() => {
                tracing::error!("webhooks: {why}; none is sent");
                return;
            }
            Err(_) => return,
        };
        let mut receivers = self.inner.receivers.lock();
        let mut before = std::mem::take(&mut *receivers);
        let templates = InstanceTemplates::new(fleet, self.inner.host.clone(), None, 0);
        for config in &fleet.notifications.webhooks {
            if let Some(same) = before.iter().position(|r| r.config == *config) {
                receivers.push(before.swap_remove(same));
                continue;
            }
            let target = templates
                .as_ref()
                .map_err(|e| e.message.clone())
                .and_then(|t| Target::render(config, t));
            match target {
                Ok(target) => {
                    receivers.push(Receiver::start(config.clone(), target, client.clone()));
                }
                Err(why) => {
                    tracing::error!("webhook {}: {why}; nothing is sent to it", config.url.shown)
                }
            }
        }
    }

    /// Queues `event` for every receiver that subscribes to it. Never waits.
    fn dispatch(&self, event: &Event) {
        let Some(kind) = webhook_event(event) else {
            return;
        };
        let fact = Fact {
            event: kind,
            fleet: &self.inner.fleet,
            source: event,
        };
        for receiver in self.inner.receivers.lock().iter() {
            if receiver.config.events.contains(&kind) {
                receiver.queue.push(Delivery {
                    event: kind,
                    body: fact.body(receiver.config.format),
                });
            }
        }
    }
}

/// The webhook event an engine event is, if any. A deployment-wide rollback's start is
/// not one of its own: its end (`rolled-back`) and the deployment's (`failed`) follow.
fn webhook_event(event: &Event) -> Option<WebhookEvent> {
    Some(match event.kind {
        EventKind::DeploymentStarted => WebhookEvent::Started,
        EventKind::RolloutStep => WebhookEvent::Step,
        EventKind::RolloutPaused => WebhookEvent::Paused,
        EventKind::RollbackStarted if event.server.is_some() => WebhookEvent::Aborted,
        EventKind::RollbackCompleted => WebhookEvent::RolledBack,
        EventKind::RolloutPromoted => WebhookEvent::Promoted,
        EventKind::DeploymentFailed => WebhookEvent::Failed,
        EventKind::DeploymentCompleted => WebhookEvent::Succeeded,
        _ => return None,
    })
}

/// What a webhook tells, before it is written in a receiver's format.
struct Fact<'a> {
    event: WebhookEvent,
    fleet: &'a str,
    source: &'a Event,
}

impl Fact<'_> {
    fn body(&self, format: WebhookFormat) -> Vec<u8> {
        let e = self.source;
        let value = match format {
            WebhookFormat::Json => {
                let mut body = serde_json::json!({
                    "event": self.event.as_str(),
                    "fleet": self.fleet,
                    "message": e.message,
                    "time": e.time,
                });
                if let Some(server) = &e.server {
                    body["server"] = server.as_str().into();
                }
                if let Some(revision) = e.revision {
                    body["revision"] = revision.into();
                }
                if let Some(deployment) = e.deployment {
                    body["deployment"] = deployment.into();
                }
                body
            }
            WebhookFormat::Slack => serde_json::json!({ "text": self.line() }),
        };
        serde_json::to_vec(&value).unwrap_or_default()
    }

    /// `mcpfleet demo: aborted (server api, revision 2, deployment 3) at <time>: <message>`.
    fn line(&self) -> String {
        let e = self.source;
        let mut about = Vec::new();
        if let Some(server) = &e.server {
            about.push(format!("server {server}"));
        }
        if let Some(revision) = e.revision {
            about.push(format!("revision {revision}"));
        }
        if let Some(deployment) = e.deployment {
            about.push(format!("deployment {deployment}"));
        }
        let about = if about.is_empty() {
            String::new()
        } else {
            format!(" ({})", about.join(", "))
        };
        format!(
            "mcpfleet {}: {}{about} at {}: {}",
            self.fleet,
            self.event.as_str(),
            e.time,
            e.message
        )
    }
}

/// One event on its way to one receiver.
struct Delivery {
    event: WebhookEvent,
    body: Vec<u8>,
}

/// Where a receiver is reached, its secret rendered.
struct Target {
    url: reqwest::Url,
    /// The URL as the fleet file shows it (a secret in it as `***`): what the log says.
    shown: String,
    key: Option<Vec<u8>>,
    timeout: Duration,
}

impl Target {
    fn render(config: &Webhook, templates: &InstanceTemplates) -> Result<Target, String> {
        let rendered = templates.render_fleet(&config.url).map_err(|e| e.message)?;
        // Validation checks a URL it can see; one holding a secret is checked here, and
        // the message never repeats it.
        let url = reqwest::Url::parse(&rendered)
            .ok()
            .filter(|u| matches!(u.scheme(), "http" | "https") && u.host().is_some())
            .ok_or("the URL, with its secret in it, is not an http(s) URL")?;
        let key = config
            .secret
            .as_ref()
            .map(|secret| templates.render_fleet(secret).map(String::into_bytes))
            .transpose()
            .map_err(|e| e.message)?;
        Ok(Target {
            url,
            shown: config.url.shown.clone(),
            key,
            timeout: config.timeout,
        })
    }
}

/// A receiver of the running fleet: its queue and the task that empties it.
struct Receiver {
    config: Webhook,
    queue: Arc<Queue>,
    sender: tokio::task::JoinHandle<()>,
}

impl Drop for Receiver {
    fn drop(&mut self) {
        self.sender.abort();
    }
}

impl Receiver {
    fn start(config: Webhook, target: Target, client: reqwest::Client) -> Receiver {
        let queue = Arc::new(Queue::default());
        let pending = queue.clone();
        let sender = tokio::spawn(async move {
            loop {
                let delivery = pending.next().await;
                deliver(&client, &target, &delivery).await;
            }
        });
        Receiver {
            config,
            queue,
            sender,
        }
    }
}

/// A receiver's deliveries in event order, at most [`QUEUE_CAPACITY`].
#[derive(Default)]
struct Queue {
    pending: Mutex<VecDeque<Delivery>>,
    added: Notify,
}

impl Queue {
    fn push(&self, delivery: Delivery) {
        let mut pending = self.pending.lock();
        if pending.len() >= QUEUE_CAPACITY
            && let Some(dropped) = pending.pop_front()
        {
            tracing::warn!(
                "webhooks: a receiver is {QUEUE_CAPACITY} events behind; its oldest ({}) is dropped",
                dropped.event.as_str()
            );
        }
        pending.push_back(delivery);
        drop(pending);
        self.added.notify_one();
    }

    async fn next(&self) -> Delivery {
        loop {
            // Registered before looking, so a push in between still wakes this.
            let added = self.added.notified();
            if let Some(delivery) = self.pending.lock().pop_front() {
                return delivery;
            }
            added.await;
        }
    }
}

/// How one attempt went.
enum Attempt {
    Delivered,
    /// Worth another try, after at least the receiver's `Retry-After`.
    Retry {
        why: String,
        after: Option<Duration>,
    },
    /// The receiver refused it (a 4xx other than 429): another try would be refused too.
    Refused(String),
}

/// Sends one delivery, retrying with exponential backoff; gives up (with an error in the
/// log) after [`ATTEMPTS`] or at a refusal.
async fn deliver(client: &reqwest::Client, target: &Target, delivery: &Delivery) {
    let mut backoff = FIRST_BACKOFF;
    for attempt in 1..=ATTEMPTS {
        let why = match send(client, target, delivery).await {
            Attempt::Delivered => return,
            Attempt::Refused(why) => {
                tracing::error!(
                    "webhook {}: the {} event was refused ({why}); it is not sent again",
                    target.shown,
                    delivery.event.as_str()
                );
                return;
            }
            Attempt::Retry { why, after } => {
                if attempt < ATTEMPTS {
                    let wait = after.unwrap_or(backoff).min(MAX_BACKOFF);
                    tracing::warn!(
                        "webhook {}: the {} event was not delivered ({why}); trying again in {wait:?}",
                        target.shown,
                        delivery.event.as_str()
                    );
                    tokio::time::sleep(wait).await;
                    backoff = (backoff * 2).min(MAX_BACKOFF);
                }
                why
            }
        };
        if attempt == ATTEMPTS {
            tracing::error!(
                "webhook {}: the {} event was given up after {ATTEMPTS} attempts (last: {why})",
                target.shown,
                delivery.event.as_str()
            );
        }
    }
}

async fn send(client: &reqwest::Client, target: &Target, delivery: &Delivery) -> Attempt {
    let timestamp = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default()
        .as_secs()
        .to_string();
    let mut request = client
        .post(target.url.clone())
        .timeout(target.timeout)
        .header(reqwest::header::CONTENT_TYPE, "application/json")
        .header("X-Mcpfleet-Event", delivery.event.as_str())
        .header("X-Mcpfleet-Timestamp", &timestamp);
    if let Some(key) = &target.key {
        request = request.header(
            "X-Mcpfleet-Signature",
            signature(key, &timestamp, &delivery.body),
        );
    }
    let response = match request.body(delivery.body.clone()).send().await {
        Ok(response) => response,
        // Never the URL: it may hold a secret.
        Err(e) => {
            return Attempt::Retry {
                why: request_failure(&e),
                after: None,
            };
        }
    };
    let status = response.status();
    if status.is_success() {
        Attempt::Delivered
    } else if status.is_server_error() || status == reqwest::StatusCode::TOO_MANY_REQUESTS {
        Attempt::Retry {
            why: format!("answered {status}"),
            after: retry_after(response.headers()),
        }
    } else {
        Attempt::Refused(format!("answered {status}"))
    }
}

/// What went wrong with a request, without its URL.
fn request_failure(e: &reqwest::Error) -> String {
    if e.is_timeout() {
        "no answer in time".into()
    } else if e.is_connect() {
        "cannot connect".into()
    } else {
        "the connection failed".into()
    }
}

/// `Retry-After` in seconds (its HTTP-date form is left to the backoff).
fn retry_after(headers: &reqwest::header::HeaderMap) -> Option<Duration> {
    let seconds = headers
        .get(reqwest::header::RETRY_AFTER)?
        .to_str()
        .ok()?
        .trim()
        .parse::<u64>()
        .ok()?;
    Some(Duration::from_secs(seconds))
}

/// `sha256=<hex of HMAC-SHA256(key, "<timestamp>.<body>")>`: what `X-Mcpfleet-Signature`
/// carries. The timestamp inside lets a receiver refuse an old delivery replayed.
pub(crate) fn signature(key: &[u8], timestamp: &str, body: &[u8]) -> String {
    let mut signed = Vec::with_capacity(timestamp.len() + 1 + body.len());
    signed.extend_from_slice(timestamp.as_bytes());
    signed.push(b'.');
    signed.extend_from_slice(body);
    format!("sha256={}", hex(&hmac_sha256(key, &signed)))
}

/// Lowercase hexadecimal, two digits a byte.
fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// HMAC-SHA256 (RFC 2104): `H((K ^ opad) || H((K ^ ipad) || message))`, the key padded
/// to SHA-256's 64-byte block (hashed first when longer).
fn hmac_sha256(key: &[u8], message: &[u8]) -> [u8; 32] {
    const BLOCK: usize = 64;
    let mut padded = [0u8; BLOCK];
    if key.len() > BLOCK {
        padded[..32].copy_from_slice(&Sha256::digest(key));
    } else {
        padded[..key.len()].copy_from_slice(key);
    }
    let inner = Sha256::new()
        .chain_update(padded.map(|b| b ^ 0x36))
        .chain_update(message)
        .finalize();
    Sha256::new()
        .chain_update(padded.map(|b| b ^ 0x5c))
        .chain_update(inner)
        .finalize()
        .into()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hmac_sha256_gives_rfc_4231s_results_for_short_and_long_keys() {
        // RFC 4231, test cases 2 (a key shorter than the block) and 6 (longer: hashed).
        assert_eq!(
            hex(&hmac_sha256(b"Jefe", b"what do ya want for nothing?")),
            "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
        );
        assert_eq!(
            hex(&hmac_sha256(
                &[0xaa; 131],
                b"Test Using Larger Than Block-Size Key - Hash Key First"
            )),
            "60e431591ee0b67f0d8a26aacbf5b77f8e0bc6213728c5140546040f0ee37f54"
        );
    }

    #[test]
    fn a_full_queue_drops_its_oldest_delivery_and_keeps_the_order_of_the_rest() {
        let queue = Queue::default();
        for i in 0..=QUEUE_CAPACITY {
            queue.push(Delivery {
                event: WebhookEvent::Step,
                body: i.to_string().into_bytes(),
            });
        }
        let pending = queue.pending.lock();
        assert_eq!(pending.len(), QUEUE_CAPACITY);
        assert_eq!(pending.front().unwrap().body, b"1");
        assert_eq!(
            pending.back().unwrap().body,
            QUEUE_CAPACITY.to_string().into_bytes()
        );
    }

    fn event(kind: EventKind, server: Option<&str>) -> Event {
        Event {
            time: "2026-12-05T14:00:00.000Z".into(),
            kind,
            server: server.map(str::to_owned),
            revision: server.map(|_| 2),
            deployment: Some(3),
            instance: None,
            message: "m".into(),
        }
    }

    #[test]
    fn a_canarys_abort_is_aborted_and_a_deployments_rollback_start_is_nothing() {
        let canary = event(EventKind::RollbackStarted, Some("api"));
        assert_eq!(webhook_event(&canary), Some(WebhookEvent::Aborted));
        let deployment = event(EventKind::RollbackStarted, None);
        assert_eq!(webhook_event(&deployment), None);
        assert_eq!(
            webhook_event(&event(EventKind::ServerReady, Some("api"))),
            None
        );
    }

    #[test]
    fn a_slack_body_is_one_line_of_text_with_every_fact() {
        let e = event(EventKind::RollbackStarted, Some("api"));
        let fact = Fact {
            event: WebhookEvent::Aborted,
            fleet: "demo",
            source: &e,
        };
        let body: serde_json::Value =
            serde_json::from_slice(&fact.body(WebhookFormat::Slack)).unwrap();
        assert_eq!(
            body,
            serde_json::json!({
                "text": "mcpfleet demo: aborted (server api, revision 2, deployment 3) at 2026-12-05T14:00:00.000Z: m"
            })
        );
    }
}
