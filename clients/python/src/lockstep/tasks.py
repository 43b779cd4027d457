"""Task handoff: agents submit tasks and execute them (see "Task handoff" in docs/PROTOCOL.md).

``agent.submit_task(type, input, ...)`` submits a task (its context keys are pinned by the server at
their current versions) and ``agent.task_events()`` follows what happens to the agent's tasks. An
executor iterates ``agent.tasks(types)``::

    async for task in agent.tasks(["fetch"]):
        page = await fetch(task.input["url"], persona=task.context("persona.profile"))
        await task.complete({"page": page})

Each :class:`Assignment` is completed or failed once; the pinned context and the outputs of the
tasks it depends on come with it. ``client.tasks`` reads, lists, retries and watches tasks.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, AsyncIterator, Dict, Iterable, List, Optional

from .errors import LockstepError
from .v1 import lockstep_pb2 as pb
from .v1 import lockstep_pb2_grpc as pb_grpc

if TYPE_CHECKING:  # pragma: no cover
    from .agent import Agent, Feed
    from .client import Client, Metadata

__all__ = ["Assignment", "PinnedContext", "TaskEvent", "TaskInfo", "Tasks", "TaskWork"]


def _json(text: str) -> Any:
    return json.loads(text) if text else None


@dataclass(frozen=True)
class PinnedContext:
    """A context key as the task's submission pinned it."""

    version: int
    value: Any


@dataclass(frozen=True)
class TaskEvent:
    """Something that happened to a task: ``kind`` is one of submitted, assigned, started,
    completed (with ``output``), failed, retried, dead_lettered, refused (``error`` says why)."""

    id: str
    kind: str
    agent: str
    attempt: int
    error: str
    output: Any
    at_ms: int
    submitter: str

    @classmethod
    def from_proto(cls, e: Any) -> "TaskEvent":
        return cls(e.id, e.kind, e.agent, e.attempt, e.error, _json(e.output_json), e.at_ms, e.submitter)


@dataclass(frozen=True)
class TaskInfo:
    """A task, whole, as the ``Tasks`` service shows it."""

    id: str
    type: str
    state: str
    input: Any
    pinned: Dict[str, PinnedContext]
    submitter: str
    attempt: int
    failures: int
    max_attempts: int
    holder: str
    output: Any
    depends_on: List[str]
    errors: List[Dict[str, Any]] = field(default_factory=list)
    """Every failed attempt: ``attempt``, ``agent``, ``error``, ``at_ms``."""

    @classmethod
    def from_proto(cls, t: Any) -> "TaskInfo":
        return cls(
            id=t.id,
            type=t.type,
            state=t.state,
            input=_json(t.input_json),
            pinned={p.key: PinnedContext(p.version, _json(p.value_json)) for p in t.pinned},
            submitter=t.submitter,
            attempt=t.attempt,
            failures=t.failures,
            max_attempts=t.max_attempts,
            holder=t.holder,
            output=_json(t.output_json),
            depends_on=list(t.depends_on),
            errors=[{"attempt": e.attempt, "agent": e.agent, "error": e.error, "at_ms": e.at_ms} for e in t.errors],
        )


class Assignment:
    """A task handed to this agent: complete or fail it once (quoting its attempt)."""

    def __init__(self, agent: "Agent", a: Any) -> None:
        self._agent = agent
        self.id: str = a.id
        self.type: str = a.type
        self.input: Any = _json(a.input_json)
        self.attempt: int = a.attempt
        self.deadline_ms: int = a.deadline_ms
        """Server clock: the attempt is lost after it."""
        self.priority: int = a.priority
        self.submitter: str = a.submitter
        self.pinned: Dict[str, PinnedContext] = {p.key: PinnedContext(p.version, _json(p.value_json)) for p in a.pinned}
        """The context keys as staged at submission, by key."""
        self.dependencies: Dict[str, Any] = {d.id: _json(d.output_json) for d in a.dependencies}
        """The outputs of the tasks it depends on, by id."""

    def __repr__(self) -> str:
        return f"Assignment(id={self.id!r}, type={self.type!r}, attempt={self.attempt})"

    def context(self, key: str) -> Any:
        """The pinned value of context key ``key``, as it was when the task was submitted."""
        pinned = self.pinned.get(key)
        return None if pinned is None else pinned.value

    async def start(self) -> None:
        """Tells the submitter the work started."""
        await self._agent._tasks.call(pb.ClientMessage(start_task=pb.StartTask(id=self.id, attempt=self.attempt)))

    async def complete(self, output: Any) -> None:
        """Completes the task. ``TASK_NOT_HELD`` when this attempt was superseded (its deadline
        passed, or the session was lost), ``TASK_FINISHED`` when the task is already done."""
        msg = pb.CompleteTask(id=self.id, attempt=self.attempt, output_json=json.dumps(output))
        await self._agent._tasks.call(pb.ClientMessage(complete_task=msg))

    async def fail(self, error: str) -> None:
        """Fails this attempt: the task is retried, or dead-lettered past its attempts."""
        msg = pb.FailTask(id=self.id, attempt=self.attempt, error=error)
        await self._agent._tasks.call(pb.ClientMessage(fail_task=msg))


class TaskWork:
    """Assignments for an agent that asked for work: an async iterator. The request goes to the
    server when iteration starts (or with ``await work.start()``); closing it stops asking."""

    def __init__(self, link: "TaskLink", message: Any) -> None:
        self._link = link
        self._message = message
        self._started = False
        self.feed: "Feed[Assignment]" = link.new_feed()

    async def start(self) -> "TaskWork":
        """Asks the server for work now (errors are raised here)."""
        if not self._started:
            self._started = True
            self._link.work = self._message
            await self._link.call(pb.ClientMessage(task_work=self._message))
        return self

    def __aiter__(self) -> "TaskWork":
        return self

    async def __anext__(self) -> Assignment:
        await self.start()
        return await self.feed.__anext__()

    async def next(self, timeout: Optional[float] = None) -> Assignment:
        """The next assignment (``asyncio.TimeoutError`` after ``timeout`` seconds)."""
        await self.start()
        return await self.feed.next(timeout)

    async def close(self) -> None:
        """Stops asking for work (tasks held stay held)."""
        self.feed.close()
        if self._link.work is self._message:
            self._link.work = None
            await self._link.call(pb.ClientMessage(stop_task_work=pb.StopTaskWork()))


class TaskLink:
    """An agent's side of task handoff: assignments and its tasks' events from the session, and the
    work asked for (asked again after a reconnection, since a restarted server forgets it)."""

    def __init__(self, agent: "Agent") -> None:
        self._agent = agent
        self.work: Optional[Any] = None
        self._assigned: "Optional[Feed[Assignment]]" = None
        self._events: "Optional[Feed[TaskEvent]]" = None

    def new_feed(self) -> "Feed[Assignment]":
        from .agent import Feed

        if self._assigned is not None:
            self._assigned._end()
        self._assigned = Feed("task assignments")
        return self._assigned

    def events(self) -> "Feed[TaskEvent]":
        from .agent import Feed

        if self._events is None or self._events.closed:
            self._events = Feed("task events")
        return self._events

    async def call(self, msg: Any) -> Any:
        reply = await self._agent._request(msg)
        self._agent._raise_if_error(reply)
        return reply

    def on_message(self, kind: str, msg: Any) -> bool:
        """Takes a task frame; ``False`` for any other."""
        if kind == "task_assigned":
            if self._assigned is not None and not self._assigned.closed:
                self._assigned._push(Assignment(self._agent, msg.task_assigned))
            # One nobody asked for is left to its deadline, which hands it on.
            return True
        if kind == "task_event":
            if self._events is not None and not self._events.closed:
                self._events._push(TaskEvent.from_proto(msg.task_event))
            return True
        return False

    async def resumed(self) -> None:
        if self.work is not None:
            try:
                await self._agent._send(pb.ClientMessage(task_work=self.work))
            except LockstepError:
                pass

    def end(self) -> None:
        for feed in (self._assigned, self._events):
            if feed is not None:
                feed._end()


def submit_message(
    type: str,
    input: Any,
    *,
    id: str = "",
    context_keys: Iterable[str] = (),
    role: str = "",
    capabilities: Iterable[str] = (),
    priority: int = 0,
    timeout_ms: int = 0,
    max_attempts: int = 0,
    depends_on: Iterable[str] = (),
) -> Any:
    """The wire form of a submission."""
    return pb.SubmitTask(
        id=id,
        type=type,
        input_json=json.dumps(input),
        context_keys=list(context_keys),
        role=role,
        capabilities=list(capabilities),
        priority=priority,
        timeout_ms=timeout_ms,
        max_attempts=max_attempts,
        depends_on=list(depends_on),
    )


class Tasks:
    """Tasks of a client's namespace, through the ``Tasks`` service (``client.tasks``)."""

    def __init__(self, client: "Client") -> None:
        self._client = client
        self._stub = pb_grpc.TasksStub(client._channel)  # type: ignore[no-untyped-call]

    @property
    def _ns(self) -> str:
        return self._client.namespace

    async def get(self, id: str) -> TaskInfo:
        """One task, whole (``UNKNOWN_TASK``)."""
        return TaskInfo.from_proto(await self._client._call(self._stub.Get, pb.TaskGetRequest(namespace=self._ns, id=id)))

    async def list(self, state: str = "", type: str = "") -> List[TaskInfo]:
        """Tasks in submission order whose state and type are these (empty: any)."""
        req = pb.TaskListRequest(namespace=self._ns, state=state, type=type)
        return [TaskInfo.from_proto(t) for t in await self._client._every_page(self._stub.List, req, "tasks")]

    async def dead_letters(self) -> List[TaskInfo]:
        """The dead-letter list, each task with every attempt's error."""
        return await self.list("dead_lettered")

    async def retry(self, id: str, *, metadata: Optional[Metadata] = None) -> TaskInfo:
        """Retries a dead-lettered task: its attempts count from zero again.

        An operator's action (audited): on a server with an admin token, call it through
        :meth:`lockstep.Admin.retry_task` (or pass ``metadata=[("authorization", "Bearer <token>")]``).

        Raises:
            NotFound: no such task (``UNKNOWN_TASK``).
            FailedPrecondition: it is not dead-lettered (``TASK_NOT_DEAD_LETTERED``).
            Unauthenticated / PermissionDenied: the server's admin token is missing / wrong.
        """
        req = pb.TaskGetRequest(namespace=self._ns, id=id)
        return TaskInfo.from_proto(await self._client._call(self._stub.Retry, req, metadata=metadata))

    async def queues(self) -> List[Dict[str, Any]]:
        """Task queues per namespace and type: waiting, ready, held, completed, dead_lettered and
        the age of the oldest ready task (``oldest_ready_age_ms``)."""
        resp = await self._client._call(self._stub.Queues, pb.TaskQueuesRequest())
        return [
            {
                "namespace": q.namespace,
                "type": q.type,
                "waiting": q.waiting,
                "ready": q.ready,
                "held": q.held,
                "completed": q.completed,
                "dead_lettered": q.dead_lettered,
                "oldest_ready_age_ms": q.oldest_ready_age_ms,
            }
            for q in resp.queues
        ]

    async def watch(self) -> AsyncIterator[TaskEvent]:
        """Every task event of the namespace from now on."""
        call = self._stub.Watch(pb.TaskWatchRequest(namespace=self._ns))
        try:
            async for e in call:
                yield TaskEvent.from_proto(e)
        finally:
            call.cancel()
