"""Exactly-once from Kafka into PostgreSQL: rows and input offsets in one database transaction.

Needs psycopg 3: ``pip install "eos-kafka[postgres]"``. See
:class:`PostgresProcessor` and ``docs/sinks.md``.
"""

from __future__ import annotations

try:
    import psycopg  # noqa: F401
except ImportError as exc:  # pragma: no cover - depends on the environment
    raise ImportError(
        "eos.sinks.postgres needs psycopg 3: pip install 'eos-kafka[postgres]'"
    ) from exc

from eos.sinks.postgres.processor import (
    DEFAULT_CONNECT_TIMEOUT_S,
    DEFAULT_LOCK_TIMEOUT_MS,
    DEFAULT_OFFSETS_TABLE,
    DEFAULT_OUTAGE_TIMEOUT_S,
    IsolationLevel,
    PostgresProcessor,
)

__all__ = [
    "DEFAULT_CONNECT_TIMEOUT_S",
    "DEFAULT_LOCK_TIMEOUT_MS",
    "DEFAULT_OFFSETS_TABLE",
    "DEFAULT_OUTAGE_TIMEOUT_S",
    "IsolationLevel",
    "PostgresProcessor",
]
