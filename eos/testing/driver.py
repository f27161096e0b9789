"""TestDriver: run a Processor in-process on given records, no broker.

The way to unit-test a processor::

    from eos.testing import TestDriver

    driver = TestDriver(CountOrders(), key_serde="string", value_serde="string")
    driver.send("order-1", key="alice")
    driver.send("order-2", key="alice")
    assert driver.output_values("order-counts-out") == ["1", "2"]
    assert driver.store("order-counts") == {"alice": 2}

Each ``send`` is processed as its own transaction with the engine's rules:
outputs and store writes of a record that raises are discarded, and the
``processing_error_policy`` applies (``fail`` raises
:class:`~eos.errors.ProcessingError`, ``skip`` counts it, ``dead_letter``
records it on the dead-letter topic with the engine's headers). Stores are
in-memory (whatever backend the processor declares), so runs are fast and
deterministic. It proves your logic, not exactly-once: that is the engine's
job, tested against a real broker.
"""

from __future__ import annotations

import time
import zlib
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass

from eos._processor_checks import check_processor
from eos.config import ErrorPolicy
from eos.errors import ConfigError, ProcessingError, SerializationError, StateError
from eos.processor import Context, Processor
from eos.record import Headers, Record, TopicPartition, dead_letter_headers
from eos.serde import Serde, resolve_serde
from eos.state.base import Store
from eos.state.memory import MemoryStore
from eos.state.transaction import StoreTransaction

__all__ = ["Output", "TestDriver"]


@dataclass(frozen=True)
class Output:
    """One record the processor sent (key and value deserialized with the app's serdes)."""

    topic: str
    key: object
    value: object
    headers: Headers | None
    partition: int | None
    raw_key: bytes | None
    raw_value: bytes | None


class TestDriver:
    """Feed records to a processor in-process; inspect outputs and stores.

    Args:
        processor: The processor under test.
        input_topic: Topic name the fed records come from.
        partitions: Partition count of the input (stores are per partition).
        key_serde: The application's key serde (input and output).
        value_serde: The application's value serde.
        processing_error_policy: ``fail``, ``skip`` or ``dead_letter``.
        dead_letter_topic: Where ``dead_letter`` sends failing records.
        application_id: Seen by the processor as ``ctx.application_id``.
    """

    __test__ = False  # not a pytest test class

    def __init__(
        self,
        processor: Processor,
        *,
        input_topic: str = "input",
        partitions: int = 1,
        key_serde: str | Serde = "bytes",
        value_serde: str | Serde = "bytes",
        processing_error_policy: ErrorPolicy = "fail",
        dead_letter_topic: str | None = None,
        application_id: str = "test-driver",
    ) -> None:
        check_processor(processor)
        if processing_error_policy == "dead_letter" and not dead_letter_topic:
            raise ConfigError("dead_letter policy needs dead_letter_topic", "dead_letter_topic")
        self.processor = processor
        self.input_topic = input_topic
        self.partitions = partitions
        self.policy = processing_error_policy
        self.dead_letter_topic = dead_letter_topic
        self.application_id = application_id
        self._key_serde = resolve_serde(key_serde, what="key_serde")
        self._value_serde = resolve_serde(value_serde, what="value_serde")
        self._outputs: dict[str, list[Output]] = defaultdict(list)
        self._pending: list[Output] = []
        self._offsets: dict[tuple[str, int], int] = defaultdict(int)
        self._specs: dict[str, Store] = {s.name: s for s in processor.stores}
        self._backends: dict[tuple[str, int], MemoryStore] = {}
        self._txns: dict[tuple[str, int], StoreTransaction] = {}
        self._changelog_offsets: dict[tuple[str, int], int] = defaultdict(int)
        self.errors: list[ProcessingError | SerializationError] = []
        self.skipped = 0
        self.ctx = Context(
            application_id=application_id,
            produce=self._produce,
            key_serde=self._key_serde,
            value_serde=self._value_serde,
            stores=self._store,
        )
        for partition in range(partitions):
            for name in self._specs:
                self._backends[(name, partition)] = MemoryStore(name, partition)
        self.processor.on_assign(
            [TopicPartition(input_topic, p) for p in range(partitions)], self.ctx
        )

    # ------------------------------------------------------------------ feeding

    def send(
        self,
        value: object,
        key: object = None,
        *,
        topic: str | None = None,
        partition: int | None = None,
        timestamp: int | None = None,
        headers: Headers | None = None,
    ) -> None:
        """Process one record (serialized, then deserialized, as from Kafka)."""
        self.send_raw(
            self._value_serde.serialize(value),
            self._key_serde.serialize(key),
            topic=topic,
            partition=partition,
            timestamp=timestamp,
            headers=headers,
        )

    def send_raw(
        self,
        raw_value: bytes | None,
        raw_key: bytes | None = None,
        *,
        topic: str | None = None,
        partition: int | None = None,
        timestamp: int | None = None,
        headers: Headers | None = None,
    ) -> None:
        """Process one record given as the bytes Kafka holds (e.g. malformed JSON): the
        application's serdes deserialize it and ``processing_error_policy`` applies."""
        topic = topic or self.input_topic
        if partition is None:
            partition = zlib.crc32(raw_key or b"") % self.partitions if raw_key else 0
        offset = self._offsets[(topic, partition)]
        self._offsets[(topic, partition)] = offset + 1
        ts = timestamp if timestamp is not None else int(time.time() * 1000)
        self._pending = []
        try:
            record = Record(
                self._key_serde.deserialize(raw_key),
                self._value_serde.deserialize(raw_value),
                topic,
                partition,
                offset,
                ts,
                headers,
            )
            self.ctx.record = record
            self.processor.process(record, self.ctx)
        except (ConfigError, StateError):
            # A programming error (an undeclared store), not a bad record: as in
            # the engine, no policy applies.
            self._abort()
            raise
        except Exception as exc:
            self._abort()
            self._apply_policy(exc, topic, partition, offset, raw_key, raw_value, headers)
            return
        finally:
            self.ctx.record = None
        self._commit()

    def send_many(self, records: Iterable[tuple[object, object]]) -> None:
        """``send(value, key)`` for each ``(key, value)`` pair."""
        for key, value in records:
            self.send(value, key)

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
        """Committed contents of store ``name`` (all partitions merged if None)."""
        if name not in self._specs:
            raise KeyError(f"no store {name!r}; declared: {sorted(self._specs)}")
        key_serde, value_serde = self._specs[name].serdes()
        parts = range(self.partitions) if partition is None else [partition]
        contents: dict[object, object] = {}
        for p in parts:
            for kb, vb in self._backends[(name, p)].iterate():
                contents[_hashable(key_serde.deserialize(kb))] = value_serde.deserialize(vb)
        return contents

    def close(self) -> None:
        """Revoke all partitions and close the processor."""
        self.processor.on_revoke(
            [TopicPartition(self.input_topic, p) for p in range(self.partitions)]
        )
        self.processor.close()

    # ------------------------------------------------------------------ internals

    def _produce(self, topic: str, value: object, key: object, **kwargs: object) -> None:
        headers = kwargs.get("headers")
        partition = kwargs.get("partition")
        raw_key = key if isinstance(key, bytes) or key is None else str(key).encode()
        raw_value = value if isinstance(value, bytes) or value is None else str(value).encode()
        self._pending.append(
            Output(
                topic,
                self._key_serde.deserialize(raw_key),
                self._value_serde.deserialize(raw_value),
                headers,  # type: ignore[arg-type]
                partition,  # type: ignore[arg-type]
                raw_key,
                raw_value,
            )
        )

    def _store(self, name: str, partition: int) -> StoreTransaction:
        txn = self._txns.get((name, partition))
        if txn is not None:
            return txn
        spec = self._specs.get(name)
        if spec is None:
            raise ConfigError(
                f"store {name!r} is not declared in {type(self.processor).__name__}.stores "
                f"(declared: {', '.join(map(repr, self._specs)) or 'none'}); add "
                f"eos.Store({name!r}) to stores",
                "stores",
            )
        key_serde, value_serde = spec.serdes()

        def changelog(key: bytes, value: bytes | None) -> None:
            self.ctx.sends += 1

        txn = StoreTransaction(
            self._backends[(name, partition)],
            key_serde,
            value_serde,
            changelog,
            name=f"{name}[{partition}]",
        )
        self._txns[(name, partition)] = txn
        return txn

    def _commit(self) -> None:
        for output in self._pending:
            self._outputs[output.topic].append(output)
        self._pending = []
        for (name, partition), txn in self._txns.items():
            offset = self._changelog_offsets[(name, partition)] + 1
            self._changelog_offsets[(name, partition)] = offset
            txn.commit(offset)
        self._txns.clear()

    def _abort(self) -> None:
        self._pending = []
        for txn in self._txns.values():
            txn.abort()
        self._txns.clear()

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
            Output(dlq, raw_key, raw_value, dlq_headers, None, raw_key, raw_value)
        )


def _hashable(value: object) -> object:
    if isinstance(value, list):
        return tuple(_hashable(v) for v in value)
    if isinstance(value, dict):
        return tuple(sorted((k, _hashable(v)) for k, v in value.items()))
    return value
