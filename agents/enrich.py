"""Stage 1, enrich (the LUCI research agent): ``raw`` -> ``enriched``.

For each raw lead: check its campaign exists; normalise the phone to E.164
and the email; derive the hashed identity; deduplicate within the campaign
(the first lead to claim an identity owns it, durably in Postgres, so a
duplicate is ``duplicate`` and never contacted); enrich from the cache when
fresh, otherwise from the provider in batches; resolve the time zone; emit
the ``leadflow.EnrichedLead``.

A record not keyed by its lead id (a null key, another key) is published
again to ``raw`` keyed by its lead id, and only that copy is handled: a
lead's table entry and records must all live on one partition.

A lead with neither a usable phone nor a usable email becomes ``invalid`` and
is also dead-lettered with reason ``no_contact``; a lead of an unknown
campaign is dead-lettered (``unknown_campaign``) and gets no state.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from agents import topology
from agents.context import PipelineContext, get_context
from agents.lead_states import Applied, Step, rank
from agents.quarantine import QuarantinesDeadLetters
from agents.runtime import BatchResult, Item, Output, Stage, hold_until_done, runner_for
from providers.base import EnrichmentQuery, EnrichmentResult
from sinks.enrichment_cache import cached_enrichment, store_enrichment
from sinks.identities import claim_identities
from sinks.lead_state import LeadFacts, StateChange, write_state_changes
from streams.app import app
from streams.codec import AvroCodec
from streams.contact import identity_key, normalize_email, normalize_phone
from streams.errors import LeadflowError
from streams.state_machine import TERMINAL, State
from streams.timezones import resolve_timezone

log = logging.getLogger(__name__)

__all__ = ["EnrichStage", "InvalidLeadError", "UnknownCampaignError"]

_ENRICH_FIELDS = ("industry", "company_size", "seniority", "revenue_band", "timezone")


class UnknownCampaignError(LeadflowError):
    """The record names a campaign that does not exist."""

    reason = "unknown_campaign"


class InvalidLeadError(LeadflowError):
    """The lead has neither a usable phone nor a usable email."""

    reason = "no_contact"


@dataclass
class _Candidate:
    item: Item
    phone: str | None
    email: str | None
    identity: str


class EnrichStage(QuarantinesDeadLetters, Stage):
    """See the module docstring."""

    name = "enrich"
    input_schema = "leadflow.RawLead"

    def __init__(self, ctx: PipelineContext) -> None:
        self.ctx = ctx
        self.db = ctx.db(self.name)
        self.in_topic = ctx.topic("raw")
        self.out_topic = ctx.topic("enriched")
        self.codec = AvroCodec("leadflow.EnrichedLead", subject=self.out_topic)
        self.ttl = timedelta(seconds=ctx.settings.enrich_cache_ttl_s)

    async def handle(self, items: Sequence[Item]) -> BatchResult:
        result = BatchResult()
        campaigns = await self.ctx.campaigns.get_many(i.campaign_id for i in items)
        candidates: list[_Candidate] = []
        changes: list[StateChange] = []
        now_ms = self.ctx.clock.now_ms()
        rekeyed = 0
        for item in items:
            if item.key != item.lead_id.encode():
                # Keyed other than by lead id (or not at all): the lead's later
                # records and its table entry would live on another partition.
                # Publish it again, keyed right; that copy is the one handled.
                result.outputs.append(Output(self.in_topic, item.lead_id.encode(), item.payload))
                rekeyed += 1
                continue
            if item.campaign_id not in campaigns:
                result.failures.append(
                    (item, UnknownCampaignError(f"campaign {item.campaign_id!r} does not exist"))
                )
                continue
            current = self.ctx.states.get(item.campaign_id or "", item.lead_id)
            if current is not None and (
                current.state in TERMINAL or rank(current.state) > rank(State.ENRICHED)
            ):
                continue  # a replay: this lead is already past enrichment
            rec = item.record
            phone = normalize_phone(rec.get("phone"), rec.get("country"))
            email = normalize_email(rec.get("email"))
            ident = identity_key(phone, email)
            if ident is None:
                applied = self.ctx.states.advance(
                    item, [Step(State.INVALID, reason="no_contact")], at_ms=now_ms, create=True
                )
                changes += _changes(applied)
                result.failures.append(
                    (item, InvalidLeadError("neither a usable phone nor a usable email"))
                )
                continue
            candidates.append(_Candidate(item, phone, email, ident))
        if candidates:
            owners, enrichment = await self._lookups(candidates)
            for cand in candidates:
                changes += self._emit(cand, owners, enrichment, now_ms, result)
        if changes:
            await hold_until_done(lambda: self._mirror(changes), "enrich: state mirror")
        if rekeyed:
            log.warning("enrich: re-published %d raw record(s) not keyed by their lead id", rekeyed)
        return result

    async def _lookups(
        self, candidates: list[_Candidate]
    ) -> tuple[dict[tuple[str, str], str], dict[str, dict[str, Any]]]:
        now = self.ctx.clock.now()
        async with self.db.transaction() as conn:
            owners = await claim_identities(
                conn, [(c.item.campaign_id or "", c.identity, c.item.lead_id) for c in candidates]
            )
            cached = await cached_enrichment(
                conn, (c.identity for c in candidates), now=now, ttl=self.ttl
            )
        missing: dict[str, _Candidate] = {}
        for cand in candidates:
            owner = owners.get((cand.item.campaign_id or "", cand.identity))
            if owner == cand.item.lead_id and cand.identity not in cached:
                missing.setdefault(cand.identity, cand)
        hits = sum(1 for c in candidates if c.identity in cached)
        if hits:
            for campaign_id in {c.item.campaign_id or "" for c in candidates}:
                self.ctx.providers.ledger.record_cache_hits(
                    self.ctx.providers.enrichment.name, campaign_id, hits, hits * 0.5
                )
        fresh: dict[str, dict[str, Any]] = {}
        if missing:
            results = await self.ctx.providers.enrichment.enrich(
                [_query(c) for c in missing.values()]
            )
            fresh = {r.key: _as_dict(r) for r in results}
            async with self.db.transaction() as conn:
                await store_enrichment(conn, fresh, now=now)
        for data in cached.values():
            data["_cached"] = True
        return owners, {**cached, **fresh}

    def _emit(
        self,
        cand: _Candidate,
        owners: dict[tuple[str, str], str],
        enrichment: dict[str, dict[str, Any]],
        now_ms: int,
        result: BatchResult,
    ) -> list[StateChange]:
        item, rec = cand.item, cand.item.record
        owner = owners.get((item.campaign_id or "", cand.identity), item.lead_id)
        if owner != item.lead_id:
            applied = self.ctx.states.advance(
                item,
                [Step(State.DUPLICATE, reason=f"duplicate_of:{owner}")],
                at_ms=now_ms,
                create=True,
            )
            return _changes(applied, LeadFacts(identity_key=cand.identity))
        data = enrichment.get(cand.identity, {"found": False})
        zone = resolve_timezone(
            rec.get("timezone"), data.get("timezone"), cand.phone, rec.get("state")
        )
        applied = self.ctx.states.advance(item, [Step(State.ENRICHED)], at_ms=now_ms, create=True)
        record = {
            "campaign_id": item.campaign_id,
            "lead_id": item.lead_id,
            "identity_key": cand.identity,
            "first_name": rec.get("first_name"),
            "last_name": rec.get("last_name"),
            "email": cand.email,
            "phone_e164": cand.phone,
            "company": rec.get("company"),
            "title": rec.get("title"),
            "timezone": zone,
            "country": rec.get("country"),
            "state": rec.get("state"),
            "attributes": rec.get("attributes") or {},
            "industry": data.get("industry"),
            "company_size": data.get("company_size"),
            "seniority": data.get("seniority"),
            "revenue_band": data.get("revenue_band"),
            "enrichment_cached": bool(data.get("_cached")),
            "duplicate_of": None,
            "event_time": rec["event_time"],
        }
        result.outputs.append(Output(self.out_topic, item.key, self.codec.encode(record)))
        return _changes(applied, LeadFacts(identity_key=cand.identity, timezone=zone))

    async def _mirror(self, changes: list[StateChange]) -> None:
        async with self.db.transaction() as conn:
            await write_state_changes(conn, changes)


def _changes(applied: list[Applied], facts: LeadFacts | None = None) -> list[StateChange]:
    return [StateChange(a.before, a.after, facts or LeadFacts()) for a in applied]


def _query(cand: _Candidate) -> EnrichmentQuery:
    rec = cand.item.record
    return EnrichmentQuery(
        key=cand.identity,
        email=cand.email or "",
        phone=cand.phone or "",
        company=rec.get("company") or "",
        title=rec.get("title") or "",
        country=rec.get("country") or "",
        state=rec.get("state") or "",
        campaign_id=cand.item.campaign_id or "",
    )


def _as_dict(result: EnrichmentResult) -> dict[str, Any]:
    out: dict[str, Any] = {"found": result.found}
    for name in _ENRICH_FIELDS:
        out[name] = getattr(result, name)
    return out


@app.agent(topology.topic("raw"), name="enrich")
async def enrich_agent(stream: Any) -> None:
    """Faust agent: run the enrich stage over ``raw``."""
    ctx = await get_context(app, topology.lead_state_table)
    await runner_for(EnrichStage(ctx), ctx, "raw").run(stream)
