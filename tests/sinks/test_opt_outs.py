"""An opt-out waits for sends in flight, and every later send sees it."""

from __future__ import annotations

import asyncio
import time
import uuid

import psycopg

from sinks.opt_outs import OptOut, lock_identities, opted_out, record_opt_outs


async def test_opt_out_waits_for_a_send_in_flight_then_blocks_later_sends(dsn: str) -> None:
    ident = uuid.uuid4().hex
    send = await psycopg.AsyncConnection.connect(dsn)
    stop = await psycopg.AsyncConnection.connect(dsn, autocommit=True)
    try:
        async with send.transaction():
            await lock_identities(send, [ident], shared=True)
            assert await opted_out(send, [ident]) == set()  # the send's last check passes

            async def record() -> float:
                async with stop.transaction():
                    await record_opt_outs(stop, [OptOut(ident, "test", "c", "l")])
                return time.time()

            recording = asyncio.create_task(record())
            await asyncio.sleep(0.3)
            assert not recording.done(), "the opt-out must wait for the send in flight"
            provider_answered_at = time.time()
        recorded_done = await asyncio.wait_for(recording, 5)
        assert recorded_done >= provider_answered_at
        row = await (
            await stop.execute(
                "SELECT extract(epoch FROM recorded_at) FROM opt_outs WHERE identity_key = %s",
                (ident,),
            )
        ).fetchone()
        assert row is not None and float(str(row[0])) >= provider_answered_at - 0.01
        async with send.transaction():  # a later send: its check sees the opt-out
            await lock_identities(send, [ident], shared=True)
            assert await opted_out(send, [ident]) == {ident}
    finally:
        await send.close()
        await stop.close()


async def test_shared_locks_do_not_block_each_other(dsn: str) -> None:
    ident = uuid.uuid4().hex
    a = await psycopg.AsyncConnection.connect(dsn)
    b = await psycopg.AsyncConnection.connect(dsn)
    try:
        async with a.transaction(), b.transaction():
            await lock_identities(a, [ident, "x" + ident], shared=True)
            await asyncio.wait_for(lock_identities(b, [ident], shared=True), 2)
    finally:
        await a.close()
        await b.close()
