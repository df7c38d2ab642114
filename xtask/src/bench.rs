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

    // The smoke run (CI) reuses the debug build of the tests; a real run measures release.
    let profile = if smoke { "debug" } else { "release" };
    let mut build = vec!["build", "--quiet", "-p", "mcpfleet"];
    if !smoke {
        build.push("--release");
    }
    crate::run("cargo", &build)?;
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

fn write(path: &Path, text: &str) -> Result<()> {
    std::fs::write(path, text).with_context(|| format!("write {}", path.display()))
}

fn flag(args: &[&str], name: &str) -> Result<Option<usize>> {
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
