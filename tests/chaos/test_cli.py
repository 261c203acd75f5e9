"""``python -m chaos``: options and scenario names."""

from __future__ import annotations

from click.testing import CliRunner

from chaos.cli import chaos
from chaos.scenarios import SCENARIOS


def test_help_names_the_options() -> None:
    result = CliRunner().invoke(chaos, ["--help"])
    assert result.exit_code == 0
    for option in ("--leads", "--ci", "--only", "--keep"):
        assert option in result.output


def test_an_unknown_scenario_is_refused_before_anything_runs() -> None:
    result = CliRunner().invoke(chaos, ["--only", "no-such-scenario"])
    assert result.exit_code == 2
    assert "worker-kills" in result.output  # the choices are listed


def test_every_issue_scenario_is_registered() -> None:
    expected = {
        "worker-kills",
        "point-before-provider-call",
        "point-after-provider-accept",
        "point-after-ledger-commit",
        "sigterm",
        "broker",
        "postgres",
        "outage",
        "errors",
        "timeouts",
        "drop",
        "storm",
        "slow",
        "poison",
        "oversize",
        "optout-race",
        "state-rebuild",
        "redrive",
        "scale-1",
        "scale-2",
        "scale-3",
    }
    assert expected <= set(SCENARIOS)
