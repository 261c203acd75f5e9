"""What machine a benchmark ran on, from /proc and the platform."""

from __future__ import annotations

import os
import platform
from pathlib import Path
from typing import Any

__all__ = ["machine"]


def _first(path: str, key: str) -> str | None:
    try:
        text = Path(path).read_text()
    except OSError:
        return None
    for line in text.splitlines():
        name, _, value = line.partition(":")
        if name.strip() == key:
            return value.strip()
    return None


def _os_name() -> str:
    try:
        for line in Path("/etc/os-release").read_text().splitlines():
            if line.startswith("PRETTY_NAME="):
                return line.split("=", 1)[1].strip('"')
    except OSError:
        pass
    return platform.system()


def machine() -> dict[str, Any]:
    """CPU model and count, memory, kernel, OS, Python and Kafka versions."""
    mem = _first("/proc/meminfo", "MemTotal")
    mem_gb = round(int(mem.split()[0]) / 1024 / 1024, 1) if mem else None
    mhz = _first("/proc/cpuinfo", "cpu MHz")
    try:
        from streams.infra.kafka import kafka_version

        kafka: str | None = kafka_version()
    except Exception:  # the pom is not part of an installed package
        kafka = None
    return {
        "cpu": _first("/proc/cpuinfo", "model name") or platform.processor(),
        "cpu_mhz": round(float(mhz)) if mhz else None,
        "cpus": os.cpu_count(),
        "memory_gb": mem_gb,
        "kernel": platform.release(),
        "os": _os_name(),
        "python": platform.python_version(),
        "kafka": kafka,
    }
