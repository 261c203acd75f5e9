"""The stages' campaign cache (agents/campaign_cache.py) against the session's Postgres."""

from __future__ import annotations

import dataclasses
import types
import uuid
from collections.abc import AsyncIterator

import pytest

import agents.campaign_cache as campaign_cache
from agents.campaign_cache import CampaignCache
from sinks.campaigns import CampaignStore
from sinks.db import StageDatabase
from streams.campaign import load_campaign
from streams.settings import REPO_ROOT

EXAMPLE = REPO_ROOT / "examples" / "campaign.yaml"
TTL = 5.0


def new_id() -> str:
    return f"t-{uuid.uuid4().hex[:12]}"


def new_campaign(dsn: str, campaign_id: str | None = None) -> str:
    cid = campaign_id or new_id()
    CampaignStore(dsn).create(dataclasses.replace(load_campaign(EXAMPLE), id=cid))
    return cid


class FakeMonotonic:
    def __init__(self) -> None:
        self.now = 1_000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> FakeMonotonic:
    """The cache's ``time.monotonic`` (only that module's; the event loop keeps the real one)."""
    fake = FakeMonotonic()
    monkeypatch.setattr(campaign_cache, "time", types.SimpleNamespace(monotonic=fake))
    return fake


@pytest.fixture
async def db(dsn: str) -> AsyncIterator[StageDatabase]:
    stage = StageDatabase(dsn, "test-cache")
    try:
        yield stage
    finally:
        await stage.aclose()


async def test_only_known_campaigns_are_returned(
    dsn: str, db: StageDatabase, clock: FakeMonotonic
) -> None:
    one, two, unknown = new_campaign(dsn), new_campaign(dsn), new_id()
    cache = CampaignCache(db, ttl_s=TTL)
    got = await cache.get_many([one, two, unknown, None, "", one])
    assert set(got) == {one, two}
    view = got[one]
    assert view.status == "active" and view.active is True
    assert view.campaign == dataclasses.replace(load_campaign(EXAMPLE), id=one)
    assert got[two].campaign.id == two
    assert await cache.get_many([]) == {}
    assert await cache.get_many([None, unknown]) == {}


async def test_statuses_are_cached_within_the_ttl_and_refreshed_after(
    dsn: str, db: StageDatabase, clock: FakeMonotonic
) -> None:
    cid = new_campaign(dsn)
    cache = CampaignCache(db, ttl_s=TTL)
    assert (await cache.get_many([cid]))[cid].status == "active"
    CampaignStore(dsn).pause(cid)
    clock.now += TTL  # not older than the ttl yet
    cached = (await cache.get_many([cid]))[cid]
    assert (cached.status, cached.active) == ("active", True)
    clock.now += 0.001
    fresh = (await cache.get_many([cid]))[cid]
    assert (fresh.status, fresh.active) == ("paused", False)
    CampaignStore(dsn).cancel(cid)
    clock.now += TTL + 1
    assert (await cache.get_many([cid]))[cid].status == "cancelled"


async def test_a_cached_answer_does_not_touch_the_database(
    dsn: str, db: StageDatabase, clock: FakeMonotonic
) -> None:
    cid, unknown = new_campaign(dsn), new_id()
    cache = CampaignCache(db, ttl_s=TTL)
    first = await cache.get_many([cid, unknown])
    await db.aclose()
    db.dsn = "postgresql://leadflow@127.0.0.1:1/nowhere"  # any query now fails
    again = await cache.get_many([cid, unknown])
    assert set(again) == {cid} and again[cid] is first[cid]


async def test_an_unknown_id_is_absent_until_it_is_created_and_the_ttl_passes(
    dsn: str, db: StageDatabase, clock: FakeMonotonic
) -> None:
    cid = new_id()
    cache = CampaignCache(db, ttl_s=TTL)
    assert await cache.get_many([cid]) == {}
    new_campaign(dsn, cid)
    assert await cache.get_many([cid]) == {}  # the miss is cached too
    clock.now += TTL + 0.5
    got = await cache.get_many([cid])
    assert set(got) == {cid} and got[cid].status == "active"


async def test_only_stale_entries_are_refreshed(
    dsn: str, db: StageDatabase, clock: FakeMonotonic
) -> None:
    old, young = new_campaign(dsn), new_campaign(dsn)
    cache = CampaignCache(db, ttl_s=TTL)
    await cache.get_many([old])
    clock.now += TTL - 1
    await cache.get_many([young])
    store = CampaignStore(dsn)
    store.pause(old)
    store.pause(young)
    clock.now += 2  # old is past the ttl, young is not
    got = await cache.get_many([old, young])
    assert (got[old].status, got[young].status) == ("paused", "active")
