//! Facts about processes from `/proc`, and signals that only reach our own.
//!
//! A PID is only trusted together with its start time (field 22 of `/proc/PID/stat`, in clock
//! ticks since boot): the pair identifies one process for the life of the machine, so a
//! reused PID is never mistaken for ours.

use nix::errno::Errno;
use nix::sys::signal::{Signal, kill, killpg};
use nix::sys::wait::{Id, WaitPidFlag, WaitStatus, waitid};
use nix::unistd::Pid;
use std::time::Duration;
use tokio::signal::unix::{SignalKind, signal};
use tokio::time::Instant;

/// The fields of `/proc/PID/stat` the runtime uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct ProcStat {
    pub(crate) pid: u32,
    /// `R`, `S`, `D`, `Z` (zombie), `X` (dead), …
    pub(crate) state: char,
    pub(crate) pgrp: u32,
    pub(crate) start_time_ticks: u64,
}

impl ProcStat {
    /// Still executing: neither a zombie nor dead.
    pub(crate) fn is_live(&self) -> bool {
        !matches!(self.state, 'Z' | 'X' | 'x')
    }
}

/// Parses one `/proc/PID/stat` line. The command name (field 2) is in parentheses and may
/// itself contain spaces and parentheses, so fields are counted from the last `)`.
pub(crate) fn parse_stat(pid: u32, text: &str) -> Option<ProcStat> {
    let after_comm = &text[text.rfind(')')? + 1..];
    // Field n (1-based) is at index n - 3 after the command name.
    let fields: Vec<&str> = after_comm.split_whitespace().collect();
    Some(ProcStat {
        pid,
        state: fields.first()?.chars().next()?,
        pgrp: fields.get(2)?.parse().ok()?,
        start_time_ticks: fields.get(19)?.parse().ok()?,
    })
}

/// The process's stat, or `None` when it does not exist (or cannot be read).
pub(crate) fn read_stat(pid: u32) -> Option<ProcStat> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    parse_stat(pid, &text)
}

/// Every live process whose process group is `pgid`.
pub(crate) fn group_members(pgid: u32) -> Vec<ProcStat> {
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    dir.filter_map(|entry| entry.ok()?.file_name().to_str()?.parse::<u32>().ok())
        .filter_map(read_stat)
        .filter(|stat| stat.pgrp == pgid && stat.is_live())
        .collect()
}

/// [`group_members`] off the async threads (a `/proc` scan reads one file per process).
pub(crate) async fn group_members_async(pgid: u32) -> Vec<ProcStat> {
    tokio::task::spawn_blocking(move || group_members(pgid))
        .await
        .unwrap_or_default()
}

fn nix_pid(pid: u32) -> Option<Pid> {
    // PIDs 0 and 1 and anything not fitting an i32 would mean "everyone" or "init" to
    // kill(2): never.
    i32::try_from(pid)
        .ok()
        .filter(|&p| p > 1)
        .map(Pid::from_raw)
}

/// Sends `signal` to process group `pgid`. The caller has verified the group is ours (its
/// leader is our unreaped child, or its members match a recorded start time). A group that
/// is already gone is not an error.
pub(crate) fn signal_group(pgid: u32, signal: Signal) {
    let Some(pgid) = nix_pid(pgid) else { return };
    match killpg(pgid, signal) {
        Ok(()) | Err(Errno::ESRCH) => {}
        Err(e) => tracing::warn!(%pgid, %signal, error = %e, "could not signal process group"),
    }
}

/// Sends `signal` to one verified process. A process that is already gone is not an error.
pub(crate) fn signal_process(pid: u32, signal: Signal) {
    let Some(pid) = nix_pid(pid) else { return };
    match kill(pid, signal) {
        Ok(()) | Err(Errno::ESRCH) => {}
        Err(e) => tracing::warn!(%pid, %signal, error = %e, "could not signal process"),
    }
}

/// Whether our child `pid` has exited, without reaping it: while it is an unreaped zombie
/// its PID — and so its process group id — cannot be reused, which is what makes signalling
/// the rest of its group safe.
fn has_exited_unreaped(pid: Pid) -> bool {
    loop {
        let flags = WaitPidFlag::WEXITED | WaitPidFlag::WNOHANG | WaitPidFlag::WNOWAIT;
        return match waitid(Id::Pid(pid), flags) {
            Ok(WaitStatus::StillAlive) => false,
            Err(Errno::EINTR) => continue,
            // Exited (EINVAL: killed by a signal nix has no name for), or already reaped
            // (ECHILD, which the supervisor never does before this says so).
            Ok(_) | Err(_) => true,
        };
    }
}

/// Waits until our child `pid` has exited, leaving it unreaped (see
/// [`has_exited_unreaped`]). Woken by SIGCHLD, with a slow timer as a safety net.
pub(crate) async fn wait_exited_unreaped(pid: u32) {
    let Some(pid) = nix_pid(pid) else { return };
    // Registered before the first check, so a SIGCHLD in between is not missed.
    let mut sigchld = signal(SignalKind::child()).ok();
    loop {
        if has_exited_unreaped(pid) {
            return;
        }
        match sigchld.as_mut() {
            Some(sigchld) => {
                tokio::select! {
                    _ = sigchld.recv() => {}
                    () = tokio::time::sleep(Duration::from_secs(2)) => {}
                }
            }
            // No signal driver in this tokio runtime: poll.
            None => tokio::time::sleep(Duration::from_millis(100)).await,
        }
    }
}

/// Waits until no live process other than `except` is left in group `pgid`, or `deadline`.
/// Returns whether the group emptied.
pub(crate) async fn wait_group_gone(pgid: u32, except: Option<u32>, deadline: Instant) -> bool {
    loop {
        let left = group_members_async(pgid)
            .await
            .into_iter()
            .any(|p| Some(p.pid) != except);
        if !left {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_stat_with_awkward_command_names() {
        let line = "4242 (a) b (c)) S 1 4242 4242 0 -1 4194560 100 0 0 0 0 0 0 0 20 0 1 0 987654 \
                    1000 10 18446744073709551615 1 1 0 0 0 0 0 0 0 0 0 0 17 0 0 0 0 0 0";
        let stat = parse_stat(4242, line).expect("parses");
        assert_eq!(stat.state, 'S');
        assert_eq!(stat.pgrp, 4242);
        assert_eq!(stat.start_time_ticks, 987_654);
    }

    #[test]
    fn reads_own_stat() {
        let me = std::process::id();
        let stat = read_stat(me).expect("own stat");
        assert_eq!(stat.pid, me);
        assert!(stat.is_live());
        assert!(stat.start_time_ticks > 0);
    }

    #[test]
    fn never_signals_init_or_everyone() {
        assert_eq!(nix_pid(0), None);
        assert_eq!(nix_pid(1), None);
        assert_eq!(nix_pid(u32::MAX), None);
        assert!(nix_pid(2).is_some());
    }
}
