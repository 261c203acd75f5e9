"""A stage's Postgres connection (sinks/db.py): transactions, error mapping, reconnects."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from typing import Any

import psycopg
import pytest

from sinks.db import StageDatabase
from streams.errors import DatabaseError, DatabaseUnavailableError, TransientError


@pytest.fixture
async def db(dsn: str) -> AsyncIterator[StageDatabase]:
    stage = StageDatabase(dsn, "testdb")
    try:
        yield stage
    finally:
        await stage.aclose()


def metric() -> tuple[str, str]:
    """A fresh ``campaign_stats`` key (the table has no foreign keys)."""
    return (f"t-{uuid.uuid4().hex[:12]}", "test_metric")


async def stat(dsn: str, key: tuple[str, str]) -> float | None:
    async with await psycopg.AsyncConnection.connect(dsn) as conn:
        cur = await conn.execute(
            "SELECT value FROM campaign_stats WHERE campaign_id = %s AND metric = %s", key
        )
        row = await cur.fetchone()
    return None if row is None else float(row[0])


async def insert(conn: psycopg.AsyncConnection[Any], key: tuple[str, str], value: float) -> None:
    await conn.execute(
        "INSERT INTO campaign_stats (campaign_id, metric, value) VALUES (%s, %s, %s)",
        (*key, value),
    )


async def backend_pid(db: StageDatabase) -> int:
    async with db.transaction() as conn:
        cur = await conn.execute("SELECT pg_backend_pid()")
        row = await cur.fetchone()
    assert row is not None
    return int(row[0])


async def test_a_transaction_commits(dsn: str, db: StageDatabase) -> None:
    key = metric()
    async with db.transaction() as conn:
        await insert(conn, key, 3.0)
        assert await stat(dsn, key) is None  # not visible before the commit
    assert await stat(dsn, key) == 3.0


async def test_an_error_in_the_body_rolls_back_and_propagates(dsn: str, db: StageDatabase) -> None:
    key = metric()
    with pytest.raises(ValueError, match="stop"):
        async with db.transaction() as conn:
            await insert(conn, key, 1.0)
            raise ValueError("stop")
    assert await stat(dsn, key) is None
    async with db.transaction() as conn:  # the connection is usable again
        await insert(conn, key, 2.0)
    assert await stat(dsn, key) == 2.0


async def test_bad_sql_is_a_database_error_not_a_transient_one(dsn: str, db: StageDatabase) -> None:
    pid = await backend_pid(db)
    key = metric()
    with pytest.raises(DatabaseError, match="testdb: ") as info:
        async with db.transaction() as conn:
            await insert(conn, key, 1.0)
            await conn.execute("SELECT * FROM no_such_table")
    assert not isinstance(info.value, TransientError)
    assert isinstance(info.value.__cause__, psycopg.errors.UndefinedTable)
    assert "no_such_table" in str(info.value)
    assert await stat(dsn, key) is None  # the whole transaction rolled back
    assert await backend_pid(db) == pid  # and the connection was kept


async def test_a_constraint_violation_is_a_database_error(db: StageDatabase) -> None:
    key = metric()
    with pytest.raises(DatabaseError) as info:
        async with db.transaction() as conn:
            await insert(conn, key, 1.0)
            await insert(conn, key, 2.0)
    assert not isinstance(info.value, DatabaseUnavailableError)
    assert isinstance(info.value.__cause__, psycopg.errors.UniqueViolation)


async def test_a_dropped_connection_is_unavailable_then_reconnects(
    dsn: str, db: StageDatabase
) -> None:
    pid = await backend_pid(db)
    async with await psycopg.AsyncConnection.connect(dsn, autocommit=True) as admin:
        cur = await admin.execute(
            "SELECT application_name FROM pg_stat_activity WHERE pid = %s", (pid,)
        )
        assert await cur.fetchone() == ("leadflow-testdb",)
        cur = await admin.execute("SELECT pg_terminate_backend(%s)", (pid,))
        assert await cur.fetchone() == (True,)
    key = metric()
    with pytest.raises(DatabaseUnavailableError, match="testdb: Postgres unavailable") as info:
        async with db.transaction() as conn:
            await insert(conn, key, 1.0)
    assert isinstance(info.value, TransientError) and isinstance(info.value, DatabaseError)
    assert isinstance(info.value.__cause__, psycopg.OperationalError)
    async with db.transaction() as conn:  # the next call reconnects
        await insert(conn, key, 5.0)
    assert await stat(dsn, key) == 5.0
    assert await backend_pid(db) != pid


async def test_an_unreachable_database_is_unavailable() -> None:
    stage = StageDatabase("postgresql://leadflow@127.0.0.1:1/leadflow", "nowhere")
    try:
        with pytest.raises(DatabaseUnavailableError, match="nowhere: Postgres unavailable"):
            async with stage.transaction() as conn:
                await conn.execute("SELECT 1")
    finally:
        await stage.aclose()


async def test_concurrent_users_are_serialised(dsn: str, db: StageDatabase) -> None:
    events: list[str] = []
    keys = [metric() for _ in range(4)]

    async def use(n: int) -> None:
        async with db.transaction() as conn:
            events.append(f"enter {n}")
            await insert(conn, keys[n], float(n))
            await asyncio.sleep(0.02)  # another user tries to start meanwhile
            await conn.execute("SELECT pg_sleep(0.01)")
            events.append(f"exit {n}")

    await asyncio.gather(*(use(n) for n in range(4)))
    assert len(events) == 8
    for i in range(0, 8, 2):  # never interleaved
        assert events[i].split()[1] == events[i + 1].split()[1]
        assert (events[i].split()[0], events[i + 1].split()[0]) == ("enter", "exit")
    assert [await stat(dsn, k) for k in keys] == [0.0, 1.0, 2.0, 3.0]


async def test_aclose_closes_and_the_next_use_reopens(db: StageDatabase) -> None:
    pid = await backend_pid(db)
    await db.aclose()
    await db.aclose()  # twice is harmless
    assert await backend_pid(db) != pid
