"""LeadStates (agents/lead_states.py): idempotent advances over a dict-like fake table."""

from __future__ import annotations

import itertools
from typing import Any

import faust.streams
import pytest
from fakes import FakeEvent, FakeMessage, FakeTable

from agents.lead_states import Applied, LeadStates, Step, current_event, rank, table_key
from agents.runtime import Item
from streams.errors import IllegalTransitionError
from streams.state_machine import TERMINAL, LeadState, State

CAMPAIGN = "c1"
LEAD = "l1"
_offsets = itertools.count()


def make_item(lead_id: str = LEAD, campaign_id: str | None = CAMPAIGN, partition: int = 0) -> Item:
    offset = next(_offsets)
    event = FakeEvent(FakeMessage("t", partition, offset, lead_id.encode(), b""))
    record: dict[str, Any] = {"lead_id": lead_id}
    if campaign_id is not None:
        record["campaign_id"] = campaign_id
    return Item(event, "t", partition, offset, lead_id.encode(), b"", 1, record)


class RecordingTable(FakeTable):
    """Also records every write, with Faust's current event at the time."""

    def __init__(self) -> None:
        super().__init__()
        self.writes: list[tuple[bytes, dict[str, Any], Any]] = []

    def __setitem__(self, key: bytes, value: dict[str, Any]) -> None:
        self.writes.append((key, value, faust.streams.current_event()))
        super().__setitem__(key, value)


def stored(
    table: RecordingTable,
    state: State,
    touch: int = 0,
    *,
    reason: str | None = None,
    version: int = 3,
    lead_id: str = LEAD,
) -> LeadState:
    """Put a lead in ``state`` into the table."""
    lead = LeadState(CAMPAIGN, lead_id, state, touch, reason, updated_at_ms=5, version=version)
    table.put(lead)
    table.writes.clear()  # setup, not a write under test
    return lead


@pytest.fixture
def table() -> RecordingTable:
    return RecordingTable()


@pytest.fixture
def states(table: RecordingTable) -> LeadStates:
    return LeadStates(table)


# --- creating and refusing ----------------------------------------------------------------


def test_create_makes_an_unknown_lead_new_then_applies_the_steps(
    states: LeadStates, table: RecordingTable
) -> None:
    applied = states.advance(make_item(), [Step(State.ENRICHED)], at_ms=1_000, create=True)
    assert [(a.before, a.after.state) for a in applied] == [
        (None, State.NEW),
        (applied[0].after, State.ENRICHED),
    ]
    new = applied[0].after
    assert (new.campaign_id, new.lead_id, new.version, new.updated_at_ms) == (
        CAMPAIGN,
        LEAD,
        1,
        1_000,
    )
    assert table.state_of(LEAD) == applied[-1].after
    assert applied[-1].after.version == 2
    assert len(table.writes) == 1  # one write per advance, with the final state


def test_create_without_steps_stores_the_new_lead(
    states: LeadStates, table: RecordingTable
) -> None:
    applied = states.advance(make_item(), [], at_ms=7, create=True)
    assert [a.after.state for a in applied] == [State.NEW]
    lead = table.state_of(LEAD)
    assert lead is not None
    assert lead.state is State.NEW


def test_create_does_not_reset_a_known_lead(states: LeadStates, table: RecordingTable) -> None:
    before = stored(table, State.QUALIFIED)
    applied = states.advance(make_item(), [Step(State.IN_SEQUENCE, 1)], at_ms=9, create=True)
    assert applied == [Applied(before, applied[0].after)]
    assert applied[0].after.state is State.IN_SEQUENCE
    assert applied[0].after.version == before.version + 1


def test_unknown_lead_without_create_is_refused(states: LeadStates, table: RecordingTable) -> None:
    with pytest.raises(IllegalTransitionError) as info:
        states.advance(make_item(), [Step(State.REPLIED, reason="reply")], at_ms=1)
    assert info.value.from_state is None
    assert info.value.to_state == "replied"
    assert table == {}
    assert table.writes == []


def test_campaign_of_a_new_lead_comes_from_the_item(states: LeadStates) -> None:
    [applied] = states.advance(make_item(campaign_id="camp-9"), [], at_ms=1, create=True)
    assert applied.after.campaign_id == "camp-9"


def test_get_reads_the_table(states: LeadStates, table: RecordingTable) -> None:
    assert states.get(CAMPAIGN, LEAD) is None
    lead = stored(table, State.ENRICHED)
    assert states.get(CAMPAIGN, LEAD) == lead


# --- idempotency under redelivery ---------------------------------------------------------


@pytest.mark.parametrize(
    ("steps", "final"),
    [
        ([Step(State.ENRICHED)], State.ENRICHED),
        ([Step(State.ENRICHED), Step(State.QUALIFIED, reason="tier:A")], State.QUALIFIED),
        (
            [Step(State.ENRICHED), Step(State.QUALIFIED), Step(State.IN_SEQUENCE, 1)],
            State.IN_SEQUENCE,
        ),
        ([Step(State.DUPLICATE, reason="duplicate_of:l0")], State.DUPLICATE),
    ],
    ids=["enrich", "score", "schedule", "duplicate"],
)
def test_advancing_twice_applies_once(
    states: LeadStates, table: RecordingTable, steps: list[Step], final: State
) -> None:
    first = states.advance(make_item(), steps, at_ms=10, create=True)
    after_first = dict(table)
    second = states.advance(make_item(), steps, at_ms=20, create=True)
    assert first[-1].after.state is final
    assert second == []
    assert dict(table) == after_first  # version and updated_at untouched
    assert len(table.writes) == 1


def test_steps_already_passed_are_skipped(states: LeadStates, table: RecordingTable) -> None:
    before = stored(table, State.QUALIFIED)
    steps = [Step(State.ENRICHED), Step(State.QUALIFIED), Step(State.IN_SEQUENCE, 1)]
    applied = states.advance(make_item(), steps, at_ms=30)
    assert [(a.before, a.after.state, a.after.touch) for a in applied] == [
        (before, State.IN_SEQUENCE, 1)
    ]


def test_a_stale_touch_is_skipped_not_refused(states: LeadStates, table: RecordingTable) -> None:
    stored(table, State.IN_SEQUENCE, 3)
    assert states.advance(make_item(), [Step(State.IN_SEQUENCE, 2)], at_ms=1) == []
    assert states.advance(make_item(), [Step(State.IN_SEQUENCE, 3)], at_ms=1) == []
    assert table.writes == []


def test_the_next_touch_is_applied_once(states: LeadStates, table: RecordingTable) -> None:
    stored(table, State.IN_SEQUENCE, 2)
    [applied] = states.advance(make_item(), [Step(State.IN_SEQUENCE, 3)], at_ms=50)
    assert (applied.after.touch, applied.after.updated_at_ms) == (3, 50)
    assert states.advance(make_item(), [Step(State.IN_SEQUENCE, 3)], at_ms=60) == []
    lead = table.state_of(LEAD)
    assert lead is not None
    assert (lead.touch, lead.updated_at_ms) == (3, 50)


def test_reconcile_then_next_touch(states: LeadStates, table: RecordingTable) -> None:
    stored(table, State.IN_SEQUENCE, 2)
    step = Step(State.RECONCILE, touch=2, reason="ambiguous_provider_outcome")
    [applied] = states.advance(make_item(), [step], at_ms=1)
    assert (applied.after.state, applied.after.touch) == (State.RECONCILE, 2)
    assert applied.after.reason == "ambiguous_provider_outcome"
    assert states.advance(make_item(), [step], at_ms=2) == []  # redelivered: once
    # reconcile(2) is past in_sequence(2), before in_sequence(3)
    assert states.advance(make_item(), [Step(State.IN_SEQUENCE, 2)], at_ms=3) == []
    [resumed] = states.advance(make_item(), [Step(State.IN_SEQUENCE, 3)], at_ms=4)
    assert (resumed.before, resumed.after.state, resumed.after.touch) == (
        applied.after,
        State.IN_SEQUENCE,
        3,
    )


# --- terminal states ------------------------------------------------------------------------


@pytest.mark.parametrize("terminal", sorted(TERMINAL))
def test_a_terminal_lead_stays_put(
    states: LeadStates, table: RecordingTable, terminal: State
) -> None:
    stored(table, terminal)
    steps = [Step(State.IN_SEQUENCE, 1), Step(State.OPTED_OUT, reason="opt_out")]
    assert states.advance(make_item(), steps, at_ms=1, create=True) == []
    lead = table.state_of(LEAD)
    assert lead is not None
    assert lead.state is terminal
    assert table.writes == []


def test_a_terminal_step_ends_the_steps(states: LeadStates, table: RecordingTable) -> None:
    stored(table, State.IN_SEQUENCE, 4)
    steps = [Step(State.COMPLETED, reason="accepted:4"), Step(State.IN_SEQUENCE, 5)]
    applied = states.advance(make_item(), steps, at_ms=1)
    assert [a.after.state for a in applied] == [State.COMPLETED]
    lead = table.state_of(LEAD)
    assert lead is not None
    assert lead.state is State.COMPLETED


@pytest.mark.parametrize("start", [State.NEW, State.QUALIFIED, State.IN_SEQUENCE, State.RECONCILE])
def test_opt_out_applies_from_any_live_state(
    states: LeadStates, table: RecordingTable, start: State
) -> None:
    touch = 2 if start in (State.IN_SEQUENCE, State.RECONCILE) else 0
    stored(table, start, touch, reason="r" if start is State.RECONCILE else None)
    [applied] = states.advance(make_item(), [Step(State.OPTED_OUT, reason="opt_out")], at_ms=1)
    assert applied.after.state is State.OPTED_OUT
    assert applied.after.reason == "opt_out"


# --- illegal steps: raise, apply nothing -----------------------------------------------------


@pytest.mark.parametrize(
    ("start", "touch", "steps"),
    [
        (State.NEW, 0, [Step(State.QUALIFIED)]),
        (State.NEW, 0, [Step(State.COMPLETED)]),
        (State.NEW, 0, [Step(State.ENRICHED), Step(State.IN_SEQUENCE, 1)]),
        (State.ENRICHED, 0, [Step(State.REPLIED, reason="reply")]),
        (State.IN_SEQUENCE, 1, [Step(State.IN_SEQUENCE, 3)]),
        (State.IN_SEQUENCE, 1, [Step(State.RECONCILE, touch=1)]),  # no reason
        (State.QUALIFIED, 0, [Step(State.DISQUALIFIED, reason="below_threshold")]),
    ],
    ids=[
        "new-qualified",
        "new-completed",
        "enriched-then-illegal",
        "enriched-replied",
        "touch-skips",
        "reconcile-without-reason",
        "qualified-disqualified",
    ],
)
def test_a_forbidden_step_raises_and_applies_nothing(
    states: LeadStates, table: RecordingTable, start: State, touch: int, steps: list[Step]
) -> None:
    stored(table, start, touch)
    snapshot = dict(table)
    with pytest.raises(IllegalTransitionError):
        states.advance(make_item(), steps, at_ms=99)
    assert dict(table) == snapshot
    assert table.writes == []


def test_a_forbidden_step_after_create_leaves_no_new_lead(
    states: LeadStates, table: RecordingTable
) -> None:
    with pytest.raises(IllegalTransitionError) as info:
        states.advance(make_item(), [Step(State.REPLIED)], at_ms=1, create=True)
    assert (info.value.from_state, info.value.to_state) == ("new", "replied")
    assert table == {}


# --- rank ---------------------------------------------------------------------------------


def test_rank_orders_the_pipeline() -> None:
    order = [
        rank(State.NEW),
        rank(State.ENRICHED),
        rank(State.QUALIFIED),
        rank(State.IN_SEQUENCE, 1),
        rank(State.RECONCILE, 1),
        rank(State.IN_SEQUENCE, 2),
        rank(State.RECONCILE, 2),
        rank(State.IN_SEQUENCE, 3),
    ]
    assert order == sorted(order)
    assert len(set(order)) == len(order)


@pytest.mark.parametrize("k", [1, 2, 5, 19, 20, 99, 500])
def test_reconcile_k_is_between_touch_k_and_k_plus_1(k: int) -> None:
    assert rank(State.IN_SEQUENCE, k) < rank(State.RECONCILE, k) < rank(State.IN_SEQUENCE, k + 1)
    assert rank(State.RECONCILE, k) < rank(State.RECONCILE, k + 1)


@pytest.mark.parametrize("terminal", sorted(TERMINAL))
def test_terminal_states_rank_above_every_live_state(terminal: State) -> None:
    live = [rank(s, t) for s in State if s not in TERMINAL for t in (0, 1, 20)]
    assert rank(terminal) > max(live)
    assert rank(terminal, 7) == rank(terminal)


def test_touch_only_counts_in_sequence_and_reconcile() -> None:
    assert rank(State.ENRICHED, 5) == rank(State.ENRICHED)
    assert rank(State.QUALIFIED, 5) < rank(State.IN_SEQUENCE, 0)


# --- Faust's current event --------------------------------------------------------------


def test_current_event_sets_and_restores_faust_current_event() -> None:
    outer, inner = make_item().event, make_item().event
    assert faust.streams.current_event() is None
    with current_event(outer):
        assert faust.streams.current_event() is outer
        with current_event(inner):
            assert faust.streams.current_event() is inner
        assert faust.streams.current_event() is outer
    assert faust.streams.current_event() is None


def test_current_event_is_restored_after_an_error() -> None:
    outer, inner = make_item().event, make_item().event
    with current_event(outer):
        with pytest.raises(RuntimeError), current_event(inner):
            raise RuntimeError("boom")
        assert faust.streams.current_event() is outer


def test_each_table_write_happens_under_its_own_event(
    states: LeadStates, table: RecordingTable
) -> None:
    """A batch spanning partitions: each write sees its item's event, not the batch's last."""
    items = [make_item(f"l{p}", partition=p) for p in range(3)]
    batch_last = make_item("other", partition=7).event
    with current_event(batch_last):
        for item in items:
            states.advance(item, [Step(State.ENRICHED)], at_ms=1, create=True)
        assert faust.streams.current_event() is batch_last
    assert [(key, ev) for key, _, ev in table.writes] == [
        (table_key(item.campaign_id or "", item.lead_id), item.event) for item in items
    ]
    assert [value["state"] for _, value, _ in table.writes] == ["enriched"] * 3


def test_the_same_lead_id_in_two_campaigns_has_two_states(states: LeadStates) -> None:
    """Lead ids are unique only within a campaign: one campaign must not see the other's."""
    states.advance(make_item(LEAD, "first"), [Step(State.DUPLICATE)], at_ms=1, create=True)
    assert states.get("second", LEAD) is None
    applied = states.advance(
        make_item(LEAD, "second"), [Step(State.ENRICHED)], at_ms=2, create=True
    )
    assert [a.after.state for a in applied] == [State.NEW, State.ENRICHED]
    first, second = states.get("first", LEAD), states.get("second", LEAD)
    assert first is not None and first.state is State.DUPLICATE
    assert second is not None and second.state is State.ENRICHED
