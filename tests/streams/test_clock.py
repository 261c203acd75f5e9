"""The campaign clock (streams/clock.py): its maths, and the anchor shared through Postgres.

``clock_anchor`` holds one row for the whole database, so the ``shared_clock``
tests each run in a schema of their own (created, migrated and dropped here)
and never touch the session database's anchor.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta

import psycopg
import pytest
from psycopg import sql
from psycopg.conninfo import make_conninfo

from sinks.migrate import apply_migrations
from streams.clock import CampaignClock, shared_clock
from streams.errors import ConfigError, DatabaseError

START = "2026-01-05T09:00:00+00:00"
START_S = datetime(2026, 1, 5, 9, 0, tzinfo=UTC).timestamp()


class FakeWall:
    """An injectable wall clock."""

    def __init__(self, now: float) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


# --- CampaignClock maths ---------------------------------------------------------


def test_campaign_time_runs_scale_times_faster() -> None:
    wall = FakeWall(1_000.0)
    clock = CampaignClock(60.0, wall_anchor=1_000.0, campaign_anchor=START_S, wall=wall)
    assert clock.now_s() == START_S
    wall.now = 1_010.5
    assert clock.now_s() == START_S + 630.0
    assert clock.now_ms() == int((START_S + 630.0) * 1000)
    assert clock.now() == datetime(2026, 1, 5, 9, 10, 30, tzinfo=UTC)
    wall.now = 990.0  # before the anchor: campaign time is before it too
    assert clock.now_s() == START_S - 600.0


def test_wall_seconds_until_and_campaign_span() -> None:
    wall = FakeWall(500.0)
    clock = CampaignClock(120.0, wall_anchor=500.0, campaign_anchor=START_S, wall=wall)
    target = datetime(2026, 1, 5, 10, 0, tzinfo=UTC)  # one campaign hour ahead
    assert clock.wall_seconds_until(target) == pytest.approx(30.0)
    wall.now = 520.0
    assert clock.wall_seconds_until(target) == pytest.approx(10.0)
    wall.now = 531.0
    assert clock.wall_seconds_until(target) == 0.0  # in the past
    assert clock.campaign_span(30.0) == timedelta(hours=1)
    assert clock.campaign_span(0.5) == timedelta(minutes=1)
    assert CampaignClock(1.0, 0.0, 0.0, wall=wall).campaign_span(7.0) == timedelta(seconds=7)


def test_realtime_is_wall_time() -> None:
    clock = CampaignClock.realtime()
    before = time.time()
    now = clock.now_s()
    assert before <= now <= time.time()
    assert clock.scale == 1.0
    assert clock.now().tzinfo is UTC
    assert abs(clock.now().timestamp() - time.time()) < 1.0


# --- shared_clock ------------------------------------------------------------------


@pytest.fixture
def clock_dsn(dsn: str) -> Iterator[str]:
    """A DSN whose search path is a fresh, migrated schema of this test's own."""
    schema = f"clock_{uuid.uuid4().hex[:10]}"
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute(sql.SQL("CREATE SCHEMA {}").format(sql.Identifier(schema)))
    scoped = make_conninfo(dsn, options=f"-csearch_path={schema}")
    try:
        apply_migrations(scoped)
        yield scoped
    finally:
        with psycopg.connect(dsn, autocommit=True) as conn:
            conn.execute(sql.SQL("DROP SCHEMA {} CASCADE").format(sql.Identifier(schema)))


def anchor_rows(dsn: str) -> list[tuple[float, float, float]]:
    with psycopg.connect(dsn) as conn:
        rows = conn.execute(
            "SELECT extract(epoch FROM wall_anchor)::float8, "
            "extract(epoch FROM campaign_anchor)::float8, scale FROM clock_anchor"
        ).fetchall()
    return [(float(w), float(c), float(s)) for w, c, s in rows]


def test_the_schema_is_isolated(dsn: str, clock_dsn: str) -> None:
    with psycopg.connect(clock_dsn) as conn:
        row = conn.execute("SELECT current_schema()").fetchone()
    assert row is not None and str(row[0]).startswith("clock_")
    assert anchor_rows(clock_dsn) == []


def test_the_first_call_anchors_at_the_start_and_later_calls_share_it(clock_dsn: str) -> None:
    before = time.time()
    first = shared_clock(clock_dsn, 60.0, START)
    after = time.time()
    assert first.scale == 60.0
    assert first.campaign_anchor == START_S
    assert before <= first.wall_anchor <= after
    assert START_S <= first.now_s() <= START_S + (time.time() - before) * 60.0
    [(wall, campaign, scale)] = anchor_rows(clock_dsn)
    assert (wall, campaign, scale) == (
        pytest.approx(first.wall_anchor, abs=1e-5),
        pytest.approx(START_S, abs=1e-5),
        60.0,
    )

    second = shared_clock(clock_dsn, 60.0, "2030-01-01T00:00:00+00:00")  # start ignored now
    assert second.scale == 60.0
    assert second.wall_anchor == pytest.approx(first.wall_anchor, abs=1e-5)
    assert second.campaign_anchor == pytest.approx(first.campaign_anchor, abs=1e-5)
    assert abs(second.now_s() - first.now_s()) < 0.01 * 60
    assert len(anchor_rows(clock_dsn)) == 1


def test_a_start_without_a_zone_is_utc(clock_dsn: str) -> None:
    clock = shared_clock(clock_dsn, 1.0, "2026-01-05T09:00:00")
    assert clock.campaign_anchor == START_S


def test_without_a_start_campaign_time_starts_at_wall_time(clock_dsn: str) -> None:
    before = time.time()
    clock = shared_clock(clock_dsn, 10.0)
    assert clock.campaign_anchor == clock.wall_anchor
    assert before <= clock.wall_anchor <= time.time()


def test_a_bad_start_is_a_config_error(clock_dsn: str) -> None:
    with pytest.raises(ConfigError, match="LEADFLOW_CLOCK_START='next tuesday'"):
        shared_clock(clock_dsn, 1.0, "next tuesday")
    assert anchor_rows(clock_dsn) == []


def test_a_new_scale_re_anchors_without_going_back(clock_dsn: str) -> None:
    slow = shared_clock(clock_dsn, 1.0, START)
    time.sleep(0.05)
    before = slow.now_s()
    fast = shared_clock(clock_dsn, 1000.0, START)
    after = slow.now_s()
    assert fast.scale == 1000.0
    # the new anchor is the old clock's time when it was taken
    assert before <= fast.campaign_anchor <= after
    assert fast.campaign_anchor > START_S + 0.04
    assert fast.now_s() >= after  # campaign time never jumps back
    [(wall, campaign, scale)] = anchor_rows(clock_dsn)
    assert (wall, campaign, scale) == (
        pytest.approx(fast.wall_anchor, abs=1e-5),
        pytest.approx(fast.campaign_anchor, abs=1e-5),
        1000.0,
    )
    # from now on the new scale is shared, and time keeps moving forward
    time.sleep(0.02)
    again = shared_clock(clock_dsn, 1000.0)
    assert again.campaign_anchor == pytest.approx(fast.campaign_anchor, abs=1e-5)
    assert again.now_s() >= fast.campaign_anchor + 20.0  # >= 0.02 wall s x 1000
    # and slowing down again starts from the fast clock's time, not the slow one's
    back = shared_clock(clock_dsn, 1.0)
    assert back.scale == 1.0
    assert back.campaign_anchor >= again.campaign_anchor + 20.0
    assert back.now_s() > slow.now_s() + 19.0


def test_a_re_anchor_waiting_for_the_lock_keeps_time_continuous(clock_dsn: str) -> None:
    old = shared_clock(clock_dsn, 100.0, START)
    with psycopg.connect(clock_dsn) as holder, ThreadPoolExecutor(1) as pool:
        holder.execute("LOCK TABLE clock_anchor IN EXCLUSIVE MODE")  # another process re-anchors
        pending = pool.submit(shared_clock, clock_dsn, 1.0)
        time.sleep(0.3)
        assert not pending.done()
        holder.commit()
        new = pending.result(timeout=5)
    # where the old clock was at the new anchor's wall instant
    old_then = old.campaign_anchor + (new.wall_anchor - old.wall_anchor) * old.scale
    assert new.campaign_anchor == pytest.approx(old_then, abs=1.0)  # off by ~0.3 s x 100


def test_an_unreachable_database_is_a_database_error() -> None:
    with pytest.raises(DatabaseError, match="campaign clock anchor"):
        shared_clock("postgresql://leadflow@127.0.0.1:1/leadflow?connect_timeout=2", 1.0)
