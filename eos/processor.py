"""The user-facing processing API: :class:`Processor` and :class:`Context`.

A processor is called once per input record, on the engine's single
processing thread, inside a Kafka transaction the engine owns. It never
commits: everything it sends and every store write it makes becomes visible
atomically with the input offsets, or not at all.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable, Sequence
from typing import TYPE_CHECKING, Any, Generic, Literal, TypeVar, cast, overload

from typing_extensions import Self
from typing_extensions import TypeVar as DefaultTypeVar

from eos.errors import ConfigError, EosError, ProduceError, SerializationError, StateError
from eos.record import Headers, K, Record, TopicPartition, V
from eos.serde import BytesSerde, Serde

if TYPE_CHECKING:
    from eos._time import TimeKeeper
    from eos._time_store import TimerKind
    from eos.state.base import Store
    from eos.state.global_table import GlobalStore
    from eos.state.transaction import StoreTransaction
    from eos.state.window import WindowStore, WindowStoreTransaction
    from eos.timers import PunctuationGroup, Timers

_SK = TypeVar("_SK")
_SV = TypeVar("_SV")
PK = DefaultTypeVar("PK", default=Any)
"""A processor's key type. Unparameterised ``eos.Processor`` is ``Processor[Any, Any]``,
so a function taking ``eos.Processor`` (as ``Application`` does) takes any processor."""
PV = DefaultTypeVar("PV", default=Any)
"""A processor's value type (see :data:`PK`)."""

__all__ = ["AsyncProcessor", "Context", "Processor"]

Produce = Callable[..., None]
"""``produce(topic, value, key[, partition=..., headers=..., timestamp=...])``, as
confluent-kafka's."""


class Processor(Generic[PK, PV]):
    """Base class for user processing logic.

    ``Processor[K, V]`` processes records whose keys decode to ``K`` and values
    to ``V`` (``class Enrich(eos.Processor[str, dict[str, object]])``): its
    ``process`` takes a ``Record[K, V]`` and a ``Context[K, V]``. The types
    are for the type checker: the application's serdes (``key_serde``,
    ``value_serde``, ``input_serdes``) decide what the records hold, so name
    the types they decode to. Unparameterised ``eos.Processor`` is
    ``Processor[Any, Any]``: what the ``Application``, the engine and the
    ``TestDriver`` take, as the serdes, configured at run time (by name, in a
    properties file), decide what records hold.

    Lifecycle, all on the processing thread:

    1. ``on_assign(partitions, ctx)`` after the engine was given input
       partitions and their stores are restored;
    2. ``process(record, ctx)`` for every record, in offset order per partition,
       and ``on_timer(key, timestamp, ctx)`` for every timer that is due
       (``ctx.timers.schedule``), inside the same transactions;
    3. ``on_revoke(partitions)`` before partitions leave this instance (their
       last transaction is already committed or aborted);
    4. ``close()`` once, when the application stops.

    ``process`` may raise: the engine applies ``processing_error_policy``
    (fail, skip or dead-letter) and, when anything of the failed record was
    already sent, aborts and replays the batch so no partial output survives.
    A processor may be called again for the same record after an abort, so it
    must keep no side effects outside ``ctx`` (no external writes).

    Class attribute ``stores`` lists the state stores it uses
    (``[eos.Store("counts")]``), tables of topics
    (``eos.Store("customers", source_topic="customers")``) and global tables
    (``eos.GlobalStore("products", "products")``); ``ctx.store(name)`` opens
    them (see docs/joins.md).
    """

    stores: Sequence[Store[Any, Any] | GlobalStore[Any, Any]] = ()

    def process(self, record: Record[PK, PV], ctx: Context[PK, PV]) -> Awaitable[None] | None:
        """Handle one record. Send outputs with ``ctx.send``; use ``ctx.store``.

        Override it returning ``None``; the ``Awaitable`` in the signature is for
        :class:`AsyncProcessor`, whose ``process`` is an ``async def``.
        """
        raise NotImplementedError(f"{type(self).__name__} must implement process()")

    def on_assign(
        self, partitions: list[TopicPartition], ctx: Context[PK, PV]
    ) -> Awaitable[None] | None:
        """Called after partitions were assigned (and their stores restored).

        It runs in the consumer's rebalance callback, outside any transaction
        and with no current record: ``ctx.send`` and ``ctx.store`` raise
        :class:`~eos.errors.StateError` here. It is where punctuations are
        scheduled (``ctx.schedule(interval_ms, callback)``), for the partitions
        being assigned. Initialise state lazily in
        ``process`` instead (``ctx.store(name).get(key, default)``); keep
        in-memory caches of your own and fill them on a partition's first record.
        """

    def on_timer(self, key: Any, timestamp: int, ctx: Context[PK, PV]) -> Awaitable[None] | None:
        """Called once per timer scheduled with ``ctx.timers.schedule(key, timestamp)``.

        Runs inside the transaction, when the partition's stream time (or the
        wall clock, for ``kind="wall_clock"`` timers) reaches ``timestamp``,
        in timestamp order. ``ctx.send``, ``ctx.store`` and ``ctx.timers``
        work as in ``process`` (for the timer's partition); ``ctx.record`` is
        None. The timer's removal, its outputs and its store writes commit
        together, so each timer fires exactly once. A processor that defines
        ``on_timer`` gets its stream time and timers kept in a changelog-backed
        internal store; one that does not may not schedule timers.
        """
        raise NotImplementedError(f"{type(self).__name__} must implement on_timer()")

    def on_revoke(self, partitions: list[TopicPartition]) -> Awaitable[None] | None:
        """Called before partitions are taken away (committed or aborted already)."""

    def close(self) -> None:
        """Called once when the application stops."""


class AsyncProcessor(Processor[PK, PV]):
    """Base class for processing logic that awaits I/O per record (HTTP, a database).

    ``async def process(record, ctx)``: the engine runs up to ``max_in_flight``
    records at once on one asyncio event loop, on the processing thread, and
    keeps everything exactly-once (see docs/async.md):

    - records with the same key (per input partition) run one after another, in
      offset order, so the outputs of one key keep their input order; records
      of different keys overlap. Records with a null key run one after another
      per partition;
    - a transaction commits only finished records: every commit waits for the
      records in flight, then commits their outputs, store writes and offsets
      together; on an abort the records in flight are cancelled and everything
      replays from the committed offsets;
    - a record that runs longer than ``record_timeout_ms`` is cancelled and goes
      through ``processing_error_policy`` as a ``TimeoutError``.

    ``ctx`` is the record's own context (``ctx.record`` stays its record across
    awaits). ``ctx.store`` is safe from concurrent records: each get and put is
    atomic; a read-modify-write of a store key that other keys' records also
    write must not await between the read and the write.

    Hooks, all awaited on the processing loop: ``setup()`` once before the
    first record, ``on_assign``, ``on_revoke`` and ``on_timer`` as for
    :class:`Processor` (with no record in flight), ``teardown()`` once at stop.
    """

    async def setup(self) -> None:
        """Called once on the processing loop before the first record (open clients here)."""

    async def process(self, record: Record[PK, PV], ctx: Context[PK, PV]) -> None:
        """Handle one record; await I/O freely. Send with ``ctx.send``; use ``ctx.store``."""
        raise NotImplementedError(f"{type(self).__name__} must implement async process()")

    async def on_assign(self, partitions: list[TopicPartition], ctx: Context[PK, PV]) -> None:
        """As :meth:`Processor.on_assign`, awaited (no record is in flight)."""

    async def on_revoke(self, partitions: list[TopicPartition]) -> None:
        """As :meth:`Processor.on_revoke`, awaited after the records in flight finished."""

    async def on_timer(self, key: Any, timestamp: int, ctx: Context[PK, PV]) -> None:
        """As :meth:`Processor.on_timer`, awaited (no record is in flight)."""
        raise NotImplementedError(f"{type(self).__name__} must implement async on_timer()")

    async def teardown(self) -> None:
        """Called once on the processing loop when the application stops (close clients)."""


class Context(Generic[K, V]):
    """What a processor can do: send records, use stores, see the current record.

    ``Context[K, V]`` is the context of a ``Processor[K, V]``: ``ctx.record``
    is a ``Record[K, V]``. What it sends is not tied to ``K`` and ``V``.

    One context lives as long as the engine; ``ctx.record`` changes per record.
    Not thread-safe; use it only from ``process`` and the hooks.

    Attributes:
        record: The record being processed (None outside ``process``).
        application_id: The application's id.
    """

    __slots__ = (
        "_assigning",
        "_key_serialize",
        "_late",
        "_lineage_n",
        "_lineage_of",
        "_lineage_source",
        "_on_full",
        "_partition",
        "_produce",
        "_raw",
        "_stores",
        "_time",
        "_timers",
        "_value_serialize",
        "_views",
        "application_id",
        "record",
        "sends",
    )

    # Set by __new__ for a lineage context only (read by LineageContext alone).
    _lineage_of: Record[Any, Any] | None
    _lineage_n: int
    _lineage_source: bytes

    def __new__(cls, *_args: object, lineage: bool = False, **_kwargs: object) -> Self:
        # Lineage is chosen here, by class, so that ``send`` without it runs exactly
        # the code it ran before lineage existed: not even a branch per record. Here,
        # not in __init__, because the async runner makes its per-record contexts
        # with ``RecordContext.__new__`` alone (eos._async).
        if not lineage:
            return object.__new__(cls)
        from eos._lineage import with_lineage

        self = cast(Self, object.__new__(with_lineage(cls)))
        self._lineage_of = None
        self._lineage_n = 0
        self._lineage_source = b""
        return self

    def __init__(
        self,
        *,
        application_id: str,
        produce: Produce,
        key_serde: Serde,
        value_serde: Serde,
        stores: Callable[[str, int], StoreTransaction[Any, Any]] | None = None,
        on_full: Callable[[], None] | None = None,
        lineage: bool = False,
    ) -> None:
        """Made by the engine and the TestDriver, not by user code.

        ``lineage``: stamp :data:`eos._lineage.LINEAGE_HEADER` on every record
        sent for an input record (the ``lineage_headers`` setting). Used by
        ``__new__``, which makes a lineage context a subclass
        (:class:`eos._lineage.LineageContext`).
        """
        self.application_id = application_id
        self.record: Record[K, V] | None = None
        self.sends = 0
        self._produce = produce
        self._key_serialize = _fast_serializer(key_serde)
        self._value_serialize = _fast_serializer(value_serde)
        # Both serdes pass bytes through: send's shortest path.
        self._raw = self._key_serialize is None and self._value_serialize is None
        self._stores = stores
        # The store manager's open views by partition, then store name, when the
        # engine hands them out directly (ctx.store's hot path); else None.
        self._views: dict[int, dict[str, Any]] | None = None
        self._on_full = on_full
        self._partition: int | None = None
        self._assigning: list[TopicPartition] | None = None
        self._time: TimeKeeper | None = None
        self._timers: Timers | None = None
        self._late: Callable[[bool], None] | None = None

    def attach_time(self, keeper: TimeKeeper, late: Callable[[bool], None] | None = None) -> None:
        """Give the context its time keeper (``timers``, ``schedule``, ``stream_time``)
        and the hook that counts a late record. The engine and the TestDriver call it."""
        from eos.timers import Timers

        self._time = keeper
        self._timers = Timers(self, keeper)
        self._late = late

    @property
    def topic(self) -> str | None:
        """Topic of the current record."""
        return None if self.record is None else self.record.topic

    @property
    def partition(self) -> int | None:
        """Partition of the current record, or of the timer or punctuation running."""
        record = self.record
        return self._partition if record is None else record.partition

    @property
    def stream_time(self) -> int | None:
        """The stream time of the current partition: the largest record timestamp
        processed on it (the current record's included); None before any record."""
        partition = self.partition
        if partition is None or self._time is None:
            return None
        stream_time = self._time.stream.get(partition)
        return None if stream_time is None or stream_time == _NO_TIME else stream_time

    @property
    def wall_clock(self) -> int:
        """The wall clock in milliseconds since the epoch, as the engine sees it: what
        wall-clock timers and punctuations are due against (the TestDriver's own clock
        under test, moved by ``advance_wall_clock``)."""
        if self._time is None:
            return time.time_ns() // 1_000_000
        return self._time.clock()

    @property
    def timers(self) -> Timers:
        """Per-key timers of the current partition (see :class:`eos.timers.Timers`).

        Raises:
            StateError: The context has no time (it is not run by an engine or driver).
        """
        if self._timers is None:
            raise StateError("ctx.timers: this context is not run by an eos engine or TestDriver")
        return self._timers

    def schedule(
        self,
        interval_ms: int,
        callback: Callable[[int, Context[K, V]], object],
        *,
        kind: TimerKind = "wall_clock",
    ) -> PunctuationGroup:
        """Call ``callback(timestamp_ms, ctx)`` every ``interval_ms`` for each partition
        being assigned (Kafka Streams' punctuation). Call it from ``on_assign``.

        ``kind="wall_clock"``: due when the wall clock passes the next interval,
        even when no records arrive. ``kind="stream_time"``: due when the
        partition's stream time does (the first record starts it). Each call
        runs inside the transaction, with ``ctx.send``/``ctx.store`` working for
        that partition. Missed intervals are not made up: one call, then the
        next interval. Punctuations are not stored: after a restart or a
        rebalance, ``on_assign`` schedules them again.

        Returns:
            A handle whose ``cancel()`` stops them.

        Raises:
            StateError: Called outside ``on_assign``.
            ConfigError: ``interval_ms`` is not a positive int, or ``kind`` is unknown.
        """
        if self._assigning is None or self._time is None:
            raise StateError(
                "ctx.schedule is only available in on_assign: a punctuation is scheduled for "
                "the partitions being assigned (and again after every rebalance)"
            )
        return self._time.punctuate_every(self._assigning, interval_ms, callback, kind)

    def _record_late(self, *, dropped: bool = True) -> None:
        """A window dropped the current record as late (the engine counts it once).

        ``dropped=False``: late for some of its windows only (hopping, sliding),
        added to the others; counted, but never dead-lettered (a replay of the
        dead-letter topic would count it twice).
        """
        if self._late is not None:
            self._late(dropped)

    def send(
        self,
        topic: str,
        value: object,
        *,
        key: object = None,
        headers: Headers | dict[str, bytes] | None = None,
        partition: int | None = None,
        timestamp: int | None = None,
    ) -> None:
        """Send a record to ``topic`` inside the current transaction.

        ``ctx.send("out", value, key=record.key)``: everything after the value
        is keyword-only, so a key can never be passed where the value goes.
        Key and value are serialized with the application's serdes (``bytes``
        passes through). The record becomes visible when the engine commits.

        Args:
            topic: The topic to send to.
            value: The record's value.
            key: The record's key.
            headers: The record's headers.
            partition: The partition (default: the producer's partitioner, by key).
            timestamp: The record's timestamp in milliseconds since the epoch
                (``timestamp=ctx.record.timestamp`` keeps the input's). None:
                librdkafka's default, the current time. librdkafka takes 0 for
                "none given" too, so ``timestamp=0`` also sends the current time.

        Raises:
            SerializationError: the key or value cannot be serialized.
            ProduceError: the producer refused the record.
            StateError: called from ``on_assign`` (outside any transaction).
        """
        if not self._raw:
            key, value = self._serialized(topic, key, value)
        # Else the bytes serdes: key and value go to the producer as they are (no
        # tuple made and taken apart: ~0.1 µs a record on the hot path).
        self.sends += 1
        if headers is None and partition is None and timestamp is None:
            try:
                self._produce(topic, value, key)
                return
            except BufferError:
                pass
            except EosError:
                raise
            except Exception as exc:
                raise ProduceError(topic, exc) from exc
        self._emit(topic, value, key, headers, partition, timestamp)

    def _serialized(self, topic: str, key: object, value: object) -> tuple[object, object]:
        """``(key, value)`` serialized with the application's serdes for ``topic``.

        Raises:
            SerializationError: the key or value cannot be serialized.
        """
        kser = self._key_serialize
        vser = self._value_serialize
        try:
            kb = key if kser is None else kser(key)
        except Exception as exc:
            raise _wrap(exc, "key", topic) from exc
        try:
            vb = value if vser is None else vser(value)
        except Exception as exc:
            raise _wrap(exc, "value", topic) from exc
        return kb, vb

    def send_raw(
        self,
        topic: str,
        value: bytes | None,
        *,
        key: bytes | None = None,
        headers: Headers | dict[str, bytes] | None = None,
        partition: int | None = None,
        timestamp: int | None = None,
    ) -> None:
        """Send already-serialized bytes to ``topic`` inside the current transaction.

        For outputs whose serdes differ from the application's (the DSL's
        ``to(topic, value_serde=...)`` uses it). Same keyword-only arguments
        (``timestamp`` included) and errors as :meth:`send`.
        """
        self.sends += 1
        self._emit(topic, value, key, headers, partition, timestamp)

    def _emit(
        self,
        topic: str,
        vb: object,
        kb: object,
        headers: Headers | dict[str, bytes] | None,
        partition: int | None,
        timestamp: int | None,
    ) -> None:
        """Produce with the optional arguments given; wait out a full queue; wrap a refusal."""
        kwargs: dict[str, object] = {}
        if headers is not None:
            kwargs["headers"] = headers
        if partition is not None:
            kwargs["partition"] = partition
        if timestamp is not None:
            kwargs["timestamp"] = timestamp
        while True:
            try:
                self._produce(topic, vb, kb, **kwargs)
                return
            except BufferError:
                # The producer queue is full: let librdkafka drain, then retry.
                if self._on_full is None:
                    raise
                self._on_full()
            except EosError:
                raise
            except Exception as exc:
                raise ProduceError(topic, exc) from exc

    @overload
    def store(self, name: str) -> StoreTransaction: ...
    @overload
    def store(  # type: ignore[overload-overlap]  # a WindowStore is a Store with its own view
        self, name: WindowStore[_SK, _SV]
    ) -> WindowStoreTransaction[_SK, _SV]: ...
    @overload
    def store(self, name: Store[_SK, _SV]) -> StoreTransaction[_SK, _SV]: ...
    def store(self, name: str | Store[Any, Any]) -> Any:
        """The store partition ``name`` for the current record's partition.

        ``name`` is a store's name, or its declaration: with
        ``COUNTS: eos.Store[str, int] = eos.Store("counts")`` in ``stores``,
        ``ctx.store(COUNTS)`` is a ``StoreTransaction[str, int]``; for an
        ``eos.WindowStore`` it is a ``WindowStoreTransaction``. Inside
        ``on_timer`` and punctuations it is the firing partition's store.

        Raises:
            StateError: no such store, or called outside ``process``.
        """
        record = self.record
        if record is not None:  # processing a record: the hot path
            views = self._views
            if views is not None and type(name) is str:
                named = views.get(record.partition)
                if named is not None:
                    view = named.get(name)
                    if view is not None:
                        return view
            stores = self._stores
            if stores is not None:
                return stores(name if isinstance(name, str) else name.name, record.partition)
        stores = self._stores
        if not isinstance(name, str):
            name = name.name
        if record is None and self._partition is not None and stores is not None:
            return stores(name, self._partition)  # in on_timer and punctuations
        if self._produce is _refuse_in_on_assign:
            raise StateError(
                f"ctx.store({name!r}) is not available in on_assign: it runs in the "
                "rebalance callback, outside any transaction and with no current record. "
                f"Initialise state lazily in process() (ctx.store({name!r}).get(key, "
                "default)); restored stores already hold their committed contents"
            )
        raise StateError(f"ctx.store({name!r}) is only available while processing a record")

    def call_on_assign(self, processor: Processor[K, V], partitions: list[TopicPartition]) -> None:
        """Run ``processor.on_assign(partitions, self)`` with ``send`` and ``store`` refused.

        The engine's rebalance listener and the TestDriver both call it, so a
        processor that sends from ``on_assign`` fails the same way under both:
        with a :class:`~eos.errors.StateError` saying why, not with a record
        produced outside any transaction. The check costs nothing per record:
        the produce function is swapped for the duration of the hook.
        """
        produce = self._produce
        self._produce = _refuse_in_on_assign
        self._assigning = partitions
        try:
            processor.on_assign(partitions, self)
        finally:
            self._produce = produce
            self._assigning = None


_NO_TIME = -(1 << 63)


def name_of(processor: object) -> str:
    """The user's processor class name for messages (an engine wrapper names what it wraps)."""
    name = getattr(processor, "display_name", None)
    return name if isinstance(name, str) else type(processor).__name__


def defines_on_timer(processor: object) -> bool:
    """Whether ``processor``'s class defines its own ``on_timer`` (sync or async)."""
    return type(processor).on_timer not in (Processor.on_timer, AsyncProcessor.on_timer)  # type: ignore[attr-defined]


def _refuse_in_on_assign(topic: str, *_args: object, **_kwargs: object) -> None:
    """The produce function while ``on_assign`` runs (see :meth:`Context.call_on_assign`)."""
    raise StateError(
        f"ctx.send to {topic!r} from on_assign: on_assign runs in the rebalance callback, "
        "outside any transaction, so a record sent there could never be committed with "
        "input offsets. Send from process() instead"
    )


def undeclared_store(name: str, processor_name: str, declared: Sequence[str]) -> ConfigError:
    """The error for ``ctx.store(name)`` naming a store ``processor_name`` does not declare.

    One wording for the engine and the TestDriver.
    """
    if not declared:
        return ConfigError(
            f"ctx.store({name!r}): {processor_name} declares no stores; add "
            f"stores = [eos.Store({name!r})] to the class",
            "stores",
        )
    return ConfigError(
        f"store {name!r} is not declared in {processor_name}.stores "
        f"(declared: {', '.join(map(repr, declared))}); add eos.Store({name!r}) to stores",
        "stores",
    )


def _fast_serializer(serde: Serde) -> Callable[[object], bytes | None] | None:
    """None for the bytes serde: ``send`` then skips serialization entirely."""
    return None if isinstance(serde, BytesSerde) else serde.serialize


def _wrap(exc: Exception, part: Literal["key", "value"], topic: str) -> SerializationError:
    if isinstance(exc, SerializationError) and exc.topic is not None:
        return exc
    return SerializationError(
        f"cannot serialize {part} for topic {topic!r}: {type(exc).__name__}: {exc}",
        part=part,
        operation="serialize",
        topic=topic,
    )
