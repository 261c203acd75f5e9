"""The ``campaigns`` table: create, read and change the status of campaigns.

A campaign's whole definition is stored as jsonb in ``config``
(:meth:`streams.campaign.Campaign.to_dict`); ``name`` and ``status`` are
columns. Status changes follow :data:`TRANSITIONS`::

    active ──► paused ──► active
      │          │
      │          └──────► cancelled (final)
      ├────────────────► cancelled (final)
      └────────────────► completed (final)

Every change is one conditional ``UPDATE``, so two operators racing cannot
make an illegal change. All SQL is parameterised.

Retention (docs/RETENTION.md) has two more steps, outside :data:`TRANSITIONS`:

- :meth:`CampaignStore.archive` makes a *finished* campaign ``archived``
  (final, read-only) and drops what only a running campaign needs: its
  ``pending_touches`` rows and the ``enrichment_cache`` rows no other
  unarchived campaign uses. Leads, timelines, the send ledger and stats stay.
  A campaign is finished when it is ``cancelled`` or ``completed``, or when
  it is ``active``/``paused`` with at least one lead, every lead in a
  terminal state, no touch waiting in ``pending_touches`` and no send
  claimed but unfinished in ``send_ledger``.
- :meth:`CampaignStore.purge` deletes every row of an ``archived`` campaign
  (or a ``cancelled`` one, with ``force``) from every table with a
  ``campaign_id`` column, then the campaign itself, in one transaction.
  ``opt_outs`` (:data:`KEPT_TABLES`) are compliance records and survive.
"""

from __future__ import annotations

import builtins
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum
from typing import Any, Final

import psycopg
from psycopg import sql
from psycopg.types.json import Jsonb

from streams.campaign import Campaign, parse_campaign
from streams.errors import DatabaseError
from streams.state_machine import TERMINAL

__all__ = [
    "ENRICHMENT_CACHE",
    "KEPT_TABLES",
    "TRANSITIONS",
    "ArchiveResult",
    "CampaignExistsError",
    "CampaignNotFinishedError",
    "CampaignNotFoundError",
    "CampaignStatus",
    "CampaignStatusError",
    "CampaignStore",
    "PurgeRefusedError",
    "PurgeResult",
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


class CampaignNotFinishedError(DatabaseError):
    """``archive`` of an active or paused campaign that still has work left."""

    reason = "campaign_not_finished"


class PurgeRefusedError(DatabaseError):
    """``purge`` of a campaign that is not archived (nor cancelled, with force)."""

    reason = "purge_refused"


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

#: Tables with a ``campaign_id`` column that :meth:`CampaignStore.purge` keeps:
#: opt-outs are compliance records about a person, not campaign data.
KEPT_TABLES: Final = frozenset({"opt_outs"})

#: What ``purge`` reports for the enrichment cache (keyed by identity, not campaign).
ENRICHMENT_CACHE: Final = "enrichment_cache"

_TERMINAL_STATES: Final = sorted(s.value for s in TERMINAL)


@dataclass(frozen=True)
class ArchiveResult:
    """What :meth:`CampaignStore.archive` did (or, dry, would do)."""

    campaign_id: str
    #: The status before archiving.
    previous: CampaignStatus
    #: Rows deleted (or to delete) per table: pending_touches, enrichment_cache.
    deleted: dict[str, int]
    dry_run: bool


@dataclass(frozen=True)
class PurgeResult:
    """What :meth:`CampaignStore.purge` deleted (or, dry, would delete)."""

    campaign_id: str
    status: CampaignStatus
    #: Rows per table in deletion order; ``campaigns`` (the campaign row) last.
    deleted: dict[str, int]
    #: Rows that mention the campaign and are kept, per table (opt_outs).
    kept: dict[str, int]
    #: Lead ids the campaign had (leads, timeline, identities), for the caller's
    #: own clean-up outside Postgres.
    lead_ids: frozenset[str]
    dry_run: bool

    @property
    def total(self) -> int:
        """Rows deleted over every table."""
        return sum(self.deleted.values())


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

    # --- retention -----------------------------------------------------------

    def archive(self, campaign_id: str, *, dry_run: bool = False) -> ArchiveResult:
        """Make finished campaign ``campaign_id`` ``archived``; see the module docstring.

        One transaction: the campaign row is locked, the finished check is
        made, then its ``pending_touches`` rows and the enrichment cache rows
        only it used are deleted and the status set. ``dry_run`` checks and
        counts and changes nothing. Raises :class:`CampaignNotFoundError`,
        :class:`CampaignStatusError` (already archived) or
        :class:`CampaignNotFinishedError` (which says what is left).
        """
        try:
            with self._connect() as conn, conn.transaction():
                status = _lock(conn, campaign_id)
                if status is CampaignStatus.ARCHIVED:
                    raise CampaignStatusError(campaign_id, status.value, status.value)
                if status in (CampaignStatus.ACTIVE, CampaignStatus.PAUSED):
                    left = _work_left(conn, campaign_id)
                    if left:
                        raise CampaignNotFinishedError(
                            f"cannot archive campaign {campaign_id}: it is {status.value} and "
                            f"not finished ({'; '.join(left)}); wait for it to finish, "
                            "or cancel it first"
                        )
                deleted = {
                    "pending_touches": _delete_rows(
                        conn, "pending_touches", campaign_id, dry_run=dry_run
                    ),
                    ENRICHMENT_CACHE: _delete_enrichment(conn, campaign_id, dry_run=dry_run),
                }
                if not dry_run:
                    conn.execute(
                        "UPDATE campaigns SET status = %s, updated_at = now() "
                        "WHERE campaign_id = %s",
                        (CampaignStatus.ARCHIVED.value, campaign_id),
                    )
        except psycopg.Error as exc:
            raise DatabaseError(f"cannot archive campaign {campaign_id}: {exc}") from exc
        return ArchiveResult(campaign_id, status, deleted, dry_run)

    def purge(self, campaign_id: str, *, force: bool = False, dry_run: bool = True) -> PurgeResult:
        """Delete every row of ``campaign_id`` from every table, in one transaction.

        The campaign must be ``archived``, or ``cancelled`` with ``force``
        (else :class:`PurgeRefusedError`). Every table with a ``campaign_id``
        column is emptied of the campaign's rows (tables referencing others
        first), except :data:`KEPT_TABLES`; then the enrichment cache rows
        no unarchived campaign uses, then the campaign row. ``dry_run`` (the
        default) only counts.
        """
        try:
            with self._connect() as conn, conn.transaction():
                status = _lock(conn, campaign_id)
                allowed = status is CampaignStatus.ARCHIVED or (
                    force and status is CampaignStatus.CANCELLED
                )
                if not allowed:
                    hint = (
                        "add --force to purge a cancelled campaign without archiving it"
                        if status is CampaignStatus.CANCELLED
                        else "archive it first (only a finished campaign can be archived)"
                    )
                    raise PurgeRefusedError(
                        f"cannot purge campaign {campaign_id}: it is {status.value}; "
                        f"only an archived campaign is purged; {hint}"
                    )
                lead_ids = _lead_ids(conn, campaign_id)
                tables = _campaign_tables(conn)
                deleted = {ENRICHMENT_CACHE: _delete_enrichment(conn, campaign_id, dry_run=dry_run)}
                for table in tables:
                    deleted[table] = _delete_rows(conn, table, campaign_id, dry_run=dry_run)
                deleted["campaigns"] = _delete_rows(conn, "campaigns", campaign_id, dry_run=dry_run)
                kept = {
                    table: _delete_rows(conn, table, campaign_id, dry_run=True)
                    for table in sorted(KEPT_TABLES)
                    if _has_campaign_column(conn, table)
                }
        except psycopg.Error as exc:
            raise DatabaseError(f"cannot purge campaign {campaign_id}: {exc}") from exc
        return PurgeResult(campaign_id, status, deleted, kept, lead_ids, dry_run)


def _lock(conn: psycopg.Connection[tuple[Any, ...]], campaign_id: str) -> CampaignStatus:
    """The campaign's status, its row locked until the transaction ends."""
    row = conn.execute(
        "SELECT status FROM campaigns WHERE campaign_id = %s FOR UPDATE", (campaign_id,)
    ).fetchone()
    if row is None:
        raise CampaignNotFoundError(f"no campaign with id {campaign_id!r}")
    return CampaignStatus(row[0])


def _work_left(conn: psycopg.Connection[tuple[Any, ...]], campaign_id: str) -> list[str]:
    """What keeps an active or paused campaign from being finished (empty: finished)."""
    row = conn.execute(
        """
        SELECT
          (SELECT count(*) FROM leads WHERE campaign_id = %(c)s),
          (SELECT count(*) FROM leads WHERE campaign_id = %(c)s AND state <> ALL(%(t)s)),
          (SELECT count(*) FROM pending_touches
            WHERE campaign_id = %(c)s AND emitted_at IS NULL),
          (SELECT count(*) FROM send_ledger WHERE campaign_id = %(c)s AND status = 'claimed')
        """,
        {"c": campaign_id, "t": _TERMINAL_STATES},
    ).fetchone()
    assert row is not None
    leads, open_leads, pending, claimed = (int(v) for v in row)
    left = []
    if leads == 0:
        left.append("it has no leads")
    if open_leads:
        left.append(f"{open_leads} of {leads} leads not in a terminal state")
    if pending:
        left.append(f"{pending} touches pending")
    if claimed:
        left.append(f"{claimed} sends claimed and unfinished")
    return left


def _delete_rows(
    conn: psycopg.Connection[tuple[Any, ...]], table: str, campaign_id: str, *, dry_run: bool
) -> int:
    if dry_run:
        query = sql.SQL("SELECT count(*) FROM {} WHERE campaign_id = %s")
        row = conn.execute(query.format(sql.Identifier(table)), (campaign_id,)).fetchone()
        return int(row[0]) if row else 0
    query = sql.SQL("DELETE FROM {} WHERE campaign_id = %s")
    return conn.execute(query.format(sql.Identifier(table)), (campaign_id,)).rowcount


#: Enrichment cache rows of identities this campaign claimed and no other
#: campaign that is not archived has (the cache is shared by identity).
_ONLY_MINE = """
    FROM enrichment_cache e
    WHERE e.identity_key IN (
        SELECT identity_key FROM lead_identities WHERE campaign_id = %(c)s
        UNION
        SELECT identity_key FROM leads WHERE campaign_id = %(c)s AND identity_key IS NOT NULL
    )
    AND NOT EXISTS (
        SELECT 1 FROM lead_identities o JOIN campaigns k ON k.campaign_id = o.campaign_id
        WHERE o.identity_key = e.identity_key AND o.campaign_id <> %(c)s
          AND k.status <> 'archived'
    )
    AND NOT EXISTS (
        SELECT 1 FROM leads o JOIN campaigns k ON k.campaign_id = o.campaign_id
        WHERE o.identity_key = e.identity_key AND o.campaign_id <> %(c)s
          AND k.status <> 'archived'
    )
"""


def _delete_enrichment(
    conn: psycopg.Connection[tuple[Any, ...]], campaign_id: str, *, dry_run: bool
) -> int:
    params = {"c": campaign_id}
    if dry_run:
        row = conn.execute("SELECT count(*) " + _ONLY_MINE, params).fetchone()
        return int(row[0]) if row else 0
    return conn.execute("DELETE " + _ONLY_MINE, params).rowcount


def _lead_ids(conn: psycopg.Connection[tuple[Any, ...]], campaign_id: str) -> frozenset[str]:
    rows = conn.execute(
        """
        SELECT lead_id FROM leads WHERE campaign_id = %(c)s
        UNION SELECT lead_id FROM lead_transitions WHERE campaign_id = %(c)s
        UNION SELECT lead_id FROM lead_identities WHERE campaign_id = %(c)s
        """,
        {"c": campaign_id},
    ).fetchall()
    return frozenset(str(r[0]) for r in rows)


def _has_campaign_column(conn: psycopg.Connection[tuple[Any, ...]], table: str) -> bool:
    row = conn.execute(
        """
        SELECT 1 FROM information_schema.columns
        WHERE table_schema = current_schema() AND table_name = %s AND column_name = 'campaign_id'
        """,
        (table,),
    ).fetchone()
    return row is not None


def _campaign_tables(conn: psycopg.Connection[tuple[Any, ...]]) -> list[str]:
    """Every table with a ``campaign_id`` column but ``campaigns`` and :data:`KEPT_TABLES`.

    Found from the catalog, so a table a later migration adds is purged too.
    Ordered so that a table referencing another (a foreign key) comes first.
    """
    rows = conn.execute(
        """
        SELECT c.table_name FROM information_schema.columns c
        JOIN information_schema.tables t
          ON t.table_schema = c.table_schema AND t.table_name = c.table_name
        WHERE c.table_schema = current_schema() AND c.column_name = 'campaign_id'
          AND t.table_type = 'BASE TABLE'
        ORDER BY c.table_name
        """
    ).fetchall()
    tables = [str(r[0]) for r in rows if r[0] != "campaigns" and r[0] not in KEPT_TABLES]
    refs = conn.execute(
        """
        SELECT src.relname, dst.relname FROM pg_constraint k
        JOIN pg_class src ON src.oid = k.conrelid
        JOIN pg_class dst ON dst.oid = k.confrelid
        WHERE k.contype = 'f' AND k.connamespace = current_schema()::regnamespace
          AND k.conrelid <> k.confrelid
        """
    ).fetchall()
    return _children_first(tables, {(str(a), str(b)) for a, b in refs})


def _children_first(tables: list[str], refs: set[tuple[str, str]]) -> list[str]:
    """``tables`` ordered so that each comes before every table it references."""
    left = list(tables)
    ordered: list[str] = []
    while left:
        # A table nobody left references can go now.
        free = [t for t in left if not any(dst == t and src in left for src, dst in refs)]
        nxt = free[0] if free else left[0]  # a cycle: plain order
        ordered.append(nxt)
        left.remove(nxt)
    return ordered


def _stored(row: tuple[Any, ...]) -> StoredCampaign:
    campaign_id, _name, status, config, created_at, updated_at = row
    campaign = Campaign.from_dict(config, source=f"stored campaign {campaign_id}")
    return StoredCampaign(campaign, CampaignStatus(status), created_at, updated_at)
