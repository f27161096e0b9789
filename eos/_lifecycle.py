"""The run sequence every engine shares (the Kafka transactional one and the sinks')."""

from __future__ import annotations

import logging
from collections.abc import Callable

from eos._stop import StopRequested
from eos.stats import EngineStats

__all__ = ["run_engine"]

log = logging.getLogger("eos.engine")


def run_engine(
    stats: EngineStats,
    start: Callable[[], None],
    loop: Callable[[], None],
    shutdown: Callable[[BaseException | None], None],
) -> None:
    """``start()``, then ``loop()`` until it returns; ``shutdown(error)`` whatever happened.

    The run state goes ``starting`` -> ``running`` (unless ``start`` moved it on,
    to ``restoring`` say). A stop requested during start-up (``StopRequested``)
    ends the run without an error; any other exception is handed to
    ``shutdown`` and raised again, so a failure on the way out never replaces
    the error that ended the run.
    """
    stats.state = "starting"
    error: BaseException | None = None
    try:
        start()
        if stats.state == "starting":
            stats.state = "running"
        loop()
    except StopRequested:
        log.info("stop requested during start-up")
    except BaseException as exc:
        error = exc
        raise
    finally:
        shutdown(error)
