"""The one exception tree of leadflow.

Every error leadflow raises on purpose derives from :class:`LeadflowError`,
so a caller (the CLI, an agent's dead-letter guard) can catch the whole
family in one place and print or route it without a traceback::

    LeadflowError
    ├── ConfigError                  bad or missing configuration
    │   └── KafkaSecurityError       Kafka refused our TLS/SASL setup (streams.kafka_config)
    │       ├── KafkaAuthError       wrong user or password
    │       ├── KafkaTlsError        certificate not trusted / host name mismatch
    │       └── KafkaProtocolMismatchError  plaintext client against a TLS listener, or back
    ├── InfraError                   local Kafka / Postgres could not be run
    │   ├── ToolMissingError         java, mvn or the Postgres binaries absent
    │   ├── PortInUseError           a port we need is held by something else
    │   └── ServiceStartError        a service started but never became ready
    ├── TopicError                   topic catalog problems
    │   └── TopicDriftError          live topics disagree with the catalog
    ├── TransientError               infrastructure briefly unavailable: retry the batch
    │   ├── DatabaseUnavailableError  Postgres unreachable (also a DatabaseError)
    │   └── KafkaUnavailableError    the broker could not be reached or did not answer
    ├── DatabaseError                migrations or sink writes failed
    │   ├── SinkFullError            a sink was handed more than it may hold (sinks.contract)
    │   ├── CampaignNotFinishedError archive of a campaign with work left (sinks.campaigns)
    │   ├── PurgeRefusedError        purge of a campaign that is not archived (sinks.campaigns)
    │   └── RedriveInProgressError   another dlq redrive holds the lock (sinks.dead_letter_redrives)
    ├── DeadLetterNotFoundError      no dead letter at that id (streams.dlq)
    ├── RedriveDeliveryError         Kafka did not take a redriven record (streams.dlq)
    ├── BenchError                   a benchmark could not be set up or measured (bench.pipeline)
    ├── ProduceError                 the benchmark's producer lost records (bench.records)
    ├── ReplayError                  a replay or reset could not be planned or done (streams.replay)
    │   ├── GroupActiveError         the consumer group has live members
    │   └── RollbackFileError        a rollback file is missing, taken or malformed
    ├── IllegalTransitionError       a lead state change the state machine forbids
    ├── InjectedFaultError           raised on purpose by a fault point (agents.faults)
    ├── ChaosError                   the fault harness could not run a scenario (chaos.harness)
    │   └── ServiceUnmanagedError    a service the scenario must restart is not ours to restart
    ├── CodecError                   a payload could not be encoded or decoded
    │   ├── NotSingleObjectError     no ``C3 01`` marker
    │   ├── UnknownFingerprintError  writer schema not found in ``schemas/``
    │   ├── TruncatedPayloadError    body ends before the record does
    │   ├── SchemaMismatchError      record does not match its schema
    │   ├── SchemaLoadError          a ``.avsc`` file is invalid
    │   └── RecordTooLargeError      a record over LEADFLOW_MAX_RECORD_BYTES (not decoded)
    └── ProviderError                an outside service call failed (providers)

Each error's ``str()`` is one line that names the thing it is about.
"""

from __future__ import annotations

__all__ = [
    "CodecError",
    "ConfigError",
    "DatabaseError",
    "DatabaseUnavailableError",
    "IllegalTransitionError",
    "InfraError",
    "KafkaUnavailableError",
    "LeadflowError",
    "NotSingleObjectError",
    "PortInUseError",
    "ProviderError",
    "RecordTooLargeError",
    "SchemaLoadError",
    "SchemaMismatchError",
    "ServiceStartError",
    "ToolMissingError",
    "TopicDriftError",
    "TopicError",
    "TransientError",
    "TruncatedPayloadError",
    "UnknownFingerprintError",
]


class LeadflowError(Exception):
    """Root of every error leadflow raises on purpose."""

    #: A short, stable, label-safe name for metrics and dead-letter reasons.
    reason: str = "error"


class ConfigError(LeadflowError):
    """Configuration is missing, malformed or contradictory."""

    reason = "config"


class InfraError(LeadflowError):
    """A local service (Kafka broker, Postgres cluster) could not be managed."""

    reason = "infra"


class ToolMissingError(InfraError):
    """A program leadflow needs (java, mvn, postgres binaries) is not installed."""

    reason = "tool_missing"


class PortInUseError(InfraError):
    """A TCP port leadflow needs is already taken by another program."""

    reason = "port_in_use"


class ServiceStartError(InfraError):
    """A service was started but did not become ready."""

    reason = "service_start"


class TopicError(LeadflowError):
    """A problem with the topic catalog or the live topics."""

    reason = "topic"


class TopicDriftError(TopicError):
    """The live topics disagree with the catalog."""

    reason = "topic_drift"


class DatabaseError(LeadflowError):
    """A Postgres operation (migration, sink write) failed."""

    reason = "database"


class TransientError(LeadflowError):
    """Infrastructure is briefly unavailable (Postgres down, broker unreachable).

    A stage that meets it holds its batch, backs off and retries; it never
    dead-letters leads for it. Holding the batch is the backpressure: the
    partitions stop moving until the service is back.
    """

    reason = "transient"


class DatabaseUnavailableError(TransientError, DatabaseError):
    """Postgres could not be reached or the connection dropped mid-batch."""

    reason = "database_unavailable"


class KafkaUnavailableError(TransientError):
    """The Kafka broker could not be reached or did not answer in time."""

    reason = "kafka_unavailable"


class IllegalTransitionError(LeadflowError):
    """A lead state change that the state machine does not allow.

    It is recorded (timeline, dead-letter) and never applied.
    """

    reason = "illegal_transition"

    def __init__(self, from_state: str | None, to_state: str, detail: str = "") -> None:
        self.from_state = from_state
        self.to_state = to_state
        extra = f": {detail}" if detail else ""
        super().__init__(f"illegal lead transition {from_state or '(none)'} -> {to_state}{extra}")


class CodecError(LeadflowError):
    """A payload could not be encoded or decoded.

    ``subject`` names what was being coded (a topic, a schema, a file), so
    the message says where the bad bytes came from.
    """

    reason = "codec"

    def __init__(self, detail: str, *, subject: str | None = None) -> None:
        self.detail = detail
        self.subject = subject
        where = f" ({subject})" if subject else ""
        super().__init__(f"{self.summary}{where}: {detail}")

    #: The first words of the message; subclasses say what went wrong.
    summary = "cannot code payload"


class NotSingleObjectError(CodecError):
    """The payload does not start with the Avro single-object marker ``C3 01``."""

    reason = "not_avro"
    summary = "payload is not Avro single-object encoded"


class UnknownFingerprintError(CodecError):
    """The payload's writer-schema fingerprint matches no schema in ``schemas/``."""

    reason = "unknown_schema"
    summary = "unknown writer schema fingerprint"


class TruncatedPayloadError(CodecError):
    """The payload ends before the record it encodes does."""

    reason = "truncated"
    summary = "truncated Avro payload"


class SchemaMismatchError(CodecError):
    """A record does not match its schema (on encode or on decode)."""

    reason = "schema_mismatch"
    summary = "record does not match its schema"


class SchemaLoadError(CodecError):
    """An ``.avsc`` file in ``schemas/`` is missing, unreadable or invalid."""

    reason = "schema_load"
    summary = "cannot load Avro schema"


class RecordTooLargeError(CodecError):
    """A record is larger than a stage accepts (``LEADFLOW_MAX_RECORD_BYTES``).

    It is not decoded; its dead letter keeps only the first bytes, so the
    dead letter itself fits in a Kafka message.
    """

    reason = "record_too_large"
    summary = "record too large"


class ProviderError(LeadflowError):
    """An outside service (SMS, voice, email, enrichment, LLM) call failed.

    The providers package subclasses this for retryable, permanent,
    ambiguous and give-up outcomes.
    """

    reason = "provider"
