"""The PostgreSQL sink under SIGKILL, a SIGSTOPped zombie and a database restart.

tests/chaos/pg_app.py runs examples/orders_to_postgres.py's ``SaveOrders`` in child
processes against the real broker and a real PostgreSQL. The orders table has no
unique constraint, so a duplicate is a second row; every 97th order breaks the
table's CHECK and must reach the dead-letter topic instead.
"""

from __future__ import annotations

import signal
import time

import pytest
from chaosapps import log_size, wait_for_new_log
from pgchaos import (
    check_exactly_once,
    is_bad,
    order_feed,
    pg_app,
    row_count,
    wait_rows,
)

from eos.testing.helpers import create_topic, unique_name, wait_caught_up

pytestmark = [pytest.mark.integration, pytest.mark.chaos]

SESSION_MS = 6000


def _names(bootstrap: str, partitions: int = 3) -> dict[str, str]:
    return {
        "input": create_topic(bootstrap, unique_name("orders"), partitions),
        "dead_letter": create_topic(bootstrap, unique_name("orders-dlq"), 1),
        "table": unique_name("orders").replace("-", "_"),
        "application_id": unique_name("pg"),
    }


def _good(total: int) -> int:
    return sum(1 for i in range(total) if not is_bad(i))


def test_sigkill_five_times_writes_each_order_once(bootstrap, postgres_dsn, tmp_path) -> None:
    """Five SIGKILLs of the instance while orders flow, each once it wrote rows in its
    current start: every order is exactly one row and every refused one is dead-lettered."""
    total = 6000
    names = _names(bootstrap)
    app = pg_app(bootstrap, postgres_dsn, names, tmp_path)
    feed = order_feed(bootstrap, names["input"], total, seconds=20.0).start()
    kills = 0
    try:
        app.start()
        while kills < 5:
            before = row_count(postgres_dsn, names["table"])
            wait_rows(postgres_dsn, names["table"], before + 150, timeout=60, app=app)
            app.kill()
            kills += 1
            app.start()
        sent = feed.join()
        wait_rows(postgres_dsn, names["table"], _good(sent), timeout=90, app=app)
        wait_caught_up(bootstrap, names["application_id"], names["input"], timeout=60)
        assert app.terminate(60) == 0, app.log_tail()
    finally:
        app.kill()
    print(f"{kills} kills while orders flowed; {feed.sent} orders sent")
    print(check_exactly_once(postgres_dsn, names["table"], sent, bootstrap, names["dead_letter"]))


def test_zombie_paused_holding_the_offsets_lock_writes_nothing(
    bootstrap, postgres_dsn, tmp_path
) -> None:
    """An instance SIGSTOPped between its offsets update and its COMMIT (holding the offsets
    rows' locks) past its session timeout: the other instance takes its partitions over once
    the server ended the zombie's transaction; resumed, the zombie's COMMIT fails, it finds
    its epochs stale and writes nothing; every order is exactly one row."""
    total = 4000
    names = _names(bootstrap)
    flags = {
        "session_timeout_ms": str(SESSION_MS),
        # The server ends the zombie's idle transaction after this (releasing its locks).
        "transaction_timeout_ms": "8000",
        "commit_interval_ms": "500",
    }
    every = [f"{names['input']}[{p}]" for p in range(3)]
    zombie = pg_app(
        bootstrap, postgres_dsn, names, tmp_path, instance="a", stop_at_commit="6", **flags
    )
    other = pg_app(bootstrap, postgres_dsn, names, tmp_path, instance="b", **flags)
    feed = order_feed(bootstrap, names["input"], total, seconds=15.0).start()
    try:
        zombie.start()
        zombie.wait_for_log("eos.sinks.postgres: processing", timeout=60)
        other.start()
        zombie.wait_for_log("pg_app: stopping myself", timeout=60)
        stopped = time.monotonic()
        since = log_size(other)
        # The other instance is given the zombie's partitions after its session timed
        # out, and claims them once the server ended the zombie's transaction.
        wait_for_new_log(other, "processing " + ", ".join(every), since, timeout=60)
        claimed_after = time.monotonic() - stopped
        zombie.signal(signal.SIGCONT)
        zombie.wait_for_log("pg_app: resumed", timeout=30)
        sent = feed.join()
        wait_rows(postgres_dsn, names["table"], _good(sent), timeout=90)
        wait_caught_up(bootstrap, names["application_id"], names["input"], timeout=90)
        zombie_log = zombie.current_log()
        zombie.terminate(60)
        other.terminate(60)
    finally:
        zombie.signal(signal.SIGCONT)
        zombie.kill()
        other.kill()
    print(
        f"the other instance claimed the zombie's partitions {claimed_after:.1f}s after it stopped"
    )
    after = zombie_log.split("pg_app: resumed", 1)[1]
    fenced = [line for line in after.splitlines() if "claimed by another instance" in line]
    print("zombie after SIGCONT:", *fenced[:3], sep="\n    ")
    assert fenced, f"the zombie should have found its epochs stale:\n{after[-3000:]}"
    print(check_exactly_once(postgres_dsn, names["table"], sent, bootstrap, names["dead_letter"]))


def test_database_restart_mid_stream_loses_and_duplicates_nothing(
    bootstrap, postgres, tmp_path
) -> None:
    """PostgreSQL is restarted twice while orders flow (a fast shutdown, then a crash):
    the instance retries through both outages, and every order is exactly one row."""
    total = 3000
    names = _names(bootstrap)
    dsn = postgres.dsn
    app = pg_app(bootstrap, dsn, names, tmp_path)
    feed = order_feed(bootstrap, names["input"], total, seconds=10.0).start()
    try:
        app.start()
        for crash in (False, True):
            before = row_count(dsn, names["table"])
            wait_rows(dsn, names["table"], before + 200, timeout=60, app=app)
            postgres.restart(crash=crash)
        sent = feed.join()
        wait_rows(dsn, names["table"], _good(sent), timeout=90, app=app)
        wait_caught_up(bootstrap, names["application_id"], names["input"], timeout=60)
        log = app.current_log()
        assert app.terminate(60) == 0, app.log_tail()
    finally:
        app.kill()
    outages = [line for line in log.splitlines() if "PostgreSQL unavailable" in line]
    print(f"{len(outages)} failed attempts during the restarts; first: {outages[:1]}")
    assert outages, "the restarts should have been seen as outages"
    assert "available again" in log
    print(check_exactly_once(dsn, names["table"], sent, bootstrap, names["dead_letter"]))
