"""Counters the engine keeps per batch and commit, read by ``app.state`` and metrics.

Threading contract: one thread writes (the processing thread, which also runs
the rebalance callbacks and the restore), any thread reads. Writes happen per
consumed batch, per commit, per abort, per rebalance or per restore, never per
record. Plain integer fields are written with ``+=`` and read as attributes:
under the GIL a reader sees each one whole. Everything with structure
(histograms, abort reasons, partition offsets) is changed and copied under
one small lock, so a scrape sees a histogram whose buckets, sum and count
agree, and a commit's counters together with its histograms.

Nothing here imports ``prometheus_client``; :mod:`eos.metrics` turns
:meth:`EngineStats.view` into Prometheus samples at scrape time.
"""

from __future__ import annotations

import threading
import time
from collections import Counter
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Final, Literal

from eos._histogram import BucketHistogram, HistogramSnapshot

__all__ = [
    "ABORT_REASONS",
    "BATCH_RECORDS_BUCKETS",
    "COMMIT_BUCKETS",
    "LATENCY_BUCKETS",
    "RESTORE_BUCKETS",
    "RUN_STATES",
    "SINK_ABORT_REASONS",
    "AppState",
    "BucketHistogram",
    "EngineStats",
    "HealthView",
    "HistogramSnapshot",
    "PartitionState",
    "RunState",
    "SinkStats",
    "SinkView",
    "StatsView",
]

RunState = Literal["created", "starting", "restoring", "running", "stopping", "stopped", "failed"]
RUN_STATES: Final[tuple[RunState, ...]] = (
    "created",
    "starting",
    "restoring",
    "running",
    "stopping",
    "stopped",
    "failed",
)

#: Abort reasons the engine uses; each is exported as 0 until it first happens,
#: so ``rate()`` and ``increase()`` see the series from the start.
ABORT_REASONS: Final = (
    "processing_error",
    "commit_failed",
    "output_rejected",
    "produce_failed",
    "outage",
    "rebalance",
    "partitions_lost",
    "transaction_timeout",
    "producer_failed",
    "producer_stuck",
    "consumer_failed",
    "config_error",
    "run_failed",
    "records_in_flight",
)

#: Record timestamp to commit, in seconds.
LATENCY_BUCKETS: Final = (
    0.001,
    0.0025,
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    1.0,
    2.5,
    5.0,
    10.0,
    30.0,
    60.0,
)
#: send_offsets + commit_transaction (or flush + offset commit), in seconds.
COMMIT_BUCKETS: Final = LATENCY_BUCKETS
#: Input records per committed transaction.
BATCH_RECORDS_BUCKETS: Final = (
    1.0,
    10.0,
    50.0,
    100.0,
    250.0,
    500.0,
    1000.0,
    2500.0,
    5000.0,
    10000.0,
    50000.0,
    100000.0,
)
#: One restore of newly assigned store partitions, in seconds.
RESTORE_BUCKETS: Final = (0.01, 0.1, 0.5, 1.0, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 600.0, 1800.0)

# Consumed batches waiting for their commit. The engine commits every
# commit.interval.ms, so this is never reached in practice; past it, batches
# are folded into the last entry (its timestamp range widens) to bound memory.
_MAX_PENDING_BATCHES: Final = 1024

TP = tuple[str, int]


@dataclass(frozen=True, slots=True)
class PartitionState:
    """Offsets of one assigned input partition, as of the last update.

    Attributes:
        end_offset: The partition's end (high watermark) the consumer last
            saw, or ``None`` if not known yet.
        committed_offset: The committed position of this application (the
            next offset it will process), or ``None`` if nothing was committed.
        lag: ``end_offset - committed_offset``, never below 0; ``None`` if
            either is unknown.
    """

    end_offset: int | None
    committed_offset: int | None
    lag: int | None


@dataclass(frozen=True)
class AppState:
    """A snapshot of an application, as ``app.state`` returns it.

    Attributes:
        state: The run state (created, starting, restoring, running,
            stopping, stopped, failed).
        processed_count: Input records in committed transactions.
        commit_count: Committed transactions.
        abort_count: Aborted transactions (any reason).
        assigned_partitions: The input partitions this instance owns.
        restoring_partitions: Those of them still waiting for their stores to
            be restored (not processed yet).
        last_commit_time: Wall-clock time (``time.time()``) of the last
            commit, or ``None`` before the first.
        partitions: Offsets and lag per assigned input partition.
        lag: Total lag over the partitions whose lag is known.
    """

    state: RunState
    processed_count: int
    commit_count: int
    abort_count: int
    assigned_partitions: tuple[tuple[str, int], ...]
    last_commit_time: float | None
    partitions: Mapping[tuple[str, int], PartitionState] = field(
        default_factory=lambda: MappingProxyType({})
    )
    lag: int = 0
    restoring_partitions: tuple[tuple[str, int], ...] = ()


@dataclass(frozen=True, slots=True)
class HealthView:
    """What the health endpoints judge (:mod:`eos.metrics`), copied at one moment.

    Times are ``time.monotonic()`` seconds of this process.

    Attributes:
        state: The run state.
        loop_turned: When the processing loop last turned, or ``None`` before
            its first turn.
        assigned: How many input partitions this instance owns.
        restoring: How many of them wait for their stores to be restored.
        uncommitted_since: When the first batch consumed since the last
            commit was recorded, or ``None`` when everything consumed is
            committed. An abort keeps it (the records are replayed); a commit
            or a rebalance that releases partitions clears it.
    """

    state: RunState
    loop_turned: float | None
    assigned: int
    restoring: int
    uncommitted_since: float | None


@dataclass(frozen=True, slots=True)
class StatsView:
    """Everything :mod:`eos.metrics` exports, copied at one moment."""

    application_id: str
    state: RunState
    processed: int
    produced: int
    commits: int
    aborts: int
    abort_reasons: Mapping[str, int]
    processing_errors: int
    skipped: int
    dead_lettered: int
    late_records: int
    timers_fired: int
    in_flight: int
    record_timeouts: int
    rebalances: int
    fenced: int
    consumer_renewals: int
    restored: int
    consecutive_aborts: int
    assigned: tuple[tuple[str, int], ...]
    partitions: Mapping[tuple[str, int], PartitionState]
    last_commit_time: float | None
    latency: HistogramSnapshot
    commit_duration: HistogramSnapshot
    batch_records: HistogramSnapshot
    restore_duration: HistogramSnapshot
    sink: SinkView | None = None


SINK_ABORT_REASONS: Final = (
    "record_failed",
    "outage",
    "fenced",
    "rebalance",
    "partitions_lost",
    "dead_letter_failed",
    "commit_failed",
    "config_error",
    "run_failed",
)
"""Why a sink's database transaction was rolled back (``eos_sink_transaction_aborts_total``)."""


@dataclass
class SinkView:
    """A copy of :class:`SinkStats` for one scrape."""

    name: str
    rows: int
    aborts: Mapping[str, int]
    commit_duration: HistogramSnapshot
    outage_seconds: float


@dataclass
class SinkStats:
    """Counters of a sink's database transactions (``eos_sink_*``); the sink's engine writes them.

    ``rows`` and ``commit_duration`` are updated by :meth:`committed`, the
    abort counts by :meth:`aborted`; ``outage_since`` (monotonic seconds) is
    set while the database is unreachable.
    """

    name: str
    rows: int = 0
    aborts: Counter[str] = field(default_factory=Counter)
    commit_duration: BucketHistogram = field(
        default_factory=lambda: BucketHistogram(COMMIT_BUCKETS), repr=False
    )
    outage_since: float | None = None
    _lock: threading.Lock = field(
        default_factory=threading.Lock, init=False, repr=False, compare=False
    )

    def committed(self, rows: int, seconds: float) -> None:
        """One committed database transaction that wrote ``rows`` rows."""
        with self._lock:
            self.rows += rows
            self.commit_duration.observe(seconds)

    def aborted(self, reason: str) -> None:
        """One rolled-back database transaction (a reason of :data:`SINK_ABORT_REASONS`)."""
        with self._lock:
            self.aborts[reason] += 1

    def view(self) -> SinkView:
        with self._lock:
            aborts = dict.fromkeys(SINK_ABORT_REASONS, 0)
            aborts.update(self.aborts)
            since = self.outage_since
            return SinkView(
                name=self.name,
                rows=self.rows,
                aborts=aborts,
                commit_duration=self.commit_duration.snapshot(),
                outage_seconds=0.0 if since is None else max(0.0, time.monotonic() - since),
            )


@dataclass
class EngineStats:
    """Mutable counters of one engine; see the module docstring for threading.

    The engine assigns ``state`` and ``consecutive_aborts`` and increments
    ``processing_errors``, ``skipped``, ``dead_lettered``, ``late_records``,
    ``timers_fired``, ``rebalances``,
    ``fenced`` and ``consumer_renewals`` directly,
    replaces ``assigned`` and ``restoring`` with new lists, and calls the ``record_*``,
    ``set_partition`` and ``drop_partitions`` methods for the rest. Once per
    turn of its processing loop (never per record) it stamps ``loop_turned``
    with ``time.monotonic()``: the liveness check (``/healthz``) reads it.

    ``clock`` is the wall clock (seconds since the epoch) that record
    timestamps are compared with to measure latency; tests replace it.
    """

    application_id: str
    state: RunState = "created"
    processed: int = 0
    produced: int = 0
    commits: int = 0
    aborts: int = 0
    abort_reasons: Counter[str] = field(default_factory=Counter)
    processing_errors: int = 0
    skipped: int = 0
    dead_lettered: int = 0
    late_records: int = 0
    timers_fired: int = 0
    in_flight: int = 0
    record_timeouts: int = 0
    rebalances: int = 0
    fenced: int = 0
    consumer_renewals: int = 0
    restored: int = 0
    consecutive_aborts: int = 0
    assigned: list[tuple[str, int]] = field(default_factory=list)
    restoring: list[tuple[str, int]] = field(default_factory=list)
    last_commit_time: float | None = None
    loop_turned: float | None = None
    last_batch_records: int = 0
    last_commit_seconds: float = 0.0
    latency: BucketHistogram = field(
        default_factory=lambda: BucketHistogram(LATENCY_BUCKETS), repr=False
    )
    commit_duration: BucketHistogram = field(
        default_factory=lambda: BucketHistogram(COMMIT_BUCKETS), repr=False
    )
    batch_records: BucketHistogram = field(
        default_factory=lambda: BucketHistogram(BATCH_RECORDS_BUCKETS), repr=False
    )
    restore_duration: BucketHistogram = field(
        default_factory=lambda: BucketHistogram(RESTORE_BUCKETS), repr=False
    )
    clock: Callable[[], float] = field(default=time.time, repr=False, compare=False)
    sink: SinkStats | None = field(default=None, repr=False, compare=False)
    _partitions: dict[TP, tuple[int | None, int | None]] = field(
        default_factory=dict, init=False, repr=False, compare=False
    )
    _pending: list[tuple[int, int, int]] = field(
        default_factory=list, init=False, repr=False, compare=False
    )
    _uncommitted_since: float | None = field(default=None, init=False, repr=False, compare=False)
    _lock: threading.Lock = field(
        default_factory=threading.Lock, init=False, repr=False, compare=False
    )

    # ------------------------------------------------------------------ writer side

    def record_batch(self, count: int, first_ts_ms: int, last_ts_ms: int) -> None:
        """One consumed batch of ``count`` records, processed but not yet committed.

        Call once per batch with the timestamps (ms since the epoch, as
        ``Message.timestamp()[1]`` gives them) of its first and last message.
        At the next :meth:`record_commit` the batch becomes ``count``
        latency observations spread between the two; :meth:`record_abort`
        drops it. A timestamp of 0 or below means "not available".
        """
        if self._uncommitted_since is None:
            self._uncommitted_since = time.monotonic()
        pending = self._pending
        if len(pending) < _MAX_PENDING_BATCHES:
            pending.append((count, first_ts_ms, last_ts_ms))
            return
        old_count, old_first, old_last = pending[-1]
        pending[-1] = (
            old_count + count,
            _min_known(old_first, first_ts_ms, last_ts_ms),
            max(old_last, first_ts_ms, last_ts_ms),
        )

    def record_commit(self, records: int, seconds: float, produced: int = 0) -> None:
        """One committed transaction.

        Args:
            records: Input records it committed.
            seconds: How long the commit took (send_offsets + commit).
            produced: Output records it made visible.
        """
        now = self.clock()
        with self._lock:
            self.commits += 1
            self.processed += records
            self.produced += produced
            self.last_batch_records = records
            self.last_commit_seconds = seconds
            self.last_commit_time = now
            self._uncommitted_since = None
            self.commit_duration.observe(seconds)
            self.batch_records.observe(records)
            latency = self.latency
            for count, first_ms, last_ms in self._pending:
                if first_ms > 0 and last_ms > 0:
                    oldest, newest = min(first_ms, last_ms), max(first_ms, last_ms)
                elif first_ms > 0 or last_ms > 0:
                    oldest = newest = max(first_ms, last_ms)
                else:
                    continue  # no timestamps: these records have no latency
                # A producer clock ahead of ours gives a negative age: count it as 0.
                latency.observe_spread(
                    count, max(0.0, now - newest / 1000.0), max(0.0, now - oldest / 1000.0)
                )
            self._pending.clear()

    def record_abort(self, reason: str) -> None:
        """One aborted transaction (or failed batch); ``reason`` is a short kind.

        The batches recorded since the last commit are dropped: they will be
        consumed and recorded again after the rewind. For readiness they stay
        uncommitted since they were first recorded.
        """
        with self._lock:
            self.aborts += 1
            self.abort_reasons[reason] += 1
            self._pending.clear()

    def record_restore(self, records: int, seconds: float) -> None:
        """One restore of newly assigned store partitions finished."""
        with self._lock:
            self.restored += records
            self.restore_duration.observe(seconds)

    def set_partition(
        self, topic: str, partition: int, end_offset: int | None, committed_offset: int | None
    ) -> None:
        """Record the end offset and committed position of an assigned partition.

        A negative offset (librdkafka's ``OFFSET_INVALID`` is -1001) or
        ``None`` means unknown.
        """
        end = end_offset if end_offset is not None and end_offset >= 0 else None
        committed = (
            committed_offset if committed_offset is not None and committed_offset >= 0 else None
        )
        with self._lock:
            self._partitions[(topic, partition)] = (end, committed)

    def drop_partitions(self, tps: Iterable[tuple[str, int]]) -> None:
        """Forget revoked or lost partitions, so their lag series disappear.

        A release follows a commit (revoked) or an abort whose records are
        not replayed here (lost), so readiness starts its count over.
        """
        with self._lock:
            for tp in tps:
                self._partitions.pop(tp, None)
            self._uncommitted_since = None

    # ------------------------------------------------------------------ reader side

    def snapshot(self) -> AppState:
        """A consistent :class:`AppState` of this engine (any thread)."""
        with self._lock:
            partitions = self._partition_states()
            state = AppState(
                state=self.state,
                processed_count=self.processed,
                commit_count=self.commits,
                abort_count=self.aborts,
                assigned_partitions=tuple(self.assigned),
                last_commit_time=self.last_commit_time,
                partitions=MappingProxyType(partitions),
                lag=_total_lag(partitions),
                restoring_partitions=tuple(self.restoring),
            )
        return state

    def health(self) -> HealthView:
        """Copy what ``/healthz`` and ``/ready`` judge (any thread; used per probe)."""
        with self._lock:
            return HealthView(
                state=self.state,
                loop_turned=self.loop_turned,
                assigned=len(self.assigned),
                restoring=len(self.restoring),
                uncommitted_since=self._uncommitted_since,
            )

    def view(self) -> StatsView:
        """Copy everything the metrics export (any thread; used per scrape)."""
        with self._lock:
            reasons = dict.fromkeys(ABORT_REASONS, 0)
            reasons.update(self.abort_reasons)
            return StatsView(
                application_id=self.application_id,
                state=self.state,
                processed=self.processed,
                produced=self.produced,
                commits=self.commits,
                aborts=self.aborts,
                abort_reasons=reasons,
                processing_errors=self.processing_errors,
                skipped=self.skipped,
                dead_lettered=self.dead_lettered,
                late_records=self.late_records,
                timers_fired=self.timers_fired,
                in_flight=self.in_flight,
                record_timeouts=self.record_timeouts,
                rebalances=self.rebalances,
                fenced=self.fenced,
                consumer_renewals=self.consumer_renewals,
                restored=self.restored,
                consecutive_aborts=self.consecutive_aborts,
                assigned=tuple(self.assigned),
                partitions=self._partition_states(),
                last_commit_time=self.last_commit_time,
                latency=self.latency.snapshot(),
                commit_duration=self.commit_duration.snapshot(),
                batch_records=self.batch_records.snapshot(),
                restore_duration=self.restore_duration.snapshot(),
                sink=self.sink.view() if self.sink is not None else None,
            )

    def _partition_states(self) -> dict[TP, PartitionState]:
        states: dict[TP, PartitionState] = {}
        for tp, (end, committed) in self._partitions.items():
            lag = None if end is None or committed is None else max(0, end - committed)
            states[tp] = PartitionState(end, committed, lag)
        return states


def _total_lag(partitions: Mapping[TP, PartitionState]) -> int:
    return sum(p.lag for p in partitions.values() if p.lag is not None)


def _min_known(*timestamps: int) -> int:
    """The smallest positive timestamp, or 0 if none is known."""
    known = [t for t in timestamps if t > 0]
    return min(known) if known else 0
