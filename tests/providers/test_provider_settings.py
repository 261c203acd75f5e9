"""Provider settings: defaults, environment, secrets, start-up validation."""

from __future__ import annotations

import dataclasses

import pytest

from providers.errors import ProviderConfigError
from providers.ratelimit import Rate
from providers.settings import SIM_API_KEY, ProviderSettings
from streams.settings import settings_table


def test_defaults_point_at_the_simulator_and_are_valid() -> None:
    settings = ProviderSettings.from_env({})
    sms = settings.channel("sms")
    assert sms.endpoint == "http://127.0.0.1:8099"
    assert sms.rate == Rate(100, 60.0)
    assert sms.provider_name == "sms-http"
    assert settings.channel("email").endpoint == "127.0.0.1:8025"
    assert settings.enabled_channels() == ("enrichment", "sms", "voice", "email")  # llm off
    assert settings.retry_policy().attempts == 3
    assert settings.breaker_config().reset_timeout == 30.0


def test_environment_is_read() -> None:
    settings = ProviderSettings.from_env(
        {
            "LEADFLOW_SMS_URL": "https://sms.example.com",
            "LEADFLOW_SMS_API_KEY": "live-key",
            "LEADFLOW_SMS_RATE": "5/s",
            "LEADFLOW_SMS_DAILY_CAP": "2000",
            "LEADFLOW_LLM_ADAPTER": "openai",
            "LEADFLOW_PROVIDER_TIMEOUT_S": "2.5",
        }
    )
    sms = settings.channel("sms")
    assert (sms.endpoint, sms.rate, sms.daily_cap, sms.timeout) == (
        "https://sms.example.com", Rate(5, 1.0), 2000, 2.5,
    )  # fmt: skip
    assert sms.api_key.reveal() == "live-key"
    assert "llm" in settings.enabled_channels()


def test_credentials_never_show_in_repr() -> None:
    settings = ProviderSettings.from_env(
        {"LEADFLOW_SMS_API_KEY": "k-sms-123", "LEADFLOW_SMTP_PASSWORD": "pw-456"}
    )
    text = repr(settings) + repr(settings.channel("sms")) + repr(settings.channel("email"))
    assert "k-sms-123" not in text and "pw-456" not in text
    assert SIM_API_KEY not in repr(settings)


def test_rate_zero_means_unlimited() -> None:
    assert ProviderSettings.from_env({"LEADFLOW_SMS_RATE": "0"}).channel("sms").rate is None


@pytest.mark.parametrize(
    ("env", "named"),
    [
        ({"LEADFLOW_SMS_URL": "not a url"}, "LEADFLOW_SMS_URL"),
        ({"LEADFLOW_ENRICH_URL": "ftp://x"}, "LEADFLOW_ENRICH_URL"),
        ({"LEADFLOW_SMS_URL": "https://api.example.com"}, "LEADFLOW_SMS_API_KEY"),
        ({"LEADFLOW_VOICE_API_KEY": " "}, "LEADFLOW_VOICE_API_KEY"),
        ({"LEADFLOW_SMS_ADAPTER": "carrier-pigeon"}, "LEADFLOW_SMS_ADAPTER"),
        ({"LEADFLOW_LLM_ADAPTER": "gpt"}, "LEADFLOW_LLM_ADAPTER"),
        ({"LEADFLOW_SMS_RATE": "lots"}, "LEADFLOW_SMS_RATE"),
        ({"LEADFLOW_SMS_DAILY_CAP": "many"}, "LEADFLOW_SMS_DAILY_CAP"),
        ({"LEADFLOW_SMS_DAILY_CAP": "-5"}, "LEADFLOW_SMS_DAILY_CAP"),
        ({"LEADFLOW_SMTP_PORT": "70000"}, "LEADFLOW_SMTP_PORT"),
        ({"LEADFLOW_SMTP_TLS": "ssl"}, "LEADFLOW_SMTP_TLS"),
        ({"LEADFLOW_EMAIL_FROM": "nobody"}, "LEADFLOW_EMAIL_FROM"),
        ({"LEADFLOW_DAILY_CAP_TZ": "Pacific"}, "Pacific"),
        ({"LEADFLOW_PROVIDER_TIMEOUT_S": "0"}, "LEADFLOW_PROVIDER_TIMEOUT_S"),
        ({"LEADFLOW_BREAKER_ERROR_RATE": "2"}, "LEADFLOW_BREAKER"),
        ({"LEADFLOW_PROVIDER_RETRY_ATTEMPTS": "0"}, "LEADFLOW_PROVIDER_RETRY"),
        ({"LEADFLOW_ENRICH_BATCH_SIZE": "0"}, "LEADFLOW_ENRICH_BATCH_SIZE"),
        ({"LEADFLOW_SMS_FROM": ""}, None),  # empty keeps the default: valid
        ({"LEADFLOW_LLM_ADAPTER": "openai", "LEADFLOW_LLM_MODEL": " "}, "LEADFLOW_LLM_MODEL"),
        (
            {"LEADFLOW_SMS_ACCOUNT": "acme", "LEADFLOW_VOICE_ACCOUNT": "acme"},
            "account 'acme'",
        ),
    ],
)
def test_bad_configuration_fails_at_start_up_naming_the_variable(
    env: dict[str, str], named: str | None
) -> None:
    if named is None:
        ProviderSettings.from_env(env)
        return
    with pytest.raises(ProviderConfigError, match=named):
        ProviderSettings.from_env(env)


def test_error_message_does_not_echo_the_key() -> None:
    with pytest.raises(ProviderConfigError) as info:
        ProviderSettings.from_env({"LEADFLOW_SMS_URL": "https://api.example.com"})
    assert SIM_API_KEY not in str(info.value)


def test_shared_account_with_equal_limits_is_fine() -> None:
    settings = ProviderSettings.from_env(
        {
            "LEADFLOW_SMS_ACCOUNT": "acme",
            "LEADFLOW_VOICE_ACCOUNT": "acme",
            "LEADFLOW_VOICE_RATE": "100/60",
        }
    )
    assert settings.channel("sms").account == settings.channel("voice").account == "acme"


def test_every_field_is_documented_in_the_settings_table() -> None:
    rows = settings_table(ProviderSettings)
    assert len(rows) == len(dataclasses.fields(ProviderSettings))
    names = [name for name, _, _ in rows]
    assert len(set(names)) == len(names)
    assert all(name.startswith("LEADFLOW_") and doc for name, _, doc in rows)
    assert "LEADFLOW_SMS_RATE" in names and "LEADFLOW_SMS_API_KEY" in names
