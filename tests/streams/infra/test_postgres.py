"""The local Postgres cluster: binaries found, clear errors, reuse, roles."""

from __future__ import annotations

import uuid
from pathlib import Path

import psycopg
import pytest

from streams.errors import PortInUseError, ToolMissingError
from streams.infra.postgres import LocalPostgres, find_bindir
from streams.settings import Settings


def test_bindir_found() -> None:
    bindir = find_bindir()
    assert bindir is not None
    assert (bindir / "initdb").exists()


def test_configured_bindir_without_binaries_is_a_clear_error(tmp_path: Path) -> None:
    s = Settings.from_env(
        {
            "LEADFLOW_HOME": str(tmp_path),
            "LEADFLOW_PG_BINDIR": str(tmp_path),
            "LEADFLOW_PG_PORT": "1",
        }
    )
    with pytest.raises(ToolMissingError) as info:
        LocalPostgres(s)._bindir(install=False)
    assert "LEADFLOW_PG_BINDIR" in str(info.value)


def test_port_taken_by_another_program_names_the_override(tmp_path: Path, held_port: int) -> None:
    s = Settings.from_env({"LEADFLOW_HOME": str(tmp_path), "LEADFLOW_PG_PORT": str(held_port)})
    with pytest.raises(PortInUseError) as info:
        LocalPostgres(s).up()
    assert f"port {held_port} is already in use" in str(info.value)
    assert "LEADFLOW_PG_PORT" in str(info.value)
    assert "LEADFLOW_DATABASE_URL" in str(info.value)


def test_running_cluster_is_reused_and_listens_on_loopback(settings: Settings) -> None:
    base = Settings.from_env()
    if base.uses_external_database:
        pytest.skip("external database configured")
    pg = LocalPostgres(base)
    assert "reusing it" in pg.up()
    with psycopg.connect(pg.superuser_dsn()) as conn:
        listen = conn.execute("SHOW listen_addresses").fetchone()
        assert listen == ("127.0.0.1",)
        roles = {r[0] for r in conn.execute("SELECT rolname FROM pg_roles")}
    assert {"leadflow", "leadflow_app"} <= roles


def test_created_database_belongs_to_the_owner_and_drops_with_sessions_open(
    settings: Settings,
) -> None:
    base = Settings.from_env()
    if base.uses_external_database:
        pytest.skip("external database configured")
    pg = LocalPostgres(base)
    name = f"leadflow_create_{uuid.uuid4().hex[:6]}"
    dsn = pg.create_database(name)
    try:
        conn = psycopg.connect(dsn, autocommit=True)
        owner = conn.execute(
            "SELECT pg_get_userbyid(datdba) FROM pg_database WHERE datname = %s", (name,)
        ).fetchone()
        assert owner == ("leadflow",)
        pg.drop_database(name)  # with this session still open: WITH (FORCE) ends it
        with pytest.raises(psycopg.OperationalError):
            conn.execute("SELECT 1")
        conn.close()
        with psycopg.connect(pg.superuser_dsn()) as admin:
            left = admin.execute("SELECT 1 FROM pg_database WHERE datname = %s", (name,))
            assert left.fetchone() is None
    finally:
        pg.drop_database(name)  # dropping a missing database is not an error
