"""The windowed contenders' workload: input with event timestamps, the final
counts it must produce, a reader that checks them, and one measurement.

Input (made once, reused while the topic holds exactly it): ``records``
records over ``PARTITIONS`` partitions, ~100-byte values as in the other input.
Data record ``i`` has key ``w-<i % WINDOWED_KEYS>`` and event timestamp
``t0 + i * STEP_MS`` (``t0`` a window boundary two hours before the input was
made, so the broker never sees a timestamp from the future). The last
``PARTITIONS`` records are *closers*, one per partition (key ``closer-<p>``),
``CLOSE_AFTER_MS`` of event time after the last data record.

Closing rule, the same for both contenders: a window ``[start, end)`` is closed
once the stream time of its partition (the largest timestamp seen on it)
reaches ``end + GRACE_MS``; then, and only then, its final count is emitted,
once (eos ``.final()``, Kafka Streams' ``suppress(untilWindowCloses)``,
quixstreams ``.final(closing_strategy="partition")``). The closers move every
partition's stream time past every data window, so at the end of the input
every data window has closed and none is left open: the expected output is one
final count per (key, window) of the data. The closers' own windows stay open
and are not expected (an output for one is counted as wrong).

Expected counts are computed from the input as read back from the broker, by
that rule (:func:`expected_counts`), not from how it was made.

Throughput is measured as for the other contenders: input records / (the
contender's first consumed record -> the moment the last expected final count
is visible to a ``read_committed`` reader of the output). A window's final
count is visible only after the record that closed it is committed, so that
moment is when the contender's committed progress covers the whole input.
There is no latency phase: a final count waits for its window to close
(``WINDOW_MS + GRACE_MS`` of event time), so latency would measure the window.
"""

from __future__ import annotations

import json
import threading
import time
import uuid
from dataclasses import dataclass

from _harness import (
    LOG_DIR,
    PARTITIONS,
    BulkProducer,
    Measurement,
    Spec,
    _end_offsets,
    _values,
    backlog_measurement,
    clean_up,
    contender_argv,
    delete_topics,
    output_reader,
    run_contender,
    state_dir_for,
)
from confluent_kafka import Consumer, TopicPartition

from eos.testing.helpers import create_topic

WINDOWED = ("eos_windowed", "quixstreams_windowed")
"""The contenders measured with :func:`measure_windowed`."""
WINDOW_MS = 60_000
GRACE_MS = 5_000
STEP_MS = 10
"""Event time between consecutive records: 6,000 records per window, so a run of
200,000 records closes 33 windows of every key (1,000,000 records: 166)."""
WINDOWED_KEYS = 1_000
"""Distinct keys: 6 records per key and window, one final count per 6 records."""
CLOSE_AFTER_MS = 3_600_000
"""Event time from the last data record to the closers: far past every window's
end + grace."""
HEADROOM_MS = 2 * 3_600_000
"""The closers' timestamps are at least this far behind the wall clock when the
input is made (brokers may reject timestamps from the future)."""

WindowKey = tuple[bytes, int]
"""(key, window start)."""


@dataclass(frozen=True)
class WindowedInput:
    """The input topic and the final counts it must produce."""

    topic: str
    records: int
    expected: dict[WindowKey, int]


def windowed_topic_name(records: int) -> str:
    return (
        f"eos-bench-windowed-v1-{records}r-{PARTITIONS}p-{WINDOWED_KEYS}k-{STEP_MS}ms"
        f"-{PARTITIONS}closers"
    )


def prepare_windowed_input(bootstrap: str, records: int) -> tuple[WindowedInput, bool, float]:
    """Create and fill the windowed input unless the topic already holds exactly it,
    then read it back for the expected counts. Returns ``(input, reused, seconds)``."""
    if records <= PARTITIONS:
        raise ValueError(f"the windowed input needs more than {PARTITIONS} records")
    topic = windowed_topic_name(records)
    started = time.monotonic()
    ends = _end_offsets(bootstrap, topic)
    reused = ends is not None and len(ends) == PARTITIONS and sum(ends.values()) == records
    if not reused:
        if ends is not None:
            delete_topics(bootstrap, [topic])
            time.sleep(2.0)
        # Event timestamps are hours old: create_topic turns time-based retention off.
        create_topic(bootstrap, topic, PARTITIONS)
        _produce(bootstrap, topic, records)
    expected = expected_counts(bootstrap, topic, records)
    return WindowedInput(topic, records, expected), reused, time.monotonic() - started


def _produce(bootstrap: str, topic: str, records: int) -> None:
    data = records - PARTITIONS
    now_ms = int(time.time() * 1000)
    span = data * STEP_MS + CLOSE_AFTER_MS
    t0 = now_ms - HEADROOM_MS - span
    t0 -= t0 % WINDOW_MS
    producer = BulkProducer(bootstrap, topic)

    values = _values()
    keys = [b"w-%04d" % k for k in range(WINDOWED_KEYS)]
    for i in range(data):
        producer.produce(
            values[i % len(values)], keys[i % WINDOWED_KEYS], timestamp=t0 + i * STEP_MS
        )
    close_at = t0 + (data - 1) * STEP_MS + CLOSE_AFTER_MS
    for p in range(PARTITIONS):
        producer.produce(values[0], b"closer-%d" % p, timestamp=close_at, partition=p)
    producer.flush()


def expected_counts(bootstrap: str, topic: str, records: int) -> dict[WindowKey, int]:
    """Read ``topic`` back and count records per (key, window) of every closed window.

    A window is closed when its partition's stream time has reached its end +
    ``GRACE_MS`` (the module doc's rule). Raises RuntimeError unless the topic
    holds ``records`` records and at least one window closed.
    """
    consumer = Consumer(
        {
            "bootstrap.servers": bootstrap,
            "group.id": f"eos-bench-expected-{uuid.uuid4().hex[:8]}",
            "isolation.level": "read_committed",
            "enable.auto.commit": False,
        }
    )
    ends = _end_offsets(bootstrap, topic) or {}
    counts: dict[int, dict[WindowKey, int]] = {p: {} for p in ends}
    stream_time = dict.fromkeys(ends, -1)
    remaining = {p for p, end in ends.items() if end > 0}
    seen = 0
    try:
        consumer.assign([TopicPartition(topic, p, 0) for p in remaining])
        deadline = time.monotonic() + 300
        while remaining and time.monotonic() < deadline:
            for msg in consumer.consume(10_000, 0.5):
                if msg.error() is not None:
                    continue
                p = msg.partition()
                timestamp = msg.timestamp()[1]
                start = timestamp - timestamp % WINDOW_MS
                window = counts[p]
                window[(msg.key(), start)] = window.get((msg.key(), start), 0) + 1
                stream_time[p] = max(stream_time[p], timestamp)
                seen += 1
                if msg.offset() + 1 >= ends[p]:
                    remaining.discard(p)
    finally:
        consumer.close()
    if seen != records or remaining:
        raise RuntimeError(f"read {seen:,} records of {topic}, expected {records:,}")
    expected = {
        key: n
        for p, windows in counts.items()
        for key, n in windows.items()
        if key[1] + WINDOW_MS + GRACE_MS <= stream_time[p]
    }
    if not expected:
        raise RuntimeError(f"{topic}: no window closes; more records are needed")
    return expected


class WindowedOutputReader(threading.Thread):
    """Reads the final counts (JSON ``{"start", "end", "n"}`` under the key) with
    ``read_committed`` while the contender runs, and checks them against the expected.

    ``backlog_done_at``: wall time at which every expected (key, window) had been
    seen. ``count``: every output record read.
    """

    def __init__(self, bootstrap: str, topic: str, expected: dict[WindowKey, int]) -> None:
        super().__init__(name=f"reader-{topic}", daemon=True)
        self.expected = expected
        self.count = 0
        self.matched = 0
        self.backlog_done_at: float | None = None
        self.error: BaseException | None = None
        self.seen: dict[WindowKey, tuple[int, int]] = {}
        """(key, start) -> (end, n) of the first output of each window."""
        self.duplicates = 0
        self._stop_event = threading.Event()
        self._consumer = output_reader(bootstrap, topic)

    def stop(self) -> None:
        self._stop_event.set()

    def run(self) -> None:
        consumer = self._consumer
        expected = self.expected
        seen = self.seen
        try:
            while not self._stop_event.is_set():
                messages = consumer.consume(10_000, 0.05)
                if not messages:
                    continue
                now = time.time()
                for msg in messages:
                    if msg.error() is not None:
                        continue
                    self.count += 1
                    value = json.loads(msg.value())
                    key = (msg.key(), value["start"])
                    if key in seen:
                        self.duplicates += 1
                        continue
                    seen[key] = (value["end"], value["n"])
                    if key in expected:
                        self.matched += 1
                if self.backlog_done_at is None and self.matched >= len(expected):
                    self.backlog_done_at = now
        except BaseException as exc:
            self.error = exc
        finally:
            consumer.close()

    def wrong(self) -> tuple[int, list[str]]:
        """Outputs that are wrong (duplicate, unexpected window, wrong end or count), and
        a few examples."""
        examples: list[str] = []
        wrong = self.duplicates
        if self.duplicates:
            examples.append(f"{self.duplicates} duplicate windows")
        for (key, start), (end, n) in self.seen.items():
            want = self.expected.get((key, start))
            if want is None or n != want or end != start + WINDOW_MS:
                wrong += 1
                if len(examples) < 5:
                    examples.append(f"{key!r} [{start}, {end}): {n}, expected {want}")
        return wrong, examples


def measure_windowed(
    spec: Spec,
    *,
    bootstrap: str,
    workload: WindowedInput,
    commit_interval_ms: int,
    run_id: str,
    timeout_s: float,
) -> Measurement:
    """Run ``spec`` once over the windowed input; see the module doc."""
    tag = f"{spec.name.replace('_', '-')}-{run_id}"
    output = create_topic(bootstrap, f"eos-bench-out-{tag}", PARTITIONS)
    group = f"eos-bench-{tag}"
    state_dir = state_dir_for(tag)
    argv = contender_argv(
        spec,
        bootstrap=bootstrap,
        inputs=[workload.topic],
        output=output,
        group=group,
        commit_interval_ms=commit_interval_ms,
        state_dir=state_dir,
    )
    argv += ["--window-ms", str(WINDOW_MS), "--grace-ms", str(GRACE_MS)]
    reader = WindowedOutputReader(bootstrap, output, workload.expected)
    reader.start()
    result = run_contender(
        spec.name,
        argv,
        reader,
        expected=len(workload.expected),
        timeout_s=timeout_s,
        log_path=LOG_DIR / f"{tag}.log",
    )
    wrong, examples = reader.wrong()
    clean_up(bootstrap, [output], group, state_dir)
    return backlog_measurement(
        spec.name,
        workload.records,
        len(workload.expected),
        reader,
        result,
        what="closed windows",
        wrong=wrong,
        examples=examples,
    )
