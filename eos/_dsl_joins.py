"""Tables, grouping, joins and repartition topics of the DSL.

>>> import eos
>>> from eos.testing import TestDriver
>>> builder = eos.StreamBuilder()
>>> customers = builder.table("customers", store="customers", backend="memory")
>>> orders = builder.stream("orders")
>>> orders.join(customers, lambda order, c: {**order, "tier": c["tier"]}).to("enriched")
>>> (orders.group_by(lambda k, order: order["region"])
...     .count(store="per-region", backend="memory").to_stream().to("per-region"))
>>> driver = TestDriver(builder.build(), key_serde="string", value_serde="json",
...                     application_id="shop")
>>> driver.send({"tier": "gold"}, key="alice", topic="customers")
>>> driver.send({"region": "eu"}, key="alice", topic="orders")
>>> driver.output_pairs("enriched"), driver.output_pairs("per-region")
([('alice', {'region': 'eu', 'tier': 'gold'})], [('eu', 1)])
>>> driver.topics()
['enriched', 'per-region', 'shop-per-region-repartition']

Tables. ``builder.table(topic, store=...)`` declares ``eos.Store(store,
source_topic=topic)``: the application consumes the topic with the stream
topics (co-partitioned with them) and writes each of its records, as is, to
the store partition of its partition; ``Stream.join``/``left_join`` read it
with ``ctx.store(store).get(key)``. A table of a topic has no update stream
(its records never reach the topology): ``Table.to_stream()`` of it is a
ConfigError. ``builder.global_table(topic, store=...)`` declares an
``eos.GlobalStore``: every instance holds every partition of the topic, and a
join looks a record up by ``key=fn(key, value)``.

Only tables of topics are joined. The table of an aggregation (``count``...)
lives in the partitions of the aggregation's own input, which a stream is
co-partitioned with only by accident: send its ``to_stream()`` to a topic and
join ``builder.table()`` of that topic.

Repartition topics. An aggregation of a re-keyed stream (``group_by(fn)``, or
``group_by_key()`` after ``map``/``select_key``/``flat_map``) and
``Stream.repartition()`` write the records to ``<application_id>-<name>-repartition``
(``name``: the aggregation's store, or the repartition's name) inside the
record's transaction, and the same topology consumes that topic: the records
of one key meet in one partition. The application id is known only at run
time (see :mod:`eos._dsl_topology`). A repartition record keeps its input
record's timestamp and headers.

Repartition serdes. Keys and values of a re-keyed stream are any Python
values, so the topic is written with :data:`REPARTITION_SERDE`, a
self-describing serde (bytes as they are, anything else as JSON, each tagged
by one leading byte; None is Kafka null). It round-trips ``str``, ``int``,
``float``, ``bool``, ``None``, ``list``, ``dict`` (string keys) and ``bytes``;
a tuple comes back as a list, as through JSON. One exception, for the keys of
a ``repartition()`` whose stream is joined with a table: those are written
with the table's key serde (its ``key_serde=``, else the application's), so
that they are partitioned as the table topic's keys are (same bytes, same
partitioner) and a key meets its table record in the same partition.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any, Final, Generic, TypeVar

from eos._dsl_nodes import MISSING, Aggregate, GroupAnchor, Join, Node, Pass, RepartitionSink
from eos._window_aggregate import ANY_KEY
from eos.errors import ConfigError
from eos.record import K, V
from eos.serde import Serde
from eos.state.base import Store

if TYPE_CHECKING:
    from eos._dsl_windows import WindowedGroupedStream
    from eos.dsl import Stream, StreamBuilder
    from eos.windows import Windows

__all__ = [
    "REPARTITION_SERDE",
    "GlobalTable",
    "GroupedStream",
    "Repartition",
    "Table",
    "TopicClaims",
    "check_partitions",
    "check_repartition",
    "join_node",
]

A = TypeVar("A")

REPARTITION_SERDE: Final[Serde] = ANY_KEY
"""The serde of repartition topics: ``b"b" + bytes`` for bytes, ``b"j" + JSON``
for anything else, None for None (see the module docstring). The same tagged
encoding as the keys of DSL window stores (:class:`eos._window_aggregate.AnyKeySerde`)."""

_NAME_RE: Final = re.compile(r"[A-Za-z0-9._-]{1,200}")


# -- repartition ----------------------------------------------------------------------


class Repartition:
    """One repartition topic of a topology, named ``<application_id>-<name>-repartition``.

    Attributes:
        name: The topic's middle part (an aggregation's store, or ``repartition(name)``).
        partitions: The partition count to create it with; None: the input topics'.
        source: The node its records are pushed into when they come back.
        sinks: The nodes writing to it (made by :meth:`sink`).
        key_serde: What its keys are written with after :meth:`finish`: a serde,
            or None for the application's key serde (a table join needs the keys
            as the table topic holds them).
        key_reason: Why ``key_serde`` was fixed ("" while it was not).
        table_topic: The table topic whose key serde it follows, if any.
    """

    __slots__ = ("key_reason", "key_serde", "name", "partitions", "sinks", "source", "table_topic")

    def __init__(self, name: str, partitions: int | None) -> None:
        self.name = name
        self.partitions = partitions
        self.source: Node = Pass(False)
        self.sinks: list[RepartitionSink] = []
        self.key_serde: Serde | None = REPARTITION_SERDE
        self.key_reason = ""
        self.table_topic: str | None = None

    def require_key(self, serde: Serde | None, reason: str, table_topic: str | None) -> None:
        """Fix the key serde for ``reason``; a second, different requirement is refused.

        Raises:
            ConfigError: Another use of this repartition needs other key bytes.
        """
        if self.key_reason and (serde is not self.key_serde or table_topic != self.table_topic):
            raise ConfigError(
                f"the stream repartitioned through {self.name!r} is partitioned for "
                f"{self.key_reason}, so it cannot also be used for {reason} (its keys would be "
                "in other partitions than the table's): call .repartition() before the join",
                "dsl",
            )
        self.key_serde = serde
        self.key_reason = reason
        self.table_topic = table_topic

    def sink(self, aggregation: str | None = None) -> RepartitionSink:
        """A new node writing to this topic. For the aggregation of store ``aggregation``,
        the keys stay in :data:`REPARTITION_SERDE` and null keys are dropped.

        Raises:
            ConfigError: A join already needs other key bytes (see :meth:`require_key`).
        """
        if aggregation is not None:
            self.require_key(REPARTITION_SERDE, f"the aggregation {aggregation!r}", None)
        sink = RepartitionSink(self.name, aggregation is not None, REPARTITION_SERDE)
        self.sinks.append(sink)
        return sink

    def finish(self) -> None:
        """Give the sinks the serdes (called by ``build()``)."""
        for sink in self.sinks:
            sink.key_serde = self.key_serde


def check_repartition(name: object, partitions: object) -> None:
    """Raise ConfigError unless ``name`` and ``partitions`` make a valid repartition."""
    if not isinstance(name, str) or _NAME_RE.fullmatch(name) is None or name in (".", ".."):
        raise ConfigError(
            f"invalid repartition name {name!r}: use 1-200 characters from A-Z a-z 0-9 . _ - "
            "(it names the topic <application_id>-<name>-repartition)",
            "dsl",
        )
    check_partitions(partitions, f"repartition {name!r}")


def check_partitions(partitions: object, what: str) -> None:
    """Raise ConfigError unless ``partitions`` is None or an int >= 1."""
    if partitions is not None and (
        isinstance(partitions, bool) or not isinstance(partitions, int) or partitions < 1
    ):
        raise ConfigError(
            f"invalid partitions={partitions!r} for {what}: an int >= 1, or None for the "
            "input topics' partition count",
            "dsl",
        )


class TopicClaims:
    """The topics a builder reads besides its streams: tables' and repartition topics.

    Args:
        streams: The builder's ``{topic: source node}`` of ``stream()`` (read only).
    """

    def __init__(self, streams: Mapping[str, object]) -> None:
        self._streams = streams
        self.tables: dict[str, str] = {}  # {topic: the table() or global_table() reading it}
        self.repartitions: dict[str, Repartition] = {}
        self._unnamed = 0

    def check_stream(self, topic: str) -> None:
        """Raise ConfigError if ``topic`` is a table's (it cannot also be a stream)."""
        if topic in self.tables:
            raise ConfigError(
                f"stream({topic!r}): the topic is read by {self.tables[topic]} already; a "
                "table's records go to its store, so the topic cannot also be a stream",
                "dsl",
            )

    def claim_table(self, topic: str, reader: str) -> None:
        """Reserve ``topic`` for the table ``reader`` describes."""
        if not isinstance(topic, str) or not topic:
            raise ConfigError(f"{reader}: invalid topic {topic!r}", "dsl")
        other = self.tables.get(topic) or ("stream()" if topic in self._streams else None)
        if other is not None:
            raise ConfigError(
                f"{reader} of topic {topic!r}: the topic is read by {other} already; a topic "
                "is one stream or one table",
                "dsl",
            )
        self.tables[topic] = reader

    def add_repartition(self, name: str | None, partitions: int | None) -> Repartition:
        """Register the repartition topic ``name`` (None: the next free ``repartition-<n>``,
        so every instance of one program names it alike)."""
        if name is None:
            while True:
                self._unnamed += 1
                name = f"repartition-{self._unnamed}"
                if name not in self.repartitions:
                    break
        check_repartition(name, partitions)
        if name in self.repartitions:
            raise ConfigError(
                f"the repartition topic name {name!r} is used twice (a group_by aggregation's "
                "topic is named after its store): give each repartition() its own name",
                "dsl",
            )
        spec = self.repartitions[name] = Repartition(name, partitions)
        return spec


# -- joins ----------------------------------------------------------------------------


def join_node(
    stream: Stream[Any, Any],
    table: object,
    joiner: Callable[[Any, Any], object],
    key: Callable[[Any, Any], object] | None,
    *,
    left: bool,
) -> Node:
    """The node joining ``stream`` with ``table``, or a ConfigError saying why it cannot be.

    ``table`` must be a table of the stream's builder. A table of a topic is
    looked up by the record's key, so the stream must be partitioned as the
    table's topic: not re-keyed since its topic, and if it comes from a
    repartition, that repartition writes keys as the table's.
    """
    what = "left_join" if left else "join"
    if not isinstance(table, (Table, GlobalTable)) or table._builder is not stream._builder:
        raise ConfigError(
            f"{what}() takes a table of the same StreamBuilder (builder.table() or "
            f"builder.global_table()), not {table!r}",
            "dsl",
        )
    if not callable(joiner):
        raise ConfigError(
            f"{what}() takes a joiner function (value, table_value), not {joiner!r}", "dsl"
        )
    name = table.store_name
    if isinstance(table, GlobalTable):
        if key is None:
            raise ConfigError(
                f"{what}() with the global table {name!r} needs key=: a function "
                "(key, value) -> the table key to look up",
                "dsl",
            )
        return Join(name, key, joiner, left)
    if key is not None:
        raise ConfigError(
            f"key= is for a global table: {what}() with the table {name!r} looks up the "
            "record's own key (the table's topic is co-partitioned with the stream); "
            "re-key the stream (select_key) and .repartition() to join on another key",
            "dsl",
        )
    if table.source_topic is None:
        raise ConfigError(
            f"{what}() with {name!r}, the table of an aggregation: its partitions are its "
            "input's, not the stream's. Send its to_stream() .to() a topic and join "
            "builder.table() of that topic",
            "dsl",
        )
    if stream._rekeyed:
        raise ConfigError(
            f"{what}() with the table {name!r} after map/flat_map/select_key: a re-keyed "
            "record is not in the partition of its key's table record. Call "
            ".repartition() before the join",
            "dsl",
        )
    if stream._upstream is not None:
        stream._upstream.require_key(
            table.key_serde, f"the join with table {name!r}", table.source_topic
        )
    return Join(name, None, joiner, left)


class GlobalTable(Generic[K, V]):
    """A table of every partition of a topic, on every instance (a GlobalKTable).

    Made by :meth:`eos.StreamBuilder.global_table`; join it with
    ``stream.join(table, key=fn(key, value), joiner=fn(value, table_value))``.

    Attributes:
        store_name: The global store holding it (``ctx.store(store_name)``, read-only).
        topic: The topic it is read from.
    """

    def __init__(self, builder: StreamBuilder, store: str, topic: str) -> None:
        self._builder = builder
        self.store_name = store
        self.topic = topic


# -- grouping and tables ---------------------------------------------------------------


class GroupedStream(Generic[K, V]):
    """A stream grouped by key; aggregate it into a :class:`Table`.

    Made by :meth:`eos.dsl.Stream.group_by_key` and :meth:`eos.dsl.Stream.group_by`.
    A group of re-keyed records gets its repartition topic when its aggregation
    is declared (the topic is named after the aggregation's store).
    """

    def __init__(
        self,
        stream: Stream[Any, Any],
        key_fn: Callable[[Any, Any], object] | None,
        *,
        repartition: bool = False,
        partitions: int | None = None,
    ) -> None:
        from eos.dsl import Stream  # eos.dsl imports this module

        self._stream = stream
        self._anchor: GroupAnchor | None = None
        if repartition:
            builder = stream._builder
            self._anchor = GroupAnchor(builder._topology.claims, stream._node, key_fn, partitions)
            # What the aggregations attach to (windowed_by's too).
            self._stream = Stream(builder, self._anchor, False)

    def _aggregate(
        self,
        store: str,
        initializer: Callable[[], object],
        aggregator: Callable[[Any, Any, Any], object],
        backend: str,
    ) -> Table[Any, Any]:
        stream = self._stream
        builder = stream._builder
        builder._stores.append(Store(store, backend=backend))
        node = Aggregate(store, initializer, aggregator)
        stream._node.children.append(node)
        upstream = stream._upstream if self._anchor is None else self._anchor.last
        return Table(builder, node, store, upstream=upstream)

    def count(self, store: str, *, backend: str = "rocksdb") -> Table[K, int]:
        """Records per key, kept in ``store``."""

        def add_one(_key: object, _value: object, n: int) -> int:
            return n + 1

        return self._aggregate(store, int, add_one, backend)

    def aggregate(
        self,
        initializer: Callable[[], A],
        aggregator: Callable[[K, V, A], A],
        *,
        store: str,
        backend: str = "rocksdb",
    ) -> Table[K, A]:
        """``aggregator(key, value, current)`` per record; ``initializer()`` starts a key."""
        return self._aggregate(store, initializer, aggregator, backend)

    def reduce(
        self, reducer: Callable[[V, V], V], *, store: str, backend: str = "rocksdb"
    ) -> Table[K, V]:
        """``reducer(current, value)``; the first value of a key is kept as is."""

        def aggregator(_key: object, value: V, current: Any) -> V:
            return value if current is MISSING else reducer(current, value)

        return self._aggregate(store, lambda: MISSING, aggregator, backend)

    def windowed_by(self, windows: Windows) -> WindowedGroupedStream[K, V]:
        """Aggregate per key and window: ``windows`` is an ``eos.TumblingWindows``,
        ``HoppingWindows``, ``SlidingWindows`` or ``SessionWindows``.

        Raises:
            ConfigError: ``windows`` is none of those.
        """
        from eos._dsl_windows import WindowedGroupedStream

        return WindowedGroupedStream(self._stream, windows)


class Table(Generic[K, V]):
    """A table: the latest value per key (a KTable), kept in the store ``store_name``.

    Either the result of an aggregation (changelog-backed, its updates flow
    downstream) or the table of a topic (:meth:`eos.dsl.StreamBuilder.table`,
    joined with :meth:`eos.dsl.Stream.join`).

    Attributes:
        store_name: The store holding it.
        source_topic: The topic of a ``builder.table()``; None for an aggregation.
        key_serde: The key serde ``table()`` named (None: the application's).
    """

    def __init__(
        self,
        builder: StreamBuilder,
        node: Node | None,
        store: str,
        *,
        source_topic: str | None = None,
        key_serde: Serde | None = None,
        upstream: Repartition | None = None,
    ) -> None:
        self._builder = builder
        self._node = node
        self._upstream = upstream
        self.store_name = store
        self.source_topic = source_topic
        self.key_serde = key_serde

    def to_stream(self) -> Stream[K, V]:
        """The stream of updates: one record per change of a key's value.

        Raises:
            ConfigError: A table of a topic has none (its records go to the
                store, not through the topology): read the topic with
                ``builder.stream()`` in another topology instead.
        """
        if self._node is None:
            raise ConfigError(
                f"to_stream() of the table {self.store_name!r} of topic {self.source_topic!r}: "
                "a table of a topic has no update stream in the topology (its records are "
                "written to the store, never processed); join it, or read the topic with "
                "builder.stream() in another topology",
                "dsl",
            )
        from eos.dsl import Stream  # eos.dsl imports this module

        out = Pass(False)
        self._node.children.append(out)
        return Stream(self._builder, out, False, self._upstream)
