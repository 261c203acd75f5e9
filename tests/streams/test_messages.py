"""Rendering touches (streams/messages.py): variants, placeholders, the CAN-SPAM footer."""

from __future__ import annotations

import copy
import re
from typing import Any

import pytest

from streams.campaign import Campaign, load_campaign, parse_campaign
from streams.messages import Rendered, render_touch, unsubscribe_token
from streams.settings import REPO_ROOT

#: Touch 1 sms (variants a-question, b-offer), 2 voice, 3 sms, 4 email with a subject.
EXAMPLE = load_campaign(REPO_ROOT / "examples" / "campaign.yaml")
ADDRESS = "1200 Commerce Drive, Suite 400, Columbus, OH 43215"
UNSUB_PREFIX = "https://brightline.example/unsubscribe/"
PHONE, EMAIL = "+15125550100", "ann.lee@acme-hvac.example"


def due(touch: int, **fields: Any) -> dict[str, Any]:
    """A TouchDue-like record for lead l-42 of the example campaign."""
    record: dict[str, Any] = {
        "campaign_id": EXAMPLE.id,
        "lead_id": "l-42",
        "touch": touch,
        "variant": None,
        "first_name": "Ann",
        "last_name": "Lee",
        "company": "Acme HVAC",
        "title": "Owner",
        "state": "OH",
        "to_phone": PHONE,
        "to_email": EMAIL,
    }
    record.update(fields)
    return record


def token() -> str:
    return unsubscribe_token(EXAMPLE.id, "l-42")


# --- sms and voice --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("variant", "start"),
    [
        ("a-question", "Hi Ann, this is Gianna from Brightline Home Services. Is Acme HVAC"),
        ("b-offer", "Hi Ann, Gianna here from Brightline Home Services. We send contractors"),
    ],
)
def test_sms_variant_is_chosen_by_name_and_filled(variant: str, start: str) -> None:
    rendered = render_touch(EXAMPLE, due(1, variant=variant))
    assert rendered.text.startswith(start)
    assert "like Acme HVAC" in rendered.text or "Is Acme HVAC" in rendered.text
    assert rendered.text.endswith("Reply STOP to opt out.")
    assert "{" not in rendered.text
    assert rendered.subject is None
    assert rendered.list_unsubscribe is None


def test_the_two_variants_differ() -> None:
    a = render_touch(EXAMPLE, due(1, variant="a-question")).text
    b = render_touch(EXAMPLE, due(1, variant="b-offer")).text
    assert a != b


@pytest.mark.parametrize("variant", [None, "", "default", "no-such-arm"])
def test_missing_or_unknown_variant_uses_the_first_arm(variant: str | None) -> None:
    expected = render_touch(EXAMPLE, due(1, variant="a-question"))
    assert render_touch(EXAMPLE, due(1, variant=variant)) == expected


def test_touch_without_variants_uses_its_template() -> None:
    rendered = render_touch(EXAMPLE, due(3, variant=None))
    assert rendered.text.startswith("Hi Ann, Cathy from Brightline Home Services following up")
    assert render_touch(EXAMPLE, due(3, variant="default")) == rendered


def test_voice_script_is_filled() -> None:
    rendered = render_touch(EXAMPLE, due(2))
    assert rendered == Rendered(
        "Hi Ann, this is Gianna calling from Brightline Home Services. I texted you "
        "yesterday about spring tune-up jobs for Acme HVAC. I'd love ten minutes this "
        "week; I'll send a short note with the details. Thanks!"
    )


def test_missing_lead_fields_get_friendly_fallbacks() -> None:
    rendered = render_touch(EXAMPLE, due(1, variant="b-offer", first_name=None, company=""))
    assert rendered.text.startswith("Hi there, Gianna here")
    assert "like your company pre-qualified" in rendered.text


def test_lead_data_is_not_expanded_as_a_template() -> None:
    rendered = render_touch(EXAMPLE, due(1, first_name="{sender_company}", company="{{x}}"))
    assert rendered.text.startswith("Hi {sender_company}, this is Gianna")
    assert "Is {{x}} booking" in rendered.text


def test_touch_out_of_range_is_refused() -> None:
    with pytest.raises(IndexError):
        render_touch(EXAMPLE, due(5))


# --- email -------------------------------------------------------------------------------


def test_email_subject_body_and_footer() -> None:
    rendered = render_touch(EXAMPLE, due(4))
    assert rendered.subject == "Ann, spring tune-up jobs for Acme HVAC"
    assert rendered.text.startswith("Hi Ann,\n\nI wanted to follow up one last time.")
    assert "HVAC contractors\nlike Acme HVAC pre-qualified" in rendered.text
    assert "Best,\nCathy\nBrightline Home Services\n\n" in rendered.text
    assert rendered.text.endswith(
        f"--\nBrightline Home Services\n{ADDRESS}\nUnsubscribe: {UNSUB_PREFIX}{token()}"
    )
    assert "{" not in rendered.text


def test_email_footer_comes_last_and_once() -> None:
    text = render_touch(EXAMPLE, due(4)).text
    assert text.count(ADDRESS) == 1
    assert text.count(UNSUB_PREFIX) == 1
    assert text.rindex(ADDRESS) > text.rindex("Best,")


def test_email_list_unsubscribe_header_value() -> None:
    rendered = render_touch(EXAMPLE, due(4))
    assert rendered.list_unsubscribe == f"<{UNSUB_PREFIX}{token()}>"
    assert re.fullmatch(r"<https://[^<>\s]+>", rendered.list_unsubscribe or "")


def test_email_link_is_per_lead() -> None:
    ann = render_touch(EXAMPLE, due(4))
    bob = render_touch(EXAMPLE, due(4, lead_id="l-43", first_name="Bob"))
    assert ann.list_unsubscribe != bob.list_unsubscribe
    assert bob.list_unsubscribe == f"<{UNSUB_PREFIX}{unsubscribe_token(EXAMPLE.id, 'l-43')}>"


def _email_campaign(subject: str | None, variants: list[dict[str, Any]] | None = None) -> Campaign:
    data = copy.deepcopy(EXAMPLE.to_dict())
    email = data["sequence"][3]
    email.pop("subject", None)
    if subject is not None:
        email["subject"] = subject
    if variants is not None:
        email.pop("template", None)
        email["variants"] = variants
    return parse_campaign(data, source="test")


def test_email_variant_subject_overrides_the_touch_subject() -> None:
    campaign = _email_campaign(
        "Touch subject for {first_name}",
        [
            {"name": "plain", "weight": 50, "template": "Plain body for {company}."},
            {
                "name": "bold",
                "weight": 50,
                "subject": "Bold subject for {company}",
                "template": "Bold body for {first_name}.",
            },
        ],
    )
    plain = render_touch(campaign, due(4, variant="plain"))
    bold = render_touch(campaign, due(4, variant="bold"))
    assert plain.subject == "Touch subject for Ann"
    assert plain.text.startswith("Plain body for Acme HVAC.\n\n--\n")
    assert bold.subject == "Bold subject for Acme HVAC"
    assert bold.text.startswith("Bold body for Ann.\n\n--\n")
    for rendered in (plain, bold):
        assert ADDRESS in rendered.text
        assert rendered.list_unsubscribe == f"<{UNSUB_PREFIX}{token()}>"


def test_default_campaign_email_has_footer_too() -> None:
    data = copy.deepcopy(EXAMPLE.to_dict())
    del data["sequence"]  # the built-in four-touch sequence
    campaign = parse_campaign(data, source="test")
    rendered = render_touch(campaign, due(4, campaign_id=campaign.id))
    assert rendered.subject == "Ann, one last note from Brightline Home Services"
    assert rendered.text.endswith(f"{ADDRESS}\nUnsubscribe: {UNSUB_PREFIX}{token()}")


def test_unsubscribe_url_placeholder_in_a_template() -> None:
    data = copy.deepcopy(EXAMPLE.to_dict())
    data["sequence"][2]["template"] = (
        "Hi {first_name}, {persona} here. Stop: {unsubscribe_url} or reply STOP to opt out."
    )
    campaign = parse_campaign(data, source="test")
    text = render_touch(campaign, due(3)).text
    assert f"Stop: {UNSUB_PREFIX}{token()} or" in text


def test_email_subject_is_one_line_whatever_the_lead_data() -> None:
    rendered = render_touch(EXAMPLE, due(4, first_name="Ann\r\nBcc: victim@example.com"))
    assert rendered.subject is not None
    assert "\n" not in rendered.subject
    assert "\r" not in rendered.subject


# --- unsubscribe_token ---------------------------------------------------------------------


def test_token_is_stable_and_opaque() -> None:
    first = unsubscribe_token("hvac-spring-tuneup", "l-42")
    assert first == unsubscribe_token("hvac-spring-tuneup", "l-42")
    assert re.fullmatch(r"[0-9a-f]{32}", first)
    # pinned: links in emails already sent must keep working after an upgrade
    assert first == "7c1ae05a49edf0fce2aab0d37a36e9d6"


def test_token_differs_by_lead_and_campaign() -> None:
    tokens = {
        unsubscribe_token("c1", "l1"),
        unsubscribe_token("c1", "l2"),
        unsubscribe_token("c2", "l1"),
        unsubscribe_token("c1l", "1"),  # the separator keeps these apart
        unsubscribe_token("c", "1l1"),
    }
    assert len(tokens) == 5


def test_token_contains_no_contact_data_and_ignores_it() -> None:
    tok = token()
    for secret in ("l-42", EXAMPLE.id, PHONE, PHONE[1:], EMAIL, "ann", "acme"):
        assert secret.lower() not in tok
    link = render_touch(EXAMPLE, due(4)).list_unsubscribe
    other_contact = render_touch(
        EXAMPLE, due(4, to_phone="+13125550199", to_email="x@y.example", first_name="Zed")
    ).list_unsubscribe
    assert link == other_contact
    assert link is not None
    assert EMAIL not in link
    assert PHONE not in link
