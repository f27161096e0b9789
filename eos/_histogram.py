"""Fixed-bucket histograms with Prometheus ``le`` semantics, for :mod:`eos.stats`."""

from __future__ import annotations

import math
from bisect import bisect_left
from collections.abc import Iterable
from dataclasses import dataclass

__all__ = ["BucketHistogram", "HistogramSnapshot"]


@dataclass(frozen=True, slots=True)
class HistogramSnapshot:
    """A copy of a :class:`BucketHistogram` at one moment.

    Attributes:
        bounds: The finite upper bounds, ascending (``+Inf`` is implicit).
        cumulative: Observations ``<= bounds[i]``; one more entry at the end
            for ``+Inf``, which equals ``count``.
        sum: Sum of all observed values.
        count: Number of observations.
    """

    bounds: tuple[float, ...]
    cumulative: tuple[int, ...]
    sum: float
    count: int


class BucketHistogram:
    """A fixed-bucket histogram accumulator with Prometheus ``le`` semantics.

    Not thread-safe by itself: :class:`EngineStats` guards it with its lock.

    Args:
        buckets: Finite upper bounds; sorted here, must be distinct. ``+Inf``
            is always added.

    Raises:
        ValueError: No bucket, a repeated bound, or a bound that is not finite.
    """

    __slots__ = ("_bounds", "_counts", "count", "sum")

    def __init__(self, buckets: Iterable[float]) -> None:
        bounds = tuple(sorted(float(b) for b in buckets))
        if not bounds:
            raise ValueError("a histogram needs at least one bucket")
        if not all(math.isfinite(b) for b in bounds):
            raise ValueError(f"bucket bounds must be finite (+Inf is implicit): {bounds}")
        if len(set(bounds)) != len(bounds):
            raise ValueError(f"bucket bounds must be distinct: {bounds}")
        self._bounds = bounds
        # Per bucket, not cumulative: index i counts (bounds[i-1], bounds[i]];
        # the last index is the overflow bucket above the largest bound.
        self._counts = [0] * (len(bounds) + 1)
        self.sum = 0.0
        self.count = 0

    @property
    def bounds(self) -> tuple[float, ...]:
        """The finite upper bounds, ascending."""
        return self._bounds

    def observe(self, value: float) -> None:
        """Count one observation of ``value``."""
        self._counts[bisect_left(self._bounds, value)] += 1
        self.count += 1
        self.sum += value

    def observe_spread(self, count: int, low: float, high: float) -> None:
        """Count ``count`` observations spread evenly from ``low`` to ``high``.

        The observations are the points ``low + (high - low) * i / (count - 1)``
        for ``i`` in ``0 .. count - 1`` (one observation sits at the midpoint),
        so both ends are observed exactly. The work is O(buckets), not
        O(count): for each bound between ``low`` and ``high`` the number of
        points at or below it is computed directly. The sum grows by
        ``count * (low + high) / 2``, which is exact for evenly spread points.

        Args:
            count: How many observations; nothing happens if it is below 1.
            low: The smallest value (swapped with ``high`` if larger).
            high: The largest value.
        """
        if count < 1:
            return
        if high < low:
            low, high = high, low
        bounds = self._bounds
        counts = self._counts
        self.count += count
        self.sum += count * (low + high) / 2.0
        if count == 1 or high == low:
            counts[bisect_left(bounds, (low + high) / 2.0)] += count
            return
        step = (high - low) / (count - 1)
        first = bisect_left(bounds, low)  # the first bound >= low
        last = bisect_left(bounds, high, first)  # the first bound >= high: all points
        below = 0
        for index in range(first, last):
            # Points at or below this bound; the tiny slack keeps a point that
            # sits exactly on a bound from being lost to rounding.
            at_or_below = min(count, math.floor((bounds[index] - low) / step + 1e-9) + 1)
            counts[index] += at_or_below - below
            below = at_or_below
        counts[last] += count - below

    def snapshot(self) -> HistogramSnapshot:
        """Copy the current bucket counts, sum and count."""
        cumulative: list[int] = []
        running = 0
        for value in self._counts:
            running += value
            cumulative.append(running)
        return HistogramSnapshot(self._bounds, tuple(cumulative), self.sum, self.count)
