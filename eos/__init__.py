"""eos: exactly-once consume-transform-produce for Apache Kafka.

Subclass :class:`Processor`, hand it to an :class:`Application`, call
``run()``: every input record's outputs, state changes and offset commit
become visible together, exactly once, or not at all.
"""

from __future__ import annotations

from importlib.metadata import PackageNotFoundError, version

from eos import errors
from eos._dsl_windows import WindowedGroupedStream, WindowedTable
from eos.app import Application
from eos.batching import BatchProcessor, RecordBatch
from eos.config import Config
from eos.dsl import GlobalTable, GroupedStream, Stream, StreamBuilder, Table
from eos.errors import (
    ConfigError,
    EosError,
    ProcessingError,
    ProducerFencedError,
    RecordTimeout,
    SerializationError,
    StateError,
    TimerError,
    TransactionError,
)
from eos.processor import AsyncProcessor, Context, Processor
from eos.record import Record, TopicPartition
from eos.serde import BytesSerde, JsonSerde, Serde, StringSerde
from eos.state.base import Store
from eos.state.global_table import GlobalStore
from eos.state.window import WindowStore
from eos.stats import AppState
from eos.windows import HoppingWindows, SessionWindows, SlidingWindows, TumblingWindows, Windowed

try:
    __version__ = version("eos-kafka")
except PackageNotFoundError:  # pragma: no cover - running from a source tree
    __version__ = "0.0.0"

__all__ = [
    "AppState",
    "Application",
    "AsyncProcessor",
    "BatchProcessor",
    "BytesSerde",
    "Config",
    "ConfigError",
    "Context",
    "EosError",
    "GlobalStore",
    "GlobalTable",
    "GroupedStream",
    "HoppingWindows",
    "JsonSerde",
    "ProcessingError",
    "Processor",
    "ProducerFencedError",
    "Record",
    "RecordBatch",
    "RecordTimeout",
    "Serde",
    "SerializationError",
    "SessionWindows",
    "SlidingWindows",
    "StateError",
    "Store",
    "Stream",
    "StreamBuilder",
    "StringSerde",
    "Table",
    "TimerError",
    "TopicPartition",
    "TransactionError",
    "TumblingWindows",
    "WindowStore",
    "Windowed",
    "WindowedGroupedStream",
    "WindowedTable",
    "__version__",
    "errors",
]
