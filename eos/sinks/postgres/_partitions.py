"""What the sink owns: assigned partitions, claimed epochs, the positions to process from.

A partition is in one of three states:

- **pending**: assigned (or rewound after a rollback) and paused; its claim
  or its committed position must be read from the offsets table first;
- **held**: its epoch is claimed and the consumer is positioned at the
  offset the table holds; its records are processed;
- **fenced**: the table shows a newer epoch (another instance claimed it):
  paused and never processed again until the group assigns it anew.

:meth:`SinkPartitions.settle` moves pending partitions to held (one
database transaction for all of them) or to fenced.

Threading: the processing thread only (rebalance callbacks run there too).
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from typing import Any

from confluent_kafka import OFFSET_BEGINNING, OFFSET_END, Consumer
from confluent_kafka import TopicPartition as KafkaTopicPartition

from eos._batch import TP
from eos.sinks.postgres._offsets import Claim, OffsetsTable
from eos.stats import EngineStats

__all__ = ["SinkPartitions"]

log = logging.getLogger("eos.sinks.postgres")

_LATEST = frozenset({"latest", "largest", "end"})


def _fmt(tps: Iterable[TP]) -> str:
    return ", ".join(f"{t}[{p}]" for t, p in sorted(tps)) or "none"


def _kafka(tps: Iterable[TP]) -> list[KafkaTopicPartition]:
    return [KafkaTopicPartition(t, p) for t, p in sorted(tps)]


class SinkPartitions:
    """The partitions of one sink instance; see the module docstring.

    Args:
        offsets: The offsets table's statements.
        stats: Counters (assignment, fenced).
        auto_offset_reset: The consumer's setting: where a partition with no
            committed position starts.
    """

    def __init__(self, offsets: OffsetsTable, stats: EngineStats, auto_offset_reset: str) -> None:
        self.offsets = offsets
        self.stats = stats
        self.start = OFFSET_END if auto_offset_reset.lower() in _LATEST else OFFSET_BEGINNING
        self.consumer: Consumer | None = None
        self.assigned: set[TP] = set()
        self.pending: set[TP] = set()
        self.fenced: set[TP] = set()
        self.epochs: dict[TP, int] = {}
        """Held partitions (and pending ones re-read after a rollback): the epoch claimed."""
        self.committed: dict[TP, int] = {}
        """The next offset the offsets table holds, per held partition (absent: none yet)."""

    def _consumer(self) -> Consumer:
        if self.consumer is None:
            raise RuntimeError("the sink has no consumer yet")
        return self.consumer

    @property
    def held(self) -> bool:
        """Whether some partition may be processed."""
        return len(self.epochs) > len(self.pending)

    def ready(self, tp: TP) -> bool:
        """Whether ``tp``'s records may be processed now."""
        return tp in self.epochs and tp not in self.pending

    # -- the group's decisions ---------------------------------------------

    def assign(self, tps: list[TP]) -> None:
        """Newly assigned (already assigned to the consumer): pause them until claimed."""
        self._consumer().pause(_kafka(tps))
        for tp in tps:
            self.epochs.pop(tp, None)  # a new assignment always claims anew
            self.committed.pop(tp, None)
            self.fenced.discard(tp)
        self.assigned.update(tps)
        self.pending.update(tps)
        self._publish()
        log.info("assigned %s (claiming them in the offsets table first)", _fmt(tps))

    def release(self, tps: Iterable[TP]) -> None:
        """Revoked or lost: forget everything about them."""
        tps = list(tps)
        for tp in tps:
            self.assigned.discard(tp)
            self.pending.discard(tp)
            self.fenced.discard(tp)
            self.epochs.pop(tp, None)
            self.committed.pop(tp, None)
        self.stats.drop_partitions(tps)
        self._publish()

    def rewind(self) -> None:
        """After a rollback: pause every held partition until its committed position is re-read."""
        held = [tp for tp in self.epochs if tp not in self.pending]
        if not held:
            return
        self._consumer().pause(_kafka(held))
        self.pending.update(held)

    def _publish(self) -> None:
        self.stats.assigned = sorted(self.assigned)

    # -- the offsets table --------------------------------------------------

    def settle(self, cur: Any) -> tuple[dict[TP, Claim], dict[TP, Claim]]:
        """In the caller's transaction: claim the new pending partitions, re-read the others.

        Returns ``(claimed, current)``; :meth:`settled` applies them once the
        transaction committed.
        """
        pending = sorted(self.pending)
        again = [tp for tp in pending if tp in self.epochs]
        fresh = [tp for tp in pending if tp not in self.epochs]
        current = self.offsets.read(cur, again) if again else {}
        claimed = self.offsets.claim(cur, fresh) if fresh else {}
        return claimed, current

    def settled(self, claimed: dict[TP, Claim], current: dict[TP, Claim]) -> list[TP]:
        """Position and resume what was claimed or re-read; fence what another instance took.

        Returns the partitions found fenced.
        """
        consumer = self._consumer()
        fenced: list[TP] = []
        resumed: list[TP] = []
        for tp in sorted(self.pending):
            if tp in claimed:
                next_offset, epoch = claimed[tp]
            elif tp in current and current[tp][1] == self.epochs.get(tp):
                next_offset, epoch = current[tp]
            elif tp in self.epochs:
                fenced.append(tp)
                continue
            else:
                continue  # not in this transaction's view (assigned meanwhile): next time
            self.epochs[tp] = epoch
            if next_offset is None:
                self.committed.pop(tp, None)
                position = self.start
            else:
                self.committed[tp] = next_offset
                position = next_offset
            consumer.seek(KafkaTopicPartition(tp[0], tp[1], position))
            resumed.append(tp)
        if fenced:
            self.fence(fenced, "its epoch in the offsets table moved on")
        self.pending.difference_update(resumed)
        if resumed:
            consumer.resume(_kafka(resumed))
            log.info(
                "processing %s from %s",
                _fmt(resumed),
                ", ".join(
                    f"{t}[{p}]@{self.committed.get((t, p), 'start')} (epoch {self.epochs[(t, p)]})"
                    for t, p in resumed
                ),
            )
        return fenced

    def fence(self, tps: Iterable[TP], why: str) -> None:
        """Another instance claimed ``tps``: never process them again unless assigned anew."""
        tps = sorted(tps)
        for tp in tps:
            self.epochs.pop(tp, None)
            self.committed.pop(tp, None)
            self.pending.discard(tp)
            self.fenced.add(tp)
        if tps:
            self._consumer().pause(_kafka(tps))
            self.stats.fenced += 1
            log.warning(
                "partitions %s were claimed by another instance (%s): this instance wrote "
                "nothing of them since and drops them until the group assigns them again",
                _fmt(tps),
                why,
            )
