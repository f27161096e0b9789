"""What a processor holds to act when time passes: ``ctx.timers`` and punctuation handles.

:class:`Timers` is ``ctx.timers`` (per-key timers, kept in the internal time
store, fired by :class:`~eos._time.TimeKeeper`); :class:`PunctuationGroup` is
what ``ctx.schedule`` returns (one :class:`Punctuation` per partition). See
docs/time.md.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from eos._time_store import TimerKind
from eos.errors import ConfigError, StateError
from eos.record import TopicPartition

if TYPE_CHECKING:
    from eos._time import TimeKeeper
    from eos.processor import Context

__all__ = ["Punctuation", "PunctuationGroup", "TimerKind", "Timers"]


class Punctuation:
    """A periodic callback scheduled with ``ctx.schedule`` for one input partition.

    Attributes:
        partition: The input partition it runs for.
        interval_ms: The period.
        kind: ``"wall_clock"`` or ``"stream_time"``.
    """

    __slots__ = (
        "_committed",
        "callback",
        "cancelled",
        "interval_ms",
        "kind",
        "next_at",
        "partition",
    )

    def __init__(
        self,
        partition: TopicPartition,
        interval_ms: int,
        callback: Callable[[int, Context[Any, Any]], object],
        kind: TimerKind,
        next_at: float,
    ) -> None:
        self.partition = partition
        self.interval_ms = interval_ms
        self.callback = callback
        self.kind = kind
        self.next_at = next_at
        self._committed = next_at
        self.cancelled = False

    def __repr__(self) -> str:
        return (
            f"Punctuation({self.partition.topic}[{self.partition.partition}], "
            f"every {self.interval_ms} ms, {self.kind}{', cancelled' if self.cancelled else ''})"
        )

    def cancel(self) -> None:
        """Stop calling it (takes effect at once; not undone by an abort)."""
        self.cancelled = True


class PunctuationGroup:
    """The handle ``ctx.schedule`` returns: one :class:`Punctuation` per partition assigned."""

    __slots__ = ("punctuations",)

    def __init__(self, punctuations: list[Punctuation]) -> None:
        self.punctuations = punctuations

    def __repr__(self) -> str:
        return f"PunctuationGroup({self.punctuations})"

    def cancel(self) -> None:
        """Cancel it for every partition it was scheduled for."""
        for punctuation in self.punctuations:
            punctuation.cancel()


class Timers:
    """``ctx.timers``: per-key timers of the current partition.

    A timer is ``(key, timestamp)`` in the partition of the record being
    processed (or of the timer firing). It fires once, when the partition's
    stream time (``kind="stream_time"``) or the wall clock
    (``kind="wall_clock"``) reaches ``timestamp``: ``Processor.on_timer(key,
    timestamp, ctx)`` runs inside the transaction, and its outputs, its
    store writes and the timer's removal commit together.
    """

    __slots__ = ("_ctx", "_keeper")

    def __init__(self, ctx: Context[Any, Any], keeper: TimeKeeper) -> None:
        self._ctx = ctx
        self._keeper = keeper

    def __repr__(self) -> str:
        return f"Timers(partition={self._ctx.partition})"

    def schedule(self, key: object, timestamp_ms: int, *, kind: TimerKind = "stream_time") -> None:
        """Fire ``on_timer(key, timestamp_ms, ctx)`` once when ``kind``'s time reaches it.

        Scheduling the same ``(key, timestamp_ms, kind)`` twice is one timer.
        A stream-time timer at or before the current stream time fires right
        after the current record (or timer).

        Raises:
            ConfigError: The processor has no ``on_timer``, or the key cannot be stored.
            StateError: Called outside ``process``/``on_timer``/a punctuation.
        """
        if isinstance(timestamp_ms, bool) or not isinstance(timestamp_ms, int):
            raise ConfigError(
                f"ctx.timers.schedule: timestamp_ms={timestamp_ms!r} must be an int "
                "(milliseconds since the epoch)",
                "timers",
            )
        self._keeper.schedule(self._partition("schedule"), key, timestamp_ms, kind)

    def cancel(
        self, key: object, timestamp_ms: int | None = None, *, kind: TimerKind | None = None
    ) -> None:
        """Remove ``key``'s timer at ``timestamp_ms``, or all its timers if None.

        ``kind`` limits it to stream-time or wall-clock timers (default: both).
        Cancelling a timer that does not exist does nothing.
        """
        self._keeper.cancel(self._partition("cancel"), key, timestamp_ms, kind)

    def _partition(self, what: str) -> int:
        partition = self._ctx.partition
        if partition is None:
            raise StateError(
                f"ctx.timers.{what} is only available in process(), on_timer() and "
                "punctuations: a timer belongs to the partition of the record (or timer) "
                "being handled"
            )
        return partition
