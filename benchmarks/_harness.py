"""What ``run.py`` and ``metrics_overhead.py`` share: input topics, the output
reader, and running one contender in a child process and measuring it.

One measurement of one contender (:func:`measure`):

1. a fresh output topic and a fresh, empty "paced" input topic are created;
2. the contender starts in its own process, subscribed to the backlog input
   (prepared once per benchmark run, shared by every contender) and to the
   paced topic, with a fresh consumer group / application id;
3. a ``read_committed`` consumer in this process (:class:`OutputReader`) reads
   the output topic from the start while the contender runs. When it has seen
   as many outputs as the backlog has records, the throughput phase is over:
   records/s = backlog records / (that moment - the contender's first consumed
   record);
4. latency phase: records are produced to the paced topic at a fixed rate
   well below every contender's capacity, each with a unique key; latency is
   the time from a record's timestamp (set when it is produced) to the moment
   its output is visible to the ``read_committed`` reader. Measuring latency on
   the backlog would measure the backlog's age, not the contender;
5. the contender gets SIGTERM, commits, exits and prints its peak RSS
   (``_result.peak_rss_mib``) as its last stdout line; the reader checks that
   the output holds exactly one record per input record.

The windowed contenders are measured by ``_windowed.measure_windowed``, on
their own input and with the same process lifecycle (:func:`run_contender`).

Every contender process prints one JSON line last: ``{"first_consumed": unix
seconds, "maxrss_mib": float}`` (``_result.print_result``).
"""

from __future__ import annotations

import contextlib
import json
import os
import random
import signal
import statistics
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from confluent_kafka import Consumer, KafkaException, Producer, TopicPartition
from confluent_kafka.admin import AdminClient

from eos.testing.helpers import create_topic

ROOT = Path(__file__).resolve().parents[1]
BENCH_DIR = ROOT / "benchmarks"
LOG_DIR = BENCH_DIR / "out"
PARTITIONS = 4
VALUE_BYTES = 100
DEFAULT_KEYS = 10_000
LATENCY_RATE = 2_000
"""Paced records per second in the latency phase: far below every contender's
throughput, so latency is the pipeline's, not a queue's."""
LATENCY_KEY_PREFIX = b"lat-"


# -- input -----------------------------------------------------------------------


def _values(count: int = 1024) -> list[bytes]:
    """``count`` distinct ~100-byte lowercase values (so ``upper()`` has work to do)."""
    rng = random.Random(20250101)
    letters = "abcdefghijklmnopqrstuvwxyz "
    return [
        (f"{i:06d} " + "".join(rng.choice(letters) for _ in range(VALUE_BYTES - 7))).encode()
        for i in range(count)
    ]


def input_topic_name(records: int, keys: int) -> str:
    return f"eos-bench-input-v1-{records}r-{PARTITIONS}p-{keys}k-{VALUE_BYTES}b"


def _end_offsets(bootstrap: str, topic: str) -> dict[int, int] | None:
    consumer = Consumer(
        {
            "bootstrap.servers": bootstrap,
            "group.id": "eos-bench-watermarks",
            "isolation.level": "read_uncommitted",
        }
    )
    try:
        meta = consumer.list_topics(topic, timeout=10).topics.get(topic)
        if meta is None or meta.error is not None:
            return None
        return {
            p: consumer.get_watermark_offsets(TopicPartition(topic, p), timeout=10)[1]
            for p in meta.partitions
        }
    finally:
        consumer.close()


def prepare_input(bootstrap: str, records: int, keys: int) -> tuple[str, bool, float]:
    """Create and fill the backlog input topic unless it already holds exactly it.

    One idempotent producer, big batches. Returns ``(topic, reused, seconds)``.
    """
    topic = input_topic_name(records, keys)
    ends = _end_offsets(bootstrap, topic)
    if ends is not None:
        if len(ends) == PARTITIONS and sum(ends.values()) == records:
            return topic, True, 0.0
        delete_topics(bootstrap, [topic])
        time.sleep(2.0)
    started = time.monotonic()
    create_topic(bootstrap, topic, PARTITIONS)
    producer = BulkProducer(bootstrap, topic)
    values = _values()
    key_bytes = [b"k-%05d" % k for k in range(keys)]
    produce = producer.produce
    nvalues = len(values)
    for i in range(records):
        produce(values[i % nvalues], key_bytes[i % keys])
    producer.flush()
    ends = _end_offsets(bootstrap, topic) or {}
    if sum(ends.values()) != records:
        raise RuntimeError(f"{topic} holds {sum(ends.values())} records, expected {records}")
    return topic, False, time.monotonic() - started


def read_back(bootstrap: str, topic: str, seen: int, timeout_s: float = 300.0) -> Iterator[Any]:
    """Every record of ``topic`` (``read_committed``, from the start): until at least
    ``seen`` were read and nothing more came for a second (or ``timeout_s``)."""
    consumer = output_reader(bootstrap, topic)
    read = 0
    try:
        deadline = time.monotonic() + timeout_s
        quiet_until = None
        while time.monotonic() < deadline:
            messages = consumer.consume(10_000, 0.5)
            if not messages:
                if read >= seen:
                    if quiet_until is not None and time.monotonic() >= quiet_until:
                        break
                    quiet_until = quiet_until or time.monotonic() + 1.0
                continue
            for msg in messages:
                if msg.error() is None:
                    read += 1
                    yield msg
    finally:
        consumer.close()


def output_reader(bootstrap: str, topic: str) -> Consumer:
    """A read_committed consumer of every partition of ``topic`` from the start.

    Visibility is what is measured: the broker is not allowed to hold fetches.
    """
    consumer = Consumer(
        {
            "bootstrap.servers": bootstrap,
            "group.id": f"eos-bench-reader-{uuid.uuid4().hex[:8]}",
            "isolation.level": "read_committed",
            "enable.auto.commit": False,
            "fetch.wait.max.ms": 10,
        }
    )
    consumer.assign([TopicPartition(topic, p, 0) for p in range(PARTITIONS)])
    return consumer


class BulkProducer:
    """One idempotent producer with big batches, for preparing an input topic.

    Idempotence keeps each partition's records in produced order. ``produce``
    waits while the queue is full; ``flush`` raises if any record failed.
    """

    def __init__(self, bootstrap: str, topic: str) -> None:
        self.topic = topic
        self.failures: list[object] = []
        self._producer = Producer(
            {
                "bootstrap.servers": bootstrap,
                "enable.idempotence": True,
                "linger.ms": 50,
                "batch.size": 1_000_000,
                "queue.buffering.max.messages": 1_000_000,
                "queue.buffering.max.kbytes": 1_048_576,
            }
        )

    def _on_delivery(self, error: object, _msg: object) -> None:
        if error is not None:
            self.failures.append(error)

    def produce(self, value: bytes, key: bytes, *, timestamp: int = 0, partition: int = -1) -> None:
        """Produce one record (timestamp 0: now; partition -1: by the key)."""
        while True:
            try:
                self._producer.produce(
                    self.topic,
                    value,
                    key,
                    partition=partition,
                    timestamp=timestamp,
                    on_delivery=self._on_delivery,
                )
                return
            except BufferError:
                self._producer.poll(0.05)

    def flush(self) -> None:
        """Wait for every delivery. Raises RuntimeError if one failed or it timed out."""
        if self._producer.flush(120) or self.failures:
            raise RuntimeError(f"preparing {self.topic}: {self.failures[:1] or 'flush timed out'}")


def delete_topics(bootstrap: str, topics: list[str]) -> None:
    if not topics:
        return
    admin = AdminClient({"bootstrap.servers": bootstrap})
    for future in admin.delete_topics(topics, operation_timeout=30).values():
        with contextlib.suppress(KafkaException):  # already gone
            future.result(60)


def topics_containing(bootstrap: str, needle: str) -> list[str]:
    admin = AdminClient({"bootstrap.servers": bootstrap})
    return [t for t in admin.list_topics(timeout=10).topics if needle in t]


# -- the output reader -----------------------------------------------------------


class OutputReader(threading.Thread):
    """Reads the output topic with ``read_committed`` and timestamps what it sees.

    ``backlog_done_at``: wall time at which ``backlog`` outputs had become
    visible. After that, outputs keyed ``lat-<seq>`` are the paced records:
    their first arrival time is kept in ``arrivals[seq]``.

    It waits with ``poll`` for one record and then takes what is already
    queued (``consume(n, 0)``): ``consume(n, timeout)`` returns only when it has
    n records or the timeout has passed, so waiting with it would stamp a
    commit's records up to the timeout late (measured: ``consume(10_000, 0.05)``
    returned a record produced 0.10 s in at 0.15 s, ``poll(0.05)`` at 0.10 s).
    """

    def __init__(self, bootstrap: str, topic: str, backlog: int) -> None:
        super().__init__(name=f"reader-{topic}", daemon=True)
        self.count = 0
        self.backlog = backlog
        self.backlog_done_at: float | None = None
        self.arrivals: dict[int, float] = {}
        self.error: BaseException | None = None
        self._stop_event = threading.Event()
        self._consumer = output_reader(bootstrap, topic)

    def stop(self) -> None:
        self._stop_event.set()

    def run(self) -> None:
        consumer = self._consumer
        try:
            while not self._stop_event.is_set():
                one = consumer.poll(0.05)
                if one is None:
                    continue
                now = time.time()
                messages = [one, *consumer.consume(10_000, 0)]
                if self.backlog_done_at is None:
                    count = self.count
                    for msg in messages:
                        if msg.error() is None:
                            count += 1
                    self.count = count
                    if count >= self.backlog:
                        self.backlog_done_at = now
                    continue
                arrivals = self.arrivals
                for msg in messages:
                    if msg.error() is not None:
                        continue
                    self.count += 1
                    key = msg.key()
                    if key is not None and key.startswith(LATENCY_KEY_PREFIX):
                        seq = int(key[len(LATENCY_KEY_PREFIX) :])
                        arrivals.setdefault(seq, now)
        except BaseException as exc:
            self.error = exc
        finally:
            consumer.close()


# -- running one contender ---------------------------------------------------------


@dataclass
class Measurement:
    contender: str
    records: int
    seconds: float
    records_per_s: float
    latency_p50_ms: float
    latency_p99_ms: float
    latency_samples: int
    maxrss_mib: float
    outputs: int
    expected_outputs: int
    wrong: int = 0
    """Outputs whose content is checked and wrong (windowed contenders: a count that
    is not the expected one, a window that should not be there, a duplicate)."""
    extra: dict[str, object] = field(default_factory=dict)

    @property
    def exact(self) -> bool:
        return self.outputs == self.expected_outputs and self.wrong == 0


def backlog_measurement(
    name: str,
    records: int,
    expected: int,
    reader: OutputReader,
    result: dict[str, Any],
    *,
    what: str,
    wrong: int,
    examples: list[str],
) -> Measurement:
    """The throughput of a contender measured on its backlog only (no latency phase):
    ``records`` inputs from its first consumed record until the last of ``expected``
    outputs was visible; warns on stderr when the output was not exact."""
    if wrong or reader.count != expected:
        print(
            f"  warning: {name}: {reader.count:,} outputs for {expected:,} {what}, "
            f"{wrong:,} wrong: {'; '.join(examples)}",
            file=sys.stderr,
        )
    assert reader.backlog_done_at is not None
    seconds = reader.backlog_done_at - result["first_consumed"]
    return Measurement(
        contender=name,
        records=records,
        seconds=seconds,
        records_per_s=records / seconds,
        latency_p50_ms=float("nan"),
        latency_p99_ms=float("nan"),
        latency_samples=0,
        maxrss_mib=float(result["maxrss_mib"]),
        outputs=reader.count,
        expected_outputs=expected,
        wrong=wrong,
        extra={k: v for k, v in result.items() if k not in ("first_consumed", "maxrss_mib")},
    )


@dataclass
class Spec:
    """How to start a contender: ``argv`` gets the common arguments appended."""

    name: str
    argv: list[str]


def _percentile(sorted_values: list[float], q: float) -> float:
    if not sorted_values:
        return float("nan")
    index = min(len(sorted_values) - 1, max(0, round(q * (len(sorted_values) - 1))))
    return sorted_values[index]


def _paced_phase(bootstrap: str, topic: str, seconds: float, rate: int) -> dict[int, float]:
    """Produce ``rate`` records/s for ``seconds`` to ``topic``; return send time per seq."""
    # Not idempotent: an idempotent librdkafka producer holds its first
    # records ~0.5 s while it acquires a producer id, which would show up as latency.
    producer = Producer(
        {"bootstrap.servers": bootstrap, "enable.idempotence": False, "acks": "all", "linger.ms": 0}
    )
    producer.list_topics(topic, timeout=10)  # connected, metadata known
    value = _values(1)[0]
    sent: dict[int, float] = {}
    tick = 0.01
    per_tick = max(1, round(rate * tick))
    total = max(1, round(rate * seconds))
    start = time.time()
    seq = 0
    while seq < total:
        target = start + (seq // per_tick) * tick
        delay = target - time.time()
        if delay > 0:
            time.sleep(delay)
        for _ in range(min(per_tick, total - seq)):
            now = time.time()
            producer.produce(
                topic, value, LATENCY_KEY_PREFIX + b"%07d" % seq, timestamp=int(now * 1000)
            )
            sent[seq] = now
            seq += 1
        producer.poll(0)
    producer.flush(30)
    return sent


def contender_argv(
    spec: Spec,
    *,
    bootstrap: str,
    inputs: list[str],
    output: str,
    group: str,
    commit_interval_ms: int,
    state_dir: Path,
) -> list[str]:
    """``spec.argv`` with the arguments every contender takes."""
    return [
        *spec.argv,
        "--bootstrap-servers", bootstrap,
        "--inputs", ",".join(inputs),
        "--output", output,
        "--group", group,
        "--commit-interval-ms", str(commit_interval_ms),
        "--state-dir", str(state_dir),
    ]  # fmt: skip


class Reader(Protocol):
    """What :func:`run_contender` needs of an output reader thread."""

    backlog_done_at: float | None
    error: BaseException | None
    count: int

    def stop(self) -> None: ...

    def join(self, timeout: float | None = None) -> None: ...


def run_contender(
    name: str,
    argv: list[str],
    reader: Reader,
    *,
    expected: int,
    timeout_s: float,
    log_path: Path,
    then: Callable[[subprocess.Popen[str]], None] | None = None,
) -> dict[str, Any]:
    """Run one contender process until ``reader`` has seen the backlog's outputs.

    Starts ``argv`` (stderr to ``log_path``), waits until
    ``reader.backlog_done_at`` is set, calls ``then(proc)`` (the latency phase,
    say), sends SIGTERM and waits for the process to commit and exit. The
    reader is stopped one second later, so that it has seen what the final
    commit made visible. Returns the process's last stdout line
    (``_result.print_result``). Raises RuntimeError if the process exits early
    or fails, the reader fails, or ``timeout_s`` passes first; the process is
    killed on the way out in every case.
    """
    LOG_DIR.mkdir(parents=True, exist_ok=True)
    with open(log_path, "w") as log_file:
        proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=log_file, text=True)
        try:
            deadline = time.monotonic() + timeout_s
            while reader.backlog_done_at is None:
                if proc.poll() is not None or reader.error is not None:
                    raise RuntimeError(
                        f"{name} exited early ({proc.returncode}) or the reader failed "
                        f"({reader.error}); see {log_path}"
                    )
                if time.monotonic() > deadline:
                    raise RuntimeError(
                        f"{name}: {reader.count:,} of {expected:,} outputs after "
                        f"{timeout_s:.0f}s; see {log_path}"
                    )
                time.sleep(0.01)
            if then is not None:
                then(proc)
            proc.send_signal(signal.SIGTERM)
            stdout, _ = proc.communicate(timeout=120)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
            time.sleep(1.0)  # let the reader see anything the final commit made visible
            reader.stop()
            reader.join(30)
    if proc.returncode != 0:
        raise RuntimeError(f"{name} failed with exit code {proc.returncode}; see {log_path}")
    result: dict[str, Any] = json.loads(stdout.strip().splitlines()[-1])
    return result


def clean_up(bootstrap: str, topics: list[str], group: str, state_dir: Path) -> None:
    """Delete ``topics``, the contender's changelog topics (named after its group) and
    its state directory."""
    delete_topics(bootstrap, sorted({*topics, *topics_containing(bootstrap, group)}))
    subprocess.run(["rm", "-rf", str(state_dir)], check=False)


def state_dir_for(tag: str) -> Path:
    return Path(os.environ.get("TMPDIR", "/tmp")) / f"eos-bench-state-{tag}"


def measure(
    spec: Spec,
    *,
    bootstrap: str,
    backlog_topic: str,
    records: int,
    commit_interval_ms: int,
    latency_seconds: float,
    run_id: str,
    timeout_s: float,
    check: Callable[[str, int], tuple[int, list[str]]] | None = None,
) -> Measurement:
    """Run ``spec`` once over the backlog plus a paced latency phase; see the module doc.

    ``latency_seconds`` 0: no latency phase (latency n/a). ``check(output topic,
    outputs seen)``, called after the run: ``(wrong outputs, examples)``.
    """
    tag = f"{spec.name.replace('_', '-')}-{run_id}"
    output = create_topic(bootstrap, f"eos-bench-out-{tag}", PARTITIONS)
    paced = create_topic(bootstrap, f"eos-bench-paced-{tag}", PARTITIONS) if latency_seconds else ""
    group = f"eos-bench-{tag}"
    state_dir = state_dir_for(tag)
    argv = contender_argv(
        spec,
        bootstrap=bootstrap,
        inputs=[backlog_topic, paced] if paced else [backlog_topic],
        output=output,
        group=group,
        commit_interval_ms=commit_interval_ms,
        state_dir=state_dir,
    )
    reader = OutputReader(bootstrap, output, records)
    reader.start()
    sent: dict[int, float] = {}

    def paced_phase(proc: subprocess.Popen[str]) -> None:
        sent.update(_paced_phase(bootstrap, paced, latency_seconds, LATENCY_RATE))
        wait_until = time.monotonic() + 30
        while len(reader.arrivals) < len(sent) and time.monotonic() < wait_until:
            if proc.poll() is not None:
                break
            time.sleep(0.05)

    result = run_contender(
        spec.name,
        argv,
        reader,
        expected=records,
        timeout_s=timeout_s,
        log_path=LOG_DIR / f"{tag}.log",
        then=paced_phase if paced else None,
    )
    first = result["first_consumed"]
    assert reader.backlog_done_at is not None
    seconds = reader.backlog_done_at - first
    latencies = sorted(
        1000 * (reader.arrivals[s] - t) for s, t in sent.items() if s in reader.arrivals
    )
    missing = len(sent) - len(latencies)
    if missing:
        print(f"  warning: {spec.name}: {missing} paced outputs never seen", file=sys.stderr)
    wrong, examples = check(output, reader.count) if check is not None else (0, [])
    if wrong:
        print(f"  warning: {spec.name}: {wrong:,} wrong: {'; '.join(examples)}", file=sys.stderr)
    clean_up(bootstrap, [output, paced] if paced else [output], group, state_dir)
    return Measurement(
        contender=spec.name,
        records=records,
        seconds=seconds,
        records_per_s=records / seconds,
        latency_p50_ms=_percentile(latencies, 0.50),
        latency_p99_ms=_percentile(latencies, 0.99),
        latency_samples=len(latencies),
        maxrss_mib=float(result["maxrss_mib"]),
        outputs=reader.count,
        expected_outputs=records + len(sent),
        wrong=wrong,
        extra={k: v for k, v in result.items() if k not in ("first_consumed", "maxrss_mib")},
    )


def median(values: list[float]) -> float:
    return statistics.median(values) if values else float("nan")
