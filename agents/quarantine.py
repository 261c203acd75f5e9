"""A lead whose record a stage dead-letters is quarantined, never left open.

Without this, a lead whose ``touch-due`` (say) failed in a way no retry
fixes would sit in ``in_sequence`` for ever: never contacted again, never
finished, invisible to the campaign's completion. The stages that own lead
state mix :class:`QuarantinesDeadLetters` in; the runner calls
:meth:`~QuarantinesDeadLetters.on_dead_letter` with the batch's failures
before it produces their dead letters. The lead ends ``quarantined`` with the
reason ``dead_lettered:<reason>``; a lead already ended, or never known
(a record that could not be read, an unknown campaign), is left alone.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, ClassVar

from agents.lead_states import Step
from agents.runtime import Item, error_reason, hold_until_done
from sinks.lead_state import StateChange, write_state_changes
from streams.state_machine import TERMINAL, State

if TYPE_CHECKING:
    from agents.context import PipelineContext

__all__ = ["QuarantinesDeadLetters"]


class QuarantinesDeadLetters:
    """Mixin for a :class:`~agents.runtime.Stage` with a ``ctx``: quarantine dead-lettered leads."""

    name: ClassVar[str]
    ctx: PipelineContext

    async def on_dead_letter(self, failures: Sequence[tuple[Item, BaseException]]) -> None:
        """End each failed item's open lead as ``quarantined`` (table, then mirror)."""
        changes: list[StateChange] = []
        now_ms = self.ctx.clock.now_ms()
        for item, exc in failures:
            if not item.campaign_id:
                continue
            current = self.ctx.states.get(item.campaign_id, item.lead_id)
            if current is None or current.state in TERMINAL:
                continue
            step = Step(State.QUARANTINED, reason=f"dead_lettered:{error_reason(exc)}")
            applied = self.ctx.states.advance(item, [step], at_ms=now_ms)
            changes += [StateChange(a.before, a.after) for a in applied]
        if not changes:
            return
        db = self.ctx.db(self.name)

        async def mirror() -> None:
            async with db.transaction() as conn:
                await write_state_changes(conn, changes)

        await hold_until_done(mirror, f"{self.name}: quarantine")
