"""Building the configured adapters: registry, shared limiters, shares, closing."""

from __future__ import annotations

import json
from typing import Any

import pytest

import providers.factory as factory_module
from providers.base import SmsMessage
from providers.errors import ProviderConfigError
from providers.factory import BuildContext, build_providers, known_adapters, register_adapter
from providers.http_adapter import HttpSmsAdapter, HttpVoiceAdapter
from providers.settings import ChannelSettings, ProviderSettings
from providers.transport import HttpRequest, HttpResponse, MockTransport


def accept(req: HttpRequest) -> HttpResponse:
    return HttpResponse(200, {}, json.dumps({"id": "m", "status": "accepted"}).encode())


async def test_builds_every_enabled_channel_behind_its_own_guard() -> None:
    transport = MockTransport(accept)
    providers = build_providers(ProviderSettings.from_env({}), transport=transport)
    assert isinstance(providers.sms, HttpSmsAdapter)
    assert isinstance(providers.voice, HttpVoiceAdapter)
    assert providers.llm is None
    assert set(providers.guards) == {"enrichment", "sms", "voice", "email"}
    assert providers.breaker("sms").name == "sms-http"
    assert providers.guards["sms"].timeout == 5.0
    await providers.sms.send_sms(
        SmsMessage(campaign_id="c", lead_id="l", touch=1, to="+14155552671", body="x")
    )
    assert providers.ledger.snapshot().by_provider["sms-http"].calls == 1
    await providers.aclose()
    assert transport.closed


async def test_channels_naming_one_account_share_one_limiter() -> None:
    settings = ProviderSettings.from_env(
        {
            "LEADFLOW_SMS_ACCOUNT": "acme",
            "LEADFLOW_VOICE_ACCOUNT": "acme",
            "LEADFLOW_VOICE_RATE": "100/60",
        }
    )
    async with build_providers(settings, transport=MockTransport(accept)) as providers:
        assert providers.guards["sms"].limiter is providers.guards["voice"].limiter
        assert providers.guards["sms"].breaker is not providers.guards["voice"].breaker
        assert "acme" in providers.limiters


async def test_partition_share_applies_to_every_limiter() -> None:
    async with build_providers(ProviderSettings.from_env({}), transport=MockTransport(accept)) as p:
        p.set_partition_share(owned=2, total=8)
        assert all(limiter.share == 0.25 for limiter in p.limiters.values())
        with pytest.raises(ValueError):
            p.set_partition_share(owned=9, total=8)


async def test_llm_is_built_when_enabled() -> None:
    settings = ProviderSettings.from_env({"LEADFLOW_LLM_ADAPTER": "openai"})
    async with build_providers(settings, transport=MockTransport(accept)) as providers:
        assert providers.llm is not None
        assert providers.guards["llm"].timeout == 30.0


async def test_registered_adapter_is_selectable_by_name() -> None:
    class CustomSms(HttpSmsAdapter):
        pass

    def factory(ch: ChannelSettings, ctx: BuildContext) -> CustomSms:
        return CustomSms(
            name=ch.provider_name, base_url=ch.endpoint, api_key=ch.api_key,
            guard=ctx.guard, transport=ctx.transport, sender=ch.sender,
        )  # fmt: skip

    register_adapter("sms", "custom", factory)
    try:
        assert "custom" in known_adapters()["sms"]
        settings = ProviderSettings.from_env({"LEADFLOW_SMS_ADAPTER": "custom"})
        async with build_providers(settings, transport=MockTransport(accept)) as providers:
            assert isinstance(providers.sms, CustomSms)
            assert providers.sms.name == "sms-custom"
    finally:
        factory_module._REGISTRY["sms"].pop("custom")


def test_unknown_adapter_fails_before_any_traffic() -> None:
    transport = MockTransport(accept)
    settings = ProviderSettings(sms_adapter="nope")
    with pytest.raises(ProviderConfigError, match="LEADFLOW_SMS_ADAPTER='nope'"):
        build_providers(settings, transport=transport)
    assert transport.requests == []


@pytest.mark.parametrize(
    ("channel", "name"), [("fax", "x"), ("sms", ""), ("sms", "off"), ("sms", "a b")]
)
def test_register_adapter_rejects_bad_names(channel: str, name: str) -> None:
    def factory(ch: ChannelSettings, ctx: BuildContext) -> Any:
        return None

    with pytest.raises(ValueError):
        register_adapter(channel, name, factory)
