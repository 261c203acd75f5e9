"""I4, and every invariant in one call.

:func:`streams.invariants.check_campaign` checks I1, I2, I3, W and I5 from
the simulator's ledger, Postgres and the state table's changelog. This adds

- **I4** consumer lag returns to 0 within a bound after the fault clears, and
  no partition is stuck: the worker group's committed offsets reach the end
  of every partition of every stage's input topic (:func:`streams.lag.stage_lag`).

:func:`check_all` runs I4 first (it needs the workers still running), then
the rest, and returns the verdicts in the order I1, I2, I3, I4, I5, W, then
I5p (:func:`check_table_partitions`: each lead's table record on one
changelog partition, which I5 cannot see because it reads the last record
per key).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from streams.errors import KafkaUnavailableError
from streams.invariants import Check, check_campaign, read_state_changelog
from streams.lag import PartitionLag, stage_lag
from streams.settings import Settings
from streams.topic_reader import read_records

__all__ = ["INVARIANTS", "check_all", "check_lag", "check_table_partitions"]

#: The invariants, in table order.
INVARIANTS = ("I1", "I2", "I3", "I4", "I5", "W")


async def check_lag(settings: Settings, bound_s: float, poll_s: float = 0.25) -> Check:
    """I4: wait up to ``bound_s`` for the worker group's lag to reach 0 on every partition.

    The count is the number of partitions still behind at the deadline.
    """
    started = time.monotonic()
    last: dict[str, list[PartitionLag]] = {}
    while True:
        try:
            last = await asyncio.to_thread(stage_lag, settings)
        except KafkaUnavailableError:
            last = {}
        behind = [p for rows in last.values() for p in rows if p.lag > 0]
        waited = time.monotonic() - started
        if last and not behind:
            partitions = sum(len(rows) for rows in last.values())
            return Check(
                "I4", True, 0, f"lag 0 on all {partitions} partitions after {waited:.1f} s"
            )
        if waited >= bound_s:
            break
        await asyncio.sleep(poll_s)
    if not last:
        return Check("I4", False, -1, f"could not read the group's lag within {bound_s:.0f} s")
    stuck = [
        f"{stage}[{p.partition}] {p.lag}{' (never committed)' if p.committed is None else ''}"
        for stage, rows in last.items()
        for p in rows
        if p.lag > 0
    ]
    shown = ", ".join(stuck[:6]) + (" ..." if len(stuck) > 6 else "")
    return Check("I4", False, len(stuck), f"partitions still behind after {bound_s:.0f} s: {shown}")


async def check_all(
    settings: Settings,
    campaign_id: str,
    messages: Sequence[Mapping[str, Any]],
    *,
    accepted_leads: Iterable[str] | None,
    lag_bound_s: float = 60.0,
    lag: Check | None = None,
) -> list[Check]:
    """I1-I5 and W for one campaign (I4 measured now unless ``lag`` is given)."""
    i4 = lag if lag is not None else await check_lag(settings, lag_bound_s)
    changelog = await asyncio.to_thread(
        read_state_changelog,
        settings.bootstrap_servers,
        settings.topic_name("leadflow-lead-state-changelog"),
    )
    checks = await asyncio.to_thread(
        check_campaign,
        settings.dsn,
        campaign_id,
        messages,
        accepted_leads=accepted_leads,
        changelog=changelog,
    )
    spread = await asyncio.to_thread(check_table_partitions, settings, campaign_id)
    by_name = {c.name: c for c in [*checks, i4]}
    return [*(by_name[name] for name in INVARIANTS if name in by_name), spread]


def check_table_partitions(settings: Settings, campaign_id: str, timeout_s: float = 30.0) -> Check:
    """I5, part two: each lead's state-table record lives on one changelog partition.

    Faust writes a table record to the partition of the event being handled.
    A lead whose events arrive on two partitions (a record keyed by something
    other than its lead id) gets two table records that two workers may own
    and that disagree; which one a restart restores depends on read order.
    """
    topic = settings.topic_name("leadflow-lead-state-changelog")
    prefix = f"{campaign_id}\x1f".encode()
    seen: dict[bytes, set[int]] = {}
    try:
        for record in read_records(settings.bootstrap_servers, topic, timeout_s):
            key = record.key or b""
            if key.startswith(prefix):
                seen.setdefault(key, set()).add(record.partition)
    except KafkaUnavailableError as exc:
        return Check("I5p", False, -1, f"cannot read {topic}: {exc}")
    split = sorted(
        k[len(prefix) :].decode(errors="replace") for k, ps in seen.items() if len(ps) > 1
    )
    return Check(
        "I5p",
        not split,
        len(split),
        f"leads whose table record is on more than one changelog partition, of {len(seen)}"
        + (f": {', '.join(split[:4])}" if split else ""),
    )
