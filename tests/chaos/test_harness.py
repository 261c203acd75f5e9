"""The harness asks a worker that ignores SIGTERM for its stacks, then kills it."""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from pathlib import Path
from types import SimpleNamespace
from typing import Any, cast

from chaos.harness import FaultHarness
from streams.settings import Settings

# Ignores SIGTERM; on SIGUSR2 writes a mark (a worker would log its stacks).
_STUBBORN = """
import signal, sys, time
signal.signal(signal.SIGTERM, signal.SIG_IGN)
signal.signal(signal.SIGUSR2, lambda *_: open(sys.argv[1], "w").write("stacks"))
open(sys.argv[2], "w").write("ready")
while True:
    time.sleep(0.05)
"""


def test_a_worker_outliving_sigterm_dumps_its_stacks_and_is_killed(tmp_path: Path) -> None:
    mark, ready = tmp_path / "dumped", tmp_path / "ready"
    proc = subprocess.Popen(
        [sys.executable, "-c", _STUBBORN, str(mark), str(ready)], start_new_session=True
    )
    deadline = time.monotonic() + 10
    while not ready.exists() and time.monotonic() < deadline:
        time.sleep(0.05)
    run = SimpleNamespace(workers=[proc])
    harness = FaultHarness(run=cast(Any, run), infra=Settings())
    seconds = harness.kill_worker(0, signal.SIGTERM, timeout=1)
    assert proc.poll() == -signal.SIGKILL
    assert mark.read_text() == "stacks"
    assert harness.forced == 1 and seconds >= 1
    assert "stacks are in worker0.log" in harness.notes[0]
    assert run.workers == [None]


# Ignores SIGTERM and has no SIGUSR2 handler, like a worker still importing.
_NO_HANDLER = """
import signal, sys, time
signal.signal(signal.SIGTERM, signal.SIG_IGN)
open(sys.argv[1], "w").write("ready")
while True:
    time.sleep(0.05)
"""


def test_a_worker_without_the_handler_is_not_said_to_have_logged(tmp_path: Path) -> None:
    ready = tmp_path / "ready"
    proc = subprocess.Popen([sys.executable, "-c", _NO_HANDLER, str(ready)], start_new_session=True)
    deadline = time.monotonic() + 10
    while not ready.exists() and time.monotonic() < deadline:
        time.sleep(0.05)
    run = SimpleNamespace(workers=[proc])
    harness = FaultHarness(run=cast(Any, run), infra=Settings())
    harness.kill_worker(0, signal.SIGTERM, timeout=1)
    assert proc.poll() == -signal.SIGUSR2
    assert harness.forced == 1
    assert "no stacks" in harness.notes[0]
    assert "stacks are in" not in harness.notes[0]
