"""The PostgreSQL sink's contenders: a hand-written psycopg loop against ``PostgresProcessor``.

Both read the same input (``_harness.prepare_input``: ~100-byte values, keys
``k-<n>``, 4 partitions; its own size, ``run.py --pg-records``) and insert one
row per record into a fresh table with no unique constraint::

    INSERT INTO <table> (k, v, src) VALUES (%s, %s, %s)   -- key, value (UTF-8 text), "p/offset"

- ``bare_pg`` (the limit): a confluent-kafka consumer (eos's own consumer
  settings, as ``bare`` uses: read_committed, no auto commit) and one psycopg 3
  connection (autocommit off). It consumes batches of up to 5,000 records and
  executes the INSERT per record; every commit interval (or at
  :data:`MAX_BATCH_RECORDS` records) it upserts the batch's positions into its
  own offsets table (``INSERT ... ON CONFLICT DO UPDATE``, one statement for
  every partition; no epoch, no fencing) and commits. At assignment it seeks
  to the positions that table holds.
- ``eos_pg``: ``eos.Application`` running a ``PostgresProcessor`` whose
  ``process`` executes the same INSERT (``key_serde``/``value_serde``
  ``"string"``: the bytes decoded as bare decodes them), the same commit
  interval, eos's defaults otherwise (``commit_kafka_offsets`` on).

Measurement (:func:`measure_pg`): the table is created by this process, the
contender runs in a child process (``_harness.run_contender``) and
:class:`RowReader` counts the table's committed rows while it runs:
records/s = input records / (the contender's first consumed record -> the
moment the last row is visible). No latency phase. Afterwards every row is
read back and compared with the input record its ``src`` names
(:func:`check_rows`): exactly one row per input record, with its key and value.

Run as a script, this module is a contender process (``--contender bare_pg``
or ``eos_pg``); it finds the database's DSN in ``EOS_POSTGRES_DSN`` (set by
``run.py``; a DSN may hold a password, so it is not on the command line).
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import os
import shutil
import signal
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from types import FrameType
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _harness import (
    BENCH_DIR,
    LOG_DIR,
    Measurement,
    Spec,
    backlog_measurement,
    output_reader,
    prepare_input,
    run_contender,
    state_dir_for,
)
from _result import print_result

PG = ("bare_pg", "eos_pg")
"""The contenders measured with :func:`measure_pg`."""
DSN_ENV = "EOS_POSTGRES_DSN"
"""Where a contender process finds the database (``eos.testing.postgres.POSTGRES_DSN_ENV``)."""
MAX_CONSUME = 5000
"""Records per ``consume()`` call, as eos's sink engine."""
MAX_BATCH_RECORDS = 100_000
"""bare_pg commits at this many records at the latest (eos's ``max_batch_records`` default)."""
BARE_OFFSETS = "bench_bare_pg_offsets"
EOS_OFFSETS = "eos_offsets"
ROWS_DDL = "CREATE TABLE {} (k text, v text NOT NULL, src text NOT NULL)"
INSERT = "INSERT INTO {} (k, v, src) VALUES (%s, %s, %s)"
POLL_MIN_S = 0.01
POLL_MAX_S = 0.25


# -- the contenders (child processes) ---------------------------------------------


def run_bare_pg(args: argparse.Namespace, dsn: str) -> float | None:
    """consume a batch -> an INSERT per record -> every commit interval: upsert the
    positions, COMMIT. Positions are read back from its offsets table at assignment."""
    import psycopg
    from confluent_kafka import OFFSET_BEGINNING, Consumer, TopicPartition

    from eos.config import Config

    # eos's librdkafka consumer settings (read_committed, no auto commit, a 10 ms
    # fetch.queue.backoff.ms), so eos_pg/bare_pg compares the Python around the same clients.
    settings = Config(
        application_id=args.group, bootstrap_servers=args.bootstrap_servers, input_topics="x"
    ).consumer_settings()
    group = args.group
    conn = psycopg.connect(dsn, autocommit=False)
    cur = conn.cursor()
    cur.execute(
        f"CREATE TABLE IF NOT EXISTS {BARE_OFFSETS} (grp text, topic text, partition int,"
        " next_offset bigint NOT NULL, PRIMARY KEY (grp, topic, partition))"
    )
    conn.commit()
    insert = INSERT.format(args.table)
    upsert = (
        f"INSERT INTO {BARE_OFFSETS} (grp, topic, partition, next_offset)"
        " SELECT %s, * FROM unnest(%s::text[], %s::int[], %s::bigint[])"
        " ON CONFLICT (grp, topic, partition) DO UPDATE SET next_offset = EXCLUDED.next_offset"
    )
    positions: dict[tuple[str, int], int] = {}
    pending = 0  # records in the open transaction

    def commit() -> None:
        nonlocal pending
        if positions:
            tps = list(positions)
            cur.execute(
                upsert,
                (group, [t for t, _ in tps], [p for _, p in tps], [positions[tp] for tp in tps]),
            )
        conn.commit()
        positions.clear()
        pending = 0

    def on_assign(consumer: Consumer, partitions: list[TopicPartition]) -> None:
        query = f"SELECT topic, partition, next_offset FROM {BARE_OFFSETS} WHERE grp = %s"
        cur.execute(query, (group,))
        stored = {(t, p): o for t, p, o in cur.fetchall()}
        conn.commit()
        for tp in partitions:
            tp.offset = stored.get((tp.topic, tp.partition), OFFSET_BEGINNING)
        consumer.assign(partitions)

    def on_revoke(consumer: Consumer, partitions: list[TopicPartition]) -> None:
        if pending:
            commit()  # the rows of the partitions going away, with their positions
        consumer.unassign()

    stopping = False

    def stop(_signum: int, _frame: FrameType | None) -> None:
        nonlocal stopping
        stopping = True

    signal.signal(signal.SIGTERM, stop)
    consumer = Consumer(settings)
    consumer.subscribe(args.inputs.split(","), on_assign=on_assign, on_revoke=on_revoke)
    interval = args.commit_interval_ms / 1000
    execute = cur.execute
    started = 0.0
    first: float | None = None
    while not stopping:
        timeout = max(0.0, started + interval - time.monotonic()) if pending else 0.1
        messages = consumer.consume(MAX_CONSUME, timeout)
        if messages:
            if first is None:
                first = time.time()
            if not pending:
                started = time.monotonic()
            for msg in messages:
                if msg.error() is not None:
                    raise SystemExit(f"consume failed: {msg.error()}")
                key = msg.key()
                partition = msg.partition()
                offset = msg.offset()
                execute(
                    insert,
                    (
                        None if key is None else key.decode(),
                        msg.value().decode(),
                        f"{partition}/{offset}",
                    ),
                )
                positions[(msg.topic(), partition)] = offset + 1
            pending += len(messages)
        if pending and (pending >= MAX_BATCH_RECORDS or time.monotonic() - started >= interval):
            commit()
    if pending:
        commit()
    consumer.close()
    conn.close()
    return first


def run_eos_pg(args: argparse.Namespace, dsn: str) -> float | None:
    """eos.Application with a PostgresProcessor executing the same INSERT per record."""
    import psycopg

    import eos
    from eos.sinks.postgres import PostgresProcessor

    insert = INSERT.format(args.table)
    first: list[float] = []

    class Insert(PostgresProcessor[str, str]):
        def process(self, record: eos.Record[str, str], cur: psycopg.Cursor[Any]) -> None:
            first.append(time.time())
            # The engine looks process up once per consumed batch: from the next on,
            # records go straight to _process.
            self.process = self._process  # type: ignore[method-assign]
            self._process(record, cur)

        def _process(self, record: eos.Record[str, str], cur: psycopg.Cursor[Any]) -> None:
            cur.execute(insert, (record.key, record.value, f"{record.partition}/{record.offset}"))

    app = eos.Application(
        application_id=args.group,
        bootstrap_servers=args.bootstrap_servers,
        input_topics=args.inputs.split(","),
        processor=Insert(dsn),
        key_serde="string",
        value_serde="string",
        commit_interval_ms=args.commit_interval_ms,
        state_dir=args.state_dir,
    )
    app.run()  # until SIGTERM: Application installs the handler on the main thread
    return first[0] if first else None


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--contender", choices=PG, required=True)
    parser.add_argument("--bootstrap-servers", required=True)
    parser.add_argument("--inputs", required=True, help="comma-separated input topics")
    parser.add_argument("--table", required=True, help="the rows table (exists, empty)")
    parser.add_argument("--group", required=True, help="consumer group / application id")
    parser.add_argument("--commit-interval-ms", type=int, default=100)
    parser.add_argument("--state-dir", required=True)
    parser.add_argument("--profile", help="write a cProfile of the run here")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING, stream=sys.stderr)
    dsn = os.environ.get(DSN_ENV)
    if not dsn:
        parser.error(f"{DSN_ENV} is not set")
    run = run_bare_pg if args.contender == "bare_pg" else run_eos_pg
    if args.profile:
        import cProfile

        profiler = cProfile.Profile()
        first = profiler.runcall(run, args, dsn)
        profiler.dump_stats(args.profile)
    else:
        first = run(args, dsn)
    print_result(first)
    return 0


# -- the input, the server -----------------------------------------------------------


@dataclass(frozen=True)
class PgInput:
    """The input topic, and the row each of its records must become: ``src -> (k, v)``."""

    topic: str
    records: int
    expected: dict[str, tuple[str | None, str]]


def prepare_pg_input(bootstrap: str, records: int, keys: int) -> tuple[PgInput, bool, float]:
    """The input (made by ``prepare_input`` unless it exists), read back once.

    Returns ``(input, reused, seconds)``.
    """
    started = time.monotonic()
    topic, reused, _ = prepare_input(bootstrap, records, keys)
    expected: dict[str, tuple[str | None, str]] = {}
    consumer = output_reader(bootstrap, topic)
    try:
        deadline = time.monotonic() + 120
        while len(expected) < records and time.monotonic() < deadline:
            for msg in consumer.consume(10_000, 0.5):
                if msg.error() is None:
                    key = msg.key()
                    expected[f"{msg.partition()}/{msg.offset()}"] = (
                        None if key is None else key.decode(),
                        msg.value().decode(),
                    )
    finally:
        consumer.close()
    if len(expected) != records:
        raise RuntimeError(f"{topic}: read back {len(expected):,} records, expected {records:,}")
    return PgInput(topic, records, expected), reused, time.monotonic() - started


@contextlib.contextmanager
def postgres() -> Iterator[tuple[str, str]]:
    """PostgreSQL for the run: ``EOS_POSTGRES_DSN``'s, or a local server started here and
    removed at the end. Yields ``(dsn, description)``; the contender processes find the
    DSN in ``EOS_POSTGRES_DSN``. Raises ``PostgresSetupError`` if none can be started."""
    import psycopg

    from eos.testing.postgres import start_postgres

    external = bool(os.environ.get(DSN_ENV))
    server = start_postgres()
    previous = os.environ.get(DSN_ENV)
    os.environ[DSN_ENV] = server.dsn
    try:
        with psycopg.connect(server.dsn, autocommit=True) as conn:
            shown = {
                name: str(conn.execute(f"SHOW {name}").fetchone()[0])  # type: ignore[index]
                for name in ("server_version", "fsync", "synchronous_commit", "shared_buffers")
            }
        where = "external, EOS_POSTGRES_DSN" if external else "local, on this machine"
        version = shown["server_version"].split()[0]
        description = (
            f"PostgreSQL {version} ({where}; fsync {shown['fsync']}, synchronous_commit "
            f"{shown['synchronous_commit']}, shared_buffers {shown['shared_buffers']}), "
            f"psycopg {psycopg.__version__} ({psycopg.pq.__impl__})"
        )
        yield server.dsn, description
    finally:
        if previous is None:
            os.environ.pop(DSN_ENV, None)
        else:
            os.environ[DSN_ENV] = previous
        server.cleanup()


# -- measuring ----------------------------------------------------------------------


class RowReader(threading.Thread):
    """Counts the committed rows of ``table`` until there are ``backlog`` of them.

    ``backlog_done_at``: the wall time of the snapshot that first held
    ``backlog`` rows. It polls ``count(*)`` (a few ms at 100,000 rows) at most
    every :data:`POLL_MAX_S`, more often as the count nears the backlog, so the
    moment is known to about a commit interval without loading the server.
    """

    def __init__(self, dsn: str, table: str, backlog: int) -> None:
        import psycopg
        from psycopg import sql

        super().__init__(name=f"rows-{table}", daemon=True)
        self.count = 0
        self.backlog = backlog
        self.backlog_done_at: float | None = None
        self.error: BaseException | None = None
        self._stop_event = threading.Event()
        self._conn = psycopg.connect(dsn, autocommit=True)
        self._query = sql.SQL("SELECT count(*) FROM {}").format(sql.Identifier(table))

    def stop(self) -> None:
        self._stop_event.set()

    def run(self) -> None:
        try:
            first_row: float | None = None
            while not self._stop_event.is_set() and self.backlog_done_at is None:
                now = time.time()
                row = self._conn.execute(self._query).fetchone()
                self.count = int(row[0]) if row is not None else 0
                if self.count >= self.backlog:
                    self.backlog_done_at = now
                    break
                pause = 0.05
                if self.count:
                    first_row = first_row or now
                    rate = self.count / max(now - first_row, 0.1)
                    pause = min(POLL_MAX_S, max(POLL_MIN_S, (self.backlog - self.count) / rate / 2))
                self._stop_event.wait(pause)
        except BaseException as exc:
            self.error = exc
        finally:
            self._conn.close()


def check_rows(
    dsn: str, table: str, expected: dict[str, tuple[str | None, str]]
) -> tuple[int, int, list[str]]:
    """Every row of ``table`` against the record its ``src`` names.

    Returns ``(rows, wrong, examples)``: wrong counts the rows of no input
    record, second rows of one record, and rows whose key or value is not the
    record's. Missing rows show as ``rows`` short of the input.
    """
    import psycopg
    from psycopg import sql

    seen: set[str] = set()
    rows = wrong = 0
    examples: list[str] = []
    query = sql.SQL("SELECT k, v, src FROM {}").format(sql.Identifier(table))
    with psycopg.connect(dsn, autocommit=True) as conn:
        for k, v, src in conn.execute(query):
            rows += 1
            want = expected.get(src)
            if want is None or src in seen or want != (k, v):
                wrong += 1
                if len(examples) < 5:
                    why = "no such record" if want is None else "again" if src in seen else "k, v"
                    examples.append(f"{src}: {why}")
            seen.add(src)
    return rows, wrong, examples


def _drop(dsn: str, table: str, group: str) -> None:
    """Drop the rows table and the run's offsets rows (a shared server keeps nothing)."""
    import psycopg
    from psycopg import sql

    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute(sql.SQL("DROP TABLE IF EXISTS {}").format(sql.Identifier(table)))
        for offsets, column in ((BARE_OFFSETS, "grp"), (EOS_OFFSETS, "application")):
            with contextlib.suppress(psycopg.errors.UndefinedTable):
                conn.execute(
                    sql.SQL("DELETE FROM {} WHERE {} = %s").format(
                        sql.Identifier(offsets), sql.Identifier(column)
                    ),
                    (group,),
                )


def pg_spec(name: str) -> Spec:
    return Spec(name, [sys.executable, str(BENCH_DIR / "_postgres.py"), "--contender", name])


def measure_pg(
    spec: Spec,
    *,
    bootstrap: str,
    dsn: str,
    workload: PgInput,
    commit_interval_ms: int,
    run_id: str,
    timeout_s: float,
    profile_dir: Path | None = None,
) -> Measurement:
    """One run of a PostgreSQL contender over ``workload``; see the module docstring."""
    import psycopg
    from psycopg import sql

    tag = f"{spec.name.replace('_', '-')}-{run_id}"
    table = f"bench_{spec.name}_{run_id.replace('-', '_')}"
    group = f"eos-bench-{tag}"
    state_dir = state_dir_for(tag)
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute(sql.SQL("DROP TABLE IF EXISTS {}").format(sql.Identifier(table)))
        conn.execute(sql.SQL(ROWS_DDL).format(sql.Identifier(table)))
    argv = [
        *spec.argv,
        "--bootstrap-servers", bootstrap,
        "--inputs", workload.topic,
        "--table", table,
        "--group", group,
        "--commit-interval-ms", str(commit_interval_ms),
        "--state-dir", str(state_dir),
    ]  # fmt: skip
    if profile_dir is not None:
        profile_dir.mkdir(parents=True, exist_ok=True)
        argv += ["--profile", str(profile_dir / f"{tag}.prof")]
    reader = RowReader(dsn, table, workload.records)
    reader.start()
    try:
        result = run_contender(
            spec.name,
            argv,
            reader,
            expected=workload.records,
            timeout_s=timeout_s,
            log_path=LOG_DIR / f"{tag}.log",
        )
        reader.count, wrong, examples = check_rows(dsn, table, workload.expected)
    finally:
        _drop(dsn, table, group)
        shutil.rmtree(state_dir, ignore_errors=True)
    return backlog_measurement(
        spec.name,
        workload.records,
        workload.records,
        reader,
        result,
        what="input records (rows)",
        wrong=wrong,
        examples=examples,
    )


if __name__ == "__main__":
    sys.exit(main())
