"""Producing outputs, changelog and dead-letter records, and pinning failed deliveries on records.

On the fast path the context produces straight into the producer with no
per-record callback: a failed delivery fails ``commit_transaction`` (or the
flush, without transactions). When a batch fails for a reason that may be one
record's fault, the batch is replayed "carefully": every output, changelog
and dead-letter record carries a delivery report naming the input record it
came from, so the next failure is attributed exactly. If librdkafka rejected
a whole request of several records (it never splits a rejected request), the
replay goes one record per request. :meth:`Outputs.diagnose` turns what the
reports say into a :class:`Diagnosis`.

Only record-specific errors blame a record (:data:`eos._kafka_errors.Cause.RECORD`);
timeouts and unavailability never do.

Threading: the processing thread only.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from confluent_kafka import KafkaError, KafkaException

from eos._batch import TP, Source
from eos._guarantee import Guarantee
from eos._kafka_errors import Cause, cause_of, error_name
from eos.errors import ProduceError
from eos.processor import Context
from eos.record import dead_letter_headers

__all__ = ["Diagnosis", "OutputRejected", "Outputs"]

log = logging.getLogger("eos.engine")

ChangelogProduce = Callable[[str, "bytes | None", bytes, int, Callable[..., None]], None]
"""``produce(topic, value, key, partition, on_delivery)``, positional."""


class OutputRejected(ProduceError):
    """Internal: in a one-record-per-request replay, the broker rejected an output of ``source``."""

    def __init__(self, source: Source, error: KafkaError, topic: str) -> None:
        super().__init__(topic, KafkaException(error))
        self.source = source


@dataclass
class Diagnosis:
    """What the delivery reports and the failed call say about a failed batch.

    Attributes:
        cause: The cause the engine acts on (see :mod:`eos._kafka_errors`).
        error: The error that shows it (None if nothing was reported).
        topic: The topic of that error's message, when a report named it.
        blamed: Input records whose output or changelog record the broker
            rejected for a record-specific reason.
        undeliverable: Input records whose dead-letter copy was rejected so.
    """

    cause: Cause
    error: KafkaError | None = None
    topic: str | None = None
    blamed: dict[Source, KafkaError] = field(default_factory=dict)
    undeliverable: dict[Source, KafkaError] = field(default_factory=dict)

    def describe(self) -> str:
        where = f" (topic {self.topic})" if self.topic else ""
        return f"{error_name(self.error) if self.error else 'no error reported'}{where}"


class Outputs:
    """Produce paths for one engine, and the attribution of delivery failures.

    Args:
        guarantee: Whose producer to produce with (it may be renewed).
        dead_letter_topic: The dead-letter topic, if any.
        application_id: For the dead-letter headers.
        flush_timeout_s: How long a one-record-per-request replay waits per record.
    """

    def __init__(
        self,
        guarantee: Guarantee,
        *,
        dead_letter_topic: str | None,
        application_id: str,
        flush_timeout_s: float,
    ) -> None:
        self.guarantee = guarantee
        self.dead_letter_topic = dead_letter_topic
        self.application_id = application_id
        self.flush_timeout_s = flush_timeout_s
        self.ctx: Context | None = None
        # Partitions replayed with per-output delivery reports, up to this position.
        self.careful: dict[TP, int] = {}
        self.one_by_one = False
        # The first failed delivery per input record (careful replay only).
        self._failures: dict[Source, tuple[KafkaError, str]] = {}
        # Failed deliveries seen without an input record (changelog callbacks).
        self._unattributed: list[tuple[KafkaError, str | None]] = []
        # Why each record of the batch was dead-lettered (named if its copy fails).
        self._dead_lettered: dict[Source, BaseException] = {}

    # -- produce paths -------------------------------------------------------

    def produce_for_batch(self) -> Callable[..., None]:
        """What ``ctx.send`` produces with for the next batch: the producer's own
        ``produce`` on the fast path, or the attributing wrapper in a careful replay."""
        return self._careful_produce if self.careful else self.guarantee.producer.produce

    def changelog_produce(self) -> ChangelogProduce:
        """What a store's changelog writer produces with (taken once per store transaction)."""
        if self.careful:
            return self._careful_changelog
        produce: ChangelogProduce = self.guarantee.producer.produce
        return produce

    def poll(self, timeout: float = 0.0) -> None:
        """Serve delivery reports."""
        self.guarantee.producer.poll(timeout)

    def _source(self) -> Source | None:
        record = self.ctx.record if self.ctx is not None else None
        return None if record is None else (record.topic, record.partition, record.offset)

    def _careful_produce(self, topic: str, value: Any, key: Any, **kwargs: Any) -> None:
        source = self._source()
        if source is not None:
            kwargs["on_delivery"] = functools.partial(self._on_careful_delivery, source)
        self.guarantee.producer.produce(topic, value, key, **kwargs)
        if source is not None and self.one_by_one:
            self._check_alone(source, topic)

    def _careful_changelog(
        self,
        topic: str,
        value: bytes | None,
        key: bytes,
        partition: int,
        on_delivery: Callable[..., None],
    ) -> None:
        source = self._source()
        callback = on_delivery
        if source is not None:
            attribute = functools.partial(self._on_careful_delivery, source)

            def callback(error: KafkaError | None, msg: Any) -> None:
                on_delivery(error, msg)
                attribute(error, msg)

        self.guarantee.producer.produce(topic, value, key, partition, callback)
        if source is not None and self.one_by_one:
            self._check_alone(source, topic)

    def _check_alone(self, source: Source, topic: str) -> None:
        """One record per request: wait for this record's report; raise if it was rejected."""
        self.guarantee.producer.flush(self.flush_timeout_s)
        failure = self._failures.get(source)
        if failure is not None and cause_of(failure[0]) is Cause.RECORD:
            raise OutputRejected(source, failure[0], failure[1])

    def _on_careful_delivery(self, source: Source, error: KafkaError | None, msg: Any) -> None:
        if error is not None:
            if source not in self._failures:
                self._failures[source] = (error, msg.topic() or "?")
            self.guarantee.delivery_failed(error)

    def on_failed_delivery(self, error: KafkaError, msg: Any) -> None:
        """A failure seen by a callback that does not know the input record (a changelog
        record's own callback)."""
        topic = msg.topic() if msg is not None else None
        self._unattributed.append((error, topic))
        self.guarantee.delivery_failed(error)

    def dead_letter(self, msg: Any, exc: BaseException) -> None:
        """Produce ``msg``'s original bytes with error headers to the dead-letter topic.

        Raises:
            ProduceError: The producer refused the record at once (for example
                larger than ``message.max.bytes``).
            OutputRejected: One-record-per-request replay: the broker rejected it.
        """
        dlq = self.dead_letter_topic
        if dlq is None:  # guarded by Config
            raise RuntimeError("dead_letter policy without a dead-letter topic")
        topic, partition, offset = msg.topic(), msg.partition(), msg.offset()
        source: Source = (topic, partition, offset)
        self._dead_lettered[source] = exc
        headers = dead_letter_headers(
            exc, topic, partition, offset, self.application_id, msg.headers()
        )
        kwargs: dict[str, Any] = {"headers": headers}
        if self.careful:
            kwargs["on_delivery"] = functools.partial(self._on_careful_delivery, source)
        producer = self.guarantee.producer
        while True:
            try:
                producer.produce(dlq, msg.value(), msg.key(), **kwargs)
                break
            except BufferError:
                producer.poll(0.05)
            except (KafkaException, TypeError, ValueError) as error:
                raise ProduceError(dlq, error) from error
        if self.careful and self.one_by_one:
            self._check_alone(source, dlq)

    # -- after a failure -----------------------------------------------------

    def diagnose(self, failed: object) -> Diagnosis:
        """What caused the batch to fail, from the delivery reports and ``failed``
        (the error of the call that failed, usually ``commit_transaction``)."""
        self.poll()  # serve the reports the failed call did not
        reports: list[tuple[KafkaError, str | None]] = list(self._unattributed)
        blamed: dict[Source, KafkaError] = {}
        undeliverable: dict[Source, KafkaError] = {}
        for source, (failure, failed_topic) in self._failures.items():
            reports.append((failure, failed_topic))
            if cause_of(failure) is Cause.RECORD:
                if failed_topic == self.dead_letter_topic:
                    undeliverable[source] = failure
                else:
                    blamed[source] = failure
        if isinstance(failed, KafkaError):
            reports.append((failed, _topic_in(failed)))
        causes = [(cause_of(error), error, topic) for error, topic in reports]
        for wanted in (Cause.FENCED, Cause.CONFIG):
            for cause, error, topic in causes:
                if cause is wanted:
                    return Diagnosis(cause, error, topic)
        if blamed or undeliverable:
            if len(blamed) > 1 and not self.one_by_one:
                # librdkafka does not split a request the broker rejects: every
                # record of it reports the error. Replay one record per request.
                log.warning(
                    "%d records' outputs were rejected together; replaying one record "
                    "per request to find which",
                    len(blamed),
                )
                self.one_by_one = True
                first = next(iter(blamed.values()))
                return Diagnosis(Cause.RECORD, first)
            rejected = next(iter({**blamed, **undeliverable}.values()))
            return Diagnosis(Cause.RECORD, rejected, blamed=blamed, undeliverable=undeliverable)
        for wanted in (Cause.OUTAGE, Cause.REBALANCE):
            for cause, error, topic in causes:
                if cause is wanted:
                    return Diagnosis(cause, error, topic)
        if not causes:
            return Diagnosis(Cause.UNKNOWN)
        cause, error, topic = causes[0]
        return Diagnosis(cause if cause is Cause.RECORD else Cause.UNKNOWN, error, topic)

    def replay_carefully(self, positions: Mapping[TP, int]) -> bool:
        """Replay the batch's partitions with per-output delivery reports; False if already."""
        if self.careful:
            return False
        self.careful = dict(positions)
        return True

    def dead_letter_reason(self, source: Source) -> BaseException | None:
        """The error ``source`` was dead-lettered for in this batch, if it was."""
        return self._dead_lettered.get(source)

    def clear(self) -> None:
        """Forget the failures of an aborted batch."""
        self._failures.clear()
        self._unattributed.clear()
        self._dead_lettered.clear()

    def committed(self, positions: Mapping[TP, int]) -> None:
        """A batch committed: partitions past their careful mark are back on the fast path."""
        self.clear()
        if self.careful:
            for tp, position in positions.items():
                mark = self.careful.get(tp)
                if mark is not None and position >= mark:
                    del self.careful[tp]
            if not self.careful:
                self.one_by_one = False

    def drop(self, tps: Iterable[TP]) -> None:
        """Forget partitions that left this instance."""
        for tp in tps:
            self.careful.pop(tp, None)
        if not self.careful:
            self.one_by_one = False


def _topic_in(error: KafkaError) -> str | None:
    """The topic librdkafka names in a produce failure ("ProduceRequest for T [p] ...")."""
    text = error.str()
    marker = "ProduceRequest for "
    start = text.find(marker)
    if start < 0:
        return None
    rest = text[start + len(marker) :]
    end = rest.find(" [")
    return rest[:end] if end > 0 else None
