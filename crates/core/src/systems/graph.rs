//! The dependency graph between synced systems: edges upstream → downstream, each with an impact
//! weight in (0, 1]. It guarantees the graph stays acyclic (an edge closing a cycle is refused,
//! naming the cycle), and gives what the risk rules need: a *level* per system such that every
//! edge goes from a lower level to a higher one (so propagation can take changed systems in level
//! order and handle each once, after all of its upstreams), the downstream cone of one system in
//! topological order (for the blast radius and severity), and a system's upstreams with their
//! weights. No walk ever covers more than the cone of the system asked about.
//!
//! Systems are named, but walks go by dense ids (see [`Graph`]): the by-name calls are for the
//! API and the tests; the by-id ones ([`Graph::cone_ids`], [`Graph::up_ids`],
//! [`Graph::down_ids`], [`Graph::level_of`]) are what risk propagation and incident assessment
//! walk with, one array index per step.

use std::sync::Arc;

use fnv::FnvHashMap;

use super::SystemsError;

/// Upstream → downstream edges with their impact weights, kept both ways.
///
/// Each system is interned to a dense `u32` id on its first mention (an edge, even one refused,
/// or [`Graph::intern`]); ids are never reused: a system whose edges are all removed keeps its id,
/// with no edges and level 0. A system's edges are kept in lists sorted by the name of the system
/// at their other end, so every walk takes systems in name order, as deterministic as the names
/// themselves (ids depend on the order systems were mentioned in).
#[derive(Clone, Debug, Default)]
pub struct Graph {
    /// Every system mentioned, by id.
    names: Vec<Arc<str>>,
    /// The id of each name in `names`.
    ids: FnvHashMap<Arc<str>, u32>,
    /// By id: its upstreams with the edge's weight, in name order.
    up: Vec<Vec<(u32, f64)>>,
    /// By id: its downstreams with the edge's weight, in name order.
    down: Vec<Vec<(u32, f64)>>,
    /// By id: a level such that every edge goes from a lower level to a higher one. Levels only
    /// rise (a removed edge leaves them as they are, which keeps the rule true), except that a
    /// system left without edges by [`Graph::remove_system`] goes back to 0.
    levels: Vec<u32>,
    edges: usize,
}

/// The two edge lists of a system.
#[derive(Clone, Copy)]
enum Side {
    /// Its upstreams.
    Up,
    /// Its downstreams.
    Down,
}

/// Checks an impact weight: a finite number in (0, 1].
pub fn check_weight(weight: f64) -> Result<(), SystemsError> {
    if weight.is_finite() && weight > 0.0 && weight <= 1.0 {
        Ok(())
    } else {
        Err(SystemsError::Invalid {
            what: "impact weight",
            reason: format!("{weight} is not in (0, 1]; 1 means the downstream inherits all of the upstream's risk"),
        })
    }
}

impl Graph {
    /// How many edges there are.
    pub fn len(&self) -> usize {
        self.edges
    }

    pub fn is_empty(&self) -> bool {
        self.edges == 0
    }

    // ----- by name -----

    /// The weight of `upstream → downstream`, if declared.
    pub fn weight(&self, upstream: &str, downstream: &str) -> Option<f64> {
        let (u, d) = (self.id(upstream)?, self.id(downstream)?);
        let list = &self.down[u as usize];
        find(&self.names, list, d).ok().map(|at| list[at].1)
    }

    /// The level of `system`: above the level of each of its upstreams.
    pub fn level(&self, system: &str) -> u32 {
        self.id(system).map_or(0, |id| self.level_of(id))
    }

    /// Declares `upstream → downstream` with `weight` (a second declaration sets the weight).
    /// Refused when it would close a cycle: the error names it, `upstream` first and last.
    /// Returns whether the edge is new.
    pub fn add(&mut self, upstream: &Arc<str>, downstream: &Arc<str>, weight: f64) -> Result<bool, SystemsError> {
        check_weight(weight)?;
        let (u, d) = (self.intern(upstream), self.intern(downstream));
        // A path downstream → upstream would climb levels: none can exist when the downstream
        // is already above the upstream, the usual case.
        if self.level_of(d) <= self.level_of(u) {
            if let Some(path) = self.path(d, u) {
                let cycle = std::iter::once(u).chain(path).map(|s| self.names[s as usize].to_string()).collect();
                return Err(SystemsError::DependencyCycle { cycle });
            }
        }
        let new = self.put(Side::Down, u, d, weight);
        self.put(Side::Up, d, u, weight);
        if new {
            self.edges += 1;
        }
        self.raise(d, self.level_of(u) + 1);
        Ok(new)
    }

    /// Removes `upstream → downstream`; `false` when it was not declared.
    pub fn remove(&mut self, upstream: &str, downstream: &str) -> bool {
        let (Some(u), Some(d)) = (self.id(upstream), self.id(downstream)) else { return false };
        let removed = self.take(Side::Down, u, d);
        if removed {
            self.take(Side::Up, d, u);
            self.edges -= 1;
        }
        removed
    }

    /// Removes every edge touching `system` (it keeps its id, at level 0); returns its former
    /// downstreams (whose risk must be recomputed), in name order.
    pub fn remove_system(&mut self, system: &str) -> Vec<Arc<str>> {
        let Some(id) = self.id(system) else { return Vec::new() };
        let downs = std::mem::take(&mut self.down[id as usize]);
        let ups = std::mem::take(&mut self.up[id as usize]);
        for &(d, _) in &downs {
            self.take(Side::Up, d, id);
        }
        for &(u, _) in &ups {
            self.take(Side::Down, u, id);
        }
        self.edges -= downs.len() + ups.len();
        self.levels[id as usize] = 0;
        downs.iter().map(|&(d, _)| self.name(d).clone()).collect()
    }

    /// The direct upstreams of `system` with their weights, in name order.
    pub fn upstreams<'a>(&'a self, system: &str) -> impl Iterator<Item = (&'a Arc<str>, f64)> + 'a {
        self.named(self.id(system).map_or(&[][..], |id| self.up_ids(id)))
    }

    /// The direct downstreams of `system` with their weights, in name order.
    pub fn downstreams<'a>(&'a self, system: &str) -> impl Iterator<Item = (&'a Arc<str>, f64)> + 'a {
        self.named(self.id(system).map_or(&[][..], |id| self.down_ids(id)))
    }

    /// `system` and everything downstream of it, transitively, in a topological order (`system`
    /// first; every system after all of its upstreams within the cone): [`Graph::cone_ids`], by
    /// name.
    pub fn cone(&self, system: &Arc<str>) -> Vec<Arc<str>> {
        match self.id(system) {
            Some(id) => self.cone_ids(id).into_iter().map(|c| self.name(c).clone()).collect(),
            None => vec![system.clone()],
        }
    }

    // ----- by id -----

    /// The id of `system`, if it was ever mentioned.
    pub fn id(&self, system: &str) -> Option<u32> {
        self.ids.get(system).copied()
    }

    /// The id of `system`, given now if it has none (a system known before any edge of it, such
    /// as one just registered).
    pub fn intern(&mut self, system: &Arc<str>) -> u32 {
        if let Some(id) = self.id(system) {
            return id;
        }
        let id = u32::try_from(self.names.len()).expect("fewer than 2^32 systems");
        self.names.push(system.clone());
        self.ids.insert(system.clone(), id);
        self.up.push(Vec::new());
        self.down.push(Vec::new());
        self.levels.push(0);
        id
    }

    /// The name of system `id`.
    pub fn name(&self, id: u32) -> &Arc<str> {
        &self.names[id as usize]
    }

    /// How many systems have an id (ids are `0..node_count()`).
    pub fn node_count(&self) -> usize {
        self.names.len()
    }

    /// The level of system `id`.
    pub fn level_of(&self, id: u32) -> u32 {
        self.levels[id as usize]
    }

    /// The direct upstreams of system `id` with their weights, in name order.
    pub fn up_ids(&self, id: u32) -> &[(u32, f64)] {
        &self.up[id as usize]
    }

    /// The direct downstreams of system `id` with their weights, in name order.
    pub fn down_ids(&self, id: u32) -> &[(u32, f64)] {
        &self.down[id as usize]
    }

    /// System `id` and everything downstream of it, transitively, in a topological order (`id`
    /// first; every system after all of its upstreams within the cone). Costs the cone's systems
    /// and edges (and one bit per system of the graph, cleared), nothing outside it.
    pub fn cone_ids(&self, id: u32) -> Vec<u32> {
        // Reverse post-order of a depth-first search is a topological order of what it reached.
        // The search takes each system's downstreams in name order, so the order is the one the
        // names give, whatever the ids.
        let mut seen = Bits::new(self.node_count());
        seen.insert(id);
        let mut post = Vec::new();
        // Each system on the path being searched, with how many of its downstreams were taken.
        let mut stack: Vec<(u32, usize)> = vec![(id, 0)];
        while let Some((node, taken)) = stack.last_mut() {
            match self.down[*node as usize].get(*taken) {
                Some(&(child, _)) => {
                    *taken += 1;
                    if seen.insert(child) {
                        stack.push((child, 0));
                    }
                }
                None => {
                    post.push(*node);
                    stack.pop();
                }
            }
        }
        post.reverse();
        post
    }

    // ----- inside -----

    /// `list` (of ids and weights) as names and weights.
    fn named<'a>(&'a self, list: &'a [(u32, f64)]) -> impl Iterator<Item = (&'a Arc<str>, f64)> + 'a {
        list.iter().map(|&(other, weight)| (self.name(other), weight))
    }

    /// Lifts system `id` to `at_least` and its downstreams above it, as far as needed.
    fn raise(&mut self, id: u32, at_least: u32) {
        let mut stack = vec![(id, at_least)];
        while let Some((s, level)) = stack.pop() {
            if self.levels[s as usize] >= level {
                continue;
            }
            self.levels[s as usize] = level;
            stack.extend(self.down[s as usize].iter().map(|&(d, _)| (d, level + 1)));
        }
    }

    /// A path of downstream edges from `from` to `to` (both included), if there is one.
    fn path(&self, from: u32, to: u32) -> Option<Vec<u32>> {
        if from == to {
            return Some(vec![from]);
        }
        // Iterative depth-first search (a long chain must not overflow the stack), remembering
        // where each system was reached from (`from` from itself): the systems reached.
        let mut parent: FnvHashMap<u32, u32> = FnvHashMap::from_iter([(from, from)]);
        let mut stack = vec![from];
        while let Some(node) = stack.pop() {
            for &(next, _) in self.down_ids(node) {
                if parent.contains_key(&next) {
                    continue;
                }
                parent.insert(next, node);
                if next == to {
                    let mut path = vec![to];
                    let mut at = to;
                    while at != from {
                        at = parent[&at];
                        path.push(at);
                    }
                    path.reverse();
                    return Some(path);
                }
                stack.push(next);
            }
        }
        None
    }

    /// `id`'s edge list on `side`, with the names that order it.
    fn list_mut(&mut self, side: Side, id: u32) -> (&[Arc<str>], &mut Vec<(u32, f64)>) {
        let lists = match side {
            Side::Up => &mut self.up,
            Side::Down => &mut self.down,
        };
        (&self.names, &mut lists[id as usize])
    }

    /// Sets `other`'s weight in `id`'s edge list on `side`, in its place by name; whether it is
    /// new there.
    fn put(&mut self, side: Side, id: u32, other: u32, weight: f64) -> bool {
        let (names, list) = self.list_mut(side, id);
        match find(names, list, other) {
            Ok(at) => {
                list[at].1 = weight;
                false
            }
            Err(at) => {
                list.insert(at, (other, weight));
                true
            }
        }
    }

    /// Takes `other` out of `id`'s edge list on `side`; whether it was there.
    fn take(&mut self, side: Side, id: u32, other: u32) -> bool {
        let (names, list) = self.list_mut(side, id);
        find(names, list, other).map(|at| list.remove(at)).is_ok()
    }
}

/// Where `other` is in `list`, kept in the order of `names`, or where it would go.
fn find(names: &[Arc<str>], list: &[(u32, f64)], other: u32) -> Result<usize, usize> {
    let name = &names[other as usize];
    list.binary_search_by(|(o, _)| names[*o as usize].cmp(name))
}

/// A set of system ids, one bit each: what a walk reached. Cheaper than a hash set for the cones
/// that cost (thousands of systems), and clearing it is a few kilobytes for 20,000 systems.
struct Bits(Vec<u64>);

impl Bits {
    fn new(len: usize) -> Bits {
        Bits(vec![0; len.div_ceil(64)])
    }

    /// Adds `id`; whether it is new.
    fn insert(&mut self, id: u32) -> bool {
        let (word, bit) = (id as usize / 64, 1u64 << (id % 64));
        let new = self.0[word] & bit == 0;
        self.0[word] |= bit;
        new
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeSet;

    fn a(s: &str) -> Arc<str> {
        Arc::from(s)
    }

    #[test]
    fn a_cycle_is_refused_naming_it_and_changes_nothing() {
        let mut g = Graph::default();
        g.add(&a("a"), &a("b"), 1.0).unwrap();
        g.add(&a("b"), &a("c"), 0.5).unwrap();
        let e = g.add(&a("c"), &a("a"), 1.0).unwrap_err();
        assert_eq!(e, SystemsError::DependencyCycle { cycle: vec!["c".into(), "a".into(), "b".into(), "c".into()] });
        assert!(e.to_string().contains("c -> a -> b -> c"), "{e}");
        assert_eq!(g.len(), 2);
        assert_eq!(
            g.add(&a("x"), &a("x"), 1.0).unwrap_err(),
            SystemsError::DependencyCycle { cycle: vec!["x".into(), "x".into()] }
        );
    }

    #[test]
    fn weights_outside_zero_one_are_refused() {
        let mut g = Graph::default();
        for w in [0.0, -0.5, 1.5, f64::NAN] {
            assert!(matches!(g.add(&a("a"), &a("b"), w), Err(SystemsError::Invalid { .. })), "{w}");
        }
        assert!(g.is_empty());
        assert!(g.add(&a("a"), &a("b"), 0.3).unwrap());
        assert!(!g.add(&a("a"), &a("b"), 0.6).unwrap(), "a second declaration sets the weight");
        assert_eq!(g.weight("a", "b"), Some(0.6));
        assert_eq!(g.len(), 1);
    }

    #[test]
    fn the_cone_is_topological_and_stays_inside() {
        // a → b → d, a → c → d, d → e; z → e is outside a's cone.
        let mut g = Graph::default();
        for (u, d) in [("a", "b"), ("a", "c"), ("b", "d"), ("c", "d"), ("d", "e"), ("z", "e")] {
            g.add(&a(u), &a(d), 1.0).unwrap();
        }
        let cone = g.cone(&a("a"));
        let pos = |s: &str| cone.iter().position(|c| &**c == s).unwrap();
        assert_eq!(cone.len(), 5);
        assert!(!cone.iter().any(|c| &**c == "z"));
        assert_eq!(pos("a"), 0);
        assert!(pos("b") < pos("d") && pos("c") < pos("d") && pos("d") < pos("e"));
        assert_eq!(g.cone(&a("e")), vec![a("e")]);
    }

    #[test]
    fn removing_a_system_removes_its_edges_both_ways() {
        let mut g = Graph::default();
        g.add(&a("a"), &a("b"), 1.0).unwrap();
        g.add(&a("b"), &a("c"), 1.0).unwrap();
        assert_eq!(g.remove_system("b"), vec![a("c")]);
        assert!(g.is_empty());
        assert_eq!(g.upstreams("c").count(), 0);
        assert!(!g.remove("a", "b"));
    }

    /// A graph shaped like the dense benchmark's: each system from the 100th fed by two systems
    /// among the 500 before it, picked by a fixed pseudo-random sequence. Systems are interned in
    /// number order first, as if registered, and their names (`s{i}`) sort otherwise (`s10` <
    /// `s9`), so name order and id order differ.
    fn dense(systems: usize) -> Graph {
        let mut g = Graph::default();
        for i in 0..systems {
            g.intern(&a(&format!("s{i}")));
        }
        let mut state: u64 = 13;
        let mut below = |n: usize| {
            // xorshift64: deterministic, and no dependency for a test.
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            (state % n as u64) as usize
        };
        for i in 100..systems {
            let first = i.saturating_sub(500);
            let one = first + below(i - first);
            let mut two = one;
            while two == one {
                two = first + below(i - first);
            }
            for u in [one, two] {
                g.add(&a(&format!("s{u}")), &a(&format!("s{i}")), 0.5).unwrap();
            }
        }
        g
    }

    /// What a plain search by name reaches from `from`, `from` included.
    fn reachable(g: &Graph, from: &str) -> BTreeSet<Arc<str>> {
        let mut seen = BTreeSet::from([a(from)]);
        let mut todo = vec![a(from)];
        while let Some(s) = todo.pop() {
            for (d, _) in g.downstreams(&s) {
                if seen.insert(d.clone()) {
                    todo.push(d.clone());
                }
            }
        }
        seen
    }

    #[test]
    fn the_cone_of_a_dense_graph_is_what_a_plain_search_reaches_in_a_topological_order() {
        let g = dense(3_000);
        assert_eq!((g.len(), g.node_count()), (2 * 2_900, 3_000));
        for id in 0..g.node_count() as u32 {
            for list in [g.up_ids(id), g.down_ids(id)] {
                assert!(list.windows(2).all(|w| g.name(w[0].0) < g.name(w[1].0)), "edges in name order");
            }
        }
        let mut largest = 0;
        for root in ["s0", "s57", "s100", "s499", "s1234", "s2999"] {
            let cone = g.cone(&a(root));
            let by_id: Vec<Arc<str>> = g.cone_ids(g.id(root).unwrap()).iter().map(|&c| g.name(c).clone()).collect();
            assert_eq!(cone, by_id, "cone and cone_ids agree, order included");
            assert_eq!(cone[0], a(root));
            let members: BTreeSet<Arc<str>> = cone.iter().cloned().collect();
            assert_eq!(members.len(), cone.len(), "each system once");
            assert_eq!(members, reachable(&g, root));
            // Topological: every system comes after each of its upstreams that is in the cone.
            let at: FnvHashMap<&Arc<str>, usize> = cone.iter().enumerate().map(|(i, s)| (s, i)).collect();
            for (i, s) in cone.iter().enumerate() {
                for (u, _) in g.upstreams(s) {
                    assert!(at.get(u).is_none_or(|&j| j < i), "{u} before {s} in the cone of {root}");
                }
            }
            largest = largest.max(cone.len());
        }
        assert!(largest > 1_000, "a change reaches thousands of systems: {largest}");
    }

    #[test]
    fn a_system_left_without_edges_keeps_its_id() {
        let mut g = Graph::default();
        g.add(&a("b"), &a("c"), 1.0).unwrap();
        g.add(&a("a"), &a("b"), 1.0).unwrap();
        let b = g.id("b").unwrap();
        g.remove_system("b");
        assert_eq!((g.id("b"), g.level("b"), g.node_count()), (Some(b), 0, 3));
        assert_eq!(g.cone_ids(b), vec![b]);
        // Back the other way round, under the same id and above its new upstream.
        g.add(&a("c"), &a("b"), 1.0).unwrap();
        assert_eq!((g.intern(&a("b")), g.cone(&a("a"))), (b, vec![a("a")]));
        assert!(g.level("c") < g.level("b"));
    }
}
