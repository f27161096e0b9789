"""Window stores: one value per (key, window start), expired by stream time.

A processor declares ``eos.WindowStore("clicks", retention_ms=60_000)``;
``ctx.store("clicks")`` is then a :class:`WindowStoreTransaction`: ``put``,
``get``, ``delete`` of one window and ordered range reads (``fetch`` by key,
``fetch_all`` by time). A window is deleted, with a changelog tombstone inside
the transaction, once its partition's stream time reaches
``window_start + retention_ms``, so the store and its changelog stay bounded.

Physical layout (one bytes-to-bytes store partition, RocksDB by default):

* Timestamps are encoded order-preserving: ``t + 2**63`` as 8 big-endian
  bytes, so negative timestamps sort before positive ones.
* Data entries are key-first, ``0x00 | len(key) (4 bytes) | key | start``,
  so the windows of one key are contiguous and in start order: ``fetch`` is a
  range read.
* The expiry index is time-first, ``0x01 | start | key`` (value ``0x00``),
  so the windows due next are at the front: ``next_due`` reads one entry and
  ``advance`` reads only what it deletes. Both entries are written when a
  window is created and both deleted when it goes; updating an existing
  window writes its data entry only.
* Keys starting with ``0x02`` are reserved for subclasses' metadata.

Keys are serialized with the store's ``key_serde`` and values with its
``value_serde``; the engine sees bytes only (``serdes()`` is bytes/bytes).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, ClassVar, Generic, TypeVar, overload

from eos.errors import ConfigError, StateError
from eos.record import K, V
from eos.serde import BytesSerde, Serde, resolve_serde
from eos.state._window_keys import (
    DATA,
    INDEX,
    INDEX_VALUE,
    MAX_TIMESTAMP,
    META,
    MIN_TIMESTAMP,
    clamp,
    data_prefix,
    decode_ts,
    encode_ts,
    index_bound,
    merge_fetch,
    merge_index,
    split_data_key,
)
from eos.state.base import DEFAULT_BACKEND, DEFAULT_SERDE, Store, StoreBackendFactory
from eos.state.transaction import StoreTransaction, _codec

if TYPE_CHECKING:
    from eos.processor import Context

__all__ = [
    "MAX_TIMESTAMP",
    "MIN_TIMESTAMP",
    "WindowStore",
    "WindowStoreTransaction",
    "encode_ts",
]

_BYTES = BytesSerde()
_D = TypeVar("_D")


# Not slotted, for the reason Store is not (see eos.state.base).
@dataclass(frozen=True)
class WindowStore(Store[Any, Any], Generic[K, V]):
    """Declares a window store (public as ``eos.WindowStore``).

    ``WindowStore[K, V]`` holds one ``V`` per ``(K, window_start)``;
    ``ctx.store(spec)`` is a :class:`WindowStoreTransaction` over it. It is
    changelog-backed and restored like any store, and time-driven: the
    engine tracks its partitions' stream time and, after the record that
    moves stream time to ``window_start + retention_ms`` or past it, deletes
    the window in that record's transaction (changelog tombstone included).
    Until then (during that record's ``process``) it is still readable.

    Attributes:
        name: Store name, as for :class:`~eos.state.base.Store`.
        retention_ms: How long a window is kept, from its start, in stream
            time: a positive int. Choose at least the window size plus the
            time you accept late records for.
        backend: ``"rocksdb"`` (default), ``"memory"`` or a backend factory.
        key_serde: Serde (name or object) of the keys. Windows of different
            keys are ordered by serialized key bytes within one start time.
        value_serde: Serde (name or object) of the values.

    Raises:
        ConfigError: The name, backend, a serde or ``retention_ms`` is invalid.
    """

    time_driven: ClassVar[bool] = True
    """The engine tracks stream time for stores of this class and calls their
    views' ``next_due()``/``advance()``."""

    backend: str | StoreBackendFactory = field(default=DEFAULT_BACKEND, kw_only=True)
    key_serde: str | Serde[K] = field(default=DEFAULT_SERDE, kw_only=True)
    value_serde: str | Serde[V] = field(default=DEFAULT_SERDE, kw_only=True)
    retention_ms: int = field(kw_only=True)

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.source_topic is not None:
            raise ConfigError(
                f"window store {self.name!r} cannot have a source_topic: a table of a topic "
                "is an eos.Store(name, source_topic=...)",
                key="store.source_topic",
            )
        retention = self.retention_ms
        if type(retention) is not int or not 0 < retention <= MAX_TIMESTAMP:
            raise ConfigError(
                f"invalid retention_ms {retention!r} for window store {self.name!r}: "
                "use a positive int (milliseconds of stream time a window is kept after "
                "its start)",
                key="retention_ms",
            )
        # Resolved once: the base class validated only the bytes serdes of serdes().
        object.__setattr__(self, "_user_serdes", self.user_serdes())

    def serdes(
        self, topic_serdes: tuple[Serde, Serde] | None = None
    ) -> tuple[Serde[Any], Serde[Any]]:
        """The serdes of the physical store: bytes/bytes (the view encodes itself)."""
        return (_BYTES, _BYTES)

    def user_serdes(self) -> tuple[Serde[K], Serde[V]]:
        """The resolved ``(key_serde, value_serde)`` of the windows' keys and values."""
        return (
            resolve_serde(self.key_serde, what="store.key_serde"),
            resolve_serde(self.value_serde, what="store.value_serde"),
        )

    def view(
        self, txn: StoreTransaction[Any, Any], wake: Callable[[int], None]
    ) -> WindowStoreTransaction[K, V]:
        """Wrap the bytes transaction in a :class:`WindowStoreTransaction`.

        The view records what it writes (to merge it into range reads), so
        the engine must build one view per store partition per transaction
        and write to ``txn`` only through it.
        """
        return WindowStoreTransaction(self, txn, wake)

    def decode_entries(
        self,
        items: Iterable[tuple[bytes, bytes]],
        topic_serdes: tuple[Serde, Serde] | None = None,
    ) -> Iterator[tuple[object, object]]:
        """Yield ``((key, window_start), value)`` for the data entries in ``items``.

        Index and metadata entries are skipped.
        """
        key_serde, value_serde = self._serdes()
        for key_bytes, value_bytes in items:
            if key_bytes[:1] != DATA:
                continue
            key, start = split_data_key(key_bytes)
            yield (
                (key_serde.deserialize(key), start),
                value_serde.deserialize(value_bytes),
            )

    def _serdes(self) -> tuple[Serde[K], Serde[V]]:
        serdes: tuple[Serde[K], Serde[V]] = self.__dict__["_user_serdes"]
        return serdes


class WindowStoreTransaction(Generic[K, V]):
    """One window store partition in one transaction: what ``ctx.store(name)`` returns
    for an :class:`eos.WindowStore`.

    Windows are named by ``(key, window_start)``; ``window_start`` is an int
    (milliseconds, negative allowed). Reads see this transaction's writes.
    Range reads are lazy iterators; writing while iterating is allowed (the
    iterator keeps the state it started with for this transaction's writes).

    Expiry (the engine's contract with time-driven stores, see
    :meth:`eos.state.base.Store.view`): :meth:`next_due` and :meth:`advance`.
    The engine calls ``advance(stream_time, ctx)`` after the record that
    moved the partition's stream time to ``next_due()`` or past it; every
    window whose ``window_start + retention_ms <= stream_time`` is deleted
    then.

    Threading: the processing thread only. Do not keep the object past the
    record or hook that obtained it (the transaction refuses it afterwards).
    """

    __slots__ = (
        "_by_key",
        "_due_after",
        "_index",
        "_key_cache",
        "_key_de",
        "_key_ser",
        "_retention",
        "_spec",
        "_txn",
        "_value_de",
        "_value_ser",
        "_wake",
    )

    def __init__(
        self,
        spec: WindowStore[K, V],
        txn: StoreTransaction[Any, Any],
        wake: Callable[[int], None],
    ) -> None:
        self._spec = spec
        self._txn = txn
        self._wake = wake
        self._retention = spec.retention_ms
        # A new window is due (wake) this long after its start; subclasses with
        # earlier work per window lower it.
        self._due_after = spec.retention_ms
        key_serde, value_serde = spec._serdes()
        self._key_ser, self._key_de = _codec(key_serde)
        self._value_ser, self._value_de = _codec(value_serde)
        # This transaction's writes, for range reads: data per serialized key
        # ({start: value bytes or None}) and index entries (key -> present).
        self._by_key: dict[bytes, dict[int, bytes | None]] = {}
        self._index: dict[bytes, bool] = {}
        self._key_cache: dict[str, bytes] = {}

    def __repr__(self) -> str:
        return f"WindowStoreTransaction({self._spec.name!r}, {self._txn!r})"

    @property
    def name(self) -> str:
        """The store's name."""
        return self._spec.name

    @property
    def retention_ms(self) -> int:
        """How long a window is kept after its start, in stream time."""
        return self._retention

    # -- public API ----------------------------------------------------------

    def put(self, key: K, window_start: int, value: V | None) -> None:
        """Set the value of window ``(key, window_start)``; ``None`` deletes it.

        A new window is due for expiry at ``window_start + retention_ms``;
        updating an existing one writes its data entry only.

        Raises:
            StateError: The key serialized to None, the start is out of range,
                or the transaction no longer accepts writes.
            SerializationError: The key or value cannot be serialized.
        """
        key_bytes = self._serialize_key(key)
        value_bytes = self._value_ser(value)
        data_key = data_prefix(key_bytes) + encode_ts(window_start)
        if value_bytes is None:
            if self._txn.get(data_key) is not None:
                self._remove(key_bytes, window_start, data_key)
            return
        existed = self._txn.get(data_key) is not None
        self._write(key_bytes, window_start, data_key, value_bytes, existed)

    @overload
    def get(self, key: K, window_start: int) -> V | None: ...
    @overload
    def get(self, key: K, window_start: int, default: _D) -> V | _D: ...
    def get(self, key: K, window_start: int, default: object = None) -> object:
        """The value of window ``(key, window_start)``, or ``default``."""
        data_key = data_prefix(self._serialize_key(key)) + encode_ts(window_start)
        value_bytes = self._txn.get(data_key)
        if value_bytes is None:
            return default
        return self._value_de(value_bytes)

    def delete(self, key: K, window_start: int) -> None:
        """Delete window ``(key, window_start)``; nothing happens if it is absent."""
        key_bytes = self._serialize_key(key)
        data_key = data_prefix(key_bytes) + encode_ts(window_start)
        if self._txn.get(data_key) is not None:
            self._remove(key_bytes, window_start, data_key)

    def fetch(self, key: K, time_from: int, time_to: int) -> Iterator[tuple[int, V]]:
        """Iterate ``(window_start, value)`` of ``key``'s windows with
        ``time_from <= window_start <= time_to``, in start order.

        A range read of that key's entries; other keys are not touched.
        """
        key_bytes = self._serialize_key(key)
        encode_ts(time_from)
        encode_ts(time_to)
        if time_from > time_to:
            return iter(())
        return self._decode_fetch(self._fetch_raw(key_bytes, time_from, time_to))

    def fetch_all(self, time_from: int, time_to: int) -> Iterator[tuple[K, int, V]]:
        """Iterate ``(key, window_start, value)`` of all windows with
        ``time_from <= window_start <= time_to``, in start order (then by
        serialized key). A range read of the time index plus one point read
        per window.
        """
        encode_ts(time_from)
        encode_ts(time_to)
        if time_from > time_to:
            return iter(())
        return self._fetch_all(time_from, time_to)

    # -- engine contract -----------------------------------------------------

    def next_due(self) -> int | None:
        """The stream time at which :meth:`advance` next has work (None: empty)."""
        first = self._first_index_key(INDEX)
        if first is None:
            return None
        return clamp(decode_ts(first, 1) + self._retention)

    def advance(self, stream_time: int, ctx: Context[Any, Any]) -> None:
        """Delete every window with ``window_start + retention_ms <= stream_time``.

        Runs inside the transaction (deletes and their tombstones commit with
        it), called by the engine with ``ctx.record`` None.
        """
        last = stream_time - self._retention
        if last < MIN_TIMESTAMP:
            return
        for index_key in self._index_keys(index_bound(last)):
            key_bytes = index_key[9:]
            start = decode_ts(index_key, 1)
            self._remove_indexed(key_bytes, start, index_key)

    # -- raw operations (also used by eos._window_aggregate) --------------------

    def _serialize_key(self, key: object) -> bytes:
        # String keys repeat within a transaction: serialize each once (only
        # exact str, whose equality implies equal serialized bytes).
        if type(key) is str:
            key_bytes = self._key_cache.get(key)
            if key_bytes is not None:
                return key_bytes
        key_bytes = self._key_ser(key)
        if key_bytes is None:
            raise StateError(f"window store {self._spec.name}: key {key!r} serialized to None")
        if type(key) is str:
            self._key_cache[key] = key_bytes
        return key_bytes

    def _write(
        self, key_bytes: bytes, start: int, data_key: bytes, value_bytes: bytes, existed: bool
    ) -> None:
        """Write a window's value; a new window (``existed`` false) is indexed too."""
        txn = self._txn
        txn[data_key] = value_bytes
        pending = self._by_key.get(key_bytes)
        if pending is None:
            pending = self._by_key[key_bytes] = {}
        pending[start] = value_bytes
        if not existed:
            index_key = INDEX + data_key[-8:] + key_bytes
            txn[index_key] = INDEX_VALUE
            self._index[index_key] = True
            self._wake(clamp(start + self._due_after))

    def _remove(self, key_bytes: bytes, start: int, data_key: bytes) -> None:
        """Delete a window's data and index entries (tombstones even if absent)."""
        self._remove_indexed(key_bytes, start, INDEX + data_key[-8:] + key_bytes, data_key)

    def _remove_indexed(
        self, key_bytes: bytes, start: int, index_key: bytes, data_key: bytes | None = None
    ) -> None:
        txn = self._txn
        if data_key is None:
            data_key = data_prefix(key_bytes) + index_key[1:9]
        txn[data_key] = None
        txn[index_key] = None
        pending = self._by_key.get(key_bytes)
        if pending is None:
            pending = self._by_key[key_bytes] = {}
        pending[start] = None
        self._index[index_key] = False

    def _fetch_raw(
        self, key_bytes: bytes, time_from: int, time_to: int
    ) -> Iterator[tuple[int, bytes]]:
        """``(start, value_bytes)`` of one key's windows in ``[time_from, time_to]``."""
        prefix = data_prefix(key_bytes)
        cut = len(prefix)
        committed = self._txn.committed(
            prefix + encode_ts(time_from), prefix + encode_ts(time_to) + b"\x00"
        )
        pending = self._by_key.get(key_bytes)
        if not pending:
            return ((decode_ts(k, cut), v) for k, v in committed)
        mine = sorted((s, v) for s, v in pending.items() if time_from <= s <= time_to)
        if not mine:
            return ((decode_ts(k, cut), v) for k, v in committed)
        return merge_fetch(committed, cut, mine)

    def _decode_fetch(self, items: Iterator[tuple[int, bytes]]) -> Iterator[tuple[int, V]]:
        value_de = self._value_de
        for start, value_bytes in items:
            yield start, value_de(value_bytes)

    def _fetch_all(self, time_from: int, time_to: int) -> Iterator[tuple[K, int, V]]:
        txn = self._txn
        key_de = self._key_de
        value_de = self._value_de
        low = INDEX + encode_ts(time_from)
        high = index_bound(time_to)
        for index_key in self._index_keys(high, low):
            key_bytes = index_key[9:]
            value_bytes = txn.get(data_prefix(key_bytes) + index_key[1:9])
            if value_bytes is not None:
                yield key_de(key_bytes), decode_ts(index_key, 1), value_de(value_bytes)

    def _first_index_key(self, low: bytes) -> bytes | None:
        """The first present index key >= ``low``, without sorting this transaction's
        entries (the engine asks after every expiry)."""
        index = self._index
        first: bytes | None = None
        for key, present in index.items():
            if present and key >= low and (first is None or key < first):
                first = key
        for key, _ in self._txn.committed(low, META):
            if first is not None and key >= first:
                break
            if index.get(key) is not False:
                return key
        return first

    def _index_keys(self, high: bytes | None, low: bytes = INDEX) -> Iterator[bytes]:
        """Present index keys in ``[low, high)`` (``None``: to the end of the index),
        ascending; committed entries merged with this transaction's."""
        end = META if high is None else high
        committed = self._txn.committed(low, end)
        index = self._index
        if not index:
            return (k for k, _ in committed)
        pending = sorted(k for k in index if low <= k < end)
        removed = {k for k in pending if not index[k]}
        added = [k for k in pending if index[k]]
        return merge_index(committed, added, removed)
