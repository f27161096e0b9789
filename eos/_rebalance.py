"""The consumer's rebalance listener (its callbacks run inside ``consumer.consume()``).

- assign: the new partitions are assigned here and, if they have state
  stores, paused at once; the engine restores their stores between polls
  (:meth:`eos.engine.Engine` calls :meth:`RebalanceListener.restore_step`),
  one bounded step at a time, while the other partitions keep processing and
  committing. Nothing slow runs in the callback, so no transaction is held
  open by a restore, however long it takes, and ``max.poll.interval.ms`` is
  never at risk. ``Processor.on_assign`` runs for a partition once its stores
  are restored.
- revoke: the open batch is committed before the partitions go (aborted and
  rewound if that fails; aborted, never committed, after the run failed);
  then their stores close and ``Processor.on_revoke`` runs.
- lost: the batch is aborted; the partitions are no longer ours.

Threading: the processing thread only.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING

from confluent_kafka import Consumer, KafkaException
from confluent_kafka import TopicPartition as KafkaTopicPartition

from eos._batch import TP, Assignment, Batch, Poison
from eos._committer import Committer, Rewound
from eos._outputs import Outputs
from eos.processor import name_of
from eos.record import TopicPartition
from eos.stats import EngineStats

if TYPE_CHECKING:
    from eos._order import TimestampOrder
    from eos._time import TimeKeeper
    from eos.processor import Context, Processor
    from eos.state.manager import StoreManager

__all__ = ["RebalanceListener"]

log = logging.getLogger("eos.engine")

RESTORE_STEP_S = 0.2
"""Longest a restore step runs between two polls of the group consumer."""


def _fmt(tps: Iterable[TP]) -> str:
    return ", ".join(f"{t}[{p}]" for t, p in sorted(tps)) or "nothing"


class RebalanceListener:
    """Rebalance callbacks and the restore of newly assigned partitions.

    Args:
        cooperative: Whether the group uses incremental (cooperative) assignment.
        assignment: What this instance owns.
        batch: The open batch.
        poison: Poison bookkeeping (dropped with revoked partitions).
        outputs: Careful-replay bookkeeping (dropped with revoked partitions).
        committer: Commits or aborts the batch before partitions go.
        processor: The user's processor (``on_assign``/``on_revoke``).
        stats: Counters.
    """

    def __init__(
        self,
        *,
        cooperative: bool,
        assignment: Assignment,
        batch: Batch,
        poison: Poison,
        outputs: Outputs,
        committer: Committer,
        processor: Processor,
        stats: EngineStats,
    ) -> None:
        self.cooperative = cooperative
        self.assignment = assignment
        self.batch = batch
        self.poison = poison
        self.outputs = outputs
        self.committer = committer
        self.processor = processor
        self.stats = stats
        self.stores: StoreManager | None = None
        self.time: TimeKeeper | None = None
        self.ctx: Context | None = None
        self.consumer: Consumer | None = None
        self.order: TimestampOrder | None = None
        self._lag_checked = 0.0
        # Partitions restored again in place (restore_again): still assigned, so the
        # processor's on_assign does not run for them a second time.
        self._again: set[TP] = set()

    # -- callbacks -------------------------------------------------------------

    def on_assign(self, consumer: Consumer, partitions: list[KafkaTopicPartition]) -> None:
        """Assign; pause the partitions whose stores need restoring; ``on_assign`` the rest."""
        tps = [(p.topic, p.partition) for p in partitions]
        self.stats.rebalances += 1
        if self.cooperative:
            consumer.incremental_assign(partitions)
        else:
            consumer.assign(partitions)
        self.assignment.assigned.update(tps)
        restoring: list[TP] = []
        if self.stores is not None and tps:
            restoring = self.stores.assign(tps)
        if restoring:
            consumer.pause([KafkaTopicPartition(t, p) for t, p in restoring])
            self.assignment.restoring.update(restoring)
        log.info(
            "assigned %s%s",
            _fmt(tps),
            f" (restoring the stores of {_fmt(restoring)} first)" if restoring else "",
        )
        ready = [tp for tp in tps if tp not in self.assignment.restoring]
        self._publish()
        self._on_assign(ready)

    def on_revoke(self, consumer: Consumer, partitions: list[KafkaTopicPartition]) -> None:
        """Commit the open batch (abort it after a failure), then release the partitions."""
        tps = [(p.topic, p.partition) for p in partitions]
        log.info("revoking %s", _fmt(tps))
        self.assignment.leaving.update(tps)
        try:
            if self.committer.open:
                if self.committer.failed or self.committer.guarantee.dead:
                    self.committer.abandon()
                else:
                    self.committer.commit()
        except Rewound:
            pass
        finally:
            self._release(tps)

    def on_lost(self, consumer: Consumer, partitions: list[KafkaTopicPartition]) -> None:
        """The partitions are gone already: abort the batch, release them."""
        tps = [(p.topic, p.partition) for p in partitions]
        log.info("lost %s", _fmt(tps))
        self.assignment.leaving.update(tps)
        try:
            if self.committer.open and not self.committer.failed:
                self.committer.abort("partitions_lost", "partitions lost", counted=False)
            elif self.committer.open:
                self.committer.abandon()
        except Rewound:
            pass
        finally:
            self._release(tps)

    # -- restore -----------------------------------------------------------------

    def restore_again(self, tps: list[TP]) -> None:
        """Restore the stores of ``tps`` again from their checkpoints, in place.

        For a transaction reported as failed that had committed: the stores
        dropped its writes, which its changelog holds. The partitions stay
        assigned; they are paused until the restore is done, as on assignment.
        """
        stores = self.stores
        consumer = self.consumer
        # A store partition serves every input topic with its partition number: all of
        # them are closed, so that it is, and restored again.
        numbers = {partition for _, partition in tps}
        tps = sorted(tp for tp in self.assignment.assigned if tp[1] in numbers)
        if stores is None or consumer is None or not tps:
            return
        stores.close(tps)
        restoring = stores.assign(tps)
        if restoring:
            consumer.pause([KafkaTopicPartition(t, p) for t, p in restoring])
            self.assignment.restoring.update(restoring)
            self._again.update(restoring)
        log.info("restoring the stores of %s again", _fmt(restoring))
        self._publish()

    @property
    def restoring(self) -> bool:
        """Whether some assigned partition waits for its stores."""
        return bool(self.assignment.restoring)

    def restore_step(self) -> None:
        """Restore for up to :data:`RESTORE_STEP_S`; resume the partitions that are done."""
        stores = self.stores
        consumer = self.consumer
        if stores is None or consumer is None:
            return
        done = set(stores.restore_step(RESTORE_STEP_S))
        ready = sorted(tp for tp in self.assignment.restoring if tp[1] in done)
        if not ready:
            return
        for tp in ready:
            self.assignment.restoring.discard(tp)
            offset = self.assignment.skipped.pop(tp, None)
            if offset is not None:
                # Records consumed before the pause took effect were not processed.
                consumer.seek(KafkaTopicPartition(tp[0], tp[1], offset))
        consumer.resume([KafkaTopicPartition(t, p) for t, p in ready])
        log.info("restored the stores of %s; processing them", _fmt(ready))
        self._publish()
        again = [tp for tp in ready if tp in self._again]
        self._again.difference_update(again)
        if again and self.time is not None:
            self.time.assigned(again)  # their stream time as the restored stores hold it
        self._on_assign([tp for tp in ready if tp not in again])

    def _publish(self) -> None:
        """Show the assignment in ``app.state`` (and the run state while restoring)."""
        self.stats.assigned = sorted(self.assignment.assigned)
        self.stats.restoring = sorted(self.assignment.restoring)
        if self.assignment.restoring and self.stats.state == "running":
            self.stats.state = "restoring"
        elif not self.assignment.restoring and self.stats.state == "restoring":
            self.stats.state = "running"

    def _on_assign(self, tps: list[TP]) -> None:
        """Partitions ready to process: load their stream time, then ``Processor.on_assign``."""
        if tps and self.time is not None:
            self.time.assigned(tps)
        if tps and self.ctx is not None:
            self.ctx.call_on_assign(self.processor, [TopicPartition(t, p) for t, p in tps])

    # -- release -----------------------------------------------------------------

    def release_all(self) -> None:
        """Release every assigned partition (the consumer is being replaced)."""
        self._release(sorted(self.assignment.assigned))

    def _release(self, tps: list[TP]) -> None:
        """Close stores, ``on_revoke``, forget the partitions: every step runs, even if one fails.

        After a failed run the errors are logged (the run's own error is what
        counts); otherwise the first one is raised once everything ran.
        """
        if not tps:
            return
        self._again.difference_update(tps)
        ready = [
            tp
            for tp in tps
            if tp in self.assignment.assigned and tp not in self.assignment.restoring
        ]
        steps: list[tuple[str, Callable[[], object]]] = []
        if self.time is not None:
            keeper = self.time
            steps.append(("forgetting their time", lambda: keeper.revoked(tps)))
        if self.stores is not None:
            stores = self.stores
            steps.append(("closing their stores", lambda: stores.close(tps)))
        if ready:
            revoked = [TopicPartition(t, p) for t, p in ready]
            steps.append(
                (
                    f"{name_of(self.processor)}.on_revoke",
                    lambda: self.processor.on_revoke(revoked),
                )
            )
        first: BaseException | None = None
        for what, step in steps:
            try:
                step()
            except Exception as exc:
                if self.committer.failed:
                    log.warning("releasing %s: %s failed: %s", _fmt(tps), what, exc)
                elif first is None:
                    first = exc
        if self.order is not None:
            self.order.drop(tps)
        self.stats.drop_partitions(tps)
        self.assignment.drop(tps)
        self.batch.drop(tps)
        self.poison.drop(tps)
        self.outputs.drop(tps)
        self._publish()
        if first is not None:
            raise first

    # -- lag -------------------------------------------------------------------

    def refresh_lag(self, now: float, *, force: bool = False) -> None:
        """Per-partition end and committed offsets for the lag gauge (no broker call).

        At most every 0.5 s, unless ``force`` (after a commit).
        """
        if (not force and now - self._lag_checked < 0.5) or self.consumer is None:
            return
        self._lag_checked = now
        consumer = self.consumer
        committed = self.assignment.committed
        for topic, partition in list(self.assignment.assigned):
            tp = KafkaTopicPartition(topic, partition)
            try:
                _low, high = consumer.get_watermark_offsets(tp, cached=True)
                position = committed.get((topic, partition))
                if position is None:
                    # Nothing committed by this instance yet: the consumer's
                    # position is the group's committed offset until it processes.
                    position = self.batch.first_seen.get((topic, partition))
                    if position is None:
                        (current,) = consumer.position([tp])
                        position = current.offset if current.offset >= 0 else None
            except KafkaException:
                continue
            self.stats.set_partition(topic, partition, high, position)
