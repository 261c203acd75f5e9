"""The fault harness: start, stop and break workers, the simulator, the broker and Postgres.

Built on :class:`streams.orchestrate.LocalRun` (the simulator and worker
processes of one campaign run). :class:`ChaosRun` adds per-worker
environment (to arm a named fault point, see :mod:`agents.faults`) and
:class:`FaultHarness` the faults themselves:

- a worker: ``kill -9`` or SIGTERM, by index or at random, then restart;
- the simulator: slow, failing, rate-limiting, down, accepting then dropping
  the answer (its control API, ``POST /_sim/config``);
- the broker: ``kill -9`` and a restart on the same port and data folder;
- Postgres: a restart on the same port and data folder.

The broker and Postgres are shared with everything else on the machine, so
:meth:`FaultHarness.ensure_services` brings both back whatever happened; the
scenarios call it on the way out.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import random
import signal
import subprocess
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import aiohttp

from streams.errors import LeadflowError
from streams.infra.kafka import LocalKafka
from streams.infra.postgres import LocalPostgres
from streams.infra.process import free_port, pid_alive
from streams.orchestrate import LocalRun
from streams.settings import Settings
from streams.shutdown_drain import EXIT_STOP_OVERDUE

__all__ = ["ChaosError", "ChaosRun", "FaultHarness", "ServiceUnmanagedError"]


class ChaosError(LeadflowError):
    """A fault scenario could not be set up or driven (not an invariant failure)."""

    reason = "chaos"


class ServiceUnmanagedError(ChaosError):
    """A fault needs the local broker or Postgres, but an external one is configured."""

    reason = "service_unmanaged"


@dataclass
class ChaosRun(LocalRun):
    """A :class:`LocalRun` whose workers can each get extra environment (a fault point)."""

    #: Extra environment of the worker on each web port.
    worker_extra: dict[int, dict[str, str]] = field(default_factory=dict)

    def worker_env(self, web_port: int) -> dict[str, str]:
        """Environment of a worker process, with its extra variables."""
        return {**super().worker_env(web_port), **self.worker_extra.get(web_port, {})}

    def start_worker(
        self, index: int | None = None, extra_env: Mapping[str, str] | None = None
    ) -> int:
        """Start (or restart) worker ``index``, with ``extra_env`` on top of its environment."""
        if index is None:
            index = len(self.workers)
        while len(self.web_ports) <= index:
            self.web_ports.append(free_port())
        self.worker_extra[self.web_ports[index]] = dict(extra_env or {})
        return super().start_worker(index)

    def alive(self) -> list[int]:
        """Indexes of the workers running now."""
        return [i for i, p in enumerate(self.workers) if p is not None and p.poll() is None]

    def exited(self) -> list[tuple[int, int]]:
        """(index, exit status) of workers that ended on their own, forgetting them."""
        out = []
        for i, proc in enumerate(self.workers):
            if proc is not None and proc.poll() is not None:
                out.append((i, int(proc.returncode)))
                self.workers[i] = None
        return out


@dataclass
class FaultHarness:
    """Faults for one :class:`ChaosRun`, plus the shared broker and Postgres."""

    run: ChaosRun
    #: Settings naming the local services (ports, data folders).
    infra: Settings
    rng: random.Random = field(default_factory=lambda: random.Random(7))
    #: Every fault injected, in order, as short labels.
    log: list[str] = field(default_factory=list)
    #: What the harness saw happen that a result should mention.
    notes: list[str] = field(default_factory=list)
    #: Workers that outlived their stop signal and were killed with -9.
    forced: int = 0
    #: Workers that ended their own stop at LEADFLOW_STOP_TIMEOUT_S (status 70).
    overdue: int = 0

    # --- workers -----------------------------------------------------------------------

    def kill_worker(self, index: int, sig: int = signal.SIGKILL, timeout: float = 25) -> float:
        """Signal worker ``index`` (default ``kill -9``) and wait until it is gone.

        A worker that outlives ``timeout`` seconds after the signal is sent
        SIGUSR2 (it logs its stacks) and killed with -9 (noted in
        :attr:`notes`). Returns the seconds it took to exit.
        """
        self.log.append(f"worker {index} {_signame(sig)}")
        proc = self.run.workers[index]
        if proc is None or proc.poll() is not None:
            self.run.workers[index] = None
            return 0.0
        started = time.monotonic()
        proc.send_signal(sig)
        try:
            proc.wait(timeout)
            if proc.returncode == EXIT_STOP_OVERDUE:
                self.overdue += 1
                self.notes.append(
                    f"worker {index} ran past its stop timeout after {_signame(sig)} and "
                    f"exited {EXIT_STOP_OVERDUE} (where it waited is in worker{index}.log)"
                )
        except subprocess.TimeoutExpired:
            self.forced += 1
            # What it waits for goes to its log (streams/stack_dump_signal.py).
            with contextlib.suppress(ProcessLookupError):
                proc.send_signal(signal.SIGUSR2)
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(2)
            if proc.returncode == -signal.SIGUSR2:
                outcome = "SIGUSR2 ended it before its handler was installed: no stacks"
            elif proc.returncode is not None:
                outcome = f"it exited with {proc.returncode} on SIGUSR2 (see worker{index}.log)"
            else:
                outcome = f"killed with -9 (its stacks are in worker{index}.log)"
            self.notes.append(
                f"worker {index} did not exit within {timeout:.0f} s of {_signame(sig)}; {outcome}"
            )
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(10)
        self.run.workers[index] = None
        return time.monotonic() - started

    def kill_random_worker(self, sig: int = signal.SIGKILL) -> int:
        """Signal a random running worker; returns its index."""
        alive = self.run.alive()
        if not alive:
            raise ChaosError("no worker is running")
        index = self.rng.choice(alive)
        self.kill_worker(index, sig)
        return index

    def restart_worker(self, index: int, extra_env: Mapping[str, str] | None = None) -> None:
        """Start worker ``index`` again (its log file is appended to)."""
        self.run.start_worker(index, extra_env)

    async def wait_worker_exit(self, index: int, timeout: float) -> int | None:
        """Wait until worker ``index`` exits by itself; its exit status (None on timeout)."""
        proc = self.run.workers[index]
        if proc is None:
            return None
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                self.run.workers[index] = None
                return int(proc.returncode)
            await asyncio.sleep(0.1)
        return None

    # --- the simulator -------------------------------------------------------------------

    async def sim_config(self, patch: Mapping[str, Any], label: str | None = None) -> None:
        """Merge ``patch`` into the simulator's live config (``POST /_sim/config``)."""
        async with (
            aiohttp.ClientSession() as http,
            http.post(f"{self.run.sim_url}/_sim/config", json=dict(patch)) as resp,
        ):
            if resp.status != 200:
                raise ChaosError(f"simulator refused config {patch}: {await resp.text()}")
        if label:
            self.log.append(label)

    async def sim_endpoints(self, channels: tuple[str, ...], label: str, **knobs: Any) -> None:
        """Set the same endpoint knobs (``error_rate=0.5``, ``outage_for_s=5``...) on channels."""
        await self.sim_config({"endpoints": {c: dict(knobs) for c in channels}}, label)

    async def sim_stats(self) -> dict[str, Any]:
        """``GET /_sim/stats``."""
        async with (
            aiohttp.ClientSession() as http,
            http.get(f"{self.run.sim_url}/_sim/stats") as resp,
        ):
            data: dict[str, Any] = await resp.json()
            return data

    # --- the broker ----------------------------------------------------------------------

    def _kafka(self) -> LocalKafka:
        if self.infra.uses_external_kafka:
            raise ServiceUnmanagedError("LEADFLOW_KAFKA_BOOTSTRAP is set: the broker is not ours")
        return LocalKafka(self.infra)

    def _postgres(self) -> LocalPostgres:
        if self.infra.uses_external_database:
            raise ServiceUnmanagedError("LEADFLOW_DATABASE_URL is set: Postgres is not ours")
        return LocalPostgres(self.infra)

    async def kill_broker(self) -> None:
        """``kill -9`` the local broker and wait until it is gone."""
        kafka = self._kafka()
        pid = kafka.pid()
        if pid is None:
            raise ChaosError("the local broker is not running")
        self.log.append("broker kill -9")
        os.kill(pid, signal.SIGKILL)
        deadline = time.monotonic() + 30
        while pid_alive(pid) and time.monotonic() < deadline:
            with contextlib.suppress(ChildProcessError, OSError):
                os.waitpid(pid, os.WNOHANG)
            await asyncio.sleep(0.1)

    async def start_broker(self) -> float:
        """Start the local broker again (same port, same data); seconds until it served."""
        started = time.monotonic()
        await asyncio.to_thread(self._kafka().up)
        self.log.append("broker restart")
        return time.monotonic() - started

    async def restart_postgres(self, down_s: float = 2.0) -> float:
        """Stop Postgres (fast shutdown), wait ``down_s``, start it; seconds it was down."""
        pg = self._postgres()
        started = time.monotonic()
        self.log.append("postgres restart")
        await asyncio.to_thread(pg.down)
        await asyncio.sleep(down_s)
        await asyncio.to_thread(pg.up)
        return time.monotonic() - started

    def ensure_services(self) -> None:
        """Bring the local broker and Postgres back if a fault left them down."""
        ensure_services(self.infra)


def ensure_services(infra: Settings) -> None:
    """Start the local broker and Postgres unless they run (external ones are left alone)."""
    errors = []
    for service in (LocalKafka(infra), LocalPostgres(infra)):
        try:
            service.up()
        except LeadflowError as exc:
            errors.append(str(exc))
    if errors:
        raise ChaosError("could not bring the services back: " + "; ".join(errors))


def _signame(sig: int) -> str:
    return "kill -9" if sig == signal.SIGKILL else signal.Signals(sig).name


def describe_exit(status: int) -> str:
    """An exit status as text (``SIGKILL`` for -9)."""
    if status < 0:
        return signal.Signals(-status).name
    return f"exit {status}"
