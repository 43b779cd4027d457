//! Risk of a synced system, a number in [0, 1]. A system's *own* risk comes from its own state;
//! its *propagated* risk adds what its upstreams put at risk, attenuated by each edge's impact
//! weight:
//!
//! ```text
//! own(s)  = max of: 1.0 if its last event failed, 0.8 if stale, 0.5 if its last event was
//!           degraded, 0.3 if its last drift exceeds its tolerance; 0 otherwise (and 0 if retired)
//! risk(s) = max(own(s), max over upstreams u of weight(u → s) × risk(u))
//! ```
//!
//! The rule is a maximum of products of weights ≤ 1 along paths, so it is well defined on the
//! acyclic graph, never exceeds 1, fades with distance through weights below 1, and does not grow
//! with the number of upstreams (a dashboard fed by ten lagging sources is as at risk as its most
//! at-risk input, not ten times more).
//!
//! Propagation is incremental: when one system's own risk changes, only its downstream cone is
//! visited, in topological order, and a system none of whose upstreams changed is skipped; if the
//! system's own propagated risk does not change, nothing else is visited. The cost of one change
//! is bounded by the size (systems + edges) of the changed system's downstream cone, never the
//! whole graph. Risks are kept by the graph's system ids (see [`Graph`]), so each step of a walk
//! is an array index, not a lookup by name, and the systems waiting in a walk sit in buckets by
//! level (every edge climbs at least one level, so the walk only ever moves up): taking the next
//! one costs nothing, where a priority queue cost a logarithm per system of a large cone.

use std::collections::BinaryHeap;
use std::sync::Arc;

use fnv::{FnvHashMap, FnvHashSet};

use super::graph::Graph;

/// Own risk of a failed system.
pub const FAILED: f64 = 1.0;
/// Own risk of a stale system (no success within cadence + tolerance).
pub const STALE: f64 = 0.8;
/// Own risk of a system whose last event was degraded.
pub const DEGRADED: f64 = 0.5;
/// Own risk of a system whose last drift exceeds its tolerance.
pub const LAGGING: f64 = 0.3;

/// The state own risk is computed from.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct OwnState {
    pub failed: bool,
    pub stale: bool,
    pub degraded: bool,
    pub lagging: bool,
    pub retired: bool,
}

/// The own risk of a system in `state`.
pub fn own(state: OwnState) -> f64 {
    if state.retired {
        return 0.0;
    }
    [(state.failed, FAILED), (state.stale, STALE), (state.degraded, DEGRADED), (state.lagging, LAGGING)]
        .into_iter()
        .filter(|(on, _)| *on)
        .map(|(_, r)| r)
        .fold(0.0, f64::max)
}

/// Own and propagated risk of every system, kept current one change at a time.
///
/// Kept by graph id: a system must have one (an edge, or [`Graph::intern`]) before its own risk
/// is set. Reading by name needs no graph: the names come from the graph, as of the last call
/// that was handed it (a name given an id since was never at risk).
#[derive(Clone, Debug, Default)]
pub struct Risks {
    /// By id: own risk (0 for none).
    own: Vec<f64>,
    /// By id: propagated risk (0 for none).
    risk: Vec<f64>,
    /// By id: waiting to be handled by the propagation under way; all false between calls.
    queued: Vec<bool>,
    /// The graph's ids by name (the ids of `own`, `risk` and `queued`).
    ids: FnvHashMap<Arc<str>, u32>,
    /// Systems visited by propagation since the start (for tests and the benchmark: the bound).
    pub visited: u64,
    /// The walk's buckets: systems waiting to be handled, by level above the changed system's.
    /// Empty between calls; kept so that their room is reused.
    waiting: Vec<Vec<u32>>,
}

impl Risks {
    pub fn own(&self, system: &str) -> f64 {
        self.by_name(&self.own, system)
    }

    pub fn risk(&self, system: &str) -> f64 {
        self.by_name(&self.risk, system)
    }

    /// The propagated risk of system `id` of the graph.
    pub fn risk_of(&self, id: u32) -> f64 {
        self.risk.get(id as usize).copied().unwrap_or(0.0)
    }

    /// The own risk of system `id` of the graph.
    pub fn own_of(&self, id: u32) -> f64 {
        self.own.get(id as usize).copied().unwrap_or(0.0)
    }

    fn by_name(&self, values: &[f64], system: &str) -> f64 {
        self.ids.get(system).and_then(|&id| values.get(id as usize)).copied().unwrap_or(0.0)
    }

    /// Forgets `system` (retired): call [`Risks::recompute`] on its former downstreams after.
    pub fn forget(&mut self, system: &str) {
        if let Some(&id) = self.ids.get(system) {
            self.own[id as usize] = 0.0;
            self.risk[id as usize] = 0.0;
        }
    }

    /// Sets `system`'s own risk and propagates; returns how many systems' propagated risk changed.
    ///
    /// # Panics
    ///
    /// When the graph has no id for `system` (see [`Graph::intern`]).
    pub fn set_own(&mut self, graph: &Graph, system: &Arc<str>, own: f64) -> usize {
        self.catch_up(graph);
        let id = graph.id(system).expect("a system has a graph id before its own risk is set");
        self.own[id as usize] = own;
        self.propagate(graph, id)
    }

    /// Recomputes `system`'s propagated risk (its upstreams changed) and, where it changes, its
    /// downstreams', transitively; returns how many systems' propagated risk changed.
    pub fn recompute(&mut self, graph: &Graph, system: &Arc<str>) -> usize {
        self.catch_up(graph);
        match graph.id(system) {
            Some(id) => self.propagate(graph, id),
            None => {
                // Without an id it has no upstreams and no own risk: visited, and unchanged.
                self.visited += 1;
                0
            }
        }
    }

    /// Takes in the ids the graph gave since the last call: ids are dense and never reused, so
    /// the new ones are those from the count known before.
    fn catch_up(&mut self, graph: &Graph) {
        let count = graph.node_count();
        for id in self.own.len()..count {
            let id = id as u32;
            self.ids.insert(graph.name(id).clone(), id);
        }
        self.own.resize(count, 0.0);
        self.risk.resize(count, 0.0);
        self.queued.resize(count, false);
    }

    /// Recomputes system `id` and, where it changes, its downstreams, transitively; returns how
    /// many changed. Systems are taken level by level, from `id`'s up, so each is handled once,
    /// after every upstream that changed (those are all at lower levels): the cost is the systems
    /// that change and their direct downstreams, not the whole cone.
    fn propagate(&mut self, graph: &Graph, id: u32) -> usize {
        let base = graph.level_of(id);
        let mut waiting = std::mem::take(&mut self.waiting);
        let mut changed = 0;
        self.enqueue(&mut waiting, base, graph, id);
        let mut level = 0;
        while level < waiting.len() {
            // Handling a system queues only systems above its level: this bucket is complete.
            let mut bucket = std::mem::take(&mut waiting[level]);
            for &node in &bucket {
                self.queued[node as usize] = false;
                self.visited += 1;
                if self.update(graph, node) {
                    changed += 1;
                    for &(d, _) in graph.down_ids(node) {
                        self.enqueue(&mut waiting, base, graph, d);
                    }
                }
            }
            bucket.clear();
            waiting[level] = bucket;
            level += 1;
        }
        self.waiting = waiting;
        changed
    }

    /// Queues system `id` in the bucket of its level (above `base`), unless it waits already.
    fn enqueue(&mut self, waiting: &mut Vec<Vec<u32>>, base: u32, graph: &Graph, id: u32) {
        if !std::mem::replace(&mut self.queued[id as usize], true) {
            let level = (graph.level_of(id) - base) as usize;
            if waiting.len() <= level {
                waiting.resize_with(level + 1, Vec::new);
            }
            waiting[level].push(id);
        }
    }

    /// Recomputes system `id` from its own risk and its upstreams'; whether it changed.
    fn update(&mut self, graph: &Graph, id: u32) -> bool {
        let inherited = graph.up_ids(id).iter().map(|&(u, w)| w * self.risk[u as usize]).fold(0.0, f64::max);
        let new = self.own[id as usize].max(inherited);
        let old = std::mem::replace(&mut self.risk[id as usize], new);
        new != old
    }

    /// The systems downstream of system `id` that inherit at least `at_least` from it when it is
    /// at risk `at`, each with what it inherits (`at` times the best product of weights along a
    /// path), in no promised order.
    ///
    /// The walk stops wherever what is passed on falls below `at_least`: weights are at most 1,
    /// so it only fades further along. It costs the systems it returns and their direct
    /// downstreams, however large the cone.
    pub fn passed_on(graph: &Graph, id: u32, at: f64, at_least: f64) -> Vec<(u32, f64)> {
        // Best first: a system is settled with the first (largest) value it is taken with, as
        // every value still waiting is no larger and only shrinks further on. Values are in
        // [0, 1], where the order of the bits of an f64 is the order of the numbers.
        let mut settled = FnvHashSet::default();
        let mut waiting = BinaryHeap::from([(at.to_bits(), id)]);
        let mut out = Vec::new();
        while let Some((bits, node)) = waiting.pop() {
            if !settled.insert(node) {
                continue;
            }
            let value = f64::from_bits(bits);
            if node != id {
                out.push((node, value));
            }
            for &(d, w) in graph.down_ids(node) {
                let passed = value * w;
                if passed >= at_least && !settled.contains(&d) {
                    waiting.push((passed.to_bits(), d));
                }
            }
        }
        out
    }

    /// What each system downstream of `system` would inherit if `system` were at risk `at`:
    /// the largest product of weights along a path, times `at`; in topological order, without
    /// `system` itself.
    pub fn inherited(graph: &Graph, system: &Arc<str>, at: f64) -> Vec<(Arc<str>, f64)> {
        let Some(id) = graph.id(system) else { return Vec::new() };
        // Only the cone has a value: an upstream outside it passes nothing on.
        let mut value: FnvHashMap<u32, f64> = FnvHashMap::from_iter([(id, at)]);
        let mut out = Vec::new();
        for node in graph.cone_ids(id).into_iter().skip(1) {
            let v = graph.up_ids(node).iter().filter_map(|(u, w)| value.get(u).map(|r| w * r)).fold(0.0, f64::max);
            value.insert(node, v);
            out.push((graph.name(node).clone(), v));
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;

    fn a(s: &str) -> Arc<str> {
        Arc::from(s)
    }

    #[test]
    fn own_risk_is_the_worst_state() {
        assert_eq!(own(OwnState::default()), 0.0);
        assert_eq!(own(OwnState { stale: true, lagging: true, ..Default::default() }), STALE);
        assert_eq!(own(OwnState { failed: true, stale: true, ..Default::default() }), FAILED);
        assert_eq!(own(OwnState { failed: true, retired: true, ..Default::default() }), 0.0);
    }

    #[test]
    fn risk_is_the_max_of_weighted_upstream_paths() {
        // s1 → t (0.5), s2 → t (1.0), t → d (0.5)
        let mut g = Graph::default();
        g.add(&a("s1"), &a("t"), 0.5).unwrap();
        g.add(&a("s2"), &a("t"), 1.0).unwrap();
        g.add(&a("t"), &a("d"), 0.5).unwrap();
        let mut r = Risks::default();
        assert_eq!(r.set_own(&g, &a("s1"), STALE), 3);
        assert_eq!((r.risk("s1"), r.risk("t"), r.risk("d")), (0.8, 0.4, 0.2));
        // A second upstream at risk: the max, not the sum.
        r.set_own(&g, &a("s2"), LAGGING);
        assert_eq!(r.risk("t"), 0.4);
        r.set_own(&g, &a("s2"), FAILED);
        assert_eq!((r.risk("t"), r.risk("d")), (1.0, 0.5));
        // Own risk dominates an inherited one that is smaller.
        r.set_own(&g, &a("d"), FAILED);
        assert_eq!(r.risk("d"), 1.0);
        // Recovery of both sources: only d's own risk is left.
        r.set_own(&g, &a("s1"), 0.0);
        r.set_own(&g, &a("s2"), 0.0);
        assert_eq!((r.risk("t"), r.risk("d")), (0.0, 1.0));
    }

    #[test]
    fn propagation_visits_only_the_changed_cone_and_stops_when_nothing_changes() {
        // Two disjoint chains of 50: a change in one never visits the other.
        let mut g = Graph::default();
        for chain in ["x", "y"] {
            for i in 0..49 {
                g.add(&a(&format!("{chain}{i}")), &a(&format!("{chain}{}", i + 1)), 1.0).unwrap();
            }
        }
        let mut r = Risks::default();
        r.set_own(&g, &a("x0"), FAILED);
        assert_eq!(r.visited, 50);
        assert_eq!(r.risk("x49"), 1.0);
        assert_eq!(r.risk("y49"), 0.0);
        // The same own risk again changes nothing and visits one system.
        r.set_own(&g, &a("x0"), FAILED);
        assert_eq!(r.visited, 51);
    }

    #[test]
    fn a_change_that_fades_out_visits_what_changed_and_its_direct_downstreams_only() {
        // A fan: hub → m0..m99, each m → its own chain of 20. m5 is failed already, so when hub
        // goes stale (0.8 through weight 1) every m but m5 changes, and the chains below them;
        // then hub failing (1.0) changes m5 too.
        let mut g = Graph::default();
        for i in 0..100 {
            g.add(&a("hub"), &a(&format!("m{i}")), 1.0).unwrap();
            for j in 0..20 {
                let (from, to) =
                    (if j == 0 { format!("m{i}") } else { format!("c{i}.{j}") }, format!("c{i}.{}", j + 1));
                g.add(&a(&from), &a(&to), 1.0).unwrap();
            }
        }
        let mut r = Risks::default();
        r.set_own(&g, &a("m5"), FAILED);
        let before = r.visited;
        // The chain below m5 is at 1.0 and stays: hub's 0.8 changes nothing there. m5 is
        // visited (its upstream changed) but not its chain.
        r.set_own(&g, &a("hub"), STALE);
        assert_eq!(r.visited - before, 1 + 99 * 21 + 1, "hub, 99 changed chains, m5");
        assert_eq!((r.risk("c7.20"), r.risk("c5.20")), (0.8, 1.0));
        // Every edge climbs a level, so each system is handled once, after its upstreams.
        for i in 0..100 {
            assert!(g.level("hub") < g.level(&format!("m{i}")));
            assert!(g.level(&format!("c{i}.19")) < g.level(&format!("c{i}.20")));
        }
    }

    /// Every system's risk computed afresh from the rule, level by level.
    fn from_scratch(g: &Graph, r: &Risks) -> Vec<f64> {
        let mut ids: Vec<u32> = (0..g.node_count() as u32).collect();
        ids.sort_by_key(|&id| g.level_of(id));
        let mut risk = vec![0.0; ids.len()];
        for id in ids {
            let inherited = g.up_ids(id).iter().map(|&(u, w)| w * risk[u as usize]).fold(0.0, f64::max);
            risk[id as usize] = r.own[id as usize].max(inherited);
        }
        risk
    }

    /// System `i` of a [`drawn`] graph.
    fn name(i: u32) -> Arc<str> {
        a(&format!("s{i:02}"))
    }

    /// A graph of 60 systems with the drawn edges (system, how far on, weight in tenths), each
    /// from a system to one after it: acyclic whatever was drawn.
    fn drawn(edges: &[(u32, u32, u8)]) -> Graph {
        let mut g = Graph::default();
        for i in 0..60 {
            g.intern(&name(i));
        }
        for &(u, step, w) in edges {
            let d = (u + step).min(59);
            if d != u {
                g.add(&name(u), &name(d), f64::from(w) / 10.0).unwrap();
            }
        }
        g
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(64))]

        /// Whatever the graph and the order of changes, the incremental walk ends where computing
        /// every risk afresh does.
        #[test]
        fn incremental_propagation_agrees_with_computing_afresh(
            edges in proptest::collection::vec((0u32..60, 1u32..8, 1u8..=10), 1..200),
            changes in proptest::collection::vec((0u32..60, 0usize..5), 1..40),
        ) {
            let g = drawn(&edges);
            let mut r = Risks::default();
            let levels = [0.0, LAGGING, DEGRADED, STALE, FAILED];
            for (system, level) in changes {
                r.set_own(&g, &name(system), levels[level]);
                let expected = from_scratch(&g, &r);
                for id in 0..g.node_count() as u32 {
                    proptest::prop_assert_eq!(r.risk_of(id), expected[id as usize], "{}", g.name(id));
                }
            }
        }

        /// The walk that stops below a threshold finds exactly the systems of the whole cone that
        /// inherit at least that much, with the same values.
        #[test]
        fn what_is_passed_on_is_the_cone_cut_at_the_threshold(
            edges in proptest::collection::vec((0u32..60, 1u32..8, 1u8..=10), 1..200),
            root in 0u32..60,
            level in 0usize..5,
            percent in 1u8..=100,
        ) {
            let g = drawn(&edges);
            let at = [0.0, LAGGING, DEGRADED, STALE, FAILED][level];
            let at_least = f64::from(percent) / 100.0;
            let mut got: Vec<(Arc<str>, f64)> = Risks::passed_on(&g, g.id(&name(root)).unwrap(), at, at_least)
                .into_iter()
                .map(|(id, v)| (g.name(id).clone(), v))
                .collect();
            got.sort_by(|x, y| x.0.cmp(&y.0));
            let mut expected: Vec<(Arc<str>, f64)> =
                Risks::inherited(&g, &name(root), at).into_iter().filter(|(_, v)| *v >= at_least).collect();
            expected.sort_by(|x, y| x.0.cmp(&y.0));
            proptest::prop_assert_eq!(got, expected);
        }
    }

    #[test]
    fn a_late_edge_lifts_the_levels_below_it() {
        // b → c first, then a chain x0 → … → x5 → b: b and c must end above x5.
        let mut g = Graph::default();
        g.add(&a("b"), &a("c"), 1.0).unwrap();
        for i in 0..5 {
            g.add(&a(&format!("x{i}")), &a(&format!("x{}", i + 1)), 1.0).unwrap();
        }
        g.add(&a("x5"), &a("b"), 0.5).unwrap();
        assert!(g.level("x5") < g.level("b") && g.level("b") < g.level("c"));
        let mut r = Risks::default();
        r.set_own(&g, &a("x0"), FAILED);
        assert_eq!((r.risk("b"), r.risk("c")), (0.5, 0.5));
        // A cycle through the lifted levels is still refused.
        assert!(g.add(&a("c"), &a("x2"), 1.0).is_err());
    }

    #[test]
    fn inherited_risk_is_the_best_path_product() {
        // a → b (0.5) → d (1.0); a → c (0.9) → d (0.5)
        let mut g = Graph::default();
        g.add(&a("a"), &a("b"), 0.5).unwrap();
        g.add(&a("b"), &a("d"), 1.0).unwrap();
        g.add(&a("a"), &a("c"), 0.9).unwrap();
        g.add(&a("c"), &a("d"), 0.5).unwrap();
        let got: BTreeMap<_, _> = Risks::inherited(&g, &a("a"), 1.0).into_iter().collect();
        assert_eq!(got[&a("b")], 0.5);
        assert_eq!(got[&a("c")], 0.9);
        assert_eq!(got[&a("d")], 0.5);
        assert_eq!(got.len(), 3);
    }
}
