"""The engine's rebalance callbacks (they run inside ``consumer.consume()``).

- assign: fetch committed offsets, open and restore stores, ``on_assign``;
- revoke: commit the open transaction first (abort and rewind if that fails);
- lost: abort, the partitions are no longer ours.

These are :class:`~eos.engine.Engine` methods, kept in their own module.
"""

from __future__ import annotations

import logging
import time

from confluent_kafka import OFFSET_INVALID, Consumer, KafkaException
from confluent_kafka import TopicPartition as KafkaTopicPartition

from eos._engine_base import TP, EngineBase
from eos.record import TopicPartition

log = logging.getLogger("eos.engine")


class Rebalancing(EngineBase):
    """Engine methods called by the consumer on assignment changes."""

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
        if (self._positions or self._in_txn) and (self._txn is None or not self._txn.dead):
            self._commit()
        self._release(tps)

    def _on_lost(self, consumer: Consumer, partitions: list[KafkaTopicPartition]) -> None:
        tps = [(p.topic, p.partition) for p in partitions]
        log.info("lost %s", _fmt(tps))
        if self._in_txn or self._positions:
            self._fail_batch("partitions_lost", "partitions lost", (), 0, reraise=False)
        self._release(tps)

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


def _fmt(tps: list[TP]) -> str:
    return ", ".join(f"{t}[{p}]" for t, p in sorted(tps)) or "nothing"
