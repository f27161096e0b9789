"""The sink's PostgreSQL session: connecting, the batch transaction, and what a failure means.

What a failure means (:func:`classify`), by SQLSTATE class where there is one:

=============  ===================================================  ==========================
``OUTAGE``     no connection or it broke (08, client-side errors),  roll back, back off, retry
               the server is shutting down or overloaded (57, 53),  the batch; the instance
               a conflict with another transaction (40: deadlock,   stops after
               serialization failure; 55P03 lock timeout), a        ``outage_timeout_s``
               read-only standby (25006), an internal error (58,
               XX)
``CONFIG``     the statement can never work: a missing table,       stop with a ConfigError
               column, function or schema, a syntax error, a
               missing privilege (42P01, 42703, 42883, 3F000,
               42601, 42501, 3D000, 0A000)
``RECORD``     anything else: a constraint violation (23), a bad    ``processing_error_policy``
               value (22), a trigger's error, a Python exception    for that record
=============  ===================================================  ==========================

Threading: the processing thread only.
"""

from __future__ import annotations

import enum
import logging
import time
from typing import Any

import psycopg
from psycopg import IsolationLevel as PgIsolation

from eos._stop import StopSignal
from eos.errors import ConfigError, SinkUnavailableError

__all__ = [
    "Database",
    "Failure",
    "Outage",
    "RowsCursor",
    "SinkConnection",
    "classify",
    "describe_error",
]

log = logging.getLogger("eos.sinks.postgres")

_OUTAGE_CLASSES = frozenset({"08", "57", "53", "58", "40", "XX"})
_OUTAGE_CODES = frozenset({"55P03", "55006", "25006", "25P03"})
_CONFIG_CODES = frozenset(
    {"42P01", "42703", "42883", "3F000", "42601", "42501", "3D000", "0A000", "42P02"}
)

_ISOLATION = {
    "read_committed": PgIsolation.READ_COMMITTED,
    "repeatable_read": PgIsolation.REPEATABLE_READ,
    "serializable": PgIsolation.SERIALIZABLE,
}

BACKOFF_BASE_S = 0.2
BACKOFF_CAP_S = 5.0


class Failure(enum.Enum):
    """What a failed statement (or a user's exception) means; see the module docstring."""

    OUTAGE = "outage"
    CONFIG = "config"
    RECORD = "record"


def classify(exc: BaseException) -> Failure:
    """The meaning of ``exc``, raised by ``process`` or by one of the engine's statements."""
    if not isinstance(exc, psycopg.Error):
        return Failure.RECORD
    code = exc.sqlstate
    if code is None:
        # Client side: the connection broke or was closed (no server answer).
        if isinstance(exc, psycopg.OperationalError | psycopg.InterfaceError):
            return Failure.OUTAGE
        return Failure.RECORD
    if code in _CONFIG_CODES:
        return Failure.CONFIG
    if code[:2] in _OUTAGE_CLASSES or code in _OUTAGE_CODES:
        return Failure.OUTAGE
    return Failure.RECORD


def describe_error(exc: BaseException) -> str:
    """``SQLSTATE name: message`` for a database error (never the dsn), else ``Type: text``."""
    if isinstance(exc, psycopg.Error):
        diag = exc.diag
        message = diag.message_primary or str(exc).strip().splitlines()[0] if str(exc) else ""
        code = exc.sqlstate
        detail = f" ({diag.message_detail})" if diag.message_detail else ""
        name = type(exc).__name__
        return f"{code + ' ' if code else ''}{name}: {message}{detail}"
    return f"{type(exc).__name__}: {exc}"


class RowsCursor(psycopg.Cursor[Any]):
    """The cursor ``process`` gets: a psycopg cursor that counts the rows its writes touch.

    ``rows`` counts what INSERT, UPDATE, DELETE and MERGE statements (and
    ``executemany``) report; SELECTs and ``copy()`` are not counted.
    """

    rows = 0

    def execute(self, query: Any, params: Any = None, **kwargs: Any) -> RowsCursor:
        super().execute(query, params, **kwargs)
        count = self.rowcount
        if count > 0:
            status = self.pgresult.command_status if self.pgresult is not None else None
            if status is not None and not status.startswith(b"SELECT"):
                self.rows += count
        return self

    def executemany(self, query: Any, params_seq: Any, **kwargs: Any) -> None:
        super().executemany(query, params_seq, **kwargs)
        if self.rowcount > 0:
            self.rows += self.rowcount


class SinkConnection(psycopg.Connection[Any]):
    """The sink's connection: ``commit()`` and ``rollback()`` are the engine's alone.

    A processor that calls them (``cur.connection.commit()``) would commit rows
    without their offsets; it gets a ConfigError instead. The engine uses
    :meth:`engine_commit` and :meth:`engine_rollback`.
    """

    def commit(self) -> None:
        raise ConfigError(
            "the processor called commit() on the sink's connection; the engine owns the "
            "transaction (the batch's offsets commit with its rows): remove the call",
            "processor",
        )

    def rollback(self) -> None:
        raise ConfigError(
            "the processor called rollback() on the sink's connection; the engine owns the "
            "transaction: raise an exception instead (processing_error_policy then applies)",
            "processor",
        )

    def engine_commit(self) -> None:
        psycopg.Connection.commit(self)

    def engine_rollback(self) -> None:
        psycopg.Connection.rollback(self)


class Database:
    """One connection to the sink's database, replaced after it broke.

    ``conn`` is None between a broken connection and the next :meth:`connect`.
    Every session sets ``idle_in_transaction_session_timeout`` (so the server
    ends a transaction whose instance was paused or died, releasing its row
    locks), ``application_name`` and the isolation level.

    Args:
        dsn: The connection string (never logged).
        where: ``user@host:port/db`` for logs.
        application_name: Shown in ``pg_stat_activity``.
        isolation_level: Of every transaction.
        idle_timeout_ms: ``idle_in_transaction_session_timeout``.
        connect_timeout_s: Per connection attempt.
    """

    def __init__(
        self,
        dsn: str,
        *,
        where: str,
        application_name: str,
        isolation_level: str,
        idle_timeout_ms: int,
        connect_timeout_s: float,
    ) -> None:
        self._dsn = dsn
        self.where = where
        self.application_name = application_name[:63]
        self.isolation = _ISOLATION[isolation_level]
        self.idle_timeout_ms = idle_timeout_ms
        self.connect_timeout_s = connect_timeout_s
        self.conn: SinkConnection | None = None
        self.cursor: RowsCursor | None = None
        self._own: psycopg.Cursor[Any] | None = None

    def __repr__(self) -> str:
        return f"Database({self.where}, connected={self.conn is not None})"

    def connect(self) -> None:
        """Connect if not connected (one attempt; raises ``psycopg.Error``)."""
        if self.conn is not None and not self.conn.closed:
            return
        self.discard()
        conn = SinkConnection.connect(
            self._dsn,
            autocommit=False,
            connect_timeout=max(1, round(self.connect_timeout_s)),
            application_name=self.application_name,
            options=f"-c idle_in_transaction_session_timeout={self.idle_timeout_ms}",
        )
        conn.isolation_level = self.isolation
        self.conn = conn
        self.cursor = RowsCursor(conn)
        self._own = conn.cursor()
        log.info("connected to PostgreSQL at %s", self.where)

    @property
    def own(self) -> psycopg.Cursor[Any]:
        """The engine's own cursor (offsets, savepoints); connected only."""
        if self._own is None:
            raise psycopg.OperationalError("not connected")
        return self._own

    @property
    def in_transaction(self) -> bool:
        """Whether a transaction is open (or failed and not rolled back yet)."""
        conn = self.conn
        if conn is None or conn.closed:
            return False
        return conn.info.transaction_status != psycopg.pq.TransactionStatus.IDLE

    @property
    def idle(self) -> bool:
        """Connected with no transaction open (a processor that committed shows here)."""
        conn = self.conn
        return (
            conn is not None
            and not conn.closed
            and conn.info.transaction_status == psycopg.pq.TransactionStatus.IDLE
        )

    def commit(self) -> None:
        if self.conn is None:
            raise psycopg.OperationalError("not connected")
        self.conn.engine_commit()

    def rollback(self) -> None:
        """Roll back what is open; a connection that cannot do even that is discarded."""
        conn = self.conn
        if conn is None:
            return
        try:
            conn.engine_rollback()
        except psycopg.Error as exc:
            log.info("rolling back failed (%s); dropping the connection", describe_error(exc))
            self.discard()

    def discard(self) -> None:
        """Close the connection without waiting for anything (the server rolls back)."""
        conn, self.conn, self.cursor, self._own = self.conn, None, None, None
        if conn is not None:
            try:
                conn.close()
            except Exception as exc:  # pragma: no cover - closing a dead socket
                log.debug("closing the connection failed: %s", exc)

    def classify(self, exc: BaseException) -> Failure:
        """:func:`classify`, except that anything that broke the connection is an outage."""
        conn = self.conn
        if isinstance(exc, psycopg.Error) and (conn is None or conn.closed or conn.broken):
            return Failure.OUTAGE
        return classify(exc)

    def take_rows(self) -> int:
        """Rows the user's statements wrote since the last call."""
        cursor = self.cursor
        if cursor is None:
            return 0
        rows, cursor.rows = cursor.rows, 0
        return rows


class Outage:
    """The current database outage: backoff between attempts, and its limit.

    Args:
        limit_s: How long an outage may last before :meth:`failed` raises.
        stop: Ends a wait early.
    """

    def __init__(self, limit_s: float, stop: StopSignal) -> None:
        self.limit_s = limit_s
        self.stop = stop
        self.since: float | None = None
        self.attempts = 0
        self.last_error = ""

    def failed(self, exc: BaseException, doing: str) -> None:
        """One more failed attempt; wait before the next. Raises past the limit."""
        now = time.monotonic()
        if self.since is None:
            self.since = now
        self.attempts += 1
        self.last_error = describe_error(exc)
        lasted = now - self.since
        if lasted >= self.limit_s:
            raise SinkUnavailableError(
                f"PostgreSQL has been unavailable for {lasted:.0f}s ({self.attempts} attempts "
                f"while {doing}; last error: {self.last_error}); stopping after "
                f"outage_timeout_s={self.limit_s:g}. Nothing uncommitted was written; a restart "
                "resumes from the offsets table"
            ) from exc
        delay = min(BACKOFF_CAP_S, BACKOFF_BASE_S * 2 ** min(self.attempts - 1, 10))
        log.warning(
            "PostgreSQL unavailable while %s (%s); retrying in %.1fs (outage %.0fs of %.0fs)",
            doing,
            self.last_error,
            delay,
            lasted,
            self.limit_s,
        )
        self.stop.wait(delay)

    def over(self) -> None:
        """The database answered again."""
        if self.since is not None:
            log.info("PostgreSQL is available again after %.1fs", time.monotonic() - self.since)
        self.since = None
        self.attempts = 0

    def seconds(self) -> float:
        return 0.0 if self.since is None else time.monotonic() - self.since
