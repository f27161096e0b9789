"""In-memory store partition: a dict plus a lazily sorted key list.

Nothing survives a restart: the checkpoint starts at ``None`` every time, so
the engine restores a memory store from the start of its changelog.
"""

from __future__ import annotations

from bisect import bisect_left
from collections.abc import Iterator, Mapping

from eos.errors import StateError

__all__ = ["MemoryStore"]


class MemoryStore:
    """A :class:`~eos.state.base.StateStore` held in process memory.

    Reads are dict lookups. The sorted key list used for ordered iteration is
    rebuilt on the first iteration after the key set changed, so a write-heavy
    partition pays for sorting only when something iterates.

    Iterators work on a snapshot of the key list taken when iteration starts;
    keys deleted afterwards are skipped and keys added afterwards are not seen.

    Args:
        name: Store name, used in error messages.
        partition: Partition number, used in error messages.
    """

    __slots__ = ("_closed", "_data", "_label", "_offset", "_sorted")

    def __init__(self, name: str = "memory", partition: int = 0) -> None:
        self._label = f"{name}[{partition}]"
        self._data: dict[bytes, bytes] = {}
        self._sorted: list[bytes] | None = []
        self._offset: int | None = None
        self._closed = False

    def __repr__(self) -> str:
        return f"MemoryStore({self._label}, keys={len(self._data)}, offset={self._offset})"

    def _closed_error(self) -> StateError:
        return StateError(f"store {self._label} is closed")

    def get(self, key: bytes) -> bytes | None:
        """Return the value stored under ``key``, or ``None`` when absent."""
        if self._closed:
            raise self._closed_error()
        return self._data.get(key)

    def iterate(
        self,
        start: bytes | None = None,
        end: bytes | None = None,
        reverse: bool = False,
    ) -> Iterator[tuple[bytes, bytes]]:
        """Yield ``(key, value)`` with ``start <= key < end`` in byte order."""
        if self._closed:
            raise self._closed_error()
        keys = self._sorted
        if keys is None:
            keys = self._sorted = sorted(self._data)
        lo = 0 if start is None else bisect_left(keys, start)
        hi = len(keys) if end is None else bisect_left(keys, end)
        return self._iterate(keys, lo, hi, reverse)

    def _iterate(
        self, keys: list[bytes], lo: int, hi: int, reverse: bool
    ) -> Iterator[tuple[bytes, bytes]]:
        # ``keys`` is never mutated in place (writes replace it), so indexing
        # into it stays valid even if the store is written during iteration.
        data = self._data
        indices = range(hi - 1, lo - 1, -1) if reverse else range(lo, hi)
        for i in indices:
            key = keys[i]
            value = data.get(key)
            if value is not None:
                yield key, value

    def write(self, changes: Mapping[bytes, bytes | None], changelog_offset: int) -> None:
        """Apply puts and deletes and store the checkpoint."""
        if self._closed:
            raise self._closed_error()
        if changelog_offset < 0:
            raise StateError(
                f"store {self._label}: changelog offset must be >= 0, got {changelog_offset}"
            )
        data = self._data
        keyset_changed = False
        for key, value in changes.items():
            if value is None:
                if data.pop(key, None) is not None:
                    keyset_changed = True
            else:
                if key not in data:
                    keyset_changed = True
                data[key] = value
        if keyset_changed:
            self._sorted = None
        self._offset = changelog_offset

    def changelog_offset(self) -> int | None:
        """Return the checkpoint written by the last :meth:`write`, if any."""
        if self._closed:
            raise self._closed_error()
        return self._offset

    def close(self) -> None:
        """Drop the data. Calling it again does nothing."""
        self._closed = True
        self._data = {}
        self._sorted = []

    def wipe(self) -> None:
        """Delete all data and the checkpoint."""
        if self._closed:
            raise self._closed_error()
        self._data = {}
        self._sorted = []
        self._offset = None
