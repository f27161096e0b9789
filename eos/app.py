"""The :class:`Application`: wiring, signals, ``run()``/``stop()``, ``app.state``."""

from __future__ import annotations

import dataclasses
import faulthandler
import functools
import inspect
import logging
import os
import signal
import threading
from collections.abc import Callable, Mapping, Sequence
from types import FrameType
from typing import Any, ParamSpec, cast

from eos._async import is_async
from eos._processor_checks import check_processor
from eos._stop import StopSignal
from eos.config import (
    DEFAULT_BOOTSTRAP_TIMEOUT_MS,
    DEFAULT_COMMIT_INTERVAL_MS,
    DEFAULT_INSTANCE_ID,
    DEFAULT_LATE_RECORD_POLICY,
    DEFAULT_MAX_ABORTS_WITHOUT_PROGRESS,
    DEFAULT_MAX_BATCH_RECORDS,
    DEFAULT_MAX_IN_FLIGHT,
    DEFAULT_MAX_TASK_IDLE_MS,
    DEFAULT_METRICS_BIND_ADDRESS,
    DEFAULT_PROCESSING_ERROR_POLICY,
    DEFAULT_PROCESSING_GUARANTEE,
    DEFAULT_RECORD_TIMEOUT_MS,
    DEFAULT_SHUTDOWN_TIMEOUT_S,
    DEFAULT_STATE_DIR,
    DEFAULT_TRANSACTION_TIMEOUT_MS,
    ClientValue,
    Config,
    ErrorPolicy,
    Guarantee,
    InputSerdeSpec,
    LatePolicy,
)
from eos.dsl import input_serdes_for, input_topics_for, internal_topics_for
from eos.errors import ConfigError
from eos.faults import NO_FAULTS, Faults
from eos.processor import Processor
from eos.properties import did_you_mean
from eos.serde import Serde
from eos.sinks.base import Sink
from eos.stats import AppState, EngineStats

__all__ = ["Application"]

log = logging.getLogger("eos.app")

_P = ParamSpec("_P")


def _checked_arguments(init: Callable[_P, None]) -> Callable[_P, None]:
    """Make a call with arguments ``init`` does not take a ConfigError.

    Python raises TypeError for an unknown or missing keyword; for a
    settings object the user needs to know which setting was meant, so the
    error names it and suggests the closest known one.
    """
    signature = inspect.signature(init)
    known = [name for name in signature.parameters if name != "self"]

    @functools.wraps(init)
    def checked(*args: _P.args, **kwargs: _P.kwargs) -> None:
        try:
            signature.bind(*args, **kwargs)
        except TypeError:
            raise _argument_error(known, len(args), kwargs) from None
        init(*args, **kwargs)

    return checked


def _argument_error(known: list[str], positional: int, kwargs: Mapping[str, object]) -> ConfigError:
    for name in kwargs:
        if name not in known:
            return ConfigError(
                f"Application() got an unknown setting {name!r}"
                + (did_you_mean(name, known) or f"; the settings are: {', '.join(known)}"),
                name,
            )
    if positional > 1:
        return ConfigError(
            "Application() takes keyword arguments only, e.g. "
            "Application(application_id=..., bootstrap_servers=..., input_topics=..., "
            "processor=...)"
        )
    missing = [
        name
        for name in ("application_id", "bootstrap_servers", "input_topics", "processor")
        if name not in kwargs
    ]
    return ConfigError(f"Application() needs {', '.join(missing)}", missing[0] if missing else None)


class Application:
    """An exactly-once stream processing application: one instance of it.

    Construct it with the settings (or from a :class:`~eos.config.Config`
    with :meth:`from_config`), then call :meth:`run`, which blocks. SIGTERM
    and SIGINT (when ``run`` is called on the main thread), or :meth:`stop`
    from any thread, end it cleanly: the open batch is committed, the
    consumer leaves the group, the producer is closed.

    ``key_serde`` and ``value_serde`` decode every input topic unless
    ``input_serdes={topic: (key_serde, value_serde)}`` names a topic's own
    serdes; a processor built by :class:`~eos.dsl.StreamBuilder` brings the
    serdes its ``builder.stream(topic, key_serde=..., value_serde=...)`` calls
    name (naming other ones for the same topic here is a ConfigError).

    All settings are validated at construction; a bad one raises
    :class:`~eos.errors.ConfigError` naming it. See :class:`~eos.config.Config`
    for each setting's meaning and default.

    Raises from ``run()``:
        ProcessingError: ``processing_error_policy="fail"`` met a failing record
            (its transaction was aborted; nothing of it is visible).
        ProducerFencedError: another instance with the same ``instance_id``
            took over; this one stopped at once.
        ConfigError: an input topic is missing or Kafka is unreachable, an
            output topic is missing or an ACL denies an operation.
        AbortLimitError: the batch kept failing without progress
            (``max_aborts_without_progress``).

    ``faults`` is the fault-injection seam for tests (:mod:`eos.faults`);
    leave it unset in production.

    An unknown keyword (a misspelt setting), a positional argument or a
    missing required setting is a :class:`~eos.errors.ConfigError` that
    names it ("did you mean ..."), not a TypeError.
    """

    @_checked_arguments
    def __init__(
        self,
        *,
        application_id: str,
        bootstrap_servers: str,
        input_topics: Sequence[str] | str | None = None,
        processor: Processor | Sink,
        processing_guarantee: Guarantee = DEFAULT_PROCESSING_GUARANTEE,
        instance_id: str | int = DEFAULT_INSTANCE_ID,
        key_serde: str | Serde = "bytes",
        value_serde: str | Serde = "bytes",
        input_serdes: Mapping[str, InputSerdeSpec] | None = None,
        commit_interval_ms: int = DEFAULT_COMMIT_INTERVAL_MS,
        max_batch_records: int = DEFAULT_MAX_BATCH_RECORDS,
        transaction_timeout_ms: int = DEFAULT_TRANSACTION_TIMEOUT_MS,
        processing_error_policy: ErrorPolicy = DEFAULT_PROCESSING_ERROR_POLICY,
        dead_letter_topic: str | None = None,
        late_record_policy: LatePolicy = DEFAULT_LATE_RECORD_POLICY,
        max_task_idle_ms: int = DEFAULT_MAX_TASK_IDLE_MS,
        max_in_flight: int = DEFAULT_MAX_IN_FLIGHT,
        record_timeout_ms: int = DEFAULT_RECORD_TIMEOUT_MS,
        state_dir: str | os.PathLike[str] = DEFAULT_STATE_DIR,
        shutdown_timeout_s: float = DEFAULT_SHUTDOWN_TIMEOUT_S,
        bootstrap_timeout_ms: int = DEFAULT_BOOTSTRAP_TIMEOUT_MS,
        max_aborts_without_progress: int = DEFAULT_MAX_ABORTS_WITHOUT_PROGRESS,
        metrics_port: int | None = None,
        metrics_bind_address: str = DEFAULT_METRICS_BIND_ADDRESS,
        metrics_registry: object | None = None,
        lineage_headers: bool = False,
        producer_config: Mapping[str, ClientValue] | None = None,
        consumer_config: Mapping[str, ClientValue] | None = None,
        faults: Faults | None = None,
    ) -> None:
        config = Config(
            application_id=application_id,
            bootstrap_servers=bootstrap_servers,
            # A sink declares no stores or topology: only the given topics.
            input_topics=input_topics_for(cast(Processor, processor), input_topics, application_id),
            processing_guarantee=processing_guarantee,
            instance_id=instance_id if isinstance(instance_id, str) else _id_text(instance_id),
            key_serde=key_serde,
            value_serde=value_serde,
            input_serdes=input_serdes or {},
            commit_interval_ms=commit_interval_ms,
            max_batch_records=max_batch_records,
            transaction_timeout_ms=transaction_timeout_ms,
            processing_error_policy=processing_error_policy,
            dead_letter_topic=dead_letter_topic,
            late_record_policy=late_record_policy,
            max_task_idle_ms=max_task_idle_ms,
            max_in_flight=max_in_flight,
            record_timeout_ms=record_timeout_ms,
            state_dir=os.fspath(state_dir) if isinstance(state_dir, os.PathLike) else state_dir,
            shutdown_timeout_s=shutdown_timeout_s,
            bootstrap_timeout_ms=bootstrap_timeout_ms,
            max_aborts_without_progress=max_aborts_without_progress,
            metrics_port=metrics_port,
            metrics_bind_address=metrics_bind_address,
            lineage_headers=lineage_headers,
            producer_config=producer_config or {},
            consumer_config=consumer_config or {},
        )
        self._setup(config, processor, metrics_registry, faults)

    @classmethod
    def from_config(
        cls,
        config: Config,
        processor: Processor | Sink,
        *,
        metrics_registry: object | None = None,
        faults: Faults | None = None,
    ) -> Application:
        """Build an application from a :class:`~eos.config.Config`."""
        app = cls.__new__(cls)
        app._setup(config, processor, metrics_registry, faults)
        return app

    def _setup(
        self,
        config: Config,
        processor: Processor | Sink,
        metrics_registry: object,
        faults: Faults | None,
    ) -> None:
        if isinstance(processor, Sink):
            self._setup_sink(config, processor, metrics_registry, faults)
            return
        check_processor(processor)
        if is_async(processor):
            config.check_async()  # at construction, not only when run() starts
        # Every topic the instance consumes: the given ones, the tables' source
        # topics and the topology's repartition topics (internal, never given).
        internal = internal_topics_for(processor, config.application_id)
        given = [t for t in config.input_topics if t not in internal]
        topics = input_topics_for(processor, given, config.application_id)
        if tuple(topics) != tuple(config.input_topics):
            config = dataclasses.replace(config, input_topics=tuple(topics))
        input_serdes_for(processor, config.input_serdes)
        if faults is not None and not isinstance(faults, Faults):
            raise ConfigError(
                f"faults must be an eos.faults.Faults instance, not {type(faults).__name__}",
                "faults",
            )
        self.config = config
        self.processor: Processor | Sink = processor
        self.metrics_registry = metrics_registry
        self.faults = faults or NO_FAULTS
        self._stats = EngineStats(config.application_id)
        self._metrics_handle: object | None = None
        # Replaced (never mutated back) after each run: reads and writes of the
        # attribute are atomic, so stop() needs no lock (a signal handler calls it).
        self._stop = StopSignal(config.shutdown_timeout_s)

    def _setup_sink(
        self,
        config: Config,
        processor: Sink,
        metrics_registry: object,
        faults: Faults | None,
    ) -> None:
        """A sink (``eos.sinks``): its batches commit in its own system's transactions."""
        if not config.input_topics:
            raise ConfigError(
                f"{type(processor).__name__} needs input_topics (input.topics)", "input_topics"
            )
        processor.check(config)
        self.config = config
        self.processor = processor
        self.metrics_registry = metrics_registry
        self.faults = faults or NO_FAULTS
        self._stats = EngineStats(config.application_id)
        self._metrics_handle = None
        self._stop = StopSignal(config.shutdown_timeout_s)

    def __repr__(self) -> str:
        return f"Application({self.config!r})"

    @property
    def state(self) -> AppState:
        """A consistent snapshot of counters and assignment (any thread)."""
        return self._stats.snapshot()

    @property
    def metrics_url(self) -> str | None:
        """``http://host:port/metrics`` while ``run()`` serves metrics, else None."""
        handle = self._metrics_handle
        return getattr(handle, "url", None) if handle is not None else None

    def stop(self) -> None:
        """Ask :meth:`run` to commit what it processed and return. Thread-safe.

        Called before ``run()``, it makes that ``run()`` return at once.
        """
        self._stop.set()

    def run(self) -> None:
        """Process until stopped. Blocks; see the class docstring for errors."""
        from eos.engine import Engine

        restore = self._install_signals()
        log.info("running %s (instance %s)", self.config.application_id, self.config.instance_id)
        try:
            self._run(Engine if not isinstance(self.processor, Sink) else None)
        finally:
            restore()
            # A later run() starts afresh (a stop request was for this one).
            self._stop = StopSignal(self.config.shutdown_timeout_s)

    def _run(self, engine_type: type | None) -> None:
        stop = self._stop
        if stop.is_set():
            log.info("stop requested before run(): not starting")
            return
        processor = self.processor
        engine: Any
        if isinstance(processor, Sink):
            engine = processor.engine(self.config, stats=self._stats, stop=stop, faults=self.faults)
        elif engine_type is not None:
            engine = engine_type(
                self.config, processor, stats=self._stats, stop=stop, faults=self.faults
            )
        else:
            raise RuntimeError("no engine for this processor")
        handle = None
        if self.config.metrics_port is not None or self.metrics_registry is not None:
            from eos.metrics import register_metrics

            handle = register_metrics(
                self._stats,
                registry=self.metrics_registry,  # type: ignore[arg-type]
                port=self.config.metrics_port,
                bind_address=self.config.metrics_bind_address,
            )
            if handle.url:
                log.info("serving metrics at %s", handle.url)
        self._metrics_handle = handle
        try:
            engine.run()
        finally:
            self._metrics_handle = None
            if handle is not None:
                handle.close()

    def _install_signals(self) -> Callable[[], None]:
        if threading.current_thread() is not threading.main_thread():
            return _noop
        previous = {sig: signal.getsignal(sig) for sig in (signal.SIGTERM, signal.SIGINT)}

        def handler(signum: int, _frame: FrameType | None) -> None:
            log.info("received %s: stopping after the current batch", signal.Signals(signum).name)
            self.stop()

        for sig in previous:
            signal.signal(sig, handler)
        # `kill -USR1 <pid>` prints every thread's stack to stderr, even while the
        # main thread is blocked in a librdkafka call: for diagnosing a stuck instance.
        dump = hasattr(signal, "SIGUSR1") and signal.getsignal(signal.SIGUSR1) == signal.SIG_DFL
        if dump:
            faulthandler.register(signal.SIGUSR1, all_threads=True)

        def restore() -> None:
            for sig, old in previous.items():
                signal.signal(sig, old)
            if dump:
                faulthandler.unregister(signal.SIGUSR1)

        return restore


def _id_text(instance_id: int) -> str:
    if isinstance(instance_id, bool):
        raise ConfigError(
            f"invalid instance_id (instance.id): {instance_id!r}; must be a str or an int",
            "instance_id",
        )
    return str(instance_id)


def _noop() -> None:
    return None
