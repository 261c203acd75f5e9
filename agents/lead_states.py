"""The per-lead state table, as the stages use it.

The table (declared in :mod:`agents.topology`) maps (campaign, lead) -> the
``leadflow.LeadState`` record (lead ids are unique only within a campaign)
and is backed by a compacted changelog topic.
Stages change it only through :meth:`LeadStates.advance`, which applies the
state machine (:mod:`streams.state_machine`) and is **idempotent**: steps the
lead has already passed are skipped, so at-least-once redelivery and replays
never move a lead backwards or twice. A lead in a terminal state stays there.

Faust writes a table's changelog to the partition of the *current event*.
Stages handle events in batches, so each write first makes its own event the
current one; otherwise a batch spanning partitions would write changelog
records to the wrong partition.
"""

from __future__ import annotations

import weakref
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

from faust.streams import _current_event

from agents.runtime import Item
from streams.errors import IllegalTransitionError
from streams.state_machine import TERMINAL, LeadState, State, new_lead, transition

__all__ = ["Applied", "LeadStates", "Step", "rank", "table_key"]


@dataclass(frozen=True)
class Step:
    """A state a stage wants the lead to reach."""

    state: State
    touch: int | None = None
    reason: str | None = None


@dataclass(frozen=True)
class Applied:
    """A transition that was applied (``before`` is None for a new lead)."""

    before: LeadState | None
    after: LeadState


_RANK = {
    State.NEW: 0,
    State.ENRICHED: 1,
    State.QUALIFIED: 2,
    State.IN_SEQUENCE: 3,
    State.RECONCILE: 3,
}


def rank(state: State, touch: int = 0) -> float:
    """Progress through the pipeline: later states and later touches rank higher."""
    if state in TERMINAL:
        return 100.0
    base = _RANK[state] + (touch / 1000 if state in (State.IN_SEQUENCE, State.RECONCILE) else 0)
    # reconcile(k) comes after in_sequence(k) and before in_sequence(k + 1)
    return base + (0.0005 if state is State.RECONCILE else 0)


def table_key(campaign_id: str, lead_id: str) -> bytes:
    """The state table's key: lead ids are unique only within their campaign."""
    return f"{campaign_id}\x1f{lead_id}".encode()


@contextmanager
def current_event(event: Any) -> Iterator[None]:
    """Make ``event`` Faust's current event (so table writes go to its partition)."""
    token = _current_event.set(weakref.ref(event))
    try:
        yield
    finally:
        _current_event.reset(token)


class LeadStates:
    """Read and advance leads in the state table."""

    def __init__(self, table: Any) -> None:
        self.table = table

    def get(self, campaign_id: str, lead_id: str) -> LeadState | None:
        """The lead's state, or None when the table has never seen it."""
        raw = self.table.get(table_key(campaign_id, lead_id))
        return None if raw is None else LeadState.from_record(raw)

    def advance(
        self, item: Item, steps: Sequence[Step], *, at_ms: int, create: bool = False
    ) -> list[Applied]:
        """Apply each step the lead has not passed yet; return what was applied.

        ``create`` makes an unknown lead ``new`` first (the enrich stage).
        Raises :class:`IllegalTransitionError` for a step the machine forbids
        from the current state (nothing is applied in that case).
        """
        campaign_id = item.campaign_id or ""
        current = self.get(campaign_id, item.lead_id)
        planned: list[Applied] = []
        if current is None:
            if not create:
                raise IllegalTransitionError(None, steps[0].state.value, "unknown lead")
            current = new_lead(campaign_id, item.lead_id, at_ms)
            planned.append(Applied(None, current))
        for step in steps:
            if current.state in TERMINAL:
                break
            if step.state not in TERMINAL and rank(current.state, current.touch) >= rank(
                step.state, step.touch or 0
            ):
                continue
            after = transition(
                current, step.state, at_ms=at_ms, touch=step.touch, reason=step.reason
            )
            planned.append(Applied(current, after))
            current = after
        if planned:
            with current_event(item.event):
                self.table[table_key(campaign_id, item.lead_id)] = current.to_record()
        return planned
