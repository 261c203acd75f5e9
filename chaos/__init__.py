"""The fault-injection suite (issue 7): a harness, the scenarios, one invariant checker.

- :mod:`chaos.harness`: start, stop, ``kill -9`` or SIGTERM workers, the
  simulator (slow, failing, rate-limiting, down, accept-then-drop), the
  broker and Postgres; named fault points through ``LEADFLOW_FAULT_POINT``
  (:mod:`agents.faults`).
- :mod:`chaos.lab`: one campaign run on its own topics, database, simulator
  and workers; the result row of a scenario.
- :mod:`chaos.invariants`: I4 (lag back to 0, no stuck partition) and
  :func:`~chaos.invariants.check_all` (I1-I5 and W, with counts).
- :mod:`chaos.scenarios`: the scenarios, :data:`~chaos.scenarios.SCENARIOS`.
- ``python -m chaos`` (:mod:`chaos.cli`): run them and print the table.
"""

from chaos.harness import ChaosError, ChaosRun, FaultHarness, ServiceUnmanagedError
from chaos.invariants import INVARIANTS, check_all, check_lag, check_table_partitions
from chaos.lab import Lab, ScenarioResult, Session, Size, chaos_campaign, lines_of
from chaos.scenarios import SCENARIOS, run_scenario

__all__ = [
    "INVARIANTS",
    "SCENARIOS",
    "ChaosError",
    "ChaosRun",
    "FaultHarness",
    "Lab",
    "ScenarioResult",
    "ServiceUnmanagedError",
    "Session",
    "Size",
    "chaos_campaign",
    "check_all",
    "check_lag",
    "check_table_partitions",
    "lines_of",
    "run_scenario",
]
