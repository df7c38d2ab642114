//! The leadership lease's rules, the same in every backend. A backend reads the lease's one
//! row and the database's clock inside a transaction that holds its write lock, asks these
//! functions what to write, and writes it: so two control planes acquiring at once are
//! decided one after the other, and a fenced write sees the lease as the last acquire left
//! it.
//!
//! Times are compared as text: both come from the database's clock in the stores' one
//! format (RFC 3339, UTC, milliseconds), which sorts as it reads.

use crate::{Lease, LeaseInfo, StoreError};
use std::time::Duration;

/// The longest a lease may be taken or renewed for. A leader renews every few seconds; a
/// day is far beyond any use and keeps every expiry inside four-digit years.
const MAX_TTL: Duration = Duration::from_secs(24 * 60 * 60);

/// The database's clock, read once in the call's transaction.
#[derive(Debug)]
pub(crate) struct Clock {
    /// Now.
    pub(crate) now: String,
    /// Now plus the call's ttl: the expiry it writes.
    pub(crate) expires: String,
}

/// `ttl` in whole milliseconds, at least 1 and at most [`MAX_TTL`].
pub(crate) fn ttl_millis(ttl: Duration) -> Result<u32, StoreError> {
    u32::try_from(ttl.as_millis())
        .ok()
        .filter(|&ms| ms >= 1 && ttl <= MAX_TTL)
        .ok_or_else(|| StoreError::Invalid {
            what: format!(
                "a lease's ttl must be between 1 ms and {} s, not {ttl:?}",
                MAX_TTL.as_secs()
            ),
        })
}

/// What acquiring for `holder` writes: a new lease with the next token when none is live
/// (never taken, released or expired), the same lease with a later expiry when `holder`'s
/// own is live, nothing when another holder's is.
pub(crate) fn acquire(current: Option<Lease>, holder: &str, clock: Clock) -> Option<Lease> {
    let next = |token| Lease {
        holder: holder.to_owned(),
        token,
        acquired_at: clock.now.clone(),
        expires_at: clock.expires.clone(),
    };
    match current {
        None => Some(next(1)),
        // The row keeps the last token handed out, also after a release: never reused.
        Some(last) if last.expires_at <= clock.now => Some(next(last.token.saturating_add(1))),
        Some(live) if live.holder == holder => Some(Lease {
            expires_at: clock.expires,
            ..live
        }),
        Some(_) => None,
    }
}

/// What renewing `lease` writes: a later expiry while its token is the current one — also
/// past its expiry if no one took the lease since (no one else can have led meanwhile).
pub(crate) fn renew(
    current: Option<Lease>,
    lease: &Lease,
    clock: Clock,
) -> Result<Lease, StoreError> {
    match current {
        Some(held) if held.token == lease.token => Ok(Lease {
            expires_at: clock.expires,
            ..held
        }),
        other => Err(fenced(lease.token, other)),
    }
}

/// What releasing `lease` writes: its expiry moved to now, if it is the current lease and
/// not lapsed already; nothing if it was superseded.
pub(crate) fn release(current: Option<Lease>, lease: &Lease, now: String) -> Option<Lease> {
    current
        .filter(|held| held.token == lease.token && held.expires_at > now)
        .map(|held| Lease {
            expires_at: now,
            ..held
        })
}

/// A fenced handle's write may go ahead only while `token` is the current lease's.
pub(crate) fn check_fence(current: Option<Lease>, token: u64) -> Result<(), StoreError> {
    match current {
        Some(held) if held.token == token => Ok(()),
        other => Err(fenced(token, other)),
    }
}

/// The lease as status shows it, live or not by `now`.
pub(crate) fn info(current: Lease, now: &str) -> LeaseInfo {
    LeaseInfo {
        live: current.expires_at.as_str() > now,
        holder: current.holder,
        token: current.token,
        acquired_at: current.acquired_at,
        expires_at: current.expires_at,
    }
}

fn fenced(mine: u64, current: Option<Lease>) -> StoreError {
    let (holder, token) = current.map(|c| (c.holder, c.token)).unzip();
    StoreError::Fenced {
        mine,
        holder,
        token,
    }
}
