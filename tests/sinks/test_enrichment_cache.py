"""The enrichment cache (sinks/enrichment_cache.py) on the real Postgres."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any

import psycopg
import pytest

from sinks.enrichment_cache import cached_enrichment, store_enrichment

Conn = psycopg.AsyncConnection[tuple[Any, ...]]
T0 = datetime(2026, 1, 5, 12, 0, tzinfo=UTC)
TTL = timedelta(days=7)
TICK = timedelta(microseconds=1)  # timestamptz resolution


def identity() -> str:
    return f"id-{uuid.uuid4().hex}"


@pytest.fixture
async def conn(dsn: str) -> AsyncIterator[Conn]:
    async with await psycopg.AsyncConnection.connect(dsn, autocommit=True) as c:
        yield c


async def stored_row(conn: Conn, key: str) -> tuple[Any, ...] | None:
    cur = await conn.execute(
        "SELECT found, data, fetched_at FROM enrichment_cache WHERE identity_key = %s", (key,)
    )
    return await cur.fetchone()


async def test_nothing_asked_nothing_found(conn: Conn) -> None:
    assert await cached_enrichment(conn, [], now=T0, ttl=TTL) == {}
    await store_enrichment(conn, {}, now=T0)
    assert await cached_enrichment(conn, [identity()], now=T0, ttl=TTL) == {}


async def test_a_result_is_fresh_while_younger_than_the_ttl(conn: Conn) -> None:
    key = identity()
    await store_enrichment(conn, {key: {"found": True, "company": "Acme"}}, now=T0)
    expected = {key: {"found": True, "company": "Acme"}}
    assert await cached_enrichment(conn, [key], now=T0, ttl=TTL) == expected
    assert await cached_enrichment(conn, [key], now=T0 + TTL - TICK, ttl=TTL) == expected
    assert await cached_enrichment(conn, [key], now=T0 + TTL, ttl=TTL) == {}
    assert await cached_enrichment(conn, [key], now=T0 + TTL + TICK, ttl=TTL) == {}
    # a shorter TTL makes the same row stale sooner
    short = timedelta(hours=1)
    assert await cached_enrichment(conn, [key], now=T0 + short, ttl=short) == {}


async def test_storing_again_replaces_the_result_and_restarts_the_ttl(conn: Conn) -> None:
    key = identity()
    await store_enrichment(conn, {key: {"found": True, "company": "Old", "size": 10}}, now=T0)
    later = T0 + timedelta(days=3)
    await store_enrichment(conn, {key: {"found": False, "company": "New"}}, now=later)
    assert await stored_row(conn, key) == (False, {"company": "New"}, later)
    # fresh by the newer fetch time, past the first one's expiry
    got = await cached_enrichment(conn, [key], now=T0 + TTL + timedelta(days=1), ttl=TTL)
    assert got == {key: {"found": False, "company": "New"}}
    assert await cached_enrichment(conn, [key], now=later + TTL, ttl=TTL) == {}


async def test_the_found_flag_round_trips_apart_from_the_data(conn: Conn) -> None:
    found, not_found, no_flag = identity(), identity(), identity()
    data = {"company": "Acme", "employees": 250, "tags": ["saas", "b2b"], "geo": {"cc": "US"}}
    await store_enrichment(
        conn,
        {found: {"found": True, **data}, not_found: {"found": False}, no_flag: {"x": None}},
        now=T0,
    )
    got = await cached_enrichment(conn, [found, not_found, no_flag, found], now=T0, ttl=TTL)
    assert got == {
        found: {"found": True, **data},
        not_found: {"found": False},
        no_flag: {"found": False, "x": None},
    }
    assert got[found]["found"] is True and got[not_found]["found"] is False
    assert await stored_row(conn, found) == (True, data, T0)  # "found" is a column, not data
    assert await stored_row(conn, not_found) == (False, {}, T0)
