"""Lineage headers (``lineage_headers=True``): every output names the input record it came from.

``eos verify`` (:mod:`eos.audit`) reads them to prove or disprove exactly-once from
outside. A context made with ``lineage=True`` (the engine does it when the
setting is on, the async runner for each record, the TestDriver on request) is a
:class:`LineageContext`; without it ``Context.send`` runs the code it always ran.
"""

from __future__ import annotations

from typing import Any, Final

from eos.processor import Context
from eos.record import Headers, K, V

__all__ = ["LINEAGE_HEADER", "LineageContext", "with_lineage"]

LINEAGE_HEADER: Final = "eos.lineage"
"""The header ``lineage_headers=True`` puts on every record a processor sends: the
ASCII text ``<source topic>/<source partition>/<source offset>/<n>``, ``n``
counting the outputs of that input record from 0 in the order they were sent
(to any topic). ``eos verify`` reads it (see docs/verify.md)."""

_REPARTITION_SUFFIX: Final = "-repartition"
"""A DSL repartition topic is ``<application_id>-<name>-repartition``
(:func:`eos._dsl_nodes.repartition_topic`): internal, so it gets no lineage header."""


class LineageContext(Context[K, V]):
    """A context whose sends carry :data:`LINEAGE_HEADER` (``lineage_headers=True``).

    ``Context(...)`` makes one when lineage is on (see ``Context.__new__``); a
    subclass of the context class asked for (the async runner's per-record
    context too, see :func:`_with_lineage`). Each send for an input record gets
    ``<topic>/<partition>/<offset>/<n>``; ``n`` moves on only when the send
    succeeded, so a send refused by a serializer leaves no gap. Sends with no
    current record (a timer, a punctuation, a window's final emission) and
    sends to a repartition topic get no header.
    """

    __slots__ = ()
    stamps_lineage = True

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
        stamped = self._stamp(topic, headers)
        if stamped is None:
            Context.send(
                self,
                topic,
                value,
                key=key,
                headers=headers,
                partition=partition,
                timestamp=timestamp,
            )
            return
        # Context.send's serialization, then straight to _emit (a send with headers
        # goes there anyway).
        kb, vb = (key, value) if self._raw else self._serialized(topic, key, value)
        self.sends += 1
        self._emit(topic, vb, kb, stamped, partition, timestamp)
        self._lineage_n += 1

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
        stamped = self._stamp(topic, headers)
        if stamped is None:
            Context.send_raw(
                self,
                topic,
                value,
                key=key,
                headers=headers,
                partition=partition,
                timestamp=timestamp,
            )
            return
        self.sends += 1
        self._emit(topic, value, key, stamped, partition, timestamp)
        self._lineage_n += 1

    def _stamp(self, topic: str, headers: Headers | dict[str, bytes] | None) -> Headers | None:
        """``headers`` plus this send's lineage header, or None if it gets none.

        A lineage header among ``headers`` (an input's, forwarded) is replaced,
        never doubled.
        """
        record = self.record
        if record is None or (
            topic.endswith(_REPARTITION_SUFFIX) and topic.startswith(f"{self.application_id}-")
        ):
            return None
        if record is not self._lineage_of:
            # A new input record (the engine makes a Record per message, a replay
            # after an abort included): its outputs count from 0.
            self._lineage_of = record
            self._lineage_n = 0
            self._lineage_source = f"{record.topic}/{record.partition}/{record.offset}/".encode()
        stamp = (LINEAGE_HEADER, self._lineage_source + str(self._lineage_n).encode())
        if headers is None:
            return [stamp]
        given = headers.items() if isinstance(headers, dict) else headers
        return [*(h for h in given if h[0] != LINEAGE_HEADER), stamp]


_LINEAGE_CLASSES: dict[type[Any], type[Any]] = {}


def with_lineage(cls: type[Any]) -> type[Any]:
    """``cls`` with lineage sends: :class:`LineageContext` for ``Context``, else a
    subclass of both, made once (it adds no slots, so the layouts agree)."""
    if issubclass(cls, LineageContext):
        return cls
    made = _LINEAGE_CLASSES.get(cls)
    if made is None:
        made = (
            LineageContext
            if cls is Context
            else type(f"Lineage{cls.__name__}", (LineageContext, cls), {"__slots__": ()})
        )
        _LINEAGE_CLASSES[cls] = made
    return made
