"""eos.BatchProcessor and eos.RecordBatch: what a batch holds, a batch of one, and the
mistakes refused when the app is built (the broker tests prove the guarantees)."""

from __future__ import annotations

import confluent_kafka
import pytest

import eos
from eos.testing import TestDriver

SETTINGS = {
    "application_id": "app",
    "bootstrap_servers": "127.0.0.1:9",
    "input_topics": ["in"],
}


def _messages() -> list[confluent_kafka.Message]:
    return [
        confluent_kafka.Message(
            topic="in",
            partition=2,
            offset=10 + i,
            key=b"k%d" % i,
            value=b"v%d" % i,
            timestamp=(1, 1_000 + i),
            headers=[("h", b"%d" % i)],
        )
        for i in range(3)
    ]


def test_a_batch_made_from_messages_holds_its_records_in_order() -> None:
    """keys and values as given; offsets, timestamps and Records (as process gets them)
    made from the messages when read; len and iteration over the records."""
    messages = _messages()
    batch: eos.RecordBatch[str, str] = eos.RecordBatch(
        "in", 2, ["k0", "k1", "k2"], ["v0", "v1", "v2"], messages
    )
    assert (batch.topic, batch.partition, len(batch)) == ("in", 2, 3)
    assert batch.offsets == [10, 11, 12]
    assert batch.timestamps == [1_000, 1_001, 1_002]
    assert list(batch) == [
        eos.Record("k0", "v0", "in", 2, 10, 1_000, [("h", b"0")]),
        eos.Record("k1", "v1", "in", 2, 11, 1_001, [("h", b"1")]),
        eos.Record("k2", "v2", "in", 2, 12, 1_002, [("h", b"2")]),
    ]
    assert batch.records is batch.records  # made once
    assert repr(batch) == "RecordBatch(in[2], 3 records)"


def test_the_batch_of_one_record_is_that_record() -> None:
    record = eos.Record("k", "v", "in", 1, 7, 99, None)
    batch = eos.RecordBatch.of(record)
    assert (batch.keys, batch.values, batch.offsets, batch.timestamps) == (
        ["k"],
        ["v"],
        [7],
        [99],
    )
    assert batch.records == [record]


class Count(eos.BatchProcessor[str, str]):
    stores = [eos.Store("counts")]

    def __init__(self) -> None:
        self.sizes: list[int] = []

    def process_batch(self, batch: eos.RecordBatch[str, str], ctx: eos.Context) -> None:
        self.sizes.append(len(batch))
        counts = ctx.store("counts")
        for key, value in zip(batch.keys, batch.values, strict=True):
            if value == "bad":
                raise ValueError("bad value")
            n = counts.get(key, 0) + 1
            counts[key] = n
            ctx.send("out", str(n), key=key)


def test_the_test_driver_runs_a_batch_processor_one_record_at_a_time() -> None:
    """process(record) is process_batch of that record: the TestDriver's sends are batches
    of one, and a failing record follows the policy alone."""
    processor = Count()
    driver = TestDriver(
        processor, key_serde="string", value_serde="string", processing_error_policy="skip"
    )
    for key, value in [("x", "a"), ("x", "b"), ("x", "bad"), ("y", "c")]:
        driver.send(value, key=key)
    assert driver.output_values("out") == ["1", "2", "1"]
    assert driver.store("counts") == {"x": 2, "y": 1}
    assert processor.sizes == [1, 1, 1, 1]


def _refused(processor: object) -> str:
    with pytest.raises(eos.ConfigError) as app_error:
        eos.Application(**SETTINGS, processor=processor)  # type: ignore[arg-type]
    with pytest.raises(eos.ConfigError) as driver_error:
        TestDriver(processor)  # type: ignore[arg-type]
    assert str(app_error.value) == str(driver_error.value)
    return str(app_error.value)


def test_a_batch_processor_without_process_batch_is_refused() -> None:
    class Nothing(eos.BatchProcessor):
        pass

    assert "does not implement process_batch(self, batch, ctx)" in _refused(Nothing())


def test_a_batch_processor_overriding_process_is_refused() -> None:
    class Both(eos.BatchProcessor):
        def process_batch(self, batch: eos.RecordBatch, ctx: eos.Context) -> None:
            pass

        def process(self, record: eos.Record, ctx: eos.Context) -> None:
            pass

    assert "overrides process" in _refused(Both())


def test_an_async_process_batch_is_refused() -> None:
    class Async(eos.BatchProcessor):
        async def process_batch(self, batch: eos.RecordBatch, ctx: eos.Context) -> None:  # type: ignore[override]
            pass

    assert "process_batch is an async def" in _refused(Async())


@pytest.mark.parametrize(
    ("guarantee", "lineage", "batches"),
    [
        ("exactly_once_v2", False, True),
        ("at_least_once", False, True),
        ("at_most_once", False, False),
        ("exactly_once_v2", True, False),
    ],
)
def test_batches_only_where_a_failed_batch_can_be_replayed_and_outputs_need_no_record(
    guarantee: str, lineage: bool, batches: bool
) -> None:
    """The engine hands out batches unless the guarantee never replays (at_most_once) or
    lineage headers name one input record per output; else records go one at a time."""
    from eos.engine import Engine

    config = eos.Config(
        application_id="app",
        bootstrap_servers="127.0.0.1:9",  # never contacted
        input_topics=["in"],
        processing_guarantee=guarantee,
        lineage_headers=lineage,
    )
    assert (Engine(config, Count()).batch_runs is not None) is batches
