//! Commands that read the fleet's record in the state store, and back it up: `history`,
//! `audit`, `export-state`, `import-state`; and what is deployed, for `plan`. Exit codes: 0 success, 1 refused (an import
//! into a store that holds data, a file that is not a state export, nothing to export),
//! 2 usage or I/O error, 3 a control plane runs where none may (import) or none answers.

use crate::fleet::state_dir_of;
use anyhow::{Context, Result};
use fleet_api::Client;
use fleet_control::{
    BackupError, StateDirError, StateExport, StoreLocation, default_state_dir, record,
};
use fleet_plan::{DeployedFleet, DeployedServer};
use fleet_store::{StateStore, StoreError};
use std::path::{Path, PathBuf};
use std::process::ExitCode;

const REFUSED: u8 = 1;
const NOT_RUNNING: u8 = 3;

/// `history`: every deployment, oldest first; `history SERVER`: that server's revisions.
pub(crate) async fn history(
    file: &Path,
    state_dir: Option<PathBuf>,
    environment: Option<String>,
    server: Option<&str>,
    json: bool,
) -> Result<ExitCode> {
    if let Some(server) = server {
        return server_history(file, state_dir, environment, server, json).await;
    }
    let deployments = match read(file, state_dir, environment).await? {
        Source::Running(client) => client.history().await?,
        Source::Stopped(Some(fleet)) => record::history(fleet.store()).await?,
        Source::Stopped(None) => Vec::new(),
        Source::Failed(code) => return Ok(code),
    };
    if json {
        println!("{}", serde_json::to_string_pretty(&deployments)?);
        return Ok(ExitCode::SUCCESS);
    }
    if deployments.is_empty() {
        println!("nothing has been deployed yet");
        return Ok(ExitCode::SUCCESS);
    }
    println!(
        "{:<6} {:<8} {:<8} {:<12} {:<24} {:<20} {:<24} REASON",
        "DEPLOY", "REVISION", "KIND", "STATE", "STARTED", "AUTHOR", "SERVERS"
    );
    for d in &deployments {
        let revision = match d.from_revision {
            Some(from) => format!("{from}→{}", d.revision),
            None => d.revision.to_string(),
        };
        let servers: Vec<String> = d
            .servers
            .iter()
            .map(|(name, number)| format!("{name}@{number}"))
            .collect();
        let why = match (&d.reason, &d.outcome) {
            (Some(reason), Some(outcome)) => format!("{reason} ({outcome})"),
            (Some(reason), None) => reason.clone(),
            (None, Some(outcome)) => format!("({outcome})"),
            (None, None) => String::new(),
        };
        println!(
            "{:<6} {:<8} {:<8} {:<12} {:<24} {:<20} {:<24} {why}",
            d.deployment,
            revision,
            d.kind,
            d.state,
            d.started_at,
            d.author,
            servers.join(" ")
        );
    }
    Ok(ExitCode::SUCCESS)
}

async fn server_history(
    file: &Path,
    state_dir: Option<PathBuf>,
    environment: Option<String>,
    server: &str,
    json: bool,
) -> Result<ExitCode> {
    let revisions = match read(file, state_dir, environment).await? {
        Source::Running(client) => client
            .server_revisions(server)
            .await
            .map_err(|e| e.to_string()),
        Source::Stopped(Some(fleet)) => record::server_revisions(fleet.store(), server)
            .await
            .map_err(|e| e.to_string()),
        Source::Stopped(None) => Err(format!("no server `{server}` was ever deployed")),
        Source::Failed(code) => return Ok(code),
    };
    let revisions = match revisions {
        Ok(r) => r,
        Err(why) => {
            eprintln!("error: {why}");
            return Ok(ExitCode::from(REFUSED));
        }
    };
    if json {
        println!("{}", serde_json::to_string_pretty(&revisions)?);
        return Ok(ExitCode::SUCCESS);
    }
    println!(
        "{:<8} {:<11} {:<14} {:<24} {:<14} REASON",
        "REVISION", "STATE", "HASH", "CREATED", "FLEET REVISION"
    );
    for r in &revisions {
        println!(
            "{:<8} {:<11} {:<14} {:<24} {:<14} {}",
            r.number,
            r.state,
            r.hash.get(..12).unwrap_or(&r.hash),
            r.created_at,
            r.fleet_revision,
            r.reason.as_deref().unwrap_or("")
        );
    }
    Ok(ExitCode::SUCCESS)
}

/// Where the record is read: the running control plane, or the store of a stopped fleet
/// (`None`: nothing was ever deployed with this state directory).
pub(crate) enum Source {
    Running(Client),
    Stopped(Option<record::StoppedFleet>),
    /// Neither could be read; the reason was printed.
    Failed(ExitCode),
}

/// The record of the fleet of `file` / `state_dir` (its store named by the file with the
/// overlay of `environment`), whether its control plane runs or not.
pub(crate) async fn read(
    file: &Path,
    state_dir: Option<PathBuf>,
    environment: Option<String>,
) -> Result<Source> {
    let location = store_location(file, environment)?;
    read_dir(&state_dir_of(file, state_dir)?, &location).await
}

/// Where the fleet of `file` (with the overlay of environment `env`) keeps its state store:
/// the PostgreSQL database of its `state.postgres`, its secrets read now, else its state
/// directory. Only a file that says `state:` somewhere is validated for it: a mistake
/// elsewhere in the file does not keep a stopped fleet's record from being read.
pub(crate) fn store_location(file: &Path, env: Option<String>) -> Result<StoreLocation> {
    let says_state = std::fs::read_to_string(file)
        .ok()
        .and_then(|text| fleet_spec::yaml::parse(&text).ok())
        .is_some_and(|root| {
            let in_environments = match root.get("environments").map(|e| &e.value) {
                Some(fleet_spec::yaml::Value::Map(entries)) => entries
                    .iter()
                    .any(|(_, overlay)| overlay.get("state").is_some()),
                _ => false,
            };
            root.get("state").is_some() || in_environments
        });
    if !says_state {
        return Ok(StoreLocation::StateDir);
    }
    let checked = crate::commands::check(file, env)?;
    crate::commands::print_diagnostics(&checked);
    let Ok(fleet) = checked.into_valid() else {
        anyhow::bail!(
            "{} is not valid, so where its state store is cannot be told; fix it (`mcpfleet validate`)",
            file.display()
        );
    };
    Ok(StoreLocation::of(
        &fleet,
        std::sync::Arc::new(fleet_spec::template::SystemHost),
    )?)
}

/// The record of the fleet whose state directory is `dir` and whose store is at `location`.
async fn read_dir(dir: &Path, location: &StoreLocation) -> Result<Source> {
    let client = Client::new(dir);
    if client.is_running().await {
        return Ok(Source::Running(client));
    }
    Ok(match record::open_stopped(dir, location).await {
        Ok(fleet) => Source::Stopped(Some(fleet)),
        Err(BackupError::NoStore { .. }) => Source::Stopped(None),
        Err(e) => Source::Failed(backup_failure(
            &e,
            &format!("read the record in {}", dir.display()),
        )),
    })
}

/// What is deployed in the fleet whose state directory is `dir` and whose store is at
/// `location`, for `plan` to diff
/// against: what the running control plane serves, else what the store of the stopped
/// fleet records as serving (its serving fleet revision's server revisions), else nothing
/// (`None`: everything is new). `Err`: neither could be read (the reason was printed).
pub(crate) async fn deployed(
    dir: &Path,
    location: &StoreLocation,
) -> Result<Result<Option<DeployedFleet>, ExitCode>> {
    let servers: Vec<DeployedServer> = match read_dir(dir, location).await? {
        Source::Running(client) => client
            .deployed()
            .await?
            .into_iter()
            .map(|s| DeployedServer {
                name: s.name,
                hash: s.hash,
                spec: s.spec,
            })
            .collect(),
        Source::Stopped(Some(fleet)) => match serving_servers(fleet.store()).await? {
            Some(servers) => servers,
            None => return Ok(Ok(None)),
        },
        Source::Stopped(None) => return Ok(Ok(None)),
        Source::Failed(code) => return Ok(Err(code)),
    };
    Ok(Ok(Some(servers.into_iter().collect())))
}

/// The server revisions of the store's serving fleet revision; `None` if nothing ever
/// served.
async fn serving_servers(
    store: &dyn StateStore,
) -> Result<Option<Vec<DeployedServer>>, StoreError> {
    let Some(number) = store.serving_fleet_revision().await? else {
        return Ok(None);
    };
    let Some(revision) = store.fleet_revision(number).await? else {
        return Ok(None);
    };
    let mut servers = Vec::with_capacity(revision.servers.len());
    for (name, number) in &revision.servers {
        // A fleet revision names only server revisions recorded with it.
        if let Some(server) = store.server_revision(name, *number).await? {
            servers.push(DeployedServer {
                name: server.server,
                hash: server.hash,
                spec: server.spec,
            });
        }
    }
    Ok(Some(servers))
}

/// How many audit records one request asks for.
const AUDIT_PAGE: usize = 1_000;

/// `audit`: every tool call through the gateway, oldest first.
pub(crate) async fn audit(
    file: &Path,
    state_dir: Option<PathBuf>,
    environment: Option<String>,
    after: u64,
    json: bool,
) -> Result<ExitCode> {
    let source = match read(file, state_dir, environment).await? {
        Source::Failed(code) => return Ok(code),
        Source::Stopped(None) => None,
        source => Some(source),
    };
    let mut records = Vec::new();
    let mut last = after;
    while let Some(source) = &source {
        let page = match source {
            Source::Running(client) => client.audit(last, AUDIT_PAGE).await?,
            Source::Stopped(Some(fleet)) => record::audit(fleet.store(), last, AUDIT_PAGE).await?,
            Source::Stopped(None) | Source::Failed(_) => Vec::new(),
        };
        let Some(end) = page.last() else { break };
        last = end.id;
        records.extend(page);
    }
    if json {
        println!("{}", serde_json::to_string_pretty(&records)?);
        return Ok(ExitCode::SUCCESS);
    }
    println!(
        "{:<6} {:<24} {:<16} {:<16} {:>3} {:<20} {:<16} {:>10}",
        "ID", "TIME", "TOKEN", "SERVER", "REV", "TOOL", "OUTCOME", "TOOK"
    );
    for r in &records {
        println!(
            "{:<6} {:<24} {:<16} {:<16} {:>3} {:<20} {:<16} {:>10}",
            r.id,
            r.time,
            r.token.as_deref().unwrap_or("-"),
            r.server,
            r.revision,
            r.tool,
            r.outcome,
            crate::fleet::millis_for_people(r.duration_ms)
        );
    }
    Ok(ExitCode::SUCCESS)
}

/// `export-state FILE`: the whole state store as one JSON document, written atomically and
/// owner-only. Through the control plane when one runs (one read transaction, while it
/// goes on working), else from the store file directly under the state directory's lock.
/// With `keep`, older exports beside it are then removed ([`prune_exports`]).
pub(crate) async fn export_state(
    out: &Path,
    keep: Option<u32>,
    file: &Path,
    state_dir: Option<PathBuf>,
    environment: Option<String>,
    json: bool,
) -> Result<ExitCode> {
    let dir = state_dir_of(file, state_dir)?;
    let location = store_location(file, environment)?;
    let client = Client::new(&dir);
    let export: StateExport = if client.is_running().await {
        let body = client.export_state().await?;
        serde_json::from_slice(&body).context("the control plane's export does not parse")?
    } else {
        match fleet_control::export_state(&dir, &location).await {
            Ok(export) => export,
            Err(e) => {
                let what = format!("export the state of {}", location.named(&dir));
                return Ok(backup_failure(&e, &what));
            }
        }
    };
    let text = serde_json::to_string_pretty(&export)? + "\n";
    crate::commands::write_atomically(out, &text, 0o600)?;
    let code = report(&export, "exported", &dir, &location, out, json)?;
    if let Some(keep) = keep {
        for removed in prune_exports(out, keep as usize)? {
            if !json {
                println!("removed the older export {}", removed.display());
            }
        }
    }
    Ok(code)
}

/// Keeps the `keep` newest state exports in `out`'s directory, `out` (just written) among
/// them, and removes the older ones: a scheduled backup's retention. A file counts as an
/// export only when it is a `*.json` file that reads as one, so nothing else in the
/// directory is ever removed. Returns what it removed.
fn prune_exports(out: &Path, keep: usize) -> Result<Vec<PathBuf>> {
    let dir = out
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let mut older = Vec::new();
    for entry in std::fs::read_dir(dir).with_context(|| format!("cannot read {}", dir.display()))? {
        let entry = entry?;
        let path = entry.path();
        if path.file_name() == out.file_name()
            || path.extension().is_none_or(|e| e != "json")
            || !entry.file_type()?.is_file()
        {
            continue;
        }
        let is_export = std::fs::read(&path)
            .is_ok_and(|bytes| serde_json::from_slice::<StateExport>(&bytes).is_ok());
        if is_export {
            older.push((entry.metadata()?.modified()?, path));
        }
    }
    // Newest first; `out` takes one of the places kept.
    older.sort_by(|a, b| b.0.cmp(&a.0).then_with(|| b.1.cmp(&a.1)));
    let removed: Vec<PathBuf> = older
        .into_iter()
        .skip(keep.saturating_sub(1))
        .map(|(_, path)| path)
        .collect();
    for path in &removed {
        std::fs::remove_file(path).with_context(|| format!("cannot remove {}", path.display()))?;
    }
    Ok(removed)
}

/// `import-state FILE`: loads an export into a state directory whose store is empty or
/// absent, while no control plane runs; on any failure nothing is written.
pub(crate) async fn import_state(
    input: &Path,
    file: &Path,
    state_dir: Option<PathBuf>,
    environment: Option<String>,
    json: bool,
) -> Result<ExitCode> {
    let text = std::fs::read_to_string(input)
        .with_context(|| format!("cannot read {}", input.display()))?;
    let export: StateExport = match serde_json::from_str(&text) {
        Ok(export) => export,
        Err(e) => {
            eprintln!(
                "error: {}:{}:{}: not a state export (made by `mcpfleet export-state`): {e}",
                input.display(),
                e.line(),
                e.column()
            );
            return Ok(ExitCode::from(REFUSED));
        }
    };
    // Before any name becomes a path: the exported fleet's name may choose the directory.
    if let Err(e) = fleet_control::check_import_names(&export) {
        let what = format!("import {}", input.display());
        return Ok(backup_failure(&e, &what));
    }
    // The state directory: as given, else the fleet file's, else the exported fleet's.
    let dir = match (state_dir, file.exists()) {
        (Some(dir), _) => dir,
        (None, true) => state_dir_of(file, None)?,
        (None, false) => match export.fleet_revisions.last() {
            Some(revision) => default_state_dir(&revision.fleet),
            None => anyhow::bail!(
                "{} holds no fleet revision to name the fleet by; pass --state-dir",
                input.display()
            ),
        },
    };
    if Client::new(&dir).is_running().await {
        eprintln!(
            "error: a control plane is running with {}; an import goes only into a state directory no control plane uses: stop it with `mcpfleet down`, or import into another --state-dir",
            dir.display()
        );
        return Ok(ExitCode::from(NOT_RUNNING));
    }
    let location = match file.exists() {
        true => store_location(file, environment)?,
        false => StoreLocation::StateDir,
    };
    if let Err(e) = fleet_control::import_state(&dir, &location, export.clone()).await {
        let what = format!("import {} into {}", input.display(), location.named(&dir));
        return Ok(backup_failure(&e, &what));
    }
    report(&export, "imported", &dir, &location, input, json)
}

/// Says why an export or import did not happen; the exit code.
fn backup_failure(error: &BackupError, what: &str) -> ExitCode {
    eprintln!("error: cannot {what}: {error}");
    match error {
        BackupError::StateDir(StateDirError::Locked { .. }) => ExitCode::from(NOT_RUNNING),
        BackupError::NoStore { .. } | BackupError::Store(_) | BackupError::InvalidNames { .. } => {
            ExitCode::from(REFUSED)
        }
        BackupError::StateDir(_) | BackupError::Io { .. } => ExitCode::from(2),
    }
}

fn report(
    export: &StateExport,
    done: &str,
    dir: &Path,
    location: &StoreLocation,
    file: &Path,
    json: bool,
) -> Result<ExitCode> {
    let store = location.named(dir);
    let counts = serde_json::json!({
        "state_dir": dir.display().to_string(),
        "store": store,
        "file": file.display().to_string(),
        "format": export.format,
        "fleet_revisions": export.fleet_revisions.len(),
        "server_revisions": export.server_revisions.len(),
        "deployments": export.deployments.len(),
        "events": export.events.len(),
        "audit": export.audit.len(),
    });
    if json {
        println!("{}", serde_json::to_string_pretty(&counts)?);
    } else {
        let file = file.display().to_string();
        let (from, to) = if done == "exported" {
            (&store, &file)
        } else {
            (&file, &store)
        };
        eprintln!(
            "{done} {} fleet revisions, {} server revisions, {} deployments, {} events and {} audit records from {} to {}",
            export.fleet_revisions.len(),
            export.server_revisions.len(),
            export.deployments.len(),
            export.events.len(),
            export.audit.len(),
            from,
            to
        );
    }
    Ok(ExitCode::SUCCESS)
}
