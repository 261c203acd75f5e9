"""Named fault points: the worker kills itself (SIGKILL) at a chosen place.

For the fault-injection suite (``chaos/``) only. The send path calls
:func:`fault_point` at the places where a crash is most dangerous:

- ``before_provider_call``: a batch's sends are claimed in the ledger, no
  provider has been called (once per batch with sends);
- ``after_provider_accept``: the provider accepted, the outcome is not yet
  committed to the ledger;
- ``after_ledger_commit``: the outcome is committed, the ``sent`` record is
  not produced and the input is not acked.

``LEADFLOW_FAULT_POINT`` arms one point: ``NAME`` (the first time it is
reached), ``NAME:N`` (the Nth time, N a whole number) or ``NAME:P`` (each
time with probability P, a number with a decimal point, e.g. ``0.05``).
When it is unset, :func:`fault_point` is one comparison and returns.

``LEADFLOW_FAULT_RAISE=STAGE:LEAD_ID`` makes a stage raise
:class:`InjectedFaultError` whenever it handles a batch holding that lead
(:func:`raise_point`, called by the stage runner): "an agent raising on one
record", to show the rest of the batch still goes through.
"""

from __future__ import annotations

import logging
import os
import random
import signal
from collections.abc import Iterable
from dataclasses import dataclass

from streams.errors import ConfigError, LeadflowError
from streams.settings import load_from_env, setting

__all__ = [
    "POINTS",
    "ArmedFault",
    "FaultSettings",
    "InjectedFaultError",
    "arm",
    "arm_raise",
    "armed",
    "fault_point",
    "parse_fault",
    "raise_point",
]

log = logging.getLogger(__name__)

#: Every named point (an unknown name is a configuration error, not a silent no-op).
POINTS = frozenset({"before_provider_call", "after_provider_accept", "after_ledger_commit"})


@dataclass(frozen=True)
class FaultSettings:
    """Fault injection (tests only)."""

    fault_point: str = setting(
        "",
        "LEADFLOW_FAULT_POINT",
        "Fault injection, for tests only: the worker kills itself (SIGKILL) at a named point. "
        "NAME (first time), NAME:N (Nth time) or NAME:P (probability P, e.g. 0.05). Points: "
        "before_provider_call, after_provider_accept, after_ledger_commit. Empty: off.",
    )

    fault_raise: str = setting(
        "",
        "LEADFLOW_FAULT_RAISE",
        "Fault injection, for tests only: STAGE:LEAD_ID makes that stage raise on every "
        "batch holding that lead (it must be dead-lettered alone). Empty: off.",
    )


class InjectedFaultError(LeadflowError):
    """Raised on purpose by :func:`raise_point` (fault injection)."""

    reason = "injected_fault"


@dataclass
class ArmedFault:
    """The point that will fire, and when."""

    name: str
    nth: int | None = None
    probability: float | None = None
    hits: int = 0

    def fires(self) -> bool:
        """Count one pass through the point; True when this pass kills."""
        self.hits += 1
        if self.probability is not None:
            return random.random() < self.probability
        return self.hits == self.nth


def parse_fault(spec: str) -> ArmedFault | None:
    """``NAME[:N|:P]`` as an :class:`ArmedFault`; None for an empty spec."""
    spec = spec.strip()
    if not spec:
        return None
    name, _, when = spec.partition(":")
    if name not in POINTS:
        known = ", ".join(sorted(POINTS))
        raise ConfigError(f"LEADFLOW_FAULT_POINT={spec!r}: unknown point {name!r} (known: {known})")
    if not when:
        return ArmedFault(name, nth=1)
    try:
        if "." in when:
            probability = float(when)
            if not 0.0 < probability <= 1.0:
                raise ValueError(when)
            return ArmedFault(name, probability=probability)
        nth = int(when)
        if nth < 1:
            raise ValueError(when)
        return ArmedFault(name, nth=nth)
    except ValueError:
        raise ConfigError(
            f"LEADFLOW_FAULT_POINT={spec!r}: after ':' give a count >= 1 or a probability in (0, 1]"
        ) from None


def _parse_raise(spec: str) -> tuple[str, str] | None:
    if not spec.strip():
        return None
    stage, _, lead = spec.strip().partition(":")
    if not stage or not lead:
        raise ConfigError(f"LEADFLOW_FAULT_RAISE={spec!r}: give STAGE:LEAD_ID")
    return stage, lead


_settings = load_from_env(FaultSettings)
_armed: ArmedFault | None = parse_fault(_settings.fault_point)
_raise_at: tuple[str, str] | None = _parse_raise(_settings.fault_raise)


def arm(spec: str) -> ArmedFault | None:
    """Arm (or with ``""`` disarm) a point in this process, as the variable would."""
    global _armed
    _armed = parse_fault(spec)
    return _armed


def armed() -> ArmedFault | None:
    """The armed point of this process, if any."""
    return _armed


def fault_point(name: str) -> None:
    """Kill this process with SIGKILL if ``name`` is the armed point and its time has come."""
    if _armed is None or _armed.name != name:
        return
    if _armed.fires():
        log.warning(
            "fault point %s reached (pass %d): killing pid %d", name, _armed.hits, os.getpid()
        )
        logging.shutdown()
        os.kill(os.getpid(), signal.SIGKILL)


def arm_raise(spec: str) -> None:
    """Arm (or with ``""`` disarm) :func:`raise_point` in this process: ``STAGE:LEAD_ID``."""
    global _raise_at
    _raise_at = _parse_raise(spec)


def raise_point(stage: str, lead_ids: Iterable[str]) -> None:
    """Raise :class:`InjectedFaultError` if ``stage`` is handling the armed lead."""
    if _raise_at is None or _raise_at[0] != stage:
        return
    if _raise_at[1] in lead_ids:
        raise InjectedFaultError(f"injected fault: stage {stage} raises on one record")
