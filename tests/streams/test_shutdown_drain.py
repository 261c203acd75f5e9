"""A stopping worker waits a bounded time for unacked events, then commits and goes on."""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass, field
from typing import Any

import pytest
from faust.types import TP

import streams.app  # noqa: F401  (builds the app, which installs the drain)
from streams import shutdown_drain
from streams.shutdown_drain import wait_empty_until


@dataclass(eq=False)
class _Message:
    tp: TP
    offset: int
    acked: bool = False


@dataclass
class _Consumer:
    """The parts of Faust's consumer the wait uses."""

    unacked: list[_Message]
    ack_after_waits: int | None = None  # the stage finishes after this many waits
    should_stop: bool = False
    commits: int = 0
    final_commits: int = 0
    waits: int = 0
    _unacked_messages: set[_Message] = field(default_factory=set)

    def __post_init__(self) -> None:
        self._unacked_messages = set(self.unacked)

    async def commit(self) -> None:
        self.commits += 1

    async def _wait_for_ack(self, timeout: float) -> None:
        self.waits += 1
        await asyncio.sleep(min(timeout, 0.01))
        if self.ack_after_waits is not None and self.waits >= self.ack_after_waits:
            for m in self._unacked_messages:
                m.acked = True

    def _clean_unacked_messages(self) -> None:
        self._unacked_messages = {m for m in self._unacked_messages if not m.acked}

    async def commit_and_end_transactions(self) -> None:
        self.final_commits += 1


async def test_an_event_never_handled_is_left_after_the_drain_time(
    caplog: pytest.LogCaptureFixture,
) -> None:
    consumer = _Consumer([_Message(TP("p-sent", 4), 2170)])
    started = time.monotonic()
    with caplog.at_level(logging.WARNING, logger="streams.shutdown_drain"):
        drained = await wait_empty_until(consumer, time.monotonic() + 0.05)
        again = await wait_empty_until(consumer, time.monotonic())  # the consumer's own stop
    assert drained is False and again is False
    assert time.monotonic() - started < 5
    assert consumer.waits >= 1 and consumer.final_commits == 2
    [record] = caplog.records  # said once, not at each of the two waits
    assert "p-sent[4]@2170" in record.getMessage()


async def test_events_handled_in_time_end_the_wait_at_once() -> None:
    consumer = _Consumer([_Message(TP("p-sent", 1), 5)], ack_after_waits=2)
    assert await wait_empty_until(consumer, time.monotonic() + 30) is True
    assert consumer.waits == 2 and consumer.final_commits == 1


async def test_nothing_unacked_commits_and_returns() -> None:
    consumer = _Consumer([])
    assert await wait_empty_until(consumer, time.monotonic() + 30) is True
    assert (consumer.commits, consumer.waits, consumer.final_commits) == (0, 0, 1)


async def test_events_no_agent_holds_are_left_once_every_agent_is_idle(
    caplog: pytest.LogCaptureFixture,
) -> None:
    consumer = _Consumer([_Message(TP("p-sent", 2), 41)])  # fetched, never reached an agent
    started = time.monotonic()
    with caplog.at_level(logging.INFO, logger="streams.shutdown_drain"):
        drained = await wait_empty_until(consumer, started + 30, idle=lambda: True)
    took = time.monotonic() - started
    assert drained is False
    assert shutdown_drain.IDLE_GRACE_S <= took < 3  # not the 30 s drain
    [record] = caplog.records
    assert record.levelno == logging.INFO
    assert "never reached an agent" in record.getMessage()
    assert "p-sent[2]@41" in record.getMessage()
    assert consumer.final_commits == 1


async def test_an_agent_still_holding_an_event_keeps_the_drain_waiting() -> None:
    consumer = _Consumer([_Message(TP("p-sent", 2), 41)])
    busy_until = time.monotonic() + 0.6
    started = time.monotonic()
    drained = await wait_empty_until(
        consumer, started + 30, idle=lambda: time.monotonic() >= busy_until
    )
    assert drained is False
    # The grace counts from when the agents went idle, not from the start.
    assert time.monotonic() - started >= 0.6 + shutdown_drain.IDLE_GRACE_S


def test_agents_are_idle_only_when_every_agent_takes_through_take_batches(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    app = type("App", (), {"agents": {"enrich": 1, "send": 2}})()
    monkeypatch.setattr(shutdown_drain, "takers_idle", lambda: True)
    monkeypatch.setattr(shutdown_drain, "takers_running", lambda: 2)
    assert shutdown_drain.agents_idle(app)
    monkeypatch.setattr(shutdown_drain, "takers_running", lambda: 1)  # one agent unaccounted
    assert not shutdown_drain.agents_idle(app)
    monkeypatch.setattr(shutdown_drain, "takers_running", lambda: 2)
    monkeypatch.setattr(shutdown_drain, "takers_idle", lambda: False)
    assert not shutdown_drain.agents_idle(app)


async def test_the_stop_sets_the_deadline_then_stops(monkeypatch: pytest.MonkeyPatch) -> None:
    seen: list[float | None] = []

    async def original(app: Any) -> None:
        seen.append(getattr(app, "_leadflow_drain_deadline", None))

    monkeypatch.setattr(shutdown_drain, "_ORIGINAL_STOP_CONSUMER", original)
    monkeypatch.setattr(shutdown_drain, "_stop_started", [])
    app = type("App", (), {})()
    before = time.monotonic()
    await shutdown_drain._stop_consumer_with(7.0)(app)
    [deadline] = seen
    assert deadline is not None and before + 7.0 <= deadline <= time.monotonic() + 7.0


def test_the_worker_app_has_it_installed() -> None:
    assert shutdown_drain.installed()


async def test_the_drain_counts_from_the_signal(monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[Any] = []

    async def on_signal(worker: Any, sig: Any) -> None:
        calls.append(sig)

    async def stop_consumer(app: Any) -> None:
        calls.append(getattr(app, "_leadflow_drain_deadline", None))

    monkeypatch.setattr(shutdown_drain, "_ORIGINAL_STOP_ON_SIGNAL", on_signal)
    monkeypatch.setattr(shutdown_drain, "_ORIGINAL_STOP_CONSUMER", stop_consumer)
    monkeypatch.setattr(shutdown_drain, "_stop_started", [])
    signalled = time.monotonic()
    await shutdown_drain._stop_on_signal(object(), 15)
    time.sleep(0.05)  # other services stop first
    await shutdown_drain._stop_consumer_with(7.0)(type("App", (), {})())
    sig, deadline = calls
    assert sig == 15
    assert signalled + 7.0 <= deadline < signalled + 7.05  # from the signal, not from now


# --- the whole stop's bound -----------------------------------------------------------


def test_an_overdue_stop_logs_the_stacks_and_exits_70(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    exited: list[int] = []
    monkeypatch.setattr(shutdown_drain, "_exit", exited.append)
    with caplog.at_level(logging.ERROR, logger="streams.shutdown_drain"):
        timer = shutdown_drain.arm_stop_timeout(0.1)
        assert timer is not None
        timer.join(5)
    assert exited == [shutdown_drain.EXIT_STOP_OVERDUE] == [70]
    (record,) = caplog.records
    assert "still not stopped 0.1 s after the signal" in record.getMessage()
    assert "thread MainThread:" in record.getMessage()


def test_a_stop_timeout_of_zero_arms_nothing() -> None:
    assert shutdown_drain.arm_stop_timeout(0) is None


async def test_the_signal_arms_the_stop_timeout_once(monkeypatch: pytest.MonkeyPatch) -> None:
    armed: list[float] = []

    async def on_signal(worker: Any, sig: Any) -> None:
        pass

    monkeypatch.setattr(shutdown_drain, "_ORIGINAL_STOP_ON_SIGNAL", on_signal)
    monkeypatch.setattr(shutdown_drain, "_stop_started", [])
    monkeypatch.setattr(shutdown_drain, "_stop_timeout_s", [20.0])
    monkeypatch.setattr(shutdown_drain, "arm_stop_timeout", armed.append)
    await shutdown_drain._stop_on_signal(object(), 15)
    await shutdown_drain._stop_on_signal(object(), 15)  # a second SIGTERM
    assert armed == [20.0]


def test_the_worker_app_bounds_the_whole_stop() -> None:
    assert shutdown_drain._stop_timeout_s == [20.0]


class _Coordinator:
    """What ``GroupCoordinator.close`` touches, with a join that never returns."""

    def __init__(self, join: asyncio.Task[None]) -> None:
        self._closing: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._coordination_task = join
        self.calls: list[str] = []

    async def _stop_heartbeat_task(self) -> None:
        self.calls.append("heartbeat stopped")

    async def _stop_commit_offsets_refresh_task(self) -> None:
        self.calls.append("refresh stopped")

    async def _maybe_leave_group(self) -> None:
        self.calls.append("left group")


async def test_close_cancels_a_join_held_by_the_broker_and_leaves(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setattr(shutdown_drain, "CLOSE_JOIN_WAIT_S", 0.1)
    join = asyncio.create_task(asyncio.sleep(3600))  # JoinGroup held for the rebalance
    coordinator = _Coordinator(join)
    with caplog.at_level(logging.WARNING, logger="streams.shutdown_drain"):
        await asyncio.wait_for(shutdown_drain._close_coordinator(coordinator), 5)
    assert join.cancelled()
    assert coordinator.calls == ["heartbeat stopped", "refresh stopped", "left group"]
    assert "still waiting on the broker" in caplog.text


async def test_close_waits_for_a_join_that_ends_in_time() -> None:
    join = asyncio.create_task(asyncio.sleep(0.05))
    coordinator = _Coordinator(join)
    await shutdown_drain._close_coordinator(coordinator)
    assert join.done() and not join.cancelled()
    assert coordinator.calls[-1] == "left group"
    await shutdown_drain._close_coordinator(coordinator)  # closing twice does nothing more
    assert len(coordinator.calls) == 3
