"""Small Kafka helpers for tests, examples and benchmarks.

Create uniquely named topics, produce test records, and read a topic back to
its end with a ``read_committed`` (or ``read_uncommitted``) consumer, which is
how every guarantee in this project is checked.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from confluent_kafka import Consumer, KafkaError, KafkaException, Producer, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic  # type: ignore[attr-defined]

__all__ = [
    "ReadRecord",
    "committed_offsets",
    "consumable_ends",
    "create_topic",
    "produce",
    "read_topic",
    "unique_name",
    "wait_caught_up",
    "wait_no_open_transactions",
    "watermarks",
]


KEEP_EVERY_RECORD: Mapping[str, str] = {"retention.ms": "-1"}
"""Topic settings of :func:`create_topic` unless overridden: no time retention."""


@dataclass(frozen=True, slots=True)
class ReadRecord:
    """One record read back from a topic."""

    topic: str
    partition: int
    offset: int
    key: bytes | None
    value: bytes | None
    headers: tuple[tuple[str, bytes | None], ...]
    timestamp: int


def unique_name(prefix: str = "t") -> str:
    """A topic or group name no other test uses."""
    return f"{prefix}-{uuid.uuid4().hex[:10]}"


def create_topic(
    bootstrap_servers: str,
    name: str,
    partitions: int = 1,
    replication_factor: int = 1,
    config: Mapping[str, str] | None = None,
    timeout: float = 30.0,
) -> str:
    """Create ``name`` and wait until its leaders are known; return the name.

    The topic keeps its records whatever their timestamps (``retention.ms=-1``
    unless ``config`` sets it): tests produce fixed timestamps in the past, and
    the broker's time retention deletes such records at its next check (every
    five minutes by default), before the application or the test read them.
    """
    admin = AdminClient({"bootstrap.servers": bootstrap_servers})
    settings = {**KEEP_EVERY_RECORD, **(config or {})}
    futures = admin.create_topics(
        [NewTopic(name, partitions, replication_factor, config=settings)],
        operation_timeout=timeout,
    )
    for future in futures.values():
        future.result(timeout)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        topic = admin.list_topics(name, timeout=5).topics.get(name)
        if (
            topic is not None
            and topic.error is None
            and len(topic.partitions) == partitions
            and all(p.leader >= 0 for p in topic.partitions.values())
        ):
            return name
        time.sleep(0.1)
    raise TimeoutError(f"topic {name} has no leaders after {timeout}s")


def produce(
    bootstrap_servers: str,
    topic: str,
    records: Iterable[tuple[bytes | str | None, bytes | str | None]],
    *,
    partition: int | None = None,
    config: Mapping[str, object] | None = None,
) -> int:
    """Produce ``(key, value)`` pairs (idempotent, acks=all) and flush; return the count."""
    settings: dict[str, object] = {
        "bootstrap.servers": bootstrap_servers,
        "enable.idempotence": True,
        "linger.ms": 5,
    }
    settings.update(config or {})
    producer = Producer(settings)
    failures: list[KafkaError] = []

    def on_delivery(error: KafkaError | None, _msg: object) -> None:
        if error is not None:
            failures.append(error)

    count = 0
    for key, value in records:
        while True:
            try:
                if partition is None:
                    producer.produce(topic, value, key, on_delivery=on_delivery)
                else:
                    producer.produce(topic, value, key, partition, on_delivery=on_delivery)
                break
            except BufferError:
                producer.poll(0.1)
        count += 1
        if count % 10000 == 0:
            producer.poll(0)
    remaining = producer.flush(60)
    if remaining or failures:
        raise KafkaException(failures[0] if failures else KafkaError(KafkaError._MSG_TIMED_OUT))
    return count


def watermarks(
    bootstrap_servers: str,
    topic: str,
    *,
    timeout: float = 30.0,
    config: Mapping[str, object] | None = None,
) -> dict[int, tuple[int, int]]:
    """``{partition: (low, high)}`` of ``topic``: the true high watermark.

    Asked as a ``read_uncommitted`` client: a ``read_committed`` one reports
    the last stable offset, which an open transaction holds back. Retries
    while a partition has no leader (during a failover the answer is -1001).
    """
    consumer = Consumer(
        {
            **(config or {}),
            "bootstrap.servers": bootstrap_servers,
            "group.id": unique_name("wm"),
            "isolation.level": "read_uncommitted",
        }
    )
    deadline = time.monotonic() + timeout
    try:
        while True:
            metadata = consumer.list_topics(topic, timeout=10).topics[topic]
            marks: dict[int, tuple[int, int]] = {}
            try:
                for p in metadata.partitions:
                    low, high = consumer.get_watermark_offsets(TopicPartition(topic, p), timeout=10)
                    marks[p] = (low, high)
            except KafkaException:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.5)
                continue
            if all(low >= 0 and high >= 0 for low, high in marks.values()):
                return marks
            if time.monotonic() > deadline:
                raise TimeoutError(f"no valid watermarks for {topic}: {marks}")
            time.sleep(0.5)
    finally:
        consumer.close()


def read_topic(
    bootstrap_servers: str,
    topic: str,
    *,
    isolation_level: str = "read_committed",
    timeout: float = 60.0,
    config: Mapping[str, object] | None = None,
) -> list[ReadRecord]:
    """Read every partition of ``topic`` from the start to its current end.

    The end is each partition's high watermark taken now; a partition is done
    when the consumer reports end-of-partition at or past it (transaction
    markers take offsets, so the last data record is not at ``high - 1``).

    Raises:
        TimeoutError: the end was not reached in ``timeout`` seconds (for
            ``read_committed``, an open transaction holds the end back).
    """
    ends = {
        p: high for p, (_low, high) in watermarks(bootstrap_servers, topic, config=config).items()
    }
    consumer = Consumer(
        {
            **(config or {}),
            "bootstrap.servers": bootstrap_servers,
            "group.id": unique_name("reader"),
            "isolation.level": isolation_level,
            "enable.auto.commit": False,
            "enable.partition.eof": True,
            "auto.offset.reset": "earliest",
        }
    )
    records: list[ReadRecord] = []
    pending = {p for p, high in ends.items() if high > 0}
    try:
        consumer.assign([TopicPartition(topic, p, 0) for p in pending])
        deadline = time.monotonic() + timeout
        while pending:
            if time.monotonic() > deadline:
                raise TimeoutError(
                    f"read_topic({topic}) did not reach the end of partitions {sorted(pending)} "
                    f"in {timeout}s"
                )
            for msg in consumer.consume(1000, 0.5):
                error = msg.error()
                partition = msg.partition() or 0
                offset = msg.offset() or 0
                if error is not None:
                    if error.code() == KafkaError._PARTITION_EOF:
                        if offset >= ends[partition]:
                            pending.discard(partition)
                        continue
                    raise KafkaException(error)
                headers = msg.headers() or []
                records.append(
                    ReadRecord(
                        topic,
                        partition,
                        offset,
                        msg.key(),
                        msg.value(),
                        tuple(headers if isinstance(headers, list) else headers.items()),  # type: ignore[arg-type]
                        msg.timestamp()[1],
                    )
                )
    finally:
        consumer.close()
    records.sort(key=lambda r: (r.partition, r.offset))
    return records


_COORDINATOR_ERRORS = frozenset(
    (
        KafkaError.NOT_COORDINATOR,
        KafkaError.COORDINATOR_LOAD_IN_PROGRESS,
        KafkaError.COORDINATOR_NOT_AVAILABLE,
        KafkaError._TIMED_OUT,
        KafkaError._TRANSPORT,
    )
)


def committed_offsets(
    bootstrap_servers: str,
    group: str,
    topic: str,
    *,
    timeout: float = 60.0,
    config: Mapping[str, object] | None = None,
) -> dict[int, int]:
    """``{partition: committed offset}`` of consumer group ``group`` on ``topic`` (-1 if none).

    Retries for up to ``timeout`` seconds while the coordinator is loading or while
    transactional offsets are pending (a dead producer's open transaction holds them
    until it is aborted). ``config``: extra client settings (security) for the reader.
    """
    consumer = Consumer(
        {**(config or {}), "bootstrap.servers": bootstrap_servers, "group.id": group}
    )
    deadline = time.monotonic() + timeout
    try:
        partitions = consumer.list_topics(topic, timeout=10).topics[topic].partitions
        while True:
            try:
                committed = consumer.committed(
                    [TopicPartition(topic, p) for p in partitions],
                    timeout=max(1.0, min(10.0, deadline - time.monotonic())),
                )
                return {tp.partition: tp.offset if tp.offset >= 0 else -1 for tp in committed}
            except KafkaException as exc:
                # NOT_COORDINATOR / COORDINATOR_LOAD_IN_PROGRESS while a fresh
                # broker loads the group coordinator, or _TIMED_OUT while a dead
                # producer's pending offsets hold the answer back: ask again.
                error = exc.args[0]
                transient = (
                    error.retriable()
                    or error.code() in _COORDINATOR_ERRORS
                    or error.code() == KafkaError._TIMED_OUT
                )
                if not transient or time.monotonic() > deadline:
                    raise
                time.sleep(0.25)
    finally:
        consumer.close()


def consumable_ends(bootstrap_servers: str, topic: str, *, window: int = 1000) -> dict[int, int]:
    """``{partition: offset after the last record a read_committed consumer can see}``.

    That is where a consumer group that processed everything has committed.
    It differs from the high watermark when the topic was written with
    transactions: commit markers (and aborted records) at the end take offsets
    that no consumer ever commits past. Found by reading the last ``window``
    offsets of each partition.
    """
    ends: dict[int, int] = {}
    marks = watermarks(bootstrap_servers, topic)
    consumer = Consumer(
        {
            "bootstrap.servers": bootstrap_servers,
            "group.id": unique_name("ends"),
            "isolation.level": "read_committed",
            "enable.auto.commit": False,
            "enable.partition.eof": True,
        }
    )
    try:
        for partition, (low, high) in marks.items():
            if high <= low:
                ends[partition] = high
                continue
            consumer.assign([TopicPartition(topic, partition, max(low, high - window))])
            last = -1
            deadline = time.monotonic() + 30
            while time.monotonic() < deadline:
                msg = consumer.poll(1.0)
                if msg is None:
                    continue
                error = msg.error()
                if error is not None:
                    if error.code() == KafkaError._PARTITION_EOF:
                        if (msg.offset() or 0) >= high:
                            break
                        continue
                    raise KafkaException(error)
                last = msg.offset() or 0
            ends[partition] = last + 1 if last >= 0 else max(low, high - window)
    finally:
        consumer.close()
    return ends


def wait_caught_up(
    bootstrap_servers: str, group: str, topic: str, *, timeout: float = 120.0
) -> None:
    """Block until ``group`` has committed past the last visible record of every partition.

    Works for topics written with or without transactions (see
    :func:`consumable_ends`).
    """
    deadline = time.monotonic() + timeout
    previous: dict[int, int] | None = None
    ends: dict[int, int] = {}
    while True:
        marks = watermarks(bootstrap_servers, topic)
        committed = committed_offsets(
            bootstrap_servers, group, topic, timeout=max(10.0, deadline - time.monotonic())
        )
        if all(committed.get(p, -1) >= high for p, (_low, high) in marks.items() if high > 0):
            return
        if committed == previous:
            # Stalled below the high watermark: caught up if only commit markers
            # or aborted records remain.
            ends = consumable_ends(bootstrap_servers, topic)
            if all(committed.get(p, -1) >= end for p, end in ends.items() if end > 0):
                return
        previous = committed
        if time.monotonic() > deadline:
            raise TimeoutError(f"group {group} not caught up on {topic}: {committed} vs {ends}")
        time.sleep(0.25)


def wait_no_open_transactions(
    bootstrap_servers: str, topic: str, *, timeout: float = 60.0
) -> float:
    """Block until no transaction is open on ``topic``; return the seconds waited.

    "Open" means the last stable offset (what a ``read_committed`` client sees
    as the end) is below the high watermark. Commit markers are written just
    after ``commit_transaction()`` returns, and a killed producer's transaction
    stays open until its successor fences it or the broker times it out.
    """
    started = time.monotonic()
    while True:
        stable = _high_offsets(bootstrap_servers, topic, "read_committed")
        high = _high_offsets(bootstrap_servers, topic, "read_uncommitted")
        if stable == high:
            return time.monotonic() - started
        if time.monotonic() - started > timeout:
            raise TimeoutError(f"{topic}: open transactions hold {stable} below {high}")
        time.sleep(0.25)


def _high_offsets(bootstrap_servers: str, topic: str, isolation_level: str) -> dict[int, int]:
    consumer = Consumer(
        {
            "bootstrap.servers": bootstrap_servers,
            "group.id": unique_name("ends"),
            "isolation.level": isolation_level,
        }
    )
    try:
        partitions = consumer.list_topics(topic, timeout=10).topics[topic].partitions
        return {
            p: consumer.get_watermark_offsets(TopicPartition(topic, p), timeout=10)[1]
            for p in partitions
        }
    finally:
        consumer.close()
