"""What each record costs in Python on eos's Processor path, against a hand-written loop.

No broker: the input is real ``confluent_kafka.Message`` objects built in memory
(4 partitions in runs of 5,000, 10,000 keys, ~100-byte values, as ``run.py``'s
input), and every produce is a C function that does nothing (``slice``), since
the real ``produce`` costs eos and a hand-written loop the same. So the figures
are the Python each record takes on this machine, without a broker's JVM and
librdkafka's threads on the same cores, and they say where
``eos_stateful/bare_stateful`` goes (its Python thread is busy the whole run):

- ``hand loop``: ``bare_stateful``'s per-record work (the count in a dict,
  ``b"%d"``, produce, the position), the limit;
- ``engine, no-op processor``: ``Engine._process`` handing each message to a
  ``process`` that does nothing (the checks, a ``Record`` per message);
- ``engine + count``: ``Engine._process`` running ``eos_stateful``'s ``Count``
  over a store transaction (``ctx.store``, ``get``, ``[] =``, ``ctx.send``);
- ``engine + count as a BatchProcessor``: ``Engine._process`` running the same
  count as an ``eos.BatchProcessor`` (``eos_stateful_batch``'s): one
  ``process_batch`` per run of one partition, over the same store
  transactions (no ``Record``, no ``process`` or ``ctx.store`` per record,
  none of the engine's per-record checks);
- then single operations with ``timeit``: a ``Record``, a plain tuple of the
  same fields, and each Processor API call.

Usage::

    python benchmarks/per_record_costs.py [--records 200000] [--repeat 7]

Figures are the minimum over the repetitions (µs or ns); nothing is asserted.
"""

from __future__ import annotations

import argparse
import gc
import random
import sys
import time
import timeit
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

import confluent_kafka
from contender_eos import count_handler

import eos
from eos.engine import Engine
from eos.processor import Context
from eos.record import Record
from eos.serde import BytesSerde, JsonSerde
from eos.state.memory import MemoryStore
from eos.state.transaction import StoreTransaction

PARTITIONS = 4
RUN = 5_000
KEYS = 10_000
STORE = "counts"
OUTPUT = "out"
_NOOP_PRODUCE = slice
"""A C callable taking ``(topic, value, key)`` that does nothing."""


def messages(records: int) -> list[Any]:
    rng = random.Random(1)
    return [
        confluent_kafka.Message(
            topic="in",
            partition=i // RUN % PARTITIONS,
            offset=i,
            key=b"key-%d" % rng.randrange(KEYS),
            value=b"x" * 100,
            timestamp=(1, 1_700_000_000_000 + i),
        )
        for i in range(records)
    ]


class Nothing(eos.Processor):
    def process(self, record: eos.Record, ctx: eos.Context) -> None:
        pass


class Count(eos.Processor):
    """``eos_stateful``'s processor (benchmarks/contender_eos.py)."""

    def process(self, record: eos.Record, ctx: eos.Context) -> None:
        counts = ctx.store(STORE)
        key = record.key
        n = counts.get(key, 0) + 1  # type: ignore[operator]
        counts[key] = n
        ctx.send(OUTPUT, b"%d" % n, key=key)


class CountBatch(eos.BatchProcessor):
    """``eos_stateful_batch``'s processor (benchmarks/contender_eos.py)."""

    def process_batch(self, batch: eos.RecordBatch, ctx: eos.Context) -> None:
        counts = ctx.store(STORE)
        send = ctx.send
        for key in batch.keys:
            n = counts.get(key, 0) + 1  # type: ignore[operator]
            counts[key] = n
            send(OUTPUT, b"%d" % n, key=key)


def _context() -> Context:
    ctx = Context(
        application_id="per-record",
        produce=_NOOP_PRODUCE,
        key_serde=BytesSerde(),
        value_serde=BytesSerde(),
    )
    # The store views the store manager hands out, one transaction per partition.
    views = {
        p: {STORE: StoreTransaction(MemoryStore(), BytesSerde(), JsonSerde(), None, counter=ctx)}
        for p in range(PARTITIONS)
    }
    ctx._views = views  # type: ignore[assignment]
    ctx._stores = lambda name, partition: views[partition][name]
    return ctx


def engine_seconds(processor: eos.Processor, batch: list[Any]) -> float:
    """CPU seconds of ``Engine._process`` over ``batch`` (at_least_once: no transaction)."""
    config = eos.Config(
        application_id="per-record",
        bootstrap_servers="127.0.0.1:1",  # never contacted
        input_topics=["in"],
        key_serde="bytes",
        value_serde="bytes",
        processing_guarantee="at_least_once",
    )
    engine = Engine(config, processor)
    ctx = engine.ctx = _context()
    engine.outputs.produce_for_batch = lambda: _NOOP_PRODUCE  # type: ignore[method-assign]
    engine.assignment.assigned.update(("in", p) for p in range(PARTITIONS))
    gc.collect()
    started = time.thread_time()
    for start in range(0, len(batch), RUN):
        engine._process(batch[start : start + RUN])
    seconds = time.thread_time() - started
    # What was timed did the work: every message processed, and the counts add up.
    _check(engine.batch.records == len(batch), f"engine processed {engine.batch.records}")
    if isinstance(processor, (Count, CountBatch)):
        views = ctx._views or {}
        total = sum(n for named in views.values() for _, n in named[STORE].items())
        _check(total == len(batch), f"the engine's counts add up to {total}")
    return seconds


def hand_seconds(batch: list[Any]) -> float:
    """CPU seconds of ``bare_stateful``'s handler over ``batch``, with an empty dict
    for each partition's database (no RocksDB read: eos's committed-value cache
    spares that read too)."""
    empty: dict[bytes, bytes] = {}
    dirty: dict[int, dict[bytes, bytes]] = {}
    handle = count_handler(_NOOP_PRODUCE, lambda: None, {}, dirty, lambda _p: empty, OUTPUT)
    gc.collect()
    started = time.thread_time()
    for start in range(0, len(batch), RUN):
        handle(batch[start : start + RUN])
    seconds = time.thread_time() - started
    total = sum(int(n) for counts in dirty.values() for n in counts.values())
    _check(total == len(batch), f"the hand loop's counts add up to {total}")
    return seconds


def _check(holds: bool, what: str) -> None:
    if not holds:
        raise SystemExit(f"per_record_costs: {what}, not one per record: the measurement is void")


def operation_ns(repeat: int) -> dict[str, float]:
    """One call each, ns (min over ``repeat`` rounds of 200,000)."""
    ctx = _context()
    record = tuple.__new__(Record, (b"k", b"v", "in", 1, 5, 1_700_000_000_000, None))
    ctx.record = record
    txn = ctx.store(STORE)
    txn[b"k"] = 1
    names = {
        "ctx": ctx,
        "txn": txn,
        "Record": Record,
        "new": tuple.__new__,
        "k": b"k",
        "v": b"v",
        "d": {b"k": 1},
    }
    statements = {
        "a Record (as the engine makes it)": "new(Record, (k, v, 'in', 1, 5, 0, None))",
        "a plain tuple of the same fields": "(k, v, 'in', 1, 5, 0, None)",
        "ctx.store(name)": f"ctx.store({STORE!r})",
        "store.get(key, 0)": "txn.get(k, 0)",
        "store[key] = n": "txn[k] = 2",
        "ctx.send(topic, value, key=key)": f"ctx.send({OUTPUT!r}, v, key=k)",
        "the produce stand-in alone": f"slice({OUTPUT!r}, v, k)",
        "a dict get + set (the hand loop's)": "d.get(k); d[k] = 2",
    }
    number = 200_000
    return {
        label: min(timeit.repeat(code, globals=names, number=number, repeat=repeat)) / number * 1e9
        for label, code in statements.items()
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--records", type=int, default=200_000)
    parser.add_argument("--repeat", type=int, default=7)
    args = parser.parse_args(argv)
    batch = messages(args.records)
    per_record: dict[str, list[float]] = {}
    for _ in range(args.repeat):
        for label, run in (
            ("hand loop (bare_stateful's per-record work)", lambda: hand_seconds(batch)),
            ("engine, no-op processor", lambda: engine_seconds(Nothing(), batch)),
            ("engine + count (eos_stateful's processor)", lambda: engine_seconds(Count(), batch)),
            (
                "engine + count as a BatchProcessor (eos_stateful_batch's)",
                lambda: engine_seconds(CountBatch(), batch),
            ),
        ):
            per_record.setdefault(label, []).append(run() / len(batch) * 1e6)
    print(f"{args.records:,} records, min of {args.repeat}; produce is a no-op C call")
    for label, values in per_record.items():
        print(f"  {min(values):6.2f} µs/record  {label}")
    for label, ns in operation_ns(args.repeat).items():
        print(f"  {ns:6.0f} ns  {label}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
