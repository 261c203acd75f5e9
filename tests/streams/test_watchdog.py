"""The partition watchdog names partitions with lag whose commits stopped moving."""

from __future__ import annotations

from streams.watchdog import Position, StallDetector, WatchdogSettings


def test_a_partition_with_lag_and_no_commits_is_stalled_after_the_period() -> None:
    detector = StallDetector(stall_s=60)
    assert detector.observe({"tp": Position(10, 50)}, now=0) == []
    assert detector.observe({"tp": Position(10, 50)}, now=59) == []
    stalls = detector.observe({"tp": Position(10, 50)}, now=61)
    assert [(s.tp, s.committed, s.end) for s in stalls] == [("tp", 10, 50)]
    assert stalls[0].stalled_for_s == 61


def test_a_stall_is_reported_once_per_period() -> None:
    detector = StallDetector(stall_s=10)
    detector.observe({"tp": Position(1, 5)}, now=0)
    assert len(detector.observe({"tp": Position(1, 5)}, now=10)) == 1
    assert detector.observe({"tp": Position(1, 5)}, now=15) == []
    assert len(detector.observe({"tp": Position(1, 5)}, now=20)) == 1


def test_progress_restarts_the_clock() -> None:
    detector = StallDetector(stall_s=10)
    detector.observe({"tp": Position(1, 50)}, now=0)
    detector.observe({"tp": Position(2, 50)}, now=9)
    assert detector.observe({"tp": Position(2, 50)}, now=15) == []
    assert len(detector.observe({"tp": Position(2, 50)}, now=19)) == 1


def test_an_idle_partition_without_lag_is_not_stalled() -> None:
    detector = StallDetector(stall_s=10)
    for now in (0, 20, 40):
        assert detector.observe({"tp": Position(7, 7), "u": Position(None, 0)}, now=now) == []


def test_nothing_committed_yet_counts_from_offset_zero() -> None:
    detector = StallDetector(stall_s=5)
    detector.observe({"tp": Position(None, 3)}, now=0)
    stalls = detector.observe({"tp": Position(None, 3)}, now=6)
    assert [(s.committed, s.end) for s in stalls] == [(0, 3)]


def test_revoked_partitions_are_forgotten() -> None:
    detector = StallDetector(stall_s=5)
    detector.observe({"tp": Position(1, 3)}, now=0)
    detector.observe({}, now=3)  # revoked
    assert detector.observe({"tp": Position(1, 3)}, now=6) == []  # a fresh period


def test_settings_have_documented_defaults() -> None:
    config = WatchdogSettings.from_env({})
    assert (config.interval_s, config.stall_s) == (10.0, 60.0)
    assert WatchdogSettings.from_env({"LEADFLOW_WATCHDOG_INTERVAL_S": "0"}).interval_s == 0
