"""The circuit breaker: opens at the error rate, half-opens after the timeout, closes again."""

from __future__ import annotations

import pytest
from provider_testkit import FakeClock

from providers.breaker import BreakerConfig, BreakerState, CircuitBreaker
from providers.errors import CircuitOpenError, ProviderConfigError


def make(clock: FakeClock, **knobs: float) -> CircuitBreaker:
    config = BreakerConfig(**{"window": 10, "min_calls": 4, "reset_timeout": 30.0, **knobs})  # type: ignore[arg-type]
    return CircuitBreaker("sms-http", config, clock=clock)


def call(breaker: CircuitBreaker, ok: bool) -> None:
    breaker.before_call()
    if ok:
        breaker.record_success()
    else:
        breaker.record_failure()


def test_defaults_match_the_issue() -> None:
    config = BreakerConfig()
    assert (config.error_rate, config.reset_timeout, config.min_calls) == (0.5, 30.0, 10)


def test_stays_closed_below_min_calls(clock: FakeClock) -> None:
    breaker = make(clock)
    for _ in range(3):
        call(breaker, ok=False)
    assert breaker.state is BreakerState.CLOSED
    assert breaker.error_rate == 1.0


def test_opens_at_fifty_percent_over_the_window(clock: FakeClock) -> None:
    breaker = make(clock)
    for ok in (True, True, True, False, False):
        call(breaker, ok)
    assert breaker.state is BreakerState.CLOSED  # 2/5 = 40 %
    call(breaker, ok=False)  # 3/6 = 50 %
    assert breaker.state is BreakerState.OPEN
    assert breaker.retry_at == pytest.approx(clock() + 30.0)
    assert breaker.retry_after() == pytest.approx(30.0)


def test_open_breaker_refuses_with_retry_at(clock: FakeClock) -> None:
    breaker = make(clock)
    for _ in range(4):
        call(breaker, ok=False)
    clock.advance(10.0)
    with pytest.raises(CircuitOpenError) as info:
        breaker.before_call()
    assert info.value.retry_at == pytest.approx(clock() + 20.0)
    assert info.value.retry_after == pytest.approx(20.0)
    assert info.value.provider == "sms-http"
    with pytest.raises(CircuitOpenError):
        breaker.check()


def test_half_open_probe_success_closes(clock: FakeClock) -> None:
    breaker = make(clock)
    for _ in range(4):
        call(breaker, ok=False)
    clock.advance(30.0)
    assert breaker.state is BreakerState.HALF_OPEN
    assert breaker.retry_at is None  # a probe may go now
    breaker.before_call()  # the probe
    with pytest.raises(CircuitOpenError) as info:
        breaker.before_call()  # only one probe at a time
    assert info.value.retry_after == pytest.approx(breaker.config.probe_timeout)
    breaker.record_success()
    assert breaker.state is BreakerState.CLOSED
    assert breaker.error_rate == 0.0
    breaker.before_call()  # calls flow again


def test_half_open_probe_failure_reopens(clock: FakeClock) -> None:
    breaker = make(clock)
    for _ in range(4):
        call(breaker, ok=False)
    clock.advance(31.0)
    call(breaker, ok=False)
    assert breaker.state is BreakerState.OPEN
    assert breaker.retry_at == pytest.approx(clock() + 30.0)
    assert breaker.opened_count == 2


def test_release_frees_the_probe_permit(clock: FakeClock) -> None:
    breaker = make(clock)
    for _ in range(4):
        call(breaker, ok=False)
    clock.advance(30.0)
    breaker.before_call()
    breaker.release()
    breaker.before_call()  # would raise if the permit were still taken
    assert breaker.state is BreakerState.HALF_OPEN


def test_window_slides_old_failures_out(clock: FakeClock) -> None:
    breaker = make(clock, window=4, min_calls=4, error_rate=0.75)
    for ok in (False, False, True, True, True, True):
        call(breaker, ok)
    assert breaker.error_rate == 0.0
    for ok in (False, False):
        call(breaker, ok)
    assert breaker.state is BreakerState.CLOSED  # 2 of the last 4
    call(breaker, ok=False)
    assert breaker.state is BreakerState.OPEN  # 3 of the last 4


def test_listeners_hear_every_transition(clock: FakeClock) -> None:
    breaker = make(clock)
    heard: list[tuple[str, str, str]] = []
    breaker.add_listener(lambda name, old, new: heard.append((name, old.value, new.value)))
    breaker.add_listener(lambda *_: 1 / 0)  # a broken hook must not break calls
    for _ in range(4):
        call(breaker, ok=False)
    clock.advance(30.0)
    call(breaker, ok=True)
    assert heard == [
        ("sms-http", "closed", "open"),
        ("sms-http", "open", "half_open"),
        ("sms-http", "half_open", "closed"),
    ]


@pytest.mark.parametrize(
    "knobs",
    [
        {"window": 0},
        {"min_calls": 30},
        {"error_rate": 0.0},
        {"error_rate": 1.5},
        {"reset_timeout": 0},
    ],
)
def test_bad_config_is_a_config_error(knobs: dict[str, float]) -> None:
    with pytest.raises(ProviderConfigError):
        BreakerConfig(**knobs)  # type: ignore[arg-type]
