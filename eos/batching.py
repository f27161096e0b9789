"""A processor handed the records of one partition a run at a time.

:class:`BatchProcessor` is a :class:`~eos.processor.Processor` whose logic takes a
:class:`RecordBatch`: the consecutive records of ONE input partition from one
poll, in offset order, as lists of keys and values. The engine calls
``process_batch`` once per such run instead of ``process`` once per record,
which spares the per-record Python (a ``Record`` object, a ``process`` call,
``ctx.store`` and the engine's per-record checks): see docs/processing.md
("Batches") for what it buys and for its limits.

The guarantees do not change: a batch's outputs, store writes and offsets
commit in the same transaction as any record's. What a batch changes is how a
failure finds its record, so the processing-error policy still applies to ONE
record (see :class:`BatchProcessor`).
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Any, Generic

from eos.processor import PK, PV, Context, Processor
from eos.record import Record

__all__ = ["BatchProcessor", "RecordBatch"]


class RecordBatch(Generic[PK, PV]):
    """Consecutive records of one input partition, in offset order.

    ``keys`` and ``values`` are the records' keys and values, decoded with the
    application's serdes, one entry per record. ``offsets``, ``timestamps`` and
    ``records`` (``Record`` objects, as ``process`` gets them) are made when
    first read, so a batch processor that uses only keys and values pays for
    nothing else. A batch is never empty. Do not modify its lists.

    Attributes:
        topic: The input topic.
        partition: The input partition.
        keys: The records' keys.
        values: The records' values.
    """

    __slots__ = ("_messages", "_records", "keys", "partition", "topic", "values")

    def __init__(
        self,
        topic: str,
        partition: int,
        keys: list[PK],
        values: list[PV],
        messages: Sequence[Any] = (),
        records: list[Record[PK, PV]] | None = None,
    ) -> None:
        """Made by the engine (from consumed messages) or from ``records``; not by user code."""
        self.topic = topic
        self.partition = partition
        self.keys = keys
        self.values = values
        self._messages = messages
        self._records = records

    @classmethod
    def of(cls, record: Record[PK, PV]) -> RecordBatch[PK, PV]:
        """The batch of one record (what :meth:`BatchProcessor.process` hands on)."""
        return cls(record.topic, record.partition, [record.key], [record.value], records=[record])

    @property
    def records(self) -> list[Record[PK, PV]]:
        """The records as ``Record`` objects (made on first use)."""
        records = self._records
        if records is None:
            topic = self.topic
            partition = self.partition
            records = self._records = [
                tuple.__new__(
                    Record,
                    (key, value, topic, partition, msg.offset(), msg.timestamp()[1], msg.headers()),
                )
                for key, value, msg in zip(self.keys, self.values, self._messages, strict=True)
            ]
        return records

    @property
    def offsets(self) -> list[int]:
        """The records' offsets."""
        if self._records is not None:
            return [record.offset for record in self._records]
        return [msg.offset() for msg in self._messages]

    @property
    def timestamps(self) -> list[int]:
        """The records' timestamps (ms since the epoch)."""
        if self._records is not None:
            return [record.timestamp for record in self._records]
        return [msg.timestamp()[1] for msg in self._messages]

    def __len__(self) -> int:
        return len(self.keys)

    def __iter__(self) -> Iterator[Record[PK, PV]]:
        return iter(self.records)

    def __repr__(self) -> str:
        return f"RecordBatch({self.topic}[{self.partition}], {len(self.keys)} records)"


class BatchProcessor(Processor[PK, PV]):
    """Base class for processing logic that takes a partition's records a run at a time.

    Implement ``process_batch(batch, ctx)``. The engine calls it with the
    consecutive records of one input partition from one poll (hundreds to
    thousands: a poll takes at most 5,000 records, fewer near
    ``max_batch_records``), in offset order, inside the open transaction.
    ``ctx.store(name)`` is the batch's partition's store (look it up once per
    batch), ``ctx.send`` sends as from ``process``,
    ``ctx.partition`` is the batch's partition and ``ctx.record`` is None.

    When a batch raises:

    - if it sent nothing and wrote no store, the engine runs the same records
      again one at a time (``process``, below), so the failure lands on its
      record and ``processing_error_policy`` treats that record alone, as for
      a :class:`~eos.processor.Processor`;
    - if it had already sent or written, the transaction is aborted and
      rewound, and the replay runs that partition's records one at a time up to
      the end of the failed batch: nothing of the failed batch survives, and
      the policy again applies to exactly one record.

    Records also go one at a time (batches of one) where a record must be seen
    alone: in a replay with per-output delivery reports, in a batch holding a
    record already blamed for a failure, with timers (stream time fires them
    between records), tables, ``lineage_headers`` (a lineage header names
    one input record), or under ``at_most_once`` (which never replays).
    ``process(record, ctx)`` is defined here as ``process_batch`` of that one
    record, so the ``TestDriver`` and all these paths run the same code. As for
    any processor, a batch may be processed again after an abort: keep no side
    effects outside ``ctx``.
    """

    def process_batch(self, batch: RecordBatch[PK, PV], ctx: Context[PK, PV]) -> None:
        """Handle the records of ``batch``: send with ``ctx.send``, use ``ctx.store``."""
        raise NotImplementedError(f"{type(self).__name__} must implement process_batch()")

    def process(self, record: Record[PK, PV], ctx: Context[PK, PV]) -> None:
        """``process_batch`` of the batch of ``record`` alone (do not override)."""
        self.process_batch(RecordBatch.of(record), ctx)
