//! What the gateway is told at start: listen address, tokens, limits, timeouts.

use std::net::{Ipv4Addr, SocketAddr};
use std::time::Duration;

use crate::audit::AuditSink;
use crate::seal::SessionKeys;
use crate::tls::ServerTls;

/// How the gateway behaves; everything but the routes.
#[derive(Debug, Clone)]
pub struct GatewayConfig {
    /// The data-plane listen address. Its IP (when not unspecified) is an allowed
    /// `Host` besides the loopback names.
    pub listen: SocketAddr,
    /// Bearer tokens. When any is configured, every `/mcp` request needs one.
    pub tokens: Vec<TokenConfig>,
    /// Extra `Host` names (without port) accepted besides loopback and the listen IP.
    pub allowed_hosts: Vec<String>,
    /// Extra exact origins (`scheme://host[:port]`) accepted besides loopback pages.
    pub allowed_origins: Vec<String>,
    /// Largest accepted request body.
    pub max_body_bytes: usize,
    /// Most of a JSON (non-SSE) upstream answer the gateway keeps while relaying it, to
    /// count a JSON-RPC error and audit a tool call; a larger one is relayed all the same.
    pub max_response_bytes: usize,
    /// How long an upstream may stay silent: before its response head, and between the
    /// parts of a request's answer (never a bound on the whole answer).
    pub upstream_timeout: Duration,
    /// A session unused this long is forgotten (its next request gets 404).
    pub session_idle_timeout: Duration,
    /// Per token (or per client IP without auth); `None` = no limit.
    pub rate_limit: Option<RateLimit>,
    /// Requests in flight on one session, at most; more get 429.
    pub max_session_concurrency: usize,
    /// Live sessions, at most (idle ones are ended to make room; see `sessions`).
    pub max_sessions: usize,
    /// Live sessions per token (per client address without auth), at most.
    pub max_sessions_per_token: usize,
    /// Where a record of every tool call goes; `None` = counted, not recorded.
    pub audit: Option<AuditSink>,
    /// How long a client may take to send a request head: from the accept for a
    /// connection's first request, from the head's first byte for later ones.
    pub header_read_timeout: Duration,
    /// How long a request body may take to arrive in full, after its head.
    pub body_read_timeout: Duration,
    /// How long a kept-alive connection may wait for its next request, and a client may
    /// take none of its answer before it is disconnected.
    pub idle_timeout: Duration,
    /// The certificate and key the listener shows; `None` = plain HTTP.
    pub tls: Option<ServerTls>,
    /// The keys session ids are sealed with, shared by every replica; `None` = a key
    /// drawn at start (the ids mean nothing to another process).
    pub session_keys: Option<SessionKeys>,
}

impl GatewayConfig {
    /// Defaults: 4 MiB bodies, 60 s upstream timeout, 30 min idle sessions, 64
    /// requests in flight per session, 20,000 sessions (5,000 per token), 10 s to send
    /// a request head, 30 s for its body, 60 s idle keep-alive connections, plain HTTP,
    /// no tokens, no rate limit, no audit sink,
    /// loopback hosts and origins only.
    pub fn new(listen: SocketAddr) -> Self {
        Self {
            listen,
            tokens: Vec::new(),
            allowed_hosts: Vec::new(),
            allowed_origins: Vec::new(),
            max_body_bytes: 4 * 1024 * 1024,
            max_response_bytes: 16 * 1024 * 1024,
            upstream_timeout: Duration::from_secs(60),
            session_idle_timeout: Duration::from_secs(30 * 60),
            rate_limit: None,
            max_session_concurrency: 64,
            max_sessions: 20_000,
            max_sessions_per_token: 5_000,
            audit: None,
            header_read_timeout: Duration::from_secs(10),
            body_read_timeout: Duration::from_secs(30),
            idle_timeout: Duration::from_secs(60),
            tls: None,
            session_keys: None,
        }
    }
}

impl Default for GatewayConfig {
    /// [`GatewayConfig::new`] on `127.0.0.1:7470`.
    fn default() -> Self {
        Self::new(SocketAddr::from((Ipv4Addr::LOCALHOST, 7470)))
    }
}

/// A token bucket: `per_second` refill, `burst` capacity.
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct RateLimit {
    /// Sustained requests per second.
    pub per_second: f64,
    /// Requests allowed at once after an idle period.
    pub burst: u32,
}

/// A bearer token the gateway accepts, known only by its SHA-256.
#[derive(Clone, PartialEq, Eq)]
pub struct TokenConfig {
    pub(crate) name: String,
    pub(crate) sha256: [u8; 32],
    /// `None` = every server (`"*"`).
    pub(crate) servers: Option<Vec<String>>,
}

impl std::fmt::Debug for TokenConfig {
    // The hash is not a secret, but it has no business in logs either.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TokenConfig")
            .field("name", &self.name)
            .field("servers", &self.servers)
            .finish_non_exhaustive()
    }
}

/// Why a token could not be configured.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TokenConfigError {
    /// `sha256` is not 64 hexadecimal digits.
    #[error("token `{name}`: sha256 must be 64 hexadecimal digits")]
    BadHash {
        /// The token's name.
        name: String,
    },
    /// The server list is empty: the token could reach nothing.
    #[error("token `{name}`: no servers (use \"*\" for all)")]
    NoServers {
        /// The token's name.
        name: String,
    },
}

impl TokenConfig {
    /// A token named `name` whose SHA-256 is `sha256_hex`, allowed on `servers`
    /// (`"*"` anywhere in the list = all servers).
    ///
    /// # Errors
    /// [`TokenConfigError::BadHash`] when the hash is not 64 hex digits,
    /// [`TokenConfigError::NoServers`] for an empty server list.
    pub fn new(
        name: impl Into<String>,
        sha256_hex: &str,
        servers: impl IntoIterator<Item = impl Into<String>>,
    ) -> Result<Self, TokenConfigError> {
        let name = name.into();
        let Some(sha256) = decode_hex32(sha256_hex) else {
            return Err(TokenConfigError::BadHash { name });
        };
        let servers: Vec<String> = servers.into_iter().map(Into::into).collect();
        if servers.is_empty() {
            return Err(TokenConfigError::NoServers { name });
        }
        let servers = if servers.iter().any(|s| s == "*") {
            None
        } else {
            Some(servers)
        };
        Ok(Self {
            name,
            sha256,
            servers,
        })
    }

    /// The token's name (for audit and metrics; never the token).
    pub fn name(&self) -> &str {
        &self.name
    }

    pub(crate) fn allows(&self, server: &str) -> bool {
        self.servers
            .as_ref()
            .is_none_or(|servers| servers.iter().any(|s| s == server))
    }
}

/// Lower- or upper-case hex → 32 bytes (a token's SHA-256 as fleet files write it).
pub fn decode_hex32(text: &str) -> Option<[u8; 32]> {
    let bytes = text.as_bytes();
    if bytes.len() != 64 {
        return None;
    }
    let mut out = [0u8; 32];
    for (i, pair) in bytes.chunks_exact(2).enumerate() {
        let hi = (pair[0] as char).to_digit(16)?;
        let lo = (pair[1] as char).to_digit(16)?;
        out[i] = u8::try_from(hi * 16 + lo).ok()?;
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_are_validated() {
        let hash = "ab".repeat(32);
        let token = TokenConfig::new("ci", &hash, ["a"]).unwrap();
        assert!(token.allows("a"));
        assert!(!token.allows("b"));
        assert!(
            TokenConfig::new("ci", &hash, ["a", "*"])
                .unwrap()
                .allows("b")
        );
        assert_eq!(
            TokenConfig::new("ci", "abc", ["*"]),
            Err(TokenConfigError::BadHash { name: "ci".into() })
        );
        assert_eq!(
            TokenConfig::new("ci", &hash, Vec::<String>::new()),
            Err(TokenConfigError::NoServers { name: "ci".into() })
        );
        assert!(!format!("{token:?}").contains(&hash));
    }
}
