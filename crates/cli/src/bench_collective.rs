//! The collectives rows of `lockstep bench`: allreduce (sum of f32) and broadcast among 8
//! participants, each in its own `lockstep bench-worker` process (as torch.distributed runs its
//! ranks), against the server in its own process.
//!
//! Each configuration runs twice: over the network path (every array and result through the
//! member's gRPC stream) and over the same-host shared-memory path (`--shm`: arrays and results in
//! /dev/shm files the server hands over, the stream carrying signals only).
//!
//! Each worker registers, then runs rounds back to back and times each call from its start to the
//! result in hand; a round's time is the slowest member's (until the last one holds the result).
//! Beside it: a plain memory copy of the same bytes in this process, and the server's resident
//! memory sampled during the 16 MiB rounds against the exchange's documented budget.

use std::time::{Duration, Instant};

use anyhow::Context;
use clap::Args;
use lockstep_client::{AgentOptions, Client, Collective, ReduceOp};
use serde::{Deserialize, Serialize};

/// `lockstep bench-worker` (hidden): one participant of the collectives benchmark.
#[derive(Args, Debug)]
pub struct WorkerArgs {
    #[arg(long)]
    addr: String,
    /// This worker's rank (its agent id is `bench-w<rank>`).
    #[arg(long)]
    rank: usize,
    #[arg(long)]
    members: usize,
    /// `allreduce` or `broadcast`.
    #[arg(long)]
    kind: String,
    /// Bytes per participant.
    #[arg(long)]
    bytes: usize,
    #[arg(long)]
    rounds: usize,
    #[arg(long, default_value_t = 3)]
    warmup: usize,
    /// A prefix making this run's collective ids unique.
    #[arg(long)]
    run: String,
    /// Ask for the shared-memory path.
    #[arg(long)]
    shm: bool,
}

/// What a worker prints: its time per round, in microseconds.
#[derive(Serialize, Deserialize)]
struct WorkerReport {
    us: Vec<u64>,
}

/// Runs one benchmark participant (the hidden `bench-worker` subcommand).
pub async fn worker(a: WorkerArgs) -> anyhow::Result<()> {
    let client = Client::connect(&a.addr).await?;
    let agent = client.register(AgentOptions::new(format!("bench-w{}", a.rank), "bench-worker")).await?;
    let ids: Vec<String> = (0..a.members).map(|r| format!("bench-w{r}")).collect();
    let data: Vec<f32> = (0..a.bytes / 4).map(|k| (k % 1024) as f32 * (a.rank as f32 + 1.0)).collect();
    let mut us = Vec::with_capacity(a.rounds);
    for round in 0..a.warmup + a.rounds {
        let c = Collective::agents(format!("{}-{round}", a.run), ids.clone())
            .timeout(Duration::from_secs(120))
            .shared_memory(a.shm);
        let start = Instant::now();
        let result = match a.kind.as_str() {
            "allreduce" => agent.allreduce(&c, &data, ReduceOp::Sum).await?,
            "broadcast" => agent.broadcast(&c, 0, &data).await?,
            other => anyhow::bail!("unknown kind {other}"),
        };
        let took = start.elapsed();
        anyhow::ensure!(result.len() == data.len(), "a result of {} elements, not {}", result.len(), data.len());
        if round >= a.warmup {
            us.push(took.as_micros() as u64);
        }
    }
    println!("{}", serde_json::to_string(&WorkerReport { us })?);
    agent.close().await?;
    Ok(())
}

/// One measured configuration.
pub struct Measured {
    pub scenario: String,
    pub members: usize,
    pub bytes: usize,
    /// Per round (slowest member), microseconds.
    pub rounds_us: Vec<u64>,
    /// The same bytes copied in memory here, median microseconds.
    pub memcpy_us: f64,
    /// Server resident memory (VmRSS): before, peak during.
    pub rss: Option<(u64, u64)>,
    /// The anonymous part of it (RssAnon: the server's own heap, without shared-memory pages it
    /// maps): before, peak during.
    pub anon: Option<(u64, u64)>,
}

fn quantile(sorted: &[u64], q: f64) -> u64 {
    if sorted.is_empty() {
        return 0;
    }
    sorted[((sorted.len() - 1) as f64 * q).round() as usize]
}

impl Measured {
    pub fn p(&self, q: f64) -> u64 {
        let mut s = self.rounds_us.clone();
        s.sort_unstable();
        quantile(&s, q).max(1)
    }

    /// Algorithm bandwidth at the median: bytes per participant / time, in MB/s.
    pub fn algbw_mb_s(&self) -> f64 {
        self.bytes as f64 / (self.p(0.5) as f64 / 1e6) / 1e6
    }

    pub fn note(&self) -> String {
        let mut note = format!(
            "{} B per participant, {} participant processes; algbw {:.0} MB/s at p50; memcpy of the same bytes {:.3} ms ({:.0} MB/s)",
            self.bytes,
            self.members,
            self.algbw_mb_s(),
            self.memcpy_us / 1000.0,
            self.bytes as f64 / (self.memcpy_us.max(0.001) / 1e6) / 1e6
        );
        if let Some((before, peak)) = self.rss {
            // The exchange's arrays plus, per member, one HTTP/2 stream window each way.
            let budget = lockstep_server::collective::budget_bytes(self.members)
                + 2 * self.members as u64 * lockstep_server::STREAM_WINDOW as u64;
            note.push_str(&format!(
                "; server RSS {:.1} MiB before, peak {:.1} MiB during (+{:.1} MiB; budget {:.0} MiB per collective)",
                before as f64 / 1048576.0,
                peak as f64 / 1048576.0,
                peak.saturating_sub(before) as f64 / 1048576.0,
                budget as f64 / 1048576.0
            ));
        }
        if let Some((before, peak)) = self.anon {
            note.push_str(&format!(
                "; of it anonymous (heap) {:.1} MiB before, peak {:.1} MiB (+{:.1} MiB)",
                before as f64 / 1048576.0,
                peak as f64 / 1048576.0,
                peak.saturating_sub(before) as f64 / 1048576.0
            ));
        }
        note
    }
}

/// Median time of copying `bytes` bytes in memory, microseconds.
fn memcpy_us(bytes: usize) -> f64 {
    let src = vec![1u8; bytes];
    let mut dst = vec![0u8; bytes];
    let reps = (256 * 1024 * 1024 / bytes.max(1)).clamp(5, 10_000);
    let mut times: Vec<f64> = (0..reps)
        .map(|_| {
            let t = Instant::now();
            dst.copy_from_slice(std::hint::black_box(&src));
            std::hint::black_box(&dst);
            t.elapsed().as_secs_f64() * 1e6
        })
        .collect();
    times.sort_by(f64::total_cmp);
    times[times.len() / 2]
}

/// The process's resident memory in all (VmRSS) and its anonymous part (RssAnon), bytes.
fn rss_of(pid: u32) -> Option<(u64, u64)> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let field = |name: &str| -> Option<u64> {
        let kb: u64 = status.lines().find_map(|l| l.strip_prefix(name))?.split_whitespace().next()?.parse().ok()?;
        Some(kb * 1024)
    };
    Some((field("VmRSS:")?, field("RssAnon:")?))
}

/// Runs `members` worker processes for one configuration and gathers their times.
pub async fn measure(addr: &str, server_pid: Option<u32>, p: &Plan) -> anyhow::Result<Measured> {
    let Plan { kind, members, bytes, rounds, warmup, shm } = *p;
    let run = format!("{kind}-{bytes}-{}-{}", if shm { "shm" } else { "net" }, std::process::id());
    let exe = std::env::current_exe()?;
    let mut children = Vec::new();
    for rank in 0..members {
        let child = std::process::Command::new(&exe)
            .args(["bench-worker", "--addr", addr, "--kind", kind, "--run", &run])
            .args(["--rank", &rank.to_string(), "--members", &members.to_string()])
            .args(["--bytes", &bytes.to_string(), "--rounds", &rounds.to_string()])
            .args(["--warmup", &warmup.to_string()])
            .args(shm.then_some("--shm"))
            .stdout(std::process::Stdio::piped())
            .spawn()
            .context("cannot start `lockstep bench-worker`")?;
        children.push(child);
    }
    let before = server_pid.and_then(rss_of);
    let (mut peak, mut peak_anon) = before.unwrap_or((0, 0));
    let waiting = tokio::task::spawn_blocking(move || {
        children.into_iter().map(std::process::Child::wait_with_output).collect::<Vec<_>>()
    });
    tokio::pin!(waiting);
    let outputs = loop {
        tokio::select! {
            outputs = &mut waiting => break outputs?,
            () = tokio::time::sleep(Duration::from_millis(5)) => {
                if let Some((rss, anon)) = server_pid.and_then(rss_of) {
                    peak = peak.max(rss);
                    peak_anon = peak_anon.max(anon);
                }
            }
        }
    };
    let mut per_worker = Vec::new();
    for out in outputs {
        let out = out?;
        anyhow::ensure!(out.status.success(), "a bench worker failed ({})", out.status);
        let report: WorkerReport = serde_json::from_slice(&out.stdout).context("a bench worker's report")?;
        per_worker.push(report.us);
    }
    let rounds_us = (0..rounds).map(|r| per_worker.iter().map(|w| w[r]).max().unwrap_or(0)).collect();
    let scenario = format!("{kind}-f32-{}-{}", human(bytes), if shm { "shm" } else { "net" });
    Ok(Measured {
        scenario,
        members,
        bytes,
        rounds_us,
        memcpy_us: memcpy_us(bytes),
        rss: before.map(|(b, _)| (b, peak)),
        anon: before.map(|(_, a)| (a, peak_anon)),
    })
}

fn human(bytes: usize) -> String {
    match bytes {
        b if b >= 1 << 20 => format!("{}MiB", b >> 20),
        b if b >= 1 << 10 => format!("{}KiB", b >> 10),
        b => format!("{b}B"),
    }
}

/// One configuration of the benchmark.
#[derive(Clone, Copy)]
pub struct Plan {
    pub kind: &'static str,
    pub members: usize,
    pub bytes: usize,
    pub rounds: usize,
    pub warmup: usize,
    /// Over the shared-memory path.
    pub shm: bool,
}

/// The configurations of the benchmark: 8 members at 1 KiB, 1 MiB and 16 MiB, each over the
/// network path and over shared memory, and (not with `--quick`) two members at 256 MiB each, the
/// largest array the issue asks to stream.
pub fn plan(quick: bool) -> Vec<Plan> {
    let r = |full: usize| if quick { (full / 10).max(3) } else { full };
    let p = |kind, members, bytes, rounds, warmup, shm| Plan { kind, members, bytes, rounds, warmup, shm };
    let mut plan = Vec::new();
    for shm in [false, true] {
        plan.extend([
            p("allreduce", 8, 1 << 10, r(300), 3, shm),
            p("allreduce", 8, 1 << 20, r(100), 3, shm),
            p("allreduce", 8, 16 << 20, r(20), 3, shm),
            p("broadcast", 8, 16 << 20, r(20), 3, shm),
        ]);
    }
    if !quick {
        plan.push(p("allreduce", 2, 256 << 20, 3, 1, false));
        plan.push(p("allreduce", 2, 256 << 20, 3, 1, true));
    }
    plan
}
