"""TestDriver runs processors in-process with the engine's per-record rules."""

from __future__ import annotations

import time

import pytest

import eos
from eos.errors import ProcessingError
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


def test_driver_is_fast() -> None:
    """10,000 records through a stateful processor take well under a second."""
    driver = TestDriver(CountOrders(), partitions=4, key_serde="string", value_serde="string")
    started = time.perf_counter()
    driver.send_many((f"k{i % 100}", "order") for i in range(10_000))
    assert time.perf_counter() - started < 2.0
    assert sum(driver.store("order-counts").values()) == 10_000  # type: ignore[arg-type]
