"""A short digest of the workers' warnings, for the message of a failed scenario.

A scenario that fails in CI leaves its worker logs in a temporary folder that
is gone when the run ends; only the test's message survives. The digest folds
each distinct warning or error (numbers and hex ids replaced by ``#``, so one
message with different offsets is one shape) into one line with its count and the first
and last time it was logged. Worker logs carry no lead data (see
:mod:`streams.pii`), so neither does the digest.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

__all__ = ["Shape", "digest", "digest_lines"]

#: ``[2026-11-27 10:23:46,086] [3764] [WARNING] message``, as Faust's logging writes it.
_LINE = re.compile(
    r"^\[\d{4}-\d\d-\d\d (?P<time>\d\d:\d\d:\d\d),\d+\] \[\d+\] "
    r"\[(?P<level>WARNING|ERROR|CRITICAL)\] (?P<message>.*)$"
)
#: Numbers and hex ids (event ids, topic prefixes): one message shape whatever they are.
_NUMBERS = re.compile(r"[0-9a-f]*\d[0-9a-f]*")
#: Logged every time Faust's producer buffer fills; noise for a diagnosis.
_IGNORED = ("producer buffer full",)


@dataclass
class Shape:
    """One kind of warning: how often, and from when to when."""

    level: str
    text: str
    count: int
    first: str
    last: str

    def line(self) -> str:
        """``12x 10:23:46-10:23:50 WARNING text``."""
        span = self.first if self.first == self.last else f"{self.first}-{self.last}"
        return f"{self.count}x {span} {self.level} {self.text}"


def digest_lines(lines: Iterable[str], *, width: int = 140) -> list[Shape]:
    """The warning shapes of ``lines``, by the time each was first logged."""
    shapes: dict[tuple[str, str], Shape] = {}
    for line in lines:
        match = _LINE.match(line.rstrip())
        if match is None:
            continue
        message = match["message"].strip()
        if any(noise in message for noise in _IGNORED):
            continue
        text = _NUMBERS.sub("#", message)[:width]
        key = (match["level"], text)
        shape = shapes.get(key)
        if shape is None:
            shapes[key] = Shape(match["level"], text, 1, match["time"], match["time"])
        else:
            shape.count += 1
            shape.first = min(shape.first, match["time"])  # logs of several workers
            shape.last = max(shape.last, match["time"])
    return sorted(shapes.values(), key=lambda s: s.first)


def digest(paths: Iterable[Path], *, limit: int = 15) -> list[str]:
    """One line per warning shape across the logs at ``paths``, at most ``limit``.

    When there are more shapes, the most frequent are kept (in time order),
    and a last line says how many were left out.
    """
    lines: list[str] = []
    for path in sorted(paths):
        try:
            text = path.read_text(errors="replace")
        except OSError:
            continue
        lines += text.splitlines()
    shapes = digest_lines(lines)
    if len(shapes) <= limit:
        return [s.line() for s in shapes]
    kept = sorted(sorted(shapes, key=lambda s: -s.count)[:limit], key=shapes.index)
    return [*(s.line() for s in kept), f"... and {len(shapes) - limit} rarer warning shapes"]
