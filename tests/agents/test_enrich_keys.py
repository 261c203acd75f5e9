"""The enrich stage re-keys raw records not keyed by their lead id (agents/enrich.py)."""

from __future__ import annotations

from collections.abc import Iterable
from datetime import UTC, datetime
from typing import Any

from fakes import FakeEvent, FakeMessage, FakeProducer, FakeTable

from agents.context import PipelineContext
from agents.enrich import EnrichStage
from agents.lead_states import LeadStates
from agents.runtime import StageRunner
from streams.clock import CampaignClock
from streams.codec import AvroCodec
from streams.settings import Settings

RAW = AvroCodec("leadflow.RawLead", subject="raw")


class NoCampaigns:
    """A campaign cache that knows none (the re-keyed records never need one)."""

    async def get_many(self, ids: Iterable[str | None]) -> dict[str, Any]:
        list(ids)
        return {}


def raw_event(key: bytes | None, lead_id: str) -> FakeEvent:
    record: dict[str, Any] = {
        "lead_id": lead_id,
        "campaign_id": "c1",
        "phone": "+15125550100",
        "event_time": datetime(2026, 1, 5, tzinfo=UTC),
    }
    return FakeEvent(FakeMessage("raw", 0, 7, key, RAW.encode(record)))


async def test_a_record_keyed_wrong_or_not_at_all_is_republished_keyed_by_its_lead_id() -> None:
    settings = Settings()
    table = FakeTable()
    ctx = PipelineContext(
        settings=settings,
        clock=CampaignClock.realtime(),
        campaigns=NoCampaigns(),  # type: ignore[arg-type]
        providers=None,  # type: ignore[arg-type]
        states=LeadStates(table),
        producer=FakeProducer(),
    )
    stage = EnrichStage(ctx)
    runner = StageRunner(
        stage, producer=ctx.producer, input_topic=stage.in_topic, dead_letter_topic="dlq"
    )
    events = [raw_event(None, "lead-a"), raw_event(b"someone-else", "lead-b")]
    await runner.process(events)

    producer = ctx.producer
    assert isinstance(producer, FakeProducer)
    again = producer.to(stage.in_topic)
    assert [s.key for s in again] == [b"lead-a", b"lead-b"]
    assert [s.value for s in again] == [e.message.value for e in events]  # byte for byte
    assert producer.to("dlq") == []
    assert table.state_of("lead-a") is None  # no state on the wrong partition
