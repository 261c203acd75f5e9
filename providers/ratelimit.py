"""Per-account rate limiting: N calls per window, evenly spaced, plus a daily cap.

**Spacing.** :class:`RateLimiter` is a virtual-scheduling limiter (GCRA with no
burst): call *k* may start no earlier than ``tat`` (the theoretical arrival
time), and each grant moves ``tat`` on by ``interval = window / N``. So
``100/60`` lets one call through every 0.6 s — never 100 at once, then
nothing for a minute. Concurrent callers reserve consecutive slots in call
order and each sleeps (``await sleep``) until its own slot, so a throttled
call costs no CPU and other tasks keep running.

**Never above the limit in any window.** A second check, a log of the last N
calls, holds call *k + N* back until the provider's window (``rate.per``,
not stretched) has passed since call *k* *finished*. The provider counts a
call somewhere between the moment we let it go and the moment its answer is
back, so two calls N apart always reach it at least a window apart, whatever
the event loop's wake-up delays or the network's jitter: no window of the
provider's ever holds more than N. Callers that run the call themselves take
a :class:`Grant` with :meth:`RateLimiter.reserve` and call
:meth:`Grant.finish` when the answer (or the error) is back; the provider
guard does. :meth:`RateLimiter.acquire` counts the call as finished when it
is granted.

**Headroom.** ``headroom`` stretches the spacing window by a fraction (the
factory uses ``LEADFLOW_PROVIDER_RATE_HEADROOM``, default 1 %: ``100/60`` is
enforced as 100 per 60.6 s). With it the even spacing leaves room for a call's
own duration (up to 0.6 s at 100/60), so the finished-call check above does
not have to hold calls back in steady state; without it every call waits for
the one N before it to finish, and the rate drops by one call time per window.

**Daily cap.** At most ``daily_cap`` grants per calendar day in
``reset_tz`` (default ``America/Los_Angeles``: T-Mobile resets 10DLC caps at
midnight Pacific). When the cap is used up, :meth:`RateLimiter.acquire`
raises :class:`~providers.errors.DailyCapReachedError` with the time of the
reset, so the stage pauses instead of waiting in a task.

**Several workers, one account** (no new infrastructure). Each worker takes
the share of the account's limits that matches the partitions it owns:
a worker owning *k* of the provider stage's *P* input partitions calls
:meth:`RateLimiter.set_share` with ``k / P`` on every rebalance. Its rate is
``floor(N * k / P)`` per window (rounded down, so the workers' rates never
add up to more than N) and its daily cap ``floor(cap * k / P)``. A share
that *grows* takes effect one window later, after the grants made by the
partitions' previous owner have left the window; a share that shrinks takes
effect at once. Within a stable assignment the account limit therefore
holds across all workers in every window. The daily cap is split the same
way but counted per worker, so a mid-day rebalance can move a little budget
between workers (documented in docs/PROVIDERS.md).

**Holding no one hostage.** ``acquire(max_wait=...)`` raises
:class:`~providers.errors.ThrottledError` instead of queueing behind a wait
longer than ``max_wait``, and :meth:`RateLimiter.delay` tells, without
reserving, how long a call would wait, so a stage can pause one provider's
partitions and keep the others moving.

**Metrics.** Every limiter registers itself with
:func:`streams.metrics.track_limiter` (a weak reference), so ``/metrics``
reports its remaining quota per window and per day at each scrape.
"""

from __future__ import annotations

import asyncio
import logging
import math
import re
import time
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from providers.errors import DailyCapReachedError, ProviderConfigError, ThrottledError
from streams import metrics

__all__ = [
    "DEFAULT_RESET_TZ",
    "Clock",
    "Grant",
    "LimiterStats",
    "Rate",
    "RateLimiter",
    "Sleep",
    "WallClock",
]

#: Monotonic seconds (``time.monotonic`` or a test clock).
Clock = Callable[[], float]
#: Awaitable pause (``asyncio.sleep`` or a test clock's).
Sleep = Callable[[float], Awaitable[None]]
#: Aware wall-clock time (for the daily reset).
WallClock = Callable[[], datetime]

_log = logging.getLogger(__name__)

#: Seconds below which a computed wait is float noise.
_EPSILON = 1e-9
#: Least gap between two grants, as a share of the even interval: after a stall,
#: late callers are re-spaced instead of bursting (a little slack keeps the
#: configured rate reachable despite timer jitter).
_MIN_SPACING = 0.9

#: Where the daily cap resets at midnight unless configured otherwise.
DEFAULT_RESET_TZ = "America/Los_Angeles"

_UNITS = {
    "": 1.0,
    "s": 1.0,
    "sec": 1.0,
    "second": 1.0,
    "m": 60.0,
    "min": 60.0,
    "minute": 60.0,
    "h": 3600.0,
    "hour": 3600.0,
    "d": 86400.0,
    "day": 86400.0,
}
_RATE_RE = re.compile(r"^\s*(\d+)\s*/\s*(\d+(?:\.\d+)?)?\s*([a-z]*)\s*$")


@dataclass(frozen=True, slots=True)
class Rate:
    """``count`` calls per ``per`` seconds."""

    count: int
    per: float

    @classmethod
    def parse(cls, spec: str, *, env: str = "rate") -> Rate:
        """Parse ``"100/60"`` (seconds), ``"100/60s"``, ``"100/1m"``, ``"5/s"``, ``"3000/h"``.

        Raises :class:`ProviderConfigError` naming ``env`` when ``spec`` is not a rate.
        """
        match = _RATE_RE.match(spec.lower())
        if match is None or match.group(3) not in _UNITS:
            raise ProviderConfigError(
                f"{env}={spec!r} is not a rate; write COUNT/SECONDS such as 100/60 or 5/s"
            )
        count = int(match.group(1))
        amount = float(match.group(2)) if match.group(2) else 1.0
        per = amount * _UNITS[match.group(3)]
        if count < 1 or per <= 0:
            raise ProviderConfigError(f"{env}={spec!r}: count and window must be positive")
        return cls(count, per)

    @property
    def interval(self) -> float:
        """Seconds between two evenly spaced calls."""
        return self.per / self.count

    def __str__(self) -> str:
        return f"{self.count}/{self.per:g}s"


class Grant:
    """One call let through by a :class:`RateLimiter`, until the caller reports it done.

    ``start`` is when the limiter let it go; ``end`` stays None until
    :meth:`finish`. While a grant is unfinished, the call N after it waits.
    """

    __slots__ = ("_clock", "_done", "end", "start", "waited")

    def __init__(self, start: float, waited: float, clock: Clock) -> None:
        self.start = start
        self.waited = waited
        self.end: float | None = None
        self._clock = clock
        self._done: asyncio.Event | None = None

    def finish(self) -> None:
        """The call is over (answered, failed or abandoned); idempotent."""
        if self.end is None:
            self.end = max(self.start, self._clock())
            if self._done is not None:
                self._done.set()

    async def wait_finished(self) -> None:
        """Return once :meth:`finish` has been called."""
        if self.end is None:
            if self._done is None:
                self._done = asyncio.Event()
            await self._done.wait()

    def __repr__(self) -> str:
        return f"Grant(start={self.start:.3f}, end={self.end})"


@dataclass(frozen=True, slots=True)
class LimiterStats:
    """A snapshot for metrics (``API calls remaining``) and warnings before a quota runs out."""

    name: str
    share: float
    calls_per_window: float
    window_s: float
    granted: int
    waited_s: float
    daily_used: int
    daily_limit: int | None
    #: Grants allowed in one rate window at the current share (0 without a rate).
    window_limit: int = 0
    #: Grants made in the last rate window.
    window_used: int = 0

    @property
    def daily_remaining(self) -> int | None:
        """Grants left today, or None without a daily cap."""
        if self.daily_limit is None:
            return None
        return max(0, self.daily_limit - self.daily_used)

    @property
    def window_remaining(self) -> int:
        """Grants still possible in the current rate window (0 without a rate)."""
        return max(0, self.window_limit - self.window_used)


class RateLimiter:
    """Evenly spaced rate limit and daily cap for one provider account.

    ``rate=None`` means no per-window limit; ``daily_cap=0`` means no daily
    cap. ``clock``/``sleep``/``wall`` are injectable for tests; they default
    to ``time.monotonic``, ``asyncio.sleep`` and the UTC wall clock.
    """

    def __init__(
        self,
        name: str,
        rate: Rate | None,
        *,
        daily_cap: int = 0,
        reset_tz: str = DEFAULT_RESET_TZ,
        headroom: float = 0.0,
        clock: Clock = time.monotonic,
        sleep: Sleep = asyncio.sleep,
        wall: WallClock | None = None,
    ) -> None:
        if daily_cap < 0:
            raise ProviderConfigError(f"daily cap of {name!r} must be >= 0, got {daily_cap}")
        if not 0.0 <= headroom < 1.0:
            raise ProviderConfigError(
                f"rate headroom of {name!r} must be in [0, 1), got {headroom}"
            )
        try:
            self._tz = ZoneInfo(reset_tz)
        except (ZoneInfoNotFoundError, ValueError, OSError):
            raise ProviderConfigError(
                f"daily-cap reset timezone {reset_tz!r} of {name!r} is not an IANA zone"
            ) from None
        self.name = name
        self.rate = rate
        self.daily_cap = daily_cap
        self.headroom = headroom
        #: The window the limiter enforces: the provider's, stretched by ``headroom``.
        self._window = rate.per * (1.0 + headroom) if rate is not None else 0.0
        self._clock = clock
        self._sleep = sleep
        self._wall: WallClock = wall if wall is not None else _utcnow
        self._share = 1.0
        self._pending_share: float | None = None
        self._pending_at = 0.0
        self._tat = -math.inf
        self._interval = 0.0
        self._hard_count = 0
        self._hard_window = 0.0
        self._calls: deque[Grant] = deque()
        self._granted = 0
        self._waited = 0.0
        self._day: date | None = None
        self._day_used = 0
        self._apply_share(1.0)
        metrics.track_limiter(self)

    # --- shares ---------------------------------------------------------------------

    @property
    def share(self) -> float:
        """The fraction of the account's limits this worker uses now."""
        self._settle_share(self._clock())
        return self._share

    def set_share(self, fraction: float) -> None:
        """Use ``fraction`` (owned partitions / all partitions) of the account's limits.

        A smaller share applies at once; a larger one after one rate window,
        so the partitions' previous owner's recent grants have aged out.
        """
        if not 0.0 < fraction <= 1.0:
            raise ValueError(f"share must be in (0, 1], got {fraction}")
        now = self._clock()
        self._settle_share(now)
        if fraction <= self._share or self.rate is None:
            self._pending_share = None
            self._apply_share(fraction)
        else:
            self._pending_share = fraction
            self._pending_at = now + self._window

    def _settle_share(self, now: float) -> None:
        if self._pending_share is not None and now >= self._pending_at:
            share, self._pending_share = self._pending_share, None
            self._apply_share(share)

    def _apply_share(self, share: float) -> None:
        self._share = share
        if self.rate is None:
            return
        calls = self.rate.count * share
        # Spacing uses the stretched window; the finished-call bound the provider's
        # own, so the headroom is room for the calls' durations.
        if calls >= 1.0:
            whole = math.floor(calls)
            self._interval = self._window / whole
            self._hard_count, self._hard_window = whole, self.rate.per
        else:
            # Less than one call per window: one call per (stretched) window / calls.
            self._interval = self._window / calls
            self._hard_count, self._hard_window = 1, self.rate.per / calls
        self._calls = deque(self._calls, maxlen=self._hard_count)

    @property
    def interval(self) -> float:
        """Seconds between two grants at the current share (0 without a rate)."""
        self._settle_share(self._clock())
        return self._interval if self.rate is not None else 0.0

    @property
    def daily_limit(self) -> int | None:
        """This worker's daily cap at the current share, or None without one."""
        if self.daily_cap == 0:
            return None
        return math.floor(self.daily_cap * self.share)

    # --- acquiring ------------------------------------------------------------------

    def delay(self) -> float:
        """Seconds a call made now would wait (0 if it could go at once). Reserves nothing."""
        now = self._clock()
        self._settle_share(now)
        if self.rate is None:
            return 0.0
        return max(0.0, self._tat - now, self._hard_wait(now))

    def block_until(self, monotonic_time: float) -> None:
        """Give no slot before ``monotonic_time`` (the provider said 429 Retry-After)."""
        self._tat = max(self._tat, monotonic_time)

    async def acquire(self, *, max_wait: float | None = None) -> float:
        """Wait for this caller's slot; return the seconds waited.

        The call counts as finished when it is granted; a caller that runs the
        call itself should use :meth:`reserve` and finish the grant when the
        answer is back. Raises as :meth:`reserve` does.
        """
        grant = await self.reserve(max_wait=max_wait)
        grant.end = grant.start
        return grant.waited

    async def reserve(self, *, max_wait: float | None = None) -> Grant:
        """Wait for this caller's slot; return its :class:`Grant`, to :meth:`~Grant.finish`.

        Raises :class:`DailyCapReachedError` when today's cap is used up and
        :class:`ThrottledError` (reserving nothing) when the wait would exceed
        ``max_wait`` seconds.
        """
        now = self._clock()
        self._settle_share(now)
        self._check_day(now)
        if self.rate is None:
            self._grant(now)
            return Grant(now, 0.0, self._clock)
        slot = max(self._tat, now)
        wait = slot - now
        if max_wait is not None and wait > max_wait:
            raise ThrottledError(
                self.name,
                f"rate limit {self.rate} would delay this call {wait:.2f}s (> {max_wait:g}s)",
                retry_at=slot,
                retry_after=wait,
            )
        self._tat = slot + self._interval
        self._day_used += 1
        start = now
        try:
            if wait > 0:
                await self._sleep(wait)
            # Late wake-ups must not squeeze N+1 calls into one window, and the
            # call N back must have finished a window ago.
            while True:
                head = self._unfinished_head()
                if head is not None:
                    await self._wait_finished(head)
                elif (extra := self._hard_wait(now := self._clock())) > 0:
                    await self._sleep(extra)
                else:
                    break
        except BaseException:
            self._day_used = max(0, self._day_used - 1)
            if self._tat == slot + self._interval:
                self._tat = slot  # give the unused slot back
            raise
        waited = max(0.0, now - start)
        grant = Grant(now, waited, self._clock)
        self._calls.append(grant)
        self._granted += 1
        self._waited += waited
        return grant

    async def _wait_finished(self, head: Grant) -> None:
        """Wait for the call N back; one never reported within a window counts as ending now."""
        try:
            async with asyncio.timeout(self._hard_window):
                await head.wait_finished()
        except TimeoutError:
            # A caller that never finishes its grant must not stall the account.
            _log.warning(
                "rate limiter %s: a call granted %.1fs ago was never reported finished; "
                "counting it as ending now",
                self.name,
                self._clock() - head.start,
            )
            head.finish()

    def _unfinished_head(self) -> Grant | None:
        """The call N back, if N calls are logged and that call is still running."""
        calls = self._calls
        if self._hard_count and len(calls) >= self._hard_count and calls[0].end is None:
            return calls[0]
        return None

    def _hard_wait(self, now: float) -> float:
        calls = self._calls
        wait = 0.0
        if self._hard_count and len(calls) >= self._hard_count:
            # A call still running counts as ending now (delay() asks without waiting).
            end = calls[0].end
            wait = (now if end is None else end) + self._hard_window - now
        if calls and self._interval:
            # Spread evenly even after a stall: callers whose slots passed while
            # the loop was busy must not all fire at once when it frees up.
            wait = max(wait, calls[-1].start + self._interval * _MIN_SPACING - now)
        # Float drift of summed intervals is not a real excess.
        return wait if wait > _EPSILON else 0.0

    def _grant(self, now: float) -> None:
        self._day_used += 1
        self._granted += 1

    # --- the daily cap --------------------------------------------------------------

    def _check_day(self, now: float) -> None:
        if self.daily_cap == 0:
            return
        local = self._wall().astimezone(self._tz)
        if local.date() != self._day:
            self._day, self._day_used = local.date(), 0
        limit = math.floor(self.daily_cap * self._share)
        if self._day_used >= limit:
            tomorrow = datetime.combine(local.date() + timedelta(days=1), datetime.min.time())
            reset = tomorrow.replace(tzinfo=self._tz)
            seconds = (reset - local).total_seconds()
            raise DailyCapReachedError(
                self.name,
                f"daily cap of {limit} call(s) used up; resets at midnight {self._tz.key}",
                retry_at=now + seconds,
                retry_after=seconds,
            )

    @property
    def daily_used(self) -> int:
        """Grants (and reservations) counted against today's cap."""
        if (
            self.daily_cap
            and self._day is not None
            and self._wall().astimezone(self._tz).date() != self._day
        ):
            return 0
        return self._day_used

    def stats(self) -> LimiterStats:
        """Counters for metrics."""
        share = self.share
        per_window = 0.0
        window_limit = window_used = 0
        if self.rate is not None:
            per_window = self._window / self._interval if self._interval else 0.0
            window_limit = self._hard_count
            since = self._clock() - self._hard_window
            window_used = sum(1 for g in self._calls if g.start > since)
        return LimiterStats(
            name=self.name,
            share=share,
            calls_per_window=per_window,
            window_s=self._window,
            granted=self._granted,
            waited_s=self._waited,
            daily_used=self.daily_used,
            daily_limit=self.daily_limit,
            window_limit=window_limit,
            window_used=window_used,
        )

    def __repr__(self) -> str:
        cap = f", daily_cap={self.daily_cap}" if self.daily_cap else ""
        return f"RateLimiter({self.name!r}, {self.rate}{cap}, share={self._share:g})"


def _utcnow() -> datetime:
    return datetime.now(UTC)
