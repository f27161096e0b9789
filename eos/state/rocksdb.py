"""RocksDB store partition on rocksdict, in raw (bytes) mode.

Layout: user data lives in the default column family; the changelog checkpoint
lives under a reserved key in the ``__eos_meta__`` column family, so it never
appears in data iteration and cannot collide with a user key. Every
:meth:`RocksDBStore.write` puts the data and the checkpoint in ONE
``WriteBatch``, so after any crash the checkpoint describes exactly the data
on disk.

Writes go through the WAL without fsync. A process crash loses nothing the OS
already has; a machine crash may lose the tail of the WAL, but data and
checkpoint are lost together, so recovery only replays more of the changelog.

This is the only module that imports ``rocksdict``.
"""

from __future__ import annotations

import os
import struct
from collections.abc import Iterator, Mapping
from typing import cast

import rocksdict

from eos.errors import StateError

__all__ = ["META_COLUMN_FAMILY", "RocksDBStore"]

META_COLUMN_FAMILY = "__eos_meta__"
_OFFSET_KEY = b"changelog_offset"
_OFFSET = struct.Struct(">q")


def _options() -> rocksdict.Options:
    options = rocksdict.Options(raw_mode=True)
    options.create_if_missing(True)
    options.create_missing_column_families(True)
    return options


class RocksDBStore:
    """A :class:`~eos.state.base.StateStore` backed by a RocksDB directory.

    Opening takes RocksDB's ``LOCK`` file, so one store partition directory is
    owned by at most one open store at a time, across processes too.

    Iterators keep the database alive: exhaust or drop them before
    :meth:`close` or :meth:`wipe`, or the lock is not released until they are
    garbage-collected.

    Args:
        path: Database directory; it and missing parents are created.
        name: Store name, used in error messages.
        partition: Partition number, used in error messages.

    Raises:
        StateError: If the database cannot be opened, in particular when
            another process (or another open store in this process) holds its
            lock.
    """

    __slots__ = ("_closed", "_db", "_label", "_meta", "_meta_cf", "_path")

    _db: rocksdict.Rdict
    _meta: rocksdict.Rdict
    _meta_cf: rocksdict.ColumnFamily

    def __init__(self, path: str, name: str = "rocksdb", partition: int = 0) -> None:
        self._path = path
        self._label = f"{name}[{partition}]"
        self._closed = True
        self._open()

    def __repr__(self) -> str:
        state = "closed" if self._closed else "open"
        return f"RocksDBStore({self._label}, {self._path!r}, {state})"

    @property
    def path(self) -> str:
        """The database directory."""
        return self._path

    def _open(self) -> None:
        path = self._path
        try:
            os.makedirs(path, exist_ok=True)
            db = rocksdict.Rdict(
                path,
                _options(),
                column_families={META_COLUMN_FAMILY: rocksdict.Options(raw_mode=True)},
            )
        except Exception as exc:
            # rocksdict raises a bare Exception carrying RocksDB's status text.
            message = str(exc)
            if "LOCK" in message or "lock" in message:
                raise StateError(
                    f"store {self._label} at {path!r} is locked: another process (or another "
                    "open store in this one) is using it. Only one instance may own a store "
                    "partition; stop the other instance or give each instance its own "
                    f"state directory. RocksDB said: {message}"
                ) from exc
            raise StateError(
                f"cannot open RocksDB store {self._label} at {path!r}: {message}"
            ) from exc
        self._db = db
        self._meta = db.get_column_family(META_COLUMN_FAMILY)
        self._meta_cf = db.get_column_family_handle(META_COLUMN_FAMILY)
        self._closed = False

    def _closed_error(self) -> StateError:
        return StateError(f"store {self._label} at {self._path!r} is closed")

    def get(self, key: bytes) -> bytes | None:
        """Return the value stored under ``key``, or ``None`` when absent."""
        try:
            return cast("bytes | None", self._db.get(key))
        except rocksdict.DbClosedError:
            raise self._closed_error() from None

    def iterate(
        self,
        start: bytes | None = None,
        end: bytes | None = None,
        reverse: bool = False,
    ) -> Iterator[tuple[bytes, bytes]]:
        """Yield ``(key, value)`` with ``start <= key < end`` in byte order."""
        if self._closed:
            raise self._closed_error()
        db = self._db
        if reverse:
            # Backwards from_key seeks to the last key <= end; end is exclusive.
            items = db.items(backwards=True, from_key=end)
            return _reverse(cast("Iterator[tuple[bytes, bytes]]", items), start, end)
        items = db.items(from_key=start)
        if end is None:
            return cast("Iterator[tuple[bytes, bytes]]", items)
        return _forward(cast("Iterator[tuple[bytes, bytes]]", items), end)

    def write(self, changes: Mapping[bytes, bytes | None], changelog_offset: int) -> None:
        """Apply puts and deletes plus the checkpoint in one WriteBatch."""
        if self._closed:
            raise self._closed_error()
        if changelog_offset < 0:
            raise StateError(
                f"store {self._label}: changelog offset must be >= 0, got {changelog_offset}"
            )
        batch = rocksdict.WriteBatch(raw_mode=True)
        put = batch.put
        delete = batch.delete
        try:
            for key, value in changes.items():
                if value is None:
                    delete(key)
                else:
                    put(key, value)
            put(_OFFSET_KEY, _OFFSET.pack(changelog_offset), self._meta_cf)
            self._db.write(batch)
        except Exception as exc:
            raise StateError(
                f"write to store {self._label} at {self._path!r} failed: {exc}"
            ) from exc

    def changelog_offset(self) -> int | None:
        """Return the stored checkpoint, or ``None`` if none was ever written."""
        if self._closed:
            raise self._closed_error()
        raw = self._meta.get(_OFFSET_KEY)
        if raw is None:
            return None
        return cast(int, _OFFSET.unpack(raw)[0])

    def close(self) -> None:
        """Flush and close the database, releasing its lock. Idempotent."""
        if self._closed:
            return
        self._closed = True
        # The column-family objects hold references to the database; drop them
        # first so that closing the main handle really releases the lock.
        del self._meta_cf
        self._meta.close()
        del self._meta
        try:
            self._db.close()
        except rocksdict.DbClosedError:
            pass
        except Exception as exc:
            raise StateError(f"closing store {self._label} at {self._path!r} failed") from exc

    def wipe(self) -> None:
        """Destroy the database directory and reopen it empty."""
        if self._closed:
            raise self._closed_error()
        self.close()
        try:
            rocksdict.Rdict.destroy(self._path, _options())
        except Exception as exc:
            raise StateError(f"wiping store {self._label} at {self._path!r} failed: {exc}") from exc
        self._open()


def _forward(items: Iterator[tuple[bytes, bytes]], end: bytes) -> Iterator[tuple[bytes, bytes]]:
    for item in items:
        if item[0] >= end:
            return
        yield item


def _reverse(
    items: Iterator[tuple[bytes, bytes]], start: bytes | None, end: bytes | None
) -> Iterator[tuple[bytes, bytes]]:
    for item in items:
        key = item[0]
        if key == end:
            continue
        if start is not None and key < start:
            return
        yield item
