"""The Faust application: one app, configured from :mod:`streams.settings`.

``leadflow worker`` runs it (see :mod:`streams.cli`). Agents live in the
``agents`` package, one module per stage, and are found by autodiscovery.
Buffer and commit settings are chosen deliberately; docs/ARCHITECTURE.md
explains each.
"""

from __future__ import annotations

import faust

from streams import faust_fixes, shutdown_drain, stack_dump_signal
from streams.kafka_config import faust_credentials
from streams.settings import get_settings

__all__ = ["app", "create_app"]

#: Events buffered per stream before Faust pauses the partition (at 80 %).
_STREAM_BUFFER = 1024
#: Records per fetch: fewer than the buffer's headroom above its pause mark.
_MAX_POLL_RECORDS = 200


def create_app() -> faust.App:
    """Build the Faust app from the environment's settings."""
    faust_fixes.install()  # no acks of events Faust skipped at a stop or rebalance
    stack_dump_signal.install()  # kill -USR2 logs the stacks (never pdb, never a crash)
    s = get_settings()
    faust_app = faust.App(
        s.topic_name("leadflow"),  # the app id; also names consumer groups and changelogs
        broker=[f"kafka://{hostport.strip()}" for hostport in s.bootstrap_servers.split(",")],
        broker_credentials=faust_credentials(),  # SASL/TLS (streams.kafka_config)
        autodiscover=["agents"],
        origin="streams",
        # Every worker stores its table state in memory and rebuilds it from the
        # changelog on start; the state table is small per lead.
        store="memory://",
        topic_partitions=s.topic_partitions,
        topic_replication_factor=s.topic_replication,
        # leadflow's topics come from the catalog (`leadflow topics`); Faust may
        # still declare its own internal changelog topics.
        topic_allow_declare=True,
        web_port=s.web_port,
        web_bind=s.web_bind,
        web_in_thread=False,
        # Each stream buffers at most this many events; from 80 % on, Faust
        # stops fetching the partitions adding to it until it drains to 40 %.
        # Small enough that a throttled provider's backlog stays in Kafka, not
        # in memory.
        stream_buffer_maxsize=_STREAM_BUFFER,
        # At most this many records per fetch, so a fetch never overfills a
        # stream buffer: a partition is paused once its stream holds
        # 1024 / 1.25 = 819 events, and the rest of the fetch (at most 200)
        # still fits. A full buffer would make Faust's fetcher wait for the
        # stage, and past broker_max_poll_interval the worker is evicted
        # from its group (make chaos "slow", docs/RELIABILITY.md).
        broker_max_poll_records=_MAX_POLL_RECORDS,
        producer_linger_ms=5,
        broker_session_timeout=s.group_session_timeout_s,
        broker_heartbeat_interval=min(3.0, s.group_session_timeout_s / 3),
        logging_config=None,
    )
    faust_fixes.install(faust_app)  # and redeliver what was set aside, after each rebalance
    # A SIGTERM'd worker exits in bounded time: the drain, then the whole stop.
    shutdown_drain.install(s.shutdown_drain_s, s.stop_timeout_s)
    return faust_app


app = create_app()
