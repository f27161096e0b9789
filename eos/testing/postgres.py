"""A real PostgreSQL for tests, the examples and development.

A sink that claims exactly-once into a database is tested against that database.
:class:`PostgresServer` starts a throwaway server from the binaries the machine
has (:func:`find_postgres_bin`; Debian: ``apt-get install postgresql``): ``initdb``
on first start (superuser ``eos``, trust authentication on 127.0.0.1 only, a
database ``eos``), then the postmaster on a free port of 127.0.0.1 with a small
footprint, logging to ``<data_dir>/server.log``. ``start()`` returns when a
psycopg connection succeeds.

PostgreSQL refuses to run as root. Under root (CI, containers) it runs as the
``postgres`` OS user Debian's package creates: the data directory is given to
that user, and parent directories it could not pass get ``o+x`` (search, not read).

``EOS_POSTGRES_DSN`` set: :func:`start_postgres` and the ``postgres`` fixture start
nothing and return an :class:`ExternalPostgres`. pytest:
``pytest_plugins = ["eos.testing.postgres"]`` enables the fixtures ``postgres``
(one server per session) and ``postgres_dsn``.

Threading: a :class:`PostgresServer` is driven from one thread. The postmaster is
a child of the calling process, stopped at interpreter exit, unless
``detach=True`` (``eos dev-postgres``): then it runs in its own session and
outlives the caller.
"""

from __future__ import annotations

import atexit
import contextlib
import importlib.util
import logging
import os
import pwd
import shutil
import signal
import subprocess
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from eos.testing._postgres_os import (
    POSTGRES_BIN_ENV,
    POSTGRES_DSN_ENV,
    PostgresSetupError,
    _alive,
    _children,
    _free_port,
    _make_reachable,
    _postmaster_pid,
    _require_psycopg,
    _server_account,
    _socket_directories,
    _tail,
    find_postgres_bin,
)
from eos.testing.kafka import port_open

__all__ = [
    "POSTGRES_BIN_ENV",
    "POSTGRES_DSN_ENV",
    "ExternalPostgres",
    "PostgresServer",
    "PostgresSetupError",
    "find_postgres_bin",
    "start_postgres",
]

log = logging.getLogger("eos.testing.postgres")

SUPERUSER = "eos"
DATABASE = "eos"
DEFAULT_START_TIMEOUT_S = 60.0
DEFAULT_STOP_TIMEOUT_S = 30.0
_POLL_S = 0.05

_SETTINGS = """
# eos test server (eos.testing.postgres): 127.0.0.1 only, small footprint
listen_addresses = '127.0.0.1'
shared_buffers = 32MB
max_connections = 50
"""

_HBA = """\
# eos test server (eos.testing.postgres): trust on 127.0.0.1 only, nothing else
host all all 127.0.0.1/32 trust
"""


class PostgresServer:
    """A local PostgreSQL server on 127.0.0.1 with its own data directory.

    Lifecycle: ``start()`` (blocking until a connection succeeds) then
    ``cleanup()``; also a context manager. ``stop()`` shuts down cleanly,
    ``kill()`` crashes it (SIGKILL) and ``restart()`` starts it again on the same
    port and data directory, so committed data survives a crash through WAL
    replay. ``dsn`` has no password: authentication is ``trust``, on 127.0.0.1
    only.

    Args:
        data_dir: where the cluster lives; a fresh ``tempfile.mkdtemp`` directory
            (removed by ``cleanup()``) when None. An existing data directory is
            started as it is, without ``initdb``.
        port: the TCP port; a free one when None.
        detach: run the server in its own session so it outlives this process
            (``eos dev-postgres``); otherwise it is stopped at interpreter exit.
    """

    def __init__(
        self, data_dir: Path | None = None, *, port: int | None = None, detach: bool = False
    ) -> None:
        self._own_dir = data_dir is None
        directory = Path(tempfile.mkdtemp(prefix="eos-pg-")) if data_dir is None else data_dir
        self._data_dir = directory.absolute()
        self._port = port if port is not None else _free_port()
        self._detach = detach
        self._process: subprocess.Popen[bytes] | None = None
        self.ready_seconds: float | None = None
        """Seconds the last ``start()`` took, initdb included."""

    def __repr__(self) -> str:
        return f"PostgresServer(port={self._port}, data_dir={str(self._data_dir)!r})"

    @property
    def dsn(self) -> str:
        """``postgresql://eos@127.0.0.1:<port>/eos`` (the same across restarts)."""
        return f"postgresql://{SUPERUSER}@127.0.0.1:{self._port}/{DATABASE}"

    @property
    def port(self) -> int:
        return self._port

    @property
    def data_dir(self) -> Path:
        return self._data_dir

    @property
    def log_path(self) -> Path:
        """The server's log (its stdout and stderr)."""
        return self._data_dir / "server.log"

    @property
    def pid(self) -> int | None:
        """The postmaster's pid while it runs, else None.

        Also finds a postmaster another process started on this data directory
        (from ``postmaster.pid``), so ``eos dev-postgres down`` can stop it.
        """
        if self._process is not None and self._process.poll() is None:
            return self._process.pid
        return _postmaster_pid(self._data_dir)

    def start(self, timeout_s: float = DEFAULT_START_TIMEOUT_S) -> PostgresServer:
        """Initialise the data directory (first start only), start the server, wait.

        Returns at once if it already runs.

        Raises:
            PostgresSetupError: no binaries, no ``postgres`` OS user under root, no
                psycopg, initdb failed, or the server exited or did not accept a
                connection within ``timeout_s`` (the message has the log tail).
        """
        if self.pid is not None:
            return self
        started = time.monotonic()
        _require_psycopg()
        binaries = find_postgres_bin()
        account = _server_account()
        self._prepare_directory(account)
        if not (self._data_dir / "PG_VERSION").exists():
            self._initdb(binaries, account)
        self._spawn(binaries, account)
        try:
            self._wait_ready(started + timeout_s, timeout_s)
        except BaseException:
            with contextlib.suppress(PostgresSetupError):
                self.kill()
            raise
        self.ready_seconds = time.monotonic() - started
        log.info(
            "PostgreSQL ready at 127.0.0.1:%d (data %s) in %.1fs",
            self._port,
            self._data_dir,
            self.ready_seconds,
        )
        return self

    def _prepare_directory(self, account: pwd.struct_passwd | None) -> None:
        self._data_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
        if account is not None:
            _make_reachable(self._data_dir, account)
            os.chown(self._data_dir, account.pw_uid, account.pw_gid)

    def _initdb(self, binaries: Path, account: pwd.struct_passwd | None) -> None:
        command = [str(binaries / "initdb"), "-D", str(self._data_dir), "-U", SUPERUSER]
        proc = subprocess.run(
            [*command, "-A", "trust", "-E", "UTF8", "--locale=C"],
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            check=False,
            cwd=self._data_dir,
            user=None if account is None else account.pw_uid,
            group=None if account is None else account.pw_gid,
            extra_groups=None if account is None else [],
        )
        if proc.returncode != 0:
            tail = "\n".join((proc.stdout + proc.stderr).splitlines()[-30:])
            raise PostgresSetupError(f"initdb failed in {self._data_dir}:\n{tail}")
        (self._data_dir / "pg_hba.conf").write_text(_HBA)
        with open(self._data_dir / "postgresql.conf", "a") as conf:
            conf.write(_SETTINGS)

    def _spawn(self, binaries: Path, account: pwd.struct_passwd | None) -> None:
        command = [str(binaries / "postgres"), "-D", str(self._data_dir), "-p", str(self._port)]
        sockets = f"unix_socket_directories={_socket_directories(self._data_dir)}"
        with open(self.log_path, "ab") as out:
            if account is not None:
                os.chown(self.log_path, account.pw_uid, account.pw_gid)
            self._process = subprocess.Popen(
                [*command, "-c", sockets],
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                cwd=self._data_dir,
                start_new_session=self._detach,
                user=None if account is None else account.pw_uid,
                group=None if account is None else account.pw_gid,
                extra_groups=None if account is None else [],
            )
        if not self._detach:
            atexit.register(self._stop_at_exit)

    def _wait_ready(self, deadline: float, timeout_s: float) -> None:
        """Poll until the server accepts a connection; create database ``eos`` if missing."""
        import psycopg
        from psycopg import sql

        conninfo = f"host=127.0.0.1 port={self._port} user={SUPERUSER} dbname=postgres"
        last: Exception | None = None
        while True:
            if self._process is not None and self._process.poll() is not None:
                raise PostgresSetupError(
                    f"PostgreSQL exited during start-up (code {self._process.returncode}); "
                    f"{self.log_path} ends:\n{_tail(self.log_path)}"
                )
            try:
                with psycopg.connect(conninfo, autocommit=True, connect_timeout=2) as conn:
                    query = "SELECT 1 FROM pg_database WHERE datname = %s"
                    if conn.execute(query, (DATABASE,)).fetchone() is None:
                        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(DATABASE)))
                return
            except psycopg.OperationalError as exc:
                last = exc
            if time.monotonic() > deadline:
                raise PostgresSetupError(
                    f"PostgreSQL did not accept a connection within {timeout_s:.0f}s "
                    f"(last error: {last}); {self.log_path} ends:\n{_tail(self.log_path)}"
                )
            time.sleep(_POLL_S)

    def _exited(self, pid: int) -> bool:
        if self._process is not None and self._process.pid == pid:
            return self._process.poll() is not None  # reaps our own child
        return not _alive(pid)

    def _gone(self, pids: list[int], deadline: float) -> bool:
        """Poll until every pid has exited; False at the deadline."""
        while True:
            if all(self._exited(p) for p in pids):
                return True
            if time.monotonic() > deadline:
                return False
            time.sleep(_POLL_S)

    def _forget(self) -> None:
        self._process = None
        atexit.unregister(self._stop_at_exit)

    def _stop_at_exit(self) -> None:
        with contextlib.suppress(Exception):
            self.cleanup()

    def stop(self, timeout_s: float = DEFAULT_STOP_TIMEOUT_S) -> None:
        """Fast shutdown (SIGINT: roll back open transactions, checkpoint, exit).

        Returns when the postmaster has exited, after its children. Escalates to
        :meth:`kill` after ``timeout_s``. Does nothing if the server is not running.
        """
        pid = self.pid
        if pid is None:
            self._forget()
            return
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGINT)
        if not self._gone([pid], time.monotonic() + timeout_s):
            log.warning(
                "PostgreSQL (pid %d) did not shut down in %.0fs; killing it", pid, timeout_s
            )
            self.kill()
            return
        self._forget()

    def kill(self) -> None:
        """Crash the server: SIGKILL the postmaster, then its children.

        No shutdown checkpoint is written, so the next start replays the WAL
        (committed transactions survive, open ones are gone). Returns when every
        one of those processes has exited and the port is closed.
        """
        pid = self.pid
        if pid is None:
            self._forget()
            return
        # Listed first: once the postmaster is gone its children are re-parented.
        # The postmaster dies first so it cannot react to a child's death.
        children = _children(pid)
        for victim in (pid, *children):
            with contextlib.suppress(ProcessLookupError):
                os.kill(victim, signal.SIGKILL)
        deadline = time.monotonic() + DEFAULT_STOP_TIMEOUT_S
        if not self._gone([pid, *children], deadline):
            raise PostgresSetupError(f"PostgreSQL (pid {pid}) survived SIGKILL")
        while port_open(self._port):
            if time.monotonic() > deadline:
                raise PostgresSetupError(f"port {self._port} still open after a SIGKILL")
            time.sleep(_POLL_S)
        self._forget()

    def restart(self, *, crash: bool = False, timeout_s: float = DEFAULT_START_TIMEOUT_S) -> None:
        """Stop (``crash=True``: kill) and start again on the same port and data directory."""
        if crash:
            self.kill()
        else:
            self.stop()
        self.start(timeout_s)

    def cleanup(self) -> None:
        """Stop the server if it runs; remove the data directory if this object made it."""
        self.stop()
        if self._own_dir:
            shutil.rmtree(self._data_dir, ignore_errors=True)

    def __enter__(self) -> PostgresServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.cleanup()


@dataclass(frozen=True)
class ExternalPostgres:
    """A server someone else runs (``EOS_POSTGRES_DSN``): nothing to stop, no faults.

    The DSN may carry a password, so it is left out of the repr.
    """

    dsn: str = field(repr=False)

    def stop(self) -> None:
        """Nothing to stop: the server is not ours."""

    def cleanup(self) -> None:
        """Nothing to remove: the server is not ours."""

    def kill(self) -> None:
        """Raises: crashing a server needs the project's own."""
        raise PostgresSetupError(
            f"killing PostgreSQL needs the project's own server ({POSTGRES_DSN_ENV} is set)"
        )

    def restart(self, *, crash: bool = False, timeout_s: float = DEFAULT_START_TIMEOUT_S) -> None:
        """Raises: restarting a server needs the project's own."""
        raise PostgresSetupError(
            f"restarting PostgreSQL needs the project's own server ({POSTGRES_DSN_ENV} is set)"
        )


def start_postgres() -> PostgresServer | ExternalPostgres:
    """Start a local server (temporary data directory), or use ``EOS_POSTGRES_DSN``."""
    external = os.environ.get(POSTGRES_DSN_ENV)
    if external:
        return ExternalPostgres(external)
    return PostgresServer().start()


if importlib.util.find_spec("pytest") is not None:
    # The launcher itself (and `eos dev-postgres`) works without pytest installed.
    import pytest

    @pytest.fixture(scope="session")
    def postgres() -> Iterator[PostgresServer | ExternalPostgres]:
        """One PostgreSQL for the session (or ``EOS_POSTGRES_DSN``'s), removed at the end."""
        server = start_postgres()
        try:
            yield server
        finally:
            server.cleanup()

    @pytest.fixture
    def postgres_dsn(postgres: PostgresServer | ExternalPostgres) -> str:
        """The session server's DSN."""
        return postgres.dsn
