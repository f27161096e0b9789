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

import functools
import logging
import os
import time
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING

from confluent_kafka import OFFSET_INVALID, Consumer, KafkaError, KafkaException, Message, Producer
from confluent_kafka import TopicPartition as KafkaTopicPartition
from confluent_kafka.admin import AdminClient, NewTopic

from eos.errors import (
    AbortableTransactionError,
    ConfigError,
    FatalTransactionError,
    ProcessingError,
    SerializationError,
)
from eos.processor import Context, Processor
from eos.record import Record, TopicPartition
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


class Engine:
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

    @property
    def consumer(self) -> Consumer:
        if self._consumer is None:
            raise RuntimeError("engine not started")
        return self._consumer

    @property
    def producer(self) -> Producer:
        if self._producer is None:
            raise RuntimeError("engine not started")
        return self._producer

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
            producer_settings["on_delivery"] = self._on_alos_delivery
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
                except Exception as exc:  # noqa: BLE001 - best effort on the way out
                    log.warning("aborting on shutdown failed: %s", exc)
            remaining = self._producer.flush(self.config.shutdown_timeout_s)
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
            if self._in_txn:
                timeout = max(0.0, self._txn_started + interval - time.monotonic())
            else:
                timeout = _IDLE_POLL_S
            limit = max(1, min(_MAX_CONSUME, max_batch - self._txn_records))
            messages = consumer.consume(limit, timeout)
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

    def _process_batch(self, messages: Sequence[Message]) -> None:
        """Process ``messages`` in order. Raises _Abort after a rewind."""
        ctx = self._ctx
        if ctx is None:
            raise RuntimeError("engine not started")
        process = self.processor.process
        kdes = self._kdes
        vdes = self._vdes
        positions = self._positions
        assigned = self._assigned
        poison = self._poison
        eos = self._eos
        careful = bool(self._careful)
        ctx._produce = self._careful_produce if careful else self.producer.produce
        if not self._positions:
            self._txn_started = time.monotonic()
            self._txn_sends = ctx.sends
        processed = 0
        try:
            for index, msg in enumerate(messages):
                error = msg.error()
                if error is not None:
                    self._consumer_error(error)
                    continue
                topic = msg.topic()
                partition = msg.partition()
                tp = (topic, partition)
                if tp not in assigned:
                    continue
                offset = msg.offset()
                if eos and not self._in_txn:
                    self._begin()
                if tp not in self._committed and tp not in self._first_seen:
                    self._first_seen[tp] = offset
                if poison and (topic, partition, offset) in poison:
                    # Kept until a commit moves past it: the transaction that applies
                    # the policy may itself abort (e.g. OUT_OF_ORDER_SEQUENCE_NUMBER) and replay.
                    self._apply_policy(msg, poison[(topic, partition, offset)], messages, index)
                    positions[tp] = offset + 1
                    processed += 1
                    continue
                raw_key = msg.key()
                raw_value = msg.value()
                try:
                    key = raw_key if kdes is None else kdes(raw_key)
                    value = raw_value if vdes is None else vdes(raw_value)
                except Exception as exc:  # noqa: BLE001 - every decode failure follows the policy
                    self._apply_policy(
                        msg, _decode_error(exc, raw_key, kdes, topic), messages, index
                    )
                    positions[tp] = offset + 1
                    processed += 1
                    continue
                record = Record(
                    key,
                    value,
                    topic,
                    partition,
                    offset,
                    msg.timestamp()[1],
                    msg.headers(),
                )
                ctx.record = record
                before = ctx.sends
                try:
                    process(record, ctx)
                except Exception as exc:  # noqa: BLE001 - user code: the policy decides
                    self._processing_failed(msg, exc, ctx.sends != before, messages, index)
                positions[tp] = offset + 1
                processed += 1
        finally:
            ctx.record = None
        self._txn_records += processed
        if processed:
            self.stats.record_batch(
                processed, messages[0].timestamp()[1], messages[-1].timestamp()[1]
            )

    # ------------------------------------------------------------------ errors in records

    def _processing_failed(
        self,
        msg: Message,
        exc: Exception,
        sent_something: bool,
        batch: Sequence[Message],
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
            if error.fatal():
                self._mark_dead()
                raise FatalTransactionError(f"produce failed fatally: {error}", error) from exc
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

    def _apply_policy(
        self, msg: Message, exc: BaseException, batch: Sequence[Message], index: int
    ) -> None:
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

    def _dead_letter(self, msg: Message, exc: BaseException) -> None:
        topic, partition, offset = _key(msg)
        dlq = self.config.dead_letter_topic
        if dlq is None:  # validated by Config; kept for type narrowing
            raise ConfigError("dead_letter policy needs dead_letter_topic", "dead.letter.topic")
        headers = [
            ("eos.error.type", type(exc).__name__.encode()),
            ("eos.error.message", str(exc).encode("utf-8", "replace")[:4096]),
            ("eos.source.topic", topic.encode()),
            ("eos.source.partition", str(partition).encode()),
            ("eos.source.offset", str(offset).encode()),
            ("eos.application.id", self.config.application_id.encode()),
        ]
        original = msg.headers()
        if original:
            headers.extend(original)
        if self._eos and not self._in_txn:
            self._begin()
        while True:
            try:
                self.producer.produce(
                    dlq,
                    msg.value(),
                    msg.key(),
                    headers=headers,
                )
                break
            except BufferError:
                self._drain()
        self.stats.dead_lettered += 1
        log.warning("dead-lettered %s to %s: %s: %s", _where(msg), dlq, type(exc).__name__, exc)

    def _consumer_error(self, error: KafkaError) -> None:
        if error.code() == KafkaError._PARTITION_EOF:
            return
        if error.fatal():
            raise KafkaException(error)
        log.warning("consumer error: %s", error)

    # ------------------------------------------------------------------ transactions

    def _begin(self) -> None:
        if self._txn is None:
            return
        self._txn.begin()
        self._in_txn = True

    def _commit(self) -> None:
        """Commit the open batch; on an abortable failure, abort and rewind."""
        if self._eos:
            self._commit_eos()
        elif self._guarantee == "at_least_once":
            self._commit_alos()
        else:
            self._commit_amos()

    def _commit_amos(self) -> None:
        """at_most_once: offsets were committed before processing; just deliver."""
        started = time.monotonic()
        remaining = self.producer.flush(self.config.transaction_timeout_ms / 1000.0)
        failures = len(self._alos_failures) + remaining
        if failures:
            log.warning("at_most_once: %d output record(s) were not delivered", failures)
            self._alos_failures.clear()
        if self.stores is not None:
            self.stores.commit()
        self._committed_positions(started)

    def _commit_eos(self) -> None:
        txn = self._txn
        if txn is None:
            return
        if not self._in_txn:
            self._positions.clear()
            return
        started = time.monotonic()
        offsets = [KafkaTopicPartition(t, p, o) for (t, p), o in self._positions.items()]
        try:
            # (1) outputs and changelog records were produced while processing.
            # (2) the input positions join the transaction, fenced by group generation.
            if offsets:
                txn.send_offsets(offsets, self.consumer.consumer_group_metadata())
            self._commit_attempts += 1
            if self._commit_attempts in self._inject_failures:
                raise AbortableTransactionError(
                    f"injected failure of commit attempt {self._commit_attempts} "
                    "(EOS_TEST_FAIL_COMMITS)"
                )
            # (3) commit: flushes, then outputs + changelog + offsets become visible.
            txn.commit()
        except AbortableTransactionError as exc:
            self._after_failed_commit(exc)
            return
        except FatalTransactionError:
            self._mark_dead()
            raise
        self._in_txn = False
        # (4) local stores: overlay + changelog offset in one write per store partition.
        if self.stores is not None:
            self.stores.commit()
        self._committed_positions(started)

    def _commit_alos(self) -> None:
        started = time.monotonic()
        remaining = self.producer.flush(self.config.transaction_timeout_ms / 1000.0)
        if remaining or self._alos_failures or self._delivery_failures:
            failures = list(self._alos_failures)
            self._alos_failures.clear()
            self._after_failed_commit(
                AbortableTransactionError(
                    f"{remaining} undelivered, {len(failures)} failed deliveries"
                    + (f" (first: {failures[0]})" if failures else "")
                )
            )
            return
        if self._positions:
            offsets = [KafkaTopicPartition(t, p, o) for (t, p), o in self._positions.items()]
            self.consumer.commit(offsets=offsets, asynchronous=False)
        if self.stores is not None:
            self.stores.commit()
        self._committed_positions(started)

    def _committed_positions(self, started: float) -> None:
        if self._poison:
            for key in [k for k in self._poison if self._positions.get(k[:2], -1) > k[2]]:
                del self._poison[key]
        for tp, position in self._positions.items():
            self._committed[tp] = position
            self._first_seen.pop(tp, None)
            careful = self._careful.get(tp)
            if careful is not None and position >= careful:
                del self._careful[tp]
        if not self._careful:
            self._one_by_one = False
        self._positions.clear()
        self._delivery_failures.clear()
        sends = self._ctx.sends if self._ctx is not None else 0
        self.stats.record_commit(
            self._txn_records, time.monotonic() - started, produced=sends - self._txn_sends
        )
        self._txn_sends = sends
        self._refresh_lag()
        log.debug("committed %d records in %.1f ms", self._txn_records, 1000 * (time.monotonic() - started))
        self._txn_records = 0

    def _commit_before(self, messages: Sequence[Message]) -> None:
        """at_most_once: commit the positions past ``messages`` before processing them."""
        last: dict[TP, int] = {}
        for msg in messages:
            if msg.error() is None:
                last[(msg.topic(), msg.partition())] = msg.offset() + 1
        if last:
            self.consumer.commit(
                offsets=[KafkaTopicPartition(t, p, o) for (t, p), o in last.items()],
                asynchronous=False,
            )
            self._committed.update(last)

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
            log.warning("%d outputs rejected together; replaying one record per request", len(poisoned))
            self._one_by_one = True
            poisoned = {}
        if poisoned:
            for key, error in poisoned.items():
                self._poison[key] = KafkaException(error)
            log.warning(
                "output of %d record(s) rejected by the broker (first %s: %s); "
                "the policy %r applies to them on replay",
                len(poisoned),
                "%s[%d]@%d" % next(iter(poisoned)),
                next(iter(poisoned.values())),
                self.config.processing_error_policy,
            )
        elif not self._careful:
            # Replay the same records with per-output delivery reports, so a
            # record whose output the broker rejects can be found exactly.
            self._careful = {tp: pos for tp, pos in self._positions.items()}
        self._fail_batch(
            "output_rejected" if poisoned else "commit_failed",
            f"commit failed: {exc}",
            (),
            0,
            reraise=False,
        )
        error = exc.kafka_error
        if self._eos and isinstance(error, KafkaError) and (
            error.code() in _MESSAGE_ERRORS or error.code() == KafkaError.OUT_OF_ORDER_SEQUENCE_NUMBER
        ):
            # A permanently failed message leaves a gap in the idempotent sequence;
            # librdkafka only closes it with an epoch bump, which it does on the NEXT
            # transaction's failure (OUT_OF_ORDER_SEQUENCE_NUMBER "requires epoch
            # bump"), wasting one more abort. A new producer's init_transactions()
            # bumps the epoch now.
            self._renew_producer()

    def _fail_batch(
        self,
        kind: str,
        reason: str,
        batch: Sequence[Message],
        index: int,
        *,
        reraise: bool = True,
    ) -> None:
        """Abort the open transaction, drop overlays, rewind; raise _Abort if ``reraise``.

        ``kind`` is the metric label (processing_error, commit_failed,
        output_rejected, produce_failed, partitions_lost); ``reason`` the log text.
        """
        self.stats.record_abort(kind)
        log.info("aborting transaction (%s): %s", kind, reason)
        if self._txn is not None and self._in_txn:
            try:
                self._txn.abort()
            except FatalTransactionError:
                self._mark_dead()
                raise
            self._in_txn = False
        if self.stores is not None:
            self.stores.abort()
        self._rewind(batch, index)
        self._positions.clear()
        self._delivery_failures.clear()
        self._txn_records = 0
        if reraise:
            raise _Abort(reason)

    def _rewind(self, batch: Sequence[Message], index: int) -> None:
        """Seek every partition that moved since the last commit back to it."""
        targets: dict[TP, int] = {}
        for tp in self._positions:
            targets[tp] = self._rewind_target(tp)
        for msg in batch[index:]:
            if msg.error() is not None:
                continue
            tp = (msg.topic(), msg.partition())
            if tp in self._assigned and tp not in targets:
                committed = self._committed.get(tp, self._first_seen.get(tp))
                targets[tp] = committed if committed is not None else msg.offset()
        for tp, offset in targets.items():
            if tp not in self._assigned:
                continue
            try:
                self.consumer.seek(KafkaTopicPartition(tp[0], tp[1], offset))
            except KafkaException as exc:
                raise FatalTransactionError(
                    f"cannot rewind {tp[0]}[{tp[1]}] to {offset} after an abort ({exc}); "
                    "stopping so no record is skipped"
                ) from exc
        if targets:
            log.info(
                "rewound %s", ", ".join(f"{t}[{p}]->{o}" for (t, p), o in sorted(targets.items()))
            )

    def _rewind_target(self, tp: TP) -> int:
        committed = self._committed.get(tp)
        if committed is not None:
            return committed
        first = self._first_seen.get(tp)
        if first is None:
            raise FatalTransactionError(f"no rewind position known for {tp[0]}[{tp[1]}]")
        return first

    def _renew_producer(self) -> None:
        log.info("renewing the transactional producer (epoch bump after a rejected message)")
        self._producer = Producer(self.config.producer_settings())
        self._txn = TransactionalProducer(self._producer, self.config.transaction_timeout_ms / 1000.0)
        self._txn.init()

    def _mark_dead(self) -> None:
        if self.stores is not None:
            self.stores.abort()
        self._in_txn = False
        self.stats.fenced += 1
        self._stopping = True

    # ------------------------------------------------------------------ producing

    def _drain(self) -> None:
        self.producer.poll(0.05)

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
        self, source: tuple[str, int, int], error: KafkaError | None, _msg: Message
    ) -> None:
        if error is not None:
            self._delivery_failures.setdefault(source, error)

    def _on_alos_delivery(self, error: KafkaError | None, _msg: Message) -> None:
        if error is not None:
            self._alos_failures.append(error)

    def _store_lookup(self, name: str, partition: int) -> StoreTransaction:
        if self.stores is None:
            from eos.errors import StateError

            raise StateError(
                f"store {name!r} is not declared in {type(self.processor).__name__}.stores"
            )
        return self.stores.get(name, partition)

    # ------------------------------------------------------------------ rebalances

    def _on_assign(self, consumer: Consumer, partitions: list[KafkaTopicPartition]) -> None:
        tps = [(p.topic, p.partition) for p in partitions]
        self.stats.rebalances += 1
        if partitions:
            for committed in consumer.committed(partitions, timeout=60):
                if committed.offset != OFFSET_INVALID and committed.offset >= 0:
                    self._committed[(committed.topic, committed.partition)] = committed.offset
        self._assigned.update(tps)
        log.info("assigned %s", _fmt(tps))
        if self.stores is not None and tps:
            self.stores.open(tps)
        ours = [TopicPartition(t, p) for t, p in tps]
        if self._ctx is not None and ours:
            self.processor.on_assign(ours, self._ctx)
        self.stats.assigned = sorted(self._assigned)

    def _on_revoke(self, consumer: Consumer, partitions: list[KafkaTopicPartition]) -> None:
        tps = [(p.topic, p.partition) for p in partitions]
        log.info("revoking %s", _fmt(tps))
        if self._positions or self._in_txn:
            if self._txn is None or not self._txn.dead:
                self._commit()
        self._release(tps)

    def _on_lost(self, consumer: Consumer, partitions: list[KafkaTopicPartition]) -> None:
        tps = [(p.topic, p.partition) for p in partitions]
        log.info("lost %s", _fmt(tps))
        if self._in_txn or self._positions:
            self._fail_batch("partitions_lost", "partitions lost", (), 0, reraise=False)
        self._release(tps)

    def _refresh_lag(self) -> None:
        """Per-partition end and committed offsets for the lag gauge (no broker call)."""
        self._lag_checked = time.monotonic()
        consumer = self.consumer
        for topic, partition in list(self._assigned):
            try:
                _low, high = consumer.get_watermark_offsets(
                    KafkaTopicPartition(topic, partition), cached=True
                )
            except KafkaException:
                continue
            self.stats.set_partition(
                topic, partition, high, self._committed.get((topic, partition))
            )

    def _release(self, tps: list[TP]) -> None:
        if self.stores is not None and tps:
            self.stores.close(tps)
        if tps:
            self.processor.on_revoke([TopicPartition(t, p) for t, p in tps])
        self.stats.drop_partitions(tps)
        for tp in tps:
            self._assigned.discard(tp)
            self._committed.pop(tp, None)
            self._first_seen.pop(tp, None)
            self._positions.pop(tp, None)
            self._careful.pop(tp, None)
        self.stats.assigned = sorted(self._assigned)


def _fast_deserializer(serde: Serde) -> Callable[[bytes | None], object] | None:
    return None if isinstance(serde, BytesSerde) else serde.deserialize


def _decode_error(
    exc: Exception, raw_key: object, kdes: Callable[[bytes | None], object] | None, topic: str
) -> SerializationError:
    if isinstance(exc, SerializationError):
        return exc
    part: str = "value"
    if kdes is not None:
        try:
            kdes(raw_key)  # type: ignore[arg-type]
        except Exception:  # noqa: BLE001
            part = "key"
    return SerializationError(
        f"cannot deserialize {part} from {topic!r}: {type(exc).__name__}: {exc}",
        part=part,  # type: ignore[arg-type]
        operation="deserialize",
        topic=topic,
    )


def _key(msg: Message) -> tuple[str, int, int]:
    return (msg.topic() or "", msg.partition() or 0, msg.offset() or 0)


def _where(msg: Message) -> str:
    topic, partition, offset = _key(msg)
    return f"{topic}[{partition}]@{offset}"


def _fmt(tps: list[TP]) -> str:
    return ", ".join(f"{t}[{p}]" for t, p in sorted(tps)) or "nothing"
