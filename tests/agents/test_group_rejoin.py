"""The worker's timer pokes an evicted consumer, in the consumer's own thread."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

import pytest

from agents import group_rejoin


class Subscription:
    """aiokafka's subscription state, as far as the poke and the view use it."""

    def __init__(self, idle_s: float) -> None:
        self.fetcher_idle_time = idle_s
        self.fetches = 0

    def fetch_context(self) -> Any:
        subscription = self

        class Context:
            def __enter__(self) -> None:
                subscription.fetches += 1

            def __exit__(self, *exc: object) -> None:
                subscription.fetcher_idle_time = 0.0

        return Context()


class Thread:
    """Faust's consumer thread: runs a coroutine function in the consumer's loop."""

    def __init__(self, client: Any) -> None:
        self._consumer = client
        self.calls: list[tuple[Any, ...]] = []

    async def call_thread(self, fun: Any, *args: Any) -> Any:
        self.calls.append(args)
        return await fun(*args)


def faust_consumer(member_id: str, idle_s: float) -> tuple[Any, Any, Subscription]:
    subscription = Subscription(idle_s)
    coordinator = SimpleNamespace(member_id=member_id, _max_poll_interval=10.0)
    client = SimpleNamespace(_coordinator=coordinator, _subscription=subscription)
    thread = Thread(client)
    consumer = SimpleNamespace(_thread=thread, flow_active=False, _get_active_partitions=set)
    return consumer, client, subscription


async def test_an_evicted_consumer_is_poked_once(monkeypatch: pytest.MonkeyPatch) -> None:
    consumer, client, subscription = faust_consumer(member_id="", idle_s=12.0)
    monkeypatch.setattr(group_rejoin.app, "consumer", consumer)
    before = group_rejoin.POKES["evicted"]
    assert await group_rejoin.keep_membership() == "evicted"
    assert consumer._thread.calls == [(client,)] and subscription.fetches == 1
    assert group_rejoin.POKES["evicted"] == before + 1
    assert await group_rejoin.keep_membership() is None  # it counts as fetching again


async def test_a_member_fetching_recently_is_left_alone(monkeypatch: pytest.MonkeyPatch) -> None:
    consumer, _, subscription = faust_consumer(member_id="m-1", idle_s=1.0)
    monkeypatch.setattr(group_rejoin.app, "consumer", consumer)
    assert await group_rejoin.keep_membership() is None
    assert subscription.fetches == 0
