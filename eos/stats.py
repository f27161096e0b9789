"""Counters the engine keeps per batch and commit, read by ``app.state`` and metrics.

Updated only on the processing thread, per batch or per commit (never per
record); read from any thread as plain attributes.
"""

from __future__ import annotations

import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Literal

__all__ = ["AppState", "EngineStats", "RunState"]

RunState = Literal["created", "starting", "restoring", "running", "stopping", "stopped", "failed"]


@dataclass
class EngineStats:
    """Mutable counters of one engine."""

    application_id: str
    state: RunState = "created"
    processed: int = 0
    commits: int = 0
    aborts: int = 0
    abort_reasons: Counter[str] = field(default_factory=Counter)
    processing_errors: int = 0
    skipped: int = 0
    dead_lettered: int = 0
    rebalances: int = 0
    fenced: int = 0
    restored: int = 0
    assigned: list[tuple[str, int]] = field(default_factory=list)
    last_commit_time: float | None = None
    last_batch_records: int = 0
    last_commit_seconds: float = 0.0

    def record_commit(self, records: int, seconds: float) -> None:
        """One committed batch of ``records`` input records."""
        self.commits += 1
        self.processed += records
        self.last_batch_records = records
        self.last_commit_seconds = seconds
        self.last_commit_time = time.time()

    def record_abort(self, reason: str) -> None:
        """One aborted transaction (or failed batch); ``reason`` is a short kind."""
        self.aborts += 1
        self.abort_reasons[reason] += 1


@dataclass(frozen=True)
class AppState:
    """A snapshot of an application, as ``app.state`` returns it."""

    state: RunState
    processed_count: int
    commit_count: int
    abort_count: int
    assigned_partitions: tuple[tuple[str, int], ...]
    last_commit_time: float | None
