"""``leadflow health`` on real Kafka and Postgres: counts, exit codes, a real campaign's worker."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import time
import uuid
from collections import Counter
from dataclasses import replace
from pathlib import Path
from typing import Any

import aiohttp
import psycopg
import pytest
from click.testing import CliRunner, Result
from confluent_kafka import Consumer, Producer, TopicPartition

from sinks.campaigns import CampaignStore
from streams.admin import ensure_topics
from streams.campaign import load_campaign
from streams.commands.health import health
from streams.infra.process import free_port
from streams.ingest import ingest_file
from streams.lag import worker_group
from streams.leadgen import LeadMix, write_csv
from streams.orchestrate import LocalRun
from streams.settings import REPO_ROOT, Settings
from streams.state_machine import TERMINAL

EXAMPLE = REPO_ROOT / "examples" / "campaign.yaml"
RATES = {f"LEADFLOW_{c}_RATE": "0" for c in ("SMS", "VOICE", "EMAIL", "ENRICH")}
# ``leadflow health`` as it runs once streams/cli.py registers it (exit codes included).
SHIM = (
    "import sys; from streams.cli import COMMANDS, main; "
    "COMMANDS['health'] = 'streams.commands.health:health'; main(sys.argv[1:])"
)


def leadflow_health(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", SHIM, "health", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        cwd=REPO_ROOT,
    )


def invoke(env: dict[str, str], *args: str) -> Result:
    return CliRunner().invoke(health, list(args), env=env)


def new_campaign(dsn: str, prefix: str = "hc") -> str:
    campaign_id = f"{prefix}-{uuid.uuid4().hex[:8]}"
    CampaignStore(dsn).create(replace(load_campaign(EXAMPLE), id=campaign_id))
    return campaign_id


# --- the must-show: a real campaign, compared with Postgres ---------------------------------


def rows(dsn: str, query: str, *args: Any) -> list[tuple[Any, ...]]:
    with psycopg.connect(dsn) as conn:
        return conn.execute(query, args).fetchall()


def snapshot(dsn: str, campaign_id: str) -> dict[str, Any]:
    """What Postgres says, queried directly (independently of streams/health.py)."""
    states = {
        str(s): int(n)
        for s, n in rows(
            dsn,
            "SELECT state, count(*) FROM leads WHERE campaign_id = %s GROUP BY state",
            campaign_id,
        )
    }
    touch = "p.campaign_id = l.campaign_id AND p.lead_id = l.lead_id AND p.touch = l.touch"
    ledger = "s.campaign_id = l.campaign_id AND s.lead_id = l.lead_id AND s.touch = l.touch"
    [(schedule, send, sequence)] = rows(
        dsn,
        f"""
        SELECT
          count(*) FILTER (WHERE l.state = 'qualified' OR (l.state = 'in_sequence' AND (
              NOT EXISTS (SELECT 1 FROM pending_touches p WHERE {touch})
              OR EXISTS (SELECT 1 FROM pending_touches p WHERE {touch} AND p.emitted_at IS NULL)))),
          count(*) FILTER (WHERE l.state = 'reconcile' OR (l.state = 'in_sequence'
              AND EXISTS (SELECT 1 FROM pending_touches p
                          WHERE {touch} AND p.emitted_at IS NOT NULL)
              AND NOT EXISTS (SELECT 1 FROM send_ledger s WHERE {ledger}
                              AND s.status IN ('accepted', 'failed', 'skipped')))),
          count(*) FILTER (WHERE l.state = 'in_sequence' AND EXISTS (
              SELECT 1 FROM send_ledger s WHERE {ledger}
              AND s.status IN ('accepted', 'failed', 'skipped')))
        FROM leads l WHERE l.campaign_id = %s
        """,
        campaign_id,
    )
    queued = {
        str(c): int(n)
        for c, n in rows(
            dsn,
            f"""
        SELECT p.channel, count(*) FROM pending_touches p
        JOIN leads l ON {touch} AND l.state = 'in_sequence'
        WHERE p.campaign_id = %s AND p.emitted_at IS NULL GROUP BY 1
        """,
            campaign_id,
        )
    }
    [(finished,)] = rows(
        dsn,
        "SELECT count(*) FROM lead_transitions WHERE campaign_id = %s AND to_state = ANY(%s)",
        campaign_id,
        [s.value for s in TERMINAL],
    )
    [(emitted, ledger_rows)] = rows(
        dsn,
        "SELECT (SELECT count(*) FROM pending_touches WHERE campaign_id = %s "
        "AND emitted_at IS NOT NULL), (SELECT count(*) FROM send_ledger WHERE campaign_id = %s)",
        campaign_id,
        campaign_id,
    )
    return {
        "states": states,
        "active": {"schedule": schedule, "send": send, "sequence": sequence},
        "queued": queued,
        "finished_transitions": finished,
        "moving": (emitted, ledger_rows),
    }


async def settle(dsn: str, campaign_id: str, run: LocalRun, timeout_s: float = 30) -> None:
    """Wait until the paused campaign stops changing (2 s without a change)."""
    deadline = time.monotonic() + timeout_s
    last, same = None, 0
    while time.monotonic() < deadline:
        run.check_alive()
        now = snapshot(dsn, campaign_id)
        same = same + 1 if now == last else 0
        if same >= 4:
            return
        last = now
        await asyncio.sleep(0.5)
    pytest.fail(f"campaign {campaign_id} never settled: {last}")


async def test_health_json_matches_the_postgres_counts(
    isolated: tuple[Settings, dict[str, str]], dsn: str, tmp_path: Path
) -> None:
    settings, env = isolated
    campaign_id = new_campaign(dsn, "hj")
    ensure_topics(settings)
    run = LocalRun(settings, tmp_path, {**env, **RATES}, time_scale=20000)
    try:
        await run.start_sim()
        run.start_worker()
        path = write_csv(tmp_path / "leads.csv", 200, seed=21, mix=LeadMix(0.05, 0.05))
        published = ingest_file(settings, campaign_id, path).published
        # Pause mid-campaign: every lead known, some past touch 1, some already ended.
        deadline = time.monotonic() + 45
        while time.monotonic() < deadline:
            run.check_alive()
            states = run.states(campaign_id)
            [(later,)] = rows(
                dsn,
                "SELECT count(*) FROM leads WHERE campaign_id = %s AND touch >= 2",
                campaign_id,
            )
            if sum(states.values()) == published and later >= 10:
                break
            await asyncio.sleep(0.3)
        else:
            pytest.fail(f"the campaign never got going: {run.states(campaign_id)}")
        CampaignStore(dsn).pause(campaign_id)
        await settle(dsn, campaign_id, run)
        expected = snapshot(dsn, campaign_id)

        url = f"http://127.0.0.1:{run.web_ports[0]}"
        args = ["--campaign", campaign_id, "--json", "--worker-url", url, "--sample-s", "1"]
        result = await asyncio.to_thread(leadflow_health, env, *args)
        text = await asyncio.to_thread(leadflow_health, env, *args[:2], "--worker-url", url)
        async with (
            aiohttp.ClientSession() as http,
            http.get(f"{url}/health", params={"campaign": campaign_id}) as resp,
        ):
            worker_status, worker_doc = resp.status, await resp.json()
        assert snapshot(dsn, campaign_id) == expected  # nothing moved while we looked
    finally:
        run.close()

    assert result.returncode == 0, result.stdout + result.stderr
    doc = json.loads(result.stdout)
    [c] = doc["campaigns"]
    states = expected["states"]
    assert c["states"] == states
    assert c["total"] == sum(states.values()) == published
    failures = {"invalid", "quarantined", "failed"}
    terminal = {s.value for s in TERMINAL}
    assert c["failed"] == sum(n for s, n in states.items() if s in failures)
    assert c["completed"] == sum(n for s, n in states.items() if s in terminal - failures)
    assert c["active"] == sum(n for s, n in states.items() if s not in terminal)
    assert c["reconcile"] == states.get("reconcile", 0)
    assert c["active"] > 0 and c["completed"] > 0  # really mid-campaign
    stages = c["stages"]
    assert stages["enrich"] == {
        "active": states.get("new", 0),
        "completed": states.get("duplicate", 0),
        "failed": states.get("invalid", 0),
    }
    assert stages["score"] == {
        "active": states.get("enriched", 0),
        "completed": states.get("disqualified", 0),
        "failed": 0,
    }
    assert stages["inbound"]["completed"] == states.get("replied", 0) + states.get("opted_out", 0)
    for stage, active in expected["active"].items():
        assert stages[stage]["active"] == active, stage
    assert stages["sequence"]["completed"] == states.get("completed", 0)
    assert stages["sequence"]["failed"] == states.get("failed", 0)
    queued = {ch: v["queued"] for ch, v in c["pending_touches"].items() if v["queued"]}
    assert queued == expected["queued"]
    assert c["completion"]["finished_in_window"] == expected["finished_transitions"]
    assert c["finished"] == expected["finished_transitions"]  # one terminal transition each
    assert c["eta"]["remaining_leads"] == c["active"] - c["reconcile"]
    assert sum(c["eta"]["remaining_touches"].values()) >= sum(expected["queued"].values()) > 0
    assert c["stuck"] == 0
    # The per-stage totals are this campaign's; the queues are drained; the worker answered.
    assert {s: v["leads"] for s, v in doc["stages"].items()} == stages
    for stage in doc["stages"].values():
        assert len(stage["partitions"]) == settings.topic_partitions
        assert stage["lag"] == sum(p["lag"] for p in stage["partitions"]) >= 0
    assert doc["services"]["worker"] == {"ok": True, "url": url}
    assert {b["state"] for b in doc["breakers"].values()} == {"closed"}
    assert doc["problems"] == [] and doc["healthy"] is True
    # The ETA uses the limits the worker enforces (its rates are off here), not ours.
    assert doc["provider_limits"]["source"] == "worker"
    assert doc["provider_limits"]["limits"]["sms"] == {"rate": None, "daily_cap": 0}
    assert c["eta"]["limits"]["sms"]["source"] == "campaign-rate"

    assert text.returncode == 0
    assert f"campaign {campaign_id} (paused): {published} leads" in text.stdout
    assert worker_status == 200
    assert worker_doc["source"] == "worker"
    assert worker_doc["campaigns"][0]["states"] == states


# --- exit codes ---------------------------------------------------------------------------


def commit_behind(settings: Settings, base: str, records: int, committed: int) -> None:
    """The worker group with committed offsets ``records - committed`` behind the end."""
    topic = settings.topic_name(base)
    producer = Producer({"bootstrap.servers": settings.bootstrap_servers})
    for i in range(records):
        producer.produce(topic, key=b"k%d" % i, value=b"v", partition=0)
    producer.flush(10)
    consumer = Consumer(
        {"bootstrap.servers": settings.bootstrap_servers, "group.id": worker_group(settings)}
    )
    try:
        consumer.commit(offsets=[TopicPartition(topic, 0, committed)], asynchronous=False)
    finally:
        consumer.close()


def test_a_stalled_stage_exits_1_and_lag_alone_does_not(
    isolated: tuple[Settings, dict[str, str]], dsn: str
) -> None:
    settings, env = isolated
    ensure_topics(settings)
    commit_behind(settings, "touch-due", records=5, committed=2)
    campaign_id = new_campaign(dsn)
    args = ["--campaign", campaign_id, "--json", "--no-worker", "--sample-s", "1.2"]

    stalled = leadflow_health({**env, "LEADFLOW_HEALTH_STALL_S": "1"}, *args)
    assert stalled.returncode == 1, stalled.stderr
    doc = json.loads(stalled.stdout)
    assert [(p["check"], p.get("stage")) for p in doc["problems"]] == [("stage_stalled", "send")]
    assert doc["stages"]["send"]["lag"] == 3
    assert doc["stages"]["send"]["throughput_per_s"] == 0.0
    assert doc["stages"]["send"]["stalled_for_s"] >= 1.0
    assert doc["services"]["worker"] is None

    behind = leadflow_health(env, *args)  # the default 60 s: lag, but not stalled yet
    assert behind.returncode == 0, behind.stdout
    assert json.loads(behind.stdout)["stages"]["send"]["lag"] == 3


def test_unreachable_kafka_or_postgres_exit_1(
    isolated: tuple[Settings, dict[str, str]], dsn: str
) -> None:
    env = isolated[1]
    campaign_id = new_campaign(dsn)
    fast = {**env, "LEADFLOW_HEALTH_TIMEOUT_S": "1"}
    args = ["--campaign", campaign_id, "--json", "--no-worker", "--sample-s", "0"]

    no_kafka = invoke({**fast, "LEADFLOW_KAFKA_BOOTSTRAP": f"127.0.0.1:{free_port()}"}, *args)
    assert no_kafka.exit_code == 1, no_kafka.output
    doc = json.loads(no_kafka.stdout)
    assert [p["check"] for p in doc["problems"]] == ["kafka_unreachable"]
    assert doc["stages"]["enrich"]["lag"] is None
    assert doc["campaigns"][0]["campaign_id"] == campaign_id  # Postgres still reported
    assert doc["dead_letters"]["source"] == "unavailable"

    no_pg = invoke(
        {**fast, "LEADFLOW_DATABASE_URL": f"postgresql://leadflow@127.0.0.1:{free_port()}/x"},
        *args,
    )
    assert no_pg.exit_code == 1, no_pg.output
    doc = json.loads(no_pg.stdout)
    assert [p["check"] for p in doc["problems"]] == ["postgres_unreachable"]
    assert doc["campaigns"] == []
    assert doc["stages"]["enrich"]["lag"] == 0


def test_an_unreachable_worker_exits_1_and_leaves_breakers_unknown(
    isolated: tuple[Settings, dict[str, str]], dsn: str
) -> None:
    env = isolated[1]
    campaign_id = new_campaign(dsn)
    url = f"http://127.0.0.1:{free_port()}"
    result = invoke(env, "--campaign", campaign_id, "--worker-url", url, "--sample-s", "0")
    assert result.exit_code == 1
    assert result.stdout.startswith("leadflow health: UNHEALTHY (1 problem)\n")
    assert f"worker {url} UNREACHABLE" in result.stdout
    assert "sms=unknown" in result.stdout
    as_json = invoke(
        env, "--campaign", campaign_id, "--worker-url", url, "--sample-s", "0", "--json"
    )
    doc = json.loads(as_json.stdout)
    assert [p["check"] for p in doc["problems"]] == ["worker_unreachable"]
    assert Counter(b["state"] for b in doc["breakers"].values()) == {"unknown": 4}


def test_an_unknown_campaign_or_bad_setting_exits_2(subprocess_env: dict[str, str]) -> None:
    missing = leadflow_health(subprocess_env, "--campaign", "no-such-campaign", "--no-worker")
    assert missing.returncode == 2
    assert missing.stderr == "leadflow: error: no campaign with id 'no-such-campaign'\n"
    bad = leadflow_health({**subprocess_env, "LEADFLOW_HEALTH_STALL_S": "soon"}, "--no-worker")
    assert bad.returncode == 2
    assert "LEADFLOW_HEALTH_STALL_S='soon' is not a valid float" in bad.stderr
