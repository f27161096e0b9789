"""Benchmark: restore a store from its changelog, against the limit and Quix Streams.

1. Builds (once; reused when it already holds exactly what this run would
   write) a compacted changelog topic of ``--records`` distinct keys with
   ``--value-bytes`` values over ``--partitions`` partitions, written
   transactionally with a commit every ``--txn-records`` records, as the
   engine writes changelogs.
2. Measures each contender in a FRESH child process (so its peak RSS, the
   ``VmHWM`` of ``/proc/self/status``, is its own):

   ``eos_restore``  (``rocksdb``) one empty RocksDB store partition per changelog
                    partition, opened with ``open_backend`` and restored with
                    ``ChangelogRestorer``: the classes ``StoreManager.open``
                    uses, with the same restore consumer settings
   ``memory``       the same into memory stores
   ``null``         the same into a store that discards (the restore loop alone)
   ``bare_restore`` the LIMIT: one bare confluent-kafka consumer with the same
                    settings reading the same changelog and discarding it
   ``quixstreams_restore``  Quix Streams (its own virtualenv, ``run.py``'s
                    ``quix_python()``) recovering a changelog of the same number
                    of keys: a Quix application counts per key over this topic
                    (built once, reused), then a fresh instance of it with an
                    empty state directory recovers its store; the time is its
                    ``RecoveryManager.do_recovery()``.

3. Prints a markdown table and the ``RATIO`` line
   (``eos_restore/bare_restore=``, ``eos_restore/quixstreams_restore=``) and
   writes the table to ``--output`` (default ``docs/benchmarks-restore.md``),
   followed, with ``--memory``, by the memory benchmark's table (``memory.py``),
   and refreshes the copy of that report at the end of ``docs/benchmarks.md``
   (``run.py`` copies it there too when it writes that page).

Quix Streams (``--quix``) and the memory benchmark (``--memory``) are opt-in:
the first may create a virtualenv, the second takes minutes. The published
docs come from::

    python benchmarks/restore.py --bootstrap-servers 127.0.0.1:9092 --quix --memory
    python benchmarks/restore.py --records 2000 --output -   # smoke
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import random
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Mapping
from pathlib import Path

from _result import peak_rss_mib
from confluent_kafka import Consumer, KafkaError, KafkaException, Producer, TopicPartition
from confluent_kafka.admin import AdminClient

ROOT = Path(__file__).resolve().parents[1]
BENCH_DIR = Path(__file__).resolve().parent
DEFAULT_OUTPUT = ROOT / "docs" / "benchmarks-restore.md"
STORE = "bench"
CONTENDERS = ("rocksdb", "memory", "null", "bare_restore", "quixstreams_restore")
"""``rocksdb`` is ``eos_restore`` in the RATIO line; ``null`` is eos's restore loop
into a store that discards."""
DEFAULT_CONTENDERS = ("rocksdb", "memory", "null", "bare_restore")
CHUNK = 5000
"""Records per ``consume()`` of the bare consumer, as eos's ``CHUNK_RECORDS``."""


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


# -- building the changelog -----------------------------------------------------


_POOL = random.Random(20240601).randbytes(1 << 16).hex().encode()  # 128 KiB of hex digits


def record_bytes(i: int, value_bytes: int) -> tuple[bytes, bytes]:
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


def high_watermarks(bootstrap: str, topic: str) -> dict[int, tuple[int, int]] | None:
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


def default_topic(records: int, partitions: int, value_bytes: int, txn_records: int) -> str:
    """The changelog topic this benchmark (and ``memory.py``, as its input) builds for a size."""
    return f"eos-bench-restore-v2-{records}r-{partitions}p-{value_bytes}b-{txn_records}t"


def build_changelog(
    bootstrap: str, topic: str, records: int, partitions: int, value_bytes: int, txn_records: int
) -> tuple[bool, float]:
    """Create and fill ``topic`` unless it already holds exactly this data.

    Returns ``(reused, seconds spent building)``.
    """
    from eos.testing.helpers import create_topic

    expected = _expected_end(records, partitions, txn_records)
    marks = high_watermarks(bootstrap, topic)
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
        while high_watermarks(bootstrap, topic) is not None and time.monotonic() < deadline:
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
            key, value = record_bytes(i, value_bytes)
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
        marks = high_watermarks(bootstrap, topic) or {}
        total = sum(high for _low, high in marks.values())
        if total == expected:
            break
        if time.monotonic() > deadline:
            raise RuntimeError(f"built {topic} but its end offsets sum to {total}, not {expected}")
        time.sleep(0.1)
    return False, time.monotonic() - started


# -- measuring one restore (in a child process) ---------------------------------


def _restore_settings(bootstrap: str, extra: dict[str, str], client_id: str) -> dict[str, object]:
    """The restore consumer's settings as ``StoreManager`` derives them for an application
    with ``consumer_config=extra`` (eos's group consumer defaults included)."""
    from eos.config import Config
    from eos.state.changelog import restore_consumer_settings

    config = Config(
        application_id="eos-bench-restore",
        bootstrap_servers=bootstrap,
        input_topics="unused",
        consumer_config=extra,
    )
    return dict(
        restore_consumer_settings(config.consumer_settings(), config.application_id, client_id)
    )


def measure_eos(
    bootstrap: str,
    topic: str,
    backend: str,
    records: int,
    extra: dict[str, str],
    sizes: dict[str, int],
) -> dict[str, object]:
    """Restore every partition of ``topic`` into empty ``backend`` stores; return figures.

    ``extra``: consumer settings, as an application's ``consumer_config``;
    ``sizes``: the ``rocksdb_*_mb`` options of the store.
    """
    from eos.state.base import Store, open_backend
    from eos.state.changelog import ChangelogRestorer, RestoreTask

    marks = high_watermarks(bootstrap, topic)
    if marks is None:
        raise SystemExit(f"topic {topic} does not exist")
    spec = Store(STORE, backend=NullStore if backend == "null" else backend, **sizes)
    state_dir = tempfile.mkdtemp(prefix=f"eos-bench-{backend}-")
    admin = AdminClient({"bootstrap.servers": bootstrap})
    settings = _restore_settings(bootstrap, extra, "eos-bench-restore")
    restorer = ChangelogRestorer(admin, settings, stall_timeout_s=60)
    tasks = []
    for p in sorted(marks):
        path = os.path.join(state_dir, STORE, str(p))
        tasks.append(RestoreTask(STORE, p, topic, open_backend(spec, path, p), path))
    baseline_rss = _rss_mib()
    try:
        started = time.perf_counter()
        restorer.restore(tasks)
        seconds = time.perf_counter() - started
        peak = peak_rss_mib()
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
    return _figures(backend, restored, len(tasks), seconds, baseline_rss, peak, disk)


def measure_bare(
    bootstrap: str, topic: str, records: int, extra: dict[str, str]
) -> dict[str, object]:
    """The limit: read the whole changelog with one bare consumer and discard it.

    The consumer has the settings of eos's restore consumer (``read_committed``,
    the same prefetch), reads from the start of every partition in chunks of
    :data:`CHUNK` and stops at each partition's end-of-partition event at its
    high watermark. Nothing is decoded or stored.
    """
    marks = high_watermarks(bootstrap, topic)
    if marks is None:
        raise SystemExit(f"topic {topic} does not exist")
    settings = _restore_settings(bootstrap, extra, "eos-bench-bare")
    baseline_rss = _rss_mib()
    started = time.perf_counter()
    consumer = Consumer(settings)
    consumer.assign([TopicPartition(topic, p, low) for p, (low, _high) in marks.items()])
    remaining = {p for p, (low, high) in marks.items() if high > low}
    restored = 0
    consume = consumer.consume
    while remaining:
        for msg in consume(CHUNK, 0.1):
            error = msg.error()
            if error is None:
                restored += 1
            elif error.code() == KafkaError._PARTITION_EOF:
                if (msg.offset() or 0) >= marks[msg.partition() or 0][1]:
                    remaining.discard(msg.partition() or 0)
            else:
                raise SystemExit(f"bare_restore: {error}")
    seconds = time.perf_counter() - started
    peak = peak_rss_mib()
    consumer.close()
    if restored != records:
        raise SystemExit(f"bare_restore: read {restored} records, expected {records}")
    return _figures("bare_restore", restored, len(marks), seconds, baseline_rss, peak, 0)


def _figures(
    name: str,
    records: int,
    partitions: int,
    seconds: float,
    baseline_rss: float,
    peak: float,
    disk: int,
) -> dict[str, object]:
    return {
        "contender": name,
        "records": records,
        "partitions": partitions,
        "seconds": seconds,
        "records_per_s": records / seconds if seconds > 0 else 0.0,
        "baseline_rss_mib": baseline_rss,
        "peak_rss_mib": peak,
        "disk_mib": disk / 2**20,
    }


# -- Quix Streams (runs with the interpreter of benchmarks/.venv-quix) -------------


def _quix_group(topic: str) -> str:
    """The Quix application's consumer group: fixed per input, so its changelog is reused."""
    return f"eos-bench-quix-restore-{topic}"


def _quix_app(bootstrap: str, group: str, state_dir: str) -> object:
    import logging

    from quixstreams import Application

    return Application(
        broker_address=bootstrap,
        consumer_group=group,
        auto_offset_reset="earliest",
        processing_guarantee="exactly-once",
        state_dir=state_dir,
        loglevel=logging.WARNING,
        commit_interval=1.0,
    )


def _quix_committed_all(bootstrap: str, topic: str, group: str) -> bool:
    """Whether ``group`` committed past the last record of every partition of ``topic``."""
    marks = high_watermarks(bootstrap, topic) or {}
    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": group})
    try:
        committed = consumer.committed([TopicPartition(topic, p) for p in marks], timeout=10)
    finally:
        consumer.close()
    # The last record of a partition sits just before its final commit marker.
    return bool(marks) and all(tp.offset >= marks[tp.partition][1] - 1 for tp in committed)


def measure_quix(bootstrap: str, topic: str, records: int) -> dict[str, object]:
    """Quix Streams recovering a store of ``records`` keys from its own changelog.

    First (once per input topic; skipped when its group already committed
    everything) a Quix application stores ``[count, value]`` per key of
    ``topic``, so its changelog holds one record per key, written under
    exactly-once like eos's. Then a fresh instance of the same application
    with an empty state directory starts: it recovers every key before it
    processes anything. Timed: ``RecoveryManager.do_recovery()``, from the
    first seek of the changelog partitions to the last record applied.
    """
    import threading

    from quixstreams.state.recovery import RecoveryManager, RecoveryPartition

    group = _quix_group(topic)

    def store_latest(value: bytes, state: object) -> None:
        count = state.get("v", [0, ""])[0] + 1  # type: ignore[attr-defined]
        state.set("v", [count, value.decode()])  # type: ignore[attr-defined]

    def build_app(state_dir: str) -> object:
        app = _quix_app(bootstrap, group, state_dir)
        sdf = app.dataframe(  # type: ignore[attr-defined]
            app.topic(topic, key_deserializer="bytes", value_deserializer="bytes")  # type: ignore[attr-defined]
        )
        sdf.update(store_latest, stateful=True)
        return app

    if not _quix_committed_all(bootstrap, topic, group):
        print(f"quixstreams: building its changelog for {topic} (once)", file=sys.stderr)
        state_dir = tempfile.mkdtemp(prefix="eos-bench-quix-build-")
        app = build_app(state_dir)
        done = threading.Event()

        def watch() -> None:
            while not done.wait(2.0):
                if _quix_committed_all(bootstrap, topic, group):
                    app.stop()  # type: ignore[attr-defined]
                    return

        threading.Thread(target=watch, daemon=True).start()
        try:
            app.run()  # type: ignore[attr-defined]
        finally:
            done.set()
            shutil.rmtree(state_dir, ignore_errors=True)
        if not _quix_committed_all(bootstrap, topic, group):
            raise SystemExit("quixstreams: the build stopped before processing every record")

    recovered = 0
    timing: list[float] = []
    original_recover = RecoveryPartition.recover_from_changelog_message
    original_do_recovery = RecoveryManager.do_recovery

    def counting_recover(self: object, changelog_message: object) -> None:
        nonlocal recovered
        recovered += 1
        original_recover(self, changelog_message)  # type: ignore[arg-type]

    state_dir = tempfile.mkdtemp(prefix="eos-bench-quix-restore-")
    app = build_app(state_dir)

    def timed_do_recovery(self: object) -> None:
        started = time.perf_counter()
        original_do_recovery(self)  # type: ignore[arg-type]
        if recovered:
            timing.append(time.perf_counter() - started)
            app.stop()  # type: ignore[attr-defined]

    RecoveryPartition.recover_from_changelog_message = counting_recover  # type: ignore[method-assign,assignment]
    RecoveryManager.do_recovery = timed_do_recovery  # type: ignore[method-assign,assignment]
    baseline_rss = _rss_mib()
    try:
        app.run()  # type: ignore[attr-defined]
        peak = peak_rss_mib()
        disk = sum(f.stat().st_size for f in Path(state_dir).rglob("*") if f.is_file())
    finally:
        shutil.rmtree(state_dir, ignore_errors=True)
    if recovered != records or not timing:
        raise SystemExit(f"quixstreams: recovered {recovered} records, expected {records}")
    return _figures(
        "quixstreams_restore", recovered, len(high_watermarks(bootstrap, topic) or {}),
        sum(timing), baseline_rss, peak, disk,
    )  # fmt: skip


def _measure_in_child(
    bootstrap: str, topic: str, contender: str, records: int, python: str, flags: list[str]
) -> dict[str, object]:
    args = [python, __file__, "--bootstrap-servers", bootstrap, "--topic", topic]
    args += ["--records", str(records), "--measure", contender, *flags]
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]),
    }
    if contender == "quixstreams_restore":  # its own virtualenv: eos is not importable there
        env["PYTHONPATH"] = str(BENCH_DIR)
    proc = subprocess.run(args, capture_output=True, text=True, env=env, timeout=3600)
    if proc.returncode != 0:
        raise SystemExit(
            f"measuring {contender} failed ({proc.returncode}):\n{proc.stderr}{proc.stdout}"
        )
    result: dict[str, object] = json.loads(proc.stdout.strip().splitlines()[-1])
    return result


# -- report -----------------------------------------------------------------------


def versions() -> str:
    from importlib.metadata import PackageNotFoundError, version

    import confluent_kafka

    def installed(name: str) -> str:
        try:
            return version(name)
        except PackageNotFoundError:
            return "?"

    return (
        f"Python {platform.python_version()}, eos {installed('eos-kafka')}, confluent-kafka "
        f"{installed('confluent-kafka')} (librdkafka {confluent_kafka.libversion()[0]}), "
        f"rocksdict {installed('rocksdict')}, {os.cpu_count()} CPUs, {platform.machine()}"
    )


def _ratio(results: list[dict[str, object]], a: str, b: str) -> str:
    rates = {str(r["contender"]): float(r["records_per_s"]) for r in results}  # type: ignore[arg-type]
    if a not in rates or b not in rates or rates[b] <= 0:
        return "n/a"
    return f"{rates[a] / rates[b]:.2f}"


def ratio_line(results: list[dict[str, object]]) -> str:
    """``RATIO eos_restore/bare_restore=X eos_restore/quixstreams_restore=Y``."""
    return (
        f"RATIO eos_restore/bare_restore={_ratio(results, 'rocksdb', 'bare_restore')} "
        f"eos_restore/quixstreams_restore={_ratio(results, 'rocksdb', 'quixstreams_restore')}"
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
    quix_note: str,
    flags: list[str],
    sizes_note: str = "the default `eos.Store` sizes",
) -> str:
    built = "reused" if reused else f"built in {build_seconds:.1f} s"
    lines = [
        "# Restore benchmark",
        "",
        f"Restoring {records:,} distinct keys ({value_bytes}-byte values, {partitions} "
        f"partitions, transactions of {txn_records:,} records) from the changelog "
        f"`{topic}` ({built}) into empty stores. Each contender runs in a fresh process; "
        "peak RSS is that process's `VmHWM`.",
        "",
        "- `rocksdb` (`eos_restore` in the RATIO line): eos's restore path "
        "(`ChangelogRestorer`, what `StoreManager` runs on assignment) into one RocksDB "
        f"store partition per changelog partition ({sizes_note}). "
        "`memory`: the same into memory stores; `null`: into a store that discards "
        "(the restore loop alone).",
        "- `bare_restore`, the limit: one confluent-kafka consumer with the settings of "
        "eos's restore consumer reading the same changelog and discarding every record.",
        "- `quixstreams_restore`: Quix Streams recovering a changelog of the same keys that "
        "its own application wrote (one `[count, value]` JSON per key under exactly-once) "
        "into an empty state directory, timed around `RecoveryManager.do_recovery()`; it "
        "applies every changelog record in its own RocksDB write (quix-streams#351), eos "
        "one write batch per consumed chunk of up to 5,000 records. Its recovery loop also "
        "declares a partition done only after a poll that returns nothing (up to 1 s). "
        f"{quix_note}.",
        "",
        "| backend | records | seconds | records/s | baseline RSS MiB | peak RSS MiB | "
        "on disk MiB |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    for r in results:
        lines.append(
            f"| {r['contender']} | {r['records']:,} | {r['seconds']:.2f} | "
            f"{r['records_per_s']:,.0f} | {r['baseline_rss_mib']:.0f} | "
            f"{r['peak_rss_mib']:.0f} | {r['disk_mib']:.0f} |"
        )
    lines += [
        "",
        f"`{ratio_line(results)}`",
        "",
        "Where the time goes: `bare_restore` is librdkafka's fetch and the Python loop "
        "touching each record; `null` adds eos's restore loop (grouping records per "
        "partition, the consumer position as checkpoint, its checks); `rocksdb` adds the "
        "RocksDB writes (one `WriteBatch` per chunk, with the checkpoint).",
        "",
        "The discarding store's and the bare consumer's peaks are mostly librdkafka's "
        "prefetch queue: a consumer keeps up to `queued.max.messages.kbytes` per partition "
        "it reads (64 MiB by default; the application's `consumer_config` sets it for the "
        "group and the restore consumer alike, see [state.md](state.md#memory)). "
        + (
            "This run set it with "
            + ", ".join(f"`{f}`" for f in flags if "queued.max.messages.kbytes" in f)
            + "."
            if any("queued.max.messages.kbytes" in f for f in flags)
            else "This run left it at librdkafka's default."
        ),
        "",
        f"{versions()}; broker: Kafka on the same machine. "
        f"Run {datetime.date.today().isoformat()} with "
        f"`python benchmarks/restore.py --records {records} --partitions {partitions}"
        f"{''.join(f' {flag}' for flag in flags)}`.",
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
    parser.add_argument(
        "--contenders",
        default=",".join(DEFAULT_CONTENDERS),
        help=f"comma-separated, of {', '.join(CONTENDERS)}",
    )
    parser.add_argument(
        "--consumer-config", action="append", default=[], metavar="KEY=VALUE",
        help="extra librdkafka setting for eos's restore consumer, the bare one and "
        "memory.py's application (not Quix Streams)",
    )  # fmt: skip
    parser.add_argument(
        "--quix", action="store_true", help="add quixstreams_restore (needs benchmarks/.venv-quix)"
    )
    parser.add_argument(
        "--memory", action="store_true", help="run memory.py's benchmark after, into --output"
    )
    parser.add_argument("--output", default=str(DEFAULT_OUTPUT), help="markdown file ('-': none)")
    parser.add_argument(
        "--rocksdb-block-cache-mb", type=int, default=None, help="eos.Store option (rocksdb)"
    )
    parser.add_argument(
        "--rocksdb-write-buffer-mb", type=int, default=None, help="eos.Store option (rocksdb)"
    )
    parser.add_argument("--measure", choices=CONTENDERS, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    topic = args.topic or default_topic(
        args.records, args.partitions, args.value_bytes, args.txn_records
    )
    extra = dict(kv.split("=", 1) for kv in args.consumer_config)
    sizes = {
        key: value
        for key in ("rocksdb_block_cache_mb", "rocksdb_write_buffer_mb")
        if (value := getattr(args, key)) is not None
    }
    flags = [f"--consumer-config={kv}" for kv in args.consumer_config]
    flags += [f"--{key.replace('_', '-')}={value}" for key, value in sizes.items()]
    if args.measure:
        if args.measure == "bare_restore":
            result = measure_bare(args.bootstrap_servers, topic, args.records, extra)
        elif args.measure == "quixstreams_restore":
            result = measure_quix(args.bootstrap_servers, topic, args.records)
        else:
            result = measure_eos(
                args.bootstrap_servers, topic, args.measure, args.records, extra, sizes
            )
        print(json.dumps(result))
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
    contenders = [c.strip() for c in args.contenders.split(",") if c.strip()]
    quix_python: str | None = None
    if args.quix and "quixstreams_restore" not in contenders:
        contenders.append("quixstreams_restore")
    quix_note = "Not run (no --quix); its ratio is n/a"
    if "quixstreams_restore" in contenders:
        from run import quix_python as find_quix

        found, note = find_quix()
        quix_note = f"Quix Streams: {note.split(';')[0]}"
        if found is None:
            contenders.remove("quixstreams_restore")
            quix_note = f"Quix Streams {note}"
        else:
            quix_python = str(found)
    results = []
    for contender in contenders:
        python = quix_python if contender == "quixstreams_restore" else sys.executable
        result = _measure_in_child(
            args.bootstrap_servers,
            topic,
            contender,
            args.records,
            python or sys.executable,
            flags,
        )
        print(
            f"{contender}: {result['records']:,} records in {result['seconds']:.2f} s = "
            f"{result['records_per_s']:,.0f} records/s, peak RSS {result['peak_rss_mib']:.0f} MiB",
            flush=True,
        )
        results.append(result)
    report = render(
        results,
        topic=topic,
        records=args.records,
        partitions=args.partitions,
        value_bytes=args.value_bytes,
        txn_records=args.txn_records,
        reused=reused,
        build_seconds=build_seconds,
        quix_note=quix_note,
        sizes_note=", ".join(f"`{k}={v}`" for k, v in sizes.items())
        or "the default `eos.Store` sizes",
        flags=flags
        + (["--quix"] if "quixstreams_restore" in contenders else [])
        + (["--memory"] if args.memory else []),
    )
    print(ratio_line(results), flush=True)
    status = 0
    if args.memory:
        import memory

        memory_args = memory.parse_args(
            [
                "--bootstrap-servers", args.bootstrap_servers, "--records", str(args.records),
                "--partitions", str(args.partitions), "--value-bytes", str(args.value_bytes),
                "--topic", topic,
                *(f"--consumer-config={kv}" for kv in args.consumer_config),
            ]
        )  # fmt: skip
        memory_results, over = memory.run(memory_args, reused=True)
        report += "\n" + memory.render(memory_results, memory_args, reused=True, heading="##")
        status = 1 if over else 0
    print()
    print(report)
    if args.output != "-":
        output = Path(args.output)
        output.parent.mkdir(parents=True, exist_ok=True)
        output.write_text(report)
        _copy_into_benchmarks_page(output, report)
    return status


def _copy_into_benchmarks_page(output: Path, report: str) -> None:
    """Refresh the copy of this report at the end of run.py's page beside it, if any."""
    import _report

    if output.name != _report.RESTORE_REPORT:
        return
    page = output.with_name("benchmarks.md")
    if page.exists():
        section = _report.restore_section(report)
        text = _report.replace_section(
            page.read_text(), section, _report.RESTORE_BEGIN, _report.RESTORE_END
        )
        page.write_text(text)
        print(f"copied into {page.name}", flush=True)


if __name__ == "__main__":
    sys.exit(main())
