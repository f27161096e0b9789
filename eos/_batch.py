"""The open batch and the instance's assignment: plain state, no Kafka calls.

:class:`Batch` is what was processed since the last commit: per input
partition the next offset to commit and the first offset seen (where a rewind
goes back to), the record count and when the batch started.

:class:`Assignment` is what this instance owns: the assigned input
partitions, those still paused while their stores restore, and the last
committed position of each (for the lag gauge).

Why the first offset seen is the rewind target, not an offset fetched from
the group: after a commit at position ``P`` the next record of a partition
has offset ``P`` or more, and every offset in between is a transaction marker
or an aborted record that a ``read_committed`` consumer never returns. So
seeking back to the first offset seen re-reads exactly what the aborted batch
read, without a broker round trip (and without ``committed()``, which blocks
while a dead former owner's transactional offsets are pending).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterable, Sequence
from typing import Any

__all__ = ["TP", "Assignment", "Batch", "Poison", "Source", "redelivered"]

log = logging.getLogger("eos.engine")

TP = tuple[str, int]
"""An input ``(topic, partition)``."""
Source = tuple[str, int, int]
"""An input record's ``(topic, partition, offset)``."""


class Batch:
    """Input records processed since the last commit.

    Attributes:
        positions: Per partition, the offset after the last processed record
            (what the commit sends).
        first_seen: Per partition, the offset of the first record processed
            since the last commit (where an abort rewinds to).
        records: Records processed (including skipped and dead-lettered ones).
        started: ``time.monotonic()`` when the batch's first records arrived.
        sends_at_start: The context's send count when the batch started, so
            the commit can count the outputs it made visible.
    """

    __slots__ = ("first_seen", "positions", "records", "sends_at_start", "started")

    def __init__(self) -> None:
        self.positions: dict[TP, int] = {}
        self.first_seen: dict[TP, int] = {}
        self.records = 0
        self.started = 0.0
        self.sends_at_start = 0

    def __bool__(self) -> bool:
        return bool(self.positions)

    def __repr__(self) -> str:
        return f"Batch(records={self.records}, positions={self.positions})"

    def starting(self, sends: int, in_transaction: bool) -> None:
        """Records are about to be processed: if no batch is open (no position yet and
        no transaction), note that one starts now, with ``sends`` sends before it."""
        if not self.positions and not in_transaction:
            self.started = time.monotonic()
            self.sends_at_start = sends

    def clear(self) -> None:
        """Forget everything (after a commit or an abort)."""
        self.positions.clear()
        self.first_seen.clear()
        self.records = 0

    def drop(self, tps: Iterable[TP]) -> None:
        """Forget partitions that left this instance."""
        for tp in tps:
            self.positions.pop(tp, None)
            self.first_seen.pop(tp, None)

    def rewind_targets(self, unprocessed: Sequence[Any]) -> dict[TP, int]:
        """Where each partition must be seeked back to after an abort.

        Every partition of the batch goes back to its first offset seen; a
        partition that only appears among ``unprocessed`` messages (consumed
        but not processed when the batch failed) goes back to its first
        unprocessed offset.
        """
        targets = dict(self.first_seen)
        for msg in unprocessed:
            if msg.error() is not None:
                continue
            tp = (msg.topic(), msg.partition())
            if tp not in targets:
                targets[tp] = msg.offset()
        return targets


class Assignment:
    """The input partitions this instance owns.

    Attributes:
        assigned: Every assigned partition.
        restoring: Assigned partitions paused until their stores are restored;
            their records are not processed.
        skipped: Per restoring partition, the first offset of a record the
            consumer delivered before the pause took effect; the partition is
            seeked back there when it resumes, so nothing is skipped.
        committed: The last committed position per partition known to this
            instance (for the lag gauge).
        leaving: Partitions being revoked or lost (inside the rebalance
            callback): their batch is committed or aborted, never rewound.
    """

    __slots__ = ("assigned", "committed", "leaving", "restoring", "skipped")

    def __init__(self) -> None:
        self.assigned: set[TP] = set()
        self.leaving: set[TP] = set()
        self.restoring: set[TP] = set()
        self.skipped: dict[TP, int] = {}
        self.committed: dict[TP, int] = {}

    def __repr__(self) -> str:
        return f"Assignment(assigned={sorted(self.assigned)}, restoring={sorted(self.restoring)})"

    def ready(self, tp: TP) -> bool:
        """Whether records of ``tp`` may be processed now."""
        return tp in self.assigned and tp not in self.restoring and tp not in self.leaving

    def held_back(self, tp: TP, offset: int) -> None:
        """A record of restoring partition ``tp`` at ``offset`` was consumed and not processed."""
        if tp in self.restoring and tp not in self.skipped:
            self.skipped[tp] = offset

    def drop(self, tps: Iterable[TP]) -> None:
        """Forget partitions that left this instance."""
        for tp in tps:
            self.assigned.discard(tp)
            self.leaving.discard(tp)
            self.restoring.discard(tp)
            self.skipped.pop(tp, None)
            self.committed.pop(tp, None)


class Poison:
    """Input records known to fail, with the error to apply the policy with on replay.

    A record is marked when its processing failed after it had produced
    something (the batch is aborted so nothing partial survives) or when the
    broker rejected one of its outputs. On the replay the engine applies
    ``processing_error_policy`` to it without processing it again. An entry is
    kept until a commit moves past it: the transaction that applies the policy
    may itself abort and replay.
    """

    __slots__ = ("records",)

    def __init__(self) -> None:
        self.records: dict[Source, BaseException] = {}

    def __bool__(self) -> bool:
        return bool(self.records)

    def mark(self, source: Source, error: BaseException) -> None:
        """Remember that ``source`` fails with ``error``."""
        self.records[source] = error

    def committed(self, positions: dict[TP, int]) -> None:
        """Forget records a commit moved past."""
        if self.records:
            for source in [s for s in self.records if positions.get(s[:2], -1) > s[2]]:
                del self.records[source]

    def drop(self, tps: Iterable[TP]) -> None:
        """Forget records of partitions that left this instance."""
        gone = set(tps)
        if self.records and gone:
            for source in [s for s in self.records if s[:2] in gone]:
                del self.records[source]


def redelivered(tp: TP, offset: int, floor: int) -> None:
    """Log that the consumer handed out ``tp`` from ``offset``, below ``floor`` (what this
    instance already processed or committed): the records below it are skipped."""
    log.warning(
        "the consumer handed out %s[%d] from offset %d, below %d, which this instance "
        "already processed: the records below %d are skipped, not processed twice",
        tp[0],
        tp[1],
        offset,
        floor,
        floor,
    )
