//! The plan: what `mcpfleet plan` shows and `deploy` carries out, wave by wave.
//!
//! Its JSON form (`--output json`) is an interface: fields are only ever added.

use crate::diff::{self, Change, DeployedFleet, DeployedServer, MovedImage, SpecSummary};
use crate::graph::{Cycle, DependencyGraph};
use fleet_spec::ValidFleet;
use fleet_spec::model::{Condition, Server};
use serde::{Deserialize, Serialize};

/// The servers of a fleet in start order, each with its change against what is deployed.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Plan {
    pub fleet: String,
    pub environment: Option<String>,
    /// True when there was no deployed fleet to compare with, so every server is created.
    pub nothing_deployed: bool,
    /// Servers that start together; wave `n + 1` starts once wave `n` is ready.
    pub waves: Vec<Wave>,
    /// Deployed servers the fleet no longer has, dependents first; every change is `Delete`.
    pub deletes: Vec<PlannedServer>,
    pub changes: ChangeCounts,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Wave {
    pub index: usize,
    /// By priority (highest first), then name.
    pub servers: Vec<PlannedServer>,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct PlannedServer {
    pub name: String,
    /// `stdio`, `http` or `remote`.
    pub transport: String,
    pub replicas: u32,
    pub priority: i32,
    pub depends_on: Vec<PlannedDependency>,
    pub change: Change,
    /// The server's image tag names other bytes than the deployed revision pinned.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub image_moved: Option<MovedImage>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PlannedDependency {
    pub server: String,
    pub condition: Condition,
}

/// How many servers each kind of change touches.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChangeCounts {
    pub create: usize,
    pub update: usize,
    pub delete: usize,
    pub unchanged: usize,
}

impl ChangeCounts {
    fn tally<'a>(changes: impl IntoIterator<Item = &'a Change>) -> Self {
        let mut counts = ChangeCounts::default();
        for change in changes {
            match change {
                Change::Create => counts.create += 1,
                Change::Update { .. } => counts.update += 1,
                Change::Delete => counts.delete += 1,
                Change::Unchanged => counts.unchanged += 1,
            }
        }
        counts
    }

    /// Whether applying the plan would change anything.
    pub fn is_empty(&self) -> bool {
        self.create + self.update + self.delete == 0
    }
}

/// Plans `fleet` against what is `deployed` (`None`: nothing yet, everything is created).
///
/// # Errors
/// A [`Cycle`] of `fleet.servers` indices when the dependencies have no order;
/// [`check`](crate::check) reports it as a located diagnostic.
pub fn plan(fleet: &ValidFleet, deployed: Option<&DeployedFleet>) -> Result<Plan, Cycle> {
    let waves = DependencyGraph::from_fleet(fleet).waves()?;
    let planned = |server: &Server| {
        let Some(deployed) = deployed else {
            return PlannedServer::desired(server, Change::Create, None);
        };
        let desired = DeployedServer::from_server(server);
        let old = deployed.get(&server.name);
        let change = diff::compare(&desired, old);
        PlannedServer::desired(server, change, diff::moved_image(&desired, old))
    };
    let waves: Vec<Wave> = waves
        .into_iter()
        .enumerate()
        .map(|(index, members)| {
            let servers = members
                .into_iter()
                .map(|i| &fleet.servers[i])
                .map(planned)
                .collect();
            Wave { index, servers }
        })
        .collect();
    let deletes: Vec<PlannedServer> = deployed
        .map(|deployed| diff::deleted(fleet, deployed))
        .unwrap_or_default()
        .into_iter()
        .map(|(server, summary)| PlannedServer::deleted(server, summary))
        .collect();
    let planned = waves.iter().flat_map(|w| &w.servers).chain(&deletes);
    Ok(Plan {
        fleet: fleet.name.clone(),
        environment: fleet.environment.clone(),
        nothing_deployed: deployed.is_none(),
        changes: ChangeCounts::tally(planned.map(|s| &s.change)),
        waves,
        deletes,
    })
}

impl PlannedServer {
    fn desired(server: &Server, change: Change, image_moved: Option<MovedImage>) -> Self {
        PlannedServer {
            name: server.name.clone(),
            transport: server.transport.kind().to_string(),
            replicas: server.replicas,
            priority: server.priority,
            depends_on: server
                .depends_on
                .iter()
                .map(|d| PlannedDependency {
                    server: d.server.clone(),
                    condition: d.condition,
                })
                .collect(),
            change,
            image_moved,
        }
    }

    fn deleted(server: &DeployedServer, summary: SpecSummary) -> Self {
        PlannedServer {
            name: server.name.clone(),
            transport: summary.transport().to_string(),
            replicas: summary.replicas,
            priority: summary.priority,
            depends_on: summary.depends_on,
            change: Change::Delete,
            image_moved: None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::fleet;

    #[test]
    fn first_plan_creates_everything_in_waves() {
        let fleet = fleet(
            r#"
servers:
  github: { stdio: { command: gh }, depends_on: { memory: { condition: started } } }
  memory: { stdio: { command: mem } }
  docs: { remote: { url: "https://docs.example.com/mcp" }, priority: 5 }
"#,
        );
        let plan = plan(&fleet, None).unwrap();
        assert!(plan.nothing_deployed);
        let waves: Vec<Vec<(&str, &str)>> = plan
            .waves
            .iter()
            .map(|w| {
                w.servers
                    .iter()
                    .map(|s| (s.name.as_str(), s.transport.as_str()))
                    .collect()
            })
            .collect();
        assert_eq!(
            waves,
            vec![
                vec![("docs", "remote"), ("memory", "stdio")],
                vec![("github", "stdio")]
            ]
        );
        assert_eq!(
            plan.waves[1].servers[0].depends_on,
            vec![PlannedDependency {
                server: "memory".into(),
                condition: Condition::Started
            }]
        );
        assert_eq!(
            plan.changes,
            ChangeCounts {
                create: 3,
                ..ChangeCounts::default()
            }
        );
    }

    #[test]
    fn replanning_what_is_deployed_changes_nothing() {
        let fleet = fleet(
            "servers:\n  a: { stdio: { command: a } }\n  b: { stdio: { command: b }, depends_on: [a] }\n",
        );
        let plan = plan(&fleet, Some(&DeployedFleet::from_fleet(&fleet))).unwrap();
        assert!(!plan.nothing_deployed);
        assert!(plan.changes.is_empty());
        assert_eq!(plan.changes.unchanged, 2);
    }

    #[test]
    fn plan_counts_updates_and_deletes() {
        let old = fleet(
            "servers:\n  a: { stdio: { command: a } }\n  gone: { http: { command: g }, replicas: 3 }\n",
        );
        let new =
            fleet("servers:\n  a: { stdio: { command: a2 } }\n  b: { stdio: { command: b } }\n");
        let plan = plan(&new, Some(&DeployedFleet::from_fleet(&old))).unwrap();
        assert_eq!(
            plan.changes,
            ChangeCounts {
                create: 1,
                update: 1,
                delete: 1,
                unchanged: 0
            }
        );
        let gone = &plan.deletes[0];
        assert_eq!(
            (gone.name.as_str(), gone.transport.as_str(), gone.replicas),
            ("gone", "http", 3)
        );
    }

    #[test]
    fn cyclic_fleet_has_no_plan() {
        let fleet = fleet(
            "servers:\n  a: { stdio: { command: a }, depends_on: [b] }\n  b: { stdio: { command: b }, depends_on: [a] }\n",
        );
        assert_eq!(plan(&fleet, None).unwrap_err().path, vec![0, 1]);
    }
}
