"""Orders from Kafka into PostgreSQL, exactly once: each order is one row, whatever fails.

Reads JSON orders (``{"id": 7, "customer": "c3", "total": 12.5}``, keyed by
customer) from ``orders`` and inserts each into the ``orders`` table. Each
batch is one PostgreSQL transaction holding its rows and its input offsets (in
``eos_offsets``), so a crash, a restart or a paused instance whose partitions
moved on never writes an order twice or loses one: the table has no unique
constraint and needs none. An order the database refuses (a negative total
breaks the table's CHECK) goes to the dead-letter topic ``orders-dead-letter``
with the database's error message, alone: the other orders of its batch are
written.

Run it::

    eos dev-kafka up                      # prints the bootstrap servers
    eos dev-postgres up                   # prints the DSN last
    EOS_BOOTSTRAP_SERVERS=... EOS_POSTGRES_DSN=... python examples/orders_to_postgres.py produce
    EOS_BOOTSTRAP_SERVERS=... EOS_POSTGRES_DSN=... python examples/orders_to_postgres.py
    eos run examples.orders_to_postgres:app --workers 2

Settings come from the environment: ``EOS_BOOTSTRAP_SERVERS``, ``EOS_POSTGRES_DSN``,
``ORDERS_APPLICATION_ID`` (default ``orders-to-postgres``), ``ORDERS_INPUT``
(``orders``), ``ORDERS_TABLE`` (``orders``) and ``ORDERS_DEAD_LETTER``
(``orders-dead-letter``). The table's DDL is :data:`ORDERS_DDL`; ``SaveOrders``
creates the table at start if it is missing.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import random
from typing import Any

from psycopg import Cursor, sql

import eos
from eos.sinks.postgres import PostgresProcessor

INPUT = os.environ.get("ORDERS_INPUT", "orders")
TABLE = os.environ.get("ORDERS_TABLE", "orders")
DEAD_LETTER = os.environ.get("ORDERS_DEAD_LETTER", "orders-dead-letter")

ORDERS_DDL = """
CREATE TABLE IF NOT EXISTS {table} (
    id        bigint        NOT NULL,
    customer  text          NOT NULL,
    total     numeric(12,2) NOT NULL CHECK (total >= 0),
    source    text          NOT NULL,  -- topic/partition/offset of the input record
    written   timestamptz   NOT NULL DEFAULT now()
)
"""
"""The orders table: deliberately no primary key or unique constraint (none is needed)."""

Order = dict[str, Any]


class SaveOrders(PostgresProcessor[str, Order | None]):
    """One row per order, in the batch's transaction."""

    def __init__(self, dsn: str, table: str = TABLE, **options: Any) -> None:
        super().__init__(dsn, **options)
        self.table = sql.Identifier(table)
        self.insert = sql.SQL(
            "INSERT INTO {} (id, customer, total, source) VALUES (%s, %s, %s, %s)"
        ).format(self.table)

    def setup(self, cur: Cursor[Any]) -> None:
        cur.execute(sql.SQL(ORDERS_DDL).format(table=self.table))

    def process(self, record: eos.Record[str, Order | None], cur: Cursor[Any]) -> None:
        order = record.value
        if order is None:
            return  # a tombstone: nothing to insert
        source = f"{record.topic}/{record.partition}/{record.offset}"
        cur.execute(self.insert, (order["id"], order["customer"], order["total"], source))


def build_app(
    *,
    bootstrap_servers: str | None = None,
    dsn: str | None = None,
    input_topic: str = INPUT,
    table: str = TABLE,
    dead_letter_topic: str = DEAD_LETTER,
    application_id: str | None = None,
    **options: Any,
) -> eos.Application:
    """The application; arguments left None come from the environment."""
    return eos.Application(
        application_id=application_id
        or os.environ.get("ORDERS_APPLICATION_ID", "orders-to-postgres"),
        bootstrap_servers=bootstrap_servers
        or os.environ.get("EOS_BOOTSTRAP_SERVERS", "localhost:9092"),
        input_topics=[input_topic],
        key_serde="string",
        value_serde="json",
        processor=SaveOrders(
            dsn or os.environ.get("EOS_POSTGRES_DSN", "postgresql://eos@localhost:5432/eos"),
            table,
        ),
        processing_error_policy="dead_letter",
        dead_letter_topic=dead_letter_topic,
        **options,
    )


app = build_app()


def sample_orders(count: int, customers: int = 20, seed: int = 1) -> list[tuple[str, Order]]:
    """``count`` orders as ``(customer, order)``; every 50th has a negative total (refused)."""
    rng = random.Random(seed)
    orders: list[tuple[str, Order]] = []
    for i in range(count):
        customer = f"c{rng.randrange(customers)}"
        total = -1.0 if i % 50 == 49 else rng.randrange(100, 100_000) / 100
        orders.append((customer, {"id": i, "customer": customer, "total": total}))
    return orders


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("command", nargs="?", default="run", choices=["run", "produce"])
    parser.add_argument("--count", type=int, default=1000, help="produce: how many orders")
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(process)d %(levelname)s %(name)s: %(message)s"
    )
    if args.command == "produce":
        from eos.testing.helpers import produce

        bootstrap = os.environ.get("EOS_BOOTSTRAP_SERVERS", "localhost:9092")
        records = ((key, json.dumps(order)) for key, order in sample_orders(args.count))
        print(f"{produce(bootstrap, INPUT, records)} orders produced to {INPUT}")
    else:
        app.run()


if __name__ == "__main__":
    main()
