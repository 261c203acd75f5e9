"""simulator/server.py: ports, addresses and clean shutdown."""

from __future__ import annotations

import asyncio
import socket
import time
from typing import Any

import aiohttp
import pytest

from simulator import run_simulator
from simulator.testing import StartSim, ephemeral_config
from streams.errors import PortInUseError


async def test_ephemeral_ports_and_addresses(start_sim: StartSim) -> None:
    async with start_sim() as sim:
        assert sim.http_url.startswith("http://127.0.0.1:")
        assert sim.smtp_host == "127.0.0.1" and sim.smtp_port > 0
        async with (
            aiohttp.ClientSession() as session,
            session.get(f"{sim.http_url}/_sim/health") as response,
        ):
            assert response.status == 200
        reader, writer = await asyncio.open_connection(sim.smtp_host, sim.smtp_port)
        banner = await reader.readline()
        writer.close()
        await writer.wait_closed()
    assert banner.startswith(b"220 ")


async def test_port_in_use_is_a_clear_error() -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        with pytest.raises(PortInUseError, match=f"HTTP port {port} .* already in use"):
            async with run_simulator(ephemeral_config(port=port)):
                pass  # pragma: no cover
        with pytest.raises(PortInUseError, match="--smtp-port"):
            async with run_simulator(ephemeral_config(smtp_port=port)):
                pass  # pragma: no cover


async def test_shutdown_does_not_wait_for_hanging_requests(
    sms: dict[str, Any], start_sim: StartSim
) -> None:
    endpoints = {"sms": {"timeout_rate": 1.0, "timeout_s": 30}}
    async with aiohttp.ClientSession(headers={"Authorization": "Bearer k"}) as session:
        async with start_sim(endpoints=endpoints) as sim:
            request = asyncio.ensure_future(session.post(f"{sim.http_url}/v1/sms", json=sms))
            await asyncio.sleep(0.1)
            started = time.monotonic()
        took = time.monotonic() - started
        response = await request
        status = response.status
        response.release()
    assert took < 3
    assert status == 504
