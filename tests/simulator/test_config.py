"""simulator/config.py: parsing, validation and merging."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import yaml

from simulator.config import (
    Latency,
    RateLimit,
    SimConfig,
    SimSettings,
    apply_overrides,
    config_from_mapping,
    config_to_mapping,
    load_config_file,
)
from streams.errors import ConfigError


def test_defaults_are_well_behaved() -> None:
    config = SimConfig()
    assert (config.host, config.port, config.smtp_port) == ("127.0.0.1", 8099, 8025)
    for name in ("sms", "voice", "enrich", "llm", "email"):
        ep = config.endpoint(name)
        assert ep.error_rate == 0 and ep.rate_limit is None and ep.outages == ()
    assert config.webhooks.url == ""


def test_full_mapping_parses() -> None:
    config = config_from_mapping(
        {
            "seed": 3,
            "endpoints": {
                "sms": {
                    "latency": {"dist": "lognormal", "median_ms": 40, "p99_ms": 400},
                    "error_rate": 0.1,
                    "rate_limit": "100/60",
                    "outages": [[10, 20]],
                    "drop_after_accept_rate": 0.05,
                },
                "enrich": {"latency": {"dist": "uniform", "min_ms": 5, "max_ms": 50}},
                "llm": {"latency": 25},
            },
            "webhooks": {"url": "http://127.0.0.1:6066/webhooks/sim", "secret": "s" * 16},
        }
    )
    sms = config.endpoint("sms")
    assert sms.rate_limit == RateLimit(100, 60.0)
    assert sms.outages == ((10.0, 20.0),)
    assert sms.latency == Latency(dist="lognormal", median_ms=40, p99_ms=400)
    assert config.endpoint("llm").latency == Latency(dist="fixed", ms=25)
    assert config.endpoint("voice").error_rate == 0.0  # untouched endpoints keep defaults
    assert config.seed == 3


@pytest.mark.parametrize(
    ("data", "names"),
    [
        ({"endpoints": {"sms": {"eror_rate": 0.1}}}, "endpoints.sms.eror_rate"),
        ({"endpoints": {"fax": {}}}, "endpoints.fax"),
        ({"colour": "red"}, "colour"),
        ({"endpoints": {"sms": {"error_rate": 1.5}}}, "endpoints.sms.error_rate"),
        ({"endpoints": {"sms": {"error_rate": "high"}}}, "endpoints.sms.error_rate"),
        ({"endpoints": {"sms": {"rate_limit": "lots"}}}, "endpoints.sms.rate_limit"),
        ({"endpoints": {"sms": {"rate_limit": "0/60"}}}, "endpoints.sms.rate_limit"),
        ({"endpoints": {"sms": {"outages": [[20, 10]]}}}, "endpoints.sms.outages[0]"),
        ({"endpoints": {"sms": {"outages": [5]}}}, "endpoints.sms.outages[0]"),
        (
            {
                "endpoints": {
                    "sms": {"latency": {"dist": "lognormal", "median_ms": 50, "p99_ms": 10}}
                }
            },
            "endpoints.sms.latency.p99_ms",
        ),
        ({"endpoints": {"sms": {"latency": {"dist": "gamma"}}}}, "endpoints.sms.latency.dist"),
        (
            {"endpoints": {"sms": {"error_rate": 0.6, "timeout_rate": 0.6}}},
            "endpoints.sms.error_rate",
        ),
        ({"port": 70000}, "port"),
        ({"port": "8099"}, "port"),
        ({"webhooks": {"url": "ftp://x"}}, "webhooks.url"),
        ({"webhooks": {"attempts": 0}}, "webhooks.attempts"),
        ({"webhooks": {"reply_rate": 0.7, "opt_out_rate": 0.7}}, "webhooks.reply_rate"),
        ({"enrich_max_batch": 0}, "enrich_max_batch"),
        ({"time_scale": 0}, "time_scale"),
    ],
)
def test_invalid_config_names_the_bad_key(data: dict[str, Any], names: str) -> None:
    with pytest.raises(ConfigError) as excinfo:
        config_from_mapping(data)
    message = str(excinfo.value)
    assert names in message
    assert message.startswith("simulator config:")
    assert "\n" not in message


def test_webhook_url_needs_a_secret() -> None:
    with pytest.raises(ConfigError, match="LEADFLOW_WEBHOOK_SECRET"):
        config_from_mapping({"webhooks": {"url": "http://127.0.0.1:6066/webhooks/sim"}})
    with pytest.raises(ConfigError, match="at least 16"):
        config_from_mapping({"webhooks": {"url": "http://h/x", "secret": "short"}})


def test_overrides_merge_into_a_base() -> None:
    base = config_from_mapping({"endpoints": {"sms": {"error_rate": 0.2, "rate_limit": "5/1"}}})
    merged = apply_overrides(base, {"endpoints": {"sms": {"outage_for_s": 30}}}, uptime_s=100)
    sms = merged.endpoint("sms")
    assert sms.error_rate == 0.2 and sms.rate_limit == RateLimit(5, 1.0)
    assert sms.outages == ((100.0, 130.0),)
    cleared = apply_overrides(merged, {"endpoints": {"sms": {"rate_limit": None, "outages": []}}})
    assert cleared.endpoint("sms").rate_limit is None
    assert cleared.endpoint("sms").outages == ()


@pytest.mark.parametrize("suffix", [".yaml", ".json"])
def test_load_config_file(tmp_path: Path, suffix: str) -> None:
    data = {"seed": 11, "endpoints": {"voice": {"rate_limit": "10/60"}}}
    path = tmp_path / f"sim{suffix}"
    path.write_text(json.dumps(data))  # JSON is valid YAML too
    assert load_config_file(path) == data
    assert config_from_mapping(load_config_file(path)).endpoint("voice").rate_limit == RateLimit(
        10, 60.0
    )


def test_missing_or_broken_file_is_a_config_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="does not exist"):
        load_config_file(tmp_path / "nope.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("endpoints: [unclosed\n")
    with pytest.raises(ConfigError, match="does not parse"):
        load_config_file(bad)
    listy = tmp_path / "list.json"
    listy.write_text("[1, 2]")
    with pytest.raises(ConfigError, match="mapping"):
        load_config_file(listy)


def test_settings_from_env_and_masking() -> None:
    env = {
        "LEADFLOW_SIM_PORT": "9100",
        "LEADFLOW_SIM_WEBHOOK_URL": "http://127.0.0.1:6066/webhooks/sim",
        "LEADFLOW_WEBHOOK_SECRET": "env-secret-0123456789",
        "LEADFLOW_SIM_API_KEY": "k",
    }
    config = config_from_mapping(SimSettings.from_env(env).as_overrides())
    assert config.port == 9100
    assert config.webhooks.secret == "env-secret-0123456789"
    shown = json.dumps(config_to_mapping(config))
    assert "env-secret" not in shown and '"api_key": "<set>"' in shown
    with pytest.raises(ConfigError, match="LEADFLOW_SIM_PORT"):
        SimSettings.from_env({"LEADFLOW_SIM_PORT": "eighty"}).as_overrides()


def test_the_documented_example_config_is_valid() -> None:
    doc = (Path(__file__).resolve().parents[2] / "docs" / "SIMULATOR.md").read_text()
    block = doc.split("```yaml\n", 1)[1].split("```", 1)[0]
    data = yaml.safe_load(block)
    data["webhooks"]["secret"] = "a-secret-of-16-chars"
    config = config_from_mapping(data)
    assert config.endpoint("sms").rate_limit == RateLimit(100, 60.0)
    assert config.endpoint("llm").latency == Latency(dist="fixed", ms=800)
    assert config.time_scale == 3600
