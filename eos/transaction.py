"""The producer's transactional calls, and what their failures mean.

librdkafka reports every transactional failure as a ``KafkaException`` whose
``args[0]`` is a ``KafkaError`` with three flags. :func:`classify` turns it
into one of our outcomes, in this order (the contract of confluent-kafka's
``Producer.c``):

- ``fatal()``: the producer can never be used again (fenced by a newer
  incarnation with the same ``transactional.id``, or an invalid epoch):
  :class:`~eos.errors.ProducerFencedError` / :class:`~eos.errors.FatalTransactionError`.
- ``txn_requires_abort()``: abort the transaction, rewind, redo the batch:
  :class:`~eos.errors.AbortableTransactionError`.
- ``retriable()``: call the same function again with the same arguments:
  :class:`~eos.errors.RetriableTransactionError`.

Anything else is treated as fatal: an error we cannot classify must not let
the engine keep committing.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence

from confluent_kafka import KafkaError, KafkaException, Producer
from confluent_kafka import TopicPartition as KafkaTopicPartition

from eos.errors import (
    AbortableTransactionError,
    FatalTransactionError,
    ProducerFencedError,
    RetriableTransactionError,
    TransactionError,
)

__all__ = ["TransactionalProducer", "classify"]

log = logging.getLogger("eos.transaction")

_FENCED_CODES = frozenset(
    code
    for code in (
        getattr(KafkaError, "_FENCED", None),
        getattr(KafkaError, "PRODUCER_FENCED", None),
        getattr(KafkaError, "INVALID_PRODUCER_EPOCH", None),
        getattr(KafkaError, "INVALID_PRODUCER_ID_MAPPING", None),
        getattr(KafkaError, "TRANSACTIONAL_ID_AUTHORIZATION_FAILED", None),
    )
    if code is not None
)
_RETRY_BACKOFF_S = 0.05
_RETRY_BACKOFF_MAX_S = 1.0


def classify(exc: KafkaException, what: str) -> TransactionError:
    """Map a librdkafka transactional failure to our error tree.

    Args:
        exc: What the producer raised.
        what: The call that failed, for the message (``"commit_transaction"``).
    """
    error = exc.args[0] if exc.args else None
    if not isinstance(error, KafkaError):
        return FatalTransactionError(f"{what} failed: {exc}", None)
    message = f"{what} failed: {error.name()}: {error.str()}"
    if error.fatal():
        if error.code() in _FENCED_CODES:
            return ProducerFencedError(message, error)
        return FatalTransactionError(message, error)
    if error.txn_requires_abort():
        return AbortableTransactionError(message, error)
    if error.retriable():
        return RetriableTransactionError(message, error)
    return FatalTransactionError(message + " (unclassified: treated as fatal)", error)


class TransactionalProducer:
    """A transactional ``Producer`` with retries and classified failures.

    Retriable failures are retried with the identical arguments until the
    deadline passes (``send_offsets_to_transaction`` is retriable but not
    resumable: the same offsets and group metadata must be passed again).
    Every other failure is raised as a :class:`~eos.errors.TransactionError`
    subclass for the engine to act on. ``commit`` and ``abort`` pass no
    timeout, so librdkafka uses the transaction's remaining time, as it
    recommends.

    Threading: used from the processing thread only.
    """

    def __init__(self, producer: Producer, timeout_s: float) -> None:
        self.producer = producer
        self.timeout_s = timeout_s
        self.open = False
        self.dead = False

    def _call(self, what: str, fn: Callable[..., object], *args: object) -> None:
        if self.dead:
            raise FatalTransactionError(f"{what}: the producer was fenced or failed fatally")
        deadline = time.monotonic() + self.timeout_s
        backoff = _RETRY_BACKOFF_S
        while True:
            try:
                fn(*args)
                return
            except KafkaException as exc:
                error = classify(exc, what)
                if isinstance(error, FatalTransactionError):
                    self.dead = True
                    raise error from exc
                if not isinstance(error, RetriableTransactionError):
                    raise error from exc
                if time.monotonic() + backoff > deadline:
                    raise AbortableTransactionError(
                        f"{error} (still failing after {self.timeout_s:.0f}s of retries)",
                        error.kafka_error,
                    ) from exc
                log.debug("%s: retrying after %s", what, error)
                time.sleep(backoff)
                backoff = min(backoff * 2, _RETRY_BACKOFF_MAX_S)

    def init(self) -> None:
        """``init_transactions()``: fences older incarnations, aborts their open transaction."""
        self._call("init_transactions", self.producer.init_transactions, self.timeout_s)

    def begin(self) -> None:
        """Start a transaction (a local call; no broker round trip)."""
        self._call("begin_transaction", self.producer.begin_transaction)
        self.open = True

    def send_offsets(self, offsets: Sequence[KafkaTopicPartition], metadata: object) -> None:
        """Add the consumer positions to the transaction (KIP-447 group metadata)."""
        self._call(
            "send_offsets_to_transaction",
            self.producer.send_offsets_to_transaction,
            list(offsets),
            metadata,
            self.timeout_s,
        )

    def commit(self) -> None:
        """Commit: flushes outstanding messages, then commits atomically."""
        self._call("commit_transaction", self.producer.commit_transaction)
        self.open = False

    def abort(self) -> None:
        """Abort the open transaction; a no-op when none is open."""
        if not self.open:
            return
        try:
            self._call("abort_transaction", self.producer.abort_transaction)
        finally:
            self.open = False
