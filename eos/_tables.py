"""The engine's tables, global tables and repartition topics: one owner for each of their paths.

:class:`Tables` holds, for one engine:

- the **tables** (``eos.Store(name, source_topic=...)``): which input topics are
  tables' source topics (their records update the table and never reach
  ``process()``: :meth:`Tables.update`), the serdes their records are checked
  with, and the group's committed offsets a table restores up to
  (:meth:`Tables.committed_offsets`, handed to the store manager);
- the **timestamp order** across co-partitioned stream and table partitions
  (:class:`~eos._order.TimestampOrder`, only when there is a table; the
  committer rewinds its buffered records after an abort, the rebalance
  listener drops them on revocation);
- the **global tables** (``eos.GlobalStore``): loaded before the instance joins
  the group, kept up to date once per loop turn, read through ``ctx.store``;
- the **repartition topics** of a DSL topology: created at start-up, consumed
  like any input, and purged below the committed positions every
  :data:`PURGE_INTERVAL_S` (:meth:`Tables.purge`).

A processor with none of these costs nothing: every part is None or empty and
the engine's record loop checks one local dict per run of records.

Failure paths: a record of a table's topic that does not decode goes through
``processing_error_policy`` in the engine like any input record; a table
record without a key is ignored with a warning (once per table); a failed
purge is logged and tried again later (the records stay until then); a global
table that cannot load stops the start-up with the error of
:class:`~eos.state.global_loader.GlobalTables`.

Threading: the engine's processing thread only.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

from confluent_kafka import Consumer, KafkaException
from confluent_kafka import TopicPartition as KafkaTopicPartition

from eos._batch import TP, Assignment
from eos._order import TimestampOrder
from eos.config import ClientValue, Config
from eos.errors import StateError
from eos.serde import Serde
from eos.state.base import Store
from eos.state.changelog import stall_timeout

if TYPE_CHECKING:
    from confluent_kafka.admin import AdminClient

    from eos._stop import StopSignal
    from eos.state.manager import StoreManager
    from eos.stats import EngineStats

__all__ = ["PURGE_INTERVAL_S", "Tables"]

log = logging.getLogger("eos.engine")

PURGE_INTERVAL_S = 30.0
"""How often the consumed records of the repartition topics are deleted."""


class Tables:
    """The tables, global tables and repartition topics of one engine; see the module docstring.

    Args:
        config: The application's configuration (``input_topics`` include the
            tables' and the repartition topics).
        specs: The partitioned store declarations (tables among them).
        global_specs: The global store declarations.
        internal: The repartition topics ``{topic: partitions or None}``.
        assignment: What the instance owns (the timestamp order reads it).
        topic_serdes: ``topic_serdes(topic)``: the serdes the application
            decodes ``topic`` with.
    """

    def __init__(
        self,
        config: Config,
        specs: Sequence[Store[Any, Any]],
        global_specs: Sequence[Any],
        internal: Mapping[str, int | None],
        assignment: Assignment,
        topic_serdes: Callable[[str], tuple[Serde, Serde]],
    ) -> None:
        self._config = config
        self.sources: dict[str, str] = {
            s.source_topic: s.name for s in specs if s.source_topic is not None
        }
        """``{source topic: table store}``: what the engine routes to :meth:`update`."""
        self.serdes: dict[str, tuple[Serde, Serde]] = {
            s.source_topic: s.serdes(topic_serdes(s.source_topic))
            for s in specs
            if s.source_topic is not None
        }
        """``{source topic: (key serde, value serde)}`` a table's records are checked with."""
        self.internal = dict(internal)
        self.global_specs = list(global_specs)
        self._global_names = {s.name for s in self.global_specs}
        self.globals: Any = None
        self.order: TimestampOrder | None = None
        if self.sources:
            # A table is current at a record's time: the co-partitioned topics go in
            # timestamp order (repartition topics feed other parts of the topology).
            self.order = TimestampOrder(
                [t for t in config.input_topics if t not in self.internal],
                self.sources,
                config.max_task_idle_ms,
                assignment,
            )
        self._assignment = assignment
        self._stores: StoreManager | None = None
        self._consumer: Consumer | None = None
        self._keyless_warned: set[str] = set()
        self._purged_at = 0.0
        self._purges: list[Any] = []

    def __repr__(self) -> str:
        return (
            f"Tables(tables={self.sources}, globals={sorted(self._global_names)}, "
            f"repartition={sorted(self.internal)}, order={self.order!r})"
        )

    # -- start-up ---------------------------------------------------------------

    def consumer_settings(self, settings: dict[str, ClientValue]) -> dict[str, ClientValue]:
        """The group consumer's settings: a partition read to its end must say so (it
        then keeps no joined partition waiting)."""
        if self.order is not None:
            settings["enable.partition.eof"] = True
        return settings

    def attach(self, consumer: Consumer, stores: StoreManager | None) -> None:
        """The (new) group consumer, and the store manager once it exists."""
        if self.order is not None:
            self.order.consumer = consumer
        if stores is not None:
            self._stores = stores
        self._consumer = consumer

    def start_globals(
        self,
        stop: StopSignal,
        *,
        admin: AdminClient,
        stats: EngineStats,
        app_serdes: tuple[Serde, Serde],
    ) -> None:
        """Load every global table up to its topic's end (before the instance joins the group)."""
        if not self.global_specs:
            return
        from eos.state.global_loader import GlobalTables

        self.globals = GlobalTables(
            self._config, self.global_specs, stats=stats, app_serdes=app_serdes, admin=admin
        )
        self.globals.start(stop)

    # -- the record path ----------------------------------------------------------

    def update(self, table: str, partition: int, key: bytes | None, value: bytes | None) -> None:
        """A record of a table's source topic: the table's new value for ``key`` (None deletes)."""
        if key is None:
            # A table has no entry without a key (Kafka Streams drops these too).
            if table not in self._keyless_warned:
                self._keyless_warned.add(table)
                log.warning(
                    "table %s: a record of its topic has no key and is ignored (warned once)",
                    table,
                )
            return
        stores = self._stores
        if stores is None:
            raise RuntimeError("tables used before the engine started")
        stores.table(table, partition).apply_raw(key, value)

    def is_global(self, name: str) -> bool:
        """Whether ``name`` is a global store."""
        return name in self._global_names

    def view(self, name: str) -> Any:
        """What ``ctx.store(name)`` gives for global store ``name``."""
        if self.globals is None:
            raise RuntimeError("global tables used before the engine started")
        return self.globals.view(name)

    def poll(self) -> None:
        """Once per loop turn: apply what the global tables' topics received (no wait)."""
        if self.globals is not None:
            self.globals.poll()

    # -- restore and commit ---------------------------------------------------------

    def committed_offsets(self, tps: list[TP]) -> dict[TP, int]:
        """The group's committed offsets of ``tps`` (a table restores up to them).

        Runs between polls, with no transaction open; waits while a former
        owner's transactional offsets are pending (the broker resolves them
        when it aborts or completes that transaction), at most the restore's
        stall timeout.

        Raises:
            StateError: The offsets could not be read in that time (the
                restore cannot know where the table ends; nothing was applied).
        """
        consumer = self._consumer
        if consumer is None:
            raise RuntimeError("tables restored before the group consumer exists")
        timeout = stall_timeout(self._config.transaction_timeout_ms)
        try:
            found = consumer.committed([KafkaTopicPartition(t, p) for t, p in tps], timeout=timeout)
        except KafkaException as exc:
            raise StateError(
                f"cannot read the group's committed offsets of table partitions "
                f"{', '.join(f'{t}[{p}]' for t, p in tps)} within {timeout:.0f}s ({exc}): a "
                "table is restored up to them. Start the instance again once the cluster "
                "answers"
            ) from exc
        return {(tp.topic, tp.partition): tp.offset for tp in found if tp.offset >= 0}

    def purge(self, admin: AdminClient | None, now: float) -> None:
        """After a commit, at most every :data:`PURGE_INTERVAL_S`: delete the records of
        the repartition topics below this instance's committed positions.

        They are the application's own intermediate records: once their offsets
        are committed they are never read again. Asynchronous; a failure (an
        outage, a missing DELETE ACL) is logged and tried again later.
        """
        if not self.internal or now < self._purged_at + PURGE_INTERVAL_S:
            return
        self._purged_at = now
        for future in self._purges:
            error = future.exception() if future.done() else None
            if error is not None:
                log.warning("deleting consumed repartition records failed: %s", error)
        self._purges = [f for f in self._purges if not f.done()]
        if admin is None or self._purges:
            return
        positions = [
            KafkaTopicPartition(t, p, offset)
            for (t, p), offset in self._assignment.committed.items()
            if t in self.internal and offset > 0
        ]
        if positions:
            self._purges = list(admin.delete_records(positions).values())

    def close(self) -> None:
        """Close the global tables. Idempotent."""
        if self.globals is not None:
            self.globals.close()
