"""/healthz and /ready of real applications, Kafka engine and PostgreSQL sink alike."""

from __future__ import annotations

import json
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from typing import Any

import psycopg
import pytest
from apprunner import AppThread, Upper, application

import eos
from eos.health import HEALTHZ_PATH, READY_PATH
from eos.sinks.postgres import PostgresProcessor
from eos.testing.helpers import create_topic, produce, unique_name, wait_caught_up

pytestmark = pytest.mark.integration


def _probe(base: str, path: str) -> tuple[int, dict[str, Any]]:
    try:
        with urllib.request.urlopen(base + path, timeout=5) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as error:
        with error:
            return error.code, json.loads(error.read())


def _wait_ready(base: str, runner: AppThread, done: Callable[[], bool]) -> dict[str, Any]:
    """Poll /ready until ``done()`` holds and then /ready answers 200 with nothing
    uncommitted (the last batch's commit seen by the probe: the engine notes a commit just
    after it completes, so a probe racing the commit may still see the batch); return its
    body."""
    deadline = time.monotonic() + 60
    while True:
        finished = done()
        status, ready = _probe(base, READY_PATH)
        if finished and status == 200 and ready.get("uncommitted_s") is None:
            return ready
        assert runner.error is None, f"the application failed: {runner.error!r}"
        assert time.monotonic() < deadline, f"never ready: {ready}"
        time.sleep(0.1)


def _base(runner: AppThread) -> str:
    """The endpoint's base URL, once ``run()`` serves it."""
    deadline = time.monotonic() + 60
    while (url := runner.app.metrics_url) is None:
        assert runner.error is None, f"the application failed: {runner.error!r}"
        assert time.monotonic() < deadline, "the metrics endpoint never started"
        time.sleep(0.05)
    return url.removesuffix("/metrics")


def test_a_caught_up_instance_is_live_and_ready(bootstrap: str, app_threads: list) -> None:
    """After processing its input, an instance with a partition assigned answers /ready 200
    (running, nothing uncommitted) and /healthz 200 with a loop that turned within 2 s:
    the idle loop keeps stamping its turns."""
    source = create_topic(bootstrap, unique_name("health-in"), 1)
    sink = create_topic(bootstrap, unique_name("health-out"), 1)
    app_id = unique_name("health")
    produce(bootstrap, source, ((f"k{i}", f"v{i}") for i in range(200)))
    app = application(bootstrap, app_id, source, Upper(sink), metrics_port=0)
    runner = AppThread(app).start()
    app_threads.append(runner)
    wait_caught_up(bootstrap, app_id, source, timeout=60)
    base = _base(runner)

    ready = _wait_ready(base, runner, lambda: True)  # the last batch's commit seen by the probe
    assert ready["state"] == "running"
    assert ready["assigned"] == 1 and ready["restoring"] == 0
    assert ready["uncommitted_s"] is None

    status, live = _probe(base, HEALTHZ_PATH)
    assert status == 200, live
    assert live["loop_age_s"] is not None and live["loop_age_s"] < 2.0
    assert app.state.processed_count == 200


class SaveValues(PostgresProcessor[str, str]):
    """Inserts each record's value."""

    def __init__(self, dsn: str, table: str) -> None:
        super().__init__(dsn)
        self.table = table

    def setup(self, cur: psycopg.Cursor[Any]) -> None:
        cur.execute(f"CREATE TABLE IF NOT EXISTS {self.table} (value text NOT NULL)")

    def process(self, record: eos.Record[str, str], cur: psycopg.Cursor[Any]) -> None:
        cur.execute(f"INSERT INTO {self.table} (value) VALUES (%s)", (record.value,))


def test_a_postgres_sink_is_live_and_ready(
    bootstrap: str, postgres_dsn: str, app_threads: list
) -> None:
    """The PostgreSQL sink's loop keeps the same endpoints current: ready once its rows are
    committed, and live with a loop that turned within 2 s."""
    source = create_topic(bootstrap, unique_name("health-pg-in"), 1)
    table = unique_name("health_rows").replace("-", "_")
    produce(bootstrap, source, ((f"k{i}", f"v{i}") for i in range(100)))
    app = eos.Application(
        application_id=unique_name("health-pg"),
        bootstrap_servers=bootstrap,
        input_topics=[source],
        key_serde="string",
        value_serde="string",
        processor=SaveValues(postgres_dsn, table),
        metrics_port=0,
    )
    runner = AppThread(app).start()
    app_threads.append(runner)

    def rows() -> int:
        with psycopg.connect(postgres_dsn, autocommit=True) as conn:
            if conn.execute("SELECT to_regclass(%s)", (table,)).fetchone() == (None,):
                return -1
            (count,) = conn.execute(f"SELECT count(*) FROM {table}").fetchone()  # type: ignore[misc]
            return int(count)

    base = _base(runner)
    ready = _wait_ready(base, runner, lambda: rows() == 100)
    assert ready["assigned"] == 1 and ready["uncommitted_s"] is None
    status, live = _probe(base, HEALTHZ_PATH)
    assert status == 200, live
    assert live["loop_age_s"] is not None and live["loop_age_s"] < 2.0
