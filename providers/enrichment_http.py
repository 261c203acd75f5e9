"""The HTTP enrichment adapter: batch lookups, many leads per request.

Wire format::

    POST {base_url}/v1/enrich
    {"leads": [{"key", "email", "phone", "company", "title", "country", "state"}, ...]}

    200 {"results": [{"key", "found": true, "industry", "company_size", "seniority",
                      "revenue_band", "timezone", "linkedin_url"}, ...],
         "cost_units": 50.0}

:meth:`HttpEnrichmentAdapter.enrich` splits any number of queries into
batches of ``max_batch`` (default 100; the provider answers 413 beyond its
limit), sends each through the guard and returns one result per query, in
query order. Lookups have no side effects, so a lost answer is retried like
a timeout. A batch's ``cost_units`` are split over the campaigns of its
leads, in proportion to their number of leads.

Deduplication and the result cache live in the pipeline, in front of this
adapter; it records the lookups it saved with
:meth:`providers.cost.CostLedger.record_cache_hits`, using
:attr:`HttpEnrichmentAdapter.cost_per_lead` as the saving per hit.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping, Sequence
from typing import Any, ClassVar

from providers.base import EnrichmentQuery, EnrichmentResult
from providers.cost import Charge
from providers.errors import BadResponseError, ProviderConfigError
from providers.guard import Attempt
from providers.http_adapter import HttpAdapterBase, RequestSpec
from providers.transport import HttpResponse

__all__ = ["HttpEnrichmentAdapter"]

_TEXT_FIELDS = ("industry", "seniority", "revenue_band", "timezone", "linkedin_url")


class HttpEnrichmentAdapter(HttpAdapterBase):
    """Batch enrichment over HTTP; implements ``EnrichmentProvider``.

    ``default_cost`` is the cost *per lead* assumed when an answer carries no
    ``cost_units``.
    """

    kind: ClassVar[str] = "enrichment"
    path: ClassVar[str] = "/v1/enrich"

    def __init__(self, *, max_batch: int = 100, default_cost: float = 0.5, **kwargs: Any) -> None:
        if max_batch < 1:
            raise ProviderConfigError(f"enrichment batch size must be >= 1, got {max_batch}")
        super().__init__(default_cost=default_cost, **kwargs)
        self.max_batch = max_batch
        self._units = 0.0
        self._leads = 0

    @property
    def cost_per_lead(self) -> float:
        """Average cost of one looked-up lead so far (``default_cost`` before any call)."""
        return self._units / self._leads if self._leads else self.default_cost

    async def enrich(self, queries: Sequence[EnrichmentQuery]) -> list[EnrichmentResult]:
        """Look ``queries`` up in batches; one result per query, in order."""
        results: list[EnrichmentResult] = []
        for start in range(0, len(queries), self.max_batch):
            results.extend(await self._batch(queries[start : start + self.max_batch]))
        return results

    def build_request(self, queries: Sequence[EnrichmentQuery]) -> RequestSpec:
        """The request body for one batch."""
        return RequestSpec(
            self.path,
            {
                "leads": [
                    {
                        "key": q.key,
                        "email": q.email,
                        "phone": q.phone,
                        "company": q.company,
                        "title": q.title,
                        "country": q.country,
                        "state": q.state,
                    }
                    for q in queries
                ]
            },
        )

    async def _batch(self, queries: Sequence[EnrichmentQuery]) -> list[EnrichmentResult]:
        spec = self.build_request(queries)

        async def attempt(at: Attempt) -> tuple[list[EnrichmentResult], float]:
            response = await self.exchange(spec, at)
            return self.parse_response(queries, response)

        results, _ = await self.guard.call(
            attempt, charge=lambda r: self._charges(queries, r[1]), side_effect=False
        )
        return results

    def _charges(self, queries: Sequence[EnrichmentQuery], units: float) -> list[Charge]:
        self._units += units
        self._leads += len(queries)
        per_campaign = Counter(q.campaign_id for q in queries)
        total = len(queries)
        return [
            Charge(campaign, units * count / total, count)
            for campaign, count in per_campaign.items()
        ]

    def parse_response(
        self, queries: Sequence[EnrichmentQuery], response: HttpResponse
    ) -> tuple[list[EnrichmentResult], float]:
        """Results in query order and the batch's cost; :class:`BadResponseError` on garbage."""
        data = self.json_object(response)
        raw = data.get("results")
        if not isinstance(raw, list):
            raise BadResponseError(self.name, "answer has no results list", status=response.status)
        by_key: dict[str, EnrichmentResult] = {}
        for item in raw:
            result = self._result(item, response)
            by_key[result.key] = result
        missing = sum(1 for q in queries if q.key not in by_key)
        if missing:
            raise BadResponseError(
                self.name,
                f"answer lacks {missing} of {len(queries)} leads",
                status=response.status,
            )
        units = (
            self.cost_from(data, response)
            if data.get("cost_units") is not None
            else self.default_cost * len(queries)
        )
        return [by_key[q.key] for q in queries], units

    def _result(self, item: Any, response: HttpResponse) -> EnrichmentResult:
        def bad(what: str) -> BadResponseError:
            return BadResponseError(self.name, f"result {what}", status=response.status)

        if not isinstance(item, Mapping):
            raise bad("is not an object")
        key = item.get("key")
        found = item.get("found")
        if not isinstance(key, str):
            raise bad("has no key")
        if not isinstance(found, bool):
            raise bad("has no boolean 'found'")
        texts: dict[str, str | None] = {}
        for name in _TEXT_FIELDS:
            value = item.get(name)
            if value is not None and not isinstance(value, str):
                raise bad(f"field {name!r} is not a string")
            texts[name] = value
        size = item.get("company_size")
        if isinstance(size, bool) or not (size is None or isinstance(size, int | str)):
            raise bad("field 'company_size' is not a number")
        if isinstance(size, str):
            if not size.strip().isdigit():
                raise bad("field 'company_size' is not a number")
            size = int(size)
        return EnrichmentResult(
            key=key,
            found=found,
            industry=texts["industry"],
            company_size=size,
            seniority=texts["seniority"],
            revenue_band=texts["revenue_band"],
            timezone=texts["timezone"],
            linkedin_url=texts["linkedin_url"],
            extra={
                k: v
                for k, v in item.items()
                if k not in _KNOWN and isinstance(v, str | int | float | bool)
            },
        )


_KNOWN = frozenset({"key", "found", "company_size", *_TEXT_FIELDS})
