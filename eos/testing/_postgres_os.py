"""The operating-system side of :mod:`eos.testing.postgres`: binaries, OS user, processes.

Finding the server binaries, running them as the ``postgres`` OS user under root
(and making the data directory reachable for it), the postmaster's pid and its
children from ``/proc``, free ports and socket paths.
"""

from __future__ import annotations

import importlib.util
import logging
import os
import pwd
import shutil
import socket
import stat
from pathlib import Path

from eos.errors import EosError

__all__ = ["POSTGRES_BIN_ENV", "POSTGRES_DSN_ENV", "PostgresSetupError", "find_postgres_bin"]

log = logging.getLogger("eos.testing.postgres")

POSTGRES_DSN_ENV = "EOS_POSTGRES_DSN"
"""A server you run yourself: set it and nothing is started."""

POSTGRES_BIN_ENV = "EOS_POSTGRES_BIN"
"""The directory holding ``initdb`` and ``postgres``, when discovery should not guess."""
DEBIAN_POSTGRES_ROOT = Path("/usr/lib/postgresql")
"""Where Debian's ``postgresql-<major>`` packages put ``<major>/bin``."""
SERVER_OS_USER = "postgres"
"""The OS user the server runs as when this process is root."""
_SUN_PATH_MAX = 107
"""Longest Unix socket path Linux accepts (``sun_path`` is 108 bytes with the NUL)."""


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
