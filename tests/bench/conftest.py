"""Make ``bench`` importable: ``streams.commands.bench`` puts the checkout on the path
when ``bench`` is not an installed package."""

from __future__ import annotations

import streams.commands.bench  # noqa: F401
