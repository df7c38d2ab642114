//! Gateway sessions: the ids the gateway mints and what each maps to (server,
//! revision, instance, upstream session id). A session is pinned to its revision and
//! instance for life, and bound to the token that opened it (another token, however
//! valid, gets 404 on it); it ends on `DELETE`, after the idle timeout, when the
//! upstream forgets it (404), or when its instance leaves the route table.
//!
//! Sessions are bounded: at most `max_sessions` in all and `max_sessions_per_caller`
//! per token (per client address without auth). A new session over either limit ends
//! the least recently used *idle* session (no request in flight) of the caller that
//! holds the most — the newcomer's own when it is over its limit — and is refused only
//! when every candidate is busy. A full per-session stdio pool is freed the same way,
//! so one token cannot keep a pool to itself with sessions it no longer uses.
//!
//! In memory, one map behind a mutex that is never held across an await (nor while a
//! session is dropped: dropping a stdio session gives its process back). A client holds
//! a sealed id (`seal.rs`); a gateway that does not know it opens it and adopts the
//! session. The maps hash with foldhash, seeded per process: they only ever hold ids the
//! gateway minted or opened, and SipHash over a sealed id (~150 characters) showed in the
//! request path's profile.

use parking_lot::Mutex;
use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use axum::http::HeaderValue;
use foldhash::fast::RandomState;

use crate::distribution::Instance;
use crate::seal::{SealedSession, SealedUpstream};
use crate::security::Caller;
use fleet_stdio::StdioLease;
use fleet_stdio::link::Attachment;

/// A session's key in this gateway's table: 128 random bits, sealed into the id the
/// client holds (see [`crate::seal`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) struct SessionId([u8; SessionId::LEN]);

impl SessionId {
    pub(crate) const LEN: usize = 16;

    /// A fresh id from the OS's cryptographic random source.
    ///
    /// # Errors
    /// When the OS has no randomness to give.
    pub(crate) fn mint() -> Result<Self, getrandom::Error> {
        let mut bytes = [0u8; Self::LEN];
        getrandom::fill(&mut bytes)?;
        Ok(Self(bytes))
    }

    pub(crate) fn from_bytes(bytes: [u8; Self::LEN]) -> Self {
        Self(bytes)
    }

    pub(crate) fn as_bytes(&self) -> &[u8; Self::LEN] {
        &self.0
    }
}

/// What a gateway session maps to.
#[derive(Debug)]
pub(crate) struct Session {
    pub(crate) server: Arc<str>,
    /// Who opened it: with auth its token, which alone may use it.
    pub(crate) caller: Caller,
    pub(crate) revision: u64,
    pub(crate) instance: Arc<Instance>,
    pub(crate) upstream: SessionUpstream,
    /// POSTs of this session being answered (their answer streams included).
    pub(crate) in_flight: Arc<AtomicUsize>,
}

impl Session {
    /// What the id of this session, `id` in the table, carries.
    pub(crate) fn sealed(&self, id: SessionId) -> SealedSession {
        SealedSession {
            id,
            server: self.server.to_string(),
            revision: self.revision,
            instance: self.instance.id.clone(),
            token: self.caller.token_name().map(str::to_owned),
            upstream: match &self.upstream {
                SessionUpstream::Http(session) => SealedUpstream::Http(session.as_bytes().to_vec()),
                SessionUpstream::Stdio { .. } => SealedUpstream::Stdio,
            },
        }
    }

    /// A stdio session whose process has ended: its slot is free for a new session.
    pub(crate) fn process_gone(&self) -> bool {
        matches!(&self.upstream, SessionUpstream::Stdio { attachment, .. } if attachment.is_closed())
    }

    /// Counts a request in flight until the returned guard drops; `None` when
    /// `limit` are already. The guard does not keep the session (and its process)
    /// alive: an open GET stream must not outlive its session.
    pub(crate) fn begin(&self, limit: usize) -> Option<InFlight> {
        let admitted = self
            .in_flight
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                (n < limit).then_some(n + 1)
            })
            .is_ok();
        admitted.then(|| InFlight(Arc::clone(&self.in_flight)))
    }
}

/// One request in flight on a session.
#[derive(Debug)]
pub(crate) struct InFlight(Arc<AtomicUsize>);

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

/// The upstream side of a session.
#[derive(Debug)]
pub(crate) enum SessionUpstream {
    /// The HTTP upstream's `Mcp-Session-Id`.
    Http(HeaderValue),
    /// The session's place on a stdio link; for `isolation: per-session`, also the
    /// process lent to it (given back after the attachment is dropped: fields drop in
    /// order).
    Stdio {
        attachment: Attachment,
        _lease: Option<StdioLease>,
    },
}

#[derive(Debug)]
struct Entry {
    session: Arc<Session>,
    /// The sealed id its client holds.
    header: HeaderValue,
    last_used: Instant,
    idle_timeout: Duration,
}

impl Entry {
    /// Unused for its idle timeout — and no POST in flight: a long tool call keeps its
    /// session (an open GET stream does not).
    fn expired(&self, now: Instant) -> bool {
        now.duration_since(self.last_used) >= self.idle_timeout
            && self.session.in_flight.load(Ordering::Acquire) == 0
    }
}

impl Entry {
    fn idle(&self) -> bool {
        self.session.in_flight.load(Ordering::Acquire) == 0
    }
}

#[derive(Debug, Default)]
struct State {
    sessions: HashMap<SessionId, Entry, RandomState>,
    /// Each session by the sealed id its client holds (kept with `sessions`): a request
    /// whose id is one of these needs no decryption — it was opened or minted here
    /// already.
    by_header: HashMap<HeaderValue, SessionId, RandomState>,
    /// Live sessions per caller (kept with `sessions`).
    per_caller: HashMap<Caller, usize>,
}

impl State {
    fn remove(&mut self, id: &SessionId) -> Option<Arc<Session>> {
        let entry = self.sessions.remove(id)?;
        self.by_header.remove(&entry.header);
        if let Some(count) = self.per_caller.get_mut(&entry.session.caller) {
            *count -= 1;
            if *count == 0 {
                self.per_caller.remove(&entry.session.caller);
            }
        }
        Some(entry.session)
    }

    /// The least recently used idle session among those `eligible`, of the caller that
    /// holds the most of them.
    fn least_recently_used(&self, eligible: impl Fn(&Entry) -> bool) -> Option<SessionId> {
        let mut held: HashMap<&Caller, usize> = HashMap::new();
        for entry in self.sessions.values().filter(|e| eligible(e)) {
            *held.entry(&entry.session.caller).or_default() += 1;
        }
        let idle = || {
            self.sessions
                .iter()
                .filter(|(_, e)| e.idle() && eligible(e))
        };
        let biggest = idle()
            .map(|(_, e)| &e.session.caller)
            .max_by_key(|caller| held.get(caller).copied().unwrap_or(0))?;
        idle()
            .filter(|(_, e)| &e.session.caller == biggest)
            .min_by_key(|(_, e)| e.last_used)
            .map(|(id, _)| *id)
    }
}

/// The session limits (see the module docs).
#[derive(Debug, Clone, Copy)]
pub(crate) struct Limits {
    pub(crate) max_sessions: usize,
    pub(crate) max_sessions_per_caller: usize,
}

/// Why no session could be made.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Full {
    /// The gateway holds `max` sessions, all busy.
    Gateway { max: usize },
    /// The caller holds `max` sessions, all busy.
    Caller { max: usize },
}

impl Full {
    /// The refusal of request `id`.
    pub(crate) fn refusal(self, id: Option<serde_json::Value>) -> crate::GatewayError {
        match self {
            Self::Gateway { max } => crate::GatewayError::GatewayFull { max, id },
            Self::Caller { max } => crate::GatewayError::CallerFull { max, id },
        }
    }
}

/// Every live session.
#[derive(Debug)]
pub(crate) struct Sessions {
    state: Mutex<State>,
    idle_timeout: Duration,
    limits: Mutex<Limits>,
}

impl Sessions {
    pub(crate) fn new(idle_timeout: Duration, limits: Limits) -> Self {
        Self {
            state: Mutex::default(),
            idle_timeout,
            limits: Mutex::new(limits),
        }
    }

    /// New limits, for the next new session.
    pub(crate) fn set_limits(&self, limits: Limits) {
        *self.limits.lock() = limits;
    }

    fn state(&self) -> parking_lot::MutexGuard<'_, State> {
        self.state.lock()
    }

    /// Remembers a session under `id`, its client holding it as `header` (minted here,
    /// or by the replica that opened it: see `seal`). `idle_timeout` shortens the
    /// gateway's for this session (a per-session process's own timeout).
    pub(crate) fn insert_as(
        &self,
        id: SessionId,
        header: HeaderValue,
        session: Arc<Session>,
        idle_timeout: Option<Duration>,
    ) {
        let now = Instant::now();
        let idle_timeout = idle_timeout.map_or(self.idle_timeout, |t| t.min(self.idle_timeout));
        let mut state = self.state();
        // Two requests adopting one session at once: the second replaces the first.
        let replaced = state.remove(&id);
        *state.per_caller.entry(session.caller.clone()).or_default() += 1;
        state.by_header.insert(header.clone(), id);
        state.sessions.insert(
            id,
            Entry {
                session,
                header,
                last_used: now,
                idle_timeout,
            },
        );
        drop(state);
        drop(replaced);
    }

    /// Makes room for a new session of `caller` within the limits, ending idle sessions
    /// as the module docs say; returns those it ended (to be dropped by the caller, out
    /// of the lock: a stdio session gives its process back, an HTTP one should be told).
    /// Concurrent new sessions may overshoot a limit by their number.
    ///
    /// # Errors
    /// [`Full`] when a limit is reached and every candidate session is busy.
    pub(crate) fn make_room(&self, caller: &Caller) -> Result<Vec<Arc<Session>>, Full> {
        let Limits {
            max_sessions,
            max_sessions_per_caller,
        } = *self.limits.lock();
        let mut state = self.state();
        let mut ended = Vec::new();
        while state.per_caller.get(caller).copied().unwrap_or(0) >= max_sessions_per_caller {
            let victim = state
                .least_recently_used(|e| &e.session.caller == caller)
                .ok_or(Full::Caller {
                    max: max_sessions_per_caller,
                })?;
            ended.extend(state.remove(&victim));
        }
        while state.sessions.len() >= max_sessions {
            let victim = state
                .least_recently_used(|_| true)
                .ok_or(Full::Gateway { max: max_sessions })?;
            ended.extend(state.remove(&victim));
        }
        Ok(ended)
    }

    /// Ends the least recently used idle session on `instance` (a full per-session
    /// pool), of the caller holding the most there.
    pub(crate) fn end_one_idle_on(&self, instance: &Arc<Instance>) -> Option<Arc<Session>> {
        let mut state = self.state();
        let victim = state.least_recently_used(|e| Arc::ptr_eq(&e.session.instance, instance))?;
        state.remove(&victim)
    }

    /// How often [`sweep`](Self::sweep) should run.
    pub(crate) fn sweep_interval(&self) -> Duration {
        (self.idle_timeout / 4).clamp(Duration::from_millis(100), Duration::from_secs(1))
    }

    /// Ends every session idle past its timeout and returns them (dropping one gives
    /// back its process; an HTTP upstream should be told with a DELETE).
    pub(crate) fn sweep(&self) -> Vec<Arc<Session>> {
        let now = Instant::now();
        let mut state = self.state();
        let expired: Vec<SessionId> = state
            .sessions
            .iter()
            .filter(|(_, entry)| entry.expired(now) || entry.session.process_gone())
            .map(|(id, _)| *id)
            .collect();
        expired.iter().filter_map(|id| state.remove(id)).collect()
    }

    /// The session whose client holds `header`, of `server`, marked as used, for
    /// `caller`; `None` when not known here (by that id), expired, another server's or
    /// (with auth) another token's.
    pub(crate) fn touch(
        &self,
        header: &HeaderValue,
        server: &str,
        caller: &Caller,
    ) -> Option<(SessionId, Arc<Session>)> {
        let now = Instant::now();
        let mut state = self.state();
        let id = *state.by_header.get(header)?;
        let entry = state.sessions.get_mut(&id)?;
        if entry.expired(now) {
            let expired = state.remove(&id);
            drop(state);
            drop(expired);
            return None;
        }
        if &*entry.session.server != server || !entry.session.caller.may_use(caller) {
            return None;
        }
        entry.last_used = now;
        Some((id, Arc::clone(&entry.session)))
    }

    pub(crate) fn remove(&self, id: &SessionId) {
        let removed = self.state().remove(id);
        drop(removed);
    }

    /// Live sessions per server.
    pub(crate) fn active_per_server(&self) -> BTreeMap<String, u64> {
        let now = Instant::now();
        let state = self.state();
        let mut counts = BTreeMap::new();
        for entry in state.sessions.values() {
            if !entry.expired(now) {
                *counts.entry(entry.session.server.to_string()).or_insert(0) += 1;
            }
        }
        counts
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_differ() {
        assert_ne!(SessionId::mint().unwrap(), SessionId::mint().unwrap());
    }
}
