"""Static checks of the typed API: ``mypy --strict tests/typing`` (``tox -e type``).

Never run, only type-checked: each ``assert_type`` states what the checker
must infer, and the file must pass ``--strict`` without a ``type: ignore``.
"""

from __future__ import annotations

from typing import Any

from typing_extensions import assert_type

import eos
from eos.state.transaction import StoreTransaction
from eos.testing import TestDriver

COUNTS: eos.Store[str, int] = eos.Store("counts", key_serde="string")


class Order:
    """A user type with a serde of its own."""

    def __init__(self, sku: str) -> None:
        self.sku = sku


class OrderSerde:
    """A ``Serde[Order]``: structural, no base class needed."""

    def serialize(self, value: Order | None) -> bytes | None:
        return None if value is None else value.sku.encode()

    def deserialize(self, data: bytes | None) -> Order | None:
        return None if data is None else Order(data.decode())


class CountOrders(eos.Processor[str, dict[str, object]]):
    """A typed processor: string keys, JSON object values, an int store."""

    stores = [COUNTS]

    def process(
        self, record: eos.Record[str, dict[str, object]], ctx: eos.Context[str, dict[str, object]]
    ) -> None:
        assert_type(record.key, str)
        assert_type(record.value, dict[str, object])
        counts = ctx.store(COUNTS)
        assert_type(counts, StoreTransaction[str, int])
        n = counts.get(record.key, 0) + 1
        assert_type(n, int)
        counts[record.key] = n
        assert_type(ctx.store("counts"), StoreTransaction[object, object])
        ctx.send("order-counts", str(n), key=record.key)


class Untyped(eos.Processor):
    """Unparameterised use, as before the API was generic."""

    def process(self, record: eos.Record, ctx: eos.Context) -> None:
        assert_type(record.key, object)
        ctx.send("out", record.value, key=record.key)


class AsyncCount(eos.AsyncProcessor[str, dict[str, object]]):
    """An async processor: ``async def`` process and hooks type-check without ignores."""

    stores = [COUNTS]

    async def setup(self) -> None:
        pass

    async def process(
        self, record: eos.Record[str, dict[str, object]], ctx: eos.Context[str, dict[str, object]]
    ) -> None:
        assert_type(record.key, str)
        counts = ctx.store(COUNTS)
        counts[record.key] = counts.get(record.key, 0) + 1
        ctx.send("async-counts", str(counts[record.key]), key=record.key)

    async def on_assign(
        self, partitions: list[eos.TopicPartition], ctx: eos.Context[str, dict[str, object]]
    ) -> None:
        pass

    async def on_revoke(self, partitions: list[eos.TopicPartition]) -> None:
        pass

    async def teardown(self) -> None:
        pass


async def _lookup(value: str) -> int:
    return len(value)


async def _known(key: str, value: str) -> bool:
    return bool(key)


def async_pipeline() -> None:
    orders = eos.StreamBuilder().stream("o", key_serde="string", value_serde="string")
    assert_type(orders.filter_async(_known).map_values_async(_lookup), eos.Stream[str, int])
    eos.Application(
        application_id="a",
        bootstrap_servers="localhost:9092",
        input_topics=["o"],
        processor=AsyncCount(),
        max_in_flight=200,
    )


def pipelines() -> None:
    """Streams are typed by their serdes, and by each step."""
    builder = eos.StreamBuilder()
    assert_type(builder.stream("a"), eos.Stream[object, object])
    assert_type(builder.stream("b", key_serde="string", value_serde="json"), eos.Stream[str, Any])
    assert_type(builder.stream("c", key_serde="str", value_serde="bytes"), eos.Stream[str, bytes])
    assert_type(builder.stream("d", value_serde=eos.StringSerde()), eos.Stream[object, str])
    orders = builder.stream("e", key_serde=eos.StringSerde(), value_serde=OrderSerde())
    assert_type(orders, eos.Stream[str, Order])
    skus = orders.map_values(lambda order: order.sku)
    assert_type(skus, eos.Stream[str, str])
    lengths = skus.filter(lambda k, v: v != "").map(lambda k, v: (v, len(v)))
    assert_type(lengths, eos.Stream[str, int])
    counts = builder.stream("f", key_serde="string", value_serde="string").group_by_key()
    assert_type(counts.count(store="n"), eos.Table[str, int])
    totals = counts.aggregate(lambda: 0, lambda k, v, total: total + len(v), store="t")
    assert_type(totals, eos.Table[str, int])
    assert_type(totals.to_stream(), eos.Stream[str, int])
    typed_input = builder.stream("g", key_serde="string", value_serde="json")
    typed_input.process(CountOrders())


def applications() -> None:
    """A typed processor goes wherever a processor goes."""
    eos.Application(
        application_id="orders",
        bootstrap_servers="localhost:9092",
        input_topics=["orders", "refunds"],
        processor=CountOrders(),
        key_serde="string",
        value_serde="json",
        input_serdes={"refunds": (None, OrderSerde())},
    )
    TestDriver(CountOrders(), key_serde="string", value_serde="json")
    TestDriver(Untyped())
