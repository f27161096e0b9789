"""Benchmark: restore a store from its changelog, RocksDB and memory backends.

1. Builds (once; reused when it already holds exactly what this run would
   write) a compacted changelog topic of ``--records`` distinct keys with
   ``--value-bytes`` values over ``--partitions`` partitions, written
   transactionally with a commit every ``--txn-records`` records, as the
   engine writes changelogs.
2. For each backend, in a FRESH child process (so peak RSS belongs to the
   restore alone), opens one empty store partition per changelog partition with
   ``open_backend`` and restores them with ``ChangelogRestorer``: the classes
   ``StoreManager.open`` uses, with the same restore consumer settings.
3. Prints a markdown table (records/s, seconds, baseline and peak RSS) and
   writes it to ``--output`` (default ``docs/benchmarks-restore.md``).

Run against any broker::

    python benchmarks/restore.py --bootstrap-servers 127.0.0.1:9092
    python benchmarks/restore.py --records 2000 --output /tmp/restore.md   # smoke
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import random
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Mapping
from pathlib import Path

from confluent_kafka import Consumer, KafkaException, Producer, TopicPartition
from confluent_kafka.admin import AdminClient

from eos.testing.helpers import create_topic

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_OUTPUT = ROOT / "docs" / "benchmarks-restore.md"
STORE = "bench"
BACKENDS = ("rocksdb", "memory", "null")
"""``null`` keeps only the checkpoint and a key count: the Kafka read and the
restore loop alone, the floor under the other two."""


class NullStore:
    """A StateStore that discards data (counts keys, keeps the checkpoint)."""

    def __init__(self, path: str, name: str, partition: int) -> None:
        self.keys = 0
        self._offset: int | None = None

    def get(self, key: bytes) -> bytes | None:
        return None

    def iterate(
        self, start: bytes | None = None, end: bytes | None = None, reverse: bool = False
    ) -> Iterator[tuple[bytes, bytes]]:
        return iter(())

    def write(self, changes: Mapping[bytes, bytes | None], changelog_offset: int) -> None:
        self.keys += len(changes)
        self._offset = changelog_offset

    def changelog_offset(self) -> int | None:
        return self._offset

    def close(self) -> None:
        pass

    def wipe(self) -> None:
        self.keys = 0
        self._offset = None


def _rss_mib() -> float:
    """Current resident set size (Linux /proc), in MiB."""
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def _maxrss_mib() -> float:
    """Peak resident set size so far (``ru_maxrss`` is KiB on Linux), in MiB."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


# -- building the changelog -----------------------------------------------------


_POOL = random.Random(20240601).randbytes(1 << 16).hex().encode()  # 128 KiB of hex digits


def _record(i: int, value_bytes: int) -> tuple[bytes, bytes]:
    """Key and value of record ``i`` (JSON, as the default store serde writes them).

    The value pads with a slice of random hex digits so neither Kafka nor
    RocksDB can compress it away.
    """
    key = b'"key-%09d"' % i
    head = b'{"n":%d,"pad":"' % i
    pad = max(0, value_bytes - len(head) - 2)
    start = (i * 7919) % (len(_POOL) - pad)
    return key, head + _POOL[start : start + pad] + b'"}'


def _expected_end(records: int, partitions: int, txn_records: int) -> int:
    """Sum of high watermarks after a complete build: records plus one commit marker per
    partition per transaction (every transaction touches every partition)."""
    transactions = -(-records // txn_records)
    return records + transactions * partitions


def _high_watermarks(bootstrap: str, topic: str) -> dict[int, tuple[int, int]] | None:
    """``{partition: (low, high watermark)}``, or None if ``topic`` does not exist."""
    # read_uncommitted: librdkafka's default (read_committed) reports the last
    # stable offset as "high", which lags while commit markers are in flight.
    consumer = Consumer(
        {
            "bootstrap.servers": bootstrap,
            "group.id": "eos-bench-watermarks",
            "isolation.level": "read_uncommitted",
        }
    )
    try:
        meta = consumer.list_topics(topic, timeout=10).topics.get(topic)
        if meta is None or meta.error is not None:
            return None
        return {
            p: consumer.get_watermark_offsets(TopicPartition(topic, p), timeout=10)
            for p in meta.partitions
        }
    finally:
        consumer.close()


def build_changelog(
    bootstrap: str, topic: str, records: int, partitions: int, value_bytes: int, txn_records: int
) -> tuple[bool, float]:
    """Create and fill ``topic`` unless it already holds exactly this data.

    Returns ``(reused, seconds spent building)``.
    """
    expected = _expected_end(records, partitions, txn_records)
    marks = _high_watermarks(bootstrap, topic)
    if marks is not None:
        total = sum(high for _low, high in marks.values())
        if (
            len(marks) == partitions
            and total == expected
            and all(lo == 0 for lo, _ in marks.values())
        ):
            return True, 0.0
        print(
            f"topic {topic} exists but does not hold this data ({len(marks)} partitions, "
            f"end offsets {total}, expected {expected}): recreating it",
            file=sys.stderr,
        )
        admin = AdminClient({"bootstrap.servers": bootstrap})
        for future in admin.delete_topics([topic], operation_timeout=30).values():
            future.result(60)
        deadline = time.monotonic() + 30
        while _high_watermarks(bootstrap, topic) is not None and time.monotonic() < deadline:
            time.sleep(0.5)
    deadline = time.monotonic() + 30
    while True:
        try:
            create_topic(bootstrap, topic, partitions, config={"cleanup.policy": "compact"})
            break
        except KafkaException as exc:  # a just-deleted topic may still be going away
            if time.monotonic() > deadline:
                raise
            print(f"creating {topic}: {exc}; retrying", file=sys.stderr)
            time.sleep(1.0)
    started = time.monotonic()
    producer = Producer(
        {
            "bootstrap.servers": bootstrap,
            "transactional.id": f"eos-bench-build-{topic}",
            "linger.ms": 20,
            "batch.size": 1_000_000,
            "queue.buffering.max.messages": 1_000_000,
            "queue.buffering.max.kbytes": 1_048_576,
        }
    )
    producer.init_transactions(60)
    produce = producer.produce
    poll = producer.poll
    for begin in range(0, records, txn_records):
        producer.begin_transaction()
        for i in range(begin, min(records, begin + txn_records)):
            key, value = _record(i, value_bytes)
            while True:
                try:
                    produce(topic, value, key, i % partitions)
                    break
                except BufferError:
                    poll(0.05)
        producer.commit_transaction(120)
    # The coordinator writes commit markers after commit_transaction() returns.
    deadline = time.monotonic() + 30
    while True:
        marks = _high_watermarks(bootstrap, topic) or {}
        total = sum(high for _low, high in marks.values())
        if total == expected:
            break
        if time.monotonic() > deadline:
            raise RuntimeError(f"built {topic} but its end offsets sum to {total}, not {expected}")
        time.sleep(0.1)
    return False, time.monotonic() - started


# -- measuring one restore (in a child process) ---------------------------------


def measure(bootstrap: str, topic: str, backend: str, records: int) -> dict[str, object]:
    """Restore every partition of ``topic`` into empty ``backend`` stores; return figures."""
    from eos.state.base import Store, open_backend
    from eos.state.changelog import ChangelogRestorer, RestoreTask, restore_consumer_settings

    marks = _high_watermarks(bootstrap, topic)
    if marks is None:
        raise SystemExit(f"topic {topic} does not exist")
    spec = Store(STORE, backend=NullStore if backend == "null" else backend)
    state_dir = tempfile.mkdtemp(prefix=f"eos-bench-{backend}-")
    admin = AdminClient({"bootstrap.servers": bootstrap})
    settings = restore_consumer_settings(
        {"bootstrap.servers": bootstrap}, "eos-bench-restore", "eos-bench-restore"
    )
    restorer = ChangelogRestorer(admin, settings, stall_timeout_s=60)
    tasks = []
    for p in sorted(marks):
        path = os.path.join(state_dir, STORE, str(p))
        tasks.append(RestoreTask(STORE, p, topic, open_backend(spec, path, p), path))
    baseline_rss, baseline_max = _rss_mib(), _maxrss_mib()
    try:
        started = time.perf_counter()
        restorer.restore(tasks)
        seconds = time.perf_counter() - started
        peak = _maxrss_mib()
        rss_after = _rss_mib()
        restored = sum(t.restored for t in tasks)
        if restored != records:
            raise SystemExit(f"{backend}: restored {restored} records, expected {records}")
        for task in tasks:
            high = marks[task.partition][1]
            if task.position != high or task.backend.changelog_offset() != high:
                raise SystemExit(f"{backend}: {task.label} ended at {task.position}, not {high}")
        keys = sum(
            t.backend.keys
            if isinstance(t.backend, NullStore)
            else sum(1 for _ in t.backend.iterate())
            for t in tasks
        )
        if keys != records:
            raise SystemExit(f"{backend}: the stores hold {keys} keys, expected {records}")
    finally:
        for task in tasks:
            task.backend.close()
        disk = sum(f.stat().st_size for f in Path(state_dir).rglob("*") if f.is_file())
        shutil.rmtree(state_dir, ignore_errors=True)
    return {
        "backend": backend,
        "records": restored,
        "partitions": len(tasks),
        "seconds": seconds,
        "records_per_s": restored / seconds if seconds > 0 else 0.0,
        "baseline_rss_mib": baseline_rss,
        "baseline_maxrss_mib": baseline_max,
        "peak_rss_mib": peak,
        "rss_after_mib": rss_after,
        "disk_mib": disk / 2**20,
    }


def _measure_in_child(bootstrap: str, topic: str, backend: str, records: int) -> dict[str, object]:
    args = [sys.executable, __file__, "--bootstrap-servers", bootstrap, "--topic", topic]
    args += ["--records", str(records), "--measure", backend]
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]),
    }
    proc = subprocess.run(args, capture_output=True, text=True, env=env, timeout=1800)
    if proc.returncode != 0:
        raise SystemExit(
            f"measuring {backend} failed ({proc.returncode}):\n{proc.stderr}{proc.stdout}"
        )
    result: dict[str, object] = json.loads(proc.stdout.strip().splitlines()[-1])
    return result


# -- report -----------------------------------------------------------------------


def _versions() -> str:
    from importlib.metadata import PackageNotFoundError, version

    import confluent_kafka

    def installed(name: str) -> str:
        try:
            return version(name)
        except PackageNotFoundError:
            return "?"

    return (
        f"Python {platform.python_version()}, confluent-kafka {installed('confluent-kafka')} "
        f"(librdkafka {confluent_kafka.libversion()[0]}), rocksdict {installed('rocksdict')}, "
        f"{os.cpu_count()} CPUs, {platform.machine()}"
    )


def render(
    results: list[dict[str, object]],
    *,
    topic: str,
    records: int,
    partitions: int,
    value_bytes: int,
    txn_records: int,
    reused: bool,
    build_seconds: float,
) -> str:
    built = "reused" if reused else f"built in {build_seconds:.1f} s"
    lines = [
        "# Restore benchmark",
        "",
        f"Restoring {records:,} distinct keys ({value_bytes}-byte values, {partitions} "
        f"partition(s), transactions of {txn_records:,} records) from the changelog "
        f"`{topic}` ({built}) into empty stores through `ChangelogRestorer` "
        "(the engine's restore path). Each backend runs in a fresh process; RSS is "
        "that process's from `getrusage(RUSAGE_SELF).ru_maxrss`: baseline after the stores "
        "were opened, peak after the restore. `null` discards the data (it keeps only the "
        "checkpoint): the Kafka read and restore loop alone, whose peak is mostly the restore "
        "consumer's prefetch queue (librdkafka `queued.max.messages.kbytes`, 64 MiB by "
        "default, applies per partition here).",
        "",
        "| backend | records | seconds | records/s | baseline RSS MiB | peak RSS MiB | "
        "peak - baseline MiB | on disk MiB |",
        "|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in results:
        lines.append(
            f"| {r['backend']} | {r['records']:,} | {r['seconds']:.2f} | "
            f"{r['records_per_s']:,.0f} | {r['baseline_rss_mib']:.0f} | "
            f"{r['peak_rss_mib']:.0f} | "
            f"{float(r['peak_rss_mib']) - float(r['baseline_maxrss_mib']):.0f} | "  # type: ignore[arg-type]
            f"{r['disk_mib']:.0f} |"
        )
    lines += [
        "",
        f"{_versions()}; broker: Kafka 4.1 on the same machine. "
        f"Run {datetime.date.today().isoformat()} with "
        f"`python benchmarks/restore.py --records {records} --partitions {partitions}`.",
        "",
    ]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--bootstrap-servers", default=os.environ.get("EOS_BOOTSTRAP_SERVERS", "localhost:9092")
    )
    parser.add_argument("--records", type=int, default=1_000_000)
    parser.add_argument("--partitions", type=int, default=4)
    parser.add_argument("--value-bytes", type=int, default=100)
    parser.add_argument("--txn-records", type=int, default=50_000)
    parser.add_argument("--topic", default=None, help="changelog topic (default: named by size)")
    parser.add_argument("--backends", default=",".join(BACKENDS))
    parser.add_argument("--output", default=str(DEFAULT_OUTPUT), help="markdown file ('-': none)")
    parser.add_argument("--measure", choices=BACKENDS, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    topic = args.topic or (
        f"eos-bench-restore-v2-{args.records}r-{args.partitions}p-{args.value_bytes}b"
        f"-{args.txn_records}t"
    )
    if args.measure:
        print(json.dumps(measure(args.bootstrap_servers, topic, args.measure, args.records)))
        return 0
    reused, build_seconds = build_changelog(
        args.bootstrap_servers,
        topic,
        args.records,
        args.partitions,
        args.value_bytes,
        args.txn_records,
    )
    print(f"changelog {topic}: {'reused' if reused else f'built in {build_seconds:.1f} s'}")
    results = []
    for backend in args.backends.split(","):
        result = _measure_in_child(args.bootstrap_servers, topic, backend.strip(), args.records)
        print(
            f"{result['backend']}: {result['records']:,} records in {result['seconds']:.2f} s = "
            f"{result['records_per_s']:,.0f} records/s, RSS {result['baseline_maxrss_mib']:.0f} -> "
            f"peak {result['peak_rss_mib']:.0f} MiB",
            flush=True,
        )
        results.append(result)
    table = render(
        results,
        topic=topic,
        records=args.records,
        partitions=args.partitions,
        value_bytes=args.value_bytes,
        txn_records=args.txn_records,
        reused=reused,
        build_seconds=build_seconds,
    )
    print()
    print(table)
    if args.output != "-":
        Path(args.output).parent.mkdir(parents=True, exist_ok=True)
        Path(args.output).write_text(table)
    return 0


if __name__ == "__main__":
    sys.exit(main())
