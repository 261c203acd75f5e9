"""simulator/smtp.py over real SMTP (aiosmtplib)."""

from __future__ import annotations

from email.message import EmailMessage

import aiosmtplib
import pytest

from simulator import Simulator
from simulator.testing import StartSim


def campaign_email(*, touch: int = 1, unsubscribe: bool = True, **headers: str) -> EmailMessage:
    message = EmailMessage()
    message["From"] = "Gianna <gianna@leadflow.example>"
    message["To"] = "prospect@example.com"
    message["Subject"] = "Quick question"
    message["X-Leadflow-Campaign"] = "camp-1"
    message["X-Leadflow-Lead"] = "lead-9"
    message["X-Leadflow-Touch"] = str(touch)
    if unsubscribe:
        message["List-Unsubscribe"] = "<mailto:unsubscribe@leadflow.example?subject=lead-9>"
    for name, value in headers.items():
        message[name.replace("_", "-")] = value
    message.set_content("Hello from leadflow.")
    return message


async def send(sim: Simulator, message: EmailMessage, **kw: object) -> tuple[dict, str]:
    return await aiosmtplib.send(message, hostname=sim.smtp_host, port=sim.smtp_port, **kw)  # type: ignore[arg-type]


async def test_email_is_accepted_and_recorded(sim: Simulator) -> None:
    message = campaign_email(
        Idempotency_Key="camp-1:lead-9:1",
        X_Leadflow_Clock="2026-01-05T15:00:00Z",
        Message_ID="<abc123@leadflow.example>",
    )
    _, reply = await send(sim, message)
    assert "queued as abc123@leadflow.example" in reply
    [recorded] = sim.ledger.messages
    assert recorded.channel == "email"
    assert recorded.provider_message_id == "abc123@leadflow.example"
    assert (recorded.campaign_id, recorded.lead_id, recorded.touch) == ("camp-1", "lead-9", 1)
    assert recorded.idempotency_key == "camp-1:lead-9:1"
    assert recorded.clock == "2026-01-05T15:00:00Z"
    assert recorded.recipient == "prospect@example.com"


async def test_email_without_message_id_gets_one(sim: Simulator) -> None:
    _, reply = await send(sim, campaign_email())
    assert sim.ledger.messages[0].provider_message_id.startswith("email_")
    assert sim.ledger.messages[0].provider_message_id in reply


async def test_missing_unsubscribe_header_is_refused(sim: Simulator) -> None:
    with pytest.raises(aiosmtplib.SMTPDataError) as excinfo:
        await send(sim, campaign_email(unsubscribe=False))
    assert excinfo.value.code == 550
    assert "List-Unsubscribe" in excinfo.value.message
    assert sim.ledger.messages == []


async def test_email_duplicates_are_detected(sim: Simulator) -> None:
    await send(sim, campaign_email(Idempotency_Key="k1"))
    await send(sim, campaign_email(Idempotency_Key="k2"))
    assert sim.stats()["duplicates"]["by_campaign_lead_touch"] == 1


async def test_email_rate_limit_is_a_temporary_failure(start_sim: StartSim) -> None:
    async with start_sim(endpoints={"email": {"rate_limit": "1/60"}}) as sim:
        await send(sim, campaign_email(touch=1))
        with pytest.raises(aiosmtplib.SMTPDataError) as excinfo:
            await send(sim, campaign_email(touch=2))
        assert sim.stats()["rate_limited_total"] == 1
    assert excinfo.value.code == 451
    assert "retry after" in excinfo.value.message


async def test_email_drop_after_accept_records_but_closes(start_sim: StartSim) -> None:
    async with start_sim(endpoints={"email": {"drop_after_accept_rate": 1.0}}) as sim:
        with pytest.raises(aiosmtplib.SMTPException):
            await send(sim, campaign_email(), timeout=2)
        [recorded] = sim.ledger.messages
        assert recorded.response_lost


async def test_smtp_auth_checks_the_api_key(start_sim: StartSim) -> None:
    async with start_sim(api_key="smtp-key") as sim:
        with pytest.raises(aiosmtplib.SMTPAuthenticationError):
            await send(sim, campaign_email(), username="u", password="wrong")
        await send(sim, campaign_email(), username="u", password="smtp-key")
        assert len(sim.ledger.messages) == 1
