"""Process memory and CPU from ``/proc`` (Linux), and a background sampler.

- peak RSS: ``VmHWM`` of ``/proc/<pid>/status`` (the kernel's high-water mark),
  and the sampled maximum of ``VmRSS`` (for processes that existed before
  the run, such as the broker, whose high-water mark predates it);
- CPU seconds: ``utime + stime`` of ``/proc/<pid>/stat``, in clock ticks.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

__all__ = [
    "ProcSample",
    "Sampler",
    "cpu_seconds",
    "postgres_pids",
    "status_kb",
]

_TICKS = os.sysconf("SC_CLK_TCK")


def status_kb(pid: int, key: str) -> int | None:
    """A ``kB`` line of ``/proc/<pid>/status`` (``VmRSS``, ``VmHWM``), or None if gone."""
    try:
        text = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return None
    for line in text.splitlines():
        if line.startswith(key + ":"):
            return int(line.split()[1])
    return None


def cpu_seconds(pid: int) -> float | None:
    """User + system CPU seconds of ``pid`` so far, or None if it is gone."""
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    # the command name (field 2) may hold spaces; fields after it are fixed
    fields = text[text.rindex(")") + 2 :].split()
    return (int(fields[11]) + int(fields[12])) / _TICKS


def postgres_pids(database: str | None = None) -> list[int]:
    """``postgres`` processes: all of them, or the backends serving ``database``.

    A backend's process title is ``postgres: <user> <database> <client> <state>``.
    """
    out = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            comm = (entry / "comm").read_text().strip()
            if comm != "postgres":
                continue
            title = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        if database is None or f" {database} " in title:
            out.append(int(entry.name))
    return out


@dataclass
class ProcSample:
    """What the sampler saw of one named process."""

    pid: int
    cpu_start: float | None = None
    cpu_end: float | None = None
    peak_rss_kb: int = 0
    #: last VmHWM read (the kernel's peak since the process started)
    hwm_kb: int = 0
    #: (seconds since the sampler started, RSS kB)
    series: list[tuple[float, int]] = field(default_factory=list)

    @property
    def cpu_used(self) -> float | None:
        """CPU seconds used while sampled."""
        if self.cpu_start is None or self.cpu_end is None:
            return None
        return self.cpu_end - self.cpu_start


class Sampler:
    """Samples RSS and CPU of named processes in a thread until stopped.

    ``pids`` maps a name (worker, sim, broker) to a pid, or to a callable
    returning the current pid (a process started later); ``extra_cpu`` names
    groups whose CPU is summed (e.g. every postgres process).
    """

    def __init__(
        self,
        pids: Mapping[str, int | Callable[[], int | None]],
        *,
        interval: float = 0.25,
        extra_cpu: Mapping[str, Callable[[], list[int]]] | None = None,
    ) -> None:
        self._pids = dict(pids)
        self.interval = interval
        self._extra = dict(extra_cpu or {})
        self.samples: dict[str, ProcSample] = {}
        self._group_start: dict[str, dict[int, float]] = {}
        self.group_cpu: dict[str, float] = {}
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._t0 = 0.0
        #: seconds between start() and stop()
        self.elapsed = 0.0

    def _pid(self, name: str) -> int | None:
        ref = self._pids[name]
        return ref() if callable(ref) else ref

    def _group(self) -> dict[str, dict[int, float]]:
        out: dict[str, dict[int, float]] = {}
        for name, find in self._extra.items():
            out[name] = {}
            for pid in find():
                cpu = cpu_seconds(pid)
                if cpu is not None:
                    out[name][pid] = cpu
        return out

    def _sample(self) -> None:
        now = time.monotonic() - self._t0
        for name in self._pids:
            pid = self._pid(name)
            if pid is None:
                continue
            rec = self.samples.get(name)
            if rec is None or rec.pid != pid:
                rec = self.samples[name] = ProcSample(pid, cpu_start=cpu_seconds(pid))
            rss = status_kb(pid, "VmRSS")
            cpu = cpu_seconds(pid)
            hwm = status_kb(pid, "VmHWM")
            if hwm is not None:
                rec.hwm_kb = hwm
            if rss is not None:
                rec.peak_rss_kb = max(rec.peak_rss_kb, rss)
                rec.series.append((round(now, 2), rss))
            if cpu is not None:
                rec.cpu_end = cpu

    def start(self) -> None:
        """Take the first sample and start the thread."""
        self._t0 = time.monotonic()
        self._group_start = self._group()
        self._sample()
        self._thread = threading.Thread(target=self._loop, name="bench-sampler", daemon=True)
        self._thread.start()

    def _loop(self) -> None:
        while not self._stop.wait(self.interval):
            self._sample()

    def stop(self) -> None:
        """Take a last sample and stop the thread."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(5)
        self._sample()
        self.elapsed = time.monotonic() - self._t0
        end = self._group()
        for name, start in self._group_start.items():
            # processes that started during the run count from zero
            self.group_cpu[name] = sum(cpu - start.get(pid, 0.0) for pid, cpu in end[name].items())

    def peak_mb(self, name: str, *, hwm: bool = False) -> float | None:
        """Peak RSS of ``name`` in MiB: sampled, or the kernel's VmHWM with ``hwm``."""
        rec = self.samples.get(name)
        if rec is None:
            return None
        kb = max(rec.hwm_kb, rec.peak_rss_kb) if hwm else rec.peak_rss_kb
        return round(kb / 1024, 1) if kb else None

    def series_mb(self, name: str) -> list[tuple[float, float]]:
        """(seconds, RSS MiB) samples of ``name``."""
        rec = self.samples.get(name)
        return [] if rec is None else [(t, round(kb / 1024, 1)) for t, kb in rec.series]

    def cpu(self, name: str) -> float | None:
        """CPU seconds ``name`` used while sampled (summed group CPU for group names)."""
        if name in self.group_cpu:
            return round(self.group_cpu[name], 2)
        rec = self.samples.get(name)
        used = None if rec is None else rec.cpu_used
        return None if used is None else round(used, 2)
