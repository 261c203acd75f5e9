"""Small process and port helpers shared by the local service managers."""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import time
from dataclasses import dataclass
from pathlib import Path

from streams.errors import ToolMissingError

__all__ = [
    "ServiceStatus",
    "free_port",
    "pid_alive",
    "port_open",
    "read_pid",
    "require_tool",
    "stop_pid",
    "tail",
]


@dataclass(frozen=True)
class ServiceStatus:
    """What ``leadflow infra status`` reports for one service."""

    name: str
    running: bool
    address: str
    detail: str
    pid: int | None = None
    managed: bool = True  # False when an external service is configured

    def line(self) -> str:
        """One human-readable status line."""
        state = "running" if self.running else "stopped"
        pid = f" pid {self.pid}" if self.pid else ""
        return f"{self.name:<9} {state:<8} {self.address:<28}{pid}  {self.detail}".rstrip()


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with contextlib.closing(socket.socket(socket.AF_INET, socket.SOCK_STREAM)) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def port_open(port: int, host: str = "127.0.0.1", timeout: float = 0.5) -> bool:
    """True when something accepts TCP connections on ``host:port``."""
    with contextlib.closing(socket.socket(socket.AF_INET, socket.SOCK_STREAM)) as sock:
        sock.settimeout(timeout)
        return sock.connect_ex((host, port)) == 0


def read_pid(path: Path) -> int | None:
    """The pid stored in ``path``, or None when absent or unreadable."""
    try:
        return int(path.read_text().strip())
    except (OSError, ValueError):
        return None


def pid_alive(pid: int | None, cmdline_contains: str | None = None) -> bool:
    """True when ``pid`` is a live process (whose command line contains a marker)."""
    if not pid:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass
    if cmdline_contains is None:
        return True
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ")
    except OSError:
        return False
    # A zombie has an empty command line; treat it as gone.
    return cmdline_contains.encode() in cmdline


def stop_pid(pid: int, timeout: float = 30.0) -> bool:
    """SIGTERM ``pid``, wait up to ``timeout`` s, then SIGKILL. True if it stopped."""
    try:
        os.kill(pid, signal.SIGTERM)
    except ProcessLookupError:
        return True
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not pid_alive(pid):
            return True
        _reap(pid)
        time.sleep(0.2)
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGKILL)
    time.sleep(0.5)
    _reap(pid)
    return not pid_alive(pid)


def _reap(pid: int) -> None:
    with contextlib.suppress(ChildProcessError, OSError):
        os.waitpid(pid, os.WNOHANG)


def require_tool(name: str, hint: str) -> str:
    """Path of executable ``name``, or :class:`ToolMissingError` with ``hint``."""
    path = shutil.which(name)
    if path is None:
        raise ToolMissingError(f"'{name}' was not found on PATH: {hint}")
    return path


def tail(path: Path, lines: int = 15) -> str:
    """The last ``lines`` lines of a text file ('' when unreadable)."""
    try:
        with path.open("rb") as fh:
            fh.seek(0, os.SEEK_END)
            size = fh.tell()
            fh.seek(max(0, size - 64 * 1024))
            data = fh.read().decode("utf-8", "replace")
    except OSError:
        return ""
    return "\n".join(data.splitlines()[-lines:])
