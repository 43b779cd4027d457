//! The fuzz targets' functions: each takes the fuzzer's bytes and panics on a violated
//! invariant (a panic inside the engine or the decoder is a finding too). `fuzz/fuzz_targets/`
//! wraps them for libFuzzer; `tests/corpus.rs` replays the kept corpus through them.

use bytes::Bytes;
use lockstep_core::{Config, ConnId, Engine, Frame, Input, Output, RegisterRequest, Reply};
use lockstep_proto::convert::{self, SessionMessage};
use lockstep_proto::session::RawClientMessage;
use lockstep_proto::v1;
use proptest::strategy::{Strategy, ValueTree};
use proptest::test_runner::{RngAlgorithm, TestRng, TestRunner};
use prost::Message as _;

// The engine's step vocabulary and its checked run are those of the engine's robustness property
// test, included rather than written twice. (Its `proptest!` test is only compiled in test
// builds, which this library has none of.)
#[allow(dead_code, unreachable_pub)]
#[path = "../../core/tests/robustness.rs"]
mod robustness;

/// The most items the server puts in one frame (`lockstep_server::driver::MAX_BATCH`).
const MAX_BATCH: usize = 256;

/// The session the fuzzed message arrives on.
const CONN: ConnId = ConnId(1);

/// One client message of a registered session, as the bytes of its gRPC message, taken the way
/// the server's session reader takes it ([`RawClientMessage::decode`], then
/// [`convert::session_message`]) and handed to a real engine. Checks that:
///
/// * whatever decodes re-encodes to bytes that decode to the same message;
/// * a message that does not decode, or decodes to nothing valid, is answered with an error under
///   its `request_id` (the session goes on);
/// * every frame the engine then sends the session encodes within the transport's message cap.
pub fn session_frame(data: &[u8]) {
    let mut engine = Engine::new(Config::default());
    engine.track_changes();
    let register = RegisterRequest { agent_id: "fuzz".into(), role: "fuzz".into(), ..Default::default() };
    engine.handle(0, Input::Register { conn: CONN, request: register, new_token: "t".into(), connection: 0 });
    drain(&mut engine);
    let raw = RawClientMessage(Bytes::copy_from_slice(data));
    let (input, refused) = match raw.decode() {
        Ok(msg) => {
            let encoded = msg.encode_to_vec();
            let again = v1::ClientMessage::decode(encoded.as_slice()).expect("a re-encoded message decodes");
            assert_eq!(again.encode_to_vec(), encoded, "a decoded message survives a round trip");
            let request_id = msg.request_id;
            match convert::session_message(msg.kind) {
                Ok(SessionMessage::Request(request)) => (Input::Request { conn: CONN, request_id, request }, None),
                Ok(SessionMessage::Register(request)) => {
                    let input = Input::Register { conn: CONN, request, new_token: String::new(), connection: 0 };
                    (input, None)
                }
                Err(e) => (Input::Malformed { conn: CONN, request_id, reason: e.to_string() }, Some(request_id)),
            }
        }
        Err(u) => (Input::Malformed { conn: CONN, request_id: u.request_id, reason: u.reason }, Some(u.request_id)),
    };
    engine.handle(1, input);
    let frames = drain(&mut engine);
    if let Some(id) = refused {
        let answered = frames
            .iter()
            .any(|f| matches!(f, Frame::Reply { request_id, reply: Reply::Error(_) } if *request_id == id));
        assert!(answered, "an undecodable message is answered with an error under request id {id}: {frames:?}");
    }
    // Whatever it started (a sync point, a request, a lease), time running out ends cleanly. (In
    // a few jumps: the health sample's timer comes back forever.)
    for now in [1_000, 60_000, 3_600_000, 2 * 24 * 3_600_000] {
        while engine.next_deadline().is_some_and(|d| d <= now) {
            engine.handle_timeout(now);
            drain(&mut engine);
        }
    }
}

/// Commits the engine's turn and takes what it sends the session, checking every frame's size.
fn drain(engine: &mut Engine) -> Vec<Frame> {
    let cap = engine.config().limits.max_message_bytes();
    let mut out = engine.ready().committed();
    while let Some(output) = out.poll_output() {
        if let Output::Close(conn, _) = output {
            assert_eq!(conn, CONN, "only the fuzzed session exists");
        }
    }
    let mut frames = Vec::new();
    while let Some(frame) = out.next_frame(CONN, MAX_BATCH) {
        if let Some(message) = convert::server_message(frame.clone()) {
            assert!(message.encoded_len() <= cap, "a frame of {} bytes over the cap of {cap}", message.encoded_len());
        }
        frames.push(frame);
    }
    frames
}

/// Any sequence of engine steps, chosen by the fuzzer's bytes: the bytes seed the step
/// generators of the engine's robustness property test (valid and invalid requests, operators'
/// actions, disconnects, stalls, clock jumps, collectives, replica groups, context, tasks). The
/// run checks the engine's bounds after every step and that everyone was
/// answered once at the end; a violation panics with what was violated.
pub fn engine_steps(data: &[u8]) {
    let steps = steps_from(data);
    if std::env::var("LOCKSTEP_FUZZ_PRINT").is_ok() {
        for s in &steps {
            eprintln!("{s:?}");
        }
    }
    if let Err(e) = robustness::run(steps) {
        panic!("{e}");
    }
}

/// The steps `data` chooses: up to 120.
fn steps_from(data: &[u8]) -> Vec<robustness::Step> {
    // The fuzzer's bytes seed the generators' RNG (a 128-bit FNV-1a hash of them). Proptest's
    // pass-through RNG, which hands the bytes over one for one, does not fit these generators: a
    // union draws a value of every option up to the one it picks, so a sequence takes more bytes
    // than any input holds, and past the end it reads zeros, on which uniform draws retry forever.
    let mut seed = [0u8; 16];
    for (half, basis) in [(0usize, 0x6c62_272e_07bb_0142u64), (8, 0x62b8_2175_6295_c58d)] {
        let h = data.iter().fold(basis, |h, b| (h ^ u64::from(*b)).wrapping_mul(0x0000_0100_0000_01b3));
        seed[half..half + 8].copy_from_slice(&h.to_le_bytes());
    }
    let rng = TestRng::from_seed(RngAlgorithm::XorShift, &seed);
    let mut runner = TestRunner::new_with_rng(proptest::test_runner::Config::default(), rng);
    let strategy = proptest::collection::vec(robustness::step(), 1..120);
    strategy.new_tree(&mut runner).expect("the step strategy never rejects").current()
}
