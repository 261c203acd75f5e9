"""One measured run: a leadflow campaign, or a bare-client baseline, over the same four hops.

Each run gets its own topic prefix (``bench-<tag>-``), created from the
catalog and deleted afterwards, and the benchmark's own database (see
:func:`bench_services`), so runs never see each other's data.

A run goes:

1. start the processes (leadflow: ``leadflow sim`` at zero latency with no
   webhooks, and one ``leadflow worker`` with every provider rate limit off;
   baseline: ``python -m bench.baseline <client>``);
2. warm up: 50 leads through to ``sent`` (connections open, caches and
   partitions assigned); they are left out of every figure;
3. produce N encoded ``RawLead`` records, as fast as librdkafka can or paced
   at a given rate, while sampling RSS and CPU of the worker, the simulator,
   the broker and Postgres;
4. wait until every lead's first touch is on ``sent``;
5. read the five topics and measure from the records' create times
   (:mod:`bench.timeline`).

Throughput is leads / seconds from the first ``raw`` record to the last
lead's first-touch ``sent`` record.
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import AsyncIterator, Callable, Iterator, Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import psycopg

from bench.procstat import Sampler, postgres_pids, status_kb
from bench.records import WARMUP_PREFIX, encode_leads, produce
from bench.timeline import Timeline, end_offsets, read_timeline
from sinks.campaigns import CampaignStatus, CampaignStore
from sinks.migrate import apply_migrations
from streams.admin import admin_client, ensure_topics
from streams.campaign import Campaign, load_campaign
from streams.errors import LeadflowError, ServiceStartError
from streams.infra.kafka import LocalKafka
from streams.infra.postgres import LocalPostgres
from streams.orchestrate import LocalRun
from streams.settings import REPO_ROOT, Settings, get_settings
from streams.topics import CATALOG, TopicSpec

__all__ = [
    "BENCH_CAMPAIGN",
    "CLOCK_START",
    "BenchError",
    "BenchServices",
    "LeadflowRun",
    "bench_services",
    "run_baseline",
    "run_leadflow",
    "wait_for_count",
    "wait_for_sent",
]

_log = logging.getLogger("leadflow.bench")

BENCH_DIR = Path(__file__).resolve().parent
BENCH_CAMPAIGN = BENCH_DIR / "campaign.yaml"
SIM_CONFIG = BENCH_DIR / "sim.yaml"
#: A Monday 17:00 UTC: 12:00 in New York, 09:00 in Los Angeles; every zone of
#: the generated leads stays inside 08:00-21:00 (FL: -20:00) for 8 campaign hours.
CLOCK_START = "2026-11-30T17:00:00+00:00"
#: Campaign clock speed: ten campaign seconds per wall second, so the 8 h
#: window lasts 48 min of wall time, long enough for a paced 100,000-lead run.
TIME_SCALE = 10.0
WARMUP_LEADS = 50
#: The worker's state-table changelog, created up front with the catalog's
#: partition count: when Faust's first changelog write races its own topic
#: creation, the broker can auto-create it with one partition, and every
#: stage then fails with PartitionsMismatch.
STATE_CHANGELOG = TopicSpec(
    "leadflow-lead-state-changelog",
    "leadflow.LeadState",
    "Faust changelog of the lead-state table (created by the benchmark).",
    cleanup_policy="compact",
)
_NO_LIMITS = {f"LEADFLOW_{c}_RATE": "0" for c in ("SMS", "VOICE", "EMAIL", "ENRICH", "LLM")}


class BenchError(LeadflowError):
    """A benchmark run could not complete (a stalled pipeline, a process that died)."""

    reason = "bench"


@dataclass(frozen=True)
class BenchServices:
    """Kafka, the benchmark's database, and where run files go."""

    settings: Settings
    workdir: Path
    broker_pid: int | None
    #: Campaigns this benchmark created (removed afterwards from an external database).
    campaign_ids: list[str] = field(default_factory=list)

    @property
    def dsn(self) -> str:
        """The benchmark database."""
        return self.settings.dsn

    def child_env(self, prefix: str, extra: Mapping[str, str] | None = None) -> dict[str, str]:
        """Environment of a worker/simulator of a run with topic prefix ``prefix``."""
        return {
            **os.environ,
            **_NO_LIMITS,
            "LEADFLOW_TOPIC_PREFIX": prefix,
            "LEADFLOW_DATABASE_URL": self.dsn,
            "LEADFLOW_KAFKA_BOOTSTRAP": self.settings.bootstrap_servers,
            **(extra or {}),
        }


@contextlib.contextmanager
def bench_services(workdir: Path | None = None, *, keep: bool = False) -> Iterator[BenchServices]:
    """The running local services, with a fresh migrated database ``leadflow_bench_<tag>``.

    The database is dropped at the end unless ``keep``. With
    ``LEADFLOW_DATABASE_URL`` set, that database is used as is, and the
    campaigns the benchmark created are cancelled and purged at the end
    instead (the scheduler scenario alone queues a million touches), unless
    ``keep``. A benchmark also resets the campaign clock of the database it
    uses: never point it at one that live workers serve.
    """
    base = get_settings()
    tag = uuid.uuid4().hex[:8]
    folder = workdir or base.home_dir / "bench" / tag
    folder.mkdir(parents=True, exist_ok=True)
    postgres = LocalPostgres(base)
    dbname: str | None = None
    if base.uses_external_database:
        _log.warning(
            "bench: using the configured database as is; its campaign clock is reset and the "
            "benchmark's campaigns are removed at the end"
        )
        settings = base
    else:
        dbname = f"leadflow_bench_{tag}"
        settings = replace(base, database_url=postgres.create_database(dbname))
    apply_migrations(settings.dsn)
    broker = None if base.uses_external_kafka else LocalKafka(base).pid()
    services = BenchServices(settings, folder, broker)
    try:
        yield services
    finally:
        if not keep:
            if dbname is None:
                remove_campaigns(settings.dsn, services.campaign_ids)
            else:
                postgres.drop_database(dbname)


def new_prefix(kind: str) -> str:
    """A fresh topic prefix for one run."""
    return f"bench-{kind}-{uuid.uuid4().hex[:6]}-"


def delete_topics(settings: Settings) -> None:
    """Delete every topic of ``settings.topic_prefix`` (best effort)."""
    prefix = settings.topic_prefix
    if not prefix.startswith("bench-"):
        return  # never touch anything but a benchmark run's topics
    admin = admin_client(settings)
    names = [t for t in admin.list_topics(timeout=10).topics if t.startswith(prefix)]
    if names:
        for future in admin.delete_topics(names, operation_timeout=30).values():
            with contextlib.suppress(Exception):
                future.result()


def reset_clock(dsn: str) -> None:
    """Forget the campaign clock anchor so the next worker anchors at ``CLOCK_START``."""
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute("DELETE FROM clock_anchor")


def bench_campaign(
    services: BenchServices, path: Path = BENCH_CAMPAIGN, *, sms_rate: str | None = None
) -> Campaign:
    """Store the benchmark campaign under a fresh id (``sms_rate``: the campaign's own SMS rate)."""
    campaign = replace(load_campaign(path), id=f"bench-{uuid.uuid4().hex[:10]}")
    if sms_rate is not None:
        sms = replace(campaign.channel_settings("sms"), rate=sms_rate)
        campaign = replace(campaign, channels={**campaign.channels, "sms": sms})
    CampaignStore(services.dsn).create(campaign)
    services.campaign_ids.append(campaign.id)
    return campaign


def remove_campaigns(dsn: str, campaign_ids: list[str]) -> list[str]:
    """Cancel and purge the benchmark's campaigns; the ids removed (a failure is logged).

    Every row of theirs goes except opt-outs, as with ``leadflow campaign
    purge --force``.
    """
    store = CampaignStore(dsn)
    removed: list[str] = []
    for campaign_id in campaign_ids:
        try:
            status = store.get(campaign_id).status
            if status in (CampaignStatus.ACTIVE, CampaignStatus.PAUSED):
                store.cancel(campaign_id)
            elif status == CampaignStatus.COMPLETED:
                store.archive(campaign_id)
            store.purge(campaign_id, force=True, dry_run=False)
            removed.append(campaign_id)
        except LeadflowError as exc:
            _log.warning("bench: campaign %s was not removed: %s", campaign_id, exc)
    if removed:
        _log.warning("bench: removed %d benchmark campaign(s)", len(removed))
    return removed


# --- waiting on the sent topic ------------------------------------------------------------


def wait_for_count(
    read: Callable[[], int],
    expected: int,
    *,
    what: str,
    alive: Any = None,
    stall_s: float = 45.0,
    timeout_s: float = 3600.0,
    allow_missing: int = 0,
    poll_s: float = 0.1,
) -> int:
    """Poll ``read()`` until it reaches ``expected``; returns the last count.

    Raises :class:`BenchError` when the count does not move for ``stall_s``
    seconds (unless at most ``allow_missing`` are missing: then the count is
    returned), when ``timeout_s`` runs out, or when ``alive()`` (a check that
    the processes still run) raises. ``what`` names the count in messages.
    """
    last, last_change = -1, time.monotonic()
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        count = read()
        if count >= expected:
            return count
        now = time.monotonic()
        if count != last:
            last, last_change = count, now
        elif now - last_change > stall_s:
            if expected - count <= allow_missing:
                _log.warning("  %s: %d of %d records came; going on", what, count, expected)
                return count
            raise BenchError(f"{what}: stuck at {count} of {expected} records")
        if alive is not None:
            alive()
        time.sleep(poll_s)
    raise BenchError(f"{what}: {last} of {expected} records after {timeout_s:.0f} s")


def wait_for_sent(
    settings: Settings,
    expected: int,
    *,
    alive: Any = None,
    stall_s: float = 45.0,
    timeout_s: float = 3600.0,
    allow_missing: int = 0,
) -> int:
    """Wait until ``sent`` holds ``expected`` records; returns how many it holds.

    Raises :class:`BenchError` as :func:`wait_for_count` does.
    """
    from confluent_kafka import Consumer

    topic = settings.topic_name("sent")
    consumer = Consumer(
        {
            "bootstrap.servers": settings.bootstrap_servers,
            "group.id": f"leadflow-bench-watch-{uuid.uuid4().hex[:6]}",
        }
    )
    try:
        return wait_for_count(
            lambda: end_offsets(settings.bootstrap_servers, topic, consumer),
            expected,
            what=topic,
            alive=alive,
            stall_s=stall_s,
            timeout_s=timeout_s,
            allow_missing=allow_missing,
        )
    finally:
        consumer.close()


# --- profiling -----------------------------------------------------------------------------


@contextlib.contextmanager
def py_spy(pid: int, out: Path | None, rate: int = 100) -> Iterator[None]:
    """Record ``pid`` with py-spy (collapsed stacks, ``--format raw``) while inside."""
    if out is None:
        yield
        return
    exe = Path(sys.executable).with_name("py-spy")
    out.parent.mkdir(parents=True, exist_ok=True)
    proc = subprocess.Popen(
        [
            str(exe),
            "record",
            "-p",
            str(pid),
            "-o",
            str(out),
            "--format",
            "raw",
            "-r",
            str(rate),
            "--gil",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        yield
    finally:
        proc.send_signal(signal.SIGINT)
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(10)


# --- results -------------------------------------------------------------------------------


def _figures(
    timeline: Timeline, leads: int, sampler: Sampler, names: Mapping[str, str]
) -> dict[str, Any]:
    """The common figures of a run; ``names`` maps a figure name to a sampler name."""
    figures = timeline.metrics()
    sent = figures["counts"]["sent"]
    span = timeline.span_s() if sent else None
    figures.update(
        {
            "leads": leads,
            "sent": sent,
            "raw_to_first_sent_s": None if span is None else round(span, 3),
            "throughput_leads_per_s": round(sent / span, 1) if span else None,
            "peak_rss_mb": {k: sampler.peak_mb(v, hwm=k != "broker") for k, v in names.items()},
            "cpu_s": {k: sampler.cpu(v) for k, v in names.items()},
        }
    )
    if "postgres" in sampler.group_cpu:
        figures["cpu_s"]["postgres"] = sampler.cpu("postgres")
    return figures


@dataclass
class Running:
    """A leadflow run's processes: its settings, the LocalRun, worker and simulator pids."""

    settings: Settings
    run: LocalRun
    worker_pid: int
    sim_pid: int

    def sampler(self, services: BenchServices, interval: float = 0.25) -> Sampler:
        """A sampler of the worker, simulator, broker and the benchmark database's backends."""
        database = services.dsn.rsplit("/", 1)[-1]
        return Sampler(
            {"worker": self.worker_pid, "sim": self.sim_pid, "broker": services.broker_pid or 0},
            interval=interval,
            extra_cpu={"postgres": lambda: postgres_pids(database)},
        )

    def warm_up(self, campaign_id: str) -> None:
        """Send warm-up leads of ``campaign_id`` through to ``sent`` and wait for them."""
        started = time.monotonic()
        warmup = encode_leads(campaign_id, WARMUP_LEADS, seed=99, key_prefix=WARMUP_PREFIX)
        produce(self.settings, self.settings.topic_name("raw"), warmup)
        wait_for_sent(self.settings, WARMUP_LEADS, alive=self.run.check_alive, stall_s=120)
        _log.info("  warm-up through (%.1f s)", time.monotonic() - started)


@contextlib.asynccontextmanager
async def leadflow_processes(
    services: BenchServices,
    label: str,
    *,
    time_scale: float = TIME_SCALE,
    clock_start: str = CLOCK_START,
    worker_env: Mapping[str, str] | None = None,
    new_clock: bool = True,
) -> AsyncIterator[Running]:
    """Topics of a fresh prefix, the simulator and one worker; all removed on exit.

    ``new_clock`` forgets the clock anchor first, so the worker anchors the
    campaign clock at ``clock_start`` when it starts.
    """
    settings = replace(services.settings, topic_prefix=new_prefix("lf"))
    ensure_topics(settings, (*CATALOG, STATE_CHANGELOG))
    if new_clock:
        reset_clock(services.dsn)
    folder = services.workdir / f"{label}-{settings.topic_prefix.strip('-')}"
    folder.mkdir(parents=True, exist_ok=True)
    run = LocalRun(
        settings,
        folder,
        services.child_env(settings.topic_prefix, worker_env),
        time_scale=time_scale,
        clock_start=clock_start,
    )
    try:
        started = time.monotonic()
        await run.start_sim(["--config", str(SIM_CONFIG)])
        run.start_worker()
        worker = run.workers[0]
        assert worker is not None and run.sim is not None
        _log.info("  %s: simulator and worker started (%.1f s)", label, time.monotonic() - started)
        yield Running(settings, run, worker.pid, run.sim.pid)
    finally:
        run.close()
        delete_topics(settings)


def lead_report(dsn: str, campaign_id: str, lead_ids: list[str]) -> list[dict[str, Any]]:
    """Where leads that never got their first touch are: state, queue row, ledger row."""
    with psycopg.connect(dsn) as conn:
        rows = conn.execute(
            """
            SELECT k.lead_id, l.state, l.touch, l.reason, p.due_at, p.emitted_at, s.status
            FROM unnest(%b::text[]) AS k(lead_id)
            LEFT JOIN leads l ON l.campaign_id = %s AND l.lead_id = k.lead_id
            LEFT JOIN pending_touches p
              ON p.campaign_id = l.campaign_id AND p.lead_id = l.lead_id AND p.touch = 1
            LEFT JOIN send_ledger s
              ON s.campaign_id = l.campaign_id AND s.lead_id = l.lead_id AND s.touch = 1
            """,
            (lead_ids, campaign_id),
        ).fetchall()
    keys = ("lead_id", "state", "touch", "reason", "due_at", "emitted_at", "ledger")
    return [
        {k: None if v is None else str(v) for k, v in zip(keys, row, strict=True)} for row in rows
    ]


@dataclass
class LeadflowRun:
    """Options of one leadflow run."""

    leads: int
    #: also run the half-load phase (paced at half the measured throughput)
    half_load: bool = True
    profile: Path | None = None
    worker_env: Mapping[str, str] | None = None
    label: str = "campaign"


def _phase_figures(
    timeline: Timeline, leads: int, sampler: Sampler, rss_start_kb: int
) -> dict[str, Any]:
    figures = _figures(
        timeline, leads, sampler, {"worker": "worker", "sim": "sim", "broker": "broker"}
    )
    rec = sampler.samples.get("worker")
    peak = rec.peak_rss_kb if rec is not None else 0
    growth = max(0, peak - rss_start_kb)
    figures.update(
        {
            "worker_rss_start_mb": round(rss_start_kb / 1024, 1),
            "worker_rss_growth_mb": round(growth / 1024, 1),
            "worker_rss_growth_kb_per_lead": round(growth / leads, 3),
            "worker_rss_series_mb": sampler.series_mb("worker")[::4],
        }
    )
    return figures


async def run_leadflow(services: BenchServices, opts: LeadflowRun) -> dict[str, Any]:
    """A campaign of ``opts.leads`` leads through the real worker; its figures.

    Returns ``{"full": ..., "half": ...}``: the full-speed phase (all leads
    produced at once) and, with ``opts.half_load``, a second campaign of the
    same size in the same worker, produced at half the full phase's
    throughput (the "half of the maximum sustained rate" latency figures).
    """
    full_campaign = bench_campaign(services)
    full_leads = encode_leads(full_campaign.id, opts.leads, key_prefix="f-")
    half_campaign = bench_campaign(services) if opts.half_load else None
    out: dict[str, Any] = {}
    async with leadflow_processes(
        services, f"{opts.label}-{opts.leads}", worker_env=opts.worker_env
    ) as running:
        settings = running.settings
        raw = settings.topic_name("raw")
        alive = running.run.check_alive
        running.warm_up(full_campaign.id)
        expected = WARMUP_LEADS + opts.leads
        phases: list[tuple[str, Sampler, int, float, float | None]] = []
        rss_start = status_kb(running.worker_pid, "VmRSS") or 0
        sampler = running.sampler(services)
        sampler.start()
        tolerate = max(1, opts.leads // 1000)
        with py_spy(running.worker_pid, opts.profile):
            produce_s = produce(settings, raw, full_leads)
            got = wait_for_sent(settings, expected, alive=alive, allow_missing=tolerate)
        sampler.stop()
        _log.info("  full speed: %d leads (%.1f s)", opts.leads, sampler.elapsed)
        phases.append(("full", sampler, rss_start, produce_s, None))
        if half_campaign is not None:
            full = read_timeline(settings.bootstrap_servers, settings.topic_name)[""]
            rate = max(1.0, 0.5 * opts.leads / full.span_s())
            half_leads = encode_leads(half_campaign.id, opts.leads, seed=8, key_prefix="h-")
            rss_start = status_kb(running.worker_pid, "VmRSS") or 0
            sampler = running.sampler(services)
            sampler.start()
            produce_s = produce(settings, raw, half_leads, rate=rate)
            expected = got + opts.leads
            got = wait_for_sent(settings, expected, alive=alive, allow_missing=tolerate)
            sampler.stop()
            _log.info("  half load: %d leads at %.0f/s (%.1f s)", opts.leads, rate, sampler.elapsed)
            phases.append(("half", sampler, rss_start, produce_s, rate))
        running.run.close()  # stopped before reading, so the reads do not compete
        started = time.monotonic()
        timelines = read_timeline(
            settings.bootstrap_servers, settings.topic_name, groups={"full": "f-", "half": "h-"}
        )
        _log.info("  topics read (%.1f s)", time.monotonic() - started)
    campaign_ids = {"full": full_campaign.id, "half": half_campaign.id if half_campaign else ""}
    for name, phase_sampler, start_kb, seconds, paced in phases:
        figures = _phase_figures(timelines[name], opts.leads, phase_sampler, start_kb)
        missing = sorted(timelines[name].at["raw"].keys() - timelines[name].at["sent"].keys())
        if missing:
            figures["missing"] = len(missing)
            figures["missing_leads"] = lead_report(services.dsn, campaign_ids[name], missing[:10])
        figures.update(
            {
                "kind": "leadflow",
                "phase": name,
                "rate_target": None if paced is None else round(paced, 1),
                "produce_s": round(seconds, 3),
            }
        )
        out[name] = figures
    return out


async def run_baseline(
    services: BenchServices, client: str, leads_n: int, *, processes: int = 1
) -> dict[str, Any]:
    """The bare ``client`` (aiokafka or confluent) loop over the four hops; its figures.

    ``processes=4`` runs each hop in a process of its own instead of all four in one.
    """
    settings = replace(services.settings, topic_prefix=new_prefix(client[:4]))
    ensure_topics(settings)
    name = f"baseline-{client}-{leads_n}-{settings.topic_prefix.strip('-')}"
    warmup = encode_leads("bench-baseline", WARMUP_LEADS, seed=99, key_prefix=WARMUP_PREFIX)
    leads = encode_leads("bench-baseline", leads_n)
    raw = settings.topic_name("raw")
    groups = ["0,1,2,3"] if processes == 1 else ["0", "1", "2", "3"]
    procs: list[subprocess.Popen[bytes]] = []
    log = services.workdir / f"{name}.log"

    def alive() -> None:
        for proc in procs:
            if proc.poll() is not None:
                raise BenchError(f"baseline {client} exited ({proc.returncode}); see {log}")

    try:
        with log.open("wb") as err:
            for hops in groups:
                procs.append(
                    subprocess.Popen(
                        [
                            sys.executable,
                            "-m",
                            "bench.baseline",
                            client,
                            "--bootstrap",
                            settings.bootstrap_servers,
                            "--prefix",
                            settings.topic_prefix,
                            "--partitions",
                            str(settings.topic_partitions),
                            "--hops",
                            hops,
                        ],
                        cwd=REPO_ROOT,
                        stdout=subprocess.PIPE,
                        stderr=err,
                        start_new_session=True,
                    )
                )
        started = time.monotonic()
        for proc in procs:
            assert proc.stdout is not None
            if proc.stdout.readline().strip() != b"ready":
                raise ServiceStartError(f"baseline {client} did not start; see {log}")
        produce(settings, raw, warmup)
        wait_for_sent(settings, WARMUP_LEADS, alive=alive, stall_s=60)
        _log.info("  %s: started and warmed up (%.1f s)", client, time.monotonic() - started)
        names = {f"process{i}": proc.pid for i, proc in enumerate(procs)}
        sampler = Sampler({**names, "broker": services.broker_pid or 0})
        sampler.start()
        produce(settings, raw, leads)
        wait_for_sent(settings, WARMUP_LEADS + leads_n, alive=alive)
        sampler.stop()
        _log.info("  %s: %d leads (%.1f s)", client, leads_n, sampler.elapsed)
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        for proc in procs:
            try:
                proc.wait(30)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(10)
            if proc.stdout is not None:
                proc.stdout.close()
    try:
        timeline = read_timeline(settings.bootstrap_servers, settings.topic_name)[""]
    finally:
        delete_topics(settings)
    figures = _figures(timeline, leads_n, sampler, {"broker": "broker"})
    figures["peak_rss_mb"]["process"] = round(
        sum(sampler.peak_mb(n, hwm=True) or 0.0 for n in names), 1
    )
    figures["cpu_s"]["process"] = round(sum(sampler.cpu(n) or 0.0 for n in names), 2)
    figures["kind"] = f"baseline-{client}"
    figures["processes"] = processes
    return figures
