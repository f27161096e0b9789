"""Global tables, the Kafka half: load every global store from its topic, then follow it.

The declaration, the read-only view and the checkpoint rules are in
:mod:`eos.state.global_table` (no Kafka I/O); this module reads the topics.

Lifecycle (:class:`GlobalTables`, driven by the engine on its processing thread):

1. construction validates the declarations and does no I/O;
2. :meth:`~GlobalTables.start`, before the engine subscribes, opens one backend
   per store (``<state_dir>/<application_id>/<name>/global``), checks its
   checkpoint, reads every partition from there up to its ``read_committed``
   end taken at start (the last stable offset: an open transaction does not
   hold the start back), and returns once caught up;
3. :meth:`~GlobalTables.poll`, once per loop turn, applies what arrived since
   (at most :data:`POLL_MAX_RECORDS` records, never waiting);
4. :meth:`~GlobalTables.view` is what ``ctx.store(name)`` returns;
5. :meth:`~GlobalTables.close` writes the last checkpoint and closes everything.

Consistency: only committed records are applied (``read_committed``); a record
without a key is skipped and counted. A global table is not part of the
application's transactions: it follows its topic as fast as :meth:`poll`
applies it, so two lookups of one key may differ between two records.
Partitions added to the topic while the application runs are read from the
next start on.

Threading: the engine's processing thread only (:meth:`~GlobalTables.poll`
runs between records, so a lookup never sees a half-applied chunk).

Failure behaviour: a missing topic is a :class:`~eos.errors.ConfigError` at
start; a read that fails for good, or a load without progress for the stall
timeout, is a :class:`~eos.errors.StateError`. Whatever was applied before
stays applied and checkpointed; the next start resumes there. A topic
truncated or recreated under a running table is noticed by :meth:`poll`
(offsets out of range), which plans that store again and reloads it.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import os
import time
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from confluent_kafka import Consumer, IsolationLevel, KafkaError, KafkaException, TopicCollection
from confluent_kafka import TopicPartition as KafkaTopicPartition
from confluent_kafka.admin import AdminClient, OffsetSpec  # type: ignore[attr-defined]

from eos._admin import KafkaLog
from eos._stop import StopRequested, StopSignal
from eos.config import ClientValue, Config
from eos.errors import ConfigError, StateError
from eos.serde import Serde
from eos.state.base import open_backend
from eos.state.changelog import (
    ADMIN_TIMEOUT_S,
    CHUNK_RECORDS,
    POLL_TIMEOUT_S,
    PROGRESS_INTERVAL_S,
    is_transient,
    list_offsets,
    restore_consumer_settings,
    stall_timeout,
)
from eos.state.global_table import GLOBAL_PARTITION, GlobalStore, GlobalView, TableState
from eos.state.restore import RestoreProgress, format_duration

if TYPE_CHECKING:
    from confluent_kafka import Message

    from eos.stats import EngineStats

__all__ = ["CHECKPOINT_INTERVAL_S", "POLL_MAX_RECORDS", "GlobalTables"]

log = logging.getLogger("eos.state")

POLL_MAX_RECORDS = 1000
"""Most records one :meth:`GlobalTables.poll` applies, so a burst cannot starve processing."""
CHECKPOINT_INTERVAL_S = 1.0
"""Least seconds between two checkpoint files written by :meth:`GlobalTables.poll`."""
_FETCH_WAIT_MS = 100  # the restore consumer's 10 ms would fetch 100 times a second when idle
_STALL_WARN_S = 10.0
_ERROR_WARN_S = 60.0
_EARLIEST = OffsetSpec.earliest()  # type: ignore[no-untyped-call]
_LATEST = OffsetSpec.latest()  # type: ignore[no-untyped-call]
_OUT_OF_RANGE = (KafkaError.OFFSET_OUT_OF_RANGE, KafkaError._AUTO_OFFSET_RESET)
_GIVE_UP = (KafkaError.TOPIC_AUTHORIZATION_FAILED,)


class GlobalTables:
    """Loads and follows the global stores of one engine; see the module docstring.

    One ``read_committed`` consumer (``assign()`` only, group id
    ``<application_id>-global``, never committing) reads every global topic.

    Threading: the engine's processing thread only.

    Args:
        config: The application's configuration.
        specs: The global store declarations.
        stats: Counters; :meth:`start` records its load as a restore.
        app_serdes: The application's ``(key_serde, value_serde)``, for the
            serdes a declaration leaves as None.
        admin: The engine's admin client (one is created when None).
        stall_timeout_s: How long a load may make no progress before it fails
            (default: ``transaction_timeout_ms`` plus 30 s, as changelog restores).

    Raises:
        ConfigError: Two global stores share a name or a topic.

    Attributes:
        restored: Records applied by :meth:`start` (and by reloads).
        applied: Records applied by :meth:`poll`.
        skipped: Records skipped because they had no key.
    """

    def __init__(
        self,
        config: Config,
        specs: Sequence[GlobalStore[Any, Any]],
        *,
        stats: EngineStats,
        app_serdes: tuple[Serde, Serde],
        admin: AdminClient | None = None,
        stall_timeout_s: float | None = None,
    ) -> None:
        root = os.path.join(config.state_dir, config.application_id)
        self._tables: dict[str, TableState] = {}
        self._by_topic: dict[str, TableState] = {}
        for spec in specs:
            for other in self._tables.values():
                if spec.name == other.spec.name or spec.topic == other.spec.topic:
                    same = "name" if spec.name == other.spec.name else f"topic {spec.topic!r}"
                    raise ConfigError(
                        f"global stores {other.spec.name!r} and {spec.name!r} share a {same}; "
                        "declare each global table once and use it from every processor",
                        "store.name",
                    )
            table = TableState(
                spec, os.path.join(root, spec.name, "global"), spec.serdes(app_serdes)
            )
            self._tables[spec.name] = self._by_topic[spec.topic] = table
        client_id = f"{config.transactional_id}-global"
        settings = restore_consumer_settings(
            config.consumer_settings(), config.application_id, client_id
        )
        settings["group.id"] = f"{config.application_id}-global"
        if "fetch.wait.max.ms" not in config.consumer_config:
            settings["fetch.wait.max.ms"] = _FETCH_WAIT_MS
        self._settings: dict[str, ClientValue] = settings
        self._admin_settings = config.admin_settings()
        self._bootstrap = config.bootstrap_servers
        self._admin = admin
        self._stats = stats
        self._stall_timeout = (
            stall_timeout_s
            if stall_timeout_s is not None
            else stall_timeout(config.transaction_timeout_ms)
        )
        self._consumer: Consumer | None = None
        self._stop: StopSignal | None = None
        self._views: dict[str, GlobalView[Any, Any]] = {}
        self._resync: set[str] = set()
        self._warned: dict[int, float] = {}
        self._next_checkpoint = 0.0
        self._closed = False
        self.restored = 0
        self.applied = 0
        self.skipped = 0

    def __repr__(self) -> str:
        return f"GlobalTables({list(self._tables)}, started={self._consumer is not None})"

    @property
    def names(self) -> list[str]:
        """The global store names."""
        return list(self._tables)

    def path(self, name: str) -> str:
        """The directory of global store ``name``; its checkpoint is ``<path>.offsets.json``."""
        return self._table(name).path

    # -- lifecycle -----------------------------------------------------------

    def start(self, stop: StopSignal) -> None:
        """Open every global store and load it up to its topic's committed end.

        Raises:
            ConfigError: A topic does not exist (the message names it and the store).
            StateError: A store cannot be opened, the topic cannot be read, or the
                load made no progress for the stall timeout.
            StopRequested: ``stop`` was set meanwhile (the stores stay open; call :meth:`close`).
        """
        if self._closed or self._consumer is not None:
            raise StateError("GlobalTables.start() may run once, before close()")
        started = time.monotonic()
        self._stop = stop
        admin = self._admin
        if admin is None:
            settings = {**self._admin_settings, "logger": KafkaLog()}
            admin = self._admin = AdminClient(settings)  # type: ignore[arg-type]
        for table in self._tables.values():
            self._describe(admin, table, stop)
        for table in self._tables.values():
            table.backend = open_backend(table.spec.as_store(), table.path, GLOBAL_PARTITION)
        consumer = self._consumer = Consumer({**self._settings, "logger": KafkaLog()})
        self._prepare(consumer, admin, list(self._tables.values()), stop)
        self._load(consumer, admin, stop, interruptible=True)
        elapsed = time.monotonic() - started
        self._stats.record_restore(self.restored, elapsed)
        log.info(
            "global stores %s loaded in %.1fs: %d records (%d without a key skipped)",
            ", ".join(self._tables),
            elapsed,
            self.restored,
            self.skipped,
        )

    def poll(self) -> int:
        """Apply records that arrived since the last call, without waiting; return how many.

        At most :data:`POLL_MAX_RECORDS`. Only when a topic was truncated or
        recreated while running does it block, to reload that store.

        Raises:
            StateError: Reading failed for good, or a store write failed.
            ConfigError: The topic was deleted (and not recreated) under a reload.
        """
        consumer, admin, stop = self._consumer, self._admin, self._stop
        if consumer is None or admin is None or stop is None:
            return 0
        try:
            messages = consumer.consume(POLL_MAX_RECORDS, 0)
        except KafkaException as exc:
            raise StateError(f"reading global store topics failed: {exc}") from exc
        applied = self._apply(consumer, messages, None)[0] if messages else 0
        self.applied += applied
        if self._resync:
            with contextlib.suppress(StopRequested):  # stopping: the next start resumes
                self._load(consumer, admin, stop, interruptible=False)
        if messages and time.monotonic() >= self._next_checkpoint:
            self._checkpoint_all()
        return applied

    def view(self, name: str) -> GlobalView[Any, Any]:
        """The read-only view of global store ``name`` (the same object every call).

        Raises:
            StateError: No such global store, or it is not open.
        """
        view = self._views.get(name)
        if view is not None:
            return view
        table = self._table(name)
        if table.backend is None:
            raise StateError(f"global store {name!r} is not open: start() has not run")
        view = GlobalView(name, table.spec.topic, table.backend, *table.serdes)
        self._views[name] = view
        return view

    def close(self) -> None:
        """Write the last checkpoints, close the consumer and the stores. Idempotent."""
        if self._closed:
            return
        self._closed = True
        consumer, self._consumer = self._consumer, None
        try:
            for table in self._tables.values():
                backend, table.backend = table.backend, None
                if backend is None:
                    continue
                try:
                    table.save_checkpoint()
                except StateError as exc:  # a lower checkpoint is safe: close all the same
                    log.warning("closing global store %s: %s", table.spec.name, exc)
                try:
                    backend.close()
                except StateError as exc:
                    log.warning("closing global store %s: %s", table.spec.name, exc)
        finally:
            if consumer is not None:
                consumer.close()

    # -- loading ---------------------------------------------------------------

    def _table(self, name: str) -> TableState:
        table = self._tables.get(name)
        if table is None:
            known = ", ".join(self._tables) or "none"
            raise StateError(f"no global store named {name!r} (global stores: {known})")
        return table

    def _describe(self, admin: AdminClient, table: TableState, stop: StopSignal) -> None:
        """Fill the partitions and the topic id; ConfigError if the topic does not exist."""
        topic = table.spec.topic
        deadline = time.monotonic() + ADMIN_TIMEOUT_S
        while True:
            future = admin.describe_topics(TopicCollection([topic]), request_timeout=10)[topic]
            try:
                description = future.result()
                break
            except KafkaException as exc:
                code = exc.args[0].code()
                if code in (KafkaError.UNKNOWN_TOPIC_OR_PART, KafkaError._UNKNOWN_TOPIC):
                    raise ConfigError(
                        f"topic {topic!r} of global store {table.spec.name!r} does not exist on "
                        f"{self._bootstrap}; create it first",
                        "store.topic",
                    ) from exc
                if not is_transient(exc) or time.monotonic() >= deadline:
                    raise StateError(
                        f"cannot describe topic {topic!r} of global store {table.spec.name!r}: "
                        f"{exc}"
                    ) from exc
            _wait_or_stop(stop, 0.2)
        table.partitions = sorted(p.id for p in description.partitions)
        table.topic_id = str(description.topic_id)

    def _prepare(
        self, consumer: Consumer, admin: AdminClient, tables: list[TableState], stop: StopSignal
    ) -> None:
        """Read the offsets, :meth:`~TableState.prepare` each table, (re)assign the consumer."""
        tps = [KafkaTopicPartition(t.spec.topic, p) for t in tables for p in t.partitions]
        uncommitted, committed = IsolationLevel.READ_UNCOMMITTED, IsolationLevel.READ_COMMITTED
        offsets = functools.partial(
            list_offsets,
            admin,
            what="global store topic partitions",
            pause=functools.partial(_wait_or_stop, stop),
        )
        lows = offsets(tps, _EARLIEST, uncommitted)
        highs = offsets(tps, _LATEST, uncommitted)
        ends = offsets(tps, _LATEST, committed)
        for table in tables:
            self._resync.discard(table.spec.name)
            table.prepare(lows, highs, ends)
        consumer.assign(
            [
                KafkaTopicPartition(t.spec.topic, p, t.positions[p])
                for t in self._tables.values()
                for p in t.partitions
            ]
        )

    def _recheck(self, consumer: Consumer, admin: AdminClient, stop: StopSignal) -> None:
        """Plan again the tables whose offsets went out of range (topic truncated or recreated)."""
        tables = [self._tables[n] for n in sorted(self._resync)]
        for table in tables:
            table.save_checkpoint()  # the plan reads the file: make it say what the store holds
            self._describe(admin, table, stop)
        self._prepare(consumer, admin, tables, stop)

    def _load(
        self, consumer: Consumer, admin: AdminClient, stop: StopSignal, *, interruptible: bool
    ) -> None:
        """Read until every partition reaches the end taken by :meth:`_prepare`.

        ``interruptible``: a stop request raises StopRequested (start-up);
        otherwise it ends the load early (a reload from :meth:`poll`).
        """
        now = time.monotonic()
        last_advance, next_warn, next_log = now, now + _STALL_WARN_S, now + PROGRESS_INTERVAL_S
        while self._resync or any(t.behind() for t in self._tables.values()):
            if self._resync:
                self._recheck(consumer, admin, stop)
            tps = [
                KafkaTopicPartition(t.spec.topic, p)
                for t in self._tables.values()
                for p in t.partitions
            ]
            if interruptible:
                stop.check()
            elif stop.is_set():
                return  # the engine is stopping; the next start resumes from the checkpoint
            try:
                messages = consumer.consume(CHUNK_RECORDS, POLL_TIMEOUT_S)
            except KafkaException as exc:
                raise StateError(f"reading global store topics failed: {exc}") from exc
            applied, advanced = self._apply(consumer, messages, tps)
            self.restored += applied
            now = time.monotonic()
            if now >= self._next_checkpoint:
                self._checkpoint_all()
            if advanced:
                last_advance, next_warn = now, now + _STALL_WARN_S
            elif now - last_advance >= self._stall_timeout:
                raise StateError(
                    f"loading global stores made no progress for {now - last_advance:.0f}s: "
                    f"{self._behind()}. The brokers are probably unreachable; start the "
                    "instance again once the cluster is healthy"
                )
            elif now >= next_warn:
                next_warn = now + _STALL_WARN_S
                log.warning(
                    "loading global stores makes no progress for %.0fs (giving up after %.0fs): %s",
                    now - last_advance,
                    self._stall_timeout,
                    self._behind(),
                )
            if now >= next_log:
                next_log = now + PROGRESS_INTERVAL_S
                for table in self._tables.values():
                    if table.behind() and table.progress is not None:
                        log.info("loading global store %s", _progress_text(table.progress))
        self._checkpoint_all()

    def _behind(self) -> str:
        return ", ".join(
            f"{t.spec.name} at {t.spec.topic}[{p}] offset {t.positions[p]} of {end}"
            for t in self._tables.values()
            for p, end in t.ends.items()
            if t.positions[p] < end
        )

    def _apply(
        self, consumer: Consumer, messages: list[Message], tps: list[KafkaTopicPartition] | None
    ) -> tuple[int, bool]:
        """Write one chunk, one backend write per table; return (records applied, moved).

        Positions advance to the consumer's position (past transaction markers)
        of ``tps``, or of the partitions in ``messages`` when None. Never to an
        end-of-partition event's offset: after a reassignment librdkafka may
        still deliver such events (and errors) of the previous assignment.
        """
        changes: dict[str, dict[bytes, bytes | None]] = {}
        nexts: dict[tuple[str, int], int] = {}
        touched: set[tuple[str, int]] = set()
        counts: dict[str, int] = {}
        for msg in messages:
            topic, partition, offset = msg.topic(), msg.partition(), msg.offset()
            table = self._by_topic.get(topic) if topic is not None else None
            if table is None or partition is None or offset is None:
                continue
            error = msg.error()
            if error is not None:
                if error.code() == KafkaError._PARTITION_EOF:
                    touched.add((table.spec.topic, partition))
                else:
                    self._consumer_error(error, table, partition)
                continue
            if offset < table.positions.get(partition, 0):
                continue  # delivered before a reassignment moved the position
            nexts[(table.spec.topic, partition)] = offset + 1
            key = msg.key()
            if key is None:
                self.skipped += 1
                if self.skipped == 1 or self.skipped % 10_000 == 0:
                    log.warning(
                        "global store %s: skipped a record without a key at %s[%d] offset %d "
                        "(%d so far)",
                        table.spec.name,
                        topic,
                        partition,
                        offset,
                        self.skipped,
                    )
                continue
            name = table.spec.name
            table_changes = changes.get(name)
            if table_changes is None:
                table_changes = changes[name] = {}
                counts[name] = 0
            table_changes[key] = msg.value()
            counts[name] += 1
        if tps is None:
            touched.update(nexts)
            tps = [KafkaTopicPartition(t, p) for t, p in touched]
        for tp in consumer.position(tps) if tps else ():
            if tp.offset >= 0 and tp.offset > nexts.get((tp.topic, tp.partition), -1):
                nexts[(tp.topic, tp.partition)] = tp.offset
        for name, table_changes in changes.items():
            self._tables[name].apply(table_changes, counts[name])
        advanced = False
        for (topic, partition), offset in nexts.items():
            advanced = self._by_topic[topic].advance(partition, offset) or advanced
        return sum(counts.values()), advanced

    def _consumer_error(self, error: KafkaError, table: TableState, partition: int) -> None:
        where = f"global store {table.spec.name} ({table.spec.topic}[{partition}])"
        if error.fatal() or error.code() in _GIVE_UP:
            raise StateError(f"reading {where} failed: {error}")
        if error.code() in _OUT_OF_RANGE:
            log.warning("%s: offset out of range (%s); checking it again", where, error)
            self._resync.add(table.spec.name)
            return
        now = time.monotonic()
        if now >= self._warned.get(error.code(), 0.0):
            self._warned[error.code()] = now + _ERROR_WARN_S
            log.warning("global store consumer error on %s (retrying): %s", where, error)

    def _checkpoint_all(self) -> None:
        self._next_checkpoint = time.monotonic() + CHECKPOINT_INTERVAL_S
        for table in self._tables.values():
            table.save_checkpoint()


def _wait_or_stop(stop: StopSignal, seconds: float) -> None:
    """Sleep between two attempts of a start-up request; StopRequested if a stop was requested."""
    stop.check()
    stop.wait(seconds)


def _progress_text(progress: RestoreProgress) -> str:
    """``countries: 12,000/50,000 records (24,000/s, ETA 1.6s)``."""
    eta = progress.eta
    details = f"{progress.rate:,.0f}/s" + (f", ETA {format_duration(eta)}" if eta else "")
    target = f"/{progress.target:,}" if progress.target is not None else ""
    return f"{progress.name}: {progress.restored:,}{target} records ({details})"
