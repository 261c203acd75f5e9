"""Shared fixtures for the provider tests: a fake clock and a running simulator."""

from __future__ import annotations

import sys
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from simulator.config import SimConfig
from simulator.server import Simulator, run_simulator

# The test modules import their helpers from provider_testkit beside this file.
sys.path.insert(0, str(Path(__file__).resolve().parent))

from provider_testkit import FakeClock


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
async def sim() -> AsyncIterator[Simulator]:
    """A simulator on free ports, webhooks off, seeded."""
    async with run_simulator(SimConfig(port=0, smtp_port=0, seed=7)) as running:
        yield running
