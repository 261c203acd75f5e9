"""Stage 5, inbound: provider events from ``inbound`` -> opt-outs, replies, bounces.

The webhook endpoint (:mod:`agents.webhooks`) verified each event's signature,
recorded opt-outs it could match, deduplicated on ``event_id`` and published
the ``leadflow.InboundEvent``. This stage makes each event's effect durable,
idempotently (a redelivered or replayed event changes nothing).

Effect of each effective kind (:func:`streams.compliance.classify_event`):

* ``reply``: the lead moves to ``replied``; its sequence stops.
* ``opt_out``: the hashed identity goes into ``opt_outs`` (channel ``all``, so
  every campaign of that person stops: the send stage re-checks ``opt_outs``
  when it claims a send), the lead moves to ``opted_out``, and an SMS opt-out
  gets **one** confirmation text (see below).
* ``bounce``: ``channel_blocks`` gets (campaign, lead, channel, ``bounce``);
  the state does not change (the scheduler decides whether a channel is left).
* ``resubscribe``: a bare START/YES/UNSTOP from a lead that is ``opted_out``
  (or opts out earlier in the same batch) deletes the identity's ``opt_outs``
  rows that came from webhooks (source ``webhook:*``; an operator's
  suppression stays), so *future* campaigns may contact the person. The lead
  itself stays ``opted_out``: a finished sequence is never restarted. From a
  lead that is not opted out the same word is an ordinary ``reply`` (``"Yes"``
  to a sales text is interest, not a re-subscribe).
* ``help``: counted only. DOMAIN.md asks for a HELP reply; sending one is not
  built yet (it needs a ledger slot of its own besides touch 0).
* ``delivery`` and ``unknown``: counted only.

Order in a batch: Postgres effects first (one transaction; a
:class:`~streams.errors.TransientError` holds the batch before anything else
happened), then the state table (:meth:`LeadStates.advance`), then the
Postgres mirror of the transitions (held until done, like every stage), then
the confirmations.

An opt-out that cannot be tied to a person (no lead id, or no identity known
for the lead) is dead-lettered with reason ``unmatched_opt_out`` so an
operator sees it; a ``reply``/``opt_out`` for a lead the state table does not
know is dead-lettered by :class:`~streams.errors.IllegalTransitionError`.

**The confirmation text.** Neither the webhook JSON nor ``leads`` carries the
phone number (no personal data in Postgres columns). The number the lead was
texted is in the encoded ``TouchDue`` payloads the scheduler keeps in
``pending_touches`` (``to_phone``); the confirmation goes there. It is sent
only for opt-outs that came in on the ``sms`` channel and were recorded (an
email or voice opt-out gets no text: that would be contacting the person on
another channel after they said stop; an unmatched one is not confirmed).
It is claimed first in ``send_ledger`` as touch :data:`COMPLIANCE_TOUCH` (0)
of the lead, ``ON CONFLICT DO NOTHING``, so a replay never sends a second one.
It is best effort and at most once: with no phone on record the row becomes
``skipped`` (``no_phone``); a provider error (an open circuit included) makes
it ``failed``, an ambiguous outcome ``ambiguous``; it is never retried. The
opt-out itself never depends on it.
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import psycopg

from agents import topology
from agents.context import PipelineContext, get_context
from agents.lead_states import Applied, Step
from agents.quarantine import QuarantinesDeadLetters
from agents.runtime import BatchResult, Item, Stage, hold_until_done, runner_for
from providers.base import SmsMessage
from providers.errors import AmbiguousOutcomeError
from providers.idempotency import idempotency_key
from sinks.lead_state import StateChange, write_state_changes
from sinks.opt_outs import OptOut, record_opt_outs
from streams.app import app
from streams.codec import AvroCodec
from streams.compliance import ReplyKind, classify_event
from streams.errors import CodecError, IllegalTransitionError, LeadflowError, ProviderError
from streams.state_machine import State

__all__ = [
    "COMPLIANCE_TOUCH",
    "CONFIRMATION_TEXT",
    "InboundStage",
    "OptOut",
    "UnmatchedOptOutError",
    "confirmation_phone",
    "lookup_identities",
    "record_opt_outs",
]

log = logging.getLogger(__name__)

#: The ``send_ledger`` touch number of compliance messages (sequence touches start at 1).
COMPLIANCE_TOUCH = 0
#: The one confirmation an SMS opt-out gets.
CONFIRMATION_TEXT = (
    "You are unsubscribed and will receive no more messages from us. Reply START to resubscribe."
)

Conn = psycopg.AsyncConnection[tuple[object, ...]]


class UnmatchedOptOutError(LeadflowError):
    """An opt-out that could not be tied to a hashed identity, so it could not be recorded."""

    reason = "unmatched_opt_out"


async def lookup_identities(
    conn: Conn, pairs: Iterable[tuple[str, str]]
) -> dict[tuple[str, str], str]:
    """The hashed identity of each known (campaign, lead); unknown pairs are left out.

    ``leads.identity_key`` first (the enrich stage's mirror); ``lead_identities``
    (the dedup claim, durable before the mirror) when the mirror has not
    caught up.
    """
    keys = sorted(set(pairs))
    if not keys:
        return {}
    cur = await conn.execute(
        """
        SELECT k.campaign_id, k.lead_id,
               COALESCE(
                   (SELECT l.identity_key FROM leads l
                     WHERE l.campaign_id = k.campaign_id AND l.lead_id = k.lead_id),
                   (SELECT li.identity_key FROM lead_identities li
                     WHERE li.campaign_id = k.campaign_id AND li.lead_id = k.lead_id
                     LIMIT 1))
        FROM unnest(%b::text[], %b::text[]) AS k(campaign_id, lead_id)
        """,
        ([c for c, _ in keys], [lead for _, lead in keys]),
    )
    return {
        (str(c), str(lead)): str(ident)
        for c, lead, ident in await cur.fetchall()
        if ident is not None
    }


_TOUCH_DUE = AvroCodec("leadflow.TouchDue", subject="pending_touches")


async def confirmation_phone(conn: Conn, campaign_id: str, lead_id: str) -> str | None:
    """The number the lead was texted or called, from the scheduler's queued ``TouchDue``s."""
    cur = await conn.execute(
        """
        SELECT payload FROM pending_touches
        WHERE campaign_id = %s AND lead_id = %s AND channel IN ('sms', 'voice')
        ORDER BY (channel = 'sms') DESC, touch DESC
        """,
        (campaign_id, lead_id),
    )
    for (payload,) in await cur.fetchall():
        if not isinstance(payload, bytes | memoryview):
            continue
        try:
            record = _TOUCH_DUE.decode(bytes(payload))
        except CodecError:
            continue
        phone = record.get("to_phone")
        if phone:
            return str(phone)
    return None


@dataclass
class _Event:
    """One decoded inbound event and what the stage made of it."""

    item: Item
    kind: str
    campaign_id: str | None
    lead_id: str | None
    channel: str
    source: str
    identity: str | None = None
    unmatched: bool = False

    @property
    def lead_key(self) -> tuple[str, str] | None:
        if self.campaign_id and self.lead_id:
            return (self.campaign_id, self.lead_id)
        return None


class InboundStage(QuarantinesDeadLetters, Stage):
    """See the module docstring."""

    name = "inbound"
    input_schema = "leadflow.InboundEvent"

    def __init__(self, ctx: PipelineContext) -> None:
        self.ctx = ctx
        self.db = ctx.db(self.name)
        #: Events by effective kind, and what happened to confirmations (for metrics).
        self.counts: Counter[str] = Counter()

    async def handle(self, items: Sequence[Item]) -> BatchResult:
        """Record opt-outs, blocks and re-subscribes; advance leads; confirm opt-outs."""
        result = BatchResult()
        opting_out: set[str] = set()  # leads that opt out earlier in this batch
        events = [self._event(item, opting_out) for item in items]
        await self._record(events)
        changes: list[StateChange] = []
        now_ms = self.ctx.clock.now_ms()
        for ev in events:
            self.counts[f"kind:{ev.kind}"] += 1
            failure: BaseException | None = None
            step = _STEPS.get(ev.kind)
            if step is not None and ev.lead_id:
                try:
                    applied = self.ctx.states.advance(ev.item, [step], at_ms=now_ms)
                except IllegalTransitionError as exc:
                    failure = exc
                else:
                    changes += _changes(applied)
            if ev.unmatched and failure is None:
                failure = UnmatchedOptOutError(
                    "opt-out not recorded: no identity known for "
                    f"campaign {ev.campaign_id!r} lead {ev.lead_id!r}"
                )
            if failure is not None:
                result.failures.append((ev.item, failure))
        if changes:
            await hold_until_done(lambda: self._mirror(changes), "inbound: state mirror")
        for ev in events:
            if ev.kind == ReplyKind.OPT_OUT and ev.channel == "sms" and ev.identity and ev.lead_key:
                await self._confirm(*ev.lead_key)
        return result

    def _event(self, item: Item, opting_out: set[str]) -> _Event:
        """Classify ``item``; START/YES counts only from a lead that is (being) opted out."""
        rec = item.record
        kind = classify_event(rec.get("kind"), rec.get("body"))
        lead_id = rec.get("lead_id") or None
        if kind == ReplyKind.OPT_OUT and lead_id:
            opting_out.add(lead_id)
        elif kind == ReplyKind.RESUBSCRIBE:
            campaign_id = rec.get("campaign_id") or ""
            current = self.ctx.states.get(campaign_id, lead_id) if lead_id else None
            opted = current is not None and current.state is State.OPTED_OUT
            if not opted and lead_id not in opting_out:
                kind = ReplyKind.REPLY.value  # "Yes"/"Start" from a lead in sequence: interest
        return _Event(
            item=item,
            kind=kind,
            campaign_id=rec.get("campaign_id") or None,
            lead_id=lead_id,
            channel=str(rec.get("channel") or ""),
            source=f"webhook:{rec.get('provider') or 'unknown'}",
        )

    async def _record(self, events: Sequence[_Event]) -> None:
        """Opt-outs, re-subscribes and channel blocks, in event order, in one transaction."""
        wanted = [
            ev.lead_key
            for ev in events
            if ev.kind in (ReplyKind.OPT_OUT, ReplyKind.RESUBSCRIBE) and ev.lead_key
        ]
        blocks = [ev for ev in events if ev.kind == "bounce" and ev.lead_key and ev.channel]
        for ev in events:
            if ev.kind == ReplyKind.OPT_OUT and ev.lead_key is None:
                ev.unmatched = True
            elif ev.kind == "bounce" and not (ev.lead_key and ev.channel):
                self.counts["bounce:unmatched"] += 1
        if not wanted and not blocks:
            return
        async with self.db.transaction() as conn:
            identities = await lookup_identities(conn, (k for k in wanted if k is not None))
            for ev in events:
                key = ev.lead_key
                if ev.kind == ReplyKind.OPT_OUT and key is not None:
                    ev.identity = identities.get(key)
                    if ev.identity is None:
                        ev.unmatched = True
                        continue
                    await record_opt_outs(
                        conn, [OptOut(ev.identity, ev.source, ev.campaign_id, ev.lead_id)]
                    )
                    log.info(
                        "inbound: opt-out recorded (campaign %s, lead %s, channel %s)",
                        ev.campaign_id,
                        ev.lead_id,
                        ev.channel,
                    )
                elif ev.kind == ReplyKind.RESUBSCRIBE and key in identities:
                    ev.identity = identities[key]
                    await conn.execute(
                        "DELETE FROM opt_outs WHERE identity_key = %s AND source LIKE 'webhook:%%'",
                        (ev.identity,),
                    )
                    log.info("inbound: re-subscribed (campaign %s, lead %s)", *key)
            if blocks:
                async with conn.cursor() as cur:
                    await cur.executemany(
                        """
                        INSERT INTO channel_blocks (campaign_id, lead_id, channel, reason)
                        VALUES (%s, %s, %s, 'bounce')
                        ON CONFLICT DO NOTHING
                        """,
                        [(ev.campaign_id, ev.lead_id, ev.channel) for ev in blocks],
                    )

    async def _mirror(self, changes: list[StateChange]) -> None:
        async with self.db.transaction() as conn:
            await write_state_changes(conn, changes)

    async def _confirm(self, campaign_id: str, lead_id: str) -> None:
        """Send the one opt-out confirmation of this lead (see the module docstring)."""
        clock = self.ctx.clock.now()
        key = idempotency_key(campaign_id, lead_id, COMPLIANCE_TOUCH)
        async with self.db.transaction() as conn:
            cur = await conn.execute(
                """
                INSERT INTO send_ledger (campaign_id, lead_id, touch, channel, idempotency_key,
                                         status, campaign_clock)
                VALUES (%s, %s, %s, 'sms', %s, 'claimed', %s)
                ON CONFLICT DO NOTHING
                RETURNING touch
                """,
                (campaign_id, lead_id, COMPLIANCE_TOUCH, key, clock),
            )
            if await cur.fetchone() is None:
                self.counts["confirmation:already_claimed"] += 1
                return
            phone = await confirmation_phone(conn, campaign_id, lead_id)
            if phone is None:
                await _finish(conn, campaign_id, lead_id, clock, "skipped", error="no_phone")
                self.counts["confirmation:skipped"] += 1
                log.warning(
                    "inbound: no number on record for the opt-out confirmation "
                    "(campaign %s, lead %s)",
                    campaign_id,
                    lead_id,
                )
                return
        message = SmsMessage(
            campaign_id=campaign_id,
            lead_id=lead_id,
            touch=COMPLIANCE_TOUCH,
            clock=clock,
            to=phone,
            body=CONFIRMATION_TEXT,
        )
        sms = self.ctx.providers.sms
        outcome: dict[str, Any]
        try:
            sent = await sms.send_sms(message)
        except AmbiguousOutcomeError as exc:
            outcome = {"status": "ambiguous", "provider": sms.name, "error": exc.reason}
        except ProviderError as exc:
            outcome = {"status": "failed", "provider": sms.name, "error": exc.reason}
        except Exception as exc:  # an adapter bug must not leave the claim open forever
            log.error("inbound: opt-out confirmation raised %s", type(exc).__name__)
            outcome = {"status": "failed", "provider": sms.name, "error": "unexpected"}
        else:
            outcome = {
                "status": "accepted",
                "provider": sent.provider,
                "message_id": sent.message_id,
                "cost_units": sent.cost_units,
                "attempts": sent.attempts,
            }
        self.counts[f"confirmation:{outcome['status']}"] += 1
        log.info(
            "inbound: opt-out confirmation %s (campaign %s, lead %s)",
            outcome["status"],
            campaign_id,
            lead_id,
        )

        async def record() -> None:
            async with self.db.transaction() as conn:
                await _finish(conn, campaign_id, lead_id, self.ctx.clock.now(), **outcome)

        await hold_until_done(record, "inbound: confirmation outcome")


_STEPS: dict[str, Step] = {
    ReplyKind.REPLY.value: Step(State.REPLIED, reason="reply"),
    ReplyKind.OPT_OUT.value: Step(State.OPTED_OUT, reason="opt_out"),
}


async def _finish(
    conn: Conn,
    campaign_id: str,
    lead_id: str,
    at: datetime,
    status: str,
    *,
    provider: str | None = None,
    message_id: str | None = None,
    cost_units: float = 0.0,
    attempts: int = 0,
    error: str | None = None,
) -> None:
    await conn.execute(
        """
        UPDATE send_ledger SET status = %s, provider = %s, provider_message_id = %s,
               cost_units = %s, attempts = %s, error = %s, completed_at = %s
        WHERE campaign_id = %s AND lead_id = %s AND touch = %s AND status = 'claimed'
        """,
        (
            status,
            provider,
            message_id,
            cost_units,
            attempts,
            error,
            at,
            campaign_id,
            lead_id,
            COMPLIANCE_TOUCH,
        ),
    )


def _changes(applied: list[Applied]) -> list[StateChange]:
    return [StateChange(a.before, a.after) for a in applied]


@app.agent(topology.topic("inbound"), name="inbound")
async def inbound_agent(stream: Any) -> None:
    """Faust agent: run the inbound stage over ``inbound``."""
    ctx = await get_context(app, topology.lead_state_table)
    await runner_for(InboundStage(ctx), ctx, "inbound").run(stream)
