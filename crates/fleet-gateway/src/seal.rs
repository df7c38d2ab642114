//! Sealed session ids: the `Mcp-Session-Id` a client holds carries, encrypted and
//! authenticated (AES-256-GCM), what any gateway replica needs to serve the session —
//! its server, revision, instance, the token that opened it and the upstream's own
//! session id. A replica that has never seen the session opens the id and serves it;
//! no session table is shared. A forged or altered id opens with no key (404, as an
//! unknown session).
//!
//! Keys come from secrets ([`SessionKeys::from_secrets`]): the first seals, every one
//! opens, so a key is rotated by putting the new one first and dropping the old one
//! once the sessions it sealed have ended. Without configured keys the gateway seals
//! with a key of its own, drawn at start: its ids mean nothing to another process.
//!
//! An id is `base64url(key id ‖ nonce ‖ ciphertext ‖ tag)`: the key id (4 bytes of
//! the key's SHA-256) picks the key without trying each, the nonce is 96 random bits.

use std::fmt;
use std::sync::Arc;

use axum::http::HeaderValue;
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use ring::aead::{AES_256_GCM, Aad, LessSafeKey, NONCE_LEN, Nonce, UnboundKey};
use sha2::{Digest as _, Sha256};

use crate::sessions::SessionId;

/// What a sealed plaintext is, its first byte: one kind can never be taken for the other
/// (a new layout gets a new number).
const SESSION: u8 = 1;
const STATE: u8 = 2;
const REPORT: u8 = 3;
const KEY_ID_LEN: usize = 4;
const TAG_LEN: usize = 16;
/// Bound the work spent on a header or state that cannot be one of ours (a report is
/// bounded by its endpoint).
const MAX_ID_LEN: usize = 2 * 1024 * 1024;
/// Binds a ciphertext to its use: a key shared with something else cannot be made to
/// open mcpfleet session ids.
const AAD: &[u8] = b"mcpfleet session id";

/// The keys session ids are sealed and opened with.
#[derive(Clone)]
pub struct SessionKeys {
    keys: Arc<[Key]>,
    /// Configured (shared with other replicas), not drawn at start.
    shared: bool,
}

struct Key {
    id: [u8; KEY_ID_LEN],
    key: LessSafeKey,
}

impl fmt::Debug for SessionKeys {
    // Key ids only: a key has no business in logs.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SessionKeys")
            .field("keys", &self.keys.len())
            .field("shared", &self.shared)
            .finish()
    }
}

/// Why session keys could not be made.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SessionKeyError {
    /// A secret is too short to be a key.
    #[error(
        "session key {index} has {length} characters; a session key needs at least {min} (e.g. `openssl rand -hex 32`)"
    )]
    TooShort {
        /// Its place in the list, from 1.
        index: usize,
        /// Its length.
        length: usize,
        /// The shortest accepted.
        min: usize,
    },
    /// Two entries are the same key.
    #[error("session keys {first} and {second} are the same key")]
    Repeated {
        /// The first place, from 1.
        first: usize,
        /// The second place, from 1.
        second: usize,
    },
    /// The OS has no randomness to give.
    #[error("no randomness for a session key: {0}")]
    Random(String),
}

impl SessionKeys {
    /// The shortest secret accepted as a key: 32 characters (128 bits as hex).
    pub const MIN_SECRET_LEN: usize = 32;

    /// Keys from secrets shared by every replica; the first seals. Each secret is
    /// hashed (SHA-256) into a 256-bit key, so any text of enough length will do.
    ///
    /// No secret at all gives [`Self::ephemeral`] keys.
    ///
    /// # Errors
    /// A secret shorter than [`Self::MIN_SECRET_LEN`], or repeated.
    pub fn from_secrets<S: AsRef<str>>(
        secrets: impl IntoIterator<Item = S>,
    ) -> Result<Self, SessionKeyError> {
        let mut keys: Vec<Key> = Vec::new();
        for (index, secret) in secrets.into_iter().enumerate() {
            let secret = secret.as_ref();
            let length = secret.chars().count();
            if length < Self::MIN_SECRET_LEN {
                return Err(SessionKeyError::TooShort {
                    index: index + 1,
                    length,
                    min: Self::MIN_SECRET_LEN,
                });
            }
            let key = Key::new(Sha256::new_with_prefix(secret.as_bytes()).finalize().into());
            if let Some(first) = keys.iter().position(|k| k.id == key.id) {
                return Err(SessionKeyError::Repeated {
                    first: first + 1,
                    second: index + 1,
                });
            }
            keys.push(key);
        }
        if keys.is_empty() {
            return Self::ephemeral();
        }
        Ok(Self {
            keys: keys.into(),
            shared: true,
        })
    }

    /// One key drawn now, known to this process only.
    ///
    /// # Errors
    /// When the OS has no randomness to give.
    pub fn ephemeral() -> Result<Self, SessionKeyError> {
        let mut key = [0u8; 32];
        getrandom::fill(&mut key).map_err(|e| SessionKeyError::Random(e.to_string()))?;
        Ok(Self {
            keys: Arc::from([Key::new(key)]),
            shared: false,
        })
    }

    /// No key: nothing seals (no session can be opened) and nothing opens; for a
    /// process the OS gives no randomness.
    pub(crate) fn none() -> Self {
        Self {
            keys: Arc::from([]),
            shared: false,
        }
    }

    /// Whether other replicas hold these keys: a session id this gateway does not know
    /// may then be another replica's, to be served rather than refused.
    pub(crate) fn shared(&self) -> bool {
        self.shared
    }

    /// The id a client gets for `session`; `None` when the OS has no randomness for the
    /// nonce.
    pub(crate) fn seal(&self, session: &SealedSession) -> Option<HeaderValue> {
        let mut plain = vec![SESSION];
        session.encode(&mut plain);
        // base64url is visible ASCII: always a valid header value.
        HeaderValue::from_str(&self.seal_bytes(plain)?).ok()
    }

    /// What the session id `value` says, when one of these keys sealed it; `None` for
    /// anything else.
    pub(crate) fn open(&self, value: &HeaderValue) -> Option<SealedSession> {
        match self.open_bytes(value.as_bytes())?.split_first() {
            Some((&SESSION, plain)) => SealedSession::decode(plain),
            _ => None,
        }
    }

    /// The `requestState` a client gets in place of the upstream's (see
    /// [`SealedState`]); `None` when the OS has no randomness for the nonce.
    pub(crate) fn seal_state(&self, state: &SealedState) -> Option<String> {
        let mut plain = vec![STATE];
        state.encode(&mut plain);
        self.seal_bytes(plain)
    }

    /// What a sealed `requestState` says; `None` for anything else (an upstream's own
    /// state, say).
    pub(crate) fn open_state(&self, text: &str) -> Option<SealedState> {
        match self.open_bytes(text.as_bytes())?.split_first() {
            Some((&STATE, plain)) => SealedState::decode(plain),
            _ => None,
        }
    }

    /// A replica's traffic report, sealed for its home (see `reports`).
    pub(crate) fn seal_report(&self, report: &[u8]) -> Option<String> {
        let mut plain = Vec::with_capacity(report.len() + 1);
        plain.push(REPORT);
        plain.extend_from_slice(report);
        self.seal_bytes(plain)
    }

    /// A traffic report sealed with one of these keys.
    pub(crate) fn open_report(&self, sealed: &[u8]) -> Option<Vec<u8>> {
        let mut plain = self.open_bytes(sealed)?;
        (plain.first() == Some(&REPORT)).then(|| plain.split_off(1))
    }

    fn seal_bytes(&self, mut plain: Vec<u8>) -> Option<String> {
        let key = self.keys.first()?;
        let mut nonce = [0u8; NONCE_LEN];
        getrandom::fill(&mut nonce).ok()?;
        key.key
            .seal_in_place_append_tag(
                Nonce::assume_unique_for_key(nonce),
                Aad::from(AAD),
                &mut plain,
            )
            // Only a plaintext longer than GCM allows (64 GiB) fails.
            .ok()?;
        let mut sealed = Vec::with_capacity(KEY_ID_LEN + NONCE_LEN + plain.len());
        sealed.extend_from_slice(&key.id);
        sealed.extend_from_slice(&nonce);
        sealed.extend_from_slice(&plain);
        Some(URL_SAFE_NO_PAD.encode(&sealed))
    }

    /// The plaintext of what one of these keys sealed.
    fn open_bytes(&self, text: &[u8]) -> Option<Vec<u8>> {
        if text.len() > MAX_ID_LEN {
            return None;
        }
        let mut bytes = URL_SAFE_NO_PAD.decode(text).ok()?;
        if bytes.len() < KEY_ID_LEN + NONCE_LEN + TAG_LEN {
            return None;
        }
        let key = self.keys.iter().find(|k| k.id == bytes[..KEY_ID_LEN])?;
        let nonce =
            Nonce::try_assume_unique_for_key(&bytes[KEY_ID_LEN..KEY_ID_LEN + NONCE_LEN]).ok()?;
        let length = key
            .key
            .open_in_place(nonce, Aad::from(AAD), &mut bytes[KEY_ID_LEN + NONCE_LEN..])
            .ok()?
            .len();
        bytes.drain(..KEY_ID_LEN + NONCE_LEN);
        bytes.truncate(length);
        Some(bytes)
    }
}

impl Key {
    fn new(key: [u8; 32]) -> Self {
        let digest: [u8; 32] = Sha256::digest(key).into();
        let mut id = [0u8; KEY_ID_LEN];
        id.copy_from_slice(&digest[..KEY_ID_LEN]);
        Self {
            id,
            // A 32-byte key is what AES-256 takes: this cannot fail.
            key: LessSafeKey::new(
                UnboundKey::new(&AES_256_GCM, &key).expect("a 32-byte AES-256 key"),
            ),
        }
    }
}

/// What a sealed session id carries.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct SealedSession {
    /// The session's key in a gateway's own table.
    pub(crate) id: SessionId,
    pub(crate) server: String,
    pub(crate) revision: u64,
    pub(crate) instance: String,
    /// The name of the token that opened it; `None` without auth.
    pub(crate) token: Option<String>,
    pub(crate) upstream: SealedUpstream,
}

/// The upstream side of a sealed session.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum SealedUpstream {
    /// An HTTP upstream's own session id: any replica can relay to it.
    Http(Vec<u8>),
    /// A place on a stdio link: only the gateway holding the pipes can serve it.
    Stdio,
}

/// Where an MRTR retry goes (MCP 2026-07-28): the upstream's `requestState`, and the
/// revision and instance that issued it. Gateway replicas hand the client this sealed
/// in its place, so a retry that reaches another replica still finds its way; the
/// upstream gets its own state back.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct SealedState {
    pub(crate) server: String,
    pub(crate) revision: u64,
    pub(crate) instance: String,
    pub(crate) state: String,
}

impl SealedState {
    fn encode(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(&self.revision.to_be_bytes());
        put(out, self.server.as_bytes());
        put(out, self.instance.as_bytes());
        out.extend_from_slice(self.state.as_bytes());
    }

    fn decode(mut input: &[u8]) -> Option<Self> {
        let input = &mut input;
        let revision = u64::from_be_bytes(take(input, 8)?.try_into().ok()?);
        let server = text(get(input)?)?;
        let instance = text(get(input)?)?;
        let state = text(input)?;
        Some(Self {
            server,
            revision,
            instance,
            state,
        })
    }
}

impl SealedSession {
    fn encode(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(self.id.as_bytes());
        out.extend_from_slice(&self.revision.to_be_bytes());
        put(out, self.server.as_bytes());
        put(out, self.instance.as_bytes());
        match &self.token {
            Some(name) => {
                out.push(1);
                put(out, name.as_bytes());
            }
            None => out.push(0),
        }
        match &self.upstream {
            SealedUpstream::Http(session) => {
                out.push(1);
                put(out, session);
            }
            SealedUpstream::Stdio => out.push(0),
        }
    }

    fn decode(mut input: &[u8]) -> Option<Self> {
        let input = &mut input;
        let id = SessionId::from_bytes(take(input, SessionId::LEN)?.try_into().ok()?);
        let revision = u64::from_be_bytes(take(input, 8)?.try_into().ok()?);
        let server = text(get(input)?)?;
        let instance = text(get(input)?)?;
        let token = match take(input, 1)? {
            [0] => None,
            [1] => Some(text(get(input)?)?),
            _ => return None,
        };
        let upstream = match take(input, 1)? {
            [0] => SealedUpstream::Stdio,
            [1] => SealedUpstream::Http(get(input)?.to_vec()),
            _ => return None,
        };
        input.is_empty().then_some(Self {
            id,
            server,
            revision,
            instance,
            token,
            upstream,
        })
    }
}

/// A length-prefixed field (u16, big-endian); longer ones are cut (no name or upstream
/// id comes near 64 KiB: the header would be refused long before).
fn put(out: &mut Vec<u8>, field: &[u8]) {
    let field = &field[..field.len().min(usize::from(u16::MAX))];
    let length = u16::try_from(field.len()).unwrap_or(u16::MAX);
    out.extend_from_slice(&length.to_be_bytes());
    out.extend_from_slice(field);
}

fn get<'a>(input: &mut &'a [u8]) -> Option<&'a [u8]> {
    let length = u16::from_be_bytes(take(input, 2)?.try_into().ok()?);
    take(input, usize::from(length))
}

fn take<'a>(input: &mut &'a [u8], n: usize) -> Option<&'a [u8]> {
    if input.len() < n {
        return None;
    }
    let (head, rest) = input.split_at(n);
    *input = rest;
    Some(head)
}

fn text(bytes: &[u8]) -> Option<String> {
    String::from_utf8(bytes.to_vec()).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn session(upstream: SealedUpstream) -> SealedSession {
        SealedSession {
            id: SessionId::mint().unwrap(),
            server: "github".into(),
            revision: 7,
            instance: "github-7-0".into(),
            token: Some("ci".into()),
            upstream,
        }
    }

    const KEY_A: &str = "0123456789abcdef0123456789abcdef";
    const KEY_B: &str = "fedcba9876543210fedcba9876543210";

    #[test]
    fn sealed_ids_open_with_the_same_keys_and_round_trip() {
        let keys = SessionKeys::from_secrets([KEY_A]).unwrap();
        for upstream in [
            SealedUpstream::Http(b"up-123".to_vec()),
            SealedUpstream::Stdio,
        ] {
            let session = session(upstream);
            let id = keys.seal(&session).unwrap();
            assert!(id.to_str().unwrap().bytes().all(|b| b.is_ascii_graphic()));
            let replica = SessionKeys::from_secrets([KEY_A]).unwrap();
            assert_eq!(replica.open(&id), Some(session));
        }
    }

    #[test]
    fn sealed_states_round_trip_and_are_never_taken_for_session_ids() {
        let keys = SessionKeys::from_secrets([KEY_A]).unwrap();
        let state = SealedState {
            server: "api".into(),
            revision: 3,
            instance: "api-3-1".into(),
            state: "opaque \"state\" ü".into(),
        };
        let sealed = keys.seal_state(&state).unwrap();
        assert_eq!(keys.open_state(&sealed), Some(state));
        assert_eq!(keys.open(&HeaderValue::from_str(&sealed).unwrap()), None);
        let id = keys.seal(&session(SealedUpstream::Stdio)).unwrap();
        assert_eq!(keys.open_state(id.to_str().unwrap()), None);
        assert_eq!(keys.open_state("an upstream's own state"), None);
    }

    #[test]
    fn two_seals_of_one_session_differ() {
        let keys = SessionKeys::from_secrets([KEY_A]).unwrap();
        let session = session(SealedUpstream::Stdio);
        assert_ne!(keys.seal(&session).unwrap(), keys.seal(&session).unwrap());
    }

    #[test]
    fn a_rotated_key_still_opens_until_dropped() {
        let old = SessionKeys::from_secrets([KEY_A]).unwrap();
        let session = session(SealedUpstream::Http(b"x".to_vec()));
        let id = old.seal(&session).unwrap();
        let rotated = SessionKeys::from_secrets([KEY_B, KEY_A]).unwrap();
        assert_eq!(rotated.open(&id), Some(session.clone()));
        // New ids are sealed with the new key: a replica without the old one opens them.
        let new_only = SessionKeys::from_secrets([KEY_B]).unwrap();
        assert_eq!(
            new_only.open(&rotated.seal(&session).unwrap()),
            Some(session)
        );
        assert_eq!(new_only.open(&id), None);
    }

    #[test]
    fn other_keys_altered_ids_and_garbage_open_to_nothing() {
        let keys = SessionKeys::from_secrets([KEY_A]).unwrap();
        let id = keys.seal(&session(SealedUpstream::Stdio)).unwrap();
        assert_eq!(SessionKeys::ephemeral().unwrap().open(&id), None);
        let mut altered = id.as_bytes().to_vec();
        let last = altered.len() - 3;
        altered[last] = if altered[last] == b'A' { b'B' } else { b'A' };
        assert_eq!(keys.open(&HeaderValue::from_bytes(&altered).unwrap()), None);
        for garbage in ["", "nope", "AAAA", &"A".repeat(5000), &"A".repeat(70_000)] {
            assert_eq!(keys.open(&HeaderValue::from_str(garbage).unwrap()), None);
        }
    }

    #[test]
    fn short_or_repeated_secrets_are_refused() {
        assert_eq!(
            SessionKeys::from_secrets(["short"]).unwrap_err(),
            SessionKeyError::TooShort {
                index: 1,
                length: 5,
                min: 32
            }
        );
        assert_eq!(
            SessionKeys::from_secrets([KEY_A, KEY_B, KEY_A]).unwrap_err(),
            SessionKeyError::Repeated {
                first: 1,
                second: 3
            }
        );
        assert!(SessionKeys::from_secrets([KEY_A]).unwrap().shared());
        assert!(!SessionKeys::from_secrets::<&str>([]).unwrap().shared());
        assert!(!format!("{:?}", SessionKeys::from_secrets([KEY_A]).unwrap()).contains(KEY_A));
    }
}
