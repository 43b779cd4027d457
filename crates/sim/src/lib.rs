//! # lockstep-sim
//!
//! Deterministic testing of lockstep beyond example-based tests:
//!
//! * [`fuzz`]: the functions behind the coverage-guided fuzz targets in `fuzz/` — one session
//!   message's bytes through the server's real decoding path into an engine
//!   ([`fuzz::session_frame`]), and any sequence of engine steps, operators' actions included,
//!   with the engine's invariants checked ([`fuzz::engine_steps`]). The normal test suite replays
//!   the corpus kept in `fuzz/corpus/` through the same functions (`tests/corpus.rs`).
//! * [`world`] (feature `world`, on by default): a seeded simulation of the whole engine with
//!   dozens of agents, lossy and duplicating links, crashes with restarts from a real store, and
//!   clock jumps, checking that nothing acknowledged is lost and every waiter is answered.
//!
//! Everything here is deterministic: the same bytes or the same seed give the same run, so any
//! failure is reproduced by one command (which the failure message prints).

pub mod fuzz;
#[cfg(feature = "world")]
pub mod world;
