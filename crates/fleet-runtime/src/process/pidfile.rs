//! Pidfiles, and reaping what a killed control plane left behind.
//!
//! Every running instance has `STATE/run/<id>.json`, written atomically (temp file +
//! rename) right after spawn and removed once the process has been reaped. If the control
//! plane dies without stopping its instances (`kill -9`, a crash, power loss), the files
//! remain; the next control plane reaps them ([`reap_leftovers`]) before it starts anything.
//! [`live_records`] finds those whose process still runs without touching them, for
//! [`Runtime::discover`](crate::Runtime::discover).
//!
//! Leftovers are reaped, not adopted: a process we did not spawn cannot be waited on, and its
//! stdio pipes died with the old control plane, so the engine starts fresh instances.

use super::procfs::{self, ProcStat};
use crate::instance::{InstanceId, ReapOutcome, Reaped};
use nix::sys::signal::Signal;
use serde::{Deserialize, Serialize};
use std::io;
use std::path::{Path, PathBuf};
use std::time::Duration;
use tokio::time::Instant;

/// What a pidfile records about one running instance.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Pidfile {
    pub id: InstanceId,
    pub server: String,
    pub revision: u64,
    pub pid: u32,
    /// The instance's process group; equal to `pid` (each instance leads its own group).
    pub pgid: u32,
    /// Field 22 of `/proc/PID/stat`: with `pid`, identifies the process for the machine's
    /// uptime, so a reused PID is never mistaken for ours.
    pub start_time_ticks: u64,
    /// The resolved program path.
    pub program: String,
    /// RFC 3339, UTC.
    pub started_at: String,
    /// The instance's grace period, used again when reaping it.
    pub stop_grace_ms: u64,
}

/// The pidfile of instance `id` under `state_dir`.
pub fn pidfile_path(state_dir: &Path, id: &InstanceId) -> PathBuf {
    state_dir.join("run").join(format!("{id}.json"))
}

impl Pidfile {
    /// Writes the pidfile atomically; returns its path.
    pub(crate) async fn write(&self, state_dir: &Path) -> io::Result<PathBuf> {
        let path = pidfile_path(state_dir, &self.id);
        let tmp = path.with_extension("json.tmp");
        if let Some(dir) = path.parent() {
            tokio::fs::create_dir_all(dir).await?;
        }
        let json = serde_json::to_vec_pretty(self).map_err(io::Error::other)?;
        tokio::fs::write(&tmp, json).await?;
        tokio::fs::rename(&tmp, &path).await?;
        Ok(path)
    }
}

/// Removes a pidfile; one that is already gone is fine.
pub(crate) async fn remove(path: &Path) {
    match tokio::fs::remove_file(path).await {
        Err(e) if e.kind() != io::ErrorKind::NotFound => {
            tracing::warn!(path = %path.display(), error = %e, "cannot remove pidfile");
        }
        _ => {}
    }
}

/// How long processes get to die after SIGKILL before reaping gives up on them.
const KILL_WAIT: Duration = Duration::from_secs(5);

/// Stops every instance a previous control plane left running under `state_dir`, except
/// those `supervised` says this runtime runs, and removes their pidfiles
/// ([`Runtime::reap_leftovers`](crate::Runtime::reap_leftovers)).
///
/// For each pidfile: if the recorded PID is alive with the recorded start time, its process
/// group gets SIGTERM, the instance's grace period, then SIGKILL. Members of the group that
/// outlived their leader (same group id, started no earlier than the leader) are stopped
/// the same way. A PID whose start time differs belongs to someone else now and is never
/// signalled.
pub(crate) async fn reap_leftovers(
    state_dir: &Path,
    supervised: impl Fn(&InstanceId) -> bool,
) -> Vec<Reaped> {
    let run_dir = state_dir.join("run");
    let Ok(mut entries) = tokio::fs::read_dir(&run_dir).await else {
        return Vec::new();
    };
    let mut reaped = Vec::new();
    while let Ok(Some(entry)) = entries.next_entry().await {
        let path = entry.path();
        let name = entry.file_name();
        let name = name.to_string_lossy();
        if name.ends_with(".json.tmp") {
            remove(&path).await;
            continue;
        }
        if !name.ends_with(".json") {
            continue;
        }
        let parsed = match tokio::fs::read(&path).await {
            Ok(bytes) => serde_json::from_slice::<Pidfile>(&bytes).map_err(|e| e.to_string()),
            Err(e) => Err(e.to_string()),
        };
        let (id, outcome) = match parsed {
            Ok(pidfile) if supervised(&pidfile.id) => continue,
            Ok(pidfile) => {
                let outcome = reap_one(&pidfile).await;
                (Some(pidfile.id), outcome)
            }
            Err(error) => (None, ReapOutcome::Unreadable { error }),
        };
        tracing::info!(pidfile = %path.display(), ?outcome, "reaped leftover instance");
        remove(&path).await;
        reaped.push(Reaped {
            record: path.display().to_string(),
            id,
            outcome,
        });
    }
    reaped.sort_by(|a, b| a.record.cmp(&b.record));
    reaped
}

/// The pidfiles under `state_dir` whose recorded process still runs — that very process
/// (same start time), not another one that got its PID. Reads only; signals nothing and
/// removes nothing. An instance whose leader is gone is not among them even if helpers of
/// its group live on: there is nothing to adopt, only to reap.
pub(crate) async fn live_records(state_dir: &Path) -> Vec<Pidfile> {
    let run_dir = state_dir.join("run");
    let Ok(mut entries) = tokio::fs::read_dir(&run_dir).await else {
        return Vec::new();
    };
    let mut records = Vec::new();
    while let Ok(Some(entry)) = entries.next_entry().await {
        if !entry.file_name().to_string_lossy().ends_with(".json") {
            continue;
        }
        // Unreadable ones are for reaping to report, not for discovery to guess at.
        if let Ok(bytes) = tokio::fs::read(entry.path()).await
            && let Ok(record) = serde_json::from_slice::<Pidfile>(&bytes)
        {
            records.push(record);
        }
    }
    tokio::task::spawn_blocking(move || {
        records.retain(|record| {
            procfs::read_stat(record.pid)
                .is_some_and(|now| now.is_live() && now.start_time_ticks == record.start_time_ticks)
        });
        records
    })
    .await
    .unwrap_or_default()
}

/// Processes that verifiably belong to the recorded instance: the leader if its start time
/// matches, and live members of its group started no earlier than it.
fn ours(pidfile: &Pidfile) -> Vec<ProcStat> {
    let mut found: Vec<ProcStat> = procfs::group_members(pidfile.pgid)
        .into_iter()
        .filter(|p| p.start_time_ticks >= pidfile.start_time_ticks)
        .collect();
    if let Some(leader) = procfs::read_stat(pidfile.pid)
        && leader.is_live()
        && leader.start_time_ticks == pidfile.start_time_ticks
        && !found.iter().any(|p| p.pid == leader.pid)
    {
        found.push(leader);
    }
    found
}

async fn ours_async(pidfile: &Pidfile) -> Vec<ProcStat> {
    let pidfile = pidfile.clone();
    tokio::task::spawn_blocking(move || ours(&pidfile))
        .await
        .unwrap_or_default()
}

fn signal_all(pidfile: &Pidfile, targets: &[ProcStat], signal: Signal) {
    if targets.iter().any(|p| p.pgrp == pidfile.pgid) {
        // The group id is held by a verified member, so it cannot name anyone else's group.
        procfs::signal_group(pidfile.pgid, signal);
    }
    for p in targets.iter().filter(|p| p.pgrp != pidfile.pgid) {
        procfs::signal_process(p.pid, signal);
    }
}

async fn wait_all_gone(pidfile: &Pidfile, deadline: Instant) -> Vec<ProcStat> {
    loop {
        let left = ours_async(pidfile).await;
        if left.is_empty() || Instant::now() >= deadline {
            return left;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}

async fn reap_one(pidfile: &Pidfile) -> ReapOutcome {
    if let Some(now) = procfs::read_stat(pidfile.pid)
        && now.start_time_ticks != pidfile.start_time_ticks
    {
        // While any member of our group lived, its group id — our leader's PID — could not
        // have been handed out again. So a new process with that PID means the group is gone.
        return ReapOutcome::PidReused;
    }
    let targets = ours_async(pidfile).await;
    if targets.is_empty() {
        return ReapOutcome::Gone;
    }
    let leader = targets.iter().any(|p| p.pid == pidfile.pid);
    let members = targets.iter().filter(|p| p.pid != pidfile.pid).count();
    signal_all(pidfile, &targets, Signal::SIGTERM);
    let grace = Duration::from_millis(pidfile.stop_grace_ms);
    let left = wait_all_gone(pidfile, Instant::now() + grace).await;
    if left.is_empty() {
        return ReapOutcome::Stopped {
            leader,
            members,
            forced: false,
        };
    }
    signal_all(pidfile, &left, Signal::SIGKILL);
    let left = wait_all_gone(pidfile, Instant::now() + KILL_WAIT).await;
    if left.is_empty() {
        ReapOutcome::Stopped {
            leader,
            members,
            forced: true,
        }
    } else {
        ReapOutcome::Survivors {
            pids: left.iter().map(|p| p.pid).collect(),
        }
    }
}
