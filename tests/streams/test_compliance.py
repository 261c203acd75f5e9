"""Opt-out, re-subscribe and HELP classification (streams/compliance.py)."""

from __future__ import annotations

import pytest

from simulator.webhooks import HELP_WORDS as SIM_HELP_WORDS
from simulator.webhooks import OPT_OUT_WORDS as SIM_OPT_OUT_WORDS
from simulator.webhooks import REPLY_TEXTS as SIM_REPLY_TEXTS
from streams.compliance import (
    EVENT_KINDS,
    HELP_WORDS,
    OPT_OUT_PHRASES,
    OPT_OUT_WORDS,
    RESUBSCRIBE_WORDS,
    ReplyKind,
    classify_event,
    classify_reply,
    normalize_text,
)

OPT_OUT = ReplyKind.OPT_OUT
REPLY = ReplyKind.REPLY


def test_the_keyword_lists_are_the_fcc_list_plus_stopall() -> None:
    assert set(OPT_OUT_WORDS) == {
        "STOP",
        "QUIT",
        "END",
        "REVOKE",
        "OPT OUT",
        "CANCEL",
        "UNSUBSCRIBE",
        "STOPALL",
    }
    assert set(RESUBSCRIBE_WORDS) == {"START", "YES", "UNSTOP"}
    assert HELP_WORDS == ("HELP",)


@pytest.mark.parametrize("word", OPT_OUT_WORDS)
@pytest.mark.parametrize(
    "shape",
    [
        "{w}",
        "{lower}",
        "{title}",
        "  {w}  ",
        "{w}.",
        "{title}!",
        "{lower}!!!",
        "'{lower}'",
        "*{w}*",
        "\n{w}\n",
        "{w} texting me",
        "{title}, and don't write again",
        "{w}\n\nSent from my iPhone",
    ],
)
def test_every_keyword_in_every_shape_is_an_opt_out(word: str, shape: str) -> None:
    body = shape.format(w=word, lower=word.lower(), title=word.title())
    assert classify_reply(body) is OPT_OUT


@pytest.mark.parametrize(
    "body",
    [
        "STOP ALL",
        " stop all ",
        "Stop-All",
        "opt-out",
        "Opt_Out",
        "OPTOUT",
        "opt out.",
        "ＳＴＯＰ",  # full-width letters, as some phones send them
        "Un-subscribe",
    ],
)
def test_spelling_variants_are_opt_outs(body: str) -> None:
    assert classify_reply(body) is OPT_OUT


@pytest.mark.parametrize("body", SIM_OPT_OUT_WORDS)
def test_every_opt_out_the_simulator_sends_is_an_opt_out(body: str) -> None:
    assert classify_reply(body) is OPT_OUT


@pytest.mark.parametrize("phrase", OPT_OUT_PHRASES)
def test_every_documented_phrase_is_an_opt_out_inside_a_sentence(phrase: str) -> None:
    assert classify_reply(f"Hi, {phrase.upper()} thanks.") is OPT_OUT


@pytest.mark.parametrize(
    "body",
    [
        "Please remove me from your list",
        "Take me off your list.",
        "Do not contact me again",
        "Don't text me",
        "Don’t text me",  # curly apostrophe
        "dont call me anymore",
        "Leave me alone!",
        "Unsubscribe me please",
        "No more messages please",
        "Sorry, wrong number",
        "Please stop",
        "How do I unsubscribe?",
        "I want to opt out",
        "I revoke my consent",
        "lose my number",
        "Caller asked to be removed from the list",
    ],
)
def test_plain_language_opt_outs(body: str) -> None:
    assert classify_reply(body) is OPT_OUT


def test_a_keyword_as_first_word_counts_even_when_it_means_something_else() -> None:
    # The documented edge: honouring a possible opt-out beats texting someone who said stop.
    assert classify_reply("Stop by tomorrow?") is OPT_OUT
    assert classify_reply("End of quarter works for us") is OPT_OUT


@pytest.mark.parametrize(
    "body",
    [
        "I can't stop thinking about your offer",
        "We will cancel our current vendor next month",
        "Not interested",
        "Let's talk at the end of the week",
        "Stopped by your booth yesterday",
        "Ending soon? Send details",
        "Quitting time is 5, call after",
        "Help me understand the pricing",
        "Yes, let's talk Tuesday.",
        "Start with the pricing page please",
        "unstoppable product!",
        "",
        "   ",
        "...",
        None,
    ],
)
def test_ordinary_replies_are_replies(body: str | None) -> None:
    assert classify_reply(body) is REPLY


@pytest.mark.parametrize("body", SIM_REPLY_TEXTS)
def test_the_simulators_replies_are_replies(body: str) -> None:
    assert classify_reply(body) is REPLY


@pytest.mark.parametrize("body", ["START", "start", " Yes ", "YES!", "Unstop", "un-stop"])
def test_resubscribe_words_alone_resubscribe(body: str) -> None:
    assert classify_reply(body) is ReplyKind.RESUBSCRIBE


@pytest.mark.parametrize("body", [*SIM_HELP_WORDS, "HELP!", " help? "])
def test_help_alone_is_help(body: str) -> None:
    assert classify_reply(body) is ReplyKind.HELP


def test_opt_out_wins_over_everything_else() -> None:
    assert classify_reply("STOP help") is OPT_OUT
    assert classify_reply("yes please remove me") is OPT_OUT


def test_normalize_text_splits_on_punctuation_and_folds_case() -> None:
    assert normalize_text("  Don’t TEXT-me, ok?! ") == ["dont", "text", "me", "ok"]
    assert normalize_text("") == []


@pytest.mark.parametrize(
    ("kind", "body", "expected"),
    [
        ("reply", "STOP", "opt_out"),
        ("reply", "Who is this?", "reply"),
        ("reply", "HELP", "help"),
        ("reply", "start", "resubscribe"),
        ("Reply ", "Unsubscribe", "opt_out"),
        ("opt_out", "Caller asked to be removed from the list", "opt_out"),
        ("opt_out", "", "opt_out"),
        ("help", "HELP", "help"),
        ("delivery", "", "delivery"),
        ("bounce", "550 5.1.1 no such user", "bounce"),
        ("resubscribe", "START", "resubscribe"),
        ("read_receipt", "", "unknown"),
        (None, "STOP", "unknown"),
        ("unknown", "", "unknown"),
    ],
)
def test_classify_event(kind: str | None, body: str, expected: str) -> None:
    got = classify_event(kind, body)
    assert got == expected
    assert got in EVENT_KINDS
