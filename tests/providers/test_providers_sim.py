"""The protection layer over real HTTP and SMTP, against the provider simulator.

Each test starts its own simulator on free ports (the ``sim`` fixture), steers
it through its control API (``POST /_sim/config``) and checks what it saw
(``GET /_sim/messages``, ``GET /_sim/stats``). Time is scaled down: a
100-per-60-s limit is exercised as 100 per 1 s.
"""

from __future__ import annotations

import asyncio
import dataclasses
import itertools
import socket
import statistics
import time
from dataclasses import replace
from typing import Any

import aiohttp
import pytest
from provider_testkit import max_in_window

from providers.base import (
    ChatMessage,
    EmailMessage,
    EnrichmentQuery,
    GenerationRequest,
    Secret,
    SmsMessage,
)
from providers.breaker import BreakerState
from providers.errors import (
    AmbiguousOutcomeError,
    CircuitOpenError,
    ClientError,
    ConnectionFailedError,
    GiveUpError,
    InvalidRecipientError,
)
from providers.factory import Providers, build_providers
from providers.guard import Guard
from providers.http_adapter import HttpSmsAdapter
from providers.ratelimit import Grant
from providers.retry import RetryPolicy
from providers.settings import ProviderSettings
from providers.transport import AiohttpTransport, HttpRequest, HttpResponse
from simulator.server import Simulator

TO = "+14155552671"  # a valid US number (phonenumbers agrees)


def sms(lead: str, touch: int = 1, campaign: str = "camp-1") -> SmsMessage:
    return SmsMessage(
        campaign_id=campaign, lead_id=lead, touch=touch, to=TO, body="Hi from leadflow"
    )


class RecordingTransport(AiohttpTransport):
    """The real transport, remembering every request it sent."""

    def __init__(self) -> None:
        super().__init__()
        self.sent: list[HttpRequest] = []

    async def send(self, request: HttpRequest) -> HttpResponse:
        self.sent.append(request)
        return await super().send(request)


def settings_for(sim: Simulator, **overrides: Any) -> ProviderSettings:
    base = ProviderSettings(
        sms_url=sim.http_url,
        voice_url=sim.http_url,
        enrich_url=sim.http_url,
        llm_url=sim.http_url,
        llm_adapter="openai",
        smtp_host=sim.smtp_host,
        smtp_port=sim.smtp_port,
        retry_base_s=0.01,
    )
    return dataclasses.replace(base, **overrides)


async def control(sim: Simulator, method: str, path: str, body: Any = None) -> Any:
    async with (
        aiohttp.ClientSession() as session,
        session.request(method, sim.http_url + path, json=body) as resp,
    ):
        assert resp.status == 200, await resp.text()
        return await resp.json()


async def configure(sim: Simulator, **endpoints: dict[str, Any]) -> None:
    await control(sim, "POST", "/_sim/config", {"endpoints": endpoints})


async def messages(sim: Simulator, **query: str) -> list[dict[str, Any]]:
    path = "/_sim/messages?" + "&".join(f"{k}={v}" for k, v in query.items())
    data = await control(sim, "GET", path)
    result: list[dict[str, Any]] = data["messages"]
    return result


# --- the rate limiter --------------------------------------------------------------------


async def test_rate_limit_never_exceeded_and_spread_evenly(sim: Simulator) -> None:
    await configure(sim, sms={"rate_limit": "100/1"})  # the provider enforces it too
    settings = settings_for(sim, sms_rate="100/1")  # 100 per 60 s, scaled 60x down
    async with build_providers(settings) as providers:
        limiter = providers.limiters["sms"]
        grants: list[Grant] = []
        reserve = limiter.reserve

        async def recording_reserve(**kwargs: Any) -> Grant:
            grant = await reserve(**kwargs)
            grants.append(grant)
            return grant

        limiter.reserve = recording_reserve  # type: ignore[method-assign]
        results = await asyncio.gather(*(providers.sms.send_sms(sms(f"l{i}")) for i in range(130)))
    starts = [g.start for g in grants]
    assert all(g.end is not None and g.end >= g.start for g in grants)  # the guard finished each
    assert len(results) == 130
    # Our side: never more than 100 in any 1-s window, one call every ~10 ms
    # (10.1 ms: the default 1 % headroom).
    assert max_in_window(starts, 1.0) <= 100
    gaps = [b - a for a, b in itertools.pairwise(starts)]
    assert statistics.median(gaps) == pytest.approx(0.0101, abs=0.003)
    assert max_in_window(starts, 0.1) <= 12  # no bursts
    # The provider's side: what it accepted, when.
    accepted = [m["accepted_at"] for m in await messages(sim, channel="sms")]
    assert len(accepted) == 130
    assert max_in_window(accepted, 1.0) <= 100
    # Call k + 100 started a window after call k's answer, so the provider never had
    # to say 429, whatever the transit jitter.
    stats = await control(sim, "GET", "/_sim/stats")
    assert stats["rate_limited_total"] == 0


# --- the circuit breaker --------------------------------------------------------------------


async def test_breaker_opens_on_an_outage_half_opens_and_closes(sim: Simulator) -> None:
    # A 30-s outage: 503 with Retry-After <= 30 s, short enough to be a plain failure.
    await configure(sim, sms={"outages": [[0, 30]]})
    settings = settings_for(
        sim,
        breaker_window=4,
        breaker_min_calls=4,
        breaker_reset_s=0.4,
        retry_attempts=1,
        sms_rate="0",
    )
    async with build_providers(settings) as providers:
        breaker = providers.breaker("sms")
        for i in range(4):
            with pytest.raises(GiveUpError) as info:
                await providers.sms.send_sms(sms(f"l{i}"))
            assert info.value.status == 503
        assert breaker.state is BreakerState.OPEN

        # While open: no request reaches the provider, and the stage learns when to resume.
        before = (await control(sim, "GET", "/_sim/stats"))["requests"]["sms"]["outage"]
        with pytest.raises(CircuitOpenError) as opened:
            await providers.sms.send_sms(sms("l9"))
        after = (await control(sim, "GET", "/_sim/stats"))["requests"]["sms"]["outage"]
        assert before == after == 4
        assert 0 < opened.value.retry_after <= 0.4
        assert breaker.retry_at == pytest.approx(opened.value.retry_at)

        await configure(sim, sms={"outages": []})  # the provider recovers
        await asyncio.sleep(opened.value.retry_after + 0.02)
        assert breaker.state is BreakerState.HALF_OPEN
        probe, other = await asyncio.gather(
            providers.sms.send_sms(sms("probe")),
            providers.sms.send_sms(sms("other")),
            return_exceptions=True,
        )
        assert not isinstance(probe, BaseException) and probe.status == "accepted"
        assert isinstance(other, CircuitOpenError)  # one probe at a time
        assert breaker.state is BreakerState.CLOSED
        assert (await providers.sms.send_sms(sms("after"))).status == "accepted"


# --- 429, Retry-After and the idempotency key -------------------------------------------------


async def test_429_retry_after_is_honoured_with_a_stable_key(sim: Simulator) -> None:
    await configure(sim, sms={"rate_limit": "1/1"})
    transport = RecordingTransport()
    settings = settings_for(sim, sms_rate="0")  # only the provider limits: force a 429
    async with build_providers(settings, transport=transport) as providers:
        await providers.sms.send_sms(sms("first"))
        started = time.monotonic()
        result = await providers.sms.send_sms(sms("second"))
        elapsed = time.monotonic() - started
    assert result.attempts == 2
    assert elapsed >= 0.9  # Retry-After: 1 (the sim's window frees ~1 s after the first)
    attempts = [r for r in transport.sent if b'"second"' in r.body]
    assert len(attempts) == 2
    keys = {r.headers["Idempotency-Key"] for r in attempts}
    assert keys == {sms("second").idempotency_key}
    (recorded,) = await messages(sim, lead_id="second")
    assert recorded["idempotency_key"] == sms("second").idempotency_key
    assert (await control(sim, "GET", "/_sim/stats"))["rate_limited_total"] == 1


# --- accept-then-drop: ambiguous, not a failure --------------------------------------------


async def test_accept_then_drop_is_ambiguous(sim: Simulator) -> None:
    await configure(sim, sms={"drop_after_accept_rate": 1.0})
    async with build_providers(settings_for(sim)) as providers:
        with pytest.raises(AmbiguousOutcomeError) as info:
            await providers.sms.send_sms(sms("dropped"))
        assert not isinstance(info.value, GiveUpError)
        assert not info.value.timed_out
        assert info.value.idempotency_key == sms("dropped").idempotency_key
        cost = providers.ledger.snapshot().by_campaign[("camp-1", "sms-http")].units
    (recorded,) = await messages(sim, lead_id="dropped")  # it was sent, exactly once
    assert recorded["response_lost"] is True
    assert recorded["idempotency_key"] == info.value.idempotency_key
    assert cost == 1.0  # booked: it probably went out


async def test_no_answer_after_sending_is_ambiguous_timeout(sim: Simulator) -> None:
    await configure(sim, sms={"timeout_rate": 1.0, "timeout_s": 5})
    async with build_providers(settings_for(sim, provider_timeout_s=0.3)) as providers:
        started = time.monotonic()
        with pytest.raises(AmbiguousOutcomeError) as info:
            await providers.sms.send_sms(sms("hung"))
        assert time.monotonic() - started < 1.0  # one attempt, the 0.3 s timeout
    assert info.value.timed_out


async def test_connect_failure_is_not_ambiguous_and_is_retried() -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    transport = AiohttpTransport()
    adapter = HttpSmsAdapter(
        name="sms-http",
        base_url=f"http://127.0.0.1:{port}",
        api_key=Secret("k"),
        guard=Guard("sms-http", retry=RetryPolicy(attempts=3, base=0.01)),
        transport=transport,
        sender="+14155550100",
    )
    with pytest.raises(GiveUpError) as info:
        await adapter.send_sms(sms("nobody-home"))
    await transport.aclose()
    assert info.value.attempts == 3
    assert isinstance(info.value.last_error, ConnectionFailedError)


async def test_resend_after_ambiguity_is_deduplicated_by_the_key(sim: Simulator) -> None:
    await control(sim, "POST", "/_sim/config", {"dedupe_idempotency_keys": True})
    await configure(sim, sms={"drop_after_accept_rate": 1.0})
    async with build_providers(settings_for(sim, sms_rate="0")) as providers:
        with pytest.raises(AmbiguousOutcomeError):
            await providers.sms.send_sms(sms("reconcile-me"))
        await configure(sim, sms={"drop_after_accept_rate": 0.0})
        again = await providers.sms.send_sms(sms("reconcile-me"))  # what reconcile may do
    recorded = await messages(sim, lead_id="reconcile-me")
    assert len(recorded) == 1
    assert again.message_id == recorded[0]["provider_message_id"]


async def test_invalid_number_fails_at_once(sim: Simulator) -> None:
    transport = RecordingTransport()
    async with build_providers(settings_for(sim), transport=transport) as providers:
        bad = SmsMessage(campaign_id="c", lead_id="l", touch=1, to="+10000000000", body="x")
        with pytest.raises(InvalidRecipientError) as info:
            await providers.sms.send_sms(bad)
    assert (info.value.status, info.value.code) == (400, "invalid_number")
    assert len(transport.sent) == 1


# --- email over SMTP, enrichment and text generation over HTTP -------------------------------


def email(lead: str) -> EmailMessage:
    return EmailMessage(
        campaign_id="camp-1",
        lead_id=lead,
        touch=3,
        to="jane@example.com",
        subject="Following up",
        text="Hi Jane.\nUnsubscribe: https://x.test/u/1\nACME Inc, 1 Main St, Springfield",
        list_unsubscribe="<https://x.test/u/1>",
    )


async def test_email_over_smtp(sim: Simulator) -> None:
    async with build_providers(settings_for(sim)) as providers:
        result = await providers.email.send_email(email("mail-1"))
    (recorded,) = await messages(sim, channel="email")
    assert recorded["idempotency_key"] == email("mail-1").idempotency_key
    assert (recorded["lead_id"], recorded["touch"]) == ("mail-1", 3)
    assert result.message_id.strip("<>") == recorded["provider_message_id"]


async def test_email_to_an_internationalised_address_uses_smtputf8(sim: Simulator) -> None:
    message = replace(email("mail-utf8"), to="garcía.müller@example.com", subject="Olá Chloé")
    async with build_providers(settings_for(sim)) as providers:
        result = await providers.email.send_email(message)
    (recorded,) = await messages(sim, channel="email")
    assert recorded["lead_id"] == "mail-utf8"
    assert result.status == "accepted"


async def test_email_accept_then_drop_is_ambiguous(sim: Simulator) -> None:
    await configure(sim, email={"drop_after_accept_rate": 1.0})
    async with build_providers(settings_for(sim)) as providers:
        with pytest.raises(AmbiguousOutcomeError):
            await providers.email.send_email(email("mail-dropped"))
    assert len(await messages(sim, channel="email")) == 1


async def test_enrichment_batches_over_http(sim: Simulator) -> None:
    queries = [
        EnrichmentQuery(key=f"k{i}", email=f"p{i}@acme.com", company="Acme", title="VP Sales",
                        country="US", state="CA", campaign_id="camp-1")
        for i in range(150)
    ]  # fmt: skip
    async with build_providers(settings_for(sim, enrich_rate="0")) as providers:
        results = await providers.enrichment.enrich(queries)
        snap = providers.ledger.snapshot()
    assert [r.key for r in results] == [q.key for q in queries]
    assert any(r.found for r in results)
    assert snap.by_provider["enrichment-http"].calls == 2
    assert snap.by_campaign[("camp-1", "enrichment-http")].units == pytest.approx(75.0)
    stats = await control(sim, "GET", "/_sim/stats")
    assert stats["enrich"]["leads"] == 150


async def test_enrichment_batch_beyond_provider_limit_is_a_client_error(sim: Simulator) -> None:
    queries = [EnrichmentQuery(key=f"k{i}") for i in range(101)]
    async with build_providers(settings_for(sim, enrich_batch_size=101)) as providers:
        with pytest.raises(ClientError) as info:
            await providers.enrichment.enrich(queries)
    assert (info.value.status, info.value.code) == (413, "batch_too_large")


async def test_text_generation_over_http(sim: Simulator) -> None:
    async with build_providers(settings_for(sim)) as providers:
        assert providers.llm is not None
        result = await providers.llm.generate(
            GenerationRequest(messages=[ChatMessage("user", "Draft a follow-up")], campaign_id="c")
        )
    assert result.text and result.completion_tokens > 0
    assert result.cost_units > 0


async def test_providers_close_their_session(sim: Simulator) -> None:
    providers: Providers = build_providers(settings_for(sim))
    await providers.sms.send_sms(sms("close-me"))
    await providers.aclose()
    transport = providers.transport
    assert isinstance(transport, AiohttpTransport)
    assert transport._session is None
