"""The exceptions eos raises.

Every exception eos raises on purpose derives from :class:`EosError`, so one
``except eos.EosError`` catches them all::

    EosError
    ├── ConfigError                  a setting is missing or invalid (also a ValueError)
    ├── SerializationError           a key or value could not be (de)serialized
    ├── ProcessingError              the user's processor raised; wraps that exception
    ├── TimerError                   on_timer, a punctuation or a window's expiry raised
    ├── ProduceError                 a record could not be handed to the producer
    ├── StateError                   a state store could not be opened, restored or used
    ├── AbortLimitError              the batch kept failing without progress; the instance stopped
    ├── SinkUnavailableError         a sink's database stayed unreachable past its outage limit
    └── TransactionError             a Kafka transactional call failed; keeps .kafka_error
        ├── RetriableTransactionError    retry the same call
        ├── AbortableTransactionError    abort, rewind, redo the batch
        └── FatalTransactionError        this producer can never commit again
            ├── ProducerFencedError      another instance took over this transactional.id
            └── TransactionOutcomeUnknownError  a commit did not finish before the stop deadline

Transaction errors are classified only by ``KafkaError.retriable()``,
``txn_requires_abort()`` and ``fatal()``; this module never imports
``confluent_kafka``, so ``kafka_error`` is typed as ``object``.

All exceptions here survive ``pickle`` (multiprocessing workers send them to
the parent), provided the objects they carry (``cause``, ``kafka_error``) do.
"""

from __future__ import annotations

import copyreg
from typing import Literal

__all__ = [
    "AbortLimitError",
    "AbortableTransactionError",
    "ConfigError",
    "EosError",
    "FatalTransactionError",
    "ProcessingError",
    "ProduceError",
    "ProducerFencedError",
    "RecordTimeout",
    "RetriableTransactionError",
    "SerializationError",
    "SinkUnavailableError",
    "StateError",
    "StuckCoroutineError",
    "TimerError",
    "TransactionError",
    "TransactionOutcomeUnknownError",
]

Part = Literal["key", "value"]
Operation = Literal["serialize", "deserialize"]


class EosError(Exception):
    """Base class of every error eos raises on purpose.

    Catch it to handle any eos failure; the subclasses say what went wrong and
    what to do about it.
    """

    def __reduce__(self) -> tuple[object, ...]:
        # Exception's own __reduce__ calls ``cls(*self.args)``, which fails for
        # subclasses with keyword-only constructor arguments. Rebuild through
        # __new__ (which sets .args) and restore the attributes from __dict__.
        return (copyreg.__newobj__, (type(self), *self.args), self.__dict__)  # type: ignore[attr-defined]


class ConfigError(EosError, ValueError):
    """A configuration value is missing or invalid.

    Raised by :class:`eos.config.Config` at construction, by
    ``Config.from_mapping``/``Config.from_properties`` while parsing, and by
    :func:`eos.serde.resolve_serde`. The message names the setting, the bad
    value (never for secret settings) and what is allowed. Fix the setting and
    start again; retrying cannot help.

    Attributes:
        key: The offending setting, if one setting is to blame.
    """

    def __init__(self, message: str, key: str | None = None) -> None:
        super().__init__(message)
        self.key = key


class SerializationError(EosError):
    """A record's key or value could not be serialized or deserialized.

    Raised by the built-in serdes and by
    :func:`eos.serde.serialize_or_raise`/:func:`eos.serde.deserialize_or_raise`,
    which wrap whatever a serde raised and fill in which part of the record
    and which topic were involved. The engine routes deserialization errors
    through ``processing_error_policy``. The operator should check that the
    configured serde matches the data on the topic (or fix the producer that
    wrote it), or choose the ``skip``/``dead_letter`` policy.

    Attributes:
        part: ``"key"`` or ``"value"``; ``None`` only while a built-in serde's
            error has not yet been wrapped by the ``*_or_raise`` helpers.
        operation: ``"serialize"`` or ``"deserialize"``.
        topic: The topic the record came from or was going to, if known.
    """

    def __init__(
        self,
        message: str,
        *,
        part: Part | None,
        operation: Operation,
        topic: str | None = None,
    ) -> None:
        super().__init__(message)
        self.part = part
        self.operation = operation
        self.topic = topic


class ProcessingError(EosError):
    """The user's processor raised while processing a record.

    Raised by the engine under ``processing_error_policy="fail"``, chained
    (``from``) to the user's exception, after the open transaction was aborted
    so nothing from the failed batch is visible downstream. The operator
    should fix the processor (or the input record at the named position) and
    restart; the record is processed again from the last committed offset.

    Attributes:
        topic: Topic of the record being processed.
        partition: Partition of the record.
        offset: Offset of the record.
        cause: The exception the processor raised.
    """

    def __init__(
        self,
        message: str | None = None,
        *,
        topic: str,
        partition: int,
        offset: int,
        cause: BaseException,
    ) -> None:
        if message is None:
            detail = str(cause)
            name = type(cause).__name__
            message = f"processing failed at {topic}[{partition}]@{offset}: " + (
                f"{name}: {detail}" if detail else name
            )
        super().__init__(message)
        self.topic = topic
        self.partition = partition
        self.offset = offset
        self.cause = cause


class TimerError(EosError):
    """A processor's ``on_timer``, a punctuation or a window store's expiry raised.

    Raised by the engine (and the TestDriver) after the open transaction was
    aborted: a timer is not an input record, so ``processing_error_policy``
    does not apply to it (there is nothing to skip or dead-letter). The timer
    is still stored; it fires again when the instance is restarted, so fix
    the code and restart.

    Attributes:
        partition: The partition whose timer fired (None: not known).
        key: The timer's key (None for a punctuation).
        timestamp: The timer's timestamp (None for a punctuation).
        cause: The exception the callback raised.
    """

    def __init__(
        self,
        message: str,
        *,
        partition: int | None,
        cause: BaseException,
        key: object = None,
        timestamp: int | None = None,
    ) -> None:
        super().__init__(message)
        self.partition = partition
        self.key = key
        self.timestamp = timestamp
        self.cause = cause


class RecordTimeout(EosError, TimeoutError):
    """A record of an async processor ran longer than ``record_timeout_ms``.

    Its ``process`` was cancelled; the record then went through
    ``processing_error_policy`` with this error (``eos.error.type: RecordTimeout``
    on its dead-letter copy), like any record whose processing raised.
    """


class StuckCoroutineError(EosError):
    """A cancelled ``process`` coroutine of an async processor did not end.

    It caught ``asyncio.CancelledError`` and went on, after ``record_timeout_ms``
    or an abort. The run stops: what it might still send or write could land in a
    later transaction. Let ``CancelledError`` propagate (``try``/``finally`` for
    clean-up is fine).
    """


class ProduceError(EosError):
    """A record could not be handed to the producer.

    Raised by ``ctx.send``/``ctx.send_raw`` (and the engine's changelog and
    dead-letter writes) when the producer refuses a record at once: larger
    than the producer's ``message.max.bytes``, an unknown partition, a value
    that is not bytes. The engine decides from ``kafka_error`` whether the
    record is to blame (then ``processing_error_policy`` applies to the input
    record), the cluster is unavailable (abort and retry) or the topic is
    missing or denied (stop). A processor need not catch it.

    Attributes:
        topic: The topic the record was for.
        kafka_error: The ``confluent_kafka.KafkaError`` behind it, or ``None``
            when the producer raised something else (``TypeError``); the
            original exception is ``__cause__``.
    """

    def __init__(self, topic: str, error: BaseException) -> None:
        kafka_error = error.args[0] if error.args else None
        if not hasattr(kafka_error, "code"):
            kafka_error = None
        detail = kafka_error if kafka_error is not None else f"{type(error).__name__}: {error}"
        super().__init__(f"producing to topic {topic!r} failed: {detail}")
        self.topic = topic
        self.kafka_error = kafka_error


class StateError(EosError):
    """A state store could not be opened, restored or used.

    Raised by the state stores and the changelog restorer: the store is
    closed, its partition is not assigned to this instance, or the stored
    changelog offset lies outside the changelog (topic recreated or
    compacted). The message names the fix; for offset mismatches it is to
    stop the instance, wipe that store's directory under ``state_dir`` and
    start again so the store is rebuilt from its changelog.
    """


class SinkUnavailableError(EosError):
    """A sink's database stayed unreachable (or kept failing transiently) past its limit.

    Raised by a sink's engine (:class:`eos.sinks.postgres.PostgresProcessor`)
    when connecting, or each retried batch, kept failing with an outage error
    (no connection, the server shutting down or overloaded, deadlocks and
    serialization failures) for longer than its ``outage_timeout_s``. Nothing
    uncommitted was written; the offsets table holds where a restart resumes.
    The operator should bring the database back and restart the instance.
    """


class AbortLimitError(EosError):
    """The open batch was aborted too many times in a row without any progress.

    Raised by the engine when ``max_aborts_without_progress`` consecutive
    aborts happened without a commit and without finding a record to blame
    (outages do not count: they are retried with backoff for as long as they
    last). Nothing of the failing batch is visible. The message names the
    last cause; the operator should fix it (a topic setting, an ACL, a
    broker) and restart.

    Attributes:
        aborts: How many consecutive aborts there were.
        cause: A description of the last failure.
    """

    def __init__(self, message: str, *, aborts: int, cause: str) -> None:
        super().__init__(message)
        self.aborts = aborts
        self.cause = cause


class TransactionError(EosError):
    """A Kafka transactional call failed.

    Raised by the transaction wrapper; the subclass says which of the three
    outcomes applies. A bare ``TransactionError`` means the failure could not
    be classified: treat it as fatal and look at ``kafka_error``.

    Attributes:
        kafka_error: The ``confluent_kafka.KafkaError`` behind the failure,
            or ``None`` if there was none (for example a timeout of ours).
    """

    def __init__(self, message: str, kafka_error: object | None = None) -> None:
        super().__init__(message)
        self.kafka_error = kafka_error


class RetriableTransactionError(TransactionError):
    """A transactional call failed transiently (``KafkaError.retriable()``).

    Raised by the transaction wrapper only once its retry deadline has
    passed; before that the same call is retried with the same arguments.
    The operator should check broker availability and the transaction
    coordinator's health.
    """


class AbortableTransactionError(TransactionError):
    """The open transaction must be aborted (``KafkaError.txn_requires_abort()``).

    Raised by the transaction wrapper; the engine handles it by aborting,
    dropping store overlays, rewinding every assigned partition to its
    committed offset and processing the batch again. It reaches the operator
    only if aborting itself fails; then check the broker logs.
    """


class FatalTransactionError(TransactionError):
    """The producer is in a fatal state (``KafkaError.fatal()``) and is unusable.

    Raised by the transaction wrapper; the engine stops at once without
    processing the rest of the polled batch. Nothing from the open
    transaction becomes visible. The operator should restart the instance
    and look at ``kafka_error`` for the cause.
    """


class ProducerFencedError(FatalTransactionError):
    """Another producer with the same ``transactional.id`` has taken over.

    Raised by the transaction wrapper when the broker fences this producer
    (``_FENCED`` / ``PRODUCER_FENCED`` / ``INVALID_PRODUCER_EPOCH``) while
    its transaction was younger than ``transaction.timeout.ms``: a second
    instance runs with the same application_id and instance_id. Stop this
    instance; make sure each running instance has a distinct ``instance_id``.
    (A transaction older than that was aborted by the broker itself, after an
    outage or a long pause: the engine then renews its producer and redoes
    the batch instead of raising this.)
    """


class TransactionOutcomeUnknownError(FatalTransactionError):
    """A commit was still in progress when the stop's grace period ended.

    Raised by the transaction wrapper only after a stop was requested
    (``shutdown_timeout_s``): the broker may or may not have committed the
    transaction. Nothing is lost or duplicated either way: the local stores
    were not written (the next start restores them from the changelog) and the
    next start of this instance resolves the transaction. The operator should
    check broker health if it happens.
    """
