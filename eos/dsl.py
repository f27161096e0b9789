"""A small stream DSL compiled into one :class:`~eos.processor.Processor`.

>>> import eos
>>> from eos.testing import TestDriver
>>> builder = eos.StreamBuilder()
>>> orders = builder.stream("input-orders")
>>> orders.filter(lambda k, v: v is not None).map_values(str.upper).to("output-orders")
>>> counts = orders.group_by_key().count(store="order-counts")
>>> counts.to_stream().map_values(str).to("order-counts", value_serde="string")
>>> processor = builder.build()
>>> processor.topics
['input-orders']
>>> driver = TestDriver(processor, key_serde="string", value_serde="string")
>>> driver.send("book", key="alice")
>>> driver.output_pairs("output-orders"), driver.output_pairs("order-counts")
([('alice', 'BOOK')], [('alice', '1')])

In an application, the processor's source topics are its input topics
(``input_topics`` may be left out; if given, it must name the same topics)::

    app = eos.Application(application_id="orders", bootstrap_servers="localhost:9092",
                          processor=builder.build(), key_serde="string", value_serde="string")

There is no second engine: ``build()`` returns a Processor
(:mod:`eos._dsl_topology`) whose ``process`` pushes each record through the
graph of nodes (:mod:`eos._dsl_nodes`), in the same transaction as everything
else. Aggregations (``count``, ``aggregate``, ``reduce``) keep their state in
an :class:`~eos.state.base.Store` (changelog-backed, restored on assignment)
and emit every update downstream, as a Kafka Streams KTable does. A count is
an ``int``: map it to the sink's type (``map_values(str)`` above) before a
``to()`` whose serde expects something else.

Windowed aggregations: ``group_by_key().windowed_by(eos.TumblingWindows(...))``
(also hopping, sliding and session windows) then ``count``/``aggregate``/
``reduce`` give a table keyed by ``eos.Windowed(key, start, end)``, whose
``final()`` emits one result per window when it closes (see
:mod:`eos._dsl_windows` and :mod:`eos.windows`).

Aggregations are per input partition, so they need the records of one key in
one partition: ``group_by(fn)``, and ``group_by_key()`` after re-keying
(``map``, ``flat_map``, ``select_key``), write the re-keyed records to a
repartition topic ``<application_id>-<store>-repartition`` in the same
transaction and aggregate them when they come back from it, as Kafka Streams
does; ``repartition()`` makes one explicitly. Tables of topics
(``builder.table``), global tables (``builder.global_table``) and
stream-table joins (``join``, ``left_join``) are described in
:mod:`eos._dsl_joins`.
"""

from __future__ import annotations

import inspect
from collections.abc import Awaitable, Callable, Iterable
from typing import Any, Generic, Literal, TypeVar, overload

from eos._dsl_joins import (
    GlobalTable,
    GroupedStream,
    Repartition,
    Table,
    check_partitions,
    join_node,
)
from eos._dsl_nodes import (
    Branch,
    CallProcessor,
    Filter,
    FilterAsync,
    FlatMap,
    FlatMapValues,
    Map,
    MapValues,
    MapValuesAsync,
    Node,
    Pass,
    Peek,
)
from eos._dsl_topology import (
    InputSerdes,
    Topology,
    global_stores_for,
    input_serdes_for,
    input_topics_for,
    internal_topics_for,
    sink_serdes,
    source_topics,
    table_topics_for,
)
from eos.errors import ConfigError
from eos.processor import AsyncProcessor, Processor
from eos.record import K, V
from eos.serde import JsonValue, Serde

__all__ = [
    "GlobalTable",
    "GroupedStream",
    "InputSerdes",
    "Stream",
    "StreamBuilder",
    "Table",
    "global_stores_for",
    "input_serdes_for",
    "input_topics_for",
    "internal_topics_for",
    "sink_serdes",
    "source_topics",
    "table_topics_for",
]

K2 = TypeVar("K2")
V2 = TypeVar("V2")
T = TypeVar("T")
R = TypeVar("R")

_BytesName = Literal["bytes"]
_StrName = Literal["string", "str"]
_JsonName = Literal["json"]


class Stream(Generic[K, V]):
    """A record stream (a Kafka Streams KStream). Every method returns a new stream.

    ``Stream[K, V]`` carries keys of type ``K`` and values of type ``V``:
    ``builder.stream(topic, key_serde="string", value_serde="json")`` is a
    ``Stream[str, JsonValue]``, ``map_values(len)`` of it a ``Stream[str, int]``.
    A stream whose serdes are the application's is a ``Stream[object, object]``
    (the builder cannot know them).
    """

    def __init__(
        self,
        builder: StreamBuilder,
        node: Node,
        rekeyed: bool,
        upstream: Repartition | None = None,
    ) -> None:
        self._builder = builder
        self._node = node
        self._rekeyed = rekeyed
        # The repartition topic this stream was last partitioned by (None: the
        # source topics'); forgotten once re-keyed.
        self._upstream = upstream

    def _then(self, node: Node) -> Stream[Any, Any]:
        self._node.children.append(node)
        rekeyed = self._rekeyed or node.rekeys
        return Stream(self._builder, node, rekeyed, None if rekeyed else self._upstream)

    def filter(self, predicate: Callable[[K, V], object]) -> Stream[K, V]:
        """Keep records for which ``predicate(key, value)`` is true."""
        return self._then(Filter(predicate, True))

    def filter_not(self, predicate: Callable[[K, V], object]) -> Stream[K, V]:
        """Drop records for which ``predicate(key, value)`` is true."""
        return self._then(Filter(predicate, False))

    def map(self, fn: Callable[[K, V], tuple[K2, V2]]) -> Stream[K2, V2]:
        """Replace each record by ``fn(key, value) -> (new_key, new_value)`` (re-keys)."""
        return self._then(Map(fn))

    def select_key(self, fn: Callable[[K, V], K2]) -> Stream[K2, V]:
        """New key ``fn(key, value)``, same value (re-keys)."""
        return self._then(Map(lambda k, v: (fn(k, v), v)))

    def map_values(self, fn: Callable[[V], V2]) -> Stream[K, V2]:
        """New value ``fn(value)``, same key."""
        return self._then(MapValues(fn))

    def map_values_async(self, fn: Callable[[V], Awaitable[V2]]) -> Stream[K, V2]:
        """New value ``await fn(value)``, same key: an I/O call per record (HTTP, a database).

        The topology then runs as an :class:`~eos.processor.AsyncProcessor`: up to
        ``max_in_flight`` records at once, one after another per key, exactly-once
        (see docs/async.md). ``fn`` is an ``async def``.
        """
        return self._then_async(MapValuesAsync(fn), fn, "map_values_async")

    def filter_async(self, predicate: Callable[[K, V], Awaitable[object]]) -> Stream[K, V]:
        """Keep records for which ``await predicate(key, value)`` is true (async, as
        :meth:`map_values_async`)."""
        return self._then_async(FilterAsync(predicate), predicate, "filter_async")

    def _then_async(self, node: Node, fn: object, what: str) -> Stream[Any, Any]:
        if not inspect.iscoroutinefunction(fn) and not inspect.iscoroutinefunction(
            getattr(fn, "__call__", None)  # noqa: B004  # an object with an async __call__
        ):
            raise ConfigError(
                f"Stream.{what}() takes an async def (a coroutine function), not {fn!r}; "
                f"use {what.removesuffix('_async')}() for a plain function",
                "dsl",
            )
        self._builder._topology.is_async = True
        return self._then(node)

    def flat_map(self, fn: Callable[[K, V], Iterable[tuple[K2, V2]]]) -> Stream[K2, V2]:
        """Zero or more ``(key, value)`` records per record (re-keys)."""
        return self._then(FlatMap(fn))

    def flat_map_values(self, fn: Callable[[V], Iterable[V2]]) -> Stream[K, V2]:
        """Zero or more values per record, same key."""
        return self._then(FlatMapValues(fn))

    def peek(self, fn: Callable[[K, V], object]) -> Stream[K, V]:
        """Call ``fn(key, value)`` and pass the record on unchanged (logging, printing)."""
        return self._then(Peek(fn))

    def branch(self, *predicates: Callable[[K, V], object]) -> list[Stream[K, V]]:
        """Split into one stream per predicate; a record goes to the first that matches.

        Records matching none are dropped (add ``lambda k, v: True`` last to keep them).
        """
        splitter = Branch(list(predicates))
        self._node.children.append(splitter)
        streams: list[Stream[K, V]] = []
        for _ in predicates:
            out = Pass(False)
            splitter.outputs.append(out)
            streams.append(Stream(self._builder, out, self._rekeyed, self._upstream))
        return streams

    def process(self, processor: Processor[K, V]) -> None:
        """Hand each record to ``processor.process`` (its stores are declared too).

        The processor's types are the stream's: a ``Stream[str, int]`` takes a
        ``Processor[str, int]`` (or an unparameterised one on an untyped stream).
        """
        if isinstance(processor, AsyncProcessor):
            raise ConfigError(
                f"Stream.process() takes a synchronous eos.Processor, not the AsyncProcessor "
                f"{type(processor).__name__}: do the awaiting in map_values_async() or "
                "filter_async(), or run the AsyncProcessor as the application's processor",
                "dsl",
            )
        topology = self._builder._topology
        topology.stores.extend(processor.stores)
        topology.processors.append(processor)
        self._node.children.append(CallProcessor(processor))

    def to(
        self,
        topic: str,
        *,
        key_serde: str | Serde | None = None,
        value_serde: str | Serde | None = None,
    ) -> None:
        """Send every record to ``topic``.

        Serdes default to the ones ``builder.stream(topic, ...)`` names for the
        same topic (a repartition topic keeps one format), else the application's.

        Raises:
            ConfigError: ``topic`` already has a ``to()`` with other serdes.
        """
        self._node.children.append(self._builder._topology.sink(topic, key_serde, value_serde))

    def group_by_key(self) -> GroupedStream[K, V]:
        """Group by the current key, for ``count``, ``aggregate`` and ``reduce``.

        After ``map``, ``flat_map`` or ``select_key`` the aggregation reads the
        records from a repartition topic, as after :meth:`group_by`.
        """
        return GroupedStream(self, None, repartition=self._rekeyed)

    def group_by(
        self, fn: Callable[[K, V], K2], *, partitions: int | None = None
    ) -> GroupedStream[K2, V]:
        """Group by the new key ``fn(key, value)``, for ``count``, ``aggregate``, ``reduce``
        and ``windowed_by``.

        The re-keyed records go through the repartition topic
        ``<application_id>-<store>-repartition`` (``store``: the aggregation's),
        so each new key is aggregated in one partition. Records whose new key
        is None are dropped (an aggregation has no group for them).

        Args:
            fn: The new key of each record.
            partitions: The repartition topic's partition count (default: the
                input topics').

        Raises:
            ConfigError: ``fn`` is not callable or ``partitions`` is invalid.
        """
        if not callable(fn):
            raise ConfigError(f"group_by() takes a function (key, value) -> key, not {fn!r}", "dsl")
        check_partitions(partitions, "group_by()")
        return GroupedStream(self, fn, repartition=True, partitions=partitions)

    def repartition(self, name: str | None = None, partitions: int | None = None) -> Stream[K, V]:
        """Send the records through the repartition topic ``<application_id>-<name>-repartition``,
        partitioned by their current key; the returned stream reads it back.

        After a re-key, joins with a table (and aggregations) need it.

        Args:
            name: Names the topic; default ``repartition-<n>`` in declaration
                order (every instance of one program agrees on it).
            partitions: The topic's partition count (default: the input topics').

        Raises:
            ConfigError: ``name`` is invalid or already used, or ``partitions`` is invalid.
        """
        spec = self._builder._topology.claims.add_repartition(name, partitions)
        self._node.children.append(spec.sink())
        return Stream(self._builder, spec.source, False, spec)

    @overload
    def join(
        self, table: Table[Any, T], joiner: Callable[[V, T], R], *, key: None = None
    ) -> Stream[K, R]: ...
    @overload
    def join(
        self, table: GlobalTable[K2, T], joiner: Callable[[V, T], R], *, key: Callable[[K, V], K2]
    ) -> Stream[K, R]: ...
    def join(
        self,
        table: Table[Any, Any] | GlobalTable[Any, Any],
        joiner: Callable[[V, Any], object],
        *,
        key: Callable[[K, V], object] | None = None,
    ) -> Stream[K, Any]:
        """Inner join: ``(key, joiner(value, table_value))`` for each record whose key has a
        record in ``table``; records without one are dropped (so is a null key).

        ``table`` is a :meth:`StreamBuilder.table` (looked up by the record's
        key; its topic is co-partitioned with the stream's) or a
        :meth:`StreamBuilder.global_table` (looked up by ``key(key, value)``,
        required). The table's value is its latest record processed before
        this one.

        Raises:
            ConfigError: ``table`` is not a table of this builder (an
                aggregation's table is not joined: see :mod:`eos._dsl_joins`);
                ``key`` is missing for a global table or given for a table; or
                the stream was re-keyed since its topic (call
                :meth:`repartition` first).
        """
        return self._then(join_node(self, table, joiner, key, left=False))

    @overload
    def left_join(
        self, table: Table[Any, T], joiner: Callable[[V, T | None], R], *, key: None = None
    ) -> Stream[K, R]: ...
    @overload
    def left_join(
        self,
        table: GlobalTable[K2, T],
        joiner: Callable[[V, T | None], R],
        *,
        key: Callable[[K, V], K2],
    ) -> Stream[K, R]: ...
    def left_join(
        self,
        table: Table[Any, Any] | GlobalTable[Any, Any],
        joiner: Callable[[V, Any], object],
        *,
        key: Callable[[K, V], object] | None = None,
    ) -> Stream[K, Any]:
        """Left join: ``(key, joiner(value, table_value_or_None))`` for every record.

        As :meth:`join`, but a record without a table record (or with a null
        key, or a null ``key(key, value)``) is joined with None.
        """
        return self._then(join_node(self, table, joiner, key, left=True))


class StreamBuilder:
    """Builds a processing graph; :meth:`build` compiles it into a Processor."""

    def __init__(self) -> None:
        self._topology = Topology()

    @property
    def _stores(self) -> list[Any]:
        """The Store, WindowStore and GlobalStore declarations (``_dsl_windows`` adds to it)."""
        return self._topology.stores

    # One overload per kind of key serde and kind of value serde: a serde object
    # (or none: the application's), "bytes", "string"/"str" or "json".
    @overload
    def stream(
        self, topic: str, *, key_serde: Serde[K] | None = None, value_serde: Serde[V] | None = None
    ) -> Stream[K, V]: ...
    @overload
    def stream(
        self, topic: str, *, key_serde: Serde[K] | None = None, value_serde: _BytesName
    ) -> Stream[K, bytes]: ...
    @overload
    def stream(
        self, topic: str, *, key_serde: Serde[K] | None = None, value_serde: _StrName
    ) -> Stream[K, str]: ...
    @overload
    def stream(
        self, topic: str, *, key_serde: Serde[K] | None = None, value_serde: _JsonName
    ) -> Stream[K, JsonValue]: ...
    @overload
    def stream(
        self, topic: str, *, key_serde: _BytesName, value_serde: Serde[V] | None = None
    ) -> Stream[bytes, V]: ...
    @overload
    def stream(
        self, topic: str, *, key_serde: _BytesName, value_serde: _BytesName
    ) -> Stream[bytes, bytes]: ...
    @overload
    def stream(
        self, topic: str, *, key_serde: _BytesName, value_serde: _StrName
    ) -> Stream[bytes, str]: ...
    @overload
    def stream(
        self, topic: str, *, key_serde: _BytesName, value_serde: _JsonName
    ) -> Stream[bytes, JsonValue]: ...
    @overload
    def stream(
        self, topic: str, *, key_serde: _StrName, value_serde: Serde[V] | None = None
    ) -> Stream[str, V]: ...
    @overload
    def stream(
        self, topic: str, *, key_serde: _StrName, value_serde: _BytesName
    ) -> Stream[str, bytes]: ...
    @overload
    def stream(
        self, topic: str, *, key_serde: _StrName, value_serde: _StrName
    ) -> Stream[str, str]: ...
    @overload
    def stream(
        self, topic: str, *, key_serde: _StrName, value_serde: _JsonName
    ) -> Stream[str, JsonValue]: ...
    @overload
    def stream(
        self, topic: str, *, key_serde: _JsonName, value_serde: Serde[V] | None = None
    ) -> Stream[JsonValue, V]: ...
    @overload
    def stream(
        self, topic: str, *, key_serde: _JsonName, value_serde: _BytesName
    ) -> Stream[JsonValue, bytes]: ...
    @overload
    def stream(
        self, topic: str, *, key_serde: _JsonName, value_serde: _StrName
    ) -> Stream[JsonValue, str]: ...
    @overload
    def stream(
        self, topic: str, *, key_serde: _JsonName, value_serde: _JsonName
    ) -> Stream[JsonValue, JsonValue]: ...
    def stream(
        self,
        topic: str,
        *,
        key_serde: str | Serde | None = None,
        value_serde: str | Serde | None = None,
    ) -> Stream[Any, Any]:
        """The records of ``topic``; the built processor's input topics are these.

        ``key_serde`` and ``value_serde`` (a name or a serde object) decode this
        topic's records, instead of the application's serdes, and type the
        stream: ``stream("orders", key_serde="string", value_serde="json")`` is
        a ``Stream[str, JsonValue]``; with ``eos.StringSerde()`` objects or your
        own ``Serde[T]`` the stream is typed by them. Without serdes the stream
        is a ``Stream[object, object]`` decoded with the application's.

        Raises:
            ConfigError: a serde is invalid, or ``topic`` was given other serdes
                by an earlier ``stream()`` (one topic holds one format).
        """
        return Stream(self, self._topology.source(topic, key_serde, value_serde), False)

    def table(
        self,
        topic: str,
        *,
        store: str,
        key_serde: str | Serde | None = None,
        value_serde: str | Serde | None = None,
        backend: str = "rocksdb",
    ) -> Table[Any, Any]:
        """The table of ``topic``: its latest value per key, in the store ``store``.

        A null value deletes the key; a null key is ignored. The topic is the
        table's changelog (no second copy): the application consumes it with
        the stream topics, so it must be co-partitioned with them (same
        partition count, same keys). Join it with :meth:`Stream.join`; read it
        with ``ctx.store(store)`` (read-only).

        Args:
            topic: The (compacted) topic.
            store: The store's name.
            key_serde: The topic's key serde (default: the application's); as
                in :meth:`stream`, the application decodes the topic with it.
            value_serde: The topic's value serde (default: the application's).
            backend: ``"rocksdb"`` (default) or ``"memory"``.

        Raises:
            ConfigError: A serde, the store or the backend is invalid, or the
                topic is already a stream or a table of this builder.
        """
        key = self._topology.table(topic, store, key_serde, value_serde, backend, whole=False)
        return Table(self, None, store, source_topic=topic, key_serde=key)

    def global_table(
        self,
        topic: str,
        *,
        store: str,
        key_serde: str | Serde | None = None,
        value_serde: str | Serde | None = None,
        backend: str = "rocksdb",
    ) -> GlobalTable[Any, Any]:
        """The table of every partition of ``topic``, kept whole by every instance.

        Join it with ``stream.join(table, key=fn(key, value), joiner=...)``;
        read it with ``ctx.store(store)`` (read-only). The application starts
        processing once it has caught up with the topic, and keeps it up to date.

        Args:
            topic: The (compacted) topic; not an input topic.
            store: The global store's name.
            key_serde: The topic's key serde (default: the application's).
            value_serde: The topic's value serde (default: the application's).
            backend: ``"rocksdb"`` (default) or ``"memory"``.

        Raises:
            ConfigError: As :meth:`table`.
        """
        self._topology.table(topic, store, key_serde, value_serde, backend, whole=True)
        return GlobalTable(self, store, topic)

    @property
    def topics(self) -> list[str]:
        """The source topics: the application's ``input_topics`` (stream topics, then
        table topics; repartition and global table topics are not among them)."""
        return self._topology.topics

    def on_setup(self, fn: Callable[[], Awaitable[object]]) -> Callable[[], Awaitable[object]]:
        """Await ``fn()`` once on the processing loop before the first record: where the
        clients of ``map_values_async``/``filter_async`` steps are opened.

        For a topology with async steps only (it runs as an
        :class:`~eos.processor.AsyncProcessor`, whose ``setup`` awaits these in order).
        Returns ``fn``, so it works as a decorator.
        """
        self._topology.setups.append(_coroutine_function(fn, "on_setup"))
        return fn

    def on_teardown(self, fn: Callable[[], Awaitable[object]]) -> Callable[[], Awaitable[object]]:
        """Await ``fn()`` once on the processing loop when the application stops (close
        clients), after the last record; the hooks run in reverse order of registration."""
        self._topology.teardowns.append(_coroutine_function(fn, "on_teardown"))
        return fn

    def build(self) -> Processor:
        """Compile the graph into a Processor."""
        return self._topology.build()


def _coroutine_function(fn: Callable[..., Any], what: str) -> Callable[..., Any]:
    if not callable(fn) or not (
        inspect.iscoroutinefunction(fn)
        or inspect.iscoroutinefunction(getattr(fn, "__call__", None))  # noqa: B004
    ):
        raise ConfigError(
            f"StreamBuilder.{what}() takes an async def (a coroutine function), not {fn!r}",
            "dsl",
        )
    return fn
