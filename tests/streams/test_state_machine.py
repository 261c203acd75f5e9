"""Every state-machine transition, legal and illegal."""

from __future__ import annotations

import itertools

import pytest

from streams.errors import IllegalTransitionError
from streams.state_machine import (
    ALLOWED,
    TERMINAL,
    LeadState,
    State,
    is_terminal,
    new_lead,
    transition,
)

LEGAL = {
    (State.NEW, State.ENRICHED),
    (State.NEW, State.DUPLICATE),
    (State.NEW, State.INVALID),
    (State.ENRICHED, State.QUALIFIED),
    (State.ENRICHED, State.DISQUALIFIED),
    (State.QUALIFIED, State.IN_SEQUENCE),
    (State.IN_SEQUENCE, State.IN_SEQUENCE),
    (State.IN_SEQUENCE, State.COMPLETED),
    (State.IN_SEQUENCE, State.REPLIED),
    (State.IN_SEQUENCE, State.FAILED),
    (State.IN_SEQUENCE, State.RECONCILE),
    (State.RECONCILE, State.IN_SEQUENCE),
    (State.RECONCILE, State.COMPLETED),
    (State.RECONCILE, State.REPLIED),
    (State.RECONCILE, State.FAILED),
} | {
    (src, dst)
    for src in (State.NEW, State.ENRICHED, State.QUALIFIED, State.IN_SEQUENCE, State.RECONCILE)
    for dst in (State.OPTED_OUT, State.QUARANTINED, State.CANCELLED)
}

ALL_PAIRS = list(itertools.product(State, State))


def _at(state: State, touch: int = 0) -> LeadState:
    return LeadState("c1", "l1", state, touch=touch, updated_at_ms=1, version=3)


def test_table_matches_the_documented_machine() -> None:
    table = {(src, dst) for src, dsts in ALLOWED.items() for dst in dsts}
    assert table == LEGAL
    assert set(ALLOWED) == set(State)


@pytest.mark.parametrize(("src", "dst"), sorted(LEGAL))
def test_legal_transition_applies(src: State, dst: State) -> None:
    current = _at(src, touch=2 if src in (State.IN_SEQUENCE, State.RECONCILE) else 0)
    touch = 3 if (src, dst) == (State.IN_SEQUENCE, State.IN_SEQUENCE) else None
    reason = "provider outcome unknown" if dst is State.RECONCILE else None
    after = transition(current, dst, at_ms=99, touch=touch, reason=reason)
    assert after.state is dst
    assert after.version == current.version + 1
    assert after.updated_at_ms == 99
    assert after.terminal == (dst in TERMINAL)


@pytest.mark.parametrize(("src", "dst"), sorted(set(ALL_PAIRS) - LEGAL))
def test_illegal_transition_is_refused(src: State, dst: State) -> None:
    current = _at(src)
    with pytest.raises(IllegalTransitionError) as info:
        transition(current, dst, at_ms=5, reason="x", touch=1)
    assert f"{src.value} -> {dst.value}" in str(info.value)


def test_terminal_states_have_no_way_out() -> None:
    for state in TERMINAL:
        assert ALLOWED[state] == frozenset()
        assert is_terminal(state)
    assert not is_terminal("reconcile")


def test_touch_must_advance_by_one() -> None:
    current = _at(State.IN_SEQUENCE, touch=2)
    assert transition(current, State.IN_SEQUENCE, at_ms=1, touch=3).touch == 3
    for bad in (2, 4, 1):
        with pytest.raises(IllegalTransitionError, match="touch must advance from 2 to 3"):
            transition(current, State.IN_SEQUENCE, at_ms=1, touch=bad)


def test_entering_the_sequence_starts_at_touch_one() -> None:
    assert transition(_at(State.QUALIFIED), State.IN_SEQUENCE, at_ms=1).touch == 1


def test_reconcile_needs_a_reason() -> None:
    with pytest.raises(IllegalTransitionError, match="needs a reason"):
        transition(_at(State.IN_SEQUENCE, 1), State.RECONCILE, at_ms=1)


def test_a_full_happy_path_and_record_round_trip() -> None:
    lead = new_lead("c1", "l1", at_ms=10)
    for step, touch in (
        (State.ENRICHED, None),
        (State.QUALIFIED, None),
        (State.IN_SEQUENCE, None),
        (State.IN_SEQUENCE, 2),
        (State.IN_SEQUENCE, 3),
        (State.COMPLETED, None),
    ):
        lead = transition(lead, step, at_ms=lead.updated_at_ms + 1, touch=touch)
    assert lead.state is State.COMPLETED and lead.touch == 3 and lead.version == 7
    assert LeadState.from_record(lead.to_record()) == lead
