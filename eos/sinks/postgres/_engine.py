"""The PostgreSQL sink's loop: a database transaction per batch, offsets inside it.

::

    start: check the input topics, connect, create the offsets table, setup(cur)
    loop:
        settle pending partitions: claim (bump the epoch) or re-read their
            committed position in the offsets table; seek there; resume
        batch = consume()                  (rebalance callbacks run in here)
        for each record: process(record, cur) in the open database transaction
            (after a failure: SAVEPOINT per record, so only the failing one is undone)
        when the commit interval or the batch limit is reached, or on stop/revoke:
            (1) the records' statements ran in the open transaction
            (2) dead-letter copies of the batch are acknowledged by Kafka
            (3) UPDATE the offsets table to the batch's positions WHERE the epoch
                is still the one this instance claimed (no match: fenced, roll back)
            (4) COMMIT
            (5) optionally, the same positions to the consumer group (lag tools only)
        on a failure: ROLLBACK, pause every partition, re-read where each one is
            committed (the outcome of a COMMIT that lost its connection shows
            there), seek, go on

What happens when (each case has one owner, named):

=============================  =================================================
a record raises                :meth:`PostgresEngine._record_failed`: roll back,
                               replay the batch with a savepoint per record;
                               the policy applies to that record alone
a statement can never work     ConfigError: the instance stops
the database is unreachable    :meth:`PostgresEngine._outage`: roll back, back
                               off, retry; SinkUnavailableError after
                               ``outage_timeout_s``
another instance claimed a     :meth:`~eos.sinks.postgres._partitions.SinkPartitions.fence`:
partition                      the batch rolls back, the partition is dropped
partitions revoked / lost      commit first / roll back
the processor committed        ConfigError: the instance stops
=============================  =================================================

Threading: one thread (the caller of ``run``).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from typing import Any

import psycopg
from confluent_kafka import Consumer, KafkaError, KafkaException
from confluent_kafka import TopicPartition as KafkaTopicPartition

from eos._admin import KafkaLog, check_topics
from eos._backoff import AbortBudget
from eos._batch import TP, Batch, redelivered
from eos._dsl_topology import input_serdes_for
from eos._lifecycle import run_engine
from eos._records import decode_error, where
from eos._stop import StopSignal
from eos.config import Config
from eos.errors import ConfigError, ProcessingError
from eos.faults import Faults
from eos.record import Record
from eos.serde import BytesSerde, Serde
from eos.sinks.base import SinkEngine
from eos.sinks.postgres._database import (
    Database,
    Failure,
    Outage,
    describe_error,
)
from eos.sinks.postgres._dead_letters import DeadLetterFailed, DeadLetters, failure_error
from eos.sinks.postgres._offsets import OffsetsTable
from eos.sinks.postgres._partitions import SinkPartitions
from eos.sinks.postgres.processor import PostgresProcessor
from eos.stats import EngineStats, SinkStats

__all__ = ["PostgresEngine"]

log = logging.getLogger("eos.sinks.postgres")

_MAX_CONSUME = 5000
_IDLE_POLL_S = 0.1
_new_record = tuple.__new__

Deserialize = Callable[[bytes | None], object]


class Rolledback(Exception):
    """Internal: the batch was rolled back; drop the polled messages."""


class PostgresEngine(SinkEngine):
    """Runs one instance of a :class:`PostgresProcessor`; see the module docstring.

    Same lifecycle as the Kafka engine: ``run()`` blocks until ``stop()`` (any
    thread), a failure that stops the instance, or a fatal consumer error; it
    always rolls back what is open, closes the consumer (leaving the group),
    the connection and the dead-letter producer, and calls ``teardown``.
    """

    def __init__(
        self,
        config: Config,
        processor: PostgresProcessor[Any, Any],
        *,
        stats: EngineStats,
        stop: StopSignal,
        faults: Faults,
    ) -> None:
        self.config = config
        self.processor = processor
        self.stats = stats
        self.sink = stats.sink = SinkStats(processor.sink_name)
        self.stop_signal = stop
        self.faults = faults
        self._kafka_log = KafkaLog()
        key_serde = config.resolved_key_serde()
        value_serde = config.resolved_value_serde()
        self._des = (_deserializer(key_serde), _deserializer(value_serde))
        self._topic_des: dict[str, tuple[Deserialize | None, Deserialize | None]] = {
            topic: (
                self._des[0] if k is None else _deserializer(k),
                self._des[1] if v is None else _deserializer(v),
            )
            for topic, (k, v) in input_serdes_for(
                processor,  # type: ignore[arg-type]
                config.input_serdes,
                config.application_id,
            ).items()
        }
        self.db = Database(
            processor.dsn,
            where=processor.where,
            application_name=f"eos {config.transactional_id}",
            isolation_level=processor.isolation_level,
            idle_timeout_ms=config.transaction_timeout_ms,
            connect_timeout_s=processor.connect_timeout_s,
        )
        self.outage = Outage(processor.outage_timeout_s, stop)
        self.offsets = OffsetsTable(
            processor.offsets_table, config.application_id, config.transactional_id
        )
        consumer_settings = config.consumer_settings()
        self.partitions = SinkPartitions(
            self.offsets, stats, str(consumer_settings.get("auto.offset.reset", "earliest"))
        )
        self.batch = Batch()
        self.budget = AbortBudget(config.max_aborts_without_progress, stop)
        self.careful: dict[TP, int] = {}
        """Replay with a savepoint per record until each partition's position passes this offset."""
        self.dead_letters: DeadLetters | None = None
        self.consumer: Consumer | None = None
        self.failed = False

    def stop(self) -> None:
        """Ask ``run()`` to commit what it processed and return. Thread-safe."""
        self.stop_signal.set()

    # ------------------------------------------------------------------ run

    def run(self) -> None:
        """Run until stopped. Raises the error that ended it, if any."""
        run_engine(self.stats, self._start, self._loop, self._shutdown)

    def _start(self) -> None:
        config = self.config
        stop = self.stop_signal
        stop.check()
        check_topics(config, stop, {})
        stop.check()
        self._in_transaction("creating the offsets table", self._create_tables)
        stop.check()
        if config.processing_error_policy == "dead_letter" and config.dead_letter_topic:
            self.dead_letters = DeadLetters(config, config.dead_letter_topic, stop)
        consumer = Consumer({**config.consumer_settings(), "logger": self._kafka_log})
        self.consumer = consumer
        self.partitions.consumer = consumer
        consumer.subscribe(
            list(config.input_topics),
            on_assign=self._on_assign,
            on_revoke=self._on_revoke,
            on_lost=self._on_lost,
        )
        log.info(
            "started %s into PostgreSQL at %s (offsets table %s) from %s",
            config.application_id,
            self.processor.where,
            self.offsets.name,
            ",".join(config.input_topics),
        )

    def _create_tables(self, cur: psycopg.Cursor[Any]) -> None:
        try:
            self.offsets.create(cur)
        except psycopg.errors.UniqueViolation:
            # Two instances created it at the same moment: the other one won.
            self.db.rollback()
            self.db.connect()
        if self.db.cursor is not None:
            self.processor.setup(self.db.cursor)
            self.db.take_rows()

    def _in_transaction(self, doing: str, work: Callable[[psycopg.Cursor[Any]], None]) -> None:
        """Run ``work`` in a transaction and commit, retrying outages until the limit."""
        while True:
            self.stop_signal.check()
            if self._attempt(doing, work):
                return

    def _attempt(self, doing: str, work: Callable[[psycopg.Cursor[Any]], None]) -> bool:
        """One try of ``work`` in a transaction of its own: True once committed.

        On an outage (or a lock wait that timed out) the transaction is rolled
        back and the backoff waited; a statement that can never work raises
        ConfigError.
        """
        try:
            self.db.connect()
            work(self.db.own)
            self.db.commit()
        except psycopg.Error as exc:
            self.db.rollback()
            if self.db.classify(exc) is Failure.CONFIG:
                raise self._config_error(exc, doing) from exc
            if self.db.conn is not None and isinstance(exc, psycopg.errors.LockNotAvailable):
                log.warning(
                    "the offsets rows of %s are locked by another session (a paused instance "
                    "committing?); the server ends its transaction after its "
                    "idle_in_transaction_session_timeout; retrying",
                    ", ".join(f"{t}[{p}]" for t, p in sorted(self.partitions.pending)),
                )
            else:
                self.db.discard()
            self._outage_wait(exc, doing)
            return False
        self._outage_over()
        return True

    def _shutdown(self, error: BaseException | None) -> None:
        self.stats.state = "stopping"
        if error is not None or self.failed:
            self.failed = True
            if self.db.in_transaction:
                self.sink.aborted("run_failed")
            self.db.rollback()
        consumer, self.consumer = self.consumer, None
        if consumer is not None:
            try:
                consumer.close()  # the revoke callback commits nothing after a failure
            except Exception as exc:
                log.warning("closing the consumer failed: %s", exc)
        self.db.rollback()
        self.db.discard()
        if self.dead_letters is not None:
            try:
                self.dead_letters.close()
            except Exception as exc:  # pragma: no cover - closing a producer
                log.warning("closing the dead-letter producer failed: %s", exc)
        try:
            self.processor.teardown()
        except Exception as exc:
            log.warning("%s.teardown failed: %s", type(self.processor).__name__, exc)
        self.stats.state = "failed" if error is not None else "stopped"

    # ------------------------------------------------------------------ loop

    def _loop(self) -> None:
        consumer = self.consumer
        if consumer is None:
            raise RuntimeError("not started")
        config = self.config
        stop = self.stop_signal
        batch = self.batch
        partitions = self.partitions
        interval = config.commit_interval_ms / 1000.0
        max_batch = config.max_batch_records
        stats = self.stats
        while not stop.is_set():
            # Liveness (/healthz) reads this: one stamp per turn, never per record.
            stats.loop_turned = time.monotonic()
            if partitions.pending:
                self._settle()
            limit = max(1, min(_MAX_CONSUME, max_batch - batch.records))
            if batch.records:
                timeout = max(0.0, batch.started + interval - time.monotonic())
                messages = consumer.consume(limit, timeout)
            else:
                messages = consumer.consume(1, _IDLE_POLL_S)
                if messages and limit > 1:
                    messages += consumer.consume(limit - 1, 0)
            if messages:
                try:
                    self._process(messages)
                except Rolledback:
                    continue
            if batch.records and (
                batch.records >= max_batch or time.monotonic() - batch.started >= interval
            ):
                self._commit()
            if self.dead_letters is not None:
                self.dead_letters.producer.poll(0)
        if self.batch.records or self.db.in_transaction:
            self._commit()

    def _settle(self) -> None:
        """Claim or re-read the pending partitions (one transaction), then resume them."""
        result: list[Any] = []

        def work(cur: psycopg.Cursor[Any]) -> None:
            cur.execute(f"SET LOCAL lock_timeout = {int(self.processor.lock_timeout_ms)}")
            result[:] = self.partitions.settle(cur)

        if self._attempt("claiming partitions in the offsets table", work):
            claimed, current = result
            self.partitions.settled(claimed, current)

    def _process(self, messages: Sequence[Any]) -> None:
        """Process ``messages`` in the open transaction. Raises Rolledback after a rollback."""
        processor = self.processor
        process = processor.process
        cursor = self.db.cursor
        if cursor is None:
            self._rollback("outage", "no connection")
            raise Rolledback
        careful = bool(self.careful)
        batch = self.batch
        positions = batch.positions
        first_seen = batch.first_seen
        partitions = self.partitions
        committed = partitions.committed
        topic_des = self._topic_des
        default_des = self._des
        kdes, vdes = default_des
        if not batch.records:
            batch.started = time.monotonic()
        run_tp: TP | None = None
        run_topic = None
        run_partition = -1
        run_next = -1
        floor = -1
        ok = False
        processed = 0
        for msg in messages:
            error = msg.error()
            if error is not None:
                self._consumer_error(msg, error)
                continue
            topic = msg.topic()
            partition = msg.partition()
            offset = msg.offset()
            if partition != run_partition or topic != run_topic:
                if ok and run_next > floor:
                    positions[run_tp] = run_next  # type: ignore[index]
                run_tp = (topic, partition)
                run_topic = topic
                run_partition = partition
                if topic_des:
                    kdes, vdes = topic_des.get(topic, default_des)
                ok = partitions.ready(run_tp)
                floor = max(positions.get(run_tp, -1), committed.get(run_tp, -1))
                run_next = floor
                if ok and run_tp not in first_seen:
                    first_seen[run_tp] = max(offset, floor)
            if not ok or offset < run_next:
                # Paused, fenced, fetched before the seek to the committed position, or
                # handed out again inside the run (a fetch reset of librdkafka's own):
                # the run so far counts, and its end is the new floor.
                if ok and offset >= floor:
                    redelivered(run_tp, offset, run_next)  # type: ignore[arg-type]
                    positions[run_tp] = floor = run_next  # type: ignore[index]
                continue
            raw_key = msg.key()
            raw_value = msg.value()
            try:
                key = raw_key if kdes is None else kdes(raw_key)
                value = raw_value if vdes is None else vdes(raw_value)
            except Exception as exc:
                self._apply_policy(msg, decode_error(exc, raw_key, kdes, topic))
                run_next = offset + 1
                processed += 1
                continue
            record = _new_record(
                Record,
                (key, value, topic, partition, offset, msg.timestamp()[1], msg.headers()),
            )
            if careful:
                self._process_carefully(record, msg)
            else:
                try:
                    process(record, cursor)
                except ConfigError:
                    raise  # a programming error (commit() in process), never a record's
                except Exception as exc:
                    self._record_failed(msg, exc)
            run_next = offset + 1
            processed += 1
        if ok and run_next > floor:
            positions[run_tp] = run_next  # type: ignore[index]
        batch.records += processed
        if processed:
            self.stats.record_batch(
                processed, messages[0].timestamp()[1], messages[-1].timestamp()[1]
            )

    def _process_carefully(self, record: Record, msg: Any) -> None:
        """One record inside a savepoint: a failure undoes this record's statements only."""
        own = self.db.own
        try:
            if not self.db.in_transaction:
                # Deferred constraints are checked per statement in a careful replay, so
                # a violation is the record's, not the COMMIT's.
                own.execute("SET CONSTRAINTS ALL IMMEDIATE")
            own.execute("SAVEPOINT eos_record")
        except psycopg.Error as exc:
            self._failure(exc, "starting a record's savepoint")
        try:
            self.processor.process(record, self.db.cursor)  # type: ignore[arg-type]
            own.execute("RELEASE SAVEPOINT eos_record")
        except ConfigError:
            raise
        except Exception as exc:
            failure = self.db.classify(exc)
            if failure is not Failure.RECORD:
                self._failure(exc, f"processing {where(msg)}")
            try:
                own.execute("ROLLBACK TO SAVEPOINT eos_record")
                own.execute("RELEASE SAVEPOINT eos_record")
            except psycopg.Error as undo:
                self._failure(undo, f"undoing {where(msg)}")
            self._apply_policy(msg, exc)

    # ------------------------------------------------------------------ failures

    def _record_failed(self, msg: Any, exc: Exception) -> None:
        """A record raised in a batch without savepoints: roll back, replay carefully.

        Whatever the record's statements did, and whether they left the
        transaction failed, cannot be undone alone: the whole batch rolls
        back and is replayed with a savepoint per record, where the failure
        is attributed to the record that raises again (a record that passes
        on replay is simply written). Under ``fail`` the instance stops at
        once (nothing of the batch is committed).
        """
        failure = self.db.classify(exc)
        if failure is not Failure.RECORD:
            self._failure(exc, f"processing {where(msg)}")
        self.stats.processing_errors += 1
        tp = (msg.topic(), msg.partition())
        blamed = not isinstance(exc, psycopg.errors.InFailedSqlTransaction)
        if self.config.processing_error_policy == "fail" and blamed:
            self._rollback("record_failed", f"{where(msg)} failed: {describe_error(exc)}")
            raise ProcessingError(
                topic=msg.topic(), partition=msg.partition(), offset=msg.offset(), cause=exc
            ) from exc
        for batch_tp, position in self.batch.positions.items():
            self.careful[batch_tp] = max(self.careful.get(batch_tp, 0), position)
        self.careful[tp] = max(self.careful.get(tp, 0), msg.offset() + 1)
        self._rollback(
            "record_failed",
            f"{where(msg)} failed ({describe_error(exc)}); replaying the batch with a "
            "savepoint per record",
        )
        self._budget(f"record {where(msg)} failed: {describe_error(exc)}", counted=False)
        raise Rolledback

    def _apply_policy(self, msg: Any, exc: BaseException) -> None:
        """``processing_error_policy`` for a record whose own effects are already undone."""
        policy = self.config.processing_error_policy
        described = describe_error(exc)
        self.stats.processing_errors += 1
        if policy == "fail":
            self._rollback("record_failed", f"{where(msg)} failed: {described}")
            raise ProcessingError(
                topic=msg.topic(), partition=msg.partition(), offset=msg.offset(), cause=exc
            ) from exc
        if policy == "skip" or self.dead_letters is None:
            self.stats.skipped += 1
            log.warning("skipping %s: %s", where(msg), described)
            return
        sqlstate = exc.sqlstate if isinstance(exc, psycopg.Error) else None
        try:
            self.dead_letters.send(msg, exc, described, sqlstate)
        except DeadLetterFailed as failed:
            self._rollback("dead_letter_failed", str(failed))
            raise failure_error(msg, exc, described, self.dead_letters.topic) from failed
        self.stats.dead_lettered += 1
        log.warning("dead-lettered %s: %s", where(msg), described)

    def _failure(self, exc: BaseException, doing: str) -> None:
        """A failure that is not a record's: an outage (roll back, back off) or a ConfigError."""
        failure = self.db.classify(exc)
        if failure is Failure.CONFIG:
            raise self._config_error(exc, doing) from exc
        self._outage(exc, doing)
        raise Rolledback

    def _outage(self, exc: BaseException, doing: str) -> None:
        """The database failed transiently: roll back, drop the connection, back off."""
        self._rollback("outage", f"{doing}: {describe_error(exc)}")
        self.db.discard()
        self._outage_wait(exc, doing)

    def _outage_wait(self, exc: BaseException, doing: str) -> None:
        if self.sink.outage_since is None:
            self.sink.outage_since = time.monotonic()
        self.outage.failed(exc, doing)

    def _outage_over(self) -> None:
        self.outage.over()
        self.sink.outage_since = None

    def _config_error(self, exc: BaseException, doing: str) -> ConfigError:
        self._rollback("config_error", f"{doing}: {describe_error(exc)}")
        return ConfigError(
            f"PostgreSQL refused a statement while {doing}: {describe_error(exc)}. It cannot "
            "succeed for any record (a missing table, column or privilege, or a syntax "
            "error): fix the schema or the processor and restart; nothing of the batch was "
            "committed",
            "processor",
        )

    def _budget(self, cause: str, *, counted: bool) -> None:
        self.budget.aborted(cause, counted=counted)
        self.stats.consecutive_aborts = self.budget.consecutive

    def _rollback(self, reason: str, why: str) -> None:
        """Roll back the open batch, drop its dead letters, and rewind every partition.

        Leaves no transaction open, the batch empty and every held partition
        pending (paused until :meth:`_settle` re-reads its committed position).
        """
        if self.batch.records or self.db.in_transaction:
            self.sink.aborted(reason)
            self.stats.record_abort(reason if reason != "record_failed" else "processing_error")
            log.info("rolling back the batch (%s): %s", reason, why)
        self.db.rollback()
        self.db.take_rows()
        if self.dead_letters is not None:
            self.dead_letters.drop()
        self.batch.clear()
        self.partitions.rewind()

    def _consumer_error(self, msg: Any, error: KafkaError) -> None:
        if error.code() == KafkaError._PARTITION_EOF:
            return
        if error.fatal():
            raise KafkaException(error)
        log.warning("consumer error on %s: %s", msg.topic(), error)

    # ------------------------------------------------------------------ commit

    def _commit(self) -> bool:
        """Commit the open batch; True if it committed. See the module docstring's steps."""
        batch = self.batch
        db = self.db
        if not batch.records and not db.in_transaction:
            batch.clear()
            return True
        started = time.monotonic()
        positions = dict(batch.positions)
        try:
            # (1) the records' statements ran in the open transaction.
            if db.idle and db.cursor is not None and db.cursor.rows:
                raise ConfigError(
                    f"{type(self.processor).__name__}.process committed or rolled back the "
                    "database transaction itself; the engine owns it (its offsets commit "
                    "with the rows). Remove the commit() or rollback() call",
                    "processor",
                )
            # (2) dead-letter copies acknowledged before anything commits.
            if self.dead_letters is not None:
                self.dead_letters.deliver()
            # (3) the positions, where this instance's epochs still hold.
            if positions:
                lost = self.offsets.advance(db.own, positions, self.partitions.epochs)
                if lost:
                    self._rollback("fenced", "another instance claimed " + _fmt(lost))
                    self.partitions.fence(lost, "the batch's offsets update found a newer epoch")
                    return False
            self.faults.before_commit(self.stats.commits + 1)
            # (4) commit.
            db.commit()
        except DeadLetterFailed as failed:
            if failed.permanent:
                self._rollback("dead_letter_failed", str(failed))
                raise ProcessingError(
                    f"{failed}; nothing of the batch was committed. Raise the dead-letter "
                    "topic's max.message.bytes or choose processing_error_policy='skip'",
                    topic=self.config.dead_letter_topic or "",
                    partition=-1,
                    offset=-1,
                    cause=failed,
                ) from failed
            self._rollback("dead_letter_failed", str(failed))
            self._budget(str(failed), counted=False)
            self.budget.wait()
            return False
        except psycopg.Error as exc:
            failure = self.db.classify(exc)
            if failure is Failure.CONFIG:
                raise self._config_error(exc, "committing the batch") from exc
            if failure is Failure.OUTAGE:
                # A COMMIT that lost its connection may have committed: the offsets
                # table says which, when the partitions are re-read.
                self._outage(exc, "committing the batch")
                return False
            # A statement error left for the commit (a deferred constraint, an error a
            # processor caught and ignored): replay the batch with a savepoint per record.
            for tp, position in positions.items():
                self.careful[tp] = max(self.careful.get(tp, 0), position)
            self._rollback("commit_failed", f"committing failed: {describe_error(exc)}")
            self._budget(f"committing failed: {describe_error(exc)}", counted=True)
            self.budget.wait()
            return False
        seconds = time.monotonic() - started
        self._outage_over()
        # (5) the consumer group's offsets, for lag tools only (never read back).
        if positions and self.processor.commit_kafka_offsets and self.consumer is not None:
            try:
                self.consumer.commit(
                    offsets=[KafkaTopicPartition(t, p, o) for (t, p), o in positions.items()],
                    asynchronous=True,
                )
            except KafkaException as exc:
                log.debug("committing the group's offsets failed (lag display only): %s", exc)
        self.partitions.committed.update(positions)
        for tp, position in positions.items():
            if self.careful.get(tp, -1) <= position:
                self.careful.pop(tp, None)
        self.sink.committed(db.take_rows(), seconds)
        self.stats.record_commit(batch.records, seconds)
        if batch.records:
            self.budget.progress()
            self.stats.consecutive_aborts = 0
        self._refresh_lag(positions)
        batch.clear()
        return True

    def _refresh_lag(self, positions: dict[TP, int]) -> None:
        consumer = self.consumer
        if consumer is None:
            return
        for (topic, partition), position in positions.items():
            try:
                _low, high = consumer.get_watermark_offsets(
                    KafkaTopicPartition(topic, partition), cached=True
                )
            except KafkaException:
                continue
            self.stats.set_partition(topic, partition, high, position)

    # ------------------------------------------------------------------ rebalance

    def _on_assign(self, consumer: Consumer, partitions: list[KafkaTopicPartition]) -> None:
        tps = [(p.topic, p.partition) for p in partitions]
        self.stats.rebalances += 1
        if _cooperative(self.config):
            consumer.incremental_assign(partitions)
        else:
            consumer.assign(partitions)
        if tps:
            self.partitions.assign(tps)

    def _on_revoke(self, consumer: Consumer, partitions: list[KafkaTopicPartition]) -> None:
        """Commit the open batch before the partitions go (roll back after a failure)."""
        tps = [(p.topic, p.partition) for p in partitions]
        log.info("revoking %s", _fmt(tps))
        try:
            if self.batch.records or self.db.in_transaction:
                if self.failed:
                    self._rollback("run_failed", "the run failed")
                else:
                    self._commit()
        except (Rolledback, psycopg.Error) as exc:
            log.info("the batch before revoking %s was not committed: %s", _fmt(tps), exc)
        finally:
            self.careful = {tp: o for tp, o in self.careful.items() if tp not in tps}
            self.batch.drop(tps)
            self.partitions.release(tps)

    def _on_lost(self, consumer: Consumer, partitions: list[KafkaTopicPartition]) -> None:
        """The partitions are gone already: roll back the batch (the others are re-read)."""
        tps = [(p.topic, p.partition) for p in partitions]
        log.info("lost %s", _fmt(tps))
        try:
            self._rollback("partitions_lost", "partitions lost: " + _fmt(tps))
        finally:
            self.careful = {tp: o for tp, o in self.careful.items() if tp not in tps}
            self.partitions.release(tps)


def _fmt(tps: Any) -> str:
    return ", ".join(f"{t}[{p}]" for t, p in sorted(tps)) or "none"


def _deserializer(serde: Serde) -> Deserialize | None:
    return None if isinstance(serde, BytesSerde) else serde.deserialize


def _cooperative(config: Config) -> bool:
    settings = config.consumer_settings()
    strategy = str(settings.get("partition.assignment.strategy", ""))
    protocol = str(settings.get("group.protocol", "classic"))
    return protocol.lower() == "consumer" or strategy.split(",")[0].strip() == "cooperative-sticky"
