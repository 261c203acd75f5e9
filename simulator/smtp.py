"""The simulator's SMTP server (aiosmtpd), run on the simulator's own event loop.

Each message must carry ``X-Leadflow-Campaign``, ``X-Leadflow-Lead``,
``X-Leadflow-Touch`` and ``List-Unsubscribe`` (CAN-SPAM); ``X-Leadflow-Clock``
and ``Idempotency-Key`` are optional and recorded. The ``email`` endpoint's
behaviour applies at DATA: outage and rate limit answer ``451`` with a
"retry after N s" text, an injected error ``451 4.3.0``, a timeout hangs, and a
drop records the message then closes the connection without a reply.

AUTH PLAIN/LOGIN is offered without TLS (this is a local stand-in); any
credentials pass unless ``api_key`` is configured, then the password must match.
"""

from __future__ import annotations

import asyncio
import email.policy
import hmac
import logging
from email.message import EmailMessage
from email.parser import BytesHeaderParser
from typing import Any, Final

from aiosmtpd.smtp import SMTP, AuthResult, Envelope, LoginPassword, Session

from simulator.behaviour import Outcome
from simulator.state import SimState
from simulator.webhooks import parse_clock

__all__ = ["REQUIRED_HEADERS", "SimSMTPHandler", "start_smtp_server"]

log = logging.getLogger("leadflow.sim.smtp")

#: Headers every campaign email must carry.
REQUIRED_HEADERS: Final = (
    "X-Leadflow-Campaign",
    "X-Leadflow-Lead",
    "X-Leadflow-Touch",
    "List-Unsubscribe",
)


class SimSMTPHandler:
    """aiosmtpd handler that applies the ``email`` behaviour and records messages."""

    def __init__(self, state: SimState) -> None:
        self.state = state

    def authenticate(
        self, server: SMTP, session: Session, envelope: Envelope, mechanism: str, data: Any
    ) -> AuthResult:
        """aiosmtpd authenticator: any login, or the configured api_key as password."""
        expected = self.state.config.api_key
        if expected is None:
            return AuthResult(success=True)
        if isinstance(data, LoginPassword):
            password = bytes(data.password)
            if hmac.compare_digest(password, expected.encode()):
                return AuthResult(success=True)
        # handled=False: let aiosmtpd answer "535 5.7.8 Authentication credentials invalid".
        return AuthResult(success=False, handled=False)

    async def handle_DATA(  # noqa: N802 - the name aiosmtpd calls
        self, server: SMTP, session: Session, envelope: Envelope
    ) -> str:
        """Apply behaviour, validate the headers, record, answer."""
        state = self.state
        behaviour = state.behaviours["email"]
        decision = behaviour.decide()
        if decision.outcome is Outcome.OUTAGE:
            state.ledger.count("email", "outage")
            wait = decision.retry_after_s
            return f"451 4.3.2 Service unavailable (simulated outage), retry after {wait} s"
        if decision.outcome is Outcome.RATE_LIMITED:
            state.ledger.count("email", "rate_limited")
            return f"451 4.7.1 Rate limit exceeded, retry after {decision.retry_after_s} s"
        raw = envelope.original_content or envelope.content or b""
        if isinstance(raw, str):
            raw = raw.encode("utf-8", "surrogateescape")
        headers: EmailMessage = BytesHeaderParser(policy=email.policy.default).parsebytes(raw)
        problem = _check_headers(headers)
        if problem:
            state.ledger.count("email", "invalid")
            return problem
        await state.hang(decision.latency_s)
        if decision.outcome is Outcome.ERROR:
            state.ledger.count("email", "error")
            return "451 4.3.0 Simulated temporary failure"
        if decision.outcome is Outcome.TIMEOUT:
            state.ledger.count("email", "timeout")
            await state.hang(state.config.endpoint("email").timeout_s)
            return "451 4.4.2 Simulated timeout"
        key = _header(headers, "Idempotency-Key") or None
        if key and state.config.dedupe_idempotency_keys:
            first = state.ledger.first_with_key(key)
            if first is not None and first.channel == "email":
                state.ledger.count("email", "idempotent_replay")
                return f"250 2.0.0 OK queued as {first.provider_message_id}"
        message_id = _header(headers, "Message-ID").strip().strip("<>")
        message = state.accept(
            channel="email",
            campaign_id=_header(headers, "X-Leadflow-Campaign"),
            lead_id=_header(headers, "X-Leadflow-Lead"),
            touch=int(_header(headers, "X-Leadflow-Touch")),
            recipient=",".join(envelope.rcpt_tos),
            idempotency_key=key,
            clock=_header(headers, "X-Leadflow-Clock") or None,
            provider_message_id=message_id or None,
            response_lost=decision.outcome is Outcome.DROP,
        )
        if decision.outcome is Outcome.DROP and server.transport is not None:
            server.transport.close()
            return "250 2.0.0 OK (never seen: connection closed)"
        return f"250 2.0.0 OK queued as {message.provider_message_id}"


def _header(headers: EmailMessage, name: str) -> str:
    value = headers.get(name)
    return "" if value is None else str(value).strip()


def _check_headers(headers: EmailMessage) -> str | None:
    for name in REQUIRED_HEADERS:
        if not _header(headers, name):
            code = "5.7.1" if name == "List-Unsubscribe" else "5.6.0"
            return f"550 {code} Missing {name} header"
    touch = _header(headers, "X-Leadflow-Touch")
    if not touch.isdigit() or int(touch) < 1:
        return "550 5.6.0 X-Leadflow-Touch must be an integer >= 1"
    clock = _header(headers, "X-Leadflow-Clock")
    if clock:
        try:
            parse_clock(clock)
        except ValueError:
            return "550 5.6.0 X-Leadflow-Clock is not an ISO 8601 time"
    return None


async def start_smtp_server(state: SimState, host: str, port: int) -> asyncio.Server:
    """Listen for SMTP on ``host:port`` (0: any free port) on the running loop."""
    loop = asyncio.get_running_loop()
    handler = SimSMTPHandler(state)

    def factory() -> SMTP:
        return SMTP(
            handler,
            hostname="leadflow-sim",
            ident="leadflow sim SMTP",
            auth_require_tls=False,
            authenticator=handler.authenticate,
            # Like most real providers: internationalised addresses (RFC 6531).
            enable_SMTPUTF8=True,
            timeout=60,
            loop=loop,
        )

    return await loop.create_server(factory, host=host, port=port)
