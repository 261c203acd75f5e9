"""The lead state mirror (sinks/lead_state.py) on the real Postgres."""

from __future__ import annotations

import dataclasses
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from typing import Any

import psycopg
import pytest

from sinks.campaigns import CampaignStore
from sinks.lead_state import LeadFacts, StateChange, write_state_changes
from streams.campaign import load_campaign
from streams.settings import REPO_ROOT
from streams.state_machine import LeadState, State

EXAMPLE = REPO_ROOT / "examples" / "campaign.yaml"
T0_MS = 1_767_600_000_000  # 2026-01-05T08:00:00Z

Conn = psycopg.AsyncConnection[tuple[Any, ...]]


def new_campaign(dsn: str) -> str:
    cid = f"t-{uuid.uuid4().hex[:12]}"
    CampaignStore(dsn).create(dataclasses.replace(load_campaign(EXAMPLE), id=cid))
    return cid


def ts(ms: int) -> datetime:
    return datetime.fromtimestamp(ms / 1000, UTC)


class Lead:
    """Builds a lead's successive states (version n at T0 + n seconds)."""

    def __init__(self, campaign_id: str) -> None:
        self.campaign_id = campaign_id
        self.lead_id = f"lead-{uuid.uuid4().hex[:12]}"

    def state(
        self, version: int, state: State, touch: int = 0, reason: str | None = None
    ) -> LeadState:
        return LeadState(
            self.campaign_id,
            self.lead_id,
            state,
            touch=touch,
            reason=reason,
            updated_at_ms=T0_MS + version * 1000,
            version=version,
        )


@pytest.fixture
async def conn(dsn: str) -> AsyncIterator[Conn]:
    async with await psycopg.AsyncConnection.connect(dsn, autocommit=True) as c:
        yield c


async def lead_row(conn: Conn, lead: Lead) -> tuple[Any, ...] | None:
    cur = await conn.execute(
        "SELECT state, touch, identity_key, tier, score, timezone, reason, version, updated_at "
        "FROM leads WHERE campaign_id = %s AND lead_id = %s",
        (lead.campaign_id, lead.lead_id),
    )
    return await cur.fetchone()


async def transitions(conn: Conn, lead: Lead) -> list[tuple[Any, ...]]:
    cur = await conn.execute(
        "SELECT version, from_state, to_state, touch, reason, occurred_at FROM lead_transitions "
        "WHERE campaign_id = %s AND lead_id = %s ORDER BY version",
        (lead.campaign_id, lead.lead_id),
    )
    return await cur.fetchall()


async def write(conn: Conn, changes: list[StateChange]) -> None:
    async with conn.transaction():
        await write_state_changes(conn, changes)


async def test_no_changes_cost_no_round_trip(dsn: str) -> None:
    conn = await psycopg.AsyncConnection.connect(dsn)
    await conn.close()
    await write_state_changes(conn, [])  # a closed connection: any query would raise
    assert conn.closed


async def test_a_change_is_mirrored_with_its_transition(dsn: str, conn: Conn) -> None:
    lead = Lead(new_campaign(dsn))
    v1 = lead.state(1, State.NEW)
    facts = LeadFacts(identity_key="id-1", tier="A", score=81.5, timezone="America/Chicago")
    await write(conn, [StateChange(None, v1, facts)])
    assert await lead_row(conn, lead) == (
        "new",
        0,
        "id-1",
        "A",
        81.5,
        "America/Chicago",
        None,
        1,
        ts(v1.updated_at_ms),
    )
    assert await transitions(conn, lead) == [(1, None, "new", 0, None, ts(v1.updated_at_ms))]


async def test_an_older_version_never_overwrites_a_newer_one(dsn: str, conn: Conn) -> None:
    lead = Lead(new_campaign(dsn))
    v1 = lead.state(1, State.NEW)
    v2 = lead.state(2, State.ENRICHED)
    v3 = lead.state(3, State.QUALIFIED, reason="tier A")
    await write(conn, [StateChange(None, v1)])
    await write(conn, [StateChange(v2, v3)])
    await write(conn, [StateChange(v1, v2, LeadFacts(tier="B"))])  # late, older
    row = await lead_row(conn, lead)
    assert row is not None
    assert (row[0], row[6], row[7], row[8]) == ("qualified", "tier A", 3, ts(v3.updated_at_ms))
    assert row[3] is None  # the older write's facts are not applied either
    # the same version again replaces it (the table's, after a crash lost its changelog)
    await write(conn, [StateChange(v2, dataclasses.replace(v3, state=State.CANCELLED))])
    assert (await lead_row(conn, lead) or ())[0] == "cancelled"
    # while a newer one does
    v4 = lead.state(4, State.IN_SEQUENCE, touch=1)
    await write(conn, [StateChange(v3, v4)])
    assert (await lead_row(conn, lead) or ())[:2] == ("in_sequence", 1)
    assert [t[0] for t in await transitions(conn, lead)] == [1, 2, 3, 4]


async def test_missing_facts_keep_what_was_learned(dsn: str, conn: Conn) -> None:
    lead = Lead(new_campaign(dsn))
    v1, v2, v3 = (
        lead.state(1, State.NEW),
        lead.state(2, State.ENRICHED),
        lead.state(3, State.QUALIFIED),
    )
    await write(conn, [StateChange(None, v1, LeadFacts(identity_key="id-x", timezone="UTC"))])
    await write(conn, [StateChange(v1, v2, LeadFacts(tier="A", score=0.0))])
    row = await lead_row(conn, lead)
    assert row is not None and row[2:6] == ("id-x", "A", 0.0, "UTC")
    await write(conn, [StateChange(v2, v3)])  # no facts at all
    row = await lead_row(conn, lead)
    assert row is not None and row[0] == "qualified" and row[2:6] == ("id-x", "A", 0.0, "UTC")
    v4 = lead.state(4, State.IN_SEQUENCE, touch=1)
    await write(conn, [StateChange(v3, v4, LeadFacts(tier="B", score=12.5))])
    row = await lead_row(conn, lead)
    assert row is not None and row[2:6] == ("id-x", "B", 12.5, "UTC")


async def test_facts_learned_earlier_in_a_batch_are_kept(dsn: str, conn: Conn) -> None:
    lead = Lead(new_campaign(dsn))
    v1, v2, v3 = (
        lead.state(1, State.NEW),
        lead.state(2, State.ENRICHED),
        lead.state(3, State.QUALIFIED),
    )
    await write(
        conn,
        [
            StateChange(None, v1, LeadFacts(identity_key="id-y", timezone="Europe/Paris")),
            StateChange(v1, v2, LeadFacts(score=70.0)),
            StateChange(v2, v3, LeadFacts(tier="A")),
        ],
    )
    assert await lead_row(conn, lead) == (
        "qualified",
        0,
        "id-y",
        "A",
        70.0,
        "Europe/Paris",
        None,
        3,
        ts(v3.updated_at_ms),
    )
    assert [(t[0], t[1], t[2]) for t in await transitions(conn, lead)] == [
        (1, None, "new"),
        (2, "new", "enriched"),
        (3, "enriched", "qualified"),
    ]


async def test_the_same_change_twice_records_one_transition(dsn: str, conn: Conn) -> None:
    lead = Lead(new_campaign(dsn))
    v1 = lead.state(1, State.NEW)
    v2 = lead.state(2, State.INVALID, reason="no contact")
    change = StateChange(v1, v2)
    await write(conn, [StateChange(None, v1), change, change])
    await write(conn, [change])  # a replay
    assert await transitions(conn, lead) == [
        (1, None, "new", 0, None, ts(v1.updated_at_ms)),
        (2, "new", "invalid", 0, "no contact", ts(v2.updated_at_ms)),
    ]
    row = await lead_row(conn, lead)
    assert row is not None and (row[0], row[6], row[7]) == ("invalid", "no contact", 2)


async def test_leads_of_several_campaigns_in_one_batch(dsn: str, conn: Conn) -> None:
    one, two = Lead(new_campaign(dsn)), Lead(new_campaign(dsn))
    two.lead_id = one.lead_id  # the same lead id in two campaigns is two leads
    await write(
        conn,
        [
            StateChange(None, one.state(1, State.NEW), LeadFacts(tier="A")),
            StateChange(None, two.state(1, State.NEW), LeadFacts(tier="C")),
            StateChange(one.state(1, State.NEW), one.state(2, State.ENRICHED)),
        ],
    )
    row_one, row_two = await lead_row(conn, one), await lead_row(conn, two)
    assert row_one is not None and (row_one[0], row_one[3], row_one[7]) == ("enriched", "A", 2)
    assert row_two is not None and (row_two[0], row_two[3], row_two[7]) == ("new", "C", 1)


async def test_a_refresh_rewrites_a_row_that_fell_behind_and_records_no_transition(
    dsn: str, conn: Conn
) -> None:
    lead = Lead(new_campaign(dsn))
    v1 = lead.state(1, State.IN_SEQUENCE, touch=4)
    v2 = lead.state(2, State.COMPLETED, reason="accepted:4")
    await write(conn, [StateChange(None, v1, LeadFacts(tier="A"))])
    # the table reached v2 but the crash lost its mirror write: a refresh catches up
    await write(conn, [StateChange(v2, v2)])
    row = await lead_row(conn, lead)
    assert row is not None
    assert (row[0], row[3], row[6], row[7]) == ("completed", "A", "accepted:4", 2)
    assert [t[0] for t in await transitions(conn, lead)] == [1]
    await write(conn, [StateChange(v1, v1)])  # an older refresh changes nothing
    assert (await lead_row(conn, lead) or ())[0] == "completed"


async def test_after_a_crash_the_tables_state_of_a_repeated_version_wins(
    dsn: str, conn: Conn
) -> None:
    """The sequence stage wrote in_sequence v5 and died before its changelog record
    left; the restarted table (at v4) then took a reply as v5. The refresh on the
    replayed outcome must bring Postgres to the table's state."""
    lead = Lead(new_campaign(dsn))
    v4 = lead.state(4, State.IN_SEQUENCE, touch=1)
    lost = lead.state(5, State.IN_SEQUENCE, touch=2)
    replied = lead.state(5, State.REPLIED, reason="reply")
    await write(conn, [StateChange(None, v4)])
    await write(conn, [StateChange(v4, lost)])  # Postgres saw it; the changelog did not
    await write(conn, [StateChange(v4, replied)])  # the table's v5
    await write(conn, [StateChange(replied, replied)])  # the refresh on the replay
    assert (await lead_row(conn, lead) or ())[:2] == ("replied", 0)
