"""Rendering a touch into the message a provider sends.

Templates come from the campaign (the variant chosen for the lead). Every
email ends with the sender's CAN-SPAM footer (company, postal address,
unsubscribe link) and carries a ``List-Unsubscribe`` header.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from streams.campaign import Campaign, render_template

__all__ = ["Rendered", "render_touch", "unsubscribe_token"]


@dataclass(frozen=True)
class Rendered:
    """The text of one touch (``subject`` for email only)."""

    text: str
    subject: str | None = None
    list_unsubscribe: str | None = None


def unsubscribe_token(campaign_id: str, lead_id: str) -> str:
    """An opaque, stable token for a lead's unsubscribe link (no contact data in it)."""
    return hashlib.sha256(f"unsub\x1f{campaign_id}\x1f{lead_id}".encode()).hexdigest()[:32]


def _values(campaign: Campaign, due: Mapping[str, Any], persona: str, token: str) -> dict[str, str]:
    sender = campaign.sender
    return {
        "first_name": due.get("first_name") or "there",
        "last_name": due.get("last_name") or "",
        "company": due.get("company") or "your company",
        "title": due.get("title") or "",
        "city": "",
        "state": due.get("state") or "",
        "persona": persona,
        "sender_company": sender.company,
        "postal_address": sender.postal_address or "",
        "unsubscribe_url": sender.unsubscribe_link(token) if sender.unsubscribe_url else "",
    }


def render_touch(campaign: Campaign, due: Mapping[str, Any]) -> Rendered:
    """The text for the ``TouchDue`` record ``due`` (its campaign, touch and variant)."""
    step = campaign.touch(int(due["touch"]))
    variant = next(
        (a for a in step.arms if a.name == (due.get("variant") or "default")), step.arms[0]
    )
    token = unsubscribe_token(str(due["campaign_id"]), str(due["lead_id"]))
    values = _values(campaign, due, step.persona_name, token)
    text = render_template(variant.template, values)
    if step.channel != "email":
        return Rendered(text)
    subject = render_template(variant.subject or f"A note from {step.persona_name}", values)
    subject = " ".join(subject.split())  # one line: lead data may carry CR/LF
    body = f"{text}\n\n{campaign.sender.email_footer(token)}"
    return Rendered(body, subject, f"<{campaign.sender.unsubscribe_link(token)}>")
