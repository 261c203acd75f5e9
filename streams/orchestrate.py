"""Run a whole campaign on local services: simulator and workers as processes.

Used by ``leadflow demo``, the end-to-end and restart tests, and (later) the
benchmarks and the fault suite. It starts ``leadflow sim`` and one or more
``leadflow worker`` processes with the right environment, publishes the
leads, plays the part of leads who reply or text STOP after their first
touch, waits until every lead has reached its end, and reports.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import subprocess
import sys
import time
import uuid
from collections import Counter
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import psycopg

from streams.errors import ServiceStartError
from streams.infra.process import free_port
from streams.settings import Settings
from streams.state_machine import State

__all__ = ["LocalRun", "RunReport"]

_OPEN_STATES = (State.NEW, State.ENRICHED, State.QUALIFIED, State.IN_SEQUENCE)


@dataclass
class RunReport:
    """What a campaign run came to."""

    campaign_id: str
    states: Counter[str]
    sends: list[tuple[str, int, str, int]]  # channel, touch, status, count
    dead_letters: Counter[str]
    cost_units: float
    leads_published: int
    seconds: float
    first_touch_seconds: float | None

    def lines(self) -> list[str]:
        """The report as text."""
        total = sum(self.states.values())
        out = [f"campaign {self.campaign_id}: {total} leads in {self.seconds:.1f} s"]
        out.append("leads by final state:")
        out += [f"  {state:<13} {n:>6}" for state, n in self.states.most_common()]
        out.append("sends by channel and touch:")
        out += [
            f"  touch {touch} {channel:<6} {status:<9} {n:>6}"
            for channel, touch, status, n in self.sends
        ]
        out.append("dead letters by reason:")
        out += [f"  {reason:<18} {n:>6}" for reason, n in self.dead_letters.most_common()] or [
            "  (none)"
        ]
        out.append(f"cost units (sends): {self.cost_units:,.1f}")
        rate = self.leads_published / self.seconds if self.seconds else 0.0
        out.append(f"throughput: {rate:,.0f} leads/s published to final state")
        if self.first_touch_seconds is not None:
            out.append(f"raw -> first touch sent: {self.first_touch_seconds:.1f} s")
        return out


@dataclass
class LocalRun:
    """Simulator and workers for one campaign run, as child processes."""

    settings: Settings
    workdir: Path
    env: Mapping[str, str]
    time_scale: float = 12000.0
    clock_start: str = "2026-11-30T13:00:00+00:00"  # a Monday, 08:00 in New York
    secret: str = field(default_factory=lambda: uuid.uuid4().hex)
    sim_port: int = field(default_factory=free_port)
    smtp_port: int = field(default_factory=free_port)
    web_ports: list[int] = field(default_factory=list)
    worker_log_level: str = "warn"
    sim: subprocess.Popen[bytes] | None = None
    workers: list[subprocess.Popen[bytes] | None] = field(default_factory=list)

    @property
    def sim_url(self) -> str:
        """Base URL of the simulator."""
        return f"http://127.0.0.1:{self.sim_port}"

    def worker_env(self, web_port: int) -> dict[str, str]:
        """Environment of a worker process."""
        return {
            **self.env,
            "LEADFLOW_TIME_SCALE": str(self.time_scale),
            "LEADFLOW_CLOCK_START": self.clock_start,
            "LEADFLOW_WEB_PORT": str(web_port),
            "LEADFLOW_WEBHOOK_SECRET": self.secret,
            "LEADFLOW_SMS_URL": self.sim_url,
            "LEADFLOW_VOICE_URL": self.sim_url,
            "LEADFLOW_ENRICH_URL": self.sim_url,
            "LEADFLOW_LLM_URL": self.sim_url,
            "LEADFLOW_SMTP_HOST": "127.0.0.1",
            "LEADFLOW_SMTP_PORT": str(self.smtp_port),
        }

    def _spawn(self, args: list[str], env: Mapping[str, str], log: str) -> subprocess.Popen[bytes]:
        with (self.workdir / log).open("ab") as fh:
            return subprocess.Popen(
                [sys.executable, "-m", "streams.cli", *args],
                env=dict(env),
                cwd=self.workdir,
                stdout=fh,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )

    async def start_sim(self, extra_args: list[str] | None = None) -> None:
        """Start ``leadflow sim`` with webhooks to the first worker; wait until it answers."""
        if not self.web_ports:
            self.web_ports.append(free_port())
        env = {**self.env, "LEADFLOW_WEBHOOK_SECRET": self.secret}
        self.sim = self._spawn(
            [
                "sim",
                "--port",
                str(self.sim_port),
                "--smtp-port",
                str(self.smtp_port),
                "--webhook-url",
                f"http://127.0.0.1:{self.web_ports[0]}/webhooks/sim",
                "--seed",
                "11",
                *(extra_args or []),
            ],
            env,
            "sim.log",
        )
        deadline = time.monotonic() + 20
        async with aiohttp.ClientSession() as http:
            while time.monotonic() < deadline:
                if self.sim.poll() is not None:
                    raise ServiceStartError(f"leadflow sim exited; see {self.workdir / 'sim.log'}")
                with contextlib.suppress(aiohttp.ClientError):
                    async with http.get(f"{self.sim_url}/_sim/health") as resp:
                        if resp.status == 200:
                            return
                await asyncio.sleep(0.2)
        raise ServiceStartError(f"leadflow sim did not answer; see {self.workdir / 'sim.log'}")

    def start_worker(self, index: int | None = None) -> int:
        """Start a worker process (or restart worker ``index``); returns its index."""
        if index is None:
            index = len(self.workers)
        while len(self.web_ports) <= index:
            self.web_ports.append(free_port())
        while len(self.workers) <= index:
            self.workers.append(None)
        self.workers[index] = self._spawn(
            ["worker", "-l", self.worker_log_level],
            self.worker_env(self.web_ports[index]),
            f"worker{index}.log",
        )
        return index

    def stop_worker(self, index: int, sig: int = signal.SIGTERM, timeout: float = 60) -> None:
        """Stop worker ``index`` with ``sig`` and wait for it."""
        proc = self.workers[index]
        if proc is None or proc.poll() is not None:
            return
        proc.send_signal(sig)
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(10)
        self.workers[index] = None

    def check_alive(self) -> None:
        """Raise when a worker or the simulator died."""
        for i, proc in enumerate(self.workers):
            if proc is not None and proc.poll() is not None:
                tail = (self.workdir / f"worker{i}.log").read_text(errors="replace")[-2000:]
                raise ServiceStartError(f"worker {i} exited ({proc.returncode}):\n{tail}")

    def close(self) -> None:
        """Stop every process this run started."""
        for i in range(len(self.workers)):
            self.stop_worker(i)
        if self.sim is not None and self.sim.poll() is None:
            self.sim.send_signal(signal.SIGTERM)
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.sim.wait(10)
            if self.sim.poll() is None:
                os.killpg(self.sim.pid, signal.SIGKILL)
                self.sim.wait(10)  # reap it: no process outlives the run
        self.sim = None

    # --- driving a campaign ---------------------------------------------------------

    async def messages(self, http: aiohttp.ClientSession, campaign_id: str) -> list[dict[str, Any]]:
        """The simulator's accepted messages of ``campaign_id``."""
        async with http.get(
            f"{self.sim_url}/_sim/messages", params={"campaign_id": campaign_id}
        ) as resp:
            data = await resp.json()
        return list(data["messages"] if isinstance(data, dict) else data)

    async def trigger(
        self, http: aiohttp.ClientSession, kind: str, campaign_id: str, lead_id: str, body: str
    ) -> None:
        """Have the simulator send a webhook (a reply, a STOP) for a lead now."""
        async with http.post(
            f"{self.sim_url}/_sim/webhooks/trigger",
            json={
                "kind": kind,
                "campaign_id": campaign_id,
                "lead_id": lead_id,
                "body": body,
                "wait": True,
            },
        ) as resp:
            if resp.status != 200:
                raise ServiceStartError(f"webhook trigger failed: {resp.status}")

    def states(self, campaign_id: str) -> Counter[str]:
        """Leads of the campaign by state (Postgres)."""
        with psycopg.connect(self.settings.dsn) as conn:
            rows = conn.execute(
                "SELECT state, count(*) FROM leads WHERE campaign_id = %s GROUP BY state",
                (campaign_id,),
            ).fetchall()
        return Counter({str(s): int(str(n)) for s, n in rows})

    async def drive(
        self,
        campaign_id: str,
        expected_leads: int,
        *,
        replies: Mapping[str, str] | None = None,
        timeout_s: float = 300.0,
        progress: Callable[[Counter[str]], None] | None = None,
        on_tick: Callable[[Counter[str]], None] | None = None,
    ) -> dict[str, set[str]]:
        """Wait until every lead has ended; send each ``replies`` webhook after touch 1.

        ``replies`` maps lead id -> "reply" or "opt_out". Returns the leads for
        which each kind was actually sent (leads never contacted are skipped).
        """
        pending = dict(replies or {})
        sent: dict[str, set[str]] = {"reply": set(), "opt_out": set()}
        deadline = time.monotonic() + timeout_s
        async with aiohttp.ClientSession() as http:
            while time.monotonic() < deadline:
                await asyncio.sleep(1.0)
                self.check_alive()
                if pending:
                    touched = {
                        m["lead_id"]
                        for m in await self.messages(http, campaign_id)
                        if int(m["touch"]) == 1
                    }
                    for lead in [lead for lead in pending if lead in touched]:
                        kind = pending.pop(lead)
                        text = "STOP" if kind == "opt_out" else "Sounds good, call me Tuesday"
                        await self.trigger(http, kind, campaign_id, lead, text)
                        sent[kind].add(lead)
                try:
                    states = self.states(campaign_id)
                except psycopg.OperationalError:
                    continue  # Postgres restarting (a fault scenario, an operator): look again
                if on_tick is not None:
                    on_tick(states)
                if progress is not None:
                    progress(states)
                still_open = sum(states.get(s.value, 0) for s in _OPEN_STATES)
                if sum(states.values()) >= expected_leads and still_open == 0:
                    return sent
        states = self.states(campaign_id)
        raise ServiceStartError(
            f"campaign {campaign_id} did not finish in {timeout_s:.0f} s: {dict(states)}"
        )

    def report(
        self,
        campaign_id: str,
        published: int,
        seconds: float,
        dead_letters: Counter[str],
        first_touch_seconds: float | None = None,
    ) -> RunReport:
        """Final figures from Postgres."""
        with psycopg.connect(self.settings.dsn) as conn:
            sends = [
                (str(c), int(str(t)), str(s), int(str(n)))
                for c, t, s, n in conn.execute(
                    "SELECT channel, touch, status, count(*) FROM send_ledger "
                    "WHERE campaign_id = %s GROUP BY 1, 2, 3 ORDER BY 2, 1, 3",
                    (campaign_id,),
                )
            ]
            cost_row = conn.execute(
                "SELECT coalesce(sum(cost_units), 0) FROM send_ledger WHERE campaign_id = %s",
                (campaign_id,),
            ).fetchone()
        return RunReport(
            campaign_id=campaign_id,
            states=self.states(campaign_id),
            sends=sends,
            dead_letters=dead_letters,
            cost_units=float(str(cost_row[0])) if cost_row else 0.0,
            leads_published=published,
            seconds=seconds,
            first_touch_seconds=first_touch_seconds,
        )
