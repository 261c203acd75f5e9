"""What the provider protection layer costs per call, against a bare HTTP call.

Starts the simulator on free ports (no latency, no injected faults) and, in
the same run, times sequential ``POST /v1/sms`` calls made four ways:

1. **bare** — one ``aiohttp.ClientSession``, hand-built JSON and headers, read
   the JSON answer: the floor;
2. **adapter** — :class:`~providers.http_adapter.HttpSmsAdapter` behind a
   pass-through guard (no limiter, no breaker, one attempt): request
   building, the transport seam and answer parsing;
3. **protected** — the same adapter behind the full guard as the factory
   builds it: rate limiter (set far above the call rate, so it never waits),
   circuit breaker, timeout, retry policy, cost ledger;
4. **guard only** — the full guard around a no-op coroutine, no I/O at all.

Variants are interleaved in rounds so drift (other work on the machine)
hits them alike. Prints medians, p90s and the ratios. This is a script, not
a test: run it by hand::

    .venv/bin/python bench/provider_overhead.py [--calls 300] [--rounds 4]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import statistics
import time
from collections.abc import Awaitable, Callable

import aiohttp

from providers.base import Secret, SmsMessage
from providers.breaker import BreakerConfig, CircuitBreaker
from providers.cost import Charge, CostLedger
from providers.guard import Attempt, Guard
from providers.http_adapter import HttpSmsAdapter
from providers.ratelimit import Rate, RateLimiter
from providers.retry import RetryPolicy
from providers.transport import AiohttpTransport
from simulator.config import SimConfig
from simulator.server import run_simulator

TO = "+14155552671"
SENDER = "+14155550100"

Call = Callable[[int], Awaitable[object]]


def full_guard(name: str, ledger: CostLedger) -> Guard:
    """The guard the factory would build, with a limiter that never has to wait."""
    return Guard(
        name,
        limiter=RateLimiter(name, Rate(1_000_000, 1.0), headroom=0.01),
        breaker=CircuitBreaker(name, BreakerConfig()),
        retry=RetryPolicy(),
        timeout=5.0,
        max_wait=60.0,
        ledger=ledger,
    )


def message(i: int) -> SmsMessage:
    return SmsMessage(campaign_id="bench", lead_id=f"lead-{i}", touch=1, to=TO, body="Hello")


async def time_calls(call: Call, start: int, count: int) -> list[float]:
    """Seconds per call for ``count`` sequential calls."""
    times = []
    for i in range(start, start + count):
        t0 = time.perf_counter()
        await call(i)
        times.append(time.perf_counter() - t0)
    return times


def summary(times: list[float]) -> tuple[float, float]:
    ordered = sorted(times)
    return statistics.median(ordered) * 1e6, ordered[int(0.9 * (len(ordered) - 1))] * 1e6


async def main(calls: int, rounds: int) -> None:
    logging.basicConfig(level=logging.WARNING)
    config = SimConfig(port=0, smtp_port=0, seed=1)
    async with run_simulator(config) as sim:
        url = sim.http_url + "/v1/sms"
        session = aiohttp.ClientSession()

        async def bare(i: int) -> object:
            body = json.dumps(
                {"to": TO, "from": SENDER, "body": "Hello", "campaign_id": "bench",
                 "lead_id": f"bare-{i}", "touch": 1}
            )  # fmt: skip
            headers = {
                "Authorization": "Bearer sim-key",
                "Idempotency-Key": f"bare-{i}",
                "X-Leadflow-Clock": "2026-01-05T09:30:00+00:00",
                "Content-Type": "application/json",
            }
            async with session.post(url, data=body, headers=headers) as resp:
                data = await resp.json()
                assert resp.status == 200, data
                return data

        ledger = CostLedger()
        transport = AiohttpTransport()

        def adapter(guard: Guard) -> HttpSmsAdapter:
            return HttpSmsAdapter(
                name=guard.provider, base_url=sim.http_url, api_key=Secret("sim-key"),
                guard=guard, transport=transport, sender=SENDER,
            )  # fmt: skip

        plain = adapter(Guard.passthrough("sms-plain"))
        protected = adapter(full_guard("sms-protected", ledger))
        noop_guard = full_guard("noop", ledger)

        async def noop(attempt: Attempt) -> int:
            return attempt.number

        def one_charge(result: int) -> list[Charge]:
            return [Charge("bench", 0.0)]

        async def guard_only(i: int) -> object:
            return await noop_guard.call(noop, charge=one_charge, side_effect=True)

        async def via_plain(i: int) -> object:
            return await plain.send_sms(message(i))

        async def via_protected(i: int) -> object:
            return await protected.send_sms(message(10_000_000 + i))

        variants: dict[str, Call] = {
            "bare aiohttp POST": bare,
            "adapter, pass-through guard": via_plain,
            "adapter, full protection": via_protected,
            "full guard alone, no I/O": guard_only,
        }
        results: dict[str, list[float]] = {name: [] for name in variants}
        for call in variants.values():  # warm up connections and code paths
            await time_calls(call, 50_000_000, 30)
        for r in range(rounds):
            for name, call in variants.items():
                results[name] += await time_calls(call, r * calls + 100_000_000, calls)

        await session.close()
        await transport.aclose()

    medians = {name: summary(times) for name, times in results.items()}
    print(f"provider protection overhead: {rounds} rounds x {calls} sequential calls per variant")
    print(f"{'variant':<30} {'median µs':>10} {'p90 µs':>10}")
    for name, (median, p90) in medians.items():
        print(f"{name:<30} {median:>10.1f} {p90:>10.1f}")
    bare_m = medians["bare aiohttp POST"][0]
    plain_m = medians["adapter, pass-through guard"][0]
    full_m = medians["adapter, full protection"][0]
    print()
    comparisons = (
        ("full protection vs bare HTTP:", bare_m),
        ("protection vs plain adapter:", plain_m),
    )
    for label, base in comparisons:
        print(f"{label:<30} {full_m - base:+.1f} µs per call, ratio {full_m / base:.2f}")
    print(
        f"guard alone (no I/O):          {medians['full guard alone, no I/O'][0]:.1f} µs per call"
    )


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--calls", type=int, default=300, help="calls per variant per round")
    parser.add_argument("--rounds", type=int, default=4, help="interleaved rounds")
    args = parser.parse_args()
    asyncio.run(main(args.calls, args.rounds))
