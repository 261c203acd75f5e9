"""An async Postgres connection for one stage, with reconnects and error mapping.

Each stage owns one :class:`StageDatabase` (so stages never queue behind each
other on a shared connection). A lost connection raises
:class:`~streams.errors.DatabaseUnavailableError`, which the stage runtime
treats as transient: it holds the batch, backs off and retries, and the next
call reconnects. Any other Postgres error is a :class:`DatabaseError`.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import psycopg

from streams.errors import DatabaseError, DatabaseUnavailableError

__all__ = ["StageDatabase"]

_TRANSIENT = (psycopg.OperationalError, psycopg.errors.AdminShutdown, OSError)


class StageDatabase:
    """One lazily (re)opened ``AsyncConnection``."""

    def __init__(self, dsn: str, name: str) -> None:
        self.dsn = dsn
        self.name = name
        self._conn: psycopg.AsyncConnection[tuple[object, ...]] | None = None
        # One connection serves one transaction at a time; callers queue here.
        self._lock = asyncio.Lock()

    async def _connection(self) -> psycopg.AsyncConnection[tuple[object, ...]]:
        if self._conn is None or self._conn.closed:
            self._conn = await psycopg.AsyncConnection.connect(
                self.dsn, connect_timeout=5, application_name=f"leadflow-{self.name}"
            )
        return self._conn

    @asynccontextmanager
    async def transaction(self) -> AsyncIterator[psycopg.AsyncConnection[tuple[object, ...]]]:
        """A transaction on this stage's connection; errors mapped to the tree."""
        try:
            async with self._lock:
                conn = await self._connection()
                async with conn.transaction():
                    yield conn
        except _TRANSIENT as exc:
            await self._drop()
            raise DatabaseUnavailableError(
                f"{self.name}: Postgres unavailable: {_first_line(exc)}"
            ) from exc
        except psycopg.Error as exc:
            raise DatabaseError(f"{self.name}: {_first_line(exc)}") from exc

    async def _drop(self) -> None:
        if self._conn is not None:
            with contextlib.suppress(Exception):  # already broken; nothing to do
                await self._conn.close()
            self._conn = None

    async def aclose(self) -> None:
        """Close the connection."""
        await self._drop()


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return text[0][:300] if text else type(exc).__name__
