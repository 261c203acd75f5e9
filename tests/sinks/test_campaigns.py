"""The campaign store on the real Postgres: round trip, duplicates, status transitions."""

from __future__ import annotations

import dataclasses
import time
import uuid
from collections.abc import Iterable
from datetime import UTC, datetime

import psycopg
import pytest

from sinks.campaigns import (
    KEPT_TABLES,
    TRANSITIONS,
    CampaignExistsError,
    CampaignNotFinishedError,
    CampaignNotFoundError,
    CampaignStatus,
    CampaignStatusError,
    CampaignStore,
    PurgeRefusedError,
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


# --- retention: archive and purge ---------------------------------------------------

#: Tables a seeded campaign has rows in, and how many (see ``seed``).
SEEDED = {
    "leads": 3,
    "lead_transitions": 6,
    "send_ledger": 2,
    "dead_letters": 1,
    "campaign_stats": 2,
    "lead_identities": 3,
    "pending_touches": 2,
    "channel_blocks": 1,
    "inbound_events": 1,
    "dead_letter_redrives": 1,
}


def seed(
    dsn: str,
    campaign_id: str,
    *,
    states: tuple[str, str, str] = ("completed", "replied", "opted_out"),
    pending: bool = False,
    shared_identity: str | None = None,
) -> dict[str, str]:
    """Rows for 3 leads of ``campaign_id`` in every campaign table; returns their identities.

    Two touches are queued, already released unless ``pending``. The third
    lead's identity is ``shared_identity`` when given (another campaign's).
    """
    tag = uuid.uuid4().hex[:10]
    idents = {f"lead-{i}": f"id-{tag}-{i}" for i in range(3)}
    if shared_identity is not None:
        idents["lead-2"] = shared_identity
    with psycopg.connect(dsn) as conn:
        for i, (lead, ident) in enumerate(idents.items()):
            conn.execute(
                "INSERT INTO leads (campaign_id, lead_id, state, identity_key) "
                "VALUES (%s, %s, %s, %s)",
                (campaign_id, lead, states[i], ident),
            )
            conn.execute(
                "INSERT INTO lead_identities (campaign_id, identity_key, lead_id) "
                "VALUES (%s, %s, %s)",
                (campaign_id, ident, lead),
            )
            conn.execute(
                "INSERT INTO enrichment_cache (identity_key, found, data, fetched_at) "
                "VALUES (%s, true, '{}', now()) ON CONFLICT DO NOTHING",
                (ident,),
            )
            for version, (old, new) in enumerate([(None, "new"), ("new", states[i])], start=1):
                conn.execute(
                    "INSERT INTO lead_transitions (campaign_id, lead_id, version, from_state, "
                    "to_state, occurred_at) VALUES (%s, %s, %s, %s, %s, now())",
                    (campaign_id, lead, version, old, new),
                )
        for touch in (1, 2):
            conn.execute(
                "INSERT INTO send_ledger (campaign_id, lead_id, touch, channel, idempotency_key, "
                "status) VALUES (%s, 'lead-0', %s, 'sms', %s, 'accepted')",
                (campaign_id, touch, f"k-{tag}-{touch}"),
            )
            conn.execute(
                "INSERT INTO pending_touches (campaign_id, lead_id, touch, kafka_partition, "
                "channel, priority, due_at, payload, emitted_at) "
                "VALUES (%s, 'lead-0', %s, 0, 'sms', 1, now(), '\\x00', %s)",
                (campaign_id, touch, None if pending else datetime.now(UTC)),
            )
        conn.execute(
            "INSERT INTO opt_outs (identity_key, channel, source, campaign_id, lead_id) "
            "VALUES (%s, 'all', 'sms_stop', %s, 'lead-2')",
            (idents["lead-2"] + "-optout", campaign_id),
        )
        conn.execute(
            "INSERT INTO dead_letters (original_topic, original_partition, original_offset, "
            "stage, reason, error_class, error_message, attempt, campaign_id, lead_id, payload, "
            "failed_at) VALUES (%s, 0, 1, 'send', 'x', 'X', 'm', 1, %s, 'lead-1', '\\x00', now())",
            (f"t-{tag}", campaign_id),
        )
        conn.execute(
            "INSERT INTO dead_letter_redrives (dlq_topic, dlq_partition, dlq_offset, "
            "original_topic, original_partition, original_offset, stage, reason, attempt, "
            "campaign_id, lead_id, failed_at) "
            "VALUES (%s, 0, 1, 'raw', 0, 1, 'send', 'x', 2, %s, 'lead-1', now())",
            (f"d-{tag}", campaign_id),
        )
        for metric in ("leads", "cost_units"):
            conn.execute(
                "INSERT INTO campaign_stats (campaign_id, metric, value) VALUES (%s, %s, 1)",
                (campaign_id, metric),
            )
        conn.execute(
            "INSERT INTO channel_blocks (campaign_id, lead_id, channel, reason) "
            "VALUES (%s, 'lead-1', 'email', 'bounce')",
            (campaign_id,),
        )
        conn.execute(
            "INSERT INTO inbound_events (event_id, kind, campaign_id, lead_id) "
            "VALUES (%s, 'reply', %s, 'lead-1')",
            (f"evt-{tag}", campaign_id),
        )
    return idents


def campaign_rows(dsn: str, campaign_id: str) -> dict[str, int]:
    """Rows of ``campaign_id`` in every table that has a campaign_id column."""
    with psycopg.connect(dsn) as conn:
        tables = [
            str(r[0])
            for r in conn.execute(
                "SELECT c.table_name FROM information_schema.columns c "
                "JOIN information_schema.tables t USING (table_schema, table_name) "
                "WHERE c.table_schema = current_schema() AND c.column_name = 'campaign_id' "
                "AND t.table_type = 'BASE TABLE'"
            ).fetchall()
        ]
        counts = {}
        for table in tables:
            row = conn.execute(
                f"SELECT count(*) FROM {table} WHERE campaign_id = %s", (campaign_id,)
            ).fetchone()
            assert row is not None
            counts[table] = int(row[0])
    return counts


def cached(dsn: str, identities: Iterable[str]) -> set[str]:
    with psycopg.connect(dsn) as conn:
        rows = conn.execute(
            "SELECT identity_key FROM enrichment_cache WHERE identity_key = ANY(%s)",
            (list(identities),),
        ).fetchall()
    return {str(r[0]) for r in rows}


def test_seed_covers_every_table_it_claims_to(dsn: str) -> None:
    store = CampaignStore(dsn)
    campaign = store.create(fresh()).campaign
    seed(dsn, campaign.id)
    rows = campaign_rows(dsn, campaign.id)
    assert {t: rows[t] for t in SEEDED} == SEEDED
    assert rows["campaigns"] == 1 and rows["opt_outs"] == 1


def test_archive_refuses_an_unfinished_campaign_and_changes_nothing(dsn: str) -> None:
    store = CampaignStore(dsn)
    campaign = store.create(fresh()).campaign
    with pytest.raises(CampaignNotFinishedError, match="it has no leads"):
        store.archive(campaign.id)
    seed(dsn, campaign.id, states=("completed", "in_sequence", "reconcile"), pending=True)
    before = campaign_rows(dsn, campaign.id)
    with pytest.raises(CampaignNotFinishedError) as info:
        store.archive(campaign.id)
    message = str(info.value)
    assert f"cannot archive campaign {campaign.id}: it is active and not finished" in message
    assert "2 of 3 leads not in a terminal state" in message
    assert "2 touches pending" in message
    assert "or cancel it first" in message
    store.pause(campaign.id)
    with pytest.raises(CampaignNotFinishedError, match="it is paused"):
        store.archive(campaign.id, dry_run=True)
    assert store.get(campaign.id).status is CampaignStatus.PAUSED
    assert campaign_rows(dsn, campaign.id) == before


def test_archive_refuses_while_a_send_is_in_flight(dsn: str) -> None:
    store = CampaignStore(dsn)
    campaign = store.create(fresh()).campaign
    seed(dsn, campaign.id)
    with psycopg.connect(dsn) as conn:
        conn.execute(
            "UPDATE send_ledger SET status = 'claimed' WHERE campaign_id = %s AND touch = 2",
            (campaign.id,),
        )
    with pytest.raises(CampaignNotFinishedError, match="1 sends claimed and unfinished"):
        store.archive(campaign.id)


def test_archive_a_finished_campaign(dsn: str) -> None:
    store = CampaignStore(dsn)
    other = store.create(fresh()).campaign
    other_idents = seed(dsn, other.id, states=("in_sequence", "new", "new"), pending=True)
    campaign = store.create(fresh()).campaign
    idents = seed(dsn, campaign.id, shared_identity=other_idents["lead-0"])
    before = campaign_rows(dsn, campaign.id)

    dry = store.archive(campaign.id, dry_run=True)
    assert dry.dry_run and dry.previous is CampaignStatus.ACTIVE
    # lead-2's identity is shared with an active campaign: its cache row stays.
    assert dry.deleted == {"pending_touches": 2, "enrichment_cache": 2}
    assert campaign_rows(dsn, campaign.id) == before
    assert store.get(campaign.id).status is CampaignStatus.ACTIVE

    done = store.archive(campaign.id)
    assert done.deleted == dry.deleted and not done.dry_run
    assert store.get(campaign.id).status is CampaignStatus.ARCHIVED
    after = campaign_rows(dsn, campaign.id)
    assert after == {**before, "pending_touches": 0}  # history and stats kept
    assert cached(dsn, idents.values()) == {other_idents["lead-0"]}
    assert campaign_rows(dsn, other.id)["pending_touches"] == 2  # the other campaign is untouched
    assert cached(dsn, other_idents.values()) == set(other_idents.values())

    with pytest.raises(CampaignStatusError, match="it is already archived"):
        store.archive(campaign.id)
    with pytest.raises(CampaignStatusError, match="archived is final"):
        store.resume(campaign.id)


def test_a_cancelled_campaign_is_archived_with_work_left(dsn: str) -> None:
    store = CampaignStore(dsn)
    campaign = store.create(fresh()).campaign
    seed(dsn, campaign.id, states=("in_sequence", "in_sequence", "new"), pending=True)
    store.cancel(campaign.id)
    result = store.archive(campaign.id)
    assert result.previous is CampaignStatus.CANCELLED
    assert result.deleted["pending_touches"] == 2
    assert store.get(campaign.id).status is CampaignStatus.ARCHIVED


def test_purge_refuses_what_is_not_archived(dsn: str) -> None:
    store = CampaignStore(dsn)
    campaign = store.create(fresh()).campaign
    seed(dsn, campaign.id)
    before = campaign_rows(dsn, campaign.id)
    with pytest.raises(PurgeRefusedError, match=r"it is active; .* archive it first"):
        store.purge(campaign.id, dry_run=True)
    with pytest.raises(PurgeRefusedError, match="it is active"):
        store.purge(campaign.id, force=True, dry_run=False)
    store.cancel(campaign.id)
    with pytest.raises(PurgeRefusedError, match="add --force"):
        store.purge(campaign.id, dry_run=False)
    assert campaign_rows(dsn, campaign.id) == before
    with pytest.raises(CampaignNotFoundError):
        store.purge("no-such-campaign")


def test_purge_deletes_every_row_but_opt_outs(dsn: str) -> None:
    store = CampaignStore(dsn)
    other = store.create(fresh()).campaign
    seed(dsn, other.id, states=("in_sequence", "new", "new"))
    other_before = campaign_rows(dsn, other.id)
    campaign = store.create(fresh()).campaign
    idents = seed(dsn, campaign.id)
    store.archive(campaign.id)
    before = campaign_rows(dsn, campaign.id)

    plan = store.purge(campaign.id)  # a dry run by default
    assert plan.dry_run and plan.status is CampaignStatus.ARCHIVED
    assert plan.lead_ids == {"lead-0", "lead-1", "lead-2"}
    expected = {t: n for t, n in before.items() if t not in KEPT_TABLES}
    assert {t: n for t, n in plan.deleted.items() if t != "enrichment_cache"} == expected
    assert plan.deleted["enrichment_cache"] == 0  # archive already dropped them
    assert list(plan.deleted)[-1] == "campaigns"
    assert plan.kept == {"opt_outs": 1}
    assert plan.total == sum(expected.values())
    assert campaign_rows(dsn, campaign.id) == before  # the dry run changed nothing

    done = store.purge(campaign.id, dry_run=False)
    assert done.deleted == plan.deleted and not done.dry_run
    after = campaign_rows(dsn, campaign.id)
    assert after == {t: (1 if t in KEPT_TABLES else 0) for t in before}
    with psycopg.connect(dsn) as conn:
        kept = conn.execute(
            "SELECT identity_key, lead_id FROM opt_outs WHERE campaign_id = %s", (campaign.id,)
        ).fetchall()
    assert kept == [(idents["lead-2"] + "-optout", "lead-2")]  # compliance records survive
    with pytest.raises(CampaignNotFoundError):
        store.get(campaign.id)
    assert campaign_rows(dsn, other.id) == other_before


def test_purge_force_takes_a_cancelled_campaign_and_its_cache(dsn: str) -> None:
    store = CampaignStore(dsn)
    campaign = store.create(fresh()).campaign
    idents = seed(dsn, campaign.id, pending=True)
    store.cancel(campaign.id)
    done = store.purge(campaign.id, force=True, dry_run=False)
    assert done.status is CampaignStatus.CANCELLED
    assert done.deleted["enrichment_cache"] == 3
    assert done.deleted["pending_touches"] == 2
    assert cached(dsn, idents.values()) == set()
    assert sum(campaign_rows(dsn, campaign.id).values()) == 1  # the opt-out


def test_purge_finds_new_tables_and_deletes_children_first(dsn: str) -> None:
    store = CampaignStore(dsn)
    campaign = store.create(fresh()).campaign
    seed(dsn, campaign.id)
    store.archive(campaign.id)
    table = f"zz_purge_child_{uuid.uuid4().hex[:6]}"
    with psycopg.connect(dsn) as conn:
        conn.execute(
            f"CREATE TABLE {table} (campaign_id text, lead_id text, "
            "FOREIGN KEY (campaign_id, lead_id) REFERENCES leads (campaign_id, lead_id))"
        )
        conn.execute(
            f"INSERT INTO {table} VALUES (%s, 'lead-0'), (%s, 'lead-1')", (campaign.id,) * 2
        )
    try:
        done = store.purge(campaign.id, dry_run=False)
        assert done.deleted[table] == 2
        order = list(done.deleted)
        assert order.index(table) < order.index("leads")  # else the foreign key refuses
    finally:
        with psycopg.connect(dsn) as conn:
            conn.execute(f"DROP TABLE {table}")
