//! How a running server moves from its serving revision to a new one: the strategies of
//! `rollout.strategy` (DESIGN.md §9), and putting a server back the way it was.
//!
//! Traffic moves through the route table's weights: a revision the table leaves out takes
//! no traffic and its sessions end; weight 0 keeps its sessions (they drain).

use crate::instance_id::Replica;
use crate::monitor::InstanceMonitor;
use crate::report::{EventKind, ServerState};
use crate::state::FleetState;
use crate::{Engine, EngineError, Release, replica_count};
use fleet_runtime::Runtime;
use fleet_spec::model::{Strategy, Transport};
use std::sync::Arc;

impl<R: Runtime + 'static> Engine<R> {
    /// Replaces `old` with `new` by `new`'s strategy; returns once `new` serves.
    ///
    /// # Errors
    /// Why `new` did not become ready. Strategies that keep `old` running until `new` is
    /// ready (blue-green, rolling) leave `old` serving; `recreate` leaves nothing.
    pub(crate) async fn update(&self, old: Release, new: Release) -> Result<(), EngineError> {
        let name = new.server.name.clone();
        let strategy = new.server.rollout.strategy;
        let updating = |how: &str| {
            self.shared.events.emit_revision(
                EventKind::ServerStarting,
                &name,
                new.revision,
                format!(
                    "updating from revision {} to {} ({how})",
                    old.revision, new.revision
                ),
            );
        };
        // Still running and ready (kept for a blue-green rollback window, say): going back
        // to it is a route swap, whatever the strategy — no process starts. A revision
        // that failed (an aborted canary still draining) is not taken back that way: it
        // starts afresh and goes through its strategy again.
        let transition = self.shared.transition(&name).await;
        let running = self.monitors_of(&name, new.revision);
        if !running.is_empty() {
            if !self.shared.has_failed(&name, new.revision)
                && self.shared.routes.ready_instances(&name, new.revision)
                    >= replica_count(&new.server) as usize
            {
                updating("route swap: it still runs");
                self.promote(&old, &new, &running).await;
                return Ok(());
            }
            self.stop_revision(&name, new.revision).await;
        }
        updating(strategy_name(strategy));
        // The strategies below start `new` afresh: a rollback window running out meanwhile
        // concerns other instances.
        drop(transition);
        match strategy {
            Strategy::Recreate => {
                self.stop_revision(&name, old.revision).await;
                self.create(new).await
            }
            Strategy::BlueGreen => self.blue_green(old, new).await,
            Strategy::Rolling => self.rolling(old, new).await,
            Strategy::Canary => self.canary(old, new).await,
        }
    }

    /// Starts every replica of `new` beside `old`, waits until all are ready, then moves
    /// all new sessions to `new` in one route-table swap. `old` keeps its sessions for
    /// `rollout.rollback_window` (an instant rollback is a swap back), then stops.
    async fn blue_green(&self, old: Release, new: Release) -> Result<(), EngineError> {
        let started = self.start_revision(&new).await?;
        self.promote(&old, &new, &started).await;
        Ok(())
    }

    /// Gives `new` every new session in one route-table swap and records it as serving;
    /// `old` keeps its sessions for `rollout.rollback_window` (an instant rollback is a swap
    /// back), then stops.
    pub(crate) async fn promote(
        &self,
        old: &Release,
        new: &Release,
        started: &[Arc<InstanceMonitor<R>>],
    ) {
        let name = new.server.name.clone();
        self.shared.failpoint("swap", Some(&name)).await;
        self.shared
            .routes
            .set_weights(&name, &[(old.revision, 0), (new.revision, 100)]);
        self.serve(new, started);
        let draining = self.monitors_of(&name, old.revision);
        self.retire_after(
            new.server.rollout.rollback_window,
            &name,
            old.revision,
            draining,
        );
    }

    /// After `window`, stops `instances` of `server`'s `revision` (kept for a rollback
    /// window, or an aborted canary draining) and takes the revision out of the route
    /// table — unless it serves again by then, or was started afresh (its instances are
    /// others): whoever did that owns it now. Other revisions' weights are left as they
    /// are, so a rollout begun meanwhile goes on undisturbed.
    pub(crate) fn retire_after(
        &self,
        window: std::time::Duration,
        server: &str,
        revision: u64,
        instances: Vec<Arc<InstanceMonitor<R>>>,
    ) {
        let (engine, server) = (self.clone(), server.to_string());
        tokio::spawn(async move {
            tokio::time::sleep(window).await;
            let _transition = engine.shared.transition(&server).await;
            if engine.serving(&server).map(|r| r.revision) == Some(revision) {
                return;
            }
            let current = engine.monitors_of(&server, revision);
            if current.is_empty()
                || !current
                    .iter()
                    .all(|m| instances.iter().any(|i| Arc::ptr_eq(i, m)))
            {
                return;
            }
            engine.shared.routes.remove_weight(&server, revision);
            engine.stop_revision(&server, revision).await;
        });
    }

    /// Replaces `old`'s replicas with `new`'s a few at a time: never more than `replicas +
    /// max_surge` instances, never fewer than `replicas - max_unavailable` ready ones.
    /// New sessions are shared in proportion to each revision's ready replicas.
    async fn rolling(&self, old: Release, new: Release) -> Result<(), EngineError> {
        let name = new.server.name.clone();
        let replicas = replica_count(&new.server);
        let rollout = &new.server.rollout;
        let (surge, unavailable) = (rollout.max_surge, rollout.max_unavailable);
        let mut old_left: Vec<Arc<InstanceMonitor<R>>> = self.monitors_of(&name, old.revision);
        let mut ready: Vec<Arc<InstanceMonitor<R>>> = Vec::new();
        let mut next_replica = 1;
        while ready.len() < replicas as usize {
            let running = (old_left.len() + ready.len()) as u32;
            // Stop what max_unavailable allows before starting anything.
            let floor = replicas.saturating_sub(unavailable);
            let may_stop = running.saturating_sub(floor).min(old_left.len() as u32);
            for _ in 0..may_stop {
                if let Some(monitor) = old_left.pop() {
                    self.weigh(&name, &old, &new, old_left.len(), ready.len());
                    monitor.stop().await;
                }
            }
            let running = (old_left.len() + ready.len()) as u32;
            let room = (replicas + surge).saturating_sub(running);
            let batch = room.min(replicas - ready.len() as u32).max(1);
            let mut batch_monitors = Vec::new();
            for _ in 0..batch {
                let monitor = self.start_replica(&new, next_replica).await;
                next_replica += 1;
                match monitor {
                    Ok(m) => batch_monitors.push(m),
                    Err(why) => return Err(self.abandon(&old, &new, why).await),
                }
            }
            for monitor in &batch_monitors {
                if let Err(why) = monitor.wait_ready().await {
                    return Err(self.abandon(&old, &new, why).await);
                }
            }
            ready.extend(batch_monitors);
            // Surge used: one old replica goes for each new one ready.
            while (old_left.len() + ready.len()) as u32 > replicas {
                let Some(monitor) = old_left.pop() else { break };
                self.weigh(&name, &old, &new, old_left.len(), ready.len());
                monitor.stop().await;
            }
            self.weigh(&name, &old, &new, old_left.len(), ready.len());
        }
        self.shared
            .routes
            .set_weights(&name, &[(new.revision, 100)]);
        self.stop_revision(&name, old.revision).await;
        self.serve(&new, &ready);
        Ok(())
    }

    /// Shares new sessions by ready replicas; a revision with none left takes none.
    fn weigh(&self, name: &str, old: &Release, new: &Release, old_ready: usize, new_ready: usize) {
        let mut weights = Vec::new();
        if old_ready > 0 {
            weights.push((old.revision, old_ready as u32));
        }
        if new_ready > 0 {
            weights.push((new.revision, new_ready as u32));
        }
        if !weights.is_empty() {
            self.shared.routes.set_weights(name, &weights);
        }
    }

    /// A rolling update failed: stops what `new` started and gives `old` its traffic
    /// back (restarting its missing replicas); returns `why`.
    async fn abandon(&self, old: &Release, new: &Release, why: EngineError) -> EngineError {
        let name = &new.server.name;
        self.shared.routes.set_weights(name, &[(old.revision, 100)]);
        self.stop_revision(name, new.revision).await;
        self.shared.events.emit_revision(
            EventKind::ServerFailed,
            name,
            new.revision,
            format!("revision {} failed: {why}", new.revision),
        );
        why
    }

    /// Starts every replica of `release` without giving it traffic, and waits until all
    /// are ready. On failure what it started is stopped again.
    pub(crate) async fn start_revision(
        &self,
        release: &Release,
    ) -> Result<Vec<Arc<InstanceMonitor<R>>>, EngineError> {
        let name = &release.server.name;
        let mut started = Vec::new();
        let mut failure = None;
        for replica in 1..=replica_count(&release.server) {
            match self.start_replica(release, replica).await {
                Ok(monitor) => started.push(monitor),
                Err(why) => {
                    failure = Some(why);
                    break;
                }
            }
        }
        if failure.is_none() {
            for monitor in &started {
                if let Err(why) = monitor.wait_ready().await {
                    failure = Some(why);
                    break;
                }
            }
        }
        match failure {
            None => Ok(started),
            Some(why) => {
                self.stop_revision(name, release.revision).await;
                self.shared.events.emit_revision(
                    EventKind::ServerFailed,
                    name,
                    release.revision,
                    format!("revision {} failed: {why}", release.revision),
                );
                Err(why)
            }
        }
    }

    /// Puts `server` back as it was before this deployment: its previous release serving
    /// (restarted if `recreate` stopped it), or nothing if the deployment created it.
    /// Revisions at weight 0 keep draining (a rollback window, an aborted canary with
    /// `on_abort: drain`): their own timers stop them.
    ///
    /// Returns whether anything had to change: a strategy that kept the previous revision
    /// serving through its failure (blue-green, rolling, canary) has left nothing to undo.
    ///
    /// # Errors
    /// The previous revision cannot be started again (the server is then failed).
    pub(crate) async fn undo(
        &self,
        server: &str,
        previous: Option<Release>,
    ) -> Result<bool, EngineError> {
        let _transition = self.shared.transition(server).await;
        let Some(previous) = previous else {
            self.stop_server(server).await;
            self.shared.routes.set_weights(server, &[]);
            return Ok(true);
        };
        let weights = self.shared.routes.weights(server);
        let draining: Vec<u64> = weights
            .iter()
            .filter(|&&(r, w)| w == 0 && r != previous.revision)
            .map(|&(r, _)| r)
            .collect();
        let others: Vec<u64> = self
            .revisions_of(server)
            .into_iter()
            .filter(|r| *r != previous.revision && !draining.contains(r))
            .collect();
        let running = self.monitors_of(server, previous.revision);
        let serves_alone = weights
            .iter()
            .all(|&(r, w)| (r == previous.revision) == (w > 0));
        if !running.is_empty()
            && others.is_empty()
            && serves_alone
            && self.serving(server).map(|r| r.revision) == Some(previous.revision)
        {
            return Ok(false);
        }
        let mut back: Vec<(u64, u32)> = vec![(previous.revision, 100)];
        back.extend(draining.iter().map(|&r| (r, 0)));
        self.shared.routes.set_weights(server, &back);
        let started = if running.is_empty() {
            self.start_again(&previous).await.inspect_err(|why| {
                let why = why.to_string();
                self.shared
                    .update(|s| s.set_server(server, ServerState::Failed, Some(why.clone())));
                self.shared.events.emit_revision(
                    EventKind::ServerFailed,
                    server,
                    previous.revision,
                    why,
                );
            })?
        } else {
            running
        };
        for revision in others {
            self.stop_revision(server, revision).await;
        }
        self.serve(&previous, &started);
        Ok(true)
    }

    /// Starts every replica of a revision `recreate` had stopped, and waits until all are
    /// ready — also when the deployment has failed (that is why it runs), but not once the
    /// control plane is stopping.
    async fn start_again(
        &self,
        release: &Release,
    ) -> Result<Vec<Arc<InstanceMonitor<R>>>, EngineError> {
        let revision = release.revision;
        let mut started = Vec::new();
        for replica in 1..=replica_count(&release.server) {
            let monitor = self
                .start_instance(
                    release,
                    replica,
                    FleetState::shutting_down,
                    EngineError::ShuttingDown,
                )
                .await;
            started.push(monitor.map_err(|why| EngineError::CannotStartAgain {
                revision,
                source: Box::new(why),
            })?);
        }
        for monitor in &started {
            monitor
                .wait_ready()
                .await
                .map_err(|why| EngineError::DidNotComeBack {
                    revision,
                    source: Box::new(why),
                })?;
        }
        Ok(started)
    }

    /// Restarts every instance of the revision serving `server`, one at a time: a
    /// replacement starts beside each instance and must pass its health checks before the
    /// instance it replaces stops, so the server keeps serving throughout. An http server
    /// on a fixed port cannot run twice: each of its instances stops before its
    /// replacement starts. Nothing is recorded as a new revision. A replacement that fails
    /// stops the restart; the instances not yet replaced keep serving.
    ///
    /// Returns the revision restarted and how many instances were replaced.
    ///
    /// # Errors
    /// `server` is not deployed or has nothing running here (a remote server), a rollout of
    /// it is in progress, or a replacement did not become ready.
    pub async fn restart(&self, server: &str) -> Result<(u64, usize), EngineError> {
        let _transition = self.shared.transition(server).await;
        let release = self
            .serving(server)
            .ok_or_else(|| EngineError::NotServing(server.to_owned()))?;
        let in_place = match &release.server.transport {
            Transport::Remote { .. } => {
                return Err(EngineError::RemoteRestart(server.to_owned()));
            }
            Transport::Http { .. } => release.server.transport.fixed_host_port().is_some(),
            Transport::Stdio { .. } => false,
        };
        if self.rolling_out(server) {
            return Err(EngineError::RolloutInProgress(server.to_owned()));
        }
        let old = self.monitors_of(server, release.revision);
        let how = if in_place {
            "its port is fixed: each instance stops before its replacement starts"
        } else {
            "each replacement is ready before the instance it replaces stops"
        };
        self.shared.events.emit_revision(
            EventKind::ServerStarting,
            server,
            release.revision,
            format!(
                "restarting revision {}: {} instance{}, one at a time ({how})",
                release.revision,
                old.len(),
                if old.len() == 1 { "" } else { "s" }
            ),
        );
        let mut replacements = Vec::with_capacity(old.len());
        for instance in &old {
            if in_place {
                self.forget(instance).await;
            }
            let replica = self.free_replica(server, release.revision);
            let replacement = match self
                .start_instance(
                    &release,
                    replica,
                    FleetState::shutting_down,
                    EngineError::ShuttingDown,
                )
                .await
            {
                Ok(monitor) => match monitor.wait_ready().await {
                    Ok(()) => Ok(monitor),
                    Err(why) => {
                        self.forget(&monitor).await;
                        Err(why)
                    }
                },
                Err(why) => Err(why),
            };
            let monitor = replacement.map_err(|why| {
                let why = EngineError::RestartStopped {
                    server: server.to_owned(),
                    instance: instance.id().to_string(),
                    in_place,
                    source: Box::new(why),
                };
                self.shared.events.emit_revision(
                    EventKind::ServerFailed,
                    server,
                    release.revision,
                    why.to_string(),
                );
                why
            })?;
            if !in_place {
                self.forget(instance).await;
            }
            replacements.push(monitor);
        }
        self.serve(&release, &replacements);
        Ok((release.revision, replacements.len()))
    }

    /// Whether a canary of `server` is in progress (steered by promote and abort).
    fn rolling_out(&self, server: &str) -> bool {
        self.shared.rollouts.lock().contains_key(server)
    }

    /// The lowest instance number no live instance of `server`'s `revision` has.
    fn free_replica(&self, server: &str, revision: u64) -> u32 {
        let taken: Vec<Replica> = self
            .monitors_of(server, revision)
            .iter()
            .map(|m| m.id().replica)
            .collect();
        (1..)
            .find(|n| !taken.contains(&Replica::Numbered(*n)))
            .unwrap_or(1)
    }

    /// Stops one instance for good and forgets it.
    async fn forget(&self, monitor: &Arc<InstanceMonitor<R>>) {
        monitor.stop().await;
        self.shared
            .monitors
            .lock()
            .retain(|m| !Arc::ptr_eq(m, monitor));
        self.shared
            .update(|s| s.remove_instance(monitor.server(), monitor.runtime_id().as_str()));
    }

    /// The live monitors of `server`'s `revision`.
    pub(crate) fn monitors_of(&self, server: &str, revision: u64) -> Vec<Arc<InstanceMonitor<R>>> {
        self.shared
            .monitors
            .lock()
            .iter()
            .filter(|m| m.server() == server && m.revision() == revision && !m.is_stopped())
            .cloned()
            .collect()
    }

    /// The revisions of `server` with live monitors.
    fn revisions_of(&self, server: &str) -> Vec<u64> {
        let mut revisions: Vec<u64> = self
            .shared
            .monitors
            .lock()
            .iter()
            .filter(|m| m.server() == server && !m.is_stopped())
            .map(|m| m.revision())
            .collect();
        revisions.sort_unstable();
        revisions.dedup();
        revisions
    }

    /// Stops `server`'s `revision` for good: its instances, its session processes, its
    /// records.
    pub(crate) async fn stop_revision(&self, server: &str, revision: u64) {
        let monitors = self.monitors_of(server, revision);
        futures::future::join_all(monitors.iter().map(|m| m.stop())).await;
        let pool = self
            .shared
            .pools
            .lock()
            .remove(&(server.to_string(), revision));
        if let Some(pool) = pool {
            pool.close().await;
        }
        self.shared
            .monitors
            .lock()
            .retain(|m| !(m.server() == server && m.revision() == revision));
        self.shared.update(|s| s.remove_revision(server, revision));
    }
}

fn strategy_name(strategy: Strategy) -> &'static str {
    match strategy {
        Strategy::Recreate => "recreate",
        Strategy::Rolling => "rolling",
        Strategy::BlueGreen => "blue-green",
        Strategy::Canary => "canary",
    }
}
