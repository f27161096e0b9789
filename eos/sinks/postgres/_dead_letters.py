"""Dead-letter copies of a sink's failing records, delivered before the database commit.

The sink's batches are database transactions, not Kafka ones, so a copy
cannot join them. It is produced by an idempotent producer (``acks=all``)
and :meth:`DeadLetters.deliver` waits until every copy of the batch is
acknowledged before the batch's transaction commits: a failing record is
never lost. If the batch then rolls back (an outage, a fenced partition),
its replay dead-letters the record again, so a copy can appear twice in the
dead-letter topic (at least once); its ``eos.source.*`` headers identify it.

Threading: the processing thread only.
"""

from __future__ import annotations

import dataclasses
import logging
import time
from typing import Any

from confluent_kafka import KafkaError, KafkaException, Producer

from eos._stop import StopSignal
from eos.config import Config
from eos.errors import ProcessingError
from eos.record import dead_letter_headers

__all__ = ["DeadLetterFailed", "DeadLetters"]

log = logging.getLogger("eos.sinks.postgres")


class DeadLetterFailed(Exception):
    """Internal: the batch's dead-letter copies were not all delivered."""

    def __init__(self, message: str, *, permanent: bool) -> None:
        super().__init__(message)
        self.permanent = permanent


class DeadLetters:
    """The dead-letter producer of a sink; see the module docstring.

    Args:
        config: For the producer's settings (idempotent, no transactional id).
        topic: The dead-letter topic.
        stop: A stop ends a delivery wait early.
    """

    def __init__(self, config: Config, topic: str, stop: StopSignal) -> None:
        settings = dataclasses.replace(
            config, processing_guarantee="at_least_once"
        ).producer_settings()
        settings["client.id"] = f"{config.transactional_id}-dead-letters"
        settings["on_delivery"] = self._delivered  # type: ignore[assignment]
        self.topic = topic
        self.application_id = config.application_id
        self.timeout_s = config.transaction_timeout_ms / 1000.0
        self.stop = stop
        self.producer = Producer(settings)
        self._waiting = 0
        self._errors: list[KafkaError] = []

    def _delivered(self, error: KafkaError | None, _msg: object) -> None:
        self._waiting -= 1
        if error is not None:
            self._errors.append(error)

    def send(self, msg: Any, exc: BaseException, message: str, sqlstate: str | None) -> None:
        """Queue ``msg``'s original bytes with the error headers (``message`` is the error text)."""
        extra = [("eos.error.sqlstate", sqlstate.encode())] if sqlstate else []
        headers = [
            # The database's own error text (SQLSTATE, message, detail), not psycopg's repr.
            ("eos.error.message", message.encode("utf-8", "replace")[:4096])
            if name == "eos.error.message"
            else (name, value)
            for name, value in dead_letter_headers(
                exc,
                msg.topic(),
                msg.partition(),
                msg.offset(),
                self.application_id,
                [*extra, *(msg.headers() or [])],
            )
        ]
        while True:
            try:
                self.producer.produce(
                    self.topic,
                    msg.value(),
                    msg.key(),
                    headers=headers,  # type: ignore[arg-type]
                )
                break
            except BufferError:
                self.producer.poll(0.1)
            except KafkaException as exc2:
                raise DeadLetterFailed(
                    f"dead-lettering {msg.topic()}[{msg.partition()}]@{msg.offset()} failed: "
                    f"{exc2}",
                    permanent=True,
                ) from exc2
        self._waiting += 1

    def deliver(self) -> None:
        """Wait until every queued copy is acknowledged; raise DeadLetterFailed if one was not."""
        deadline = time.monotonic() + self.timeout_s
        while self._waiting > 0 and time.monotonic() < deadline and not self.stop.overdue():
            self.producer.poll(0.1)
        errors, self._errors = self._errors, []
        waiting, self._waiting = self._waiting, 0
        if waiting:
            self.producer.purge(in_queue=True, in_flight=True, blocking=False)
            self.producer.poll(0)
            raise DeadLetterFailed(
                f"{waiting} dead-letter copies to {self.topic!r} not acknowledged in "
                f"{self.timeout_s:g}s",
                permanent=False,
            )
        if errors:
            first = errors[0]
            permanent = not first.retriable() and first.code() != KafkaError._MSG_TIMED_OUT
            raise DeadLetterFailed(
                f"{len(errors)} dead-letter copies to {self.topic!r} failed (first: {first})",
                permanent=permanent,
            )

    def drop(self) -> None:
        """The batch rolled back: forget what is queued (it is produced again on replay)."""
        self.producer.purge(in_queue=True, in_flight=False, blocking=False)
        self.producer.poll(0)
        self._errors.clear()
        self._waiting = 0

    def close(self) -> None:
        self.producer.flush(5.0)


def failure_error(msg: Any, exc: BaseException, message: str, topic: str) -> ProcessingError:
    """The ProcessingError for a record whose dead-letter copy can never be written."""
    return ProcessingError(
        f"record {msg.topic()}[{msg.partition()}]@{msg.offset()} failed ({message}) and could "
        f"not be dead-lettered to {topic!r}; nothing of its batch was committed",
        topic=msg.topic(),
        partition=msg.partition(),
        offset=msg.offset(),
        cause=exc,
    )
