"""The HTTP transport over real sockets: answers, "not sent" vs "sent, then lost"."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager

import pytest

from providers.base import Secret, SmsMessage
from providers.errors import AmbiguousOutcomeError, BadResponseError, ConnectionFailedError
from providers.guard import Guard
from providers.http_adapter import HttpSmsAdapter
from providers.transport import AiohttpTransport, HttpRequest, HttpResponse, MockTransport

Action = Callable[[asyncio.StreamWriter, bytes], Awaitable[None]]


@asynccontextmanager
async def raw_server(action: Action) -> AsyncIterator[str]:
    """A TCP server that reads one whole HTTP request, then runs ``action``."""
    received: list[bytes] = []

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            head = await reader.readuntil(b"\r\n\r\n")
            length = 0
            for line in head.split(b"\r\n"):
                if line.lower().startswith(b"content-length:"):
                    length = int(line.split(b":", 1)[1])
            body = await reader.readexactly(length)
            received.append(body)
            await action(writer, body)
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()

    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.close()
        await server.wait_closed()


def request(url: str, timeout: float = 2.0) -> HttpRequest:
    return HttpRequest(
        provider="sms-http",
        method="POST",
        url=url + "/v1/sms",
        headers={"Content-Type": "application/json", "Authorization": "Bearer secret-key"},
        body=b'{"to": "+14155552671"}',
        timeout=timeout,
    )


async def answer(writer: asyncio.StreamWriter, body: bytes) -> None:
    payload = b'{"id": "m1", "status": "accepted"}'
    writer.write(
        b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nX-Thing: 1\r\n"
        + f"Content-Length: {len(payload)}\r\n\r\n".encode()
        + payload
    )
    await writer.drain()


async def test_complete_answer_is_returned() -> None:
    transport = AiohttpTransport()
    async with raw_server(answer) as url:
        response = await transport.send(request(url))
    await transport.aclose()
    assert response.status == 200
    assert response.header("X-THING") == "1"
    assert b'"m1"' in response.body


async def test_connection_refused_is_not_sent() -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # closed once we leave: nobody listens
    transport = AiohttpTransport()
    with pytest.raises(ConnectionFailedError) as info:
        await transport.send(request(f"http://127.0.0.1:{port}"))
    await transport.aclose()
    assert info.value.provider == "sms-http"


async def test_request_sent_then_connection_closed_is_ambiguous() -> None:
    async def drop(writer: asyncio.StreamWriter, body: bytes) -> None:
        return  # close without answering

    transport = AiohttpTransport()
    async with raw_server(drop) as url:
        with pytest.raises(AmbiguousOutcomeError) as info:
            await transport.send(request(url))
    await transport.aclose()
    assert not info.value.timed_out
    assert "request sent" in str(info.value)


async def test_request_sent_then_no_answer_is_ambiguous_timeout() -> None:
    async def hang(writer: asyncio.StreamWriter, body: bytes) -> None:
        await asyncio.sleep(2)

    transport = AiohttpTransport()
    async with raw_server(hang) as url:
        with pytest.raises(AmbiguousOutcomeError) as info:
            await transport.send(request(url, timeout=0.2))
    await transport.aclose()
    assert info.value.timed_out


async def test_truncated_answer_is_ambiguous_with_status() -> None:
    async def truncate(writer: asyncio.StreamWriter, body: bytes) -> None:
        writer.write(b'HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\n{"id"')
        await writer.drain()

    transport = AiohttpTransport()
    async with raw_server(truncate) as url:
        with pytest.raises(AmbiguousOutcomeError) as info:
            await transport.send(request(url))
    await transport.aclose()
    assert info.value.status == 200


async def test_garbage_over_real_http_is_a_typed_error_naming_provider_and_status() -> None:
    async def garbage(writer: asyncio.StreamWriter, body: bytes) -> None:
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 15\r\n\r\n<html>oops</ht>")
        await writer.drain()

    transport = AiohttpTransport()
    async with raw_server(garbage) as url:
        adapter = HttpSmsAdapter(
            name="sms-http",
            base_url=url,
            api_key=Secret("k"),
            guard=Guard("sms-http"),
            transport=transport,
            sender="+14155550100",
        )
        with pytest.raises(BadResponseError) as info:
            await adapter.send_sms(
                SmsMessage(campaign_id="c", lead_id="l", touch=1, to="+14155552671", body="hi")
            )
    await transport.aclose()
    assert (info.value.provider, info.value.status) == ("sms-http", 200)
    assert "not JSON" in str(info.value)


async def test_mock_transport_takes_sync_and_async_handlers() -> None:
    sync = MockTransport(lambda req: HttpResponse(204))

    async def handler(req: HttpRequest) -> HttpResponse:
        return HttpResponse(201, {"a": "b"}, b"x")

    asynchronous = MockTransport(handler)
    assert (await sync.send(request("http://x"))).status == 204
    assert (await asynchronous.send(request("http://x"))).header("A") == "b"
    assert len(sync.requests) == 1
    await sync.aclose()
    assert sync.closed


def test_request_repr_hides_headers_and_body() -> None:
    text = repr(request("http://x"))
    assert "secret-key" not in text and "+1415" not in text
    assert "sms-http" in text
