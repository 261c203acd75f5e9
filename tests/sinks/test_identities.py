"""Deduplication by identity (sinks/identities.py) on the real Postgres."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from typing import Any

import psycopg
import pytest

from sinks.identities import claim_identities

Conn = psycopg.AsyncConnection[tuple[Any, ...]]


def fresh(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:12]}"


@pytest.fixture
async def conn(dsn: str) -> AsyncIterator[Conn]:
    async with await psycopg.AsyncConnection.connect(dsn, autocommit=True) as c:
        yield c


async def owners(conn: Conn, campaign_id: str) -> list[tuple[Any, ...]]:
    cur = await conn.execute(
        "SELECT identity_key, lead_id FROM lead_identities WHERE campaign_id = %s "
        "ORDER BY identity_key",
        (campaign_id,),
    )
    return await cur.fetchall()


async def test_no_claims(conn: Conn) -> None:
    assert await claim_identities(conn, []) == {}


async def test_the_first_lead_owns_the_identity_for_good(conn: Conn) -> None:
    cid, identity = fresh("c"), fresh("id")
    first, second = fresh("lead"), fresh("lead")
    assert await claim_identities(conn, [(cid, identity, first)]) == {(cid, identity): first}
    assert await claim_identities(conn, [(cid, identity, second)]) == {(cid, identity): first}
    # the owner claiming again (a replay) gets itself back
    assert await claim_identities(conn, [(cid, identity, first)]) == {(cid, identity): first}
    assert await owners(conn, cid) == [(identity, first)]


async def test_campaigns_are_independent(conn: Conn) -> None:
    one, two, identity = fresh("c"), fresh("c"), fresh("id")
    lead_one, lead_two = fresh("lead"), fresh("lead")
    assert await claim_identities(conn, [(one, identity, lead_one)]) == {(one, identity): lead_one}
    answer = await claim_identities(conn, [(two, identity, lead_two), (one, identity, lead_two)])
    assert answer == {(two, identity): lead_two, (one, identity): lead_one}
    assert await owners(conn, one) == [(identity, lead_one)]
    assert await owners(conn, two) == [(identity, lead_two)]


async def test_a_batch_mixing_new_and_known_identities(conn: Conn) -> None:
    cid = fresh("c")
    known, new_a, new_b = fresh("id-a"), fresh("id-b"), fresh("id-c")
    owner = fresh("lead")
    await claim_identities(conn, [(cid, known, owner)])
    leads = [fresh("lead") for _ in range(3)]
    answer = await claim_identities(
        conn, [(cid, known, leads[0]), (cid, new_a, leads[1]), (cid, new_b, leads[2])]
    )
    assert answer == {(cid, known): owner, (cid, new_a): leads[1], (cid, new_b): leads[2]}
    assert len(await owners(conn, cid)) == 3


async def test_within_one_batch_the_first_claim_wins(conn: Conn) -> None:
    cid, identity = fresh("c"), fresh("id")
    first, second = fresh("lead"), fresh("lead")
    answer = await claim_identities(conn, [(cid, identity, first), (cid, identity, second)])
    assert answer == {(cid, identity): first}
    assert await owners(conn, cid) == [(identity, first)]


async def test_a_claim_in_an_open_transaction_is_not_seen_until_commit(dsn: str) -> None:
    cid, identity = fresh("c"), fresh("id")
    first, second = fresh("lead"), fresh("lead")
    async with (
        await psycopg.AsyncConnection.connect(dsn) as one,
        await psycopg.AsyncConnection.connect(dsn, autocommit=True) as other,
    ):
        assert await claim_identities(one, [(cid, identity, first)]) == {(cid, identity): first}
        await one.rollback()  # the batch failed: the claim never happened
        assert await claim_identities(other, [(cid, identity, second)]) == {(cid, identity): second}
