//! The end of a turn: persist, then send — an order the types enforce.
//!
//! The shell applies a batch of inputs (a turn), then calls [`Engine::ready`]. The [`Ready`] it
//! gets holds the turn's durable changes and nothing else: outputs and frames can only be taken
//! through the [`Sendable`] that [`Ready::committed`] returns, which the shell calls once the
//! changes are stored (at once when it keeps nothing: the same types, an immediate
//! confirmation). Both borrow the engine mutably, so no input can slip in between the commit and
//! the sending, and a frame pulled later, for a connection that had no room before, belongs to
//! inputs whose turn was committed.
//!
//! A `Ready` dropped without `committed` gives its changes back: they come again, ahead of any
//! newer ones, with the next `Ready`, and nothing is sendable meanwhile. (The shape is raft's
//! `Ready`/`advance`, collapsed into one borrow.)

use crate::durable::Change;
use crate::engine::Engine;
use crate::io::{ConnId, Frame, Output};

/// A turn's durable changes, to be committed before anything the turn produced is sent.
#[must_use = "commit the changes, then call `committed()` to send what the turn produced"]
pub struct Ready<'e> {
    /// `None` once committed.
    engine: Option<&'e mut Engine>,
    changes: Vec<Change>,
}

impl<'e> Ready<'e> {
    pub(crate) fn new(engine: &'e mut Engine, changes: Vec<Change>) -> Self {
        Ready { engine: Some(engine), changes }
    }

    /// What the turn changed durably, in the order it happened, each with the value to keep.
    /// Empty when nothing durable changed or the engine does not track changes.
    pub fn changes(&self) -> &[Change] {
        &self.changes
    }

    /// The shell stored [`Ready::changes`]: what the turn produced may now leave.
    pub fn committed(mut self) -> Sendable<'e> {
        self.changes.clear();
        Sendable { engine: self.engine.take().expect("a Ready is committed once") }
    }
}

impl Drop for Ready<'_> {
    fn drop(&mut self) {
        if let Some(engine) = self.engine.take() {
            engine.give_back(std::mem::take(&mut self.changes));
        }
    }
}

/// What a committed turn produced: outputs to act on and frames to send.
pub struct Sendable<'e> {
    engine: &'e mut Engine,
}

impl Sendable<'_> {
    /// The next thing the shell must do, if any.
    pub fn poll_output(&mut self) -> Option<Output> {
        self.engine.poll_output()
    }

    /// The next frame to send on `conn` (at most `max_items` deliveries or state changes in it),
    /// or `None` when nothing is pending; a later `Ready(conn)` says when there is more.
    pub fn next_frame(&mut self, conn: ConnId, max_items: usize) -> Option<Frame> {
        self.engine.next_frame(conn, max_items)
    }

    /// The engine, to read (queries answered with the turn).
    pub fn engine(&self) -> &Engine {
        self.engine
    }
}
