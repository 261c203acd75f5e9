"""``leadflow sim``: a local stand-in for the paid provider APIs, over real HTTP and SMTP.

Start it with ``leadflow sim`` or, in tests and benchmarks, with
``async with run_simulator(config) as sim:``. See docs/SIMULATOR.md.
"""

from simulator.config import SimConfig, apply_overrides, config_from_mapping, load_config_file
from simulator.ledger import Ledger, SentMessage
from simulator.server import Simulator, run_simulator

__all__ = [
    "Ledger",
    "SentMessage",
    "SimConfig",
    "Simulator",
    "apply_overrides",
    "config_from_mapping",
    "load_config_file",
    "run_simulator",
]
