//! Dependency ordering: which servers start together (waves) and, when there is no order, the
//! full path of a cycle.
//!
//! Nodes are indices and an edge `a → b` means `b` depends on `a`, so `a` starts first. The
//! graph knows nothing of fleet files beyond [`DependencyGraph::from_fleet`], which is what
//! lets the ordering be property-tested on arbitrary graphs.

use fleet_spec::ValidFleet;
use std::collections::HashMap;

/// A directed graph of "starts before" edges, with the order nodes are listed in within a wave.
#[derive(Debug, Clone)]
pub struct DependencyGraph {
    /// `dependencies[b]` holds every `a` with an edge `a → b`.
    dependencies: Vec<Vec<usize>>,
    /// `dependents[a]` holds every `b` with an edge `a → b`.
    dependents: Vec<Vec<usize>>,
    /// Every node once; waves list their nodes in this order.
    wave_order: Vec<usize>,
}

/// A dependency cycle: `path[0] → path[1] → … → path[last] → path[0]`, each node once.
///
/// Rotated to start at its smallest node, so the same graph always reports the same path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Cycle {
    pub path: Vec<usize>,
}

impl Cycle {
    /// The cycle as `a → b → c → a`, naming each node with `name`.
    pub fn describe<'a>(&self, name: impl Fn(usize) -> &'a str) -> String {
        let names: Vec<&str> = self
            .path
            .iter()
            .chain(self.path.first())
            .map(|&n| name(n))
            .collect();
        names.join(" → ")
    }

    /// The edges of the cycle, `(from, to)`, starting with `path[0] → path[1]`.
    pub fn edges(&self) -> impl Iterator<Item = (usize, usize)> + '_ {
        let next = self.path.iter().skip(1).chain(self.path.first());
        self.path.iter().copied().zip(next.copied())
    }
}

impl DependencyGraph {
    /// A graph of `nodes` nodes (`0..nodes`) with edges `(from, to)`: `to` depends on `from`.
    /// Within a wave, nodes are listed by index. Repeated edges are allowed.
    ///
    /// # Panics
    /// If an edge names a node outside `0..nodes`.
    pub fn from_edges(nodes: usize, edges: impl IntoIterator<Item = (usize, usize)>) -> Self {
        let mut graph = DependencyGraph {
            dependencies: vec![Vec::new(); nodes],
            dependents: vec![Vec::new(); nodes],
            wave_order: (0..nodes).collect(),
        };
        for (from, to) in edges {
            assert!(
                from < nodes && to < nodes,
                "edge {from} → {to} outside a graph of {nodes} nodes"
            );
            graph.dependents[from].push(to);
            graph.dependencies[to].push(from);
        }
        graph
    }

    /// The graph of a fleet: node `i` is `fleet.servers[i]`, with an edge from each dependency to
    /// its dependent. Within a wave, servers are listed by priority (highest first), then name.
    ///
    /// Dependencies on servers the fleet does not have are left out; validation reports them.
    pub fn from_fleet(fleet: &ValidFleet) -> Self {
        let mut index = HashMap::with_capacity(fleet.servers.len());
        for (i, server) in fleet.servers.iter().enumerate() {
            index.entry(server.name.as_str()).or_insert(i);
        }
        let index = &index;
        let edges = fleet.servers.iter().enumerate().flat_map(|(i, server)| {
            server
                .depends_on
                .iter()
                .filter_map(move |d| Some((*index.get(d.server.as_str())?, i)))
        });
        let mut graph = Self::from_edges(fleet.servers.len(), edges);
        let servers = &fleet.servers;
        graph.wave_order.sort_by(|&a, &b| {
            let (a, b) = (&servers[a], &servers[b]);
            b.priority
                .cmp(&a.priority)
                .then_with(|| a.name.cmp(&b.name))
        });
        graph
    }

    pub fn len(&self) -> usize {
        self.dependencies.len()
    }

    pub fn is_empty(&self) -> bool {
        self.dependencies.is_empty()
    }

    /// The nodes `node` depends on, in the order their edges were given.
    pub fn dependencies(&self, node: usize) -> &[usize] {
        &self.dependencies[node]
    }

    /// The nodes that depend on `node`, in the order their edges were given.
    pub fn dependents(&self, node: usize) -> &[usize] {
        &self.dependents[node]
    }

    /// Groups the nodes into waves: wave 0 holds the nodes without dependencies, and a node's
    /// wave is one more than the latest wave among its dependencies. Every node appears once.
    /// Runs in O(V + E).
    ///
    /// # Errors
    /// A [`Cycle`] when the graph has one; the same cycle [`DependencyGraph::cycles`] lists first.
    pub fn waves(&self) -> Result<Vec<Vec<usize>>, Cycle> {
        let layers = self.layer();
        if let Some(start) = layers.wave.iter().position(Option::is_none) {
            return Err(self.cycle_from(start, |n| layers.wave[n].is_none()));
        }
        let mut waves = vec![Vec::new(); layers.count];
        for &node in &self.wave_order {
            if let Some(wave) = layers.wave[node] {
                waves[wave].push(node);
            }
        }
        Ok(waves)
    }

    /// Cycles that share no node, enough that every cycle in the graph runs through at least
    /// one of them: fixing each of these shows the next, if any. Empty when the graph is acyclic.
    pub fn cycles(&self) -> Vec<Cycle> {
        let Layers {
            wave, mut unmet, ..
        } = self.layer();
        let mut settled: Vec<bool> = wave.iter().map(Option::is_some).collect();
        let mut cycles = Vec::new();
        let mut start = 0;
        while let Some(next) = (start..self.len()).find(|&n| !settled[n]) {
            start = next;
            let cycle = self.cycle_from(next, |n| !settled[n]);
            // Setting the cycle aside frees what waited only on it, so every node left is still
            // blocked by a cycle that does not touch this one.
            let mut freed = cycle.path.clone();
            for &node in &freed {
                settled[node] = true;
            }
            while let Some(node) = freed.pop() {
                for &dependent in &self.dependents[node] {
                    if !settled[dependent] {
                        unmet[dependent] -= 1;
                        if unmet[dependent] == 0 {
                            settled[dependent] = true;
                            freed.push(dependent);
                        }
                    }
                }
            }
            cycles.push(cycle);
        }
        cycles
    }

    /// Kahn's algorithm a level at a time.
    fn layer(&self) -> Layers {
        let mut unmet: Vec<usize> = self.dependencies.iter().map(Vec::len).collect();
        let mut wave = vec![None; self.len()];
        let mut frontier: Vec<usize> = (0..self.len()).filter(|&n| unmet[n] == 0).collect();
        let mut count = 0;
        while !frontier.is_empty() {
            let mut next = Vec::new();
            for &node in &frontier {
                wave[node] = Some(count);
                for &dependent in &self.dependents[node] {
                    unmet[dependent] -= 1;
                    if unmet[dependent] == 0 {
                        next.push(dependent);
                    }
                }
            }
            frontier = next;
            count += 1;
        }
        Layers { wave, unmet, count }
    }

    /// Finds a cycle among the `blocked` nodes, which must include `start`.
    ///
    /// A node stays blocked only while one of its dependencies is blocked, so stepping from
    /// `start` to its smallest blocked dependency, again and again, never gets stuck and must
    /// come back to a node it has seen: the steps between the two visits, reversed, are a cycle.
    fn cycle_from(&self, start: usize, blocked: impl Fn(usize) -> bool) -> Cycle {
        let mut walk = vec![start];
        let mut seen_at = HashMap::from([(start, 0)]);
        let mut node = start;
        loop {
            node = self.dependencies[node]
                .iter()
                .copied()
                .filter(|&d| blocked(d))
                .min()
                .expect("a blocked node has a blocked dependency");
            if let Some(&at) = seen_at.get(&node) {
                let mut path = walk.split_off(at);
                path.reverse();
                let smallest = path
                    .iter()
                    .enumerate()
                    .min_by_key(|&(_, n)| n)
                    .map_or(0, |(i, _)| i);
                path.rotate_left(smallest);
                return Cycle { path };
            }
            seen_at.insert(node, walk.len());
            walk.push(node);
        }
    }
}

/// The outcome of Kahn's algorithm.
struct Layers {
    /// Each node's wave; `None` for nodes blocked by a cycle.
    wave: Vec<Option<usize>>,
    /// For each node, how many of its dependency edges come from blocked nodes.
    unmet: Vec<usize>,
    /// How many waves there are.
    count: usize,
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::fleet;

    #[test]
    fn waves_follow_the_longest_dependency_chain() {
        // 0 → 1 → 3, 0 → 3, 2 alone, 3 → 4
        let graph = DependencyGraph::from_edges(5, [(0, 1), (1, 3), (0, 3), (3, 4)]);
        assert_eq!(
            graph.waves(),
            Ok(vec![vec![0, 2], vec![1], vec![3], vec![4]])
        );
        assert!(graph.cycles().is_empty());
    }

    #[test]
    fn empty_graph_has_no_waves() {
        let graph = DependencyGraph::from_edges(0, []);
        assert_eq!(graph.waves(), Ok(vec![]));
    }

    #[test]
    fn repeated_edges_count_once_for_ordering() {
        let graph = DependencyGraph::from_edges(2, [(0, 1), (0, 1)]);
        assert_eq!(graph.waves(), Ok(vec![vec![0], vec![1]]));
    }

    #[test]
    fn cycle_path_is_rotated_to_its_smallest_node() {
        // 0 → 1 → 2 → 3 → 1, and 3 → 4 which only waits on the cycle
        let graph = DependencyGraph::from_edges(5, [(0, 1), (1, 2), (2, 3), (3, 1), (3, 4)]);
        let cycle = graph.waves().unwrap_err();
        assert_eq!(cycle.path, vec![1, 2, 3]);
        assert_eq!(
            cycle.edges().collect::<Vec<_>>(),
            vec![(1, 2), (2, 3), (3, 1)]
        );
        let names = ["a", "b", "c", "d", "e"];
        assert_eq!(cycle.describe(|n| names[n]), "b → c → d → b");
    }

    #[test]
    fn self_loop_is_a_cycle_of_one() {
        let graph = DependencyGraph::from_edges(2, [(0, 1), (1, 1)]);
        assert_eq!(graph.waves().unwrap_err().path, vec![1]);
    }

    #[test]
    fn cycles_lists_independent_cycles_once_each() {
        // Two separate cycles, a node downstream of both, and a cycle that needs the first.
        let edges = [
            (0, 1),
            (1, 0),
            (2, 3),
            (3, 2),
            (1, 4),
            (3, 4),
            (0, 5),
            (5, 6),
            (6, 5),
        ];
        let graph = DependencyGraph::from_edges(7, edges);
        let paths: Vec<_> = graph.cycles().into_iter().map(|c| c.path).collect();
        assert_eq!(paths, vec![vec![0, 1], vec![2, 3], vec![5, 6]]);
        assert_eq!(graph.waves().unwrap_err().path, vec![0, 1]);
    }

    #[test]
    fn fleet_waves_order_by_priority_then_name() {
        let fleet = fleet(
            r#"
servers:
  zeta: { stdio: { command: z }, priority: 10 }
  alpha: { stdio: { command: a } }
  beta: { stdio: { command: b } }
  gamma: { stdio: { command: g }, depends_on: [beta, zeta] }
"#,
        );
        let graph = DependencyGraph::from_fleet(&fleet);
        let names = |wave: &Vec<usize>| -> Vec<&str> {
            wave.iter()
                .map(|&i| fleet.servers[i].name.as_str())
                .collect()
        };
        let waves = graph.waves().unwrap();
        assert_eq!(
            waves.iter().map(names).collect::<Vec<_>>(),
            vec![vec!["zeta", "alpha", "beta"], vec!["gamma"]]
        );
    }

    #[test]
    #[ignore = "timing: run with `cargo test --release -p fleet-plan -- --ignored`"]
    fn plans_a_thousand_nodes_within_a_millisecond() {
        // 1,000 nodes, 3,000 edges, each from a lower to a higher index.
        let edges: Vec<(usize, usize)> = (0..3000)
            .map(|i: usize| {
                let to = 1 + (i * 7919) % 999;
                (i * 104_729 % to, to)
            })
            .collect();
        let started = std::time::Instant::now();
        let graph = DependencyGraph::from_edges(1000, edges);
        let waves = graph.waves().unwrap();
        let took = started.elapsed();
        assert_eq!(waves.iter().map(Vec::len).sum::<usize>(), 1000);
        assert!(took < std::time::Duration::from_millis(1), "took {took:?}");
    }
}
