"""The inbound stage (agents/inbound.py) against the session's Postgres, with a fake table."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from typing import Any

import pytest
from fakes import (
    FakeEvent,
    FakeProducer,
    FakeProviders,
    FakeTable,
    inbound_event,
    lead_state,
    rows,
    seed_lead,
    seed_touch,
)

from agents.context import PipelineContext
from agents.inbound import COMPLIANCE_TOUCH, CONFIRMATION_TEXT, InboundStage
from agents.lead_states import LeadStates
from agents.runtime import StageRunner
from providers.errors import AmbiguousOutcomeError, CircuitOpenError
from providers.idempotency import idempotency_key
from streams.clock import CampaignClock
from streams.codec import AvroCodec
from streams.settings import Settings
from streams.state_machine import State

DEAD = AvroCodec("leadflow.DeadLetter", subject="dead-letter")
PHONE = "+15125550100"


class Harness:
    """The stage, its runner, the fake table/producer/SMS and one fresh campaign."""

    def __init__(self, ctx: PipelineContext, table: FakeTable) -> None:
        self.ctx = ctx
        self.table = table
        self.stage = InboundStage(ctx)
        self.runner = StageRunner(
            self.stage, producer=ctx.producer, input_topic="inbound", dead_letter_topic="dlq"
        )
        self.campaign = f"c-{uuid.uuid4().hex[:10]}"
        self.dsn = ctx.settings.dsn

    @property
    def producer(self) -> FakeProducer:
        assert isinstance(self.ctx.producer, FakeProducer)
        return self.ctx.producer

    @property
    def sms(self) -> Any:
        return self.ctx.providers.sms

    def lead(
        self,
        lead_id: str = "l1",
        state: State = State.IN_SEQUENCE,
        *,
        identity: str | None = "new",
        phone: str | None = PHONE,
    ) -> str:
        """Put a lead in the table and Postgres; return its identity key."""
        ident = f"id-{uuid.uuid4().hex}" if identity == "new" else identity
        self.table.put(lead_state(self.campaign, lead_id, state))
        seed_lead(self.dsn, self.campaign, lead_id, ident)
        if phone is not None:
            seed_touch(self.dsn, self.campaign, lead_id, to_phone=phone)
        return ident or ""

    def event(self, **fields: Any) -> FakeEvent:
        fields.setdefault("campaign_id", self.campaign)
        return inbound_event(**fields)

    async def run(self, *events: FakeEvent) -> None:
        await self.runner.process(list(events))

    def dead_reasons(self) -> list[str]:
        return [DEAD.decode(s.value)["reason"] for s in self.producer.to("dlq")]

    def state(self, lead_id: str = "l1") -> State | None:
        current = self.table.state_of(lead_id)
        return None if current is None else current.state

    def opted_out(self, identity: str) -> list[tuple[Any, ...]]:
        return rows(
            self.dsn,
            "SELECT channel, source, campaign_id, lead_id FROM opt_outs WHERE identity_key = %s",
            identity,
        )

    def ledger(self, lead_id: str = "l1") -> list[tuple[Any, ...]]:
        return rows(
            self.dsn,
            "SELECT touch, channel, status, provider_message_id, error, idempotency_key "
            "FROM send_ledger WHERE campaign_id = %s AND lead_id = %s",
            self.campaign,
            lead_id,
        )

    def mirrored(self, lead_id: str = "l1") -> list[tuple[Any, ...]]:
        return rows(
            self.dsn,
            "SELECT state, reason FROM leads WHERE campaign_id = %s AND lead_id = %s",
            self.campaign,
            lead_id,
        )


@pytest.fixture
async def h(settings: Settings) -> AsyncIterator[Harness]:
    table = FakeTable()
    ctx = PipelineContext(
        settings=settings,
        clock=CampaignClock.realtime(),
        campaigns=None,  # type: ignore[arg-type]  # the inbound stage never reads campaigns
        providers=FakeProviders(),  # type: ignore[arg-type]
        states=LeadStates(table),
        producer=FakeProducer(),
    )
    yield Harness(ctx, table)
    await ctx.aclose()


# --- replies ------------------------------------------------------------------------


async def test_a_reply_stops_the_sequence_and_is_mirrored(h: Harness) -> None:
    h.lead()
    await h.run(h.event(kind="reply", body="Interested, call me"))
    assert h.state() is State.REPLIED
    assert h.mirrored() == [("replied", "reply")]
    assert h.dead_reasons() == []
    assert h.sms.messages == []


async def test_a_redelivered_reply_changes_nothing(h: Harness) -> None:
    h.lead()
    event = h.event(kind="reply", body="Interested")
    await h.run(event)
    version = h.table.state_of("l1").version  # type: ignore[union-attr]
    await h.run(event)
    assert h.table.state_of("l1").version == version  # type: ignore[union-attr]
    transitions = rows(
        h.dsn,
        "SELECT to_state FROM lead_transitions WHERE campaign_id = %s AND lead_id = 'l1'",
        h.campaign,
    )
    assert transitions == [("replied",)]


async def test_a_reply_from_a_lead_the_table_does_not_know_is_dead_lettered(h: Harness) -> None:
    await h.run(h.event(kind="reply", lead_id="ghost"))
    assert h.dead_reasons() == ["illegal_transition"]
    assert h.state("ghost") is None


async def test_a_reply_after_the_sequence_ended_is_ignored(h: Harness) -> None:
    h.lead(state=State.COMPLETED)
    await h.run(h.event(kind="reply"))
    assert h.state() is State.COMPLETED
    assert h.dead_reasons() == []


# --- opt-outs ------------------------------------------------------------------------


async def test_an_sms_opt_out_is_recorded_stops_the_lead_and_is_confirmed_once(
    h: Harness,
) -> None:
    identity = h.lead()
    await h.run(h.event(kind="opt_out", body="STOP"))
    assert h.opted_out(identity) == [("all", "webhook:sim", h.campaign, "l1")]
    assert h.state() is State.OPTED_OUT
    assert h.mirrored() == [("opted_out", "opt_out")]
    [message] = h.sms.messages
    assert (message.to, message.body, message.touch) == (PHONE, CONFIRMATION_TEXT, 0)
    assert (message.campaign_id, message.lead_id) == (h.campaign, "l1")
    key = idempotency_key(h.campaign, "l1", COMPLIANCE_TOUCH)
    assert h.ledger() == [(0, "sms", "accepted", "sms_1", None, key)]
    assert h.stage.counts["confirmation:accepted"] == 1


async def test_a_redelivered_opt_out_sends_no_second_confirmation(h: Harness) -> None:
    identity = h.lead()
    event = h.event(kind="opt_out", body="STOP")
    await h.run(event)
    await h.run(event)
    await h.run(h.event(kind="reply", body="STOP!!"))  # a second STOP from the same lead
    assert len(h.sms.messages) == 1
    assert len(h.ledger()) == 1
    assert len(h.opted_out(identity)) == 1
    assert h.stage.counts["confirmation:already_claimed"] == 2


async def test_a_reply_that_reads_as_an_opt_out_is_one(h: Harness) -> None:
    identity = h.lead()
    await h.run(h.event(kind="reply", body="Please take me off your list"))
    assert h.state() is State.OPTED_OUT
    assert len(h.opted_out(identity)) == 1
    assert len(h.sms.messages) == 1


async def test_an_email_opt_out_is_recorded_but_gets_no_text(h: Harness) -> None:
    identity = h.lead()
    await h.run(h.event(kind="opt_out", channel="email", body="unsubscribe"))
    assert h.state() is State.OPTED_OUT
    assert len(h.opted_out(identity)) == 1
    assert h.sms.messages == []
    assert h.ledger() == []


async def test_an_opt_out_from_a_finished_lead_still_blocks_the_identity(h: Harness) -> None:
    identity = h.lead(state=State.REPLIED)
    await h.run(h.event(kind="opt_out", body="STOP"))
    assert h.state() is State.REPLIED  # terminal stays terminal
    assert len(h.opted_out(identity)) == 1


async def test_with_no_number_on_record_the_confirmation_is_skipped(h: Harness) -> None:
    identity = h.lead(phone=None)
    await h.run(h.event(kind="opt_out", body="STOP"))
    assert len(h.opted_out(identity)) == 1
    assert h.sms.messages == []
    assert [(r[2], r[4]) for r in h.ledger()] == [("skipped", "no_phone")]


@pytest.mark.parametrize(
    ("error", "status", "reason"),
    [
        (
            CircuitOpenError("fake-sms", "open", retry_at=0.0, retry_after=30.0),
            "failed",
            "circuit_open",
        ),
        (AmbiguousOutcomeError("fake-sms", "no answer"), "ambiguous", "ambiguous"),
        (RuntimeError("adapter bug"), "failed", "unexpected"),
    ],
)
async def test_a_failed_confirmation_is_recorded_and_never_retried(
    h: Harness, error: Exception, status: str, reason: str
) -> None:
    h.lead()
    h.sms.error = error
    event = h.event(kind="opt_out", body="STOP")
    await h.run(event)
    assert h.state() is State.OPTED_OUT  # the opt-out never depends on the confirmation
    assert [(r[2], r[4]) for r in h.ledger()] == [(status, reason)]
    h.sms.error = None
    await h.run(event)
    assert h.sms.messages == []
    assert h.dead_reasons() == []


async def test_an_opt_out_without_an_identity_is_dead_lettered_but_stops_the_lead(
    h: Harness,
) -> None:
    h.lead(identity=None)
    await h.run(h.event(kind="opt_out", body="STOP"))
    assert h.dead_reasons() == ["unmatched_opt_out"]
    assert h.state() is State.OPTED_OUT
    assert h.sms.messages == []  # nothing confirmed that was not recorded


async def test_an_opt_out_without_a_lead_is_dead_lettered(h: Harness) -> None:
    await h.run(h.event(kind="opt_out", body="STOP", lead_id=None, campaign_id=None))
    assert h.dead_reasons() == ["unmatched_opt_out"]


async def test_the_identity_falls_back_to_the_dedup_claim(h: Harness) -> None:
    h.lead(identity=None)
    identity = f"id-{uuid.uuid4().hex}"
    rows_inserted = rows(
        h.dsn,
        "INSERT INTO lead_identities (campaign_id, identity_key, lead_id) "
        "VALUES (%s, %s, 'l1') RETURNING lead_id",
        h.campaign,
        identity,
    )
    assert rows_inserted == [("l1",)]
    await h.run(h.event(kind="opt_out", body="STOP"))
    assert len(h.opted_out(identity)) == 1
    assert h.dead_reasons() == []


# --- re-subscribes, bounces, receipts, HELP ----------------------------------------------


async def test_start_from_an_opted_out_lead_resubscribes_the_identity(h: Harness) -> None:
    identity = h.lead()
    await h.run(h.event(kind="opt_out", body="STOP"))
    assert len(h.opted_out(identity)) == 1
    await h.run(h.event(kind="reply", body="START"))
    assert h.opted_out(identity) == []
    assert h.state() is State.OPTED_OUT  # a finished sequence is not restarted
    assert h.stage.counts["kind:resubscribe"] == 1


async def test_start_never_lifts_an_operators_suppression(h: Harness) -> None:
    identity = h.lead(state=State.OPTED_OUT)
    rows(
        h.dsn,
        "INSERT INTO opt_outs (identity_key, channel, source) VALUES (%s, 'all', 'operator') "
        "RETURNING 1",
        identity,
    )
    await h.run(h.event(kind="reply", body="START"))
    assert [r[1] for r in h.opted_out(identity)] == ["operator"]


async def test_stop_then_start_in_one_batch_ends_resubscribed(h: Harness) -> None:
    identity = h.lead()
    await h.run(h.event(kind="opt_out", body="STOP"), h.event(kind="reply", body="unstop"))
    assert h.opted_out(identity) == []
    assert h.state() is State.OPTED_OUT


async def test_yes_from_a_lead_in_sequence_is_a_reply_not_a_resubscribe(h: Harness) -> None:
    identity = h.lead()
    other = h.lead("l2", identity=identity)  # same person, opted out via another lead
    rows(
        h.dsn,
        "INSERT INTO opt_outs (identity_key, source) VALUES (%s, 'test') RETURNING 1",
        other,
    )
    await h.run(h.event(kind="reply", body="Yes"))
    assert h.state() is State.REPLIED
    assert len(h.opted_out(identity)) == 1  # untouched


async def test_a_bounce_blocks_the_channel_and_leaves_the_state(h: Harness) -> None:
    h.lead()
    event = h.event(kind="bounce", channel="email", body="550 5.1.1 no such user")
    await h.run(event, event)
    blocks = rows(
        h.dsn,
        "SELECT channel, reason FROM channel_blocks WHERE campaign_id = %s AND lead_id = 'l1'",
        h.campaign,
    )
    assert blocks == [("email", "bounce")]
    assert h.state() is State.IN_SEQUENCE
    assert h.dead_reasons() == []


@pytest.mark.parametrize(
    ("kind", "body"),
    [("delivery", ""), ("help", "HELP"), ("reply", "help"), ("read_receipt", "")],
)
async def test_receipts_help_and_unknown_kinds_only_count(h: Harness, kind: str, body: str) -> None:
    identity = h.lead()
    await h.run(h.event(kind=kind, body=body))
    assert h.state() is State.IN_SEQUENCE
    assert h.opted_out(identity) == []
    assert h.sms.messages == []
    assert sum(v for k, v in h.stage.counts.items() if k.startswith("kind:")) == 1


async def test_an_undecodable_event_is_dead_lettered_and_the_rest_handled(h: Harness) -> None:
    h.lead()
    bad = h.event()
    bad.message.value = b"not avro"
    await h.run(bad, h.event(kind="reply"))
    assert h.dead_reasons() == ["not_avro"]
    assert h.state() is State.REPLIED


async def test_a_bounce_without_a_lead_is_counted_not_recorded(h: Harness) -> None:
    await h.run(h.event(kind="bounce", channel="email", lead_id=None, body="550"))
    assert h.stage.counts["bounce:unmatched"] == 1
    assert rows(h.dsn, "SELECT 1 FROM channel_blocks WHERE campaign_id = %s", h.campaign) == []
    assert h.dead_reasons() == []
