"""Time inside the engine's transactions: the one owner of a timer's failure paths.

:class:`EngineTime` connects the :class:`~eos._time.TimeKeeper` (what is due
and when) to the engine's batch and transaction:

- :meth:`EngineTime.fire`: after a record moved its partition's stream time
  to something due, fire it in the record's transaction;
- :meth:`EngineTime.fire_wall`: wall-clock timers and punctuations due now,
  in the open transaction or one opened for them (:meth:`EngineTime.begin`),
  which then commits by the commit interval like any batch;
- :meth:`EngineTime.late`: a window dropped the current record as late:
  count it (``eos_late_records_total``) and, under
  ``late_record_policy="dead_letter"``, copy it to the dead-letter topic.

Failures, and the state each leaves behind:

- a produce that fails while a timer runs is diagnosed as any failed output
  (:meth:`eos._committer.Committer.batch_failed`: abort, rewind, redo, or stop
  for a missing topic or a denied ACL); then :class:`~eos._committer.Rewound`;
- an exception from ``on_timer``, a punctuation or a window's expiry is a
  :class:`~eos.errors.TimerError`: it ends the run, whose shutdown aborts the
  transaction; the timer stays stored and fires again after a restart.

Threading: the processing thread only.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from eos._batch import Batch
from eos._committer import Committer, Rewound
from eos._guarantee import Guarantee
from eos._outputs import Outputs
from eos._time import LateRecord, TimeKeeper
from eos.config import Config
from eos.errors import ProduceError
from eos.stats import EngineStats

if TYPE_CHECKING:
    from eos.processor import Context
    from eos.record import Record

__all__ = ["EngineTime", "wall_clock_ms"]


def wall_clock_ms() -> int:
    """The wall clock in milliseconds since the epoch."""
    return time.time_ns() // 1_000_000


class EngineTime:
    """Fires timers inside the engine's transactions; see the module docstring.

    Attributes:
        keeper: The time keeper (attached when the engine starts).
        current: The input message being processed (set per record while
            time is tracked), for dead-lettering a late record.
    """

    def __init__(
        self,
        *,
        config: Config,
        guarantee: Guarantee,
        batch: Batch,
        outputs: Outputs,
        committer: Committer,
        stats: EngineStats,
    ) -> None:
        self.config = config
        self.guarantee = guarantee
        self.batch = batch
        self.outputs = outputs
        self.committer = committer
        self.stats = stats
        self.keeper: TimeKeeper | None = None
        self.ctx: Context[Any, Any] | None = None
        self.current: Any = None
        self._late_record: Record[Any, Any] | None = None

    def _keeper(self) -> TimeKeeper:
        if self.keeper is None:
            raise RuntimeError("engine not started")
        return self.keeper

    def fire(self, partition: int, unprocessed: Sequence[Any]) -> None:
        """Stream time of ``partition`` reached something due: fire it in this transaction.

        Raises:
            Rewound: Producing failed; the batch was aborted and rewound.
            TimerError: A callback raised (the run ends).
        """
        keeper = self._keeper()
        try:
            keeper.fire(partition)
        except ProduceError as exc:
            self._produce_failed(exc, unprocessed)
        finally:
            self.stats.timers_fired = keeper.fired

    def fire_wall(self) -> None:
        """Fire the wall-clock timers and punctuations that are due.

        Raises:
            Rewound: Producing failed; the batch was aborted and rewound.
            TimerError: A callback raised (the run ends).
        """
        keeper = self._keeper()
        if self.ctx is not None:
            self.ctx._produce = self.outputs.produce_for_batch()
        try:
            keeper.fire_wall(wall_clock_ms())
        except ProduceError as exc:
            self._produce_failed(exc, ())
        finally:
            self.stats.timers_fired = keeper.fired

    def _produce_failed(self, exc: ProduceError, unprocessed: Sequence[Any]) -> None:
        self.committer.batch_failed(
            exc.kafka_error, f"produce failed in a timer: {exc}", unprocessed, kind="produce_failed"
        )
        raise Rewound() from exc

    def begin(self) -> None:
        """Open a transaction for wall-clock work when none is open; it commits by the interval."""
        if not self.committer.open:
            self.batch.started = time.monotonic()
            self.batch.sends_at_start = self.ctx.sends if self.ctx is not None else 0
        self.guarantee.begin()

    def late(self, dropped: bool) -> None:
        """A window dropped the current record as late: count it once; dead-letter it if
        told to and no window of it took it (``dropped``).

        Raises:
            ProduceError: The dead-letter copy was refused (the engine handles
                it as a failed output of the record).
        """
        ctx = self.ctx
        record = None if ctx is None else ctx.record
        if ctx is None or record is None or record is self._late_record:
            return
        self._late_record = record
        self.stats.late_records += 1
        if dropped and self.config.late_record_policy == "dead_letter" and self.current is not None:
            self.outputs.dead_letter(self.current, LateRecord(record.timestamp, ctx.stream_time))
            self.stats.dead_lettered += 1
