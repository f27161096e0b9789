"""The internal time store: how stream time and timers are laid out in bytes.

Store :data:`TIME_STORE` (one partition per input partition number, changelog
``<application_id>-__eos-time-changelog``, RocksDB) holds, in key order:

- ``b"k" + kind + len(key) u32 + key + timestamp`` -> a by-key index of the
  timers (``cancel(key)`` is one range read);
- ``b"s"`` -> the partition's committed stream time;
- ``b"t" + kind + timestamp + key`` -> a timer, ordered by timestamp then key.

Timestamps are 8 bytes big-endian offset by 2**63, so byte order is numeric
order, negatives included. Keys are stored with :func:`encode_key`: bytes as
they are, None, or JSON.
"""

from __future__ import annotations

import json
import struct
from collections.abc import Iterator
from typing import Literal

from eos.errors import ConfigError
from eos.state.base import Store

__all__ = [
    "KINDS",
    "NEVER",
    "NO_TIME",
    "PRESENT",
    "RESERVED_PREFIX",
    "STREAM_TIME_KEY",
    "TIME_STORE",
    "UNKNOWN",
    "TimerKind",
    "after",
    "decode_key",
    "encode_key",
    "index_entry",
    "index_prefix",
    "iter_timers",
    "read_ts",
    "time_store",
    "timer_entry",
    "ts",
]

TIME_STORE = "__eos-time"
"""The internal store of stream times and timers (changelog ``<app>-__eos-time-changelog``)."""
RESERVED_PREFIX = "__eos"
"""Store names starting with this are the engine's."""

TimerKind = Literal["stream_time", "wall_clock"]
KINDS: dict[str, bytes] = {"stream_time": b"s", "wall_clock": b"w"}

NEVER = float("inf")
"""``due`` of a partition with nothing scheduled."""
UNKNOWN = float("-inf")
"""``due`` that must be recomputed (after an abort): any stream time reaches it."""
NO_TIME = -(1 << 63)
"""Stream time of a partition that has seen no record."""

STREAM_TIME_KEY = b"s"
PRESENT = b"\x01"
_U64 = struct.Struct(">Q")
_U32 = struct.Struct(">I")
_OFFSET = 1 << 63


def ts(timestamp: int) -> bytes:
    """Big-endian, offset by 2**63: byte order is numeric order, negatives included."""
    return _U64.pack(timestamp + _OFFSET)


def read_ts(data: bytes, at: int = 0) -> int:
    value: int = _U64.unpack_from(data, at)[0]
    return value - _OFFSET


def encode_key(key: object) -> bytes:
    """A timer key as bytes: bytes as they are, None, or JSON for anything else.

    Raises:
        ConfigError: The key is neither bytes, None nor JSON-serializable.
    """
    if isinstance(key, bytes):
        return b"b" + key
    if key is None:
        return b"n"
    try:
        return b"j" + json.dumps(key, separators=(",", ":"), allow_nan=False).encode()
    except (TypeError, ValueError) as exc:
        raise ConfigError(
            f"timer key {key!r} ({type(key).__name__}) cannot be stored: use bytes, None or a "
            f"JSON-serializable value (str, int, float, bool, list, dict): {exc}",
            "timers",
        ) from exc


def decode_key(data: bytes) -> object:
    """The key :func:`encode_key` encoded (JSON arrays come back as lists)."""
    tag = data[:1]
    if tag == b"b":
        return data[1:]
    if tag == b"n":
        return None
    return json.loads(data[1:])


def timer_entry(kind: bytes, timestamp: int, key: bytes) -> bytes:
    return b"t" + kind + ts(timestamp) + key


def index_prefix(kind: bytes, key: bytes) -> bytes:
    """Where the by-key index entries of ``key``'s timers of ``kind`` start."""
    return b"k" + kind + _U32.pack(len(key)) + key


def index_entry(kind: bytes, key: bytes, timestamp: int) -> bytes:
    return index_prefix(kind, key) + ts(timestamp)


def time_store() -> Store[bytes, bytes]:
    """The declaration of :data:`TIME_STORE` (RocksDB, bytes keys and values)."""
    return Store(TIME_STORE, key_serde="bytes", value_serde="bytes")


def after(prefix: bytes) -> bytes:
    """The smallest key greater than every key starting with ``prefix``."""
    stripped = prefix.rstrip(b"\xff")
    if not stripped:
        return prefix + b"\xff" * 8
    return stripped[:-1] + bytes([stripped[-1] + 1])


def iter_timers(items: Iterator[tuple[bytes, bytes]]) -> Iterator[tuple[str, int, object]]:
    """``(kind, timestamp, key)`` of the timer entries among a time store's items."""
    names = {code: name for name, code in KINDS.items()}
    for key, _ in items:
        if key[:1] == b"t":
            yield names[key[1:2]], read_ts(key, 2), decode_key(key[10:])
