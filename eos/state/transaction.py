"""The per-transaction write overlay over one store partition.

During a Kafka transaction every store write goes to an in-memory overlay
(which reads see); its changelog records are produced in the same Kafka
transaction (see :mod:`eos.state.manager`). The backend is written only after the Kafka transaction
committed, in one batch together with the changelog checkpoint, so local state
never holds uncommitted writes. After an abort the overlay is simply dropped.
"""

from __future__ import annotations

import enum
import itertools
from collections.abc import Callable, Iterator
from typing import Any, Generic, Protocol, TypeVar, overload

from eos.errors import StateError
from eos.record import K, V
from eos.serde import BytesSerde, JsonSerde, Serde
from eos.state.base import StateStore

__all__ = ["ChangelogWriter", "StoreTransaction", "TableView", "TransactionState", "codec"]

ChangelogWriter = Callable[[bytes, bytes | None], None]
"""``changelog(key_bytes, value_bytes_or_None)``: called once per store write,
before the overlay is updated, inside the caller's Kafka transaction.

``None`` is a tombstone. The store manager gives one only to a careful replay
(it produces the record at once); otherwise a transaction has none, counts each
write on its counter, and the manager produces the overlay's last values at the
commit (:meth:`StoreTransaction.pending`).
"""


class TransactionState(enum.Enum):
    """Lifecycle of a :class:`StoreTransaction`.

    ``STARTED -> [PREPARED ->] COMPLETE``, or ``-> FAILED`` from either of the
    first two. ``COMPLETE`` and ``FAILED`` are final.
    """

    STARTED = "started"
    """Reads and writes allowed."""
    PREPARED = "prepared"
    """Changelog produced; reads allowed, writes refused, awaiting commit."""
    COMPLETE = "complete"
    """Overlay written to the backend with its checkpoint."""
    FAILED = "failed"
    """Aborted, or the backend write failed; the overlay is gone."""


_STARTED = TransactionState.STARTED
_PREPARED = TransactionState.PREPARED
_COMPLETE = TransactionState.COMPLETE
_FAILED = TransactionState.FAILED

_TRANSITIONS: dict[TransactionState, frozenset[TransactionState]] = {
    _STARTED: frozenset({_PREPARED, _COMPLETE, _FAILED}),
    _PREPARED: frozenset({_COMPLETE, _FAILED}),
    _COMPLETE: frozenset(),
    _FAILED: frozenset(),
}

_D = TypeVar("_D")


class _Counter(Protocol):
    """What counts a deferred write: the engine's context (its ``sends``)."""

    sends: int


class StoreTransaction(Generic[K, V]):
    """One store partition as seen by one Kafka transaction.

    ``StoreTransaction[K, V]`` maps keys of type ``K`` to values of type
    ``V``, the types its store's serdes decode to; ``ctx.store(spec)`` with an
    ``eos.Store[K, V]`` declaration returns one typed so (unparameterised:
    ``object``).

    This is what ``ctx.store(name)`` returns. It behaves like a mutable mapping
    of deserialized keys to deserialized values (``get``, ``[]``, ``in``,
    ``del``, ``keys``/``values``/``items``, iteration) plus ordered
    :meth:`range` scans.

    Ordering: iteration and :meth:`range` follow the order of the SERIALIZED
    key bytes (unsigned), not of the Python keys. With the JSON serde,
    ``10`` sorts before ``9`` (``b"10" < b"9"``) and strings sort after numbers
    (``b'"a"' > b"9"``); use a serde with an order-preserving encoding (for
    example fixed-width big-endian integers) when numeric ranges matter.

    Writes: each ``txn[key] = value`` or ``del txn[key]`` serializes once,
    calls ``changelog(key_bytes, value_bytes)`` (``None`` for a delete; without
    a changelog writer, counts the write instead) and records the bytes in the
    overlay. A value that serializes to ``None``
    is a delete, as in Kafka Streams. One exception, the engine's per-record
    path: without a changelog writer, a JSON store keeps an integer as it is
    until :meth:`pending` or :meth:`commit` encodes it (once per key per
    transaction, with the same bytes the serde writes; an integer cannot fail
    to encode, so no error moves away from the write that caused it), and a
    read of it in the same transaction returns it without decoding.

    Lifecycle (engine side): create one per store partition per Kafka
    transaction; optionally :meth:`prepare` once the changelog is produced;
    then :meth:`commit` with the changelog checkpoint after the Kafka
    transaction committed, or :meth:`abort` if it did not. A finished
    transaction cannot be reused (there is no ``reset``): create a fresh one,
    which also makes any reference a user kept from an earlier transaction
    fail loudly instead of writing outside a transaction.

    Iteration: iterators see the overlay as it was when the iterator was
    created; writing to the transaction while iterating is allowed. ``len()``
    is not supported (it would need a full scan).

    Threading: not thread-safe; used by the processing thread only.

    Args:
        store: The backend partition. Only read until :meth:`commit`.
        key_serde: Serde for keys.
        value_serde: Serde for values.
        changelog: Called for every write, see :data:`ChangelogWriter`; or None:
            the caller produces :meth:`pending` itself before the Kafka commit.
        counter: Without ``changelog``, ``counter.sends`` is incremented per
            write (and delete): the engine's context, which tells from it
            whether a failed record already wrote something.
        name: Label for error messages, for example ``"order-counts[2]"``.
        cache: The store partition's committed-value cache (serialized key ->
            serialized value, None for absent; for a JSON store, an integer a
            transaction wrote as the ``int`` itself), kept by the store manager
            across transactions: reads consult it before the backend and fill
            it, a commit updates it after the backend write. None: no cache.
    """

    __slots__ = (
        "_cache",
        "_changelog",
        "_counter",
        "_defer_ints",
        "_json_values",
        "_key_deserialize",
        "_key_serialize",
        "_name",
        "_overlay",
        "_prepared",
        "_raw_keys",
        "_readable",
        "_state",
        "_store",
        "_value_deserialize",
        "_value_serialize",
        "_writable",
    )

    def __init__(
        self,
        store: StateStore,
        key_serde: Serde,
        value_serde: Serde,
        changelog: ChangelogWriter | None,
        *,
        name: str = "store",
        cache: dict[bytes, bytes | int | None] | None = None,
        counter: _Counter | None = None,
    ) -> None:
        if changelog is None and counter is None:
            raise ValueError("a store transaction without a changelog writer needs a counter")
        self._store = store
        self._cache = cache
        # Bound methods, looked up once: these run on every record.
        self._key_serialize, self._key_deserialize = codec(key_serde)
        self._value_serialize, self._value_deserialize = codec(value_serde)
        # The serdes get() and [] = take inline (see codec()).
        self._raw_keys = type(key_serde) is BytesSerde
        self._json_values = type(value_serde) is JsonSerde
        self._changelog = changelog
        self._counter = counter
        # Integers wait in the overlay, decoded, until the commit encodes them:
        # only when the commit produces the changelog (no writer per write).
        self._defer_ints = self._json_values and changelog is None
        self._name = name
        # Serialized values; with _defer_ints also ints kept decoded (_encoded()).
        self._overlay: dict[bytes, bytes | int | None] = {}
        # The encoded overlay once writes are refused (prepared): made once for the
        # changelog and the commit.
        self._prepared: dict[bytes, bytes | None] | None = None
        self._state = _STARTED
        self._readable = True
        self._writable = True

    def __repr__(self) -> str:
        return (
            f"StoreTransaction({self._name}, {self._state.value}, "
            f"pending_writes={len(self._overlay)})"
        )

    # -- state machine -------------------------------------------------------

    @property
    def state(self) -> TransactionState:
        """The current lifecycle state."""
        return self._state

    @property
    def dirty(self) -> bool:
        """Whether the transaction holds writes not yet committed."""
        return bool(self._overlay)

    def _check_transition(self, to: TransactionState) -> None:
        current = self._state
        if to not in _TRANSITIONS[current]:
            raise StateError(
                f"store transaction {self._name}: cannot go from {current.value} to {to.value}"
            )

    def _transition(self, to: TransactionState) -> None:
        # The one place that changes state; the access flags follow from it.
        self._check_transition(to)
        self._state = to
        self._readable = to is _STARTED or to is _PREPARED
        self._writable = to is _STARTED

    def _refused(self, action: str) -> StateError:
        state = self._state
        if state is _PREPARED:
            why = "it is prepared for commit and no longer accepts writes"
        else:
            why = (
                f"it is {state.value}; stores are only usable inside the transaction that "
                "handed them out (call ctx.store() again, do not keep the object)"
            )
        return StateError(f"cannot {action} store {self._name}: {why}")

    def prepare(self) -> None:
        """Freeze the overlay once its changelog records have been produced.

        Optional. Further writes raise :class:`~eos.errors.StateError`; reads
        still work.
        """
        self._transition(_PREPARED)

    def commit(self, changelog_offset: int) -> None:
        """Write the overlay and the checkpoint to the backend in one batch.

        Call only after the Kafka transaction carrying the changelog records
        committed. The checkpoint is written even when the overlay is empty.

        Args:
            changelog_offset: Changelog offset to restore from next (one past
                the last changelog record of this store partition that is
                committed).

        Raises:
            StateError: If the transaction is finished, or the backend write
                failed (the transaction is then ``FAILED``; local state is
                unchanged and can be rebuilt from the changelog).
        """
        self._check_transition(_COMPLETE)
        overlay = self._encoded()
        try:
            self._store.write(overlay, changelog_offset)
        except Exception as exc:
            self._overlay = {}
            if self._cache is not None:
                self._cache.clear()  # the backend's state is unknown now
            self._transition(_FAILED)
            if isinstance(exc, StateError):
                raise
            raise StateError(f"committing store {self._name} failed: {exc}") from exc
        cache = self._cache
        if cache is not None and overlay:
            # The backend now holds these values: so does the cache (integers decoded).
            cache.update(self._overlay)
            _trim(cache)
        self._overlay = {}
        self._prepared = None
        self._transition(_COMPLETE)

    def abort(self) -> None:
        """Drop the overlay; the transaction becomes ``FAILED``.

        Aborting a ``FAILED`` transaction again does nothing.

        Raises:
            StateError: If the transaction already committed.
        """
        if self._state is _FAILED:
            return
        self._transition(_FAILED)
        self._overlay = {}
        self._prepared = None

    def pending(self) -> dict[bytes, bytes | None]:
        """The writes of this transaction: serialized key -> its last serialized value
        (``None``: deleted), in the order the keys were first written. Do not modify it."""
        return self._encoded()

    def _encoded(self) -> dict[bytes, bytes | None]:
        """The overlay with its integers (kept decoded) encoded: the overlay itself
        when none can be there, else a copy; made once after the transaction is
        prepared (no write can change it then)."""
        overlay = self._overlay
        if not self._defer_ints:
            return overlay  # type: ignore[return-value]
        encoded = self._prepared
        if encoded is None:
            encoded = {
                # _stored(), inlined: this runs for every key at every commit.
                key: b"%d" % value if type(value) is int else value  # type: ignore[misc]
                for key, value in overlay.items()
            }
            if not self._writable:
                self._prepared = encoded
        return encoded

    # -- writes --------------------------------------------------------------

    def __setitem__(self, key: K, value: V) -> None:
        # The per-record write, inlined as get() is.
        if not self._writable:
            raise self._refused("write to")
        key_bytes: Any = key
        if not (self._raw_keys and type(key) is bytes):
            key_bytes = self._key_serialize(key)
            if key_bytes is None:
                raise StateError(f"store {self._name}: key {key!r} serialized to None")
        number: Any = value
        if self._defer_ints and type(number) is int and -_FAST_INT < number < _FAST_INT:
            # Kept as it is: encoded once at the commit (_encoded), not per write.
            self._counter.sends += 1  # type: ignore[union-attr]
            self._overlay[key_bytes] = number
            return
        if self._json_values and type(number) is int and -_FAST_INT < number < _FAST_INT:
            value_bytes: bytes | None = b"%d" % number
        else:
            value_bytes = self._value_serialize(value)
        changelog = self._changelog
        if changelog is None:
            self._counter.sends += 1  # type: ignore[union-attr]  # produced at the commit
        else:
            # Changelog first: if producing fails, the overlay does not claim a
            # write that the changelog lacks.
            changelog(key_bytes, value_bytes)
        self._overlay[key_bytes] = value_bytes

    def __delitem__(self, key: K) -> None:
        if not self._writable:
            raise self._refused("delete from")
        key_bytes = self._key_serialize(key)
        if key_bytes is None:
            raise StateError(f"store {self._name}: key {key!r} serialized to None")
        overlay = self._overlay
        if key_bytes in overlay:
            present = overlay[key_bytes] is not None
        else:
            present = self._store.get(key_bytes) is not None
        if not present:
            raise KeyError(key)
        changelog = self._changelog
        if changelog is None:
            self._counter.sends += 1  # type: ignore[union-attr]
        else:
            changelog(key_bytes, None)
        overlay[key_bytes] = None

    def apply_raw(self, key_bytes: bytes, value_bytes: bytes | None) -> None:
        """Write a record of a table's source topic as it is (None deletes); no changelog.

        The engine's path for a table (``eos.Store(..., source_topic=...)``):
        the topic is the changelog, so nothing is produced.
        """
        if not self._writable:
            raise self._refused("write to")
        self._overlay[key_bytes] = value_bytes

    # -- point reads ---------------------------------------------------------

    def _lookup(self, key: object) -> bytes | None:
        if not self._readable:
            raise self._refused("read from")
        key_bytes = self._key_serialize(key)
        if key_bytes is None:
            raise StateError(f"store {self._name}: key {key!r} serialized to None")
        value = self._overlay.get(key_bytes, _MISSING)
        if value is _MISSING:
            return self._committed_value(key_bytes)
        return _stored(value)  # type: ignore[arg-type]

    def _committed_value(self, key_bytes: bytes) -> bytes | None:
        """The committed value of ``key_bytes``: from the cache, else the backend (cached)."""
        cache = self._cache
        if cache is None:
            return self._store.get(key_bytes)
        value = cache.get(key_bytes, _MISSING)
        if value is _MISSING:
            value = cache[key_bytes] = self._store.get(key_bytes)
            if len(cache) > CACHE_ENTRIES:
                del cache[next(iter(cache))]
        return _stored(value)  # type: ignore[arg-type]

    @overload
    def get(self, key: K) -> V | None: ...
    @overload
    def get(self, key: K, default: _D) -> V | _D: ...
    def get(self, key: K, default: object = None) -> object:
        """Return the value for ``key``, or ``default`` when absent."""
        # The per-record read, every step inlined (each call saved is ~0.1 µs):
        # bytes keys of a bytes serde as they are, the committed cache read
        # here, and the JSON integer fast path of codec().
        if not self._readable:
            raise self._refused("read from")
        key_bytes: Any = key
        if not (self._raw_keys and type(key) is bytes):
            key_bytes = self._key_serialize(key)
            if key_bytes is None:
                raise StateError(f"store {self._name}: key {key!r} serialized to None")
        data: Any = self._overlay.get(key_bytes, _MISSING)
        if type(data) is int:
            return data  # written in this transaction, not encoded yet
        if data is _MISSING:
            cache = self._cache
            if cache is not None:
                data = cache.get(key_bytes, _MISSING)
                if type(data) is int:
                    return data  # committed by an earlier transaction, kept decoded
            if data is _MISSING:
                data = self._committed_value(key_bytes)
        if data is None:
            return default
        if (
            self._json_values
            and data.isdigit()
            and len(data) <= _FAST_INT_DIGITS
            and (data[0] != 0x30 or len(data) == 1)
        ):
            return int(data)
        return self._value_deserialize(data)

    def __getitem__(self, key: K) -> V:
        value_bytes = self._lookup(key)
        if value_bytes is None:
            raise KeyError(key)
        value: V = self._value_deserialize(value_bytes)
        return value

    def __contains__(self, key: object) -> bool:
        return self._lookup(key) is not None

    # -- ordered reads -------------------------------------------------------

    def range(
        self,
        start: K | None = None,
        end: K | None = None,
        reverse: bool = False,
    ) -> Iterator[tuple[K, V]]:
        """Iterate ``(key, value)`` pairs with ``start <= key < end``.

        Bounds are user keys, serialized with the key serde and compared as
        bytes (see the class docstring about ordering). ``None`` means
        unbounded, so a ``None`` key cannot be used as a bound.

        Args:
            start: Inclusive lower bound, or ``None``.
            end: Exclusive upper bound, or ``None``.
            reverse: Iterate from the highest key down.
        """
        start_bytes = None if start is None else self._bound(start)
        end_bytes = None if end is None else self._bound(end)
        return self._decode_items(self._merged(start_bytes, end_bytes, reverse))

    def items(self) -> Iterator[tuple[K, V]]:
        """Iterate all ``(key, value)`` pairs in serialized-key order."""
        return self._decode_items(self._merged(None, None, False))

    def keys(self) -> Iterator[K]:
        """Iterate all keys in serialized-key order."""
        return self._decode_keys(self._merged(None, None, False))

    def values(self) -> Iterator[V]:
        """Iterate all values in serialized-key order."""
        return self._decode_values(self._merged(None, None, False))

    def __iter__(self) -> Iterator[K]:
        return self.keys()

    def committed(
        self, start: bytes | None = None, end: bytes | None = None, reverse: bool = False
    ) -> Iterator[tuple[bytes, bytes]]:
        """Iterate the backend's committed ``(key_bytes, value_bytes)`` with
        ``start <= key < end``, WITHOUT this transaction's writes.

        For views that keep their own ordered record of what they wrote in the
        transaction (:class:`eos.state.window.WindowStoreTransaction`) and merge
        it themselves: :meth:`range` filters and sorts the whole overlay on
        every call, which a per-record range read cannot afford. Bounds are
        raw bytes; no serde is applied.

        Raises:
            StateError: The transaction is no longer readable.
        """
        if not self._readable:
            raise self._refused("read from")
        return self._store.iterate(start, end, reverse)

    def _bound(self, key: K) -> bytes:
        key_bytes = self._key_serialize(key)
        if key_bytes is None:
            raise StateError(f"store {self._name}: range bound {key!r} serialized to None")
        return key_bytes

    def _merged(
        self, start: bytes | None, end: bytes | None, reverse: bool
    ) -> Iterator[tuple[bytes, bytes]]:
        # Runs eagerly (not a generator) so that the state check and the
        # overlay snapshot happen when the caller asks for the iterator.
        if not self._readable:
            raise self._refused("read from")
        base = self._store.iterate(start, end, reverse)
        if not self._overlay:
            return base
        pending = sorted(
            (
                (key, _stored(value))
                for key, value in self._overlay.items()
                if (start is None or key >= start) and (end is None or key < end)
            ),
            reverse=reverse,
        )
        if not pending:
            return base
        return _merge(base, pending, reverse)

    def _decode_items(self, items: Iterator[tuple[bytes, bytes]]) -> Iterator[tuple[K, V]]:
        key_deserialize = self._key_deserialize
        value_deserialize = self._value_deserialize
        for key_bytes, value_bytes in items:
            yield key_deserialize(key_bytes), value_deserialize(value_bytes)

    def _decode_keys(self, items: Iterator[tuple[bytes, bytes]]) -> Iterator[K]:
        key_deserialize = self._key_deserialize
        for key_bytes, _ in items:
            yield key_deserialize(key_bytes)

    def _decode_values(self, items: Iterator[tuple[bytes, bytes]]) -> Iterator[V]:
        value_deserialize = self._value_deserialize
        for _, value_bytes in items:
            yield value_deserialize(value_bytes)


class TableView(Generic[K, V]):
    """What ``ctx.store(name)`` gives for a table (a store with a ``source_topic``): reads only.

    The table follows its topic; a write from the processor would make it
    differ from the topic it is restored from, so there is none.
    """

    __slots__ = ("_txn", "get")

    def __init__(self, txn: StoreTransaction[K, V]) -> None:
        self._txn = txn
        self.get = txn.get
        """``get(key, default=None)``: the value for ``key``, or ``default``."""

    def __repr__(self) -> str:
        return f"TableView({self._txn!r})"

    def __getitem__(self, key: K) -> V:
        return self._txn[key]

    def __contains__(self, key: object) -> bool:
        return key in self._txn

    def range(
        self, start: K | None = None, end: K | None = None, reverse: bool = False
    ) -> Iterator[tuple[K, V]]:
        """As :meth:`StoreTransaction.range`."""
        return self._txn.range(start, end, reverse)

    def items(self) -> Iterator[tuple[K, V]]:
        """Every ``(key, value)`` in serialized-key order."""
        return self._txn.items()

    def keys(self) -> Iterator[K]:
        """Every key in serialized-key order."""
        return self._txn.keys()

    def values(self) -> Iterator[V]:
        """Every value in serialized-key order."""
        return self._txn.values()

    def __iter__(self) -> Iterator[K]:
        return self._txn.keys()

    def __setitem__(self, key: K, value: V) -> None:
        raise StateError(_READ_ONLY.format(self._txn._name))

    def __delitem__(self, key: K) -> None:
        raise StateError(_READ_ONLY.format(self._txn._name))


_READ_ONLY = (
    "store {} is a table of its source topic and is read-only: it changes only by records "
    "of that topic (write to the topic instead)"
)

CACHE_ENTRIES = 10_000
"""Most committed values a store partition keeps decoded-free in memory (serialized key and
value, about 100-200 bytes each with their dict slot): the oldest entries go first."""
_MISSING = object()


def _stored(value: bytes | int | None) -> bytes | None:
    """A value as the overlay or the cache holds it, as the backend stores it: an
    integer kept decoded is encoded (the JSON serde's own bytes)."""
    return b"%d" % value if type(value) is int else value  # type: ignore[return-value]


def _trim(cache: dict[bytes, bytes | int | None]) -> None:
    """Drop the oldest entries beyond :data:`CACHE_ENTRIES`."""
    excess = len(cache) - CACHE_ENTRIES
    if excess > 0:
        for key in list(itertools.islice(cache, excess)):
            del cache[key]


# Any: the serdes were given as Serde[K] and Serde[V]; the codec keeps them untyped.
_Serialize = Callable[[Any], "bytes | None"]
_Deserialize = Callable[["bytes | None"], Any]
_FAST_INT_DIGITS = 18
"""Integers of up to this many digits take the JSON fast path."""
_FAST_INT = 10**_FAST_INT_DIGITS


def codec(serde: Serde) -> tuple[_Serialize, _Deserialize]:
    """``(serialize, deserialize)`` of ``serde`` for a store's hot path.

    Used by every read and write path over a backend (this module, the window
    store, the global table view).

    For the built-in :class:`~eos.serde.JsonSerde` exactly, integers (counters,
    sums: most store values) skip the :mod:`json` machinery, which costs about
    1 µs a call; the bytes are the same, and everything else goes to the serde.
    """
    if type(serde) is not JsonSerde:
        return serde.serialize, serde.deserialize
    serialize = serde.serialize
    deserialize = serde.deserialize
    limit = _FAST_INT

    def json_serialize(value: object) -> bytes | None:
        # Exactly int (a bool is an int that encodes as true/false); the
        # bounds keep clear of the int-to-str digit limit, whose error the
        # serde wraps.
        if type(value) is int and -limit < value < limit:
            return b"%d" % value
        return serialize(value)

    def json_deserialize(data: bytes | None) -> object:
        # A JSON integer without sign, leading zero or whitespace.
        if (
            type(data) is bytes
            and data.isdigit()
            and len(data) <= _FAST_INT_DIGITS
            and (data[0] != 0x30 or len(data) == 1)
        ):
            return int(data)
        return deserialize(data)

    return json_serialize, json_deserialize


_codec = codec  # the name eos.state.window imports


def _merge(
    base: Iterator[tuple[bytes, bytes]],
    pending: list[tuple[bytes, bytes | None]],
    reverse: bool,
) -> Iterator[tuple[bytes, bytes]]:
    """Merge two key-ordered streams; ``pending`` wins ties, ``None`` hides."""
    index = 0
    count = len(pending)
    for base_key, base_value in base:
        # Emit overlay entries that come before this base key.
        while index < count:
            key, value = pending[index]
            if (key > base_key) if reverse else (key < base_key):
                index += 1
                if value is not None:
                    yield key, value
            else:
                break
        if index < count and pending[index][0] == base_key:
            value = pending[index][1]
            index += 1
            if value is not None:
                yield base_key, value
            continue
        yield base_key, base_value
    for key, value in pending[index:]:
        if value is not None:
            yield key, value
