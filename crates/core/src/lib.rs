//! # lockstep-core
//!
//! The lockstep engine: every coordination rule of the product — registry and leases, interest
//! routing with bounded queues, agent state as JSON merge patches, sync points — as plain,
//! deterministic Rust. No tokio, no clock reads, no I/O: time is an argument, and the engine says
//! when it next needs to be woken ([`Engine::next_deadline`]).
//!
//! ```
//! use lockstep_core::{Config, ConnId, Engine, Frame, Input, Output, RegisterRequest};
//!
//! let mut engine = Engine::new(Config::default());
//! engine.track_changes();
//! let request = RegisterRequest { agent_id: "scanner".into(), role: "scanner".into(), ..Default::default() };
//! engine.handle(0, Input::Register { conn: ConnId(1), request, new_token: "t".into(), connection: 0 });
//! // The turn ends: its durable changes (the new agent) are committed before anything is sent.
//! let ready = engine.ready();
//! assert_eq!(ready.changes().len(), 1);
//! let mut out = ready.committed();
//! assert_eq!(out.poll_output(), Some(Output::Ready(ConnId(1))));
//! assert!(matches!(out.next_frame(ConnId(1), 64), Some(Frame::Registered(_))));
//! // Nothing heard from the agent for 3 heartbeat intervals: it is lost.
//! engine.handle_timeout(engine.next_deadline().unwrap());
//! let mut out = engine.ready().committed();
//! assert!(matches!(out.poll_output(), Some(Output::Close(ConnId(1), Some(_)))));
//! ```
//!
//! Modules, one concept each: [`name`] (valid names), [`topic`] (topics and patterns), [`state`]
//! (merge patches and their composition), [`outbox`] (what waits to be sent to one agent),
//! [`feed`] (what waits to be sent to one registry watcher),
//! [`lease`], [`registry`], [`syncpoint`], [`timer`] (timers removed with what they time),
//! [`engine`] (wiring them), [`io`] (inputs and outputs),
//! [`turn`] (persist before send, in the types), [`durable`] (what is kept), [`config`] and
//! [`error`].
//!
//! [`context`] holds the rules of shared context: versioned keys per namespace, compare-and-set,
//! history, lifetimes (lease, TTL), watches coalesced per key and resumable from a version, and the
//! server-maintained `system.*` keys.
//!
//! [`task`] holds the rules of task handoff (the assignment registry): submissions pinning context,
//! dependencies, assignment to agents asking for work, attempts fenced by number, retries and the
//! dead-letter list.
//!
//! [`request`] holds the rules of request/reply between agents (who answers, deadlines, limits).
//!
//! [`collective`] holds the rules of collectives on numeric arrays (membership, ranks, one call for
//! all, deadlines, lost members, one outcome) and the documented reduction order; the arrays move in
//! the shell.
//!
//! [`replica_group`] holds the rules of replica groups (members ranked in join order, membership
//! events, one versioned state blob per group published by one member at a time, divergence at
//! collectives); the blobs move in the shell.
//!
//! [`trace`] holds the rules of execution traces (canonical inputs and content hashes, records
//! all or nothing, lookups, one claim per missing output with waiters, retention by bytes and age
//! that spares pinned lineages, lineage queries); large outputs move and are kept in the shell.
//!
//! [`ticker`] holds the rules of event-time tick controllers (watermarks per source, idle
//! sources, late policies, skew reports) and [`latency`] those of latency buffers (provisional
//! values for overdue samples, settled with their error); [`streams`] holds both tables, their
//! limits and the bounds on event times.
//!
//! [`breaker`] (circuit breakers) and [`command`] (pause, emergency stop, operators' commands and
//! their audit log) hold the rules of fault isolation and of the control plane, which the engine
//! applies; [`health`] holds the rules of health assessment, which the engine feeds.
//!
//! [`systems`] holds the rules of the infrastructure sync monitor: synced systems, their
//! dependency graph and risk propagation, normalised sync events, freshness and incidents.

pub mod auth;
pub mod breaker;
pub mod collective;
pub mod command;
pub mod config;
pub mod context;
pub mod distribution;
pub mod durable;
pub mod engine;
pub mod error;
pub mod feed;
pub mod health;
pub mod history;
pub mod intake;
pub mod io;
pub mod json_tape;
pub mod latency;
pub mod lease;
pub mod name;
pub mod notice;
pub mod outbox;
pub mod record;
pub mod registry;
pub mod replica_group;
pub mod request;
pub mod round;
pub mod state;
pub mod streams;
pub mod syncpoint;
pub mod systems;
pub mod task;
pub mod ticker;
pub mod timer;
pub mod topic;
pub mod trace;
pub mod turn;
pub mod vote;

pub use breaker::{Breaker, BreakerOverrides, BreakerSettings, BreakerState, FailureKind, Transition};
pub use command::{
    AuditEntry, AuditLog, AuditOutcome, CommandId, CommandOutcome, CommandReply, CommandRequest, CommandSettings,
    ControlPlane, Gated, Refusal,
};
pub use config::{Config, Limits, OverflowPolicy};
pub use context::{
    ContextBatch, ContextChange, ContextSettings, Expect, Lifetime, Op as ContextOp, Selector, Write as ContextWrite,
};
pub use engine::{Counters, Engine, EngineInfo, HealthOverview, FRESHNESS_WORK_PER_TURN};
pub use error::{CoreError, ErrorCode, Reason, SessionEnd};
pub use health::{AgentHealth, HealthHistory, HealthIssue, HealthReport, HealthSettings, HealthStatus};
pub use io::{
    AdminAction, AdminOutcome, ConnId, ControlKind, ControlNotice, Delivery, Frame, GroupCall, GroupOutput, Input,
    Message, Output, RegisterRequest, Registered, RegistryEvent, Reply, Request, SessionCall, StateChange, Time,
    TraceEvent, TraceInput, WatchTarget,
};
pub use registry::{AgentQuery, AgentStatus, AgentView, RegistryEventKind};
pub use syncpoint::{Diagnosis, Participants, SyncOutcome, SyncState, SyncStatus, Waiter};
pub use turn::{Ready, Sendable};
pub use vote::{
    BallotChoice, BallotRequest, Choices, Policy, TieRule, VoteDiagnosis, VoteOutcome, VoteSpec, VoteState, VoteStatus,
    WeightSource,
};
