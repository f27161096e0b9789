"""Every DSL operation, run through the TestDriver (no broker)."""

from __future__ import annotations

import pytest

import eos
import eos.dsl
from eos.dsl import input_topics_for, source_topics
from eos.testing import TestDriver


def _driver(builder: eos.StreamBuilder, **kwargs: object) -> TestDriver:
    return TestDriver(
        builder.build(),
        input_topics="in",
        key_serde="string",
        value_serde="string",
        **kwargs,  # type: ignore[arg-type]
    )


def test_filter_filter_not_map_values_peek_to() -> None:
    """filter/filter_not drop records, map_values transforms, peek sees, to sends."""
    seen: list[tuple[object, object]] = []
    builder = eos.StreamBuilder()
    (
        builder.stream("in")
        .filter(lambda k, v: v is not None)
        .filter_not(lambda k, v: v == "skip")
        .map_values(str.upper)
        .peek(lambda k, v: seen.append((k, v)))
        .to("out")
    )
    driver = _driver(builder)
    for value in ["a", None, "skip", "b"]:
        driver.send(value, key="k")
    assert driver.output_pairs("out") == [("k", "A"), ("k", "B")]
    assert seen == [("k", "A"), ("k", "B")]


def test_map_and_flat_map_rekey() -> None:
    """map and flat_map change keys and values; flat_map_values fans out values."""
    builder = eos.StreamBuilder()
    stream = builder.stream("in")
    stream.map(lambda k, v: (v, k)).to("swapped")
    stream.flat_map(lambda k, v: [(f"{k}{i}", v) for i in range(2)]).to("fanned")
    stream.flat_map_values(lambda v: v.split()).to("words")  # type: ignore[attr-defined]
    driver = _driver(builder)
    driver.send("x y", key="k")
    assert driver.output_pairs("swapped") == [("x y", "k")]
    assert driver.output_pairs("fanned") == [("k0", "x y"), ("k1", "x y")]
    assert driver.output_pairs("words") == [("k", "x"), ("k", "y")]


def test_branch_sends_to_first_match() -> None:
    """branch routes each record to the first predicate that matches, else drops it."""
    builder = eos.StreamBuilder()
    small, large = builder.stream("in").branch(
        lambda k, v: len(v) < 3,
        lambda k, v: len(v) < 10,  # type: ignore[arg-type]
    )
    small.to("small")
    large.to("large")
    driver = _driver(builder)
    for value in ["ab", "abcdef", "x" * 20]:
        driver.send(value, key="k")
    assert driver.output_values("small") == ["ab"]
    assert driver.output_values("large") == ["abcdef"]


def test_count_aggregate_reduce_tables() -> None:
    """count, aggregate and reduce keep per-key state and emit every update."""
    builder = eos.StreamBuilder()
    grouped = builder.stream("in").group_by_key()
    grouped.count(store="counts").to_stream().to("counts-out", value_serde="json")
    grouped.aggregate(lambda: "", lambda k, v, agg: agg + v, store="concat").to_stream().to(
        "concat-out"
    )
    grouped.reduce(lambda a, b: max(a, b), store="max").to_stream().to("max-out")
    driver = _driver(builder, processing_error_policy="fail")
    for key, value in [("a", "x"), ("b", "y"), ("a", "z")]:
        driver.send(value, key=key)
    assert [o.raw_value for o in driver.outputs("counts-out")] == [b"1", b"1", b"2"]
    assert driver.output_pairs("concat-out") == [("a", "x"), ("b", "y"), ("a", "xz")]
    assert driver.output_pairs("max-out") == [("a", "x"), ("b", "y"), ("a", "z")]
    assert driver.store("counts") == {"a": 2, "b": 1}


def test_dsl_calls_a_processor() -> None:
    """A DSL stream can hand records to a Processor subclass, stores included."""

    class Tag(eos.Processor):
        stores = [eos.Store("seen", backend="memory")]

        def process(self, record: eos.Record, ctx: eos.Context) -> None:
            seen = ctx.store("seen")
            seen[record.key] = True
            ctx.send("tagged", f"{record.value}!", key=record.key)

    builder = eos.StreamBuilder()
    builder.stream("in").map_values(str.upper).process(Tag())
    driver = _driver(builder)
    driver.send("hi", key="k")
    assert driver.output_pairs("tagged") == [("k", "HI!")]
    assert driver.store("seen") == {"k": True}


def test_group_by_key_after_rekey_goes_through_a_repartition_topic() -> None:
    """Aggregating a re-keyed stream writes it to <app>-<store>-repartition and counts
    the records read back from it (no longer refused)."""
    builder = eos.StreamBuilder()
    builder.stream("in").map(lambda k, v: (v, k)).group_by_key().count(store="n").to_stream().to(
        "counts", value_serde="json"
    )
    driver = _driver(builder, application_id="app")
    driver.send("x", key="a")
    driver.send("x", key="b")
    assert driver.output_pairs("counts") == [("x", 1), ("x", 2)]
    assert [o.key for o in driver.outputs("app-n-repartition")] == ["x", "x"]


def test_to_with_one_serde_uses_the_application_serde_for_the_other() -> None:
    """to(topic, key_serde=...) still serializes the value with the application's serde."""
    builder = eos.StreamBuilder()
    builder.stream("in").to("out", key_serde="string")
    driver = TestDriver(builder.build(), input_topics="in", key_serde="string", value_serde="json")
    driver.send("hello", key="k")
    driver.send({"a": 1}, key="k")
    assert [o.raw_value for o in driver.outputs("out")] == [b'"hello"', b'{"a":1}']


# -- source topics are the input topics (issue 12, item 2) ---------------------------


def _orders() -> eos.StreamBuilder:
    builder = eos.StreamBuilder()
    builder.stream("orders").to("out")
    builder.stream("returns").to("out")
    return builder


def test_input_topics_default_to_the_topologys_sources() -> None:
    """An application of a DSL processor may leave input_topics out: they are its sources."""
    processor = _orders().build()
    assert input_topics_for(processor, None, "app") == ("orders", "returns")
    assert input_topics_for(processor, ["returns", "orders"], "app") == ("returns", "orders")


@pytest.mark.parametrize(
    ("given", "problem"),
    [
        (["order"], r"\['order'\] not read by any builder.stream"),
        ("orders", r"\['returns'\] read by builder.stream\(\) or table\(\) but not consumed"),
        (["orders", "returns", "extra"], r"\['extra'\] not read"),
    ],
)
def test_input_topics_that_differ_from_the_sources_are_a_config_error(
    given: list[str] | str, problem: str
) -> None:
    """A topic not in the topology (its records would be dropped and committed) or a
    source not consumed is refused, for the Application and the TestDriver alike."""
    processor = _orders().build()
    with pytest.raises(eos.ConfigError, match=problem) as info:
        input_topics_for(processor, given, "app")
    assert info.value.key == "input_topics"
    with pytest.raises(eos.ConfigError, match=problem):
        TestDriver(processor, input_topics=given)


def test_a_plain_processor_needs_input_topics() -> None:
    """Only a DSL processor knows its topics; any other needs them named."""

    class Plain(eos.Processor):
        def process(self, record: eos.Record, ctx: eos.Context) -> None:
            pass

    assert source_topics(Plain()) is None
    assert input_topics_for(Plain(), "a", "app") == ("a",)
    with pytest.raises(eos.ConfigError, match="input_topics is required for Plain"):
        input_topics_for(Plain(), None, "app")


def test_a_record_of_an_unknown_topic_stops_the_topology_instead_of_being_dropped() -> None:
    """The compiled processor raises ConfigError (a programming error, never skipped) for a
    record of a topic it has no stream() of, so its offset is never committed as processed."""
    processor = _orders().build()
    ctx = eos.Context(
        application_id="t",
        produce=lambda *a, **k: None,
        key_serde=eos.BytesSerde(),
        value_serde=eos.BytesSerde(),
    )
    record = eos.Record(b"k", b"v", "order", 0, 0, 0)
    with pytest.raises(eos.ConfigError, match="topic 'order' reached a DSL topology"):
        processor.process(record, ctx)


# -- per-sink serdes (issue 12, item c) ---------------------------------------------


def test_outputs_are_read_back_with_the_sinks_own_serde() -> None:
    """driver.outputs() of a to(topic, value_serde=...) deserialize with that serde, as a
    consumer of the topic would, not with the application's."""
    builder = eos.StreamBuilder()
    builder.stream("in").group_by_key().count(store="n").to_stream().to(
        "counts", value_serde="json"
    )
    driver = _driver(builder)
    driver.send("x", key="a")
    driver.send("y", key="a")
    assert driver.output_pairs("counts") == [("a", 1), ("a", 2)]
    assert [o.raw_value for o in driver.outputs("counts")] == [b"1", b"2"]


def test_a_sink_serde_that_refuses_the_value_is_a_serialization_error() -> None:
    """A count sent to(..., value_serde="string") fails as ctx.send would: SerializationError
    naming the part and the topic, under the policy (dead letter says SerializationError)."""
    builder = eos.StreamBuilder()
    builder.stream("in").group_by_key().count(store="n").to_stream().to(
        "counts", value_serde="string"
    )
    failing = _driver(builder)
    with pytest.raises(eos.ProcessingError) as info:
        failing.send("x", key="a")
    cause = info.value.cause
    assert isinstance(cause, eos.SerializationError)
    assert (cause.part, cause.operation, cause.topic) == ("value", "serialize", "counts")
    assert failing.store("n") == {}

    dlq = _driver(builder, processing_error_policy="dead_letter", dead_letter_topic="dlq")
    dlq.send("x", key="a")
    [letter] = dlq.outputs("dlq")
    assert dict(letter.headers or [])["eos.error.type"] == b"SerializationError"
    assert dlq.outputs("counts") == []


def test_one_topic_with_two_different_sink_serdes_is_a_config_error() -> None:
    """Two to() of one topic must agree on its serdes: a topic holds one format."""
    builder = eos.StreamBuilder()
    stream = builder.stream("in")
    stream.to("out", value_serde="json")
    stream.to("out", value_serde="json")
    with pytest.raises(eos.ConfigError, match="to\\('out'\\) is used twice"):
        stream.to("out")


def test_eos_dsl_keeps_the_names_the_application_engine_and_driver_import() -> None:
    """eos.dsl exports the builder classes and the functions an application of a
    processor calls, wherever in eos._dsl_* they are defined."""
    assert sorted(eos.dsl.__all__) == [
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
    for name in eos.dsl.__all__:
        assert getattr(eos.dsl, name) is not None
    for name in ("GlobalTable", "GroupedStream", "Stream", "StreamBuilder", "Table"):
        assert getattr(eos, name) is getattr(eos.dsl, name)
