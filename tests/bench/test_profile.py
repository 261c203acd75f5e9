"""Summaries of py-spy collapsed stacks."""

from __future__ import annotations

from pathlib import Path

from bench.profile import summarize_collapsed

_ROOT = 'process 1:"python";run (asyncio/base_events.py:600)'
_LOOP = _ROOT + ";_run_once (asyncio/base_events.py:1900)"
SAMPLE = "\n".join(
    [
        _LOOP + ";decode (/work/main/streams/codec.py:150) 30",
        _LOOP + ";send (/x/site-packages/aiokafka/producer/producer.py:400) 50",
        _ROOT + ";select (selectors.py:468) 20",
        "not a stack line",
    ]
)


def test_self_and_inclusive_shares(tmp_path: Path) -> None:
    path = tmp_path / "worker.txt"
    path.write_text(SAMPLE)
    summary = summarize_collapsed(path)
    assert summary.samples == 100
    data = summary.as_dict(limit=3)
    top_self = dict((name, pct) for name, pct in data["top_self_pct"])
    assert top_self["send (aiokafka/producer/producer.py)"] == 50.0
    assert top_self["decode (streams/codec.py)"] == 30.0
    inclusive = dict((name, pct) for name, pct in data["top_inclusive_pct"])
    # event-loop frames are on every stack: left out of the inclusive ranking
    assert "run (asyncio/base_events.py)" not in inclusive
    assert inclusive["send (aiokafka/producer/producer.py)"] == 50.0
    assert summary.inclusive["_run_once (asyncio/base_events.py)"] == 80
    text = summary.text()
    assert text.startswith("100 samples")
    assert "50.0  send (aiokafka/producer/producer.py)" in text
