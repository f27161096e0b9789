"""``eos dev-postgres up|down|status``: a local PostgreSQL left running in the background.

``up`` starts a :class:`eos.testing.postgres.PostgresServer` detached from the
command, with its data in ``<cache>/dev-postgres/``, and records its pid, port and
data directory in ``<cache>/dev-postgres.json``; a second ``up`` finds that record,
checks the server still answers, and prints the same DSN without starting
anything. ``down`` stops it and removes its data directory. ``status`` prints the
DSN and exits 0 while it runs, else 1.

Needs PostgreSQL's server binaries (``initdb`` and ``postgres``: ``$EOS_POSTGRES_BIN``,
``initdb`` on ``PATH`` or ``/usr/lib/postgresql/*/bin``; ``apt-get install postgresql``
on Debian and Ubuntu) and psycopg (``pip install 'eos-kafka[postgres]'``). As root
the server runs as the ``postgres`` OS user. ``<cache>`` is
:func:`eos.testing.kafka.cache_dir`: ``$EOS_CACHE_DIR``, else
``$XDG_CACHE_HOME/eos``, else ``~/.cache/eos``. The command's help
(``eos dev-postgres --help``) says the same.
"""

from __future__ import annotations

import contextlib
import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

from eos.testing.kafka import cache_dir, port_open
from eos.testing.postgres import PostgresServer, find_postgres_bin


def _state_path() -> Path:
    return cache_dir() / "dev-postgres.json"


def _data_dir() -> Path:
    return cache_dir() / "dev-postgres"


def _read_state() -> dict[str, object] | None:
    path = _state_path()
    if not path.exists():
        return None
    try:
        state: dict[str, object] = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return state


def _server(state: dict[str, object] | None) -> PostgresServer:
    """The server ``state`` records (or whatever runs on the data directory)."""
    directory = state.get("data_dir") if state is not None else None
    port = state.get("port") if state is not None else None
    return PostgresServer(
        Path(directory) if isinstance(directory, str) else _data_dir(),
        port=port if isinstance(port, int) else None,
        detach=True,
    )


def _state_running(state: dict[str, object]) -> bool:
    server = _server(state)
    return server.pid is not None and server.pid == state.get("pid") and port_open(server.port)


def _version() -> str:
    """``PostgreSQL 15.18`` from ``postgres --version`` (just ``PostgreSQL`` if it cannot say)."""
    with contextlib.suppress(OSError, subprocess.SubprocessError):
        out = subprocess.run(
            [str(find_postgres_bin() / "postgres"), "--version"],
            capture_output=True,
            text=True,
            check=True,
            timeout=30,
        )
        match = re.search(r"\(PostgreSQL\) (\S+)", out.stdout)
        if match:
            return f"PostgreSQL {match.group(1)}"
    return "PostgreSQL"


def up() -> int:
    """Start (or find) the background server; print its DSN last."""
    state = _read_state()
    if state is not None and _state_running(state):
        print("eos: PostgreSQL already running (started by an earlier `eos dev-postgres up`)")
        print(state["dsn"])
        return 0
    # A record whose server is gone (a reboot, a kill): start afresh, as dev-kafka does,
    # so the database never holds offsets of a Kafka that no longer exists.
    _teardown(state)
    shutil.rmtree(_data_dir(), ignore_errors=True)
    cache_dir().mkdir(parents=True, exist_ok=True)
    server = PostgresServer(_data_dir(), detach=True)
    server.start()
    _state_path().write_text(
        json.dumps(
            {
                "dsn": server.dsn,
                "pid": server.pid,
                "port": server.port,
                "data_dir": str(server.data_dir),
            }
        )
    )
    print(
        f"eos: {_version()} ready in {server.ready_seconds or 0:.1f}s; data in "
        f"{server.data_dir}, log {server.log_path}",
        flush=True,
    )
    print(server.dsn, flush=True)
    return 0


def _teardown(state: dict[str, object] | None) -> None:
    server = _server(state)
    server.stop()
    shutil.rmtree(server.data_dir, ignore_errors=True)
    with contextlib.suppress(FileNotFoundError):
        _state_path().unlink()


def down() -> int:
    """Stop what ``up`` started and remove its data."""
    state = _read_state()
    if state is None and not _data_dir().exists():
        print("eos: no dev PostgreSQL is running")
        return 0
    _teardown(state)
    print("eos: dev PostgreSQL stopped and its data removed")
    return 0


def status() -> int:
    """Print whether the dev server runs, and its DSN; exit 0 if it does, 1 if not."""
    state = _read_state()
    if state is None or not _state_running(state):
        print("eos: dev PostgreSQL is not running", file=sys.stderr)
        return 1
    print(f"eos: dev PostgreSQL running, pid {state['pid']}, data in {state['data_dir']}")
    print(state["dsn"])
    return 0
