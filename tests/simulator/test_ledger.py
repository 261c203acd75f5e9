"""simulator/ledger.py: recording, queries and duplicate detection."""

from __future__ import annotations

from typing import Any

from simulator.ledger import Ledger


def add(ledger: Ledger, mid: str, *, key: str | None, touch: int = 1, **kw: Any) -> None:
    fields: dict[str, Any] = {
        "channel": "sms",
        "campaign_id": "c1",
        "lead_id": "l1",
        "recipient": "+13125550123",
        "clock": None,
        "accepted_at": 0.0,
    }
    fields.update(kw)
    ledger.record(provider_message_id=mid, idempotency_key=key, touch=touch, **fields)


def test_distinct_messages_are_not_duplicates() -> None:
    ledger = Ledger()
    add(ledger, "m1", key="k1", touch=1)
    add(ledger, "m2", key="k2", touch=2)
    add(ledger, "m3", key="k3", touch=1, lead_id="l2")
    stats = ledger.stats()
    assert stats["messages"] == {"total": 3, "by_channel": {"sms": 3}}
    assert stats["duplicates"]["total"] == 0
    assert ledger.duplicate_groups() == []


def test_same_idempotency_key_is_a_duplicate() -> None:
    ledger = Ledger()
    add(ledger, "m1", key="k1", touch=1)
    add(ledger, "m2", key="k1", touch=1)
    dups = ledger.stats()["duplicates"]
    assert dups["by_idempotency_key"] == 1
    assert dups["total"] == 1  # one extra send, counted once though both rules match
    kinds = {g["kind"]: g["provider_message_ids"] for g in dups["groups"]}
    assert kinds["idempotency_key"] == ["m1", "m2"]


def test_same_touch_with_new_key_is_a_duplicate() -> None:
    ledger = Ledger()
    add(ledger, "m1", key="k1")
    add(ledger, "m2", key="k2")
    add(ledger, "m3", key=None, channel="email")
    dups = ledger.stats()["duplicates"]
    assert dups["by_idempotency_key"] == 0
    assert dups["by_campaign_lead_touch"] == 2
    assert dups["total"] == 2
    assert dups["groups"] == [
        {
            "kind": "campaign_lead_touch",
            "campaign_id": "c1",
            "lead_id": "l1",
            "touch": 1,
            "provider_message_ids": ["m1", "m2", "m3"],
        }
    ]


def test_queries_and_reset() -> None:
    ledger = Ledger()
    add(ledger, "m1", key="k1", channel="sms")
    add(ledger, "m2", key="k2", channel="email", touch=2)
    add(ledger, "m3", key="k3", lead_id="l2", touch=1)
    assert [m.provider_message_id for m in ledger.query(channel="email")] == ["m2"]
    assert [m.provider_message_id for m in ledger.query(lead_id="l1")] == ["m1", "m2"]
    assert ledger.query(idempotency_key="k3")[0].lead_id == "l2"
    latest = ledger.latest_for_lead("c1", "l1")
    assert latest is not None and latest.provider_message_id == "m2"
    first = ledger.first_with_key("k1")
    assert first is not None and first.provider_message_id == "m1"
    ledger.count("sms", "rate_limited")
    assert ledger.stats()["rate_limited_total"] == 1
    ledger.reset()
    assert ledger.stats()["messages"]["total"] == 0
    assert ledger.stats()["rate_limited_total"] == 0
    assert ledger.first_with_key("k1") is None
