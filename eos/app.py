"""The :class:`Application`: wiring, signals, ``run()``/``stop()``, ``app.state``."""

from __future__ import annotations

import logging
import signal
import threading
from collections.abc import Callable, Mapping, Sequence
from types import FrameType

from eos.config import (
    DEFAULT_COMMIT_INTERVAL_MS,
    DEFAULT_INSTANCE_ID,
    DEFAULT_MAX_BATCH_RECORDS,
    DEFAULT_METRICS_BIND_ADDRESS,
    DEFAULT_PROCESSING_ERROR_POLICY,
    DEFAULT_PROCESSING_GUARANTEE,
    DEFAULT_SHUTDOWN_TIMEOUT_S,
    DEFAULT_STATE_DIR,
    DEFAULT_TRANSACTION_TIMEOUT_MS,
    ClientValue,
    Config,
    ErrorPolicy,
    Guarantee,
)
from eos.errors import ConfigError
from eos.processor import Processor
from eos.serde import Serde
from eos.stats import AppState, EngineStats

__all__ = ["Application"]

log = logging.getLogger("eos.app")


class Application:
    """An exactly-once stream processing application: one instance of it.

    Construct it with the settings (or from a :class:`~eos.config.Config`
    with :meth:`from_config`), then call :meth:`run`, which blocks. SIGTERM
    and SIGINT (when ``run`` is called on the main thread), or :meth:`stop`
    from any thread, end it cleanly: the open batch is committed, the
    consumer leaves the group, the producer is closed.

    All settings are validated at construction; a bad one raises
    :class:`~eos.errors.ConfigError` naming it. See :class:`~eos.config.Config`
    for each setting's meaning and default.

    Raises from ``run()``:
        ProcessingError: ``processing_error_policy="fail"`` met a failing record
            (its transaction was aborted; nothing of it is visible).
        ProducerFencedError: another instance with the same ``instance_id``
            took over; this one stopped at once.
        ConfigError: an input topic is missing or Kafka is unreachable.
    """

    def __init__(
        self,
        *,
        application_id: str,
        bootstrap_servers: str,
        input_topics: Sequence[str] | str,
        processor: Processor,
        processing_guarantee: Guarantee = DEFAULT_PROCESSING_GUARANTEE,
        instance_id: str = DEFAULT_INSTANCE_ID,
        key_serde: str | Serde = "bytes",
        value_serde: str | Serde = "bytes",
        commit_interval_ms: int = DEFAULT_COMMIT_INTERVAL_MS,
        max_batch_records: int = DEFAULT_MAX_BATCH_RECORDS,
        transaction_timeout_ms: int = DEFAULT_TRANSACTION_TIMEOUT_MS,
        processing_error_policy: ErrorPolicy = DEFAULT_PROCESSING_ERROR_POLICY,
        dead_letter_topic: str | None = None,
        state_dir: str = DEFAULT_STATE_DIR,
        shutdown_timeout_s: float = DEFAULT_SHUTDOWN_TIMEOUT_S,
        metrics_port: int | None = None,
        metrics_bind_address: str = DEFAULT_METRICS_BIND_ADDRESS,
        metrics_registry: object | None = None,
        producer_config: Mapping[str, ClientValue] | None = None,
        consumer_config: Mapping[str, ClientValue] | None = None,
    ) -> None:
        config = Config(
            application_id=application_id,
            bootstrap_servers=bootstrap_servers,
            input_topics=input_topics,
            processing_guarantee=processing_guarantee,
            instance_id=instance_id,
            key_serde=key_serde,
            value_serde=value_serde,
            commit_interval_ms=commit_interval_ms,
            max_batch_records=max_batch_records,
            transaction_timeout_ms=transaction_timeout_ms,
            processing_error_policy=processing_error_policy,
            dead_letter_topic=dead_letter_topic,
            state_dir=state_dir,
            shutdown_timeout_s=shutdown_timeout_s,
            metrics_port=metrics_port,
            metrics_bind_address=metrics_bind_address,
            producer_config=dict(producer_config or {}),
            consumer_config=dict(consumer_config or {}),
        )
        self._setup(config, processor, metrics_registry)

    @classmethod
    def from_config(
        cls, config: Config, processor: Processor, *, metrics_registry: object | None = None
    ) -> Application:
        """Build an application from a :class:`~eos.config.Config`."""
        app = cls.__new__(cls)
        app._setup(config, processor, metrics_registry)
        return app

    def _setup(self, config: Config, processor: Processor, metrics_registry: object) -> None:
        if not isinstance(processor, Processor):
            raise ConfigError(
                f"processor must be an eos.Processor instance, not {type(processor).__name__}",
                "processor",
            )
        self.config = config
        self.processor = processor
        self.metrics_registry = metrics_registry
        self._stats = EngineStats(config.application_id)
        self._engine: object | None = None
        self._metrics_handle: object | None = None
        self._stop_requested = threading.Event()

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
        """Ask :meth:`run` to commit what it processed and return. Thread-safe."""
        self._stop_requested.set()
        engine = self._engine
        if engine is not None:
            engine.stop()  # type: ignore[attr-defined]

    def run(self) -> None:
        """Process until stopped. Blocks; see the class docstring for errors."""
        from eos.engine import Engine

        stores = None
        if self.processor.stores:
            from eos.state.manager import StoreManager

            def stores(engine: Engine) -> StoreManager:
                return StoreManager(engine, self.processor.stores)

        engine = Engine(self.config, self.processor, stats=self._stats, stores=stores)
        self._engine = engine
        if self._stop_requested.is_set():
            engine.stop()
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
        restore = self._install_signals()
        try:
            engine.run()
        finally:
            restore()
            self._engine = None
            self._stop_requested.clear()
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

        def restore() -> None:
            for sig, old in previous.items():
                signal.signal(sig, old)

        return restore


def _noop() -> None:
    return None
