"""Sink agents: topics into Postgres through the sink contract (:mod:`sinks.contract`).

- ``dead-letter`` -> ``dead_letters`` (:class:`~sinks.dead_letter_sink.DeadLetterSink`);
- ``sent`` -> ``campaign_stats`` (:class:`~sinks.campaign_stats.CampaignStatsSink`).

Lead state and the send ledger are written by the stages themselves, inside
the transactions that decide them (the send claim must be atomic with the
opt-out check); these agents write what can follow behind.

Each sink runs as a :class:`~agents.runtime.Stage` under the common
:class:`~agents.runtime.StageRunner`, so it gets the same batching, dead
letters and shutdown rules. A batch's events are acknowledged only after
``flush`` returned, so only once they are durable. When Postgres is down the
flush raises :class:`~streams.errors.TransientError`: the sink pauses the
batch's partitions (nothing more is fetched for them, so memory stays flat),
the runner holds the batch and retries with backoff, and the partitions
resume after the first successful flush.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from typing import Any, ClassVar

from faust.types import TP

from agents import topology
from agents.context import get_context
from agents.runtime import BatchResult, Item, Stage, runner_for
from sinks.campaign_stats import CampaignStatsSink
from sinks.contract import Sink
from sinks.dead_letter_sink import DeadLetterSink
from streams import metrics
from streams.app import app
from streams.errors import TransientError

__all__ = ["SinkStage", "campaign_stats_sink_agent", "dead_letter_sink_agent"]

log = logging.getLogger(__name__)


class SinkStage(Stage):
    """Adapts a :class:`~sinks.contract.Sink` to the stage runner."""

    name: ClassVar[str] = "sink"
    input_schema: ClassVar[str] = ""

    def __init__(
        self,
        sink: Sink[dict[str, Any]],
        *,
        pause: Callable[[set[TP]], None] | None = None,
        resume: Callable[[set[TP]], None] | None = None,
    ) -> None:
        self.sink = sink
        self._pause = pause
        self._resume = resume
        self.paused: set[TP] = set()
        #: Times the sink paused its partitions because Postgres was unavailable.
        self.backpressure_events = 0

    async def handle(self, items: Sequence[Item]) -> BatchResult:
        """Add the batch to the sink and flush it; pause its partitions while that fails."""
        self.sink.discard()  # a held batch comes back whole: start it afresh
        for item in items:
            self.sink.add(item.record, item.topic, item.partition, item.offset)
        try:
            await self.sink.flush()
        except TransientError:
            self.sink.discard()
            tps = {TP(item.topic, item.partition) for item in items} - self.paused
            if tps:
                self.backpressure_events += 1
                metrics.sink_backpressure(self.sink.name)
                self.paused |= tps
                log.warning(
                    "sink %s: Postgres unavailable; pausing %d partition(s)", self.name, len(tps)
                )
                if self._pause is not None:
                    self._pause(tps)
            raise
        if self.paused:
            log.info(
                "sink %s: Postgres back; resuming %d partition(s)", self.name, len(self.paused)
            )
            if self._resume is not None:
                self._resume(self.paused)
            self.paused = set()
        return BatchResult()


class DeadLetterSinkStage(SinkStage):
    """``dead-letter`` -> ``dead_letters``."""

    name: ClassVar[str] = "sink-dead-letters"
    input_schema: ClassVar[str] = "leadflow.DeadLetter"


class CampaignStatsSinkStage(SinkStage):
    """``sent`` -> ``campaign_stats``."""

    name: ClassVar[str] = "sink-campaign-stats"
    input_schema: ClassVar[str] = "leadflow.TouchSent"


async def _run_sink(
    stream: Any, stage_cls: type[SinkStage], sink_cls: type[Any], base: str
) -> None:
    ctx = await get_context(app, topology.lead_state_table)
    stage = stage_cls(
        sink_cls(ctx.db(stage_cls.name)),
        pause=app.consumer.pause_partitions,
        resume=app.consumer.resume_partitions,
    )
    await runner_for(stage, ctx, base).run(stream)


@app.agent(topology.topic("dead-letter"), name="sink-dead-letters")
async def dead_letter_sink_agent(stream: Any) -> None:
    """Faust agent: store dead letters in Postgres."""
    await _run_sink(stream, DeadLetterSinkStage, DeadLetterSink, "dead-letter")


@app.agent(topology.topic("sent"), name="sink-campaign-stats")
async def campaign_stats_sink_agent(stream: Any) -> None:
    """Faust agent: keep campaign statistics current in Postgres."""
    await _run_sink(stream, CampaignStatsSinkStage, CampaignStatsSink, "sent")
