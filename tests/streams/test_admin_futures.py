"""Admin futures that time out keep their client alive (streams/admin_futures.py)."""

from __future__ import annotations

from concurrent.futures import Future

import pytest

from streams import admin_futures
from streams.admin_futures import admin_result
from streams.errors import KafkaUnavailableError


def test_an_answer_in_time_is_returned() -> None:
    future: Future[int] = Future()
    future.set_result(7)
    assert admin_result(object(), future, 0.1, "a thing") == 7


def test_a_timeout_is_a_clear_error_and_the_client_lives_until_its_request_ends() -> None:
    admin_futures._parked.clear()
    admin, future = object(), Future()  # type: ignore[var-annotated]
    with pytest.raises(KafkaUnavailableError, match=r"offsets of group g within 0\.01 s"):
        admin_result(admin, future, 0.01, "offsets of group g")
    assert admin_futures.parked() == 1
    assert admin_futures._parked[0][0] is admin  # still referenced: not destroyed mid-request
    done: Future[int] = Future()
    done.set_result(1)
    admin_result(object(), done, 0.1, "another thing")
    assert admin_futures.parked() == 1  # its request is still in flight
    future.set_result(None)
    admin_result(object(), done, 0.1, "another thing")
    assert admin_futures.parked() == 0  # let go of, from a caller's thread


def test_other_kafka_errors_pass_through() -> None:
    future: Future[int] = Future()
    future.set_exception(RuntimeError("broker said no"))
    with pytest.raises(RuntimeError, match="broker said no"):
        admin_result(object(), future, 0.1, "a thing")
