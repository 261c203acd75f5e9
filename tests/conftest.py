"""Shared fixtures: the real Kafka broker and Postgres, isolated per test session.

Any test that uses the ``services`` fixture (directly or through
``settings``/``dsn``) is marked ``integration`` automatically. The session
starts the local broker and Postgres if they are not running (and stops them
again at the end if it started them), then isolates itself:

- topics get a unique prefix (``t<hex>-``), deleted at the end;
- a fresh database ``leadflow_test_<hex>`` is created, migrated and dropped.

``LEADFLOW_KAFKA_BOOTSTRAP`` / ``LEADFLOW_DATABASE_URL`` point the suite at
external services instead (then the database is used as is).
"""

from __future__ import annotations

import contextlib
import os
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, replace

import pytest

from sinks.migrate import apply_migrations
from streams.admin import admin_client
from streams.infra.kafka import LocalKafka
from streams.infra.postgres import LocalPostgres
from streams.settings import Settings


@dataclass(frozen=True)
class Services:
    """What the integration session runs against."""

    settings: Settings
    dsn: str
    env: dict[str, str]  # environment for leadflow subprocesses
    #: True when LEADFLOW_DATABASE_URL named the database (the session's settings
    #: always carry a database URL, so they cannot say).
    external_database: bool


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Mark every test that needs real services as ``integration``."""
    needs = {"services", "settings", "dsn", "subprocess_env", "isolated"}
    for item in items:
        if needs & set(getattr(item, "fixturenames", ())):
            item.add_marker(pytest.mark.integration)


@pytest.fixture(scope="session")
def services() -> Iterator[Services]:
    """Real Kafka + Postgres, with a topic prefix and a database of this session's own."""
    base = Settings.from_env()
    kafka, postgres = LocalKafka(base), LocalPostgres(base)
    started_kafka = not base.uses_external_kafka and kafka.pid() is None
    started_pg = not base.uses_external_database and postgres.status().running is False
    kafka.up()
    postgres.up()
    tag = uuid.uuid4().hex[:8]
    prefix = f"t{tag}-"
    if base.uses_external_database:
        dbname = None
        dsn = base.dsn
    else:
        dbname = f"leadflow_test_{tag}"
        dsn = postgres.create_database(dbname)
    apply_migrations(dsn)
    settings = replace(base, topic_prefix=prefix, database_url=dsn)
    env = {
        **os.environ,
        "LEADFLOW_TOPIC_PREFIX": prefix,
        "LEADFLOW_DATABASE_URL": dsn,
        "LEADFLOW_KAFKA_BOOTSTRAP": settings.bootstrap_servers,
    }
    try:
        yield Services(settings, dsn, env, base.uses_external_database)
    finally:
        _delete_topics(settings, prefix)
        if dbname is not None:
            postgres.drop_database(dbname)
        if started_pg:
            postgres.down()
        if started_kafka:
            kafka.down()


def _delete_topics(settings: Settings, prefix: str) -> None:
    admin = admin_client(settings)
    names = [t for t in admin.list_topics(timeout=10).topics if t.startswith(prefix)]
    if names:
        for future in admin.delete_topics(names, operation_timeout=30).values():
            with contextlib.suppress(Exception):  # best-effort cleanup
                future.result()


@pytest.fixture
def settings(services: Services) -> Settings:
    """Settings of the integration session (prefixed topics, the session database)."""
    return services.settings


@pytest.fixture
def dsn(services: Services) -> str:
    """DSN of the session's migrated test database (owner role)."""
    return services.dsn


@pytest.fixture
def subprocess_env(services: Services) -> dict[str, str]:
    """Environment for running ``leadflow`` as a subprocess against the session."""
    return dict(services.env)


@pytest.fixture
def isolated(services: Services) -> tuple[Settings, dict[str, str]]:
    """Settings and subprocess env with a topic prefix (and so a consumer group) of its own."""
    prefix = f"{services.settings.topic_prefix}x{uuid.uuid4().hex[:6]}-"
    return replace(services.settings, topic_prefix=prefix), {
        **services.env,
        "LEADFLOW_TOPIC_PREFIX": prefix,
    }


@pytest.fixture
def isolated_db(
    services: Services, isolated: tuple[Settings, dict[str, str]]
) -> Iterator[tuple[Settings, dict[str, str], str]]:
    """Like ``isolated``, plus a fresh migrated database of its own (settings, env, dsn).

    For tests that run a worker: its release loop serves every active campaign
    in its database, so touches other tests left in the shared one would reach it.
    """
    settings, env = isolated
    if services.external_database:
        yield settings, env, services.dsn
        return
    dbname = f"{services.dsn.rsplit('/', 1)[1]}_{uuid.uuid4().hex[:6]}"
    dsn = LocalPostgres(settings).create_database(dbname)
    try:
        apply_migrations(dsn)
        yield replace(settings, database_url=dsn), {**env, "LEADFLOW_DATABASE_URL": dsn}, dsn
    finally:
        LocalPostgres(settings).drop_database(dbname)
