"""The stack dump shows where threads and tasks wait, and no local variables."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

from streams.stack_dump import format_stacks


async def _parked_with_secret(event: asyncio.Event) -> None:
    phone = "+15551234567"  # a local that must not appear in the dump
    await _inner_wait(event)
    assert phone


async def _inner_wait(event: asyncio.Event) -> None:
    await event.wait()


async def _dump_while_parked(park: Callable[[asyncio.Event], Awaitable[None]], name: str) -> str:
    """The dump taken while a task named ``name`` runs ``park(event)`` and waits on the event."""
    event = asyncio.Event()
    task = asyncio.create_task(park(event), name=name)
    await asyncio.sleep(0)
    try:
        return format_stacks(asyncio.get_running_loop())
    finally:
        event.set()
        await task


async def test_dump_names_waiting_tasks_and_hides_locals() -> None:
    dump = await _dump_while_parked(_parked_with_secret, "parked")
    assert "task parked (_parked_with_secret):" in dump
    assert "in _parked_with_secret" in dump
    # The awaited chain, innermost last: the task waits in _inner_wait, in Event.wait.
    task_lines = dump.split("task parked")[1].splitlines()
    assert any("in _inner_wait" in line for line in task_lines)
    assert any("in wait" in line for line in task_lines)
    assert "thread MainThread:" in dump
    assert "+15551234567" not in dump


class _Actor:
    """Awaitable like Faust's agent actor: ``__await__`` hands over its coroutine's."""

    def __init__(self, event: asyncio.Event) -> None:
        self.it = _inner_wait(event)

    def __await__(self):  # type: ignore[no-untyped-def]
        return self.it.__await__()


async def _runs_actor(event: asyncio.Event) -> None:
    await _Actor(event)


async def test_dump_looks_through_an_awaitable_object_to_its_coroutine() -> None:
    dump = await _dump_while_parked(_runs_actor, "actor")
    task_lines = dump.split("task actor")[1].split("task ")[0].splitlines()
    assert any("in _runs_actor" in line for line in task_lines)
    assert any("in _inner_wait" in line for line in task_lines), task_lines


def test_dump_without_a_loop_has_threads_only() -> None:
    dump = format_stacks()
    assert "thread MainThread:" in dump
    assert "asyncio task" not in dump
