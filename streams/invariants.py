"""The invariants leadflow promises, checked from the outside.

One checker for the end-to-end tests, the demo report and the fault suite.
It reads the provider's record of accepted messages (the simulator's ledger,
``GET /_sim/messages``), the Postgres tables and, for I5, the state table's
changelog topic:

- **I1** at most one accepted send per (campaign, lead, touch);
- **I2** every accepted lead is in exactly one terminal state, or in
  ``reconcile`` with a reason; none unaccounted for;
- **I3** no send accepted after the lead's opt-out was recorded (the one
  opt-out confirmation, touch 0, is allowed);
- **W**  no SMS or voice touch outside 08:00-21:00 in the lead's local time;
- **I5** the state table (its changelog) agrees with Postgres for every lead.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, time
from typing import Any
from zoneinfo import ZoneInfo

import psycopg

from streams.state_machine import TERMINAL, State
from streams.topic_reader import read_to_end

__all__ = ["Check", "check_campaign", "read_state_changelog"]

_EARLIEST, _LATEST = time(8, 0), time(21, 0)


@dataclass(frozen=True)
class Check:
    """One invariant's verdict."""

    name: str
    ok: bool
    count: int
    detail: str

    def line(self) -> str:
        """One table row."""
        return f"{self.name:<4} {'pass' if self.ok else 'FAIL':<5} {self.count:>7}  {self.detail}"


def check_campaign(
    dsn: str,
    campaign_id: str,
    messages: Sequence[Mapping[str, Any]],
    *,
    accepted_leads: Iterable[str] | None = None,
    changelog: Mapping[tuple[str, str], Mapping[str, Any]] | None = None,
) -> list[Check]:
    """Check I1, I2, I3, W (and I5 when ``changelog`` is given) for one campaign."""
    msgs = [m for m in messages if m.get("campaign_id") == campaign_id]
    with psycopg.connect(dsn) as conn:
        leads = {
            str(lead): (str(state), reason, tz, version)
            for lead, state, reason, tz, version in conn.execute(
                "SELECT lead_id, state, reason, timezone, version FROM leads "
                "WHERE campaign_id = %s",
                (campaign_id,),
            )
        }
        opt_outs = {
            str(lead): recorded
            for lead, recorded in conn.execute(
                "SELECT l.lead_id, min(o.recorded_at) FROM opt_outs o "
                "JOIN leads l ON l.identity_key = o.identity_key AND l.campaign_id = %s "
                "GROUP BY l.lead_id",
                (campaign_id,),
            )
        }
    checks = [_i1(msgs), _i2(leads, accepted_leads), _i3(msgs, opt_outs), _windows(msgs, leads)]
    if changelog is not None:
        checks.append(_i5(campaign_id, leads, changelog))
    return checks


def _i1(msgs: Sequence[Mapping[str, Any]]) -> Check:
    counts = Counter((m["lead_id"], int(m["touch"])) for m in msgs if int(m["touch"]) >= 1)
    dupes = sum(1 for n in counts.values() if n > 1)
    return Check(
        "I1",
        dupes == 0,
        dupes,
        f"(campaign, lead, touch) sent more than once, of {len(counts)} sent",
    )


def _i2(leads: Mapping[str, tuple[str, Any, Any, Any]], accepted: Iterable[str] | None) -> Check:
    terminal = {s.value for s in TERMINAL}
    open_leads = [
        lead
        for lead, (state, reason, _, _) in leads.items()
        if state not in terminal and not (state == State.RECONCILE.value and reason)
    ]
    missing = [] if accepted is None else [lead for lead in accepted if lead not in leads]
    bad = len(open_leads) + len(missing)
    by_state = Counter(state for state, _, _, _ in leads.values())
    summary = ", ".join(f"{s} {n}" for s, n in sorted(by_state.items()))
    return Check(
        "I2",
        bad == 0,
        bad,
        f"not terminal: {len(open_leads)}, unaccounted: {len(missing)} ({summary})",
    )


def _i3(msgs: Sequence[Mapping[str, Any]], opt_outs: Mapping[str, datetime]) -> Check:
    late = [
        m
        for m in msgs
        if int(m["touch"]) >= 1
        and m["lead_id"] in opt_outs
        and float(m["accepted_at"]) > opt_outs[m["lead_id"]].timestamp()
    ]
    return Check(
        "I3",
        not late,
        len(late),
        f"sends accepted after the opt-out was recorded ({len(opt_outs)} opt-outs)",
    )


def _windows(
    msgs: Sequence[Mapping[str, Any]], leads: Mapping[str, tuple[str, Any, Any, Any]]
) -> Check:
    outside = 0
    checked = 0
    for m in msgs:
        if m["channel"] not in ("sms", "voice") or int(m["touch"]) < 1 or not m.get("clock"):
            continue
        zone = leads.get(m["lead_id"], (None, None, None, None))[2] or "America/New_York"
        local = datetime.fromisoformat(str(m["clock"])).astimezone(ZoneInfo(str(zone)))
        checked += 1
        if not _EARLIEST <= local.time() < _LATEST:
            outside += 1
    return Check(
        "W", outside == 0, outside, f"SMS/voice touches outside 08:00-21:00 local, of {checked}"
    )


def _i5(
    campaign_id: str,
    leads: Mapping[str, tuple[str, Any, Any, Any]],
    changelog: Mapping[tuple[str, str], Mapping[str, Any]],
) -> Check:
    mine = {lead: rec for (campaign, lead), rec in changelog.items() if campaign == campaign_id}
    differ = [
        lead
        for lead, (state, _, _, version) in leads.items()
        if lead not in mine
        or mine[lead]["state"] != state
        or int(mine[lead]["version"]) != int(version)
    ]

    def both(lead: str) -> str:
        table = mine.get(lead)
        seen = "absent" if table is None else f"{table['state']} v{table['version']}"
        return f"{lead}: postgres {leads[lead][0]} v{leads[lead][3]}, table {seen}"

    return Check(
        "I5",
        not differ,
        len(differ),
        f"leads whose table state differs from Postgres, of {len(leads)}"
        + (f" ({'; '.join(both(lead) for lead in differ[:3])})" if differ else ""),
    )


def read_state_changelog(
    bootstrap: str, topic: str, timeout_s: float = 30.0
) -> dict[tuple[str, str], Any]:
    """Last ``LeadState`` per (campaign, lead) in the state table's changelog topic."""
    from streams.codec import AvroCodec

    codec = AvroCodec("leadflow.LeadState", subject=topic)
    state: dict[bytes, Any] = {}
    for key, value in read_to_end(bootstrap, topic, timeout_s):
        if value is None:
            state.pop(key or b"", None)
        else:
            state[key or b""] = codec.decode(value)
    return {(str(r["campaign_id"]), str(r["lead_id"])): r for r in state.values()}
