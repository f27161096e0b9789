"""The byte layout of a window store partition (see :mod:`eos.state.window`).

* Timestamps: ``t + 2**63`` as 8 big-endian bytes, so the byte order of
  encoded timestamps is their numeric order, negatives first.
* Data entries: ``DATA | len(key) (4 bytes, big-endian) | key | slot`` ->
  value. The length prefix keeps one key's entries contiguous (no key's
  entries interleave with those of a key it is a prefix of), in slot order.
* Index entries: ``INDEX | slot | key`` -> ``INDEX_VALUE``, in time order.
* ``META`` entries: a subclass's own bookkeeping.
"""

from __future__ import annotations

import struct
from collections.abc import Iterator

from eos.errors import StateError

__all__ = [
    "DATA",
    "INDEX",
    "INDEX_VALUE",
    "MAX_TIMESTAMP",
    "META",
    "MIN_TIMESTAMP",
    "clamp",
    "data_prefix",
    "decode_ts",
    "encode_ts",
    "index_bound",
    "merge_fetch",
    "merge_index",
    "split_data_key",
]

MIN_TIMESTAMP = -(1 << 63)
"""The smallest timestamp a window store can hold (int64 range)."""
MAX_TIMESTAMP = (1 << 63) - 1
"""The largest timestamp a window store can hold."""

_OFFSET = 1 << 63
_TS = struct.Struct(">Q")
_LEN = struct.Struct(">I")
_pack_ts = _TS.pack
_unpack_ts = _TS.unpack_from
_pack_len = _LEN.pack

DATA = b"\x00"
INDEX = b"\x01"
META = b"\x02"
INDEX_VALUE = b"\x00"
"""The value of an index entry (non-empty, so no tool mistakes it for a tombstone)."""


def encode_ts(timestamp: int) -> bytes:
    """Order-preserving 8-byte encoding of an int64 timestamp.

    Raises:
        StateError: ``timestamp`` is not an int in the int64 range.
    """
    try:
        return _pack_ts(timestamp + _OFFSET)
    except (struct.error, TypeError) as exc:
        raise StateError(
            f"window timestamp {timestamp!r} is not an int in [{MIN_TIMESTAMP}, {MAX_TIMESTAMP}]"
        ) from exc


def decode_ts(data: bytes, offset: int = 0) -> int:
    """Inverse of :func:`encode_ts` for the 8 bytes at ``offset``."""
    value: int = _unpack_ts(data, offset)[0]
    return value - _OFFSET


def data_prefix(key_bytes: bytes) -> bytes:
    """The common prefix of the data entries of one serialized key."""
    return DATA + _pack_len(len(key_bytes)) + key_bytes


def clamp(timestamp: int) -> int:
    """``timestamp`` capped at :data:`MAX_TIMESTAMP`."""
    return MAX_TIMESTAMP if timestamp > MAX_TIMESTAMP else timestamp


def index_bound(last: int) -> bytes:
    """The exclusive upper bound of the index entries with ``start <= last``."""
    if last >= MAX_TIMESTAMP:
        return META
    return INDEX + _pack_ts(last + 1 + _OFFSET)


def split_data_key(data_key: bytes) -> tuple[bytes, int]:
    """``(key_bytes, window_start)`` of a data entry's key."""
    (length,) = _LEN.unpack_from(data_key, 1)
    end = 5 + length
    return data_key[5:end], decode_ts(data_key, end)


def merge_fetch(
    committed: Iterator[tuple[bytes, bytes]], cut: int, mine: list[tuple[int, bytes | None]]
) -> Iterator[tuple[int, bytes]]:
    """Merge committed data entries of one key with this transaction's writes
    (``mine``, start-ordered; they win ties; ``None`` hides)."""
    i = 0
    n = len(mine)
    for key, value in committed:
        start = decode_ts(key, cut)
        while i < n and mine[i][0] < start:
            pending = mine[i][1]
            if pending is not None:
                yield mine[i][0], pending
            i += 1
        if i < n and mine[i][0] == start:
            pending = mine[i][1]
            i += 1
            if pending is not None:
                yield start, pending
            continue
        yield start, value
    for start, pending in mine[i:]:
        if pending is not None:
            yield start, pending


def merge_index(
    committed: Iterator[tuple[bytes, bytes]], added: list[bytes], removed: set[bytes]
) -> Iterator[bytes]:
    """Merge committed index keys with this transaction's added ones, skipping removed."""
    i = 0
    n = len(added)
    for key, _ in committed:
        while i < n and added[i] < key:
            yield added[i]
            i += 1
        if i < n and added[i] == key:
            i += 1
        elif key in removed:
            continue
        yield key
    yield from added[i:]
