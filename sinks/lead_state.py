"""Mirror of the state table in Postgres: current state per lead and the timeline.

Writes are upserts keyed on natural keys, guarded by the state version, so
replays and at-least-once delivery change nothing and an older write never
overwrites a newer one. A write of the *same* version does overwrite: after a
crash loses the table's last changelog records, the table counts versions
from where its changelog stopped, so one version number can carry two
different states, and the table's (written later, and refreshed on replays)
must win. Only the first transition row of such a version is kept.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime

import psycopg

from streams.state_machine import LeadState

__all__ = ["LeadFacts", "StateChange", "write_state_changes"]


@dataclass(frozen=True)
class LeadFacts:
    """Lead attributes a stage learned (None = unchanged)."""

    identity_key: str | None = None
    tier: str | None = None
    score: float | None = None
    timezone: str | None = None


@dataclass(frozen=True)
class StateChange:
    """One applied transition plus what the stage learned about the lead."""

    before: LeadState | None
    after: LeadState
    facts: LeadFacts = LeadFacts()


async def mirrored_states(
    conn: psycopg.AsyncConnection[tuple[object, ...]], keys: Sequence[tuple[str, str]]
) -> dict[tuple[str, str], tuple[str, int]]:
    """Postgres's ``(state, touch)`` of each ``(campaign, lead)`` key it has a row for."""
    if not keys:
        return {}
    cur = await conn.execute(
        """
        SELECT l.campaign_id, l.lead_id, l.state, l.touch
        FROM leads l JOIN unnest(%b::text[], %b::text[]) AS k(campaign_id, lead_id)
          ON l.campaign_id = k.campaign_id AND l.lead_id = k.lead_id
        """,
        ([c for c, _ in keys], [lead for _, lead in keys]),
    )
    return {(str(c), str(lead)): (str(st), int(str(t))) for c, lead, st, t in await cur.fetchall()}


def _ts(ms: int) -> datetime:
    return datetime.fromtimestamp(ms / 1000, UTC)


async def write_state_changes(
    conn: psycopg.AsyncConnection[tuple[object, ...]], changes: Sequence[StateChange]
) -> None:
    """Upsert each lead's latest state and insert its transitions (one statement each).

    A change whose ``before`` has the same version as its ``after`` is a
    *refresh*: it re-writes the lead's row (a mirror that fell behind the
    state table after a crash) and records no transition.
    """
    if not changes:
        return
    latest: dict[tuple[str, str], StateChange] = {}
    for change in changes:
        key = (change.after.campaign_id, change.after.lead_id)
        prior = latest.get(key)
        if prior is None or prior.after.version < change.after.version:
            merged = change
            if prior is not None:  # keep facts learned earlier in the batch
                merged = StateChange(
                    change.before,
                    change.after,
                    LeadFacts(
                        change.facts.identity_key or prior.facts.identity_key,
                        change.facts.tier or prior.facts.tier,
                        change.facts.score if change.facts.score is not None else prior.facts.score,
                        change.facts.timezone or prior.facts.timezone,
                    ),
                )
            latest[key] = merged
    rows = list(latest.values())
    await conn.execute(
        """
        INSERT INTO leads (campaign_id, lead_id, state, touch, identity_key, tier, score,
                           timezone, reason, version, updated_at)
        SELECT * FROM unnest(%b::text[], %b::text[], %b::text[], %b::int[], %b::text[],
                             %b::text[], %b::float8[], %b::text[], %b::text[], %b::bigint[],
                             %b::timestamptz[])
        ON CONFLICT (campaign_id, lead_id) DO UPDATE SET
            state = EXCLUDED.state,
            touch = EXCLUDED.touch,
            identity_key = COALESCE(EXCLUDED.identity_key, leads.identity_key),
            tier = COALESCE(EXCLUDED.tier, leads.tier),
            score = COALESCE(EXCLUDED.score, leads.score),
            timezone = COALESCE(EXCLUDED.timezone, leads.timezone),
            reason = EXCLUDED.reason,
            version = EXCLUDED.version,
            updated_at = EXCLUDED.updated_at
        WHERE leads.version <= EXCLUDED.version
        """,
        (
            [c.after.campaign_id for c in rows],
            [c.after.lead_id for c in rows],
            [c.after.state.value for c in rows],
            [c.after.touch for c in rows],
            [c.facts.identity_key for c in rows],
            [c.facts.tier for c in rows],
            [c.facts.score for c in rows],
            [c.facts.timezone for c in rows],
            [c.after.reason for c in rows],
            [c.after.version for c in rows],
            [_ts(c.after.updated_at_ms) for c in rows],
        ),
    )
    moves = [c for c in changes if c.before is None or c.before.version != c.after.version]
    if not moves:
        return
    await conn.execute(
        """
        INSERT INTO lead_transitions (campaign_id, lead_id, version, from_state, to_state,
                                      touch, reason, occurred_at)
        SELECT * FROM unnest(%b::text[], %b::text[], %b::bigint[], %b::text[], %b::text[],
                             %b::int[], %b::text[], %b::timestamptz[])
        ON CONFLICT DO NOTHING
        """,
        (
            [c.after.campaign_id for c in moves],
            [c.after.lead_id for c in moves],
            [c.after.version for c in moves],
            [None if c.before is None else c.before.state.value for c in moves],
            [c.after.state.value for c in moves],
            [c.after.touch for c in moves],
            [c.after.reason for c in moves],
            [_ts(c.after.updated_at_ms) for c in moves],
        ),
    )
