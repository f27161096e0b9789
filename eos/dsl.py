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

Windowed aggregations: ``group_by_key().windowed_by(eos.TumblingWindows(...))``
(also hopping, sliding and session windows) then ``count``/``aggregate``/
``reduce`` give a table keyed by ``eos.Windowed(key, start, end)``, whose
``final()`` emits one result per window when it closes (see
:mod:`eos._dsl_windows` and :mod:`eos.windows`).

Aggregations are per input partition, so they need the records of one key in
one partition: re-keying (``map``, ``flat_map``, ``select_key``) before
``group_by_key()`` is rejected at build time. Write the re-keyed stream
``.to()`` a topic and aggregate a stream of that topic instead.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import TYPE_CHECKING, Any, Generic, Literal, TypeVar, overload

from eos._dsl_nodes import (
    MISSING,
    Aggregate,
    Branch,
    CallProcessor,
    Filter,
    FlatMap,
    FlatMapValues,
    Map,
    MapValues,
    Node,
    Pass,
    Peek,
    Sink,
)
from eos.errors import ConfigError
from eos.processor import Context, Processor
from eos.record import K, Record, TopicPartition, V
from eos.serde import JsonValue, Serde, resolve_serde
from eos.state.base import Store

if TYPE_CHECKING:
    from eos._dsl_windows import WindowedGroupedStream
    from eos.windows import Windows

__all__ = [
    "GroupedStream",
    "InputSerdes",
    "Stream",
    "StreamBuilder",
    "Table",
    "input_serdes_for",
    "input_topics_for",
    "sink_serdes",
    "source_topics",
]

K2 = TypeVar("K2")
V2 = TypeVar("V2")
A = TypeVar("A")

_BytesName = Literal["bytes"]
_StrName = Literal["string", "str"]
_JsonName = Literal["json"]

InputSerdes = dict[str, tuple[Serde | None, Serde | None]]
"""``{topic: (key_serde, value_serde)}`` of the input topics with serdes of their
own; None in a pair: the application's serde for that part."""


class Stream(Generic[K, V]):
    """A record stream (a Kafka Streams KStream). Every method returns a new stream.

    ``Stream[K, V]`` carries keys of type ``K`` and values of type ``V``:
    ``builder.stream(topic, key_serde="string", value_serde="json")`` is a
    ``Stream[str, JsonValue]``, ``map_values(len)`` of it a ``Stream[str, int]``.
    A stream whose serdes are the application's is a ``Stream[object, object]``
    (the builder cannot know them).
    """

    def __init__(self, builder: StreamBuilder, node: Node, rekeyed: bool) -> None:
        self._builder = builder
        self._node = node
        self._rekeyed = rekeyed

    def _then(self, node: Node) -> Stream[Any, Any]:
        self._node.children.append(node)
        return Stream(self._builder, node, self._rekeyed or node.rekeys)

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
            streams.append(Stream(self._builder, out, self._rekeyed))
        return streams

    def process(self, processor: Processor[K, V]) -> None:
        """Hand each record to ``processor.process`` (its stores are declared too).

        The processor's types are the stream's: a ``Stream[str, int]`` takes a
        ``Processor[str, int]`` (or an unparameterised one on an untyped stream).
        """
        self._builder._stores.extend(processor.stores)
        self._builder._processors.append(processor)
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
        sink = Sink(
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
        self._builder._sink_nodes.append(sink)
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


class GroupedStream(Generic[K, V]):
    """A stream grouped by key; aggregate it into a :class:`Table`."""

    def __init__(self, stream: Stream[K, V]) -> None:
        self._stream = stream

    def _aggregate(
        self,
        store: str,
        initializer: Callable[[], object],
        aggregator: Callable[[Any, Any, Any], object],
        backend: str,
    ) -> Table[Any, Any]:
        builder = self._stream._builder
        builder._stores.append(Store(store, backend=backend))
        node = Aggregate(store, initializer, aggregator)
        self._stream._node.children.append(node)
        return Table(builder, node, store)

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
    """A changelog-backed table: the latest aggregate per key (a KTable)."""

    def __init__(self, builder: StreamBuilder, node: Node, store: str) -> None:
        self._builder = builder
        self._node = node
        self.store_name = store

    def to_stream(self) -> Stream[K, V]:
        """The stream of updates: one record per change of a key's value."""
        out = Pass(False)
        self._node.children.append(out)
        return Stream(self._builder, out, False)


class StreamBuilder:
    """Builds a processing graph; :meth:`build` compiles it into a Processor."""

    def __init__(self) -> None:
        self._sources: dict[str, Node] = {}
        self._source_serdes: InputSerdes = {}
        self._sinks: dict[str, tuple[Serde | None, Serde | None]] = {}
        self._sink_nodes: list[Sink] = []
        self._stores: list[Store[Any, Any]] = []
        self._processors: list[Processor] = []

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
        node = self._sources.get(topic)
        if node is None:
            node = self._sources[topic] = Pass(False)
        given = (
            None if key_serde is None else resolve_serde(key_serde, what="key_serde"),
            None if value_serde is None else resolve_serde(value_serde, what="value_serde"),
        )
        known = self._source_serdes.get(topic, (None, None))
        merged = (given[0] or known[0], given[1] or known[1])
        for part, new, old in zip(("key_serde", "value_serde"), given, known, strict=True):
            if new is not None and old is not None and new != old:
                raise ConfigError(
                    f"stream({topic!r}) is given {part}={new!r}, but an earlier stream() of "
                    f"it has {old!r}; one topic holds one format",
                    "dsl",
                )
        if merged != (None, None):
            self._source_serdes[topic] = merged
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
        sinks = dict(self._sinks)
        for topic, (key_serde, value_serde) in self._source_serdes.items():
            # A to() of a source topic writes what stream() of it reads.
            if topic in sinks:
                k, v = sinks[topic]
                sinks[topic] = (k or key_serde, v or value_serde)
        for sink in self._sink_nodes:
            sink.key_serde, sink.value_serde = sinks[sink.topic]
        return _DslProcessor(
            dict(self._sources),
            sinks,
            dict(self._source_serdes),
            list(self._stores),
            list(self._processors),
        )


class _DslProcessor(Processor):
    """The compiled graph: pushes each record into the source node of its topic.

    Attributes:
        topics: The source topics (what the application must consume).
        sinks: ``{topic: (key_serde, value_serde)}`` of every ``to()``; None
            means the application's serde.
        input_serdes: ``{topic: (key_serde, value_serde)}`` of the source
            topics whose ``stream()`` names serdes; None means the application's.
    """

    def __init__(
        self,
        sources: dict[str, Node],
        sinks: dict[str, tuple[Serde | None, Serde | None]],
        input_serdes: InputSerdes,
        stores: list[Store[Any, Any]],
        processors: list[Processor],
    ) -> None:
        self.sources = sources
        self.sinks = sinks
        self.input_serdes = input_serdes
        self.stores = stores
        self.processors = processors
        self.topics = list(sources)
        timed = [p for p in processors if type(p).on_timer is not Processor.on_timer]
        if len(timed) > 1:
            raise ConfigError(
                "more than one processor given to Stream.process() defines on_timer "
                f"({', '.join(type(p).__name__ for p in timed)}); a topology's timers go to "
                "one on_timer: combine them into one processor",
                "dsl",
            )
        self._timed = timed[0] if timed else None
        self.uses_timers = bool(timed)
        """Whether a processor of the topology has timers (read by the engine)."""

    def on_timer(self, key: Any, timestamp: int, ctx: Context) -> None:
        """A timer of the one processor given to ``Stream.process()`` that defines on_timer."""
        if self._timed is None:
            raise RuntimeError("a timer fired in a topology without on_timer")
        self._timed.on_timer(key, timestamp, ctx)

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


def input_serdes_for(
    processor: Processor,
    configured: Mapping[str, tuple[str | Serde | None, str | Serde | None]],
) -> InputSerdes:
    """The per-topic input serdes an application running ``processor`` decodes with.

    ``configured`` is the application's ``input_serdes``; a processor built by
    :meth:`StreamBuilder.build` adds the serdes its ``stream()`` calls name.
    Topics in neither use the application's ``key_serde``/``value_serde``;
    so does a part given as None. The ``Application``, the engine and the
    ``TestDriver`` all call this, so they decode every topic alike.

    Raises:
        ConfigError: a serde is invalid, or ``input_serdes`` and a
            ``builder.stream()`` name different serdes for one topic.
    """
    result: InputSerdes = {}
    for topic, (key_serde, value_serde) in configured.items():
        result[topic] = (
            None if key_serde is None else resolve_serde(key_serde, what="input_serdes"),
            None if value_serde is None else resolve_serde(value_serde, what="input_serdes"),
        )
    if isinstance(processor, _DslProcessor):
        for topic, dsl in processor.input_serdes.items():
            given = result.get(topic, (None, None))
            for part, mine, theirs in zip(("key", "value"), given, dsl, strict=True):
                if mine is not None and theirs is not None and mine != theirs:
                    raise ConfigError(
                        f"input_serdes gives topic {topic!r} the {part} serde {mine!r}, but "
                        f"builder.stream({topic!r}) names {theirs!r}; one topic holds one "
                        "format: name it in one place",
                        "input_serdes",
                    )
            result[topic] = (given[0] or dsl[0], given[1] or dsl[1])
    return {topic: serdes for topic, serdes in result.items() if serdes != (None, None)}
