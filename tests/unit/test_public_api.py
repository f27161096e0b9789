"""The public API: what `import eos` exports, and the names users and acceptance checks use."""

from __future__ import annotations

import inspect

import eos
import eos.errors

EXPECTED = {
    "GlobalStore",
    "GlobalTable",
    "AppState",
    "Application",
    "AsyncProcessor",
    "BatchProcessor",
    "BytesSerde",
    "Config",
    "ConfigError",
    "Context",
    "EosError",
    "GroupedStream",
    "JsonSerde",
    "ProcessingError",
    "Processor",
    "ProducerFencedError",
    "Record",
    "RecordBatch",
    "SerializationError",
    "Serde",
    "StateError",
    "Store",
    "Stream",
    "StreamBuilder",
    "StringSerde",
    "Table",
    "RecordTimeout",
    "TimerError",
    "TopicPartition",
    "TransactionError",
    "HoppingWindows",
    "SessionWindows",
    "SlidingWindows",
    "TumblingWindows",
    "WindowStore",
    "Windowed",
    "WindowedGroupedStream",
    "WindowedTable",
    "__version__",
    "errors",
}


def test_exports_exactly_the_public_names() -> None:
    """`eos.__all__` holds exactly the documented names, and each one resolves."""
    assert set(eos.__all__) == EXPECTED
    for name in eos.__all__:
        assert getattr(eos, name) is not None


def test_application_keyword_names() -> None:
    """Application takes the keyword names the documentation promises."""
    params = set(inspect.signature(eos.Application).parameters)
    assert {
        "application_id",
        "bootstrap_servers",
        "input_topics",
        "processor",
        "processing_guarantee",
        "instance_id",
        "key_serde",
        "value_serde",
        "commit_interval_ms",
        "max_batch_records",
        "transaction_timeout_ms",
        "processing_error_policy",
        "dead_letter_topic",
        "producer_config",
        "consumer_config",
        "state_dir",
        "metrics_port",
        "metrics_registry",
    } <= params
    assert callable(eos.Application.from_config)
    assert callable(eos.Config.from_properties)


def test_error_tree() -> None:
    """The error classes form the documented tree."""
    e = eos.errors
    assert issubclass(e.ConfigError, e.EosError) and issubclass(e.ConfigError, ValueError)
    for cls in (e.SerializationError, e.ProcessingError, e.StateError, e.TransactionError):
        assert issubclass(cls, e.EosError)
    for cls in (
        e.RetriableTransactionError,
        e.AbortableTransactionError,
        e.FatalTransactionError,
    ):
        assert issubclass(cls, e.TransactionError)
    assert issubclass(e.ProducerFencedError, e.FatalTransactionError)


def test_context_send_signature() -> None:
    """ctx.send(topic, value, *, key=None, headers=None, partition=None, timestamp=None): a
    key can never be passed where the value goes (same for send_raw)."""
    for method in (eos.Context.send, eos.Context.send_raw):
        params = inspect.signature(method).parameters
        names = ["key", "headers", "partition", "timestamp"]
        assert list(params) == ["self", "topic", "value", *names]
        keyword_only = [n for n, p in params.items() if p.kind is p.KEYWORD_ONLY]
        assert keyword_only == names


def test_record_fields() -> None:
    """Record exposes key, value, topic, partition, offset, timestamp, headers."""
    assert eos.Record._fields == (
        "key",
        "value",
        "topic",
        "partition",
        "offset",
        "timestamp",
        "headers",
    )
