"""Task handoff against a real server: a chain of tasks runs with the context as staged and the
dependencies' outputs, the submitter hears the events; a missed deadline hands the task on and the
late completion is refused with its reason; failures past the maximum dead-letter a task and an
operator retries it; bad input is refused with its reason and nothing applied."""

from __future__ import annotations

import pytest

import lockstep


async def next_event(events: "lockstep.Feed[lockstep.TaskEvent]", kind: str, task_id: str) -> lockstep.TaskEvent:
    while True:
        e = await events.next(timeout=20)
        if e.kind == kind and e.id == task_id:
            return e


async def test_a_chain_runs_with_pinned_context_and_dependency_outputs(client: lockstep.Client) -> None:
    await client.context.set("persona.profile", {"tone": "terse"})
    async with client.register("planner", role="planner") as planner, client.register(
        "runner", role="tool-runner"
    ) as runner:
        events = planner.task_events()
        fetch = await planner.submit_task("fetch", {"url": "u"}, context_keys=["persona.profile"])
        parse = await planner.submit_task("parse", {"mode": "html"}, id="parse-1", depends_on=[fetch])
        assert parse == "parse-1"
        assert (await client.tasks.get(parse)).state == "waiting"
        await client.context.set("persona.profile", {"tone": "chatty"})
        seen = []
        async for task in runner.tasks():
            seen.append(task.id)
            if task.id == fetch:
                assert task.context("persona.profile") == {"tone": "terse"}, "the context as staged"
                await task.start()
                await task.complete({"page": "<html/>"})
            else:
                assert task.dependencies == {fetch: {"page": "<html/>"}}
                await task.complete({"title": "Example"})
                break
        assert seen == [fetch, parse]
        await next_event(events, "started", fetch)
        done = await next_event(events, "completed", parse)
        assert done.output == {"title": "Example"}
        info = await client.tasks.get(parse)
        assert (info.state, info.holder, info.output) == ("completed", "runner", {"title": "Example"})


async def test_a_missed_deadline_hands_the_task_on_and_the_late_completion_is_refused(client: lockstep.Client) -> None:
    async with client.register("planner", role="planner") as planner, client.register(
        "slow", role="runner"
    ) as slow, client.register("fast", role="runner") as fast:
        task_id = await planner.submit_task("tool", 1, timeout_ms=300, role="runner")
        held = await slow.claim_task(["tool"])
        assert held is not None and (held.id, held.attempt) == (task_id, 1)
        assert await planner.claim_task(["tool"]) is None, "a planner is not a runner"
        work = fast.tasks(["tool"], max_in_flight=1)
        taken = await work.next(timeout=20)
        assert (taken.id, taken.attempt) == (task_id, 2)
        with pytest.raises(lockstep.FailedPrecondition) as late:
            await held.complete("slow")
        assert late.value.reason is lockstep.Reason.TASK_NOT_HELD
        await taken.complete("fast")
        with pytest.raises(lockstep.FailedPrecondition) as twice:
            await taken.complete("again")
        assert twice.value.reason is lockstep.Reason.TASK_FINISHED
        info = await client.tasks.get(task_id)
        assert (info.state, info.output, info.failures) == ("completed", "fast", 1)
        await work.close()


async def test_failures_dead_letter_and_an_operator_retries(client: lockstep.Client) -> None:
    async with client.register("planner", role="planner") as planner, client.register("runner", role="runner") as runner:
        task_id = await planner.submit_task("flaky", {}, max_attempts=2)
        for error in ["timeout talking to the tool", "tool crashed"]:
            task = await runner.claim_task(["flaky"])
            assert task is not None
            await task.fail(error)
        dead = await client.tasks.dead_letters()
        assert [t.id for t in dead] == [task_id]
        assert [e["error"] for e in dead[0].errors] == ["timeout talking to the tool", "tool crashed"]
        admin = client.admin(actor="alice")
        with pytest.raises(lockstep.NotFound) as unknown:
            await admin.retry_task("nope")
        assert unknown.value.reason is lockstep.Reason.UNKNOWN_TASK
        retried = await admin.retry_task(task_id)
        assert (retried.state, retried.failures) == ("ready", 0)
        audit = [e for e in await admin.audit_log() if e.command == "retry_task"]
        assert [(e.actor, e.target, e.outcome) for e in audit] == [("alice", "nope", "refused"), ("alice", task_id, "ok")]
        task = await runner.claim_task(["flaky"])
        assert task is not None and task.attempt == 3
        await task.complete("ok")
        queues = [q for q in await client.tasks.queues() if q["type"] == "flaky"]
        assert queues and queues[0]["completed"] == 1


async def test_bad_input_is_refused_with_its_reason_and_nothing_applied(client: lockstep.Client) -> None:
    async with client.register("planner", role="planner") as planner:
        await planner.submit_task("tool", 1, id="a")
        cases = [
            (planner.submit_task("tool", 1, depends_on=["nope"]), lockstep.NotFound, lockstep.Reason.UNKNOWN_TASK),
            (planner.submit_task("tool", 1, id="b", depends_on=["b"]), lockstep.InvalidArgument, lockstep.Reason.TASK_CYCLE),
            (planner.submit_task("tool", 1, id="a"), lockstep.AlreadyRegistered, lockstep.Reason.TASK_EXISTS),
            (planner.submit_task("bad type", 1), lockstep.InvalidArgument, lockstep.Reason.INVALID_ARGUMENT),
            (
                planner.submit_task("tool", 1, context_keys=["never.written"]),
                lockstep.NotFound,
                lockstep.Reason.UNKNOWN_CONTEXT_KEY,
            ),
        ]
        for call, kind, reason in cases:
            with pytest.raises(kind) as err:
                await call
            assert err.value.reason is reason
        assert [t.id for t in await client.tasks.list()] == ["a"], "nothing else applied"
