"""Helpers of the PostgreSQL sink tests: feed orders steadily, start pg_app.py, check the table."""

from __future__ import annotations

import json
import time
from collections import Counter
from pathlib import Path

import psycopg
from chaosapps import SteadyProducer

from eos.testing.helpers import read_topic
from eos.testing.process import AppProcess

APP = str(Path(__file__).resolve().parent / "pg_app.py")
BAD_EVERY = 97
"""Every 97th order has a negative total: the table's CHECK refuses it (dead-lettered)."""


def order(i: int) -> dict[str, object]:
    return {"id": i, "customer": f"c{i % 31}", "total": -1 if i % BAD_EVERY == 50 else i % 1000}


def is_bad(i: int) -> bool:
    return i % BAD_EVERY == 50


def order_record(i: int) -> tuple[bytes, bytes]:
    """Order ``i`` as ``(JSON value, customer key)``."""
    value = order(i)
    return json.dumps(value).encode(), str(value["customer"]).encode()


def order_feed(bootstrap: str, topic: str, total: int, seconds: float) -> SteadyProducer:
    """Produces orders 0..total-1 (JSON, keyed by customer) in 50 chunks over ``seconds``."""
    return SteadyProducer(bootstrap, topic, total, seconds, chunks=50, record=order_record)


def pg_app(
    bootstrap: str,
    dsn: str,
    names: dict[str, str],
    log_dir: Path,
    *,
    instance: str = "0",
    **flags: str,
) -> AppProcess:
    """An (unstarted) pg_app.py; ``names`` has input, table, dead_letter, application_id."""
    args = [
        APP,
        "--bootstrap-servers",
        bootstrap,
        "--dsn",
        dsn,
        "--input",
        names["input"],
        "--table",
        names["table"],
        "--dead-letter",
        names["dead_letter"],
        "--application-id",
        names["application_id"],
        "--instance-id",
        instance,
    ]
    for key, value in flags.items():
        args += [f"--{key.replace('_', '-')}", value]
    return AppProcess(args, log_path=log_dir / f"{names['application_id']}-{instance}.log")


def row_count(dsn: str, table: str) -> int:
    """Rows in ``table`` (0 while it does not exist yet)."""
    with psycopg.connect(dsn, autocommit=True) as conn:
        exists = conn.execute("SELECT to_regclass(%s)", (table,)).fetchone()
        if not exists or exists[0] is None:
            return 0
        row = conn.execute(f'SELECT count(*) FROM "{table}"').fetchone()
        return int(row[0]) if row else 0


def wait_rows(
    dsn: str, table: str, at_least: int, timeout: float, app: AppProcess | None = None
) -> int:
    """Block until ``table`` has ``at_least`` rows (checking ``app`` is alive); return the count."""
    deadline = time.monotonic() + timeout
    while True:
        count = row_count(dsn, table)
        if count >= at_least:
            return count
        if app is not None and app.proc is not None and not app.alive():
            raise AssertionError(f"{app.log_path} exited:\n{app.log_tail()}")
        if time.monotonic() > deadline:
            raise TimeoutError(f"{table} has {count} rows, waited for {at_least}")
        time.sleep(0.1)


def check_exactly_once(dsn: str, table: str, total: int, bootstrap: str, dead_letter: str) -> str:
    """Every good order is exactly one row; every refused one is in the dead-letter topic.

    Returns a one-line summary. The table has no unique constraint: a duplicate
    would show as a count of 2.
    """
    with psycopg.connect(dsn, autocommit=True) as conn:
        rows = conn.execute(f'SELECT id, count(*) FROM "{table}" GROUP BY id').fetchall()
    counts = {int(i): int(n) for i, n in rows}
    good = [i for i in range(total) if not is_bad(i)]
    missing = [i for i in good if i not in counts]
    twice = {i: n for i, n in counts.items() if n > 1}
    unexpected = [i for i in counts if i >= total or is_bad(i)]
    assert not missing, f"{len(missing)} orders lost, first {missing[:10]}"
    assert not twice, f"{len(twice)} orders written more than once: {list(twice.items())[:10]}"
    assert not unexpected, f"rows for orders that should not be there: {unexpected[:10]}"
    dead = read_topic(bootstrap, dead_letter, timeout=10)
    dead_ids = Counter(json.loads(m.value)["id"] for m in dead)
    bad = [i for i in range(total) if is_bad(i)]
    assert set(dead_ids) == set(bad), (
        f"dead letters {sorted(dead_ids)[:10]}... != refused orders {bad[:10]}..."
    )
    return (
        f"{len(good)} orders -> {sum(counts.values())} rows, {len(bad)} refused -> "
        f"{sum(dead_ids.values())} dead-letter copies"
    )
