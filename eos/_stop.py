"""The stop request an application's parts share, and the signal that unwinds start-up.

One :class:`StopSignal` per ``Application.run()``: a signal handler or
``app.stop()`` sets it from any thread; the engine's loop, the restore, the
start-up calls and the retry loops of the transactional producer look at it.
It remembers when the stop was asked for, so every retry after that point
is bounded by ``shutdown_timeout_s``.
"""

from __future__ import annotations

import threading
import time

__all__ = ["StopRequested", "StopSignal"]


class StopRequested(Exception):
    """Internal: a stop was requested while starting up; unwind and return cleanly."""


class StopSignal:
    """A one-way flag with the time it was set. Thread-safe; setting it twice is a no-op.

    Args:
        grace_s: How long work that is already under way (the final commit, an
            abort) may still take after the stop was requested.
    """

    __slots__ = ("_event", "grace_s", "requested_at")

    def __init__(self, grace_s: float) -> None:
        self._event = threading.Event()
        self.grace_s = grace_s
        self.requested_at: float | None = None

    def set(self) -> None:
        """Request the stop (idempotent)."""
        if self.requested_at is None:
            self.requested_at = time.monotonic()
        self._event.set()

    def is_set(self) -> bool:
        """Whether a stop was requested."""
        return self._event.is_set()

    def wait(self, timeout: float) -> bool:
        """Sleep up to ``timeout`` seconds or until the stop is requested; True if it was."""
        return self._event.wait(max(0.0, timeout))

    def overdue(self) -> bool:
        """True once a stop was requested more than ``grace_s`` ago."""
        at = self.requested_at
        return at is not None and time.monotonic() - at >= self.grace_s

    def remaining(self, default: float) -> float:
        """Seconds left of the grace period, or ``default`` when no stop was requested."""
        at = self.requested_at
        if at is None:
            return default
        return max(0.0, min(default, at + self.grace_s - time.monotonic()))

    def check(self) -> None:
        """Raise :class:`StopRequested` if a stop was requested (start-up only)."""
        if self._event.is_set():
            raise StopRequested()
