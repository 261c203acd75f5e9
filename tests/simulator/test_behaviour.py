"""simulator/behaviour.py: outage, rate limit, error mix and latency, on a fake clock."""

from __future__ import annotations

import random
import statistics

from simulator.behaviour import (
    EndpointBehaviour,
    Outcome,
    SlidingWindowLimiter,
    sample_latency_s,
)
from simulator.config import EndpointConfig, Latency, RateLimit


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def behaviour(config: EndpointConfig, clock: FakeClock, seed: int = 1) -> EndpointBehaviour:
    return EndpointBehaviour("sms", config, random.Random(seed), clock=clock)


def test_outage_window_answers_outage_with_retry_after() -> None:
    clock = FakeClock()
    b = behaviour(EndpointConfig(outages=((10.0, 20.0),)), clock)
    assert b.decide().outcome is Outcome.OK
    clock.now += 12.5
    decision = b.decide()
    assert decision.outcome is Outcome.OUTAGE
    assert decision.retry_after_s == 8  # ceil(20 - 12.5)
    clock.now += 7.5
    assert b.decide().outcome is Outcome.OK


def test_rate_limit_is_a_sliding_window() -> None:
    clock = FakeClock()
    b = behaviour(EndpointConfig(rate_limit=RateLimit(3, 10.0)), clock)
    assert [b.decide().outcome for _ in range(3)] == [Outcome.OK] * 3
    clock.now += 4
    limited = b.decide()
    assert limited.outcome is Outcome.RATE_LIMITED
    assert limited.retry_after_s == 6
    clock.now += 6  # the first three leave the window
    assert b.decide().outcome is Outcome.OK


def test_rejected_requests_do_not_use_up_the_window() -> None:
    limiter = SlidingWindowLimiter(2, 1.0)
    assert limiter.try_admit(0.0) == 0.0
    assert limiter.try_admit(0.5) == 0.0
    for t in (0.6, 0.7, 0.8):
        assert limiter.try_admit(t) > 0
    assert limiter.try_admit(1.01) == 0.0


def test_update_keeps_the_window_unless_the_limit_changes() -> None:
    clock = FakeClock()
    config = EndpointConfig(rate_limit=RateLimit(1, 60.0))
    b = behaviour(config, clock)
    b.decide()
    b.update(EndpointConfig(rate_limit=RateLimit(1, 60.0), error_rate=0.0))
    assert b.decide().outcome is Outcome.RATE_LIMITED
    b.update(EndpointConfig(rate_limit=RateLimit(2, 60.0)))
    assert b.decide().outcome is Outcome.OK


def test_outcome_mix_follows_the_rates_and_the_seed() -> None:
    clock = FakeClock()
    config = EndpointConfig(error_rate=0.2, timeout_rate=0.1, drop_after_accept_rate=0.1)
    b = behaviour(config, clock, seed=5)
    drawn = [b.decide().outcome for _ in range(4000)]
    share = {o: drawn.count(o) / len(drawn) for o in Outcome}
    assert abs(share[Outcome.ERROR] - 0.2) < 0.03
    assert abs(share[Outcome.TIMEOUT] - 0.1) < 0.03
    assert abs(share[Outcome.DROP] - 0.1) < 0.03
    assert abs(share[Outcome.OK] - 0.6) < 0.04
    again = behaviour(config, clock, seed=5)
    assert [again.decide().outcome for _ in range(4000)] == drawn
    other_seed = behaviour(config, clock, seed=6)
    assert [other_seed.decide().outcome for _ in range(4000)] != drawn


def test_latency_distributions() -> None:
    rng = random.Random(3)
    assert sample_latency_s(Latency(dist="fixed", ms=25), rng) == 0.025
    uniform = [
        sample_latency_s(Latency(dist="uniform", min_ms=10, max_ms=20), rng) for _ in range(500)
    ]
    assert min(uniform) >= 0.010 and max(uniform) <= 0.020
    lognormal = Latency(dist="lognormal", median_ms=40, p99_ms=400)
    draws = sorted(sample_latency_s(lognormal, rng) for _ in range(20000))
    assert abs(statistics.median(draws) - 0.040) < 0.004
    p99 = draws[int(len(draws) * 0.99)]
    assert 0.3 < p99 < 0.5
    assert max(draws) <= 4.0
