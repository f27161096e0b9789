"""The record a processor sees, and the topic-partition it came from.

Both are :class:`typing.NamedTuple` subclasses: immutable, without a
``__dict__``, and cheap to build (one ``tuple.__new__``), which matters
because the engine builds one :class:`Record` per consumed message.
"""

from __future__ import annotations

from typing import NamedTuple

__all__ = ["Headers", "Record", "TopicPartition", "dead_letter_headers"]

Headers = list[tuple[str, bytes | None]]


class TopicPartition(NamedTuple):
    """A topic and a partition number."""

    topic: str
    partition: int

    def __str__(self) -> str:
        return f"{self.topic}[{self.partition}]"


class Record(NamedTuple):
    """One consumed record, key and value already deserialized.

    Attributes:
        key: Deserialized key (None for a null key).
        value: Deserialized value (None for a null value / tombstone).
        topic: Source topic.
        partition: Source partition.
        offset: Offset in the source partition.
        timestamp: Record timestamp in milliseconds since the epoch.
        headers: Record headers as ``(name, value)`` pairs, or None.
    """

    key: object
    value: object
    topic: str
    partition: int
    offset: int
    timestamp: int
    headers: Headers | None = None

    @property
    def topic_partition(self) -> TopicPartition:
        """The record's :class:`TopicPartition`."""
        return TopicPartition(self.topic, self.partition)


def dead_letter_headers(
    exc: BaseException,
    topic: str,
    partition: int,
    offset: int,
    application_id: str,
    original: Headers | None = None,
) -> Headers:
    """The headers of a dead-letter record: the error and where the record came from.

    ``eos.error.type``, ``eos.error.message`` (at most 4 KiB),
    ``eos.source.topic``, ``eos.source.partition``, ``eos.source.offset``,
    ``eos.application.id``, then the record's own headers.
    """
    return [
        ("eos.error.type", type(exc).__name__.encode()),
        ("eos.error.message", str(exc).encode("utf-8", "replace")[:4096]),
        ("eos.source.topic", topic.encode()),
        ("eos.source.partition", str(partition).encode()),
        ("eos.source.offset", str(offset).encode()),
        ("eos.application.id", application_id.encode()),
        *(original or []),
    ]
