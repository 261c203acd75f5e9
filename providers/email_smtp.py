"""Email over real SMTP (aiosmtplib), one connection per message.

The adapter builds a MIME message from an :class:`~providers.base.EmailMessage`
and sends it as given; the caller supplies the compliance parts (the
``List-Unsubscribe`` value, and an unsubscribe link plus the sender's postal
address in the body). Headers set on every message::

    From, To, Subject, Date, Message-ID: <lf1-...@sender-domain>
    X-Leadflow-Campaign, X-Leadflow-Lead, X-Leadflow-Touch, X-Leadflow-Clock
    Idempotency-Key: lf1-...          List-Unsubscribe: <...>

``Message-ID`` is derived from the idempotency key, so every attempt of one
send carries the same id and receivers (and reconcile) can deduplicate.

How SMTP outcomes map (the SMTP transaction commits only when the server
answers the final ``.`` of DATA):

=================================================  ===========================================
what happened                                      outcome
=================================================  ===========================================
250 after DATA                                     :class:`~providers.base.SendResult`
connect/EHLO/AUTH/MAIL/RCPT failed or timed out    :class:`~providers.errors.ConnectionFailedError`
connection lost or timeout *during DATA*           :class:`~providers.errors.AmbiguousOutcomeError`
4xx reply (any stage; "retry after N s" honoured)  :class:`~providers.errors.ServerError` (retry)
550/551/553 to RCPT                                :class:`~providers.errors.InvalidRecipientError`
535 (auth)                                         :class:`~providers.errors.AuthenticationError`
other 5xx                                          :class:`~providers.errors.ClientError`
=================================================  ===========================================
"""

from __future__ import annotations

import asyncio
import email.message
import email.policy
import email.utils
import re
from typing import Any, ClassVar, Literal

import aiosmtplib

from providers.base import EmailMessage, Secret, SendResult, clock_header
from providers.cost import Charge
from providers.errors import (
    AmbiguousOutcomeError,
    AuthenticationError,
    ClientError,
    ConnectionFailedError,
    InvalidRecipientError,
    ProviderCallError,
    ProviderConfigError,
    ServerError,
)
from providers.guard import Attempt, Guard
from providers.idempotency import IDEMPOTENCY_HEADER

__all__ = ["SmtpEmailAdapter", "TlsMode"]

#: ``none``: plain SMTP (the simulator); ``starttls``: upgrade on 587; ``tls``: implicit TLS on 465.
TlsMode = Literal["none", "starttls", "tls"]

_Phase = Literal["connect", "envelope", "data"]

#: A 4xx reply text may say when to come back ("... retry after 30 s").
_RETRY_AFTER = re.compile(r"retry after (\d+(?:\.\d+)?) ?s", re.IGNORECASE)


class SmtpEmailAdapter:
    """Sends email over SMTP; implements ``EmailProvider``.

    ``password`` is a :class:`~providers.base.Secret` or a string (wrapped).
    ``default_cost`` is charged per accepted (or ambiguous) message.
    """

    kind: ClassVar[str] = "email"

    def __init__(
        self,
        *,
        name: str,
        host: str,
        port: int,
        guard: Guard,
        sender: str,
        username: str = "",
        password: Any = "",
        tls: TlsMode = "none",
        default_cost: float = 0.1,
        validate_certs: bool = True,
    ) -> None:
        if not host.strip():
            raise ProviderConfigError(f"SMTP host of {name!r} is empty")
        if not 0 < port < 65536:
            raise ProviderConfigError(f"SMTP port {port} of {name!r} is not a TCP port")
        if tls not in ("none", "starttls", "tls"):
            raise ProviderConfigError(f"SMTP TLS mode {tls!r} must be none, starttls or tls")
        if "@" not in sender:
            raise ProviderConfigError(f"email sender of {name!r} is not an address")
        self.name = name
        self.host = host
        self.port = port
        self.guard = guard
        self.sender = sender
        self.username = username
        self._password = password if isinstance(password, Secret) else Secret(str(password))
        self.tls: TlsMode = tls
        self.default_cost = default_cost
        self.validate_certs = validate_certs

    def build_message(self, message: EmailMessage) -> email.message.EmailMessage:
        """The MIME message for ``message`` (text, plus HTML as an alternative)."""
        sender = message.sender or self.sender
        key = message.idempotency_key
        mime = email.message.EmailMessage()
        mime["From"] = sender
        mime["To"] = message.to
        mime["Subject"] = message.subject
        mime["Date"] = email.utils.formatdate(localtime=False, usegmt=True)
        domain = sender.rpartition("@")[2].strip(">") or "leadflow.invalid"
        mime["Message-ID"] = f"<{key}@{domain}>"
        mime["X-Leadflow-Campaign"] = message.campaign_id
        mime["X-Leadflow-Lead"] = message.lead_id
        mime["X-Leadflow-Touch"] = str(message.touch)
        mime["X-Leadflow-Clock"] = clock_header(message.clock)
        mime[IDEMPOTENCY_HEADER] = key
        mime["List-Unsubscribe"] = message.list_unsubscribe
        if message.reply_to:
            mime["Reply-To"] = message.reply_to
        for name, value in message.headers.items():
            if name in mime:
                mime.replace_header(name, value)
            else:
                mime[name] = value
        mime.set_content(message.text)
        if message.html is not None:
            mime.add_alternative(message.html, subtype="html")
        return mime

    async def send_email(self, message: EmailMessage) -> SendResult:
        """Send one email under the guard."""
        if "@" not in message.to:
            raise InvalidRecipientError(self.name, "recipient is not an email address")
        key = message.idempotency_key
        mime = self.build_message(message)
        message_id = str(mime["Message-ID"])
        recipient = message.to
        sender = message.sender or self.sender

        async def attempt(at: Attempt) -> SendResult:
            await self._deliver(mime, sender, recipient, at.timeout)
            return SendResult(
                provider=self.name,
                message_id=message_id,
                status="accepted",
                cost_units=self.default_cost,
                idempotency_key=key,
                attempts=at.number,
            )

        return await self.guard.call(
            attempt,
            charge=lambda r: [Charge(message.campaign_id, r.cost_units)],
            side_effect=True,
            idempotency_key=key,
            ambiguous_charge=Charge(message.campaign_id, self.default_cost),
        )

    async def _deliver(
        self, mime: email.message.EmailMessage, sender: str, recipient: str, timeout: float
    ) -> None:
        phase: _Phase = "connect"
        smtp = aiosmtplib.SMTP(
            hostname=self.host,
            port=self.port,
            timeout=timeout,
            use_tls=self.tls == "tls",
            start_tls=self.tls == "starttls",
            validate_certs=self.validate_certs,
        )
        try:
            async with asyncio.timeout(timeout):
                await smtp.connect()
                if self.username:
                    await smtp.login(self.username, self._password.reveal())
                phase = "envelope"
                if (sender + recipient).isascii():
                    await smtp.mail(sender)
                    await smtp.rcpt(recipient)
                    payload = mime.as_bytes()
                else:  # an internationalised address needs SMTPUTF8 (RFC 6531)
                    if smtp.last_ehlo_response is None:
                        await smtp.ehlo()
                    if not smtp.supports_extension("smtputf8"):
                        raise InvalidRecipientError(
                            self.name,
                            "address is not ASCII and the server does not offer SMTPUTF8",
                        )
                    await smtp.mail(sender, options=["SMTPUTF8"], encoding="utf-8")
                    await smtp.rcpt(recipient, encoding="utf-8")
                    payload = mime.as_bytes(policy=email.policy.SMTPUTF8)
                phase = "data"
                await smtp.data(payload)
        except aiosmtplib.SMTPResponseException as exc:
            raise self._reply_error(exc, phase) from None
        except aiosmtplib.SMTPRecipientsRefused:
            raise InvalidRecipientError(self.name, "SMTP recipient refused") from None
        except (aiosmtplib.SMTPException, OSError, TimeoutError) as exc:
            timed_out = isinstance(exc, TimeoutError)
            what = "timed out" if timed_out else f"connection lost ({type(exc).__name__})"
            if phase == "data":
                raise AmbiguousOutcomeError(
                    self.name, f"SMTP DATA sent, then {what}", timed_out=timed_out
                ) from None
            raise ConnectionFailedError(self.name, f"SMTP {phase} failed: {what}") from None
        finally:
            if smtp.is_connected:
                try:
                    async with asyncio.timeout(1.0):
                        await smtp.quit()
                except (aiosmtplib.SMTPException, OSError, TimeoutError):
                    smtp.close()

    def _reply_error(
        self, exc: aiosmtplib.SMTPResponseException, phase: _Phase
    ) -> ProviderCallError:
        code = exc.code
        detail = f"SMTP {code} during {phase}"
        if 400 <= code < 500:
            match = _RETRY_AFTER.search(exc.message or "")
            retry_after = float(match.group(1)) if match else None
            return ServerError(self.name, detail, status=code, retry_after=retry_after)
        if code in (530, 534, 535):
            return AuthenticationError(self.name, detail, status=code)
        if isinstance(exc, aiosmtplib.SMTPRecipientRefused) and code in (550, 551, 553):
            return InvalidRecipientError(self.name, detail, status=code)
        return ClientError(self.name, detail, status=code)

    async def aclose(self) -> None:
        """Nothing to release: connections live for one message."""

    def __repr__(self) -> str:
        return f"SmtpEmailAdapter(name={self.name!r}, host={self.host!r}, port={self.port})"
