"""Window definitions for the DSL's ``GroupedStream.windowed_by``, and ``Windowed`` keys.

All times are milliseconds of event time (record timestamps); a partition's
stream time is the largest timestamp seen on it. Each window type says
exactly which records a window holds and when it closes; the rules are Kafka
Streams' (its ``KStreamWindowAggregate``, ``KStreamSlidingWindowAggregate``
and ``KStreamSessionWindowAggregate``).

Closing and lateness, for every type: a window is **closed** once the
partition's stream time reaches its *close time* (below, per type). A closed
window is never updated again; ``.final()`` emits its result at that moment.
A record is **late for a window** when the window's close time is <= the
stream time (which already includes that record): it is not added to that
window and is counted in ``eos_late_records_total`` (and, with
``late_record_policy="dead_letter"``, dead-lettered). A record behind stream
time but within the grace period is added normally.

Windows may start before 0 (negative timestamps are allowed): unlike Kafka
Streams, which clamps window starts at 0, every record falls in the same
number of windows wherever it is on the time line.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Generic, NamedTuple, TypeVar

from eos.errors import ConfigError

__all__ = [
    "HoppingWindows",
    "SessionWindows",
    "SlidingWindows",
    "TumblingWindows",
    "Windowed",
    "Windows",
]

_MAX_MS = (1 << 62) - 1
"""Sizes, gaps and grace periods stay far enough below the int64 range that the
window store's encoded timestamps (start + size + grace + retention) fit."""

KT = TypeVar("KT")


if sys.version_info >= (3, 11) or TYPE_CHECKING:

    class Windowed(NamedTuple, Generic[KT]):
        """The key of a windowed table: the record key and its window's bounds.

        A NamedTuple, so the JSON serde writes it as ``[key, start, end]``. The
        meaning of ``end`` depends on the window type: exclusive for tumbling and
        hopping windows (``[start, end)``), inclusive for sliding windows
        (``[start, end]``) and for session windows (the timestamps of the
        session's first and last records).
        """

        key: KT
        """The record key."""
        start: int
        """The window's start, inclusive (ms)."""
        end: int
        """The window's end (ms): exclusive for time windows, inclusive for sliding and
        session windows."""

else:  # Python 3.10: a NamedTuple cannot be Generic; Windowed[K] still works at run time.

    class Windowed(NamedTuple):
        """The key of a windowed table (see the Python 3.11+ definition above)."""

        key: Any
        start: int
        end: int

        @classmethod
        def __class_getitem__(cls, _item: object) -> type:
            return cls


def _check_ms(name: str, value: object, *, positive: bool) -> None:
    low = 1 if positive else 0
    if type(value) is not int or not low <= value <= _MAX_MS:
        what = "a positive int" if positive else "an int >= 0"
        raise ConfigError(f"invalid {name} {value!r}: use {what} (milliseconds)", key=name)


@dataclass(frozen=True, slots=True)
class TumblingWindows:
    """Fixed-size, non-overlapping windows aligned to the epoch (Kafka Streams'
    ``TimeWindows`` without advance).

    A record with timestamp ``t`` falls in exactly one window,
    ``[start, start + size_ms)`` with ``start = t - t % size_ms``::

        size 10:  [0 ........ 10) [10 ....... 20) [20 ....... 30)
        records:     3   7           10  15           29

    The window closes when stream time reaches ``end + grace_ms`` (``end``
    exclusive): a record at ``t`` is late when ``t - t % size + size +
    grace_ms <= stream time``.

    Args:
        size_ms: Window length in ms, > 0.
        grace_ms: How long after the window's end records are still accepted, >= 0.

    Raises:
        ConfigError: An argument is not an int in range (the error names it).
    """

    size_ms: int
    grace_ms: int = 0

    def __post_init__(self) -> None:
        _check_ms("size_ms", self.size_ms, positive=True)
        _check_ms("grace_ms", self.grace_ms, positive=False)


@dataclass(frozen=True, slots=True)
class HoppingWindows:
    """Fixed-size windows that start every ``advance_ms`` and may overlap (Kafka
    Streams' ``TimeWindows.advanceBy``).

    Windows are ``[start, start + size_ms)`` for every ``start`` that is a
    multiple of ``advance_ms``; a record at ``t`` falls in every window with
    ``t - size_ms < start <= t``: ``size_ms / advance_ms`` windows when
    ``advance_ms`` divides ``size_ms``::

        size 10, advance 5:  [0 ......... 10)
                                  [5 ......... 15)
                                        [10 ........ 20)
        record 7 is in [0, 10) and [5, 15); record 10 in [5, 15) and [10, 20)

    Each window closes when stream time reaches its ``end + grace_ms``; a
    record can be late for its older windows and still be added to newer ones.

    Args:
        size_ms: Window length in ms, > 0.
        advance_ms: Distance between window starts in ms, ``0 < advance_ms <= size_ms``
            (``advance_ms == size_ms`` is a tumbling window).
        grace_ms: How long after a window's end records are still accepted, >= 0.

    Raises:
        ConfigError: An argument is not an int in range (the error names it).
    """

    size_ms: int
    advance_ms: int
    grace_ms: int = 0

    def __post_init__(self) -> None:
        _check_ms("size_ms", self.size_ms, positive=True)
        _check_ms("advance_ms", self.advance_ms, positive=True)
        _check_ms("grace_ms", self.grace_ms, positive=False)
        if self.advance_ms > self.size_ms:
            raise ConfigError(
                f"invalid advance_ms {self.advance_ms!r}: it must be <= size_ms "
                f"({self.size_ms}), or records between windows would be in none",
                key="advance_ms",
            )


@dataclass(frozen=True, slots=True)
class SlidingWindows:
    """Windows of every distinct set of records no more than
    ``max_difference_ms`` apart (Kafka Streams' ``SlidingWindows``, KIP-450).

    Windows are ``[start, start + max_difference_ms]``, inclusive at both
    ends. For each record at ``t`` there is its window ``[t - d, t]``
    (``d = max_difference_ms``) and, when some record of the key lies in
    ``[t + 1, t + 1 + d]``, the window ``[t + 1, t + 1 + d]`` (where ``t``
    drops out). With ``d = 5000`` and records at 8000, 9200 and 12400 the
    windows are ``[3000, 8000]`` {8000}, ``[4200, 9200]`` {8000, 9200},
    ``[7400, 12400]`` {all three}, ``[8001, 13001]`` {9200, 12400} and
    ``[9201, 14201]`` {12400}. Out-of-order records update the windows they
    fall in.

    A window closes when stream time passes ``end + grace_ms``, i.e. reaches
    ``end + grace_ms + 1`` (``end`` is inclusive).

    Args:
        max_difference_ms: The window length ``d`` in ms, >= 0.
        grace_ms: How long after a window's end records are still accepted, >= 0.

    Raises:
        ConfigError: An argument is not an int in range (the error names it).
    """

    max_difference_ms: int
    grace_ms: int = 0

    def __post_init__(self) -> None:
        _check_ms("max_difference_ms", self.max_difference_ms, positive=False)
        _check_ms("grace_ms", self.grace_ms, positive=False)


@dataclass(frozen=True, slots=True)
class SessionWindows:
    """Sessions of activity per key, separated by more than ``inactivity_gap_ms``
    without records (Kafka Streams' ``SessionWindows``).

    A session is ``[first, last]``, the timestamps of its first and last
    records, inclusive. A record at ``t`` joins every session of its key that
    it is within ``inactivity_gap_ms`` of (``start - gap <= t <= end + gap``);
    when it bridges two or more sessions they merge into one (their
    aggregates combined with the ``merger``), and the merged-away sessions
    are retracted downstream as ``(Windowed(key, start, end), None)``::

        gap 5, grace 10:  records 0 3  12 14      -> sessions [0, 3] and [12, 14]
                          then a record at 8  -> one session [0, 14]
                          (retractions of [0, 3] and [12, 14], then [0, 14])

    A session closes when stream time passes ``last + inactivity_gap_ms +
    grace_ms``, i.e. reaches ``last + gap + grace + 1`` (Kafka Streams'
    emit-on-window-close condition). A closed session is not extended: a
    record after it starts a new session.

    Args:
        inactivity_gap_ms: The largest distance in ms between two records of one
            session, > 0.
        grace_ms: How long after a session could still grow records are accepted, >= 0.

    Raises:
        ConfigError: An argument is not an int in range (the error names it).
    """

    inactivity_gap_ms: int
    grace_ms: int = 0

    def __post_init__(self) -> None:
        _check_ms("inactivity_gap_ms", self.inactivity_gap_ms, positive=True)
        _check_ms("grace_ms", self.grace_ms, positive=False)


Windows = TumblingWindows | HoppingWindows | SlidingWindows | SessionWindows
"""Any window definition ``windowed_by`` takes."""
