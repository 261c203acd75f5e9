"""Fixtures for the simulator tests: a running simulator, a client, a webhook receiver.

Everything runs over real sockets on 127.0.0.1 with ephemeral ports. Shared
helpers live in :mod:`simulator.testing` (test modules cannot import this file
under ``--import-mode=importlib``).
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import AbstractAsyncContextManager
from typing import Any

import aiohttp
import pytest

from simulator import Simulator, run_simulator
from simulator.testing import JsonPost, StartSim, WebhookReceiver, ephemeral_config

#: The webhook secret every test simulator and receiver share.
SECRET = "test-webhook-secret-0123456789"


@pytest.fixture
def secret() -> str:
    """The shared webhook secret."""
    return SECRET


@pytest.fixture
def sms() -> dict[str, Any]:
    """A valid SMS request body (555-01xx numbers are valid fictional numbers)."""
    return {
        "to": "+13125550123",
        "from": "LEADFLOW",
        "body": "Hi, quick question about your outreach.",
        "campaign_id": "camp-1",
        "lead_id": "lead-1",
        "touch": 1,
    }


@pytest.fixture
async def receiver() -> AsyncIterator[WebhookReceiver]:
    """A running webhook receiver that verifies signatures with :data:`SECRET`."""
    async with WebhookReceiver(SECRET) as recv:
        yield recv


@pytest.fixture
def start_sim() -> StartSim:
    """``async with start_sim(endpoints=..., webhooks=...) as sim:``."""

    def start(**overrides: Any) -> AbstractAsyncContextManager[Simulator]:
        return run_simulator(ephemeral_config(**overrides))

    return start


@pytest.fixture
async def sim(start_sim: StartSim) -> AsyncIterator[Simulator]:
    """A simulator with default (well-behaved) endpoints and webhooks off."""
    async with start_sim() as running:
        yield running


@pytest.fixture
async def client() -> AsyncIterator[aiohttp.ClientSession]:
    """An HTTP client that sends a bearer key."""
    async with aiohttp.ClientSession(headers={"Authorization": "Bearer test-key"}) as session:
        yield session


@pytest.fixture
def post(client: aiohttp.ClientSession) -> JsonPost:
    """``status, json, headers = await post(url, body, headers)``."""

    async def _post(
        url: str, body: Any, headers: dict[str, str] | None = None
    ) -> tuple[int, Any, Any]:
        async with client.post(url, json=body, headers=headers or {}) as response:
            return response.status, await response.json(), response.headers

    return _post
