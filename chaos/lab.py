"""Where a fault scenario runs: one campaign on its own topics, database, simulator and workers.

:class:`Lab` holds what every scenario shares (the local services, the
environment for child processes, a folder for logs). :meth:`Lab.session`
sets up one campaign run and tears it down:

- a campaign id, a topic prefix and a fresh migrated database of its own (so
  its campaign clock starts on a Monday at 11:00 in New York, 08:00 in Los
  Angeles, with every US zone inside its send window for nine hours);
- the short chaos campaign (:func:`chaos_campaign`: SMS, voice +10 min,
  SMS +10 min, email +20 min; every lead qualifies);
- ``leadflow sim`` with replies and opt-outs of its own, and the workers.

A :class:`Session` publishes the leads, waits for progress, injects faults
through its :class:`~chaos.harness.FaultHarness`, waits until every lead has
ended, and checks the invariants into a :class:`ScenarioResult`.
"""

from __future__ import annotations

import asyncio
import contextlib
import csv
import json
import signal
import time
import uuid
from collections import Counter
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import aiohttp
import psycopg

from chaos.harness import ChaosError, ChaosRun, FaultHarness, describe_exit
from chaos.invariants import INVARIANTS, check_all
from chaos.log_digest import digest
from sinks.campaigns import CampaignStore
from sinks.migrate import apply_migrations
from streams.admin import admin_client, ensure_topics
from streams.campaign import Campaign, parse_campaign
from streams.infra.postgres import LocalPostgres
from streams.ingest import ingest_file
from streams.invariants import Check
from streams.leadgen import LeadMix, write_csv
from streams.settings import Settings

__all__ = [
    "CLOCK_START",
    "Lab",
    "ScenarioResult",
    "Session",
    "Size",
    "chaos_campaign",
    "lines_of",
    "skipped",
]

#: Monday 2026-11-30 11:00 in New York, 08:00 in Los Angeles: every US zone's
#: 08:00-21:00 window (20:00 in Florida) is open for the next nine hours.
CLOCK_START = "2026-11-30T16:00:00+00:00"
_OPEN_STATES = ("new", "enriched", "qualified", "in_sequence")

#: Worker settings of the CI size (see :attr:`Size.worker_env`).
FAST_RECOVERY: Mapping[str, str] = {
    "LEADFLOW_GROUP_SESSION_TIMEOUT_S": "10",
    "LEADFLOW_WATCHDOG_STALL_S": "10",
    "LEADFLOW_WATCHDOG_INTERVAL_S": "4",
    "LEADFLOW_SWEEP_AFTER_S": "5",
    "LEADFLOW_SWEEP_INTERVAL_S": "3",
}


@dataclass(frozen=True)
class Size:
    """How big a scenario run is (CI or the full ``make chaos``)."""

    leads: int = 200
    #: Campaign clock speed: the 40-minute sequence takes 40 * 60 / time_scale s, and
    #: the nine hours every zone's window is open last 9 * 3600 / time_scale s.
    time_scale: float = 300.0
    workers: int = 1
    worker_kills: int = 3
    broker_restarts: int = 1
    #: Rebalance storm: membership changes, and seconds between them.
    storm_changes: int = 4
    storm_every_s: float = 4.0
    scale_workers: tuple[int, ...] = (1, 2, 3)
    finish_timeout_s: float = 120.0
    #: Stop waiting for the campaign to end when no lead changed state this long.
    stuck_after_s: float = 20.0
    lag_bound_s: float = 20.0
    #: Extra worker environment. The CI size shortens the waits that would make
    #: every killed worker cost a minute: the partition watchdog's stall period
    #: (60 s) and the sweeper's (30 s, every 15 s); the group session timeout
    #: (a worker killed with -9 holds its partitions until it expires) is the
    #: default, 10 s. ``make chaos`` runs the defaults.
    worker_env: Mapping[str, str] = field(
        default_factory=lambda: dict(FAST_RECOVERY), hash=False, compare=False
    )

    @classmethod
    def ci(cls) -> Size:
        """A few hundred leads, a fast clock: each scenario in well under a minute."""
        return cls()

    @classmethod
    def full(cls, leads: int = 10_000) -> Size:
        """``make chaos``: 10,000 leads, 20 worker kills, 3 broker restarts."""
        return cls(
            leads=leads,
            time_scale=40.0,
            workers=2,
            worker_kills=20,
            broker_restarts=3,
            storm_changes=30,
            storm_every_s=5.0,
            finish_timeout_s=1200.0,
            stuck_after_s=240.0,
            lag_bound_s=150.0,
            worker_env={},
        )


def chaos_campaign(campaign_id: str) -> Campaign:
    """The campaign every scenario runs: four touches over 40 minutes; every lead qualifies."""
    return parse_campaign(
        {
            "id": campaign_id,
            "name": "leadflow fault suite",
            "sender": {
                "company": "Brightline Home Services",
                "postal_address": "1200 Commerce Drive, Suite 400, Columbus, OH 43215",
                "unsubscribe_url": "https://brightline.example/unsubscribe/{token}",
                "email_from": "Cathy at Brightline <cathy@brightline.example>",
                "sms_from": "+16145550142",
            },
            "qualification": {"threshold": 0, "tiers": {"A": 80, "B": 60, "C": 0}},
            "send_window": {
                "start": "08:00",
                "end": "21:00",
                "days": ["mon", "tue", "wed", "thu", "fri", "sat"],
            },
            "channels": {
                "sms": {"provider": "http", "rate": None},
                "voice": {"provider": "http", "rate": None},
                "email": {"provider": "smtp", "rate": None},
            },
            "sequence": [
                {
                    "channel": "sms",
                    "delay": "0s",
                    "persona": "gianna",
                    "template": "Hi {first_name}, {persona} from {sender_company} here about "
                    "{company}. Reply STOP to opt out.",
                },
                {
                    "channel": "voice",
                    "delay": "10m",
                    "persona": "gianna",
                    "template": "Hi {first_name}, this is {persona} from {sender_company}.",
                },
                {
                    "channel": "sms",
                    "delay": "10m",
                    "persona": "cathy",
                    "template": "Hi {first_name}, {persona} following up. Reply STOP to opt out.",
                },
                {
                    "channel": "email",
                    "delay": "20m",
                    "persona": "cathy",
                    "subject": "{first_name}, a last note from {sender_company}",
                    "template": "Hi {first_name},\n\nOne last note about {company}.\n\n{persona}",
                },
            ],
        },
        source="chaos campaign",
    )


#: The simulator's behaviour unless a scenario changes it: perfect endpoints,
#: some replies and opt-outs (so I3 has something to check), quick webhooks.
SIM_CONFIG: Mapping[str, Any] = {
    "webhooks": {
        "delivery_rate": 0.9,
        "reply_rate": 0.04,
        "opt_out_rate": 0.04,
        "bounce_rate": 0.02,
        "delay": {"dist": "lognormal", "median_ms": 150, "p99_ms": 1500},
    },
}

#: Worker environment of every scenario: no account rate limits (the simulator
#: has none), short retry backoffs and breaker resets so faults clear quickly.
WORKER_ENV: Mapping[str, str] = {
    "LEADFLOW_SMS_RATE": "0",
    "LEADFLOW_VOICE_RATE": "0",
    "LEADFLOW_EMAIL_RATE": "0",
    "LEADFLOW_ENRICH_RATE": "0",
    "LEADFLOW_PROVIDER_RETRY_BASE_S": "0.2",
    "LEADFLOW_PROVIDER_RETRY_MAX_S": "2",
    "LEADFLOW_BREAKER_RESET_S": "2",
    "LEADFLOW_PROVIDER_TIMEOUT_S": "5",
    # A worker that dies of a signal (SIGSEGV) leaves its Python stack in its log.
    "PYTHONFAULTHANDLER": "1",
}


@dataclass
class ScenarioResult:
    """One row of the fault table: what was done and how each invariant came out."""

    scenario: str
    faults: list[str]
    checks: list[Check]
    leads: int = 0
    seconds: float = 0.0
    notes: list[str] = field(default_factory=list)
    #: Figures a scenario reports besides the invariants (e.g. throughput).
    figures: dict[str, float] = field(default_factory=dict)
    skipped: str | None = None

    @property
    def ok(self) -> bool:
        """Every invariant held (a skipped scenario is not ok or failed: check ``skipped``)."""
        return self.skipped is None and bool(self.checks) and all(c.ok for c in self.checks)

    def check(self, name: str) -> Check | None:
        """The verdict of invariant ``name``."""
        return next((c for c in self.checks if c.name == name), None)

    def fault_summary(self) -> str:
        """The faults, counted: ``3x worker kill -9, broker restart``."""
        counts = Counter(self.faults)
        return ", ".join(f"{n}x {f}" if n > 1 else f for f, n in counts.items()) or "none"

    def cells(self) -> list[str]:
        """Table cells: scenario, faults, each invariant, other checks, leads, seconds."""
        out = [self.scenario, self.fault_summary()]
        for name in INVARIANTS:
            c = self.check(name)
            out.append("skip" if c is None else f"{'pass' if c.ok else 'FAIL'} {c.count}")
        others = [c for c in self.checks if c.name not in INVARIANTS]
        out.append(", ".join(f"{c.name} {'pass' if c.ok else 'FAIL'} {c.count}" for c in others))
        out += [str(self.leads), f"{self.seconds:.0f}"]
        return out

    def report(self) -> str:
        """Every check's line, the notes and the figures (for a failed test's message)."""
        lines = [f"{self.scenario}: faults {self.fault_summary()}"]
        if self.skipped:
            lines.append(f"skipped: {self.skipped}")
        lines += [f"  {c.line()}" for c in self.checks]
        lines += [f"  note: {n}" for n in self.notes]
        lines += [f"  {k}: {v:,.1f}" for k, v in self.figures.items()]
        return "\n".join(lines)


@dataclass
class Lab:
    """What every scenario shares: the services, the child-process environment, a folder."""

    #: Base settings of the runs: topic prefix, database (when it is external).
    settings: Settings
    env: Mapping[str, str]
    workdir: Path
    #: Settings naming the local services (ports, data folders) as started.
    infra: Settings = field(default_factory=Settings.from_env)
    #: Delete each scenario's topics and database when it ends.
    cleanup: bool = True
    worker_log_level: str = "warn"

    @asynccontextmanager
    async def session(
        self,
        name: str,
        size: Size,
        *,
        workers: int | None = None,
        sim: Mapping[str, Any] | None = None,
        worker_env: Mapping[str, str] | None = None,
        create_campaign: bool = True,
    ) -> AsyncIterator[Session]:
        """One campaign run: own topics, database, simulator and ``workers`` workers.

        ``create_campaign=False`` leaves the campaign unstored (its leads are
        dead-lettered as ``unknown_campaign`` until the scenario stores it).
        """
        tag = uuid.uuid4().hex[:6]
        campaign = chaos_campaign(f"chaos-{name}-{tag}")
        dsn, dropper = await asyncio.to_thread(self._database, tag)
        settings = replace(
            self.settings, topic_prefix=f"{self.settings.topic_prefix}c{tag}-", database_url=dsn
        )
        folder = self.workdir / f"{name}-{tag}"
        folder.mkdir(parents=True, exist_ok=True)
        env = {
            **self.env,
            **WORKER_ENV,
            **size.worker_env,
            **(worker_env or {}),
            "LEADFLOW_TOPIC_PREFIX": settings.topic_prefix,
            "LEADFLOW_DATABASE_URL": dsn,
        }
        run = ChaosRun(
            settings,
            folder,
            env,
            time_scale=size.time_scale,
            clock_start=CLOCK_START,
            worker_log_level=self.worker_log_level,
        )
        harness = FaultHarness(run, self.infra)
        live = Session(name, size, settings, campaign, run, harness, folder)
        try:
            await asyncio.to_thread(ensure_topics, settings)
            if create_campaign:
                await asyncio.to_thread(CampaignStore(dsn).create, campaign)
            config = _merge(
                {"seed": 11, "time_scale": size.time_scale}, _merge(SIM_CONFIG, sim or {})
            )
            (folder / "sim.json").write_text(json.dumps(config))
            await run.start_sim(["--config", str(folder / "sim.json")])
            for _ in range(size.workers if workers is None else workers):
                run.start_worker()
            yield live
        finally:
            for index in run.alive():  # evidence is in: a stuck shutdown only costs time
                harness.kill_worker(index, signal.SIGTERM, timeout=10)
            run.close()
            with contextlib.suppress(ChaosError):
                harness.ensure_services()
            if self.cleanup:
                with contextlib.suppress(Exception):  # best effort: never hide the result
                    await asyncio.to_thread(_delete_topics, settings)
                with contextlib.suppress(Exception):
                    await asyncio.to_thread(dropper)

    def _database(self, tag: str) -> tuple[str, Callable[[], None]]:
        """A fresh migrated database (or the configured one when it is external)."""
        if self.infra.uses_external_database:
            return self.settings.dsn, lambda: None
        pg = LocalPostgres(self.infra)
        name = f"leadflow_chaos_{tag}"
        dsn = pg.create_database(name)
        apply_migrations(dsn)
        return dsn, lambda: pg.drop_database(name)


@dataclass
class Session:
    """One campaign run under faults (see :meth:`Lab.session`)."""

    name: str
    size: Size
    settings: Settings
    campaign: Campaign
    run: ChaosRun
    harness: FaultHarness
    folder: Path
    accepted: list[str] = field(default_factory=list)
    published: int = 0
    started: float = field(default_factory=time.monotonic)
    notes: list[str] = field(default_factory=list)
    figures: dict[str, float] = field(default_factory=dict)
    #: Workers expected to die by themselves (an armed fault point): index -> reason.
    expected_exits: dict[int, str] = field(default_factory=dict)
    finished: bool = False

    @property
    def campaign_id(self) -> str:
        """The session's campaign id."""
        return self.campaign.id

    @property
    def dsn(self) -> str:
        """The session's database."""
        return self.settings.dsn

    # --- input -------------------------------------------------------------------------

    def publish(self, leads: int | None = None, seed: int = 7) -> list[str]:
        """Generate and publish the leads (2 % invalid, 2 % duplicates); their ids."""
        n = self.size.leads if leads is None else leads
        path = write_csv(self.folder / f"leads-{seed}.csv", n, seed=seed, mix=LeadMix(0.02, 0.02))
        self.started = time.monotonic()
        summary = ingest_file(self.settings, self.campaign_id, path)
        rejected: set[int] = set()
        if summary.rejects_file is not None and summary.rejects_file.exists():
            rejected = {
                int(json.loads(line)["line"])
                for line in summary.rejects_file.read_text().splitlines()
            }
        with path.open(newline="") as fh:
            ids = [
                row["lead_id"]
                for n, row in enumerate(csv.DictReader(fh), start=2)
                if n not in rejected
            ]
        self.accepted += ids
        self.published += summary.published
        return ids

    # --- watching ----------------------------------------------------------------------

    def states(self) -> Counter[str]:
        """Leads by state (Postgres)."""
        return self.run.states(self.campaign_id)

    async def sent(self) -> int:
        """Messages the simulator accepted for this campaign so far."""
        stats = await self.harness.sim_stats()
        return int(stats.get("messages", {}).get("total", 0))

    async def messages(self) -> list[dict[str, Any]]:
        """The simulator's accepted messages of this campaign."""
        async with aiohttp.ClientSession() as http:
            return await self.run.messages(http, self.campaign_id)

    def watch(self) -> None:
        """Note workers that died unexpectedly, and restart them (a crash is a finding)."""
        for index, status in self.run.exited():
            if index in self.expected_exits:
                continue
            tail = _log_tail(self.folder / f"worker{index}.log")
            self.notes.append(f"worker {index} died unexpectedly ({describe_exit(status)}): {tail}")
            self.run.start_worker(index)

    async def wait_for(
        self, what: str, ready: Callable[[], Any], timeout: float | None = None
    ) -> bool:
        """Poll ``ready()`` (sync or async) until true; False (and a note) on timeout."""
        deadline = time.monotonic() + (timeout or self.size.finish_timeout_s)
        while time.monotonic() < deadline:
            self.watch()
            try:
                value = ready()
                if asyncio.iscoroutine(value):
                    value = await value
            except (psycopg.Error, aiohttp.ClientError):
                value = False  # Postgres or the simulator restarting: ask again
            if value:
                return True
            await asyncio.sleep(0.25)
        self.notes.append(f"timed out waiting for {what}: {dict(self.states())}")
        return False

    async def wait_sent(self, n: int, timeout: float | None = None) -> bool:
        """Wait until the simulator accepted ``n`` messages of the campaign."""

        async def enough() -> bool:
            return await self.sent() >= n

        return await self.wait_for(f"{n} sends", enough, timeout)

    def done(self) -> bool:
        """Every published lead has left the open states."""
        states = self.states()
        still_open = sum(states.get(s, 0) for s in _OPEN_STATES)
        return sum(states.values()) >= self.published and still_open == 0

    async def finish(self, timeout: float | None = None) -> bool:
        """Wait until every lead has ended (False, with a note, when it does not).

        Gives up early when no lead has changed state for ``size.stuck_after_s``.
        """
        last: tuple[Counter[str], float] = (Counter(), time.monotonic())

        def ended() -> bool:
            nonlocal last
            states = self.states()
            if states != last[0]:
                last = (states, time.monotonic())
            elif time.monotonic() - last[1] > self.size.stuck_after_s:
                raise _Stuck(states)
            still_open = sum(states.get(s, 0) for s in _OPEN_STATES)
            return sum(states.values()) >= self.published and still_open == 0

        try:
            self.finished = await self.wait_for("every lead to end", ended, timeout)
        except _Stuck as stuck:
            self.finished = False
            self.notes.append(
                f"no lead changed state for {self.size.stuck_after_s:.0f} s: {dict(stuck.states)}"
            )
        self.figures.setdefault("seconds to end", time.monotonic() - self.started)
        return self.finished

    # --- verdict -----------------------------------------------------------------------

    async def result(self, scenario: str | None = None) -> ScenarioResult:
        """Check every invariant (workers still running) into a result row."""
        self.watch()
        for index in self.run.alive():
            self.expected_exits.pop(index, None)
        if not self.run.alive():
            self.run.start_worker(0)  # I4 needs a consumer to drain what is left
        messages = await self.messages()
        # A campaign that got stuck fails I2 already; I4 then only needs a short look.
        bound = self.size.lag_bound_s if self.finished else min(self.size.lag_bound_s, 5.0)
        checks = await check_all(
            self.settings,
            self.campaign_id,
            messages,
            accepted_leads=self.accepted,
            lag_bound_s=bound,
        )
        if any(c.name == "I4" and not c.ok for c in checks) and self._dump_worker_stacks("I4"):
            await asyncio.sleep(1.0)  # the dump is written before the workers are stopped
        stats = await self.harness.sim_stats()
        dupes = int(stats.get("duplicates", {}).get("total", 0))
        if dupes:
            self.notes.append(f"simulator counted {dupes} duplicate messages")
        nudges = sum(
            path.read_text(errors="replace").count("] stalled for ")
            for path in self.folder.glob("worker*.log")
        )
        if nudges:
            self.figures["watchdog nudges (stalled partitions)"] = nudges
        if not all(c.ok for c in checks):
            # The logs are gone after a CI run; their digest stays in the message.
            self.notes += [f"log: {line}" for line in digest(self.folder.glob("worker*.log"))]
        return ScenarioResult(
            scenario=scenario or self.name,
            faults=list(self.harness.log),
            checks=checks,
            leads=self.published,
            seconds=time.monotonic() - self.started,
            notes=[*self.harness.notes, *self.notes],
            figures=dict(self.figures),
        )

    def _dump_worker_stacks(self, why: str) -> bool:
        """SIGUSR2 every running worker, so its log says where it waits; True if any."""
        dumped = []
        for index in self.run.alive():
            proc = self.run.workers[index]
            if proc is not None:
                with contextlib.suppress(ProcessLookupError):
                    proc.send_signal(signal.SIGUSR2)
                    dumped.append(f"worker{index}.log")
        if dumped:
            self.notes.append(f"{why} failed: stacks of running workers in {', '.join(dumped)}")
        return bool(dumped)


class _Stuck(ChaosError):  # noqa: N818 - a control-flow signal, never raised to callers
    reason = "stuck"

    def __init__(self, states: Counter[str]) -> None:
        super().__init__("no lead changed state")
        self.states = states


def skipped(scenario: str, reason: str) -> ScenarioResult:
    """A result row for a scenario that could not run here."""
    return ScenarioResult(scenario, [], [], skipped=reason)


def _merge(base: Mapping[str, Any], extra: Mapping[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for key, value in extra.items():
        if isinstance(value, Mapping) and isinstance(out.get(key), Mapping):
            out[key] = _merge(out[key], value)
        else:
            out[key] = value
    return out


def _delete_topics(settings: Settings) -> None:
    admin = admin_client(settings)
    names = [t for t in admin.list_topics(timeout=10).topics if t.startswith(settings.topic_prefix)]
    if names:
        for future in admin.delete_topics(names, operation_timeout=30).values():
            with contextlib.suppress(Exception):
                future.result()


def _log_tail(path: Path, chars: int = 600) -> str:
    try:
        text = path.read_text(errors="replace")
    except OSError:
        return "(no log)"
    return " | ".join(text[-chars:].splitlines()[-6:])


def lines_of(results: Sequence[ScenarioResult]) -> list[str]:
    """The results as an aligned text table."""
    head = ["scenario", "faults injected", *INVARIANTS, "other checks", "leads", "s"]
    rows = [
        head,
        *(r.cells() if not r.skipped else [r.scenario, f"skipped: {r.skipped}"] for r in results),
    ]
    widths = [max(len(row[i]) for row in rows if i < len(row)) for i in range(len(head))]
    out = []
    for row in rows:
        if len(row) < len(head):
            out.append(f"{row[0]:<{widths[0]}}  {row[1]}")
            continue
        out.append("  ".join(cell.ljust(widths[i]) for i, cell in enumerate(row)).rstrip())
    return out
