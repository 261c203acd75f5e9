"""The per-lead state machine.

Every lead accepted into a campaign moves through these states and ends in
exactly one terminal state (``reconcile`` is the one non-terminal state a
lead may rest in, always with a reason, until an operator resolves it)::

    new ──► enriched ──► qualified ──► in_sequence(touch 1..n) ──► completed
     │          │            │              │  ▲
     │          │            │              │  └── next touch (k -> k+1)
     │          ▼            │              ├──► replied      (a reply stops the sequence)
     │     disqualified      │              ├──► failed       (no usable channel left)
     ├──► duplicate          │              └──► reconcile ──► in_sequence | completed | failed
     └──► invalid            │                  (ambiguous provider outcome: never re-sent blindly)
                             │
    any non-terminal state ──► opted_out | quarantined | cancelled

``transition`` is the only way to change a state; it raises
:class:`~streams.errors.IllegalTransitionError` for anything else, and the
caller records the refusal instead of applying it.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from datetime import datetime
from enum import StrEnum

from streams.errors import IllegalTransitionError

__all__ = [
    "ALLOWED",
    "TERMINAL",
    "LeadState",
    "State",
    "is_terminal",
    "new_lead",
    "transition",
]


class State(StrEnum):
    """Every state a lead can be in."""

    NEW = "new"
    ENRICHED = "enriched"
    QUALIFIED = "qualified"
    IN_SEQUENCE = "in_sequence"
    RECONCILE = "reconcile"
    # terminal
    DISQUALIFIED = "disqualified"
    DUPLICATE = "duplicate"
    INVALID = "invalid"
    COMPLETED = "completed"
    REPLIED = "replied"
    OPTED_OUT = "opted_out"
    QUARANTINED = "quarantined"
    FAILED = "failed"
    CANCELLED = "cancelled"


TERMINAL: frozenset[State] = frozenset(
    {
        State.DISQUALIFIED,
        State.DUPLICATE,
        State.INVALID,
        State.COMPLETED,
        State.REPLIED,
        State.OPTED_OUT,
        State.QUARANTINED,
        State.FAILED,
        State.CANCELLED,
    }
)

#: Reachable from every non-terminal state.
_ALWAYS = frozenset({State.OPTED_OUT, State.QUARANTINED, State.CANCELLED})

ALLOWED: dict[State, frozenset[State]] = {
    State.NEW: _ALWAYS | {State.ENRICHED, State.DUPLICATE, State.INVALID},
    State.ENRICHED: _ALWAYS | {State.QUALIFIED, State.DISQUALIFIED},
    State.QUALIFIED: _ALWAYS | {State.IN_SEQUENCE},
    State.IN_SEQUENCE: _ALWAYS
    | {State.IN_SEQUENCE, State.COMPLETED, State.REPLIED, State.FAILED, State.RECONCILE},
    State.RECONCILE: _ALWAYS | {State.IN_SEQUENCE, State.COMPLETED, State.REPLIED, State.FAILED},
    **{t: frozenset() for t in TERMINAL},
}


@dataclass(frozen=True)
class LeadState:
    """A lead's current state (the value of the state table)."""

    campaign_id: str
    lead_id: str
    state: State
    touch: int = 0
    reason: str | None = None
    updated_at_ms: int = 0
    version: int = 0

    @property
    def terminal(self) -> bool:
        """True once the lead has reached its final state."""
        return self.state in TERMINAL

    def to_record(self) -> dict[str, object]:
        """The ``leadflow.LeadState`` Avro record."""
        return {
            "campaign_id": self.campaign_id,
            "lead_id": self.lead_id,
            "state": self.state.value,
            "touch": self.touch,
            "reason": self.reason,
            "updated_at": self.updated_at_ms,
            "version": self.version,
        }

    @classmethod
    def from_record(cls, record: dict[str, object]) -> LeadState:
        """Inverse of :meth:`to_record`."""
        updated = record["updated_at"]
        if isinstance(updated, datetime):
            updated_ms = int(updated.timestamp() * 1000)
        else:
            updated_ms = int(str(updated))
        return cls(
            campaign_id=str(record["campaign_id"]),
            lead_id=str(record["lead_id"]),
            state=State(str(record["state"])),
            touch=int(str(record.get("touch") or 0)),
            reason=None if record.get("reason") is None else str(record["reason"]),
            updated_at_ms=updated_ms,
            version=int(str(record.get("version") or 0)),
        )


def is_terminal(state: State | str) -> bool:
    """True for a terminal state."""
    return State(state) in TERMINAL


def new_lead(campaign_id: str, lead_id: str, at_ms: int) -> LeadState:
    """The first state of an accepted lead."""
    return LeadState(campaign_id, lead_id, State.NEW, updated_at_ms=at_ms, version=1)


def transition(
    current: LeadState,
    to: State | str,
    *,
    at_ms: int,
    touch: int | None = None,
    reason: str | None = None,
) -> LeadState:
    """The state after moving ``current`` to ``to``, or IllegalTransitionError.

    ``in_sequence`` carries the touch number: entering it starts at touch 1 (or
    the given touch) and ``in_sequence -> in_sequence`` must advance the touch
    by exactly one. ``reconcile`` needs a reason.
    """
    target = State(to)
    if target not in ALLOWED[current.state]:
        raise IllegalTransitionError(current.state.value, target.value)
    new_touch = current.touch if touch is None else touch
    if target is State.IN_SEQUENCE:
        if current.state is State.IN_SEQUENCE and new_touch != current.touch + 1:
            raise IllegalTransitionError(
                current.state.value,
                target.value,
                f"touch must advance from {current.touch} to {current.touch + 1}, got {new_touch}",
            )
        if current.state is State.QUALIFIED:
            new_touch = touch if touch is not None else 1
        if new_touch < 1:
            raise IllegalTransitionError(current.state.value, target.value, "touch must be >= 1")
    if target is State.RECONCILE and not reason:
        raise IllegalTransitionError(current.state.value, target.value, "reconcile needs a reason")
    return replace(
        current,
        state=target,
        touch=new_touch,
        reason=reason,
        updated_at_ms=at_ms,
        version=current.version + 1,
    )
