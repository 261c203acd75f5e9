"""The cost ledger: per provider, per campaign, cache savings, thread safety."""

from __future__ import annotations

import threading

import pytest

from providers.cost import Charge, CostLedger


def test_calls_and_charges_are_counted_per_provider_and_campaign() -> None:
    ledger = CostLedger()
    ledger.record_call("sms", ok=True)
    ledger.record_call("sms", ok=False)
    ledger.charge("sms", [Charge("c1", 1.0), Charge("c2", 1.0)])
    ledger.charge("voice", [Charge("c1", 3.0)])
    snap = ledger.snapshot()
    assert snap.by_provider["sms"].calls == 2
    assert snap.by_provider["sms"].failed_calls == 1
    assert snap.by_provider["sms"].units == 2.0
    assert snap.by_campaign[("c1", "sms")].units == 1.0
    assert snap.campaign_units("c1") == 4.0


def test_cache_hits_record_saved_calls() -> None:
    ledger = CostLedger()
    ledger.record_cache_hits("enrichment", "c1", hits=40, saved_units=20.0)
    ledger.record_cache_hits("enrichment", "c1", hits=0, saved_units=5.0)  # ignored
    snap = ledger.snapshot()
    assert snap.by_provider["enrichment"].cache_hits == 40
    assert snap.by_campaign[("c1", "enrichment")].cache_saved_units == 20.0


def test_drain_returns_deltas_and_resets() -> None:
    ledger = CostLedger()
    ledger.charge("sms", [Charge("c1", 1.0)])
    first = ledger.drain()
    assert first.by_provider["sms"].units == 1.0
    assert ledger.snapshot().by_provider == {}


def test_ledger_is_thread_safe() -> None:
    ledger = CostLedger()

    def work() -> None:
        for _ in range(500):
            ledger.record_call("sms", ok=True)
            ledger.charge("sms", [Charge("c1", 0.5)])

    threads = [threading.Thread(target=work) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    snap = ledger.snapshot()
    assert snap.by_provider["sms"].calls == 2000
    assert snap.by_campaign[("c1", "sms")].units == pytest.approx(1000.0)
