"""The record a processor sees, and the topic-partition it came from.

Both are named tuples: immutable, without a ``__dict__``, and cheap to build
(one ``tuple.__new__``), which matters because the engine builds one
:class:`Record` per consumed message.

:class:`Record` is generic in its key and value types, ``Record[str, dict]``.
Generic named tuples need Python 3.11 in :mod:`typing`; eos supports 3.10, so
it takes ``NamedTuple`` from ``typing_extensions``, which backports them. The
class is the same tuple subclass either way: subscripting it
(``Record[str, int]``) is for the type checker and costs nothing per record.
"""

from __future__ import annotations

from typing import Generic, NamedTuple

from typing_extensions import NamedTuple as GenericNamedTuple
from typing_extensions import TypeVar

__all__ = ["Headers", "Record", "TopicPartition", "dead_letter_headers"]

Headers = list[tuple[str, bytes | None]]

K = TypeVar("K", default=object)
"""The type of a record's key. Unparameterised uses (``eos.Record``) mean ``object``."""
V = TypeVar("V", default=object)
"""The type of a record's value. Unparameterised uses mean ``object``."""


class TopicPartition(NamedTuple):
    """A topic and a partition number."""

    topic: str
    partition: int

    def __str__(self) -> str:
        return f"{self.topic}[{self.partition}]"


class Record(GenericNamedTuple, Generic[K, V]):
    """One consumed record, key and value already deserialized.

    ``Record[K, V]`` names the types the input's serdes decode to, e.g.
    ``Record[str, dict[str, object]]`` for string keys and JSON objects. As in
    Kafka's own ``Deserializer<T>``, the type names what non-null bytes decode
    to: a null key or a tombstone arrives as ``None`` whatever ``K`` and ``V``
    are; write ``Record[str | None, ...]`` to have the type checker make you
    handle it.

    Attributes:
        key: Deserialized key (None for a null key).
        value: Deserialized value (None for a null value / tombstone).
        topic: Source topic.
        partition: Source partition.
        offset: Offset in the source partition.
        timestamp: Record timestamp in milliseconds since the epoch.
        headers: Record headers as ``(name, value)`` pairs, or None.
    """

    key: K
    value: V
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
