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
import socket
import stat
import subprocess
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from eos.errors import EosError
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

POSTGRES_DSN_ENV = "EOS_POSTGRES_DSN"
"""A server you run yourself: set it and nothing is started."""
POSTGRES_BIN_ENV = "EOS_POSTGRES_BIN"
"""The directory holding ``initdb`` and ``postgres``, when discovery should not guess."""
DEBIAN_POSTGRES_ROOT = Path("/usr/lib/postgresql")
"""Where Debian's ``postgresql-<major>`` packages put ``<major>/bin``."""
SUPERUSER = "eos"
DATABASE = "eos"
SERVER_OS_USER = "postgres"
"""The OS user the server runs as when this process is root."""
DEFAULT_START_TIMEOUT_S = 60.0
DEFAULT_STOP_TIMEOUT_S = 30.0
_POLL_S = 0.05
_SUN_PATH_MAX = 107
"""Longest Unix socket path Linux accepts (``sun_path`` is 108 bytes with the NUL)."""

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


class PostgresSetupError(EosError):
    """The local PostgreSQL could not be found, initialised or started.

    Raised by :func:`find_postgres_bin` and :class:`PostgresServer` (and by
    :class:`ExternalPostgres` for a fault it cannot inject). The message says what
    is missing (the server binaries, the ``postgres`` OS user under root,
    psycopg) or carries the tail of the initdb output or of ``server.log``.
    Install what it names, or run a server yourself and set ``EOS_POSTGRES_DSN``.
    """


def _has_server(directory: Path) -> bool:
    return all(os.access(directory / name, os.X_OK) for name in ("initdb", "postgres"))


def _version_key(bin_dir: Path) -> tuple[int, ...]:
    """``/usr/lib/postgresql/9.6/bin`` -> ``(9, 6)``, so 13 sorts after 9.6."""
    try:
        return tuple(int(part) for part in bin_dir.parent.name.split("."))
    except ValueError:
        return (-1,)


def find_postgres_bin() -> Path:
    """The directory holding PostgreSQL's ``initdb`` and ``postgres``.

    ``$EOS_POSTGRES_BIN`` wins; then the directory of ``initdb`` on ``PATH``
    (symlinks resolved, so ``/usr/local/bin/initdb -> /usr/lib/postgresql/15/bin``
    gives the latter); then the newest ``/usr/lib/postgresql/<major>/bin``.

    Raises:
        PostgresSetupError: ``$EOS_POSTGRES_BIN`` lacks the binaries, or none were found.
    """
    configured = os.environ.get(POSTGRES_BIN_ENV)
    if configured:
        directory = Path(configured)
        if not _has_server(directory):
            raise PostgresSetupError(
                f"{POSTGRES_BIN_ENV}={configured} holds no executable initdb and postgres; "
                f"point it at PostgreSQL's bin directory or unset it"
            )
        return directory
    initdb = shutil.which("initdb")
    if initdb is not None:
        directory = Path(initdb).resolve().parent
        if _has_server(directory):
            return directory
    found = [d for d in DEBIAN_POSTGRES_ROOT.glob("*/bin") if _has_server(d)]
    if found:
        return max(found, key=_version_key)
    raise PostgresSetupError(
        f"no PostgreSQL server binaries (initdb, postgres) in ${POSTGRES_BIN_ENV}, on PATH or "
        f"in {DEBIAN_POSTGRES_ROOT}/*/bin: install them (`apt-get install postgresql` on "
        f"Debian and Ubuntu), or set {POSTGRES_BIN_ENV} to their directory, or set "
        f"{POSTGRES_DSN_ENV} to a server you run yourself"
    )


def _require_psycopg() -> None:
    if importlib.util.find_spec("psycopg") is None:
        raise PostgresSetupError(
            "psycopg is needed to check the local PostgreSQL is ready: "
            "pip install 'eos-kafka[postgres]'"
        )


def _server_account() -> pwd.struct_passwd | None:
    """The OS user to run the server as: None (ourselves) unless we are root."""
    if os.geteuid() != 0:
        return None
    try:
        return pwd.getpwnam(SERVER_OS_USER)
    except KeyError:
        raise PostgresSetupError(
            "PostgreSQL refuses to run as root and this process is root, but there is no "
            f"`{SERVER_OS_USER}` OS user to run it as: install Debian's package "
            "(`apt-get install postgresql` creates the user), or create one "
            f"(`useradd --system --user-group {SERVER_OS_USER}`), or run as an ordinary user"
        ) from None


def _make_reachable(path: Path, account: pwd.struct_passwd) -> None:
    """Let ``account`` search every parent of ``path`` (adds ``o+x`` where it could not).

    Search only: the directories stay unreadable to it, so it can open the data
    directory by name and list nothing else. ``tempfile.mkdtemp``'s parents
    (``/tmp``) need nothing; a cache under ``/root`` (mode 0700) does.
    """
    groups = set(os.getgrouplist(account.pw_name, account.pw_gid))
    changed = []
    for parent in reversed(path.parents):
        info = parent.stat()
        if info.st_uid == account.pw_uid:
            reachable = bool(info.st_mode & stat.S_IXUSR)
        elif info.st_gid in groups:
            reachable = bool(info.st_mode & stat.S_IXGRP)
        else:
            reachable = bool(info.st_mode & stat.S_IXOTH)
        if not reachable:
            os.chmod(parent, stat.S_IMODE(info.st_mode) | stat.S_IXOTH)
            changed.append(str(parent))
    if changed:
        log.warning(
            "made %s searchable by others (o+x, not readable) so the %r OS user can reach %s",
            ", ".join(changed),
            account.pw_name,
            path,
        )


def _proc_stat(pid: int | str) -> list[str] | None:
    """``/proc/<pid>/stat`` after the command name (state, ppid, ...); None without /proc."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return None


def _alive(pid: int) -> bool:
    """Whether ``pid`` runs; a zombie (exited, not yet reaped) counts as gone."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    fields = _proc_stat(pid)
    return fields is None or fields[0] != "Z"


def _children(pid: int) -> list[int]:
    """Processes whose parent is ``pid`` (from ``/proc``; empty where there is none)."""
    if not os.path.isdir("/proc"):
        return []
    found = []
    for entry in os.listdir("/proc"):
        fields = _proc_stat(entry) if entry.isdigit() else None
        if fields is not None and int(fields[1]) == pid:
            found.append(int(entry))
    return found


def _postmaster_pid(data_dir: Path) -> int | None:
    """The live postmaster ``data_dir/postmaster.pid`` names, else None.

    A lock file a crash left behind may name a pid reused by another program
    (after a reboot, say): where ``/proc`` shows it, the process must also be
    working in ``data_dir``, or it is not ours to signal.
    """
    try:
        pid = int((data_dir / "postmaster.pid").read_text().split("\n", 1)[0])
    except (OSError, ValueError):
        return None
    if not _alive(pid):
        return None
    try:
        cwd = os.readlink(f"/proc/{pid}/cwd")
    except OSError:
        return pid
    return pid if os.path.realpath(cwd) == os.path.realpath(data_dir) else None


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def _socket_directories(data_dir: Path) -> str:
    """``unix_socket_directories``: the data directory, or none when its path is too long.

    Linux caps a socket path at 107 bytes; past that PostgreSQL would refuse to
    start, and clients here use TCP on 127.0.0.1 anyway.
    """
    text = str(data_dir)
    if '"' in text or len(os.fsencode(text)) + len("/.s.PGSQL.65535") > _SUN_PATH_MAX:
        return ""
    return f'"{text}"'


def _tail(path: Path, lines: int = 30) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no server log)"


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
