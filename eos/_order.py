"""Timestamp order across co-partitioned topics: a table is current at a record's time.

When a stream is joined with a table, partition ``p`` of the stream topic and
partition ``p`` of the table topic are processed by one instance, and the
order in which their records are processed decides which customer record an
order is joined with. The consumer hands records out in runs of one partition
as they were fetched; :class:`TimestampOrder` holds the records of those
topics back in one buffer per partition and hands them to the engine in
timestamp order across the partitions of one partition number, as a Kafka
Streams task does (its ``PartitionGroup``): the record with the smallest
timestamp at the head of a buffer goes first, a table's record before a
stream's on equal timestamps (an order sees the customer record written at
the same millisecond).

A record can only be put in order when every partition of its number has a
record buffered. When one has none:

- it has not been read to its end yet (the consumer has not reported
  ``_PARTITION_EOF`` for it since its last record): wait, the fetch is on
  its way; after :data:`LAG_WAIT_S` without it, go on with a warning;
- it is read to its end: wait ``max_task_idle_ms`` more (0, the default: do
  not wait; -1: never wait at all, even for a fetch), for a producer
  that is a little behind, then go on without it.

A buffer never grows past :data:`MAX_BUFFERED` records: its partition is
paused until the buffer is half empty (librdkafka then fetches again from
the record after the last one handed out, so nothing is lost).

Failure paths: buffered records are not processed, so no offset past them is
committed. After an abort the committer takes them (:meth:`take`) with the
batch's own records and seeks every partition back to its first record not
committed; a revoked partition's buffer is dropped (:meth:`drop`): its new
owner starts at the committed offset.

Threading: the engine's processing thread only.
"""

from __future__ import annotations

import logging
import time
from collections import deque
from collections.abc import Iterable, Sequence
from typing import Any

from confluent_kafka import Consumer, KafkaError
from confluent_kafka import TopicPartition as KafkaTopicPartition

from eos._batch import TP, Assignment

__all__ = ["LAG_WAIT_S", "MAX_BUFFERED", "TimestampOrder"]

log = logging.getLogger("eos.engine")

MAX_BUFFERED = 20_000
"""Records buffered per partition before it is paused."""
LAG_WAIT_S = 30.0
"""Longest wait for a partition that is behind but returns nothing."""
_EOF = KafkaError._PARTITION_EOF


class TimestampOrder:
    """Buffers the records of ``topics`` and releases them in timestamp order per partition number.

    Args:
        topics: The co-partitioned topics to order (stream and table topics).
        tables: The table topics among them (first on equal timestamps).
        idle_ms: ``max_task_idle_ms``: the extra wait for a partition read to
            its end; -1 never waits.
        assignment: What this instance owns (only ready partitions are held).
    """

    def __init__(
        self,
        topics: Iterable[str],
        tables: Iterable[str],
        idle_ms: int,
        assignment: Assignment,
    ) -> None:
        self.topics = frozenset(topics)
        self._rank = {t: (0 if t in set(tables) else 1) for t in self.topics}
        self._idle_s = idle_ms / 1000.0
        self._never_wait = idle_ms < 0
        self._assignment = assignment
        self._buffers: dict[TP, deque[Any]] = {}
        self._read_to_end: set[TP] = set()
        self._blocked_since: dict[int, float] = {}
        self._warned: set[int] = set()
        self._paused: set[TP] = set()
        self.consumer: Consumer | None = None

    def __repr__(self) -> str:
        sizes = {f"{t}[{p}]": len(b) for (t, p), b in self._buffers.items() if b}
        return f"TimestampOrder(buffered={sizes}, paused={sorted(self._paused)})"

    @property
    def buffered(self) -> int:
        """Records held back now."""
        return sum(len(b) for b in self._buffers.values())

    def arrange(self, messages: Sequence[Any]) -> list[Any]:
        """Take ``messages`` in; return what may be processed now, in order.

        Records of other topics and error events pass straight through
        (``_PARTITION_EOF`` events of the ordered topics are consumed here).
        """
        out: list[Any] = []
        buffers = self._buffers
        topics = self.topics
        ready = self._assignment.ready
        touched: set[int] = set()
        for msg in messages:
            topic = msg.topic()
            error = msg.error()
            if error is not None:
                if error.code() == _EOF and topic in topics:
                    self._read_to_end.add((topic, msg.partition()))
                    touched.add(msg.partition())
                else:
                    out.append(msg)
                continue
            tp = (topic, msg.partition())
            if topic not in topics or not ready(tp):
                out.append(msg)  # the engine holds back records of a restoring partition
                continue
            self._read_to_end.discard(tp)
            buffer = buffers.get(tp)
            if buffer is None:
                buffer = buffers[tp] = deque()
            buffer.append(msg)
            touched.add(tp[1])
        waiting = {p for p in self._blocked_since}
        for partition in sorted(touched | waiting):
            self._release(partition, out)
        self._pause_full()
        return out

    def _release(self, partition: int, out: list[Any]) -> None:
        """Move the records of ``partition`` that are in order to ``out``."""
        buffers = self._buffers
        members = [
            tp
            for tp in self._assignment.assigned
            if tp[1] == partition and tp[0] in self.topics and self._assignment.ready(tp)
        ]
        if not members:
            self._blocked_since.pop(partition, None)
            return
        queues = [(self._rank[tp[0]], buffers.setdefault(tp, deque()), tp) for tp in members]
        while True:
            full = [q for q in queues if q[1]]
            if not full:
                self._blocked_since.pop(partition, None)
                return
            if len(full) < len(queues) and not self._may_go_on(
                partition, [q[2] for q in queues if not q[1]]
            ):
                return
            if len(full) == len(queues):
                self._blocked_since.pop(partition, None)
            best = min(full, key=lambda q: (q[1][0].timestamp()[1], q[0]))
            out.append(best[1].popleft())

    def _may_go_on(self, partition: int, empty: list[TP]) -> bool:
        """Whether ``partition`` may go on without records of its ``empty`` partitions."""
        if self._never_wait:
            return True
        now = time.monotonic()
        since = self._blocked_since.setdefault(partition, now)
        behind = [tp for tp in empty if tp not in self._read_to_end and not self._at_end(tp)]
        if behind:
            if now - since < LAG_WAIT_S:
                return False
            if partition not in self._warned:
                self._warned.add(partition)
                log.warning(
                    "%s returned no records for %.0fs although not read to its end; "
                    "processing partition %d without it (records may be out of timestamp "
                    "order across the joined topics)",
                    ", ".join(f"{t}[{p}]" for t, p in behind),
                    now - since,
                    partition,
                )
            return True
        return now - since >= self._idle_s

    def _at_end(self, tp: TP) -> bool:
        """Whether the consumer's position is at ``tp``'s last known end (no broker call).

        The position moves past transaction markers, so after the last
        committed record it equals the high watermark.
        """
        consumer = self.consumer
        if consumer is None:
            return False
        ktp = KafkaTopicPartition(tp[0], tp[1])
        try:
            position = consumer.position([ktp])[0].offset
            _low, high = consumer.get_watermark_offsets(ktp, cached=True)
        except Exception:  # unknown yet: the fetch will tell
            return False
        if high >= 0 and position >= high:
            self._read_to_end.add(tp)
            return True
        return False

    def _pause_full(self) -> None:
        consumer = self.consumer
        if consumer is None:
            return
        full = [tp for tp, b in self._buffers.items() if len(b) >= MAX_BUFFERED]
        pause = [tp for tp in full if tp not in self._paused]
        if pause:
            consumer.pause([KafkaTopicPartition(t, p) for t, p in pause])
            self._paused.update(pause)
        drained = [tp for tp in self._paused if len(self._buffers.get(tp, ())) <= MAX_BUFFERED // 2]
        if drained:
            self._resume(drained)

    def _resume(self, tps: list[TP]) -> None:
        self._paused.difference_update(tps)
        consumer = self.consumer
        live = [tp for tp in tps if tp in self._assignment.assigned]
        if consumer is not None and live:
            consumer.resume([KafkaTopicPartition(t, p) for t, p in live])

    def take(self) -> list[Any]:
        """Every buffered record, in offset order per partition; the buffers empty.

        For the rewind after an abort: the partitions are seeked back to their
        first record not committed, buffered ones included.
        """
        taken = [msg for buffer in self._buffers.values() for msg in buffer]
        self._buffers.clear()
        self._read_to_end.clear()
        self._blocked_since.clear()
        if self._paused:
            self._resume(sorted(self._paused))
        return taken

    def drop(self, tps: Iterable[TP]) -> None:
        """Forget partitions that left this instance (their records are someone else's)."""
        for tp in tps:
            self._buffers.pop(tp, None)
            self._read_to_end.discard(tp)
            self._paused.discard(tp)
            self._blocked_since.pop(tp[1], None)
