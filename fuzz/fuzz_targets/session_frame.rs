//! One session message's bytes through the server's decoding path into an engine
//! (`lockstep_sim::fuzz::session_frame`).
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| lockstep_sim::fuzz::session_frame(data));
