"""The DSL topology: what a StreamBuilder declared (:class:`Topology`), the
Processor it compiles to (:class:`DslProcessor`), and what an application of
any Processor consumes (the ``*_for`` functions: topics, tables, serdes).

The application id is known only at run time and names the repartition
topics (see :mod:`eos._dsl_joins`): :func:`input_topics_for`, called by the
Application, the engine and the TestDriver, names them and binds the
topology to them.
"""

from __future__ import annotations

import sys
from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

from eos._dsl_joins import REPARTITION_SERDE, Repartition, TopicClaims
from eos._dsl_nodes import _PENDING, AsyncNode, Node, Pass, Sink, repartition_topic
from eos.errors import ConfigError
from eos.processor import AsyncProcessor, Context, Processor, defines_on_timer
from eos.record import Record, TopicPartition
from eos.serde import Serde, resolve_serde
from eos.state.base import Store

if TYPE_CHECKING:
    from eos.state.global_table import GlobalStore

__all__ = [
    "AsyncDslProcessor",
    "DslProcessor",
    "InputSerdes",
    "Topology",
    "global_stores_for",
    "input_serdes_for",
    "input_topics_for",
    "internal_topics_for",
    "sink_serdes",
    "source_topics",
    "table_topics_for",
]

InputSerdes = dict[str, tuple[Serde | None, Serde | None]]
"""``{topic: (key_serde, value_serde)}`` of the input topics with serdes of their
own; None in a pair: the application's serde for that part."""


# -- what a builder declared ----------------------------------------------------------


class Topology:
    """What a :class:`~eos.dsl.StreamBuilder` declared, each declaration checked as
    it is made; :meth:`build` checks the whole graph and compiles it. ``stores``
    holds Store, WindowStore and GlobalStore declarations."""

    def __init__(self) -> None:
        self.sources: dict[str, Node] = {}
        self.source_serdes: InputSerdes = {}
        self.sinks: dict[str, tuple[Serde | None, Serde | None]] = {}
        self.stores: list[Any] = []
        self.processors: list[Processor] = []
        self.claims = TopicClaims(self.sources)
        self._sink_nodes: list[Sink] = []
        self.setups: list[Callable[[], Awaitable[object]]] = []
        self.teardowns: list[Callable[[], Awaitable[object]]] = []
        self.is_async = False
        """A step is async (``map_values_async``, ``filter_async``): the topology
        compiles to an :class:`AsyncDslProcessor`."""

    def source(
        self, topic: str, key_serde: str | Serde | None, value_serde: str | Serde | None
    ) -> Node:
        """The source node of ``topic`` for ``stream()``, which may name its serdes once."""
        self.claims.check_stream(topic)
        node = self.sources.get(topic)
        if node is None:
            node = self.sources[topic] = Pass(False)
        given = _serdes(key_serde, value_serde)
        known = self.source_serdes.get(topic, (None, None))
        merged = (given[0] or known[0], given[1] or known[1])
        for part, new, old in zip(("key_serde", "value_serde"), given, known, strict=True):
            if new is not None and old is not None and new != old:
                raise ConfigError(
                    f"stream({topic!r}) is given {part}={new!r}, but an earlier stream() of "
                    f"it has {old!r}; one topic holds one format",
                    "dsl",
                )
        if merged != (None, None):
            self.source_serdes[topic] = merged
        return node

    def sink(
        self, topic: str, key_serde: str | Serde | None, value_serde: str | Serde | None
    ) -> Sink:
        """A node sending to ``topic`` for ``to()``; every ``to()`` of it has the same serdes."""
        sink = Sink(topic, *_serdes(key_serde, value_serde))
        serdes = (sink.key_serde, sink.value_serde)
        if self.sinks.setdefault(topic, serdes) != serdes:
            raise ConfigError(
                f"to({topic!r}) is used twice with different serdes; one topic holds one "
                "format: give every to() of it the same key_serde and value_serde",
                "dsl",
            )
        self._sink_nodes.append(sink)
        return sink

    def table(
        self,
        topic: str,
        store: str,
        key_serde: str | Serde | None,
        value_serde: str | Serde | None,
        backend: str,
        *,
        whole: bool,
    ) -> Serde | None:
        """Declare the table ``store`` of ``topic`` for ``table()`` (``whole``: for
        ``global_table()``); return its key serde."""
        self.claims.claim_table(topic, f"{'global_table' if whole else 'table'}(store={store!r})")
        key, value = given = _serdes(key_serde, value_serde)
        if whole:
            from eos.state.global_table import GlobalStore

            self.stores.append(
                GlobalStore(store, topic, backend=backend, key_serde=key, value_serde=value)
            )
            return key
        self.stores.append(
            Store(store, backend=backend, key_serde=key, value_serde=value, source_topic=topic)
        )
        if given != (None, None):
            self.source_serdes[topic] = given
        return key

    @property
    def topics(self) -> list[str]:
        """Stream topics, then table topics (see :attr:`DslProcessor.topics`)."""
        return _source_topics(self.sources, self.stores)

    def build(self) -> DslProcessor:
        """Check the whole graph (a stream, unique store names, a topic read once); compile it."""
        if not self.sources:
            raise ConfigError("the StreamBuilder has no stream(): nothing to process", "dsl")
        names = [s.name for s in self.stores]
        duplicates = sorted({n for n in names if names.count(n) > 1})
        if duplicates:
            raise ConfigError(f"store name(s) used twice in the DSL: {duplicates}", "dsl")
        tables = [s.source_topic for s in self.stores if getattr(s, "source_topic", None)]
        shared = sorted({t for t in tables if tables.count(t) > 1 or t in self.sources})
        if shared:
            raise ConfigError(
                f"topic(s) {shared} are the source of two tables, or of a table and a stream "
                "(a Stream.process() processor's eos.Store(source_topic=...)); a topic is one "
                "stream or one table",
                "dsl",
            )
        repartitions = self.claims.repartitions
        for spec in repartitions.values():
            spec.finish()
        sinks = dict(self.sinks)
        for topic, (key_serde, value_serde) in self.source_serdes.items():
            # A to() of a source topic writes what stream() of it reads.
            if topic in sinks:
                k, v = sinks[topic]
                sinks[topic] = (k or key_serde, v or value_serde)
        for sink in self._sink_nodes:
            sink.key_serde, sink.value_serde = sinks[sink.topic]
        if not self.is_async and (self.setups or self.teardowns):
            raise ConfigError(
                "StreamBuilder.on_setup()/on_teardown() hooks are awaited by a topology "
                "with async steps (map_values_async, filter_async); this one has none",
                "dsl",
            )
        compiled = (AsyncDslProcessor if self.is_async else DslProcessor)(
            dict(self.sources),
            sinks,
            dict(self.source_serdes),
            list(self.stores),
            list(self.processors),
            dict(repartitions),
        )
        if isinstance(compiled, AsyncDslProcessor):
            compiled.setups = list(self.setups)
            compiled.teardowns = list(self.teardowns)
        return compiled


def _serdes(
    key_serde: str | Serde | None, value_serde: str | Serde | None
) -> tuple[Serde | None, Serde | None]:
    return (
        None if key_serde is None else resolve_serde(key_serde, what="key_serde"),
        None if value_serde is None else resolve_serde(value_serde, what="value_serde"),
    )


def _source_topics(sources: Mapping[str, Node], stores: Sequence[Any]) -> list[str]:
    tables = [s.source_topic for s in stores if getattr(s, "source_topic", None)]
    return [*sources, *(t for t in tables if t not in sources)]


# -- the compiled topology ------------------------------------------------------------


class DslProcessor(Processor):
    """The compiled graph: pushes each record into the source node of its topic.

    Attributes:
        topics: The source topics the application is given: stream topics,
            then table topics (repartition topics are internal, see :meth:`bind`).
        sinks: ``{topic: (key_serde, value_serde)}`` of every ``to()``; None
            means the application's serde.
        input_serdes: ``{topic: (key_serde, value_serde)}`` of the stream and
            table topics whose ``stream()``/``table()`` names serdes; None
            means the application's.
        repartitions: ``{name: Repartition}`` of the repartition topics.
    """

    def __init__(
        self,
        sources: dict[str, Node],
        sinks: dict[str, tuple[Serde | None, Serde | None]],
        input_serdes: InputSerdes,
        stores: list[Any],
        processors: list[Processor],
        repartitions: dict[str, Repartition],
    ) -> None:
        self.sources = sources
        self.sinks = sinks
        self.input_serdes = input_serdes
        self.stores = stores
        self.processors = processors
        self.repartitions = repartitions
        self.topics = _source_topics(sources, stores)
        self._routes: dict[str, Node] = dict(sources)
        self._bound: list[str] = []
        timed = [p for p in processors if defines_on_timer(p)]
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

    def bind(self, application_id: str) -> tuple[str, ...]:
        """Route the repartition topics of ``application_id`` to their nodes; return them.

        Called by :func:`input_topics_for`. Binding a second application id adds
        its topics (one processor object may serve two applications).
        """
        if not isinstance(application_id, str) or not application_id:
            raise ConfigError(
                f"application_id {application_id!r}: a non-empty str names the repartition topics",
                "application_id",
            )
        topics = tuple(repartition_topic(application_id, n) for n in self.repartitions)
        if application_id not in self._bound:
            self._bound.append(application_id)
            for name, spec in self.repartitions.items():
                self._routes[repartition_topic(application_id, name)] = spec.source
        return topics

    def on_timer(self, key: Any, timestamp: int, ctx: Context) -> None:
        """A timer of the one processor given to ``Stream.process()`` that defines on_timer."""
        if self._timed is None:
            raise RuntimeError("a timer fired in a topology without on_timer")
        self._timed.on_timer(key, timestamp, ctx)

    def process(self, record: Record, ctx: Context) -> None:
        source = self._routes.get(record.topic)
        if source is None:
            source = self._unrouted(record.topic, ctx)
        source.push(record.key, record.value, ctx)

    def _unrouted(self, topic: str, ctx: Context) -> Node:
        """The node of a repartition topic of an application id not bound yet; else raise."""
        if self.repartitions and ctx.application_id not in self._bound:
            self.bind(ctx.application_id)
            source = self._routes.get(topic)
            if source is not None:
                return source
        tables = [t for t in self.topics if t not in self.sources]
        hint = (
            f" (records of the table topics {tables} are written to their stores by the "
            "engine and never reach process())"
            if topic in tables
            else ""
        )
        # Never drop it: its offset would be committed as if it were processed.
        raise ConfigError(
            f"a record of topic {topic!r} reached a DSL topology that reads only "
            f"{list(self._routes)}{hint}; the application's input_topics must "
            "be the builder's topics",
            "input_topics",
        )

    def on_assign(self, partitions: list[TopicPartition], ctx: Context) -> None:
        for processor in self.processors:
            processor.on_assign(partitions, ctx)

    def on_revoke(self, partitions: list[TopicPartition]) -> None:
        for processor in self.processors:
            processor.on_revoke(partitions)

    def close(self) -> None:
        for processor in self.processors:
            processor.close()


class AsyncDslProcessor(DslProcessor, AsyncProcessor):  # type: ignore[misc]
    """A topology with async steps: each record's synchronous steps run at once, its
    async steps are awaited in the order they were reached (then their children run).

    Run like any :class:`~eos.processor.AsyncProcessor`: up to ``max_in_flight``
    records at once, in order per key.
    """

    setups: Sequence[Callable[[], Awaitable[object]]] = ()
    teardowns: Sequence[Callable[[], Awaitable[object]]] = ()

    async def setup(self) -> None:
        """Await the builder's ``on_setup`` hooks, in order."""
        for setup in self.setups:
            await setup()

    async def teardown(self) -> None:
        """Await the builder's ``on_teardown`` hooks, last registered first."""
        for teardown in reversed(self.teardowns):
            await teardown()

    async def process(self, record: Record, ctx: Context) -> None:  # type: ignore[override]
        pending: list[tuple[AsyncNode, object, object]] = []
        token = _PENDING.set(pending)
        try:
            DslProcessor.process(self, record, ctx)
            while pending:
                node, key, value = pending.pop(0)
                await node.run(key, value, ctx)
        finally:
            _PENDING.reset(token)


# -- what an application of a processor consumes --------------------------------------


def input_topics_for(
    processor: Processor, input_topics: Sequence[str] | str | None, application_id: str
) -> tuple[str, ...]:
    """The topics an application ``application_id`` running ``processor`` must consume.

    A processor built by :meth:`~eos.dsl.StreamBuilder.build` knows its source topics
    (stream, then table topics): ``input_topics`` may be None (they are used),
    and otherwise must name exactly them (it may also name the repartition
    topics this function returns, so its result can be given back). Its
    repartition topics ``<application_id>-<name>-repartition`` are added at
    the end, and the topology is bound to them. Any other processor needs
    ``input_topics``; the source topics of its tables
    (``eos.Store(..., source_topic=t)`` in ``stores``) are added when missing.
    Global tables' topics are never input topics (each instance reads them
    whole, outside the consumer group). The ``Application``, the engine and
    the ``TestDriver`` all call this.

    Raises:
        ConfigError: ``input_topics`` is missing for a plain processor, names a
            global table's topic, or differs from a DSL topology's source
            topics (a topic it does not read would have its records dropped and
            their offsets committed; a source topic not consumed would never be
            read).
    """
    given: tuple[str, ...] | None = None
    if input_topics is not None:
        given = (input_topics,) if isinstance(input_topics, str) else tuple(input_topics)
    if given is not None:
        global_topics = {g.topic for g in global_stores_for(processor)}
        clash = [t for t in given if t in global_topics]
        if clash:
            raise ConfigError(
                f"input_topics {list(given)} name {clash}, the topic(s) of a global table: an "
                "instance reads a global table whole, outside the consumer group; leave them "
                "out of input_topics",
                "input_topics",
            )
    if not isinstance(processor, DslProcessor):
        if given is None:
            raise ConfigError(
                f"input_topics is required for {type(processor).__name__} (only a processor "
                "built by eos.StreamBuilder knows its topics)",
                "input_topics",
            )
        return given + tuple(t for t in table_topics_for(processor) if t not in given)
    sources = tuple(processor.topics)
    internal = processor.bind(application_id)
    if given is None:
        return sources + internal
    extra = [t for t in given if t not in sources and t not in internal]
    missing = [t for t in sources if t not in given]
    if extra or missing:
        problems = []
        if extra:
            problems.append(
                f"{extra} not read by any builder.stream() or table() (their records would "
                "be dropped)"
            )
        if missing:
            problems.append(f"{missing} read by builder.stream() or table() but not consumed")
        raise ConfigError(
            f"input_topics {list(given)} do not match the DSL topology's source topics "
            f"{list(sources)}: {'; '.join(problems)}. Leave input_topics out to use the "
            "builder's topics",
            "input_topics",
        )
    return given + tuple(t for t in internal if t not in given)


def internal_topics_for(processor: Processor, application_id: str) -> dict[str, int | None]:
    """``{repartition topic: partitions}`` an application of ``processor`` creates.

    None: create it with the input topics' partition count. Empty for a plain
    processor.
    """
    if not isinstance(processor, DslProcessor):
        return {}
    return {
        repartition_topic(application_id, name): spec.partitions
        for name, spec in processor.repartitions.items()
    }


def table_topics_for(processor: Processor) -> dict[str, str]:
    """``{source_topic: store_name}`` of every table ``processor`` declares (DSL
    ``table()`` or ``eos.Store(..., source_topic=...)``): the records of those topics
    go to their store, never to ``process()``."""
    tables: dict[str, str] = {}
    for store in _stores_of(processor):
        topic = getattr(store, "source_topic", None)
        if isinstance(topic, str) and topic:
            tables[topic] = store.name
    return tables


def global_stores_for(processor: Processor) -> list[GlobalStore]:
    """The global stores ``processor`` declares (``builder.global_table`` or
    ``eos.GlobalStore`` in ``stores``)."""
    # Until a GlobalStore was made its module is not loaded (it loads the Kafka
    # client): then there is none, and an application without one never loads it.
    module = sys.modules.get("eos.state.global_table")
    if module is None:
        return []
    store_class: type[GlobalStore] = module.GlobalStore
    return [s for s in _stores_of(processor) if isinstance(s, store_class)]


def _stores_of(processor: Processor) -> Sequence[Any]:
    """``processor.stores``, or nothing if it is malformed (``check_processor`` says how)."""
    stores = getattr(processor, "stores", ())
    if isinstance(stores, (str, bytes)) or not isinstance(stores, Sequence):
        return ()
    return stores


def source_topics(processor: Processor) -> tuple[str, ...] | None:
    """The stream and table topics a :meth:`~eos.dsl.StreamBuilder.build` processor reads
    (without its repartition topics); None for any other processor."""
    return tuple(processor.topics) if isinstance(processor, DslProcessor) else None


def sink_serdes(processor: Processor) -> dict[str, tuple[Serde | None, Serde | None]]:
    """``{topic: (key_serde, value_serde)}`` of a DSL processor's ``to()`` calls that name
    serdes of their own (None: the application's); empty for any other processor."""
    if not isinstance(processor, DslProcessor):
        return {}
    return {t: s for t, s in processor.sinks.items() if s != (None, None)}


def input_serdes_for(
    processor: Processor,
    configured: Mapping[str, tuple[str | Serde | None, str | Serde | None]],
    application_id: str | None = None,
) -> InputSerdes:
    """The per-topic input serdes an application running ``processor`` decodes with.

    ``configured`` is the application's ``input_serdes``; a processor built by
    :meth:`~eos.dsl.StreamBuilder.build` adds the serdes its ``stream()`` and
    ``table()`` calls name, and those of its repartition topics for every
    application id it is bound to (by :func:`input_topics_for`, or by
    ``application_id`` here). Topics in neither use the application's
    ``key_serde``/``value_serde``; so does a part given as None. The
    ``Application``, the engine and the ``TestDriver`` all call this, so they
    decode every topic alike.

    Raises:
        ConfigError: a serde is invalid, ``input_serdes`` and a
            ``builder.stream()`` name different serdes for one topic, a table
            whose key serde a repartition follows gets its key serde from
            ``input_serdes`` only, or the topology has repartition topics and
            no application id is known.
    """
    result: InputSerdes = {}
    for topic, (key_serde, value_serde) in configured.items():
        result[topic] = (
            None if key_serde is None else resolve_serde(key_serde, what="input_serdes"),
            None if value_serde is None else resolve_serde(value_serde, what="input_serdes"),
        )
    if isinstance(processor, DslProcessor):
        for topic, dsl in processor.input_serdes.items():
            given = result.get(topic, (None, None))
            for part, mine, theirs in zip(("key", "value"), given, dsl, strict=True):
                if mine is not None and theirs is not None and mine != theirs:
                    raise ConfigError(
                        f"input_serdes gives topic {topic!r} the {part} serde {mine!r}, but "
                        f"the builder's stream({topic!r}) or table({topic!r}) names "
                        f"{theirs!r}; one topic holds one format: name it in one place",
                        "input_serdes",
                    )
            result[topic] = (given[0] or dsl[0], given[1] or dsl[1])
        result.update(_repartition_serdes(processor, result, application_id))
    return {topic: serdes for topic, serdes in result.items() if serdes != (None, None)}


def _repartition_serdes(
    processor: DslProcessor, decoded: InputSerdes, application_id: str | None
) -> InputSerdes:
    if not processor.repartitions:
        return {}
    if application_id is not None:
        processor.bind(application_id)
    if not processor._bound:
        raise ConfigError(
            "the DSL topology has repartition topics, named after the application id: call "
            "input_topics_for(processor, input_topics, application_id) first, or pass "
            "application_id",
            "application_id",
        )
    serdes: InputSerdes = {}
    for name, spec in processor.repartitions.items():
        table = spec.table_topic
        if spec.key_serde is None and table is not None and decoded.get(table, (None,))[0]:
            raise ConfigError(
                f"input_serdes names the key serde of table topic {table!r}, which the "
                f"repartition {name!r} before its join must write keys with: name it in "
                f"builder.table({table!r}, key_serde=...) instead",
                "input_serdes",
            )
        for app in processor._bound:
            serdes[repartition_topic(app, name)] = (spec.key_serde, REPARTITION_SERDE)
    return serdes
