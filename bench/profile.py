"""Summaries of py-spy profiles (``py-spy record --format raw``: collapsed stacks).

Each line of a collapsed-stack file is ``frame;frame;...;leaf count`` with
frames written ``function (file.py:line)``. *Self* time counts samples whose
leaf is a function; *inclusive* time counts samples with the function
anywhere on the stack (once per sample).
"""

from __future__ import annotations

import re
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

__all__ = ["ProfileSummary", "summarize_collapsed"]

_FRAME = re.compile(r"^(?P<func>.*?) \((?P<file>[^:()]+)(?::\d+)?\)$")


def _name(frame: str) -> str:
    """``function (path/to/module.py)``, shortened to the package-relative path."""
    match = _FRAME.match(frame.strip())
    if match is None:
        return frame.strip()
    path = match.group("file")
    for marker in ("site-packages/", "lib/python3.11/", "/work/main/"):
        if marker in path:
            path = path.split(marker, 1)[1]
            break
    return f"{match.group('func')} ({path})"


#: Frames on (nearly) every stack: the event loop, the CLI, threads. Left out of
#: the inclusive ranking, where they would only push the informative rows down.
_GENERIC = (
    "(asyncio/",
    "(click/",
    "(<frozen runpy>)",
    "(threading.py)",
    "(concurrent/futures/",
    "(faust/cli/",
    "(faust/app/base.py)",
    "(mode/worker.py)",
    "(mode/services.py)",
    "(streams/cli.py)",
)


def _generic(name: str) -> bool:
    return any(marker in name for marker in _GENERIC)


@dataclass
class ProfileSummary:
    """Top functions of a profile by self and inclusive samples."""

    samples: int = 0
    self_counts: Counter[str] = field(default_factory=Counter)
    inclusive: Counter[str] = field(default_factory=Counter)

    def as_dict(self, limit: int = 15) -> dict[str, Any]:
        """Shares (percent of samples) of the top ``limit`` functions."""
        total = self.samples or 1
        return {
            "samples": self.samples,
            "top_self_pct": [
                [name, round(n * 100 / total, 1)] for name, n in self.self_counts.most_common(limit)
            ],
            "top_inclusive_pct": [
                [name, round(n * 100 / total, 1)] for name, n in self._specific()[:limit]
            ],
        }

    def text(self, limit: int = 30) -> str:
        """A plain-text table of the top functions."""
        total = self.samples or 1
        lines = [f"{self.samples} samples", "", "self %  function"]
        lines += [
            f"{n * 100 / total:6.1f}  {name}" for name, n in self.self_counts.most_common(limit)
        ]
        lines += ["", "incl %  function (event loop, CLI and thread frames left out)"]
        lines += [f"{n * 100 / total:6.1f}  {name}" for name, n in self._specific()[:limit]]
        return "\n".join(lines) + "\n"

    def _specific(self) -> list[tuple[str, int]]:
        return [(name, n) for name, n in self.inclusive.most_common() if not _generic(name)]


def summarize_collapsed(path: Path) -> ProfileSummary:
    """Summarise a collapsed-stack file written by ``py-spy record --format raw``."""
    summary = ProfileSummary()
    for line in path.read_text(errors="replace").splitlines():
        stack, _, count_text = line.rpartition(" ")
        if not stack or not count_text.isdigit():
            continue
        count = int(count_text)
        frames = [_name(f) for f in stack.split(";") if f]
        if not frames:
            continue
        summary.samples += count
        summary.self_counts[frames[-1]] += count
        for name in set(frames):
            summary.inclusive[name] += count
    return summary
