"""The three processing guarantees, behind one interface.

Each guarantee owns the producer and the calls that make a batch final:

=================  ===================================  ===============================
                   commit                               abort
=================  ===================================  ===============================
exactly_once_v2    send_offsets_to_transaction,         abort_transaction: nothing of
                   commit_transaction                   the batch is ever visible
at_least_once      flush the outputs, then commit the   drop what is still queued; the
                   offsets                              batch is redone (duplicates)
at_most_once       flush the outputs (offsets were      drop what is still queued; the
                   committed before processing)         batch is not redone (loss)
=================  ===================================  ===============================

``renew()`` replaces the producer: after a permanently rejected message the
idempotent sequence has a gap that only a new epoch closes, and after a
transaction timed out on the broker the old epoch is fenced. Under
exactly_once_v2 the new producer calls ``init_transactions`` with the same
``transactional.id`` (bumping the epoch); the other guarantees never make a
transactional call.

Threading: the processing thread only.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from confluent_kafka import Consumer, KafkaError, KafkaException, Producer
from confluent_kafka import TopicPartition as KafkaTopicPartition

from eos._admin import KafkaLog
from eos._batch import TP
from eos._stop import StopSignal
from eos.config import ClientValue, Config
from eos.errors import (
    AbortableTransactionError,
    FatalTransactionError,
    ProducerFencedError,
)
from eos.faults import NO_FAULTS, Faults
from eos.transaction import STEP_S, TransactionalProducer, classify

__all__ = ["AtLeastOnce", "AtMostOnce", "ExactlyOnce", "Guarantee", "for_config"]

log = logging.getLogger("eos.engine")


def _offsets(positions: Mapping[TP, int]) -> list[KafkaTopicPartition]:
    return [KafkaTopicPartition(t, p, o) for (t, p), o in positions.items()]


class Guarantee:
    """One processing guarantee: its producer, and how a batch is committed or aborted.

    Lifecycle: ``start()`` once (may block; honours the stop request), then
    per batch ``begin()`` (before the first output), ``commit()`` or
    ``abort()``; ``renew()`` between batches if the producer must be
    replaced; ``close()`` once.

    Attributes:
        name: The ``processing_guarantee`` value.
        transactional: Whether outputs are written in Kafka transactions.
        rewinds: Whether an aborted batch is read and processed again.
        producer: The current producer (replaced by ``renew()``).
    """

    name = ""
    transactional = False
    rewinds = True

    def __init__(self, config: Config, stop: StopSignal, settings: dict[str, ClientValue]) -> None:
        self.config = config
        self.stop = stop
        self._settings = settings
        self._log = KafkaLog()
        self._producer: Producer | None = None

    def _new_producer(self) -> Producer:
        """A producer with this guarantee's settings, logging through ``eos.kafka``."""
        return Producer({**self._settings, "logger": self._log})

    @property
    def producer(self) -> Producer:
        """The producer (only after ``start()``)."""
        if self._producer is None:
            raise RuntimeError("the guarantee was not started")
        return self._producer

    @property
    def in_transaction(self) -> bool:
        """Whether a transaction is open (never, without transactions)."""
        return False

    @property
    def dead(self) -> bool:
        """Whether the producer failed fatally and may never be used again."""
        return False

    def transaction_age(self) -> float:
        """Seconds the open transaction has been open (0 without one)."""
        return 0.0

    @property
    def ending(self) -> bool:
        """Whether the last transaction's commit or abort was called (its outcome then
        depends on whether that call reached the coordinator)."""
        return False

    def start(self) -> None:
        """Create the producer."""
        self._producer = self._new_producer()

    def begin(self) -> None:
        """Open a transaction if none is open (no-op without transactions)."""

    def before_processing(self, messages: Sequence[Any], consumer: Consumer) -> None:
        """Called with each consumed batch before it is processed."""

    def commit(
        self, positions: Mapping[TP, int], consumer: Consumer, before_commit: Callable[[], None]
    ) -> None:
        """Make the batch's outputs and ``positions`` final; ``before_commit`` is the
        fault seam's hook, called just before the final step.

        Raises:
            AbortableTransactionError: The batch must be aborted (and, if the
                guarantee rewinds, redone); ``kafka_error`` names the cause.
            FatalTransactionError: The producer is unusable.
        """
        raise NotImplementedError

    def abort(self) -> None:
        """Drop the batch's outputs where the guarantee can."""

    def renew(self) -> None:
        """Replace the producer with a fresh one."""
        old = self._producer
        if old is not None:
            _purge(old)
        self._producer = self._new_producer()
        log.info("renewed the %s producer", self.name)

    def close(self, timeout_s: float) -> int:
        """Deliver what is queued (up to ``timeout_s``); return how many were not."""
        producer = self._producer
        if producer is None:
            return 0
        return int(producer.flush(timeout_s))

    def destroy(self) -> None:
        """Release the producer's connections and threads now, not when it is collected.

        After :meth:`close`: nothing is queued any more (or it is given up).
        Without this a stopped application's producer would go on reconnecting
        until the garbage collector found it.
        """
        producer, self._producer = self._producer, None
        if producer is not None:
            producer.purge(in_queue=True, in_flight=True, blocking=False)
            producer.close()

    def fatal_cause(self, error: KafkaError) -> FatalTransactionError:
        """The typed error behind a ``produce()`` that failed fatally."""
        return FatalTransactionError(f"produce failed fatally: {error}", error)

    def delivery_failed(self, error: KafkaError) -> None:
        """A delivery failed (reported by a per-message callback, which bypasses the
        producer's own). Without transactions the next commit must fail; with them,
        ``commit_transaction`` fails by itself."""

    def _flush(self) -> int:
        """Flush in steps until delivered, the transaction timeout passes, or a stop is overdue."""
        producer = self.producer
        deadline = time.monotonic() + self.config.transaction_timeout_ms / 1000.0
        remaining = int(producer.flush(0))
        while remaining and time.monotonic() < deadline and not self.stop.overdue():
            remaining = int(producer.flush(STEP_S))
        return remaining


def _purge(producer: Producer) -> None:
    """Drop queued and in-flight messages without waiting; serve their delivery reports."""
    try:
        producer.purge(in_queue=True, in_flight=True, blocking=False)
        producer.poll(0)
    except (KafkaException, RuntimeError) as exc:  # pragma: no cover - defensive
        log.debug("purging the producer failed: %s", exc)


class ExactlyOnce(Guarantee):
    """exactly_once_v2: outputs, changelog and offsets commit in one Kafka transaction."""

    name = "exactly_once_v2"
    transactional = True

    def __init__(self, config: Config, stop: StopSignal, faults: Faults = NO_FAULTS) -> None:
        super().__init__(config, stop, config.producer_settings())
        self.faults = faults
        self._txn: TransactionalProducer | None = None

    @property
    def txn(self) -> TransactionalProducer:
        if self._txn is None:
            raise RuntimeError("the guarantee was not started")
        return self._txn

    @property
    def in_transaction(self) -> bool:
        return self._txn is not None and self._txn.open

    @property
    def dead(self) -> bool:
        return self._txn is not None and self._txn.dead

    def transaction_age(self) -> float:
        """Seconds since the last transaction began (open, or just failed)."""
        txn = self._txn
        return time.monotonic() - txn.began_at if txn is not None and txn.began_at else 0.0

    @property
    def ending(self) -> bool:
        return self._txn is not None and self._txn.ending

    def start(self) -> None:
        """Create the producer and ``init_transactions()`` (fences older incarnations)."""
        super().start()
        self._txn = TransactionalProducer(
            self.producer, self.config.transaction_timeout_ms / 1000.0, self.stop, self.faults
        )
        self._txn.init()

    def begin(self) -> None:
        txn = self.txn
        if not txn.open:
            txn.begin()

    def commit(
        self, positions: Mapping[TP, int], consumer: Consumer, before_commit: Callable[[], None]
    ) -> None:
        """(2) send the positions into the transaction, (3) commit it."""
        txn = self.txn
        if not txn.open:
            return
        if positions:
            txn.send_offsets(_offsets(positions), consumer.consumer_group_metadata())
        before_commit()
        txn.commit()

    def abort(self) -> None:
        self.txn.abort()

    def renew(self) -> None:
        """A new producer with the same transactional.id; ``init_transactions`` bumps the epoch."""
        old = self._producer
        if old is not None:
            _purge(old)
        self._producer = self._new_producer()
        self._txn = TransactionalProducer(
            self._producer, self.config.transaction_timeout_ms / 1000.0, self.stop, self.faults
        )
        log.info("renewing the transactional producer (init_transactions bumps the epoch)")
        self._txn.init()

    def close(self, timeout_s: float) -> int:
        txn = self._txn
        if txn is None or txn.dead:
            return 0
        if txn.open:
            try:
                txn.abort()
            except FatalTransactionError as exc:
                log.warning("aborting on shutdown failed: %s", exc)
                return 0
        return super().close(timeout_s)

    def fatal_cause(self, error: KafkaError) -> FatalTransactionError:
        """``produce()`` only says "fatal error"; a transactional call on the same
        producer returns the original one (``_FENCED`` when another instance took
        over this transactional.id), so the typed error says why."""
        txn = self.txn
        try:
            self.producer.abort_transaction(1.0)
        except KafkaException as exc:
            classified = classify(exc, "produce")
            if isinstance(classified, FatalTransactionError):
                txn.dead = True
                return classified
        txn.dead = True
        if error.code() == KafkaError._FENCED:
            return ProducerFencedError(f"produce failed: {error}", error)
        return FatalTransactionError(f"produce failed fatally: {error}", error)


class _Delivering(Guarantee):
    """Shared by the two guarantees without transactions: a delivery-failure list."""

    def __init__(self, config: Config, stop: StopSignal, *, with_stores: bool) -> None:
        settings = config.producer_settings()
        settings["on_delivery"] = self.on_delivery  # type: ignore[assignment]
        if not with_stores:
            # Stores need success reports (a store partition's checkpoint is its
            # highest delivered changelog offset + 1); outputs only need errors.
            settings["delivery.report.only.error"] = True
        super().__init__(config, stop, settings)
        self.failures: list[KafkaError] = []

    def on_delivery(self, error: KafkaError | None, _msg: object) -> None:
        """The producer's delivery callback (outputs without a callback of their own)."""
        if error is not None:
            self.failures.append(error)

    def delivery_failed(self, error: KafkaError) -> None:
        self.failures.append(error)

    def abort(self) -> None:
        if self._producer is not None:
            _purge(self._producer)
        self.failures.clear()

    def renew(self) -> None:
        super().renew()
        self.failures.clear()

    def _delivered(self) -> None:
        """Raise AbortableTransactionError unless every output so far was delivered."""
        remaining = self._flush()
        if remaining or self.failures:
            failures = list(self.failures)
            self.failures.clear()
            first = failures[0] if failures else KafkaError(KafkaError._MSG_TIMED_OUT)
            raise AbortableTransactionError(
                f"{len(failures)} output(s) failed, {remaining} undelivered"
                + (f" (first: {failures[0]})" if failures else ""),
                first,
            )


class AtLeastOnce(_Delivering):
    """at_least_once: deliver the outputs, then commit the offsets (a replay duplicates)."""

    name = "at_least_once"

    def commit(
        self, positions: Mapping[TP, int], consumer: Consumer, before_commit: Callable[[], None]
    ) -> None:
        self._delivered()
        before_commit()
        if not positions:
            return
        try:
            consumer.commit(offsets=_offsets(positions), asynchronous=False)
        except KafkaException as exc:
            error = exc.args[0]
            raise AbortableTransactionError(f"offset commit failed: {error}", error) from exc


class AtMostOnce(_Delivering):
    """at_most_once: commit the offsets before processing; a failed batch is not redone."""

    name = "at_most_once"
    rewinds = False

    def before_processing(self, messages: Sequence[Any], consumer: Consumer) -> None:
        last: dict[TP, int] = {}
        for msg in messages:
            if msg.error() is None:
                last[(msg.topic(), msg.partition())] = msg.offset() + 1
        if last:
            consumer.commit(offsets=_offsets(last), asynchronous=False)

    def commit(
        self, positions: Mapping[TP, int], consumer: Consumer, before_commit: Callable[[], None]
    ) -> None:
        before_commit()
        remaining = self._flush()
        failures = len(self.failures) + remaining
        if failures:
            log.warning("at_most_once: %d output record(s) were not delivered", failures)
            self.failures.clear()


def for_config(
    config: Config, stop: StopSignal, *, with_stores: bool, faults: Faults = NO_FAULTS
) -> Guarantee:
    """The guarantee ``config.processing_guarantee`` names."""
    if config.processing_guarantee == "exactly_once_v2":
        return ExactlyOnce(config, stop, faults)
    if config.processing_guarantee == "at_least_once":
        return AtLeastOnce(config, stop, with_stores=with_stores)
    return AtMostOnce(config, stop, with_stores=with_stores)
