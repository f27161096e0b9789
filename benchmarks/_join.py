"""The join contenders' workload: a customers table topic and an orders topic, the
joined output they must produce, and one measurement.

Input (made once per record count, reused while both topics hold exactly it):

- customers: ``CUSTOMERS`` records, one per customer, key ``c-<id>``, JSON value
  ``{"customer", "name", "tier"}``, in a compacted topic. Customer ``c`` is in
  partition ``c % PARTITIONS`` and has timestamp ``t0 + c`` ms.
- orders: ``records`` records, key the customer id, JSON value
  ``{"order", "customer", "sku", "qty", "note"}`` (~100 bytes). Order ``i`` is
  for customer ``i % CUSTOMERS``, in that customer's partition (explicit
  partitions: both topics are co-partitioned, same key -> same partition), with
  timestamp ``t0 + ORDERS_AFTER_MS + i`` ms: every order is later than every
  customer record, and everything is hours old (brokers may reject timestamps
  from the future).

The two are made together and named after the record count, so a pair is
never made of topics from different runs (an order older than its customer
would join with nothing).

Both contenders join every order with its customer's record and emit
``{**order, "tier": customer["tier"]}`` under the order's key: eos's
stream-table ``orders.join(customers, ...)``, quixstreams'
``orders.join_asof(customers, how="inner", ...)``. Since each customer has one
record, older than every order, both rules give the same output.

Throughput is measured as for the other contenders: orders / (the contender's
first joined order -> the moment the output of the last order is visible to a
``read_committed`` reader of the output, :class:`_harness.OutputReader`). Each
contender notes the first call of its joiner. There is no latency phase (the
orders topic is shared by every run; a paced phase would need a co-partitioned
paced orders topic per run). After the run, the output is read back and every
record compared with the order it must come from, plus the customer's tier.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from typing import Any

from _harness import (
    LOG_DIR,
    PARTITIONS,
    BulkProducer,
    Measurement,
    OutputReader,
    Spec,
    _end_offsets,
    _values,
    backlog_measurement,
    clean_up,
    contender_argv,
    delete_topics,
    read_back,
    run_contender,
    state_dir_for,
)

from eos.testing.helpers import create_topic

JOIN = ("eos_join", "quixstreams_join")
"""The contenders measured with :func:`measure_join`."""
CUSTOMERS = 10_000
TIERS = ("bronze", "silver", "gold", "platinum")
ORDERS_AFTER_MS = 60_000
"""Event time from the first customer record to the first order."""
HEADROOM_MS = 2 * 3_600_000
"""The last order's timestamp is at least this far behind the wall clock."""
SKUS = 500


@dataclass(frozen=True)
class JoinInput:
    """The two input topics."""

    orders: str
    customers: str
    records: int


def join_topic_names(records: int) -> tuple[str, str]:
    """``(orders, customers)`` for ``records`` orders."""
    suffix = f"v1-{records}r-{PARTITIONS}p-{CUSTOMERS}c"
    return f"eos-bench-orders-{suffix}", f"eos-bench-customers-{suffix}"


def customer_key(c: int) -> str:
    return f"c-{c:05d}"


def customer_value(c: int) -> dict[str, Any]:
    return {"customer": customer_key(c), "name": f"customer {c}", "tier": TIERS[c % len(TIERS)]}


def order_value(i: int, notes: list[str]) -> dict[str, Any]:
    c = i % CUSTOMERS
    return {
        "order": i,
        "customer": customer_key(c),
        "sku": f"sku-{i * 7 % SKUS:04d}",
        "qty": 1 + i % 5,
        "note": notes[i % len(notes)],
    }


def _notes() -> list[str]:
    """Order notes that bring an order's JSON to ~100 bytes, as the other inputs."""
    return [v[:30].decode() for v in _values()]


def prepare_join_input(bootstrap: str, records: int) -> tuple[JoinInput, bool, float]:
    """Create and fill both topics unless they already hold exactly the input.

    Returns ``(input, reused, seconds)``.
    """
    orders, customers = join_topic_names(records)
    started = time.monotonic()
    found = {t: _end_offsets(bootstrap, t) for t in (orders, customers)}
    want = {orders: records, customers: CUSTOMERS}
    reused = all(
        ends is not None and len(ends) == PARTITIONS and sum(ends.values()) == want[t]
        for t, ends in found.items()
    )
    if not reused:
        existing = [t for t, ends in found.items() if ends is not None]
        if existing:
            delete_topics(bootstrap, existing)
            time.sleep(2.0)
        # Timestamps are hours old: create_topic turns time-based retention off.
        create_topic(bootstrap, customers, PARTITIONS, config={"cleanup.policy": "compact"})
        create_topic(bootstrap, orders, PARTITIONS)
        _produce(bootstrap, orders, customers, records)
        for topic, count in want.items():
            held = sum((_end_offsets(bootstrap, topic) or {}).values())
            if held != count:
                raise RuntimeError(f"{topic} holds {held} records, expected {count}")
    return JoinInput(orders, customers, records), reused, time.monotonic() - started


def _produce(bootstrap: str, orders: str, customers: str, records: int) -> None:
    t0 = int(time.time() * 1000) - HEADROOM_MS - ORDERS_AFTER_MS - records

    def dumps(value: dict[str, Any]) -> str:
        return json.dumps(value, separators=(",", ":"))

    table = BulkProducer(bootstrap, customers)
    for c in range(CUSTOMERS):
        table.produce(
            dumps(customer_value(c)).encode(),
            customer_key(c).encode(),
            timestamp=t0 + c,
            partition=c % PARTITIONS,
        )
    table.flush()
    stream = BulkProducer(bootstrap, orders)
    notes = _notes()
    keys = [customer_key(c).encode() for c in range(CUSTOMERS)]
    first_order = t0 + ORDERS_AFTER_MS
    for i in range(records):
        c = i % CUSTOMERS
        stream.produce(
            dumps(order_value(i, notes)).encode(),
            keys[c],
            timestamp=first_order + i,
            partition=c % PARTITIONS,
        )
    stream.flush()


def check_output(bootstrap: str, topic: str, records: int, seen: int) -> tuple[int, list[str]]:
    """Read ``topic`` back (``read_committed``, at least ``seen`` records) and compare
    every record with the joined order it must be. Returns ``(wrong, examples)``:
    duplicates, records that are not a joined order, and missing orders."""
    notes = _notes()
    found: set[int] = set()
    wrong = 0
    examples: list[str] = []

    def bad(what: str) -> None:
        nonlocal wrong
        wrong += 1
        if len(examples) < 5:
            examples.append(what)

    for msg in read_back(bootstrap, topic, seen):
        try:
            value = json.loads(msg.value() or b"null")
            i = value["order"]
            tier = customer_value(i % CUSTOMERS)["tier"]
            expected = {**order_value(i, notes), "tier": tier}
        except (ValueError, TypeError, KeyError) as exc:
            bad(f"not a joined order: {msg.value()!r} ({exc!r})")
            continue
        if i in found:
            bad(f"order {i} twice")
        elif value != expected or msg.key() != expected["customer"].encode():
            bad(f"{msg.key()!r}: {value}, expected {expected}")
        found.add(i)
    missing = records - len(found & set(range(records)))
    if missing:
        wrong += missing
        examples.append(f"{missing:,} orders missing")
    return wrong, examples


def measure_join(
    spec: Spec,
    *,
    bootstrap: str,
    workload: JoinInput,
    commit_interval_ms: int,
    run_id: str,
    timeout_s: float,
) -> Measurement:
    """Run ``spec`` once over the orders and customers; see the module doc."""
    tag = f"{spec.name.replace('_', '-')}-{run_id}"
    output = create_topic(bootstrap, f"eos-bench-out-{tag}", PARTITIONS)
    group = f"eos-bench-{tag}"
    state_dir = state_dir_for(tag)
    argv = contender_argv(
        spec,
        bootstrap=bootstrap,
        inputs=[workload.orders],
        output=output,
        group=group,
        commit_interval_ms=commit_interval_ms,
        state_dir=state_dir,
    )
    argv += ["--table", workload.customers]
    reader = OutputReader(bootstrap, output, workload.records)
    reader.start()
    result = run_contender(
        spec.name,
        argv,
        reader,
        expected=workload.records,
        timeout_s=timeout_s,
        log_path=LOG_DIR / f"{tag}.log",
    )
    wrong, examples = check_output(bootstrap, output, workload.records, reader.count)
    clean_up(bootstrap, [output], group, state_dir)
    return backlog_measurement(
        spec.name,
        workload.records,
        workload.records,
        reader,
        result,
        what="orders",
        wrong=wrong,
        examples=examples,
    )
