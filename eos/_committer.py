"""The one owner of a batch's end: the commit sequence, the abort sequence, and their limits.

Commit (:meth:`Committer.commit`), as numbered steps:

1. outputs and changelog records were produced while processing; the stream
   time of each partition that moved is written to the internal time store
   (:meth:`eos._time.TimeKeeper.flush`);
2. the input positions join the transaction (``send_offsets_to_transaction``
   with the consumer's group metadata; at_least_once commits them after the
   flush instead);
3. ``commit_transaction``;
4. local stores: overlay and changelog checkpoint in one write per store partition.

Abort (:meth:`Committer.abort`): abort the transaction (or drop what is
queued), drop the store overlays and the delivery failures, seek every
partition of the batch back to its first offset seen, forget the batch; then
count the abort. Consecutive aborts without progress back off exponentially
(:data:`BACKOFF_BASE_S` doubling up to :data:`BACKOFF_CAP_S`); past
``max_aborts_without_progress`` of them (outages and rebalances excluded) the
instance stops with :class:`~eos.errors.AbortLimitError`.

A failed batch (:meth:`Committer.batch_failed`) is diagnosed first
(:meth:`eos._outputs.Outputs.diagnose`): a record to blame is marked poison
for the replay, an outage or a rebalance is retried, a missing topic or a
denied ACL stops the instance with a :class:`~eos.errors.ConfigError`, and an
unknown cause replays the batch with per-output delivery reports to find out.

A fatal producer error (:meth:`Committer.fatal`) stops the instance, except
when the transaction merely outlived ``transaction.timeout.ms``: the broker
aborted it and bumped the producer epoch, so the old producer reads as
fenced although no other instance exists. Then a new producer with the same
``transactional.id`` takes over and the batch is redone in process.

After a failed run (``failed``), nothing commits again: the revoke callback
that ``consumer.close()`` runs aborts instead.

Threading: the processing thread only (rebalance callbacks run there too).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

from confluent_kafka import Consumer, KafkaError, KafkaException
from confluent_kafka import TopicPartition as KafkaTopicPartition

from eos._backoff import AbortBudget
from eos._batch import TP, Assignment, Batch, Poison, Source
from eos._guarantee import Guarantee
from eos._kafka_errors import Cause, cause_of, error_name
from eos._outputs import Diagnosis, Outputs
from eos._stop import StopSignal
from eos.config import Config
from eos.errors import (
    AbortableTransactionError,
    ConfigError,
    FatalTransactionError,
    ProcessingError,
    ProduceError,
    ProducerFencedError,
    TransactionOutcomeUnknownError,
)
from eos.faults import Faults
from eos.stats import EngineStats
from eos.transaction import ProducerStuckError

if TYPE_CHECKING:
    from eos._order import TimestampOrder
    from eos._time import TimeKeeper
    from eos.processor import Context
    from eos.state.manager import StoreManager

__all__ = ["Committer", "Rewound"]

log = logging.getLogger("eos.engine")


_SETTLE_TIMEOUT_S = 10.0
"""How long reading the group's committed offsets after a renewal may take."""


class Rewound(Exception):
    """Internal: the batch was aborted and its partitions rewound; drop the polled messages."""


class Committer:
    """Commits and aborts the open batch; see the module docstring.

    Built by the engine with the parts it uses; ``consumer``, ``ctx`` and
    ``stores`` are attached once they exist.
    """

    def __init__(
        self,
        *,
        config: Config,
        guarantee: Guarantee,
        batch: Batch,
        assignment: Assignment,
        poison: Poison,
        outputs: Outputs,
        stats: EngineStats,
        stop: StopSignal,
        faults: Faults,
    ) -> None:
        self.config = config
        self.guarantee = guarantee
        self.batch = batch
        self.assignment = assignment
        self.poison = poison
        self.outputs = outputs
        self.stats = stats
        self.stop = stop
        self.faults = faults
        self.budget = AbortBudget(config.max_aborts_without_progress, stop)
        self.consumer: Consumer | None = None
        self.ctx: Context | None = None
        self.stores: StoreManager | None = None
        self.time: TimeKeeper | None = None
        self.order: TimestampOrder | None = None
        self.failed = False
        # An async processor's records in flight: finished before a commit
        # (False: a failed record aborted the batch instead), cancelled on an abort.
        self.settle: Callable[[], bool] | None = None
        self.reset: Callable[[], None] | None = None
        # Restores the stores of the given partitions again (the rebalance handler's).
        self.restore_again: Callable[[list[TP]], None] | None = None
        self._attempts = 0
        self._commits_with_writes = 0

    @property
    def open(self) -> bool:
        """Whether a batch (or a transaction) is open."""
        return bool(self.batch) or self.guarantee.in_transaction

    def _consumer(self) -> Consumer:
        if self.consumer is None:
            raise RuntimeError("the engine has no consumer yet")
        return self.consumer

    # -- commit --------------------------------------------------------------

    def commit(self) -> bool:
        """Commit the open batch. True if it committed; False if it was aborted instead.

        Raises:
            TransactionOutcomeUnknownError: A stop is overdue and the commit
                did not finish (local stores are not written).
            FatalTransactionError: The producer is dead (not a timeout).
            ConfigError, ProcessingError, AbortLimitError: see :meth:`batch_failed`.
            StateError: The local store write after the Kafka commit failed.
        """
        if self.failed:
            raise RuntimeError("commit after the run failed")
        if not self.open:
            return True
        if self.settle is not None and not self.settle():
            return False
        batch = self.batch
        started = time.monotonic()
        self._attempts += 1
        attempt = self._attempts
        try:
            if self.time is not None:
                # (1b) the stream time of each partition that moved, into its store.
                self.time.flush()
            if self.stores is not None:
                # (1c) the stores' changelog: one record per key written, its last value.
                self.stores.flush_changelog()
        except ProduceError as exc:
            self.batch_failed(exc.kafka_error, f"writing the changelog failed: {exc}")
            return False
        try:
            # (1) outputs were produced while processing, the changelog just above.
            # (2) the positions join the transaction; (3) commit.
            self.guarantee.commit(
                batch.positions, self._consumer(), lambda: self.faults.before_commit(attempt)
            )
            self.faults.commit_returned(attempt)
        except AbortableTransactionError as exc:
            self.batch_failed(exc.kafka_error, f"commit failed: {exc}")
            return False
        except TransactionOutcomeUnknownError:
            self.failed = True
            if self.stores is not None:
                self.stores.abort()
            if self.time is not None:
                self.time.aborted()
            raise
        except FatalTransactionError as exc:
            self.fatal(exc)
            return False
        # (4) local stores: overlay + changelog checkpoint, one write per store partition.
        stores = self.stores
        if stores is not None:
            if stores.dirty:
                self._commits_with_writes += 1
                self.faults.after_kafka_commit(self._commits_with_writes)
            stores.commit(batch.positions)
        if self.time is not None:
            self.time.committed()
        self._committed(started)
        return True

    def _committed(self, started: float) -> None:
        batch = self.batch
        positions = batch.positions
        self.assignment.committed.update(positions)
        self.poison.committed(positions)
        self.outputs.committed(positions)
        sends = self.ctx.sends if self.ctx is not None else 0
        seconds = time.monotonic() - started
        self.stats.record_commit(batch.records, seconds, produced=sends - batch.sends_at_start)
        if batch.records:
            self.budget.progress()
            self.stats.consecutive_aborts = 0
        log.debug("committed %d records in %.1f ms", batch.records, 1000 * seconds)
        batch.clear()

    # -- abort ---------------------------------------------------------------

    def abort(
        self,
        kind: str,
        reason: str,
        unprocessed: Sequence[Any] = (),
        *,
        counted: bool = True,
        progress: bool = False,
    ) -> None:
        """Abort the open batch and rewind its partitions; then count the abort.

        Args:
            kind: The metric label (``eos_transaction_aborts_total{reason}``).
            reason: For the log.
            unprocessed: Consumed messages not processed yet (their partitions
                are rewound too).
            counted: Whether it counts towards ``max_aborts_without_progress``.
            progress: A record was newly blamed: start the count over, no wait.

        Raises:
            AbortLimitError: The limit was reached (the abort is complete).
            FatalTransactionError: The abort failed fatally and it was not a timeout.
        """
        self.stats.record_abort(kind)
        log.info("aborting transaction (%s): %s", kind, reason)
        try:
            self.guarantee.abort()
        except FatalTransactionError as exc:
            self.fatal(exc, unprocessed)
            return
        self._drop_batch(unprocessed)
        if progress:
            self.budget.progress()
        else:
            self.budget.aborted(f"{kind}: {reason}", counted=counted)
        self.stats.consecutive_aborts = self.budget.consecutive

    def _drop_batch(self, unprocessed: Sequence[Any]) -> None:
        """Drop overlays and failures, rewind, forget the batch."""
        if self.reset is not None:
            self.reset()
        if self.stores is not None:
            self.stores.abort()
        if self.time is not None:
            self.time.aborted()
        self.outputs.clear()
        if self.guarantee.rewinds:
            if self.order is not None:
                # Consumed, held back for timestamp order, not processed: rewound too.
                unprocessed = [*unprocessed, *self.order.take()]
            self._rewind(unprocessed)
        self.batch.clear()

    def _rewind(self, unprocessed: Sequence[Any]) -> None:
        """Seek every partition of the batch back to its first offset seen."""
        targets = self.batch.rewind_targets(unprocessed)
        consumer = self._consumer()
        done = []
        for tp, offset in sorted(targets.items()):
            if not self.assignment.ready(tp):
                continue  # revoked, or held back and seeked when it resumes
            try:
                consumer.seek(KafkaTopicPartition(tp[0], tp[1], offset))
            except KafkaException as exc:
                raise FatalTransactionError(
                    f"cannot rewind {tp[0]}[{tp[1]}] to {offset} after an abort ({exc}); "
                    "stopping so no record is skipped"
                ) from exc
            done.append(f"{tp[0]}[{tp[1]}]->{offset}")
        if done:
            log.info("rewound %s", ", ".join(done))

    def abandon(self) -> None:
        """The run failed: abort what is open, drop the overlays, never commit again.

        Bounded by the stop's grace period; never raises (the error that ended
        the run is what the caller reports).
        """
        self.failed = True
        try:
            if self.guarantee.in_transaction and not self.guarantee.dead:
                self.stats.record_abort("run_failed")
                log.info("aborting transaction (run_failed): the run ended with an error")
                self.guarantee.abort()
        except Exception as exc:
            log.warning("aborting the open transaction after the failure failed: %s", exc)
        if self.reset is not None:
            try:
                self.reset()
            except Exception as exc:
                log.warning("cancelling the records in flight after the failure failed: %s", exc)
        if self.stores is not None:
            self.stores.abort()
        if self.time is not None:
            self.time.aborted()
        self.batch.clear()

    def wait_backoff(self) -> None:
        """Wait out the backoff of the last abort (early on a stop request)."""
        if self.budget.until:
            self.budget.wait()
            self.budget.until = 0.0

    # -- failures ------------------------------------------------------------

    def batch_failed(
        self,
        failed: object,
        reason: str,
        unprocessed: Sequence[Any] = (),
        *,
        kind: str = "commit_failed",
    ) -> None:
        """The batch cannot commit: diagnose why, abort, and act on the cause.

        Args:
            failed: The error of the failed call (a ``KafkaError``), if any.
            reason: For the log.
            unprocessed: Consumed messages not processed yet.
            kind: The abort's metric label when the cause is not known yet.

        Raises:
            ConfigError: A topic is missing or an ACL denies the operation.
            ProcessingError: A record's dead-letter copy was rejected.
            AbortLimitError: Too many aborts without progress.
        """
        diagnosis = self.outputs.diagnose(failed)
        what = f"{reason} [{diagnosis.cause.value}: {diagnosis.describe()}]"
        if diagnosis.cause is Cause.FENCED and isinstance(diagnosis.error, KafkaError):
            self.fatal(ProducerFencedError(what, diagnosis.error), unprocessed)
            return
        if diagnosis.cause is Cause.CONFIG:
            self.abort("config_error", what, unprocessed, counted=False)
            raise ConfigError(self.config_message(diagnosis))
        if diagnosis.undeliverable:
            source, error = next(iter(diagnosis.undeliverable.items()))
            failure = self.undeliverable(source, error)
            self.abort("output_rejected", what, unprocessed, counted=False)
            raise failure
        if diagnosis.blamed:
            for source, error in diagnosis.blamed.items():
                self.poison.mark(
                    source, ProduceError(diagnosis.topic or "?", KafkaException(error))
                )
            first = next(iter(diagnosis.blamed))
            log.warning(
                "output of %d record(s) rejected by the broker (first %s[%d]@%d: %s); "
                "the policy %r applies to them on replay",
                len(diagnosis.blamed),
                *first,
                error_name(diagnosis.blamed[first]),
                self.config.processing_error_policy,
            )
            self.abort("output_rejected", what, unprocessed, progress=True)
            self.renew_after_rejection()
            return
        if diagnosis.cause is Cause.OUTAGE:
            self.abort("outage", what, unprocessed, counted=False)
            log.warning(
                "the cluster is unavailable (%s); retrying the batch in %.1fs",
                diagnosis.describe(),
                self.budget.delay(),
            )
            return
        if diagnosis.cause is Cause.REBALANCE:
            self.abort("rebalance", what, unprocessed, counted=False)
            return
        # A record may be to blame, or the cause is not known: replay the batch
        # with a delivery report per output to find out.
        self.outputs.replay_carefully(self.batch.positions)
        self.abort(kind, what, unprocessed)
        if isinstance(diagnosis.error, KafkaError) and (
            cause_of(diagnosis.error) is Cause.RECORD
            or diagnosis.error.code() == KafkaError.OUT_OF_ORDER_SEQUENCE_NUMBER
        ):
            self.renew_after_rejection()

    def renew_after_rejection(self) -> None:
        """After a permanently rejected message: a new producer closes the sequence gap.

        librdkafka only closes the gap with an epoch bump, which it does on the
        NEXT transaction's failure (OUT_OF_ORDER_SEQUENCE_NUMBER "requires
        epoch bump"), wasting one more abort; ``init_transactions`` of a new
        producer bumps the epoch now. Without transactions nothing is needed.
        """
        if self.guarantee.transactional:
            self.guarantee.renew()

    def _settle_outcome(self, targets: dict[TP, int]) -> None:
        """After a renewal: what became of the failed transaction, from the group's offsets.

        A fatal error says nothing of a commit's outcome: librdkafka reports
        "commit succeeded on the broker but the transaction had already failed
        locally" as fatal, an abort after a commit that did go through fails
        fatally, and a retried ``EndTxn`` can meet an epoch bumped after a
        coordinator moved. The new producer's ``init_transactions`` has
        resolved the transaction (completed or aborted it), and its offsets
        went with it. So where the group's committed offset of a partition now
        lies past where the batch started (``targets``), the transaction
        committed after all: the partition resumes there instead of redoing the
        batch (which would write its outputs twice), and its stores, which
        dropped the batch's writes, are restored again from their changelog
        (which holds them). If the offsets cannot be read the batch is redone,
        as before.
        """
        consumer = self.consumer
        tps = [tp for tp in sorted(targets) if self.assignment.ready(tp)]
        if consumer is None or not tps:
            return
        timeout_s = min(self.config.transaction_timeout_ms / 1000.0, _SETTLE_TIMEOUT_S)
        try:
            found = consumer.committed(
                [KafkaTopicPartition(t, p) for t, p in tps], timeout=timeout_s
            )
        except KafkaException as exc:
            log.warning(
                "reading the group's committed offsets after the renewal failed (%s): "
                "redoing the batch from where it started",
                exc,
            )
            return
        moved: dict[TP, int] = {}
        for part in found:
            tp = (part.topic, part.partition)
            if part.error is None and tp in targets and part.offset > targets[tp]:
                moved[tp] = part.offset
        if not moved:
            return  # aborted, as reported: the rewind stands
        log.warning(
            "the transaction reported as failed had committed: the group's offsets moved "
            "past where the batch started (%s); resuming there instead of redoing it",
            ", ".join(f"{t}[{p}] {targets[(t, p)]}->{o}" for (t, p), o in sorted(moved.items())),
        )
        for (topic, partition), offset in sorted(moved.items()):
            consumer.seek(KafkaTopicPartition(topic, partition, offset))
            self.assignment.committed[(topic, partition)] = offset
        if self.stores is not None and self.restore_again is not None:
            self.restore_again(sorted(moved))

    def fatal(self, exc: FatalTransactionError, unprocessed: Sequence[Any] = ()) -> None:
        """The producer failed fatally: recover when no other instance can be involved, else stop.

        - Fenced (``PRODUCER_FENCED``, ``INVALID_PRODUCER_EPOCH``) while the
          transaction was younger than ``transaction.timeout.ms``: another
          instance took over this transactional.id. Stop.
        - Fenced after the transaction outlived ``transaction.timeout.ms``: the
          broker aborted it and bumped the epoch itself (an outage held it).
        - Any other fatal error (``INVALID_TXN_STATE`` after a transaction
          coordinator moved, for example) says nothing about another instance:
          a second holder of the transactional.id fences, it does not do that.

        In the last two cases a new producer with the same transactional.id
        (``init_transactions`` bumps the epoch and resolves what is left) takes
        over and the batch is redone in process, unless the group's committed
        offsets show that the transaction committed after all
        (:meth:`_settle_outcome`); such a renewal counts towards
        ``max_aborts_without_progress`` unless it was a timed-out transaction.

        Raises:
            ConfigError: The transactional id is not authorized.
            FatalTransactionError: Fenced by another instance, or a stop was requested.
        """
        timeout_s = self.config.transaction_timeout_ms / 1000.0
        age = self.guarantee.transaction_age()
        error = exc.kafka_error
        cause = cause_of(error) if isinstance(error, KafkaError) else None
        timed_out = cause is Cause.FENCED and age >= timeout_s
        stuck = isinstance(exc, ProducerStuckError)
        recoverable = (
            self.guarantee.transactional
            and isinstance(error, KafkaError)
            and cause is not Cause.CONFIG
            and (timed_out or cause is not Cause.FENCED)
            and not self.stop.is_set()
        )
        if recoverable:
            if timed_out:
                log.warning(
                    "the transaction was open for %.1fs, longer than transaction.timeout.ms "
                    "(%d): the broker aborted it and bumped the producer epoch (%s). No other "
                    "instance is involved; starting a new producer with the same "
                    "transactional.id and redoing the batch",
                    age,
                    self.config.transaction_timeout_ms,
                    exc,
                )
            elif stuck:
                log.warning(
                    "%s (librdkafka#5456: its group coordinator is gone or unreachable); "
                    "starting a new producer with the same transactional.id, which fences "
                    "the stuck one, and redoing the batch",
                    exc,
                )
            else:
                log.warning(
                    "the producer failed fatally (%s) without being fenced by another "
                    "instance; starting a new producer with the same transactional.id and "
                    "redoing the batch",
                    exc,
                )
            kind = (
                "transaction_timeout"
                if timed_out
                else "producer_stuck"
                if stuck
                else "producer_failed"
            )
            self.stats.record_abort(kind)
            targets = self.batch.rewind_targets(unprocessed)
            # Only a commit or an abort may have ended the transaction otherwise than
            # reported; a failure before either left it open, and the renewal aborts it.
            ended = self.guarantee.ending
            self._drop_batch(unprocessed)
            self.guarantee.renew()
            if ended:
                self._settle_outcome(targets)
            self.budget.aborted(f"{kind}: {exc}", counted=not (timed_out or stuck))
            self.stats.consecutive_aborts = self.budget.consecutive
            return
        self.failed = True
        if self.stores is not None:
            self.stores.abort()
        if self.time is not None:
            self.time.aborted()
        self.batch.clear()
        if isinstance(exc, ProducerFencedError):
            self.stats.fenced += 1
        if cause is Cause.CONFIG and isinstance(error, KafkaError):
            raise ConfigError(
                self.config_message(Diagnosis(Cause.CONFIG, error)), "transactional.id"
            ) from exc
        raise exc

    def undeliverable(self, source: Source, error: KafkaError) -> ProcessingError:
        """The error for a record whose dead-letter copy can never be written."""
        topic, partition, offset = source
        cause = self.outputs.dead_letter_reason(source)
        return ProcessingError(
            f"record {topic}[{partition}]@{offset} failed"
            + (f" ({type(cause).__name__}: {cause})" if cause is not None else "")
            + f" and could not be dead-lettered to {self.config.dead_letter_topic!r}: "
            f"{error_name(error)}. Nothing of its batch was committed. Raise the producer's "
            "message.max.bytes and the dead-letter topic's max.message.bytes, or choose "
            "processing_error_policy='skip'",
            topic=topic,
            partition=partition,
            offset=offset,
            cause=cause if cause is not None else KafkaException(error),
        )

    def config_message(self, diagnosis: Diagnosis) -> str:
        """An error message naming the resource, the operation and the fix."""
        error = diagnosis.error
        name = error_name(error)
        code = error.code() if isinstance(error, KafkaError) else None
        topic = diagnosis.topic or "(unknown topic)"
        group = self.config.application_id
        if code == KafkaError.GROUP_AUTHORIZATION_FAILED:
            return (
                f"committing offsets for consumer group {group!r} was denied ({name}); grant the "
                f"application's principal READ on Group:{group}"
            )
        if code == KafkaError.TRANSACTIONAL_ID_AUTHORIZATION_FAILED:
            tid = self.config.transactional_id
            return (
                f"using transactional id {tid!r} was denied ({name}); grant the application's "
                f"principal WRITE and DESCRIBE on TransactionalId:{tid}"
            )
        if code == KafkaError.CLUSTER_AUTHORIZATION_FAILED:
            return (
                f"a cluster operation was denied ({name}); grant the application's principal "
                "IDEMPOTENT_WRITE on the Cluster (older brokers) or WRITE on its output topics"
            )
        if code == KafkaError.TOPIC_AUTHORIZATION_FAILED:
            return (
                f"writing to topic {topic!r} was denied ({name}); grant the application's "
                f"principal WRITE on Topic:{topic}"
            )
        if code in (KafkaError.UNKNOWN_TOPIC_OR_PART, KafkaError._UNKNOWN_TOPIC):
            return (
                f"producing to topic {topic!r} failed: the topic does not exist ({name}); "
                "create it (eos creates only its changelog and dead-letter topics)"
            )
        if code == KafkaError._UNKNOWN_PARTITION:
            return f"producing to topic {topic!r} failed: no such partition ({name})"
        return f"producing to topic {topic!r} failed: {name}"
