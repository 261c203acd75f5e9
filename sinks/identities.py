"""Deduplication within a campaign: the first lead to claim an identity owns it."""

from __future__ import annotations

from collections.abc import Sequence

import psycopg

__all__ = ["claim_identities"]


async def claim_identities(
    conn: psycopg.AsyncConnection[tuple[object, ...]],
    claims: Sequence[tuple[str, str, str]],
) -> dict[tuple[str, str], str]:
    """Claim ``(campaign_id, identity_key, lead_id)`` triples; return each identity's owner.

    The first claim of an identity in a campaign wins and stays the owner for
    good, so a replay or a redelivery gets the same answer.
    """
    if not claims:
        return {}
    campaigns = [c for c, _, _ in claims]
    identities = [i for _, i, _ in claims]
    leads = [lead for _, _, lead in claims]
    await conn.execute(
        """
        INSERT INTO lead_identities (campaign_id, identity_key, lead_id)
        SELECT * FROM unnest(%b::text[], %b::text[], %b::text[])
        ON CONFLICT (campaign_id, identity_key) DO NOTHING
        """,
        (campaigns, identities, leads),
    )
    cur = await conn.execute(
        """
        SELECT li.campaign_id, li.identity_key, li.lead_id
        FROM lead_identities li
        JOIN unnest(%b::text[], %b::text[]) AS q(campaign_id, identity_key)
          ON li.campaign_id = q.campaign_id AND li.identity_key = q.identity_key
        """,
        (campaigns, identities),
    )
    return {(str(c), str(i)): str(lead) for c, i, lead in await cur.fetchall()}
