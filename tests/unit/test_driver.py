"""TestDriver runs processors in-process with the engine's per-record rules."""

from __future__ import annotations

import pytest

import eos
from eos.errors import ProcessingError, ProduceError, SerializationError, StateError
from eos.processor import undeclared_store
from eos.testing.driver import TestDriver


class CountOrders(eos.Processor):
    stores = [eos.Store("order-counts")]

    def process(self, record: eos.Record, ctx: eos.Context) -> None:
        counts = ctx.store("order-counts")
        n = counts.get(record.key, 0) + 1  # type: ignore[operator]
        counts[record.key] = n
        if record.value == "boom-after-write":
            raise ValueError("boom")
        ctx.send("order-counts-out", key=record.key, value=str(n))


def test_counts_outputs_and_store() -> None:
    """Outputs and committed store contents are visible per topic and per store."""
    driver = TestDriver(CountOrders(), key_serde="string", value_serde="string")
    for key in ["alice", "bob", "alice"]:
        driver.send("order", key=key)
    assert driver.output_pairs("order-counts-out") == [("alice", "1"), ("bob", "1"), ("alice", "2")]
    assert driver.store("order-counts") == {"alice": 2, "bob": 1}


def test_failing_record_leaves_no_partial_state_and_fail_raises() -> None:
    """A record that wrote state then raised is rolled back, and `fail` raises ProcessingError."""
    driver = TestDriver(CountOrders(), key_serde="string", value_serde="string")
    driver.send("order", key="alice")
    with pytest.raises(ProcessingError) as info:
        driver.send("boom-after-write", key="alice")
    assert info.value.offset == 1
    assert driver.store("order-counts") == {"alice": 1}


def test_skip_and_dead_letter_policies() -> None:
    """`skip` counts the failing record; `dead_letter` records it with the engine's headers."""
    skipping = TestDriver(
        CountOrders(), key_serde="string", value_serde="string", processing_error_policy="skip"
    )
    skipping.send("boom-after-write", key="a")
    assert skipping.skipped == 1 and skipping.store("order-counts") == {}

    dlq = TestDriver(
        CountOrders(),
        key_serde="string",
        value_serde="string",
        processing_error_policy="dead_letter",
        dead_letter_topic="dlq",
    )
    dlq.send("boom-after-write", key="a")
    [record] = dlq.outputs("dlq")
    assert record.raw_value == b"boom-after-write"
    headers = dict(record.headers or [])
    assert headers["eos.error.type"] == b"ValueError"
    assert headers["eos.source.offset"] == b"0"


def test_partitions_have_their_own_stores() -> None:
    """With several partitions each record's store partition is its own."""
    driver = TestDriver(CountOrders(), partitions=4, key_serde="string", value_serde="string")
    for i in range(100):
        driver.send("order", key=f"k{i % 10}")
    assert driver.store("order-counts") == {f"k{i}": 10 for i in range(10)}


def test_driver_runs_ten_thousand_records_through_a_store() -> None:
    """10,000 records through a stateful processor over 4 partitions: every one counted.
    (Speed is measured in benchmarks/, never asserted here.)"""
    driver = TestDriver(CountOrders(), partitions=4, key_serde="string", value_serde="string")
    driver.send_many((f"k{i % 100}", "order") for i in range(10_000))
    assert sum(driver.store("order-counts").values()) == 10_000  # type: ignore[arg-type]


# -- input topics (issue 12, item 2) ------------------------------------------------


def test_a_record_of_a_topic_the_processor_does_not_read_is_refused() -> None:
    """send(topic=...) outside the input topics raises ConfigError and processes nothing."""
    driver = TestDriver(
        CountOrders(), input_topics=["orders"], key_serde="string", value_serde="string"
    )
    with pytest.raises(eos.ConfigError, match=r"does not read topic 'order'.*\['orders'\]"):
        driver.send("order", key="alice", topic="order")
    driver.send("order", key="alice", topic="orders")
    assert driver.store("order-counts") == {"alice": 1}


def test_on_assign_gets_every_partition_of_every_input_topic() -> None:
    """The driver assigns what the engine would: each input topic times each partition."""
    assigned: list[eos.TopicPartition] = []

    class Watch(eos.Processor):
        def process(self, record: eos.Record, ctx: eos.Context) -> None:
            pass

        def on_assign(self, partitions: list[eos.TopicPartition], ctx: eos.Context) -> None:
            assigned.extend(partitions)

    TestDriver(Watch(), input_topics=["a", "b"], partitions=2)
    assert assigned == [("a", 0), ("a", 1), ("b", 0), ("b", 1)]


def test_a_partition_outside_the_input_is_refused() -> None:
    """send(partition=n) with n >= partitions is a ConfigError, not a store KeyError."""
    driver = TestDriver(CountOrders(), partitions=2, key_serde="string", value_serde="string")
    with pytest.raises(eos.ConfigError, match="partition 2"):
        driver.send("order", key="a", partition=2)


# -- keyword-only keys (issue 12, item 7) -------------------------------------------


def test_a_key_passed_by_position_is_a_type_error() -> None:
    """ctx.send(topic, value, key) and driver.send(value, key) fail instead of swapping."""

    class Positional(eos.Processor):
        def process(self, record: eos.Record, ctx: eos.Context) -> None:
            ctx.send("out", record.value, record.key)  # type: ignore[misc]

    driver = TestDriver(Positional(), processing_error_policy="skip")
    with pytest.raises(TypeError):
        driver.send(b"v", b"k")  # type: ignore[misc]
    driver.send(b"v", key=b"k")
    assert driver.skipped == 1
    assert isinstance(driver.errors[0].cause, TypeError)
    assert driver.outputs("out") == []


def test_send_many_takes_key_value_pairs_like_output_pairs() -> None:
    """send_many((key, value), ...) feeds pairs in the order output_pairs returns them."""

    class Echo(eos.Processor):
        def process(self, record: eos.Record, ctx: eos.Context) -> None:
            ctx.send("out", record.value, key=record.key)

    first = TestDriver(Echo(), key_serde="string", value_serde="string")
    first.send_many([("k1", "v1"), ("k2", "v2")])
    second = TestDriver(Echo(), key_serde="string", value_serde="string")
    second.send_many(first.output_pairs("out"))
    assert second.output_pairs("out") == [("k1", "v1"), ("k2", "v2")]


# -- parity with the engine (issue 12, item c) --------------------------------------


class _Refuses:
    """A custom serde whose failures are plain ValueErrors."""

    def serialize(self, value: object) -> bytes | None:
        if value == "bad":
            raise ValueError("cannot write 'bad'")
        return None if value is None else str(value).encode()

    def deserialize(self, data: bytes | None) -> object:
        if data == b"bad":
            raise ValueError("cannot read 'bad'")
        return None if data is None else data.decode()


def test_a_failing_custom_deserializer_is_the_engines_serialization_error() -> None:
    """An undecodable value reaches the policy as eos.decode_error's SerializationError,
    and the dead letter says so, with the original bytes, as the engine writes it."""
    seen: list[object] = []

    class Collect(eos.Processor):
        def process(self, record: eos.Record, ctx: eos.Context) -> None:
            seen.append(record.value)

    failing = TestDriver(Collect(), value_serde=_Refuses())
    with pytest.raises(ProcessingError) as info:
        failing.send_raw(b"bad", key=b"k")
    cause = info.value.cause
    assert isinstance(cause, SerializationError)
    assert (cause.part, cause.operation, cause.topic) == ("value", "deserialize", "input")
    assert seen == []

    dlq = TestDriver(
        Collect(),
        value_serde=_Refuses(),
        processing_error_policy="dead_letter",
        dead_letter_topic="dlq",
    )
    dlq.send_raw(b"bad", key=b"k", headers=[("trace", b"1")])
    [letter] = dlq.outputs("dlq")
    assert (letter.raw_key, letter.raw_value) == (b"k", b"bad")
    assert (letter.key, letter.value) == (b"k", b"bad")
    headers = dict(letter.headers or [])
    assert headers["eos.error.type"] == b"SerializationError"
    assert headers["trace"] == b"1"


def test_a_failing_custom_serializer_in_ctx_send_is_a_serialization_error() -> None:
    """ctx.send wraps the serde's exception in SerializationError naming part and topic."""

    class Send(eos.Processor):
        def process(self, record: eos.Record, ctx: eos.Context) -> None:
            ctx.send("out", "bad", key=record.key)

    driver = TestDriver(Send(), key_serde="string", value_serde=_Refuses())
    with pytest.raises(ProcessingError) as info:
        driver.send("ok", key="k")
    cause = info.value.cause
    assert isinstance(cause, SerializationError)
    assert (cause.part, cause.operation, cause.topic) == ("value", "serialize", "out")


def test_a_value_the_producer_would_refuse_is_a_produce_error() -> None:
    """With the bytes serde a non-bytes value is refused as confluent-kafka refuses it
    (ProduceError from a TypeError), not silently str()-encoded."""

    class SendsInt(eos.Processor):
        def process(self, record: eos.Record, ctx: eos.Context) -> None:
            ctx.send("out", 42, key=record.key)

    driver = TestDriver(SendsInt())
    with pytest.raises(ProcessingError) as info:
        driver.send(b"v", key=b"k")
    assert isinstance(info.value.cause, ProduceError)
    assert isinstance(info.value.cause.__cause__, TypeError)


def test_an_undeclared_store_has_the_engines_message() -> None:
    """ctx.store of an undeclared name raises the one ConfigError the engine raises too."""

    class Dynamic(eos.Processor):
        stores = [eos.Store("a")]

        def process(self, record: eos.Record, ctx: eos.Context) -> None:
            ctx.store(str(record.value))

    class NoStores(eos.Processor):
        def process(self, record: eos.Record, ctx: eos.Context) -> None:
            ctx.store(str(record.value))

    for processor, declared in ((Dynamic(), ["a"]), (NoStores(), [])):
        driver = TestDriver(processor, value_serde="string", processing_error_policy="skip")
        with pytest.raises(eos.ConfigError) as info:
            driver.send("b")
        expected = undeclared_store("b", type(processor).__name__, declared)
        assert str(info.value) == str(expected)
        assert driver.skipped == 0


# -- on_assign (issue 12, item d) ---------------------------------------------------


def test_on_assign_may_not_send_or_use_stores_and_process_still_can() -> None:
    """ctx.send and ctx.store raise StateError in on_assign, saying what to do instead;
    afterwards the same context sends and stores normally."""

    class SendsOnAssign(eos.Processor):
        def process(self, record: eos.Record, ctx: eos.Context) -> None:
            pass

        def on_assign(self, partitions: list[eos.TopicPartition], ctx: eos.Context) -> None:
            ctx.send("hello", b"assigned")

    class StoresOnAssign(CountOrders):
        def on_assign(self, partitions: list[eos.TopicPartition], ctx: eos.Context) -> None:
            ctx.store("order-counts")

    with pytest.raises(StateError, match=r"from on_assign.*outside any transaction"):
        TestDriver(SendsOnAssign())
    with pytest.raises(StateError, match=r"not available in on_assign.*lazily in process"):
        TestDriver(StoresOnAssign(), key_serde="string", value_serde="string")


def test_call_on_assign_restores_the_context_even_when_the_hook_raises() -> None:
    """After on_assign, raising or not, ctx.send produces again (the refusal is scoped)."""
    produced: list[tuple[object, ...]] = []

    def produce(*args: object, **kwargs: object) -> None:
        produced.append(args)

    ctx = eos.Context(
        application_id="t",
        produce=produce,
        key_serde=eos.BytesSerde(),
        value_serde=eos.BytesSerde(),
    )

    class Raises(eos.Processor):
        def process(self, record: eos.Record, ctx: eos.Context) -> None:
            pass

        def on_assign(self, partitions: list[eos.TopicPartition], ctx: eos.Context) -> None:
            raise RuntimeError("boom")

    with pytest.raises(RuntimeError):
        ctx.call_on_assign(Raises(), [])
    ctx.send("out", b"v", key=b"k")
    assert produced == [("out", b"v", b"k")]


class SendsAt(eos.Processor):
    """Sends each record's value on, with the timestamp its value names ("none": no timestamp)."""

    def process(self, record: eos.Record, ctx: eos.Context) -> None:
        stamp = str(record.value)
        if stamp == "none":
            ctx.send("out", "v", key=record.key)
        else:
            ctx.send("out", "v", key=record.key, timestamp=int(stamp))


def test_an_output_records_the_timestamp_ctx_send_gave_it() -> None:
    """Output.timestamp is ctx.send's timestamp; None without one, and for 0, which
    librdkafka reads as "none given" (both get the producer's current time)."""
    driver = TestDriver(SendsAt(), key_serde="string", value_serde="string")
    for stamp in ("1700000000000", "none", "0", "7"):
        driver.send(stamp, key="k")
    assert [o.timestamp for o in driver.outputs("out")] == [1_700_000_000_000, None, None, 7]


def test_a_timestamp_that_is_not_an_int_is_a_produce_error() -> None:
    """As confluent-kafka refuses it (TypeError), the driver refuses a float timestamp:
    a ProduceError under the policy, not an Output with a timestamp the broker never takes."""

    class SendsFloat(eos.Processor):
        def process(self, record: eos.Record, ctx: eos.Context) -> None:
            ctx.send("out", b"v", key=record.key, timestamp=1.5)  # type: ignore[arg-type]

    driver = TestDriver(SendsFloat())
    with pytest.raises(ProcessingError) as info:
        driver.send(b"v", key=b"k")
    assert isinstance(info.value.cause, ProduceError)
    assert isinstance(info.value.cause.__cause__, TypeError)
    assert driver.outputs("out") == []
