"""PostgresProcessor against a real broker and PostgreSQL: rows, offsets, policies, limits."""

from __future__ import annotations

import json
import logging
import time
from typing import Any

import psycopg
import pytest
from apprunner import AppThread
from prometheus_client import CollectorRegistry

import eos
from eos.errors import ConfigError, ProcessingError, SinkUnavailableError
from eos.sinks.postgres import PostgresProcessor
from eos.sinks.postgres._engine import PostgresEngine
from eos.sinks.postgres._offsets import OffsetsTable
from eos.testing.helpers import (
    committed_offsets,
    create_topic,
    produce,
    read_topic,
    unique_name,
    watermarks,
)
from eos.testing.postgres import PostgresServer

pytestmark = pytest.mark.integration


class SaveOrders(PostgresProcessor[str, dict[str, Any]]):
    """Inserts each order; the table's CHECK refuses a negative total."""

    def __init__(self, dsn: str, table: str, **options: Any) -> None:
        super().__init__(dsn, **options)
        self.table = table

    def setup(self, cur: psycopg.Cursor[Any]) -> None:
        cur.execute(
            f"CREATE TABLE IF NOT EXISTS {self.table} "
            "(id int NOT NULL, total int NOT NULL CHECK (total >= 0), src text NOT NULL)"
        )

    def process(self, record: eos.Record[str, dict[str, Any]], cur: psycopg.Cursor[Any]) -> None:
        order = record.value
        cur.execute(
            f"INSERT INTO {self.table} (id, total, src) VALUES (%s, %s, %s)",
            (order["id"], order["total"], f"{record.partition}/{record.offset}"),
        )


def _orders(ids: range, bad: set[int] = frozenset()) -> list[tuple[str, str]]:  # type: ignore[assignment]
    return [(f"c{i % 7}", json.dumps({"id": i, "total": -5 if i in bad else i})) for i in ids]


def _rows(dsn: str, table: str) -> dict[int, int]:
    with psycopg.connect(dsn, autocommit=True) as conn:
        if conn.execute("SELECT to_regclass(%s)", (table,)).fetchone()[0] is None:  # type: ignore[index]
            return {}
        rows = conn.execute(f"SELECT id, count(*) FROM {table} GROUP BY id").fetchall()
    return {int(i): int(n) for i, n in rows}


def _wait(check: Any, what: str, thread: AppThread, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if thread.error is not None:
            raise AssertionError(f"the app failed while waiting for {what}") from thread.error
        if time.monotonic() > deadline:
            raise TimeoutError(what)
        time.sleep(0.1)


def _app(
    bootstrap: str, topic: str, processor: PostgresProcessor[Any, Any], **kw: Any
) -> eos.Application:
    return eos.Application(
        application_id=unique_name("pg"),
        bootstrap_servers=bootstrap,
        input_topics=[topic],
        key_serde="string",
        value_serde="json",
        processor=processor,
        **kw,
    )


def _offsets(dsn: str, app_id: str) -> dict[int, tuple[int | None, int]]:
    with psycopg.connect(dsn, autocommit=True) as conn:
        rows = conn.execute(
            "SELECT partition, next_offset, epoch FROM eos_offsets WHERE application = %s",
            (app_id,),
        ).fetchall()
    return {int(p): (n, int(e)) for p, n, e in rows}


def test_rows_and_offsets_commit_together_and_a_restart_trusts_only_the_table(
    bootstrap, postgres_dsn, app_threads
) -> None:
    """Each order becomes one row and eos_offsets holds the ends, with no offsets in the
    consumer group (``commit_kafka_offsets=False``): a restart resumes from the table, not
    from Kafka (which would replay from the start), and writes no duplicate; with the default
    the group's offsets follow the table's for lag tools."""
    topic = create_topic(bootstrap, unique_name("orders"), 2)
    table = unique_name("orders").replace("-", "_")
    produce(bootstrap, topic, _orders(range(200)))
    registry = CollectorRegistry()
    app = _app(
        bootstrap,
        topic,
        SaveOrders(postgres_dsn, table, commit_kafka_offsets=False),
        metrics_registry=registry,
    )
    app_id = app.config.application_id
    first = AppThread(app).start()
    app_threads.append(first)
    _wait(lambda: len(_rows(postgres_dsn, table)) == 200, "200 rows", first)
    ends = {p: high for p, (_low, high) in watermarks(bootstrap, topic).items()}
    _wait(
        lambda: {p: n for p, (n, _e) in _offsets(postgres_dsn, app_id).items()} == ends,
        "eos_offsets at the topic's ends",
        first,
    )
    labels = {"application_id": app_id, "sink": "postgres"}
    assert registry.get_sample_value("eos_sink_rows_committed_total", labels) == 200
    assert registry.get_sample_value("eos_sink_commit_duration_seconds_count", labels)
    app.stop()
    first.thread.join(60)
    assert first.error is None
    assert all(o < 0 for o in committed_offsets(bootstrap, app_id, topic).values())
    produce(bootstrap, topic, _orders(range(200, 260)))
    second = AppThread(
        eos.Application.from_config(app.config, SaveOrders(postgres_dsn, table))
    ).start()
    app_threads.append(second)
    _wait(lambda: len(_rows(postgres_dsn, table)) == 260, "260 rows", second)
    ends = {p: high for p, (_low, high) in watermarks(bootstrap, topic).items()}
    _wait(
        lambda: committed_offsets(bootstrap, app_id, topic) == ends,
        "the group's offsets at the ends (commit_kafka_offsets=True)",
        second,
    )
    second.app.stop()
    second.thread.join(60)
    assert second.error is None
    assert _rows(postgres_dsn, table) == dict.fromkeys(range(260), 1)
    epochs = {p: e for p, (_n, e) in _offsets(postgres_dsn, app_id).items()}
    assert all(e >= 2 for e in epochs.values()), epochs  # every assignment bumped the epoch


def test_records_handed_out_again_inside_one_batch_are_written_once(
    bootstrap, postgres_dsn, app_threads, monkeypatch, caplog
) -> None:
    """The first polled batch of 20 or more records is processed as those records followed
    by the same records again (librdkafka can hand a partition out again from its start in
    the middle of a poll): each order is still one row, and the step back is logged."""
    caplog.set_level(logging.WARNING, logger="eos.engine")
    topic = create_topic(bootstrap, unique_name("orders"), 1)
    table = unique_name("orders").replace("-", "_")
    produce(bootstrap, topic, _orders(range(200)))
    doubled: list[int] = []
    process = PostgresEngine._process

    def twice(engine: PostgresEngine, messages: Any) -> None:
        records = [m for m in messages if m.error() is None]
        if not doubled and len(records) >= 20:
            doubled.append(len(records))
            messages = [*messages, *records]
        process(engine, messages)

    monkeypatch.setattr(PostgresEngine, "_process", twice)
    app = _app(bootstrap, topic, SaveOrders(postgres_dsn, table))
    thread = AppThread(app).start()
    app_threads.append(thread)
    _wait(lambda: len(_rows(postgres_dsn, table)) == 200, "200 rows", thread)
    ends = {p: high for p, (_low, high) in watermarks(bootstrap, topic).items()}
    app_id = app.config.application_id
    _wait(lambda: committed_offsets(bootstrap, app_id, topic) == ends, "the offsets", thread)
    app.stop()
    thread.thread.join(60)
    assert thread.error is None
    assert doubled, "no polled batch had 20 records"
    assert _rows(postgres_dsn, table) == dict.fromkeys(range(200), 1)
    assert any("already processed" in r.getMessage() for r in caplog.records)


def test_a_refused_row_is_dead_lettered_alone_with_the_database_message(
    bootstrap, postgres_dsn, app_threads
) -> None:
    """Orders the table's CHECK refuses reach the dead-letter topic with the SQLSTATE and the
    database's message; every other order of their batches is written exactly once."""
    topic = create_topic(bootstrap, unique_name("orders"), 1)
    dlq = create_topic(bootstrap, unique_name("dlq"), 1)
    table = unique_name("orders").replace("-", "_")
    bad = {13, 77, 78, 150}
    produce(bootstrap, topic, _orders(range(200), bad))
    app = _app(
        bootstrap,
        topic,
        SaveOrders(postgres_dsn, table),
        processing_error_policy="dead_letter",
        dead_letter_topic=dlq,
    )
    thread = AppThread(app).start()
    app_threads.append(thread)
    _wait(lambda: len(_rows(postgres_dsn, table)) == 200 - len(bad), "the good rows", thread)
    app.stop()
    thread.thread.join(60)
    assert _rows(postgres_dsn, table) == {i: 1 for i in range(200) if i not in bad}
    dead = read_topic(bootstrap, dlq, timeout=10)
    assert sorted(json.loads(r.value)["id"] for r in dead) == sorted(bad)  # type: ignore[arg-type]
    headers = dict(dead[0].headers)
    assert headers["eos.error.sqlstate"] == b"23514"
    assert b"violates check constraint" in (headers["eos.error.message"] or b"")
    assert headers["eos.error.type"] == b"CheckViolation"
    assert app.state.processed_count >= 200


def test_skip_counts_the_refused_rows_and_fail_commits_nothing_of_the_batch(
    bootstrap, postgres_dsn, app_threads
) -> None:
    """Under ``skip`` the refused orders are counted and the rest written; under ``fail`` the
    instance stops with ProcessingError naming the record, and its batch is not committed."""
    topic = create_topic(bootstrap, unique_name("orders"), 1)
    table = unique_name("orders").replace("-", "_")
    produce(bootstrap, topic, _orders(range(100), {40}))
    skipping = _app(
        bootstrap, topic, SaveOrders(postgres_dsn, table), processing_error_policy="skip"
    )
    thread = AppThread(skipping).start()
    app_threads.append(thread)
    _wait(lambda: len(_rows(postgres_dsn, table)) == 99, "99 rows", thread)
    _wait(lambda: skipping._stats.skipped == 1, "one skipped record", thread)
    skipping.stop()
    thread.thread.join(60)

    topic2 = create_topic(bootstrap, unique_name("orders"), 1)
    table2 = unique_name("orders").replace("-", "_")
    produce(bootstrap, topic2, _orders(range(30)))
    failing = _app(
        bootstrap, topic2, SaveOrders(postgres_dsn, table2), processing_error_policy="fail"
    )
    thread2 = AppThread(failing).start()
    app_threads.append(thread2)
    _wait(lambda: len(_rows(postgres_dsn, table2)) == 30, "30 rows", thread2)
    produce(bootstrap, topic2, _orders(range(30, 60), {45}))
    thread2.thread.join(60)
    assert isinstance(thread2.error, ProcessingError), thread2.error
    assert thread2.error.offset == 45
    rows = _rows(postgres_dsn, table2)
    assert 45 not in rows and all(n == 1 for n in rows.values())
    ((next_offset, _epoch),) = _offsets(postgres_dsn, failing.config.application_id).values()
    assert next_offset is not None and next_offset <= 45
    assert set(rows) == set(range(next_offset))  # exactly what the table's position covers


def test_a_statement_that_can_never_work_stops_the_instance(bootstrap, postgres_dsn) -> None:
    """A missing table is a ConfigError (not a poison record under ``skip``), and a processor
    that commits the transaction itself is stopped with a ConfigError."""
    topic = create_topic(bootstrap, unique_name("orders"), 1)
    produce(bootstrap, topic, _orders(range(5)))

    class Missing(PostgresProcessor[str, dict[str, Any]]):
        def process(
            self, record: eos.Record[str, dict[str, Any]], cur: psycopg.Cursor[Any]
        ) -> None:
            cur.execute("INSERT INTO no_such_table_here (id) VALUES (%s)", (record.value["id"],))

    with pytest.raises(ConfigError, match="UndefinedTable"):
        _app(bootstrap, topic, Missing(postgres_dsn), processing_error_policy="skip").run()

    table = unique_name("orders").replace("-", "_")

    class Commits(SaveOrders):
        def process(
            self, record: eos.Record[str, dict[str, Any]], cur: psycopg.Cursor[Any]
        ) -> None:
            super().process(record, cur)
            cur.connection.commit()

    with pytest.raises(ConfigError, match="the engine owns the transaction"):
        _app(bootstrap, topic, Commits(postgres_dsn, table), processing_error_policy="skip").run()
    assert _rows(postgres_dsn, table) == {}


def test_an_unreachable_database_stops_after_the_outage_limit_without_the_password(
    bootstrap, caplog
) -> None:
    """With nothing listening at the DSN, start-up retries with backoff and then raises
    SinkUnavailableError after outage_timeout_s; neither it nor the log shows the password."""
    topic = create_topic(bootstrap, unique_name("orders"), 1)
    port = PostgresServer().port  # a free port nothing listens on
    dsn = f"postgresql://eos:s3cret-pw@127.0.0.1:{port}/eos"
    caplog.set_level(logging.INFO)
    app = _app(
        bootstrap,
        topic,
        SaveOrders(dsn, "never", outage_timeout_s=1.5, connect_timeout_s=1),
    )
    started = time.monotonic()
    with pytest.raises(SinkUnavailableError, match=r"outage_timeout_s=1\.5") as raised:
        app.run()
    assert 1.5 <= time.monotonic() - started < 30
    assert "s3cret-pw" not in str(raised.value)
    assert "s3cret-pw" not in caplog.text
    assert "s3cret-pw" not in repr(app)
    assert "unavailable" in caplog.text


def test_a_stale_epoch_never_commits_and_a_claim_waits_for_a_committing_writer(
    postgres_dsn,
) -> None:
    """The offsets protocol on the real database: after B claims, A's update matches nothing;
    a claim blocked on A's row lock sees A's committed position once A commits."""
    table = unique_name("offsets").replace("-", "_")
    a = OffsetsTable(table, "app", "a")
    b = OffsetsTable(table, "app", "b")
    tp = ("orders", 0)
    with psycopg.connect(postgres_dsn) as conn_a, psycopg.connect(postgres_dsn) as conn_b:
        a.create(conn_a.cursor())
        conn_a.commit()
        ((_, epoch_a),) = a.claim(conn_a.cursor(), [tp]).values()
        conn_a.commit()
        # A writes a batch and holds the row lock (not committed yet).
        assert a.advance(conn_a.cursor(), {tp: 10}, {tp: epoch_a}) == set()
        conn_b.execute("SET lock_timeout = 200")
        with pytest.raises(psycopg.errors.LockNotAvailable):
            b.claim(conn_b.cursor(), [tp])
        conn_b.rollback()
        conn_a.commit()
        claimed = b.claim(conn_b.cursor(), [tp])
        conn_b.commit()
        assert claimed == {tp: (10, epoch_a + 1)}
        # A's next batch: its epoch is stale, nothing matches.
        assert a.advance(conn_a.cursor(), {tp: 20}, {tp: epoch_a}) == {tp}
        conn_a.rollback()
        assert b.read(conn_b.cursor(), [tp]) == {tp: (10, epoch_a + 1)}


def test_a_deferred_constraint_violation_is_attributed_to_its_record(
    bootstrap, postgres_dsn, app_threads
) -> None:
    """A DEFERRABLE INITIALLY DEFERRED unique constraint fails only at COMMIT; the careful
    replay checks it per statement, so the repeated order alone is skipped and the rest of
    its batch is written."""
    topic = create_topic(bootstrap, unique_name("orders"), 1)
    table = unique_name("orders").replace("-", "_")
    with psycopg.connect(postgres_dsn, autocommit=True) as conn:
        conn.execute(
            f"CREATE TABLE {table} (id int NOT NULL, total int NOT NULL, src text NOT NULL,"
            " UNIQUE (id) DEFERRABLE INITIALLY DEFERRED)"
        )
    orders = _orders(range(50))
    orders.insert(30, orders[10])  # order 10 again: violates the deferred constraint
    produce(bootstrap, topic, orders)
    app = _app(bootstrap, topic, SaveOrders(postgres_dsn, table), processing_error_policy="skip")
    thread = AppThread(app).start()
    app_threads.append(thread)
    _wait(lambda: app._stats.skipped == 1, "the repeated order skipped", thread)
    _wait(lambda: len(_rows(postgres_dsn, table)) == 50, "50 rows", thread)
    app.stop()
    thread.thread.join(60)
    assert thread.error is None
    assert _rows(postgres_dsn, table) == dict.fromkeys(range(50), 1)
    with psycopg.connect(postgres_dsn, autocommit=True) as conn:
        (src,) = conn.execute(f"SELECT src FROM {table} WHERE id = 10").fetchone()  # type: ignore[misc]
    assert src == "0/10"  # the first one was written, the repeat (offset 30) skipped
