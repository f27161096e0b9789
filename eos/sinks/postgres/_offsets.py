"""The offsets table: input positions and per-partition epochs, in the sink's database.

One row per (application, topic, partition)::

    application  text     the application_id
    topic        text
    partition    integer
    next_offset  bigint   the next input offset to process (NULL: none committed yet)
    epoch        bigint   bumped on every assignment of the partition
    owner        text     the transactional id of the instance that holds the epoch
    updated_at   timestamptz

Protocol (each step one statement, inside the caller's transaction):

- :meth:`OffsetsTable.claim` on assignment: insert the row or bump its epoch,
  returning the position and the new epoch. The row lock it takes waits for
  a writer committing that partition at this moment, so the position read is
  the one that writer committed.
- :meth:`OffsetsTable.advance` in each batch transaction, just before its
  commit: set ``next_offset`` only where the epoch is still the one this
  instance claimed. A partition whose row did not match was claimed by another
  instance since: the batch must roll back (nothing of it is written).
- :meth:`OffsetsTable.read` after a failure: the committed positions and
  epochs, to resume from (a commit whose outcome was lost shows here).

The statements need no isolation level above READ COMMITTED: under it an
UPDATE that waited for a row lock re-checks its WHERE clause against the row
as committed by the other writer, so a stale epoch never matches.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from psycopg import Cursor, sql

from eos._batch import TP

__all__ = ["Claim", "OffsetsTable"]

Claim = tuple[int | None, int]
"""``(next_offset or None, epoch)`` of a partition."""


class OffsetsTable:
    """The statements of the offsets protocol for one application; see the module docstring.

    Args:
        name: ``table`` or ``schema.table``.
        application: The application id (rows of other applications are never touched).
        owner: This instance's transactional id (shown in the ``owner`` column).
    """

    def __init__(self, name: str, application: str, owner: str) -> None:
        self.name = name
        self.application = application
        self.owner = owner
        table = sql.Identifier(*name.split("."))
        # As the statements name it (quoted: case kept); the name holds no quotes.
        self._quoted = ".".join(f'"{part}"' for part in name.split("."))
        self._create = sql.SQL(
            "CREATE TABLE IF NOT EXISTS {} ("
            " application text NOT NULL,"
            " topic text NOT NULL,"
            " partition integer NOT NULL,"
            " next_offset bigint,"
            " epoch bigint NOT NULL,"
            " owner text,"
            " updated_at timestamptz NOT NULL DEFAULT now(),"
            " PRIMARY KEY (application, topic, partition))"
        ).format(table)
        self._claim = sql.SQL(
            "INSERT INTO {t} AS o (application, topic, partition, next_offset, epoch, owner)"
            " SELECT %s, u.topic, u.partition, NULL, 1, %s"
            " FROM unnest(%s::text[], %s::integer[]) AS u(topic, partition)"
            " ORDER BY u.topic, u.partition"
            " ON CONFLICT (application, topic, partition) DO UPDATE"
            " SET epoch = o.epoch + 1, owner = EXCLUDED.owner, updated_at = now()"
            " RETURNING o.topic, o.partition, o.next_offset, o.epoch"
        ).format(t=table)
        self._advance = sql.SQL(
            "UPDATE {t} AS o SET next_offset = v.next_offset, updated_at = now()"
            " FROM unnest(%s::text[], %s::integer[], %s::bigint[], %s::bigint[])"
            " AS v(topic, partition, next_offset, epoch)"
            " WHERE o.application = %s AND o.topic = v.topic AND o.partition = v.partition"
            " AND o.epoch = v.epoch"
            " RETURNING o.topic, o.partition"
        ).format(t=table)
        self._read = sql.SQL(
            "SELECT o.topic, o.partition, o.next_offset, o.epoch FROM {t} AS o"
            " JOIN unnest(%s::text[], %s::integer[]) AS u(topic, partition)"
            " ON o.topic = u.topic AND o.partition = u.partition"
            " WHERE o.application = %s"
        ).format(t=table)

    def create(self, cur: Cursor[Any]) -> None:
        """Create the table if it does not exist.

        Looked up first: ``CREATE TABLE IF NOT EXISTS`` needs the CREATE privilege
        on the schema even when the table exists, which a least-privilege role
        given a table its DBA made does not have.
        """
        cur.execute("SELECT to_regclass(%s)", (self._quoted,))
        row = cur.fetchone()
        if row is None or row[0] is None:
            cur.execute(self._create)

    def claim(self, cur: Cursor[Any], tps: Iterable[TP]) -> dict[TP, Claim]:
        """Bump the epoch of each partition (inserting missing rows); their positions and epochs."""
        ordered = sorted(set(tps))
        if not ordered:
            return {}
        cur.execute(
            self._claim,
            (self.application, self.owner, [t for t, _ in ordered], [p for _, p in ordered]),
        )
        return {(t, p): (n, e) for t, p, n, e in cur.fetchall()}

    def advance(
        self, cur: Cursor[Any], positions: Mapping[TP, int], epochs: Mapping[TP, int]
    ) -> set[TP]:
        """Move the positions where the epoch still holds; return the partitions that did not."""
        tps = sorted(positions)
        if not tps:
            return set()
        cur.execute(
            self._advance,
            (
                [t for t, _ in tps],
                [p for _, p in tps],
                [positions[tp] for tp in tps],
                [epochs[tp] for tp in tps],
                self.application,
            ),
        )
        moved = {(t, p) for t, p in cur.fetchall()}
        return set(tps) - moved

    def read(self, cur: Cursor[Any], tps: Iterable[TP]) -> dict[TP, Claim]:
        """The committed positions and epochs of ``tps`` (missing rows are left out)."""
        ordered = sorted(set(tps))
        if not ordered:
            return {}
        cur.execute(
            self._read, ([t for t, _ in ordered], [p for _, p in ordered], self.application)
        )
        return {(t, p): (n, e) for t, p, n, e in cur.fetchall()}

    def describe(self) -> str:
        return f"{self.name} (application {self.application!r})"
