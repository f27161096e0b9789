"""classify() maps real KafkaError flags to our errors; TransactionalProducer retries only
retriable failures."""

from __future__ import annotations

from collections.abc import Callable

import pytest
from confluent_kafka import KafkaError, KafkaException
from confluent_kafka import TopicPartition as KafkaTopicPartition

import eos._stop
import eos.transaction
from eos._stop import StopRequested, StopSignal
from eos.errors import (
    AbortableTransactionError,
    FatalTransactionError,
    ProducerFencedError,
    RetriableTransactionError,
    TransactionOutcomeUnknownError,
)
from eos.transaction import STEP_S, TransactionalProducer, classify

FENCED_CODES = [
    KafkaError._FENCED,
    KafkaError.PRODUCER_FENCED,
    KafkaError.INVALID_PRODUCER_EPOCH,
]


def _exc(code: int, **flags: bool) -> KafkaException:
    return KafkaException(KafkaError(code, **flags))


@pytest.mark.parametrize("code", FENCED_CODES, ids=lambda c: KafkaError(c).name())
def test_fatal_fenced_codes_are_producer_fenced(code: int) -> None:
    """A fatal error with a fencing code is a ProducerFencedError keeping the KafkaError."""
    error = classify(_exc(code, fatal=True), "commit_transaction")
    assert type(error) is ProducerFencedError
    assert error.kafka_error.code() == code  # type: ignore[attr-defined]
    assert "commit_transaction" in str(error)


def test_fatal_other_code_is_fatal_not_fenced() -> None:
    """A fatal error with any other code is a plain FatalTransactionError."""
    error = classify(_exc(KafkaError._INCONSISTENT, fatal=True), "commit_transaction")
    assert type(error) is FatalTransactionError


def test_fatal_wins_over_the_other_flags() -> None:
    """fatal() is checked first: fatal + abortable + retriable is still fatal."""
    error = classify(
        _exc(KafkaError._FENCED, fatal=True, retriable=True, txn_requires_abort=True), "x"
    )
    assert type(error) is ProducerFencedError


def test_abortable_is_abortable_even_if_retriable() -> None:
    """txn_requires_abort() wins over retriable(): the transaction must be aborted."""
    assert type(classify(_exc(KafkaError._STATE, txn_requires_abort=True), "x")) is (
        AbortableTransactionError
    )
    error = classify(
        _exc(KafkaError.ILLEGAL_GENERATION, txn_requires_abort=True, retriable=True), "x"
    )
    assert type(error) is AbortableTransactionError


def test_retriable_is_retriable() -> None:
    """retriable() alone is a RetriableTransactionError."""
    error = classify(_exc(KafkaError._TIMED_OUT, retriable=True), "send_offsets_to_transaction")
    assert type(error) is RetriableTransactionError


def test_unflagged_error_is_fatal() -> None:
    """An error with no flag set cannot be classified and is treated as fatal."""
    error = classify(_exc(KafkaError.UNKNOWN), "commit_transaction")
    assert type(error) is FatalTransactionError
    assert "unclassified" in str(error)


def test_exception_without_kafka_error_is_fatal() -> None:
    """A KafkaException that carries no KafkaError is fatal, with kafka_error None."""
    error = classify(KafkaException("odd"), "x")
    assert type(error) is FatalTransactionError
    assert error.kafka_error is None


class FakeProducer:
    """Records every transactional call; fails each call with the queued errors first."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, tuple[object, ...]]] = []
        self.failures: dict[str, list[KafkaError]] = {}

    def _method(self, name: str) -> Callable[..., None]:
        def call(*args: object) -> None:
            self.calls.append((name, args))
            queued = self.failures.get(name)
            if queued:
                raise KafkaException(queued.pop(0))

        return call

    def __getattr__(self, name: str) -> Callable[..., None]:
        return self._method(name)


@pytest.fixture(autouse=True)
def _no_sleep(monkeypatch: pytest.MonkeyPatch) -> list[float]:
    slept: list[float] = []
    monkeypatch.setattr(eos.transaction.time, "sleep", slept.append)
    return slept


def test_retriable_send_offsets_is_retried_with_identical_arguments() -> None:
    """A retriable send_offsets failure is retried with the same offsets and metadata (only
    the timeout may shrink towards the deadline)."""
    fake = FakeProducer()
    fake.failures["send_offsets_to_transaction"] = [
        KafkaError(KafkaError._TIMED_OUT, retriable=True),
        KafkaError(KafkaError.COORDINATOR_LOAD_IN_PROGRESS, retriable=True),
    ]
    txn = TransactionalProducer(fake, 30.0, StopSignal(30.0))  # type: ignore[arg-type]
    offsets = [KafkaTopicPartition("in", 0, 10), KafkaTopicPartition("in", 1, 7)]
    metadata = object()
    txn.send_offsets(offsets, metadata)
    calls = [args for name, args in fake.calls if name == "send_offsets_to_transaction"]
    assert len(calls) == 3
    assert all(args[:2] == calls[0][:2] for args in calls)
    assert all(0 < args[2] <= 30.0 for args in calls)
    assert calls[0][1] is metadata and all(args[1] is metadata for args in calls)
    assert [(tp.topic, tp.partition, tp.offset) for tp in calls[0][0]] == [
        ("in", 0, 10),
        ("in", 1, 7),
    ]
    assert not txn.dead


def test_retriable_commit_is_resumed_never_aborted_with_explicit_timeouts() -> None:
    """A commit that keeps timing out retriably is called again (librdkafka resumes it),
    never answered by an abort, and every call passes a bounded timeout, not -1."""
    fake = FakeProducer()
    fake.failures["commit_transaction"] = [
        KafkaError(KafkaError._TIMED_OUT, retriable=True) for _ in range(5)
    ]
    txn = TransactionalProducer(fake, 30.0, StopSignal(30.0))  # type: ignore[arg-type]
    txn.begin()
    txn.commit()
    commits = [args for name, args in fake.calls if name == "commit_transaction"]
    assert len(commits) == 6
    assert all(0 < args[0] <= STEP_S for args in commits), commits
    assert "abort_transaction" not in [name for name, _ in fake.calls]
    assert not txn.open and not txn.dead


def test_retriable_commit_after_the_stop_grace_is_an_unknown_outcome(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Once a stop is overdue, a commit still failing retriably ends with
    TransactionOutcomeUnknownError (not an abort, which librdkafka would refuse)."""
    now = [0.0]
    monkeypatch.setattr(eos.transaction.time, "monotonic", lambda: now[0])
    monkeypatch.setattr(eos._stop.time, "monotonic", lambda: now[0])

    def commit_transaction(timeout: float) -> None:
        now[0] += timeout
        raise KafkaException(KafkaError(KafkaError._TIMED_OUT, retriable=True))

    fake = FakeProducer()
    stop = StopSignal(5.0)
    txn = TransactionalProducer(fake, 30.0, stop)  # type: ignore[arg-type]
    txn.begin()
    fake.commit_transaction = commit_transaction  # type: ignore[method-assign]
    stop.set()
    with pytest.raises(TransactionOutcomeUnknownError, match="shutdown timeout"):
        txn.commit()
    assert 4.0 <= now[0] <= 6.0
    assert "abort_transaction" not in [name for name, _ in fake.calls]


def test_retriable_abort_is_resumed_and_bounded_after_a_stop(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """abort_transaction timing out is called again; after the stop's grace it gives up
    with a FatalTransactionError that says the broker will abort it."""
    now = [0.0]
    monkeypatch.setattr(eos.transaction.time, "monotonic", lambda: now[0])
    monkeypatch.setattr(eos._stop.time, "monotonic", lambda: now[0])
    calls = []

    def abort_transaction(timeout: float) -> None:
        calls.append(timeout)
        now[0] += timeout
        raise KafkaException(KafkaError(KafkaError._TIMED_OUT, retriable=True))

    fake = FakeProducer()
    stop = StopSignal(3.0)
    txn = TransactionalProducer(fake, 30.0, stop)  # type: ignore[arg-type]
    txn.begin()
    fake.abort_transaction = abort_transaction  # type: ignore[method-assign]
    stop.set()
    with pytest.raises(FatalTransactionError, match=r"transaction\.timeout\.ms"):
        txn.abort()
    assert len(calls) >= 3 and not txn.open


def test_init_is_resumed_and_a_stop_unwinds_it() -> None:
    """init_transactions timing out is called again while running; a stop request unwinds
    it with StopRequested (start-up ends cleanly)."""
    fake = FakeProducer()
    fake.failures["init_transactions"] = [
        KafkaError(KafkaError._TIMED_OUT, retriable=True) for _ in range(3)
    ]
    txn = TransactionalProducer(fake, 30.0, StopSignal(30.0))  # type: ignore[arg-type]
    txn.init()
    assert len([c for c in fake.calls if c[0] == "init_transactions"]) == 4
    fake.failures["init_transactions"] = [KafkaError(KafkaError._TIMED_OUT, retriable=True)]
    stop = StopSignal(30.0)
    stop.set()
    txn = TransactionalProducer(fake, 30.0, stop)  # type: ignore[arg-type]
    with pytest.raises(StopRequested):
        txn.init()


def test_abortable_is_raised_at_once_without_retry() -> None:
    """An abortable commit failure is raised on the first call; the producer stays usable."""
    fake = FakeProducer()
    fake.failures["commit_transaction"] = [
        KafkaError(KafkaError.ILLEGAL_GENERATION, txn_requires_abort=True)
    ]
    txn = TransactionalProducer(fake, 30.0, StopSignal(30.0))  # type: ignore[arg-type]
    txn.begin()
    with pytest.raises(AbortableTransactionError):
        txn.commit()
    assert [name for name, _ in fake.calls] == ["begin_transaction", "commit_transaction"]
    assert not txn.dead
    txn.abort()
    assert fake.calls[-1][0] == "abort_transaction"
    assert not txn.open


def test_fatal_marks_the_producer_dead_and_refuses_further_calls() -> None:
    """A fenced commit raises ProducerFencedError once; every later call fails without
    reaching the producer."""
    fake = FakeProducer()
    fake.failures["commit_transaction"] = [KafkaError(KafkaError._FENCED, fatal=True)]
    txn = TransactionalProducer(fake, 30.0, StopSignal(30.0))  # type: ignore[arg-type]
    txn.begin()
    with pytest.raises(ProducerFencedError):
        txn.commit()
    assert txn.dead
    calls_before = len(fake.calls)
    with pytest.raises(FatalTransactionError):
        txn.begin()
    with pytest.raises(FatalTransactionError):
        txn.send_offsets([KafkaTopicPartition("in", 0, 1)], object())
    assert len(fake.calls) == calls_before


def test_abort_when_no_transaction_is_open_is_a_no_op() -> None:
    """abort() without an open transaction never calls abort_transaction."""
    fake = FakeProducer()
    txn = TransactionalProducer(fake, 30.0, StopSignal(30.0))  # type: ignore[arg-type]
    txn.abort()
    assert fake.calls == []
