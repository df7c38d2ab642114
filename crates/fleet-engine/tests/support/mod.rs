//! What the engine's tests on the fake runtime share: a fleet from YAML, an engine on a
//! fake runtime, and a deployment's desired state and plan.

// Each test crate uses its own part of this module.
#![allow(dead_code)]

use fleet_engine::{Desired, Engine, EngineConfig};
use fleet_plan::{DeployedFleet, DeployedServer, Plan};
use fleet_spec::ValidFleet;
use fleet_spec::template::SystemHost;
use fleet_testkit::fake_runtime::FakeRuntime;
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;

/// A fleet file's text, checked as `mcpfleet` checks it; a fleet that does not validate
/// is refused with its diagnostics.
pub(crate) fn validate(yaml: &str) -> Result<ValidFleet, String> {
    fleet_spec::load_str(
        "fleet.yaml",
        yaml,
        PathBuf::from("/nonexistent"),
        &fleet_spec::LoadOptions::default(),
    )
    .into_valid()
    .map_err(|diagnostics| format!("{diagnostics:?}"))
}

/// A test's fleet, which must be valid.
pub(crate) fn fleet(yaml: &str) -> ValidFleet {
    validate(yaml).unwrap_or_else(|d| panic!("invalid test fleet: {d}"))
}

/// An engine on `runtime` that starts at most 8 servers at once.
pub(crate) fn engine(runtime: &FakeRuntime) -> Engine<FakeRuntime> {
    engine_starting_at_most(runtime, 8)
}

/// An engine on `runtime` that starts at most `concurrency` servers at once.
pub(crate) fn engine_starting_at_most(
    runtime: &FakeRuntime,
    concurrency: usize,
) -> Engine<FakeRuntime> {
    let config = EngineConfig {
        state_dir: PathBuf::from("/nonexistent/state"),
        concurrency,
        gateway_url: None,
    };
    Engine::new(runtime.clone(), config, "fake")
}

/// What `fleet` deploys at `revision` (every server), planned against `deployed`.
pub(crate) fn desired(
    fleet: ValidFleet,
    revision: u64,
    deployed: Option<&ValidFleet>,
) -> (Desired, Plan) {
    let deployed: Option<DeployedFleet> =
        deployed.map(|d| d.servers.iter().map(DeployedServer::from_server).collect());
    let plan = fleet_plan::plan(&fleet, deployed.as_ref()).expect("no dependency cycle");
    let revisions: BTreeMap<String, u64> = fleet
        .servers
        .iter()
        .map(|s| (s.name.clone(), revision))
        .collect();
    let desired = Desired {
        fleet: Arc::new(fleet),
        host: Arc::new(SystemHost),
        revisions,
        deployment: None,
        is_rollback: false,
    };
    (desired, plan)
}
