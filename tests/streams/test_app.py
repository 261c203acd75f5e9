"""The Faust app's buffer settings: a fetch never overfills a stream buffer."""

from __future__ import annotations

import math

from mode.utils.queues import FlowControlQueue

from streams.app import _MAX_POLL_RECORDS, _STREAM_BUFFER, app


def test_one_fetch_fits_above_the_pause_mark() -> None:
    pause_mark = math.floor(_STREAM_BUFFER / FlowControlQueue.pressure_high_ratio)
    assert _STREAM_BUFFER - pause_mark > _MAX_POLL_RECORDS


def test_the_app_uses_the_buffer_settings() -> None:
    assert app.conf.stream_buffer_maxsize == _STREAM_BUFFER
    assert app.conf.broker_max_poll_records == _MAX_POLL_RECORDS
