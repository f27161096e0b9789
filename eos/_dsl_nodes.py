"""The operators of the stream DSL (:mod:`eos.dsl`): the nodes a topology is built of.

Each node receives ``(key, value)`` and pushes its results to its children, on
the processing thread, inside the transaction of the input record that started
the push. Nodes are untyped: :class:`~eos.dsl.Stream` types what flows between
them for the user's code.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

from eos.processor import Context, Processor, _wrap
from eos.serde import Serde

__all__ = [
    "MISSING",
    "Aggregate",
    "Branch",
    "CallProcessor",
    "Filter",
    "FlatMap",
    "FlatMapValues",
    "Map",
    "MapValues",
    "Node",
    "Pass",
    "Peek",
    "Sink",
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
