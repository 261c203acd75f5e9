"""Campaign files: the example, defaults, validation of the whole file, and the model's helpers."""

from __future__ import annotations

import copy
import json
import re
from collections import Counter
from datetime import datetime, time, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest

from streams.campaign import (
    DEFAULT_SEQUENCE,
    PLACEHOLDERS,
    WEEKDAYS,
    Campaign,
    CampaignValidationError,
    DailyWindow,
    Qualification,
    Touch,
    Variant,
    format_duration,
    load_campaign,
    parse_campaign,
    parse_duration,
    rate_problem,
    render_template,
)
from streams.errors import ConfigError, LeadflowError
from streams.settings import REPO_ROOT

EXAMPLE = REPO_ROOT / "examples" / "campaign.yaml"

SENDER: dict[str, Any] = {
    "company": "Acme Outreach",
    "postal_address": "12 Main St, Springfield, IL 62701",
    "unsubscribe_url": "https://acme.example/u/{token}",
    "email_from": "Cathy <cathy@acme.example>",
    "sms_from": "+15551230000",
}


def minimal() -> dict[str, Any]:
    """The smallest valid campaign: everything else defaults."""
    return {"id": "spring-1", "name": "Spring", "sender": dict(SENDER)}


def problems_of(data: object) -> list[tuple[str, str]]:
    with pytest.raises(CampaignValidationError) as info:
        parse_campaign(data, source="test")
    return [(p.path, p.message) for p in info.value.problems]


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "c.yaml"
    path.write_text(text, encoding="utf-8")
    return path


# --- the example and the defaults ------------------------------------------------------


def test_example_file_parses_as_documented() -> None:
    c = load_campaign(EXAMPLE)
    assert c.id == "hvac-spring-tuneup"
    assert [t.channel for t in c.sequence] == ["sms", "voice", "sms", "email"]
    assert [t.persona for t in c.sequence] == ["gianna", "gianna", "cathy", "cathy"]
    assert [c.offset_of(n) for n in (1, 2, 3, 4)] == [
        timedelta(0),
        timedelta(hours=24),
        timedelta(hours=48),
        timedelta(weeks=1),
    ]
    first = c.touch(1)
    assert [(v.name, v.weight) for v in first.variants] == [("a-question", 50), ("b-offer", 50)]
    assert c.touch(4).ai is True and c.touch(4).subject is not None
    assert c.channels["sms"].rate == "100/60"
    assert c.channels["sms"].daily_cap == 20000
    rate = c.channels["sms"].rate_limit()
    assert rate is not None and rate.interval == pytest.approx(0.6)
    assert c.budget_cost_units == 250000
    assert c.send_window.days == frozenset(WEEKDAYS) - {"sun"}
    assert c.window_for("FL") == DailyWindow(time(8), time(20), c.send_window.days)
    assert c.window_for("CT") == DailyWindow(time(9), time(21), c.send_window.days)
    assert c.sender.sms_from == "+16145550142"  # quoted in the file, so not a number


def test_omitted_sections_get_the_documented_defaults() -> None:
    c = parse_campaign(minimal())
    assert c.sequence == DEFAULT_SEQUENCE
    assert [(t.index, t.channel, t.persona, t.ai) for t in c.sequence] == [
        (1, "sms", "gianna", False),
        (2, "voice", "gianna", False),
        (3, "sms", "cathy", False),
        (4, "email", "cathy", True),
    ]
    # delays are relative to the previous touch ...
    assert [t.delay for t in c.sequence] == [
        timedelta(0),
        timedelta(hours=24),
        timedelta(hours=24),
        timedelta(hours=120),
    ]
    # ... so the touches land at +0, +24 h, +48 h and +1 week
    assert [c.offset_of(n) for n in (1, 2, 3, 4)] == [
        timedelta(0),
        timedelta(hours=24),
        timedelta(hours=48),
        timedelta(days=7),
    ]
    assert (c.send_window.start, c.send_window.end) == (time(8), time(21))
    assert c.send_window.days == frozenset(WEEKDAYS)
    assert c.window_for("FL").end == time(20)
    assert c.window_for("CT").start == time(9)
    assert c.qualification == Qualification(50.0, {"A": 80.0, "B": 65.0, "C": 50.0})
    assert {ch: s.rate for ch, s in c.channels.items()} == {
        "sms": "100/60",
        "voice": "60/60",
        "email": "100/60",
    }
    assert {ch: s.provider for ch, s in c.channels.items()} == {
        "sms": "http",
        "voice": "http",
        "email": "smtp",
    }
    assert c.budget_cost_units is None


def test_default_templates_fill_every_placeholder() -> None:
    values = {name: f"<{name}>" for name in PLACEHOLDERS}
    for touch in DEFAULT_SEQUENCE:
        for arm in touch.arms:
            text = render_template(arm.template, values)
            assert "{" not in text and "<first_name>" in text
            if touch.channel == "email":
                assert arm.subject is not None
                assert "<first_name>" in render_template(arm.subject, values)
            if touch.channel == "sms":
                assert "STOP" in text


def test_channel_fields_merge_with_the_channel_defaults() -> None:
    data = minimal()
    data["channels"] = {"sms": {"daily_cap": 500}, "voice": {"rate": None}}
    c = parse_campaign(data)
    assert c.channels["sms"].rate == "100/60" and c.channels["sms"].daily_cap == 500
    assert c.channels["voice"].rate is None and c.channels["voice"].rate_limit() is None
    assert c.channels["email"].provider == "smtp"


def test_state_rules_from_the_file_replace_only_those_states() -> None:
    data = minimal()
    data["send_window"] = {"states": {"FL": {"end": "19:00"}, "OK": {"no_sunday": True}}}
    c = parse_campaign(data)
    assert c.window_for("FL").end == time(19)
    assert c.window_for("FL").start == time(8)
    assert c.window_for("CT").start == time(9)  # built-in rule still applies
    assert "sun" not in c.window_for("OK").days
    assert "sun" in c.window_for("TX").days
    assert c.window_for(None) == c.window_for("TX")
    assert c.window_for("fl") == c.window_for("FL")


def test_state_rule_never_widens_the_campaign_window() -> None:
    data = minimal()
    data["send_window"] = {
        "start": "10:00",
        "end": "18:00",
        "days": ["mon", "tue", "wed"],
        "states": {"FL": {"start": "08:00", "end": "20:00", "days": ["tue", "sat"]}},
    }
    c = parse_campaign(data)
    assert c.window_for("FL") == DailyWindow(time(10), time(18), frozenset({"tue"}))


def test_unquoted_times_are_read_as_times_not_sexagesimal_numbers(tmp_path: Path) -> None:
    text = (
        EXAMPLE.read_text()
        .replace('end: "21:00"', "end: 21:00")
        .replace('start: "08:00"', "start: 08:00")
    )
    assert "end: 21:00" in text
    c = load_campaign(write(tmp_path, text))
    assert (c.send_window.start, c.send_window.end) == (time(8), time(21))


# --- validation --------------------------------------------------------------------------


BAD_FILE = """\
id: Spring_Campaign
name: Spring
sender:
  company: Acme
  postal_address: 12 Main St, Springfield, IL 62701
  unsubscribe_url: https://acme.example/u/{token}
  email_from: cathy@acme.example
  sms_from: "5551230000"
sequnce: []
sequence:
  - channel: sms
    delay: 0s
    persona: gianna
    template: "Hi {frist_name}"
  - channel: voice
    delay: 24x
    persona: gianna
    template: Hello
  - channel: fax
    delay: 1d
    persona: bob
    template: Hi
send_window:
  start: "07:00"
qualification:
  threshold: 101
channels:
  sms: {rate: fast}
budget_cost_units: -5
"""


def test_every_problem_is_reported_at_once_with_path_and_line(tmp_path: Path) -> None:
    path = write(tmp_path, BAD_FILE)
    with pytest.raises(CampaignValidationError) as info:
        load_campaign(path)
    err = info.value
    found = {p.path: p for p in err.problems}
    assert set(found) >= {
        "id",
        "sender.sms_from",
        "sequnce",
        "sequence[1].template",
        "sequence[2].delay",
        "sequence[3].channel",
        "sequence[3].persona",
        "send_window.start",
        "qualification.threshold",
        "channels.sms.rate",
        "budget_cost_units",
    }
    assert str(found["sequence[2].delay"]) == (
        "sequence[2].delay: '24x' is not a duration like 30m, 24h, 2d, 1w (line 16)"
    )
    assert found["sequnce"].line == 9 and "did you mean 'sequence'" in found["sequnce"].message
    assert "{first_name}" in found["sequence[1].template"].message
    assert found["sequence[3].channel"].line == 19
    lines = str(err).splitlines()
    assert lines[0] == f"{path}: {len(err.problems)} problems"
    assert len(lines) == len(err.problems) + 1 >= 12
    tagged = [
        line for line in lines[1:] if re.match(r"^  [a-z_]+[\w.\[\]]*: .+ \(line \d+\)$", line)
    ]
    assert len(tagged) == len(err.problems)
    assert [p.line for p in err.problems] == sorted(p.line or 0 for p in err.problems)
    assert isinstance(err, ConfigError) and isinstance(err, LeadflowError)


def base_with_sequence() -> dict[str, Any]:
    data = minimal()
    data["sequence"] = [
        {"channel": "sms", "delay": "0s", "persona": "gianna", "template": "Hi {first_name}"},
        {"channel": "email", "delay": "2d", "persona": "cathy", "subject": "Hi", "template": "Hi"},
    ]
    return data


def _set(data: dict[str, Any], dotted: str, value: object) -> None:
    """Set ``a.b[1].c`` (1-based list positions) in ``data``; value ``...`` deletes."""
    parts = re.findall(r"[^.\[\]]+|\[\d+\]", dotted)
    target: Any = data
    for part in parts[:-1]:
        target = (
            target[int(part[1:-1]) - 1] if part.startswith("[") else target.setdefault(part, {})
        )
    last = parts[-1]
    if value is ...:
        del target[last]
    else:
        target[last] = value


@pytest.mark.parametrize(
    ("where", "value", "path", "fragment"),
    [
        ("name", ..., "name", "is required"),
        ("name", "  ", "name", "must not be empty"),
        ("id", "x" * 64, "id", "is not a campaign id"),
        ("id", 7, "id", "is not a campaign id"),
        ("colour", "red", "colour", "unknown key"),
        ("sequence", [], "sequence", "at least one touch"),
        ("sequence", "sms", "sequence", "expected a list of touches"),
        ("sequence[1].dealy", "1h", "sequence[1].dealy", "did you mean 'delay'"),
        ("sequence[1].delay", ..., "sequence[1].delay", "is required"),
        ("sequence[1].delay", 0, "sequence[1].delay", "is not a duration"),
        ("sequence[1].delay", "400d", "sequence[1].delay", "longer than"),
        ("sequence[1].ai", "yes", "sequence[1].ai", "expected true or false"),
        ("sequence[1].template", "Hi {first_name", "sequence[1].template", "literal braces"),
        ("sequence[1].template", "Hi {}", "sequence[1].template", "need a name"),
        ("sequence[1].template", "Hi {first_name!r}", "sequence[1].template", "plain name"),
        ("sequence[1].template", "x" * 1601, "sequence[1].template", "at most 1600"),
        ("sequence[1].subject", "Hello", "sequence[1].subject", "only email touches"),
        ("sequence[1].template", ..., "sequence[1].template", "is required"),
        ("sequence[2].subject", ..., "sequence[2].subject", "required for email"),
        ("sequence[2].subject", "a\nb", "sequence[2].subject", "one line"),
        (
            "sequence[1].variants",
            [
                {"name": "a", "weight": 50, "template": "x"},
                {"name": "b", "weight": 50, "template": "y"},
            ],
            "sequence[1]",
            "either template or variants",
        ),
        ("send_window.start", "8am", "send_window.start", "is not a time like 08:00"),
        ("send_window.end", "22:00", "send_window.end", "after 21:00"),
        ("send_window", {"start": "20:00", "end": "19:00"}, "send_window", "must be before end"),
        ("send_window.days", ["mon", "funday"], "send_window.days[2]", "is not a weekday"),
        ("send_window.days", [], "send_window.days", "non-empty list of weekdays"),
        ("send_window.states", {"ZZ": {"end": "20:00"}}, "send_window.states.ZZ", "not a US state"),
        ("send_window.states", {"fl": {"end": "20:00"}}, "send_window.states.fl", "write FL"),
        ("send_window.states", {"TX": {}}, "send_window.states.TX", "sets nothing"),
        (
            "send_window.states",
            {"TX": {"close": "20:00"}},
            "send_window.states.TX.close",
            "unknown",
        ),
        (
            "send_window.states",
            {"TX": {"days": ["sun"], "no_sunday": True}},
            "send_window.states.TX",
            "leaves no time to send",
        ),
        ("qualification.threshold", 60, "qualification.threshold", "default tiers"),
        ("qualification.threshold", "high", "qualification.threshold", "expected a number"),
        (
            "qualification",
            {"threshold": 50, "tiers": {"A": 80, "B": 40}},
            "qualification.tiers.B",
            "below the threshold",
        ),
        ("qualification.tiers", {"A": 80, "B": 80}, "qualification.tiers.B", "same minimum"),
        ("qualification.tiers", {"A": 120}, "qualification.tiers.A", "between 0 and 100"),
        ("qualification.tiers", {}, "qualification.tiers", "mapping of tier name"),
        ("channels.fax", {}, "channels.fax", "unknown key"),
        ("channels.sms", {"rate": "fast"}, "channels.sms.rate", "is not a rate"),
        ("channels.sms", {"rate": 100}, "channels.sms.rate", "write it as text"),
        ("channels.sms", {"daily_cap": 0}, "channels.sms.daily_cap", ">= 1"),
        ("channels.sms", {"provider": "Twilio!"}, "channels.sms.provider", "provider name"),
        ("budget_cost_units", 0, "budget_cost_units", "must be > 0"),
        ("budget_cost_units", "lots", "budget_cost_units", "expected a number"),
        ("sender.postal_address", ..., "sender.postal_address", "CAN-SPAM"),
        ("sender.unsubscribe_url", ..., "sender.unsubscribe_url", "CAN-SPAM"),
        ("sender.unsubscribe_url", "ftp://x.example/u", "sender.unsubscribe_url", "http(s)"),
        ("sender.unsubscribe_url", "https://x.example/{id}", "sender.unsubscribe_url", "{token}"),
        ("sender.postal_address", "Springfield", "sender.postal_address", "postal address"),
        ("sender.email_from", "cathy at acme", "sender.email_from", "not an email address"),
        ("sender.sms_from", "555-123-0000", "sender.sms_from", "E.164"),
        ("sender.sms_from", ..., "sender.sms_from", "required by sms"),
        ("sender.company", ..., "sender.company", "is required"),
        ("sender", "Acme", "sender", "expected a mapping"),
    ],
)
def test_each_kind_of_problem_names_its_path(
    where: str, value: object, path: str, fragment: str
) -> None:
    data = base_with_sequence()
    _set(data, where, value)
    found = problems_of(data)
    assert any(p == path and fragment in m for p, m in found), found


def test_variant_problems_are_reported_per_variant() -> None:
    data = base_with_sequence()
    del data["sequence"][0]["template"]
    data["sequence"][0]["variants"] = [
        {"name": "a", "weight": 60, "template": "x"},
        {"name": "a", "weight": 30.5, "template": "y {nope}"},
        {"name": "c", "wieght": 10, "template": "z"},
    ]
    found = problems_of(data)
    paths = {p for p, _ in found}
    assert {
        "sequence[1].variants[2].name",
        "sequence[1].variants[2].weight",
        "sequence[1].variants[2].template",
        "sequence[1].variants[3].wieght",
        "sequence[1].variants[3].weight",
    } <= paths


def test_weights_must_add_up_to_100() -> None:
    data = base_with_sequence()
    del data["sequence"][0]["template"]
    data["sequence"][0]["variants"] = [
        {"name": "a", "weight": 60, "template": "x"},
        {"name": "b", "weight": 30, "template": "y"},
    ]
    assert ("sequence[1].variants", "weights add up to 90; they must add up to 100") in (
        problems_of(data)
    )
    data["sequence"][0]["variants"] = [{"name": "a", "weight": 100, "template": "x"}]
    assert any("at least two variants" in m for _, m in problems_of(data))


def test_email_variants_may_each_carry_the_subject() -> None:
    data = base_with_sequence()
    email = data["sequence"][1]
    del email["subject"], email["template"]
    email["variants"] = [
        {"name": "short", "weight": 50, "template": "x", "subject": "Hi"},
        {"name": "long", "weight": 50, "template": "y"},
    ]
    assert ("sequence[2].subject") in {p for p, _ in problems_of(data)}
    email["variants"][1]["subject"] = "Hello {first_name}"
    c = parse_campaign(data)
    assert [v.subject for v in c.touch(2).arms] == ["Hi", "Hello {first_name}"]


def test_sender_fields_are_required_only_for_the_channels_used() -> None:
    data = minimal()
    data["sender"] = {"company": "Acme", "sms_from": "+15551230000"}
    data["sequence"] = [{"channel": "sms", "delay": "0s", "persona": "gianna", "template": "Hi"}]
    c = parse_campaign(data)
    assert c.sender.postal_address is None
    data["sequence"][0]["channel"] = "email"
    data["sequence"][0]["subject"] = "Hi"
    paths = {p for p, _ in problems_of(data)}
    assert {"sender.email_from", "sender.postal_address", "sender.unsubscribe_url"} <= paths
    assert "sender.sms_from" not in paths


def test_lowest_tier_must_start_at_the_threshold() -> None:
    data = minimal()
    data["qualification"] = {"threshold": 50, "tiers": {"A": 80, "B": 60}}
    assert any(
        p == "qualification.tiers" and "would have no tier" in m for p, m in problems_of(data)
    )
    data["qualification"] = {"tiers": {"B": 60, "A": 85}}
    q = parse_campaign(data).qualification
    assert q.threshold == 60 and list(q.tiers) == ["A", "B"]


def test_yaml_syntax_error_names_the_line(tmp_path: Path) -> None:
    path = write(tmp_path, "id: x\nname: y\nsender:\n  company: [Acme\n  sms_from: z\n")
    with pytest.raises(CampaignValidationError) as info:
        load_campaign(path)
    (problem,) = info.value.problems
    assert problem.line == 5 and problem.column is not None
    assert str(problem).startswith("line 5, column ")
    assert "YAML syntax error" in str(info.value)


def test_duplicate_keys_are_problems(tmp_path: Path) -> None:
    text = "id: a\nname: A\nid: b\nsender: {company: Acme}\n"
    with pytest.raises(CampaignValidationError) as info:
        load_campaign(write(tmp_path, text))
    dupes = [p for p in info.value.problems if "duplicate key" in p.message]
    assert [(p.path, p.line) for p in dupes] == [("id", 3)]


@pytest.mark.parametrize(
    ("text", "fragment"),
    [("", "the file is empty"), ("- a\n- b\n", "expected a mapping"), ("just text\n", "mapping")],
)
def test_files_that_are_not_campaigns(tmp_path: Path, text: str, fragment: str) -> None:
    with pytest.raises(CampaignValidationError, match=fragment):
        load_campaign(write(tmp_path, text))


def test_missing_file_is_a_config_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="does not exist"):
        load_campaign(tmp_path / "nope.yaml")


@pytest.mark.parametrize(
    "text",
    [
        "100/60",
        "100/60s",
        "100/1m",
        "5/s",
        "3000/h",
        "7/2.5",
        "1/day",
        "0/60",
        "100/0",
        "fast",
        "100/60x",
        "100",
        "/60",
        "-1/60",
        "100/ 60 sec",
    ],
)
def test_rate_check_agrees_with_the_provider_rate_parser(text: str) -> None:
    from providers.errors import ProviderConfigError
    from providers.ratelimit import Rate

    try:
        Rate.parse(text)
        accepted = True
    except ProviderConfigError:
        accepted = False
    assert (rate_problem(text) is None) is accepted


# --- durations -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("0s", timedelta(0)),
        ("30m", timedelta(minutes=30)),
        ("24h", timedelta(hours=24)),
        ("2d", timedelta(days=2)),
        ("1w", timedelta(weeks=1)),
        ("1d12h", timedelta(hours=36)),
        ("1w2d3h4m5s", timedelta(weeks=1, days=2, hours=3, minutes=4, seconds=5)),
    ],
)
def test_durations_parse(text: str, expected: timedelta) -> None:
    assert parse_duration(text) == expected
    assert parse_duration(format_duration(expected)) == expected


@pytest.mark.parametrize(
    "text", ["24x", "", "24", "h", "1.5h", "-1h", "1h1d", "2h3h", " 1h", "1 h"]
)
def test_bad_durations_are_refused(text: str) -> None:
    with pytest.raises(ValueError, match=r"duration|largest first"):
        parse_duration(text)


def test_durations_format_canonically() -> None:
    assert format_duration(timedelta(hours=120)) == "5d"
    assert format_duration(timedelta(hours=168)) == "1w"
    assert format_duration(timedelta(hours=36)) == "1d12h"
    assert format_duration(timedelta(0)) == "0s"
    with pytest.raises(ValueError):
        format_duration(timedelta(milliseconds=5))


# --- helpers ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("score", "tier"),
    [
        (100, "A"),
        (80, "A"),
        (79.99, "B"),
        (65, "B"),
        (64.5, "C"),
        (50, "C"),
        (49.99, None),
        (0, None),
    ],
)
def test_tier_for(score: float, tier: str | None) -> None:
    c = parse_campaign(minimal())
    assert c.tier_for(score) == tier


def test_tiers_are_ordered_best_first_whatever_the_file_order() -> None:
    data = minimal()
    data["qualification"] = {"threshold": 40, "tiers": {"cold": 40, "hot": 90, "warm": 70}}
    c = parse_campaign(data)
    assert list(c.qualification.tiers) == ["hot", "warm", "cold"]
    assert [c.tier_for(s) for s in (95, 75, 45, 39)] == ["hot", "warm", "cold", None]
    assert [c.qualification.priority(t) for t in ("hot", "warm", "cold", "x")] == [0, 1, 2, 3]


def split_campaign(weights: list[int]) -> Campaign:
    data = base_with_sequence()
    del data["sequence"][0]["template"]
    data["sequence"][0]["variants"] = [
        {"name": f"v{i}", "weight": w, "template": f"text {i}"} for i, w in enumerate(weights)
    ]
    return parse_campaign(data)


def test_variant_split_is_deterministic_and_follows_the_weights() -> None:
    c = split_campaign([50, 30, 20, 0])
    again = Campaign.from_dict(json.loads(json.dumps(c.to_dict())))
    leads = [f"lead-{i}" for i in range(10_000)]
    picks = [c.choose_variant(1, lead).name for lead in leads]
    assert picks == [again.choose_variant(c.touch(1), lead).name for lead in leads]
    counts = Counter(picks)
    assert counts["v3"] == 0
    for name, weight in (("v0", 50), ("v1", 30), ("v2", 20)):
        assert abs(counts[name] / len(leads) * 100 - weight) < 2.5, counts


def test_variant_split_differs_between_campaigns() -> None:
    a = split_campaign([50, 50, 0, 0])
    b_data = a.to_dict()
    b_data["id"] = "another-campaign"
    b = Campaign.from_dict(b_data)
    leads = [f"lead-{i}" for i in range(2_000)]
    same = sum(a.choose_variant(1, x) == b.choose_variant(1, x) for x in leads)
    assert 800 < same < 1200  # independent splits agree about half the time


def test_touch_without_a_split_has_one_default_variant() -> None:
    c = parse_campaign(minimal())
    touch = c.touch(4)
    chosen = c.choose_variant(touch, "anyone")
    assert chosen == Variant("default", 100, touch.template or "", touch.subject)


def test_touch_numbers_are_checked() -> None:
    c = parse_campaign(minimal())
    assert c.touch(1).index == 1 and c.touch(4).index == 4
    for n in (0, 5, -1):
        with pytest.raises(IndexError, match=r"touches 1\.\.4"):
            c.touch(n)
    with pytest.raises(IndexError):
        c.offset_of(5)


NY = ZoneInfo("America/New_York")


@pytest.mark.parametrize(
    ("local", "allowed", "opening"),
    [
        # Monday 2025-03-03
        (datetime(2025, 3, 3, 7, 59, tzinfo=NY), False, datetime(2025, 3, 3, 8, 0, tzinfo=NY)),
        (datetime(2025, 3, 3, 8, 0, tzinfo=NY), True, datetime(2025, 3, 3, 8, 0, tzinfo=NY)),
        (datetime(2025, 3, 3, 20, 59, tzinfo=NY), True, datetime(2025, 3, 3, 20, 59, tzinfo=NY)),
        (datetime(2025, 3, 3, 21, 0, tzinfo=NY), False, datetime(2025, 3, 4, 8, 0, tzinfo=NY)),
        # Saturday evening -> Sunday is not allowed -> Monday morning
        (datetime(2025, 3, 8, 22, 0, tzinfo=NY), False, datetime(2025, 3, 10, 8, 0, tzinfo=NY)),
        (datetime(2025, 3, 9, 12, 0, tzinfo=NY), False, datetime(2025, 3, 10, 8, 0, tzinfo=NY)),
    ],
)
def test_daily_window_allows_and_next_opening(
    local: datetime, allowed: bool, opening: datetime
) -> None:
    window = load_campaign(EXAMPLE).window_for("NY")
    assert window.allows(local) is allowed
    assert window.next_opening(local) == opening


def test_email_footer_carries_address_and_unsubscribe_link() -> None:
    c = parse_campaign(minimal())
    footer = c.sender.email_footer("tok123")
    assert SENDER["postal_address"] in footer
    assert "https://acme.example/u/tok123" in footer
    assert "Acme Outreach" in footer


# --- storage form ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    "make", [lambda: load_campaign(EXAMPLE), lambda: parse_campaign(minimal())]
)
def test_to_dict_round_trips_exactly_through_json(make: Any) -> None:
    c: Campaign = make()
    d = c.to_dict()
    restored = Campaign.from_dict(json.loads(json.dumps(d)))
    assert restored == c
    assert restored.to_dict() == d
    assert json.dumps(restored.to_dict(), sort_keys=True) == json.dumps(d, sort_keys=True)


def test_to_dict_writes_every_default_out() -> None:
    d = parse_campaign(minimal()).to_dict()
    assert set(d) == {
        "id",
        "name",
        "sender",
        "qualification",
        "send_window",
        "channels",
        "budget_cost_units",
        "sequence",
    }
    assert d["qualification"] == {"threshold": 50, "tiers": {"A": 80, "B": 65, "C": 50}}
    assert d["send_window"]["states"] == {
        "CT": {"start": "09:00", "end": "21:00"},
        "FL": {"start": "08:00", "end": "20:00"},
    }
    assert [t["delay"] for t in d["sequence"]] == ["0s", "1d", "1d", "5d"]


def test_from_dict_rejects_what_a_file_would() -> None:
    d = parse_campaign(minimal()).to_dict()
    broken = copy.deepcopy(d)
    broken["sequence"][1]["delay"] = "soon"
    with pytest.raises(CampaignValidationError, match=r"sequence\[2\]\.delay"):
        Campaign.from_dict(broken, source="stored campaign spring-1")


def test_hand_built_touch_has_no_variants_by_default() -> None:
    t = Touch(1, "sms", timedelta(0), "gianna", template="Hi")
    assert t.arms == (Variant("default", 100, "Hi", None),)
    assert t.persona_name == "Gianna"


def test_aliases_and_recursive_yaml_do_not_hang(tmp_path: Path) -> None:
    with pytest.raises(CampaignValidationError) as info:
        load_campaign(write(tmp_path, "a: &x [*x]\n"))
    assert [p.path for p in info.value.problems] == ["a", "id", "name", "sender"]
    text = "id: &i spring\nname: *i\nsender: {company: *i, sms_from: '+15551230000'}\n"
    text += "sequence: [{channel: sms, delay: 0s, persona: gianna, template: hi}]\n"
    c = load_campaign(write(tmp_path, text))
    assert (c.id, c.name, c.sender.company) == ("spring", "spring", "spring")


def test_campaigns_are_hashable_and_compare_by_value() -> None:
    a = load_campaign(EXAMPLE)
    b = Campaign.from_dict(a.to_dict())
    assert a == b and hash(a) == hash(b)
    assert a != Campaign.from_dict({**a.to_dict(), "name": "Other"})


def test_problems_from_a_mapping_have_no_line() -> None:
    with pytest.raises(CampaignValidationError) as info:
        parse_campaign({"id": "x", "name": "y"}, source="stored campaign x")
    assert str(info.value) == "stored campaign x: 1 problem\n  sender: is required"
