"""Time: stream time, per-key timers, punctuation and time-driven stores.

One :class:`TimeKeeper` per engine (and per TestDriver). It owns, per store
partition number ``p`` (partition ``p`` of every input topic):

- the **stream time**: the largest record timestamp processed on ``p``. It
  is state: written to the internal store :data:`TIME_STORE` at each commit
  (one changelog record per partition that moved), restored like any store,
  and put back to the committed value when a transaction aborts, so a
  restarted or rebalanced instance neither fires a timer twice nor closes a
  window early;
- the **timers** of ``p``, in the same store: ``(kind, timestamp, key)``
  entries ordered by timestamp, plus a by-key index for ``cancel(key)``.
  Firing a timer deletes its entries, calls ``on_timer`` and writes what
  that sends, all in the open transaction: they commit together or not at all;
- the **time-driven stores** of ``p`` (window stores): their views say when
  they next have work (``next_due``) and do it (``advance``);
- the **punctuations** scheduled from ``on_assign`` (in memory, as in Kafka
  Streams: a restarted instance schedules them again).

What the engine pays per record: nothing for a processor that uses no time;
otherwise a comparison to move the stream time and one to see whether
anything is due (``due[p]``, a cached lower bound of the next stream time
with work). The wall clock is checked once per loop turn.

Failures: an exception from ``on_timer``, a punctuation or a window store's
``advance`` is not a record's failure: the engine aborts the transaction and
stops with :class:`~eos.errors.TimerError` (the timer is still stored, so it
fires again after the fix). A :class:`~eos.errors.ProduceError` passes
through unchanged, for the engine to diagnose as any failed output.

Threading: the processing thread only.
"""

from __future__ import annotations

import functools
import heapq
import logging
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any, Protocol

from eos._time_store import (
    KINDS,
    NEVER,
    NO_TIME,
    PRESENT,
    STREAM_TIME_KEY,
    TIME_STORE,
    UNKNOWN,
    TimerKind,
    after,
    decode_key,
    encode_key,
    index_entry,
    index_prefix,
    read_ts,
    timer_entry,
    ts,
)
from eos.errors import ConfigError, ProduceError, StateError, TimerError
from eos.processor import name_of
from eos.record import TopicPartition
from eos.timers import Punctuation, PunctuationGroup

if TYPE_CHECKING:
    from eos.processor import Context, Processor

__all__ = ["LateRecord", "TimeKeeper", "Views", "uses_time"]

log = logging.getLogger("eos.time")


def uses_time(processor: Processor) -> bool:
    """Whether ``processor`` needs persisted stream time: it defines ``on_timer``
    (or says so, as a DSL topology does) or declares a time-driven store."""
    from eos.processor import defines_on_timer

    declared = getattr(processor, "uses_timers", None)
    timers = bool(declared) if declared is not None else defines_on_timer(processor)
    return timers or any(getattr(s, "time_driven", False) for s in processor.stores)


class Views(Protocol):
    """``views(store_name, partition)``: what ``ctx.store(name)`` returns for that partition."""

    def __call__(self, name: str, partition: int, /) -> Any: ...


class LateRecord(Exception):
    """Why a late record was dead-lettered (the ``eos.error.*`` headers name it)."""

    def __init__(self, timestamp: int, stream_time: int | None) -> None:
        super().__init__(
            f"the record (timestamp {timestamp}) arrived after its window closed (end + grace "
            f"<= stream time {stream_time})"
        )
        self.timestamp = timestamp
        self.stream_time = stream_time


class TimeKeeper:
    """Stream time, timers, punctuations and time-driven stores; see the module docstring.

    Args:
        processor: Its ``on_timer`` is called for due timers.
        ctx: The context handed to callbacks.
        views: What ``ctx.store(name)`` gives for a store partition.
        persistent: Whether the processor uses time (:func:`uses_time`): stream
            time and timers are then kept in :data:`TIME_STORE`, which must be
            one of the stores ``views`` serves.
        driven: Names of the time-driven stores.
        clock: The wall clock in milliseconds since the epoch.
        begin: Opens a transaction (and a batch) when wall-clock work is due
            outside any record.

    Attributes:
        stream: Per partition, the current stream time (:data:`NO_TIME` before a record).
        due: Per partition, a lower bound of the next stream time with work.
        wall_due: A lower bound of the next wall-clock time with work.
        fired: Timers fired (committed or not).
    """

    def __init__(
        self,
        *,
        processor: Processor,
        ctx: Context[Any, Any],
        views: Views,
        persistent: bool,
        driven: Sequence[str],
        clock: Callable[[], int],
        begin: Callable[[], None],
    ) -> None:
        self.processor = processor
        # An async processor's punctuations return coroutines: the engine awaits them here.
        self.complete: Callable[[object], object] = _as_is
        self.ctx = ctx
        self.views = views
        self.persistent = persistent
        self.driven = tuple(driven)
        self.clock = clock
        self.begin = begin
        self.stream: dict[int, int] = {}
        self.due: dict[int, float] = {}
        self.wall_due = NEVER
        self.fired = 0
        self._committed: dict[int, int] = {}
        self._wall_next: dict[int, float] = {}
        self._owners: dict[int, set[tuple[str, int]]] = {}
        self._punctuations: dict[tuple[str, int], list[Punctuation]] = {}
        self._stream_punctuations = 0
        self._firing: tuple[int, bytes, int, list[tuple[int, bytes]]] | None = None

    def __repr__(self) -> str:
        return (
            f"TimeKeeper(partitions={sorted(self._owners)}, persistent={self.persistent}, "
            f"driven={list(self.driven)})"
        )

    @property
    def active(self) -> bool:
        """Whether records must move stream time (something depends on it)."""
        return self.persistent or self._stream_punctuations > 0

    # -- assignment ----------------------------------------------------------

    def assigned(self, tps: Sequence[tuple[str, int]]) -> None:
        """Partitions ready to process (stores restored): load their committed stream time."""
        for topic, partition in tps:
            owners = self._owners.setdefault(partition, set())
            first = not owners
            owners.add((topic, partition))
            if not first:
                continue
            stream_time = NO_TIME
            if self.persistent:
                stored = self.views(TIME_STORE, partition).get(STREAM_TIME_KEY)
                if stored is not None:
                    stream_time = read_ts(stored)
            self.stream[partition] = stream_time
            self._committed[partition] = stream_time
            self.due[partition] = UNKNOWN
            self._wall_next[partition] = UNKNOWN
            self.wall_due = UNKNOWN

    def revoked(self, tps: Sequence[tuple[str, int]]) -> None:
        """Partitions leaving (their last transaction ended): forget their time."""
        for tp in tps:
            for punctuation in self._punctuations.pop(tp, []):
                if punctuation.kind == "stream_time" and not punctuation.cancelled:
                    self._stream_punctuations -= 1
            owners = self._owners.get(tp[1])
            if owners is None:
                continue
            owners.discard(tp)
            if not owners:
                partition = tp[1]
                del self._owners[partition]
                for table in (self.stream, self._committed, self.due, self._wall_next):
                    table.pop(partition, None)

    def wake(self, partition: int, stream_time: int) -> None:
        """A time-driven store has work due at ``stream_time`` on ``partition``."""
        if stream_time < self.due.get(partition, NEVER):
            self.due[partition] = stream_time

    # -- the transaction -----------------------------------------------------

    def flush(self) -> None:
        """(1) of the commit: write the stream time of each partition that moved.

        Raises:
            ProduceError: Its changelog record could not be produced.
        """
        if not self.persistent:
            return
        committed = self._committed
        for partition, stream_time in self.stream.items():
            if stream_time != committed.get(partition) and stream_time != NO_TIME:
                self.views(TIME_STORE, partition)[STREAM_TIME_KEY] = ts(stream_time)

    def committed(self) -> None:
        """The transaction committed: what is in memory is now the committed state."""
        self._committed.update(self.stream)
        for punctuations in self._punctuations.values():
            for punctuation in punctuations:
                punctuation._committed = punctuation.next_at

    def aborted(self) -> None:
        """The transaction aborted: back to the committed stream time; recompute what is due."""
        self.stream.update(self._committed)
        for partition in self.due:
            self.due[partition] = UNKNOWN
            self._wall_next[partition] = UNKNOWN
        self.wall_due = UNKNOWN
        for punctuations in self._punctuations.values():
            for punctuation in punctuations:
                punctuation.next_at = punctuation._committed
        self._firing = None

    # -- records -------------------------------------------------------------

    def fire(self, partition: int) -> None:
        """Stream time of ``partition`` reached ``due``: do what is due, in time order per source.

        Window stores expire first, then stream-time timers (in timestamp
        order, including timers scheduled meanwhile), then stream-time
        punctuations. Runs inside the open transaction.

        Raises:
            TimerError: A callback raised.
            ProduceError: Producing failed (the engine diagnoses it).
        """
        stream_time = self.stream[partition]
        with _Firing(self.ctx, partition):
            views = self.views
            for name in self.driven:
                view = views(name, partition)
                next_due = view.next_due()
                if next_due is not None and next_due <= stream_time:
                    _call(functools.partial(view.advance, stream_time, self.ctx), f"store {name}")
            if self.persistent:
                self._fire_timers(partition, b"s", stream_time)
            if self._stream_punctuations:
                self._punctuate(partition, "stream_time", stream_time)
        self.due[partition] = self._next_due(partition)

    def _next_due(self, partition: int) -> float:
        due = NEVER
        views = self.views
        for name in self.driven:
            next_due = views(name, partition).next_due()
            if next_due is not None and next_due < due:
                due = next_due
        if self.persistent:
            first = self._first_timer(partition, b"s")
            if first < due:
                due = first
        if self._stream_punctuations:
            for tp in self._owners.get(partition, ()):
                for punctuation in self._punctuations.get(tp, ()):
                    if punctuation.kind == "stream_time" and not punctuation.cancelled:
                        due = min(due, punctuation.next_at)
        return due

    # -- the wall clock ------------------------------------------------------

    def fire_wall(self, now: int) -> None:
        """Fire the wall-clock timers and punctuations due at ``now``.

        Opens a transaction (``begin``) only when something is due.

        Raises:
            TimerError: A callback raised.
            ProduceError: Producing failed.
        """
        wall_due = NEVER
        for partition in sorted(self._owners):
            if self.persistent:
                next_at = self._wall_next.get(partition, UNKNOWN)
                if next_at <= now:
                    if self._first_timer(partition, b"w") <= now:
                        self.begin()
                        with _Firing(self.ctx, partition):
                            self._fire_timers(partition, b"w", now)
                    next_at = self._first_timer(partition, b"w")
                    self._wall_next[partition] = next_at
                wall_due = min(wall_due, next_at)
            for tp in sorted(self._owners[partition]):
                for punctuation in self._punctuations.get(tp, ()):
                    if punctuation.kind != "wall_clock" or punctuation.cancelled:
                        continue
                    if punctuation.next_at <= now:
                        self.begin()
                        with _Firing(self.ctx, partition):
                            self._run_punctuation(punctuation, now)
                    wall_due = min(wall_due, punctuation.next_at)
        self.wall_due = wall_due

    # -- timers --------------------------------------------------------------

    def schedule(self, partition: int, key: object, timestamp: int, kind: TimerKind) -> None:
        """Register a timer (the same key and timestamp twice is one timer)."""
        code = self._kind(kind)
        self._check_timers(partition)
        key_bytes = encode_key(key)
        entry = timer_entry(code, timestamp, key_bytes)
        txn = self.views(TIME_STORE, partition)
        if entry in txn:
            return
        txn[entry] = PRESENT
        txn[index_entry(code, key_bytes, timestamp)] = PRESENT
        firing = self._firing
        if firing is not None and firing[:2] == (partition, code) and timestamp <= firing[2]:
            heapq.heappush(firing[3], (timestamp, key_bytes))
        if code == b"s":
            if timestamp < self.due.get(partition, NEVER):
                self.due[partition] = timestamp
        else:
            if timestamp < self._wall_next.get(partition, NEVER):
                self._wall_next[partition] = timestamp
            if timestamp < self.wall_due:
                self.wall_due = timestamp

    def cancel(
        self, partition: int, key: object, timestamp: int | None, kind: TimerKind | None
    ) -> None:
        """Remove ``key``'s timers at ``timestamp`` (every timestamp if None) of ``kind``
        (both kinds if None)."""
        if kind is None:
            for each in KINDS:
                self.cancel(partition, key, timestamp, each)  # type: ignore[arg-type]
            return
        code = self._kind(kind)
        self._check_timers(partition)
        key_bytes = encode_key(key)
        txn = self.views(TIME_STORE, partition)
        if timestamp is not None:
            times = [timestamp]
        else:
            prefix = index_prefix(code, key_bytes)
            times = [read_ts(k, len(prefix)) for k, _ in txn.range(prefix, after(prefix))]
        for at in times:
            entry = timer_entry(code, at, key_bytes)
            if entry in txn:
                del txn[entry]
                del txn[index_entry(code, key_bytes, at)]

    def _kind(self, kind: str) -> bytes:
        code = KINDS.get(kind)
        if code is None:
            raise ConfigError(
                f"timer kind {kind!r}: use 'stream_time' or 'wall_clock'", "timers.kind"
            )
        return code

    def _check_timers(self, partition: int) -> None:
        if not self.persistent:
            name = name_of(self.processor)
            raise ConfigError(
                f"ctx.timers used, but {name} does not define on_timer(self, key, timestamp, "
                "ctx): define it (eos calls it when a timer is due, and keeps timers only for "
                "processors that have it)",
                "timers",
            )
        if partition not in self._owners:
            raise StateError(f"timers of partition {partition}: it is not assigned here")

    def _first_timer(self, partition: int, code: bytes) -> float:
        prefix = b"t" + code
        for key, _ in self.views(TIME_STORE, partition).range(prefix, after(prefix)):
            return read_ts(key, 2)
        return NEVER

    def _fire_timers(self, partition: int, code: bytes, up_to: int) -> None:
        txn = self.views(TIME_STORE, partition)
        prefix = b"t" + code
        due = [(read_ts(key, 2), key[10:]) for key, _ in txn.range(prefix, prefix + ts(up_to + 1))]
        self._firing = (partition, code, up_to, due)
        on_timer = self.processor.on_timer
        ctx = self.ctx
        try:
            while due:
                timestamp, key_bytes = heapq.heappop(due)
                entry = timer_entry(code, timestamp, key_bytes)
                if entry not in txn:
                    continue  # cancelled meanwhile, or a duplicate push
                del txn[entry]
                del txn[index_entry(code, key_bytes, timestamp)]
                key = decode_key(key_bytes)
                self.fired += 1
                try:
                    on_timer(key, timestamp, ctx)
                except ProduceError:
                    raise
                except Exception as exc:
                    kind = "stream_time" if code == b"s" else "wall_clock"
                    raise TimerError(
                        f"{name_of(self.processor)}.on_timer(key={key!r}, "
                        f"timestamp={timestamp}) ({kind}, partition {partition}) raised "
                        f"{type(exc).__name__}: {exc}",
                        partition=partition,
                        key=key,
                        timestamp=timestamp,
                        cause=exc,
                    ) from exc
        finally:
            self._firing = None

    # -- punctuation ---------------------------------------------------------

    def punctuate_every(
        self,
        tps: Sequence[TopicPartition],
        interval_ms: int,
        callback: Callable[[int, Context[Any, Any]], object],
        kind: TimerKind,
    ) -> PunctuationGroup:
        """``ctx.schedule`` from ``on_assign(tps)``: one punctuation per partition."""
        if isinstance(interval_ms, bool) or not isinstance(interval_ms, int) or interval_ms < 1:
            raise ConfigError(
                f"ctx.schedule(interval_ms={interval_ms!r}): must be an int >= 1", "schedule"
            )
        if not callable(callback):
            raise ConfigError(f"ctx.schedule: callback {callback!r} is not callable", "schedule")
        self._kind(kind)
        made: list[Punctuation] = []
        now = self.clock()
        for tp in tps:
            if kind == "wall_clock":
                next_at: float = now + interval_ms
            else:
                stream_time = self.stream.get(tp.partition, NO_TIME)
                # Kafka Streams: the first record starts a stream-time punctuation.
                next_at = UNKNOWN if stream_time == NO_TIME else stream_time + interval_ms
                self._stream_punctuations += 1
                self.due[tp.partition] = min(self.due.get(tp.partition, NEVER), next_at)
            punctuation = Punctuation(tp, interval_ms, callback, kind, next_at)
            self._punctuations.setdefault((tp.topic, tp.partition), []).append(punctuation)
            made.append(punctuation)
            if kind == "wall_clock":
                self.wall_due = min(self.wall_due, next_at)
        return PunctuationGroup(made)

    def _punctuate(self, partition: int, kind: TimerKind, now: int) -> None:
        for tp in sorted(self._owners.get(partition, ())):
            for punctuation in self._punctuations.get(tp, ()):
                if (
                    punctuation.kind == kind
                    and not punctuation.cancelled
                    and punctuation.next_at <= now
                ):
                    self._run_punctuation(punctuation, now)

    def _run_punctuation(self, punctuation: Punctuation, now: int) -> None:
        """Call it; the next call is due at the next interval of its schedule after ``now``
        (missed intervals are not made up)."""
        interval = punctuation.interval_ms
        scheduled = punctuation.next_at
        if scheduled == UNKNOWN:
            punctuation.next_at = now + interval
        else:
            # The next one on the original schedule after now (as Kafka Streams does).
            missed = (now - int(scheduled)) // interval
            punctuation.next_at = int(scheduled) + (missed + 1) * interval
        self.fired += 1
        _call(
            lambda: self.complete(punctuation.callback(now, self.ctx)),
            f"punctuation {punctuation!r}",
        )


class _Firing:
    """Hands ``ctx`` to a callback of ``partition``: no current record, that partition."""

    __slots__ = ("_ctx", "_partition", "_record", "_saved")

    def __init__(self, ctx: Context[Any, Any], partition: int) -> None:
        self._ctx = ctx
        self._partition = partition
        self._record: Any = None
        self._saved: int | None = None

    def __enter__(self) -> None:
        ctx = self._ctx
        self._record = ctx.record
        self._saved = ctx._partition
        ctx.record = None
        ctx._partition = self._partition

    def __exit__(self, *_exc: object) -> None:
        self._ctx.record = self._record
        self._ctx._partition = self._saved


def _as_is(result: object) -> object:
    return result


def _call(run: Callable[[], object], what: str) -> None:
    try:
        run()
    except (ProduceError, TimerError):
        raise
    except Exception as exc:
        raise TimerError(
            f"{what} raised {type(exc).__name__}: {exc}", partition=None, cause=exc
        ) from exc
