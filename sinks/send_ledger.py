"""The send ledger: at most one provider call per (campaign, lead, touch).

A send is **claimed** before the provider is called, in one transaction that
also re-checks what may have changed since the touch was released: the
lead's opt-out (by hashed identity, across campaigns), the campaign's status
and a block on the channel. Only a claim that inserts a new row may call the
provider. A claim that finds an existing row returns that row instead, so a
replay or a redelivery re-emits the recorded outcome and never calls twice.

Outcomes are then recorded on the row: ``accepted`` (with the provider's
message id), ``failed``, or ``ambiguous`` (the request went out and no answer
came back: never re-sent blindly; the lead goes to ``reconcile``).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

import psycopg

from streams.state_machine import TERMINAL

__all__ = [
    "Claim",
    "ClaimRequest",
    "Outcome",
    "accepted_counts",
    "campaign_spend",
    "claim_sends",
    "mark_calling",
    "record_outcomes",
    "release_claims",
]


@dataclass(frozen=True)
class ClaimRequest:
    """A send about to happen."""

    campaign_id: str
    lead_id: str
    touch: int
    channel: str
    idempotency_key: str
    identity_key: str | None
    campaign_clock: datetime


@dataclass(frozen=True)
class Claim:
    """The answer to a claim.

    ``won`` means this caller inserted the row (or found one a crash left
    before its call) and may call the provider once :func:`mark_calling`
    stamped it.
    Otherwise ``blocked`` says why nothing may be sent (``opted_out``,
    ``campaign_<status>``, ``channel_blocked``; ``lead_moved_on`` when the lead's
    row in Postgres has ended or is past this touch, whatever the worker's state
    table says (a table rebuilt behind the mirror after a crash must not send
    again); ``duplicate`` for a second copy
    of the same send in one batch; ``contended`` when a concurrent release
    removed the row, so try later), or ``status`` is the outcome an earlier
    claim already recorded.
    """

    request: ClaimRequest
    won: bool
    blocked: str | None = None
    status: str | None = None
    provider: str | None = None
    provider_message_id: str | None = None
    cost_units: float = 0.0
    error: str | None = None


@dataclass(frozen=True)
class Outcome:
    """What the provider call came to."""

    campaign_id: str
    lead_id: str
    touch: int
    status: str  # accepted | failed | ambiguous
    provider: str
    provider_message_id: str | None
    cost_units: float
    attempts: int
    error: str | None


#: Lead states after which no touch is sent (the Postgres mirror's view).
_ENDED = sorted(state.value for state in TERMINAL)


async def claim_sends(
    conn: psycopg.AsyncConnection[tuple[object, ...]], requests: Sequence[ClaimRequest]
) -> list[Claim]:
    """Claim each request (call inside one transaction); answers in request order."""
    if not requests:
        return []
    keys = (
        [r.campaign_id for r in requests],
        [r.lead_id for r in requests],
        [r.touch for r in requests],
    )
    cur = await conn.execute(
        """
        SELECT k.campaign_id, k.lead_id, k.touch,
               EXISTS (SELECT 1 FROM opt_outs o WHERE o.identity_key = k.identity_key),
               c.status,
               EXISTS (SELECT 1 FROM channel_blocks b WHERE b.campaign_id = k.campaign_id
                       AND b.lead_id = k.lead_id AND b.channel = k.channel),
               l.state = ANY(%b::text[])
                 OR (l.state IN ('in_sequence', 'reconcile') AND l.touch > k.touch)
                 OR (l.state = 'reconcile' AND l.touch = k.touch)
        FROM unnest(%b::text[], %b::text[], %b::int[], %b::text[], %b::text[])
             AS k(campaign_id, lead_id, touch, identity_key, channel)
        LEFT JOIN campaigns c ON c.campaign_id = k.campaign_id
        LEFT JOIN leads l ON l.campaign_id = k.campaign_id AND l.lead_id = k.lead_id
        """,
        (
            _ENDED,
            *keys,
            [r.identity_key for r in requests],
            [r.channel for r in requests],
        ),
    )
    checks = {
        (str(c), str(lead), int(str(t))): (bool(o), s, bool(b), bool(moved))
        for c, lead, t, o, s, b, moved in await cur.fetchall()
    }
    allowed: list[ClaimRequest] = []
    answers: dict[int, Claim] = {}  # by position in ``requests``
    seen: set[tuple[str, str, int]] = set()
    for pos, r in enumerate(requests):
        key = (r.campaign_id, r.lead_id, r.touch)
        opted, status, blocked, moved_on = checks[key]
        if key in seen:  # the same send twice in one batch: only the first may win
            answers[pos] = Claim(r, False, blocked="duplicate")
            continue
        seen.add(key)
        if opted:
            answers[pos] = Claim(r, False, blocked="opted_out")
        elif status != "active":
            answers[pos] = Claim(r, False, blocked=f"campaign_{status or 'missing'}")
        elif blocked:
            answers[pos] = Claim(r, False, blocked="channel_blocked")
        elif moved_on:
            answers[pos] = Claim(r, False, blocked="lead_moved_on")
        else:
            allowed.append(r)
    positions = {
        (r.campaign_id, r.lead_id, r.touch): pos
        for pos, r in enumerate(requests)
        if pos not in answers
    }
    if allowed:
        cur = await conn.execute(
            """
            INSERT INTO send_ledger (campaign_id, lead_id, touch, channel, idempotency_key,
                                     status, campaign_clock)
            SELECT k.campaign_id, k.lead_id, k.touch, k.channel, k.idempotency_key,
                   'claimed', k.clock
            FROM unnest(%b::text[], %b::text[], %b::int[], %b::text[], %b::text[],
                        %b::timestamptz[])
                 AS k(campaign_id, lead_id, touch, channel, idempotency_key, clock)
            ON CONFLICT (campaign_id, lead_id, touch) DO NOTHING
            RETURNING campaign_id, lead_id, touch
            """,
            (
                [r.campaign_id for r in allowed],
                [r.lead_id for r in allowed],
                [r.touch for r in allowed],
                [r.channel for r in allowed],
                [r.idempotency_key for r in allowed],
                [r.campaign_clock for r in allowed],
            ),
        )
        won = {(str(c), str(lead), int(str(t))) for c, lead, t in await cur.fetchall()}
        lost = [r for r in allowed if (r.campaign_id, r.lead_id, r.touch) not in won]
        for r in allowed:
            if (r.campaign_id, r.lead_id, r.touch) in won:
                answers[positions[(r.campaign_id, r.lead_id, r.touch)]] = Claim(r, True)
        if lost:
            cur = await conn.execute(
                """
                SELECT s.campaign_id, s.lead_id, s.touch, s.status, s.provider,
                       s.provider_message_id, s.cost_units, s.error, s.calling_at
                FROM send_ledger s
                JOIN unnest(%b::text[], %b::text[], %b::int[]) AS k(campaign_id, lead_id, touch)
                  ON s.campaign_id = k.campaign_id AND s.lead_id = k.lead_id AND s.touch = k.touch
                """,
                ([r.campaign_id for r in lost], [r.lead_id for r in lost], [r.touch for r in lost]),
            )
            rows = {
                (str(c), str(lead), int(str(t))): (st, p, m, cu, e, at)
                for c, lead, t, st, p, m, cu, e, at in await cur.fetchall()
            }
            for r in lost:
                pos = positions[(r.campaign_id, r.lead_id, r.touch)]
                row = rows.get((r.campaign_id, r.lead_id, r.touch))
                if row is None:  # released by another transaction since our insert
                    answers[pos] = Claim(r, False, blocked="contended")
                    continue
                st, p, m, cu, e, at = row
                if st == "claimed" and at is None:
                    # Left by a crash before its call: never called, so it may be
                    # taken over; mark_calling decides which claimer calls.
                    answers[pos] = Claim(r, True, status="claimed")
                    continue
                answers[pos] = Claim(
                    r,
                    False,
                    status=str(st),
                    provider=None if p is None else str(p),
                    provider_message_id=None if m is None else str(m),
                    cost_units=float(str(cu)),
                    error=None if e is None else str(e),
                )
    return [answers[pos] for pos in range(len(requests))]


async def mark_calling(
    conn: psycopg.AsyncConnection[tuple[object, ...]], keys: Sequence[tuple[str, str, int]]
) -> set[tuple[str, str, int]]:
    """Stamp ``calling_at`` on claims about to be called; return those stamped now.

    Commit this before calling. Only a claim not stamped before is returned,
    so of two claimers of one send (a redelivery racing the original) just
    one calls; a claim already stamped may have reached the provider.
    """
    if not keys:
        return set()
    cur = await conn.execute(
        """
        UPDATE send_ledger s SET calling_at = now()
        FROM unnest(%b::text[], %b::text[], %b::int[]) AS k(campaign_id, lead_id, touch)
        WHERE s.campaign_id = k.campaign_id AND s.lead_id = k.lead_id AND s.touch = k.touch
          AND s.status = 'claimed' AND s.calling_at IS NULL
        RETURNING s.campaign_id, s.lead_id, s.touch
        """,
        ([k[0] for k in keys], [k[1] for k in keys], [k[2] for k in keys]),
    )
    return {(str(c), str(lead), int(str(t))) for c, lead, t in await cur.fetchall()}


async def record_outcomes(
    conn: psycopg.AsyncConnection[tuple[object, ...]], outcomes: Sequence[Outcome], at: datetime
) -> None:
    """Record provider outcomes on claimed rows."""
    if not outcomes:
        return
    await conn.execute(
        """
        UPDATE send_ledger s SET status = o.status, provider = o.provider,
               provider_message_id = o.message_id, cost_units = o.cost_units,
               attempts = o.attempts, error = o.error, completed_at = %s
        FROM unnest(%b::text[], %b::text[], %b::int[], %b::text[], %b::text[], %b::text[],
                    %b::float8[], %b::int[], %b::text[])
             AS o(campaign_id, lead_id, touch, status, provider, message_id, cost_units,
                  attempts, error)
        WHERE s.campaign_id = o.campaign_id AND s.lead_id = o.lead_id AND s.touch = o.touch
          AND s.status = 'claimed'
        """,
        (
            at,
            [o.campaign_id for o in outcomes],
            [o.lead_id for o in outcomes],
            [o.touch for o in outcomes],
            [o.status for o in outcomes],
            [o.provider for o in outcomes],
            [o.provider_message_id for o in outcomes],
            [o.cost_units for o in outcomes],
            [o.attempts for o in outcomes],
            [o.error for o in outcomes],
        ),
    )


async def accepted_counts(
    conn: psycopg.AsyncConnection[tuple[object, ...]], leads: Sequence[tuple[str, str]]
) -> dict[tuple[str, str], int]:
    """How many sequence touches (touch >= 1) were accepted for each (campaign, lead)."""
    if not leads:
        return {}
    cur = await conn.execute(
        """
        SELECT s.campaign_id, s.lead_id, count(*)
        FROM send_ledger s
        JOIN unnest(%b::text[], %b::text[]) AS k(campaign_id, lead_id)
          ON s.campaign_id = k.campaign_id AND s.lead_id = k.lead_id
        WHERE s.status = 'accepted' AND s.touch >= 1
        GROUP BY s.campaign_id, s.lead_id
        """,
        ([c for c, _ in leads], [lead for _, lead in leads]),
    )
    return {(str(c), str(lead)): int(str(n)) for c, lead, n in await cur.fetchall()}


async def release_claims(
    conn: psycopg.AsyncConnection[tuple[object, ...]], keys: Sequence[tuple[str, str, int]]
) -> None:
    """Delete claims whose provider call never went out (circuit open, throttled)."""
    if not keys:
        return
    await conn.execute(
        """
        DELETE FROM send_ledger s
        USING unnest(%b::text[], %b::text[], %b::int[]) AS k(campaign_id, lead_id, touch)
        WHERE s.campaign_id = k.campaign_id AND s.lead_id = k.lead_id AND s.touch = k.touch
          AND s.status = 'claimed'
        """,
        ([k[0] for k in keys], [k[1] for k in keys], [k[2] for k in keys]),
    )


async def campaign_spend(
    conn: psycopg.AsyncConnection[tuple[object, ...]], campaign_ids: Sequence[str]
) -> dict[str, float]:
    """Cost units spent so far per campaign (accepted and ambiguous sends count)."""
    if not campaign_ids:
        return {}
    cur = await conn.execute(
        """
        SELECT campaign_id, coalesce(sum(cost_units), 0)
        FROM send_ledger
        WHERE campaign_id = ANY(%s) AND status IN ('accepted', 'ambiguous')
        GROUP BY campaign_id
        """,
        (sorted(set(campaign_ids)),),
    )
    spent = {str(c): float(str(v)) for c, v in await cur.fetchall()}
    return {c: spent.get(c, 0.0) for c in campaign_ids}
