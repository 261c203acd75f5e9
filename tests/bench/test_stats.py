"""The benchmark's statistics helpers."""

from __future__ import annotations

import pytest

from bench.stats import (
    latencies,
    max_in_window,
    median_of,
    median_results,
    per_window,
    percentile,
    ratio,
    slope,
    summary_ms,
)


def test_percentile_interpolates_between_ranks_like_numpy() -> None:
    values = [1.0, 2.0, 3.0, 4.0]
    assert percentile(values, 0) == 1.0
    assert percentile(values, 100) == 4.0
    assert percentile(values, 50) == 2.5
    assert percentile(values, 99) == pytest.approx(3.97)
    assert percentile([7.0], 99) == 7.0


def test_percentile_ignores_input_order() -> None:
    assert percentile([9.0, 1.0, 5.0], 50) == 5.0


@pytest.mark.parametrize("q", [-1.0, 100.5])
def test_percentile_refuses_q_out_of_range(q: float) -> None:
    with pytest.raises(ValueError, match="within 0-100"):
        percentile([1.0], q)


def test_percentile_of_nothing_is_an_error() -> None:
    with pytest.raises(ValueError, match="no values"):
        percentile([], 50)


def test_ratio_and_its_missing_cases() -> None:
    assert ratio(250.0, 1000.0) == 0.25
    assert ratio(None, 1000.0) is None
    assert ratio(250.0, None) is None
    assert ratio(250.0, 0.0) is None


def test_latencies_pair_keys_present_on_both_sides() -> None:
    start = {"a": 100, "b": 200, "c": 300}
    end = {"a": 150, "b": 260, "d": 999}
    assert sorted(latencies(start, end)) == [50.0, 60.0]


def test_summary_ms_of_values_and_of_none() -> None:
    s = summary_ms([float(v) for v in range(1, 101)])
    assert s == {"count": 100, "p50_ms": 50.5, "p99_ms": 99.01, "max_ms": 100.0}
    assert summary_ms([]) == {"count": 0, "p50_ms": None, "p99_ms": None, "max_ms": None}


def test_max_in_window_counts_half_open_windows() -> None:
    # 0.0, 0.5 and 0.99 fit in [0, 1); 1.0 starts the next window
    times = [1.0, 0.0, 0.5, 0.99, 2.5]
    assert max_in_window(times, 1.0) == 3
    assert max_in_window(times, 2.0) == 4
    assert max_in_window([], 1.0) == 0


def test_max_in_window_of_an_evenly_spaced_stream() -> None:
    times = [float(i * 600) for i in range(350)]  # ms: 100 per 60 s, spread evenly
    assert max_in_window(times, 60_000.0) == 100
    assert max_in_window(times, 60_001.0) == 101


def test_per_window_counts_each_consecutive_window_from_the_first_time() -> None:
    times = [10.2, 10.0, 10.9, 11.0, 13.5]  # unsorted; [10, 11) [11, 12) [12, 13) [13, 14)
    assert per_window(times, 1.0) == [3, 1, 0, 1]
    assert per_window([], 1.0) == []


def test_slope_of_a_line_and_of_flat_points() -> None:
    assert slope([(0.0, 1.0), (1.0, 3.0), (2.0, 5.0)]) == pytest.approx(2.0)
    assert slope([(0.0, 4.0), (10.0, 4.0)]) == pytest.approx(0.0)
    assert slope([(1.0, 1.0)]) is None
    assert slope([(1.0, 1.0), (1.0, 2.0)]) is None


def test_median_of_skips_missing_values() -> None:
    assert median_of([3, None, 1, 2]) == 2.0
    assert median_of([None]) is None


def test_median_results_takes_medians_recursively_and_keeps_the_rest() -> None:
    runs = [
        {"tp": 100.0, "n": 500, "kind": "leadflow", "ok": True, "stages": {"p99": 10.0}, "k": 1},
        {"tp": 300.0, "n": 500, "kind": "leadflow", "ok": False, "stages": {"p99": 30.0}, "k": 2},
        {"tp": 200.0, "n": 500, "kind": "leadflow", "ok": False, "stages": {"p99": None}},
    ]
    merged = median_results(runs)
    assert merged["tp"] == 200.0
    assert merged["n"] == 500 and isinstance(merged["n"], int)
    assert merged["kind"] == "leadflow"
    assert merged["ok"] is True  # booleans are not averaged
    assert merged["stages"] == {"p99": 20.0}
    assert merged["k"] == 1.5  # the median of two whole numbers need not be whole
    assert median_results([]) == {}
