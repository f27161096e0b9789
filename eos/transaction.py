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

Every call passes an explicit timeout. librdkafka documents ``-1`` for
``commit_transaction``/``abort_transaction`` as "the remaining transaction
timeout", but in the current code path it does not cap the wait, so nothing
could bound a commit during an outage. Instead each call waits at most
:data:`STEP_S` and is called again while its error is retriable: librdkafka
resumes the commit (or abort, or init) that is progressing in the background.
A retriable commit is never answered by an abort: librdkafka refuses
``abort_transaction`` while a commit can still resume (``_CONFLICT``).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Sequence

from confluent_kafka import KafkaError, KafkaException, Producer
from confluent_kafka import TopicPartition as KafkaTopicPartition

from eos._kafka_errors import error_codes
from eos._stop import StopRequested, StopSignal
from eos.errors import (
    AbortableTransactionError,
    FatalTransactionError,
    ProducerFencedError,
    RetriableTransactionError,
    TransactionError,
    TransactionOutcomeUnknownError,
)
from eos.faults import NO_FAULTS, Faults

__all__ = ["STEP_S", "ProducerStuckError", "TransactionalProducer", "classify"]

log = logging.getLogger("eos.transaction")

_FENCED_CODES = error_codes(
    "_FENCED", "PRODUCER_FENCED", "INVALID_PRODUCER_EPOCH", "INVALID_PRODUCER_ID_MAPPING"
)
STEP_S = 1.0
"""Longest single wait of a transactional call; it is called again while retriable."""
_RETRY_BACKOFF_S = 0.05
_RETRY_BACKOFF_MAX_S = 1.0
_WARN_EVERY_S = 10.0
STUCK_GRACE_S = 5.0
"""How long ``send_offsets_to_transaction`` may overrun its own timeout before the
producer is given up as stuck (see :class:`ProducerStuckError`)."""


class ProducerStuckError(FatalTransactionError):
    """``send_offsets_to_transaction`` did not return within its timeout.

    librdkafka can block in it forever when the group coordinator's broker went
    away (its coordinator request timeout is never checked, librdkafka#5456,
    #5511). No other transactional call may run on that producer meanwhile, so
    the only way on is a new producer with the same ``transactional.id``: its
    ``init_transactions`` bumps the epoch, which fences the stuck one and aborts
    its transaction. Treated like an outage (the batch is redone, the abort is
    not counted towards ``max_aborts_without_progress``).
    """


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
    """A transactional ``Producer`` with bounded calls, resumption and classified failures.

    - ``init``: ``init_transactions`` in steps of :data:`STEP_S`, resumed while
      retriable; a stop request unwinds it (:class:`~eos._stop.StopRequested`).
    - ``send_offsets``: retried with the identical offsets and group metadata
      (retriable but not resumable) until ``timeout_s`` has passed, then
      abortable.
    - ``commit``: resumed while retriable. While running it keeps trying (an
      outage ends; the commit then completes or fails for a reason we can act
      on), warning every 10 s; once a stop was requested it gives up after the
      stop's grace period with :class:`~eos.errors.TransactionOutcomeUnknownError`.
    - ``abort``: resumed while retriable, the same way; past the grace period
      it gives up with :class:`~eos.errors.FatalTransactionError` (the broker
      aborts the transaction after ``transaction.timeout.ms``, or the next
      incarnation's ``init_transactions`` does at once).

    Every other failure is raised as a :class:`~eos.errors.TransactionError`
    subclass; a fatal one also marks the producer ``dead``.

    Threading: used from the processing thread only.

    Args:
        producer: A producer configured with ``transactional.id``.
        timeout_s: The transaction timeout (bounds retries of ``send_offsets``).
        stop: The application's stop request.
    """

    def __init__(
        self, producer: Producer, timeout_s: float, stop: StopSignal, faults: Faults = NO_FAULTS
    ) -> None:
        self.producer = producer
        self.timeout_s = timeout_s
        self.stop = stop
        self.faults = faults
        self.open = False
        self.dead = False
        self.began_at = 0.0
        # commit_transaction or abort_transaction was called for the current transaction.
        self.ending = False

    def _fail(self, exc: KafkaException, what: str) -> TransactionError:
        error = classify(exc, what)
        if isinstance(error, FatalTransactionError):
            self.dead = True
        return error

    def _check_alive(self, what: str) -> None:
        if self.dead:
            raise FatalTransactionError(f"{what}: the producer was fenced or failed fatally")

    def init(self) -> None:
        """``init_transactions()``: fences older incarnations, aborts their open transaction.

        Raises:
            StopRequested: A stop was requested before it completed.
            FatalTransactionError: The producer cannot be initialised.
        """
        self._resume("init_transactions", self.producer.init_transactions, during_startup=True)

    def begin(self) -> None:
        """Start a transaction (a local call; no broker round trip)."""
        self._check_alive("begin_transaction")
        try:
            self.producer.begin_transaction()
        except KafkaException as exc:
            raise self._fail(exc, "begin_transaction") from exc
        self.open = True
        self.ending = False
        self.began_at = time.monotonic()

    def send_offsets(self, offsets: Sequence[KafkaTopicPartition], metadata: object) -> None:
        """Add the consumer positions to the transaction (KIP-447 group metadata)."""
        what = "send_offsets_to_transaction"
        self._check_alive(what)
        offsets = list(offsets)
        deadline = time.monotonic() + self.timeout_s
        backoff = _RETRY_BACKOFF_S
        while True:
            try:
                self._send_offsets_once(
                    offsets, metadata, max(0.1, min(self.timeout_s, deadline - time.monotonic()))
                )
                return
            except KafkaException as exc:
                error = self._fail(exc, what)
                if not isinstance(error, RetriableTransactionError):
                    raise error from exc
                if time.monotonic() + backoff > deadline or self.stop.overdue():
                    raise AbortableTransactionError(
                        f"{error} (still failing after {self.timeout_s:.0f}s of retries)",
                        error.kafka_error,
                    ) from exc
                log.debug("%s: retrying after %s", what, error)
                time.sleep(backoff)
                backoff = min(backoff * 2, _RETRY_BACKOFF_MAX_S)

    def _send_offsets_once(
        self, offsets: list[KafkaTopicPartition], metadata: object, timeout_s: float
    ) -> None:
        """One ``send_offsets_to_transaction`` call, watched from this thread.

        The call runs on a helper thread, so a call that librdkafka never
        returns from neither blocks the processing thread past ``timeout_s`` +
        :data:`STUCK_GRACE_S` nor keeps signal handlers from running.

        Raises:
            KafkaException: What the call raised.
            ProducerStuckError: It did not return in time; the producer is dead.
        """
        outcome: list[BaseException | None] = []
        done = threading.Event()
        producer = self.producer
        faults = self.faults

        def call() -> None:
            try:
                faults.sending_offsets()
                producer.send_offsets_to_transaction(offsets, metadata, timeout_s)
                outcome.append(None)
            except BaseException as exc:  # handed to the waiting thread
                outcome.append(exc)
            finally:
                done.set()

        threading.Thread(target=call, name="eos-send-offsets", daemon=True).start()
        limit = time.monotonic() + timeout_s + STUCK_GRACE_S
        while not done.wait(min(STEP_S, max(0.0, limit - time.monotonic()))):
            if time.monotonic() >= limit or self.stop.overdue():
                self.dead = True
                error = KafkaError(
                    KafkaError._TIMED_OUT,
                    f"send_offsets_to_transaction did not return within {timeout_s:.0f}s "
                    f"(+{STUCK_GRACE_S:.0f}s)",
                    fatal=True,
                )
                raise ProducerStuckError(
                    f"send_offsets_to_transaction failed: the producer is stuck: {error.str()}",
                    error,
                )
        failure = outcome[0] if outcome else None
        if failure is not None:
            raise failure

    def commit(self) -> None:
        """Commit: flushes outstanding messages, then commits atomically.

        Raises:
            AbortableTransactionError: Abort and redo the batch.
            FatalTransactionError: The producer is dead (ProducerFencedError if fenced).
            TransactionOutcomeUnknownError: A stop was requested and the commit
                did not finish within the grace period: it may or may not have
                committed. Local stores must not be written.
        """
        self.ending = True
        self._resume("commit_transaction", self.producer.commit_transaction)
        self.open = False

    def abort(self) -> None:
        """Abort the open transaction; a no-op when none is open.

        Raises:
            FatalTransactionError: The producer is dead, or a stop was requested
                and the abort did not finish within the grace period.
        """
        if not self.open:
            return
        self.ending = True
        try:
            self._resume("abort_transaction", self.producer.abort_transaction)
        except TransactionOutcomeUnknownError as exc:
            raise FatalTransactionError(
                "abort_transaction did not finish before the stop's grace period ended; "
                "the broker aborts the transaction after transaction.timeout.ms (or the next "
                "start of this instance does at once)",
                exc.kafka_error,
            ) from exc
        finally:
            self.open = False

    def _resume(
        self, what: str, call: Callable[[float], object], *, during_startup: bool = False
    ) -> None:
        """Call ``call(STEP_S)`` until it succeeds, resuming it while it is retriable."""
        self._check_alive(what)
        started = time.monotonic()
        warn_at = started + _WARN_EVERY_S
        backoff = _RETRY_BACKOFF_S
        while True:
            step = max(0.05, self.stop.remaining(STEP_S))
            called = time.monotonic()
            try:
                call(step)
                return
            except KafkaException as exc:
                error = self._fail(exc, what)
                if not isinstance(error, RetriableTransactionError):
                    raise error from exc
                if during_startup and self.stop.is_set():
                    raise StopRequested() from exc
                if self.stop.overdue():
                    raise TransactionOutcomeUnknownError(
                        f"{what} did not complete within the shutdown timeout "
                        f"({self.stop.grace_s:.0f}s after the stop request): {error}",
                        error.kafka_error,
                    ) from exc
                now = time.monotonic()
                if now >= warn_at:
                    warn_at = now + _WARN_EVERY_S
                    log.warning("%s still retrying after %.0fs: %s", what, now - started, error)
                if now - called < step / 2:
                    # It failed at once (not by waiting out the step): do not spin.
                    time.sleep(backoff)
                    backoff = min(backoff * 2, _RETRY_BACKOFF_MAX_S)
                else:
                    backoff = _RETRY_BACKOFF_S
