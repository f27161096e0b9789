"""SIGKILLed at random moments and restarted, the engine loses and duplicates nothing."""

from __future__ import annotations

import random
import threading
import time
from pathlib import Path

import pytest

from eos.testing.helpers import (
    create_topic,
    produce,
    read_topic,
    unique_name,
    wait_caught_up,
)
from eos.testing.process import AppProcess
from eos.testing.verify import verify_exactly_once

pytestmark = [pytest.mark.integration, pytest.mark.chaos]

EXAMPLE = str(Path(__file__).resolve().parents[2] / "examples" / "uppercase.py")


def _app(
    bootstrap: str, source: str, sink: str, app_id: str, tmp_path: Path, **extra: str
) -> AppProcess:
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
    ]
    for key, value in extra.items():
        args += [f"--{key.replace('_', '-')}", value]
    return AppProcess(args, log_path=tmp_path / f"{app_id}.log")


def _produce_slowly(bootstrap: str, topic: str, total: int, seconds: float) -> threading.Thread:
    def run() -> None:
        chunks = 40
        per = total // chunks
        for c in range(chunks):
            produce(
                bootstrap,
                topic,
                ((f"k{i % 97}", f"v{i:06d}") for i in range(c * per, (c + 1) * per)),
            )
            time.sleep(seconds / chunks)

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return thread


def test_sigkill_at_random_moments_keeps_exactly_once(bootstrap, tmp_path) -> None:
    """20,000 records over 3 partitions, the app SIGKILLed at 5 random moments and
    restarted each time: every input appears exactly once in the output, per-key order kept."""
    source = create_topic(bootstrap, unique_name("in"), 3)
    sink = create_topic(bootstrap, unique_name("out"), 3)
    app_id = unique_name("kill")
    rng = random.Random(7)
    producer = _produce_slowly(bootstrap, source, 20_000, 12.0)
    app = _app(bootstrap, source, sink, app_id, tmp_path).start()
    kills = 0
    try:
        for _ in range(5):
            app.wait_for_log("assigned", timeout=90)
            time.sleep(rng.uniform(0.3, 2.5))
            app.kill()
            kills += 1
            app.start()
        producer.join()
        wait_caught_up(bootstrap, app_id, source, timeout=180)
        assert app.terminate() == 0, app.log_tail()
    finally:
        app.kill()
    verdict = verify_exactly_once(
        read_topic(bootstrap, source), read_topic(bootstrap, sink), bytes.upper
    )
    print(f"kills={kills} {verdict}")
    assert verdict.inputs == 20_000
    assert verdict.ok, verdict


def test_restarted_instance_unblocks_readers_within_seconds(bootstrap, tmp_path) -> None:
    """After a SIGKILL mid-transaction, the restarted instance (same instance_id) fences
    the old one and new output is readable within 5 s, not after transaction.timeout.ms."""
    source = create_topic(bootstrap, unique_name("in"), 1)
    sink = create_topic(bootstrap, unique_name("out"), 1)
    app_id = unique_name("fast")
    # A long commit interval keeps a transaction open when the process dies.
    app = _app(bootstrap, source, sink, app_id, tmp_path, commit_interval_ms="5000").start()
    try:
        app.wait_for_log("assigned", timeout=90)
        produce(bootstrap, source, [("k", f"a{i}") for i in range(100)])
        time.sleep(1.0)  # processed, transaction still open
        app.kill()
        app2 = _app(bootstrap, source, sink, app_id, tmp_path, commit_interval_ms="100")
        started = time.monotonic()
        app2.start()
        produce(bootstrap, source, [("k", "after-restart")])
        visible = None
        while time.monotonic() - started < 30:
            try:
                values = [r.value for r in read_topic(bootstrap, sink, timeout=5)]
            except TimeoutError:
                continue  # the dead incarnation's transaction still holds readers back
            if b"AFTER-RESTART" in values:
                visible = time.monotonic() - started
                break
            time.sleep(0.1)
        print(f"new output visible {visible}s after restart")
        assert visible is not None and visible < 5.0, app2.log_tail()
        values = [r.value for r in read_topic(bootstrap, sink)]
        assert values == [f"A{i}".encode() for i in range(100)] + [b"AFTER-RESTART"]
        assert app2.terminate() == 0
    finally:
        app.kill()
        if "app2" in locals():
            app2.kill()
