from __future__ import annotations

import pickle

import pytest

from eos.errors import (
    AbortableTransactionError,
    ConfigError,
    EosError,
    FatalTransactionError,
    ProcessingError,
    ProducerFencedError,
    RetriableTransactionError,
    SerializationError,
    StateError,
    TransactionError,
)

ALL = [
    ConfigError,
    SerializationError,
    ProcessingError,
    StateError,
    TransactionError,
    RetriableTransactionError,
    AbortableTransactionError,
    FatalTransactionError,
    ProducerFencedError,
]


def test_tree_matches_the_documented_hierarchy() -> None:
    """Each class has exactly the parents drawn in the errors module docstring."""
    assert ConfigError.__bases__ == (EosError, ValueError)
    for cls in (SerializationError, ProcessingError, StateError, TransactionError):
        assert cls.__bases__ == (EosError,)
    for cls in (RetriableTransactionError, AbortableTransactionError, FatalTransactionError):
        assert cls.__bases__ == (TransactionError,)
    assert ProducerFencedError.__bases__ == (FatalTransactionError,)
    assert EosError.__bases__ == (Exception,)


@pytest.mark.parametrize("cls", [EosError, *ALL])
def test_every_class_is_documented(cls: type[EosError]) -> None:
    """Every exception class carries its own docstring (class docstrings are not inherited)."""
    assert cls.__doc__


def test_config_error_is_a_value_error_with_key() -> None:
    """ConfigError is catchable as ValueError and keeps the offending key."""
    with pytest.raises(ValueError, match="bad") as info:
        raise ConfigError("bad thing", key="commit_interval_ms")
    assert isinstance(info.value, ConfigError)
    assert info.value.key == "commit_interval_ms"
    assert ConfigError("x").key is None


def test_serialization_error_attributes() -> None:
    """SerializationError keeps part, operation and topic."""
    err = SerializationError("boom", part="key", operation="deserialize", topic="orders")
    assert (err.part, err.operation, err.topic, str(err)) == (
        "key",
        "deserialize",
        "orders",
        "boom",
    )


def test_processing_error_default_message_names_position_and_cause() -> None:
    """ProcessingError's default message names topic, partition, offset and the cause."""
    cause = ValueError("boom")
    err = ProcessingError(topic="orders", partition=2, offset=1234, cause=cause)
    assert str(err) == "processing failed at orders[2]@1234: ValueError: boom"
    assert (err.topic, err.partition, err.offset, err.cause) == ("orders", 2, 1234, cause)


def test_processing_error_message_without_cause_text() -> None:
    """A cause with an empty message is named by its type alone."""
    err = ProcessingError(topic="t", partition=0, offset=5, cause=KeyError())
    assert str(err) == "processing failed at t[0]@5: KeyError"
    assert str(ProcessingError("custom", topic="t", partition=0, offset=5, cause=KeyError())) == (
        "custom"
    )


def test_transaction_error_keeps_kafka_error() -> None:
    """TransactionError and its subclasses keep the KafkaError they were given."""
    marker = object()
    assert ProducerFencedError("fenced", marker).kafka_error is marker
    assert TransactionError("t").kafka_error is None


@pytest.mark.parametrize(
    "err",
    [
        ConfigError("bad", key="k"),
        SerializationError("s", part="value", operation="serialize", topic="t"),
        ProcessingError(topic="t", partition=1, offset=2, cause=RuntimeError("x")),
        StateError("closed"),
        RetriableTransactionError("r", "kafka-error-stand-in"),
        ProducerFencedError("f"),
    ],
)
def test_errors_survive_pickle(err: EosError) -> None:
    """Errors keep their type, message and attributes through pickle."""
    copy = pickle.loads(pickle.dumps(err))
    assert type(copy) is type(err)
    assert str(copy) == str(err)
    assert {k: repr(v) for k, v in vars(copy).items()} == {k: repr(v) for k, v in vars(err).items()}
