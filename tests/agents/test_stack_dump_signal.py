"""SIGUSR2's handler logs the stacks at WARNING."""

from __future__ import annotations

import logging

import pytest

from agents.stack_dump_signal import dump_stacks


async def test_dump_stacks_logs_at_warning(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING, logger="agents.stack_dump_signal"):
        dump_stacks()
    (record,) = caplog.records
    assert record.levelno == logging.WARNING
    assert "stack dump on SIGUSR2" in record.getMessage()
    assert "in test_dump_stacks_logs_at_warning" in record.getMessage()
