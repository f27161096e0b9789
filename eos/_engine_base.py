"""The engine's shared state, declared once for the modules that hold its methods.

:class:`~eos.engine.Engine` is split over ``engine.py`` (the loop),
``_commit.py`` (commit, abort, rewind), ``_failures.py`` (failing records,
outputs and commits) and ``_rebalance.py`` (consumer callbacks). Each part
derives from :class:`EngineBase`, which declares the attributes the engine's
``__init__`` sets and, for the type checker only, the methods the parts call
on one another.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from confluent_kafka import Consumer, KafkaError, Producer
from confluent_kafka.admin import AdminClient

if TYPE_CHECKING:
    from eos.config import Config
    from eos.errors import AbortableTransactionError
    from eos.processor import Context, Processor
    from eos.state.manager import StoreManager
    from eos.stats import EngineStats
    from eos.transaction import TransactionalProducer

TP = tuple[str, int]
Source = tuple[str, int, int]
"""An input record's (topic, partition, offset)."""


class EngineBase:
    """Attributes of one engine; see :class:`eos.engine.Engine`."""

    config: Config
    processor: Processor
    stats: EngineStats
    stores: StoreManager | None
    admin: AdminClient
    _guarantee: str
    _eos: bool
    _stopping: bool
    _consumer: Consumer | None
    _producer: Producer | None
    _txn: TransactionalProducer | None
    _ctx: Context | None
    _in_txn: bool
    _txn_started: float
    _txn_records: int
    _txn_sends: int
    _assigned: set[TP]
    _committed: dict[TP, int]
    _positions: dict[TP, int]
    _first_seen: dict[TP, int]
    _poison: dict[Source, BaseException]
    _careful: dict[TP, int]
    _one_by_one: bool
    _delivery_failures: dict[Source, KafkaError]
    _alos_failures: list[KafkaError]
    _commit_attempts: int
    _inject_failures: frozenset[int]
    _lag_checked: float

    @property
    def consumer(self) -> Consumer:
        """The consumer (only while running)."""
        if self._consumer is None:
            raise RuntimeError("engine not started")
        return self._consumer

    @property
    def producer(self) -> Producer:
        """The producer (only while running)."""
        if self._producer is None:
            raise RuntimeError("engine not started")
        return self._producer

    if TYPE_CHECKING:
        # Implemented by the parts; declared here so each part can call the others.
        def _begin(self) -> None: ...
        def _commit(self) -> None: ...
        def _fail_batch(
            self,
            kind: str,
            reason: str,
            batch: Sequence[Any],
            index: int,
            *,
            reraise: bool = True,
        ) -> None: ...
        def _mark_dead(self) -> None: ...
        def _drain(self) -> None: ...
        def _after_failed_commit(self, exc: AbortableTransactionError) -> None: ...
        def _renew_producer(self) -> None: ...
        def _refresh_lag(self) -> None: ...
        def _release(self, tps: list[TP]) -> None: ...
