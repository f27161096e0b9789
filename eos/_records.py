"""The one owner of a record that cannot be processed: ``processing_error_policy``.

What counts as the record's fault, and what does not:

- ``process()`` or a deserializer raised: the record's fault. If the record
  already sent something (or wrote to a store) under exactly_once_v2 and the
  policy is not ``fail``, the batch is aborted and replayed with the record
  marked poison, so nothing partial of it survives; otherwise the policy
  applies at once.
- ``ctx.send`` was refused for a record-specific reason (larger than
  ``message.max.bytes``): the record's fault, as above.
- ``ctx.send`` failed because the transaction is already failing, the
  cluster is unavailable, or the producer is fenced: not the record's fault;
  the batch fails (:meth:`eos._committer.Committer.batch_failed`) or the
  producer is dead (:meth:`eos._committer.Committer.fatal`).
- a missing topic or partition: a configuration error; the instance stops.
- :class:`~eos.errors.ConfigError` / :class:`~eos.errors.StateError` from
  ``ctx.store`` (an undeclared store, a partition not owned), or a
  ``BaseException`` that is not an ``Exception`` (``SystemExit``,
  ``KeyboardInterrupt``): programming errors or exits, never poison; the run
  ends and the open transaction is aborted before the consumer closes.

The policies: ``fail`` aborts the batch and raises
:class:`~eos.errors.ProcessingError`; ``skip`` counts and logs the record;
``dead_letter`` writes its original bytes with error headers to the
dead-letter topic in the same transaction, and if that copy can never be
written, aborts and raises ProcessingError saying so.

Threading: the processing thread only.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from typing import Any

from confluent_kafka import KafkaError

from eos._batch import Poison
from eos._committer import Committer, Rewound
from eos._guarantee import Guarantee
from eos._kafka_errors import Cause, cause_of
from eos._outputs import Diagnosis, OutputRejected, Outputs
from eos.config import Config
from eos.errors import ConfigError, ProcessingError, ProduceError, SerializationError, StateError
from eos.stats import EngineStats

__all__ = ["RecordFailures", "decode_error", "where"]

log = logging.getLogger("eos.engine")


def where(msg: Any) -> str:
    """``topic[partition]@offset`` of a consumed message."""
    return f"{msg.topic()}[{msg.partition()}]@{msg.offset()}"


def decode_error(
    exc: Exception, raw_key: object, kdes: Callable[[bytes | None], object] | None, topic: str
) -> SerializationError:
    """A deserializer's exception as a SerializationError naming the part that failed."""
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


class RecordFailures:
    """Applies ``processing_error_policy`` to failing records; see the module docstring."""

    def __init__(
        self,
        *,
        config: Config,
        guarantee: Guarantee,
        outputs: Outputs,
        committer: Committer,
        poison: Poison,
        stats: EngineStats,
    ) -> None:
        self.config = config
        self.policy = config.processing_error_policy
        self.guarantee = guarantee
        self.outputs = outputs
        self.committer = committer
        self.poison = poison
        self.stats = stats

    def process_failed(
        self, msg: Any, exc: BaseException, sent_something: bool, unprocessed: Sequence[Any]
    ) -> None:
        """``process()`` raised ``exc`` for ``msg``.

        Args:
            msg: The consumed message.
            exc: What ``process()`` raised.
            sent_something: Whether it sent or wrote anything before raising.
            unprocessed: ``msg`` and the messages after it in the polled batch.

        Raises:
            Rewound: The batch was aborted and rewound.
            ProcessingError: Policy ``fail``, or the record cannot be dead-lettered.
            ConfigError: A topic is missing, or a programming error was detected.
            BaseException: ``exc`` itself when it is not the record's fault.
        """
        if isinstance(exc, (ConfigError, StateError)) or not isinstance(exc, Exception):
            raise exc
        if isinstance(exc, OutputRejected):
            self._rejected(exc, unprocessed)
        if isinstance(exc, ProduceError):
            self._produce_failed(exc, unprocessed)
        if sent_something and self.guarantee.transactional and self.policy != "fail":
            # Part of this record's output is already in the transaction: abort
            # so nothing partial survives, and apply the policy on the replay.
            self.poison.mark((msg.topic(), msg.partition(), msg.offset()), exc)
            self.committer.abort(
                "processing_error",
                f"record {where(msg)} failed after producing output ({type(exc).__name__}: {exc})",
                unprocessed,
                progress=True,
            )
            raise Rewound()
        self.apply_policy(msg, exc, unprocessed)

    def _rejected(self, exc: OutputRejected, unprocessed: Sequence[Any]) -> None:
        """One record per request: the broker rejected an output of ``exc.source``."""
        error = exc.kafka_error
        if not isinstance(error, KafkaError):  # pragma: no cover - always set
            raise exc
        if exc.topic == self.config.dead_letter_topic:
            failure = self.committer.undeliverable(exc.source, error)
            self.committer.abort("output_rejected", str(exc), unprocessed, counted=False)
            raise failure
        self.poison.mark(exc.source, exc)
        self.committer.abort("output_rejected", str(exc), unprocessed, progress=True)
        self.committer.renew_after_rejection()
        raise Rewound()

    def _produce_failed(self, exc: ProduceError, unprocessed: Sequence[Any]) -> None:
        """``ctx.send`` (or a store write) was refused. Returns if the record is to blame."""
        error = exc.kafka_error
        if not isinstance(error, KafkaError):
            return  # not Kafka's complaint (a TypeError): the record's data is to blame
        cause = cause_of(error)
        if error.fatal() or cause is Cause.FENCED or error.code() == KafkaError._FATAL:
            self.committer.fatal(self.guarantee.fatal_cause(error), unprocessed)
            raise Rewound()
        if cause is Cause.CONFIG:
            diagnosis = Diagnosis(Cause.CONFIG, error, exc.topic)
            self.committer.abort("config_error", str(exc), unprocessed, counted=False)
            raise ConfigError(self.committer.config_message(diagnosis)) from exc
        if cause is not Cause.RECORD:
            # The transaction itself is in trouble (e.g. _STATE after an earlier
            # asynchronous delivery failure), or the cluster is: redo the batch.
            self.committer.batch_failed(
                error, f"produce failed: {exc}", unprocessed, kind="produce_failed"
            )
            raise Rewound()

    def apply_policy(self, msg: Any, exc: BaseException, unprocessed: Sequence[Any]) -> None:
        """Apply ``processing_error_policy`` to ``msg``, which failed with ``exc``.

        Raises:
            ProcessingError: Policy ``fail`` (after aborting the batch), or the
                record's dead-letter copy can never be written.
            Rewound: The dead-letter write found the batch failing.
        """
        self.stats.processing_errors += 1
        topic, partition, offset = msg.topic(), msg.partition(), msg.offset()
        if self.policy == "fail":
            error = ProcessingError(topic=topic, partition=partition, offset=offset, cause=exc)
            self.committer.abort("processing_error", str(error), unprocessed, counted=False)
            raise error from exc
        if self.policy == "skip":
            self.stats.skipped += 1
            log.warning("skipped %s: %s: %s", where(msg), type(exc).__name__, exc)
            return
        self.guarantee.begin()
        try:
            self.outputs.dead_letter(msg, exc)
        except ProduceError as failure:
            self._dead_letter_failed(msg, exc, failure, unprocessed)
        self.stats.dead_lettered += 1
        log.warning(
            "dead-lettered %s to %s: %s: %s",
            where(msg),
            self.config.dead_letter_topic,
            type(exc).__name__,
            exc,
        )

    def _dead_letter_failed(
        self, msg: Any, exc: BaseException, failure: ProduceError, unprocessed: Sequence[Any]
    ) -> None:
        error = failure.kafka_error
        if isinstance(error, KafkaError) and not isinstance(failure, OutputRejected):
            self._produce_failed(failure, unprocessed)  # returns only if the record is to blame
        topic, partition, offset = msg.topic(), msg.partition(), msg.offset()
        detail = f"{error.name()}: {error.str()}" if isinstance(error, KafkaError) else failure
        processing_error = ProcessingError(
            f"record {where(msg)} failed ({type(exc).__name__}: {exc}) and could not be "
            f"dead-lettered to {self.config.dead_letter_topic!r}: {detail}. Nothing of its batch "
            "was committed. Raise the producer's message.max.bytes and the dead-letter topic's "
            "max.message.bytes, or choose processing_error_policy='skip'",
            topic=topic,
            partition=partition,
            offset=offset,
            cause=exc,
        )
        self.committer.abort("processing_error", str(processing_error), unprocessed, counted=False)
        raise processing_error from failure
