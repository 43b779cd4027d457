"""Task handoff with staged context and reused results (docs/PROTOCOL.md, "Task handoff" and
"Execution traces").

A planner stages a persona profile and workspace metadata in shared context, then submits three
tool tasks that depend on each other (fetch -> parse -> summarize), each pinning the context it
needs. Two tool runners, each its own process, execute them: the first takes the fetch and the
parse and is killed (SIGKILL) in the middle of the parse; once the server has lost it, the parse
goes to the second runner, which completes it and the summary. Every completed task became an
execution trace, so a second planner asking for the same summary gets the stored output without
running anything, and the run prints the summary's lineage.

    python handoff.py [ADDRESS]          (default $LOCKSTEP_ADDR or 127.0.0.1:7600)
"""

from __future__ import annotations

import asyncio
import os
import signal
import sys
import time
from typing import Any, Dict

import lockstep
from _common import address

TOOLS = ["tool.fetch", "tool.parse", "tool.summarize"]


def run_tool(kind: str, task: "lockstep.Assignment") -> Any:
    """What the tools compute: from the task's input, its dependencies' outputs and the context as
    staged at submission (never as it is now)."""
    persona = task.context("workspace.persona")
    meta = task.context("workspace.meta")
    if kind == "tool.fetch":
        return {"page": f"<h1>{task.input['url']}</h1><p>quarterly numbers for {meta['project']}</p>"}
    (upstream,) = task.dependencies.values()
    if kind == "tool.parse":
        return {"text": upstream["page"].replace("<h1>", "").replace("</h1>", ": ").replace("<p>", "").replace("</p>", "")}
    return {"summary": f"[{persona['tone']}, for {persona['audience']}] {upstream['text']}"}


async def runner(name: str, die_on: str) -> None:
    """A tool runner: executes tasks as they come. Told to die on a task type, it announces that it
    started it and then hangs, to be killed mid-task by the example."""
    async with lockstep.connect(address()) as client:
        agent = await client.register(name, role="tool-runner")
        async for task in agent.tasks(TOOLS, max_in_flight=1):
            await task.start()
            print(f"{name} started {task.type} ({task.id}, attempt {task.attempt})", flush=True)
            if task.type == die_on:
                await asyncio.sleep(3600)  # killed here
            await task.complete(run_tool(task.type, task))
            print(f"{name} completed {task.type}", flush=True)


def spawn(name: str, die_on: str = "") -> "asyncio.subprocess.Process":
    return asyncio.create_subprocess_exec(
        sys.executable, __file__, "--runner", name, die_on, address(), stdout=asyncio.subprocess.PIPE
    )


async def wait_for_line(proc: "asyncio.subprocess.Process", text: str) -> None:
    assert proc.stdout is not None
    while True:
        line = (await asyncio.wait_for(proc.stdout.readline(), timeout=60)).decode()
        if not line:
            raise RuntimeError(f"the runner ended before saying {text!r}")
        print(line, end="", flush=True)
        if text in line:
            return


async def main() -> None:
    async with lockstep.connect(address()) as client:
        # Staging: the context every reasoning cycle and tool sees, pinned by each task at submission.
        await client.context.set("workspace.persona", {"tone": "terse", "audience": "the board"})
        await client.context.set("workspace.meta", {"project": "atlas", "quarter": "Q3"})
        planner = await client.register("planner", role="planner")
        events = planner.task_events()
        staged = ["workspace.persona", "workspace.meta"]
        fetch = await planner.submit_task("tool.fetch", {"url": "reports/q3"}, context_keys=staged)
        parse = await planner.submit_task("tool.parse", {"format": "html"}, context_keys=staged, depends_on=[fetch])
        summary_input = {"length": "one line"}
        summarize = await planner.submit_task("tool.summarize", summary_input, context_keys=staged, depends_on=[parse])
        print(f"planner submitted {fetch} (fetch), {parse} (parse), {summarize} (summarize)")
        # Changed after submission: the tasks still read the staged versions.
        await client.context.patch("workspace.persona", {"tone": "chatty"})

        first = await spawn("runner-1", die_on="tool.parse")
        await wait_for_line(first, "started tool.parse")
        os.kill(first.pid, signal.SIGKILL)
        await first.wait()
        print("runner-1 killed in the middle of the parse")
        second = await spawn("runner-2")
        try:
            done: Dict[str, Any] = {}
            while summarize not in done:
                e = await events.next(timeout=60)
                if e.kind == "completed":
                    done[e.id] = e.output
                elif e.kind in ("failed", "retried", "dead_lettered"):
                    print(f"planner heard: {e.id} {e.kind} ({e.error})")
            parse_info = await client.tasks.get(parse)
            print(f"parse completed by {parse_info.holder} on attempt {parse_info.attempt}")
            print(f"summary: {done[summarize]['summary']}")
        finally:
            second.kill()
            await second.wait()

        # A second planner needs the same summary: the stored trace, nothing runs again.
        started = time.monotonic()
        other = await client.register("planner-2", role="planner")
        trace = await client.traces.lookup("tool.summarize", {"length": "one line"})
        assert trace is not None, "the completed task's trace is stored"
        print(
            f"planner-2 found the summary stored (produced by {trace.info.producer}) in "
            f"{(time.monotonic() - started) * 1000:.0f} ms without running a task: {trace.json()['summary']}"
        )
        stats = await client.traces.stats()
        print(f"traces: {stats.traces} stored, {stats.hits} hits")
        # Lineage: what the summary was computed from, back to the fetch and the staged context.
        print("lineage:")
        node = await client.traces.lineage(trace.info.id)
        depth = 0
        while True:
            context = ", ".join(f"{k}@v{v}" for k, v in node.context)
            print(f"  {'  ' * depth}{node.trace.tool} {node.trace.input} by {node.trace.producer} (context: {context})")
            if not node.parents:
                break
            node = await client.traces.lineage(node.parents[0][0])
            depth += 1
        await other.close()
        await planner.close()


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "--runner":
        name, die_on = sys.argv[2], sys.argv[3]
        del sys.argv[1:4]  # address() reads the rest
        try:
            asyncio.run(runner(name, die_on))
        except KeyboardInterrupt:
            pass
    else:
        asyncio.run(main())
