"""Migrations apply in order, once, refuse edited history, and keep the app role DML-only."""

from __future__ import annotations

from pathlib import Path

import psycopg
import pytest
from psycopg import sql

from sinks.migrate import apply_migrations, discover, pending
from streams.errors import DatabaseError


def test_files_are_numbered_in_order() -> None:
    migrations = discover()
    assert migrations, "no migrations found"
    assert [m.version for m in migrations] == sorted(m.version for m in migrations)
    assert migrations[0].version == 1


def test_session_database_is_current_and_reapply_is_noop(dsn: str) -> None:
    assert pending(dsn) == []
    assert apply_migrations(dsn) == []
    with psycopg.connect(dsn) as conn:
        tables = {
            r[0]
            for r in conn.execute("SELECT tablename FROM pg_tables WHERE schemaname = 'public'")
        }
    assert {
        "campaigns",
        "leads",
        "lead_transitions",
        "send_ledger",
        "opt_outs",
        "dead_letters",
        "campaign_stats",
        "schema_migrations",
    } <= tables


def test_edited_applied_migration_is_refused(dsn: str, tmp_path: Path) -> None:
    schema = "mig_test"
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute(sql.SQL("CREATE SCHEMA IF NOT EXISTS {}").format(sql.Identifier(schema)))
    scoped = f"{dsn}?options=-csearch_path%3D{schema}"
    (tmp_path / "0001_one.sql").write_text("CREATE TABLE t1 (id int);")
    assert [m.name for m in apply_migrations(scoped, tmp_path)] == ["one"]
    (tmp_path / "0001_one.sql").write_text("CREATE TABLE t1 (id bigint);")
    with pytest.raises(DatabaseError, match="changed after it was applied"):
        apply_migrations(scoped, tmp_path)


def test_badly_named_file_is_refused(tmp_path: Path) -> None:
    (tmp_path / "1_init.sql").write_text("SELECT 1;")
    with pytest.raises(DatabaseError, match=r"NNNN_name\.sql"):
        discover(tmp_path)


def test_app_role_can_write_rows_but_not_run_ddl(dsn: str) -> None:
    app_dsn = dsn.replace("postgresql://leadflow@", "postgresql://leadflow_app@")
    if app_dsn == dsn:
        pytest.skip("external database: role layout unknown")
    with psycopg.connect(app_dsn) as conn:
        conn.execute("INSERT INTO campaign_stats (campaign_id, metric, value) VALUES ('c', 'm', 1)")
        conn.rollback()
        with pytest.raises(psycopg.errors.InsufficientPrivilege):
            conn.execute("CREATE TABLE sneaky (id int)")
        conn.rollback()
        with pytest.raises(psycopg.errors.InsufficientPrivilege):
            conn.execute("DROP TABLE campaign_stats")
