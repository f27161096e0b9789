"""Run an Application in-process on a thread; load the example processor; wait for commits."""

from __future__ import annotations

import importlib.util
import threading
import time
from pathlib import Path
from types import ModuleType

import eos
from eos.testing.helpers import ReadRecord, committed_offsets, watermarks

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "uppercase.py"


def _load_example() -> ModuleType:
    spec = importlib.util.spec_from_file_location("eos_example_uppercase", EXAMPLE)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


uppercase = _load_example()
Upper: type[eos.Processor] = uppercase.Upper


class Count(eos.Processor):
    """Counts records per key in a changelog-backed store and sends each new count."""

    stores = [eos.Store("counts", key_serde="string", value_serde="json")]

    def __init__(self, output: str) -> None:
        self.output = output

    def process(self, record: eos.Record, ctx: eos.Context) -> None:
        counts = ctx.store("counts")
        n = counts.get(record.key, 0) + 1  # type: ignore[operator]
        counts[record.key] = n
        ctx.send(self.output, str(n), key=record.key)


class CountBatches(eos.BatchProcessor):
    """Counts records per key (changelog-backed) and sends each new count; notes batch sizes."""

    stores = [eos.Store("counts", key_serde="string", value_serde="json")]

    def __init__(self, output: str) -> None:
        self.output = output
        self.sizes: list[int] = []

    def process_batch(self, batch: eos.RecordBatch, ctx: eos.Context) -> None:
        self.sizes.append(len(batch))
        counts = ctx.store("counts")
        for key in batch.keys:
            n = counts.get(key, 0) + 1  # type: ignore[operator]
            counts[key] = n
            ctx.send(self.output, str(n), key=key)


def application(
    bootstrap: str, app_id: str, source: str, processor: eos.Processor, **kw: object
) -> eos.Application:
    """An Application on one input topic; ``kw`` are further Application keywords."""
    return eos.Application(
        application_id=app_id,
        bootstrap_servers=bootstrap,
        input_topics=[source],
        processor=processor,
        **kw,  # type: ignore[arg-type]
    )


def not_poison(records: list[ReadRecord]) -> list[ReadRecord]:
    """The records whose value does not start with ``poison``."""
    return [r for r in records if not (r.value or b"").startswith(b"poison")]


class AppThread:
    """Runs ``app.run()`` on a daemon thread and keeps what it raised."""

    def __init__(self, app: eos.Application) -> None:
        self.app = app
        self.error: BaseException | None = None
        self.runs = 0
        self.thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        self.runs += 1
        try:
            self.app.run()
        except BaseException as exc:
            self.error = exc

    def start(self) -> AppThread:
        self.thread.start()
        return self

    def join(self, timeout: float = 60.0) -> BaseException | None:
        """Wait for ``run()`` to return by itself; return what it raised."""
        self.thread.join(timeout)
        if self.thread.is_alive():
            raise TimeoutError(f"app.run() still running after {timeout}s")
        return self.error

    def stop(self, timeout: float = 60.0) -> float:
        """``app.stop()`` and wait; re-raise what ``run()`` raised; return the seconds taken."""
        started = time.monotonic()
        self.app.stop()
        self.join(timeout)
        if self.error is not None:
            raise self.error
        return time.monotonic() - started


def wait_committed(
    bootstrap: str,
    group: str,
    topic: str,
    *,
    timeout: float = 60.0,
    thread: AppThread | None = None,
) -> None:
    """Wait until ``group`` committed up to the end of ``topic`` (or ``thread`` died)."""
    deadline = time.monotonic() + timeout
    while True:
        ends = {p: high for p, (_low, high) in watermarks(bootstrap, topic).items()}
        committed = committed_offsets(bootstrap, group, topic)
        if all(committed.get(p, -1) >= high for p, high in ends.items() if high > 0):
            return
        if thread is not None and not thread.thread.is_alive():
            raise AssertionError(f"the app stopped before catching up: {thread.error!r}")
        if time.monotonic() > deadline:
            raise TimeoutError(f"group {group} not caught up on {topic}: {committed} vs {ends}")
        time.sleep(0.25)
