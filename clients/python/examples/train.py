"""Data-parallel training with allreduce: four worker processes fit one linear model.

Each worker holds its own shard of synthetic data (y = 2·x0 - 3·x1 + 0.5·x2 + 1 + noise), computes
the gradient of the mean squared error on its shard, and averages it with the others through
``agent.allreduce(grad, op="mean")`` every step; every worker applies the same averaged gradient, so
all end with identical parameters. The parent process starts the workers, then checks that their
parameters are identical and that the loss fell.

(A fifth worker joining late and catching up from a replicated group state needs replica groups,
which lockstep does not have yet.)

    python train.py [ADDRESS]
"""

from __future__ import annotations

import asyncio
import json
import random
import subprocess
import sys

import lockstep
from _common import address

WORKERS = 4
STEPS = 60
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


async def worker(addr: str, rank: int) -> None:
    group = [f"trainer-{r}" for r in range(WORKERS)]
    async with lockstep.connect(addr) as client:
        async with client.register(group[rank], role="trainer") as agent:
            xs, ys = shard(rank)
            params = [0.0] * (FEATURES + 1)
            # The starting loss over every shard: the mean of the shards' losses.
            first, _ = loss_and_grad(params, xs, ys)
            first_loss = (await agent.allreduce([first], op="mean", group=group, timeout=60))[0]
            for _ in range(STEPS):
                _, grad = loss_and_grad(params, xs, ys)
                grad = await agent.allreduce(grad, op="mean", group=group, timeout=60)
                params = [p - LEARNING_RATE * g for p, g in zip(params, grad)]
            last, _ = loss_and_grad(params, xs, ys)
            last_loss = (await agent.allreduce([last], op="mean", group=group, timeout=60))[0]
            print(json.dumps({"rank": rank, "params": params, "first_loss": first_loss, "last_loss": last_loss}))


def main() -> None:
    addr = address()
    if len(sys.argv) > 2 and sys.argv[2].startswith("--worker="):
        asyncio.run(worker(addr, int(sys.argv[2].split("=", 1)[1])))
        return
    procs = [
        subprocess.Popen([sys.executable, __file__, addr, f"--worker={r}"], stdout=subprocess.PIPE, text=True)
        for r in range(WORKERS)
    ]
    results = []
    for p in procs:
        out, _ = p.communicate(timeout=300)
        if p.returncode != 0:
            sys.exit(f"a worker failed (exit {p.returncode})")
        results.append(json.loads(out.strip().splitlines()[-1]))
    params = [r["params"] for r in results]
    identical = all(p == params[0] for p in params)
    first, last = results[0]["first_loss"], results[0]["last_loss"]
    print(f"workers: {WORKERS}, steps: {STEPS}")
    print("parameters: " + ", ".join(f"{v:.3f}" for v in params[0]))
    print(f"loss: {first:.4f} -> {last:.6f}")
    print(f"identical parameters on every worker: {identical}")
    print(f"loss fell: {last < first / 10}")
    if not identical or not last < first / 10:
        sys.exit(1)


if __name__ == "__main__":
    main()
