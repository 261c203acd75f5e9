"""scripts/render_dashboard.py: PromQL-like maths and the PNG, from synthetic scrapes."""

from __future__ import annotations

import importlib.util
import json
import math
import sys
from pathlib import Path
from types import ModuleType

import pytest

from streams import metrics
from streams.settings import REPO_ROOT


def _load() -> ModuleType:
    path = REPO_ROOT / "scripts" / "render_dashboard.py"
    spec = importlib.util.spec_from_file_location("render_dashboard", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules["render_dashboard"] = module
    spec.loader.exec_module(module)
    return module


rd = _load()


def test_histogram_quantile_interpolates_like_promql() -> None:
    # 100 observations: 50 <= 0.1 s, 90 <= 1 s, all <= 10 s
    buckets = {0.1: 50.0, 1.0: 90.0, 10.0: 100.0, math.inf: 100.0}
    assert rd.histogram_quantile(0.5, buckets) == pytest.approx(0.1)
    assert rd.histogram_quantile(0.7, buckets) == pytest.approx(0.1 + 0.9 * 0.5)
    assert rd.histogram_quantile(0.99, buckets) == pytest.approx(1.0 + 9.0 * 0.9)
    assert math.isnan(rd.histogram_quantile(0.99, {1.0: 0.0, math.inf: 0.0}))
    assert rd.histogram_quantile(0.99, {1.0: 1.0, math.inf: 10.0}) == 1.0  # in +Inf


def test_rate_is_per_second_and_survives_a_counter_reset() -> None:
    times = [0.0, 1.0, 2.0, 3.0, 4.0]
    values = [0.0, 10.0, 20.0, 5.0, 15.0]  # the worker restarted before t=3
    out = rd.rate(times, values, window=1)
    assert math.isnan(out[0])
    assert out[1:] == pytest.approx([10.0, 10.0, 5.0, 10.0])


def test_scrape_round_trip_and_png(tmp_path: Path) -> None:
    stage = metrics.StageMetrics("dash-test")
    jsonl = tmp_path / "scrape.jsonl"
    lines = []
    for i in range(4):
        stage.batch_done(
            records=10, dead_letter_reasons=[], taken_at=0.0, event_timestamps=[1.0] * 10
        )
        body, _ = metrics.render()
        samples = rd.parse_exposition(body.decode())
        assert all(name.startswith("leadflow_") for name, _, _ in samples)
        lines.append(rd.Scrape(1000.0 + i, samples))
    jsonl.write_text(
        "".join(json.dumps({"t": s.t, "samples": s.samples}) + "\n" for s in reversed(lines))
    )
    scrapes = rd.load_scrapes(jsonl)
    assert [s.t for s in scrapes] == [1000.0, 1001.0, 1002.0, 1003.0]
    records = rd.series(scrapes, "leadflow_stage_records_total", ["stage"])
    assert records[("dash-test",)][-1] - records[("dash-test",)][0] == 30
    out = tmp_path / "dash.png"
    rd.render_png(scrapes, out, "test")
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
