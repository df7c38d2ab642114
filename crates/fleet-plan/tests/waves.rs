//! Properties of dependency waves on random graphs: acyclic graphs are ordered completely and
//! consistently, cyclic ones are refused with a cycle that really is one.

use fleet_plan::DependencyGraph;
use proptest::prelude::*;
use proptest::sample::Index;
use std::collections::HashSet;

const CASES: u32 = 200;

/// A random DAG: nodes are ranked by a random permutation and edges only go from a lower rank
/// to a higher one, so there can be no cycle whatever edges are drawn.
fn dag() -> impl Strategy<Value = (usize, Vec<(usize, usize)>)> {
    (1usize..=300)
        .prop_flat_map(|n| {
            let ranking = Just((0..n).collect::<Vec<_>>()).prop_shuffle();
            let picks = prop::collection::vec((any::<Index>(), any::<Index>()), 0..=3 * n);
            (Just(n), ranking, picks)
        })
        .prop_map(|(n, ranking, picks)| {
            let edges = picks
                .into_iter()
                .filter_map(|(a, b)| {
                    let (a, b) = (a.index(n), b.index(n));
                    (a != b).then(|| (ranking[a.min(b)], ranking[a.max(b)]))
                })
                .collect();
            (n, edges)
        })
}

/// A random graph with at least one cycle: a DAG plus a chain through some of its nodes that
/// closes on itself (length 1 is a self-loop).
fn cyclic() -> impl Strategy<Value = (usize, Vec<(usize, usize)>)> {
    (dag(), prop::collection::vec(any::<Index>(), 1..=8)).prop_map(
        |((n, mut edges), loop_picks)| {
            let mut members: Vec<usize> = loop_picks.into_iter().map(|i| i.index(n)).collect();
            members.dedup();
            if members.len() > 1 && members.first() == members.last() {
                members.pop();
            }
            let next = members.iter().skip(1).chain(members.first());
            edges.extend(members.iter().copied().zip(next.copied()));
            (n, edges)
        },
    )
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(CASES))]

    #[test]
    fn waves_order_every_edge_and_hold_every_node_once((n, edges) in dag()) {
        let graph = DependencyGraph::from_edges(n, edges.iter().copied());
        let waves = graph.waves().expect("a DAG has waves");
        let mut wave_of = vec![None; n];
        for (w, wave) in waves.iter().enumerate() {
            prop_assert!(!wave.is_empty(), "wave {} is empty", w);
            for &node in wave {
                prop_assert!(wave_of[node].is_none(), "node {} appears twice", node);
                wave_of[node] = Some(w);
            }
        }
        prop_assert!(wave_of.iter().all(Option::is_some), "a node is missing");
        for &(from, to) in &edges {
            prop_assert!(wave_of[from] < wave_of[to], "edge {} → {} does not go forward", from, to);
        }
        // Each node sits in the earliest wave its dependencies allow.
        for node in 0..n {
            let earliest = graph.dependencies(node).iter().map(|&d| wave_of[d].map_or(0, |w| w + 1)).max();
            prop_assert_eq!(wave_of[node], Some(earliest.unwrap_or(0)));
        }
        prop_assert!(graph.cycles().is_empty());
    }

    #[test]
    fn cycles_are_refused_with_a_real_cycle((n, edges) in cyclic()) {
        let graph = DependencyGraph::from_edges(n, edges.iter().copied());
        let cycle = graph.waves().expect_err("the graph has a cycle");
        let edge_set: HashSet<(usize, usize)> = edges.iter().copied().collect();
        prop_assert!(!cycle.path.is_empty());
        let distinct: HashSet<usize> = cycle.path.iter().copied().collect();
        prop_assert_eq!(distinct.len(), cycle.path.len(), "a node repeats in {:?}", cycle.path);
        for (from, to) in cycle.edges() {
            prop_assert!(edge_set.contains(&(from, to)), "{} → {} is not an edge of {:?}", from, to, cycle.path);
        }
        prop_assert_eq!(graph.cycles().into_iter().next(), Some(cycle));
    }
}
