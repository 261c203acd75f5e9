"""The redrive headers: attempt history survives a round trip through Kafka headers."""

from __future__ import annotations

from datetime import UTC, datetime

from agents.runtime import decode_history, encode_history


def test_history_round_trips_with_millisecond_times() -> None:
    when = datetime(2026, 11, 26, 8, 0, 0, 123000, tzinfo=UTC)
    entry = {
        "stage": "score",
        "reason": "schema_mismatch",
        "error_class": "SchemaMismatchError",
        "error_message": "field x",
        "failed_at": when,
    }
    assert decode_history(encode_history([entry])) == [entry]


def test_epoch_milliseconds_are_accepted_when_encoding() -> None:
    entry = {"stage": "a", "reason": "b", "error_class": "C", "error_message": "d", "failed_at": 0}
    assert decode_history(encode_history([entry]))[0]["failed_at"] == datetime(
        1970, 1, 1, tzinfo=UTC
    )


def test_malformed_history_counts_as_none() -> None:
    assert decode_history(b"not json") == []
    assert decode_history(b'{"stage": "x"}') == []
    assert decode_history(None) == []


def test_malformed_entries_are_skipped_and_good_ones_kept() -> None:
    good = b'{"stage": "s", "reason": "r", "error_class": "E", "error_message": "", "failed_at": 1}'
    raw = b'[{"stage": "x"}, 7, ' + good + b"]"
    history = decode_history(raw)
    assert [h["stage"] for h in history] == ["s"]
