//! Benchmarks: programs that measure and write results, never timed assertions in tests.

use crate::root;
use anyhow::{Context, Result, bail};
use std::fmt::Write as _;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

/// Target from the foundation issue: validate + plan of 1,000 servers under 100 ms wall.
const TARGET: Duration = Duration::from_millis(100);

/// `bench validate`: generates a fleet of N servers with about 3 dependencies each and times
/// `mcpfleet validate` and `mcpfleet plan --output json` on it, as whole processes (start-up
/// included: that is what a user waits for).
pub(crate) fn validate(args: &[&str]) -> Result<()> {
    let smoke = args.contains(&"--smoke");
    let servers = flag(args, "--servers")?.unwrap_or(if smoke { 50 } else { 1000 });
    let runs = flag(args, "--runs")?.unwrap_or(if smoke { 1 } else { 20 });
    let out_dir = root().join("bench-results");
    std::fs::create_dir_all(&out_dir)?;
    let (text, edges) = generate_fleet(servers);
    let fleet_path = out_dir.join(format!("fleet-{servers}.yaml"));
    std::fs::write(&fleet_path, &text)?;

    let profile = binaries(smoke, &["mcpfleet", "fleet-testkit"])?;
    let binary = root().join("target").join(profile).join("mcpfleet");

    let mut rows = Vec::new();
    for (label, cmd) in [
        ("validate", vec!["validate"]),
        ("plan --output json", vec!["plan", "--output", "json"]),
    ] {
        let mut times = Vec::with_capacity(runs);
        for _ in 0..runs {
            let start = Instant::now();
            let out = Command::new(&binary)
                .args(&cmd)
                .arg("--file")
                .arg(&fleet_path)
                .output()
                .context("run mcpfleet")?;
            times.push(start.elapsed());
            if !out.status.success() {
                bail!(
                    "mcpfleet {label} failed on the generated fleet:\n{}",
                    String::from_utf8_lossy(&out.stderr)
                );
            }
            if label.starts_with("plan") {
                let plan: serde_json::Value = serde_json::from_slice(&out.stdout)?;
                let planned: usize = plan["waves"].as_array().map_or(0, |w| {
                    w.iter()
                        .map(|w| w["servers"].as_array().map_or(0, Vec::len))
                        .sum()
                });
                if planned != servers {
                    bail!("the plan holds {planned} servers, expected {servers}");
                }
            }
        }
        times.sort();
        rows.push((
            label,
            times[0],
            times[times.len() / 2],
            times[times.len() - 1],
        ));
    }

    let ms = |d: Duration| d.as_secs_f64() * 1000.0;
    let mut table = format!(
        "validate + plan, {servers} servers, {edges} dependency edges, {runs} runs, {profile} build\n\n| command | min ms | median ms | max ms |\n|---|---|---|---|\n"
    );
    for (label, min, median, max) in &rows {
        let _ = writeln!(
            table,
            "| mcpfleet {label} | {:.1} | {:.1} | {:.1} |",
            ms(*min),
            ms(*median),
            ms(*max)
        );
    }
    let worst_median = rows.iter().map(|r| r.2).max().unwrap_or_default();
    let verdict = if smoke {
        "smoke run: no target applies".to_string()
    } else if worst_median <= TARGET {
        format!(
            "PASS: median {:.1} ms ≤ target {} ms",
            ms(worst_median),
            TARGET.as_millis()
        )
    } else {
        format!(
            "FAIL: median {:.1} ms > target {} ms",
            ms(worst_median),
            TARGET.as_millis()
        )
    };
    let _ = writeln!(table, "\n{verdict}");
    print!("{table}");
    let json = serde_json::json!({
        "benchmark": "validate",
        "servers": servers,
        "edges": edges,
        "runs": runs,
        "profile": profile,
        "target_ms": TARGET.as_millis() as u64,
        "results": rows.iter().map(|(l, min, med, max)| serde_json::json!({
            "command": format!("mcpfleet {l}"), "min_ms": ms(*min), "median_ms": ms(*med), "max_ms": ms(*max)
        })).collect::<Vec<_>>(),
        "verdict": verdict,
    });
    write(
        &out_dir.join("validate.json"),
        &serde_json::to_string_pretty(&json)?,
    )?;
    write(&out_dir.join("validate.md"), &table)?;
    Ok(())
}

/// The build profile to measure. A real run builds release binaries; the smoke run (CI)
/// reuses the debug binaries `cargo test --workspace` just built — building them again with
/// `cargo build` would recompile dependencies whose features differ.
pub(crate) fn binaries(smoke: bool, packages: &[&str]) -> Result<&'static str> {
    if smoke {
        let dir = root().join("target/debug");
        let bins = packages.iter().filter_map(|p| match *p {
            "mcpfleet" => Some("mcpfleet"),
            "fleet-testkit" => Some("mcp-sample-server"),
            _ => None,
        });
        for bin in bins {
            if !dir.join(bin).exists() {
                bail!(
                    "{} is missing: run `cargo test --workspace` first",
                    dir.join(bin).display()
                );
            }
        }
        return Ok("debug");
    }
    let mut args = vec!["build", "--quiet", "--release"];
    for package in packages {
        args.extend(["-p", package]);
    }
    crate::run("cargo", &args)?;
    Ok("release")
}

pub(crate) fn write(path: &Path, text: &str) -> Result<()> {
    std::fs::write(path, text).with_context(|| format!("write {}", path.display()))
}

pub(crate) fn flag(args: &[&str], name: &str) -> Result<Option<usize>> {
    match args.iter().position(|a| *a == name) {
        None => Ok(None),
        Some(i) => {
            let value = args
                .get(i + 1)
                .with_context(|| format!("{name} needs a number"))?;
            Ok(Some(value.parse().with_context(|| {
                format!("{name} needs a number, got `{value}`")
            })?))
        }
    }
}

/// A deterministic fleet: server i depends on up to three earlier servers, so the graph is
/// acyclic and has many waves. Returns the YAML and the number of edges.
pub(crate) fn generate_fleet(servers: usize) -> (String, usize) {
    let mut rng = 0x2545_f491_4f6c_dd1du64;
    let mut next = move || {
        rng ^= rng << 13;
        rng ^= rng >> 7;
        rng ^= rng << 17;
        rng
    };
    let mut text = String::from("version: 1\nname: bench\nvars: { level: info }\nservers:\n");
    let mut edges = 0;
    for i in 0..servers {
        let _ = writeln!(text, "  s{i:04}:");
        if i % 3 == 0 {
            let _ = writeln!(
                text,
                "    http: {{ command: sample, args: [\"--port\", \"{{{{ port }}}}\", \"--log\", \"{{{{ var('level') }}}}\"] }}"
            );
        } else {
            let _ = writeln!(
                text,
                "    stdio: {{ command: sample, args: [\"--name\", \"{{{{ server.name }}}}\"] }}"
            );
        }
        let _ = writeln!(text, "    priority: {}", next() % 5);
        if i > 0 {
            let mut deps: Vec<usize> = (0..3).map(|_| (next() as usize) % i).collect();
            deps.sort_unstable();
            deps.dedup();
            edges += deps.len();
            let names: Vec<String> = deps.iter().map(|d| format!("s{d:04}")).collect();
            let _ = writeln!(text, "    depends_on: [{}]", names.join(", "));
        }
        if i % 10 == 0 {
            let _ = writeln!(
                text,
                "    health:\n      mcp: {{ expect_tools: [echo], interval: 5s, max_latency: 500ms }}"
            );
        }
    }
    (text, edges)
}

/// Targets from the engine issue (15), for 1,000 servers in 10 waves: orchestration
/// overhead at most 10 % of the critical path, and at most 100 KB of control-plane memory
/// (RSS) per server running.
const UP_OVERHEAD_TARGET: f64 = 0.10;
const UP_RSS_PER_SERVER_TARGET_KB: f64 = 100.0;

/// `bench up`: a generated fleet of sample servers in dependency waves, each taking
/// `--delay` to become ready; measures `up` to all-ready against the critical path and the
/// control plane's memory with everything running.
pub(crate) fn up(args: &[&str]) -> Result<()> {
    let smoke = args.contains(&"--smoke");
    let waves = flag(args, "--waves")?.unwrap_or(if smoke { 3 } else { 10 });
    let per_wave = flag(args, "--per-wave")?.unwrap_or(if smoke { 4 } else { 100 });
    let delay_ms = flag(args, "--delay-ms")?.unwrap_or(50);
    let profile = binaries(smoke, &["mcpfleet", "fleet-testkit"])?;
    let bin = root().join("target").join(profile);
    let out_dir = root().join("bench-results");
    let work = out_dir.join("up-fleet");
    let _ = std::fs::remove_dir_all(&work);
    std::fs::create_dir_all(&work)?;
    let state = work.join("state");
    let fleet = work.join("mcpfleet.yaml");

    let sample = bin.join("mcp-sample-server");
    let mut text = String::from("version: 1\nname: bench-up\nservers:\n");
    for w in 0..waves {
        for i in 0..per_wave {
            let _ = writeln!(text, "  w{w}s{i}:");
            let _ = writeln!(
                text,
                "    stdio: {{ command: {}, args: [\"--startup-delay\", \"{delay_ms}ms\", \"--tools\", \"echo\"] }}",
                sample.display()
            );
            if w > 0 {
                let _ = writeln!(
                    text,
                    "    depends_on: [w{}s{i}, w{}s{}]",
                    w - 1,
                    w - 1,
                    (i + 1) % per_wave
                );
            }
        }
    }
    std::fs::write(&fleet, text)?;

    let mcpfleet = |args: &[&str]| -> Result<std::process::Output> {
        Command::new(bin.join("mcpfleet"))
            .args(args)
            // `--file`, not `-f`: in `events` `-f` is `--follow`.
            .arg("--file")
            .arg(&fleet)
            .arg("--state-dir")
            .arg(&state)
            .output()
            .context("run mcpfleet")
    };
    let started = Instant::now();
    let out = mcpfleet(&["up", "-d"])?;
    let wall = started.elapsed();
    if !out.status.success() {
        bail!(
            "mcpfleet up failed:\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let status: serde_json::Value =
        serde_json::from_slice(&mcpfleet(&["status", "--output", "json"])?.stdout)?;
    let pid = status["pid"].as_u64().context("status has no pid")?;
    let rss_mb = std::fs::read_to_string(format!("/proc/{pid}/status"))?
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<f64>().ok())
        .map(|kb| kb / 1024.0)
        .context("no VmRSS")?;
    let events = mcpfleet(&["events", "--output", "json"])?;
    let _ = mcpfleet(&["down"])?;

    // Readiness of each server: from its start to its ready event, as the engine saw it.
    let mut starts = std::collections::HashMap::new();
    let mut ready = std::collections::HashMap::new();
    let (mut t0, mut t1) = (None, None);
    for line in String::from_utf8_lossy(&events.stdout).lines() {
        let e: serde_json::Value = serde_json::from_str(line)?;
        let at = millis_of_day(e["time"].as_str().unwrap_or_default());
        let server = e["server"].as_str().unwrap_or_default().to_string();
        match e["kind"].as_str().unwrap_or_default() {
            "deployment_started" => t0 = Some(at),
            "deployment_completed" => t1 = Some(at),
            "server_starting" => {
                starts.insert(server, at);
            }
            "server_ready" => {
                ready.insert(server, at);
            }
            _ => {}
        }
    }
    let (t0, t1) = (
        t0.context("no deployment_started")?,
        t1.context("no deployment_completed")?,
    );
    let critical: f64 = (0..waves)
        .map(|w| {
            (0..per_wave)
                .filter_map(|i| {
                    let name = format!("w{w}s{i}");
                    Some(ready.get(&name)? - starts.get(&name)?)
                })
                .fold(0.0, f64::max)
        })
        .sum();
    let total = t1 - t0;
    let overhead = total / critical - 1.0;
    let ideal = (waves * delay_ms) as f64;
    let servers = waves * per_wave;
    let mut table = format!(
        "up: {servers} stdio sample servers in {waves} waves, {delay_ms} ms start-up each, {profile} build\n\n| measure | value |\n|---|---|\n"
    );
    let _ = writeln!(
        table,
        "| deployment (first start → all ready) | {total:.0} ms |"
    );
    let _ = writeln!(
        table,
        "| critical path (sum of each wave's slowest readiness) | {critical:.0} ms |"
    );
    let _ = writeln!(table, "| ideal (waves × start-up delay) | {ideal:.0} ms |");
    let _ = writeln!(
        table,
        "| orchestration overhead vs critical path | {:.1} % |",
        overhead * 100.0
    );
    let _ = writeln!(
        table,
        "| `mcpfleet up -d` wall time (control plane start included) | {:.0} ms |",
        wall.as_secs_f64() * 1000.0
    );
    let rss_per_server_kb = rss_mb * 1024.0 / servers as f64;
    let _ = writeln!(
        table,
        "| control plane RSS with all running | {rss_mb:.1} MB ({rss_per_server_kb:.0} KB per server) |"
    );
    let verdict = if smoke {
        "smoke run: no target applies".to_string()
    } else {
        let ok = overhead <= UP_OVERHEAD_TARGET && rss_per_server_kb <= UP_RSS_PER_SERVER_TARGET_KB;
        format!(
            "{}: overhead {:.1} % (target ≤ {:.0} %), RSS {rss_per_server_kb:.0} KB per server (target ≤ {UP_RSS_PER_SERVER_TARGET_KB:.0} KB)",
            if ok { "PASS" } else { "FAIL" },
            overhead * 100.0,
            UP_OVERHEAD_TARGET * 100.0
        )
    };
    let _ = writeln!(table, "\n{verdict}");
    print!("{table}");
    let json = serde_json::json!({
        "benchmark": "up", "servers": servers, "waves": waves, "startup_delay_ms": delay_ms, "profile": profile,
        "deployment_ms": total, "critical_path_ms": critical, "ideal_ms": ideal, "overhead": overhead,
        "up_wall_ms": wall.as_secs_f64() * 1000.0, "control_plane_rss_mb": rss_mb,
        "control_plane_rss_per_server_kb": rss_per_server_kb, "verdict": verdict,
    });
    write(
        &out_dir.join("up.json"),
        &serde_json::to_string_pretty(&json)?,
    )?;
    write(&out_dir.join("up.md"), &table)?;
    Ok(())
}

/// Milliseconds since midnight of an RFC 3339 UTC time (`…T03:04:05.123Z`).
pub(crate) fn millis_of_day(time: &str) -> f64 {
    let t = time
        .split('T')
        .nth(1)
        .unwrap_or_default()
        .trim_end_matches('Z');
    let mut parts = t.split(':');
    let h: f64 = parts.next().and_then(|p| p.parse().ok()).unwrap_or(0.0);
    let m: f64 = parts.next().and_then(|p| p.parse().ok()).unwrap_or(0.0);
    let s: f64 = parts.next().and_then(|p| p.parse().ok()).unwrap_or(0.0);
    ((h * 60.0 + m) * 60.0 + s) * 1000.0
}
