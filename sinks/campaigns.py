"""The ``campaigns`` table: create, read and change the status of campaigns.

A campaign's whole definition is stored as jsonb in ``config``
(:meth:`streams.campaign.Campaign.to_dict`); ``name`` and ``status`` are
columns. Status changes follow :data:`TRANSITIONS`::

    active ──► paused ──► active
      │          │
      │          └──────► cancelled (final)
      ├────────────────► cancelled (final)
      └────────────────► completed (final)

``archived`` is allowed by the table for a future retention job; no
transition here leads to it. Every change is one conditional ``UPDATE``, so
two operators racing cannot make an illegal change. All SQL is parameterised.
"""

from __future__ import annotations

import builtins
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum
from typing import Any, Final

import psycopg
from psycopg.types.json import Jsonb

from streams.campaign import Campaign, parse_campaign
from streams.errors import DatabaseError

__all__ = [
    "TRANSITIONS",
    "CampaignExistsError",
    "CampaignNotFoundError",
    "CampaignStatus",
    "CampaignStatusError",
    "CampaignStore",
    "StoredCampaign",
]


class CampaignStatus(StrEnum):
    """The ``campaigns.status`` values."""

    ACTIVE = "active"
    PAUSED = "paused"
    CANCELLED = "cancelled"
    COMPLETED = "completed"
    ARCHIVED = "archived"


#: status -> the statuses it may change to. cancelled and completed are final.
TRANSITIONS: Final[Mapping[CampaignStatus, frozenset[CampaignStatus]]] = {
    CampaignStatus.ACTIVE: frozenset(
        {CampaignStatus.PAUSED, CampaignStatus.CANCELLED, CampaignStatus.COMPLETED}
    ),
    CampaignStatus.PAUSED: frozenset({CampaignStatus.ACTIVE, CampaignStatus.CANCELLED}),
    CampaignStatus.CANCELLED: frozenset(),
    CampaignStatus.COMPLETED: frozenset(),
    CampaignStatus.ARCHIVED: frozenset(),
}

_VERB: Final[Mapping[CampaignStatus, str]] = {
    CampaignStatus.ACTIVE: "resume",
    CampaignStatus.PAUSED: "pause",
    CampaignStatus.CANCELLED: "cancel",
    CampaignStatus.COMPLETED: "complete",
    CampaignStatus.ARCHIVED: "archive",
}


class CampaignExistsError(DatabaseError):
    """A campaign with this id is already stored."""

    reason = "campaign_exists"


class CampaignNotFoundError(DatabaseError):
    """No campaign has this id."""

    reason = "campaign_not_found"


class CampaignStatusError(DatabaseError):
    """A status change that :data:`TRANSITIONS` does not allow."""

    reason = "campaign_status"

    def __init__(self, campaign_id: str, current: str, target: str) -> None:
        self.campaign_id = campaign_id
        self.current = current
        self.target = target
        super().__init__(_refusal(campaign_id, current, target))


def _refusal(campaign_id: str, current: str, target: str) -> str:
    verb = _VERB.get(CampaignStatus(target), f"set to {target}")
    head = f"cannot {verb} campaign {campaign_id}"
    if current == target:
        return f"{head}: it is already {current}"
    allowed = TRANSITIONS.get(CampaignStatus(current), frozenset())
    if not allowed:
        return f"{head}: it is {current}, and {current} is final"
    options = " or ".join(sorted(_VERB[s] for s in allowed))
    return f"{head}: it is {current}; a {current} campaign can only {options}"


@dataclass(frozen=True)
class StoredCampaign:
    """A campaign as stored: its definition, status and timestamps."""

    campaign: Campaign
    status: CampaignStatus
    created_at: datetime
    updated_at: datetime

    @property
    def id(self) -> str:
        """The campaign id."""
        return self.campaign.id

    @property
    def name(self) -> str:
        """The campaign name."""
        return self.campaign.name


_COLUMNS: Final = "campaign_id, name, status, config, created_at, updated_at"


class CampaignStore:
    """Campaigns in the Postgres database at ``dsn`` (one short connection per call)."""

    def __init__(self, dsn: str, *, connect_timeout: float = 10.0) -> None:
        self._dsn = dsn
        self._timeout = connect_timeout

    def _connect(self) -> psycopg.Connection[tuple[Any, ...]]:
        try:
            return psycopg.connect(
                self._dsn, autocommit=True, connect_timeout=max(1, round(self._timeout))
            )
        except psycopg.Error as exc:
            raise DatabaseError(f"cannot connect to the campaign database: {exc}") from exc

    def create(self, campaign: Campaign) -> StoredCampaign:
        """Store ``campaign`` as ``active``.

        It is validated again first (a hand-built :class:`Campaign` may be
        invalid). Raises :class:`CampaignExistsError` when the id is taken.
        """
        config = campaign.to_dict()
        parse_campaign(config, source=f"campaign {campaign.id}")
        try:
            with self._connect() as conn:
                row = conn.execute(
                    f"""
                    INSERT INTO campaigns (campaign_id, name, status, config)
                    VALUES (%s, %s, %s, %s)
                    ON CONFLICT (campaign_id) DO NOTHING
                    RETURNING {_COLUMNS}
                    """,
                    (campaign.id, campaign.name, CampaignStatus.ACTIVE.value, Jsonb(config)),
                ).fetchone()
        except psycopg.Error as exc:
            raise DatabaseError(f"cannot store campaign {campaign.id}: {exc}") from exc
        if row is None:
            raise CampaignExistsError(
                f"campaign {campaign.id} already exists; choose another id "
                "(a stored campaign is never overwritten)"
            )
        return _stored(row)

    def get(self, campaign_id: str) -> StoredCampaign:
        """The campaign ``campaign_id``; raises :class:`CampaignNotFoundError`."""
        try:
            with self._connect() as conn:
                row = conn.execute(
                    f"SELECT {_COLUMNS} FROM campaigns WHERE campaign_id = %s", (campaign_id,)
                ).fetchone()
        except psycopg.Error as exc:
            raise DatabaseError(f"cannot read campaign {campaign_id}: {exc}") from exc
        if row is None:
            raise CampaignNotFoundError(f"no campaign with id {campaign_id!r}")
        return _stored(row)

    def list(self, status: CampaignStatus | str | None = None) -> builtins.list[StoredCampaign]:
        """Every campaign (or those with ``status``), oldest first."""
        try:
            with self._connect() as conn:
                if status is None:
                    rows = conn.execute(
                        f"SELECT {_COLUMNS} FROM campaigns ORDER BY created_at, campaign_id"
                    ).fetchall()
                else:
                    rows = conn.execute(
                        f"SELECT {_COLUMNS} FROM campaigns WHERE status = %s "
                        "ORDER BY created_at, campaign_id",
                        (CampaignStatus(status).value,),
                    ).fetchall()
        except psycopg.Error as exc:
            raise DatabaseError(f"cannot list campaigns: {exc}") from exc
        return [_stored(row) for row in rows]

    def set_status(self, campaign_id: str, status: CampaignStatus | str) -> StoredCampaign:
        """Change the status of ``campaign_id`` to ``status`` if :data:`TRANSITIONS` allows it.

        Raises :class:`CampaignNotFoundError` or :class:`CampaignStatusError`
        (which names the current status and what it may change to).
        """
        target = CampaignStatus(status)
        sources = [s.value for s, targets in TRANSITIONS.items() if target in targets]
        try:
            with self._connect() as conn:
                row = conn.execute(
                    f"""
                    UPDATE campaigns SET status = %s, updated_at = now()
                    WHERE campaign_id = %s AND status = ANY(%s)
                    RETURNING {_COLUMNS}
                    """,
                    (target.value, campaign_id, sources),
                ).fetchone()
                current = None
                if row is None:
                    found = conn.execute(
                        "SELECT status FROM campaigns WHERE campaign_id = %s", (campaign_id,)
                    ).fetchone()
                    current = None if found is None else str(found[0])
        except psycopg.Error as exc:
            raise DatabaseError(f"cannot update campaign {campaign_id}: {exc}") from exc
        if row is not None:
            return _stored(row)
        if current is None:
            raise CampaignNotFoundError(f"no campaign with id {campaign_id!r}")
        raise CampaignStatusError(campaign_id, current, target.value)

    def pause(self, campaign_id: str) -> StoredCampaign:
        """active -> paused."""
        return self.set_status(campaign_id, CampaignStatus.PAUSED)

    def resume(self, campaign_id: str) -> StoredCampaign:
        """paused -> active."""
        return self.set_status(campaign_id, CampaignStatus.ACTIVE)

    def cancel(self, campaign_id: str) -> StoredCampaign:
        """active or paused -> cancelled (final)."""
        return self.set_status(campaign_id, CampaignStatus.CANCELLED)

    def complete(self, campaign_id: str) -> StoredCampaign:
        """active -> completed (final)."""
        return self.set_status(campaign_id, CampaignStatus.COMPLETED)


def _stored(row: tuple[Any, ...]) -> StoredCampaign:
    campaign_id, _name, status, config, created_at, updated_at = row
    campaign = Campaign.from_dict(config, source=f"stored campaign {campaign_id}")
    return StoredCampaign(campaign, CampaignStatus(status), created_at, updated_at)
