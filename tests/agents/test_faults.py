"""Named fault points: parsing, zero cost when unset, and a real SIGKILL at the chosen pass."""

from __future__ import annotations

import signal
import subprocess
import sys
from collections.abc import Iterator

import pytest

from agents import faults
from streams.errors import ConfigError


@pytest.fixture(autouse=True)
def _disarmed() -> Iterator[None]:
    yield
    faults.arm("")
    faults.arm_raise("")


def test_specs_parse_into_count_or_probability() -> None:
    assert faults.parse_fault("") is None
    first = faults.parse_fault("before_provider_call")
    assert first is not None and (first.name, first.nth) == ("before_provider_call", 1)
    nth = faults.parse_fault("after_ledger_commit:3")
    assert nth is not None and (nth.nth, nth.probability) == (3, None)
    p = faults.parse_fault(" after_provider_accept:0.25 ")
    assert p is not None and (p.nth, p.probability) == (None, 0.25)


@pytest.mark.parametrize(
    "spec", ["no_such_point", "before_provider_call:0", "before_provider_call:1.5", "x:y"]
)
def test_bad_specs_are_config_errors(spec: str) -> None:
    with pytest.raises(ConfigError, match="LEADFLOW_FAULT_POINT"):
        faults.parse_fault(spec)


def test_nth_fires_once_on_that_pass() -> None:
    armed = faults.parse_fault("before_provider_call:3")
    assert armed is not None
    assert [armed.fires() for _ in range(5)] == [False, False, True, False, False]


def test_other_points_and_disarmed_points_do_nothing() -> None:
    faults.arm("after_ledger_commit")
    faults.fault_point("before_provider_call")  # another point: no effect
    armed = faults.armed()
    assert armed is not None and armed.hits == 0
    faults.arm("")
    faults.fault_point("after_ledger_commit")
    assert faults.armed() is None


def test_the_process_is_killed_with_sigkill_at_the_nth_pass() -> None:
    code = (
        "from agents import faults\n"
        "for i in range(5):\n"
        "    print(i, flush=True)\n"
        "    faults.fault_point('after_provider_accept')\n"
    )
    proc = subprocess.run(
        [sys.executable, "-c", code],
        env={"LEADFLOW_FAULT_POINT": "after_provider_accept:2", "PATH": "/usr/bin:/bin"},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert proc.returncode == -signal.SIGKILL, proc.stderr
    assert proc.stdout.split() == ["0", "1"]


def test_a_stage_raises_only_for_the_armed_lead() -> None:
    faults.raise_point("schedule", ["lead-1"])  # not armed
    faults.arm_raise("schedule:lead-2")
    faults.raise_point("schedule", ["lead-1", "lead-3"])
    faults.raise_point("send", ["lead-2"])  # another stage
    with pytest.raises(faults.InjectedFaultError) as err:
        faults.raise_point("schedule", ["lead-1", "lead-2"])
    assert err.value.reason == "injected_fault"
    with pytest.raises(ConfigError, match="STAGE:LEAD_ID"):
        faults.arm_raise("schedule")
