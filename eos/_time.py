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
import json
import logging
import struct
from collections.abc import Callable, Iterator, Sequence
from typing import TYPE_CHECKING, Any, Literal, Protocol

from eos.errors import ConfigError, ProduceError, StateError, TimerError
from eos.record import TopicPartition
from eos.state.base import Store

if TYPE_CHECKING:
    from eos.processor import Context, Processor

__all__ = [
    "RESERVED_PREFIX",
    "TIME_STORE",
    "LateRecord",
    "Punctuation",
    "TimeKeeper",
    "TimerKind",
    "Timers",
    "time_store",
    "uses_time",
]

log = logging.getLogger("eos.time")

TIME_STORE = "__eos-time"
"""The internal store of stream times and timers (changelog ``<app>-__eos-time-changelog``)."""
RESERVED_PREFIX = "__eos"
"""Store names starting with this are the engine's."""

TimerKind = Literal["stream_time", "wall_clock"]
_KINDS: dict[str, bytes] = {"stream_time": b"s", "wall_clock": b"w"}

NEVER = float("inf")
"""``due`` of a partition with nothing scheduled."""
UNKNOWN = float("-inf")
"""``due`` that must be recomputed (after an abort): any stream time reaches it."""
NO_TIME = -(1 << 63)
"""Stream time of a partition that has seen no record."""

_STREAM_TIME_KEY = b"s"
_PRESENT = b"\x01"
_U64 = struct.Struct(">Q")
_U32 = struct.Struct(">I")
_OFFSET = 1 << 63


def _ts(timestamp: int) -> bytes:
    """Big-endian, offset by 2**63: byte order is numeric order, negatives included."""
    return _U64.pack(timestamp + _OFFSET)


def _read_ts(data: bytes, at: int = 0) -> int:
    value: int = _U64.unpack_from(data, at)[0]
    return value - _OFFSET


def encode_key(key: object) -> bytes:
    """A timer key as bytes: bytes as they are, None, or JSON for anything else.

    Raises:
        ConfigError: The key is neither bytes, None nor JSON-serializable.
    """
    if isinstance(key, bytes):
        return b"b" + key
    if key is None:
        return b"n"
    try:
        return b"j" + json.dumps(key, separators=(",", ":"), allow_nan=False).encode()
    except (TypeError, ValueError) as exc:
        raise ConfigError(
            f"timer key {key!r} ({type(key).__name__}) cannot be stored: use bytes, None or a "
            f"JSON-serializable value (str, int, float, bool, list, dict): {exc}",
            "timers",
        ) from exc


def decode_key(data: bytes) -> object:
    """The key :func:`encode_key` encoded (JSON arrays come back as lists)."""
    tag = data[:1]
    if tag == b"b":
        return data[1:]
    if tag == b"n":
        return None
    return json.loads(data[1:])


def _timer_entry(kind: bytes, timestamp: int, key: bytes) -> bytes:
    return b"t" + kind + _ts(timestamp) + key


def _index_entry(kind: bytes, key: bytes, timestamp: int) -> bytes:
    return b"k" + kind + _U32.pack(len(key)) + key + _ts(timestamp)


def time_store() -> Store[bytes, bytes]:
    """The declaration of :data:`TIME_STORE` (RocksDB, bytes keys and values)."""
    return Store(TIME_STORE, key_serde="bytes", value_serde="bytes")


def uses_time(processor: Processor) -> bool:
    """Whether ``processor`` needs persisted stream time: it defines ``on_timer``
    (or says so, as a DSL topology does) or declares a time-driven store."""
    from eos.processor import Processor

    declared = getattr(processor, "uses_timers", None)
    timers = (
        bool(declared)
        if declared is not None
        else type(processor).on_timer is not Processor.on_timer
    )
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
                stored = self.views(TIME_STORE, partition).get(_STREAM_TIME_KEY)
                if stored is not None:
                    stream_time = _read_ts(stored)
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
                self.views(TIME_STORE, partition)[_STREAM_TIME_KEY] = _ts(stream_time)

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
        entry = _timer_entry(code, timestamp, key_bytes)
        txn = self.views(TIME_STORE, partition)
        if entry in txn:
            return
        txn[entry] = _PRESENT
        txn[_index_entry(code, key_bytes, timestamp)] = _PRESENT
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
            for each in _KINDS:
                self.cancel(partition, key, timestamp, each)  # type: ignore[arg-type]
            return
        code = self._kind(kind)
        self._check_timers(partition)
        key_bytes = encode_key(key)
        txn = self.views(TIME_STORE, partition)
        if timestamp is not None:
            times = [timestamp]
        else:
            prefix = b"k" + code + _U32.pack(len(key_bytes)) + key_bytes
            times = [_read_ts(k, len(prefix)) for k, _ in txn.range(prefix, _after(prefix))]
        for at in times:
            entry = _timer_entry(code, at, key_bytes)
            if entry in txn:
                del txn[entry]
                del txn[_index_entry(code, key_bytes, at)]

    def _kind(self, kind: str) -> bytes:
        code = _KINDS.get(kind)
        if code is None:
            raise ConfigError(
                f"timer kind {kind!r}: use 'stream_time' or 'wall_clock'", "timers.kind"
            )
        return code

    def _check_timers(self, partition: int) -> None:
        if not self.persistent:
            name = type(self.processor).__name__
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
        for key, _ in self.views(TIME_STORE, partition).range(prefix, _after(prefix)):
            return _read_ts(key, 2)
        return NEVER

    def _fire_timers(self, partition: int, code: bytes, up_to: int) -> None:
        txn = self.views(TIME_STORE, partition)
        prefix = b"t" + code
        due = [
            (_read_ts(key, 2), key[10:]) for key, _ in txn.range(prefix, prefix + _ts(up_to + 1))
        ]
        self._firing = (partition, code, up_to, due)
        on_timer = self.processor.on_timer
        ctx = self.ctx
        try:
            while due:
                timestamp, key_bytes = heapq.heappop(due)
                entry = _timer_entry(code, timestamp, key_bytes)
                if entry not in txn:
                    continue  # cancelled meanwhile, or a duplicate push
                del txn[entry]
                del txn[_index_entry(code, key_bytes, timestamp)]
                key = decode_key(key_bytes)
                self.fired += 1
                try:
                    on_timer(key, timestamp, ctx)
                except ProduceError:
                    raise
                except Exception as exc:
                    kind = "stream_time" if code == b"s" else "wall_clock"
                    raise TimerError(
                        f"{type(self.processor).__name__}.on_timer(key={key!r}, "
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
        _call(lambda: punctuation.callback(now, self.ctx), f"punctuation {punctuation!r}")


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


def _call(run: Callable[[], object], what: str) -> None:
    try:
        run()
    except (ProduceError, TimerError):
        raise
    except Exception as exc:
        raise TimerError(
            f"{what} raised {type(exc).__name__}: {exc}", partition=None, cause=exc
        ) from exc


def _after(prefix: bytes) -> bytes:
    """The smallest key greater than every key starting with ``prefix``."""
    stripped = prefix.rstrip(b"\xff")
    if not stripped:
        return prefix + b"\xff" * 8
    return stripped[:-1] + bytes([stripped[-1] + 1])


def iter_timers(items: Iterator[tuple[bytes, bytes]]) -> Iterator[tuple[str, int, object]]:
    """``(kind, timestamp, key)`` of the timer entries among a time store's items."""
    names = {code: name for name, code in _KINDS.items()}
    for key, _ in items:
        if key[:1] == b"t":
            yield names[key[1:2]], _read_ts(key, 2), decode_key(key[10:])
