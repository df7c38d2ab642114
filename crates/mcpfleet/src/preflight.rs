//! `preflight`: before a fleet goes to its cluster, can it be deployed there with these
//! credentials? The fleet is rendered as `render kubernetes` renders it, and the cluster
//! is asked — read-only — about every object and Secret that render produces.

use crate::render::{Rendered, objects};
use anyhow::Result;
use fleet_runtime_kube::{Cluster, ClusterAccess, PreflightReport, Severity, referenced_secrets};
use std::path::{Path, PathBuf};
use std::process::ExitCode;

/// Some check failed: the deploy would fail.
const FAILED: u8 = 1;

pub(crate) async fn preflight(
    file: &Path,
    environment: Option<String>,
    kubeconfig: Option<PathBuf>,
    context: Option<String>,
    json: bool,
) -> Result<ExitCode> {
    let Rendered { fleet, objects, .. } = match objects(file, environment)? {
        Ok(rendered) => rendered,
        Err(code) => return Ok(code),
    };
    let access = ClusterAccess::Kubeconfig {
        path: kubeconfig,
        context: context.or_else(|| fleet.kubernetes.context.clone()),
    };
    let cluster = Cluster::connect(&access).await?;
    // How `up` with this kubeconfig would reach the fleet's http pods.
    let reach = fleet.kubernetes.reach.unwrap_or(access.default_reach());
    let report = cluster
        .preflight(&objects, &referenced_secrets(&objects), reach)
        .await;
    let namespace = &fleet.kubernetes.namespace;
    if json {
        println!(
            "{}",
            serde_json::to_string_pretty(&as_json(&report, cluster.url(), namespace))?
        );
    } else {
        print_report(&report, cluster.url(), namespace);
    }
    Ok(if report.passed() {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(FAILED)
    })
}

fn print_report(report: &PreflightReport, url: &str, namespace: &str) {
    let version = report
        .server_version
        .as_deref()
        .unwrap_or("version unknown");
    println!("cluster {url} ({version}), namespace {namespace}");
    for check in &report.checks {
        println!("  {check}");
    }
    let count = |severity| {
        report
            .checks
            .iter()
            .filter(|check| check.severity == severity)
            .count()
    };
    let (failed, warnings) = (count(Severity::Failure), count(Severity::Warning));
    if failed == 0 {
        println!(
            "preflight passed ({warnings} warning{})",
            if warnings == 1 { "" } else { "s" }
        );
    } else {
        println!(
            "preflight failed: {failed} of {} checks; fix them and run `mcpfleet preflight` again",
            report.checks.len()
        );
    }
}

fn as_json(report: &PreflightReport, url: &str, namespace: &str) -> serde_json::Value {
    let checks: Vec<serde_json::Value> = report
        .checks
        .iter()
        .map(|check| {
            serde_json::json!({
                "area": check.area.as_str(),
                "severity": check.severity.as_str(),
                "message": check.message,
            })
        })
        .collect();
    serde_json::json!({
        "cluster": url,
        "version": report.server_version,
        "namespace": namespace,
        "passed": report.passed(),
        "checks": checks,
    })
}
