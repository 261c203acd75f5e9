"""Stage 2, score: ``enriched`` -> ``scored``.

Scores each lead with the transparent model in :mod:`streams.scoring`, then
the campaign's qualification decides: at or above the threshold the lead is
``qualified`` with a priority tier, below it ``disqualified`` (terminal).
Every scored lead is emitted (analytics read the disqualified ones too); the
scheduler only sequences qualified ones.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from agents import topology
from agents.context import PipelineContext, get_context
from agents.enrich import UnknownCampaignError
from agents.lead_states import Step, rank
from agents.quarantine import QuarantinesDeadLetters
from agents.runtime import BatchResult, Item, Output, Stage, hold_until_done, runner_for
from sinks.lead_state import LeadFacts, StateChange, write_state_changes
from streams.app import app
from streams.codec import AvroCodec
from streams.scoring import score_lead
from streams.state_machine import TERMINAL, State

__all__ = ["ScoreStage"]


class ScoreStage(QuarantinesDeadLetters, Stage):
    """See the module docstring."""

    name = "score"
    input_schema = "leadflow.EnrichedLead"

    def __init__(self, ctx: PipelineContext) -> None:
        self.ctx = ctx
        self.db = ctx.db(self.name)
        self.out_topic = ctx.topic("scored")
        self.codec = AvroCodec("leadflow.ScoredLead", subject=self.out_topic)

    async def handle(self, items: Sequence[Item]) -> BatchResult:
        result = BatchResult()
        campaigns = await self.ctx.campaigns.get_many(i.campaign_id for i in items)
        changes: list[StateChange] = []
        now_ms = self.ctx.clock.now_ms()
        for item in items:
            view = campaigns.get(item.campaign_id or "")
            if view is None:
                result.failures.append(
                    (item, UnknownCampaignError(f"campaign {item.campaign_id!r} does not exist"))
                )
                continue
            current = self.ctx.states.get(item.campaign_id or "", item.lead_id)
            if (
                current is not None
                and current.state not in (State.QUALIFIED, State.DISQUALIFIED)
                and (current.state in TERMINAL or rank(current.state) > rank(State.QUALIFIED))
            ):
                continue  # a replay: already past scoring
            rec = item.record
            score = score_lead(rec)
            tier = view.campaign.tier_for(score.value)
            target = (
                Step(State.QUALIFIED, reason=f"tier:{tier}")
                if tier
                else Step(State.DISQUALIFIED, reason="below_threshold")
            )
            try:
                applied = self.ctx.states.advance(
                    item, [Step(State.ENRICHED), target], at_ms=now_ms, create=True
                )
            except Exception as exc:
                result.failures.append((item, exc))
                continue
            facts = LeadFacts(
                identity_key=rec.get("identity_key"),
                tier=tier or "D",
                score=score.value,
                timezone=rec.get("timezone"),
            )
            changes += [StateChange(a.before, a.after, facts) for a in applied]
            record = {
                "campaign_id": item.campaign_id,
                "lead_id": item.lead_id,
                "identity_key": rec["identity_key"],
                "score": score.value,
                "tier": tier or "D",
                "qualified": tier is not None,
                "reasons": list(score.reasons),
                "first_name": rec.get("first_name"),
                "last_name": rec.get("last_name"),
                "email": rec.get("email"),
                "phone_e164": rec.get("phone_e164"),
                "company": rec.get("company"),
                "title": rec.get("title"),
                "timezone": rec["timezone"],
                "industry": rec.get("industry"),
                "event_time": rec["event_time"],
                "state": rec.get("state"),
                "country": rec.get("country"),
            }
            result.outputs.append(Output(self.out_topic, item.key, self.codec.encode(record)))
        if changes:
            await hold_until_done(lambda: self._mirror(changes), "score: state mirror")
        return result

    async def _mirror(self, changes: list[StateChange]) -> None:
        async with self.db.transaction() as conn:
            await write_state_changes(conn, changes)


@app.agent(topology.topic("enriched"), name="score")
async def score_agent(stream: Any) -> None:
    """Faust agent: run the score stage over ``enriched``."""
    ctx = await get_context(app, topology.lead_state_table)
    await runner_for(ScoreStage(ctx), ctx, "enriched").run(stream)
