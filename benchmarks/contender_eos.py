"""Benchmark contenders that run in the project's environment (started by run.py).

``bare``          a minimal hand-written confluent-kafka exactly-once loop: the
                  practical limit for Python on librdkafka
``bare_stateful`` ``bare`` counting per key in RocksDB (rocksdict, one
                  WriteBatch per partition per commit), the output per record,
                  and at the commit eos_stateful's changelog (one record per
                  key updated) in the transaction: the practical limit of a
                  durable stateful loop
``eos``           eos, exactly_once_v2
``eos_alos``      eos, at_least_once
``eos_stateful``  eos, exactly_once_v2, count per key in a RocksDB store
``eos_stateful_batch`` eos_stateful's count as an ``eos.BatchProcessor``: one
                  ``process_batch`` per run of a partition's records
``eos_windowed``  eos, exactly_once_v2, the DSL's tumbling-window count with
                  ``.final()`` (RocksDB window store)
``eos_join``      eos, exactly_once_v2, the DSL's stream-table join of the orders
                  (``--inputs``) with the customers table (``--table``, RocksDB)
``eos_sync``      eos, exactly_once_v2, a blocking HTTP call per record
                  (``http.client``, keep-alive) to ``--service-url``
``eos_async``     eos, exactly_once_v2, an ``AsyncProcessor`` making the same call
                  with ``--max-in-flight`` records at once (``_http.HttpClient``)
``eos_async_sleep`` eos_async with the call replaced by a sleep of the service's
                  latency: the engine without an HTTP stack

Stateless contenders emit ``value.upper()`` under the input key; stateful ones
emit the key's new count (``b"%d"``); the windowed one emits one final count
per (key, window) as ``{"start", "end", "n"}`` JSON under the key; the join
emits ``{**order, "tier": customer["tier"]}`` JSON under the order's key; the
HTTP ones emit ``value + b"|" + tier``, the tier from the service's JSON answer
for the key (see ``_async.py``). Each
runs until SIGTERM, commits what it processed, and prints
``_result.print_result`` as its last stdout line.
"""

from __future__ import annotations

import argparse
import logging
import signal
import sys
import time
from collections.abc import Callable
from types import FrameType
from typing import Any

from _result import print_result

CONTENDERS = (
    "bare",
    "bare_stateful",
    "eos",
    "eos_alos",
    "eos_stateful",
    "eos_stateful_batch",
    "eos_windowed",
    "eos_join",
    "eos_sync",
    "eos_async",
    "eos_async_sleep",
)


BatchHandler = Callable[[list[Any]], None]
"""Processes one consumed batch inside the open transaction: produces its outputs and
records each partition's next offset in the positions dict it was made with."""


def _bare_loop(
    args: argparse.Namespace,
    make_handler: Callable[[Any, dict[tuple[str, int], int]], BatchHandler],
    *,
    before_commit: Callable[[], None] = lambda: None,
    after_commit: Callable[[], None] = lambda: None,
) -> float | None:
    """The hand-written exactly-once loop of ``bare`` and ``bare_stateful``.

    consume a batch -> ``make_handler(producer, positions)(batch)`` produces in the
    open transaction -> every commit interval: ``before_commit()`` (still in the
    transaction), send offsets, commit, ``after_commit()``. Outside a
    transaction it waits for ONE record (``poll``) and then takes what is already
    queued: ``consume(n, timeout)`` waits for n records or the whole timeout,
    which would hold an idle loop's first record back by up to the timeout.
    """
    from confluent_kafka import Consumer, Producer, TopicPartition

    from eos.config import Config

    # The same librdkafka settings eos uses, so the comparison is of the Python around them.
    settings = Config(
        application_id=args.group, bootstrap_servers=args.bootstrap_servers, input_topics="x"
    )
    consumer = Consumer(settings.consumer_settings())
    producer = Producer(settings.producer_settings())
    producer.init_transactions(60)
    stopping = False

    def stop(_signum: int, _frame: FrameType | None) -> None:
        nonlocal stopping
        stopping = True

    signal.signal(signal.SIGTERM, stop)
    consumer.subscribe(args.inputs.split(","))
    interval = args.commit_interval_ms / 1000
    positions: dict[tuple[str, int], int] = {}
    handle = make_handler(producer, positions)
    in_txn = False
    started = 0.0
    first: float | None = None

    def commit() -> None:
        before_commit()
        offsets = [TopicPartition(t, p, o) for (t, p), o in positions.items()]
        producer.send_offsets_to_transaction(offsets, consumer.consumer_group_metadata())
        producer.commit_transaction()
        positions.clear()
        after_commit()

    while not stopping:
        if in_txn:
            messages = consumer.consume(5000, max(0.0, started + interval - time.monotonic()))
        else:
            one = consumer.poll(0.1)
            messages = [one, *consumer.consume(4999, 0)] if one is not None else []
        if messages:
            if first is None:
                first = time.time()
            if not in_txn:
                producer.begin_transaction()
                in_txn = True
                started = time.monotonic()
            handle(messages)
        if in_txn and time.monotonic() - started >= interval:
            commit()
            in_txn = False
    if in_txn:
        commit()
    consumer.close()
    return first


def run_bare(args: argparse.Namespace) -> float | None:
    """consume batch -> produce -> every commit interval: send offsets, commit."""
    output = args.output

    def make_handler(producer: Any, positions: dict[tuple[str, int], int]) -> BatchHandler:
        produce = producer.produce

        def handle(messages: list[Any]) -> None:
            for msg in messages:
                if msg.error() is not None:
                    raise SystemExit(f"consume failed: {msg.error()}")
                while True:
                    try:
                        produce(output, msg.value().upper(), msg.key())
                        break
                    except BufferError:
                        producer.poll(0.05)
                positions[(msg.topic(), msg.partition())] = msg.offset() + 1

        return handle

    return _bare_loop(args, make_handler)


STORE = "counts"
"""The store of ``eos_stateful`` (and the name ``bare_stateful``'s changelog is named after)."""


def count_handler(
    produce: Callable[..., None],
    wait: Callable[[], None],
    positions: dict[tuple[str, int], int],
    dirty: dict[int, dict[bytes, bytes]],
    database: Callable[[int], Any],
    output: str,
) -> BatchHandler:
    """``bare_stateful``'s per-record work, a batch at a time: per record the count
    from the partition's ``dirty`` dict, else from ``database(partition).get``; the
    new count (``b"%d"``) into the dict; the output produced (``wait()`` while the
    queue is full); the partition's next offset into ``positions``."""

    def handle(messages: list[Any]) -> None:
        current = -1
        counts: dict[bytes, bytes] = {}
        db: Any = None
        for msg in messages:
            if msg.error() is not None:
                raise SystemExit(f"consume failed: {msg.error()}")
            partition = msg.partition()
            if partition != current:
                current = partition
                counts = dirty.setdefault(partition, {})
                db = database(partition)
            key = msg.key()
            old = counts.get(key)
            if old is None:
                old = db.get(key)
            value = b"%d" % (int(old) + 1 if old is not None else 1)
            counts[key] = value
            while True:
                try:
                    produce(output, value, key)
                    break
                except BufferError:
                    wait()
            positions[(msg.topic(), partition)] = msg.offset() + 1

    return handle


def run_bare_stateful(args: argparse.Namespace) -> float | None:
    """``bare`` counting per key in RocksDB, as a careful hand-written loop would.

    Per input partition one rocksdict database (raw bytes, RocksDB's default
    options) and a dict of the open transaction's counts (serialized as
    ``eos_stateful`` stores them: JSON, ``b"%d"``). Per record: the count from
    the dict, else from RocksDB; the new count into the dict; the output (the
    count under the input key) produced in the transaction. At the commit, still
    in the transaction: one changelog record per key updated, its last count, to
    ``<group>-counts-changelog`` partition = the input partition (what
    ``eos_stateful`` produces; the topic made as eos makes it); then offsets,
    commit; then one ``WriteBatch`` per partition into RocksDB. No delivery
    reports, no checkpoint, no restore: the practical limit of a durable stateful
    loop on this client.
    """
    import os
    import tempfile

    import rocksdict
    from confluent_kafka.admin import AdminClient

    from eos.state.topics import changelog_topic, ensure_changelog_topics

    output = args.output
    changelog = changelog_topic(args.group, STORE)
    ensure_changelog_topics(
        AdminClient({"bootstrap.servers": args.bootstrap_servers}),
        application_id=args.group,
        input_topics=args.inputs.split(","),
        stores=[STORE],
    )
    os.makedirs(args.state_dir, exist_ok=True)  # removed with it after the run
    directory = tempfile.mkdtemp(prefix="bare-stateful-", dir=args.state_dir)
    databases: dict[int, Any] = {}
    dirty: dict[int, dict[bytes, bytes]] = {}
    producers: list[Any] = []

    def database(partition: int) -> Any:
        db = databases.get(partition)
        if db is None:
            db = databases[partition] = rocksdict.Rdict(
                f"{directory}/{partition}", options=rocksdict.Options(raw_mode=True)
            )
        return db

    def make_handler(producer: Any, positions: dict[tuple[str, int], int]) -> BatchHandler:
        producers.append(producer)
        return count_handler(
            producer.produce, lambda: producer.poll(0.05), positions, dirty, database, output
        )

    def before_commit() -> None:
        produce = producers[0].produce
        for partition, counts in dirty.items():
            for key, value in counts.items():
                while True:
                    try:
                        produce(changelog, value, key, partition)
                        break
                    except BufferError:
                        producers[0].poll(0.05)

    def after_commit() -> None:
        for partition, counts in dirty.items():
            if counts:
                batch = rocksdict.WriteBatch(raw_mode=True)
                for key, value in counts.items():
                    batch.put(key, value)
                databases[partition].write(batch)
                counts.clear()

    try:
        return _bare_loop(
            args, make_handler, before_commit=before_commit, after_commit=after_commit
        )
    finally:
        for db in databases.values():
            db.close()


def run_eos(args: argparse.Namespace) -> float | None:
    """eos with the contender's processing guarantee; stateful counts per key."""
    import eos

    output = args.output
    first: list[float] = []

    class Upper(eos.Processor):
        def process(self, record: eos.Record, ctx: eos.Context) -> None:
            first.append(time.time())
            self.process = self._process  # type: ignore[method-assign]
            self._process(record, ctx)

        def _process(self, record: eos.Record, ctx: eos.Context) -> None:
            ctx.send(output, record.value.upper(), key=record.key)  # type: ignore[attr-defined]

    class Count(eos.Processor):
        stores = (eos.Store(STORE, key_serde="bytes", value_serde="json"),)

        def process(self, record: eos.Record, ctx: eos.Context) -> None:
            first.append(time.time())
            self.process = self._process  # type: ignore[method-assign]
            self._process(record, ctx)

        def _process(self, record: eos.Record, ctx: eos.Context) -> None:
            counts = ctx.store(STORE)
            key = record.key
            n = counts.get(key, 0) + 1  # type: ignore[operator]
            counts[key] = n
            ctx.send(output, b"%d" % n, key=key)

    class CountBatch(eos.BatchProcessor):
        stores = (eos.Store(STORE, key_serde="bytes", value_serde="json"),)

        def process_batch(self, batch: eos.RecordBatch, ctx: eos.Context) -> None:
            if not first:
                first.append(time.time())
            counts = ctx.store(STORE)
            send = ctx.send
            for key in batch.keys:
                n = counts.get(key, 0) + 1  # type: ignore[operator]
                counts[key] = n
                send(output, b"%d" % n, key=key)

    processors: dict[str, Callable[[], eos.Processor]] = {
        "eos_stateful": Count,
        "eos_stateful_batch": CountBatch,
    }
    registry = None
    if args.metrics:
        from prometheus_client import CollectorRegistry

        registry = CollectorRegistry()
    app = eos.Application(
        application_id=args.group,
        bootstrap_servers=args.bootstrap_servers,
        input_topics=args.inputs.split(","),
        processor=processors.get(args.contender, Upper)(),
        processing_guarantee="at_least_once" if args.contender == "eos_alos" else "exactly_once_v2",
        commit_interval_ms=args.commit_interval_ms,
        state_dir=args.state_dir,
        metrics_registry=registry,
    )
    if registry is not None and args.scrape_interval_s > 0:
        _scrape_periodically(registry, args.scrape_interval_s)
    app.run()  # until SIGTERM: Application installs the handler on the main thread
    return first[0] if first else None


def run_eos_windowed(args: argparse.Namespace) -> float | None:
    """eos's DSL: group_by_key().windowed_by(TumblingWindows).count().final()."""
    import eos

    builder = eos.StreamBuilder()
    for i, topic in enumerate(args.inputs.split(",")):
        (
            # String keys: the window store's keys are JSON (its default serde), which
            # has no bytes.
            builder.stream(topic, key_serde="string")
            .group_by_key()
            .windowed_by(eos.TumblingWindows(size_ms=args.window_ms, grace_ms=args.grace_ms))
            .count(store=f"per-window-{i}")
            .final()
            .to_stream()
            .map(lambda wk, n: (wk.key, {"start": wk.start, "end": wk.end, "n": n}))
            .to(args.output, key_serde="string", value_serde="json")
        )
    processor = builder.build()
    process = processor.process
    first: list[float] = []

    def note_first(record: eos.Record, ctx: eos.Context) -> None:
        # The engine looks process up once per polled batch: from the next batch
        # on, records go straight to the compiled graph.
        if not first:
            first.append(time.time())
            processor.process = process  # type: ignore[method-assign]
        process(record, ctx)

    processor.process = note_first  # type: ignore[method-assign]
    app = eos.Application(
        application_id=args.group,
        bootstrap_servers=args.bootstrap_servers,
        processor=processor,
        processing_guarantee="exactly_once_v2",
        commit_interval_ms=args.commit_interval_ms,
        state_dir=args.state_dir,
    )
    app.run()  # until SIGTERM
    return first[0] if first else None


def run_eos_join(args: argparse.Namespace) -> float | None:
    """eos's DSL: ``orders.join(customers_table, joiner).to(output)``."""
    import eos

    first: list[float] = []

    def joiner(order: Any, customer: Any) -> dict[str, Any]:
        if not first:  # the first joined order (the table's records reach no joiner)
            first.append(time.time())
        return {**order, "tier": customer["tier"]}

    builder = eos.StreamBuilder()
    customers = builder.table(args.table, store="customers")
    orders = builder.stream(args.inputs)
    orders.join(customers, joiner).to(args.output)
    app = eos.Application(
        application_id=args.group,
        bootstrap_servers=args.bootstrap_servers,
        processor=builder.build(),
        key_serde="string",
        value_serde="json",
        processing_guarantee="exactly_once_v2",
        commit_interval_ms=args.commit_interval_ms,
        state_dir=args.state_dir,
    )
    app.run()  # until SIGTERM
    return first[0] if first else None


def run_eos_http(args: argparse.Namespace) -> float | None:
    """A call to the HTTP service per record: blocking (eos_sync), awaited (eos_async), or
    replaced by ``await asyncio.sleep(latency)`` and the answer it would give
    (eos_async_sleep: the engine without an HTTP stack)."""
    import asyncio
    import http.client
    import json

    from _http import LATENCY_MS, PATH_PREFIX, HttpClient, answer

    import eos

    output = args.output
    url = args.service_url
    first: list[float] = []

    class SyncEnrich(eos.Processor):
        """One keep-alive ``http.client`` connection, one request at a time."""

        def __init__(self) -> None:
            host, _, port = url.removeprefix("http://").partition(":")
            self.http = http.client.HTTPConnection(host, int(port))

        def process(self, record: eos.Record, ctx: eos.Context) -> None:
            if not first:
                first.append(time.time())
            key: bytes = record.key  # type: ignore[assignment]
            self.http.request("GET", PATH_PREFIX + key.decode())
            response = self.http.getresponse()
            body = response.read()
            if response.status != 200:
                raise RuntimeError(f"HTTP {response.status}: {body[:100]!r}")
            tier = json.loads(body)["tier"]
            ctx.send(output, record.value + b"|" + tier.encode(), key=key)  # type: ignore[operator]

        def close(self) -> None:
            self.http.close()

    class AsyncEnrich(eos.AsyncProcessor):
        """``max_in_flight`` records at once on eos's processing loop."""

        async def setup(self) -> None:
            self.http = HttpClient(url, connections=args.max_in_flight)

        async def process(self, record: eos.Record, ctx: eos.Context) -> None:  # type: ignore[override]
            if not first:
                first.append(time.time())
            key: bytes = record.key  # type: ignore[assignment]
            body = await self.http.get(PATH_PREFIX + key.decode())
            tier = json.loads(body)["tier"]
            ctx.send(output, record.value + b"|" + tier.encode(), key=key)  # type: ignore[operator]

        async def teardown(self) -> None:
            await self.http.close()

    class SleepEnrich(eos.AsyncProcessor):
        """As AsyncEnrich, the call replaced by a sleep of the service's latency."""

        async def process(self, record: eos.Record, ctx: eos.Context) -> None:  # type: ignore[override]
            if not first:
                first.append(time.time())
            key: bytes = record.key  # type: ignore[assignment]
            await asyncio.sleep(LATENCY_MS / 1000)
            tier = json.loads(answer(key))["tier"]
            ctx.send(output, record.value + b"|" + tier.encode(), key=key)  # type: ignore[operator]

    processors = {"eos_sync": SyncEnrich, "eos_async": AsyncEnrich, "eos_async_sleep": SleepEnrich}
    is_async = args.contender != "eos_sync"
    app = eos.Application(
        application_id=args.group,
        bootstrap_servers=args.bootstrap_servers,
        input_topics=args.inputs.split(","),
        processor=processors[args.contender](),
        processing_guarantee="exactly_once_v2",
        commit_interval_ms=args.commit_interval_ms,
        state_dir=args.state_dir,
        **({"max_in_flight": args.max_in_flight} if is_async else {}),
    )
    app.run()  # until SIGTERM
    return first[0] if first else None


def _scrape_periodically(registry: object, interval_s: float) -> None:
    """Render the registry as a Prometheus scrape would, on a daemon thread."""
    import threading

    from prometheus_client import generate_latest

    def scrape() -> None:
        while True:
            time.sleep(interval_s)
            generate_latest(registry)  # type: ignore[arg-type]

    threading.Thread(target=scrape, name="scraper", daemon=True).start()


def _with_py_spy(
    run: Callable[[argparse.Namespace], float | None], args: argparse.Namespace
) -> float | None:
    """Sample this process with py-spy (``pip install py-spy``; needs ptrace rights)."""
    import os
    import shutil
    import subprocess

    spy = shutil.which("py-spy") or os.path.join(os.path.dirname(sys.executable), "py-spy")
    argv = [spy, "record", "--pid", str(os.getpid()), "--rate", "250", "--format", "raw"]
    if os.environ.get("PY_SPY_IDLE"):
        argv.append("--idle")
    sampler = subprocess.Popen([*argv, "-o", args.py_spy], stdout=subprocess.DEVNULL)
    try:
        return run(args)
    finally:
        sampler.send_signal(signal.SIGINT)
        sampler.wait(60)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--contender", choices=CONTENDERS, required=True)
    parser.add_argument("--bootstrap-servers", required=True)
    parser.add_argument("--inputs", required=True, help="comma-separated input topics")
    parser.add_argument("--output", required=True)
    parser.add_argument("--group", required=True, help="consumer group / application id")
    parser.add_argument("--commit-interval-ms", type=int, default=100)
    parser.add_argument("--state-dir", required=True)
    parser.add_argument("--metrics", action="store_true", help="eos: metrics_registry on")
    parser.add_argument("--scrape-interval-s", type=float, default=0.0)
    parser.add_argument("--profile", help="write a cProfile of the run here")
    parser.add_argument("--py-spy", help="sample the run with py-spy into this raw file")
    parser.add_argument("--window-ms", type=int, default=60_000, help="windowed: window size")
    parser.add_argument("--grace-ms", type=int, default=0, help="windowed: grace period")
    parser.add_argument("--table", help="join: the customers table topic")
    parser.add_argument("--service-url", help="eos_sync, eos_async: the HTTP service")
    parser.add_argument("--max-in-flight", type=int, default=200, help="eos_async*")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING, stream=sys.stderr)
    runs = {
        "bare": run_bare,
        "bare_stateful": run_bare_stateful,
        "eos_windowed": run_eos_windowed,
        "eos_join": run_eos_join,
        "eos_sync": run_eos_http,
        "eos_async": run_eos_http,
        "eos_async_sleep": run_eos_http,
    }
    run = runs.get(args.contender, run_eos)
    if args.py_spy:
        first = _with_py_spy(run, args)
    elif args.profile:
        import cProfile

        profiler = cProfile.Profile()
        first = profiler.runcall(run, args)
        profiler.dump_stats(args.profile)
    else:
        first = run(args)
    print_result(first)
    return 0


if __name__ == "__main__":
    sys.exit(main())
