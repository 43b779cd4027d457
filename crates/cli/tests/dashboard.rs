//! End-to-end: the web dashboard on the HTTP listener, against a real `lockstep serve` with real
//! agents.
//!
//! * Over plain HTTP/1.1: the page and its assets, the live update stream (server-sent events)
//!   and what a snapshot holds, the operator actions with and without the admin token (carried
//!   out and audited like the Admin service's), and the listener's limits — request body size,
//!   event streams, connections — each with what a client gets past it, counted in `/metrics`.
//! * In a real headless Chromium (Debian's package, driven by `tests/browser/dashboard.mjs` with
//!   playwright-core): what the page shows, a pause through the page checked through the server,
//!   and the time the page takes to apply one live update of 1,000 agents. Screenshots are saved
//!   under the test's target directory. Without Chromium or the driver installed the browser
//!   test says so and passes, except with CI=true, where `scripts/test.sh` installs both.

mod support;

use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::Duration;

use bytes::Bytes;
use lockstep_client::{Participants, RoundParticipants, RoundSeriesSpec};
use serde_json::Value;
use support::{finish_within, opts, Server};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;

const TOKEN: &str = "dash-secret";

/// One request over a connection of its own: (status code, lower-case head, body).
async fn request(addr: &str, method: &str, path: &str, headers: &[(&str, &str)], body: &[u8]) -> (u16, String, String) {
    let mut stream = TcpStream::connect(addr).await.unwrap();
    let mut head = format!("{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n");
    for (k, v) in headers {
        head.push_str(&format!("{k}: {v}\r\n"));
    }
    head.push_str(&format!("Content-Length: {}\r\n\r\n", body.len()));
    stream.write_all(head.as_bytes()).await.unwrap();
    // A refused body may be cut short by the server: what matters is its answer.
    let _ = stream.write_all(body).await;
    let mut response = Vec::new();
    tokio::time::timeout(Duration::from_secs(20), stream.read_to_end(&mut response)).await.unwrap().unwrap();
    parse(&String::from_utf8_lossy(&response))
}

fn parse(response: &str) -> (u16, String, String) {
    let (head, body) = response.split_once("\r\n\r\n").expect("a head and a body");
    let status = head.split(' ').nth(1).and_then(|code| code.parse().ok()).expect("a status code");
    (status, head.to_lowercase(), body.to_owned())
}

async fn post(addr: &str, action: &str, token: Option<&str>, body: &str) -> (u16, Value) {
    let bearer = token.map(|t| format!("Bearer {t}"));
    let mut headers = vec![("Content-Type", "application/json"), ("X-Lockstep-Actor", "web-op")];
    if let Some(b) = &bearer {
        headers.push(("Authorization", b));
    }
    let (status, _, body) = request(addr, "POST", &format!("/dashboard/api/{action}"), &headers, body.as_bytes()).await;
    (status, serde_json::from_str(&body).unwrap_or_else(|e| panic!("{e}: {body}")))
}

/// A request on a kept-alive connection and its answer: (status, lower-case head, body by
/// `Content-Length`, or to the end when the server closes).
async fn exchange(stream: &mut BufReader<TcpStream>, path: &str) -> (u16, String, String) {
    let request = format!("GET {path} HTTP/1.1\r\nHost: x\r\n\r\n");
    stream.get_mut().write_all(request.as_bytes()).await.unwrap();
    let read = async {
        let mut head = String::new();
        loop {
            let mut line = String::new();
            stream.read_line(&mut line).await.unwrap();
            if line == "\r\n" || line.is_empty() {
                break;
            }
            head.push_str(&line);
        }
        let head = head.to_lowercase();
        let length =
            head.lines().find_map(|l| l.strip_prefix("content-length:")).map(|n| n.trim().parse::<usize>().unwrap());
        let mut body = vec![0; length.unwrap_or(0)];
        stream.read_exact(&mut body).await.unwrap();
        let status = head.split(' ').nth(1).and_then(|c| c.parse().ok()).expect("a status code");
        (status, head, String::from_utf8(body).unwrap())
    };
    tokio::time::timeout(Duration::from_secs(20), read).await.expect("an answer")
}

/// An open event stream: the connection, read line by line.
struct Events(BufReader<TcpStream>);

impl Events {
    async fn open(addr: &str, query: &str) -> Events {
        let mut stream = TcpStream::connect(addr).await.unwrap();
        let head =
            format!("GET /dashboard/events?{query} HTTP/1.1\r\nHost: {addr}\r\nAccept: text/event-stream\r\n\r\n");
        stream.write_all(head.as_bytes()).await.unwrap();
        Events(BufReader::new(stream))
    }

    /// The response head, up to the empty line.
    async fn head(&mut self) -> String {
        let mut head = String::new();
        loop {
            let mut line = String::new();
            tokio::time::timeout(Duration::from_secs(20), self.0.read_line(&mut line)).await.unwrap().unwrap();
            if line == "\r\n" || line.is_empty() {
                return head.to_lowercase();
            }
            head.push_str(&line);
        }
    }

    /// The next `snapshot` event's data (chunked transfer framing lines are skipped).
    async fn snapshot(&mut self) -> Value {
        let mut named = false;
        loop {
            let mut line = String::new();
            tokio::time::timeout(Duration::from_secs(20), self.0.read_line(&mut line)).await.unwrap().unwrap();
            assert!(!line.is_empty(), "the stream ended");
            if line.trim_end() == "event: snapshot" {
                named = true;
            } else if let (true, Some(data)) = (named, line.strip_prefix("data: ")) {
                return serde_json::from_str(data.trim_end()).unwrap();
            }
        }
    }
}

fn sample(text: &str, name: &str) -> Option<f64> {
    text.lines().find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.parse().ok())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_dashboard_its_update_stream_its_actions_and_the_listeners_limits() {
    let server = Server::start(&["--http-listen", "127.0.0.1:0", "--admin-token", TOKEN]);
    let http = server.http_addr.clone();
    let client = server.client().await;
    let alpha = client.register(opts("alpha", "trader")).await.unwrap();
    alpha.update_state(&serde_json::json!({"pnl": 12.5, "note": "x".repeat(100)})).await.unwrap();
    let _beta = client.register(opts("beta", "trader")).await.unwrap();

    // The page, its assets, and / leading to it; nothing loaded from elsewhere.
    let (status, head, _) = request(&http, "GET", "/", &[], b"").await;
    assert_eq!(status, 303, "{head}");
    assert!(head.contains("location: /dashboard"), "{head}");
    let (status, head, page) = request(&http, "GET", "/dashboard", &[], b"").await;
    assert_eq!(status, 200);
    assert!(head.contains("content-type: text/html"), "{head}");
    assert!(head.contains("content-security-policy: default-src 'self'"), "{head}");
    assert!(page.contains("/dashboard/app.js") && page.contains("/dashboard/app.css"), "{page}");
    assert!(!page.contains("http://") && !page.contains("https://"), "no address of elsewhere in the page");
    let (status, head, script) = request(&http, "GET", "/dashboard/app.js", &[], b"").await;
    assert_eq!(status, 200);
    assert!(head.contains("content-type: text/javascript"), "{head}");
    assert!(script.contains("EventSource"), "live updates by server-sent events");
    assert_eq!(request(&http, "GET", "/dashboard/app.css", &[], b"").await.0, 200);

    // The update stream: snapshots with the agents, their state fields cut, and the counters.
    let mut events = Events::open(&http, "fields=pnl,note").await;
    let head = events.head().await;
    assert!(head.starts_with("http/1.1 200"), "{head}");
    assert!(head.contains("content-type: text/event-stream"), "{head}");
    let first = events.snapshot().await;
    assert_eq!(first["namespace"], "default");
    let ids: Vec<&str> = first["agents"].as_array().unwrap().iter().map(|a| a["id"].as_str().unwrap()).collect();
    assert_eq!(ids, ["alpha", "beta"]);
    let row = &first["agents"][0];
    assert_eq!((row["status"].as_str(), row["paused"].as_bool()), (Some("active"), Some(false)), "{row}");
    assert_eq!(row["fields"][0], "12.5");
    assert_eq!(row["fields"][1].as_str().unwrap().chars().count(), 48, "values are cut: {row}");
    let next = events.snapshot().await;
    assert!(next["seq"].as_u64() > first["seq"].as_u64(), "updates keep coming: {} then {}", first["seq"], next["seq"]);
    // An open tick round waits, like a sync point, for whom it names.
    let both = RoundParticipants::Agents(vec!["alpha".into(), "beta".into()]);
    client.rounds().create(&RoundSeriesSpec::new("tick", both, 600_000, "tick.merged")).await.unwrap();
    client.rounds().open("tick", &serde_json::json!({}), 1).await.unwrap();
    let round = async {
        loop {
            let s = events.snapshot().await;
            if let Some(r) = s["sync_points"].as_array().unwrap().iter().find(|p| p["kind"] == "round") {
                return r.clone();
            }
        }
    };
    let round = tokio::time::timeout(Duration::from_secs(20), round).await.expect("the round is shown");
    assert_eq!(round["id"], "tick #1");
    assert_eq!((round["arrived"].as_u64(), round["required"].as_u64()), (Some(0), Some(2)), "{round}");
    assert_eq!(round["missing"], serde_json::json!(["alpha", "beta"]));
    // A view that cannot be: 400, saying why.
    let (status, _, body) = request(&http, "GET", "/dashboard/events?namespace=a%20b", &[], b"").await;
    assert_eq!(status, 400, "{body}");
    assert!(body.contains("BAD_REQUEST") && body.contains("namespace"), "{body}");

    // Actions need the token, and JSON; the body is bounded.
    let pause = r#"{"agent_id": "alpha"}"#;
    let (status, answer) = post(&http, "pause", None, pause).await;
    assert_eq!((status, answer["reason"].as_str()), (401, Some("ADMIN_TOKEN_MISSING")), "{answer}");
    let (status, answer) = post(&http, "pause", Some("wrong"), pause).await;
    assert_eq!((status, answer["reason"].as_str()), (403, Some("ADMIN_TOKEN_WRONG")), "{answer}");
    let form = [("Content-Type", "text/plain"), ("Authorization", "Bearer dash-secret")];
    let (status, _, body) = request(&http, "POST", "/dashboard/api/pause", &form, pause.as_bytes()).await;
    assert_eq!(status, 415, "a form from another site cannot act: {body}");
    // A body over 16 KiB is refused: 413 (read as far as the server sends it: it closes without
    // reading the rest, which may end the connection with a reset after the answer).
    let mut stream = TcpStream::connect(&http).await.unwrap();
    let big = format!(r#"{{"reason": "{}"}}"#, "x".repeat(20 * 1024));
    let head = format!(
        "POST /dashboard/api/emergency-stop HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\
         Content-Type: application/json\r\nAuthorization: Bearer {TOKEN}\r\nContent-Length: {}\r\n\r\n{big}",
        big.len()
    );
    let _ = stream.write_all(head.as_bytes()).await;
    let mut response = Vec::new();
    let read = async {
        let mut buf = [0; 4096];
        while let Ok(n @ 1..) = stream.read(&mut buf).await {
            response.extend_from_slice(&buf[..n]);
        }
    };
    tokio::time::timeout(Duration::from_secs(20), read).await.expect("an answer");
    let (status, _, body) = parse(&String::from_utf8_lossy(&response));
    assert_eq!(status, 413, "{body}");
    let (status, answer) = post(&http, "pause", Some(TOKEN), r#"{"agent": "alpha"}"#).await;
    assert_eq!((status, answer["reason"].as_str()), (400, Some("BAD_REQUEST")), "{answer}");
    let (status, answer) = post(&http, "pause", Some(TOKEN), r#"{"agent_id": "nobody"}"#).await;
    assert_eq!(status, 404, "{answer}");
    assert_eq!(post(&http, "explode", Some(TOKEN), "{}").await.0, 404);
    let admin = client.admin(Some(TOKEN), None).unwrap();
    assert!(admin.status().await.unwrap().paused.is_empty(), "nothing refused was carried out");

    // With the token: carried out and audited like the Admin service's own calls.
    let (status, answer) = post(&http, "pause", Some(TOKEN), pause).await;
    assert_eq!(status, 200, "{answer}");
    assert!(answer["detail"].as_str().unwrap().contains("paused"), "{answer}");
    let paused: Vec<String> = admin.status().await.unwrap().paused.into_iter().map(|a| a.agent_id).collect();
    assert_eq!(paused, ["alpha"]);
    let audit = admin.audit_log(10).await.unwrap().entries;
    let entry = audit.last().unwrap();
    assert_eq!(
        (entry.actor.as_str(), entry.command.as_str(), entry.target.as_str()),
        ("web-op", "pause_agent", "alpha")
    );
    // The page is told within an update or two.
    let shown = async {
        loop {
            let s = events.snapshot().await;
            if s["agents"][0]["paused"] == true && s["audit"].as_array().unwrap().iter().any(|e| e["actor"] == "web-op")
            {
                return s;
            }
        }
    };
    tokio::time::timeout(Duration::from_secs(20), shown).await.expect("the pause reaches the page");
    assert_eq!(post(&http, "resume", Some(TOKEN), pause).await.0, 200);
    assert_eq!(post(&http, "restart", Some(TOKEN), pause).await.0, 200);
    let (status, answer) = post(&http, "emergency-stop", Some(TOKEN), r#"{"reason": "drill"}"#).await;
    assert_eq!(status, 200, "{answer}");
    assert!(admin.status().await.unwrap().emergency_stop);
    assert_eq!(post(&http, "resume-all", Some(TOKEN), "{}").await.0, 200);
    assert!(!admin.status().await.unwrap().emergency_stop);

    // Event streams are bounded: past the limit, 503 saying so.
    let mut streams = vec![events];
    for _ in 1..16 {
        let mut s = Events::open(&http, "").await;
        assert!(s.head().await.starts_with("http/1.1 200"));
        streams.push(s);
    }
    let (status, _, body) = request(&http, "GET", "/dashboard/events", &[], b"").await;
    assert_eq!(status, 503, "{body}");
    assert!(body.contains("TOO_MANY_STREAMS"), "{body}");
    drop(streams);

    // Connections are bounded: past the limit, 503 and closed, while those admitted still work.
    // (The streams dropped above give their slots back as the server notices, so connections are
    // opened, each kept alive after a first request, until one is refused.)
    let mut held = Vec::new();
    let refusal = loop {
        assert!(held.len() <= 64, "{} connections admitted at once", held.len());
        let mut stream = BufReader::new(TcpStream::connect(&http).await.unwrap());
        let (status, head, body) = exchange(&mut stream, "/healthz").await;
        if status == 503 {
            break (head, body);
        }
        assert_eq!(status, 200, "{head}");
        held.push(stream);
    };
    assert!(held.len() >= 48, "only {} connections admitted", held.len());
    assert!(refusal.0.contains("retry-after: 1"), "{refusal:?}");
    assert!(refusal.1.contains("too many HTTP connections"), "{refusal:?}");
    let (status, _, body) = exchange(held.last_mut().unwrap(), "/healthz").await;
    assert_eq!((status, body.as_str()), (200, "ok\n"), "an admitted connection is served on");
    drop(held);
    let metrics = async {
        loop {
            let mut stream = TcpStream::connect(&http).await.unwrap();
            stream.write_all(b"GET /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").await.unwrap();
            let mut response = String::new();
            let _ = stream.read_to_string(&mut response).await;
            if response.starts_with("HTTP/1.1 200") {
                return parse(&response).2;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    };
    let text = tokio::time::timeout(Duration::from_secs(20), metrics).await.expect("served again");
    assert!(sample(&text, "lockstep_http_connections_refused_total").is_some_and(|n| n >= 1.0), "{text}");
    assert_eq!(sample(&text, "lockstep_dashboard_streams_refused_total"), Some(1.0), "{text}");
    assert!(sample(&text, "lockstep_dashboard_updates_coalesced_total").is_some(), "{text}");
    assert!(sample(&text, "lockstep_http_clients_dropped_total").is_some(), "{text}");
}

/// Where the browser driver lives.
fn driver_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests").join("browser")
}

/// Why the browser test cannot run here, if it cannot.
fn browser_missing() -> Option<String> {
    let chromium = std::env::var("CHROMIUM").unwrap_or_else(|_| "/usr/bin/chromium".into());
    if !std::path::Path::new(&chromium).exists() {
        return Some(format!("no Chromium at {chromium} (apt-get install chromium)"));
    }
    if !driver_dir().join("node_modules").join("playwright-core").exists() {
        return Some(format!("no playwright-core (npm ci in {})", driver_dir().display()));
    }
    None
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_dashboard_in_a_real_browser() {
    if support::reworded() {
        // The reworded-error run is about error reasons: the first test covers the dashboard's.
        eprintln!("the browser test runs once, not again with reworded errors");
        return;
    }
    if let Some(why) = browser_missing() {
        assert!(std::env::var("CI").as_deref() != Ok("true"), "with CI=true the browser test must run: {why}");
        eprintln!("the browser test does not run here: {why}; scripts/test.sh installs both");
        return;
    }
    // Heartbeats every 3 s: a thousand agents' heartbeats stay light for a busy 2-core machine.
    let server =
        Server::start(&["--http-listen", "127.0.0.1:0", "--admin-token", TOKEN, "--heartbeat-interval-ms", "3000"]);
    let client = server.client().await;
    let alpha = client.register(opts("alpha", "trader")).await.unwrap();
    alpha.update_state(&serde_json::json!({"pnl": 12.5})).await.unwrap();
    let _beta = client.register(opts("beta", "trader")).await.unwrap();
    let _gamma = client.register(opts("gamma", "risk")).await.unwrap();
    // An audit entry before the page opens.
    let setup = client.admin(Some(TOKEN), Some("setup-op")).unwrap();
    setup.restart_agent("gamma").await.unwrap();
    // A sync point waiting for beta, which never arrives.
    let waiting = tokio::spawn(async move {
        let both = Participants::Agents(vec!["alpha".into(), "beta".into()]);
        alpha.sync("gate", both, Duration::from_secs(300), Bytes::new()).await
    });
    // 1,000 agents in a namespace of their own, with a state field each.
    let big = client.with_namespace("big");
    let mut agents = Vec::new();
    for chunk in (0..1000).collect::<Vec<_>>().chunks(100) {
        let joined = futures::future::join_all(chunk.iter().map(|i| {
            let big = big.clone();
            async move {
                let agent = big.register(opts(&format!("agent-{i:04}"), "worker")).await.unwrap();
                agent.update_state(&serde_json::json!({"pnl": i})).await.unwrap();
                agent
            }
        }))
        .await;
        agents.extend(joined);
    }

    let shots = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("dashboard-screenshots");
    let child = Command::new("node")
        .arg(driver_dir().join("dashboard.mjs"))
        .current_dir(driver_dir())
        .env("DASHBOARD_URL", format!("http://{}", server.http_addr))
        .env("ADMIN_TOKEN", TOKEN)
        .env("SHOTS_DIR", &shots)
        .env("PAUSE_AGENT", "alpha")
        .env("SYNC_ID", "gate")
        .env("MISSING_AGENT", "beta")
        .env("AUDITED", "setup-op")
        .env("BIG_NAMESPACE", "big")
        .env("BIG_AGENTS", "1000")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("node runs");
    let output =
        tokio::task::spawn_blocking(move || finish_within(child, Duration::from_secs(240), "the browser test"))
            .await
            .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "the browser test failed:\n{stderr}\n{stdout}");
    let result: Value = serde_json::from_str(stdout.lines().last().unwrap()).unwrap();
    eprintln!("browser test: {result:#}");

    // What the page showed.
    assert_eq!(result["agent_rows"], 3, "{result}");
    let row = result["agent_row"].as_str().unwrap();
    assert!(row.contains("alpha") && row.contains("trader") && row.contains("12.5"), "{row}");
    let sync = result["sync_row"].as_str().unwrap();
    assert!(sync.contains("gate") && sync.contains("1/2") && sync.contains("beta"), "{sync}");
    assert_eq!(result["live"], "live");
    assert_eq!(result["filtered_rows"], 1);
    assert!(result["refused_notice"].as_str().unwrap().contains("admin token"), "{result}");
    let paused_row = result["paused_row"].as_str().unwrap();
    assert!(paused_row.contains("paused") && paused_row.contains("Resume"), "{paused_row}");
    assert!(result["done_notice"].as_str().unwrap().contains("paused"), "{result}");
    assert!(result["audit_row"].as_str().unwrap().contains("pause_agent"), "{result}");
    assert_eq!(result["page_errors"], serde_json::json!([]), "{result}");
    assert_eq!(result["external_requests"], serde_json::json!([]), "nothing fetched from elsewhere");

    // Its effect, through the server: alpha paused, by the page's actor.
    let paused: Vec<String> = setup.status().await.unwrap().paused.into_iter().map(|a| a.agent_id).collect();
    assert_eq!(paused, ["alpha"]);
    let audit = setup.audit_log(10).await.unwrap().entries;
    assert!(
        audit.iter().any(|e| e.actor == "browser-test" && e.command == "pause_agent" && e.target == "alpha"),
        "{audit:?}"
    );

    // 1,000 agents: every row shown, each update applied within 200 ms.
    assert_eq!(result["big_rows"], 1000);
    let applies: Vec<f64> = result["apply_ms"].as_array().unwrap().iter().map(|v| v.as_f64().unwrap()).collect();
    assert_eq!(applies.len(), 5, "{result}");
    assert!(result["performance_measures"].as_u64().unwrap() >= 5);
    let worst = applies.iter().copied().fold(0.0, f64::max);
    let all_changed = result["all_changed_ms"].as_f64().unwrap();
    eprintln!(
        "applying one live update of 1,000 agents: {applies:.1?} ms (worst {worst:.1} ms); every row changed: \
         {all_changed:.1} ms; the first render of the grid: {:.1} ms",
        result["first_render_ms"].as_f64().unwrap_or(f64::NAN)
    );
    assert!(worst <= 200.0, "an update of 1,000 agents took {worst:.1} ms to apply: {applies:?}");
    assert!(all_changed <= 200.0, "an update changing all 1,000 agents took {all_changed:.1} ms to apply");
    for shot in result["screenshots"].as_array().unwrap() {
        assert!(std::path::Path::new(shot.as_str().unwrap()).exists(), "{shot}");
    }
    eprintln!("screenshots in {}", shots.display());
    waiting.abort();
    drop(agents);
}
