"""Reading memory and CPU of processes from /proc."""

from __future__ import annotations

import os
import time

from bench.procstat import Sampler, cpu_seconds, status_kb


def _burn(seconds: float) -> None:
    """Spin for ``seconds`` of wall time (process time would count the sampler's thread too)."""
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        pass


def test_this_process_has_rss_and_cpu() -> None:
    pid = os.getpid()
    rss = status_kb(pid, "VmRSS")
    hwm = status_kb(pid, "VmHWM")
    assert rss is not None and hwm is not None
    assert 0 < rss <= hwm
    before = cpu_seconds(pid)
    _burn(0.05)
    after = cpu_seconds(pid)
    assert before is not None and after is not None and after > before


def test_a_process_that_is_gone_reads_as_none() -> None:
    assert status_kb(2**22 + 12345, "VmRSS") is None
    assert cpu_seconds(2**22 + 12345) is None


def test_sampler_records_peak_series_and_cpu() -> None:
    sampler = Sampler({"me": os.getpid()}, interval=0.02)
    sampler.start()
    _burn(0.15)
    sampler.stop()
    assert (sampler.peak_mb("me") or 0) > 0
    assert (sampler.peak_mb("me", hwm=True) or 0) >= (sampler.peak_mb("me") or 0)
    assert len(sampler.series_mb("me")) >= 2
    assert (sampler.cpu("me") or 0) > 0
    assert sampler.elapsed >= 0.15
    assert sampler.peak_mb("missing") is None
