//! End-to-end: request/reply between agents against a real `lockstep serve` on loopback.
//!
//! * A request goes to exactly one of the agents interested in its topic (never the requester),
//!   the next in turn, and its answer comes back as the reply.
//! * It fails at once when nobody can answer (NO_RESPONDERS), when its responder leaves
//!   (REQUEST_ABORTED), and at its deadline when the responder stays silent (REQUEST_TIMEOUT, naming
//!   it); a late answer is refused (UNKNOWN_REQUEST) and the responder's session goes on.
//! * Payloads are held to `limits.max_payload_bytes` both ways.

mod support;

use std::time::{Duration, Instant};

use lockstep_client::{Agent, Error, IncomingRequests, Reason, Response};
use support::{opts, reworded, ScratchDir, Server};

const T: Duration = Duration::from_secs(10);

/// Answers every request `agent` gets with its payload behind `prefix`, until the session ends.
fn echo(agent: &Agent, prefix: &'static str) {
    let mut requests = agent.requests().expect("taken once");
    tokio::spawn(async move {
        while let Some(r) = requests.recv().await {
            let answer = [prefix.as_bytes(), &r.payload[..]].concat();
            let _ = r.respond_as(answer, "text/plain").await;
        }
    });
}

async fn next(requests: &mut IncomingRequests) -> lockstep_client::IncomingRequest {
    tokio::time::timeout(T, requests.recv()).await.expect("a request arrives").expect("session open")
}

#[tokio::test]
async fn a_request_is_answered_by_the_one_responder_and_never_by_the_requester() {
    let server = Server::start(&[]);
    let client = server.client().await;
    // The requester is interested in the topic too: it is never asked itself.
    let asker = client.register(opts("asker", "desk").interests(["quotes.>"])).await.unwrap();
    let pricer = client.register(opts("pricer", "pricer").interests(["quotes.*"])).await.unwrap();
    let other = client.register(opts("other", "news").interests(["news.>"])).await.unwrap();
    echo(&pricer, "price of ");
    let mut others = other.requests().unwrap();

    let r = asker.request_as("quotes.get", &b"ACME"[..], "text/plain", T).await.unwrap();
    assert_eq!(
        r,
        Response {
            payload: b"price of ACME"[..].into(),
            content_type: "text/plain".into(),
            responder: "pricer".into()
        }
    );
    let r = asker.request("quotes.get", &b"XYZ"[..], Duration::ZERO).await.unwrap();
    assert_eq!(&r.payload[..], b"price of XYZ", "a zero timeout takes the server's default");
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(others.try_recv().is_none(), "an agent not interested in the topic is never asked");
}

#[tokio::test]
async fn requests_rotate_over_the_responders_in_id_order() {
    let server = Server::start(&[]);
    let client = server.client().await;
    let asker = client.register(opts("asker", "desk")).await.unwrap();
    let a = client.register(opts("a", "pricer").interests(["quotes.>"])).await.unwrap();
    let b = client.register(opts("b", "pricer").interests(["quotes.>"])).await.unwrap();
    echo(&a, "a:");
    echo(&b, "b:");
    let mut responders = Vec::new();
    for i in 0..4 {
        let r = asker.request("quotes.get", format!("{i}"), T).await.unwrap();
        assert_eq!(String::from_utf8_lossy(&r.payload), format!("{}:{i}", r.responder));
        responders.push(r.responder);
    }
    assert_eq!(responders, ["a", "b", "a", "b"]);
}

#[tokio::test]
async fn no_responders_fails_at_once() {
    let server = Server::start(&[]);
    let client = server.client().await;
    let asker = client.register(opts("asker", "desk").interests(["quotes.>"])).await.unwrap();
    let started = Instant::now();
    // A timeout far beyond the test's patience: the refusal cannot be a timeout.
    let err = asker.request("quotes.get", &b"ACME"[..], Duration::from_secs(600)).await.unwrap_err();
    assert!(started.elapsed() < T, "refused at once");
    assert!(matches!(err, Error::NoResponders(ref m) if reworded() || m.contains("quotes.get")), "{err:?}");
    assert_eq!((err.reason(), err.code()), (Some(Reason::NoResponders), tonic::Code::Unavailable));
    // A listener that does not answer requests refuses them rather than leaving the asker waiting.
    let _listener = client.register(opts("listener", "feed").interests(["quotes.>"])).await.unwrap();
    let err = asker.request("quotes.get", &b"ACME"[..], Duration::from_secs(600)).await.unwrap_err();
    assert!(matches!(err, Error::RequestRefused(_)), "{err:?}");
    assert_eq!(err.reason(), Some(Reason::RequestRefused));
}

#[tokio::test]
async fn a_silent_responder_times_out_by_name_and_its_late_answer_is_refused_cleanly() {
    let server = Server::start(&[]);
    let client = server.client().await;
    let asker = client.register(opts("asker", "desk")).await.unwrap();
    let slow = client.register(opts("slow", "pricer").interests(["quotes.>"])).await.unwrap();
    let mut requests = slow.requests().unwrap();
    let timeout = Duration::from_millis(300);
    let started = Instant::now();
    let (outcome, held) = tokio::join!(asker.request("quotes.get", &b"ACME"[..], timeout), next(&mut requests));
    let err = outcome.unwrap_err();
    assert!(started.elapsed() >= timeout, "not before its deadline");
    assert!(matches!(err, Error::RequestTimedOut(ref m) if reworded() || m.contains("'slow'")), "{err:?}");
    assert_eq!((err.reason(), err.code()), (Some(Reason::RequestTimeout), tonic::Code::DeadlineExceeded));
    assert_eq!((held.requester.as_str(), held.topic.as_str()), ("asker", "quotes.get"));

    let late = held.respond(&b"too late"[..]).await.unwrap_err();
    assert!(matches!(late, Error::NotFound(_)), "{late:?}");
    assert_eq!(late.reason(), Some(Reason::UnknownRequest));
    // The responder's session goes on: it answers the next request.
    let (outcome, r) = tokio::join!(asker.request("quotes.get", &b"XYZ"[..], T), async {
        next(&mut requests).await.respond(&b"42"[..]).await
    });
    r.unwrap();
    assert_eq!(outcome.unwrap().responder, "slow");
    assert!(slow.ended().is_none() && asker.ended().is_none());
}

#[tokio::test]
async fn a_responder_that_leaves_fails_the_request_it_holds_at_once() {
    let server = Server::start(&[]);
    let client = server.client().await;
    let asker = client.register(opts("asker", "desk")).await.unwrap();
    let leaver = client.register(opts("leaver", "pricer").interests(["quotes.>"])).await.unwrap();
    let mut requests = leaver.requests().unwrap();
    let started = Instant::now();
    let (outcome, ()) = tokio::join!(asker.request("quotes.get", &b"ACME"[..], Duration::from_secs(600)), async {
        let _held = next(&mut requests).await;
        leaver.clone().close().await.unwrap();
    });
    let err = outcome.unwrap_err();
    assert!(started.elapsed() < T, "failed when the responder left, not at the deadline");
    assert!(matches!(err, Error::RequestAborted(ref m) if reworded() || m.contains("'leaver'")), "{err:?}");
    assert_eq!((err.reason(), err.code()), (Some(Reason::RequestAborted), tonic::Code::Aborted));
}

#[tokio::test]
async fn payloads_are_held_to_the_payload_limit_both_ways() {
    let dir = ScratchDir::new("request-limits");
    let file = dir.join("lockstep.toml");
    std::fs::write(&file, "[limits]\nmax_payload_bytes = 1024\n").unwrap();
    let server = Server::start(&["--config", file.to_str().unwrap()]);
    let client = server.client().await;
    let asker = client.register(opts("asker", "desk")).await.unwrap();
    let pricer = client.register(opts("pricer", "pricer").interests(["quotes.>"])).await.unwrap();
    let mut requests = pricer.requests().unwrap();

    let err = asker.request("quotes.get", vec![0u8; 1025], T).await.unwrap_err();
    assert!(matches!(err, Error::TooLarge { setting: "limits.max_payload_bytes", limit: 1024, .. }), "{err:?}");
    // An answer over the limit is refused before it is sent: the requester, told nothing,
    // waits for its deadline.
    let timeout = Duration::from_millis(500);
    let (outcome, ()) = tokio::join!(asker.request("quotes.get", vec![0u8; 1024], timeout), async {
        let too_big = next(&mut requests).await.respond(vec![0u8; 1025]).await.unwrap_err();
        assert!(matches!(too_big, Error::TooLarge { limit: 1024, .. }), "{too_big:?}");
    });
    assert_eq!(outcome.unwrap_err().reason(), Some(Reason::RequestTimeout));
}
