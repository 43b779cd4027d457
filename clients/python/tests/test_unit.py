"""Client-side rules that need no server: merge patches, payload encoding, error mapping, syntax floor."""

from __future__ import annotations

import ast
import json
from pathlib import Path

import grpc
import pytest

import lockstep
from lockstep._util import encode_payload, timeout_ms
from lockstep.errors import error_from_code

SRC = Path(__file__).resolve().parent.parent / "src" / "lockstep"

# RFC 7386, appendix A: (target, patch, result).
RFC7386_EXAMPLES = [
    ({"a": "b"}, {"a": "c"}, {"a": "c"}),
    ({"a": "b"}, {"b": "c"}, {"a": "b", "b": "c"}),
    ({"a": "b"}, {"a": None}, {}),
    ({"a": "b", "b": "c"}, {"a": None}, {"b": "c"}),
    ({"a": ["b"]}, {"a": "c"}, {"a": "c"}),
    ({"a": "c"}, {"a": ["b"]}, {"a": ["b"]}),
    ({"a": {"b": "c"}}, {"a": {"b": "d", "c": None}}, {"a": {"b": "d"}}),
    ({"a": [{"b": "c"}]}, {"a": [1]}, {"a": [1]}),
    (["a", "b"], ["c", "d"], ["c", "d"]),
    ({"a": "b"}, ["c"], ["c"]),
    ({"a": "foo"}, None, None),
    ({"a": "foo"}, "bar", "bar"),
    ({"e": None}, {"a": 1}, {"e": None, "a": 1}),
    ([1, 2], {"a": "b", "c": None}, {"a": "b"}),
    ({}, {"a": {"bb": {"ccc": None}}}, {"a": {"bb": {}}}),
]


@pytest.mark.parametrize("target,patch,expected", RFC7386_EXAMPLES)
def test_merge_patch_follows_rfc7386(target: object, patch: object, expected: object) -> None:
    before = json.dumps(target)
    assert lockstep.apply_merge_patch(target, patch) == expected
    assert json.dumps(target) == before, "the target must not be modified"


def test_payloads_are_encoded_by_type() -> None:
    assert encode_payload(b"\x00\x01") == (b"\x00\x01", "application/octet-stream")
    assert encode_payload("héllo") == ("héllo".encode(), "text/plain; charset=utf-8")
    assert encode_payload({"a": [1, 2]}) == (b'{"a":[1,2]}', "application/json")
    assert encode_payload({"a": 1}, "application/x-custom") == (b'{"a":1}', "application/x-custom")
    assert encode_payload(None) == (b"", "")


def test_deliveries_decode_by_content_type() -> None:
    as_json = lockstep.Delivery(seq=1, topic="t", payload=b'{"x":1}', content_type="application/json")
    as_text = lockstep.Delivery(seq=2, topic="t", payload=b"hi", content_type="text/plain; charset=utf-8")
    raw = lockstep.Delivery(seq=3, topic="t", payload=b"\xff", content_type="application/octet-stream")
    assert as_json.data == {"x": 1} and as_text.data == "hi" and raw.data == b"\xff"


def test_timeouts_become_whole_milliseconds() -> None:
    assert timeout_ms(None) == 0
    assert timeout_ms(1.5) == 1500
    assert timeout_ms(0.0001) == 1
    with pytest.raises(ValueError):
        timeout_ms(-1)


def test_status_codes_map_to_typed_errors() -> None:
    cases = {
        grpc.StatusCode.ALREADY_EXISTS: lockstep.AlreadyRegistered,
        grpc.StatusCode.INVALID_ARGUMENT: lockstep.InvalidArgument,
        grpc.StatusCode.NOT_FOUND: lockstep.NotFound,
        grpc.StatusCode.UNAUTHENTICATED: lockstep.Unauthenticated,
        grpc.StatusCode.PERMISSION_DENIED: lockstep.PermissionDenied,
        grpc.StatusCode.RESOURCE_EXHAUSTED: lockstep.ResourceExhausted,
        grpc.StatusCode.UNIMPLEMENTED: lockstep.NotSupported,
        grpc.StatusCode.UNAVAILABLE: lockstep.Unavailable,
        grpc.StatusCode.FAILED_PRECONDITION: lockstep.FailedPrecondition,
    }
    for code, cls in cases.items():
        err = error_from_code(code, "why")
        assert type(err) is cls and err.message == "why" and err.code == code
        assert isinstance(err, lockstep.LockstepError)
    # The reason chooses the class, whatever the message says.
    breaker = error_from_code(grpc.StatusCode.FAILED_PRECONDITION, "x", reason=lockstep.Reason.BREAKER_OPEN)
    assert isinstance(breaker, lockstep.BreakerOpen) and isinstance(breaker, lockstep.FailedPrecondition)
    assert breaker.reason is lockstep.Reason.BREAKER_OPEN
    assert type(error_from_code(grpc.StatusCode.FAILED_PRECONDITION, "circuit breaker open")) is lockstep.FailedPrecondition
    timeout = error_from_code(grpc.StatusCode.DEADLINE_EXCEEDED, "late", sync=True, missing=["b"], sync_id="s")
    assert isinstance(timeout, lockstep.SyncTimeout) and isinstance(timeout, lockstep.SyncFailed)
    assert timeout.missing == ("b",) and timeout.sync_id == "s"
    assert isinstance(error_from_code(grpc.StatusCode.ABORTED, "lost", sync=True), lockstep.SyncAborted)
    assert isinstance(error_from_code(grpc.StatusCode.FAILED_PRECONDITION, "x", sync=True), lockstep.SyncConflict)
    assert isinstance(lockstep.InvalidArgument("x"), ValueError)


def test_pause_refusals_and_command_errors_are_typed() -> None:
    code = grpc.StatusCode.FAILED_PRECONDITION
    for sync in (False, True):  # a paused agent's barrier arrival is refused, not a SyncConflict
        err = error_from_code(code, "words", sync=sync, reason=lockstep.Reason.PAUSED)
        assert type(err) is lockstep.AgentPaused and isinstance(err, lockstep.FailedPrecondition)
        assert not err.emergency_stop
    stopped = error_from_code(code, "words", sync=True, reason=lockstep.Reason.EMERGENCY_STOP)
    assert stopped.emergency_stop  # type: ignore[attr-defined]
    # A message that reads like a pause is not one: only the reason counts.
    assert type(error_from_code(code, "operator 'alice' paused it", sync=True)) is lockstep.SyncConflict
    conflict = error_from_code(code, "words", sync=True, reason=lockstep.Reason.SYNC_FINISHED)
    assert type(conflict) is lockstep.SyncConflict
    late = error_from_code(grpc.StatusCode.DEADLINE_EXCEEDED, "words", reason=lockstep.Reason.COMMAND_TIMEOUT)
    assert type(late) is lockstep.CommandTimeout and late.reason is lockstep.Reason.COMMAND_TIMEOUT
    gone = error_from_code(grpc.StatusCode.UNAVAILABLE, "words", reason=lockstep.Reason.SESSION_TAKEN_OVER)
    assert type(gone) is lockstep.Unavailable and gone.reason is lockstep.Reason.SESSION_TAKEN_OVER
    assert lockstep.Reason.parse("SOMETHING_NEWER") is None and lockstep.Reason.parse("") is None

    failed = lockstep.CommandFailed("agent 'a' failed", agent_error="why", agent_id="a", command="c", command_id=7)
    assert failed.agent_error == "why" and failed.command_id == 7 and failed.code == grpc.StatusCode.UNKNOWN
    timeout = lockstep.CommandTimeout("late", agent_id="a", command="c")
    assert isinstance(timeout, lockstep.CommandError) and isinstance(timeout, lockstep.DeadlineExceeded)
    assert isinstance(timeout, TimeoutError) and timeout.code == grpc.StatusCode.DEADLINE_EXCEEDED
    aborted = lockstep.CommandAborted("gone")
    assert isinstance(aborted, lockstep.CommandError) and aborted.code == grpc.StatusCode.ABORTED


def test_control_notices_and_commands_decode() -> None:
    from lockstep.v1 import lockstep_pb2 as pb

    notice = lockstep.ControlNotice.from_proto(pb.Control(kind=pb.Control.KIND_EMERGENCY_STOP, actor="ops", reason="r"))
    assert notice.kind == lockstep.ControlKind.EMERGENCY_STOP and notice.pauses and str(notice) == "emergency_stop by 'ops' (r)"
    assert not lockstep.ControlNotice(lockstep.ControlKind.RESUMED_ALL).pauses
    command = lockstep.Command.from_proto(pb.Command(command_id=3, command="go", params_json="null", deadline_ms=9))
    assert command.params == {} and command.command_id == 3 and command.deadline_ms == 9 and not command.answered
    command = lockstep.Command.from_proto(pb.Command(command_id=4, command="go", params_json='{"a":[1]}'))
    assert command.params == {"a": [1]}


def test_agent_status_parses_names() -> None:
    assert lockstep.AgentStatus.parse("busy") is lockstep.AgentStatus.BUSY
    assert lockstep.AgentStatus.parse("AGENT_STATUS_SYNCING") is lockstep.AgentStatus.SYNCING
    assert lockstep.AgentStatus.parse(5) is lockstep.AgentStatus.PAUSED
    with pytest.raises(ValueError):
        lockstep.AgentStatus.parse("sleepy")


def test_sync_results_are_truthy_and_index_payloads() -> None:
    result = lockstep.SyncResult(sync_id="s", arrival_order=("b", "a"), payloads=(b"2", b"1"))
    assert result and result.success
    assert result.payload_of("a") == b"1" and result.payload_map() == {"b": b"2", "a": b"1"}
    with pytest.raises(KeyError):
        result.payload_of("c")


def test_sources_parse_as_python_3_9() -> None:
    """The package promises Python 3.9: no 3.10+ syntax anywhere (match, X | Y at runtime, ...)."""
    files = sorted(SRC.rglob("*.py"))
    assert files
    for path in files:
        ast.parse(path.read_text(), filename=str(path), feature_version=(3, 9))
        text = path.read_text()
        if path.parent.name != "v1":
            assert "from __future__ import annotations" in text, f"{path} needs postponed annotations"


def test_package_is_typed() -> None:
    assert (SRC / "py.typed").exists()
    assert (SRC / "v1" / "lockstep_pb2.pyi").exists()


def test_recovery_follows_the_reconnection_table() -> None:
    """The reconnection table of docs/PROTOCOL.md, row by row (the Rust client has the same test)."""
    resume = {None, lockstep.Reason.LEASE_EXPIRED, lockstep.Reason.SLOW_CONSUMER,
              lockstep.Reason.SERVER_SHUTTING_DOWN, lockstep.Reason.STORE_FAILED,
              lockstep.Reason.MESSAGE_TOO_LARGE}
    for reason in resume:
        assert lockstep.recovery(reason) is lockstep.Recovery.RESUME, reason
    for reason in lockstep.Reason:
        if reason not in resume:
            assert lockstep.recovery(reason) is lockstep.Recovery.GIVE_UP, reason
    assert lockstep.recovery(lockstep.Reason.SESSION_TAKEN_OVER) is lockstep.Recovery.GIVE_UP


def test_the_reason_of_a_status_is_read_from_its_error_info() -> None:
    from google.rpc import error_details_pb2, status_pb2

    from lockstep.errors import error_from_rpc

    info = error_details_pb2.ErrorInfo(reason="SLOW_CONSUMER", domain="lockstep", metadata={"agent": "a"})
    status = status_pb2.Status(code=grpc.StatusCode.RESOURCE_EXHAUSTED.value[0], message="words")
    status.details.add().Pack(info)

    class Failed(grpc.RpcError):
        def __init__(self, trailers: tuple) -> None:
            self.trailers = trailers

        def code(self) -> grpc.StatusCode:
            return grpc.StatusCode.RESOURCE_EXHAUSTED

        def details(self) -> str:
            return "words"

        def trailing_metadata(self) -> tuple:
            return self.trailers

    err = error_from_rpc(Failed((("grpc-status-details-bin", status.SerializeToString()),)))
    assert type(err) is lockstep.ResourceExhausted and err.reason is lockstep.Reason.SLOW_CONSUMER
    assert error_from_rpc(Failed(())).reason is None
    other = error_details_pb2.ErrorInfo(reason="SLOW_CONSUMER", domain="elsewhere")
    status.ClearField("details")
    status.details.add().Pack(other)
    assert error_from_rpc(Failed((("grpc-status-details-bin", status.SerializeToString()),))).reason is None
