//! The dependency graph between synced systems: edges upstream → downstream, each with an impact
//! weight in (0, 1]. It guarantees the graph stays acyclic (an edge closing a cycle is refused,
//! naming the cycle), and gives what the risk rules need: a *level* per system such that every
//! edge goes from a lower level to a higher one (so propagation can take changed systems in level
//! order and handle each once, after all of its upstreams), the downstream cone of one system in
//! topological order (for the blast radius and severity), and a system's upstreams with their
//! weights. No walk ever covers more than the cone of the system asked about.

use std::collections::BTreeMap;
use std::sync::Arc;

use fnv::{FnvHashMap, FnvHashSet};

use super::SystemsError;

/// Upstream → downstream edges with their impact weights, kept both ways. Systems are found by
/// hash (every step of a walk is a lookup); each one's edges are kept in name order, which makes
/// every walk's order deterministic.
#[derive(Clone, Debug, Default)]
pub struct Graph {
    /// downstream → (upstream → weight)
    up: FnvHashMap<Arc<str>, BTreeMap<Arc<str>, f64>>,
    /// upstream → (downstream → weight)
    down: FnvHashMap<Arc<str>, BTreeMap<Arc<str>, f64>>,
    edges: usize,
    /// Levels above 0: every edge goes from a lower level to a higher one. Levels only rise (a
    /// removed edge leaves them as they are, which keeps the rule true).
    levels: FnvHashMap<Arc<str>, u32>,
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

    /// The weight of `upstream → downstream`, if declared.
    pub fn weight(&self, upstream: &str, downstream: &str) -> Option<f64> {
        self.down.get(upstream).and_then(|d| d.get(downstream)).copied()
    }

    /// The level of `system`: above the level of each of its upstreams.
    pub fn level(&self, system: &str) -> u32 {
        self.levels.get(system).copied().unwrap_or(0)
    }

    /// Declares `upstream → downstream` with `weight` (a second declaration sets the weight).
    /// Refused when it would close a cycle: the error names it, `upstream` first and last.
    /// Returns whether the edge is new.
    pub fn add(&mut self, upstream: &Arc<str>, downstream: &Arc<str>, weight: f64) -> Result<bool, SystemsError> {
        check_weight(weight)?;
        // A path downstream → upstream would climb levels: none can exist when the downstream
        // is already above the upstream, the usual case.
        if self.level(downstream) <= self.level(upstream) {
            if let Some(path) = self.path(downstream, upstream) {
                let mut cycle: Vec<String> = vec![upstream.to_string()];
                cycle.extend(path.iter().map(|s| s.to_string()));
                return Err(SystemsError::DependencyCycle { cycle });
            }
        }
        let new = self.down.entry(upstream.clone()).or_default().insert(downstream.clone(), weight).is_none();
        self.up.entry(downstream.clone()).or_default().insert(upstream.clone(), weight);
        if new {
            self.edges += 1;
        }
        self.raise(downstream, self.level(upstream) + 1);
        Ok(new)
    }

    /// Lifts `system` to `at_least` and its downstreams above it, as far as needed.
    fn raise(&mut self, system: &Arc<str>, at_least: u32) {
        let mut stack = vec![(system.clone(), at_least)];
        while let Some((s, level)) = stack.pop() {
            if self.level(&s) >= level {
                continue;
            }
            self.levels.insert(s.clone(), level);
            stack.extend(self.downstreams(&s).map(|(d, _)| (d.clone(), level + 1)));
        }
    }

    /// Removes `upstream → downstream`; `false` when it was not declared.
    pub fn remove(&mut self, upstream: &str, downstream: &str) -> bool {
        let removed = self.down.get_mut(upstream).is_some_and(|d| d.remove(downstream).is_some());
        if removed {
            if let Some(u) = self.up.get_mut(downstream) {
                u.remove(upstream);
                if u.is_empty() {
                    self.up.remove(downstream);
                }
            }
            if self.down.get(upstream).is_some_and(BTreeMap::is_empty) {
                self.down.remove(upstream);
            }
            self.edges -= 1;
        }
        removed
    }

    /// Removes every edge touching `system`; returns its former downstreams (whose risk must be
    /// recomputed).
    pub fn remove_system(&mut self, system: &str) -> Vec<Arc<str>> {
        let downs: Vec<Arc<str>> = self.downstreams(system).map(|(d, _)| d.clone()).collect();
        let ups: Vec<Arc<str>> = self.upstreams(system).map(|(u, _)| u.clone()).collect();
        for d in &downs {
            self.remove(system, d);
        }
        for u in &ups {
            self.remove(u, system);
        }
        self.levels.remove(system);
        downs
    }

    /// The direct upstreams of `system` with their weights, in name order.
    pub fn upstreams<'a>(&'a self, system: &str) -> impl Iterator<Item = (&'a Arc<str>, f64)> + 'a {
        self.up.get(system).into_iter().flatten().map(|(n, w)| (n, *w))
    }

    /// The direct downstreams of `system` with their weights, in name order.
    pub fn downstreams<'a>(&'a self, system: &str) -> impl Iterator<Item = (&'a Arc<str>, f64)> + 'a {
        self.down.get(system).into_iter().flatten().map(|(n, w)| (n, *w))
    }

    /// A path of downstream edges from `from` to `to` (both included), if there is one.
    fn path(&self, from: &Arc<str>, to: &Arc<str>) -> Option<Vec<Arc<str>>> {
        if from == to {
            return Some(vec![from.clone()]);
        }
        // Iterative depth-first search: a long chain must not overflow the stack.
        let mut parent: FnvHashMap<Arc<str>, Arc<str>> = FnvHashMap::default();
        let mut seen: FnvHashSet<Arc<str>> = FnvHashSet::from_iter([from.clone()]);
        let mut stack = vec![from.clone()];
        while let Some(node) = stack.pop() {
            for (next, _) in self.downstreams(&node) {
                if !seen.insert(next.clone()) {
                    continue;
                }
                parent.insert(next.clone(), node.clone());
                if next == to {
                    let mut path = vec![to.clone()];
                    let mut at = to.clone();
                    while let Some(p) = parent.get(&at) {
                        path.push(p.clone());
                        at = p.clone();
                    }
                    path.reverse();
                    return Some(path);
                }
                stack.push(next.clone());
            }
        }
        None
    }

    /// `system` and everything downstream of it, transitively, in a topological order (`system`
    /// first; every system after all of its upstreams within the cone). Costs the cone's systems
    /// and edges, nothing outside it.
    pub fn cone(&self, system: &Arc<str>) -> Vec<Arc<str>> {
        // Reverse post-order of a depth-first search is a topological order of what it reached.
        let mut seen: FnvHashSet<Arc<str>> = FnvHashSet::from_iter([system.clone()]);
        let mut post = Vec::new();
        let mut stack: Vec<(Arc<str>, Vec<Arc<str>>)> = vec![(system.clone(), self.children(system))];
        while let Some((_, children)) = stack.last_mut() {
            match children.pop() {
                Some(child) => {
                    if seen.insert(child.clone()) {
                        let grandchildren = self.children(&child);
                        stack.push((child, grandchildren));
                    }
                }
                None => {
                    let (node, _) = stack.pop().expect("non-empty");
                    post.push(node);
                }
            }
        }
        post.reverse();
        post
    }

    fn children(&self, system: &str) -> Vec<Arc<str>> {
        // Reversed so that popping visits them in name order.
        let mut c: Vec<Arc<str>> = self.downstreams(system).map(|(d, _)| d.clone()).collect();
        c.reverse();
        c
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
}
