"""``GET /health`` on the worker's web server (agents/web_health.py), on real Kafka and Postgres."""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import AsyncIterator, Mapping
from dataclasses import replace
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from click.testing import CliRunner
from confluent_kafka import Producer
from fakes import worker_web_app

from agents import web_health
from agents.web_health import WorkerHealth, health_response
from providers.breaker import BreakerConfig, CircuitBreaker
from providers.settings import ProviderSettings
from sinks.campaigns import CampaignStore
from streams.admin import ensure_topics
from streams.app import app
from streams.campaign import load_campaign
from streams.commands.health import health
from streams.errors import DatabaseUnavailableError
from streams.health import HealthSettings
from streams.settings import REPO_ROOT, Settings

CHANNELS = ("enrichment", "sms", "voice", "email")


def make_breakers() -> dict[str, CircuitBreaker]:
    return {c: CircuitBreaker(f"{c}-http", BreakerConfig(window=2, min_calls=2)) for c in CHANNELS}


def open_breaker(breaker: CircuitBreaker) -> None:
    breaker.record_failure()
    breaker.record_failure()
    assert breaker.state == "open"


def make_monitor(
    settings: Settings, breakers: Mapping[str, CircuitBreaker], **thresholds: Any
) -> WorkerHealth:
    async def source() -> Mapping[str, CircuitBreaker]:
        return breakers

    return WorkerHealth(
        settings,
        HealthSettings(timeout_s=20.0, **thresholds),  # generous: CI machines are shared
        ProviderSettings.from_env({}),
        breakers=source,
    )


@pytest.fixture
def campaign_id(dsn: str) -> str:
    """A fresh active campaign with no leads (so nothing else in the database matters)."""
    cid = f"wh-{uuid.uuid4().hex[:8]}"
    CampaignStore(dsn).create(replace(load_campaign(REPO_ROOT / "examples/campaign.yaml"), id=cid))
    return cid


@pytest.fixture
def topics(isolated: tuple[Settings, dict[str, str]]) -> tuple[Settings, dict[str, str]]:
    ensure_topics(isolated[0])
    return isolated


def test_the_view_is_registered_on_the_worker_web_server() -> None:
    web_app: web.Application = app.web.web_app  # type: ignore[attr-defined]
    routes = {
        (r.method, r.resource.canonical) for r in web_app.router.routes() if r.resource is not None
    }
    assert ("GET", "/health") in routes


async def test_healthy_is_200_and_a_breaker_open_too_long_is_503(
    topics: tuple[Settings, dict[str, str]], campaign_id: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    breakers = make_breakers()
    monitor = make_monitor(topics[0], breakers, breaker_open_s=0.05)
    monkeypatch.setattr(web_health, "_monitor", monitor)

    status, body = await health_response(campaign_id)
    assert status == 200, body["problems"]
    assert (body["healthy"], body["source"], body["services"]["worker"]) == (True, "worker", None)
    assert {c: b["state"] for c, b in body["breakers"].items()} == dict.fromkeys(CHANNELS, "closed")
    assert [c["campaign_id"] for c in body["campaigns"]] == [campaign_id]

    open_breaker(breakers["sms"])
    status, body = await health_response(campaign_id)
    assert status == 200  # open, but not for long yet
    await asyncio.sleep(0.1)
    status, body = await health_response(campaign_id)
    assert status == 503
    assert body["status"] == "unhealthy"
    assert [(p["check"], p.get("channel")) for p in body["problems"]] == [("breaker_open", "sms")]
    assert body["breakers"]["sms"]["state"] == "open"
    assert body["breakers"]["sms"]["not_closed_for_s"] >= 0.05
    assert body["stages"]["send"]["breakers"]["sms"] == "open"


async def test_an_unknown_campaign_is_404_and_a_broken_setup_503(
    topics: tuple[Settings, dict[str, str]], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(web_health, "_monitor", make_monitor(topics[0], make_breakers()))
    status, body = await health_response("no-such-campaign")
    assert (status, body["error"]["code"]) == (404, "campaign_not_found")

    monkeypatch.setattr(web_health, "_monitor", None)
    monkeypatch.setenv("LEADFLOW_HEALTH_STALL_S", "0")
    status, body = await health_response()
    assert (status, body["healthy"], body["error"]["code"]) == (503, False, "config")


async def test_breakers_are_unknown_while_the_pipeline_context_cannot_be_built(
    settings: Settings,
) -> None:
    async def broken() -> Mapping[str, CircuitBreaker]:
        raise DatabaseUnavailableError("Postgres unavailable")

    monitor = WorkerHealth(
        settings, HealthSettings(), ProviderSettings.from_env({}), breakers=broken
    )
    statuses = await monitor.breaker_statuses()
    assert set(statuses) == set(CHANNELS)
    assert {s.state for s in statuses.values()} == {"unknown"}


async def test_the_worker_times_a_stall_across_its_samples(
    topics: tuple[Settings, dict[str, str]], campaign_id: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    settings = topics[0]
    producer = Producer({"bootstrap.servers": settings.bootstrap_servers})
    for i in range(3):
        producer.produce(settings.topic_name("raw"), key=b"k%d" % i, value=b"v")
    producer.flush(10)
    monitor = make_monitor(settings, make_breakers(), stall_s=1.0)
    monkeypatch.setattr(web_health, "_monitor", monitor)
    await monitor.sample()  # what the worker's timer does
    status, body = await health_response(campaign_id)
    assert status == 200, body["problems"]  # lag, but not stalled for long yet
    await asyncio.sleep(1.2)
    status, body = await health_response(campaign_id)
    assert status == 503
    assert [(p["check"], p.get("stage")) for p in body["problems"]] == [("stage_stalled", "enrich")]
    assert body["stages"]["enrich"]["lag"] == 3
    assert body["stages"]["enrich"]["stalled_for_s"] >= 1.2


@pytest.fixture
async def served(
    topics: tuple[Settings, dict[str, str]], monkeypatch: pytest.MonkeyPatch
) -> AsyncIterator[tuple[str, dict[str, CircuitBreaker]]]:
    """Faust's own aiohttp app on a free port, with a monitor on this test's topics."""
    breakers = make_breakers()
    monkeypatch.setattr(web_health, "_monitor", make_monitor(topics[0], breakers))
    runner = web.AppRunner(worker_web_app(), access_log=None)
    await runner.setup()
    try:
        await web.TCPSite(runner, "127.0.0.1", 0).start()
        yield f"http://127.0.0.1:{runner.addresses[0][1]}", breakers
    finally:
        await runner.cleanup()


async def test_over_http_and_the_cli_takes_the_breakers_from_the_worker(
    served: tuple[str, dict[str, CircuitBreaker]],
    topics: tuple[Settings, dict[str, str]],
    campaign_id: str,
) -> None:
    url, breakers = served
    async with aiohttp.ClientSession() as http:
        async with http.get(f"{url}/health", params={"campaign": campaign_id}) as resp:
            assert resp.status == 200
            body = await resp.json()
        assert body["healthy"] is True
        assert [c["campaign_id"] for c in body["campaigns"]] == [campaign_id]

        open_breaker(breakers["voice"])
        env = {**topics[1], "LEADFLOW_HEALTH_BREAKER_OPEN_S": "0.01"}
        args = ["--campaign", campaign_id, "--json", "--worker-url", url, "--sample-s", "0"]
        await asyncio.sleep(0.05)
        result = await asyncio.to_thread(CliRunner().invoke, health, args, env=env)
        # This campaign only: campaigns other tests left in the shared database may be unhealthy.
        async with http.get(f"{url}/health", params={"campaign": campaign_id}) as resp:
            assert resp.status == 200  # the worker's own threshold (120 s) is not reached
    assert result.exit_code == 1, result.output
    doc = json.loads(result.stdout)
    assert doc["source"] == "cli"
    assert doc["services"]["worker"] == {"ok": True, "url": url}
    assert doc["breakers"]["voice"]["state"] == "open"
    assert doc["breakers"]["sms"]["state"] == "closed"
    assert [(p["check"], p.get("channel")) for p in doc["problems"]] == [("breaker_open", "voice")]
