"""The operators of the stream DSL (:mod:`eos.dsl`): the nodes a topology is built of.

Each node receives ``(key, value)`` and pushes its results to its children, on
the processing thread, inside the transaction of the input record that started
the push (a :class:`GroupAnchor` only marks where aggregations attach while
the graph is built). Nodes are untyped: :class:`~eos.dsl.Stream` types what
flows between them for the user's code.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterable
from contextvars import ContextVar
from typing import TYPE_CHECKING, Any

from eos.errors import ConfigError
from eos.processor import Context, Processor, _wrap
from eos.serde import Serde

if TYPE_CHECKING:
    from eos._dsl_joins import Repartition, TopicClaims

__all__ = [
    "MISSING",
    "Aggregate",
    "AsyncNode",
    "Branch",
    "CallProcessor",
    "Filter",
    "FilterAsync",
    "FlatMap",
    "FlatMapValues",
    "GroupAnchor",
    "Join",
    "Map",
    "MapValues",
    "MapValuesAsync",
    "Node",
    "Pass",
    "Peek",
    "RepartitionSink",
    "Sink",
    "repartition_topic",
]


class Node:
    """One operator: receives ``(key, value)`` and pushes results to its children."""

    __slots__ = ("children", "rekeys")

    def __init__(self, rekeys: bool) -> None:
        self.children: list[Node] = []
        self.rekeys = rekeys

    def push(self, key: object, value: object, ctx: Context) -> None:
        raise NotImplementedError

    def forward(self, key: object, value: object, ctx: Context) -> None:
        for child in self.children:
            child.push(key, value, ctx)


class Pass(Node):
    __slots__ = ()

    def push(self, key: object, value: object, ctx: Context) -> None:
        for child in self.children:
            child.push(key, value, ctx)


class Filter(Node):
    __slots__ = ("keep", "predicate")

    def __init__(self, predicate: Callable[[Any, Any], object], keep: bool) -> None:
        super().__init__(False)
        self.predicate = predicate
        self.keep = keep

    def push(self, key: object, value: object, ctx: Context) -> None:
        if bool(self.predicate(key, value)) is self.keep:
            for child in self.children:
                child.push(key, value, ctx)


class Map(Node):
    __slots__ = ("fn",)

    def __init__(self, fn: Callable[[Any, Any], tuple[object, object]]) -> None:
        super().__init__(True)
        self.fn = fn

    def push(self, key: object, value: object, ctx: Context) -> None:
        new_key, new_value = self.fn(key, value)
        for child in self.children:
            child.push(new_key, new_value, ctx)


class MapValues(Node):
    __slots__ = ("fn",)

    def __init__(self, fn: Callable[[Any], object]) -> None:
        super().__init__(False)
        self.fn = fn

    def push(self, key: object, value: object, ctx: Context) -> None:
        new_value = self.fn(value)
        for child in self.children:
            child.push(key, new_value, ctx)


_PENDING: ContextVar[list[tuple[AsyncNode, object, object]]] = ContextVar("eos_dsl_pending")
"""The async steps reached by the current record's synchronous part, awaited in order
by :class:`~eos._dsl_topology.AsyncDslProcessor` (one list per record's task)."""


class AsyncNode(Node):
    """An async step: ``push`` queues it; the topology awaits ``run`` after the
    record's synchronous steps, then ``run`` pushes to the children."""

    __slots__ = ()

    def push(self, key: object, value: object, ctx: Context) -> None:
        _PENDING.get().append((self, key, value))

    async def run(self, key: object, value: object, ctx: Context) -> None:
        raise NotImplementedError


class MapValuesAsync(AsyncNode):
    __slots__ = ("fn",)

    def __init__(self, fn: Callable[[Any], Awaitable[object]]) -> None:
        super().__init__(False)
        self.fn = fn

    async def run(self, key: object, value: object, ctx: Context) -> None:
        new_value = await self.fn(value)
        for child in self.children:
            child.push(key, new_value, ctx)


class FilterAsync(AsyncNode):
    __slots__ = ("predicate",)

    def __init__(self, predicate: Callable[[Any, Any], Awaitable[object]]) -> None:
        super().__init__(False)
        self.predicate = predicate

    async def run(self, key: object, value: object, ctx: Context) -> None:
        if await self.predicate(key, value):
            for child in self.children:
                child.push(key, value, ctx)


class FlatMap(Node):
    __slots__ = ("fn",)

    def __init__(self, fn: Callable[[Any, Any], Iterable[tuple[object, object]]]) -> None:
        super().__init__(True)
        self.fn = fn

    def push(self, key: object, value: object, ctx: Context) -> None:
        for new_key, new_value in self.fn(key, value):
            self.forward(new_key, new_value, ctx)


class FlatMapValues(Node):
    __slots__ = ("fn",)

    def __init__(self, fn: Callable[[Any], Iterable[object]]) -> None:
        super().__init__(False)
        self.fn = fn

    def push(self, key: object, value: object, ctx: Context) -> None:
        for new_value in self.fn(value):
            self.forward(key, new_value, ctx)


class Peek(Node):
    __slots__ = ("fn",)

    def __init__(self, fn: Callable[[Any, Any], object]) -> None:
        super().__init__(False)
        self.fn = fn

    def push(self, key: object, value: object, ctx: Context) -> None:
        self.fn(key, value)
        self.forward(key, value, ctx)


class Sink(Node):
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


def repartition_topic(application_id: str, name: str) -> str:
    """The repartition topic of ``name`` in application ``application_id``."""
    return f"{application_id}-{name}-repartition"


class RepartitionSink(Node):
    """Writes each record to :func:`repartition_topic` of ``name`` (and of
    ``ctx.application_id``), keeping its input record's timestamp and headers.

    Keys are written with ``key_serde`` (None: the application's), values with
    ``value_serde``: the repartition (:class:`eos._dsl_joins.Repartition`)
    that makes the sink gives it both.
    """

    __slots__ = ("_app", "_topic", "drop_null_keys", "key_serde", "name", "value_serde")

    def __init__(self, name: str, drop_null_keys: bool, serde: Serde) -> None:
        super().__init__(False)
        self.name = name
        self.drop_null_keys = drop_null_keys
        self.key_serde: Serde | None = serde
        self.value_serde = serde
        self._app = ""
        self._topic = ""

    def push(self, key: object, value: object, ctx: Context) -> None:
        if key is None and self.drop_null_keys:
            return  # an aggregation has no group for a null key (as Kafka Streams)
        app = ctx.application_id
        if app != self._app:
            self._topic = repartition_topic(app, self.name)
            self._app = app
        topic = self._topic
        kser = ctx._key_serialize if self.key_serde is None else self.key_serde.serialize
        try:
            kb = key if kser is None else kser(key)
        except Exception as exc:
            raise _wrap(exc, "key", topic) from exc
        try:
            vb = self.value_serde.serialize(value)
        except Exception as exc:
            raise _wrap(exc, "value", topic) from exc
        record = ctx.record
        if record is None:  # a final window's emission: no input record to take time from
            ctx.send_raw(topic, vb, key=kb)  # type: ignore[arg-type]
        else:
            ctx.send_raw(topic, vb, key=kb, timestamp=record.timestamp, headers=record.headers)  # type: ignore[arg-type]


class CallProcessor(Node):
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


class Aggregate(Node):
    """``agg = aggregator(key, value, store.get(key, initializer()))``; emits updates."""

    __slots__ = ("aggregator", "initializer", "store")

    def __init__(
        self,
        store: str,
        initializer: Callable[[], object],
        aggregator: Callable[[Any, Any, Any], object],
    ) -> None:
        super().__init__(False)
        self.store = store
        self.initializer = initializer
        self.aggregator = aggregator

    def push(self, key: object, value: object, ctx: Context) -> None:
        table = ctx.store(self.store)
        current = table.get(key, MISSING)
        if current is MISSING:
            current = self.initializer()
        updated = self.aggregator(key, value, current)
        table[key] = updated
        self.forward(key, updated, ctx)


MISSING = object()


class Join(Node):
    """Joins each record with the value of ``ctx.store(store)`` (a table, or a global
    table) for its key, or for ``key_fn(key, value)`` if given: ``(key, joiner(value,
    table_value))``. Without a table value (or with a null lookup key) the record is
    dropped, or joined with None if ``left``."""

    __slots__ = ("joiner", "key_fn", "left", "store")

    def __init__(
        self,
        store: str,
        key_fn: Callable[[Any, Any], object] | None,
        joiner: Callable[[Any, Any], object],
        left: bool,
    ) -> None:
        super().__init__(False)
        self.store = store
        self.key_fn = key_fn
        self.joiner = joiner
        self.left = left

    def push(self, key: object, value: object, ctx: Context) -> None:
        lookup = key if self.key_fn is None else self.key_fn(key, value)
        # A table value is never None (a null value deletes): None is "no record".
        current = None if lookup is None else ctx.store(self.store).get(lookup)
        if current is None and not self.left:
            return
        joined = self.joiner(value, current)
        for child in self.children:
            child.push(key, joined, ctx)


class Branch(Node):
    __slots__ = ("outputs", "predicates")

    def __init__(self, predicates: list[Callable[[Any, Any], object]]) -> None:
        super().__init__(False)
        self.predicates = predicates
        self.outputs: list[Node] = []

    def push(self, key: object, value: object, ctx: Context) -> None:
        for predicate, out in zip(self.predicates, self.outputs, strict=True):
            if predicate(key, value):
                out.push(key, value, ctx)
                return


class GroupAnchor(Node):
    """Where the aggregation of a re-keyed stream attaches: each aggregation node
    appended to ``children`` gets its own repartition topic, named after its store.

    ``GroupedStream`` and ``WindowedGroupedStream`` attach aggregations with
    ``stream._node.children.append(node)``; the store name is known only then,
    so the anchor creates the re-keying node, the sink and the topic there.
    The anchor itself is never pushed into.
    """

    __slots__ = ("attach_to", "claims", "key_fn", "last", "partitions")

    def __init__(
        self,
        claims: TopicClaims,
        attach_to: Node,
        key_fn: Callable[[Any, Any], object] | None,
        partitions: int | None,
    ) -> None:
        super().__init__(False)
        self.claims = claims
        self.attach_to = attach_to
        self.key_fn = key_fn
        self.partitions = partitions
        self.last: Repartition | None = None
        self.children = _Attaching(self._attach)

    def push(self, key: object, value: object, ctx: Context) -> None:
        raise RuntimeError("a GroupAnchor is not part of the record path")

    def _attach(self, aggregation: Node) -> None:
        store = getattr(aggregation, "store", None)
        if not isinstance(store, str):
            raise ConfigError("only an aggregation can follow group_by()", "dsl")
        spec = self.claims.add_repartition(store, self.partitions)
        sink = spec.sink(aggregation=store)
        upstream = self.attach_to
        fn = self.key_fn
        if fn is not None:
            rekey = Map(lambda k, v: (fn(k, v), v))
            upstream.children.append(rekey)
            upstream = rekey
        upstream.children.append(sink)
        spec.source.children.append(aggregation)
        self.last = spec


class _Attaching(list[Node]):
    """A children list whose ``append`` hands the node to ``attach``."""

    def __init__(self, attach: Callable[[Node], None]) -> None:
        super().__init__()
        self._attach_node = attach

    def append(self, node: Node) -> None:
        self._attach_node(node)
