"""The application of the join chaos tests (tests/chaos/test_join_chaos.py), run as a child.

    python tests/chaos/join_app.py --bootstrap-servers ... --orders ... --customers ...
        --enriched ... --counts ... --application-id ... --instance-id ... --state-dir ...

The DSL topology:

- ``customers`` is a table of the customers topic (RocksDB, the topic is its changelog);
- each order (keyed by its customer) is left-joined with its customer's current record
  and sent to ``--enriched`` as the order plus ``tier`` and ``version`` (the customer
  record's version, None when the customer is unknown), so a test sees WHICH customer
  record an order was joined with;
- orders are re-keyed by their region (``group_by``: a repartition topic) and counted;
  each count update goes to ``--counts`` as ``{"n": count}``, keyed by the region.

Takes ``--crash-after-kafka-commit N``: the process SIGKILLs itself on its N-th commit
with store writes, after the Kafka commit and before the local store write.
"""

from __future__ import annotations

import argparse
import logging
from typing import Any

import eos
from eos.testing.faults import CrashAfterKafkaCommit

CUSTOMERS_STORE = "customers"
COUNTS_STORE = "orders-per-region"


def enrich(order: Any, customer: Any) -> dict[str, Any]:
    return {
        **order,
        "tier": customer["tier"] if customer else None,
        "version": customer["v"] if customer else None,
    }


def join_processor(args: argparse.Namespace) -> eos.Processor:
    builder = eos.StreamBuilder()
    customers = builder.table(args.customers, store=CUSTOMERS_STORE)
    orders = builder.stream(args.orders)
    orders.left_join(customers, enrich).to(args.enriched)
    (
        orders.group_by(lambda _customer, order: order["region"])
        .count(store=COUNTS_STORE)
        .to_stream()
        .map_values(lambda n: {"n": n})
        .to(args.counts)
    )
    return builder.build()


def build_app(argv: list[str] | None = None) -> eos.Application:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--bootstrap-servers", required=True)
    parser.add_argument("--orders", required=True)
    parser.add_argument("--customers", required=True)
    parser.add_argument("--enriched", required=True)
    parser.add_argument("--counts", required=True)
    parser.add_argument("--application-id", required=True)
    parser.add_argument("--instance-id", default="0")
    parser.add_argument("--state-dir", required=True)
    parser.add_argument("--commit-interval-ms", type=int, default=100)
    parser.add_argument("--max-batch-records", type=int, default=2_000)
    parser.add_argument("--max-task-idle-ms", type=int, default=0)
    parser.add_argument("--transaction-timeout-ms", type=int, default=10_000)
    parser.add_argument("--log-level", default="INFO")
    parser.add_argument("--crash-after-kafka-commit", type=int, default=None)
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=args.log_level.upper(),
        format="%(asctime)s %(process)d %(levelname)s %(name)s: %(message)s",
    )
    options: dict[str, Any] = {}
    if args.crash_after_kafka_commit is not None:
        options["faults"] = CrashAfterKafkaCommit(args.crash_after_kafka_commit)
    return eos.Application(
        application_id=args.application_id,
        bootstrap_servers=args.bootstrap_servers,
        processor=join_processor(args),
        instance_id=args.instance_id,
        key_serde="string",
        value_serde="json",
        state_dir=args.state_dir,
        commit_interval_ms=args.commit_interval_ms,
        max_batch_records=args.max_batch_records,
        max_task_idle_ms=args.max_task_idle_ms,
        transaction_timeout_ms=args.transaction_timeout_ms,
        **options,
    )


def main(argv: list[str] | None = None) -> None:
    build_app(argv).run()


if __name__ == "__main__":
    main()
