"""The local half of restoring a store partition from its changelog.

The engine reads the changelog (``read_committed``) from the store's checkpoint
up to the high watermark taken at assignment, and hands each chunk of records
to :func:`apply_changelog`. That function does no Kafka I/O.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from typing import cast

from eos.errors import StateError
from eos.state.base import StateStore

__all__ = ["RestoreProgress", "apply_changelog", "format_duration"]


def apply_changelog(
    store: StateStore,
    records: Iterable[tuple[bytes, bytes | None]],
    next_offset: int,
) -> None:
    """Apply one chunk of changelog records and advance the checkpoint.

    The chunk is written in one batch together with ``next_offset``, so a
    crash leaves either the whole chunk and its checkpoint or neither. Applying
    the same chunk twice gives the same state (the last record per key wins
    and a ``None`` value deletes), so replaying from an older checkpoint is
    safe.

    Args:
        store: The open store partition.
        records: ``(key, value)`` pairs in changelog order; ``None`` values are
            tombstones.
        next_offset: The changelog offset to restore from next: the consumer's
            position after this chunk (not the last record's offset plus one,
            which can be lower when transaction markers follow it).

    Raises:
        StateError: If a record has no key, or the write fails.
    """
    # Later records for the same key overwrite earlier ones, which is exactly
    # the changelog's compaction semantics.
    changes: dict[bytes | None, bytes | None] = dict(records)
    if None in changes:
        raise StateError(
            f"changelog chunk ending before offset {next_offset} has a record without a key; "
            "the changelog topic holds data this application did not write"
        )
    store.write(cast("dict[bytes, bytes | None]", changes), next_offset)


def format_duration(seconds: float) -> str:
    """Render a duration for a log line: ``1.6s``, ``4m05s``, ``2h03m``."""
    if seconds < 60:
        return f"{seconds:.1f}s"
    minutes, secs = divmod(int(seconds + 0.5), 60)
    if minutes < 60:
        return f"{minutes}m{secs:02d}s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h{minutes:02d}m"


class RestoreProgress:
    """Counts restored records and estimates rate and time left, for logging.

    The target is an estimate (end offset minus start offset counts
    transaction markers and compacted-away records too), so progress can end
    below it; the restorer decides when it is done, not this class.

    Args:
        name: Store name.
        partition: Store partition.
        target: Expected number of records, or ``None`` if unknown.
        clock: Monotonic clock in seconds; injectable for tests.
    """

    __slots__ = ("_clock", "_started", "name", "partition", "restored", "target")

    def __init__(
        self,
        name: str,
        partition: int,
        target: int | None = None,
        *,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.name = name
        self.partition = partition
        self.target = target
        self.restored = 0
        self._clock = clock
        self._started = clock()

    def add(self, count: int) -> None:
        """Record that ``count`` more records were restored."""
        self.restored += count

    @property
    def elapsed(self) -> float:
        """Seconds since the progress tracker was created."""
        return self._clock() - self._started

    @property
    def rate(self) -> float:
        """Records per second so far (0.0 before any time has passed)."""
        elapsed = self.elapsed
        return self.restored / elapsed if elapsed > 0 else 0.0

    @property
    def eta(self) -> float | None:
        """Estimated seconds left, or ``None`` without a target or a rate yet."""
        if self.target is None:
            return None
        remaining = self.target - self.restored
        if remaining <= 0:
            return 0.0
        rate = self.rate
        return remaining / rate if rate > 0 else None

    def format(self) -> str:
        """Render e.g. ``order-counts[2]: 12,000/50,000 records (24,000/s, ETA 1.6s)``."""
        count = f"{self.restored:,}"
        if self.target is not None:
            count += f"/{self.target:,}"
        details = f"{self.rate:,.0f}/s"
        eta = self.eta
        if eta is not None:
            details += f", ETA {format_duration(eta)}"
        return f"{self.name}[{self.partition}]: {count} records ({details})"

    def __repr__(self) -> str:
        return f"RestoreProgress({self.format()})"
