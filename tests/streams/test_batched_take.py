"""take_batches: Faust's noack_take without its idle wake-ups (a stand-in stream)."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator
from typing import Any

import pytest

from streams.batched_take import take_batches, takers_idle, takers_running


class _Channel:
    def __aiter__(self) -> _Channel:
        return self

    async def __anext__(self) -> Any:
        raise StopAsyncIteration


class StandInStream:
    """The parts of a Faust ``Stream`` that ``take_batches`` uses; ``feed`` delivers one event."""

    def __init__(self) -> None:
        self.enable_acks = True
        self.should_stop = False
        self.loop = asyncio.get_running_loop()
        self.channel = _Channel()
        self.current_event: Any = None
        self._processors: list[Any] = []
        self.passive: Any = None
        self.wakeups = 0
        self.crashed: BaseException | None = None

    def add_processor(self, processor: Any) -> None:
        self._processors.append(processor)

    def _enable_passive(self, it: Any) -> None:
        self.passive = it

    async def wait(self, event: asyncio.Event) -> None:
        await event.wait()

    async def wait_for_stopped(self, event: asyncio.Event, timeout: float | None = None) -> None:
        self.wakeups += 1
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(event.wait(), timeout)

    async def crash(self, exc: BaseException) -> None:
        self.crashed = exc

    async def feed(self, event: Any) -> None:
        self.current_event = event
        for processor in list(self._processors):
            await processor(event)


async def _collect(batches: AsyncIterator[list[Any]], out: list[tuple[list[Any], float]]) -> None:
    async for batch in batches:
        out.append((batch, time.monotonic()))


async def test_an_idle_stream_does_not_wake_every_window() -> None:
    stream = StandInStream()
    got: list[tuple[list[Any], float]] = []
    task = asyncio.ensure_future(_collect(take_batches(stream, 10, 0.005), got))
    await asyncio.sleep(0.3)  # sixty windows of 5 ms
    assert stream.wakeups <= 1  # one wait for the first event, not one per window
    assert got == []
    await stream.feed("a")
    await asyncio.sleep(0.1)
    assert [b for b, _ in got] == [["a"]]
    task.cancel()


async def test_a_batch_goes_out_within_the_window_after_its_first_event() -> None:
    stream = StandInStream()
    got: list[tuple[list[Any], float]] = []
    task = asyncio.ensure_future(_collect(take_batches(stream, 10, 0.2), got))
    await asyncio.sleep(0.3)  # idle longer than the window first
    fed = time.monotonic()
    await stream.feed("a")
    await stream.feed("b")
    await asyncio.sleep(0.6)
    task.cancel()
    assert [b for b, _ in got] == [["a", "b"]]
    assert 0.15 <= got[0][1] - fed <= 0.45


async def test_a_full_batch_goes_out_at_once_and_never_holds_more_than_max() -> None:
    stream = StandInStream()
    got: list[tuple[list[Any], float]] = []
    task = asyncio.ensure_future(_collect(take_batches(stream, 2, 30.0), got))
    await asyncio.sleep(0)
    started = time.monotonic()

    async def feed_all() -> None:  # one event at a time, as Faust's passive drainer does
        for e in "abcd":
            await stream.feed(e)

    await asyncio.wait_for(feed_all(), 2.0)
    await asyncio.sleep(0.05)
    task.cancel()
    assert [b for b, _ in got] == [["a", "b"], ["c", "d"]]
    assert got[-1][1] - started < 1.0  # not the 30 s window


async def test_acks_are_off_while_taking_and_restored_when_closed() -> None:
    stream = StandInStream()
    batches = take_batches(stream, 5, 0.01)
    pending = asyncio.ensure_future(batches.__anext__())
    await asyncio.sleep(0)
    assert stream.enable_acks is False
    assert len(stream._processors) == 1
    await stream.feed("a")
    assert await asyncio.wait_for(pending, 1.0) == ["a"]
    await batches.aclose()
    assert stream.enable_acks is True
    assert stream._processors == []


async def test_an_event_without_a_current_event_crashes_the_stream() -> None:
    stream = StandInStream()
    batches = take_batches(stream, 5, 0.01)
    pending = asyncio.ensure_future(batches.__anext__())
    await asyncio.sleep(0)
    await stream.feed(None)
    assert isinstance(stream.crashed, RuntimeError)
    pending.cancel()
    with pytest.raises(asyncio.CancelledError):
        await pending


async def test_takers_are_idle_only_while_they_hold_no_event() -> None:
    stream = StandInStream()
    before = takers_running()
    batches = take_batches(stream, 5, 0.01)
    pending = asyncio.ensure_future(batches.__anext__())
    await asyncio.sleep(0)
    assert takers_running() == before + 1
    assert takers_idle()  # waiting for its first event
    await stream.feed("a")
    assert not takers_idle()  # in the buffer
    assert await asyncio.wait_for(pending, 1.0) == ["a"]
    assert not takers_idle()  # the batch is out, being handled
    following = asyncio.ensure_future(batches.__anext__())
    await asyncio.sleep(0)
    assert takers_idle()  # handled; waiting again
    stream.channel.queue = asyncio.Queue()  # type: ignore[attr-defined]
    stream.channel.queue.put_nowait("b")  # type: ignore[attr-defined]
    assert not takers_idle()  # an event waits in the stream's queue
    following.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await following
    await batches.aclose()
    assert takers_running() == before
