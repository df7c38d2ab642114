//! `bench soak`: a gateway under long load — many idle sessions opened and held, then
//! many sessions calling at once for a minute — counting every failed call and sampling
//! the gateway's memory, to show it neither fails nor grows. A program run by hand (minutes, thousands of
//! connections), never part of CI.
//!
//! The gateway is `xtask bench-gateway-serve` (the data plane, as in `bench gateway`) in
//! front of the HTTP sample server; every session comes from one address without a token,
//! so that gateway raises the per-address session cap to its total cap (20,000).

use crate::bench::{binaries, flag, write};
use crate::bench_gateway::{
    IdleSessions, Process, Session, Target, rerun_optimized, rss_mb, settle, wait_until_serving,
};
use crate::root;
use anyhow::{Context, Result, bail};
use serde_json::json;
use std::fmt::Write as _;
use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// Targets from the performance issue: no failed call, RSS flat once warm, and an idle
/// session at most this much of the gateway's memory.
const TARGET_IDLE_KB_PER_SESSION: f64 = 4.0;
/// "Flat": the RSS grows at most this much from the end of the warm-up (the first quarter
/// of the active run) to its end.
const TARGET_ACTIVE_DRIFT_MB: f64 = 5.0;
/// How often the gateway's RSS is read during the active run.
const SAMPLE_EVERY: Duration = Duration::from_secs(5);

/// `bench soak [--active N] [--seconds N] [--idle N]`.
pub(crate) fn run(args: &[&str]) -> Result<()> {
    let active = flag(args, "--active")?.unwrap_or(1000);
    let seconds = flag(args, "--seconds")?.unwrap_or(60);
    let idle = flag(args, "--idle")?.unwrap_or(10_000);
    if active == 0 || seconds == 0 {
        bail!("--active and --seconds need a number above 0");
    }
    let profile = binaries(false, &["xtask", "fleet-testkit"])?;
    if cfg!(debug_assertions) {
        return rerun_optimized("soak", args);
    }
    let bin = root().join("target").join(profile);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    let soak = runtime.block_on(soak(
        &bin,
        active,
        Duration::from_secs(seconds as u64),
        idle,
    ))?;

    let mut md = format!(
        "soak: {idle} idle sessions opened and held, then {active} sessions calling `echo` back \
         to back for {seconds} s; the gateway data plane in front of the HTTP sample server, {profile} build\n\n\
         | measure | value |\n|---|---|\n"
    );
    let _ = writeln!(md, "| calls (active run) | {} |", soak.calls);
    let _ = writeln!(md, "| failed calls | {} |", soak.errors);
    let _ = writeln!(
        md,
        "| calls per second | {:.0} |",
        soak.calls as f64 / seconds as f64
    );
    let samples: Vec<String> = soak
        .rss_samples
        .iter()
        .map(|(at, mb)| format!("{at:.0} s: {mb:.1}"))
        .collect();
    let _ = writeln!(
        md,
        "| gateway RSS before the active run, MB | {:.1} |",
        soak.rss_before_mb
    );
    let _ = writeln!(md, "| gateway RSS during, MB | {} |", samples.join("; "));
    let _ = writeln!(
        md,
        "| RSS growth after warm-up | {:+.1} MB |",
        soak.active_drift_mb
    );
    let _ = writeln!(
        md,
        "| {idle} idle sessions: gateway RSS | {:.1} → {:.1} MB ({:.2} KB per session) |",
        soak.idle_before_mb, soak.idle_after_mb, soak.idle_kb_per_session
    );
    let checks = [
        (
            format!("{} failed calls (target 0)", soak.errors),
            soak.errors == 0,
        ),
        (
            format!(
                "RSS {:+.1} MB from the end of the warm-up to the end of the run (target ≤ {TARGET_ACTIVE_DRIFT_MB:.0} MB)",
                soak.active_drift_mb
            ),
            soak.active_drift_mb <= TARGET_ACTIVE_DRIFT_MB,
        ),
        (
            format!(
                "{:.2} KB of gateway RSS per idle session (target ≤ {TARGET_IDLE_KB_PER_SESSION:.0} KB)",
                soak.idle_kb_per_session
            ),
            soak.idle_kb_per_session <= TARGET_IDLE_KB_PER_SESSION,
        ),
    ];
    let _ = writeln!(md);
    for (text, pass) in &checks {
        let _ = writeln!(md, "- {}: {text}", if *pass { "PASS" } else { "FAIL" });
    }
    let verdict = if checks.iter().all(|(_, pass)| *pass) {
        "PASS: every target met"
    } else {
        "FAIL: a target was missed"
    };
    let _ = writeln!(md, "\n{verdict}");
    print!("{md}");
    let out_dir = root().join("bench-results");
    std::fs::create_dir_all(&out_dir)?;
    write(&out_dir.join("soak.md"), &md)?;
    let json = json!({
        "benchmark": "soak", "profile": profile,
        "active_sessions": active, "active_seconds": seconds, "idle_sessions": idle,
        "calls": soak.calls, "failed_calls": soak.errors,
        "rss_before_mb": soak.rss_before_mb,
        "rss_samples": soak.rss_samples.iter().map(|(at, mb)| json!({ "at_s": at, "mb": mb })).collect::<Vec<_>>(),
        "active_drift_mb": soak.active_drift_mb,
        "idle_rss_before_mb": soak.idle_before_mb, "idle_rss_after_mb": soak.idle_after_mb,
        "idle_kb_per_session": soak.idle_kb_per_session,
        "targets": { "failed_calls": 0, "active_drift_mb": TARGET_ACTIVE_DRIFT_MB, "idle_kb_per_session": TARGET_IDLE_KB_PER_SESSION },
        "checks": checks.iter().map(|(text, pass)| json!({ "check": text, "pass": pass })).collect::<Vec<_>>(),
        "verdict": verdict,
    });
    write(
        &out_dir.join("soak.json"),
        &serde_json::to_string_pretty(&json)?,
    )
}

struct Soak {
    calls: u64,
    errors: u64,
    rss_before_mb: f64,
    /// (seconds into the active run, MB).
    rss_samples: Vec<(f64, f64)>,
    active_drift_mb: f64,
    idle_before_mb: f64,
    idle_after_mb: f64,
    idle_kb_per_session: f64,
}

async fn soak(
    bin: &std::path::Path,
    active: usize,
    duration: Duration,
    idle: usize,
) -> Result<Soak> {
    let sample = bin.join("mcp-sample-server");
    let (upstream, upstream_url) = Process::announcing(
        Command::new(&sample).args(["--transport", "http", "--tools", "echo"]),
        "sample server",
    )?;
    let (gateway, url) = Process::announcing(
        Command::new(bin.join("xtask")).args(["bench-gateway-serve", &upstream_url]),
        "gateway",
    )?;
    let gateway_pid = gateway.pid();
    let mut processes = vec![upstream, gateway];
    let target = Target {
        url,
        tool: "echo",
        token: None,
    };
    wait_until_serving(&target, &mut processes).await?;
    let warm = Session::warmed(&target, 200).await?;
    settle().await;
    // The idle sessions first, on a fresh gateway: memory the active run leaves to the
    // allocator would hide their cost. They stay open through the active run.
    eprintln!("bench soak: {idle} idle sessions");
    let idle_before_mb = rss_mb(gateway_pid)?;
    let sessions = IdleSessions::open(&target, idle).await?;
    settle().await;
    let idle_after_mb = rss_mb(gateway_pid)?;
    sessions
        .check_alive(&target)
        .await
        .context("after the idle sessions were opened")?;
    let rss_before_mb = rss_mb(gateway_pid)?;

    eprintln!(
        "bench soak: {active} active sessions for {} s",
        duration.as_secs()
    );
    let mut sessions = Vec::with_capacity(active);
    for _ in 0..active {
        sessions.push(Session::open(&target).await?);
    }
    let (calls, errors) = (Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)));
    let started = Instant::now();
    let deadline = started + duration;
    let tasks: Vec<_> = sessions
        .into_iter()
        .map(|mut session| {
            let (calls, errors) = (Arc::clone(&calls), Arc::clone(&errors));
            tokio::spawn(async move {
                while Instant::now() < deadline {
                    match session.echo().await {
                        Ok(()) => calls.fetch_add(1, Ordering::Relaxed),
                        Err(error) => {
                            // The first few say why; all are counted.
                            if errors.fetch_add(1, Ordering::Relaxed) < 5 {
                                eprintln!("bench soak: a call failed: {error:#}");
                            }
                            0
                        }
                    };
                }
                session.close().await;
            })
        })
        .collect();
    let mut rss_samples = Vec::new();
    while Instant::now() + SAMPLE_EVERY <= deadline {
        tokio::time::sleep(SAMPLE_EVERY).await;
        rss_samples.push((started.elapsed().as_secs_f64(), rss_mb(gateway_pid)?));
    }
    for task in tasks {
        task.await?;
    }
    // Warm-up: the first quarter of the run (pools, buffers and allocator arenas fill).
    let warmed = rss_samples
        .iter()
        .find(|(at, _)| *at >= duration.as_secs_f64() / 4.0)
        .or(rss_samples.first())
        .map_or(rss_before_mb, |(_, mb)| *mb);
    let last = rss_samples.last().map_or(warmed, |(_, mb)| *mb);

    warm.close().await;
    drop(processes);
    Ok(Soak {
        calls: calls.load(Ordering::Relaxed),
        errors: errors.load(Ordering::Relaxed),
        rss_before_mb,
        rss_samples,
        active_drift_mb: last - warmed,
        idle_before_mb,
        idle_after_mb,
        idle_kb_per_session: (idle_after_mb - idle_before_mb) * 1024.0 / idle.max(1) as f64,
    })
}
