"""Versioned schema migrations: plain SQL files applied in order, once each.

Files are ``sinks/migrations/NNNN_name.sql``. Each runs in its own
transaction and is recorded in ``schema_migrations`` with a checksum; an
applied file that later changes is an error (write a new migration
instead). A session advisory lock keeps two runners from racing.

Migrations run as the owner role. Afterwards the least-privilege sink role
(``leadflow_app``, when it exists) is granted row access to every table and
nothing else, so it cannot run DDL.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from pathlib import Path

import psycopg
from psycopg import sql

from streams.errors import DatabaseError

__all__ = ["MIGRATIONS_DIR", "Migration", "apply_migrations", "discover", "pending"]

MIGRATIONS_DIR = Path(__file__).resolve().parent / "migrations"
_NAME = re.compile(r"^(\d{4})_([a-z0-9_]+)\.sql$")
_LOCK_ID = 0x1EADF10  # arbitrary, fixed: leadflow's migration lock
APP_ROLE = "leadflow_app"


@dataclass(frozen=True)
class Migration:
    """One SQL file."""

    version: int
    name: str
    path: Path

    @property
    def sql(self) -> str:
        """The file's text."""
        return self.path.read_text(encoding="utf-8")

    @property
    def checksum(self) -> str:
        """SHA-256 of the file's text."""
        return hashlib.sha256(self.sql.encode()).hexdigest()


def discover(folder: Path = MIGRATIONS_DIR) -> list[Migration]:
    """Every migration file in ``folder``, in version order."""
    found: list[Migration] = []
    for path in sorted(folder.glob("*.sql")):
        match = _NAME.match(path.name)
        if match is None:
            raise DatabaseError(f"migration file {path.name} is not named NNNN_name.sql")
        found.append(Migration(int(match.group(1)), match.group(2), path))
    versions = [m.version for m in found]
    if len(set(versions)) != len(versions):
        raise DatabaseError(f"two migration files share a version number in {folder}")
    return found


def _ensure_table(conn: psycopg.Connection[tuple[object, ...]]) -> None:
    conn.execute(
        """
        CREATE TABLE IF NOT EXISTS schema_migrations (
            version    integer     PRIMARY KEY,
            name       text        NOT NULL,
            checksum   text        NOT NULL,
            applied_at timestamptz NOT NULL DEFAULT now()
        )
        """
    )


def pending(dsn: str, folder: Path = MIGRATIONS_DIR) -> list[Migration]:
    """Migrations not yet applied to the database at ``dsn``."""
    with psycopg.connect(dsn, autocommit=True) as conn:
        _ensure_table(conn)
        applied = {row[0] for row in conn.execute("SELECT version FROM schema_migrations")}
    return [m for m in discover(folder) if m.version not in applied]


def apply_migrations(dsn: str, folder: Path = MIGRATIONS_DIR) -> list[Migration]:
    """Apply every pending migration; returns those applied now."""
    try:
        with psycopg.connect(dsn, autocommit=True) as conn:
            conn.execute("SELECT pg_advisory_lock(%s)", (_LOCK_ID,))
            try:
                return _apply_locked(conn, folder)
            finally:
                conn.execute("SELECT pg_advisory_unlock(%s)", (_LOCK_ID,))
    except psycopg.Error as exc:
        raise DatabaseError(f"migration failed: {exc}".strip()) from exc


def _apply_locked(conn: psycopg.Connection[tuple[object, ...]], folder: Path) -> list[Migration]:
    _ensure_table(conn)
    applied = {
        int(str(v)): str(c)
        for v, c in conn.execute("SELECT version, checksum FROM schema_migrations")
    }
    done: list[Migration] = []
    for migration in discover(folder):
        recorded = applied.get(migration.version)
        if recorded is not None:
            if recorded != migration.checksum:
                raise DatabaseError(
                    f"migration {migration.path.name} changed after it was applied; "
                    "write a new migration instead of editing an old one"
                )
            continue
        with conn.transaction():
            conn.execute(migration.sql.encode())
            conn.execute(
                "INSERT INTO schema_migrations (version, name, checksum) VALUES (%s, %s, %s)",
                (migration.version, migration.name, migration.checksum),
            )
        done.append(migration)
    _grant_app_role(conn)
    return done


def _grant_app_role(conn: psycopg.Connection[tuple[object, ...]]) -> None:
    row = conn.execute("SELECT 1 FROM pg_roles WHERE rolname = %s", (APP_ROLE,)).fetchone()
    if row is None:
        return
    role = sql.Identifier(APP_ROLE)
    conn.execute(
        sql.SQL("GRANT SELECT, INSERT, UPDATE, DELETE ON ALL TABLES IN SCHEMA public TO {}").format(
            role
        )
    )
    conn.execute(
        sql.SQL("GRANT USAGE, SELECT ON ALL SEQUENCES IN SCHEMA public TO {}").format(role)
    )
    conn.execute(sql.SQL("REVOKE ALL ON TABLE schema_migrations FROM {}").format(role))
    conn.execute(sql.SQL("GRANT SELECT ON TABLE schema_migrations TO {}").format(role))
