"""The HTTP enrichment adapter: batching, order, cost split, garbage, lost answers."""

from __future__ import annotations

import json
import random
from typing import Any

import pytest

from providers.base import EnrichmentQuery
from providers.enrichment_http import HttpEnrichmentAdapter
from providers.errors import AmbiguousOutcomeError, BadResponseError, ProviderConfigError
from providers.guard import Guard
from providers.retry import RetryPolicy
from providers.transport import HttpRequest, HttpResponse, MockTransport


def found(key: str) -> dict[str, Any]:
    return {
        "key": key,
        "found": True,
        "industry": "software",
        "company_size": 120,
        "seniority": "vp",
        "revenue_band": "10M-50M",
        "timezone": "America/New_York",
        "linkedin_url": "https://www.linkedin.com/in/x",
        "job_function": "sales",
    }


def echo(shuffle: bool = False, cost_per_lead: float | None = 0.5):  # type: ignore[no-untyped-def]
    def handler(req: HttpRequest) -> HttpResponse:
        leads = json.loads(req.body)["leads"]
        results = [found(lead["key"]) for lead in leads]
        if shuffle:
            random.Random(1).shuffle(results)
        body: dict[str, Any] = {"results": results}
        if cost_per_lead is not None:
            body["cost_units"] = cost_per_lead * len(leads)
        return HttpResponse(200, {}, json.dumps(body).encode())

    return handler


def adapter(
    transport: MockTransport, max_batch: int = 100, attempts: int = 1
) -> HttpEnrichmentAdapter:
    return HttpEnrichmentAdapter(
        name="enrichment-http",
        base_url="http://sim",
        api_key="k",
        guard=Guard("enrichment-http", retry=RetryPolicy(attempts=attempts, base=0.0)),
        transport=transport,
        max_batch=max_batch,
    )


def queries(n: int, campaign: str = "c1") -> list[EnrichmentQuery]:
    return [
        EnrichmentQuery(key=f"k{i}", email=f"p{i}@acme.com", company="Acme", campaign_id=campaign)
        for i in range(n)
    ]


async def test_splits_into_batches_and_keeps_query_order() -> None:
    transport = MockTransport(echo(shuffle=True))
    results = await adapter(transport).enrich(queries(250))
    assert [len(json.loads(r.body)["leads"]) for r in transport.requests] == [100, 100, 50]
    assert [r.key for r in results] == [f"k{i}" for i in range(250)]
    first = results[0]
    assert (first.found, first.company_size, first.timezone) == (True, 120, "America/New_York")
    assert first.extra == {"job_function": "sales"}


async def test_request_carries_the_contract_fields_and_no_idempotency_key() -> None:
    transport = MockTransport(echo())
    await adapter(transport).enrich(
        [
            EnrichmentQuery(
                key="k",
                email="e@x.com",
                phone="+14155552671",
                company="X",
                title="CTO",
                country="US",
                state="CA",
            )
        ]
    )
    (req,) = transport.requests
    assert req.url == "http://sim/v1/enrich"
    assert json.loads(req.body) == {
        "leads": [
            {"key": "k", "email": "e@x.com", "phone": "+14155552671", "company": "X",
             "title": "CTO", "country": "US", "state": "CA"}
        ]
    }  # fmt: skip
    assert "Idempotency-Key" not in req.headers


async def test_cost_is_split_over_campaigns() -> None:
    transport = MockTransport(echo(cost_per_lead=0.5))
    a = adapter(transport)
    await a.enrich(queries(3, "c1") + queries(1, "c2"))
    snap = a.guard.ledger.snapshot()
    assert snap.by_campaign[("c1", "enrichment-http")].units == pytest.approx(1.5)
    assert snap.by_campaign[("c2", "enrichment-http")].units == pytest.approx(0.5)
    assert snap.by_campaign[("c1", "enrichment-http")].items == 3
    assert snap.by_provider["enrichment-http"].calls == 1
    assert a.cost_per_lead == pytest.approx(0.5)


async def test_missing_cost_uses_default_per_lead() -> None:
    a = adapter(MockTransport(echo(cost_per_lead=None)))
    await a.enrich(queries(4))
    assert a.guard.ledger.snapshot().by_provider["enrichment-http"].units == pytest.approx(2.0)


async def test_not_found_result() -> None:
    transport = MockTransport(
        lambda req: HttpResponse(
            200, {}, b'{"results": [{"key": "k0", "found": false}], "cost_units": 0.5}'
        )
    )
    (result,) = await adapter(transport).enrich(queries(1))
    assert (result.found, result.industry, result.company_size) == (False, None, None)


@pytest.mark.parametrize(
    ("body", "words"),
    [
        (b"not json", "not JSON"),
        (b'{"results": "x"}', "no results list"),
        (b'{"results": [{"key": "k0"}]}', "boolean 'found'"),
        (b'{"results": [{"found": true}]}', "no key"),
        (b'{"results": [7]}', "not an object"),
        (b'{"results": [{"key": "k0", "found": true, "industry": 5}]}', "'industry'"),
        (b'{"results": [{"key": "k0", "found": true, "company_size": "lots"}]}', "company_size"),
        (b'{"results": []}', "lacks 1 of 1"),
    ],
)
async def test_garbage_is_a_bad_response(body: bytes, words: str) -> None:
    transport = MockTransport(lambda req: HttpResponse(200, {}, body))
    with pytest.raises(BadResponseError) as info:
        await adapter(transport, attempts=3).enrich(queries(1))
    assert words in str(info.value)
    assert info.value.status == 200
    assert len(transport.requests) == 1


async def test_numeric_string_company_size_is_accepted() -> None:
    body = b'{"results": [{"key": "k0", "found": true, "company_size": "42"}]}'
    (result,) = await adapter(MockTransport(lambda req: HttpResponse(200, {}, body))).enrich(
        queries(1)
    )
    assert result.company_size == 42


async def test_lost_answer_is_retried_for_lookups() -> None:
    calls = 0
    ok = echo()

    def handler(req: HttpRequest) -> HttpResponse:
        nonlocal calls
        calls += 1
        if calls == 1:
            raise AmbiguousOutcomeError("enrichment-http", "sent, then reset")
        return ok(req)

    results = await adapter(MockTransport(handler), attempts=3).enrich(queries(2))
    assert calls == 2
    assert len(results) == 2


def test_batch_size_must_be_positive() -> None:
    with pytest.raises(ProviderConfigError):
        adapter(MockTransport(echo()), max_batch=0)
