"""Helpers of the chaos tests: start examples/uppercase.py instances, feed input steadily."""

from __future__ import annotations

import re
import threading
import time
from collections.abc import Callable
from pathlib import Path

from confluent_kafka import Producer

from eos.testing.helpers import (
    wait_no_open_transactions,  # noqa: F401 - re-exported
)
from eos.testing.process import AppProcess

EXAMPLE = str(Path(__file__).resolve().parents[2] / "examples" / "uppercase.py")


def uppercase_app(
    bootstrap: str,
    source: str,
    sink: str,
    app_id: str,
    log_dir: Path,
    *,
    instance: str = "0",
    env: dict[str, str] | None = None,
    **flags: str,
) -> AppProcess:
    """An (unstarted) examples/uppercase.py process; ``flags`` become ``--flag-name value``."""
    args = [
        EXAMPLE,
        "--bootstrap-servers",
        bootstrap,
        "--input",
        source,
        "--output",
        sink,
        "--application-id",
        app_id,
        "--instance-id",
        instance,
    ]
    for key, value in flags.items():
        args += [f"--{key.replace('_', '-')}", value]
    return AppProcess(args, log_path=log_dir / f"{app_id}-{instance}.log", env=env)


def _default_record(i: int) -> tuple[bytes, bytes]:
    return f"v{i:06d}".encode(), f"k{i % 97}".encode()


class SteadyProducer:
    """Produces ``total`` records in chunks over ``seconds``: ``record(i)`` gives record i's
    ``(value, key)``, by default ``(v{i:06d}, k{i % 97})``."""

    def __init__(
        self,
        bootstrap: str,
        topic: str,
        total: int,
        seconds: float,
        chunks: int = 40,
        record: Callable[[int], tuple[bytes, bytes]] = _default_record,
    ) -> None:
        self.chunks = chunks
        self.bootstrap = bootstrap
        self.topic = topic
        self.total = total
        self.seconds = seconds
        self.record = record
        self.sent = 0
        self.error: BaseException | None = None
        self.thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        try:
            self._produce()
        except BaseException as exc:  # raised again by join()
            self.error = exc

    def _produce(self) -> None:
        # One long-lived producer: helpers.produce() builds a producer per call,
        # which costs more than the pause between chunks.
        producer = Producer(
            {"bootstrap.servers": self.bootstrap, "enable.idempotence": True, "linger.ms": 5}
        )
        per = self.total // self.chunks
        started = time.monotonic()
        for c in range(self.chunks):
            for i in range(c * per, (c + 1) * per):
                producer.produce(self.topic, *self.record(i))
            if producer.flush(30):
                raise RuntimeError("input records were not delivered")
            self.sent += per
            next_at = started + (c + 1) * self.seconds / self.chunks
            time.sleep(max(0.0, next_at - time.monotonic()))

    def start(self) -> SteadyProducer:
        self.thread.start()
        return self

    def join(self, timeout: float = 120.0) -> int:
        self.thread.join(timeout)
        if self.thread.is_alive():
            raise TimeoutError("the input producer did not finish")
        if self.error is not None:
            raise self.error
        return self.sent


def log_text(app: AppProcess, since: int = 0) -> str:
    """The app's log from byte ``since`` on."""
    try:
        with open(app.log_path, "rb") as f:
            f.seek(since)
            return f.read().decode(errors="replace")
    except OSError:
        return ""


def log_size(app: AppProcess) -> int:
    try:
        return app.log_path.stat().st_size
    except OSError:
        return 0


def wait_for_new_log(app: AppProcess, text: str, since: int, timeout: float = 60.0) -> str:
    """Block until ``text`` appears in the log after byte ``since``; return that part of the log."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        tail = log_text(app, since)
        if text in tail:
            return tail
        if not app.alive():
            break
        time.sleep(0.1)
    raise TimeoutError(
        f"{text!r} not logged by {app.log_path} after byte {since}:\n{app.log_tail()}"
    )


def interesting(lines: str, *words: str) -> list[str]:
    """Log lines that contain any of ``words`` (case-insensitive)."""
    words = words or ("abort", "fenc", "lost", "revok", "assigned", "error", "rewound", "stopp")
    return [line for line in lines.splitlines() if any(w in line.lower() for w in words)]


_OWNERSHIP = re.compile(r"eos\.engine: (assigned|revoking|lost) (.*?)(?: \(restoring.*)?$", re.M)


def owned(app: AppProcess) -> set[int]:
    """The partitions the current start of ``app`` owns, from its rebalance log lines."""
    partitions_owned: set[int] = set()
    for what, tps in _OWNERSHIP.findall(app.current_log()):
        partitions = {int(p) for p in re.findall(r"\[(\d+)\]", tps)}
        if what == "assigned":
            partitions_owned |= partitions
        else:
            partitions_owned -= partitions
    return partitions_owned


def wait_owned(
    app: AppProcess, check: Callable[[set[int]], object], what: str, timeout: float = 90.0
) -> float:
    """Block until ``check(partitions app owns)`` holds; return the seconds waited."""
    started = time.monotonic()
    deadline = started + timeout
    while not check(owned(app)):
        assert app.alive(), f"{app.log_path} exited:\n{app.log_tail()}"
        if time.monotonic() > deadline:
            raise TimeoutError(f"{what} not seen in {app.log_path}:\n{app.log_tail()}")
        time.sleep(0.1)
    return time.monotonic() - started
