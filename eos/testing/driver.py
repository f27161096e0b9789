"""TestDriver: run a Processor in-process on given records, no broker.

The way to unit-test a processor (see docs/testing.md)::

    from eos.testing import TestDriver

    driver = TestDriver(CountOrders(), key_serde="string", value_serde="string")
    driver.send("order-1", key="alice")
    driver.send("order-2", key="alice")
    assert driver.output_values("order-counts-out") == ["1", "2"]
    assert driver.store("order-counts") == {"alice": 2}

Each ``send`` is processed as its own transaction with the engine's rules,
through the engine's own code where it has any: ``ctx`` is the engine's
:class:`~eos.processor.Context` (its serialization, its
:class:`~eos.errors.SerializationError` and :class:`~eos.errors.ProduceError`),
a record that cannot be deserialized fails with the engine's
:func:`~eos._records.decode_error`, dead letters carry
:func:`~eos.record.dead_letter_headers`, ``on_assign`` runs through
:meth:`~eos.processor.Context.call_on_assign`, and ``ctx.store`` of an
undeclared store raises :func:`~eos.processor.undeclared_store`'s error.
Outputs and store writes of a record that raises are discarded, and
``processing_error_policy`` applies. Stores are in-memory (whatever backend
the processor declares), so runs are fast and deterministic. It proves your
logic, not exactly-once: that is the engine's job, tested against a real broker.

Time runs through the engine's own :class:`~eos._time.TimeKeeper`: a record's
``timestamp`` moves its partition's stream time, and the timers, window
expiries and stream-time punctuations that become due fire right after it,
in the same transaction. The driver's wall clock starts at the real time when
it is built and moves only by :meth:`TestDriver.advance_wall_clock`, which
fires wall-clock timers and punctuations as the engine's loop would.

Tables, global tables and repartition topics (see :mod:`eos._dsl_joins`): a
record sent to a table's topic is written as is to the table's store partition
(a null value deletes its key, a null key is ignored) and never reaches
``process()``, as in the engine; one sent to a global table's topic is written
to the global store, which every partition reads. A record the topology sends
to one of its repartition topics is committed (``outputs(topic)`` shows it),
then fed back as an input record of that topic, in the partition the driver
gives a key (see :meth:`TestDriver.send`), with its input record's timestamp,
and processed before ``send()`` returns. Table records do not move stream time.
"""

from __future__ import annotations

import asyncio
import functools
import time
import zlib
from collections import defaultdict, deque
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from eos._async import AsyncHooks, is_async, run_hook
from eos._processor_checks import check_processor
from eos._records import decode_error
from eos._time import LateRecord, TimeKeeper, uses_time
from eos._time_store import TIME_STORE, iter_timers, time_store
from eos.config import ErrorPolicy, InputSerdeSpec, LatePolicy, check_input_serdes
from eos.dsl import (
    global_stores_for,
    input_serdes_for,
    input_topics_for,
    internal_topics_for,
    sink_serdes,
    source_topics,
    table_topics_for,
)
from eos.errors import ConfigError, ProcessingError, StateError
from eos.processor import Context, Processor, undeclared_store
from eos.record import Headers, Record, TopicPartition, dead_letter_headers
from eos.serde import BytesSerde, Serde, deserialize_or_raise, resolve_serde, serialize_or_raise
from eos.state.memory import MemoryStore
from eos.state.transaction import StoreTransaction

__all__ = ["DEFAULT_INPUT_TOPIC", "Output", "TestDriver"]

DEFAULT_INPUT_TOPIC = "input"
"""The input topic of a plain Processor's driver when ``input_topics`` is not given."""

_BYTES = BytesSerde()


@dataclass(frozen=True)
class Output:
    """One record the processor sent, as the broker holds it.

    ``key`` and ``value`` deserialize the bytes with the serdes a consumer of
    ``topic`` would use: the DSL ``to()``'s own serdes if it named any, the
    dead-letter topic's original bytes as they are, an input topic's own
    serdes (``input_serdes``, ``builder.stream()``), else the application's.

    Attributes:
        topic: Where it was sent.
        raw_key: The key bytes (None for a null key).
        raw_value: The value bytes (None for a tombstone).
        headers: The headers it was sent with.
        partition: The partition it was sent to explicitly, else None.
        timestamp: The timestamp it was sent with (``ctx.send(...,
            timestamp=...)``; a record to a repartition topic keeps its input
            record's), else None: the producer's current time, which is also
            what librdkafka gives a record sent with timestamp 0.
    """

    topic: str
    raw_key: bytes | None
    raw_value: bytes | None
    headers: Headers | None
    partition: int | None
    key_serde: Serde = field(repr=False, compare=False)
    value_serde: Serde = field(repr=False, compare=False)
    timestamp: int | None = field(default=None, repr=False, compare=False)

    @property
    def key(self) -> object:
        """The deserialized key. Raises SerializationError if the serde refuses it."""
        return deserialize_or_raise(self.key_serde, self.raw_key, part="key", topic=self.topic)

    @property
    def value(self) -> object:
        """The deserialized value. Raises SerializationError if the serde refuses it."""
        return deserialize_or_raise(
            self.value_serde, self.raw_value, part="value", topic=self.topic
        )


class TestDriver:
    """Feed records to a processor in-process; inspect outputs and stores.

    Lifecycle: the constructor checks the processor as the ``Application``
    does and calls ``on_assign`` with every partition of every input topic;
    each ``send``/``send_raw`` processes one record as one transaction;
    :meth:`close` calls ``on_revoke`` and ``close``. Single-threaded.

    Args:
        processor: The processor under test.
        input_topics: The topics the processor reads, as the application's
            ``input_topics``; records of any other topic are refused. For a
            DSL processor, its source topics (the default; other topics are a
            ConfigError, as in the Application); for any other processor,
            ``["input"]`` by default. ``send`` uses the first one unless told.
            Table topics and repartition topics are added as the application
            adds them (:func:`eos.dsl.input_topics_for`); a global table's
            topic is not an input topic, but ``send`` takes it.
        input_topic: The older spelling of ``input_topics=[input_topic]``.
        partitions: Partition count of each input topic (stores are per partition).
        key_serde: The application's key serde (input and output).
        value_serde: The application's value serde.
        input_serdes: ``{topic: (key_serde, value_serde)}`` for input topics
            with serdes of their own, as the application's ``input_serdes``
            (a DSL processor's ``builder.stream()`` serdes are added, as in the
            application). ``send`` serializes, and every record is
            deserialized, with its topic's serdes.
        processing_error_policy: ``fail``, ``skip`` or ``dead_letter``.
        dead_letter_topic: Where ``dead_letter`` sends failing records.
        late_record_policy: ``skip`` or ``dead_letter`` (records a window
            drops as late are also copied to the dead-letter topic).
        application_id: Seen by the processor as ``ctx.application_id``; names
            the repartition topics ``<application_id>-<name>-repartition``.
        lineage_headers: Stamp the ``eos.lineage`` header on every output, as
            the Application's ``lineage_headers`` setting does.

    Attributes:
        errors: The ProcessingErrors the policy was applied to.
        skipped: Records skipped by ``processing_error_policy="skip"``.
        late_records: Records a window dropped as late (``eos_late_records_total``).

    Raises:
        ConfigError: The processor cannot work (the Application's checks), the
            input topics do not match a DSL topology, or a setting is invalid.
    """

    __test__ = False  # not a pytest test class

    def __init__(
        self,
        processor: Processor,
        *,
        input_topics: Sequence[str] | str | None = None,
        input_topic: str | None = None,
        partitions: int = 1,
        key_serde: str | Serde = "bytes",
        value_serde: str | Serde = "bytes",
        input_serdes: Mapping[str, InputSerdeSpec] | None = None,
        processing_error_policy: ErrorPolicy = "fail",
        dead_letter_topic: str | None = None,
        late_record_policy: LatePolicy = "skip",
        application_id: str = "test-driver",
        lineage_headers: bool = False,
    ) -> None:
        check_processor(processor)
        if processing_error_policy not in ("fail", "skip", "dead_letter"):
            raise ConfigError(
                f"processing_error_policy={processing_error_policy!r}: must be 'fail', 'skip' "
                "or 'dead_letter'",
                "processing_error_policy",
            )
        if processing_error_policy == "dead_letter" and not dead_letter_topic:
            raise ConfigError("dead_letter policy needs dead_letter_topic", "dead_letter_topic")
        if late_record_policy not in ("skip", "dead_letter"):
            raise ConfigError(
                f"late_record_policy={late_record_policy!r}: must be 'skip' or 'dead_letter'",
                "late_record_policy",
            )
        if late_record_policy == "dead_letter" and processing_error_policy != "dead_letter":
            raise ConfigError(
                "late_record_policy='dead_letter' needs the dead-letter topic: set "
                "processing_error_policy='dead_letter' and dead_letter_topic, or use 'skip'",
                "late_record_policy",
            )
        if isinstance(partitions, bool) or not isinstance(partitions, int) or partitions < 1:
            raise ConfigError(f"partitions={partitions!r}: must be an int >= 1", "partitions")
        if input_topic is not None:
            if input_topics is not None:
                raise ConfigError("pass input_topics or input_topic, not both", "input_topics")
            input_topics = (input_topic,)
        if input_topics is None and source_topics(processor) is None:
            input_topics = (DEFAULT_INPUT_TOPIC,)
        self.processor = processor
        self._process_async: Callable[..., object] = processor.process
        # An async processor: each record (and hook) awaited on the driver's own loop.
        self._loop: asyncio.AbstractEventLoop | None = None
        self._hooks: Processor = processor
        if is_async(processor):
            loop = self._loop = asyncio.new_event_loop()
            hooks = AsyncHooks(processor, functools.partial(run_hook, loop), loop.close)
            self._hooks = hooks
            hooks.setup()
        self.input_topics = input_topics_for(processor, input_topics, application_id)
        if not self.input_topics:
            raise ConfigError("input_topics must name at least one topic", "input_topics")
        self.partitions = partitions
        self.policy = processing_error_policy
        self.late_policy = late_record_policy
        self.dead_letter_topic = dead_letter_topic
        self.application_id = application_id
        self._key_serde = resolve_serde(key_serde, what="key_serde")
        self._value_serde = resolve_serde(value_serde, what="value_serde")
        configured = check_input_serdes(input_serdes or {}, self.input_topics)
        self._input_serdes: dict[str, tuple[Serde, Serde]] = {
            topic: (k or self._key_serde, v or self._value_serde)
            for topic, (k, v) in input_serdes_for(processor, configured, application_id).items()
        }
        timed = uses_time(processor)
        specs = [*processor.stores, *([time_store()] if timed else [])]
        # Store, WindowStore and GlobalStore declarations.
        self._specs: dict[str, Any] = {s.name: s for s in specs}
        self._tables = table_topics_for(processor)
        self._table_topic = {name: topic for topic, name in self._tables.items()}
        for topic, name in self._tables.items():
            # As the engine: a table's records are decoded (checked) with its serdes.
            self._input_serdes[topic] = self._specs[name].serdes(self._serdes_of(topic))
        self._globals = {g.topic: g for g in global_stores_for(processor)}
        self._global_names = {g.name for g in self._globals.values()}
        for topic, spec in self._globals.items():
            self._input_serdes[topic] = spec.serdes((self._key_serde, self._value_serde))
        self._repartition_topics = frozenset(internal_topics_for(processor, application_id))
        self._feedback: deque[Output] = deque()
        self._feeding = False
        self._output_serdes: dict[str, tuple[Serde, Serde]] = {
            **self._input_serdes,
            **{
                topic: (k or self._key_serde, v or self._value_serde)
                for topic, (k, v) in sink_serdes(processor).items()
            },
        }
        if dead_letter_topic:
            self._output_serdes[dead_letter_topic] = (_BYTES, _BYTES)
        self._outputs: dict[str, list[Output]] = defaultdict(list)
        self._pending: list[Output] = []
        self._offsets: dict[tuple[str, int], int] = defaultdict(int)
        self._backends: dict[tuple[str, int], MemoryStore] = {}
        self._txns: dict[tuple[str, int], StoreTransaction] = {}
        self._views: dict[tuple[str, int], object] = {}
        self._changelog_offsets: dict[tuple[str, int], int] = defaultdict(int)
        self.errors: list[ProcessingError] = []
        self.skipped = 0
        self.late_records = 0
        self._late_record: Record[object, object] | None = None
        self._raw: tuple[bytes | None, bytes | None, Headers | None] = (None, None, None)
        self._now = time.time_ns() // 1_000_000
        self.ctx = Context(
            application_id=application_id,
            produce=self._produce,
            key_serde=self._key_serde,
            value_serde=self._value_serde,
            stores=self._store,
            lineage=lineage_headers,
        )
        for name in self._specs:
            # A global store holds every partition: one backend serves them all.
            shared = MemoryStore(name, -1) if name in self._global_names else None
            for partition in range(partitions):
                self._backends[(name, partition)] = shared or MemoryStore(name, partition)
        self.time = TimeKeeper(
            processor=self._hooks,
            ctx=self.ctx,
            views=self._store,
            persistent=timed,
            driven=[s.name for s in specs if getattr(s, "time_driven", False)],
            clock=lambda: self._now,
            begin=_nothing,
        )
        self.ctx.attach_time(self.time, self._late)
        if self._loop is not None:
            self.time.complete = functools.partial(run_hook, self._loop)
        assigned = self._assigned()
        self.time.assigned([(tp.topic, tp.partition) for tp in assigned])
        self.ctx.call_on_assign(self._hooks, assigned)

    # ------------------------------------------------------------------ feeding

    def send(
        self,
        value: object,
        *,
        key: object = None,
        topic: str | None = None,
        partition: int | None = None,
        timestamp: int | None = None,
        headers: Headers | None = None,
    ) -> None:
        """Process one record: ``value`` and ``key`` are serialized with the
        topic's serdes, then deserialized, as they would come from Kafka.

        Args:
            value: The record's value.
            key: The record's key (keyword-only, as in ``ctx.send``).
            topic: One of the input topics (default: the first), or a global
                table's topic.
            partition: The input partition (default: from the key's hash, as
                librdkafka's default partitioner places it; 0 for a null key).
            timestamp: Milliseconds since the epoch (default: the driver's wall
                clock, see :meth:`advance_wall_clock`). It moves the partition's
                stream time; timers and windows due then fire after the record.
            headers: The record's headers.

        Raises:
            ConfigError: ``topic`` is not an input topic, ``partition`` out of range,
                or the processor made a programming error (an undeclared store).
            StateError: The processor used ``ctx`` where it may not.
            SerializationError: ``key`` or ``value`` cannot be serialized.
            ProcessingError: Policy ``fail`` and the record failed (a record
                fed back from a repartition topic included: the records
                still to be fed back are then dropped).
        """
        topic = self._input_topic(topic)
        key_serde, value_serde = self._serdes_of(topic)
        raw_value = serialize_or_raise(value_serde, value, part="value", topic=topic)
        raw_key = serialize_or_raise(key_serde, key, part="key", topic=topic)
        self.send_raw(
            raw_value,
            key=raw_key,
            topic=topic,
            partition=partition,
            timestamp=timestamp,
            headers=headers,
        )

    def send_raw(
        self,
        value: bytes | None,
        *,
        key: bytes | None = None,
        topic: str | None = None,
        partition: int | None = None,
        timestamp: int | None = None,
        headers: Headers | None = None,
    ) -> None:
        """Process one record given as the bytes Kafka holds (e.g. malformed JSON).

        The topic's serdes deserialize it; a failure is the engine's
        SerializationError and ``processing_error_policy`` applies to it.
        Arguments and errors as :meth:`send`.
        """
        topic = self._input_topic(topic)
        self._receive(topic, value, key, partition, timestamp, headers)
        self._feed_back()

    def _receive(
        self,
        topic: str,
        value: bytes | None,
        key: bytes | None,
        partition: int | None,
        timestamp: int | None,
        headers: Headers | None,
    ) -> None:
        """One record of an input topic as one transaction (no feedback yet)."""
        if partition is None:
            partition = zlib.crc32(key) % self.partitions if key else 0
        elif not 0 <= partition < self.partitions:
            raise ConfigError(
                f"partition {partition} of {topic!r} does not exist: the driver has "
                f"partitions=0..{self.partitions - 1}",
                "partitions",
            )
        offset = self._offsets[(topic, partition)]
        self._offsets[(topic, partition)] = offset + 1
        ts = timestamp if timestamp is not None else self._now
        self._pending = []
        global_store = self._globals.get(topic)
        if global_store is not None:
            self._update_global(global_store.name, key, value)
            return
        key_serde, value_serde = self._serdes_of(topic)
        kdes = key_serde.deserialize
        try:
            record: Record[object, object] = Record(
                kdes(key),
                value_serde.deserialize(value),
                topic,
                partition,
                offset,
                ts,
                headers,
            )
        except Exception as exc:
            # As the engine: the policy applies; process() never sees the record.
            error = decode_error(exc, key, kdes, topic)
            self._apply_policy(error, topic, partition, offset, key, value, headers)
            return
        table = self._tables.get(topic)
        if table is not None:
            self._update_table(table, partition, key, value)
            return
        ctx = self.ctx
        ctx.record = record
        keeper = self.time
        timed = keeper.active
        if timed:
            self._raw = (key, value, headers)
            if ts > keeper.stream[partition]:
                keeper.stream[partition] = ts
        try:
            if self._loop is None:
                self.processor.process(record, ctx)
            else:
                run_hook(self._loop, self._process_async(record, ctx))
        except BaseException as exc:
            self._abort()
            if isinstance(exc, (ConfigError, StateError)) or not isinstance(exc, Exception):
                # A programming error (an undeclared store) or an exit, not a bad
                # record: as in the engine, no policy applies.
                raise
            self._apply_policy(exc, topic, partition, offset, key, value, headers)
            return
        finally:
            ctx.record = None
        if timed and keeper.stream[partition] >= keeper.due[partition]:
            self._in_transaction(lambda: keeper.fire(partition))
        self._commit()

    def _update_table(
        self, name: str, partition: int, key: bytes | None, value: bytes | None
    ) -> None:
        """A record of table ``name``'s topic: written as is (one transaction), never processed."""
        if key is None:
            return  # a table has no place for it (the engine ignores it too)
        self._store(name, partition)
        self._txns[(name, partition)].apply_raw(key, value)
        self._commit()

    def _update_global(self, name: str, key: bytes | None, value: bytes | None) -> None:
        """A record of global table ``name``'s topic: applied at once, outside transactions."""
        if key is None:
            return
        offset = self._changelog_offsets[(name, -1)] + 1
        self._changelog_offsets[(name, -1)] = offset
        self._backends[(name, 0)].write({key: value}, offset)

    def _feed_back(self) -> None:
        """Process the records committed to repartition topics, until none is left."""
        if self._feeding:
            return  # the outer call is draining the queue
        self._feeding = True
        try:
            queue = self._feedback
            while queue:
                out = queue.popleft()
                self._receive(
                    out.topic, out.raw_value, out.raw_key, out.partition, out.timestamp, out.headers
                )
        finally:
            self._feeding = False
            self._feedback.clear()

    def advance_wall_clock(self, ms: int) -> None:
        """Move the driver's wall clock ``ms`` forward; fire what became due.

        Wall-clock timers (``ctx.timers.schedule(..., kind="wall_clock")``) and
        wall-clock punctuations (``ctx.schedule``) due by the new time fire, in
        one transaction, as the engine's loop fires them even when no record
        arrives. Stream time does not move.

        Raises:
            ConfigError: ``ms`` is not an int >= 0.
            TimerError: ``on_timer`` or a punctuation raised (nothing of it is kept).
        """
        if isinstance(ms, bool) or not isinstance(ms, int) or ms < 0:
            raise ConfigError(f"advance_wall_clock({ms!r}): must be an int >= 0", "ms")
        self._now += ms
        self._pending = []
        self._in_transaction(lambda: self.time.fire_wall(self._now))
        self._commit()
        self._feed_back()

    @property
    def wall_clock(self) -> int:
        """The driver's wall clock, in milliseconds since the epoch."""
        return self._now

    def stream_time(self, partition: int = 0) -> int | None:
        """The stream time of ``partition``: the largest timestamp sent to it (None
        before any record; a record that failed is not counted)."""
        value = self.time.stream.get(partition)
        return None if value is None or value == -(1 << 63) else value

    def pending_timers(self, partition: int | None = None) -> list[tuple[int, object, str]]:
        """``(timestamp, key, kind)`` of every timer not fired yet, in timestamp order."""
        if TIME_STORE not in self._specs:
            return []
        parts = range(self.partitions) if partition is None else [partition]
        found: list[tuple[int, object, str]] = []
        for p in parts:
            for kind, timestamp, key in iter_timers(self._backends[(TIME_STORE, p)].iterate()):
                found.append((timestamp, key, kind))
        return sorted(found, key=lambda t: (t[0], t[2], repr(t[1])))

    def send_many(
        self, records: Iterable[tuple[object, object]], *, topic: str | None = None
    ) -> None:
        """``send(value, key=key, topic=topic)`` for each ``(key, value)`` pair, in order.

        Pairs are ``(key, value)``, the order :meth:`output_pairs` returns, so
        one driver's output pairs can be fed to the next.
        """
        for key, value in records:
            self.send(value, key=key, topic=topic)

    # ------------------------------------------------------------------ results

    def outputs(self, topic: str) -> list[Output]:
        """Everything committed to ``topic``, in send order."""
        return list(self._outputs.get(topic, []))

    def output_values(self, topic: str) -> list[object]:
        """The deserialized values committed to ``topic``."""
        return [o.value for o in self._outputs.get(topic, [])]

    def output_pairs(self, topic: str) -> list[tuple[object, object]]:
        """The ``(key, value)`` pairs committed to ``topic``."""
        return [(o.key, o.value) for o in self._outputs.get(topic, [])]

    def topics(self) -> list[str]:
        """Topics that received committed output."""
        return sorted(self._outputs)

    def store(self, name: str, partition: int | None = None) -> dict[object, object]:
        """Committed contents of store ``name`` (all partitions merged if None).

        A table's store is decoded with its topic's serdes; a global store holds
        every partition in one (``partition`` does not apply to it).
        """
        if name not in self._specs or name == TIME_STORE:
            declared = sorted(n for n in self._specs if n != TIME_STORE)
            raise KeyError(f"no store {name!r}; declared: {declared}")
        spec = self._specs[name]
        if name in self._global_names:  # every partition in one
            entries = self._backends[(name, 0)].iterate()
            decoded = spec.decode_entries(entries, (self._key_serde, self._value_serde))
            return {_hashable(key): value for key, value in decoded}
        topic = self._table_topic.get(name)
        serdes = None if topic is None else self._serdes_of(topic)
        parts = range(self.partitions) if partition is None else [partition]
        contents: dict[object, object] = {}
        for p in parts:
            for key, value in spec.decode_entries(self._backends[(name, p)].iterate(), serdes):
                contents[_hashable(key)] = value
        return contents

    def close(self) -> None:
        """Revoke all partitions (``on_revoke``) and close the processor."""
        assigned = self._assigned()
        self.time.revoked([(tp.topic, tp.partition) for tp in assigned])
        self._hooks.on_revoke(assigned)
        self._hooks.close()

    # ------------------------------------------------------------------ internals

    def _assigned(self) -> list[TopicPartition]:
        return [TopicPartition(t, p) for t in self.input_topics for p in range(self.partitions)]

    def _serdes_of(self, topic: str) -> tuple[Serde, Serde]:
        """The ``(key_serde, value_serde)`` input ``topic`` is read with."""
        return self._input_serdes.get(topic, (self._key_serde, self._value_serde))

    def _input_topic(self, topic: str | None) -> str:
        if topic is None:
            return self.input_topics[0]
        if topic not in self.input_topics and topic not in self._globals:
            raise ConfigError(
                f"{type(self.processor).__name__} does not read topic {topic!r}: the driver's "
                f"input topics are {list(self.input_topics)} (the application's input_topics); "
                "pass input_topics=[...] to the TestDriver to add it",
                "input_topics",
            )
        return topic

    def _produce(self, topic: str, value: object, key: object, **kwargs: object) -> None:
        """What the engine's producer does with ``ctx.send``'s bytes: accept bytes,
        str (UTF-8) and None, refuse anything else with a TypeError; the same for
        a timestamp that is not an int (0 is librdkafka's "none given")."""
        headers = kwargs.get("headers")
        partition = kwargs.get("partition")
        timestamp = kwargs.get("timestamp")
        if timestamp is not None:
            if not isinstance(timestamp, int):
                raise TypeError(f"timestamp must be an int, not {type(timestamp).__name__}")
            timestamp = timestamp or None
        key_serde, value_serde = self._output_serdes.get(
            topic, (self._key_serde, self._value_serde)
        )
        self._pending.append(
            Output(
                topic,
                _as_bytes(key),
                _as_bytes(value),
                list(headers.items()) if isinstance(headers, dict) else headers,  # type: ignore[arg-type]
                partition,  # type: ignore[arg-type]
                key_serde,
                value_serde,
                timestamp,
            )
        )

    def _store(self, name: str, partition: int) -> Any:
        view = self._views.get((name, partition))
        if view is not None:
            return view
        spec = self._specs.get(name)
        if spec is None:
            raise undeclared_store(name, type(self.processor).__name__, list(self._specs))
        if name in self._global_names:
            return self._global_view(name, partition)
        topic = self._table_topic.get(name)
        key_serde, value_serde = spec.serdes(None if topic is None else self._serdes_of(topic))

        def changelog(key: bytes, value: bytes | None) -> None:
            self.ctx.sends += 1

        txn = StoreTransaction(
            self._backends[(name, partition)],
            key_serde,
            value_serde,
            changelog,
            name=f"{name}[{partition}]",
        )
        view = spec.view(txn, functools.partial(self.time.wake, partition))
        self._txns[(name, partition)] = txn
        self._views[(name, partition)] = view
        return view

    def _global_view(self, name: str, partition: int) -> object:
        """The engine's read-only view of a global store, over the driver's one backend."""
        from eos.state.global_table import GlobalView

        spec = self._specs[name]
        key_serde, value_serde = spec.serdes((self._key_serde, self._value_serde))
        view = GlobalView(name, spec.topic, self._backends[(name, 0)], key_serde, value_serde)
        self._views[(name, partition)] = view
        return view

    def _in_transaction(self, fire: Callable[[], None]) -> None:
        """Run timers, window expiries or punctuations; on an error keep nothing of them."""
        try:
            fire()
        except BaseException:
            self._abort()
            raise

    def _late(self, dropped: bool) -> None:
        """As the engine: count a late record once; dead-letter it if told to and no
        window of it took it."""
        record = self.ctx.record
        if record is None or record is self._late_record:
            return
        self._late_record = record
        self.late_records += 1
        if dropped and self.late_policy == "dead_letter" and self.dead_letter_topic:
            raw_key, raw_value, headers = self._raw
            error = LateRecord(record.timestamp, self.ctx.stream_time)
            self._pending.append(
                Output(
                    self.dead_letter_topic,
                    raw_key,
                    raw_value,
                    dead_letter_headers(
                        error,
                        record.topic,
                        record.partition,
                        record.offset,
                        self.application_id,
                        headers,
                    ),
                    None,
                    _BYTES,
                    _BYTES,
                )
            )

    def _commit(self) -> None:
        self.time.flush()
        repartitions = self._repartition_topics
        for output in self._pending:
            self._outputs[output.topic].append(output)
            if output.topic in repartitions:
                self._feedback.append(output)
        self._pending = []
        for (name, partition), txn in self._txns.items():
            offset = self._changelog_offsets[(name, partition)] + 1
            self._changelog_offsets[(name, partition)] = offset
            txn.commit(offset)
        self._txns.clear()
        self._views.clear()
        self.time.committed()

    def _abort(self) -> None:
        self._pending = []
        for txn in self._txns.values():
            txn.abort()
        self._txns.clear()
        self._views.clear()
        self.time.aborted()

    def _apply_policy(
        self,
        exc: Exception,
        topic: str,
        partition: int,
        offset: int,
        raw_key: bytes | None,
        raw_value: bytes | None,
        headers: Headers | None,
    ) -> None:
        """As :meth:`eos._records.RecordFailures.apply_policy`, without Kafka."""
        error = ProcessingError(topic=topic, partition=partition, offset=offset, cause=exc)
        self.errors.append(error)
        if self.policy == "fail":
            raise error from exc
        if self.policy == "skip":
            self.skipped += 1
            return
        dlq = self.dead_letter_topic or ""
        dlq_headers = dead_letter_headers(
            exc, topic, partition, offset, self.application_id, headers
        )
        self._outputs[dlq].append(
            Output(dlq, raw_key, raw_value, dlq_headers, None, _BYTES, _BYTES)
        )


def _nothing() -> None:
    """The driver has no transaction to open: each send or clock step is one."""


def _as_bytes(data: object) -> bytes | None:
    """confluent-kafka's ``produce`` rules for a key or value."""
    if data is None or isinstance(data, bytes):
        return data
    if isinstance(data, str):
        return data.encode()
    raise TypeError(f"a bytes-like object is required, not '{type(data).__name__}'")


def _hashable(value: object) -> object:
    if isinstance(value, list):
        return tuple(_hashable(v) for v in value)
    if isinstance(value, dict):
        return tuple(sorted((k, _hashable(v)) for k, v in value.items()))
    return value
