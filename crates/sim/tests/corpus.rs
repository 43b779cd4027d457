//! The fuzz corpus kept in the repository (`fuzz/corpus/<target>/`), replayed through the fuzz
//! targets' own functions in the normal suite: what the fuzzers found interesting, and every
//! input that once failed, keeps passing without a fuzzing build. The session-frame corpus is
//! seeded with one valid message of every client message kind.

use std::path::{Path, PathBuf};

use lockstep_proto::v1;
use lockstep_proto::v1::client_message::Kind;
use lockstep_sim::fuzz;
use prost::Message as _;

fn corpus(target: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../fuzz/corpus").join(target)
}

fn inputs(target: &str) -> Vec<(PathBuf, Vec<u8>)> {
    let dir = corpus(target);
    let mut files: Vec<_> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|e| e.unwrap().path())
        .filter(|p| p.is_file())
        .collect();
    files.sort();
    files.into_iter().map(|p| (p.clone(), std::fs::read(&p).unwrap())).collect()
}

/// One valid message of every kind a session may send.
fn seeds() -> Vec<(&'static str, v1::ClientMessage)> {
    let kinds: Vec<(&str, Kind)> = vec![
        ("register", Kind::Register(v1::Register { agent_id: "a".into(), role: "r".into(), ..Default::default() })),
        ("heartbeat", Kind::Heartbeat(v1::Heartbeat {})),
        (
            "publish",
            Kind::Publish(v1::Publish { topic: "m.btc".into(), payload: vec![1, 2].into(), ..Default::default() }),
        ),
        ("update_state", Kind::UpdateState(v1::UpdateState { delta_json: "{\"x\":1}".into() })),
        ("set_status", Kind::SetStatus(v1::SetStatus { status: v1::AgentStatus::Busy as i32 })),
        ("watch_state", Kind::WatchState(v1::WatchState { target: Some(v1::watch_state::Target::All(true)) })),
        (
            "unwatch_state",
            Kind::UnwatchState(v1::UnwatchState { target: Some(v1::unwatch_state::Target::Role("r".into())) }),
        ),
        (
            "sync",
            Kind::Sync(v1::SyncArrive {
                sync_id: "s".into(),
                participants: Some(v1::sync_arrive::Participants::Count(1)),
                ..Default::default()
            }),
        ),
        ("ack", Kind::Ack(v1::Ack { up_to_seq: 3 })),
        ("deregister", Kind::Deregister(v1::Deregister {})),
        (
            "command_result",
            Kind::CommandResult(v1::CommandResult {
                command_id: 1,
                outcome: Some(v1::command_result::Outcome::ResultJson("{}".into())),
            }),
        ),
        ("delivery_error", Kind::DeliveryError(v1::DeliveryError { seq: 1, reason: "x".into() })),
        ("agent_request", Kind::AgentRequest(v1::AgentRequest { topic: "q".into(), ..Default::default() })),
        ("respond", Kind::Respond(v1::Respond { token: 1, ..Default::default() })),
        (
            "open_vote",
            Kind::OpenVote(v1::OpenVote {
                vote_id: "v".into(),
                options: vec!["a".into(), "b".into()],
                participants: Some(v1::open_vote::Participants::Count(1)),
                ..Default::default()
            }),
        ),
        (
            "cast_ballot",
            Kind::CastBallot(v1::CastBallot {
                vote_id: "v".into(),
                choice: Some(v1::cast_ballot::Choice::Option("a".into())),
                ..Default::default()
            }),
        ),
        ("join_group", Kind::JoinGroup(v1::JoinGroup { group_id: "g".into() })),
        ("leave_group", Kind::LeaveGroup(v1::LeaveGroup { group_id: "g".into(), forget_state: true })),
        (
            "context_write",
            Kind::ContextWrite(v1::ContextWrite {
                key: "k".into(),
                op: Some(v1::context_write::Op::SetJson("{}".into())),
                ..Default::default()
            }),
        ),
        ("submit_task", Kind::SubmitTask(v1::SubmitTask { r#type: "tool".into(), ..Default::default() })),
        ("task_work", Kind::TaskWork(v1::TaskWork { types: vec!["tool".into()], max_in_flight: 1 })),
        ("stop_task_work", Kind::StopTaskWork(v1::StopTaskWork {})),
        ("claim_task", Kind::ClaimTask(v1::ClaimTask { types: vec!["tool".into()] })),
        ("start_task", Kind::StartTask(v1::StartTask { id: "t".into(), attempt: 1 })),
        ("complete_task", Kind::CompleteTask(v1::CompleteTask { id: "t".into(), attempt: 1, output_json: "1".into() })),
        ("fail_task", Kind::FailTask(v1::FailTask { id: "t".into(), attempt: 1, error: "x".into() })),
        ("round_answer", Kind::RoundAnswer(v1::RoundAnswer { series: "s".into(), round: 1, output_json: "1".into() })),
        ("subscribe", Kind::Subscribe(v1::Subscribe { pattern: "m.>".into(), ..Default::default() })),
        ("unsubscribe", Kind::Unsubscribe(v1::Unsubscribe { pattern: "m.>".into() })),
    ];
    kinds.into_iter().map(|(name, kind)| (name, v1::ClientMessage { request_id: 7, kind: Some(kind) })).collect()
}

#[test]
fn the_session_frame_corpus_holds_every_message_kind_and_passes() {
    let dir = corpus("session_frame");
    // `LOCKSTEP_WRITE_SEEDS=1` writes the seeds (after a message kind is added).
    let write = std::env::var_os("LOCKSTEP_WRITE_SEEDS").is_some();
    for (name, message) in seeds() {
        let path = dir.join(format!("seed-{name}"));
        let bytes = message.encode_to_vec();
        if write {
            std::fs::write(&path, &bytes).unwrap();
        }
        let kept = std::fs::read(&path)
            .unwrap_or_else(|e| panic!("{} ({e}): run with LOCKSTEP_WRITE_SEEDS=1", path.display()));
        assert_eq!(kept, bytes, "{} is the seed of kind {name}", path.display());
    }
    let inputs = inputs("session_frame");
    assert!(inputs.len() >= seeds().len());
    for (path, data) in inputs {
        eprintln!("{}", path.display());
        fuzz::session_frame(&data);
    }
}

#[test]
fn the_engine_steps_corpus_passes() {
    let inputs = inputs("engine_steps");
    assert!(!inputs.is_empty(), "the corpus is kept in the repository");
    for (path, data) in inputs {
        eprintln!("{}", path.display());
        fuzz::engine_steps(&data);
    }
}
