"""The consume-process-commit loop and its rebalance callbacks.

One :class:`Engine` owns one consumer and one producer and runs on one
thread. Under ``exactly_once_v2`` each transaction holds a batch of input
records; its outputs, its store changelog records and its input offsets
commit together or not at all::

    init_transactions()
    loop:
        batch = consume()                 # rebalance callbacks run in here
        begin_transaction() lazily on the first record
        process each record -> produce outputs, changelog; position = offset + 1
        when the commit interval or batch limit is reached, or on stop/revoke:
            (1) changelog records are already produced
            (2) send_offsets_to_transaction(positions, group metadata)
            (3) commit_transaction()
            (4) write store overlays + changelog offsets locally
        on an abortable failure: abort, drop overlays, seek every touched
            partition back to its committed offset, carry on
        on a fatal failure (fenced): stop at once; never touch the rest of the batch
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

from confluent_kafka import Consumer, KafkaError, KafkaException, Producer
from confluent_kafka.admin import AdminClient, NewTopic  # type: ignore[attr-defined]

from eos._commit import Committing
from eos._failures import FailureHandling, _Abort, _decode_error
from eos._rebalance import Rebalancing
from eos.errors import (
    ConfigError,
)
from eos.processor import Context, Processor
from eos.record import Record
from eos.serde import BytesSerde, Serde
from eos.stats import EngineStats
from eos.transaction import TransactionalProducer

if TYPE_CHECKING:
    from eos.config import Config
    from eos.state.manager import StoreManager
    from eos.state.transaction import StoreTransaction

__all__ = ["Engine"]

log = logging.getLogger("eos.engine")

TP = tuple[str, int]
_MAX_CONSUME = 5000
_IDLE_POLL_S = 0.1
_new_record = tuple.__new__


class Engine(Committing, FailureHandling, Rebalancing):
    """Runs one application instance: consume, process, commit, repeat.

    Lifecycle: ``run()`` blocks on the calling thread until ``stop()`` is
    called (from any thread or a signal handler), a fatal error happens, or
    ``processing_error_policy="fail"`` meets a failing record. ``run()``
    always closes the consumer (leaving the group) and the producer.
    """

    def __init__(
        self,
        config: Config,
        processor: Processor,
        *,
        stats: EngineStats | None = None,
        stores: Callable[[Engine], StoreManager] | None = None,
    ) -> None:
        self.config = config
        self.processor = processor
        self.stats = stats or EngineStats(config.application_id)
        self._stores_factory = stores
        self.stores: StoreManager | None = None
        self._guarantee = config.processing_guarantee
        self._eos = self._guarantee == "exactly_once_v2"
        self._stopping = False
        self._consumer: Consumer | None = None
        self._producer: Producer | None = None
        self._txn: TransactionalProducer | None = None
        self._in_txn = False
        self._txn_started = 0.0
        self._txn_records = 0
        self._assigned: set[TP] = set()
        self._committed: dict[TP, int] = {}
        self._positions: dict[TP, int] = {}
        self._first_seen: dict[TP, int] = {}
        self._poison: dict[tuple[str, int, int], BaseException] = {}
        self._careful: dict[TP, int] = {}
        self._one_by_one = False
        self._delivery_failures: dict[tuple[str, int, int], KafkaError] = {}
        self._alos_failures: list[KafkaError] = []
        key_serde = config.resolved_key_serde()
        value_serde = config.resolved_value_serde()
        self._kdes = _fast_deserializer(key_serde)
        self._vdes = _fast_deserializer(value_serde)
        self._ctx: Context | None = None
        # Test-only fault injection: commit attempts (1-based) that fail as if
        # the broker had answered with an abortable error.
        self._commit_attempts = 0
        self._txn_sends = 0
        self._lag_checked = 0.0
        self._inject_failures = frozenset(
            int(n) for n in os.environ.get("EOS_TEST_FAIL_COMMITS", "").split(",") if n.strip()
        )
        self._key_serde = key_serde
        self._value_serde = value_serde

    # ------------------------------------------------------------------ control

    def stop(self) -> None:
        """Ask ``run()`` to finish the batch, commit and return. Thread-safe."""
        self._stopping = True

    def run(self) -> None:
        """Run until stopped. Raises the error that ended it, if any."""
        self.stats.state = "starting"
        failed = False
        try:
            self._start()
            self.stats.state = "running"
            self._loop()
        except BaseException:
            failed = True
            self.stats.state = "failed"
            raise
        finally:
            self._shutdown(failed)

    # ------------------------------------------------------------------ start/stop

    def _start(self) -> None:
        config = self.config
        self._check_topics()
        producer_settings = config.producer_settings()
        if not self._eos:
            producer_settings["on_delivery"] = self._on_alos_delivery  # type: ignore[assignment]
            if self._stores_factory is None:
                # Stores need success reports: a store partition's checkpoint
                # is its highest delivered changelog offset + 1.
                producer_settings["delivery.report.only.error"] = True
        self._producer = Producer(producer_settings)
        if self._eos:
            self._txn = TransactionalProducer(
                self._producer, config.transaction_timeout_ms / 1000.0
            )
            self._txn.init()
        self._ctx = Context(
            application_id=config.application_id,
            produce=self._producer.produce,
            key_serde=self._key_serde,
            value_serde=self._value_serde,
            stores=self._store_lookup,
            on_full=self._drain,
        )
        if self._stores_factory is not None:
            self.stores = self._stores_factory(self)
        self._consumer = Consumer(config.consumer_settings())
        self._consumer.subscribe(
            list(config.input_topics),
            on_assign=self._on_assign,
            on_revoke=self._on_revoke,
            on_lost=self._on_lost,
        )
        log.info(
            "started %s (%s, transactional.id=%s) on %s",
            config.application_id,
            self._guarantee,
            config.transactional_id if self._eos else "-",
            ",".join(config.input_topics),
        )

    def _check_topics(self) -> None:
        config = self.config
        admin = AdminClient(config.admin_settings())
        try:
            metadata = admin.list_topics(timeout=30)
        except KafkaException as exc:
            raise ConfigError(
                f"cannot reach Kafka at {config.bootstrap_servers}: {exc}", "bootstrap.servers"
            ) from exc
        missing = [t for t in config.input_topics if t not in metadata.topics]
        if missing:
            raise ConfigError(
                f"input topic(s) {', '.join(missing)} do not exist on "
                f"{config.bootstrap_servers}; create them first",
                "input.topics",
            )
        dlq = config.dead_letter_topic
        if dlq is not None and dlq not in metadata.topics:
            futures = admin.create_topics([NewTopic(dlq, num_partitions=1)])
            for future in futures.values():
                try:
                    future.result()
                except KafkaException as exc:
                    if exc.args[0].code() != KafkaError.TOPIC_ALREADY_EXISTS:
                        raise ConfigError(
                            f"cannot create dead-letter topic {dlq!r}: {exc}", "dead.letter.topic"
                        ) from exc
            log.info("created dead-letter topic %s", dlq)
        self.admin = admin

    def _shutdown(self, failed: bool) -> None:
        self.stats.state = "stopping"
        if self._consumer is not None:
            try:
                self._consumer.close()
            except (KafkaException, RuntimeError) as exc:
                log.warning("closing the consumer failed: %s", exc)
        if self._producer is not None:
            if self._txn is not None and self._txn.open and not self._txn.dead:
                try:
                    self._txn.abort()
                except Exception as exc:
                    log.warning("aborting on shutdown failed: %s", exc)
            dead = self._txn is not None and self._txn.dead
            try:
                remaining = 0 if dead else self._producer.flush(self.config.shutdown_timeout_s)
            except KafkaException as exc:
                # Never let the way out mask the error that ended the run.
                log.warning("flushing the producer on shutdown failed: %s", exc)
                remaining = 0
            if remaining:
                log.warning("%d produced records were not delivered at shutdown", remaining)
        if self.stores is not None:
            self.stores.close_all()
        try:
            self.processor.close()
        finally:
            self.stats.state = "failed" if failed else "stopped"

    # ------------------------------------------------------------------ the loop

    def _loop(self) -> None:
        consumer = self.consumer
        interval = self.config.commit_interval_ms / 1000.0
        max_batch = self.config.max_batch_records
        while not self._stopping:
            limit = max(1, min(_MAX_CONSUME, max_batch - self._txn_records))
            if self._in_txn or self._positions:
                # A batch is open: fill it until the commit is due.
                timeout = max(0.0, self._txn_started + interval - time.monotonic())
                messages = consumer.consume(limit, timeout)
            else:
                # Idle: start on the first record that arrives, with whatever else
                # is already fetched, instead of waiting for a full batch.
                messages = consumer.consume(1, _IDLE_POLL_S)
                if messages and limit > 1:
                    messages += consumer.consume(limit - 1, 0)
            if messages:
                if self._guarantee == "at_most_once":
                    self._commit_before(messages)
                try:
                    self._process_batch(messages)
                except _Abort:
                    continue
            if (self._in_txn or self._positions) and (
                self._txn_records >= max_batch or time.monotonic() - self._txn_started >= interval
            ):
                self._commit()
            elif not self._eos:
                self.producer.poll(0)
            if time.monotonic() - self._lag_checked >= 0.5:
                self._refresh_lag()
        if self._positions or self._in_txn:
            self._commit()

    def _process_batch(self, messages: Sequence[Any]) -> None:
        """Process ``messages`` in order. Raises _Abort after a rewind."""
        ctx = self._ctx
        if ctx is None:
            raise RuntimeError("engine not started")
        process = self.processor.process
        kdes = self._kdes
        vdes = self._vdes
        positions = self._positions
        poison = self._poison
        careful = bool(self._careful)
        ctx._produce = self._careful_produce if careful else self.producer.produce
        if not self._positions:
            self._txn_started = time.monotonic()
            self._txn_sends = ctx.sends
        # Per partition, once per batch: is it assigned (else its records are
        # skipped), and, on its first record, open the transaction and note where
        # the partition started. Nothing in this loop changes the assignment,
        # the transaction or the committed positions without raising, so the
        # answer holds for the whole batch.
        admitted: dict[TP, bool] = {}
        # Records come in runs of one partition: the partition's checks and its
        # position update happen once per run, not once per record.
        run_tp: TP | None = None
        run_topic = None
        run_partition = -1
        run_next = -1
        ok = False
        processed = 0
        try:
            for msg in messages:
                error = msg.error()
                if error is not None:
                    self._consumer_error(error)
                    continue
                topic = msg.topic()
                partition = msg.partition()
                offset = msg.offset()
                if partition != run_partition or topic != run_topic:
                    if ok and run_next >= 0:
                        positions[run_tp] = run_next  # type: ignore[index]
                    run_tp = (topic, partition)
                    run_topic = topic
                    run_partition = partition
                    run_next = -1
                    ok = admitted.get(run_tp)  # type: ignore[assignment]
                    if ok is None:
                        ok = admitted[run_tp] = self._admit(run_tp, offset)
                if not ok:
                    continue
                if poison and (topic, partition, offset) in poison:
                    # Kept until a commit moves past it: the transaction that applies
                    # the policy may itself abort (e.g. OUT_OF_ORDER_SEQUENCE_NUMBER) and replay.
                    self._apply_policy(
                        msg, poison[(topic, partition, offset)], messages, messages.index(msg)
                    )
                    run_next = offset + 1
                    processed += 1
                    continue
                raw_key = msg.key()
                raw_value = msg.value()
                try:
                    key = raw_key if kdes is None else kdes(raw_key)
                    value = raw_value if vdes is None else vdes(raw_value)
                except Exception as exc:
                    self._apply_policy(
                        msg,
                        _decode_error(exc, raw_key, kdes, topic),
                        messages,
                        messages.index(msg),
                    )
                    run_next = offset + 1
                    processed += 1
                    continue
                # tuple.__new__ directly: NamedTuple's own __new__ is a Python
                # function, a frame per record for the same object.
                record = _new_record(
                    Record,
                    (key, value, topic, partition, offset, msg.timestamp()[1], msg.headers()),
                )
                ctx.record = record
                before = ctx.sends
                try:
                    process(record, ctx)
                except Exception as exc:
                    self._processing_failed(
                        msg, exc, ctx.sends != before, messages, messages.index(msg)
                    )
                run_next = offset + 1
                processed += 1
        finally:
            ctx.record = None
        # Only on normal completion: after an abort the positions were cleared.
        if ok and run_next >= 0:
            positions[run_tp] = run_next  # type: ignore[index]
        self._txn_records += processed
        if processed:
            self.stats.record_batch(
                processed, messages[0].timestamp()[1], messages[-1].timestamp()[1]
            )

    def _admit(self, tp: TP, offset: int) -> bool:
        """First record of ``tp`` in a batch: False if ``tp`` is not assigned; else
        open the transaction if none is, and note ``offset`` as the rewind point
        of a partition with no committed position yet."""
        if tp not in self._assigned:
            return False
        if self._eos and not self._in_txn:
            self._begin()
        if tp not in self._committed and tp not in self._first_seen:
            self._first_seen[tp] = offset
        return True

    # ------------------------------------------------------------------ errors in records

    # ------------------------------------------------------------------ transactions

    # ------------------------------------------------------------------ producing

    def _drain(self) -> None:
        self.producer.poll(0.05)

    def _store_lookup(self, name: str, partition: int) -> StoreTransaction:
        if self.stores is None:
            from eos.errors import StateError

            raise StateError(
                f"store {name!r} is not declared in {type(self.processor).__name__}.stores"
            )
        return self.stores.get(name, partition)

    # ------------------------------------------------------------------ rebalances


def _fast_deserializer(serde: Serde) -> Callable[[bytes | None], object] | None:
    return None if isinstance(serde, BytesSerde) else serde.deserialize
