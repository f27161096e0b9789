"""Reading Kafka for :mod:`eos.audit`: partitions, committed offsets, windows, bounded reads."""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable, Iterable, Mapping
from contextlib import closing
from typing import Any

from confluent_kafka import Consumer, KafkaError, KafkaException, TopicPartition

from eos.config import _CONNECTION_KEYS, _CONNECTION_PREFIXES, ClientValue
from eos.errors import ConfigError

__all__ = ["client_settings", "committed_offsets", "partitions", "read_window", "windows"]

TP = tuple[str, int]
Window = tuple[int, int]
Progress = Callable[[str, int, int, bool], None]
"""``progress(what, records read, offsets to read, done)``: about once a second, and
once with ``done=True`` at the end (offsets count transaction markers too)."""


def client_settings(props: Mapping[str, str]) -> dict[str, ClientValue]:
    """The connection settings (security, TLS, SASL) of an application's properties:
    unprefixed ones, then ``consumer.``-prefixed ones, which win."""
    settings: dict[str, ClientValue] = {}
    for prefix in ("", "consumer."):
        for key, value in props.items():
            if not key.startswith(prefix):
                continue
            name = key[len(prefix) :]
            if name in _CONNECTION_KEYS or name.startswith(_CONNECTION_PREFIXES):
                settings[name] = value.strip()
    return settings


def partitions(consumer: Consumer, topics: Iterable[str], bootstrap: str) -> list[TP]:
    try:
        metadata = consumer.list_topics(timeout=15)
    except KafkaException as exc:
        raise ConfigError(
            f"cannot reach Kafka at {bootstrap}: {exc.args[0]}", "bootstrap_servers"
        ) from exc
    found: list[TP] = []
    for topic in topics:
        meta = metadata.topics.get(topic)
        if meta is None or meta.error is not None:
            raise ConfigError(f"topic {topic!r} does not exist at {bootstrap}", "topics")
        found += [(topic, p) for p in sorted(meta.partitions)]
    return found


def committed_offsets(base: Mapping[str, Any], group: str, tps: list[TP]) -> dict[TP, int]:
    """The committed offsets of ``group`` (0 where it committed none)."""
    with closing(Consumer({**base, "group.id": group, "enable.auto.commit": False})) as c:
        answer = c.committed([TopicPartition(t, p) for t, p in tps], timeout=15)
    return {(tp.topic, tp.partition): max(tp.offset, 0) for tp in answer}


def windows(
    consumer: Consumer, tps: list[TP], from_timestamp_ms: int | None, timeout_s: float
) -> dict[TP, Window]:
    """``(start, end)`` per partition: the low watermark (or the first offset at or
    after the timestamp) and the high watermark, asked as a read_uncommitted client
    (a read_committed one answers the last stable offset)."""
    ends: dict[TP, Window] = {}
    deadline = time.monotonic() + timeout_s
    for topic, partition in tps:
        while True:
            low, high = consumer.get_watermark_offsets(TopicPartition(topic, partition), 15)
            if low >= 0 and high >= 0:
                break
            if time.monotonic() > deadline:  # no leader (a failover) for too long
                raise TimeoutError(f"no watermarks for {topic}/{partition} in {timeout_s:.0f}s")
            time.sleep(0.5)
        ends[(topic, partition)] = (low, high)
    if from_timestamp_ms is not None and tps:
        asked = [TopicPartition(t, p, from_timestamp_ms) for t, p in tps]
        for tp in consumer.offsets_for_times(asked, timeout=15):
            low, high = ends[(tp.topic, tp.partition)]
            start = high if tp.offset < 0 else max(tp.offset, low)
            ends[(tp.topic, tp.partition)] = (start, high)
    return ends


def read_window(
    base: Mapping[str, Any],
    windows: Mapping[TP, Window],
    handle: Callable[[Any], None],
    what: str,
    timeout_s: float,
    progress: Progress | None,
) -> None:
    """Hand every committed record of ``windows`` to ``handle``, each partition in order.

    A partition is done at an end-of-partition event at or past its end, or at
    a record at or past it (records after the end are not handed on: they
    were written after the audit began).
    """
    todo = {tp: w for tp, w in windows.items() if w[1] > w[0]}
    total = sum(end - start for start, end in todo.values())
    if not todo:
        if progress is not None:
            progress(what, 0, 0, True)
        return
    consumer = Consumer(
        {
            **base,
            "group.id": f"eos-verify-{uuid.uuid4().hex[:12]}",
            "isolation.level": "read_committed",
            "enable.auto.commit": False,
            "enable.partition.eof": True,
            "auto.offset.reset": "earliest",
        }
    )
    read = 0
    with closing(consumer):
        consumer.assign([TopicPartition(t, p, w[0]) for (t, p), w in todo.items()])
        shown = moved = time.monotonic()
        while todo:
            messages: list[Any] = consumer.consume(10_000, 0.5)
            now = time.monotonic()
            if messages:
                moved = now
            elif now - moved > timeout_s:
                stuck = ", ".join(f"{t}/{p}" for t, p in sorted(todo))
                raise TimeoutError(
                    f"reading {what}: no progress for {timeout_s:.0f}s on {stuck}; a "
                    "read_committed reader waits behind an open transaction (see "
                    "docs/troubleshooting.md)"
                )
            for msg in messages:
                error = msg.error()
                tp = (msg.topic(), msg.partition())
                window = todo.get(tp)
                if error is not None:
                    if error.code() != KafkaError._PARTITION_EOF:
                        raise KafkaException(error)
                    if window is not None and msg.offset() >= window[1]:
                        del todo[tp]
                        consumer.pause([TopicPartition(*tp)])
                    continue
                if window is None:
                    continue
                offset = msg.offset()
                if offset >= window[1]:
                    del todo[tp]
                    consumer.pause([TopicPartition(*tp)])
                    continue
                handle(msg)
                read += 1
                if offset == window[1] - 1:
                    del todo[tp]
                    consumer.pause([TopicPartition(*tp)])
            if progress is not None and (now - shown >= 1.0 or not todo):
                shown = now
                progress(what, read, total, not todo)
