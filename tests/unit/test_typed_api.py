"""The typed API at run time: generic classes subscript, build and behave as before.

What the type checker infers is proven by ``tests/typing/check_typed_api.py``
(``mypy --strict``, in ``tox -e type``); these tests prove the run-time side.
"""

from __future__ import annotations

import pickle

import pytest

import eos
from eos.dsl import input_serdes_for
from eos.record import Record
from eos.serde import resolve_serde
from eos.state.transaction import StoreTransaction
from eos.testing import TestDriver

COUNTS: eos.Store[str, int] = eos.Store("counts", key_serde="string")


class CountPerKey(eos.Processor[str, str]):
    stores = [COUNTS]

    def process(self, record: eos.Record[str, str], ctx: eos.Context[str, str]) -> None:
        counts = ctx.store(COUNTS)
        n = counts.get(record.key, 0) + 1
        counts[record.key] = n
        ctx.send("counts-out", str(n), key=record.key)


def test_generic_classes_subscript_at_run_time() -> None:
    """Record, Processor, Context, Store, Stream and Serde take [K, V] (or [T]) at run time."""
    for generic in (eos.Record, eos.Processor, eos.Context, eos.Store, eos.Stream, eos.Table):
        assert generic[str, int] is not None  # type: ignore[index]
    assert eos.Serde[str] is not None
    assert isinstance(eos.StringSerde(), eos.Serde)


def test_the_engines_record_fast_path_builds_the_same_record() -> None:
    """tuple.__new__ (the engine's way) still builds a Record: slotted, equal, picklable."""
    fast = tuple.__new__(Record, ("k", "v", "t", 0, 5, 1000, None))
    slow = eos.Record("k", "v", "t", 0, 5, 1000)
    assert type(fast) is eos.Record
    assert fast == slow
    assert not hasattr(fast, "__dict__")
    assert pickle.loads(pickle.dumps(fast)) == fast
    assert fast._replace(value="w").value == "w"
    assert eos.Record[str, str]("k", "v", "t", 0, 5, 1000) == slow


def test_a_subscripted_store_declaration_can_be_built() -> None:
    """eos.Store[str, int](...) works on every supported Python (a slotted frozen
    dataclass could not be called through its alias before 3.13)."""
    spec = eos.Store[str, int]("totals", key_serde="string")
    assert spec.name == "totals"
    assert spec == eos.Store("totals", key_serde="string")


def test_a_typed_processor_and_its_typed_store_run_in_the_driver() -> None:
    """ctx.store(spec) opens the same store partition as ctx.store(name)."""
    driver = TestDriver(CountPerKey(), key_serde="string", value_serde="string")
    driver.send("a", key="alice")
    driver.send("b", key="alice")
    assert driver.output_values("counts-out") == ["1", "2"]
    assert driver.store("counts") == {"alice": 2}


def test_ctx_store_by_declaration_and_by_name_agree() -> None:
    """Both spellings return the one transaction of the record's partition."""
    seen: list[bool] = []

    class Both(eos.Processor[str, str]):
        stores = [COUNTS]

        def process(self, record: eos.Record[str, str], ctx: eos.Context[str, str]) -> None:
            by_spec: StoreTransaction[str, int] = ctx.store(COUNTS)
            seen.append(by_spec is ctx.store("counts"))

    TestDriver(Both(), key_serde="string", value_serde="string").send("x", key="k")
    assert seen == [True]


def test_stream_serdes_decode_each_source_topic() -> None:
    """builder.stream(topic, key_serde=..., value_serde=...) decodes that topic its own way;
    a stream without serdes keeps the application's."""
    builder = eos.StreamBuilder()
    builder.stream("orders", key_serde="string", value_serde="json").map_values(
        lambda order: order["sku"]
    ).to("skus", value_serde="string")
    builder.stream("raw").to("copied")
    driver = TestDriver(builder.build(), key_serde="bytes", value_serde="bytes")
    driver.send({"sku": "A-1"}, key="alice", topic="orders")
    driver.send(b"\x00\x01", key=b"k", topic="raw")
    assert driver.outputs("skus")[0].raw_value == b"A-1"
    assert driver.outputs("skus")[0].raw_key == b"alice"
    assert driver.output_pairs("copied") == [(b"k", b"\x00\x01")]


def test_a_repartition_topic_is_written_with_the_serdes_it_is_read_with() -> None:
    """to(topic) of a source topic defaults to that stream()'s serdes, not the application's."""
    builder = eos.StreamBuilder()
    builder.stream("lines", key_serde="string", value_serde="string").flat_map(
        lambda _k, line: [(w, w) for w in line.split()]
    ).to("words")
    words = builder.stream("words", key_serde="string", value_serde="string")
    words.group_by_key().count(store="n", backend="memory").to_stream().map_values(str).to(
        "counts", value_serde="string"
    )
    driver = TestDriver(builder.build())  # the application's serdes: bytes
    driver.send("a b a", key="line", topic="lines")
    assert driver.outputs("words")[0].raw_value == b"a"
    for output in driver.outputs("words"):
        driver.send_raw(output.raw_value, key=output.raw_key, topic="words")
    assert driver.output_values("counts") == ["1", "1", "2"]


def test_one_topic_with_two_formats_in_the_builder_is_refused() -> None:
    """stream(t) twice with different serdes is a ConfigError; the same serdes (or an
    alias, or none the second time) are fine."""
    builder = eos.StreamBuilder()
    builder.stream("t", key_serde="string")
    builder.stream("t", key_serde="str", value_serde="json")
    builder.stream("t")
    with pytest.raises(eos.ConfigError, match="one topic holds one format"):
        builder.stream("t", value_serde="string")
    assert input_serdes_for(builder.build(), {}) == {
        "t": (resolve_serde("string"), resolve_serde("json"))
    }


def test_an_invalid_stream_serde_is_a_config_error() -> None:
    """An unknown serde name is refused where it is written."""
    with pytest.raises(eos.ConfigError, match="invalid value_serde"):
        eos.StreamBuilder().stream("t", value_serde="yaml")  # type: ignore[call-overload]
