"""The OpenAI-compatible chat-completions adapter."""

from __future__ import annotations

import json

import pytest

from providers.base import ChatMessage, GenerationRequest
from providers.errors import BadResponseError, ProviderConfigError
from providers.guard import Guard
from providers.llm_openai import OpenAIChatAdapter
from providers.transport import HttpResponse, MockTransport

ANSWER = {
    "model": "m-1",
    "choices": [
        {"message": {"role": "assistant", "content": "Worth a call?"}, "finish_reason": "stop"}
    ],
    "usage": {"prompt_tokens": 600, "completion_tokens": 400},
}
REQUEST = GenerationRequest(messages=[ChatMessage("user", "Draft a follow-up")], campaign_id="c1")


def make(transport: MockTransport, base_url: str = "http://sim") -> OpenAIChatAdapter:
    return OpenAIChatAdapter(
        name="llm-openai",
        base_url=base_url,
        api_key="sk-secret",
        guard=Guard("llm-openai"),
        transport=transport,
        model="m-1",
        units_per_1k_tokens=2.0,
    )


async def test_request_and_answer() -> None:
    transport = MockTransport(lambda req: HttpResponse(200, {}, json.dumps(ANSWER).encode()))
    adapter = make(transport)
    result = await adapter.generate(REQUEST)
    (req,) = transport.requests
    assert req.url == "http://sim/v1/chat/completions"
    assert req.headers["Authorization"] == "Bearer sk-secret"
    body = json.loads(req.body)
    assert body["model"] == "m-1"
    assert body["messages"] == [{"role": "user", "content": "Draft a follow-up"}]
    assert (result.text, result.finish_reason) == ("Worth a call?", "stop")
    assert result.cost_units == pytest.approx(2.0)  # 1000 tokens at 2 units per 1k
    assert adapter.guard.ledger.snapshot().by_campaign[("c1", "llm-openai")].units == pytest.approx(
        2.0
    )
    assert "Worth a call" not in repr(result)


async def test_base_url_ending_in_v1_is_not_doubled() -> None:
    transport = MockTransport(lambda req: HttpResponse(200, {}, json.dumps(ANSWER).encode()))
    await make(transport, "https://api.example.com/v1").generate(REQUEST)
    assert transport.requests[0].url == "https://api.example.com/v1/chat/completions"


@pytest.mark.parametrize(
    "answer",
    [
        {"choices": []},
        {"choices": [{"message": {"content": None}}]},
        {"choices": [{"message": {"content": "x"}}], "usage": {"prompt_tokens": "many"}},
    ],
)
async def test_garbage_is_a_bad_response(answer: object) -> None:
    transport = MockTransport(lambda req: HttpResponse(200, {}, json.dumps(answer).encode()))
    with pytest.raises(BadResponseError) as info:
        await make(transport).generate(REQUEST)
    assert info.value.provider == "llm-openai"


async def test_needs_a_model_and_messages() -> None:
    with pytest.raises(ProviderConfigError):
        OpenAIChatAdapter(
            name="llm", base_url="http://x", api_key="k", guard=Guard("llm"),
            transport=MockTransport(lambda r: HttpResponse(200)), model=" ",
        )  # fmt: skip
    with pytest.raises(ValueError, match="message"):
        await make(MockTransport(lambda r: HttpResponse(200))).generate(
            GenerationRequest(messages=[])
        )
