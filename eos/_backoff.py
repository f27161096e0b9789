"""Backoff between consecutive aborts, and the limit on aborts without progress.

Consecutive aborts wait :data:`BACKOFF_BASE_S` after the first, doubling up to
:data:`BACKOFF_CAP_S`. Progress (a commit, or a record newly found to blame)
starts the count over. Aborts caused by outages and rebalances back off but do
not count towards ``max_aborts_without_progress``: they end when the cluster
recovers. Anything else stops the instance with
:class:`~eos.errors.AbortLimitError` at the limit.
"""

from __future__ import annotations

import time
from collections.abc import Callable

from eos._stop import StopSignal
from eos.errors import AbortLimitError

__all__ = ["BACKOFF_BASE_S", "BACKOFF_CAP_S", "AbortBudget"]

BACKOFF_BASE_S = 0.1
"""Wait after the first abort without progress; it doubles with each further one."""
BACKOFF_CAP_S = 10.0
"""Longest wait between two attempts of a failing batch."""


class AbortBudget:
    """Backoff between consecutive aborts, and the limit on aborts without progress.

    Progress is a commit, or a record newly found to blame (its replay then
    applies the policy to it). Aborts caused by outages and rebalances back off
    but do not count towards the limit: they end when the cluster recovers.

    Args:
        limit: Counted aborts in a row that stop the instance.
        stop: The stop request (a wait ends early when it is set).
        clock: Monotonic clock; injectable for tests.
    """

    def __init__(
        self, limit: int, stop: StopSignal, *, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.limit = limit
        self.stop = stop
        self.clock = clock
        self.consecutive = 0
        self.counted = 0
        self.until = 0.0

    def progress(self) -> None:
        """A commit or a new blame: the count and the backoff start over."""
        self.consecutive = 0
        self.counted = 0
        self.until = 0.0

    def aborted(self, cause: str, *, counted: bool) -> None:
        """Count an abort and schedule the next attempt.

        Raises:
            AbortLimitError: ``limit`` counted aborts in a row.
        """
        self.consecutive += 1
        if counted:
            self.counted += 1
            if self.counted >= self.limit:
                raise AbortLimitError(
                    f"the batch was aborted {self.counted} times in a row without progress "
                    f"(max_aborts_without_progress={self.limit}); last cause: {cause}",
                    aborts=self.counted,
                    cause=cause,
                )
        self.until = self.clock() + self.delay()

    def delay(self) -> float:
        """The wait before the next attempt after the current run of aborts."""
        if self.consecutive <= 0:
            return 0.0
        return float(min(BACKOFF_CAP_S, BACKOFF_BASE_S * 2 ** (self.consecutive - 1)))

    def wait(self) -> None:
        """Sleep until the next attempt is due (returns early on a stop request)."""
        remaining = self.until - self.clock()
        if remaining > 0:
            self.stop.wait(remaining)
