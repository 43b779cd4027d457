//! # lockstep-store
//!
//! lockstep's durable state in SQLite: agents (profile, status, resume token, JSON state and its
//! version, watches, pause), sync points and their arrivals, the operators' audit log and settings.
//! One file, `DATA_DIR/lockstep.db`, in WAL mode; one writer.
//!
//! How the server uses it:
//!
//! 1. **At start**, [`Store::open`] the data directory (it is created, or upgraded to the current
//!    schema, or refused with a message saying what to do — a damaged, newer or read-only database
//!    is never used nor reset), then [`Store::load`] a [`Snapshot`] and rebuild the engine from it.
//! 2. **Every driver turn**, gather the changes the turn made into one batch of [`Change`]s and
//!    call [`Store::apply`] once: one transaction, one commit for the whole turn. Acknowledge
//!    what the turn did (replies, registrations, barrier releases) only after it returns `Ok`; on
//!    an error nothing of the batch is stored, so nothing of it may be acknowledged.
//! 3. **For operators**, [`Store::backup_file`] writes a consistent copy of the database file
//!    through a read-only connection of its own, while the store keeps committing, and
//!    [`Store::integrity_check`] verifies the file.
//!
//! ```
//! use lockstep_store::{AgentRecord, Change, Durability, Store};
//!
//! let dir = std::env::temp_dir().join(format!("lockstep-store-doc-{}", std::process::id()));
//! let mut store = Store::open(&dir, Durability::Normal)?;
//! let agent = AgentRecord { namespace: "lab".into(), agent_id: "w1".into(), state_json: "{}".into(), ..Default::default() };
//! store.apply(&[Change::UpsertAgent(agent)])?;
//! store.apply(&[Change::UpdateState {
//!     namespace: "lab".into(),
//!     agent_id: "w1".into(),
//!     state_json: r#"{"epoch":3}"#.into(),
//!     state_version: 2,
//! }])?;
//! drop(store);
//!
//! let snapshot = Store::open(&dir, Durability::Normal)?.load()?;
//! assert_eq!(snapshot.agents[0].state_version, 2);
//! # std::fs::remove_dir_all(&dir).unwrap();
//! # Ok::<(), lockstep_store::StoreError>(())
//! ```
//!
//! Modules: [`schema`] (migrations), [`records`] (rows, changes, snapshot), `store` (opening and
//! configuration), `apply` (batched writes), `load` (reading back), `backup`, [`error`].

mod apply;
pub mod archive;
mod backup;
mod checkpoint;
pub mod error;
mod load;
pub mod records;
pub mod schema;
mod store;
#[cfg(test)]
mod testutil;

pub use error::StoreError;
pub use records::{
    AgentRecord, ArrivalRecord, AuditRecord, BallotRecord, Change, ConfigRecord, ContextKeyRecord,
    ContextVersionRecord, HistoryMessageRecord, LoadedContextKey, LoadedSyncPoint, LoadedVote, RoundSeriesRecord,
    Snapshot, SyncPointRecord, TaskRecord, TraceRecord, VoteRecord,
};
pub use schema::SCHEMA_VERSION;
pub use store::{Durability, Store, StoreOptions, DB_FILE_NAME, DEFAULT_AUDIT_CAPACITY, DEFAULT_BUSY_TIMEOUT};
