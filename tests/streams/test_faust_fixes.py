"""Faust must not ack an event it skipped because the worker was stopping or rebalancing."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from faust.events import Event

from streams import faust_fixes


@dataclass
class FlowControl:
    active: bool = True

    def is_active(self) -> bool:
        return self.active


@dataclass
class StubMessage:
    generation_id: int = 1
    acked_by: list[Any] = field(default_factory=list)

    def ack(self, consumer: Any) -> bool:
        self.acked_by.append(consumer)
        return True


@dataclass
class StubApp:
    flow_control: FlowControl = field(default_factory=FlowControl)
    consumer_generation_id: int = 1
    consumer: str = "consumer"


def event(app: StubApp, message: StubMessage) -> Any:
    return Event(app, None, None, {}, message)  # type: ignore[arg-type]


def test_the_worker_app_installs_the_fix() -> None:
    from streams.app import app

    assert app is not None
    assert faust_fixes.installed()


def test_acks_pass_while_flow_control_is_active_and_the_generation_is_current() -> None:
    faust_fixes.install()
    app, message = StubApp(), StubMessage()
    assert event(app, message).ack() is True
    assert message.acked_by == ["consumer"]


def test_no_ack_while_the_worker_stops_or_rebalances() -> None:
    faust_fixes.install()
    app, message = StubApp(flow_control=FlowControl(active=False)), StubMessage()
    assert event(app, message).ack() is False
    assert message.acked_by == []


def test_no_ack_for_a_message_of_an_older_generation() -> None:
    faust_fixes.install()
    app, message = StubApp(consumer_generation_id=2), StubMessage(generation_id=1)
    assert event(app, message).ack() is False
    assert message.acked_by == []


def test_install_is_idempotent() -> None:
    faust_fixes.install()
    guarded = Event.ack
    faust_fixes.install()
    assert Event.ack is guarded


class NotATerminal:
    def isatty(self) -> bool:
        return False


class Spinner:
    file = NotATerminal()


def test_the_spinner_never_turns_the_root_logger_to_debug_off_a_terminal() -> None:
    import logging

    from faust.worker import Worker

    faust_fixes.install()
    logger = logging.getLogger("leadflow-test-root")
    logger.setLevel(logging.WARNING)

    class FakeWorker:
        spinner = Spinner()

    Worker._setup_spinner_handler(FakeWorker(), logger, logging.WARNING)  # type: ignore[arg-type]
    assert logger.level == logging.WARNING
    assert logger.handlers == []
