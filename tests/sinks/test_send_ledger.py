"""The send ledger (sinks/send_ledger.py) on the real Postgres: claims, blocks, outcomes, races."""

from __future__ import annotations

import asyncio
import dataclasses
import time
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from typing import Any

import psycopg
import pytest

from sinks.campaigns import CampaignStore
from sinks.send_ledger import (
    ClaimRequest,
    Outcome,
    accepted_counts,
    claim_sends,
    mark_calling,
    record_outcomes,
    release_claims,
)
from streams.campaign import load_campaign
from streams.settings import REPO_ROOT

EXAMPLE = REPO_ROOT / "examples" / "campaign.yaml"
CLOCK = datetime(2026, 1, 5, 15, 30, tzinfo=UTC)
DONE = datetime(2026, 1, 5, 15, 31, tzinfo=UTC)

Conn = psycopg.AsyncConnection[tuple[Any, ...]]


def new_campaign(dsn: str) -> str:
    """Store the example campaign under a fresh id (active)."""
    cid = f"t-{uuid.uuid4().hex[:12]}"
    CampaignStore(dsn).create(dataclasses.replace(load_campaign(EXAMPLE), id=cid))
    return cid


def new_lead() -> str:
    return f"lead-{uuid.uuid4().hex[:12]}"


def request(
    campaign_id: str,
    lead_id: str | None = None,
    touch: int = 1,
    channel: str = "sms",
    identity_key: str | None = None,
) -> ClaimRequest:
    lead = lead_id or new_lead()
    return ClaimRequest(
        campaign_id=campaign_id,
        lead_id=lead,
        touch=touch,
        channel=channel,
        idempotency_key=f"{campaign_id}:{lead}:{touch}",
        identity_key=identity_key,
        campaign_clock=CLOCK,
    )


def outcome(r: ClaimRequest, status: str = "accepted", message_id: str | None = "msg-1") -> Outcome:
    return Outcome(
        campaign_id=r.campaign_id,
        lead_id=r.lead_id,
        touch=r.touch,
        status=status,
        provider="sim",
        provider_message_id=message_id,
        cost_units=0.75,
        attempts=2,
        error=None if status == "accepted" else "boom",
    )


@pytest.fixture
async def conn(dsn: str) -> AsyncIterator[Conn]:
    async with await psycopg.AsyncConnection.connect(dsn, autocommit=True) as c:
        yield c


async def claim(conn: Conn, requests: list[ClaimRequest]) -> list[Any]:
    async with conn.transaction():
        return await claim_sends(conn, requests)


async def ledger_row(conn: Conn, r: ClaimRequest) -> tuple[Any, ...] | None:
    cur = await conn.execute(
        "SELECT status, channel, idempotency_key, provider, provider_message_id, cost_units, "
        "attempts, error, campaign_clock, completed_at FROM send_ledger "
        "WHERE campaign_id = %s AND lead_id = %s AND touch = %s",
        (r.campaign_id, r.lead_id, r.touch),
    )
    return await cur.fetchone()


async def test_empty_batch_claims_nothing(conn: Conn) -> None:
    assert await claim(conn, []) == []


async def test_a_new_claim_wins_and_records_a_claimed_row(dsn: str, conn: Conn) -> None:
    r = request(new_campaign(dsn), channel="email")
    [c] = await claim(conn, [r])
    assert c.won is True
    assert c.request == r
    assert (c.blocked, c.status) == (None, None)
    row = await ledger_row(conn, r)
    assert row is not None
    status, channel, key, provider, message_id, cost, attempts, error, clock, done = row
    assert (status, channel, key) == ("claimed", "email", r.idempotency_key)
    assert (provider, message_id, cost, attempts, error, done) == (None, None, 0.0, 0, None, None)
    assert clock == CLOCK


async def test_a_second_claim_loses_and_returns_what_was_recorded(dsn: str, conn: Conn) -> None:
    r = request(new_campaign(dsn))
    [first] = await claim(conn, [r])
    assert first.won
    async with conn.transaction():
        assert await mark_calling(conn, [key(r)]) == {key(r)}  # its call is starting
    [again] = await claim(conn, [r])
    assert (again.won, again.blocked, again.status) == (False, None, "claimed")
    assert again.provider is None and again.provider_message_id is None

    async with conn.transaction():
        await record_outcomes(conn, [outcome(r, message_id="prov-42")], DONE)
    [later] = await claim(conn, [r])
    assert later.won is False
    assert later.blocked is None
    assert (later.status, later.provider, later.provider_message_id) == (
        "accepted",
        "sim",
        "prov-42",
    )
    assert later.cost_units == 0.75
    assert later.error is None
    cur = await conn.execute(
        "SELECT count(*) FROM send_ledger WHERE campaign_id = %s AND lead_id = %s",
        (r.campaign_id, r.lead_id),
    )
    assert await cur.fetchone() == (1,)


def key(r: ClaimRequest) -> tuple[str, str, int]:
    return (r.campaign_id, r.lead_id, r.touch)


async def test_a_claim_a_crash_left_before_its_call_is_taken_over_once(
    dsn: str, conn: Conn
) -> None:
    r = request(new_campaign(dsn))
    [first] = await claim(conn, [r])  # ... and the worker died before calling
    assert first.won
    [second] = await claim(conn, [r])  # the redelivery
    assert (second.won, second.status) == (True, "claimed")  # never called: take it over
    async with conn.transaction():
        assert await mark_calling(conn, [key(r)]) == {key(r)}
    async with conn.transaction():
        assert await mark_calling(conn, [key(r)]) == set()  # one claimer calls, not two
    [third] = await claim(conn, [r])
    assert (third.won, third.status) == (False, "claimed")  # maybe called: reconcile


async def test_a_failed_outcome_is_returned_with_its_error(dsn: str, conn: Conn) -> None:
    r = request(new_campaign(dsn))
    await claim(conn, [r])
    async with conn.transaction():
        await record_outcomes(conn, [outcome(r, status="failed", message_id=None)], DONE)
    [again] = await claim(conn, [r])
    assert (again.won, again.status, again.provider_message_id, again.error) == (
        False,
        "failed",
        None,
        "boom",
    )


async def test_an_opt_out_of_the_identity_blocks_the_claim(dsn: str, conn: Conn) -> None:
    cid = new_campaign(dsn)
    opted = f"id-{uuid.uuid4().hex}"
    await conn.execute(
        "INSERT INTO opt_outs (identity_key, channel, source) VALUES (%s, 'all', 'test')",
        (opted,),
    )
    blocked = request(cid, identity_key=opted)
    other = request(cid, identity_key=f"id-{uuid.uuid4().hex}")
    no_identity = request(cid, identity_key=None)
    answers = await claim(conn, [blocked, other, no_identity])
    assert [(a.won, a.blocked) for a in answers] == [
        (False, "opted_out"),
        (True, None),
        (True, None),
    ]
    assert await ledger_row(conn, blocked) is None
    assert await ledger_row(conn, other) is not None


async def test_an_opt_out_from_another_campaign_still_blocks(dsn: str, conn: Conn) -> None:
    opted = f"id-{uuid.uuid4().hex}"
    await conn.execute(
        "INSERT INTO opt_outs (identity_key, channel, source, campaign_id) "
        "VALUES (%s, 'all', 'test', %s)",
        (opted, new_campaign(dsn)),
    )
    [a] = await claim(conn, [request(new_campaign(dsn), identity_key=opted)])
    assert (a.won, a.blocked) == (False, "opted_out")


@pytest.mark.parametrize(
    ("action", "blocked"),
    [
        ("pause", "campaign_paused"),
        ("cancel", "campaign_cancelled"),
        ("complete", "campaign_completed"),
    ],
)
async def test_a_campaign_that_is_not_active_blocks_the_claim(
    dsn: str, conn: Conn, action: str, blocked: str
) -> None:
    cid = new_campaign(dsn)
    getattr(CampaignStore(dsn), action)(cid)
    r = request(cid)
    [a] = await claim(conn, [r])
    assert (a.won, a.blocked, a.status) == (False, blocked, None)
    assert await ledger_row(conn, r) is None


async def test_an_unknown_campaign_blocks_the_claim(conn: Conn) -> None:
    r = request(f"t-missing-{uuid.uuid4().hex[:8]}")
    [a] = await claim(conn, [r])
    assert (a.won, a.blocked) == (False, "campaign_missing")
    assert await ledger_row(conn, r) is None


async def test_a_blocked_channel_blocks_only_that_channel(dsn: str, conn: Conn) -> None:
    cid, lead = new_campaign(dsn), new_lead()
    await conn.execute(
        "INSERT INTO channel_blocks (campaign_id, lead_id, channel, reason) "
        "VALUES (%s, %s, 'sms', 'bounce')",
        (cid, lead),
    )
    sms = request(cid, lead, touch=1, channel="sms")
    email = request(cid, lead, touch=2, channel="email")
    answers = await claim(conn, [sms, email])
    assert [(a.won, a.blocked) for a in answers] == [(False, "channel_blocked"), (True, None)]
    assert await ledger_row(conn, sms) is None


async def test_a_mixed_batch_answers_in_request_order(dsn: str, conn: Conn) -> None:
    cid, paused = new_campaign(dsn), new_campaign(dsn)
    CampaignStore(dsn).pause(paused)
    opted = f"id-{uuid.uuid4().hex}"
    await conn.execute("INSERT INTO opt_outs (identity_key, source) VALUES (%s, 'test')", (opted,))
    earlier = request(cid)
    await claim(conn, [earlier])
    async with conn.transaction():
        await record_outcomes(conn, [outcome(earlier, message_id="m-earlier")], DONE)
    blocked_lead = new_lead()
    await conn.execute(
        "INSERT INTO channel_blocks (campaign_id, lead_id, channel, reason) "
        "VALUES (%s, %s, 'voice', 'invalid')",
        (cid, blocked_lead),
    )
    batch = [
        request(cid),
        request(paused),
        earlier,
        request(cid, identity_key=opted),
        request(cid, blocked_lead, channel="voice"),
        request(cid, touch=3),
    ]
    answers = await claim(conn, batch)
    assert [a.request for a in answers] == batch
    assert [(a.won, a.blocked, a.status) for a in answers] == [
        (True, None, None),
        (False, "campaign_paused", None),
        (False, None, "accepted"),
        (False, "opted_out", None),
        (False, "channel_blocked", None),
        (True, None, None),
    ]
    assert answers[2].provider_message_id == "m-earlier"


async def test_a_duplicate_within_one_batch_wins_only_once(dsn: str, conn: Conn) -> None:
    r = request(new_campaign(dsn))
    answers = await claim(conn, [r, r])
    assert [a.won for a in answers].count(True) == 1


async def test_record_outcomes_updates_only_claimed_rows(dsn: str, conn: Conn) -> None:
    cid = new_campaign(dsn)
    r = request(cid)
    never_claimed = request(cid)
    await claim(conn, [r])
    async with conn.transaction():
        await record_outcomes(conn, [outcome(r, message_id="first")], DONE)
    async with conn.transaction():
        await record_outcomes(
            conn,
            [outcome(r, status="failed", message_id="second"), outcome(never_claimed)],
            datetime(2026, 1, 6, tzinfo=UTC),
        )
    row = await ledger_row(conn, r)
    assert row is not None
    status, _, _, provider, message_id, cost, attempts, error, _, done = row
    assert (status, provider, message_id, cost, attempts, error, done) == (
        "accepted",
        "sim",
        "first",
        0.75,
        2,
        None,
        DONE,
    )
    assert await ledger_row(conn, never_claimed) is None  # an outcome never inserts a row
    async with conn.transaction():
        await record_outcomes(conn, [], DONE)  # nothing to do


async def test_release_claims_deletes_only_claimed_rows(dsn: str, conn: Conn) -> None:
    cid = new_campaign(dsn)
    claimed, accepted = request(cid), request(cid)
    await claim(conn, [claimed, accepted])
    async with conn.transaction():
        await record_outcomes(conn, [outcome(accepted)], DONE)
        await release_claims(
            conn,
            [
                (claimed.campaign_id, claimed.lead_id, claimed.touch),
                (accepted.campaign_id, accepted.lead_id, accepted.touch),
                (cid, new_lead(), 1),
            ],
        )
        await release_claims(conn, [])
    assert await ledger_row(conn, claimed) is None
    row = await ledger_row(conn, accepted)
    assert row is not None and row[0] == "accepted"
    [again] = await claim(conn, [claimed])  # a released claim can be claimed again
    assert again.won is True


async def test_accepted_counts_counts_accepted_sequence_touches_only(dsn: str, conn: Conn) -> None:
    cid = new_campaign(dsn)
    lead, pending_lead, silent_lead = new_lead(), new_lead(), new_lead()
    touches = {t: request(cid, lead, touch=t) for t in range(5)}
    pending = request(cid, pending_lead, touch=1)
    await claim(conn, [*touches.values(), pending])
    async with conn.transaction():
        await record_outcomes(
            conn,
            [
                outcome(touches[0]),  # the opt-out confirmation: not a sequence touch
                outcome(touches[1]),
                outcome(touches[2], status="failed", message_id=None),
                outcome(touches[3]),
                outcome(touches[4], status="ambiguous", message_id=None),
            ],
            DONE,
        )
    counts = await accepted_counts(
        conn, [(cid, lead), (cid, pending_lead), (cid, silent_lead), ("t-other", lead)]
    )
    assert counts == {(cid, lead): 2}
    assert await accepted_counts(conn, []) == {}


async def _wait_until_blocked(dsn: str, pid: int) -> None:
    """Wait until backend ``pid`` waits on a lock (its claim is queued behind the other)."""
    async with await psycopg.AsyncConnection.connect(dsn, autocommit=True) as probe:
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline:
            cur = await probe.execute(
                "SELECT wait_event_type FROM pg_stat_activity WHERE pid = %s", (pid,)
            )
            row = await cur.fetchone()
            if row is not None and row[0] == "Lock":
                return
            await asyncio.sleep(0.01)
    raise AssertionError(f"backend {pid} never waited for the first claim's lock")


@pytest.mark.parametrize("first_ends", ["commit", "rollback"])
async def test_concurrent_claims_of_one_key_have_exactly_one_winner(
    dsn: str, first_ends: str
) -> None:
    r = request(new_campaign(dsn))
    async with (
        await psycopg.AsyncConnection.connect(dsn) as one,
        await psycopg.AsyncConnection.connect(dsn) as two,
    ):
        [first] = await claim_sends(one, [r])  # transaction stays open
        assert first.won is True

        async def second_claim() -> Any:
            answers = await claim_sends(two, [r])
            await two.commit()
            return answers[0]

        task = asyncio.create_task(second_claim())
        await _wait_until_blocked(dsn, two.info.backend_pid)
        assert not task.done()
        if first_ends == "commit":
            await one.commit()
        else:
            await one.rollback()
        second = await asyncio.wait_for(task, timeout=5)
    if first_ends == "commit":  # an uncalled claim: a candidate, but only one marks it
        assert (second.won, second.status) == (True, "claimed")
    else:  # the first claim never happened: the second one is the only winner
        assert (second.won, second.status) == (True, None)
    async with await psycopg.AsyncConnection.connect(dsn, autocommit=True) as check:
        marks = [await mark_calling(check, [key(r)]) for _ in range(2)]
        assert marks == [{key(r)}, set()]
    async with await psycopg.AsyncConnection.connect(dsn) as check:
        cur = await check.execute(
            "SELECT count(*) FROM send_ledger WHERE campaign_id = %s", (r.campaign_id,)
        )
        assert await cur.fetchone() == (1,)


@pytest.mark.parametrize(
    ("state", "at", "moved_on"),
    [
        ("in_sequence", 2, False),  # at this touch: may send
        ("in_sequence", 3, True),  # past it
        ("reconcile", 2, True),  # its outcome is in doubt: an operator decides
        ("replied", 2, True),  # ended
        ("opted_out", 1, True),
        (None, 0, False),  # no row yet: the state table decides
    ],
)
async def test_no_claim_for_a_lead_postgres_has_ended_or_past_the_touch(
    dsn: str, conn: Conn, state: str | None, at: int, moved_on: bool
) -> None:
    """A state table rebuilt behind the Postgres mirror after a crash must not
    send to a lead that replied or moved on."""
    r = request(new_campaign(dsn), touch=2)
    if state is not None:
        await conn.execute(
            "INSERT INTO leads (campaign_id, lead_id, state, touch, version) "
            "VALUES (%s, %s, %s, %s, 7)",
            (r.campaign_id, r.lead_id, state, at),
        )
    [c] = await claim(conn, [r])
    assert (c.won, c.blocked) == ((False, "lead_moved_on") if moved_on else (True, None))
    assert (await ledger_row(conn, r) is None) is moved_on
