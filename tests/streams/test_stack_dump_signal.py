"""SIGUSR2 logs the stacks at WARNING: before the worker runs, and once mode owns the signal."""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from mode.worker import Worker

from streams import stack_dump_signal
from streams.stack_dump_signal import dump_stacks

_LOGGER = "streams.stack_dump_signal"


@pytest.fixture
def restore_sigusr2() -> Iterator[None]:
    before_handler = signal.getsignal(signal.SIGUSR2)
    before_callback = Worker._on_sigusr2
    yield
    signal.signal(signal.SIGUSR2, before_handler)
    Worker._on_sigusr2 = before_callback  # type: ignore[method-assign]


async def test_dump_stacks_logs_at_warning_with_the_tasks(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING, logger=_LOGGER):
        dump_stacks()
    (record,) = caplog.records
    assert record.levelno == logging.WARNING
    assert "stack dump on SIGUSR2" in record.getMessage()
    assert "asyncio task(s) (loop running in thread MainThread):" in record.getMessage()
    assert "in test_dump_stacks_logs_at_warning_with_the_tasks" in record.getMessage()


def test_the_dump_includes_a_loop_running_in_another_thread(
    caplog: pytest.LogCaptureFixture,
) -> None:
    loop = asyncio.new_event_loop()
    started, release = threading.Event(), asyncio.Event()

    async def parked_in_consumer_thread() -> None:
        started.set()
        await release.wait()

    def run() -> None:
        loop.run_until_complete(parked_in_consumer_thread())

    thread = threading.Thread(target=run, name="consumer-like")
    thread.start()
    try:
        assert started.wait(5)
        with caplog.at_level(logging.WARNING, logger=_LOGGER):
            dump_stacks()  # from the main thread, with no loop running here
    finally:
        loop.call_soon_threadsafe(release.set)
        thread.join(5)
        loop.close()
    message = caplog.records[0].getMessage()
    assert "thread MainThread:" in message
    assert "(loop running in thread consumer-like):" in message
    assert "in parked_in_consumer_thread" in message


@pytest.mark.usefixtures("restore_sigusr2")
def test_install_makes_the_signal_log_stacks(caplog: pytest.LogCaptureFixture) -> None:
    stack_dump_signal.install()
    assert stack_dump_signal.installed()
    with caplog.at_level(logging.WARNING, logger=_LOGGER):
        os.kill(os.getpid(), signal.SIGUSR2)
        deadline = time.monotonic() + 5
        while not caplog.records and time.monotonic() < deadline:
            time.sleep(0.01)  # the handler runs between bytecodes of this loop
    assert "stack dump on SIGUSR2" in caplog.records[0].getMessage()


@pytest.mark.usefixtures("restore_sigusr2")
def test_modes_sigusr2_callback_dumps_instead_of_opening_pdb(
    caplog: pytest.LogCaptureFixture,
) -> None:
    stack_dump_signal.install()
    worker = Worker.__new__(Worker)  # the callback uses nothing of the instance
    with caplog.at_level(logging.WARNING, logger=_LOGGER):
        worker._on_sigusr2()
    assert "stack dump on SIGUSR2" in caplog.records[0].getMessage()


# A process that has only just started: it installs the handler and idles.
_STARTING = """
import logging, sys, time
from streams import stack_dump_signal
stack_dump_signal.install()
open(sys.argv[1], "w").write("ready")
time.sleep(30)
"""


def test_a_process_still_starting_survives_the_signal_and_logs(tmp_path: Path) -> None:
    ready = tmp_path / "ready"
    proc = subprocess.Popen(
        [sys.executable, "-c", _STARTING, str(ready)],
        stderr=subprocess.PIPE,
        cwd=Path(__file__).resolve().parents[2],
    )
    try:
        deadline = time.monotonic() + 20
        while not ready.exists() and time.monotonic() < deadline:
            time.sleep(0.05)
        proc.send_signal(signal.SIGUSR2)
        time.sleep(0.5)
        assert proc.poll() is None  # the default action would have ended it
    finally:
        proc.kill()
        _, err = proc.communicate(timeout=10)
    assert b"stack dump on SIGUSR2" in err
    assert b"thread MainThread:" in err


# A process that crashes in C code after the install, as librdkafka did.
_SEGFAULT = """
import ctypes
from streams import stack_dump_signal
stack_dump_signal.install()
ctypes.string_at(0)
"""


def test_a_crash_in_c_code_leaves_the_python_stacks() -> None:
    proc = subprocess.run(
        [sys.executable, "-c", _SEGFAULT],
        capture_output=True,
        cwd=Path(__file__).resolve().parents[2],
        timeout=60,
        check=False,
    )
    assert proc.returncode == -signal.SIGSEGV
    assert b"Fatal Python error: Segmentation fault" in proc.stderr
    assert b"most recent call first" in proc.stderr
