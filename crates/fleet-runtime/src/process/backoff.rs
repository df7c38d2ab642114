//! Restart decisions: whether to restart, how long to wait, when to give up. The rules are
//! described in the `process` module docs; every runtime that restarts by the file's policy
//! decides with [`FailureCount`] (the Kubernetes runtime for a stdio pod's ended attach).

use crate::instance::ExitInfo;
use fleet_spec::model::{Restart, RestartPolicyKind};
use std::time::Duration;

/// The shortest wait before any restart.
pub(crate) const MIN_DELAY: Duration = Duration::from_millis(100);

/// The shortest run that resets the failure count, whatever `stable_after` says.
pub(crate) const MIN_STABLE: Duration = Duration::from_secs(1);

/// Why a process ended, as far as the restart policy is concerned.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ending {
    /// It exited by itself (or was killed by someone else).
    Exited(ExitInfo),
    /// The runtime killed it on request (a failed liveness check).
    RestartRequested,
    /// It could not even be spawned.
    SpawnFailed,
}

/// What to do after an ending.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision {
    /// Start again after `delay`; `attempt` consecutive failed starts so far.
    Restart { attempt: u32, delay: Duration },
    /// Too many failed starts in a row.
    GiveUp { failures: u32 },
    /// The policy says not to restart.
    Stay,
}

/// Consecutive failed starts of one instance.
#[derive(Debug, Default)]
pub struct FailureCount(u32);

impl FailureCount {
    /// Records an ending and decides what comes next. `unit` is a uniform random number in
    /// `[0, 1)` for the jitter.
    ///
    /// A run of at least `stable_after` clears the count first, so one failure after a long
    /// stable run waits only `initial`. Then every ending that leads to a restart counts —
    /// including a clean exit under `always`, which would otherwise restart in a tight loop.
    pub fn record(&mut self, restart: &Restart, ending: Ending, unit: f64) -> Decision {
        let (restarts, ran_for) = match ending {
            Ending::Exited(exit) => {
                let restarts = match restart.policy {
                    RestartPolicyKind::Always => true,
                    RestartPolicyKind::OnFailure => exit.is_failure(),
                    RestartPolicyKind::Never => false,
                };
                (restarts, exit.ran_for)
            }
            Ending::RestartRequested => (true, Duration::ZERO),
            // A re-spawn only happens because the policy asked for it.
            Ending::SpawnFailed => (true, Duration::ZERO),
        };
        if ran_for >= restart.stable_after.max(MIN_STABLE) {
            self.0 = 0;
        }
        if !restarts {
            return Decision::Stay;
        }
        self.0 = self.0.saturating_add(1);
        if self.0 >= restart.give_up_after.max(1) {
            return Decision::GiveUp { failures: self.0 };
        }
        Decision::Restart {
            attempt: self.0,
            delay: delay(restart, self.0, unit),
        }
    }

    /// Forgets past failures (an explicit restart).
    pub fn reset(&mut self) {
        self.0 = 0;
    }
}

/// The wait before restart `attempt` (1-based); see the module docs.
pub(crate) fn delay(restart: &Restart, attempt: u32, unit: f64) -> Duration {
    let max = restart.backoff_max.max(MIN_DELAY).as_secs_f64();
    let exponent = i32::try_from(attempt.saturating_sub(1).min(1000)).unwrap_or(1000);
    let base =
        restart.backoff_initial.as_secs_f64() * restart.backoff_multiplier.max(1.0).powi(exponent);
    let base = if base.is_finite() { base.min(max) } else { max };
    let jitter = restart.jitter.clamp(0.0, 1.0) * (2.0 * unit.clamp(0.0, 1.0) - 1.0);
    let seconds = (base * (1.0 + jitter)).clamp(MIN_DELAY.as_secs_f64(), max);
    Duration::from_secs_f64(seconds)
}

/// A uniform random number in `[0, 1)` from the operating system; 0.5 (no jitter) if it is
/// unavailable.
pub fn random_unit() -> f64 {
    getrandom::u64().map_or(0.5, |x| (x >> 11) as f64 / (1u64 << 53) as f64)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn restart(policy: RestartPolicyKind) -> Restart {
        Restart {
            policy,
            backoff_initial: Duration::from_millis(200),
            backoff_max: Duration::from_secs(30),
            backoff_multiplier: 2.0,
            jitter: 0.2,
            give_up_after: 5,
            stable_after: Duration::from_secs(60),
        }
    }

    fn exit(code: i32, ran_for_secs: u64) -> Ending {
        Ending::Exited(ExitInfo {
            code: Some(code),
            signal: None,
            ran_for: Duration::from_secs(ran_for_secs),
            out_of_memory: crate::instance::OutOfMemory::No,
        })
    }

    #[test]
    fn grows_exponentially_up_to_the_cap() {
        let r = restart(RestartPolicyKind::Always);
        let no_jitter = 0.5;
        let delays: Vec<_> = (1..=10)
            .map(|n| delay(&r, n, no_jitter).as_millis())
            .collect();
        assert_eq!(
            delays,
            [200, 400, 800, 1600, 3200, 6400, 12800, 25600, 30000, 30000]
        );
        assert_eq!(delay(&r, u32::MAX, no_jitter), Duration::from_secs(30));
    }

    #[test]
    fn jitter_stays_within_its_fraction_and_under_the_cap() {
        let r = restart(RestartPolicyKind::Always);
        assert_eq!(delay(&r, 3, 0.0).as_millis(), 640);
        assert_eq!(delay(&r, 3, 0.999).as_millis(), 959);
        assert_eq!(delay(&r, 20, 0.999_999_999), Duration::from_secs(30));
        assert_eq!(delay(&r, 20, 0.0), Duration::from_secs(24));
        for _ in 0..1000 {
            let d = delay(&r, 2, random_unit());
            assert!((Duration::from_millis(320)..=Duration::from_millis(480)).contains(&d));
        }
    }

    #[test]
    fn never_waits_less_than_the_floor() {
        let mut r = restart(RestartPolicyKind::Always);
        r.backoff_initial = Duration::from_nanos(1);
        r.backoff_max = Duration::from_nanos(1);
        r.jitter = 1.0;
        assert_eq!(delay(&r, 1, 0.0), MIN_DELAY);
    }

    #[test]
    fn policies() {
        let mut count = FailureCount::default();
        let never = restart(RestartPolicyKind::Never);
        assert_eq!(count.record(&never, exit(1, 0), 0.5), Decision::Stay);

        let on_failure = restart(RestartPolicyKind::OnFailure);
        assert_eq!(count.record(&on_failure, exit(0, 0), 0.5), Decision::Stay);
        assert!(matches!(
            count.record(&on_failure, exit(3, 0), 0.5),
            Decision::Restart { attempt: 1, .. }
        ));

        let mut count = FailureCount::default();
        let always = restart(RestartPolicyKind::Always);
        assert!(matches!(
            count.record(&always, exit(0, 0), 0.5),
            Decision::Restart { attempt: 1, .. }
        ));
        assert!(matches!(
            count.record(&never, Ending::RestartRequested, 0.5),
            Decision::Restart { attempt: 2, .. }
        ));
    }

    #[test]
    fn gives_up_after_consecutive_failures_and_resets_after_a_stable_run() {
        let r = restart(RestartPolicyKind::OnFailure);
        let mut count = FailureCount::default();
        for attempt in 1..5 {
            assert_eq!(
                count.record(&r, exit(1, 1), 0.5),
                Decision::Restart {
                    attempt,
                    delay: delay(&r, attempt, 0.5)
                }
            );
        }
        // A long run wipes the slate: the next failure is attempt 1 again.
        assert!(matches!(
            count.record(&r, exit(1, 61), 0.5),
            Decision::Restart { attempt: 1, .. }
        ));
        for _ in 2..5 {
            count.record(&r, Ending::SpawnFailed, 0.5);
        }
        assert_eq!(
            count.record(&r, exit(1, 0), 0.5),
            Decision::GiveUp { failures: 5 }
        );
    }
}
