"""The fault scenarios: each runs one campaign under a fault and returns a result row.

Every scenario is ``async def scenario(lab, size) -> ScenarioResult`` (see
:mod:`chaos.lab`), registered in :data:`SCENARIOS` under its table name.
The ``size`` scales it: :meth:`Size.ci` for the test suite (a few hundred
leads), :meth:`Size.full` for ``make chaos`` (10,000 leads, 20 worker kills,
3 broker restarts). After the faults, each waits until every lead has ended
(or gives up with a note) and checks I1-I5 and W with the workers still
running; some add checks of their own (dead letters of poison input, group
membership on scale-out).
"""

from __future__ import annotations

import asyncio
import http.client
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections import Counter
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import replace
from datetime import UTC, datetime
from typing import Any

from confluent_kafka import Consumer, Producer, TopicPartition

from agents.faults import POINTS
from chaos.lab import Lab, ScenarioResult, Session, Size, skipped
from sinks.campaigns import CampaignStore
from streams.codec import AvroCodec
from streams.dead_letters import DeadLetter, read_dead_letters
from streams.dlq import DeadLetterFilter, redrive, select_dead_letters
from streams.errors import LeadflowError
from streams.invariants import Check
from streams.lag import group_member_count, worker_group
from streams.leadgen import generate
from streams.schema_examples import example_record
from streams.topics import by_name

__all__ = ["SCENARIOS", "Scenario", "fault_point_wired", "run_scenario"]

Scenario = Callable[[Lab, Size], Awaitable[ScenarioResult]]

#: Every scenario by its short name (``--only``), in table order.
SCENARIOS: dict[str, Scenario] = {}

#: When each named point fires: per-call points late enough that sends are
#: flowing, per-batch points on an early batch.
_POINT_SPECS = {
    "before_provider_call": "before_provider_call:3",
    "after_provider_accept": "after_provider_accept:2",
    "after_ledger_commit": "after_ledger_commit:2",
}
_POISON_TOPICS = ("raw", "enriched", "scored", "touch-due", "sent", "inbound")
_BIG = 1_200_000  # bytes: over Kafka's and aiokafka's 1 MB defaults
_RAISING_LEAD = "poison-lead-raise"


def scenario(name: str) -> Callable[[Scenario], Scenario]:
    """Register a scenario under ``name``."""

    def register(fn: Scenario) -> Scenario:
        SCENARIOS[name] = fn
        return fn

    return register


async def run_scenario(name: str, lab: Lab, size: Size) -> ScenarioResult:
    """Run one scenario; an error running it becomes a failed row, never a crash."""
    started = time.monotonic()
    try:
        return await SCENARIOS[name](lab, size)
    except Exception as exc:  # a failed row for the table; the next scenario still runs
        text = (str(exc).strip().splitlines() or [""])[0][:300]
        check = Check("run", False, 1, f"{type(exc).__name__}: {text}")
        return ScenarioResult(name, [], [check], seconds=time.monotonic() - started)


# --- the control row ----------------------------------------------------------------------


@scenario("baseline")
async def baseline(lab: Lab, size: Size) -> ScenarioResult:
    """No faults: the control row."""
    async with lab.session("baseline", size) as s:
        s.publish()
        await s.finish()
        return await s.result()


# --- workers ------------------------------------------------------------------------------


@scenario("worker-kills")
async def worker_kills(lab: Lab, size: Size) -> ScenarioResult:
    """``kill -9`` a random worker ``size.worker_kills`` times during the campaign."""
    rng = random.Random(20)
    async with lab.session("worker-kills", size, workers=max(2, size.workers)) as s:
        s.publish()
        await s.wait_sent(1)
        for _ in range(size.worker_kills):
            await asyncio.sleep(rng.uniform(0.5, 2.5))
            s.watch()
            index = s.harness.kill_random_worker(signal.SIGKILL)
            await asyncio.sleep(rng.uniform(0.0, 1.0))
            s.harness.restart_worker(index)
        await s.finish()
        return await s.result("worker kill -9")


def fault_point_wired(point: str, env: Mapping[str, str]) -> bool:
    """True when the worker started with ``env`` would call ``fault_point(point)``."""
    return f'fault_point("{point}")' in _worker_source("agents.send", env)


def raise_point_wired(env: Mapping[str, str]) -> bool:
    """True when the worker's stage runner calls ``raise_point``."""
    return "raise_point(" in _worker_source("agents.runtime", env)


def _worker_source(module: str, env: Mapping[str, str]) -> str:
    """The source of ``module`` as a worker started with ``env`` would import it."""
    probe = subprocess.run(
        [
            sys.executable,
            "-c",
            f"import importlib.util as u; print(u.find_spec({module!r}).origin)",
        ],
        env=dict(env),
        cwd=tempfile.gettempdir(),  # as the workers: not the checkout first on sys.path
        capture_output=True,
        text=True,
        check=False,
    )
    path = probe.stdout.strip()
    if probe.returncode != 0 or not path:
        return ""
    with open(path, encoding="utf-8") as fh:  # noqa: PTH123 - a path printed by the probe
        return fh.read()


def _named_point(point: str) -> Scenario:
    async def run(lab: Lab, size: Size) -> ScenarioResult:
        title = f"kill at {point}"
        if not fault_point_wired(point, lab.env):
            return skipped(title, f'agents/send.py does not call fault_point("{point}") yet')
        async with lab.session(f"point-{point.replace('_', '-')}", size, workers=0) as s:
            s.run.start_worker(0, {"LEADFLOW_FAULT_POINT": _POINT_SPECS[point]})
            s.expected_exits[0] = point
            s.publish()
            status = await s.harness.wait_worker_exit(0, size.finish_timeout_s / 2)
            if status is None:
                s.notes.append(f"the worker never reached {point} (still running)")
                s.harness.kill_worker(0, signal.SIGKILL)
            else:
                s.harness.log.append(f"worker kill -9 at {point}")
                if status != -signal.SIGKILL:
                    s.notes.append(f"the worker exited with {status}, not SIGKILL")
            s.expected_exits.pop(0, None)
            s.figures["sends when killed"] = await s.sent()
            s.run.start_worker(0)
            await s.finish()
            result = await s.result(title)
            reconcile = s.states().get("reconcile", 0)
            result.figures["leads in reconcile"] = reconcile
            return result

    return run


for _point in sorted(POINTS):
    scenario(f"point-{_point.replace('_', '-')}")(_named_point(_point))


@scenario("sigterm")
async def sigterm_mid_batch(lab: Lab, size: Size) -> ScenarioResult:
    """SIGTERM the worker while a slow provider keeps a batch of sends in flight."""
    slow = {"latency": {"dist": "uniform", "min_ms": 150, "max_ms": 600}}
    sim = {"endpoints": {"sms": slow, "voice": slow}}
    async with lab.session("sigterm", size, workers=1, sim=sim) as s:
        s.publish()
        await s.wait_sent(max(5, size.leads // 10))
        s.figures["seconds to stop"] = s.harness.kill_worker(0, signal.SIGTERM)
        s.figures["sends at stop"] = await s.sent()
        forced = s.harness.forced
        s.run.start_worker(0)
        await s.finish()
        result = await s.result("SIGTERM mid-batch")
        result.checks.append(_graceful(forced))
        return result


def _graceful(forced: int) -> Check:
    """S: every SIGTERM'd worker exited by itself within 25 s.

    One that ended its own stop at LEADFLOW_STOP_TIMEOUT_S (status 70) did;
    the harness notes each such stop and the stacks are in its log.
    """
    return Check("S", forced == 0, forced, "SIGTERM'd workers still running 25 s later (killed -9)")


@scenario("state-rebuild")
async def table_state_deleted(lab: Lab, size: Size) -> ScenarioResult:
    """``kill -9``, delete the worker's local state, restart: rebuilt from the changelog.

    Done mid-campaign and again after it ended; the second restart must send
    nothing.
    """
    async with lab.session("state-rebuild", size, workers=1) as s:
        s.publish()
        await s.wait_sent(max(5, size.leads // 2))
        _restart_without_state(s)
        await s.finish()
        before = {m["seq"] for m in await s.messages()}
        _restart_without_state(s)
        # The last restart rebuilt the table (lag 0 again) and sent no campaign touch.
        result = await s.result("table state deleted")
        after = [m for m in await s.messages() if m["seq"] not in before]
        # Touch 0 is the one confirmation an opt-out is owed: STOP replies keep
        # arriving after the last lead ended, and are confirmed after the restart.
        touches = sum(1 for m in after if int(m["touch"]) > 0)
        confirmations = len(after) - touches
        result.checks.append(
            Check(
                "R",
                touches == 0,
                touches,
                "campaign touches sent after a finished campaign's restart",
            )
        )
        if confirmations:
            result.notes.append(
                f"{confirmations} opt-out confirmations sent after the restart (owed)"
            )
        return result


def _restart_without_state(s: Session) -> None:
    s.harness.kill_worker(0, signal.SIGKILL)
    removed = _wipe_local_state(s)
    s.harness.log.append("local table state deleted")
    if removed:
        s.notes.append(f"removed {', '.join(removed)}")
    s.harness.restart_worker(0)


def _wipe_local_state(s: Session) -> list[str]:
    """Delete the worker's data folder (Faust's ``<app id>-data``), if it made one."""
    removed = []
    for path in s.folder.glob("*-data"):
        if path.is_dir():
            shutil.rmtree(path, ignore_errors=True)
            removed.append(path.name)
    return removed


# --- rebalances and scale-out -------------------------------------------------------------


@scenario("storm")
async def rebalance_storm(lab: Lab, size: Size) -> ScenarioResult:
    """Workers join and leave (SIGTERM) every few seconds; worker 0 stays for the webhooks."""
    rng = random.Random(3)
    async with lab.session("storm", size, workers=1) as s:
        s.publish()
        await s.wait_sent(1)
        for _ in range(size.storm_changes):
            await asyncio.sleep(size.storm_every_s)
            s.watch()
            alive = [i for i in s.run.alive() if i != 0]
            free = [i for i in (1, 2) if i not in alive]
            if free and (not alive or rng.random() < 0.5):
                s.harness.restart_worker(free[0])
                s.harness.log.append("worker join")
            else:
                s.harness.kill_worker(rng.choice(alive), signal.SIGTERM)
        forced = s.harness.forced
        if s.harness.overdue:
            s.figures["stops ended at LEADFLOW_STOP_TIMEOUT_S"] = s.harness.overdue
        await s.finish()
        result = await s.result("rebalance storm")
        result.checks.append(_graceful(forced))
        return result


def _scale_out(workers: int) -> Scenario:
    async def run(lab: Lab, size: Size) -> ScenarioResult:
        async with lab.session(f"scale-{workers}", size, workers=workers) as s:
            s.publish()

            def scheduled() -> bool:
                states = s.states()
                waiting = sum(states.get(x, 0) for x in ("new", "enriched", "qualified"))
                return sum(states.values()) >= s.published and waiting == 0

            await s.wait_sent(1)
            members = await asyncio.to_thread(
                group_member_count, s.settings.bootstrap_servers, worker_group(s.settings)
            )
            await s.wait_for("every lead in its sequence", scheduled)
            to_sequence = time.monotonic() - s.started
            await s.finish()
            result = await s.result(f"scale-out {workers} worker{'s' if workers > 1 else ''}")
            result.figures["leads/s raw -> in sequence"] = s.published / max(to_sequence, 1e-3)
            result.figures["seconds to end"] = s.figures.get("seconds to end", 0.0)
            result.checks.append(
                Check(
                    "P",
                    members == workers,
                    members,
                    f"consumer group members sharing the partitions (want {workers})",
                )
            )
            return result

    return run


for _n in (1, 2, 3):
    scenario(f"scale-{_n}")(_scale_out(_n))


# --- the broker and Postgres --------------------------------------------------------------


@scenario("broker")
async def broker_kills(lab: Lab, size: Size) -> ScenarioResult:
    """``kill -9`` the broker and restart it, ``size.broker_restarts`` times."""
    # A restart takes the broker half a minute or more: a slower clock keeps
    # the campaign inside the day's send window meanwhile.
    size = replace(size, time_scale=min(size.time_scale, 150.0))
    async with lab.session("broker", size) as s:
        if lab.infra.uses_external_kafka:
            return skipped("broker kill -9", "an external Kafka is configured")
        s.publish()
        await s.wait_sent(max(5, size.leads // 10))
        for _ in range(size.broker_restarts):
            before = await s.sent()
            try:
                await s.harness.kill_broker()
                await asyncio.sleep(2.0)
            finally:
                took = await s.harness.start_broker()
            s.figures["seconds to restart the broker"] = took
            await s.wait_for("sends to resume", _more_sent(s, before), timeout=90)
        await s.finish()
        return await s.result("broker kill -9")


@scenario("postgres")
async def postgres_restart(lab: Lab, size: Size) -> ScenarioResult:
    """Stop Postgres for a few seconds mid-campaign and start it again."""
    async with lab.session("postgres", size) as s:
        if lab.infra.uses_external_database:
            return skipped("postgres restart", "an external Postgres is configured")
        s.publish()
        await s.wait_sent(max(5, size.leads // 10))
        s.figures["seconds Postgres was down"] = await s.harness.restart_postgres(down_s=3.0)
        await s.finish()
        return await s.result("postgres restart")


def _more_sent(s: Session, than: int) -> Callable[[], Awaitable[bool]]:
    async def ready() -> bool:
        return await s.sent() > than

    return ready


# --- the provider -------------------------------------------------------------------------


@scenario("outage")
async def provider_outage(lab: Lab, size: Size) -> ScenarioResult:
    """SMS and voice answer 503 for a while mid-campaign."""
    async with lab.session("outage", size) as s:
        s.publish()
        await s.wait_sent(max(5, size.leads // 10))
        seconds = 5.0 if size.leads < 2000 else 30.0
        await s.harness.sim_endpoints(
            ("sms", "voice"), f"provider outage {seconds:.0f} s", outage_for_s=seconds
        )
        await s.finish()
        return await s.result("provider outage")


@scenario("errors")
async def provider_errors(lab: Lab, size: Size) -> ScenarioResult:
    """Bursts of 500s (half the calls fail) on SMS and voice."""
    async with lab.session("errors", size) as s:
        s.publish()
        await s.wait_sent(max(5, size.leads // 10))
        for _ in range(2 if size.leads < 2000 else 5):
            await s.harness.sim_endpoints(("sms", "voice"), "5xx burst", error_rate=0.5)
            await asyncio.sleep(2.0)
            await s.harness.sim_endpoints(("sms", "voice"), "", error_rate=0.0)
            await asyncio.sleep(2.0)
        await s.finish()
        result = await s.result("provider 5xx bursts")
        result.figures["leads quarantined"] = s.states().get("quarantined", 0)
        return result


@scenario("timeouts")
async def provider_timeouts(lab: Lab, size: Size) -> ScenarioResult:
    """A share of SMS and voice calls hang past the worker's call timeout."""
    sim = {"endpoints": {c: {"timeout_rate": 0.05, "timeout_s": 3} for c in ("sms", "voice")}}
    env = {"LEADFLOW_PROVIDER_TIMEOUT_S": "1"}
    async with lab.session("timeouts", size, sim=sim, worker_env=env) as s:
        s.harness.log.append("5% of calls hang 3 s (timeout 1 s)")
        s.publish()
        await s.finish()
        result = await s.result("provider timeouts")
        result.figures["leads in reconcile"] = s.states().get("reconcile", 0)
        return result


@scenario("drop")
async def accept_then_drop(lab: Lab, size: Size) -> ScenarioResult:
    """The provider accepts 5 % of SMS and voice calls and then drops the answer."""
    sim = {"endpoints": {c: {"drop_after_accept_rate": 0.05} for c in ("sms", "voice")}}
    async with lab.session("drop", size, sim=sim) as s:
        s.harness.log.append("5% accepted then dropped")
        s.publish()
        await s.finish()
        result = await s.result("accept-then-drop")
        dropped = [
            (str(m["lead_id"]), int(m["touch"]))
            for m in await s.messages()
            if m.get("response_lost") and int(m["touch"]) >= 1
        ]
        ledger = await asyncio.to_thread(_ledger_status, s, dropped)
        wrong = sorted(k for k in dropped if ledger.get(k) != "ambiguous")
        result.figures["answers dropped"] = len(dropped)
        result.figures["leads in reconcile"] = s.states().get("reconcile", 0)
        # A dropped answer is an unknown outcome: recorded as ambiguous, never re-sent.
        result.checks.append(
            Check(
                "R",
                not wrong,
                len(wrong),
                f"dropped answers not recorded as ambiguous, of {len(dropped)}"
                + (f": {[(k, ledger.get(k)) for k in wrong[:3]]}" if wrong else ""),
            )
        )
        return result


def _ledger_status(s: Session, keys: list[tuple[str, int]]) -> dict[tuple[str, int], str]:
    import psycopg

    with psycopg.connect(s.dsn) as conn:
        rows = conn.execute(
            "SELECT lead_id, touch, status FROM send_ledger WHERE campaign_id = %s",
            (s.campaign_id,),
        ).fetchall()
    wanted = set(keys)
    return {
        (str(lead), int(str(t))): str(st)
        for lead, t, st in rows
        if (str(lead), int(str(t))) in wanted
    }


@scenario("slow")
async def slow_provider(lab: Lab, size: Size) -> ScenarioResult:
    """Every SMS and voice call takes 1.5 s: past Faust's processing timeout (1 s here)."""
    sim = {"endpoints": {c: {"latency": 1500} for c in ("sms", "voice")}}
    env = {"STREAM_PROCESSING_TIMEOUT": "1", "BROKER_MAX_POLL_INTERVAL": "5"}
    async with lab.session("slow", size, sim=sim, worker_env=env) as s:
        s.harness.log.append("1.5 s per call; processing timeout 1 s, max poll 5 s")
        s.publish()
        await s.finish()
        return await s.result("slow provider")


# --- input --------------------------------------------------------------------------------


@scenario("poison")
async def poison_input(lab: Lab, size: Size) -> ScenarioResult:
    """Bad bytes, wrong schemas, null keys into every topic; odd names; a raising stage."""
    return await _poison(lab, size, oversize=False)


@scenario("oversize")
async def oversize_input(lab: Lab, size: Size) -> ScenarioResult:
    """A message of more than 1 MB into every topic (and a lead with a 1.2 MB name)."""
    return await _poison(lab, size, oversize=True)


async def _poison(lab: Lab, size: Size, *, oversize: bool) -> ScenarioResult:
    title = "over-1MB input" if oversize else "poison input"
    raising = not oversize and raise_point_wired(lab.env)
    env = {"LEADFLOW_FAULT_RAISE": f"schedule:{_RAISING_LEAD}"} if raising else {}
    async with lab.session("oversize" if oversize else "poison", size, worker_env=env) as s:
        if not oversize and not raising:
            s.notes.append("the stage runner does not call raise_point yet: no raising stage")
        s.publish()
        await s.wait_sent(1)
        leads, byte_poison = await asyncio.to_thread(_publish_poison, s, oversize, raising)
        s.harness.log += [f"{len(byte_poison)} poison records", f"{len(leads)} odd leads"]
        s.accepted += leads
        s.published += len(leads)
        await s.finish()
        result = await s.result(title)
        dead = await asyncio.to_thread(read_dead_letters, s.settings)
        keys = Counter(bytes(d["original_key"] or b"") for d in dead)
        missing = sorted(k.decode() for k in byte_poison if not keys[k])
        result.figures["dead letters"] = len(dead)
        result.checks.append(
            Check(
                "DL",
                not missing,
                len(missing),
                f"poison records without a dead letter, of {len(byte_poison)}"
                + (f": {', '.join(missing[:6])}" if missing else ""),
            )
        )
        final = await asyncio.to_thread(_final_states, s, leads)
        result.notes.append(f"odd leads ended as {final}")
        return result


def _publish_poison(s: Session, oversize: bool, raising: bool) -> tuple[list[str], list[bytes]]:
    """Produce the poison; returns the lead ids published to ``raw`` and the byte-poison keys."""
    producer = Producer(
        {
            "bootstrap.servers": s.settings.bootstrap_servers,
            "partitioner": "murmur2_random",
            "compression.type": "lz4",
            "message.max.bytes": 8_000_000,
        }
    )
    raw = AvroCodec("leadflow.RawLead")
    now = datetime.now(UTC)
    byte_poison: list[bytes] = []
    leads: list[str] = []

    def produce(base: str, key: bytes | None, value: bytes) -> None:
        producer.produce(s.settings.topic_name(base), key=key, value=value)

    for base in _POISON_TOPICS:
        codec = AvroCodec(by_name(base).value_schema)
        if oversize:
            key = f"poison-{base}-big".encode()
            produce(base, key, b"x" * _BIG)
            byte_poison.append(key)
            continue
        other = AvroCodec("leadflow.TouchSent" if base != "sent" else "leadflow.RawLead")
        wrong = other.encode(_example(other, f"poison-{base}-wrong", s.campaign_id))
        for kind, value in (
            ("bytes", b'{"not": "avro"}'),
            ("wrong", wrong),
            ("truncated", codec.header + b"\x02"),
        ):
            key = f"poison-{base}-{kind}".encode()
            produce(base, key, value)
            byte_poison.append(key)
        # A null key on a record that otherwise decodes (of no campaign).
        record = _example(codec, f"poison-{base}-nullkey", "no-such-campaign")
        produce(base, None, codec.encode(record))
    if raising:  # the schedule stage raises on this lead's record: one dead letter
        byte_poison.append(_RAISING_LEAD.encode())
    rows = [r for r in generate(40, seed=991) if r["phone"].startswith("+1")]
    odd = (
        [("huge-name", "x" * _BIG, "Big", True, None)]
        if oversize
        else [
            ("emoji", "Zoë 😀🚀", "O'Brien\u200d👩\u200d💻", True, None),
            ("rtl", "\u202eenaJ\u202c", "עברית", True, None),
            ("arabic", "شركة", "\u200fمحمد\u200f", True, None),
            ("zero-width", "An\u200ba", "\ufeffSmith\u200d", True, None),
            ("bad-phone", "Bad", "Phone", False, "12345"),
            ("phone-16", "Long", "Phone", False, "+1234567890123456"),
            ("phone-16-email", "Long", "Mail", True, "+1234567890123456"),
            ("null-key", "Null", "Key", True, None),
            ("mis-keyed", "Mis", "Keyed", True, None),
            *([("raise", "Rai", "Ser", True, None)] if raising else []),
        ]
    )
    for (kind, first, last, with_email, phone), row in zip(odd, rows[: len(odd)], strict=True):
        lead_id = f"poison-lead-{kind}"
        record = {
            "campaign_id": s.campaign_id,
            "lead_id": lead_id,
            "first_name": first,
            "last_name": last,
            "email": f"{kind}.{uuid.uuid4().hex[:6]}@chaos.example" if with_email else None,
            "phone": phone or row["phone"],
            "company": "Ünïcode ☃ Co",
            "title": "Owner",
            "timezone": None,
            "country": "US",
            "state": row["state"],
            "attributes": {},
            "event_time": now,
            "source": "api",
            "source_line": None,
        }
        lead_key: bytes | None = lead_id.encode()
        if kind == "null-key":
            lead_key = None
        elif kind == "mis-keyed":
            lead_key = _key_elsewhere(lead_id, s.settings.topic_partitions)
        produce("raw", lead_key, raw.encode(record))
        if kind == "huge-name":  # over LEADFLOW_MAX_RECORD_BYTES: refused at the door,
            byte_poison.append(lead_key or b"")  # a dead letter and no lead (not accepted)
        else:
            leads.append(lead_id)
    remaining = producer.flush(30)
    if remaining:
        raise LeadflowError(f"{remaining} poison records were not delivered")
    return leads, byte_poison


def _key_elsewhere(lead_id: str, partitions: int) -> bytes:
    """A Kafka key that hashes (murmur2, as producers do) to another partition than the lead's."""
    from aiokafka.partitioner import murmur2

    def partition(key: bytes) -> int:
        return int(murmur2(key) & 0x7FFFFFFF) % partitions

    home = partition(lead_id.encode())
    for n in range(100):
        key = f"{lead_id}-{n}".encode()
        if partition(key) != home:
            return key
    return b"elsewhere"


def _example(codec: AvroCodec, lead_id: str, campaign_id: str) -> dict[str, Any]:
    record = example_record(codec.schema, lead_id)
    if "campaign_id" in record:
        record["campaign_id"] = campaign_id
    return record


def _final_states(s: Session, leads: list[str]) -> dict[str, str]:
    import psycopg

    with psycopg.connect(s.dsn) as conn:
        rows = conn.execute(
            "SELECT lead_id, state FROM leads WHERE campaign_id = %s AND lead_id = ANY(%s)",
            (s.campaign_id, leads),
        ).fetchall()
    found = {str(lead): str(state) for lead, state in rows}
    return {lead.removeprefix("poison-lead-"): found.get(lead, "(none)") for lead in leads}


# --- opt-outs -----------------------------------------------------------------------------


@scenario("optout-race")
async def opt_out_race(lab: Lab, size: Size) -> ScenarioResult:
    """A STOP fired the moment a lead's next touch appears on ``touch-due``."""
    sim = {"webhooks": {"reply_rate": 0.0, "opt_out_rate": 0.0}}
    async with lab.session("optout-race", size, workers=1, sim=sim) as s:
        ids = s.publish()
        targets = set(ids[::4])
        watcher = _RaceWatcher(s, targets)
        watcher.start()
        try:
            await s.finish()
        finally:
            watcher.stop()
        s.harness.log.append(f"{len(watcher.fired)} opt-outs racing touch-due")
        result = await s.result("opt-out races touch-due")
        gaps = sorted(watcher.gaps_ms)
        if gaps:
            result.figures["median ms touch-due -> STOP sent"] = gaps[len(gaps) // 2]
        result.figures["STOPs fired"] = len(watcher.fired)
        if watcher.errors:
            result.notes.append(f"trigger errors: {watcher.errors[:3]}")
        return result


class _RaceWatcher(threading.Thread):
    """Reads ``touch-due``; fires a STOP for a target lead as soon as its touch 2+ appears."""

    def __init__(self, s: Session, targets: set[str]) -> None:
        super().__init__(daemon=True, name="opt-out-race")
        self.session = s
        self.targets = targets
        self.fired: set[str] = set()
        self.gaps_ms: list[float] = []
        self.errors: list[str] = []
        self._stop_event = threading.Event()

    def stop(self) -> None:
        """Stop reading and wait for the thread."""
        self._stop_event.set()
        self.join(10)

    def run(self) -> None:
        """Consume and fire until stopped."""
        s = self.session
        topic = s.settings.topic_name("touch-due")
        codec = AvroCodec("leadflow.TouchDue")
        consumer = Consumer(
            {
                "bootstrap.servers": s.settings.bootstrap_servers,
                "group.id": f"chaos-race-{uuid.uuid4().hex[:8]}",
                "enable.auto.commit": False,
                "fetch.wait.max.ms": 5,
            }
        )
        host, _, port = s.run.sim_url.removeprefix("http://").partition(":")
        conn = http.client.HTTPConnection(host, int(port), timeout=10)
        try:
            meta = consumer.list_topics(topic, timeout=10).topics[topic]
            consumer.assign([TopicPartition(topic, p, 0) for p in meta.partitions])
            while not self._stop_event.is_set():
                msg = consumer.poll(0.05)
                if msg is None or msg.error():
                    continue
                try:
                    record = codec.decode(msg.value() or b"")
                except LeadflowError:
                    continue
                lead = str(record["lead_id"])
                if lead not in self.targets or lead in self.fired or int(record["touch"]) < 2:
                    continue
                self.fired.add(lead)
                self._fire(conn, lead)
                stamp = msg.timestamp()[1]
                self.gaps_ms.append(time.time() * 1000 - stamp)
        finally:
            consumer.close()
            conn.close()

    def _fire(self, conn: http.client.HTTPConnection, lead: str) -> None:
        body = json.dumps(
            {
                "kind": "opt_out",
                "campaign_id": self.session.campaign_id,
                "lead_id": lead,
                "body": "STOP",
                "wait": False,
            }
        )
        try:
            conn.request(
                "POST", "/_sim/webhooks/trigger", body, {"Content-Type": "application/json"}
            )
            resp = conn.getresponse()
            resp.read()
            if resp.status >= 300:
                self.errors.append(f"{resp.status}")
        except (OSError, http.client.HTTPException) as exc:
            self.errors.append(type(exc).__name__)
            conn.close()


# --- dead letters -------------------------------------------------------------------------


@scenario("redrive")
async def redrive_twice(lab: Lab, size: Size) -> ScenarioResult:
    """Leads published before their campaign existed are dead-lettered; once it is
    stored their dead letters are redriven twice (the second time with ``--again``,
    so every record really arrives twice): each lead goes through once, no one is
    contacted twice (I1), and every lead ends (I2)."""
    async with lab.session("redrive", size, create_campaign=False) as s:
        s.publish()
        unknown = DeadLetterFilter(
            reasons=frozenset({"unknown_campaign"}), campaigns=frozenset({s.campaign_id})
        )
        dead: list[DeadLetter] = []

        async def all_dead_lettered() -> bool:
            # Count leads, not records: a record read again after a rebalance is
            # dead-lettered again, and counting records once ended the wait with
            # 1,158 leads not yet dead-lettered (never redriven, so never seen).
            nonlocal dead
            dead = await asyncio.to_thread(select_dead_letters, s.settings, unknown)
            return len({d.lead_id for d in dead}) >= s.published

        await s.wait_for("every lead to be dead-lettered", all_dead_lettered)
        await asyncio.to_thread(CampaignStore(s.dsn).create, s.campaign)
        await asyncio.sleep(2.0)  # the stages' campaign caches refresh every second
        first = await asyncio.to_thread(redrive, s.settings, dead, rate=5_000.0)
        second = await asyncio.to_thread(redrive, s.settings, dead, rate=5_000.0, again=True)
        s.harness.log += ["dlq redrive", "dlq redrive --again"]
        await s.finish()
        result = await s.result("dead-letter redrive twice")
        result.figures["redriven, first run"] = first.total
        result.figures["redriven, second run"] = second.total
        wrong = abs(first.total - len(dead)) + abs(second.total - len(dead))
        result.checks.append(
            Check("RD", wrong == 0, wrong, f"dead letters not redriven both times, of {len(dead)}")
        )
        return result


def available() -> list[str]:
    """Scenario names, in table order."""
    return list(SCENARIOS)


def environ_with(extra: Mapping[str, str]) -> dict[str, str]:
    """This process's environment plus ``extra``."""
    return {**os.environ, **extra}
