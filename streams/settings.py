"""Configuration from the environment, with documented defaults.

Every knob leadflow has is one field of :class:`Settings`. Each field names
its environment variable and says what it does; ``leadflow config`` prints
the table (docs/CONFIGURATION.md is generated from it and a test keeps the
two in step). Nothing else in the code reads ``os.environ`` for leadflow
settings, so this module is the whole list.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

from psycopg.conninfo import conninfo_to_dict, make_conninfo

from streams.errors import ConfigError

__all__ = [
    "REPO_ROOT",
    "Settings",
    "get_settings",
    "load_from_env",
    "setting",
    "settings_table",
]

_T = TypeVar("_T")

#: The checkout this package runs from (an editable install is assumed).
REPO_ROOT = Path(__file__).resolve().parent.parent


def _env(name: str, doc: str) -> dict[str, str]:
    return {"env": name, "doc": doc}


def setting(default: Any, env: str, doc: str) -> Any:
    """A settings-dataclass field read from environment variable ``env``.

    Other packages (providers, the simulator) declare their own frozen
    settings dataclasses with this and load them with :func:`load_from_env`.
    """
    return field(default=default, metadata=_env(env, doc))


def load_from_env(cls: type[_T], environ: Mapping[str, str] | None = None) -> _T:
    """Instantiate settings dataclass ``cls`` from ``environ`` (default ``os.environ``).

    Empty or unset variables keep their defaults. Raises :class:`ConfigError`
    naming the variable when a value does not parse.
    """
    env = os.environ if environ is None else environ
    values: dict[str, Any] = {}
    for f in dataclasses.fields(cls):  # type: ignore[arg-type]
        name = f.metadata["env"]
        raw = env.get(name)
        if raw is None or raw == "":
            continue
        values[f.name] = _parse(name, raw, f.type)
    return cls(**values)


@dataclass(frozen=True)
class Settings:
    """All leadflow settings. Build with :meth:`from_env`."""

    # --- where things live ---------------------------------------------------
    home: Path = field(
        default=Path(".leadflow"),
        metadata=_env(
            "LEADFLOW_HOME",
            "Folder for local services' data and logs (git-ignored). "
            "Relative paths are taken from the current directory.",
        ),
    )
    cache_dir: Path = field(
        default=Path("~/.cache/leadflow"),
        metadata=_env(
            "LEADFLOW_CACHE_DIR",
            "Cache outside git for downloaded Kafka jars; survives clean clones.",
        ),
    )
    schemas_dir: Path = field(
        default=REPO_ROOT / "schemas",
        metadata=_env("LEADFLOW_SCHEMAS_DIR", "Folder of Avro .avsc schema files."),
    )

    # --- Kafka ---------------------------------------------------------------
    kafka_bootstrap: str = field(
        default="",
        metadata=_env(
            "LEADFLOW_KAFKA_BOOTSTRAP",
            "Bootstrap servers of an existing Kafka cluster (host:port,...). "
            "When set, `leadflow infra up` starts no broker and uses this one.",
        ),
    )
    kafka_port: int = field(
        default=9092,
        metadata=_env("LEADFLOW_KAFKA_PORT", "Client port of the local broker."),
    )
    kafka_controller_port: int = field(
        default=9093,
        metadata=_env(
            "LEADFLOW_KAFKA_CONTROLLER_PORT", "KRaft controller port of the local broker."
        ),
    )
    kafka_heap_mb: int = field(
        default=512,
        metadata=_env("LEADFLOW_KAFKA_HEAP_MB", "JVM heap of the local broker, in MiB."),
    )
    kafka_start_timeout_s: float = field(
        default=90.0,
        metadata=_env(
            "LEADFLOW_KAFKA_START_TIMEOUT_S",
            "Seconds to wait for the local broker to answer after starting it.",
        ),
    )
    topic_prefix: str = field(
        default="",
        metadata=_env(
            "LEADFLOW_TOPIC_PREFIX",
            "Prefix for every topic and consumer group name (isolates test runs).",
        ),
    )
    topic_partitions: int = field(
        default=8,
        metadata=_env(
            "LEADFLOW_TOPIC_PARTITIONS",
            "Default partition count for catalog topics (the catalog may override).",
        ),
    )
    topic_replication: int = field(
        default=1,
        metadata=_env("LEADFLOW_TOPIC_REPLICATION", "Replication factor for new topics."),
    )

    # --- Postgres ------------------------------------------------------------
    database_url: str = field(
        default="",
        metadata=_env(
            "LEADFLOW_DATABASE_URL",
            "libpq URL of an existing database (postgresql://user@host:port/db). "
            "When set, `leadflow infra up` starts no Postgres and uses this one.",
        ),
    )
    worker_database_url: str = field(
        default="",
        metadata=_env(
            "LEADFLOW_WORKER_DATABASE_URL",
            "libpq URL the worker (stages and sinks) connects with. Empty: the database "
            "URL with the least-privilege `leadflow_app` role in place of the owner "
            "`leadflow` (row access only, no DDL).",
        ),
    )
    pg_port: int = field(
        default=5432,
        metadata=_env("LEADFLOW_PG_PORT", "Port of the local Postgres cluster."),
    )
    pg_bindir: str = field(
        default="",
        metadata=_env(
            "LEADFLOW_PG_BINDIR",
            "Folder with initdb/pg_ctl/postgres; found under /usr/lib/postgresql when empty.",
        ),
    )
    pg_database: str = field(
        default="leadflow",
        metadata=_env("LEADFLOW_PG_DATABASE", "Database name in the local cluster."),
    )

    # --- the worker ----------------------------------------------------------
    web_port: int = field(
        default=6066,
        metadata=_env("LEADFLOW_WEB_PORT", "Worker web server port (/metrics, /health, webhooks)."),
    )
    web_bind: str = field(
        default="127.0.0.1",
        metadata=_env(
            "LEADFLOW_WEB_BIND",
            "Address the worker web server binds (0.0.0.0 inside a container).",
        ),
    )
    time_scale: float = field(
        default=1.0,
        metadata=_env(
            "LEADFLOW_TIME_SCALE",
            "Campaign clock speed relative to wall time (3600 = an hour a second).",
        ),
    )
    stage_batch_size: int = field(
        default=500,
        metadata=_env(
            "LEADFLOW_STAGE_BATCH_SIZE", "Most events a stage handles in one batch (one ack step)."
        ),
    )
    stage_batch_within_ms: int = field(
        default=50,
        metadata=_env(
            "LEADFLOW_STAGE_BATCH_WITHIN_MS",
            "Longest a batch waits for more events after its first one before the stage "
            "handles what it has (an idle stage sleeps until an event comes).",
        ),
    )
    retry_backoff_max_s: float = field(
        default=5.0,
        metadata=_env(
            "LEADFLOW_RETRY_BACKOFF_MAX_S",
            "Longest pause (before jitter) between retries of work held for a transient "
            "failure (Postgres or Kafka unavailable). The pause doubles from 0.2 s up to "
            "this; each retry is one connection attempt, so a short cap lets stages resume "
            "within seconds of the service coming back.",
        ),
    )
    group_session_timeout_s: float = field(
        default=10.0,
        metadata=_env(
            "LEADFLOW_GROUP_SESSION_TIMEOUT_S",
            "Seconds without a heartbeat before the broker drops a worker from the consumer "
            "group and hands its partitions to the others (Faust's default is 60: a crashed "
            "worker's partitions would wait a minute). Heartbeats come from the consumer's "
            "own thread every 3 s, so a busy worker is not dropped.",
        ),
    )
    shutdown_drain_s: float = field(
        default=10.0,
        metadata=_env(
            "LEADFLOW_SHUTDOWN_DRAIN_S",
            "On SIGTERM, the longest a worker waits for events already taken to be "
            "handled before it commits what was handled and exits; the rest are "
            "handled again by the worker that takes the partition (stages are idempotent).",
        ),
    )
    stop_timeout_s: float = field(
        default=20.0,
        metadata=_env(
            "LEADFLOW_STOP_TIMEOUT_S",
            "On SIGTERM, the longest a worker's whole stop may take: past it the worker "
            "logs where it waits (stacks, no data) and exits with status 70; what it did "
            "not commit is handled again. Must exceed LEADFLOW_SHUTDOWN_DRAIN_S; 0: no bound.",
        ),
    )
    kafka_start_wait_s: float = field(
        default=60.0,
        metadata=_env(
            "LEADFLOW_KAFKA_START_WAIT_S",
            "How long `leadflow worker` waits at start for an unreachable Kafka (a broker "
            "restarting, say), saying so every 10 s, before it exits with an error. A "
            "refusal for a security reason (password, certificate) fails at once.",
        ),
    )
    max_record_bytes: int = field(
        default=100_000,
        metadata=_env(
            "LEADFLOW_MAX_RECORD_BYTES",
            "Largest record value a stage accepts; a larger one is dead-lettered "
            "(reason record_too_large) with only its first this-many bytes kept.",
        ),
    )
    enrich_cache_ttl_s: int = field(
        default=7 * 24 * 3600,
        metadata=_env(
            "LEADFLOW_ENRICH_CACHE_TTL_S",
            "How long (campaign-clock seconds) an enrichment result is reused.",
        ),
    )
    clock_start: str = field(
        default="",
        metadata=_env(
            "LEADFLOW_CLOCK_START",
            "Campaign-clock time (ISO 8601) when the clock is first anchored; empty = now. "
            "The anchor is kept in Postgres so every worker and restart agrees.",
        ),
    )
    log_level: str = field(
        default="info",
        metadata=_env("LEADFLOW_LOG_LEVEL", "Log level: debug, info, warning, error."),
    )

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> Settings:
        """Build settings from ``environ`` (default ``os.environ``).

        Raises :class:`ConfigError` naming the variable when a value does not
        parse.
        """
        settings = load_from_env(cls, environ)
        settings._validate()
        return settings

    def _validate(self) -> None:
        for name, port in (
            ("LEADFLOW_KAFKA_PORT", self.kafka_port),
            ("LEADFLOW_KAFKA_CONTROLLER_PORT", self.kafka_controller_port),
            ("LEADFLOW_PG_PORT", self.pg_port),
            ("LEADFLOW_WEB_PORT", self.web_port),
        ):
            if not 0 < port < 65536:
                raise ConfigError(f"{name}={port} is not a TCP port (1-65535)")
        if self.topic_partitions < 1:
            raise ConfigError(f"LEADFLOW_TOPIC_PARTITIONS={self.topic_partitions} must be >= 1")
        if self.time_scale <= 0:
            raise ConfigError(f"LEADFLOW_TIME_SCALE={self.time_scale} must be > 0")
        if self.kafka_heap_mb < 128:
            raise ConfigError(f"LEADFLOW_KAFKA_HEAP_MB={self.kafka_heap_mb} must be >= 128")
        if self.shutdown_drain_s < 0:
            raise ConfigError(f"LEADFLOW_SHUTDOWN_DRAIN_S={self.shutdown_drain_s} must be >= 0")
        if self.retry_backoff_max_s < 0.2:
            raise ConfigError(
                f"LEADFLOW_RETRY_BACKOFF_MAX_S={self.retry_backoff_max_s} must be >= 0.2"
            )
        if self.stop_timeout_s < 0 or 0 < self.stop_timeout_s <= self.shutdown_drain_s:
            raise ConfigError(
                f"LEADFLOW_STOP_TIMEOUT_S={self.stop_timeout_s} must be 0 (no bound) or more "
                f"than LEADFLOW_SHUTDOWN_DRAIN_S={self.shutdown_drain_s}"
            )
        if self.kafka_start_wait_s < 0:
            raise ConfigError(f"LEADFLOW_KAFKA_START_WAIT_S={self.kafka_start_wait_s} must be >= 0")

    # --- derived values ------------------------------------------------------
    @property
    def home_dir(self) -> Path:
        """Absolute state folder."""
        return self.home.expanduser().resolve()

    @property
    def cache_path(self) -> Path:
        """Absolute cache folder."""
        return self.cache_dir.expanduser().resolve()

    @property
    def uses_external_kafka(self) -> bool:
        """True when ``LEADFLOW_KAFKA_BOOTSTRAP`` names a cluster to use as is."""
        return bool(self.kafka_bootstrap)

    @property
    def bootstrap_servers(self) -> str:
        """Where clients connect: the external cluster or the local broker."""
        return self.kafka_bootstrap or f"127.0.0.1:{self.kafka_port}"

    @property
    def uses_external_database(self) -> bool:
        """True when ``LEADFLOW_DATABASE_URL`` names a database to use as is."""
        return bool(self.database_url)

    @property
    def dsn(self) -> str:
        """libpq URL of the leadflow database."""
        return self.database_url or (
            f"postgresql://leadflow@127.0.0.1:{self.pg_port}/{self.pg_database}"
        )

    @property
    def worker_dsn(self) -> str:
        """libpq URL of the worker's least-privilege role (see ``worker_database_url``)."""
        if self.worker_database_url:
            return self.worker_database_url
        params = conninfo_to_dict(self.dsn)
        if params.get("user") != "leadflow":
            return self.dsn
        return make_conninfo(self.dsn, user="leadflow_app")

    def topic_name(self, base: str) -> str:
        """Full topic name for a catalog name such as ``raw``."""
        return f"{self.topic_prefix}{base}"


def _parse(name: str, raw: str, type_name: Any) -> Any:
    kind = str(type_name)
    try:
        if kind == "int":
            return int(raw)
        if kind == "float":
            return float(raw)
        if kind == "bool":
            if raw.lower() in {"1", "true", "yes", "on"}:
                return True
            if raw.lower() in {"0", "false", "no", "off"}:
                return False
            raise ValueError(raw)
        if kind == "Path":
            return Path(raw)
        return raw
    except ValueError:
        raise ConfigError(f"{name}={raw!r} is not a valid {kind}") from None


def settings_table(cls: type[Any] = Settings) -> list[tuple[str, str, str]]:
    """(variable, default, description) for every field of ``cls``, in order."""
    rows = []
    for f in dataclasses.fields(cls):
        default = f.default
        if isinstance(default, Path) and default.is_absolute():
            with contextlib.suppress(ValueError):
                default = "<repo>/" + str(default.relative_to(REPO_ROOT))
        shown = "(unset)" if default == "" else str(default)
        rows.append((f.metadata["env"], shown, f.metadata["doc"]))
    return rows


_cached: Settings | None = None


def get_settings() -> Settings:
    """Settings from the process environment, built once."""
    global _cached
    if _cached is None:
        _cached = Settings.from_env()
    return _cached
