"""The seed pipeline: enrich orders from a customers table, exactly once, and count them.

Reads ``input-orders`` (keyed by customer, string values), drops records with a null
value, joins each order with its customer's record in a table of the ``customers``
topic (JSON values such as ``{"tier": "gold", "region": "north"}``; the table holds the
latest record per customer), writes ``"ORDER-0000001 tier=gold"`` to ``output-orders``
(``tier=unknown`` for a customer not in the table yet), and keeps a per-customer order
count whose updates go to ``order-counts``. Everything a record causes commits in one
transaction with its input offset.

Two definitions are below: a Processor subclass (``EnrichOrders``, used by ``app``,
with the table declared as ``eos.Store(..., source_topic=...)``) and the DSL
(``build_dsl()``, used by ``dsl_app`` and the demo), which also counts orders per
region: ``group_by`` the customer's region re-keys the orders through a repartition
topic, in the same transactions, into ``orders-per-region``. Both are typed and pass
``mypy --strict``. The orders and customers topics must be co-partitioned (the same
partition count, keyed by customer): see docs/joins.md.

Run it::

    EOS_BOOTSTRAP_SERVERS=127.0.0.1:9092 python examples/order_enrichment.py
    ORDERS_DSL=1 python examples/order_enrichment.py
    eos run examples.order_enrichment:dsl_app --workers 2

Settings come from the environment: ``EOS_BOOTSTRAP_SERVERS``,
``ORDERS_APPLICATION_ID`` (default ``order-enrichment``), ``ORDERS_INPUT``,
``ORDERS_CUSTOMERS``, ``ORDERS_OUTPUT``, ``ORDERS_COUNTS``, ``ORDERS_REGION_COUNTS``,
``ORDERS_STATE_DIR`` and ``ORDERS_PRINT=1`` to print every enriched order.
"""

from __future__ import annotations

import logging
import os
from typing import Any

import eos

INPUT = os.environ.get("ORDERS_INPUT", "input-orders")
CUSTOMERS = os.environ.get("ORDERS_CUSTOMERS", "customers")
OUTPUT = os.environ.get("ORDERS_OUTPUT", "output-orders")
COUNTS = os.environ.get("ORDERS_COUNTS", "order-counts")
REGION_COUNTS = os.environ.get("ORDERS_REGION_COUNTS", "orders-per-region")
PRINT = os.environ.get("ORDERS_PRINT") == "1"

Customer = dict[str, Any]
"""A customer record: ``{"tier": ..., "region": ...}``."""


def enrich(order: str, customer: Customer | None) -> str:
    """The enrichment: the order upper-cased, with its customer's tier."""
    tier = customer.get("tier", "unknown") if customer else "unknown"
    return f"{order.upper()} tier={tier}"


def region_of(customer: Customer | None) -> str:
    """The customer's region (``unknown`` without a customer record)."""
    return str(customer.get("region", "unknown")) if customer else "unknown"


ORDER_COUNTS: eos.Store[str, int] = eos.Store("order-counts")
"""Orders per customer (the key)."""
CUSTOMERS_TABLE: eos.Store[str, Customer] = eos.Store(
    "customers", source_topic=CUSTOMERS, value_serde="json"
)
"""The latest record of each customer: a table of the customers topic (read-only)."""


class EnrichOrders(eos.Processor[str, str | None]):
    """The seed pipeline as a Processor subclass: string keys, string values or tombstones."""

    stores = [ORDER_COUNTS, CUSTOMERS_TABLE]

    def process(
        self, record: eos.Record[str, str | None], ctx: eos.Context[str, str | None]
    ) -> None:
        if record.value is None:
            return
        enriched = enrich(record.value, ctx.store(CUSTOMERS_TABLE).get(record.key))
        if PRINT:
            print(f"{record.key}: {enriched}", flush=True)
        ctx.send(OUTPUT, key=record.key, value=enriched)
        counts = ctx.store(ORDER_COUNTS)
        count = counts.get(record.key, 0) + 1
        counts[record.key] = count
        ctx.send(COUNTS, key=record.key, value=str(count))


def _print(key: str, value: str) -> None:
    if PRINT:
        print(f"{key}: {value}", flush=True)


def build_dsl() -> eos.StreamBuilder:
    """The same pipeline in the DSL, plus the orders per region (a repartition)."""
    builder = eos.StreamBuilder()
    orders = builder.stream(INPUT, key_serde="string", value_serde="string")
    orders = orders.filter(lambda k, v: v is not None)
    customers = builder.table(CUSTOMERS, store="customers", key_serde="string", value_serde="json")
    joined = orders.left_join(customers, lambda order, c: (enrich(order, c), region_of(c)))
    joined.map_values(lambda pair: pair[0]).peek(_print).to(OUTPUT)
    counts = orders.group_by_key().count(store="order-counts")
    counts.to_stream().map_values(str).to(COUNTS)
    per_region = joined.group_by(lambda _customer, pair: pair[1]).count(store="orders-per-region")
    per_region.to_stream().map_values(str).to(REGION_COUNTS)
    return builder


def _application(processor: eos.Processor, **options: Any) -> eos.Application:
    return eos.Application(
        application_id=os.environ.get("ORDERS_APPLICATION_ID", "order-enrichment"),
        bootstrap_servers=os.environ.get("EOS_BOOTSTRAP_SERVERS", "localhost:9092"),
        processor=processor,
        key_serde="string",
        value_serde="string",
        state_dir=os.environ.get("ORDERS_STATE_DIR", "./state"),
        **options,
    )


app = _application(EnrichOrders(), input_topics=[INPUT])
builder = build_dsl()
dsl_app = _application(builder.build())


if __name__ == "__main__":
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    (dsl_app if os.environ.get("ORDERS_DSL") == "1" else app).run()
