//! Incidents of synced systems: at most one open incident per system and cause (stale, failed);
//! a repeat while it is open is counted into it. An incident is resolved when its system recovers
//! (or by an operator, or when the system is retired), with its duration; operators acknowledge
//! and annotate it. Resolved incidents are kept, the most recent `max_resolved` of them.
//! Severity and priority are assessed by the table ([`super::Systems`]), which knows the graph.

use std::collections::{BTreeMap, VecDeque};
use std::sync::Arc;

use serde::{Deserialize, Serialize};

use super::SystemsError;
use crate::io::Time;

/// Longest note, in bytes.
pub const MAX_NOTE_BYTES: usize = 1024;
/// Most notes per incident; the oldest go first.
pub const MAX_NOTES: usize = 32;

/// Why an incident is open.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Cause {
    /// No successful sync within cadence + tolerance.
    Stale,
    /// The system reported a failed sync (or an agent tied to it lost its lease).
    Failed,
}

impl Cause {
    pub fn as_str(self) -> &'static str {
        match self {
            Cause::Stale => "stale",
            Cause::Failed => "failed",
        }
    }
}

/// An operator's note on an incident.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Note {
    pub at: Time,
    pub by: String,
    pub text: String,
}

/// One incident.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Incident {
    pub id: u64,
    pub system: String,
    pub cause: Cause,
    pub opened_at: Time,
    /// Occurrences counted into it (1 when opened).
    pub count: u64,
    pub last_seen: Time,
    /// What the last occurrence said (the failed event's reporter, "no success since ...").
    pub detail: String,
    pub acked_by: String,
    pub acked_at: Option<Time>,
    pub notes: Vec<Note>,
    pub resolved_at: Option<Time>,
    /// `auto` (the system recovered), `retired`, or the operator who resolved it.
    pub resolved_by: String,
    /// 1 (most severe) to 4, as assessed when last changed (see [`super::Systems::assess`]).
    pub severity: u8,
    /// Tie-breaker within a severity: higher first.
    pub score: u32,
    /// Downstream systems at risk when last assessed.
    pub at_risk: u32,
}

impl Incident {
    /// How long it was open (resolved), or has been open until `now`.
    pub fn duration(&self, now: Time) -> u64 {
        self.resolved_at.unwrap_or(now).saturating_sub(self.opened_at)
    }
}

/// What happened to an incident, as published on the incidents topic and written to the audit log.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Change {
    Opened,
    Repeated,
    Resolved,
    Acknowledged,
    Annotated,
}

impl Change {
    pub fn as_str(self) -> &'static str {
        match self {
            Change::Opened => "opened",
            Change::Repeated => "repeated",
            Change::Resolved => "resolved",
            Change::Acknowledged => "acknowledged",
            Change::Annotated => "annotated",
        }
    }
}

/// The open incidents and the most recent resolved ones.
#[derive(Clone, Debug, Default)]
pub struct Incidents {
    open: BTreeMap<u64, Incident>,
    by_cause: BTreeMap<(Arc<str>, Cause), u64>,
    resolved: VecDeque<Incident>,
    next_id: u64,
}

impl Incidents {
    /// `system` is `cause` at `now`: opens an incident, or counts a repeat into the open one.
    pub fn raise(&mut self, system: &Arc<str>, cause: Cause, now: Time, detail: String) -> (Change, &mut Incident) {
        if let Some(id) = self.by_cause.get(&(system.clone(), cause)) {
            let i = self.open.get_mut(id).expect("indexed incidents are open");
            i.count += 1;
            i.last_seen = now;
            i.detail = detail;
            return (Change::Repeated, i);
        }
        self.next_id += 1;
        let id = self.next_id;
        self.by_cause.insert((system.clone(), cause), id);
        let incident = Incident {
            id,
            system: system.to_string(),
            cause,
            opened_at: now,
            count: 1,
            last_seen: now,
            detail,
            acked_by: String::new(),
            acked_at: None,
            notes: Vec::new(),
            resolved_at: None,
            resolved_by: String::new(),
            severity: 4,
            score: 0,
            at_risk: 0,
        };
        (Change::Opened, self.open.entry(id).or_insert(incident))
    }

    /// The open incident of `system` for `cause`, if any.
    pub fn open_for(&self, system: &str, cause: Cause) -> Option<&Incident> {
        self.by_cause.get(&(Arc::from(system), cause)).and_then(|id| self.open.get(id))
    }

    /// Resolves the open incident of `system` for `cause`, if any; returns it resolved.
    pub fn recover(
        &mut self,
        system: &str,
        cause: Cause,
        now: Time,
        by: &str,
        max_resolved: usize,
    ) -> Option<Incident> {
        let id = self.by_cause.get(&(Arc::from(system), cause)).copied()?;
        self.resolve(id, now, by, max_resolved).ok()
    }

    /// Resolves open incident `id`.
    pub fn resolve(&mut self, id: u64, now: Time, by: &str, max_resolved: usize) -> Result<Incident, SystemsError> {
        let Some(mut i) = self.open.remove(&id) else { return Err(self.not_open(id)) };
        self.by_cause.remove(&(Arc::from(i.system.as_str()), i.cause));
        i.resolved_at = Some(now);
        i.resolved_by = by.to_owned();
        self.resolved.push_back(i.clone());
        while self.resolved.len() > max_resolved.max(1) {
            self.resolved.pop_front();
        }
        Ok(i)
    }

    /// An operator acknowledges open incident `id` (again: the latest acknowledgement counts).
    pub fn ack(&mut self, id: u64, now: Time, by: &str) -> Result<&Incident, SystemsError> {
        let not_open = self.not_open(id);
        let i = self.open.get_mut(&id).ok_or(not_open)?;
        i.acked_by = by.to_owned();
        i.acked_at = Some(now);
        Ok(i)
    }

    /// An operator annotates open incident `id`.
    pub fn note(&mut self, id: u64, now: Time, by: &str, text: &str) -> Result<&Incident, SystemsError> {
        if text.trim().is_empty() || text.len() > MAX_NOTE_BYTES {
            return Err(SystemsError::Invalid {
                what: "incident note",
                reason: format!("a note is 1 to {MAX_NOTE_BYTES} bytes of text; this one is {}", text.len()),
            });
        }
        let not_open = self.not_open(id);
        let i = self.open.get_mut(&id).ok_or(not_open)?;
        if i.notes.len() >= MAX_NOTES {
            i.notes.remove(0);
        }
        i.notes.push(Note { at: now, by: by.to_owned(), text: text.to_owned() });
        Ok(i)
    }

    fn not_open(&self, id: u64) -> SystemsError {
        match self.resolved.iter().find(|i| i.id == id) {
            Some(i) => SystemsError::IncidentResolved { id, at: i.resolved_at.unwrap_or_default() },
            None => SystemsError::UnknownIncident { id },
        }
    }

    /// Incident `id`, open or among the resolved kept.
    pub fn get(&self, id: u64) -> Option<&Incident> {
        self.open.get(&id).or_else(|| self.resolved.iter().find(|i| i.id == id))
    }

    pub fn get_open_mut(&mut self, id: u64) -> Option<&mut Incident> {
        self.open.get_mut(&id)
    }

    /// The open incidents, by id.
    pub fn open(&self) -> impl Iterator<Item = &Incident> {
        self.open.values()
    }

    pub fn open_mut(&mut self) -> impl Iterator<Item = &mut Incident> {
        self.open.values_mut()
    }

    /// The resolved incidents kept, oldest first.
    pub fn resolved(&self) -> impl Iterator<Item = &Incident> {
        self.resolved.iter()
    }

    /// The open incidents of `system`.
    pub fn open_of(&self, system: &str) -> Vec<u64> {
        [Cause::Stale, Cause::Failed].into_iter().filter_map(|c| self.open_for(system, c).map(|i| i.id)).collect()
    }

    /// The last id given (ids are never reused).
    pub fn last_id(&self) -> u64 {
        self.next_id
    }

    /// Rebuilds from kept incidents (open and resolved, any order); ids go on after the highest.
    pub fn restore(&mut self, mut all: Vec<Incident>) {
        *self = Incidents::default();
        all.sort_by_key(|i| i.id);
        for i in all {
            self.next_id = self.next_id.max(i.id);
            if i.resolved_at.is_some() {
                self.resolved.push_back(i);
            } else {
                self.by_cause.insert((Arc::from(i.system.as_str()), i.cause), i.id);
                self.open.insert(i.id, i);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn repeats_are_counted_into_the_open_incident() {
        let mut inc = Incidents::default();
        let s: Arc<str> = Arc::from("feed");
        let (c, i) = inc.raise(&s, Cause::Failed, 10, "x".into());
        assert_eq!((c, i.id, i.count), (Change::Opened, 1, 1));
        let (c, i) = inc.raise(&s, Cause::Failed, 20, "y".into());
        assert_eq!((c, i.id, i.count, i.last_seen), (Change::Repeated, 1, 2, 20));
        // Another cause is another incident.
        let (c, i) = inc.raise(&s, Cause::Stale, 30, "z".into());
        assert_eq!((c, i.id), (Change::Opened, 2));
        let r = inc.recover("feed", Cause::Failed, 70, "auto", 10).unwrap();
        assert_eq!((r.duration(1000), r.resolved_by.as_str()), (60, "auto"));
        assert!(inc.recover("feed", Cause::Failed, 80, "auto", 10).is_none());
        // A new failure after recovery is a new incident.
        assert_eq!(inc.raise(&s, Cause::Failed, 90, "x".into()).1.id, 3);
    }

    #[test]
    fn ack_and_note_need_an_open_incident_and_say_why_not() {
        let mut inc = Incidents::default();
        let s: Arc<str> = Arc::from("feed");
        inc.raise(&s, Cause::Stale, 10, String::new());
        assert_eq!(inc.ack(1, 11, "ops").unwrap().acked_by, "ops");
        assert_eq!(inc.note(1, 12, "ops", "looking").unwrap().notes.len(), 1);
        assert!(matches!(inc.note(1, 12, "ops", " "), Err(SystemsError::Invalid { .. })));
        assert_eq!(inc.ack(9, 13, "ops").unwrap_err(), SystemsError::UnknownIncident { id: 9 });
        inc.resolve(1, 20, "ops", 10).unwrap();
        assert_eq!(inc.ack(1, 21, "ops").unwrap_err(), SystemsError::IncidentResolved { id: 1, at: 20 });
        assert_eq!(inc.get(1).unwrap().notes[0].text, "looking");
    }

    #[test]
    fn notes_and_resolved_incidents_are_bounded() {
        let mut inc = Incidents::default();
        for n in 0..3 {
            let s: Arc<str> = Arc::from(format!("s{n}").as_str());
            inc.raise(&s, Cause::Failed, n, String::new());
            for k in 0..(MAX_NOTES + 2) {
                inc.note(n + 1, n, "ops", &format!("note {k}")).unwrap();
            }
            assert_eq!(inc.get(n + 1).unwrap().notes.len(), MAX_NOTES);
            assert_eq!(inc.get(n + 1).unwrap().notes[0].text, "note 2");
            inc.resolve(n + 1, 100, "ops", 2).unwrap();
        }
        assert_eq!(inc.resolved().map(|i| i.id).collect::<Vec<_>>(), [2, 3]);
        assert_eq!(inc.ack(1, 200, "ops").unwrap_err(), SystemsError::UnknownIncident { id: 1 });
    }
}
