//! Canary rollouts: the new revision takes a growing share of new sessions, step by step,
//! while every `analysis.interval` judges it against the stable revision on live
//! traffic ([`crate::analysis`]). `failure_limit` failed intervals in a row abort it;
//! `mcpfleet promote | abort | pause | resume` steer it.
//!
//! A step ends when its pause is over *and* an interval in it passed (too little traffic is
//! never a pass), or on `promote`. A step with `pause: {}` waits for `promote`. After the
//! last step the new revision gets every new session, as in blue-green.

use crate::analysis::{self, IntervalResult};
use crate::report::{
    ANALYSES_KEPT, EventKind, IntervalSummary, RolloutProgress, RolloutState, RolloutStrategy,
    Verdict,
};
use crate::{Engine, EngineError, Release};
use fleet_routes::traffic::ServerTraffic;
use fleet_runtime::Runtime;
use fleet_spec::model::OnAbort;
use std::time::Duration;
use tokio::sync::{mpsc, oneshot};
use tokio::time::Instant;

/// What `mcpfleet promote | abort | pause | resume` asks of a rollout.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RolloutCommand {
    /// End the current step now (at the last step: give the new revision everything).
    Promote,
    /// Stop the rollout: the stable revision gets every session back.
    Abort,
    /// Hold the current step: its pause stops counting down (analysis goes on).
    Pause,
    /// Let a paused step count down again.
    Resume,
}

/// A command, who sent it (see [`Engine::command`]) and the way to tell them it was taken.
type Steering = (RolloutCommand, Option<String>, oneshot::Sender<()>);

/// A rollout in progress: how to steer it and what it shows.
#[derive(Debug)]
pub(crate) struct ActiveRollout {
    pub(crate) commands: mpsc::UnboundedSender<Steering>,
    pub(crate) status: RolloutProgress,
    /// When `mcpfleet pause` held it, while it is held.
    pub(crate) paused_since: Option<Instant>,
}

/// How a step ended.
enum StepEnd {
    /// Its time is over, or (with who asked, when named) `promote` ended it.
    Next { promoted_by: Option<String> },
    /// Aborted: [`EngineError::CanaryAbortedByCommand`] or [`EngineError::AnalysisFailed`].
    Abort(EngineError),
    /// The control plane is stopping: it stops every revision itself.
    Shutdown,
}

impl<R: Runtime + 'static> Engine<R> {
    /// Runs a canary of `new` beside `old`; returns once `new` serves everything.
    ///
    /// # Errors
    /// Why the canary was aborted (analysis, health, `mcpfleet abort`) or did not start; the
    /// stable revision serves again by then.
    pub(crate) async fn canary(&self, old: Release, new: Release) -> Result<(), EngineError> {
        let name = new.server.name.clone();
        let started = self.start_revision(&new).await?;
        let rollout = &new.server.rollout;
        let (commands, mut inbox) = mpsc::unbounded_channel();
        let steps = rollout.steps.len();
        self.set_rollout(
            &name,
            Some(ActiveRollout {
                commands,
                status: RolloutProgress {
                    strategy: RolloutStrategy::Canary,
                    from_revision: old.revision,
                    to_revision: new.revision,
                    step: 0,
                    steps,
                    weight: 0,
                    state: RolloutState::Progressing,
                    failures_in_a_row: 0,
                    analyses: Vec::new(),
                },
                paused_since: None,
            }),
        );
        let mut failures = 0;
        // Who promoted the previous step, named by the event of what follows it.
        let mut promoted_by: Option<String> = None;
        for (index, step) in rollout.steps.iter().enumerate() {
            let weight = step.weight.min(100);
            self.shared.routes.set_weights(
                &name,
                &[(old.revision, 100 - weight), (new.revision, weight)],
            );
            self.update_rollout(&name, |s| {
                s.step = index + 1;
                s.weight = weight;
            });
            self.shared.events.emit_revision(
                EventKind::RolloutStep,
                &name,
                new.revision,
                format!(
                    "step {}/{steps}: {weight}% of new sessions to revision {}{}{}",
                    index + 1,
                    new.revision,
                    match step.pause {
                        Some(pause) =>
                            format!(" for {}", fleet_spec::model::format_duration(pause)),
                        None => ", until `mcpfleet promote`".into(),
                    },
                    promoted_by_suffix(promoted_by.take()),
                ),
            );
            match self
                .run_step(&old, &new, step.pause, &mut inbox, &mut failures)
                .await
            {
                StepEnd::Next { promoted_by: by } => promoted_by = by,
                StepEnd::Abort(why) => return Err(self.abort_canary(&old, &new, why).await),
                StepEnd::Shutdown => {
                    self.set_rollout(&name, None);
                    return Err(EngineError::ShuttingDown);
                }
            }
        }
        self.set_rollout(&name, None);
        self.promote(&old, &new, &started).await;
        self.shared.events.emit_revision(
            EventKind::RolloutPromoted,
            &name,
            new.revision,
            format!(
                "revision {} takes every new session{}",
                new.revision,
                promoted_by_suffix(promoted_by)
            ),
        );
        Ok(())
    }

    /// Waits for one step to end, judging the canary every interval.
    async fn run_step(
        &self,
        old: &Release,
        new: &Release,
        pause: Option<Duration>,
        inbox: &mut mpsc::UnboundedReceiver<Steering>,
        failures: &mut u32,
    ) -> StepEnd {
        let name = &new.server.name;
        let analysis = &new.server.rollout.analysis;
        let mut passed = false;
        // `None`: waiting for `promote` (pause: {}) or paused by `mcpfleet pause`.
        let mut ends_at = pause.map(|p| Instant::now() + p);
        let mut paused_with: Option<Duration> = None;
        // The pause is over; the step waits for a passing interval.
        let mut over = false;
        let mut next_tick = Instant::now() + analysis.interval;
        let mut before = self.traffic(name);
        let mut health_before = self.health_failures(name, new.revision);
        let mut changes = self.shared.changed.subscribe();
        loop {
            if self.shutting_down() {
                return StepEnd::Shutdown;
            }
            let state = match (paused_with, ends_at) {
                (Some(_), _) => RolloutState::Paused,
                (None, None) => RolloutState::WaitingForPromote,
                (None, Some(_)) if over => RolloutState::WaitingForAPassingAnalysis,
                (None, Some(_)) => RolloutState::Progressing,
            };
            self.update_rollout(name, |s| s.state = state);
            self.set_paused_since(name, paused_with.is_some());
            let step_over = async {
                match ends_at {
                    Some(at) => tokio::time::sleep_until(at).await,
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                () = tokio::time::sleep_until(next_tick) => {
                    next_tick += analysis.interval;
                    let after = self.traffic(name);
                    let health = self.health_failures(name, new.revision);
                    let result = analysis::judge(
                        analysis,
                        &before,
                        &after,
                        old.revision,
                        new.revision,
                        health.saturating_sub(health_before),
                    );
                    (before, health_before) = (after, health);
                    // Failures count in a row of judged intervals: a pass resets them, an
                    // inconclusive interval neither counts nor resets. A failure also voids
                    // an earlier pass: the step needs a pass after it.
                    match result.verdict {
                        Verdict::Pass => {
                            *failures = 0;
                            passed = true;
                        }
                        Verdict::Fail => {
                            *failures += 1;
                            passed = false;
                            self.shared.events.emit_revision(
                                EventKind::PerformanceAlert,
                                name,
                                new.revision,
                                format!(
                                    "analysis failed ({} of {} in a row): {}",
                                    failures, analysis.failure_limit, result.reason
                                ),
                            );
                        }
                        Verdict::Inconclusive => {}
                    }
                    let limit_reached = *failures >= analysis.failure_limit.max(1);
                    self.record_analysis(name, &result, *failures);
                    if limit_reached {
                        return StepEnd::Abort(EngineError::AnalysisFailed {
                            failures: *failures,
                            reason: result.reason.clone(),
                        });
                    }
                    if passed && over && paused_with.is_none() {
                        return StepEnd::Next { promoted_by: None };
                    }
                }
                // Any change of the fleet's state: the loop's head looks for a shutdown.
                _ = changes.changed() => {}
                () = step_over, if !over && paused_with.is_none() && ends_at.is_some() => {
                    if passed {
                        return StepEnd::Next { promoted_by: None };
                    }
                    // Over, but nothing has passed yet: the next passing interval ends it.
                    over = true;
                }
                steering = inbox.recv() => {
                let (command, by) = match steering {
                    Some((command, by, taken)) => {
                        // The sender may have gone (a client that hung up): the command holds.
                        let _ = taken.send(());
                        (Some(command), by)
                    }
                    None => (None, None),
                };
                match command {
                    Some(RolloutCommand::Promote) => return StepEnd::Next { promoted_by: by },
                    Some(RolloutCommand::Abort) | None => {
                        return StepEnd::Abort(EngineError::CanaryAbortedByCommand { by });
                    }
                    Some(RolloutCommand::Pause) => {
                        if paused_with.is_none() {
                            paused_with = Some(ends_at.map_or(Duration::ZERO, |at| {
                                at.saturating_duration_since(Instant::now())
                            }));
                            if pause.is_some() {
                                ends_at = None;
                            }
                            self.shared.events.emit_revision(
                                EventKind::RolloutPaused,
                                name,
                                new.revision,
                                format!(
                                    "the canary of revision {} is paused until `mcpfleet resume`{}",
                                    new.revision,
                                    by.map(|by| format!(" (paused by {by})")).unwrap_or_default()
                                ),
                            );
                        }
                    }
                    Some(RolloutCommand::Resume) => {
                        if let Some(left) = paused_with.take()
                            && pause.is_some()
                        {
                            ends_at = Some(Instant::now() + left);
                        }
                    }
                }
                }
            }
        }
    }

    /// Ends a canary: the stable revision gets every new session back; the canary's
    /// sessions end (clients re-initialize onto stable) or drain, per `on_abort`; its
    /// instances stop. Returns `why`.
    async fn abort_canary(&self, old: &Release, new: &Release, why: EngineError) -> EngineError {
        let name = &new.server.name;
        self.shared.events.emit_revision(
            EventKind::RollbackStarted,
            name,
            new.revision,
            format!("aborting the canary of revision {}: {why}", new.revision),
        );
        self.set_rollout(name, None);
        self.shared.set_failed(name, new.revision, true);
        let reason = match why {
            EngineError::CanaryAbortedByCommand { .. } => "abort",
            _ => "analysis",
        };
        self.shared.update(|s| s.count_rollback(name, reason));
        match new.server.rollout.on_abort {
            OnAbort::EndSessions => {
                self.shared.routes.set_weights(name, &[(old.revision, 100)]);
                self.stop_revision(name, new.revision).await;
            }
            OnAbort::Drain => {
                self.shared
                    .routes
                    .set_weights(name, &[(old.revision, 100), (new.revision, 0)]);
                let draining = self.monitors_of(name, new.revision);
                self.retire_after(
                    new.server.rollout.rollback_window,
                    name,
                    new.revision,
                    draining,
                );
            }
        }
        self.shared.events.emit_revision(
            EventKind::RollbackCompleted,
            name,
            old.revision,
            format!("revision {} serves every new session again", old.revision),
        );
        why
    }

    /// Steers the rollout of `server`; returns once the rollout has taken the command.
    /// `by` names who asked (`admin:ops`, an admin token's holder) in the events and the
    /// outcome the command brings; `None`: the admin socket's `mcpfleet` commands.
    ///
    /// # Errors
    /// `server` has no rollout in progress, or it ended before it took the command.
    pub async fn command(
        &self,
        server: &str,
        command: RolloutCommand,
        by: Option<&str>,
    ) -> Result<(), EngineError> {
        let ended = || EngineError::RolloutEnded(server.to_owned());
        let (taken, acknowledged) = oneshot::channel();
        {
            let rollouts = self.shared.rollouts.lock();
            let active = rollouts
                .get(server)
                .ok_or_else(|| EngineError::NoRollout(server.to_owned()))?;
            active
                .commands
                .send((command, by.map(str::to_owned), taken))
                .map_err(|_| ended())?;
        }
        acknowledged.await.map_err(|_| ended())
    }

    fn set_rollout(&self, server: &str, rollout: Option<ActiveRollout>) {
        let mut rollouts = self.shared.rollouts.lock();
        match rollout {
            Some(r) => rollouts.insert(server.to_string(), r),
            None => rollouts.remove(server),
        };
        drop(rollouts);
        self.shared.changed.send_modify(|v| *v += 1);
    }

    /// Marks when the rollout of `server` was paused (kept while it stays paused), or that
    /// it is not.
    fn set_paused_since(&self, server: &str, paused: bool) {
        let mut rollouts = self.shared.rollouts.lock();
        if let Some(active) = rollouts.get_mut(server) {
            active.paused_since = match (paused, active.paused_since) {
                (false, _) => None,
                (true, since) => Some(since.unwrap_or_else(Instant::now)),
            };
        }
    }

    fn update_rollout(&self, server: &str, change: impl FnOnce(&mut RolloutProgress)) {
        let mut rollouts = self.shared.rollouts.lock();
        if let Some(active) = rollouts.get_mut(server) {
            change(&mut active.status);
        }
    }

    /// Keeps `result` as the rollout's newest interval, judged in its current step.
    fn record_analysis(&self, server: &str, result: &IntervalResult, failures: u32) {
        let at = crate::state::now();
        // Seconds to milliseconds; an unbounded p95 (the `+Inf` bucket) shows as none.
        let ms = |p: Option<f64>| p.filter(|p| p.is_finite()).map(|p| p * 1000.0);
        self.update_rollout(server, |s| {
            s.failures_in_a_row = failures;
            if s.analyses.len() == ANALYSES_KEPT {
                s.analyses.remove(0);
            }
            s.analyses.push(IntervalSummary {
                at,
                step: s.step,
                verdict: result.verdict,
                requests: result.requests,
                error_rate: result.error_rate,
                canary_p95_ms: ms(result.canary_p95),
                stable_p95_ms: ms(result.stable_p95),
                reason: result.reason.clone(),
            });
        });
    }

    /// `server`'s traffic counters now (none without a source: every interval
    /// inconclusive).
    fn traffic(&self, server: &str) -> ServerTraffic {
        self.shared
            .traffic
            .get()
            .map(|source| source.traffic(server))
            .unwrap_or_default()
    }

    fn shutting_down(&self) -> bool {
        self.shared.state.lock().shutting_down()
    }

    fn health_failures(&self, server: &str, revision: u64) -> u64 {
        self.shared.state.lock().check_failures_of(server, revision)
    }
}

/// ` (promoted by admin:ops)` after the event that follows a named promote; nothing else.
fn promoted_by_suffix(by: Option<String>) -> String {
    by.map(|by| format!(" (promoted by {by})"))
        .unwrap_or_default()
}
