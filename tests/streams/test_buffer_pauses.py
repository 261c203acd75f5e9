"""A partition paused for a full stream buffer is not resumed before its buffer drains."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

import pytest
from faust.transport.consumer import Consumer
from faust.types import TP
from mode.utils.queues import FlowControlEvent, FlowControlQueue

from streams import buffer_pauses, faust_fixes

P0, P1 = TP("touch-due", 0), TP("touch-due", 1)


class StubConsumer:
    """Faust's partition bookkeeping, with Faust's own (wrapped) methods."""

    _get_active_partitions = Consumer._get_active_partitions
    on_buffer_full = Consumer.on_buffer_full
    on_buffer_drop = Consumer.on_buffer_drop

    def __init__(self, assigned: set[TP], queue: Any) -> None:
        self._active_partitions: set[TP] | None = None
        self._paused_partitions: set[TP] = set()
        self._buffered_partitions: set[TP] = set()
        self.assigned = assigned
        channel = SimpleNamespace(_queue=queue)
        self.app = SimpleNamespace(in_recovery=False, topics=SimpleNamespace(_topics=[channel]))

    def assignment(self) -> set[TP]:
        return self.assigned

    def resume_partitions(self, tps: Any) -> None:
        Consumer.resume_partitions(self, tps)  # type: ignore[arg-type]

    def _set_active_tps(self, tps: Any) -> Any:
        return Consumer._set_active_tps(self, tps)  # type: ignore[arg-type]

    async def on_partitions_assigned(self, assigned: Any, generation_id: int = 0) -> None:
        await Consumer.on_partitions_assigned(self, assigned, generation_id)  # type: ignore[arg-type]


class Handler:
    """The conductor's per-partition handler: one stable pressure-drop callback each."""

    def __init__(self, consumer: StubConsumer, tp: TP) -> None:
        self.consumer, self.tp = consumer, tp

    def on_pressure_high(self) -> None:
        self.consumer.on_buffer_full(self.tp)  # type: ignore[arg-type]

    def on_pressure_drop(self) -> None:
        self.consumer.on_buffer_drop(self.tp)  # type: ignore[arg-type]


def fill(queue: FlowControlQueue[int], handler: Handler, n: int) -> None:
    for i in range(n):
        queue.put_nowait_enhanced(
            i, on_pressure_high=handler.on_pressure_high, on_pressure_drop=handler.on_pressure_drop
        )


def make() -> tuple[FlowControlQueue[int], StubConsumer, Handler]:
    faust_fixes.install()
    queue: FlowControlQueue[int] = FlowControlQueue(maxsize=10, flow_control=FlowControlEvent())
    consumer = StubConsumer({P0, P1}, queue)
    return queue, consumer, Handler(consumer, P0)


def test_installed_with_the_faust_fixes() -> None:
    faust_fixes.install()
    assert buffer_pauses.installed()


def test_a_resume_leaves_a_buffer_paused_partition_paused() -> None:
    queue, consumer, p0 = make()
    fill(queue, p0, 9)  # past 80 % of 10: p0 paused by its buffer
    assert consumer._get_active_partitions() == {P1}
    consumer.resume_partitions({P0, P1})  # what table recovery does after a rebalance
    assert consumer._get_active_partitions() == {P1}
    while queue.qsize() > 4:  # drained to 40 %: the buffer resumes it
        queue.get_nowait()
    queue.get_nowait()
    assert consumer._get_active_partitions() == {P0, P1}


async def test_an_assignment_starts_the_buffers_afresh_so_the_next_event_pauses_again(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    queue, consumer, p0 = make()
    fill(queue, p0, 9)
    calls: list[int] = []

    async def faust_assigned(self: Any, assigned: Any, generation_id: int = 0) -> None:
        self._set_active_tps(assigned)  # what Faust's own on_partitions_assigned does first
        calls.append(generation_id)

    monkeypatch.setattr(buffer_pauses, "_original_assigned", faust_assigned)
    await consumer.on_partitions_assigned({P0, P1}, 2)  # a rebalance assigned both again
    assert calls == [2]
    assert consumer._get_active_partitions() == {P0, P1}
    assert not consumer._buffered_partitions
    fill(queue, p0, 1)  # still over the mark: paused again at once
    assert consumer._get_active_partitions() == {P1}
