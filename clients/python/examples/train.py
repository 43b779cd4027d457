"""Data-parallel training with allreduce and a replica group: four worker processes fit one linear
model, and a fifth joins late, catching up from the group's state.

Each worker holds its own shard of synthetic data (y = 2·x0 - 3·x1 + 0.5·x2 + 1 + noise), computes
the gradient of the mean squared error on its shard, and averages it with the others through
``agent.allreduce(grad, op="mean")`` every step; every worker applies the same averaged gradient, so
all keep identical parameters. The four founders join the replica group ``model``. After
``JOIN_AT`` steps the first of them publishes the parameters as the group's state
(``publish_group_state``: a new version with its SHA-256). The fifth worker, started with the
others but idle until then, joins the group, fetches that version (``fetch_group_state`` checks its
checksum), and from then on the five allreduce over the replica group, each presenting the checksum
of its parameters: the server names any member whose parameters diverged (none should). The parent
process starts the workers, then checks that all five end with identical parameters, that nobody
diverged, and that the loss fell.

    python train.py [ADDRESS]
"""

from __future__ import annotations

import asyncio
import json
import random
import struct
import subprocess
import sys

import lockstep
from _common import address

WORKERS = 4
STEPS = 60
#: The step after which the fifth worker joins.
JOIN_AT = 30
GROUP = "model"
FEATURES = 3
LEARNING_RATE = 0.1
TRUE_W = [2.0, -3.0, 0.5]
TRUE_B = 1.0


def shard(rank: int, n: int = 200):
    """This worker's data: its own seed, the same underlying model."""
    rng = random.Random(1000 + rank)
    xs = [[rng.uniform(-1, 1) for _ in range(FEATURES)] for _ in range(n)]
    ys = [sum(w * x for w, x in zip(TRUE_W, row)) + TRUE_B + rng.gauss(0, 0.05) for row in xs]
    return xs, ys


def loss_and_grad(params, xs, ys):
    """Mean squared error on the shard and its gradient for (w..., b)."""
    *w, b = params
    grad = [0.0] * (FEATURES + 1)
    loss = 0.0
    for row, y in zip(xs, ys):
        err = sum(wi * xi for wi, xi in zip(w, row)) + b - y
        loss += err * err
        for i, xi in enumerate(row):
            grad[i] += 2 * err * xi
        grad[FEATURES] += 2 * err
    n = len(ys)
    return loss / n, [g / n for g in grad]


def encode(params) -> bytes:
    """The parameters as the group's state: little-endian f64."""
    return struct.pack(f"<{len(params)}d", *params)


def decode(data: bytes):
    return list(struct.unpack(f"<{len(data) // 8}d", data))


async def step(agent, params, xs, ys, diverged, **members):
    """One step of SGD: the gradient averaged over the members (``members``: group= or
    replica_group=); in the replica group, each presents the checksum of its parameters."""
    _, grad = loss_and_grad(params, xs, ys)
    if "replica_group" in members:
        out = await agent.allreduce(
            grad, op="mean", checksum=lockstep.state_checksum(encode(params)), with_outcome=True, timeout=60, **members
        )
        diverged.extend(out.diverged)
        grad = out.result
    else:
        grad = await agent.allreduce(grad, op="mean", timeout=60, **members)
    return [p - LEARNING_RATE * g for p, g in zip(params, grad)]


async def worker(addr: str, rank: int) -> None:
    founders = [f"trainer-{r}" for r in range(WORKERS)]
    everyone = founders + [f"trainer-{WORKERS}"]
    late = rank == WORKERS
    diverged = []
    async with lockstep.connect(addr) as client:
        # The late joiner hears of the group's new versions on its topic.
        interests = [f"lockstep.groups.{GROUP}"] if late else []
        async with client.register(everyone[rank], role="trainer", interests=interests) as agent:
            xs, ys = shard(rank)
            params = [0.0] * (FEATURES + 1)
            first_loss = None
            if late:
                # Wait for a published version (the join's answer says if there is one already),
                # then fetch it: its checksum is verified before the bytes are handed over.
                state = (await agent.join_group(GROUP)).state
                while state is None:
                    event = lockstep.GroupEvent.from_delivery(await agent.next_delivery(timeout=120))
                    if event is not None and event.event == "published":
                        state = event
                fetched = await agent.fetch_group_state(GROUP)
                params = decode(fetched.data)
                print(f"late joiner fetched version {fetched.state.version} ({fetched.state.checksum[:16]}…)", file=sys.stderr)
            else:
                await agent.join_group(GROUP)
                # The starting loss over the founders' shards: the mean of the shards' losses.
                first, _ = loss_and_grad(params, xs, ys)
                first_loss = (await agent.allreduce([first], op="mean", group=founders, timeout=60))[0]
                for _ in range(JOIN_AT):
                    params = await step(agent, params, xs, ys, diverged, group=founders)
                if rank == 0:
                    await agent.publish_group_state(GROUP, encode(params))
            # Everyone meets before training on together (the late joiner once it caught up).
            await agent.sync("five-together", set(everyone), timeout=120)
            for _ in range(STEPS - JOIN_AT):
                params = await step(agent, params, xs, ys, diverged, replica_group=GROUP)
            last, _ = loss_and_grad(params, xs, ys)
            last_loss = (await agent.allreduce([last], op="mean", replica_group=GROUP, timeout=60))[0]
            print(
                json.dumps(
                    {"rank": rank, "params": params, "first_loss": first_loss, "last_loss": last_loss, "diverged": diverged}
                )
            )


def main() -> None:
    addr = address()
    if len(sys.argv) > 2 and sys.argv[2].startswith("--worker="):
        asyncio.run(worker(addr, int(sys.argv[2].split("=", 1)[1])))
        return
    procs = [
        subprocess.Popen([sys.executable, __file__, addr, f"--worker={r}"], stdout=subprocess.PIPE, text=True)
        for r in range(WORKERS + 1)
    ]
    results = []
    for p in procs:
        out, _ = p.communicate(timeout=300)
        if p.returncode != 0:
            sys.exit(f"a worker failed (exit {p.returncode})")
        results.append(json.loads(out.strip().splitlines()[-1]))
    params = [r["params"] for r in results]
    identical = all(p == params[0] for p in params)
    diverged = sorted({d for r in results for d in r["diverged"]})
    first, last = results[0]["first_loss"], results[0]["last_loss"]
    print(f"workers: {WORKERS} + 1 late (joined after step {JOIN_AT}), steps: {STEPS}")
    print("parameters: " + ", ".join(f"{v:.3f}" for v in params[0]))
    print(f"loss: {first:.4f} -> {last:.6f}")
    print(f"identical parameters on every worker: {identical} ({len(params)} workers)")
    print(f"diverged: {', '.join(diverged) or 'nobody'}")
    print(f"loss fell: {last < first / 10}")
    if not identical or diverged or not last < first / 10:
        sys.exit(1)


if __name__ == "__main__":
    main()
