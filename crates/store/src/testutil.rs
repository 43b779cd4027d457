//! Sample records for the tests of every module.

use crate::records::{AgentRecord, ArrivalRecord, AuditRecord, SyncPointRecord};

pub(crate) fn agent(namespace: &str, agent_id: &str) -> AgentRecord {
    AgentRecord {
        namespace: namespace.into(),
        agent_id: agent_id.into(),
        role: "worker".into(),
        capabilities: vec!["gpu".into()],
        interests: vec!["jobs.*".into()],
        metadata: [("host".to_string(), "n1".to_string())].into(),
        status: "active".into(),
        resume_token: format!("token-{agent_id}"),
        registered_at_ms: 100,
        state_json: r#"{"step":1}"#.into(),
        state_version: 1,
        watches: vec!["role:worker".into()],
        paused: false,
    }
}

pub(crate) fn point(namespace: &str, sync_id: &str) -> SyncPointRecord {
    SyncPointRecord {
        namespace: namespace.into(),
        sync_id: sync_id.into(),
        participants_json: r#"{"agents":["a","b"]}"#.into(),
        required: vec!["a".into(), "b".into()],
        created_at_ms: 200,
        deadline_ms: 10_200,
        state: "waiting".into(),
        finished_at_ms: None,
        result_json: None,
    }
}

pub(crate) fn arrival(namespace: &str, sync_id: &str, agent_id: &str, position: u32) -> ArrivalRecord {
    ArrivalRecord {
        namespace: namespace.into(),
        sync_id: sync_id.into(),
        agent_id: agent_id.into(),
        position,
        payload: vec![position as u8, 0xff],
        at_ms: 300 + u64::from(position),
    }
}

pub(crate) fn audit(seq: u64) -> AuditRecord {
    AuditRecord {
        seq,
        at_ms: 1000 + seq,
        actor: "ops".into(),
        command: "pause_agent".into(),
        command_id: seq.is_multiple_of(2).then_some(seq * 10),
        namespace: "ns".into(),
        target: "a".into(),
        params: String::new(),
        outcome: "ok".into(),
        detail: format!("entry {seq}"),
    }
}
