"""A lead whose record a stage dead-letters ends quarantined (agents/quarantine.py)."""

from __future__ import annotations

import uuid
from collections.abc import Sequence

from fakes import (
    FakeProducer,
    FakeTable,
    inbound_event,
    lead_state,
    rows,
    seed_campaign,
)

from agents.context import PipelineContext
from agents.lead_states import LeadStates
from agents.quarantine import QuarantinesDeadLetters
from agents.runtime import BatchResult, Item, Stage, StageRunner
from streams.clock import CampaignClock
from streams.codec import AvroCodec
from streams.settings import Settings
from streams.state_machine import State


class FailingStage(QuarantinesDeadLetters, Stage):
    """Fails every item it is given."""

    name = "failing"
    input_schema = "leadflow.InboundEvent"

    def __init__(self, ctx: PipelineContext) -> None:
        self.ctx = ctx

    async def handle(self, items: Sequence[Item]) -> BatchResult:
        return BatchResult(failures=[(item, ValueError("boom")) for item in items])


async def test_a_dead_lettered_open_lead_is_quarantined_and_an_ended_one_left_alone(
    settings: Settings, dsn: str
) -> None:
    campaign = f"q-{uuid.uuid4().hex[:8]}"
    seed_campaign(dsn, campaign)
    table = FakeTable()
    table.put(lead_state(campaign, "open", State.IN_SEQUENCE, touch=2))
    table.put(lead_state(campaign, "done", State.COMPLETED, touch=4))
    ctx = PipelineContext(
        settings=settings,
        clock=CampaignClock.realtime(),
        campaigns=None,  # type: ignore[arg-type]
        providers=None,  # type: ignore[arg-type]
        states=LeadStates(table),
        producer=FakeProducer(),
    )
    runner = StageRunner(
        FailingStage(ctx), producer=ctx.producer, input_topic="in", dead_letter_topic="dlq"
    )
    try:
        await runner.process(
            [
                inbound_event(campaign_id=campaign, lead_id="open"),
                inbound_event(campaign_id=campaign, lead_id="done"),
                inbound_event(campaign_id=campaign, lead_id="never-seen"),
            ]
        )
    finally:
        for db in ctx._dbs.values():
            await db.aclose()

    opened = table.state_of("open")
    assert opened is not None
    assert (opened.state, opened.reason) == (State.QUARANTINED, "dead_lettered:unexpected")
    assert table.state_of("done") is not None and table.state_of("done").state is State.COMPLETED  # type: ignore[union-attr]
    assert table.state_of("never-seen") is None
    assert rows(
        dsn, "SELECT lead_id, state, reason FROM leads WHERE campaign_id = %s", campaign
    ) == [("open", "quarantined", "dead_lettered:unexpected")]
    producer = ctx.producer
    assert isinstance(producer, FakeProducer)
    dead = [AvroCodec("leadflow.DeadLetter").decode(s.value) for s in producer.to("dlq")]
    assert sorted(d["lead_id"] for d in dead) == ["done", "never-seen", "open"]  # all kept
