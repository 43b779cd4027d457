//! Replica groups: named groups of agents with ranks, and the versioned state they share.
//!
//! This module owns the rules of a replica group, never its bytes:
//! * **Membership and ranks.** A group (per namespace) is created by its first `join`. Ranks are
//!   **join order**: rank *i* is the *i*-th member still in the group by the time it joined; when
//!   a member leaves (or is lost with its lease, or deregisters) the members after it move down one
//!   rank, so ranks are always `0..n` with no gap. Joining again is harmless (the member keeps its
//!   rank). Every change of membership (and every new version) is a [`GroupEvent`] the engine
//!   publishes as an ordinary message on [`event_topic`]: members and observers that want the
//!   events subscribe to it (an interest in `lockstep.groups.<id>` or `lockstep.groups.>`).
//! * **The state.** One member at a time publishes a blob (parameters, optimiser state, anything
//!   up to `limits.max_group_state_bytes`). The bytes move beside the engine (the server's group
//!   store reads them, hashes them with SHA-256 and keeps them); this module gives the publish its
//!   turn ([`ReplicaGroups::begin_publish`]) and, when the shell reports the bytes complete with
//!   their checksum, makes them the next version ([`ReplicaGroups::end_publish`]): versions start
//!   at 1 and grow by one per publish. A publish that breaks off, or whose publisher leaves or is
//!   lost first, changes nothing: the previous version stays current and nothing half-written
//!   is ever visible.
//! * **Fetching** the current version is for members (a late joiner joins, then fetches).
//! * **Divergence** at a collective: see [`diverged`] (the majority of the checksums presented,
//!   else the group's published version).
//! * **Bounds.** `limits.max_groups` per namespace, `limits.max_group_members` per group,
//!   `limits.max_group_state_bytes` per blob and `limits.max_group_state_total_bytes` for every
//!   group's current blob and every publish in progress together (the server holds them in memory).
//!
//! A group is forgotten when it has no member, no state and no publish in progress.
//! Groups and their state are not durable in the engine: see "Replica groups" in
//! docs/PROTOCOL.md for what a restart keeps.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use serde::Serialize;

use crate::config::Limits;
use crate::error::CoreError;
use crate::io::Time;
use crate::{name, topic};

/// The topic a group's membership and state events are published on.
pub fn event_topic(group_id: &str) -> String {
    format!("lockstep.groups.{group_id}")
}

/// A group's key: (namespace, group id).
pub type Key = (Arc<str>, Arc<str>);

/// A published version of a group's state.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct StateVersion {
    /// 1 for the first publish, one more for each later one.
    pub version: u64,
    /// SHA-256 of the bytes, lowercase hex.
    pub checksum: String,
    pub size: u64,
    pub published_by: String,
    pub published_at: Time,
}

/// A publish in progress: its bytes are on their way to the shell.
#[derive(Clone, Debug, PartialEq, Eq)]
struct Publishing {
    origin: u64,
    agent: Arc<str>,
    size: u64,
}

/// One replica group.
#[derive(Clone, Debug, Default)]
pub struct ReplicaGroup {
    /// Members in rank order (join order).
    pub members: Vec<Arc<str>>,
    pub state: Option<StateVersion>,
    publishing: Option<Publishing>,
}

impl ReplicaGroup {
    pub fn rank_of(&self, agent: &str) -> Option<u32> {
        self.members.iter().position(|m| &**m == agent).map(|r| r as u32)
    }

    fn is_empty(&self) -> bool {
        self.members.is_empty() && self.state.is_none() && self.publishing.is_none()
    }
}

/// What changed in a group, as published on its [`event_topic`] (JSON).
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct GroupEvent {
    pub group: String,
    /// `joined`, `left`, `lost` or `published`.
    pub event: &'static str,
    /// The agent that joined, left, was lost, or published.
    pub agent: String,
    /// Members after the change, in rank order.
    pub members: Vec<String>,
    /// The current state version after the change (0: none published).
    pub version: u64,
    /// Its checksum (empty: none published).
    pub checksum: String,
}

/// A member's view of its group, as a join answers it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct GroupView {
    pub group_id: String,
    /// The caller's rank (join order).
    pub rank: u32,
    pub members: Vec<String>,
    pub state: Option<StateVersion>,
}

/// A group's status for listings.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct GroupStatus {
    pub group_id: String,
    pub members: Vec<String>,
    pub state: Option<StateVersion>,
    /// The member publishing a new version now, if one is.
    pub publishing: Option<String>,
}

/// Every replica group.
#[derive(Debug, Default)]
pub struct ReplicaGroups {
    /// By key: key order keeps every scan deterministic.
    groups: BTreeMap<Key, ReplicaGroup>,
    /// The group each publish in progress belongs to.
    publishes: HashMap<u64, Key>,
    /// Bytes of every current version and every publish in progress.
    bytes: u64,
}

fn not_member(group_id: &str, agent: &str, g: &ReplicaGroup) -> CoreError {
    CoreError::NotGroupMember { group_id: group_id.to_owned(), agent: agent.to_owned(), members: g.members.join(", ") }
}

impl ReplicaGroups {
    /// Checks a group id: a name that also makes a valid event topic.
    pub fn validate_id(group_id: &str, limits: &Limits) -> Result<(), CoreError> {
        name::validate("group id", group_id)?;
        topic::validate_topic(&event_topic(group_id), limits.max_topic_len)
    }

    pub fn get(&self, key: &Key) -> Option<&ReplicaGroup> {
        self.groups.get(key)
    }

    fn group(&self, key: &Key) -> Result<&ReplicaGroup, CoreError> {
        self.groups
            .get(key)
            .ok_or_else(|| CoreError::UnknownGroup { namespace: key.0.to_string(), group_id: key.1.to_string() })
    }

    /// Groups of `ns`.
    pub fn count_in(&self, ns: &str) -> usize {
        self.in_namespace(ns).count()
    }

    /// The groups of `ns`, in id order.
    pub fn in_namespace<'a>(&'a self, ns: &'a str) -> impl Iterator<Item = (&'a Arc<str>, &'a ReplicaGroup)> + 'a {
        self.groups.iter().filter(move |((n, _), _)| &**n == ns).map(|((_, id), g)| (id, g))
    }

    /// Bytes of current versions and publishes in progress.
    pub fn bytes(&self) -> u64 {
        self.bytes
    }

    fn event(key: &Key, g: &ReplicaGroup, event: &'static str, agent: &str) -> GroupEvent {
        GroupEvent {
            group: key.1.to_string(),
            event,
            agent: agent.to_owned(),
            members: g.members.iter().map(|m| m.to_string()).collect(),
            version: g.state.as_ref().map_or(0, |s| s.version),
            checksum: g.state.as_ref().map(|s| s.checksum.clone()).unwrap_or_default(),
        }
    }

    fn view(key: &Key, g: &ReplicaGroup, rank: u32) -> GroupView {
        GroupView {
            group_id: key.1.to_string(),
            rank,
            members: g.members.iter().map(|m| m.to_string()).collect(),
            state: g.state.clone(),
        }
    }

    /// `agent` joins group `key` (created if new): its view, and the event when it is new to it.
    pub fn join(
        &mut self,
        key: Key,
        agent: &Arc<str>,
        limits: &Limits,
    ) -> Result<(GroupView, Option<GroupEvent>), CoreError> {
        Self::validate_id(&key.1, limits)?;
        if !self.groups.contains_key(&key) && self.count_in(&key.0) >= limits.max_groups {
            return Err(CoreError::Limit {
                what: "replica groups in the namespace",
                limit: limits.max_groups as u64,
                hint: "leave groups you no longer use (limits.max_groups)",
            });
        }
        let g = self.groups.entry(key.clone()).or_default();
        if let Some(rank) = g.rank_of(agent) {
            return Ok((Self::view(&key, g, rank), None));
        }
        if g.members.len() >= limits.max_group_members {
            let e = CoreError::Limit {
                what: "members of the replica group",
                limit: limits.max_group_members as u64,
                hint: "use fewer members, or another group (limits.max_group_members)",
            };
            if g.is_empty() {
                self.groups.remove(&key);
            }
            return Err(e);
        }
        g.members.push(agent.clone());
        let rank = g.members.len() as u32 - 1;
        Ok((Self::view(&key, g, rank), Some(Self::event(&key, g, "joined", agent))))
    }

    /// `agent` leaves group `key` (`event`: `left` or `lost`); a publish of its in progress is
    /// abandoned (the current version stays).
    pub fn leave(&mut self, key: &Key, agent: &str, event: &'static str) -> Result<GroupEvent, CoreError> {
        let g = self.group(key)?;
        let rank = g.rank_of(agent).ok_or_else(|| not_member(&key.1, agent, g))?;
        let g = self.groups.get_mut(key).expect("found above");
        g.members.remove(rank as usize);
        if g.publishing.as_ref().is_some_and(|p| &*p.agent == agent) {
            let p = g.publishing.take().expect("checked");
            self.publishes.remove(&p.origin);
            self.bytes -= p.size;
        }
        let e = Self::event(key, g, event, agent);
        if g.is_empty() {
            self.groups.remove(key);
        }
        Ok(e)
    }

    /// The last member, `agent`, leaves group `key` and the group is forgotten with its state.
    /// Refused while other members remain (or another member's publish is in progress).
    pub fn forget(&mut self, key: &Key, agent: &str) -> Result<GroupEvent, CoreError> {
        let g = self.group(key)?;
        g.rank_of(agent).ok_or_else(|| not_member(&key.1, agent, g))?;
        if g.members.len() > 1 {
            let others: Vec<&str> = g.members.iter().map(|m| &**m).filter(|m| *m != agent).collect();
            return Err(CoreError::invalid(
                "forget_state",
                format!(
                    "other members remain in replica group '{}' ({}); only the last member may forget its state",
                    key.1,
                    others.join(", ")
                ),
            ));
        }
        let e = self.leave(key, agent, "left")?;
        if let Some(g) = self.groups.remove(key) {
            self.bytes -= g.state.as_ref().map_or(0, |s| s.size);
        }
        Ok(e)
    }

    /// `agent` of `ns` went away (`event`: `left` or `lost`): it leaves every group it is in.
    pub fn member_gone(&mut self, ns: &str, agent: &str, event: &'static str) -> Vec<GroupEvent> {
        let keys: Vec<Key> = self
            .groups
            .iter()
            .filter(|((n, _), g)| &**n == ns && g.rank_of(agent).is_some())
            .map(|(k, _)| k.clone())
            .collect();
        keys.iter().filter_map(|k| self.leave(k, agent, event).ok()).collect()
    }

    /// A member of group `key` starts publishing `size` bytes under call `origin`.
    pub fn begin_publish(
        &mut self,
        key: &Key,
        agent: &Arc<str>,
        origin: u64,
        size: u64,
        limits: &Limits,
    ) -> Result<(), CoreError> {
        let g = self.group(key)?;
        g.rank_of(agent).ok_or_else(|| not_member(&key.1, agent, g))?;
        if size > limits.max_group_state_bytes {
            return Err(CoreError::invalid(
                "group state",
                format!("{size} bytes; the limit is {} (limits.max_group_state_bytes)", limits.max_group_state_bytes),
            ));
        }
        if let Some(p) = &g.publishing {
            return Err(CoreError::GroupBusy { group_id: key.1.to_string(), publisher: p.agent.to_string() });
        }
        if self.bytes.saturating_add(size) > limits.max_group_state_total_bytes {
            return Err(CoreError::Limit {
                what: "bytes of replica group state held by the server",
                limit: limits.max_group_state_total_bytes,
                hint: "publish smaller state, or leave groups you no longer use (limits.max_group_state_total_bytes)",
            });
        }
        let g = self.groups.get_mut(key).expect("found above");
        g.publishing = Some(Publishing { origin, agent: agent.clone(), size });
        self.publishes.insert(origin, key.clone());
        self.bytes += size;
        Ok(())
    }

    /// The namespace of publish `origin`'s group, while it is in progress.
    pub fn publishing_in(&self, origin: u64) -> Option<&Arc<str>> {
        self.publishes.get(&origin).map(|(ns, _)| ns)
    }

    /// The shell reports the bytes of publish `origin` complete (`Ok(checksum)`) or broken off
    /// (`Err(why)`): the new version and its event, or why nothing changed.
    pub fn end_publish(
        &mut self,
        now: Time,
        origin: u64,
        result: Result<String, String>,
    ) -> Result<(Key, StateVersion, GroupEvent), CoreError> {
        let Some(key) = self.publishes.remove(&origin) else {
            return Err(CoreError::GroupPublishAborted {
                group_id: String::new(),
                why: "the publisher left the group or lost its lease before its bytes were complete".into(),
            });
        };
        let g = self.groups.get_mut(&key).expect("indexed publishes belong to groups");
        let p = g.publishing.take().expect("indexed publishes are in progress");
        let checksum = match result {
            Ok(c) => c,
            Err(why) => {
                self.bytes -= p.size;
                let e = CoreError::GroupPublishAborted { group_id: key.1.to_string(), why };
                if g.is_empty() {
                    self.groups.remove(&key);
                }
                return Err(e);
            }
        };
        let old = g.state.as_ref().map_or(0, |s| s.size);
        self.bytes -= old;
        let state = StateVersion {
            version: g.state.as_ref().map_or(0, |s| s.version) + 1,
            checksum,
            size: p.size,
            published_by: p.agent.to_string(),
            published_at: now,
        };
        g.state = Some(state.clone());
        let event = Self::event(&key, g, "published", &p.agent);
        Ok((key, state, event))
    }

    /// Group `key` with `state` as its current version and no members (after a restart: its
    /// members join again).
    pub fn restore(&mut self, key: Key, state: StateVersion) {
        let g = self.groups.entry(key).or_default();
        self.bytes = self.bytes - g.state.as_ref().map_or(0, |s| s.size) + state.size;
        g.state = Some(state);
    }

    /// A member of group `key` may fetch its current version: which one.
    pub fn fetch(&self, key: &Key, agent: &str) -> Result<StateVersion, CoreError> {
        let g = self.group(key)?;
        g.rank_of(agent).ok_or_else(|| not_member(&key.1, agent, g))?;
        g.state.clone().ok_or_else(|| CoreError::NoGroupState { group_id: key.1.to_string() })
    }

    /// Members of group `key`, in rank order (empty if there is no such group).
    pub fn members(&self, key: &Key) -> Vec<Arc<str>> {
        self.groups.get(key).map(|g| g.members.clone()).unwrap_or_default()
    }

    /// The checksum of group `key`'s current version, if any.
    pub fn checksum(&self, key: &Key) -> Option<&str> {
        self.groups.get(key).and_then(|g| g.state.as_ref()).map(|s| s.checksum.as_str())
    }

    pub fn status(id: &Arc<str>, g: &ReplicaGroup) -> GroupStatus {
        GroupStatus {
            group_id: id.to_string(),
            members: g.members.iter().map(|m| m.to_string()).collect(),
            state: g.state.clone(),
            publishing: g.publishing.as_ref().map(|p| p.agent.to_string()),
        }
    }

    /// Whether any group of `ns` exists (a namespace holding groups is kept).
    pub fn any_in(&self, ns: &str) -> bool {
        self.in_namespace(ns).next().is_some()
    }
}

/// Which members presented a state checksum that diverges. `presented[rank]` is what rank `rank`
/// presented (`None`: nothing). The reference is the checksum presented by more than half of the
/// members that presented one (replicas that stepped together agree, whatever version was last
/// published); without such a majority, `published` (the replica group's current version) when
/// some member presented it. Members whose checksum differs from the reference are named, in rank
/// order; with no reference, every member that presented a checksum is named as soon as two
/// differ. Members that presented nothing are never named. Returns (the reference, empty when
/// none; the diverged members).
pub fn diverged(members: &[Arc<str>], presented: &[Option<String>], published: Option<&str>) -> (String, Vec<String>) {
    let given: Vec<(&Arc<str>, &str)> =
        members.iter().zip(presented).filter_map(|(m, c)| c.as_deref().map(|c| (m, c))).collect();
    let mut counts: BTreeMap<&str, usize> = BTreeMap::new();
    for (_, c) in &given {
        *counts.entry(c).or_default() += 1;
    }
    let majority = counts.into_iter().find(|(_, n)| *n * 2 > given.len()).map(|(c, _)| c.to_owned());
    let reference = majority.or_else(|| published.filter(|p| given.iter().any(|(_, c)| c == p)).map(str::to_owned));
    let named = match &reference {
        Some(r) => given.iter().filter(|(_, c)| c != r).map(|(m, _)| m.to_string()).collect(),
        None if given.windows(2).any(|w| w[0].1 != w[1].1) => given.iter().map(|(m, _)| m.to_string()).collect(),
        None => Vec::new(),
    };
    (reference.unwrap_or_default(), named)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(g: &str) -> Key {
        ("ns".into(), g.into())
    }

    fn limits() -> Limits {
        Limits { max_group_members: 3, max_groups: 2, max_group_state_bytes: 100, ..Limits::default() }
    }

    #[test]
    fn ranks_are_join_order_and_close_up_when_a_member_leaves() {
        let mut gs = ReplicaGroups::default();
        let l = limits();
        let (v, e) = gs.join(key("g"), &"b".into(), &l).unwrap();
        assert_eq!((v.rank, e.unwrap().event), (0, "joined"));
        assert_eq!(gs.join(key("g"), &"a".into(), &l).unwrap().0.rank, 1);
        let (v, e) = gs.join(key("g"), &"c".into(), &l).unwrap();
        assert_eq!((v.rank, v.members.clone()), (2, vec!["b".to_owned(), "a".into(), "c".into()]));
        assert!(e.is_some());
        // Joining again keeps the rank and is no event.
        let (v, e) = gs.join(key("g"), &"a".into(), &l).unwrap();
        assert_eq!((v.rank, e), (1, None));
        let e = gs.leave(&key("g"), "b", "left").unwrap();
        assert_eq!((e.event, e.members.clone()), ("left", vec!["a".to_owned(), "c".into()]));
        assert_eq!(gs.get(&key("g")).unwrap().rank_of("c"), Some(1));
        assert!(matches!(gs.leave(&key("g"), "b", "left"), Err(CoreError::NotGroupMember { .. })));
        assert!(matches!(gs.leave(&key("x"), "b", "left"), Err(CoreError::UnknownGroup { .. })));
    }

    #[test]
    fn groups_and_members_are_bounded_and_empty_groups_forgotten() {
        let mut gs = ReplicaGroups::default();
        let l = limits();
        for a in ["a", "b", "c"] {
            gs.join(key("g"), &a.into(), &l).unwrap();
        }
        assert!(matches!(gs.join(key("g"), &"d".into(), &l), Err(CoreError::Limit { .. })));
        gs.join(key("h"), &"a".into(), &l).unwrap();
        assert!(matches!(gs.join(key("i"), &"a".into(), &l), Err(CoreError::Limit { .. })));
        assert_eq!(gs.member_gone("ns", "a", "lost").len(), 2);
        assert!(gs.get(&key("h")).is_none(), "no member and no state: forgotten");
        assert!(gs.join(key("bad id"), &"a".into(), &l).is_err());
    }

    #[test]
    fn a_publish_makes_the_next_version_and_a_broken_one_changes_nothing() {
        let mut gs = ReplicaGroups::default();
        let l = limits();
        gs.join(key("g"), &"a".into(), &l).unwrap();
        gs.join(key("g"), &"b".into(), &l).unwrap();
        assert!(matches!(gs.fetch(&key("g"), "a"), Err(CoreError::NoGroupState { .. })));
        assert!(matches!(gs.begin_publish(&key("g"), &"x".into(), 1, 10, &l), Err(CoreError::NotGroupMember { .. })));
        assert!(matches!(gs.begin_publish(&key("g"), &"a".into(), 1, 101, &l), Err(CoreError::Invalid { .. })));
        gs.begin_publish(&key("g"), &"a".into(), 1, 10, &l).unwrap();
        assert!(matches!(gs.begin_publish(&key("g"), &"b".into(), 2, 10, &l), Err(CoreError::GroupBusy { .. })));
        let (_, s, e) = gs.end_publish(5, 1, Ok("c1".into())).unwrap();
        assert_eq!((s.version, s.size, e.event, e.version), (1, 10, "published", 1));
        assert_eq!(gs.bytes(), 10);
        gs.begin_publish(&key("g"), &"b".into(), 2, 20, &l).unwrap();
        assert_eq!(gs.bytes(), 30);
        assert!(matches!(gs.end_publish(6, 2, Err("broke".into())), Err(CoreError::GroupPublishAborted { .. })));
        assert_eq!(gs.fetch(&key("g"), "b").unwrap().checksum, "c1");
        assert_eq!(gs.bytes(), 10);
        // A publisher lost mid-transfer: its publish is abandoned, the old version stays.
        gs.begin_publish(&key("g"), &"b".into(), 3, 20, &l).unwrap();
        gs.member_gone("ns", "b", "lost");
        assert!(matches!(gs.end_publish(7, 3, Ok("c3".into())), Err(CoreError::GroupPublishAborted { .. })));
        assert_eq!(gs.fetch(&key("g"), "a").unwrap().version, 1);
        assert_eq!(gs.bytes(), 10);
        let (_, s, _) = {
            gs.begin_publish(&key("g"), &"a".into(), 4, 30, &l).unwrap();
            gs.end_publish(8, 4, Ok("c4".into())).unwrap()
        };
        assert_eq!((s.version, gs.bytes()), (2, 30));
        // The state outlives its members, unless the last one forgets it.
        gs.join(key("g"), &"c".into(), &l).unwrap();
        assert!(matches!(gs.forget(&key("g"), "a"), Err(CoreError::Invalid { .. })), "c remains");
        gs.member_gone("ns", "a", "left");
        assert!(gs.get(&key("g")).is_some_and(|g| g.members.len() == 1 && g.state.is_some()));
        gs.member_gone("ns", "c", "left");
        assert!(gs.get(&key("g")).is_some_and(|g| g.members.is_empty() && g.state.is_some()));
        gs.join(key("g"), &"c".into(), &l).unwrap();
        assert_eq!(gs.forget(&key("g"), "c").unwrap().event, "left");
        assert!(gs.get(&key("g")).is_none());
        assert_eq!(gs.bytes(), 0);
    }

    #[test]
    fn divergence_is_against_the_majority_else_the_published_version() {
        let m: Vec<Arc<str>> = ["a", "b", "c", "d"].into_iter().map(Arc::from).collect();
        let p = |v: &[Option<&str>]| v.iter().map(|c| c.map(str::to_owned)).collect::<Vec<_>>();
        let given = p(&[Some("x"), Some("x"), Some("y"), None]);
        assert_eq!(diverged(&m, &given, None), ("x".into(), vec!["c".into()]));
        assert_eq!(diverged(&m, &given, Some("y")), ("x".into(), vec!["c".into()]), "the majority first");
        let split = p(&[Some("x"), Some("y"), None, None]);
        assert_eq!(diverged(&m, &split, None), (String::new(), vec!["a".into(), "b".into()]));
        assert_eq!(
            diverged(&m, &split, Some("y")),
            ("y".into(), vec!["a".into()]),
            "the published version breaks a tie"
        );
        assert_eq!(diverged(&m, &split, Some("z")), (String::new(), vec!["a".into(), "b".into()]));
        let same = p(&[Some("x"), None, Some("x"), None]);
        assert_eq!(diverged(&m, &same, None), ("x".into(), vec![]));
        assert_eq!(diverged(&m, &p(&[None, None, None, None]), None), (String::new(), vec![]));
    }
}
