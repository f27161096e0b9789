"""Tables (``eos.Store(name, source_topic=...)``) on a real broker, read back read_committed.

A processor joins each order with its customer's record in a table of the customers
topic. Checked: the table holds the topic's committed records only (aborted ones never
appear), tombstones delete, records of the two topics are processed in timestamp order
(an order sees the customer record current at its time), the table is restored from its
topic up to the group's committed offset when the local state is lost, a table's partition
count must match the stream's (refused at start-up, naming both topics), and a table is
read-only for the processor.
"""

from __future__ import annotations

import json
import shutil
import time
from pathlib import Path
from typing import Any

import pytest
from apprunner import AppThread, wait_committed
from confluent_kafka import Producer

import eos
from eos.testing.helpers import create_topic, read_topic, unique_name

pytestmark = pytest.mark.integration

T0 = 1_700_000_000_000


class Enrich(eos.Processor):
    """Each order (keyed by customer) with its customer's record from the ``customers`` table."""

    def __init__(self, customers: str, output: str) -> None:
        self.output = output
        self.stores = [eos.Store("customers", source_topic=customers)]

    def process(self, record: eos.Record, ctx: eos.Context) -> None:
        customer = ctx.store("customers").get(record.key)
        ctx.send(self.output, {**record.value, "customer": customer}, key=record.key)


class Writes(eos.Processor):
    """Tries to write to its table: must fail."""

    def __init__(self, customers: str) -> None:
        self.stores = [eos.Store("customers", source_topic=customers)]

    def process(self, record: eos.Record, ctx: eos.Context) -> None:
        ctx.store("customers")[record.key] = {"tier": "forged"}


def _produce(bootstrap: str, topic: str, items: list[tuple[str, Any, int]], **extra: Any) -> None:
    """``(key, value, timestamp)`` records to partition 0 (value None: a tombstone)."""
    producer = Producer({"bootstrap.servers": bootstrap, **extra})
    for key, value, ts in items:
        data = None if value is None else json.dumps(value)
        producer.produce(topic, data, key, 0, timestamp=ts)
    assert producer.flush(30) == 0


def _aborted(bootstrap: str, topic: str, items: list[tuple[str, Any, int]]) -> None:
    producer = Producer({"bootstrap.servers": bootstrap, "transactional.id": unique_name("tx")})
    producer.init_transactions()
    producer.begin_transaction()
    for key, value, ts in items:
        producer.produce(topic, json.dumps(value), key, 0, timestamp=ts)
    producer.abort_transaction()


def _app(bootstrap: str, app_id: str, orders: str, processor: eos.Processor, **kw: Any) -> Any:
    return eos.Application(
        application_id=app_id,
        bootstrap_servers=bootstrap,
        input_topics=[orders],
        processor=processor,
        key_serde="string",
        value_serde="json",
        commit_interval_ms=100,
        **kw,
    )


def _joined(bootstrap: str, topic: str) -> dict[str, Any]:
    return {
        json.loads(r.value or b"")["id"]: json.loads(r.value or b"")["customer"]
        for r in read_topic(bootstrap, topic)
    }


def test_orders_see_the_customer_record_current_at_their_time(
    bootstrap: str, tmp_path: Path
) -> None:
    customers = create_topic(bootstrap, unique_name("customers"), 1)
    orders = create_topic(bootstrap, unique_name("orders"), 1)
    output = create_topic(bootstrap, unique_name("enriched"), 1)
    _produce(
        bootstrap,
        customers,
        [
            ("alice", {"tier": "bronze"}, T0 + 10),
            ("bob", {"tier": "silver"}, T0 + 10),
            ("alice", {"tier": "gold"}, T0 + 30),  # after order o1, before o3
            ("bob", None, T0 + 40),  # bob deleted before o4
        ],
    )
    _aborted(bootstrap, customers, [("alice", {"tier": "aborted"}, T0 + 35)])
    _produce(
        bootstrap,
        orders,
        [
            ("alice", {"id": "o0"}, T0 + 5),  # before alice exists
            ("alice", {"id": "o1"}, T0 + 20),
            ("bob", {"id": "o2"}, T0 + 25),
            ("alice", {"id": "o3"}, T0 + 30),  # same time as the update: it sees it
            ("bob", {"id": "o4"}, T0 + 50),
        ],
    )
    app = _app(
        bootstrap,
        unique_name("tables"),
        orders,
        Enrich(customers, output),
        state_dir=str(tmp_path / "state"),
    )
    thread = AppThread(app).start()
    wait_committed(bootstrap, app.config.application_id, orders, thread=thread)
    wait_committed(bootstrap, app.config.application_id, customers, thread=thread)
    thread.stop()
    assert _joined(bootstrap, output) == {
        "o0": None,
        "o1": {"tier": "bronze"},
        "o2": {"tier": "silver"},
        "o3": {"tier": "gold"},
        "o4": None,
    }


def test_a_lost_table_is_restored_from_its_topic_up_to_the_committed_offset(
    bootstrap: str, tmp_path: Path
) -> None:
    customers = create_topic(bootstrap, unique_name("customers"), 1)
    orders = create_topic(bootstrap, unique_name("orders"), 1)
    output = create_topic(bootstrap, unique_name("enriched"), 1)
    app_id = unique_name("tables-restore")
    state = tmp_path / "state"
    _produce(bootstrap, customers, [("alice", {"tier": "bronze"}, T0), ("bob", {"v": 1}, T0)])
    _produce(bootstrap, orders, [("alice", {"id": "o1"}, T0 + 1)])
    first = AppThread(
        _app(bootstrap, app_id, orders, Enrich(customers, output), state_dir=str(state))
    )
    first.start()
    wait_committed(bootstrap, app_id, orders, thread=first)
    wait_committed(bootstrap, app_id, customers, thread=first)
    first.stop()
    shutil.rmtree(state)  # the local table is gone: it must come back from the topic
    _produce(bootstrap, customers, [("alice", {"tier": "gold"}, T0 + 10)])
    _produce(bootstrap, orders, [("alice", {"id": "o2"}, T0 + 5), ("bob", {"id": "o3"}, T0 + 6)])
    _produce(bootstrap, orders, [("alice", {"id": "o4"}, T0 + 20)])
    again = AppThread(
        _app(bootstrap, app_id, orders, Enrich(customers, output), state_dir=str(state))
    )
    again.start()
    wait_committed(bootstrap, app_id, orders, thread=again)
    wait_committed(bootstrap, app_id, customers, thread=again)
    again.stop()
    assert _joined(bootstrap, output) == {
        "o1": {"tier": "bronze"},
        "o2": {"tier": "bronze"},  # the gold record is later than o2: not restored early
        "o3": {"v": 1},
        "o4": {"tier": "gold"},
    }


def test_mismatched_partition_counts_are_refused_naming_both_topics(
    bootstrap: str, tmp_path: Path
) -> None:
    customers = create_topic(bootstrap, unique_name("customers"), 2)
    orders = create_topic(bootstrap, unique_name("orders"), 3)
    app = _app(
        bootstrap,
        unique_name("tables-mismatch"),
        orders,
        Enrich(customers, unique_name("unused")),
        state_dir=str(tmp_path / "state"),
    )
    with pytest.raises(eos.ConfigError) as caught:
        app.run()
    assert customers in str(caught.value) and orders in str(caught.value)
    assert "co-partitioned" in str(caught.value)


def test_a_table_is_read_only_for_the_processor(bootstrap: str, tmp_path: Path) -> None:
    customers = create_topic(bootstrap, unique_name("customers"), 1)
    orders = create_topic(bootstrap, unique_name("orders"), 1)
    _produce(bootstrap, orders, [("alice", {"id": "o1"}, T0)])
    app = _app(
        bootstrap,
        unique_name("tables-ro"),
        orders,
        Writes(customers),
        state_dir=str(tmp_path / "state"),
    )
    thread = AppThread(app).start()
    error = thread.join(60)
    assert isinstance(error, eos.StateError), error
    assert "read-only" in str(error)


def test_a_global_table_is_loaded_before_processing_and_kept_up_to_date(
    bootstrap: str, tmp_path: Path
) -> None:
    """A global table of a 1-partition topic joined with a 2-partition stream by a field of
    the record: loaded before the first order, and an update produced while the app runs
    reaches the orders after it."""
    products = create_topic(bootstrap, unique_name("products"), 1)
    orders = create_topic(bootstrap, unique_name("orders"), 2)
    output = create_topic(bootstrap, unique_name("priced"), 2)
    _produce(bootstrap, products, [("p1", {"price": 10}, T0), ("p2", {"price": 20}, T0)])
    _aborted(bootstrap, products, [("p1", {"price": 666}, T0)])
    builder = eos.StreamBuilder()
    catalog = builder.global_table(products, store="products")
    builder.stream(orders).join(
        catalog,
        key=lambda _k, order: order["sku"],
        joiner=lambda order, product: {**order, "price": product["price"]},
    ).to(output)
    app = eos.Application(
        application_id=unique_name("global"),
        bootstrap_servers=bootstrap,
        processor=builder.build(),
        key_serde="string",
        value_serde="json",
        commit_interval_ms=100,
        state_dir=str(tmp_path / "state"),
    )
    _produce(bootstrap, orders, [("a", {"id": "o1", "sku": "p1"}, T0 + 1)])
    _produce(bootstrap, orders, [("b", {"id": "o2", "sku": "p3"}, T0 + 2)])  # no such product
    thread = AppThread(app).start()
    wait_committed(bootstrap, app.config.application_id, orders, thread=thread)
    _produce(bootstrap, products, [("p1", {"price": 11}, T0 + 3)])
    # Once the update is applied, an order produced after it sees it.
    deadline = time.monotonic() + 60
    while True:
        _produce(bootstrap, orders, [("a", {"id": "probe", "sku": "p1"}, T0 + 4)])
        wait_committed(bootstrap, app.config.application_id, orders, thread=thread)
        prices = [json.loads(r.value or b"")["price"] for r in read_topic(bootstrap, output)]
        if prices and prices[-1] == 11:
            break
        assert time.monotonic() < deadline, prices
    thread.stop()
    first = {
        json.loads(r.value or b"")["id"]: json.loads(r.value or b"")["price"]
        for r in read_topic(bootstrap, output)
        if b'"o1"' in (r.value or b"")
    }
    assert first == {"o1": 10}
    ids = [json.loads(r.value or b"")["id"] for r in read_topic(bootstrap, output)]
    assert "o2" not in ids  # inner join: no product, no output


def test_a_repartition_with_its_own_partition_count_before_a_store_is_refused(
    bootstrap: str, tmp_path: Path
) -> None:
    """A store needs one partition count on every input topic, repartition topics included:
    group_by(partitions=N) with N other than the input's is refused at start-up, naming it."""
    orders = create_topic(bootstrap, unique_name("orders"), 2)
    builder = eos.StreamBuilder()
    builder.stream(orders).group_by(lambda _k, v: v["region"], partitions=3).count(store="n")
    app = eos.Application(
        application_id=unique_name("repartition-count"),
        bootstrap_servers=bootstrap,
        processor=builder.build(),
        value_serde="json",
        state_dir=str(tmp_path / "state"),
    )
    with pytest.raises(eos.ConfigError) as caught:
        app.run()
    assert f"{app.config.application_id}-n-repartition" in str(caught.value)
    assert "partitions=" in str(caught.value)
