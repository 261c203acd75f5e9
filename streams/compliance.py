"""What an inbound message means for consent: opt-out, re-subscribe, HELP or a reply.

Pure functions, no I/O. The webhook endpoint (``agents/webhooks.py``) and the
inbound stage (``agents/inbound.py``) both call :func:`classify_event`, so they
always agree on what an event is.

Rules of :func:`classify_reply`, applied to the text after normalising it
(Unicode NFKC, case-folded, apostrophes dropped, every run of other
punctuation or whitespace made one space, so ``"Stop."``, ``" stop all "``,
``"OPT-OUT"``, ``"ＳＴＯＰ"`` and ``"don’t"`` all compare as typed words):

1. **Opt-out** (:data:`OPT_OUT_WORDS`, FCC 24-24 plus STOPALL):

   * a keyword is the whole message (``STOP``, ``Stop all``, ``opt-out``,
     ``optout``);
   * or a keyword is the first word (``STOP texting me``,
     ``Unsubscribe please``). This deliberately also catches ``"Stop by
     tomorrow?"`` and ``"End of quarter works"``: the cost of a false positive
     is one lost lead, the cost of a false negative is a message sent to
     someone who revoked consent (TCPA: per-message damages). Where the rule
     and a reasonable reading disagree, we side with honouring the opt-out;
   * or one of the unambiguous words (:data:`_ANYWHERE_WORDS`: UNSUBSCRIBE,
     STOPALL, REVOKE, OPT OUT) appears anywhere (``"How do I unsubscribe?"``);
   * or one of :data:`OPT_OUT_PHRASES` appears anywhere as whole words
     (``"Please remove me from your list"``, ``"don't text me again"``,
     ``"wrong number"``). DOMAIN.md asks that wording a reasonable person reads
     as an opt-out be honoured; the list is the common ways of saying it.

   ``STOP``, ``QUIT``, ``END`` and ``CANCEL`` elsewhere in a sentence do not
   count on their own (``"we will cancel our current vendor"``,
   ``"I can't stop thinking about it"``): they are too common in ordinary
   replies. ``"wrong number"`` is an opt-out because whoever holds the number
   never consented; continuing to text them is the reassigned-number problem.
   ``"not interested"`` is *not* an opt-out: it is a reply, which already stops
   this campaign's sequence; an opt-out would also stop every other campaign.
   Negations are not parsed (``"don't stop texting"`` contains ``stop
   texting``): rare, and again the safe direction.
2. **Re-subscribe** (:data:`RESUBSCRIBE_WORDS`: START, YES, UNSTOP): only when
   the keyword is the *whole* message. ``"Yes, let's talk Tuesday."`` is a
   reply. The inbound stage treats a bare ``YES``/``START`` as a re-subscribe
   only from a lead that is opted out; from anyone else it is a reply.
3. **HELP** (:data:`HELP_WORDS`): only the whole message (``"help"``,
   ``"HELP!"``); ``"help me understand pricing"`` is a reply.
4. Anything else, an empty body included, is an ordinary **reply**.
"""

from __future__ import annotations

import itertools
import re
import unicodedata
from enum import StrEnum
from typing import Final

__all__ = [
    "EVENT_KINDS",
    "HELP_WORDS",
    "OPT_OUT_PHRASES",
    "OPT_OUT_WORDS",
    "RESUBSCRIBE_WORDS",
    "ReplyKind",
    "classify_event",
    "classify_reply",
    "normalize_text",
]


class ReplyKind(StrEnum):
    """What an inbound message asks for."""

    OPT_OUT = "opt_out"
    RESUBSCRIBE = "resubscribe"
    HELP = "help"
    REPLY = "reply"


#: The opt-out keywords (FCC 24-24's list, plus STOPALL as carriers honour it).
OPT_OUT_WORDS: Final = (
    "STOP",
    "QUIT",
    "END",
    "REVOKE",
    "OPT OUT",
    "CANCEL",
    "UNSUBSCRIBE",
    "STOPALL",
)

#: Re-subscribe keywords (whole message only).
RESUBSCRIBE_WORDS: Final = ("START", "YES", "UNSTOP")

#: HELP keywords (whole message only).
HELP_WORDS: Final = ("HELP",)

#: Plain-language opt-outs, matched as whole words anywhere in the message.
OPT_OUT_PHRASES: Final = (
    "remove me",
    "remove my number",
    "remove us",
    "be removed",
    "take me off",
    "take my number off",
    "take us off",
    "opt me out",
    "unsubscribe me",
    "do not contact",
    "dont contact",
    "do not text",
    "dont text",
    "do not call",
    "dont call",
    "do not message",
    "dont message",
    "do not email",
    "dont email",
    "stop texting",
    "stop messaging",
    "stop calling",
    "stop emailing",
    "stop contacting",
    "stop sending",
    "please stop",
    "no more texts",
    "no more messages",
    "no more calls",
    "no more emails",
    "leave me alone",
    "lose my number",
    "delete my number",
    "wrong number",
)

#: Every kind :func:`classify_event` returns.
EVENT_KINDS: Final = (
    "delivery",
    "bounce",
    "reply",
    "opt_out",
    "help",
    "resubscribe",
    "unknown",
)

_APOSTROPHES = re.compile(r"['‘’ʼ`´]")
_NON_WORD = re.compile(r"[^0-9a-z]+")


def _squash(word: str) -> str:
    return word.lower().replace(" ", "")


#: Keywords as one squashed token ("opt out" -> "optout", "stop all" -> "stopall").
_OPT_OUT_SQUASHED: Final = frozenset(_squash(w) for w in OPT_OUT_WORDS)
#: Opt-out words that count anywhere in a message (they have no everyday meaning).
_ANYWHERE_WORDS: Final = frozenset({"unsubscribe", "stopall", "revoke", "optout"})
_RESUBSCRIBE: Final = frozenset(_squash(w) for w in RESUBSCRIBE_WORDS)
_HELP: Final = frozenset(_squash(w) for w in HELP_WORDS)
_PHRASES: Final = tuple(f" {p} " for p in OPT_OUT_PHRASES)


def normalize_text(body: str) -> list[str]:
    """The words of ``body``: NFKC, case-folded, apostrophes dropped, split on the rest."""
    text = unicodedata.normalize("NFKC", body).casefold()
    text = _APOSTROPHES.sub("", text)
    return [w for w in _NON_WORD.split(text) if w]


def classify_reply(body: str | None) -> ReplyKind:
    """What an inbound message asks for (see the module docstring for the rules)."""
    words = normalize_text(body or "")
    if not words:
        return ReplyKind.REPLY
    whole = "".join(words)
    if whole in _OPT_OUT_SQUASHED:
        return ReplyKind.OPT_OUT
    if words[0] in _OPT_OUT_SQUASHED or "".join(words[:2]) in {"optout", "stopall"}:
        return ReplyKind.OPT_OUT
    if any(w in _ANYWHERE_WORDS for w in words):
        return ReplyKind.OPT_OUT
    if any(a + b == "optout" for a, b in itertools.pairwise(words)):
        return ReplyKind.OPT_OUT
    spaced = f" {' '.join(words)} "
    if any(p in spaced for p in _PHRASES):
        return ReplyKind.OPT_OUT
    if whole in _RESUBSCRIBE:
        return ReplyKind.RESUBSCRIBE
    if whole in _HELP:
        return ReplyKind.HELP
    return ReplyKind.REPLY


def classify_event(kind: str | None, body: str | None) -> str:
    """The effective kind of an inbound event: one of :data:`EVENT_KINDS`.

    The provider's ``kind`` is trusted for ``opt_out``, ``help``,
    ``resubscribe``, ``delivery`` and ``bounce`` (a provider that already
    recognised a STOP, or a voice call where the lead asked to be removed);
    a ``reply`` is classified by its ``body`` with :func:`classify_reply`, so a
    STOP the provider did not recognise is still an opt-out. Any other kind is
    ``unknown``.
    """
    name = (kind or "").strip().lower()
    if name == "reply":
        return classify_reply(body).value
    if name in EVENT_KINDS and name != "unknown":
        return name
    return "unknown"
