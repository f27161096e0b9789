"""Count records per key in a state store and send each new count, exactly once.

For every input record with key ``k`` the count of ``k`` goes up by one in the
store ``counts`` and the new count is sent to the output topic with the same
key, so the outputs of one key read ``"1", "2", ..., "n"``. Run it against any
Kafka::

    python examples/count_per_key.py --bootstrap-servers 127.0.0.1:9092 \
        --input orders --output order-counts --state-dir ./state

The store is changelogged to ``<application-id>-counts-changelog``; after a
crash the instance restores what its local store misses from there. The
project's chaos tests start this file as a subprocess and SIGKILL it.

``--batch`` runs the same count as an ``eos.BatchProcessor``
(:class:`CountPerKeyBatch`): one ``process_batch`` call per run of a
partition's records instead of one ``process`` call per record, with the same
outputs and guarantees (docs/processing.md, "Batches").
"""

from __future__ import annotations

import argparse
import logging
import os

import eos
from eos.config import DEFAULT_TRANSACTION_TIMEOUT_MS


class CountPerKey(eos.Processor[str, str]):
    """Keeps ``counts[key]`` and sends ``str(count)`` with the same key to ``output``.

    Keys and values are strings (the application's ``key_serde``/``value_serde``
    are ``"string"``); the store maps a key to its ``int`` count.

    Args:
        output: The output topic.
        backend: Store backend, ``"rocksdb"`` or ``"memory"``.
    """

    stores = [eos.Store("counts")]

    def __init__(self, output: str, backend: str = "rocksdb") -> None:
        self.output = output
        # Per instance, so the backend is a choice: the engine and the
        # TestDriver read ``processor.stores``.
        self.counts: eos.Store[str, int] = eos.Store("counts", backend=backend)
        self.stores = [self.counts]

    def process(self, record: eos.Record[str, str], ctx: eos.Context[str, str]) -> None:
        key = record.key
        store = ctx.store(self.counts)  # a StoreTransaction[str, int]
        n = store.get(key, 0) + 1
        store[key] = n
        ctx.send(self.output, key=key, value=str(n))


class CountPerKeyBatch(eos.BatchProcessor[str, str]):
    """:class:`CountPerKey` a batch at a time: the same store, the same outputs."""

    stores = [eos.Store("counts")]

    def __init__(self, output: str, backend: str = "rocksdb") -> None:
        self.output = output
        self.counts: eos.Store[str, int] = eos.Store("counts", backend=backend)
        self.stores = [self.counts]

    def process_batch(self, batch: eos.RecordBatch[str, str], ctx: eos.Context[str, str]) -> None:
        store = ctx.store(self.counts)  # the batch's partition's store, looked up once
        send = ctx.send
        output = self.output
        for key in batch.keys:
            n = store.get(key, 0) + 1
            store[key] = n
            send(output, key=key, value=str(n))


def build_app(argv: list[str] | None = None, **extra: object) -> eos.Application:
    """The application the command line describes; ``extra`` are further
    ``eos.Application`` keywords (the chaos tests pass their fault hooks so)."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--bootstrap-servers", default=os.environ.get("EOS_BOOTSTRAP_SERVERS", "localhost:9092")
    )
    parser.add_argument("--input", default="input-orders")
    parser.add_argument("--output", default="order-counts")
    parser.add_argument("--application-id", default="count-per-key")
    parser.add_argument("--instance-id", default="0")
    parser.add_argument("--state-dir", default="./state")
    parser.add_argument("--backend", choices=["rocksdb", "memory"], default="rocksdb")
    parser.add_argument(
        "--batch", action="store_true", help="count with the eos.BatchProcessor form"
    )
    parser.add_argument("--session-timeout-ms", type=int, default=None)
    parser.add_argument("--commit-interval-ms", type=int, default=100)
    parser.add_argument("--max-batch-records", type=int, default=10_000)
    parser.add_argument(
        "--transaction-timeout-ms",
        type=int,
        default=DEFAULT_TRANSACTION_TIMEOUT_MS,
        help="how soon the broker aborts a dead instance's open transaction",
    )
    parser.add_argument("--log-level", default="INFO", help="Python logging level")
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=args.log_level.upper(),
        format="%(asctime)s %(process)d %(levelname)s %(name)s: %(message)s",
    )
    consumer_config: dict[str, str | int] = {}
    if args.session_timeout_ms:
        consumer_config["session.timeout.ms"] = args.session_timeout_ms
        consumer_config["heartbeat.interval.ms"] = max(100, args.session_timeout_ms // 5)
    return eos.Application(
        application_id=args.application_id,
        bootstrap_servers=args.bootstrap_servers,
        input_topics=[args.input],
        processor=(CountPerKeyBatch if args.batch else CountPerKey)(args.output, args.backend),
        instance_id=args.instance_id,
        key_serde="string",
        value_serde="string",
        state_dir=args.state_dir,
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
