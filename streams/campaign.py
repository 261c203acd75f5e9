"""Campaigns: the campaign file, its validation, and the model the scheduler reads.

A campaign file (YAML; docs/CAMPAIGNS.md describes every key) says who is
contacted how: the sequence of touches (channel, delay after the previous
touch, persona, template or A/B variants, AI follow-up), the qualification
threshold and priority tiers, the send window with per-state rules, the
per-channel provider and rate limits, the sender's identity (CAN-SPAM) and an
optional budget.

:func:`load_campaign` reads a file and :func:`parse_campaign` a mapping. Both
check the **whole** input and raise one :class:`CampaignValidationError`
listing every problem with its path in the file (``sequence[2].delay``; list
positions count from 1, so ``sequence[2]`` is touch 2) and, for files, its
line. Unknown keys are errors, so a typo never passes silently.

:meth:`Campaign.to_dict` gives the canonical mapping (stored as jsonb, shown by
``leadflow campaign show``); :meth:`Campaign.from_dict` reads it back, and the
round trip is exact.

Delays are relative to the **previous** touch. The default sequence (used when
the file has no ``sequence``) is::

    touch  channel  persona  delay   offset from the start
    1      sms      gianna   0s      +0
    2      voice    gianna   24h     +24 h
    3      sms      cathy    24h     +48 h
    4      email    cathy    5d      +1 week   (ai: true)
"""

from __future__ import annotations

import difflib
import hashlib
import re
import string
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, time, timedelta
from email.utils import parseaddr
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final, Literal, cast
from urllib.parse import urlsplit

import yaml

from streams.errors import ConfigError

if TYPE_CHECKING:
    from providers.ratelimit import Rate

__all__ = [
    "CHANNELS",
    "DEFAULT_CHANNELS",
    "DEFAULT_SEQUENCE",
    "DEFAULT_STATE_RULES",
    "DEFAULT_TIERS",
    "PERSONAS",
    "PLACEHOLDERS",
    "TCPA_EARLIEST",
    "TCPA_LATEST",
    "US_STATES",
    "WEEKDAYS",
    "Campaign",
    "CampaignValidationError",
    "Channel",
    "ChannelSettings",
    "DailyWindow",
    "Problem",
    "Qualification",
    "SendWindow",
    "Sender",
    "StateRule",
    "Touch",
    "Variant",
    "format_duration",
    "load_campaign",
    "parse_campaign",
    "parse_duration",
    "rate_problem",
    "render_template",
]

# --- vocabulary ------------------------------------------------------------------

#: A touch's channel.
Channel = Literal["sms", "voice", "email"]
#: Every channel, in display order.
CHANNELS: Final[tuple[Channel, ...]] = ("sms", "voice", "email")

#: Weekday names as written in files, Monday first (``datetime.weekday()`` order).
WEEKDAYS: Final[tuple[str, ...]] = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
_DAY_ALIASES: Final[Mapping[str, str]] = {
    **{d: d for d in WEEKDAYS},
    "monday": "mon",
    "tuesday": "tue",
    "wednesday": "wed",
    "thursday": "thu",
    "friday": "fri",
    "saturday": "sat",
    "sunday": "sun",
}

#: Personas that can sign a touch: file name -> name used in ``{persona}``.
#: LUCI does research and enrichment and never contacts a lead.
PERSONAS: Final[Mapping[str, str]] = {"gianna": "Gianna", "cathy": "Cathy"}

#: Placeholders a template or subject may use (``{first_name}``); ``{{``/``}}`` are literal braces.
PLACEHOLDERS: Final[frozenset[str]] = frozenset(
    {
        "first_name",
        "last_name",
        "company",
        "title",
        "city",
        "state",
        "persona",
        "sender_company",
        "postal_address",
        "unsubscribe_url",
    }
)

#: Earliest and latest local time the TCPA allows for solicitation (47 CFR 64.1200(c)(1)).
TCPA_EARLIEST: Final = time(8, 0)
TCPA_LATEST: Final = time(21, 0)

#: US state and territory postal codes accepted under ``send_window.states``.
_STATE_CODES: Final = (
    "AL AK AZ AR CA CO CT DE DC FL GA HI ID IL IN IA KS KY LA ME MD MA MI MN MS MO MT NE NV "
    "NH NJ NM NY NC ND OH OK OR PA RI SC SD TN TX UT VT VA WA WV WI WY PR VI GU AS MP"
)
US_STATES: Final[frozenset[str]] = frozenset(_STATE_CODES.split())

_ID_RE: Final = re.compile(r"^[a-z0-9][a-z0-9-]{0,62}$")
_NAME_RE: Final = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_-]{0,31}$")
_PROVIDER_RE: Final = re.compile(r"^[a-z][a-z0-9_-]{0,31}$")
_E164_RE: Final = re.compile(r"^\+[1-9][0-9]{6,14}$")
_TIME_RE: Final = re.compile(r"^([0-9]{1,2}):([0-9]{2})$")
_DURATION_RE: Final = re.compile(r"^(?:[0-9]+[wdhms])+$")
_DURATION_PART: Final = re.compile(r"([0-9]+)([wdhms])")
_UNIT_SECONDS: Final[Mapping[str, int]] = {"w": 604_800, "d": 86_400, "h": 3_600, "m": 60, "s": 1}
_MAX_DELAY: Final = timedelta(days=365)
_MAX_TOUCHES: Final = 20
_MAX_SMS_CHARS: Final = 1600  # ten segments: the longest text carriers accept
_DURATION_HINT: Final = "is not a duration like 30m, 24h, 2d, 1w"


# --- durations and templates -------------------------------------------------------


def parse_duration(text: str) -> timedelta:
    """``"0s"``, ``"30m"``, ``"24h"``, ``"2d"``, ``"1w"`` or a combination (``"1d12h"``).

    Units are w, d, h, m, s, each at most once, largest first. Raises
    :class:`ValueError` for anything else.
    """
    if not _DURATION_RE.match(text):
        raise ValueError(f"{text!r} {_DURATION_HINT}")
    parts = _DURATION_PART.findall(text)
    units = [unit for _, unit in parts]
    order = [u for u in _UNIT_SECONDS if u in units]
    if units != order:
        raise ValueError(f"{text!r}: write each unit once, largest first (e.g. 1d12h)")
    return timedelta(seconds=sum(int(n) * _UNIT_SECONDS[u] for n, u in parts))


def format_duration(delta: timedelta) -> str:
    """The canonical text of ``delta`` (``timedelta(hours=36)`` -> ``"1d12h"``, zero -> ``"0s"``).

    ``parse_duration(format_duration(d)) == d`` for whole, non-negative seconds.
    """
    seconds = int(delta.total_seconds())
    if seconds < 0 or delta != timedelta(seconds=seconds):
        raise ValueError(f"{delta!r} is not a whole, non-negative number of seconds")
    if seconds == 0:
        return "0s"
    out = []
    for unit, size in _UNIT_SECONDS.items():
        count, seconds = divmod(seconds, size)
        if count:
            out.append(f"{count}{unit}")
    return "".join(out)


_RATE_RE: Final = re.compile(r"^\s*([0-9]+)\s*/\s*([0-9]+(?:\.[0-9]+)?)?\s*([a-z]*)\s*$")
_RATE_UNITS: Final = frozenset(
    {"", "s", "sec", "second", "m", "min", "minute", "h", "hour", "d", "day"}
)


def rate_problem(text: str) -> str | None:
    """Why ``text`` is not a rate :class:`providers.ratelimit.Rate` accepts, or None if it is.

    Rates are ``COUNT/SECONDS`` (``100/60``) or ``COUNT/UNIT`` (``5/s``,
    ``3000/h``, ``100/1m``). Checked here without importing ``providers``.
    """
    match = _RATE_RE.match(text.lower())
    if match is None or match.group(3) not in _RATE_UNITS:
        return f"{text!r} is not a rate; write COUNT/SECONDS such as 100/60 or 5/s"
    if int(match.group(1)) < 1 or (match.group(2) is not None and float(match.group(2)) <= 0):
        return f"{text!r}: count and window must be positive"
    return None


def _placeholders(text: str) -> list[str]:
    """Field names used in ``text``; raises ValueError on malformed braces or fancy fields."""
    names = []
    for _, name, spec, conversion in string.Formatter().parse(text):
        if name is None:
            continue
        if name == "" or name.isdigit():
            raise ValueError("placeholders need a name, e.g. {first_name}, not {} or {0}")
        if spec or conversion or not name.isidentifier():
            raise ValueError(f"placeholder {{{name}}} must be a plain name such as {{first_name}}")
        names.append(name)
    return names


def render_template(template: str, values: Mapping[str, str]) -> str:
    """Fill ``template``'s placeholders from ``values``.

    Raises :class:`KeyError` naming a placeholder that ``values`` lacks.
    """
    return string.Formatter().vformat(template, (), dict(values))


# --- the model ---------------------------------------------------------------------


@dataclass(frozen=True)
class Variant:
    """One arm of an A/B split: ``weight`` percent of leads get ``template``.

    ``subject`` (email only) overrides the touch's subject for this arm.
    """

    name: str
    weight: int
    template: str
    subject: str | None = None


@dataclass(frozen=True)
class Touch:
    """One step of the sequence.

    ``index`` counts from 1. ``delay`` runs from the previous touch (for touch
    1, from the moment the lead enters the sequence). ``template`` is the text
    (the script for voice, the body for email) unless ``variants`` split it.
    ``ai=True`` asks the text-generation provider, when one is enabled, to
    write the text from the persona, the lead and the template; the template
    is the fallback and is sent as written when generation is off or fails.
    """

    index: int
    channel: Channel
    delay: timedelta
    persona: str
    template: str | None = None
    subject: str | None = None
    ai: bool = False
    variants: tuple[Variant, ...] = ()

    @property
    def arms(self) -> tuple[Variant, ...]:
        """The variants; a touch without a split has one, named ``default``, of weight 100."""
        if self.variants:
            return tuple(
                Variant(v.name, v.weight, v.template, v.subject or self.subject)
                for v in self.variants
            )
        return (Variant("default", 100, self.template or "", self.subject),)

    @property
    def persona_name(self) -> str:
        """The persona as the lead sees it (``Gianna``)."""
        return PERSONAS.get(self.persona, self.persona.title())


@dataclass(frozen=True)
class DailyWindow:
    """When sends may go out, in the lead's local time: ``start <= t < end`` on ``days``."""

    start: time
    end: time
    days: frozenset[str]

    def allows(self, local: datetime) -> bool:
        """True when ``local`` (the lead's wall-clock time) is inside the window."""
        return WEEKDAYS[local.weekday()] in self.days and self.start <= local.time() < self.end

    def next_opening(self, local: datetime) -> datetime:
        """``local`` itself when allowed, else the next window start after it (same tzinfo)."""
        if not self.days:
            raise ValueError("the window has no days")
        if self.allows(local):
            return local
        for ahead in range(8):
            day = (local + timedelta(days=ahead)).date()
            opening = datetime.combine(day, self.start, tzinfo=local.tzinfo)
            if WEEKDAYS[day.weekday()] in self.days and opening > local:
                return opening
        raise AssertionError("unreachable: a week always has an allowed day")  # pragma: no cover


@dataclass(frozen=True)
class StateRule:
    """Stricter hours or days for leads in one US state.

    A rule only narrows: the state's window is the campaign window
    intersected with ``start``/``end``/``days`` (unset ones are not
    narrowed), minus Sunday when ``no_sunday`` is set.
    """

    start: time | None = None
    end: time | None = None
    days: frozenset[str] | None = None
    no_sunday: bool = False


#: Used unless the file gives its own rule for the state (sources report these as stricter).
DEFAULT_STATE_RULES: Final[Mapping[str, StateRule]] = {
    "CT": StateRule(start=time(9, 0), end=time(21, 0)),
    "FL": StateRule(start=time(8, 0), end=time(20, 0)),
}


@dataclass(frozen=True)
class SendWindow:
    """The campaign's send window (lead's local time) and per-state rules (``states``)."""

    start: time = TCPA_EARLIEST
    end: time = TCPA_LATEST
    days: frozenset[str] = frozenset(WEEKDAYS)
    states: Mapping[str, StateRule] = field(
        default_factory=lambda: dict(DEFAULT_STATE_RULES), hash=False
    )

    def window_for(self, state: str | None) -> DailyWindow:
        """The window for a lead in ``state`` (a postal code; None or unknown: the campaign's)."""
        rule = self.states.get(state.upper()) if state else None
        if rule is None:
            return DailyWindow(self.start, self.end, self.days)
        start = max(self.start, rule.start) if rule.start else self.start
        end = min(self.end, rule.end) if rule.end else self.end
        days = self.days & rule.days if rule.days is not None else self.days
        if rule.no_sunday:
            days -= {"sun"}
        return DailyWindow(start, end, days)


#: Priority tiers when the file gives none: tier -> minimum score, best first.
DEFAULT_TIERS: Final[Mapping[str, float]] = {"A": 80.0, "B": 65.0, "C": 50.0}


@dataclass(frozen=True)
class Qualification:
    """Leads scoring at least ``threshold`` (0-100) qualify.

    ``tiers`` maps tier name -> minimum score, best (highest) first; a
    qualified lead is in the first tier whose minimum it reaches. Tiers are
    the contact priority: tier A leads are contacted before tier B.
    """

    threshold: float = 50.0
    tiers: Mapping[str, float] = field(default_factory=lambda: dict(DEFAULT_TIERS), hash=False)

    def tier_for(self, score: float) -> str | None:
        """The tier of ``score``, or None when it is below the threshold."""
        if score < self.threshold:
            return None
        for name, minimum in self.tiers.items():
            if score >= minimum:
                return name
        return None

    def priority(self, tier: str) -> int:
        """0 for the best tier, 1 for the next, ... (``len(tiers)`` for an unknown tier)."""
        names = list(self.tiers)
        return names.index(tier) if tier in names else len(names)


@dataclass(frozen=True)
class ChannelSettings:
    """Which provider adapter sends a channel, and this campaign's limits on it.

    ``provider`` names a registered adapter (:func:`providers.factory.known_adapters`;
    built in: ``http`` for sms and voice, ``smtp`` for email), checked when
    the worker starts. ``rate`` is ``COUNT/SECONDS`` spread evenly (``100/60``:
    one send every 0.6 s; see :class:`providers.ratelimit.Rate`), None for no
    per-window limit. ``daily_cap`` is the most sends per day, None for no cap.
    Both apply to this campaign, on top of the provider account's own limits
    (``LEADFLOW_SMS_RATE``, ...) that all campaigns share.
    """

    provider: str = "http"
    rate: str | None = "100/60"
    daily_cap: int | None = None

    def rate_limit(self) -> Rate | None:
        """``rate`` parsed (None when unlimited)."""
        from providers.ratelimit import Rate  # imported late: the providers package is heavy

        return Rate.parse(self.rate) if self.rate is not None else None


#: Channel settings used for channels (or keys) the file leaves out.
DEFAULT_CHANNELS: Final[Mapping[Channel, ChannelSettings]] = {
    "sms": ChannelSettings("http", "100/60", None),
    "voice": ChannelSettings("http", "60/60", None),
    "email": ChannelSettings("smtp", "100/60", None),
}


@dataclass(frozen=True)
class Sender:
    """Who the campaign speaks for.

    ``company`` fills ``{sender_company}``. Texts and calls come from
    ``sms_from`` (E.164). Every email carries ``postal_address`` and a working
    ``unsubscribe_url`` (CAN-SPAM); the URL may contain ``{token}``, replaced
    per lead. Which fields are required depends on the channels the sequence
    uses.
    """

    company: str
    postal_address: str | None = None
    unsubscribe_url: str | None = None
    email_from: str | None = None
    sms_from: str | None = None

    def unsubscribe_link(self, token: str = "") -> str:
        """``unsubscribe_url`` with ``{token}`` replaced by ``token``."""
        if self.unsubscribe_url is None:
            raise ValueError(f"sender {self.company!r} has no unsubscribe_url")
        return self.unsubscribe_url.replace("{token}", token)

    def email_footer(self, token: str = "") -> str:
        """The CAN-SPAM footer every email must end with: company, postal address, unsubscribe."""
        if self.postal_address is None:
            raise ValueError(f"sender {self.company!r} has no postal_address")
        link = self.unsubscribe_link(token)
        return f"--\n{self.company}\n{self.postal_address}\nUnsubscribe: {link}"


def _default_sequence() -> tuple[Touch, ...]:
    return (
        Touch(
            1,
            "sms",
            timedelta(0),
            "gianna",
            template=(
                "Hi {first_name}, this is {persona} from {sender_company}. We help teams like "
                "{company} reach every new lead within minutes. Open to a quick call this week? "
                "Reply STOP to opt out."
            ),
        ),
        Touch(
            2,
            "voice",
            timedelta(hours=24),
            "gianna",
            template=(
                "Hi {first_name}, this is {persona} calling from {sender_company}. I texted you "
                "yesterday about helping {company} follow up with leads faster. I'd love ten "
                "minutes with you this week; I'll send a short note with the details. Thank you!"
            ),
        ),
        Touch(
            3,
            "sms",
            timedelta(hours=24),
            "cathy",
            template=(
                "Hi {first_name}, {persona} from {sender_company} here, following up on our "
                "call and text. Would a 10-minute chat later this week work for you? "
                "Reply STOP to opt out."
            ),
        ),
        Touch(
            4,
            "email",
            timedelta(days=5),
            "cathy",
            subject="{first_name}, one last note from {sender_company}",
            ai=True,
            template=(
                "Hi {first_name},\n\n"
                "I wanted to follow up one last time. {sender_company} helps teams like "
                "{company} answer every lead within minutes, by text, phone and email.\n\n"
                "If that is useful, just reply with a time that suits you. If not, no worries "
                "and thank you for reading.\n\n"
                "Best,\n{persona}\n{sender_company}"
            ),
        ),
    )


#: The sequence used when a file has no ``sequence``: SMS now, voice +24 h,
#: SMS +48 h, AI email follow-up +1 week (delays 0s, 24h, 24h, 5d).
DEFAULT_SEQUENCE: Final[tuple[Touch, ...]] = _default_sequence()


@dataclass(frozen=True)
class Campaign:
    """A validated campaign. Build it with :func:`load_campaign` or :func:`parse_campaign`.

    Direct construction trusts the caller; :class:`sinks.campaigns.CampaignStore`
    re-validates before storing.
    """

    id: str
    name: str
    sender: Sender
    sequence: tuple[Touch, ...] = DEFAULT_SEQUENCE
    qualification: Qualification = field(default_factory=Qualification)
    send_window: SendWindow = field(default_factory=SendWindow)
    channels: Mapping[Channel, ChannelSettings] = field(
        default_factory=lambda: dict(DEFAULT_CHANNELS), hash=False
    )
    budget_cost_units: float | None = None

    # --- helpers for the scheduler --------------------------------------------------

    def touch(self, n: int) -> Touch:
        """Touch ``n`` (1-based). Raises :class:`IndexError` outside ``1..len(sequence)``."""
        if not 1 <= n <= len(self.sequence):
            raise IndexError(f"campaign {self.id} has touches 1..{len(self.sequence)}, not {n}")
        return self.sequence[n - 1]

    def offset_of(self, n: int) -> timedelta:
        """When touch ``n`` is due, counted from the start of the sequence (sum of delays 1..n)."""
        self.touch(n)
        return sum((t.delay for t in self.sequence[:n]), timedelta(0))

    def window_for(self, state: str | None) -> DailyWindow:
        """The send window for a lead in US state ``state`` (see :meth:`SendWindow.window_for`)."""
        return self.send_window.window_for(state)

    def tier_for(self, score: float) -> str | None:
        """The priority tier of ``score`` (None: below the qualification threshold)."""
        return self.qualification.tier_for(score)

    def choose_variant(self, touch: Touch | int, lead_id: str) -> Variant:
        """The variant lead ``lead_id`` gets for ``touch``: stable, and split by the weights.

        The choice hashes (campaign id, touch index, lead id), so it is the same
        on every worker and every replay.
        """
        step = self.touch(touch) if isinstance(touch, int) else touch
        arms = step.arms
        if len(arms) == 1:
            return arms[0]
        digest = hashlib.sha256(f"{self.id}\x1f{step.index}\x1f{lead_id}".encode()).digest()
        bucket = int.from_bytes(digest[:8], "big") % 100
        for arm in arms:
            if bucket < arm.weight:
                return arm
            bucket -= arm.weight
        return arms[-1]  # pragma: no cover - weights sum to 100

    def channel_settings(self, channel: Channel) -> ChannelSettings:
        """The provider and limits of ``channel``."""
        return self.channels.get(channel, DEFAULT_CHANNELS[channel])

    @property
    def channels_used(self) -> frozenset[Channel]:
        """The channels the sequence sends on."""
        return frozenset(t.channel for t in self.sequence)

    # --- storage ----------------------------------------------------------------------

    def to_dict(self) -> dict[str, Any]:
        """The canonical, JSON-safe mapping: file format with every default written out."""
        return {
            "id": self.id,
            "name": self.name,
            "sender": _drop_none(
                {
                    "company": self.sender.company,
                    "postal_address": self.sender.postal_address,
                    "unsubscribe_url": self.sender.unsubscribe_url,
                    "email_from": self.sender.email_from,
                    "sms_from": self.sender.sms_from,
                }
            ),
            "qualification": {
                "threshold": _num(self.qualification.threshold),
                "tiers": {k: _num(v) for k, v in self.qualification.tiers.items()},
            },
            "send_window": {
                "start": _fmt_time(self.send_window.start),
                "end": _fmt_time(self.send_window.end),
                "days": _fmt_days(self.send_window.days),
                "states": {
                    code: _state_rule_dict(rule)
                    for code, rule in sorted(self.send_window.states.items())
                },
            },
            "channels": {
                ch: {"provider": s.provider, "rate": s.rate, "daily_cap": s.daily_cap}
                for ch, s in sorted(self.channels.items(), key=lambda kv: CHANNELS.index(kv[0]))
            },
            "budget_cost_units": (
                None if self.budget_cost_units is None else _num(self.budget_cost_units)
            ),
            "sequence": [_touch_dict(t) for t in self.sequence],
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], *, source: str = "stored campaign") -> Campaign:
        """Read :meth:`to_dict` output (validated like a file)."""
        return parse_campaign(data, source=source)


def _num(value: float) -> float | int:
    """Whole numbers as int, so files and JSON show 80 rather than 80.0."""
    return int(value) if float(value).is_integer() else value


def _drop_none(d: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in d.items() if v is not None}


def _fmt_time(t: time) -> str:
    return t.strftime("%H:%M")


def _fmt_days(days: frozenset[str]) -> list[str]:
    return [d for d in WEEKDAYS if d in days]


def _state_rule_dict(rule: StateRule) -> dict[str, Any]:
    out: dict[str, Any] = {}
    if rule.start is not None:
        out["start"] = _fmt_time(rule.start)
    if rule.end is not None:
        out["end"] = _fmt_time(rule.end)
    if rule.days is not None:
        out["days"] = _fmt_days(rule.days)
    if rule.no_sunday:
        out["no_sunday"] = True
    return out


def _touch_dict(t: Touch) -> dict[str, Any]:
    out: dict[str, Any] = {
        "channel": t.channel,
        "delay": format_duration(t.delay),
        "persona": t.persona,
        "ai": t.ai,
    }
    if t.subject is not None:
        out["subject"] = t.subject
    if t.template is not None:
        out["template"] = t.template
    if t.variants:
        out["variants"] = [
            _drop_none(
                {"name": v.name, "weight": v.weight, "subject": v.subject, "template": v.template}
            )
            for v in t.variants
        ]
    return out


# --- validation ----------------------------------------------------------------------


@dataclass(frozen=True)
class Problem:
    """One thing wrong with a campaign: where (``path``; for files ``line``) and what.

    ``str()`` is ``path: message (line N)``; a problem with no path (a YAML
    syntax error) reads ``line N, column C: message``.
    """

    path: str
    message: str
    line: int | None = None
    column: int | None = None

    def __str__(self) -> str:
        if self.path:
            where = f" (line {self.line})" if self.line is not None else ""
            return f"{self.path}: {self.message}{where}"
        if self.line is None:
            return self.message
        column = f", column {self.column}" if self.column is not None else ""
        return f"line {self.line}{column}: {self.message}"


class CampaignValidationError(ConfigError):
    """A campaign file or mapping is invalid; ``problems`` lists every problem found.

    ``str()`` is a header line naming the source, then one problem per line.
    """

    reason = "campaign_invalid"

    def __init__(self, problems: Sequence[Problem], *, source: str = "campaign") -> None:
        self.problems: tuple[Problem, ...] = tuple(problems)
        self.source = source
        count = len(self.problems)
        header = f"{source}: {count} problem{'' if count == 1 else 's'}"
        super().__init__("\n".join([header, *(f"  {p}" for p in self.problems)]))


_MISSING: Final = object()


def _join(path: str, key: str) -> str:
    return f"{path}.{key}" if path else key


def _kind(value: object) -> str:
    if value is None:
        return "null"
    return {
        bool: "a boolean",
        int: "a number",
        float: "a number",
        str: "a string",
        list: "a list",
        dict: "a mapping",
    }.get(type(value), type(value).__name__)


class _Checker:
    """Collects problems while a campaign is parsed; each check returns the value or None."""

    def __init__(self, lines: Mapping[str, int]) -> None:
        self.problems: list[Problem] = []
        self._lines = lines

    def error(self, path: str, message: str) -> None:
        self.problems.append(Problem(path, message, self._line(path)))

    def _line(self, path: str) -> int | None:
        while path:
            if path in self._lines:
                return self._lines[path]
            cut = max(path.rfind("."), path.rfind("["))
            path = path[:cut] if cut > 0 else ""
        return None

    def mapping(
        self,
        path: str,
        value: object,
        *,
        required: Sequence[str] = (),
        optional: Sequence[str] = (),
        what: str = "a mapping",
    ) -> Mapping[str, Any] | None:
        """``value`` as a mapping with known keys; reports wrong type, unknown and missing keys."""
        if not isinstance(value, Mapping):
            self.error(path, f"expected {what}, got {_kind(value)}")
            return None
        known = [*required, *optional]
        for key in value:
            if not isinstance(key, str):
                self.error(path, f"key {key!r} is not a string")
            elif key not in known:
                close = difflib.get_close_matches(key, known, n=1)
                hint = f" (did you mean {close[0]!r}?)" if close else ""
                self.error(_join(path, key), f"unknown key{hint}; allowed: {', '.join(known)}")
        for key in required:
            if key not in value:
                self.error(_join(path, key), "is required")
        return value

    def string(self, path: str, value: object, *, max_len: int = 10_000) -> str | None:
        if not isinstance(value, str):
            self.error(path, f"expected a string, got {_kind(value)}")
            return None
        if not value.strip():
            self.error(path, "must not be empty")
            return None
        if len(value) > max_len:
            self.error(path, f"is {len(value)} characters; at most {max_len}")
            return None
        return value

    def number(
        self, path: str, value: object, *, low: float | None = None, high: float | None = None
    ) -> float | None:
        if isinstance(value, bool) or not isinstance(value, int | float):
            self.error(path, f"expected a number, got {_kind(value)}")
            return None
        if value != value or value in (float("inf"), float("-inf")):
            self.error(path, f"{value} is not a finite number")
            return None
        if (low is not None and value < low) or (high is not None and value > high):
            bounds = f"between {low:g} and {high:g}" if high is not None else f">= {low:g}"
            self.error(path, f"{value:g} must be {bounds}")
            return None
        return float(value)

    def whole(self, path: str, value: object, *, low: int, high: int | None = None) -> int | None:
        if isinstance(value, bool) or not isinstance(value, int):
            self.error(path, f"expected a whole number, got {_kind(value)} {value!r}")
            return None
        if value < low or (high is not None and value > high):
            bounds = f"between {low} and {high}" if high is not None else f">= {low}"
            self.error(path, f"{value} must be {bounds}")
            return None
        return value

    def boolean(self, path: str, value: object) -> bool | None:
        if not isinstance(value, bool):
            self.error(path, f"expected true or false, got {_kind(value)} {value!r}")
            return None
        return value

    def choice(self, path: str, value: object, options: Sequence[str], what: str) -> str | None:
        if not isinstance(value, str) or value not in options:
            close = difflib.get_close_matches(str(value), options, n=1)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            self.error(path, f"{value!r} is not {what}{hint}; one of: {', '.join(options)}")
            return None
        return value

    def pattern(self, path: str, value: object, regex: re.Pattern[str], what: str) -> str | None:
        if not isinstance(value, str) or not regex.match(value):
            self.error(path, f"{value!r} is not {what}")
            return None
        return value

    def time_of_day(self, path: str, value: object) -> time | None:
        match = _TIME_RE.match(value) if isinstance(value, str) else None
        if match is None or int(match.group(1)) > 23 or int(match.group(2)) > 59:
            self.error(path, f"{value!r} is not a time like 08:00 or 20:30 (24-hour HH:MM)")
            return None
        return time(int(match.group(1)), int(match.group(2)))

    def duration(self, path: str, value: object) -> timedelta | None:
        if not isinstance(value, str):
            self.error(path, f"{value!r} {_DURATION_HINT} (write it as text, e.g. 0s)")
            return None
        try:
            delta = parse_duration(value)
        except ValueError as exc:
            self.error(path, str(exc))
            return None
        if delta > _MAX_DELAY:
            self.error(path, f"{value!r} is longer than {format_duration(_MAX_DELAY)}")
            return None
        return delta

    def days(self, path: str, value: object) -> frozenset[str] | None:
        if not isinstance(value, list) or not value:
            self.error(path, f"expected a non-empty list of weekdays (mon..sun), got {value!r}")
            return None
        out: set[str] = set()
        ok = True
        for i, item in enumerate(value, 1):
            day = _DAY_ALIASES.get(item.lower()) if isinstance(item, str) else None
            if day is None:
                self.error(
                    f"{path}[{i}]", f"{item!r} is not a weekday; one of {', '.join(WEEKDAYS)}"
                )
                ok = False
            else:
                out.add(day)
        return frozenset(out) if ok else None

    def template(self, path: str, value: object, *, channel: str | None) -> str | None:
        text = self.string(path, value)
        if text is None:
            return None
        try:
            names = _placeholders(text)
        except ValueError as exc:
            msg = str(exc)
            if "Single" in msg or "expected" in msg:
                msg = f"{msg}; write {{{{ and }}}} for literal braces"
            self.error(path, msg)
            return None
        unknown = sorted(set(names) - PLACEHOLDERS)
        for name in unknown:
            close = difflib.get_close_matches(name, sorted(PLACEHOLDERS), n=1)
            hint = f" (did you mean {{{close[0]}}}?)" if close else ""
            self.error(
                path,
                f"unknown placeholder {{{name}}}{hint}; known: "
                + ", ".join(f"{{{p}}}" for p in sorted(PLACEHOLDERS)),
            )
        if channel == "sms" and len(text) > _MAX_SMS_CHARS:
            self.error(path, f"is {len(text)} characters; a text may have at most {_MAX_SMS_CHARS}")
            return None
        return None if unknown else text


def parse_campaign(data: object, *, source: str = "campaign") -> Campaign:
    """Validate ``data`` (a mapping in the file format) and build the :class:`Campaign`.

    Raises :class:`CampaignValidationError` listing every problem; ``source``
    names the input in its message.
    """
    return _parse(data, source=source, lines={})


def _parse(
    data: object,
    *,
    source: str,
    lines: Mapping[str, int],
    earlier: Sequence[Problem] = (),
) -> Campaign:
    ck = _Checker(lines)
    ck.problems.extend(earlier)
    top = ck.mapping(
        "",
        data,
        required=("id", "name", "sender"),
        optional=(
            "sequence",
            "qualification",
            "send_window",
            "channels",
            "budget_cost_units",
        ),
        what="a mapping with id, name, sender, ... at the top",
    )
    if top is None:
        raise CampaignValidationError(ck.problems, source=source)

    campaign_id = None
    if "id" in top:
        campaign_id = ck.pattern(
            "id",
            top["id"],
            _ID_RE,
            "a campaign id (lowercase letters, digits and '-', starting with a letter or "
            "digit, at most 63 characters)",
        )
    name = ck.string("name", top["name"], max_len=200) if "name" in top else None
    sequence = _parse_sequence(ck, top.get("sequence", _MISSING))
    used = _channels_in(top.get("sequence", _MISSING), sequence)
    sender = _parse_sender(ck, top["sender"], used) if "sender" in top else None
    qualification = _parse_qualification(ck, top.get("qualification", _MISSING))
    window = _parse_window(ck, top.get("send_window", _MISSING))
    channels = _parse_channels(ck, top.get("channels", _MISSING))
    budget: float | None = None
    raw_budget = top.get("budget_cost_units")
    if raw_budget is not None:
        budget = ck.number("budget_cost_units", raw_budget)
        if budget is not None and budget <= 0:
            ck.error(
                "budget_cost_units",
                f"{budget:g} must be > 0 (leave it out, or null, for no budget)",
            )

    if ck.problems:
        # A file's problems read top to bottom; those without a line come last.
        ordered = sorted(ck.problems, key=lambda p: (p.line is None, p.line or 0))
        raise CampaignValidationError(ordered, source=source)
    assert campaign_id is not None and name is not None and sender is not None
    assert sequence is not None and qualification is not None
    assert window is not None and channels is not None
    return Campaign(
        id=campaign_id,
        name=name,
        sender=sender,
        sequence=sequence,
        qualification=qualification,
        send_window=window,
        channels=channels,
        budget_cost_units=budget,
    )


def _channels_in(raw: object, sequence: tuple[Touch, ...] | None) -> set[Channel]:
    """The channels the sequence uses, as far as can be told when it has problems."""
    if sequence is not None:
        return {t.channel for t in sequence}
    if not isinstance(raw, list):
        return set()
    return {
        cast(Channel, item["channel"])
        for item in raw
        if isinstance(item, Mapping) and item.get("channel") in CHANNELS
    }


def _parse_sequence(ck: _Checker, raw: object) -> tuple[Touch, ...] | None:
    if raw is _MISSING:
        return DEFAULT_SEQUENCE
    if not isinstance(raw, list):
        ck.error("sequence", f"expected a list of touches, got {_kind(raw)}")
        return None
    if not raw:
        ck.error("sequence", "needs at least one touch (leave it out for the default sequence)")
        return None
    if len(raw) > _MAX_TOUCHES:
        ck.error("sequence", f"has {len(raw)} touches; at most {_MAX_TOUCHES}")
        return None
    parse = _touch_parser(ck)
    touches = [parse(f"sequence[{i}]", item) for i, item in enumerate(raw, 1)]
    if any(t is None for t in touches):
        return None
    return tuple(t for t in touches if t is not None)


def _touch_parser(ck: _Checker) -> Callable[[str, object], Touch | None]:
    def parse(path: str, raw: object) -> Touch | None:
        index = int(path[path.rindex("[") + 1 : -1])
        before = len(ck.problems)
        t = ck.mapping(
            path,
            raw,
            required=("channel", "delay", "persona"),
            optional=("template", "subject", "ai", "variants"),
            what="a touch (a mapping with channel, delay, persona, template)",
        )
        if t is None:
            return None
        channel = (
            ck.choice(_join(path, "channel"), t["channel"], CHANNELS, "a channel")
            if "channel" in t
            else None
        )
        delay = ck.duration(_join(path, "delay"), t["delay"]) if "delay" in t else None
        persona = (
            ck.choice(_join(path, "persona"), t["persona"], list(PERSONAS), "a persona")
            if "persona" in t
            else None
        )
        ai = ck.boolean(_join(path, "ai"), t["ai"]) if "ai" in t else False
        template = (
            ck.template(_join(path, "template"), t["template"], channel=channel)
            if "template" in t
            else None
        )
        subject: str | None = None
        if "subject" in t:
            if channel is not None and channel != "email":
                ck.error(
                    _join(path, "subject"), f"only email touches have a subject, not {channel}"
                )
            else:
                subject = ck.template(_join(path, "subject"), t["subject"], channel=None)
                if subject is not None and "\n" in subject:
                    ck.error(_join(path, "subject"), "must be one line")
        variants: tuple[Variant, ...] = ()
        if "variants" in t:
            variants = _parse_variants(ck, _join(path, "variants"), t["variants"], channel) or ()
        if "template" in t and "variants" in t:
            ck.error(
                path, "give either template or variants, not both (each variant has a template)"
            )
        elif "template" not in t and "variants" not in t:
            ck.error(_join(path, "template"), "is required (or give variants)")
        no_subject = "variants" not in t or any(v.subject is None for v in variants)
        if channel == "email" and "subject" not in t and no_subject:
            ck.error(
                _join(path, "subject"),
                "is required for email touches (on the touch, or on every variant)",
            )
        if len(ck.problems) > before:
            return None
        assert channel is not None and delay is not None and persona is not None
        assert ai is not None
        return Touch(
            index=index,
            channel=cast(Channel, channel),
            delay=delay,
            persona=persona,
            template=template,
            subject=subject,
            ai=ai,
            variants=variants,
        )

    return parse


def _parse_variants(
    ck: _Checker, path: str, raw: object, channel: str | None
) -> tuple[Variant, ...] | None:
    if not isinstance(raw, list) or len(raw) < 2:
        ck.error(path, f"expected a list of at least two variants, got {raw!r:.60}")
        return None
    before = len(ck.problems)
    out: list[Variant] = []
    names: set[str] = set()
    total = 0
    for i, item in enumerate(raw, 1):
        p = f"{path}[{i}]"
        v = ck.mapping(
            p,
            item,
            required=("name", "weight", "template"),
            optional=("subject",),
            what="a variant",
        )
        if v is None:
            continue
        name = ck.pattern(
            _join(p, "name"),
            v.get("name"),
            _NAME_RE,
            "a variant name (letters, digits, '_' and '-', at most 32)",
        )
        if name is not None:
            if name in names:
                ck.error(_join(p, "name"), f"{name!r} is used by another variant")
            names.add(name)
        weight = ck.whole(_join(p, "weight"), v.get("weight"), low=0, high=100)
        total += weight or 0
        template = (
            ck.template(_join(p, "template"), v["template"], channel=channel)
            if "template" in v
            else None
        )
        subject = None
        if "subject" in v:
            if channel is not None and channel != "email":
                ck.error(_join(p, "subject"), f"only email touches have a subject, not {channel}")
            else:
                subject = ck.template(_join(p, "subject"), v["subject"], channel=None)
        if name is not None and weight is not None and template is not None:
            out.append(Variant(name, weight, template, subject))
    if len(ck.problems) == before and total != 100:
        ck.error(path, f"weights add up to {total}; they must add up to 100")
    if len(ck.problems) > before:
        return None
    return tuple(out)


def _parse_sender(ck: _Checker, raw: object, used: set[Channel]) -> Sender | None:
    fields = ("company", "postal_address", "unsubscribe_url", "email_from", "sms_from")
    before = len(ck.problems)
    s = ck.mapping("sender", raw, required=("company",), optional=fields[1:], what="a mapping")
    if s is None:
        return None
    values: dict[str, str | None] = dict.fromkeys(fields)
    if "company" in s:
        values["company"] = ck.string("sender.company", s["company"], max_len=200)
    if s.get("postal_address") is not None:
        address = ck.string("sender.postal_address", s["postal_address"], max_len=500)
        if address is not None and not any(c.isdigit() for c in address):
            ck.error(
                "sender.postal_address",
                "does not look like a postal address (no street number or PO box number)",
            )
        values["postal_address"] = address
    if s.get("unsubscribe_url") is not None:
        values["unsubscribe_url"] = _check_url(ck, "sender.unsubscribe_url", s["unsubscribe_url"])
    if s.get("email_from") is not None:
        values["email_from"] = _check_email(ck, "sender.email_from", s["email_from"])
    if s.get("sms_from") is not None:
        values["sms_from"] = ck.pattern(
            "sender.sms_from",
            s["sms_from"],
            _E164_RE,
            "a phone number in E.164 form (+15551234567)",
        )
    needs: list[tuple[str, str]] = []
    if "email" in used:
        needs += [
            ("email_from", "email touches"),
            ("postal_address", "email touches (CAN-SPAM)"),
            ("unsubscribe_url", "email touches (CAN-SPAM)"),
        ]
    if used & {"sms", "voice"}:
        needs.append(("sms_from", "sms and voice touches"))
    for key, why in needs:
        if s.get(key) is None:
            ck.error(f"sender.{key}", f"is required by {why}")
    if len(ck.problems) > before:
        return None
    assert values["company"] is not None
    return Sender(
        company=values["company"],
        postal_address=values["postal_address"],
        unsubscribe_url=values["unsubscribe_url"],
        email_from=values["email_from"],
        sms_from=values["sms_from"],
    )


def _check_url(ck: _Checker, path: str, value: object) -> str | None:
    text = ck.string(path, value, max_len=2000)
    if text is None:
        return None
    parts = urlsplit(text.replace("{token}", "t"))
    if parts.scheme not in ("http", "https") or not parts.netloc or " " in text:
        ck.error(path, f"{text!r} is not an http(s) URL")
        return None
    try:
        extra = set(_placeholders(text)) - {"token"}
    except ValueError:
        extra = {"?"}
    if extra:
        ck.error(path, "may use only the {token} placeholder")
        return None
    return text


def _check_email(ck: _Checker, path: str, value: object) -> str | None:
    text = ck.string(path, value, max_len=320)
    if text is None:
        return None
    _, address = parseaddr(text)
    local, _, domain = address.rpartition("@")
    if not local or "." not in domain or " " in address:
        ck.error(path, f"{text!r} is not an email address (Name <user@example.com>)")
        return None
    return text


def _parse_qualification(ck: _Checker, raw: object) -> Qualification | None:
    if raw is _MISSING:
        return Qualification()
    q = ck.mapping("qualification", raw, optional=("threshold", "tiers"))
    if q is None:
        return None
    before = len(ck.problems)
    tiers: dict[str, float] = dict(DEFAULT_TIERS)
    if "tiers" in q:
        raw_tiers = q["tiers"]
        if not isinstance(raw_tiers, Mapping) or not raw_tiers:
            ck.error("qualification.tiers", "expected a mapping of tier name -> minimum score")
        else:
            tiers = {}
            for name, minimum in raw_tiers.items():
                p = f"qualification.tiers.{name}"
                if not isinstance(name, str) or not _NAME_RE.match(name):
                    ck.error(p, f"{name!r} is not a tier name (letters, digits, '_' and '-')")
                    continue
                value = ck.number(p, minimum, low=0, high=100)
                if value is not None:
                    tiers[name] = value
            seen: dict[float, str] = {}
            for name, value in tiers.items():
                if value in seen:
                    ck.error(
                        f"qualification.tiers.{name}",
                        f"has the same minimum ({value:g}) as tier {seen[value]}",
                    )
                seen[value] = name
    ordered = dict(sorted(tiers.items(), key=lambda kv: -kv[1]))
    threshold = min(ordered.values()) if ordered else 50.0
    if "threshold" in q:
        value = ck.number("qualification.threshold", q["threshold"], low=0, high=100)
        if value is not None:
            threshold = value
            if ordered and len(ck.problems) == before:
                _check_tiers(ck, threshold, ordered, given="tiers" in q)
    if len(ck.problems) > before:
        return None
    return Qualification(threshold=threshold, tiers=ordered)


def _check_tiers(ck: _Checker, threshold: float, tiers: dict[str, float], *, given: bool) -> None:
    lowest_name, lowest = list(tiers.items())[-1]
    if not given:
        if lowest != threshold:
            ck.error(
                "qualification.threshold",
                f"{threshold:g} does not match the default tiers (A: 80, B: 65, C: 50): "
                f"give qualification.tiers too, with the lowest tier at {threshold:g}",
            )
        return
    for name, minimum in tiers.items():
        if minimum < threshold:
            ck.error(
                f"qualification.tiers.{name}",
                f"{minimum:g} is below the threshold {threshold:g}; leads under the "
                "threshold are disqualified and have no tier",
            )
    if lowest > threshold:
        ck.error(
            "qualification.tiers",
            f"the lowest tier {lowest_name} starts at {lowest:g} but the threshold "
            f"is {threshold:g}: scores from {threshold:g} to {lowest:g} would have "
            f"no tier (set {lowest_name}: {threshold:g})",
        )


def _parse_window(ck: _Checker, raw: object) -> SendWindow | None:
    if raw is _MISSING:
        return SendWindow()
    w = ck.mapping("send_window", raw, optional=("start", "end", "days", "states"))
    if w is None:
        return None
    before = len(ck.problems)
    start = ck.time_of_day("send_window.start", w["start"]) if "start" in w else TCPA_EARLIEST
    end = ck.time_of_day("send_window.end", w["end"]) if "end" in w else TCPA_LATEST
    days = ck.days("send_window.days", w["days"]) if "days" in w else frozenset(WEEKDAYS)
    if start is not None and start < TCPA_EARLIEST:
        ck.error(
            "send_window.start",
            f"{_fmt_time(start)} is before {_fmt_time(TCPA_EARLIEST)}, the earliest the TCPA "
            "allows (lead's local time)",
        )
    if end is not None and end > TCPA_LATEST:
        ck.error(
            "send_window.end",
            f"{_fmt_time(end)} is after {_fmt_time(TCPA_LATEST)}, the latest the TCPA allows "
            "(lead's local time)",
        )
    if start is not None and end is not None and start >= end:
        ck.error("send_window", f"start {_fmt_time(start)} must be before end {_fmt_time(end)}")
    states: dict[str, StateRule] = dict(DEFAULT_STATE_RULES)
    if "states" in w:
        raw_states = w["states"]
        if not isinstance(raw_states, Mapping):
            ck.error(
                "send_window.states",
                f"expected a mapping of state code -> rule, got {_kind(raw_states)}",
            )
        else:
            for code, raw_rule in raw_states.items():
                rule = _parse_state_rule(ck, code, raw_rule)
                if rule is not None:
                    states[str(code)] = rule
    if len(ck.problems) > before:
        return None
    assert start is not None and end is not None and days is not None
    window = SendWindow(start, end, days, dict(sorted(states.items())))
    for code in sorted(states):
        effective = window.window_for(code)
        if effective.start >= effective.end or not effective.days:
            ck.error(
                f"send_window.states.{code}",
                "leaves no time to send: the campaign window "
                f"{_fmt_time(start)}-{_fmt_time(end)} on {','.join(_fmt_days(days))} narrowed by "
                f"this rule is empty",
            )
    return None if len(ck.problems) > before else window


def _parse_state_rule(ck: _Checker, code: object, raw: object) -> StateRule | None:
    path = f"send_window.states.{code}"
    if not isinstance(code, str) or code not in US_STATES:
        hint = (
            f"; write {code.upper()}" if isinstance(code, str) and code.upper() in US_STATES else ""
        )
        ck.error(path, f"{code!r} is not a US state postal code{hint}")
        return None
    r = ck.mapping(path, raw, optional=("start", "end", "days", "no_sunday"), what="a state rule")
    if r is None:
        return None
    if not r:
        ck.error(path, "sets nothing; give start, end, days or no_sunday")
        return None
    before = len(ck.problems)
    start = ck.time_of_day(f"{path}.start", r["start"]) if "start" in r else None
    end = ck.time_of_day(f"{path}.end", r["end"]) if "end" in r else None
    days = ck.days(f"{path}.days", r["days"]) if "days" in r else None
    no_sunday = ck.boolean(f"{path}.no_sunday", r["no_sunday"]) if "no_sunday" in r else False
    if start is not None and end is not None and start >= end:
        ck.error(path, f"start {_fmt_time(start)} must be before end {_fmt_time(end)}")
    if len(ck.problems) > before:
        return None
    return StateRule(start=start, end=end, days=days, no_sunday=bool(no_sunday))


def _parse_channels(ck: _Checker, raw: object) -> dict[Channel, ChannelSettings] | None:
    channels: dict[Channel, ChannelSettings] = dict(DEFAULT_CHANNELS)
    if raw is _MISSING:
        return channels
    c = ck.mapping("channels", raw, optional=CHANNELS)
    if c is None:
        return None
    before = len(ck.problems)
    for name in CHANNELS:
        if name not in c:
            continue
        path = f"channels.{name}"
        s = ck.mapping(path, c[name], optional=("provider", "rate", "daily_cap"))
        if s is None:
            continue
        default = DEFAULT_CHANNELS[name]
        provider = default.provider
        if "provider" in s:
            provider = (
                ck.pattern(
                    f"{path}.provider",
                    s["provider"],
                    _PROVIDER_RE,
                    "a provider name (lowercase letters, digits, '_' and '-')",
                )
                or provider
            )
        rate = default.rate
        if "rate" in s:
            rate = s["rate"]
            if rate is not None:
                if not isinstance(rate, str):
                    ck.error(f"{path}.rate", f"{rate!r} is not a rate; write it as text: '100/60'")
                else:
                    problem = rate_problem(rate)
                    if problem is not None:
                        ck.error(f"{path}.rate", problem)
        cap = default.daily_cap
        if "daily_cap" in s and s["daily_cap"] is not None:
            cap = ck.whole(f"{path}.daily_cap", s["daily_cap"], low=1)
        elif "daily_cap" in s:
            cap = None
        channels[name] = ChannelSettings(provider, rate if isinstance(rate, str) else None, cap)
    return None if len(ck.problems) > before else channels


# --- YAML ------------------------------------------------------------------------------


class _Loader(yaml.SafeLoader):
    """Safe YAML, YAML 1.2 scalars: ``21:00``/``2024-01-01`` stay text, ``no`` is not false."""


_DROPPED_TAGS = {
    "tag:yaml.org,2002:bool",
    "tag:yaml.org,2002:int",
    "tag:yaml.org,2002:float",
    "tag:yaml.org,2002:timestamp",
}
_Loader.yaml_implicit_resolvers = {
    first: [(tag, rx) for tag, rx in resolvers if tag not in _DROPPED_TAGS]
    for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
}
_Loader.add_implicit_resolver(
    "tag:yaml.org,2002:bool", re.compile(r"^(?:true|True|TRUE|false|False|FALSE)$"), list("tTfF")
)
_Loader.add_implicit_resolver(
    "tag:yaml.org,2002:int", re.compile(r"^[-+]?(?:0|[1-9][0-9]*)$"), list("-+0123456789")
)
_Loader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(r"^[-+]?(?:[0-9]+\.[0-9]*|\.[0-9]+)(?:[eE][-+]?[0-9]+)?$"),
    list("-+0123456789."),
)


def _walk(
    node: yaml.Node,
    path: str,
    lines: dict[str, int],
    dupes: list[Problem],
    seen_nodes: set[int] | None = None,
) -> None:
    """Record the line of every path in the document; report duplicate keys.

    A node reached again through an alias is not walked twice (aliases may nest or recurse).
    """
    seen_nodes = set() if seen_nodes is None else seen_nodes
    if id(node) in seen_nodes:
        return
    seen_nodes.add(id(node))
    if isinstance(node, yaml.MappingNode):
        keys: set[str] = set()
        for key_node, value_node in node.value:
            if not isinstance(key_node, yaml.ScalarNode) or key_node.value == "<<":
                continue
            key = str(key_node.value)
            child = _join(path, key)
            line = key_node.start_mark.line + 1
            if key in keys:
                dupes.append(Problem(child, "duplicate key (the file gives it twice)", line))
            keys.add(key)
            lines.setdefault(child, line)
            _walk(value_node, child, lines, dupes, seen_nodes)
    elif isinstance(node, yaml.SequenceNode):
        for i, item in enumerate(node.value, 1):
            child = f"{path}[{i}]"
            lines.setdefault(child, item.start_mark.line + 1)
            _walk(item, child, lines, dupes, seen_nodes)


def load_campaign(path: str | Path) -> Campaign:
    """Read and validate the campaign file at ``path``.

    Raises :class:`CampaignValidationError` listing every problem (YAML
    syntax errors included, with their line), or :class:`ConfigError` when
    the file cannot be read.
    """
    file = Path(path)
    source = str(path)
    try:
        text = file.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(f"campaign file {source} does not exist") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"cannot read campaign file {source}: {exc}") from None
    return _load_text(text, source=source)


def _load_text(text: str, *, source: str) -> Campaign:
    loader = _Loader(text)
    try:
        node = loader.get_single_node()
        lines: dict[str, int] = {}
        dupes: list[Problem] = []
        if node is not None:
            _walk(node, "", lines, dupes)
        data = loader.construct_document(node) if node is not None else None
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        what = exc.problem or exc.context or "cannot parse"
        problem = Problem(
            "",
            f"YAML syntax error: {what}",
            mark.line + 1 if mark is not None else None,
            mark.column + 1 if mark is not None else None,
        )
        raise CampaignValidationError([problem], source=source) from None
    except yaml.YAMLError as exc:
        raise CampaignValidationError([Problem("", f"YAML error: {exc}")], source=source) from None
    finally:
        loader.dispose()
    if data is None:
        raise CampaignValidationError(
            [Problem("", "the file is empty; a campaign needs at least id, name and sender")],
            source=source,
        )
    return _parse(data, source=source, lines=lines, earlier=dupes)
