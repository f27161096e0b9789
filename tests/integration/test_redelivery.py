"""A consumer that hands out records again never gets them processed twice.

librdkafka may deliver records of a partition again, from before the position the
instance already processed and committed (a fetch reset, a resumed partition); eos
skips every record below what it processed in the open batch or committed, so the
output stays exactly once. Here the consumer is seeked back to the partition's start
after a commit, on a real broker, and the output is read back read_committed.

The second test hands the records out again inside one polled batch, right after
themselves, as librdkafka does when a stale offset lookup resets a partition to its
start (a ``ListOffsets`` answer outdated by a pause arms a retry timer that a newer
answer does not stop; 500 ms later the partition is fetched again from the beginning,
at the same fetch version, so nothing filters the records out): a counting processor,
per record and as a BatchProcessor, counts each record once.
"""

from __future__ import annotations

import logging
import threading
import time
from typing import Any

import pytest
from apprunner import Count, CountBatches, Upper, application
from confluent_kafka import TopicPartition

import eos
from eos.engine import Engine
from eos.testing.helpers import create_topic, produce, read_topic, unique_name, wait_caught_up

pytestmark = pytest.mark.integration


class SeekBackOnce(Engine):
    """Once ``seek_after`` records are committed, seek the consumer back to offset 0 after the
    next records it processes."""

    seek_after = 0
    sought = threading.Event()

    def _process(self, messages: Any) -> None:
        super()._process(messages)
        assignment = self.assignment
        if not self.sought.is_set() and sum(assignment.committed.values()) >= self.seek_after:
            for topic, partition in assignment.assigned:
                assert self.consumer is not None
                self.consumer.seek(TopicPartition(topic, partition, 0))
            self.sought.set()


def _start_caught_up(
    bootstrap: str, app: eos.Application, engine: type[Engine], source: str
) -> tuple[threading.Thread, list[BaseException]]:
    """Run ``app`` with ``engine`` on a thread; return it and what it raised (a list it
    fills), once the app caught up on ``source``."""
    failure: list[BaseException] = []

    def run() -> None:
        try:
            app._run(engine)
        except BaseException as exc:  # handed to the test thread
            failure.append(exc)

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    try:
        wait_caught_up(bootstrap, app.config.application_id, source, timeout=60)
    finally:
        assert not failure, failure
    return thread, failure


def test_records_handed_out_again_are_skipped(
    bootstrap: str, tmp_path: Any, caplog: pytest.LogCaptureFixture
) -> None:
    source = create_topic(bootstrap, unique_name("redeliver-in"), 1)
    sink = create_topic(bootstrap, unique_name("redeliver-out"), 1)
    produce(bootstrap, source, ((f"k{i}", f"v{i}") for i in range(50)))
    app = application(bootstrap, unique_name("redeliver"), source, Upper(sink))
    engine = type("Engine", (SeekBackOnce,), {"seek_after": 50, "sought": threading.Event()})
    with caplog.at_level(logging.WARNING, logger="eos.engine"):
        thread, failure = _start_caught_up(bootstrap, app, engine, source)
        produce(bootstrap, source, ((f"k{i}", f"v{i}") for i in range(50, 60)))
        assert engine.sought.wait(60), "the app never processed the second records"
        # The consumer hands the partition out again from offset 0: wait until eos saw it.
        deadline = time.monotonic() + 60
        while not any("already processed" in r.getMessage() for r in caplog.records):
            assert time.monotonic() < deadline, "the records were never handed out again"
            assert thread.is_alive(), failure
            time.sleep(0.1)
        wait_caught_up(bootstrap, app.config.application_id, source, timeout=60)
        app.stop()
        thread.join(60)
    assert not failure, failure
    values = [r.value for r in read_topic(bootstrap, sink)]
    assert sorted(values) == sorted(f"V{i}".encode() for i in range(60))


class HandedOutTwice(Engine):
    """The first polled batch with ``at_least`` records is processed as those records
    followed by the same records again: one run of the partition that steps back."""

    at_least = 0
    doubled = threading.Event()

    def _process(self, messages: Any) -> None:
        records = [m for m in messages if m.error() is None]
        if not self.doubled.is_set() and len(records) >= self.at_least:
            self.doubled.set()
            messages = [*messages, *records]
        super()._process(messages)


@pytest.mark.parametrize("processor", [Count, CountBatches], ids=["per-record", "batch"])
def test_records_handed_out_again_inside_one_batch_are_counted_once(
    bootstrap: str,
    tmp_path: Any,
    caplog: pytest.LogCaptureFixture,
    processor: type[eos.Processor] | type[eos.BatchProcessor],
) -> None:
    source = create_topic(bootstrap, unique_name("twice-in"), 1)
    sink = create_topic(bootstrap, unique_name("twice-out"), 1)
    produce(bootstrap, source, ((f"k{i % 5}", f"v{i}") for i in range(200)))
    app = application(
        bootstrap,
        unique_name("twice"),
        source,
        processor(sink),
        key_serde="string",
        state_dir=str(tmp_path / "state"),
    )
    engine = type("Engine", (HandedOutTwice,), {"at_least": 20, "doubled": threading.Event()})
    with caplog.at_level(logging.WARNING, logger="eos.engine"):
        thread, failure = _start_caught_up(bootstrap, app, engine, source)
        app.stop()
        thread.join(60)
    assert not failure, failure
    assert engine.doubled.is_set(), "no polled batch had 20 records"
    counts: dict[bytes | None, list[int]] = {}
    for r in read_topic(bootstrap, sink):
        counts.setdefault(r.key, []).append(int(r.value or b"0"))
    assert {k: (len(v), max(v)) for k, v in counts.items()} == {
        f"k{k}".encode(): (40, 40) for k in range(5)
    }
    assert counts == {f"k{k}".encode(): list(range(1, 41)) for k in range(5)}
    assert any("already processed" in r.getMessage() for r in caplog.records)
