"""What the engine does when a record, an output or a commit fails.

- A record whose processing or deserialization raises follows
  ``processing_error_policy`` (fail, skip, dead_letter). If it already
  produced something, the transaction is aborted and replayed with the
  policy applied to that record, so nothing partial of it survives.
- An output the broker rejects fails the whole commit. The batch is replayed
  with a delivery report per output ("careful" mode) to find the input record
  whose output was rejected, and, if librdkafka rejected a whole request of
  several records, replayed again one record per request; then the policy
  applies to exactly that record.

These are :class:`~eos.engine.Engine` methods, kept in their own module.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Callable, Sequence
from typing import Any

from confluent_kafka import KafkaError, KafkaException, Producer

from eos._engine_base import EngineBase
from eos.errors import (
    AbortableTransactionError,
    ConfigError,
    FatalTransactionError,
    ProcessingError,
    SerializationError,
)
from eos.record import dead_letter_headers
from eos.transaction import TransactionalProducer, classify

log = logging.getLogger("eos.engine")

# Errors of one message (not of the transaction): its input record is poison.
_MESSAGE_ERRORS = frozenset(
    getattr(KafkaError, name)
    for name in (
        "MSG_SIZE_TOO_LARGE",
        "INVALID_MSG",
        "INVALID_RECORD",
        "CORRUPT_MESSAGE",
        "_MSG_TIMED_OUT",
        "_UNKNOWN_TOPIC",
        "_UNKNOWN_PARTITION",
        "UNKNOWN_TOPIC_OR_PART",
        "TOPIC_AUTHORIZATION_FAILED",
        "INVALID_REQUIRED_ACKS",
        "RECORD_LIST_TOO_LARGE",
        "_INVALID_ARG",
        "_BAD_MSG",
    )
    if hasattr(KafkaError, name)
)


class _OutputRejected(Exception):
    """Internal: the broker rejected an output of this source record (one-by-one replay)."""

    def __init__(self, source: tuple[str, int, int], error: KafkaError) -> None:
        super().__init__(f"output of {source[0]}[{source[1]}]@{source[2]} rejected: {error}")
        self.source = source
        self.error = error


class _Abort(Exception):
    """Internal: the open batch failed and was rewound; stop processing it."""


def _decode_error(
    exc: Exception, raw_key: object, kdes: Callable[[bytes | None], object] | None, topic: str
) -> SerializationError:
    if isinstance(exc, SerializationError):
        return exc
    part: str = "value"
    if kdes is not None:
        try:
            kdes(raw_key)  # type: ignore[arg-type]
        except Exception:
            part = "key"
    return SerializationError(
        f"cannot deserialize {part} from {topic!r}: {type(exc).__name__}: {exc}",
        part=part,  # type: ignore[arg-type]
        operation="deserialize",
        topic=topic,
    )


def _key(msg: Any) -> tuple[str, int, int]:
    return (msg.topic() or "", msg.partition() or 0, msg.offset() or 0)


def _where(msg: Any) -> str:
    topic, partition, offset = _key(msg)
    return f"{topic}[{partition}]@{offset}"


class FailureHandling(EngineBase):
    """Engine methods for failing records, outputs and commits."""

    def _processing_failed(
        self,
        msg: Any,
        exc: Exception,
        sent_something: bool,
        batch: Sequence[Any],
        index: int,
    ) -> None:
        if isinstance(exc, _Abort):
            raise exc
        if isinstance(exc, _OutputRejected):
            self._poison[exc.source] = KafkaException(exc.error)
            self._fail_batch("output_rejected", str(exc), batch, index, reraise=False)
            self._renew_producer()
            raise _Abort(str(exc))
        if isinstance(exc, FatalTransactionError):
            raise exc
        if isinstance(exc, KafkaException):
            error = exc.args[0]
            if error.fatal() or error.code() in (KafkaError._FATAL, KafkaError._FENCED):
                cause = self._fatal_cause(error)
                self._mark_dead()
                raise cause from exc
            if error.code() not in _MESSAGE_ERRORS:
                # The transaction itself is in trouble (e.g. _STATE after an
                # asynchronous delivery failure): redo the batch.
                self._fail_batch("produce_failed", f"produce failed: {error}", batch, index)
        if sent_something and self._eos and self.config.processing_error_policy != "fail":
            # Part of this record's output is already in the transaction: abort
            # so nothing partial survives, and apply the policy on the replay.
            self._poison[_key(msg)] = exc
            self._fail_batch(
                "processing_error",
                f"record {_where(msg)} failed after producing output",
                batch,
                index,
            )
        self._apply_policy(msg, exc, batch, index)

    def _apply_policy(self, msg: Any, exc: BaseException, batch: Sequence[Any], index: int) -> None:
        """Apply ``processing_error_policy`` to one failing record."""
        policy = self.config.processing_error_policy
        self.stats.processing_errors += 1
        topic, partition, offset = _key(msg)
        if policy == "fail":
            error = ProcessingError(topic=topic, partition=partition, offset=offset, cause=exc)
            self._fail_batch("processing_error", str(error), batch, index, reraise=False)
            raise error from exc
        if policy == "skip":
            self.stats.skipped += 1
            log.warning("skipped %s: %s: %s", _where(msg), type(exc).__name__, exc)
            return
        self._dead_letter(msg, exc)

    def _dead_letter(self, msg: Any, exc: BaseException) -> None:
        topic, partition, offset = _key(msg)
        dlq = self.config.dead_letter_topic
        if dlq is None:  # validated by Config; kept for type narrowing
            raise ConfigError("dead_letter policy needs dead_letter_topic", "dead.letter.topic")
        headers = dead_letter_headers(
            exc, topic, partition, offset, self.config.application_id, msg.headers()
        )
        if self._eos and not self._in_txn:
            self._begin()
        while True:
            try:
                self.producer.produce(
                    dlq,
                    msg.value(),
                    msg.key(),
                    headers=list(headers),
                )
                break
            except BufferError:
                self._drain()
            except KafkaException as produce_exc:
                error = produce_exc.args[0]
                if error.fatal() or error.code() in (KafkaError._FATAL, KafkaError._FENCED):
                    cause = self._fatal_cause(error)
                    self._mark_dead()
                    raise cause from produce_exc
                raise
        self.stats.dead_lettered += 1
        log.warning("dead-lettered %s to %s: %s: %s", _where(msg), dlq, type(exc).__name__, exc)

    def _consumer_error(self, error: KafkaError) -> None:
        if error.code() == KafkaError._PARTITION_EOF:
            return
        if error.fatal():
            raise KafkaException(error)
        log.warning("consumer error: %s", error)

    def _after_failed_commit(self, exc: AbortableTransactionError) -> None:
        """A commit failed abortably: find poison outputs, then abort and rewind."""
        if self._eos:
            self.producer.poll(0)  # serve delivery reports of the careful run
        poisoned = {
            key: error
            for key, error in self._delivery_failures.items()
            # Only errors of the message itself: _PURGE_QUEUE/_PURGE_INFLIGHT and
            # OUT_OF_ORDER_SEQUENCE_NUMBER are collateral of another message's failure.
            if error.code() in _MESSAGE_ERRORS
        }
        if len(poisoned) > 1 and not self._one_by_one:
            # librdkafka does not split a ProduceRequest the broker rejects: every
            # record of the batch reports the error. Replay one record per request.
            log.warning(
                "%d outputs rejected together; replaying one record per request", len(poisoned)
            )
            self._one_by_one = True
            poisoned = {}
        if poisoned:
            for key, error in poisoned.items():
                self._poison[key] = KafkaException(error)
            log.warning(
                "output of %d record(s) rejected by the broker (first %s: %s); "
                "the policy %r applies to them on replay",
                len(poisoned),
                "{}[{}]@{}".format(*next(iter(poisoned))),
                next(iter(poisoned.values())),
                self.config.processing_error_policy,
            )
        elif not self._careful:
            # Replay the same records with per-output delivery reports, so a
            # record whose output the broker rejects can be found exactly.
            self._careful = {tp: pos for tp, pos in self._positions.items()}
        self._fail_batch(
            "output_rejected" if poisoned else "commit_failed",
            f"commit failed: {type(exc).__name__}: {exc}",
            (),
            0,
            reraise=False,
        )
        kafka_error: object = exc.kafka_error
        if (
            self._eos
            and isinstance(kafka_error, KafkaError)
            and (
                kafka_error.code() in _MESSAGE_ERRORS
                or kafka_error.code() == KafkaError.OUT_OF_ORDER_SEQUENCE_NUMBER
            )
        ):
            # A permanently failed message leaves a gap in the idempotent sequence;
            # librdkafka only closes it with an epoch bump, which it does on the NEXT
            # transaction's failure (OUT_OF_ORDER_SEQUENCE_NUMBER "requires epoch
            # bump"), wasting one more abort. A new producer's init_transactions()
            # bumps the epoch now.
            self._renew_producer()

    def _fatal_cause(self, error: KafkaError) -> FatalTransactionError:
        """The classified fatal error behind a ``produce()`` that failed with ``_FATAL``.

        ``produce()`` only says "fatal error"; a transactional call on the same
        producer returns the original one (``_FENCED`` when another instance
        took over this transactional.id), so the typed error says why.
        """
        if self._txn is not None:
            try:
                self.producer.abort_transaction(1.0)
            except KafkaException as exc:
                classified = classify(exc, "produce")
                if isinstance(classified, FatalTransactionError):
                    self._txn.dead = True
                    return classified
        return FatalTransactionError(f"produce failed fatally: {error}", error)

    def _renew_producer(self) -> None:
        log.info("renewing the transactional producer (epoch bump after a rejected message)")
        self._producer = Producer(self.config.producer_settings())
        self._txn = TransactionalProducer(
            self._producer, self.config.transaction_timeout_ms / 1000.0
        )
        self._txn.init()

    def _careful_produce(self, topic: str, value: object, key: object, **kwargs: object) -> None:
        record = self._ctx.record if self._ctx is not None else None
        if record is not None:
            kwargs["on_delivery"] = functools.partial(
                self._on_careful_delivery, (record.topic, record.partition, record.offset)
            )
        self.producer.produce(topic, value, key, **kwargs)  # type: ignore[arg-type]
        if record is None or not self._one_by_one:
            return
        self.producer.flush(self.config.transaction_timeout_ms / 1000.0)
        source = (record.topic, record.partition, record.offset)
        error = self._delivery_failures.get(source)
        if error is not None and error.code() in _MESSAGE_ERRORS:
            raise _OutputRejected(source, error)

    def _on_careful_delivery(
        self, source: tuple[str, int, int], error: KafkaError | None, _msg: Any
    ) -> None:
        if error is not None:
            self._delivery_failures.setdefault(source, error)

    def _on_alos_delivery(self, error: KafkaError | None, _msg: Any) -> None:
        if error is not None:
            self._alos_failures.append(error)
