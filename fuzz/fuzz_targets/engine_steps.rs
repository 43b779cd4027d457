//! Any sequence of engine steps, operators' actions included, with the engine's invariants
//! checked (`lockstep_sim::fuzz::engine_steps`).
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| lockstep_sim::fuzz::engine_steps(data));
