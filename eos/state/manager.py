"""The engine's view of the state stores: open, restore, hand out, commit, close.

One :class:`StoreManager` per engine. It owns every open store partition of
the instance and the :class:`~eos.state.transaction.StoreTransaction` of each
for the current Kafka transaction. Its calls line up with the engine's
commit sequence::

    open(tps)      on assignment: open the backends, restore from the changelog
    get(name, p)   per ctx.store(): the transaction of (name, p), made lazily;
                   its writes go to the overlay and, through the engine's
                   producer, to changelog partition p (same Kafka transaction)
    commit()       (4) after the Kafka commit: overlay + changelog offset, one
                   backend write per dirty store partition
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

import logging
import os
import signal
import time
from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING

from eos.errors import ConfigError, StateError
from eos.serde import Serde
from eos.state.base import StateStore, Store, open_backend
from eos.state.changelog import ChangelogRestorer, RestoreTask, restore_consumer_settings
from eos.state.topics import changelog_topic, ensure_changelog_topics
from eos.state.transaction import ChangelogWriter, StoreTransaction, TransactionState

if TYPE_CHECKING:
    from eos.engine import Engine

__all__ = ["CRASH_AFTER_KAFKA_COMMIT_ENV", "StoreManager"]

log = logging.getLogger("eos.state")

CRASH_AFTER_KAFKA_COMMIT_ENV = "EOS_TEST_CRASH_AFTER_KAFKA_COMMIT"
"""TEST ONLY. Set to ``N`` to SIGKILL the process on the ``N``-th commit that
has store writes, after the Kafka commit and before the local store write:
the window in which local state lags the changelog. Read once per manager."""

_STALL_MARGIN_S = 30.0
# librdkafka's default for a group consumer; the rebalance callback (and so
# the restore) must end well before it or the consumer leaves the group.
_MAX_POLL_INTERVAL_MS = 300_000

StoreKey = tuple[str, int]
"""``(store name, partition)``."""


class StoreManager:
    """Owns the store partitions of one engine; see the module docstring.

    Built by the engine after its producer and ``engine.admin`` exist and
    before it subscribes. Construction checks or creates the changelog topics.

    Args:
        engine: The engine whose producer, admin client, config, stats and
            context the manager uses.
        specs: The processor's store declarations.

    Raises:
        ConfigError: Two stores share a name, the input topics differ in
            partition count, or several input topics are combined with an
            assignor that does not keep equal partition numbers together.
        StateError: An existing changelog topic has the wrong partition count.

    Attributes:
        last_restore_records: Records restored by the most recent ``open()``.
        restored_records: Records restored per ``(store, partition)`` by the
            most recent restore of that store partition.
        total_restored: Records restored since construction.
    """

    def __init__(self, engine: Engine, specs: Sequence[Store]) -> None:
        config = engine.config
        specs_by_name: dict[str, Store] = {}
        for spec in specs:
            if spec.name in specs_by_name:
                raise ConfigError(
                    f"store name {spec.name!r} is declared twice in "
                    f"{type(engine.processor).__name__}.stores; store names must be unique",
                    "store.name",
                )
            specs_by_name[spec.name] = spec
        if not specs_by_name:
            raise ConfigError("StoreManager needs at least one store", "store.name")
        _check_assignor(config.input_topics, config.consumer_settings())
        admin = engine.admin
        if admin is None:
            raise RuntimeError("StoreManager must be built after the engine's admin client")
        self._engine = engine
        self._specs = specs_by_name
        self._serdes: dict[str, tuple[Serde, Serde]] = {
            n: s.serdes() for n, s in specs_by_name.items()
        }
        self._topics = {n: changelog_topic(config.application_id, n) for n in specs_by_name}
        self._root = os.path.join(config.state_dir, config.application_id)
        self.changelog_partitions = ensure_changelog_topics(
            admin,
            application_id=config.application_id,
            input_topics=config.input_topics,
            stores=list(specs_by_name),
        )
        client_id = f"{config.transactional_id}-restore"
        self._restorer = ChangelogRestorer(
            admin,
            restore_consumer_settings(config.consumer_settings(), config.application_id, client_id),
            stall_timeout_s=_stall_timeout(
                config.transaction_timeout_ms, config.consumer_settings()
            ),
        )
        # Under exactly_once_v2 a failed changelog delivery fails
        # commit_transaction; otherwise it must reach the engine's failure
        # list, which the per-message callback would bypass.
        self._on_failure: Callable[..., None] | None = (
            None if config.processing_guarantee == "exactly_once_v2" else engine._on_alos_delivery
        )
        self._backends: dict[StoreKey, StateStore] = {}
        self._floor: dict[StoreKey, int] = {}
        self._owners: dict[int, set[str]] = {}
        self._txns: dict[StoreKey, StoreTransaction] = {}
        self._delivered: dict[StoreKey, int] = {}
        self.last_restore_records = 0
        self.restored_records: dict[StoreKey, int] = {}
        self.total_restored = 0
        self._crash_after = _crash_after()
        self._dirty_commits = 0
        if self._crash_after is not None:
            log.warning(
                "%s=%d is set: this process kills itself on that commit (test only)",
                CRASH_AFTER_KAFKA_COMMIT_ENV,
                self._crash_after,
            )

    def __repr__(self) -> str:
        return (
            f"StoreManager(stores={list(self._specs)}, open={sorted(self._backends)}, "
            f"transactions={len(self._txns)})"
        )

    @property
    def open_partitions(self) -> list[StoreKey]:
        """The ``(store, partition)`` pairs open on this instance, sorted."""
        return sorted(self._backends)

    def changelog_topic(self, name: str) -> str:
        """Return the changelog topic of store ``name``."""
        return self._topics[name]

    def path(self, name: str, partition: int) -> str:
        """Return the local directory of store partition ``(name, partition)``."""
        return os.path.join(self._root, name, str(partition))

    # -- assignment ----------------------------------------------------------

    def open(self, tps: list[tuple[str, int]]) -> None:
        """Open and restore the store partitions of newly assigned input partitions.

        Called from the assignment callback, before any record of ``tps`` is
        processed. Blocks until every new store partition is up to date with
        its changelog. A partition number already open (for another input
        topic) is not restored again.

        Raises:
            StateError: A backend cannot be opened, a checkpoint lies outside
                its changelog, or restoring failed or stalled.
        """
        new: list[int] = []
        for topic, partition in tps:
            owners = self._owners.setdefault(partition, set())
            if not owners and partition not in new:
                new.append(partition)
            owners.add(topic)
        if not new:
            return
        tasks: list[RestoreTask] = []
        stats = self._engine.stats
        previous = stats.state
        started = time.monotonic()
        try:
            for partition in sorted(new):
                for name, spec in self._specs.items():
                    key = (name, partition)
                    path = self.path(name, partition)
                    backend = open_backend(spec, path, partition)
                    self._backends[key] = backend
                    tasks.append(RestoreTask(name, partition, self._topics[name], backend, path))
            stats.state = "restoring"
            self._restorer.restore(tasks)
        except BaseException:
            # Leave nothing half-open: these partitions are not usable.
            for partition in new:
                self._owners.pop(partition, None)
            try:
                self._close_partitions(set(new))
            except StateError as exc:
                log.warning("closing store partitions after a failed open: %s", exc)
            raise
        finally:
            stats.state = previous
        total = 0
        for task in tasks:
            key = (task.store, task.partition)
            self._floor[key] = task.position
            self.restored_records[key] = task.restored
            total += task.restored
        self.last_restore_records = total
        self.total_restored += total
        stats.record_restore(total, time.monotonic() - started)

    def close(self, tps: list[tuple[str, int]]) -> None:
        """Close the store partitions no remaining input partition uses.

        Store partition ``p`` stays open while any other assigned input topic
        still has partition ``p``. Open transactions of closed partitions are
        dropped (the engine committed or aborted them already).
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
        """Drop every transaction and close every backend. Idempotent."""
        self._owners.clear()
        self._close_partitions({p for _, p in self._backends} | {p for _, p in self._txns})

    def _close_partitions(self, partitions: set[int]) -> None:
        for key in [k for k in self._txns if k[1] in partitions]:
            txn = self._txns.pop(key)
            if txn.dirty:
                log.warning("dropping uncommitted writes of store %s[%d] on close", *key)
            _finish(txn)
            self._delivered.pop(key, None)
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

    def get(self, name: str, partition: int) -> StoreTransaction:
        """The transaction of store ``name``, partition ``partition`` (made on first use).

        Raises:
            StateError: No store ``name`` is declared, or partition
                ``partition`` is not assigned to this instance.
        """
        txn = self._txns.get((name, partition))
        if txn is None:
            txn = self._begin(name, partition)
        return txn

    def _begin(self, name: str, partition: int) -> StoreTransaction:
        key = (name, partition)
        backend = self._backends.get(key)
        if backend is None:
            if name not in self._specs:
                raise StateError(
                    f"store {name!r} is not declared in "
                    f"{type(self._engine.processor).__name__}.stores "
                    f"(declared: {', '.join(map(repr, self._specs)) or 'none'})"
                )
            raise StateError(
                f"store {name}[{partition}] is not open on this instance: partition {partition} "
                f"is not assigned here (open: {sorted(self._owners) or 'none'})"
            )
        key_serde, value_serde = self._serdes[name]
        txn = StoreTransaction(
            backend, key_serde, value_serde, self._writer(key), name=f"{name}[{partition}]"
        )
        self._txns[key] = txn
        return txn

    def _writer(self, key: StoreKey) -> ChangelogWriter:
        """A changelog writer for one store partition, bound to the current producer."""
        engine = self._engine
        ctx = engine._ctx
        if ctx is None:
            raise StateError("stores are only usable while the engine runs")
        producer = engine.producer
        produce = producer.produce
        poll = producer.poll
        topic = self._topics[key[0]]
        partition = key[1]
        delivered = self._delivered
        on_failure = self._on_failure

        def on_delivery(error: object, msg: object) -> None:
            if error is None:
                offset: int = msg.offset()  # type: ignore[attr-defined]
                if offset > delivered.get(key, -1):
                    delivered[key] = offset
            elif on_failure is not None:
                on_failure(error, msg)

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
                    poll(0.05)

        return write

    def commit(self) -> None:
        """Write every dirty overlay with its changelog checkpoint; drop the transactions.

        Call only after the Kafka transaction (or, without transactions, the
        offset commit) succeeded: (4) of the commit sequence.

        Raises:
            StateError: A backend write failed. Local state then lags the
                changelog, which the next restore repairs.
        """
        txns = self._txns
        if not txns:
            return
        # Serve delivery reports not yet served by commit_transaction/flush.
        self._engine.producer.poll(0)
        try:
            if self._crash_after is not None and any(t.dirty for t in txns.values()):
                self._dirty_commits += 1
                if self._dirty_commits == self._crash_after:
                    log.warning("%s: killing this process now", CRASH_AFTER_KAFKA_COMMIT_ENV)
                    os.kill(os.getpid(), signal.SIGKILL)
            for key, txn in txns.items():
                if txn.dirty:
                    txn.commit(self._checkpoint(key))
        finally:
            for txn in txns.values():
                _finish(txn)
            txns.clear()
            self._delivered.clear()

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
        self._delivered.clear()


def _finish(txn: StoreTransaction) -> None:
    """End a transaction that is not committed, so kept references fail loudly."""
    if txn.state is TransactionState.STARTED or txn.state is TransactionState.PREPARED:
        txn.abort()


def _crash_after() -> int | None:
    raw = os.environ.get(CRASH_AFTER_KAFKA_COMMIT_ENV, "").strip()
    if not raw:
        return None
    try:
        return int(raw)
    except ValueError:
        raise ConfigError(
            f"{CRASH_AFTER_KAFKA_COMMIT_ENV}={raw!r} must be an integer (it is a test hook; "
            "unset it in production)",
            CRASH_AFTER_KAFKA_COMMIT_ENV,
        ) from None


def _check_assignor(input_topics: Sequence[str], settings: Mapping[str, object]) -> None:
    """Several input topics share store partition p: their partitions p must stay together."""
    if len(input_topics) < 2:
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


def _stall_timeout(transaction_timeout_ms: int, settings: Mapping[str, object]) -> float:
    """How long a restore may make no progress before it fails.

    Long enough for the broker to abort a dead former owner's transaction
    (``transaction.timeout.ms`` plus the coordinator's check interval), but
    shorter than ``max.poll.interval.ms``, since restore runs inside the
    assignment callback.
    """
    wait = transaction_timeout_ms / 1000.0 + _STALL_MARGIN_S
    raw = settings.get("max.poll.interval.ms", _MAX_POLL_INTERVAL_MS)
    max_poll = float(raw) / 1000.0 if isinstance(raw, (int, float, str)) else 300.0
    return max(5.0, min(wait, max_poll * 0.8))
