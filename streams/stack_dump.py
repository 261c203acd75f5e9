"""Where a live process is waiting: every thread's stack and every asyncio task's.

For a worker that does not stop or does not move, ``kill -USR2 <pid>``
writes this dump to the worker's log (see :mod:`streams.stack_dump_signal`).
Only file names, line numbers and function names are shown, never local
variables, so the dump holds no lead data.
"""

from __future__ import annotations

import asyncio
import gc
import inspect
import sys
import threading
import traceback
from collections.abc import Iterable
from types import FrameType

__all__ = ["event_loops", "format_stacks"]

#: Innermost frames shown per stack (the outer ones are the same for every task).
_DEPTH = 12


def _frame_lines(frames: list[FrameType]) -> list[str]:
    summary = traceback.StackSummary.extract(
        ((f, f.f_lineno) for f in frames[-_DEPTH:]), lookup_lines=False, capture_locals=False
    )
    return [f"    {fs.filename}:{fs.lineno} in {fs.name}" for fs in summary]


def _thread_frames(frame: FrameType | None) -> list[FrameType]:
    frames: list[FrameType] = []
    while frame is not None:
        frames.append(frame)
        frame = frame.f_back
    return frames[::-1]  # outermost first, like a traceback


def _await_chain(coro: object) -> list[FrameType]:
    """The frames of a suspended coroutine and of what it awaits, outermost first.

    ``Task.get_stack`` gives only the task's own coroutine frame; the
    ``cr_await`` links say which awaited coroutine it is stuck in. An awaited
    object that is neither (the wrapper ``__await__`` returns, as when Faust's
    agent task awaits its actor) is looked through to the coroutine it holds.
    """
    frames: list[FrameType] = []
    for _ in range(100):  # a bound, in case of an odd awaitable
        if coro is None:
            break
        frame = next(
            (f for a in ("cr_frame", "gi_frame", "ag_frame") if (f := getattr(coro, a, None))),
            None,
        )
        if frame is None:
            coro = _held_coroutine(coro)
            continue
        frames.append(frame)
        coro = next(
            (c for a in ("cr_await", "gi_yieldfrom", "ag_await") if (c := getattr(coro, a, None))),
            None,
        )
    return frames


def _held_coroutine(wrapper: object) -> object | None:
    """The coroutine or generator a wrapper object refers to (None when there is none)."""
    return next(
        (
            r
            for r in gc.get_referents(wrapper)
            if inspect.iscoroutine(r) or inspect.isgenerator(r) or inspect.isasyncgen(r)
        ),
        None,
    )


def event_loops() -> list[asyncio.AbstractEventLoop]:
    """Every event loop of this process that is not closed (Faust's consumer thread has one)."""
    return [
        obj
        for obj in gc.get_objects()
        if isinstance(obj, asyncio.AbstractEventLoop) and not obj.is_closed()
    ]


def _loop_tasks(loop: asyncio.AbstractEventLoop, threads: dict[int | None, str]) -> list[str]:
    tasks = sorted(asyncio.all_tasks(loop), key=lambda t: t.get_name())
    runner = threads.get(getattr(loop, "_thread_id", None))
    where = f" (loop running in thread {runner})" if runner else ""
    out = [f"{len(tasks)} asyncio task(s){where}:"]
    for task in tasks:
        coro = task.get_coro()
        qualname = getattr(coro, "__qualname__", type(coro).__name__)
        out.append(f"task {task.get_name()} ({qualname}):")
        frames = _await_chain(coro) or task.get_stack()
        out.extend(_frame_lines(frames) or ["    (not started)"])
    return out


def format_stacks(
    loops: asyncio.AbstractEventLoop | Iterable[asyncio.AbstractEventLoop] | None = None,
) -> str:
    """The stacks of all threads and, for each loop in ``loops``, of its pending tasks."""
    threads: dict[int | None, str] = {t.ident: t.name for t in threading.enumerate()}
    out: list[str] = []
    for ident, frame in sorted(sys._current_frames().items()):
        out.append(f"thread {threads.get(ident, ident)}:")
        out.extend(_frame_lines(_thread_frames(frame)))
    if isinstance(loops, asyncio.AbstractEventLoop):
        loops = [loops]
    for loop in loops or ():
        out.extend(_loop_tasks(loop, threads))
    return "\n".join(out)
