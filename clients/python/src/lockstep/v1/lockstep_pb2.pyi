from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class AgentStatus(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    AGENT_STATUS_UNSPECIFIED: _ClassVar[AgentStatus]
    AGENT_STATUS_ACTIVE: _ClassVar[AgentStatus]
    AGENT_STATUS_IDLE: _ClassVar[AgentStatus]
    AGENT_STATUS_BUSY: _ClassVar[AgentStatus]
    AGENT_STATUS_SYNCING: _ClassVar[AgentStatus]
    AGENT_STATUS_PAUSED: _ClassVar[AgentStatus]
    AGENT_STATUS_LOST: _ClassVar[AgentStatus]

class CollectiveKind(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    COLLECTIVE_KIND_UNSPECIFIED: _ClassVar[CollectiveKind]
    COLLECTIVE_KIND_ALLREDUCE: _ClassVar[CollectiveKind]
    COLLECTIVE_KIND_BROADCAST: _ClassVar[CollectiveKind]
    COLLECTIVE_KIND_ALLGATHER: _ClassVar[CollectiveKind]
    COLLECTIVE_KIND_REDUCE_SCATTER: _ClassVar[CollectiveKind]

class ElementType(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    ELEMENT_TYPE_UNSPECIFIED: _ClassVar[ElementType]
    ELEMENT_TYPE_F32: _ClassVar[ElementType]
    ELEMENT_TYPE_F64: _ClassVar[ElementType]
    ELEMENT_TYPE_I32: _ClassVar[ElementType]
    ELEMENT_TYPE_I64: _ClassVar[ElementType]

class ReduceOp(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    REDUCE_OP_UNSPECIFIED: _ClassVar[ReduceOp]
    REDUCE_OP_SUM: _ClassVar[ReduceOp]
    REDUCE_OP_MEAN: _ClassVar[ReduceOp]
    REDUCE_OP_MIN: _ClassVar[ReduceOp]
    REDUCE_OP_MAX: _ClassVar[ReduceOp]
    REDUCE_OP_PRODUCT: _ClassVar[ReduceOp]
AGENT_STATUS_UNSPECIFIED: AgentStatus
AGENT_STATUS_ACTIVE: AgentStatus
AGENT_STATUS_IDLE: AgentStatus
AGENT_STATUS_BUSY: AgentStatus
AGENT_STATUS_SYNCING: AgentStatus
AGENT_STATUS_PAUSED: AgentStatus
AGENT_STATUS_LOST: AgentStatus
COLLECTIVE_KIND_UNSPECIFIED: CollectiveKind
COLLECTIVE_KIND_ALLREDUCE: CollectiveKind
COLLECTIVE_KIND_BROADCAST: CollectiveKind
COLLECTIVE_KIND_ALLGATHER: CollectiveKind
COLLECTIVE_KIND_REDUCE_SCATTER: CollectiveKind
ELEMENT_TYPE_UNSPECIFIED: ElementType
ELEMENT_TYPE_F32: ElementType
ELEMENT_TYPE_F64: ElementType
ELEMENT_TYPE_I32: ElementType
ELEMENT_TYPE_I64: ElementType
REDUCE_OP_UNSPECIFIED: ReduceOp
REDUCE_OP_SUM: ReduceOp
REDUCE_OP_MEAN: ReduceOp
REDUCE_OP_MIN: ReduceOp
REDUCE_OP_MAX: ReduceOp
REDUCE_OP_PRODUCT: ReduceOp

class BackupRequest(_message.Message):
    __slots__ = ("path",)
    PATH_FIELD_NUMBER: _ClassVar[int]
    path: str
    def __init__(self, path: _Optional[str] = ...) -> None: ...

class BackupResponse(_message.Message):
    __slots__ = ("path", "bytes")
    PATH_FIELD_NUMBER: _ClassVar[int]
    BYTES_FIELD_NUMBER: _ClassVar[int]
    path: str
    bytes: int
    def __init__(self, path: _Optional[str] = ..., bytes: _Optional[int] = ...) -> None: ...

class LeanHello(_message.Message):
    __slots__ = ("version", "token", "multiplex")
    VERSION_FIELD_NUMBER: _ClassVar[int]
    TOKEN_FIELD_NUMBER: _ClassVar[int]
    MULTIPLEX_FIELD_NUMBER: _ClassVar[int]
    version: int
    token: str
    multiplex: bool
    def __init__(self, version: _Optional[int] = ..., token: _Optional[str] = ..., multiplex: bool = ...) -> None: ...

class LeanEnd(_message.Message):
    __slots__ = ("code", "message", "details")
    CODE_FIELD_NUMBER: _ClassVar[int]
    MESSAGE_FIELD_NUMBER: _ClassVar[int]
    DETAILS_FIELD_NUMBER: _ClassVar[int]
    code: int
    message: str
    details: bytes
    def __init__(self, code: _Optional[int] = ..., message: _Optional[str] = ..., details: _Optional[bytes] = ...) -> None: ...

class ClientMessage(_message.Message):
    __slots__ = ("request_id", "register", "heartbeat", "publish", "update_state", "set_status", "watch_state", "unwatch_state", "sync", "ack", "deregister", "command_result", "delivery_error", "agent_request", "respond", "open_vote", "cast_ballot", "join_group", "leave_group", "context_write", "submit_task", "task_work", "stop_task_work", "claim_task", "start_task", "complete_task", "fail_task", "round_answer", "subscribe", "unsubscribe")
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    REGISTER_FIELD_NUMBER: _ClassVar[int]
    HEARTBEAT_FIELD_NUMBER: _ClassVar[int]
    PUBLISH_FIELD_NUMBER: _ClassVar[int]
    UPDATE_STATE_FIELD_NUMBER: _ClassVar[int]
    SET_STATUS_FIELD_NUMBER: _ClassVar[int]
    WATCH_STATE_FIELD_NUMBER: _ClassVar[int]
    UNWATCH_STATE_FIELD_NUMBER: _ClassVar[int]
    SYNC_FIELD_NUMBER: _ClassVar[int]
    ACK_FIELD_NUMBER: _ClassVar[int]
    DEREGISTER_FIELD_NUMBER: _ClassVar[int]
    COMMAND_RESULT_FIELD_NUMBER: _ClassVar[int]
    DELIVERY_ERROR_FIELD_NUMBER: _ClassVar[int]
    AGENT_REQUEST_FIELD_NUMBER: _ClassVar[int]
    RESPOND_FIELD_NUMBER: _ClassVar[int]
    OPEN_VOTE_FIELD_NUMBER: _ClassVar[int]
    CAST_BALLOT_FIELD_NUMBER: _ClassVar[int]
    JOIN_GROUP_FIELD_NUMBER: _ClassVar[int]
    LEAVE_GROUP_FIELD_NUMBER: _ClassVar[int]
    CONTEXT_WRITE_FIELD_NUMBER: _ClassVar[int]
    SUBMIT_TASK_FIELD_NUMBER: _ClassVar[int]
    TASK_WORK_FIELD_NUMBER: _ClassVar[int]
    STOP_TASK_WORK_FIELD_NUMBER: _ClassVar[int]
    CLAIM_TASK_FIELD_NUMBER: _ClassVar[int]
    START_TASK_FIELD_NUMBER: _ClassVar[int]
    COMPLETE_TASK_FIELD_NUMBER: _ClassVar[int]
    FAIL_TASK_FIELD_NUMBER: _ClassVar[int]
    ROUND_ANSWER_FIELD_NUMBER: _ClassVar[int]
    SUBSCRIBE_FIELD_NUMBER: _ClassVar[int]
    UNSUBSCRIBE_FIELD_NUMBER: _ClassVar[int]
    request_id: int
    register: Register
    heartbeat: Heartbeat
    publish: Publish
    update_state: UpdateState
    set_status: SetStatus
    watch_state: WatchState
    unwatch_state: UnwatchState
    sync: SyncArrive
    ack: Ack
    deregister: Deregister
    command_result: CommandResult
    delivery_error: DeliveryError
    agent_request: AgentRequest
    respond: Respond
    open_vote: OpenVote
    cast_ballot: CastBallot
    join_group: JoinGroup
    leave_group: LeaveGroup
    context_write: ContextWrite
    submit_task: SubmitTask
    task_work: TaskWork
    stop_task_work: StopTaskWork
    claim_task: ClaimTask
    start_task: StartTask
    complete_task: CompleteTask
    fail_task: FailTask
    round_answer: RoundAnswer
    subscribe: Subscribe
    unsubscribe: Unsubscribe
    def __init__(self, request_id: _Optional[int] = ..., register: _Optional[_Union[Register, _Mapping]] = ..., heartbeat: _Optional[_Union[Heartbeat, _Mapping]] = ..., publish: _Optional[_Union[Publish, _Mapping]] = ..., update_state: _Optional[_Union[UpdateState, _Mapping]] = ..., set_status: _Optional[_Union[SetStatus, _Mapping]] = ..., watch_state: _Optional[_Union[WatchState, _Mapping]] = ..., unwatch_state: _Optional[_Union[UnwatchState, _Mapping]] = ..., sync: _Optional[_Union[SyncArrive, _Mapping]] = ..., ack: _Optional[_Union[Ack, _Mapping]] = ..., deregister: _Optional[_Union[Deregister, _Mapping]] = ..., command_result: _Optional[_Union[CommandResult, _Mapping]] = ..., delivery_error: _Optional[_Union[DeliveryError, _Mapping]] = ..., agent_request: _Optional[_Union[AgentRequest, _Mapping]] = ..., respond: _Optional[_Union[Respond, _Mapping]] = ..., open_vote: _Optional[_Union[OpenVote, _Mapping]] = ..., cast_ballot: _Optional[_Union[CastBallot, _Mapping]] = ..., join_group: _Optional[_Union[JoinGroup, _Mapping]] = ..., leave_group: _Optional[_Union[LeaveGroup, _Mapping]] = ..., context_write: _Optional[_Union[ContextWrite, _Mapping]] = ..., submit_task: _Optional[_Union[SubmitTask, _Mapping]] = ..., task_work: _Optional[_Union[TaskWork, _Mapping]] = ..., stop_task_work: _Optional[_Union[StopTaskWork, _Mapping]] = ..., claim_task: _Optional[_Union[ClaimTask, _Mapping]] = ..., start_task: _Optional[_Union[StartTask, _Mapping]] = ..., complete_task: _Optional[_Union[CompleteTask, _Mapping]] = ..., fail_task: _Optional[_Union[FailTask, _Mapping]] = ..., round_answer: _Optional[_Union[RoundAnswer, _Mapping]] = ..., subscribe: _Optional[_Union[Subscribe, _Mapping]] = ..., unsubscribe: _Optional[_Union[Unsubscribe, _Mapping]] = ...) -> None: ...

class AgentRequest(_message.Message):
    __slots__ = ("topic", "payload", "content_type", "timeout_ms")
    TOPIC_FIELD_NUMBER: _ClassVar[int]
    PAYLOAD_FIELD_NUMBER: _ClassVar[int]
    CONTENT_TYPE_FIELD_NUMBER: _ClassVar[int]
    TIMEOUT_MS_FIELD_NUMBER: _ClassVar[int]
    topic: str
    payload: bytes
    content_type: str
    timeout_ms: int
    def __init__(self, topic: _Optional[str] = ..., payload: _Optional[bytes] = ..., content_type: _Optional[str] = ..., timeout_ms: _Optional[int] = ...) -> None: ...

class Respond(_message.Message):
    __slots__ = ("token", "payload", "content_type", "error")
    TOKEN_FIELD_NUMBER: _ClassVar[int]
    PAYLOAD_FIELD_NUMBER: _ClassVar[int]
    CONTENT_TYPE_FIELD_NUMBER: _ClassVar[int]
    ERROR_FIELD_NUMBER: _ClassVar[int]
    token: int
    payload: bytes
    content_type: str
    error: str
    def __init__(self, token: _Optional[int] = ..., payload: _Optional[bytes] = ..., content_type: _Optional[str] = ..., error: _Optional[str] = ...) -> None: ...

class DeliveryError(_message.Message):
    __slots__ = ("seq", "reason")
    SEQ_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    seq: int
    reason: str
    def __init__(self, seq: _Optional[int] = ..., reason: _Optional[str] = ...) -> None: ...

class Register(_message.Message):
    __slots__ = ("namespace", "agent_id", "role", "capabilities", "interests", "metadata", "resume_token")
    class MetadataEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    NAMESPACE_FIELD_NUMBER: _ClassVar[int]
    AGENT_ID_FIELD_NUMBER: _ClassVar[int]
    ROLE_FIELD_NUMBER: _ClassVar[int]
    CAPABILITIES_FIELD_NUMBER: _ClassVar[int]
    INTERESTS_FIELD_NUMBER: _ClassVar[int]
    METADATA_FIELD_NUMBER: _ClassVar[int]
    RESUME_TOKEN_FIELD_NUMBER: _ClassVar[int]
    namespace: str
    agent_id: str
    role: str
    capabilities: _containers.RepeatedScalarFieldContainer[str]
    interests: _containers.RepeatedScalarFieldContainer[str]
    metadata: _containers.ScalarMap[str, str]
    resume_token: str
    def __init__(self, namespace: _Optional[str] = ..., agent_id: _Optional[str] = ..., role: _Optional[str] = ..., capabilities: _Optional[_Iterable[str]] = ..., interests: _Optional[_Iterable[str]] = ..., metadata: _Optional[_Mapping[str, str]] = ..., resume_token: _Optional[str] = ...) -> None: ...

class Heartbeat(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class Publish(_message.Message):
    __slots__ = ("topic", "payload", "content_type", "event_time_ms")
    TOPIC_FIELD_NUMBER: _ClassVar[int]
    PAYLOAD_FIELD_NUMBER: _ClassVar[int]
    CONTENT_TYPE_FIELD_NUMBER: _ClassVar[int]
    EVENT_TIME_MS_FIELD_NUMBER: _ClassVar[int]
    topic: str
    payload: bytes
    content_type: str
    event_time_ms: int
    def __init__(self, topic: _Optional[str] = ..., payload: _Optional[bytes] = ..., content_type: _Optional[str] = ..., event_time_ms: _Optional[int] = ...) -> None: ...

class UpdateState(_message.Message):
    __slots__ = ("delta_json",)
    DELTA_JSON_FIELD_NUMBER: _ClassVar[int]
    delta_json: str
    def __init__(self, delta_json: _Optional[str] = ...) -> None: ...

class SetStatus(_message.Message):
    __slots__ = ("status",)
    STATUS_FIELD_NUMBER: _ClassVar[int]
    status: AgentStatus
    def __init__(self, status: _Optional[_Union[AgentStatus, str]] = ...) -> None: ...

class WatchState(_message.Message):
    __slots__ = ("agent_id", "role", "all")
    AGENT_ID_FIELD_NUMBER: _ClassVar[int]
    ROLE_FIELD_NUMBER: _ClassVar[int]
    ALL_FIELD_NUMBER: _ClassVar[int]
    agent_id: str
    role: str
    all: bool
    def __init__(self, agent_id: _Optional[str] = ..., role: _Optional[str] = ..., all: bool = ...) -> None: ...

class UnwatchState(_message.Message):
    __slots__ = ("agent_id", "role", "all")
    AGENT_ID_FIELD_NUMBER: _ClassVar[int]
    ROLE_FIELD_NUMBER: _ClassVar[int]
    ALL_FIELD_NUMBER: _ClassVar[int]
    agent_id: str
    role: str
    all: bool
    def __init__(self, agent_id: _Optional[str] = ..., role: _Optional[str] = ..., all: bool = ...) -> None: ...

class SyncArrive(_message.Message):
    __slots__ = ("sync_id", "agents", "count", "role", "timeout_ms", "payload", "summary", "quorum")
    SYNC_ID_FIELD_NUMBER: _ClassVar[int]
    AGENTS_FIELD_NUMBER: _ClassVar[int]
    COUNT_FIELD_NUMBER: _ClassVar[int]
    ROLE_FIELD_NUMBER: _ClassVar[int]
    TIMEOUT_MS_FIELD_NUMBER: _ClassVar[int]
    PAYLOAD_FIELD_NUMBER: _ClassVar[int]
    SUMMARY_FIELD_NUMBER: _ClassVar[int]
    QUORUM_FIELD_NUMBER: _ClassVar[int]
    sync_id: str
    agents: AgentIds
    count: int
    role: str
    timeout_ms: int
    payload: bytes
    summary: bool
    quorum: int
    def __init__(self, sync_id: _Optional[str] = ..., agents: _Optional[_Union[AgentIds, _Mapping]] = ..., count: _Optional[int] = ..., role: _Optional[str] = ..., timeout_ms: _Optional[int] = ..., payload: _Optional[bytes] = ..., summary: bool = ..., quorum: _Optional[int] = ...) -> None: ...

class AgentIds(_message.Message):
    __slots__ = ("ids",)
    IDS_FIELD_NUMBER: _ClassVar[int]
    ids: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, ids: _Optional[_Iterable[str]] = ...) -> None: ...

class Ack(_message.Message):
    __slots__ = ("up_to_seq",)
    UP_TO_SEQ_FIELD_NUMBER: _ClassVar[int]
    up_to_seq: int
    def __init__(self, up_to_seq: _Optional[int] = ...) -> None: ...

class Deregister(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class CommandResult(_message.Message):
    __slots__ = ("command_id", "result_json", "error")
    COMMAND_ID_FIELD_NUMBER: _ClassVar[int]
    RESULT_JSON_FIELD_NUMBER: _ClassVar[int]
    ERROR_FIELD_NUMBER: _ClassVar[int]
    command_id: int
    result_json: str
    error: str
    def __init__(self, command_id: _Optional[int] = ..., result_json: _Optional[str] = ..., error: _Optional[str] = ...) -> None: ...

class ServerMessage(_message.Message):
    __slots__ = ("registered", "reply", "deliveries", "state_changes", "control", "command", "incoming_request", "task_assigned", "task_event", "round_input", "history_gap")
    REGISTERED_FIELD_NUMBER: _ClassVar[int]
    REPLY_FIELD_NUMBER: _ClassVar[int]
    DELIVERIES_FIELD_NUMBER: _ClassVar[int]
    STATE_CHANGES_FIELD_NUMBER: _ClassVar[int]
    CONTROL_FIELD_NUMBER: _ClassVar[int]
    COMMAND_FIELD_NUMBER: _ClassVar[int]
    INCOMING_REQUEST_FIELD_NUMBER: _ClassVar[int]
    TASK_ASSIGNED_FIELD_NUMBER: _ClassVar[int]
    TASK_EVENT_FIELD_NUMBER: _ClassVar[int]
    ROUND_INPUT_FIELD_NUMBER: _ClassVar[int]
    HISTORY_GAP_FIELD_NUMBER: _ClassVar[int]
    registered: Registered
    reply: Reply
    deliveries: Deliveries
    state_changes: StateChanges
    control: Control
    command: Command
    incoming_request: IncomingRequest
    task_assigned: TaskAssignment
    task_event: TaskEvent
    round_input: RoundInput
    history_gap: HistoryGap
    def __init__(self, registered: _Optional[_Union[Registered, _Mapping]] = ..., reply: _Optional[_Union[Reply, _Mapping]] = ..., deliveries: _Optional[_Union[Deliveries, _Mapping]] = ..., state_changes: _Optional[_Union[StateChanges, _Mapping]] = ..., control: _Optional[_Union[Control, _Mapping]] = ..., command: _Optional[_Union[Command, _Mapping]] = ..., incoming_request: _Optional[_Union[IncomingRequest, _Mapping]] = ..., task_assigned: _Optional[_Union[TaskAssignment, _Mapping]] = ..., task_event: _Optional[_Union[TaskEvent, _Mapping]] = ..., round_input: _Optional[_Union[RoundInput, _Mapping]] = ..., history_gap: _Optional[_Union[HistoryGap, _Mapping]] = ...) -> None: ...

class IncomingRequest(_message.Message):
    __slots__ = ("token", "topic", "payload", "content_type", "requester", "deadline_ms")
    TOKEN_FIELD_NUMBER: _ClassVar[int]
    TOPIC_FIELD_NUMBER: _ClassVar[int]
    PAYLOAD_FIELD_NUMBER: _ClassVar[int]
    CONTENT_TYPE_FIELD_NUMBER: _ClassVar[int]
    REQUESTER_FIELD_NUMBER: _ClassVar[int]
    DEADLINE_MS_FIELD_NUMBER: _ClassVar[int]
    token: int
    topic: str
    payload: bytes
    content_type: str
    requester: str
    deadline_ms: int
    def __init__(self, token: _Optional[int] = ..., topic: _Optional[str] = ..., payload: _Optional[bytes] = ..., content_type: _Optional[str] = ..., requester: _Optional[str] = ..., deadline_ms: _Optional[int] = ...) -> None: ...

class Control(_message.Message):
    __slots__ = ("kind", "actor", "reason")
    class Kind(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
        __slots__ = ()
        KIND_UNSPECIFIED: _ClassVar[Control.Kind]
        KIND_PAUSED: _ClassVar[Control.Kind]
        KIND_RESUMED: _ClassVar[Control.Kind]
        KIND_EMERGENCY_STOP: _ClassVar[Control.Kind]
        KIND_RESUMED_ALL: _ClassVar[Control.Kind]
    KIND_UNSPECIFIED: Control.Kind
    KIND_PAUSED: Control.Kind
    KIND_RESUMED: Control.Kind
    KIND_EMERGENCY_STOP: Control.Kind
    KIND_RESUMED_ALL: Control.Kind
    KIND_FIELD_NUMBER: _ClassVar[int]
    ACTOR_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    kind: Control.Kind
    actor: str
    reason: str
    def __init__(self, kind: _Optional[_Union[Control.Kind, str]] = ..., actor: _Optional[str] = ..., reason: _Optional[str] = ...) -> None: ...

class Command(_message.Message):
    __slots__ = ("command_id", "command", "params_json", "deadline_ms")
    COMMAND_ID_FIELD_NUMBER: _ClassVar[int]
    COMMAND_FIELD_NUMBER: _ClassVar[int]
    PARAMS_JSON_FIELD_NUMBER: _ClassVar[int]
    DEADLINE_MS_FIELD_NUMBER: _ClassVar[int]
    command_id: int
    command: str
    params_json: str
    deadline_ms: int
    def __init__(self, command_id: _Optional[int] = ..., command: _Optional[str] = ..., params_json: _Optional[str] = ..., deadline_ms: _Optional[int] = ...) -> None: ...

class Registered(_message.Message):
    __slots__ = ("namespace", "agent_id", "resume_token", "heartbeat_interval_ms", "lease_intervals", "resumed", "limits", "connection_heartbeats", "missed_messages")
    NAMESPACE_FIELD_NUMBER: _ClassVar[int]
    AGENT_ID_FIELD_NUMBER: _ClassVar[int]
    RESUME_TOKEN_FIELD_NUMBER: _ClassVar[int]
    HEARTBEAT_INTERVAL_MS_FIELD_NUMBER: _ClassVar[int]
    LEASE_INTERVALS_FIELD_NUMBER: _ClassVar[int]
    RESUMED_FIELD_NUMBER: _ClassVar[int]
    LIMITS_FIELD_NUMBER: _ClassVar[int]
    CONNECTION_HEARTBEATS_FIELD_NUMBER: _ClassVar[int]
    MISSED_MESSAGES_FIELD_NUMBER: _ClassVar[int]
    namespace: str
    agent_id: str
    resume_token: str
    heartbeat_interval_ms: int
    lease_intervals: int
    resumed: bool
    limits: Limits
    connection_heartbeats: bool
    missed_messages: int
    def __init__(self, namespace: _Optional[str] = ..., agent_id: _Optional[str] = ..., resume_token: _Optional[str] = ..., heartbeat_interval_ms: _Optional[int] = ..., lease_intervals: _Optional[int] = ..., resumed: bool = ..., limits: _Optional[_Union[Limits, _Mapping]] = ..., connection_heartbeats: bool = ..., missed_messages: _Optional[int] = ...) -> None: ...

class Reply(_message.Message):
    __slots__ = ("request_id", "ok", "error", "state_version", "sync_result", "agent_response", "vote_outcome", "group_membership", "context_written", "task_submitted", "task_claimed")
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    OK_FIELD_NUMBER: _ClassVar[int]
    ERROR_FIELD_NUMBER: _ClassVar[int]
    STATE_VERSION_FIELD_NUMBER: _ClassVar[int]
    SYNC_RESULT_FIELD_NUMBER: _ClassVar[int]
    AGENT_RESPONSE_FIELD_NUMBER: _ClassVar[int]
    VOTE_OUTCOME_FIELD_NUMBER: _ClassVar[int]
    GROUP_MEMBERSHIP_FIELD_NUMBER: _ClassVar[int]
    CONTEXT_WRITTEN_FIELD_NUMBER: _ClassVar[int]
    TASK_SUBMITTED_FIELD_NUMBER: _ClassVar[int]
    TASK_CLAIMED_FIELD_NUMBER: _ClassVar[int]
    request_id: int
    ok: Ok
    error: Error
    state_version: StateVersion
    sync_result: SyncResult
    agent_response: AgentResponse
    vote_outcome: VoteOutcome
    group_membership: GroupMembership
    context_written: ContextWritten
    task_submitted: TaskSubmitted
    task_claimed: TaskClaimed
    def __init__(self, request_id: _Optional[int] = ..., ok: _Optional[_Union[Ok, _Mapping]] = ..., error: _Optional[_Union[Error, _Mapping]] = ..., state_version: _Optional[_Union[StateVersion, _Mapping]] = ..., sync_result: _Optional[_Union[SyncResult, _Mapping]] = ..., agent_response: _Optional[_Union[AgentResponse, _Mapping]] = ..., vote_outcome: _Optional[_Union[VoteOutcome, _Mapping]] = ..., group_membership: _Optional[_Union[GroupMembership, _Mapping]] = ..., context_written: _Optional[_Union[ContextWritten, _Mapping]] = ..., task_submitted: _Optional[_Union[TaskSubmitted, _Mapping]] = ..., task_claimed: _Optional[_Union[TaskClaimed, _Mapping]] = ...) -> None: ...

class AgentResponse(_message.Message):
    __slots__ = ("payload", "content_type", "responder")
    PAYLOAD_FIELD_NUMBER: _ClassVar[int]
    CONTENT_TYPE_FIELD_NUMBER: _ClassVar[int]
    RESPONDER_FIELD_NUMBER: _ClassVar[int]
    payload: bytes
    content_type: str
    responder: str
    def __init__(self, payload: _Optional[bytes] = ..., content_type: _Optional[str] = ..., responder: _Optional[str] = ...) -> None: ...

class Ok(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class Error(_message.Message):
    __slots__ = ("code", "message", "missing_agents", "sync_id", "reason", "current_version", "schema_errors")
    CODE_FIELD_NUMBER: _ClassVar[int]
    MESSAGE_FIELD_NUMBER: _ClassVar[int]
    MISSING_AGENTS_FIELD_NUMBER: _ClassVar[int]
    SYNC_ID_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    CURRENT_VERSION_FIELD_NUMBER: _ClassVar[int]
    SCHEMA_ERRORS_FIELD_NUMBER: _ClassVar[int]
    code: int
    message: str
    missing_agents: _containers.RepeatedScalarFieldContainer[str]
    sync_id: str
    reason: str
    current_version: int
    schema_errors: _containers.RepeatedCompositeFieldContainer[SchemaError]
    def __init__(self, code: _Optional[int] = ..., message: _Optional[str] = ..., missing_agents: _Optional[_Iterable[str]] = ..., sync_id: _Optional[str] = ..., reason: _Optional[str] = ..., current_version: _Optional[int] = ..., schema_errors: _Optional[_Iterable[_Union[SchemaError, _Mapping]]] = ...) -> None: ...

class StateVersion(_message.Message):
    __slots__ = ("version",)
    VERSION_FIELD_NUMBER: _ClassVar[int]
    version: int
    def __init__(self, version: _Optional[int] = ...) -> None: ...

class SyncResult(_message.Message):
    __slots__ = ("sync_id", "arrival_order", "payloads", "forced", "count", "digest", "summary", "position", "late", "late_count")
    SYNC_ID_FIELD_NUMBER: _ClassVar[int]
    ARRIVAL_ORDER_FIELD_NUMBER: _ClassVar[int]
    PAYLOADS_FIELD_NUMBER: _ClassVar[int]
    FORCED_FIELD_NUMBER: _ClassVar[int]
    COUNT_FIELD_NUMBER: _ClassVar[int]
    DIGEST_FIELD_NUMBER: _ClassVar[int]
    SUMMARY_FIELD_NUMBER: _ClassVar[int]
    POSITION_FIELD_NUMBER: _ClassVar[int]
    LATE_FIELD_NUMBER: _ClassVar[int]
    LATE_COUNT_FIELD_NUMBER: _ClassVar[int]
    sync_id: str
    arrival_order: _containers.RepeatedScalarFieldContainer[str]
    payloads: _containers.RepeatedScalarFieldContainer[bytes]
    forced: bool
    count: int
    digest: int
    summary: bool
    position: int
    late: _containers.RepeatedScalarFieldContainer[str]
    late_count: int
    def __init__(self, sync_id: _Optional[str] = ..., arrival_order: _Optional[_Iterable[str]] = ..., payloads: _Optional[_Iterable[bytes]] = ..., forced: bool = ..., count: _Optional[int] = ..., digest: _Optional[int] = ..., summary: bool = ..., position: _Optional[int] = ..., late: _Optional[_Iterable[str]] = ..., late_count: _Optional[int] = ...) -> None: ...

class Deliveries(_message.Message):
    __slots__ = ("first_seq", "missed_before", "items")
    FIRST_SEQ_FIELD_NUMBER: _ClassVar[int]
    MISSED_BEFORE_FIELD_NUMBER: _ClassVar[int]
    ITEMS_FIELD_NUMBER: _ClassVar[int]
    first_seq: int
    missed_before: int
    items: _containers.RepeatedCompositeFieldContainer[Delivery]
    def __init__(self, first_seq: _Optional[int] = ..., missed_before: _Optional[int] = ..., items: _Optional[_Iterable[_Union[Delivery, _Mapping]]] = ...) -> None: ...

class Delivery(_message.Message):
    __slots__ = ("topic", "payload", "content_type", "publisher", "topic_seq", "time_ms", "intake_seq", "categorised_from", "intake_time_ms", "tick_id", "intake_rule")
    TOPIC_FIELD_NUMBER: _ClassVar[int]
    PAYLOAD_FIELD_NUMBER: _ClassVar[int]
    CONTENT_TYPE_FIELD_NUMBER: _ClassVar[int]
    PUBLISHER_FIELD_NUMBER: _ClassVar[int]
    TOPIC_SEQ_FIELD_NUMBER: _ClassVar[int]
    TIME_MS_FIELD_NUMBER: _ClassVar[int]
    INTAKE_SEQ_FIELD_NUMBER: _ClassVar[int]
    CATEGORISED_FROM_FIELD_NUMBER: _ClassVar[int]
    INTAKE_TIME_MS_FIELD_NUMBER: _ClassVar[int]
    TICK_ID_FIELD_NUMBER: _ClassVar[int]
    INTAKE_RULE_FIELD_NUMBER: _ClassVar[int]
    topic: str
    payload: bytes
    content_type: str
    publisher: str
    topic_seq: int
    time_ms: int
    intake_seq: int
    categorised_from: str
    intake_time_ms: int
    tick_id: int
    intake_rule: str
    def __init__(self, topic: _Optional[str] = ..., payload: _Optional[bytes] = ..., content_type: _Optional[str] = ..., publisher: _Optional[str] = ..., topic_seq: _Optional[int] = ..., time_ms: _Optional[int] = ..., intake_seq: _Optional[int] = ..., categorised_from: _Optional[str] = ..., intake_time_ms: _Optional[int] = ..., tick_id: _Optional[int] = ..., intake_rule: _Optional[str] = ...) -> None: ...

class StateChanges(_message.Message):
    __slots__ = ("items",)
    ITEMS_FIELD_NUMBER: _ClassVar[int]
    items: _containers.RepeatedCompositeFieldContainer[StateChange]
    def __init__(self, items: _Optional[_Iterable[_Union[StateChange, _Mapping]]] = ...) -> None: ...

class StateChange(_message.Message):
    __slots__ = ("agent_id", "base_version", "version", "delta_json", "removed")
    AGENT_ID_FIELD_NUMBER: _ClassVar[int]
    BASE_VERSION_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    DELTA_JSON_FIELD_NUMBER: _ClassVar[int]
    REMOVED_FIELD_NUMBER: _ClassVar[int]
    agent_id: str
    base_version: int
    version: int
    delta_json: str
    removed: bool
    def __init__(self, agent_id: _Optional[str] = ..., base_version: _Optional[int] = ..., version: _Optional[int] = ..., delta_json: _Optional[str] = ..., removed: bool = ...) -> None: ...

class AgentInfo(_message.Message):
    __slots__ = ("namespace", "agent_id", "role", "capabilities", "interests", "metadata", "status", "registered_at_ms", "last_heartbeat_ms", "state_version", "queue_depth", "dropped", "delivered", "breaker_state", "breaker_opened")
    class MetadataEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    NAMESPACE_FIELD_NUMBER: _ClassVar[int]
    AGENT_ID_FIELD_NUMBER: _ClassVar[int]
    ROLE_FIELD_NUMBER: _ClassVar[int]
    CAPABILITIES_FIELD_NUMBER: _ClassVar[int]
    INTERESTS_FIELD_NUMBER: _ClassVar[int]
    METADATA_FIELD_NUMBER: _ClassVar[int]
    STATUS_FIELD_NUMBER: _ClassVar[int]
    REGISTERED_AT_MS_FIELD_NUMBER: _ClassVar[int]
    LAST_HEARTBEAT_MS_FIELD_NUMBER: _ClassVar[int]
    STATE_VERSION_FIELD_NUMBER: _ClassVar[int]
    QUEUE_DEPTH_FIELD_NUMBER: _ClassVar[int]
    DROPPED_FIELD_NUMBER: _ClassVar[int]
    DELIVERED_FIELD_NUMBER: _ClassVar[int]
    BREAKER_STATE_FIELD_NUMBER: _ClassVar[int]
    BREAKER_OPENED_FIELD_NUMBER: _ClassVar[int]
    namespace: str
    agent_id: str
    role: str
    capabilities: _containers.RepeatedScalarFieldContainer[str]
    interests: _containers.RepeatedScalarFieldContainer[str]
    metadata: _containers.ScalarMap[str, str]
    status: AgentStatus
    registered_at_ms: int
    last_heartbeat_ms: int
    state_version: int
    queue_depth: int
    dropped: int
    delivered: int
    breaker_state: str
    breaker_opened: int
    def __init__(self, namespace: _Optional[str] = ..., agent_id: _Optional[str] = ..., role: _Optional[str] = ..., capabilities: _Optional[_Iterable[str]] = ..., interests: _Optional[_Iterable[str]] = ..., metadata: _Optional[_Mapping[str, str]] = ..., status: _Optional[_Union[AgentStatus, str]] = ..., registered_at_ms: _Optional[int] = ..., last_heartbeat_ms: _Optional[int] = ..., state_version: _Optional[int] = ..., queue_depth: _Optional[int] = ..., dropped: _Optional[int] = ..., delivered: _Optional[int] = ..., breaker_state: _Optional[str] = ..., breaker_opened: _Optional[int] = ...) -> None: ...

class ListAgentsRequest(_message.Message):
    __slots__ = ("namespace", "role", "capability", "status", "page_token", "page_size")
    NAMESPACE_FIELD_NUMBER: _ClassVar[int]
    ROLE_FIELD_NUMBER: _ClassVar[int]
    CAPABILITY_FIELD_NUMBER: _ClassVar[int]
    STATUS_FIELD_NUMBER: _ClassVar[int]
    PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    PAGE_SIZE_FIELD_NUMBER: _ClassVar[int]
    namespace: str
    role: str
    capability: str
    status: AgentStatus
    page_token: str
    page_size: int
    def __init__(self, namespace: _Optional[str] = ..., role: _Optional[str] = ..., capability: _Optional[str] = ..., status: _Optional[_Union[AgentStatus, str]] = ..., page_token: _Optional[str] = ..., page_size: _Optional[int] = ...) -> None: ...

class ListAgentsResponse(_message.Message):
    __slots__ = ("agents", "next_page_token")
    AGENTS_FIELD_NUMBER: _ClassVar[int]
    NEXT_PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    agents: _containers.RepeatedCompositeFieldContainer[AgentInfo]
    next_page_token: str
    def __init__(self, agents: _Optional[_Iterable[_Union[AgentInfo, _Mapping]]] = ..., next_page_token: _Optional[str] = ...) -> None: ...

class WatchRegistryRequest(_message.Message):
    __slots__ = ("namespace",)
    NAMESPACE_FIELD_NUMBER: _ClassVar[int]
    namespace: str
    def __init__(self, namespace: _Optional[str] = ...) -> None: ...

class RegistryEvent(_message.Message):
    __slots__ = ("kind", "agent", "previous_status")
    class Kind(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
        __slots__ = ()
        KIND_UNSPECIFIED: _ClassVar[RegistryEvent.Kind]
        KIND_SNAPSHOT: _ClassVar[RegistryEvent.Kind]
        KIND_JOINED: _ClassVar[RegistryEvent.Kind]
        KIND_LEFT: _ClassVar[RegistryEvent.Kind]
        KIND_STATUS: _ClassVar[RegistryEvent.Kind]
        KIND_LOST: _ClassVar[RegistryEvent.Kind]
        KIND_BREAKER: _ClassVar[RegistryEvent.Kind]
    KIND_UNSPECIFIED: RegistryEvent.Kind
    KIND_SNAPSHOT: RegistryEvent.Kind
    KIND_JOINED: RegistryEvent.Kind
    KIND_LEFT: RegistryEvent.Kind
    KIND_STATUS: RegistryEvent.Kind
    KIND_LOST: RegistryEvent.Kind
    KIND_BREAKER: RegistryEvent.Kind
    KIND_FIELD_NUMBER: _ClassVar[int]
    AGENT_FIELD_NUMBER: _ClassVar[int]
    PREVIOUS_STATUS_FIELD_NUMBER: _ClassVar[int]
    kind: RegistryEvent.Kind
    agent: AgentInfo
    previous_status: AgentStatus
    def __init__(self, kind: _Optional[_Union[RegistryEvent.Kind, str]] = ..., agent: _Optional[_Union[AgentInfo, _Mapping]] = ..., previous_status: _Optional[_Union[AgentStatus, str]] = ...) -> None: ...

class GetStateRequest(_message.Message):
    __slots__ = ("namespace", "agent_id")
    NAMESPACE_FIELD_NUMBER: _ClassVar[int]
    AGENT_ID_FIELD_NUMBER: _ClassVar[int]
    namespace: str
    agent_id: str
    def __init__(self, namespace: _Optional[str] = ..., agent_id: _Optional[str] = ...) -> None: ...

class GetStateResponse(_message.Message):
    __slots__ = ("agent_id", "version", "state_json")
    AGENT_ID_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    STATE_JSON_FIELD_NUMBER: _ClassVar[int]
    agent_id: str
    version: int
    state_json: str
    def __init__(self, agent_id: _Optional[str] = ..., version: _Optional[int] = ..., state_json: _Optional[str] = ...) -> None: ...

class ListSyncPointsRequest(_message.Message):
    __slots__ = ("namespace", "page_token", "page_size")
    NAMESPACE_FIELD_NUMBER: _ClassVar[int]
    PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    PAGE_SIZE_FIELD_NUMBER: _ClassVar[int]
    namespace: str
    page_token: str
    page_size: int
    def __init__(self, namespace: _Optional[str] = ..., page_token: _Optional[str] = ..., page_size: _Optional[int] = ...) -> None: ...

class ListSyncPointsResponse(_message.Message):
    __slots__ = ("sync_points", "next_page_token")
    SYNC_POINTS_FIELD_NUMBER: _ClassVar[int]
    NEXT_PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    sync_points: _containers.RepeatedCompositeFieldContainer[SyncPointStatus]
    next_page_token: str
    def __init__(self, sync_points: _Optional[_Iterable[_Union[SyncPointStatus, _Mapping]]] = ..., next_page_token: _Optional[str] = ...) -> None: ...

class SyncStatusRequest(_message.Message):
    __slots__ = ("namespace", "sync_id")
    NAMESPACE_FIELD_NUMBER: _ClassVar[int]
    SYNC_ID_FIELD_NUMBER: _ClassVar[int]
    namespace: str
    sync_id: str
    def __init__(self, namespace: _Optional[str] = ..., sync_id: _Optional[str] = ...) -> None: ...

class SyncPointStatus(_message.Message):
    __slots__ = ("sync_id", "state", "participants", "required", "required_count", "arrived", "missing", "created_at_ms", "waiting_since_ms", "deadline_ms", "finished_at_ms", "failure", "now_ms", "quorum")
    class State(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
        __slots__ = ()
        STATE_UNSPECIFIED: _ClassVar[SyncPointStatus.State]
        STATE_WAITING: _ClassVar[SyncPointStatus.State]
        STATE_COMPLETED: _ClassVar[SyncPointStatus.State]
        STATE_FORCED: _ClassVar[SyncPointStatus.State]
        STATE_TIMED_OUT: _ClassVar[SyncPointStatus.State]
        STATE_FAILED: _ClassVar[SyncPointStatus.State]
    STATE_UNSPECIFIED: SyncPointStatus.State
    STATE_WAITING: SyncPointStatus.State
    STATE_COMPLETED: SyncPointStatus.State
    STATE_FORCED: SyncPointStatus.State
    STATE_TIMED_OUT: SyncPointStatus.State
    STATE_FAILED: SyncPointStatus.State
    SYNC_ID_FIELD_NUMBER: _ClassVar[int]
    STATE_FIELD_NUMBER: _ClassVar[int]
    PARTICIPANTS_FIELD_NUMBER: _ClassVar[int]
    REQUIRED_FIELD_NUMBER: _ClassVar[int]
    REQUIRED_COUNT_FIELD_NUMBER: _ClassVar[int]
    ARRIVED_FIELD_NUMBER: _ClassVar[int]
    MISSING_FIELD_NUMBER: _ClassVar[int]
    CREATED_AT_MS_FIELD_NUMBER: _ClassVar[int]
    WAITING_SINCE_MS_FIELD_NUMBER: _ClassVar[int]
    DEADLINE_MS_FIELD_NUMBER: _ClassVar[int]
    FINISHED_AT_MS_FIELD_NUMBER: _ClassVar[int]
    FAILURE_FIELD_NUMBER: _ClassVar[int]
    NOW_MS_FIELD_NUMBER: _ClassVar[int]
    QUORUM_FIELD_NUMBER: _ClassVar[int]
    sync_id: str
    state: SyncPointStatus.State
    participants: str
    required: _containers.RepeatedScalarFieldContainer[str]
    required_count: int
    arrived: _containers.RepeatedScalarFieldContainer[str]
    missing: _containers.RepeatedScalarFieldContainer[str]
    created_at_ms: int
    waiting_since_ms: int
    deadline_ms: int
    finished_at_ms: int
    failure: str
    now_ms: int
    quorum: int
    def __init__(self, sync_id: _Optional[str] = ..., state: _Optional[_Union[SyncPointStatus.State, str]] = ..., participants: _Optional[str] = ..., required: _Optional[_Iterable[str]] = ..., required_count: _Optional[int] = ..., arrived: _Optional[_Iterable[str]] = ..., missing: _Optional[_Iterable[str]] = ..., created_at_ms: _Optional[int] = ..., waiting_since_ms: _Optional[int] = ..., deadline_ms: _Optional[int] = ..., finished_at_ms: _Optional[int] = ..., failure: _Optional[str] = ..., now_ms: _Optional[int] = ..., quorum: _Optional[int] = ...) -> None: ...

class SyncDiagnosis(_message.Message):
    __slots__ = ("status", "issues", "recommendations")
    STATUS_FIELD_NUMBER: _ClassVar[int]
    ISSUES_FIELD_NUMBER: _ClassVar[int]
    RECOMMENDATIONS_FIELD_NUMBER: _ClassVar[int]
    status: SyncPointStatus
    issues: _containers.RepeatedScalarFieldContainer[str]
    recommendations: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, status: _Optional[_Union[SyncPointStatus, _Mapping]] = ..., issues: _Optional[_Iterable[str]] = ..., recommendations: _Optional[_Iterable[str]] = ...) -> None: ...

class CleanupSyncPointsRequest(_message.Message):
    __slots__ = ("namespace",)
    NAMESPACE_FIELD_NUMBER: _ClassVar[int]
    namespace: str
    def __init__(self, namespace: _Optional[str] = ...) -> None: ...

class CleanupSyncPointsResponse(_message.Message):
    __slots__ = ("removed",)
    REMOVED_FIELD_NUMBER: _ClassVar[int]
    removed: int
    def __init__(self, removed: _Optional[int] = ...) -> None: ...

class ServerInfoRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class ServerInfoResponse(_message.Message):
    __slots__ = ("version", "now_ms", "heartbeat_interval_ms", "lease_intervals", "limits", "agents", "published", "delivered", "dropped", "lean_port")
    VERSION_FIELD_NUMBER: _ClassVar[int]
    NOW_MS_FIELD_NUMBER: _ClassVar[int]
    HEARTBEAT_INTERVAL_MS_FIELD_NUMBER: _ClassVar[int]
    LEASE_INTERVALS_FIELD_NUMBER: _ClassVar[int]
    LIMITS_FIELD_NUMBER: _ClassVar[int]
    AGENTS_FIELD_NUMBER: _ClassVar[int]
    PUBLISHED_FIELD_NUMBER: _ClassVar[int]
    DELIVERED_FIELD_NUMBER: _ClassVar[int]
    DROPPED_FIELD_NUMBER: _ClassVar[int]
    LEAN_PORT_FIELD_NUMBER: _ClassVar[int]
    version: str
    now_ms: int
    heartbeat_interval_ms: int
    lease_intervals: int
    limits: Limits
    agents: int
    published: int
    delivered: int
    dropped: int
    lean_port: int
    def __init__(self, version: _Optional[str] = ..., now_ms: _Optional[int] = ..., heartbeat_interval_ms: _Optional[int] = ..., lease_intervals: _Optional[int] = ..., limits: _Optional[_Union[Limits, _Mapping]] = ..., agents: _Optional[int] = ..., published: _Optional[int] = ..., delivered: _Optional[int] = ..., dropped: _Optional[int] = ..., lean_port: _Optional[int] = ...) -> None: ...

class AgentRef(_message.Message):
    __slots__ = ("namespace", "agent_id")
    NAMESPACE_FIELD_NUMBER: _ClassVar[int]
    AGENT_ID_FIELD_NUMBER: _ClassVar[int]
    namespace: str
    agent_id: str
    def __init__(self, namespace: _Optional[str] = ..., agent_id: _Optional[str] = ...) -> None: ...

class AdminAck(_message.Message):
    __slots__ = ("detail",)
    DETAIL_FIELD_NUMBER: _ClassVar[int]
    detail: str
    def __init__(self, detail: _Optional[str] = ...) -> None: ...

class EmergencyStopRequest(_message.Message):
    __slots__ = ("reason",)
    REASON_FIELD_NUMBER: _ClassVar[int]
    reason: str
    def __init__(self, reason: _Optional[str] = ...) -> None: ...

class ResumeAllRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class StatusRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class StatusResponse(_message.Message):
    __slots__ = ("agents", "agents_by_status", "paused", "emergency_stop", "emergency_actor", "emergency_reason", "emergency_since_ms", "pending_commands", "published", "delivered", "dropped", "now_ms")
    class AgentsByStatusEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: int
        def __init__(self, key: _Optional[str] = ..., value: _Optional[int] = ...) -> None: ...
    AGENTS_FIELD_NUMBER: _ClassVar[int]
    AGENTS_BY_STATUS_FIELD_NUMBER: _ClassVar[int]
    PAUSED_FIELD_NUMBER: _ClassVar[int]
    EMERGENCY_STOP_FIELD_NUMBER: _ClassVar[int]
    EMERGENCY_ACTOR_FIELD_NUMBER: _ClassVar[int]
    EMERGENCY_REASON_FIELD_NUMBER: _ClassVar[int]
    EMERGENCY_SINCE_MS_FIELD_NUMBER: _ClassVar[int]
    PENDING_COMMANDS_FIELD_NUMBER: _ClassVar[int]
    PUBLISHED_FIELD_NUMBER: _ClassVar[int]
    DELIVERED_FIELD_NUMBER: _ClassVar[int]
    DROPPED_FIELD_NUMBER: _ClassVar[int]
    NOW_MS_FIELD_NUMBER: _ClassVar[int]
    agents: int
    agents_by_status: _containers.ScalarMap[str, int]
    paused: _containers.RepeatedCompositeFieldContainer[AgentRef]
    emergency_stop: bool
    emergency_actor: str
    emergency_reason: str
    emergency_since_ms: int
    pending_commands: int
    published: int
    delivered: int
    dropped: int
    now_ms: int
    def __init__(self, agents: _Optional[int] = ..., agents_by_status: _Optional[_Mapping[str, int]] = ..., paused: _Optional[_Iterable[_Union[AgentRef, _Mapping]]] = ..., emergency_stop: bool = ..., emergency_actor: _Optional[str] = ..., emergency_reason: _Optional[str] = ..., emergency_since_ms: _Optional[int] = ..., pending_commands: _Optional[int] = ..., published: _Optional[int] = ..., delivered: _Optional[int] = ..., dropped: _Optional[int] = ..., now_ms: _Optional[int] = ...) -> None: ...

class HealthRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class AgentHealth(_message.Message):
    __slots__ = ("namespace", "agent_id", "role", "status", "issues", "deliveries_succeeded", "deliveries_failed", "success_ratio", "ack_p50_ms", "ack_p99_ms", "queue_depth", "queue_high_water", "dropped", "breaker_state", "breaker_since_ms", "last_heartbeat_ms", "last_progress_ms")
    NAMESPACE_FIELD_NUMBER: _ClassVar[int]
    AGENT_ID_FIELD_NUMBER: _ClassVar[int]
    ROLE_FIELD_NUMBER: _ClassVar[int]
    STATUS_FIELD_NUMBER: _ClassVar[int]
    ISSUES_FIELD_NUMBER: _ClassVar[int]
    DELIVERIES_SUCCEEDED_FIELD_NUMBER: _ClassVar[int]
    DELIVERIES_FAILED_FIELD_NUMBER: _ClassVar[int]
    SUCCESS_RATIO_FIELD_NUMBER: _ClassVar[int]
    ACK_P50_MS_FIELD_NUMBER: _ClassVar[int]
    ACK_P99_MS_FIELD_NUMBER: _ClassVar[int]
    QUEUE_DEPTH_FIELD_NUMBER: _ClassVar[int]
    QUEUE_HIGH_WATER_FIELD_NUMBER: _ClassVar[int]
    DROPPED_FIELD_NUMBER: _ClassVar[int]
    BREAKER_STATE_FIELD_NUMBER: _ClassVar[int]
    BREAKER_SINCE_MS_FIELD_NUMBER: _ClassVar[int]
    LAST_HEARTBEAT_MS_FIELD_NUMBER: _ClassVar[int]
    LAST_PROGRESS_MS_FIELD_NUMBER: _ClassVar[int]
    namespace: str
    agent_id: str
    role: str
    status: str
    issues: _containers.RepeatedScalarFieldContainer[str]
    deliveries_succeeded: int
    deliveries_failed: int
    success_ratio: float
    ack_p50_ms: int
    ack_p99_ms: int
    queue_depth: int
    queue_high_water: int
    dropped: int
    breaker_state: str
    breaker_since_ms: int
    last_heartbeat_ms: int
    last_progress_ms: int
    def __init__(self, namespace: _Optional[str] = ..., agent_id: _Optional[str] = ..., role: _Optional[str] = ..., status: _Optional[str] = ..., issues: _Optional[_Iterable[str]] = ..., deliveries_succeeded: _Optional[int] = ..., deliveries_failed: _Optional[int] = ..., success_ratio: _Optional[float] = ..., ack_p50_ms: _Optional[int] = ..., ack_p99_ms: _Optional[int] = ..., queue_depth: _Optional[int] = ..., queue_high_water: _Optional[int] = ..., dropped: _Optional[int] = ..., breaker_state: _Optional[str] = ..., breaker_since_ms: _Optional[int] = ..., last_heartbeat_ms: _Optional[int] = ..., last_progress_ms: _Optional[int] = ...) -> None: ...

class HealthSample(_message.Message):
    __slots__ = ("at_ms", "score", "healthy", "total")
    AT_MS_FIELD_NUMBER: _ClassVar[int]
    SCORE_FIELD_NUMBER: _ClassVar[int]
    HEALTHY_FIELD_NUMBER: _ClassVar[int]
    TOTAL_FIELD_NUMBER: _ClassVar[int]
    at_ms: int
    score: float
    healthy: int
    total: int
    def __init__(self, at_ms: _Optional[int] = ..., score: _Optional[float] = ..., healthy: _Optional[int] = ..., total: _Optional[int] = ...) -> None: ...

class HealthResponse(_message.Message):
    __slots__ = ("agents", "score", "healthy", "degraded", "stuck", "unhealthy", "history", "now_ms")
    AGENTS_FIELD_NUMBER: _ClassVar[int]
    SCORE_FIELD_NUMBER: _ClassVar[int]
    HEALTHY_FIELD_NUMBER: _ClassVar[int]
    DEGRADED_FIELD_NUMBER: _ClassVar[int]
    STUCK_FIELD_NUMBER: _ClassVar[int]
    UNHEALTHY_FIELD_NUMBER: _ClassVar[int]
    HISTORY_FIELD_NUMBER: _ClassVar[int]
    NOW_MS_FIELD_NUMBER: _ClassVar[int]
    agents: _containers.RepeatedCompositeFieldContainer[AgentHealth]
    score: float
    healthy: int
    degraded: int
    stuck: int
    unhealthy: int
    history: _containers.RepeatedCompositeFieldContainer[HealthSample]
    now_ms: int
    def __init__(self, agents: _Optional[_Iterable[_Union[AgentHealth, _Mapping]]] = ..., score: _Optional[float] = ..., healthy: _Optional[int] = ..., degraded: _Optional[int] = ..., stuck: _Optional[int] = ..., unhealthy: _Optional[int] = ..., history: _Optional[_Iterable[_Union[HealthSample, _Mapping]]] = ..., now_ms: _Optional[int] = ...) -> None: ...

class SendCommandRequest(_message.Message):
    __slots__ = ("namespace", "agent_id", "command", "params_json", "timeout_ms")
    NAMESPACE_FIELD_NUMBER: _ClassVar[int]
    AGENT_ID_FIELD_NUMBER: _ClassVar[int]
    COMMAND_FIELD_NUMBER: _ClassVar[int]
    PARAMS_JSON_FIELD_NUMBER: _ClassVar[int]
    TIMEOUT_MS_FIELD_NUMBER: _ClassVar[int]
    namespace: str
    agent_id: str
    command: str
    params_json: str
    timeout_ms: int
    def __init__(self, namespace: _Optional[str] = ..., agent_id: _Optional[str] = ..., command: _Optional[str] = ..., params_json: _Optional[str] = ..., timeout_ms: _Optional[int] = ...) -> None: ...

class SendCommandResponse(_message.Message):
    __slots__ = ("command_id", "result_json", "agent_error")
    COMMAND_ID_FIELD_NUMBER: _ClassVar[int]
    RESULT_JSON_FIELD_NUMBER: _ClassVar[int]
    AGENT_ERROR_FIELD_NUMBER: _ClassVar[int]
    command_id: int
    result_json: str
    agent_error: str
    def __init__(self, command_id: _Optional[int] = ..., result_json: _Optional[str] = ..., agent_error: _Optional[str] = ...) -> None: ...

class AuditLogRequest(_message.Message):
    __slots__ = ("limit",)
    LIMIT_FIELD_NUMBER: _ClassVar[int]
    limit: int
    def __init__(self, limit: _Optional[int] = ...) -> None: ...

class AuditEntry(_message.Message):
    __slots__ = ("seq", "at_ms", "actor", "command", "command_id", "namespace", "target", "params", "outcome", "detail")
    SEQ_FIELD_NUMBER: _ClassVar[int]
    AT_MS_FIELD_NUMBER: _ClassVar[int]
    ACTOR_FIELD_NUMBER: _ClassVar[int]
    COMMAND_FIELD_NUMBER: _ClassVar[int]
    COMMAND_ID_FIELD_NUMBER: _ClassVar[int]
    NAMESPACE_FIELD_NUMBER: _ClassVar[int]
    TARGET_FIELD_NUMBER: _ClassVar[int]
    PARAMS_FIELD_NUMBER: _ClassVar[int]
    OUTCOME_FIELD_NUMBER: _ClassVar[int]
    DETAIL_FIELD_NUMBER: _ClassVar[int]
    seq: int
    at_ms: int
    actor: str
    command: str
    command_id: int
    namespace: str
    target: str
    params: str
    outcome: str
    detail: str
    def __init__(self, seq: _Optional[int] = ..., at_ms: _Optional[int] = ..., actor: _Optional[str] = ..., command: _Optional[str] = ..., command_id: _Optional[int] = ..., namespace: _Optional[str] = ..., target: _Optional[str] = ..., params: _Optional[str] = ..., outcome: _Optional[str] = ..., detail: _Optional[str] = ...) -> None: ...

class AuditLogResponse(_message.Message):
    __slots__ = ("entries", "dropped")
    ENTRIES_FIELD_NUMBER: _ClassVar[int]
    DROPPED_FIELD_NUMBER: _ClassVar[int]
    entries: _containers.RepeatedCompositeFieldContainer[AuditEntry]
    dropped: int
    def __init__(self, entries: _Optional[_Iterable[_Union[AuditEntry, _Mapping]]] = ..., dropped: _Optional[int] = ...) -> None: ...

class Limits(_message.Message):
    __slots__ = ("max_message_bytes", "max_topic_len", "max_interests", "max_agents_per_namespace", "max_open_sync_points", "queue_capacity", "max_state_bytes", "max_sync_participants", "max_sync_timeout_ms", "max_delta_bytes", "max_sync_payload_bytes", "max_grpc_message_bytes", "max_request_timeout_ms", "max_pending_requests_per_agent")
    MAX_MESSAGE_BYTES_FIELD_NUMBER: _ClassVar[int]
    MAX_TOPIC_LEN_FIELD_NUMBER: _ClassVar[int]
    MAX_INTERESTS_FIELD_NUMBER: _ClassVar[int]
    MAX_AGENTS_PER_NAMESPACE_FIELD_NUMBER: _ClassVar[int]
    MAX_OPEN_SYNC_POINTS_FIELD_NUMBER: _ClassVar[int]
    QUEUE_CAPACITY_FIELD_NUMBER: _ClassVar[int]
    MAX_STATE_BYTES_FIELD_NUMBER: _ClassVar[int]
    MAX_SYNC_PARTICIPANTS_FIELD_NUMBER: _ClassVar[int]
    MAX_SYNC_TIMEOUT_MS_FIELD_NUMBER: _ClassVar[int]
    MAX_DELTA_BYTES_FIELD_NUMBER: _ClassVar[int]
    MAX_SYNC_PAYLOAD_BYTES_FIELD_NUMBER: _ClassVar[int]
    MAX_GRPC_MESSAGE_BYTES_FIELD_NUMBER: _ClassVar[int]
    MAX_REQUEST_TIMEOUT_MS_FIELD_NUMBER: _ClassVar[int]
    MAX_PENDING_REQUESTS_PER_AGENT_FIELD_NUMBER: _ClassVar[int]
    max_message_bytes: int
    max_topic_len: int
    max_interests: int
    max_agents_per_namespace: int
    max_open_sync_points: int
    queue_capacity: int
    max_state_bytes: int
    max_sync_participants: int
    max_sync_timeout_ms: int
    max_delta_bytes: int
    max_sync_payload_bytes: int
    max_grpc_message_bytes: int
    max_request_timeout_ms: int
    max_pending_requests_per_agent: int
    def __init__(self, max_message_bytes: _Optional[int] = ..., max_topic_len: _Optional[int] = ..., max_interests: _Optional[int] = ..., max_agents_per_namespace: _Optional[int] = ..., max_open_sync_points: _Optional[int] = ..., queue_capacity: _Optional[int] = ..., max_state_bytes: _Optional[int] = ..., max_sync_participants: _Optional[int] = ..., max_sync_timeout_ms: _Optional[int] = ..., max_delta_bytes: _Optional[int] = ..., max_sync_payload_bytes: _Optional[int] = ..., max_grpc_message_bytes: _Optional[int] = ..., max_request_timeout_ms: _Optional[int] = ..., max_pending_requests_per_agent: _Optional[int] = ...) -> None: ...

class OpenVote(_message.Message):
    __slots__ = ("vote_id", "question", "agents", "count", "role", "timeout_ms", "policy", "supermajority_num", "supermajority_den", "options", "key_field", "weight", "weight_field", "quorum_ballots", "quorum_weight", "veto_roles", "tie_breaker_role", "topic", "wait")
    class Policy(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
        __slots__ = ()
        POLICY_PLURALITY: _ClassVar[OpenVote.Policy]
        POLICY_MAJORITY: _ClassVar[OpenVote.Policy]
        POLICY_SUPERMAJORITY: _ClassVar[OpenVote.Policy]
        POLICY_UNANIMITY: _ClassVar[OpenVote.Policy]
    POLICY_PLURALITY: OpenVote.Policy
    POLICY_MAJORITY: OpenVote.Policy
    POLICY_SUPERMAJORITY: OpenVote.Policy
    POLICY_UNANIMITY: OpenVote.Policy
    class Weight(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
        __slots__ = ()
        WEIGHT_EQUAL: _ClassVar[OpenVote.Weight]
        WEIGHT_METADATA: _ClassVar[OpenVote.Weight]
        WEIGHT_CONFIDENCE: _ClassVar[OpenVote.Weight]
        WEIGHT_HEALTH: _ClassVar[OpenVote.Weight]
    WEIGHT_EQUAL: OpenVote.Weight
    WEIGHT_METADATA: OpenVote.Weight
    WEIGHT_CONFIDENCE: OpenVote.Weight
    WEIGHT_HEALTH: OpenVote.Weight
    VOTE_ID_FIELD_NUMBER: _ClassVar[int]
    QUESTION_FIELD_NUMBER: _ClassVar[int]
    AGENTS_FIELD_NUMBER: _ClassVar[int]
    COUNT_FIELD_NUMBER: _ClassVar[int]
    ROLE_FIELD_NUMBER: _ClassVar[int]
    TIMEOUT_MS_FIELD_NUMBER: _ClassVar[int]
    POLICY_FIELD_NUMBER: _ClassVar[int]
    SUPERMAJORITY_NUM_FIELD_NUMBER: _ClassVar[int]
    SUPERMAJORITY_DEN_FIELD_NUMBER: _ClassVar[int]
    OPTIONS_FIELD_NUMBER: _ClassVar[int]
    KEY_FIELD_FIELD_NUMBER: _ClassVar[int]
    WEIGHT_FIELD_NUMBER: _ClassVar[int]
    WEIGHT_FIELD_FIELD_NUMBER: _ClassVar[int]
    QUORUM_BALLOTS_FIELD_NUMBER: _ClassVar[int]
    QUORUM_WEIGHT_FIELD_NUMBER: _ClassVar[int]
    VETO_ROLES_FIELD_NUMBER: _ClassVar[int]
    TIE_BREAKER_ROLE_FIELD_NUMBER: _ClassVar[int]
    TOPIC_FIELD_NUMBER: _ClassVar[int]
    WAIT_FIELD_NUMBER: _ClassVar[int]
    vote_id: str
    question: str
    agents: AgentIds
    count: int
    role: str
    timeout_ms: int
    policy: OpenVote.Policy
    supermajority_num: int
    supermajority_den: int
    options: _containers.RepeatedScalarFieldContainer[str]
    key_field: str
    weight: OpenVote.Weight
    weight_field: str
    quorum_ballots: int
    quorum_weight: float
    veto_roles: _containers.RepeatedScalarFieldContainer[str]
    tie_breaker_role: str
    topic: str
    wait: bool
    def __init__(self, vote_id: _Optional[str] = ..., question: _Optional[str] = ..., agents: _Optional[_Union[AgentIds, _Mapping]] = ..., count: _Optional[int] = ..., role: _Optional[str] = ..., timeout_ms: _Optional[int] = ..., policy: _Optional[_Union[OpenVote.Policy, str]] = ..., supermajority_num: _Optional[int] = ..., supermajority_den: _Optional[int] = ..., options: _Optional[_Iterable[str]] = ..., key_field: _Optional[str] = ..., weight: _Optional[_Union[OpenVote.Weight, str]] = ..., weight_field: _Optional[str] = ..., quorum_ballots: _Optional[int] = ..., quorum_weight: _Optional[float] = ..., veto_roles: _Optional[_Iterable[str]] = ..., tie_breaker_role: _Optional[str] = ..., topic: _Optional[str] = ..., wait: bool = ...) -> None: ...

class CastBallot(_message.Message):
    __slots__ = ("vote_id", "option", "recommendation_json", "abstain_reason", "confidence", "veto")
    VOTE_ID_FIELD_NUMBER: _ClassVar[int]
    OPTION_FIELD_NUMBER: _ClassVar[int]
    RECOMMENDATION_JSON_FIELD_NUMBER: _ClassVar[int]
    ABSTAIN_REASON_FIELD_NUMBER: _ClassVar[int]
    CONFIDENCE_FIELD_NUMBER: _ClassVar[int]
    VETO_FIELD_NUMBER: _ClassVar[int]
    vote_id: str
    option: str
    recommendation_json: str
    abstain_reason: str
    confidence: float
    veto: bool
    def __init__(self, vote_id: _Optional[str] = ..., option: _Optional[str] = ..., recommendation_json: _Optional[str] = ..., abstain_reason: _Optional[str] = ..., confidence: _Optional[float] = ..., veto: bool = ...) -> None: ...

class VoteTally(_message.Message):
    __slots__ = ("choice", "weight", "ballots")
    CHOICE_FIELD_NUMBER: _ClassVar[int]
    WEIGHT_FIELD_NUMBER: _ClassVar[int]
    BALLOTS_FIELD_NUMBER: _ClassVar[int]
    choice: str
    weight: float
    ballots: int
    def __init__(self, choice: _Optional[str] = ..., weight: _Optional[float] = ..., ballots: _Optional[int] = ...) -> None: ...

class VoteOutcome(_message.Message):
    __slots__ = ("vote_id", "question", "decided", "choice", "directive_json", "reason", "tally", "groups", "ballots", "abstentions", "missing", "total_weight", "decided_at_ms")
    VOTE_ID_FIELD_NUMBER: _ClassVar[int]
    QUESTION_FIELD_NUMBER: _ClassVar[int]
    DECIDED_FIELD_NUMBER: _ClassVar[int]
    CHOICE_FIELD_NUMBER: _ClassVar[int]
    DIRECTIVE_JSON_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    TALLY_FIELD_NUMBER: _ClassVar[int]
    GROUPS_FIELD_NUMBER: _ClassVar[int]
    BALLOTS_FIELD_NUMBER: _ClassVar[int]
    ABSTENTIONS_FIELD_NUMBER: _ClassVar[int]
    MISSING_FIELD_NUMBER: _ClassVar[int]
    TOTAL_WEIGHT_FIELD_NUMBER: _ClassVar[int]
    DECIDED_AT_MS_FIELD_NUMBER: _ClassVar[int]
    vote_id: str
    question: str
    decided: bool
    choice: str
    directive_json: str
    reason: str
    tally: _containers.RepeatedCompositeFieldContainer[VoteTally]
    groups: int
    ballots: int
    abstentions: int
    missing: int
    total_weight: float
    decided_at_ms: int
    def __init__(self, vote_id: _Optional[str] = ..., question: _Optional[str] = ..., decided: bool = ..., choice: _Optional[str] = ..., directive_json: _Optional[str] = ..., reason: _Optional[str] = ..., tally: _Optional[_Iterable[_Union[VoteTally, _Mapping]]] = ..., groups: _Optional[int] = ..., ballots: _Optional[int] = ..., abstentions: _Optional[int] = ..., missing: _Optional[int] = ..., total_weight: _Optional[float] = ..., decided_at_ms: _Optional[int] = ...) -> None: ...

class ListVotesRequest(_message.Message):
    __slots__ = ("namespace",)
    NAMESPACE_FIELD_NUMBER: _ClassVar[int]
    namespace: str
    def __init__(self, namespace: _Optional[str] = ...) -> None: ...

class ListVotesResponse(_message.Message):
    __slots__ = ("votes",)
    VOTES_FIELD_NUMBER: _ClassVar[int]
    votes: _containers.RepeatedCompositeFieldContainer[VoteRecord]
    def __init__(self, votes: _Optional[_Iterable[_Union[VoteRecord, _Mapping]]] = ...) -> None: ...

class VoteStatusRequest(_message.Message):
    __slots__ = ("namespace", "vote_id")
    NAMESPACE_FIELD_NUMBER: _ClassVar[int]
    VOTE_ID_FIELD_NUMBER: _ClassVar[int]
    namespace: str
    vote_id: str
    def __init__(self, namespace: _Optional[str] = ..., vote_id: _Optional[str] = ...) -> None: ...

class BallotRecord(_message.Message):
    __slots__ = ("agent_id", "role", "choice", "directive_json", "abstain_reason", "abstained", "confidence", "weight", "veto", "at_ms")
    AGENT_ID_FIELD_NUMBER: _ClassVar[int]
    ROLE_FIELD_NUMBER: _ClassVar[int]
    CHOICE_FIELD_NUMBER: _ClassVar[int]
    DIRECTIVE_JSON_FIELD_NUMBER: _ClassVar[int]
    ABSTAIN_REASON_FIELD_NUMBER: _ClassVar[int]
    ABSTAINED_FIELD_NUMBER: _ClassVar[int]
    CONFIDENCE_FIELD_NUMBER: _ClassVar[int]
    WEIGHT_FIELD_NUMBER: _ClassVar[int]
    VETO_FIELD_NUMBER: _ClassVar[int]
    AT_MS_FIELD_NUMBER: _ClassVar[int]
    agent_id: str
    role: str
    choice: str
    directive_json: str
    abstain_reason: str
    abstained: bool
    confidence: float
    weight: float
    veto: bool
    at_ms: int
    def __init__(self, agent_id: _Optional[str] = ..., role: _Optional[str] = ..., choice: _Optional[str] = ..., directive_json: _Optional[str] = ..., abstain_reason: _Optional[str] = ..., abstained: bool = ..., confidence: _Optional[float] = ..., weight: _Optional[float] = ..., veto: bool = ..., at_ms: _Optional[int] = ...) -> None: ...

class VoteRecord(_message.Message):
    __slots__ = ("vote_id", "question", "state", "opener", "participants", "policy", "weight", "topic", "required_count", "ballots", "missing", "missing_count", "gone", "created_at_ms", "deadline_ms", "finished_at_ms", "outcome")
    VOTE_ID_FIELD_NUMBER: _ClassVar[int]
    QUESTION_FIELD_NUMBER: _ClassVar[int]
    STATE_FIELD_NUMBER: _ClassVar[int]
    OPENER_FIELD_NUMBER: _ClassVar[int]
    PARTICIPANTS_FIELD_NUMBER: _ClassVar[int]
    POLICY_FIELD_NUMBER: _ClassVar[int]
    WEIGHT_FIELD_NUMBER: _ClassVar[int]
    TOPIC_FIELD_NUMBER: _ClassVar[int]
    REQUIRED_COUNT_FIELD_NUMBER: _ClassVar[int]
    BALLOTS_FIELD_NUMBER: _ClassVar[int]
    MISSING_FIELD_NUMBER: _ClassVar[int]
    MISSING_COUNT_FIELD_NUMBER: _ClassVar[int]
    GONE_FIELD_NUMBER: _ClassVar[int]
    CREATED_AT_MS_FIELD_NUMBER: _ClassVar[int]
    DEADLINE_MS_FIELD_NUMBER: _ClassVar[int]
    FINISHED_AT_MS_FIELD_NUMBER: _ClassVar[int]
    OUTCOME_FIELD_NUMBER: _ClassVar[int]
    vote_id: str
    question: str
    state: str
    opener: str
    participants: str
    policy: str
    weight: str
    topic: str
    required_count: int
    ballots: _containers.RepeatedCompositeFieldContainer[BallotRecord]
    missing: _containers.RepeatedScalarFieldContainer[str]
    missing_count: int
    gone: _containers.RepeatedScalarFieldContainer[str]
    created_at_ms: int
    deadline_ms: int
    finished_at_ms: int
    outcome: VoteOutcome
    def __init__(self, vote_id: _Optional[str] = ..., question: _Optional[str] = ..., state: _Optional[str] = ..., opener: _Optional[str] = ..., participants: _Optional[str] = ..., policy: _Optional[str] = ..., weight: _Optional[str] = ..., topic: _Optional[str] = ..., required_count: _Optional[int] = ..., ballots: _Optional[_Iterable[_Union[BallotRecord, _Mapping]]] = ..., missing: _Optional[_Iterable[str]] = ..., missing_count: _Optional[int] = ..., gone: _Optional[_Iterable[str]] = ..., created_at_ms: _Optional[int] = ..., deadline_ms: _Optional[int] = ..., finished_at_ms: _Optional[int] = ..., outcome: _Optional[_Union[VoteOutcome, _Mapping]] = ...) -> None: ...

class VoteDiagnosis(_message.Message):
    __slots__ = ("status", "issues", "recommendations")
    STATUS_FIELD_NUMBER: _ClassVar[int]
    ISSUES_FIELD_NUMBER: _ClassVar[int]
    RECOMMENDATIONS_FIELD_NUMBER: _ClassVar[int]
    status: VoteRecord
    issues: _containers.RepeatedScalarFieldContainer[str]
    recommendations: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, status: _Optional[_Union[VoteRecord, _Mapping]] = ..., issues: _Optional[_Iterable[str]] = ..., recommendations: _Optional[_Iterable[str]] = ...) -> None: ...

class CollectiveGroup(_message.Message):
    __slots__ = ("agents", "role", "replica_group")
    AGENTS_FIELD_NUMBER: _ClassVar[int]
    ROLE_FIELD_NUMBER: _ClassVar[int]
    REPLICA_GROUP_FIELD_NUMBER: _ClassVar[int]
    agents: _containers.RepeatedScalarFieldContainer[str]
    role: str
    replica_group: str
    def __init__(self, agents: _Optional[_Iterable[str]] = ..., role: _Optional[str] = ..., replica_group: _Optional[str] = ...) -> None: ...

class CollectiveHeader(_message.Message):
    __slots__ = ("namespace", "agent_id", "resume_token", "collective_id", "group", "kind", "dtype", "op", "root", "length", "timeout_ms", "state_checksum", "shared_memory", "shm_region", "shm_result_region")
    NAMESPACE_FIELD_NUMBER: _ClassVar[int]
    AGENT_ID_FIELD_NUMBER: _ClassVar[int]
    RESUME_TOKEN_FIELD_NUMBER: _ClassVar[int]
    COLLECTIVE_ID_FIELD_NUMBER: _ClassVar[int]
    GROUP_FIELD_NUMBER: _ClassVar[int]
    KIND_FIELD_NUMBER: _ClassVar[int]
    DTYPE_FIELD_NUMBER: _ClassVar[int]
    OP_FIELD_NUMBER: _ClassVar[int]
    ROOT_FIELD_NUMBER: _ClassVar[int]
    LENGTH_FIELD_NUMBER: _ClassVar[int]
    TIMEOUT_MS_FIELD_NUMBER: _ClassVar[int]
    STATE_CHECKSUM_FIELD_NUMBER: _ClassVar[int]
    SHARED_MEMORY_FIELD_NUMBER: _ClassVar[int]
    SHM_REGION_FIELD_NUMBER: _ClassVar[int]
    SHM_RESULT_REGION_FIELD_NUMBER: _ClassVar[int]
    namespace: str
    agent_id: str
    resume_token: str
    collective_id: str
    group: CollectiveGroup
    kind: CollectiveKind
    dtype: ElementType
    op: ReduceOp
    root: int
    length: int
    timeout_ms: int
    state_checksum: str
    shared_memory: bool
    shm_region: int
    shm_result_region: int
    def __init__(self, namespace: _Optional[str] = ..., agent_id: _Optional[str] = ..., resume_token: _Optional[str] = ..., collective_id: _Optional[str] = ..., group: _Optional[_Union[CollectiveGroup, _Mapping]] = ..., kind: _Optional[_Union[CollectiveKind, str]] = ..., dtype: _Optional[_Union[ElementType, str]] = ..., op: _Optional[_Union[ReduceOp, str]] = ..., root: _Optional[int] = ..., length: _Optional[int] = ..., timeout_ms: _Optional[int] = ..., state_checksum: _Optional[str] = ..., shared_memory: bool = ..., shm_region: _Optional[int] = ..., shm_result_region: _Optional[int] = ...) -> None: ...

class CollectiveChunk(_message.Message):
    __slots__ = ("data",)
    DATA_FIELD_NUMBER: _ClassVar[int]
    data: bytes
    def __init__(self, data: _Optional[bytes] = ...) -> None: ...

class CollectiveShmWritten(_message.Message):
    __slots__ = ("written",)
    WRITTEN_FIELD_NUMBER: _ClassVar[int]
    written: int
    def __init__(self, written: _Optional[int] = ...) -> None: ...

class CollectiveUpload(_message.Message):
    __slots__ = ("header", "chunk", "shm_written")
    HEADER_FIELD_NUMBER: _ClassVar[int]
    CHUNK_FIELD_NUMBER: _ClassVar[int]
    SHM_WRITTEN_FIELD_NUMBER: _ClassVar[int]
    header: CollectiveHeader
    chunk: CollectiveChunk
    shm_written: CollectiveShmWritten
    def __init__(self, header: _Optional[_Union[CollectiveHeader, _Mapping]] = ..., chunk: _Optional[_Union[CollectiveChunk, _Mapping]] = ..., shm_written: _Optional[_Union[CollectiveShmWritten, _Mapping]] = ...) -> None: ...

class CollectiveSharedMemory(_message.Message):
    __slots__ = ("path", "size", "array_offset", "array_bytes", "result_offset", "result_bytes", "region", "result_region", "result_path", "result_size")
    PATH_FIELD_NUMBER: _ClassVar[int]
    SIZE_FIELD_NUMBER: _ClassVar[int]
    ARRAY_OFFSET_FIELD_NUMBER: _ClassVar[int]
    ARRAY_BYTES_FIELD_NUMBER: _ClassVar[int]
    RESULT_OFFSET_FIELD_NUMBER: _ClassVar[int]
    RESULT_BYTES_FIELD_NUMBER: _ClassVar[int]
    REGION_FIELD_NUMBER: _ClassVar[int]
    RESULT_REGION_FIELD_NUMBER: _ClassVar[int]
    RESULT_PATH_FIELD_NUMBER: _ClassVar[int]
    RESULT_SIZE_FIELD_NUMBER: _ClassVar[int]
    path: str
    size: int
    array_offset: int
    array_bytes: int
    result_offset: int
    result_bytes: int
    region: int
    result_region: int
    result_path: str
    result_size: int
    def __init__(self, path: _Optional[str] = ..., size: _Optional[int] = ..., array_offset: _Optional[int] = ..., array_bytes: _Optional[int] = ..., result_offset: _Optional[int] = ..., result_bytes: _Optional[int] = ..., region: _Optional[int] = ..., result_region: _Optional[int] = ..., result_path: _Optional[str] = ..., result_size: _Optional[int] = ...) -> None: ...

class CollectiveStarted(_message.Message):
    __slots__ = ("rank", "members", "result_length", "diverged", "reference_checksum", "shared_memory")
    RANK_FIELD_NUMBER: _ClassVar[int]
    MEMBERS_FIELD_NUMBER: _ClassVar[int]
    RESULT_LENGTH_FIELD_NUMBER: _ClassVar[int]
    DIVERGED_FIELD_NUMBER: _ClassVar[int]
    REFERENCE_CHECKSUM_FIELD_NUMBER: _ClassVar[int]
    SHARED_MEMORY_FIELD_NUMBER: _ClassVar[int]
    rank: int
    members: _containers.RepeatedScalarFieldContainer[str]
    result_length: int
    diverged: _containers.RepeatedScalarFieldContainer[str]
    reference_checksum: str
    shared_memory: CollectiveSharedMemory
    def __init__(self, rank: _Optional[int] = ..., members: _Optional[_Iterable[str]] = ..., result_length: _Optional[int] = ..., diverged: _Optional[_Iterable[str]] = ..., reference_checksum: _Optional[str] = ..., shared_memory: _Optional[_Union[CollectiveSharedMemory, _Mapping]] = ...) -> None: ...

class CollectiveResultChunk(_message.Message):
    __slots__ = ("offset", "data")
    OFFSET_FIELD_NUMBER: _ClassVar[int]
    DATA_FIELD_NUMBER: _ClassVar[int]
    offset: int
    data: bytes
    def __init__(self, offset: _Optional[int] = ..., data: _Optional[bytes] = ...) -> None: ...

class CollectiveDone(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class CollectiveDownload(_message.Message):
    __slots__ = ("started", "chunk", "done")
    STARTED_FIELD_NUMBER: _ClassVar[int]
    CHUNK_FIELD_NUMBER: _ClassVar[int]
    DONE_FIELD_NUMBER: _ClassVar[int]
    started: CollectiveStarted
    chunk: CollectiveResultChunk
    done: CollectiveDone
    def __init__(self, started: _Optional[_Union[CollectiveStarted, _Mapping]] = ..., chunk: _Optional[_Union[CollectiveResultChunk, _Mapping]] = ..., done: _Optional[_Union[CollectiveDone, _Mapping]] = ...) -> None: ...

class ListCollectivesRequest(_message.Message):
    __slots__ = ("namespace",)
    NAMESPACE_FIELD_NUMBER: _ClassVar[int]
    namespace: str
    def __init__(self, namespace: _Optional[str] = ...) -> None: ...

class CollectiveStatus(_message.Message):
    __slots__ = ("collective_id", "description", "group", "members", "missing", "phase", "waiting_ms", "deadline_in_ms")
    COLLECTIVE_ID_FIELD_NUMBER: _ClassVar[int]
    DESCRIPTION_FIELD_NUMBER: _ClassVar[int]
    GROUP_FIELD_NUMBER: _ClassVar[int]
    MEMBERS_FIELD_NUMBER: _ClassVar[int]
    MISSING_FIELD_NUMBER: _ClassVar[int]
    PHASE_FIELD_NUMBER: _ClassVar[int]
    WAITING_MS_FIELD_NUMBER: _ClassVar[int]
    DEADLINE_IN_MS_FIELD_NUMBER: _ClassVar[int]
    collective_id: str
    description: str
    group: str
    members: _containers.RepeatedScalarFieldContainer[str]
    missing: _containers.RepeatedScalarFieldContainer[str]
    phase: str
    waiting_ms: int
    deadline_in_ms: int
    def __init__(self, collective_id: _Optional[str] = ..., description: _Optional[str] = ..., group: _Optional[str] = ..., members: _Optional[_Iterable[str]] = ..., missing: _Optional[_Iterable[str]] = ..., phase: _Optional[str] = ..., waiting_ms: _Optional[int] = ..., deadline_in_ms: _Optional[int] = ...) -> None: ...

class ListCollectivesResponse(_message.Message):
    __slots__ = ("collectives",)
    COLLECTIVES_FIELD_NUMBER: _ClassVar[int]
    collectives: _containers.RepeatedCompositeFieldContainer[CollectiveStatus]
    def __init__(self, collectives: _Optional[_Iterable[_Union[CollectiveStatus, _Mapping]]] = ...) -> None: ...

class JoinGroup(_message.Message):
    __slots__ = ("group_id",)
    GROUP_ID_FIELD_NUMBER: _ClassVar[int]
    group_id: str
    def __init__(self, group_id: _Optional[str] = ...) -> None: ...

class LeaveGroup(_message.Message):
    __slots__ = ("group_id", "forget_state")
    GROUP_ID_FIELD_NUMBER: _ClassVar[int]
    FORGET_STATE_FIELD_NUMBER: _ClassVar[int]
    group_id: str
    forget_state: bool
    def __init__(self, group_id: _Optional[str] = ..., forget_state: bool = ...) -> None: ...

class GroupState(_message.Message):
    __slots__ = ("group_id", "version", "checksum", "size", "published_by", "published_at_ms")
    GROUP_ID_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    CHECKSUM_FIELD_NUMBER: _ClassVar[int]
    SIZE_FIELD_NUMBER: _ClassVar[int]
    PUBLISHED_BY_FIELD_NUMBER: _ClassVar[int]
    PUBLISHED_AT_MS_FIELD_NUMBER: _ClassVar[int]
    group_id: str
    version: int
    checksum: str
    size: int
    published_by: str
    published_at_ms: int
    def __init__(self, group_id: _Optional[str] = ..., version: _Optional[int] = ..., checksum: _Optional[str] = ..., size: _Optional[int] = ..., published_by: _Optional[str] = ..., published_at_ms: _Optional[int] = ...) -> None: ...

class GroupMembership(_message.Message):
    __slots__ = ("group_id", "rank", "members", "state")
    GROUP_ID_FIELD_NUMBER: _ClassVar[int]
    RANK_FIELD_NUMBER: _ClassVar[int]
    MEMBERS_FIELD_NUMBER: _ClassVar[int]
    STATE_FIELD_NUMBER: _ClassVar[int]
    group_id: str
    rank: int
    members: _containers.RepeatedScalarFieldContainer[str]
    state: GroupState
    def __init__(self, group_id: _Optional[str] = ..., rank: _Optional[int] = ..., members: _Optional[_Iterable[str]] = ..., state: _Optional[_Union[GroupState, _Mapping]] = ...) -> None: ...

class GroupStateHeader(_message.Message):
    __slots__ = ("namespace", "agent_id", "resume_token", "group_id", "size", "checksum")
    NAMESPACE_FIELD_NUMBER: _ClassVar[int]
    AGENT_ID_FIELD_NUMBER: _ClassVar[int]
    RESUME_TOKEN_FIELD_NUMBER: _ClassVar[int]
    GROUP_ID_FIELD_NUMBER: _ClassVar[int]
    SIZE_FIELD_NUMBER: _ClassVar[int]
    CHECKSUM_FIELD_NUMBER: _ClassVar[int]
    namespace: str
    agent_id: str
    resume_token: str
    group_id: str
    size: int
    checksum: str
    def __init__(self, namespace: _Optional[str] = ..., agent_id: _Optional[str] = ..., resume_token: _Optional[str] = ..., group_id: _Optional[str] = ..., size: _Optional[int] = ..., checksum: _Optional[str] = ...) -> None: ...

class GroupStateUpload(_message.Message):
    __slots__ = ("header", "chunk")
    HEADER_FIELD_NUMBER: _ClassVar[int]
    CHUNK_FIELD_NUMBER: _ClassVar[int]
    header: GroupStateHeader
    chunk: bytes
    def __init__(self, header: _Optional[_Union[GroupStateHeader, _Mapping]] = ..., chunk: _Optional[bytes] = ...) -> None: ...

class FetchGroupStateRequest(_message.Message):
    __slots__ = ("namespace", "agent_id", "resume_token", "group_id")
    NAMESPACE_FIELD_NUMBER: _ClassVar[int]
    AGENT_ID_FIELD_NUMBER: _ClassVar[int]
    RESUME_TOKEN_FIELD_NUMBER: _ClassVar[int]
    GROUP_ID_FIELD_NUMBER: _ClassVar[int]
    namespace: str
    agent_id: str
    resume_token: str
    group_id: str
    def __init__(self, namespace: _Optional[str] = ..., agent_id: _Optional[str] = ..., resume_token: _Optional[str] = ..., group_id: _Optional[str] = ...) -> None: ...

class GroupStateDownload(_message.Message):
    __slots__ = ("state", "chunk")
    STATE_FIELD_NUMBER: _ClassVar[int]
    CHUNK_FIELD_NUMBER: _ClassVar[int]
    state: GroupState
    chunk: bytes
    def __init__(self, state: _Optional[_Union[GroupState, _Mapping]] = ..., chunk: _Optional[bytes] = ...) -> None: ...

class ListGroupsRequest(_message.Message):
    __slots__ = ("namespace",)
    NAMESPACE_FIELD_NUMBER: _ClassVar[int]
    namespace: str
    def __init__(self, namespace: _Optional[str] = ...) -> None: ...

class GroupInfo(_message.Message):
    __slots__ = ("group_id", "members", "state", "publishing")
    GROUP_ID_FIELD_NUMBER: _ClassVar[int]
    MEMBERS_FIELD_NUMBER: _ClassVar[int]
    STATE_FIELD_NUMBER: _ClassVar[int]
    PUBLISHING_FIELD_NUMBER: _ClassVar[int]
    group_id: str
    members: _containers.RepeatedScalarFieldContainer[str]
    state: GroupState
    publishing: str
    def __init__(self, group_id: _Optional[str] = ..., members: _Optional[_Iterable[str]] = ..., state: _Optional[_Union[GroupState, _Mapping]] = ..., publishing: _Optional[str] = ...) -> None: ...

class ListGroupsResponse(_message.Message):
    __slots__ = ("groups",)
    GROUPS_FIELD_NUMBER: _ClassVar[int]
    groups: _containers.RepeatedCompositeFieldContainer[GroupInfo]
    def __init__(self, groups: _Optional[_Iterable[_Union[GroupInfo, _Mapping]]] = ...) -> None: ...

class ContextWrite(_message.Message):
    __slots__ = ("key", "set_json", "patch_json", "delete", "expected_version", "lease", "ttl_ms")
    KEY_FIELD_NUMBER: _ClassVar[int]
    SET_JSON_FIELD_NUMBER: _ClassVar[int]
    PATCH_JSON_FIELD_NUMBER: _ClassVar[int]
    DELETE_FIELD_NUMBER: _ClassVar[int]
    EXPECTED_VERSION_FIELD_NUMBER: _ClassVar[int]
    LEASE_FIELD_NUMBER: _ClassVar[int]
    TTL_MS_FIELD_NUMBER: _ClassVar[int]
    key: str
    set_json: str
    patch_json: str
    delete: bool
    expected_version: int
    lease: bool
    ttl_ms: int
    def __init__(self, key: _Optional[str] = ..., set_json: _Optional[str] = ..., patch_json: _Optional[str] = ..., delete: bool = ..., expected_version: _Optional[int] = ..., lease: bool = ..., ttl_ms: _Optional[int] = ...) -> None: ...

class ContextWriteRequest(_message.Message):
    __slots__ = ("namespace", "writer", "write")
    NAMESPACE_FIELD_NUMBER: _ClassVar[int]
    WRITER_FIELD_NUMBER: _ClassVar[int]
    WRITE_FIELD_NUMBER: _ClassVar[int]
    namespace: str
    writer: str
    write: ContextWrite
    def __init__(self, namespace: _Optional[str] = ..., writer: _Optional[str] = ..., write: _Optional[_Union[ContextWrite, _Mapping]] = ...) -> None: ...

class ContextWritten(_message.Message):
    __slots__ = ("version", "previous_version", "expires_at_ms")
    VERSION_FIELD_NUMBER: _ClassVar[int]
    PREVIOUS_VERSION_FIELD_NUMBER: _ClassVar[int]
    EXPIRES_AT_MS_FIELD_NUMBER: _ClassVar[int]
    version: int
    previous_version: int
    expires_at_ms: int
    def __init__(self, version: _Optional[int] = ..., previous_version: _Optional[int] = ..., expires_at_ms: _Optional[int] = ...) -> None: ...

class ContextGetRequest(_message.Message):
    __slots__ = ("namespace", "key", "version")
    NAMESPACE_FIELD_NUMBER: _ClassVar[int]
    KEY_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    namespace: str
    key: str
    version: int
    def __init__(self, namespace: _Optional[str] = ..., key: _Optional[str] = ..., version: _Optional[int] = ...) -> None: ...

class ContextValue(_message.Message):
    __slots__ = ("key", "version", "value_json", "at_ms", "writer", "current_version", "expires_at_ms", "owner", "patch_json")
    KEY_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    VALUE_JSON_FIELD_NUMBER: _ClassVar[int]
    AT_MS_FIELD_NUMBER: _ClassVar[int]
    WRITER_FIELD_NUMBER: _ClassVar[int]
    CURRENT_VERSION_FIELD_NUMBER: _ClassVar[int]
    EXPIRES_AT_MS_FIELD_NUMBER: _ClassVar[int]
    OWNER_FIELD_NUMBER: _ClassVar[int]
    PATCH_JSON_FIELD_NUMBER: _ClassVar[int]
    key: str
    version: int
    value_json: str
    at_ms: int
    writer: str
    current_version: int
    expires_at_ms: int
    owner: str
    patch_json: str
    def __init__(self, key: _Optional[str] = ..., version: _Optional[int] = ..., value_json: _Optional[str] = ..., at_ms: _Optional[int] = ..., writer: _Optional[str] = ..., current_version: _Optional[int] = ..., expires_at_ms: _Optional[int] = ..., owner: _Optional[str] = ..., patch_json: _Optional[str] = ...) -> None: ...

class ContextListRequest(_message.Message):
    __slots__ = ("namespace", "prefix", "page_token", "page_size")
    NAMESPACE_FIELD_NUMBER: _ClassVar[int]
    PREFIX_FIELD_NUMBER: _ClassVar[int]
    PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    PAGE_SIZE_FIELD_NUMBER: _ClassVar[int]
    namespace: str
    prefix: str
    page_token: str
    page_size: int
    def __init__(self, namespace: _Optional[str] = ..., prefix: _Optional[str] = ..., page_token: _Optional[str] = ..., page_size: _Optional[int] = ...) -> None: ...

class ContextListResponse(_message.Message):
    __slots__ = ("values", "next_page_token")
    VALUES_FIELD_NUMBER: _ClassVar[int]
    NEXT_PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    values: _containers.RepeatedCompositeFieldContainer[ContextValue]
    next_page_token: str
    def __init__(self, values: _Optional[_Iterable[_Union[ContextValue, _Mapping]]] = ..., next_page_token: _Optional[str] = ...) -> None: ...

class ContextHistoryResponse(_message.Message):
    __slots__ = ("versions",)
    VERSIONS_FIELD_NUMBER: _ClassVar[int]
    versions: _containers.RepeatedCompositeFieldContainer[ContextValue]
    def __init__(self, versions: _Optional[_Iterable[_Union[ContextValue, _Mapping]]] = ...) -> None: ...

class ContextWatchRequest(_message.Message):
    __slots__ = ("namespace", "key", "prefix", "from_version")
    NAMESPACE_FIELD_NUMBER: _ClassVar[int]
    KEY_FIELD_NUMBER: _ClassVar[int]
    PREFIX_FIELD_NUMBER: _ClassVar[int]
    FROM_VERSION_FIELD_NUMBER: _ClassVar[int]
    namespace: str
    key: str
    prefix: str
    from_version: int
    def __init__(self, namespace: _Optional[str] = ..., key: _Optional[str] = ..., prefix: _Optional[str] = ..., from_version: _Optional[int] = ...) -> None: ...

class ContextBatch(_message.Message):
    __slots__ = ("reset", "changes", "resume_from")
    RESET_FIELD_NUMBER: _ClassVar[int]
    CHANGES_FIELD_NUMBER: _ClassVar[int]
    RESUME_FROM_FIELD_NUMBER: _ClassVar[int]
    reset: bool
    changes: _containers.RepeatedCompositeFieldContainer[ContextChange]
    resume_from: int
    def __init__(self, reset: bool = ..., changes: _Optional[_Iterable[_Union[ContextChange, _Mapping]]] = ..., resume_from: _Optional[int] = ...) -> None: ...

class ContextChange(_message.Message):
    __slots__ = ("key", "base_version", "version", "value_json", "deleted", "gap")
    KEY_FIELD_NUMBER: _ClassVar[int]
    BASE_VERSION_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    VALUE_JSON_FIELD_NUMBER: _ClassVar[int]
    DELETED_FIELD_NUMBER: _ClassVar[int]
    GAP_FIELD_NUMBER: _ClassVar[int]
    key: str
    base_version: int
    version: int
    value_json: str
    deleted: bool
    gap: bool
    def __init__(self, key: _Optional[str] = ..., base_version: _Optional[int] = ..., version: _Optional[int] = ..., value_json: _Optional[str] = ..., deleted: bool = ..., gap: bool = ...) -> None: ...

class SubmitTask(_message.Message):
    __slots__ = ("id", "type", "input_json", "context_keys", "role", "capabilities", "priority", "timeout_ms", "max_attempts", "depends_on")
    ID_FIELD_NUMBER: _ClassVar[int]
    TYPE_FIELD_NUMBER: _ClassVar[int]
    INPUT_JSON_FIELD_NUMBER: _ClassVar[int]
    CONTEXT_KEYS_FIELD_NUMBER: _ClassVar[int]
    ROLE_FIELD_NUMBER: _ClassVar[int]
    CAPABILITIES_FIELD_NUMBER: _ClassVar[int]
    PRIORITY_FIELD_NUMBER: _ClassVar[int]
    TIMEOUT_MS_FIELD_NUMBER: _ClassVar[int]
    MAX_ATTEMPTS_FIELD_NUMBER: _ClassVar[int]
    DEPENDS_ON_FIELD_NUMBER: _ClassVar[int]
    id: str
    type: str
    input_json: str
    context_keys: _containers.RepeatedScalarFieldContainer[str]
    role: str
    capabilities: _containers.RepeatedScalarFieldContainer[str]
    priority: int
    timeout_ms: int
    max_attempts: int
    depends_on: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, id: _Optional[str] = ..., type: _Optional[str] = ..., input_json: _Optional[str] = ..., context_keys: _Optional[_Iterable[str]] = ..., role: _Optional[str] = ..., capabilities: _Optional[_Iterable[str]] = ..., priority: _Optional[int] = ..., timeout_ms: _Optional[int] = ..., max_attempts: _Optional[int] = ..., depends_on: _Optional[_Iterable[str]] = ...) -> None: ...

class TaskSubmitted(_message.Message):
    __slots__ = ("id",)
    ID_FIELD_NUMBER: _ClassVar[int]
    id: str
    def __init__(self, id: _Optional[str] = ...) -> None: ...

class TaskWork(_message.Message):
    __slots__ = ("types", "max_in_flight")
    TYPES_FIELD_NUMBER: _ClassVar[int]
    MAX_IN_FLIGHT_FIELD_NUMBER: _ClassVar[int]
    types: _containers.RepeatedScalarFieldContainer[str]
    max_in_flight: int
    def __init__(self, types: _Optional[_Iterable[str]] = ..., max_in_flight: _Optional[int] = ...) -> None: ...

class StopTaskWork(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class ClaimTask(_message.Message):
    __slots__ = ("types",)
    TYPES_FIELD_NUMBER: _ClassVar[int]
    types: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, types: _Optional[_Iterable[str]] = ...) -> None: ...

class TaskClaimed(_message.Message):
    __slots__ = ("assignment",)
    ASSIGNMENT_FIELD_NUMBER: _ClassVar[int]
    assignment: TaskAssignment
    def __init__(self, assignment: _Optional[_Union[TaskAssignment, _Mapping]] = ...) -> None: ...

class StartTask(_message.Message):
    __slots__ = ("id", "attempt")
    ID_FIELD_NUMBER: _ClassVar[int]
    ATTEMPT_FIELD_NUMBER: _ClassVar[int]
    id: str
    attempt: int
    def __init__(self, id: _Optional[str] = ..., attempt: _Optional[int] = ...) -> None: ...

class CompleteTask(_message.Message):
    __slots__ = ("id", "attempt", "output_json")
    ID_FIELD_NUMBER: _ClassVar[int]
    ATTEMPT_FIELD_NUMBER: _ClassVar[int]
    OUTPUT_JSON_FIELD_NUMBER: _ClassVar[int]
    id: str
    attempt: int
    output_json: str
    def __init__(self, id: _Optional[str] = ..., attempt: _Optional[int] = ..., output_json: _Optional[str] = ...) -> None: ...

class FailTask(_message.Message):
    __slots__ = ("id", "attempt", "error")
    ID_FIELD_NUMBER: _ClassVar[int]
    ATTEMPT_FIELD_NUMBER: _ClassVar[int]
    ERROR_FIELD_NUMBER: _ClassVar[int]
    id: str
    attempt: int
    error: str
    def __init__(self, id: _Optional[str] = ..., attempt: _Optional[int] = ..., error: _Optional[str] = ...) -> None: ...

class TaskAssignment(_message.Message):
    __slots__ = ("id", "type", "input_json", "pinned", "dependencies", "attempt", "deadline_ms", "priority", "submitter", "namespace")
    ID_FIELD_NUMBER: _ClassVar[int]
    TYPE_FIELD_NUMBER: _ClassVar[int]
    INPUT_JSON_FIELD_NUMBER: _ClassVar[int]
    PINNED_FIELD_NUMBER: _ClassVar[int]
    DEPENDENCIES_FIELD_NUMBER: _ClassVar[int]
    ATTEMPT_FIELD_NUMBER: _ClassVar[int]
    DEADLINE_MS_FIELD_NUMBER: _ClassVar[int]
    PRIORITY_FIELD_NUMBER: _ClassVar[int]
    SUBMITTER_FIELD_NUMBER: _ClassVar[int]
    NAMESPACE_FIELD_NUMBER: _ClassVar[int]
    id: str
    type: str
    input_json: str
    pinned: _containers.RepeatedCompositeFieldContainer[PinnedContext]
    dependencies: _containers.RepeatedCompositeFieldContainer[DependencyOutput]
    attempt: int
    deadline_ms: int
    priority: int
    submitter: str
    namespace: str
    def __init__(self, id: _Optional[str] = ..., type: _Optional[str] = ..., input_json: _Optional[str] = ..., pinned: _Optional[_Iterable[_Union[PinnedContext, _Mapping]]] = ..., dependencies: _Optional[_Iterable[_Union[DependencyOutput, _Mapping]]] = ..., attempt: _Optional[int] = ..., deadline_ms: _Optional[int] = ..., priority: _Optional[int] = ..., submitter: _Optional[str] = ..., namespace: _Optional[str] = ...) -> None: ...

class PinnedContext(_message.Message):
    __slots__ = ("key", "version", "value_json")
    KEY_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    VALUE_JSON_FIELD_NUMBER: _ClassVar[int]
    key: str
    version: int
    value_json: str
    def __init__(self, key: _Optional[str] = ..., version: _Optional[int] = ..., value_json: _Optional[str] = ...) -> None: ...

class DependencyOutput(_message.Message):
    __slots__ = ("id", "output_json")
    ID_FIELD_NUMBER: _ClassVar[int]
    OUTPUT_JSON_FIELD_NUMBER: _ClassVar[int]
    id: str
    output_json: str
    def __init__(self, id: _Optional[str] = ..., output_json: _Optional[str] = ...) -> None: ...

class TaskEvent(_message.Message):
    __slots__ = ("namespace", "id", "kind", "agent", "attempt", "error", "output_json", "at_ms", "submitter")
    NAMESPACE_FIELD_NUMBER: _ClassVar[int]
    ID_FIELD_NUMBER: _ClassVar[int]
    KIND_FIELD_NUMBER: _ClassVar[int]
    AGENT_FIELD_NUMBER: _ClassVar[int]
    ATTEMPT_FIELD_NUMBER: _ClassVar[int]
    ERROR_FIELD_NUMBER: _ClassVar[int]
    OUTPUT_JSON_FIELD_NUMBER: _ClassVar[int]
    AT_MS_FIELD_NUMBER: _ClassVar[int]
    SUBMITTER_FIELD_NUMBER: _ClassVar[int]
    namespace: str
    id: str
    kind: str
    agent: str
    attempt: int
    error: str
    output_json: str
    at_ms: int
    submitter: str
    def __init__(self, namespace: _Optional[str] = ..., id: _Optional[str] = ..., kind: _Optional[str] = ..., agent: _Optional[str] = ..., attempt: _Optional[int] = ..., error: _Optional[str] = ..., output_json: _Optional[str] = ..., at_ms: _Optional[int] = ..., submitter: _Optional[str] = ...) -> None: ...

class TaskGetRequest(_message.Message):
    __slots__ = ("namespace", "id")
    NAMESPACE_FIELD_NUMBER: _ClassVar[int]
    ID_FIELD_NUMBER: _ClassVar[int]
    namespace: str
    id: str
    def __init__(self, namespace: _Optional[str] = ..., id: _Optional[str] = ...) -> None: ...

class TaskListRequest(_message.Message):
    __slots__ = ("namespace", "state", "type", "page_token", "page_size")
    NAMESPACE_FIELD_NUMBER: _ClassVar[int]
    STATE_FIELD_NUMBER: _ClassVar[int]
    TYPE_FIELD_NUMBER: _ClassVar[int]
    PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    PAGE_SIZE_FIELD_NUMBER: _ClassVar[int]
    namespace: str
    state: str
    type: str
    page_token: str
    page_size: int
    def __init__(self, namespace: _Optional[str] = ..., state: _Optional[str] = ..., type: _Optional[str] = ..., page_token: _Optional[str] = ..., page_size: _Optional[int] = ...) -> None: ...

class TaskListResponse(_message.Message):
    __slots__ = ("tasks", "next_page_token")
    TASKS_FIELD_NUMBER: _ClassVar[int]
    NEXT_PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    tasks: _containers.RepeatedCompositeFieldContainer[TaskInfo]
    next_page_token: str
    def __init__(self, tasks: _Optional[_Iterable[_Union[TaskInfo, _Mapping]]] = ..., next_page_token: _Optional[str] = ...) -> None: ...

class TaskAttemptError(_message.Message):
    __slots__ = ("attempt", "agent", "error", "at_ms")
    ATTEMPT_FIELD_NUMBER: _ClassVar[int]
    AGENT_FIELD_NUMBER: _ClassVar[int]
    ERROR_FIELD_NUMBER: _ClassVar[int]
    AT_MS_FIELD_NUMBER: _ClassVar[int]
    attempt: int
    agent: str
    error: str
    at_ms: int
    def __init__(self, attempt: _Optional[int] = ..., agent: _Optional[str] = ..., error: _Optional[str] = ..., at_ms: _Optional[int] = ...) -> None: ...

class TaskInfo(_message.Message):
    __slots__ = ("namespace", "id", "type", "input_json", "pinned", "role", "capabilities", "priority", "timeout_ms", "max_attempts", "depends_on", "submitter", "submitted_at_ms", "state", "attempt", "failures", "holder", "deadline_ms", "output_json", "finished_at_ms", "errors")
    NAMESPACE_FIELD_NUMBER: _ClassVar[int]
    ID_FIELD_NUMBER: _ClassVar[int]
    TYPE_FIELD_NUMBER: _ClassVar[int]
    INPUT_JSON_FIELD_NUMBER: _ClassVar[int]
    PINNED_FIELD_NUMBER: _ClassVar[int]
    ROLE_FIELD_NUMBER: _ClassVar[int]
    CAPABILITIES_FIELD_NUMBER: _ClassVar[int]
    PRIORITY_FIELD_NUMBER: _ClassVar[int]
    TIMEOUT_MS_FIELD_NUMBER: _ClassVar[int]
    MAX_ATTEMPTS_FIELD_NUMBER: _ClassVar[int]
    DEPENDS_ON_FIELD_NUMBER: _ClassVar[int]
    SUBMITTER_FIELD_NUMBER: _ClassVar[int]
    SUBMITTED_AT_MS_FIELD_NUMBER: _ClassVar[int]
    STATE_FIELD_NUMBER: _ClassVar[int]
    ATTEMPT_FIELD_NUMBER: _ClassVar[int]
    FAILURES_FIELD_NUMBER: _ClassVar[int]
    HOLDER_FIELD_NUMBER: _ClassVar[int]
    DEADLINE_MS_FIELD_NUMBER: _ClassVar[int]
    OUTPUT_JSON_FIELD_NUMBER: _ClassVar[int]
    FINISHED_AT_MS_FIELD_NUMBER: _ClassVar[int]
    ERRORS_FIELD_NUMBER: _ClassVar[int]
    namespace: str
    id: str
    type: str
    input_json: str
    pinned: _containers.RepeatedCompositeFieldContainer[PinnedContext]
    role: str
    capabilities: _containers.RepeatedScalarFieldContainer[str]
    priority: int
    timeout_ms: int
    max_attempts: int
    depends_on: _containers.RepeatedScalarFieldContainer[str]
    submitter: str
    submitted_at_ms: int
    state: str
    attempt: int
    failures: int
    holder: str
    deadline_ms: int
    output_json: str
    finished_at_ms: int
    errors: _containers.RepeatedCompositeFieldContainer[TaskAttemptError]
    def __init__(self, namespace: _Optional[str] = ..., id: _Optional[str] = ..., type: _Optional[str] = ..., input_json: _Optional[str] = ..., pinned: _Optional[_Iterable[_Union[PinnedContext, _Mapping]]] = ..., role: _Optional[str] = ..., capabilities: _Optional[_Iterable[str]] = ..., priority: _Optional[int] = ..., timeout_ms: _Optional[int] = ..., max_attempts: _Optional[int] = ..., depends_on: _Optional[_Iterable[str]] = ..., submitter: _Optional[str] = ..., submitted_at_ms: _Optional[int] = ..., state: _Optional[str] = ..., attempt: _Optional[int] = ..., failures: _Optional[int] = ..., holder: _Optional[str] = ..., deadline_ms: _Optional[int] = ..., output_json: _Optional[str] = ..., finished_at_ms: _Optional[int] = ..., errors: _Optional[_Iterable[_Union[TaskAttemptError, _Mapping]]] = ...) -> None: ...

class TaskWatchRequest(_message.Message):
    __slots__ = ("namespace",)
    NAMESPACE_FIELD_NUMBER: _ClassVar[int]
    namespace: str
    def __init__(self, namespace: _Optional[str] = ...) -> None: ...

class TaskQueuesRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class TaskQueue(_message.Message):
    __slots__ = ("namespace", "type", "waiting", "ready", "held", "completed", "dead_lettered", "oldest_ready_age_ms")
    NAMESPACE_FIELD_NUMBER: _ClassVar[int]
    TYPE_FIELD_NUMBER: _ClassVar[int]
    WAITING_FIELD_NUMBER: _ClassVar[int]
    READY_FIELD_NUMBER: _ClassVar[int]
    HELD_FIELD_NUMBER: _ClassVar[int]
    COMPLETED_FIELD_NUMBER: _ClassVar[int]
    DEAD_LETTERED_FIELD_NUMBER: _ClassVar[int]
    OLDEST_READY_AGE_MS_FIELD_NUMBER: _ClassVar[int]
    namespace: str
    type: str
    waiting: int
    ready: int
    held: int
    completed: int
    dead_lettered: int
    oldest_ready_age_ms: int
    def __init__(self, namespace: _Optional[str] = ..., type: _Optional[str] = ..., waiting: _Optional[int] = ..., ready: _Optional[int] = ..., held: _Optional[int] = ..., completed: _Optional[int] = ..., dead_lettered: _Optional[int] = ..., oldest_ready_age_ms: _Optional[int] = ...) -> None: ...

class TaskQueuesResponse(_message.Message):
    __slots__ = ("queues",)
    QUEUES_FIELD_NUMBER: _ClassVar[int]
    queues: _containers.RepeatedCompositeFieldContainer[TaskQueue]
    def __init__(self, queues: _Optional[_Iterable[_Union[TaskQueue, _Mapping]]] = ...) -> None: ...

class TraceSession(_message.Message):
    __slots__ = ("namespace", "agent_id", "resume_token")
    NAMESPACE_FIELD_NUMBER: _ClassVar[int]
    AGENT_ID_FIELD_NUMBER: _ClassVar[int]
    RESUME_TOKEN_FIELD_NUMBER: _ClassVar[int]
    namespace: str
    agent_id: str
    resume_token: str
    def __init__(self, namespace: _Optional[str] = ..., agent_id: _Optional[str] = ..., resume_token: _Optional[str] = ...) -> None: ...

class TraceContextRef(_message.Message):
    __slots__ = ("key", "version")
    KEY_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    key: str
    version: int
    def __init__(self, key: _Optional[str] = ..., version: _Optional[int] = ...) -> None: ...

class TraceHeader(_message.Message):
    __slots__ = ("session", "tool", "input_json", "json", "size", "sha256", "parents", "context", "started_at_ms", "duration_ms")
    SESSION_FIELD_NUMBER: _ClassVar[int]
    TOOL_FIELD_NUMBER: _ClassVar[int]
    INPUT_JSON_FIELD_NUMBER: _ClassVar[int]
    JSON_FIELD_NUMBER: _ClassVar[int]
    SIZE_FIELD_NUMBER: _ClassVar[int]
    SHA256_FIELD_NUMBER: _ClassVar[int]
    PARENTS_FIELD_NUMBER: _ClassVar[int]
    CONTEXT_FIELD_NUMBER: _ClassVar[int]
    STARTED_AT_MS_FIELD_NUMBER: _ClassVar[int]
    DURATION_MS_FIELD_NUMBER: _ClassVar[int]
    session: TraceSession
    tool: str
    input_json: str
    json: bool
    size: int
    sha256: str
    parents: _containers.RepeatedScalarFieldContainer[str]
    context: _containers.RepeatedCompositeFieldContainer[TraceContextRef]
    started_at_ms: int
    duration_ms: int
    def __init__(self, session: _Optional[_Union[TraceSession, _Mapping]] = ..., tool: _Optional[str] = ..., input_json: _Optional[str] = ..., json: bool = ..., size: _Optional[int] = ..., sha256: _Optional[str] = ..., parents: _Optional[_Iterable[str]] = ..., context: _Optional[_Iterable[_Union[TraceContextRef, _Mapping]]] = ..., started_at_ms: _Optional[int] = ..., duration_ms: _Optional[int] = ...) -> None: ...

class TraceUpload(_message.Message):
    __slots__ = ("header", "chunk")
    HEADER_FIELD_NUMBER: _ClassVar[int]
    CHUNK_FIELD_NUMBER: _ClassVar[int]
    header: TraceHeader
    chunk: bytes
    def __init__(self, header: _Optional[_Union[TraceHeader, _Mapping]] = ..., chunk: _Optional[bytes] = ...) -> None: ...

class TraceInfo(_message.Message):
    __slots__ = ("namespace", "id", "tool", "input_json", "json", "size", "sha256", "producer", "recorded_at_ms", "started_at_ms", "duration_ms", "parents", "context", "pins", "new")
    NAMESPACE_FIELD_NUMBER: _ClassVar[int]
    ID_FIELD_NUMBER: _ClassVar[int]
    TOOL_FIELD_NUMBER: _ClassVar[int]
    INPUT_JSON_FIELD_NUMBER: _ClassVar[int]
    JSON_FIELD_NUMBER: _ClassVar[int]
    SIZE_FIELD_NUMBER: _ClassVar[int]
    SHA256_FIELD_NUMBER: _ClassVar[int]
    PRODUCER_FIELD_NUMBER: _ClassVar[int]
    RECORDED_AT_MS_FIELD_NUMBER: _ClassVar[int]
    STARTED_AT_MS_FIELD_NUMBER: _ClassVar[int]
    DURATION_MS_FIELD_NUMBER: _ClassVar[int]
    PARENTS_FIELD_NUMBER: _ClassVar[int]
    CONTEXT_FIELD_NUMBER: _ClassVar[int]
    PINS_FIELD_NUMBER: _ClassVar[int]
    NEW_FIELD_NUMBER: _ClassVar[int]
    namespace: str
    id: str
    tool: str
    input_json: str
    json: bool
    size: int
    sha256: str
    producer: str
    recorded_at_ms: int
    started_at_ms: int
    duration_ms: int
    parents: _containers.RepeatedScalarFieldContainer[str]
    context: _containers.RepeatedCompositeFieldContainer[TraceContextRef]
    pins: _containers.RepeatedScalarFieldContainer[str]
    new: bool
    def __init__(self, namespace: _Optional[str] = ..., id: _Optional[str] = ..., tool: _Optional[str] = ..., input_json: _Optional[str] = ..., json: bool = ..., size: _Optional[int] = ..., sha256: _Optional[str] = ..., producer: _Optional[str] = ..., recorded_at_ms: _Optional[int] = ..., started_at_ms: _Optional[int] = ..., duration_ms: _Optional[int] = ..., parents: _Optional[_Iterable[str]] = ..., context: _Optional[_Iterable[_Union[TraceContextRef, _Mapping]]] = ..., pins: _Optional[_Iterable[str]] = ..., new: bool = ...) -> None: ...

class TraceLookupRequest(_message.Message):
    __slots__ = ("namespace", "tool", "input_json", "inline_output")
    NAMESPACE_FIELD_NUMBER: _ClassVar[int]
    TOOL_FIELD_NUMBER: _ClassVar[int]
    INPUT_JSON_FIELD_NUMBER: _ClassVar[int]
    INLINE_OUTPUT_FIELD_NUMBER: _ClassVar[int]
    namespace: str
    tool: str
    input_json: str
    inline_output: bool
    def __init__(self, namespace: _Optional[str] = ..., tool: _Optional[str] = ..., input_json: _Optional[str] = ..., inline_output: bool = ...) -> None: ...

class TraceGetRequest(_message.Message):
    __slots__ = ("namespace", "id")
    NAMESPACE_FIELD_NUMBER: _ClassVar[int]
    ID_FIELD_NUMBER: _ClassVar[int]
    namespace: str
    id: str
    def __init__(self, namespace: _Optional[str] = ..., id: _Optional[str] = ...) -> None: ...

class TraceClaimRequest(_message.Message):
    __slots__ = ("session", "tool", "input_json", "wait_ms")
    SESSION_FIELD_NUMBER: _ClassVar[int]
    TOOL_FIELD_NUMBER: _ClassVar[int]
    INPUT_JSON_FIELD_NUMBER: _ClassVar[int]
    WAIT_MS_FIELD_NUMBER: _ClassVar[int]
    session: TraceSession
    tool: str
    input_json: str
    wait_ms: int
    def __init__(self, session: _Optional[_Union[TraceSession, _Mapping]] = ..., tool: _Optional[str] = ..., input_json: _Optional[str] = ..., wait_ms: _Optional[int] = ...) -> None: ...

class TraceClaim(_message.Message):
    __slots__ = ("id",)
    ID_FIELD_NUMBER: _ClassVar[int]
    id: str
    def __init__(self, id: _Optional[str] = ...) -> None: ...

class TraceMiss(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class TraceDownload(_message.Message):
    __slots__ = ("info", "chunk", "miss", "claim", "output")
    INFO_FIELD_NUMBER: _ClassVar[int]
    CHUNK_FIELD_NUMBER: _ClassVar[int]
    MISS_FIELD_NUMBER: _ClassVar[int]
    CLAIM_FIELD_NUMBER: _ClassVar[int]
    OUTPUT_FIELD_NUMBER: _ClassVar[int]
    info: TraceInfo
    chunk: bytes
    miss: TraceMiss
    claim: TraceClaim
    output: bytes
    def __init__(self, info: _Optional[_Union[TraceInfo, _Mapping]] = ..., chunk: _Optional[bytes] = ..., miss: _Optional[_Union[TraceMiss, _Mapping]] = ..., claim: _Optional[_Union[TraceClaim, _Mapping]] = ..., output: _Optional[bytes] = ...) -> None: ...

class TraceReleased(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class TraceStatsRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class TraceStats(_message.Message):
    __slots__ = ("traces", "bytes", "hits", "misses", "evictions", "recorded", "claims", "waiters", "pinned")
    TRACES_FIELD_NUMBER: _ClassVar[int]
    BYTES_FIELD_NUMBER: _ClassVar[int]
    HITS_FIELD_NUMBER: _ClassVar[int]
    MISSES_FIELD_NUMBER: _ClassVar[int]
    EVICTIONS_FIELD_NUMBER: _ClassVar[int]
    RECORDED_FIELD_NUMBER: _ClassVar[int]
    CLAIMS_FIELD_NUMBER: _ClassVar[int]
    WAITERS_FIELD_NUMBER: _ClassVar[int]
    PINNED_FIELD_NUMBER: _ClassVar[int]
    traces: int
    bytes: int
    hits: int
    misses: int
    evictions: int
    recorded: int
    claims: int
    waiters: int
    pinned: int
    def __init__(self, traces: _Optional[int] = ..., bytes: _Optional[int] = ..., hits: _Optional[int] = ..., misses: _Optional[int] = ..., evictions: _Optional[int] = ..., recorded: _Optional[int] = ..., claims: _Optional[int] = ..., waiters: _Optional[int] = ..., pinned: _Optional[int] = ...) -> None: ...

class TraceParent(_message.Message):
    __slots__ = ("id", "stored")
    ID_FIELD_NUMBER: _ClassVar[int]
    STORED_FIELD_NUMBER: _ClassVar[int]
    id: str
    stored: bool
    def __init__(self, id: _Optional[str] = ..., stored: bool = ...) -> None: ...

class TraceLineage(_message.Message):
    __slots__ = ("trace", "parents", "context", "children")
    TRACE_FIELD_NUMBER: _ClassVar[int]
    PARENTS_FIELD_NUMBER: _ClassVar[int]
    CONTEXT_FIELD_NUMBER: _ClassVar[int]
    CHILDREN_FIELD_NUMBER: _ClassVar[int]
    trace: TraceInfo
    parents: _containers.RepeatedCompositeFieldContainer[TraceParent]
    context: _containers.RepeatedCompositeFieldContainer[TraceContextRef]
    children: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, trace: _Optional[_Union[TraceInfo, _Mapping]] = ..., parents: _Optional[_Iterable[_Union[TraceParent, _Mapping]]] = ..., context: _Optional[_Iterable[_Union[TraceContextRef, _Mapping]]] = ..., children: _Optional[_Iterable[str]] = ...) -> None: ...

class RoundAnswer(_message.Message):
    __slots__ = ("series", "round", "output_json")
    SERIES_FIELD_NUMBER: _ClassVar[int]
    ROUND_FIELD_NUMBER: _ClassVar[int]
    OUTPUT_JSON_FIELD_NUMBER: _ClassVar[int]
    series: str
    round: int
    output_json: str
    def __init__(self, series: _Optional[str] = ..., round: _Optional[int] = ..., output_json: _Optional[str] = ...) -> None: ...

class RoundInput(_message.Message):
    __slots__ = ("series", "round", "input_json", "deadline_ms")
    SERIES_FIELD_NUMBER: _ClassVar[int]
    ROUND_FIELD_NUMBER: _ClassVar[int]
    INPUT_JSON_FIELD_NUMBER: _ClassVar[int]
    DEADLINE_MS_FIELD_NUMBER: _ClassVar[int]
    series: str
    round: int
    input_json: str
    deadline_ms: int
    def __init__(self, series: _Optional[str] = ..., round: _Optional[int] = ..., input_json: _Optional[str] = ..., deadline_ms: _Optional[int] = ...) -> None: ...

class RoundSeriesSpec(_message.Message):
    __slots__ = ("namespace", "name", "agents", "role", "timeout_ms", "context_key", "topic", "cadence_ms", "merge_order", "input_json")
    NAMESPACE_FIELD_NUMBER: _ClassVar[int]
    NAME_FIELD_NUMBER: _ClassVar[int]
    AGENTS_FIELD_NUMBER: _ClassVar[int]
    ROLE_FIELD_NUMBER: _ClassVar[int]
    TIMEOUT_MS_FIELD_NUMBER: _ClassVar[int]
    CONTEXT_KEY_FIELD_NUMBER: _ClassVar[int]
    TOPIC_FIELD_NUMBER: _ClassVar[int]
    CADENCE_MS_FIELD_NUMBER: _ClassVar[int]
    MERGE_ORDER_FIELD_NUMBER: _ClassVar[int]
    INPUT_JSON_FIELD_NUMBER: _ClassVar[int]
    namespace: str
    name: str
    agents: _containers.RepeatedScalarFieldContainer[str]
    role: str
    timeout_ms: int
    context_key: str
    topic: str
    cadence_ms: int
    merge_order: str
    input_json: str
    def __init__(self, namespace: _Optional[str] = ..., name: _Optional[str] = ..., agents: _Optional[_Iterable[str]] = ..., role: _Optional[str] = ..., timeout_ms: _Optional[int] = ..., context_key: _Optional[str] = ..., topic: _Optional[str] = ..., cadence_ms: _Optional[int] = ..., merge_order: _Optional[str] = ..., input_json: _Optional[str] = ...) -> None: ...

class RoundSeriesRef(_message.Message):
    __slots__ = ("namespace", "name")
    NAMESPACE_FIELD_NUMBER: _ClassVar[int]
    NAME_FIELD_NUMBER: _ClassVar[int]
    namespace: str
    name: str
    def __init__(self, namespace: _Optional[str] = ..., name: _Optional[str] = ...) -> None: ...

class OpenRoundRequest(_message.Message):
    __slots__ = ("namespace", "series", "round", "input_json", "driver")
    NAMESPACE_FIELD_NUMBER: _ClassVar[int]
    SERIES_FIELD_NUMBER: _ClassVar[int]
    ROUND_FIELD_NUMBER: _ClassVar[int]
    INPUT_JSON_FIELD_NUMBER: _ClassVar[int]
    DRIVER_FIELD_NUMBER: _ClassVar[int]
    namespace: str
    series: str
    round: int
    input_json: str
    driver: str
    def __init__(self, namespace: _Optional[str] = ..., series: _Optional[str] = ..., round: _Optional[int] = ..., input_json: _Optional[str] = ..., driver: _Optional[str] = ...) -> None: ...

class RoundOpened(_message.Message):
    __slots__ = ("round", "deadline_ms", "participants")
    ROUND_FIELD_NUMBER: _ClassVar[int]
    DEADLINE_MS_FIELD_NUMBER: _ClassVar[int]
    PARTICIPANTS_FIELD_NUMBER: _ClassVar[int]
    round: int
    deadline_ms: int
    participants: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, round: _Optional[int] = ..., deadline_ms: _Optional[int] = ..., participants: _Optional[_Iterable[str]] = ...) -> None: ...

class RoundMiss(_message.Message):
    __slots__ = ("agent", "why")
    AGENT_FIELD_NUMBER: _ClassVar[int]
    WHY_FIELD_NUMBER: _ClassVar[int]
    agent: str
    why: str
    def __init__(self, agent: _Optional[str] = ..., why: _Optional[str] = ...) -> None: ...

class RoundAnswerInfo(_message.Message):
    __slots__ = ("agent", "after_ms")
    AGENT_FIELD_NUMBER: _ClassVar[int]
    AFTER_MS_FIELD_NUMBER: _ClassVar[int]
    agent: str
    after_ms: int
    def __init__(self, agent: _Optional[str] = ..., after_ms: _Optional[int] = ...) -> None: ...

class RoundInfo(_message.Message):
    __slots__ = ("series", "round", "open", "driver", "opened_at_ms", "deadline_ms", "closed_at_ms", "closing", "participants", "answered", "missed", "skipped", "context_version", "merge_error", "waiting")
    SERIES_FIELD_NUMBER: _ClassVar[int]
    ROUND_FIELD_NUMBER: _ClassVar[int]
    OPEN_FIELD_NUMBER: _ClassVar[int]
    DRIVER_FIELD_NUMBER: _ClassVar[int]
    OPENED_AT_MS_FIELD_NUMBER: _ClassVar[int]
    DEADLINE_MS_FIELD_NUMBER: _ClassVar[int]
    CLOSED_AT_MS_FIELD_NUMBER: _ClassVar[int]
    CLOSING_FIELD_NUMBER: _ClassVar[int]
    PARTICIPANTS_FIELD_NUMBER: _ClassVar[int]
    ANSWERED_FIELD_NUMBER: _ClassVar[int]
    MISSED_FIELD_NUMBER: _ClassVar[int]
    SKIPPED_FIELD_NUMBER: _ClassVar[int]
    CONTEXT_VERSION_FIELD_NUMBER: _ClassVar[int]
    MERGE_ERROR_FIELD_NUMBER: _ClassVar[int]
    WAITING_FIELD_NUMBER: _ClassVar[int]
    series: str
    round: int
    open: bool
    driver: str
    opened_at_ms: int
    deadline_ms: int
    closed_at_ms: int
    closing: str
    participants: _containers.RepeatedScalarFieldContainer[str]
    answered: _containers.RepeatedCompositeFieldContainer[RoundAnswerInfo]
    missed: _containers.RepeatedCompositeFieldContainer[RoundMiss]
    skipped: _containers.RepeatedScalarFieldContainer[str]
    context_version: int
    merge_error: str
    waiting: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, series: _Optional[str] = ..., round: _Optional[int] = ..., open: bool = ..., driver: _Optional[str] = ..., opened_at_ms: _Optional[int] = ..., deadline_ms: _Optional[int] = ..., closed_at_ms: _Optional[int] = ..., closing: _Optional[str] = ..., participants: _Optional[_Iterable[str]] = ..., answered: _Optional[_Iterable[_Union[RoundAnswerInfo, _Mapping]]] = ..., missed: _Optional[_Iterable[_Union[RoundMiss, _Mapping]]] = ..., skipped: _Optional[_Iterable[str]] = ..., context_version: _Optional[int] = ..., merge_error: _Optional[str] = ..., waiting: _Optional[_Iterable[str]] = ...) -> None: ...

class RoundSeriesInfo(_message.Message):
    __slots__ = ("spec", "created_at_ms", "last_round", "next_tick_ms", "open_round", "retained")
    SPEC_FIELD_NUMBER: _ClassVar[int]
    CREATED_AT_MS_FIELD_NUMBER: _ClassVar[int]
    LAST_ROUND_FIELD_NUMBER: _ClassVar[int]
    NEXT_TICK_MS_FIELD_NUMBER: _ClassVar[int]
    OPEN_ROUND_FIELD_NUMBER: _ClassVar[int]
    RETAINED_FIELD_NUMBER: _ClassVar[int]
    spec: RoundSeriesSpec
    created_at_ms: int
    last_round: int
    next_tick_ms: int
    open_round: RoundInfo
    retained: _containers.RepeatedCompositeFieldContainer[RoundInfo]
    def __init__(self, spec: _Optional[_Union[RoundSeriesSpec, _Mapping]] = ..., created_at_ms: _Optional[int] = ..., last_round: _Optional[int] = ..., next_tick_ms: _Optional[int] = ..., open_round: _Optional[_Union[RoundInfo, _Mapping]] = ..., retained: _Optional[_Iterable[_Union[RoundInfo, _Mapping]]] = ...) -> None: ...

class ListRoundSeriesRequest(_message.Message):
    __slots__ = ("namespace",)
    NAMESPACE_FIELD_NUMBER: _ClassVar[int]
    namespace: str
    def __init__(self, namespace: _Optional[str] = ...) -> None: ...

class ListRoundSeriesResponse(_message.Message):
    __slots__ = ("series",)
    SERIES_FIELD_NUMBER: _ClassVar[int]
    series: _containers.RepeatedCompositeFieldContainer[RoundSeriesInfo]
    def __init__(self, series: _Optional[_Iterable[_Union[RoundSeriesInfo, _Mapping]]] = ...) -> None: ...

class GetRoundRequest(_message.Message):
    __slots__ = ("namespace", "series", "round")
    NAMESPACE_FIELD_NUMBER: _ClassVar[int]
    SERIES_FIELD_NUMBER: _ClassVar[int]
    ROUND_FIELD_NUMBER: _ClassVar[int]
    namespace: str
    series: str
    round: int
    def __init__(self, namespace: _Optional[str] = ..., series: _Optional[str] = ..., round: _Optional[int] = ...) -> None: ...

class TickerSpec(_message.Message):
    __slots__ = ("namespace", "id", "inputs", "output", "period_ms", "lateness_ms", "idle_timeout_ms", "max_skew_ms", "late_policy", "min_sources")
    NAMESPACE_FIELD_NUMBER: _ClassVar[int]
    ID_FIELD_NUMBER: _ClassVar[int]
    INPUTS_FIELD_NUMBER: _ClassVar[int]
    OUTPUT_FIELD_NUMBER: _ClassVar[int]
    PERIOD_MS_FIELD_NUMBER: _ClassVar[int]
    LATENESS_MS_FIELD_NUMBER: _ClassVar[int]
    IDLE_TIMEOUT_MS_FIELD_NUMBER: _ClassVar[int]
    MAX_SKEW_MS_FIELD_NUMBER: _ClassVar[int]
    LATE_POLICY_FIELD_NUMBER: _ClassVar[int]
    MIN_SOURCES_FIELD_NUMBER: _ClassVar[int]
    namespace: str
    id: str
    inputs: _containers.RepeatedScalarFieldContainer[str]
    output: str
    period_ms: int
    lateness_ms: int
    idle_timeout_ms: int
    max_skew_ms: int
    late_policy: str
    min_sources: int
    def __init__(self, namespace: _Optional[str] = ..., id: _Optional[str] = ..., inputs: _Optional[_Iterable[str]] = ..., output: _Optional[str] = ..., period_ms: _Optional[int] = ..., lateness_ms: _Optional[int] = ..., idle_timeout_ms: _Optional[int] = ..., max_skew_ms: _Optional[int] = ..., late_policy: _Optional[str] = ..., min_sources: _Optional[int] = ...) -> None: ...

class BufferSpec(_message.Message):
    __slots__ = ("namespace", "id", "topic", "pointer", "cadence_ms", "grace_ms", "estimator", "output", "max_provisional")
    NAMESPACE_FIELD_NUMBER: _ClassVar[int]
    ID_FIELD_NUMBER: _ClassVar[int]
    TOPIC_FIELD_NUMBER: _ClassVar[int]
    POINTER_FIELD_NUMBER: _ClassVar[int]
    CADENCE_MS_FIELD_NUMBER: _ClassVar[int]
    GRACE_MS_FIELD_NUMBER: _ClassVar[int]
    ESTIMATOR_FIELD_NUMBER: _ClassVar[int]
    OUTPUT_FIELD_NUMBER: _ClassVar[int]
    MAX_PROVISIONAL_FIELD_NUMBER: _ClassVar[int]
    namespace: str
    id: str
    topic: str
    pointer: str
    cadence_ms: int
    grace_ms: int
    estimator: str
    output: str
    max_provisional: int
    def __init__(self, namespace: _Optional[str] = ..., id: _Optional[str] = ..., topic: _Optional[str] = ..., pointer: _Optional[str] = ..., cadence_ms: _Optional[int] = ..., grace_ms: _Optional[int] = ..., estimator: _Optional[str] = ..., output: _Optional[str] = ..., max_provisional: _Optional[int] = ...) -> None: ...

class StreamAck(_message.Message):
    __slots__ = ("detail",)
    DETAIL_FIELD_NUMBER: _ClassVar[int]
    detail: str
    def __init__(self, detail: _Optional[str] = ...) -> None: ...

class StreamRef(_message.Message):
    __slots__ = ("namespace", "kind", "id")
    NAMESPACE_FIELD_NUMBER: _ClassVar[int]
    KIND_FIELD_NUMBER: _ClassVar[int]
    ID_FIELD_NUMBER: _ClassVar[int]
    namespace: str
    kind: str
    id: str
    def __init__(self, namespace: _Optional[str] = ..., kind: _Optional[str] = ..., id: _Optional[str] = ...) -> None: ...

class StreamListRequest(_message.Message):
    __slots__ = ("namespace",)
    NAMESPACE_FIELD_NUMBER: _ClassVar[int]
    namespace: str
    def __init__(self, namespace: _Optional[str] = ...) -> None: ...

class TickerSource(_message.Message):
    __slots__ = ("publisher", "max_event_time_ms", "watermark_ms", "last_heard_ms", "idle", "events", "lag_ms")
    PUBLISHER_FIELD_NUMBER: _ClassVar[int]
    MAX_EVENT_TIME_MS_FIELD_NUMBER: _ClassVar[int]
    WATERMARK_MS_FIELD_NUMBER: _ClassVar[int]
    LAST_HEARD_MS_FIELD_NUMBER: _ClassVar[int]
    IDLE_FIELD_NUMBER: _ClassVar[int]
    EVENTS_FIELD_NUMBER: _ClassVar[int]
    LAG_MS_FIELD_NUMBER: _ClassVar[int]
    publisher: str
    max_event_time_ms: int
    watermark_ms: int
    last_heard_ms: int
    idle: bool
    events: int
    lag_ms: int
    def __init__(self, publisher: _Optional[str] = ..., max_event_time_ms: _Optional[int] = ..., watermark_ms: _Optional[int] = ..., last_heard_ms: _Optional[int] = ..., idle: bool = ..., events: _Optional[int] = ..., lag_ms: _Optional[int] = ...) -> None: ...

class TickerStats(_message.Message):
    __slots__ = ("events", "ticks_emitted", "corrections", "late_dropped", "late_next_tick", "forced", "idle_reports", "skew_violations", "skew_ms", "refused", "buffered_events", "buffered_bytes", "next_tick", "watermark_ms")
    EVENTS_FIELD_NUMBER: _ClassVar[int]
    TICKS_EMITTED_FIELD_NUMBER: _ClassVar[int]
    CORRECTIONS_FIELD_NUMBER: _ClassVar[int]
    LATE_DROPPED_FIELD_NUMBER: _ClassVar[int]
    LATE_NEXT_TICK_FIELD_NUMBER: _ClassVar[int]
    FORCED_FIELD_NUMBER: _ClassVar[int]
    IDLE_REPORTS_FIELD_NUMBER: _ClassVar[int]
    SKEW_VIOLATIONS_FIELD_NUMBER: _ClassVar[int]
    SKEW_MS_FIELD_NUMBER: _ClassVar[int]
    REFUSED_FIELD_NUMBER: _ClassVar[int]
    BUFFERED_EVENTS_FIELD_NUMBER: _ClassVar[int]
    BUFFERED_BYTES_FIELD_NUMBER: _ClassVar[int]
    NEXT_TICK_FIELD_NUMBER: _ClassVar[int]
    WATERMARK_MS_FIELD_NUMBER: _ClassVar[int]
    events: int
    ticks_emitted: int
    corrections: int
    late_dropped: int
    late_next_tick: int
    forced: int
    idle_reports: int
    skew_violations: int
    skew_ms: int
    refused: int
    buffered_events: int
    buffered_bytes: int
    next_tick: int
    watermark_ms: int
    def __init__(self, events: _Optional[int] = ..., ticks_emitted: _Optional[int] = ..., corrections: _Optional[int] = ..., late_dropped: _Optional[int] = ..., late_next_tick: _Optional[int] = ..., forced: _Optional[int] = ..., idle_reports: _Optional[int] = ..., skew_violations: _Optional[int] = ..., skew_ms: _Optional[int] = ..., refused: _Optional[int] = ..., buffered_events: _Optional[int] = ..., buffered_bytes: _Optional[int] = ..., next_tick: _Optional[int] = ..., watermark_ms: _Optional[int] = ...) -> None: ...

class TickerInfo(_message.Message):
    __slots__ = ("spec", "stats", "sources")
    SPEC_FIELD_NUMBER: _ClassVar[int]
    STATS_FIELD_NUMBER: _ClassVar[int]
    SOURCES_FIELD_NUMBER: _ClassVar[int]
    spec: TickerSpec
    stats: TickerStats
    sources: _containers.RepeatedCompositeFieldContainer[TickerSource]
    def __init__(self, spec: _Optional[_Union[TickerSpec, _Mapping]] = ..., stats: _Optional[_Union[TickerStats, _Mapping]] = ..., sources: _Optional[_Iterable[_Union[TickerSource, _Mapping]]] = ...) -> None: ...

class TickerList(_message.Message):
    __slots__ = ("tickers",)
    TICKERS_FIELD_NUMBER: _ClassVar[int]
    tickers: _containers.RepeatedCompositeFieldContainer[TickerInfo]
    def __init__(self, tickers: _Optional[_Iterable[_Union[TickerInfo, _Mapping]]] = ...) -> None: ...

class BufferStats(_message.Message):
    __slots__ = ("samples", "provisional", "settled", "provisional_share", "mean_abs_error", "max_abs_error", "invalid", "stale", "last_value", "last_time_ms", "outstanding")
    SAMPLES_FIELD_NUMBER: _ClassVar[int]
    PROVISIONAL_FIELD_NUMBER: _ClassVar[int]
    SETTLED_FIELD_NUMBER: _ClassVar[int]
    PROVISIONAL_SHARE_FIELD_NUMBER: _ClassVar[int]
    MEAN_ABS_ERROR_FIELD_NUMBER: _ClassVar[int]
    MAX_ABS_ERROR_FIELD_NUMBER: _ClassVar[int]
    INVALID_FIELD_NUMBER: _ClassVar[int]
    STALE_FIELD_NUMBER: _ClassVar[int]
    LAST_VALUE_FIELD_NUMBER: _ClassVar[int]
    LAST_TIME_MS_FIELD_NUMBER: _ClassVar[int]
    OUTSTANDING_FIELD_NUMBER: _ClassVar[int]
    samples: int
    provisional: int
    settled: int
    provisional_share: float
    mean_abs_error: float
    max_abs_error: float
    invalid: int
    stale: int
    last_value: float
    last_time_ms: int
    outstanding: int
    def __init__(self, samples: _Optional[int] = ..., provisional: _Optional[int] = ..., settled: _Optional[int] = ..., provisional_share: _Optional[float] = ..., mean_abs_error: _Optional[float] = ..., max_abs_error: _Optional[float] = ..., invalid: _Optional[int] = ..., stale: _Optional[int] = ..., last_value: _Optional[float] = ..., last_time_ms: _Optional[int] = ..., outstanding: _Optional[int] = ...) -> None: ...

class BufferInfo(_message.Message):
    __slots__ = ("spec", "stats")
    SPEC_FIELD_NUMBER: _ClassVar[int]
    STATS_FIELD_NUMBER: _ClassVar[int]
    spec: BufferSpec
    stats: BufferStats
    def __init__(self, spec: _Optional[_Union[BufferSpec, _Mapping]] = ..., stats: _Optional[_Union[BufferStats, _Mapping]] = ...) -> None: ...

class BufferList(_message.Message):
    __slots__ = ("buffers",)
    BUFFERS_FIELD_NUMBER: _ClassVar[int]
    buffers: _containers.RepeatedCompositeFieldContainer[BufferInfo]
    def __init__(self, buffers: _Optional[_Iterable[_Union[BufferInfo, _Mapping]]] = ...) -> None: ...

class Subscribe(_message.Message):
    __slots__ = ("pattern", "last", "since_seq", "since_time_ms")
    PATTERN_FIELD_NUMBER: _ClassVar[int]
    LAST_FIELD_NUMBER: _ClassVar[int]
    SINCE_SEQ_FIELD_NUMBER: _ClassVar[int]
    SINCE_TIME_MS_FIELD_NUMBER: _ClassVar[int]
    pattern: str
    last: int
    since_seq: int
    since_time_ms: int
    def __init__(self, pattern: _Optional[str] = ..., last: _Optional[int] = ..., since_seq: _Optional[int] = ..., since_time_ms: _Optional[int] = ...) -> None: ...

class Unsubscribe(_message.Message):
    __slots__ = ("pattern",)
    PATTERN_FIELD_NUMBER: _ClassVar[int]
    pattern: str
    def __init__(self, pattern: _Optional[str] = ...) -> None: ...

class HistoryGap(_message.Message):
    __slots__ = ("topic", "first_seq", "last_seq")
    TOPIC_FIELD_NUMBER: _ClassVar[int]
    FIRST_SEQ_FIELD_NUMBER: _ClassVar[int]
    LAST_SEQ_FIELD_NUMBER: _ClassVar[int]
    topic: str
    first_seq: int
    last_seq: int
    def __init__(self, topic: _Optional[str] = ..., first_seq: _Optional[int] = ..., last_seq: _Optional[int] = ...) -> None: ...

class ListTopicsRequest(_message.Message):
    __slots__ = ("namespace", "page_token", "page_size")
    NAMESPACE_FIELD_NUMBER: _ClassVar[int]
    PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    PAGE_SIZE_FIELD_NUMBER: _ClassVar[int]
    namespace: str
    page_token: str
    page_size: int
    def __init__(self, namespace: _Optional[str] = ..., page_token: _Optional[str] = ..., page_size: _Optional[int] = ...) -> None: ...

class TopicInfo(_message.Message):
    __slots__ = ("topic", "messages", "bytes", "first_seq", "last_seq", "rule", "stored")
    TOPIC_FIELD_NUMBER: _ClassVar[int]
    MESSAGES_FIELD_NUMBER: _ClassVar[int]
    BYTES_FIELD_NUMBER: _ClassVar[int]
    FIRST_SEQ_FIELD_NUMBER: _ClassVar[int]
    LAST_SEQ_FIELD_NUMBER: _ClassVar[int]
    RULE_FIELD_NUMBER: _ClassVar[int]
    STORED_FIELD_NUMBER: _ClassVar[int]
    topic: str
    messages: int
    bytes: int
    first_seq: int
    last_seq: int
    rule: str
    stored: bool
    def __init__(self, topic: _Optional[str] = ..., messages: _Optional[int] = ..., bytes: _Optional[int] = ..., first_seq: _Optional[int] = ..., last_seq: _Optional[int] = ..., rule: _Optional[str] = ..., stored: bool = ...) -> None: ...

class ListTopicsResponse(_message.Message):
    __slots__ = ("topics", "next_page_token")
    TOPICS_FIELD_NUMBER: _ClassVar[int]
    NEXT_PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    topics: _containers.RepeatedCompositeFieldContainer[TopicInfo]
    next_page_token: str
    def __init__(self, topics: _Optional[_Iterable[_Union[TopicInfo, _Mapping]]] = ..., next_page_token: _Optional[str] = ...) -> None: ...

class SchemaError(_message.Message):
    __slots__ = ("path", "reason")
    PATH_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    path: str
    reason: str
    def __init__(self, path: _Optional[str] = ..., reason: _Optional[str] = ...) -> None: ...

class IntakeRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class ReplaceIntakeRequest(_message.Message):
    __slots__ = ("rules_json",)
    RULES_JSON_FIELD_NUMBER: _ClassVar[int]
    rules_json: str
    def __init__(self, rules_json: _Optional[str] = ...) -> None: ...

class IntakeAck(_message.Message):
    __slots__ = ("version", "detail")
    VERSION_FIELD_NUMBER: _ClassVar[int]
    DETAIL_FIELD_NUMBER: _ClassVar[int]
    version: int
    detail: str
    def __init__(self, version: _Optional[int] = ..., detail: _Optional[str] = ...) -> None: ...

class IntakeCount(_message.Message):
    __slots__ = ("key", "count")
    KEY_FIELD_NUMBER: _ClassVar[int]
    COUNT_FIELD_NUMBER: _ClassVar[int]
    key: str
    count: int
    def __init__(self, key: _Optional[str] = ..., count: _Optional[int] = ...) -> None: ...

class IntakeInfo(_message.Message):
    __slots__ = ("version", "rules_json", "validated", "refused", "refused_by_topic", "refused_by_publisher", "dead_lettered", "categorised", "matched_by_rule", "unmatched")
    VERSION_FIELD_NUMBER: _ClassVar[int]
    RULES_JSON_FIELD_NUMBER: _ClassVar[int]
    VALIDATED_FIELD_NUMBER: _ClassVar[int]
    REFUSED_FIELD_NUMBER: _ClassVar[int]
    REFUSED_BY_TOPIC_FIELD_NUMBER: _ClassVar[int]
    REFUSED_BY_PUBLISHER_FIELD_NUMBER: _ClassVar[int]
    DEAD_LETTERED_FIELD_NUMBER: _ClassVar[int]
    CATEGORISED_FIELD_NUMBER: _ClassVar[int]
    MATCHED_BY_RULE_FIELD_NUMBER: _ClassVar[int]
    UNMATCHED_FIELD_NUMBER: _ClassVar[int]
    version: int
    rules_json: str
    validated: int
    refused: int
    refused_by_topic: _containers.RepeatedCompositeFieldContainer[IntakeCount]
    refused_by_publisher: _containers.RepeatedCompositeFieldContainer[IntakeCount]
    dead_lettered: int
    categorised: int
    matched_by_rule: _containers.RepeatedCompositeFieldContainer[IntakeCount]
    unmatched: int
    def __init__(self, version: _Optional[int] = ..., rules_json: _Optional[str] = ..., validated: _Optional[int] = ..., refused: _Optional[int] = ..., refused_by_topic: _Optional[_Iterable[_Union[IntakeCount, _Mapping]]] = ..., refused_by_publisher: _Optional[_Iterable[_Union[IntakeCount, _Mapping]]] = ..., dead_lettered: _Optional[int] = ..., categorised: _Optional[int] = ..., matched_by_rule: _Optional[_Iterable[_Union[IntakeCount, _Mapping]]] = ..., unmatched: _Optional[int] = ...) -> None: ...

class SystemSpec(_message.Message):
    __slots__ = ("name", "kind", "cadence_ms", "tolerance_ms", "criticality", "owner", "metadata", "agents")
    class MetadataEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    NAME_FIELD_NUMBER: _ClassVar[int]
    KIND_FIELD_NUMBER: _ClassVar[int]
    CADENCE_MS_FIELD_NUMBER: _ClassVar[int]
    TOLERANCE_MS_FIELD_NUMBER: _ClassVar[int]
    CRITICALITY_FIELD_NUMBER: _ClassVar[int]
    OWNER_FIELD_NUMBER: _ClassVar[int]
    METADATA_FIELD_NUMBER: _ClassVar[int]
    AGENTS_FIELD_NUMBER: _ClassVar[int]
    name: str
    kind: str
    cadence_ms: int
    tolerance_ms: int
    criticality: str
    owner: str
    metadata: _containers.ScalarMap[str, str]
    agents: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, name: _Optional[str] = ..., kind: _Optional[str] = ..., cadence_ms: _Optional[int] = ..., tolerance_ms: _Optional[int] = ..., criticality: _Optional[str] = ..., owner: _Optional[str] = ..., metadata: _Optional[_Mapping[str, str]] = ..., agents: _Optional[_Iterable[str]] = ...) -> None: ...

class SystemRef(_message.Message):
    __slots__ = ("name",)
    NAME_FIELD_NUMBER: _ClassVar[int]
    name: str
    def __init__(self, name: _Optional[str] = ...) -> None: ...

class DependencyRequest(_message.Message):
    __slots__ = ("upstream", "downstream", "weight")
    UPSTREAM_FIELD_NUMBER: _ClassVar[int]
    DOWNSTREAM_FIELD_NUMBER: _ClassVar[int]
    WEIGHT_FIELD_NUMBER: _ClassVar[int]
    upstream: str
    downstream: str
    weight: float
    def __init__(self, upstream: _Optional[str] = ..., downstream: _Optional[str] = ..., weight: _Optional[float] = ...) -> None: ...

class Measure(_message.Message):
    __slots__ = ("value", "unit")
    VALUE_FIELD_NUMBER: _ClassVar[int]
    UNIT_FIELD_NUMBER: _ClassVar[int]
    value: float
    unit: str
    def __init__(self, value: _Optional[float] = ..., unit: _Optional[str] = ...) -> None: ...

class SyncEventReport(_message.Message):
    __slots__ = ("system", "reporter", "status", "at", "drift", "latency", "records", "bytes")
    SYSTEM_FIELD_NUMBER: _ClassVar[int]
    REPORTER_FIELD_NUMBER: _ClassVar[int]
    STATUS_FIELD_NUMBER: _ClassVar[int]
    AT_FIELD_NUMBER: _ClassVar[int]
    DRIFT_FIELD_NUMBER: _ClassVar[int]
    LATENCY_FIELD_NUMBER: _ClassVar[int]
    RECORDS_FIELD_NUMBER: _ClassVar[int]
    BYTES_FIELD_NUMBER: _ClassVar[int]
    system: str
    reporter: str
    status: str
    at: int
    drift: Measure
    latency: Measure
    records: Measure
    bytes: Measure
    def __init__(self, system: _Optional[str] = ..., reporter: _Optional[str] = ..., status: _Optional[str] = ..., at: _Optional[int] = ..., drift: _Optional[_Union[Measure, _Mapping]] = ..., latency: _Optional[_Union[Measure, _Mapping]] = ..., records: _Optional[_Union[Measure, _Mapping]] = ..., bytes: _Optional[_Union[Measure, _Mapping]] = ...) -> None: ...

class IncidentChange(_message.Message):
    __slots__ = ("change", "incident")
    CHANGE_FIELD_NUMBER: _ClassVar[int]
    INCIDENT_FIELD_NUMBER: _ClassVar[int]
    change: str
    incident: IncidentInfo
    def __init__(self, change: _Optional[str] = ..., incident: _Optional[_Union[IncidentInfo, _Mapping]] = ...) -> None: ...

class SystemsAck(_message.Message):
    __slots__ = ("detail", "changes")
    DETAIL_FIELD_NUMBER: _ClassVar[int]
    CHANGES_FIELD_NUMBER: _ClassVar[int]
    detail: str
    changes: _containers.RepeatedCompositeFieldContainer[IncidentChange]
    def __init__(self, detail: _Optional[str] = ..., changes: _Optional[_Iterable[_Union[IncidentChange, _Mapping]]] = ...) -> None: ...

class SyncEvent(_message.Message):
    __slots__ = ("at", "received", "reporter", "status", "drift_ms", "latency_ms", "records", "bytes")
    AT_FIELD_NUMBER: _ClassVar[int]
    RECEIVED_FIELD_NUMBER: _ClassVar[int]
    REPORTER_FIELD_NUMBER: _ClassVar[int]
    STATUS_FIELD_NUMBER: _ClassVar[int]
    DRIFT_MS_FIELD_NUMBER: _ClassVar[int]
    LATENCY_MS_FIELD_NUMBER: _ClassVar[int]
    RECORDS_FIELD_NUMBER: _ClassVar[int]
    BYTES_FIELD_NUMBER: _ClassVar[int]
    at: int
    received: int
    reporter: str
    status: str
    drift_ms: float
    latency_ms: float
    records: float
    bytes: float
    def __init__(self, at: _Optional[int] = ..., received: _Optional[int] = ..., reporter: _Optional[str] = ..., status: _Optional[str] = ..., drift_ms: _Optional[float] = ..., latency_ms: _Optional[float] = ..., records: _Optional[float] = ..., bytes: _Optional[float] = ...) -> None: ...

class SystemInfo(_message.Message):
    __slots__ = ("spec", "registered_at", "updated_at", "retired_at", "last_success", "last_status", "last_drift_ms", "stale", "stale_at", "own_risk", "risk", "open_incidents")
    SPEC_FIELD_NUMBER: _ClassVar[int]
    REGISTERED_AT_FIELD_NUMBER: _ClassVar[int]
    UPDATED_AT_FIELD_NUMBER: _ClassVar[int]
    RETIRED_AT_FIELD_NUMBER: _ClassVar[int]
    LAST_SUCCESS_FIELD_NUMBER: _ClassVar[int]
    LAST_STATUS_FIELD_NUMBER: _ClassVar[int]
    LAST_DRIFT_MS_FIELD_NUMBER: _ClassVar[int]
    STALE_FIELD_NUMBER: _ClassVar[int]
    STALE_AT_FIELD_NUMBER: _ClassVar[int]
    OWN_RISK_FIELD_NUMBER: _ClassVar[int]
    RISK_FIELD_NUMBER: _ClassVar[int]
    OPEN_INCIDENTS_FIELD_NUMBER: _ClassVar[int]
    spec: SystemSpec
    registered_at: int
    updated_at: int
    retired_at: int
    last_success: int
    last_status: str
    last_drift_ms: float
    stale: bool
    stale_at: int
    own_risk: float
    risk: float
    open_incidents: _containers.RepeatedScalarFieldContainer[int]
    def __init__(self, spec: _Optional[_Union[SystemSpec, _Mapping]] = ..., registered_at: _Optional[int] = ..., updated_at: _Optional[int] = ..., retired_at: _Optional[int] = ..., last_success: _Optional[int] = ..., last_status: _Optional[str] = ..., last_drift_ms: _Optional[float] = ..., stale: bool = ..., stale_at: _Optional[int] = ..., own_risk: _Optional[float] = ..., risk: _Optional[float] = ..., open_incidents: _Optional[_Iterable[int]] = ...) -> None: ...

class SystemListRequest(_message.Message):
    __slots__ = ("include_retired", "page_token", "page_size")
    INCLUDE_RETIRED_FIELD_NUMBER: _ClassVar[int]
    PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    PAGE_SIZE_FIELD_NUMBER: _ClassVar[int]
    include_retired: bool
    page_token: str
    page_size: int
    def __init__(self, include_retired: bool = ..., page_token: _Optional[str] = ..., page_size: _Optional[int] = ...) -> None: ...

class SystemListResponse(_message.Message):
    __slots__ = ("systems", "next_page_token")
    SYSTEMS_FIELD_NUMBER: _ClassVar[int]
    NEXT_PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    systems: _containers.RepeatedCompositeFieldContainer[SystemInfo]
    next_page_token: str
    def __init__(self, systems: _Optional[_Iterable[_Union[SystemInfo, _Mapping]]] = ..., next_page_token: _Optional[str] = ...) -> None: ...

class Dependency(_message.Message):
    __slots__ = ("upstream", "downstream", "weight")
    UPSTREAM_FIELD_NUMBER: _ClassVar[int]
    DOWNSTREAM_FIELD_NUMBER: _ClassVar[int]
    WEIGHT_FIELD_NUMBER: _ClassVar[int]
    upstream: str
    downstream: str
    weight: float
    def __init__(self, upstream: _Optional[str] = ..., downstream: _Optional[str] = ..., weight: _Optional[float] = ...) -> None: ...

class SystemDetail(_message.Message):
    __slots__ = ("system", "upstreams", "downstreams", "events", "trends")
    SYSTEM_FIELD_NUMBER: _ClassVar[int]
    UPSTREAMS_FIELD_NUMBER: _ClassVar[int]
    DOWNSTREAMS_FIELD_NUMBER: _ClassVar[int]
    EVENTS_FIELD_NUMBER: _ClassVar[int]
    TRENDS_FIELD_NUMBER: _ClassVar[int]
    system: SystemInfo
    upstreams: _containers.RepeatedCompositeFieldContainer[Dependency]
    downstreams: _containers.RepeatedCompositeFieldContainer[Dependency]
    events: _containers.RepeatedCompositeFieldContainer[SyncEvent]
    trends: SystemTrends
    def __init__(self, system: _Optional[_Union[SystemInfo, _Mapping]] = ..., upstreams: _Optional[_Iterable[_Union[Dependency, _Mapping]]] = ..., downstreams: _Optional[_Iterable[_Union[Dependency, _Mapping]]] = ..., events: _Optional[_Iterable[_Union[SyncEvent, _Mapping]]] = ..., trends: _Optional[_Union[SystemTrends, _Mapping]] = ...) -> None: ...

class Quantiles(_message.Message):
    __slots__ = ("p50", "p95", "p99")
    P50_FIELD_NUMBER: _ClassVar[int]
    P95_FIELD_NUMBER: _ClassVar[int]
    P99_FIELD_NUMBER: _ClassVar[int]
    p50: float
    p95: float
    p99: float
    def __init__(self, p50: _Optional[float] = ..., p95: _Optional[float] = ..., p99: _Optional[float] = ...) -> None: ...

class TrendWindow(_message.Message):
    __slots__ = ("window_ms", "events", "latency_ms", "drift_ms", "attainment")
    WINDOW_MS_FIELD_NUMBER: _ClassVar[int]
    EVENTS_FIELD_NUMBER: _ClassVar[int]
    LATENCY_MS_FIELD_NUMBER: _ClassVar[int]
    DRIFT_MS_FIELD_NUMBER: _ClassVar[int]
    ATTAINMENT_FIELD_NUMBER: _ClassVar[int]
    window_ms: int
    events: int
    latency_ms: Quantiles
    drift_ms: Quantiles
    attainment: float
    def __init__(self, window_ms: _Optional[int] = ..., events: _Optional[int] = ..., latency_ms: _Optional[_Union[Quantiles, _Mapping]] = ..., drift_ms: _Optional[_Union[Quantiles, _Mapping]] = ..., attainment: _Optional[float] = ...) -> None: ...

class SystemTrends(_message.Message):
    __slots__ = ("hour", "day", "direction")
    HOUR_FIELD_NUMBER: _ClassVar[int]
    DAY_FIELD_NUMBER: _ClassVar[int]
    DIRECTION_FIELD_NUMBER: _ClassVar[int]
    hour: TrendWindow
    day: TrendWindow
    direction: str
    def __init__(self, hour: _Optional[_Union[TrendWindow, _Mapping]] = ..., day: _Optional[_Union[TrendWindow, _Mapping]] = ..., direction: _Optional[str] = ...) -> None: ...

class BlastRadiusRequest(_message.Message):
    __slots__ = ("name", "page_token", "page_size")
    NAME_FIELD_NUMBER: _ClassVar[int]
    PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    PAGE_SIZE_FIELD_NUMBER: _ClassVar[int]
    name: str
    page_token: str
    page_size: int
    def __init__(self, name: _Optional[str] = ..., page_token: _Optional[str] = ..., page_size: _Optional[int] = ...) -> None: ...

class Impact(_message.Message):
    __slots__ = ("system", "criticality", "inherited", "risk")
    SYSTEM_FIELD_NUMBER: _ClassVar[int]
    CRITICALITY_FIELD_NUMBER: _ClassVar[int]
    INHERITED_FIELD_NUMBER: _ClassVar[int]
    RISK_FIELD_NUMBER: _ClassVar[int]
    system: str
    criticality: str
    inherited: float
    risk: float
    def __init__(self, system: _Optional[str] = ..., criticality: _Optional[str] = ..., inherited: _Optional[float] = ..., risk: _Optional[float] = ...) -> None: ...

class BlastRadiusResponse(_message.Message):
    __slots__ = ("impacts", "next_page_token")
    IMPACTS_FIELD_NUMBER: _ClassVar[int]
    NEXT_PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    impacts: _containers.RepeatedCompositeFieldContainer[Impact]
    next_page_token: str
    def __init__(self, impacts: _Optional[_Iterable[_Union[Impact, _Mapping]]] = ..., next_page_token: _Optional[str] = ...) -> None: ...

class DependenciesRequest(_message.Message):
    __slots__ = ("page_token", "page_size")
    PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    PAGE_SIZE_FIELD_NUMBER: _ClassVar[int]
    page_token: str
    page_size: int
    def __init__(self, page_token: _Optional[str] = ..., page_size: _Optional[int] = ...) -> None: ...

class DependenciesResponse(_message.Message):
    __slots__ = ("dependencies", "next_page_token")
    DEPENDENCIES_FIELD_NUMBER: _ClassVar[int]
    NEXT_PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    dependencies: _containers.RepeatedCompositeFieldContainer[Dependency]
    next_page_token: str
    def __init__(self, dependencies: _Optional[_Iterable[_Union[Dependency, _Mapping]]] = ..., next_page_token: _Optional[str] = ...) -> None: ...

class IncidentNote(_message.Message):
    __slots__ = ("at", "by", "text")
    AT_FIELD_NUMBER: _ClassVar[int]
    BY_FIELD_NUMBER: _ClassVar[int]
    TEXT_FIELD_NUMBER: _ClassVar[int]
    at: int
    by: str
    text: str
    def __init__(self, at: _Optional[int] = ..., by: _Optional[str] = ..., text: _Optional[str] = ...) -> None: ...

class IncidentInfo(_message.Message):
    __slots__ = ("id", "system", "cause", "opened_at", "count", "last_seen", "detail", "acked_by", "acked_at", "notes", "resolved_at", "resolved_by", "severity", "score", "at_risk", "duration_ms")
    ID_FIELD_NUMBER: _ClassVar[int]
    SYSTEM_FIELD_NUMBER: _ClassVar[int]
    CAUSE_FIELD_NUMBER: _ClassVar[int]
    OPENED_AT_FIELD_NUMBER: _ClassVar[int]
    COUNT_FIELD_NUMBER: _ClassVar[int]
    LAST_SEEN_FIELD_NUMBER: _ClassVar[int]
    DETAIL_FIELD_NUMBER: _ClassVar[int]
    ACKED_BY_FIELD_NUMBER: _ClassVar[int]
    ACKED_AT_FIELD_NUMBER: _ClassVar[int]
    NOTES_FIELD_NUMBER: _ClassVar[int]
    RESOLVED_AT_FIELD_NUMBER: _ClassVar[int]
    RESOLVED_BY_FIELD_NUMBER: _ClassVar[int]
    SEVERITY_FIELD_NUMBER: _ClassVar[int]
    SCORE_FIELD_NUMBER: _ClassVar[int]
    AT_RISK_FIELD_NUMBER: _ClassVar[int]
    DURATION_MS_FIELD_NUMBER: _ClassVar[int]
    id: int
    system: str
    cause: str
    opened_at: int
    count: int
    last_seen: int
    detail: str
    acked_by: str
    acked_at: int
    notes: _containers.RepeatedCompositeFieldContainer[IncidentNote]
    resolved_at: int
    resolved_by: str
    severity: int
    score: int
    at_risk: int
    duration_ms: int
    def __init__(self, id: _Optional[int] = ..., system: _Optional[str] = ..., cause: _Optional[str] = ..., opened_at: _Optional[int] = ..., count: _Optional[int] = ..., last_seen: _Optional[int] = ..., detail: _Optional[str] = ..., acked_by: _Optional[str] = ..., acked_at: _Optional[int] = ..., notes: _Optional[_Iterable[_Union[IncidentNote, _Mapping]]] = ..., resolved_at: _Optional[int] = ..., resolved_by: _Optional[str] = ..., severity: _Optional[int] = ..., score: _Optional[int] = ..., at_risk: _Optional[int] = ..., duration_ms: _Optional[int] = ...) -> None: ...

class IncidentsRequest(_message.Message):
    __slots__ = ("include_resolved", "page_token", "page_size")
    INCLUDE_RESOLVED_FIELD_NUMBER: _ClassVar[int]
    PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    PAGE_SIZE_FIELD_NUMBER: _ClassVar[int]
    include_resolved: bool
    page_token: str
    page_size: int
    def __init__(self, include_resolved: bool = ..., page_token: _Optional[str] = ..., page_size: _Optional[int] = ...) -> None: ...

class IncidentsResponse(_message.Message):
    __slots__ = ("incidents", "next_page_token")
    INCIDENTS_FIELD_NUMBER: _ClassVar[int]
    NEXT_PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    incidents: _containers.RepeatedCompositeFieldContainer[IncidentInfo]
    next_page_token: str
    def __init__(self, incidents: _Optional[_Iterable[_Union[IncidentInfo, _Mapping]]] = ..., next_page_token: _Optional[str] = ...) -> None: ...

class IncidentRef(_message.Message):
    __slots__ = ("id",)
    ID_FIELD_NUMBER: _ClassVar[int]
    id: int
    def __init__(self, id: _Optional[int] = ...) -> None: ...

class IncidentNoteRequest(_message.Message):
    __slots__ = ("id", "text")
    ID_FIELD_NUMBER: _ClassVar[int]
    TEXT_FIELD_NUMBER: _ClassVar[int]
    id: int
    text: str
    def __init__(self, id: _Optional[int] = ..., text: _Optional[str] = ...) -> None: ...
