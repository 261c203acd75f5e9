"""The idempotency key: stable, distinct, free of personal data."""

from __future__ import annotations

import hashlib
import json

import pytest

from providers.base import SmsMessage
from providers.idempotency import KEY_PREFIX, idempotency_key


def test_key_is_the_documented_recipe() -> None:
    raw = json.dumps(["camp-1", "lead-9", 2], separators=(",", ":")).encode()
    assert (
        idempotency_key("camp-1", "lead-9", 2) == KEY_PREFIX + hashlib.sha256(raw).hexdigest()[:32]
    )


def test_key_is_stable() -> None:
    assert idempotency_key("c", "l", 1) == idempotency_key("c", "l", 1)
    assert len(idempotency_key("c", "l", 1)) == 36


@pytest.mark.parametrize("other", [("c2", "l", 1), ("c", "l2", 1), ("c", "l", 2), ("c-l", "", 1)])
def test_any_part_changes_the_key(other: tuple[str, str, int]) -> None:
    assert idempotency_key("c", "l", 1) != idempotency_key(*other)


def test_parts_do_not_run_together() -> None:
    assert idempotency_key("a-b", "c", 1) != idempotency_key("a", "b-c", 1)


def test_key_carries_no_personal_data() -> None:
    key = idempotency_key("campaign", "jane.doe@example.com", 1)
    assert "jane" not in key and "@" not in key


def test_negative_touch_is_refused() -> None:
    with pytest.raises(ValueError, match="touch"):
        idempotency_key("c", "l", -1)


def test_message_key_ignores_body_and_recipient() -> None:
    a = SmsMessage(campaign_id="c", lead_id="l", touch=1, to="+14155552671", body="one")
    b = SmsMessage(campaign_id="c", lead_id="l", touch=1, to="+14155552672", body="two")
    assert a.idempotency_key == b.idempotency_key == idempotency_key("c", "l", 1)
