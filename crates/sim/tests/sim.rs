//! The whole-engine simulation (`lockstep_sim::world`) over many seeds: 100 by default (300 in the
//! README's test command, `scripts/test.sh`), `LOCKSTEP_SIM_SEEDS=N` for N seeds (from
//! `LOCKSTEP_SIM_FIRST_SEED`, default 0), or `LOCKSTEP_SIM_SEED=S` for one seed (what a failure
//! message says to run, with a trace of every event under `LOCKSTEP_SIM_TRACE=1`).

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::Instant;

use lockstep_sim::world;

fn env(name: &str) -> Option<u64> {
    std::env::var(name).ok().map(|v| v.parse().unwrap_or_else(|_| panic!("{name} must be a number, not {v:?}")))
}

#[test]
fn every_seed_keeps_the_invariants() {
    let seeds = match env("LOCKSTEP_SIM_SEED") {
        Some(seed) => seed..seed + 1,
        None => {
            let first = env("LOCKSTEP_SIM_FIRST_SEED").unwrap_or(0);
            first..first + env("LOCKSTEP_SIM_SEEDS").unwrap_or(100)
        }
    };
    let started = Instant::now();
    let next = AtomicU64::new(seeds.start);
    let failures = Mutex::new(Vec::new());
    let totals = Mutex::new(world::Report::default());
    let threads = std::thread::available_parallelism().map_or(2, |n| n.get());
    std::thread::scope(|scope| {
        for _ in 0..threads {
            scope.spawn(|| loop {
                let seed = next.fetch_add(1, Ordering::Relaxed);
                if seed >= seeds.end {
                    break;
                }
                match world::run(seed) {
                    Ok(r) => {
                        let mut t = totals.lock().unwrap();
                        t.agents += r.agents;
                        t.crashes += r.crashes;
                        t.clock_jumps += r.clock_jumps;
                        t.broken_streams += r.broken_streams;
                        t.duplicates += r.duplicates;
                        t.turns += r.turns;
                        t.acked_writes += r.acked_writes;
                        t.acked_publishes += r.acked_publishes;
                        t.barrier_releases += r.barrier_releases;
                        t.barrier_errors += r.barrier_errors;
                    }
                    Err(e) => failures.lock().unwrap().push((seed, e)),
                }
            });
        }
    });
    let t = totals.into_inner().unwrap();
    let count = seeds.end - seeds.start;
    eprintln!(
        "{count} seeds ({}..{}) in {:.1} s on {threads} threads: {} agents, {} crashes and restarts, {} clock jumps, \
         {} broken streams, {} duplicate deliveries, {} server turns; acknowledged: {} state writes, {} publishes; \
         {} barrier releases, {} barrier errors",
        seeds.start,
        seeds.end,
        started.elapsed().as_secs_f64(),
        t.agents,
        t.crashes,
        t.clock_jumps,
        t.broken_streams,
        t.duplicates,
        t.turns,
        t.acked_writes,
        t.acked_publishes,
        t.barrier_releases,
        t.barrier_errors
    );
    let mut failures = failures.into_inner().unwrap();
    failures.sort();
    assert!(
        failures.is_empty(),
        "{} of {count} seeds failed:\n{}",
        failures.len(),
        failures.iter().take(5).map(|(_, e)| e.as_str()).collect::<Vec<_>>().join("\n")
    );
    assert!(
        t.acked_writes > 0 && t.acked_publishes > 0 && t.barrier_releases > 0,
        "the simulation did some work: {t:?}"
    );
    if count >= 20 {
        let faults = t.crashes > 0 && t.clock_jumps > 0 && t.broken_streams > 0 && t.duplicates > 0;
        assert!(faults, "every kind of fault happened: {t:?}");
    }
}
