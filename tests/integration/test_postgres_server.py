"""A real local PostgreSQL: committed rows survive a crash restart on the same DSN, and
`eos dev-postgres up|status|down` manages a background server (no Kafka needed)."""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest

from eos.testing.postgres import PostgresServer


@pytest.fixture(scope="module")
def server() -> Iterator[PostgresServer]:
    """One local server for this module (its own, so crashing it disturbs no other test)."""
    if os.environ.get("EOS_POSTGRES_DSN"):
        pytest.skip("crash restarts need the project's own server (EOS_POSTGRES_DSN is set)")
    local = PostgresServer().start()
    yield local
    local.cleanup()


def test_a_committed_row_survives_a_crash_restart(server: PostgresServer) -> None:
    """After SIGKILL and a restart the committed row is there, the open transaction's row
    is not, and the port and DSN are unchanged."""
    dsn, port, pid = server.dsn, server.port, server.pid
    with psycopg.connect(dsn) as conn:
        conn.execute("CREATE TABLE crash_test (id int PRIMARY KEY, note text)")
        conn.execute("INSERT INTO crash_test VALUES (1, 'committed')")
        conn.commit()
    open_txn = psycopg.connect(dsn)
    open_txn.execute("INSERT INTO crash_test VALUES (2, 'never committed')")

    server.restart(crash=True)

    with contextlib.suppress(psycopg.Error):
        open_txn.close()
    assert (server.dsn, server.port) == (dsn, port)
    assert server.pid is not None and server.pid != pid
    with psycopg.connect(server.dsn) as conn:
        rows = conn.execute("SELECT id, note FROM crash_test ORDER BY id").fetchall()
    assert rows == [(1, "committed")]
    assert "database system was interrupted" in server.log_path.read_text()


def _eos(*args: str, cache: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "eos", "dev-postgres", *args],
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "EOS_CACHE_DIR": str(cache)},
        check=False,
    )


@pytest.fixture
def cache() -> Iterator[Path]:
    """A fresh EOS_CACHE_DIR outside pytest's basetemp: a concurrent pytest run resets
    /tmp/pytest-of-<user> to 0700, which would lock the `postgres` OS user out under root."""
    directory = Path(tempfile.mkdtemp(prefix="eos-devpg-test-"))
    yield directory
    shutil.rmtree(directory, ignore_errors=True)


def test_dev_postgres_up_status_down(cache: Path) -> None:
    """`up` prints a DSN that connects as its last line and a second `up` the same one,
    `status` exits 0 while it runs, `down` stops it and removes its data, then `status`
    exits 1."""
    try:
        up = _eos("up", cache=cache)
        assert up.returncode == 0, up.stderr
        dsn = up.stdout.splitlines()[-1]
        with psycopg.connect(dsn) as conn:
            assert conn.execute("SELECT current_database(), current_user").fetchone() == (
                "eos",
                "eos",
            )
        again = _eos("up", cache=cache)
        assert again.returncode == 0 and again.stdout.splitlines()[-1] == dsn
        status = _eos("status", cache=cache)
        assert status.returncode == 0 and status.stdout.splitlines()[-1] == dsn
    finally:
        down = _eos("down", cache=cache)
    assert down.returncode == 0, down.stderr
    assert not (cache / "dev-postgres").exists()
    assert not (cache / "dev-postgres.json").exists()
    assert _eos("status", cache=cache).returncode == 1
    with pytest.raises(psycopg.OperationalError):
        psycopg.connect(dsn, connect_timeout=2).close()
