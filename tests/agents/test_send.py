"""The send stage (agents/send.py, real Postgres): budget cap, requeues, a table behind."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from dataclasses import replace
from datetime import UTC, datetime
from typing import Any

import psycopg
import pytest
from fakes import FakeEvent, FakeMessage, FakeProducer, FakeProviders, FakeTable, lead_state, rows
from psycopg.types.json import Jsonb

from agents.campaign_cache import CampaignCache
from agents.context import PipelineContext
from agents.lead_states import LeadStates
from agents.runtime import StageRunner
from agents.send import SendStage
from sinks.db import StageDatabase
from streams.campaign import load_campaign
from streams.clock import CampaignClock
from streams.codec import AvroCodec
from streams.settings import REPO_ROOT, Settings
from streams.state_machine import State

TOUCH = AvroCodec("leadflow.TouchDue", subject="touch-due")
SENT = AvroCodec("leadflow.TouchSent", subject="sent")
# Monday 2026-01-05 09:30 in Chicago: inside the default send window.
NOW = datetime(2026, 1, 5, 15, 30, tzinfo=UTC).timestamp()


def touch_due(campaign: str, lead: str, offset: int) -> FakeEvent:
    record = {
        "campaign_id": campaign,
        "lead_id": lead,
        "touch": 1,
        "channel": "sms",
        "persona": "gianna",
        "template": "intro",
        "variant": None,
        "due_at": datetime.fromtimestamp(NOW, UTC),
        "priority": 1000,
        "tier": "A",
        "attempt": 1,
        "event_time": datetime.fromtimestamp(NOW, UTC),
        "to_phone": "+15125550100",
        "to_email": None,
        "first_name": "Ann",
        "last_name": None,
        "company": None,
        "title": None,
        "timezone": "America/Chicago",
        "state": "TX",
        "identity_key": None,
    }
    return FakeEvent(FakeMessage("touch-due", 0, offset, lead.encode(), TOUCH.encode(record)))


def _released_touch(settings: Settings, campaign: str, lead: str) -> None:
    """Queue touch 1 of ``lead`` as released (emitted) now."""
    with psycopg.connect(settings.dsn) as conn:
        conn.execute(
            "INSERT INTO pending_touches (campaign_id, lead_id, touch, kafka_partition, channel, "
            "priority, due_at, payload, emitted_at) VALUES (%s, %s, 1, 0, 'sms', 1, %s, "
            "'\\x00', %s)",
            (campaign, lead, datetime.fromtimestamp(NOW, UTC), datetime.fromtimestamp(NOW, UTC)),
        )


@pytest.fixture
async def stage(settings: Settings) -> AsyncIterator[tuple[SendStage, FakeTable, str]]:
    campaign = replace(
        load_campaign(REPO_ROOT / "examples" / "campaign.yaml"),
        id=f"b-{uuid.uuid4().hex[:8]}",
        budget_cost_units=2.0,
    )
    with psycopg.connect(settings.dsn) as conn:
        conn.execute(
            "INSERT INTO campaigns (campaign_id, name, config) VALUES (%s, %s, %s)",
            (campaign.id, campaign.name, Jsonb(campaign.to_dict())),
        )
    table = FakeTable()
    ctx = PipelineContext(
        settings=settings,
        clock=CampaignClock(1.0, NOW, NOW, wall=lambda: NOW),
        campaigns=CampaignCache(StageDatabase(settings.worker_dsn, "campaigns")),
        providers=FakeProviders(),  # type: ignore[arg-type]  # SMS only, 1 cost unit a text
        states=LeadStates(table),
        producer=FakeProducer(),
    )
    yield SendStage(ctx), table, campaign.id
    await ctx.aclose()


async def test_a_spent_budget_cancels_the_remaining_leads_without_calling(
    stage: tuple[SendStage, FakeTable, str], settings: Settings
) -> None:
    send, table, campaign = stage
    runner = _runner(send)
    leads = [f"l{n}" for n in range(5)]
    for lead in leads:
        table.put(lead_state(campaign, lead, State.IN_SEQUENCE, touch=1))
    # Two texts spend the budget of 2 units; the next batch finds it spent.
    await runner.process([touch_due(campaign, lead, n) for n, lead in enumerate(leads[:2])])
    await runner.process([touch_due(campaign, lead, n + 2) for n, lead in enumerate(leads[2:])])

    sms: Any = send.ctx.providers.sms
    assert len(sms.messages) == 2
    assert [table.state_of(lead).state for lead in leads[2:]] == [State.CANCELLED] * 3  # type: ignore[union-attr]
    assert {table.state_of(lead).reason for lead in leads[2:]} == {"budget_spent"}  # type: ignore[union-attr]
    producer = send.ctx.producer
    assert isinstance(producer, FakeProducer)
    skipped = [SENT.decode(s.value) for s in producer.to(send.out_topic)]
    assert sorted((r["lead_id"], r["status"], r["error"]) for r in skipped)[2:] == [
        (lead, "skipped", "budget_spent") for lead in leads[2:]
    ]
    ledger = rows(
        settings.dsn,
        "SELECT lead_id, status FROM send_ledger WHERE campaign_id = %s ORDER BY lead_id",
        campaign,
    )
    assert ledger == [("l0", "accepted"), ("l1", "accepted")]


async def test_an_open_circuit_requeues_the_touch_after_retry_after_not_retry_at(
    stage: tuple[SendStage, FakeTable, str], settings: Settings
) -> None:
    """retry_at is an instant on a monotonic clock; the touch must wait retry_after."""
    from providers.errors import CircuitOpenError

    send, table, campaign = stage
    table.put(lead_state(campaign, "l0", State.IN_SEQUENCE, touch=1))
    _released_touch(settings, campaign, "l0")
    sms: Any = send.ctx.providers.sms
    sms.error = CircuitOpenError("fake-sms", "circuit open", retry_at=987_654.0, retry_after=7.0)
    runner = _runner(send)
    await runner.process([touch_due(campaign, "l0", 0)])

    queued = _queued(settings, campaign)
    assert queued == [(datetime.fromtimestamp(NOW + 7.0, UTC), None)]
    assert (
        rows(settings.dsn, "SELECT status FROM send_ledger WHERE campaign_id = %s", campaign) == []
    )


@pytest.mark.parametrize("known", [None, State.QUALIFIED])
async def test_a_touch_the_state_table_does_not_know_yet_comes_back_not_skipped(
    stage: tuple[SendStage, FakeTable, str], settings: Settings, known: State | None
) -> None:
    """After a crash the table can be behind the touch-due it receives (the
    upstream stage replays the lost changelog write later): the touch is
    queued again, never dropped, and sent once the table has caught up."""
    send, table, campaign = stage
    if known is not None:
        table.put(lead_state(campaign, "l0", known))
    _mirrored(settings, campaign, "l0", State.IN_SEQUENCE, 1)  # what the stage upstream wrote
    _released_touch(settings, campaign, "l0")
    runner = _runner(send)
    await runner.process([touch_due(campaign, "l0", 0)])

    sms: Any = send.ctx.providers.sms
    assert sms.messages == []
    queued = _queued(settings, campaign)
    assert queued == [(datetime.fromtimestamp(NOW + 2.0, UTC), None)]

    table.put(lead_state(campaign, "l0", State.IN_SEQUENCE, touch=1))
    await runner.process([touch_due(campaign, "l0", 1)])
    assert len(sms.messages) == 1


async def test_a_touch_no_stage_queued_is_skipped_not_requeued_for_ever(
    stage: tuple[SendStage, FakeTable, str], settings: Settings
) -> None:
    """Neither the table nor Postgres has the lead at this touch (a record from
    another run, or made by hand): nothing to wait for, so it is skipped."""
    send, _, campaign = stage
    _released_touch(settings, campaign, "ghost")
    runner = _runner(send)
    await runner.process([touch_due(campaign, "ghost", 0)])

    sms: Any = send.ctx.providers.sms
    assert sms.messages == []
    queued = _queued(settings, campaign)
    at = datetime.fromtimestamp(NOW, UTC)
    assert queued == [(at, at)]  # still released, not queued again


def _runner(send: SendStage) -> StageRunner:
    """The send stage behind the runner the worker uses (dead letters to ``dlq``)."""
    return StageRunner(
        send, producer=send.ctx.producer, input_topic="touch-due", dead_letter_topic="dlq"
    )


def _queued(settings: Settings, campaign: str) -> list[tuple[Any, ...]]:
    """``(due_at, emitted_at)`` of the campaign's queued touches."""
    return rows(
        settings.dsn,
        "SELECT due_at, emitted_at FROM pending_touches WHERE campaign_id = %s",
        campaign,
    )


def _mirrored(settings: Settings, campaign: str, lead: str, state: State, touch: int) -> None:
    """Postgres's row of ``lead``, as the stage that queued its touch wrote it."""
    with psycopg.connect(settings.dsn) as conn:
        conn.execute(
            "INSERT INTO leads (campaign_id, lead_id, state, touch, version) "
            "VALUES (%s, %s, %s, %s, 5)",
            (campaign, lead, state.value, touch),
        )


class _Crash(BaseException):
    """Stands in for the process dying (kill -9) in the middle of a call."""


async def test_a_crash_mid_batch_leaves_only_its_wave_of_calls_in_doubt(
    stage: tuple[SendStage, FakeTable, str], settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Calls are stamped in waves just before they go: a crash during the
    second wave leaves the third never stamped, so it is taken over and
    called later instead of ending in ``reconcile``."""
    import agents.send

    monkeypatch.setattr(agents.send, "_CONCURRENCY", 2)
    send, table, campaign = stage
    leads = [f"l{n}" for n in range(5)]
    for lead in leads:
        table.put(lead_state(campaign, lead, State.IN_SEQUENCE, touch=1))
    sms: Any = send.ctx.providers.sms
    accept = sms.send_sms

    async def crash_on_third(message: Any) -> Any:
        if len(sms.messages) == 2:
            raise _Crash
        return await accept(message)

    sms.send_sms = crash_on_third
    runner = _runner(send)
    with pytest.raises(_Crash):
        await runner.process([touch_due(campaign, lead, n) for n, lead in enumerate(leads)])

    stamped = rows(
        settings.dsn,
        "SELECT calling_at IS NOT NULL, count(*) FROM send_ledger WHERE campaign_id = %s "
        "AND status = 'claimed' GROUP BY 1 ORDER BY 1",
        campaign,
    )
    assert stamped == [(False, 1), (True, 4)]


async def test_a_table_behind_postgres_never_sends_to_a_lead_that_replied(
    stage: tuple[SendStage, FakeTable, str], settings: Settings
) -> None:
    """The table (rebuilt from a changelog that lost a record) says touch 1 is
    due; Postgres knows the lead replied. Nothing is sent."""
    send, table, campaign = stage
    table.put(lead_state(campaign, "l0", State.IN_SEQUENCE, touch=1))
    with psycopg.connect(settings.dsn) as conn:
        conn.execute(
            "INSERT INTO leads (campaign_id, lead_id, state, touch, version) "
            "VALUES (%s, 'l0', 'replied', 1, 6)",
            (campaign,),
        )
    runner = _runner(send)
    await runner.process([touch_due(campaign, "l0", 0)])

    sms: Any = send.ctx.providers.sms
    assert sms.messages == []
    assert rows(settings.dsn, "SELECT 1 FROM send_ledger WHERE campaign_id = %s", campaign) == []
