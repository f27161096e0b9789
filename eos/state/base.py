"""Store declarations and the backend contract for one store partition.

A processor declares its stores with :class:`Store`. At assignment the engine
opens one backend per (store, input partition) with :func:`open_backend`; the
backend implements :class:`StateStore`, a bytes-in, bytes-out ordered
key-value map that also keeps the changelog checkpoint. Serialization and the
per-transaction overlay live one level up, in :mod:`eos.state.transaction`.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Generic, Protocol, runtime_checkable

from eos.errors import ConfigError, StateError
from eos.record import K, V
from eos.serde import Serde, resolve_serde

if TYPE_CHECKING:
    from eos.state.transaction import StoreTransaction

__all__ = [
    "BACKENDS",
    "DEFAULT_BACKEND",
    "DEFAULT_ROCKSDB_BLOCK_CACHE_MB",
    "DEFAULT_ROCKSDB_WRITE_BUFFER_MB",
    "DEFAULT_SERDE",
    "MAX_ROCKSDB_MB",
    "StateStore",
    "Store",
    "StoreBackendFactory",
    "open_backend",
]

DEFAULT_BACKEND = "rocksdb"
DEFAULT_SERDE = "json"
BACKENDS = ("rocksdb", "memory")

DEFAULT_ROCKSDB_BLOCK_CACHE_MB = 16
"""MiB of RocksDB block cache (data, index and filter blocks) per store, shared by
its partitions. Small on purpose: reads of recently written keys are served from
the overlay and the memtables, and a 16 MiB cache keeps the store's memory
predictable in a 256-512 MiB container; raise it when a read-heavy store's
working set outgrows it."""
DEFAULT_ROCKSDB_WRITE_BUFFER_MB = 16
"""MiB of RocksDB memtables (write buffers) per store, shared by its partitions:
when they hold more, RocksDB flushes one to disk. A memtable being flushed is
counted until it is on disk, so the peak is up to twice this."""
MAX_ROCKSDB_MB = 1 << 20
"""Largest accepted ``rocksdb_*_mb`` setting (1 TiB): anything above is a typo."""

# The name becomes a directory under state_dir and part of the changelog topic
# name, so it is restricted to characters that are safe in both.
_NAME_RE = re.compile(r"[A-Za-z0-9._-]+")
# Kafka topic names are at most 249 characters; the changelog topic adds the
# application id around the store name, so the store name gets a smaller share.
_MAX_NAME_LEN = 200


@runtime_checkable
class StateStore(Protocol):
    """The backend contract for ONE store partition: ordered bytes to bytes.

    Lifecycle: the engine opens a store partition on assignment (through
    :func:`open_backend`), restores it from its changelog starting at
    :meth:`changelog_offset`, serves reads during transactions, applies each
    committed transaction with :meth:`write`, and calls :meth:`close` on
    revocation or shutdown. Every method other than ``close`` raises
    :class:`~eos.errors.StateError` once the store is closed.

    Ordering: keys compare as unsigned bytes (RocksDB's default bytewise
    comparator, and Python's ``bytes`` ordering), whatever the key serde.

    Threading: a store partition is used by one thread at a time (the engine's
    processing thread). Implementations need not be thread-safe.

    Blocking: calls may do local disk I/O; none waits on the network.
    """

    def get(self, key: bytes) -> bytes | None:
        """Return the value stored under ``key``, or ``None`` when absent."""
        ...

    def iterate(
        self,
        start: bytes | None = None,
        end: bytes | None = None,
        reverse: bool = False,
    ) -> Iterator[tuple[bytes, bytes]]:
        """Yield ``(key, value)`` pairs with ``start <= key < end`` in key order.

        Args:
            start: Inclusive lower bound; ``None`` for the first key.
            end: Exclusive upper bound; ``None`` for past the last key.
            reverse: Yield from the highest key down instead.

        The store must not be written or closed while an iterator from it is
        still in use.
        """
        ...

    def write(self, changes: Mapping[bytes, bytes | None], changelog_offset: int) -> None:
        """Apply puts and deletes and store the checkpoint, atomically.

        Either all of ``changes`` and the new checkpoint become visible (and
        durable, for persistent backends) or none of them do.

        Args:
            changes: ``key -> value`` puts; a ``None`` value deletes the key.
            changelog_offset: The changelog offset to restore from next time
                (the offset after the last changelog record these changes
                include). Must be ``>= 0``.
        """
        ...

    def changelog_offset(self) -> int | None:
        """Return the stored checkpoint, or ``None`` if none was ever written.

        This is the changelog offset to restore FROM next: every changelog
        record below it is already reflected in the store.
        """
        ...

    def close(self) -> None:
        """Release the store's resources. Calling it again does nothing."""
        ...

    def wipe(self) -> None:
        """Delete all data and the checkpoint, leaving the store open and empty.

        Used when local state cannot be trusted (for example a checkpoint beyond
        the changelog's end) and must be rebuilt from the changelog.
        """
        ...


StoreBackendFactory = Callable[[str, str, int], StateStore]
"""A custom backend: ``factory(path, store_name, partition) -> StateStore``.

``path`` is the directory reserved for this store partition under the
application's state directory; the factory may create it.
"""


# Not slotted: before Python 3.13 a slotted frozen dataclass cannot be built as
# ``Store[str, int](...)`` (its __setattr__ calls super() with the class that
# slots=True replaced). A store is declared once, so the __dict__ costs nothing.
@dataclass(frozen=True)
class Store(Generic[K, V]):
    """Declares a state store that a processor uses (public as ``eos.Store``).

    ``Store[K, V]`` is a store of ``K`` keys and ``V`` values: declare it as
    ``COUNTS: eos.Store[str, int] = eos.Store("counts")`` and
    ``ctx.store(COUNTS)`` is a ``StoreTransaction[str, int]``. The types are
    for the type checker; the serdes decide what is stored.

    Attributes:
        name: Store name: letters, digits, ``.``, ``_`` and ``-`` (not ``.`` or
            ``..``). Names the local directory and the changelog topic
            ``<application_id>-<name>-changelog``.
        backend: ``"rocksdb"`` (persistent, the default), ``"memory"`` (restored
            in full from the changelog on every start) or a
            :data:`StoreBackendFactory` for a custom backend.
        key_serde: Serde name (``"json"``, ``"string"``, ``"bytes"``) or object.
            Range queries and iteration follow the order of the SERIALIZED keys.
        value_serde: Serde name or object for values.
        source_topic: Makes the store a TABLE of this topic (a Kafka Streams
            source KTable): the application consumes the topic with its input
            topics, every record of it is written to store partition ``p`` of
            its partition ``p`` (a null value deletes the key) instead of
            reaching ``process()``, and the topic itself is the changelog (no
            second copy). The processor reads it with ``ctx.store(name)`` and
            cannot write it. The topic must be co-partitioned with the input
            topics (same partition count, same keys). See docs/joins.md.
        rocksdb_block_cache_mb: RocksDB block cache of the store, in MiB
            (an int >= 1), shared by all its partitions in this process. Only
            the ``"rocksdb"`` backend uses it. Default
            :data:`DEFAULT_ROCKSDB_BLOCK_CACHE_MB`.
        rocksdb_write_buffer_mb: RocksDB memtable budget of the store, in MiB
            (an int >= 1), shared by all its partitions in this process: past
            it, RocksDB flushes a memtable to disk. Only the ``"rocksdb"``
            backend uses it. Default :data:`DEFAULT_ROCKSDB_WRITE_BUFFER_MB`.

    Serdes: ``None`` (the default) is ``"json"`` for a plain store; for a
    table (``source_topic`` given) it is the serde the application decodes the
    source topic with (``input_serdes`` for it, else ``key_serde`` and
    ``value_serde``), so the table holds exactly the topic's bytes and a
    lookup with a stream's key finds its record.

    Memory: a RocksDB store's native memory stays near ``rocksdb_block_cache_mb
    + 2 * rocksdb_write_buffer_mb`` MiB (a memtable being flushed counts until it
    is on disk) plus a fixed few tens of MiB, however many keys and partitions
    it has (docs/state.md, "Memory"; measured in docs/benchmarks-restore.md).

    Raises:
        ConfigError: If the name, backend, a serde name, the source topic or a
            ``rocksdb_*_mb`` size is invalid.
    """

    name: str
    backend: str | StoreBackendFactory = DEFAULT_BACKEND
    key_serde: str | Serde[K] | None = None
    value_serde: str | Serde[V] | None = None
    source_topic: str | None = field(default=None, kw_only=True)
    rocksdb_block_cache_mb: int = field(default=DEFAULT_ROCKSDB_BLOCK_CACHE_MB, kw_only=True)
    rocksdb_write_buffer_mb: int = field(default=DEFAULT_ROCKSDB_WRITE_BUFFER_MB, kw_only=True)

    def __post_init__(self) -> None:
        name = self.name
        if (
            not isinstance(name, str)
            or _NAME_RE.fullmatch(name) is None
            or name in (".", "..")
            or len(name) > _MAX_NAME_LEN
        ):
            raise ConfigError(
                f"invalid store name {name!r}: use 1-{_MAX_NAME_LEN} characters from "
                "A-Z a-z 0-9 . _ - (and not '.' or '..')",
                key="store.name",
            )
        backend = self.backend
        if isinstance(backend, str):
            if backend not in BACKENDS:
                raise ConfigError(
                    f"invalid backend {backend!r} for store {name!r}: "
                    f"use one of {', '.join(map(repr, BACKENDS))} or a factory callable",
                    key="store.backend",
                )
        elif not callable(backend):
            raise ConfigError(
                f"invalid backend {backend!r} for store {name!r}: "
                f"use one of {', '.join(map(repr, BACKENDS))} or a factory callable",
                key="store.backend",
            )
        topic = self.source_topic
        if topic is not None and (not isinstance(topic, str) or not topic.strip()):
            raise ConfigError(
                f"invalid source_topic {topic!r} for store {name!r}: give a topic name",
                key="store.source_topic",
            )
        for key in ("rocksdb_block_cache_mb", "rocksdb_write_buffer_mb"):
            size = getattr(self, key)
            # bool is an int subclass; True MiB is surely a mistake.
            if type(size) is not int or not 1 <= size <= MAX_ROCKSDB_MB:
                raise ConfigError(
                    f"invalid {key} {size!r} for store {name!r}: use an int of MiB "
                    f"from 1 to {MAX_ROCKSDB_MB}",
                    key=f"store.{key}",
                )
        # Resolve once here only to reject unknown serde names at declaration
        # time rather than at the first assignment.
        self.serdes()

    def serdes(self, topic_serdes: tuple[Serde, Serde] | None = None) -> tuple[Serde[K], Serde[V]]:
        """Return the resolved ``(key_serde, value_serde)`` pair.

        Args:
            topic_serdes: For a table (``source_topic`` given), the serdes the
                application decodes the source topic with: they fill the parts
                left as None. Without them (or for a plain store) None is JSON.
        """
        fill: tuple[Serde | str, Serde | str] = (DEFAULT_SERDE, DEFAULT_SERDE)
        if topic_serdes is not None and self.source_topic is not None:
            fill = topic_serdes
        key_serde = self.key_serde if self.key_serde is not None else fill[0]
        value_serde = self.value_serde if self.value_serde is not None else fill[1]
        return (
            resolve_serde(key_serde, what="store.key_serde"),
            resolve_serde(value_serde, what="store.value_serde"),
        )

    def view(self, txn: StoreTransaction[Any, Any], wake: Callable[[int], None]) -> object:
        """Return what ``ctx.store(name)`` hands the processor for this store.

        The engine builds ``txn`` (one store partition in one Kafka
        transaction) with the serdes :meth:`serdes` returns and calls this once
        per store partition per transaction. A plain store returns ``txn``
        itself; a store that encodes its own layout (:class:`eos.WindowStore`)
        wraps it.

        Time-driven stores (class attribute ``time_driven = True``) return views
        with ``next_due() -> int | None`` (the smallest stream time at which
        there is work, from committed and uncommitted state; None: none) and
        ``advance(stream_time, ctx)`` (do everything due at ``stream_time``;
        the engine calls it inside the transaction, with ``ctx.record`` None,
        after the record that moved stream time to ``next_due()`` or past it).

        Args:
            txn: The store partition's transaction.
            wake: ``wake(t)`` tells the engine that the view created work due
                at stream time ``t``; only time-driven stores (class attribute
                ``time_driven = True``) call it.
        """
        if self.source_topic is not None:
            from eos.state.transaction import TableView

            return TableView(txn)
        return txn

    def decode_entries(
        self,
        items: Iterable[tuple[bytes, bytes]],
        topic_serdes: tuple[Serde, Serde] | None = None,
    ) -> Iterator[tuple[object, object]]:
        """Deserialize stored ``(key_bytes, value_bytes)`` pairs with this store's serdes.

        The TestDriver builds ``driver.store(name)`` from it. A store with its
        own layout yields its logical entries only (a window store yields
        ``((key, window_start), value)`` and skips its index). ``topic_serdes``
        as in :meth:`serdes`.
        """
        key_serde, value_serde = self.serdes(topic_serdes)
        for key_bytes, value_bytes in items:
            yield key_serde.deserialize(key_bytes), value_serde.deserialize(value_bytes)


def open_backend(spec: Store, path: str, partition: int) -> StateStore:
    """Open the backend for one partition of a store.

    Args:
        spec: The store declaration.
        path: Directory for this store partition (for example
            ``<state_dir>/<store>/<partition>``). Created if needed by
            persistent backends; ignored by the memory backend.
        partition: The input partition this store partition belongs to.

    Returns:
        An open :class:`StateStore`.

    Raises:
        StateError: If the store cannot be opened (for example another process
            holds the RocksDB lock) or a custom factory returns something that
            is not a :class:`StateStore`.
    """
    backend = spec.backend
    if backend == "memory":
        from eos.state.memory import MemoryStore

        return MemoryStore(spec.name, partition)
    if backend == "rocksdb":
        # Imported here so that importing eos.state does not load the native
        # RocksDB library for applications that only use memory stores.
        from eos.state.rocksdb import RocksDBStore

        return RocksDBStore(
            path,
            spec.name,
            partition,
            block_cache_mb=spec.rocksdb_block_cache_mb,
            write_buffer_mb=spec.rocksdb_write_buffer_mb,
        )
    if isinstance(backend, str):  # unreachable after Store validation
        raise StateError(f"unknown backend {backend!r} for store {spec.name!r}")
    store = backend(path, spec.name, partition)
    if not isinstance(store, StateStore):
        raise StateError(
            f"backend factory for store {spec.name!r} returned {type(store).__name__}, "
            "which does not implement StateStore"
        )
    return store
