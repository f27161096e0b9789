"""``PostgresProcessor``: the user's side of the PostgreSQL sink."""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any, ClassVar, Final, Generic, Literal

from psycopg.conninfo import conninfo_to_dict

from eos.errors import ConfigError
from eos.record import K, Record, V
from eos.sinks.base import Sink, SinkEngine

if TYPE_CHECKING:
    import psycopg

    from eos._stop import StopSignal
    from eos.config import Config
    from eos.faults import Faults
    from eos.stats import EngineStats

__all__ = [
    "DEFAULT_CONNECT_TIMEOUT_S",
    "DEFAULT_LOCK_TIMEOUT_MS",
    "DEFAULT_OFFSETS_TABLE",
    "DEFAULT_OUTAGE_TIMEOUT_S",
    "IsolationLevel",
    "PostgresProcessor",
]

IsolationLevel = Literal["read_committed", "repeatable_read", "serializable"]

DEFAULT_OFFSETS_TABLE: Final = "eos_offsets"
DEFAULT_OUTAGE_TIMEOUT_S: Final = 300.0
"""How long the database may stay unreachable before the instance stops."""
DEFAULT_CONNECT_TIMEOUT_S: Final = 10.0
DEFAULT_LOCK_TIMEOUT_MS: Final = 5000
"""How long claiming a partition waits for its offsets row's lock before it retries."""

_ISOLATION_LEVELS: Final = ("read_committed", "repeatable_read", "serializable")


class PostgresProcessor(Sink, Generic[K, V]):
    """Writes records into PostgreSQL exactly once: rows and input offsets in one transaction.

    Subclass it, implement :meth:`process` with the statements for one record,
    and give an instance to :class:`eos.Application` as its ``processor``::

        class SaveOrders(PostgresProcessor):
            def process(self, record, cur):
                cur.execute("INSERT INTO orders (id, total) VALUES (%s, %s)",
                            (record.value["id"], record.value["total"]))

    ``PostgresProcessor[K, V]`` types ``record`` as ``Record[K, V]`` (what the
    input's serdes decode to), as ``eos.Processor[K, V]`` does.

    Per batch the engine opens one database transaction, calls ``process``
    for each record with a cursor in it, updates the batch's input positions
    in the offsets table (only where this instance's epoch still holds), and
    commits. Positions are read back from that table when partitions are
    assigned; Kafka's committed offsets are never used. See ``docs/sinks.md``.

    Lifecycle and threading: everything runs on the thread that called
    ``Application.run``: :meth:`setup` once (in a transaction of its own,
    committed before the first record), :meth:`process` per record,
    :meth:`teardown` once at the end. Never commit or roll back in
    ``process``: the engine owns the transaction (a processor that commits is
    stopped with a :class:`~eos.errors.ConfigError`).

    Args:
        dsn: The libpq connection string or URI. Its password never appears
            in a log, an error or ``repr``.
        offsets_table: The offsets table (``schema.table`` allowed), created
            if missing.
        isolation_level: Of the batch transactions. ``read_committed`` (the
            default) is enough for the offsets protocol, whose row locks
            serialize the writers of a partition; serialization failures under
            the stricter levels are retried, never blamed on a record.
        outage_timeout_s: How long the database may stay unreachable (or keep
            failing with transient errors) before the instance stops with
            :class:`~eos.errors.SinkUnavailableError`.
        commit_kafka_offsets: Also commit the positions to the consumer group
            after each database commit (asynchronously), so Kafka's lag tools
            show progress. eos never reads them back.
        connect_timeout_s: For each connection attempt.
        lock_timeout_ms: How long claiming a partition waits for the lock on
            its offsets row (held by a writer that is paused) before retrying.
    """

    sink_name: ClassVar[str] = "postgres"

    def __init__(
        self,
        dsn: str,
        *,
        offsets_table: str = DEFAULT_OFFSETS_TABLE,
        isolation_level: IsolationLevel = "read_committed",
        outage_timeout_s: float = DEFAULT_OUTAGE_TIMEOUT_S,
        commit_kafka_offsets: bool = True,
        connect_timeout_s: float = DEFAULT_CONNECT_TIMEOUT_S,
        lock_timeout_ms: int = DEFAULT_LOCK_TIMEOUT_MS,
    ) -> None:
        if not isinstance(dsn, str) or not dsn.strip():
            raise ConfigError("PostgresProcessor needs a dsn (a libpq connection string)", "dsn")
        try:
            parts = conninfo_to_dict(dsn)
        except Exception as exc:  # psycopg.ProgrammingError: the text never echoes the dsn
            raise ConfigError(
                f"invalid dsn for PostgresProcessor: {type(exc).__name__}", "dsn"
            ) from None
        self._dsn = dsn
        self._where = _describe(parts)
        self.offsets_table = _table_name(offsets_table)
        if isolation_level not in _ISOLATION_LEVELS:
            raise ConfigError(
                f"invalid isolation_level {isolation_level!r}; allowed: "
                + ", ".join(_ISOLATION_LEVELS),
                "isolation_level",
            )
        self.isolation_level: IsolationLevel = isolation_level
        self.outage_timeout_s = _positive("outage_timeout_s", outage_timeout_s)
        self.connect_timeout_s = _positive("connect_timeout_s", connect_timeout_s)
        self.lock_timeout_ms = int(_positive("lock_timeout_ms", lock_timeout_ms))
        self.commit_kafka_offsets = bool(commit_kafka_offsets)

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self._where}, offsets_table={self.offsets_table!r})"

    @property
    def dsn(self) -> str:
        """The connection string (holds the password, if any: never log it)."""
        return self._dsn

    @property
    def where(self) -> str:
        """``user@host:port/dbname`` of the database, without the password (for logs)."""
        return self._where

    # -- hooks the user implements -------------------------------------------

    def setup(self, cur: psycopg.Cursor[Any]) -> None:
        """Called once at start, in a transaction of its own that commits before the first
        record (``CREATE TABLE IF NOT EXISTS ...``). Retried with the connection on an outage."""

    def process(self, record: Record[K, V], cur: psycopg.Cursor[Any]) -> None:
        """Write one record: ``cur`` is a cursor in the batch's transaction.

        An exception is the record's (``processing_error_policy`` applies),
        unless it says the database is unreachable or overloaded (then the
        batch is retried after a backoff) or that the statement can never work
        (a missing table or privilege: the instance stops with a ConfigError).
        """
        raise NotImplementedError

    def teardown(self) -> None:
        """Called once when the instance stops (after the last commit)."""

    # -- the engine ----------------------------------------------------------

    def check(self, config: Config) -> None:
        if type(self).process is PostgresProcessor.process:
            raise ConfigError(
                f"{type(self).__name__} does not implement process(self, record, cur); eos "
                "calls it once per input record",
                "processor",
            )
        if config.processing_guarantee != "exactly_once_v2":
            raise ConfigError(
                f"processing_guarantee={config.processing_guarantee!r} does not apply to "
                f"{type(self).__name__}: its batches commit in PostgreSQL transactions together "
                "with their input offsets, always exactly once; leave processing_guarantee unset",
                "processing_guarantee",
            )

    def engine(
        self, config: Config, *, stats: EngineStats, stop: StopSignal, faults: Faults
    ) -> SinkEngine:
        from eos.sinks.postgres._engine import PostgresEngine

        return PostgresEngine(config, self, stats=stats, stop=stop, faults=faults)


def _describe(parts: dict[str, Any]) -> str:
    user = parts.get("user") or ""
    host = parts.get("host") or "localhost"
    port = parts.get("port") or "5432"
    dbname = parts.get("dbname") or user or ""
    return f"{user + '@' if user else ''}{host}:{port}/{dbname}"


def _table_name(name: str) -> str:
    parts = name.split(".") if isinstance(name, str) else []
    if not 1 <= len(parts) <= 2 or not all(p and p.replace("_", "a").isalnum() for p in parts):
        raise ConfigError(
            f"invalid offsets_table {name!r}: a table name or schema.table of letters, digits "
            "and underscores",
            "offsets_table",
        )
    return name


def _positive(key: str, value: float) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not value > 0:
        raise ConfigError(f"invalid {key} {value!r}: must be a positive number", key)
    if not math.isfinite(value):
        raise ConfigError(f"invalid {key} {value!r}: must be finite", key)
    return float(value)
