//! Conversions between the wire types (`v1`) and the engine's types, in one place so that the core
//! never depends on gRPC and the server and clients agree on every mapping.

use bytes::Bytes;
use lockstep_core as core;
use lockstep_core::{AgentStatus, CoreError, ErrorCode, Frame, Participants, Reply, WatchTarget};

use crate::v1;

/// The gRPC status code of an engine error class.
pub fn grpc_code(code: ErrorCode) -> tonic::Code {
    match code {
        ErrorCode::InvalidArgument => tonic::Code::InvalidArgument,
        ErrorCode::NotFound => tonic::Code::NotFound,
        ErrorCode::AlreadyExists => tonic::Code::AlreadyExists,
        ErrorCode::ResourceExhausted => tonic::Code::ResourceExhausted,
        ErrorCode::FailedPrecondition => tonic::Code::FailedPrecondition,
        ErrorCode::DeadlineExceeded => tonic::Code::DeadlineExceeded,
        ErrorCode::Aborted => tonic::Code::Aborted,
        ErrorCode::Unavailable => tonic::Code::Unavailable,
        ErrorCode::PermissionDenied => tonic::Code::PermissionDenied,
    }
}

/// An engine error as a gRPC status, its reason and what it names in the status's `ErrorInfo`.
pub fn status(e: &CoreError) -> tonic::Status {
    let metadata = [
        ("agent", e.agent().unwrap_or_default().to_owned()),
        ("sync_id", e.sync_id().unwrap_or_default().to_owned()),
        ("missing", e.missing_agents().join(",")),
        ("current_version", e.current_version().map(|v| v.to_string()).unwrap_or_default()),
    ];
    crate::reason::status(grpc_code(e.code()), e.reason(), e.to_string(), metadata)
}

/// An engine error as the `Error` of a `Reply`.
pub fn error(e: &CoreError) -> v1::Error {
    v1::Error {
        code: grpc_code(e.code()) as i32,
        message: crate::reason::outgoing(e.to_string()),
        missing_agents: e.missing_agents().to_vec(),
        sync_id: e.sync_id().unwrap_or_default().to_owned(),
        reason: e.reason().as_str().to_owned(),
        current_version: e.current_version().unwrap_or(0),
        schema_errors: crate::intake::schema_errors(e),
    }
}

/// A malformed client message.
fn malformed(reason: &str) -> CoreError {
    CoreError::Invalid { what: "message", reason: reason.to_owned() }
}

pub fn status_from_wire(status: i32) -> Result<AgentStatus, CoreError> {
    match v1::AgentStatus::try_from(status) {
        Ok(v1::AgentStatus::Active) => Ok(AgentStatus::Active),
        Ok(v1::AgentStatus::Idle) => Ok(AgentStatus::Idle),
        Ok(v1::AgentStatus::Busy) => Ok(AgentStatus::Busy),
        Ok(v1::AgentStatus::Syncing) => Ok(AgentStatus::Syncing),
        Ok(v1::AgentStatus::Paused) => Ok(AgentStatus::Paused),
        Ok(v1::AgentStatus::Lost) => Ok(AgentStatus::Lost),
        Ok(v1::AgentStatus::Unspecified) | Err(_) => {
            Err(malformed("status must be one of active, idle, busy, syncing, paused"))
        }
    }
}

pub fn status_to_wire(status: AgentStatus) -> v1::AgentStatus {
    match status {
        AgentStatus::Active => v1::AgentStatus::Active,
        AgentStatus::Idle => v1::AgentStatus::Idle,
        AgentStatus::Busy => v1::AgentStatus::Busy,
        AgentStatus::Syncing => v1::AgentStatus::Syncing,
        AgentStatus::Paused => v1::AgentStatus::Paused,
        AgentStatus::Lost => v1::AgentStatus::Lost,
    }
}

impl From<v1::Register> for core::RegisterRequest {
    fn from(r: v1::Register) -> Self {
        core::RegisterRequest {
            namespace: r.namespace,
            agent_id: r.agent_id,
            role: r.role,
            capabilities: r.capabilities,
            interests: r.interests,
            metadata: r.metadata.into_iter().collect(),
            resume_token: r.resume_token,
        }
    }
}

fn watch_target(agent: Option<String>, role: Option<String>, all: Option<bool>) -> Result<WatchTarget, CoreError> {
    match (agent, role, all) {
        (Some(a), None, None) => Ok(WatchTarget::Agent(a)),
        (None, Some(r), None) => Ok(WatchTarget::Role(r)),
        (None, None, Some(true)) => Ok(WatchTarget::All),
        _ => Err(malformed("a watch needs exactly one of agent_id, role or all=true")),
    }
}

/// What a session message asks for, once registered.
pub enum SessionMessage {
    Register(core::RegisterRequest),
    Request(core::Request),
}

/// Decodes one client message. Errors name what is missing or malformed.
pub fn session_message(kind: Option<v1::client_message::Kind>) -> Result<SessionMessage, CoreError> {
    use v1::client_message::Kind;
    let request = match kind.ok_or_else(|| malformed("empty ClientMessage: set one of its kinds"))? {
        Kind::Register(r) => return Ok(SessionMessage::Register(r.into())),
        Kind::Heartbeat(_) => core::Request::Heartbeat,
        Kind::Publish(p) => match p.event_time_ms {
            None => core::Request::Publish { topic: p.topic, payload: p.payload, content_type: p.content_type },
            Some(event_time_ms) => core::Request::PublishEvent {
                topic: p.topic,
                payload: p.payload,
                content_type: p.content_type,
                event_time_ms,
            },
        },
        Kind::UpdateState(u) => core::Request::UpdateState { delta_json: u.delta_json },
        Kind::SetStatus(s) => core::Request::SetStatus(status_from_wire(s.status)?),
        Kind::WatchState(w) => {
            use v1::watch_state::Target;
            let t = w.target.ok_or_else(|| malformed("watch_state needs a target"))?;
            core::Request::Watch(match t {
                Target::AgentId(a) => watch_target(Some(a), None, None)?,
                Target::Role(r) => watch_target(None, Some(r), None)?,
                Target::All(all) => watch_target(None, None, Some(all))?,
            })
        }
        Kind::UnwatchState(w) => {
            use v1::unwatch_state::Target;
            let t = w.target.ok_or_else(|| malformed("unwatch_state needs a target"))?;
            core::Request::Unwatch(match t {
                Target::AgentId(a) => watch_target(Some(a), None, None)?,
                Target::Role(r) => watch_target(None, Some(r), None)?,
                Target::All(all) => watch_target(None, None, Some(all))?,
            })
        }
        Kind::Sync(s) => {
            use v1::sync_arrive::Participants as P;
            let participants =
                match s.participants.ok_or_else(|| malformed("sync needs participants: agents, count or role"))? {
                    P::Agents(ids) => Participants::Agents(ids.ids),
                    P::Count(n) => Participants::Count(n),
                    P::Role(r) => Participants::Role(r),
                };
            core::Request::Sync {
                sync_id: s.sync_id,
                participants,
                timeout_ms: s.timeout_ms,
                payload: s.payload,
                summary: s.summary,
                quorum: (s.quorum != 0).then_some(s.quorum),
            }
        }
        Kind::Ack(a) => core::Request::Ack { up_to: a.up_to_seq },
        Kind::Deregister(_) => core::Request::Deregister,
        Kind::DeliveryError(e) => core::Request::DeliveryError { seq: e.seq, reason: e.reason },
        Kind::CommandResult(r) => {
            use lockstep_core::command::CommandReply;
            use v1::command_result::Outcome;
            let reply = match r.outcome.ok_or_else(|| malformed("command_result needs result_json or error"))? {
                Outcome::ResultJson(json) => CommandReply::Result(json),
                Outcome::Error(message) => CommandReply::Error(message),
            };
            core::Request::CommandResult { command_id: r.command_id, reply }
        }
        Kind::AgentRequest(r) => core::Request::AgentRequest {
            topic: r.topic,
            payload: r.payload,
            content_type: r.content_type,
            timeout_ms: r.timeout_ms,
        },
        Kind::Respond(r) => {
            core::Request::Respond { token: r.token, payload: r.payload, content_type: r.content_type, error: r.error }
        }
        Kind::OpenVote(v) => open_vote(v)?,
        Kind::CastBallot(b) => core::Request::CastBallot(cast_ballot(b)?),
        Kind::JoinGroup(g) => core::Request::JoinGroup { group_id: g.group_id },
        Kind::LeaveGroup(g) => core::Request::LeaveGroup { group_id: g.group_id, forget_state: g.forget_state },
        Kind::ContextWrite(w) => core::Request::ContextWrite(context_write(String::new(), w)?),
        Kind::RoundAnswer(a) => crate::round::answer(a),
        k @ (Kind::Subscribe(_) | Kind::Unsubscribe(_)) => crate::history::request(k).expect("a history message"),
        other => crate::task::request(other).ok_or_else(|| malformed("this message is not a session request"))?,
    };
    Ok(SessionMessage::Request(request))
}

/// An `OpenVote` as the engine's request.
fn open_vote(v: v1::OpenVote) -> Result<core::Request, CoreError> {
    use lockstep_core::vote::{Choices, Policy, TieRule, VoteSpec, WeightSource};
    use v1::open_vote::{Participants as P, Policy as WP, Weight as WW};
    let participants =
        match v.participants.ok_or_else(|| malformed("open_vote needs participants: agents, count or role"))? {
            P::Agents(ids) => Participants::Agents(ids.ids),
            P::Count(n) => Participants::Count(n),
            P::Role(r) => Participants::Role(r),
        };
    let policy = match WP::try_from(v.policy).map_err(|_| malformed("unknown vote policy"))? {
        WP::Plurality => Policy::Plurality,
        WP::Majority => Policy::Majority,
        WP::Supermajority => Policy::Supermajority { num: v.supermajority_num, den: v.supermajority_den },
        WP::Unanimity => Policy::Unanimity,
    };
    let weight = match WW::try_from(v.weight).map_err(|_| malformed("unknown vote weight"))? {
        WW::Equal => WeightSource::Equal,
        WW::Metadata => WeightSource::Metadata(v.weight_field),
        WW::Confidence => WeightSource::Confidence,
        WW::Health => WeightSource::Health,
    };
    let choices = if v.options.is_empty() {
        Choices::Recommendations { key_field: v.key_field }
    } else {
        Choices::Options(v.options)
    };
    let tie = if v.tie_breaker_role.is_empty() { TieRule::NoDecision } else { TieRule::Breaker(v.tie_breaker_role) };
    let spec = VoteSpec {
        vote_id: v.vote_id,
        question: v.question,
        participants,
        timeout_ms: v.timeout_ms,
        policy,
        choices,
        weight,
        quorum_ballots: v.quorum_ballots,
        quorum_weight: v.quorum_weight,
        veto_roles: v.veto_roles,
        tie,
        topic: v.topic,
    };
    Ok(core::Request::OpenVote { spec: Box::new(spec), wait: v.wait })
}

fn cast_ballot(b: v1::CastBallot) -> Result<core::BallotRequest, CoreError> {
    use v1::cast_ballot::Choice;
    let choice = match b
        .choice
        .ok_or_else(|| malformed("cast_ballot needs a choice: option, recommendation_json or abstain_reason"))?
    {
        Choice::Option(o) => core::BallotChoice::Option(o),
        Choice::RecommendationJson(r) => core::BallotChoice::Recommendation(r),
        Choice::AbstainReason(r) => core::BallotChoice::Abstain(r),
    };
    Ok(core::BallotRequest { vote_id: b.vote_id, choice, confidence: b.confidence, veto: b.veto })
}

/// A vote's outcome on the wire.
pub fn vote_outcome(o: &core::VoteOutcome) -> v1::VoteOutcome {
    v1::VoteOutcome {
        vote_id: o.vote_id.clone(),
        question: o.question.clone(),
        decided: o.decided,
        choice: o.choice.clone(),
        directive_json: o.directive_json.clone(),
        reason: o.reason.clone(),
        tally: o
            .tally
            .iter()
            .map(|t| v1::VoteTally { choice: t.choice.clone(), weight: t.weight, ballots: t.ballots })
            .collect(),
        groups: o.groups,
        ballots: o.ballots,
        abstentions: o.abstentions,
        missing: o.missing,
        total_weight: o.total_weight,
        decided_at_ms: o.decided_at,
    }
}

/// A vote's full record on the wire.
pub fn vote_record(s: &core::VoteStatus) -> v1::VoteRecord {
    v1::VoteRecord {
        vote_id: s.vote_id.clone(),
        question: s.question.clone(),
        state: s.state.as_str().to_owned(),
        opener: s.opener.clone(),
        participants: s.participants.clone(),
        policy: s.policy.clone(),
        weight: s.weight.clone(),
        topic: s.topic.clone(),
        required_count: s.required_count,
        ballots: s
            .ballots
            .iter()
            .map(|b| v1::BallotRecord {
                agent_id: b.agent_id.clone(),
                role: b.role.clone(),
                choice: b.key.clone(),
                directive_json: b.directive_json.clone(),
                abstain_reason: b.abstain_reason.clone().unwrap_or_default(),
                abstained: b.is_abstention(),
                confidence: b.confidence,
                weight: b.weight,
                veto: b.veto,
                at_ms: b.at,
            })
            .collect(),
        missing: s.missing.clone(),
        missing_count: s.missing_count,
        gone: s.gone.clone(),
        created_at_ms: s.created_at,
        deadline_ms: s.deadline,
        finished_at_ms: s.finished_at.unwrap_or(0),
        outcome: s.outcome.as_deref().map(vote_outcome),
    }
}

/// A vote's diagnosis on the wire.
pub fn vote_diagnosis(d: &core::VoteDiagnosis) -> v1::VoteDiagnosis {
    v1::VoteDiagnosis {
        status: Some(vote_record(&d.status)),
        issues: d.issues.clone(),
        recommendations: d.recommendations.clone(),
    }
}

/// The fields a summary and a whole outcome share (the whole one leaves `position` at 0: the
/// receiver finds itself in the arrival order).
fn sync_summary(o: &core::SyncOutcome, position: u32) -> crate::wire::SyncResult {
    crate::wire::SyncResult {
        sync_id: o.sync_id.clone(),
        forced: o.forced,
        count: o.count(),
        digest: o.digest,
        position,
        late_count: o.late.len() as u32,
        ..Default::default()
    }
}

fn reply(request_id: u64, reply: Reply) -> v1::Reply {
    use v1::reply::Outcome;
    let outcome = match reply {
        Reply::Ok => Outcome::Ok(v1::Ok {}),
        Reply::StateVersion(version) => Outcome::StateVersion(v1::StateVersion { version }),
        Reply::Sync(o) => {
            let encoded = o.wire.get_or_init(|| {
                crate::wire::SyncResult {
                    sync_id: o.sync_id.clone(),
                    arrival_order: o.arrival_order.iter().map(|a| Bytes::copy_from_slice(a.as_bytes())).collect(),
                    payloads: o.payloads.clone(),
                    late: o.late.iter().map(|a| Bytes::copy_from_slice(a.as_bytes())).collect(),
                    ..sync_summary(&o, 0)
                }
                .encode_once()
            });
            Outcome::SyncResult(crate::wire::SyncResult { encoded: Some(encoded.clone()), ..Default::default() })
        }
        Reply::SyncSummary { outcome, position } => {
            Outcome::SyncResult(crate::wire::SyncResult { summary: true, ..sync_summary(&outcome, position) })
        }
        Reply::Response { payload, content_type, responder } => {
            Outcome::AgentResponse(v1::AgentResponse { payload, content_type, responder })
        }
        Reply::Vote(o) => Outcome::VoteOutcome(vote_outcome(&o)),
        Reply::Group(v) => Outcome::GroupMembership(crate::group::membership(&v)),
        Reply::ContextWritten(w) => Outcome::ContextWritten(context_written(&w)),
        Reply::TaskSubmitted(id) => Outcome::TaskSubmitted(v1::TaskSubmitted { id }),
        Reply::TaskClaimed(a) => {
            Outcome::TaskClaimed(v1::TaskClaimed { assignment: a.as_deref().map(crate::task::assignment) })
        }
        Reply::Error(e) => Outcome::Error(error(&e)),
    };
    v1::Reply { request_id, outcome: Some(outcome) }
}

/// A session frame as the server message that carries it; `None` for registry events, which travel
/// on the `WatchRegistry` stream instead (see [`registry_event`]).
pub fn server_message(frame: Frame) -> Option<v1::ServerMessage> {
    use v1::server_message::Kind;
    let kind = match frame {
        Frame::Registered(r) => Kind::Registered(v1::Registered {
            namespace: r.namespace,
            agent_id: r.agent_id,
            resume_token: r.resume_token,
            heartbeat_interval_ms: r.heartbeat_interval_ms,
            lease_intervals: r.lease_intervals,
            resumed: r.resumed,
            limits: Some(limits(&r.limits, r.queue_capacity)),
            connection_heartbeats: r.connection_heartbeats,
            missed_messages: r.missed_messages,
        }),
        Frame::Reply { request_id, reply: r } => Kind::Reply(reply(request_id, r)),
        Frame::Deliveries(items) => Kind::Deliveries(crate::wire::Deliveries {
            first_seq: items.first().map_or(0, |d| d.seq),
            missed_before: items.first().map_or(0, |d| d.missed_before),
            items: items.iter().map(|d| encoded(&d.message)).collect(),
        }),
        Frame::StateChanges(items) => Kind::StateChanges(v1::StateChanges {
            items: items
                .into_iter()
                .map(|c| v1::StateChange {
                    agent_id: c.agent_id.to_string(),
                    base_version: c.base_version,
                    version: c.version,
                    delta_json: if c.removed { String::new() } else { c.delta.to_string() },
                    removed: c.removed,
                })
                .collect(),
        }),
        Frame::Registry(_) | Frame::Context(_) => return None,
        Frame::TaskAssigned(a) => Kind::TaskAssigned(crate::task::assignment(&a)),
        Frame::TaskEvent(e) => Kind::TaskEvent(crate::task::event(&e)),
        Frame::HistoryGap(g) => Kind::HistoryGap(crate::history::gap(&g)),
        Frame::Control(n) => {
            use v1::control::Kind as K;
            let kind = match n.kind {
                core::ControlKind::Paused => K::Paused,
                core::ControlKind::Resumed => K::Resumed,
                core::ControlKind::EmergencyStop => K::EmergencyStop,
                core::ControlKind::ResumedAll => K::ResumedAll,
            };
            Kind::Control(v1::Control { kind: kind as i32, actor: n.actor, reason: n.reason })
        }
        Frame::Command { command_id, command, params, deadline } => {
            Kind::Command(v1::Command { command_id, command, params_json: params.to_string(), deadline_ms: deadline })
        }
        Frame::RoundInput { series, round, input, deadline } => Kind::RoundInput(v1::RoundInput {
            series: series.to_string(),
            round,
            input_json: input.to_string(),
            deadline_ms: deadline,
        }),
        Frame::IncomingRequest { token, topic, payload, content_type, requester, deadline } => {
            Kind::IncomingRequest(v1::IncomingRequest {
                token,
                topic,
                payload,
                content_type,
                requester,
                deadline_ms: deadline,
            })
        }
    };
    Some(v1::ServerMessage { kind: Some(kind) })
}

/// A routed message's `Delivery` encoding, made once and shared by all its receivers.
fn encoded(m: &core::Message) -> bytes::Bytes {
    use prost::Message as _;
    m.wire
        .get_or_init(|| {
            let mut d = v1::Delivery {
                topic: m.topic.to_string(),
                payload: m.payload.clone(),
                content_type: m.content_type.to_string(),
                publisher: m.publisher.to_string(),
                topic_seq: m.topic_seq,
                time_ms: m.time,
                ..Default::default()
            };
            if let Some(e) = &m.intake {
                d.intake_seq = e.seq;
                d.categorised_from = e.from.to_string();
                d.intake_time_ms = e.time;
                d.tick_id = e.tick;
                d.intake_rule = e.rule.to_string();
            }
            d.encode_to_vec().into()
        })
        .clone()
}

pub fn agent_info(a: &core::AgentView) -> v1::AgentInfo {
    v1::AgentInfo {
        namespace: a.namespace.clone(),
        agent_id: a.agent_id.clone(),
        role: a.role.clone(),
        capabilities: a.capabilities.clone(),
        interests: a.interests.clone(),
        metadata: a.metadata.iter().map(|(k, v)| (k.clone(), v.clone())).collect(),
        status: status_to_wire(a.status) as i32,
        registered_at_ms: a.registered_at,
        last_heartbeat_ms: a.last_heartbeat,
        state_version: a.state_version,
        queue_depth: a.queue_depth,
        dropped: a.dropped,
        delivered: a.delivered,
        breaker_state: a.breaker.as_str().to_owned(),
        breaker_opened: a.breaker_opened,
    }
}

pub fn registry_event(e: &core::RegistryEvent) -> v1::RegistryEvent {
    use v1::registry_event::Kind;
    let kind = match e.kind {
        core::RegistryEventKind::Snapshot => Kind::Snapshot,
        core::RegistryEventKind::Joined => Kind::Joined,
        core::RegistryEventKind::Left => Kind::Left,
        core::RegistryEventKind::Status => Kind::Status,
        core::RegistryEventKind::Lost => Kind::Lost,
        core::RegistryEventKind::Breaker => Kind::Breaker,
    };
    v1::RegistryEvent {
        kind: kind as i32,
        agent: Some(agent_info(&e.agent)),
        previous_status: e.previous_status.map_or(v1::AgentStatus::Unspecified, status_to_wire) as i32,
    }
}

pub fn sync_status(s: &core::SyncStatus, now: core::Time) -> v1::SyncPointStatus {
    use v1::sync_point_status::State;
    let state = match s.state {
        core::SyncState::Waiting => State::Waiting,
        core::SyncState::Completed => State::Completed,
        core::SyncState::Forced => State::Forced,
        core::SyncState::TimedOut => State::TimedOut,
        core::SyncState::Failed => State::Failed,
    };
    v1::SyncPointStatus {
        sync_id: s.sync_id.clone(),
        state: state as i32,
        participants: s.participants.clone(),
        required: s.required.clone(),
        required_count: s.required_count,
        arrived: s.arrived.clone(),
        missing: s.missing.clone(),
        created_at_ms: s.created_at,
        waiting_since_ms: s.waiting_since,
        deadline_ms: s.deadline,
        finished_at_ms: s.finished_at.unwrap_or(0),
        failure: s.failure.clone().unwrap_or_default(),
        now_ms: now,
        quorum: s.quorum.unwrap_or(0),
    }
}

pub fn diagnosis(d: &core::Diagnosis, now: core::Time) -> v1::SyncDiagnosis {
    v1::SyncDiagnosis {
        status: Some(sync_status(&d.status, now)),
        issues: d.issues.clone(),
        recommendations: d.recommendations.clone(),
    }
}

/// The limits clients are told (by `ServerInfo` and at registration).
pub fn limits(l: &core::Limits, queue_capacity: usize) -> v1::Limits {
    v1::Limits {
        max_message_bytes: l.max_payload_bytes as u64,
        max_topic_len: l.max_topic_len as u32,
        max_interests: l.max_interests as u32,
        max_agents_per_namespace: l.max_agents_per_namespace as u32,
        max_open_sync_points: l.max_open_sync_points as u32,
        queue_capacity: queue_capacity as u32,
        max_state_bytes: l.max_state_bytes as u64,
        max_sync_participants: l.max_sync_participants as u32,
        max_sync_timeout_ms: l.max_sync_timeout_ms,
        max_delta_bytes: l.max_delta_bytes as u64,
        max_sync_payload_bytes: l.max_sync_payload_bytes as u64,
        max_grpc_message_bytes: l.max_message_bytes() as u64,
        max_request_timeout_ms: l.max_request_timeout_ms,
        max_pending_requests_per_agent: l.max_pending_requests_per_agent.min(u32::MAX as usize) as u32,
    }
}

pub fn health(h: &core::HealthOverview, now: core::Time) -> v1::HealthResponse {
    let sample = |s: &lockstep_core::health::HealthSample| v1::HealthSample {
        at_ms: s.at,
        score: s.score(),
        healthy: s.counts.healthy,
        total: s.counts.total(),
    };
    v1::HealthResponse {
        agents: h
            .agents
            .iter()
            .map(|(ns, id, role, r)| v1::AgentHealth {
                namespace: ns.clone(),
                agent_id: id.clone(),
                role: role.clone(),
                status: r.status.as_str().to_owned(),
                issues: r.issues.iter().map(|i| i.to_string()).collect(),
                deliveries_succeeded: r.deliveries_succeeded,
                deliveries_failed: r.deliveries_failed,
                success_ratio: r.success_ratio,
                ack_p50_ms: r.ack_p50_ms.unwrap_or(0),
                ack_p99_ms: r.ack_p99_ms.unwrap_or(0),
                queue_depth: r.queue.depth,
                queue_high_water: r.queue.high_water,
                dropped: r.queue.dropped,
                breaker_state: r.breaker.as_str().to_owned(),
                breaker_since_ms: r.breaker_since,
                last_heartbeat_ms: r.last_heartbeat,
                last_progress_ms: r.last_progress,
            })
            .collect(),
        score: h.counts.score(),
        healthy: h.counts.healthy,
        degraded: h.counts.degraded,
        stuck: h.counts.stuck,
        unhealthy: h.counts.unhealthy,
        history: h.history.iter().map(sample).collect(),
        now_ms: now,
    }
}

pub fn audit_entry(e: &lockstep_core::command::AuditEntry) -> v1::AuditEntry {
    v1::AuditEntry {
        seq: e.seq,
        at_ms: e.at,
        actor: e.actor.clone(),
        command: e.command.clone(),
        command_id: e.command_id.map_or(0, |c| c.0),
        namespace: e.namespace.clone(),
        target: e.target.clone(),
        params: e.params.clone(),
        outcome: e.outcome.as_str().to_owned(),
        detail: e.detail.clone(),
    }
}

/// A `ContextWrite` as the engine's write to `namespace`.
pub fn context_write(namespace: String, w: v1::ContextWrite) -> Result<core::ContextWrite, CoreError> {
    use lockstep_core::context::{Expect, Lifetime, Op};
    use v1::context_write::{Lifetime as L, Op as O};
    let op = match w.op.ok_or_else(|| malformed("context_write needs an op: set_json, patch_json or delete"))? {
        O::SetJson(json) => Op::Set(json),
        O::PatchJson(json) => Op::Patch(json),
        O::Delete(true) => Op::Delete,
        O::Delete(false) => return Err(malformed("context_write delete must be true")),
    };
    let lifetime = match w.lifetime {
        None | Some(L::Lease(false)) => Lifetime::Permanent,
        Some(L::Lease(true)) => Lifetime::Lease,
        Some(L::TtlMs(ms)) => Lifetime::TtlMs(ms),
    };
    Ok(core::ContextWrite { namespace, key: w.key, op, expect: Expect::from_wire(w.expected_version), lifetime })
}

/// A context write's answer.
pub fn context_written(w: &lockstep_core::context::Written) -> v1::ContextWritten {
    v1::ContextWritten { version: w.version, previous_version: w.previous, expires_at_ms: w.expires_at.unwrap_or(0) }
}

/// A read of a context key.
pub fn context_value(r: &lockstep_core::context::Read) -> v1::ContextValue {
    v1::ContextValue {
        key: r.key.clone(),
        version: r.version,
        value_json: r.value.to_string(),
        at_ms: r.at,
        writer: r.writer.clone(),
        current_version: r.current,
        expires_at_ms: r.expires_at.unwrap_or(0),
        owner: r.owner.clone().unwrap_or_default(),
        patch_json: String::new(),
    }
}

/// A context watch's batch; `None` for any other frame.
pub fn context_batch(frame: Frame) -> Option<v1::ContextBatch> {
    let Frame::Context(b) = frame else { return None };
    Some(v1::ContextBatch {
        reset: b.reset,
        resume_from: b.resume_from,
        changes: b
            .changes
            .into_iter()
            .map(|c| v1::ContextChange {
                key: c.key.to_string(),
                base_version: c.base_version,
                version: c.version,
                value_json: if c.deleted { String::new() } else { c.value.to_string() },
                deleted: c.deleted,
                gap: c.gap,
            })
            .collect(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use lockstep_core::auth::Denial;
    use lockstep_core::command::{EmergencyStop, Gated, PauseCause, Refusal};
    use lockstep_core::systems::SystemsError;
    use lockstep_core::{Reason, SessionEnd};

    /// One error of every kind the engine makes, covering every engine reason.
    fn every_core_error() -> Vec<CoreError> {
        let refusal = |cause| Refusal { namespace: "ns".into(), agent: "a".into(), action: Gated::Publish, cause };
        let stop = EmergencyStop { actor: "ops".into(), since: 5, reason: "bad market data".into() };
        vec![
            CoreError::Invalid { what: "agent id", reason: "must not be empty".into() },
            CoreError::UnknownAgent { namespace: "ns".into(), agent: "a".into() },
            CoreError::UnknownSyncPoint { namespace: "ns".into(), sync_id: "s".into() },
            CoreError::AlreadyRegistered { namespace: "ns".into(), agent: "a".into() },
            CoreError::AlreadyRegisteredHere { agent: "a".into() },
            CoreError::NotRegistered,
            CoreError::Limit { what: "agents per namespace", limit: 3, hint: "deregister agents first" },
            CoreError::SyncMismatch { sync_id: "s".into(), existing: "[a, b]".into(), requested: "3".into() },
            CoreError::NotAParticipant { sync_id: "s".into(), agent: "c".into(), participants: "a, b".into() },
            CoreError::SyncFinished { sync_id: "s".into(), outcome: "completed".into() },
            CoreError::SyncTimeout { sync_id: "s".into(), waited_ms: 5, missing: vec!["b".into()], missing_count: 1 },
            CoreError::SyncAborted { sync_id: "s".into(), reason: "b was lost".into(), missing: vec!["b".into()] },
            CoreError::SessionEnded { agent: "a".into(), cause: SessionEnd::TakenOver },
            CoreError::SessionEnded { agent: "a".into(), cause: SessionEnd::LeaseExpired { lease_ms: 3000 } },
            CoreError::Paused(refusal(PauseCause::Paused { actor: "ops".into(), since: 5 })),
            CoreError::Paused(refusal(PauseCause::EmergencyStop(stop))),
            CoreError::BreakerOpen { agent: "a".into(), probe_at_ms: 30_000, reason: "5 failures".into() },
            CoreError::SlowConsumer { agent: "a".into(), capacity: 16 },
            CoreError::NoResponders { topic: "quotes.get".into() },
            CoreError::RequestTimeout { topic: "quotes.get".into(), responder: "b".into(), waited_ms: 5 },
            CoreError::RequestAborted { topic: "quotes.get".into(), responder: "b".into(), why: "left".into() },
            CoreError::RequestRefused { topic: "quotes.get".into(), responder: "b".into(), message: "no".into() },
            CoreError::UnknownRequest { token: 7 },
            CoreError::UnknownVote { namespace: "ns".into(), vote_id: "v".into() },
            CoreError::VoteExists { vote_id: "v".into() },
            CoreError::NotAVoter { vote_id: "v".into(), agent: "z".into(), participants: "{a, b}".into() },
            CoreError::DoubleBallot { vote_id: "v".into(), agent: "a".into() },
            CoreError::VoteClosed { vote_id: "v".into(), why: "its deadline passed".into() },
            CoreError::UnknownOption { vote_id: "v".into(), option: "short".into(), options: "buy, sell".into() },
            CoreError::BadWeight { vote_id: "v".into(), agent: "a".into(), reason: "not a number".into() },
            CoreError::BadConfidence { vote_id: "v".into(), value: "1.5".into() },
            CoreError::BadBallot { vote_id: "v".into(), reason: "no key field".into() },
            CoreError::VetoNotAllowed { vote_id: "v".into(), agent: "a".into(), role: "trader".into() },
            CoreError::CollectiveMismatch { collective_id: "c".into(), agent: "b".into(), what: "called f64".into() },
            CoreError::NotCollectiveMember { collective_id: "c".into(), agent: "x".into(), members: "a, b".into() },
            CoreError::CollectiveTimeout {
                collective_id: "c".into(),
                waited_ms: 5,
                missing: vec!["b".into()],
                joined_all: false,
            },
            CoreError::CollectiveAborted { collective_id: "c".into(), agent: "b".into(), why: "left".into() },
            CoreError::UnknownGroup { namespace: "ns".into(), group_id: "g".into() },
            CoreError::NotGroupMember { group_id: "g".into(), agent: "x".into(), members: "a, b".into() },
            CoreError::GroupBusy { group_id: "g".into(), publisher: "a".into() },
            CoreError::GroupPublishAborted { group_id: "g".into(), why: "the stream broke".into() },
            CoreError::NoGroupState { group_id: "g".into() },
            CoreError::ChecksumMismatch { group_id: "g".into(), what: "the bytes hash to 00, not 11".into() },
            CoreError::ContextConflict { key: "k".into(), expected: 3, current: 4 },
            CoreError::UnknownContextKey { namespace: "ns".into(), key: "k".into() },
            CoreError::UnknownContextVersion { key: "k".into(), version: 1, retained: vec![3, 4] },
            CoreError::ContextReadOnly { key: "system.health".into() },
            CoreError::UnknownTask { namespace: "ns".into(), id: "t1".into() },
            CoreError::TaskExists { id: "t1".into() },
            CoreError::TaskCycle { id: "t1".into(), path: vec!["t1".into(), "t1".into()] },
            CoreError::TaskNotHeld {
                id: "t1".into(),
                agent: "a".into(),
                attempt: 1,
                now: "attempt 2 is held by 'b'".into(),
            },
            CoreError::TaskFinished { id: "t1".into(), state: "completed", attempt: 2, holder: "b".into() },
            CoreError::TaskInFlightLimit { agent: "a".into(), held: 2, limit: 2 },
            CoreError::TaskNotDeadLettered { id: "t1".into(), state: "ready" },
            CoreError::UnknownTrace { namespace: "ns".into(), id: "t".into() },
            CoreError::TraceExists { id: "t".into(), stored: "a".into(), given: "b".into() },
            CoreError::TraceClaimed { id: "t".into(), holder: "a".into() },
            CoreError::TraceTooLarge { id: "t".into(), size: 2, limit: 1 },
            CoreError::TraceHashMismatch { id: "t".into(), what: "no".into() },
            CoreError::TraceWaitTimeout { id: "t".into(), holder: "a".into(), waited_ms: 5 },
            CoreError::UnknownRoundSeries { namespace: "ns".into(), series: "s".into() },
            CoreError::RoundSeriesExists { series: "s".into() },
            CoreError::NotARoundParticipant { series: "s".into(), round: 1, agent: "a".into() },
            CoreError::RoundNotOpen { series: "s".into(), round: 1, state: "closed".into() },
            CoreError::RoundAnswered { series: "s".into(), round: 1, agent: "a".into() },
            CoreError::RoundInProgress { series: "s".into(), round: 1, deadline: 5 },
            // --- event-time streams
            CoreError::EventTimeOutOfRange { event_time: 1, server_time: 100_000, earliest: 50, latest: 200_000 },
            CoreError::StreamExists { kind: "ticker", id: "bars".into() },
            CoreError::UnknownStream { kind: "buffer", namespace: "ns".into(), id: "x".into() },
            // --- intake
            CoreError::SchemaViolation {
                topic: "intake".into(),
                violations: vec![lockstep_core::intake::Violation {
                    path: "/price".into(),
                    reason: "\"x\" is not of type \"number\"".into(),
                }],
                total: 1,
            },
            // --- sync monitor
            SystemsError::UnknownSystem { name: "s".into() }.into(),
            SystemsError::SystemRetired { name: "s".into(), at: 5 }.into(),
            SystemsError::SystemExists { name: "s".into() }.into(),
            SystemsError::UnknownUnit {
                field: "latency",
                unit: "x".into(),
                quantity: "a duration",
                known: "ms".into(),
            }
            .into(),
            SystemsError::BadMeasurement { field: "drift", value: "-1".into(), why: "negative".into() }.into(),
            SystemsError::DependencyCycle { cycle: vec!["a".into(), "b".into(), "a".into()] }.into(),
            SystemsError::UnknownDependency { upstream: "a".into(), downstream: "b".into() }.into(),
            SystemsError::UnknownIncident { id: 1 }.into(),
            SystemsError::IncidentResolved { id: 1, at: 5 }.into(),
            SystemsError::RateLimited { reporter: "r".into(), limit: 1 }.into(),
            CoreError::Denied(Denial::Namespace { namespace: "b".into() }),
            CoreError::Denied(Denial::Publish { topic: "t".into() }),
            CoreError::Denied(Denial::Subscribe { pattern: "t.>".into() }),
            CoreError::Denied(Denial::Agent { bound: "agent 'a'".into(), asked: "agent 'b'".into() }),
            CoreError::Denied(Denial::ReadState { agents: "'b'".into() }),
            CoreError::Denied(Denial::Admin { action: "PauseAgent".into() }),
        ]
    }

    #[test]
    fn a_conflict_tells_the_current_version() {
        let e = CoreError::ContextConflict { key: "k".into(), expected: 3, current: 4 };
        assert_eq!(error(&e).current_version, 4);
        assert_eq!(crate::reason::named(&status(&e), "current_version"), "4");
    }

    #[test]
    fn every_engine_error_travels_with_its_reason() {
        let errors = every_core_error();
        let engine_reasons: std::collections::HashSet<Reason> = errors.iter().map(CoreError::reason).collect();
        // The rest are made by the server around the engine (shutting down, store, admin token,
        // commands, backups, oversized messages, tokens that do not verify); a new engine reason
        // without a sample here would raise the count.
        let shell_made = Reason::ALL.iter().filter(|r| !engine_reasons.contains(r)).count();
        assert_eq!(shell_made, 11, "every engine reason needs a sample above");
        for e in &errors {
            let s = status(e);
            assert_eq!(crate::reason::of_status(&s), Some(e.reason()), "{e}");
            assert_eq!(s.code(), grpc_code(e.code()));
            let wire = error(e);
            assert_eq!(crate::reason::of_error(&wire), Some(e.reason()), "{e}");
            assert_eq!(wire.sync_id, e.sync_id().unwrap_or_default());
        }
    }

    /// The rewording switch must leave no word of any message intact, or a client test that still
    /// matched words would pass against a rewording server.
    #[test]
    fn rewording_changes_every_engine_message() {
        for e in every_core_error() {
            let original = e.to_string();
            let reworded = crate::reason::reword(&original).to_lowercase();
            assert_ne!(reworded, original.to_lowercase());
            for word in original.split(|c: char| !c.is_alphanumeric()).filter(|w| w.len() >= 4) {
                let word = word.to_lowercase();
                let palindrome = word.chars().rev().collect::<String>() == word;
                assert!(palindrome || !reworded.contains(&word), "'{word}' survives in {reworded:?}");
            }
        }
    }
}
