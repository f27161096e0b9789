"""The seed pipeline: enrich orders exactly once and count them per customer.

Reads ``input-orders``, drops records with a null value, enriches each order
(upper-cases it), optionally prints it, writes it to ``output-orders``, and
keeps a per-key order count in a changelog-backed store whose updates go to
``order-counts``. Everything a record causes commits in one transaction with
its input offset.

Two equivalent definitions are below: a Processor subclass (``EnrichOrders``,
used by ``app``) and the DSL (``build_dsl()``, used by ``dsl_app``). Both are
typed (keys and values are ``str``, counts ``int``) and pass ``mypy --strict``.

Run it::

    EOS_BOOTSTRAP_SERVERS=127.0.0.1:9092 python examples/order_enrichment.py
    eos run examples.order_enrichment:app --workers 2

Settings come from the environment: ``EOS_BOOTSTRAP_SERVERS``,
``ORDERS_APPLICATION_ID`` (default ``order-enrichment``), ``ORDERS_INPUT``,
``ORDERS_OUTPUT``, ``ORDERS_COUNTS``, ``ORDERS_STATE_DIR`` and
``ORDERS_PRINT=1`` to print every enriched order.
"""

from __future__ import annotations

import logging
import os

import eos

INPUT = os.environ.get("ORDERS_INPUT", "input-orders")
OUTPUT = os.environ.get("ORDERS_OUTPUT", "output-orders")
COUNTS = os.environ.get("ORDERS_COUNTS", "order-counts")
PRINT = os.environ.get("ORDERS_PRINT") == "1"


def enrich(order: str) -> str:
    """The enrichment: upper-case the order."""
    return order.upper()


ORDER_COUNTS: eos.Store[str, int] = eos.Store("order-counts")
"""Orders per customer (the key)."""


class EnrichOrders(eos.Processor[str, str | None]):
    """The seed pipeline as a Processor subclass: string keys, string values or tombstones."""

    stores = [ORDER_COUNTS]

    def process(
        self, record: eos.Record[str, str | None], ctx: eos.Context[str, str | None]
    ) -> None:
        if record.value is None:
            return
        enriched = enrich(record.value)
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
    """The same pipeline in the DSL: ``stream()`` with serdes is a ``Stream[str, str]``."""
    builder = eos.StreamBuilder()
    orders = builder.stream(INPUT, key_serde="string", value_serde="string")
    orders = orders.filter(lambda k, v: v is not None)
    orders.map_values(enrich).peek(_print).to(OUTPUT)
    counts = orders.group_by_key().count(store="order-counts")
    counts.to_stream().map_values(str).to(COUNTS)
    return builder


def _application(processor: eos.Processor) -> eos.Application:
    return eos.Application(
        application_id=os.environ.get("ORDERS_APPLICATION_ID", "order-enrichment"),
        bootstrap_servers=os.environ.get("EOS_BOOTSTRAP_SERVERS", "localhost:9092"),
        input_topics=[INPUT],
        processor=processor,
        key_serde="string",
        value_serde="string",
        state_dir=os.environ.get("ORDERS_STATE_DIR", "./state"),
    )


app = _application(EnrichOrders())
builder = build_dsl()
dsl_app = _application(builder.build())


if __name__ == "__main__":
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    (dsl_app if os.environ.get("ORDERS_DSL") == "1" else app).run()
