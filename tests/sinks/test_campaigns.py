"""The campaign store on the real Postgres: round trip, duplicates, status transitions."""

from __future__ import annotations

import dataclasses
import time
import uuid

import psycopg
import pytest

from sinks.campaigns import (
    TRANSITIONS,
    CampaignExistsError,
    CampaignNotFoundError,
    CampaignStatus,
    CampaignStatusError,
    CampaignStore,
)
from streams.campaign import Campaign, CampaignValidationError, load_campaign
from streams.errors import DatabaseError
from streams.settings import REPO_ROOT

EXAMPLE = REPO_ROOT / "examples" / "campaign.yaml"


def fresh(campaign_id: str | None = None) -> Campaign:
    """The example campaign under a unique id."""
    cid = campaign_id or f"t-{uuid.uuid4().hex[:12]}"
    return dataclasses.replace(load_campaign(EXAMPLE), id=cid)


def test_create_then_get_round_trips(dsn: str) -> None:
    store = CampaignStore(dsn)
    campaign = fresh()
    created = store.create(campaign)
    assert created.status is CampaignStatus.ACTIVE
    assert created.campaign == campaign
    got = store.get(campaign.id)
    assert got.campaign == campaign
    assert got.campaign.to_dict() == campaign.to_dict()
    assert (got.id, got.name, got.status) == (campaign.id, campaign.name, CampaignStatus.ACTIVE)
    assert got.created_at == created.created_at and got.created_at.tzinfo is not None
    with psycopg.connect(dsn) as conn:
        row = conn.execute(
            "SELECT name, status, config FROM campaigns WHERE campaign_id = %s", (campaign.id,)
        ).fetchone()
    assert row == (campaign.name, "active", campaign.to_dict())


def test_duplicate_id_is_refused_and_the_original_kept(dsn: str) -> None:
    store = CampaignStore(dsn)
    campaign = fresh()
    store.create(campaign)
    other = dataclasses.replace(campaign, name="Something else")
    with pytest.raises(CampaignExistsError, match=f"campaign {campaign.id} already exists"):
        store.create(other)
    assert store.get(campaign.id).name == campaign.name


def test_unknown_id(dsn: str) -> None:
    store = CampaignStore(dsn)
    with pytest.raises(CampaignNotFoundError, match="no campaign with id 'no-such-campaign'"):
        store.get("no-such-campaign")
    with pytest.raises(CampaignNotFoundError):
        store.pause("no-such-campaign")


def test_invalid_hand_built_campaign_is_not_stored(dsn: str) -> None:
    store = CampaignStore(dsn)
    bad = dataclasses.replace(fresh(), id="Not A Valid Id", budget_cost_units=-1.0)
    with pytest.raises(CampaignValidationError) as info:
        store.create(bad)
    assert {p.path for p in info.value.problems} == {"id", "budget_cost_units"}
    with pytest.raises(CampaignNotFoundError):
        store.get("Not A Valid Id")


def test_list_and_filter_by_status(dsn: str) -> None:
    store = CampaignStore(dsn)
    a, b = fresh(), fresh()
    store.create(a)
    store.create(b)
    store.pause(b.id)
    ids = [s.id for s in store.list()]
    assert ids.index(a.id) < ids.index(b.id)  # oldest first
    assert a.id in {s.id for s in store.list("active")}
    paused = {s.id for s in store.list(CampaignStatus.PAUSED)}
    assert b.id in paused and a.id not in paused


def test_status_lifecycle_and_clear_refusals(dsn: str) -> None:
    store = CampaignStore(dsn)
    campaign = fresh()
    created = store.create(campaign)
    time.sleep(0.01)
    paused = store.pause(campaign.id)
    assert paused.status is CampaignStatus.PAUSED
    assert paused.updated_at > created.updated_at
    with pytest.raises(CampaignStatusError, match="already paused"):
        store.pause(campaign.id)
    with pytest.raises(CampaignStatusError, match="can only cancel or resume"):
        store.complete(campaign.id)
    assert store.resume(campaign.id).status is CampaignStatus.ACTIVE
    assert store.cancel(campaign.id).status is CampaignStatus.CANCELLED
    with pytest.raises(
        CampaignStatusError, match="it is cancelled, and cancelled is final"
    ) as info:
        store.resume(campaign.id)
    assert (info.value.current, info.value.target) == ("cancelled", "active")
    assert isinstance(info.value, DatabaseError)
    assert store.get(campaign.id).status is CampaignStatus.CANCELLED


@pytest.mark.parametrize("start", list(CampaignStatus))
@pytest.mark.parametrize("target", list(CampaignStatus))
def test_every_transition_follows_the_table(
    dsn: str, start: CampaignStatus, target: CampaignStatus
) -> None:
    store = CampaignStore(dsn)
    campaign = fresh()
    store.create(campaign)
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute(
            "UPDATE campaigns SET status = %s WHERE campaign_id = %s", (start.value, campaign.id)
        )
    if target in TRANSITIONS[start]:
        assert store.set_status(campaign.id, target).status is target
    else:
        with pytest.raises(CampaignStatusError):
            store.set_status(campaign.id, target)
        assert store.get(campaign.id).status is start


def test_transition_table_is_the_documented_one() -> None:
    s = CampaignStatus
    assert {
        s.ACTIVE: {s.PAUSED, s.CANCELLED, s.COMPLETED},
        s.PAUSED: {s.ACTIVE, s.CANCELLED},
        s.CANCELLED: set(),
        s.COMPLETED: set(),
        s.ARCHIVED: set(),
    } == TRANSITIONS


def test_unreachable_database_is_a_database_error() -> None:
    store = CampaignStore("postgresql://nobody@127.0.0.1:1/none", connect_timeout=2)
    with pytest.raises(DatabaseError, match="cannot connect"):
        store.list()
