"""A whole campaign on real Kafka, Postgres, the simulator and a worker process.

2,000 leads, the default 4-touch sequence (SMS, voice +24 h, SMS +48 h, email
+1 week) at a time scale that runs the week in about half a minute. The input
has 5 % invalid rows and 3 % duplicates; 2 % of leads reply and 1 % send STOP
after their first touch; three poison records go straight to ``raw``.
"""

from __future__ import annotations

import asyncio
import csv
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
from confluent_kafka import Consumer, Producer

from simulator.config import config_from_mapping
from simulator.server import run_simulator
from sinks.campaigns import CampaignStore
from streams.admin import ensure_topics
from streams.campaign import load_campaign
from streams.codec import AvroCodec
from streams.infra.process import free_port
from streams.ingest import ingest_file
from streams.invariants import check_campaign, read_state_changelog
from streams.leadgen import LeadMix, write_csv
from streams.settings import REPO_ROOT, Settings

LEADS = 2000
TIME_SCALE = 20000  # a week in about 30 s
SECRET = "e2e-webhook-secret-0123456789"
pytestmark = pytest.mark.slow


def _start_worker(env: dict[str, str], cwd: Path) -> subprocess.Popen[bytes]:
    with (cwd / "worker.log").open("ab") as log:  # the child keeps its own handle
        return subprocess.Popen(
            [sys.executable, "-m", "streams.cli", "worker", "-l", "warn"],
            env=env,
            cwd=cwd,
            stdout=log,
            stderr=subprocess.STDOUT,
        )


def _stop(proc: subprocess.Popen[bytes]) -> None:
    proc.terminate()
    try:
        proc.wait(30)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(10)


async def _messages(http: aiohttp.ClientSession, url: str, campaign: str) -> list[dict[str, Any]]:
    async with http.get(f"{url}/_sim/messages", params={"campaign_id": campaign}) as resp:
        data = await resp.json()
    return list(data["messages"] if isinstance(data, dict) else data)


def _states(dsn: str, campaign: str) -> Counter[str]:
    with psycopg.connect(dsn) as conn:
        rows = conn.execute(
            "SELECT state, count(*) FROM leads WHERE campaign_id = %s GROUP BY state", (campaign,)
        ).fetchall()
    return Counter({str(s): int(str(n)) for s, n in rows})


def _poison(settings: Settings, campaign: str) -> None:
    codec = AvroCodec("leadflow.RawLead")
    good = {
        "campaign_id": "no-such-campaign",
        "lead_id": "poison-3",
        "phone": "+15128675309",
        "attributes": {},
        "event_time": 0,
        "source": "api",
    }
    producer = Producer(
        {"bootstrap.servers": settings.bootstrap_servers, "partitioner": "murmur2_random"}
    )
    topic = settings.topic_name("raw")
    producer.produce(topic, key=b"poison-1", value=b'{"not": "avro"}')
    producer.produce(topic, key=b"poison-2", value=AvroCodec("leadflow.TouchSent").header + b"\x00")
    producer.produce(topic, key=b"poison-3", value=codec.encode(good))
    assert producer.flush(15) == 0
    del campaign


def _dead_letters(settings: Settings) -> list[dict[str, Any]]:
    consumer = Consumer(
        {
            "bootstrap.servers": settings.bootstrap_servers,
            "group.id": uuid.uuid4().hex,
            "auto.offset.reset": "earliest",
        }
    )
    consumer.subscribe([settings.topic_name("dead-letter")])
    codec = AvroCodec("leadflow.DeadLetter")
    out: list[dict[str, Any]] = []
    deadline = time.monotonic() + 15
    try:
        while time.monotonic() < deadline:
            msg = consumer.poll(0.5)
            if msg is None:
                if out:
                    break
                continue
            if msg.error():
                continue
            out.append(codec.decode(msg.value()))  # type: ignore[arg-type]
    finally:
        consumer.close()
    return out


async def test_campaign_end_to_end(
    isolated: tuple[Settings, dict[str, str]], dsn: str, tmp_path: Path
) -> None:
    settings, subprocess_env = isolated
    campaign = replace(
        load_campaign(REPO_ROOT / "examples" / "campaign.yaml"), id=f"e2e-{uuid.uuid4().hex[:8]}"
    )
    CampaignStore(dsn).create(campaign)
    ensure_topics(settings)
    web_port = free_port()
    sim_config = config_from_mapping(
        {
            "host": "127.0.0.1",
            "port": 0,
            "smtp_port": 0,
            "seed": 5,
            "time_scale": TIME_SCALE,
            # Only the replies and opt-outs this test triggers itself.
            "webhooks": {
                "url": f"http://127.0.0.1:{web_port}/webhooks/sim",
                "secret": SECRET,
                "delivery_rate": 0.0,
                "reply_rate": 0.0,
                "opt_out_rate": 0.0,
                "bounce_rate": 0.0,
            },
        }
    )
    async with run_simulator(sim_config) as sim, aiohttp.ClientSession() as http:
        env = {
            **subprocess_env,
            "LEADFLOW_TIME_SCALE": str(TIME_SCALE),
            "LEADFLOW_CLOCK_START": "2026-11-30T13:00:00+00:00",  # Monday, 08:00 New York
            "LEADFLOW_WEB_PORT": str(web_port),
            "LEADFLOW_WEBHOOK_SECRET": SECRET,
            "LEADFLOW_SMS_URL": sim.http_url,
            "LEADFLOW_VOICE_URL": sim.http_url,
            "LEADFLOW_ENRICH_URL": sim.http_url,
            "LEADFLOW_SMTP_HOST": sim.smtp_host,
            "LEADFLOW_SMTP_PORT": str(sim.smtp_port),
            "LEADFLOW_SMS_RATE": "0",
            "LEADFLOW_VOICE_RATE": "0",
            "LEADFLOW_EMAIL_RATE": "0",
            "LEADFLOW_ENRICH_RATE": "0",
        }
        worker = _start_worker(env, tmp_path)
        try:
            path = write_csv(
                tmp_path / "leads.csv", LEADS, seed=21, mix=LeadMix(invalid=0.05, duplicates=0.03)
            )
            summary = ingest_file(replace(settings), campaign.id, path)
            _poison(settings, campaign.id)
            with path.open(newline="") as fh:
                rows = list(csv.DictReader(fh))
            rejected = {
                json.loads(line)["line"]
                for line in (tmp_path / "leads.csv.rejects.jsonl").read_text().splitlines()
            }
            accepted = [r["lead_id"] for n, r in enumerate(rows, start=2) if n not in rejected]
            assert len(accepted) == summary.published
            # 2 % reply and 1 % opt out, each right after their first touch.
            reply_to = set(accepted[10 : 10 + LEADS // 50])
            stop_from = set(accepted[200 : 200 + LEADS // 100])
            pending = {**dict.fromkeys(reply_to, "reply"), **dict.fromkeys(stop_from, "opt_out")}
            triggered: dict[str, set[str]] = {"reply": set(), "opt_out": set()}
            deadline = time.monotonic() + 240
            done = False
            while time.monotonic() < deadline and not done:
                await asyncio.sleep(1.0)
                assert worker.poll() is None, (tmp_path / "worker.log").read_text()[-3000:]
                if pending:
                    sent = {
                        m["lead_id"]
                        for m in await _messages(http, sim.http_url, campaign.id)
                        if int(m["touch"]) == 1
                    }
                    for lead in [lead for lead in pending if lead in sent]:
                        kind = pending.pop(lead)
                        triggered[kind].add(lead)
                        body = "STOP" if kind == "opt_out" else "Sounds good, call me Tuesday"
                        async with http.post(
                            f"{sim.http_url}/_sim/webhooks/trigger",
                            json={
                                "kind": kind,
                                "campaign_id": campaign.id,
                                "lead_id": lead,
                                "body": body,
                                "wait": True,
                            },
                        ) as resp:
                            assert resp.status == 200, await resp.text()
                states = _states(dsn, campaign.id)
                open_ = (
                    states.get("in_sequence", 0)
                    + states.get("new", 0)
                    + states.get("enriched", 0)
                    + states.get("qualified", 0)
                )
                # Leads picked to reply but never contacted (duplicates, disqualified) drop out.
                done = sum(states.values()) >= len(accepted) and open_ == 0
            messages = await _messages(http, sim.http_url, campaign.id)
        finally:
            _stop(worker)
    log = (tmp_path / "worker.log").read_text()
    assert done, f"campaign did not finish: {_states(dsn, campaign.id)}\n{log[-3000:]}"

    changelog = read_state_changelog(
        settings.bootstrap_servers, settings.topic_name("leadflow-lead-state-changelog")
    )
    checks = check_campaign(
        dsn, campaign.id, messages, accepted_leads=accepted, changelog=changelog
    )
    report = "\n".join(c.line() for c in checks)
    assert all(c.ok for c in checks), report

    states = _states(dsn, campaign.id)
    expected_dupes = sum(1 for r in rows if "(" in r["phone"])  # generator writes twins as (xxx)
    assert states["duplicate"] == expected_dupes
    with psycopg.connect(dsn) as conn:
        final = dict(
            conn.execute(
                "SELECT lead_id, state FROM leads WHERE campaign_id = %s", (campaign.id,)
            ).fetchall()
        )
    assert len(triggered["reply"]) >= len(reply_to) * 0.8
    assert len(triggered["opt_out"]) >= len(stop_from) * 0.8
    # A reply or STOP after touch 1 ends the lead there (unless it had already finished).
    assert all(final[lead] in ("replied", "completed") for lead in triggered["reply"]), final
    assert all(final[lead] == "opted_out" for lead in triggered["opt_out"])
    assert states["replied"] >= len(triggered["reply"]) * 0.9, states
    assert states.get("completed", 0) > 0
    assert summary.rejected == len(rejected) > 0
    assert summary.reject_reasons == {"no_contact": summary.rejected}

    dead = _dead_letters(settings)
    reasons = Counter(
        d["reason"]
        for d in dead
        if d["lead_id"] in (None, "poison-1", "poison-2", "poison-3")
        or d["original_key"] in (b"poison-1", b"poison-2", b"poison-3")
    )
    assert reasons == {"not_avro": 1, "schema_mismatch": 1, "unknown_campaign": 1}, dead
    assert all(d["error_message"] and d["original_topic"] for d in dead)
