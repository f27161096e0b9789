"""Benchmark: peak RSS of an eos instance whose store holds 1,000,000 distinct keys.

1. Builds (once; shared with ``restore.py``, which reads the same topic) a
   topic of ``--records`` distinct keys with ``--value-bytes`` values over
   ``--partitions`` partitions.
2. For each configuration, in a FRESH interpreter (so its peak is its own:
   ``VmHWM`` of ``/proc/self/status``, which ``execve`` resets), runs an eos
   application over the topic until every record is in a committed
   transaction (``process``), then a second instance of the same application
   with an empty state directory until its stores are restored from the
   changelog (``restore``). The processor counts per key, keeps
   ``b"<count>|<last value>"`` per key in the store (about 110 bytes per key)
   and emits the count, as the ``eos_stateful`` contender does.
3. Prints a markdown table with each peak and the bound it must stay under
   (:func:`bound_mib`) and exits 1 if a RocksDB peak is over its bound.
   ``restore.py`` runs this benchmark after its own and writes both tables to
   ``docs/benchmarks-restore.md``.

Run against any broker::

    python benchmarks/memory.py --bootstrap-servers 127.0.0.1:9092
    python benchmarks/memory.py --records 20000 --setups stateless,rocksdb   # smoke
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

from _result import peak_rss_mib
from restore import build_changelog, default_topic, versions

ROOT = Path(__file__).resolve().parents[1]
STORE = "counts"
TXN_RECORDS = 50_000

FLOOR_MIB = 128
"""The instance without its store, for the 4 partitions measured: the interpreter
with eos and confluent-kafka loaded (about 45 MiB), the group consumer's
prefetch at librdkafka's defaults, the producer's queue and the
per-transaction overlay (the no-store setup measured 116 MiB). During a
restore the group consumer's partitions are paused and the restore consumer
prefetches instead: the bound assumes its ``queued.max.messages.kbytes`` at
16 MiB per partition (``--consumer-config``, or eos's restore default)."""
ROCKSDB_FIXED_MIB = 32
"""What a RocksDB store uses beyond its configured cache and write budget:
table readers, the memtable arena's slack, RocksDB's own threads."""


def bound_mib(block_cache_mb: int, write_buffer_mb: int) -> int:
    """The documented peak-RSS bound of one instance with one RocksDB store.

    ``FLOOR_MIB + ROCKSDB_FIXED_MIB + block cache + 2 x write budget`` (a
    memtable being flushed counts until it is on disk). It does not depend
    on the number of keys: that is the point of bounding the store.
    """
    return FLOOR_MIB + ROCKSDB_FIXED_MIB + block_cache_mb + 2 * write_buffer_mb


@dataclass(frozen=True)
class Setup:
    """One measured configuration."""

    name: str
    backend: str | None  # None: no store (the floor)
    block_cache_mb: int = 0
    write_buffer_mb: int = 0

    @property
    def bound(self) -> int | None:
        if self.backend != "rocksdb":
            return None
        return bound_mib(self.block_cache_mb, self.write_buffer_mb)

    def describe(self) -> str:
        if self.backend is None:
            return "no store (copy)"
        if self.backend == "memory":
            return 'backend="memory"'
        return (
            f"rocksdb_block_cache_mb={self.block_cache_mb}, "
            f"rocksdb_write_buffer_mb={self.write_buffer_mb}"
        )


def _setups() -> dict[str, Setup]:
    from eos.state.base import DEFAULT_ROCKSDB_BLOCK_CACHE_MB, DEFAULT_ROCKSDB_WRITE_BUFFER_MB

    return {
        s.name: s
        for s in (
            Setup("stateless", None),
            Setup(
                "rocksdb",
                "rocksdb",
                DEFAULT_ROCKSDB_BLOCK_CACHE_MB,
                DEFAULT_ROCKSDB_WRITE_BUFFER_MB,
            ),
            Setup("rocksdb-64", "rocksdb", 64, 64),
            Setup("memory", "memory"),
        )
    }


DEFAULT_SETUPS = "stateless,rocksdb,rocksdb-64,memory"


# -- one instance (in a child process) ------------------------------------------


def _rss_mib() -> float:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def measure(args: argparse.Namespace) -> dict[str, object]:
    """Run one instance until it has processed (or restored) everything; return figures."""
    import eos

    setup = _setups()[args.measure]
    output = f"{args.app_id}-out"
    baseline = _rss_mib()
    stores: tuple[eos.Store, ...] = ()
    if setup.backend is not None:
        sizes = {}
        if setup.backend == "rocksdb":
            sizes = {
                "rocksdb_block_cache_mb": setup.block_cache_mb,
                "rocksdb_write_buffer_mb": setup.write_buffer_mb,
            }
        stores = (
            eos.Store(
                STORE, backend=setup.backend, key_serde="bytes", value_serde="bytes", **sizes
            ),
        )

    class CountLatest(eos.Processor):
        def process(self, record: eos.Record, ctx: eos.Context) -> None:
            key: bytes = record.key  # type: ignore[assignment]
            value: bytes = record.value  # type: ignore[assignment]
            if not stores:
                ctx.send(output, value.upper(), key=key)
                return
            store = ctx.store(STORE)
            old = store.get(key)
            n = 1 if old is None else int(old[: old.index(b"|")]) + 1
            store[key] = b"%d|%s" % (n, value)
            ctx.send(output, b"%d" % n, key=key)

    CountLatest.stores = stores
    consumer_config = dict(kv.split("=", 1) for kv in args.consumer_config)
    app = eos.Application(
        application_id=args.app_id,
        bootstrap_servers=args.bootstrap_servers,
        input_topics=[args.topic],
        processor=CountLatest(),
        processing_guarantee="exactly_once_v2",
        commit_interval_ms=100,
        state_dir=args.state_dir,
        consumer_config=consumer_config,  # type: ignore[arg-type]
    )
    restoring = args.phase == "restore"
    done = threading.Event()

    def watch() -> None:
        seen_restoring = False
        while not done.is_set():
            state = app.state
            if restoring:
                seen_restoring = seen_restoring or bool(state.restoring_partitions)
                if (
                    seen_restoring
                    and len(state.assigned_partitions) == args.partitions
                    and not state.restoring_partitions
                ):
                    break
            elif state.processed_count >= args.records:
                break
            time.sleep(0.02)
        app.stop()

    watcher = threading.Thread(target=watch, name="watcher", daemon=True)
    started = time.perf_counter()
    watcher.start()
    try:
        app.run()
    finally:
        done.set()
    seconds = time.perf_counter() - started
    peak = peak_rss_mib()
    keys = None
    if setup.backend == "rocksdb":  # check the stores hold every key (after the peak is read)
        from eos.state.rocksdb import RocksDBStore

        root = Path(args.state_dir) / args.app_id / STORE
        keys = 0
        for path in sorted(root.iterdir()):
            store = RocksDBStore(str(path), STORE, int(path.name))
            keys += sum(1 for _ in store.iterate())
            store.close()
        if keys != args.records:
            raise SystemExit(f"{setup.name} {args.phase}: the stores hold {keys} keys")
    return {
        "setup": setup.name,
        "phase": args.phase,
        "seconds": seconds,
        "processed": app.state.processed_count,
        "baseline_rss_mib": baseline,
        "peak_rss_mib": peak,
        "keys": keys,
    }


def _run_child(
    args: argparse.Namespace, setup: str, phase: str, app_id: str, state_dir: str
) -> dict[str, object]:
    argv = [sys.executable, __file__, "--bootstrap-servers", args.bootstrap_servers]
    argv += ["--topic", args.topic, "--records", str(args.records)]
    argv += ["--partitions", str(args.partitions), "--measure", setup, "--phase", phase]
    argv += ["--app-id", app_id, "--state-dir", state_dir]
    for kv in args.consumer_config:
        argv += ["--consumer-config", kv]
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]),
    }
    proc = subprocess.run(argv, capture_output=True, text=True, env=env, timeout=1800)
    if proc.returncode != 0:
        raise SystemExit(f"{setup} {phase} failed ({proc.returncode}):\n{proc.stderr}{proc.stdout}")
    result: dict[str, object] = json.loads(proc.stdout.strip().splitlines()[-1])
    return result


def _delete_topics(bootstrap: str, topics: list[str]) -> None:
    from confluent_kafka.admin import AdminClient

    admin = AdminClient({"bootstrap.servers": bootstrap})
    for future in admin.delete_topics(topics, operation_timeout=30).values():
        try:
            future.result(60)
        except Exception as exc:  # an app that never created it; nothing to free
            print(f"deleting a topic: {exc}", file=sys.stderr)


def measure_setup(args: argparse.Namespace, setup: Setup) -> list[dict[str, object]]:
    """Both phases of one setup, each in a fresh interpreter; deletes its topics after."""
    from eos.testing.helpers import create_topic

    app_id = f"eos-bench-memory-{setup.name}-{uuid.uuid4().hex[:8]}"
    create_topic(args.bootstrap_servers, f"{app_id}-out", args.partitions)
    results = []
    try:
        phases = ("process", "restore") if setup.backend is not None else ("process",)
        for phase in phases:
            state_dir = tempfile.mkdtemp(prefix=f"eos-bench-memory-{setup.name}-")
            try:
                result = _run_child(args, setup.name, phase, app_id, state_dir)
            finally:
                shutil.rmtree(state_dir, ignore_errors=True)
            result["bound_mib"] = setup.bound
            print(
                f"{setup.name} {phase}: {result['seconds']:.1f} s, peak RSS "
                f"{result['peak_rss_mib']:.0f} MiB (bound {setup.bound or '-'})",
                flush=True,
            )
            results.append(result)
    finally:
        topics = [f"{app_id}-out"]
        if setup.backend is not None:
            topics.append(f"{app_id}-{STORE}-changelog")
        _delete_topics(args.bootstrap_servers, topics)
    return results


# -- report -----------------------------------------------------------------------


def _over(result: dict[str, object]) -> bool:
    """Whether a measured peak is above its bound (never, for a setup without one)."""
    bound, peak = result["bound_mib"], result["peak_rss_mib"]
    return isinstance(bound, int) and isinstance(peak, float) and peak > bound


def render(
    results: list[dict[str, object]], args: argparse.Namespace, reused: bool, heading: str = "#"
) -> str:
    """The markdown table (under a ``heading``-level title) with the bound explained."""
    setups = _setups()
    built = "reused" if reused else "built for this run"
    lines = [
        f"{heading} Memory benchmark",
        "",
        f"An eos application over {args.records:,} distinct keys ({args.value_bytes}-byte "
        f"values, {args.partitions} partitions; topic `{args.topic}`, {built}): it counts per "
        "key and keeps `<count>|<last value>` per key in one store (about 110 bytes per key), "
        "emitting the count. `process`: from an empty state until every record is in a "
        "committed transaction; `restore`: a second instance of the application with an "
        "empty state directory, until its store is restored from the changelog. Each runs in "
        "a fresh interpreter; peak RSS is its `VmHWM`. `no store` is the same application "
        "copying records instead: the floor of Python, eos and the Kafka clients.",
        "",
        "| setup | phase | seconds, start to done | baseline RSS MiB | peak RSS MiB | "
        "bound MiB | within |",
        "|---|---|---:|---:|---:|---:|---|",
    ]
    for r in results:
        setup = setups[str(r["setup"])]
        bound = r["bound_mib"]
        within = "-" if bound is None else ("**NO**" if _over(r) else "yes")
        lines.append(
            f"| {setup.describe()} | {r['phase']} | {r['seconds']:.1f} | "
            f"{r['baseline_rss_mib']:.0f} | {r['peak_rss_mib']:.0f} | {bound or '-'} | {within} |"
        )
    extra = "".join(f" --consumer-config {kv}" for kv in args.consumer_config)
    lines += [
        "",
        f"The bound with one RocksDB store: {FLOOR_MIB} MiB for the instance "
        "(interpreter, Kafka clients and their prefetch queues at "
        f"{args.partitions} partitions, overlay) + {ROCKSDB_FIXED_MIB} MiB of RocksDB "
        "beyond its budgets + block cache + 2 x write buffer (a memtable being flushed "
        "counts until it is on disk). It does not grow with the number of keys; it grows "
        "with the partitions an instance reads at once, through librdkafka's prefetch, "
        "which `queued.max.messages.kbytes` caps per partition (the restore consumer's must "
        "be at most 16 MiB for the restore rows to stay under it). The memory backend "
        "holds every key in the Python heap: its only bound is the data.",
        "",
        f"{versions()}; broker: Kafka on the same machine. "
        f"Run {datetime.date.today().isoformat()} with `python benchmarks/memory.py "
        f"--records {args.records} --partitions {args.partitions}{extra}`.",
        "",
    ]
    return "\n".join(lines)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--bootstrap-servers", default=os.environ.get("EOS_BOOTSTRAP_SERVERS", "localhost:9092")
    )
    parser.add_argument("--records", type=int, default=1_000_000)
    parser.add_argument("--partitions", type=int, default=4)
    parser.add_argument("--value-bytes", type=int, default=100)
    parser.add_argument("--topic", default=None, help="input topic (default: restore.py's)")
    parser.add_argument("--setups", default=DEFAULT_SETUPS)
    parser.add_argument(
        "--consumer-config", action="append", default=[], metavar="KEY=VALUE",
        help="extra librdkafka consumer setting for the application (repeatable)",
    )  # fmt: skip
    parser.add_argument(
        "--output", default="-",
        help="markdown file ('-', the default: none; restore.py writes the docs' copy)",
    )  # fmt: skip
    parser.add_argument("--measure", help=argparse.SUPPRESS)
    parser.add_argument("--phase", choices=("process", "restore"), help=argparse.SUPPRESS)
    parser.add_argument("--app-id", help=argparse.SUPPRESS)
    parser.add_argument("--state-dir", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    args.topic = args.topic or default_topic(
        args.records, args.partitions, args.value_bytes, TXN_RECORDS
    )
    return args


def run(args: argparse.Namespace, reused: bool) -> tuple[list[dict[str, object]], bool]:
    """Measure every setup of ``args.setups``; return the results and whether a peak is over."""
    setups = _setups()
    results: list[dict[str, object]] = []
    for name in args.setups.split(","):
        results += measure_setup(args, setups[name.strip()])
    return results, any(_over(r) for r in results)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.measure:
        print(json.dumps(measure(args)))
        return 0
    reused, build_seconds = build_changelog(
        args.bootstrap_servers,
        args.topic,
        args.records,
        args.partitions,
        args.value_bytes,
        TXN_RECORDS,
    )
    print(f"input {args.topic}: {'reused' if reused else f'built in {build_seconds:.1f} s'}")
    results, over = run(args, reused)
    report = render(results, args, reused)
    print()
    print(report)
    if args.output != "-":
        Path(args.output).parent.mkdir(parents=True, exist_ok=True)
        Path(args.output).write_text(report)
    return 1 if over else 0


if __name__ == "__main__":
    sys.exit(main())
