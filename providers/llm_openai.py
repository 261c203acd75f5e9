"""Text generation through an OpenAI-compatible chat-completions API (off by default).

Wire format (OpenAI's, which most hosted and local LLM servers accept)::

    POST {base_url}/v1/chat/completions
    Authorization: Bearer <api key>
    {"model": "...", "messages": [{"role": "user", "content": "..."}],
     "max_tokens": 300, "temperature": 0.7}

    200 {"model": "...", "choices": [{"message": {"role": "assistant", "content": "..."},
                                      "finish_reason": "stop"}],
         "usage": {"prompt_tokens": 42, "completion_tokens": 17}}

A base URL that already ends in ``/v1`` (``https://api.openai.com/v1``) is
accepted as is. Cost units are ``tokens / 1000 * units_per_1k_tokens``.
A completion has no side effect a retry could duplicate (only cost), so a
lost answer is retried like a timeout.
"""

from __future__ import annotations

from typing import Any, ClassVar

from providers.base import GenerationRequest, GenerationResult
from providers.cost import Charge
from providers.errors import BadResponseError, ProviderConfigError
from providers.guard import Attempt
from providers.http_adapter import HttpAdapterBase, RequestSpec
from providers.transport import HttpResponse

__all__ = ["OpenAIChatAdapter"]


class OpenAIChatAdapter(HttpAdapterBase):
    """Chat completions; implements ``TextGenerator``."""

    kind: ClassVar[str] = "llm"

    def __init__(self, *, model: str, units_per_1k_tokens: float = 1.0, **kwargs: Any) -> None:
        if not model.strip():
            raise ProviderConfigError("the text-generation model name is empty")
        super().__init__(**kwargs)
        self.model = model
        self.units_per_1k_tokens = units_per_1k_tokens
        self.path = "/chat/completions" if self.base_url.endswith("/v1") else "/v1/chat/completions"

    def build_request(self, request: GenerationRequest) -> RequestSpec:
        """The chat-completions body."""
        return RequestSpec(
            self.path,
            {
                "model": request.model or self.model,
                "messages": [{"role": m.role, "content": m.content} for m in request.messages],
                "max_tokens": request.max_tokens,
                "temperature": request.temperature,
            },
        )

    async def generate(self, request: GenerationRequest) -> GenerationResult:
        """Complete ``request`` under the guard."""
        if not request.messages:
            raise ValueError("a generation request needs at least one message")
        spec = self.build_request(request)

        async def attempt(at: Attempt) -> GenerationResult:
            response = await self.exchange(spec, at)
            return self.parse_response(response)

        return await self.guard.call(
            attempt,
            charge=lambda r: [Charge(request.campaign_id, r.cost_units)],
            side_effect=False,
        )

    def parse_response(self, response: HttpResponse) -> GenerationResult:
        """Read text, finish reason, model and token usage; garbage is a BadResponseError."""
        data = self.json_object(response)

        def bad(what: str) -> BadResponseError:
            return BadResponseError(self.name, what, status=response.status)

        choices = data.get("choices")
        if not isinstance(choices, list) or not choices or not isinstance(choices[0], dict):
            raise bad("answer has no choices")
        message = choices[0].get("message")
        content = message.get("content") if isinstance(message, dict) else None
        if not isinstance(content, str):
            raise bad("answer's first choice has no text content")
        finish = choices[0].get("finish_reason")
        usage = data.get("usage")
        usage = usage if isinstance(usage, dict) else {}
        prompt = usage.get("prompt_tokens", 0)
        completion = usage.get("completion_tokens", 0)
        if not all(
            isinstance(n, int) and not isinstance(n, bool) and n >= 0 for n in (prompt, completion)
        ):
            raise bad("answer's token usage is not a count")
        model = data.get("model")
        return GenerationResult(
            provider=self.name,
            text=content,
            model=model if isinstance(model, str) and model else self.model,
            finish_reason=finish if isinstance(finish, str) else "",
            prompt_tokens=prompt,
            completion_tokens=completion,
            cost_units=(prompt + completion) / 1000.0 * self.units_per_1k_tokens,
        )
