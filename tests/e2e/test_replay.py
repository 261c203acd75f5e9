"""Replaying a finished campaign's ``scored``, ``touch-due`` and ``sent`` sends nothing again.

A small campaign runs to its end on real Kafka, Postgres, the simulator and a
worker process. Then the three topics are replayed both ways: copied into
themselves while the worker runs, and by resetting the stopped worker's
consumer group to the log start and starting it again. The simulator's
record of accepted sends and the send ledger stay exactly as they were.
"""

from __future__ import annotations

import asyncio
import subprocess
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import aiohttp
import psycopg
import pytest
import yaml

from sinks.campaigns import CampaignStore
from streams.admin import ensure_topics
from streams.campaign import Campaign
from streams.ingest import ingest_file
from streams.lag import group_lag, group_member_count, worker_group
from streams.leadgen import LeadMix, write_csv
from streams.orchestrate import LocalRun
from streams.replay import (
    GroupActiveError,
    Selection,
    copy_range,
    kafka_tool_command,
    read_rollback,
    reset_group,
)
from streams.settings import Settings

pytestmark = pytest.mark.slow
RATES = {f"LEADFLOW_{c}_RATE": "0" for c in ("SMS", "VOICE", "EMAIL", "ENRICH")}
TOPICS = ("scored", "touch-due", "sent")
LEADS = 40


def _unthrottled(campaign: Campaign) -> Campaign:
    """``campaign`` with no rate on any channel."""
    channels = {name: replace(c, rate=None) for name, c in campaign.channels.items()}
    return replace(campaign, channels=channels)


def _quiet_sim(path: Path) -> Path:
    """Simulator config without replies or opt-outs of its own (they could come late)."""
    path.write_text(
        yaml.safe_dump({"webhooks": {"reply_rate": 0.0, "opt_out_rate": 0.0, "help_rate": 0.0}})
    )
    return path


def _behind(settings: Settings) -> tuple[dict[tuple[str, int], int], dict[tuple[str, int], int]]:
    """(end offsets, lag) of the worker group on the three topics' partitions."""
    rows = group_lag(
        settings.bootstrap_servers,
        worker_group(settings),
        [settings.topic_name(t) for t in TOPICS],
    )
    assert rows, "the topics are missing"
    return (
        {(r.topic, r.partition): r.end for r in rows},
        {(r.topic, r.partition): r.lag for r in rows if r.lag},
    )


async def _settle(run: LocalRun, settings: Settings) -> dict[tuple[str, int], int]:
    """Wait until the worker group has committed every record of the three topics.

    The worker sometimes stops fetching some partitions after taking a burst
    of records (a Faust flow stall that agents/watchdog.py is meant to
    resolve; it is about liveness, not duplicates). A stalled worker is
    restarted, at most twice, as an operator would: that re-reads from the
    committed offsets, which the no-second-send claim must survive anyway.
    """
    for attempt in range(3):
        deadline = time.monotonic() + 25
        while time.monotonic() < deadline:
            ends, lag = _behind(settings)
            if not lag:
                return ends
            await asyncio.sleep(0.5)
        print(f"worker stalled with lag {lag}; restarting it (attempt {attempt + 1})")
        run.stop_worker(0)
        run.start_worker(0)
    raise AssertionError(f"the worker never caught up: lag {_behind(settings)[1]}")


def _explain(
    run: LocalRun,
    dsn: str,
    campaign_id: str,
    ends: dict[tuple[str, int], int],
    grown: dict[tuple[str, int], int] | None = None,
) -> str:
    """What a failed record count needs to be understood: where the extra
    records are, the leads' states, the ledger, and what the worker warned."""
    grown = grown or {k: 2 * v for k, v in ends.items()}
    extra = {k: v - 2 * ends.get(k, 0) for k, v in grown.items() if v != 2 * ends.get(k, 0)}
    with psycopg.connect(dsn) as conn:
        ledger = conn.execute(
            "SELECT touch, status, count(*) FROM send_ledger WHERE campaign_id = %s "
            "GROUP BY 1, 2 ORDER BY 1, 2",
            (campaign_id,),
        ).fetchall()
    log = (run.workdir / "worker0.log").read_text(errors="replace").splitlines()
    signs = ("WARNING", "ERROR", "rebalanc", "ecover", "assigned", "revoked")
    warned = [line[:300] for line in log if any(s in line for s in signs)][-60:]
    return "\n".join(
        [
            f"extra records per partition: {extra}",
            f"lead states: {dict(run.states(campaign_id))}",
            f"ledger (touch, status, count): {ledger}",
            "worker warnings, rebalances and recoveries:",
            *warned,
        ]
    )


def _ledger(dsn: str, campaign_id: str) -> list[tuple[Any, ...]]:
    with psycopg.connect(dsn) as conn:
        return conn.execute(
            "SELECT lead_id, touch, status, provider_message_id FROM send_ledger "
            "WHERE campaign_id = %s ORDER BY lead_id, touch",
            (campaign_id,),
        ).fetchall()


def _sends(messages: list[dict[str, Any]]) -> Counter[tuple[str, int]]:
    return Counter((str(m["lead_id"]), int(m["touch"])) for m in messages)


async def test_replays_of_a_finished_campaign_send_nothing_again(
    isolated_db: tuple[Settings, dict[str, str], str],
    tmp_path: Path,
    example_campaign: Callable[..., Campaign],
) -> None:
    # A database of its own: the worker releases the due touches of every active
    # campaign in its database, and earlier tests leave some in the shared one.
    settings, env, dsn = isolated_db
    # the example's four touches an hour apart (about a second of wall time)
    campaign = _unthrottled(example_campaign("replay", gap=timedelta(hours=1)))
    CampaignStore(dsn).create(campaign)
    ensure_topics(settings)  # with the state changelog, before the worker's first start
    # Worker log at info: rebalances and table recoveries are in it, for _explain.
    run = LocalRun(settings, tmp_path, {**env, **RATES}, time_scale=20000, worker_log_level="info")
    group = worker_group(settings)
    names = [settings.topic_name(t) for t in TOPICS]
    try:
        await run.start_sim(["--config", str(_quiet_sim(tmp_path / "sim.yaml"))])
        run.start_worker()
        path = write_csv(tmp_path / "leads.csv", LEADS, seed=21, mix=LeadMix(0.0, 0.0))
        start = datetime.now(UTC)
        summary = ingest_file(settings, campaign.id, path)
        some = [f"lead-{i:07d}" for i in (3, 9)]
        await run.drive(
            campaign.id,
            summary.published,
            replies={some[0]: "reply", some[1]: "opt_out"},
            timeout_s=60,
        )
        ends = await _settle(run, settings)
        async with aiohttp.ClientSession() as http:
            before = await run.messages(http, campaign.id)
        ledger = _ledger(dsn, campaign.id)
        states = run.states(campaign.id)
        assert sum(states.values()) == LEADS and states.get("completed", 0) > 0, states
        assert sum(1 for _, touch in _sends(before) if touch >= 2) > 0  # touches 2+ went out

        # A dry run of each topic predicts no send and changes nothing.
        lag_rows = group_lag(settings.bootstrap_servers, group, names)
        committed = {(r.topic, r.partition): r.committed for r in lag_rows}
        preview = reset_group(settings, Selection("touch-due", from_time=start))
        print("\n".join(preview.lines()))
        assert preview.live_members == 1 and preview.send_totals() is not None
        assert sum(p.records for p in preview.partitions) == sum(
            v for (t, _), v in ends.items() if t == settings.topic_name("touch-due")
        )
        for topic in TOPICS:
            dry = copy_range(settings, Selection(topic))
            print("\n".join(dry.lines()))  # shown with pytest -s
            sends = dry.send_totals()
            assert sends is not None and sends.may_send == 0, (topic, sends)
            assert sends.done > 0, (topic, sends)
        after_dry = group_lag(settings.bootstrap_servers, group, names)
        assert {(r.topic, r.partition): r.end for r in after_dry} == ends
        assert {(r.topic, r.partition): r.committed for r in after_dry} == committed

        # 1. Copy mode, the worker running: every record goes through its stage again.
        copied = 0
        for topic in TOPICS:
            report = copy_range(settings, Selection(topic), execute=True)
            copied += sum(p.copied for p in report.partitions)
        assert copied == sum(ends.values())
        grown = await _settle(run, settings)
        assert sum(grown.values()) == 2 * sum(ends.values()), _explain(
            run, dsn, campaign.id, ends, grown
        )

        # A group with a live member is never reset, and no rollback is written.
        refused = tmp_path / "refused.json"
        with pytest.raises(GroupActiveError, match=f"group {group} has 1 live member"):
            reset_group(
                settings,
                Selection("touch-due", from_offsets=0),
                execute=True,
                rollback_file=refused,
            )
        assert not refused.exists()

        # 2. Group reset, the worker stopped: back to the log start, then start it again.
        run.stop_worker(0)
        deadline = time.monotonic() + 30
        while group_member_count(settings.bootstrap_servers, group) and (
            time.monotonic() < deadline
        ):
            await asyncio.sleep(0.5)
        # Kafka's own tool sees the worker's group as ours does.
        tool = [*kafka_tool_command(settings), "--bootstrap-server", settings.bootstrap_servers]
        described = subprocess.run(
            [*tool, "--describe", "--group", group], capture_output=True, text=True, timeout=60
        )
        assert described.returncode == 0, described.stderr
        rows = [line.split() for line in described.stdout.splitlines()]
        seen = {
            (r[1], int(r[2])): int(r[3])
            for r in rows
            if len(r) > 3 and r[0] == group and r[1] in names and r[3] != "-"
        }
        stopped = {
            (r.topic, r.partition): r.committed
            for r in group_lag(settings.bootstrap_servers, group, names)
        }
        assert seen == {k: v for k, v in stopped.items() if v is not None}
        assert all(stopped[k] == grown[k] for k in seen)  # the worker had committed it all
        for topic in TOPICS:
            rollback = tmp_path / f"rollback-{topic}.json"
            done = reset_group(
                settings, Selection(topic, from_offsets=0), execute=True, rollback_file=rollback
            )
            print("\n".join(done.lines()))
            recorded = read_rollback(rollback)
            assert recorded[0] == group
            name = settings.topic_name(topic)
            assert recorded[1] == {k: v for k, v in stopped.items() if k[0] == name}
        rewound = group_lag(settings.bootstrap_servers, group, names)
        assert all(r.committed == 0 for r in rewound), rewound
        run.start_worker(0)
        await _settle(run, settings)
        async with aiohttp.ClientSession() as http:
            after = await run.messages(http, campaign.id)
    finally:
        run.close()

    assert _sends(after) == _sends(before)
    assert max(_sends(after).values()) == 1  # at most one send per (campaign, lead, touch)
    assert _ledger(dsn, campaign.id) == ledger
    assert run.states(campaign.id) == states
