//! Planning a fleet: in what order its servers start, and what applying it would change.
//!
//! Owns the dependency graph and its waves, cycle detection with the full cycle path
//! ([`graph`]), the comparison with what is deployed ([`diff`]), the [`Plan`] ([`plan`](mod@plan))
//! and its text, Graphviz and Mermaid forms ([`render`]).
//!
//! Does not own: reading fleet files (`fleet-spec`), reading what is deployed (the store hands
//! in a [`DeployedFleet`]), or carrying a plan out (`fleet-engine`). Pure: no I/O, no tokio.

pub mod diff;
pub mod graph;
pub mod plan;
pub mod render;

pub use diff::{
    Change, DeployedFleet, DeployedServer, MovedImage, PinnedImage, content_hash, keep_pins,
};
pub use graph::{Cycle, DependencyGraph};
pub use plan::{ChangeCounts, Plan, PlannedDependency, PlannedServer, Wave, plan};
pub use render::{render_dot, render_mermaid, render_text};

use fleet_spec::{Diagnostic, ValidFleet};

/// Checks that the fleet's dependencies have an order: one error per independent cycle, located
/// at the `depends_on` entry of the cycle's first edge.
pub fn check(fleet: &ValidFleet) -> Vec<Diagnostic> {
    let servers = &fleet.servers;
    DependencyGraph::from_fleet(fleet)
        .cycles()
        .into_iter()
        .map(|cycle| {
            let (first, second) = cycle.edges().next().unwrap_or_default();
            let entry = servers[second]
                .depends_on
                .iter()
                .find(|d| d.server == servers[first].name);
            let span = entry.map_or(servers[second].span, |d| d.span);
            let links: Vec<String> = cycle
                .edges()
                .map(|(from, to)| {
                    format!("`{}` depends on `{}`", servers[to].name, servers[from].name)
                })
                .collect();
            Diagnostic::error(
                format!("dependency cycle: {}", cycle.describe(|i| &servers[i].name)),
                Some(span),
            )
            .with_label("the first link of the cycle")
            .with_help(format!(
                "{}; remove one of these dependencies",
                links.join(", ")
            ))
        })
        .collect()
}

#[cfg(test)]
mod testing {
    use fleet_spec::{LoadOptions, ValidFleet};

    /// A valid fleet named `devtools` from the rest of a fleet file (`servers:` and the like).
    pub(crate) fn fleet(rest: &str) -> ValidFleet {
        let text = format!("version: 1\nname: devtools\n{rest}");
        let checked =
            fleet_spec::load_str("fleet.yaml", &text, ".".into(), &LoadOptions::default());
        match checked.into_valid() {
            Ok(fleet) => fleet,
            Err(diagnostics) => panic!("invalid test fleet: {diagnostics:#?}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::fleet;
    use fleet_spec::{Severity, Source};

    #[test]
    fn acyclic_fleet_checks_clean() {
        let fleet = fleet(
            "servers:\n  a: { stdio: { command: a } }\n  b: { stdio: { command: b }, depends_on: [a] }\n",
        );
        assert_eq!(check(&fleet), vec![]);
    }

    #[test]
    fn cycle_is_reported_at_its_first_dependency() {
        let text = r#"
servers:
  memory: { stdio: { command: mem }, depends_on: [search] }
  github:
    stdio: { command: gh }
    depends_on: [memory]
  search: { stdio: { command: s }, depends_on: [github] }
  other: { stdio: { command: o }, depends_on: [github] }
"#;
        let fleet = fleet(text);
        let diagnostics = check(&fleet);
        assert_eq!(diagnostics.len(), 1);
        assert_eq!(diagnostics[0].severity, Severity::Error);
        let source = Source::new("fleet.yaml", format!("version: 1\nname: devtools\n{text}"));
        insta::assert_snapshot!(diagnostics[0].render(&source));
    }

    #[test]
    fn every_independent_cycle_is_reported() {
        let fleet = fleet(
            r#"
servers:
  a: { stdio: { command: a }, depends_on: [b] }
  b: { stdio: { command: b }, depends_on: [a] }
  c: { stdio: { command: c }, depends_on: [d] }
  d: { stdio: { command: d }, depends_on: [c] }
"#,
        );
        let messages: Vec<String> = check(&fleet).into_iter().map(|d| d.message).collect();
        assert_eq!(
            messages,
            vec!["dependency cycle: a → b → a", "dependency cycle: c → d → c"]
        );
    }
}
