"""The guard: limiter -> breaker -> timeout -> retry -> cost, on plain operations."""

from __future__ import annotations

import asyncio
import random
from collections.abc import Awaitable, Callable

import pytest
from provider_testkit import FakeClock

from providers.breaker import BreakerConfig, BreakerState, CircuitBreaker
from providers.cost import Charge, CostLedger
from providers.errors import (
    AmbiguousOutcomeError,
    CircuitOpenError,
    ClientError,
    ConnectionFailedError,
    DailyCapReachedError,
    GiveUpError,
    InvalidRecipientError,
    ProviderTimeoutError,
    RateLimitedError,
    ServerError,
    ThrottledError,
)
from providers.guard import Attempt, Guard
from providers.ratelimit import Grant, Rate, RateLimiter
from providers.retry import RetryPolicy

Op = Callable[[Attempt], Awaitable[str]]


def scripted(*outcomes: Exception | str) -> tuple[Op, list[Attempt]]:
    """An operation answering ``outcomes`` in turn (raising the exceptions)."""
    seen: list[Attempt] = []
    queue = list(outcomes)

    async def op(attempt: Attempt) -> str:
        seen.append(attempt)
        outcome = queue.pop(0)
        if isinstance(outcome, Exception):
            raise outcome
        return outcome

    return op, seen


def make_guard(clock: FakeClock, **kwargs: object) -> Guard:
    defaults: dict[str, object] = {
        "breaker": CircuitBreaker(
            "p", BreakerConfig(window=4, min_calls=4, reset_timeout=30.0), clock=clock
        ),
        "retry": RetryPolicy(rng=random.Random(3)),
        "clock": clock,
        "sleep": clock.sleep,
    }
    defaults.update(kwargs)
    return Guard("p", **defaults)  # type: ignore[arg-type]


def charge_one(result: str) -> list[Charge]:
    return [Charge("c1", 1.0)]


async def test_success_charges_and_counts(clock: FakeClock) -> None:
    guard = make_guard(clock)
    op, seen = scripted("ok")
    assert await guard.call(op, charge=charge_one, side_effect=True) == "ok"
    assert [a.number for a in seen] == [1]
    assert seen[0].timeout == 5.0
    snap = guard.ledger.snapshot()
    assert snap.by_provider["p"].calls == 1
    assert snap.by_campaign[("c1", "p")].units == 1.0


async def test_retryable_failures_back_off_then_succeed(clock: FakeClock) -> None:
    guard = make_guard(clock)
    op, seen = scripted(
        ServerError("p", "HTTP 500", status=500), ConnectionFailedError("p", "x"), "ok"
    )
    assert await guard.call(op, charge=charge_one, side_effect=True) == "ok"
    assert [a.number for a in seen] == [1, 2, 3]
    assert len(clock.sleeps) == 2
    assert 0 <= clock.sleeps[0] <= 5.0 and 0 <= clock.sleeps[1] <= 10.0
    snap = guard.ledger.snapshot().by_provider["p"]
    assert (snap.calls, snap.failed_calls, snap.units) == (3, 2, 1.0)


async def test_exhausted_attempts_give_up_with_the_last_error(clock: FakeClock) -> None:
    guard = make_guard(clock)
    last = ServerError("p", "HTTP 503", status=503)
    op, seen = scripted(ServerError("p", "HTTP 500", status=500), ServerError("p", "x"), last)
    with pytest.raises(GiveUpError) as info:
        await guard.call(op, charge=charge_one, side_effect=True)
    assert info.value.attempts == 3
    assert info.value.last_error is last
    assert info.value.status == 503
    assert len(seen) == 3
    assert guard.ledger.snapshot().by_provider["p"].units == 0.0


@pytest.mark.parametrize(
    "error",
    [
        InvalidRecipientError("p", "HTTP 400 invalid_number", status=400),
        ClientError("p", "HTTP 404", status=404),
    ],
)
async def test_permanent_failure_is_raised_at_once(clock: FakeClock, error: Exception) -> None:
    guard = make_guard(clock)
    op, seen = scripted(error)
    with pytest.raises(type(error)):
        await guard.call(op, charge=charge_one, side_effect=True)
    assert len(seen) == 1
    assert clock.sleeps == []
    assert guard.breaker is not None and guard.breaker.error_rate == 0.0  # provider is healthy


async def test_429_retry_after_is_honoured_and_slows_the_account(clock: FakeClock) -> None:
    limiter = RateLimiter("acct", Rate(1000, 1), clock=clock, sleep=clock.sleep)
    guard = make_guard(clock, limiter=limiter)
    op, seen = scripted(RateLimitedError("p", "HTTP 429", status=429, retry_after=12.0), "ok")
    start = clock()
    assert await guard.call(op, charge=charge_one, side_effect=True) == "ok"
    assert len(seen) == 2
    assert clock() - start >= 12.0
    assert guard.breaker is not None and guard.breaker.error_rate == 0.0  # 429 is not an outage


async def test_long_retry_after_asks_the_stage_to_pause(clock: FakeClock) -> None:
    guard = make_guard(clock)
    op, seen = scripted(RateLimitedError("p", "HTTP 429", status=429, retry_after=600.0))
    with pytest.raises(ThrottledError) as info:
        await guard.call(op, charge=charge_one, side_effect=True)
    assert info.value.retry_after == 600.0
    assert info.value.status == 429
    assert len(seen) == 1


async def test_ambiguous_send_is_not_retried_and_carries_the_key(clock: FakeClock) -> None:
    guard = make_guard(clock)
    op, seen = scripted(AmbiguousOutcomeError("p", "request sent, then reset"))
    with pytest.raises(AmbiguousOutcomeError) as info:
        await guard.call(
            op,
            charge=charge_one,
            side_effect=True,
            idempotency_key="lf1-abc",
            ambiguous_charge=Charge("c1", 1.0),
        )
    assert info.value.idempotency_key == "lf1-abc"
    assert len(seen) == 1
    # Probably sent: charged at the default cost.
    assert guard.ledger.snapshot().by_campaign[("c1", "p")].units == 1.0


async def test_lost_answer_to_a_lookup_is_just_retried(clock: FakeClock) -> None:
    guard = make_guard(clock)
    op, seen = scripted(AmbiguousOutcomeError("p", "sent, then timeout", timed_out=True), "ok")
    assert await guard.call(op, charge=charge_one, side_effect=False) == "ok"
    assert len(seen) == 2


async def test_lookup_that_always_times_out_gives_up_with_timeout(clock: FakeClock) -> None:
    guard = make_guard(clock)
    op, _ = scripted(*(AmbiguousOutcomeError("p", "x", timed_out=True) for _ in range(3)))
    with pytest.raises(GiveUpError) as info:
        await guard.call(op, charge=charge_one, side_effect=False)
    assert isinstance(info.value.last_error, ProviderTimeoutError)


async def test_backstop_timeout_when_an_adapter_hangs() -> None:
    guard = Guard("p", timeout=0.05, retry=RetryPolicy(attempts=1), backstop_grace=0.01)

    async def hang(attempt: Attempt) -> str:
        await asyncio.sleep(10)
        return "never"

    with pytest.raises(AmbiguousOutcomeError) as info:
        await guard.call(hang, charge=charge_one, side_effect=True)
    assert info.value.timed_out
    with pytest.raises(GiveUpError) as give_up:
        await guard.call(hang, charge=charge_one, side_effect=False)
    assert isinstance(give_up.value.last_error, ProviderTimeoutError)


async def test_open_breaker_stops_calls_before_the_limiter(clock: FakeClock) -> None:
    limiter = RateLimiter("acct", Rate(1, 1), clock=clock, sleep=clock.sleep)
    guard = make_guard(clock, limiter=limiter, retry=RetryPolicy(attempts=1))
    for _ in range(4):
        op, _ = scripted(ServerError("p", "HTTP 500", status=500))
        with pytest.raises(GiveUpError):
            await guard.call(op, charge=charge_one, side_effect=True)
    assert guard.breaker is not None and guard.breaker.state is BreakerState.OPEN
    granted = limiter.stats().granted
    op, seen = scripted("ok")
    with pytest.raises(CircuitOpenError) as info:
        await guard.call(op, charge=charge_one, side_effect=True)
    assert seen == []
    assert limiter.stats().granted == granted  # no rate slot spent
    assert info.value.retry_at == pytest.approx(guard.breaker.retry_at or 0.0)


async def test_breaker_opening_mid_retries_surfaces_as_backpressure(clock: FakeClock) -> None:
    breaker = CircuitBreaker("p", BreakerConfig(window=2, min_calls=2), clock=clock)
    guard = make_guard(clock, breaker=breaker, retry=RetryPolicy(attempts=5, base=0.1))
    op, seen = scripted(*(ServerError("p", "HTTP 500", status=500) for _ in range(5)))
    with pytest.raises(CircuitOpenError):
        await guard.call(op, charge=charge_one, side_effect=True)
    assert len(seen) == 2


async def test_daily_cap_surfaces_as_backpressure(clock: FakeClock) -> None:
    limiter = RateLimiter("acct", None, daily_cap=1, clock=clock, sleep=clock.sleep)
    guard = make_guard(clock, limiter=limiter)
    op, seen = scripted("ok", "ok")
    await guard.call(op, charge=charge_one, side_effect=True)
    with pytest.raises(DailyCapReachedError):
        await guard.call(op, charge=charge_one, side_effect=True)
    assert len(seen) == 1


async def test_cancelled_probe_releases_the_half_open_permit(clock: FakeClock) -> None:
    breaker = CircuitBreaker("p", BreakerConfig(window=1, min_calls=1), clock=clock)
    breaker.before_call()
    breaker.record_failure()
    clock.advance(30.0)
    guard = make_guard(clock, breaker=breaker)
    started = asyncio.Event()

    async def slow(attempt: Attempt) -> str:
        started.set()
        await asyncio.sleep(10)
        return "never"

    task = asyncio.create_task(guard.call(slow, charge=charge_one, side_effect=True))
    await started.wait()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    breaker.before_call()  # the permit is free again
    assert breaker.state is BreakerState.HALF_OPEN


def recording_limiter(clock: FakeClock) -> tuple[RateLimiter, list[Grant]]:
    """A 1-per-second limiter that keeps every grant it hands out."""
    limiter = RateLimiter("p", Rate(1, 1.0), clock=clock, sleep=clock.sleep)
    grants: list[Grant] = []
    reserve = limiter.reserve

    async def recording_reserve(**kwargs: float | None) -> Grant:
        grant = await reserve(**kwargs)
        grants.append(grant)
        return grant

    limiter.reserve = recording_reserve  # type: ignore[method-assign]
    return limiter, grants


async def test_every_attempt_reports_its_rate_slot_finished_when_it_ends(
    clock: FakeClock,
) -> None:
    limiter, grants = recording_limiter(clock)
    guard = make_guard(clock, limiter=limiter)

    async def answer_after(attempt: Attempt) -> str:
        await clock.sleep(0.25)  # the provider takes a quarter second
        if attempt.number == 1:
            raise ServerError("p", "503", status=503)
        return "ok"

    assert await guard.call(answer_after, charge=charge_one, side_effect=True) == "ok"
    with pytest.raises(InvalidRecipientError):
        await guard.call(
            scripted(InvalidRecipientError("p", "bad"))[0], charge=charge_one, side_effect=True
        )
    assert len(grants) == 3  # two attempts of the first call, one of the second
    assert [g.end is not None for g in grants] == [True, True, True]
    assert grants[0].end == pytest.approx(grants[0].start + 0.25)  # when the 503 came back


async def test_a_slot_refused_by_the_breaker_is_finished_at_once(clock: FakeClock) -> None:
    breaker = CircuitBreaker("p", BreakerConfig(window=1, min_calls=1), clock=clock)
    breaker.before_call()
    breaker.record_failure()
    clock.advance(30.0)  # half-open: one probe may go
    limiter, grants = recording_limiter(clock)
    await limiter.acquire()  # the next slot is a second away
    guard = make_guard(clock, breaker=breaker, limiter=limiter)
    op, seen = scripted("never")
    task = asyncio.create_task(guard.call(op, charge=charge_one, side_effect=True))
    await asyncio.sleep(0)  # the guard passed the breaker check and waits for its slot ...
    breaker.before_call()  # ... while another call takes the probe
    with pytest.raises(CircuitOpenError):
        await task
    assert seen == []
    assert len(grants) == 2
    assert grants[1].end == grants[1].start  # the next call need not wait for it


async def test_observer_hears_each_attempt(clock: FakeClock) -> None:
    heard: list[tuple[str, str]] = []

    class Observer:
        def on_attempt(self, provider: str, outcome: str, seconds: float) -> None:
            heard.append((provider, outcome))

    guard = make_guard(clock, observer=Observer())
    op, _ = scripted(ServerError("p", "HTTP 500", status=500), "ok")
    await guard.call(op, charge=charge_one, side_effect=True)
    assert heard == [("p", "server_error"), ("p", "ok")]


async def test_passthrough_guard_tries_once() -> None:
    guard = Guard.passthrough("p")
    op, seen = scripted(ServerError("p", "HTTP 500", status=500))
    with pytest.raises(GiveUpError):
        await guard.call(op, charge=charge_one, side_effect=True)
    assert len(seen) == 1
    assert "1 attempts" in repr(guard)


def test_shared_ledger_is_used() -> None:
    ledger = CostLedger()
    assert Guard("p", ledger=ledger).ledger is ledger
    with pytest.raises(ValueError, match="timeout"):
        Guard("p", timeout=0)
