"""The engine's view of the state stores: open, restore, hand out, commit, close.

One :class:`StoreManager` per engine. It owns every open store partition of
the instance and the :class:`~eos.state.transaction.StoreTransaction` of each
for the current Kafka transaction. Its calls line up with the engine's
commit sequence::

    assign(tps)    on assignment: open the backends of new store partitions and
                   queue their restore; returns the input partitions that must
                   wait (the engine pauses them)
    restore_step() between polls: restore for a bounded time; returns the
                   store partitions that are now up to date
    get(name, p)   per ctx.store(): the transaction of (name, p), made lazily;
                   its writes go to the overlay
    flush_changelog()
                   (1) before the offsets join the Kafka transaction: one
                   changelog record per key written (its last value) to
                   changelog partition p, through the engine's producer (same
                   Kafka transaction); the overlays are frozen
    commit()       (4) after the Kafka commit: overlay + changelog offset, one
                   backend write per dirty store partition

Coalescing the changelog at the commit, as Kafka Streams' record cache does,
writes a key updated n times in a transaction once, and keeps the produce
call and its delivery report off the per-record path: only the last record
of each store partition carries a delivery report (the records of one
partition are acknowledged in order, so its offset is the checkpoint's). A
batch replayed "carefully" after an unexplained failure produces each write
at once instead, so a rejected changelog record is pinned on its input record.
    abort()        after an abort: drop every overlay
    close(tps)     on revocation/loss; close_all() at shutdown

The checkpoint written at ``commit()`` is one past the highest changelog
offset the broker acknowledged for that store partition in the committed
transaction (delivery reports, served by ``commit_transaction``/``flush`` and
a ``poll(0)``). Restore starts there. A lower checkpoint is always safe
(replaying the changelog is idempotent); a higher one would skip records, so
when an offset is unknown the old checkpoint is kept.

Kafka I/O lives in :mod:`eos.state.changelog` (restore) and :mod:`eos.state.topics`.

Threading: everything runs on the engine's processing thread (the consumer's
rebalance callbacks run there too).
"""

from __future__ import annotations

import functools
import itertools
import logging
import os
import time
from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

from eos.config import Config
from eos.errors import ConfigError, ProduceError, StateError
from eos.faults import NO_FAULTS, Faults
from eos.processor import undeclared_store
from eos.serde import Serde
from eos.state.base import StateStore, Store, open_backend
from eos.state.changelog import (
    ChangelogRestorer,
    RestoreTask,
    restore_consumer_settings,
    stall_timeout,
)
from eos.state.topics import changelog_topic, ensure_changelog_topics
from eos.state.transaction import ChangelogWriter, StoreTransaction, TransactionState
from eos.stats import EngineStats

if TYPE_CHECKING:
    from confluent_kafka.admin import AdminClient

    from eos._outputs import Outputs
    from eos.processor import Context

__all__ = ["StoreManager"]

log = logging.getLogger("eos.state")


StoreKey = tuple[str, int]
"""``(store name, partition)``."""


class StoreManager:
    """Owns the store partitions of one engine; see the module docstring.

    Built by the engine after its producer exists and before it subscribes.
    Construction checks or creates the changelog topics.

    Args:
        config: The application's configuration.
        specs: The processor's store declarations.
        processor_name: For error messages.
        admin: Admin client (changelog topics, restore watermarks).
        stats: Counters (restore records and durations).
        outputs: The engine's produce paths: a changelog writer produces
            through :meth:`eos._outputs.Outputs.changelog_produce`, so its
            failures are attributed like any output's.
        faults: The fault-injection seam (restore chunks).
        topic_serdes: ``topic_serdes(topic)``: the serdes the application
            decodes ``topic`` with; a table's store (``source_topic``) takes
            the parts it leaves as None from them.

    Raises:
        ConfigError: Two stores share a name, the input topics differ in
            partition count, or several input topics are combined with an
            assignor that does not keep equal partition numbers together.
        StateError: An existing changelog topic has the wrong partition count.

    Attributes:
        restored_records: Records restored per ``(store, partition)`` by the
            most recent restore of that store partition.
        total_restored: Records restored since construction.
    """

    def __init__(
        self,
        config: Config,
        specs: Sequence[Store],
        *,
        processor_name: str,
        admin: AdminClient,
        stats: EngineStats,
        outputs: Outputs,
        faults: Faults = NO_FAULTS,
        topic_serdes: Callable[[str], tuple[Serde, Serde]] | None = None,
    ) -> None:
        specs_by_name: dict[str, Store] = {}
        for spec in specs:
            if spec.name in specs_by_name:
                raise ConfigError(
                    f"store name {spec.name!r} is declared twice in "
                    f"{processor_name}.stores; store names must be unique",
                    "store.name",
                )
            specs_by_name[spec.name] = spec
        if not specs_by_name:
            raise ConfigError("StoreManager needs at least one store", "store.name")
        _check_assignor(config.input_topics, config.consumer_settings())
        self._processor_name = processor_name
        self._stats = stats
        self._outputs = outputs
        self._specs = specs_by_name
        # A table (a store with a source topic) is restored from its topic, up
        # to the group's committed offset, and writes no changelog of its own.
        self._tables: dict[str, str] = {
            n: s.source_topic for n, s in specs_by_name.items() if s.source_topic is not None
        }
        self._serdes: dict[str, tuple[Serde, Serde]] = {
            n: s.serdes(
                None
                if s.source_topic is None or topic_serdes is None
                else topic_serdes(s.source_topic)
            )
            for n, s in specs_by_name.items()
        }
        self._topics = {
            n: self._tables.get(n) or changelog_topic(config.application_id, n)
            for n in specs_by_name
        }
        self._root = os.path.join(config.state_dir, config.application_id)
        self.changelog_partitions = ensure_changelog_topics(
            admin,
            application_id=config.application_id,
            input_topics=config.input_topics,
            stores=[n for n in specs_by_name if n not in self._tables],
            tables={topic: n for n, topic in self._tables.items()},
        )
        self.committed_offsets: Callable[[list[tuple[str, int]]], dict[tuple[str, int], int]]
        self.committed_offsets = _no_committed_offsets
        """``committed_offsets(tps)``: the group's committed offset of each table
        partition (absent: none); a table restores up to it. Set by the engine."""
        client_id = f"{config.transactional_id}-restore"
        self._restorer = ChangelogRestorer(
            admin,
            restore_consumer_settings(config.consumer_settings(), config.application_id, client_id),
            stall_timeout_s=stall_timeout(config.transaction_timeout_ms),
            on_chunk=faults.restore_chunk,
        )
        # A changelog record's own delivery callback bypasses the producer's:
        # its failures go to the outputs, which diagnose a failed batch from
        # them (and, without transactions, fail the next commit).
        self._on_failure: Callable[[Any, Any], None] = outputs.on_failed_delivery
        self._ctx: Context | None = None
        self._backends: dict[StoreKey, StateStore] = {}
        self._floor: dict[StoreKey, int] = {}
        self._owners: dict[int, set[str]] = {}
        self._pending: list[RestoreTask] = []
        self._restoring: set[int] = set()
        self._restore_started: dict[int, float] = {}
        self._txns: dict[StoreKey, StoreTransaction] = {}
        # Committed values per store partition, kept across transactions (plain
        # key-value stores only: tables and time-driven stores change their
        # backend outside a transaction's commit). Dropped when the partition
        # closes; a partition is restored only right after it opened.
        self._caches: dict[StoreKey, dict[bytes, bytes | int | None]] = {}
        self._cached = frozenset(
            name
            for name, spec in self._specs.items()
            if type(spec) is Store and spec.source_topic is None
        )
        # The views handed out in this transaction: partition -> store name -> view.
        self._views: dict[int, dict[str, Any]] = {}
        self.wake: Callable[[int, int], None] | None = None
        """``wake(partition, stream_time)``: a time-driven store has work due then."""
        self._delivered: dict[StoreKey, int] = {}
        # Store partitions of this transaction whose changelog is produced at the commit.
        self._deferred: set[StoreKey] = set()
        self.restored_records: dict[StoreKey, int] = {}
        self.total_restored = 0

    def __repr__(self) -> str:
        return (
            f"StoreManager(stores={list(self._specs)}, open={sorted(self._backends)}, "
            f"restoring={sorted(self._restoring)}, transactions={len(self._txns)})"
        )

    def attach(self, ctx: Context) -> None:
        """The context whose send count a store write increments (before ``get``)."""
        self._ctx = ctx

    @property
    def views(self) -> dict[int, dict[str, Any]]:
        """The views :meth:`get` handed out in this transaction, by partition, then by
        store name: the live dict (emptied, never replaced, at the end of every
        transaction), for ``ctx.store``'s hot path to read (two lookups, no key tuple to
        build); never written outside this class."""
        return self._views

    @property
    def open_partitions(self) -> list[StoreKey]:
        """The ``(store, partition)`` pairs open on this instance, sorted."""
        return sorted(self._backends)

    @property
    def restoring(self) -> bool:
        """Whether some store partition is still being restored."""
        return bool(self._restoring)

    @property
    def dirty(self) -> bool:
        """Whether the open transactions hold writes."""
        return any(t.dirty for t in self._txns.values())

    def changelog_topic(self, name: str) -> str:
        """Return the changelog topic of store ``name``."""
        return self._topics[name]

    def path(self, name: str, partition: int) -> str:
        """Return the local directory of store partition ``(name, partition)``."""
        return os.path.join(self._root, name, str(partition))

    # -- assignment ----------------------------------------------------------

    def assign(self, tps: list[tuple[str, int]]) -> list[tuple[str, int]]:
        """Open the store partitions of newly assigned input partitions; queue their restore.

        Called from the assignment callback; quick (no Kafka I/O). A partition
        number already open for another input topic is not opened again.

        Returns:
            The input partitions whose store partition is not restored yet:
            their records must wait until :meth:`restore_step` reports it done.

        Raises:
            StateError: A backend cannot be opened (for example its lock is held).
        """
        new: list[int] = []
        for topic, partition in tps:
            owners = self._owners.setdefault(partition, set())
            if not owners and partition not in new:
                new.append(partition)
            owners.add(topic)
        opened: list[int] = []
        try:
            for partition in sorted(new):
                for name, spec in self._specs.items():
                    key = (name, partition)
                    path = self.path(name, partition)
                    backend = open_backend(spec, path, partition)
                    self._backends[key] = backend
                    self._pending.append(
                        RestoreTask(name, partition, self._topics[name], backend, path)
                    )
                opened.append(partition)
        except BaseException:
            # Leave nothing half-open: these partitions are not usable.
            for partition in new:
                self._owners.pop(partition, None)
            self._pending = [t for t in self._pending if t.partition not in new]
            try:
                self._close_partitions(set(new))
            except StateError as exc:
                log.warning("closing store partitions after a failed open: %s", exc)
            raise
        now = time.monotonic()
        for partition in opened:
            self._restoring.add(partition)
            self._restore_started[partition] = now
        return [tp for tp in tps if tp[1] in self._restoring]

    def restore_step(self, budget_s: float) -> list[int]:
        """Restore for up to ``budget_s`` seconds; return the store partitions now up to date.

        A store partition (all stores of one partition number) is up to date
        when every one of its stores reached its changelog's end.

        Raises:
            StateError: A checkpoint lies outside its changelog, or reading
                failed or stalled.
        """
        finished: list[RestoreTask] = []
        if self._pending:
            tables = [t for t in self._pending if t.store in self._tables]
            committed = (
                self.committed_offsets([(t.topic, t.partition) for t in tables]) if tables else {}
            )
            pending, self._pending = self._pending, []
            if tables:
                for task in tables:
                    # No committed offset: the group reads the topic from its start,
                    # so the table starts empty.
                    task.end = committed.get((task.topic, task.partition), 0)
            finished.extend(self._restorer.add(pending))
        if self._restorer.active:
            finished.extend(self._restorer.step(budget_s))
        for task in finished:
            key = (task.store, task.partition)
            if key not in self._backends:
                continue  # closed meanwhile
            self._floor[key] = task.position
            self.restored_records[key] = task.restored
            self.total_restored += task.restored
        done: list[int] = []
        waiting = {t.partition for t in self._pending}
        for partition in {t.partition for t in finished}:
            if partition not in self._restoring or partition in waiting:
                continue
            if any(
                (name, partition) in self._backends and (name, partition) not in self._floor
                for name in self._specs
            ):
                continue  # another store of this partition is still restoring
            self._restoring.discard(partition)
            started = self._restore_started.pop(partition, time.monotonic())
            restored = sum(self.restored_records.get((n, partition), 0) for n in self._specs)
            self._stats.record_restore(restored, time.monotonic() - started)
            done.append(partition)
        return sorted(done)

    def close(self, tps: list[tuple[str, int]]) -> None:
        """Close the store partitions no remaining input partition uses.

        Store partition ``p`` stays open while any other assigned input topic
        still has partition ``p``. Open transactions of closed partitions are
        dropped (the engine committed or aborted them already); a restore in
        progress stops where it is (its checkpoint is consistent).
        """
        closing: set[int] = set()
        for topic, partition in tps:
            owners = self._owners.get(partition)
            if owners is None:
                continue
            owners.discard(topic)
            if not owners:
                del self._owners[partition]
                closing.add(partition)
        if closing:
            self._close_partitions(closing)

    def close_all(self) -> None:
        """Drop every transaction, stop restoring, close every backend. Idempotent."""
        self._owners.clear()
        try:
            self._restorer.close()
        finally:
            self._close_partitions(
                {p for _, p in self._backends} | {p for _, p in self._txns} | self._restoring
            )

    def _close_partitions(self, partitions: set[int]) -> None:
        self._restorer.remove(partitions)
        self._pending = [t for t in self._pending if t.partition not in partitions]
        for partition in partitions:
            self._restoring.discard(partition)
            self._restore_started.pop(partition, None)
        for partition in partitions:
            self._views.pop(partition, None)
        for key in [k for k in self._txns if k[1] in partitions]:
            txn = self._txns.pop(key)
            if txn.dirty:
                log.warning("dropping uncommitted writes of store %s[%d] on close", *key)
            _finish(txn)
            self._delivered.pop(key, None)
        for key in [k for k in self._caches if k[1] in partitions]:
            del self._caches[key]
        errors: list[str] = []
        for key in [k for k in self._backends if k[1] in partitions]:
            backend = self._backends.pop(key)
            self._floor.pop(key, None)
            try:
                backend.close()
            except Exception as exc:  # close the others too
                errors.append(f"{key[0]}[{key[1]}]: {exc}")
        if errors:
            raise StateError(f"closing store partitions failed: {'; '.join(errors)}")

    # -- transactions --------------------------------------------------------

    def get(self, name: str, partition: int) -> Any:
        """What ``ctx.store(name)`` gives for ``partition``: the store's view
        (:meth:`eos.state.base.Store.view`) of its transaction, made on first use.

        Raises:
            ConfigError: No store ``name`` is declared (a programming error).
            StateError: Partition ``partition`` is not assigned to this
                instance, or its store is still restoring.
        """
        named = self._views.get(partition)
        view = None if named is None else named.get(name)
        if view is None:
            view = self._begin(name, partition)
        return view

    def _begin(self, name: str, partition: int) -> Any:
        key = (name, partition)
        backend = self._backends.get(key)
        if backend is None or partition in self._restoring:
            if name not in self._specs:
                raise undeclared_store(name, self._processor_name, list(self._specs))
            state = "still restoring" if backend is not None else "not assigned here"
            raise StateError(
                f"store {name}[{partition}] is not usable on this instance: partition "
                f"{partition} is {state} (open: {sorted(self._owners) or 'none'})"
            )
        key_serde, value_serde = self._serdes[name]
        writer = _table_writer(name) if name in self._tables else self._writer(key)
        cache = None
        if name in self._cached:
            cache = self._caches.get(key)
            if cache is None:
                cache = self._caches[key] = {}
        txn = StoreTransaction(
            backend,
            key_serde,
            value_serde,
            writer,
            name=f"{name}[{partition}]",
            cache=cache,
            counter=self._ctx,
        )
        wake = self.wake
        view = self._specs[name].view(
            txn, _ignore if wake is None else functools.partial(wake, partition)
        )
        self._txns[key] = txn
        named = self._views.get(partition)
        if named is None:
            named = self._views[partition] = {}
        named[name] = view
        return view

    def table(self, name: str, partition: int) -> StoreTransaction:
        """The transaction of table ``name`` for ``partition`` (the engine writes its
        source topic's records through :meth:`StoreTransaction.apply_raw`)."""
        key = (name, partition)
        if key not in self._txns:
            self._begin(name, partition)
        return self._txns[key]

    def _writer(self, key: StoreKey) -> ChangelogWriter | None:
        """The changelog writer of one store partition's next transaction.

        None on the fast path: the transaction only counts each write and
        :meth:`flush_changelog` produces them. In a careful replay a writer that
        produces at once, through the attributing produce path, bound to the
        current producer.
        """
        ctx = self._ctx
        if ctx is None:
            raise StateError("stores are only usable while the engine runs")
        outputs = self._outputs
        if not outputs.careful:
            # No writer: the transaction counts each write in ctx.sends (the engine
            # decides from it whether a failed record already wrote something, and
            # then aborts instead of skipping) and flush_changelog produces them.
            self._deferred.add(key)
            return None
        produce = outputs.changelog_produce()
        topic = self._topics[key[0]]
        partition = key[1]
        on_delivery = self._delivery_report(key)

        def write(key_bytes: bytes, value_bytes: bytes | None) -> None:
            # The engine decides from ctx.sends whether a failed record
            # already produced something (then it must abort, not skip).
            ctx.sends += 1
            while True:
                try:
                    # Positional: about half the cost of keyword arguments.
                    produce(topic, value_bytes, key_bytes, partition, on_delivery)
                    return
                except BufferError:
                    outputs.poll(0.05)
                except ProduceError:
                    raise
                except Exception as exc:
                    raise ProduceError(topic, exc) from exc

        return write

    def _delivery_report(self, key: StoreKey) -> Callable[[Any, Any], None]:
        """The delivery callback of store partition ``key``'s changelog records: the
        highest acknowledged offset becomes the checkpoint; a failure goes to the outputs."""
        delivered = self._delivered
        on_failure = self._on_failure

        def on_delivery(error: object, msg: object) -> None:
            if error is None:
                offset: int = msg.offset()  # type: ignore[attr-defined]
                if offset > delivered.get(key, -1):
                    delivered[key] = offset
            else:
                on_failure(error, msg)

        return on_delivery

    def flush_changelog(self) -> None:
        """Produce the changelog of this transaction's writes: per store partition one
        record per key written, with its last value (``None``: a tombstone), the last
        record with a delivery report. Those transactions are frozen first (a write
        after this raises instead of missing the changelog).

        Call before the offsets join the Kafka transaction: (1) of the commit sequence.

        Raises:
            ProduceError: The producer refused a record (the batch must be aborted).
        """
        deferred = self._deferred
        if not deferred:
            return
        txns = self._txns
        produce = self._outputs.guarantee.producer.produce
        for key in sorted(deferred):
            txn = txns.get(key)
            if txn is None or txn.state is not TransactionState.STARTED:
                continue
            txn.prepare()  # frozen first: what is produced below is all it will hold
            if not txn.dirty:
                continue
            topic = self._topics[key[0]]
            partition = key[1]
            pending = txn.pending()
            # All but the last as they come (no copy of the items); the last with the report.
            last_key, last_value = next(reversed(pending.items()))
            try:
                for key_bytes, value_bytes in itertools.islice(pending.items(), len(pending) - 1):
                    try:
                        # Positional: about half the cost of keyword arguments.
                        produce(topic, value_bytes, key_bytes, partition)
                    except BufferError:
                        self._produce_when_room(topic, value_bytes, key_bytes, partition, None)
                self._produce_when_room(
                    topic, last_value, last_key, partition, self._delivery_report(key)
                )
            except ProduceError:
                raise
            except Exception as exc:
                raise ProduceError(topic, exc) from exc
        deferred.clear()

    def _produce_when_room(
        self,
        topic: str,
        value: bytes | None,
        key: bytes,
        partition: int,
        on_delivery: Callable[[Any, Any], None] | None,
    ) -> None:
        """Produce, serving delivery reports while the producer's queue is full."""
        while True:
            try:
                produce = self._outputs.guarantee.producer.produce
                if on_delivery is None:
                    produce(topic, value, key, partition)
                else:
                    produce(topic, value, key, partition, on_delivery)
                return
            except BufferError:
                self._outputs.poll(0.05)

    def commit(self, positions: Mapping[tuple[str, int], int]) -> None:
        """Write every dirty overlay with its changelog checkpoint; drop the transactions.

        Call only after the Kafka transaction (or, without transactions, the
        offset commit) succeeded: (4) of the commit sequence. ``positions``
        are the input positions just committed: a table's checkpoint is the
        position of its source topic partition.

        Raises:
            StateError: A backend write failed. Local state then lags the
                changelog: the instance must stop (the next restore repairs it).
        """
        txns = self._txns
        if not txns:
            return
        # Serve delivery reports not yet served by commit_transaction/flush.
        self._outputs.poll()
        try:
            tables = self._tables
            for key, txn in txns.items():
                if txn.dirty:
                    topic = tables.get(key[0])
                    if topic is None:
                        txn.commit(self._checkpoint(key))
                    else:
                        txn.commit(positions[(topic, key[1])])
        finally:
            for txn in txns.values():
                _finish(txn)
            txns.clear()
            self._views.clear()
            self._delivered.clear()
            self._deferred.clear()

    def _checkpoint(self, key: StoreKey) -> int:
        delivered = self._delivered.get(key)
        if delivered is not None:
            return delivered + 1
        # Writing the data with the old checkpoint is safe: the next restore
        # replays records that are already applied, which changes nothing.
        backend = self._backends[key]
        stored = backend.changelog_offset()
        fallback = stored if stored is not None else self._floor.get(key, 0)
        log.warning(
            "store %s[%d]: no delivery report for its changelog records at commit; keeping "
            "checkpoint %d (the next restore replays a little more)",
            key[0],
            key[1],
            fallback,
        )
        return fallback

    def abort(self) -> None:
        """Drop every open transaction's overlay (the Kafka transaction aborted)."""
        for txn in self._txns.values():
            _finish(txn)
        self._txns.clear()
        self._views.clear()
        self._delivered.clear()
        self._deferred.clear()


def _no_committed_offsets(_tps: list[tuple[str, int]]) -> dict[tuple[str, int], int]:
    return {}


def _table_writer(name: str) -> ChangelogWriter:
    def refuse(_key: bytes, _value: bytes | None) -> None:
        raise StateError(f"store {name} is a table of its source topic and is read-only")

    return refuse


def _ignore(_stream_time: int) -> None:
    """The wake-up of a store view when nothing tracks stream time."""


def _finish(txn: StoreTransaction) -> None:
    """End a transaction that is not committed, so kept references fail loudly."""
    if txn.state is TransactionState.STARTED or txn.state is TransactionState.PREPARED:
        txn.abort()


def _check_assignor(input_topics: Sequence[str], settings: Mapping[str, object]) -> None:
    """Several input topics share store partition p: their partitions p must stay together."""
    if len(input_topics) < 2:
        return
    if str(settings.get("group.protocol", "classic")).lower() == "consumer":
        # KIP-848: the broker assigns; only its "range" assignor keeps partition p
        # of every topic on one member (its default, "uniform", does not).
        remote = str(settings.get("group.remote.assignor", "")) or "(the broker's default)"
        if remote != "range":
            raise ConfigError(
                f"group.protocol=consumer with group.remote.assignor={remote!r}"
                " and several input topics with state stores (or tables): store partition p "
                "serves partition p of every input topic, so one member must own all of them, "
                "which only the broker's 'range' assignor guarantees; set consumer_config "
                "group.remote.assignor=range",
                "group.remote.assignor",
            )
        return
    strategy = str(settings.get("partition.assignment.strategy", "range,roundrobin"))
    first = strategy.split(",")[0].strip()
    if first != "range":
        raise ConfigError(
            f"partition.assignment.strategy={strategy!r} with several input topics and state "
            "stores: store partition p serves partition p of every input topic, so the same "
            "instance must own all of them, which only the 'range' assignor guarantees; set "
            "consumer_config partition.assignment.strategy=range or use one input topic",
            "partition.assignment.strategy",
        )
