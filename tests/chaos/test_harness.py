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

# Each stand-in worker writes argv[1] once its handlers are set, then idles.
_IDLE = """
open(sys.argv[1], "w").write("ready")
while True:
    time.sleep(0.05)
"""

# Ignores SIGTERM; on SIGUSR2 writes a mark (a worker would log its stacks).
_STUBBORN = """
import signal, sys, time
signal.signal(signal.SIGTERM, signal.SIG_IGN)
signal.signal(signal.SIGUSR2, lambda *_: open(sys.argv[2], "w").write("stacks"))
"""

# Ignores SIGTERM and has no SIGUSR2 handler, like a worker still importing.
_NO_HANDLER = """
import signal, sys, time
signal.signal(signal.SIGTERM, signal.SIG_IGN)
"""

# Exits 70 on SIGTERM, as a worker whose stop ran past LEADFLOW_STOP_TIMEOUT_S.
_OVERDUE = """
import signal, sys, time
signal.signal(signal.SIGTERM, lambda *_: sys.exit(70))
"""


def _harness_of(script: str, tmp_path: Path) -> tuple[FaultHarness, subprocess.Popen[bytes]]:
    """A harness whose worker 0 runs ``script``, started and ready."""
    ready, mark = tmp_path / "ready", tmp_path / "dumped"
    proc = subprocess.Popen(
        [sys.executable, "-c", script + _IDLE, str(ready), str(mark)], start_new_session=True
    )
    deadline = time.monotonic() + 10
    while not ready.exists() and time.monotonic() < deadline:
        time.sleep(0.05)
    run = SimpleNamespace(workers=[proc])
    return FaultHarness(run=cast(Any, run), infra=Settings()), proc


def test_a_worker_outliving_sigterm_dumps_its_stacks_and_is_killed(tmp_path: Path) -> None:
    harness, proc = _harness_of(_STUBBORN, tmp_path)
    seconds = harness.kill_worker(0, signal.SIGTERM, timeout=1)
    assert proc.poll() == -signal.SIGKILL
    assert (tmp_path / "dumped").read_text() == "stacks"
    assert harness.forced == 1 and seconds >= 1
    assert "stacks are in worker0.log" in harness.notes[0]
    assert harness.run.workers == [None]


def test_a_worker_without_the_handler_is_not_said_to_have_logged(tmp_path: Path) -> None:
    harness, proc = _harness_of(_NO_HANDLER, tmp_path)
    harness.kill_worker(0, signal.SIGTERM, timeout=1)
    assert proc.poll() == -signal.SIGUSR2
    assert harness.forced == 1
    assert "no stacks" in harness.notes[0]
    assert "stacks are in" not in harness.notes[0]


def test_a_worker_ending_its_own_overdue_stop_is_noted_not_forced(tmp_path: Path) -> None:
    harness, proc = _harness_of(_OVERDUE, tmp_path)
    harness.kill_worker(0, signal.SIGTERM, timeout=10)
    assert proc.returncode == 70
    assert (harness.forced, harness.overdue) == (0, 1)
    assert "exited 70" in harness.notes[0]
