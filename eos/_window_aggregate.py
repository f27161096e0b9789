"""Windowed aggregations of the DSL: the store that keeps the windows and the nodes
that fill it (:mod:`eos._dsl_windows` builds them).

Each window lives in a time-driven :class:`~eos.state.window.WindowStore` under
``(key, slot)``: the slot is the window's start for time and sliding windows
and the session's END for session windows (so the sessions a record may join,
those ending at ``t - gap`` or later, are one range read from the front).
Stored values are the aggregate (time windows), ``[max_timestamp, aggregate]``
(sliding windows: the newest record in the window, which the algorithm needs)
or ``[start, aggregate]`` (sessions).

Close and expiry, relative to the slot: a window closes ``close_ms`` after its
slot (see :mod:`eos.windows` for each type's close time) and is deleted
``retention_ms`` after it: at close, plus the DSL's ``retention_ms``, plus, for
sliding windows, ``2 * max_difference_ms`` more, because a record within grace
takes its left window's aggregate from windows up to ``2 * d`` before it (Kafka
Streams keeps sliding windows for ``2 * d + grace`` for the same reason).

``.final()`` emission runs in the view's :meth:`AggregateView.advance` (the
engine calls it after the record that moves stream time to the next close):
each closed window's result is pushed into the final node's children, in close
order, in the same transaction that deletes it (or, when windows are kept past
their close, that records the highest slot emitted in the store, so a restart
neither repeats nor skips an emission).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, cast

from eos._dsl_nodes import Node
from eos.errors import StateError
from eos.state._window_keys import (
    DATA,
    INDEX,
    MAX_TIMESTAMP,
    META,
    MIN_TIMESTAMP,
    data_prefix,
    decode_ts,
    encode_ts,
    index_bound,
    split_data_key,
)
from eos.state.transaction import StoreTransaction
from eos.state.window import WindowStore, WindowStoreTransaction
from eos.windows import HoppingWindows, SessionWindows, SlidingWindows, Windowed, Windows

if TYPE_CHECKING:
    from eos.processor import Context
    from eos.serde import Serde

__all__ = [
    "ANY_KEY",
    "AggregateStore",
    "AggregateView",
    "AnyKeySerde",
    "SessionAggregate",
    "SlidingAggregate",
    "TimeAggregate",
    "close_and_retention",
]


class AnyKeySerde:
    """The key serde of a DSL window store: whatever the stream's keys are.

    A topology cannot know its key type (the application's serdes decide it),
    so keys are stored tagged: bytes as they are (``b"b" + key``), anything
    else as JSON (``b"j" + json``). A windowed count over the default
    ``bytes`` keys works as one over ``str`` keys does; a tuple key comes back
    as a list.
    """

    def serialize(self, value: object, /) -> bytes | None:
        if value is None:
            return None
        if isinstance(value, bytes):
            return b"b" + value
        return b"j" + json.dumps(value, separators=(",", ":"), allow_nan=False).encode()

    def deserialize(self, data: bytes | None, /) -> object:
        if data is None:
            return None
        if data[:1] == b"b":
            return data[1:]
        return json.loads(data[1:])

    def __eq__(self, other: object) -> bool:
        return isinstance(other, AnyKeySerde)

    def __hash__(self) -> int:
        return hash(AnyKeySerde)

    def __repr__(self) -> str:
        return "AnyKeySerde()"


ANY_KEY = AnyKeySerde()

_EMITTED = META + b"final-emitted-upto"
"""The highest slot whose final result was emitted (only when windows outlive
their close); absent: none yet."""


def close_and_retention(windows: Windows, retention_ms: int) -> tuple[int, int]:
    """``(close_ms, store retention_ms)`` of a window type, both from the slot."""
    if isinstance(windows, SessionWindows):
        close = windows.inactivity_gap_ms + windows.grace_ms + 1
        return close, close + retention_ms
    if isinstance(windows, SlidingWindows):
        close = windows.max_difference_ms + windows.grace_ms + 1
        return close, close + 2 * windows.max_difference_ms + retention_ms
    close = windows.size_ms + windows.grace_ms
    return close, close + retention_ms


# Not slotted, for the reason Store is not (see eos.state.base).
@dataclass(frozen=True)
class AggregateStore(WindowStore[Any, Any]):
    """The window store of one DSL windowed aggregation.

    Attributes:
        windows: The window definition (decides the layout, see the module doc).
        close_ms: Stream time from a window's slot to its close.
        final: The node ``.final()`` tables hang off; the view pushes each
            closed window's ``(Windowed, aggregate)`` into it (nothing when it
            has no children).
    """

    windows: Windows = field(kw_only=True)
    close_ms: int = field(kw_only=True)
    final: Node = field(kw_only=True, compare=False, repr=False)

    def view(self, txn: StoreTransaction[Any, Any], wake: Callable[[int], None]) -> AggregateView:
        """The :class:`AggregateView` of ``txn`` (one per store partition per transaction)."""
        return AggregateView(self, txn, wake)

    def decode_entries(
        self,
        items: Iterable[tuple[bytes, bytes]],
        topic_serdes: tuple[Serde, Serde] | None = None,
    ) -> Iterator[tuple[object, object]]:
        """Yield ``(Windowed(key, start, end), aggregate)`` per stored window."""
        key_serde, value_serde = self._serdes()
        for key_bytes, value_bytes in items:
            if key_bytes[:1] == DATA:
                raw_key, slot = split_data_key(key_bytes)
                yield self.window_of(
                    key_serde.deserialize(raw_key), slot, value_serde.deserialize(value_bytes)
                )

    def window_of(self, key: object, slot: int, stored: Any) -> tuple[Windowed[Any], object]:
        """``(Windowed, aggregate)`` of a stored window."""
        windows = self.windows
        if isinstance(windows, SessionWindows):
            return Windowed(key, stored[0], slot), stored[1]
        if isinstance(windows, SlidingWindows):
            return Windowed(key, slot, slot + windows.max_difference_ms), stored[1]
        return Windowed(key, slot, slot + windows.size_ms), stored


class AggregateView(WindowStoreTransaction[Any, Any]):
    """A window store view that also emits ``.final()`` results when windows close."""

    __slots__ = ("_close", "_final", "_separate", "_window_of")

    def __init__(
        self, spec: AggregateStore, txn: StoreTransaction[Any, Any], wake: Callable[[int], None]
    ) -> None:
        super().__init__(spec, txn, wake)
        self._close = spec.close_ms
        self._window_of = spec.window_of
        self._final = spec.final if spec.final.children else None
        # Windows kept past their close need a record of what was emitted.
        self._separate = self._final is not None and self._close < self._retention
        if self._final is not None:
            self._due_after = self._close

    def next_due(self) -> int | None:
        """The next expiry, or the next close when ``.final()`` needs it earlier."""
        due = super().next_due()
        if self._separate:
            mark = self._emitted_upto()
            low = INDEX if mark is None else index_bound(mark)
            first = self._first_index_key(low)
            if first is not None:
                close = min(decode_ts(first, 1) + self._close, MAX_TIMESTAMP)
                due = close if due is None else min(due, close)
        return due

    def advance(self, stream_time: int, ctx: Context[Any, Any]) -> None:
        """Emit the final result of every window closed at ``stream_time`` (if a
        ``.final()`` table is used), then delete the expired windows."""
        final = self._final
        if final is not None:
            last_closed = stream_time - self._close
            if last_closed < MIN_TIMESTAMP:
                return
            if not self._separate:
                # Close == expiry: emit and delete in one pass.
                for index_key in self._index_keys(index_bound(last_closed)):
                    self._emit(index_key, final, ctx)
                    self._remove_indexed(index_key[9:], decode_ts(index_key, 1), index_key)
                return
            mark = self._emitted_upto()
            if mark is None or last_closed > mark:
                low = INDEX if mark is None else index_bound(mark)
                for index_key in self._index_keys(index_bound(last_closed), low):
                    self._emit(index_key, final, ctx)
                self._txn[_EMITTED] = encode_ts(last_closed)
        super().advance(stream_time, ctx)

    def _emitted_upto(self) -> int | None:
        stored = self._txn.get(_EMITTED)
        return None if stored is None else decode_ts(stored)

    def _emit(self, index_key: bytes, final: Node, ctx: Context[Any, Any]) -> None:
        key_bytes = index_key[9:]
        value_bytes = self._txn.get(data_prefix(key_bytes) + index_key[1:9])
        if value_bytes is None:
            return
        windowed, aggregate = self._window_of(
            self._key_de(key_bytes), decode_ts(index_key, 1), self._value_de(value_bytes)
        )
        final.push(windowed, aggregate, ctx)


Initializer = Callable[[], object]
Aggregator = Callable[[Any, Any, Any], object]
Merger = Callable[[Any, Any, Any], object]


class _WindowNode(Node):
    """Common parts: the store name and the user's functions."""

    __slots__ = ("aggregator", "initializer", "store")

    def __init__(self, store: str, initializer: Initializer, aggregator: Aggregator) -> None:
        super().__init__(False)
        self.store = store
        self.initializer = initializer
        self.aggregator = aggregator


def _now(ctx: Context[Any, Any]) -> tuple[int, int]:
    """``(record timestamp, stream time)`` of the current record."""
    record = ctx.record
    if record is None:
        raise RuntimeError("windowed aggregation called outside processing")
    timestamp = record.timestamp
    stream_time = ctx.stream_time
    if stream_time is None or stream_time < timestamp:
        stream_time = timestamp
    return timestamp, stream_time


def _pair(view: AggregateView, number: int, aggregate: object) -> bytes:
    """The stored ``[number, aggregate]`` of a sliding window or session."""
    encoded = view._value_ser([number, aggregate])
    if encoded is None:  # only a custom serde could do this
        raise StateError(f"window store {view.name}: a window's value serialized to None")
    return encoded


class TimeAggregate(_WindowNode):
    """Tumbling and hopping windows: one get and one put per window of the record.

    The record's windows are computed arithmetically (starts are the multiples
    of ``advance`` in ``(t - size, t]``); a window whose ``end + grace`` is at
    or before stream time is closed and skipped, and the record counted late.
    """

    __slots__ = ("advance", "grace", "size")

    def __init__(
        self,
        store: str,
        windows: Windows,
        initializer: Initializer,
        aggregator: Aggregator,
    ) -> None:
        super().__init__(store, initializer, aggregator)
        if isinstance(windows, (SlidingWindows, SessionWindows)):
            raise TypeError(f"TimeAggregate takes tumbling or hopping windows, not {windows!r}")
        self.size = windows.size_ms
        self.advance = (
            windows.advance_ms if isinstance(windows, HoppingWindows) else windows.size_ms
        )
        self.grace = windows.grace_ms

    def push(self, key: object, value: object, ctx: Context[Any, Any]) -> None:
        timestamp, stream_time = _now(ctx)
        view = cast(AggregateView, ctx.store(self.store))
        key_bytes = view._serialize_key(key)
        prefix = data_prefix(key_bytes)
        size = self.size
        step = self.advance
        # Windows whose end + grace <= stream time are closed.
        open_from = stream_time - self.grace - size + 1
        last_start = timestamp - timestamp % step
        start = last_start - (last_start - timestamp + size - 1) // step * step
        get = view._txn.get
        value_de = view._value_de
        value_ser = view._value_ser
        children = self.children
        late = False
        kept = False
        while start <= last_start:
            if start < open_from:
                late = True
                start += step
                continue
            kept = True
            data_key = prefix + encode_ts(start)
            stored = get(data_key)
            current = self.initializer() if stored is None else value_de(stored)
            updated = self.aggregator(key, value, current)
            updated_bytes = value_ser(updated)
            if updated_bytes is not None:
                view._write(key_bytes, start, data_key, updated_bytes, stored is not None)
            elif stored is not None:  # an aggregate of None deletes the window
                view._remove(key_bytes, start, data_key)
            if children:
                windowed = Windowed(key, start, start + size)
                for child in children:
                    child.push(windowed, updated, ctx)
            start += step
        if late:
            ctx._record_late(dropped=not kept)


class SlidingAggregate(_WindowNode):
    """Sliding windows, after Kafka Streams' KIP-450 algorithm.

    Per record at ``t`` (``d`` = max difference): read the key's windows
    starting in ``[t - 2d, t + 1]`` (one range read); add the record to the
    existing windows that contain it; create the previous record's right
    window ``[p + 1, p + 1 + d]`` if it now holds ``t``; create the record's
    left window ``[t - d, t]`` from the aggregate of the newest window ending
    before ``t`` (which holds exactly the records in ``[t - d, t)``); and
    create its right window ``[t + 1, t + 1 + d]`` from the newest window
    holding ``t`` when later records exist within ``d``.
    """

    __slots__ = ("difference", "grace")

    def __init__(
        self,
        store: str,
        windows: SlidingWindows,
        initializer: Initializer,
        aggregator: Aggregator,
    ) -> None:
        super().__init__(store, initializer, aggregator)
        self.difference = windows.max_difference_ms
        self.grace = windows.grace_ms

    def push(self, key: object, value: object, ctx: Context[Any, Any]) -> None:
        timestamp, stream_time = _now(ctx)
        d = self.difference
        # A window is open while end + grace + 1 > stream time.
        open_end = stream_time - self.grace
        if timestamp + d < open_end:
            ctx._record_late()  # even [t, t + d], the last window holding t, is closed
            return
        view = cast(AggregateView, ctx.store(self.store))
        key_bytes = view._serialize_key(key)
        value_de = view._value_de
        windows = [
            (start, value_bytes, value_de(value_bytes))
            for start, value_bytes in view._fetch_raw(
                key_bytes, max(timestamp - 2 * d, MIN_TIMESTAMP), timestamp + 1
            )
        ]
        starts = set()
        left_source: Any = None
        right_source: bytes | None = None
        right_source_max = MIN_TIMESTAMP
        left_exists = right_exists = False
        previous: int | None = None
        late = False
        for start, value_bytes, stored in windows:
            starts.add(start)
            end = start + d
            max_ts = stored[0]
            if end < timestamp:
                left_source = stored[1]
                previous = max_ts
            elif end == timestamp:
                left_exists = True
                if max_ts < timestamp:
                    previous = max_ts
                late |= not self._update(
                    view, key, key_bytes, start, stored, True, value, timestamp, open_end, ctx
                )
            elif start <= timestamp:
                right_source, right_source_max = value_bytes, max_ts
                late |= not self._update(
                    view, key, key_bytes, start, stored, True, value, timestamp, open_end, ctx
                )
            else:  # start == t + 1: the record's right window exists
                right_exists = True
        if previous is not None:
            start = previous + 1
            if start not in starts and start + d >= timestamp:
                fresh = [timestamp, self.initializer()]
                late |= not self._update(
                    view, key, key_bytes, start, fresh, False, value, timestamp, open_end, ctx
                )
        if not left_exists:
            base = (
                left_source
                if previous is not None and previous >= timestamp - d
                else self.initializer()
            )
            left = [timestamp, base]
            late |= not self._update(
                view, key, key_bytes, timestamp - d, left, False, value, timestamp, open_end, ctx
            )
        if not right_exists and right_source is not None and right_source_max > timestamp:
            # The newest window holding t also holds every record in (t, t + 1 + d]:
            # its aggregate before t was added is the new right window's.
            start = timestamp + 1
            data_key = data_prefix(key_bytes) + encode_ts(start)
            view._write(key_bytes, start, data_key, right_source, False)
            self.forward(Windowed(key, start, start + d), value_de(right_source)[1], ctx)
        if late:
            ctx._record_late(dropped=False)  # late for older windows, added to newer ones

    def _update(
        self,
        view: AggregateView,
        key: object,
        key_bytes: bytes,
        start: int,
        stored: Any,
        existed: bool,
        value: object,
        timestamp: int,
        open_end: int,
        ctx: Context[Any, Any],
    ) -> bool:
        """Add the record to window ``start`` (``stored``: its ``[max_ts, aggregate]``,
        or a fresh one); False when the window is closed."""
        end = start + self.difference
        if end < open_end:
            return False
        updated = self.aggregator(key, value, stored[1])
        view._write(
            key_bytes,
            start,
            data_prefix(key_bytes) + encode_ts(start),
            _pair(view, max(timestamp, stored[0]), updated),
            existed,
        )
        self.forward(Windowed(key, start, end), updated, ctx)
        return True


class SessionAggregate(_WindowNode):
    """Session windows: merge the record with every open session within the gap.

    Sessions are stored under their end, so the candidates (end >= t - gap)
    are read in end order from ``t - gap`` on, stopping at the first session
    starting after ``t + gap``. Merged-away sessions are deleted and
    retracted downstream as ``(Windowed(key, start, end), None)``; a session
    whose window does not change is updated in place (no retraction).
    """

    __slots__ = ("close_after", "gap", "merger")

    def __init__(
        self,
        store: str,
        windows: SessionWindows,
        initializer: Initializer,
        aggregator: Aggregator,
        merger: Merger,
    ) -> None:
        super().__init__(store, initializer, aggregator)
        self.merger = merger
        self.gap = windows.inactivity_gap_ms
        self.close_after = windows.inactivity_gap_ms + windows.grace_ms + 1

    def push(self, key: object, value: object, ctx: Context[Any, Any]) -> None:
        timestamp, stream_time = _now(ctx)
        view = cast(AggregateView, ctx.store(self.store))
        key_bytes = view._serialize_key(key)
        gap = self.gap
        # A session is closed once end + close_after <= stream time.
        closed_before = stream_time - self.close_after
        latest_start = timestamp + gap
        found: list[tuple[int, int, object]] = []
        value_de = view._value_de
        for end, value_bytes in view._fetch_raw(
            key_bytes, max(timestamp - gap, MIN_TIMESTAMP), MAX_TIMESTAMP
        ):
            start, aggregate = value_de(value_bytes)
            if start > latest_start:
                break
            if end > closed_before:  # closed sessions (kept for retention) stay as they are
                found.append((start, end, aggregate))
        merged_start = min([timestamp, *(s for s, _, _ in found)])
        merged_end = max([timestamp, *(e for _, e, _ in found)])
        if merged_end <= closed_before:
            ctx._record_late()
            return
        aggregate = self.initializer()
        for _, _, other in found:
            aggregate = self.merger(key, aggregate, other)
        prefix = data_prefix(key_bytes)
        in_place = False
        for start, end, _ in found:
            if end == merged_end:
                in_place = True  # same slot: rewritten below
            else:
                view._remove(key_bytes, end, prefix + encode_ts(end))
            if (start, end) != (merged_start, merged_end):
                self.forward(Windowed(key, start, end), None, ctx)
        aggregate = self.aggregator(key, value, aggregate)
        view._write(
            key_bytes,
            merged_end,
            prefix + encode_ts(merged_end),
            _pair(view, merged_start, aggregate),
            in_place,
        )
        self.forward(Windowed(key, merged_start, merged_end), aggregate, ctx)
