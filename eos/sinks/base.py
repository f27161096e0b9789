"""The base of every sink: what the Application needs to run one."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, ClassVar

if TYPE_CHECKING:
    from eos._stop import StopSignal
    from eos.config import Config
    from eos.faults import Faults
    from eos.stats import EngineStats

__all__ = ["Sink", "SinkEngine"]


class SinkEngine:
    """What an :class:`eos.Application` runs for a sink: ``run()`` blocks, ``stop()`` ends it.

    Same contract as the Kafka transactional engine: ``run()`` returns after a
    stop (having committed what it processed) or raises the error that ended
    the run, after releasing every client.
    """

    def run(self) -> None:
        raise NotImplementedError

    def stop(self) -> None:
        raise NotImplementedError


class Sink:
    """A processor whose batches commit in another system's transactions, not Kafka's.

    Subclasses implement ``process`` with the target system's handle instead of
    an :class:`eos.Context`. ``input_topics`` and the serdes come from the
    Application; a sink declares no stores and sends nothing to Kafka (except
    dead-letter copies, which the engine writes).

    Attributes:
        sink_name: A short name for logs and the ``sink`` metric label.
    """

    sink_name: ClassVar[str] = "sink"
    stores: ClassVar[tuple[Any, ...]] = ()

    def check(self, config: Config) -> None:
        """Raise :class:`~eos.errors.ConfigError` if this sink cannot run under ``config``."""

    def engine(
        self, config: Config, *, stats: EngineStats, stop: StopSignal, faults: Faults
    ) -> SinkEngine:
        """The engine that runs this sink (called by ``Application.run``)."""
        raise NotImplementedError
