//! Recorded runs: what a shell did to an engine, step by step, and how to do it again.
//!
//! The engine is deterministic: the same inputs at the same times, with the same pulls of frames,
//! give the same state and the same outputs. A shell that writes down every [`Step`] (the server
//! does with `serve --record-inputs FILE`) lets anyone replay its run into a fresh engine on the
//! manual clock with [`Replay`], which checks at every turn that the engine produced what the
//! recorded run saw. Outputs and frames are compared by their `Debug` descriptions, which is all a
//! recording needs to keep of them.

use serde::{Deserialize, Serialize};

use crate::engine::Engine;
use crate::io::{ConnId, Input, Time};

/// One thing the shell did.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub enum Step {
    /// [`Engine::handle`]`(now, input)`.
    Input { now: Time, input: Input },
    /// [`Engine::handle_timeout`]`(now)`.
    Timeout { now: Time },
    /// The turn ended and was committed; the outputs it released, in order, described.
    Outputs(Vec<String>),
    /// The shell pulled a frame for `conn` with at most `max_items` items, and got this.
    Frame { conn: ConnId, max_items: usize, frame: Option<String> },
    /// The Unix time at which the engine's clock read 0 (see [`Engine::set_clock_origin`]).
    ClockOrigin { unix_ms: u64 },
}

/// Where a replay parted from its recording.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("step {step}: the recording saw {recorded}, the replay gives {replayed}")]
pub struct Divergence {
    /// The step's number in the recording, from 0.
    pub step: usize,
    pub recorded: String,
    pub replayed: String,
}

/// Replays recorded steps into an engine, checking each turn's outputs and frames.
pub struct Replay<'e> {
    engine: &'e mut Engine,
    steps: usize,
}

impl<'e> Replay<'e> {
    /// Replays into `engine`, which must start as the recorded one did (same configuration, and
    /// new — or restored from the same data).
    pub fn new(engine: &'e mut Engine) -> Self {
        Replay { engine, steps: 0 }
    }

    /// Steps replayed so far.
    pub fn steps(&self) -> usize {
        self.steps
    }

    /// Does what `step` says and checks that the engine answers as recorded.
    pub fn step(&mut self, step: &Step) -> Result<(), Divergence> {
        let at = self.steps;
        self.steps += 1;
        let diverged = |recorded: String, replayed: String| Divergence { step: at, recorded, replayed };
        match step {
            Step::Input { now, input } => self.engine.handle(*now, input.clone()),
            Step::Timeout { now } => self.engine.handle_timeout(*now),
            Step::ClockOrigin { unix_ms } => self.engine.set_clock_origin(*unix_ms),
            Step::Outputs(recorded) => {
                let mut out = self.engine.ready().committed();
                let mut replayed = Vec::new();
                while let Some(output) = out.poll_output() {
                    replayed.push(format!("{output:?}"));
                }
                if &replayed != recorded {
                    return Err(diverged(format!("{recorded:?}"), format!("{replayed:?}")));
                }
            }
            Step::Frame { conn, max_items, frame } => {
                let replayed = self.engine.ready().committed().next_frame(*conn, *max_items).map(|f| format!("{f:?}"));
                if &replayed != frame {
                    return Err(diverged(format!("{frame:?} on {conn:?}"), format!("{replayed:?}")));
                }
            }
        }
        Ok(())
    }
}
