"""Waiting on confluent-kafka admin futures without crashing the process.

An ``AdminClient`` destroyed while one of its requests is still in flight
can make librdkafka crash the whole process (SIGSEGV), which is what a
timed-out ``future.result(timeout=...)`` followed by the client going out of
scope does when the broker is down or restarting. :func:`admin_result`
waits like ``result`` does, but on a timeout it keeps the client alive
until its request has finished, and lets go of it later from a caller's
thread (never from librdkafka's callback thread, which would be the same
crash), then raises :class:`~streams.errors.KafkaUnavailableError`.
"""

from __future__ import annotations

import threading
from concurrent.futures import Future
from typing import Any, TypeVar

from streams.errors import KafkaUnavailableError

__all__ = ["admin_result", "parked"]

_T = TypeVar("_T")
_lock = threading.Lock()
#: Admin clients whose requests outlived a caller's timeout, with those requests.
_parked: list[tuple[Any, Future[Any]]] = []


def parked() -> int:
    """How many admin clients are kept alive for requests still in flight."""
    with _lock:
        return len(_parked)


def _release_finished() -> None:
    with _lock:
        _parked[:] = [(admin, future) for admin, future in _parked if not future.done()]


def admin_result(admin: Any, future: Future[_T], timeout_s: float, what: str) -> _T:
    """``future.result(timeout_s)``, keeping ``admin`` alive if it times out.

    ``what`` names the request in the error (e.g. ``"offsets of group g"``).
    Other errors (``KafkaException``) pass through unchanged.
    """
    _release_finished()
    try:
        return future.result(timeout=timeout_s)
    except TimeoutError:
        with _lock:
            _parked.append((admin, future))
        raise KafkaUnavailableError(
            f"Kafka did not answer a request for {what} within {timeout_s:g} s"
        ) from None
