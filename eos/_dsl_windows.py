"""Windowed aggregations in the DSL: ``GroupedStream.windowed_by(windows)``.

>>> import eos
>>> from eos.testing import TestDriver
>>> builder = eos.StreamBuilder()
>>> counts = (builder.stream("clicks").group_by_key()
...     .windowed_by(eos.TumblingWindows(size_ms=60_000))
...     .count(store="clicks-per-minute", backend="memory"))
>>> counts.final().to_stream().map(lambda w, n: (w.key, [w.start, n])).to("per-minute")
>>> driver = TestDriver(builder.build(), key_serde="string", value_serde="json")
>>> for t in (1_000, 2_000, 61_000):
...     driver.send("click", key="alice", timestamp=t)
>>> driver.output_pairs("per-minute")
[('alice', [0, 2])]

The result of ``count``/``aggregate``/``reduce`` is a :class:`WindowedTable`
keyed by :class:`eos.Windowed` ``(key, start, end)``. ``to_stream()`` emits
every update (as a Kafka Streams windowed KTable does); ``final()`` gives a
table whose ``to_stream()`` emits exactly one record per window, when the
window closes (Kafka Streams' ``suppress(untilWindowCloses)``). Window bounds,
close times and lateness are documented per window type in :mod:`eos.windows`.

The windows are kept in a changelog-backed, time-driven window store named
by ``store=`` (RocksDB by default) and deleted when they expire: at their
close plus ``retention_ms`` (sliding windows: plus ``2 * max_difference_ms``,
which the algorithm still reads), so the store and its changelog stay bounded.
``TestDriver.store(name)`` shows it as ``{Windowed(key, start, end): aggregate}``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Generic, TypeVar

from eos._dsl_nodes import MISSING, Node, Pass
from eos._window_aggregate import (
    ANY_KEY,
    AggregateStore,
    SessionAggregate,
    SlidingAggregate,
    TimeAggregate,
    close_and_retention,
)
from eos.dsl import Stream
from eos.errors import ConfigError
from eos.record import K, V
from eos.windows import (
    HoppingWindows,
    SessionWindows,
    SlidingWindows,
    TumblingWindows,
    Windowed,
    Windows,
)

if TYPE_CHECKING:
    from eos.dsl import StreamBuilder

__all__ = ["WindowedGroupedStream", "WindowedTable"]

A = TypeVar("A")

_WINDOW_TYPES = (TumblingWindows, HoppingWindows, SlidingWindows, SessionWindows)


class WindowedGroupedStream(Generic[K, V]):
    """A grouped stream with a window definition: aggregate it per key and window.

    Made by :meth:`eos.GroupedStream.windowed_by`. Each method keeps its
    windows in the window store ``store`` and returns a
    :class:`WindowedTable`.

    Common arguments:
        store: The window store's name (also names its changelog topic).
        backend: ``"rocksdb"`` (default) or ``"memory"``.
        retention_ms: How long windows are kept after they close, >= 0
            (default 0: deleted when they close). Closed windows are never
            updated, so this matters only to readers of the store.
    """

    def __init__(self, stream: Stream[K, V], windows: Windows) -> None:
        if not isinstance(windows, _WINDOW_TYPES):
            raise ConfigError(
                f"windowed_by() takes eos.TumblingWindows, eos.HoppingWindows, "
                f"eos.SlidingWindows or eos.SessionWindows, not {windows!r}",
                "windows",
            )
        self._stream = stream
        self._windows = windows

    def count(
        self, store: str, *, backend: str = "rocksdb", retention_ms: int = 0
    ) -> WindowedTable[K, int]:
        """Records per key and window."""

        def add_one(_key: object, _value: object, n: int) -> int:
            return n + 1

        def add(_key: object, a: int, b: int) -> int:
            return a + b

        return self._aggregate(store, int, add_one, add, backend, retention_ms)

    def aggregate(
        self,
        initializer: Callable[[], A],
        aggregator: Callable[[K, V, A], A],
        *,
        store: str,
        merger: Callable[[K, A, A], A] | None = None,
        backend: str = "rocksdb",
        retention_ms: int = 0,
    ) -> WindowedTable[K, A]:
        """``aggregator(key, value, current)`` per record and window; a new window
        starts from ``initializer()``.

        Args:
            merger: ``merger(key, a, b)`` combines two sessions' aggregates when a
                record merges them (and is applied to ``initializer()`` and each
                session joined, as Kafka Streams does). Required for
                :class:`~eos.SessionWindows`; not accepted for other windows.

        Raises:
            ConfigError: ``merger`` is missing for session windows or given for
                others, or ``retention_ms`` is invalid.
        """
        is_session = isinstance(self._windows, SessionWindows)
        if is_session and merger is None:
            raise ConfigError(
                "aggregate() over SessionWindows needs merger=: a function "
                "(key, aggregate_a, aggregate_b) -> aggregate that combines two sessions "
                "a record joins",
                "merger",
            )
        if not is_session and merger is not None:
            raise ConfigError(
                "merger= is used only by SessionWindows (only sessions merge)", "merger"
            )
        return self._aggregate(store, initializer, aggregator, merger, backend, retention_ms)

    def reduce(
        self,
        reducer: Callable[[V, V], V],
        *,
        store: str,
        backend: str = "rocksdb",
        retention_ms: int = 0,
    ) -> WindowedTable[K, V]:
        """``reducer(current, value)`` per record and window; a window's first value
        is kept as is (sessions merge with ``reducer`` too)."""

        def aggregator(_key: object, value: V, current: Any) -> V:
            return value if current is MISSING else reducer(current, value)

        def merger(_key: object, a: Any, b: Any) -> Any:
            return b if a is MISSING else reducer(a, b)

        return self._aggregate(store, _missing, aggregator, merger, backend, retention_ms)

    def _aggregate(
        self,
        store: str,
        initializer: Callable[[], Any],
        aggregator: Callable[[Any, Any, Any], Any],
        merger: Callable[[Any, Any, Any], Any] | None,
        backend: str,
        retention_ms: int,
    ) -> WindowedTable[Any, Any]:
        if type(retention_ms) is not int or retention_ms < 0:
            raise ConfigError(
                f"invalid retention_ms {retention_ms!r}: use an int >= 0 (milliseconds "
                "windows are kept after they close)",
                "retention_ms",
            )
        windows = self._windows
        close_ms, store_retention = close_and_retention(windows, retention_ms)
        final = Pass(False)
        spec = AggregateStore(
            store,
            backend=backend,
            key_serde=ANY_KEY,
            retention_ms=store_retention,
            windows=windows,
            close_ms=close_ms,
            final=final,
        )
        node: Node
        if isinstance(windows, SessionWindows):
            if merger is None:  # aggregate() checked it already
                raise ConfigError("SessionWindows need a merger", "merger")
            node = SessionAggregate(store, windows, initializer, aggregator, merger)
        elif isinstance(windows, SlidingWindows):
            node = SlidingAggregate(store, windows, initializer, aggregator)
        else:
            node = TimeAggregate(store, windows, initializer, aggregator)
        builder = self._stream._builder
        builder._stores.append(spec)
        self._stream._node.children.append(node)
        return WindowedTable(builder, node, final, store, False)


def _missing() -> object:
    return MISSING


class WindowedTable(Generic[K, V]):
    """A windowed aggregate: the latest value per :class:`eos.Windowed` key.

    Attributes:
        store_name: The window store holding it.
    """

    def __init__(
        self, builder: StreamBuilder, node: Node, final: Node, store: str, is_final: bool
    ) -> None:
        self._builder = builder
        self._node = node
        self._final = final
        self._is_final = is_final
        self.store_name = store

    def to_stream(self) -> Stream[Windowed[K], V]:
        """The stream of this table's records, keyed by ``Windowed(key, start, end)``.

        On an update table: every update of a window, in processing order;
        session merges first emit ``(Windowed(old session), None)`` for each
        session merged away. On a :meth:`final` table: one record per window,
        when it closes, in close order, with ``ctx.record`` None (so a
        ``process()`` node after it sees no input record).
        """
        out = Pass(False)
        self._node.children.append(out)
        return Stream(self._builder, out, False)

    def final(self) -> WindowedTable[K, V]:
        """The table of final results: each window once, when it closes.

        The result is emitted when the partition's stream time reaches the
        window's close time (tumbling and hopping: ``end + grace``; sliding:
        ``end + grace + 1``; sessions: ``last + gap + grace + 1``, see
        :mod:`eos.windows`), from the engine's expiry step after the record
        that moved stream time, inside that record's transaction, together
        with the window's deletion. Nothing is emitted for a window until
        stream time moves: a partition that receives no more records keeps
        its last windows open.
        """
        if self._is_final:
            return self
        return WindowedTable(self._builder, self._final, self._final, self.store_name, True)
