"""The HTTP transport seam: one small interface between adapters and the wire.

An adapter builds an :class:`HttpRequest`, hands it to an
:class:`HttpTransport` and reads the :class:`HttpResponse`. The real
transport is :class:`AiohttpTransport` (one shared ``aiohttp.ClientSession``
with a connection pool); tests inject :class:`MockTransport`, whose handler
is a plain function of the request (the httpx ``MockTransport`` idea).

A transport answers with whatever HTTP status the provider sent; it raises
only when no complete answer arrived, and then it says whether the request
had already been written:

* :class:`~providers.errors.ConnectionFailedError` — the request was not
  (fully) sent: connect refused or timed out, DNS failure, the connection
  closed before the body went out. Safe to retry.
* :class:`~providers.errors.AmbiguousOutcomeError` — the whole request was
  written, then the connection was reset or closed, or no (complete) answer
  came within the timeout. The provider may have acted on it.

"Written" is observed with aiohttp's request tracing: the body counts as sent
once every byte of it has been handed to the socket.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from types import SimpleNamespace
from typing import Protocol

import aiohttp

from providers.errors import AmbiguousOutcomeError, ConnectionFailedError, ProviderConfigError

__all__ = [
    "AiohttpTransport",
    "HttpRequest",
    "HttpResponse",
    "HttpTransport",
    "MockTransport",
]


@dataclass(frozen=True, slots=True)
class HttpRequest:
    """One request. ``headers`` and ``body`` stay out of ``repr`` (credentials, PII)."""

    provider: str
    method: str
    url: str
    headers: Mapping[str, str] = field(repr=False)
    body: bytes = field(default=b"", repr=False)
    timeout: float = 5.0


@dataclass(frozen=True, slots=True)
class HttpResponse:
    """One complete answer. Header names are lower-case."""

    status: int
    headers: Mapping[str, str] = field(default_factory=dict)
    body: bytes = field(default=b"", repr=False)

    def header(self, name: str) -> str | None:
        """Header ``name`` (any case), or None."""
        return self.headers.get(name.lower())


class HttpTransport(Protocol):
    """Sends an :class:`HttpRequest` and returns the complete :class:`HttpResponse`."""

    async def send(self, request: HttpRequest) -> HttpResponse:
        """Send ``request``; raise ConnectionFailedError or AmbiguousOutcomeError when no
        complete answer arrived."""
        ...

    async def aclose(self) -> None:
        """Release connections."""
        ...


async def _on_chunk_sent(
    session: aiohttp.ClientSession,
    ctx: SimpleNamespace,
    params: aiohttp.TraceRequestChunkSentParams,
) -> None:
    state = ctx.trace_request_ctx
    if isinstance(state, _SendState):
        state.sent += len(params.chunk)


class _SendState:
    __slots__ = ("expected", "sent")

    def __init__(self, expected: int) -> None:
        self.expected = expected
        self.sent = 0

    @property
    def fully_sent(self) -> bool:
        return self.sent >= self.expected


class AiohttpTransport:
    """The real transport: one ``aiohttp.ClientSession`` shared by every adapter.

    The session (with its connection pool of at most ``limit`` connections
    and the tracing that tells "sent" from "not sent") is created on first
    use, inside the running event loop, and closed by :meth:`aclose`.

    Idle connections are dropped after ``keepalive_timeout`` seconds (4 s,
    below the 5 s idle timeout of many servers): a POST written to a
    connection the server has just closed cannot be told from a lost answer,
    so it would surface as an ambiguous outcome.
    """

    def __init__(self, *, limit: int = 100, keepalive_timeout: float = 4.0) -> None:
        self._session: aiohttp.ClientSession | None = None
        self._limit = limit
        self._keepalive = keepalive_timeout
        self._trace = aiohttp.TraceConfig()
        self._trace.on_request_chunk_sent.append(_on_chunk_sent)

    def _get_session(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            self._session = aiohttp.ClientSession(
                connector=aiohttp.TCPConnector(
                    limit=self._limit, keepalive_timeout=self._keepalive
                ),
                trace_configs=[self._trace],
            )
        return self._session

    async def send(self, request: HttpRequest) -> HttpResponse:
        """Send ``request`` over the shared session (see the module docstring for errors)."""
        session = self._get_session()
        state = _SendState(len(request.body) or 1)
        timeout = aiohttp.ClientTimeout(total=request.timeout)
        provider = request.provider
        status: int | None = None
        try:
            async with session.request(
                request.method,
                request.url,
                data=request.body if request.body else None,
                headers=dict(request.headers),
                timeout=timeout,
                allow_redirects=False,
                trace_request_ctx=state,
            ) as resp:
                status = resp.status
                body = await resp.read()
                headers = {k.lower(): v for k, v in resp.headers.items()}
                return HttpResponse(status, headers, body)
        except aiohttp.InvalidURL:
            raise ProviderConfigError(f"provider {provider!r}: invalid URL") from None
        except (aiohttp.ClientConnectorError, aiohttp.ConnectionTimeoutError) as exc:
            raise ConnectionFailedError(
                provider, f"could not connect: {type(exc).__name__}"
            ) from None
        except (aiohttp.ClientError, TimeoutError, OSError) as exc:
            timed_out = isinstance(exc, TimeoutError)
            what = "timed out" if timed_out else f"connection lost ({type(exc).__name__})"
            if state.fully_sent or status is not None:
                raise AmbiguousOutcomeError(
                    provider,
                    f"request sent, then {what} before a complete answer",
                    status=status,
                    timed_out=timed_out,
                ) from None
            raise ConnectionFailedError(provider, f"request not sent: {what}") from None

    async def aclose(self) -> None:
        """Close the session (a later request opens a new one)."""
        if self._session is not None and not self._session.closed:
            await self._session.close()
        self._session = None


#: A mock handler: request in, response (or a raised provider error) out.
Handler = Callable[[HttpRequest], Awaitable[HttpResponse] | HttpResponse]


class MockTransport:
    """A transport whose answers come from ``handler``; records every request.

    ``handler`` may be sync or async and may raise the transport errors
    (``ConnectionFailedError``, ``AmbiguousOutcomeError``) to simulate the wire.
    """

    def __init__(self, handler: Handler) -> None:
        self._handler = handler
        self.requests: list[HttpRequest] = []
        self.closed = False

    async def send(self, request: HttpRequest) -> HttpResponse:
        """Record ``request`` and return the handler's answer."""
        self.requests.append(request)
        result = self._handler(request)
        if isinstance(result, HttpResponse):
            return result
        response = await result
        assert isinstance(response, HttpResponse)
        return response

    async def aclose(self) -> None:
        """Mark closed."""
        self.closed = True
