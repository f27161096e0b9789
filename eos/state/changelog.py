"""The Kafka side of restoring store partitions from their changelog topics.

Topic names and creation live in :mod:`eos.state.topics`; applying records to
a store (no Kafka I/O) in :mod:`eos.state.restore`.

Restoring one or more store partitions (:class:`ChangelogRestorer`):

1. take the changelog's low watermark and high watermark (the true end,
   ``read_uncommitted``) for every partition, once, at assignment;
2. check each store's checkpoint against them: beyond the end or below a
   moved start is a :class:`~eos.errors.StateError` naming the fix;
3. read every partition that is behind with ONE ``read_committed`` consumer
   (``assign()`` only, never committing) from its checkpoint, applying each
   chunk with :func:`~eos.state.restore.apply_changelog` and the consumer
   POSITION as the new checkpoint;
4. a partition is done when its position (or its partition-EOF event) reaches
   the high watermark taken in step 1.

Why the position and not the last record's offset: transaction markers occupy
offsets. After the last data record at ``o`` of a committed transaction the
position is ``o + 1`` (the marker) and only moves to ``o + 2`` when the
consumer has skipped the marker, on a later poll that returns nothing or the
EOF event. Comparing ``last offset + 1`` with the high watermark therefore
never succeeds when the changelog ends with a marker (KAFKA-10167,
quix-streams issue 1017). Measured with confluent-kafka 2.16.1 / librdkafka
2.16.0 on Kafka 4.1: data at 0,1 | 3,4 | 6,7 (markers at 2, 5, 8), an aborted
record at 9 with its marker at 10, high watermark 11: ``position()`` reads
1, 2, 4, 5, 7, 8 after each record, then 11 on the next empty poll, and the
EOF event carries offset 11.

Why the high watermark and not the last stable offset: a ``read_committed``
end (what ``get_watermark_offsets(cached=False)`` returns on such a consumer)
stops at the first OPEN transaction. Committed records of this application
may lie beyond a stale open transaction of a crashed former owner; stopping
there would lose them. So restore waits for that transaction to be resolved
(the broker aborts it after its ``transaction.timeout.ms``), warning while it
waits, and gives up with a :class:`~eos.errors.StateError` after a deadline
instead of hanging.

The global tables' loader (:mod:`eos.state.global_loader`) reads its topics
with the same offset listing (:func:`list_offsets`), transient-error test
(:func:`is_transient`) and read sizes (:data:`CHUNK_RECORDS`,
:data:`POLL_TIMEOUT_S`).

This module, like the engine and the transaction wrapper, imports
``confluent_kafka``; :mod:`eos.state.manager` does not.
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import cast

from confluent_kafka import Consumer, IsolationLevel, KafkaError, KafkaException
from confluent_kafka import TopicPartition as KafkaTopicPartition
from confluent_kafka.admin import (  # type: ignore[attr-defined]  # not in its __all__
    AdminClient,
    OffsetSpec,
)

from eos._admin import KafkaLog
from eos._kafka_errors import Cause, cause_of
from eos.config import ClientValue
from eos.errors import StateError
from eos.state.base import StateStore
from eos.state.restore import RestoreProgress, apply_changelog

__all__ = [
    "ADMIN_TIMEOUT_S",
    "CHUNK_RECORDS",
    "POLL_TIMEOUT_S",
    "PROGRESS_INTERVAL_S",
    "STALL_MARGIN_S",
    "ChangelogRestorer",
    "RestoreTask",
    "is_transient",
    "list_offsets",
    "restore_consumer_settings",
    "stall_timeout",
]

log = logging.getLogger("eos.state")

ADMIN_TIMEOUT_S = 30.0
"""Seconds an admin request (offsets, metadata) may retry transient errors before failing."""
CHUNK_RECORDS = 5000
"""Most records one ``consume()`` of a restoring consumer returns (one chunk applied at once)."""
POLL_TIMEOUT_S = 0.1
"""Longest wait of one ``consume()`` of a restoring consumer."""
PROGRESS_INTERVAL_S = 5.0
"""Seconds between restore progress log lines."""
_STALL_WARN_S = 10.0
_EARLIEST = OffsetSpec.earliest()  # type: ignore[no-untyped-call]
_LATEST = OffsetSpec.latest()  # type: ignore[no-untyped-call]

# Settings of the group consumer that mean nothing to (or would upset) an
# assign()-only consumer that never commits.
_GROUP_KEYS = (
    "group.id",
    "group.instance.id",
    "group.protocol",
    "group.protocol.type",
    "group.remote.assignor",
    "partition.assignment.strategy",
    "session.timeout.ms",
    "heartbeat.interval.ms",
    "max.poll.interval.ms",
    "auto.commit.interval.ms",
    "coordinator.query.interval.ms",
    "on_commit",
)


_RESTORE_DEFAULTS: dict[str, ClientValue] = {
    "queued.min.messages": 1_000_000,
    "fetch.wait.max.ms": 10,
    # Prefetch up to 16 MiB per changelog partition (librdkafka's default is
    # 64 MiB): restore throughput is the same, and a restoring instance's peak
    # memory stays within the bound docs/state.md gives.
    "queued.max.messages.kbytes": 16_384,
}


def restore_consumer_settings(
    consumer_settings: Mapping[str, ClientValue], application_id: str, client_id: str
) -> dict[str, ClientValue]:
    """Derive the restore consumer's settings from the group consumer's.

    Connection and security settings carry over; group settings are dropped.
    The consumer gets its own ``group.id`` (``<application_id>-restore``),
    which librdkafka wants even though the consumer only ``assign()``s and
    never commits, so the application's group is never touched.
    """
    settings = {k: v for k, v in consumer_settings.items() if k not in _GROUP_KEYS}
    # Throughput defaults (consumer_config still wins): keep a deep local
    # queue and do not let the broker hold fetches. Measured on 200,000 small
    # records: 1.6 s with librdkafka's defaults, 0.24 s with these.
    for key, value in _RESTORE_DEFAULTS.items():
        settings.setdefault(key, value)
    settings.update(
        {
            "group.id": f"{application_id}-restore",
            "client.id": client_id,
            "enable.auto.commit": False,
            "enable.auto.offset.store": False,
            "isolation.level": "read_committed",
            "enable.partition.eof": True,
            # A checkpoint outside the log is reported as a StateError before
            # reading starts; if the log shrinks DURING the restore, fail
            # rather than silently jump to another offset.
            "auto.offset.reset": "error",
        }
    )
    return settings


@dataclass(eq=False)
class RestoreTask:
    """One store partition to bring up to date with its changelog partition.

    Attributes:
        store: Store name.
        partition: Store (and changelog) partition.
        topic: Changelog topic.
        backend: The open store partition.
        path: Its local directory, named in error messages.
        restored: Records applied by the last :meth:`ChangelogRestorer.restore`.
        position: Changelog offset the store is now up to date with (its
            checkpoint, or the changelog start when it has none).
        end: Where to stop instead of the changelog's end: a table's store
            (its source topic is its changelog) restores up to the group's
            committed offset, and the consumer goes on from there; None for a
            plain changelog. A checkpoint beyond it (the group's offsets were
            reset) rebuilds the store from the start of the topic.
    """

    store: str
    partition: int
    topic: str
    backend: StateStore
    path: str
    restored: int = 0
    position: int = 0
    end: int | None = None
    _end: int = field(default=0, repr=False)
    _progress: RestoreProgress | None = field(default=None, repr=False)

    @property
    def label(self) -> str:
        return f"{self.store}[{self.partition}]"


class ChangelogRestorer:
    """Restores store partitions from their changelogs; see the module docstring.

    Stepwise: :meth:`add` checks the checkpoints of new tasks (and returns the
    ones already up to date); each :meth:`step` reads and applies changelog
    records for at most its time budget and returns the tasks that reached
    their end. The engine calls ``step`` between two polls of its group
    consumer, so a restore of any length never holds a transaction open and
    never blocks the group protocol. :meth:`restore` runs tasks to completion
    in one call (tests, benchmarks).

    One ``read_committed`` consumer (``assign()`` only) reads every active
    task; it is created on the first :meth:`add` with work and closed by
    :meth:`close`. A restore that makes no progress for ``stall_timeout_s``
    raises :class:`~eos.errors.StateError`.

    Threading: the caller's thread only.

    Args:
        admin: Admin client used to read watermarks.
        consumer_settings: Settings for the restore consumer, see
            :func:`restore_consumer_settings`.
        stall_timeout_s: Give up after this long without progress.
        progress_interval_s: Seconds between progress log lines.
        on_chunk: Called with ``(store, partition, records)`` after each
            applied chunk (the fault-injection seam).
    """

    def __init__(
        self,
        admin: AdminClient,
        consumer_settings: Mapping[str, ClientValue],
        *,
        stall_timeout_s: float,
        progress_interval_s: float = PROGRESS_INTERVAL_S,
        on_chunk: Callable[[str, int, int], None] | None = None,
    ) -> None:
        self._admin = admin
        self._settings = dict(consumer_settings)
        self._stall_timeout = stall_timeout_s
        self._progress_interval = progress_interval_s
        self._on_chunk = on_chunk
        self._consumer: Consumer | None = None
        self._active: dict[tuple[str, int], RestoreTask] = {}
        self._last_advance = 0.0
        self._next_log = 0.0
        self._next_warn = 0.0

    @property
    def active(self) -> bool:
        """Whether some task is still behind its changelog's end."""
        return bool(self._active)

    def restore(self, tasks: Sequence[RestoreTask]) -> None:
        """Bring every task's store up to its changelog's end; fill ``restored``/``position``.

        Raises:
            StateError: A checkpoint lies outside its changelog, reading failed,
                or restore stalled past the deadline.
        """
        try:
            self.add(tasks)
            while self._active:
                self.step(1.0)
        finally:
            self.close()

    def add(self, tasks: Sequence[RestoreTask]) -> list[RestoreTask]:
        """Check the tasks' checkpoints against their changelogs and queue those behind.

        Returns:
            The tasks that are already up to date (nothing to read).

        Raises:
            StateError: A checkpoint lies outside its changelog, or the
                changelog's offsets cannot be read.
        """
        if not tasks:
            return []
        tps = [KafkaTopicPartition(t.topic, t.partition) for t in tasks]
        lows = list_offsets(self._admin, tps, _EARLIEST, IsolationLevel.READ_UNCOMMITTED)
        highs = list_offsets(self._admin, tps, _LATEST, IsolationLevel.READ_UNCOMMITTED)
        done: list[RestoreTask] = []
        behind: list[RestoreTask] = []
        for task in tasks:
            key = (task.topic, task.partition)
            task.restored = 0
            if task.end is None:
                start = _start_offset(task, lows[key], highs[key])
                task._end = highs[key]
            else:
                start = _table_start(task, lows[key], min(task.end, highs[key]))
                task._end = max(start, min(task.end, highs[key]))
            task.position = start
            (behind if start < task._end else done).append(task)
        if behind:
            now = time.monotonic()
            for task in behind:
                task._progress = RestoreProgress(
                    task.store, task.partition, task._end - task.position
                )
                log.info(
                    "restoring %s from %s[%d] offsets %d..%d: %s",
                    task.label,
                    task.topic,
                    task.partition,
                    task.position,
                    task._end,
                    task._progress.format(),
                )
                self._active[(task.topic, task.partition)] = task
            self._last_advance = now
            self._next_warn = now + _STALL_WARN_S
            self._next_log = now + self._progress_interval
            self._assign()
        return done

    def remove(self, partitions: set[int]) -> None:
        """Stop restoring the store partitions numbered ``partitions`` (revoked)."""
        gone = [key for key, task in self._active.items() if task.partition in partitions]
        for key in gone:
            del self._active[key]
        if gone:
            self._assign()

    def close(self) -> None:
        """Close the restore consumer (a later :meth:`add` opens a new one)."""
        consumer, self._consumer = self._consumer, None
        self._active.clear()
        if consumer is not None:
            consumer.close()

    def _assign(self) -> None:
        """(Re)assign the restore consumer to every active task at its position."""
        if not self._active:
            if self._consumer is not None:
                self._consumer.assign([])
            return
        if self._consumer is None:
            self._consumer = Consumer({**self._settings, "logger": KafkaLog()})
        tps = [KafkaTopicPartition(t.topic, t.partition, t.position) for t in self._active.values()]
        self._consumer.assign(tps)
        # A partition paused when an earlier restore of it finished stays paused
        # through a new assign(): resume explicitly.
        self._consumer.resume(tps)

    def step(self, budget_s: float) -> list[RestoreTask]:
        """Read and apply changelog records for up to ``budget_s`` seconds.

        Returns:
            The tasks that reached their changelog's end in this step.

        Raises:
            StateError: Reading failed, or no progress for ``stall_timeout_s``.
        """
        finished: list[RestoreTask] = []
        consumer = self._consumer
        if consumer is None or not self._active:
            return finished
        deadline = time.monotonic() + budget_s
        active = self._active
        while active:
            try:
                messages = consumer.consume(
                    CHUNK_RECORDS, max(0.0, min(POLL_TIMEOUT_S, deadline - time.monotonic()))
                )
            except KafkaException as exc:
                raise StateError(f"reading changelogs to restore stores failed: {exc}") from exc
            # Keys typed as the client returns them; they equal the str/int keys.
            chunks: dict[tuple[str | None, int | None], list[tuple[bytes | None, bytes | None]]]
            chunks = {}
            eof: dict[tuple[str | None, int | None], int | None] = {}
            # A table's restore stops at the group's committed offset: the group
            # consumer processes what follows, in order with the stream.
            ends: dict[object, int] = {k: t._end for k, t in active.items() if t.end is not None}
            for msg in messages:
                error = msg.error()
                key = (msg.topic(), msg.partition())
                if error is not None:
                    if error.code() == KafkaError._PARTITION_EOF:
                        eof[key] = msg.offset()
                    else:
                        self._consumer_error(error, active.get(cast("tuple[str, int]", key)))
                    continue
                if ends and key in ends and ((msg.offset() or 0) >= ends[key] or msg.key() is None):
                    continue  # (a table has no entry for a record without a key)
                chunk = chunks.get(key)
                if chunk is None:
                    chunk = chunks[key] = []
                chunk.append((msg.key(), msg.value()))
            advanced = self._apply(consumer, active, chunks, eof, finished)
            now = time.monotonic()
            if advanced:
                self._last_advance = now
                self._next_warn = now + _STALL_WARN_S
            elif active and now - self._last_advance >= self._stall_timeout:
                raise self._stalled(active, now - self._last_advance)
            elif active and now >= self._next_warn:
                self._next_warn = now + _STALL_WARN_S
                self._warn_stalled(active, now - self._last_advance)
            if active and now >= self._next_log:
                self._next_log = now + self._progress_interval
                for task in active.values():
                    if task._progress is not None:
                        log.info("restoring %s", task._progress.format())
            if now >= deadline:
                break
        return finished

    def _apply(
        self,
        consumer: Consumer,
        active: dict[tuple[str, int], RestoreTask],
        chunks: dict[tuple[str | None, int | None], list[tuple[bytes | None, bytes | None]]],
        eof: dict[tuple[str | None, int | None], int | None],
        finished: list[RestoreTask],
    ) -> bool:
        """Apply this poll's records; retire finished partitions. True if anything moved."""
        keys = list(active)
        positions = consumer.position([KafkaTopicPartition(t, p) for t, p in keys])
        advanced = False
        done: list[tuple[str, int]] = []
        for key, tp in zip(keys, positions, strict=True):
            task = active[key]
            records = chunks.get(key)
            # The position is the next offset the consumer hands out: every
            # record below it was delivered above (or was a marker/aborted).
            position = max(tp.offset, eof.get(key) or -1)
            if task.end is not None:
                position = min(position, task._end)
            if records and position <= task.position:
                raise StateError(  # would mean librdkafka's position lags what it returned
                    f"restoring {task.label}: consumer position {tp.offset} is behind the "
                    f"records it returned (from {task.position})"
                )
            is_done = position >= task._end
            if records or (is_done and position > task.position):
                # A keyless record is rejected there with a clear message.
                changes = cast("list[tuple[bytes, bytes | None]]", records or [])
                apply_changelog(task.backend, changes, position)
            if position > task.position:
                advanced = True
                task.position = position
            if records:
                task.restored += len(records)
                if task._progress is not None:
                    task._progress.add(len(records))
                if self._on_chunk is not None:
                    self._on_chunk(task.store, task.partition, len(records))
            if is_done:
                done.append(key)
        for key in done:
            task = active.pop(key)
            consumer.pause([KafkaTopicPartition(task.topic, task.partition)])
            elapsed = task._progress.elapsed if task._progress is not None else 0.0
            log.info(
                "restored %s in %.1fs, up to changelog offset %d: %s",
                task.label,
                elapsed,
                task.position,
                task._progress.format() if task._progress is not None else "",
            )
            finished.append(task)
        return advanced

    def _consumer_error(self, error: KafkaError, task: RestoreTask | None) -> None:
        where = task.label if task is not None else "a changelog"
        if error.fatal() or error.code() in (
            KafkaError.OFFSET_OUT_OF_RANGE,
            KafkaError._AUTO_OFFSET_RESET,
            KafkaError.UNKNOWN_TOPIC_OR_PART,
            KafkaError.TOPIC_AUTHORIZATION_FAILED,
        ):
            raise StateError(
                f"restoring {where} failed: {error}. If the changelog was truncated or "
                "recreated, stop the instance, delete the store's local directory and start "
                "again so it is rebuilt from the changelog"
            )
        log.warning("restore consumer error on %s (retrying): %s", where, error)

    def _warn_stalled(self, active: dict[tuple[str, int], RestoreTask], idle: float) -> None:
        stable = self._stable_offsets(list(active.values()))
        for key, task in active.items():
            lso = stable.get(key)
            if lso is not None and lso <= task.position < task._end:
                log.warning(
                    "restoring %s waits at changelog offset %d (end %d) for an open "
                    "transaction (last stable offset %d), probably of a former owner that "
                    "died; the broker aborts it after its transaction.timeout.ms "
                    "(no progress for %.0fs, giving up after %.0fs)",
                    task.label,
                    task.position,
                    task._end,
                    lso,
                    idle,
                    self._stall_timeout,
                )
            else:
                log.warning(
                    "restoring %s makes no progress at changelog offset %d of %d for %.0fs "
                    "(giving up after %.0fs)",
                    task.label,
                    task.position,
                    task._end,
                    idle,
                    self._stall_timeout,
                )

    def _stalled(self, active: dict[tuple[str, int], RestoreTask], idle: float) -> StateError:
        stuck = ", ".join(
            f"{t.label} at offset {t.position} of {t._end} ({t.topic}[{t.partition}])"
            for t in active.values()
        )
        return StateError(
            f"restore made no progress for {idle:.0f}s: {stuck}. Either the brokers are "
            "unreachable or an open transaction on the changelog was not resolved "
            "(a former owner's transaction is aborted by the broker after its "
            "transaction.timeout.ms); start the instance again once the cluster is healthy"
        )

    # -- offsets -------------------------------------------------------------

    def _stable_offsets(self, tasks: list[RestoreTask]) -> dict[tuple[str, int], int]:
        tps = [KafkaTopicPartition(t.topic, t.partition) for t in tasks]
        try:
            return list_offsets(
                self._admin, tps, _LATEST, IsolationLevel.READ_COMMITTED, deadline_s=5.0
            )
        except StateError:
            return {}


def list_offsets(
    admin: AdminClient,
    tps: Sequence[KafkaTopicPartition],
    spec: OffsetSpec,
    isolation: IsolationLevel,
    *,
    deadline_s: float = ADMIN_TIMEOUT_S,
    what: str = "changelog partitions",
    pause: Callable[[float], None] = time.sleep,
) -> dict[tuple[str, int], int]:
    """Read one offset per partition with the admin client: ``{(topic, partition): offset}``.

    A just-created topic may not be known to every broker yet, and a leader
    may be moving (FENCED_LEADER_EPOCH after a broker bounce): such transient
    errors (:func:`is_transient`) are retried until ``deadline_s``, asking for
    the topics' metadata before each retry (the admin client may hold a stale
    leader until it is refreshed).

    Args:
        admin: The admin client.
        tps: The partitions (their offsets are ignored).
        spec: Which offset (``OffsetSpec.earliest()``, ``OffsetSpec.latest()``).
        isolation: ``READ_COMMITTED`` makes the latest offset the last stable one.
        deadline_s: How long transient errors are retried (also each request's timeout).
        what: What the partitions are, for the error message.
        pause: Sleeps between two attempts (called with seconds; ``time.sleep``
            by default). A caller that must give up on a stop request passes a
            function that raises instead.

    Raises:
        StateError: An error that is not transient, or still failing at the deadline.
    """
    deadline = time.monotonic() + deadline_s
    pending = {(tp.topic, tp.partition) for tp in tps}
    result: dict[tuple[str, int], int] = {}
    while True:
        request = {KafkaTopicPartition(t, p): spec for t, p in pending}
        futures = admin.list_offsets(request, isolation_level=isolation, request_timeout=deadline_s)
        failure: KafkaException | None = None
        for tp, future in futures.items():
            try:
                result[(tp.topic, tp.partition)] = future.result().offset
                pending.discard((tp.topic, tp.partition))
            except KafkaException as exc:
                failure = exc
                if not is_transient(exc):
                    break
        if not pending:
            return result
        if failure is None or not is_transient(failure) or time.monotonic() >= deadline:
            raise StateError(
                f"cannot read the offsets of {what} "
                f"{', '.join(f'{t}[{p}]' for t, p in sorted(pending))}: {failure}"
            )
        for topic in {t for t, _p in pending}:
            with contextlib.suppress(KafkaException):
                admin.list_topics(topic, timeout=5)
        pause(0.2)


def is_transient(exc: KafkaException) -> bool:
    """Whether ``exc`` goes away by itself: retriable, or an outage such as a leader change."""
    error = exc.args[0]
    return bool(error.retriable()) or cause_of(error) is Cause.OUTAGE


_transient = is_transient  # the name tests/unit/test_store_restore.py imports


def _table_start(task: RestoreTask, low: int, end: int) -> int:
    """The offset to restore a table's store from, up to ``end`` (the group's committed offset).

    The source topic is the truth: a checkpoint beyond ``end`` (the group's
    offsets were reset, or the topic was recreated) wipes the store and reloads
    it from the topic's start; a checkpoint below the first offset still in the
    topic starts there (the records in between are gone from the table too).
    """
    stored = task.backend.changelog_offset()
    if stored is None:
        return low
    if stored > end:
        log.warning(
            "table %s is at offset %d of %s[%d] but the group's committed offset is %d: "
            "rebuilding it from the topic's start",
            task.label,
            stored,
            task.topic,
            task.partition,
            end,
        )
        task.backend.wipe()
        return low
    return max(stored, low)


def _start_offset(task: RestoreTask, low: int, high: int) -> int:
    """The offset to restore ``task`` from; raises StateError if its checkpoint is invalid."""
    stored = task.backend.changelog_offset()
    if stored is None:
        return low
    if stored > high:
        raise StateError(
            f"store {task.label} has changelog offset {stored} but its changelog "
            f"{task.topic}[{task.partition}] ends at offset {high} (high watermark): the local "
            "state belongs to an older changelog (was the topic deleted and recreated?). "
            f"Stop the instance, delete the directory {task.path!r} (or call wipe() on the "
            "store) and start again; the store is then rebuilt from the changelog"
        )
    if low > 0 and stored < low:
        raise StateError(
            f"store {task.label} has changelog offset {stored} but its changelog "
            f"{task.topic}[{task.partition}] starts at offset {low} (low watermark): the records "
            "in between were deleted (retention, or the topic was recreated), so the local "
            f"state cannot be brought up to date. Stop the instance, delete the directory "
            f"{task.path!r} (or call wipe() on the store) and start again; the store is then "
            "rebuilt from the changelog"
        )
    return stored


STALL_MARGIN_S = 30.0
"""What a restore waits beyond ``transaction.timeout.ms`` before it calls itself stalled."""


def stall_timeout(transaction_timeout_ms: int) -> float:
    """How long a restore (or a global table's load) may make no progress before it fails.

    Long enough for the broker to abort a dead former owner's transaction
    (``transaction.timeout.ms`` plus the coordinator's check interval). A restore
    runs between polls of the group consumer, so it is not bounded by
    ``max.poll.interval.ms``.
    """
    return max(5.0, transaction_timeout_ms / 1000.0 + STALL_MARGIN_S)
