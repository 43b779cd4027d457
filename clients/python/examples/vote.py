"""A weighted vote turns conflicting recommendations into one directive.

Three strategy agents recommend different trades on ACME, each with its confidence. A desk opens a
vote among them: recommendations are grouped by their "action", weighed by confidence, and the
heaviest group wins (plurality). Every strategy gets the same outcome, and an executor that
subscribes to the directive topic — never to the ballots — receives the one directive and acts
on it.

    python examples/vote.py [HOST:PORT]
"""

from __future__ import annotations

import asyncio

import lockstep
from _common import address

RECOMMENDATIONS = {
    # strategy: (recommendation, confidence)
    "momentum": ({"action": "buy", "symbol": "ACME", "qty": 100}, 0.6),
    "mean_reversion": ({"action": "sell", "symbol": "ACME", "qty": 80}, 0.7),
    "news": ({"action": "sell", "symbol": "ACME", "qty": 50}, 0.5),
}


async def main(addr: str) -> None:
    async with lockstep.connect(addr) as client:
        async with client.register("desk", role="desk") as desk, client.register(
            "executor", role="executor", interests=["trades.directive"]
        ) as executor:
            strategies = [await client.register(name, role="strategy") for name in RECOMMENDATIONS]
            try:
                await desk.vote(
                    "acme-trade",
                    "what do we do with ACME?",
                    list(RECOMMENDATIONS),
                    key_field="action",
                    weight="confidence",
                    policy="plurality",
                    topic="trades.directive",
                    timeout=30,
                    wait=False,
                )

                async def recommend(agent: lockstep.Agent) -> lockstep.VoteOutcome:
                    recommendation, confidence = RECOMMENDATIONS[agent.agent_id]
                    print(f"[{agent.agent_id}] recommends {recommendation['action']} "
                          f"{recommendation['qty']} (confidence {confidence})")
                    return await agent.cast("acme-trade", recommendation=recommendation, confidence=confidence)

                outcomes = await asyncio.gather(*(recommend(s) for s in strategies))
                outcome = outcomes[0]
                print("every strategy saw the same outcome:", all(o == outcome for o in outcomes))
                for t in outcome.tally:
                    print(f"  {t.choice}: weight {t.weight:.1f} from {t.ballots} ballot(s)")
                if not outcome.decided:
                    print("no decision:", outcome.reason)
                    return
                print("directive:", outcome.directive["action"], outcome.directive["qty"], outcome.directive["symbol"])

                # The executor acts on the directive published on its topic.
                delivery = await executor.next_delivery(timeout=10)
                order = delivery.json()["directive"]
                print(f"executor executed: {order['action']} {order['qty']} {order['symbol']}")
            finally:
                for s in strategies:
                    await s.close()


if __name__ == "__main__":
    asyncio.run(main(address()))
