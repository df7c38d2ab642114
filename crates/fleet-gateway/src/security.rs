//! Request admission: `Host` and `Origin` (DNS rebinding), bearer tokens (SHA-256,
//! constant-time comparison, scoped to servers) and per-client token buckets.

use std::net::{IpAddr, SocketAddr};
use std::num::NonZeroU32;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use axum::http::{HeaderMap, Request, header};
use governor::Quota;
use governor::clock::Clock as _;
use sha2::{Digest as _, Sha256};

use crate::config::{GatewayConfig, RateLimit, TokenConfig};
use crate::error::GatewayError;

const LOOPBACK_HOSTS: [&str; 4] = ["localhost", "127.0.0.1", "[::1]", "::1"];

/// Host and Origin rules.
#[derive(Debug)]
pub(crate) struct OriginPolicy {
    hosts: Vec<String>,
    origins: Vec<String>,
}

impl OriginPolicy {
    pub(crate) fn new(config: &GatewayConfig) -> Self {
        let mut hosts: Vec<String> = LOOPBACK_HOSTS.iter().map(|h| (*h).to_owned()).collect();
        let ip = config.listen.ip();
        if !ip.is_unspecified() {
            hosts.push(match ip {
                IpAddr::V4(v4) => v4.to_string(),
                IpAddr::V6(v6) => format!("[{v6}]"),
            });
        }
        hosts.extend(config.allowed_hosts.iter().map(|h| h.to_ascii_lowercase()));
        let origins = config
            .allowed_origins
            .iter()
            .map(|o| o.trim_end_matches('/').to_ascii_lowercase())
            .collect();
        Self { hosts, origins }
    }

    /// [`OriginPolicy::check`] on `request`'s `Host` (or its URI's authority) and
    /// `Origin`.
    ///
    /// # Errors
    /// [`GatewayError::HostNotAllowed`] or [`GatewayError::OriginNotAllowed`].
    pub(crate) fn check_request<B>(&self, request: &Request<B>) -> Result<(), GatewayError> {
        let host = request
            .headers()
            .get(header::HOST)
            .and_then(|h| h.to_str().ok())
            .or_else(|| request.uri().authority().map(|a| a.as_str()));
        self.check(
            host,
            request
                .headers()
                .get(header::ORIGIN)
                .map(|origin| origin.as_bytes()),
        )
    }

    /// # Errors
    /// [`GatewayError::HostNotAllowed`] or [`GatewayError::OriginNotAllowed`].
    fn check(&self, host: Option<&str>, origin: Option<&[u8]>) -> Result<(), GatewayError> {
        let host = host.map(host_name).ok_or(GatewayError::HostNotAllowed)?;
        if !self.hosts.iter().any(|h| h.eq_ignore_ascii_case(host)) {
            return Err(GatewayError::HostNotAllowed);
        }
        if let Some(origin) = origin {
            let origin = std::str::from_utf8(origin).map_err(|_| GatewayError::OriginNotAllowed)?;
            if !(is_loopback_origin(origin)
                || self.origins.iter().any(|o| o.eq_ignore_ascii_case(origin)))
            {
                return Err(GatewayError::OriginNotAllowed);
            }
        }
        Ok(())
    }
}

/// `host[:port]` → `host` (`[v6]:port` → `[v6]`).
fn host_name(authority: &str) -> &str {
    if authority.starts_with('[') {
        return authority
            .find(']')
            .map_or(authority, |end| &authority[..=end]);
    }
    match authority.rsplit_once(':') {
        Some((host, port)) if !host.contains(':') && port.bytes().all(|b| b.is_ascii_digit()) => {
            host
        }
        _ => authority,
    }
}

/// `http(s)://localhost|127.0.0.1|[::1]` with any port.
fn is_loopback_origin(origin: &str) -> bool {
    let Some(rest) = origin
        .strip_prefix("http://")
        .or_else(|| origin.strip_prefix("https://"))
    else {
        return false;
    };
    let host = host_name(rest);
    let port_ok = match rest.strip_prefix(host) {
        Some("") => true,
        Some(port) => port
            .strip_prefix(':')
            .is_some_and(|p| !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit())),
        None => false,
    };
    port_ok
        && ["localhost", "127.0.0.1", "[::1]"]
            .iter()
            .any(|h| h.eq_ignore_ascii_case(host))
}

/// Who a request is, for scoping and rate limiting.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub(crate) enum Caller {
    /// The name of the token it presented (names are unique; a token set replaced while
    /// the gateway runs keeps each name's rate-limit bucket).
    Token(Arc<str>),
    /// No auth configured: the client's IP (unspecified when unknown, e.g. in
    /// `oneshot` tests).
    Client(IpAddr),
}

/// The configured tokens.
#[derive(Debug)]
pub(crate) struct Tokens {
    tokens: Vec<TokenConfig>,
}

impl Tokens {
    pub(crate) fn new(tokens: Vec<TokenConfig>) -> Self {
        Self { tokens }
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.tokens.is_empty()
    }

    /// Authenticates the request and checks the token's scope for `server`.
    ///
    /// # Errors
    /// [`GatewayError::Unauthorized`] without a valid token (when tokens are
    /// configured), [`GatewayError::TokenNotAllowed`] for a token of other servers.
    pub(crate) fn authorize(
        &self,
        headers: &HeaderMap,
        peer: SocketAddr,
        server: &str,
    ) -> Result<Caller, GatewayError> {
        if self.tokens.is_empty() {
            return Ok(Caller::Client(peer.ip()));
        }
        let token = presented_token(headers, self.tokens.iter().map(|t| &t.sha256))
            .and_then(|index| self.tokens.get(index))
            .ok_or(GatewayError::Unauthorized)?;
        if !token.allows(server) {
            return Err(GatewayError::TokenNotAllowed {
                server: server.to_owned(),
            });
        }
        Ok(Caller::Token(Arc::from(token.name.as_str())))
    }
}

impl Caller {
    /// Whether `other` may use what this caller opened: with auth only the same token;
    /// without, anyone who reaches the gateway (addresses are no identity).
    pub(crate) fn may_use(&self, other: &Caller) -> bool {
        match (self, other) {
            (Caller::Token(mine), Caller::Token(theirs)) => mine == theirs,
            (Caller::Client(_), Caller::Client(_)) => true,
            _ => false,
        }
    }

    /// The name of the token it presented, if any.
    pub(crate) fn token_name(&self) -> Option<&str> {
        match self {
            Caller::Token(name) => Some(name),
            Caller::Client(_) => None,
        }
    }
}

/// Which of `hashes` (the SHA-256 of each known token) the `Authorization: Bearer` token of
/// `headers` is: its index; `None` without a bearer token or for an unknown one. The
/// gateway's tokens and the control plane's admin tokens are matched by it alike.
pub fn presented_token<'a>(
    headers: &HeaderMap,
    hashes: impl IntoIterator<Item = &'a [u8; 32]>,
) -> Option<usize> {
    let presented = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| bearer(v.as_bytes()))?;
    let digest: [u8; 32] = Sha256::digest(presented).into();
    // Every hash is compared, and each comparison takes the same time whatever the bytes:
    // no early exit reveals how much of a hash matched.
    let mut found = None;
    for (index, hash) in hashes.into_iter().enumerate() {
        if constant_time_eq(&digest, hash) {
            found = Some(index);
        }
    }
    found
}

/// `Bearer <token>` (scheme case-insensitive) → the token bytes.
fn bearer(value: &[u8]) -> Option<&[u8]> {
    const SCHEME: &[u8] = b"bearer ";
    if value.len() <= SCHEME.len() || !value[..SCHEME.len()].eq_ignore_ascii_case(SCHEME) {
        return None;
    }
    let token = value[SCHEME.len()..].trim_ascii();
    (!token.is_empty()).then_some(token)
}

fn constant_time_eq(a: &[u8; 32], b: &[u8; 32]) -> bool {
    let mut difference = 0u8;
    for (x, y) in a.iter().zip(b) {
        difference |= x ^ y;
    }
    std::hint::black_box(difference) == 0
}

/// Token buckets per caller, as GCRA states (governor's keyed limiter): each caller's
/// state is one atomic in a sharded concurrent map, so callers never wait on a lock
/// shared by all requests. Semantics are a token bucket's: `burst` requests at once,
/// refilled at `per_second`.
pub(crate) struct RateLimiter {
    buckets: Option<KeyedBuckets>,
    /// Admissions so far, to sweep the map every [`SWEEP_EVERY`] of them.
    admitted: AtomicU64,
}

type KeyedBuckets = governor::DefaultKeyedRateLimiter<Caller>;

impl std::fmt::Debug for RateLimiter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RateLimiter")
            .field("callers", &self.buckets.as_ref().map(|b| b.len()))
            .finish_non_exhaustive()
    }
}

/// Callers remembered before buckets that refilled completely (they carry no state
/// worth keeping) are forgotten.
const BUCKET_SWEEP_THRESHOLD: usize = 4096;
/// How often (in admissions) the number of callers is checked against
/// [`BUCKET_SWEEP_THRESHOLD`]: the sweep is O(callers), so it is amortized over at
/// least as many requests.
const SWEEP_EVERY: u64 = 4096;
/// The longest `Retry-After`.
const MAX_RETRY_AFTER: Duration = Duration::from_secs(3600);

impl RateLimiter {
    pub(crate) fn new(limit: Option<RateLimit>) -> Self {
        let buckets = limit.map(|limit| {
            // One request's worth of refill; at least a nanosecond (governor's unit).
            let period = Duration::from_secs_f64(1.0 / limit.per_second.max(f64::MIN_POSITIVE))
                .max(Duration::from_nanos(1));
            let burst = NonZeroU32::new(limit.burst).unwrap_or(NonZeroU32::MIN);
            let quota = Quota::with_period(period)
                .unwrap_or_else(|| Quota::per_second(NonZeroU32::MAX))
                .allow_burst(burst);
            KeyedBuckets::keyed(quota)
        });
        Self {
            buckets,
            admitted: AtomicU64::new(0),
        }
    }

    /// Takes one request from `caller`'s bucket.
    ///
    /// # Errors
    /// [`GatewayError::RateLimited`] when the bucket is empty, with the time until it
    /// holds a request again.
    pub(crate) fn admit(&self, caller: &Caller) -> Result<(), GatewayError> {
        let Some(buckets) = &self.buckets else {
            return Ok(());
        };
        if self.admitted.fetch_add(1, Ordering::Relaxed) % SWEEP_EVERY == SWEEP_EVERY - 1
            && buckets.len() >= BUCKET_SWEEP_THRESHOLD
        {
            buckets.retain_recent();
            buckets.shrink_to_fit();
        }
        buckets.check_key(caller).map_err(|not_until| {
            let wait = not_until.wait_time_from(buckets.clock().now());
            GatewayError::RateLimited {
                retry_after: wait.min(MAX_RETRY_AFTER),
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Instant;

    #[test]
    fn host_names_lose_their_port() {
        assert_eq!(host_name("localhost:7470"), "localhost");
        assert_eq!(host_name("[::1]:7470"), "[::1]");
        assert_eq!(host_name("::1"), "::1");
        assert_eq!(host_name("example.com"), "example.com");
    }

    #[test]
    fn loopback_origins_with_any_port() {
        assert!(is_loopback_origin("http://localhost:3000"));
        assert!(is_loopback_origin("https://127.0.0.1"));
        assert!(is_loopback_origin("http://[::1]:1"));
        assert!(!is_loopback_origin("http://localhost.evil.com"));
        assert!(!is_loopback_origin("http://localhost:3000@evil.com"));
        assert!(!is_loopback_origin("null"));
        assert!(!is_loopback_origin("ftp://localhost"));
    }

    #[test]
    fn bearer_tokens_are_extracted() {
        assert_eq!(bearer(b"Bearer abc"), Some(&b"abc"[..]));
        assert_eq!(bearer(b"bearer  abc "), Some(&b"abc"[..]));
        assert_eq!(bearer(b"Basic abc"), None);
        assert_eq!(bearer(b"Bearer "), None);
    }

    #[test]
    fn buckets_refuse_past_the_burst() {
        let limiter = RateLimiter::new(Some(RateLimit {
            per_second: 0.001,
            burst: 2,
        }));
        let caller = Caller::Token(Arc::from("ci"));
        assert!(limiter.admit(&caller).is_ok());
        assert!(limiter.admit(&caller).is_ok());
        assert!(matches!(
            limiter.admit(&caller),
            Err(GatewayError::RateLimited { .. })
        ));
        assert!(limiter.admit(&Caller::Token(Arc::from("other"))).is_ok());
    }

    #[test]
    fn a_refused_request_is_told_when_the_bucket_holds_one_again() {
        // One request per 100 s: the wait after the burst is about that, never more.
        let limiter = RateLimiter::new(Some(RateLimit {
            per_second: 0.01,
            burst: 1,
        }));
        let caller = Caller::Client(IpAddr::V4(std::net::Ipv4Addr::LOCALHOST));
        assert!(limiter.admit(&caller).is_ok());
        let Err(GatewayError::RateLimited { retry_after }) = limiter.admit(&caller) else {
            panic!("the second request within the period was admitted");
        };
        assert!(
            retry_after > Duration::from_secs(99) && retry_after <= Duration::from_secs(100),
            "{retry_after:?}"
        );
    }

    #[test]
    fn a_bucket_refills_at_the_configured_rate() {
        let limiter = RateLimiter::new(Some(RateLimit {
            per_second: 50.0,
            burst: 1,
        }));
        let caller = Caller::Token(Arc::from("ci"));
        assert!(limiter.admit(&caller).is_ok());
        let Err(GatewayError::RateLimited { retry_after }) = limiter.admit(&caller) else {
            panic!("admitted past the burst");
        };
        assert!(retry_after <= Duration::from_millis(20), "{retry_after:?}");
        // Refusals take nothing from the bucket: asking again and again, the request is
        // admitted once a refill's time has passed.
        let refused = Instant::now();
        while limiter.admit(&caller).is_err() {
            assert!(refused.elapsed() < Duration::from_secs(5), "never refilled");
            std::thread::yield_now();
        }
        assert!(refused.elapsed() >= Duration::from_millis(10));
    }

    #[test]
    fn many_callers_at_once_each_get_their_own_burst() {
        let limiter = Arc::new(RateLimiter::new(Some(RateLimit {
            per_second: 0.001,
            burst: 3,
        })));
        let threads: Vec<_> = (0..8u8)
            .map(|t| {
                let limiter = Arc::clone(&limiter);
                std::thread::spawn(move || {
                    (0..500u16)
                        .map(|c| {
                            let caller = Caller::Client(IpAddr::V4(std::net::Ipv4Addr::new(
                                10,
                                t,
                                (c >> 8) as u8,
                                c as u8,
                            )));
                            (0..5).filter(|_| limiter.admit(&caller).is_ok()).count()
                        })
                        .collect::<Vec<_>>()
                })
            })
            .collect();
        for thread in threads {
            assert!(thread.join().unwrap().iter().all(|admitted| *admitted == 3));
        }
    }

    #[test]
    fn full_buckets_are_forgotten_past_the_threshold() {
        // A refill in a microsecond: every bucket is full again by the sweep.
        let limiter = RateLimiter::new(Some(RateLimit {
            per_second: 1_000_000.0,
            burst: 1,
        }));
        let callers = 2 * BUCKET_SWEEP_THRESHOLD;
        for c in 0..callers {
            let caller = Caller::Token(Arc::from(format!("t{c}")));
            assert!(limiter.admit(&caller).is_ok());
        }
        for _ in 0..SWEEP_EVERY {
            let _ = limiter.admit(&Caller::Token(Arc::from("ci")));
        }
        let remembered = limiter.buckets.as_ref().map_or(0, |b| b.len());
        assert!(remembered < callers / 2, "{remembered} callers remembered");
    }
}
