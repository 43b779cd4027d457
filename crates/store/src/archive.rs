//! Large databases on purpose: an archive of agents lost long ago, each keeping a large JSON state,
//! written straight through the store's API (much faster than sending that much through a server).
//! The backup benchmark and the backup test start servers on such a database, so that copying it
//! outlasts a lease.

use std::path::Path;

use crate::{AgentRecord, Change, Durability, Store, StoreError};

/// Archive agents written per commit.
const BATCH: usize = 20;

/// Writes `agents` lost agents (`archive-0`, `archive-1`, ... of namespace `archive`, role
/// `archived`), each with a state of about `state_bytes` bytes, into the database of `dir`.
pub fn write_archive(dir: &Path, agents: usize, state_bytes: usize) -> Result<(), StoreError> {
    let mut store = Store::open(dir, Durability::Normal)?;
    let blob = "x".repeat(state_bytes.saturating_sub(32));
    let record = |i: usize| {
        Change::UpsertAgent(AgentRecord {
            namespace: "archive".into(),
            agent_id: format!("archive-{i}"),
            role: "archived".into(),
            status: "lost".into(),
            resume_token: format!("token-{i}"),
            state_json: format!(r#"{{"n":{i},"blob":"{blob}"}}"#),
            state_version: 1,
            ..Default::default()
        })
    };
    for first in (0..agents).step_by(BATCH) {
        store.apply(&(first..agents.min(first + BATCH)).map(record).collect::<Vec<_>>())?;
    }
    store.close()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn writes_every_agent_with_its_large_state() {
        let dir = std::env::temp_dir().join(format!("lockstep-archive-{}", std::process::id()));
        write_archive(&dir, 45, 10_000).unwrap();
        let snapshot = Store::open(&dir, Durability::Normal).unwrap().load().unwrap();
        assert_eq!(snapshot.agents.len(), 45);
        assert!(snapshot.agents.iter().all(|a| a.namespace == "archive" && a.status == "lost"));
        assert!(snapshot.agents.iter().all(|a| (9_900..10_100).contains(&a.state_json.len())));
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
