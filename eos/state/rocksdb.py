"""RocksDB store partition on rocksdict, in raw (bytes) mode.

Layout: user data lives in the default column family; the changelog checkpoint
lives under a reserved key in the ``__eos_meta__`` column family, so it never
appears in data iteration and cannot collide with a user key. Every
:meth:`RocksDBStore.write` puts the data and the checkpoint in ONE
``WriteBatch``, so after any crash the checkpoint describes exactly the data
on disk.

Memory: the partitions of one store (the directories under
``<state_dir>/<application_id>/<store>/``) share ONE block cache and ONE
write-buffer budget (a RocksDB ``WriteBufferManager``) of the sizes the
:class:`~eos.state.base.Store` declares, so the store's native memory does not
grow with its partition count. Index and Bloom filter blocks live in that cache too
(level-0 ones pinned), so they do not grow with the data either. What stays
outside the cache is small: per open table file a reader, and the memtables
being flushed (up to one more write budget while a flush runs).

Writes go through the WAL without fsync. A process crash loses nothing the OS
already has; a machine crash may lose the tail of the WAL, but data and
checkpoint are lost together, so recovery only replays more of the changelog.

This is the only module that imports ``rocksdict``.
"""

from __future__ import annotations

import os
import struct
import threading
from collections.abc import Iterator, Mapping
from typing import cast

import rocksdict

from eos.errors import StateError
from eos.state.base import DEFAULT_ROCKSDB_BLOCK_CACHE_MB, DEFAULT_ROCKSDB_WRITE_BUFFER_MB

__all__ = ["META_COLUMN_FAMILY", "RocksDBStore"]

META_COLUMN_FAMILY = "__eos_meta__"
_OFFSET_KEY = b"changelog_offset"
_OFFSET = struct.Struct(">q")
_MIB = 1 << 20
# The checkpoint column family holds one key, rewritten at every commit: a
# small memtable flushes it often enough that it never pins old WAL files.
_META_WRITE_BUFFER = 1 * _MIB


class _Shared:
    """The block cache and write-buffer manager the open partitions of one store share."""

    __slots__ = ("cache", "users", "write_buffers")

    def __init__(self, block_cache_mb: int, write_buffer_mb: int) -> None:
        self.cache = rocksdict.Cache(block_cache_mb * _MIB)
        # allow_stall=False: past the budget RocksDB flushes; it never blocks a
        # commit's write waiting for memory.
        self.write_buffers = rocksdict.WriteBufferManager(write_buffer_mb * _MIB, False)
        self.users = 0


# (store directory, block cache MiB, write buffer MiB) -> what its open partitions share.
# An entry lives while a partition of the store is open, so a store closed and
# reopened (revocation, then assignment) starts with an empty cache, as it would
# after a restart.
_SHARED: dict[tuple[str, int, int], _Shared] = {}
_SHARED_LOCK = threading.Lock()


def _acquire(key: tuple[str, int, int]) -> _Shared:
    with _SHARED_LOCK:
        shared = _SHARED.get(key)
        if shared is None:
            shared = _SHARED[key] = _Shared(key[1], key[2])
        shared.users += 1
        return shared


def _release(key: tuple[str, int, int]) -> None:
    with _SHARED_LOCK:
        shared = _SHARED.get(key)
        if shared is not None:
            shared.users -= 1
            if shared.users <= 0:
                del _SHARED[key]


def _options(shared: _Shared | None = None, write_buffer_mb: int = 0) -> rocksdict.Options:
    options = rocksdict.Options(raw_mode=True)
    options.create_if_missing(True)
    options.create_missing_column_families(True)
    if shared is not None:
        options.set_write_buffer_manager(shared.write_buffers)
        options.set_block_based_table_factory(_table_options(shared))
        # One partition alone may use the store's whole budget; with several,
        # the shared manager flushes the writing partition's memtable first.
        options.set_write_buffer_size(write_buffer_mb * _MIB)
    return options


def _meta_options(shared: _Shared) -> rocksdict.Options:
    options = rocksdict.Options(raw_mode=True)
    options.set_block_based_table_factory(_table_options(shared))
    options.set_write_buffer_size(_META_WRITE_BUFFER)
    return options


def _table_options(shared: _Shared) -> rocksdict.BlockBasedOptions:
    table = rocksdict.BlockBasedOptions()
    table.set_block_cache(shared.cache)
    # Index and filter blocks count against the cache (else every table file
    # keeps them on the heap, growing with the data); level-0 ones, the
    # hottest, stay pinned so a small cache does not evict them.
    table.set_cache_index_and_filter_blocks(True)
    table.set_pin_l0_filter_and_index_blocks_in_cache(True)
    # A full Bloom filter (10 bits a key, ~1% false positives, as Kafka Streams
    # configures): a get of a key the store does not hold (every first update of
    # a key) skips the table files instead of reading a block of each.
    table.set_bloom_filter(10, False)
    return table


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
        block_cache_mb: Block cache size in MiB, shared with the other open
            stores in the same parent directory opened with the same sizes
            (the partitions of one store).
        write_buffer_mb: Memtable budget in MiB, shared likewise.

    Raises:
        StateError: If the database cannot be opened, in particular when
            another process (or another open store in this process) holds its
            lock.
    """

    __slots__ = ("_closed", "_db", "_label", "_meta", "_meta_cf", "_path", "_shared_key")

    _db: rocksdict.Rdict
    _meta: rocksdict.Rdict
    _meta_cf: rocksdict.ColumnFamily

    def __init__(
        self,
        path: str,
        name: str = "rocksdb",
        partition: int = 0,
        *,
        block_cache_mb: int = DEFAULT_ROCKSDB_BLOCK_CACHE_MB,
        write_buffer_mb: int = DEFAULT_ROCKSDB_WRITE_BUFFER_MB,
    ) -> None:
        self._path = path
        self._label = f"{name}[{partition}]"
        store_dir = os.path.dirname(os.path.abspath(path))
        self._shared_key = (store_dir, block_cache_mb, write_buffer_mb)
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
        shared = _acquire(self._shared_key)
        try:
            os.makedirs(path, exist_ok=True)
            db = rocksdict.Rdict(
                path,
                _options(shared, self._shared_key[2]),
                column_families={META_COLUMN_FAMILY: _meta_options(shared)},
            )
        except Exception as exc:
            _release(self._shared_key)
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
        try:
            # The column-family objects hold references to the database; drop
            # them first so that closing the main handle really releases the lock.
            del self._meta_cf
            self._meta.close()
            del self._meta
            self._db.close()
        except rocksdict.DbClosedError:
            pass
        except Exception as exc:
            raise StateError(f"closing store {self._label} at {self._path!r} failed") from exc
        finally:
            _release(self._shared_key)

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
