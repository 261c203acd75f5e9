"""The SMTP email adapter without a server: the message it builds and how replies map."""

from __future__ import annotations

from datetime import UTC, datetime

import aiosmtplib
import pytest

from providers.base import EmailMessage
from providers.email_smtp import SmtpEmailAdapter
from providers.errors import (
    AuthenticationError,
    ClientError,
    InvalidRecipientError,
    ProviderConfigError,
    ServerError,
)
from providers.guard import Guard

MESSAGE = EmailMessage(
    campaign_id="camp-1",
    lead_id="lead-1",
    touch=3,
    to="jane@example.com",
    subject="Quick question",
    text="Hello Jane.\n\nUnsubscribe: https://x.test/u/1\nACME, 1 Main St, Springfield",
    html="<p>Hello Jane.</p>",
    list_unsubscribe="<https://x.test/u/1>",
    clock=datetime(2026, 1, 5, 9, 30, tzinfo=UTC),
)


def make(**kwargs: object) -> SmtpEmailAdapter:
    values: dict[str, object] = {
        "name": "email-smtp",
        "host": "127.0.0.1",
        "port": 8025,
        "guard": Guard("email-smtp"),
        "sender": "Sales <sales@acme.test>",
        "password": "smtp-secret",
    }
    values.update(kwargs)
    return SmtpEmailAdapter(**values)  # type: ignore[arg-type]


def test_message_carries_every_leadflow_header() -> None:
    mime = make().build_message(MESSAGE)
    assert mime["X-Leadflow-Campaign"] == "camp-1"
    assert mime["X-Leadflow-Lead"] == "lead-1"
    assert mime["X-Leadflow-Touch"] == "3"
    assert mime["X-Leadflow-Clock"] == "2026-01-05T09:30:00+00:00"
    assert mime["Idempotency-Key"] == MESSAGE.idempotency_key
    assert mime["List-Unsubscribe"] == "<https://x.test/u/1>"
    assert mime["Message-ID"] == f"<{MESSAGE.idempotency_key}@acme.test>"
    assert mime.is_multipart()
    assert "Unsubscribe: https://x.test/u/1" in mime.get_body(("plain",)).get_content()  # type: ignore[union-attr]


def test_message_id_is_stable_across_builds() -> None:
    adapter = make()
    assert (
        adapter.build_message(MESSAGE)["Message-ID"] == adapter.build_message(MESSAGE)["Message-ID"]
    )


def test_list_unsubscribe_is_required() -> None:
    with pytest.raises(ValueError, match=r"List|unsubscribe"):
        EmailMessage(
            campaign_id="c",
            lead_id="l",
            touch=1,
            to="a@b.c",
            subject="s",
            text="t",
            list_unsubscribe=" ",
        )


async def test_address_without_at_is_refused_without_a_call() -> None:
    adapter = make(port=1)  # nothing listens there; a call would fail differently
    bad = EmailMessage(
        campaign_id="c", lead_id="l", touch=1, to="not-an-address", subject="s", text="t",
        list_unsubscribe="<https://x/u>",
    )  # fmt: skip
    with pytest.raises(InvalidRecipientError):
        await adapter.send_email(bad)


@pytest.mark.parametrize(
    ("exc", "phase", "error_type"),
    [
        (
            aiosmtplib.SMTPDataError(451, "4.7.1 Rate limit exceeded, retry after 3 s"),
            "data",
            ServerError,
        ),
        (
            aiosmtplib.SMTPRecipientRefused(550, "no such user", "x"),
            "envelope",
            InvalidRecipientError,
        ),
        (
            aiosmtplib.SMTPAuthenticationError(535, "bad credentials"),
            "connect",
            AuthenticationError,
        ),
        (aiosmtplib.SMTPDataError(554, "rejected"), "data", ClientError),
    ],
)
def test_smtp_replies_map_to_typed_errors(
    exc: aiosmtplib.SMTPResponseException, phase: str, error_type: type
) -> None:
    error = make()._reply_error(exc, phase)  # type: ignore[arg-type]
    assert type(error) is error_type
    assert error.status == exc.code


def test_4xx_retry_after_text_is_honoured() -> None:
    error = make()._reply_error(
        aiosmtplib.SMTPDataError(451, "Try later, retry after 12 s"), "data"
    )
    assert isinstance(error, ServerError)
    assert error.retry_after == 12.0


@pytest.mark.parametrize(
    "kwargs", [{"host": ""}, {"port": 0}, {"tls": "ssl"}, {"sender": "no-address"}]
)
def test_bad_configuration_fails_at_construction(kwargs: dict[str, object]) -> None:
    with pytest.raises(ProviderConfigError):
        make(**kwargs)


def test_repr_hides_password_and_recipients() -> None:
    adapter = make()
    assert "smtp-secret" not in repr(adapter) and "smtp-secret" not in repr(vars(adapter))
    assert "jane" not in repr(MESSAGE)
