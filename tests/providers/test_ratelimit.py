"""The rate limiter: even spacing, the window bound, shares, daily cap, no busy waiting."""

from __future__ import annotations

import asyncio
import itertools
import statistics
import time
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest
from provider_testkit import FakeClock, max_in_window

from providers.errors import DailyCapReachedError, ProviderConfigError, ThrottledError
from providers.ratelimit import Rate, RateLimiter

# --- Rate ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("spec", "count", "per"),
    [
        ("100/60", 100, 60.0),
        ("100/60s", 100, 60.0),
        ("100/1m", 100, 60.0),
        ("100 / min", 100, 60.0),
        ("5/s", 5, 1.0),
        ("3000/h", 3000, 3600.0),
        ("100/0.6", 100, 0.6),
    ],
)
def test_rate_parses(spec: str, count: int, per: float) -> None:
    rate = Rate.parse(spec)
    assert (rate.count, rate.per) == (count, pytest.approx(per))


@pytest.mark.parametrize("spec", ["", "100", "x/60", "100/60 fortnights", "0/60", "100/0", "-1/5"])
def test_bad_rate_names_the_variable(spec: str) -> None:
    with pytest.raises(ProviderConfigError, match="LEADFLOW_SMS_RATE"):
        Rate.parse(spec, env="LEADFLOW_SMS_RATE")


def test_interval_is_window_over_count() -> None:
    assert Rate(100, 60).interval == pytest.approx(0.6)


# --- spacing and the window bound ------------------------------------------------------


async def test_100_per_60s_sequential_never_exceeds_and_is_even(clock: FakeClock) -> None:
    limiter = RateLimiter("sms", Rate(100, 60), clock=clock, sleep=clock.sleep)
    grants = []
    for _ in range(350):
        await limiter.acquire()
        grants.append(clock())
    assert max_in_window(grants, 60.0) == 100
    gaps = [b - a for a, b in itertools.pairwise(grants)]
    assert min(gaps) == pytest.approx(0.6)
    assert max(gaps) == pytest.approx(0.6)
    # Not a burst: a tenth of the window holds a tenth of the calls.
    assert max_in_window(grants, 6.0) == 10


async def test_concurrent_callers_get_consecutive_even_slots(clock: FakeClock) -> None:
    limiter = RateLimiter("sms", Rate(100, 60), clock=clock, sleep=clock.sleep)
    grants: list[float] = []

    async def one() -> None:
        await limiter.acquire()
        grants.append(clock())

    await asyncio.gather(*(one() for _ in range(250)))
    assert len(grants) == 250
    assert grants == sorted(grants)
    assert max_in_window(grants, 60.0) == 100
    gaps = [b - a for a, b in itertools.pairwise(grants)]
    assert all(g == pytest.approx(0.6) for g in gaps)


async def test_late_wakeups_cannot_squeeze_an_extra_call_into_a_window() -> None:
    # A sleep that always oversleeps the first call then undersleeps: the hard log holds.
    now = [0.0]
    lateness = iter([0.5] + [0.0] * 50)

    async def sloppy_sleep(seconds: float) -> None:
        now[0] += seconds + next(lateness, 0.0)
        await asyncio.sleep(0)

    limiter = RateLimiter("x", Rate(5, 1.0), clock=lambda: now[0], sleep=sloppy_sleep)
    grants = []
    for _ in range(30):
        await limiter.acquire()
        grants.append(now[0])
    assert max_in_window(grants, 1.0) <= 5


async def test_a_running_call_holds_the_call_n_after_it_until_a_window_past_its_end(
    clock: FakeClock,
) -> None:
    limiter = RateLimiter("sms", Rate(2, 1.0), clock=clock, sleep=clock.sleep)
    first = await limiter.reserve()  # t=1000.0, still running
    second = await limiter.reserve()  # t=1000.5
    second.finish()
    third = asyncio.create_task(limiter.reserve())  # its even slot is t=1001.0
    for _ in range(5):
        await asyncio.sleep(0)
    assert clock.now == pytest.approx(1001.0)  # the third's even slot came ...
    assert not third.done()  # ... but the call two back has not answered yet
    clock.advance(0.7)  # it answers at t=1001.7 ...
    first.finish()
    grant = await third
    # ... so the provider, counting it anywhere up to then, sees the third no sooner
    # than a window later.
    assert grant.start == pytest.approx(1002.7)
    assert grant.waited == pytest.approx(2.2)  # it asked at t=1000.5
    assert first.end == pytest.approx(1001.7)


async def test_calls_n_apart_start_a_window_after_the_earlier_one_ended(
    clock: FakeClock,
) -> None:
    limiter = RateLimiter("sms", Rate(10, 1.0), clock=clock, sleep=clock.sleep)
    grants = []

    async def call(duration: float) -> None:
        grant = await limiter.reserve()
        await clock.sleep(duration)
        grant.finish()
        grants.append(grant)

    # Calls that take up to 0.3 s, all queued at once.
    await asyncio.gather(*(call(0.05 * (i % 7)) for i in range(60)))
    ordered = sorted(grants, key=lambda g: g.start)
    for earlier, later in zip(ordered, ordered[10:], strict=False):
        assert earlier.end is not None
        assert later.start >= earlier.end + 1.0 - 1e-9
    assert max_in_window([g.start for g in grants], 1.0) <= 10


async def test_a_call_never_reported_finished_holds_the_account_one_window_at_most(
    caplog: pytest.LogCaptureFixture,
) -> None:
    limiter = RateLimiter("sms", Rate(1, 0.2))
    leaked = await limiter.reserve()  # a caller that never calls finish()
    started = time.monotonic()
    await limiter.reserve()
    # A window waiting for the answer, then a window past "now" as its end.
    assert 0.35 <= time.monotonic() - started < 1.0
    assert leaked.end is not None
    assert "never reported finished" in caplog.text


async def test_headroom_is_room_for_the_calls_durations(clock: FakeClock) -> None:
    # 10/s stretched by 10 %: one call every 0.11 s. Calls taking 0.05 s fit in the
    # stretch, so the finished-call bound (a window past the end) never holds one back.
    limiter = RateLimiter("sms", Rate(10, 1.0), headroom=0.1, clock=clock, sleep=clock.sleep)
    starts = []
    for _ in range(35):
        grant = await limiter.reserve()
        starts.append(grant.start)
        await clock.sleep(0.05)  # the provider answers
        grant.finish()
    gaps = [b - a for a, b in itertools.pairwise(sorted(starts))]
    assert min(gaps) == pytest.approx(0.11)
    assert max(gaps) == pytest.approx(0.11)


async def test_acquire_counts_the_call_finished_at_its_grant(clock: FakeClock) -> None:
    limiter = RateLimiter("sms", Rate(2, 1.0), clock=clock, sleep=clock.sleep)
    for _ in range(6):
        await limiter.acquire()  # never waits for an answer it cannot be told about
    assert clock.now == pytest.approx(1002.5)
    assert limiter.stats().granted == 6


async def test_finish_is_idempotent_and_never_before_the_start(clock: FakeClock) -> None:
    limiter = RateLimiter("sms", Rate(2, 1.0), clock=clock, sleep=clock.sleep)
    grant = await limiter.reserve()
    grant.finish()
    clock.advance(5)
    grant.finish()
    assert grant.end == grant.start == pytest.approx(1000.0)
    unlimited = await RateLimiter("voice", None, clock=clock).reserve()
    unlimited.finish()
    assert unlimited.end == pytest.approx(1005.0)


async def test_scaled_real_clock_100_per_0_6s() -> None:
    last = [0.0]

    def clock() -> float:  # the real clock, remembering its last reading
        last[0] = time.monotonic()
        return last[0]

    limiter = RateLimiter("sms", Rate(100, 0.6), clock=clock)
    grants: list[float] = []

    async def one() -> None:
        await limiter.acquire()
        grants.append(last[0])  # the limiter's own grant time, read just before returning

    await asyncio.gather(*(one() for _ in range(130)))
    # The bound is exact even on a busy machine (the grant log enforces it).
    assert max_in_window(grants, 0.6) <= 100
    # Evenness is timing: a stalled event loop wakes several owed callers at
    # once, so allow slack (the fake-clock tests check exact spacing).
    gaps = [b - a for a, b in itertools.pairwise(sorted(grants))]
    assert 0.003 <= statistics.median(gaps) <= 0.009
    assert max_in_window(grants, 0.06) <= 25  # a burst would put ~100 here


async def test_waiting_burns_no_cpu_and_lets_other_tasks_run() -> None:
    limiter = RateLimiter("sms", Rate(1, 0.3))
    await limiter.acquire()  # takes the first slot; the next is 0.3 s away
    ticks = 0

    async def ticker() -> None:
        nonlocal ticks
        while True:
            ticks += 1
            await asyncio.sleep(0.01)

    task = asyncio.create_task(ticker())
    cpu0, wall0 = time.process_time(), time.monotonic()
    waited = await limiter.acquire()
    cpu, wall = time.process_time() - cpu0, time.monotonic() - wall0
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)
    assert wall >= 0.25
    assert waited == pytest.approx(wall, abs=0.05)
    assert cpu < 0.1 * wall + 0.02
    assert ticks >= 10


async def test_max_wait_raises_throttled_and_reserves_nothing(clock: FakeClock) -> None:
    limiter = RateLimiter("sms", Rate(1, 10), clock=clock, sleep=clock.sleep)
    await limiter.acquire()
    assert limiter.delay() == pytest.approx(10.0)
    with pytest.raises(ThrottledError) as info:
        await limiter.acquire(max_wait=5.0)
    assert info.value.retry_after == pytest.approx(10.0)
    assert info.value.retry_at == pytest.approx(clock() + 10.0)
    assert info.value.provider == "sms"
    assert limiter.delay() == pytest.approx(10.0)  # nothing reserved


async def test_block_until_holds_the_next_slot(clock: FakeClock) -> None:
    limiter = RateLimiter("sms", Rate(100, 60), clock=clock, sleep=clock.sleep)
    limiter.block_until(clock() + 7.0)
    start = clock()
    await limiter.acquire()
    assert clock() - start == pytest.approx(7.0)


async def test_cancelled_waiter_gives_its_slot_back() -> None:
    limiter = RateLimiter("sms", Rate(1, 0.5))
    await limiter.acquire()
    task = asyncio.create_task(limiter.acquire())
    await asyncio.sleep(0.01)
    assert limiter.delay() == pytest.approx(0.98, abs=0.03)  # two slots taken
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)
    assert limiter.delay() == pytest.approx(0.48, abs=0.03)  # back to one


async def test_no_rate_means_no_wait(clock: FakeClock) -> None:
    limiter = RateLimiter("sms", None, clock=clock, sleep=clock.sleep)
    for _ in range(1000):
        await limiter.acquire()
    assert clock.sleeps == []
    assert limiter.stats().granted == 1000


# --- shares across workers ----------------------------------------------------------


async def test_share_divides_the_rate(clock: FakeClock) -> None:
    limiter = RateLimiter("sms", Rate(100, 60), clock=clock, sleep=clock.sleep)
    limiter.set_share(3 / 8)  # 37.5 -> 37 per window
    assert limiter.interval == pytest.approx(60 / 37)
    assert limiter.stats().calls_per_window == pytest.approx(37)


async def test_workers_sharing_an_account_never_exceed_it_together() -> None:
    shares = [3 / 8, 3 / 8, 2 / 8]
    grants: list[float] = []
    for share in shares:
        clock = FakeClock(start=0.0)
        limiter = RateLimiter("sms", Rate(100, 60), clock=clock, sleep=clock.sleep)
        limiter.set_share(share)
        for _ in range(120):
            await limiter.acquire()
            grants.append(clock())
    assert max_in_window(grants, 60.0) <= 100


async def test_share_increase_waits_one_window_decrease_is_immediate(clock: FakeClock) -> None:
    limiter = RateLimiter("sms", Rate(100, 60), clock=clock, sleep=clock.sleep)
    limiter.set_share(0.5)
    assert limiter.share == 0.5
    limiter.set_share(1.0)
    assert limiter.share == 0.5  # the previous owner's grants are still in the window
    clock.advance(60.0)
    assert limiter.share == 1.0
    limiter.set_share(0.25)
    assert limiter.share == 0.25
    assert limiter.interval == pytest.approx(2.4)


async def test_tiny_share_still_gets_a_slot_per_stretched_window(clock: FakeClock) -> None:
    limiter = RateLimiter("sms", Rate(2, 60), clock=clock, sleep=clock.sleep)
    limiter.set_share(1 / 8)  # 0.25 calls per minute -> one per 240 s
    grants = []
    for _ in range(4):
        await limiter.acquire()
        grants.append(clock())
    gaps = [b - a for a, b in itertools.pairwise(grants)]
    assert all(g == pytest.approx(240.0) for g in gaps)


def test_share_must_be_a_fraction() -> None:
    limiter = RateLimiter("sms", Rate(1, 1))
    with pytest.raises(ValueError, match="share"):
        limiter.set_share(0)
    with pytest.raises(ValueError, match="share"):
        limiter.set_share(1.5)


# --- daily cap -------------------------------------------------------------------------


async def test_daily_cap_stops_until_midnight_pacific(clock: FakeClock) -> None:
    la = ZoneInfo("America/Los_Angeles")
    wall = [datetime(2026, 3, 2, 23, 0, tzinfo=la).astimezone(UTC)]
    limiter = RateLimiter(
        "sms", None, daily_cap=3, clock=clock, sleep=clock.sleep, wall=lambda: wall[0]
    )
    for _ in range(3):
        await limiter.acquire()
    assert limiter.stats().daily_remaining == 0
    with pytest.raises(DailyCapReachedError) as info:
        await limiter.acquire()
    assert info.value.retry_after == pytest.approx(3600.0)
    assert info.value.reason == "daily_cap"
    assert "America/Los_Angeles" in str(info.value)
    wall[0] += timedelta(hours=1, seconds=1)  # 00:00:01 Pacific: a new day
    assert limiter.daily_used == 0
    await limiter.acquire()
    assert limiter.daily_used == 1


async def test_daily_cap_is_shared_by_partition_share(clock: FakeClock) -> None:
    limiter = RateLimiter("sms", None, daily_cap=1000, clock=clock, sleep=clock.sleep)
    limiter.set_share(3 / 8)
    assert limiter.daily_limit == 375


def test_unknown_reset_zone_is_a_config_error() -> None:
    with pytest.raises(ProviderConfigError, match="Mars/Olympus"):
        RateLimiter("sms", None, reset_tz="Mars/Olympus")


def test_negative_daily_cap_is_a_config_error() -> None:
    with pytest.raises(ProviderConfigError, match="daily cap"):
        RateLimiter("sms", None, daily_cap=-1)


async def test_headroom_stretches_the_window(clock: FakeClock) -> None:
    limiter = RateLimiter("sms", Rate(100, 60), headroom=0.01, clock=clock, sleep=clock.sleep)
    assert limiter.interval == pytest.approx(0.606)
    grants = []
    for _ in range(150):
        await limiter.acquire()
        grants.append(clock())
    assert max_in_window(grants, 60.6) == 100
    with pytest.raises(ProviderConfigError, match="headroom"):
        RateLimiter("sms", Rate(1, 1), headroom=1.0)


def test_repr_and_stats() -> None:
    limiter = RateLimiter("sms", Rate(100, 60), daily_cap=10)
    assert "100/60s" in repr(limiter)
    stats = limiter.stats()
    assert (stats.name, stats.window_s, stats.daily_limit) == ("sms", 60.0, 10)
