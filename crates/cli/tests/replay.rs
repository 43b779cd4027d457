//! End-to-end: a real server records every engine input of a run (`serve --record-inputs`), and
//! the recording replayed into a fresh engine on the manual clock produces the same outputs and
//! frames at every turn and ends in the same state the live server reported.

mod support;

use std::time::Duration;

use lockstep_client::{Participants, WatchTarget};
use lockstep_core::record::{Replay, Step};
use lockstep_core::{AdminAction, AgentQuery, Config, Engine, Input};
use serde_json::json;
use support::{opts, ScratchDir, Server};

const T: Duration = Duration::from_secs(10);

#[tokio::test]
async fn a_recorded_run_replays_to_the_same_outputs_and_state() {
    let dir = ScratchDir::new("replay");
    let recording = dir.join("inputs.jsonl");
    let mut server = Server::start(&["--record-inputs", recording.to_str().unwrap()]);
    let client = server.client().await;
    let admin = client.admin(None, Some("alice")).unwrap();

    // Agents publish, share state, watch each other, meet at a barrier, answer a command.
    let a = client.register(opts("a", "worker").interests(["t.*"])).await.unwrap();
    let b = client.register(opts("b", "worker")).await.unwrap();
    let c = client.register(opts("c", "watcher")).await.unwrap();
    c.watch_state(WatchTarget::Role("worker".into())).await.unwrap();
    let mut registry = client.watch_registry().await.unwrap();
    let mut deliveries = a.deliveries().unwrap();
    for i in 0..5u8 {
        b.publish_confirmed("t.x", vec![i]).await.unwrap();
        b.update_state(&json!({ "i": i })).await.unwrap();
    }
    for _ in 0..5 {
        tokio::time::timeout(T, deliveries.recv()).await.unwrap().unwrap();
    }
    let both = || Participants::Agents(vec!["a".into(), "b".into()]);
    let (ra, rb) = tokio::join!(a.sync("round", both(), T, &b"pa"[..]), b.sync("round", both(), T, &b"pb"[..]));
    assert_eq!(ra.unwrap().arrival_order, rb.unwrap().arrival_order);

    let mut commands = a.commands().unwrap();
    tokio::spawn(async move {
        while let Some(cmd) = commands.recv().await {
            let _ = cmd.reply(Ok(json!({ "done": true }))).await;
        }
    });
    let answer = admin.send_command("a", "rebalance", &json!({ "w": 1 }), T).await.unwrap();
    assert_eq!(answer, json!({ "done": true }));
    assert!(admin.pause_agent("b").await.unwrap().contains("paused"));
    assert!(admin.resume_agent("b").await.unwrap().contains("resumed"));

    // A point that would wait for someone who never comes, released by an operator.
    let waiting = {
        let c = c.clone();
        tokio::spawn(
            async move { c.sync("never", Participants::Agents(vec!["c".into(), "d".into()]), T, &b""[..]).await },
        )
    };
    support::eventually(T, || async { client.sync_status("never").await.is_ok() }).await;
    admin.force_complete_sync("never").await.unwrap();
    assert!(waiting.await.unwrap().unwrap().forced);
    assert_eq!(admin.cleanup_sync_points().await.unwrap(), 2);
    assert!(registry.message().await.unwrap().is_some());
    b.close().await.unwrap();

    // What the live server reports before it stops.
    let live_state = client.get_state("a").await.unwrap();
    let live_agents: Vec<(String, i32)> =
        client.list_agents(Default::default()).await.unwrap().into_iter().map(|a| (a.agent_id, a.status)).collect();
    let live_audit = admin.audit_log(100).await.unwrap().entries.len();
    // The agents stay connected until the server stops: nothing more enters the engine.
    assert!(server.terminate(T), "the server stops cleanly");
    drop((a, c, registry, admin, client));

    // Replay into a fresh engine with the server's configuration.
    let text = std::fs::read_to_string(&recording).unwrap();
    let steps: Vec<Step> = text.lines().map(|l| serde_json::from_str(l).expect("each line is a step")).collect();
    let mut engine = Engine::new(Config::default());
    let mut replay = Replay::new(&mut engine);
    for step in &steps {
        replay.step(step).unwrap_or_else(|d| panic!("the replay diverged: {d}"));
    }
    let inputs: Vec<&Input> = steps
        .iter()
        .filter_map(|s| match s {
            Step::Input { input, .. } => Some(input),
            _ => None,
        })
        .collect();
    let admin_actions = |wanted: fn(&AdminAction) -> bool| {
        inputs.iter().filter(|i| matches!(i, Input::Admin { action, .. } if wanted(action))).count()
    };
    assert_eq!(admin_actions(|a| matches!(a, AdminAction::SendCommand { .. })), 1);
    assert_eq!(admin_actions(|a| matches!(a, AdminAction::PauseAgent { .. } | AdminAction::ResumeAgent { .. })), 2);
    assert_eq!(admin_actions(|a| matches!(a, AdminAction::ForceCompleteSync { .. })), 1);
    assert_eq!(admin_actions(|a| matches!(a, AdminAction::CleanupSyncPoints { .. })), 1);
    assert!(steps.iter().any(|s| matches!(s, Step::Frame { frame: Some(_), .. })), "frames were recorded");
    // Event times are checked against the recorded server's clock in the replay too.
    assert!(matches!(steps.first(), Some(Step::ClockOrigin { unix_ms }) if *unix_ms > 0), "{:?}", steps.first());

    // The same state as the live server's.
    let replayed_state = engine.get_state("", "a").unwrap();
    assert_eq!((replayed_state.0, replayed_state.1), live_state);
    let replayed_agents: Vec<(String, i32)> = engine
        .list_agents("", &AgentQuery::default())
        .unwrap()
        .into_iter()
        .map(|a| (a.agent_id, lockstep_proto::convert::status_to_wire(a.status) as i32))
        .collect();
    assert_eq!(replayed_agents, live_agents);
    assert_eq!(engine.control().audit().entries().count(), live_audit);

    // The comparison has teeth: the same run with one resume token changed diverges.
    let mut tampered = steps.clone();
    let first_register = tampered.iter_mut().find_map(|s| match s {
        Step::Input { input: Input::Register { new_token, .. }, .. } => Some(new_token),
        _ => None,
    });
    *first_register.expect("the recording has registrations") = "another-token".into();
    let mut engine = Engine::new(Config::default());
    let mut replay = Replay::new(&mut engine);
    let diverged = tampered.iter().try_for_each(|s| replay.step(s)).expect_err("a changed input shows");
    assert!(diverged.recorded.contains("resume_token"), "{diverged}");
}
