"""Shared fixtures for the agent tests; helpers live in ``fakes.py`` beside this file."""

from __future__ import annotations

import sys
from pathlib import Path

# The test modules import their fakes from fakes.py beside this file.
sys.path.insert(0, str(Path(__file__).resolve().parent))
