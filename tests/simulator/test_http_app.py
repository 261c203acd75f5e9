"""simulator/http_app.py over real HTTP: endpoints, behaviour, duplicates, control API."""

from __future__ import annotations

import asyncio
from typing import Any

import aiohttp
import pytest

from simulator import Simulator
from simulator.testing import JsonPost, StartSim

CLOCK = "2026-01-05T15:00:00Z"


async def test_sms_happy_path_is_recorded(
    sms: dict[str, Any], sim: Simulator, post: JsonPost
) -> None:
    status, body, _ = await post(
        f"{sim.http_url}/v1/sms", sms, {"Idempotency-Key": "ik-1", "X-Leadflow-Clock": CLOCK}
    )
    assert status == 200
    assert body["status"] == "accepted" and body["cost_units"] == 1.0
    assert body["id"].startswith("sms_")
    [message] = sim.ledger.messages
    assert (message.provider_message_id, message.idempotency_key) == (body["id"], "ik-1")
    assert (message.campaign_id, message.lead_id, message.touch) == ("camp-1", "lead-1", 1)
    assert (message.channel, message.recipient, message.clock) == ("sms", sms["to"], CLOCK)


async def test_voice_happy_path(sms: dict[str, Any], sim: Simulator, post: JsonPost) -> None:
    voice = {k: v for k, v in sms.items() if k != "body"} | {"script": "Hello!", "touch": 2}
    status, body, _ = await post(f"{sim.http_url}/v1/voice", voice)
    assert status == 200
    assert body["status"] == "queued" and body["cost_units"] == 3.0
    assert sim.ledger.query(channel="voice")[0].provider_message_id == body["id"]


async def test_enrich_batch(sim: Simulator, post: JsonPost) -> None:
    leads = [{"key": f"k{i}", "company": "Globex Software", "state": "TX"} for i in range(20)]
    status, body, _ = await post(f"{sim.http_url}/v1/enrich", {"leads": leads})
    assert status == 200
    assert [r["key"] for r in body["results"]] == [f"k{i}" for i in range(20)]
    assert body["cost_units"] == 10.0
    again = await post(f"{sim.http_url}/v1/enrich", {"leads": leads[:5]})
    assert again[1]["results"] == body["results"][:5]
    assert sim.stats()["enrich"] == {"leads": 25, "unique_keys": 20, "repeat_lookups": 5}


async def test_enrich_batch_too_large(start_sim: StartSim, post: JsonPost) -> None:
    async with start_sim(enrich_max_batch=3) as sim:
        leads = [{"key": f"k{i}"} for i in range(4)]
        status, body, _ = await post(f"{sim.http_url}/v1/enrich", {"leads": leads})
    assert status == 413
    assert body["error"]["code"] == "batch_too_large"


async def test_chat_completions_is_openai_shaped_and_deterministic(
    sim: Simulator, post: JsonPost
) -> None:
    request = {"model": "gpt-test", "messages": [{"role": "user", "content": "Write a follow-up"}]}
    status, body, _ = await post(f"{sim.http_url}/v1/chat/completions", request)
    assert status == 200
    assert body["object"] == "chat.completion" and body["model"] == "gpt-test"
    text = body["choices"][0]["message"]["content"]
    assert body["choices"][0]["message"]["role"] == "assistant" and 20 < len(text) < 300
    usage = body["usage"]
    assert usage["total_tokens"] == usage["prompt_tokens"] + usage["completion_tokens"] > 0
    _, again, _ = await post(f"{sim.http_url}/v1/chat/completions", request)
    assert again["choices"] == body["choices"]
    _, short, _ = await post(f"{sim.http_url}/v1/chat/completions", request | {"max_tokens": 3})
    assert short["choices"][0]["finish_reason"] == "length"


@pytest.mark.parametrize("number", ["3125550123", "+1312", "+1 312 555 0123", "+10005550123"])
async def test_invalid_number_is_400(
    sms: dict[str, Any], sim: Simulator, post: JsonPost, number: str
) -> None:
    status, body, _ = await post(f"{sim.http_url}/v1/sms", sms | {"to": number})
    assert status == 400
    assert body["error"]["code"] == "invalid_number"
    assert sim.ledger.messages == []


@pytest.mark.parametrize(
    ("change", "code"),
    [({"touch": -1}, "invalid_request"), ({"lead_id": ""}, "invalid_request")],
)
async def test_bad_fields_are_400(
    sms: dict[str, Any], sim: Simulator, post: JsonPost, change: dict, code: str
) -> None:
    status, body, _ = await post(f"{sim.http_url}/v1/sms", sms | change)
    assert (status, body["error"]["code"]) == (400, code)
    status, body, _ = await post(f"{sim.http_url}/v1/sms", sms, {"X-Leadflow-Clock": "noon"})
    assert (status, body["error"]["code"]) == (400, "invalid_clock")


async def test_auth(sms: dict[str, Any], start_sim: StartSim) -> None:
    async with start_sim(api_key="the-key") as sim, aiohttp.ClientSession() as session:
        url = f"{sim.http_url}/v1/sms"
        async with session.post(url, json=sms) as r:
            assert r.status == 401
            assert (await r.json())["error"]["code"] == "unauthorized"
        async with session.post(url, json=sms, headers={"Authorization": "Bearer nope"}) as r:
            assert r.status == 401
        async with session.post(url, json=sms, headers={"Authorization": "Bearer the-key"}) as r:
            assert r.status == 200


async def test_rate_limit_answers_429_with_retry_after(
    sms: dict[str, Any], start_sim: StartSim, post: JsonPost
) -> None:
    async with start_sim(endpoints={"sms": {"rate_limit": "3/60"}}) as sim:
        statuses = []
        for touch in range(1, 6):
            status, body, headers = await post(f"{sim.http_url}/v1/sms", sms | {"touch": touch})
            statuses.append(status)
        stats = sim.stats()
    assert statuses == [200, 200, 200, 429, 429]
    assert body["error"]["code"] == "rate_limited"
    assert 55 <= int(headers["Retry-After"]) <= 60
    assert stats["rate_limited_total"] == 2
    assert stats["messages"]["total"] == 3


async def test_outage_answers_503_with_retry_after(
    sms: dict[str, Any], start_sim: StartSim, post: JsonPost
) -> None:
    async with start_sim(endpoints={"voice": {"outages": [[0, 120]]}}) as sim:
        status, body, headers = await post(f"{sim.http_url}/v1/voice", sms | {"script": "hi"})
        sms_status, _, _ = await post(f"{sim.http_url}/v1/sms", sms)
        assert sim.stats()["requests"]["voice"]["outage"] == 1
    assert status == 503 and body["error"]["code"] == "service_unavailable"
    assert 110 <= int(headers["Retry-After"]) <= 120
    assert sms_status == 200  # other endpoints are unaffected


async def test_injected_error_is_500(start_sim: StartSim, post: JsonPost) -> None:
    async with start_sim(endpoints={"enrich": {"error_rate": 1.0}}) as sim:
        status, body, _ = await post(f"{sim.http_url}/v1/enrich", {"leads": [{"key": "k"}]})
    assert (status, body["error"]["code"]) == (500, "internal_error")


async def test_drop_after_accept_records_but_never_answers(
    sms: dict[str, Any], start_sim: StartSim, client: aiohttp.ClientSession
) -> None:
    async with start_sim(endpoints={"sms": {"drop_after_accept_rate": 1.0}}) as sim:
        with pytest.raises(aiohttp.ServerDisconnectedError):
            async with client.post(f"{sim.http_url}/v1/sms", json=sms) as response:
                await response.read()
        [message] = sim.ledger.messages
        assert message.response_lost is True
        assert sim.stats()["requests"]["sms"]["dropped"] == 1


async def test_timeout_hangs_and_is_not_recorded(
    sms: dict[str, Any], start_sim: StartSim, client: aiohttp.ClientSession
) -> None:
    endpoints = {"sms": {"timeout_rate": 1.0, "timeout_s": 5}}
    async with start_sim(endpoints=endpoints) as sim:
        with pytest.raises(asyncio.TimeoutError):
            async with client.post(
                f"{sim.http_url}/v1/sms", json=sms, timeout=aiohttp.ClientTimeout(total=0.2)
            ) as response:
                await response.read()
        assert sim.ledger.messages == []
        assert sim.stats()["requests"]["sms"]["timeout"] == 1
    # leaving the block did not wait the full 5 s: shutdown ends hanging requests


async def test_duplicate_detector_catches_a_double_send(
    sms: dict[str, Any], sim: Simulator, post: JsonPost
) -> None:
    url = f"{sim.http_url}/v1/sms"
    # the same idempotency key twice (a blind retry) ...
    for _ in range(2):
        assert (await post(url, sms, {"Idempotency-Key": "camp-1:lead-1:1"}))[0] == 200
    # ... and the same (campaign, lead, touch) under a new key (a lost claim)
    assert (await post(url, sms | {"lead_id": "lead-2"}, {"Idempotency-Key": "a"}))[0] == 200
    assert (await post(url, sms | {"lead_id": "lead-2"}, {"Idempotency-Key": "b"}))[0] == 200
    # a different touch is not a duplicate
    assert (await post(url, sms | {"touch": 2}, {"Idempotency-Key": "c"}))[0] == 200
    async with (
        aiohttp.ClientSession() as session,
        session.get(f"{sim.http_url}/_sim/stats") as response,
    ):
        dups = (await response.json())["duplicates"]
    assert dups["total"] == 2
    assert dups["by_idempotency_key"] == 1
    assert dups["by_campaign_lead_touch"] == 2
    groups = {(g["kind"], g.get("lead_id")) for g in dups["groups"]}
    assert groups == {
        ("idempotency_key", None),
        ("campaign_lead_touch", "lead-1"),
        ("campaign_lead_touch", "lead-2"),
    }


async def test_dedupe_mode_replays_the_first_answer(
    sms: dict[str, Any], start_sim: StartSim, post: JsonPost
) -> None:
    async with start_sim(dedupe_idempotency_keys=True) as sim:
        url = f"{sim.http_url}/v1/sms"
        _, first, _ = await post(url, sms, {"Idempotency-Key": "k"})
        _, second, _ = await post(url, sms, {"Idempotency-Key": "k"})
        assert second["id"] == first["id"]
        assert len(sim.ledger.messages) == 1
        assert sim.stats()["requests"]["sms"]["idempotent_replay"] == 1


async def test_messages_listing_filters(
    sms: dict[str, Any], sim: Simulator, post: JsonPost
) -> None:
    await post(f"{sim.http_url}/v1/sms", sms)
    await post(f"{sim.http_url}/v1/sms", sms | {"lead_id": "lead-2"})
    await post(f"{sim.http_url}/v1/voice", sms | {"script": "hi", "touch": 2})
    async with aiohttp.ClientSession() as session:
        base = f"{sim.http_url}/_sim/messages"
        async with session.get(base) as r:
            assert (await r.json())["count"] == 3
        async with session.get(base, params={"channel": "sms", "lead_id": "lead-1"}) as r:
            listed = await r.json()
        async with session.get(base, params={"channel": "fax"}) as r:
            assert r.status == 400
    assert listed["count"] == 1
    assert listed["messages"][0]["channel"] == "sms"
    assert listed["messages"][0]["lead_id"] == "lead-1"


async def test_runtime_config_reset_health_and_404(
    sms: dict[str, Any], sim: Simulator, post: JsonPost
) -> None:
    base = sim.http_url
    status, body, _ = await post(
        f"{base}/_sim/config", {"endpoints": {"sms": {"outage_for_s": 60}}}
    )
    assert status == 200 and len(body["endpoints"]["sms"]["outages"]) == 1
    assert (await post(f"{base}/v1/sms", sms))[0] == 503
    status, body, _ = await post(f"{base}/_sim/config", {"endpoints": {"sms": {"error_rate": 2}}})
    assert status == 400 and body["error"]["code"] == "invalid_config"
    assert "endpoints.sms.error_rate" in body["error"]["message"]
    assert (await post(f"{base}/_sim/config", {"port": 1}))[0] == 400
    await post(f"{base}/_sim/config", {"endpoints": {"sms": {"outages": []}}})
    assert (await post(f"{base}/v1/sms", sms))[0] == 200
    assert (await post(f"{base}/_sim/reset", {}))[0] == 200
    assert sim.ledger.messages == [] and sim.stats()["requests"] == {}
    async with aiohttp.ClientSession() as session:
        async with session.get(f"{base}/_sim/health") as r:
            health = await r.json()
        async with session.get(f"{base}/v1/fax") as r:
            missing = (r.status, await r.json())
    assert health["status"] == "ok" and health["http_url"] == base
    assert health["smtp"]["port"] == sim.smtp_port
    assert missing == (404, {"error": {"code": "not_found", "message": "Not Found"}})
