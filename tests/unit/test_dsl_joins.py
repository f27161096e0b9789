"""Tables, global tables, stream-table joins and repartition topics of the DSL, through
the TestDriver (no broker)."""

from __future__ import annotations

import random
from collections import Counter
from typing import Any

import pytest

import eos
from eos._dsl_joins import REPARTITION_SERDE
from eos.dsl import (
    global_stores_for,
    input_serdes_for,
    input_topics_for,
    internal_topics_for,
    source_topics,
    table_topics_for,
)
from eos.errors import ConfigError, StateError
from eos.serde import resolve_serde
from eos.state.global_table import GlobalStore
from eos.testing import TestDriver

APP = "shop"


def _enrich(left: bool = False) -> eos.StreamBuilder:
    builder = eos.StreamBuilder()
    customers = builder.table("customers", store="customers", backend="memory")
    orders = builder.stream("orders")
    if left:
        orders.left_join(customers, lambda o, c: [o, c and c["tier"]]).to("out")
    else:
        orders.join(customers, lambda o, c: [o, c["tier"]]).to("out")
    return builder


def _driver(builder: eos.StreamBuilder, **kwargs: Any) -> TestDriver:
    args: dict[str, Any] = {"key_serde": "string", "value_serde": "json", "application_id": APP}
    return TestDriver(builder.build(), **{**args, **kwargs})


# -- stream-table joins ---------------------------------------------------------------


def test_inner_join_emits_only_records_whose_key_the_table_holds() -> None:
    """join() gives (key, joiner(value, table value)) for a key in the table and drops the
    others; the table's records never reach the topology."""
    driver = _driver(_enrich(), partitions=3)
    driver.send({"tier": "gold"}, key="alice", topic="customers")
    driver.send("book", key="alice")
    driver.send("pen", key="bob")
    assert driver.output_pairs("out") == [("alice", ["book", "gold"])]
    assert driver.store("customers") == {"alice": {"tier": "gold"}}


def test_left_join_emits_every_record_with_none_for_a_missing_key() -> None:
    """left_join() joins a key absent from the table with None."""
    driver = _driver(_enrich(left=True))
    driver.send({"tier": "gold"}, key="alice", topic="customers")
    driver.send("book", key="alice")
    driver.send("pen", key="bob")
    assert driver.output_pairs("out") == [("alice", ["book", "gold"]), ("bob", ["pen", None])]


def test_a_table_update_is_seen_by_the_next_stream_record() -> None:
    """A record of the table's topic replaces the key's value for the records after it."""
    driver = _driver(_enrich(), partitions=2)
    driver.send({"tier": "silver"}, key="alice", topic="customers")
    driver.send("a", key="alice")
    driver.send({"tier": "gold"}, key="alice", topic="customers")
    driver.send("b", key="alice")
    assert driver.output_pairs("out") == [("alice", ["a", "silver"]), ("alice", ["b", "gold"])]


def test_a_tombstone_deletes_the_key_from_the_table() -> None:
    """A null value on the table's topic deletes the key: the inner join drops the next
    record, the left join sees None, the store no longer holds it."""
    for left, expected in ((False, []), (True, [("alice", ["x", None])])):
        driver = _driver(_enrich(left=left))
        driver.send({"tier": "gold"}, key="alice", topic="customers")
        driver.send(None, key="alice", topic="customers")
        driver.send("x", key="alice")
        assert driver.output_pairs("out") == expected
        assert driver.store("customers") == {}


def test_a_table_record_without_a_key_is_ignored() -> None:
    """As the engine: a keyless record of a table's topic has no place in the table."""
    driver = _driver(_enrich())
    driver.send({"tier": "gold"}, key=None, topic="customers")
    assert driver.store("customers") == {}


def test_null_stream_key_inner_join_drops_left_join_forwards_none() -> None:
    """A record with a null key finds nothing: join drops it, left_join joins it with None."""
    inner = _driver(_enrich())
    inner.send("x", key=None)
    assert inner.output_pairs("out") == []
    left = _driver(_enrich(left=True))
    left.send("x", key=None)
    assert left.output_pairs("out") == [(None, ["x", None])]


def test_table_serdes_decode_the_topic_and_the_store() -> None:
    """table(key_serde=, value_serde=) are the serdes the topic is decoded with (as stream()'s
    are): the store holds what they decode and the join finds the stream's key."""
    builder = eos.StreamBuilder()
    names = builder.table("names", store="names", value_serde="string", backend="memory")
    builder.stream("ids").join(names, lambda v, name: f"{v}:{name}").to("out")
    processor = builder.build()
    assert input_serdes_for(processor, {}, APP) == {"names": (None, resolve_serde("string"))}
    driver = TestDriver(processor, key_serde="string", value_serde="string", application_id=APP)
    driver.send_raw(b"Alice", key=b"1", topic="names")
    driver.send("x", key="1", topic="ids")
    assert driver.store("names") == {"1": "Alice"}
    assert driver.output_values("out") == ["x:Alice"]


def test_a_table_record_that_does_not_decode_goes_through_the_policy() -> None:
    """As the engine: a table record is decoded (checked) with the table's serdes, and one
    that fails is dead-lettered and not written."""
    driver = _driver(_enrich(), processing_error_policy="dead_letter", dead_letter_topic="dlq")
    driver.send_raw(b"{not json", key=b"alice", topic="customers")
    assert driver.store("customers") == {}
    [letter] = driver.outputs("dlq")
    assert letter.raw_value == b"{not json"


def test_a_table_is_read_only_for_the_processor() -> None:
    """A Processor-API table (eos.Store(source_topic=...)) is read with ctx.store; a write is
    a StateError (a programming error: no policy applies)."""

    class Enrich(eos.Processor):
        stores = [eos.Store("customers", backend="memory", source_topic="customers")]

        def process(self, record: eos.Record, ctx: eos.Context) -> None:
            table = ctx.store("customers")
            ctx.send("out", [record.value, table.get(record.key)], key=record.key)
            if record.value == "write":
                table[record.key] = "x"

    driver = TestDriver(Enrich(), input_topics=["orders"], key_serde="string", value_serde="json")
    assert driver.input_topics == ("orders", "customers")
    driver.send({"tier": "gold"}, key="alice", topic="customers")
    driver.send("book", key="alice", topic="orders")
    assert driver.output_pairs("out") == [("alice", ["book", {"tier": "gold"}])]
    with pytest.raises(StateError, match="read-only"):
        driver.send("write", key="alice", topic="orders")


# -- global tables ---------------------------------------------------------------------


def _priced(left: bool = False) -> eos.StreamBuilder:
    builder = eos.StreamBuilder()
    products = builder.global_table("products", store="products", backend="memory")
    orders = builder.stream("orders", key_serde="string", value_serde="json")
    join = orders.left_join if left else orders.join
    join(
        products,
        key=lambda _k, order: order.get("sku"),
        joiner=lambda o, p: {**o, "price": p and p["price"]},
    ).to("out")
    return builder


def test_global_table_join_looks_up_the_key_fn_in_every_partition() -> None:
    """join(global_table, key=fn) looks up fn(key, value) in a table that holds every
    partition of its topic, whatever partition the order is in."""
    driver = _driver(_priced(), partitions=4)
    for sku in range(8):
        driver.send({"price": sku * 10}, key=f"sku-{sku}", topic="products")
    for n in range(20):
        driver.send({"sku": f"sku-{n % 10}"}, key=f"order-{n}")
    got = {k: v for k, v in driver.output_pairs("out")}
    assert sorted(map(str, got)) == sorted(f"order-{n}" for n in range(20) if n % 10 < 8)
    assert all(v["price"] == int(v["sku"][4:]) * 10 for v in got.values())  # type: ignore[index]
    assert driver.store("products") == {f"sku-{s}": {"price": s * 10} for s in range(8)}


def test_global_left_join_joins_with_none_when_missing_or_the_key_is_none() -> None:
    """left_join(global_table, key=fn) joins with None when fn gives None or an absent key."""
    driver = _driver(_priced(left=True))
    driver.send({"price": 5}, key="a", topic="products")
    driver.send({"sku": "a"}, key="o1")
    driver.send({"sku": "zz"}, key="o2")
    driver.send({}, key="o3")
    assert driver.output_values("out") == [
        {"sku": "a", "price": 5},
        {"sku": "zz", "price": None},
        {"price": None},
    ]


def test_a_global_table_is_read_only_and_not_an_input_topic() -> None:
    """The global store is read-only through ctx.store; its topic is not an input topic and
    naming it in input_topics is refused."""
    builder = eos.StreamBuilder()
    builder.global_table("products", store="products", backend="memory")

    class Write(eos.Processor):
        def process(self, record: eos.Record, ctx: eos.Context) -> None:
            ctx.store("products")["k"] = 1

    builder.stream("orders").process(Write())
    processor = builder.build()
    assert input_topics_for(processor, None, APP) == ("orders",)
    assert [g.name for g in global_stores_for(processor)] == ["products"]
    with pytest.raises(ConfigError, match="global table"):
        input_topics_for(processor, ["orders", "products"], APP)
    driver = TestDriver(processor, key_serde="string", value_serde="json")
    with pytest.raises(StateError, match="read-only"):
        driver.send("x", key="k")


# -- group_by and repartition ----------------------------------------------------------


def test_group_by_count_is_exact_per_new_key() -> None:
    """group_by(fn).count() over records spread on 4 partitions gives each new key the
    updates 1..N, and each key lives in one store partition."""
    rng = random.Random(14)
    regions = ["eu", "us", "apac", "latam", "mea"]
    orders = [(f"order-{i}", {"region": rng.choice(regions)}) for i in range(300)]
    builder = eos.StreamBuilder()
    (
        builder.stream("orders", key_serde="string", value_serde="json")
        .group_by(lambda _k, order: order["region"])
        .count(store="per-region", backend="memory")
        .to_stream()
        .to("counts")
    )
    driver = _driver(builder, partitions=4)
    driver.send_many(orders, topic="orders")
    truth = Counter(o["region"] for _, o in orders)
    updates: dict[object, list[object]] = {}
    for region, n in driver.output_pairs("counts"):
        updates.setdefault(region, []).append(n)
    assert updates == {r: list(range(1, n + 1)) for r, n in truth.items()}
    assert driver.store("per-region") == dict(truth)
    per_partition = [set(driver.store("per-region", p)) for p in range(4)]
    assert sum(len(keys) for keys in per_partition) == len(truth)
    assert len(driver.outputs(f"{APP}-per-region-repartition")) == len(orders)


def test_group_by_drops_records_whose_new_key_is_none() -> None:
    """A record grouped under None has no group: it is not counted (as in Kafka Streams)."""
    builder = eos.StreamBuilder()
    builder.stream("in", value_serde="json").group_by(lambda _k, v: v.get("g")).count(
        store="n", backend="memory"
    )
    driver = _driver(builder)
    driver.send({"g": "a"}, key="1")
    driver.send({}, key="2")
    assert driver.store("n") == {"a": 1}
    assert len(driver.outputs(f"{APP}-n-repartition")) == 1


def test_group_by_key_after_map_repartitions_by_the_new_key() -> None:
    """group_by_key() after map() reads the repartition topic named after its store and
    aggregates each new key in one partition."""
    builder = eos.StreamBuilder()
    (
        builder.stream("in", value_serde="json")
        .map(lambda k, v: (v["user"], 1))
        .group_by_key()
        .aggregate(int, lambda _k, v, total: total + v, store="totals", backend="memory")
        .to_stream()
        .to("out")
    )
    driver = _driver(builder, partitions=3)
    for i in range(30):
        driver.send({"user": f"u{i % 4}"}, key=f"k{i}")
    assert driver.store("totals") == {"u0": 8, "u1": 8, "u2": 7, "u3": 7}
    assert driver.output_pairs("out")[-1] == ("u1", 8)
    assert internal_topics_for(builder.build(), APP) == {f"{APP}-totals-repartition": None}


def test_repartition_then_join_finds_every_table_record() -> None:
    """select_key().repartition().join(table) on 4 partitions joins every record: the
    repartition writes keys as the table topic's, so they land in the table's partition."""
    builder = eos.StreamBuilder()
    customers = builder.table("customers", store="customers", backend="memory")
    (
        builder.stream("orders", value_serde="json")
        .select_key(lambda _k, order: order["customer"])
        .repartition(name="by-customer")
        .join(customers, lambda o, c: [o["n"], c["tier"]])
        .to("out")
    )
    driver = _driver(builder, partitions=4)
    for c in range(10):
        driver.send({"tier": f"t{c}"}, key=f"c{c}", topic="customers")
    for n in range(50):
        driver.send({"customer": f"c{n % 10}", "n": n}, key=f"order-{n}")
    got = driver.output_pairs("out")
    assert sorted(got, key=lambda kv: kv[1][0]) == [  # type: ignore[index]
        (f"c{n % 10}", [n, f"t{n % 10}"]) for n in range(50)
    ]
    assert driver.outputs(f"{APP}-by-customer-repartition")[0].raw_key == b"c0"


@pytest.mark.parametrize(
    "key",
    [b"\x00\xffraw", 7, "text", {"a": [1, 2.5, None]}, 1.5, True, None, ["x", 1]],
    ids=lambda k: type(k).__name__,
)
def test_repartition_round_trips_any_key_and_value(key: object) -> None:
    """The repartition topic's self-describing serde gives back bytes, int, str, dict,
    float, bool, None and list keys and values as they were sent (bytes at the top level:
    inside a list or dict only what JSON holds)."""
    seen: list[tuple[object, object]] = []
    builder = eos.StreamBuilder()
    (
        builder.stream("in")
        .map(lambda _k, v: (key, key))
        .repartition()
        .peek(lambda k, v: seen.append((k, v)))
    )
    driver = TestDriver(builder.build(), application_id=APP)  # bytes serdes
    driver.send(b"v", key=b"k")
    assert seen == [(key, key)]
    [out] = driver.outputs(f"{APP}-repartition-1-repartition")
    assert (out.key, out.value) == (key, key)


def test_windowed_count_after_group_by_keeps_event_time() -> None:
    """group_by().windowed_by() counts per new key and window by the input records'
    timestamps, which the repartition topic keeps."""
    builder = eos.StreamBuilder()
    counts = (
        builder.stream("clicks", key_serde="string", value_serde="json")
        .group_by(lambda _k, v: v["page"])
        .windowed_by(eos.TumblingWindows(size_ms=1_000))
        .count(store="per-page", backend="memory")
    )
    counts.final().to_stream().map(lambda w, n: (w.key, [w.start, n])).to("final")
    driver = _driver(builder)
    events = [("home", 100), ("home", 200), ("cart", 300), ("home", 1_500), ("cart", 5_000)]
    for i, (page, ts) in enumerate(events):
        driver.send({"page": page}, key=f"user-{i}", timestamp=ts)
    assert [o.timestamp for o in driver.outputs(f"{APP}-per-page-repartition")] == [
        ts for _, ts in events
    ]
    assert sorted(driver.output_pairs("final"), key=repr) == [
        ("cart", [0, 1]),
        ("home", [0, 2]),
        ("home", [1_000, 1]),
    ]
    assert driver.store("per-page") == {eos.Windowed("cart", 5_000, 6_000): 1}


def test_explicit_repartition_names_and_partitions() -> None:
    """repartition() names its topic repartition-<n> in declaration order, or by name=;
    partitions= is passed through (None: the input topics' count)."""
    builder = eos.StreamBuilder()
    stream = builder.stream("in")
    stream.repartition().to("a")
    stream.repartition(partitions=6).to("b")
    stream.repartition(name="mine", partitions=2).to("c")
    processor = builder.build()
    assert internal_topics_for(processor, "x") == {
        "x-repartition-1-repartition": None,
        "x-repartition-2-repartition": 6,
        "x-mine-repartition": 2,
    }


def test_repartition_and_join_refusals_at_build_time() -> None:
    """Misuse is a ConfigError when the topology is built, with the fix in the message."""
    builder = eos.StreamBuilder()
    customers = builder.table("customers", store="customers")
    products = builder.global_table("products", store="products")
    orders = builder.stream("orders")
    with pytest.raises(ConfigError, match=r"\.repartition\(\) before the join"):
        orders.select_key(lambda _k, v: v).join(customers, lambda o, c: o)
    with pytest.raises(ConfigError, match=r"\.repartition\(\) before the join"):
        orders.map(lambda k, v: (k, v)).left_join(customers, lambda o, c: o)
    with pytest.raises(ConfigError, match="key= is for a global table"):
        orders.join(customers, lambda o, c: o, key=lambda k, v: k)  # type: ignore[call-overload]
    with pytest.raises(ConfigError, match="needs key="):
        orders.join(products, lambda o, p: o)  # type: ignore[call-overload]
    counts = orders.group_by_key().count(store="n")
    with pytest.raises(ConfigError, match="table of an aggregation"):
        orders.join(counts, lambda o, c: o)
    with pytest.raises(ConfigError, match="same StreamBuilder"):
        eos.StreamBuilder().stream("x").join(customers, lambda o, c: o)
    with pytest.raises(ConfigError, match="no update stream"):
        customers.to_stream()
    with pytest.raises(ConfigError, match="cannot also be a stream"):
        builder.stream("customers")
    with pytest.raises(ConfigError, match="one stream or one table"):
        builder.table("orders", store="o")
    with pytest.raises(ConfigError, match="one stream or one table"):
        builder.global_table("customers", store="c2")
    orders.repartition(name="dup")
    with pytest.raises(ConfigError, match="used twice"):
        orders.repartition(name="dup")
    with pytest.raises(ConfigError, match="invalid repartition name"):
        orders.repartition(name="a b")
    with pytest.raises(ConfigError, match="invalid partitions"):
        orders.repartition(partitions=0)
    with pytest.raises(ConfigError, match="invalid partitions"):
        orders.group_by(lambda k, v: k, partitions=True)


def test_a_group_by_aggregation_joined_with_a_table_needs_its_own_repartition() -> None:
    """An aggregation's updates are partitioned by its repartition topic's tagged keys, not
    as the table's: joining them is refused until repartition() re-partitions them."""
    builder = eos.StreamBuilder()
    customers = builder.table("customers", store="customers")
    updates = (
        builder.stream("orders", value_serde="json")
        .group_by(lambda _k, v: v["customer"])
        .count(store="n")
        .to_stream()
    )
    with pytest.raises(ConfigError, match="partitioned for the aggregation 'n'"):
        updates.join(customers, lambda n, c: [n, c])
    updates.repartition().join(customers, lambda n, c: [n, c])


def test_a_repartition_joined_with_tables_of_two_key_formats_is_refused() -> None:
    """One repartition writes keys one way: two joins needing different key serdes conflict."""
    builder = eos.StreamBuilder()
    a = builder.table("a", store="a", key_serde="string")
    b = builder.table("b", store="b", key_serde="json")
    stream = builder.stream("in").repartition()
    stream.join(a, lambda v, t: v)
    with pytest.raises(ConfigError, match="cannot also be used for the join with table 'b'"):
        stream.join(b, lambda v, t: v)


def test_the_key_serde_of_a_repartitioned_join_table_must_be_named_in_the_builder() -> None:
    """input_serdes naming the key serde of a table a repartition writes keys for is refused:
    the repartition could not write them alike."""
    builder = eos.StreamBuilder()
    customers = builder.table("customers", store="customers")
    builder.stream("in").repartition().join(customers, lambda v, c: v).to("out")
    processor = builder.build()
    input_topics_for(processor, None, APP)
    # Its keys are written with the application's key serde, as the table topic's are.
    assert input_serdes_for(processor, {"customers": (None, "json")}) == {
        "customers": (None, resolve_serde("json")),
        f"{APP}-repartition-1-repartition": (None, REPARTITION_SERDE),
    }
    with pytest.raises(ConfigError, match="key_serde"):
        input_serdes_for(processor, {"customers": ("string", None)})


# -- the topics an application consumes ------------------------------------------------


def test_input_internal_and_table_topics_of_a_dsl_topology() -> None:
    """A DSL topology's input topics are its streams, its tables, then its repartition
    topics named with the application id; the given input_topics may leave out the
    internal ones (and may name them, so a result can be given back)."""
    builder = eos.StreamBuilder()
    customers = builder.table("customers", store="customers")
    builder.global_table("products", store="products")
    orders = builder.stream("orders")
    orders.join(customers, lambda o, c: o).to("out")
    orders.group_by(lambda _k, v: v).count(store="per-value")
    orders.repartition().to("x")
    processor = builder.build()
    internal = (f"{APP}-per-value-repartition", f"{APP}-repartition-1-repartition")
    assert builder.topics == ["orders", "customers"]
    assert source_topics(processor) == ("orders", "customers")
    assert input_topics_for(processor, None, APP) == ("orders", "customers", *internal)
    assert input_topics_for(processor, ["customers", "orders"], APP) == (
        "customers",
        "orders",
        *internal,
    )
    again = input_topics_for(processor, None, APP)
    assert input_topics_for(processor, again, APP) == again
    assert internal_topics_for(processor, APP) == dict.fromkeys(internal)
    assert table_topics_for(processor) == {"customers": "customers"}
    with pytest.raises(ConfigError, match=r"\['customers'\] read by"):
        input_topics_for(processor, ["orders"], APP)
    assert input_serdes_for(processor, {}) == dict.fromkeys(
        internal, (REPARTITION_SERDE, REPARTITION_SERDE)
    )


def test_a_plain_processor_gets_its_table_topics_added() -> None:
    """For a Processor-API table, input_topics_for appends the store's source topic."""

    class P(eos.Processor):
        stores = [
            eos.Store("customers", source_topic="customers"),
            GlobalStore("products", "products"),
        ]

        def process(self, record: eos.Record, ctx: eos.Context) -> None:
            pass

    assert input_topics_for(P(), ["orders"], APP) == ("orders", "customers")
    assert input_topics_for(P(), ["customers", "orders"], APP) == ("customers", "orders")
    assert table_topics_for(P()) == {"customers": "customers"}
    assert internal_topics_for(P(), APP) == {}
    assert [g.name for g in global_stores_for(P())] == ["products"]


def test_a_topology_without_repartitions_has_no_internal_topics() -> None:
    """Plain streams get nothing new: no internal topics, no extra input topics."""
    builder = eos.StreamBuilder()
    builder.stream("in").map_values(str).to("out")
    processor = builder.build()
    assert internal_topics_for(processor, APP) == {}
    assert input_topics_for(processor, None, APP) == ("in",)


def test_a_repartition_record_of_an_unbound_application_id_is_routed_by_ctx() -> None:
    """process() finds a repartition topic of ctx.application_id even before
    input_topics_for bound it; any other unknown topic still raises."""
    builder = eos.StreamBuilder()
    seen: list[object] = []
    builder.stream("in").repartition(name="r").peek(lambda k, v: seen.append(v))
    processor = builder.build()
    ctx = eos.Context(
        application_id="late",
        produce=lambda *a, **k: None,
        key_serde=eos.BytesSerde(),
        value_serde=eos.BytesSerde(),
    )
    processor.process(eos.Record(b"k", 1, "late-r-repartition", 0, 0, 0), ctx)
    assert seen == [1]
    with pytest.raises(ConfigError, match="reached a DSL topology"):
        processor.process(eos.Record(b"k", 1, "other-r-repartition2", 0, 0, 0), ctx)


def test_a_repartition_record_keeps_its_input_records_timestamp_and_headers() -> None:
    """The repartition sink sends with ctx.send_raw(timestamp=, headers=) of the input
    record: both reach the producer, and the record fed back carries them."""
    builder = eos.StreamBuilder()
    seen: list[tuple[object, object]] = []

    class Look(eos.Processor):
        def process(self, record: eos.Record, ctx: eos.Context) -> None:
            seen.append((record.timestamp, record.headers))

    builder.stream("in").select_key(lambda k, v: v).repartition(name="r").process(Look())
    driver = _driver(builder)
    driver.send("x", key="k", timestamp=1_234, headers=[("trace", b"1")])
    driver.send("y", key="k", timestamp=5_678)
    outs = driver.outputs(f"{APP}-r-repartition")
    assert [(o.timestamp, o.headers) for o in outs] == [(1_234, [("trace", b"1")]), (5_678, None)]
    assert seen == [(1_234, [("trace", b"1")]), (5_678, None)]


def test_a_repartition_sink_waits_out_a_full_queue_with_the_records_timestamp() -> None:
    """Through the engine's Context: BufferError makes the sink wait for the producer
    (on_full) and produce the same record again, timestamp and headers included."""
    builder = eos.StreamBuilder()
    builder.stream("in").repartition(name="r")
    processor = builder.build()
    calls: list[tuple[tuple[object, ...], dict[str, object]]] = []
    full = [2]

    def produce(*args: object, **kwargs: object) -> None:
        if full[0]:
            full[0] -= 1
            raise BufferError("queue full")
        calls.append((args, kwargs))

    drained: list[int] = []
    ctx = eos.Context(
        application_id=APP,
        produce=produce,
        key_serde=eos.BytesSerde(),
        value_serde=eos.BytesSerde(),
        on_full=lambda: drained.append(1),
    )
    input_topics_for(processor, None, APP)
    record: eos.Record[object, object] = eos.Record(b"k", b"v", "in", 0, 0, 99, [("h", b"1")])
    ctx.record = record
    processor.process(record, ctx)
    assert drained == [1, 1]
    assert calls == [
        (
            (
                f"{APP}-r-repartition",
                REPARTITION_SERDE.serialize(b"v"),
                REPARTITION_SERDE.serialize(b"k"),
            ),
            {"headers": [("h", b"1")], "timestamp": 99},
        )
    ]
    assert ctx.sends == 1
