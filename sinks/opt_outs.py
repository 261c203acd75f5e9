"""Opt-outs, and the per-contact lock that orders them against sends.

The promise: **no send is accepted after an opt-out is recorded**. A claim's
re-check alone cannot keep it: an opt-out may commit while a send is already
on its way to the provider. So both sides take a transaction-scoped advisory
lock on the contact's hashed identity:

- a send holds the lock *shared* from its final opt-out check until the
  provider has answered (:func:`lock_identities` with ``shared=True``);
- recording an opt-out takes it *exclusive* (:func:`record_opt_outs`), so it
  waits for sends in flight to finish, and every send that starts later sees
  the opt-out in its check. ``recorded_at`` is taken after the lock, so it is
  later than every send accepted before it.

Locks are taken in hash order on both sides, so they cannot deadlock.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import psycopg

__all__ = ["OptOut", "lock_identities", "opted_out", "record_opt_outs"]

Conn = psycopg.AsyncConnection[tuple[object, ...]]


@dataclass(frozen=True)
class OptOut:
    """One ``opt_outs`` row to record (channel ``all``)."""

    identity_key: str
    source: str
    campaign_id: str | None
    lead_id: str | None


async def lock_identities(conn: Conn, identities: Iterable[str], *, shared: bool) -> None:
    """Take the transaction-scoped contact locks of ``identities`` (in hash order)."""
    keys = sorted(set(identities))
    if not keys:
        return
    fn = "pg_advisory_xact_lock_shared" if shared else "pg_advisory_xact_lock"
    await conn.execute(
        f"SELECT {fn}(h) FROM (SELECT DISTINCT hashtextextended(k, 0) AS h "
        "FROM unnest(%b::text[]) AS k ORDER BY 1) AS s",
        (keys,),
    )


async def opted_out(conn: Conn, identities: Iterable[str]) -> set[str]:
    """The identities among ``identities`` that have opted out."""
    keys = list(set(identities))
    if not keys:
        return set()
    cur = await conn.execute(
        "SELECT DISTINCT identity_key FROM opt_outs WHERE identity_key = ANY(%s)", (keys,)
    )
    return {str(row[0]) for row in await cur.fetchall()}


async def record_opt_outs(conn: Conn, rows: Sequence[OptOut]) -> None:
    """Record opt-outs (channel ``all``) under the exclusive contact lock.

    Call inside a transaction; an identity already opted out is left as it is.
    """
    if not rows:
        return
    await lock_identities(conn, (r.identity_key for r in rows), shared=False)
    async with conn.cursor() as cur:
        await cur.executemany(
            """
            INSERT INTO opt_outs (identity_key, channel, source, campaign_id, lead_id,
                                  recorded_at)
            VALUES (%s, 'all', %s, %s, %s, clock_timestamp())
            ON CONFLICT DO NOTHING
            """,
            [(r.identity_key, r.source, r.campaign_id, r.lead_id) for r in rows],
        )
