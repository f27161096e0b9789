"""Upper-case every record of an input topic into an output topic, exactly once.

Run it against any Kafka::

    python examples/uppercase.py --bootstrap-servers 127.0.0.1:9092 \
        --input input-orders --output output-orders

The project's tests start this file as a subprocess and SIGKILL it.
"""

from __future__ import annotations

import argparse
import logging
import os

import eos


class Upper(eos.Processor):
    """Sends ``value.upper()`` with the same key to ``output``."""

    def __init__(self, output: str) -> None:
        self.output = output

    def process(self, record: eos.Record, ctx: eos.Context) -> None:
        value = record.value
        if not isinstance(value, bytes):
            raise TypeError(f"expected bytes, got {type(value).__name__}")
        if value.startswith(b"poison"):
            raise ValueError(f"poison record at offset {record.offset}")
        ctx.send(self.output, value.upper(), key=record.key)


def build_app(argv: list[str] | None = None, **extra: object) -> eos.Application:
    """The application the command line describes; ``extra`` are further
    ``eos.Application`` keywords (the chaos tests pass their fault hooks so)."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument(
        "--bootstrap-servers", default=os.environ.get("EOS_BOOTSTRAP_SERVERS", "localhost:9092")
    )
    parser.add_argument("--input", default="input-orders")
    parser.add_argument("--output", default="output-orders")
    parser.add_argument("--application-id", default="uppercase")
    parser.add_argument("--instance-id", default="0")
    parser.add_argument("--guarantee", default="exactly_once_v2")
    parser.add_argument("--policy", default="fail")
    parser.add_argument("--dead-letter-topic", default=None)
    parser.add_argument("--commit-interval-ms", type=int, default=100)
    parser.add_argument("--max-batch-records", type=int, default=10_000)
    parser.add_argument("--assignment-strategy", default=None)
    parser.add_argument("--session-timeout-ms", type=int, default=None)
    parser.add_argument("--transaction-timeout-ms", type=int, default=60_000)
    parser.add_argument(
        "--log-level", default="INFO", help="Python logging level (DEBUG logs each commit)"
    )
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=args.log_level.upper(),
        format="%(asctime)s %(process)d %(levelname)s %(name)s: %(message)s",
    )
    consumer_config: dict[str, str | int] = {}
    if args.assignment_strategy:
        consumer_config["partition.assignment.strategy"] = args.assignment_strategy
    if args.session_timeout_ms:
        consumer_config["session.timeout.ms"] = args.session_timeout_ms
        consumer_config["heartbeat.interval.ms"] = max(100, args.session_timeout_ms // 5)
    return eos.Application(
        application_id=args.application_id,
        bootstrap_servers=args.bootstrap_servers,
        input_topics=[args.input],
        processor=Upper(args.output),
        instance_id=args.instance_id,
        processing_guarantee=args.guarantee,
        processing_error_policy=args.policy,
        dead_letter_topic=args.dead_letter_topic,
        commit_interval_ms=args.commit_interval_ms,
        max_batch_records=args.max_batch_records,
        transaction_timeout_ms=args.transaction_timeout_ms,
        consumer_config=consumer_config,
        **extra,  # type: ignore[arg-type]
    )


def main(argv: list[str] | None = None) -> None:
    build_app(argv).run()


if __name__ == "__main__":
    main()
