"""simulator/webhooks.py: signed delivery to a real receiver, the mix, retries, trigger API."""

from __future__ import annotations

import random
import socket
from datetime import datetime
from email.message import EmailMessage
from typing import Any

import aiosmtplib

from simulator.config import WebhookConfig
from simulator.ledger import SentMessage
from simulator.testing import JsonPost, StartSim, WebhookReceiver, fast_webhooks
from simulator.webhooks import OPT_OUT_WORDS, REPLY_TEXTS, plan_for

OFFICIAL_OPT_OUTS = {"STOP", "QUIT", "END", "REVOKE", "OPT OUT", "CANCEL", "UNSUBSCRIBE", "STOPALL"}


def message(channel: str = "sms", clock: str | None = "2026-01-05T15:00:00Z") -> SentMessage:
    return SentMessage(
        seq=0,
        provider_message_id=f"{channel}_1",
        channel=channel,
        campaign_id="c",
        lead_id="l",
        touch=1,
        recipient="x",
        idempotency_key=None,
        clock=clock,
        accepted_at=1_767_225_600.0,
    )


def test_opt_out_words_cover_the_fcc_list() -> None:
    assert {w.strip().rstrip(".").upper() for w in OPT_OUT_WORDS} == OFFICIAL_OPT_OUTS
    for text in REPLY_TEXTS:
        words = set(text.upper().replace(",", " ").replace(".", " ").replace("?", " ").split())
        assert not words & OFFICIAL_OPT_OUTS, text


def test_plan_mix_follows_the_rates() -> None:
    config = WebhookConfig(delivery_rate=0.9, reply_rate=0.1, opt_out_rate=0.05, bounce_rate=0.2)
    rng = random.Random(2)
    sms_kinds = [
        e.kind for _ in range(2000) for _, e in plan_for(message(), config, rng, time_scale=1)
    ]
    assert abs(sms_kinds.count("delivery") / 2000 - 0.9) < 0.03
    assert abs(sms_kinds.count("reply") / 2000 - 0.1) < 0.02
    assert abs(sms_kinds.count("opt_out") / 2000 - 0.05) < 0.015
    assert "bounce" not in sms_kinds
    email_kinds = [
        e.kind
        for _ in range(2000)
        for _, e in plan_for(message("email"), config, rng, time_scale=1)
    ]
    assert abs(email_kinds.count("bounce") / 2000 - 0.2) < 0.03


def test_occurred_at_follows_the_campaign_clock() -> None:
    config = WebhookConfig(delivery_rate=1.0, reply_rate=0.0, opt_out_rate=0.0)
    [(delay, event)] = plan_for(message(), config, random.Random(1), time_scale=3600)
    when = datetime.fromisoformat(event.occurred_at)
    start = datetime.fromisoformat("2026-01-05T15:00:00+00:00")
    assert abs((when - start).total_seconds() - delay * 3600) < 1
    assert delay > 0


async def test_webhooks_are_delivered_signed(
    sms: dict[str, Any], start_sim: StartSim, receiver: WebhookReceiver, post: JsonPost
) -> None:
    webhooks = fast_webhooks(
        receiver.url, receiver.secret.decode(), delivery_rate=1.0, opt_out_rate=1.0
    )
    async with start_sim(webhooks=webhooks) as sim:
        _, sent, _ = await post(
            f"{sim.http_url}/v1/sms", sms, {"X-Leadflow-Clock": "2026-01-05T15:00:00Z"}
        )
        await sim.webhooks_idle()
        stats = sim.stats()["webhooks"]
    assert sorted(receiver.kinds()) == ["delivery", "opt_out"]
    assert receiver.rejected == []
    for event in receiver.events:
        assert event["provider_message_id"] == sent["id"]
        assert (event["campaign_id"], event["lead_id"], event["channel"]) == (
            "camp-1",
            "lead-1",
            "sms",
        )
        assert event["provider"] == "sim" and event["event_id"].startswith("evt_")
        assert event["occurred_at"].startswith("2026-01-05T15:00")
    opt_out = next(e for e in receiver.events if e["kind"] == "opt_out")
    assert opt_out["body"] in OPT_OUT_WORDS
    assert stats["delivered"] == 2 and stats["delivered_by_kind"] == {"delivery": 1, "opt_out": 1}


async def test_email_bounce_is_delivered(start_sim: StartSim, receiver: WebhookReceiver) -> None:
    async with start_sim(
        webhooks=fast_webhooks(
            receiver.url, receiver.secret.decode(), bounce_rate=1.0, delivery_rate=1.0
        )
    ) as sim:
        mail = EmailMessage()
        mail["From"], mail["To"], mail["Subject"] = "a@x.example", "b@y.example", "Hi"
        mail["X-Leadflow-Campaign"], mail["X-Leadflow-Lead"] = "camp-1", "lead-3"
        mail["X-Leadflow-Touch"], mail["List-Unsubscribe"] = "2", "<mailto:u@x.example>"
        mail.set_content("hello")
        await aiosmtplib.send(mail, hostname=sim.smtp_host, port=sim.smtp_port)
        await sim.webhooks_idle()
    assert receiver.kinds() == ["bounce"]
    assert receiver.events[0]["channel"] == "email" and receiver.events[0]["status"] == "bounced"


async def test_bad_signature_is_rejected_by_the_receiver(
    sms: dict[str, Any], start_sim: StartSim, receiver: WebhookReceiver, post: JsonPost
) -> None:
    async with start_sim(
        webhooks=fast_webhooks(
            receiver.url, receiver.secret.decode(), bad_signature_rate=1.0, delivery_rate=1.0
        )
    ) as sim:
        await post(f"{sim.http_url}/v1/sms", sms)
        await sim.webhooks_idle()
        stats = sim.stats()["webhooks"]
    assert receiver.events == []
    assert receiver.rejected == ["bad_signature"]
    assert stats["rejected"] == 1 and stats["bad_signature_sent"] == 1
    assert stats["retries"] == 0  # a 401 is final


async def test_delivery_retries_while_the_pipeline_is_down(
    sms: dict[str, Any], start_sim: StartSim, receiver: WebhookReceiver, post: JsonPost
) -> None:
    receiver.fail_first = 2
    async with start_sim(
        webhooks=fast_webhooks(receiver.url, receiver.secret.decode(), delivery_rate=1.0)
    ) as sim:
        await post(f"{sim.http_url}/v1/sms", sms)
        await sim.webhooks_idle()
        stats = sim.stats()["webhooks"]
    assert receiver.requests == 3
    assert receiver.kinds() == ["delivery"]
    assert stats["retries"] == 2 and stats["delivered"] == 1 and stats["failed"] == 0


async def test_gives_up_after_the_configured_attempts(
    sms: dict[str, Any], start_sim: StartSim, post: JsonPost
) -> None:
    with socket.socket() as probe:  # a port nobody listens on: connection refused
        probe.bind(("127.0.0.1", 0))
        dead = f"http://127.0.0.1:{probe.getsockname()[1]}/x"
    async with start_sim(
        webhooks=fast_webhooks(dead, "x" * 16, delivery_rate=1.0, attempts=2)
    ) as sim:
        _, _, _ = await post(f"{sim.http_url}/v1/sms", sms)
        await sim.webhooks_idle()
        stats = sim.stats()["webhooks"]
    assert stats["failed"] == 1 and stats["retries"] == 1 and stats["delivered"] == 0


async def test_trigger_api(
    sms: dict[str, Any], start_sim: StartSim, receiver: WebhookReceiver, post: JsonPost
) -> None:
    async with start_sim(webhooks=fast_webhooks(receiver.url, receiver.secret.decode())) as sim:
        _, sent, _ = await post(f"{sim.http_url}/v1/sms", sms)
        trigger = f"{sim.http_url}/_sim/webhooks/trigger"
        status, answer, _ = await post(
            trigger,
            {
                "kind": "opt_out",
                "campaign_id": "camp-1",
                "lead_id": "lead-1",
                "body": "QUIT",
                "wait": True,
            },
        )
        assert status == 200
        assert answer["result"]["delivered"] is True and answer["result"]["status"] == 200
        status, queued, _ = await post(
            trigger, {"kind": "reply", "campaign_id": "camp-1", "lead_id": "lead-7"}
        )
        assert status == 202 and queued["queued"] is True
        await sim.webhooks_idle()
        status, bad, _ = await post(
            trigger,
            {
                "kind": "help",
                "campaign_id": "camp-1",
                "lead_id": "lead-1",
                "wait": True,
                "bad_signature": True,
            },
        )
        assert status == 200 and bad["result"] == {
            "event_id": bad["event"]["event_id"], "delivered": False, "status": 401,
            "attempts": 1, "error": "HTTP 401",
        }  # fmt: skip
        status, invalid, _ = await post(
            trigger, {"kind": "fax", "campaign_id": "c", "lead_id": "l"}
        )
        assert status == 400 and invalid["error"]["code"] == "invalid_request"
    opt_out, reply = receiver.events
    assert (opt_out["kind"], opt_out["body"], opt_out["provider_message_id"]) == (
        "opt_out",
        "QUIT",
        sent["id"],
    )
    assert (reply["kind"], reply["lead_id"], reply["provider_message_id"]) == (
        "reply",
        "lead-7",
        None,
    )
    assert receiver.rejected == ["bad_signature"]


async def test_trigger_without_webhooks_is_409(start_sim: StartSim, post: JsonPost) -> None:
    async with start_sim() as sim:
        status, body, _ = await post(
            f"{sim.http_url}/_sim/webhooks/trigger",
            {"kind": "reply", "campaign_id": "c", "lead_id": "l"},
        )
    assert (status, body["error"]["code"]) == (409, "webhooks_disabled")
