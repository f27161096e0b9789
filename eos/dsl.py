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

There is no second engine: ``build()`` returns a Processor whose ``process``
pushes each record through the graph of nodes, in the same transaction as
everything else. Aggregations (``count``, ``aggregate``, ``reduce``) keep their
state in an :class:`~eos.state.base.Store` (changelog-backed, restored on
assignment) and emit every update downstream, as a Kafka Streams KTable does.
A count is an ``int``: map it to the sink's type (``map_values(str)`` above)
before a ``to()`` whose serde expects something else.

Aggregations are per input partition, so they need the records of one key in
one partition: re-keying (``map``, ``flat_map``, ``select_key``) before
``group_by_key()`` is rejected at build time. Write the re-keyed stream
``.to()`` a topic and aggregate a stream of that topic instead.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from typing import Generic, TypeVar

from eos.errors import ConfigError
from eos.processor import Context, Processor, _wrap
from eos.record import Record, TopicPartition
from eos.serde import Serde, resolve_serde
from eos.state.base import Store

__all__ = [
    "GroupedStream",
    "Stream",
    "StreamBuilder",
    "Table",
    "input_topics_for",
    "sink_serdes",
    "source_topics",
]

K = TypeVar("K")
V = TypeVar("V")
Emit = Callable[[object, object, Context], None]


class _Node:
    """One operator: receives ``(key, value)`` and pushes results to its children."""

    __slots__ = ("children", "rekeys")

    def __init__(self, rekeys: bool) -> None:
        self.children: list[_Node] = []
        self.rekeys = rekeys

    def push(self, key: object, value: object, ctx: Context) -> None:
        raise NotImplementedError

    def forward(self, key: object, value: object, ctx: Context) -> None:
        for child in self.children:
            child.push(key, value, ctx)


class _Pass(_Node):
    __slots__ = ()

    def push(self, key: object, value: object, ctx: Context) -> None:
        for child in self.children:
            child.push(key, value, ctx)


class _Filter(_Node):
    __slots__ = ("keep", "predicate")

    def __init__(self, predicate: Callable[[object, object], bool], keep: bool) -> None:
        super().__init__(False)
        self.predicate = predicate
        self.keep = keep

    def push(self, key: object, value: object, ctx: Context) -> None:
        if bool(self.predicate(key, value)) is self.keep:
            for child in self.children:
                child.push(key, value, ctx)


class _Map(_Node):
    __slots__ = ("fn",)

    def __init__(self, fn: Callable[[object, object], tuple[object, object]]) -> None:
        super().__init__(True)
        self.fn = fn

    def push(self, key: object, value: object, ctx: Context) -> None:
        new_key, new_value = self.fn(key, value)
        for child in self.children:
            child.push(new_key, new_value, ctx)


class _MapValues(_Node):
    __slots__ = ("fn",)

    def __init__(self, fn: Callable[[object], object]) -> None:
        super().__init__(False)
        self.fn = fn

    def push(self, key: object, value: object, ctx: Context) -> None:
        new_value = self.fn(value)
        for child in self.children:
            child.push(key, new_value, ctx)


class _FlatMap(_Node):
    __slots__ = ("fn",)

    def __init__(self, fn: Callable[[object, object], Iterable[tuple[object, object]]]) -> None:
        super().__init__(True)
        self.fn = fn

    def push(self, key: object, value: object, ctx: Context) -> None:
        for new_key, new_value in self.fn(key, value):
            self.forward(new_key, new_value, ctx)


class _FlatMapValues(_Node):
    __slots__ = ("fn",)

    def __init__(self, fn: Callable[[object], Iterable[object]]) -> None:
        super().__init__(False)
        self.fn = fn

    def push(self, key: object, value: object, ctx: Context) -> None:
        for new_value in self.fn(value):
            self.forward(key, new_value, ctx)


class _Peek(_Node):
    __slots__ = ("fn",)

    def __init__(self, fn: Callable[[object, object], object]) -> None:
        super().__init__(False)
        self.fn = fn

    def push(self, key: object, value: object, ctx: Context) -> None:
        self.fn(key, value)
        self.forward(key, value, ctx)


class _Sink(_Node):
    __slots__ = ("key_serde", "topic", "value_serde")

    def __init__(self, topic: str, key_serde: Serde | None, value_serde: Serde | None) -> None:
        super().__init__(False)
        self.topic = topic
        self.key_serde = key_serde
        self.value_serde = value_serde

    def push(self, key: object, value: object, ctx: Context) -> None:
        if self.key_serde is None and self.value_serde is None:
            ctx.send(self.topic, value, key=key)
            return
        # A part without its own serde uses the application's, as ctx.send would,
        # and a failing serde raises SerializationError, as in ctx.send.
        kser = ctx._key_serialize if self.key_serde is None else self.key_serde.serialize
        vser = ctx._value_serialize if self.value_serde is None else self.value_serde.serialize
        try:
            kb = key if kser is None else kser(key)
        except Exception as exc:
            raise _wrap(exc, "key", self.topic) from exc
        try:
            vb = value if vser is None else vser(value)
        except Exception as exc:
            raise _wrap(exc, "value", self.topic) from exc
        ctx.send_raw(self.topic, vb, key=kb)  # type: ignore[arg-type]


class _CallProcessor(_Node):
    """Hands ``(key, value)`` to a user Processor as a record of the current input."""

    __slots__ = ("processor",)

    def __init__(self, processor: Processor) -> None:
        super().__init__(False)
        self.processor = processor

    def push(self, key: object, value: object, ctx: Context) -> None:
        record = ctx.record
        if record is None:
            raise RuntimeError("DSL node called outside processing")
        self.processor.process(record._replace(key=key, value=value), ctx)


class _Aggregate(_Node):
    """``agg = aggregator(key, value, store.get(key, initializer()))``; emits updates."""

    __slots__ = ("aggregator", "initializer", "store")

    def __init__(
        self,
        store: str,
        initializer: Callable[[], object],
        aggregator: Callable[[object, object, object], object],
    ) -> None:
        super().__init__(False)
        self.store = store
        self.initializer = initializer
        self.aggregator = aggregator

    def push(self, key: object, value: object, ctx: Context) -> None:
        table = ctx.store(self.store)
        current = table.get(key, _MISSING)
        if current is _MISSING:
            current = self.initializer()
        updated = self.aggregator(key, value, current)
        table[key] = updated
        self.forward(key, updated, ctx)


_MISSING = object()


class Stream(Generic[K, V]):
    """A record stream (a Kafka Streams KStream). Every method returns a new stream."""

    def __init__(self, builder: StreamBuilder, node: _Node, rekeyed: bool) -> None:
        self._builder = builder
        self._node = node
        self._rekeyed = rekeyed

    def _then(self, node: _Node) -> Stream[object, object]:
        self._node.children.append(node)
        return Stream(self._builder, node, self._rekeyed or node.rekeys)

    def filter(self, predicate: Callable[[K, V], bool]) -> Stream[K, V]:
        """Keep records for which ``predicate(key, value)`` is true."""
        return self._then(_Filter(predicate, True))  # type: ignore[arg-type,return-value]

    def filter_not(self, predicate: Callable[[K, V], bool]) -> Stream[K, V]:
        """Drop records for which ``predicate(key, value)`` is true."""
        return self._then(_Filter(predicate, False))  # type: ignore[arg-type,return-value]

    def map(self, fn: Callable[[K, V], tuple[object, object]]) -> Stream[object, object]:
        """Replace each record by ``fn(key, value) -> (new_key, new_value)`` (re-keys)."""
        return self._then(_Map(fn))  # type: ignore[arg-type]

    def select_key(self, fn: Callable[[K, V], object]) -> Stream[object, V]:
        """New key ``fn(key, value)``, same value (re-keys)."""
        return self._then(_Map(lambda k, v: (fn(k, v), v)))  # type: ignore[arg-type,return-value]

    def map_values(self, fn: Callable[[V], object]) -> Stream[K, object]:
        """New value ``fn(value)``, same key."""
        return self._then(_MapValues(fn))  # type: ignore[arg-type,return-value]

    def flat_map(
        self, fn: Callable[[K, V], Iterable[tuple[object, object]]]
    ) -> Stream[object, object]:
        """Zero or more ``(key, value)`` records per record (re-keys)."""
        return self._then(_FlatMap(fn))  # type: ignore[arg-type]

    def flat_map_values(self, fn: Callable[[V], Iterable[object]]) -> Stream[K, object]:
        """Zero or more values per record, same key."""
        return self._then(_FlatMapValues(fn))  # type: ignore[arg-type,return-value]

    def peek(self, fn: Callable[[K, V], object]) -> Stream[K, V]:
        """Call ``fn(key, value)`` and pass the record on unchanged (logging, printing)."""
        return self._then(_Peek(fn))  # type: ignore[arg-type,return-value]

    def branch(self, *predicates: Callable[[K, V], bool]) -> list[Stream[K, V]]:
        """Split into one stream per predicate; a record goes to the first that matches.

        Records matching none are dropped (add ``lambda k, v: True`` last to keep them).
        """
        splitter = _Branch([p for p in predicates])  # type: ignore[misc]
        self._node.children.append(splitter)
        streams: list[Stream[K, V]] = []
        for _ in predicates:
            out = _Pass(False)
            splitter.outputs.append(out)
            streams.append(Stream(self._builder, out, self._rekeyed))
        return streams

    def process(self, processor: Processor) -> None:
        """Hand each record to ``processor.process`` (its stores are declared too)."""
        self._builder._stores.extend(processor.stores)
        self._builder._processors.append(processor)
        self._node.children.append(_CallProcessor(processor))

    def to(
        self,
        topic: str,
        *,
        key_serde: str | Serde | None = None,
        value_serde: str | Serde | None = None,
    ) -> None:
        """Send every record to ``topic`` (serdes default to the application's).

        Raises:
            ConfigError: ``topic`` already has a ``to()`` with other serdes.
        """
        sink = _Sink(
            topic,
            None if key_serde is None else resolve_serde(key_serde, what="key_serde"),
            None if value_serde is None else resolve_serde(value_serde, what="value_serde"),
        )
        sinks = self._builder._sinks
        serdes = (sink.key_serde, sink.value_serde)
        if sinks.setdefault(topic, serdes) != serdes:
            raise ConfigError(
                f"to({topic!r}) is used twice with different serdes; one topic holds one "
                "format: give every to() of it the same key_serde and value_serde",
                "dsl",
            )
        self._node.children.append(sink)

    def group_by_key(self) -> GroupedStream[K, V]:
        """Group by the current key, for ``count``, ``aggregate`` and ``reduce``."""
        if self._rekeyed:
            raise ConfigError(
                "group_by_key() after map/flat_map/select_key needs a repartition: send the "
                "re-keyed stream .to() a topic and aggregate builder.stream() of that topic",
                "dsl",
            )
        return GroupedStream(self)


class _Branch(_Node):
    __slots__ = ("outputs", "predicates")

    def __init__(self, predicates: list[Callable[[object, object], bool]]) -> None:
        super().__init__(False)
        self.predicates = predicates
        self.outputs: list[_Node] = []

    def push(self, key: object, value: object, ctx: Context) -> None:
        for predicate, out in zip(self.predicates, self.outputs, strict=True):
            if predicate(key, value):
                out.push(key, value, ctx)
                return


class GroupedStream(Generic[K, V]):
    """A stream grouped by key; aggregate it into a :class:`Table`."""

    def __init__(self, stream: Stream[K, V]) -> None:
        self._stream = stream

    def _aggregate(
        self,
        store: str,
        initializer: Callable[[], object],
        aggregator: Callable[[object, object, object], object],
        backend: str,
    ) -> Table[K, object]:
        builder = self._stream._builder
        builder._stores.append(Store(store, backend=backend))
        node = _Aggregate(store, initializer, aggregator)
        self._stream._node.children.append(node)
        return Table(builder, node, store)

    def count(self, store: str, *, backend: str = "rocksdb") -> Table[K, int]:
        """Records per key, kept in ``store``."""
        return self._aggregate(store, int, lambda _k, _v, n: n + 1, backend)  # type: ignore[operator,return-value]

    def aggregate(
        self,
        initializer: Callable[[], object],
        aggregator: Callable[[K, V, object], object],
        *,
        store: str,
        backend: str = "rocksdb",
    ) -> Table[K, object]:
        """``aggregator(key, value, current)`` per record; ``initializer()`` starts a key."""
        return self._aggregate(store, initializer, aggregator, backend)  # type: ignore[arg-type]

    def reduce(
        self, reducer: Callable[[V, V], V], *, store: str, backend: str = "rocksdb"
    ) -> Table[K, V]:
        """``reducer(current, value)``; the first value of a key is kept as is."""

        def aggregator(_key: object, value: object, current: object) -> object:
            return value if current is _MISSING else reducer(current, value)  # type: ignore[arg-type]

        return self._aggregate(store, lambda: _MISSING, aggregator, backend)  # type: ignore[return-value]


class Table(Generic[K, V]):
    """A changelog-backed table: the latest aggregate per key (a KTable)."""

    def __init__(self, builder: StreamBuilder, node: _Node, store: str) -> None:
        self._builder = builder
        self._node = node
        self.store_name = store

    def to_stream(self) -> Stream[K, V]:
        """The stream of updates: one record per change of a key's value."""
        out = _Pass(False)
        self._node.children.append(out)
        return Stream(self._builder, out, False)


class StreamBuilder:
    """Builds a processing graph; :meth:`build` compiles it into a Processor."""

    def __init__(self) -> None:
        self._sources: dict[str, _Node] = {}
        self._sinks: dict[str, tuple[Serde | None, Serde | None]] = {}
        self._stores: list[Store] = []
        self._processors: list[Processor] = []

    def stream(self, topic: str) -> Stream[object, object]:
        """The records of ``topic``; the built processor's input topics are these."""
        node = self._sources.get(topic)
        if node is None:
            node = self._sources[topic] = _Pass(False)
        return Stream(self, node, False)

    @property
    def topics(self) -> list[str]:
        """The source topics: the application's ``input_topics``."""
        return list(self._sources)

    def build(self) -> Processor:
        """Compile the graph into a Processor."""
        if not self._sources:
            raise ConfigError("the StreamBuilder has no stream(): nothing to process", "dsl")
        names = [s.name for s in self._stores]
        duplicates = sorted({n for n in names if names.count(n) > 1})
        if duplicates:
            raise ConfigError(f"store name(s) used twice in the DSL: {duplicates}", "dsl")
        return _DslProcessor(
            dict(self._sources), dict(self._sinks), list(self._stores), list(self._processors)
        )


class _DslProcessor(Processor):
    """The compiled graph: pushes each record into the source node of its topic.

    Attributes:
        topics: The source topics (what the application must consume).
        sinks: ``{topic: (key_serde, value_serde)}`` of every ``to()``; None
            means the application's serde.
    """

    def __init__(
        self,
        sources: dict[str, _Node],
        sinks: dict[str, tuple[Serde | None, Serde | None]],
        stores: list[Store],
        processors: list[Processor],
    ) -> None:
        self.sources = sources
        self.sinks = sinks
        self.stores = stores
        self.processors = processors
        self.topics = list(sources)

    def process(self, record: Record, ctx: Context) -> None:
        source = self.sources.get(record.topic)
        if source is None:
            # Never drop it: its offset would be committed as if it were processed.
            raise ConfigError(
                f"a record of topic {record.topic!r} reached a DSL topology that reads only "
                f"{self.topics}; the application's input_topics must be the builder's topics",
                "input_topics",
            )
        source.push(record.key, record.value, ctx)

    def on_assign(self, partitions: list[TopicPartition], ctx: Context) -> None:
        for processor in self.processors:
            processor.on_assign(partitions, ctx)

    def on_revoke(self, partitions: list[TopicPartition]) -> None:
        for processor in self.processors:
            processor.on_revoke(partitions)

    def close(self) -> None:
        for processor in self.processors:
            processor.close()


def input_topics_for(
    processor: Processor, input_topics: Sequence[str] | str | None
) -> tuple[str, ...]:
    """The input topics an application running ``processor`` must consume.

    A processor built by :meth:`StreamBuilder.build` knows its source topics:
    ``input_topics`` may be None (they are used), and otherwise must name
    exactly them. Any other processor needs ``input_topics``. The
    ``Application`` and the ``TestDriver`` both call this.

    Raises:
        ConfigError: ``input_topics`` is missing for a plain processor, or
            differs from a DSL topology's source topics (a topic it does not
            read would have its records dropped and their offsets committed;
            a source topic not consumed would never be read).
    """
    given: tuple[str, ...] | None = None
    if input_topics is not None:
        given = (input_topics,) if isinstance(input_topics, str) else tuple(input_topics)
    sources = source_topics(processor)
    if sources is None:
        if given is None:
            raise ConfigError(
                f"input_topics is required for {type(processor).__name__} (only a processor "
                "built by eos.StreamBuilder knows its topics)",
                "input_topics",
            )
        return given
    if given is None:
        return sources
    extra = [t for t in given if t not in sources]
    missing = [t for t in sources if t not in given]
    if extra or missing:
        problems = []
        if extra:
            problems.append(
                f"{extra} not read by any builder.stream() (their records would be dropped)"
            )
        if missing:
            problems.append(f"{missing} read by builder.stream() but not consumed")
        raise ConfigError(
            f"input_topics {list(given)} do not match the DSL topology's source topics "
            f"{list(sources)}: {'; '.join(problems)}. Leave input_topics out to use the "
            "builder's topics",
            "input_topics",
        )
    return given


def source_topics(processor: Processor) -> tuple[str, ...] | None:
    """The topics a :meth:`StreamBuilder.build` processor reads; None for any other."""
    return tuple(processor.topics) if isinstance(processor, _DslProcessor) else None


def sink_serdes(processor: Processor) -> dict[str, tuple[Serde | None, Serde | None]]:
    """``{topic: (key_serde, value_serde)}`` of a DSL processor's ``to()`` calls that name
    serdes of their own (None: the application's); empty for any other processor."""
    if not isinstance(processor, _DslProcessor):
        return {}
    return {t: s for t, s in processor.sinks.items() if s != (None, None)}
