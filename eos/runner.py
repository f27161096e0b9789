"""``eos run MODULE:ATTR``: load an application and run it, in N worker processes.

``ATTR`` names an :class:`~eos.app.Application`, a
:class:`~eos.processor.Processor` (instance or class) or a
:class:`~eos.dsl.StreamBuilder`. The last two need ``--config`` (a properties
file) for everything but the processing logic; a StreamBuilder's source
topics are the default ``input.topics``.

With ``--workers N`` the parent starts N child processes that run the same
application with instance ids ``<instance_id>-0`` .. ``<instance_id>-(N-1)``
(stable per worker index, so a restarted worker fences its dead predecessor
and takes its partitions back). The consumer group spreads the partitions.
SIGTERM or SIGINT to the parent stops every worker cleanly; a worker that dies
is restarted after a back-off.
"""

from __future__ import annotations

import dataclasses
import importlib
import logging
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from types import FrameType

from eos.app import Application
from eos.config import Config
from eos.dsl import StreamBuilder
from eos.errors import ConfigError
from eos.processor import Processor
from eos.properties import read_properties
from eos.sinks.base import Sink

__all__ = ["load_application", "run", "supervise"]

log = logging.getLogger("eos.runner")

_RESTART_BACKOFF_S = (1.0, 2.0, 5.0, 10.0, 30.0)
_HEALTHY_AFTER_S = 60.0


def _load_attr(target: str) -> object:
    module_name, sep, attr = target.partition(":")
    if not sep or not module_name or not attr:
        raise ConfigError(f"expected MODULE:ATTR, got {target!r}", "target")
    if os.getcwd() not in sys.path:
        sys.path.insert(0, os.getcwd())
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise ConfigError(f"cannot import {module_name!r}: {exc}", "target") from exc
    obj: object = module
    for part in attr.split("."):
        try:
            obj = getattr(obj, part)
        except AttributeError as exc:
            raise ConfigError(f"{module_name!r} has no attribute {attr!r}", "target") from exc
    return obj


def load_application(
    target: str,
    *,
    config_path: str | None = None,
    instance_id: str | None = None,
    metrics_port: int | None = None,
) -> Application:
    """Build the application ``target`` names, with the CLI's overrides applied.

    For an :class:`~eos.app.Application`, ``config_path`` overrides its
    settings one by one (:meth:`~eos.config.Config.with_properties`): what
    the file does not mention, serde objects included, stays as the
    application set it. For a processor or a StreamBuilder the file is the
    whole configuration.
    """
    obj = _load_attr(target)
    overrides: dict[str, object] = {}
    if instance_id is not None:
        overrides["instance_id"] = instance_id
    if metrics_port is not None:
        overrides["metrics_port"] = metrics_port
    if isinstance(obj, Application):
        config = obj.config
        if config_path is not None:
            config = config.with_properties(read_properties(config_path))
        return Application.from_config(
            dataclasses.replace(config, **overrides),  # type: ignore[arg-type]
            obj.processor,
            metrics_registry=obj.metrics_registry,
            faults=obj.faults,
        )
    if isinstance(obj, type) and issubclass(obj, Processor):
        obj = obj()
    topics: list[str] = []
    if isinstance(obj, StreamBuilder):
        topics = obj.topics
        obj = obj.build()
    if not isinstance(obj, Processor | Sink):
        raise ConfigError(
            f"{target} is a {type(obj).__name__}; expected an eos.Application, an "
            "eos.Processor (instance or class), an eos.StreamBuilder or a sink "
            "(eos.sinks.postgres.PostgresProcessor instance)",
            "target",
        )
    if config_path is None:
        raise ConfigError(
            f"{target} is a processor: pass --config app.properties with at least "
            "application.id and bootstrap.servers",
            "config",
        )
    text_props = Path(config_path)
    if not text_props.exists():
        raise ConfigError(f"config file {config_path} does not exist", "config")
    props = read_properties(config_path)
    if "input.topics" not in props and topics:
        props["input.topics"] = ",".join(topics)
    config = Config.from_mapping(props, **overrides)
    return Application.from_config(config, obj)


def run(
    target: str,
    *,
    config_path: str | None = None,
    workers: int = 1,
    metrics_port: int | None = None,
    instance_id: str | None = None,
) -> int:
    """Run ``target`` in this process (``workers == 1``) or supervise N workers.

    SIGTERM/SIGINT are caught before the user's module is imported: a signal
    during the import or the start-up is a clean stop (exit 0), as is one at
    any later moment.
    """
    if workers < 1:
        raise ConfigError(f"--workers must be >= 1, not {workers}", "workers")
    if workers == 1:
        return _run_one(target, config_path, instance_id, metrics_port)
    stopping = False

    def on_signal(signum: int, _frame: FrameType | None) -> None:
        nonlocal stopping
        stopping = True

    previous = {s: signal.signal(s, on_signal) for s in (signal.SIGTERM, signal.SIGINT)}
    try:
        base = instance_id or load_application(target, config_path=config_path).config.instance_id
        if stopping:
            return 0
        return supervise(
            target,
            config_path=config_path,
            workers=workers,
            metrics_port=metrics_port,
            base_instance_id=base,
            stopped_before=lambda: stopping,
        )
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def _run_one(
    target: str, config_path: str | None, instance_id: str | None, metrics_port: int | None
) -> int:
    app: Application | None = None
    stopping = False

    def on_signal(signum: int, _frame: FrameType | None) -> None:
        nonlocal stopping
        stopping = True
        log.info("received %s while starting: stopping", signal.Signals(signum).name)
        if app is not None:
            app.stop()

    previous = {s: signal.signal(s, on_signal) for s in (signal.SIGTERM, signal.SIGINT)}
    log.info("loading %s", target)
    try:
        app = load_application(
            target, config_path=config_path, instance_id=instance_id, metrics_port=metrics_port
        )
        if stopping:
            return 0
        # run() installs its own handlers (and puts these back when it returns).
        app.run()
        return 0
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def supervise(
    target: str,
    *,
    config_path: str | None,
    workers: int,
    metrics_port: int | None,
    base_instance_id: str,
    stopped_before: Callable[[], bool] = lambda: False,
) -> int:
    """Start, watch and restart N worker processes; stop them all on SIGTERM/SIGINT.

    ``stopped_before`` says whether a signal arrived before this function
    installed its handlers (then no worker is started).
    """
    stopping = False

    def on_signal(signum: int, _frame: FrameType | None) -> None:
        nonlocal stopping
        stopping = True
        log.info("received %s: stopping %d workers", signal.Signals(signum).name, workers)
        for proc in procs.values():
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)

    def start(index: int) -> subprocess.Popen[bytes]:
        cmd = [sys.executable, "-m", "eos.cli", "run", target, "--workers", "1"]
        cmd += ["--instance-id", f"{base_instance_id}-{index}"]
        # Workers log at the supervisor's level (``eos --log-level debug run ... --workers N``).
        cmd += ["--log-level", logging.getLevelName(logging.getLogger().getEffectiveLevel())]
        if config_path is not None:
            cmd += ["--config", config_path]
        if metrics_port is not None:
            cmd += ["--metrics-port", str(metrics_port + index)]
        proc = subprocess.Popen(cmd)
        log.info(
            "worker %d started (pid %d, instance %s-%d)", index, proc.pid, base_instance_id, index
        )
        started[index] = time.monotonic()
        return proc

    previous = {s: signal.signal(s, on_signal) for s in (signal.SIGTERM, signal.SIGINT)}
    procs: dict[int, subprocess.Popen[bytes]] = {}
    started: dict[int, float] = {}
    failures: dict[int, int] = dict.fromkeys(range(workers), 0)
    restart_at: dict[int, float] = {}
    if stopped_before():
        stopping = True
    try:
        for index in range(workers if not stopping else 0):
            procs[index] = start(index)
        while True:
            alive = [p for p in procs.values() if p.poll() is None]
            if stopping and not alive:
                break
            for index, proc in list(procs.items()):
                code = proc.poll()
                if code is None or stopping:
                    continue
                if index not in restart_at:
                    if time.monotonic() - started[index] > _HEALTHY_AFTER_S:
                        failures[index] = 0
                    delay = _RESTART_BACKOFF_S[min(failures[index], len(_RESTART_BACKOFF_S) - 1)]
                    failures[index] += 1
                    restart_at[index] = time.monotonic() + delay
                    log.warning(
                        "worker %d (pid %d) exited with %s; restarting in %.0fs",
                        index,
                        proc.pid,
                        code,
                        delay,
                    )
                elif time.monotonic() >= restart_at[index]:
                    del restart_at[index]
                    procs[index] = start(index)
            time.sleep(0.2)
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    codes = [p.returncode for p in procs.values()]
    log.info("all workers stopped (exit codes %s)", codes)
    return 0 if all(c == 0 for c in codes) else 1
