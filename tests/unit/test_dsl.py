"""Every DSL operation, run through the TestDriver (no broker)."""

from __future__ import annotations

import pytest

import eos
from eos.testing import TestDriver


def _driver(builder: eos.StreamBuilder, **kwargs: object) -> TestDriver:
    return TestDriver(
        builder.build(),
        input_topic="in",
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
            ctx.send("tagged", f"{record.value}!", record.key)

    builder = eos.StreamBuilder()
    builder.stream("in").map_values(str.upper).process(Tag())
    driver = _driver(builder)
    driver.send("hi", key="k")
    assert driver.output_pairs("tagged") == [("k", "HI!")]
    assert driver.store("seen") == {"k": True}


def test_group_by_key_after_rekey_is_rejected() -> None:
    """Aggregating a re-keyed stream without a repartition topic is a ConfigError."""
    builder = eos.StreamBuilder()
    with pytest.raises(eos.ConfigError, match="repartition"):
        builder.stream("in").map(lambda k, v: (v, k)).group_by_key()


def test_to_with_one_serde_uses_the_application_serde_for_the_other() -> None:
    """to(topic, key_serde=...) still serializes the value with the application's serde."""
    builder = eos.StreamBuilder()
    builder.stream("in").to("out", key_serde="string")
    driver = TestDriver(builder.build(), input_topic="in", key_serde="string", value_serde="json")
    driver.send("hello", key="k")
    driver.send({"a": 1}, key="k")
    assert [o.raw_value for o in driver.outputs("out")] == [b'"hello"', b'{"a":1}']
