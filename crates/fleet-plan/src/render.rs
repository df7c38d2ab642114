//! The plan for people: terminal text, Graphviz DOT and Mermaid.
//!
//! Machines get the plan's JSON (`serde_json::to_string_pretty(&plan)`), not one of these.
//! Graph edges point from a dependency to its dependent, the direction servers start in;
//! dashed edges wait only for the dependency to start, solid ones for it to be healthy.

use crate::diff::Change;
use crate::plan::{Plan, PlannedServer};
use fleet_spec::model::{Condition, short_digest};
use std::fmt::Write as _;

/// The plan as terminal text: waves with change markers (`+` create, `~` update, `-` delete,
/// blank when unchanged), then the deletions, then a `Plan: …` summary line.
pub fn render_text(plan: &Plan) -> String {
    let mut out = String::new();
    let _ = match &plan.environment {
        Some(env) => writeln!(out, "Fleet {} (environment {env})", plan.fleet),
        None => writeln!(out, "Fleet {}", plan.fleet),
    };
    if plan.nothing_deployed {
        out.push_str("everything is new (nothing deployed yet)\n");
    } else if plan.changes.is_empty() {
        out.push_str("no changes: the deployed fleet matches\n");
    }
    let all = || {
        plan.waves
            .iter()
            .flat_map(|w| &w.servers)
            .chain(&plan.deletes)
    };
    let name_width = all().map(|s| s.name.len()).max().unwrap_or(0);
    let transport_width = all().map(|s| s.transport.len()).max().unwrap_or(0);
    for wave in &plan.waves {
        let _ = writeln!(out, "\nWave {}", wave.index);
        for server in &wave.servers {
            text_line(&mut out, server, name_width, transport_width);
        }
    }
    if !plan.deletes.is_empty() {
        out.push_str("\nDelete (dependents first)\n");
        for server in &plan.deletes {
            text_line(&mut out, server, name_width, transport_width);
        }
    }
    let c = plan.changes;
    let _ = writeln!(
        out,
        "\nPlan: {} to create, {} to update, {} to delete, {} unchanged",
        c.create, c.update, c.delete, c.unchanged
    );
    out
}

fn text_line(out: &mut String, server: &PlannedServer, name_width: usize, transport_width: usize) {
    let replicas = match server.replicas {
        1 => "1 replica".to_string(),
        n => format!("{n} replicas"),
    };
    let mut line = format!(
        "  {} {:name_width$}  {:transport_width$}  {replicas:10}",
        server.change.marker(),
        server.name,
        server.transport,
    );
    if server.priority != 0 {
        let _ = write!(line, "  priority {}", server.priority);
    }
    // A deletion waits for nothing; its dependencies only ordered the list it is in.
    if !server.depends_on.is_empty() && server.change != Change::Delete {
        let after: Vec<String> = server
            .depends_on
            .iter()
            .map(|d| match d.condition {
                Condition::Healthy => d.server.clone(),
                Condition::Started => format!("{} (started)", d.server),
            })
            .collect();
        let _ = write!(line, "  after {}", after.join(", "));
    }
    if let Change::Update { fields } = &server.change {
        let _ = write!(line, "  changed: {}", fields.join(", "));
    }
    if let Some(moved) = &server.image_moved {
        let _ = write!(
            line,
            "  (image {} now {}, was {})",
            moved.image,
            short_digest(&moved.digest),
            short_digest(&moved.was)
        );
    }
    out.push_str(line.trim_end());
    out.push('\n');
}

/// The plan as a Graphviz digraph: one cluster per wave (and one for deletions), edges from
/// each dependency to its dependent.
pub fn render_dot(plan: &Plan) -> String {
    let mut out = String::new();
    let _ = writeln!(out, "digraph {} {{", dot_quote(&plan.fleet));
    out.push_str("  rankdir=LR;\n  node [shape=box];\n");
    let clusters = plan
        .waves
        .iter()
        .map(|w| {
            (
                format!("cluster_wave_{}", w.index),
                format!("wave {}", w.index),
                &w.servers,
            )
        })
        .chain(
            (!plan.deletes.is_empty())
                .then(|| ("cluster_delete".into(), "delete".into(), &plan.deletes)),
        );
    for (id, label, servers) in clusters {
        let _ = writeln!(out, "  subgraph {id} {{\n    label={};", dot_quote(&label));
        for server in servers {
            let style = if server.change == Change::Delete {
                ", style=dotted"
            } else {
                ""
            };
            let _ = writeln!(
                out,
                "    {} [label={}{style}];",
                dot_quote(&server.name),
                dot_quote(&node_label(server))
            );
        }
        out.push_str("  }\n");
    }
    for (dependency, dependent, condition) in edges(plan) {
        let style = if condition == Condition::Started {
            " [style=dashed]"
        } else {
            ""
        };
        let _ = writeln!(
            out,
            "  {} -> {}{style};",
            dot_quote(dependency),
            dot_quote(dependent)
        );
    }
    out.push_str("}\n");
    out
}

/// The plan as a Mermaid flowchart: one subgraph per wave (and one for deletions), edges from
/// each dependency to its dependent.
pub fn render_mermaid(plan: &Plan) -> String {
    let mut out = String::from("flowchart LR\n");
    let clusters = plan
        .waves
        .iter()
        .map(|w| {
            (
                format!("wave_{}", w.index),
                format!("wave {}", w.index),
                &w.servers,
            )
        })
        .chain(
            (!plan.deletes.is_empty()).then(|| ("delete".into(), "delete".into(), &plan.deletes)),
        );
    for (id, label, servers) in clusters {
        let _ = writeln!(out, "  subgraph {id}[\"{label}\"]");
        for server in servers {
            let label = mermaid_text(&node_label(server)).replace('\n', "<br/>");
            let _ = writeln!(out, "    {}[\"{label}\"]", mermaid_id(&server.name));
        }
        out.push_str("  end\n");
    }
    for (dependency, dependent, condition) in edges(plan) {
        let arrow = if condition == Condition::Started {
            "-.->"
        } else {
            "-->"
        };
        let _ = writeln!(
            out,
            "  {} {arrow} {}",
            mermaid_id(dependency),
            mermaid_id(dependent)
        );
    }
    out
}

/// `dependency → dependent` edges of the servers being deployed, in plan order.
fn edges(plan: &Plan) -> impl Iterator<Item = (&str, &str, Condition)> {
    plan.waves
        .iter()
        .flat_map(|w| &w.servers)
        .flat_map(|server| {
            server
                .depends_on
                .iter()
                .map(|d| (d.server.as_str(), server.name.as_str(), d.condition))
        })
}

/// `+ name`, then the transport and the replica count when there is more than one.
fn node_label(server: &PlannedServer) -> String {
    let mut label = match server.change {
        Change::Unchanged => server.name.clone(),
        ref change => format!("{} {}", change.marker(), server.name),
    };
    let _ = write!(label, "\n{}", server.transport);
    if server.replicas != 1 {
        let _ = write!(label, " ×{}", server.replicas);
    }
    label
}

/// A DOT quoted string; a newline becomes DOT's `\n` line break.
fn dot_quote(text: &str) -> String {
    let mut quoted = String::with_capacity(text.len() + 2);
    quoted.push('"');
    for c in text.chars() {
        match c {
            '"' => quoted.push_str("\\\""),
            '\\' => quoted.push_str("\\\\"),
            '\n' => quoted.push_str("\\n"),
            c => quoted.push(c),
        }
    }
    quoted.push('"');
    quoted
}

/// A Mermaid node id for a server name. Mermaid ids cannot hold `-` safely, and some words
/// (`end`) or first letters (`o`, `x` after an arrow) change how a line parses, so ids are
/// `srv_` plus the name with every character but ASCII letters and digits written as `_hex_`;
/// distinct names always get distinct ids.
fn mermaid_id(name: &str) -> String {
    let mut id = String::from("srv_");
    for c in name.chars() {
        if c.is_ascii_alphanumeric() {
            id.push(c);
        } else {
            let _ = write!(id, "_{:x}_", u32::from(c));
        }
    }
    id
}

/// Text inside a quoted Mermaid label, with the characters Mermaid gives meaning written as
/// entity codes.
fn mermaid_text(text: &str) -> String {
    let mut escaped = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '"' => escaped.push_str("#quot;"),
            '#' => escaped.push_str("#35;"),
            '<' => escaped.push_str("#lt;"),
            '>' => escaped.push_str("#gt;"),
            c => escaped.push(c),
        }
    }
    escaped
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::diff::DeployedFleet;
    use crate::plan::plan;
    use crate::testing::fleet;

    const DEVTOOLS: &str = r#"
servers:
  memory: { stdio: { command: npx, args: ["-y", "@modelcontextprotocol/server-memory"] } }
  github:
    stdio: { command: npx, args: ["-y", "@modelcontextprotocol/server-github"] }
    depends_on: [memory]
  search:
    http: { command: ./search-server, args: ["--port", "{{ port }}"], path: /mcp }
    replicas: 2
    depends_on: { memory: { condition: started }, github: { condition: healthy } }
  remote-docs:
    remote: { url: "https://docs.example.com/mcp" }
    priority: 10
"#;

    fn first_plan() -> Plan {
        plan(&fleet(DEVTOOLS), None).unwrap()
    }

    /// DEVTOOLS against a deployed fleet where `search` had 1 replica and `old_cache` existed.
    fn second_plan() -> Plan {
        let before = DEVTOOLS.replace("replicas: 2", "replicas: 1")
            + "  old_cache: { stdio: { command: cache }, depends_on: [memory] }\n";
        let deployed = DeployedFleet::from_fleet(&fleet(&before));
        plan(&fleet(DEVTOOLS), Some(&deployed)).unwrap()
    }

    #[test]
    fn text_of_a_first_plan() {
        let text = render_text(&first_plan());
        assert!(text.contains("everything is new (nothing deployed yet)"));
        assert!(text.ends_with("Plan: 4 to create, 0 to update, 0 to delete, 0 unchanged\n"));
        insta::assert_snapshot!(text);
    }

    #[test]
    fn text_of_a_plan_with_changes() {
        insta::assert_snapshot!(render_text(&second_plan()));
    }

    #[test]
    fn text_when_nothing_changes() {
        let fleet = fleet(DEVTOOLS);
        let text = render_text(&plan(&fleet, Some(&DeployedFleet::from_fleet(&fleet))).unwrap());
        assert!(text.contains("no changes: the deployed fleet matches"));
        assert!(text.ends_with("Plan: 0 to create, 0 to update, 0 to delete, 4 unchanged\n"));
    }

    #[test]
    fn dot() {
        insta::assert_snapshot!(render_dot(&second_plan()));
    }

    #[test]
    fn mermaid() {
        insta::assert_snapshot!(render_mermaid(&second_plan()));
    }

    #[test]
    fn json() {
        insta::assert_snapshot!(serde_json::to_string_pretty(&second_plan()).unwrap());
    }

    #[test]
    fn mermaid_ids_are_safe_and_distinct() {
        assert_eq!(mermaid_id("remote-docs"), "srv_remote_2d_docs");
        assert_eq!(mermaid_id("old_cache"), "srv_old_5f_cache");
        assert_eq!(mermaid_id("end"), "srv_end");
        assert_ne!(mermaid_id("a-b"), mermaid_id("a_b"));
        assert_ne!(mermaid_id("a_2d_b"), mermaid_id("a-b"));
    }

    #[test]
    fn dot_strings_are_escaped() {
        assert_eq!(dot_quote("a\"b\\c\nd"), r#""a\"b\\c\nd""#);
    }
}
