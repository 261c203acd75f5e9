"""Stage 4, send: ``touch-due`` -> provider -> ``sent``.

For each due touch, in order:

1. the lead must be ``in_sequence`` at this touch (anything else is a replay
   or a finished lead: nothing is sent);
2. a cancelled campaign ends the lead (``cancelled``); a paused one, or a
   send window that closed since release, puts the touch back in the queue;
3. the send is **claimed** in Postgres in one transaction that re-checks the
   opt-out, the campaign status and channel blocks (:mod:`sinks.send_ledger`);
   a claim that already exists re-emits its recorded outcome instead, except
   one a crash left before its call (no ``calling_at``), which is taken over;
   the claims are then stamped ``calling_at`` and committed, and only the
   sends this worker stamped are called (a claim stamped before may have
   reached the provider: ``ambiguous``, see 5.);
4. the provider is called with the idempotency key, through the protection
   layer (rate limit, breaker, retries), calls in a batch concurrently, while
   the contacts' locks are held and after a last opt-out check, so an opt-out
   recorded meanwhile waits for these calls (:mod:`sinks.opt_outs`);
   The send's campaign-clock time (``X-Leadflow-Clock``) is the moment the
   window was checked, so the recorded time and the check always agree;
5. the outcome is recorded and a ``leadflow.TouchSent`` emitted:
   ``accepted``; ``failed`` for a permanent refusal (an invalid number also
   blocks that channel for the lead); ``ambiguous`` when the request went out
   and no answer came (the lead goes to ``reconcile`` and is never re-sent
   blindly); retries exhausted or a misconfigured provider quarantine the
   lead and dead-letter the touch; an open circuit or a long throttle
   releases the claim (no call was made) and re-queues the touch.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from agents import topology
from agents.context import PipelineContext, get_context
from agents.faults import fault_point
from agents.lead_states import Step, rank
from agents.quarantine import QuarantinesDeadLetters
from agents.runtime import BatchResult, Item, Output, Stage, hold_until_done, runner_for
from providers.base import EmailMessage, SendResult, SmsMessage, VoiceCall
from providers.errors import (
    AmbiguousOutcomeError,
    BackpressureError,
    ClientError,
    InvalidRecipientError,
    ProviderCallError,
)
from providers.idempotency import idempotency_key
from sinks.lead_state import StateChange, mirrored_states, write_state_changes
from sinks.opt_outs import lock_identities, opted_out
from sinks.schedule_store import requeue
from sinks.send_ledger import (
    Claim,
    ClaimRequest,
    Outcome,
    campaign_spend,
    claim_sends,
    mark_calling,
    record_outcomes,
    release_claims,
)
from streams.app import app
from streams.campaign import Campaign
from streams.codec import AvroCodec
from streams.errors import LeadflowError
from streams.messages import render_touch
from streams.send_window import in_window, next_send_time
from streams.state_machine import TERMINAL, State

__all__ = ["SendStage"]

log = logging.getLogger(__name__)
_CONCURRENCY = 64
#: A touch goes out only if its window stays open this much longer, so a send
#: decided just before the window closes is not delivered after it.
_WINDOW_MARGIN = timedelta(minutes=1)
#: Wall seconds before a touch the state table does not know yet comes back.
_CATCH_UP_S = 2.0


@dataclass
class _Send:
    item: Item
    campaign: Campaign
    claim: Claim


class SendStage(QuarantinesDeadLetters, Stage):
    """See the module docstring."""

    name = "send"
    input_schema = "leadflow.TouchDue"

    def __init__(self, ctx: PipelineContext) -> None:
        self.ctx = ctx
        self.db = ctx.db(self.name)
        #: Holds the contact locks while provider calls are in flight.
        self.guard = ctx.db("send-guard")
        self.out_topic = ctx.topic("sent")
        self.codec = AvroCodec("leadflow.TouchSent", subject=self.out_topic)
        self.limit = asyncio.Semaphore(_CONCURRENCY)
        #: Channels to block, gathered while handling a batch, written with it.
        self._blocks: list[tuple[str, str, str, str]] = []

    async def handle(self, items: Sequence[Item]) -> BatchResult:
        result = BatchResult()
        campaigns = await self.ctx.campaigns.get_many(i.campaign_id for i in items)
        now = self.ctx.clock.now()
        changes: list[StateChange] = []
        requeues: list[tuple[tuple[str, str, int], datetime]] = []
        requests: list[tuple[Item, Campaign, ClaimRequest]] = []
        behind: list[tuple[tuple[str, str, int], Item]] = []
        for item in items:
            rec = item.record
            k = int(rec["touch"])
            key = (item.campaign_id or "", item.lead_id, k)
            view = campaigns.get(key[0])
            current = self.ctx.states.get(item.campaign_id or "", item.lead_id)
            if view is None:
                log.info("send: touch %d of %s skipped: campaign unknown", k, item.lead_id)
                continue  # nothing of this campaign to send for (dead-lettered upstream)
            if current is None or (
                current.state not in TERMINAL
                and rank(current.state, current.touch) < rank(State.IN_SEQUENCE, k)
            ):
                behind.append((key, item))  # decided below, against Postgres
                continue
            if current.state is not State.IN_SEQUENCE or current.touch != k:
                log.debug(
                    "send: touch %d of %s skipped: lead is %s(%d)",
                    k,
                    item.lead_id,
                    current.state.value,
                    current.touch,
                )
                # A replay, or the lead has ended: never a second send. The
                # lead's row is written again in case a crash left it behind.
                changes.append(StateChange(current, current))
                continue
            if view.status in ("cancelled", "archived"):
                changes += self._advance(item, Step(State.CANCELLED, reason="campaign_cancelled"))
                result.outputs.append(self._sent(rec, "skipped", now, error="campaign_cancelled"))
                continue
            if view.status != "active":
                requeues.append((key, now + timedelta(hours=1)))
                continue
            zone, region = rec["timezone"], rec.get("state")
            if not (
                in_window(view.campaign, zone, region, now)
                and in_window(view.campaign, zone, region, now + _WINDOW_MARGIN)
            ):
                requeues.append(
                    (key, next_send_time(view.campaign, zone, region, now + _WINDOW_MARGIN))
                )
                continue
            channel = str(rec["channel"])
            address = rec.get("to_email") if channel == "email" else rec.get("to_phone")
            if not address:
                result.outputs.append(self._sent(rec, "skipped", now, error="no_address"))
                continue
            requests.append(
                (
                    item,
                    view.campaign,
                    ClaimRequest(
                        campaign_id=key[0],
                        lead_id=item.lead_id,
                        touch=k,
                        channel=channel,
                        idempotency_key=idempotency_key(key[0], item.lead_id, k),
                        identity_key=rec.get("identity_key"),
                        campaign_clock=now,
                    ),
                )
            )
        if behind:
            requeues += await self._catch_up(behind, now)
        sends: list[_Send] = []
        if requests:
            async with self.db.transaction() as conn:
                requests = await self._within_budget(conn, requests, now, result, changes)
                claims = await claim_sends(conn, [r for _, _, r in requests])
            for (item, campaign, _), claim in zip(requests, claims, strict=True):
                changes += self._settle_claim(item, campaign, claim, now, result, requeues, sends)
        outcomes: list[Outcome] = []
        released: list[tuple[str, str, int]] = []
        if sends:
            fault_point("before_provider_call")
            stopped, called, answers = await self._guarded_calls(sends, now)
            for send in stopped:  # opted out after its claim: never called
                key = (send.claim.request.campaign_id, send.item.lead_id, send.claim.request.touch)
                released.append(key)
                result.outputs.append(
                    self._sent(send.item.record, "skipped", now, error="opted_out")
                )
                changes += self._advance(send.item, Step(State.OPTED_OUT, reason="opted_out"))
            for send, answer in zip(called, answers, strict=True):
                changes += self._outcome(send, answer, now, result, outcomes, released, requeues)
        if any(o.status == "accepted" for o in outcomes):
            fault_point("after_provider_accept")
        blocks, self._blocks = self._blocks, []
        if changes or outcomes or released or requeues or blocks:
            await hold_until_done(
                lambda: self._write(changes, outcomes, released, requeues, blocks), "send: ledger"
            )
            if outcomes:
                fault_point("after_ledger_commit")
        return result

    # --- claims ----------------------------------------------------------------------

    async def _catch_up(
        self, behind: Sequence[tuple[tuple[str, str, int], Item]], now: datetime
    ) -> list[tuple[tuple[str, str, int], datetime]]:
        """Requeues for touches the state table has not reached, where Postgres has.

        After a crash the table can be a step behind Postgres (the stage
        upstream wrote the lead's row and queued the touch, and its changelog
        write was lost; it replays the event later). Skipping would strand
        the lead, so the touch comes back shortly. A touch whose lead
        Postgres has not reached either was never queued by this pipeline (a
        replay from another run, or a hand-made record): it is skipped, or it
        would come back every few seconds for ever.
        """
        async with self.db.transaction() as conn:
            mirrored = await mirrored_states(conn, [(c, lead) for (c, lead, _), _ in behind])
        requeues = []
        for key, item in behind:
            row = mirrored.get((key[0], key[1]))
            k = key[2]
            if row is not None and (
                State(row[0]) in TERMINAL
                or rank(State(row[0]), row[1]) >= rank(State.IN_SEQUENCE, k)
            ):
                log.info("send: touch %d of %s waits for the state table", k, item.lead_id)
                requeues.append((key, now + self.ctx.clock.campaign_span(_CATCH_UP_S)))
            else:
                log.info("send: touch %d of %s skipped: no stage queued it", k, item.lead_id)
        return requeues

    async def _within_budget(
        self,
        conn: Any,
        requests: list[tuple[Item, Campaign, ClaimRequest]],
        now: datetime,
        result: BatchResult,
        changes: list[StateChange],
    ) -> list[tuple[Item, Campaign, ClaimRequest]]:
        """Drop the requests of campaigns whose budget is spent; those leads end cancelled.

        Spend is read in the claim transaction; sends of one batch are not
        counted before they happen, so a campaign can overshoot its cap by at
        most one batch's cost (documented in docs/CAMPAIGNS.md).
        """
        capped = {c.id for _, c, _ in requests if c.budget_cost_units is not None}
        if not capped:
            return requests
        spent = await campaign_spend(conn, sorted(capped))
        kept = []
        for item, campaign, request in requests:
            budget = campaign.budget_cost_units
            if budget is not None and spent[campaign.id] >= budget:
                result.outputs.append(self._sent(item.record, "skipped", now, error="budget_spent"))
                changes += self._advance(item, Step(State.CANCELLED, reason="budget_spent"))
            else:
                kept.append((item, campaign, request))
        return kept

    def _settle_claim(
        self,
        item: Item,
        campaign: Campaign,
        claim: Claim,
        now: datetime,
        result: BatchResult,
        requeues: list[tuple[tuple[str, str, int], datetime]],
        sends: list[_Send],
    ) -> list[StateChange]:
        rec = item.record
        if claim.won:
            sends.append(_Send(item, campaign, claim))
            return []
        if claim.blocked == "duplicate":
            return []  # a second copy of a send in this batch: the first one speaks for it
        if claim.blocked == "contended":
            requeues.append(((claim.request.campaign_id, item.lead_id, claim.request.touch), now))
            return []
        if claim.blocked == "opted_out":
            result.outputs.append(self._sent(rec, "skipped", now, error="opted_out"))
            return self._advance(item, Step(State.OPTED_OUT, reason="opted_out"))
        if claim.blocked == "campaign_cancelled":
            result.outputs.append(self._sent(rec, "skipped", now, error="campaign_cancelled"))
            return self._advance(item, Step(State.CANCELLED, reason="campaign_cancelled"))
        if claim.blocked is not None and claim.blocked.startswith("campaign_"):
            requeues.append(
                (
                    (claim.request.campaign_id, item.lead_id, claim.request.touch),
                    now + timedelta(hours=1),
                )
            )
            return []
        if claim.blocked == "channel_blocked":
            result.outputs.append(self._sent(rec, "skipped", now, error="channel_blocked"))
            return []
        if claim.blocked == "lead_moved_on":
            # Postgres has the lead ended or past this touch while the state
            # table does not (rebuilt behind it after a crash): never send.
            log.info(
                "send: touch %d of %s skipped: lead moved on (Postgres)",
                claim.request.touch,
                item.lead_id,
            )
            return []
        # An earlier claim exists: re-emit what it recorded, never call again.
        if claim.status in ("claimed", "ambiguous"):
            result.outputs.append(self._sent(rec, "ambiguous", now, error="outcome_unknown"))
            return self._advance(
                item, Step(State.RECONCILE, touch=claim.request.touch, reason="outcome_unknown")
            )
        result.outputs.append(
            self._sent(
                rec,
                claim.status or "failed",
                now,
                provider=claim.provider,
                message_id=claim.provider_message_id,
                cost=claim.cost_units,
                error=claim.error,
            )
        )
        return []

    # --- provider calls ----------------------------------------------------------------

    async def _guarded_calls(
        self, sends: list[_Send], now: datetime
    ) -> tuple[list[_Send], list[_Send], list[SendResult | BaseException]]:
        """Call the providers while holding the sends' contact locks (shared).

        Returns the sends left out because their contact opted out, the sends
        called, and each call's answer. An opt-out recorded meanwhile waits
        for these calls to finish; one recorded before is seen by the
        re-check here. See :mod:`sinks.opt_outs`.

        The calls go in waves of ``_CONCURRENCY``, each stamped as being
        called just before it goes: a crash then leaves at most one wave
        whose outcome is unknown (``reconcile``); the rest of the batch is
        taken over and called by whoever handles it next.
        """
        identities = [s.claim.request.identity_key for s in sends if s.claim.request.identity_key]
        stopped: list[_Send] = []
        called: list[_Send] = []
        answers: list[SendResult | BaseException] = []
        try:
            async with self.guard.transaction() as conn:
                await lock_identities(conn, identities, shared=True)
                out = await opted_out(conn, identities)
                stopped = [s for s in sends if s.claim.request.identity_key in out]
                allowed = [s for s in sends if s.claim.request.identity_key not in out]
                for start in range(0, len(allowed), _CONCURRENCY):
                    wave = await self._mark_calling(allowed[start : start + _CONCURRENCY])
                    answers += await asyncio.gather(*(self._call(s, now) for s in wave))
                    called += wave
        except LeadflowError:
            if not called:
                # Nothing was called: give the claims back so a retry claims afresh.
                keys = [
                    (s.claim.request.campaign_id, s.item.lead_id, s.claim.request.touch)
                    for s in sends
                ]
                await hold_until_done(lambda: self._release(keys), "send: release claims")
                raise
            # The calls happened; only the commit (releasing the locks) failed.
        return stopped, called, answers

    async def _mark_calling(self, sends: list[_Send]) -> list[_Send]:
        """Stamp the claims as being called (committed first); the sends this worker calls.

        A send another claimer stamped first is left to it: that claimer
        records its outcome.
        """

        def key(s: _Send) -> tuple[str, str, int]:
            return (s.claim.request.campaign_id, s.item.lead_id, s.claim.request.touch)

        async def action() -> set[tuple[str, str, int]]:
            async with self.db.transaction() as conn:
                return await mark_calling(conn, [key(s) for s in sends])

        stamped = await hold_until_done(action, "send: mark calling")
        return [s for s in sends if key(s) in stamped]

    async def _release(self, keys: list[tuple[str, str, int]]) -> None:
        async with self.db.transaction() as conn:
            await release_claims(conn, keys)

    async def _call(self, send: _Send, now: datetime) -> SendResult | BaseException:
        rec = send.item.record
        rendered = render_touch(send.campaign, rec)
        sender = send.campaign.sender
        common = {
            "campaign_id": rec["campaign_id"],
            "lead_id": rec["lead_id"],
            "touch": int(rec["touch"]),
            "clock": now,
        }
        async with self.limit:
            try:
                channel = rec["channel"]
                if channel == "sms":
                    return await self.ctx.providers.sms.send_sms(
                        SmsMessage(
                            **common,
                            to=rec["to_phone"],
                            body=rendered.text,
                            sender=sender.sms_from or "",
                        )
                    )
                if channel == "voice":
                    return await self.ctx.providers.voice.start_call(
                        VoiceCall(
                            **common,
                            to=rec["to_phone"],
                            script=rendered.text,
                            sender=sender.sms_from or "",
                        )
                    )
                return await self.ctx.providers.email.send_email(
                    EmailMessage(
                        **common,
                        to=rec["to_email"],
                        subject=rendered.subject or "",
                        text=rendered.text,
                        list_unsubscribe=rendered.list_unsubscribe or "",
                        sender=sender.email_from or "",
                    )
                )
            except Exception as exc:  # each send's failure is its own
                return exc

    def _outcome(
        self,
        send: _Send,
        answer: SendResult | BaseException,
        now: datetime,
        result: BatchResult,
        outcomes: list[Outcome],
        released: list[tuple[str, str, int]],
        requeues: list[tuple[tuple[str, str, int], datetime]],
    ) -> list[StateChange]:
        item, rec, req = send.item, send.item.record, send.claim.request
        key = (req.campaign_id, req.lead_id, req.touch)
        if isinstance(answer, SendResult):
            outcomes.append(
                Outcome(
                    *key,
                    "accepted",
                    answer.provider,
                    answer.message_id,
                    answer.cost_units,
                    answer.attempts,
                    None,
                )
            )
            result.outputs.append(
                self._sent(
                    rec,
                    "accepted",
                    now,
                    provider=answer.provider,
                    message_id=answer.message_id,
                    cost=answer.cost_units,
                )
            )
            return []
        provider = getattr(answer, "provider", "unknown")
        if isinstance(answer, BackpressureError):
            released.append(key)
            # retry_after is wall seconds (retry_at is an instant on the guard's
            # monotonic clock, not a duration); at least a moment, at most 5 min.
            wait = max(0.5, float(answer.retry_after))
            requeues.append((key, now + self.ctx.clock.campaign_span(min(wait, 300.0))))
            return []
        if isinstance(answer, AmbiguousOutcomeError):
            outcomes.append(Outcome(*key, "ambiguous", provider, None, 0.0, 1, answer.reason))
            result.outputs.append(
                self._sent(rec, "ambiguous", now, provider=provider, error="ambiguous")
            )
            return self._advance(
                item, Step(State.RECONCILE, touch=req.touch, reason="ambiguous_provider_outcome")
            )
        reason = answer.reason if isinstance(answer, ProviderCallError) else "unexpected"
        outcomes.append(Outcome(*key, "failed", provider, None, 0.0, 1, reason))
        result.outputs.append(self._sent(rec, "failed", now, provider=provider, error=reason))
        if isinstance(answer, InvalidRecipientError):
            self._blocks.append((req.campaign_id, req.lead_id, req.channel, reason))
            return []  # the channel is unusable for this lead; the sequence goes on
        if isinstance(answer, ClientError):
            return []  # the provider refused this one message; the sequence goes on
        # Retries exhausted, bad responses, auth/config problems: quarantine.
        result.failures.append((item, answer))
        return self._advance(item, Step(State.QUARANTINED, reason=reason))

    # --- writes --------------------------------------------------------------------------

    def _advance(self, item: Item, step: Step) -> list[StateChange]:
        applied = self.ctx.states.advance(item, [step], at_ms=self.ctx.clock.now_ms())
        return [StateChange(a.before, a.after) for a in applied]

    async def _write(
        self,
        changes: list[StateChange],
        outcomes: list[Outcome],
        released: list[tuple[str, str, int]],
        requeues: list[tuple[tuple[str, str, int], datetime]],
        blocks: list[tuple[str, str, str, str]],
    ) -> None:
        async with self.db.transaction() as conn:
            await record_outcomes(conn, outcomes, datetime.now(UTC))
            await release_claims(conn, released)
            for key, due in requeues:
                await requeue(conn, key, due)
            if blocks:
                async with conn.cursor() as cur:
                    await cur.executemany(
                        "INSERT INTO channel_blocks (campaign_id, lead_id, channel, reason) "
                        "VALUES (%s, %s, %s, %s) ON CONFLICT DO NOTHING",
                        blocks,
                    )
            await write_state_changes(conn, changes)

    def _sent(
        self,
        rec: dict[str, Any],
        status: str,
        now: datetime,
        *,
        provider: str | None = None,
        message_id: str | None = None,
        cost: float = 0.0,
        error: str | None = None,
    ) -> Output:
        record = {
            "campaign_id": rec["campaign_id"],
            "lead_id": rec["lead_id"],
            "touch": int(rec["touch"]),
            "channel": rec["channel"],
            "provider": provider or "none",
            "status": status,
            "provider_message_id": message_id,
            "idempotency_key": idempotency_key(
                rec["campaign_id"], rec["lead_id"], int(rec["touch"])
            ),
            "cost_units": cost,
            "sent_at": now,
            "error": error,
            "event_time": rec["event_time"],
        }
        return Output(self.out_topic, rec["lead_id"].encode(), self.codec.encode(record))


@app.agent(topology.topic("touch-due"), name="send")
async def send_agent(stream: Any) -> None:
    """Faust agent: run the send stage over ``touch-due``."""
    ctx = await get_context(app, topology.lead_state_table)
    await runner_for(SendStage(ctx), ctx, "touch-due").run(stream)
