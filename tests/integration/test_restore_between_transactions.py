"""A restore longer than the transaction timeout, during an assign-only cooperative rebalance,
does not fence the instance: stores are restored between transactions, never inside one."""

from __future__ import annotations

import threading
import time
from collections import Counter, defaultdict
from pathlib import Path

import pytest
from apprunner import AppThread, Count
from confluent_kafka import Producer

import eos
from eos.testing.faults import SlowRestore
from eos.testing.helpers import create_topic, read_topic, unique_name, wait_caught_up

pytestmark = pytest.mark.integration

TRANSACTION_TIMEOUT_MS = 5000
RESTORE_SLEEP_S = 8.0  # per restored chunk: two partitions take over 15 s


class Feeder:
    """Produces ``k00``..``k39`` at about 200 records/s until stopped."""

    def __init__(self, bootstrap: str, topic: str) -> None:
        self.producer = Producer({"bootstrap.servers": bootstrap, "linger.ms": 5})
        self.topic = topic
        self.sent = 0
        self.done = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self.done.is_set():
            for _ in range(20):
                self.producer.produce(self.topic, b"x", f"k{self.sent % 40:02d}".encode())
                self.sent += 1
            self.producer.poll(0)
            self.done.wait(0.1)  # pacing the input, not synchronizing
        assert self.producer.flush(30) == 0

    def stop(self) -> int:
        self.done.set()
        self.thread.join(60)
        return self.sent


def _wait(what: str, condition, timeout: float = 90.0) -> float:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.05)
    return time.monotonic()


def test_long_restore_on_an_assign_only_rebalance_does_not_fence(
    bootstrap, app_threads, tmp_path: Path
) -> None:
    """Instance A keeps processing (transactions open every 100 ms) when a cooperative,
    assign-only rebalance hands it B's partitions; restoring them takes longer than
    transaction.timeout.ms plus the broker's timeout check. A is not fenced (no
    ProducerFencedError, no timed-out transaction), and every key's counts are exactly 1..N."""
    source = create_topic(bootstrap, unique_name("in"), 4)
    sink = create_topic(bootstrap, unique_name("out"), 4)
    app_id = unique_name("coop-restore")
    consumer_config = {
        "partition.assignment.strategy": "cooperative-sticky",
        "group.instance.id": "",  # dynamic members: B's leave moves its partitions at once
        "session.timeout.ms": 6000,
        "heartbeat.interval.ms": 1000,
    }
    slow = SlowRestore(RESTORE_SLEEP_S)

    def app(instance: str, **kw: object) -> eos.Application:
        return eos.Application(
            application_id=app_id,
            bootstrap_servers=bootstrap,
            input_topics=[source],
            processor=Count(sink),
            instance_id=instance,
            key_serde="string",
            value_serde="string",
            state_dir=str(tmp_path / instance),
            transaction_timeout_ms=TRANSACTION_TIMEOUT_MS,
            consumer_config=consumer_config,
            **kw,
        )

    feeder = Feeder(bootstrap, source)
    feeder.thread.start()
    a = app("a", faults=slow)
    runner_a = AppThread(a).start()
    app_threads.append(runner_a)
    _wait("A processing", lambda: a.state.processed_count > 200)
    b = app("b")
    runner_b = AppThread(b).start()
    app_threads.append(runner_b)
    _wait(
        "B processing its share",
        lambda: len(b.state.assigned_partitions) == 2 and b.state.processed_count > 200,
    )
    assert len(a.state.assigned_partitions) == 2
    runner_b.stop()  # leaves the group: A is assigned B's partitions, nothing revoked
    started = _wait("A restoring B's partitions", lambda: bool(a.state.restoring_partitions))
    finished = _wait("A's restore", lambda: not a.state.restoring_partitions, timeout=120)
    sent = feeder.stop()
    wait_caught_up(bootstrap, app_id, source, timeout=120)
    assert runner_a.thread.is_alive(), f"A stopped: {runner_a.error!r}"
    runner_a.stop()

    reasons = dict(a._stats.abort_reasons)
    emitted: dict[bytes, list[int]] = defaultdict(list)
    for record in read_topic(bootstrap, sink):
        emitted[record.key].append(int(record.value))  # type: ignore[arg-type]
    truth = Counter(r.key for r in read_topic(bootstrap, source))
    wrong = [k for k, n in truth.items() if emitted.get(k) != list(range(1, n + 1))]
    print(
        f"sent={sent} restore took {finished - started:.1f}s (chunks={slow.chunks}) "
        f"A aborts={reasons} fenced={a._stats.fenced} wrong keys={len(wrong)}"
    )
    assert finished - started > TRANSACTION_TIMEOUT_MS / 1000 + 10
    assert a._stats.fenced == 0 and reasons.get("transaction_timeout", 0) == 0, reasons
    assert wrong == [], wrong[:5]
