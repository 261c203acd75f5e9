"""Enrichment results by hashed identity, reused while younger than the TTL."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from datetime import datetime, timedelta
from typing import Any

import psycopg
from psycopg.types.json import Jsonb

__all__ = ["cached_enrichment", "store_enrichment"]


async def cached_enrichment(
    conn: psycopg.AsyncConnection[tuple[object, ...]],
    identities: Iterable[str],
    *,
    now: datetime,
    ttl: timedelta,
) -> dict[str, dict[str, Any]]:
    """Fresh cached results (``found`` plus the provider's fields) by identity."""
    keys = list(set(identities))
    if not keys:
        return {}
    cur = await conn.execute(
        "SELECT identity_key, found, data FROM enrichment_cache "
        "WHERE identity_key = ANY(%s) AND fetched_at > %s",
        (keys, now - ttl),
    )
    out: dict[str, dict[str, Any]] = {}
    for key, found, data in await cur.fetchall():
        assert isinstance(data, dict)
        out[str(key)] = {**data, "found": bool(found)}
    return out


async def store_enrichment(
    conn: psycopg.AsyncConnection[tuple[object, ...]],
    results: Mapping[str, Mapping[str, Any]],
    *,
    now: datetime,
) -> None:
    """Upsert fresh results (the newest wins)."""
    if not results:
        return
    async with conn.cursor() as cur:
        await cur.executemany(
            """
            INSERT INTO enrichment_cache (identity_key, found, data, fetched_at)
            VALUES (%s, %s, %s, %s)
            ON CONFLICT (identity_key) DO UPDATE
              SET found = EXCLUDED.found, data = EXCLUDED.data, fetched_at = EXCLUDED.fetched_at
            """,
            [
                (
                    key,
                    bool(r.get("found")),
                    Jsonb({k: v for k, v in r.items() if k != "found"}),
                    now,
                )
                for key, r in results.items()
            ],
        )
